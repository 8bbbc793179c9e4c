# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's logrotate config and env-file directories against a local attacker, with real logrotate and real users.

The role runs for real on localhost (its ``main`` entry point, ``--tags ray_cleanup_configure``; preflight always
runs), every file it writes redirected into a temp dir. Two unprivileged users are created for the test and removed
after it: the user running Ray, and an attacker who can write to Ray's world-writable dirs as anyone can.

The attack (audit finding): the attacker makes ``ray/session_2099-x`` and ``ln -s /victim-dir ray/session_2099-x/logs``.
logrotate follows a symlink in any directory of a path (its own checks cover the last component only): acting as
root, it copytruncated a root-only 0640 file to 0 bytes.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
import subprocess
import uuid

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import run_ansible
from ansible_collections.rayops.disk.tests.unit.conftest import system_users

PLAYBOOK = """\
- name: The role, as a deploy runs it
  hosts: localhost
  gather_facts: false
  roles:
    - role: rayops.disk.ray_cleanup
  post_tasks:
    - name: Keep the CLI's config the role would write (install.yml, not run here)
      ansible.builtin.copy:
        content: "{{ _ray_cleanup_config | to_json }}"
        dest: "{{ node }}/cli-config.json"
        mode: "0600"
      tags: [always]
"""
SECRET = b"root-only: must survive logrotate\n" * 512
RAY_LOG = b"raylet line\n" * 4096
LEFT_TO_RAY = "session logs are left to Ray"  # the callback doubles the quote in Ray's


def sh(*argv, user=None):
    """Run a command, as ``user`` (name) when given, with no supplementary groups."""
    kwargs = {}
    if user:
        entry = pwd.getpwnam(user)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False, **kwargs)


@pytest.fixture(scope="module")
def users():
    """Two real unprivileged users (and their groups): ``ray`` runs Ray, ``attacker`` is any other local user."""
    suffix = uuid.uuid4().hex[:6]
    with system_users({"ray": "rtray" + suffix, "attacker": "rtatk" + suffix}) as names:
        yield names


def deploy(scratch, **variables):
    """Run the role's configure tasks on localhost, writing only under ``<scratch>/node``.

    Returns the finished ansible-playbook process.
    """
    node = os.path.join(scratch, "node")
    for sub in ("logrotate.d", "cron.d"):
        os.makedirs(os.path.join(node, sub), exist_ok=True)
    extra = {
        "node": node,
        # Internal: where the role puts its logrotate config and cron file (/etc/logrotate.d, /etc/cron.d).
        "_ray_cleanup_logrotate_file": os.path.join(node, "logrotate.d", "rayops-ray"),
        "_ray_cleanup_cron_file": os.path.join(node, "cron.d", "rayops-ray-maintenance"),
        "ray_cleanup_log_dir": os.path.join(node, "log"),
        "ray_cleanup_metrics_dir": os.path.join(node, "metrics"),
        "ray_cleanup_diagnose_state_file": os.path.join(node, "state", "diagnose-state.json"),
        "ray_cleanup_bin_path": os.path.join(node, "bin", "ray-maintenance"),
        "ray_cleanup_config_path": os.path.join(node, "etc", "ray-maintenance.json"),
        "ray_cleanup_lib_dir": os.path.join(node, "lib"),
        "ray_cleanup_ray_env_files": [{"path": os.path.join(node, "env", "ray.env"), "format": "env"}],
        "ray_cleanup_logrotate_ray_log_dirs": [os.path.join(scratch, "ray", "session_2*", "logs")],
    }
    extra.update(variables)
    with open(os.path.join(scratch, "playbook.yml"), "w") as handle:
        handle.write(PLAYBOOK)
    with open(os.path.join(scratch, "extra.json"), "w") as handle:
        json.dump(extra, handle)
    return run_ansible("ansible-playbook", os.path.join(scratch, "playbook.yml"), "--tags", "ray_cleanup_configure",
                       "-e", "@" + os.path.join(scratch, "extra.json"))


def deployed(scratch, **variables):
    proc = deploy(scratch, **variables)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(os.path.join(scratch, "node", "logrotate.d", "rayops-ray")) as handle:
        return handle.read(), proc


