# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fleet reached over real SSH, and the parser of the playbooks' fleet tables (a helper, not a test file).

The fleet is Debian containers running sshd (images built locally by scripts/setup.sh) on a Docker network of
its own, made ``--internal``: this machine reaches them at their bridge addresses, they reach nothing else.
Ansible logs in as root with a key made for the fleet and checks each host key against a known_hosts file that
pins it (read from the container with ``docker exec``, never from the network). The nodes, as in the users'
field trial:

- ``node-idle``: the role's packages, sshd; a node to clean;
- ``node-busy``: the same, with a process titled as a Ray task (``ray::train_step``) burning a core;
- ``node-bare``: python3 and sshd only: the modules fail there (no psutil);
- ``node-dead``: the address of a container that was started and stopped: nothing answers ARP there, so
  ``ssh`` gets ``No route to host`` after about 3 s (below ConnectTimeout).

Each container's /tmp is a 64 MiB tmpfs, so its used % moves measurably.
"""

from __future__ import annotations

import concurrent.futures
import errno
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field

SSHD_IMAGE = "rayops-test/sshd:bookworm"
SSHD_BARE_IMAGE = "rayops-test/sshd-bare:bookworm"
LABEL = "rayops-test.sshfleet"
"""Every container and the network of a fleet carry this label, its value the fleet's id."""
NODES = (("node-idle", SSHD_IMAGE), ("node-busy", SSHD_IMAGE), ("node-bare", SSHD_BARE_IMAGE))
DEAD = "node-dead"
HOSTS = tuple(name for name, _image in NODES) + (DEAD,)
"""The inventory's hosts, in its order."""
TMP_SIZE = 64 << 20
SSHD = ("mkdir -p -m 0755 /run/sshd && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && "
        "exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/ssh_host_ed25519_key -o PasswordAuthentication=no "
        "-o KbdInteractiveAuthentication=no -o PermitRootLogin=prohibit-password")
"""The container's command: a host key of its own, then sshd in the foreground, root by key only."""
BUSY = "exec -a ray::train_step python3 -c 'while True: pass'"
"""A Ray worker running user code, as Ray titles it: busy, whatever its CPU."""
SSH_PORT = 22


