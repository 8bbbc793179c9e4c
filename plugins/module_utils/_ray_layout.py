# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where Ray keeps its files on a node, and which of its sessions are live.

A *target* is a host or a container seen from the host: a path prefix
(``/`` or ``/proc/<pid>/root``) and a mount namespace.  Ray's own processes
in that namespace name the temp root and the live sessions on their command
lines (``raylet --session_dir=... --temp_dir=...``, ``gcs_server
--session-name=...``, ``log_monitor.py --session-dir=...``); sockets bound
in ``/proc/net/unix`` and files held open by any process in the target make
a session live too.  ``session_latest`` is read as a link, never followed.

A process is Ray's only when it is trusted (``trust_process``): it runs as
root or one of the configured Ray users, its executable is a Ray binary
owned by such a user, and every temp root it names is a path no other user
controls.  A name and a command line alone are anyone's to choose.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import base64
import datetime
import errno
import json
import os
import pwd
import re
import stat
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from ansible_collections.rayops.disk.plugins.module_utils._fs import Tree, UnsafePath, mount_id, open_dir

SESSION_RE = re.compile(r"^session_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})_(\d+)_(\d+)$")
"""``session_<YYYY-MM-DD_HH-MM-SS>_<microseconds>_<pid>``, as Ray names a session dir."""

RAY_EXECUTABLES = {"raylet": "/ray/core/src/ray/raylet/raylet", "gcs_server": "/ray/core/src/ray/gcs/gcs_server"}
"""Where Ray's binaries sit in its Python package, by process kind."""
LOG_MONITOR_SCRIPT = "/ray/_private/log_monitor.py"


def session_started(name: str) -> Optional[datetime.datetime]:
    """When a session began, from its name; None when the name is not a real session's.

    ``session_2024-13-45_99-99-99_1_1`` looks like one but names no time: it
    is anyone's directory, reported under ``other``, never an error.
    """
    match = SESSION_RE.match(name)
    if not match:
        return None
    try:
        return datetime.datetime.strptime(match.group(1), "%Y-%m-%d_%H-%M-%S")
    except ValueError:
        return None


KIND_ORDER = ("raylet", "gcs_server", "log_monitor")


@dataclass(frozen=True)
class RayProcess:
    """A Ray system process: its kind (raylet, gcs_server, log_monitor) and command line."""

    pid: int
    kind: str
    cmdline: tuple
    uid: int = 0


@dataclass(frozen=True)
class Target:
    """A host or a container: where its root is from here, and its mount namespace.

    A container's init is known by its pid and start time, so that a pid
    reused by another process is noticed before its root is entered.
    """

    name: str
    prefix: str = "/"
    mnt_ns: Optional[str] = None
    init_pid: Optional[int] = None
    start_time: Optional[int] = None

    @property
    def tree(self) -> Tree:
        """Where the target's paths are resolved (inside its root, never through the host's)."""
        return Tree(self.prefix, self.init_pid if self.prefix != "/" else None, self.start_time)

    def host_path(self, path: str) -> str:
        """The path, inside the target, as this process would name it (for messages: open with ``tree``)."""
        return self.tree.host_path(path)

    def mountinfo(self) -> str:
        """The mount table of the tree reached through ``prefix``."""
        if self.prefix == "/":
            return "/proc/self/mountinfo"
        return "/proc/%d/mountinfo" % self.init_pid

    def proc_dir(self) -> str:
        """The ``/proc/<pid>`` whose net namespace is the target's."""
        return "/proc/%s" % (self.init_pid if self.init_pid is not None else "self")


@dataclass
class RayLayout:
    """What discovery found for one target (paths are inside the target)."""

    temp_roots: list = field(default_factory=list)
    live_sessions: dict = field(default_factory=dict)
    node_role: str = "none"
    processes: list = field(default_factory=list)
    untrusted: list = field(default_factory=list)
    ray_version: Optional[str] = None
    version_error: Optional[str] = None
    rotation: Optional[dict] = None
    spill_roots: list = field(default_factory=list)
    """``SpillRoot``s that trusted processes name, each a path only root and their user control."""
    spill_refused: list = field(default_factory=list)
    """Spill directories trusted processes name that are not safe to use (path, source, pid, reason)."""
    nodes: dict = field(default_factory=dict)
    """``{node id: (temp root, session name)}`` of the trusted raylets running here."""


def flag_value(cmdline: Sequence[str], *names: str) -> Optional[str]:
    """The value of ``--name=value`` or ``--name value`` on a command line, or None."""
    for index, arg in enumerate(cmdline):
        for name in names:
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
            if arg == name and index + 1 < len(cmdline):
                return cmdline[index + 1]
    return None


def process_kind(name: str, cmdline: Sequence[str]) -> Optional[str]:
    """Classify a process as one of Ray's system processes, or None."""
    exe = os.path.basename(cmdline[0]) if cmdline else ""
    if name == "raylet" or exe == "raylet":
        return "raylet"
    if name == "gcs_server" or exe == "gcs_server":
        return "gcs_server"
    if any(arg.endswith("log_monitor.py") for arg in cmdline[:3]):
        return "log_monitor"
    return None


