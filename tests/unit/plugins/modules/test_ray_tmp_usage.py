# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_tmp_usage driven through main(), as Ansible runs it."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _targets
from ansible_collections.rayops.disk.plugins.modules import ray_tmp_usage
from ansible_collections.rayops.disk.tests.unit.conftest import du_bytes, tree_digest, write
from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import fail_module

SESSION = "session_2026-11-20_10-00-00_000001_1111"


@pytest.fixture
def tree(tmp_path):
    tmp = tmp_path / "tmp"
    write(str(tmp / "ray" / SESSION / "logs" / "old" / "w.out"), 40960)
    write(str(tmp / "ray" / SESSION / "ray_spilled_objects_n1" / "o"), 81920)
    write(str(tmp / "pip-abc" / "x"), 4096)
    return tmp


def args_for(tree, **extra):
    args = {"tmp_dir": str(tree), "ray_temp_dir": str(tree / "ray"), "uv_cache_dir": str(tree / "no-uv"),
            "scan_workers": 1, "containers": False}  # auto would look for this machine's containers
    args.update(extra)
    return args


def comparable(result):
    """The result without what moves between two runs (ages, the disk, deleted files other processes hold)."""
    result = dict(result)
    result.pop("deleted_open")
    result["sessions"] = [{k: v for k, v in s.items() if k != "age_hours"} for s in result["sessions"]]
    result.pop("filesystem")
    result.pop("filesystems")
    result.pop("summary")
    return result


def test_reports_the_tree_and_changes_nothing(run_module, tree):
    before = tree_digest(str(tree))
    result = run_module(ray_tmp_usage.main, args_for(tree))
    assert result["changed"] is False
    assert result["tmp_bytes"] == du_bytes(str(tree))
    assert result["categories"]["spilled_objects"]["bytes"] == du_bytes(str(tree / "ray" / SESSION / "ray_spilled_objects_n1"))
    assert result["categories"]["tmp_patterns"]["by_pattern"]["pip-*"]["files"] == 1
    assert [s["name"] for s in result["sessions"]] == [SESSION]
    assert result["level"] in ("ok", "info", "warning", "critical")
    assert result["filesystem"]["path"] == str(tree)
    assert result["containers"] == [] and result["containers_error"] is None
    assert tree_digest(str(tree)) == before


def test_no_result_key_is_one_ansible_reserves(run_module, tree, bind_mount):
    bind_mount(None, str(tree / "mnt"), fstype="tmpfs")  # something not measured, listed in the result
    result = run_module(ray_tmp_usage.main, args_for(tree))
    assert result["not_measured"] == [{"path": str(tree / "mnt"), "reason": "other filesystem"}]
    assert not {"skipped", "failed", "msg", "rc", "results", "unreachable", "ansible_facts"} & set(result)


def test_check_mode_reports_the_same(run_module, tree):
    real = run_module(ray_tmp_usage.main, args_for(tree))
    check = run_module(ray_tmp_usage.main, args_for(tree), check_mode=True)
    assert comparable(check) == comparable(real)


def test_thresholds_decide_the_level(run_module, tree):
    tiny = {"info": 0.001, "warning": 0.002, "critical": 0.003}
    result = run_module(ray_tmp_usage.main, args_for(tree, thresholds=tiny))
    assert result["level"] == "critical"
    used = result["filesystem"]["used_percent"]
    partial = run_module(ray_tmp_usage.main, args_for(tree, thresholds={"info": used / 2}))  # others stay 90/95
    assert partial["level"] == ("info" if used < 90 else "warning" if used < 95 else "critical")


@pytest.mark.parametrize("extra, message", [
    ({"thresholds": {"warning": 150}}, "thresholds.warning 150.0 is outside 0-100"),
    ({"thresholds": {"info": 95, "warning": 90}}, "thresholds info 95.0, warning 90.0, critical 95.0 must increase"),
    ({"patterns": ["../../etc"]}, "pattern '../../etc' is not a plain file name glob"),
    ({"patterns": ["*"]}, "pattern '*' matches every name"),
    ({"tmp_dir": "/"}, "tmp_dir '/' is the root of the filesystem"),
    ({"stale_after_hours": -1}, "max_age_hours -1.0 is negative"),  # the alias of earlier releases
])
def test_bad_input_fails_naming_the_value(run_module, tree, extra, message):
    result = fail_module(ray_tmp_usage.main, args_for(tree, **extra))
    assert message in result["msg"]


