# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every option of the modules and the node CLI, declared once, and their validation.

``OPTIONS`` is the one table: name, kind, default, a one-line description, an example (shown in fix
messages), choices.  From it come the modules' ``argument_spec`` (``argument_spec(names)``), the
defaults of ``UsageOptions`` and ``CleanupOptions``, and the keys, kinds and defaults of the
``ray-maintenance`` config (``config_keys()``, ``config_defaults()``).  Unit tests hold the modules'
DOCUMENTATION, the doc fragments and the role's defaults to it.

Base layer: imports only ``_errors``, ``_units``, ``_fs`` and the standard library.
Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import pwd
from dataclasses import dataclass, field
from typing import Any, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._fs import is_filesystem_root
from ansible_collections.rayops.disk.plugins.module_utils._units import parse_size

DEFAULT_PATTERNS = ("ray_tmp_*", "pip-*", "tmp*")
LEVELS = ("ok", "info", "warning", "critical")
AGE_FIELDS = ("mtime", "atime", "ctime")
DEFAULT_THRESHOLDS = {"info": 80.0, "warning": 90.0, "critical": 95.0}

KINDS = {
    # kind: (Ansible type, list elements, what a value of it is, for messages)
    "path": ("path", None, "a string"),
    "text": ("str", None, "a string"),
    "names": ("list", "str", "a list of strings"),
    "paths": ("list", "path", "a list of strings"),
    "number": ("float", None, "a number"),
    "count": ("int", None, "a whole number"),
    "bool": ("bool", None, "true or false"),
    "switch": ("raw", None, "true, false or \"auto\""),
    "size": ("str", None, "a size (a string such as \"5GB\", or bytes)"),
    "thresholds": ("dict", None, "an object"),
}
"""``path`` is a path on the host (Ansible expands ``~`` in it); ``text`` is taken as given (a path inside a
container is ``text``: it must not be expanded on the host)."""


@dataclass(frozen=True)
class Option:
    """One option: its name, kind (a key of ``KINDS``), default (None: unset), what it is, an example value."""

    name: str
    kind: str
    default: Any
    description: str
    example: Any
    choices: tuple = ()
    config: bool = True
    """Whether it is a key of the ``ray-maintenance`` config (else a module option only)."""
    aliases: tuple = ()
    """Other names the modules take for it (names of earlier releases)."""

    @property
    def nullable(self) -> bool:
        """Whether it may be unset (its default is None; ``""`` and null unset it in the config)."""
        return self.default is None


