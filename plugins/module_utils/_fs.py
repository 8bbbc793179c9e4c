# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Directories opened by file descriptor, inside a root that may not be ours.

A *tree* is where paths are resolved: ``/`` for the host, or
``/proc/<pid>/root`` for a container.  ``/proc/<pid>/root`` only *enters* a
container's root: an absolute symlink met after it would resolve against the
host's root if the kernel followed it.  So every path is resolved here one
component at a time from an fd of the tree's root, each opened with
``O_NOFOLLOW``; a symlink on the way is read and resolved inside the root (an
absolute target starts again at the root, ``..`` never climbs above it), as
runc's filepath-securejoin and ``openat2(RESOLVE_IN_ROOT)`` do.  The last
component is never followed: a directory to work in that is itself a symlink
is refused.

With ``trusted_uids``, a path is also checked the way sudo and sshd's
StrictModes check theirs: every directory passed through is owned by a
trusted user and not writable by others, or is sticky (like ``/tmp``) with
the entry below it owned by a trusted user; the final directory is owned by a
trusted user.  Then no other user can have chosen where the path leads.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)
MAX_SYMLINKS = 40
"""Symlinks followed while resolving one path, as the kernel's ``ELOOP`` limit."""


class UnsafePath(OSError):
    """A path that leads through a symlink where none may be, or through a directory others control."""


def is_filesystem_root(path: str) -> bool:
    """Whether a path names ``/`` (also as ``//`` or ``/tmp/..``: ``normpath`` keeps two leading slashes)."""
    return not os.path.normpath(path).strip("/")


def open_dir(name: str, dir_fd: Optional[int] = None) -> int:
    """Open a directory without following a final symlink or updating its atime."""
    try:
        return os.open(name, _DIR_FLAGS | _NOATIME, dir_fd=dir_fd)
    except PermissionError:
        if not _NOATIME:
            raise
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)  # O_NOATIME needs ownership


