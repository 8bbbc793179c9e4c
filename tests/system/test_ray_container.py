# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_worker_cleanup through real Ansible on a real Ray worker container, as the users run them.

Ray 2.53 runs inside a container without network (only loopback) with its
default temp dir ``/tmp/ray``. A stale session is made the real way: Ray is
started, its processes are killed by pid (a crash, and only this container's) and Ray
is started again. The module runs on this host with ``host: false``: only the
container is a target.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import tempfile

from ansible_collections.rayops.disk.tests.system.conftest import (
    BURN_DRIVER,
    IDLE_DRIVER,
    ansible_module,
)

TASK_DRIVER = r"""
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(ray.get(ray.remote(lambda: 6 * 7).remote()))
"""


def cleanup(container, lock_dir, check=False):
    """Run ray_worker_cleanup on ``container`` only; its result and the container's entry."""
    args = {"host": False, "containers": True, "container_name_filter": container.name, "min_tmp_size": "0",
            "max_age_hours": 0, "lock_file": lock_dir + "/cleanup.lock"}
    result = ansible_module("rayops.disk.ray_worker_cleanup", args, check=check)
    assert result.get("failed") is not True, result
    assert [t["name"] for t in result["targets"]] == [container.name], result["targets"]
    return result, result["targets"][0]


def test_idle_ray_container_loses_its_stale_session_a_busy_one_nothing(ray_container):
    container = ray_container
    assert "ray-worker" in container.name  # the modules' default container_name_filter finds it
    container.ray_start()
    assert container.python(TASK_DRIVER, "auto").strip() == "42"  # the first session has worker logs too
    stale = container.live_session()
    container.kill(container.ray_pids())  # Ray crashes: its session stays behind
    container.ray_start()
    live = container.live_session()
    assert live != stale and container.sessions() == sorted([stale, live])
    # idle: a driver stays connected after its tasks, with idle workers and an idle actor (which may have taken
    # one of the two workers)
    driver = subprocess.Popen(["docker", "exec", container.name, "python", "-c", IDLE_DRIVER, "auto", "2"],
                              stdout=subprocess.PIPE, text=True)
    lock_dir = tempfile.mkdtemp(prefix="rayops-lock-")
    try:
        assert driver.stdout.readline().strip() == "IDLE"
        container.wait_for_titles("ray::IDLE")
        container.wait_for_titles("ray::Holder")

        # (c) the dry run: the stale session would go, nothing changes
        before_ray = container.tree("/tmp/ray")
        check, checked = cleanup(container, lock_dir, check=True)
        assert checked["status"] == "cleaned", checked
        assert checked["activity"]["idle_workers"] >= 1 and checked["activity"]["idle_actors"] == ["ray::Holder"]
        assert stale in checked["removed_paths"], checked  # with everything in it, and nothing else
        assert all(path == stale or path.startswith(stale + "/") for path in checked["removed_paths"]), checked
        assert check["changed"] is True and checked["freed_bytes"] > 0
        assert container.sessions() == sorted([stale, live])
        stale_tree = {path: entry for path, entry in before_ray.items() if path.startswith(stale + "/")}
        assert container.tree(stale) == stale_tree

        # (b) a task runs: the container is busy, nothing is removed
        container.exec_detached("python", "-c", BURN_DRIVER, "auto")
        container.wait_for_titles("ray::burn")
        busy_result, busy = cleanup(container, lock_dir)
        assert busy["status"] == "skipped_active", busy
        assert "ray::burn" in busy["reason"] and busy["removed"] == 0 and busy_result["changed"] is False
        assert container.sessions() == sorted([stale, live]) and container.tree(stale) == stale_tree
        burner = [pid for pid, args in container.processes().items() if "def burn" in args]
        assert len(burner) == 1
        container.kill(burner)  # the job ends: Ray stops its task
        container.wait_for_titles("ray::burn", count=0)

        # (a) idle again: the stale session goes, the live one and Ray stay
        container.wait_for_titles("ray::IDLE")
        before = container.tree(live)
        result, cleaned = cleanup(container, lock_dir)
        after = container.tree(live)
        assert cleaned["status"] == "cleaned", cleaned
        assert not cleaned["activity"]["busy"], cleaned["activity"]
        assert cleaned["removed_paths"] == checked["removed_paths"]  # dry run == real
        assert (cleaned["removed"], cleaned["freed_bytes"]) == (checked["removed"], checked["freed_bytes"])
        assert result["changed"] is True
        assert not container.exists(stale) and container.sessions() == [live]
        assert_untouched(before, after)
        assert container.live_session() == live
        assert container.python(TASK_DRIVER, "auto").strip() == "42"  # Ray still works
        again, _entry = cleanup(container, lock_dir)
        assert again["changed"] is False
    finally:
        driver.kill()
        driver.wait()
        shutil.rmtree(lock_dir)


def assert_untouched(before, after):
    """Every path of the live session is still there, as it was: logs only grew, other files are unchanged."""
    missing = sorted(set(before) - set(after))
    assert not missing, "removed from the live session: %s" % missing[:20]
    for path, (kind, size, digest) in before.items():
        now_kind, now_size, now_digest = after[path]
        assert now_kind == kind, path
        if "/logs/" in path and stat.S_ISREG(kind):
            assert now_size >= size, path  # Ray still appends to its logs
        else:
            assert (now_size, now_digest) == (size, digest) or stat.S_ISDIR(kind), path
