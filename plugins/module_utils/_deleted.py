# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Space that deletion cannot free: files deleted but still held open by a process.

What ``lsof +L1`` finds.  Removing ``/tmp/ray`` frees nothing while a raylet
or a worker still writes to its log: the inode lives on until the last file
descriptor closes.  ``deleted_open_files`` lists such files from
``/proc/<pid>/fd``, ``deleted_by_target`` says what they hold on one target,
and ``truncate_deleted_logs`` empties Ray's own deleted logs under pressure.

Truncation runs as root among users who can write ``/tmp`` or Ray's 0777
dirs, and start a process named raylet.  A file is emptied only when a
trusted Ray process holds it, it belongs to that process's user (so root does
only what that user could do), its path lies in a session's ``logs`` dir of a
Ray temp root and its name is a Ray log's.  Right before truncating, the file
is reopened with ``O_PATH`` through the holder's fd (no device is ever
opened), checked to be the very inode listed, regular and still unlinked,
then reopened for writing through that pinned fd.  Nothing raises: what is
not emptied is kept with its reason.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import Iterable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import describe_os_error, display_path, printable
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import mount_namespace, user_label

DELETED_SUFFIX = " (deleted)"
MAX_LISTED = 100
"""Truncated and kept files listed per run; the totals count them all."""
MAX_PATHS = 5
"""Paths shown per process in ``deleted_by_target``."""
RAY_LOG_NAME = re.compile(r"[^/]+\.(?:out|err|log)(?:\.[0-9]+)?", re.ASCII)
SESSION_DIR = re.compile(r"session_[^/]+", re.ASCII)


@dataclass(frozen=True)
class DeletedFile:
    """A regular file with no name left that a process holds open."""

    pid: int
    process: str
    fd: int
    path: str
    dev: int
    ino: int
    bytes: int
    uid: int
    holder_uid: int
    mnt_ns: Optional[str]


def _process_name(psutil, pid: int) -> str:
    """The printable name of a process: psutil's, else ``/proc/<pid>/comm``, else empty."""
    try:
        return printable(psutil.Process(pid).name())
    except Exception:  # psutil.Error (gone, denied), without importing psutil here
        pass
    try:
        with open("/proc/%d/comm" % pid, encoding="utf-8", errors="surrogateescape") as handle:
            return printable(handle.read().rstrip("\n"))
    except OSError:
        return ""


def _real_uid(pid: int) -> Optional[int]:
    """The real uid of a process from ``/proc/<pid>/status``, or None when it is gone."""
    try:
        with open("/proc/%d/status" % pid, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _fd_numbers(pid: int) -> list:
    """A process's open fd numbers in order (none when it is gone or hidden from us)."""
    try:
        return sorted(int(name) for name in os.listdir("/proc/%d/fd" % pid) if name.isdigit())
    except OSError:
        return []


def _deleted_target(link: str) -> Optional[str]:
    """The path an fd link names when it is a deleted file (memfd and anonymous inodes are not), else None."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    if not target.startswith("/") or target.startswith("/memfd:") or not target.endswith(DELETED_SUFFIX):
        return None
    return target[:-len(DELETED_SUFFIX)]


def _held_deleted(link: str) -> Optional[tuple]:
    """``(path, stat)`` of a regular file with no links behind an fd link, else None.

    The link is read again after the stat: an fd closed and reused in between is skipped.
    """
    path = _deleted_target(link)
    if path is None:
        return None
    try:
        st = os.stat(link)  # follows the magic link to the open file itself
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 0 or _deleted_target(link) != path:
        return None
    return path, st


def _process_files(psutil, pid: int) -> list:
    """The deleted-but-open files of one process, each inode once."""
    found, seen = [], set()
    process = holder_uid = mnt_ns = None
    for fd in _fd_numbers(pid):
        held = _held_deleted("/proc/%d/fd/%d" % (pid, fd))
        if held is None or (held[1].st_dev, held[1].st_ino) in seen:
            continue
        path, st = held
        seen.add((st.st_dev, st.st_ino))
        if process is None:
            process, holder_uid, mnt_ns = _process_name(psutil, pid), _real_uid(pid), mount_namespace(pid)
            if holder_uid is None:  # gone
                return []
        found.append(DeletedFile(pid=pid, process=process, fd=fd, path=path, dev=st.st_dev, ino=st.st_ino,
                                 bytes=st.st_blocks * 512, uid=st.st_uid, holder_uid=holder_uid, mnt_ns=mnt_ns))
    return found


def deleted_open_files(psutil, pids: Optional[Iterable[int]] = None) -> list:
    """Every regular file a process holds open while its link count is 0 (``lsof +L1``), as ``DeletedFile``.

    Reads ``/proc/<pid>/fd`` of ``pids`` (every process when None); processes that vanish or deny access are
    skipped.  Several fds of one process to one file make one entry (its lowest fd).
    """
    found = []
    for pid in (psutil.pids() if pids is None else pids):
        found += _process_files(psutil, int(pid))
    return found


def deleted_by_target(files: list, mnt_ns: Optional[str], devs: set, limit: int = 10) -> dict:
    """What deleted-but-open files hold on one target: holders in ``mnt_ns`` (None: any), files on ``devs``.

    ``bytes`` and ``files`` count each inode once however many processes hold it; ``processes`` lists the
    ``limit`` largest holders with their bytes, files and up to ``MAX_PATHS`` paths.
    """
    inodes, holders = {}, {}
    for item in files:
        if (mnt_ns is not None and item.mnt_ns != mnt_ns) or item.dev not in devs:
            continue
        inodes[(item.dev, item.ino)] = max(item.bytes, inodes.get((item.dev, item.ino), 0))
        holder = holders.setdefault(item.pid, {"pid": item.pid, "process": item.process, "bytes": 0, "files": 0,
                                               "paths": []})
        holder["bytes"] += item.bytes
        holder["files"] += 1
        if len(holder["paths"]) < MAX_PATHS:
            holder["paths"].append(display_path(item.path))
    ranked = sorted(holders.values(), key=lambda holder: (-holder["bytes"], holder["pid"]))
    return {"bytes": sum(inodes.values()), "files": len(inodes), "processes": ranked[:limit]}


def _normal_absolute(path: str) -> bool:
    """True for an absolute path spelt plainly: no ``.`` or ``..`` component, no empty one but the root's."""
    parts = path.split("/")[1:]
    return path.startswith("/") and (path == "/" or all(part not in ("", ".", "..") for part in parts))


def _in_session_logs(path: str, ray_roots: list) -> bool:
    """True when ``path`` lies in ``<root>/session_*/logs/`` (or below it) for one of ``ray_roots``."""
    if not _normal_absolute(path):
        return False
    for root in ray_roots:
        root = root.rstrip("/") or "/"
        if not _normal_absolute(root):
            continue
        prefix = root if root == "/" else root + "/"
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):].split("/")
        if len(rest) >= 3 and SESSION_DIR.fullmatch(rest[0]) and rest[1] == "logs":
            return True
    return False


