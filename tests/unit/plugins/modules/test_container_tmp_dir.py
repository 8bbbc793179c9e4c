# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_tmp_dir: the containers' temp dir, apart from the host's tmp_dir, through main() and the CLI.

The users' head: Ray on the host lives under /home/apiuser/.cache/tmp, Ray in the worker containers under /tmp.
Here the host's tmp_dir is a test dir named like that, and each "container" is a process of this test in a mount
namespace of its own (``unshare -m``) whose /tmp is a bind mount of another test dir: the module reaches it through
``/proc/<pid>/root/tmp`` exactly as a Docker container's. A fake Docker SDK lists those processes as containers;
real Docker containers are in tests/system/test_containers.py. The host's own /tmp is never a target.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _cli
from ansible_collections.rayops.disk.plugins.modules import ray_tmp_usage, ray_worker_cleanup
from ansible_collections.rayops.disk.tests.unit.conftest import aged, du_bytes, tree_digest, write
from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import fail_module

STALE = "session_2026-11-20_10-00-00_000001_11"
HOST_LITTER = {"ray_tmp_host/pkg.zip": 65536, "pip-host/wheel": 16384, "unrelated-host/data": 4096,
               "ray/%s/logs/raylet.out" % STALE: 8192}
CONTAINER_LITTER = {"ray_tmp_worker/pkg.zip": 32768, "tmpworker/x": 4096, "unrelated-worker/data": 4096,
                    "ray/%s/ray_spilled_objects_n/obj" % STALE: 20480}


class FakeContainer:
    """What the modules read of a Docker SDK container; its "id" is its cgroup, which Docker's is part of."""

    def __init__(self, name, pid, status="running"):
        self.name = name
        self.status = status
        self.attrs = {"State": {"Pid": pid}, "Config": {"Env": ["PATH=/usr/bin:/bin"]}}
        with open("/proc/%d/cgroup" % pid) as handle:
            self.id = handle.read().strip()
        self.short_id = "fake%08x" % pid

    def reload(self):
        """Docker's view does not change."""


class FakeDocker:
    """The Docker SDK as the modules use it: a client that answers ping and lists containers by name."""

    def __init__(self, containers):
        self.listed = containers
        self.containers = self

    def from_env(self, timeout=None):
        return self

    def DockerClient(self, base_url=None, timeout=None):  # noqa: N802 (the SDK's name)
        return self

    def ping(self):
        return True

    def list(self, all=False, filters=None):  # noqa: A002 (the SDK's name)
        return [c for c in self.listed if (filters or {}).get("name", "") in c.name]


def mnt_ns(pid):
    return os.readlink("/proc/%d/ns/mnt" % pid)


class Workers:
    """Processes standing in for worker containers: each in its own mount namespace, its /tmp a test dir."""

    def __init__(self):
        self.procs = []

    def start(self, name, tmp):
        """A "container" whose /tmp is ``tmp``."""
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 'mount --bind "$1" /tmp && exec sleep 600', "sh", str(tmp)])
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while True:  # the bind mount is made and sleep runs in the new namespace
            with open("/proc/%d/comm" % proc.pid) as handle:
                if handle.read().strip() == "sleep" and mnt_ns(proc.pid) != mnt_ns(os.getpid()):
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "the fake container did not start"
            time.sleep(0.02)
        return FakeContainer(name, proc.pid)

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def litter(root, files):
    for path, size in files.items():
        write(str(root / path), size)
    aged(str(root))  # 3 hours old


@pytest.fixture
def node(monkeypatch):
    """``(base, host_tmp, worker_tmp, docker)``: the host's tmp dir and one worker whose /tmp is ``worker_tmp``.

    Short and under /tmp, as the other module tests.
    """
    base = pathlib.Path(tempfile.mkdtemp(prefix="ctd", dir="/tmp"))
    host_tmp = base / "home-cache-tmp"  # where the users' head keeps Ray: /home/apiuser/.cache/tmp
    worker_tmp = base / "worker-tmp"    # the worker's /tmp
    litter(host_tmp, HOST_LITTER)
    litter(worker_tmp, CONTAINER_LITTER)
    workers = Workers()
    try:
        docker = FakeDocker([workers.start("ray-worker-ctd-1", worker_tmp)])
        monkeypatch.setattr(ray_worker_cleanup, "docker", docker)
        monkeypatch.setattr(ray_tmp_usage, "docker", docker)
        monkeypatch.setattr(_cli, "docker", docker)
        yield base, host_tmp, worker_tmp, docker
    finally:
        workers.stop()
        shutil.rmtree(base)
        if os.path.exists(str(base) + ".lock"):  # the lock a cleanup took, beside the tree it compares
            os.unlink(str(base) + ".lock")


