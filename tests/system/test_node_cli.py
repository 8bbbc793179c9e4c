# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ray-maintenance`` installed as the role installs it, run as a subprocess; on real Docker containers too.

The module_utils files are built into one zipapp in a lib dir (``ray-maintenance.pyz``, by the role's own
``files/build_ray_maintenance_pyz.py``) behind the role's wrapper script, and run without the repository or
Ansible on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import REPO, run_ansible
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.conftest import promtool_check, samples

IMAGE = "rayops-test/busybox:latest"
BUILD = os.path.join(REPO, "roles", "ray_cleanup", "files", "build_ray_maintenance_pyz.py")
TEMPLATE = os.path.join(REPO, "roles", "ray_cleanup", "templates", "ray-maintenance.j2")


def install(where, venv):
    """The CLI as the role installs it: module_utils in one zipapp in a lib dir, and the role's own wrapper,
    rendered by Ansible.

    The wrapper runs ``<venv>/bin/python``, as with ``ray_cleanup_install_method: venv``.
    """
    lib = os.path.join(str(where), "lib")
    os.makedirs(lib)
    subprocess.run([sys.executable, BUILD, REPO, lib], check=True, capture_output=True, timeout=120)
    wrapper = os.path.join(str(where), "ray-maintenance")
    variables = {"ray_cleanup_install_method": "venv", "ray_cleanup_venv_path": str(venv), "ray_cleanup_lib_dir": lib,
                 "_ray_cleanup_cli_version": "rayops.disk ray-maintenance.pyz (a test build)"}
    proc = run_ansible("ansible", "localhost", "-m", "ansible.builtin.template", "-a",
                       json.dumps({"src": TEMPLATE, "dest": wrapper, "mode": "0755"}), "-e", json.dumps(variables))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return wrapper


@pytest.fixture
def installed(tmp_path):
    """The installed CLI, run by this test run's venv (psutil and docker present)."""
    return install(tmp_path / "node", sys.prefix)


