# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Ray, started with the environment file ray_log_config wrote, rotates its logs at that size.

The newest Ray here: it rotates ``worker-*.out`` itself, as 2.53 does. Ray 2.40 never rotates ``.out`` files
(only ``.log``); what each version rotates, and the role's logrotate for the rest: test_ray_rotation.py.

And the audit's attack, for real: a local user who owns the directory of the
file (as with /opt/ray/.env) swaps every new entry there for a symlink to a
root-owned file while root runs the module through Ansible.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import ansible_module, run_ansible

CHATTY_DRIVER = r"""
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote
def chatty():
    for index in range(36000):
        print("%06d " % index + "x" * 93, flush=index % 500 == 0)  # 3.6 MB of stdout
    return "done"

print(ray.get(chatty.remote()))
"""


def test_ray_rotates_worker_logs_at_the_size_written(ray_head, tmp_path):
    """Ray 2.53 and later rotate worker-*.out at RAY_ROTATION_MAX_BYTES (2.40 does not: test_ray_rotation.py)."""
    env_file = tmp_path / "ray.env"
    result = ansible_module("rayops.disk.ray_log_config", {"path": str(env_file), "rotation_max_bytes": "1MB",
                                                           "rotation_backup_count": 2, "backend_log_level": "40"})
    assert result["changed"] is True
    for line in env_file.read_text().splitlines():  # as a Compose .env or an EnvironmentFile= would
        key, value = line.split("=", 1)
        ray_head.env[key] = value
    assert ray_head.env["RAY_BACKEND_LOG_LEVEL"] == "error"
    ray_head.start()
    run = subprocess.run([sys.executable, "-c", CHATTY_DRIVER, "127.0.0.1:%d" % ray_head.port], env=ray_head.env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.stdout.strip().endswith("done"), run.stderr
    session = glob.glob(os.path.join(ray_head.temp_dir, "session_2*"))[0]
    worker_logs = glob.glob(os.path.join(session, "logs", "worker-*.out*"))
    rotated = [path for path in worker_logs if path.endswith(".out.1")]
    assert rotated, sorted(worker_logs)
    assert max(os.path.getsize(path) for path in worker_logs) <= 1024 * 1024
    assert not [path for path in worker_logs if path.endswith(".out.3")]  # two backups kept, no more
    usage = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": ray_head.temp_dir, "ray_temp_dir": ray_head.temp_dir,
                                                         "rotation_max_bytes": "1MB", "rotation_backup_count": 2})
    assert usage["log_rotation"]["in_effect"] is True, usage["log_rotation"]  # what the file says is what Ray took


USERS_ENV = "# executor settings\nPATH=/usr/bin\nexport RAY_BACKEND_LOG_LEVEL=40\nRAY_ROTATION_MAX_BYTES=512M\n"
SECRET = "ROOT_ONLY_TOKEN=s3cr3t-91c4\n"

ATTACKER = r"""
import ctypes, itertools, os, struct, sys
directory, target = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CREATE, IN_ISDIR = 0x100, 0x40000000
inotify = libc.inotify_init1(0)
assert inotify >= 0 and libc.inotify_add_watch(inotify, directory.encode(), IN_CREATE) >= 0
dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
counter = itertools.count()

def ready_link():  # made in advance: the swap is then a single rename
    name = ".lnk-%d" % next(counter)
    os.symlink(target, name, dir_fd=dirfd)
    return name

link = ready_link()
print("ready", flush=True)
while True:
    events = os.read(inotify, 65536)
    pos = 0
    while pos < len(events):
        _wd, mask, _cookie, length = struct.unpack_from("iIII", events, pos)
        name = events[pos + 16:pos + 16 + length].rstrip(b"\0").decode("utf-8", "surrogateescape")
        pos += 16 + length
        if name.startswith((".lnk-", ".away-")):
            continue
        print("saw", name, flush=True)
        try:
            if mask & IN_ISDIR:  # a directory cannot be renamed over: move it away first
                os.rename(name, ".away-%d" % next(counter), src_dir_fd=dirfd, dst_dir_fd=dirfd)
            os.rename(link, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except OSError as exc:
            print("missed", name, exc.errno, flush=True)
            continue
        print("swapped", name, flush=True)
        link = ready_link()
"""


def ansible_cli(args, *flags):
    """Run the module through ``ansible`` with extra flags (--check, --diff): its result and all it printed."""
    proc = run_ansible("ansible", "localhost", "-m", "rayops.disk.ray_log_config", "-a", json.dumps(args), *flags,
                       ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    printed = proc.stdout + proc.stderr
    for line_start in ("localhost | SUCCESS => ", "localhost | CHANGED => ", "localhost | FAILED! => "):
        if line_start in proc.stdout:
            result = json.loads(proc.stdout.split(line_start, 1)[1])
            result["failed"] = "FAILED" in line_start
            return result, printed
    raise AssertionError(printed)


@pytest.fixture
def local_user():
    """A real unprivileged user, made for this test and removed after it: (name, uid, gid)."""
    name = "rayatk%s" % secrets.token_hex(4)
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        yield name, entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)  # when userdel left it


@pytest.fixture
def user_tree(local_user):
    """/tmp/rayops-race-*/ (root, 0755) with ray/ and ray/.env owned by the user, and a root-only 0600 file."""
    _name, uid, gid = local_user
    base = tempfile.mkdtemp(prefix="rayops-race-", dir="/tmp")
    os.chmod(base, 0o755)
    ray_dir = os.path.join(base, "ray")
    os.mkdir(ray_dir, 0o755)
    os.chown(ray_dir, uid, gid)
    env = os.path.join(ray_dir, ".env")
    with open(env, "w") as handle:
        handle.write(USERS_ENV)
        os.fchown(handle.fileno(), uid, gid)
        os.fchmod(handle.fileno(), 0o644)
    secret = os.path.join(base, "root-only")
    with open(secret, "w") as handle:
        handle.write(SECRET)
        os.fchmod(handle.fileno(), 0o600)
    try:
        yield ray_dir, env, secret
    finally:
        shutil.rmtree(base, ignore_errors=True)