OPTIONS = {option.name: option for option in (
    Option("tmp_dir", "path", "/tmp", "the host's temp directory, measured and cleaned", "/tmp"),
    Option("ray_temp_dir", "path", None, "Ray's temp root on the host (default: discovered)", "/tmp/ray"),
    Option("patterns", "names", DEFAULT_PATTERNS, "file name globs of litter directly in the temp dir",
           list(DEFAULT_PATTERNS)),
    Option("exclude", "names", (), "globs (name, or path below the root) never removed", ["*/checkpoints/*"]),
    Option("max_age_hours", "number", 24.0, "only what is older is removed (0: any age)", 24,
           aliases=("stale_after_hours",)),
    Option("age_by", "names", AGE_FIELDS, "the times that must all be older than max_age_hours",
           list(AGE_FIELDS), choices=AGE_FIELDS),
    Option("min_tmp_size", "size", "5GB", "a target whose temp dir holds less is left alone (0: always clean)",
           "5GB"),
    Option("cpu_idle_percent", "number", 5.0, "CPU (percent of one core) at or above which a target is busy", 5),
    Option("sample_seconds", "number", 1.0, "the CPU sample window, more than 0 and at most 300", 1),
    Option("busy_titles", "names", (), "process title globs that always mean busy", ["ray::ServeReplica*"]),
    Option("idle_titles", "names", (), "process title globs that never mean busy", ["ray::Poller*"]),
    Option("clean_stale_sessions", "bool", True, "remove Ray sessions no live Ray process uses", True),
    Option("clean_old_logs", "bool", True, "remove old files in logs/old of every session", True),
    Option("clean_stale_spill", "bool", True, "remove spill dirs of Ray nodes that no longer run here", True),
    Option("spill_dirs", "paths", (), "directories Ray spills objects to, besides those its processes name",
           ["/mnt/spill"]),
    Option("host", "bool", True, "clean the host itself", True),
    Option("containers", "switch", "auto", "also the Docker containers named like container_name_filter (auto: "
           "when the node has Docker, /var/run/docker.sock or docker_host; then Docker unreachable is an error)",
           "auto"),
    Option("container_name_filter", "text", "ray-worker", "Docker's name filter for the worker containers",
           "ray-worker"),
    Option("container_tmp_dir", "text", "/tmp", "the temp directory inside each container, as it sees it", "/tmp"),
    Option("docker_host", "text", None, "the Docker daemon (default: $DOCKER_HOST, else the local socket)",
           "unix:///var/run/docker.sock"),
    Option("docker_prune", "bool", False, "after cleaning, prune stopped containers, dangling images, build cache",
           False),
    Option("force", "bool", False, "clean busy targets too (the safety rules still apply)", False),
    Option("thresholds", "thresholds", DEFAULT_THRESHOLDS, "used percentages for the levels info, warning, critical",
           {"info": 80, "warning": 90, "critical": 95}),
    Option("lock_file", "path", "/run/rayops/ray-cleanup.lock", "the lock one cleanup run holds at a time",
           "/run/rayops/ray-cleanup.lock"),
    Option("lock_timeout", "number", 30.0, "seconds to wait for another run's lock", 30),
    Option("audit_log", "path", None, "a JSON line per entry removed is appended here",
           "/var/log/rayops/cleanup-audit.jsonl"),
    Option("archive_dest", "text", None, "archive the logs of stale sessions and old logs here before cleanup "
           "removes them: a directory (local or NFS), s3://BUCKET/PREFIX or hdfs://... (unset: no archive)",
           "s3://ray-logs/archive"),
    Option("archive_endpoint_url", "text", None, "the S3 endpoint of an S3-compatible store (default: AWS)",
           "https://minio.example:9000"),
    Option("archive_cluster", "text", "ray", "the cluster's name: archives go to <dest>/<cluster>/<node>/<session>/",
           "prod-ray"),
    Option("archive_node", "text", None, "this node's name in the archive paths (default: its host name; a "
           "container's sessions go under <node>-<container>)", "ray-node-80"),
    Option("archive_required", "bool", True, "keep what could not be archived and verified (false: remove it "
           "anyway, and say so)", True),
    Option("archive_keep_days", "number", None, "remove this node's archives older than this many days from the "
           "destination after each cleanup (unset: keep them)", 30),
    Option("archive_bandwidth_limit", "size", None, "at most this many bytes a second to the destination (unset: "
           "no limit)", "20MB"),
    Option("archive_budget_seconds", "number", 60.0, "under pressure, the seconds a reclaim may spend archiving; "
           "what is not archived by then is kept and the next tier runs", 60),
    Option("log_file", "path", None, "one line per run is logged here (ray-maintenance only)",
           "/var/log/rayops/ray-maintenance.log"),
    Option("metrics_dir", "path", None, "node_exporter's textfile directory (ray-maintenance only)",
           "/var/lib/prometheus/node-exporter"),
    Option("scan_workers", "count", None, "processes scanning side by side (default: usable CPUs, at most 4)", 2),
    Option("uv_cache_dir", "path", None, "the uv cache to measure (default: $UV_CACHE_DIR, else ~/.cache/uv)",
           "/home/apiuser/.cache/uv"),
    Option("ray_users", "names", (), "users whose Ray processes are trusted, besides root", ["apiuser"]),
    Option("rotation_max_bytes", "size", None, "the RAY_ROTATION_MAX_BYTES Ray should run with", "1MB"),
    Option("rotation_backup_count", "count", None, "the RAY_ROTATION_BACKUP_COUNT Ray should run with", 2),
    Option("disk", "path", None, "the directory whose filesystem's used % is reported before and after "
           "(default: tmp_dir)", "/var/lib/docker", config=False),
    Option("activity", "bool", False, "also tell whether each target is busy", True, config=False),
    Option("pressure", "bool", False, "run the pressure reclaim now, as the guard does at pressure_high_percent: its "
           "tiers, cheapest harm first, until below pressure_low_percent (instead of the idle cleanup)", True,
           config=False),
    Option("pressure_high_percent", "number", 90.0, "used % of a watched filesystem's bytes at or above which the "
           "guard reclaims (below Ray's own 95)", 90),
    Option("pressure_inodes_high_percent", "number", 90.0, "used % of a watched filesystem's inodes at or above "
           "which the guard reclaims", 90),
    Option("pressure_low_percent", "number", 80.0, "a reclaim stops once bytes and inodes are below this used %",
           80),
    Option("pressure_max_age_hours", "number", 1.0, "under pressure, pattern matches older than this go, from "
           "busy targets too", 1),
    Option("pressure_truncate_deleted_logs", "bool", False, "under pressure, empty Ray log files that are deleted "
           "but still open (never another file)", False),
    Option("watch_interval_seconds", "number", 5.0, "seconds between two looks of the guard (ray-maintenance "
           "watch) at its filesystems, more than 0 and at most 60", 5),
    Option("ship_paths", "names", (), "absolute path globs of the logs ray-maintenance ship copies to ship_dest "
           "(on the Ray head, or where no Ray runs)", ["/app/logs/*.log"]),
    Option("ship_dest", "text", None, "where ship copies them, keeping their paths: a directory (local or NFS), "
           "s3://BUCKET/PREFIX or hdfs://... (unset: nothing shipped)", "hdfs://namenode:8020/logs"),
    Option("ship_state", "path", "/var/lib/rayops/ship-state.json", "what ship shipped (path, inode, size, mtime, "
           "SHA-256), so that a run uploads only new or changed files", "/var/lib/rayops/ship-state.json"),
    Option("ship_disabled", "bool", False, "ship nothing on this node (as RAY_DISABLE_HDFS_COPY=true does)", False),
)}
"""The options, in the order the CLI lists its config keys."""


