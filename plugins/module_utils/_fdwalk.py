# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The directory stack and the forked workers shared by the scanner and the remover.

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
import marshal
import os
from select import select as wait_readable
from typing import Any, Callable, Iterator, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import describe_os_error
from ansible_collections.rayops.disk.plugins.module_utils._fs import mount_id, open_dir, write_all

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


def default_workers() -> int:
    """Processes to scan or remove with, side by side: the CPUs this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


class WorkerFailed(RuntimeError):
    """A forked worker of ``in_workers`` failed: its error, or how it died."""


FINISHED = -1
"""The index ``in_workers`` gives a worker's ``finish()`` value."""

_FAILED = -2
_LENGTH = 8
"""Bytes of a message's length, before each marshalled ``(index, value)``."""


def in_workers(count: int, workers: int, work: Callable[[int], Any],
               finish: Callable[[], Any] = lambda: None) -> Iterator[tuple]:
    """Run ``work(index)`` for each index below ``count`` in ``workers`` forked processes; yield what comes back.

    Each process takes the next index from a ``WorkCounter`` until none is left, then calls ``finish()``.  What
    ``work`` returns (unless None) comes back as ``(index, value)`` as soon as it is sent, and what ``finish``
    returns as ``(FINISHED, value)``: plain data, sent with ``marshal`` (no import and set-up of ``pickle`` or
    ``multiprocessing``; both ends are this very interpreter).  Once every process is reaped, a failure in one
    raises ``WorkerFailed``; the indexes already yielded tell the caller what is done.  Closing the generator
    early closes the pipes (a worker stops at its next write) and reaps every process.
    """
    counter = WorkCounter()
    children: dict = {}
    try:
        for _worker in range(workers):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
                for inherited in [read_fd, *children]:  # only this process's write end: a pipe the parent closes breaks
                    os.close(inherited)
                os._exit(_worker_loop(counter, count, work, finish, write_fd))
            os.close(write_fd)
            children[read_fd] = (pid, bytearray())
    finally:
        counter.close()
    failures = []
    try:
        while children:
            for read_fd in wait_readable(list(children), [], [])[0]:
                pid, buffer = children[read_fd]
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    os.close(read_fd)
                    del children[read_fd]
                    status = os.waitpid(pid, 0)[1]
                    if status and not failures:
                        failures.append("worker %d ended with status %d" % (pid, status))
                    continue
                buffer += chunk
                while len(buffer) >= _LENGTH:  # every whole message that is there
                    end = _LENGTH + int.from_bytes(buffer[:_LENGTH], "little")
                    if len(buffer) < end:
                        break
                    index, value = marshal.loads(bytes(buffer[_LENGTH:end]))
                    del buffer[:end]
                    if index == _FAILED:
                        failures.insert(0, value)
                    else:
                        yield index, value
    finally:
        for read_fd, (pid, _buffer) in children.items():
            os.close(read_fd)
            os.waitpid(pid, 0)
    if failures:
        raise WorkerFailed(failures[0])


def _worker_loop(counter: WorkCounter, count: int, work: Callable[[int], Any], finish: Callable[[], Any],
                 write_fd: int) -> int:  # pragma: no cover - runs in the child
    """A worker of ``in_workers``: take indexes, send results; its exit status."""
    try:
        while True:
            index = counter.take()
            if index >= count:
                break
            _send(write_fd, index, work(index))
        _send(write_fd, FINISHED, finish())
        return 0
    except BaseException as exc:  # pylint: disable=broad-exception-caught
        try:
            _send(write_fd, _FAILED, "%s: %s" % (exc.__class__.__name__, exc))
        except OSError:
            pass
        return 1


def _send(fd: int, index: int, value: Any) -> None:  # pragma: no cover - runs in the child
    if value is not None:
        data = marshal.dumps((index, value))
        write_all(fd, len(data).to_bytes(_LENGTH, "little") + data)
