# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ray's log settings in an environment file or a systemd drop-in: the core of ``ray_log_config``.

Ray reads ``RAY_ROTATION_MAX_BYTES`` with ``int()`` (a "512M" makes ``ray
start`` crash; 0 means no rotation), ``RAY_ROTATION_BACKUP_COUNT`` as an
integer, and ``RAY_BACKEND_LOG_LEVEL`` as a name (trace, debug, info,
warning, error, fatal); a number there is ignored with "Unrecognized
setting".  So values are normalised before they are written: sizes become
integers, Python-style levels 10-50 become names.  Rendering keeps every
other line and comment of the file.

The file is read and written as root, often in a directory another user owns
(``/opt/ray/.env``).  ``Destination`` therefore works only through file
descriptors: its directory is opened one component at a time from ``/`` and no
symlink is followed on the way or at the final name (one is refused, not read);
the current file is opened only once it is pinned and checked to be a regular
file (``_fs.open_regular``: a fifo or device swapped in is never opened) and is
read through that fd, checked to have one link; new content goes into a private
0700 directory, gets its mode and owner through its fd and is renamed into place
between directory fds.  No path that a user could swap for a symlink is ever
chowned or chmodded.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import secrets
import shlex
import stat
import time
from typing import Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._fs import UnsafePath, open_regular, write_all
from ansible_collections.rayops.disk.plugins.module_utils._units import parse_size

MAX_BYTES = "RAY_ROTATION_MAX_BYTES"
BACKUP_COUNT = "RAY_ROTATION_BACKUP_COUNT"
LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL"
MANAGED = (MAX_BYTES, BACKUP_COUNT, LOG_LEVEL)

LEVEL_NAMES = ("trace", "debug", "info", "warning", "error", "fatal")
NUMERIC_LEVELS = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "fatal"}
"""Python's logging numbers, as the users' documents write them (40 = ERROR)."""

_ENV_LINE = re.compile(r"^(\s*(?:export\s+)?)([A-Za-z_][A-Za-z0-9_]*)=")
_SECTION = re.compile(r"^\s*\[([^]]+)\]\s*$")


def settings(max_bytes=None, backup_count=None, log_level=None) -> dict:
    """The managed settings as Ray reads them (only those given), or ``UsageError`` naming the bad value."""
    wanted = {}
    if max_bytes is not None:
        wanted[MAX_BYTES] = str(parse_size(max_bytes, "rotation_max_bytes"))
    if backup_count is not None:
        if isinstance(backup_count, bool) or not isinstance(backup_count, int) or backup_count < 1:
            raise UsageError("rotation_backup_count %r must be a whole number of 1 or more (Ray treats 0 as 1); "
                             "for example 2" % (backup_count,))
        wanted[BACKUP_COUNT] = str(backup_count)
    if log_level is not None:
        wanted[LOG_LEVEL] = level_name(log_level)
    return wanted


def level_name(value) -> str:
    """Ray's name for a log level given as a name (any case) or as Python's 10-50."""
    text = str(value).strip().lower()
    if text in LEVEL_NAMES:
        return text
    if text.isdigit() and int(text) in NUMERIC_LEVELS:
        return NUMERIC_LEVELS[int(text)]
    if text in ("critical", "warn"):
        return {"critical": "fatal", "warn": "warning"}[text]
    raise UsageError("backend_log_level %r is not a level Ray knows; use one of %s (or 10, 20, 30, 40, 50)"
                     % (value, ", ".join(LEVEL_NAMES)))


def _with_newline(lines: list) -> list:
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def render_env(text: str, wanted: dict, absent: bool = False) -> str:
    """A ``KEY=value`` file with the managed keys set (or removed), everything else kept.

    A key already there is rewritten in place (an ``export`` kept); repeats
    of it are dropped; missing keys are appended.
    """
    out, seen = [], set()
    for line in text.splitlines(keepends=True):
        match = _ENV_LINE.match(line)
        key = match.group(2) if match else None
        if key not in MANAGED:
            out.append(line)
            continue
        if absent or key in seen or key not in wanted:
            if not absent and key not in wanted:
                out.append(line)  # managed by name but not asked for this time: leave it
            continue
        seen.add(key)
        out.append("%s%s=%s\n" % (match.group(1), key, wanted[key]))
    if not absent:
        out = _with_newline(out) + ["%s=%s\n" % (key, wanted[key]) for key in MANAGED if key in wanted and key not in seen]
    return "".join(out)


