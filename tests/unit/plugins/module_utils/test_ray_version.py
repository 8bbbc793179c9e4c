# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ray's version and log rotation as the running node shows them (real Ray on each version: tests/system).

The version is read from the package of the trusted raylet, only through files and directories root or the Ray
users own; the effective rotation from the log_monitor's command line and the raylet's environment; what Ray
rotates per version, and what an external logrotate may take (never one of Ray's own backups).
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import select
import stat
import struct
import subprocess
import sys
import time

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils import (
    _ray_layout as layout,
    _ray_version as ray_version,
    _text,
)
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._fs import HOST
from ansible_collections.rayops.disk.plugins.module_utils._node import collect_usage
from ansible_collections.rayops.disk.plugins.module_utils._options import UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._text import rotation_messages
from ansible_collections.rayops.disk.plugins.modules import ray_tmp_usage
from ansible_collections.rayops.disk.tests.unit.conftest import SYSTEM_PYTHON, write

ROOT = frozenset({0})
IN_OPEN, IN_DONT_FOLLOW = 0x20, 0x02000000
_LIBC = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def opens_of(paths):
    """A list that holds, once the block is done, each of ``paths`` that anything opened meanwhile (inotify).

    Pinning an entry with ``O_PATH`` opens nothing and is not an open here; every real open is, even of a fifo
    with ``O_NONBLOCK`` or of a device node.
    """
    fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    opened: list = []
    try:
        watches = {}
        for path in paths:
            wd = _LIBC.inotify_add_watch(fd, os.fsencode(str(path)), IN_OPEN | IN_DONT_FOLLOW)
            assert wd >= 0, "%s: %s" % (path, os.strerror(ctypes.get_errno()))
            watches[wd] = str(path)
        yield opened
        while select.select([fd], [], [], 0.5)[0]:
            data = os.read(fd, 65536)
            for offset in range(0, len(data), 16):  # no names: watched entries, not directories
                wd, mask, _cookie, _length = struct.unpack_from("iIII", data, offset)
                if mask & IN_OPEN:
                    opened.append(watches[wd])
    finally:
        os.close(fd)


RAY_BACKUPS = {  # Ray's own rotated copies, as each version names them (seen on 2.40, 2.53, 2.60)
    "2.40.0": ["python-core-worker-7a21_30378.1.log", "python-core-driver-0100_3545.2.log", "dashboard.log.1",
               "monitor.log.3", "log_monitor.log.1"],
    "2.53.0": ["python-core-worker-6b92_3638.log.1", "worker-6b92-ffffffff-3638.out.1",
               "worker-6b92-ffffffff-3638.err.2", "gcs_server.out.1", "raylet.out.2", "dashboard.log.1"],
}
RAY_LOGS = ["raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err", "worker-6b92-ffffffff-3638.out",
            "worker-6b92-ffffffff-3638.err", "python-core-worker-6b92_3638.log", "dashboard.log", "monitor.out",
            "ray_client_server.out", "ray_client_server_23000.err", "job-driver-raysubmit_x1.log"]


def package(base, version=None, metadata=None):
    """A Ray package at ``base/site-packages/ray`` with a raylet program, ``_version.py`` and/or a dist-info."""
    site = os.path.join(base, "site-packages")
    exe = os.path.join(site, "ray", "core", "src", "ray", "raylet", "raylet")
    write(exe, 0)
    if version is not None:
        with open(os.path.join(site, "ray", "_version.py"), "w") as handle:
            handle.write('# Replaced with the current commit when building the wheels.\ncommit = "b7f4"\n'
                         'version = "%s"\n' % version)
    if metadata is not None:
        write(os.path.join(site, "ray-%s.dist-info" % metadata, "METADATA"), 0)
        with open(os.path.join(site, "ray-%s.dist-info" % metadata, "METADATA"), "w") as handle:
            handle.write("Metadata-Version: 2.1\nName: ray\nVersion: %s\nSummary: Ray\n\nVersion: 9.9.9\n" % metadata)
    for top, dirs, files in os.walk(base):
        for name in dirs:
            os.chmod(os.path.join(top, name), 0o755)
        for name in files:
            os.chmod(os.path.join(top, name), 0o644)
    return site, exe


@pytest.mark.parametrize("version", ["2.40.0", "2.53.0", "2.60.0rc1"])
def test_version_from_the_package_of_the_raylet(tmp_path, version):
    _site, exe = package(str(tmp_path), version=version)
    assert ray_version.installed_version(HOST, exe, ROOT) == (version, None)


def test_version_from_the_dist_info_when_version_py_is_missing(tmp_path):
    _site, exe = package(str(tmp_path), metadata="2.53.0")
    version, why = ray_version.installed_version(HOST, exe, ROOT)
    assert (version, why) == ("2.53.0", None)  # the first Version: of the header


def test_a_version_file_another_user_may_have_written_is_never_read(tmp_path):
    site, exe = package(str(tmp_path), version="2.40.0", metadata="2.53.0")
    version_py = os.path.join(site, "ray", "_version.py")
    os.chown(version_py, 65534, 65534)
    assert ray_version.installed_version(HOST, exe, ROOT) == ("2.53.0", None)  # the root-owned METADATA instead
    assert ray_version.installed_version(HOST, exe, frozenset({0, 65534}))[0] == "2.40.0"  # unless that user is Ray's
    os.chown(version_py, 0, 0)
    os.chmod(version_py, 0o664)
    assert ray_version.installed_version(HOST, exe, ROOT)[0] == "2.53.0"
    os.chmod(version_py, 0o644)
    os.chown(os.path.join(site, "ray"), 65534, 65534)  # a directory on the way
    version, why = ray_version.installed_version(HOST, exe, ROOT)
    assert version == "2.53.0" and why is None
    os.chown(site, 65534, 65534)
    version, why = ray_version.installed_version(HOST, exe, ROOT)
    assert version is None
    assert "_version.py: a directory on the way to %s is owned by uid 65534" % os.path.join(site, "ray") in why, why


def test_a_symlinked_or_special_version_file_is_never_followed(tmp_path):
    site, exe = package(str(tmp_path))
    secret = tmp_path / "secret"
    secret.write_text('version = "6.6.6"\n')
    os.symlink(str(secret), os.path.join(site, "ray", "_version.py"))
    version, why = ray_version.installed_version(HOST, exe, ROOT)
    assert version is None and "_version.py is not a regular file" in why, why
    os.unlink(os.path.join(site, "ray", "_version.py"))
    os.mkfifo(os.path.join(site, "ray", "_version.py"))  # never blocks
    version, why = ray_version.installed_version(HOST, exe, ROOT)
    assert version is None and "is not a regular file" in why, why


@pytest.mark.parametrize("kind", ["fifo", "character device"])
def test_a_version_file_that_is_a_fifo_or_a_device_is_never_opened(tmp_path, kind):
    """A container's root can mknod ``_version.py`` (c 1 5) next to its fake raylet: root must not open it."""
    site, exe = package(str(tmp_path))
    version_py = os.path.join(site, "ray", "_version.py")
    metadata = os.path.join(site, "ray-2.53.0.dist-info", "METADATA")
    os.makedirs(os.path.dirname(metadata), 0o755)
    for path in (version_py, metadata):
        if kind == "fifo":
            os.mkfifo(path, 0o644)
        else:
            os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    with opens_of([version_py, metadata]) as opened:
        version, why = ray_version.installed_version(HOST, exe, ROOT)
    assert opened == []
    assert version is None and "_version.py is not a regular file" in why and "METADATA is not a regular file" in why


def test_a_huge_version_file_is_read_only_so_far(tmp_path):
    site, exe = package(str(tmp_path))
    with open(os.path.join(site, "ray", "_version.py"), "w") as handle:
        handle.write("#" * (ray_version.VERSION_FILE_MAX + 10) + '\nversion = "2.40.0"\n')
    version, why = ray_version.installed_version(HOST, exe, ROOT)
    assert version is None and "names no version" in why


def test_not_a_ray_program():
    assert ray_version.installed_version(HOST, "/usr/bin/python3", ROOT) == (None, "/usr/bin/python3 is not in a Ray package")


def test_only_the_rotation_variables_of_the_environment_are_read():
    env = dict(os.environ, RAY_ROTATION_MAX_BYTES="1048576", RAY_ROTATION_BACKUP_COUNT="2", SECRET_TOKEN="s3cr3t")
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(30)"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"  # exec'd: /proc shows its own environment
        expected = {"RAY_ROTATION_MAX_BYTES": "1048576", "RAY_ROTATION_BACKUP_COUNT": "2"}
        assert ray_version.process_environ(proc.pid, ray_version.ROTATION_ENV) == expected
    finally:
        proc.kill()
        proc.communicate()
    assert ray_version.process_environ(proc.pid, ray_version.ROTATION_ENV) is None  # gone: unreadable


@pytest.mark.parametrize("version", sorted(RAY_BACKUPS))
def test_logrotate_never_takes_one_of_rays_own_backups(version):
    for rotation_set in (True, False):
        globs = ray_version.logrotate_globs(version, rotation_set)
        for name in sum(RAY_BACKUPS.values(), []):  # whatever the version: a backup of any is never taken
            assert not any(fnmatch.fnmatchcase(name, glob) for glob in globs), (name, globs)


def test_logrotate_takes_what_ray_leaves_per_version():
    def taken(version, rotation_set=True):
        globs = ray_version.logrotate_globs(version, rotation_set)
        return [name for name in RAY_LOGS if any(fnmatch.fnmatchcase(name, glob) for glob in globs)]

    before = ["raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err", "worker-6b92-ffffffff-3638.out",
              "worker-6b92-ffffffff-3638.err", "monitor.out", "ray_client_server.out", "ray_client_server_23000.err",
              "job-driver-raysubmit_x1.log"]
    since = ["ray_client_server.out", "ray_client_server_23000.err", "job-driver-raysubmit_x1.log"]
    assert taken("2.40.0") == taken("2.52.9") == taken(None) == taken("garbage") == before
    assert taken("2.53.0") == taken("2.60.0") == taken("3.0.0.dev0") == since
    assert taken("2.60.0", rotation_set=False) == before  # Ray started without RAY_ROTATION_MAX_BYTES


EFFECTIVE = {"max_bytes": 1048576, "backup_count": 2,
             "environment": {"RAY_ROTATION_MAX_BYTES": "1048576", "RAY_ROTATION_BACKUP_COUNT": "2"}}


@pytest.mark.parametrize("version, rotates", [
    ("2.40.0", ["component_logs", "core_logs"]),
    ("2.53.0", ["component_logs", "core_logs", "process_output"]),
    ("2.60.0", ["component_logs", "core_logs", "process_output"]),
])
def test_what_ray_rotates_per_version(version, rotates):
    report = ray_version.rotation_report(version, EFFECTIVE, 1048576, 2)
    assert report["ray_rotates"] == rotates
    assert report["ray_leaves"] == [kind for kind in ray_version.LOG_KINDS if kind not in rotates]
    assert (report["in_effect"], report["message"]) == (True, None)
    assert report["logrotate_globs"] == ray_version.logrotate_globs(version)


def test_configured_values_not_in_effect_name_the_restart():
    effective = {"max_bytes": 536870912, "backup_count": 5, "environment": {}}
    report = ray_version.rotation_report("2.40.0", effective, 1048576, 2, "ray-worker-1")
    assert report["in_effect"] is False
    assert report["message"] == (
        "Ray 2.40.0 on ray-worker-1 runs with log rotation at 536870912 bytes and 5 backup(s) (--logging-rotate-* of "
        "its log_monitor); RAY_ROTATION_MAX_BYTES is unset (Ray's default 536870912 applies), not the configured "
        "1048576; RAY_ROTATION_BACKUP_COUNT is unset (Ray's default 5 applies), not the configured 2. Ray reads "
        "RAY_ROTATION_* only when it starts: restart Ray on this node (stop its own processes, then start it with the "
        "environment file loaded) after changing the file.")
    changed = ray_version.rotation_report("2.53.0", EFFECTIVE, 2097152, 2)  # the file was changed, Ray not restarted
    assert changed["in_effect"] is False
    assert "RAY_ROTATION_MAX_BYTES is 1048576, not the configured 2097152" in changed["message"]
    assert "RAY_ROTATION_BACKUP_COUNT" not in changed["message"]


def test_without_configured_values_the_variable_must_be_there():
    started_without = {"max_bytes": 536870912, "backup_count": 5, "environment": {}}
    old = ray_version.rotation_report("2.40.0", started_without)
    assert old["in_effect"] is False
    assert "started without RAY_ROTATION_MAX_BYTES" in old["message"]
    assert "this version never rotates *.out and *.err" in old["message"]
    assert old["ray_rotates"] == ["component_logs", "core_logs"]  # 2.40's built-in default for its C++ logs
    new = ray_version.rotation_report("2.60.0", started_without)
    assert new["ray_rotates"] == ["component_logs"]
    assert "do not rotate python-core-*.log, *.out and *.err" in new["message"]
    assert new["logrotate_globs"] == ["*.out", "*.err", "job-driver-*.log"]
    assert ray_version.rotation_report("2.60.0", EFFECTIVE)["in_effect"] is True


def test_unreadable_environment_and_unknown_version():
    report = ray_version.rotation_report(None, dict(EFFECTIVE, environment=None), 1048576, 2, "host", "cannot read it")
    assert report["in_effect"] is None  # flags match, the raylet's environment is unreadable (not root)
    assert report["message"] == ("Ray's version could not be read (cannot read it): what Ray rotates is given as for "
                                 "Ray 2.40")
    assert report["ray_rotates"] == ["component_logs", "core_logs"]
    assert ray_version.rotation_report("2.60.0", None) is None  # no Ray


def test_rotation_off_on_purpose_is_in_effect():
    off = {"max_bytes": 0, "backup_count": 5, "environment": {"RAY_ROTATION_MAX_BYTES": "0"}}
    report = ray_version.rotation_report("2.60.0", off, 0)
    assert (report["in_effect"], report["message"]) == (True, None)
    assert "component_logs" not in report["ray_rotates"]


@pytest.fixture
def ray_with_version(ray_programs, sandbox, tmp_path, monkeypatch):
    """The sandbox node running a stand-in raylet (from a package saying 2.40.0) and log_monitor, Ray's way."""
    site = ray_programs["raylet"].split("/ray/core/")[0]
    with open(os.path.join(site, "ray", "_version.py"), "w") as handle:
        handle.write('version = "2.40.0"\n')
    os.chmod(os.path.join(site, "ray", "_version.py"), 0o644)
    script = os.path.join(site, "ray", "_private", "log_monitor.py")
    os.makedirs(os.path.dirname(script), mode=0o755, exist_ok=True)
    with open(script, "w") as handle:
        handle.write("import time\ntime.sleep(600)\n")
    os.chmod(script, 0o644)
    tmp = tmp_path / "tmp"
    session = tmp / "ray" / "session_2026-11-22_10-00-00_000002_22"
    write(str(session / "logs" / "raylet.out"), 4096)
    write(str(tmp / "pymp-k2v8x1qz" / "listener-1"), 4096)
    write(str(tmp / "pymp-untouched"), 4096)  # a file: not Python's dir
    monkeypatch.setenv("RAY_ROTATION_MAX_BYTES", "1048576")
    monkeypatch.setenv("RAY_ROTATION_BACKUP_COUNT", "2")
    sandbox.spawn("raylet", "--session_dir=%s" % session, "--temp_dir=%s" % (tmp / "ray"))
    sandbox._popen(["nsenter", "--mount=/proc/%d/ns/mnt" % sandbox.init.pid, SYSTEM_PYTHON, script,
                    "--session-dir=%s" % session, "--logging-rotate-bytes=1048576", "--logging-rotate-backup-count=2"])
    monkeypatch.delenv("RAY_ROTATION_BACKUP_COUNT")
    deadline = time.time() + 20
    while not any(p.kind == "log_monitor" for p in layout.ray_processes(psutil, sandbox.target.mnt_ns)):
        assert time.time() < deadline, "no log_monitor"
        time.sleep(0.05)
    return tmp


def test_the_report_of_a_running_node(ray_with_version):
    tmp = ray_with_version
    options = UsageOptions(tmp_dir=str(tmp), scan_workers=1, rotation_max_bytes="1MB", rotation_backup_count=2)
    report = collect_usage(options, psutil)
    assert report["ray_version"] == "2.40.0"
    rotation = report["log_rotation"]
    assert (rotation["max_bytes"], rotation["backup_count"], rotation["in_effect"]) == (1048576, 2, True)
    assert rotation["environment"] == {"RAY_ROTATION_MAX_BYTES": "1048576", "RAY_ROTATION_BACKUP_COUNT": "2"}
    assert rotation["logrotate_globs"] == ["*.out", "*.err", "job-driver-*.log"]
    assert report["categories"]["pymp_dirs"]["files"] == 1  # the dir's socket stand-in, not the file named so
    assert report["categories"]["other"]["files"] >= 1


def test_the_module_warns_when_the_configured_rotation_is_not_in_effect(ray_with_version, run_module, monkeypatch):
    warned = []
    monkeypatch.setattr(ray_tmp_usage.AnsibleModule, "warn", lambda _module, text: warned.append(text))
    result = run_module(ray_tmp_usage.main, {"tmp_dir": str(ray_with_version), "scan_workers": 1,
                                             "rotation_max_bytes": "2MB"})
    assert result["log_rotation"]["in_effect"] is False
    assert warned == [result["log_rotation"]["message"]]
    assert "not the configured 2097152" in warned[0] and "restart Ray" in warned[0]
    quiet = run_module(ray_tmp_usage.main, {"tmp_dir": str(ray_with_version), "scan_workers": 1})
    assert quiet["log_rotation"]["in_effect"] is True and len(warned) == 1


def test_pymp_dirs_are_reported_not_cleaned_by_default(tmp_path):
    write(str(tmp_path / "pymp-abc" / "x"), 8192)
    report = collect_usage(UsageOptions(tmp_dir=str(tmp_path), ray_temp_dir=str(tmp_path / "ray"), scan_workers=1),
                           psutil)
    assert report["categories"]["pymp_dirs"]["bytes"] >= 8192
    assert not report["suggestions"]  # nothing of it is offered for cleanup
    with_pattern = collect_usage(UsageOptions(tmp_dir=str(tmp_path), ray_temp_dir=str(tmp_path / "ray"),
                                              patterns=("pymp-*",), scan_workers=1), psutil)
    assert with_pattern["categories"]["pymp_dirs"]["bytes"] == 0  # asked for: a pattern like any other
    assert with_pattern["categories"]["tmp_patterns"]["by_pattern"]["pymp-*"]["files"] == 1


@pytest.mark.parametrize("options, message", [
    ({"rotation_max_bytes": "512M"}, None),
    ({"rotation_max_bytes": "lots"}, "rotation_max_bytes 'lots' is not a size"),
    ({"rotation_backup_count": 0}, "rotation_backup_count 0 must be a whole number of 1 or more"),
])
def test_configured_values_are_checked(tmp_path, options, message):
    opts = UsageOptions(tmp_dir=str(tmp_path), **options)
    if message is None:
        opts.validate()
        return
    with pytest.raises(UsageError, match=message):
        opts.validate()


def test_the_version_of_an_untrusted_package_is_not_reported(ray_with_version, ray_programs):
    site = ray_programs["raylet"].split("/ray/core/")[0]
    os.chown(os.path.join(site, "ray", "_version.py"), 65534, 65534)
    report = collect_usage(UsageOptions(tmp_dir=str(ray_with_version), scan_workers=1), psutil)
    assert report["ray_version"] is None
    assert "_version.py" in report["log_rotation"]["message"]


def test_monitor_says_what_ray_rotates_and_what_is_not_in_effect():
    rotation = ray_version.rotation_report("2.40.0", EFFECTIVE, 2097152, 2, "ray-worker-1")
    entry = {"name": "ray-worker-1", "ray_version": "2.40.0", "log_rotation": rotation}
    assert _text.rotation_line("ray-worker-1", entry) == (
        "ray-worker-1: Ray 2.40.0 rotates its logs at 1048576 bytes, 2 backup(s) (component_logs, core_logs; in "
        "effect: no); leaves to logrotate: *.out, *.err, job-driver-*.log")
    report = {"log_rotation": None, "containers": [entry, {"name": "stopped"}]}
    assert rotation_messages(report) == [rotation["message"]]
