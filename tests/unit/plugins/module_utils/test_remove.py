# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The remover on hostile trees: every byte outside the allowed set must still be there.

Live processes hold files open, map them and flock a directory for real; a
unix socket is really bound; a bind mount and a tmpfs are really mounted.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _fdwalk
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import Target, unix_socket_paths
from ansible_collections.rayops.disk.plugins.module_utils._remove import (
    Guards,
    Policy,
    Remover,
    locked_inodes,
    socket_inodes,
    used_inodes,
)
from ansible_collections.rayops.disk.tests.unit.conftest import as_nobody, tree_digest, write

HOUR = 3600.0
HOLDER = r"""
import fcntl, mmap, os, sys, time
held = open(sys.argv[1], "rb")
lock_fd = os.open(sys.argv[2], os.O_RDONLY)
fcntl.flock(lock_fd, fcntl.LOCK_EX)
with open(sys.argv[3], "r+b") as mapped_file:
    mapped = mmap.mmap(mapped_file.fileno(), 0)
print("READY", flush=True)
time.sleep(600)
"""


def age(path, hours=2.0):
    """Make a path and everything below it look ``hours`` old by atime and mtime (deepest first)."""
    then = time.time() - hours * HOUR
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (then, then), follow_symlinks=False)
    os.utime(path, (then, then), follow_symlinks=False)


def live_guards():
    """Guards from this machine's live processes, as the cleanup gathers them."""
    return Guards(used_inodes(psutil.pids()), locked_inodes(), socket_inodes(unix_socket_paths(Target("host"))))


def remove_all(root, names, dry_run, policy=None, guards=None):
    remover = Remover(str(root), policy or Policy(time.time() - HOUR, ("mtime",), ("keep-*",)),
                      guards or live_guards(), dry_run)
    gone = {name: remover.remove(name) for name in names}
    return gone, remover.outcome


@pytest.fixture
def hostile(tmp_path, bind_mount):
    """A tmp dir whose candidates hold every hazard, and an outside that must survive untouched."""
    outside = tmp_path / "outside"
    write(str(outside / "big"), 1 << 20)
    write(str(outside / "hard"), 8192)
    write(str(outside / "odir" / "inner"), 4096)
    tmp = tmp_path / "tmp"
    a = tmp / "ray_tmp_a"
    write(str(a / "pkg.zip"), 65536)
    write(str(a / "sub" / "deep.bin"), 4096)
    os.symlink(str(outside), str(a / "link_out_dir"))
    os.symlink(str(outside / "big"), str(a / "link_out_file"))
    os.link(str(outside / "hard"), str(a / "shared"))
    write(str(tmp / "pip-b" / "old.txt"), 4096)
    write(str(tmp / "pip-b" / "fresh.txt"), 4096)
    c = tmp / "tmp_c"
    write(str(c / "held.log"), 4096)
    write(str(c / "mapped.bin"), 8192)
    write(str(c / "locked" / "inner"), 4096)
    write(str(c / "keep-me"), 4096)
    write(os.fsdecode(os.path.join(os.fsencode(str(c)), b"name-\xff\xfe")), 4096)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(c / "deadsock"))
    dead.close()
    bind_mount(str(outside / "odir"), str(c / "mnt"))
    age(str(tmp))
    os.utime(str(tmp / "pip-b" / "fresh.txt"))  # now
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(c / "sock"))
    os.utime(str(c / "sock"), (time.time() - 2 * HOUR,) * 2)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(c / "held.log"), str(c / "locked"),
                               str(c / "mapped.bin")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "READY"
    try:
        yield tmp, outside
    finally:
        holder.kill()
        holder.wait()
        live.close()


def test_hostile_tree(hostile):
    tmp, outside = hostile
    outside_before = tree_digest(str(outside))
    keep = ["pip-b/fresh.txt", "tmp_c/held.log", "tmp_c/mapped.bin", "tmp_c/locked/inner", "tmp_c/keep-me",
            "tmp_c/sock"]
    kept_before = {path: tree_digest(str(tmp / path)) if (tmp / path).is_dir() else (tmp / path).read_bytes()
                   for path in keep if not path.endswith("sock")}
    names = ["ray_tmp_a", "pip-b", "tmp_c"]

    tmp_before = tree_digest(str(tmp))
    dry_gone, dry = remove_all(tmp, names, dry_run=True)
    assert tree_digest(str(tmp)) == tmp_before  # the dry run changed nothing

    gone, real = remove_all(tmp, names, dry_run=False)
    assert gone == dry_gone == {"ray_tmp_a": True, "pip-b": False, "tmp_c": False}
    assert (real.removed_paths, real.freed_bytes, real.kept) == (dry.removed_paths, dry.freed_bytes, dry.kept)
    assert real.error_count == 0, real.errors

    assert tree_digest(str(outside)) == outside_before  # every byte outside is still there
    assert os.stat(outside / "hard").st_nlink == 1
    assert all((tmp / path).read_bytes() == data for path, data in kept_before.items())
    assert not (tmp / "ray_tmp_a").exists() and not (tmp / "pip-b" / "old.txt").exists()
    assert not (tmp / "tmp_c" / "deadsock").exists()
    assert not os.path.lexists(os.path.join(os.fsencode(str(tmp)), b"tmp_c", b"name-\xff\xfe"))
    reasons = {entry["path"][len(str(tmp)) + 1:]: entry["reason"] for entry in real.kept}
    assert reasons == {
        "pip-b/fresh.txt": "fresh",
        "tmp_c/held.log": "open", "tmp_c/mapped.bin": "open", "tmp_c/locked": "locked",
        "tmp_c/keep-me": "excluded", "tmp_c/sock": "live_socket", "tmp_c/mnt": "mount_point",
    }
    assert str(tmp) + "/tmp_c/name-\\xff\\xfe" in real.removed_paths
    assert real.freed_bytes >= 65536 + 4096 * 3  # the shared hard link frees nothing
    json.dumps(real.__dict__)

    again_gone, again = remove_all(tmp, names, dry_run=False)
    assert again.removed == 0 and again.freed_bytes == 0 and again_gone == {"ray_tmp_a": True, "pip-b": False,
                                                                            "tmp_c": False}


