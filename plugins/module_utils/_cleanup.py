# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Activity-aware cleanup of Ray nodes and worker containers: the core of ``ray_worker_cleanup``.

For each target (the host, and each running Ray worker container reached
through ``/proc/<pid>/root``): measure it as ``ray_tmp_usage`` does, skip it
when its temp dir holds less than ``min_tmp_size`` or when it is busy (unless
``force``), else remove, under the rules of ``_remove``, the tmp dir's entries
matching ``patterns``, the stale Ray sessions, old files in ``logs/old``, and
the stale spill dirs of nodes that no longer run (``spill_candidates``).
A live session is never a candidate.  One run at a time per host, by a lock.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from ansible_collections.rayops.disk.plugins.module_utils._containers import (
    DockerUnavailable,
    NotRunning,
    container_env,
    container_target,
    docker_client,
    ray_worker_containers,
)
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._locks import CleanupLock
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import Target, unix_socket_paths
from ansible_collections.rayops.disk.plugins.module_utils._ray_spill import SPILL_DIR_RE, live_node_ids
from ansible_collections.rayops.disk.plugins.module_utils._remove import (
    AGE_FIELDS,
    Guards,
    MAX_LISTED,
    Policy,
    Remover,
    locked_inodes,
    socket_inodes,
    used_inodes,
)
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes, parse_size
from ansible_collections.rayops.disk.plugins.module_utils._usage import (
    DEFAULT_PATTERNS,
    TargetReport,
    UsageOptions,
    check_patterns,
    check_root_dir,
    host_target,
    sample_activity,
)


@dataclass
class CleanupOptions:
    """Inputs of a cleanup run, validated by ``validate()``."""

    tmp_dir: str = "/tmp"
    ray_temp_dir: Optional[str] = None
    spill_dirs: tuple = ()
    patterns: tuple = DEFAULT_PATTERNS
    exclude: tuple = ()
    max_age_hours: float = 24.0
    age_by: tuple = AGE_FIELDS
    min_tmp_size: object = "5GB"
    cpu_idle_percent: float = 5.0
    sample_seconds: float = 1.0
    clean_stale_sessions: bool = True
    clean_old_logs: bool = True
    clean_stale_spill: bool = True
    host: bool = True
    containers: bool = False
    container_name_filter: str = "ray-worker"
    container_tmp_dir: str = "/tmp"
    docker_host: Optional[str] = None
    docker_prune: bool = False
    force: bool = False
    lock_file: str = "/run/rayops/ray-cleanup.lock"
    lock_timeout: float = 30.0
    audit_log: Optional[str] = None
    ray_users: tuple = ()
    busy_titles: tuple = ()
    idle_titles: tuple = ()
    min_tmp_bytes: int = field(default=0, init=False)

    def validate(self) -> None:
        """Raise ``UsageError`` naming the first bad value and how to fix it; nothing is touched before."""
        check_root_dir("tmp_dir", self.tmp_dir)
        check_patterns(self.patterns)
        for glob in self.exclude:
            if not isinstance(glob, str) or not glob.strip():
                raise UsageError("exclude %r has an empty glob; give globs such as keep-* or */checkpoints/*"
                                 % (list(self.exclude),))
        if self.max_age_hours < 0:
            raise UsageError("max_age_hours %r is negative; use 0 (any age) or more hours" % self.max_age_hours)
        if not self.age_by or set(self.age_by) - set(AGE_FIELDS):
            raise UsageError("age_by %r must be one or more of mtime, atime, ctime" % (list(self.age_by),))
        self.min_tmp_bytes = parse_size(self.min_tmp_size, "min_tmp_size")
        if self.lock_timeout < 0:
            raise UsageError("lock_timeout %r is negative; use 0 (do not wait) or more seconds" % self.lock_timeout)
        for option in ("lock_file", "audit_log"):
            value = getattr(self, option)
            if value is not None and not os.path.isabs(value):
                raise UsageError("%s %r is not an absolute path; give the full path" % (option, value))
        self.usage_options().validate()

    def usage_options(self) -> UsageOptions:
        """The options measuring and sampling a target take from these."""
        return UsageOptions(tmp_dir=self.tmp_dir, ray_temp_dir=self.ray_temp_dir, patterns=tuple(self.patterns),
                            spill_dirs=tuple(self.spill_dirs),
                            stale_after_hours=self.max_age_hours, containers=self.containers,
                            container_name_filter=self.container_name_filter, docker_host=self.docker_host,
                            container_tmp_dir=self.container_tmp_dir,
                            activity=True, cpu_idle_percent=self.cpu_idle_percent,
                            sample_seconds=self.sample_seconds, uv_cache_dir=None, ray_users=tuple(self.ray_users),
                            busy_titles=tuple(self.busy_titles), idle_titles=tuple(self.idle_titles))


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


