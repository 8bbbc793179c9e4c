# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disk usage scanner: ``du``-like allocated bytes per category.

The walk never follows a symlink, never leaves the filesystem (or mount) of the
root it started from, opens every directory relative to its parent's file
descriptor and checks it is the inode it listed, counts a hard-linked inode
once, and carries on past permission errors and entries that vanish.  It is
iterative, keeps at most ``_fdwalk.FD_BUDGET`` directories open and stores nothing per
file, so depth, path length and file count do not bound it.  Big trees are
split into subtrees that a pool of forked processes walks side by side.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import stat
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional, Protocol, Sequence

from ansible_collections.rayops.disk.plugins.module_utils._errors import describe_os_error, display_path
from ansible_collections.rayops.disk.plugins.module_utils._fdwalk import (
    MOUNT_POINT,
    NOT_A_DIRECTORY,
    REPLACED,
    VANISHED,
    DirStack,
    Frame,
    open_listed_dir,
)
from ansible_collections.rayops.disk.plugins.module_utils._fs import HOST, Tree, mount_id, mounts_below

MAX_REPORTED = 50
"""Errors and skipped entries listed per scan; the rest are only counted."""


class Layout(Protocol):
    """Assigns each entry a tally key, top-down, from its parent's state."""

    def child(self, state: Hashable, key: Hashable, name: str, is_dir: bool) -> tuple[Hashable, Optional[Hashable]]:
        """Return ``(key, state)`` for ``name``; a ``None`` state makes its subtree inherit the key."""


@dataclass(frozen=True)
class Root:
    """A directory to measure: its own key and the layout state of its children.

    ``path`` names it in messages; it is opened as ``inner_path`` (default
    ``path``) resolved inside ``tree`` (default this host's root), never
    through a symlink of the tree to outside it.  ``mountinfo`` is the mount
    table of the tree walked (for a container: ``/proc/<pid>/mountinfo``).
    """

    path: str
    key: Hashable
    state: Optional[Hashable] = None
    mountinfo: str = "/proc/self/mountinfo"
    inner_path: Optional[str] = None
    tree: Tree = HOST

    def open(self) -> int:
        """An fd of the root directory, resolved inside its tree."""
        return self.tree.open_dir(self.inner_path or self.path)


@dataclass
class Tally:
    """Allocated bytes (like ``du -B1``), apparent bytes, counts and newest mtime."""

    bytes: int = 0
    apparent_bytes: int = 0
    files: int = 0
    dirs: int = 0
    newest_mtime: float = 0.0

    def add(self, other: "Tally") -> None:
        """Add another tally into this one."""
        self.bytes += other.bytes
        self.apparent_bytes += other.apparent_bytes
        self.files += other.files
        self.dirs += other.dirs
        self.newest_mtime = max(self.newest_mtime, other.newest_mtime)


@dataclass
class Notes:
    """Errors and skipped entries: the first ``MAX_REPORTED`` of each, and counts."""

    errors: list = field(default_factory=list)
    error_count: int = 0
    skipped: list = field(default_factory=list)
    skipped_count: int = 0

    def error(self, path: str, message: str) -> None:
        """Record an entry that could not be measured."""
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append({"path": display_path(path), "error": message})

    def skip(self, path: str, reason: str) -> None:
        """Record an entry deliberately left out (another filesystem, vanished...)."""
        self.skipped_count += 1
        if len(self.skipped) < MAX_REPORTED:
            self.skipped.append({"path": display_path(path), "reason": reason})

    def merge(self, other: "Notes") -> None:
        """Append another set of notes, keeping the caps."""
        self.error_count += other.error_count
        self.skipped_count += other.skipped_count
        self.errors.extend(other.errors[:MAX_REPORTED - len(self.errors)])
        self.skipped.extend(other.skipped[:MAX_REPORTED - len(self.skipped)])


@dataclass
class ScanResult:
    """What a scan found: tallies per key, per root, and notes."""

    tallies: dict
    root_totals: list
    notes: Notes


@dataclass(frozen=True)
class _RootInfo:
    """Identity of an opened root: the walk must stay on its device and mount.

    ``mnt`` is None when no mount point lies below the root, so directories
    need no mount check (``st_dev`` still keeps the walk on one filesystem).
    """

    dev: int
    ino: int
    mnt: Optional[int]
    own: Tally


_CHANGED = {NOT_A_DIRECTORY: "changed during scan (no longer a directory)", REPLACED: "changed during scan (replaced)"}


# A unit of work: (root index, chain of (name, inode) from the root, key, state).
_Item = tuple


