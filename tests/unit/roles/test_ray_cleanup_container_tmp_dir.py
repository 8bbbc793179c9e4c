# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's ray_cleanup_container_tmp_dir: checked by the CLI itself (check-config) when the role writes the
CLI's config, and written there apart from ray_cleanup_tmp_dir, as the CLI reads it."""

from __future__ import annotations

import json
import os
import sys

import yaml
from ansible_collections.rayops.disk.plugins.module_utils import _cli
from ansible_collections.rayops.disk.tests.unit.roles.test_ray_cleanup_preflight import (
    REPO,
    ansible_playbook,
    case_id,
    check_bad,
    failure,
    run_role,
)

ROLE_DIR = os.path.join(REPO, "roles", "ray_cleanup")
BAD = [
    ("ray_cleanup_container_tmp_dir", "/"),
    ("ray_cleanup_container_tmp_dir", "//"),
    ("ray_cleanup_container_tmp_dir", "/tmp/.."),
    ("ray_cleanup_container_tmp_dir", "tmp"),
    ("ray_cleanup_tmp_dir", "/"),
]


def test_bad_container_tmp_dir_fails_naming_it_before_anything_is_written(tmp_path):
    ran = run_role(tmp_path, {case_id(index): {name: value} for index, (name, value) in enumerate(BAD)})
    problems = ["%s=%s: %s" % (name, json.dumps(value), problem) for index, (name, value) in enumerate(BAD)
                for problem in [check_bad(name, value, ran[case_id(index)], by_cli=True)] if problem]
    assert problems == [], "\n".join(problems)
    assert failure(ran[case_id(0)]) == (
        'ray_cleanup_container_tmp_dir "/" is refused by the CLI (ray-maintenance check-config): '
        "container_tmp_dir '/' is the root of the containers' filesystem; give their temp directory, for example /tmp")


def test_the_users_head_passes_preflight(tmp_path):
    ran = run_role(tmp_path, {"head": {"ray_cleanup_tmp_dir": "/home/apiuser/.cache/tmp",
                                       "ray_cleanup_container_tmp_dir": "/tmp"},
                              "workers": {"ray_cleanup_container_tmp_dir": "/var/tmp/ray-work"}},
                   "--tags", "ray_cleanup_preflight")
    for host in ("head", "workers"):
        assert failure(ran[host]) is None, failure(ran[host])


PLAYBOOK = """\
- name: The CLI's config as the role writes it
  hosts: all
  gather_facts: false
  vars_files:
    - {role}/vars/main.yml
  tasks:
    - name: Render the config
      ansible.builtin.debug:
        msg: "{{{{ _ray_cleanup_config | to_nice_json(sort_keys=true) }}}}"
"""


def test_the_cli_config_gets_both_temp_dirs_and_the_cli_reads_them(tmp_path):
    install = open(os.path.join(ROLE_DIR, "tasks", "install.yml")).read()
    assert 'content: "{{ _ray_cleanup_config | to_nice_json(sort_keys=true) }}\\n"' in install  # what is rendered here
    hosts = {"head": {"ray_cleanup_tmp_dir": "/home/apiuser/.cache/tmp", "ray_cleanup_container_tmp_dir": "/tmp"},
             "default": {}}
    for variables in hosts.values():
        variables.update(ansible_connection="local", ansible_python_interpreter=sys.executable,
                         ray_cleanup_containers=True)
    inventory = tmp_path / "inventory.json"
    with open(os.path.join(ROLE_DIR, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)  # as role defaults, below each host's own settings
    inventory.write_text(json.dumps({"all": {"vars": defaults, "hosts": hosts}}))
    playbook = tmp_path / "config.yml"
    playbook.write_text(PLAYBOOK.format(role=ROLE_DIR))
    ran, _proc = ansible_playbook(tmp_path, inventory, playbook)
    configs = {}
    for host in hosts:
        (_path, _task, result), = ran[host]
        assert not result.get("failed"), result
        configs[host] = json.loads(result["msg"])
    assert (configs["head"]["tmp_dir"], configs["head"]["container_tmp_dir"]) == ("/home/apiuser/.cache/tmp", "/tmp")
    assert (configs["default"]["tmp_dir"], configs["default"]["container_tmp_dir"]) == ("/tmp", "/tmp")

    written = tmp_path / "ray-maintenance.json"
    written.write_text(json.dumps(configs["head"]))
    config = _cli.load_config(str(written))  # every key known, every type right
    options = _cli.cleanup_options(config)
    assert (options.tmp_dir, options.container_tmp_dir) == ("/home/apiuser/.cache/tmp", "/tmp")
    assert options.usage_options().for_container().tmp_dir == "/tmp"
    assert _cli.usage_options(config).container_tmp_dir == "/tmp"
