# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus textfile metrics of ``ray-maintenance`` (see docs/metrics.md).

``usage_text(report)`` renders a usage report (from ``_usage.collect_usage``),
``cleanup_text(result, ...)`` a cleanup result (from ``_cleanup.Cleanup.run``),
in the text exposition format; ``write_textfile`` puts a file in
node_exporter's textfile directory atomically.  ``update_status`` records
that a cron command could not start, and why (``rayops_ray_maintenance.prom``,
there only while one cannot), so a node whose config or libraries are broken
is not silent.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import display_path
from ansible_collections.rayops.disk.plugins.module_utils._findings import KINDS
from ansible_collections.rayops.disk.plugins.module_utils._fs import mountpoint_of, open_regular, read_head
from ansible_collections.rayops.disk.plugins.module_utils._locks import LockError, flock_within, open_lock_file
from ansible_collections.rayops.disk.plugins.module_utils._options import LEVELS
from ansible_collections.rayops.disk.plugins.module_utils._ship import SKIP_REASONS
from ansible_collections.rayops.disk.plugins.module_utils._usage import CATEGORIES

USAGE_FILE = "rayops_ray_usage.prom"
CLEANUP_FILE = "rayops_ray_cleanup.prom"
STATUS_FILE = "rayops_ray_maintenance.prom"
PRESSURE_FILE = "rayops_ray_pressure.prom"
DIAGNOSE_FILE = "rayops_ray_diagnose.prom"
LOCK_FILE = ".rayops_ray.prom.lock"  # not *.prom: node_exporter ignores it
STATUS_COMMANDS = ("monitor", "cleanup", "watch", "ship")
"""The commands whose start is recorded in ``STATUS_FILE``: those cron runs (``check`` is a probe others run)."""
START_ERRORS = ("config", "library", "log")
"""Why a run could not start, as the ``reason`` label says it: a fixed set, never text from the run."""
_STATUS_LINE = re.compile(r'^rayops_ray_maintenance_(start_error|start_error_timestamp_seconds)'
                          r'\{command="(\w+)"(?:,reason="(\w+)")?\} (\S+)$')


@dataclass
class Family:
    """One metric: its name, help text, samples and type (``gauge``, or ``counter`` for a ``_total``)."""

    name: str
    help: str
    samples: list = field(default_factory=list)
    kind: str = "gauge"

    def add(self, value: float, **labels: str) -> None:
        """Add a sample; labels keep the order given."""
        self.samples.append((labels, value))


def escape_label(value: str) -> str:
    """A label value as the exposition format wants it: UTF-8, with ``\\``, ``"`` and newline escaped.

    Undecodable bytes of a file name (surrogate-escaped) become ``\\xNN`` first.
    """
    return display_path(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):  # and bool
        return str(int(value))
    return repr(float(value))


def render(families: list) -> str:
    """The exposition text of ``families``: ``# HELP``, ``# TYPE``, then the samples."""
    lines = []
    for family in families:
        lines.append("# HELP %s %s" % (family.name, family.help))
        lines.append("# TYPE %s %s" % (family.name, family.kind))
        for labels, value in family.samples:
            pairs = ",".join('%s="%s"' % (key, escape_label(str(val))) for key, val in labels.items())
            lines.append("%s%s %s" % (family.name, "{%s}" % pairs if pairs else "", _number(value)))
    return "\n".join(lines) + "\n"


def _usage_targets(report: dict) -> Iterator[tuple]:
    """``(target, kind, entry, [(filesystem, mountpoint)])`` for the host and each measured container."""
    roots = {os.path.normpath(p) for p in [report["tmp_dir"]] + list(report["ray_temp_dirs"])}
    filesystems = [(fs, mountpoint_of(fs["path"])) for fs in report["filesystems"]
                   if os.path.normpath(fs["path"]) in roots]
    yield "host", "host", report, filesystems
    for entry in report["containers"]:
        if entry["tmp_bytes"] is not None:  # measured: running, and no error
            yield entry["name"], "container", entry, [(entry["filesystem"], entry["filesystem"]["path"])]


