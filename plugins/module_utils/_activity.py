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
the sample window or at one of ``PEEKS`` looks at the workers' titles within
it, or when the CPU that counts reaches ``cpu_idle_percent`` (percent of one
core): that of its ``work`` and ``other`` processes, and what a ``ray::IDLE``
worker used beyond what an idle worker uses (``IDLE_WORKER_CPU_PERCENT`` and
one clock tick): a worker titled ``ray::IDLE`` at every look that used more
ran short tasks between them (issue 18).  Otherwise idle workers, idle actors
and system processes use CPU too (0–2 % each): that CPU is reported but never
makes a node busy.  ``busy_titles`` and ``idle_titles`` (globs) let a user
say what the defaults cannot know, e.g. that a Serve replica is busy while it
lives.

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
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._fs import open_regular, read_head
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
IDLE_WORKER_TITLE = "ray::IDLE"
"""A worker that runs tasks (not a spill or restore worker) waiting for one."""
IDLE_WORKER_CPU_PERCENT = 3.0
"""What a ``ray::IDLE`` worker uses, at most, in percent of one core: 0–2 % per 1 s window on 2.40, 2.53 and
2.60 (docs/ray-versions.md).  Its CPU beyond this and one clock tick counts: it ran tasks between the looks."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""The kernel counts a process's CPU time in these ticks per second (``/proc/<pid>/stat``)."""
PEEKS = 3
"""Looks at the titles of the workers idle at the start, evenly spaced within the window (its ends aside)."""
WATCHED = ("idle_worker", "idle_actor")
"""The roles of the processes whose titles are looked at within the window."""
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
    0777); never a device or fifo: ``open_regular`` pins it with ``O_PATH`` and checks it before opening.
    """
    try:
        fd = open_regular(link, follow=True, owners=owners)
    except OSError:  # UnsafePath too: not a regular file, or not the worker's
        return None
    try:
        return read_head(fd, ACTOR_MARK_WINDOW)
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
    between: bool = False
    """Work seen only at a look within the window, not at its ends (a short task, done by the end)."""
    born: bool = False
    """Started within the window: all its CPU is the window's, its start-up too."""


