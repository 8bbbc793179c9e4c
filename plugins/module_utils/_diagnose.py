# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Diagnose a Ray node: why it failed, from its own logs, and what is about to fail, from the live node.

Per target (the host and each Ray worker container, reached as everything else is): discover Ray's temp roots
and processes, list the sessions whose logs changed within ``since_hours``, read each log only from where the
last run stopped (``_logscan``, marks kept in a state file) and classify the lines that matter
(``_findings``); then look at the live node: the raylet's open files against its limit, memory against Ray's
threshold, ``/dev/shm`` against the object store, the disks, deleted files held open.

Every log is opened as the other readers of a target's files are: inside the target's root, never through a
symlink, only a regular file owned by root or a user whose Ray processes are trusted (``_fs.open_regular``).

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

from ansible_collections.rayops.disk.plugins.module_utils._deleted import deleted_open_files
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._findings import (
    KINDS,
    SEVERITIES,
    Evidence,
    Finding,
    classify,
    escaped,
    line_time,
    process_of,
    signatures_for,
)
from ansible_collections.rayops.disk.plugins.module_utils._fs import (
    UnsafePath,
    filesystem_of,
    filesystems_under,
    open_regular,
    write_private,
)
from ansible_collections.rayops.disk.plugins.module_utils._logscan import GrepMissing, LogReader, Mark, grep_program
from ansible_collections.rayops.disk.plugins.module_utils._node import deleted_open_on
from ansible_collections.rayops.disk.plugins.module_utils._options import UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import discover, flag_value, session_started
from ansible_collections.rayops.disk.plugins.module_utils._ray_version import (
    describe_version,
    process_environ,
    rotation_report,
)
from ansible_collections.rayops.disk.plugins.module_utils._targets import Slot, enter, node_targets
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes, parse_size

STATE_VERSION = 1
KEEP_FINDINGS_SECONDS = 7 * 86400
"""A finding whose last event is older is dropped from the state file (its count stays in the totals)."""
RECOMMENDED_NOFILE = 65536
"""The open-files limit Ray's documentation asks for."""
FD_NEAR = 0.8
"""The share of its open-files limit at which the raylet is near it."""
MEMORY_MARGIN = 0.05
"""How close to Ray's memory threshold (a fraction of memory) is near it."""
MEMORY_THRESHOLD = "RAY_memory_usage_threshold"
DEFAULT_MEMORY_THRESHOLD = 0.95
"""Ray's RAY_memory_usage_threshold when the raylet's environment does not set it."""
DELETED_OPEN_SHOWN = 1 << 30
"""Bytes held by deleted files at which that is a finding."""
KMSG = "/dev/kmsg"
"""The kernel's log, read by root (the OOM killer's kills)."""
KERNEL_OOM = re.compile(rb"(?:Memory cgroup out of memory|Out of memory): Killed process (\d+) \(([^)]*)\)")
"""The kernel OOM killer's line, global or in a cgroup: the pid and the process's name (its title cut to 15 bytes)."""
RAY_COMMS = (b"ray::", b"raylet", b"gcs_server")
"""The names of Ray's processes as the kernel gives them."""


