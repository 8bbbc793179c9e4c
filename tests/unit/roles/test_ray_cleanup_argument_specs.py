# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's defaults, its argument specs and the variables its files use stay in lockstep."""

from __future__ import annotations

import os
import re

import pytest
import yaml

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                    "roles", "ray_cleanup")
TYPES = {"bool": bool, "int": int, "float": (int, float), "str": str, "path": str, "list": list, "dict": dict,
         "raw": object}


def load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return yaml.safe_load(handle)


DEFAULTS = load("defaults", "main.yml")
SPECS = load("meta", "argument_specs.yml")["argument_specs"]


def without_tags(node):
    """Tasks without their ``tags`` (tag names look like variables)."""
    if isinstance(node, list):
        return [without_tags(item) for item in node]
    if isinstance(node, dict):
        return {key: without_tags(value) for key, value in node.items() if key != "tags"}
    return node


def used_variables():
    """Every ``ray_cleanup_*`` name the role's tasks, handlers, templates and internal vars mention."""
    found = set()
    for folder in ("tasks", "handlers", "templates", "vars"):
        for name in os.listdir(os.path.join(ROLE, folder)):
            with open(os.path.join(ROLE, folder, name)) as handle:
                text = handle.read()
            if folder != "templates":
                text = yaml.safe_dump(without_tags(yaml.safe_load(text)))
            found.update(re.findall(r"\bray_cleanup_[a-z0-9_]+", text))
    return found


def test_every_default_has_a_spec_and_back():
    assert sorted(DEFAULTS) == sorted(SPECS["main"]["options"])


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_spec_default_and_type_match_the_default(name):
    spec = SPECS["main"]["options"][name]
    assert spec["description"]
    assert isinstance(DEFAULTS[name], TYPES[spec["type"]]), (name, spec["type"], DEFAULTS[name])
    assert spec["default"] == DEFAULTS[name]
    if "choices" in spec:
        assert DEFAULTS[name] in spec["choices"]


def test_prometheus_entry_point_documents_its_variables_as_main_does():
    for name, spec in SPECS["prometheus"]["options"].items():
        assert spec == SPECS["main"]["options"][name], name


def test_grafana_entry_point_documents_its_variables_as_main_does():
    grafana = SPECS["grafana"]["options"]
    assert sorted(grafana) == sorted(name for name in DEFAULTS if name.startswith("ray_cleanup_grafana_"))
    for name, spec in grafana.items():
        assert spec == SPECS["main"]["options"][name], name


def test_every_variable_the_role_uses_is_a_default():
    assert used_variables() - set(DEFAULTS) == set()


def test_every_default_is_used():
    assert set(DEFAULTS) - used_variables() == set()
