# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Safe removal under a directory: what may go goes, the rest stays with its reason.

The rules follow systemd-tmpfiles, tmpwatch and tmpreaper, and go past them:

- The root is resolved inside its tree (a container's root, or the host's)
  one component at a time (``_fs.open_beneath``); everything below it is
  reached relative to its parent directory's file descriptor (``O_NOFOLLOW``,
  no ``chdir``, no path lookups), and each directory opened is checked to be
  the inode that was listed, so a directory swapped for a symlink mid-walk
  leads nowhere outside.  A symlink is removed as a link; its target is never
  touched.
- Nothing on another filesystem or below a mount point (bind mounts of the same
  disk included) is entered or removed.
- An entry is old enough only when every one of ``age_by`` (mtime, atime,
  ctime) is older than the cutoff; a directory's ctime does not count, as its
  removal of children changes it.  Directories are aged by what they were
  before the walk.
- Kept whatever the age: what matches an ``exclude`` glob, what a live
  process holds open, maps or has as working directory, what is locked
  (``flock``/POSIX, from ``/proc/locks``, and a ``flock`` attempt on each
  directory), unix sockets some process has bound, and device nodes.  A kept
  directory keeps everything below it.
- A file is checked again right before it is unlinked; one that changed is
  kept.  Errors on single entries are reported and the run goes on.
- A dry run makes the very same decisions and changes nothing.
- Work is linear in the number of entries, however deep the tree: a path is
  spelt out only for what is listed (the first ``MAX_LISTED``), and the audit
  hook hears once per removed entry of the root, with totals.
- ``remove_matching`` shares the entries of the root out to forked processes
  (``Remover.workers``, one per CPU up to 4): each removes whole entries with
  every check above, so no directory is walked, locked or emptied by two.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import re
import stat
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable, Iterable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import describe_os_error, display_path
from ansible_collections.rayops.disk.plugins.module_utils._fdwalk import (
    DirStack,
    Frame,
    MOUNT_POINT,
    NOT_A_DIRECTORY,
    REPLACED,
    VANISHED,
    WorkerFailed,
    default_workers,
    in_workers,
    open_listed_dir,
)
from ansible_collections.rayops.disk.plugins.module_utils._fs import (
    HOST,
    Tree,
    host_path_of,
    mount_id,
    mounts_below,
    open_dir,
)
from ansible_collections.rayops.disk.plugins.module_utils._options import AGE_FIELDS
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import held_links

MAX_LISTED = 100
"""Removed paths, kept entries and errors listed per outcome; the rest are counted."""

MAX_SHOWN_DEPTH = 64
"""Components of a listed path shown in full; the middle of a deeper path is elided."""

_S_IFMT, _S_IFDIR = 0o170000, stat.S_IFDIR
_GUARDED_MODES = frozenset((stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK))
"""File types ``Guards.reason`` looks at whatever their inode (live sockets, device nodes)."""

Where = Callable[[], list]
"""Names from the removal root down to an entry, spelt out only when needed."""


@dataclass(frozen=True)
class Policy:
    """What may go: old enough by every ``age_by`` time, and matching no ``exclude`` glob.

    ``exclude`` globs match an entry's name or, when they hold a ``/``, its
    path below the removal root.
    """

    cutoff: float
    age_by: tuple = AGE_FIELDS
    exclude: tuple = ()
    owners: Optional[frozenset] = None
    """The mandate: the uids whose entries of the root this policy covers (None: anyone's)."""
    others: Optional["Policy"] = None
    """The policy for an entry of the root owned by anyone else (None: it stays, ``other_user``)."""
    _times: tuple = field(init=False, repr=False, compare=False)
    """Getters of the ``age_by`` times of a file and of a directory (no ctime), built once, not per entry."""

    def __post_init__(self) -> None:
        directory_times = [name for name in self.age_by if name != "ctime"]  # its own removals change its ctime
        object.__setattr__(self, "_times", (_times_of(self.age_by), _times_of(directory_times)))

    def for_owner(self, uid: int) -> Optional["Policy"]:
        """The policy for an entry of the root (and all below it) owned by ``uid``; None when it must stay."""
        if self.owners is None or uid in self.owners:
            return self
        return self.others

    def fresh(self, st: os.stat_result, is_dir: bool) -> bool:
        """Whether any ``age_by`` time is at or after the cutoff (a directory's ctime aside)."""
        times = self._times[1 if is_dir else 0]
        return times is not None and max(times(st)) >= self.cutoff

    def excluded(self, name: str, where: Where) -> bool:
        """Whether an exclude glob matches the entry's name or (a glob with ``/``) its relative path."""
        if not self.exclude:
            return False
        if any(fnmatch.fnmatchcase(name, glob) for glob in self.exclude):
            return True
        paths = [glob for glob in self.exclude if "/" in glob]
        if not paths:
            return False
        relative = "/".join(where())
        return any(fnmatch.fnmatchcase(relative, glob) for glob in paths)


