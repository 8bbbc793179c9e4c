# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Log rotation that holds per Ray version: real Ray 2.40, 2.53 and the newest, real Ansible, real logrotate.

Ray starts with ``RAY_ROTATION_MAX_BYTES`` 256 KiB, 2 backups and debug C++ logging; a driver runs 1500 small
tasks (the core workers' debug logs pass 256 KiB) and a task that prints 1 MB. Then, on each version:

- what Ray itself did: 2.40 rotated its ``.log`` files (``…_PID.1.log``) and let ``worker-*.out`` grow past the
  limit; 2.53 and later rotated ``worker-*.out`` too (``.out.1``);
- ``ray_tmp_usage`` reports that Ray's version and the rotation it took, in effect or not against what is configured;
- the role's logrotate config, rendered by the role itself for that version and run with real ``logrotate -f`` (as
  the Ray user, ``su``): on 2.40 it copy-truncates the ``.out`` Ray let grow and leaves Ray's own backups alone; on
  2.53 and later it touches none of the files Ray rotates itself.

Without Ray: the role's ``ray_cleanup_ray_version: auto`` asks the configured Python, as the Ray user, which Ray it
has, and says once when it cannot tell.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import importlib.metadata
import os
import pwd
import re
import subprocess
import uuid

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import ansible_module
from ansible_collections.rayops.disk.tests.system.test_role_security import deployed, logrotate
from ansible_collections.rayops.disk.tests.unit.conftest import system_users

MAX_BYTES = 256 * 1024
DRIVER = r"""
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote
def nop(index):
    return index

@ray.remote
def chatty():
    for index in range(10000):
        print("%06d " % index + "x" * 93, flush=index % 500 == 0)  # 1 MB of stdout
    return "done"

ray.get([nop.remote(index) for index in range(1500)])  # the core workers' debug logs pass MAX_BYTES
print(ray.get(chatty.remote()))
"""
COPY = re.compile(r"^(?P<name>.+)-\d{8}-\d+$")
"""A copy logrotate made (dateext, dateformat -%Y%m%d-%s; the first one is not compressed: delaycompress)."""


@pytest.fixture
def ray_user():
    """A real unprivileged user: logrotate acts as it on Ray's logs (``su``), as the role has it."""
    with system_users({"ray": "rtrot" + uuid.uuid4().hex[:6]}) as names:
        yield names["ray"]


def ray_version(head):
    """The version of the Ray this head runs (the newest is the dev venv's)."""
    return importlib.metadata.version("ray") if head.version == "newest" else head.version


def newer(version):
    return tuple(int(part) for part in version.split(".")[:2]) >= (2, 53)


def digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def snapshot(logs):
    """Every regular file in ``logs``: inode, size and content."""
    found = {}
    for name in os.listdir(logs):
        path = os.path.join(logs, name)
        if os.path.isfile(path) and not os.path.islink(path):
            st = os.stat(path)
            found[name] = (st.st_ino, st.st_size, digest(path))
    return found


def rendered_globs(config, logs_glob):
    """The names the rendered config gives logrotate in Ray's session logs."""
    prefix = logs_glob + "/"
    return [line[len(prefix):] for line in config.splitlines() if line.startswith(prefix)]


def matches(name, globs):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in globs)


