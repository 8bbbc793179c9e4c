# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The repository's Ansible defaults reach only this machine."""

from __future__ import annotations

import configparser
import json
import os

import yaml

from ansible_collections.rayops.disk.tests.system.conftest import REPO, run_ansible


def test_default_inventory_is_only_localhost():
    proc = run_ansible("ansible-inventory", "--list")
    assert proc.returncode == 0, proc.stderr
    inventory = json.loads(proc.stdout)
    assert list(inventory["_meta"]["hostvars"]) == ["localhost"]
    assert inventory["_meta"]["hostvars"]["localhost"]["ansible_connection"] == "local"
    assert "10.0.0." not in proc.stdout


def test_production_inventory_is_complete_but_never_the_default():
    """Read as a file only: no Ansible command is pointed at it."""
    with open(os.path.join(REPO, "inventory", "production.yml")) as handle:
        production = yaml.safe_load(handle)
    cluster = production["all"]["children"]["ray_cluster"]["children"]
    addresses = sorted(host["ansible_host"] for host in cluster["ray_workers"]["hosts"].values())
    assert all(address.startswith("10.0.0.") for address in addresses)  # the users' network, by prefix only
    assert [address.rsplit(".", 1)[1] for address in addresses] == ["80", "81", "82", "84"]
    assert "ray_head" in cluster
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "ansible.cfg"))
    assert config["defaults"]["inventory"] == "inventory/local.yml"


def test_gitlab_ci_runs_the_readme_tests_and_deploys_production_only_by_hand():
    """Read as a file only: the deploy job is never run here."""
    with open(os.path.join(REPO, ".gitlab-ci.yml")) as handle:
        pipeline = yaml.safe_load(handle)
    with open(os.path.join(REPO, "README.md")) as handle:
        readme = handle.read()
    assert "bash scripts/test.sh" in pipeline["test"]["script"] and "bash scripts/test.sh" in readme
    deploy = pipeline["deploy_ray_cleanup"]
    assert deploy["stage"] == "deploy" and pipeline["stages"][-1] == "deploy"
    assert deploy["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual"}]
    command = deploy["script"][-1]
    assert "-i inventory/production.yml playbooks/deploy_ray_cleanup.yml" in command
    assert not any("production" in line for job in ("lint", "test") for line in pipeline[job]["script"])


def deploy_plays(*args):
    """``ansible-playbook --list-hosts`` of the deploy playbook: each play's section, and stderr."""
    proc = run_ansible("ansible-playbook", "--list-hosts", "playbooks/deploy_ray_cleanup.yml", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("play #")[1:], proc.stderr


def test_deploy_playbook_targets_the_named_inventory_and_prometheus_hosts(tmp_path):
    plays, stderr = deploy_plays()
    assert len(plays) == 3
    assert "hosts (1):" in plays[0] and "localhost" in plays[0]
    assert "hosts (0):" in plays[1] and "hosts (0):" in plays[2]
    # No prometheus or grafana group: no "Could not match supplied host pattern, ignoring: prometheus" on every deploy.
    assert "WARNING" not in stderr and "Could not match" not in stderr, stderr

    # With one, its hosts get the rules, and only they.
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"node1": {"ansible_connection": "local"}},
        "children": {"prometheus": {"hosts": {"prom1": {"ansible_connection": "local"}}}}}}))
    plays, stderr = deploy_plays("-i", str(inventory))
    assert "hosts (2):" in plays[0] and "node1" in plays[0] and "prom1" in plays[0]
    assert "hosts (1):" in plays[1] and "prom1" in plays[1] and "node1" not in plays[1]
    assert "hosts (0):" in plays[2]
    assert "WARNING" not in stderr, stderr


def test_deploy_playbook_provisions_the_dashboard_on_grafana_hosts_only(tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"node1": {"ansible_connection": "local"}},
        "children": {"grafana": {"hosts": {"graf1": {"ansible_connection": "local"}}}}}}))
    plays, stderr = deploy_plays("-i", str(inventory))
    assert len(plays) == 3
    assert "hosts (0):" in plays[1]
    assert "hosts (1):" in plays[2] and "graf1" in plays[2] and "node1" not in plays[2]
    assert "WARNING" not in stderr, stderr