def mount_namespace(pid: object) -> Optional[str]:
    """The mount namespace id of a process (``mnt:[4026531841]``), or None if unreadable."""
    try:
        return os.readlink("/proc/%s/ns/mnt" % pid)
    except OSError:
        return None


def process_title(name: str, cmdline: Sequence[str]) -> str:
    """The title Ray gives a worker (``ray::...`` replaces its command line), else the process name."""
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0].strip()
    return name or ""


def iter_ray_processes(psutil, mnt_ns: Optional[str]):
    """Yield ``(process, kind, title, cmdline)`` for Ray's processes in a mount namespace (any when None).

    ``kind`` is raylet, gcs_server or log_monitor, or None for a ``ray::``
    worker or agent.  A process whose namespace cannot be read (another
    user's, when not root) counts only for this process's own namespace, the
    host; zombies never count.
    """
    own_ns = mount_namespace("self")
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        name = proc.info.get("name") or ""
        cmdline = proc.info.get("cmdline") or []
        kind = process_kind(name, cmdline)
        title = process_title(name, cmdline)
        if kind is None and not title.startswith("ray::"):
            continue
        if mnt_ns is not None:
            proc_ns = mount_namespace(proc.info["pid"])
            if proc_ns != mnt_ns and not (proc_ns is None and mnt_ns == own_ns):
                continue
        yield proc, kind, title, cmdline


def process_uids(proc) -> Optional[tuple]:
    """``(real, effective)`` uids of a psutil process, or None when it is gone."""
    try:
        uids = proc.uids()
    except Exception:  # psutil.Error (gone, denied), without importing psutil here
        return None
    return uids.real, uids.effective


def user_label(uid: int) -> str:
    """``root``, ``apiuser`` or ``uid 1000``: who a uid is, for a message."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % uid


def ray_processes(psutil, mnt_ns: Optional[str]) -> list:
    """Processes in a mount namespace that say they are Ray system processes (raylet, gcs_server, log_monitor).

    Nothing here is trusted yet: see ``trust_process``.
    """
    found = []
    for proc, kind, _title, cmdline in iter_ray_processes(psutil, mnt_ns):
        uids = process_uids(proc) if kind is not None else None
        if uids is not None:
            found.append(RayProcess(proc.pid, kind, tuple(cmdline), uids[1] if uids[0] == uids[1] else -1))
    return found


def _trusted_file(tree: Tree, path: str, st: Optional[os.stat_result], trusted: frozenset) -> Optional[str]:
    """Why a program file is not trustworthy (owner, mode, type), or None."""
    if st is None:
        try:
            st = tree.lstat(path)
        except OSError as exc:
            return "cannot check %s: %s" % (path, exc.strerror or exc)
    if not stat.S_ISREG(st.st_mode):
        return "%s is not a regular file" % path
    if st.st_uid not in trusted or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "%s is owned by %s with mode %04o: not a Ray installation only trusted users can change" % (
            path, user_label(st.st_uid), stat.S_IMODE(st.st_mode))
    return None


def _executable_reason(proc: RayProcess, tree: Tree, trusted: frozenset) -> Optional[str]:
    """Why a process's program is not Ray's own, or None."""
    if proc.kind == "log_monitor":
        script = next((arg for arg in proc.cmdline[1:3] if arg.endswith(LOG_MONITOR_SCRIPT)), None)
        if script is None or not os.path.isabs(script):
            return "log_monitor.py is not given by its absolute path"
        return _trusted_file(tree, script, None, trusted)
    try:
        exe = os.readlink("/proc/%d/exe" % proc.pid)
        st = os.stat("/proc/%d/exe" % proc.pid)
    except OSError as exc:
        return "cannot read its executable: %s" % (exc.strerror or exc)
    if not exe.endswith(RAY_EXECUTABLES[proc.kind]):
        return "its executable %s is not Ray's %s (…%s)" % (exe, proc.kind, RAY_EXECUTABLES[proc.kind])
    return _trusted_file(tree, exe, st, trusted)


def trust_process(proc: RayProcess, tree: Tree, ray_uids: frozenset) -> Optional[str]:
    """Why a process that says it is Ray's cannot be trusted with what root deletes, or None.

    Trusted: it runs as root or a Ray user (``ray_uids``), its program is a
    Ray file such a user owns, and each temp root it names is a path only
    root and its own user control (``_fs.open_beneath`` with trusted uids).
    """
    trusted = frozenset(ray_uids) | {0}
    if proc.uid not in trusted:
        return "runs as %s, not as root or a user of ray_users" % (
            user_label(proc.uid) if proc.uid >= 0 else "mixed real and effective uids")
    reason = _executable_reason(proc, tree, trusted)
    if reason:
        return reason
    for root in named_roots(proc):
        if root == "/":
            return "names / as Ray's temp root"
        try:
            os.close(tree.open_dir(root, trusted_uids=frozenset((0, proc.uid))))
        except OSError as exc:
            return "names %s, which is not safe: %s" % (root, exc.strerror or exc)
    return None


def session_of(path: str) -> Optional[tuple]:
    """Split a path inside a session into ``(temp_root, session_name)``, or None."""
    parts = os.path.normpath(path).split("/")
    for index in range(len(parts) - 1, 0, -1):
        if parts[index].startswith("session_") and parts[index] != "session_latest":
            return "/".join(parts[:index]) or "/", parts[index]
    return None


SESSION_FLAGS = {"raylet": (("--session_dir",),), "gcs_server": (("--log_dir",),),
                 "log_monitor": (("--session-dir", "--session_dir"), ("--logs-dir", "--logs_dir"))}
"""The flags, per process kind, whose value lies in the live session."""


def named_sessions(proc: RayProcess) -> list:
    """The ``(temp root, session name)`` pairs a Ray process's command line names."""
    found = []
    for names in SESSION_FLAGS[proc.kind]:
        hint = flag_value(proc.cmdline, *names)
        session = session_of(hint) if hint and os.path.isabs(hint) else None
        if session:
            found.append(session)
    return found


