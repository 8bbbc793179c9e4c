# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/ray_disk_report.yml run as the README says, on the local inventory."""

from __future__ import annotations

import json

from ansible_collections.rayops.disk.tests.system.conftest import run_ansible

PLAYBOOK = "playbooks/ray_disk_report.yml"


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
