# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pressure guard behind ``ray-maintenance watch``: look every few seconds, reclaim when a disk fills.

Every ``watch_interval_seconds`` the guard reads the watched filesystems of the host and of each running Ray
worker container (``_pressure.read_filesystems``: ``statvfs``, bytes and inodes, no tree walk).  When one is at or
above ``pressure_high_percent`` (or ``pressure_inodes_high_percent`` of its inodes), it runs the pressure reclaim
(``_node.Cleanup`` with ``pressure``), under the cleanup lock that cron's ``cleanup`` takes too, without waiting
for it: a held lock is said and tried again at the next look.  After a reclaim that could not bring the disk below
the low mark, the next one waits ``RETRY_SECONDS`` (a job writing faster than anything may go is not walked
every five seconds).  Targets and their Ray temp roots are listed again every ``REFRESH_SECONDS`` and whenever a
target cannot be read.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._node import Cleanup
from ansible_collections.rayops.disk.plugins.module_utils._options import CleanupOptions
from ansible_collections.rayops.disk.plugins.module_utils._pressure import (
    TIERS,
    over_marks,
    read_filesystems,
    watched_dirs,
)
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import ray_candidates
from ansible_collections.rayops.disk.plugins.module_utils._targets import enter, node_targets

REFRESH_SECONDS = 60.0
"""How often the guard lists the containers and finds Ray's temp roots again."""

RETRY_SECONDS = 30.0
"""After a reclaim that left a disk at or above the low mark, how long before the next may start."""

RESULTS = ("relieved", "not_relieved", "locked", "failed")
"""How a reclaim ended: below the low mark, not, locked out by another cleanup, or raised."""


@dataclasses.dataclass
class GuardState:
    """What the guard knows now: its last look and its totals (the metrics' source)."""

    readings: list = dataclasses.field(default_factory=list)
    looked_at: Optional[float] = None
    """Unix time of the last look."""
    active: bool = False
    """A watched filesystem is at or above its high mark after the guard did what it could."""
    reclaims: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    freed: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(TIERS, 0))
    last_reaction_seconds: Optional[float] = None
    """From the look that saw the high mark crossed to the end of the reclaim."""
    last_reclaim_at: Optional[float] = None
    problems: list = dataclasses.field(default_factory=list)
    """Targets that could not be listed or read at the last refresh (said once per refresh)."""
    marks: dict = dataclasses.field(default_factory=dict)
    """The high marks (``bytes``, ``inodes``) and the ``low`` mark, in percent."""


class Guard:
    """Looks at the watched filesystems and reclaims under pressure; ``step()`` is one look."""

    def __init__(self, options: CleanupOptions, psutil, docker=None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.options = dataclasses.replace(options, pressure=True, lock_timeout=0.0)
        self.usage = self.options.usage_options()
        self.psutil = psutil
        self.docker = docker
        self.clock = clock
        self.wall = wall
        self.state = GuardState(marks={"bytes": options.pressure_high_percent,
                                       "inodes": options.pressure_inodes_high_percent,
                                       "low": options.pressure_low_percent})
        self.watched: list = []
        self.refresh_at = 0.0
        self.retry_at = 0.0

    @property
    def troubled(self) -> bool:
        """The guard's verdict on what it saw: a disk at or above its high mark after its last look, or a reclaim
        that failed or was locked out by another cleanup (``watch --once`` exits 1 then)."""
        return self.state.active or bool(self.state.reclaims["failed"] or self.state.reclaims["locked"])

    def refresh(self) -> None:
        """List the targets, enter each, and find the dirs to watch on it (a container that cannot be entered is said).

        Ray's processes are looked for once for all the targets, not once per container.
        """
        node = node_targets(self.usage, self.docker, host=self.options.host)
        candidates = ray_candidates(self.psutil)
        self.watched, problems = [], []
        if node.containers_error:
            problems.append(node.containers_error)
        for slot in node.slots:
            enter(slot)
            if slot.status is not None:
                if slot.status == "error":
                    problems.append("%s: %s" % (slot.name, slot.reason))
                continue
            try:
                self.watched.append((slot, watched_dirs(slot, self.usage, self.psutil, candidates)))
            except (LookupError, OSError) as exc:
                problems.append("%s: %s" % (slot.name, exc))
        self.state.problems = problems
        self.refresh_at = self.clock() + REFRESH_SECONDS

    def look(self) -> list:
        """Read every watched filesystem now; a target that cannot be read makes the next look list again."""
        if self.clock() >= self.refresh_at:
            self.refresh()
        readings = []
        for slot, dirs in self.watched:
            try:
                readings += read_filesystems(slot, dirs)
            except OSError:
                self.refresh_at = 0.0  # a container stopped or restarted: list again next time
        self.state.readings = readings
        self.state.looked_at = self.wall()
        return readings

    def step(self) -> Optional[dict]:
        """One look; the reclaim's result when the look found pressure and one ran, else None."""
        seen = self.clock()
        over = over_marks(self.look(), self.options)
        if not over:
            self.state.active = False
            return None
        if seen < self.retry_at:
            self.state.active = True
            return None
        result = self.reclaim()
        self._account(result, seen)
        return result

    def reclaim(self) -> dict:
        """The pressure reclaim now, under the cleanup lock (not waited for); ``failed`` in the result if it raised."""
        try:
            return Cleanup(self.options, self.psutil, self.docker).run()
        except Exception as exc:  # a lock or audit file that cannot be opened: said, and the guard goes on
            return {"failed": True, "msg": "pressure reclaim failed: %s" % exc, "freed_bytes": 0, "pressure": None,
                    "status": "failed", "reason": str(exc)}

    def _account(self, result: dict, seen: float) -> None:
        """Add a reclaim to the totals; decide whether pressure stays and when to try again."""
        state = self.state
        ended = self.clock()
        pressure = result.get("pressure")
        if result.get("failed"):
            outcome = "failed"
        elif result["status"] == "skipped":
            outcome = "locked"
        else:
            outcome = "relieved" if pressure["relieved"] else "not_relieved"
            for tier in pressure["tiers"]:
                state.freed[tier["tier"]] += tier["freed_bytes"]
            state.last_reaction_seconds = round(ended - seen, 3)
            state.last_reclaim_at = self.wall()
        state.reclaims[outcome] += 1
        result["guard_result"] = outcome
        still = over_marks(self.look(), self.options)
        state.active = bool(still)
        if outcome in ("not_relieved", "failed"):
            self.retry_at = self.clock() + RETRY_SECONDS
