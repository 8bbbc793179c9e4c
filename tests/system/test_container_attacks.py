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
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid

import pytest

from ansible_collections.rayops.disk.plugins.module_utils._containers import container_target
from ansible_collections.rayops.disk.tests.system.conftest import ansible_module
from ansible_collections.rayops.disk.tests.unit.conftest import tree_digest, write

IMAGE = "rayops-test/debian-python:bookworm-2"
STALE = "session_2020-01-01_00-00-00_000001_1"
LIVE = "session_2099-01-01_00-00-00_000001_2"
OLD = time.time() - 6 * 3600


def sh(container, script):
    code, out = container.exec_run(["sh", "-ec", script])
    assert code == 0, out.decode()
    return out.decode()


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
        container.exec_run(["/opt/ray/core/src/ray/raylet/raylet", "-c", "import time; time.sleep(600)",
                            "--temp_dir=/tmp/y/ray", "--session_dir=/x/ray/%s" % LIVE], detach=True)
        deadline = time.time() + 20
        while "raylet" not in sh(container, "cat /proc/[0-9]*/comm"):
            assert time.time() < deadline, "the container's raylet did not start"
            time.sleep(0.2)
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