def ray_layout(scratch, ray_user):
    """Ray's temp dir as Ray makes it: owned by the Ray user, world-writable; one session with a log."""
    entry = pwd.getpwnam(ray_user)
    logs = os.path.join(scratch, "ray", "session_2026-01-01_00-00-00_000001_1", "logs")
    os.makedirs(logs)
    for path in (os.path.join(scratch, "ray"), os.path.dirname(logs), logs):
        os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(path, 0o777)
    log = os.path.join(logs, "raylet.out")
    with open(log, "wb") as handle:
        handle.write(RAY_LOG)
    os.chown(log, entry.pw_uid, entry.pw_gid)
    os.chmod(log, 0o644)
    return log


def plant(scratch, attacker):
    """The attack: a root-only 0640 file with content, and a session whose ``logs`` is a symlink to its dir.

    Also a session whose log itself is a symlink to it (logrotate's own check covers that one).
    Returns the victim file.
    """
    victim_dir = os.path.join(scratch, "victim-dir")
    os.mkdir(victim_dir)
    os.chmod(victim_dir, 0o755)
    victim = os.path.join(victim_dir, "x.out")  # a name logrotate takes on any Ray
    with open(victim, "wb") as handle:
        handle.write(SECRET)
    os.chmod(victim, 0o640)
    ray = os.path.join(scratch, "ray")
    for argv in (["mkdir", os.path.join(ray, "session_2099-x")],
                 ["ln", "-s", victim_dir, os.path.join(ray, "session_2099-x", "logs")],
                 ["mkdir", "-p", os.path.join(ray, "session_2099-y", "logs")],
                 ["ln", "-s", victim, os.path.join(ray, "session_2099-y", "logs", "x.out")]):
        proc = sh(*argv, user=attacker)
        assert proc.returncode == 0, (argv, proc.stderr)
    return victim


def logrotate(scratch, config):
    path = os.path.join(scratch, "logrotate.conf")
    with open(path, "w") as handle:
        handle.write(config)
    return sh("logrotate", "-f", "-s", os.path.join(scratch, "logrotate.state"), path)


def assert_untouched(victim):
    info = os.lstat(victim)
    with open(victim, "rb") as handle:
        assert handle.read() == SECRET, "the root-only file was truncated"
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o640)
    assert os.listdir(os.path.dirname(victim)) == ["x.out"]  # no rotated copy of it either


def assert_rotated(log, ray_user):
    """copytruncate: the log is empty, a dated copy (owned by the Ray user) holds what it held."""
    assert os.path.getsize(log) == 0
    copies = [name for name in os.listdir(os.path.dirname(log)) if name.startswith("raylet.out-")]
    assert len(copies) == 1, os.listdir(os.path.dirname(log))
    copy = os.path.join(os.path.dirname(log), copies[0])
    with open(copy, "rb") as handle:
        assert handle.read() == RAY_LOG
    assert os.lstat(copy).st_uid == pwd.getpwnam(ray_user).pw_uid


def test_symlinked_session_logs_dir_cannot_make_logrotate_truncate_a_root_file(scratch, users):
    config, _proc = deployed(scratch, ray_cleanup_ray_user=users["ray"])
    log = ray_layout(scratch, users["ray"])
    victim = plant(scratch, users["attacker"])

    proc = logrotate(scratch, config)

    assert_untouched(victim)
    assert_rotated(log, users["ray"])  # not safe by rotating nothing: Ray's real log was rotated
    assert "Permission denied" in proc.stderr, proc.stderr  # logrotate, as the Ray user, was refused the victim
    assert "    su %s %s\n" % (users["ray"], users["ray"]) in config  # its primary group (useradd --user-group)
    assert "su root" not in config


def test_the_attack_is_real_logrotate_as_root_truncates_the_root_file(scratch, users):
    """The same layout and config with the old ``su root root``: the root-only file goes to 0 bytes.

    Shows the attack works on this machine, so the test above passes because of the role, not by accident.
    """
    config, _proc = deployed(scratch, ray_cleanup_ray_user=users["ray"])
    old = re.sub(r"(?m)^    su \S+ \S+$", "    su root root", config)
    assert "    su root root\n" in old
    ray_layout(scratch, users["ray"])
    victim = plant(scratch, users["attacker"])

    logrotate(scratch, old)

    assert os.path.getsize(victim) == 0


