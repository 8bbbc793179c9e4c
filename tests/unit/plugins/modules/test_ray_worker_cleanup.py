# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_worker_cleanup driven through main(): dry run, real run, again; gates, lock, audit, bad input.

These run on the host target with no Ray running on it (real Ray and busy
workers are in tests/system, which run one at a time).
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shutil
import socket
import stat
import tempfile
import time

import pytest

from ansible_collections.rayops.disk.plugins.module_utils._options import CleanupOptions
from ansible_collections.rayops.disk.plugins.modules import ray_worker_cleanup
from ansible_collections.rayops.disk.tests.unit.conftest import aged, tree_digest, write
from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import fail_module

STALE = "session_2026-11-20_10-00-00_000001_11"
LIVE = "session_2026-11-22_10-00-00_000002_22"


@pytest.fixture
def node():
    """A tmp dir with litter, a stale session and a live one (a socket bound in it by this test).

    Short and under /tmp: the socket path must stay under 108 bytes, as Ray's.
    """
    base = pathlib.Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    tmp = base / "tmp"
    write(str(tmp / "ray_tmp_1" / "pkg.zip"), 65536)
    write(str(tmp / "pip-unpack-2" / "wheel"), 16384)
    write(str(tmp / "tmpq1" / "x"), 4096)
    write(str(tmp / "unrelated" / "data"), 4096)
    write(str(tmp / "ray" / STALE / "ray_spilled_objects_n" / "obj"), 81920)
    write(str(tmp / "ray" / STALE / "logs" / "raylet.out"), 4096)
    write(str(tmp / "ray" / LIVE / "logs" / "old" / "worker-old.out"), 8192)
    write(str(tmp / "ray" / LIVE / "logs" / "raylet.out"), 4096)
    os.makedirs(tmp / "ray" / LIVE / "sockets")
    aged(str(tmp))
    write(str(tmp / "ray" / LIVE / "logs" / "old" / "worker-new.out"), 4096)  # fresh
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(tmp / "ray" / LIVE / "sockets" / "raylet"))
    try:
        yield tmp
    finally:
        live.close()
        shutil.rmtree(base)


def args_for(tmp, **extra):
    args = {"tmp_dir": str(tmp), "ray_temp_dir": str(tmp / "ray"), "min_tmp_size": "0", "max_age_hours": 1,
            "age_by": ["mtime"], "lock_file": str(tmp.parent / "lock"), "sample_seconds": 0.2,
            "containers": False}  # auto would look for this machine's containers
    args.update(extra)
    return args


def test_dry_run_then_real_then_again(run_module, node):
    before = tree_digest(str(node))
    check = run_module(ray_worker_cleanup.main, dict(args_for(node), _ansible_diff=True), check_mode=True)
    assert tree_digest(str(node)) == before  # check mode changed nothing
    real = run_module(ray_worker_cleanup.main, dict(args_for(node), _ansible_diff=True))
    again = run_module(ray_worker_cleanup.main, args_for(node))

    host = real["targets"][0]
    assert check["changed"] is real["changed"] is True and again["changed"] is False
    assert check["targets"][0]["removed_paths"] == host["removed_paths"]
    assert check["freed_bytes"] == real["freed_bytes"] > 65536 + 81920
    assert check["diff"] == real["diff"] and "host: %s/ray_tmp_1/pkg.zip\n" % node in real["diff"]["before"]
    assert host["status"] == "cleaned" and host["kind"] == "host" and host["error_count"] == 0
    assert host["tmp_bytes_after"] == host["tmp_bytes_before"] - host["freed_bytes"]
    assert sorted(os.listdir(node)) == ["ray", "unrelated"]
    assert sorted(os.listdir(node / "ray")) == [LIVE]  # the stale session went, the live one stayed
    assert os.listdir(node / "ray" / LIVE / "logs" / "old") == ["worker-new.out"]  # the old log went
    assert (node / "ray" / LIVE / "logs" / "raylet.out").exists()
    assert host["kept"] == [{"path": "%s/ray/%s/logs/old/worker-new.out" % (node, LIVE), "reason": "fresh"}]
    assert again["targets"][0]["removed"] == 0 and again["freed_bytes"] == 0


def test_below_min_tmp_size_nothing_is_done(run_module, node):
    before = tree_digest(str(node))
    result = run_module(ray_worker_cleanup.main, args_for(node, min_tmp_size="1TB"))
    host = result["targets"][0]
    assert result["changed"] is False and host["status"] == "skipped_below_threshold"
    assert host["reason"].endswith("in %s, below min_tmp_size 1.0 TiB" % node)
    assert tree_digest(str(node)) == before


