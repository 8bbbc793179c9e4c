# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scanner on hostile trees, checked against GNU du and against what was written."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _fdwalk, _scan
from ansible_collections.rayops.disk.plugins.module_utils._scan import Root, scan
from ansible_collections.rayops.disk.tests.unit.conftest import as_nobody, du_bytes, write


class OneKey:
    """Everything under a root counts under the root's key."""

    def child(self, state, key, name, is_dir):
        return key, None


def before_open(monkeypatch, name, action):
    """Run ``action()`` once right before the walk opens the directory ``name`` it listed and stat-ed: the race."""
    real, fired = _scan.open_listed_dir, []

    def hooked(parent_fd, child, ino, dev, mnt):
        if child == name and not fired:
            fired.append(child)
            action()
        return real(parent_fd, child, ino, dev, mnt)

    monkeypatch.setattr(_scan, "open_listed_dir", hooked)
    return fired


def measure(path, workers=1, layout=None):
    result = scan([Root(str(path), "all", "top")], layout or OneKey(), workers=workers)
    return result.tallies.get("all", _scan.Tally()), result


@pytest.fixture
def plain_tree(tmp_path):
    root = tmp_path / "root"
    for i in range(30):
        write(str(root / ("d%d" % (i % 7)) / ("sub%d" % (i % 3)) / ("f%d" % i)), 1000 * i + 1)
    os.makedirs(root / "empty")
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_plain_tree_matches_du(plain_tree, workers):
    tally, result = measure(plain_tree, workers)
    assert tally.bytes == du_bytes(str(plain_tree))
    assert tally.files == 30
    assert tally.apparent_bytes - tally.dirs * 4096 == sum(1000 * i + 1 for i in range(30))
    assert result.notes.error_count == 0 and result.notes.skipped_count == 0


def test_symlinks_are_never_followed(tmp_path):
    outside = tmp_path / "outside"
    write(str(outside / "big"), 1 << 20)
    root = tmp_path / "root"
    write(str(root / "small"), 100)
    os.symlink(str(outside), str(root / "to_outside_dir"))
    os.symlink(str(outside / "big"), str(root / "to_outside_file"))
    os.symlink(".", str(root / "loop"))
    os.symlink("loop2", str(root / "loop1"))
    os.symlink("loop1", str(root / "loop2"))
    tally, result = measure(root)
    assert tally.bytes == du_bytes(str(root))
    assert tally.bytes < 1 << 20
    assert tally.files == 6  # the file and five symlinks, none followed
    assert result.notes.error_count == 0


def test_symlinked_root_is_refused(tmp_path):
    write(str(tmp_path / "real" / "f"), 10)
    os.symlink(str(tmp_path / "real"), str(tmp_path / "link"))
    tally, result = measure(tmp_path / "link")
    assert tally.bytes == 0
    assert result.notes.errors[0]["path"] == str(tmp_path / "link")


def test_hard_links_count_once_across_workers(tmp_path):
    root = tmp_path / "root"
    first = write(str(root / "a" / "x" / "file"), 64 * 1024)
    for i in range(40):
        os.makedirs(root / ("b%d" % i) / "y")
        os.link(first, str(root / ("b%d" % i) / "y" / "link"))
    single = measure(root, workers=1)[0]
    parallel = measure(root, workers=2)[0]
    assert single.bytes == parallel.bytes == du_bytes(str(root))
    assert single.files == parallel.files == 1


def test_bind_mount_inside_is_not_entered(tmp_path, bind_mount):
    elsewhere = tmp_path / "elsewhere"
    write(str(elsewhere / "secret"), 1 << 20)
    root = tmp_path / "root"
    write(str(root / "f"), 100)
    bind_mount(str(elsewhere), str(root / "mnt"))  # same device and inode as the source: only mnt_id differs
    tally, result = measure(root)
    assert tally.bytes < 1 << 20
    assert {"path": str(root / "mnt"), "reason": "mount point"} in result.notes.skipped


