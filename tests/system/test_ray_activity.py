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

Issue 18: a stream of short tasks (batches of four tasks of 0.1 s of CPU, the
driver working 0.3 s on the results in between) leaves every worker titled
``ray::IDLE`` at both ends of some windows; the head reads busy in each of
five consecutive samples, and the same head, idle before the stream, reads
idle in each of five.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils._activity import HostSample, TitleRules, sample_all
from ansible_collections.rayops.disk.plugins.module_utils._options import UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._targets import host_target
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

STREAM_DRIVER = r"""
import sys, time
import ray
ray.init(address=sys.argv[1], namespace="rayops", logging_level="ERROR", log_to_driver=False)

@ray.remote
def short_task():
    end = time.process_time() + 0.1  # 0.1 s of CPU
    while time.process_time() < end:
        pass

batch, pause = int(sys.argv[2]), float(sys.argv[3])
ray.get([short_task.remote() for _ in range(batch)])
print("STREAMING", flush=True)
while True:
    ray.get([short_task.remote() for _ in range(batch)])
    time.sleep(pause)  # the driver works on the results
"""
"""Batches of ``argv[2]`` short tasks, ``argv[3]`` seconds apart: each worker runs one now and then."""

SAMPLES = 5

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


class HeadSample(HostSample):
    """The host's sample as cleanup takes it, of this head's processes only: Ray that other tests run on this
    machine at the same time stays out."""

    def __init__(self, head, options):
        super().__init__(psutil, host_target(), TitleRules(tuple(options.busy_titles), tuple(options.idle_titles)),
                         options.ray_uids | {0})
        self.head = head

    def _processes(self):
        mine = {proc.pid for proc in self.head.processes()}
        return [proc for proc in super()._processes() if proc.pid in mine]


def head_activity(head):
    """One reading of the head's activity with the modules' defaults (1 s window, 5 %)."""
    options = UsageOptions(activity=True)
    return sample_all({"head": HeadSample(head, options)}, options.sample_seconds, options.cpu_idle_percent)["head"]


def wait_until_no_worker_starts(head, timeout=120):
    """Wait until none of the head's workers is still starting (``default_worker.py``, not titled yet)."""
    deadline = time.time() + timeout
    while True:
        starting = []
        for proc in head.processes():
            try:
                starting += [proc.pid] if any(arg.endswith("default_worker.py") for arg in proc.cmdline()[:3]) else []
            except psutil.NoSuchProcess:
                pass
        if not starting:
            return
        assert time.time() < deadline, "workers %s still starting" % starting
        time.sleep(0.5)


def test_a_stream_of_short_tasks_is_busy_in_every_sample_an_idle_head_idle_in_every_sample(any_ray_head):
    head = any_ray_head
    head.env.update(RAY_ROTATION_MAX_BYTES=str(64 << 20), RAY_ROTATION_BACKUP_COUNT="3")
    head.start(num_cpus=4)
    idle_driver = head.driver(IDLE_DRIVER, "4")
    stream_driver = None
    try:
        assert idle_driver.stdout.readline().strip() == "IDLE"
        wait_until_no_worker_starts(head)
        idle = [head_activity(head) for _sample in range(SAMPLES)]
        assert [reading["busy"] for reading in idle] == [False] * SAMPLES, [reading["why"] for reading in idle]
        assert all(reading["idle_workers"] >= 3 and reading["idle_actors"] == ["ray::Holder"] for reading in idle)
        assert all(reading["over_idle"]["workers"] == 0 and reading["ran_tasks"] == [] for reading in idle)

        stream_driver = head.driver(STREAM_DRIVER, "4", "0.3")
        assert stream_driver.stdout.readline().strip() == "STREAMING"
        busy = [head_activity(head) for _sample in range(SAMPLES)]
        assert [reading["busy"] for reading in busy] == [True] * SAMPLES, [reading["why"] for reading in busy]
        for reading in busy:  # what made it busy: a task at an end, one seen between them, or workers' CPU
            seen = reading["ray_tasks"] + reading["ran_tasks"]
            assert "ray::short_task" in seen or reading["over_idle"]["workers"], reading["why"]
    finally:
        for driver in (idle_driver, stream_driver):
            if driver is not None:
                driver.kill()
                driver.wait()