def _module_default(option: Option) -> Any:
    if isinstance(option.default, tuple):
        return list(option.default)
    return option.default


def argument_spec(names) -> dict:
    """The ``argument_spec`` of a module taking the options ``names``."""
    spec = {}
    for name in names:
        option = OPTIONS[name]
        ansible_type, elements, _what = KINDS[option.kind]
        entry: dict = {"type": ansible_type}
        if elements:
            entry["elements"] = elements
        if option.choices:
            entry["choices"] = list(option.choices)
        if option.aliases:
            entry["aliases"] = list(option.aliases)
        if option.kind == "thresholds":  # each level its own default, whichever are given
            entry.update(default={}, apply_defaults=True, options={
                level: {"type": "float", "default": percent} for level, percent in option.default.items()})
        elif option.default is not None:
            entry["default"] = _module_default(option)
        spec[name] = entry
    return spec


def config_keys() -> dict:
    """The ``ray-maintenance`` config keys: name to ``Option``, in the table's order."""
    return {name: option for name, option in OPTIONS.items() if option.config}


def config_defaults() -> dict:
    """Every config key with its built-in default (a fresh copy of a mutable one)."""
    return {name: dict(option.default) if isinstance(option.default, dict) else option.default
            for name, option in config_keys().items()}


def option_names(options_class) -> tuple:
    """The options an options dataclass takes (its init fields): what its module's ``argument_spec`` holds."""
    return tuple(f.name for f in dataclasses.fields(options_class) if f.init)


def option_values(values: dict) -> dict:
    """``values`` (a module's params, a config) with every list option as a tuple, as the options dataclasses take.

    An alias (Ansible keeps it beside the option's own name in a module's params) is left out.
    """
    aliases = {alias for option in OPTIONS.values() for alias in option.aliases}
    return {name: tuple(value) if name in OPTIONS and KINDS[OPTIONS[name].kind][0] == "list" and value is not None
            else value for name, value in values.items() if name not in aliases}


def _default(name: str) -> Any:
    """The table's default of ``name``, for a dataclass field (an immutable one: a dict is the fields' own)."""
    value = OPTIONS[name].default
    if isinstance(value, (dict, list)):
        raise TypeError("%s: a mutable default needs field(default_factory=...)" % name)
    return value


def _thresholds() -> dict:
    """A fresh copy of the default thresholds, per options object."""
    return dict(OPTIONS["thresholds"].default)


