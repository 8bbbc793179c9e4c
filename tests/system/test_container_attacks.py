# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A container whose root is not ours attacks the host through ray_worker_cleanup (issue 8, findings 1 and 10).

The container runs a process that passes every trust check a container's
root can satisfy (root inside, a program at Ray's path), naming temp roots
through absolute symlinks that point at a host directory.  Through
``/proc/<pid>/root`` the kernel would follow them to the host; the
collection resolves them inside the container.

Issue 18: such a container makes root open a device node or fifo it planted where root reads Ray's version and a
session's ``debug_state.txt`` (finding 2), and names a temp root with a newline to forge a line of root's log
(finding 5).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid

import pytest

from ansible_collections.rayops.disk.plugins.module_utils._containers import container_target
from ansible_collections.rayops.disk.tests.system.conftest import ansible_module, sh, start_raylet
from ansible_collections.rayops.disk.tests.system.test_node_cli import install, run, write_config
from ansible_collections.rayops.disk.tests.unit.conftest import tree_digest, write
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.test_ray_version import opens_of

IMAGE = "rayops-test/debian-python:bookworm-2"
STALE = "session_2020-01-01_00-00-00_000001_1"
LIVE = "session_2099-01-01_00-00-00_000001_2"
OLD = time.time() - 6 * 3600


@pytest.fixture
def host_ray(tmp_path):
    """A host directory shaped like a Ray temp root: a stale session with a model, a live one with old logs."""
    base = tempfile.mkdtemp(prefix="rayops-hostray-", dir="/var/tmp")
    ray = os.path.join(base, "ray")
    write(os.path.join(ray, STALE, "model.bin"), 8 << 20)
    write(os.path.join(ray, LIVE, "logs", "old", "worker-1.out"), 4096)
    write(os.path.join(ray, LIVE, "runtime_resources", "pkg", "x.py"), 4096)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (OLD, OLD))
    yield base
    shutil.rmtree(base)


@pytest.fixture
def attacker(docker_client, host_ray):
    """A worker container that plants ``/x`` and ``/tmp/y`` (absolute links to ``host_ray``) and a Ray-looking
    raylet naming them; inside, the same path holds a small decoy Ray root of its own."""
    tag = "ray-worker-atk%s" % uuid.uuid4().hex[:8]
    container = docker_client.containers.run(IMAGE, name=tag, init=True, detach=True)
    try:
        sh(container, """
            mkdir -p /opt/ray/core/src/ray/raylet
            cp /usr/bin/python3.11 /opt/ray/core/src/ray/raylet/raylet
            ln -s {base} /x
            ln -s {base} /tmp/y
            mkdir -p {base}/ray/{stale} {base}/ray/{live}/logs
            head -c 65536 /dev/zero > {base}/ray/{stale}/decoy.bin
            find {base} -exec touch -d @{old} {{}} +
        """.format(base=host_ray, stale=STALE, live=LIVE, old=int(OLD)))
        start_raylet(container, "--temp_dir=/tmp/y/ray", "--session_dir=/x/ray/%s" % LIVE)
        yield container
    finally:
        container.remove(force=True)


