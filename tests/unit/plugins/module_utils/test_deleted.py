# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deleted files held open, found and emptied for real: live child processes hold them, ``/proc`` is the kernel's.

Each holder is a real Python process that writes a file laid out like a Ray log, unlinks it and sleeps; what a
test says was emptied is checked through the holder's own fd, and what was kept must still hold every byte.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils._deleted import (
    DeletedFile,
    deleted_by_target,
    deleted_open_files,
    truncate_deleted_logs,
)
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import mount_namespace
from ansible_collections.rayops.disk.tests.unit.conftest import SYSTEM_PYTHON, as_nobody, fd_targets

MIB = 1024 * 1024
SESSION = "session_2026-11-29_10-00-00_000000_1"
NOBODY = 65534
HOLDER = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
fd = spec.get("fd")
if fd is None:
    fd = os.open(spec["path"], os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    left = spec["size"]
    while left:
        left -= os.write(fd, b"r" * min(left, 65536))
    os.fsync(fd)
    if spec.get("unlink", True):
        os.unlink(spec["path"])
held = [fd] + [os.dup(fd) for _ in range(spec.get("dups", 0))]
if spec.get("others"):  # what is not a deleted regular file: a memfd, a removed directory
    memfd = os.memfd_create("raylet.out")
    os.write(memfd, b"m" * 65536)
    os.mkdir(spec["path"] + ".d")
    gone_dir = os.open(spec["path"] + ".d", os.O_RDONLY | os.O_DIRECTORY)
    os.rmdir(spec["path"] + ".d")
pids = [os.getpid()]
if spec.get("fork"):
    child = os.fork()
    if child == 0:
        while True:
            time.sleep(60)
    pids.append(child)
print(json.dumps({"pids": pids, "fds": held}), flush=True)
for line in sys.stdin:
    if line.strip() == "swap":  # the same fd number now holds another deleted file
        new = os.open(spec["path"] + ".new", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(new, b"n" * 4096)
        os.fsync(new)
        os.unlink(spec["path"] + ".new")
        os.dup2(new, fd)
        os.close(new)
        print("swapped", flush=True)
time.sleep(3600)
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs a holder as another user")


class Holder:
    """A live process holding a file open; ``pid`` and ``fd`` are its, ``pids`` include a forked child."""

    def __init__(self, proc, ready):
        self.proc = proc
        self.pid = proc.pid
        self.pids = ready["pids"]
        self.fd = ready["fds"][0]

    @property
    def link(self):
        """The holder's fd as this process reaches it."""
        return "/proc/%d/fd/%d" % (self.pid, self.fd)

    def stat(self):
        """The held file's stat, through the holder's fd."""
        return os.stat(self.link)

    def send(self, line):
        """Tell the holder to do something; its one-line answer."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def kill(self):
        """Kill the holder and its forked child (the session it leads); reap the holder, and wait until the child
        holds no file either (gone, or a zombie: SIGKILL lands when the kernel gets to it, later under load)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        children = []
        for pid in self.pids[1:]:
            try:
                children.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + 30
        while any(_holds_files(child) for child in children):
            assert time.monotonic() < deadline, "the holder's child outlived SIGKILL"
            time.sleep(0.05)


def _holds_files(proc):
    """Whether a process still runs (not exited, not a zombie) and so may hold files."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def hold():
    """``hold(path, size=MIB, **spec)``: start a holder of ``path``; every holder is killed at the end.

    Its stderr is a pipe: pytest's capture file, deleted and open, would be inherited as one more deleted file.
    """
    holders = []

    def start(path, size=MIB, user=None, pass_fd=None, wrap=(), **spec):
        spec.update(path=str(path), size=size, fd=pass_fd)
        extra = {} if user is None else {"user": user, "group": user, "extra_groups": []}
        python = sys.executable if user is None else SYSTEM_PYTHON
        proc = subprocess.Popen(list(wrap) + [python, "-c", HOLDER, json.dumps(spec)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", start_new_session=True,
                                pass_fds=() if pass_fd is None else (pass_fd,), **extra)
        holders.append(proc)
        line = proc.stdout.readline()
        assert line, "the holder died before it was ready: %s" % proc.communicate(timeout=30)[1]
        holder = Holder(proc, json.loads(line))
        holders[-1] = holder
        return holder

    try:
        yield start
    finally:
        for holder in holders:
            if isinstance(holder, Holder):
                holder.kill()
            else:
                os.killpg(holder.pid, signal.SIGKILL)
                holder.wait(timeout=30)


@pytest.fixture
def ray_root(tmp_path):
    """A Ray temp root with one session's ``logs`` and ``logs/old``."""
    root = tmp_path / "ray"
    (root / SESSION / "logs" / "old").mkdir(parents=True)
    return root


def only(files, holder):
    """The one listed file of a holder."""
    mine = [item for item in files if item.pid == holder.pid]
    assert len(mine) == 1, mine
    return mine[0]


def assert_untouched(holder, size=MIB):
    """The held file still has every byte, allocated."""
    st = holder.stat()
    assert (st.st_size, st.st_blocks * 512 >= size) == (size, True)


def test_lists_a_deleted_file_held_open(hold, ray_root):
    log = ray_root / SESSION / "logs" / "raylet.out"
    holder = hold(log)
    assert not log.exists()
    st = holder.stat()
    found = only(deleted_open_files(psutil, [holder.pid]), holder)
    assert found == DeletedFile(pid=holder.pid, process=psutil.Process(holder.pid).name(), fd=holder.fd,
                                path=str(log), dev=st.st_dev, ino=st.st_ino, bytes=st.st_blocks * 512,
                                uid=os.getuid(), holder_uid=os.getuid(), mnt_ns=mount_namespace(holder.pid))
    assert found.bytes >= MIB and found.process
    assert found in deleted_open_files(psutil)  # every process, this one among them


def test_skips_names_memfds_and_removed_directories(hold, ray_root):
    holder = hold(ray_root / SESSION / "logs" / "raylet.out", unlink=False, others=True)
    links = set(fd_targets(holder.pid).values())
    assert any(link.startswith("/memfd:") for link in links)  # the skipped kinds are really held
    assert any(link.endswith(".d (deleted)") for link in links)
    assert deleted_open_files(psutil, [holder.pid]) == []


def test_a_vanished_or_hidden_process_lists_nothing(hold, ray_root):
    holder = hold(ray_root / SESSION / "logs" / "raylet.out")
    pid = holder.pid
    hidden = as_nobody(lambda: [dataclasses.astuple(item) for item in deleted_open_files(psutil, [pid])])
    assert hidden == []  # root's process: its fds are not nobody's to read
    holder.kill()
    assert deleted_open_files(psutil, [pid]) == []


def test_one_entry_per_process_and_one_inode_per_target(hold, ray_root):
    holder = hold(ray_root / SESSION / "logs" / "raylet.out", dups=2, fork=True)
    st = holder.stat()
    files = deleted_open_files(psutil, holder.pids)
    assert sorted(item.pid for item in files) == sorted(holder.pids)  # three fds in each, one entry each
    assert {(item.dev, item.ino, item.fd) for item in files} == {(st.st_dev, st.st_ino, holder.fd)}
    summary = deleted_by_target(files, None, {st.st_dev})
    assert (summary["bytes"], summary["files"]) == (st.st_blocks * 512, 1)
    assert sorted(process["pid"] for process in summary["processes"]) == sorted(holder.pids)
    assert all((process["bytes"], process["files"], process["paths"]) == (st.st_blocks * 512, 1, [files[0].path])
               for process in summary["processes"])


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_by_target_filters_by_filesystem_and_mount_namespace(hold, ray_root):
    logs = ray_root / SESSION / "logs"
    host = hold(logs / "raylet.out", size=MIB)
    inside = hold(logs / "worker.err", size=MIB // 4, wrap=("unshare", "--mount", "--propagation", "private"))
    assert mount_namespace(inside.pid) not in (None, mount_namespace(host.pid))
    files = deleted_open_files(psutil, [host.pid, inside.pid])
    dev = host.stat().st_dev
    everyone = deleted_by_target(files, None, {dev})
    assert (everyone["files"], [process["pid"] for process in everyone["processes"]]) == (2, [host.pid, inside.pid])
    assert deleted_by_target(files, None, {dev}, limit=1)["processes"] == everyone["processes"][:1]
    assert deleted_by_target(files, None, {dev}, limit=1)["bytes"] == everyone["bytes"]
    for holder in (host, inside):
        alone = deleted_by_target(files, mount_namespace(holder.pid), {dev})
        assert [process["pid"] for process in alone["processes"]] == [holder.pid]
        assert (alone["files"], alone["bytes"]) == (1, holder.stat().st_blocks * 512)
    elsewhere = deleted_by_target(files, None, {os.stat("/proc").st_dev})
    assert elsewhere == {"bytes": 0, "files": 0, "processes": []}


@pytest.mark.parametrize("name", ["raylet.out", "old/python-core-worker-01.log.3", "dashboard.err"])
def test_empties_a_trusted_ray_log(hold, ray_root, name):
    holder = hold(ray_root / SESSION / "logs" / name)
    listed = only(deleted_open_files(psutil, [holder.pid]), holder)
    result = truncate_deleted_logs([listed], {holder.pid}, [str(ray_root)], dry_run=False)
    st = holder.stat()
    assert (st.st_size, st.st_blocks, st.st_nlink) == (0, 0, 0)  # the holder's own file is empty
    assert result == {"freed_bytes": listed.bytes, "kept": [],
                      "truncated": [{"pid": holder.pid, "process": listed.process, "path": listed.path,
                                     "bytes": listed.bytes}]}
    assert holder.proc.poll() is None  # the holder goes on, its fd still open
    again = truncate_deleted_logs(deleted_open_files(psutil, [holder.pid]), {holder.pid}, [str(ray_root)], False)
    assert again["freed_bytes"] == 0


def test_dry_run_decides_alike_and_empties_nothing(hold, ray_root):
    holder = hold(ray_root / SESSION / "logs" / "raylet.out")
    listed = only(deleted_open_files(psutil, [holder.pid]), holder)
    dry = truncate_deleted_logs([listed], {holder.pid}, [str(ray_root) + "/"], dry_run=True)
    assert_untouched(holder)
    assert (dry["freed_bytes"], dry["kept"], [item["path"] for item in dry["truncated"]]) == (listed.bytes, [], [listed.path])
    kept = truncate_deleted_logs([listed], set(), [str(ray_root)], dry_run=True)
    assert (kept["freed_bytes"], kept["truncated"], len(kept["kept"])) == (0, [], 1)
    assert_untouched(holder)
    assert truncate_deleted_logs([listed], {holder.pid}, [str(ray_root)], dry_run=False) == dry  # as it said


def outside(tmp_path):
    """A Ray-like session elsewhere than the Ray temp root."""
    return tmp_path / "elsewhere" / SESSION / "logs" / "raylet.out"


@pytest.mark.parametrize("where, trusted, roots, path, reason", [
    (lambda root, tmp: root / SESSION / "logs" / "raylet.out", False, None, None, "not held by a trusted"),
    (lambda root, tmp: root / SESSION / "logs" / "raylet.pid", True, None, None, "not named like a Ray log"),
    (lambda root, tmp: root / SESSION / "logs" / "raylet.out.bak", True, None, None, "not named like a Ray log"),
    (lambda root, tmp: root / SESSION / "logs" / "old" / "w.log.3x", True, None, None, "not named like a Ray log"),
    (lambda root, tmp: outside(tmp), True, None, None, "not in a Ray session's logs dir"),
    (lambda root, tmp: root / SESSION / "raylet.out", True, None, None, "not in a Ray session's logs dir"),
    (lambda root, tmp: root / "logs" / "raylet.out", True, None, None, "not in a Ray session's logs dir"),
    (lambda root, tmp: root / "nested" / SESSION / "logs" / "raylet.out", True, None, None,
     "not in a Ray session's logs dir"),
    (lambda root, tmp: outside(tmp), True, lambda root, tmp: ["%s/elsewhere/%s/.." % (tmp, SESSION)], None,
     "not in a Ray session's logs dir"),
    (lambda root, tmp: root / SESSION / "logs" / "raylet.out", True, None,
     lambda root, tmp: "%s/%s/logs/../../../elsewhere/x.log" % (root, SESSION),
     "not in a Ray session's logs dir"),
    (lambda root, tmp: root / SESSION / "logs" / "raylet.out", True, None,
     lambda root, tmp: "%s/%s/logs/./raylet.out" % (root, SESSION), "not in a Ray session's logs dir"),
], ids=["untrusted", "pid-file", "backup", "bad-rotation", "outside-roots", "not-in-logs", "no-session",
        "session-nested", "dotdot-root", "dotdot-path", "dot-path"])
def test_keeps_what_the_rules_do_not_allow(hold, ray_root, tmp_path, where, trusted, roots, path, reason):
    log = where(ray_root, tmp_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    holder = hold(log)
    listed = only(deleted_open_files(psutil, [holder.pid]), holder)
    if path is not None:
        listed = dataclasses.replace(listed, path=path(ray_root, tmp_path))
    ray_roots = [str(ray_root)] if roots is None else roots(ray_root, tmp_path)
    for dry_run in (True, False):
        result = truncate_deleted_logs([listed], {holder.pid} if trusted else {os.getpid()}, ray_roots, dry_run)
        assert (result["freed_bytes"], result["truncated"]) == (0, [])
        assert [(item["pid"], item["path"]) for item in result["kept"]] == [(holder.pid, listed.path)]
        assert reason in result["kept"][0]["reason"], result["kept"][0]["reason"]
    assert_untouched(holder)


def hand_over(path, owner):
    """A file of ``MIB`` bytes owned by ``owner``, unlinked: the one fd left to it, for a holder to inherit."""
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, b"r" * MIB)
    os.fsync(fd)
    os.fchown(fd, owner, owner)
    os.unlink(str(path))
    return fd


@needs_root
@pytest.mark.parametrize("owner, emptied", [(0, False), (NOBODY, True)], ids=["root-file", "own-file"])
def test_only_a_file_of_the_holders_own_user_is_emptied(hold, ray_root, owner, emptied):
    fd = hand_over(ray_root / SESSION / "logs" / "raylet.out", owner)
    try:
        holder = hold(ray_root / SESSION / "logs" / "raylet.out", user=NOBODY, pass_fd=fd)
    finally:
        os.close(fd)
    listed = only(deleted_open_files(psutil, [holder.pid]), holder)
    assert (listed.uid, listed.holder_uid) == (owner, NOBODY)
    result = truncate_deleted_logs([listed], {holder.pid}, [str(ray_root)], dry_run=False)
    if emptied:
        assert (result["freed_bytes"], result["kept"], holder.stat().st_size) == (listed.bytes, [], 0)
    else:
        assert (result["freed_bytes"], result["truncated"]) == (0, [])
        assert "owned by root but held by a process of " in result["kept"][0]["reason"]
        assert_untouched(holder)


def test_keeps_a_file_that_still_has_a_name(hold, ray_root):
    log = ray_root / SESSION / "logs" / "raylet.out"
    holder = hold(log, unlink=False)
    assert deleted_open_files(psutil, [holder.pid]) == []
    st = holder.stat()
    claimed = DeletedFile(pid=holder.pid, process="python", fd=holder.fd, path=str(log), dev=st.st_dev,
                          ino=st.st_ino, bytes=st.st_blocks * 512, uid=st.st_uid, holder_uid=os.getuid(), mnt_ns=None)
    for dry_run in (True, False):
        result = truncate_deleted_logs([claimed], {holder.pid}, [str(ray_root)], dry_run)
        assert (result["freed_bytes"], result["truncated"]) == (0, [])
        assert "not deleted" in result["kept"][0]["reason"]
    assert (log.stat().st_size, holder.stat().st_size) == (MIB, MIB)


def test_a_holder_gone_before_truncation_is_kept_without_error(hold, ray_root):
    holder = hold(ray_root / SESSION / "logs" / "raylet.out", fork=True)
    files = deleted_open_files(psutil, holder.pids)
    assert len(files) == 2
    holder.kill()  # both: the parent and its forked child
    result = truncate_deleted_logs(files, set(holder.pids), [str(ray_root)], dry_run=False)
    assert (result["freed_bytes"], result["truncated"]) == (0, [])
    assert sorted(item["pid"] for item in result["kept"]) == sorted(holder.pids)
    assert all(item["reason"].startswith("gone before truncation") for item in result["kept"])


def test_an_fd_reused_for_another_file_is_kept(hold, ray_root):
    holder = hold(ray_root / SESSION / "logs" / "raylet.out")
    listed = only(deleted_open_files(psutil, [holder.pid]), holder)
    assert holder.send("swap") == "swapped"
    now = holder.stat()
    assert (now.st_ino, now.st_size) != (listed.ino, MIB)  # the fd really names another file now
    result = truncate_deleted_logs([listed], {holder.pid}, [str(ray_root)], dry_run=False)
    assert (result["freed_bytes"], result["truncated"]) == (0, [])
    assert "now holds another file" in result["kept"][0]["reason"]
    assert holder.stat().st_size == 4096


def test_an_error_is_a_kept_file_not_an_exception(hold, ray_root):
    holder = hold(ray_root / SESSION / "logs" / "raylet.out")
    listed = only(deleted_open_files(psutil, [holder.pid]), holder)
    pid, roots, item = holder.pid, [str(ray_root)], dataclasses.astuple(listed)
    result = as_nobody(lambda: truncate_deleted_logs([DeletedFile(*item)], {pid}, roots, dry_run=False))
    assert (result["freed_bytes"], result["truncated"]) == (0, [])
    assert result["kept"][0]["reason"].startswith("could not reopen it through the process's fd: ")
    assert_untouched(holder)
