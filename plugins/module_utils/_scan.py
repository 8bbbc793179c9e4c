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

import os
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
    WorkerFailed,
    default_workers,
    in_workers,
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
        self.sums: dict = {}
        """Per key ``[blocks, apparent bytes, files, dirs, newest mtime]``, folded once per directory."""
        self.root_sums = [[0, 0, 0, 0, 0.0] for _root in roots]
        self.hardlinks: dict = {}
        self.notes = Notes()
        self.keep_roots = False
        """Whether to keep each root open once checked, for the next items below it (in a worker)."""
        self.root_fds: dict = {}

    def close(self) -> None:
        """Close the roots kept open."""
        for fd in self.root_fds.values():
            os.close(fd)
        self.root_fds.clear()

    def result(self) -> tuple:
        """Picklable partial result: plain lists per key and per root, hard links and notes."""
        return self.sums, self.root_sums, self.hardlinks, self.notes

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
        subdirs: list = []
        try:
            entries = os.scandir(fd)
        except OSError as exc:
            self.notes.error(self._path(ri, where()), describe_os_error(exc))
            return subdirs
        sums = self.sums
        with entries:
            groups = [(key, None, entries)] if state is None else self._classified(ri, entries, key, state, where)
            for gkey, gstate, members in groups:
                part = self._tally(ri, members, where, subdirs, gkey, gstate)
                _add(sums.get(gkey) or sums.setdefault(gkey, [0, 0, 0, 0, 0.0]), part)
                _add(self.root_sums[ri], part)
        return subdirs

    def _classified(self, ri: int, entries, key: Hashable, state: Hashable, where: Callable[[], list]) -> list:
        """The entries of a directory the layout classifies one by one (a few near the top), grouped by the
        ``(key, state)`` it gives each: ``[(key, state, entries)]``, the directory's own key first."""
        child = self.layout.child
        groups: dict = {(key, None): []}
        try:
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)  # the type readdir gave (an lstat if it gave none)
                except OSError:
                    is_dir = False
                groups.setdefault(child(state, key, entry.name, is_dir), []).append(entry)
        except OSError as exc:  # reading the directory itself failed part-way
            self._read_failed(ri, where, exc)
        return [(gkey, gstate, members) for (gkey, gstate), members in groups.items()]

    def _read_failed(self, ri: int, where: Callable[[], list], exc: OSError) -> None:
        """Reading a directory failed part-way: what was read counts, the error is noted."""
        self.notes.error(self._path(ri, where()), describe_os_error(exc))

    def _entry_failed(self, ri: int, where: Callable[[], list], name: str, exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError):
            self.notes.skip(self._path(ri, where() + [name]), "vanished")
        else:
            self.notes.error(self._path(ri, where() + [name]), describe_os_error(exc))

    def _tally(self, ri: int, entries, where: Callable[[], list], subdirs: list, key: Hashable,
               state: Optional[Hashable]) -> list:
        """The hot loop: entries that all take ``key`` (their subdirectories ``state``), one ``fstatat`` each,
        sums in local variables, no path strings, no call per entry.

        Returns ``[blocks, apparent bytes, files, dirs, newest mtime]``.
        """
        dev = self.infos[ri].dev
        other_roots = self.other_roots
        hardlinks = self.hardlinks
        append = subdirs.append
        blocks = apparent = files = dirs = 0
        newest = 0.0
        try:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    self._entry_failed(ri, where, entry.name, exc)
                    continue
                if st.st_mode & 0o170000 == 0o040000:  # stat.S_ISDIR, inline
                    if st.st_dev != dev:
                        self.notes.skip(self._path(ri, where() + [entry.name]), "other filesystem")
                        continue
                    if (dev, st.st_ino) in other_roots:
                        continue  # measured as a root of its own
                    dirs += 1
                    append((entry.name, st.st_ino, key, state))
                elif st.st_nlink > 1:
                    ident = (st.st_dev, st.st_ino)
                    if ident not in hardlinks:
                        hardlinks[ident] = (key, ri, st.st_blocks * 512, st.st_size, st.st_mtime)
                    continue
                else:
                    files += 1
                blocks += st.st_blocks
                apparent += st.st_size
                mtime = st.st_mtime
                if mtime > newest:
                    newest = mtime
        except OSError as exc:  # reading the directory itself failed part-way
            self._read_failed(ri, where, exc)
        return [blocks, apparent, files, dirs, newest]

    def _open_item(self, item: _Item) -> Optional[int]:
        """Open the directory an item names, following its chain from the root fd by fd."""
        ri, chain = item[0], item[1]
        root = self.roots[ri]
        info = self.infos[ri]
        if info is None:
            return None
        if chain and ri in self.root_fds:  # the root this process already opened and checked, still open
            fd = os.dup(self.root_fds[ri])
        else:
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
            if chain and self.keep_roots:
                self.root_fds[ri] = os.dup(fd)
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
        frames = stack.frames  # the stack's own list: no method call per directory to look at the top
        try:
            while frames:
                top = frames[-1]
                if not top.pending:
                    stack.pop()
                    continue
                name, ino, ckey, cstate = top.pending.pop()

                def where(name=name):
                    return stack.names(extra=name)

                if emit_depth is not None and len(frames) >= emit_depth:
                    emitted.append((ri, tuple(chain) + tuple((f.name, f.ino) for f in frames[1:])
                                    + ((name, ino),), ckey, cstate))
                    continue
                parent_fd = top.fd if top.fd is not None else stack.ensure_open()
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


