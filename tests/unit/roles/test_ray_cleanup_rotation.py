# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's table of what logrotate takes per Ray version is the collection's own (``_ray_version``).

``ray_tmp_usage`` reports ``log_rotation.logrotate_globs`` from the same facts; the role renders them into its
logrotate config (tests/system/test_ray_rotation.py runs that config on real Ray of each version).
"""

from __future__ import annotations

import os
import re

import yaml

from ansible_collections.rayops.disk.plugins.module_utils._ray_version import OUTPUT_ROTATED_SINCE, logrotate_globs

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                    "roles", "ray_cleanup")


def role_vars():
    with open(os.path.join(ROLE, "vars", "main.yml")) as handle:
        return yaml.safe_load(handle)


def test_the_role_takes_what_the_collection_says_ray_leaves():
    table = role_vars()["_ray_cleanup_ray_unrotated"]
    assert table["before_2_53"] == logrotate_globs("2.40.0") == logrotate_globs("2.60.0", ray_rotation_set=False)
    assert table["since_2_53"] == logrotate_globs("2.53.0") == logrotate_globs("2.60.0")


def test_the_role_switches_at_the_same_version():
    expression = role_vars()["_ray_cleanup_ray_rotates_output"]
    assert "is version('%d.%d', '>=')" % OUTPUT_ROTATED_SINCE in expression


def test_the_version_form_accepts_versions_and_refuses_the_rest():
    regex = re.compile(role_vars()["_ray_cleanup_forms"]["ray_version"]["regex"])
    for good in ("auto", "2.40.0", "2.53", "2.60.0rc1", "3.0.0.dev0", "2.9.3+local.1"):
        assert regex.match(good), good
    for bad in ("", "2", "latest", "2.40.0\n", "2.40.0 ", "v2.40.0", "2.40.0\n    postrotate", "2.40.0;id"):
        assert not regex.match(bad), bad