def test_config_validation_is_not_broken_by_a_planted_link(scratch, users):
    """A re-run of the role on a node where the attacker already planted the link still installs the config."""
    ray_layout(scratch, users["ray"])
    victim = plant(scratch, users["attacker"])
    with open(victim, "ab") as handle:  # over maxsize: logrotate -d would want to rotate it
        handle.write(b"x" * (11 * 1024 * 1024))
    config, _proc = deployed(scratch, ray_cleanup_ray_user=users["ray"])
    assert "su %s" % users["ray"] in config


def test_the_cli_trusts_the_ray_user(scratch, users):
    _config, _proc = deployed(scratch, ray_cleanup_ray_user=users["ray"])
    with open(os.path.join(scratch, "node", "cli-config.json")) as handle:
        assert json.load(handle)["ray_users"] == [users["ray"]]


def test_ray_as_root_leaves_ray_logs_to_ray_with_one_clear_line(scratch):
    config, proc = deployed(scratch)
    assert "session_2" not in config and "su " not in config  # only the CLI's own logs
    assert "%s/*.log" % os.path.join(scratch, "node", "log") in config
    assert proc.stdout.count(LEFT_TO_RAY) == 1, proc.stdout
    assert "[WARNING]" not in proc.stdout + proc.stderr
    with open(os.path.join(scratch, "node", "cli-config.json")) as handle:
        assert json.load(handle)["ray_users"] == []


def test_ray_logs_false_is_quiet(scratch, users):
    config, proc = deployed(scratch, ray_cleanup_ray_user=users["ray"], ray_cleanup_logrotate_ray_logs=False)
    assert "session_2" not in config
    assert LEFT_TO_RAY not in proc.stdout


def test_logrotate_as_root_is_refused_naming_the_danger_and_the_fix(scratch):
    proc = deploy(scratch, ray_cleanup_logrotate_ray_logs=True)
    assert proc.returncode != 0
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "ray_cleanup_logrotate_ray_logs true with Ray running as root" in out, out
    assert "plant a symlink there and make logrotate, acting as root, truncate any file" in out
    assert "Set ray_cleanup_ray_user to the user running Ray, or ray_cleanup_logrotate_ray_logs: false" in out
    assert not os.path.exists(os.path.join(scratch, "node", "logrotate.d", "rayops-ray"))


def test_a_ray_user_that_does_not_exist_is_refused(scratch):
    proc = deploy(scratch, ray_cleanup_ray_user="rayops-nobody-here")
    assert proc.returncode != 0
    out = " ".join((proc.stdout + proc.stderr).split())
    assert 'ray_cleanup_ray_user "rayops-nobody-here" is no user on localhost' in out, out
    assert not os.path.exists(os.path.join(scratch, "node", "logrotate.d", "rayops-ray"))


def test_env_file_dir_that_is_a_symlink_fails_and_its_target_is_untouched(scratch):
    target = os.path.join(scratch, "root-only")
    os.mkdir(target)
    os.chmod(target, 0o700)
    link = os.path.join(scratch, "conf")
    os.symlink(target, link)

    proc = deploy(scratch, ray_cleanup_ray_env_files=[{"path": os.path.join(link, "ray.env"), "format": "env"}])

    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700
    assert os.listdir(target) == []
    assert proc.returncode != 0
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "ray_cleanup_ray_env_files entry %s: its directory %s is a symlink to %s" % (
        json.dumps(os.path.join(link, "ray.env")), json.dumps(link), json.dumps(target)) in out, out
    assert not os.path.exists(os.path.join(scratch, "node", "logrotate.d", "rayops-ray"))  # failed before writing


def test_env_file_dirs_only_missing_ones_are_created(scratch):
    existing = os.path.join(scratch, "existing")
    os.mkdir(existing)
    os.chmod(existing, 0o700)
    missing = os.path.join(scratch, "new", "deeper")
    files = [{"path": os.path.join(existing, "ray.env"), "format": "env"},
             {"path": os.path.join(missing, "ray.env"), "format": "env"}]

    deployed(scratch, ray_cleanup_ray_env_files=files)

    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o700  # an existing dir is never changed
    assert stat.S_IMODE(os.stat(missing).st_mode) == 0o755
    for entry in files:
        with open(entry["path"]) as handle:
            assert "RAY_ROTATION_MAX_BYTES=1048576" in handle.read()