def test_hostile_tree_without_excludes_in_worker_processes(hostile):
    """No exclude glob; side by side, the workers decide as one process does."""
    tmp, outside = hostile
    outside_before = tree_digest(str(outside))
    tmp_before = tree_digest(str(tmp))
    guards = live_guards()

    def run(dry_run, workers):
        remover = Remover(str(tmp), Policy(time.time() - HOUR, ("mtime",)), guards, dry_run)
        remover.workers = workers
        audit = []
        remover.on_remove = lambda *line: audit.append(line)
        remover.remove_matching(lambda name: True)
        return remover.outcome, audit

    one, one_audit = run(True, 1)
    two, two_audit = run(True, 2)
    assert tree_digest(str(tmp)) == tmp_before  # the dry runs changed nothing
    assert one == two and one_audit == two_audit and len(one_audit) == 3
    real, real_audit = run(False, 2)
    assert (real.removed_paths, real.freed_bytes, real.kept, real_audit) == (one.removed_paths, one.freed_bytes,
                                                                             one.kept, one_audit)
    assert real.error_count == 0, real.errors
    assert tree_digest(str(outside)) == outside_before
    reasons = {entry["path"][len(str(tmp)) + 1:]: entry["reason"] for entry in real.kept}
    assert reasons == {
        "pip-b/fresh.txt": "fresh",
        "tmp_c/held.log": "open", "tmp_c/mapped.bin": "open", "tmp_c/locked": "locked",
        "tmp_c/sock": "live_socket", "tmp_c/mnt": "mount_point",
    }
    assert not (tmp / "tmp_c" / "keep-me").exists() and not (tmp / "tmp_c" / "deadsock").exists()
    assert not (tmp / "ray_tmp_a").exists() and (tmp / "tmp_c" / "held.log").exists()


def test_every_age_counts_and_a_dirs_ctime_does_not(tmp_path):
    tmp = tmp_path / "tmp"
    write(str(tmp / "tmp_x" / "f"), 4096)
    age(str(tmp))
    _gone, outcome = remove_all(tmp, ["tmp_x"], dry_run=True,
                                policy=Policy(time.time() - HOUR), guards=Guards())  # ctime is now
    assert outcome.removed == 0 and outcome.kept == [{"path": str(tmp / "tmp_x" / "f"), "reason": "fresh"}]
    _gone, outcome = remove_all(tmp, ["tmp_x"], dry_run=True,
                                policy=Policy(time.time() + 1), guards=Guards())  # everything older than a future cutoff
    assert outcome.removed == 2


def test_directory_swapped_for_a_symlink_mid_removal(tmp_path):
    outside = tmp_path / "outside"
    write(str(outside / "precious"), 1 << 20)
    tmp = tmp_path / "tmp"
    write(str(tmp / "tmp_s" / "a" / "f"), 4096)
    write(str(tmp / "tmp_s" / "victim" / "f"), 4096)
    age(str(tmp))
    before = tree_digest(str(outside))

    class Swapping(Remover):
        def _children(self, fd, where, state):
            children = super()._children(fd, where, state)
            if where() == ["tmp_s"]:  # listed, not yet entered: swap the directory for a symlink
                shutil.rmtree(tmp / "tmp_s" / "victim")
                os.symlink(str(outside), str(tmp / "tmp_s" / "victim"))
            return children

    remover = Swapping(str(tmp), Policy(time.time() - HOUR, ("mtime",)), Guards(), dry_run=False)
    assert remover.remove("tmp_s") is False
    assert tree_digest(str(outside)) == before
    assert {"path": str(tmp / "tmp_s" / "victim"), "reason": "changed"} in remover.outcome.kept
    assert os.path.islink(tmp / "tmp_s" / "victim")


