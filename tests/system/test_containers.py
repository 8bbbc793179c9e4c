# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_tmp_usage on real Ray worker containers (a local busybox image, no registry)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import ansible_module, du_bytes

IMAGE = "rayops-test/busybox:latest"
SESSION = "session_2026-11-20_10-00-00_000001_42"
FILES = {  # path inside /tmp -> size; whole 4 KiB blocks, so allocated == written
    "ray_tmp_5f3a/pkg.zip": 300 * 1024,
    "pip-build-1/setup.py": 100 * 1024,
    "tmpx8k2": 52 * 1024,
    "ray/%s/logs/old/worker-1.out" % SESSION: 40 * 1024,
    "ray/%s/ray_spilled_objects_n1/obj" % SESSION: 200 * 1024,
    "keep/unrelated.bin": 8 * 1024,
}


def tar_of(files, scale):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, size in files.items():
            info = tarfile.TarInfo(path)
            info.size = size * scale
            tar.addfile(info, io.BytesIO(b"w" * info.size))
    return buf.getvalue()


def inside(container, *cmd):
    code, out = container.exec_run(list(cmd))
    assert code == 0, out
    return out.decode()


@pytest.fixture
def workers(docker_client):
    """Two running workers with different /tmp contents, one stopped worker, one unrelated container."""
    token = uuid.uuid4().hex[:8]
    tag = "ray-worker-t%s" % token
    made = []
    try:
        for index, scale in ((1, 1), (2, 3)):
            container = docker_client.containers.run(IMAGE, name="%s-%d" % (tag, index), init=True, detach=True)
            container.put_archive("/tmp", tar_of(FILES, scale))
            made.append(container)
        stopped = docker_client.containers.run(IMAGE, name="%s-stopped" % tag, init=True, detach=True)
        stopped.stop(timeout=1)
        made.append(stopped)
        made.append(docker_client.containers.run(IMAGE, name="monitor-t%s" % token, init=True, detach=True))
        yield tag, made
    finally:
        for container in made:
            container.remove(force=True)


def test_per_container_figures_match_what_was_written(workers):
    tag, made = workers
    result = ansible_module("rayops.disk.ray_tmp_usage", {"containers": True, "container_name_filter": tag})
    assert result.get("failed") is not True, result
    entries = {entry["name"]: entry for entry in result["containers"]}
    assert sorted(entries) == ["%s-1" % tag, "%s-2" % tag, "%s-stopped" % tag]  # not monitor-...
    for index, scale in ((1, 1), (2, 3)):
        entry = entries["%s-%d" % (tag, index)]
        container = made[index - 1]
        assert entry["status"] == "running" and entry["error"] is None
        assert entry["id"] == container.short_id
        assert entry["tmp_bytes"] == int(inside(container, "du", "-sk", "/tmp").split()[0]) * 1024
        cats = entry["categories"]
        assert cats["tmp_patterns"]["by_pattern"]["ray_tmp_*"]["apparent_bytes"] >= 300 * 1024 * scale
        assert cats["tmp_patterns"]["files"] == 3
        assert cats["spilled_objects"]["apparent_bytes"] >= 200 * 1024 * scale
        assert cats["spilled_objects"]["bytes"] == int(inside(
            container, "du", "-sk", "/tmp/ray/%s/ray_spilled_objects_n1" % SESSION).split()[0]) * 1024
        assert cats["logs_old"]["files"] == 1
        assert cats["other"]["files"] == 1
        assert [(s["name"], s["live"], s["path"]) for s in entry["sessions"]] == [
            (SESSION, False, "/tmp/ray/%s" % SESSION)]
        assert entry["node_role"] == "none"
    stopped = entries["%s-stopped" % tag]
    assert stopped["status"] == "exited" and stopped["tmp_bytes"] is None
    assert stopped["error"] is None  # not an error: its status says why it has no figures
    assert entries["%s-2" % tag]["tmp_bytes"] > entries["%s-1" % tag]["tmp_bytes"]


def test_check_mode_gives_the_same_container_figures(workers):
    tag, _made = workers
    args = {"containers": True, "container_name_filter": tag}
    real = ansible_module("rayops.disk.ray_tmp_usage", args)
    check = ansible_module("rayops.disk.ray_tmp_usage", args, check=True)
    assert check["changed"] is False and real["changed"] is False
    assert [(c["name"], c["tmp_bytes"]) for c in check["containers"]] == \
        [(c["name"], c["tmp_bytes"]) for c in real["containers"]]


