# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/ray_disk_report.yml run as the README says, on the local inventory."""

from __future__ import annotations

import json

from ansible_collections.rayops.disk.tests.system.conftest import ansible_module, run_ansible

PLAYBOOK = "playbooks/ray_disk_report.yml"
TEMPLATE = "playbooks/templates/ray_disk_report.txt.j2"


def test_report_prints_the_node_and_the_fleet_table():
    proc = run_ansible("ansible-playbook", PLAYBOOK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Filesystem /tmp:" in proc.stdout
    assert "live_session" in proc.stdout and "stale_sessions" in proc.stdout
    assert "host                     level" in proc.stdout
    assert "localhost                " in proc.stdout
    assert "10.0.0." not in proc.stdout


def test_report_fails_when_a_node_is_critical():
    critical = {"ray_disk_report_thresholds": {"info": 0.001, "warning": 0.002, "critical": 0.003}}
    proc = run_ansible("ansible-playbook", PLAYBOOK, "-e", json.dumps(critical))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "localhost is critical: /tmp" in proc.stdout
    assert "level CRITICAL" in proc.stdout


def test_report_runs_in_check_mode():
    proc = run_ansible("ansible-playbook", PLAYBOOK, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Filesystem /tmp:" in proc.stdout
    assert "changed=0" in proc.stdout


def test_the_node_report_says_a_stopped_container_is_not_measured():
    report = ansible_module("rayops.disk.ray_tmp_usage", {"containers": False})
    report["containers"] = [
        {"name": "ray-worker-1", "id": "3f2a1b0c9d8e", "status": "running", "tmp_bytes": 1048576, "error": None},
        {"name": "ray-worker-2", "id": "abc", "status": "exited", "tmp_bytes": None, "error": None},
        {"name": "ray-worker-3", "id": "def", "status": "running", "tmp_bytes": None,
         "error": "container was removed during the run"}]
    proc = run_ansible("ansible", "localhost", "-m", "ansible.builtin.debug", "-a",
                       "msg={{ lookup('ansible.builtin.template', '%s').splitlines() }}" % TEMPLATE,
                       "-e", json.dumps({"ray_disk_report": report}), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",
                       ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in json.loads(proc.stdout.partition(" => ")[2])["msg"] if line.startswith("container ")]
    assert lines == ["container ray-worker-1 (running): 1.00 MB",
                     "container ray-worker-2 (exited): not running, not measured",
                     "container ray-worker-3 (running): container was removed during the run"]
