# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ray layout discovery and the usage report on generated Ray-like trees.

Ray's own processes are stood in for by real processes whose name (``comm``)
and command line look like raylet's and gcs_server's; real Ray runs in
tests/system.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import tempfile
import time

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _ray_layout as layout_mod
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._node import Cleanup, collect_usage
from ansible_collections.rayops.disk.plugins.module_utils._options import CleanupOptions, UsageOptions, level_for
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes
from ansible_collections.rayops.disk.plugins.module_utils._usage import TargetReport
from ansible_collections.rayops.disk.tests.unit.conftest import SandboxNode, du_bytes, write

OLD = "session_2026-11-20_10-00-00_000001_1111"
NEW = "session_2026-11-22_09-30-00_000002_2222"
OTHER = "session_2026-11-21_08-00-00_000003_3333"
KIB = 4096


@pytest.fixture
def ray_tree():
    """A tmp dir with a Ray root, three sessions and the usual litter; sizes in whole blocks.

    Short and under /tmp: unix socket paths must stay under 108 bytes, as for Ray.
    """
    base = pathlib.Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield from _ray_tree(base / "tmp")
    shutil.rmtree(base)


@pytest.fixture
def tmp_path(ray_tree):
    """Scratch space beside the ray tree."""
    return ray_tree.parent


def _ray_tree(tmp):
    ray = tmp / "ray"
    for session in (OLD, NEW, OTHER):
        base = ray / session
        write(str(base / "logs" / "raylet.out"), 3 * KIB)
        write(str(base / "logs" / "old" / "worker-1.out"), 5 * KIB)
        write(str(base / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc" / "x.py"), 2 * KIB)
        write(str(base / "ray_spilled_objects_node1" / "obj"), 7 * KIB)
        write(str(base / "ports_by_node.json"), 1 * KIB)
        os.makedirs(base / "sockets")
    os.symlink(str(ray / NEW), str(ray / "session_latest"))
    write(str(ray / "ray_current_cluster"), 1 * KIB)
    write(str(tmp / "ray_tmp_1234" / "pkg.zip"), 11 * KIB)
    write(str(tmp / "pip-build-xyz" / "setup.py"), 13 * KIB)
    write(str(tmp / "tmpa1b2c3"), 17 * KIB)
    write(str(tmp / "ray_spilled_objects_orphan" / "obj"), 19 * KIB)
    write(str(tmp / "unrelated.txt"), 23 * KIB)
    old = time.time() - 48 * 3600
    for dirpath, dirnames, filenames in os.walk(str(ray / OLD)):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (old, old))
    os.utime(str(ray / OLD), (old, old))
    yield tmp


def report_for(tmp, node, **options):
    """The report of the sandbox node for a tmp dir."""
    opts = UsageOptions(tmp_dir=str(tmp), uv_cache_dir=str(tmp.parent / "no-uv"), scan_workers=1, **options)
    opts.validate()
    return TargetReport(node.target, opts, psutil, environ={}).measure()


def test_categories_are_disjoint_and_add_up_to_du(ray_tree, node):
    node.spawn("raylet", "--session_dir=%s" % (ray_tree / "ray" / NEW),
               "--temp_dir=%s" % (ray_tree / "ray"), "--head")
    report = report_for(ray_tree, node)
    cats = report["categories"]
    assert sum(c["bytes"] for c in cats.values()) == du_bytes(str(ray_tree)) == report["tmp_bytes"]
    assert cats["spilled_objects"]["files"] == 4  # one per session and the orphan
    assert cats["logs"]["files"] == 3 and cats["logs_old"]["files"] == 3
    assert cats["runtime_resources"]["files"] == 3
    assert cats["live_session"]["files"] == 1 and cats["stale_sessions"]["files"] == 2
    assert cats["tmp_patterns"]["by_pattern"]["ray_tmp_*"]["files"] == 1
    assert cats["tmp_patterns"]["by_pattern"]["pip-*"]["files"] == 1
    assert cats["tmp_patterns"]["by_pattern"]["tmp*"]["files"] == 1
    assert cats["other"]["files"] == 3  # unrelated.txt, ray_current_cluster, the session_latest link
    assert cats["uv_cache"]["bytes"] == 0


def test_sessions_live_by_raylet_and_sizes(ray_tree, node):
    node.spawn("raylet", "--session_dir", str(ray_tree / "ray" / NEW),
               "--temp_dir=%s" % (ray_tree / "ray"))
    report = report_for(ray_tree, node)
    sessions = {s["name"]: s for s in report["sessions"]}
    assert list(sessions) == [OLD, OTHER, NEW]
    assert sessions[NEW]["live"] and sessions[NEW]["live_reason"] == "process:raylet" and sessions[NEW]["latest"]
    assert not sessions[OLD]["live"] and not sessions[OLD]["latest"]
    for name, session in sessions.items():
        assert session["bytes"] == du_bytes(str(ray_tree / "ray" / name))
        assert session["spilled_bytes"] == du_bytes(str(ray_tree / "ray" / name / "ray_spilled_objects_node1"))
        assert session["logs_old_bytes"] == du_bytes(str(ray_tree / "ray" / name / "logs" / "old"))
    assert sessions[OLD]["age_hours"] >= 47.9 and sessions[NEW]["age_hours"] < 1
    assert sessions[OLD]["started"] == "2026-11-20T10:00:00"
    assert report["node_role"] == "worker"
    assert report["ray_temp_dirs"] == [str(ray_tree / "ray")]


def test_head_role_and_root_from_gcs_server(ray_tree, node):
    node.spawn("gcs_server", "--log_dir=%s" % (ray_tree / "ray" / NEW / "logs"), "--session-name=%s" % NEW)
    report = report_for(ray_tree, node)
    assert report["node_role"] == "head"
    assert [s["name"] for s in report["sessions"] if s["live"]] == [NEW]


def test_live_by_bound_socket_and_by_open_file(ray_tree, node):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(ray_tree / "ray" / NEW / "sockets" / "raylet"))
    node.spawn("python-worker", hold=str(ray_tree / "ray" / OTHER / "logs" / "raylet.out"))
    try:
        report = report_for(ray_tree, node)
    finally:
        server.close()
    reasons = {s["name"]: s["live_reason"] for s in report["sessions"]}
    assert reasons == {OLD: None, NEW: "socket", OTHER: "open_file"}
    assert report["node_role"] == "none"


