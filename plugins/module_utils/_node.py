# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The runs over one node, the host and its Ray worker containers: a usage report, the idle cleanup, the reclaim.

``collect_usage`` (``ray_tmp_usage``, ``ray-maintenance monitor`` and ``check``) measures every target and says
what a cleanup would free there now, with cleanup's own rules (``_cleanup.freeable``).  ``Cleanup`` (the idle
cleanup of ``ray_worker_cleanup`` and ``ray-maintenance cleanup``) and ``PressureCleanup`` (their ``pressure``, and
each reclaim of the guard) are ``NodeRun``s: under the cleanup lock, with one outcome; ``node_run`` picks one.  All list
their targets with ``_targets.node_targets`` and enter each container right before measuring it
(``_targets.enter``), so Docker unreachable, a stopped container and activity sampling are handled once, and both
return the used % of the disk and one outcome a fleet table prints as is.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Optional

from ansible_collections.rayops.disk.plugins.module_utils._archive import open_store
from ansible_collections.rayops.disk.plugins.module_utils._cleanup import (
    ArchivePlan,
    AuditLog,
    TargetCleaner,
    freeable,
    new_entry,
)
from ansible_collections.rayops.disk.plugins.module_utils._containers import prune_docker
from ansible_collections.rayops.disk.plugins.module_utils._deleted import deleted_by_target, deleted_open_files
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._fs import filesystem_of, filesystems_under
from ansible_collections.rayops.disk.plugins.module_utils._locks import CleanupLock
from ansible_collections.rayops.disk.plugins.module_utils._optional import boto3
from ansible_collections.rayops.disk.plugins.module_utils._options import LEVELS, CleanupOptions, UsageOptions, level_for
from ansible_collections.rayops.disk.plugins.module_utils._pressure import PressureReclaim, watch_node
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import Target
from ansible_collections.rayops.disk.plugins.module_utils._targets import Slot, enter, node_targets, sample_activity
from ansible_collections.rayops.disk.plugins.module_utils._text import kept_text, suggestion_message, summary_line
from ansible_collections.rayops.disk.plugins.module_utils._units import parse_size
from ansible_collections.rayops.disk.plugins.module_utils._usage import TargetReport, beyond_cleanup, default_uv_cache_dir

OUTCOMES = ("error", "skipped_locked", "cleaned", "skipped_active", "skipped_below_threshold", "skipped_not_running",
            "no_targets")
"""A cleanup's statuses, worst first: a node's outcome is its worst target's (``would_clean`` in a dry run)."""

CONTAINER_KEYS = ("tmp_bytes", "level", "filesystem", "node_role", "untrusted_processes", "categories", "sessions",
                  "suggestions", "cleanup", "errors", "error_count", "not_measured_count", "ray_version",
                  "log_rotation", "spill_dirs", "deleted_open", "holders")
"""What a container's entry in a usage report carries of its own report."""


def collect_usage(options: UsageOptions, psutil, docker=None) -> dict:
    """The full report: the host's figures, each Ray worker container's, and what cleanup would free on each.

    ``docker`` is the Docker SDK module (needed only for containers).  Containers wanted (``containers`` true, or
    ``auto`` on a node with Docker) and Docker unreachable: the host report stands, ``containers_error`` and an
    entry of ``errors`` say why.  With ``options.activity`` every target is first sampled over one window.
    """
    options.ensure_valid()
    options = with_uv_cache(options)
    now = time.time()
    node = node_targets(options, docker, host=True)
    if options.activity:
        sample_activity(node.slots, options, psutil)
    host = node.host
    report = TargetReport(host.target, options, psutil, now=now).measure()
    report["activity"] = host.activity
    cleaner = TargetCleaner(options, psutil, now, dry_run=True)  # one snapshot of what processes hold, for all
    _add_cleanup_view(report, host, options, cleaner)
    held = deleted_open_files(psutil)  # one look at every process's open files, for every target
    report["deleted_open"] = deleted_open_on(held, host, report["filesystems"])
    report["containers"] = [_container_entry(slot, cleaner, held) for slot in node.containers]
    report["containers_error"] = node.containers_error
    if node.containers_error:
        report["errors"].append({"path": options.docker_host or "docker", "error": node.containers_error})
        report["error_count"] += 1
    report["summary"] = summary_line(report)
    return report


