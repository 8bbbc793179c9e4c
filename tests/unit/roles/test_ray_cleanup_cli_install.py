# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node CLI as the role ships it: one reproducible zipapp of the collection's module_utils, built on the
controller (also from a collection installed from its galaxy tarball), beside a VERSION that names the build, run
by the role's wrapper; what an older release installed file by file goes; the CLI's config is written only as the
CLI itself accepts it, and a refused setting is named first.

The role runs for real on localhost (``--tags ray_cleanup_install``, no package to install) into a scratch prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile

import yaml

from ansible_collections.rayops.disk.tests.unit.roles.test_ray_cleanup_preflight import (
    REPO,
    ansible_playbook,
    failure,
)

ROLE = os.path.join(REPO, "roles", "ray_cleanup")
BUILD = os.path.join(ROLE, "files", "build_ray_maintenance_pyz.py")
MODULE_UTILS = os.path.join(REPO, "plugins", "module_utils")
PACKAGE = "ansible_collections/rayops/disk/plugins/module_utils/"
BIN = os.path.dirname(sys.executable)


def galaxy_version():
    with open(os.path.join(REPO, "galaxy.yml")) as handle:
        return str(yaml.safe_load(handle)["version"])


def module_utils(root=MODULE_UTILS):
    return sorted(name for name in os.listdir(root) if re.match(r"^_\w*\.py\Z", name))


