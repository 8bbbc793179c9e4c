# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One option table (_options.OPTIONS): the modules' documentation, the CLI's keys and the role's defaults agree."""

from __future__ import annotations

import importlib
import os
import re

import pytest
import yaml

from ansible_collections.rayops.disk.plugins.module_utils import _cli
from ansible_collections.rayops.disk.plugins.module_utils._options import (
    KINDS,
    OPTIONS,
    CleanupOptions,
    UsageOptions,
    argument_spec,
    config_defaults,
    config_keys,
    option_names,
    option_values,
)
from ansible_collections.rayops.disk.plugins.modules import ray_diagnose, ray_tmp_usage, ray_worker_cleanup

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
ROLE = os.path.join(REPO, "roles", "ray_cleanup")
MODULES = [(ray_tmp_usage, UsageOptions), (ray_worker_cleanup, CleanupOptions)]
FRAGMENT_PREFIX = "rayops.disk."


def documented_options(module) -> dict:
    """The options a module documents, its own and its fragments', by name, with where each comes from."""
    doc = yaml.safe_load(module.DOCUMENTATION)
    found = {name: (spec, module.__name__) for name, spec in (doc.get("options") or {}).items()}
    for fragment in doc.get("extends_documentation_fragment") or []:
        if not fragment.startswith(FRAGMENT_PREFIX):
            continue
        source = importlib.import_module("ansible_collections.rayops.disk.plugins.doc_fragments."
                                         + fragment[len(FRAGMENT_PREFIX):])
        for name, spec in yaml.safe_load(source.ModuleDocFragment.DOCUMENTATION)["options"].items():
            assert name not in found, "%s is documented in %s and in fragment %s" % (name, found[name][1], fragment)
            found[name] = (spec, fragment)
    return found


def doc_facts(doc: dict) -> dict:
    """What the table decides about a documented option: type, elements, choices, default (and suboptions')."""
    facts = {key: doc[key] for key in ("type", "elements", "choices", "default", "aliases") if key in doc}
    if "suboptions" in doc:
        facts["suboptions"] = {name: doc_facts(sub) for name, sub in doc["suboptions"].items()}
    return facts


def spec_facts(spec: dict) -> dict:
    """The same from an argument_spec entry, shaped as documentation writes it."""
    facts = {key: spec[key] for key in ("type", "elements", "choices", "default", "aliases") if key in spec}
    if "options" in spec:
        facts["suboptions"] = {name: spec_facts(sub) for name, sub in spec["options"].items()}
    return facts


@pytest.mark.parametrize("module, options_class", MODULES, ids=lambda item: getattr(item, "__name__", ""))
def test_documented_options_are_the_tables(module, options_class):
    documented = documented_options(module)
    names = option_names(options_class)
    assert sorted(documented) == sorted(names), "documented options differ from %s's fields" % options_class.__name__
    spec = argument_spec(names)
    for name in names:
        doc, where = documented[name]
        assert doc_facts(doc) == spec_facts(spec[name]), "%s (documented in %s) disagrees with _options.OPTIONS" % (
            name, where)


def test_ray_diagnose_documents_every_option_it_takes_as_it_takes_it():
    documented = documented_options(ray_diagnose)
    specs = ray_diagnose.module_argument_spec()
    assert sorted(documented) == sorted(specs)
    for name, spec in specs.items():
        doc, where = documented[name]
        assert doc_facts(doc) == spec_facts(spec), "%s (documented in %s) disagrees with its argument_spec" % (
            name, where)


def test_the_shared_fragment_is_extended_by_both_modules_and_holds_only_shared_options():
    shared = set(option_names(UsageOptions)) & set(option_names(CleanupOptions))
    fragment = importlib.import_module("ansible_collections.rayops.disk.plugins.doc_fragments.targets")
    names = set(yaml.safe_load(fragment.ModuleDocFragment.DOCUMENTATION)["options"])
    assert names <= shared
    for module, _options_class in MODULES:
        assert "rayops.disk.targets" in yaml.safe_load(module.DOCUMENTATION)["extends_documentation_fragment"]