def usage_families(report: dict, now: Optional[float] = None) -> list:
    """The families of ``rayops_ray_usage.prom`` for a usage report."""
    fams = {name: Family("rayops_ray_" + name, text) for name, text in (
        ("filesystem_size_bytes", "Size of the filesystem holding the target's tmp dir."),
        ("filesystem_avail_bytes", "Bytes free for unprivileged users on the filesystem holding the tmp dir."),
        ("filesystem_used_bytes", "Bytes used on the filesystem holding the tmp dir."),
        ("filesystem_info", "A filesystem holding the tmp dir or a Ray temp root (always 1)."),
        ("filesystem_inodes_used_ratio", "Share of the inodes used on the filesystem holding the tmp dir (none "
         "where the filesystem has no inode limit)."),
        ("deleted_open_bytes", "Bytes that deleted files still held open by a process keep allocated on the "
         "target's filesystems: deleting frees them only when the process closes them."),
        ("tmp_bytes", "Allocated bytes under the target's tmp dir."),
        ("category_bytes", "Allocated bytes per category of what fills the tmp dir and Ray temp roots."),
        ("sessions", "Ray sessions by state (live or stale)."),
        ("usage_level", "Usage level: 0 ok, 1 info, 2 warning, 3 critical."),
        ("usage_errors", "Entries that could not be measured."),
        ("usage_timestamp_seconds", "When this file was written (Unix time)."),
        ("containers_up", "1 when Docker answered or containers are not measured, 0 when it did not."),
    )}
    for target, kind, entry, filesystems in _usage_targets(report):
        ids = {"target": target, "kind": kind}
        fs = entry["filesystem"]
        fams["filesystem_size_bytes"].add(fs["total_bytes"], **ids)
        fams["filesystem_avail_bytes"].add(fs["free_bytes"], **ids)
        fams["filesystem_used_bytes"].add(fs["used_bytes"], **ids)
        if fs.get("inodes_used_percent") is not None:
            fams["filesystem_inodes_used_ratio"].add(fs["inodes_used_percent"] / 100.0, **ids)
        if entry.get("deleted_open") is not None:
            fams["deleted_open_bytes"].add(entry["deleted_open"]["bytes"], **ids)
        for each, mountpoint in filesystems:
            fams["filesystem_info"].add(1, **ids, path=each["path"], mountpoint=mountpoint)
        fams["tmp_bytes"].add(entry["tmp_bytes"], **ids)
        for category in CATEGORIES:
            fams["category_bytes"].add(entry["categories"][category]["bytes"], **ids, category=category)
        live = sum(1 for session in entry["sessions"] if session["live"])
        fams["sessions"].add(live, **ids, state="live")
        fams["sessions"].add(len(entry["sessions"]) - live, **ids, state="stale")
        fams["usage_level"].add(LEVELS.index(entry["level"]), **ids)
        docker_error = 1 if kind == "host" and report["containers_error"] else 0
        fams["usage_errors"].add(entry["error_count"] - docker_error, **ids)
    fams["usage_timestamp_seconds"].add(time.time() if now is None else now)
    fams["containers_up"].add(0 if report["containers_error"] else 1)
    return list(fams.values())


def usage_text(report: dict, now: Optional[float] = None) -> str:
    """The text of ``rayops_ray_usage.prom``."""
    return render(usage_families(report, now))