class SSHFleet:
    """Start with ``start()``, end with ``close()`` (which removes every container and the network it made)."""

    def __init__(self, docker_client, endpoints: set, nodes: tuple = NODES, dead: bool = True) -> None:
        """``endpoints``: the set of ``(address, port)`` the tests may connect to; the fleet adds its own.

        ``nodes``: ``(name, image)`` of the nodes running sshd (a node named node-busy gets the busy process);
        ``dead``: whether node-dead is added.
        """
        self.client = docker_client
        self.endpoints = endpoints
        self.nodes = tuple(nodes)
        self.dead = dead
        self.id = uuid.uuid4().hex[:8]
        self.dir = tempfile.mkdtemp(prefix="rayops-ssh-", dir="/tmp")  # short: ssh's control sockets live here
        self.key = os.path.join(self.dir, "id_ed25519")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        self.control_dir = os.path.join(self.dir, "cp")
        self.containers: dict = {}
        self.addresses: dict = {}
        self.network = None

    # ---------------------------------------------------------------- start and stop
    def start(self) -> "SSHFleet":
        os.mkdir(self.control_dir, 0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rayops-sshfleet-%s" % self.id,
                        "-f", self.key], check=True, timeout=60)
        labels = {LABEL: self.id}
        self.network = self.client.networks.create("rayops-ssh-%s" % self.id, driver="bridge", internal=True,
                                                   labels=labels)
        for name, image in self.nodes:
            self.containers[name] = self.client.containers.run(
                image, ["/bin/sh", "-c", SSHD], name=self._name(name), labels=labels, init=True, detach=True,
                network=self.network.name, tmpfs={"/tmp": "size=%d" % TMP_SIZE})
        if self.dead:  # last: no container started after it may get its address
            self.containers[DEAD] = self.client.containers.run(SSHD_IMAGE, ["sleep", "infinity"], name=self._name(DEAD),
                                                               labels=labels, init=True, detach=True,
                                                               network=self.network.name)
        for name, container in self.containers.items():
            container.reload()
            self.addresses[name] = container.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"]
            assert self.addresses[name], "%s has no address: %s" % (name, container.attrs["NetworkSettings"])
            self.endpoints.add((self.addresses[name], SSH_PORT))
        with concurrent.futures.ThreadPoolExecutor() as pool:
            if self.dead:
                self.containers[DEAD].stop(timeout=0)
                dead_probe = pool.submit(self._no_route, self.addresses[DEAD])  # 3 s of ARP: meanwhile the rest
            pins = list(pool.map(self._authorize, [name for name, _image in self.nodes]))
            with open(self.known_hosts, "w") as handle:
                handle.writelines(pins)
            for name, _image in self.nodes:
                self._wait_for_ssh(name)
            if self.dead:
                dead_probe.result()
        if "node-busy" in self.containers:
            self.shell("node-busy", BUSY, detach=True)
        return self

    @property
    def hosts(self) -> tuple:
        """The inventory's hosts, in its order: the nodes, then node-dead."""
        return tuple(name for name, _image in self.nodes) + ((DEAD,) if self.dead else ())

    def close(self) -> None:
        """End the SSH connections Ansible keeps open (ControlPersist), remove the containers and the network."""
        try:
            if os.path.isdir(self.control_dir):
                for socket_name in os.listdir(self.control_dir):
                    control_path = os.path.join(self.control_dir, socket_name)
                    subprocess.run(["ssh", "-O", "exit", "-o", "ControlPath=%s" % control_path, "fleet"],
                                   capture_output=True, timeout=30, check=False)
        finally:
            try:
                for container in self.client.containers.list(all=True, filters={"label": "%s=%s" % (LABEL, self.id)}):
                    container.remove(force=True)
                if self.network is not None:
                    self.network.remove()
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _name(self, node: str) -> str:
        return "rayops-ssh-%s-%s" % (self.id, node)

    def _authorize(self, name: str) -> str:
        """Give root the fleet's key; the known_hosts line of the container's own host key (read by docker exec)."""
        container = self.containers[name]
        with open(self.key + ".pub", "rb") as handle:
            public = handle.read()
        container.put_archive("/root", tar_of({".ssh/authorized_keys": public}, mode=0o600, dir_mode=0o700))
        deadline = time.time() + 30
        while True:
            code, out = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
            if code == 0:
                break
            assert time.time() < deadline, "%s made no host key: %s" % (name, container.logs().decode()[-2000:])
            time.sleep(0.1)
        key_type, key = out.decode().split()[:2]
        return "%s %s %s\n" % (self.addresses[name], key_type, key)

    def _wait_for_ssh(self, name: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while True:
            proc = self.ssh(name, "true")
            if proc.returncode == 0:
                return
            assert time.time() < deadline, "sshd of %s does not answer: %s\n%s" % (
                name, proc.stderr, self.containers[name].logs().decode()[-2000:])
            time.sleep(0.2)

    @staticmethod
    def _no_route(address: str) -> None:
        """The dead node's address gives ``No route to host`` quickly (ARP finds nobody), not a timeout."""
        start = time.monotonic()
        with socket.socket() as sock:
            sock.settimeout(10)
            try:
                sock.connect((address, SSH_PORT))
            except OSError as exc:
                assert exc.errno == errno.EHOSTUNREACH, "connecting to the dead node's %s gave %r" % (address, exc)
            else:
                raise AssertionError("the dead node's address %s answers" % address)
        assert time.monotonic() - start < 5, "No route to host took %.1f s" % (time.monotonic() - start)

    # ---------------------------------------------------------------- use
    def ssh_options(self, known_hosts: str = None) -> list:
        """The ssh options the inventory gives Ansible (besides the key and the user)."""
        return ["-o", "UserKnownHostsFile=%s" % (known_hosts or self.known_hosts), "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes"]

    def ssh(self, name: str, command: str, known_hosts: str = None) -> subprocess.CompletedProcess:
        """Run ``command`` on node ``name`` over SSH as Ansible reaches it (no control master; ``known_hosts``
        instead of the fleet's, to show what pinning refuses)."""
        argv = ["ssh", "-F", "/dev/null", "-i", self.key, "-o", "BatchMode=yes"] + self.ssh_options(known_hosts) + [
            "root@%s" % self.addresses[name], command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    def shell(self, name: str, script: str, detach: bool = False) -> str:
        """Run a bash script in node ``name``'s container (``docker exec``, not SSH); its output."""
        code, out = self.containers[name].exec_run(["bash", "-c", script], detach=detach)
        if detach:
            return ""
        assert code == 0, "%s: %s failed (%d): %s" % (name, script, code, out.decode())
        return out.decode()

    def write_files(self, name: str, files: dict, mtime: float = None) -> None:
        """Files of random bytes in node ``name`` (``{absolute path: size}``), their mtime and their dirs' ``mtime``.

        Through ``docker exec``: ``put_archive`` would write beneath a tmpfs mount such as /tmp, not into it.
        """
        commands = []
        for path, size in files.items():
            commands.append("mkdir -p %s && head -c %d /dev/urandom > %s" % (
                shlex.quote(os.path.dirname(path)), size, shlex.quote(path)))
        if mtime is not None:
            touched = set(files) | {os.path.dirname(path) for path in files}
            commands.append("touch -d @%d %s" % (mtime, " ".join(shlex.quote(path) for path in sorted(touched))))
        self.shell(name, " && ".join(commands))

    def inventory(self, hosts: tuple = None) -> str:
        """Write an inventory of ``hosts`` (node names; default all, in the fleet's order); return its path.

        Every host is reached over SSH at its container's address, as root with the fleet's key, its host key
        checked against the fleet's known_hosts, Ansible's control sockets in the fleet's dir.
        """
        entries = {name: {"ansible_host": self.addresses[name]} for name in (self.hosts if hosts is None else hosts)}
        common = {"ansible_connection": "ansible.builtin.ssh", "ansible_user": "root",
                  "ansible_ssh_private_key_file": self.key,
                  "ansible_ssh_common_args": " ".join(self.ssh_options()),
                  "ansible_control_path_dir": self.control_dir,
                  "ansible_python_interpreter": "/usr/bin/python3"}
        handle, path = tempfile.mkstemp(prefix="inventory-", suffix=".yml", dir=self.dir)
        with os.fdopen(handle, "w") as stream:
            json.dump({"all": {"vars": common, "hosts": entries}}, stream, indent=2)  # JSON is YAML
        return path


def tar_of(files: dict, mode: int = 0o644, dir_mode: int = 0o755, mtime: float = None) -> bytes:
    """A tar of ``{relative path: bytes}`` with their parent dirs, owned by root, for ``put_archive``."""
    mtime = time.time() if mtime is None else mtime
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        seen = set()
        for path, data in files.items():
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                parent = "/".join(parts[:depth])
                if parent not in seen:
                    seen.add(parent)
                    info = tarfile.TarInfo(parent)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, dir_mode, mtime
                    tar.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, mtime
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# -------------------------------------------------------------------- the fleet tables
SIZE = re.compile(r"^\d+ B$|^\d+\.\d (KiB|MiB|GiB|TiB)$")
"""A size cell: bytes below 1 KiB, else one decimal and an IEC unit (1024-based)."""
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
WRONG_UNITS = re.compile(r"\b\d+(\.\d+)? ?(KB|MB|GB|TB|Bytes|bytes)\b")
CLEANUP_COLUMNS = ("host", "used % before", "used % after", "freed", "duration", "status", "reason")
CLEANUP_TARGET_COLUMNS = ("target", "tmp before", "tmp after", "freed", "status", "reason")
REPORT_COLUMNS = ("host", "status", "level", "used %", "inodes %", "free", "tmp", "stale", "freeable", "held open",
                  "reason")
STATUS_ORDER = ("unreachable", "failed", "error", "skipped_locked", "cleaned", "skipped_active",
                "skipped_below_threshold", "skipped_not_running")
"""The cleanup's statuses, worst first: a node's is the worst of its targets' (``would_clean`` in check mode
stands where ``cleaned`` does)."""


def worst(statuses) -> str:
    """The worst of cleanup statuses (``would_clean`` ranks as ``cleaned``): what a node's row must say."""
    rank = {status: index for index, status in enumerate(STATUS_ORDER)}
    rank["would_clean"] = rank["cleaned"]
    return min(statuses, key=rank.__getitem__)


def size_bytes(cell: str) -> float:
    """Bytes of a size cell (``"5.0 MiB"``); fails on anything not in the table contract's form."""
    assert SIZE.match(cell), "not a size cell: %r" % cell
    number, unit = cell.split()
    return float(number) * UNITS[unit]


def cells(line: str) -> list:
    """The cells of a table line: separated by two or more spaces, none of them empty."""
    return re.split(r"\s{2,}", line.strip())


@dataclass
class Table:
    title: str
    rows: dict
    """``{host: {column: cell, ..., "targets": [{column: cell}, ...]}}``, in the order printed."""
    footer: str
    lines: list = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines)


def parse_table(stdout: str, title: str, columns: tuple, target_columns: tuple = None) -> Table:
    """The one table in ``stdout`` whose title line starts with ``title`` and whose header has ``columns``.

    Host rows start at the table's indent; target lines (``target_columns``) two spaces further in; the footer
    holds `` node(s): ``. A cell that is missing, empty or holds two spaces makes the row's cell count wrong,
    and so fails here.
    """
    lines = stdout.splitlines()
    starts = [index for index, line in enumerate(lines[:-1])
              if line.lstrip().startswith(title) and tuple(cells(lines[index + 1])) == tuple(columns)]
    assert len(starts) == 1, "%d tables titled %r with columns %s in:\n%s" % (len(starts), title, columns, stdout)
    start = starts[0]
    indent = lines[start][:len(lines[start]) - len(lines[start].lstrip())]
    assert lines[start + 1].startswith(indent) and lines[start + 1][len(indent)] != " ", lines[start + 1]
    rows, current, table_lines = {}, None, lines[start:start + 2]
    for line in lines[start + 2:]:
        table_lines.append(line)
        body = line[len(indent):]
        where = "\n".join(table_lines)
        assert line.startswith(indent) and body.strip(), "the table ends without a footer:\n%s" % where
        if " node(s): " in body:
            return Table(lines[start].strip(), rows, body.strip(), table_lines)
        if body.startswith("  "):
            assert target_columns, "a target line in a table without targets:\n%s" % where
            assert not body.startswith("   "), "target line indented by more than two spaces: %r" % body
            values = cells(body)
            if current is None and tuple(values) == tuple(target_columns):
                continue  # the targets' own header
            assert current is not None, "a target line before any host row:\n%s" % where
            assert len(values) == len(target_columns), "target line %r: %d cells, not %d" % (
                body, len(values), len(target_columns))
            current["targets"].append(dict(zip(target_columns, values)))
            continue
        values = cells(body)
        assert len(values) == len(columns), "row %r: %d cells, not %d: %s" % (
            body, len(values), len(columns), values)
        row = dict(zip(columns, values))
        assert row[columns[0]] not in rows, "host %s listed twice:\n%s" % (row[columns[0]], where)
        current = rows[row[columns[0]]] = dict(row, targets=[])
    raise AssertionError("no footer line with ' node(s): ' after the table:\n%s" % "\n".join(table_lines))


def check_units(table: Table, size_columns: tuple, target_size_columns: tuple = ()) -> None:
    """Every size cell is ``-`` or of the contract's form; no decimal-unit label anywhere in the table."""
    for host, row in table.rows.items():
        for column in size_columns:
            assert row[column] == "-" or SIZE.match(row[column]), "%s %s: %r" % (host, column, row[column])
        for target in row["targets"]:
            for column in target_size_columns:
                assert SIZE.match(target[column]), "%s %s %s: %r" % (host, target.get("target"), column,
                                                                     target[column])
    assert not WRONG_UNITS.search(table.text()), "decimal or spelled-out units in:\n%s" % table.text()


def recap(stdout: str) -> dict:
    """``{host: {"ok": n, "changed": n, "unreachable": n, "failed": n, ...}}`` from the PLAY RECAP."""
    found = {}
    for match in re.finditer(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", stdout, re.M):
        found[match["host"]] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match["counts"])}
    return found
