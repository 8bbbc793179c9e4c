# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_log_config driven through main(): env files and systemd drop-ins, check, diff, absent, backup.

Also the audit's attack surface: the destination's directory may belong to
another user, so symlinks, hard links and fifos are refused (in check mode and
diff too), and every write, chmod and chown goes through a file descriptor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat

import pytest

from ansible.module_utils import basic

from ansible_collections.rayops.disk.plugins.module_utils import _log_config
from ansible_collections.rayops.disk.plugins.modules import ray_log_config
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.test_ray_version import opens_of
from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import fail_module

USERS_ENV = "# executor settings\nPATH=/usr/bin\nexport RAY_BACKEND_LOG_LEVEL=40\nRAY_ROTATION_MAX_BYTES=512M\n"
WANTED = {"rotation_max_bytes": "1MB", "rotation_backup_count": 2, "backend_log_level": "40"}


def test_env_file_dry_run_then_real_then_again(run_module, tmp_path):
    path = tmp_path / ".env"
    path.write_text(USERS_ENV)
    args = dict(WANTED, path=str(path), _ansible_diff=True)
    check = run_module(ray_log_config.main, args, check_mode=True)
    assert path.read_text() == USERS_ENV  # check mode wrote nothing
    real = run_module(ray_log_config.main, args)
    again = run_module(ray_log_config.main, args)
    assert check["changed"] and real["changed"] and not again["changed"]
    assert check["diff"] == real["diff"] and real["diff"]["before"] == USERS_ENV
    assert path.read_text() == ("# executor settings\nPATH=/usr/bin\nexport RAY_BACKEND_LOG_LEVEL=error\n"
                                "RAY_ROTATION_MAX_BYTES=1048576\nRAY_ROTATION_BACKUP_COUNT=2\n")
    assert real["settings"] == {"RAY_ROTATION_MAX_BYTES": "1048576", "RAY_ROTATION_BACKUP_COUNT": "2",
                                "RAY_BACKEND_LOG_LEVEL": "error"}


def test_systemd_drop_in_created_with_mode(run_module, tmp_path):
    path = tmp_path / "ray-head.service.d" / "logging.conf"
    os.makedirs(path.parent)
    result = run_module(ray_log_config.main, dict(WANTED, path=str(path), format="systemd", mode="0640"))
    assert result["changed"]
    assert path.read_text() == ('[Service]\nEnvironment="RAY_ROTATION_MAX_BYTES=1048576"\n'
                                'Environment="RAY_ROTATION_BACKUP_COUNT=2"\nEnvironment="RAY_BACKEND_LOG_LEVEL=error"\n')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert not run_module(ray_log_config.main, dict(WANTED, path=str(path), format="systemd", mode="0640"))["changed"]


def test_check_mode_predicts_a_mode_change_and_makes_none(run_module, tmp_path):
    path = tmp_path / ".env"
    run_module(ray_log_config.main, dict(WANTED, path=str(path), mode="0644"))
    check = run_module(ray_log_config.main, dict(WANTED, path=str(path), mode="0600"), check_mode=True)
    assert check["changed"] is True and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    real = run_module(ray_log_config.main, dict(WANTED, path=str(path), mode="0600"))
    assert real["changed"] is True and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unit_keeps_other_assignments_and_sections(run_module, tmp_path):
    path = tmp_path / "ray.service"
    path.write_text('[Unit]\nDescription=Ray\n\n[Service]\nEnvironment="RAY_BACKEND_LOG_LEVEL=40" "FOO=bar baz"\n'
                    'ExecStart=/usr/bin/ray start --head\n\n[Install]\nWantedBy=multi-user.target\n')
    run_module(ray_log_config.main, {"path": str(path), "format": "systemd", "backend_log_level": "ERROR"})
    text = path.read_text()
    assert "Environment='FOO=bar baz'\n" in text and 'Environment="RAY_BACKEND_LOG_LEVEL=error"\n' in text
    assert text.index("RAY_BACKEND_LOG_LEVEL") < text.index("[Install]")
    assert "=40" not in text and text.endswith("[Install]\nWantedBy=multi-user.target\n")


def test_absent_removes_the_settings_and_keeps_a_backup(run_module, tmp_path):
    path = tmp_path / "environment"
    path.write_text(USERS_ENV)
    result = run_module(ray_log_config.main, {"path": str(path), "state": "absent", "backup": True})
    assert result["changed"] and path.read_text() == "# executor settings\nPATH=/usr/bin\n"
    with open(result["backup_file"]) as backup:
        assert backup.read() == USERS_ENV
    assert not run_module(ray_log_config.main, {"path": str(path), "state": "absent"})["changed"]
    assert not run_module(ray_log_config.main, {"path": str(tmp_path / "missing"), "state": "absent"})["changed"]
    assert not (tmp_path / "missing").exists()