def build(script, collection, out):
    """Run the build script as the role does (the controller's Python); what it says it built."""
    out.mkdir(parents=True)
    proc = subprocess.run([sys.executable, script, str(collection), str(out)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def cli(pyz, *args, cwd=None):
    """``python -I ray-maintenance.pyz ARGS`` as the wrapper runs it, without the repository on the path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return subprocess.run([sys.executable, "-I", str(pyz)] + list(args), capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300, check=False)


def test_the_zipapp_is_reproducible_and_holds_module_utils_under_their_import_names(tmp_path):
    first = build(BUILD, REPO, tmp_path / "a")
    second = build(BUILD, REPO, tmp_path / "b")
    with open(first["pyz"], "rb") as one, open(second["pyz"], "rb") as other:
        data = one.read()
        assert data == other.read()
    assert (first["label"], first["sha256"]) == (second["label"], second["sha256"])

    with zipfile.ZipFile(first["pyz"]) as pyz:
        infos = pyz.infolist()
        names = [info.filename for info in infos]
        assert names == sorted(names)
        for info in infos:  # fixed time, mode and method: the same bytes on any controller
            assert (info.date_time, info.compress_type, info.external_attr >> 16, info.extra) == \
                ((1980, 1, 1, 0, 0, 0), zipfile.ZIP_STORED, 0o100644, b""), info
        packages = ["ansible_collections/", "ansible_collections/rayops/", "ansible_collections/rayops/disk/",
                    "ansible_collections/rayops/disk/plugins/", PACKAGE]
        assert all(pyz.read(package + "__init__.py") == b"" for package in packages)
        assert sorted(name[len(PACKAGE):] for name in names
                      if name.startswith(PACKAGE) and name != PACKAGE + "__init__.py") == module_utils()
        for name in module_utils():
            with open(os.path.join(MODULE_UTILS, name), "rb") as handle:
                assert pyz.read(PACKAGE + name) == handle.read(), name
        assert set(names) == {"__main__.py"} | {package + "__init__.py" for package in packages} | \
            {PACKAGE + name for name in module_utils()}
        main = pyz.read("__main__.py").decode()
    assert "from ansible_collections.rayops.disk.plugins.module_utils._cli import main" in main
    assert "sys.exit(main())" in main and "rayops.disk %s" % galaxy_version() in main

    digest = hashlib.sha256(data).hexdigest()
    assert (first["version"], first["sha256"]) == (galaxy_version(), digest)
    assert first["label"] == "%s+%s" % (galaxy_version(), digest[:12])
    assert os.stat(first["pyz"]).st_mode & 0o777 == 0o644


def test_the_zipapp_runs_the_cli_isolated_with_its_scan_workers(tmp_path):
    pyz = build(BUILD, REPO, tmp_path / "build")["pyz"]
    trap = tmp_path / "cwd"  # root runs it from /tmp, where anyone may plant json.py
    trap.mkdir()
    (trap / "json.py").write_text("raise SystemExit('planted json imported')\n")
    proc = cli(pyz, "--help", cwd=str(trap))
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout.startswith("usage: ray-maintenance ")

    # Old litter in a scratch temp dir, wide enough that two scan workers (forked processes) split it.
    scratch = tmp_path / "tmp"
    old = time.time() - 3 * 86400
    for index in range(80):
        litter = scratch / ("ray_tmp_%02d" % index)
        litter.mkdir(parents=True)
        for number in range(5):
            (litter / ("f%d" % number)).write_bytes(b"x" * 4096)
            os.utime(str(litter / ("f%d" % number)), (old, old))
        os.utime(str(litter), (old, old))
    (scratch / "keep").write_text("not litter\n")
    measured = {}
    for workers in (1, 2):
        config = tmp_path / ("config-%d.json" % workers)
        config.write_text(json.dumps({"tmp_dir": str(scratch), "min_tmp_size": 0, "age_by": ["mtime"],
                                      "lock_file": str(tmp_path / "lock"), "containers": False,
                                      "force": True,  # other tests may run Ray here: busy or not, a dry run
                                      "scan_workers": workers}))
        proc = cli(pyz, "--config", str(config), "check-config")
        assert (proc.returncode, proc.stdout) == (0, "config %s: ok\n" % config), proc.stderr
        proc = cli(pyz, "--config", str(config), "--json", "monitor", cwd=str(trap))
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["errors"] == [], report["errors"]
        measured[workers] = report["categories"]["tmp_patterns"]
        proc = cli(pyz, "--config", str(config), "--json", "cleanup", "--dry-run", cwd=str(trap))
        assert proc.returncode == 0, proc.stderr
        host, = json.loads(proc.stdout)["targets"]
        assert (host["status"], host["removed"], host["freed_bytes"]) == ("cleaned", 480, 400 * 4096 + 80 * 4096), host
    assert measured[1] == measured[2] and measured[2]["files"] == 400, measured
    assert len(os.listdir(str(scratch))) == 81  # a dry run

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tmp_dir": str(scratch), "min_tmp_size": "lots"}))
    proc = cli(pyz, "--config", str(bad), "check-config")
    assert proc.returncode == 3
    assert proc.stderr == "ray-maintenance: config %s: min_tmp_size 'lots' is not a size; write bytes or a size " \
        "such as 5GB, 500MB, 0\n" % bad, proc.stderr


def test_the_role_builds_it_from_the_collection_galaxy_installs(tmp_path):
    """``ansible-galaxy collection build`` and ``install``: no galaxy.yml there, the version is the manifest's."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    galaxy = os.path.join(BIN, "ansible-galaxy")
    galaxy = galaxy if os.path.exists(galaxy) else "ansible-galaxy"
    proc = subprocess.run([galaxy, "collection", "build", REPO, "--output-path", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tarball = os.path.join(str(tmp_path), "rayops-disk-%s.tar.gz" % galaxy_version())
    with tarfile.open(tarball) as archive:
        assert "roles/ray_cleanup/files/build_ray_maintenance_pyz.py" in archive.getnames()
    proc = subprocess.run([galaxy, "collection", "install", "--offline", "--no-deps", "--force",
                           "-p", str(tmp_path / "installed"), tarball],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = tmp_path / "installed" / "ansible_collections" / "rayops" / "disk"
    assert (installed / "MANIFEST.json").exists() and not (installed / "galaxy.yml").exists()
    role = installed / "roles" / "ray_cleanup"
    built = build(str(role / "files" / "build_ray_maintenance_pyz.py"), os.path.join(str(role), "..", ".."),
                  tmp_path / "build")
    assert built["version"] == galaxy_version()
    with zipfile.ZipFile(built["pyz"]) as pyz:
        assert sorted(name[len(PACKAGE):] for name in pyz.namelist()
                      if name.startswith(PACKAGE) and name != PACKAGE + "__init__.py") == \
            module_utils(str(installed / "plugins" / "module_utils"))
    proc = cli(built["pyz"], "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ray-maintenance "), proc.stderr


PLAYBOOK = """\
- name: The role, as a deploy runs it
  hosts: all
  gather_facts: false
  roles:
    - role: rayops.disk.ray_cleanup
"""


def deploy(tmp_path, run, prefix, *args, check=False, **variables):
    """The role's install tasks on localhost into ``prefix``: ``(results of each task, process)``."""
    where = tmp_path / run
    where.mkdir()
    node = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "ray_cleanup_packages": [],  # nothing from apt: the test never changes this machine's packages
            "ray_cleanup_lib_dir": str(prefix / "lib"), "ray_cleanup_bin_path": str(prefix / "bin" / "ray-maintenance"),
            "ray_cleanup_config_path": str(prefix / "etc" / "ray-maintenance.json"),
            "ray_cleanup_log_dir": str(prefix / "log"), "ray_cleanup_metrics_dir": str(prefix / "metrics"),
            "ray_cleanup_diagnose_state_file": str(prefix / "state" / "diagnose-state.json"),
            "ray_cleanup_venv_path": str(prefix / "venv"),
            "ray_cleanup_ray_env_files": [{"path": str(prefix / "env" / "ray.env"), "format": "env"}]}
    node.update(variables)
    inventory = where / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"node": node}}}))
    playbook = where / "playbook.yml"
    playbook.write_text(PLAYBOOK)
    ran, proc = ansible_playbook(where, inventory, playbook, "--tags", "ray_cleanup_install", *args, check=check)
    return ran["node"], proc


