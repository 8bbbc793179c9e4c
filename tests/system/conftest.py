# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""System tests: the collection run by real Ansible against real Ray and real Docker containers.

Everything runs on this machine: the local inventory, containers on the local
engine, Ray bound to 127.0.0.1. Nothing here may reach another address.
"""

from __future__ import annotations

import ipaddress
import json
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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def ansible_env(**extra):
    """The environment Ansible commands run with: the repo's ansible.cfg, the local inventory."""
    env = dict(os.environ)
    env.update({"ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".build", "collections"),
                "PATH": BIN + os.pathsep + env.get("PATH", "")})
    env.update(extra)
    return env


def run_ansible(tool, *args, **extra_env):
    """Run an Ansible command line tool from the repo root; return the completed process."""
    return subprocess.run([os.path.join(BIN, tool)] + list(args), cwd=REPO, env=ansible_env(**extra_env),
                          capture_output=True, text=True, timeout=600, check=False)


def ansible_module(name, args, check=False):
    """Run a module on localhost through ``ansible`` and return its result dict."""
    argv = ["localhost", "-m", name, "-a", json.dumps(args)] + (["--check"] if check else [])
    proc = run_ansible("ansible", *argv, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",
                       ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    head, _sep, body = proc.stdout.partition(" => ")
    assert head.strip() in ("localhost | SUCCESS", "localhost | CHANGED", "localhost | FAILED!"), \
        proc.stderr + proc.stdout
    return json.loads(body)


def du_bytes(path):
    """Allocated bytes as GNU du counts them."""
    out = subprocess.run(["du", "-sxB1", path], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def remote_tcp_peers():
    """Remote ends of this machine's outgoing TCP connections that are not loopback.

    Connections into a port this machine listens on are someone else's doing.
    """
    import psutil

    connections = psutil.net_connections(kind="tcp")
    listening = {conn.laddr.port for conn in connections if conn.status == psutil.CONN_LISTEN}
    peers = set()
    for conn in connections:
        if not conn.raddr or conn.laddr.port in listening:
            continue
        address = ipaddress.ip_address(conn.raddr.ip.split("%")[0])
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        if not address.is_loopback:
            peers.add((conn.raddr.ip, conn.raddr.port, conn.pid))
    return peers


@pytest.fixture(scope="session")
def peers_before():
    return {(ip, port) for ip, port, _pid in remote_tcp_peers()}


@pytest.fixture(autouse=True)
def only_loopback(peers_before):
    """Fail a test that leaves a TCP connection to anything but loopback (the network is watched)."""
    yield
    new = {peer for peer in remote_tcp_peers() if peer[:2] not in peers_before}
    assert not new, "connections to non-loopback addresses: %s" % sorted(new)


@pytest.fixture(scope="session")
def docker_client():
    """The local Docker engine (started by scripts/setup.sh)."""
    import docker

    client = docker.from_env()
    client.ping()
    yield client
    client.close()


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


def wait_for_title(title, timeout=60):
    """Wait until a process carries ``title`` (a Ray worker running a task)."""
    deadline = time.time() + timeout
    while not any(p.info["cmdline"] and p.info["cmdline"][0] == title for p in psutil.process_iter(["cmdline"])):
        assert time.time() < deadline, "no process titled %s" % title
        time.sleep(0.2)


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
