# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_tmp_usage against a real Ray head on this machine (127.0.0.1 only, usage stats off).

Ray is started with a short temp dir, a job spills objects, Ray is stopped
and started again: one stale session (holding the spilled objects) and one
live session must be reported, with the sizes ``du`` gives, and the node as head.
"""

from __future__ import annotations

import glob
import os

from ansible_collections.rayops.disk.tests.system.conftest import (
    BURN_DRIVER,
    SPILL_DRIVER,
    ansible_module,
    du_bytes,
    wait_for_title,
)


def test_one_live_one_stale_session_with_spilled_objects(any_ray_head):
    head = any_ray_head
    head.start()
    assert head.addresses() == {"127.0.0.1"}
    driver = head.driver(SPILL_DRIVER, os.path.join(head.temp_dir, "session_*", "ray_spilled_objects_*"))
    try:
        assert driver.stdout.readline().strip() == "SPILLED"
        first = glob.glob(os.path.join(head.temp_dir, "session_2*"))
        head.stop()  # killed while the driver holds the refs: the spilled files stay, as after a crash
    finally:
        driver.kill()
        driver.wait()
    head.start()
    sessions_now = glob.glob(os.path.join(head.temp_dir, "session_2*"))
    assert len(first) == 1 and len(sessions_now) == 2
    stale_path = first[0]
    live_path = (set(sessions_now) - set(first)).pop()

    result = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": "/tmp"})
    assert result.get("failed") is not True, result
    assert head.temp_dir in result["ray_temp_dirs"]  # read from the running raylet's command line
    ours = {s["path"]: s for s in result["sessions"] if s["path"].startswith(head.temp_dir + "/")}
    assert sorted(ours) == sorted([stale_path, live_path])
    stale, live = ours[stale_path], ours[live_path]
    assert (stale["live"], live["live"]) == (False, True), (stale["live_reason"], live["live_reason"])
    assert live["live_reason"] == "process:raylet" and live["latest"] and not stale["latest"]
    assert result["node_role"] == "head"
    # real Ray passes the trust checks: root-owned program files, safe temp root
    assert {p["kind"] for p in result["ray_processes"]} == {"raylet", "gcs_server", "log_monitor"}
    assert result["untrusted_processes"] == []

    spill_dirs = glob.glob(os.path.join(stale_path, "ray_spilled_objects_*"))
    assert len(spill_dirs) == 1
    assert stale["spilled_bytes"] == du_bytes(spill_dirs[0]) >= 60 * 1024 * 1024
    assert stale["bytes"] == du_bytes(stale_path)  # nothing writes to a stale session
    assert abs(live["bytes"] - du_bytes(live_path)) < max(1 << 20, live["bytes"] // 10)  # Ray is still logging
    assert live["spilled_bytes"] == 0

    remove = [s for s in result["suggestions"] if s["action"] == "remove_stale_sessions"]
    assert remove == []  # left alone: below min_tmp_size (5 GiB), and younger than max_age_hours (24)
    aged = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": "/tmp", "max_age_hours": 0, "min_tmp_size": "0"})
    remove = [s for s in aged["suggestions"] if s["action"] == "remove_stale_sessions"]
    assert stale_path in remove[0]["paths"] and live_path not in remove[0]["paths"]


def test_a_running_task_makes_the_head_busy(any_ray_head):
    head = any_ray_head
    head.start()
    idle = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": "/tmp", "activity": True})
    assert "ray::burn" not in idle["activity"]["ray_tasks"]
    driver = head.driver(BURN_DRIVER)
    try:
        assert driver.stdout.readline().strip() == "STARTED"
        wait_for_title("ray::burn")
        busy = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": "/tmp", "activity": True})
    finally:
        driver.kill()
        driver.wait()
    assert busy["activity"]["busy"] is True
    assert "ray::burn" in busy["activity"]["ray_tasks"]
    assert "Ray runs user code: " in busy["activity"]["reasons"][0]
    assert busy["activity"]["cpu_percent"] >= 20  # the task spins what the machine leaves it of a core
