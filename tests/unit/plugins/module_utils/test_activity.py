# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Busy or idle: Ray worker titles and CPU, sampled from real processes in a sandbox node.

The stand-in workers take their titles with ``ray._raylet.setproctitle``, the
function Ray's own workers call; real Ray workers are in tests/system.
"""

from __future__ import annotations

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils._activity import (
    HostSample,
    Sample,
    runs_user_code,
    sample_all,
    verdict,
)
from ansible_collections.rayops.disk.tests.unit.conftest import SandboxNode


@pytest.mark.parametrize("title, user_code", [
    ("ray::IDLE", False),
    ("ray::IDLE_SpillWorker", False),
    ("ray::IDLE_RestoreWorker", False),
    ("ray::DashboardAgent", False),
    ("ray::RuntimeEnvAgent", False),
    ("ray::train_step", True),
    ("ray::Trainer.fit", True),
    ("ray::JobSupervisor", True),  # a submitted job's entrypoint is running
    ("raylet", False),
    ("python", False),
])
def test_which_titles_are_user_code(title, user_code):
    assert runs_user_code(title) is user_code


def test_a_worker_running_a_task_makes_the_node_busy(node):
    node.spawn("python-worker", title="ray::IDLE")
    node.spawn("python-worker", title="ray::train_step")
    result = sample_all({"node": HostSample(psutil, node.target.mnt_ns)}, 0.5, 5)["node"]
    assert result["busy"] is True
    assert result["ray_tasks"] == ["ray::train_step"]
    assert result["reasons"][0] == "Ray runs user code: ray::train_step (as root)"


def test_an_idle_worker_burning_cpu_makes_the_node_busy(node):
    node.spawn("python-worker", title="ray::IDLE", burn=True)
    result = sample_all({"node": HostSample(psutil, node.target.mnt_ns)}, 1.0, 5)["node"]
    assert result["busy"] is True and result["ray_tasks"] == []
    assert result["cpu_percent"] >= 50
    assert result["reasons"] == ["CPU %.1f%% >= 5%%" % result["cpu_percent"]]


def test_busy_agents_and_daemons_do_not_make_the_node_busy(node):
    node.spawn("python-agent", title="ray::DashboardAgent", burn=True)
    node.spawn("raylet", "--session_dir=/tmp/ray/session_x", burn=True)
    result = sample_all({"node": HostSample(psutil, node.target.mnt_ns)}, 1.0, 5)["node"]
    assert result["busy"] is False and result["cpu_percent"] < 5


def test_idle_workers_and_agents_leave_the_node_idle(node):
    for title in ("ray::IDLE", "ray::IDLE_SpillWorker", "ray::DashboardAgent"):
        node.spawn("python-worker", title=title)
    result = sample_all({"node": HostSample(psutil, node.target.mnt_ns)}, 1.0, 5)["node"]
    assert result == {"busy": False, "reasons": [], "cpu_percent": result["cpu_percent"], "ray_tasks": []}
    assert result["cpu_percent"] < 5


def test_busy_processes_of_another_node_do_not_count(node):
    other = SandboxNode()
    try:
        other.spawn("python-worker", title="ray::train_step", burn=True)
        result = sample_all({"node": HostSample(psutil, node.target.mnt_ns)}, 0.5, 5)["node"]
    finally:
        other.stop()
    assert result["busy"] is False and result["cpu_percent"] < 5


class Vanishing(Sample):
    """A target that disappears between readings, as a container removed mid-run."""

    def __init__(self):
        super().__init__(psutil, None)
        self.calls = 0

    def _reading(self):
        self.calls += 1
        if self.calls > 1:
            raise LookupError("404 Client Error: No such container: ray-worker-9")
        return 0.0, 0.0


def test_a_target_vanishing_mid_sample_is_an_error_and_the_rest_is_sampled(node):
    results = sample_all({"gone": Vanishing(), "node": HostSample(psutil, node.target.mnt_ns)}, 0.2, 5)
    assert results["gone"] == {"busy": None,
                               "error": "cannot sample activity: 404 Client Error: No such container: ray-worker-9"}
    assert results["node"]["busy"] is False


def test_verdict_lists_every_reason():
    result = verdict({"cpu_percent": 12.5, "ray_tasks": ["ray::a", "ray::b"],
                      "owners": {"ray::a": ["root"], "ray::b": ["apiuser", "root"]}}, 5)
    assert result["reasons"] == ["Ray runs user code: ray::a (as root), ray::b (as apiuser, root)", "CPU 12.5% >= 5%"]
    assert verdict({"cpu_percent": 4.9, "ray_tasks": [], "owners": {}}, 5)["busy"] is False
    assert verdict({"cpu_percent": 5.0, "ray_tasks": [], "owners": {}}, 5)["busy"] is True