def _times_of(age_by: Iterable[str]) -> Optional[Callable[[os.stat_result], tuple]]:
    """A getter of the named stat times as a tuple (None when there are none)."""
    fields = ["st_" + name for name in age_by]
    if len(fields) > 1:
        return attrgetter(*fields)
    return None if not fields else lambda st, field=fields[0]: (getattr(st, field),)


@dataclass(frozen=True)
class Guards:
    """Inodes that live processes use, as ``(st_dev, st_ino)`` pairs."""

    open_inodes: frozenset = frozenset()
    locked_inodes: frozenset = frozenset()
    live_sockets: frozenset = frozenset()
    _held: frozenset = field(init=False, repr=False, compare=False)
    """Locked or open, in one set: most entries need one lookup."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_held", self.locked_inodes | self.open_inodes)

    def reason(self, st: os.stat_result) -> Optional[str]:
        """Why an entry must stay whatever its age, or None."""
        ident = (st.st_dev, st.st_ino)
        if st.st_mode & _S_IFMT not in _GUARDED_MODES and ident not in self._held:
            return None
        if ident in self.locked_inodes:
            return "locked"
        if ident in self.open_inodes:
            return "open"
        if stat.S_ISSOCK(st.st_mode) and ident in self.live_sockets:
            return "live_socket"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return "device"
        return None


_LOCK_ID = re.compile(r"^([0-9a-f]+):([0-9a-f]+):(\d+)$")


def locked_inodes(locks_file: str = "/proc/locks") -> frozenset:
    """Inodes with a flock, POSIX or OFD lock held or waited for."""
    found = set()
    try:
        with open(locks_file) as handle:
            for line in handle:
                for token in line.split():
                    match = _LOCK_ID.match(token)
                    if match:
                        major, minor, ino = match.groups()
                        found.add((os.makedev(int(major, 16), int(minor, 16)), int(ino)))
                        break
    except OSError:
        pass
    return frozenset(found)


class HoldersUnknown(PermissionError):
    """What a live process holds open cannot be read (root without ``CAP_SYS_PTRACE``, a hardened ``/proc``)."""


CAP_SYS_PTRACE = 19
"""The capability that lets root read another user's ``/proc/<pid>/fd`` (``capabilities(7)``)."""