def test_a_second_run_waits_for_the_lock_then_skips(run_module, node):
    before = tree_digest(str(node))
    with open(str(node.parent / "lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a cleanup (cron) is running
        started = time.monotonic()
        result = run_module(ray_worker_cleanup.main, args_for(node, lock_timeout=0.5))
        waited = time.monotonic() - started
    assert result["status"] == "skipped" and result["changed"] is False and result["targets"] == []
    assert result["reason"] == "another cleanup holds %s (waited 0.5s)" % (node.parent / "lock")
    assert waited >= 0.5
    assert tree_digest(str(node)) == before


def test_a_lock_file_planted_by_another_user_is_refused(run_module, node):
    planted = node.parent / "lock"
    planted.write_text("")
    os.chown(str(planted), 65534, 65534)  # made by a user, to hold its flock forever
    before = tree_digest(str(node))
    result = run_module(ray_worker_cleanup.main, args_for(node, lock_timeout=0))
    assert result["status"] == "skipped" and result["changed"] is False and result["targets"] == []
    assert result["reason"] == (
        "lock file %s is not a regular file of this user (uid 0; its owner is uid 65534): someone else may have "
        "made it to hold the lock forever; remove it, and keep the lock in a directory only uid 0 can write"
        % planted)
    assert tree_digest(str(node)) == before
    planted.unlink()
    assert run_module(ray_worker_cleanup.main, args_for(node))["status"] == "done"


def test_the_default_lock_is_in_a_root_only_directory_made_0755(run_module, node, monkeypatch):
    spec = ray_worker_cleanup.DOCUMENTATION.split("  lock_file:")[1]
    assert "default: /run/rayops/ray-cleanup.lock" in spec.split("  lock_timeout:")[0]
    assert CleanupOptions().lock_file == "/run/rayops/ray-cleanup.lock"
    lock = node.parent / "run" / "rayops" / "ray-cleanup.lock"
    old_umask = os.umask(0o022)
    try:
        assert run_module(ray_worker_cleanup.main, args_for(node, lock_file=str(lock)))["status"] == "done"
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(str(lock.parent)).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(str(lock)).st_mode) == 0o600 and os.stat(str(lock)).st_uid == os.geteuid()


def test_a_lock_that_cannot_be_made_fails_with_a_message(run_module, node):
    write(str(node.parent / "a-file"), 1)
    result = fail_module(ray_worker_cleanup.main, args_for(node, lock_file=str(node.parent / "a-file" / "lock")))
    assert result["msg"].startswith("cleanup failed: [Errno 17] File exists: ")
    assert result["msg"].endswith("; run it as root, or give a lock_file (and audit_log) this user can create")


def test_audit_log_has_a_line_per_removed_entry_with_what_went_inside(run_module, node):
    audit = node.parent / "audit.jsonl"
    result = run_module(ray_worker_cleanup.main, args_for(node, audit_log=str(audit)))
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sum(line["entries"] for line in lines) == result["targets"][0]["removed"]
    assert {line["target"] for line in lines} == {"host"} and {line["kind"] for line in lines} == {"host"}
    assert sum(line["bytes"] for line in lines) == result["freed_bytes"]
    by_path = {line["path"]: line for line in lines}
    assert by_path["%s/ray/%s" % (node, STALE)]["reason"] == "stale Ray session"
    assert by_path["%s/ray/%s" % (node, STALE)]["entries"] > 1  # the session dir and what it held
    assert by_path["%s/ray_tmp_1" % node]["reason"] == "matches ray_tmp_*, pip-*, tmp*"
    assert all(line["host_path"] == line["path"] for line in lines)  # on the host, the same path
    assert set(lines[0]) == {"time", "target", "kind", "path", "host_path", "bytes", "entries", "reason"}


def test_excluded_and_fresh_entries_stay(run_module, node):
    result = run_module(ray_worker_cleanup.main, args_for(node, exclude=["pip-*"], max_age_hours=5))
    host = result["targets"][0]
    assert result["changed"] is False  # everything is 3 hours old: younger than 5
    assert {"path": "%s/pip-unpack-2" % node, "reason": "excluded"} in host["kept"]
    assert host["kept_by_reason"]["fresh"] >= 3


@pytest.mark.parametrize("extra, message", [
    ({"tmp_dir": "/"}, "tmp_dir '/' is the root of the filesystem"),
    ({"patterns": ["*"]}, "pattern '*' matches every name"),
    ({"patterns": ["a/../b*"]}, "pattern 'a/../b*' is not a plain file name glob"),
    ({"patterns": [""]}, "pattern '' is empty"),
    ({"min_tmp_size": "lots"}, "min_tmp_size 'lots' is not a size"),
    ({"max_age_hours": -1}, "max_age_hours -1.0 is negative"),
    ({"exclude": [" "]}, "exclude [' '] has an empty glob"),
    ({"lock_timeout": -3}, "lock_timeout -3.0 is negative"),
    ({"cpu_idle_percent": -1}, "cpu_idle_percent -1.0 is negative"),
    ({"archive_dest": "logs/archive"}, "archive_dest 'logs/archive' is not an absolute directory, s3://BUCKET/PREFIX"),
    ({"archive_dest": "/nonexistent-archive-dir"}, "archive_dest '/nonexistent-archive-dir' is not a directory on "
                                                   "this node; create it"),
    ({"archive_dest": "/tmp", "archive_cluster": "a/b"}, "archive_cluster 'a/b' must be a plain name"),
    ({"archive_dest": "/tmp", "archive_keep_days": 0}, "archive_keep_days 0.0 must be more than 0 days"),
    ({"archive_dest": "/tmp", "archive_bandwidth_limit": "fast"}, "archive_bandwidth_limit 'fast' is not a size"),
])
def test_bad_input_fails_before_anything_is_touched(run_module, node, extra, message):
    before = tree_digest(str(node))
    result = fail_module(ray_worker_cleanup.main, args_for(node, **extra))
    assert message in result["msg"]
    assert tree_digest(str(node)) == before


def test_unreachable_docker_still_cleans_the_host(run_module, node):
    socket_path = str(node.parent / "no-docker.sock")
    result = run_module(ray_worker_cleanup.main, args_for(node, containers=True, docker_host="unix://" + socket_path))
    assert result["containers_error"].startswith("cannot reach the Docker daemon at unix://%s" % socket_path)
    assert [t["name"] for t in result["targets"]] == ["host"]
    assert result["targets"][0]["status"] == "cleaned" and result["changed"] is True


def test_a_failed_docker_prune_is_a_warning_and_the_cleanup_stands(run_module, node, monkeypatch):
    warned = []
    monkeypatch.setattr(ray_worker_cleanup.AnsibleModule, "warn", lambda _module, text: warned.append(text))
    socket_path = str(node.parent / "no-docker.sock")
    result = run_module(ray_worker_cleanup.main, args_for(node, docker_prune=True, docker_host="unix://" + socket_path))
    assert result.get("failed") is not True
    assert result["docker_prune"]["error"].startswith("docker prune failed: cannot reach the Docker daemon at unix://"
                                                      + socket_path)
    assert warned == [result["docker_prune"]["error"]]
    assert result["targets"][0]["status"] == "cleaned" and result["changed"] is True


def test_missing_docker_sdk_only_matters_for_containers_or_prune(run_module, node, monkeypatch):
    monkeypatch.setattr(ray_worker_cleanup, "docker", None)
    for extra in ({"containers": True}, {"docker_prune": True}):
        result = fail_module(ray_worker_cleanup.main, args_for(node, **extra))
        assert "Failed to import the required Python library (docker)" in result["msg"]


def test_missing_boto3_only_matters_for_an_s3_destination(run_module, node, monkeypatch):
    monkeypatch.setattr(ray_worker_cleanup, "boto3", None)
    before = tree_digest(str(node))
    result = fail_module(ray_worker_cleanup.main, args_for(node, archive_dest="s3://ray-logs/archive"))
    assert "Failed to import the required Python library (boto3)" in result["msg"]
    assert tree_digest(str(node)) == before
    archive = node.parent / "archive"
    archive.mkdir()
    result = run_module(ray_worker_cleanup.main, args_for(node, archive_dest=str(archive)))
    assert result["targets"][0]["status"] == "cleaned"


def test_a_logs_symlink_planted_in_a_session_leads_nowhere(run_module, node):
    """Another user plants ``logs -> /somewhere`` in a live session: old logs are cleaned only in real dirs."""
    outside = node.parent / "precious"
    write(str(outside / "old" / "ledger.db"), 8192)
    aged(str(outside))
    before = tree_digest(str(outside))
    planted = node / "ray" / LIVE / "logs"
    os.rename(planted, node.parent / "real-logs")
    os.symlink(str(outside), str(planted))
    result = run_module(ray_worker_cleanup.main, args_for(node))
    assert tree_digest(str(outside)) == before
    host = result["targets"][0]
    assert [e["error"] for e in host["errors"] if e["path"] == str(planted)] == [
        "not a directory of its own (a symlink?): Not a directory"]
    assert not (node / "ray" / STALE).exists()  # the rest of the run went on