def test_zero_means_no_rotation_and_is_written(run_module, tmp_path):
    path = tmp_path / ".env"
    run_module(ray_log_config.main, {"path": str(path), "rotation_max_bytes": "0"})
    assert path.read_text() == "RAY_ROTATION_MAX_BYTES=0\n"


@pytest.mark.parametrize("extra, message", [
    ({"rotation_max_bytes": "512 megs"}, "rotation_max_bytes '512 megs' is not a size"),
    ({"rotation_backup_count": 0}, "rotation_backup_count 0 must be a whole number of 1 or more"),
    ({"backend_log_level": "verbose"}, "backend_log_level 'verbose' is not a level Ray knows"),
    ({"backend_log_level": "45"}, "backend_log_level '45' is not a level Ray knows"),
    ({}, "nothing to set: give rotation_max_bytes, rotation_backup_count or backend_log_level"),
])
def test_bad_values_fail_naming_them_and_change_nothing(run_module, tmp_path, extra, message):
    path = tmp_path / ".env"
    path.write_text(USERS_ENV)
    assert message in fail_module(ray_log_config.main, dict(extra, path=str(path)))["msg"]
    assert path.read_text() == USERS_ENV


def test_a_directory_is_refused(run_module, tmp_path):
    result = fail_module(ray_log_config.main, {"path": str(tmp_path), "backend_log_level": "info"})
    assert "path %r is a directory" % str(tmp_path) in result["msg"]


SECRET = "ROOT_ONLY_TOKEN=s3cr3t-7f2a\n"


@pytest.fixture
def secret(tmp_path):
    """A root-only 0600 file next to the directory the module writes in."""
    path = tmp_path / "secret"
    path.write_text(SECRET)
    os.chmod(path, 0o600)
    return path


def _same(path, before):
    after = os.lstat(path)
    return (after.st_ino, after.st_mode, after.st_uid, after.st_gid, after.st_nlink) == \
        (before.st_ino, before.st_mode, before.st_uid, before.st_gid, before.st_nlink)


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_symlink_destination_is_refused_and_its_target_never_shown(run_module, tmp_path, secret, check_mode):
    (tmp_path / "ray").mkdir()
    dest = tmp_path / "ray" / ".env"
    dest.symlink_to(secret)
    before = os.lstat(secret)
    args = dict(WANTED, path=str(dest), _ansible_diff=True, _ansible_check_mode=check_mode, backup=True)
    result = fail_module(ray_log_config.main, args)
    assert "path %r is a symlink" % str(dest) in result["msg"]
    assert "give the real file %r instead" % str(secret) in result["msg"]
    assert "s3cr3t" not in json.dumps(result)
    assert os.readlink(dest) == str(secret) and secret.read_text() == SECRET and _same(secret, before)
    assert os.listdir(tmp_path / "ray") == [".env"]


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_hard_linked_destination_is_refused_and_never_shown(run_module, tmp_path, secret, check_mode):
    (tmp_path / "ray").mkdir()
    dest = tmp_path / "ray" / ".env"
    os.link(secret, dest)
    args = dict(WANTED, path=str(dest), _ansible_diff=True, _ansible_check_mode=check_mode, mode="0644")
    result = fail_module(ray_log_config.main, args)
    assert "path %r has 2 hard links" % str(dest) in result["msg"]
    assert "s3cr3t" not in json.dumps(result)
    assert secret.read_text() == SECRET and stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert os.stat(dest).st_nlink == 2 and os.listdir(tmp_path / "ray") == [".env"]


def test_a_fifo_is_refused_without_waiting_for_a_writer(run_module, tmp_path):
    dest = tmp_path / ".env"
    os.mkfifo(dest)

    def hung(_signum, _frame):
        raise AssertionError("the module blocked opening a fifo")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        result = fail_module(ray_log_config.main, dict(WANTED, path=str(dest), _ansible_check_mode=True))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "path %r is a named pipe, not a regular file" % str(dest) in result["msg"]


