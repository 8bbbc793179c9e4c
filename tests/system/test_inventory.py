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
