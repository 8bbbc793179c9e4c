# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Why a Ray node failed: the kinds of failure, the lines of Ray's logs that show each, and what to do.

``KINDS`` names each kind of finding with its severity and remedy, in our words. ``SIGNATURES`` are the lines
that show one, learnt from what Ray 2.40, 2.53 and 2.60 really write when each failure is induced
(docs/ray-failure-wording.md; tests/system/test_diagnose.py induces them again): one regex per signature, the
same for every version, and the log files it is read in, chosen so that one event is counted once (Ray writes
an OOM kill into five files; the GCS's ``Reporting worker exit`` line is the one counted).

A ``Finding`` gathers the events of one kind in one session of one target: how many, first and last time, the
processes named, and a few lines of evidence, escaped. Lines no signature knows are not findings.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field
from typing import Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import printable

SEVERITIES = ("info", "warning", "critical")
EVIDENCE_KEPT = 3
"""Lines of evidence a finding keeps (the first ones, and always the newest)."""
EVIDENCE_WIDTH = 400
"""Characters of a line of evidence kept (escaped)."""
PROCESSES_KEPT = 10
"""Processes a finding names at most."""


@dataclass(frozen=True)
class Kind:
    """A kind of finding: how bad it is and what to do, in one or two sentences."""

    name: str
    severity: str
    summary: str
    remedy: str


KINDS = {kind.name: kind for kind in (
    Kind("disk_full", "critical", "a disk Ray writes to was full (ENOSPC)",
         "Free the disk now (ray-maintenance cleanup --pressure) and find what filled it (ray-maintenance monitor); "
         "keep the pressure guard running, or give Ray's temp dir and spill dir a larger disk."),
    Kind("fs_monitor", "warning", "Ray's file system monitor saw a disk over its threshold",
         "Ray refuses to create or spill objects above 95% used: clean the disk (ray-maintenance cleanup), or raise "
         "RAY_local_fs_capacity_threshold only if the disk is known to hold enough."),
    Kind("runtime_env_failed", "warning", "a runtime_env could not be set up",
         "Read the agent's reason in runtime_env_setup-*.log of the session; an offline node needs its packages "
         "preinstalled in the image or a reachable index (pip's index_url), and the disk must hold the env."),
    Kind("oom_killed", "critical", "a worker was killed for memory",
         "Give the task more memory (num_cpus or memory= in its options) or fewer tasks per node, or lower its use; "
         "RAY_memory_usage_threshold (default 0.95) is when Ray's memory monitor kills."),
    Kind("worker_died", "warning", "a worker exited unexpectedly or was killed by a signal",
         "Read the worker's .err log of the session for a traceback or a segfault; a SIGKILL that Ray did not send is "
         "often the kernel's OOM killer (dmesg)."),
    Kind("owner_died", "warning", "an object's owner died, so its objects were lost",
         "Keep the process that creates objects (ray.put, task returns) alive while others use them, or create them "
         "in the driver or a detached actor."),
    Kind("fd_exhausted", "critical", "a process ran out of file descriptors (Too many open files)",
         "Raise the open-files limit of Ray's processes (ulimit -n 65536 before ray start, LimitNOFILE= in a systemd "
         "unit, or ray_cleanup_nofile_limit of the role)."),
    Kind("shm_fallback", "warning", "the object store runs on disk, not in /dev/shm",
         "/dev/shm was smaller than the object store, so Ray put it on disk (slow, and it fills the disk): give the "
         "container --shm-size at least the object store's size, or lower --object-store-memory."),
    Kind("log_setting_ignored", "info", "Ray ignored a log setting",
         "RAY_BACKEND_LOG_LEVEL takes a name (debug, info, warning, error), not a number: Ray stays at info. "
         "rayops.disk.ray_log_config writes the name."),
    Kind("fd_limit_low", "info", "the raylet's open-files limit is low",
         "Ray recommends at least 65536 open files for its processes: ulimit -n 65536 before ray start, or "
         "LimitNOFILE=65536 in its systemd unit (ray_cleanup_nofile_limit)."),
    Kind("fd_near_limit", "warning", "the raylet has used most of its open-files limit",
         "Raise the open-files limit of Ray's processes (ulimit -n 65536, LimitNOFILE=) before it runs out."),
    Kind("memory_near_threshold", "warning", "memory use is near the threshold where Ray kills workers",
         "Ray's memory monitor kills workers above RAY_memory_usage_threshold: run fewer or smaller tasks here, "
         "or give the node more memory."),
    Kind("shm_too_small", "warning", "/dev/shm is smaller than the object store",
         "The object store will fall back to disk: give the container --shm-size at least the object store's size "
         "(docker run --shm-size, shm_size in compose), or lower --object-store-memory."),
    Kind("disk_pressure", "warning", "a disk Ray uses is nearly full",
         "Clean it (ray-maintenance cleanup, or --pressure now) and find what fills it (ray-maintenance monitor)."),
    Kind("log_rotation_off", "warning", "Ray does not rotate its logs as configured",
         "Ray reads RAY_ROTATION_* only when it starts: set them in the environment file Ray starts with "
         "(rayops.disk.ray_log_config; the role's ray_cleanup_ray_env_files) and restart Ray."),
    Kind("deleted_open", "info", "deleted files still held open take disk space",
         "The space comes back when the processes holding them close them or exit (ray-maintenance monitor names "
         "them); a Ray log deleted by hand is the usual cause."),
)}


@dataclass(frozen=True)
class Signature:
    """The lines that show a kind: a literal every such line holds (found fast), the regex, the log files
    (globs of names in a session's logs dir) it is read in."""

    kind: str
    needle: bytes
    pattern: "re.Pattern[bytes]"
    files: tuple = ("*",)


def _sig(kind: str, needle: bytes, pattern: bytes, files: tuple = ("*",)) -> Signature:
    return Signature(kind, needle, re.compile(pattern), files)


PROCESS_LOGS = ("*.out", "*.err", "python-core-*.log", "job-driver-*.log", "runtime_env_setup-*.log")
"""What Ray's processes write themselves; not dashboard_agent.log and events/, which repeat their events."""

SIGNATURES = (
    # ENOSPC as the OS says it, in Python ([Errno 28] ...) and C++ (... : No space left on device); Ray's own words.
    _sig("disk_full", b"No space left on device", rb"No space left on device", PROCESS_LOGS),
    _sig("disk_full", b"OutOfDiskError", rb"OutOfDiskError", PROCESS_LOGS),
    _sig("disk_full", b"Out of disk space", rb"Out of disk space", PROCESS_LOGS),
    # raylet.err has every one (raylet.out loses some when the disk is full).
    _sig("fs_monitor", b"% full, available space", rb"(?P<path>\S+) is over (?P<percent>\d+)% full", ("raylet.err",)),
    _sig("runtime_env_failed", b"Failed to create runtime env for job",
         rb"Failed to create runtime env for job (?P<job>[0-9a-f]+)", ("raylet.out",)),
    _sig("oom_killed", b"NODE_OUT_OF_MEMORY",
         rb"worker id = (?P<worker>[0-9a-f]+),.*exit_type = NODE_OUT_OF_MEMORY", ("gcs_server.out",)),
    _sig("worker_died", b"Reporting worker exit",
         rb"Reporting worker exit, worker id = (?P<worker>[0-9a-f]+),.*exit_type = "
         rb"(?:SYSTEM_ERROR|UNEXPECTED_SYSTEM_EXIT), exit_detail = (?P<detail>.{0,200})", ("gcs_server.out",)),
    _sig("owner_died", b"Owner of object died", rb"Owner of object died", ("raylet.out",)),  # 2.53 and later
    _sig("owner_died", b"Failed to get the location", rb"object_directory\.cc:\d+: Failed to get the location",
         ("raylet.out",)),  # 2.40: the owner no longer answers
    _sig("owner_died", b"OwnerDiedError", rb"OwnerDiedError", ("worker-*.err", "job-driver-*.log")),
    _sig("fd_exhausted", b"Too many open files", rb"Too many open files", PROCESS_LOGS),
    _sig("fd_exhausted", b"File descriptor limit reached", rb"File descriptor limit reached", PROCESS_LOGS),
    _sig("shm_fallback", b"Starting object store with directory",
         rb"Starting object store with directory (?!/dev/shm,)(?P<path>[^,\s]+),", ("raylet.out",)),
    _sig("log_setting_ignored", b"Unrecognized setting of",
         rb"Unrecognized setting of (?P<setting>RAY_\w+=\S*)", ("raylet.err", "gcs_server.err")),
)
NEEDLES = tuple(sorted({signature.needle for signature in SIGNATURES}))

# The prefixes of Ray's log lines: C++ ([2026-12-06 11:29:47,157 E 31127 31138] (raylet) file.cc:116: ...) and
# Python (2026-12-06 11:34:16,065\tERROR file.py:99 -- ...).
_CPP_PREFIX = re.compile(rb"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[,.](\d{3}) [A-Z] (\d+) \d+\]")
_PY_PREFIX = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[,.](\d{3})\s")
_PID = re.compile(rb"\bpid=(\d+)")
_TASK = re.compile(rb"\b(?:task_name=|task name=|name=)([A-Za-z_][\w.]*)")
_WORKER = re.compile(rb"\b(?:worker id = |worker_id=|Worker ID: )([0-9a-f]{56})")


def signatures_for(file_name: str) -> tuple:
    """The signatures read in a log file of this name."""
    return tuple(signature for signature in SIGNATURES
                 if any(fnmatch.fnmatchcase(file_name, glob) for glob in signature.files))


def escaped(text: bytes, width: int = EVIDENCE_WIDTH) -> str:
    """A line as evidence: ``printable()`` (control characters, bidi overrides and undecodable bytes escaped), its
    tabs escaped too (evidence stands in a table), at most ``width`` characters."""
    line = printable(text.decode("utf-8", "surrogateescape")).replace("\t", "\\t")
    return line if len(line) <= width else line[:width - 1] + "…"


def line_time(text: bytes) -> Optional[float]:
    """When a line of Ray's logs was written (its prefix, the node's local time), or None."""
    found = _CPP_PREFIX.match(text) or _PY_PREFIX.match(text)
    if not found:
        return None
    try:
        return time.mktime(time.strptime(found.group(1).decode("ascii"), "%Y-%m-%d %H:%M:%S")) + \
            int(found.group(2)) / 1000.0
    except ValueError:
        return None


def process_of(text: bytes, file_name: str) -> Optional[str]:
    """The process a line names: its task, worker id or pid (the line's own, else the log's writer), or None."""
    parts = []
    task = _TASK.search(text)
    if task:
        parts.append("task %s" % task.group(1).decode("ascii"))
    worker = _WORKER.search(text)
    if worker:
        parts.append("worker %s" % worker.group(1).decode("ascii")[:12])
    pid = _PID.search(text)
    if pid:
        parts.append("pid %s" % pid.group(1).decode("ascii"))
    elif not worker:
        writer = re.search(r"[-_](\d+)\.(?:err|out|log)$", file_name)  # worker-<id>-<job>-<pid>.err
        if writer and not file_name.startswith(("raylet", "gcs_server")):
            parts.append("pid %s" % writer.group(1))
    return ", ".join(parts) or None


@dataclass
class Evidence:
    """A line that shows a finding: where, and the line itself, escaped."""

    file: str
    line: int
    text: str

    def as_dict(self) -> dict:
        """For a result, JSON or the state file."""
        return {"file": self.file, "line": self.line, "text": self.text}


@dataclass
class Finding:
    """The events of one kind in one session of one target."""

    kind: str
    target: str
    session: Optional[str]
    count: int = 0
    first: Optional[float] = None
    last: Optional[float] = None
    processes: list = field(default_factory=list)
    evidence: list = field(default_factory=list)
    new: int = 0
    """Events found in this run (not in an earlier run's reading)."""
    detail: Optional[str] = None
    """What a finding of the live node measured (limits, sizes), in words."""

    @property
    def severity(self) -> str:
        return KINDS[self.kind].severity

    def add(self, when: Optional[float], process: Optional[str], evidence: Evidence) -> None:
        """One more event, seen in this run."""
        self.count += 1
        self.new += 1
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
        if process and process not in self.processes and len(self.processes) < PROCESSES_KEPT:
            self.processes.append(process)
        if len(self.evidence) < EVIDENCE_KEPT:
            self.evidence.append(evidence)
        else:
            self.evidence[-1] = evidence  # the first ones, and the newest

    def as_dict(self) -> dict:
        """The finding in a result (and the state file): every field, evidence as dicts, the kind's words."""
        kind = KINDS[self.kind]
        return {"kind": self.kind, "severity": kind.severity, "summary": kind.summary, "remedy": kind.remedy,
                "target": self.target, "session": self.session, "count": self.count, "new": self.new,
                "first": self.first, "last": self.last, "processes": list(self.processes),
                "evidence": [item.as_dict() for item in self.evidence], "detail": self.detail}

    @classmethod
    def from_dict(cls, value: dict) -> Optional["Finding"]:
        """A finding an earlier run kept (``new`` 0), or None when the state file's entry is not one."""
        try:
            if value["kind"] not in KINDS:
                return None
            return cls(value["kind"], str(value["target"]), value["session"], int(value["count"]),
                       value["first"], value["last"], [str(item) for item in value["processes"]][:PROCESSES_KEPT],
                       [Evidence(str(item["file"]), int(item["line"]), str(item["text"]))
                        for item in value["evidence"]][:EVIDENCE_KEPT])
        except (KeyError, TypeError, ValueError):
            return None


def classify(file_name: str, signatures: tuple, text: bytes) -> Optional[Signature]:
    """The signature a line of ``file_name`` shows, or None (not a finding)."""
    for signature in signatures:
        if signature.needle in text and signature.pattern.search(text):
            return signature
    return None