def pressure_families(state) -> list:
    """The families of ``rayops_ray_pressure.prom`` from the guard's state (``_watch.GuardState``) and its marks."""
    fams = {name: Family("rayops_ray_pressure_" + name, text) for name, text in (
        ("watch_timestamp_seconds", "When the pressure guard last looked at its filesystems (Unix time)."),
        ("used_ratio", "Share of a watched filesystem used, by resource (bytes or inodes), at the guard's last look."),
        ("high_ratio", "The guard's high mark, by resource: at or above it, it reclaims."),
        ("low_ratio", "The guard's low mark: a reclaim stops below it."),
        ("active", "1 while a watched filesystem is at or above its high mark after the guard's reclaim, else 0."),
        ("last_reaction_seconds", "Seconds from the look that saw the high mark crossed to the end of the reclaim."),
        ("last_reclaim_timestamp_seconds", "When the last pressure reclaim ended (Unix time)."),
        ("dir_unreadable", "1 for a watched dir that cannot be read safely (a link, a fifo, a dir another user "
         "controls where Ray's root would be): its filesystem is not watched; the rest is."),
        ("held_bytes", "After a reclaim that could not relieve a disk: bytes its largest owners hold in the watched "
         "dirs, which the guard may not take (at most 5 owners per target)."),
        ("held_inodes", "After a reclaim that could not relieve a disk: inodes its largest owners hold in the "
         "watched dirs (at most 5 owners per target)."),
        ("held_path_bytes", "After a reclaim that could not relieve a disk: its largest entries left in the watched "
         "dirs, with their owner (at most 5 per target)."),
    )}
    reclaims = Family("rayops_ray_pressure_reclaims_total", "Pressure reclaims since the guard started, by how they "
                      "ended (relieved: below the low mark).", kind="counter")
    freed = Family("rayops_ray_pressure_freed_bytes_total", "Bytes the guard's reclaims freed since it started, by "
                   "tier.", kind="counter")
    if state.looked_at is not None:
        fams["watch_timestamp_seconds"].add(state.looked_at)
    for reading in state.readings:
        ids = {"target": reading.target, "kind": reading.kind, "path": reading.path}
        fams["used_ratio"].add(reading.used_percent / 100.0, **ids, resource="bytes")
        if reading.inodes_used_percent is not None:
            fams["used_ratio"].add(reading.inodes_used_percent / 100.0, **ids, resource="inodes")
    fams["high_ratio"].add(state.marks["bytes"] / 100.0, resource="bytes")
    fams["high_ratio"].add(state.marks["inodes"] / 100.0, resource="inodes")
    fams["low_ratio"].add(state.marks["low"] / 100.0)
    fams["active"].add(1 if state.active else 0)
    if state.last_reaction_seconds is not None:
        fams["last_reaction_seconds"].add(state.last_reaction_seconds)
        fams["last_reclaim_timestamp_seconds"].add(state.last_reclaim_at)
    for unreadable in state.unreadable:
        fams["dir_unreadable"].add(1, target=unreadable["target"], path=unreadable["path"])
    for held in state.held:
        for owner in held["owners"]:
            fams["held_bytes"].add(owner["bytes"], target=held["target"], owner=owner["owner"])
        for owner in held["owners_by_inodes"]:
            fams["held_inodes"].add(owner["inodes"], target=held["target"], owner=owner["owner"])
        for path in held["paths"]:
            fams["held_path_bytes"].add(path["bytes"], target=held["target"], path=path["path"], owner=path["owner"])
    for result, count in state.reclaims.items():
        reclaims.add(count, result=result)
    for tier, count in state.freed.items():
        freed.add(count, tier=tier)
    return list(fams.values()) + [reclaims, freed]


def pressure_text(state) -> str:
    """The text of ``rayops_ray_pressure.prom``."""
    return render(pressure_families(state))


def diagnose_families(result: dict, finished: float) -> list:
    """The families of ``rayops_ray_diagnose.prom``: findings ever per kind (a counter, from the state file), the
    newest per kind, what is found now."""
    fams = {name: Family("rayops_ray_" + name, text, kind=kind) for name, text, kind in (
        ("findings_total", "Events of each kind of failure read in Ray's logs, ever (kept in the diagnose state "
         "file).", "counter"),
        ("finding_last_timestamp_seconds", "When the newest event of each kind happened (Unix time; 0: never).",
         "gauge"),
        ("findings_current", "Findings of each kind now: in the logs of the window (--since) and on the live "
         "node.", "gauge"),
        ("diagnose_last_run_timestamp_seconds", "When the last diagnose finished (Unix time).", "gauge"),
    )}
    current = result["by_kind"]
    for name, kind in KINDS.items():
        labels = {"kind": name, "severity": kind.severity}
        fams["findings_total"].add(int(result["totals"].get(name, 0)), **labels)
        fams["finding_last_timestamp_seconds"].add(float(result["newest_by_kind"].get(name, 0.0)), kind=name)
        fams["findings_current"].add(int(current.get(name, 0)), **labels)
    fams["diagnose_last_run_timestamp_seconds"].add(finished)
    return list(fams.values())


def diagnose_text(result: dict, finished: float) -> str:
    """The text of ``rayops_ray_diagnose.prom``."""
    return render(diagnose_families(result, finished))


SHIP_FILE = "rayops_ray_ship.prom"