def named_roots(proc: RayProcess) -> list:
    """The temp roots a Ray process's command line names: its ``--temp_dir`` and its sessions' roots."""
    roots = []
    temp = flag_value(proc.cmdline, "--temp_dir") if proc.kind == "raylet" else None
    if temp and os.path.isabs(temp):
        roots.append(os.path.normpath(temp))
    roots += [root for root, _name in named_sessions(proc)]
    return list(dict.fromkeys(roots))


def layout_from_processes(processes: Iterable[RayProcess]) -> RayLayout:
    """Temp roots, live sessions and node role as (trusted) Ray processes state them."""
    layout = RayLayout()
    roots = []
    for proc in sorted(processes, key=lambda p: (KIND_ORDER.index(p.kind), p.pid)):  # a raylet names first
        layout.processes.append({"pid": proc.pid, "kind": proc.kind})
        if proc.kind == "raylet":
            if "--head" in proc.cmdline or flag_value(proc.cmdline, "--head") == "true":
                layout.node_role = "head"
            elif layout.node_role == "none":
                layout.node_role = "worker"
        elif proc.kind == "gcs_server":
            layout.node_role = "head"
        roots += named_roots(proc)
        for found in named_sessions(proc):
            layout.live_sessions.setdefault(found, "process:%s" % proc.kind)
    layout.temp_roots = list(dict.fromkeys(roots))
    return layout


def default_temp_root(tmp_dir: str, environ: Optional[dict] = None) -> str:
    """Ray's temp root without a running Ray: ``$RAY_TMPDIR``, ``$TMPDIR`` or ``tmp_dir``, plus ``/ray``."""
    environ = os.environ if environ is None else environ
    base = environ.get("RAY_TMPDIR") or environ.get("TMPDIR") or tmp_dir
    return os.path.join(os.path.normpath(base), "ray")


def unix_socket_paths(target: Target) -> list:
    """Paths of the unix sockets bound in the target's network namespace."""
    paths = []
    try:
        with open(os.path.join(target.proc_dir(), "net", "unix"), "rb") as handle:
            next(handle, None)
            for line in handle:
                fields = line.split(None, 7)
                if len(fields) == 8 and fields[7].startswith(b"/"):
                    paths.append(os.fsdecode(fields[7].rstrip(b"\n")))
    except OSError:
        pass
    return paths


def held_links(pid: int) -> list:
    """The ``/proc`` links to a process's working directory and open files (none if it is gone)."""
    base = "/proc/%d" % pid
    try:
        return [base + "/cwd"] + [base + "/fd/" + fd for fd in os.listdir(base + "/fd")]
    except OSError:
        return []


def open_paths(pids: Iterable[int]) -> list:
    """Absolute paths of files, directories and working dirs held open by processes.

    The kernel prints them as the process sees them, so for a container's
    processes they are paths inside the container.
    """
    paths = []
    for pid in pids:
        for link in held_links(pid):
            try:
                path = os.readlink(link)
            except OSError:
                continue
            if path.startswith("/"):
                paths.append(path)
    return paths


def pids_in_namespace(psutil, mnt_ns: Optional[str]) -> list:
    """The pids of every process in a mount namespace (every pid when ``mnt_ns`` is None)."""
    pids = psutil.pids()
    if mnt_ns is None:
        return pids
    return [pid for pid in pids if mount_namespace(pid) == mnt_ns]


def mark_live_sessions(layout: RayLayout, sessions: Iterable[tuple], target: Target, psutil) -> None:
    """Add sessions (``(root, name)`` pairs) that hold bound sockets or open files to ``layout.live_sessions``."""
    candidates = {}
    for root, name in sessions:
        if (root, name) not in layout.live_sessions:
            candidates[os.path.join(root, name) + "/"] = (root, name)
    if not candidates:
        return
    for reason, paths in (("socket", lambda: unix_socket_paths(target)),
                          ("open_file", lambda: open_paths(pids_in_namespace(psutil, target.mnt_ns)))):
        for path in paths():
            for prefix, session in list(candidates.items()):
                if path.startswith(prefix) or path + "/" == prefix:
                    layout.live_sessions[session] = reason
                    del candidates[prefix]
        if not candidates:
            return