def entries_removed(target, root):
    """What a target removed directly in ``root`` and in ``root``/ray (the files inside them are listed too)."""
    return sorted(p for p in target["removed_paths"] if os.path.dirname(p) in (root, root + "/ray"))


def cleanup_args(base, host_tmp, **extra):
    # force: the host's activity (other Ray runs on this machine) is not what these tests are about.
    args = {"tmp_dir": str(host_tmp), "ray_temp_dir": str(host_tmp / "ray"), "containers": True,
            "container_name_filter": "ray-worker-ctd", "min_tmp_size": "0", "max_age_hours": 1, "age_by": ["mtime"],
            "lock_file": str(base) + ".lock", "sample_seconds": 0.2, "force": True}
    args.update(extra)
    return args


def usage_args(host_tmp, **extra):
    args = {"tmp_dir": str(host_tmp), "ray_temp_dir": str(host_tmp / "ray"), "uv_cache_dir": str(host_tmp / "no-uv"),
            "containers": True, "container_name_filter": "ray-worker-ctd", "scan_workers": 1}
    args.update(extra)
    return args


def test_one_cleanup_cleans_the_host_and_the_worker_each_in_its_own_tmp_dir(run_module, node):
    base, host_tmp, worker_tmp, _docker = node
    args = cleanup_args(base, host_tmp)  # container_tmp_dir: its default, /tmp
    before = tree_digest(str(base))
    check = run_module(ray_worker_cleanup.main, args, check_mode=True)
    assert tree_digest(str(base)) == before  # check mode changed nothing, on either side
    real = run_module(ray_worker_cleanup.main, args)
    again = run_module(ray_worker_cleanup.main, args)

    host, worker = real["targets"]
    assert (host["name"], host["kind"], host["status"]) == ("host", "host", "cleaned")
    assert (worker["name"], worker["kind"], worker["status"]) == ("ray-worker-ctd-1", "container", "cleaned")
    assert host["tmp_dir"] == str(host_tmp) and worker["tmp_dir"] == "/tmp"
    assert entries_removed(host, str(host_tmp)) == ["%s/pip-host" % host_tmp, "%s/ray/%s" % (host_tmp, STALE),
                                                    "%s/ray_tmp_host" % host_tmp]
    assert all(p.startswith("%s/" % host_tmp) for p in host["removed_paths"])
    # The worker's own litter, named as the worker sees it, and its stale session in /tmp/ray: Ray's default
    # temp root inside the container is <container_tmp_dir>/ray.
    assert entries_removed(worker, "/tmp") == ["/tmp/ray/%s" % STALE, "/tmp/ray_tmp_worker", "/tmp/tmpworker"]
    assert all(p.startswith("/tmp/") for p in worker["removed_paths"])
    assert all(root["path"].startswith("/tmp") for root in worker["roots"])  # (its host_path: the system tests)
    assert sorted(os.listdir(host_tmp)) == ["ray", "unrelated-host"]
    assert sorted(os.listdir(worker_tmp)) == ["ray", "unrelated-worker"]
    assert os.listdir(host_tmp / "ray") == [] and os.listdir(worker_tmp / "ray") == []
    assert worker["freed_bytes"] >= 32768 + 4096 + 20480 and host["freed_bytes"] >= 65536 + 16384 + 8192
    assert worker["tmp_bytes_before"] == worker["tmp_bytes_after"] + worker["freed_bytes"]

    assert check["changed"] is real["changed"] is True and again["changed"] is False
    assert [(t["name"], t["tmp_dir"], t["removed_paths"], t["freed_bytes"]) for t in check["targets"]] == \
        [(t["name"], t["tmp_dir"], t["removed_paths"], t["freed_bytes"]) for t in real["targets"]]
    assert [t["removed"] for t in again["targets"]] == [0, 0]