def untouched(secret):
    st = os.lstat(secret)
    with open(secret) as handle:
        return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, handle.read()) == \
            (stat.S_IFREG, 0o600, 0, 0, SECRET)


def test_a_user_swapping_new_entries_for_symlinks_gets_nothing(local_user, user_tree):
    """The audit's race, with a real user process watching the directory with inotify; six runs, some with backup."""
    _name, uid, gid = local_user
    ray_dir, env, secret = user_tree
    attacker = subprocess.Popen(["/usr/bin/python3", "-I", "-c", ATTACKER, ray_dir, secret], user=uid, group=gid,
                                extra_groups=[], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert attacker.stdout.readline().strip() == "ready", attacker.stderr.read()
        for run in range(6):
            size = "%dKB" % (512 + run)
            result, printed = ansible_cli({"path": env, "rotation_max_bytes": size, "rotation_backup_count": 2,
                                           "backend_log_level": "40", "backup": run % 2 == 1})
            assert untouched(secret), "run %d handed the root-only file to the user: %r" % (run, os.lstat(secret))
            assert result.get("changed") is True and not result.get("failed"), printed
            st = os.lstat(env)  # the destination itself: a regular file, the user's, with the new content
            assert stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o644)
            with open(env) as handle:
                assert "RAY_ROTATION_MAX_BYTES=%d\n" % ((512 + run) * 1024) in handle.read()
        time.sleep(0.5)  # let the attacker act on the last events
    finally:
        attacker.kill()
        out, err = attacker.communicate()
    assert untouched(secret)
    assert "saw .ray_log_config-" in out, out + err  # it watched every private directory being made ...
    assert "swapped" in out, out + err  # ... and did swap entries (at least the backups) for symlinks
    leftovers = [name for name in os.listdir(ray_dir) if name.startswith(".ray_log_config-")]
    assert all(os.path.islink(os.path.join(ray_dir, name)) for name in leftovers), leftovers  # its own links


@pytest.mark.parametrize("flags", [("--check", "--diff"), ("--diff",)])
@pytest.mark.parametrize("kind", ["symlink", "hard link"])
def test_a_linked_destination_is_refused_and_the_root_file_never_shown(user_tree, flags, kind):
    ray_dir, env, secret = user_tree
    os.unlink(env)
    if kind == "symlink":
        os.symlink(secret, env)
    else:
        os.link(secret, env)
    result, printed = ansible_cli({"path": env, "rotation_max_bytes": "1MB", "backup": True}, *flags)
    assert result.get("failed") is True, printed
    expected = "path %r is a symlink" % env if kind == "symlink" else "path %r has 2 hard links" % env
    assert expected in result["msg"], printed
    if kind == "symlink":
        assert "give the real file %r instead" % secret in result["msg"]
    assert "s3cr3t" not in printed
    assert untouched(secret)
    assert sorted(os.listdir(ray_dir)) == [".env"]


@pytest.fixture
def user_with_home():
    """A real unprivileged user whose home (``/tmp/rayops-home-*/<name>``) it owns: (name, uid, gid, home, base)."""
    base = tempfile.mkdtemp(prefix="rayops-home-", dir="/tmp")
    os.chmod(base, 0o755)
    name = "rayhome%s" % secrets.token_hex(4)
    home = os.path.join(base, name)
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", home,
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        os.mkdir(home, 0o755)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield name, entry.pw_uid, entry.pw_gid, home, base
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def fingerprint(path):
    """A file's type, mode, owner, links and content digest: anything root did to it changes this."""
    st = os.lstat(path)
    with open(path, "rb") as handle:
        return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink, st.st_ino,
                hashlib.sha256(handle.read()).hexdigest())


@pytest.mark.parametrize("flags", [(), ("--check", "--diff")])
def test_a_symlink_in_a_directory_on_the_way_is_refused_naming_it(user_with_home, flags):
    """Finding 6: the user's ``~/cfg/ray`` is a link to a root-only directory; root must not edit the file there."""
    name, uid, gid, home, base = user_with_home
    root_only = os.path.join(base, "root-only")
    os.mkdir(root_only, 0o700)
    env = os.path.join(root_only, ".env")
    with open(env, "w") as handle:
        handle.write(SECRET + "RAY_ROTATION_MAX_BYTES=1\n")
        os.fchmod(handle.fileno(), 0o600)
    cfg = os.path.join(home, "cfg")
    os.mkdir(cfg, 0o755)
    os.chown(cfg, uid, gid)
    subprocess.run(["ln", "-s", root_only, os.path.join(cfg, "ray")], user=uid, group=gid, extra_groups=[],
                   check=True)  # made by the user, in the user's own directory
    before = fingerprint(env)
    result, printed = ansible_cli({"path": "~%s/cfg/ray/.env" % name, "rotation_max_bytes": "1MB",
                                   "rotation_backup_count": 2, "backup": True}, *flags)
    assert result.get("failed") is True, printed
    link = os.path.join(cfg, "ray")
    assert "%r, a directory on the way to path %r, is a symlink to %r" % (link, os.path.join(link, ".env"), root_only) \
        in result["msg"], printed
    assert "give the real path %r instead" % env in result["msg"], printed
    assert "s3cr3t" not in printed and "diff" not in result
    assert fingerprint(env) == before and os.listdir(root_only) == [".env"]
    assert os.listdir(cfg) == ["ray"] and os.readlink(link) == root_only