def _tally_of(acc: list) -> Tally:
    return Tally(acc[0] * 512, acc[1], acc[2], acc[3], acc[4])


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
    return _merge(walker, partials, roots, infos)


def _walk_in_workers(walker: _Walker, items: list, workers: int) -> list:
    """Walk the items in forked processes (``_fdwalk.in_workers``); return each process's partial result.

    The items are inherited through fork, and each process walks the next one until none is left, so nothing
    crosses a pipe but one result per process.
    """
    mine = _Walker(walker.roots, walker.layout, walker.infos)
    mine.keep_roots = True  # items are subtrees of a few roots: a process opens and checks each root once

    def walk(index: int) -> None:
        mine.walk(items[index])

    def finish() -> tuple:
        sums, root_sums, hardlinks, notes = mine.result()
        return sums, root_sums, hardlinks, vars(notes)

    partials = []
    try:
        for _finished, (sums, root_sums, hardlinks, notes) in in_workers(len(items), workers, walk, finish):
            partials.append((sums, root_sums, hardlinks, Notes(**notes)))
    except WorkerFailed as exc:
        raise RuntimeError("scan worker failed: %s" % exc) from None
    return partials


def _add(acc: list, part: list) -> None:
    acc[0] += part[0]
    acc[1] += part[1]
    acc[2] += part[2]
    acc[3] += part[3]
    if part[4] > acc[4]:
        acc[4] = part[4]


def _merge(walker: _Walker, partials: list, roots: Sequence[Root], infos: Sequence[Optional[_RootInfo]]) -> ScanResult:
    """Fold the partial results (plain lists) together and into tallies, hard links counted once."""
    sums, root_sums, hardlinks, notes = walker.result()
    for p_sums, p_root_sums, p_hardlinks, p_notes in partials:
        for acc, part in zip(root_sums, p_root_sums):
            _add(acc, part)
        for key, part in p_sums.items():
            _add(sums.get(key) or sums.setdefault(key, [0, 0, 0, 0, 0.0]), part)
        for ident, value in p_hardlinks.items():
            hardlinks.setdefault(ident, value)
        notes.merge(p_notes)
    tallies: dict = {}
    root_totals = [Tally() for _root in roots]
    for ri, (root, info) in enumerate(zip(roots, infos)):
        if info is not None:  # the root directory itself
            tallies.setdefault(root.key, Tally()).add(info.own)
            root_totals[ri].add(info.own)
    for key, acc in sums.items():
        tallies.setdefault(key, Tally()).add(_tally_of(acc))
    for total, acc in zip(root_totals, root_sums):
        total.add(_tally_of(acc))
    for key, ri, size, apparent, mtime in hardlinks.values():
        for tally in (tallies.setdefault(key, Tally()), root_totals[ri]):
            tally.add(Tally(size, apparent, 1, 0, mtime))
    return ScanResult(tallies, root_totals, notes)
