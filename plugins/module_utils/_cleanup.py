# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What cleanup takes from one target, and taking it: the decisions ``ray_worker_cleanup`` and the reports share.

``clean_target`` gets a target's usage report (``_usage.TargetReport``) and applies cleanup's rules: leave it alone
when its temp dir holds less than ``min_tmp_size`` or when it is busy (unless ``force``), else remove, under the
rules of ``_remove`` (age, ``exclude``, open, locked, mounts, links), the temp dir's entries matching ``patterns``,
the stale Ray sessions, old files in ``logs/old``, and the stale spill dirs of nodes that no longer run
(``spill_candidates``).  A live session is never a candidate.  In a dry run the same walk decides and removes
nothing, so what a report calls freeable (``freeable``) is what a cleanup would free now, with what it would keep
and why.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
from dataclasses import dataclass
from typing import Optional

from ansible_collections.rayops.disk.plugins.module_utils._archive import Archiver, Store, prune
from ansible_collections.rayops.disk.plugins.module_utils._errors import describe_os_error
from ansible_collections.rayops.disk.plugins.module_utils._options import UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import Target, unix_socket_paths
from ansible_collections.rayops.disk.plugins.module_utils._ray_spill import SPILL_DIR_RE, live_node_ids
from ansible_collections.rayops.disk.plugins.module_utils._remove import (
    Guards,
    HoldersUnknown,
    MAX_LISTED,
    Policy,
    Remover,
    locked_inodes,
    socket_inodes,
    used_inodes,
)
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes

ACTIONS = {"patterns": "clean_tmp_patterns", "old_logs": "clean_old_logs", "sessions": "remove_stale_sessions",
           "spill": "remove_stale_spill", "rotated_logs": "clean_rotated_logs",
           "dead_worker_logs": "clean_dead_worker_logs"}
"""The ``action`` of each kind of candidate group, as suggestions name it (the last two: under pressure only)."""


class AuditLog:
    """JSON lines, one per entry removed from a removal root (with what went inside it).

    Each names the target (``host`` or the container), the path as the
    target sees it, the path as the host reaches it (the real directory the
    remover opened, e.g. a container's overlay), the bytes freed, the
    entries removed and why.
    """

    def __init__(self, path: Optional[str]) -> None:
        self.handle = open(path, "a") if path else None

    def write(self, target: str, kind: str, path: str, host_path: Optional[str], freed: int, entries: int,
              reason: str) -> None:
        """Append one line (flushed, so a killed run leaves what it did)."""
        if self.handle:
            line = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "target": target, "kind": kind, "path": path, "host_path": host_path, "bytes": freed,
                    "entries": entries, "reason": reason}
            self.handle.write(json.dumps(line) + "\n")
            self.handle.flush()

    def close(self) -> None:
        """Close the file."""
        if self.handle:
            self.handle.close()


def candidates(report: dict, options: UsageOptions, ray_roots_inside: set) -> list:
    """``(root, below, select, reason, kind)`` groups to remove from, inside the target (never a live session).

    ``root`` is trusted (the tmp dir, a Ray temp root); the ``below``
    components are opened without following symlinks; ``select`` picks the
    names of the entries to remove there.
    """
    patterns = tuple(options.patterns)

    def litter(name: str) -> bool:  # a spill dir is only ever removed as one (spill_candidates)
        return (name not in ray_roots_inside and not SPILL_DIR_RE.match(name)
                and any(fnmatch.fnmatchcase(name, p) for p in patterns))

    groups = [(report["tmp_dir"], (), litter, "matches %s" % ", ".join(patterns), "patterns")]  # the target's own tmp dir
    stale: dict = {}
    for session in report["sessions"]:
        root = os.path.dirname(session["path"])
        if options.clean_stale_sessions and not session["live"]:
            stale.setdefault(root, set()).add(session["name"])
        elif options.clean_old_logs:
            groups.append((root, (session["name"], "logs", "old"), lambda name: True,
                           "old log of %s" % session["name"], "old_logs"))
    for root, names in sorted(stale.items()):
        groups.append((root, (), names.__contains__, "stale Ray session", "sessions"))
    return groups


def ray_roots_inside(report: dict) -> set:
    """The names of the Ray temp roots directly in the report's tmp dir (never litter, whatever the patterns)."""
    return {os.path.basename(r) for r in report["ray_temp_dirs"]
            if os.path.dirname(os.path.normpath(r)) == os.path.normpath(report["tmp_dir"])}