def ship_families(result: dict, finished: float) -> list:
    """The families of ``rayops_ray_ship.prom`` for a ``ray-maintenance ship`` result (``_ship.ship``)."""
    fams = {name: Family("rayops_ray_ship_" + name, text) for name, text in (
        ("last_run_timestamp_seconds", "When the last ship run finished (Unix time)."),
        ("files_shipped", "Files the last ship run uploaded and verified."),
        ("bytes_shipped", "Bytes the last ship run uploaded and verified."),
        ("files_failed", "Files the last ship run could not upload or verify (shipped again by the next run)."),
        ("files_not_shipped", "Matches the last ship run refused and never read: a symlink on the way, a FIFO, a "
         "device, a socket, a file with more than one hard link."),
        ("skipped", "1 when the last ship run shipped nothing on purpose, by reason: RAY_DISABLE_HDFS_COPY, "
         "ship_disabled or worker (a Ray worker node: only the head ships); else 0."),
    )}
    fams["last_run_timestamp_seconds"].add(finished)
    fams["files_shipped"].add(int(result["shipped"]))
    fams["bytes_shipped"].add(int(result["bytes_shipped"]))
    fams["files_failed"].add(int(result["failed"]))
    fams["files_not_shipped"].add(int(result["not_shipped"]))
    for reason in SKIP_REASONS:
        fams["skipped"].add(1 if result["skipped_by"] == reason else 0, reason=reason)
    return list(fams.values())


def ship_text(result: dict, finished: float) -> str:
    """The text of ``rayops_ray_ship.prom``."""
    return render(ship_families(result, finished))


def cleanup_succeeded(result: Optional[dict]) -> bool:
    """Whether a cleanup ran (not locked out, not failed), no target had an error and a prune did not fail."""
    return bool(result) and result["status"] == "done" and not result["containers_error"] and \
        not (result["docker_prune"] or {}).get("error") and \
        all(target["status"] != "error" for target in result["targets"])


ARCHIVE_STATUSES = ("archived", "already_archived", "failed", "removed_unarchived")


def cleanup_families(result: Optional[dict], duration: float, finished: float) -> list:
    """The families of ``rayops_ray_cleanup.prom``; ``result`` is None when the run failed."""
    fams = {name: Family("rayops_ray_cleanup_" + name, text) for name, text in (
        ("last_run_timestamp_seconds", "When the last cleanup finished (Unix time)."),
        ("duration_seconds", "How long the last cleanup took."),
        ("success", "1 when the last cleanup ran, no target had an error, Docker answered (with containers on) "
         "and docker prune did not fail, else 0."),
        ("freed_bytes", "Bytes the last cleanup freed on the target."),
        ("removed_entries", "Entries the last cleanup removed on the target."),
        ("target_status", "The target's status in the last cleanup (always 1)."),
        ("docker_reclaimed_bytes", "Bytes docker_prune reclaimed in the last cleanup (0 when off)."),
        ("archives", "Sessions whose logs the last cleanup archived before removing (archive_dest), by status: "
         "archived, already_archived, failed (kept), removed_unarchived."),
        ("archived_bytes", "Bytes of the archives the last cleanup wrote and verified on the target."),
    )}
    fams["last_run_timestamp_seconds"].add(finished)
    fams["duration_seconds"].add(duration)
    fams["success"].add(1 if cleanup_succeeded(result) else 0)
    for target in (result or {}).get("targets", []):
        ids = {"target": target["name"], "kind": target["kind"]}
        fams["freed_bytes"].add(target["freed_bytes"], **ids)
        fams["removed_entries"].add(target["removed"], **ids)
        fams["target_status"].add(1, **ids, status=target["status"])
        archives = target.get("archives") or []
        if archives:
            for status in ARCHIVE_STATUSES:
                fams["archives"].add(sum(1 for found in archives if found["status"] == status), **ids, status=status)
            fams["archived_bytes"].add(sum(found["bytes"] for found in archives), **ids)
    prune = (result or {}).get("docker_prune") or {}
    fams["docker_reclaimed_bytes"].add(prune.get("reclaimed_bytes") or 0)
    return list(fams.values())


def cleanup_text(result: Optional[dict], duration: float, finished: Optional[float] = None) -> str:
    """The text of ``rayops_ray_cleanup.prom``."""
    return render(cleanup_families(result, duration, time.time() if finished is None else finished))