def _assignments(value: str) -> Optional[list]:
    """The ``KEY=value`` words of a systemd ``Environment=`` value, or None when it cannot be split."""
    try:
        return shlex.split(value)
    except ValueError:
        return None


def render_systemd(text: str, wanted: dict, absent: bool = False) -> str:
    """A systemd unit or drop-in with ``Environment="KEY=value"`` lines for the managed keys in ``[Service]``.

    Managed assignments are taken out of existing ``Environment=`` lines
    (other assignments on them stay); one line per key is written at the end
    of ``[Service]``, which is added when missing.
    """
    lines = text.splitlines(keepends=True)
    out, section, service_end = [], None, None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            if section == "Service":
                service_end = len(out)
            section = header.group(1).strip()
            out.append(line)
            continue
        stripped = line.strip()
        if section == "Service" and stripped.startswith("Environment="):
            words = _assignments(stripped[len("Environment="):])
            if words is not None and any(w.split("=", 1)[0] in MANAGED for w in words):
                keep = [w for w in words if w.split("=", 1)[0] not in MANAGED or
                        (w.split("=", 1)[0] not in wanted and not absent)]
                if keep:
                    out.append("Environment=%s\n" % " ".join(shlex.quote(w) for w in keep))
                continue
        out.append(line)
    if section == "Service":
        service_end = len(out)
    if absent or not wanted:
        return "".join(out)
    new = ['Environment="%s=%s"\n' % (key, wanted[key]) for key in MANAGED if key in wanted]
    if service_end is None:
        out = _with_newline(out) + (["\n"] if out else []) + ["[Service]\n"] + new
    else:
        while service_end > 0 and not out[service_end - 1].strip():
            service_end -= 1  # after the section's last line, before blank lines
        out = _with_newline(out[:service_end]) + new + out[service_end:]
    return "".join(out)


def render(text: str, file_format: str, wanted: dict, absent: bool = False) -> str:
    """The new content of a file of ``file_format`` (``env`` or ``systemd``)."""
    if file_format == "systemd":
        return render_systemd(text, wanted, absent)
    return render_env(text, wanted, absent)


PRIVATE_PREFIX = ".ray_log_config-"
"""Names of the private directories made next to the destination (removed after each write)."""
TEMP_NAME = "new"
PRIVATE_ATTEMPTS = 12
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_SKIP = ("security.capability",)
_XATTR_IGNORED = (errno.EPERM, errno.ENOTSUP, errno.ENODATA, errno.EINVAL)
_IS_DIR = "path %r is a directory; give the environment file or drop-in to manage"
_KINDS = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"))


def user_id(owner) -> int:
    """The uid of ``owner``, a name or a number (as ``chown`` and Ansible read it)."""
    try:
        return int(owner)
    except ValueError:
        try:
            return pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise UsageError("owner %r is not a user on this host; give an existing user name or uid" % owner)


def group_id(group) -> int:
    """The gid of ``group``, a name or a number."""
    try:
        return int(group)
    except ValueError:
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsageError("group %r is not a group on this host; give an existing group name or gid" % group)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _copy_xattrs(src: int, dst: int) -> None:
    """Extended attributes (SELinux label, ACL) from fd to fd, as ``shutil.copystat`` would by path."""
    try:
        names = os.listxattr(src)
    except OSError as exc:
        if exc.errno in _XATTR_IGNORED:
            return
        raise
    for name in names:
        if name in _XATTR_SKIP:
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name))
        except OSError as exc:
            if exc.errno not in _XATTR_IGNORED:
                raise


def _link_refused(walked: str, path: str, dirfd: int, name: str) -> UsageError:
    """The error for a symlink ``name`` (at ``walked``) met on the way to ``path``."""
    return UsageError(
        "%r, a directory on the way to path %r, is a symlink to %r; ray_log_config never goes through one, as "
        "whoever can change the link (or the directory holding it) could point it at another directory, such as a "
        "root-only one: give the real path %r instead"
        % (walked, path, os.readlink(name, dir_fd=dirfd), os.path.realpath(path)))