def latest_session(tree: Tree, temp_root: str) -> Optional[str]:
    """The session that ``temp_root``'s ``session_latest`` link names, if it names one directly in ``temp_root``.

    The link is read inside the tree, never followed.
    """
    try:
        target = os.path.normpath(tree.readlink(os.path.join(temp_root, "session_latest")))
    except OSError:
        return None
    parent, name = os.path.split(target)
    if parent and parent != os.path.normpath(temp_root):
        return None
    return name if session_started(name) else None


# --- Ray's version and its log rotation, as the running node shows them -----------------------------------------

VERSION_FILE_MAX = 64 * 1024
"""Bytes read at most from a version file (Ray's ``_version.py`` is ~200 bytes; ``Version:`` opens a METADATA)."""
ENVIRON_MAX = 1024 * 1024
"""Bytes read at most from a process's ``/proc/<pid>/environ``."""
_VERSION_PY = re.compile(rb"""^version\s*=\s*["']([0-9]+\.[0-9]+[0-9A-Za-z.+-]{0,40})["']\s*$""", re.M)
_METADATA_VERSION = re.compile(rb"^Version:[ \t]*([0-9]+\.[0-9]+[0-9A-Za-z.+-]{0,40})[ \t]*\r?$", re.M)
_VERSION_NUMBERS = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")

ROTATION_ENV = ("RAY_ROTATION_MAX_BYTES", "RAY_ROTATION_BACKUP_COUNT")
OUTPUT_ROTATED_SINCE = (2, 53)
"""The first Ray known to rotate ``.out``/``.err`` itself (seen on 2.53 and 2.60; 2.40 does not; the versions in
between were not checked and are taken as 2.40, which only costs a redundant logrotate of their ``.out`` files)."""
LOG_KINDS = {
    "component_logs": ("*.log of Ray's Python components (dashboard, monitor, log_monitor, agents)",),
    "core_logs": ("python-core-*.log",),
    "process_output": ("*.out", "*.err"),
    "client_server_output": ("ray_client_server*.out", "ray_client_server*.err"),
    "job_driver_logs": ("job-driver-*.log",),
}
"""The kinds of files in a session's ``logs/`` as Ray rotates them (or not), and their names.

``component_logs``: Python's RotatingFileHandler at ``--logging-rotate-*`` (``X.log.1``), every version.
``core_logs``: C++ (spdlog) at ``RAY_ROTATION_*`` (2.40: ``…_PID.1.log``, 2.53+: ``…_PID.log.1``); without
``RAY_ROTATION_MAX_BYTES`` 2.53+ never rotates them.  ``process_output``: stdout/stderr of raylet, gcs_server,
workers and agents, rotated by Ray 2.53+ only with ``RAY_ROTATION_MAX_BYTES`` set (``.out.1``), never by 2.40.
``client_server_output`` (Ray Client's server) and ``job_driver_logs`` (Ray Jobs' drivers) are plain redirections
that no Ray version rotates."""
LOGROTATE_KINDS = ("process_output", "client_server_output", "job_driver_logs")
"""What an external logrotate (``copytruncate``) may take over when Ray leaves it unrotated: names that never match
Ray's own backups (``*.out`` misses ``.out.1``; ``job-driver-*.log`` is never rotated by Ray).  ``*.log`` would also
match 2.40's ``…_PID.1.log`` backups, so Ray's own ``.log`` files are never given to logrotate."""


def version_numbers(version: Optional[str]) -> Optional[tuple]:
    """``(2, 53, 0)`` from ``"2.53.0"`` (or ``"2.60.0rc1"``), None when it is not a version."""
    match = _VERSION_NUMBERS.match(version or "")
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def rotates_output(version: Optional[str]) -> bool:
    """Whether this Ray version rotates ``.out``/``.err`` itself (given ``RAY_ROTATION_MAX_BYTES``); False if unknown."""
    numbers = version_numbers(version)
    return numbers is not None and numbers[:2] >= OUTPUT_ROTATED_SINCE


def logrotate_globs(version: Optional[str], ray_rotation_set: bool = True) -> list:
    """The names in a session's ``logs/`` that Ray leaves unrotated, for logrotate: never one of Ray's backups.

    ``ray_rotation_set``: Ray starts with ``RAY_ROTATION_MAX_BYTES`` above 0.  Without it, or on a version
    before 2.53 (or unknown), that is every ``.out`` and ``.err``; else only Ray Client's server output.  Ray Jobs'
    driver logs always.
    """
    kinds = ["client_server_output", "job_driver_logs"]
    if not (ray_rotation_set and rotates_output(version)):
        kinds[0] = "process_output"
    return [name for kind in kinds for name in LOG_KINDS[kind]]


