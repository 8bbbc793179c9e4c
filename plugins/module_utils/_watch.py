# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pressure guard behind ``ray-maintenance watch``: look every few seconds, reclaim when a disk fills.

Every ``watch_interval_seconds`` the guard reads the watched filesystems of the host and of each running Ray
worker container (``_pressure.read_filesystems``: ``statvfs``, bytes and inodes, no tree walk).  When one is at or
above ``pressure_high_percent`` (or ``pressure_inodes_high_percent`` of its inodes), it runs the pressure reclaim
(``_node.PressureCleanup``), under the cleanup lock that cron's ``cleanup`` takes too, without waiting
for it: a held lock is said and tried again at the next look.  After a reclaim that could not bring the disk below
the low mark, the next one waits ``RETRY_SECONDS``, doubled after each further one that could not help (a job
writing faster than anything may go, or a user's file the guard may not take, is not walked every five seconds).
Targets and their Ray temp roots are listed again every ``REFRESH_SECONDS`` and whenever a target cannot be read.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import printable
from ansible_collections.rayops.disk.plugins.module_utils._node import PressureCleanup
from ansible_collections.rayops.disk.plugins.module_utils._options import CleanupOptions
from ansible_collections.rayops.disk.plugins.module_utils._pressure import TIERS, over_marks, watch_slot
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import ray_candidates
from ansible_collections.rayops.disk.plugins.module_utils._targets import enter, node_targets

REFRESH_SECONDS = 60.0
"""How often the guard lists the containers and finds Ray's temp roots again."""

RETRY_SECONDS = 30.0
"""After a reclaim that left a disk at or above the low mark, how long before the next may start; doubled after each
further one that could not help either, up to ``MAX_RETRY_SECONDS`` (a disk someone else fills is not walked again
and again at full cost), and back to this once a disk is below its high mark."""
MAX_RETRY_SECONDS = 600.0

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
    """Targets that could not be listed or read, and watched dirs that cannot be read safely (said when it changes)."""
    unreadable: list = dataclasses.field(default_factory=list)
    """The watched dirs that cannot be read safely now: ``{"target", "path", "reason"}`` (a metric each)."""
    held: list = dataclasses.field(default_factory=list)
    """After a reclaim that could not relieve a disk: who holds what it left (``_pressure.PressureReclaim._held``)."""
    marks: dict = dataclasses.field(default_factory=dict)
    """The high marks (``bytes``, ``inodes``) and the ``low`` mark, in percent."""


class Guard:
    """Looks at the watched filesystems and reclaims under pressure; ``step()`` is one look."""

    def __init__(self, options: CleanupOptions, psutil, docker=None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.options = dataclasses.replace(options, pressure=True, lock_timeout=0.0)
        self.options.ensure_valid()  # once: each reclaim runs with these
        self.usage = self.options.usage_options()
        self.psutil = psutil
        self.docker = docker
        self.clock = clock
        self.wall = wall
        self.state = GuardState(marks={"bytes": options.pressure_high_percent,
                                       "inodes": options.pressure_inodes_high_percent,
                                       "low": options.pressure_low_percent})
        self.watched: list = []
        self.looked: list = []
        """The watched targets the last look could read: what a reclaim then works on."""
        self.listing_problems: list = []
        self.refresh_at = 0.0
        self.retry_at = 0.0
        self.backoff = RETRY_SECONDS

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
                self.watched.append(watch_slot(slot, self.psutil, candidates))
            except (LookupError, OSError) as exc:
                problems.append("%s: %s" % (slot.name, exc))
        self.listing_problems = problems
        self.refresh_at = self.clock() + REFRESH_SECONDS

    def look(self) -> list:
        """Read every watched filesystem now; a target that cannot be read makes the next look list again.

        A watched dir that cannot be read safely is said (``problems``, ``unreadable``), and the target's other
        dirs are still read: nobody can blind the guard by planting a link or a fifo where Ray's root would be.
        """
        if self.clock() >= self.refresh_at:
            self.refresh()
        readings, unreadable, self.looked = [], [], []
        for item in self.watched:
            try:
                readings += item.read()
            except OSError:
                self.refresh_at = 0.0  # a container stopped or restarted: list again next time
                continue
            self.looked.append(item)
            unreadable += item.unreadable
        self.state.readings = readings
        self.state.unreadable = unreadable
        self.state.problems = self.listing_problems + [
            printable("%s: watched dir %s cannot be read safely (%s); its filesystem is not watched, the rest is"
                      % (u["target"], u["path"], u["reason"])) for u in unreadable]
        self.state.looked_at = self.wall()
        return readings

    def step(self) -> Optional[dict]:
        """One look; the reclaim's result when the look found pressure and one ran, else None."""
        seen = self.clock()
        over = over_marks(self.look(), self.options)
        if not over:
            self.state.active = False
            self.state.held = []
            self.backoff = RETRY_SECONDS
            return None
        if seen < self.retry_at:
            self.state.active = True
            return None
        result = self.reclaim()
        self._account(result, seen)
        return result

    def reclaim(self) -> dict:
        """The pressure reclaim now, under the cleanup lock (not waited for), on the targets as this look read them;
        ``failed`` in the result if it raised."""
        try:
            return PressureCleanup(self.options, self.psutil, self.docker, watched=self.looked).run()
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
            state.held = pressure["held"]
        state.reclaims[outcome] += 1
        result["guard_result"] = outcome
        # observed again by the reclaim itself after its last tier (the targets it did not touch are as this step
        # read them): no further look
        state.readings = [reading for item in self.looked for reading in item.readings]
        still = over_marks(state.readings, self.options)
        state.active = bool(still)
        if outcome in ("not_relieved", "failed"):
            self.retry_at = self.clock() + self.backoff
            result["retry_seconds"] = self.backoff
            self.backoff = min(MAX_RETRY_SECONDS, self.backoff * 2)
        else:
            self.backoff = RETRY_SECONDS