@dataclass
class TargetOptions:
    """What the usage report and the cleanup share: where to look, what cleanup takes, and busy or idle."""

    tmp_dir: str = _default("tmp_dir")
    ray_temp_dir: Optional[str] = _default("ray_temp_dir")
    spill_dirs: tuple = _default("spill_dirs")
    patterns: tuple = _default("patterns")
    exclude: tuple = _default("exclude")
    max_age_hours: float = _default("max_age_hours")
    age_by: tuple = _default("age_by")
    min_tmp_size: object = _default("min_tmp_size")
    clean_stale_sessions: bool = _default("clean_stale_sessions")
    clean_old_logs: bool = _default("clean_old_logs")
    clean_stale_spill: bool = _default("clean_stale_spill")
    containers: Any = _default("containers")
    container_name_filter: str = _default("container_name_filter")
    container_tmp_dir: str = _default("container_tmp_dir")
    docker_host: Optional[str] = _default("docker_host")
    cpu_idle_percent: float = _default("cpu_idle_percent")
    sample_seconds: float = _default("sample_seconds")
    ray_users: tuple = _default("ray_users")
    busy_titles: tuple = _default("busy_titles")
    idle_titles: tuple = _default("idle_titles")
    validated: bool = field(default=False, init=False, repr=False, compare=False)
    """Set by ``validate()``: a run validates its options once, not on every reclaim of a guard that runs for days."""

    def ensure_valid(self) -> None:
        """``validate()`` unless done already (options are not changed after: ``dataclasses.replace`` makes new ones)."""
        if not self.validated:
            self.validate()
            self.validated = True

    def validate(self) -> None:
        """Raise ``UsageError`` naming the first bad value and how to fix it."""
        raise NotImplementedError


@dataclass
class UsageOptions(TargetOptions):
    """Inputs of a usage report (``ray_tmp_usage``), validated by ``validate()``."""

    thresholds: dict = field(default_factory=_thresholds)
    uv_cache_dir: Optional[str] = _default("uv_cache_dir")
    scan_workers: Optional[int] = _default("scan_workers")
    activity: bool = _default("activity")
    rotation_max_bytes: Any = _default("rotation_max_bytes")
    rotation_backup_count: Optional[int] = _default("rotation_backup_count")

    @property
    def ray_uids(self) -> frozenset:
        """The uids of ``ray_users``: whose Ray processes are trusted, besides root's."""
        return uids_of_users(self.ray_users)

    @property
    def min_tmp_bytes(self) -> int:
        """``min_tmp_size`` in bytes."""
        return parse_size(self.min_tmp_size, "min_tmp_size")

    def for_container(self) -> "UsageOptions":
        """The options a container is measured with: its own temp dir, ``container_tmp_dir``, as ``tmp_dir``.

        Ray's temp root is found inside the container (``ray_temp_dir``, ``spill_dirs`` and the uv cache are the
        host's).
        """
        return dataclasses.replace(self, tmp_dir=self.container_tmp_dir, ray_temp_dir=None, uv_cache_dir=None,
                                   containers=False, spill_dirs=())

    def validate(self) -> None:
        """Raise ``UsageError`` naming the first bad value and how to fix it."""
        check_root_dir("tmp_dir", self.tmp_dir)
        check_container_dir("container_tmp_dir", self.container_tmp_dir)
        uids_of_users(self.ray_users)
        if self.ray_temp_dir is not None:
            if not os.path.isabs(self.ray_temp_dir):
                raise UsageError("ray_temp_dir %r is not an absolute path; give the full path of Ray's temp root, "
                                 "for example /tmp/ray" % self.ray_temp_dir)
            if is_filesystem_root(self.ray_temp_dir):
                raise UsageError("ray_temp_dir %r would measure the whole filesystem; give Ray's temp root, "
                                 "for example /tmp/ray" % self.ray_temp_dir)
        check_spill_dirs(self.spill_dirs)
        if self.uv_cache_dir is not None and not os.path.isabs(self.uv_cache_dir):
            raise UsageError("uv_cache_dir %r is not an absolute path; give the full path, "
                             "for example /root/.cache/uv" % self.uv_cache_dir)
        check_patterns(self.patterns)
        check_switch("containers", self.containers)
        name_filter = self.container_name_filter
        if not isinstance(name_filter, str) or not name_filter.strip() or \
                any(c.isspace() or ord(c) < 32 for c in name_filter):
            raise UsageError("container_name_filter %r would match every container or none; give Docker's name "
                             "filter of the Ray workers, without spaces, for example ray-worker" % (name_filter,))
        check_cleanup_rules(self)
        check_thresholds(self.thresholds)
        if self.scan_workers is not None and self.scan_workers < 1:
            raise UsageError("scan_workers %r must be 1 or more (1 scans in this process only)" % self.scan_workers)
        if self.cpu_idle_percent < 0:
            raise UsageError("cpu_idle_percent %r is negative; give the percent of one core below which a "
                             "worker is idle, for example 5" % self.cpu_idle_percent)
        check_title_globs("busy_titles", self.busy_titles)
        check_title_globs("idle_titles", self.idle_titles)
        if not 0 < self.sample_seconds <= 300:
            raise UsageError("sample_seconds %r must be more than 0 and at most 300; for example 1"
                             % self.sample_seconds)
        if self.rotation_max_bytes is not None:
            parse_size(self.rotation_max_bytes, "rotation_max_bytes")
        count = self.rotation_backup_count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise UsageError("rotation_backup_count %r must be a whole number of 1 or more, as ray_log_config writes "
                             "RAY_ROTATION_BACKUP_COUNT; for example 2" % (count,))