def may_trace() -> bool:
    """Whether this process has ``CAP_SYS_PTRACE`` in effect (else it cannot see what other users' processes hold)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def used_inodes(pids: Iterable[int], strict: bool = False) -> frozenset:
    """Inodes that processes hold open, map into memory or have as working directory.

    ``strict`` (a removal, not a dry run) without ``CAP_SYS_PTRACE`` (root under a supervisor that dropped it): a
    live process whose links or maps may not be read raises ``HoldersUnknown`` instead of holding nothing, since
    whoever removes files must know what every process holds.  With it, one that still may not be read (a
    sandbox's own agent, an LSM) is skipped as before.
    """
    found = set()
    blind = strict and not may_trace()
    for pid in pids:
        try:
            found.update(_held_by(pid))
        except PermissionError as exc:
            if blind and os.path.exists("/proc/%d" % pid):
                raise HoldersUnknown(exc.errno, "cannot see what process %d holds open (%s): nothing is removed "
                                     "while that is unknown; run as root with CAP_SYS_PTRACE (the role's unit has "
                                     "it)" % (pid, exc.strerror)) from exc
    return frozenset(found)


def _held_by(pid: int) -> set:
    """``(st_dev, st_ino)`` of what one process holds open, maps or has as working directory (none if it is gone);
    ``PermissionError`` when that may not be read."""
    found = set()
    for link in held_links(pid, denied=True):
        try:
            st = os.stat(link)
        except PermissionError:
            raise
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    try:
        with open("/proc/%d/maps" % pid) as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) >= 5 and fields[4] != "0":
                    major, minor = fields[3].split(":")
                    found.add((os.makedev(int(major, 16), int(minor, 16)), int(fields[4])))
    except PermissionError:
        raise
    except (OSError, ValueError):
        pass
    return found


def socket_inodes(paths: Iterable[str], tree: Tree = HOST) -> frozenset:
    """Inodes of bound unix sockets, from their paths (as in ``/proc/net/unix``) inside ``tree``."""
    found = set()
    for path in paths:
        try:
            st = tree.lstat(path)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return frozenset(found)


def shown(root: str, names: list) -> str:
    """A listed path: the root and the names, the middle elided past ``MAX_SHOWN_DEPTH`` levels."""
    if len(names) > MAX_SHOWN_DEPTH:
        half = MAX_SHOWN_DEPTH // 2
        names = names[:half] + ["...(%d levels)..." % (len(names) - MAX_SHOWN_DEPTH)] + names[-half:]
    return display_path("/".join([root.rstrip("/")] + names))


@dataclass
class Outcome:
    """What a removal did (or, in a dry run, would do).

    Each entry is given by ``path()``, called only when the entry is listed.
    """

    freed_bytes: int = 0
    removed: int = 0
    removed_paths: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    kept_count: int = 0
    kept_by_reason: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    error_count: int = 0

    def gone(self, path: Callable[[], str], freed: int) -> None:
        """Count a removed entry."""
        self.removed += 1
        self.freed_bytes += freed
        if len(self.removed_paths) < MAX_LISTED:
            self.removed_paths.append(path())

    def keep(self, path: Callable[[], str], reason: str) -> None:
        """Count a kept entry and why."""
        self.kept_count += 1
        self.kept_by_reason[reason] = self.kept_by_reason.get(reason, 0) + 1
        if len(self.kept) < MAX_LISTED:
            self.kept.append({"path": path(), "reason": reason})

    def error(self, path: Callable[[], str], message: str) -> None:
        """Count an entry that could not be handled."""
        self.error_count += 1
        if len(self.errors) < MAX_LISTED:
            self.errors.append({"path": path(), "error": message})


class _DirState:
    """A directory being emptied: its stat before the walk, and whether all it held went."""

    __slots__ = ("st", "all_gone")

    def __init__(self, st: os.stat_result) -> None:
        self.st = st
        self.all_gone = True


class Remover:
    """Removes entries directly inside ``root`` + ``below``, and what may go below them.

    ``root`` is a trusted directory (a validated tmp dir, a Ray temp root),
    resolved inside ``tree`` (the host, or a container's root) as
    ``inner_root`` (default ``root``, which otherwise only names it in
    messages); the ``below`` components (``session_x``, ``logs``, ``old``) are
    opened one by one relative to it, never following a symlink and never
    leaving its filesystem.  ``mountinfo`` is the mount table of the tree.
    """

    def __init__(self, root: str, policy: Policy, guards: Guards, dry_run: bool,
                 mountinfo: str = "/proc/self/mountinfo", inner_root: Optional[str] = None,
                 below: tuple = (), tree: Tree = HOST) -> None:
        self.root = "/".join([root.rstrip("/")] + list(below)) if below else root
        self.base = root
        self.inner_base = inner_root or root
        self.below = below
        self.tree = tree
        self.policy = policy
        self.active = policy
        """The policy of the entry of the root being removed (``Policy.for_owner`` of its owner)."""
        self.guards = guards
        self.dry_run = dry_run
        self.outcome = Outcome()
        self.dev = 0
        self.mnt: Optional[int] = None
        self.host_root: Optional[str] = None
        """Where the opened root really is, as this host names it (None when unreachable by path)."""
        self._host_root_of: Optional[tuple] = None
        self.mountinfo = mountinfo
        self.check_mounts = mounts_below(mountinfo, self.inner_base)
        self.workers = default_workers()
        """Processes ``remove_matching`` removes with, side by side (1: this one only)."""
        self.admit: Optional[Callable[[list, os.stat_result], Optional[str]]] = None
        """Asked before a file is unlinked, with its path below the root (as names) and its stat: a reason to keep
        it (``not_archived``), or None. Unset: no such check."""
        self.on_remove: Optional[Callable[[str, Optional[str], int, int], None]] = None
        """Called once per entry of the root that lost anything (in a dry run: would lose), with its path, its
        host path, the bytes freed and the entries removed in it (the entry itself included)."""

    def _where(self, names: list) -> Callable[[], str]:
        return lambda: shown(self.root, names)

    def _lazy(self, where: Where) -> Callable[[], str]:
        return lambda: shown(self.root, where())

    def _open_root(self) -> Optional[int]:
        """Open the base inside the tree, then each ``below`` component without following symlinks.

        None (reported) if that fails.
        """
        try:
            fd = self.tree.open_dir(self.inner_base)
        except OSError as exc:
            self.outcome.error(lambda: display_path(self.base), describe_os_error(exc))
            return None
        self.dev = os.fstat(fd).st_dev
        for depth, component in enumerate(self.below):
            path = "/".join([self.base.rstrip("/")] + list(self.below[:depth + 1]))
            try:
                child = open_dir(component, dir_fd=fd)
            except FileNotFoundError:
                child = None
            except OSError as exc:
                self.outcome.error(lambda: display_path(path), "not a directory of its own (a symlink?): %s"
                                   % describe_os_error(exc) if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                                   else describe_os_error(exc))
                child = None
            os.close(fd)
            if child is None:
                return None
            if os.fstat(child).st_dev != self.dev:
                os.close(child)
                self.outcome.keep(lambda: display_path(path), "other_filesystem")
                return None
            fd = child
        self.mnt = mount_id(fd) if self.check_mounts else None
        ident = (self.dev, os.fstat(fd).st_ino)
        if ident != self._host_root_of:  # the root is reopened per entry; its host path is looked up once
            self.host_root, self._host_root_of = host_path_of(fd, self.mountinfo), ident
        return fd

    def remove_matching(self, select: Callable[[str], bool]) -> None:
        """Remove, as far as the rules allow, every entry of the root whose name ``select`` accepts.

        With ``workers`` > 1 and more than one entry, forked processes take the entries one at a time (each
        removed by ``remove``, as here, with every check), and this process merges what each did, in the order
        of the names, calling ``on_remove`` as each entry is done.
        """
        root_fd = self._open_root()
        if root_fd is None:
            return
        try:
            names = sorted(name for name in os.listdir(root_fd) if select(name))
        except OSError as exc:
            self.outcome.error(lambda: display_path(self.root), describe_os_error(exc))
            names = []
        finally:
            os.close(root_fd)
        if self.workers > 1 and len(names) > 1:
            self._remove_in_workers(names, min(self.workers, len(names)))
            return
        for name in names:
            self.remove(name)

    def _remove_in_workers(self, names: list, workers: int) -> None:
        """Remove the entries ``names`` of the root in forked processes (``_fdwalk.in_workers``), one entry at a time.

        Each process runs ``remove`` on the entries it takes and sends back, per entry, what it did; the entries
        are disjoint, so no directory is walked, locked or removed by two processes.  Results are merged in the
        order of the names, so the outcome lists the same as one process would.  An entry whose process failed
        without a result is removed here afterwards (removing is idempotent: every check is made again).
        """
        done: dict = {}
        following = 0
        try:
            for index, (outcome, host_root) in in_workers(len(names), workers, lambda index: self._removed_alone(names[index])):
                done[index] = (Outcome(**outcome), host_root)
                while following in done:
                    self._merge(names[following], *done.pop(following))
                    following += 1
        except WorkerFailed:
            pass  # what it left is done below
        for index in range(following, len(names)):
            if index in done:
                self._merge(names[index], *done.pop(index))
            else:
                self.remove(names[index])

    def _removed_alone(self, name: str) -> tuple:
        """In a worker: ``remove`` one entry with an outcome of its own; that outcome (plain data) and the host root.

        ``on_remove`` is told at the merge, in the order of the names.
        """
        self.on_remove = None
        self.outcome = Outcome()
        self.remove(name)
        return vars(self.outcome), self.host_root

    def _merge(self, name: str, part: Outcome, host_root: Optional[str]) -> None:
        """Add what a worker did to one entry of the root to the outcome; tell ``on_remove`` as ``remove`` does."""
        self.host_root = host_root
        outcome = self.outcome
        outcome.removed += part.removed
        outcome.freed_bytes += part.freed_bytes
        outcome.removed_paths.extend(part.removed_paths[:MAX_LISTED - len(outcome.removed_paths)])
        outcome.kept_count += part.kept_count
        for reason, count in part.kept_by_reason.items():
            outcome.kept_by_reason[reason] = outcome.kept_by_reason.get(reason, 0) + count
        outcome.kept.extend(part.kept[:MAX_LISTED - len(outcome.kept)])
        outcome.error_count += part.error_count
        outcome.errors.extend(part.errors[:MAX_LISTED - len(outcome.errors)])
        if self.on_remove is not None and part.removed:
            host = None if self.host_root is None else display_path(self.host_root.rstrip("/") + "/" + name)
            self.on_remove(self._where([name])(), host, part.freed_bytes, part.removed)

    def remove(self, name: str) -> bool:
        """Remove the entry ``name`` of the root as far as the rules allow; True when it is gone."""
        root_fd = self._open_root()
        if root_fd is None:
            return False
        removed, freed = self.outcome.removed, self.outcome.freed_bytes
        try:
            try:
                st = os.lstat(name, dir_fd=root_fd)
            except FileNotFoundError:
                return True
            except OSError as exc:
                self.outcome.error(self._where([name]), describe_os_error(exc))
                return False
            active = self.policy.for_owner(st.st_uid)
            if active is None:
                self.outcome.keep(self._where([name]), "other_user")
                return False
            self.active = active
            if stat.S_ISDIR(st.st_mode):
                return self._tree(root_fd, name, st)
            return self._leaf(root_fd, name, lambda: [name], st)
        finally:
            os.close(root_fd)
            if self.on_remove is not None and self.outcome.removed > removed:
                host = None if self.host_root is None else display_path(self.host_root.rstrip("/") + "/" + name)
                self.on_remove(self._where([name])(), host, self.outcome.freed_bytes - freed,
                               self.outcome.removed - removed)

    def _leaf(self, parent_fd: int, name: str, where: Where, st: os.stat_result) -> bool:
        """Unlink a non-directory if the rules allow; True when it is gone."""
        reason = ("excluded" if self.active.excluded(name, where) else self.guards.reason(st)
                  or ("fresh" if self.active.fresh(st, is_dir=False) else None)
                  or (self.admit(where(), st) if self.admit is not None else None))
        if reason:
            self.outcome.keep(self._lazy(where), reason)
            return False
        freed = st.st_blocks * 512 if st.st_nlink == 1 else 0
        if self.dry_run:
            self.outcome.gone(self._lazy(where), freed)
            return True
        try:
            now = os.lstat(name, dir_fd=parent_fd)
            if (now.st_ino, now.st_mtime_ns, now.st_ctime_ns) != (st.st_ino, st.st_mtime_ns, st.st_ctime_ns):
                self.outcome.keep(self._lazy(where), "changed")
                return False
            os.unlink(name, dir_fd=parent_fd)
        except FileNotFoundError:
            return True
        except OSError as exc:
            self.outcome.error(self._lazy(where), describe_os_error(exc))
            return False
        self.outcome.gone(self._lazy(where), freed)
        return True

    def _dir_reason(self, name: str, where: Where, st: os.stat_result) -> Optional[str]:
        """Why a directory and everything below it must stay, before entering it."""
        if st.st_dev != self.dev:
            return "other_filesystem"
        if self.active.excluded(name, where):
            return "excluded"
        return self.guards.reason(st)

    def _open_child(self, parent_fd: int, name: str, ino: int, where: Where) -> Optional[int]:
        """Open a listed directory: the same inode, on the same mount, and not flock-ed by anyone."""
        fd, why = open_listed_dir(parent_fd, name, ino, self.dev, self.mnt)
        if why == VANISHED:
            return None
        if why in (NOT_A_DIRECTORY, REPLACED, MOUNT_POINT):
            self.outcome.keep(self._lazy(where), "mount_point" if why == MOUNT_POINT else "changed")
            return None
        if why is not None:
            self.outcome.error(self._lazy(where), why)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while we work inside, as systemd-tmpfiles
        except BlockingIOError:
            os.close(fd)
            self.outcome.keep(self._lazy(where), "locked")
            return None
        return fd

    def _children(self, fd: int, where: Where, state: _DirState) -> list:
        """The entries of an open directory with their lstat, listed once before anything goes."""
        children = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        children.append((entry.name, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        self.outcome.error(self._lazy(lambda name=entry.name: where() + [name]),
                                           describe_os_error(exc))
                        state.all_gone = False
        except OSError as exc:
            self.outcome.error(self._lazy(where), describe_os_error(exc))
            state.all_gone = False
        return children

    def _tree(self, root_fd: int, name: str, st: os.stat_result) -> bool:
        """Empty and remove a directory, depth first, with a bounded number of fds open."""
        def top_where() -> list:
            return [name]

        reason = self._dir_reason(name, top_where, st)
        if reason:
            self.outcome.keep(self._where([name]), reason)
            return False
        fd = self._open_child(root_fd, name, st.st_ino, top_where)
        if fd is None:
            return False
        state = _DirState(st)
        stack = DirStack(Frame(name, st.st_ino, fd, [], state), self._open_child, [name])
        stack.top.pending = self._children(fd, top_where, state)
        gone = False
        try:
            while stack:
                top = stack.top
                pending = top.pending
                if pending:
                    if pending[-1][1].st_mode & _S_IFMT == _S_IFDIR:
                        self._visit(stack, *pending.pop())
                    else:
                        self._files(stack, top)
                    continue
                level = len(stack) - 1
                parent_fd = root_fd if level == 0 else stack.ensure_open(level - 1)
                where = stack.names if level == 0 else (lambda lvl=level - 1, nm=top.name: stack.names(lvl, nm))
                stack.pop()
                gone = top.state.all_gone and parent_fd is not None and self._rmdir(parent_fd, top.name, where,
                                                                                    top.state.st)
                if not gone and stack:
                    stack.top.state.all_gone = False
        finally:
            stack.close()
        return gone

    def _files(self, stack: DirStack, top: Frame) -> None:
        """Handle the run of non-directories at the end of the top directory's list with ``_leaf``, in the order
        ``_visit`` would; the parent's fd is looked up once per run, not per file."""
        pending = top.pending
        level = len(stack) - 1
        parent_fd = top.fd if top.fd is not None else stack.ensure_open()
        if parent_fd is None:
            pending.pop()
            top.state.all_gone = False
            return
        while True:
            name, st = pending.pop()
            if not self._leaf(parent_fd, name, lambda name=name: stack.names(level, name), st):
                top.state.all_gone = False
            if not pending or pending[-1][1].st_mode & _S_IFMT == _S_IFDIR:
                return

    def _visit(self, stack: DirStack, name: str, st: os.stat_result) -> None:
        """Handle one entry of the top directory: unlink it, or enter it."""
        top = stack.top
        level = len(stack) - 1

        def where(level=level, name=name) -> list:
            return stack.names(level, name)

        if stat.S_ISDIR(st.st_mode):
            reason = self._dir_reason(name, where, st)
            if reason:
                self.outcome.keep(self._lazy(where), reason)
                top.state.all_gone = False
                return
        parent_fd = stack.ensure_open()
        if parent_fd is None:
            top.state.all_gone = False
            return
        if not stat.S_ISDIR(st.st_mode):
            if not self._leaf(parent_fd, name, where, st):
                top.state.all_gone = False
            return
        fd = self._open_child(parent_fd, name, st.st_ino, where)
        if fd is None:
            top.state.all_gone = False
            return
        state = _DirState(st)
        stack.push(Frame(name, st.st_ino, fd, self._children(fd, where, state), state))

    def _rmdir(self, parent_fd: int, name: str, where: Where, st: os.stat_result) -> bool:
        """Remove an emptied directory if it is old enough (by its stat before the walk)."""
        if self.active.fresh(st, is_dir=True):
            self.outcome.keep(self._lazy(where), "fresh")
            return False
        if self.dry_run:
            self.outcome.gone(self._lazy(where), st.st_blocks * 512)
            return True
        try:
            os.rmdir(name, dir_fd=parent_fd)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                self.outcome.keep(self._lazy(where), "not_empty")
            else:
                self.outcome.error(self._lazy(where), describe_os_error(exc))
            return False
        self.outcome.gone(self._lazy(where), st.st_blocks * 512)
        return True