def _add_cleanup_view(report: dict, slot: Slot, options: UsageOptions, cleaner: TargetCleaner) -> None:
    """``cleanup`` (what a cleanup would do now) and ``suggestions`` (its actions, then what it does not take)."""
    report["cleanup"] = freeable(cleaner, slot.target, report)
    found = report["cleanup"].pop("suggestions") + beyond_cleanup(report, options)
    report["suggestions"] = [dict(item, message=suggestion_message(item, options)) for item in found]


def with_uv_cache(options: UsageOptions) -> UsageOptions:
    """The options with the uv cache to measure: ``uv_cache_dir``, else the default (``$UV_CACHE_DIR``, ~/.cache/uv)."""
    if options.uv_cache_dir is not None:
        return options
    return dataclasses.replace(options, uv_cache_dir=default_uv_cache_dir())


def deleted_open_on(held: list, slot: Slot, filesystems: list) -> dict:
    """What deleted-but-open files (``held``: one look at every process) hold on a target's filesystems: any process
    for the host, the container's own for a container."""
    paths = [fs["path"] for fs in filesystems]
    devs = {dev for _path, dev, _fs in filesystems_under(slot.target.tree, paths, skipped=(OSError,))}
    return deleted_by_target(held, slot.target.mnt_ns if slot.kind == "container" else None, devs)


def _container_entry(slot: Slot, cleaner: TargetCleaner, held: list) -> dict:
    """A container's entry: identity and status, and for a running one its report (not its own containers)."""
    enter(slot)
    options = slot.options
    container = slot.container
    entry = {"name": slot.name, "id": container.short_id, "status": container.status, "tmp_dir": options.tmp_dir,
             "tmp_bytes": None, "error": slot.reason if slot.status == "error" else None}
    if slot.activity is not None:
        entry["activity"] = slot.activity
    if slot.status is not None:
        return entry  # a stopped container's /tmp cannot be reached; its status says why
    try:
        report = TargetReport(slot.target, options, cleaner.psutil, environ=slot.environ, now=cleaner.now).measure()
        report["activity"] = slot.activity
        _add_cleanup_view(report, slot, options, cleaner)
        report["deleted_open"] = deleted_open_on(held, slot, report["filesystems"])
    except (LookupError, UsageError, OSError) as exc:
        entry["error"] = str(exc)
        return entry
    entry.update({key: report[key] for key in CONTAINER_KEYS})
    return entry


REMOVED_FROM = {"clean_tmp_patterns": "tmp_patterns", "clean_old_logs": "logs_old", "remove_stale_spill": "spilled_objects",
                "clean_rotated_logs": "logs", "clean_dead_worker_logs": "logs"}
"""The category each kind of removal takes its bytes from (stale sessions: by their own parts, ``_gone_sessions``)."""
SESSION_PARTS = {"logs_bytes": "logs", "logs_old_bytes": "logs_old", "spilled_bytes": "spilled_objects",
                 "runtime_resources_bytes": "runtime_resources"}