def spill_candidates(report: dict, options: UsageOptions, running: dict) -> list:
    """``(root, (), select, reason, kind)`` groups of the stale spill dirs of a report (``clean_stale_spill``).

    Only ``ray_spilled_objects_<node id>`` dirs the report found stale, in the spill directory it found them in;
    a node that a raylet runs again by now (``running``, read right before the removal) is not one.
    """
    if not options.clean_stale_spill:
        return []
    stale: dict = {}
    for spill in report.get("spill_dirs") or []:
        if spill["status"] == "stale":
            stale.setdefault(spill["root"], set()).add(os.path.basename(spill["path"]))

    def chooser(names: set):
        def select(name: str) -> bool:
            match = SPILL_DIR_RE.match(name)
            return name in names and match is not None and match.group(1) not in running
        return select

    return [(root, (), chooser(names), "stale spill dir of a Ray node that no longer runs here", "spill")
            for root, names in sorted(stale.items())]


ARCHIVED = {"sessions": ("logs",), "old_logs": ("logs", "old")}
"""The groups whose files are archived before they go, and what of each session is archived (below it)."""


@dataclass(frozen=True)
class ArchivePlan:
    """Where a run archives (``archive_dest``), under which names, and how: made once per run from its options."""

    store: Store
    cluster: str
    node: str
    required: bool = True
    keep_days: Optional[float] = None
    bandwidth: Optional[int] = None
    deadline: Optional[float] = None
    """``time.monotonic()`` after which nothing more is archived (a pressure reclaim's budget)."""

    def archiver(self, target: Target) -> Archiver:
        """The archiver of one target: the host as ``node``, a container as ``<node>-<container>``."""
        node = self.node if target.prefix == "/" else "%s-%s" % (self.node, target.name)
        return Archiver(self.store, self.cluster, node, self.bandwidth, self.deadline)


def new_entry(name: str, kind: str, status: str, reason: Optional[str], tmp_dir: Optional[str] = None) -> dict:
    """A cleanup target's entry in a result, before anything is measured."""
    return {"name": name, "kind": kind, "status": status, "reason": reason, "tmp_dir": tmp_dir,
            "tmp_bytes_before": None, "tmp_bytes_after": None, "freed_bytes": 0, "removed": 0, "removed_paths": [],
            "kept": [], "kept_count": 0, "kept_by_reason": {}, "errors": [], "error_count": 0, "activity": None,
            "roots": [], "untrusted_processes": [], "groups": [], "archives": []}