def test_files_held_open_outside_the_node_do_not_count(ray_tree, node):
    with open(str(ray_tree / "ray" / OTHER / "logs" / "raylet.out"), "rb"):  # held by this test, not in the node
        report = report_for(ray_tree, node)
    assert not any(s["live"] for s in report["sessions"])


def test_a_socket_file_left_by_a_dead_raylet_is_not_live(ray_tree, node):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(ray_tree / "ray" / NEW / "sockets" / "raylet"))
    server.close()  # the file stays, the socket is gone from /proc/net/unix
    report = report_for(ray_tree, node)
    assert not any(s["live"] for s in report["sessions"])


def node_report(tmp, sandbox, **options):
    """The full report (host only) of the sandbox node, with what cleanup would free."""
    return collect_usage(UsageOptions(tmp_dir=str(tmp), uv_cache_dir=str(tmp.parent / "no-uv"), scan_workers=1,
                                      containers=False, **options), psutil)


def test_suggestions_are_what_cleanup_would_free_by_its_own_rules(ray_tree, sandbox):
    sandbox.spawn("raylet", "--session_dir=%s" % (ray_tree / "ray" / NEW))
    report = node_report(ray_tree, sandbox, max_age_hours=24, min_tmp_size=0, age_by=("mtime",))  # ctime is now
    by_action = {s["action"]: s for s in report["suggestions"]}
    stale = by_action["remove_stale_sessions"]
    assert stale["paths"] == [str(ray_tree / "ray" / OLD)]  # OTHER is stale but fresh: kept
    assert stale["bytes"] == du_bytes(str(ray_tree / "ray" / OLD))
    assert set(stale["kept_by_reason"]) == {"fresh"}
    # The live session's logs/old and the tmp dir's litter are fresh: cleanup keeps them, and says so.
    assert by_action["clean_old_logs"]["bytes"] == 0
    assert set(by_action["clean_old_logs"]["kept_by_reason"]) == {"fresh"}
    patterns = by_action["clean_tmp_patterns"]
    assert patterns["bytes"] == 0 and patterns["kept_by_reason"]["fresh"] >= 3  # ray_tmp_1234, pip-build-xyz, tmpa1b2c3
    assert "cleanup would free 0 B" in patterns["message"]
    assert "kept %d: %d too new" % (patterns["kept"], patterns["kept"]) in patterns["message"]
    assert by_action["remove_orphaned_spill"]["bytes"] == du_bytes(str(ray_tree / "ray_spilled_objects_orphan"))
    assert by_action["remove_orphaned_spill"]["by_cleanup"] is False
    assert report["cleanup"]["freed_bytes"] == stale["bytes"]
    assert "cleanup would free %s" % format_bytes(stale["bytes"]) in report["summary"]