def test_the_check_sees_a_documented_default_that_drifted():
    spec = argument_spec(["max_age_hours", "age_by", "thresholds"])
    assert doc_facts({"type": "float", "default": 12}) != spec_facts(spec["max_age_hours"])
    assert doc_facts({"type": "list", "elements": "str", "default": ["mtime"], "choices": ["mtime", "atime", "ctime"]}
                     ) != spec_facts(spec["age_by"])
    levels = (("info", 80), ("warning", 85), ("critical", 95))
    thresholds = {"type": "dict", "default": {}, "suboptions": {
        level: {"type": "float", "default": value} for level, value in levels}}
    assert doc_facts(thresholds) != spec_facts(spec["thresholds"])


@pytest.mark.parametrize("options_class", [UsageOptions, CleanupOptions], ids=lambda c: c.__name__)
def test_dataclass_defaults_are_the_tables(options_class):
    made = options_class()
    for name in option_names(options_class):
        assert getattr(made, name) == OPTIONS[name].default, name
    if hasattr(made, "thresholds"):  # a fresh dict each
        assert options_class().thresholds is not made.thresholds


def test_every_option_has_a_known_kind_a_description_and_a_valid_example():
    for name, option in OPTIONS.items():
        assert option.kind in KINDS, name
        assert option.description and "\n" not in option.description, name
        if option.config:  # the example is what a fix message tells the user to write: it must pass
            assert _cli._check_value(name, option.example) is not None or option.nullable, name
        for choice in option.choices:
            assert isinstance(choice, str), name


def test_cli_keys_and_defaults_are_the_tables():
    assert list(_cli.KEYS) == list(config_keys())
    assert _cli.defaults() == config_defaults()
    module_only = (set(option_names(UsageOptions)) | set(option_names(CleanupOptions))) - set(_cli.KEYS)
    assert "activity" in module_only  # the CLI derives it from the command
    assert all(not OPTIONS[name].config for name in module_only)
    assert all(OPTIONS[name].config for name in _cli.KEYS)
    assert config_defaults()["thresholds"] is not config_defaults()["thresholds"]


def test_option_values_makes_lists_tuples_and_leaves_the_rest():
    values = option_values({"patterns": ["a*"], "spill_dirs": [], "tmp_dir": "/tmp", "ray_temp_dir": None,
                            "thresholds": {"info": 1}})
    assert values == {"patterns": ("a*",), "spill_dirs": (), "tmp_dir": "/tmp", "ray_temp_dir": None,
                      "thresholds": {"info": 1}}


# The keys the role writes into the CLI's config whose ray_cleanup_<key> default is not the table's default,
# and why: (role variable, its default, why).  Every other key the role writes must default as the table does.
ROLE_EXCEPTIONS = {
    "ray_temp_dir": ("ray_cleanup_ray_temp_dir", "", '"" is written as null: discovered, as the table\'s None'),
    "uv_cache_dir": ("ray_cleanup_uv_cache_dir", "", '"" is written as null: the default cache, as the table\'s None'),
    "containers": ("ray_cleanup_containers", "auto", "the role resolves auto when it deploys (a Docker socket there) "
                   "and writes true or false"),
    "ray_users": ("ray_cleanup_ray_user", "", 'one user; "" (root) is written as [], the table\'s ()'),
    "audit_log": ("ray_cleanup_audit_log", True, "the role audits removals, in <log_dir>/cleanup-audit.jsonl"),
    "log_file": ("ray_cleanup_log_dir", "/var/log/rayops", "the role logs runs, in <log_dir>/ray-maintenance.log"),
    "metrics_dir": ("ray_cleanup_metrics_dir", "/var/lib/prometheus/node-exporter",
                    "the role writes metrics for node_exporter (ray_cleanup_metrics)"),
    "rotation_max_bytes": ("ray_cleanup_ray_rotation_max_bytes", "1MB",
                           "the role sets Ray's log rotation (ray_cleanup_ray_log_config) and checks it is in effect"),
    "rotation_backup_count": ("ray_cleanup_ray_rotation_backup_count", 2, "as rotation_max_bytes"),
    "archive_dest": ("ray_cleanup_archive_dest", "", '"" is written as null: nothing archived, as the table\'s None'),
    "archive_endpoint_url": ("ray_cleanup_archive_endpoint_url", "", '"" is written as null: AWS, as the table\'s None'),
    "archive_node": ("ray_cleanup_archive_node", "", '"" is written as null: the host name, as the table\'s None'),
    "archive_keep_days": ("ray_cleanup_archive_keep_days", 0, "0 is written as null: archives are kept"),
    "archive_bandwidth_limit": ("ray_cleanup_archive_bandwidth_limit", "", '"" is written as null: no limit'),
    "ship_dest": ("ray_cleanup_ship_dest", "", '"" is written as null: nothing shipped, as the table\'s None'),
}


