# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_node_info driven through main(): paths by lstat (a link reported, never followed), dpkg's packages, PID 1,
a cron daemon trusted by who runs it and what it executes (not its name), Ray's version asked of real Pythons."""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _node_info
from ansible_collections.rayops.disk.plugins.modules import ray_node_info
from ansible_collections.rayops.disk.tests.system.conftest import ray_bin


def test_paths_are_looked_at_without_following_a_link(run_module, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o750)
    os.chmod(str(real), 0o750)
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "file").write_text("x")
    paths = [str(real), str(tmp_path / "link"), str(tmp_path / "missing"), str(tmp_path / "file" / "below")]
    result = run_module(ray_node_info.main, {"paths": paths}, check_mode=True)
    assert result["changed"] is False
    assert result["paths"] == {
        str(real): {"exists": True, "isdir": True, "islnk": False, "issock": False, "uid": 0, "gid": 0, "mode": "0750"},
        str(tmp_path / "link"): {"exists": True, "isdir": False, "islnk": True, "issock": False, "uid": 0, "gid": 0,
                                 "mode": "0777", "lnk_source": str(real)},
        str(tmp_path / "missing"): {"exists": False},
        str(tmp_path / "file" / "below"): {"exists": False},  # a file on the way: nothing can be there
    }
    assert "ray_version" not in result  # not asked


def test_packages_are_what_dpkg_says(run_module):
    result = run_module(ray_node_info.main, {"packages": ["dpkg", "rayops-no-such-package"]})
    assert result["packages"] == {"dpkg": True, "rayops-no-such-package": False}
    with open("/proc/1/comm") as handle:
        assert result["pid1"] == handle.read().strip()


def test_a_cron_daemon_is_a_root_process_running_the_cron_binary_not_a_name(tmp_path):
    """The trust rule on a /proc-shaped tree: what the kernel gives (the owner of /proc/<pid>, its exe link)."""
    proc = tmp_path / "proc"

    def process(pid, uid, exe):
        entry = proc / str(pid)
        entry.mkdir(parents=True)
        (entry / "exe").symlink_to(exe)
        os.chown(str(entry), uid, uid)

    process(100, 1000, "/usr/sbin/cron")  # a local user's own cron: it cannot read /etc/cron.d as root
    process(200, 0, "/home/mallory/cron")  # root runs something called cron, elsewhere
    (proc / "self").mkdir()
    assert not _node_info.cron_running(str(proc))
    process(300, 0, "/usr/sbin/cron")
    assert _node_info.cron_running(str(proc))


def test_rays_version_is_asked_of_the_python_it_is_installed_in(run_module):
    ray_python = os.path.join(ray_bin("2.40.0"), "python")
    asked = run_module(ray_node_info.main, {"ray_python": ray_python, "ray_user": "root"}, check_mode=True)
    assert asked["ray_version"] == {"version": "2.40.0", "error": None}
    # Run as the user given, never as root: this venv's base Python is root's own, out of nobody's reach.
    denied = run_module(ray_node_info.main, {"ray_python": ray_python, "ray_user": "nobody"})
    assert denied["ray_version"] == {"version": None, "error": "runuser: failed to execute %s: Permission denied"
                                     % ray_python}
    # A Python without Ray: the reason, in its own last line.
    without = run_module(ray_node_info.main, {"ray_python": "/usr/bin/python3", "ray_user": "nobody"})
    assert without["ray_version"]["version"] is None
    assert without["ray_version"]["error"].startswith("importlib.metadata.PackageNotFoundError"), without


def test_the_facts_the_role_needs_come_with_the_look_when_asked(run_module, tmp_path):
    canary = tmp_path / "run-systemd-system"
    plain = run_module(ray_node_info.main, {"systemd_canary": str(canary)})
    assert "ansible_facts" not in plain  # not asked: a play that gathered keeps its own
    asked = run_module(ray_node_info.main, {"gather_facts": True, "systemd_canary": str(canary)})
    assert asked["ansible_facts"] == {"os_family": "Debian", "service_mgr": asked["pid1"],
                                      "python": {"executable": sys.executable}}
    canary.mkdir()  # systemd runs the node (sd_booted: its canary is a directory)
    booted = run_module(ray_node_info.main, {"gather_facts": True, "systemd_canary": str(canary)})
    assert booted["ansible_facts"]["service_mgr"] == "systemd"


@pytest.mark.parametrize("os_release, family", [
    ('ID=ubuntu\nID_LIKE=debian\n', "Debian"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "RedHat"),
    ('ID=opensuse-leap\nID_LIKE="suse opensuse"\n', "Suse"),
    ('ID=nixos\n', "nixos"),
    ('', "unknown"),
])
def test_the_os_family_is_read_as_ansible_names_it(tmp_path, os_release, family):
    path = tmp_path / "os-release"
    path.write_text(os_release)
    assert _node_info.os_family(str(path)) == family
