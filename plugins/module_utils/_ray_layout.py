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

import datetime
import os
import pwd
import re
import stat
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from ansible_collections.rayops.disk.plugins.module_utils._fs import Tree

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
    trusted: list = field(default_factory=list)
    """The trusted ``RayProcess``es."""
    ray_version: Optional[str] = None
    version_error: Optional[str] = None
    rotation: Optional[dict] = None
    spill_roots: list = field(default_factory=list)
    """``SpillRoot``s that trusted processes name, each a path only root and their user control."""
    spill_refused: list = field(default_factory=list)
    """Spill directories trusted processes name that are not safe to use (path, source, pid, reason)."""
    nodes: dict = field(default_factory=dict)
    """``{node id: (temp root, session name)}`` of the trusted raylets running here."""
    refused_roots: list = field(default_factory=list)
    """Ray's default temp root when it is not safe to treat as Ray's (``{"path", "reason"}``): not a temp root."""


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


def ray_candidates(psutil) -> list:
    """``(process, kind, title, cmdline)`` of every live process that says it is Ray's, from one look at all.

    ``kind`` is raylet, gcs_server or log_monitor, or None for a ``ray::`` worker or agent; zombies never count.
    Nothing here is trusted yet (see ``trust_process``).
    """
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        name = proc.info.get("name") or ""
        cmdline = proc.info.get("cmdline") or []
        kind = process_kind(name, cmdline)
        title = process_title(name, cmdline)
        if kind is not None or title.startswith("ray::"):
            found.append((proc, kind, title, cmdline))
    return found


def iter_ray_processes(psutil, mnt_ns: Optional[str], candidates: Optional[list] = None):
    """Yield ``(process, kind, title, cmdline)`` for Ray's processes in a mount namespace (any when None).

    ``candidates`` (``ray_candidates``, default: looked up now) lets several targets share one look at every
    process.  A process whose namespace cannot be read (another user's, when not root) counts only for this
    process's own namespace, the host.
    """
    own_ns = mount_namespace("self")
    for proc, kind, title, cmdline in ray_candidates(psutil) if candidates is None else candidates:
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


def ray_processes(psutil, mnt_ns: Optional[str], candidates: Optional[list] = None) -> list:
    """Processes in a mount namespace that say they are Ray system processes (raylet, gcs_server, log_monitor).

    Nothing here is trusted yet: see ``trust_process``.  ``candidates``: as for ``iter_ray_processes``.
    """
    found = []
    for proc, kind, _title, cmdline in iter_ray_processes(psutil, mnt_ns, candidates):
        uids = process_uids(proc) if kind is not None else None
        if uids is not None:
            found.append(RayProcess(proc.pid, kind, tuple(cmdline), uids[1] if uids[0] == uids[1] else -1))
    return found


def trusted_file_problem(tree: Tree, path: str, st: Optional[os.stat_result], trusted: frozenset) -> Optional[str]:
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
        return trusted_file_problem(tree, script, None, trusted)
    try:
        exe = os.readlink("/proc/%d/exe" % proc.pid)
        st = os.stat("/proc/%d/exe" % proc.pid)
    except OSError as exc:
        return "cannot read its executable: %s" % (exc.strerror or exc)
    if not exe.endswith(RAY_EXECUTABLES[proc.kind]):
        return "its executable %s is not Ray's %s (…%s)" % (exe, proc.kind, RAY_EXECUTABLES[proc.kind])
    return trusted_file_problem(tree, exe, st, trusted)


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


def unsafe_root(tree: Tree, root: str, ray_uids: frozenset) -> Optional[str]:
    """Why ``root`` may not be taken as a Ray temp root no process names (as ``trust_process`` checks the roots a
    process names), or None: a directory only root and the Ray users control, or none yet (Ray makes it later)."""
    try:
        os.close(tree.open_dir(root, trusted_uids=frozenset(ray_uids) | {0}))
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return "not a directory"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


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


def held_links(pid: int, denied: bool = False) -> list:
    """The ``/proc`` links to a process's working directory and open files (none if it is gone; with ``denied``,
    ``PermissionError`` when they may not be listed)."""
    base = "/proc/%d" % pid
    try:
        return [base + "/cwd"] + [base + "/fd/" + fd for fd in os.listdir(base + "/fd")]
    except PermissionError:
        if denied:
            raise
        return []
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


def discover(target: Target, psutil, tmp_dir: str, ray_temp_dir: Optional[str] = None,
             environ: Optional[dict] = None, ray_uids: frozenset = frozenset(),
             candidates: Optional[list] = None) -> RayLayout:
    """Ray's temp roots, live sessions and node role on a target, from its trusted Ray processes.

    An explicit ``ray_temp_dir`` replaces the discovered roots; without one
    and without trusted running Ray, the default root is used when it passes
    the checks a root a process names passes (``unsafe_root``).  Processes
    that claim to be Ray's but are not trusted are listed with the reason.
    ``candidates``: as for ``iter_ray_processes``.
    """
    trusted, untrusted = [], []
    for proc in ray_processes(psutil, target.mnt_ns, candidates):
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
        default = default_temp_root(tmp_dir, environ)
        reason = unsafe_root(target.tree, default, ray_uids)
        if reason is None:
            layout.temp_roots = [default]
        else:  # planted by another user (a link, a fifo, their own dir): anyone's, never Ray's
            layout.refused_roots.append({"path": default, "reason": reason})
    layout.trusted = trusted
    return layout