def test_usage_reports_each_side_in_its_own_tmp_dir(run_module, node):
    base, host_tmp, worker_tmp, _docker = node
    before = tree_digest(str(base))
    rules = {"min_tmp_size": "0", "max_age_hours": 1, "age_by": ["mtime"]}
    result = run_module(ray_tmp_usage.main, usage_args(host_tmp, container_tmp_dir="/tmp", **rules))
    assert tree_digest(str(base)) == before
    assert result["tmp_dir"] == str(host_tmp) and result["tmp_bytes"] == du_bytes(str(host_tmp))
    assert result["filesystem"]["path"] == str(host_tmp)
    worker, = result["containers"]
    assert worker["error"] is None and worker["tmp_dir"] == "/tmp"
    assert worker["tmp_bytes"] == du_bytes(str(worker_tmp))
    assert worker["filesystem"]["path"] == "/tmp"
    assert [(s["path"], s["live"]) for s in worker["sessions"]] == [("/tmp/ray/%s" % STALE, False)]
    assert worker["categories"]["tmp_patterns"]["by_pattern"]["ray_tmp_*"]["bytes"] == \
        du_bytes(str(worker_tmp / "ray_tmp_worker"))
    assert worker["categories"]["tmp_patterns"]["by_pattern"]["pip-*"]["files"] == 0  # the host's pip-host
    assert result["categories"]["tmp_patterns"]["by_pattern"]["ray_tmp_*"]["bytes"] == \
        du_bytes(str(host_tmp / "ray_tmp_host"))
    # What a cleanup would take from the worker, named as the worker sees it (its own /tmp).
    assert [s["paths"] for s in worker["suggestions"] if s["action"] == "clean_tmp_patterns"] == [
        ["/tmp/ray_tmp_worker", "/tmp/tmpworker"]]


def test_the_size_gate_measures_each_target_in_its_own_tmp_dir(run_module, node):
    base, host_tmp, _worker_tmp, _docker = node
    before = tree_digest(str(base))
    result = run_module(ray_worker_cleanup.main, cleanup_args(base, host_tmp, min_tmp_size="1TB"))
    host, worker = result["targets"]
    assert (host["status"], worker["status"]) == ("skipped_below_threshold", "skipped_below_threshold")
    assert host["reason"].endswith("in %s, below min_tmp_size 1.0 TiB" % host_tmp)
    assert worker["reason"].endswith("in /tmp, below min_tmp_size 1.0 TiB")
    assert tree_digest(str(base)) == before


def test_a_container_without_container_tmp_dir_is_its_own_error_not_a_failed_run(run_module, node):
    base, host_tmp, worker_tmp, docker = node
    os.makedirs(worker_tmp / "work")
    write(str(worker_tmp / "work" / "ray_tmp_w" / "pkg.zip"), 8192)
    aged(str(worker_tmp / "work"))
    bare = base / "bare-tmp"  # a second worker whose /tmp has no work dir
    bare.mkdir()
    workers = Workers()
    try:
        docker.listed.append(workers.start("ray-worker-ctd-2", bare))
        args = cleanup_args(base, host_tmp, container_tmp_dir="/tmp/work")
        usage = run_module(ray_tmp_usage.main, usage_args(host_tmp, container_tmp_dir="/tmp/work"))
        result = run_module(ray_worker_cleanup.main, args)
    finally:
        workers.stop()
    missing = "container_tmp_dir /tmp/work (in container ray-worker-ctd-2) does not exist; create it or give " \
              "the temp directory Ray uses"
    entries = {entry["name"]: entry for entry in usage["containers"]}
    assert entries["ray-worker-ctd-2"]["error"] == missing and entries["ray-worker-ctd-2"]["tmp_bytes"] is None
    assert entries["ray-worker-ctd-2"]["tmp_dir"] == "/tmp/work"
    assert entries["ray-worker-ctd-1"]["error"] is None and entries["ray-worker-ctd-1"]["tmp_dir"] == "/tmp/work"
    assert usage.get("failed") is not True

    assert result.get("failed") is not True and result["status"] == "done"
    host, worker, bare_worker = result["targets"]
    assert (bare_worker["name"], bare_worker["status"], bare_worker["reason"]) == (
        "ray-worker-ctd-2", "error", missing)
    assert bare_worker["tmp_dir"] == "/tmp/work" and bare_worker["removed"] == 0
    assert (host["status"], worker["status"]) == ("cleaned", "cleaned")  # the others are still cleaned
    assert sorted(worker["removed_paths"]) == ["/tmp/work/ray_tmp_w", "/tmp/work/ray_tmp_w/pkg.zip"]  # only there
    assert sorted(os.listdir(worker_tmp)) == sorted(["ray", "ray_tmp_worker", "tmpworker", "unrelated-worker",
                                                     "work"])
    assert os.listdir(bare) == []