@pytest.fixture
def no_path_changes(monkeypatch):
    """Fail on any path-based chmod/chown/copy and on Ansible's path-based helpers; record fd-based calls."""
    def refuse(name):
        def refused(*args, **kwargs):
            raise AssertionError("%s called with %r: a path a user could swap" % (name, args[:1]))
        return refused

    for name in ("chmod", "chown", "lchown", "lchmod"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse("os." + name))
    for name in ("copystat", "copy2", "copy", "copymode", "move"):
        monkeypatch.setattr(shutil, name, refuse("shutil." + name))
    for name in ("atomic_move", "backup_local", "set_fs_attributes_if_different", "set_mode_if_different",
                 "set_owner_if_different", "set_group_if_different"):
        monkeypatch.setattr(basic.AnsibleModule, name, refuse("AnsibleModule." + name))
    calls = []
    for name in ("fchmod", "fchown"):
        real = getattr(os, name)

        def spy(fd, *args, _real=real, _name=name):
            assert isinstance(fd, int), "%s given %r, not an fd" % (_name, fd)
            calls.append((_name, stat.S_IFMT(os.fstat(fd).st_mode), args))
            return _real(fd, *args)
        monkeypatch.setattr(os, name, spy)
    return calls


def test_mode_owner_and_backup_are_set_through_fds(run_module, tmp_path, no_path_changes):
    directory = tmp_path / "ray"
    directory.mkdir()
    path = directory / ".env"
    path.write_text(USERS_ENV)
    with open(path) as handle:
        os.fchmod(handle.fileno(), 0o604)
    args = dict(WANTED, path=str(path), mode="0640", owner="nobody", group="nogroup", backup=True)
    result = run_module(ray_log_config.main, args)
    assert result["changed"]
    st = os.lstat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 65534, 65534) and st.st_nlink == 1
    assert "RAY_ROTATION_MAX_BYTES=1048576" in path.read_text()
    backup = os.lstat(result["backup_file"])  # the old file's content, mode and owner, made through an fd
    assert (stat.S_IMODE(backup.st_mode), backup.st_uid, backup.st_gid) == (0o604, 0, 0)
    with open(result["backup_file"]) as handle:
        assert handle.read() == USERS_ENV
    assert ("fchown", stat.S_IFREG, (65534, 65534)) in no_path_changes
    assert ("fchmod", stat.S_IFREG, (0o640,)) in no_path_changes
    # the private directory the new file was made in is gone: only the file and its backup are left
    assert sorted(os.listdir(directory)) == sorted([".env", os.path.basename(result["backup_file"])])

    del no_path_changes[:]  # same content, other mode and owner: changed on the file itself, through its fd
    inode = os.lstat(path).st_ino
    again = dict(args, mode="u=rw,g=,o=", owner="0", group="0", backup=False)
    assert run_module(ray_log_config.main, again, check_mode=True)["changed"]
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640 and not no_path_changes  # check mode changed nothing
    assert run_module(ray_log_config.main, again)["changed"]
    st = os.lstat(path)
    assert (st.st_ino, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (inode, 0o600, 0, 0)
    assert not run_module(ray_log_config.main, again)["changed"]


def test_owner_group_and_mode_are_kept_when_not_given(run_module, tmp_path, no_path_changes):
    path = tmp_path / ".env"
    path.write_text(USERS_ENV)
    with open(path) as handle:
        os.fchown(handle.fileno(), 65534, 65534)
        os.fchmod(handle.fileno(), 0o604)
    assert run_module(ray_log_config.main, dict(WANTED, path=str(path)))["changed"]
    st = os.lstat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o604, 65534, 65534)
    assert os.listdir(tmp_path) == [".env"]