def test_freeable_is_what_a_dry_run_frees_and_a_real_run_then_frees(ray_tree, sandbox):
    sandbox.spawn("raylet", "--session_dir=%s" % (ray_tree / "ray" / NEW))
    old = time.time() - 48 * 3600
    os.utime(str(ray_tree / "pip-build-xyz" / "setup.py"), (old, old))
    rules = {"max_age_hours": 24, "min_tmp_size": 0, "exclude": ("tmpa1b2c3",), "age_by": ("mtime",)}
    report = node_report(ray_tree, sandbox, **rules)
    dry = Cleanup(CleanupOptions(tmp_dir=str(ray_tree), containers=False, lock_file=str(ray_tree.parent / "lock"),
                                 **rules), psutil, check_mode=True).run()
    assert report["cleanup"]["freed_bytes"] == dry["freed_bytes"] > 0
    assert report["cleanup"]["kept_by_reason"] == dry["targets"][0]["kept_by_reason"]
    assert report["cleanup"]["kept_by_reason"]["excluded"] == 1


def test_a_target_below_min_tmp_size_has_nothing_freeable(ray_tree, sandbox):
    report = node_report(ray_tree, sandbox, max_age_hours=0)
    assert report["cleanup"]["status"] == "skipped_below_threshold"
    assert report["cleanup"]["freed_bytes"] == 0
    assert not [s for s in report["suggestions"] if s["by_cleanup"]]
    assert "cleanup would skip it" in report["summary"] and "below min_tmp_size 5.0 GiB" in report["summary"]


def test_session_latest_pointing_outside_is_not_followed(ray_tree, node, tmp_path):
    outside = tmp_path / "elsewhere" / "session_2026-01-01_00-00-00_000000_1"
    write(str(outside / "big"), 1 << 20)
    os.unlink(ray_tree / "ray" / "session_latest")
    os.symlink(str(outside), str(ray_tree / "ray" / "session_latest"))
    report = report_for(ray_tree, node)
    assert not any(s["latest"] for s in report["sessions"])
    assert report["tmp_bytes"] < 1 << 20


def test_explicit_ray_temp_dir_outside_tmp_is_measured_too(ray_tree, node, tmp_path):
    elsewhere = tmp_path / "data" / "ray"
    write(str(elsewhere / OLD / "logs" / "x"), 8 * KIB)
    report = report_for(ray_tree, node, ray_temp_dir=str(elsewhere))
    assert [s["path"] for s in report["sessions"]] == [str(elsewhere / OLD)]
    assert report["scanned_bytes"] == report["tmp_bytes"] + du_bytes(str(elsewhere))


def test_uv_cache_is_its_own_category(ray_tree, sandbox, tmp_path):
    write(str(tmp_path / "uv" / "archive-v0" / "wheel"), 29 * KIB)
    report = collect_usage(UsageOptions(tmp_dir=str(ray_tree), uv_cache_dir=str(tmp_path / "uv"), scan_workers=1,
                                        containers=False), psutil)
    assert report["categories"]["uv_cache"]["bytes"] == du_bytes(str(tmp_path / "uv"))
    assert any(s["action"] == "prune_uv_cache" and not s["by_cleanup"] for s in report["suggestions"])


def test_default_temp_root_follows_ray_env():
    assert layout_mod.default_temp_root("/tmp", {"RAY_TMPDIR": "/scratch"}) == "/scratch/ray"
    assert layout_mod.default_temp_root("/tmp", {"TMPDIR": "/var/tmp/"}) == "/var/tmp/ray"
    assert layout_mod.default_temp_root("/tmp", {}) == "/tmp/ray"


