# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disk pressure: how full the watched filesystems are, and the pressure reclaim that brings them back down.

The watched filesystems of a target (the host or a Ray worker container) are those holding its tmp dir, its Ray
temp roots and (the host's) spill dirs, read with ``statvfs``: bytes and inodes, no tree walk.

``PressureReclaim`` is what ``ray-maintenance watch`` runs at ``pressure_high_percent`` and what ``cleanup
--pressure`` (``ray_worker_cleanup`` with ``pressure: true``) runs now: on every target whose filesystem is at or
above ``pressure_low_percent``, tiers, cheapest harm first, re-reading the filesystems after each and stopping as
soon as every one of them is below the low mark:

1. ``unneeded``: what no job needs, on every target, busy or not: ``logs/old``, Ray's rotated log backups
   (``*.log.1``), the logs of worker processes that are dead (the pid in the name is not alive in the target's
   PID namespace), stale sessions, spill dirs of nodes that are gone.  Never the logs of raylet, gcs, agents,
   dashboard: only worker log names are candidates, and a file some process holds open is kept.
2. ``deleted_logs`` (``pressure_truncate_deleted_logs``): Ray log files that are deleted but still open, emptied.
3. ``litter_idle``, then ``litter_busy``: pattern matches older than ``pressure_max_age_hours``, on idle targets,
   then on busy ones.
4. ``docker_prune`` when enabled.

Every removal keeps every safety rule of ``_remove`` (open, mapped, locked, bound, live session, mounts, symlinks,
``exclude``); what the ``unneeded`` tier takes must also be older than ``GRACE_SECONDS``.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Optional

from ansible_collections.rayops.disk.plugins.module_utils._cleanup import (
    TargetCleaner,
    candidates,
    new_entry,
    ray_roots_inside,
    spill_candidates,
)
from ansible_collections.rayops.disk.plugins.module_utils._containers import prune_docker
from ansible_collections.rayops.disk.plugins.module_utils._deleted import deleted_open_files, truncate_deleted_logs
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._fs import filesystems_under, process_parent
from ansible_collections.rayops.disk.plugins.module_utils._options import CleanupOptions, UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import discover, pids_in_namespace, ray_candidates
from ansible_collections.rayops.disk.plugins.module_utils._ray_spill import live_node_ids
from ansible_collections.rayops.disk.plugins.module_utils._targets import NodeTargets, Slot, enter, sample_activity
from ansible_collections.rayops.disk.plugins.module_utils._usage import TargetReport

TIERS = ("unneeded", "deleted_logs", "litter_idle", "litter_busy", "docker_prune")
"""The reclaim's tiers, in the order they run."""

GRACE_SECONDS = 60.0
"""What the ``unneeded`` tier takes is older than this: a file written in the last minute may be in the making."""

ROTATED_LOG_RE = re.compile(r"^.+(?:\.(?:log|out|err)\.[0-9]+|\.[0-9]+\.log)$")
"""A log backup Ray's rotation made (``raylet.out.1``, ``python-core-worker-…log.2``; Ray 2.40's C++ logs:
``python-core-worker-…_PID.1.log``, ``raylet.1.log``); Ray writes the unnumbered one."""

WORKER_LOG_RE = re.compile(r"^(?:worker-[0-9a-f]+-[0-9a-f]+-([0-9]+)\.(?:out|err)"
                           r"|python-core-worker-[0-9a-f]+_([0-9]+)\.log)(?:\.[0-9]+)?$")
"""A worker process's own log, named with its pid (never a raylet's, gcs's, agent's or dashboard's)."""


@dataclass(frozen=True)
class Reading:
    """One watched filesystem of a target, read now: how full, in bytes and in inodes."""

    target: str
    kind: str
    path: str
    """The watched dir, as the target sees it (the first one on this filesystem)."""
    dev: int
    used_percent: float
    inodes_used_percent: Optional[float]
    """None when the filesystem has no inode limit."""
    free_bytes: int
    used_bytes: int

    def at_or_above(self, percent: float, inodes_percent: float) -> Optional[str]:
        """Why this filesystem is at or above the marks (``bytes 93.1% >= 90%``), or None when it is below both."""
        if self.used_percent >= percent:
            return "bytes %.1f%% >= %g%%" % (self.used_percent, percent)
        if self.inodes_used_percent is not None and self.inodes_used_percent >= inodes_percent:
            return "inodes %.1f%% >= %g%%" % (self.inodes_used_percent, inodes_percent)
        return None

    def describe(self) -> str:
        """``host /tmp 93.1% of bytes, 12.0% of inodes used`` for logs and results."""
        inodes = "" if self.inodes_used_percent is None else ", %.1f%% of inodes" % self.inodes_used_percent
        return "%s %s %.1f%% of bytes%s used" % (self.target, self.path, self.used_percent, inodes)

    def as_dict(self) -> dict:
        """The reading in a result."""
        return {"target": self.target, "kind": self.kind, "path": self.path, "used_percent": self.used_percent,
                "inodes_used_percent": self.inodes_used_percent, "free_bytes": self.free_bytes}


def watched_dirs(slot: Slot, options: UsageOptions, psutil, candidates: Optional[list] = None) -> list:
    """The dirs whose filesystems are watched on ``slot``, as it sees them: tmp dir, Ray temp roots, spill dirs.

    ``candidates`` (``_ray_layout.ray_candidates``): one look at every process, shared by every slot.
    """
    own = options if slot.kind == "host" else options.for_container()
    layout = discover(slot.target, psutil, own.tmp_dir, own.ray_temp_dir, slot.environ, options.ray_uids,
                      candidates)
    found = [own.tmp_dir] + list(layout.temp_roots) + list(own.spill_dirs)
    return list(dict.fromkeys(os.path.normpath(path) for path in found))


def read_filesystems(slot: Slot, dirs: list) -> list:
    """A ``Reading`` per filesystem holding ``dirs`` on the slot (each opened inside its tree, no symlink followed).

    A dir that does not exist (no Ray yet) is left out; any other ``OSError`` (a container gone) is raised.
    """
    return [Reading(slot.name, slot.kind, path, dev, fs["used_percent"], fs["inodes_used_percent"], fs["free_bytes"],
                    fs["used_bytes"]) for path, dev, fs in filesystems_under(slot.target.tree, dirs)]


def over_marks(readings: list, options: CleanupOptions, low: bool = False) -> list:
    """``(reading, why)`` of every reading at or above the high marks (``low``: the low mark, for bytes and inodes)."""
    if low:
        marks = (options.pressure_low_percent, options.pressure_low_percent)
    else:
        marks = (options.pressure_high_percent, options.pressure_inodes_high_percent)
    return [(reading, why) for reading, why in ((r, r.at_or_above(*marks)) for r in readings) if why]


def namespace_pids(psutil, slot: Slot) -> Optional[set]:
    """The pids alive in the slot's PID namespace, as its processes name them; None when one cannot be read.

    The host's are this process's; a container's are the last ``NSpid`` field of each of its processes.
    """
    if slot.kind == "host":
        return set(psutil.pids())
    found = set()
    for pid in pids_in_namespace(psutil, slot.target.mnt_ns):
        try:
            with open("/proc/%d/status" % pid) as handle:
                line = next((text for text in handle if text.startswith("NSpid:")), None)
        except OSError:
            return None
        if line is None:
            return None
        found.add(int(line.split()[-1]))
    return found


def unneeded_groups(report: dict, options: UsageOptions, alive: Optional[set], running: dict) -> list:
    """The ``unneeded`` tier's candidate groups of one measured target (see ``_cleanup.candidates``)."""
    groups = [group for group in candidates(report, options, ray_roots_inside(report)) if group[4] != "patterns"]

    def dead_worker_log(name: str) -> bool:
        match = WORKER_LOG_RE.match(name)
        return match is not None and alive is not None and int(match.group(1) or match.group(2)) not in alive

    for session in report["sessions"]:
        if session["live"]:
            root, logs = os.path.dirname(session["path"]), (session["name"], "logs")
            groups.append((root, logs, ROTATED_LOG_RE.match, "rotated log backup of %s" % session["name"],
                           "rotated_logs"))
            groups.append((root, logs, dead_worker_log, "log of a dead worker of %s" % session["name"],
                           "dead_worker_logs"))
    return groups + spill_candidates(report, options, running)


def litter_groups(report: dict, options: UsageOptions) -> list:
    """The ``litter`` tiers' group: pattern matches in the tmp dir."""
    return [group for group in candidates(report, options, ray_roots_inside(report)) if group[4] == "patterns"]


class PressureReclaim:
    """One pressure reclaim over the targets of a node (the cleanup lock is the caller's, ``_node.Cleanup``)."""

    def __init__(self, options: CleanupOptions, psutil, docker, dry_run: bool, cleaner: TargetCleaner) -> None:
        self.options = options
        self.usage = cleaner.options
        self.psutil = psutil
        self.docker = docker
        self.dry_run = dry_run
        self.cleaner = cleaner
        self.started = time.monotonic()
        self.dirs: dict = {}
        self.readings: dict = {}
        self.reports: dict = {}
        self.entries: dict = {}
        self.projected: dict = {}
        """Dry run: bytes each target would have freed, taken off its readings (nothing changed on disk)."""

    def run(self, node: NodeTargets) -> dict:
        """The reclaim's result: a cleanup result (``targets``, ``freed_bytes``…) with ``pressure``."""
        candidates = ray_candidates(self.psutil)  # one look at every process, for every slot
        slots = [slot for slot in node.slots if self._ready(slot, candidates)]
        before = [r for slot in slots for r in self.readings[slot.name]]
        pressed = self._over_low(slots)
        trigger = over_marks(before, self.options) or over_marks(before, self.options, low=True)
        tiers = []
        for tier in TIERS:
            if not pressed:
                break
            tiers.append(self._tier(tier, pressed))
            pressed = self._pressed(pressed)
        for slot in node.slots:
            if slot.name not in self.entries:
                self.entries[slot.name] = self._untouched(slot)
        after = [r for slot in slots for r in self.readings[slot.name]]
        targets = [self.entries[slot.name] for slot in node.slots]
        prune = next((t["docker_prune"] for t in tiers if t.get("docker_prune")), None)
        freed = sum(t["freed_bytes"] for t in tiers)
        still = over_marks(after, self.options, low=True)
        pressure = {
            "high_percent": self.options.pressure_high_percent,
            "inodes_high_percent": self.options.pressure_inodes_high_percent,
            "low_percent": self.options.pressure_low_percent,
            "trigger": ["%s: %s" % (r.describe(), why) for r, why in trigger],
            "before": [r.as_dict() for r in before], "after": [r.as_dict() for r in after],
            "tiers": [{k: v for k, v in t.items() if k != "docker_prune"} for t in tiers],
            "relieved": not still, "projected": self.dry_run,
            "still_above_low": ["%s: %s" % (r.describe(), why) for r, why in still],
            "seconds": round(time.monotonic() - self.started, 3),
        }
        changed = any(t["removed"] for t in targets) or any(t.get("truncated") for t in tiers) or \
            bool(prune and prune.get("changed"))
        return {"changed": changed, "freed_bytes": freed, "status": "done", "reason": None, "targets": targets,
                "docker_prune": prune, "containers_error": node.containers_error, "pressure": pressure}

    def _ready(self, slot: Slot, candidates: list) -> bool:
        """Enter the slot and read its filesystems; False (its entry says why) when it cannot be read."""
        enter(slot)
        own = self.usage if slot.kind == "host" else self.usage.for_container()
        if slot.status is not None:
            status = "skipped_not_running" if slot.status == "not_running" else "error"
            self.entries[slot.name] = new_entry(slot.name, slot.kind, status, slot.reason, own.tmp_dir)
            return False
        try:
            self.dirs[slot.name] = watched_dirs(slot, self.usage, self.psutil, candidates)
            self.readings[slot.name] = read_filesystems(slot, self.dirs[slot.name])
        except (LookupError, OSError) as exc:
            self.entries[slot.name] = new_entry(slot.name, slot.kind, "error", str(exc), own.tmp_dir)
            return False
        return True

    def _over_low(self, slots: list) -> list:
        """The slots whose last readings have a filesystem at or above the low mark."""
        return [slot for slot in slots if over_marks(self.readings[slot.name], self.options, low=True)]

    def _pressed(self, slots: list) -> list:
        """The slots with a filesystem at or above the low mark, read again (less what a dry run would free)."""
        read = []
        for slot in slots:
            if slot.name in self.entries and self.entries[slot.name]["status"] == "error":
                continue
            try:
                readings = read_filesystems(slot, self.dirs[slot.name])
            except OSError as exc:
                self._entry(slot)
                self.entries[slot.name].update(status="error", reason="its filesystems cannot be read now: %s" % exc)
                continue
            less = self.projected.get(slot.name, 0)
            if less:
                readings = [_less(reading, less) for reading in readings]
            self.readings[slot.name] = readings
            read.append(slot)
        return self._over_low(read)

    def _entry(self, slot: Slot) -> dict:
        """The slot's entry in the result, measured on first use (``report``: None when it cannot be)."""
        if slot.name not in self.entries:
            own = self.usage if slot.kind == "host" else self.usage.for_container()
            entry = new_entry(slot.name, slot.kind, "cleaned", None, own.tmp_dir)
            entry["reason"] = "under pressure: %s" % "; ".join(
                "%s %s" % (r.path, why) for r, why in over_marks(self.readings[slot.name], self.options, low=True))
            self.entries[slot.name] = entry
            try:
                report = TargetReport(slot.target, own, self.psutil, environ=slot.environ, now=self.cleaner.now)
                self.reports[slot.name] = report.measure()
            except (UsageError, OSError) as exc:
                entry.update(status="error", reason=str(exc))
                self.reports[slot.name] = None
            else:
                before = self.reports[slot.name]["tmp_bytes"]
                entry.update(tmp_bytes_before=before, tmp_bytes_after=before,
                             untrusted_processes=self.reports[slot.name]["untrusted_processes"])
        return self.entries[slot.name]

    def _untouched(self, slot: Slot) -> dict:
        """The entry of a target no tier had to touch: below the low mark."""
        own = self.usage if slot.kind == "host" else self.usage.for_container()
        shown = "; ".join(r.describe() for r in self.readings.get(slot.name, [])) or "no watched filesystem"
        return new_entry(slot.name, slot.kind, "skipped_below_threshold", "%s: below pressure_low_percent %g%%"
                         % (shown, self.options.pressure_low_percent), own.tmp_dir)

    def _tier(self, tier: str, pressed: list) -> dict:
        """Run one tier on the pressed slots; what it freed and why it ran."""
        why = "; ".join("%s: %s" % (r.describe(), reason) for slot in pressed
                        for r, reason in over_marks(self.readings[slot.name], self.options, low=True))
        record = {"tier": tier, "reason": why, "targets": [], "freed_bytes": 0, "removed": 0, "skipped": None}
        if tier == "deleted_logs" and not self.options.pressure_truncate_deleted_logs:
            record["skipped"] = "pressure_truncate_deleted_logs is off"
            return record
        if tier == "docker_prune":
            return self._prune(record)
        if tier in ("litter_idle", "litter_busy"):
            sample_activity([slot for slot in pressed if slot.activity is None], self.usage, self.psutil)
            for slot in pressed:
                self._entry(slot)["activity"] = slot.activity
        for slot in pressed:
            entry = self._entry(slot)
            report = self.reports[slot.name]
            if report is None:
                continue
            freed, removed = entry["freed_bytes"], entry["removed"]
            if tier == "unneeded":
                groups = unneeded_groups(report, self.usage, namespace_pids(self.psutil, slot),
                                         live_node_ids(self.psutil))
                self.cleaner.remove(entry, slot.target, groups, self.cleaner.policy(GRACE_SECONDS), tier)
            elif tier == "deleted_logs":
                self._truncate(entry, slot, report, record)
            else:
                busy = bool((slot.activity or {}).get("busy", True))  # not sampled: taken as busy, so last
                if busy != (tier == "litter_busy"):
                    continue
                age = self.options.pressure_max_age_hours * 3600.0
                self.cleaner.remove(entry, slot.target, litter_groups(report, self.usage), self.cleaner.policy(age),
                                    tier)
            gained = entry["freed_bytes"] - freed
            removed_bytes = sum(group["freed_bytes"] for group in entry["groups"])  # not what emptying freed
            entry["tmp_bytes_after"] = (entry["tmp_bytes_before"] or 0) - removed_bytes
            record["targets"].append(slot.name)
            record["freed_bytes"] += gained
            record["removed"] += entry["removed"] - removed
            if self.dry_run:
                self.projected[slot.name] = self.projected.get(slot.name, 0) + gained
        return record

    def _truncate(self, entry: dict, slot: Slot, report: dict, record: dict) -> None:
        """Empty the deleted-but-open Ray logs that trusted Ray processes of the slot hold."""
        trusted = {proc["pid"] for proc in report["ray_processes"]}
        pids = pids_in_namespace(self.psutil, slot.target.mnt_ns if slot.kind == "container" else None)
        children = {pid for pid in pids if process_parent(pid) in trusted}
        done = truncate_deleted_logs(deleted_open_files(self.psutil, pids), trusted | children,
                                     report["ray_temp_dirs"], self.dry_run)
        entry["freed_bytes"] += done["freed_bytes"]
        record.setdefault("truncated", []).extend(dict(item, target=slot.name) for item in done["truncated"])
        record.setdefault("kept", []).extend(dict(item, target=slot.name) for item in done["kept"])

    def _prune(self, record: dict) -> dict:
        """``docker_prune``, when enabled and Docker answered."""
        if not self.options.docker_prune:
            record["skipped"] = "docker_prune is off"
            return record
        prune = prune_docker(self.docker, self.options.docker_host, self.dry_run)
        record.update(docker_prune=prune, freed_bytes=prune.get("reclaimed_bytes") or 0, targets=["docker"])
        return record


def _less(reading: Reading, freed: int) -> Reading:
    """A reading with ``freed`` bytes taken off its used bytes (a dry run's projection)."""
    used = max(0, reading.used_bytes - freed)
    usable = reading.used_bytes + reading.free_bytes
    percent = round(100.0 * used / usable, 1) if usable else 0.0
    return Reading(reading.target, reading.kind, reading.path, reading.dev, percent, reading.inodes_used_percent,
                   reading.free_bytes + freed, used)