def test_missing_or_wrong_tmp_dir(run_module, tree):
    missing = str(tree / "nope")
    assert "tmp_dir %r does not exist" % missing in fail_module(ray_tmp_usage.main, args_for(tree, tmp_dir=missing))["msg"]
    afile = str(tree / "pip-abc" / "x")
    assert "tmp_dir %r is not a directory" % afile in fail_module(ray_tmp_usage.main, args_for(tree, tmp_dir=afile))["msg"]


def test_missing_psutil_gives_missing_required_lib(run_module, tree, monkeypatch):
    monkeypatch.setattr(ray_tmp_usage, "psutil", None)
    result = fail_module(ray_tmp_usage.main, args_for(tree))
    assert "Failed to import the required Python library (psutil)" in result["msg"]


def test_missing_docker_sdk_only_matters_for_containers(run_module, tree, monkeypatch, tmp_path):
    monkeypatch.setattr(ray_tmp_usage, "docker", None)
    assert run_module(ray_tmp_usage.main, args_for(tree))["containers"] == []
    assert run_module(ray_tmp_usage.main, args_for(tree, containers="auto"))["containers"] == []  # no Docker here
    socket_file = tmp_path / "docker.sock"
    socket_file.write_text("")
    monkeypatch.setattr(_targets, "DOCKER_SOCKET", str(socket_file))  # a node with Docker
    for containers in (True, "auto"):
        result = fail_module(ray_tmp_usage.main, args_for(tree, containers=containers))
        assert "Failed to import the required Python library (docker)" in result["msg"]


def test_unreachable_docker_keeps_the_host_report(run_module, tree, tmp_path):
    socket_path = str(tmp_path / "no-docker.sock")
    result = run_module(ray_tmp_usage.main, args_for(tree, containers=True, docker_host="unix://" + socket_path))
    assert result["tmp_bytes"] == du_bytes(str(tree))
    assert result["containers"] == []
    assert result["containers_error"].startswith("cannot reach the Docker daemon at unix://%s" % socket_path)
    assert {"path": "unix://" + socket_path, "error": result["containers_error"]} in result["errors"]
    assert "set containers: false" in result["containers_error"]


def test_symlink_tmp_dir_is_refused(run_module, tree, tmp_path):
    link = str(tmp_path / "tmp-link")
    os.symlink(str(tree), link)
    result = fail_module(ray_tmp_usage.main, args_for(tree, tmp_dir=link))
    assert "tmp_dir %r is a symlink to %r; give the real directory instead" % (link, str(tree)) in result["msg"]


def test_hostile_tree_through_main(run_module, tree, tmp_path, bind_mount):
    """Symlinks out of the tree, hard links, non-UTF-8 names and a mount: du's figure, JSON-safe output."""
    outside = tmp_path / "outside"
    write(str(outside / "big"), 1 << 20)
    os.symlink(str(outside), str(tree / "tmp-link-out"))
    os.symlink(str(outside / "big"), str(tree / "ray" / SESSION / "logs" / "big-link"))
    first = write(str(tree / "ray_tmp_1" / "wheel"), 65536)
    for index in range(3):
        os.link(first, str(tree / "ray_tmp_1" / ("copy%d" % index)))
    odd = os.path.join(os.fsencode(str(tree)), b"pip-\xff\xfe")
    os.makedirs(os.path.join(odd, b"sub"))
    with open(os.path.join(odd, b"sub", b"\xc3\x28.whl"), "wb") as handle:
        handle.write(b"w" * 8192)
    bind_mount(None, os.fsdecode(os.path.join(odd, b"mnt")), fstype="tmpfs")
    result = run_module(ray_tmp_usage.main, args_for(tree))
    assert result["tmp_bytes"] == du_bytes(str(tree), "--exclude=mnt")
    assert result["categories"]["tmp_patterns"]["by_pattern"]["pip-*"]["files"] == 2  # pip-abc/x and the odd wheel
    assert result["categories"]["tmp_patterns"]["by_pattern"]["ray_tmp_*"]["files"] == 1  # four links, one inode
    assert result["not_measured"] == [{"path": str(tree) + "/pip-\\xff\\xfe/mnt", "reason": "other filesystem"}]
    assert "\\\\xff" in json.dumps(result)  # encodable as Ansible will encode it
