# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""True idleness on real Ray 2.40, 2.53 and the newest: idle machinery never makes a node busy, work always does.

A 4-CPU head on 127.0.0.1 gets four idle workers (a driver ran four tasks and
stays connected) and an idle detached actor: with the default activity options
it reads idle and ray_worker_cleanup cleans it.  Ray runs with RAY_ROTATION_*
set, as the role configures it (2.53+ then hand workers a pipe for stderr).  Then the actor runs a method
that only sleeps (no CPU): the node is busy and nothing is removed.  The live
session is never touched.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import IDLE_DRIVER, ansible_module, wait_for_title

HOLD_DRIVER = r"""
import sys, time
import ray
ray.init(address=sys.argv[1], namespace="rayops", logging_level="ERROR", log_to_driver=False)
holder = ray.get_actor("holder")  # kept: a handle dropped at once loses the call on 2.40
ref = holder.hold.remote(600)
print("HOLDING", flush=True)
time.sleep(600)
"""

OLD = 1_000_000_000  # 2001: older than any max age


def litter(tmp_dir, name):
    """A stale ``ray_tmp_*`` dir of 1 MiB, as packaging leaves in /tmp."""
    path = os.path.join(tmp_dir, name)
    os.mkdir(path)
    with open(os.path.join(path, "blob"), "wb") as handle:
        handle.write(b"x" * (1 << 20))
    for each in (os.path.join(path, "blob"), path):
        os.utime(each, (OLD, OLD))
    return path


def files_under(path):
    return {os.path.join(dirpath, name) for dirpath, _dirs, names in os.walk(path) for name in names}


@pytest.fixture
def tmp_dir():
    path = tempfile.mkdtemp(prefix="rayops-act-")
    yield path
    for entry in os.listdir(path):
        for dirpath, _dirs, names in os.walk(os.path.join(path, entry), topdown=False):
            for name in names:
                os.unlink(os.path.join(dirpath, name))
            os.rmdir(dirpath)
    os.rmdir(path)


def test_idle_workers_and_an_idle_actor_leave_the_head_idle_an_actor_method_makes_it_busy(any_ray_head, tmp_dir):
    head = any_ray_head
    # as the role configures Ray: with rotation, 2.53+ give workers a pipe for stderr, not their log file
    head.env.update(RAY_ROTATION_MAX_BYTES=str(64 << 20), RAY_ROTATION_BACKUP_COUNT="3")
    head.start(num_cpus=4)
    idle_driver = head.driver(IDLE_DRIVER, "4")
    hold_driver = None
    try:
        assert idle_driver.stdout.readline().strip() == "IDLE"
        session = os.path.realpath(os.path.join(head.temp_dir, "session_latest"))
        live_files = files_under(session)
        first = litter(tmp_dir, "ray_tmp_first")
        args = {"tmp_dir": tmp_dir, "ray_temp_dir": head.temp_dir, "min_tmp_size": "0", "max_age_hours": 1,
                "age_by": ["mtime"]}

        usage = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": tmp_dir, "activity": True})
        activity = usage["activity"]
        assert activity["busy"] is False, json.dumps(activity)
        assert activity["idle_workers"] >= 4 and activity["idle_actors"] == ["ray::Holder"], activity
        assert activity["ray_tasks"] == [] and activity["cpu_percent"] < 5
        assert activity["why"].startswith("no task or actor method running; CPU ")
        cleaned = ansible_module("rayops.disk.ray_worker_cleanup", args)
        host = cleaned["targets"][0]
        assert host["status"] == "cleaned", host
        assert not os.path.exists(first) and cleaned["changed"] is True

        hold_driver = head.driver(HOLD_DRIVER)
        assert hold_driver.stdout.readline().strip() == "HOLDING"
        wait_for_title("ray::Holder.hold")
        second = litter(tmp_dir, "ray_tmp_second")
        skipped = ansible_module("rayops.disk.ray_worker_cleanup", args)
        host = skipped["targets"][0]
        assert host["status"] == "skipped_active", host
        assert "Ray runs user code: ray::Holder.hold (as root)" in host["reason"]
        assert os.path.exists(second) and skipped["changed"] is False
        assert live_files <= files_under(session)  # nothing of the live session went
    finally:
        for driver in (idle_driver, hold_driver):
            if driver is not None:
                driver.kill()
                driver.wait()