def ray_package_dir(exe: str) -> Optional[str]:
    """``…/site-packages/ray`` from the path of Ray's raylet or gcs_server program, or None."""
    for suffix in RAY_EXECUTABLES.values():
        if exe.endswith(suffix) and len(exe) > len(suffix):
            return exe[:-len(suffix)] + "/ray"
    return None


def read_trusted(tree: Tree, path: str, trusted: frozenset, limit: int = VERSION_FILE_MAX) -> bytes:
    """At most ``limit`` bytes of a regular file inside ``tree`` that only ``trusted`` users can have written.

    Every directory on the way is checked as ``open_beneath`` does with trusted uids, the file is opened
    without following a link and checked through its fd (owner, not group- or world-writable).  ``OSError``
    (``UnsafePath`` for a path others control) when it cannot be read so.
    """
    parent, name = os.path.split(os.path.normpath(path))
    dirfd = tree.open_dir(parent, trusted_uids=trusted)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dirfd)
    finally:
        os.close(dirfd)
    try:
        reason = _trusted_file(tree, path, os.fstat(fd), frozenset(trusted) | {0})
        if reason:
            raise UnsafePath(errno.EPERM, reason)
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def installed_version(tree: Tree, exe: str, trusted: frozenset) -> tuple:
    """``(version, None)`` of the Ray package a raylet runs from, or ``(None, why not)``.

    ``…/site-packages/ray/_version.py`` (``version = "2.40.0"``), else the ``Version:`` of the one
    ``ray-*.dist-info/METADATA`` beside the package; both read only through ``read_trusted``.
    """
    package = ray_package_dir(exe)
    if package is None:
        return None, "%s is not in a Ray package" % exe
    try:
        match = _VERSION_PY.search(read_trusted(tree, package + "/_version.py", trusted))
        if match:
            return match.group(1).decode("ascii"), None
        why = "%s/_version.py names no version" % package
    except OSError as exc:
        why = "%s/_version.py: %s" % (package, exc.strerror or exc)
    site = os.path.dirname(package)
    try:
        dirfd = tree.open_dir(site, trusted_uids=trusted)
        try:
            names = sorted(name for name in os.listdir(dirfd) if name.startswith("ray-") and name.endswith(".dist-info"))
        finally:
            os.close(dirfd)
    except OSError as exc:
        return None, "%s; %s: %s" % (why, site, exc.strerror or exc)
    if len(names) != 1:
        return None, "%s; %d ray-*.dist-info in %s" % (why, len(names), site)
    try:
        match = _METADATA_VERSION.search(read_trusted(tree, "%s/%s/METADATA" % (site, names[0]), trusted))
    except OSError as exc:
        return None, "%s; %s/%s/METADATA: %s" % (why, site, names[0], exc.strerror or exc)
    if not match:
        return None, "%s; %s/%s/METADATA names no version" % (why, site, names[0])
    return match.group(1).decode("ascii"), None


def running_version(processes: Iterable[RayProcess], tree: Tree, ray_uids: frozenset) -> tuple:
    """``(version, why not)`` of the Ray whose trusted raylet (else gcs_server) runs on the target; (None, None) if none."""
    trusted = frozenset(ray_uids) | {0}
    why = None
    for proc in sorted(processes, key=lambda p: (KIND_ORDER.index(p.kind), p.pid)):
        if proc.kind == "log_monitor":
            continue
        try:
            exe = os.readlink("/proc/%d/exe" % proc.pid)
        except OSError as exc:
            why = "cannot read the program of %s %d: %s" % (proc.kind, proc.pid, exc.strerror or exc)
            continue
        version, why = installed_version(tree, exe, trusted)
        if version:
            return version, None
    return None, why


def process_environ(pid: int, names: Iterable[str]) -> Optional[dict]:
    """The variables ``names`` of a process's environment as it started (``/proc/<pid>/environ``); None if unreadable.

    Only those names are kept: the rest of the environment (secrets, often) is never returned.
    """
    wanted = set(names)
    try:
        with open("/proc/%d/environ" % pid, "rb") as handle:
            data = handle.read(ENVIRON_MAX)
    except OSError:
        return None
    found = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        name = key.decode("ascii", "replace")
        if sep and name in wanted:
            found[name] = value.decode("utf-8", "replace")
    return found


def _whole(text: Optional[str]) -> Optional[int]:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def effective_rotation(processes: Iterable[RayProcess]) -> Optional[dict]:
    """The rotation settings the running Ray took, from its trusted processes; None when no trusted Ray runs.

    ``max_bytes``/``backup_count``: ``--logging-rotate-*`` of its log_monitor (what ``ray start`` made of
    ``RAY_ROTATION_*`` for every Python component); ``environment``: ``RAY_ROTATION_*`` in its raylet's
    environment, which Ray's C++ side (raylet, gcs_server, workers) reads itself, or None when unreadable.
    """
    processes = sorted(processes, key=lambda p: p.pid)
    if not processes:
        return None
    found = {"max_bytes": None, "backup_count": None, "environment": None}
    for proc in processes:
        if proc.kind == "log_monitor":
            max_bytes = _whole(flag_value(proc.cmdline, "--logging-rotate-bytes"))
            if max_bytes is not None:
                found["max_bytes"] = max_bytes
                found["backup_count"] = _whole(flag_value(proc.cmdline, "--logging-rotate-backup-count"))
                break
    for proc in processes:
        if proc.kind == "raylet":
            found["environment"] = process_environ(proc.pid, ROTATION_ENV)
            if found["environment"] is not None:
                break
    return found