@dataclass
class State:
    """What earlier runs read: a mark per log file, the findings they made, and the totals per kind ever."""

    marks: dict = field(default_factory=dict)
    findings: dict = field(default_factory=dict)
    totals: dict = field(default_factory=dict)
    newest: dict = field(default_factory=dict)
    """Kind -> the time of its newest event ever."""
    kernel: Optional[list] = None
    """``[boot id, sequence number]`` of the last kernel log record read (``/dev/kmsg``)."""

    @classmethod
    def load(cls, path: Optional[str]) -> "State":
        """The state in ``path`` (None, missing or damaged: a fresh one; a damaged one is read again from 0)."""
        if path is None:
            return cls()
        try:
            fd = open_regular(path, owners=frozenset((os.geteuid(),)))
        except FileNotFoundError:
            return cls()
        with os.fdopen(fd, "rb") as handle:
            try:
                raw = json.loads(handle.read().decode("utf-8"))
            except ValueError:
                return cls()
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            return cls()
        state = cls()
        for key, value in (raw.get("marks") or {}).items():
            mark = Mark.from_list(value)
            if mark is not None:
                state.marks[key] = mark
        for value in raw.get("findings") or []:
            finding = Finding.from_dict(value) if isinstance(value, dict) else None
            if finding is not None:
                state.findings[(finding.target, finding.kind, finding.session)] = finding
        state.totals = {kind: int(count) for kind, count in (raw.get("totals") or {}).items() if kind in KINDS}
        state.newest = {kind: float(when) for kind, when in (raw.get("newest") or {}).items() if kind in KINDS}
        kernel = raw.get("kernel")
        if isinstance(kernel, list) and len(kernel) == 2 and isinstance(kernel[0], str) and isinstance(kernel[1], int):
            state.kernel = kernel
        return state

    def save(self, path: str, now: float) -> None:
        """Write the state atomically, readable by root only; findings gone quiet for a week are dropped."""
        findings = [finding.as_dict() for finding in self.findings.values()
                    if (finding.last or now) >= now - KEEP_FINDINGS_SECONDS]
        data = json.dumps({"version": STATE_VERSION, "marks": {key: mark.to_list() for key, mark in self.marks.items()},
                           "findings": findings, "totals": self.totals, "newest": self.newest,
                           "kernel": self.kernel}, sort_keys=True)
        write_private(path, data.encode("utf-8"))

    def record(self, target: str, kind: str, session: Optional[str], when: float, process: Optional[str],
               evidence: Evidence) -> None:
        """One event read now: into the finding of its kind, session and target (made when it is the first), the
        totals and the newest time of its kind."""
        key = (target, kind, session)
        if key not in self.findings:
            self.findings[key] = Finding(kind, target, session)
        self.findings[key].add(when, process, evidence)
        self.totals[kind] = self.totals.get(kind, 0) + 1
        self.newest[kind] = max(self.newest.get(kind, 0.0), when)


@dataclass
class Reading:
    """What one run read: files and bytes, and what could not be read (path, why); the grep it reads with."""

    grep: str
    files: int = 0
    bytes: int = 0
    not_read: list = field(default_factory=list)


def _session_dirs(tree, root: str, cutoff: float, live: set) -> tuple:
    """``([(session name, logs dir)], every session's name)`` under a temp root, or None when it cannot be
    listed: the sessions to read are those live (``live``: their names; a log that grows changes no directory's
    time) or whose logs dir changed since ``cutoff`` (a file came or went)."""
    try:
        fd = tree.open_dir(root)
    except OSError:
        return None
    try:
        found, names = [], set()
        for name in sorted(os.listdir(fd)):
            if not session_started(name):
                continue
            names.add(name)
            try:
                st = os.lstat(os.path.join(name, "logs"), dir_fd=fd)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and (st.st_mtime >= cutoff or name in live):
                found.append((name, os.path.join(root, name, "logs")))
        return found, names
    finally:
        os.close(fd)


def read_session(slot: Slot, session: str, logs_dir: str, owners: frozenset, state: State, cutoff: float,
                 reading: Reading) -> None:
    """Read the new lines of each log of a session that a signature reads, into ``state``'s findings."""
    tree = slot.target.tree
    try:
        dir_fd = tree.open_dir(logs_dir)
    except OSError as exc:
        reading.not_read.append({"path": tree.host_path(logs_dir), "error": exc.strerror or str(exc)})
        return
    try:
        for name in sorted(os.listdir(dir_fd)):
            signatures = signatures_for(name)
            if not signatures:
                continue
            key = "%s:%s/%s" % (slot.name, logs_dir, name)
            try:
                st = os.lstat(name, dir_fd=dir_fd)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):  # a link, fifo or device a local user planted: never opened
                reading.not_read.append({"path": tree.host_path("%s/%s" % (logs_dir, name)), "error": "%s is %s, not a "
                                        "regular file: not opened" % (name, _file_type(st.st_mode))})
                continue
            if st.st_mtime < cutoff and key not in state.marks:
                continue
            _read_log(slot, session, "%s/%s" % (logs_dir, name), name, dir_fd, owners, signatures, state, key,
                      reading)
    finally:
        os.close(dir_fd)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "a device"


