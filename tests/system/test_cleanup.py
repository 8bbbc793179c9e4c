# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_worker_cleanup through real Ansible on real Ray worker containers and a real Ray head.

The host's own /tmp is never a target here: containers run with host: false,
and the Ray test points tmp_dir at an empty test directory.
"""

from __future__ import annotations

import glob
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid

from ansible_collections.rayops.disk.tests.system.conftest import (
    BURN_DRIVER,
    SPILL_DRIVER,
    ansible_module,
    wait_for_title,
)

IMAGE = "rayops-test/busybox:latest"
OLD = time.time() - 6 * 3600
LITTER = {"ray_tmp_9/pkg.zip": 65536, "pip-build-3/setup.py": 8192, "tmpk2/x": 4096, "keep/data": 4096}

TASK_DRIVER = r"""
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(ray.get(ray.remote(lambda: 6 * 7).remote()))
"""


def old_tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, size in files.items():
            for parent in [os.path.dirname(path)]:
                info = tarfile.TarInfo(parent)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, OLD
                tar.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mtime = size, OLD
            tar.addfile(info, io.BytesIO(b"c" * size))
    return buf.getvalue()


def ls_tmp(container):
    return sorted(container.exec_run(["ls", "/tmp"])[1].decode().split())


def test_only_idle_workers_are_cleaned_and_vanishing_ones_are_errors(docker_client):
    tag = "ray-worker-c%s" % uuid.uuid4().hex[:8]
    busy = docker_client.containers.run(IMAGE, ["sh", "-c", "while :; do :; done"], name=tag + "-busy", init=True,
                                        detach=True)
    idle = docker_client.containers.run(IMAGE, name=tag + "-idle", init=True, detach=True)
    docker_client.containers.run(IMAGE, ["sleep", "2"], name=tag + "-brief", init=True, detach=True)
    doomed = docker_client.containers.run(IMAGE, name=tag + "-doomed", init=True, detach=True)
    try:
        for container in (busy, idle):
            container.put_archive("/tmp", old_tar(LITTER))
        args = {"host": False, "containers": True, "container_name_filter": tag, "min_tmp_size": "0",
                "max_age_hours": 1, "age_by": ["mtime"], "sample_seconds": 1}
        check = ansible_module("rayops.disk.ray_worker_cleanup", args, check=True)
        assert ls_tmp(idle) == ["keep", "pip-build-3", "ray_tmp_9", "tmpk2"]  # the dry run removed nothing
        docker_client.containers.run(IMAGE, ["sleep", "3"], name=tag + "-brief2", init=True, detach=True)
        remover = threading.Timer(2.5, doomed.remove, kwargs={"force": True})  # removed while being sampled
        remover.start()
        # a window long enough that brief2 exits (3 s) and doomed goes (2.5 s) after the listing, however fast
        result = ansible_module("rayops.disk.ray_worker_cleanup", dict(args, sample_seconds=4))
        remover.join()
        assert result.get("failed") is not True, result
        entries = {entry["name"]: entry for entry in result["targets"]}
        assert entries[tag + "-busy"]["status"] == "skipped_active"
        assert entries[tag + "-busy"]["reason"].startswith("busy: CPU ")
        assert ls_tmp(busy) == ["keep", "pip-build-3", "ray_tmp_9", "tmpk2"]
        assert entries[tag + "-idle"]["status"] == "cleaned"
        assert ls_tmp(idle) == ["keep"]
        assert entries[tag + "-idle"]["freed_bytes"] >= 65536 + 8192 + 4096
        assert entries[tag + "-idle"]["removed_paths"][0].startswith("/tmp/")  # as the container names it
        assert (entries[tag + "-brief2"]["status"], entries[tag + "-brief2"]["reason"]) in (  # exited by itself
            ("error", "container is exited, it stopped during the run"),
            ("error", "cannot sample activity: container is exited, it stopped during the run"),
            ("skipped_not_running", "container is exited"))
        # Removed mid-run: an error while sampling or cleaning it, or (on a slow machine, the timer
        # firing before the listing) not listed at all; never cleaned or skipped as if it were there.
        gone = entries.get(tag + "-doomed", {"status": "error", "reason": "removed before the listing"})
        assert gone["status"] == "error", gone
        assert re.search(r"removing|removed during the run|No such container|cannot sample activity|before the listing",
                         gone["reason"]), gone
        assert entries[tag + "-brief"]["status"] == "skipped_not_running"  # exited before this run
        assert entries[tag + "-brief"]["reason"] == "container is exited"
        unsure = {tag + "-brief2", tag + "-doomed"}  # exited or removed around the runs
        assert {e["name"] for e in check["targets"]} - unsure == set(entries) - unsure
        checked = {e["name"]: e for e in check["targets"]}
        assert checked[tag + "-idle"]["freed_bytes"] == entries[tag + "-idle"]["freed_bytes"]  # dry run == real
        assert checked[tag + "-idle"]["removed_paths"] == entries[tag + "-idle"]["removed_paths"]
        assert checked[tag + "-busy"]["status"] == "skipped_active"
        again = ansible_module("rayops.disk.ray_worker_cleanup", dict(args, container_name_filter=tag + "-idle"))
        assert again["changed"] is False
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": tag}):
            container.remove(force=True)


def test_stale_session_and_old_logs_go_the_live_session_and_ray_keep_working(any_ray_head):
    head = any_ray_head
    head.start()
    driver = head.driver(SPILL_DRIVER, os.path.join(head.temp_dir, "session_*", "ray_spilled_objects_*"))
    try:
        assert driver.stdout.readline().strip() == "SPILLED"
        stale = glob.glob(os.path.join(head.temp_dir, "session_2*"))[0]
        head.stop()
    finally:
        driver.kill()
        driver.wait()
    head.start()
    live = (set(glob.glob(os.path.join(head.temp_dir, "session_2*"))) - {stale}).pop()
    for dirpath, dirnames, filenames in os.walk(stale, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (OLD, OLD), follow_symlinks=False)
    os.utime(stale, (OLD, OLD))
    os.makedirs(os.path.join(live, "logs", "old"), exist_ok=True)
    old_log = os.path.join(live, "logs", "old", "worker-dead.out")
    with open(old_log, "w") as handle:
        handle.write("x" * 4096)
    os.utime(old_log, (OLD, OLD))
    empty_tmp = tempfile.mkdtemp(prefix="rayops-empty-tmp-")
    deadline = time.time() + 90
    while ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": empty_tmp, "activity": True})["activity"]["busy"]:
        assert time.time() < deadline, "the fresh Ray head never settled"  # prestarted workers import at start
    try:
        args = {"tmp_dir": empty_tmp, "ray_temp_dir": head.temp_dir, "min_tmp_size": "0",
                "max_age_hours": 1, "age_by": ["mtime"], "sample_seconds": 0.5}
        result = ansible_module("rayops.disk.ray_worker_cleanup", args)
    finally:
        shutil.rmtree(empty_tmp)
    host = result["targets"][0]
    assert host["status"] == "cleaned", host
    assert not os.path.exists(stale)
    assert not os.path.exists(old_log)
    assert os.path.isdir(os.path.join(live, "sockets")) and os.path.exists(os.path.join(live, "logs", "raylet.out"))
    assert host["freed_bytes"] >= 60 * 1024 * 1024  # the spilled objects of the stale session
    task = subprocess.run([head.python, "-c", TASK_DRIVER, "127.0.0.1:%d" % head.port], env=head.env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert task.stdout.strip() == "42", task.stderr  # Ray still works after the cleanup


def test_a_running_task_makes_the_head_skipped(any_ray_head):
    head = any_ray_head
    head.start()
    driver = head.driver(BURN_DRIVER)
    empty_tmp = tempfile.mkdtemp(prefix="rayops-empty-tmp-")
    try:
        assert driver.stdout.readline().strip() == "STARTED"
        wait_for_title("ray::burn")
        result = ansible_module("rayops.disk.ray_worker_cleanup",
                                {"tmp_dir": empty_tmp, "ray_temp_dir": head.temp_dir, "min_tmp_size": "0"})
    finally:
        driver.kill()
        driver.wait()
        shutil.rmtree(empty_tmp)
    host = result["targets"][0]
    assert result["changed"] is False
    assert host["status"] == "skipped_active"
    assert "Ray runs user code: " in host["reason"] and "ray::burn" in host["reason"]


def test_docker_prune_reports_in_check_mode_then_prunes(docker_client):
    stopped = docker_client.containers.create(IMAGE, name="rayops-prune-%s" % uuid.uuid4().hex[:8])
    stopped.put_archive("/", old_tar({"scratch/blob": 1 << 20}))  # 1 MiB in its writable layer
    empty_tmp = tempfile.mkdtemp(prefix="rayops-empty-tmp-")
    try:
        args = {"tmp_dir": empty_tmp, "min_tmp_size": "1TB", "docker_prune": True}
        check = ansible_module("rayops.disk.ray_worker_cleanup", args, check=True)
        assert check["docker_prune"]["containers"] >= 1 and check["docker_prune"]["reclaimed_bytes"] >= 1 << 20
        assert check["changed"] is True
        docker_client.containers.get(stopped.id)  # still there after the dry run
        real = ansible_module("rayops.disk.ray_worker_cleanup", args)
        assert real["docker_prune"]["containers"] >= 1 and real["changed"] is True
        assert not any(c.id == stopped.id for c in docker_client.containers.list(all=True))
        assert docker_client.images.get(IMAGE)  # tagged images stay
    finally:
        shutil.rmtree(empty_tmp)
        try:
            stopped.remove(force=True)
        except Exception:  # pruned: gone already
            pass