@dataclass
class CleanupOptions(TargetOptions):
    """Inputs of a cleanup run (``ray_worker_cleanup``), validated by ``validate()``."""

    host: bool = _default("host")
    docker_prune: bool = _default("docker_prune")
    force: bool = _default("force")
    lock_file: str = _default("lock_file")
    lock_timeout: float = _default("lock_timeout")
    audit_log: Optional[str] = _default("audit_log")
    disk: Optional[str] = _default("disk")
    pressure: bool = _default("pressure")
    pressure_high_percent: float = _default("pressure_high_percent")
    pressure_inodes_high_percent: float = _default("pressure_inodes_high_percent")
    pressure_low_percent: float = _default("pressure_low_percent")
    pressure_max_age_hours: float = _default("pressure_max_age_hours")
    pressure_truncate_deleted_logs: bool = _default("pressure_truncate_deleted_logs")
    archive_dest: Optional[str] = _default("archive_dest")
    archive_endpoint_url: Optional[str] = _default("archive_endpoint_url")
    archive_cluster: str = _default("archive_cluster")
    archive_node: Optional[str] = _default("archive_node")
    archive_required: bool = _default("archive_required")
    archive_keep_days: Optional[float] = _default("archive_keep_days")
    archive_bandwidth_limit: Any = _default("archive_bandwidth_limit")
    archive_budget_seconds: float = _default("archive_budget_seconds")
    min_tmp_bytes: int = field(default=0, init=False)

    def validate(self) -> None:
        """Raise ``UsageError`` naming the first bad value and how to fix it; nothing is touched before."""
        check_root_dir("tmp_dir", self.tmp_dir)
        check_patterns(self.patterns)
        check_cleanup_rules(self)
        self.min_tmp_bytes = parse_size(self.min_tmp_size, "min_tmp_size")
        if self.lock_timeout < 0:
            raise UsageError("lock_timeout %r is negative; use 0 (do not wait) or more seconds" % self.lock_timeout)
        for option in ("lock_file", "audit_log", "disk"):
            value = getattr(self, option)
            if value is not None and not os.path.isabs(value):
                raise UsageError("%s %r is not an absolute path; give the full path, for example %s"
                                 % (option, value, OPTIONS[option].example))
        check_pressure_marks(self)
        check_archive(self)
        self.usage_options().validate()

    def usage_options(self) -> UsageOptions:
        """The options measuring and sampling a target take from these."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(TargetOptions) if f.init}
        return UsageOptions(activity=True, uv_cache_dir=None, **shared)


def check_cleanup_rules(options) -> None:
    """What may go: ``exclude`` globs, ``max_age_hours``, ``age_by`` and ``min_tmp_size``."""
    for glob in options.exclude:
        if not isinstance(glob, str) or not glob.strip():
            raise UsageError("exclude %r has an empty glob; give globs such as keep-* or */checkpoints/*"
                             % (list(options.exclude),))
    if options.max_age_hours < 0:
        raise UsageError("max_age_hours %r is negative; use 0 (any age) or more hours" % options.max_age_hours)
    if not options.age_by or set(options.age_by) - set(AGE_FIELDS):
        raise UsageError("age_by %r must be one or more of mtime, atime, ctime" % (list(options.age_by),))
    parse_size(options.min_tmp_size, "min_tmp_size")


def check_path_name(name: str, value: Any) -> None:
    """A name that is one component of the keys in a store (the cluster, the node); None is unset."""
    if value is not None and (not isinstance(value, str) or not value.strip() or value in (".", "..")
                              or any(c in value for c in "/\\:") or any(c.isspace() or ord(c) < 32 for c in value)):
        raise UsageError("%s %r must be a plain name without /, \\, :, spaces or control characters (a component "
                         "of the paths in the store); for example %s" % (name, value, OPTIONS[name].example))


def check_archive(options) -> None:
    """The archive's names, retention, bandwidth and budget (the destination itself is opened by the run)."""
    dest = options.archive_dest
    if dest is None:
        return
    if not isinstance(dest, str) or not (dest.startswith(("s3://", "hdfs://")) or os.path.isabs(dest)):
        raise UsageError("archive_dest %r is not an absolute directory, s3://BUCKET/PREFIX or hdfs://...; for "
                         "example /mnt/nfs/ray-archive" % (dest,))
    for name in ("archive_cluster", "archive_node"):
        check_path_name(name, getattr(options, name))
    days = options.archive_keep_days
    if days is not None and not days > 0:
        raise UsageError("archive_keep_days %r must be more than 0 days (unset: keep every archive); for example 30"
                         % (days,))
    if options.archive_bandwidth_limit is not None and parse_size(options.archive_bandwidth_limit,
                                                                  "archive_bandwidth_limit") <= 0:
        raise UsageError("archive_bandwidth_limit %r must be more than 0 bytes a second (unset: no limit); for "
                         "example 20MB" % (options.archive_bandwidth_limit,))
    if not options.archive_budget_seconds > 0:
        raise UsageError("archive_budget_seconds %r must be more than 0; for example 60"
                         % (options.archive_budget_seconds,))