def _read_log(slot: Slot, session: str, path: str, name: str, dir_fd: int, owners: frozenset, signatures: tuple,
              state: State, key: str, reading: Reading) -> None:
    try:
        fd = open_regular(name, dir_fd=dir_fd, owners=owners)
    except (UnsafePath, OSError) as exc:
        reading.not_read.append({"path": slot.target.tree.host_path(path), "error": str(exc)})
        return
    try:
        st = os.fstat(fd)
        start = state.marks.get(key, Mark(st.st_dev, st.st_ino)).start_for(st)
        reader = LogReader(fd, start, sorted({signature.needle for signature in signatures}), reading.grep)
        try:
            for hit in reader.hits():  # streamed: a log Ray fills with one error a second stays a stream
                signature = classify(name, signatures, hit.text)
                if signature is not None:
                    state.record(slot.name, signature.kind, session, line_time(hit.text) or st.st_mtime,
                                 process_of(hit.text, name), Evidence(path, hit.line, escaped(hit.text)))
        except OSError as exc:  # grep failed: the mark stays, the next run reads this part again
            reading.not_read.append({"path": slot.target.tree.host_path(path), "error": str(exc)})
            return
        reading.files += 1
        reading.bytes += reader.end.offset - start.offset
        state.marks[key] = reader.end
    finally:
        os.close(fd)


def _kmsg_records(fd: int) -> Iterator[tuple]:
    """``(sequence number, microseconds since boot, message)`` of each record ``/dev/kmsg`` holds now (one read is
    one record; the oldest ones may be overwritten while reading, then skipped)."""
    while True:
        try:
            record = os.read(fd, 8192)
        except BlockingIOError:  # read them all
            return
        except BrokenPipeError:  # overwritten since the last read: go on with the next one
            continue
        header, _sep, message = record.partition(b";")
        fields = header.split(b",")
        try:
            yield int(fields[1]), int(fields[2]), message.split(b"\n", 1)[0]
        except (IndexError, ValueError):
            continue


def read_kernel_log(state: State, reading: Reading, now: float) -> None:
    """The kernel OOM killer's kills of Ray's processes (their names start ``ray::``, or raylet, gcs_server) since the
    last record read, from the host's ``/dev/kmsg`` when it is readable: ``oom_killed`` findings of session
    ``kernel``. Ray writes such a kill as any worker death (``SYSTEM_ERROR``): this tells it apart."""
    try:
        st = os.lstat(KMSG)
        if not stat.S_ISCHR(st.st_mode) or st.st_uid != 0:
            raise PermissionError(1, "%s is not the kernel's character device" % KMSG)
        fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        reading.not_read.append({"path": KMSG, "error": "%s (the kernel OOM killer's kills are not looked for)"
                                 % (exc.strerror or exc)})
        return
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as handle:
            boot_id = handle.read().decode("ascii", "replace").strip()
        with open("/proc/uptime", "rb") as handle:
            booted = now - float(handle.read().split()[0])
        last = state.kernel[1] if state.kernel and state.kernel[0] == boot_id else -1
        for seq, usec, message in _kmsg_records(fd):
            if seq <= last:
                continue
            last = seq
            killed = KERNEL_OOM.search(message)
            if killed and killed.group(2).startswith(RAY_COMMS):
                state.record("host", "oom_killed", "kernel", booted + usec / 1e6, "pid %s (%s)" % (
                    killed.group(1).decode("ascii"), escaped(killed.group(2))), Evidence(KMSG, seq, escaped(message)))
        state.kernel = [boot_id, last]
    finally:
        os.close(fd)


def _proc_limit(pid: int, name: str) -> Optional[int]:
    """The soft limit ``name`` (a row of /proc/<pid>/limits, e.g. "Max open files") of a process, or None."""
    try:
        with open("/proc/%d/limits" % pid, "rb") as handle:
            for line in handle.read().decode("ascii", "replace").splitlines():
                if line.startswith(name):
                    soft = line[len(name):].split()[0]
                    return None if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _meminfo() -> dict:
    with open("/proc/meminfo", "rb") as handle:
        return {line.split(b":")[0].decode(): int(line.split()[1]) * 1024 for line in handle.read().splitlines()
                if len(line.split()) >= 2}