def _settings_text(max_bytes: Optional[int], backup_count: Optional[int]) -> str:
    return "%s bytes and %s backup(s)" % ("?" if max_bytes is None else max_bytes,
                                          "?" if backup_count is None else backup_count)


def rotation_report(version: Optional[str], effective: Optional[dict], max_bytes: Optional[int] = None,
                    backup_count: Optional[int] = None, where: str = "host",
                    version_error: Optional[str] = None) -> Optional[dict]:
    """What Ray rotates on a target and whether the configured ``RAY_ROTATION_*`` took effect; None without Ray.

    ``max_bytes``/``backup_count`` are the configured values (as ``ray_log_config`` wrote them), or None
    when not given: then ``in_effect`` says whether Ray started with ``RAY_ROTATION_MAX_BYTES`` above 0 at all.
    ``in_effect`` is None when it cannot be told (the raylet's environment is unreadable).
    """
    if effective is None:
        return None
    env = effective.get("environment")
    env_bytes = _whole(env.get(ROTATION_ENV[0])) if env is not None else None
    env_count = _whole(env.get(ROTATION_ENV[1])) if env is not None else None
    cpp_set = None if env is None else bool(env_bytes)  # unset, 0 or not a number: Ray's C++ side does not rotate
    assume_set = cpp_set is not False
    newer = rotates_output(version)
    rotated = {
        "component_logs": effective.get("max_bytes") != 0,
        "core_logs": assume_set or not newer,  # before 2.53 a built-in default applied without the variable
        "process_output": newer and assume_set,
        "client_server_output": False,
        "job_driver_logs": False,
    }
    report = {
        "max_bytes": effective.get("max_bytes"),
        "backup_count": effective.get("backup_count"),
        "environment": env,
        "ray_rotates": [kind for kind in LOG_KINDS if rotated[kind]],
        "ray_leaves": [kind for kind in LOG_KINDS if not rotated[kind]],
        "logrotate_globs": logrotate_globs(version, assume_set),
        "configured_max_bytes": max_bytes,
        "configured_backup_count": backup_count,
        "in_effect": None,
        "message": None,
    }
    ray = "Ray %s on %s" % (version or "(version unknown)", where)
    running = "%s runs with log rotation at %s (--logging-rotate-* of its log_monitor)" % (
        ray, _settings_text(report["max_bytes"], report["backup_count"]))
    restart = ("Ray reads RAY_ROTATION_* only when it starts: restart Ray (ray stop, then ray start with the "
               "environment file loaded) after changing the file")
    problems = []
    if max_bytes is not None or backup_count is not None:
        for name, want, flag, from_env in (("RAY_ROTATION_MAX_BYTES", max_bytes, report["max_bytes"], env_bytes),
                                           ("RAY_ROTATION_BACKUP_COUNT", backup_count, report["backup_count"],
                                            env_count)):
            if want is None:
                continue
            if flag != want:
                unset = env is not None and name not in env
                problems.append("%s is %s, not the configured %d" % (
                    name, "unset (Ray's default %s applies)" % flag if unset else "?" if flag is None else flag, want))
            elif env is not None and from_env != want and (name == ROTATION_ENV[0] or from_env is not None):
                problems.append("%s is %s in its raylet's environment, not the configured %d"
                                % (name, env.get(name, "unset"), want))
        report["in_effect"] = not problems if (env is not None or problems) else None
        if problems:
            report["message"] = "%s; %s. %s." % (running, "; ".join(problems), restart)
    else:
        report["in_effect"] = None if cpp_set is None else cpp_set and report["max_bytes"] != 0
    if report["message"] is None and cpp_set is False and max_bytes is None:
        report["in_effect"] = False
        leaves = "python-core-*.log" + (", *.out and *.err" if newer else "")
        report["message"] = ("%s was started without RAY_ROTATION_MAX_BYTES (above 0) in its environment, so its C++ "
                             "processes do not rotate %s by Ray's settings%s; set it in the environment file Ray "
                             "starts with (rayops.disk.ray_log_config) and restart Ray"
                             % (ray, leaves, "" if newer else " (and this version never rotates *.out and *.err)"))
    if version is None and version_error:
        note = "Ray's version could not be read (%s): what Ray rotates is given as for Ray 2.40" % version_error
        report["message"] = "%s; %s" % (report["message"], note) if report["message"] else note
    return report


