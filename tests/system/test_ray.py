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
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from ansible_collections.rayops.disk.tests.system.conftest import BIN, ansible_module, du_bytes

SPILL_DRIVER = r"""
import glob, os, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
refs = [ray.put(bytes([i]) * (20 * 1024 * 1024)) for i in range(8)]  # 160 MB into a 75 MB store
deadline = time.time() + 60
while time.time() < deadline:
    spilled = glob.glob(os.path.join(sys.argv[2], "session_*", "ray_spilled_objects_*", "*"))
    if sum(os.path.getsize(p) for p in spilled) >= 60 * 1024 * 1024:
        break
    time.sleep(0.2)
else:
    sys.exit("no objects were spilled")
print("SPILLED", flush=True)
time.sleep(600)  # hold the refs: Ray deletes spilled files of freed objects
"""


BURN_DRIVER = r"""
import sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote
def burn():
    while True:
        pass

ref = burn.remote()
print("STARTED", flush=True)
time.sleep(600)
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayHead:
    """A Ray head node under a short temp dir, driven through the real ``ray`` CLI."""

    def __init__(self, temp_dir, home):
        self.temp_dir = temp_dir
        self.port = free_port()
        # Keep Ray off the network:
        # - without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray on Linux swaps 127.0.0.1 for the node's
        #   interface address;
        # - the dashboard's UsageStatsHead (started even with --include-dashboard=false) probes the cloud
        #   metadata address 169.254.169.254, usage stats or not, unless ~/ray_bootstrap_config.yaml
        #   exists: HOME points at a dir holding one that says the provider is local.
        with open(os.path.join(home, "ray_bootstrap_config.yaml"), "w") as handle:
            handle.write("provider:\n  type: local\n")
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                        HOME=home, PATH=BIN + os.pathsep + os.environ["PATH"])

    def ray(self, *args):
        proc = subprocess.run([os.path.join(BIN, "ray")] + list(args), env=self.env, capture_output=True,
                              text=True, timeout=180, check=False)
        assert proc.returncode == 0, "ray %s failed:\n%s%s" % (" ".join(args), proc.stdout, proc.stderr)
        return proc

    def start(self):
        self.ray("start", "--head", "--temp-dir=%s" % self.temp_dir, "--port=%d" % self.port,
                 "--ray-client-server-port=%d" % free_port(), "--dashboard-port=%d" % free_port(),
                 "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--num-cpus=1",
                 "--object-store-memory=78643200", "--disable-usage-stats")

    def processes(self):
        """This head's processes and their children (another Ray may run on the machine)."""
        pattern = "(--temp_dir=|--temp-dir=|--session-dir=|--session_dir=|--log_dir=|--logs-dir=)%s|:%d( |$)" % (
            self.temp_dir, self.port)
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout
        procs = {}
        for pid in out.split():
            try:
                proc = psutil.Process(int(pid))
                for each in [proc] + proc.children(recursive=True):
                    procs[each.pid] = each
            except psutil.NoSuchProcess:
                pass
        return list(procs.values())

    def addresses(self):
        """Every IP address on this head's command lines."""
        found = set()
        for proc in self.processes():
            try:
                found.update(re.findall(r"\b(\d+\.\d+\.\d+\.\d+)\b", " ".join(proc.cmdline())))
            except psutil.NoSuchProcess:
                pass
        return found

    def stop(self):
        """Kill this head's processes as ``ray stop --force`` would (which would stop every Ray here)."""
        procs = self.processes()
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)


@pytest.fixture
def ray_head():
    temp_dir = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: unix socket paths stay under 108 bytes
    home = tempfile.mkdtemp(prefix="rayops-home-")
    head = RayHead(temp_dir, home)
    try:
        yield head
    finally:
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def test_one_live_one_stale_session_with_spilled_objects(ray_head):
    ray_head.start()
    assert ray_head.addresses() == {"127.0.0.1"}
    driver = subprocess.Popen([sys.executable, "-c", SPILL_DRIVER, "127.0.0.1:%d" % ray_head.port, ray_head.temp_dir],
                              stdout=subprocess.PIPE, text=True, env=ray_head.env)
    try:
        assert driver.stdout.readline().strip() == "SPILLED"
        first = glob.glob(os.path.join(ray_head.temp_dir, "session_2*"))
        ray_head.stop()  # killed while the driver holds the refs: the spilled files stay, as after a crash
    finally:
        driver.kill()
        driver.wait()
    ray_head.start()
    sessions_now = glob.glob(os.path.join(ray_head.temp_dir, "session_2*"))
    assert len(first) == 1 and len(sessions_now) == 2
    stale_path = first[0]
    live_path = (set(sessions_now) - set(first)).pop()

    result = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": "/tmp"})
    assert result.get("failed") is not True, result
    assert ray_head.temp_dir in result["ray_temp_dirs"]  # read from the running raylet's command line
    ours = {s["path"]: s for s in result["sessions"] if s["path"].startswith(ray_head.temp_dir + "/")}
    assert sorted(ours) == sorted([stale_path, live_path])
    stale, live = ours[stale_path], ours[live_path]
    assert (stale["live"], live["live"]) == (False, True), (stale["live_reason"], live["live_reason"])
    assert live["live_reason"] == "process:raylet" and live["latest"] and not stale["latest"]
    assert result["node_role"] == "head"

    spill_dirs = glob.glob(os.path.join(stale_path, "ray_spilled_objects_*"))
    assert len(spill_dirs) == 1
    assert stale["spilled_bytes"] == du_bytes(spill_dirs[0]) >= 60 * 1024 * 1024
    assert stale["bytes"] == du_bytes(stale_path)  # nothing writes to a stale session
    assert abs(live["bytes"] - du_bytes(live_path)) < max(1 << 20, live["bytes"] // 10)  # Ray is still logging
    assert live["spilled_bytes"] == 0

    remove = [s for s in result["suggestions"] if s["action"] == "remove_stale_sessions"]
    assert remove == []  # stale but fresh: younger than stale_after_hours (24)
    aged = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": "/tmp", "stale_after_hours": 0})
    remove = [s for s in aged["suggestions"] if s["action"] == "remove_stale_sessions"]
    assert stale_path in remove[0]["paths"] and live_path not in remove[0]["paths"]


def test_a_running_task_makes_the_head_busy(ray_head):
    ray_head.start()
    idle = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": "/tmp", "activity": True})
    assert "ray::burn" not in idle["activity"]["ray_tasks"]
    driver = subprocess.Popen([sys.executable, "-c", BURN_DRIVER, "127.0.0.1:%d" % ray_head.port],
                              stdout=subprocess.PIPE, text=True, env=ray_head.env)
    try:
        assert driver.stdout.readline().strip() == "STARTED"
        deadline = time.time() + 60
        while not any(p.info["cmdline"] and p.info["cmdline"][0] == "ray::burn"
                      for p in psutil.process_iter(["cmdline"])):
            assert time.time() < deadline, "the task never started"
            time.sleep(0.2)
        busy = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": "/tmp", "activity": True})
    finally:
        driver.kill()
        driver.wait()
    assert busy["activity"]["busy"] is True
    assert "ray::burn" in busy["activity"]["ray_tasks"]
    assert "Ray runs user code: " in busy["activity"]["reasons"][0]
    assert busy["activity"]["cpu_percent"] >= 50  # the task spins a core