def task(results, name):
    found = [result for _path, task_name, result in results if task_name == name]
    assert len(found) == 1, (name, [task_name for _path, task_name, _result in results])
    return found[0]


def changed(results):
    return [name for _path, name, result in results if result.get("changed")]


def test_install_upgrade_and_a_refused_config_for_real(tmp_path):
    prefix = tmp_path / "node"
    old_tree = prefix / "lib" / "ansible_collections" / "rayops" / "disk" / "plugins" / "module_utils"
    (old_tree / "__pycache__").mkdir(parents=True)
    (old_tree / "_retired.py").write_text("raise SystemExit('stale library file imported')\n")
    (old_tree / "__pycache__" / "_cli.cpython-311.pyc").write_bytes(b"\0")
    (prefix / "bin").mkdir()  # as /usr/local/bin is

    results, proc = deploy(tmp_path, "first", prefix)
    assert failure(results) is None, failure(results) + proc.stdout
    lib = prefix / "lib"
    assert sorted(os.listdir(str(lib))) == ["ray-maintenance.pyz"]  # the old tree and VERSION file are gone
    digest = hashlib.sha256((lib / "ray-maintenance.pyz").read_bytes()).hexdigest()
    installed_version = "# rayops.disk ray-maintenance.pyz %s+%s (sha256 %s)" % (galaxy_version(), digest[:12], digest)
    assert installed_version in (prefix / "bin" / "ray-maintenance").read_text().splitlines()  # names the build
    with zipfile.ZipFile(str(lib / "ray-maintenance.pyz")) as pyz:
        assert PACKAGE + "_cli.py" in pyz.namelist()
    wrapper = (prefix / "bin" / "ray-maintenance").read_text()
    assert wrapper.splitlines()[-1] == 'exec /usr/bin/python3 -I %s/ray-maintenance.pyz "$@"' % lib
    assert wrapper.startswith("#!/bin/sh\n#\n# Ansible managed")
    config = prefix / "etc" / "ray-maintenance.json"
    proc = subprocess.run([str(prefix / "bin" / "ray-maintenance"), "--config", str(config), "check-config"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert (proc.returncode, proc.stdout) == (0, "config %s: ok\n" % config), proc.stderr
    assert task(results, "Check the config with the new CLI").get("false_condition") == \
        "_ray_cleanup_config_file is not changed"  # it was written, and validated
    built = task(results, "Build ray-maintenance.pyz from this collection's module_utils, on the controller")
    build_dir = built["ansible_facts"]["_ray_cleanup_build"]["dir"]
    assert os.path.basename(build_dir).startswith("rayops-disk-cli-") and "/ansible-local-" in build_dir
    assert not os.path.exists(build_dir)  # Ansible removed its temporary directory of the run

    # Again, and as a dry run: nothing changes.
    results, _proc = deploy(tmp_path, "second", prefix)
    assert failure(results) is None and changed(results) == [], changed(results)
    results, _proc = deploy(tmp_path, "dry", prefix, "--diff", check=True)
    assert failure(results) is None and changed(results) == [], changed(results)

    # A setting the CLI refuses: named first, with the CLI's words; the config stays as it was.
    before = config.read_text()
    results, proc = deploy(tmp_path, "bad", prefix, ray_cleanup_min_tmp_size="lots")
    assert task(results, "Write the CLI's config (validated by ray-maintenance check-config)")["msg"] == \
        "failed to validate"  # rescued:
    refused = task(results, "Fail, naming the setting the CLI refused")
    assert refused.get("failed") and refused["msg"] == (
        'ray_cleanup_min_tmp_size "lots" is refused by the CLI (ray-maintenance check-config): '
        "min_tmp_size 'lots' is not a size; write bytes or a size such as 5GB, 500MB, 0"), proc.stdout
    assert config.read_text() == before

    # An upgrade: another build on the node. The dry run's diff says which version replaces which; the real run
    # checks the config it keeps with the new CLI.
    wrapper_path = prefix / "bin" / "ray-maintenance"
    wrapper_path.write_text(wrapper_path.read_text().replace(installed_version,
                                                             "# rayops.disk ray-maintenance.pyz 0.0.1+000000000000 (sha256 0)"))
    (lib / "VERSION").write_text("rayops.disk ray-maintenance.pyz 0.0.1+000000000000 (sha256 0)\n")  # the last release's
    with open(str(lib / "ray-maintenance.pyz"), "ab") as handle:
        handle.write(b"\0")
    results, proc = deploy(tmp_path, "upgrade-dry", prefix, "--diff", check=True)
    assert failure(results) is None, failure(results)
    assert changed(results) == ["Install the CLI (ray-maintenance.pyz)", "Install the ray-maintenance command",
                                "Remove what an older release installed in the library directory"]
    diff = task(results, "Install the ray-maintenance command")["diff"]
    diff = diff[0] if isinstance(diff, list) else diff
    removed = [line for line in diff["before"].splitlines() if line not in diff["after"].splitlines()]
    added = [line for line in diff["after"].splitlines() if line not in diff["before"].splitlines()]
    assert (removed, added) == (["# rayops.disk ray-maintenance.pyz 0.0.1+000000000000 (sha256 0)"], [installed_version])
    assert task(results, "Ask the CLI whether it accepts the config (check mode)")["rc"] == 0
    results, proc = deploy(tmp_path, "upgrade", prefix)
    assert failure(results) is None, failure(results)
    assert "Install the CLI (ray-maintenance.pyz)" in changed(results)
    checked = task(results, "Check the config with the new CLI")
    assert checked["rc"] == 0 and checked["stdout"] == "config %s: ok" % config, checked


# --- What only the CLI checks reaches only its config ---------------------------------------------------------

VARS = yaml.safe_load(open(os.path.join(ROLE, "vars", "main.yml")).read())
# Role variables that go only into the CLI's config: preflight leaves them to the CLI (check-config).
CLI_ONLY = sorted(set(VARS["_ray_cleanup_config_vars"].values()) - set(VARS["_ray_cleanup_checked"])
                  - {"ray_cleanup_ray_rotation_max_bytes", "ray_cleanup_ray_rotation_backup_count"})


def test_settings_only_the_cli_checks_reach_nothing_but_its_config():
    """A cron line, logrotate's config, a path the role creates: none of them may use a setting that preflight no
    longer checks (the CLI's check-config says only whether the CLI can run with it)."""
    assert "ray_cleanup_tmp_dir" in CLI_ONLY and "ray_cleanup_min_tmp_size" in CLI_ONLY
    assert "ray_cleanup_log_dir" not in CLI_ONLY  # logrotate's config: preflight checks it
    for folder in ("tasks", "templates", "handlers"):
        for name in os.listdir(os.path.join(ROLE, folder)):
            with open(os.path.join(ROLE, folder, name)) as handle:
                text = handle.read()
            used = {variable for variable in CLI_ONLY if re.search(r"\b%s\b" % variable, text)}
            allowed = {"ray_cleanup_containers"} if (folder, name) == ("tasks", "preflight.yml") else set()
            assert used <= allowed, (folder, name, used - allowed)
    for key, value in VARS.items():
        if key not in ("_ray_cleanup_config", "_ray_cleanup_config_vars"):
            used = {variable for variable in CLI_ONLY if re.search(r"\b%s\b" % variable, json.dumps(value))}
            assert used == set(), (key, used)


def render(tmp_path, hosts, expression):
    """``expression`` rendered with the role's vars/main.yml for each host (``{name: variables}``)."""
    playbook = tmp_path / "render.yml"
    playbook.write_text("- name: Render\n  hosts: all\n  gather_facts: false\n  vars_files:\n    - %s/vars/main.yml\n"
                        "  tasks:\n    - name: Render\n      ansible.builtin.debug:\n        msg: \"{{ %s | to_json }}\"\n"
                        % (ROLE, expression))
    with open(os.path.join(ROLE, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    for variables in hosts.values():
        variables.update(ansible_connection="local", ansible_python_interpreter=sys.executable)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"vars": defaults, "hosts": hosts}}))
    ran, proc = ansible_playbook(tmp_path, inventory, playbook)
    rendered = {}
    for host in hosts:
        (_path, _task, result), = ran[host]
        assert not result.get("failed"), result
        rendered[host] = json.loads(result["msg"])
    return rendered


