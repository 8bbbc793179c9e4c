# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A worker container is still reclaimed under the guard unit's sandbox (issue 18), on real Docker.

The guard runs with ``ProtectSystem=strict`` and ``ReadWritePaths=`` for what it writes
(roles/ray_cleanup/templates/ray-maintenance-guard.service.j2). No Docker runs inside the live-systemd test
container, so this test reproduces the unit's mount namespace instead: ``unshare --mount``, every mount but the API
file systems (/proc, /sys, /dev) remounted read-only, then the ReadWritePaths (the host tmp dir, the log dir, the
metrics dir, the lock dir) bound writable again. In it the real ``ray-maintenance cleanup --pressure`` runs against
a real container whose 16 MiB /tmp is full: the container's old litter goes, its live session stays.

It works because ``/proc/<pid>/root`` of the container's init resolves in the container's own mount namespace: the
read-only remounts are mount objects of the sandbox's namespace, the container's root and its /tmp tmpfs are not.
The test also proves the sandbox is real (a write outside the ReadWritePaths gets EROFS) and leaves no mount on the
host.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import WORKER_LIVE as LIVE
from ansible_collections.rayops.disk.tests.system.conftest import full_worker as full_worker_container
from ansible_collections.rayops.disk.tests.system.conftest import sh

PROBE = "/var/tmp/rayops-sbx-probe"
CLI = ("import sys; from ansible_collections.rayops.disk.plugins.module_utils._cli import main; "
       "sys.exit(main(sys.argv[1:]))")

SANDBOX = r"""
mount --make-rslave /
# ProtectSystem=strict: every mount read-only (a bind remount: the mount, not its filesystem, so the host keeps rw),
# but the API file systems; each submount on its own (a recursive bind would not make them read-only)
mounts=$(cat /proc/self/mountinfo)  # listed before any remount
printf '%s\n' "$mounts" | while read -r _id _parent _dev _root point options _rest; do
    point=$(printf '%b' "$point")
    case "$point" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
    case ",$options," in *,ro,*) continue ;; esac
    if ! mount -o remount,bind,ro "$point" && mountpoint -q "$point"; then  # (not: unmounted meanwhile)
        echo "SANDBOX cannot make $point read-only" >&2
        exit 90
    fi
done
for path in {rw}; do  # ReadWritePaths=
    mount --bind "$path" "$path"
    mount -o remount,bind,rw "$path"
done
{python} -c {probe} {probe_path} >&2
code=0
"$@" || code=$?
echo usable > {host_tmp}/after-run  # the host tmp dir, in ReadWritePaths, still takes writes
exit $code
"""
"""Runs ``"$@"`` in a reproduction of the unit's mount namespace (under ``unshare --mount``)."""

PROBE_CODE = """import errno, os, sys
try:
    os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600))
    print("PROBE written")
except OSError as exc:
    print("PROBE", errno.errorcode[exc.errno])
"""


def mounts_under(path):
    """Mount points of this (the host's) namespace at or below ``path``."""
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return sorted(point for point in points if point == path or point.startswith(path + "/"))


@pytest.fixture
def full_worker(docker_client):
    """A ray-worker container: a live fake raylet, old root-owned litter, its own 16 MiB /tmp filled to the brim."""
    with full_worker_container(docker_client, "sbx") as container:
        yield container


@pytest.fixture
def guard_paths(tmp_path):
    """The unit's ReadWritePaths, each under ``tmp_path`` (the rest of it, the config too, is read-only in there)."""
    paths = {name: tmp_path / name for name in ("host-tmp", "log", "metrics", "lock")}
    for path in paths.values():
        path.mkdir()
    return paths


def write_config(tmp_path, paths, container_name):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "tmp_dir": str(paths["host-tmp"]), "containers": True, "container_name_filter": container_name,
        "age_by": ["mtime"], "lock_file": str(paths["lock"] / "ray-cleanup.lock"), "lock_timeout": 0,
        "log_file": str(paths["log"] / "ray-maintenance.log"), "audit_log": str(paths["log"] / "audit.jsonl"),
        "metrics_dir": str(paths["metrics"]), "sample_seconds": 0.2, "scan_workers": 1, "docker_prune": False}))
    return config


def run_in_sandbox(paths, argv):
    """``argv`` in a new mount namespace shaped as the unit's sandbox: ``(exit code, stdout, stderr)``."""
    script = SANDBOX.format(rw=" ".join(shlex.quote(str(path)) for path in paths.values()),
                            python=shlex.quote(sys.executable), probe=shlex.quote(PROBE_CODE),
                            probe_path=shlex.quote(PROBE), host_tmp=shlex.quote(str(paths["host-tmp"])))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "slave", "sh", "-ec", script, "sandbox"] + argv,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_a_container_is_reclaimed_under_the_units_sandbox(tmp_path, guard_paths, full_worker):
    """The container's old litter goes, its live session and data stay, the audit log names what went."""
    mounts_before = mounts_under(str(tmp_path))
    config = write_config(tmp_path, guard_paths, full_worker.name)
    argv = [sys.executable, "-c", CLI, "--config", str(config), "--json", "cleanup", "--pressure"]
    try:
        code, out, err = run_in_sandbox(guard_paths, argv)
        probe_written = os.path.lexists(PROBE)
    finally:
        if os.path.lexists(PROBE):
            os.unlink(PROBE)
    # the sandbox is real: outside the ReadWritePaths nothing is written
    assert "PROBE EROFS" in err.splitlines() and not probe_written, err
    # the guard ran through, and reached into the container from there
    assert code in (0, 1) and "Traceback" not in out + err, (code, out, err)
    result = json.loads(out)
    targets = {entry["name"]: entry for entry in result.get("targets", [])}
    assert full_worker.name in targets, (out, err)
    target = targets[full_worker.name]
    assert target["status"] == "cleaned", target["reason"]  # not "process ... of the container is not visible here"
    removed = [path for group in target["groups"] for path in group["removed_paths"]]
    assert "/tmp/ray_tmp_1" in removed, target
    assert sh(full_worker, "ls /tmp").split() == ["data", "ray"]
    assert sh(full_worker, "ls /tmp/ray").split() == [LIVE]
    audit = [json.loads(line) for line in (guard_paths["log"] / "audit.jsonl").read_text().splitlines()]
    assert [(line["target"], line["path"]) for line in audit] == [(full_worker.name, "/tmp/ray_tmp_1")], audit
    assert audit[0]["reason"].startswith("under pressure, tier ")
    # what the unit may write stays writable: the log, the host tmp dir
    assert (guard_paths["log"] / "ray-maintenance.log").read_text().strip()
    assert (guard_paths["host-tmp"] / "after-run").read_text() == "usable\n"
    # the namespace went with its process: nothing is left mounted on the host
    assert mounts_under(str(tmp_path)) == mounts_before == []