def _rule_problem(item: DeletedFile, trusted_pids: set, ray_roots: list) -> Optional[str]:
    """Why a listed file must not be truncated by its path, name or holder, or None when it may."""
    if item.pid not in trusted_pids:
        return "not held by a trusted Ray process (pid %d, %s)" % (item.pid, item.process or "unknown name")
    if item.uid != item.holder_uid:
        return "owned by %s but held by a process of %s: only a file of the holder's own user is emptied" % (
            user_label(item.uid), user_label(item.holder_uid))
    if not _in_session_logs(item.path, ray_roots):
        return "not in a Ray session's logs dir (<ray temp root>/session_*/logs/)"
    if not RAY_LOG_NAME.fullmatch(posixpath.basename(item.path)):
        return "not named like a Ray log (.out, .err or .log, optionally rotated: .log.1)"
    return None


def _still_same(item: DeletedFile, st: os.stat_result) -> Optional[str]:
    """Why the file behind the fd is not the one listed any more, or None when it still is."""
    if (st.st_dev, st.st_ino) != (item.dev, item.ino):
        return "the process's fd %d now holds another file (closed and reused since it was listed)" % item.fd
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink != 0:
        return "not deleted: the file still has a name (link count %d)" % st.st_nlink
    return None


def _truncate(item: DeletedFile, dry_run: bool) -> tuple:
    """``(freed bytes, None)`` after emptying one checked file (or what would be freed), or ``(0, reason)``."""
    try:
        pinned = os.open("/proc/%d/fd/%d" % (item.pid, item.fd), os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0, "gone before truncation: the process exited or closed the file"
    except OSError as exc:
        return 0, "could not reopen it through the process's fd: %s" % describe_os_error(exc)
    try:
        before = os.fstat(pinned)
        problem = _still_same(item, before)
        if problem is not None or dry_run:
            return (0, problem) if problem else (before.st_blocks * 512, None)
        flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
        writable = os.open("/proc/self/fd/%d" % pinned, flags)  # the pinned inode itself, never O_CREAT/O_TRUNC
        try:
            before = os.fstat(writable)
            problem = _still_same(item, before)
            if problem is not None:
                return 0, problem
            os.ftruncate(writable, 0)
            after = os.fstat(writable)
        finally:
            os.close(writable)
        return max(0, (before.st_blocks - after.st_blocks) * 512), None
    except OSError as exc:
        return 0, "could not empty it: %s" % describe_os_error(exc)
    finally:
        os.close(pinned)


def truncate_deleted_logs(files: list, trusted_pids: set, ray_roots: list, dry_run: bool) -> dict:
    """Empty the Ray log files in ``files`` that are deleted but held open (``pressure_truncate_deleted_logs``).

    Only files held by ``trusted_pids``, owned by the holder's real uid, named like a Ray log and lying in a
    ``session_*/logs/`` dir of one of ``ray_roots`` (paths as the holder sees them).  A dry run makes the same
    checks without opening anything for writing.  Returns ``freed_bytes`` and ``truncated`` / ``kept`` lists
    (``MAX_LISTED`` each); never raises for one file.
    """
    freed, truncated, kept, done = 0, [], [], set()
    for item in files:
        if (item.dev, item.ino) in done:  # another holder's fd to an inode already emptied
            continue
        reason = _rule_problem(item, trusted_pids, ray_roots)
        gained = 0
        if reason is None:
            gained, reason = _truncate(item, dry_run)
        if reason is not None:
            if len(kept) < MAX_LISTED:
                kept.append({"pid": item.pid, "path": display_path(item.path), "reason": reason})
            continue
        done.add((item.dev, item.ino))
        freed += gained
        if len(truncated) < MAX_LISTED:
            truncated.append({"pid": item.pid, "process": item.process, "path": display_path(item.path),
                              "bytes": gained})
    return {"freed_bytes": freed, "truncated": truncated, "kept": kept}