def open_directory(directory: str, path: str) -> int:
    """An fd of ``directory`` (the directory of ``path``), opened one component at a time, never through a link.

    From ``/`` for an absolute path, else from the working directory; each component with ``O_NOFOLLOW |
    O_DIRECTORY``.  A symlink anywhere on the way is a ``UsageError`` naming it and its target;
    ``FileNotFoundError`` when a component is missing, ``NotADirectoryError`` when one is not a directory.
    """
    walked = "/" if directory.startswith("/") else ""
    fd = os.open(walked or ".", _DIR_FLAGS)
    try:
        for name in directory.split("/"):
            if name in ("", "."):
                continue
            walked = os.path.join(walked, name)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and \
                        stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _link_refused(walked, path, fd, name) from exc
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


class Destination:
    """The file to manage, reached once through its directory's fd; nothing afterwards goes by path.

    A user who owns the directory can rename, replace or symlink any entry in it
    at any moment, so every step is done on an fd we hold: ``content`` comes from
    an fd opened with ``O_NOFOLLOW`` and checked (a regular file, one link),
    ``replace`` writes a new file in a private directory and renames it into
    place, ``set_attributes`` and ``backup`` work on fds too.  ``content`` is
    None when the file (or its directory, as in check mode on a fresh node)
    does not exist.
    """

    def __init__(self, path: str):
        self.path = path
        self.directory, self.name = os.path.split(path)
        self.dirfd = self.fd = self.stat = self.content = None
        if self.name in ("", ".", ".."):
            raise UsageError(_IS_DIR % path)
        try:
            self.dirfd = open_directory(self.directory, path)
        except FileNotFoundError:
            return  # nothing to read; writing says what is missing
        except NotADirectoryError:
            raise UsageError("the directory of path %r is not a directory; give the path of the file to manage" % path)
        try:
            self._open_current()
        except BaseException:
            self.close()
            raise

    @property
    def exists(self) -> bool:
        return self.fd is not None

    def _refuse(self, st) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(
                "path %r is a symlink; ray_log_config never reads or writes through one, as whoever can change the "
                "link (or its directory) could point it at another file: give the real file %r instead"
                % (self.path, os.path.realpath(self.path)))
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(_IS_DIR % self.path)
        for test, kind in _KINDS:
            if test(st.st_mode):
                raise UsageError("path %r is a %s, not a regular file; give the environment file or drop-in to manage"
                                 % (self.path, kind))

    def _open_current(self) -> None:
        try:
            self._refuse(os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False))
            fd = open_regular(self.name, dir_fd=self.dirfd)  # only a regular file is ever opened
        except FileNotFoundError:
            return
        except UnsafePath:  # became a symlink, fifo or device since the lstat: say which
            self._refuse(os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False))
            raise
        self.fd, self.stat = fd, os.fstat(fd)
        self._refuse(self.stat)
        if self.stat.st_nlink != 1:
            raise UsageError(
                "path %r has %d hard links; ray_log_config neither reads nor writes such a file, as another name of it "
                "may be a different file (a user who can write to the directory may link one there): make it a file "
                "of its own (cp -p FILE FILE.new && mv FILE.new FILE) or give the other path"
                % (self.path, self.stat.st_nlink))
        self.content = _read_all(fd)

    def close(self) -> None:
        for fd in (self.fd, self.dirfd):
            if fd is not None:
                os.close(fd)
        self.fd = self.dirfd = None

    def attributes_differ(self, mode=None, uid=None, gid=None) -> bool:
        """Whether the current file's mode, owner or group differ from those given (None: not managed)."""
        if self.stat is None:
            return False
        return ((mode is not None and stat.S_IMODE(self.stat.st_mode) != mode)
                or (uid is not None and self.stat.st_uid != uid) or (gid is not None and self.stat.st_gid != gid))

    def set_attributes(self, mode=None, uid=None, gid=None) -> None:
        """Give the current file the mode, owner and group given, through its fd."""
        if (uid is not None and uid != self.stat.st_uid) or (gid is not None and gid != self.stat.st_gid):
            os.fchown(self.fd, -1 if uid is None else uid, -1 if gid is None else gid)  # may clear set-id bits
        if mode is not None and stat.S_IMODE(os.fstat(self.fd).st_mode) != mode:
            os.fchmod(self.fd, mode)

    def _settle(self, fd: int, mode=None, uid=None, gid=None) -> None:
        """Give a new file ``fd`` the current file's attributes, or those given."""
        old = self.stat
        if old is not None:
            _copy_xattrs(self.fd, fd)
        want_uid = (old.st_uid if old else -1) if uid is None else uid
        want_gid = (old.st_gid if old else -1) if gid is None else gid
        if (want_uid, want_gid) != (-1, -1):
            try:
                os.fchown(fd, want_uid, want_gid)
            except PermissionError:
                if uid is not None or gid is not None:
                    raise  # asked for: say so; only kept ownership is best effort (not root), as Ansible does
        if mode is None:
            mode = stat.S_IMODE(old.st_mode) if old else 0o666 & ~current_umask()
        os.fchmod(fd, mode)

    def _need_directory(self) -> None:
        if self.dirfd is None:
            raise UsageError("the directory of path %r does not exist; create it first (ansible.builtin.file with "
                             "state: directory)" % self.path)

    def backup(self) -> str:
        """A copy of the current file next to it, in a new file (``O_EXCL``), through fds; its path."""
        self._need_directory()
        name = "%s.%s.%s" % (self.name, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S~", time.localtime()))
        fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=self.dirfd)
        try:
            write_all(fd, self.content)
            self._settle(fd)
            os.utime(fd, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))
            os.fsync(fd)
        finally:
            os.close(fd)
        return os.path.join(self.directory, name)

    def replace(self, data: bytes, mode=None, uid=None, gid=None) -> None:
        """Put ``data`` in place atomically with the mode, owner and group given (or the current file's).

        The new file is made, filled, chowned and chmodded inside a private
        directory only we can enter, then renamed over the name between
        directory fds: a user who owns the directory never sees a path of ours
        while we still change it.
        """
        self._need_directory()
        privname, privfd = self._private_dir()
        try:
            fd = os.open(TEMP_NAME, _CREATE_FLAGS, 0o600, dir_fd=privfd)
            try:
                write_all(fd, data)
                self._settle(fd, mode, uid, gid)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(TEMP_NAME, self.name, src_dir_fd=privfd, dst_dir_fd=self.dirfd)
            os.fsync(self.dirfd)
        finally:
            try:
                os.unlink(TEMP_NAME, dir_fd=privfd)
            except FileNotFoundError:
                pass
            self._remove_private(privname, privfd)

    def _private_dir(self):
        """A new directory in the destination's directory, owned by us, mode 0700: its name and an fd of it.

        Made, then opened without following and checked: a user who owns the
        directory may rename it away and put a symlink or their own directory in
        its place before we hold it; then that name is left alone and another
        one tried after a pause (a watcher woken by the new entry is busy right
        after; one that keeps winning gets a clear failure, never our file).
        """
        for attempt in range(PRIVATE_ATTEMPTS):
            if attempt:
                time.sleep(0.005 + secrets.randbelow(20000) / 1e6)
            name = PRIVATE_PREFIX + secrets.token_hex(8)
            try:
                os.mkdir(name, 0o700, dir_fd=self.dirfd)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dirfd)
            except (FileExistsError, FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    continue
                raise
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700:
                return name, fd
            os.close(fd)
        raise UsageError("could not make a private directory in %r to write %r: its entries were replaced %d times "
                         "in a row; another user who can write to that directory is interfering (check its owner)"
                         % (self.directory or ".", self.path, PRIVATE_ATTEMPTS))

    def _remove_private(self, name: str, fd: int) -> None:
        """Remove the private directory if it is still there under its name; else leave it (never follow)."""
        try:
            here = os.stat(name, dir_fd=self.dirfd, follow_symlinks=False)
            mine = os.fstat(fd)
            if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                os.rmdir(name, dir_fd=self.dirfd)
        except OSError:
            pass  # renamed away or replaced by a user who owns the directory: theirs to tidy
        finally:
            os.close(fd)
