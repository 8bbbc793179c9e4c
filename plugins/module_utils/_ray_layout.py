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

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

SESSION_RE = re.compile(r"^session_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})_(\d+)_(\d+)$")
"""``session_<YYYY-MM-DD_HH-MM-SS>_<microseconds>_<pid>``, as Ray names a session dir."""


KIND_ORDER = ("raylet", "gcs_server", "log_monitor")


@dataclass(frozen=True)
class RayProcess:
    """A Ray system process: its kind (raylet, gcs_server, log_monitor) and command line."""

    pid: int
    kind: str
    cmdline: tuple


@dataclass(frozen=True)
class Target:
    """A host or a container: where its root is from here, and its mount namespace."""

    name: str
    prefix: str = "/"
    mnt_ns: Optional[str] = None
    init_pid: Optional[int] = None

    def host_path(self, path: str) -> str:
        """The path, inside the target, as this process reaches it."""
        if self.prefix == "/":
            return path
        return self.prefix.rstrip("/") + "/" + path.lstrip("/")

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


def ray_processes(psutil, mnt_ns: Optional[str]) -> list:
    """Running Ray system processes (raylet, gcs_server, log_monitor) in a mount namespace."""
    return [RayProcess(proc.pid, kind, tuple(cmdline))
            for proc, kind, _title, cmdline in iter_ray_processes(psutil, mnt_ns) if kind is not None]


def session_of(path: str) -> Optional[tuple]:
    """Split a path inside a session into ``(temp_root, session_name)``, or None."""
    parts = os.path.normpath(path).split("/")
    for index in range(len(parts) - 1, 0, -1):
        if parts[index].startswith("session_") and parts[index] != "session_latest":
            return "/".join(parts[:index]) or "/", parts[index]
    return None


def layout_from_processes(processes: Iterable[RayProcess]) -> RayLayout:
    """Temp roots, live sessions and node role as Ray's processes state them."""
    layout = RayLayout()
    roots = []
    for proc in sorted(processes, key=lambda p: (KIND_ORDER.index(p.kind), p.pid)):  # a raylet names first
        layout.processes.append({"pid": proc.pid, "kind": proc.kind})
        hints = []
        if proc.kind == "raylet":
            hints.append(flag_value(proc.cmdline, "--session_dir"))
            temp = flag_value(proc.cmdline, "--temp_dir")
            if temp:
                roots.append(os.path.normpath(temp))
            if "--head" in proc.cmdline or flag_value(proc.cmdline, "--head") == "true":
                layout.node_role = "head"
            elif layout.node_role == "none":
                layout.node_role = "worker"
        elif proc.kind == "gcs_server":
            layout.node_role = "head"
            hints.append(flag_value(proc.cmdline, "--log_dir"))
        else:
            hints.append(flag_value(proc.cmdline, "--session-dir", "--session_dir"))
            hints.append(flag_value(proc.cmdline, "--logs-dir", "--logs_dir"))
        for hint in hints:
            found = session_of(hint) if hint else None
            if found:
                roots.append(found[0])
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


def latest_session(link_on_host: str, temp_root: str) -> Optional[str]:
    """The session that the ``session_latest`` link names, if it names one directly in ``temp_root``.

    The link is read, never followed.
    """
    try:
        target = os.path.normpath(os.readlink(link_on_host))
    except OSError:
        return None
    parent, name = os.path.split(target)
    if parent and parent != os.path.normpath(temp_root):
        return None
    return name if SESSION_RE.match(name) else None


def discover(target: Target, psutil, tmp_dir: str, ray_temp_dir: Optional[str] = None,
             environ: Optional[dict] = None) -> RayLayout:
    """Ray's temp roots, live sessions and node role on a target.

    An explicit ``ray_temp_dir`` replaces the discovered roots; without one
    and without running Ray, the default root is used.
    """
    layout = layout_from_processes(ray_processes(psutil, target.mnt_ns))
    if ray_temp_dir:
        layout.temp_roots = [os.path.normpath(ray_temp_dir)]
    elif not layout.temp_roots:
        layout.temp_roots = [default_temp_root(tmp_dir, environ)]
    return layout