def test_flag_values_in_both_forms():
    cmd = ("raylet", "--session_dir=/a/session_x", "--temp_dir", "/a", "--head")
    assert layout_mod.flag_value(cmd, "--session_dir") == "/a/session_x"
    assert layout_mod.flag_value(cmd, "--temp_dir") == "/a"
    assert layout_mod.flag_value(cmd, "--missing") is None


def test_ray_processes_outside_the_node_are_ignored(ray_tree, node, ray_programs):
    outside = SandboxNode(ray_programs)  # another node on the same machine runs a head raylet on this very tree
    try:
        outside.spawn("raylet", "--session_dir=%s" % (ray_tree / "ray" / NEW), "--head")
        report = report_for(ray_tree, node)
    finally:
        outside.stop()
    assert report["node_role"] == "none"
    assert not any(s["live"] for s in report["sessions"])


@pytest.mark.parametrize("used, level", [(10, "ok"), (80, "info"), (90.5, "warning"), (95, "critical"), (100, "critical")])
def test_levels(used, level):
    assert level_for(used, {"info": 80, "warning": 90, "critical": 95}) == level


@pytest.mark.parametrize("options, message", [
    ({"tmp_dir": "/"}, "tmp_dir '/' is the root of the filesystem"),
    ({"tmp_dir": "relative/tmp"}, "tmp_dir 'relative/tmp' is not an absolute path"),
    ({"patterns": ()}, "patterns is empty"),
    ({"patterns": ("ok_*", "../etc")}, "pattern '../etc' is not a plain file name glob"),
    ({"patterns": ("a/b*",)}, "pattern 'a/b*' is not a plain file name glob"),
    ({"patterns": ("*",)}, "pattern '*' matches every name"),
    ({"patterns": ("",)}, "pattern '' is empty"),
    ({"thresholds": {"info": 80, "warning": 90, "critical": 120}}, "thresholds.critical 120 is outside 0-100"),
    ({"thresholds": {"info": 90, "warning": 80, "critical": 95}}, "info 90, warning 80, critical 95 must increase"),
    ({"thresholds": {"info": -1, "warning": 80, "critical": 95}}, "thresholds.info -1 is outside 0-100"),
    ({"max_age_hours": -2}, "max_age_hours -2 is negative"),
    ({"container_name_filter": ""}, "container_name_filter '' would match every container or none"),
    ({"containers": "maybe"}, "containers 'maybe' is not true, false or auto"),
    ({"ray_temp_dir": "ray"}, "ray_temp_dir 'ray' is not an absolute path"),
    ({"scan_workers": 0}, "scan_workers 0 must be 1 or more"),
])
def test_bad_options_name_the_value(options, message):
    with pytest.raises(UsageError) as error:
        UsageOptions(**options).validate()
    assert message in str(error.value)


def test_bad_tmp_dirs(tmp_path):
    write(str(tmp_path / "file"), 1)
    os.symlink(str(tmp_path), str(tmp_path / "link"))
    for path, message in ((tmp_path / "missing", "does not exist"), (tmp_path / "file", "is not a directory"),
                          (tmp_path / "link", "is a symlink to %r; give the real directory" % str(tmp_path))):
        with pytest.raises(UsageError) as error:
            UsageOptions(tmp_dir=str(path)).validate()
        assert "tmp_dir %r %s" % (str(path), message) in str(error.value)


def test_a_prefixed_target_reports_paths_inside_it(ray_tree, node, tmp_path):
    """A container is a prefix like /proc/<pid>/root: the report speaks of the paths inside it."""
    target = layout_mod.Target(name="fake", prefix=str(tmp_path), mnt_ns=node.target.mnt_ns, init_pid=node.init.pid)
    report = TargetReport(target, UsageOptions(tmp_dir="/tmp", scan_workers=1), psutil, environ={}).measure()
    assert report["ray_temp_dirs"] == ["/tmp/ray"]
    assert {s["path"] for s in report["sessions"]} == {"/tmp/ray/" + n for n in (OLD, NEW, OTHER)}
    assert [s["name"] for s in report["sessions"] if s["latest"]] == []  # the link names a host path
    assert report["tmp_bytes"] == du_bytes(str(ray_tree))