def role_config_expressions() -> dict:
    """``_ray_cleanup_config`` of the role's vars: config key to the Jinja expression of its value.

    An internal variable it names (``_ray_cleanup_containers``) is followed: its expression is appended.
    """
    with open(os.path.join(ROLE, "vars", "main.yml")) as handle:
        internal = yaml.safe_load(handle)
    text = internal["_ray_cleanup_config"]
    keys = list(re.finditer(r"'(\w+)':\s*", text))
    assert keys, "no keys found in _ray_cleanup_config"
    found = {}
    for match, following in zip(keys, keys[1:] + [None]):
        expression = text[match.end():following.start() if following else len(text)].rstrip(" ,}\n")
        for name in re.findall(r"(?<!\w)_ray_cleanup_\w+", expression):
            expression += " ;; " + str(internal.get(name, ""))
        found[match.group(1)] = expression
    return found


def comparable(value):
    """Lists and tuples alike, numbers as floats (YAML's 24 is the table's 24.0)."""
    if isinstance(value, (list, tuple)):
        return [comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def test_role_writes_only_config_keys_and_defaults_them_as_the_table_does():
    with open(os.path.join(ROLE, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    expressions = role_config_expressions()
    assert set(expressions) <= set(config_keys()), "the role writes keys the CLI does not know"
    for key, expression in sorted(expressions.items()):
        if key in ROLE_EXCEPTIONS:
            variable, expected, why = ROLE_EXCEPTIONS[key]
            assert re.search(r"(?<!\w)%s\b" % variable, expression), "%s is not written from %s" % (key, variable)
            assert defaults[variable] == expected, "%s: %s defaults to %r, not %r (%s); update ROLE_EXCEPTIONS" % (
                key, variable, defaults[variable], expected, why)
            continue
        variable = "ray_cleanup_" + key
        assert re.match(r"%s\b" % variable, expression), (
            "config key %s is written from %r, not from %s: add it to ROLE_EXCEPTIONS with why"
            % (key, expression, variable))
        assert comparable(defaults[variable]) == comparable(OPTIONS[key].default), (
            "%s defaults to %r, the option table (_options.OPTIONS) to %r" % (variable, defaults[variable],
                                                                              OPTIONS[key].default))
    for key in ("ray_temp_dir", "uv_cache_dir"):  # "" is unset: the role writes None, the CLI reads "" as None too
        assert expressions[key].endswith("or None") and OPTIONS[key].default is None


def test_the_role_check_sees_a_drifted_default():
    assert comparable({"info": 80, "warning": 90, "critical": 95}) == comparable(OPTIONS["thresholds"].default)
    assert comparable({"info": 80, "warning": 85, "critical": 95}) != comparable(OPTIONS["thresholds"].default)
    assert comparable(["ray_tmp_*", "pip-*"]) != comparable(OPTIONS["patterns"].default)
    assert comparable("5G") != comparable(OPTIONS["min_tmp_size"].default)


def test_the_node_cli_docs_list_every_config_key_with_the_tables_default():
    with open(os.path.join(REPO, "docs", "node-cli.md")) as handle:
        text = handle.read()
    section = text.split("## Config file", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`\w+`(?: / `\w+`)*) \| ([^|]*) \|", section, re.MULTILINE)
    documented = {}
    for keys, default in rows:
        names = re.findall(r"`(\w+)`", keys)
        for name in names:
            documented[name] = default.strip() if len(names) == 1 else None
    assert sorted(documented) == sorted(config_keys()), "docs/node-cli.md's table and the config keys differ"
    for name, default in documented.items():
        if default and default.startswith("`") and default.endswith("`"):
            value = default.strip("`")
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
            assert comparable(value) == comparable(OPTIONS[name].default), (name, default)
    unset = re.search(r"`null` \(or `\"\"`\) for (.*?) means its default", section, re.DOTALL).group(1)
    assert sorted(re.findall(r"`(\w+)`", unset)) == sorted(name for name, option in config_keys().items()
                                                           if option.nullable)