class _Walker:
    """Walks subtrees and accumulates tallies; one per process."""

    def __init__(self, roots: Sequence[Root], layout: Layout, infos: Sequence[Optional[_RootInfo]]) -> None:
        self.roots = roots
        self.layout = layout
        self.infos = infos
        self.other_roots = {(i.dev, i.ino) for i in infos if i is not None}
        self.tallies: dict = {}
        self.root_totals = [Tally() for _root in roots]
        self.hardlinks: dict = {}
        self.notes = Notes()

    def result(self) -> tuple:
        """Picklable partial result."""
        return self.tallies, self.root_totals, self.hardlinks, self.notes

    def _tally(self, key: Hashable) -> Tally:
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally()
        return tally

    def _path(self, ri: int, names: Sequence[str]) -> str:
        return "/".join([self.roots[ri].path.rstrip("/")] + list(names))

    def _open_child(self, ri: int, parent_fd: int, name: str, ino: int, where: Callable[[], list]) -> Optional[int]:
        """Open a listed subdirectory and check it is still the same directory on the same mount.

        ``where()`` gives the names from the root to it, built only for a message.
        """
        info = self.infos[ri]
        fd, why = open_listed_dir(parent_fd, name, ino, info.dev, info.mnt)
        if why in (VANISHED, MOUNT_POINT):
            self.notes.skip(self._path(ri, where()), "vanished" if why == VANISHED else "mount point")
        elif why is not None:
            self.notes.error(self._path(ri, where()), _CHANGED.get(why, why))
        return fd

    def _list(self, ri: int, fd: int, key: Hashable, state: Optional[Hashable], where: Callable[[], list]) -> list:
        """Tally the entries of an open directory; return its subdirectories to walk."""
        subdirs = []
        sums = {}
        try:
            entries = os.scandir(fd)
        except OSError as exc:
            self.notes.error(self._path(ri, where()), describe_os_error(exc))
            return subdirs
        try:
            with entries:
                self._tally_entries(ri, entries, key, state, where, subdirs, sums)
        except OSError as exc:  # reading the directory itself failed part-way
            self.notes.error(self._path(ri, where()), describe_os_error(exc))
        root_total = self.root_totals[ri]
        for ckey, (blocks, apparent, files, dirs, newest) in sums.items():
            found = Tally(blocks * 512, apparent, files, dirs, newest)
            self._tally(ckey).add(found)
            root_total.add(found)
        return subdirs

    def _tally_entries(self, ri: int, entries, key: Hashable, state: Optional[Hashable],
                       where: Callable[[], list], subdirs: list, sums: dict) -> None:
        """The hot loop: one ``fstatat`` per entry, sums kept in ``sums[key]`` lists, no path strings.

        Each list is [blocks, apparent bytes, files, dirs, newest mtime].
        """
        layout = self.layout
        dev = self.infos[ri].dev
        is_dir_mode = stat.S_ISDIR
        ckey, cstate = key, None
        acc = sums[key] = [0, 0, 0, 0, 0.0]
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                self.notes.skip(self._path(ri, where() + [entry.name]), "vanished")
                continue
            except OSError as exc:
                self.notes.error(self._path(ri, where() + [entry.name]), describe_os_error(exc))
                continue
            is_dir = is_dir_mode(st.st_mode)
            if state is not None:
                ckey, cstate = layout.child(state, key, entry.name, is_dir)
                acc = sums.get(ckey)
                if acc is None:
                    acc = sums[ckey] = [0, 0, 0, 0, 0.0]
            if is_dir:
                if st.st_dev != dev:
                    self.notes.skip(self._path(ri, where() + [entry.name]), "other filesystem")
                    continue
                if (dev, st.st_ino) in self.other_roots:
                    continue  # measured as a root of its own
                acc[3] += 1
                subdirs.append((entry.name, st.st_ino, ckey, cstate))
            elif st.st_nlink > 1:
                ident = (st.st_dev, st.st_ino)
                if ident not in self.hardlinks:
                    self.hardlinks[ident] = (ckey, ri, st.st_blocks * 512, st.st_size, st.st_mtime)
                continue
            else:
                acc[2] += 1
            acc[0] += st.st_blocks
            acc[1] += st.st_size
            if st.st_mtime > acc[4]:
                acc[4] = st.st_mtime

    def _open_item(self, item: _Item) -> Optional[int]:
        """Open the directory an item names, following its chain from the root fd by fd."""
        ri, chain = item[0], item[1]
        root = self.roots[ri]
        info = self.infos[ri]
        if info is None:
            return None
        try:
            fd = root.open()
        except OSError as exc:
            self.notes.error(root.path, describe_os_error(exc))
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (info.dev, info.ino):
            os.close(fd)
            self.notes.error(root.path, "changed during scan (replaced)")
            return None
        names = []
        for name, ino in chain:
            names.append(name)
            child = self._open_child(ri, fd, name, ino, lambda: names)
            os.close(fd)
            if child is None:
                return None
            fd = child
        return fd

    def walk(self, item: _Item, emit_depth: Optional[int] = None) -> list:
        """Walk the subtree of an item (whose own entry is already tallied).

        With ``emit_depth``, directories at that depth below the item are not
        entered but returned as new items, so the caller can hand them out.
        """
        ri, chain, key, state = item
        fd = self._open_item(item)
        if fd is None:
            return []
        base = [name for name, _ino in chain]
        emitted = []

        def open_child(parent_fd, name, ino, where):
            return self._open_child(ri, parent_fd, name, ino, where)

        stack = DirStack(Frame("", 0, fd, self._list(ri, fd, key, state, lambda: base)), open_child, base)
        try:
            while stack:
                top = stack.top
                if not top.pending:
                    stack.pop()
                    continue
                name, ino, ckey, cstate = top.pending.pop()

                def where(name=name):
                    return stack.names(extra=name)

                if emit_depth is not None and len(stack) >= emit_depth:
                    emitted.append((ri, tuple(chain) + tuple((f.name, f.ino) for f in stack.frames[1:])
                                    + ((name, ino),), ckey, cstate))
                    continue
                parent_fd = stack.ensure_open()
                if parent_fd is None:
                    continue
                fd = self._open_child(ri, parent_fd, name, ino, where)
                if fd is None:
                    continue
                pending = self._list(ri, fd, ckey, cstate, where)
                if not pending:
                    os.close(fd)
                    continue
                stack.push(Frame(name, ino, fd, pending))
        finally:
            stack.close()
        return emitted