def test_a_container_cannot_make_the_host_delete_or_count_host_files(attacker, host_ray, tmp_path):
    before = tree_digest(host_ray)
    audit = str(tmp_path / "audit.jsonl")
    args = {"host": False, "containers": True, "container_name_filter": attacker.name, "min_tmp_size": "4MB",
            "max_age_hours": 1, "age_by": ["mtime"], "sample_seconds": 0.5, "audit_log": audit,
            "lock_file": str(tmp_path / "lock")}

    gated = ansible_module("rayops.disk.ray_worker_cleanup", args)
    assert gated.get("failed") is not True, gated
    entry = gated["targets"][0]
    # The host's 8 MiB behind /tmp/y are not the container's: it holds less than min_tmp_size.
    assert entry["status"] == "skipped_below_threshold", entry
    assert entry["tmp_bytes_before"] < 1 << 20

    check = ansible_module("rayops.disk.ray_worker_cleanup", dict(args, min_tmp_size="0"), check=True)
    real = ansible_module("rayops.disk.ray_worker_cleanup", dict(args, min_tmp_size="0"))
    entry = real["targets"][0]
    assert entry["status"] == "cleaned", entry
    # as the container names it (both links lead to the same directory inside it: one root, named once)
    named = {"/x/ray/%s" % STALE, "/tmp/y/ray/%s" % STALE}
    assert len(named & set(entry["removed_paths"])) == 1
    assert check["targets"][0]["removed_paths"] == entry["removed_paths"]
    assert tree_digest(host_ray) == before  # not one host file touched
    assert sh(attacker, "ls %s/ray" % host_ray).split() == [LIVE]  # the container's own stale session went

    merged = attacker.attrs["GraphDriver"]["Data"]["MergedDir"]
    roots = {root["path"]: root["host_path"] for root in entry["roots"]}
    assert roots["/tmp"] == merged + "/tmp"
    assert {roots[path] for path in roots if path != "/tmp"} == {"%s%s/ray" % (merged, host_ray)}
    lines = [json.loads(line) for line in open(audit)]
    assert [(line["target"], line["kind"]) for line in lines] == [(attacker.name, "container")]
    assert lines[0]["path"] in named and lines[0]["entries"] == 2
    # Where it really was: in the container's filesystem, not the host directory the link named.
    assert lines[0]["host_path"] == "%s%s/ray/%s" % (merged, host_ray, STALE)


def test_a_pid_that_no_longer_belongs_to_the_container_is_not_entered(attacker):
    attacker.reload()
    assert container_target(attacker).start_time
    attacker.attrs["State"]["Pid"] = os.getpid()  # Docker's pid, reused by another process (here: this one)
    with pytest.raises(LookupError, match="process %d is not in the container's cgroup: its pid was reused"
                                          % os.getpid()):
        container_target(attacker)


# --- issue 18, finding 2: a device node or fifo where root reads --------------------------------------------------

NODE = uuid.uuid4().hex + uuid.uuid4().hex[:24]  # a spill dir's node that no raylet names: its session is looked up
PLANTED = {"/opt/ray/_version.py": "mknod {path} c 1 5", "/opt/ray-2.53.0.dist-info/METADATA": "mkfifo {path}",
           "/tmp/rayt/%s/logs/debug_state.txt" % LIVE: "mkfifo {path}",
           "/tmp/rayt/%s/logs/debug_state.txt" % STALE: "mknod {path} c 1 5"}


@pytest.fixture
def planter(docker_client):
    """A worker container whose fake raylet's Ray package has a device node as ``_version.py`` and a fifo as its
    dist-info's METADATA, and whose sessions have a fifo and a device node as ``logs/debug_state.txt``; the raylet
    names a spill dir holding a dir of a node it does not name.  Yields ``(container, host paths planted)``."""
    container = docker_client.containers.run(IMAGE, name="ray-worker-dev%s" % uuid.uuid4().hex[:8], init=True,
                                             detach=True)
    try:
        sh(container, "\n".join([
            "mkdir -p /opt/ray/core/src/ray/raylet /opt/ray-2.53.0.dist-info /tmp/spill/ray_spilled_objects_%s" % NODE,
            "mkdir -p /tmp/rayt/%s/logs /tmp/rayt/%s/logs" % (LIVE, STALE),
            "cp /usr/bin/python3.11 /opt/ray/core/src/ray/raylet/raylet",
            "head -c 4096 /dev/zero > /tmp/spill/ray_spilled_objects_%s/obj" % NODE,
        ] + [make.format(path=path) for path, make in PLANTED.items()]))
        pid = start_raylet(container, "--temp_dir=/tmp/rayt", "--session_dir=/tmp/rayt/%s" % LIVE,
                           "--fallback_directory=/tmp/spill")
        yield container, ["/proc/%d/root%s" % (pid, path) for path in PLANTED]
    finally:
        container.remove(force=True)