def run(wrapper, *args):
    """Run the installed CLI; the environment has no PYTHONPATH (nothing from the repo)."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "RAY_MAINTENANCE_CONFIG")}
    proc = subprocess.run([wrapper] + list(args), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def metrics_of(path):
    """``{(name, frozenset(labels)): value}`` of a metrics file that promtool accepts."""
    with open(path) as handle:
        text = handle.read()
    promtool_check(text)
    return {(name, labels): value for name, found in samples(text).items() for labels, value in found.items()}


def write_config(where, **settings):
    path = os.path.join(str(where), "ray-maintenance.json")
    with open(path, "w") as handle:
        json.dump(settings, handle)
    return path


def test_help_and_bad_input_exit_codes(installed):
    proc = run(installed, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ray-maintenance ")
    assert "exit codes:" in proc.stdout
    proc = run(installed, "check", "--bogus")
    assert proc.returncode == 3 and "unrecognized arguments: --bogus" in proc.stderr


def test_nothing_is_imported_from_the_current_directory(installed, tmp_path):
    """Root runs it from /tmp, where anyone may plant ``json.py``: the wrapper runs Python isolated (-I)."""
    trap = tmp_path / "cwd"
    trap.mkdir()
    for name in ("json", "argparse", "logging", "dataclasses"):
        (trap / (name + ".py")).write_text("raise SystemExit('planted %s imported')\n" % name)
    env = dict(os.environ, PYTHONPATH=str(trap))
    proc = subprocess.run([installed, "--help"], cwd=str(trap), env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout.startswith("usage: ray-maintenance ")


def test_no_ansible_is_imported(installed, tmp_path):
    lib = str(tmp_path / "node" / "lib" / "ray-maintenance.pyz")
    code = ("import sys; sys.path.insert(0, %r); "
            "import ansible_collections.rayops.disk.plugins.module_utils._cli; "
            "print(sorted(m for m in sys.modules if m == 'ansible' or m.startswith('ansible.')))" % lib)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PATH": os.environ["PATH"]})
    assert proc.stdout == "[]\n"


def test_without_psutil_it_names_the_debian_package(tmp_path):
    bare = tmp_path / "bare-venv" / "bin" / "python"
    bare.parent.mkdir(parents=True)
    bare.write_text("#!/bin/sh\nexec %s -S \"$@\"\n" % sys.executable)  # -S: no site-packages, so no psutil
    bare.chmod(0o755)
    wrapper = install(tmp_path / "node", tmp_path / "bare-venv")
    config = write_config(tmp_path, tmp_dir=str(tmp_path), containers=False)  # auto: docker would be needed too
    proc = run(wrapper, "--config", config, "monitor")
    assert proc.returncode == 3 and proc.stdout == ""
    assert "the Python library psutil cannot be imported" in proc.stderr
    assert "apt-get install python3-psutil" in proc.stderr


def aged_litter(tmp):
    """Old litter, a fresh entry and an unrelated one in ``tmp``."""
    old = time.time() - 3 * 3600
    for name, size in (("ray_tmp_1/pkg.zip", 65536), ("pip-build-2/setup.py", 8192), ("keep/data", 4096),
                       ("tmpfresh/x", 4096)):
        path = os.path.join(str(tmp), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"x" * size)
        if not name.startswith("tmpfresh"):
            os.utime(path, (old, old))
            os.utime(os.path.dirname(path), (old, old))


def test_cron_lines_clean_the_host_and_write_metrics(installed, tmp_path):
    tmp, metrics, log = tmp_path / "tmp", tmp_path / "metrics", tmp_path / "ray-maintenance.log"
    tmp.mkdir()
    metrics.mkdir()
    aged_litter(tmp)
    config = write_config(tmp_path, tmp_dir=str(tmp), ray_temp_dir=str(tmp / "ray"), min_tmp_size=0,
                          max_age_hours=1, age_by=["mtime"], force=True, lock_file=str(tmp_path / "lock"),
                          metrics_dir=str(metrics), log_file=str(log), sample_seconds=0.2, scan_workers=1)
    proc = run(installed, "--config", config, "cleanup", "--quiet")  # the role's cron line
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert sorted(os.listdir(str(tmp))) == ["keep", "tmpfresh"]
    cleanup = metrics_of(str(metrics / "rayops_ray_cleanup.prom"))
    host = frozenset({"target": "host", "kind": "host"}.items())
    assert cleanup[("rayops_ray_cleanup_success", frozenset())] == 1
    assert cleanup[("rayops_ray_cleanup_removed_entries", host)] == 4  # two dirs and their files
    usage = metrics_of(str(metrics / "rayops_ray_usage.prom"))
    assert usage[("rayops_ray_tmp_bytes", host)] == int(subprocess.run(
        ["du", "-sxB1", str(tmp)], capture_output=True, text=True, check=True).stdout.split()[0])
    proc = run(installed, "--config", config, "monitor", "--quiet")  # the other cron line
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    lines = log.read_text().splitlines()
    assert [line.split("] INFO ")[1].split(" ")[:2] for line in lines] == [
        ["cleanup", "target"], ["cleanup", "exit"], ["monitor", "exit"]]
    proc = run(installed, "--config", config, "check", "--threshold", "0", "--critical", "100")
    assert proc.returncode == 1 and proc.stdout.startswith("WARNING: host %s " % tmp)


@pytest.fixture
def workers(docker_client):
    """Two idle worker containers named with a unique prefix, and the tmp dir they (and the host) use."""
    prefix = "rayops-cli-%s-ray-worker" % uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="rayops-cli-", dir="/tmp")  # the same path on the host, empty there
    made = []
    try:
        for index, kib in ((1, 256), (2, 768)):
            container = docker_client.containers.run(IMAGE, ["sleep", "2147483647"], name="%s-%d" % (prefix, index),
                                                     init=True, detach=True)
            made.append(container)
            script = ("mkdir -p {t}/ray_tmp_a {t}/pip-b {t}/keep && dd if=/dev/zero of={t}/ray_tmp_a/blob bs=1024 "
                      "count={k} 2>/dev/null && dd if=/dev/zero of={t}/pip-b/blob bs=1024 count=64 2>/dev/null && "
                      "dd if=/dev/zero of={t}/keep/blob bs=1024 count=8 2>/dev/null").format(t=tmp, k=kib)
            code, out = container.exec_run(["sh", "-c", script])
            assert code == 0, out
        yield prefix, tmp, made
    finally:
        for container in made:
            container.remove(force=True)
        shutil.rmtree(tmp)


def du_inside(container, path):
    code, out = container.exec_run(["du", "-sk", path])
    assert code == 0, out
    return int(out.split()[0]) * 1024


def test_containers_are_measured_and_cleaned(installed, workers, tmp_path):
    prefix, tmp, made = workers
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    config = write_config(tmp_path, tmp_dir=tmp, host=False, containers=True, container_name_filter=prefix,
                          container_tmp_dir=tmp, min_tmp_size=0, max_age_hours=0, lock_file=str(tmp_path / "lock"),
                          metrics_dir=str(metrics), sample_seconds=1, scan_workers=1)
    proc = run(installed, "--config", config, "--json", "monitor")
    assert proc.returncode == 0, proc.stderr
    entries = {entry["name"]: entry for entry in json.loads(proc.stdout)["containers"]}
    names = ["%s-1" % prefix, "%s-2" % prefix]
    assert sorted(entries) == names
    before = {}
    for name, container in zip(names, made):
        before[name] = du_inside(container, tmp)
        assert entries[name]["status"] == "running" and entries[name]["error"] is None
        assert entries[name]["tmp_bytes"] == before[name]
        assert entries[name]["activity"]["busy"] is False
    assert entries[names[1]]["tmp_bytes"] > entries[names[0]]["tmp_bytes"]
    usage = metrics_of(str(metrics / "rayops_ray_usage.prom"))
    for name in names:
        assert usage[("rayops_ray_tmp_bytes", frozenset({"target": name, "kind": "container"}.items()))] == \
            before[name]
    assert usage[("rayops_ray_containers_up", frozenset())] == 1

    proc = run(installed, "--config", config, "cleanup")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("%s (container): cleaned, freed " % names[0])
    assert "  removed %s/ray_tmp_a" % tmp in proc.stdout.splitlines()
    cleanup = metrics_of(str(metrics / "rayops_ray_cleanup.prom"))
    usage = metrics_of(str(metrics / "rayops_ray_usage.prom"))
    assert cleanup[("rayops_ray_cleanup_success", frozenset())] == 1
    for name, container in zip(names, made):
        ids = {"target": name, "kind": "container"}
        code, out = container.exec_run(["ls", tmp])
        assert code == 0 and out.decode().split() == ["keep"]
        after = du_inside(container, tmp)
        assert cleanup[("rayops_ray_cleanup_freed_bytes", frozenset(ids.items()))] == before[name] - after
        assert cleanup[("rayops_ray_cleanup_removed_entries", frozenset(ids.items()))] == 4
        assert cleanup[("rayops_ray_cleanup_target_status", frozenset(dict(ids, status="cleaned").items()))] == 1
        assert usage[("rayops_ray_tmp_bytes", frozenset(ids.items()))] == after
    assert not any(labels and dict(labels).get("target") == "host" for _name, labels in cleanup)
    assert os.listdir(tmp) == []  # host: false, and nothing was there