def check_pressure_marks(options) -> None:
    """The guard's marks: percentages in 0-100, the low mark below both high ones, a non-negative age."""
    for name in ("pressure_high_percent", "pressure_inodes_high_percent", "pressure_low_percent"):
        value = getattr(options, name)
        if not 0 < value <= 100:
            raise UsageError("%s %r is outside 0-100; give a used percentage, for example %s: %s"
                             % (name, value, name, OPTIONS[name].example))
    low = options.pressure_low_percent
    for name in ("pressure_high_percent", "pressure_inodes_high_percent"):
        if low >= getattr(options, name):
            raise UsageError("pressure_low_percent %r must be below %s %r, or a reclaim would never stop; for "
                             "example 80 and 90" % (low, name, getattr(options, name)))
    if options.pressure_max_age_hours < 0:
        raise UsageError("pressure_max_age_hours %r is negative; use 0 (any age) or more hours, for example 1"
                         % options.pressure_max_age_hours)


def check_watch_interval(seconds: float) -> None:
    """The guard looks at least once a minute (the issue's reaction time needs 10 s or less)."""
    if not 0 < seconds <= 60:
        raise UsageError("watch_interval_seconds %r must be more than 0 and at most 60; for example 5" % (seconds,))


def switch(value: Any) -> Any:
    """``True``, ``False`` or ``"auto"`` from a bool or its usual spellings; None when it is none of them."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    return {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False,
            "0": False}.get(text)


def check_switch(option: str, value: Any) -> None:
    """A ``switch`` option is true, false or auto."""
    if switch(value) is None:
        raise UsageError("%s %r is not true, false or auto; for example %s: auto" % (option, value, option))


def check_root_dir(option: str, path: str) -> None:
    """A directory to work in must be absolute, exist, be a real directory and not be ``/``."""
    if not path or not os.path.isabs(path):
        raise UsageError("%s %r is not an absolute path; give the full path, for example /tmp" % (option, path))
    if is_filesystem_root(path):
        raise UsageError("%s %r is the root of the filesystem; give the temp directory, for example /tmp"
                         % (option, path))
    if os.path.islink(path):
        raise UsageError("%s %r is a symlink to %r; give the real directory instead"
                         % (option, path, os.path.realpath(path)))
    if not os.path.lexists(path):
        raise UsageError("%s %r does not exist; create it or give the temp directory Ray uses" % (option, path))
    if not os.path.isdir(path):
        raise UsageError("%s %r is not a directory; give a directory such as /tmp" % (option, path))


def check_container_dir(option: str, path: str) -> None:
    """A directory inside the containers must be absolute and not ``/``; each container is asked whether it has it."""
    if not path or not os.path.isabs(path):
        raise UsageError("%s %r is not an absolute path; give the full path as the containers see it, for example /tmp"
                         % (option, path))
    if is_filesystem_root(path):
        raise UsageError("%s %r is the root of the containers' filesystem; give their temp directory, for example "
                         "/tmp" % (option, path))


def uids_of_users(users: Any) -> frozenset:
    """The uids of ``ray_users`` (names, or numeric uids as strings): whose Ray processes are trusted, with root."""
    uids = set()
    for user in users:
        text = str(user).strip()
        if text.isdigit():
            uids.add(int(text))
            continue
        try:
            uids.add(pwd.getpwnam(text).pw_uid)
        except KeyError:
            raise UsageError("ray_users %r: %r is not a user on this node; give the user that runs Ray "
                             "(a name from /etc/passwd, or a numeric uid such as 1000 for Ray in containers)"
                             % (list(users), user)) from None
    return frozenset(uids)


def check_patterns(patterns: Any) -> None:
    """Patterns are non-empty file name globs: no ``/``, no ``..``, not match-everything."""
    if not patterns:
        raise UsageError("patterns is empty; give file name globs such as ray_tmp_*, pip-*, tmp*")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip():
            raise UsageError("pattern %r is empty; give a file name glob such as ray_tmp_*" % (pattern,))
        if "/" in pattern or ".." in pattern:
            raise UsageError("pattern %r is not a plain file name glob; remove '/' and '..' "
                             "(patterns match names directly inside tmp_dir and container_tmp_dir)" % pattern)
        if fnmatch.fnmatchcase("any-name.x", pattern) and fnmatch.fnmatchcase(".hidden", pattern):
            raise UsageError("pattern %r matches every name; use a prefix such as ray_tmp_*" % pattern)


def check_title_globs(option: str, globs: Any) -> None:
    """Process title globs are non-empty strings, and none of them matches every title."""
    for glob in globs:
        if not isinstance(glob, str) or not glob.strip():
            raise UsageError("%s %r has an empty glob; give process title globs such as 'ray::ServeReplica*'"
                             % (option, list(globs)))
        if fnmatch.fnmatchcase("ray::IDLE", glob) and fnmatch.fnmatchcase("ray::any_task", glob):
            raise UsageError("%s glob %r matches every Ray worker, idle or not; name the titles, for example "
                             "'ray::ServeReplica*'" % (option, glob))


def check_spill_dirs(paths: Any) -> None:
    """Spill directories are absolute paths, never ``/`` (what Ray's ``object_spilling_config`` names)."""
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise UsageError("spill_dirs %r: %r is not an absolute path; give the directories Ray spills objects to "
                             "(directory_path of object_spilling_config, or --object-spilling-directory), for "
                             "example /mnt/spill" % (list(paths), path))
        if is_filesystem_root(path):
            raise UsageError("spill_dirs %r: %r is the root of the filesystem; give the directory Ray spills objects "
                             "to, for example /mnt/spill" % (list(paths), path))


def check_thresholds(thresholds: dict) -> None:
    """Percentages in 0-100 that strictly increase from info to warning to critical."""
    values = []
    for level in LEVELS[1:]:
        value = thresholds.get(level)
        if value is None:
            raise UsageError("thresholds.%s is missing; give a percentage, for example %s: 90" % (level, level))
        if not 0 <= value <= 100:
            raise UsageError("thresholds.%s %r is outside 0-100; give a percentage of the disk" % (level, value))
        values.append(value)
    if not values[0] < values[1] < values[2]:
        raise UsageError("thresholds info %r, warning %r, critical %r must increase; for example 80, 90, 95"
                         % tuple(values))


def level_for(used_percent: float, thresholds: dict) -> str:
    """``ok``, ``info``, ``warning`` or ``critical`` for a used percentage."""
    for level in reversed(LEVELS[1:]):
        if used_percent >= thresholds[level]:
            return level
    return "ok"
