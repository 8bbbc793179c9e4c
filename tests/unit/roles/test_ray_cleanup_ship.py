# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shipping logs from the head node (ray_cleanup_ship_*), run for real on localhost into a scratch prefix: the CLI's
config keys and a ``ship --quiet`` cron line when both paths and destination are set, nothing again on a second
run, both gone (and the ship metrics file) when they are unset; a dry run changes nothing on either way."""

from __future__ import annotations

from ansible_collections.rayops.disk.tests.unit.roles.test_ray_cleanup_preflight import failure, in_scratch

PLAYBOOK = """\
- name: The role, as a deploy runs it
  hosts: all
  gather_facts: false
  roles:
    - role: rayops.disk.ray_cleanup
  post_tasks:
    - name: Show the CLI's config the role writes (install.yml, not run here)
      ansible.builtin.debug:
        var: _ray_cleanup_config
      tags: [always]
"""
SHIP = {"ray_cleanup_ship_paths": ["/app/logs/*.log", "/tmp/logs/*/*.log"],
        "ray_cleanup_ship_dest": "hdfs://namenode:8020/logs"}
SHIP_TASK = "Schedule the log shipping (only the Ray head node ships; ray-maintenance ship decides)"


def configure(tmp_path, run, prefix, check=False, **variables):
    """The role's configure tasks on localhost, writing only below ``prefix``: ``(results, config, process)``."""
    scratch = {"_ray_cleanup_cron_file": str(prefix / "cron.d" / "rayops-ray-maintenance"),
               "_ray_cleanup_logrotate_file": str(prefix / "logrotate.d" / "rayops-ray"),
               "_ray_cleanup_limits_dir": str(prefix / "limits.d"), "_ray_cleanup_systemd_dir": str(prefix / "system")}
    results, proc = in_scratch(tmp_path, run, prefix, "ray_cleanup_configure", scratch, PLAYBOOK, check, **variables)
    shown = [result for _path, name, result in results if name == "Show the CLI's config the role writes (install.yml, "
             "not run here)"]
    return results, shown[0]["_ray_cleanup_config"], proc


def changed(results):
    return [name for _path, name, result in results if result.get("changed")]


def cron_lines(prefix):
    path = prefix / "cron.d" / "rayops-ray-maintenance"
    return path.read_text().splitlines() if path.exists() else []


def test_the_ship_cron_line_and_config_keys_come_with_paths_and_dest_and_go_without(tmp_path):
    prefix = tmp_path / "node"
    for sub in ("cron.d", "logrotate.d", "limits.d", "metrics"):
        (prefix / sub).mkdir(parents=True)

    results, config, proc = configure(tmp_path, "default", prefix)
    assert failure(results) is None, proc.stdout
    assert (config["ship_paths"], config["ship_dest"], config["ship_disabled"]) == ([], None, False)
    assert not [line for line in cron_lines(prefix) if " ship " in line]
    before = cron_lines(prefix)

    results, config, proc = configure(tmp_path, "dry", prefix, check=True, **SHIP)
    assert failure(results) is None, proc.stdout
    assert changed(results) == [SHIP_TASK]
    assert cron_lines(prefix) == before  # a dry run wrote nothing
    assert (config["ship_paths"], config["ship_dest"]) == (SHIP["ray_cleanup_ship_paths"], SHIP["ray_cleanup_ship_dest"])

    results, config, proc = configure(tmp_path, "real", prefix, **SHIP)
    assert failure(results) is None, proc.stdout
    assert changed(results) == [SHIP_TASK]
    lines = cron_lines(prefix)
    index = lines.index("#Ansible: rayops ray-maintenance ship")
    assert lines[index + 1] == "*/10 * * * * root %s --config %s --metrics-dir %s ship --quiet" % (
        prefix / "bin" / "ray-maintenance", prefix / "etc" / "ray-maintenance.json", prefix / "metrics")
    assert [line for line in lines if line not in (lines[index], lines[index + 1])] == before  # the rest as it was
    assert config["ship_disabled"] is False
    (prefix / "metrics" / "rayops_ray_ship.prom").write_text("# a run's metrics\n")

    results, _config, proc = configure(tmp_path, "again", prefix, **SHIP)
    assert failure(results) is None and changed(results) == [], proc.stdout
    assert (prefix / "metrics" / "rayops_ray_ship.prom").exists()  # kept while ship runs

    minute = dict(SHIP, ray_cleanup_ship_cron_minute="5-59/15", ray_cleanup_ship_disabled=True)
    results, config, proc = configure(tmp_path, "minute", prefix, **minute)
    assert failure(results) is None and changed(results) == [SHIP_TASK], proc.stdout
    assert [line for line in cron_lines(prefix) if line.endswith(" ship --quiet")][0].startswith("5-59/15 * * * * ")
    assert config["ship_disabled"] is True  # the CLI skips and says so; the line stays for its metrics

    unset = {"ray_cleanup_ship_paths": SHIP["ray_cleanup_ship_paths"]}  # no destination: nothing to ship
    results, config, proc = configure(tmp_path, "dry-unset", prefix, check=True, **unset)
    assert failure(results) is None, proc.stdout
    assert sorted(changed(results)) == sorted([SHIP_TASK, "Remove the metrics files when nothing refreshes them (the "
                                                          "stale-metrics alert would fire forever)"])
    assert any(line.endswith(" ship --quiet") for line in cron_lines(prefix))  # still there after a dry run
    assert (prefix / "metrics" / "rayops_ray_ship.prom").exists()

    results, config, proc = configure(tmp_path, "unset", prefix, **unset)
    assert failure(results) is None, proc.stdout
    assert cron_lines(prefix) == before
    assert not (prefix / "metrics" / "rayops_ray_ship.prom").exists()
    assert config["ship_dest"] is None
    results, config, proc = configure(tmp_path, "default-again", prefix)
    assert failure(results) is None and changed(results) == [], proc.stdout
    assert (config["ship_paths"], config["ship_dest"]) == ([], None)
