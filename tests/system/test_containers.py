# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_tmp_usage on real Ray worker containers (a local busybox image, no registry)."""

from __future__ import annotations

import io
import tarfile
import uuid

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import ansible_module

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
    assert activity[tag + "-busy"]["busy"] is True and activity[tag + "-busy"]["cpu_percent"] >= 50
    assert activity[tag + "-busy"]["reasons"] == ["CPU %.1f%% >= 5%%" % activity[tag + "-busy"]["cpu_percent"]]
    assert activity[tag + "-idle"]["busy"] is False and activity[tag + "-idle"]["cpu_percent"] < 5
    assert result["activity"]["busy"] in (True, False)  # the host is sampled in the same window