def after_cleanup(report: dict, entry: dict, target: Target, thresholds: dict) -> dict:
    """A target's usage report as it stands after its cleanup, from its report before and what the cleanup removed:
    no new walk (its filesystems are read again with ``statvfs``, its sessions looked at with one ``lstat`` each)."""
    found = dict(report, categories={name: dict(figures) for name, figures in report["categories"].items()})
    found["tmp_bytes"] = entry["tmp_bytes_after"] if entry["tmp_bytes_after"] is not None else report["tmp_bytes"]
    for group in entry["groups"]:
        category = REMOVED_FROM.get(group["action"])
        if category:
            _take(found["categories"][category], group["freed_bytes"], group["removed"])
    found["sessions"] = _gone_sessions(found, target)
    paths = [fs["path"] for fs in report["filesystems"]]
    fresh = {fs["path"]: fs for _path, _dev, fs in filesystems_under(target.tree, paths, skipped=(OSError,))}
    found["filesystems"] = [dict(fresh.get(fs["path"], fs)) for fs in report["filesystems"]]
    for fs in found["filesystems"]:
        fs["level"] = level_for(fs["used_percent"], thresholds)
    found["filesystem"] = found["filesystems"][0]
    found["level"] = max((fs["level"] for fs in found["filesystems"]), key=LEVELS.index)
    return found


def _take(figures: dict, freed: int, removed: int) -> None:
    figures["bytes"] = max(0, figures["bytes"] - freed)
    figures["files"] = max(0, figures["files"] - removed)


def _gone_sessions(report: dict, target: Target) -> list:
    """The sessions still there (a stale one a cleanup removed is gone: its parts leave their categories)."""
    kept = []
    for session in report["sessions"]:
        if session["live"] or _exists(target, session["path"]):
            kept.append(session)
            continue
        parts = 0
        for key, category in SESSION_PARTS.items():
            _take(report["categories"][category], session[key], 0)
            parts += session[key]
        _take(report["categories"]["stale_sessions"], session["bytes"] - parts, session["files"])
    return kept


def _exists(target: Target, path: str) -> bool:
    try:
        target.tree.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def disk_figures(path: str) -> Optional[dict]:
    """The used % of the filesystem holding ``path`` as ``df`` computes it, or None when it cannot be read."""
    try:
        return filesystem_of(path)
    except OSError:
        return None


class NodeRun:
    """A run over the host and its Ray worker containers under the cleanup lock: the idle ``Cleanup`` or the
    ``PressureCleanup``, each its own ``_run``; validation, the lock, the audit log, the outcome and the disk's used %
    are this class's."""

    def __init__(self, options: CleanupOptions, psutil, docker=None, check_mode: bool = False,
                 usage: Optional[UsageOptions] = None) -> None:
        self.options = options
        self.psutil = psutil
        self.docker = docker
        self.check_mode = check_mode
        self.now = time.time()
        self.usage = usage
        """The options targets are measured with (the CLI's: its uv cache and scan workers, so the usage metrics it
        writes from this run match a ``monitor``'s); default ``options.usage_options()``."""

    def run(self) -> dict:
        """Validate, take the lock, run; the result, with its outcome and disk."""
        self.options.ensure_valid()
        disk_path = self.options.disk or self.options.tmp_dir
        before = disk_figures(disk_path)
        lock = CleanupLock(self.options.lock_file, self.options.lock_timeout)
        if not lock.acquire():
            result = {"changed": False, "freed_bytes": 0, "status": "skipped", "reason": lock.reason, "targets": [],
                      "docker_prune": None, "containers_error": None, "pressure": None}
        else:
            try:
                audit = AuditLog(None if self.check_mode else self.options.audit_log)
                try:
                    result = self._run(self._cleaner(audit))
                finally:
                    audit.close()
            finally:
                lock.release()
        result["outcome"], result["outcome_reason"] = outcome(result, self.check_mode)
        result["disk"] = self._disk(disk_path, before, result["freed_bytes"])
        return result

    def _cleaner(self, audit: AuditLog) -> TargetCleaner:
        usage = self.options.usage_options() if self.usage is None else with_uv_cache(self.usage)
        return TargetCleaner(usage, self.psutil, self.now, self.check_mode, self.options.force, audit,
                             self.archive_plan())

    def archive_plan(self, budget: Optional[float] = None) -> Optional[ArchivePlan]:
        """Where this run archives before it removes (``archive_dest``), or None; ``budget``: seconds it may take."""
        options = self.options
        if options.archive_dest is None:
            return None
        store = open_store(options.archive_dest, options.archive_endpoint_url, boto3)
        bandwidth = (parse_size(options.archive_bandwidth_limit, "archive_bandwidth_limit")
                     if options.archive_bandwidth_limit is not None else None)
        return ArchivePlan(store, options.archive_cluster, options.archive_node or socket.gethostname(),
                           options.archive_required, options.archive_keep_days, bandwidth,
                           None if budget is None else time.monotonic() + budget)

    def _run(self, cleaner: TargetCleaner) -> dict:
        raise NotImplementedError

    def usage_after(self, thresholds: dict) -> Optional[dict]:
        """The node's usage report after this run from its own walks, or None: then a report must measure it."""
        return None

    def _disk(self, path: str, before: Optional[dict], freed: int) -> dict:
        """Used % of the disk before and after; in a dry run "after" is before minus what would be freed."""
        found = {"path": path, "used_percent_before": None, "used_percent_after": None, "projected": self.check_mode}
        if before is None:
            return found
        found["used_percent_before"] = before["used_percent"]
        if self.check_mode:
            usable = before["used_bytes"] + before["free_bytes"]
            used = max(0, before["used_bytes"] - freed)
            found["used_percent_after"] = round(100.0 * used / usable, 1) if usable else 0.0
        else:
            after = disk_figures(path)
            found["used_percent_after"] = after["used_percent"] if after else None
        return found