def test_odd_values_only_the_cli_sees_are_written_as_json_strings(tmp_path):
    odd = {"ray_cleanup_ray_temp_dir": "/tmp/ray\n* * * * * root touch /tmp/pwned",
           "ray_cleanup_container_tmp_dir": "/tmp /etc", "ray_cleanup_uv_cache_dir": "/root/.cache/uv /",
           "ray_cleanup_spill_dirs": ["/mnt/spill\n"], "ray_cleanup_patterns": ["ray_tmp_*\n"],
           "ray_cleanup_exclude": ["*/checkpoints/*\n"]}
    config = render(tmp_path, {"odd": dict(odd)}, "_ray_cleanup_config")["odd"]
    for name, value in odd.items():
        assert config[name[len("ray_cleanup_"):]] == value, name


def test_cron_is_started_by_the_init_system_only_when_pid_1_is_one(tmp_path):
    names = {"systemd": True, "init": True, "openrc-init": True,
             "sh": False, "bash": False, "sleep": False, "docker-init": False, "tini": False, "dumb-init": False,
             "python3": False}
    hosts = {"pid1-%d" % index: {"_ray_cleanup_node": {"pid1": name}} for index, name in enumerate(names)}
    rendered = render(tmp_path, hosts, "[_ray_cleanup_init_system, _ray_cleanup_pid1_name, _ray_cleanup_cron_service]")
    for index, (name, init) in enumerate(names.items()):
        assert rendered["pid1-%d" % index] == [init, name, "cron"], name  # Debian's and Ubuntu's service name


def test_cron_is_made_to_run_only_for_a_cron_file_it_reads(tmp_path):
    """Tests that write the cron file elsewhere (tests/system/test_role_security.py) leave the machine's cron alone."""
    files = {"rayops-ray-maintenance": True, "/etc/cron.d/rayops-ray-maintenance": True,
             "/tmp/node/cron.d/rayops-ray-maintenance": False}
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render", "hosts": "all", "gather_facts": False, "vars_files": [ROLE + "/vars/main.yml"],
        "tasks": [{"name": "Render", "ansible.builtin.debug": {"msg": "{{ _ray_cleanup_cron_daemon_reads }}"},
                   "vars": {"_ray_cleanup_cron_file": "{{ item }}"}, "loop": list(files)}]}]))
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"node": {"ansible_connection": "local",
                                                                "ansible_python_interpreter": sys.executable}}}}))
    ran, _proc = ansible_playbook(tmp_path, inventory, playbook)
    (_path, _task, result), = ran["node"]
    assert {item["item"]: item["msg"] for item in result["results"]} == files