def test_busy_and_idle_workers(docker_client):
    """One worker spins a core, one sleeps: only the first is busy, each with its CPU figure."""
    tag = "ray-worker-t%s" % uuid.uuid4().hex[:8]
    busy = docker_client.containers.run(IMAGE, ["sh", "-c", "while :; do :; done"], name=tag + "-busy",
                                        init=True, detach=True)
    idle = docker_client.containers.run(IMAGE, name=tag + "-idle", init=True, detach=True)
    try:
        result = ansible_module("rayops.disk.ray_tmp_usage", {"containers": True, "container_name_filter": tag,
                                                              "activity": True, "sample_seconds": 1})
    finally:
        busy.remove(force=True)
        idle.remove(force=True)
    activity = {entry["name"]: entry["activity"] for entry in result["containers"]}
    # the loop wants a whole core; it gets what the machine's other work leaves it
    assert activity[tag + "-busy"]["busy"] is True and activity[tag + "-busy"]["cpu_percent"] >= 20
    spinner = activity[tag + "-busy"]["counted"][0]  # the shell loop, seen from the host as the container's process
    assert spinner["title"] == "sh" and spinner["role"] == "other" and spinner["cpu_percent"] >= 20
    assert activity[tag + "-busy"]["reasons"] == ["CPU %.1f%% >= 5%% (sh %.1f%%)" % (
        activity[tag + "-busy"]["cpu_percent"], spinner["cpu_percent"])]
    assert activity[tag + "-idle"]["busy"] is False and activity[tag + "-idle"]["cpu_percent"] < 5
    assert result["activity"]["busy"] in (True, False)  # the host is sampled in the same window


# --- container_tmp_dir: the workers' /tmp apart from the host's tmp_dir --------------------------------------------

OLD = time.time() - 6 * 3600
HOST_LITTER = {"ray_tmp_host/pkg.zip": 64 * 1024, "pip-host/wheel": 16 * 1024, "keep-host/data": 4096,
               "ray/%s/logs/raylet.out" % SESSION: 8 * 1024}
WORKER_LITTER = {"ray_tmp_worker/pkg.zip": 32 * 1024, "tmpworker/x": 4096, "keep-worker/data": 4096,
                 "ray/%s/ray_spilled_objects_n1/obj" % SESSION: 20 * 1024}


def old_tar_of(files):
    """A tar of ``files`` with every directory in it, all 6 hours old (Docker restores the times after extracting)."""
    dirs = sorted({os.path.join(*path.split("/")[:depth]) for path in files for depth in range(1, path.count("/") + 1)})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in dirs:
            info = tarfile.TarInfo(path)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, OLD
            tar.addfile(info)
        for path, size in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime = size, OLD
            tar.addfile(info, io.BytesIO(b"w" * size))
    return buf.getvalue()


def old_tree(root, files):
    """``files`` written under ``root``, everything below ``root`` 6 hours old."""
    for path, size in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "wb") as handle:
            handle.write(b"h" * size)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (OLD, OLD))


def listing(container, path="/tmp"):
    """Every path below ``path`` in the container with its size, sorted: proof that nothing changed."""
    return sorted(inside(container, "find", path, "-exec", "stat", "-c", "%n %s %Y", "{}", "+").splitlines())