def open_regular(name: str, dir_fd: Optional[int] = None, owners: Optional[frozenset] = None,
                 follow: bool = False) -> int:
    """An fd open for reading of a regular file, never of a device, fifo or socket, never through a symlink.

    The entry is pinned with ``O_PATH`` (which opens nothing: no device driver runs, no fifo blocks or wakes its
    writer), ``O_NOFOLLOW`` unless ``follow`` (``/proc/<pid>/fd/<n>`` is a magic link to the very file a process
    holds), checked through that fd (a regular file, owned by one of ``owners`` when given), and only then opened
    for reading through it.  ``UnsafePath`` when it is not such a file; ``OSError`` as the kernel raises it.
    """
    flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    pinned = os.open(name, flags, dir_fd=dir_fd)
    try:
        st = os.fstat(pinned)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(errno.EPERM, "%s is not a regular file (mode %06o): not opened" % (name, st.st_mode))
        if owners is not None and st.st_uid not in owners:
            raise UnsafePath(errno.EPERM, "%s is owned by uid %d, not by a trusted user: not opened" % (name, st.st_uid))
        return os.open("/proc/self/fd/%d" % pinned, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(pinned)


def read_head(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of an open file (short reads gathered)."""
    chunks, left, offset = [], limit, 0
    while left > 0:
        chunk = os.pread(fd, left, offset)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a write to a pipe or a file may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_private(path: str, data: bytes) -> None:
    """Write ``path`` atomically, readable by its owner only (0600): a temporary file beside it, made anew (never
    through a link), flushed and renamed over it; a reader sees the old file or the new one, never a part."""
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _components(path: str) -> list:
    return [part for part in path.split("/") if part and part != "."]


def _others_may_write(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _check_step(parent: os.stat_result, child: os.stat_result, trusted: frozenset, where: str) -> None:
    """Whether an entry of ``parent`` can only have been put there by a trusted user; ``UnsafePath`` if not."""
    if parent.st_uid not in trusted:
        raise UnsafePath(errno.EPERM, "a directory on the way to %s is owned by uid %d, not by a trusted user"
                         % (where, parent.st_uid))
    if _others_may_write(parent) and not (parent.st_mode & stat.S_ISVTX and child.st_uid in trusted):
        raise UnsafePath(errno.EPERM, "a directory on the way to %s may be written by other users (mode %04o), "
                         "and its entry is owned by uid %d" % (where, stat.S_IMODE(parent.st_mode), child.st_uid))


def open_beneath(root: str, path: str, trusted_uids: Optional[frozenset] = None) -> int:
    """An fd of the directory ``path`` (absolute, as seen inside ``root``), resolved inside ``root``.

    ``OSError`` as the kernel would raise it (``ENOENT``, ``EACCES``...);
    ``UnsafePath`` when the last component is a symlink, or, with
    ``trusted_uids``, when a directory on the way is not trusted (see the
    module's doc).
    """
    if not os.path.isabs(path):
        raise ValueError("path %r must be absolute" % path)
    trusted = None if trusted_uids is None else frozenset(trusted_uids) | {0}
    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]  # /proc/<pid>/root is meant to be entered
    stats = [os.fstat(stack[0])]
    parts = deque(_components(path))
    links = 0
    try:
        while parts:
            name = parts.popleft()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    stats.pop()
                continue
            try:
                fd = open_dir(name, dir_fd=stack[-1])
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.lstat(name, dir_fd=stack[-1])
                if not stat.S_ISLNK(st.st_mode):
                    raise
                if not parts:
                    raise UnsafePath(errno.ELOOP, "%s is a symlink; give the real directory instead" % path) from exc
                links += 1
                if links > MAX_SYMLINKS:
                    raise UnsafePath(errno.ELOOP, "too many symlinks on the way to %s" % path) from exc
                if trusted is not None:
                    _check_step(stats[-1], st, trusted, path)
                target = os.readlink(name, dir_fd=stack[-1])
                parts.extendleft(reversed(_components(target)))
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                        stats.pop()
                continue
            stack.append(fd)
            stats.append(os.fstat(fd))
            if trusted is not None:
                _check_step(stats[-2], stats[-1], trusted, path)
        if trusted is not None and stats[-1].st_uid not in trusted:
            raise UnsafePath(errno.EPERM, "%s is owned by uid %d, not by a trusted user" % (path, stats[-1].st_uid))
        if len(stack) == 1:
            return os.dup(stack[0])
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def mounts_below(mountinfo: str, path: str) -> bool:
    """Whether the mount table lists a mount point strictly below ``path`` (True when unreadable)."""
    prefix = os.fsencode(path.rstrip("/") + "/")
    try:
        with open(mountinfo, "rb") as table:
            for line in table:
                fields = line.split()
                if len(fields) > 4 and _unescape_mount_point(fields[4]).startswith(prefix):
                    return True
    except OSError:
        return True
    return False


def _unescape_mount_point(field: bytes) -> bytes:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    if b"\\" not in field:
        return field
    return re.sub(rb"\\([0-7]{3})", lambda match: bytes([int(match.group(1), 8)]), field)


def mount_id(fd: int) -> Optional[int]:
    """The mount id of an open file (from ``/proc/self/fdinfo``), or None without /proc."""
    try:
        info_fd = os.open("/proc/self/fdinfo/%d" % fd, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(info_fd, 4096)
    finally:
        os.close(info_fd)
    for line in data.splitlines():
        if line.startswith(b"mnt_id:"):
            return int(line.split()[1])
    return None


def _mount_table(mountinfo: str) -> dict:
    """``{mount id: (device, root within the filesystem, mount point)}`` of a mount table."""
    table = {}
    try:
        with open(mountinfo, "rb") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 4:
                    major, minor = fields[2].split(b":")
                    table[int(fields[0])] = (os.makedev(int(major), int(minor)),
                                             os.fsdecode(_unescape_mount_point(fields[3])),
                                             os.fsdecode(_unescape_mount_point(fields[4])))
    except (OSError, ValueError):
        pass
    return table


def _below(path: str, top: str) -> Optional[str]:
    """``path`` relative to ``top`` (``""`` when equal), or None when it is not below it."""
    if path == top or top == "/":
        return path[len(top):].lstrip("/") if path != top else ""
    return path[len(top) + 1:] if path.startswith(top + "/") else None


def host_path_of(fd: int, mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """Where an open directory really is, as this host names it; None when no host path leads to it.

    ``/proc/self/fd`` prints a directory on a mount this root cannot reach
    (a container's overlay) relative to that mount, which reads like a host
    path: it is mapped through the mount tables (``mountinfo`` is the table
    of the tree the fd was opened in) and checked to be the same inode.
    """
    try:
        seen = os.readlink("/proc/self/fd/%d" % fd)
        st = os.fstat(fd)
    except OSError:
        return None
    candidates = [seen]
    inner = _mount_table(mountinfo).get(mount_id(fd) or -1)
    if inner is not None:
        # the kernel names the dir from the top of the mounts this root cannot reach: relative to the fd's own
        # mount when that is the top (a container's root), else from the top down (a volume at its /tmp)
        below_point = _below(seen, inner[2].rstrip("/") or "/")
        forms = [seen] + ([below_point] if below_point is not None else [])
        for form in forms:
            in_fs = (inner[1].rstrip("/") + "/" + form.lstrip("/")).rstrip("/") or "/"
            for dev, root, point in _mount_table("/proc/self/mountinfo").values():
                rest = _below(in_fs, root.rstrip("/") or "/") if dev == st.st_dev else None
                if rest is not None:
                    candidates.append((point.rstrip("/") + "/" + rest).rstrip("/") or "/")
    for path in candidates:
        try:
            here = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino):
            return path
    return None


def _stat_field(pid: int, number: int) -> Optional[int]:
    """Field ``number`` (1-based, as proc(5) counts) of ``/proc/<pid>/stat``, or None if the process is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()  # from field 3 on: the name in field 2 may hold spaces
    return int(fields[number - 3]) if len(fields) > number - 3 else None


def process_start_time(pid: int) -> Optional[int]:
    """A process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None if gone."""
    return _stat_field(pid, 22)


def process_parent(pid: int) -> Optional[int]:
    """A process's parent pid (``/proc/<pid>/stat`` field 4), or None if gone."""
    return _stat_field(pid, 4)


class TreeChanged(OSError):
    """The process whose root a tree enters is gone or is another process now (its pid was reused)."""


@dataclass(frozen=True)
class Tree:
    """A root paths are resolved beneath: ``/``, or ``/proc/<pid>/root`` of a process known by its start time."""

    prefix: str = "/"
    pid: Optional[int] = None
    start_time: Optional[int] = None

    def host_path(self, path: str) -> str:
        """The path inside the tree as this process would name it (for messages, never opened)."""
        if self.prefix == "/":
            return path
        return self.prefix.rstrip("/") + "/" + path.lstrip("/")

    def inside(self, host_path: str) -> str:
        """A path from ``host_path()`` back as the tree names it."""
        prefix = self.prefix.rstrip("/")
        return host_path[len(prefix):] if prefix and host_path.startswith(prefix + "/") else host_path

    def still_same(self) -> None:
        """``TreeChanged`` unless the process is still the one the tree was made for."""
        if self.pid is not None and self.start_time is not None and process_start_time(self.pid) != self.start_time:
            raise TreeChanged(errno.ESRCH, "process %d is gone or was replaced (its pid reused): the container stopped or "
                              "restarted during the run" % self.pid)

    def open_dir(self, path: str, trusted_uids: Optional[frozenset] = None) -> int:
        """An fd of the directory ``path`` inside the tree (see ``open_beneath``), checked to be the same process's."""
        fd = open_beneath(self.prefix, path, trusted_uids)
        try:
            self.still_same()
        except TreeChanged:
            os.close(fd)
            raise
        return fd

    def lstat(self, path: str) -> os.stat_result:
        """``lstat`` of any entry inside the tree, its parent resolved inside the tree."""
        parent, name = os.path.split(os.path.normpath(path))
        if not name:
            fd = self.open_dir("/")
            try:
                return os.fstat(fd)
            finally:
                os.close(fd)
        fd = self.open_dir(parent)
        try:
            return os.lstat(name, dir_fd=fd)
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        """The target of a symlink inside the tree (read, never followed)."""
        parent, name = os.path.split(os.path.normpath(path))
        fd = self.open_dir(parent)
        try:
            return os.readlink(name, dir_fd=fd)
        finally:
            os.close(fd)


HOST = Tree()
"""This process's own root."""


def filesystem_of(path: Any, display: Optional[str] = None) -> dict:
    """Size figures of the filesystem holding ``path`` (or an open fd), as ``df`` computes them."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    usable = used + free
    inodes_used = st.f_files - st.f_ffree
    return {
        "path": display or path,
        "total_bytes": total,
        "used_bytes": used,
        "free_bytes": free,
        "used_percent": round(100.0 * used / usable, 1) if usable else 0.0,
        "inodes_total": st.f_files,
        "inodes_used": inodes_used,
        "inodes_free": st.f_favail,
        # None where the filesystem has no inode limit (btrfs, some overlays report 0 inodes)
        "inodes_used_percent": round(100.0 * inodes_used / st.f_files, 1) if st.f_files else None,
    }


def filesystems_under(tree: "Tree", paths: list, skipped: tuple = (FileNotFoundError,)) -> list:
    """``(path, st_dev, figures)`` per filesystem holding one of ``paths``: the first path on each, opened inside
    ``tree`` without following a symlink, with its ``filesystem_of`` figures.  A path raising one of ``skipped``
    (by default: it does not exist) is left out; any other ``OSError`` is raised."""
    found, seen = [], set()
    for path in paths:
        try:
            fd = tree.open_dir(path)
        except skipped:
            continue
        try:
            dev = os.fstat(fd).st_dev
            if dev not in seen:
                seen.add(dev)
                found.append((path, dev, filesystem_of(fd, display=path)))
        finally:
            os.close(fd)
    return found


def mountpoint_of(path: str) -> str:
    """The mount point holding ``path``, walking up until ``os.path.ismount``."""
    path = os.path.abspath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path