def default_workers() -> int:
    """Processes to scan with: the CPUs this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def _root_info(root: Root, notes: Notes) -> Optional[_RootInfo]:
    try:
        fd = root.open()
    except OSError as exc:
        notes.error(root.path, describe_os_error(exc))
        return None
    try:
        st = os.fstat(fd)
        mnt = mount_id(fd) if mounts_below(root.mountinfo, root.inner_path or root.path) else None
        return _RootInfo(st.st_dev, st.st_ino, mnt, Tally(st.st_blocks * 512, st.st_size, 0, 1, st.st_mtime))
    finally:
        os.close(fd)


def scan(roots: Sequence[Root], layout: Layout, workers: Optional[int] = None) -> ScanResult:
    """Measure every root; subtrees that are roots themselves are counted once, under their own root.

    ``workers`` > 1 splits big trees across forked processes; small trees are
    finished before the split and never pay for a pool.
    """
    workers = default_workers() if workers is None else max(1, workers)
    notes = Notes()
    infos = [_root_info(root, notes) for root in roots]
    walker = _Walker(roots, layout, infos)
    walker.notes = notes
    for ri, (root, info) in enumerate(zip(roots, infos)):
        if info is not None:
            walker.tallies.setdefault(root.key, Tally()).add(info.own)
            walker.root_totals[ri].add(info.own)
    items = [(ri, (), root.key, root.state) for ri, root in enumerate(roots) if infos[ri] is not None]
    partials = []
    if workers == 1:
        for item in items:
            walker.walk(item)
    else:
        for _depth in range(6):
            if not items or len(items) >= 16 * workers:
                break
            items = [new for item in items for new in walker.walk(item, emit_depth=1)]
        if items:
            partials = _walk_in_workers(walker, items, workers)
    return _merge(walker, partials, roots)


def _walk_in_workers(walker: _Walker, items: list, workers: int) -> list:
    """Walk the items in forked processes; return each process's partial result.

    The items are inherited through fork, and each process takes the next
    index from a shared counter until none is left, so nothing crosses a pipe
    but one result per process.
    """
    context = multiprocessing.get_context("fork")
    counter = context.Value("l", 0)
    children = []
    for _worker in range(workers):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
            os.close(read_fd)
            status = 0
            try:
                mine = _Walker(walker.roots, walker.layout, walker.infos)
                while True:
                    with counter.get_lock():
                        index = counter.value
                        counter.value = index + 1
                    if index >= len(items):
                        break
                    mine.walk(items[index])
                payload = pickle.dumps(("ok", mine.result()))
            except BaseException as exc:  # pylint: disable=broad-exception-caught
                payload = pickle.dumps(("error", "%s: %s" % (exc.__class__.__name__, exc)))
                status = 1
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
            os._exit(status)
        os.close(write_fd)
        children.append((pid, read_fd))
    partials, failures = [], []
    for pid, read_fd in children:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        outcome, value = pickle.loads(data) if data else ("error", "scan worker %d died" % pid)
        (partials if outcome == "ok" else failures).append(value)
    if failures:
        raise RuntimeError("scan worker failed: %s" % failures[0])
    return partials


def _merge(walker: _Walker, partials: list, roots: Sequence[Root]) -> ScanResult:
    tallies, root_totals, hardlinks, notes = walker.result()
    for p_tallies, p_totals, p_hardlinks, p_notes in partials:
        for key, tally in p_tallies.items():
            tallies.setdefault(key, Tally()).add(tally)
        for total, part in zip(root_totals, p_totals):
            total.add(part)
        for ident, value in p_hardlinks.items():
            hardlinks.setdefault(ident, value)
        notes.merge(p_notes)
    for key, ri, size, apparent, mtime in hardlinks.values():
        for tally in (tallies.setdefault(key, Tally()), root_totals[ri]):
            tally.add(Tally(size, apparent, 1, 0, mtime))
    return ScanResult(tallies, root_totals, notes)