class TargetCleaner:
    """Applies cleanup's rules to one measured target: the gates, then each candidate group (``dry_run``: none go)."""

    def __init__(self, options: UsageOptions, psutil, now: float, dry_run: bool, force: bool = False,
                 audit: Optional["AuditLog"] = None, archive: Optional[ArchivePlan] = None) -> None:
        self.options = options
        self.psutil = psutil
        self.now = now
        self.dry_run = dry_run
        self.force = force
        self.audit = audit
        self.archive = archive
        """Where the logs of what goes are archived first (None: not archived)."""
        self._held: Optional[tuple] = None

    def gate(self, report: dict, activity: Optional[dict]) -> Optional[tuple]:
        """``(status, reason)`` when cleanup leaves the target alone, else None."""
        before, least = report["tmp_bytes"], self.options.min_tmp_bytes
        if before < least:
            return "skipped_below_threshold", "%s in %s, below min_tmp_size %s" % (
                format_bytes(before), report["tmp_dir"], format_bytes(least))
        if activity is None or activity.get("busy") is None:
            return "error", (activity or {}).get("error", "activity could not be sampled")
        if activity["busy"] and not self.force:
            return "skipped_active", "busy: %s" % "; ".join(activity["reasons"])
        return None

    def clean(self, entry: dict, target: Target, report: dict, activity: Optional[dict]) -> dict:
        """Fill ``entry`` (``new_entry``) with what went from the target, or why nothing did."""
        before = report["tmp_bytes"]
        entry.update(activity=activity, tmp_bytes_before=before, tmp_bytes_after=before,
                     untrusted_processes=report["untrusted_processes"])
        gated = self.gate(report, activity)
        if gated:
            entry.update(status=gated[0], reason=gated[1])
            return entry
        groups = candidates(report, self.options, ray_roots_inside(report))
        if report.get("spill_dirs"):
            groups += spill_candidates(report, self.options, live_node_ids(self.psutil))  # nodes running right now
        self.remove(entry, target, groups, self.policy(self.options.max_age_hours * 3600.0))
        if self.archive is not None and self.archive.keep_days and not self.dry_run:
            self._prune(entry, target)
        failed = [found for found in entry["archives"] if found["status"] == "failed"]
        if failed and self.archive.required:  # kept, said, and the run fails until they are archived
            entry.update(status="error", reason="kept %d session(s) whose logs could not be archived to %s: %s"
                         % (len(failed), self.archive.store.url, failed[0]["error"]))
        entry["tmp_bytes_after"] = before - entry["freed_bytes"]
        if activity["busy"] and entry["status"] == "cleaned":
            entry["reason"] = "forced while busy: %s" % "; ".join(activity["reasons"])
        return entry

    def policy(self, min_age_seconds: float) -> Policy:
        """What may go: older than ``min_age_seconds`` by every ``age_by`` time, and not excluded."""
        return Policy(self.now - min_age_seconds, tuple(self.options.age_by), tuple(self.options.exclude))

    def remove(self, entry: dict, target: Target, groups: list, policy: Policy, tier: Optional[str] = None) -> None:
        """Remove (or, in a dry run, decide) each candidate group; add what went and what stayed to ``entry``."""
        try:
            used, locked = self.held()
        except HoldersUnknown as exc:  # when in doubt, keep: nothing goes from this target
            entry.update(status="error", reason=exc.strerror)
            return
        guards = Guards(used, locked, socket_inodes(unix_socket_paths(target), target.tree))
        for group in groups:
            admit = None
            if self.archive is not None and group[4] in ARCHIVED:
                group, admit = self._archive_first(entry, target, group)
            self._remove_group(entry, target, group, policy, guards, tier, admit)

    def _archive_first(self, entry: dict, target: Target, group: tuple) -> tuple:
        """Archive the logs of what ``group`` would take; ``(group, admit)``: the group without the sessions whose
        archive failed (``archive_required``), and the check that keeps every file no verified archive holds."""
        root, below, select, reason, kind = group
        sub = ARCHIVED[kind]
        if kind == "old_logs":  # one live session's logs/old: (session, "logs", "old") below the Ray root
            names = [below[0]]
        else:
            try:
                fd = target.tree.open_dir(root)
                try:
                    names = sorted(name for name in os.listdir(fd) if select(name))
                finally:
                    os.close(fd)
            except OSError as exc:  # the remover reports the root it cannot open
                entry["errors"].append({"path": root, "error": describe_os_error(exc)})
                return group, None
        archiver = self.archive.archiver(target)
        proofs: dict = {}
        refused: set = set()
        for name in names:
            path = os.path.join(root, name)
            if self.dry_run:  # check mode: nothing is written anywhere, the store is not even asked
                entry["archives"].append({"session": name, "status": "would_archive", "archive": None, "files": 0,
                                          "bytes": 0, "not_archived": [], "error": None})
                continue
            done = archiver.ensure(target.tree, path, sub)
            found = done.result(self.archive.store)
            if done.status == "failed":
                if self.archive.required:
                    refused.add(name)
                    found["error"] = "%s; kept until its logs are archived" % done.error
                    entry["errors"].append({"path": path, "error": "not removed: its archive failed: %s"
                                            % done.error})
                    entry["error_count"] += 1
                else:
                    found["status"] = "removed_unarchived"
            else:
                proofs[name] = done.archived
            entry["archives"].append(found)
        if kind == "old_logs":
            proof = proofs.get(below[0])
            admit = None if proof is None else (
                lambda where, st: None if proof.covers("logs/old/" + "/".join(where), st) else "not_archived")
        else:
            def admit(where: list, st: os.stat_result) -> Optional[str]:
                proof = proofs.get(where[0])
                if proof is None or len(where) < 3 or where[1] != "logs":
                    return None  # not a session's log, or its archive was not required
                return None if proof.covers("/".join(where[1:]), st) else "not_archived"
        return (root, below, lambda name: select(name) and name not in refused, reason, kind), admit

    def _prune(self, entry: dict, target: Target) -> None:
        """Remove this target's archives older than ``archive_keep_days`` from the destination."""
        archiver = self.archive.archiver(target)
        try:
            entry["archives_pruned"] = len(prune(self.archive.store, archiver.cluster, archiver.node,
                                                 self.archive.keep_days, self.now))
        except Exception as exc:  # a store's own errors: the cleanup itself is done
            entry["errors"].append({"path": self.archive.store.describe("%s/%s/" % (archiver.cluster, archiver.node)),
                                    "error": "pruning old archives failed: %s" % exc})
            entry["error_count"] += 1

    def held(self) -> tuple:
        """``(open or mapped inodes, locked inodes)`` of every process on the machine.

        Taken per call, right before a target's removals: the freshest snapshot of what processes hold.  A dry run
        removes nothing, so it takes one snapshot for all its targets (a report of 20 containers reads ``/proc`` once).
        """
        if self._held is None or not self.dry_run:
            self._held = (used_inodes(self.psutil.pids(), strict=not self.dry_run), locked_inodes())
        return self._held

    def _remove_group(self, entry: dict, target: Target, group: tuple, policy: Policy, guards: Guards,
                      tier: Optional[str], admit=None) -> None:
        root, below, select, reason, kind = group
        if tier:  # the audit log says which tier of a pressure reclaim took it
            reason = "under pressure, tier %s: %s" % (tier, reason)
        tree = target.tree
        remover = Remover(target.host_path(root), policy, guards, self.dry_run, mountinfo=target.mountinfo(),
                          inner_root=root, below=below, tree=tree)
        removed: list = []

        def on_remove(path: str, host_path: Optional[str], freed: int, entries: int) -> None:
            if len(removed) < MAX_LISTED:
                removed.append(tree.inside(path))
            if self.audit is not None:
                self.audit.write(entry["name"], entry["kind"], tree.inside(path), host_path, freed, entries, reason)

        remover.on_remove = on_remove
        remover.admit = admit
        remover.remove_matching(select)
        if remover.host_root is not None:
            opened = {"path": tree.inside(remover.root), "host_path": remover.host_root}
            if opened not in entry["roots"]:
                entry["roots"].append(opened)
        outcome = remover.outcome
        entry["groups"].append({"action": ACTIONS[kind], "path": tree.inside(remover.root), "removed_paths": removed,
                                "freed_bytes": outcome.freed_bytes, "removed": outcome.removed,
                                "kept_by_reason": dict(outcome.kept_by_reason), "error_count": outcome.error_count,
                                "tier": tier})
        entry["freed_bytes"] += outcome.freed_bytes
        entry["removed"] += outcome.removed
        entry["removed_paths"].extend(tree.inside(p) for p in outcome.removed_paths)
        del entry["removed_paths"][MAX_LISTED:]
        entry["kept"].extend(dict(k, path=tree.inside(k["path"])) for k in outcome.kept)
        del entry["kept"][MAX_LISTED:]
        entry["kept_count"] += outcome.kept_count
        for why, count in outcome.kept_by_reason.items():
            entry["kept_by_reason"][why] = entry["kept_by_reason"].get(why, 0) + count
        entry["errors"].extend(dict(e, path=tree.inside(e["path"])) for e in outcome.errors)
        del entry["errors"][MAX_LISTED:]
        entry["error_count"] += outcome.error_count