def test_a_private_dir_swapped_before_it_is_held_is_left_alone(run_module, tmp_path, monkeypatch):
    """The directory's owner renames our new private dir away and puts a symlink to a root dir in its place."""
    directory, victim = tmp_path / "ray", tmp_path / "victim"
    directory.mkdir()
    victim.mkdir(mode=0o700)
    real_mkdir, swapped = os.mkdir, []

    def mkdir_then_swap(name, mode=0o777, *, dir_fd=None):
        real_mkdir(name, mode, dir_fd=dir_fd)
        if dir_fd is not None and not swapped:
            os.rename(name, "moved-away", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.symlink(str(victim), name, dir_fd=dir_fd)
            swapped.append(name)
    monkeypatch.setattr(os, "mkdir", mkdir_then_swap)
    path = directory / ".env"
    assert run_module(ray_log_config.main, dict(WANTED, path=str(path), mode="0644"))["changed"]
    assert swapped and swapped[0].startswith(_log_config.PRIVATE_PREFIX)
    assert os.listdir(victim) == [] and stat.S_IMODE(os.stat(victim).st_mode) == 0o700
    assert os.readlink(directory / swapped[0]) == str(victim)  # not followed, not removed
    assert os.listdir(directory / "moved-away") == []
    assert sorted(os.listdir(directory)) == sorted([".env", "moved-away", swapped[0]])
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o644 and "RAY_ROTATION_BACKUP_COUNT=2" in path.read_text()


def test_a_private_dir_renamed_away_while_held_is_still_used_and_left(run_module, tmp_path, monkeypatch):
    directory = tmp_path / "ray"
    directory.mkdir()
    real_rename, moved = os.rename, []

    def rename_after_a_swap(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
        if src_dir_fd is not None and not moved:  # our rename into place: the user moves the private dir first
            private = [name for name in os.listdir(directory) if name.startswith(_log_config.PRIVATE_PREFIX)]
            real_rename(str(directory / private[0]), str(directory / "moved-away"))
            os.symlink("/", str(directory / private[0]))
            moved.append(private[0])
        return real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
    monkeypatch.setattr(os, "rename", rename_after_a_swap)
    path = directory / ".env"
    assert run_module(ray_log_config.main, dict(WANTED, path=str(path)))["changed"]
    assert stat.S_ISREG(os.lstat(path).st_mode) and "RAY_BACKEND_LOG_LEVEL=error" in path.read_text()
    assert os.listdir(directory / "moved-away") == [] and os.readlink(directory / moved[0]) == "/"


def test_check_mode_on_a_missing_directory_predicts_and_the_real_run_says_what_is_missing(run_module, tmp_path):
    path = tmp_path / "ray-head.service.d" / "logging.conf"
    check = run_module(ray_log_config.main, dict(WANTED, path=str(path), format="systemd", mode="u=rw,g=r,o=",
                                                 _ansible_diff=True), check_mode=True)
    assert check["changed"] and check["diff"]["before"] == "" and "[Service]" in check["diff"]["after"]
    assert not path.parent.exists()
    result = fail_module(ray_log_config.main, dict(WANTED, path=str(path), format="systemd"))
    assert "the directory of path %r does not exist; create it first" % str(path) in result["msg"]


def test_a_new_file_gets_a_symbolic_mode(run_module, tmp_path):
    path = tmp_path / ".env"
    assert run_module(ray_log_config.main, dict(WANTED, path=str(path), mode="u=rw,g=r,o="))["changed"]
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640 and os.listdir(tmp_path) == [".env"]
    assert "mode 'u=rwz' must be in octal or symbolic form" in fail_module(
        ray_log_config.main, dict(WANTED, path=str(path), mode="u=rwz"))["msg"]


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_symlinked_directory_anywhere_on_a_relative_path_is_refused(run_module, tmp_path, secret, monkeypatch,
                                                                      check_mode):
    """The directory is walked from the working directory too, one component at a time; no link is followed."""
    (tmp_path / "real" / "deeper").mkdir(parents=True)
    (tmp_path / "real" / "deeper" / ".env").write_text(USERS_ENV)
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    before = (tmp_path / "real" / "deeper" / ".env").read_text()
    monkeypatch.chdir(tmp_path)
    for path, link, target in (("linked/deeper/.env", "linked", str(tmp_path / "real")),
                               ("./real/../linked/deeper/.env", "real/../linked", str(tmp_path / "real"))):
        args = dict(WANTED, path=path, _ansible_diff=True, _ansible_check_mode=check_mode)
        result = fail_module(ray_log_config.main, args)
        assert "%r, a directory on the way to path %r, is a symlink to %r" % (link, path, target) in result["msg"]
        assert "give the real path %r instead" % str(tmp_path / "real" / "deeper" / ".env") in result["msg"]
    assert (tmp_path / "real" / "deeper" / ".env").read_text() == before
    assert sorted(os.listdir(tmp_path / "real" / "deeper")) == [".env"]
    assert run_module(ray_log_config.main, dict(WANTED, path="real/deeper/.env"))["changed"]  # the real path works


def test_a_fifo_swapped_in_after_the_check_is_never_opened(run_module, tmp_path, monkeypatch):
    """The directory's owner replaces the file by a fifo between root's lstat and its open: nothing is opened."""
    dest = tmp_path / ".env"
    dest.write_text(USERS_ENV)
    regular = os.lstat(dest)
    os.unlink(dest)
    os.mkfifo(dest)
    real_stat = os.stat
    seen = []

    def stat_before_the_swap(name, *args, **kwargs):  # root's first look still sees the user's regular file
        if name == dest.name and kwargs.get("dir_fd") is not None and not seen:
            seen.append(name)
            return regular
        return real_stat(name, *args, **kwargs)

    monkeypatch.setattr(_log_config.os, "stat", stat_before_the_swap)
    with opens_of([dest]) as opened:
        result = fail_module(ray_log_config.main, dict(WANTED, path=str(dest), _ansible_check_mode=True))
    assert opened == [] and seen, seen
    assert "path %r is a named pipe, not a regular file" % str(dest) in result["msg"]
