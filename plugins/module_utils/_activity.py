# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Whether a host or a container is busy: Ray running user code, or CPU in use.

A target is busy when one of its Ray worker processes runs user code (its
title is ``ray::<task or actor>``, not the ``ray::IDLE*`` family and not one
of Ray's own agents) or when its CPU use over the sample window is at or above
the threshold.  CPU is in percent of one core, as ``docker stats`` shows it.
On a host it is the CPU of Ray's worker processes (``ray::IDLE*`` and workers
running tasks; not raylet, gcs_server or the agents, whose housekeeping is no
job a cleanup could disturb); in a container, the container's whole cgroup,
read through the Docker SDK.  Every target is sampled over the same window,
side by side.

On the host only processes of root and the Ray users count: any local user
can title a process ``ray::train`` and would otherwise keep the node busy
forever.  In a container every process counts (it can only keep its own
container from being cleaned).  Reasons name who runs the user code.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Optional

from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import (
    iter_ray_processes,
    process_uids,
    user_label,
)

IDLE_PREFIX = "ray::IDLE"
"""``ray::IDLE``, ``ray::IDLE_SpillWorker``, ``ray::IDLE_RestoreWorker``: workers waiting for work."""

RAY_OWN_TITLES = frozenset(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))
"""Ray's own long-lived agents, not user code."""

MAX_TASKS_LISTED = 20


def runs_user_code(title: str) -> bool:
    """Whether a process title is a Ray worker running a task or actor."""
    return title.startswith("ray::") and not title.startswith(IDLE_PREFIX) and title not in RAY_OWN_TITLES


def _cpu_seconds(processes: list) -> dict:
    """CPU seconds (user + system) used so far, per pid, of the processes still alive."""
    used = {}
    for proc in processes:
        try:
            times = proc.cpu_times()
        except Exception:  # gone, or not ours to read: psutil.Error, without importing psutil here
            continue
        used[proc.pid] = times.user + times.system
    return used


class Sample:
    """CPU use over a window (``start()``, wait, ``finish()``) and the Ray tasks running at its end.

    With ``trusted_uids``, only processes running as one of them count.
    """

    def __init__(self, psutil, mnt_ns: Optional[str], trusted_uids: Optional[frozenset] = None) -> None:
        self.psutil = psutil
        self.mnt_ns = mnt_ns
        self.trusted_uids = trusted_uids
        self.before: tuple = (0.0, 0.0)

    def ray_processes(self):
        """``(process, title, owner uid)`` of the Ray processes that count."""
        for proc, _kind, title, _cmd in iter_ray_processes(self.psutil, self.mnt_ns):
            uids = process_uids(proc)
            if uids is None or (self.trusted_uids is not None and not set(uids) <= self.trusted_uids):
                continue
            yield proc, title, uids[1]

    def _reading(self) -> tuple:
        """``(monotonic time, CPU seconds used so far)``."""
        raise NotImplementedError

    def start(self) -> None:
        """Take the first reading."""
        self.before = self._reading()

    def finish(self) -> dict:
        """Take the second reading: CPU in percent of one core, and the Ray tasks running."""
        after = self._reading()
        percent = 100.0 * (after[1] - self.before[1]) / max(after[0] - self.before[0], 1e-6)
        owners: dict = {}
        for _proc, title, uid in self.ray_processes():
            if runs_user_code(title):
                owners.setdefault(title, set()).add(user_label(uid))
        return {"cpu_percent": round(percent, 1), "ray_tasks": sorted(owners),
                "owners": {title: sorted(users) for title, users in owners.items()}}


def is_worker(title: str) -> bool:
    """Whether a process title is a Ray worker (idle or running user code), not a system process or agent."""
    return title.startswith("ray::") and title not in RAY_OWN_TITLES


class HostSample(Sample):
    """A host: the CPU of the Ray workers present at the start (one that exits keeps its last reading)."""

    def __init__(self, psutil, mnt_ns: Optional[str], trusted_uids: Optional[frozenset] = None) -> None:
        super().__init__(psutil, mnt_ns, trusted_uids)
        self.processes: Optional[list] = None
        self.last: dict = {}

    def _reading(self) -> tuple:
        if self.processes is None:
            self.processes = [proc for proc, title, _uid in self.ray_processes() if is_worker(title)]
        self.last.update(_cpu_seconds(self.processes))
        return time.monotonic(), sum(self.last.values())


class ContainerSample(Sample):
    """A container: its cgroup's CPU from the Docker SDK (each call takes about a second)."""

    def __init__(self, container, psutil, mnt_ns: Optional[str]) -> None:
        super().__init__(psutil, mnt_ns)
        self.container = container

    def _reading(self) -> tuple:
        stats = self.container.stats(stream=False)
        return time.monotonic(), stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9


def verdict(reading: dict, cpu_idle_percent: float) -> dict:
    """``busy`` and the reasons for it, from a reading."""
    reasons = []
    if reading["ray_tasks"]:
        shown = ["%s (as %s)" % (title, ", ".join(reading["owners"][title]))
                 for title in reading["ray_tasks"][:MAX_TASKS_LISTED]]
        reasons.append("Ray runs user code: %s" % ", ".join(shown))
    if reading["cpu_percent"] >= cpu_idle_percent:
        reasons.append("CPU %.1f%% >= %g%%" % (reading["cpu_percent"], cpu_idle_percent))
    return {"busy": bool(reasons), "reasons": reasons, "cpu_percent": reading["cpu_percent"],
            "ray_tasks": reading["ray_tasks"][:MAX_TASKS_LISTED]}


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
            except Exception as exc:  # a container that stops or vanishes; the SDK raises its own types
                results[name] = {"busy": None, "error": "cannot sample activity: %s" % exc}
        time.sleep(sample_seconds)
        finished = {name: pool.submit(samples[name].finish) for name in samples if name not in results}
        for name, future in finished.items():
            try:
                results[name] = verdict(future.result(), cpu_idle_percent)
            except Exception as exc:
                results[name] = {"busy": None, "error": "cannot sample activity: %s" % exc}
    return results
