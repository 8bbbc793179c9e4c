# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_log_config driven through main(): env files and systemd drop-ins, check, diff, absent, backup."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.rayops.disk.plugins.modules import ray_log_config
from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import fail_module

USERS_ENV = "# executor settings\nPATH=/usr/bin\nexport RAY_BACKEND_LOG_LEVEL=40\nRAY_ROTATION_MAX_BYTES=512M\n"
WANTED = {"rotation_max_bytes": "1MB", "rotation_backup_count": 2, "backend_log_level": "40"}


def test_env_file_dry_run_then_real_then_again(run_module, tmp_path):
    path = tmp_path / ".env"
    path.write_text(USERS_ENV)
    args = dict(WANTED, path=str(path), _ansible_diff=True)
    check = run_module(ray_log_config.main, args, check_mode=True)
    assert path.read_text() == USERS_ENV  # check mode wrote nothing
    real = run_module(ray_log_config.main, args)
    again = run_module(ray_log_config.main, args)
    assert check["changed"] and real["changed"] and not again["changed"]
    assert check["diff"] == real["diff"] and real["diff"]["before"] == USERS_ENV
    assert path.read_text() == ("# executor settings\nPATH=/usr/bin\nexport RAY_BACKEND_LOG_LEVEL=error\n"
                                "RAY_ROTATION_MAX_BYTES=1048576\nRAY_ROTATION_BACKUP_COUNT=2\n")
    assert real["settings"] == {"RAY_ROTATION_MAX_BYTES": "1048576", "RAY_ROTATION_BACKUP_COUNT": "2",
                                "RAY_BACKEND_LOG_LEVEL": "error"}


def test_systemd_drop_in_created_with_mode(run_module, tmp_path):
    path = tmp_path / "ray-head.service.d" / "logging.conf"
    os.makedirs(path.parent)
    result = run_module(ray_log_config.main, dict(WANTED, path=str(path), format="systemd", mode="0640"))
    assert result["changed"]
    assert path.read_text() == ('[Service]\nEnvironment="RAY_ROTATION_MAX_BYTES=1048576"\n'
                                'Environment="RAY_ROTATION_BACKUP_COUNT=2"\nEnvironment="RAY_BACKEND_LOG_LEVEL=error"\n')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert not run_module(ray_log_config.main, dict(WANTED, path=str(path), format="systemd", mode="0640"))["changed"]


def test_check_mode_predicts_a_mode_change_and_makes_none(run_module, tmp_path):
    path = tmp_path / ".env"
    run_module(ray_log_config.main, dict(WANTED, path=str(path), mode="0644"))
    check = run_module(ray_log_config.main, dict(WANTED, path=str(path), mode="0600"), check_mode=True)
    assert check["changed"] is True and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    real = run_module(ray_log_config.main, dict(WANTED, path=str(path), mode="0600"))
    assert real["changed"] is True and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unit_keeps_other_assignments_and_sections(run_module, tmp_path):
    path = tmp_path / "ray.service"
    path.write_text('[Unit]\nDescription=Ray\n\n[Service]\nEnvironment="RAY_BACKEND_LOG_LEVEL=40" "FOO=bar baz"\n'
                    'ExecStart=/usr/bin/ray start --head\n\n[Install]\nWantedBy=multi-user.target\n')
    run_module(ray_log_config.main, {"path": str(path), "format": "systemd", "backend_log_level": "ERROR"})
    text = path.read_text()
    assert "Environment='FOO=bar baz'\n" in text and 'Environment="RAY_BACKEND_LOG_LEVEL=error"\n' in text
    assert text.index("RAY_BACKEND_LOG_LEVEL") < text.index("[Install]")
    assert "=40" not in text and text.endswith("[Install]\nWantedBy=multi-user.target\n")


def test_absent_removes_the_settings_and_keeps_a_backup(run_module, tmp_path):
    path = tmp_path / "environment"
    path.write_text(USERS_ENV)
    result = run_module(ray_log_config.main, {"path": str(path), "state": "absent", "backup": True})
    assert result["changed"] and path.read_text() == "# executor settings\nPATH=/usr/bin\n"
    with open(result["backup_file"]) as backup:
        assert backup.read() == USERS_ENV
    assert not run_module(ray_log_config.main, {"path": str(path), "state": "absent"})["changed"]
    assert not run_module(ray_log_config.main, {"path": str(tmp_path / "missing"), "state": "absent"})["changed"]
    assert not (tmp_path / "missing").exists()


def test_zero_means_no_rotation_and_is_written(run_module, tmp_path):
    path = tmp_path / ".env"
    run_module(ray_log_config.main, {"path": str(path), "rotation_max_bytes": "0"})
    assert path.read_text() == "RAY_ROTATION_MAX_BYTES=0\n"


@pytest.mark.parametrize("extra, message", [
    ({"rotation_max_bytes": "512 megs"}, "rotation_max_bytes '512 megs' is not a size"),
    ({"rotation_backup_count": 0}, "rotation_backup_count 0 must be a whole number of 1 or more"),
    ({"backend_log_level": "verbose"}, "backend_log_level 'verbose' is not a level Ray knows"),
    ({"backend_log_level": "45"}, "backend_log_level '45' is not a level Ray knows"),
    ({}, "nothing to set: give rotation_max_bytes, rotation_backup_count or backend_log_level"),
])
def test_bad_values_fail_naming_them_and_change_nothing(run_module, tmp_path, extra, message):
    path = tmp_path / ".env"
    path.write_text(USERS_ENV)
    assert message in fail_module(ray_log_config.main, dict(extra, path=str(path)))["msg"]
    assert path.read_text() == USERS_ENV


def test_a_directory_is_refused(run_module, tmp_path):
    result = fail_module(ray_log_config.main, {"path": str(tmp_path), "backend_log_level": "info"})
    assert "path %r is a directory" % str(tmp_path) in result["msg"]