def test_bind_mount_with_an_escaped_name_is_found_in_mountinfo(tmp_path, bind_mount):
    elsewhere = tmp_path / "elsewhere"
    write(str(elsewhere / "secret"), 1 << 20)
    root = tmp_path / "root"
    write(str(root / "f"), 100)
    assert not _scan.mounts_below("/proc/self/mountinfo", str(root))
    bind_mount(str(elsewhere), str(root / "with space\tand tab" / "mnt"))  # mountinfo writes \040 and \011
    assert _scan.mounts_below("/proc/self/mountinfo", str(root))
    tally, result = measure(root)
    assert tally.bytes < 1 << 20
    assert result.notes.skipped == [{"path": str(root / "with space\tand tab" / "mnt"), "reason": "mount point"}]


def test_mount_table_of_another_tree_is_used_for_it(tmp_path, bind_mount):
    """A root reached through a prefix (a container) is checked against the table naming its inner path."""
    table = tmp_path / "mountinfo"
    table.write_text("36 35 98:0 /mnt1 /tmp/inner/mnt rw,noatime master:1 - ext3 /dev/root rw\n")
    assert _scan.mounts_below(str(table), "/tmp/inner")
    assert not _scan.mounts_below(str(table), "/tmp/other")
    assert _scan.mounts_below(str(tmp_path / "unreadable"), "/tmp/other")  # unknown: check every directory


def test_other_filesystem_is_not_entered(tmp_path, bind_mount):
    root = tmp_path / "root"
    write(str(root / "f"), 100)
    bind_mount(None, str(root / "tmpfs"), fstype="tmpfs")
    write(str(root / "tmpfs" / "big"), 2 << 20)
    tally, result = measure(root)
    assert tally.bytes < 1 << 20
    assert {"path": str(root / "tmpfs"), "reason": "other filesystem"} in result.notes.skipped


def test_unreadable_dirs_are_reported_and_the_rest_counted():
    base = tempfile.mkdtemp(prefix="rayops-unreadable-")  # pytest's own tmp dir is closed to other users
    try:
        os.chmod(base, 0o755)
        root = os.path.join(base, "root")
        write(os.path.join(root, "open", "f"), 8192)
        write(os.path.join(root, "closed", "hidden"), 1 << 20)
        os.chmod(os.path.join(root, "closed"), 0o700)

        def unprivileged():  # root reads everything
            tally, result = measure(root)
            return [tally.bytes, tally.files, result.notes.errors]

        nbytes, files, errors = as_nobody(unprivileged)
        closed = os.path.join(root, "closed")
        assert errors == [{"path": closed, "error": "Permission denied"}]
        assert files == 1
        assert nbytes == du_bytes(root) - du_bytes(closed) + os.lstat(closed).st_blocks * 512
    finally:
        shutil.rmtree(base)


def test_non_utf8_names(tmp_path):
    root = os.path.join(os.fsencode(str(tmp_path)), b"root")
    os.makedirs(os.path.join(root, b"dir-\xff\xfe"))
    with open(os.path.join(root, b"dir-\xff\xfe", b"file-\xc3\x28"), "wb") as handle:
        handle.write(b"x" * 5000)
    tally, result = measure(os.fsdecode(root))
    assert tally.files == 1
    assert tally.bytes == du_bytes(os.fsdecode(root))
    assert _scan.display_path(os.fsdecode(b"/t/dir-\xff")) == "/t/dir-\\xff"


def test_ten_thousand_levels_deep(tmp_path, monkeypatch):
    root = tmp_path / "deep"
    os.makedirs(root)
    fd = os.open(str(root), os.O_RDONLY)
    for level in range(10000):  # path far beyond PATH_MAX and Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        if level % 2500 == 0:
            file_fd = os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
            os.write(file_fd, b"x" * 4096)
            os.close(file_fd)
        next_fd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = next_fd
        if level == 9000:  # a side branch deep down: walking it needs the closed ancestors reopened
            os.mkdir("side", dir_fd=fd)
    os.close(fd)
    assert 10000 > sys.getrecursionlimit()
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        expected = du_bytes(str(root))
        monkeypatch.setattr(_fdwalk, "FD_BUDGET", 8)
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, limits[1]))  # open fds must stay near the budget
        for workers in (1, 2):
            tally, result = measure(root, workers)
            assert (tally.bytes, tally.files, tally.dirs) == (expected, 4, 10002)
            assert result.notes.error_count == 0
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        subprocess.run(["rm", "-rf", str(root)], check=True)  # shutil.rmtree of Python 3.11 recurses


