# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disk pressure: how full the watched filesystems are, and the pressure reclaim that brings them back down.

The watched filesystems of a target (the host or a Ray worker container) are those holding its tmp dir, its Ray
temp roots and (the host's) spill dirs, read with ``statvfs``: bytes and inodes, no tree walk.  Each dir is read on
its own: one that cannot be read safely (a link or a fifo planted where Ray's root would be) is said
(``Watched.unreadable``) and the others, the tmp dir first, are still read.

``PressureReclaim`` is what ``ray-maintenance watch`` runs at ``pressure_high_percent`` (handing it the readings it
just took) and what ``cleanup --pressure`` (``ray_worker_cleanup`` with ``pressure: true``) runs now: on every
target whose filesystem is at or above ``pressure_low_percent``, the tiers of ``TIER_TABLE``, cheapest harm first,
re-reading the filesystems after each and stopping as soon as every one of them is below the low mark:

1. ``unneeded``: what no job needs, in Ray's trusted temp roots, busy or not: ``logs/old``, Ray's rotated log
   backups (``*.log.1``), the logs of worker processes that are dead (the pid in the name is not alive in the
   target's PID namespace), stale sessions, spill dirs of nodes that are gone.  Never the logs of raylet, gcs,
   agents, dashboard: only worker log names are candidates, and a file some process holds open is kept.
2. ``deleted_logs`` (``pressure_truncate_deleted_logs``): Ray log files that are deleted but still open, emptied.
3. ``litter_idle``, then ``litter_busy``: pattern matches older than ``pressure_max_age_hours``, on idle targets,
   then on busy ones, within the guard's mandate: entries owned by root or ``ray_users``.  Anyone else's follow the
   idle cleanup's own rules only (an idle target holding ``min_tmp_size``, older than ``max_age_hours``), so a
   user who fills a disk never widens whose files go.
4. ``docker_prune`` when enabled, and only when Docker's data root is on a pressed filesystem of the host: a
   container's pressure is reclaimed in that container and never escalates to the node.

Every removal keeps every safety rule of ``_remove`` (open, mapped, locked, bound, live session, mounts, symlinks,
``exclude``); what the ``unneeded`` tier takes must also be older than ``GRACE_SECONDS``.  When a reclaim cannot
bring a disk below the low mark, ``held`` names the largest paths and owners it left, by bytes and by inodes, from
the walk it made.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._cleanup import (
    TargetCleaner,
    candidates,
    new_entry,
    ray_roots_inside,
    spill_candidates,
)
from ansible_collections.rayops.disk.plugins.module_utils._containers import (
    DockerUnavailable,
    docker_root_dir,
    prune_docker,
)
from ansible_collections.rayops.disk.plugins.module_utils._deleted import deleted_open_files, truncate_deleted_logs
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, describe_os_error, printable
from ansible_collections.rayops.disk.plugins.module_utils._fs import TreeChanged, filesystem_of, process_parent
from ansible_collections.rayops.disk.plugins.module_utils._options import CleanupOptions, UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import discover, pids_in_namespace, ray_candidates
from ansible_collections.rayops.disk.plugins.module_utils._ray_spill import live_node_ids
from ansible_collections.rayops.disk.plugins.module_utils._remove import Policy
from ansible_collections.rayops.disk.plugins.module_utils._targets import Slot, enter, sample_activity
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes
from ansible_collections.rayops.disk.plugins.module_utils._usage import TargetReport, holders

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
        """``host /tmp 93.1% of bytes, 12.0% of inodes used`` for logs and results (printable: one line)."""
        inodes = "" if self.inodes_used_percent is None else ", %.1f%% of inodes" % self.inodes_used_percent
        return printable("%s %s %.1f%% of bytes%s used" % (self.target, self.path, self.used_percent, inodes))

    def as_dict(self) -> dict:
        """The reading in a result."""
        return {"target": self.target, "kind": self.kind, "path": self.path, "used_percent": self.used_percent,
                "inodes_used_percent": self.inodes_used_percent, "free_bytes": self.free_bytes}


@dataclass
class Watched:
    """One target as the guard watches it: its slot, the dirs whose filesystems are watched, the last readings, and
    the dirs that could not be read safely (``{"target", "path", "reason"}``: said, never a reason to go blind)."""

    slot: Slot
    dirs: list
    readings: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)
    refused: list = field(default_factory=list)
    """Ray's default temp root when discovery would not take it as Ray's (planted by another user)."""

    @property
    def name(self) -> str:
        """The target's name (``host`` or the container's)."""
        return self.slot.name

    def read(self) -> list:
        """Read every watched filesystem now (``read_filesystems``); the readings."""
        self.readings, unreadable = read_filesystems(self.slot, self.dirs)
        self.unreadable = self.refused + unreadable
        return self.readings


def watch_slot(slot: Slot, psutil, candidates: Optional[list] = None) -> Watched:
    """The dirs whose filesystems are watched on an entered ``slot``, as it sees them: tmp dir, Ray temp roots,
    spill dirs (``candidates``, ``_ray_layout.ray_candidates``: one look at every process, shared by every slot)."""
    own = slot.options
    layout = discover(slot.target, psutil, own.tmp_dir, own.ray_temp_dir, slot.environ, own.ray_uids, candidates)
    found = [own.tmp_dir] + list(layout.temp_roots) + list(own.spill_dirs)
    refused = [{"target": slot.name, "path": item["path"], "reason": "Ray's default temp root is not safe: %s"
                % item["reason"]} for item in layout.refused_roots]
    return Watched(slot, list(dict.fromkeys(os.path.normpath(path) for path in found)), refused=refused)


def read_filesystems(slot: Slot, dirs: list) -> tuple:
    """``(readings, unreadable)``: a ``Reading`` per filesystem holding ``dirs`` on the slot, each dir opened on its
    own inside its tree without following a link; a dir that does not exist (no Ray yet) is left out, one that
    cannot be opened safely is in ``unreadable`` with the reason.  ``TreeChanged`` when the container is gone."""
    tree = slot.target.tree
    tree.still_same()
    readings, unreadable, seen = [], [], set()
    for path in dirs:
        try:
            fd = tree.open_dir(path)
        except FileNotFoundError:
            continue
        except TreeChanged:
            raise
        except OSError as exc:
            reason = "not a directory" if isinstance(exc, NotADirectoryError) else describe_os_error(exc)
            unreadable.append({"target": slot.name, "path": path, "reason": reason})
            continue
        try:
            dev = os.fstat(fd).st_dev
            if dev in seen:
                continue
            seen.add(dev)
            fs = filesystem_of(fd, display=path)
        finally:
            os.close(fd)
        readings.append(Reading(slot.name, slot.kind, path, dev, fs["used_percent"], fs["inodes_used_percent"],
                                fs["free_bytes"], fs["used_bytes"]))
    return readings, unreadable


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


@dataclass(frozen=True)
class Tier:
    """A tier of the reclaim: its name, its scope (``target``: run on each pressed target; ``node``: once for the
    node) and the function that reclaims (a target tier: ``(reclaim, watched, entry, report, record)``, True when it
    ran on that target; a node tier: ``(reclaim, pressed, record)``)."""

    name: str
    scope: str
    reclaim: Callable
    activity: bool = False
    """Whether the pressed targets' activity must be known first (sampled once, side by side)."""
    switch: Optional[str] = None
    """The option that turns the tier on (off: it is skipped and says so), or None when it always runs."""


def _unneeded(run: "PressureReclaim", item: Watched, entry: dict, report: dict, _record: dict) -> bool:
    groups = unneeded_groups(report, run.usage, namespace_pids(run.psutil, item.slot), live_node_ids(run.psutil))
    run.cleaner.remove(entry, item.slot.target, groups, run.cleaner.policy(GRACE_SECONDS), "unneeded")
    return True


def _deleted_logs(run: "PressureReclaim", item: Watched, entry: dict, report: dict, record: dict) -> bool:
    """Empty the deleted-but-open Ray logs that trusted Ray processes of the slot hold."""
    slot = item.slot
    trusted = {proc["pid"] for proc in report["ray_processes"]}
    pids = pids_in_namespace(run.psutil, slot.target.mnt_ns if slot.kind == "container" else None)
    children = {pid for pid in pids if process_parent(pid) in trusted}
    done = truncate_deleted_logs(deleted_open_files(run.psutil, pids), trusted | children,
                                 report["ray_temp_dirs"], run.dry_run)
    entry["freed_bytes"] += done["freed_bytes"]
    record.setdefault("truncated", []).extend(dict(found, target=slot.name) for found in done["truncated"])
    record.setdefault("kept", []).extend(dict(found, target=slot.name) for found in done["kept"])
    return True


def litter_policy(run: "PressureReclaim", report: dict, busy: bool) -> Policy:
    """What a litter tier may take on a target: root's and ``ray_users``' matches older than
    ``pressure_max_age_hours``; anyone else's only as the idle cleanup would (idle, ``min_tmp_size`` held, older than
    ``max_age_hours``)."""
    usage = run.usage
    others = None
    if not busy and report["tmp_bytes"] >= usage.min_tmp_bytes:
        others = run.cleaner.policy(usage.max_age_hours * 3600.0)
    mine = run.cleaner.policy(run.options.pressure_max_age_hours * 3600.0)
    return Policy(mine.cutoff, mine.age_by, mine.exclude, owners=usage.ray_uids | {0}, others=others)


def _litter(busy_tier: bool) -> Callable:
    def reclaim(run: "PressureReclaim", item: Watched, entry: dict, report: dict, record: dict) -> bool:
        busy = bool((item.slot.activity or {}).get("busy", True))  # not sampled: taken as busy, so last
        if busy != busy_tier:
            return False
        tier = record["tier"]
        run.cleaner.remove(entry, item.slot.target, litter_groups(report, run.usage),
                           litter_policy(run, report, busy), tier)
        return True
    return reclaim


def _docker_prune(run: "PressureReclaim", pressed: list, record: dict) -> None:
    """``docker_prune``, when Docker's data root is on a pressed filesystem of the host itself."""
    devs = {reading.dev for item in pressed if item.slot.kind == "host"
            for reading, _why in over_marks(item.readings, run.options, low=True)}
    if not devs:
        record["skipped"] = "no filesystem of the host itself is pressed (a container's pressure never prunes the node)"
        return
    try:
        root = docker_root_dir(run.docker, run.options.docker_host)
        on = os.stat(root).st_dev
    except (DockerUnavailable, OSError) as exc:
        record["skipped"] = "Docker's data root is unknown: %s" % exc
        return
    if on not in devs:
        record["skipped"] = "Docker's data root %s is not on a pressed filesystem of the host" % root
        return
    prune = prune_docker(run.docker, run.options.docker_host, run.dry_run)
    record.update(docker_prune=prune, freed_bytes=prune.get("reclaimed_bytes") or 0, targets=["docker"])


TIER_TABLE = (
    Tier("unneeded", "target", _unneeded),
    Tier("deleted_logs", "target", _deleted_logs, switch="pressure_truncate_deleted_logs"),
    Tier("litter_idle", "target", _litter(False), activity=True),
    Tier("litter_busy", "target", _litter(True), activity=True),
    Tier("docker_prune", "node", _docker_prune, switch="docker_prune"),
)
"""The reclaim's tiers, in the order they run."""

TIERS = tuple(tier.name for tier in TIER_TABLE)


def watch_node(slots: list, psutil) -> tuple:
    """``(watched, entries)``: each slot entered and its watched dirs read (``Watched``), or its entry when it cannot
    be (a stopped container, one that cannot be entered or read)."""
    candidates = ray_candidates(psutil)  # one look at every process, for every slot
    watched, entries = [], {}
    for slot in slots:
        enter(slot)
        if slot.status is not None:
            status = "skipped_not_running" if slot.status == "not_running" else "error"
            entries[slot.name] = new_entry(slot.name, slot.kind, status, slot.reason, slot.options.tmp_dir)
            continue
        try:
            item = watch_slot(slot, psutil, candidates)
            item.read()
        except (LookupError, OSError) as exc:
            entries[slot.name] = new_entry(slot.name, slot.kind, "error", str(exc), slot.options.tmp_dir)
            continue
        watched.append(item)
    return watched, entries


def held_text(held: list) -> str:
    """``host: alice 3.0 GiB, root 1.0 MiB (inodes: bob 90000, …); largest /tmp/big 3.0 GiB (alice), …``: who holds
    what the reclaim could not take, by bytes and by inodes."""
    parts = []
    for found in held:
        owners = ", ".join("%s %s" % (o["owner"], format_bytes(o["bytes"])) for o in found["owners"][:3])
        inodes = ", ".join("%s %d" % (o["owner"], o["inodes"]) for o in found["owners_by_inodes"][:3])
        paths = ", ".join("%s %s (%s)" % (p["path"], format_bytes(p["bytes"]), p["owner"]) for p in found["paths"][:3])
        parts.append("%s: %s (inodes: %s); largest %s" % (found["target"], owners or "nothing measured", inodes or "-",
                                                          paths or "-"))
    return printable("; ".join(parts))


class PressureReclaim:
    """One pressure reclaim over the watched targets of a node (the cleanup lock is the caller's, ``_node.PressureCleanup``)."""

    def __init__(self, options: CleanupOptions, psutil, docker, dry_run: bool, cleaner: TargetCleaner) -> None:
        self.options = options
        self.usage = cleaner.options
        self.psutil = psutil
        self.docker = docker
        self.dry_run = dry_run
        self.cleaner = cleaner
        self.started = time.monotonic()
        self.reports: dict = {}
        self.held: dict = {}
        """Per target, what its measuring walk found in each entry of its dirs (``TargetReport.held``)."""
        self.entries: dict = {}
        self.projected: dict = {}
        """Dry run: bytes each target would have freed, taken off its readings (nothing changed on disk)."""

    def run(self, watched: list, entries: Optional[dict] = None, containers_error: Optional[str] = None) -> dict:
        """The reclaim's result: a cleanup result (``targets``, ``freed_bytes``…) with ``pressure``.

        ``watched``: the targets with their readings, taken right before (the guard's look, or ``watch_node``);
        ``entries``: the results of the targets that could not be watched.
        """
        self.entries = dict(entries or {})
        before = [r for item in watched for r in item.readings]
        pressed = self._over_low(watched)
        trigger = over_marks(before, self.options) or over_marks(before, self.options, low=True)
        tiers = []
        for tier in TIER_TABLE:
            if not pressed:
                break
            tiers.append(self._tier(tier, pressed))
            if tiers[-1]["freed_bytes"] or tiers[-1]["removed"]:  # a tier that took nothing changed nothing to read
                pressed = self._pressed(pressed)
        for item in watched:
            if item.name not in self.entries:
                self.entries[item.name] = self._untouched(item)
        after = [r for item in watched for r in item.readings]
        prune = next((t["docker_prune"] for t in tiers if t.get("docker_prune")), None)
        freed = sum(t["freed_bytes"] for t in tiers)
        still = over_marks(after, self.options, low=True)
        held = self._held(pressed) if still else []
        pressure = {
            "high_percent": self.options.pressure_high_percent,
            "inodes_high_percent": self.options.pressure_inodes_high_percent,
            "low_percent": self.options.pressure_low_percent,
            "trigger": ["%s: %s" % (r.describe(), why) for r, why in trigger],
            "before": [r.as_dict() for r in before], "after": [r.as_dict() for r in after],
            "tiers": [{k: v for k, v in t.items() if k != "docker_prune"} for t in tiers],
            "relieved": not still, "projected": self.dry_run,
            "still_above_low": ["%s: %s" % (r.describe(), why) for r, why in still],
            "held": held, "held_text": held_text(held) if held else None,
            "unreadable": [u for item in watched for u in item.unreadable],
            "seconds": round(time.monotonic() - self.started, 3),
        }
        targets = sorted(self.entries.values(), key=lambda t: (t["kind"] != "host", t["name"]))  # as node_targets
        changed = any(t["removed"] for t in targets) or any(t.get("truncated") for t in tiers) or \
            bool(prune and prune.get("changed"))
        return {"changed": changed, "freed_bytes": freed, "status": "done", "reason": None, "targets": targets,
                "docker_prune": prune, "containers_error": containers_error, "pressure": pressure}

    def _over_low(self, watched: list) -> list:
        """The targets whose last readings have a filesystem at or above the low mark."""
        return [item for item in watched if over_marks(item.readings, self.options, low=True)]

    def _pressed(self, pressed: list) -> list:
        """The pressed targets, read again (less what a dry run would free), still at or above the low mark."""
        read = []
        for item in pressed:
            if self.entries.get(item.name, {}).get("status") == "error":
                continue
            try:
                readings = item.read()
            except OSError as exc:
                self._entry(item).update(status="error", reason="its filesystems cannot be read now: %s" % exc)
                continue
            less = self.projected.get(item.name, 0)
            if less:
                item.readings = [_less(reading, less) for reading in readings]
            read.append(item)
        return self._over_low(read)

    def _held(self, pressed: list) -> list:
        """Who holds what is left on the targets still pressed: the entries their walks found, as they are now."""
        found = []
        for item in pressed:
            if self.held.get(item.name):
                found.append(dict(holders(self.held[item.name], item.slot.target.tree), target=item.name))
        return found

    def _entry(self, item: Watched) -> dict:
        """The target's entry in the result, measured on first use (``report``: None when it cannot be)."""
        slot = item.slot
        if slot.name not in self.entries:
            own = slot.options
            entry = new_entry(slot.name, slot.kind, "cleaned", None, own.tmp_dir)
            entry["reason"] = printable("under pressure: %s" % "; ".join(
                "%s %s" % (r.path, why) for r, why in over_marks(item.readings, self.options, low=True)))
            self.entries[slot.name] = entry
            measure = TargetReport(slot.target, own, self.psutil, environ=slot.environ, now=self.cleaner.now)
            try:
                self.reports[slot.name] = measure.measure()
            except (UsageError, OSError) as exc:
                entry.update(status="error", reason=str(exc))
                self.reports[slot.name] = None
            else:
                self.held[slot.name] = measure.held
                before = self.reports[slot.name]["tmp_bytes"]
                entry.update(tmp_bytes_before=before, tmp_bytes_after=before,
                             untrusted_processes=self.reports[slot.name]["untrusted_processes"])
        return self.entries[slot.name]

    def _untouched(self, item: Watched) -> dict:
        """The entry of a target no tier had to touch: below the low mark."""
        shown = "; ".join(r.describe() for r in item.readings) or "no watched filesystem"
        return new_entry(item.name, item.slot.kind, "skipped_below_threshold", "%s: below pressure_low_percent %g%%"
                         % (shown, self.options.pressure_low_percent), item.slot.options.tmp_dir)

    def _tier(self, tier: Tier, pressed: list) -> dict:
        """Run one tier on the pressed targets (or once for the node); what it freed and why it ran."""
        why = "; ".join("%s: %s" % (r.describe(), reason) for item in pressed
                        for r, reason in over_marks(item.readings, self.options, low=True))
        record = {"tier": tier.name, "reason": why, "targets": [], "freed_bytes": 0, "removed": 0, "skipped": None}
        if tier.switch and not getattr(self.options, tier.switch):
            record["skipped"] = "%s is off" % tier.switch
            return record
        if tier.scope == "node":
            tier.reclaim(self, pressed, record)
            return record
        if tier.activity:
            sample_activity([item.slot for item in pressed if item.slot.activity is None], self.usage, self.psutil)
            for item in pressed:
                self._entry(item)["activity"] = item.slot.activity
        for item in pressed:
            entry = self._entry(item)
            report = self.reports[item.name]
            if report is None:
                continue
            freed, removed = entry["freed_bytes"], entry["removed"]
            if not tier.reclaim(self, item, entry, report, record):
                continue
            gained = entry["freed_bytes"] - freed
            removed_bytes = sum(group["freed_bytes"] for group in entry["groups"])  # not what emptying freed
            entry["tmp_bytes_after"] = (entry["tmp_bytes_before"] or 0) - removed_bytes
            record["targets"].append(item.name)
            record["freed_bytes"] += gained
            record["removed"] += entry["removed"] - removed
            if self.dry_run:
                self.projected[item.name] = self.projected.get(item.name, 0) + gained
        return record


def _less(reading: Reading, freed: int) -> Reading:
    """A reading with ``freed`` bytes taken off its used bytes (a dry run's projection)."""
    used = max(0, reading.used_bytes - freed)
    usable = reading.used_bytes + reading.free_bytes
    percent = round(100.0 * used / usable, 1) if usable else 0.0
    return Reading(reading.target, reading.kind, reading.path, reading.dev, percent, reading.inodes_used_percent,
                   reading.free_bytes + freed, used)
