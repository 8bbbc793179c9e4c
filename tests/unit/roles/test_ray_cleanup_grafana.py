# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's ``grafana`` entry point, run for real on localhost into a scratch prefix: a dry run writes nothing; a
real run installs the shipped dashboard and a provider that points Grafana's folder at it, and restarts Grafana; a
second run changes nothing and restarts nothing; a changed dashboard is replaced without a restart; a bad folder or a
missing provisioning dir is refused, naming the variable and the fix, before anything is written."""

from __future__ import annotations

import json
import os
import re
import stat
import sys

import yaml

from ansible_collections.rayops.disk.tests.unit.roles.test_ray_cleanup_preflight import (
    REPO,
    ansible_playbook,
    failure,
    skipped,
)

SHIPPED = os.path.join(REPO, "roles", "ray_cleanup", "files", "grafana", "ray-disk.json")
PLAYBOOK = """\
- name: The dashboard, as the deploy playbook provisions it
  hosts: all
  gather_facts: false
  tasks:
    - name: Provision the dashboard
      ansible.builtin.include_role:
        name: rayops.disk.ray_cleanup
        tasks_from: grafana
"""
TASKS = ["Create the dashboards directory", "Install the Ray disk dashboard", "Install the dashboard provider"]


def grafana(tmp_path, run, hosts, *args, check=False):
    """The entry point on ``hosts`` (name -> variables, all localhost); per host the results of each task it ran,
    ``[(task path, task name, result)]``, and the process."""
    where = tmp_path / run
    where.mkdir()
    inventory = where / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {
        name: dict({"ansible_connection": "local", "ansible_python_interpreter": sys.executable}, **variables)
        for name, variables in hosts.items()}}}))
    playbook = where / "playbook.yml"
    playbook.write_text(PLAYBOOK)
    return ansible_playbook(where, inventory, playbook, *args, check=check)


def node(prefix, **variables):
    """Variables of a Grafana host whose dirs are under ``prefix``; the restart touches ``prefix``/restarted."""
    return dict({"ray_cleanup_grafana_dashboards_dir": str(prefix / "lib" / "dashboards" / "rayops"),
                 "ray_cleanup_grafana_provisioning_dir": str(prefix / "provisioning" / "dashboards"),
                 "ray_cleanup_grafana_restart_command": "touch %s" % (prefix / "restarted")}, **variables)


def changed(results):
    return [name for _path, name, result in results if result.get("changed")]


def recap_changed(proc, host):
    """``changed=N`` of the host in the play recap."""
    return int(re.search(r"^%s\s+: ok=\d+\s+changed=(\d+)" % re.escape(host), proc.stdout, re.MULTILINE).group(1))


def files_under(path):
    return sorted(os.path.relpath(os.path.join(root, name), path)
                  for root, dirs, names in os.walk(path) for name in dirs + names)


def test_dry_run_real_run_and_repeat(tmp_path):
    prefix = tmp_path / "grafana"
    provisioning = prefix / "provisioning" / "dashboards"
    provisioning.mkdir(parents=True)  # Grafana's package makes it
    variables = node(prefix, ray_cleanup_grafana_folder="Ray: disks ☀")
    dashboards = prefix / "lib" / "dashboards" / "rayops"

    ran, proc = grafana(tmp_path, "dry", {"grafana1": variables}, "--diff", check=True)
    results = ran["grafana1"]
    assert failure(results) is None and changed(results) == TASKS, proc.stdout
    assert files_under(prefix) == ["provisioning", "provisioning/dashboards"]  # the dry run wrote nothing
    provider_diff = next(result for _path, name, result in results if name == TASKS[2])["diff"]
    provider_diff = provider_diff[0] if isinstance(provider_diff, list) else provider_diff
    assert "folder: " in provider_diff["after"] and str(dashboards) in provider_diff["after"]

    ran, proc = grafana(tmp_path, "real", {"grafana1": variables})
    results = ran["grafana1"]
    assert failure(results) is None and changed(results) == TASKS + ["Restart Grafana"], proc.stdout
    provider_file = provisioning / "rayops-disk.yml"
    text = provider_file.read_text()
    assert text.startswith("#\n# Ansible managed\n#\n"), text  # {{ ansible_managed | comment }}
    provider = yaml.safe_load(text)
    assert provider["apiVersion"] == 1
    assert provider["providers"] == [{
        "name": "rayops.disk", "folder": "Ray: disks ☀", "type": "file", "disableDeletion": False,
        "updateIntervalSeconds": 60, "allowUiUpdates": False, "options": {"path": str(dashboards)}}]
    with open(SHIPPED, "rb") as handle:
        assert (dashboards / "ray-disk.json").read_bytes() == handle.read()
    for path, mode in ((dashboards, 0o755), (dashboards / "ray-disk.json", 0o644), (provider_file, 0o644)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert (prefix / "restarted").exists()
    assert files_under(prefix) == [
        "lib", "lib/dashboards", "lib/dashboards/rayops", "lib/dashboards/rayops/ray-disk.json",
        "provisioning", "provisioning/dashboards", "provisioning/dashboards/rayops-disk.yml", "restarted"]

    (prefix / "restarted").unlink()
    ran, proc = grafana(tmp_path, "again", {"grafana1": variables})
    assert failure(ran["grafana1"]) is None and changed(ran["grafana1"]) == [], proc.stdout
    assert recap_changed(proc, "grafana1") == 0, proc.stdout
    assert not (prefix / "restarted").exists()

    # A dashboard edited on the host is put back; Grafana reads it again by itself, no restart.
    (dashboards / "ray-disk.json").write_text("{}\n")
    ran, proc = grafana(tmp_path, "dashboard", {"grafana1": variables})
    assert changed(ran["grafana1"]) == ["Install the Ray disk dashboard"], proc.stdout
    assert (dashboards / "ray-disk.json").read_bytes() == open(SHIPPED, "rb").read()
    assert not (prefix / "restarted").exists()

    # Another folder changes the provider: Grafana reads providers only when it starts.
    ran, proc = grafana(tmp_path, "folder", {"grafana1": dict(variables, ray_cleanup_grafana_folder="Ray")})
    assert changed(ran["grafana1"]) == ["Install the dashboard provider", "Restart Grafana"], proc.stdout
    assert yaml.safe_load(provider_file.read_text())["providers"][0]["folder"] == "Ray"
    assert (prefix / "restarted").exists()


def test_no_restart_command_restarts_nothing(tmp_path):
    prefix = tmp_path / "grafana"
    (prefix / "provisioning" / "dashboards").mkdir(parents=True)
    ran, proc = grafana(tmp_path, "real", {"grafana1": node(prefix, ray_cleanup_grafana_restart_command="")})
    results = ran["grafana1"]
    assert failure(results) is None and changed(results) == TASKS, proc.stdout
    assert [skipped(result) for _path, name, result in results if name == "Restart Grafana"] == [True]


BAD = [("ray_cleanup_grafana_folder", ""),
       ("ray_cleanup_grafana_folder", "Ray\nroot"),
       ("ray_cleanup_grafana_folder", "   "),
       ("ray_cleanup_grafana_dashboards_dir", "var/lib/grafana/dashboards"),
       ("ray_cleanup_grafana_provisioning_dir", "/etc/grafana/provisioning/dashboards\n")]


def test_a_bad_setting_is_refused_naming_it_before_anything_is_written(tmp_path):
    hosts = {}
    for index, (name, value) in enumerate(BAD):
        prefix = tmp_path / ("bad%d" % index)
        (prefix / "provisioning" / "dashboards").mkdir(parents=True)
        hosts["bad%d" % index] = node(prefix, **{name: value})
    ran, proc = grafana(tmp_path, "bad", hosts)
    for index, (name, value) in enumerate(BAD):
        results = ran["bad%d" % index]
        assert results[-1][1] == "Assert the Grafana dirs and folder have the form their files allow", proc.stdout
        message = failure(results)
        assert message.startswith("%s %s is not allowed: give " % (name, json.dumps(value))), message
        if name == "ray_cleanup_grafana_folder":
            assert "a non-empty Grafana folder name without newlines" in message and "for example Ray" in message
        prefix = tmp_path / ("bad%d" % index)
        assert files_under(prefix) == ["provisioning", "provisioning/dashboards"], prefix


def test_a_missing_provisioning_dir_is_refused_naming_it(tmp_path):
    prefix = tmp_path / "grafana"
    ran, proc = grafana(tmp_path, "missing", {"grafana1": node(prefix)})
    message = failure(ran["grafana1"])
    missing = prefix / "provisioning" / "dashboards"
    assert message.startswith('ray_cleanup_grafana_provisioning_dir "%s" is not a directory on grafana1: give the '
                              "directory Grafana reads dashboard providers from" % missing), proc.stdout
    assert not prefix.exists()
