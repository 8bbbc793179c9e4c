# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The directory stack shared by the scanner and the remover.

A walk holds the directories from where it started down to the current one.
Each is opened relative to its parent's file descriptor (never by path, so
symlinks swapped in mid-walk and paths longer than PATH_MAX do not matter),
and at most ``FD_BUDGET`` are open at once: deeper ancestors are closed and,
when needed again, reopened fd by fd from the nearest open one, each step
checked by the caller's ``open_child`` as on the way down.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import describe_os_error
from ansible_collections.rayops.disk.plugins.module_utils._fs import mount_id, open_dir

FD_BUDGET = 64
"""Directories a walk keeps open at once; deeper ancestors are reopened on demand."""


class Frame:
    """A directory on the stack: its name and inode, its fd (None when closed) and what is left to visit."""

    __slots__ = ("name", "ino", "fd", "pending", "state")

    def __init__(self, name: str, ino: int, fd: Optional[int], pending: list, state: Any = None) -> None:
        self.name = name
        self.ino = ino
        self.fd = fd
        self.pending = pending
        self.state = state


VANISHED, NOT_A_DIRECTORY, REPLACED, MOUNT_POINT = "vanished", "not_a_directory", "replaced", "mount_point"
"""Why ``open_listed_dir`` did not open a directory (else the text of the error)."""


def open_listed_dir(parent_fd: int, name: str, ino: int, dev: int, mnt: Optional[int]) -> tuple:
    """Open a directory listed in ``parent_fd`` as the same inode on the same device and mount, never via a link.

    ``(fd, None)``, or ``(None, why)``: ``VANISHED``, ``NOT_A_DIRECTORY`` (now a link or a file), ``REPLACED``,
    ``MOUNT_POINT`` (``mnt`` is the walk's mount id, None when no mount lies below it), or an error's text.
    """
    try:
        fd = open_dir(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return None, VANISHED
    except OSError as exc:
        return None, NOT_A_DIRECTORY if exc.errno in (errno.ELOOP, errno.ENOTDIR) else describe_os_error(exc)
    st = os.fstat(fd)
    why = None
    if st.st_ino != ino or st.st_dev != dev:
        why = REPLACED
    elif mnt is not None and mount_id(fd) != mnt:
        why = MOUNT_POINT
    if why:
        os.close(fd)
        return None, why
    return fd, None


# open_child(parent_fd, name, inode, where) -> fd or None; where() names the path for a message.
OpenChild = Callable[[int, str, int, Callable[[], list]], Optional[int]]


class DirStack:
    """Frames from a start directory (always open) down to the current one."""

    def __init__(self, start: Frame, open_child: OpenChild, base: list) -> None:
        self.frames = [start]
        self.open_child = open_child
        self.base = base

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def top(self) -> Frame:
        """The current directory."""
        return self.frames[-1]

    def names(self, level: Optional[int] = None, extra: Optional[str] = None) -> list:
        """Names from the walk's root down to ``level`` (default the top), plus ``extra``."""
        stop = len(self.frames) if level is None else level + 1
        names = self.base + [frame.name for frame in self.frames[1:stop]]
        return names + [extra] if extra is not None else names

    def push(self, frame: Frame) -> None:
        """Enter a directory (its fd open), closing the oldest ancestors beyond the budget."""
        self.frames.append(frame)
        self._trim()

    def pop(self) -> Frame:
        """Leave the current directory, closing its fd."""
        frame = self.frames.pop()
        if frame.fd is not None:
            os.close(frame.fd)
            frame.fd = None
        return frame

    def close(self) -> None:
        """Close every fd the stack still holds."""
        for frame in self.frames:
            if frame.fd is not None:
                os.close(frame.fd)
                frame.fd = None

    def ensure_open(self, level: Optional[int] = None) -> Optional[int]:
        """The fd of the frame at ``level`` (default the top), reopening closed ancestors on the way.

        While reopening, an ancestor is closed again as soon as its child is
        open unless it lies in the window the budget keeps, so a long chain
        never holds more than ``FD_BUDGET`` directories.  When a directory on
        the way cannot be reopened (gone, replaced), the frames from it down
        are emptied and None is returned.
        """
        level = len(self.frames) - 1 if level is None else level
        if self.frames[level].fd is not None:
            return self.frames[level].fd
        if level + 1 < len(self.frames) and self.frames[level + 1].fd is not None:
            fd = self._parent_of(self.frames[level + 1].fd, self.frames[level].ino)
            if fd is not None:
                self.frames[level].fd = fd
                return fd
        first = level
        while self.frames[first - 1].fd is None:
            first -= 1
        keep_from = max(1, len(self.frames) - FD_BUDGET + 1)
        for current in range(first, level + 1):
            parent, frame = self.frames[current - 1], self.frames[current]

            def where(current=current):
                return self.names(current)

            fd = self.open_child(parent.fd, frame.name, frame.ino, where)
            if 0 < current - 1 < keep_from:
                os.close(parent.fd)
                parent.fd = None
            if fd is None:
                for lost in self.frames[current:]:
                    lost.pending = []
                return None
            frame.fd = fd
        return self.frames[level].fd

    @staticmethod
    def _parent_of(child_fd: int, ino: int) -> Optional[int]:
        """Open ``..`` of an open directory if it is still the inode listed (as good as having kept it open)."""
        try:
            fd = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=child_fd)
        except OSError:
            return None
        st = os.fstat(fd)
        if st.st_ino != ino or st.st_dev != os.fstat(child_fd).st_dev:
            os.close(fd)
            return None
        return fd

    def _trim(self) -> None:
        """Close the oldest open ancestors (never the start) beyond ``FD_BUDGET``.

        Ancestors close from the bottom up and reopen top-down, so the open
        frames are always the start plus a run ending at the top; only the
        start of that run needs checking.
        """
        depth = len(self.frames)
        if depth <= FD_BUDGET:
            return
        level = depth - FD_BUDGET
        while level > 0 and self.frames[level].fd is not None:
            os.close(self.frames[level].fd)
            self.frames[level].fd = None
            level -= 1


class WorkCounter:
    """The next index of shared work, for processes forked side by side (the scanner's and the remover's workers).

    The counter is one 8-byte token in a pipe: a process reads it (the others block until it is back) and writes
    back the index after it, so taking an index is two syscalls, needs no lock or shared memory (nor the import
    of ``multiprocessing``), and a write of 8 bytes, below ``PIPE_BUF``, is always read whole.  Create it before
    forking; every process then calls ``take`` until the index is past the end, and ``close``.
    """

    SIZE = 8

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.write(self.write_fd, (0).to_bytes(self.SIZE, "little"))

    def take(self) -> int:
        """The next index (from 0)."""
        data = os.read(self.read_fd, self.SIZE)
        if len(data) != self.SIZE:
            raise RuntimeError("work counter broken")
        index = int.from_bytes(data, "little")
        os.write(self.write_fd, (index + 1).to_bytes(self.SIZE, "little"))
        return index

    def close(self) -> None:
        """Close this process's ends of the pipe."""
        os.close(self.read_fd)
        os.close(self.write_fd)
