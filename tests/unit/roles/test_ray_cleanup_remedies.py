# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The open-files remedy (ray_cleanup_nofile_limit), run for real on localhost into a scratch prefix: nothing by
default, pam_limits' file and a drop-in per unit when asked, nothing again on a second run, all gone at 0; a unit
name that is not one is refused before anything is written."""

from __future__ import annotations

from ansible_collections.rayops.disk.tests.unit.roles.test_ray_cleanup_preflight import failure, in_scratch


def remedies(tmp_path, run, prefix, check=False, **variables):
    """The role's preflight and remedies on localhost, writing only below ``prefix``; results of each task run."""
    scratch = {"_ray_cleanup_limits_dir": str(prefix / "limits.d"), "_ray_cleanup_systemd_dir": str(prefix / "system")}
    return in_scratch(tmp_path, run, prefix, "ray_cleanup_remedies", scratch, check=check, **variables)


def paths_in(result):
    """Every ``dest`` and ``path`` a task's result names, its loop items' too."""
    found = [result[key] for key in ("dest", "path") if isinstance(result.get(key), str)]
    return found + [path for item in result.get("results") or [] for path in paths_in(item)]


def changed(results):
    return [name for _path, name, result in results if result.get("changed")]


def test_the_open_files_limit_is_set_only_when_asked_and_removed_at_zero(tmp_path):
    prefix = tmp_path / "node"
    (prefix / "limits.d").mkdir(parents=True)
    results, proc = remedies(tmp_path, "default", prefix, ray_cleanup_nofile_units=["ray-head.service"])
    assert failure(results) is None and changed(results) == [], proc.stdout
    assert sorted(p.name for p in prefix.iterdir()) == ["limits.d"] and not list((prefix / "limits.d").iterdir())

    asked = {"ray_cleanup_nofile_limit": 65536, "ray_cleanup_nofile_units": ["ray-head.service", "ray-worker@1.service"]}
    results, proc = remedies(tmp_path, "dry", prefix, check=True, **asked)
    assert failure(results) is None and changed(results) == [
        "Set the open-files limit of the user Ray runs as (pam_limits)",
        "Create the drop-in directories of the systemd units that start Ray",
        "Give the systemd units that start Ray the open-files limit"], proc.stdout
    assert not (prefix / "system").exists() and not list((prefix / "limits.d").iterdir())  # the dry run wrote nothing
    planned = [path for _path, _name, result in results if result.get("changed") for path in paths_in(result)]
    assert len(planned) == 2 and all(path.startswith(str(prefix) + "/") for path in planned), planned  # the scratch

    results, proc = remedies(tmp_path, "real", prefix, **asked)
    assert failure(results) is None, proc.stdout
    written = [path for _path, _name, result in results if result.get("changed") for path in paths_in(result)]
    assert len(written) == 5 and all(path.startswith(str(prefix) + "/") for path in written), written
    limits = (prefix / "limits.d" / "rayops-ray-nofile.conf").read_text().splitlines()
    assert [line for line in limits if not line.startswith("#")] == [  # Ray runs as root here: root and everyone
        "root soft nofile 65536", "root hard nofile 65536", "* soft nofile 65536", "* hard nofile 65536"]
    for unit in asked["ray_cleanup_nofile_units"]:
        drop_in = (prefix / "system" / (unit + ".d") / "rayops-nofile.conf").read_text().splitlines()
        assert [line for line in drop_in if not line.startswith("#")] == ["[Service]", "LimitNOFILE=65536"]
    results, proc = remedies(tmp_path, "again", prefix, **asked)
    assert failure(results) is None and changed(results) == [], proc.stdout

    results, proc = remedies(tmp_path, "off", prefix, ray_cleanup_nofile_units=asked["ray_cleanup_nofile_units"])
    assert failure(results) is None and changed(results) == [
        "Remove the open-files limit the role set (ray_cleanup_nofile_limit 0)"], proc.stdout
    assert not list((prefix / "limits.d").iterdir())
    assert not list((prefix / "system" / "ray-head.service.d").iterdir())


def test_a_unit_name_that_is_not_one_is_refused_before_anything_is_written(tmp_path):
    prefix = tmp_path / "node"
    results, _proc = remedies(tmp_path, "bad", prefix, ray_cleanup_nofile_limit=65536,
                              ray_cleanup_nofile_units=["../../etc/passwd"])
    message = failure(results)
    assert message.startswith('ray_cleanup_nofile_units ["../../etc/passwd"] is not allowed: give a list, each entry '
                              "a systemd unit name"), message
    assert not prefix.exists()
