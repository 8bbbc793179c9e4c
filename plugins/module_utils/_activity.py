# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Whether a host or a container is busy: Ray running user code, or CPU that Ray's idle machinery does not explain.

Every process of a target gets a *role* from its title and command line, the
way Ray 2.40, 2.53 and 2.60 write them (docs/ray-versions.md):

- ``work``: a worker running a task (``ray::<task>``) or an actor method
  (``ray::<Actor>.<method>``);
- ``idle_actor``: an actor between calls (``ray::<Actor>``, told apart from a
  task of the same shape by the ``:actor_name:`` line Ray writes at the top of
  the worker's stderr log when it creates an actor);
- ``idle_worker``: ``ray::IDLE``, ``ray::IDLE_SpillWorker``, ``ray::IDLE_RestoreWorker``;
- ``system``: raylet, gcs_server, the agents, dashboard and its module
  processes, log monitor, autoscaler monitor, client server, and Ray's own
  spill/restore/delete workers (``ray::SPILL_*``, ``ray::RESTORE_*``, ``ray::DELETE_*``);
- ``other``: anything else (a task's own subprocess, a program in a container).

A target is busy when a ``work`` process is seen at the start or the end of
the sample window, or when the CPU of its ``work`` and ``other`` processes
reaches ``cpu_idle_percent`` (percent of one core).  Idle workers, idle
actors and system processes use CPU too (1–2 % each): that CPU is reported
but never makes a node busy.  ``busy_titles`` and ``idle_titles`` (globs) let
a user say what the defaults cannot know, e.g. that a Serve replica is busy
while it lives.

On the host the processes are Ray's own and their descendants, of root and
the Ray users only: any local user can title a process ``ray::train``.  In a
container every process counts (seen from the host, by its mount namespace);
a process there can only keep its own container from being cleaned.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import (
    Target,
    mount_namespace,
    pids_in_namespace,
    process_kind,
    process_title,
    process_uids,
    user_label,
)

ROLES = ("work", "other", "idle_actor", "idle_worker", "system")
COUNTED = ("work", "other")
"""The roles whose CPU can make a target busy."""

IDLE_PREFIX = "ray::IDLE"
RAY_IO_PREFIXES = ("ray::SPILL_", "ray::RESTORE_", "ray::DELETE_")
"""Ray's own workers that spill, restore or delete objects."""
RAY_AGENT_TITLES = frozenset(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))
"""The agents' titles on Ray 2.60 (plain ``python …/agent.py`` on 2.40 and 2.53)."""
DASHBOARD_MODULE_PREFIX = "ray-dashboard-"
"""``ray-dashboard-<Module>-<n> (…)``: the dashboard's module processes (2.53+)."""
RAY_SCRIPTS = ("/ray/_private/log_monitor.py", "/ray/autoscaler/_private/monitor.py",
               "/ray/dashboard/dashboard.py", "/ray/dashboard/agent.py",
               "/ray/_private/runtime_env/agent/main.py", "/ray/_private/workers/default_worker.py",
               "/ray/_private/workers/setup_worker.py")
"""Scripts of Ray's system processes (and of a worker before it titles itself)."""
RAY_MODULES = ("ray.util.client.server",)
"""``python -m`` modules of Ray's system processes."""

ACTOR_MARK = b":actor_name:"
ACTOR_MARK_WINDOW = 65536
"""Ray writes ``:actor_name:<Class>`` at the top of an actor worker's stderr log; read this much of it."""

MAX_LISTED = 20


WORKER_ERR_RE = re.compile(r"^worker-[0-9a-f]+-[0-9a-f]+-([0-9]+)\.err$")
"""``worker-<worker id>-<job id>-<pid>.err``: a worker's stderr log, as Ray names it."""


def _log_head(link: str, owners: frozenset) -> Optional[bytes]:
    """The first 64 KiB of the regular file a ``/proc/<pid>/fd/<n>`` link holds, if one of ``owners`` owns it.

    The file is the one the process has open (its name may have been swapped since: Ray's log dirs are
    0777); never a device or fifo.
    """
    try:
        if not stat.S_ISREG(os.stat(link).st_mode):
            return None
        fd = os.open(link, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in owners:
            return None
        return os.pread(fd, ACTOR_MARK_WINDOW, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def _held_err_log(pid: int) -> Optional[str]:
    """The ``/proc`` link of the ``worker-*-<pid>.err`` file a worker holds open, or None."""
    base = "/proc/%d/fd/" % pid
    try:
        fds = os.listdir(base)
    except OSError:
        return None
    for fd in fds:
        try:
            match = WORKER_ERR_RE.match(os.path.basename(os.readlink(base + fd)))
        except OSError:
            continue
        if match and int(match.group(1)) == pid:
            return base + fd
    return None


def is_actor_worker(pid: int, uid: int) -> bool:
    """Whether a worker runs an actor: the top of its stderr log carries Ray's ``:actor_name:`` mark.

    The log is the worker's fd 2 on 2.40, and on 2.53+ without ``RAY_ROTATION_*``; with rotation, 2.53+
    give the worker a pipe and it writes ``worker-*-<pid>.err`` itself, holding it open.  Only a file the
    worker's user (or root) owns counts.  A log that cannot be read says "not an actor": the worker
    counts as running a task, the safe side.
    """
    owners = frozenset((0, uid))
    head = _log_head("/proc/%d/fd/2" % pid, owners)
    if head is None:
        held = _held_err_log(pid)
        head = _log_head(held, owners) if held else None
    return head is not None and (head.startswith(ACTOR_MARK) or b"\n" + ACTOR_MARK in head)


def is_ray_system(name: str, cmdline: list, title: str) -> bool:
    """Whether a process is one of Ray's own system processes (not a worker waiting or working)."""
    if process_kind(name, cmdline) is not None or title in RAY_AGENT_TITLES:
        return True
    if title.startswith(DASHBOARD_MODULE_PREFIX) or title.startswith(RAY_IO_PREFIXES):
        return True
    head = cmdline[:4]
    if any(arg.endswith(RAY_SCRIPTS) for arg in head):
        return True
    return any(head[i] == "-m" and head[i + 1] in RAY_MODULES for i in range(len(head) - 1))


@dataclass(frozen=True)
class TitleRules:
    """The user's globs over process titles: ``busy`` always means work, ``idle`` never does (busy wins)."""

    busy: tuple = ()
    idle: tuple = ()

    def match(self, title: str) -> Optional[str]:
        """``work`` or ``idle_actor`` when a glob decides the title, else None."""
        if any(fnmatch.fnmatchcase(title, glob) for glob in self.busy):
            return "work"
        if any(fnmatch.fnmatchcase(title, glob) for glob in self.idle):
            return "idle_actor"
        return None


def role_of(name: str, cmdline: list, rules: TitleRules, is_actor: Callable[[], bool]) -> tuple:
    """``(role, title)`` of a process (see the module docstring for the roles); ``is_actor`` is asked only when
    the title could be a task's or an idle actor's."""
    title = process_title(name, cmdline)
    if cmdline and cmdline[0].startswith(DASHBOARD_MODULE_PREFIX):
        title = cmdline[0]
    decided = rules.match(title)
    if decided:
        return decided, title
    if is_ray_system(name, cmdline, title):
        return "system", title
    if title.startswith(IDLE_PREFIX):
        return "idle_worker", title
    if title.startswith("ray::"):
        if "." not in title and is_actor():
            return "idle_actor", title
        return "work", title
    return "other", title


def _ray_process(name: str, cmdline: list) -> bool:
    title = process_title(name, cmdline)
    return title.startswith("ray::") or is_ray_system(name, cmdline, title)


@dataclass
class Seen:
    """One process as a sample saw it."""

    pid: int
    role: str
    title: str
    user: str
    cpu: float = 0.0


class Sample:
    """CPU per process over a window (``start()``, wait, ``finish()``) and the roles seen at both ends.

    ``trusted_uids`` None means every process counts (a container); else only
    processes running as one of them (the host).
    """

    def __init__(self, psutil, target: Target, rules: TitleRules,
                 trusted_uids: Optional[frozenset] = None) -> None:
        self.psutil = psutil
        self.mnt_ns = target.mnt_ns
        self.rules = rules
        self.trusted_uids = trusted_uids
        self.seen: dict = {}
        self.first: dict = {}
        self.last: dict = {}
        self.actors: dict = {}
        self.began = 0.0

    def _processes(self) -> list:
        """The psutil processes to look at (see ``HostSample`` and ``ContainerSample``)."""
        raise NotImplementedError

    def _look(self) -> dict:
        """CPU seconds so far of each process that counts, by ``(pid, create time)``; roles are updated."""
        found = {}
        for proc in self._processes():
            try:
                with proc.oneshot():
                    if proc.status() == self.psutil.STATUS_ZOMBIE:
                        continue
                    key = (proc.pid, proc.create_time())
                    cmdline = proc.cmdline()
                    name = proc.name()
                    times = proc.cpu_times()
            except Exception:  # psutil.Error (gone, denied), without importing psutil here
                continue
            uids = process_uids(proc)
            if uids is None or (self.trusted_uids is not None and not set(uids) <= self.trusted_uids):
                continue
            role, title = role_of(name, cmdline, self.rules, lambda k=key, uid=uids[1]: self._is_actor(k, uid))
            before = self.seen.get(key)
            if before is None or before.role != "work":  # work seen at either end stays work
                self.seen[key] = Seen(proc.pid, role, title, user_label(uids[1]))
            found[key] = times.user + times.system
        return found

    def _is_actor(self, key: tuple, uid: int) -> bool:
        """``is_actor_worker``, read once per process: a worker that runs an actor runs it for life."""
        if key not in self.actors:
            self.actors[key] = is_actor_worker(key[0], uid)
        return self.actors[key]

    def start(self) -> None:
        """Take the first reading."""
        self.began = time.monotonic()
        self.first = self._look()
        self.last = dict(self.first)

    def finish(self) -> dict:
        """Take the second reading and explain it (see ``explain``)."""
        self.last.update(self._look())
        elapsed = max(time.monotonic() - self.began, 1e-6)
        for key, seconds in self.last.items():  # a process born in the window: all its CPU is the window's
            self.seen[key].cpu = 100.0 * (seconds - self.first.get(key, 0.0)) / elapsed
        return explain([self.seen[key] for key in self.last])


class HostSample(Sample):
    """The host: Ray's processes in the host's mount namespace and their descendants, of trusted users."""

    def _processes(self) -> list:
        procs, children = {}, {}
        roots = []
        for proc in self.psutil.process_iter(["name", "cmdline", "ppid"]):
            procs[proc.pid] = proc
            children.setdefault(proc.info.get("ppid"), []).append(proc.pid)
            if _ray_process(proc.info.get("name") or "", proc.info.get("cmdline") or []) and \
                    mount_namespace(proc.pid) in (self.mnt_ns, None):  # not a container's
                roots.append(proc.pid)
        chosen, todo = set(), roots
        while todo:
            pid = todo.pop()
            if pid not in chosen:
                chosen.add(pid)
                todo.extend(children.get(pid, ()))
        return [procs[pid] for pid in sorted(chosen)]


class ContainerSample(Sample):
    """A container: every process in its mount namespace, seen from the host."""

    def __init__(self, psutil, target: Target, rules: TitleRules) -> None:
        super().__init__(psutil, target, rules, None)

    def _processes(self) -> list:
        procs = []
        for pid in pids_in_namespace(self.psutil, self.mnt_ns):
            try:
                procs.append(self.psutil.Process(pid))
            except Exception:  # gone
                continue
        return procs


def _listed(processes: list) -> list:
    return [{"pid": p.pid, "title": p.title, "role": p.role, "user": p.user, "cpu_percent": round(p.cpu, 1)}
            for p in sorted(processes, key=lambda p: (-p.cpu, p.pid))[:MAX_LISTED]]


def explain(processes: list) -> dict:
    """The reading of a target: CPU that counts and CPU that does not, by role, and the work seen."""
    by_role = {role: [p for p in processes if p.role == role] for role in ROLES}
    counted = by_role["work"] + by_role["other"]
    owners: dict = {}
    for proc in by_role["work"]:
        owners.setdefault(proc.title, set()).add(proc.user)
    return {
        "cpu_percent": round(sum(p.cpu for p in counted), 1),
        "idle_cpu_percent": round(sum(p.cpu for role in ROLES[2:] for p in by_role[role]), 1),
        "ray_tasks": sorted(owners),
        "owners": {title: sorted(users) for title, users in owners.items()},
        "counted": _listed([p for p in counted if p.cpu >= 0.05]),
        "idle_actors": sorted({p.title for p in by_role["idle_actor"]}),
        "idle_workers": len(by_role["idle_worker"]),
        "system_processes": len(by_role["system"]),
    }


def verdict(reading: dict, cpu_idle_percent: float) -> dict:
    """``busy``, the reasons for it, and why (``why``: one line for a human), from a reading."""
    reasons = []
    if reading["ray_tasks"]:
        shown = ["%s (as %s)" % (title, ", ".join(reading["owners"][title]))
                 for title in reading["ray_tasks"][:MAX_LISTED]]
        reasons.append("Ray runs user code: %s" % ", ".join(shown))
    if reading["cpu_percent"] >= cpu_idle_percent:
        top = ", ".join("%s %.1f%%" % (p["title"], p["cpu_percent"]) for p in reading["counted"][:3])
        reasons.append("CPU %.1f%% >= %g%% (%s)" % (reading["cpu_percent"], cpu_idle_percent, top))
    idle = "%d idle worker(s), %d idle actor(s), %d Ray system process(es) use %.1f%% CPU, not counted" % (
        reading["idle_workers"], len(reading["idle_actors"]), reading["system_processes"],
        reading["idle_cpu_percent"])
    why = "; ".join(reasons) if reasons else "no task or actor method running; CPU %.1f%% < %g%%" % (
        reading["cpu_percent"], cpu_idle_percent)
    result = {key: value for key, value in reading.items() if key != "owners"}
    result.update({"busy": bool(reasons), "reasons": reasons, "why": "%s; %s" % (why, idle),
                   "ray_tasks": reading["ray_tasks"][:MAX_LISTED]})
    return result


def sample_all(samples: dict, sample_seconds: float, cpu_idle_percent: float) -> dict:
    """Sample every target over one window, side by side; a target that fails gets an ``error``.

    ``samples`` maps a target name to a ``Sample``.
    """
    results: dict = {}
    if not samples:
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(samples))) as pool:
        started = {name: pool.submit(sample.start) for name, sample in samples.items()}
        for name, future in started.items():
            try:
                future.result()
            except Exception as exc:  # a target that vanishes mid-read
                results[name] = {"busy": None, "error": "cannot sample activity: %s" % exc}
        time.sleep(sample_seconds)
        finished = {name: pool.submit(samples[name].finish) for name in samples if name not in results}
        for name, future in finished.items():
            try:
                results[name] = verdict(future.result(), cpu_idle_percent)
            except Exception as exc:
                results[name] = {"busy": None, "error": "cannot sample activity: %s" % exc}
    return results