class Sample:
    """CPU per process over a window (``start()``, ``peek()`` a few times, ``finish()``) and the roles seen at both
    ends and, for the workers and actors idle at the start, at each ``peek``.

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
        self.watched: dict = {}
        self.first: dict = {}
        self.last: dict = {}
        self.actors: dict = {}
        self.began = 0.0

    def _processes(self) -> list:
        """The psutil processes to look at (see ``HostSample`` and ``ContainerSample``)."""
        raise NotImplementedError

    def _look(self, watch: bool = False) -> dict:
        """CPU seconds so far of each process that counts, by ``(pid, create time)``; roles are updated, and with
        ``watch`` the idle workers and actors are kept for ``peek``."""
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
            if before is None or before.role != "work" or (before.between and role == "work"):  # work stays work
                self.seen[key] = Seen(proc.pid, role, title, user_label(uids[1]))
            if watch and role in WATCHED:
                self.watched[key] = (proc, name, uids[1])
            found[key] = times.user + times.system
        return found

    def peek(self) -> None:
        """Look at the titles of the workers and actors idle at the start (one ``/proc`` read each): one running
        a task or a method now did not idle, even if it is idle again at the end."""
        for key, (proc, name, uid) in self.watched.items():
            if self.seen[key].role == "work":
                continue
            try:
                cmdline = proc.cmdline()
            except Exception:  # psutil.Error: gone
                continue
            role, title = role_of(name, cmdline, self.rules, lambda k=key, u=uid: self._is_actor(k, u))
            if role == "work":
                self.seen[key] = Seen(key[0], role, title, self.seen[key].user, between=True)

    def _is_actor(self, key: tuple, uid: int) -> bool:
        """``is_actor_worker``, read once per process: a worker that runs an actor runs it for life."""
        if key not in self.actors:
            self.actors[key] = is_actor_worker(key[0], uid)
        return self.actors[key]

    def start(self) -> None:
        """Take the first reading."""
        self.began = time.monotonic()
        self.watched = {}
        self.first = self._look(watch=True)
        self.last = dict(self.first)

    def finish(self) -> dict:
        """Take the second reading and explain it (see ``explain``)."""
        self.last.update(self._look())
        elapsed = max(time.monotonic() - self.began, 1e-6)
        for key, seconds in self.last.items():  # a process born in the window: all its CPU is the window's
            self.seen[key].cpu = 100.0 * (seconds - self.first.get(key, 0.0)) / elapsed
            self.seen[key].born = key not in self.first
        return explain([self.seen[key] for key in self.last], idle_bound(elapsed))


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


def idle_bound(elapsed: float) -> float:
    """What an idle ``ray::IDLE`` worker may use over a window of ``elapsed`` seconds, in percent of one core:
    ``IDLE_WORKER_CPU_PERCENT`` and one clock tick (its CPU time is counted in whole ticks)."""
    return IDLE_WORKER_CPU_PERCENT + 100.0 / (CLOCK_TICKS * max(elapsed, 1e-6))


def _over_idle(workers: list, bound: float) -> dict:
    """The ``ray::IDLE`` workers that used more than ``bound`` each: how many, their CPU, and the excess (counted)."""
    over = [p for p in workers if p.title == IDLE_WORKER_TITLE and p.cpu > bound]
    return {"workers": len(over), "started": sum(p.born for p in over),
            "cpu_percent": round(sum(p.cpu for p in over), 1),
            "excess_percent": round(sum(p.cpu - bound for p in over), 1), "bound_percent": round(bound, 1)}


def _owners(processes: list) -> dict:
    owners: dict = {}
    for proc in processes:
        owners.setdefault(proc.title, set()).add(proc.user)
    return owners


def explain(processes: list, bound: float = IDLE_WORKER_CPU_PERCENT) -> dict:
    """The reading of a target: CPU that counts and CPU that does not, by role, and the work seen.

    ``bound``: what one idle ``ray::IDLE`` worker may use (see ``idle_bound``); the excess counts.
    """
    by_role = {role: [p for p in processes if p.role == role] for role in ROLES}
    counted = by_role["work"] + by_role["other"]
    over = _over_idle(by_role["idle_worker"], bound)
    owners = _owners([p for p in by_role["work"] if not p.between])
    ran = _owners([p for p in by_role["work"] if p.between and p.title not in owners])
    owners.update(ran)
    return {
        "cpu_percent": round(sum(p.cpu for p in counted) + over["excess_percent"], 1),
        "idle_cpu_percent": round(sum(p.cpu for role in ROLES[2:] for p in by_role[role])
                                  - over["excess_percent"], 1),
        "ray_tasks": sorted(set(owners) - set(ran)),
        "ran_tasks": sorted(ran),
        "owners": {title: sorted(users) for title, users in owners.items()},
        "over_idle": over,
        "counted": _listed([p for p in counted if p.cpu >= 0.05]),
        "idle_actors": sorted({p.title for p in by_role["idle_actor"]}),
        "idle_workers": len(by_role["idle_worker"]),
        "system_processes": len(by_role["system"]),
    }


def _titles(reading: dict, titles: list) -> str:
    return ", ".join("%s (as %s)" % (title, ", ".join(reading["owners"][title])) for title in titles[:MAX_LISTED])


def _cpu_reason(reading: dict, cpu_idle_percent: float) -> str:
    """Why the CPU that counts makes the target busy: the busiest processes, and idle workers beyond their bound."""
    parts = ["%s %.1f%%" % (p["title"], p["cpu_percent"]) for p in reading["counted"][:3]]
    over = reading["over_idle"]
    if over["workers"]:
        started = " (%d of them started in the window)" % over["started"] if over["started"] else ""
        parts.append("%d worker(s) titled %s at every look used %.1f%%, %.1f%% more than idle workers use "
                     "(%.1f%% each): they ran tasks between the looks%s" % (
                         over["workers"], IDLE_WORKER_TITLE, over["cpu_percent"], over["excess_percent"],
                         over["bound_percent"], started))
    return "CPU %.1f%% >= %g%% (%s)" % (reading["cpu_percent"], cpu_idle_percent, "; ".join(parts))


def verdict(reading: dict, cpu_idle_percent: float) -> dict:
    """``busy``, the reasons for it, and why (``why``: one line for a human), from a reading."""
    reasons = []
    if reading["ray_tasks"]:
        reasons.append("Ray runs user code: %s" % _titles(reading, reading["ray_tasks"]))
    if reading["ran_tasks"]:
        reasons.append("Ray ran user code within the window (idle again at its ends): %s" % _titles(
            reading, reading["ran_tasks"]))
    if reading["cpu_percent"] >= cpu_idle_percent:
        reasons.append(_cpu_reason(reading, cpu_idle_percent))
    idle = "%d idle worker(s), %d idle actor(s), %d Ray system process(es) use %.1f%% CPU, not counted" % (
        reading["idle_workers"], len(reading["idle_actors"]), reading["system_processes"],
        reading["idle_cpu_percent"])
    why = "; ".join(reasons) if reasons else "no task or actor method running; CPU %.1f%% < %g%%" % (
        reading["cpu_percent"], cpu_idle_percent)
    result = {key: value for key, value in reading.items() if key != "owners"}
    result.update({"busy": bool(reasons), "reasons": reasons, "why": "%s; %s" % (why, idle),
                   "ray_tasks": reading["ray_tasks"][:MAX_LISTED], "ran_tasks": reading["ran_tasks"][:MAX_LISTED]})
    return result


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _wait_peeking(samples: list, seconds: float) -> None:
    """Wait ``seconds``, looking at the workers' titles of every sample ``PEEKS`` times on the way, evenly spaced."""
    began = time.monotonic()
    for step in range(1, PEEKS + 1):
        _sleep_until(began + seconds * step / (PEEKS + 1))
        for sample in samples:
            sample.peek()
    _sleep_until(began + seconds)


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
        _wait_peeking([sample for name, sample in samples.items() if name not in results], sample_seconds)
        finished = {name: pool.submit(samples[name].finish) for name in samples if name not in results}
        for name, future in finished.items():
            try:
                results[name] = verdict(future.result(), cpu_idle_percent)
            except Exception as exc:
                results[name] = {"busy": None, "error": "cannot sample activity: %s" % exc}
    return results