def _live(slot: Slot, finding, raylet) -> None:
    """The live raylet's findings: open files against its limit, memory against Ray's threshold, /dev/shm against
    the object store (``finding(kind, detail)`` records one)."""
    pid = raylet.pid
    limit = _proc_limit(pid, "Max open files")
    try:
        used = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        used = None
    if limit is not None and used is not None and used >= FD_NEAR * limit:
        finding("fd_near_limit", "raylet pid %d holds %d open files of its limit %d" % (pid, used, limit))
    elif limit is not None and limit < RECOMMENDED_NOFILE:
        finding("fd_limit_low", "raylet pid %d may open %d files (Ray asks for %d)" % (pid, limit, RECOMMENDED_NOFILE))
    threshold_text = (process_environ(pid, [MEMORY_THRESHOLD]) or {}).get(MEMORY_THRESHOLD)
    try:
        threshold = float(threshold_text) if threshold_text else DEFAULT_MEMORY_THRESHOLD
        memory = _meminfo()
        used_fraction = 1.0 - memory["MemAvailable"] / float(memory["MemTotal"])
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        used_fraction = None
    if used_fraction is not None and used_fraction >= threshold - MEMORY_MARGIN:
        finding("memory_near_threshold", "memory %.0f%% used, Ray kills workers at %.0f%% "
                "(RAY_memory_usage_threshold)" % (100 * used_fraction, 100 * threshold))
    store = flag_value(raylet.cmdline, "--object_store_memory")
    try:
        store_bytes = int(store) if store else None
        shm_fd = slot.target.tree.open_dir("/dev/shm")
    except (ValueError, OSError):
        return
    try:
        shm = filesystem_of(shm_fd, "/dev/shm")
    finally:
        os.close(shm_fd)
    if store_bytes and shm["total_bytes"] < store_bytes:
        finding("shm_too_small", "/dev/shm holds %s, the object store is %s: give the container --shm-size=%dm or more"
                % (format_bytes(shm["total_bytes"]), format_bytes(store_bytes), -(-store_bytes // (1 << 20))))


def _rotation(slot: Slot, finding, layout) -> None:
    """A finding when the running Ray does not rotate its logs as its options say (``rotation_max_bytes``,
    ``rotation_backup_count``: what ray_log_config wrote), or was started without ``RAY_ROTATION_MAX_BYTES``."""
    options = slot.options
    describe_version(layout, slot.target.tree, options.ray_uids, options.ray_temp_dir)
    configured = options.rotation_max_bytes
    max_bytes = None if configured is None else parse_size(configured, "rotation_max_bytes")
    report = rotation_report(layout.ray_version, layout.rotation, max_bytes, options.rotation_backup_count, slot.name,
                             layout.version_error)
    if report is not None and report["in_effect"] is False:
        finding("log_rotation_off", report["message"])


def _disks(slot: Slot, finding, paths: list, warning: float) -> list:
    """The filesystems of ``paths`` on the target (each once); a finding for each at or above ``warning`` used, of
    its bytes or its inodes."""
    found = []
    for path, _dev, fs in filesystems_under(slot.target.tree, paths, skipped=(OSError,)):
        found.append(fs)
        inodes = fs["inodes_used_percent"]
        if fs["used_percent"] >= warning or (inodes is not None and inodes >= warning):
            finding("disk_pressure", "%s %.1f%% used (%s free), inodes %s used" % (
                path, fs["used_percent"], format_bytes(fs["free_bytes"]),
                "-" if inodes is None else "%.1f%%" % inodes))
    return found


@dataclass
class DiagnoseOptions:
    """What ``diagnose`` reads: the usage options (where Ray is, which containers), how far back, the state file."""

    usage: UsageOptions
    since_hours: float = 24.0
    state_file: Optional[str] = None
    live: bool = True

    def validate(self) -> None:
        """``UsageError`` naming a bad value and the fix."""
        self.usage.ensure_valid()
        if isinstance(self.since_hours, bool) or not isinstance(self.since_hours, (int, float)) or \
                not 0 < self.since_hours <= 24 * 365:
            raise UsageError("since_hours %r must be more than 0 and at most a year (8760); for example 24"
                             % (self.since_hours,))
        if self.state_file is not None and not os.path.isabs(self.state_file):
            raise UsageError("state_file %r is not an absolute path; give one, for example "
                             "/var/lib/rayops/diagnose-state.json" % (self.state_file,))


def diagnose(options: DiagnoseOptions, psutil, docker=None, save: bool = True) -> dict:
    """Findings of the node's logs (new lines only, with ``state_file``) and of the live node; the state is saved
    when ``save`` and a state file is given. The result: findings (worst first), counts by kind, totals ever."""
    options.validate()
    try:
        reading = Reading(grep_program())
    except GrepMissing as exc:
        raise UsageError(exc.strerror) from exc
    now = time.time()
    cutoff = now - options.since_hours * 3600
    state = State.load(options.state_file)
    for finding in state.findings.values():
        finding.new = 0
    live = []
    node = node_targets(options.usage, docker, host=True)
    errors = [{"target": "docker", "error": node.containers_error}] if node.containers_error else []
    sessions = {}  # (target, temp root) listed -> the names of its sessions
    held = None
    for slot in node.slots:
        enter(slot)
        if slot.status is not None:
            if slot.status == "error":
                errors.append({"target": slot.name, "error": slot.reason})
            continue
        slot_options = slot.options
        layout = discover(slot.target, psutil, slot_options.tmp_dir, slot_options.ray_temp_dir, slot.environ,
                          slot_options.ray_uids)
        owners = frozenset({0}) | slot_options.ray_uids | frozenset(proc.uid for proc in layout.trusted)
        for root in layout.temp_roots:
            live_here = {name for (live_root, name) in layout.live_sessions if live_root == root}
            listed = _session_dirs(slot.target.tree, root, cutoff, live_here)
            if listed is None:
                continue
            sessions[(slot.name, root)] = listed[1]
            for session, logs_dir in listed[0]:
                read_session(slot, session, logs_dir, owners, state, cutoff, reading)
        if not options.live:
            continue

        def finding(kind: str, detail: str, slot: Slot = slot) -> None:
            live.append(Finding(kind, slot.name, None, count=1, first=now, last=now, detail=detail))

        for raylet in (proc for proc in layout.trusted if proc.kind == "raylet"):
            _live(slot, finding, raylet)
        _rotation(slot, finding, layout)
        disks = _disks(slot, finding, [slot_options.tmp_dir] + list(layout.temp_roots),
                       slot_options.thresholds["warning"])
        if held is None:
            held = deleted_open_files(psutil)
        deleted = deleted_open_on(held, slot, disks)
        if deleted["bytes"] >= DELETED_OPEN_SHOWN:
            finding("deleted_open", "%s held open by %d process(es) in %d deleted file(s)" % (
                format_bytes(deleted["bytes"]), len(deleted["processes"]), deleted["files"]))
    read_kernel_log(state, reading, now)
    _forget_gone(state, sessions)
    if save and options.state_file is not None:
        state.save(options.state_file, now)
    return report(state, live, reading, errors, cutoff)


def _forget_gone(state: State, sessions: dict) -> None:
    """Drop the marks of logs whose session is gone from a temp root listed this run (cleaned up). A session only
    outside the window keeps its marks: read again later, it would count its events twice."""
    for key in list(state.marks):
        target, _sep, path = key.partition(":")
        root, _sep, rest = path.partition("/session_")
        names = sessions.get((target, root))
        if names is not None and "session_" + rest.split("/", 1)[0] not in names:
            del state.marks[key]


def report(state: State, live: list, reading: Reading, errors: list, cutoff: float) -> dict:
    """The result of a diagnose run: findings of the window (worst and newest first), by kind, the totals ever."""
    shown = [finding for finding in state.findings.values() if (finding.last or cutoff) >= cutoff] + live
    shown.sort(key=lambda f: (-SEVERITIES.index(f.severity), -(f.last or 0.0), f.kind, f.target, f.session or ""))
    findings = [finding.as_dict() for finding in shown]
    by_kind = {}
    for finding in shown:
        by_kind[finding.kind] = by_kind.get(finding.kind, 0) + finding.count
    worst = findings[0]["severity"] if findings else None
    return {"findings": findings, "by_kind": by_kind, "new": sum(finding.new for finding in shown), "worst": worst,
            "newest": max((finding.last for finding in shown if finding.last), default=None),
            "totals": dict(state.totals), "newest_by_kind": dict(state.newest), "files_read": reading.files,
            "bytes_read": reading.bytes, "not_read": reading.not_read, "errors": errors,
            "summary": summary(findings)}


def summary(findings: list) -> str:
    """One line: how many findings of which kinds, the worst first, or that there are none."""
    if not findings:
        return "no findings: nothing in Ray's logs or on the live node says it failed or is about to"
    kinds = []
    for finding in findings:
        if finding["kind"] not in kinds:
            kinds.append(finding["kind"])
    return "%d finding(s), worst %s: %s" % (len(findings), findings[0]["severity"], ", ".join(kinds))
