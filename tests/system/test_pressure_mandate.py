# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A worker container's own pressure stays in that container (issue 18, finding 3), within the guard's mandate, on
real Docker.

The container has a small tmpfs of its own at ``/tmp``, a process that passes every trust check a container's
root can satisfy (root inside, a program at Ray's path) naming ``/tmp/ray`` as its Ray root, and fills it.  Before,
the reclaim planned a node-wide ``docker prune`` for it (a filesystem Docker does not even use); now the container
is reclaimed in the container, and ``docker_prune`` runs only when Docker's data root is on a pressed filesystem of
the host.  Every prune here is a dry run (``client.df()``): this machine's Docker is never pruned by a test.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _cli
from ansible_collections.rayops.disk.tests.system.conftest import full_worker as full_worker_container
from ansible_collections.rayops.disk.tests.system.conftest import sh

OTHER_UIDS = """
    mkdir -p /tmp/ray_tmp_u1000 /tmp/tmpjob_u2000
    head -c 262144 /dev/zero > /tmp/ray_tmp_u1000/pkg.zip
    head -c 262144 /dev/zero > /tmp/tmpjob_u2000/data
    chown -R 1000:1000 /tmp/ray_tmp_u1000
    chown -R 2000:2000 /tmp/tmpjob_u2000
"""
"""Litter of the Ray user of rayproject images (uid 1000) and of another uid, in the container."""


@pytest.fixture
def full_worker(docker_client):
    """A ray-worker container whose own 16 MiB /tmp is full: a little old litter of root, of uid 1000 and of uid
    2000, then data to the brim (the reclaim cannot relieve it: every tier runs)."""
    with full_worker_container(docker_client, "prs", more=OTHER_UIDS) as container:
        yield container


def reclaim(capsys, tmp_path, *flags, **settings):
    """``ray-maintenance --json cleanup --pressure FLAGS`` with a config of ``settings``: ``(exit code, result)``."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict({
        "tmp_dir": str(tmp_path / "host-tmp"), "lock_file": str(tmp_path / "lock"), "lock_timeout": 0,
        "age_by": ["mtime"], "sample_seconds": 0.2, "scan_workers": 1, "docker_prune": True}, **settings)))
    (tmp_path / "host-tmp").mkdir(exist_ok=True)
    code = _cli.main(["--config", str(config), "--json", "cleanup", "--pressure"] + list(flags))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, json.loads(out)


def test_a_containers_full_tmpfs_never_prunes_the_node_and_is_reclaimed_in_the_container(
        capsys, tmp_path, full_worker):
    settings = {"containers": True, "container_name_filter": full_worker.name}
    code, result = reclaim(capsys, tmp_path, "--dry-run", **settings)
    tiers = {tier["tier"]: tier for tier in result["pressure"]["tiers"]}
    assert result["pressure"]["trigger"][0].startswith("%s /tmp 100" % full_worker.name), result["pressure"]
    assert result["docker_prune"] is None and tiers["docker_prune"]["targets"] == []
    assert tiers["docker_prune"]["skipped"] == ("no filesystem of the host itself is pressed (a container's pressure "
                                                "never prunes the node)")
    assert tiers["litter_idle"]["targets"] == [full_worker.name] and tiers["litter_idle"]["freed_bytes"] >= 1 << 20
    # for real, without docker_prune (a test never prunes this machine's Docker): the container's own litter goes,
    # within the same mandate as on the host - root's and ray_users' (uid 1000: the Ray user of rayproject images)
    code, result = reclaim(capsys, tmp_path, docker_prune=False, ray_users=["1000"], **settings)
    worker = result["targets"][1]
    assert {"/tmp/ray_tmp_1", "/tmp/ray_tmp_u1000"} <= set(worker["removed_paths"]), result["targets"]
    assert sh(full_worker, "ls /tmp").split() == ["data", "ray", "tmpjob_u2000"]  # uid 2000: not the worker's Ray
    assert worker["kept_by_reason"] == {"other_user": 1}
    assert result["targets"][0]["name"] == "host" and result["targets"][0]["status"] == "skipped_below_threshold"
    held = result["pressure"]["held"][0]
    assert held["target"] == full_worker.name and held["paths"][0]["path"] == "/tmp/data"


def test_docker_prune_runs_when_dockers_data_root_is_on_the_pressed_host_filesystem(capsys, tmp_path, docker_client):
    """The tier still serves the node's own disk: marks below this machine's use of ``/`` (where Docker keeps its
    data here) press it; the prune is a dry run."""
    root = docker_client.info()["DockerRootDir"]
    code, result = reclaim(capsys, tmp_path, "--dry-run", containers=False, pressure_high_percent=2,
                           pressure_inodes_high_percent=2, pressure_low_percent=1)
    tiers = {tier["tier"]: tier for tier in result["pressure"]["tiers"]}
    assert tiers["docker_prune"]["skipped"] is None, (root, tiers["docker_prune"])
    assert tiers["docker_prune"]["targets"] == ["docker"] and result["docker_prune"]["error"] is None