def discover(target: Target, psutil, tmp_dir: str, ray_temp_dir: Optional[str] = None,
             environ: Optional[dict] = None, ray_uids: frozenset = frozenset()) -> RayLayout:
    """Ray's temp roots, live sessions and node role on a target, from its trusted Ray processes.

    An explicit ``ray_temp_dir`` replaces the discovered roots; without one
    and without trusted running Ray, the default root is used.  Processes
    that claim to be Ray's but are not trusted are listed with the reason.
    """
    trusted, untrusted = [], []
    for proc in ray_processes(psutil, target.mnt_ns):
        reason = trust_process(proc, target.tree, ray_uids)
        if reason is None:
            trusted.append(proc)
        else:
            untrusted.append({"pid": proc.pid, "kind": proc.kind, "reason": reason})
    layout = layout_from_processes(trusted)
    layout.untrusted = untrusted
    if ray_temp_dir:
        layout.temp_roots = [os.path.normpath(ray_temp_dir)]
    elif not layout.temp_roots:
        layout.temp_roots = [default_temp_root(tmp_dir, environ)]
    measured = [proc for proc in trusted if set(named_roots(proc)) & set(layout.temp_roots)]
    if measured or not ray_temp_dir:  # the Ray of the roots measured, when another Ray runs here too
        layout.ray_version, layout.version_error = running_version(measured or trusted, target.tree, ray_uids)
        layout.rotation = effective_rotation(measured or trusted)
    add_spill_roots(layout, trusted, target.tree)
    return layout


# --- Spill directories ------------------------------------------------------------------------------------------

SPILL_DIR_RE = re.compile(r"^ray_spilled_objects_([0-9a-f]{56})$")
"""``ray_spilled_objects_<node id>``: where one Ray node spills objects (a node id is 28 bytes, in hex)."""
NODE_ID_RE = re.compile(r"^[0-9a-f]{56}$")
_PORT_FILE_NODE = re.compile(r"_port_([0-9a-f]{56})$")
_DEBUG_STATE_NODE = re.compile(rb"^Node ID: ([0-9a-f]{56})$", re.M)
DEBUG_STATE_MAX = 4096
"""Bytes read at most from the top of a session's ``logs/debug_state.txt``."""
SHARED_FILESYSTEMS = frozenset(("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs",
                                "beegfs", "9p", "afs", "ocfs2", "gfs2", "virtiofs", "orangefs", "pvfs2", "davfs"))
"""Filesystems other machines may mount too: a node id that runs nowhere here may run there."""
LOCAL_FUSE = frozenset(("fuse.fuse-overlayfs", "fuse.squashfuse"))


@dataclass(frozen=True)
class SpillRoot:
    """A directory Ray spills into (its nodes make ``ray_spilled_objects_<node id>`` there), and who named it.

    ``trusted_uids``: the users who alone may control the path (checked whenever it is opened), as for a temp
    root a process names: root and the process's user.
    """

    path: str
    source: str
    pid: Optional[int] = None
    trusted_uids: Optional[frozenset] = None


def decode_config_list(value: Optional[str]) -> dict:
    """gcs_server's ``--config_list``: Ray's system config, JSON in base64; ``{}`` when absent or malformed."""
    if not value:
        return {}
    try:
        data = json.loads(base64.b64decode(value, validate=True).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):  # binascii.Error and JSONDecodeError are ValueErrors
        return {}
    return data if isinstance(data, dict) else {}


def spill_paths(config: dict) -> list:
    """The directories of a system config's ``object_spilling_config`` of type ``filesystem``, in order.

    The setting is itself a JSON string (an object is taken too); its ``params.directory_path`` is a path or a
    list of paths.  ``object_spilling_directory`` (a system config key since 2.53) adds one more.
    """
    found: list = []
    spilling = config.get("object_spilling_config")
    if isinstance(spilling, str):
        try:
            spilling = json.loads(spilling) if spilling.strip() else None
        except ValueError:
            spilling = None
    if isinstance(spilling, dict) and spilling.get("type") == "filesystem" and isinstance(spilling.get("params"), dict):
        paths = spilling["params"].get("directory_path")
        found += [paths] if isinstance(paths, str) else [p for p in paths if isinstance(p, str)] \
            if isinstance(paths, list) else []
    directory = config.get("object_spilling_directory")
    if isinstance(directory, str):
        found.append(directory)
    return found


def named_spill_roots(proc: RayProcess) -> list:
    """The spill directories a Ray process's command line names: absolute, normalised, never ``/``.

    gcs_server's ``--config_list`` holds the cluster's ``object_spilling_config`` (2.40, 2.53, 2.60; by
    default the session dir).  A raylet's ``--fallback_directory`` (2.53+) is the first spill directory its node
    was started with, else its session dir (or the temp dir when spilling does not go to a filesystem).
    """
    if proc.kind == "gcs_server":
        paths = spill_paths(decode_config_list(flag_value(proc.cmdline, "--config_list")))
    elif proc.kind == "raylet":
        paths = [flag_value(proc.cmdline, "--fallback_directory") or ""]
    else:
        return []
    roots = [os.path.normpath(path) for path in paths if os.path.isabs(path) and os.path.normpath(path).strip("/")]
    return list(dict.fromkeys(roots))