@pytest.mark.parametrize("value, message", [
    ("tmp", "container_tmp_dir 'tmp' is not an absolute path; give the full path as the containers see it, "
            "for example /tmp"),
    ("", "container_tmp_dir '' is not an absolute path"),
    ("~/tmp", "container_tmp_dir '~/tmp' is not an absolute path"),  # never expanded on the host
    ("/", "container_tmp_dir '/' is the root of the containers' filesystem; give their temp directory, for example "
          "/tmp"),
    ("//", "container_tmp_dir '//' is the root of the containers' filesystem"),
    ("/tmp/..", "container_tmp_dir '/tmp/..' is the root of the containers' filesystem"),
])
def test_bad_container_tmp_dir_fails_naming_it_before_anything_is_touched(run_module, node, value, message):
    base, host_tmp, _worker_tmp, _docker = node
    before = tree_digest(str(base))
    for main, args in ((ray_worker_cleanup.main, cleanup_args(base, host_tmp, container_tmp_dir=value)),
                       (ray_tmp_usage.main, usage_args(host_tmp, container_tmp_dir=value))):
        result = fail_module(main, args)
        assert result["msg"].startswith(message), result["msg"]
    assert tree_digest(str(base)) == before
    assert not os.path.exists(str(base) + ".lock")  # failed before the lock


def test_the_host_tmp_dir_cannot_be_the_root_through_a_double_slash(run_module, node):
    base, host_tmp, _worker_tmp, _docker = node
    before = tree_digest(str(base))
    for value in ("//", "//tmp/.."):
        result = fail_module(ray_worker_cleanup.main, cleanup_args(base, host_tmp, tmp_dir=value, containers=False))
        assert result["msg"] == "tmp_dir %r is the root of the filesystem; give the temp directory, for example " \
                                "/tmp" % value
        result = fail_module(ray_tmp_usage.main, usage_args(host_tmp, ray_temp_dir=value, containers=False))
        assert result["msg"].startswith("ray_temp_dir %r would measure the whole filesystem" % value)
    assert tree_digest(str(base)) == before


def test_cli_config_takes_container_tmp_dir(node, capsys, tmp_path):
    base, host_tmp, worker_tmp, _docker = node
    config = tmp_path / "ray-maintenance.json"
    settings = {"tmp_dir": str(host_tmp), "ray_temp_dir": str(host_tmp / "ray"), "containers": True,
                "container_name_filter": "ray-worker-ctd", "container_tmp_dir": "/tmp", "min_tmp_size": 0,
                "max_age_hours": 1, "age_by": ["mtime"], "lock_file": str(base) + ".lock", "sample_seconds": 0.2,
                "force": True, "uv_cache_dir": str(host_tmp / "no-uv")}
    config.write_text(json.dumps(settings))
    before = tree_digest(str(base))
    assert _cli.main(["--config", str(config), "--json", "cleanup", "--dry-run"]) == 0
    assert tree_digest(str(base)) == before
    result = json.loads(capsys.readouterr().out)
    host, worker = result["targets"]
    assert (host["name"], host["tmp_dir"], worker["name"], worker["tmp_dir"]) == (
        "host", str(host_tmp), "ray-worker-ctd-1", "/tmp")
    assert entries_removed(host, str(host_tmp)) == ["%s/pip-host" % host_tmp, "%s/ray/%s" % (host_tmp, STALE),
                                                    "%s/ray_tmp_host" % host_tmp]
    assert entries_removed(worker, "/tmp") == ["/tmp/ray/%s" % STALE, "/tmp/ray_tmp_worker", "/tmp/tmpworker"]
    assert _cli.main(["--config", str(config), "--json", "monitor"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["tmp_dir"], report["containers"][0]["tmp_dir"]) == (str(host_tmp), "/tmp")
    assert report["containers"][0]["tmp_bytes"] == du_bytes(str(worker_tmp))

    for value, said in ((5, 'container_tmp_dir 5 is not a string; for example "container_tmp_dir": "/tmp"'),
                        ("/", "container_tmp_dir '/' is the root of the containers' filesystem")):
        config.write_text(json.dumps(dict(settings, container_tmp_dir=value)))
        assert _cli.main(["--config", str(config), "cleanup"]) == 3
        assert said in capsys.readouterr().err
    assert tree_digest(str(base)) == before
