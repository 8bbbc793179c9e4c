# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The options that decide whether a Ray node is busy, shared by ray_tmp_usage and ray_worker_cleanup."""

from __future__ import annotations


class ModuleDocFragment:
    """How a target is judged busy or idle (rayops.disk.activity)."""

    DOCUMENTATION = r"""
options:
  cpu_idle_percent:
    description:
      - CPU use over O(sample_seconds), in percent of one core, at or above which a target is busy even with no Ray
        task running.
      - Counted is the CPU of workers running a task or an actor method and of processes that are not Ray's own (a
        task's subprocess, on the host; any program, in a container). Never counted - Ray's idle machinery, which
        uses 1-2 % of a core per process - idle workers (C(ray::IDLE*)), idle actors (C(ray::<Actor>) between
        calls), raylet, gcs_server, the agents, the dashboard and its modules, the log and autoscaler monitors, and
        Ray's spill, restore and delete workers. The result's C(activity) lists both figures and who used the CPU.
      - On the host only processes of root and O(ray_users) count; in a container every process does.
    type: float
    default: 5
  sample_seconds:
    description:
      - Length of the CPU sample window, more than 0 and at most 300. All targets are sampled side by side, each
        process from C(/proc).
      - The default reads an idle 4-CPU Ray head idle in 20 of 20 samples on Ray 2.40, 2.53 and 2.60 (see
        C(docs/benchmarks.md) in the collection).
    type: float
    default: 1
  busy_titles:
    description:
      - Process title globs that always mean busy, for what Ray's titles cannot tell - for example
        V(ray::ServeReplica*) to never clean a node while a Ray Serve replica lives there, idle between requests
        or not.
      - Matched against the whole title (C(ray::<Actor>), C(ray::<Actor>.<method>), C(ray::<task>)). Wins over
        O(idle_titles).
    type: list
    elements: str
    default: []
  idle_titles:
    description:
      - Process title globs that never mean busy and whose CPU does not count - for example V(ray::Poller*) for an
        actor method that waits forever by design.
      - A glob that matches every worker (such as V(ray::*)) is refused.
    type: list
    elements: str
    default: []
"""