def test_entries_vanishing_mid_walk_are_skipped(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write(str(root / "a" / "keep"), 4096)
    write(str(root / "gone" / "inner" / "f"), 1 << 20)
    fired = before_open(monkeypatch, "gone", lambda: shutil.rmtree(root / "gone"))
    tally, result = measure(root)
    assert fired
    assert result.notes.error_count == 0
    assert result.notes.skipped == [{"path": str(root / "gone"), "reason": "vanished"}]
    assert tally.bytes < 1 << 20


def test_files_vanishing_before_stat_are_skipped(tmp_path):
    root = tmp_path / "root"
    for i in range(20):
        write(str(root / ("f%02d" % i)), 4096)

    def remove_all():
        for i in range(20):
            try:
                os.unlink(root / ("f%02d" % i))
            except FileNotFoundError:
                pass

    layout = OneKey()
    layout.child = lambda state, key, name, is_dir: (remove_all(), (key, None))[1]
    tally, result = measure(root, layout=layout)
    assert tally.files == 0  # the layout sees every name of a directory before any is stat-ed: all vanished
    assert result.notes.skipped_count == 20
    assert {s["reason"] for s in result.notes.skipped} == {"vanished"}


def test_dir_swapped_for_symlink_mid_walk_is_not_followed(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    write(str(outside / "big"), 1 << 20)
    root = tmp_path / "root"
    write(str(root / "a" / "f"), 4096)
    write(str(root / "victim" / "f"), 4096)

    def swap():
        shutil.rmtree(root / "victim")
        os.symlink(str(outside), str(root / "victim"))

    fired = before_open(monkeypatch, "victim", swap)
    tally, result = measure(root)
    assert fired
    assert tally.bytes < 1 << 20
    assert result.notes.errors == [{"path": str(root / "victim"),
                                    "error": "changed during scan (no longer a directory)"}]


def test_dir_replaced_mid_walk_is_not_entered(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write(str(root / "a" / "f"), 4096)
    write(str(root / "victim" / "f"), 4096)

    def replace():  # the old directory lives on elsewhere, so the new one has another inode
        os.rename(root / "victim", tmp_path / "moved-aside")
        write(str(root / "victim" / "new-and-big"), 1 << 20)

    fired = before_open(monkeypatch, "victim", replace)
    tally, result = measure(root)
    assert fired
    assert tally.bytes < 1 << 20
    assert result.notes.errors == [{"path": str(root / "victim"), "error": "changed during scan (replaced)"}]


def test_live_socket_and_special_files_are_counted_not_opened(tmp_path):
    root = tmp_path / "root"
    os.makedirs(root)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock"))
    os.mkfifo(str(root / "fifo"))  # opening a FIFO would block: the scanner must only stat it
    try:
        tally, result = measure(root)
    finally:
        server.close()
    assert tally.files == 2
    assert result.notes.error_count == 0


def test_nested_roots_are_counted_once_under_their_own_key(tmp_path):
    outer = tmp_path / "tmp"
    write(str(outer / "f"), 4096)
    write(str(outer / "ray" / "session_x" / "g"), 8192)
    result = scan([Root(str(outer), "tmp", "top"), Root(str(outer / "ray"), "ray", "top")], OneKey(), workers=1)
    assert result.tallies["tmp"].bytes + result.tallies["ray"].bytes == du_bytes(str(outer))
    assert result.tallies["ray"].bytes == du_bytes(str(outer / "ray"))
    assert [t.bytes for t in result.root_totals] == [result.tallies["tmp"].bytes, result.tallies["ray"].bytes]


def test_errors_are_capped_but_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(_scan, "MAX_REPORTED", 3)
    notes = _scan.Notes()
    for i in range(10):
        notes.error("/p%d" % i, "boom")
    assert len(notes.errors) == 3 and notes.error_count == 10
