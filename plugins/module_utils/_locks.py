# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One run at a time: the ``flock`` that cron's cleanup, the modules and the metrics writer share.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from typing import Optional


class LockError(OSError):
    """A lock file that is not this user's own regular file, or a lock still held after the timeout."""


def open_lock_file(path: str, dir_fd: Optional[int] = None, directory: str = "") -> int:
    """A descriptor of the lock file ``path`` (relative to ``dir_fd``, which is ``directory``, when given).

    It is created mode 0600 when missing, never opened through a symlink.
    ``LockError`` when it is not a regular file owned by this user: someone
    else made it (in a directory others may write) to hold its ``flock`` forever.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
        return fd
    os.close(fd)
    raise LockError("lock file %s is not a regular file of this user (uid %d; its owner is uid %d): someone else "
                    "may have made it to hold the lock forever; remove it, and keep the lock in a directory only "
                    "uid %d can write" % (os.path.join(directory, path), os.geteuid(), info.st_uid, os.geteuid()))


def flock_within(fd: int, timeout: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, retrying for up to ``timeout`` seconds; False when still held."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


class CleanupLock:
    """One cleanup per host: an exclusive ``flock`` on ``path``, waited for up to ``timeout`` seconds."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd: Optional[int] = None
        self.reason: Optional[str] = None

    def acquire(self) -> bool:
        """Take the lock; False (``reason`` says why) when another run holds it or the file is not ours."""
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            self.fd = open_lock_file(self.path)
        except LockError as exc:
            self.reason = str(exc)
            return False
        if flock_within(self.fd, self.timeout):
            return True
        self.release()
        self.reason = "another cleanup holds %s (waited %gs)" % (self.path, self.timeout)
        return False

    def release(self) -> None:
        """Let the next run go."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