def add_spill_roots(layout: RayLayout, processes: Iterable[RayProcess], tree: Tree) -> None:
    """The spill roots and live nodes that trusted Ray processes name, into ``layout``.

    A spill directory is used only when, like a temp root a process names, it is a path only root and that
    process's user control (``open_beneath`` with trusted uids); one that is not goes to ``spill_refused`` with
    the reason.  One that does not exist yet is kept (nothing was spilled there), and so is one inside a session
    (Ray's default, the session dir), unchecked: it is never opened as a spill directory (``_usage.SpillDirs``).
    """
    seen = set()
    for proc in sorted(processes, key=lambda p: (KIND_ORDER.index(p.kind), p.pid)):
        if proc.kind == "raylet":
            node = flag_value(proc.cmdline, "--node_id") or ""
            sessions = named_sessions(proc)
            if NODE_ID_RE.match(node) and sessions:
                layout.nodes.setdefault(node, sessions[0])
        for path in named_spill_roots(proc):
            if path in seen:
                continue
            seen.add(path)
            uids = frozenset((0, proc.uid))
            source = "process:%s" % proc.kind
            in_session = session_of(path)
            if in_session and session_started(in_session[1]):  # Ray's default: the session's layout counts it
                layout.spill_roots.append(SpillRoot(path, source, proc.pid, uids))
                continue
            try:
                os.close(tree.open_dir(path, trusted_uids=uids))
            except FileNotFoundError:
                pass
            except OSError as exc:
                layout.spill_refused.append({"path": path, "source": source, "pid": proc.pid,
                                             "reason": exc.strerror or str(exc)})
                continue
            layout.spill_roots.append(SpillRoot(path, source, proc.pid, uids))


def live_node_ids(psutil) -> dict:
    """``{node id: pid}`` of every process on this machine that says it is a raylet, in any namespace, trusted or not.

    Only what is kept depends on it (a node counts as running when anything claims to run it), so a process
    nobody trusts may keep a spill directory, never lose one.
    """
    found: dict = {}
    for proc, kind, _title, cmdline in iter_ray_processes(psutil, None):
        if kind == "raylet":
            node = flag_value(cmdline, "--node_id")
            if node:
                found.setdefault(node, proc.pid)
    return found


def _read_top(dir_fd: int, name: str, limit: int) -> bytes:
    """The first ``limit`` bytes of a regular file in an open directory, never through a link or from a fifo."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, limit)
    finally:
        os.close(fd)


def session_node_ids(root_fd: int, name: str) -> set:
    """Node ids a session's own files name (the session ``name`` in the temp root open as ``root_fd``).

    2.60 writes ``<what>_port_<node id>`` files in the session; every version's raylet writes
    ``logs/debug_state.txt`` at once, starting ``NodeManager:`` / ``Node ID: <node id>``.  Everything is opened
    relative to its parent without following a link.  Ray's session dirs are world-writable: what they say only
    tells which session a node belonged to, never whether it runs.
    """
    found: set = set()
    try:
        session_fd = open_dir(name, dir_fd=root_fd)
    except OSError:
        return found
    try:
        for entry in os.listdir(session_fd):
            match = _PORT_FILE_NODE.search(entry)
            if match:
                found.add(match.group(1))
        logs_fd = open_dir("logs", dir_fd=session_fd)
        try:
            found.update(node.decode() for node in
                         _DEBUG_STATE_NODE.findall(_read_top(logs_fd, "debug_state.txt", DEBUG_STATE_MAX)))
        finally:
            os.close(logs_fd)
    except OSError:
        pass
    finally:
        os.close(session_fd)
    return found


def nodes_of_sessions(tree: Tree, temp_roots: Iterable[str]) -> dict:
    """``{node id: (temp root, session name)}`` from the files of every session in ``temp_roots``.

    A node id that two sessions claim belongs to neither (None).
    """
    found: dict = {}
    for root in temp_roots:
        try:
            root_fd = tree.open_dir(root)
        except OSError:
            continue
        try:
            names = sorted(name for name in os.listdir(root_fd) if session_started(name))
            for name in names:
                for node in session_node_ids(root_fd, name):
                    found[node] = None if node in found and found[node] != (root, name) else (root, name)
        except OSError:
            continue
        finally:
            os.close(root_fd)
    return found


def filesystem_type(fd: int, mountinfo: str) -> Optional[str]:
    """The type (``ext4``, ``nfs4``...) of the filesystem of an open directory, from the mount table; None if unknown."""
    mnt = mount_id(fd)
    if mnt is None:
        return None
    try:
        with open(mountinfo, "rb") as table:
            for line in table:
                fields = line.split()
                if fields and fields[0] == b"%d" % mnt and b"-" in fields[6:]:
                    index = fields.index(b"-", 6)
                    return fields[index + 1].decode("utf-8", "replace") if index + 1 < len(fields) else None
    except (OSError, ValueError):
        return None
    return None


def shared_filesystem(fs_type: Optional[str]) -> bool:
    """Whether other machines may mount this filesystem too (network, cluster, FUSE), or its type is unknown."""
    if fs_type is None:
        return True
    return fs_type in SHARED_FILESYSTEMS or (fs_type.startswith("fuse") and fs_type not in LOCAL_FUSE)