def candidates(report: dict, options: CleanupOptions, ray_roots_inside: set) -> list:
    """``(root, below, select, reason)`` groups to remove from, inside the target (never a live session).

    ``root`` is trusted (the tmp dir, a Ray temp root); the ``below``
    components are opened without following symlinks; ``select`` picks the
    names of the entries to remove there.
    """
    patterns = tuple(options.patterns)

    def litter(name: str) -> bool:  # a spill dir is only ever removed as one (spill_candidates)
        return (name not in ray_roots_inside and not SPILL_DIR_RE.match(name)
                and any(fnmatch.fnmatchcase(name, p) for p in patterns))

    groups = [(report["tmp_dir"], (), litter, "matches %s" % ", ".join(patterns))]  # the target's own tmp dir
    stale: dict = {}
    for session in report["sessions"]:
        root = os.path.dirname(session["path"])
        if options.clean_stale_sessions and not session["live"]:
            stale.setdefault(root, set()).add(session["name"])
        elif options.clean_old_logs:
            groups.append((root, (session["name"], "logs", "old"), lambda name: True,
                           "old log of %s" % session["name"]))
    for root, names in sorted(stale.items()):
        groups.append((root, (), names.__contains__, "stale Ray session"))
    return groups


def spill_candidates(report: dict, options: CleanupOptions, running: dict) -> list:
    """``(root, (), select, reason)`` groups of the stale spill dirs of a report (``clean_stale_spill``).

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

    return [(root, (), chooser(names), "stale spill dir of a Ray node that no longer runs here")
            for root, names in sorted(stale.items())]


class Cleanup:
    """One run over the host and its Ray worker containers."""

    def __init__(self, options: CleanupOptions, psutil, docker=None, check_mode: bool = False) -> None:
        self.options = options
        self.psutil = psutil
        self.docker = docker
        self.check_mode = check_mode
        self.now = time.time()
        self.audit = None

    def run(self) -> dict:
        """Validate, take the lock, clean every target, prune Docker; the result dict."""
        self.options.validate()
        lock = CleanupLock(self.options.lock_file, self.options.lock_timeout)
        if not lock.acquire():
            return {"changed": False, "freed_bytes": 0, "status": "skipped", "reason": lock.reason, "targets": [],
                    "docker_prune": None, "containers_error": None}
        try:
            self.audit = AuditLog(None if self.check_mode else self.options.audit_log)
            try:
                return self._run()
            finally:
                self.audit.close()
        finally:
            lock.release()

    def _run(self) -> dict:
        usage = self.options.usage_options()
        host = host_target()
        containers, containers_error = [], None
        if self.options.containers:
            try:
                containers = ray_worker_containers(usage, self.docker)
            except DockerUnavailable as exc:
                containers_error = str(exc)
        activity = sample_activity(host if self.options.host else None, containers, usage, self.psutil)
        targets = [self._clean("host", "host", host, usage, activity.get(None), None)] if self.options.host else []
        inner = usage.for_container()  # each container's own tmp dir (container_tmp_dir) and Ray temp root
        for container in containers:
            try:
                target = container_target(container)
            except NotRunning as exc:
                targets.append(self._entry(container.name, "container", "skipped_not_running", str(exc),
                                           inner.tmp_dir))
                continue
            except LookupError as exc:
                targets.append(self._entry(container.name, "container", "error", str(exc), inner.tmp_dir))
                continue
            targets.append(self._clean(container.name, "container", target, inner, activity.get(container.name),
                                       container_env(container.attrs)))
        prune = self._prune() if self.options.docker_prune and not containers_error else None
        freed = sum(t["freed_bytes"] for t in targets) + ((prune or {}).get("reclaimed_bytes") or 0)
        changed = any(t["removed"] for t in targets) or bool(prune and prune.get("changed"))
        return {"changed": changed, "freed_bytes": freed, "status": "done", "reason": None, "targets": targets,
                "docker_prune": prune, "containers_error": containers_error}

    @staticmethod
    def _entry(name: str, kind: str, status: str, reason: Optional[str], tmp_dir: Optional[str] = None) -> dict:
        return {"name": name, "kind": kind, "status": status, "reason": reason, "tmp_dir": tmp_dir,
                "tmp_bytes_before": None,
                "tmp_bytes_after": None, "freed_bytes": 0, "removed": 0, "removed_paths": [], "kept": [],
                "kept_count": 0, "kept_by_reason": {}, "errors": [], "error_count": 0, "activity": None, "roots": [],
                "untrusted_processes": []}

    def _clean(self, name: str, kind: str, target: Target, usage: UsageOptions, activity: Optional[dict],
               environ: Optional[dict]) -> dict:
        entry = self._entry(name, kind, "cleaned", None, usage.tmp_dir)  # the host's tmp_dir, a container's own
        entry["activity"] = activity
        try:
            report = TargetReport(target, usage, self.psutil, environ=environ).measure()
        except (UsageError, OSError) as exc:
            entry.update(status="error", reason=str(exc))
            return entry
        before = report["tmp_bytes"]
        entry["tmp_bytes_before"] = entry["tmp_bytes_after"] = before
        entry["untrusted_processes"] = report["untrusted_processes"]
        if before < self.options.min_tmp_bytes:
            entry.update(status="skipped_below_threshold", reason="%s in %s, below min_tmp_size %s" % (
                format_bytes(before), report["tmp_dir"], format_bytes(self.options.min_tmp_bytes)))
            return entry
        if activity is None or activity.get("busy") is None:
            entry.update(status="error", reason=(activity or {}).get("error", "activity could not be sampled"))
            return entry
        if activity["busy"] and not self.options.force:
            entry.update(status="skipped_active", reason="busy: %s" % "; ".join(activity["reasons"]))
            return entry
        inside = {os.path.basename(r) for r in report["ray_temp_dirs"]
                  if os.path.dirname(os.path.normpath(r)) == os.path.normpath(report["tmp_dir"])}
        # Taken per target, right before its removals: a fresher snapshot of what processes hold.
        guards = Guards(used_inodes(self.psutil.pids()), locked_inodes(),
                        socket_inodes(unix_socket_paths(target), target.tree))
        policy = Policy(self.now - self.options.max_age_hours * 3600.0, tuple(self.options.age_by),
                        tuple(self.options.exclude))
        groups = candidates(report, self.options, inside)
        if report.get("spill_dirs"):
            groups += spill_candidates(report, self.options, live_node_ids(self.psutil))  # nodes running right now
        for root, below, select, reason in groups:
            self._remove_group(entry, target, root, below, select, reason, policy, guards)
        entry["tmp_bytes_after"] = before - entry["freed_bytes"]
        if activity["busy"]:
            entry["reason"] = "forced while busy: %s" % "; ".join(activity["reasons"])
        return entry

    def _remove_group(self, entry: dict, target: Target, root: str, below: tuple, select, reason: str,
                      policy: Policy, guards: Guards) -> None:
        tree = target.tree
        remover = Remover(target.host_path(root), policy, guards, self.check_mode, mountinfo=target.mountinfo(),
                          inner_root=root, below=below, tree=tree)
        remover.on_remove = lambda path, host_path, freed, entries: self.audit.write(
            entry["name"], entry["kind"], tree.inside(path), host_path, freed, entries, reason)
        remover.remove_matching(select)
        if remover.host_root is not None:
            opened = {"path": tree.inside(remover.root), "host_path": remover.host_root}
            if opened not in entry["roots"]:
                entry["roots"].append(opened)
        outcome = remover.outcome
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

    def _prune(self) -> dict:
        """Stopped containers, dangling images and unused build cache: pruned, or measured in check mode.

        A failure (the daemon gone, an API error) is reported in ``error``: the cleanup itself stands.
        """
        try:
            return self._prune_now()
        except Exception as exc:  # DockerUnavailable, or the SDK's APIError and requests' errors alike
            return {"changed": False, "reclaimed_bytes": 0, "containers": 0, "images": 0, "build_cache": 0,
                    "error": "docker prune failed: %s" % exc}

    def _prune_now(self) -> dict:
        client = docker_client(self.docker, self.options.docker_host)
        if self.check_mode:
            usage = client.df()
            stopped = [c for c in usage.get("Containers") or [] if c.get("State") != "running"]
            dangling = [i for i in usage.get("Images") or [] if not i.get("RepoTags") or
                        i.get("RepoTags") == ["<none>:<none>"]]
            cache = [b for b in usage.get("BuildCache") or [] if not b.get("InUse")]
            reclaim = (sum(c.get("SizeRw") or 0 for c in stopped) + sum(i.get("Size") or 0 for i in dangling)
                       + sum(b.get("Size") or 0 for b in cache))
            return {"changed": bool(stopped or dangling or cache), "reclaimed_bytes": reclaim,
                    "containers": len(stopped), "images": len(dangling), "build_cache": len(cache), "error": None}
        containers = client.containers.prune()
        images = client.images.prune(filters={"dangling": True})
        builds = client.api.prune_builds()
        reclaim = sum((r or {}).get("SpaceReclaimed") or 0 for r in (containers, images, builds))
        counts = {"containers": len(containers.get("ContainersDeleted") or []),
                  "images": len(images.get("ImagesDeleted") or []),
                  "build_cache": len(builds.get("CachesDeleted") or [])}
        return dict(counts, changed=bool(reclaim or any(counts.values())), reclaimed_bytes=reclaim, error=None)