def test_root_never_opens_a_device_or_fifo_a_container_planted(planter, tmp_path):
    container, planted = planter
    with opens_of(planted) as opened:
        report = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": str(tmp_path), "containers": True,
                                                              "container_name_filter": container.name})
    assert opened == []
    assert report.get("failed") is not True, report
    entry = report["containers"][0]
    assert entry["name"] == container.name and entry["ray_version"] is None, entry
    message = entry["log_rotation"]["message"]
    assert "/opt/ray/_version.py: _version.py is not a regular file" in message, message
    assert "METADATA: METADATA is not a regular file" in message, message
    spilled = [spill for spill in entry["spill_dirs"] if spill["node_id"] == NODE]
    assert spilled and spilled[0]["session"] is None, entry["spill_dirs"]  # looked for in the sessions: none says

    wrapper = install(tmp_path / "node", sys.prefix)  # the node's monitor, as cron runs it
    config = write_config(tmp_path, tmp_dir=str(tmp_path), containers=True, container_name_filter=container.name,
                          log_file=str(tmp_path / "ray-maintenance.log"))
    with opens_of(planted) as opened:
        proc = run(wrapper, "--config", config, "--json", "monitor")
    assert opened == []
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["containers"][0]["ray_version"] is None


# --- issue 18, finding 5: a newline in a name forges a line of root's log -----------------------------------------

FORGED = "FORGED 2026-01-01 00:00:00,000 ray-maintenance[1] INFO cleanup target host (host): nothing to clean"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ray-maintenance\[\d+\] (INFO|WARNING|ERROR) ")


@pytest.fixture
def forger(docker_client):
    """A worker container whose fake raylet names the temp root ``/dev/shm/a<newline>FORGED ...`` (it exists, on
    the container's own 8 MiB shm, a quarter full: a filesystem of its own, watched and over a low mark)."""
    container = docker_client.containers.run(IMAGE, name="ray-worker-forge%s" % uuid.uuid4().hex[:8], init=True,
                                             shm_size="8m", detach=True)
    root = "/dev/shm/a\n" + FORGED
    try:
        code, out = container.exec_run(["sh", "-ec", 'mkdir -p /opt/ray/core/src/ray/raylet "$1"\n'
                                        'cp /usr/bin/python3.11 /opt/ray/core/src/ray/raylet/raylet\n'
                                        'head -c 2097152 /dev/zero > "$1/filler"', "sh", root])
        assert code == 0, out.decode()
        start_raylet(container, "--temp_dir=" + root)
        yield container, root
    finally:
        container.remove(force=True)


def test_a_newline_in_a_containers_temp_root_forges_no_line_of_the_log(forger, tmp_path):
    container, root = forger
    wrapper = install(tmp_path / "node", sys.prefix)
    log = tmp_path / "ray-maintenance.log"
    config = write_config(tmp_path, tmp_dir=str(tmp_path), host=False, containers=True,
                          container_name_filter=container.name, log_file=str(log), lock_file=str(tmp_path / "lock"),
                          audit_log=str(tmp_path / "audit.jsonl"), pressure_high_percent=5,
                          pressure_inodes_high_percent=99, pressure_low_percent=1)
    watch = run(wrapper, "--config", config, "--json", "watch", "--once")
    monitor = run(wrapper, "--config", config, "--json", "monitor")
    entry = json.loads(monitor.stdout)["containers"][0]
    assert entry["error"] is None and entry["untrusted_processes"] == [], entry  # its raylet is trusted
    text = log.read_text()
    # the guard reclaimed, and said which filesystem was pressed: the temp root, escaped
    assert "/dev/shm/a\\n" + FORGED in text, text + watch.stderr
    lines = text.splitlines()
    assert [line for line in lines if not LOG_LINE.match(line)] == [], text
    assert not [line for line in lines if line.startswith("FORGED")]
    assert any(line.split(" ", 4)[3:4] == ["INFO"] and " monitor exit " in line for line in lines), text
    assert any(" watch exit " in line for line in lines), text