def freeable(cleaner: TargetCleaner, target: Target, report: dict) -> dict:
    """What a cleanup of this target would do now: a dry run (``cleaner``) of ``clean_target``'s own rules and walk.

    ``{"status", "reason", "freed_bytes", "kept_count", "kept_by_reason", "suggestions"}``; each suggestion is an
    action with the bytes it would free, the paths it looks in and what it would keep and why.  Without an
    activity sample the target counts as idle (what cleanup does with it then depends on whether it is busy).
    """
    activity = report.get("activity") or {"busy": False, "reasons": []}
    entry = new_entry(target.name, "target", "cleaned", None, report["tmp_dir"])
    cleaner.clean(entry, target, report, activity)
    by_action: dict = {}
    for group in entry["groups"]:
        found = by_action.setdefault(group["action"], {"action": group["action"], "bytes": 0, "entries": 0,
                                                       "paths": [], "kept_by_reason": {}})
        found["bytes"] += group["freed_bytes"]
        found["entries"] += group["removed"]
        found["paths"] += group["removed_paths"]
        for why, count in group["kept_by_reason"].items():
            found["kept_by_reason"][why] = found["kept_by_reason"].get(why, 0) + count
    suggestions = [dict(found, kept=sum(found["kept_by_reason"].values()), by_cleanup=True)
                   for found in by_action.values() if found["entries"] or found["kept_by_reason"]]
    return {"status": entry["status"], "reason": entry["reason"], "freed_bytes": entry["freed_bytes"],
            "kept_count": entry["kept_count"], "kept_by_reason": entry["kept_by_reason"],
            "suggestions": sorted(suggestions, key=lambda item: -item["bytes"])}