def status_families(entries: dict) -> list:
    """The families of ``rayops_ray_maintenance.prom``: ``entries`` maps a command to ``(start error, time)``."""
    fams = {name: Family("rayops_ray_maintenance_" + name, text) for name, text in (
        ("start_error", "The last run of the command could not start, and why: reason config, library or log "
         "(always 1; gone once a run starts)."),
        ("start_error_timestamp_seconds", "When the command last could not start (Unix time)."),
    )}
    for command in sorted(entries):
        error, when = entries[command]
        fams["start_error"].add(1, command=command, reason=error)
        fams["start_error_timestamp_seconds"].add(when, command=command)
    return list(fams.values())


def parse_status(text: str) -> dict:
    """The entries of a ``rayops_ray_maintenance.prom`` text, as ``status_families`` takes them.

    Only what this module writes is read back: known commands and reasons, numeric values; the rest is dropped.
    """
    errors, times = {}, {}
    for line in text.splitlines():
        match = _STATUS_LINE.match(line)
        if not match or match.group(2) not in STATUS_COMMANDS:
            continue
        name, command, reason, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        if name == "start_error" and reason in START_ERRORS:
            errors[command] = reason
        elif name == "start_error_timestamp_seconds" and reason is None:
            times[command] = number
    return {command: (error, times.get(command, 0.0)) for command, error in errors.items()}


def update_status(directory: str, command: str, error: Optional[str], now: Optional[float] = None,
                  lock_timeout: float = 30.0) -> Optional[str]:
    """Record in ``rayops_ray_maintenance.prom`` that ``command`` could not start and why, or (``error`` None)
    that it started: its entry goes, and the file with the last one.

    The other commands' entries are kept: the file is read and rewritten under the metrics lock.  A run that
    starts where there is no such file (every run of a healthy node) only looks for it.
    """
    if command not in STATUS_COMMANDS or (error is not None and error not in START_ERRORS):
        raise ValueError("no status for command %r, error %r" % (command, error))
    if error is None and not os.path.lexists(os.path.join(directory, STATUS_FILE)):
        return None

    def update(old: str) -> Optional[str]:
        entries = parse_status(old)
        entries.pop(command, None)
        if error is not None:
            entries[command] = (error, time.time() if now is None else now)
        return render(status_families(entries)) if entries else None

    return write_textfile(directory, STATUS_FILE, update, lock_timeout)


_MAX_READ = 1 << 16
"""How much of a metrics file ``write_textfile`` reads back to update it: far more than it ever writes."""


def _read_within(dir_fd: int, name: str) -> str:
    """The text of ``name`` in the directory (not through a symlink), "" when there is none."""
    try:
        fd = open_regular(name, dir_fd=dir_fd)
    except OSError:  # none yet (or a symlink, a fifo, unreadable: written afresh)
        return ""
    try:
        return read_head(fd, _MAX_READ).decode("utf-8", "replace")
    finally:
        os.close(fd)


def write_textfile(directory: str, name: str, text, lock_timeout: float = 30.0) -> str:
    """Write ``directory/name`` atomically, mode 0644; return its path.

    The text goes to ``.<name>.tmp`` (ignored by node_exporter), is flushed to
    disk and renamed over ``name``: a scrape sees the old file or the new one,
    never a part.  Writers of one directory take turns (``flock`` on the lock
    file ``LOCK_FILE`` in it, mode 0600, this user's own: not on the directory,
    which any user may open and lock), so two runs (cron's cleanup and monitor)
    never share the temporary file.  ``LockError`` (an ``OSError``) when the
    lock is still held after ``lock_timeout`` seconds or the lock file is not ours.
    ``text`` may be a function of the file's current text (read under the lock), for an update; when it
    returns None the file is removed.
    """
    temp = ".%s.tmp" % name
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    lock_fd = None
    try:
        lock_fd = open_lock_file(LOCK_FILE, dir_fd=dir_fd, directory=directory)
        if not flock_within(lock_fd, lock_timeout):
            lock = os.path.join(directory, LOCK_FILE)
            raise LockError("the metrics lock %s is still held by another process after %gs (fuser -v %s "
                            "names it)" % (lock, lock_timeout, lock))
        if callable(text):
            text = text(_read_within(dir_fd, name))
            if text is None:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                os.fsync(dir_fd)
                return os.path.join(directory, name)
        try:  # left by a run that was killed (or planted: never written through)
            os.unlink(temp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=dir_fd)
        try:
            try:
                os.fchmod(fd, 0o644)
                data = text.encode("utf-8")
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        os.fsync(dir_fd)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
        os.close(dir_fd)
    return os.path.join(directory, name)