class PressureCleanup(NodeRun):
    """The pressure reclaim once, now (``_pressure.PressureReclaim``): ``cleanup --pressure``, ``pressure: true`` and
    each reclaim of the guard, which hands it the targets as it just read them (``watched``)."""

    def __init__(self, options: CleanupOptions, psutil, docker=None, check_mode: bool = False,
                 usage: Optional[UsageOptions] = None, watched: Optional[list] = None) -> None:
        super().__init__(options, psutil, docker, check_mode, usage)
        self.watched = watched
        """The targets as the guard just read them (``_pressure.Watched``), reclaimed without listing or reading them
        again; None lists and reads them now."""

    def archive_plan(self, budget: Optional[float] = None) -> Optional[ArchivePlan]:
        """A reclaim archives within ``archive_budget_seconds``: what is not archived by then is kept."""
        return super().archive_plan(self.options.archive_budget_seconds if budget is None else budget)

    def _run(self, cleaner: TargetCleaner) -> dict:
        reclaim = PressureReclaim(self.options, self.psutil, self.docker, self.check_mode, cleaner)
        if self.watched is not None:
            return reclaim.run(self.watched)
        node = node_targets(cleaner.options, self.docker, host=self.options.host)
        watched, entries = watch_node(node.slots, self.psutil)
        return reclaim.run(watched, entries, node.containers_error)