def test_rotation_holds_per_version(any_ray_head, ray_user, scratch):
    head = any_ray_head
    version = ray_version(head)
    head.env.update(RAY_ROTATION_MAX_BYTES=str(MAX_BYTES), RAY_ROTATION_BACKUP_COUNT="2", RAY_BACKEND_LOG_LEVEL="debug")
    head.start()
    driver = head.driver(DRIVER)
    out, _err = driver.communicate(timeout=180)
    assert out.strip().endswith("done"), out
    logs = glob.glob(os.path.join(head.temp_dir, "session_2*", "logs"))[0]
    names = os.listdir(logs)

    # What Ray itself did on this version.
    worker_out = [name for name in names if re.match(r"^worker-.*\.out$", name)]
    assert worker_out, sorted(names)
    if newer(version):
        assert any(re.match(r"^worker-.*\.out\.1$", name) for name in names), sorted(names)
        assert all(os.path.getsize(os.path.join(logs, name)) <= MAX_BYTES for name in worker_out)
        assert any(re.match(r"^python-core-.*_\d+\.log\.1$", name) for name in names), sorted(names)
    else:
        assert not [name for name in names if ".out." in name], sorted(names)  # Ray 2.40 never rotates .out
        assert max(os.path.getsize(os.path.join(logs, name)) for name in worker_out) > 3 * MAX_BYTES
        assert any(re.match(r"^python-core-.*_\d+\.1\.log$", name) for name in names), sorted(names)

    # ray_tmp_usage: the version, the rotation Ray took, and whether what is configured is in effect.
    args = {"tmp_dir": head.temp_dir, "ray_temp_dir": head.temp_dir, "rotation_max_bytes": "256KB",
            "rotation_backup_count": 2, "scan_workers": 1}
    report = ansible_module("rayops.disk.ray_tmp_usage", args)
    assert report["ray_version"] == version
    rotation = report["log_rotation"]
    assert (rotation["max_bytes"], rotation["backup_count"]) == (MAX_BYTES, 2)
    assert rotation["environment"] == {"RAY_ROTATION_MAX_BYTES": str(MAX_BYTES), "RAY_ROTATION_BACKUP_COUNT": "2"}
    assert (rotation["in_effect"], rotation["message"]) == (True, None)
    assert ("process_output" in rotation["ray_rotates"]) is newer(version)
    assert "core_logs" in rotation["ray_rotates"] and "job_driver_logs" in rotation["ray_leaves"]
    stale = ansible_module("rayops.disk.ray_tmp_usage", dict(args, rotation_max_bytes="1MB"))
    assert stale["log_rotation"]["in_effect"] is False
    message = stale["log_rotation"]["message"]
    assert "RAY_ROTATION_MAX_BYTES is %d, not the configured 1048576" % MAX_BYTES in message, message
    assert "restart Ray" in message  # (and a module warning: test_ray_tmp_usage's unit tests)

    # The role's logrotate config for this version, run as the Ray user on Ray's real logs (Ray stopped first, so
    # that what logrotate did is all that changed). Ray runs as root here: its logs are handed to the Ray user.
    head.stop()
    logs_glob = os.path.join(head.temp_dir, "session_2*", "logs")
    config, _proc = deployed(scratch, ray_cleanup_ray_user=ray_user, ray_cleanup_ray_version=version,
                             ray_cleanup_logrotate_ray_log_dirs=[logs_glob])
    globs = rendered_globs(config, logs_glob)
    assert globs == rotation["logrotate_globs"]  # the role and ray_tmp_usage agree
    entry = pwd.getpwnam(ray_user)
    os.chmod(head.temp_dir, 0o755)
    os.chown(logs, entry.pw_uid, entry.pw_gid)
    for name in os.listdir(logs):
        if os.path.isfile(os.path.join(logs, name)):
            os.chown(os.path.join(logs, name), entry.pw_uid, entry.pw_gid)
    before = snapshot(logs)

    proc = logrotate(scratch, config)

    assert not [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")], proc.stderr
    after = snapshot(logs)
    copies = {COPY.match(name).group("name"): name for name in set(after) - set(before) if COPY.match(name)}
    assert set(after) - set(before) == set(copies.values()), sorted(set(after) - set(before))
    rotated = sorted(copies)
    for name, (inode, size, content) in before.items():
        if name in copies:
            assert after[name][:2] == (inode, 0), name  # copytruncate: the same file, emptied ...
            assert after[copies[name]][2] == content, name  # ... its content in the dated copy
        else:
            assert after[name] == (inode, size, content), name  # untouched
    assert set(rotated) == {name for name, (_inode, size, _content) in before.items()
                            if size and matches(name, globs)}  # notifempty
    ray_backups = [name for name in before if re.search(r"\.\d+\.log$|\.(log|out|err)\.\d+$", name)]
    assert ray_backups and not set(ray_backups) & set(rotated), (ray_backups, rotated)
    if newer(version):
        assert all(name.startswith("ray_client_server") for name in rotated), rotated  # all Ray leaves there
        assert not set(worker_out) & set(rotated)
    else:
        assert set(worker_out) <= set(rotated)  # the .out Ray let grow
        assert "raylet.out" in rotated and "gcs_server.out" in rotated
        assert not [name for name in rotated if name.endswith(".log")]


def fake_python(scratch, ray_version):
    """A venv (of the system Python, which any user may run) whose site-packages holds only Ray's metadata."""
    venv = os.path.join(scratch, "venv")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
    site = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))[0]
    dist = os.path.join(site, "ray-%s.dist-info" % ray_version)
    os.mkdir(dist)
    with open(os.path.join(dist, "METADATA"), "w") as handle:
        handle.write("Metadata-Version: 2.1\nName: ray\nVersion: %s\n" % ray_version)
    return os.path.join(venv, "bin", "python")


def test_role_asks_the_configured_python_for_the_ray_version(ray_user, scratch):
    logs_glob = os.path.join(scratch, "ray", "session_2*", "logs")
    config, proc = deployed(scratch, ray_cleanup_ray_user=ray_user, ray_cleanup_logrotate_ray_log_dirs=[logs_glob],
                            ray_cleanup_ray_python=fake_python(scratch, "2.53.0"))
    assert rendered_globs(config, logs_glob) == ["ray_client_server*.out", "ray_client_server*.err",
                                                 "job-driver-*.log"]
    assert "Ray 2.53.0 itself leaves unrotated" in config
    assert "version on localhost is unknown" not in proc.stdout

    # RAY_ROTATION_MAX_BYTES 0: Ray 2.53 rotates nothing of its own, logrotate takes every .out and .err.
    config, _proc = deployed(scratch, ray_cleanup_ray_user=ray_user, ray_cleanup_logrotate_ray_log_dirs=[logs_glob],
                             ray_cleanup_ray_version="2.53.0", ray_cleanup_ray_rotation_max_bytes="0")
    assert rendered_globs(config, logs_glob) == ["*.out", "*.err", "job-driver-*.log"]


def test_role_says_once_when_the_ray_version_is_unknown(ray_user, scratch):
    """The system Python has no Ray: the role takes what Ray 2.40 leaves, which is safe on every version."""
    logs_glob = os.path.join(scratch, "ray", "session_2*", "logs")
    config, proc = deployed(scratch, ray_cleanup_ray_user=ray_user, ray_cleanup_logrotate_ray_log_dirs=[logs_glob])
    assert rendered_globs(config, logs_glob) == ["*.out", "*.err", "job-driver-*.log"]
    assert "Ray (version unknown: as 2.40) itself leaves unrotated" in config
    out = " ".join(proc.stdout.split())
    # (the callback doubles the quote in "Ray's")
    assert out.count("version on localhost is unknown (/usr/bin/python3 run as %s said: " % ray_user) == 1, out
    assert "No package metadata was found for ray" in out
    assert "Set ray_cleanup_ray_python to the Python Ray is installed in" in out