def test_ten_thousand_levels_deep_under_a_low_fd_limit(tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    os.makedirs(tmp / "tmp_deep")
    fd = os.open(str(tmp / "tmp_deep"), os.O_RDONLY)
    for level in range(10000):
        os.mkdir("d", dir_fd=fd)
        if level % 2000 == 0:
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        next_fd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = next_fd
    os.close(fd)
    monkeypatch.setattr(_fdwalk, "FD_BUDGET", 32)
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, limits[1]))
    try:
        gone, outcome = remove_all(tmp, ["tmp_deep"], dry_run=False, guards=Guards(),
                                   policy=Policy(time.time() + 60, ("mtime",)))  # all older than the cutoff
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        subprocess.run(["rm", "-rf", str(tmp / "tmp_deep")], check=True)  # whatever is left; rmtree recurses
    assert gone == {"tmp_deep": True}, outcome.errors[:3]
    assert outcome.removed == 10001 + 5 and outcome.error_count == 0


def test_unreadable_subtree_is_reported_and_the_rest_removed():
    base = tempfile.mkdtemp(prefix="rayops-remove-")
    try:
        os.chmod(base, 0o755)
        tmp = os.path.join(base, "tmp")
        write(os.path.join(tmp, "tmp_u", "open", "f"), 4096)
        write(os.path.join(tmp, "tmp_u", "closed", "secret"), 4096)
        for path in (tmp, os.path.join(tmp, "tmp_u"), os.path.join(tmp, "tmp_u", "open")):
            os.chmod(path, 0o777)
        os.chmod(os.path.join(tmp, "tmp_u", "open", "f"), 0o666)
        os.chmod(os.path.join(tmp, "tmp_u", "closed"), 0o700)  # root's, closed to the user running the cleanup
        age(tmp)

        def unprivileged():
            gone, outcome = remove_all(tmp, ["tmp_u"], dry_run=False, guards=Guards())
            return [gone, outcome.errors, outcome.removed]

        gone, errors, removed = as_nobody(unprivileged)
        assert gone == {"tmp_u": False}
        assert errors == [{"path": os.path.join(tmp, "tmp_u", "closed"), "error": "Permission denied"}]
        assert removed == 2  # open/f and open/
        assert os.path.exists(os.path.join(tmp, "tmp_u", "closed", "secret"))
    finally:
        shutil.rmtree(base)


def test_a_file_replaced_between_listing_and_unlink_is_kept(tmp_path):
    tmp = tmp_path / "tmp"
    write(str(tmp / "tmp_r" / "a"), 4096)
    write(str(tmp / "tmp_r" / "b"), 4096)
    age(str(tmp))

    class Replacing(Remover):
        def _children(self, fd, where, state):
            children = super()._children(fd, where, state)
            for name in ("a", "b"):  # both replaced after listing by new files of the same name
                os.unlink(tmp / "tmp_r" / name)
                write(str(tmp / "tmp_r" / name), 100)
            return children

    remover = Replacing(str(tmp), Policy(time.time() - HOUR, ("mtime",)), Guards(), dry_run=False)
    assert remover.remove("tmp_r") is False
    assert sorted(os.listdir(tmp / "tmp_r")) == ["a", "b"]
    assert {entry["reason"] for entry in remover.outcome.kept} == {"changed"}


def test_other_filesystem_inside_a_candidate_is_kept(tmp_path, bind_mount):
    tmp = tmp_path / "tmp"
    write(str(tmp / "tmp_f" / "f"), 4096)
    bind_mount(None, str(tmp / "tmp_f" / "fs"), fstype="tmpfs")
    write(str(tmp / "tmp_f" / "fs" / "data"), 4096)
    age(str(tmp))
    gone, outcome = remove_all(tmp, ["tmp_f"], dry_run=False, guards=Guards())
    assert gone == {"tmp_f": False}
    assert outcome.kept == [{"path": str(tmp / "tmp_f" / "fs"), "reason": "other_filesystem"}]
    assert (tmp / "tmp_f" / "fs" / "data").exists() and not (tmp / "tmp_f" / "f").exists()


def test_a_vanished_candidate_is_gone_without_error(tmp_path):
    tmp = tmp_path / "tmp"
    os.makedirs(tmp)
    gone, outcome = remove_all(tmp, ["tmp_never_there"], dry_run=False, guards=Guards())
    assert gone == {"tmp_never_there": True} and outcome.removed == 0 and outcome.error_count == 0


def test_dotdot_is_trusted_only_when_it_is_the_listed_parent(tmp_path):
    """Reopening a parent through ``..`` of its open child: a child moved elsewhere gives None."""
    os.makedirs(tmp_path / "parent" / "child")
    os.makedirs(tmp_path / "elsewhere")
    parent_ino = os.stat(tmp_path / "parent").st_ino
    child_fd = os.open(str(tmp_path / "parent" / "child"), os.O_RDONLY)
    try:
        fd = _fdwalk.DirStack._parent_of(child_fd, parent_ino)
        assert fd is not None and os.fstat(fd).st_ino == parent_ino
        os.close(fd)
        os.rename(tmp_path / "parent" / "child", tmp_path / "elsewhere" / "child")
        assert _fdwalk.DirStack._parent_of(child_fd, parent_ino) is None
    finally:
        os.close(child_fd)