class Cleanup(NodeRun):
    """The idle cleanup: every target measured, its activity sampled, cleaned by cleanup's rules (``TargetCleaner``),
    then Docker pruned when asked."""

    def __init__(self, options: CleanupOptions, psutil, docker=None, check_mode: bool = False,
                 usage: Optional[UsageOptions] = None) -> None:
        super().__init__(options, psutil, docker, check_mode, usage)
        self.measured: list = []
        """``(slot, report, entry)`` per target it measured: what ``usage_after`` is made of."""
        self.containers_error: Optional[str] = None

    def _run(self, cleaner: TargetCleaner) -> dict:
        node = node_targets(cleaner.options, self.docker, host=self.options.host)
        self.containers_error = node.containers_error
        sample_activity(node.slots, cleaner.options, self.psutil)
        targets = [self._target(slot, cleaner) for slot in node.slots]
        prune = None
        if self.options.docker_prune and not node.containers_error:
            prune = prune_docker(self.docker, self.options.docker_host, self.check_mode)
        freed = sum(t["freed_bytes"] for t in targets) + ((prune or {}).get("reclaimed_bytes") or 0)
        changed = any(t["removed"] for t in targets) or bool(prune and prune.get("changed"))
        return {"changed": changed, "freed_bytes": freed, "status": "done", "reason": None, "targets": targets,
                "docker_prune": prune, "containers_error": node.containers_error, "pressure": None}

    def _target(self, slot: Slot, cleaner: TargetCleaner) -> dict:
        """Measure one target with its own options, then clean it (``TargetCleaner``); its entry in the result."""
        options = slot.options
        enter(slot)
        if slot.status is not None:
            status = "skipped_not_running" if slot.status == "not_running" else "error"
            return new_entry(slot.name, slot.kind, status, slot.reason, options.tmp_dir)
        entry = new_entry(slot.name, slot.kind, "cleaned", None, options.tmp_dir)
        entry["activity"] = slot.activity
        try:
            report = TargetReport(slot.target, options, self.psutil, environ=slot.environ).measure()
        except (UsageError, OSError) as exc:
            entry.update(status="error", reason=str(exc))
            return entry
        cleaner.clean(entry, slot.target, report, slot.activity)
        self.measured.append((slot, report, entry))
        return entry

    def usage_after(self, thresholds: dict) -> Optional[dict]:
        """The node's usage report after this idle cleanup, for the usage metrics, from the cleanup's own walks
        (``after_cleanup``: measured once, removed once, nothing walked again); None when the host was not measured
        (``host: false``, an error, a pressure reclaim): then a report must measure it."""
        host = next(((slot, report, entry) for slot, report, entry in self.measured if slot.kind == "host"), None)
        if host is None:
            return None
        held = deleted_open_files(self.psutil)
        found = after_cleanup(host[1], host[2], host[0].target, thresholds)
        found["deleted_open"] = deleted_open_on(held, host[0], found["filesystems"])
        found["containers"] = []
        for slot, report, entry in self.measured:
            if slot.kind == "container":
                after = after_cleanup(report, entry, slot.target, thresholds)
                after["deleted_open"] = deleted_open_on(held, slot, after["filesystems"])
                found["containers"].append(dict({key: after[key] for key in CONTAINER_KEYS if key in after},
                                                name=slot.name, status="running", error=None))
        found["containers_error"] = self.containers_error
        return found


def outcome(result: dict, check_mode: bool) -> tuple:
    """``(status, reason)`` of a whole cleanup: its worst target's, an unreachable Docker, or a held lock."""
    if result["status"] == "skipped":
        return "skipped_locked", result["reason"]
    if result["containers_error"]:
        return "error", result["containers_error"]
    prune_error = (result["docker_prune"] or {}).get("error")
    worst = min((t for t in result["targets"]), key=lambda t: OUTCOMES.index(t["status"]), default=None)
    if prune_error and (worst is None or OUTCOMES.index(worst["status"]) > 0):
        return "error", prune_error
    if worst is None:
        return "no_targets", "no host (host: false) and no container named like container_name_filter"
    status = "would_clean" if check_mode and worst["status"] == "cleaned" else worst["status"]
    if worst["status"] == "cleaned" and not worst["reason"]:
        kept: dict = {}
        for target in result["targets"]:
            for why, count in target["kept_by_reason"].items():
                kept[why] = kept.get(why, 0) + count
        return status, kept_text(kept) or None
    return status, ("%s: %s" % (worst["name"], worst["reason"])) if worst["reason"] else None


def node_run(options: CleanupOptions, psutil, docker=None, check_mode: bool = False,
             usage: Optional[UsageOptions] = None) -> NodeRun:
    """The run ``options`` ask for: the pressure reclaim with ``pressure``, else the idle cleanup."""
    kind = PressureCleanup if options.pressure else Cleanup
    return kind(options, psutil, docker, check_mode, usage)