def host_listing(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            found.append("%s %d %d" % (os.path.join(dirpath, name), st.st_size, st.st_mtime))
    return sorted(found)


@pytest.fixture
def head_and_worker(docker_client):
    """The users' head: Ray on the host under a ".cache/tmp" dir, a worker container with its own /tmp litter."""
    base = tempfile.mkdtemp(prefix="rayops-ctd-", dir="/tmp")
    host_tmp = os.path.join(base, "home-cache-tmp")  # as /home/apiuser/.cache/tmp on the users' head
    old_tree(host_tmp, HOST_LITTER)
    tag = "ray-worker-d%s" % uuid.uuid4().hex[:8]
    worker = docker_client.containers.run(IMAGE, name=tag + "-1", init=True, detach=True)
    try:
        worker.put_archive("/tmp", old_tar_of(WORKER_LITTER))
        yield base, host_tmp, tag, worker
    finally:
        worker.remove(force=True)
        shutil.rmtree(base)


def test_one_cleanup_cleans_the_host_and_the_worker_each_in_its_own_tmp_dir(head_and_worker):
    base, host_tmp, tag, worker = head_and_worker
    # ray_temp_dir: never another Ray running on this machine. force: this machine's other work may make the
    # host busy; activity is not what this test is about. container_tmp_dir: its default, /tmp.
    args = {"tmp_dir": host_tmp, "ray_temp_dir": host_tmp + "/ray", "containers": True, "container_name_filter": tag,
            "min_tmp_size": "0", "max_age_hours": 1, "age_by": ["mtime"], "force": True, "sample_seconds": 1,
            "lock_file": os.path.join(base, "cleanup.lock")}
    usage = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": host_tmp, "ray_temp_dir": host_tmp + "/ray",
                                                         "uv_cache_dir": base + "/no-uv", "containers": True,
                                                         "container_name_filter": tag})
    assert usage.get("failed") is not True, usage
    entry, = usage["containers"]
    assert (usage["tmp_dir"], entry["tmp_dir"]) == (host_tmp, "/tmp")  # each side its own
    assert usage["tmp_bytes"] == du_bytes(host_tmp)
    assert entry["tmp_bytes"] == int(inside(worker, "du", "-sk", "/tmp").split()[0]) * 1024
    assert entry["filesystem"]["path"] == "/tmp" and usage["filesystem"]["path"] == host_tmp
    assert [s["path"] for s in usage["sessions"]] == ["%s/ray/%s" % (host_tmp, SESSION)]
    assert [s["path"] for s in entry["sessions"]] == ["/tmp/ray/%s" % SESSION]  # Ray's default root in the worker
    assert entry["categories"]["tmp_patterns"]["by_pattern"]["ray_tmp_*"]["bytes"] == \
        int(inside(worker, "du", "-sk", "/tmp/ray_tmp_worker").split()[0]) * 1024
    assert usage["categories"]["tmp_patterns"]["by_pattern"]["ray_tmp_*"]["bytes"] == \
        du_bytes(host_tmp + "/ray_tmp_host")
    assert entry["categories"]["tmp_patterns"]["by_pattern"]["pip-*"]["files"] == 0  # pip-host is the host's

    host_before, worker_before = host_listing(host_tmp), listing(worker)
    check = ansible_module("rayops.disk.ray_worker_cleanup", args, check=True)
    assert check.get("failed") is not True, check
    assert (host_listing(host_tmp), listing(worker)) == (host_before, worker_before)  # the dry run changed nothing
    real = ansible_module("rayops.disk.ray_worker_cleanup", args)
    assert real.get("failed") is not True, real

    host, cleaned = real["targets"]
    assert (host["name"], host["status"], host["tmp_dir"]) == ("host", "cleaned", host_tmp)
    assert (cleaned["name"], cleaned["status"], cleaned["tmp_dir"]) == (tag + "-1", "cleaned", "/tmp")
    assert sorted(os.listdir(host_tmp)) == ["keep-host", "ray"] and os.listdir(host_tmp + "/ray") == []
    assert inside(worker, "ls", "/tmp").split() == ["keep-worker", "ray"]
    assert inside(worker, "ls", "-A", "/tmp/ray").split() == []
    assert all(p.startswith(host_tmp + "/") for p in host["removed_paths"])
    assert all(p.startswith("/tmp/") for p in cleaned["removed_paths"])  # as the worker names them
    assert {"/tmp/ray_tmp_worker", "/tmp/tmpworker", "/tmp/ray/" + SESSION} <= set(cleaned["removed_paths"])
    root = [r for r in cleaned["roots"] if r["path"] == "/tmp"]
    assert len(root) == 1 and root[0]["host_path"].endswith("/tmp") and not root[0]["host_path"].startswith(base)
    assert host["freed_bytes"] >= (64 + 16 + 8) * 1024 and cleaned["freed_bytes"] >= (32 + 4 + 20) * 1024
    assert [(t["name"], t["tmp_dir"], sorted(t["removed_paths"]), t["freed_bytes"]) for t in check["targets"]] == \
        [(t["name"], t["tmp_dir"], sorted(t["removed_paths"]), t["freed_bytes"]) for t in real["targets"]]
    assert check["changed"] is real["changed"] is True
    again = ansible_module("rayops.disk.ray_worker_cleanup", args)
    assert again["changed"] is False and [t["removed"] for t in again["targets"]] == [0, 0]


def test_a_container_tmp_on_a_volume_is_named_by_its_real_host_path(docker_client, tmp_path):
    """A worker whose /tmp is a volume (a bind of a host dir): the audit names the host dir the file was in."""
    volume = tmp_path / "worker-tmp"
    volume.mkdir()
    litter = volume / "ray_tmp_old"
    litter.write_bytes(b"x" * 8192)
    os.utime(litter, (1_000_000_000, 1_000_000_000))
    audit = tmp_path / "audit.jsonl"
    name = "ray-worker-vol%s" % uuid.uuid4().hex[:8]
    worker = docker_client.containers.run(IMAGE, name=name, init=True, detach=True,
                                          volumes={str(volume): {"bind": "/tmp", "mode": "rw"}})
    try:
        result = ansible_module("rayops.disk.ray_worker_cleanup", {
            "tmp_dir": str(tmp_path), "host": False, "containers": True, "container_name_filter": name,
            "min_tmp_size": "0", "max_age_hours": 1, "age_by": ["mtime"], "audit_log": str(audit),
            "lock_file": str(tmp_path / "lock")})
    finally:
        worker.remove(force=True)
    entry = result["targets"][0]
    assert entry["status"] == "cleaned" and entry["removed_paths"] == ["/tmp/ray_tmp_old"], entry
    assert not litter.exists()
    assert {root["path"]: root["host_path"] for root in entry["roots"]}["/tmp"] == str(volume)
    line = json.loads(audit.read_text().splitlines()[0])
    assert (line["path"], line["host_path"]) == ("/tmp/ray_tmp_old", str(volume / "ray_tmp_old"))
