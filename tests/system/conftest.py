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
import subprocess
import sys

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
    assert head.strip() in ("localhost | SUCCESS", "localhost | FAILED!"), proc.stderr + proc.stdout
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
