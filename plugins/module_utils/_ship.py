# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ship shared log paths from the Ray head node only: ``ray-maintenance ship``.

What the users' LogManager did in their application (copy path patterns to HDFS, on the head node only, disabled on
workers, as a standalone process where no Ray runs, never with ``RAY_DISABLE_HDFS_COPY=true``), done once per node
by root from cron, safely.

The decision is made once per run (``decide``): ``RAY_DISABLE_HDFS_COPY`` true in the environment, or
``ship_disabled``, skips; else the node's Ray role as discovery finds it for the host (``_ray_layout.discover``, the
same trusted processes ``ray_tmp_usage`` reports as ``node_role``): a worker skips, a head ships, a node without Ray
ships as a standalone one.

Each glob of ``ship_paths`` is expanded and each match opened from ``/`` one component at a time, every directory
with ``O_NOFOLLOW|O_DIRECTORY`` and the file itself pinned without following a link (``_fs.open_regular``): a
symlink anywhere on the way, a FIFO, a device, a socket, a file with more than one link (a hard link may be
``/etc/shadow``'s) is not shipped, listed with the reason, never read.  A file is uploaded to the store of
``ship_dest`` (``_archive``'s stores) at ``<cluster>/<node>/shipped/<its absolute path without the leading />``,
then read back and compared (size and SHA-256).  The state file (root's, 0600, written atomically) keeps per path
the device, inode, size, mtime and SHA-256 of what was shipped: an unchanged file is not uploaded again; a failed
one keeps its old entry and makes the run fail.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ansible_collections.rayops.disk.plugins.module_utils._archive import (
    CHUNK,
    ArchiveError,
    Store,
    _lower_priority,
    open_store,
)
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, describe_os_error, printable
from ansible_collections.rayops.disk.plugins.module_utils._fs import UnsafePath, open_dir, open_regular, write_private
from ansible_collections.rayops.disk.plugins.module_utils._locks import LockError, flock_within, open_lock_file
from ansible_collections.rayops.disk.plugins.module_utils._options import (
    OPTIONS,
    check_path_name,
    option_names,
    uids_of_users,
)
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import discover
from ansible_collections.rayops.disk.plugins.module_utils._targets import host_target
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes

DISABLE_ENV = "RAY_DISABLE_HDFS_COPY"
"""The LogManager's switch: true (``true``, ``1``, ``yes``, any case) disables shipping on the node."""
TRUE_WORDS = ("true", "1", "yes")
SKIP_REASONS = (DISABLE_ENV, "ship_disabled", "worker")
"""Why a run skips, as the metrics' ``reason`` label says it: a fixed set."""
STATE_VERSION = 1
STORE_FAILURES = 3
"""Uploads that fail one after another before the store is taken as down: the rest of the run is not tried."""


def _default(name: str) -> Any:
    return OPTIONS[name].default


@dataclass
class ShipOptions:
    """What ``ship`` takes from the config: the paths, where to, the state file; the names of the keys; discovery's."""

    ship_paths: tuple = _default("ship_paths")
    ship_dest: Optional[str] = _default("ship_dest")
    ship_state: str = _default("ship_state")
    ship_disabled: bool = _default("ship_disabled")
    archive_endpoint_url: Optional[str] = _default("archive_endpoint_url")
    archive_cluster: str = _default("archive_cluster")
    archive_node: Optional[str] = _default("archive_node")
    tmp_dir: str = _default("tmp_dir")
    ray_temp_dir: Optional[str] = _default("ray_temp_dir")
    ray_users: tuple = _default("ray_users")

    @classmethod
    def from_config(cls, config: dict) -> "ShipOptions":
        """The ship options of a ``ray-maintenance`` config."""
        return cls(**{name: config[name] for name in option_names(cls) if name in config})

    @property
    def node(self) -> str:
        """This node's name in the keys: ``archive_node``, else its host name."""
        return self.archive_node or os.uname().nodename

    def validate(self) -> None:
        """Raise ``UsageError`` naming the first bad value and the fix (``check-config`` runs it too)."""
        check_ship_paths(self.ship_paths)
        dest = self.ship_dest
        if dest is not None:
            bucket = dest[len("s3://"):].partition("/")[0] if dest.startswith("s3://") else None
            if not (dest.startswith("hdfs://") or bucket or (os.path.isabs(dest) and "://" not in dest)):
                raise UsageError("ship_dest %r is not an absolute directory, s3://BUCKET/PREFIX or hdfs://...; for "
                                 "example %s" % (dest, OPTIONS["ship_dest"].example))
            for name in ("archive_cluster", "archive_node"):
                check_path_name(name, getattr(self, name))
        if not os.path.isabs(self.ship_state) or self.ship_state.endswith("/"):
            raise UsageError("ship_state %r is not the absolute path of a file; give one in a directory only root "
                             "writes, for example %s" % (self.ship_state, OPTIONS["ship_state"].example))

    def require_target(self) -> None:
        """``UsageError`` unless there is something to ship and somewhere to ship it."""
        for name, value in (("ship_paths", self.ship_paths), ("ship_dest", self.ship_dest)):
            if not value:
                raise UsageError("nothing to ship: %s is not set; give it in the config, for example \"%s\": %s"
                                 % (name, name, json.dumps(OPTIONS[name].example)))


def check_ship_paths(paths: Any) -> None:
    """Each entry an absolute path glob of files, without ``.`` or ``..`` components."""
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise UsageError("ship_paths %r: %r is not an absolute path glob; give the full path of the logs, for "
                             "example /app/logs/*.log" % (list(paths), path))
        parts = path.split("/")
        if "." in parts or ".." in parts or "\0" in path:
            raise UsageError("ship_paths %r: %r has a . or .. component (or a NUL); give the logs' own path, for "
                             "example /app/logs/*.log" % (list(paths), path))
        if not parts[-1]:
            raise UsageError("ship_paths %r: %r names a directory, not files; give a glob of the files in it, for "
                             "example %s*.log" % (list(paths), path, path))


# --- the decision -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """Whether this node ships in this run, and why."""

    ships: bool
    reason: str
    skipped_by: Optional[str] = None
    """One of ``SKIP_REASONS`` when it does not ship."""
    node_role: Optional[str] = None
    """``head``, ``worker`` or ``none`` as discovery found it (None: not asked, shipping was disabled)."""
    untrusted: tuple = ()
    """Processes that claim to be Ray's but are not trusted (they decide nothing), as discovery lists them."""


def disabled_by_environment(environ: Any) -> bool:
    """Whether ``RAY_DISABLE_HDFS_COPY`` says true (``true``, ``1``, ``yes``, any case)."""
    return str(environ.get(DISABLE_ENV, "")).strip().lower() in TRUE_WORDS


def decide(options: ShipOptions, psutil: Any, environ: Any = None) -> Decision:
    """Ship or not, once per run: the environment, then the config, then the node's Ray role."""
    environ = os.environ if environ is None else environ
    if disabled_by_environment(environ):
        return Decision(False, "disabled by %s" % DISABLE_ENV, DISABLE_ENV)
    if options.ship_disabled:
        return Decision(False, "disabled by ship_disabled", "ship_disabled")
    layout = discover(host_target(), psutil, options.tmp_dir, options.ray_temp_dir, None,
                      uids_of_users(options.ray_users))
    untrusted = tuple(layout.untrusted)
    if layout.node_role == "worker":
        return Decision(False, "a Ray worker node: only the head ships", "worker", "worker", untrusted)
    if layout.node_role == "head":
        return Decision(True, "the Ray head node: it ships", None, "head", untrusted)
    return Decision(True, "no Ray here: runs as standalone", None, "none", untrusted)


# --- the files --------------------------------------------------------------------------------------------------

class Refused(Exception):
    """A match that is not shipped, and never read: the message says why."""


class ShipError(Exception):
    """A file that could not be shipped or verified: its old state is kept, and the run fails."""


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def open_log(path: str) -> tuple:
    """``(fd, stat)`` of the regular file ``path`` (absolute, normalised), reached from ``/`` without a link.

    ``Refused`` when a directory on the way is a symlink (or not a directory), the file is not a regular file, or
    it has more than one link; ``OSError`` when it cannot be opened (gone, no permission).
    """
    parts = [part for part in path.split("/") if part]
    if not parts or "." in parts or ".." in parts:
        raise Refused("not a normalised absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = ""
    try:
        for name in parts[:-1]:
            walked += "/" + name
            try:
                child = open_dir(name, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                kind = _kind(os.lstat(name, dir_fd=fd))
                raise Refused("%s on the way (%s): never followed" % (kind, printable(walked))) from None
            os.close(fd)
            fd = child
        try:
            file_fd = open_regular(parts[-1], dir_fd=fd)
        except UnsafePath:
            raise Refused("%s, not a regular file: never read" % _kind(os.lstat(parts[-1], dir_fd=fd))) from None
    finally:
        os.close(fd)
    st = os.fstat(file_fd)
    if st.st_nlink != 1:
        os.close(file_fd)
        raise Refused("a file with %d hard links (it may be another file's, such as /etc/shadow): never read"
                      % st.st_nlink)
    return file_fd, st


def _read_exactly(fd: int, size: int, digest: Any) -> Iterator[bytes]:
    """The first ``size`` bytes of an open file (what it held when it was opened), hashed on the way."""
    left = size
    while left > 0:
        data = os.read(fd, min(CHUNK, left))
        if not data:
            raise ShipError("it shrank while it was read (truncated or rotated): shipped at the next run")
        digest.update(data)
        left -= len(data)
        yield data


def _sha256(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    for _chunk in _read_exactly(fd, size, digest):
        pass
    os.lseek(fd, 0, os.SEEK_SET)
    return digest.hexdigest()


def expand(patterns: tuple) -> tuple:
    """``(paths, counts)``: the sorted, normalised matches of every glob (each once), and how many each matched.

    ``glob`` only lists names; a match reached through a link is refused when it is opened (``open_log``).
    """
    found, counts = {}, []
    for pattern in patterns:
        matches = glob.glob(pattern)
        counts.append({"pattern": pattern, "matches": len(matches)})
        for match in matches:
            found.setdefault("/" + os.path.normpath(match).lstrip("/"), None)
    return sorted(found), counts


# --- the state --------------------------------------------------------------------------------------------------

@dataclass
class ShipState:
    """What earlier runs shipped where: per path ``[dev, ino, size, mtime_ns, sha256, key]``."""

    dest: Optional[str] = None
    files: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, path: str, dest: str) -> "ShipState":
        """The state in ``path`` for the store ``dest`` (missing, damaged or another store's: a fresh one)."""
        try:
            fd = open_regular(path, owners=frozenset((os.geteuid(),)))
        except FileNotFoundError:
            return cls(dest)
        except UnsafePath as exc:
            raise UsageError("ship_state %r is not a regular file of uid %d (%s); remove it, and keep it in a "
                             "directory only root writes" % (path, os.geteuid(), exc.strerror)) from exc
        with os.fdopen(fd, "rb") as handle:
            try:
                raw = json.loads(handle.read().decode("utf-8"))
            except ValueError:
                return cls(dest)
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION or raw.get("dest") != dest:
            return cls(dest)
        files = {key: value for key, value in (raw.get("files") or {}).items()
                 if isinstance(value, list) and len(value) == 6}
        return cls(dest, files)

    def save(self, path: str) -> None:
        """Write it atomically, mode 0600 (``_fs.write_private``)."""
        data = json.dumps({"version": STATE_VERSION, "dest": self.dest, "files": self.files}, sort_keys=True)
        write_private(path, data.encode("utf-8"))


def _state_dir(path: str) -> None:
    """Make the state file's directory (0700) when missing; ``UsageError`` when another user may write it."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError("ship_state %r is in %s, which another user may write (owner uid %d, mode %04o); keep it "
                         "in a directory only uid %d writes, for example %s" % (
                             path, directory, st.st_uid, stat.S_IMODE(st.st_mode), os.geteuid(),
                             OPTIONS["ship_state"].example))


# --- the run ----------------------------------------------------------------------------------------------------

class Shipper:
    """One run: the matches of ``ship_paths`` to the store, each new or changed file uploaded and verified."""

    def __init__(self, options: ShipOptions, store: Optional[Store], state: ShipState, dry_run: bool) -> None:
        self.options = options
        self.store = store
        self.state = state
        self.dry_run = dry_run
        self.store_failures = 0
        self.store_down: Optional[str] = None

    def key(self, path: str) -> str:
        """Where ``path`` goes in the store: its absolute path below ``<cluster>/<node>/shipped/``."""
        return "%s/%s/shipped/%s" % (self.options.archive_cluster, self.options.node, path.lstrip("/"))

    def one(self, path: str) -> dict:
        """Ship ``path`` if it is new or changed; its entry in the result."""
        entry = {"path": path, "status": "failed", "bytes": None, "key": None, "sha256": None, "reason": None}
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            entry.update(status="not_shipped", reason="its name is not UTF-8: no store key for it")
            return entry
        try:
            fd, st = open_log(path)
        except Refused as exc:
            entry.update(status="not_shipped", reason=str(exc))
            return entry
        except FileNotFoundError:
            entry.update(status="gone", reason="gone since it was listed")
            return entry
        except OSError as exc:
            entry["reason"] = "cannot be opened: %s" % describe_os_error(exc)
            return entry
        try:
            self._ship(fd, st, path, entry)
        except ShipError as exc:
            entry["reason"] = str(exc)
        except OSError as exc:
            entry["reason"] = "reading it failed: %s" % describe_os_error(exc)
        finally:
            os.close(fd)
        return entry

    def _ship(self, fd: int, st: os.stat_result, path: str, entry: dict) -> None:
        key = self.key(path)
        entry.update(bytes=st.st_size, key=self.store.describe(key) if self.store else key)
        ident = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        old = self.state.files.get(path)
        if old is not None and old[5] == key:
            if old[:4] == ident:
                entry.update(status="unchanged", sha256=old[4])
                return
            if old[2] == st.st_size:  # touched, or copied anew: the same bytes are not uploaded again
                digest = _sha256(fd, st.st_size)
                if digest == old[4]:
                    entry.update(status="unchanged", sha256=digest)
                    if not self.dry_run:
                        self.state.files[path] = ident + [digest, key]
                    return
        if self.dry_run:
            entry["status"] = "would_ship"
            return
        if self.store_down:
            raise ShipError("not tried: %s" % self.store_down)
        digest = hashlib.sha256()
        try:
            self.store.write(key, _read_exactly(fd, st.st_size, digest))
            check, size = hashlib.sha256(), 0
            for chunk in self.store.read(key):
                check.update(chunk)
                size += len(chunk)
        except ShipError:
            raise
        except ArchiveError as exc:  # hdfs dfs said why
            self._store_failed(path)
            raise ShipError("the store failed: %s" % exc) from exc
        except OSError as exc:
            self._store_failed(path)
            raise ShipError("the store failed: %s" % describe_os_error(exc)) from exc
        except Exception as exc:  # the store's own errors (boto3's, ArchiveError of hdfs dfs ...)
            self._store_failed(path)
            raise ShipError("the store failed: %s: %s" % (type(exc).__name__, printable(str(exc))[:400])) from exc
        if (size, check.hexdigest()) != (st.st_size, digest.hexdigest()):
            self._store_failed(path)
            raise ShipError("%s read back %d bytes with another checksum than the %d written"
                            % (self.store.describe(key), size, st.st_size))
        self.store_failures = 0
        self.state.files[path] = ident + [digest.hexdigest(), key]
        entry.update(status="shipped", sha256=digest.hexdigest())

    def _store_failed(self, path: str) -> None:
        self.store_failures += 1
        if self.store_failures >= STORE_FAILURES:
            self.store_down = "the store failed %d times in a row (the last on %s)" % (
                self.store_failures, printable(path))


def ship(options: ShipOptions, psutil: Any, boto3: Any, dry_run: bool = False, environ: Any = None,
         lower_priority: bool = True) -> dict:
    """One ``ray-maintenance ship`` run: the decision, then each match shipped or not, with why; the result dict.

    ``UsageError`` when it cannot start (nothing configured, the store cannot be opened, an unsafe state file).
    ``lower_priority``: read and upload at nice 10 and idle I/O priority (the calling thread, as ``_archive`` does).
    """
    options.validate()
    options.require_target()
    decision = decide(options, psutil, environ)
    result = {"decision": "ship" if decision.ships else "skip", "reason": decision.reason,
              "skipped_by": decision.skipped_by, "node_role": decision.node_role, "dry_run": dry_run,
              "untrusted_processes": list(decision.untrusted), "dest": None, "status": "skipped", "files": [],
              "patterns": [], "shipped": 0, "bytes_shipped": 0, "unchanged": 0, "not_shipped": 0, "failed": 0}
    if not decision.ships:
        result["summary"] = "skipped: %s" % decision.reason
        return result
    store = open_store(options.ship_dest, options.archive_endpoint_url, boto3, option="ship_dest")
    result["dest"] = store.url
    lock_fd = None
    if not dry_run:
        _state_dir(options.ship_state)
        lock = options.ship_state + ".lock"
        try:
            lock_fd = open_lock_file(lock)
        except LockError as exc:
            raise UsageError("ship_state's lock %s: %s" % (lock, exc)) from exc
        if not flock_within(lock_fd, 0):
            os.close(lock_fd)
            result.update(status="locked", summary="locked out: another ship run holds %s" % lock)
            return result
    try:
        state = ShipState.load(options.ship_state, store.url)
        if lower_priority:
            _lower_priority()
        shipper = Shipper(options, store, state, dry_run)
        paths, result["patterns"] = expand(tuple(options.ship_paths))
        for path in paths:
            entry = shipper.one(path)
            if entry["status"] != "gone":
                result["files"].append(entry)
        matched = set(paths)
        state.files = {path: value for path, value in state.files.items() if path in matched}
        if not dry_run:
            state.save(options.ship_state)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    _count(result)
    return result


def _count(result: dict) -> None:
    files = result["files"]
    done = [entry for entry in files if entry["status"] in ("shipped", "would_ship")]
    result.update(status="done", shipped=len(done), bytes_shipped=sum(entry["bytes"] for entry in done),
                  unchanged=sum(1 for entry in files if entry["status"] == "unchanged"),
                  not_shipped=sum(1 for entry in files if entry["status"] == "not_shipped"),
                  failed=sum(1 for entry in files if entry["status"] == "failed"))
    result["summary"] = "%s %d file(s) (%s) to %s, %d unchanged, %d not shipped, %d failed (%s)" % (
        "dry run: would ship" if result["dry_run"] else "shipped", result["shipped"],
        format_bytes(result["bytes_shipped"]), result["dest"], result["unchanged"], result["not_shipped"],
        result["failed"], result["reason"])
