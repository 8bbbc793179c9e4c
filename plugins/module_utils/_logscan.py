# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read only the lines of a log that may matter, from where the last run stopped, at grep's speed.

The lines holding one of a few literal needles are found by ``grep -F`` reading the log from the mark on (its
own file description of the file this process opened safely: grep never opens a path), and only those lines
reach Python. Reading stops at the end of the last complete line: a line still being written is left for the
next run. Memory stays flat: nothing is read whole. A hit is cut at ``MAX_LINE`` bytes.

Where a run stopped is a ``Mark`` per file: its device and inode (a rotation or a truncation starts the
file again from 0) and the offset after its last complete line. The number of lines before that offset is known
when the file was read from its start; after a run that resumed, it is counted (``pread``, no grep) only when a
later run finds a hit and needs the hit's line number: events are rare, a pass over every byte twice is not.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

CHUNK = 1 << 20
"""Bytes read at once when counting lines or looking for the last newline."""
MAX_LINE = 1 << 16
"""Bytes of a hit kept."""
GREP_ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
"""grep's environment: bytes, not characters (the C locale is its fast path), and nothing of the caller's."""


class GrepMissing(OSError):
    """No grep on this node: diagnose needs it (every Debian, Ubuntu and Red Hat system has it)."""


@dataclass(frozen=True)
class Mark:
    """Where reading a file stopped: the file (device, inode), the offset after its last complete line read and the
    number of lines before that offset (None: not counted yet)."""

    dev: int
    ino: int
    offset: int = 0
    line: Optional[int] = 0

    def start_for(self, st: os.stat_result) -> "Mark":
        """Where to start reading the file ``st`` is of: here, or at 0 when it is another file or was truncated."""
        if (st.st_dev, st.st_ino) != (self.dev, self.ino) or st.st_size < self.offset:
            return Mark(st.st_dev, st.st_ino)
        return self

    def to_list(self) -> list:
        """For a state file (JSON)."""
        return [self.dev, self.ino, self.offset, self.line]

    @classmethod
    def from_list(cls, value: Sequence) -> Optional["Mark"]:
        """A ``Mark`` from ``to_list()``'s form, or None when it is not of that form (a damaged state file)."""
        if isinstance(value, (list, tuple)) and len(value) == 4 and all(
                (isinstance(item, int) and not isinstance(item, bool) and item >= 0) or (index == 3 and item is None)
                for index, item in enumerate(value)):
            return cls(*value)
        return None


@dataclass
class Hit:
    """A complete line holding one of the needles: its number (1-based) and its bytes (cut at ``MAX_LINE``)."""

    line: int
    text: bytes


def _complete_end(fd: int, start: int, size: int) -> int:
    """The offset after the last newline in ``[start, size)`` of the file, or ``start`` when there is none."""
    at = size
    while at > start:
        step = min(CHUNK, at - start)
        found = os.pread(fd, step, at - step).rfind(b"\n")
        if found != -1:
            return at - step + found + 1
        at -= step
    return start


def _count_lines(fd: int, start: int, end: int) -> int:
    """The newlines in ``[start, end)`` of the file, read with ``pread`` (the fd's offset is left alone)."""
    lines, at = 0, start
    while at < end:
        data = os.pread(fd, min(CHUNK, end - at), at)
        if not data:
            break
        lines += data.count(b"\n")
        at += len(data)
    return lines


def grep_program() -> str:
    """The grep this node has; ``GrepMissing`` naming what to install when there is none."""
    found = shutil.which("grep", path=GREP_ENV["PATH"])
    if found is None:
        raise GrepMissing(2, "grep is not installed in /usr/bin or /bin; install it (Debian/Ubuntu: apt-get install "
                             "grep)")
    return found


class LogReader:
    """The lines of an open log holding any of ``needles``, from ``start`` on; ``end`` says where it stopped."""

    def __init__(self, fd: int, start: Mark, needles: Sequence[bytes], grep: Optional[str] = None) -> None:
        self.fd = fd
        self.end = start
        self.needles = tuple(needles)
        self.grep = grep or grep_program()

    def hits(self) -> Iterator[Hit]:
        """Each complete line holding a needle, in order. ``end`` is final once this is exhausted."""
        start = self.end
        end = _complete_end(self.fd, start.offset, os.fstat(self.fd).st_size)
        if end <= start.offset:
            return
        own = os.open("/proc/self/fd/%d" % self.fd, os.O_RDONLY | os.O_CLOEXEC)  # grep's own offset, same file
        try:
            os.lseek(own, start.offset, os.SEEK_SET)
            argv = [self.grep, "-a", "-n", "-b", "-F"] + [arg for needle in self.needles for arg in (b"-e", needle)]
            proc = subprocess.Popen(argv, stdin=own, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=GREP_ENV,
                                    close_fds=True)
        finally:
            os.close(own)
        base = start.line
        try:
            for raw in proc.stdout:
                number, offset, text = raw.split(b":", 2)
                if start.offset + int(offset) >= end:  # the line still being written (or past it)
                    break
                if base is None:  # resumed where the lines were not counted: count them once, for this hit
                    base = _count_lines(self.fd, 0, start.offset)
                yield Hit(base + int(number), text.rstrip(b"\n")[:MAX_LINE])
        finally:
            if proc.poll() is None:
                proc.kill()
            _out, err = proc.communicate()
        if proc.returncode not in (0, 1, -9):
            raise OSError(5, "grep failed (exit %d): %s" % (proc.returncode, err.decode("utf-8", "replace").strip()))
        self.end = Mark(start.dev, start.ino, end, None)
