# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Prometheus alert rules: rendered by real Ansible, checked and unit-tested by the real promtool.

- tests/prometheus/ray_disk_alerts.test.yml: hand-written promtool tests of the rules with the role's
  defaults (labels, annotations, joins, `for:`), run against the rendered file;
- boundary tests generated here from a set of thresholds (just above, at and below each one, before and
  at `for:`), run against rules rendered with those thresholds, so an override is seen to change what fires;
- tests/prometheus/ray_disk_guard_alerts.test.yml: promtool tests (labels, annotations, firing and quiet) of the alerts on the pressure guard's
  metrics and the usage file's deleted-open bytes and inodes, run the same way;
- docs/metrics.md's table of alerts and the rendered rules name the same alerts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.rayops.disk.tests.system.conftest import BIN, REPO, run_ansible

PROMTOOL = "/usr/local/bin/promtool"  # scripts/setup.sh installs it
TEMPLATE = os.path.join(REPO, "roles", "ray_cleanup", "templates", "ray_disk_alerts.rules.yml.j2")
DEFAULTS_FILE = os.path.join(REPO, "roles", "ray_cleanup", "defaults", "main.yml")
STATIC_TESTS = os.path.join(REPO, "tests", "prometheus", "ray_disk_alerts.test.yml")
GUARD_TESTS_FILE = os.path.join(REPO, "tests", "prometheus", "ray_disk_guard_alerts.test.yml")
DIAGNOSE_TESTS_FILE = os.path.join(REPO, "tests", "prometheus", "ray_diagnose_alerts.test.yml")
DOCS = os.path.join(REPO, "docs", "metrics.md")
RULES_NAME = "ray_disk_alerts.rules.yml"  # the name the promtool test files load

# Each alert, its severity and the role variable holding its threshold.
ALERTS = {
    "RayWorkerLargeTmpDirectory": ("warning", "ray_cleanup_alert_tmp_warning_percent"),
    "RayWorkerCriticalTmpDirectory": ("critical", "ray_cleanup_alert_tmp_critical_percent"),
    "RayWorkerDiskUsageHigh": ("warning", "ray_cleanup_alert_disk_free_warning_percent"),
    "RayWorkerDiskCritical": ("critical", "ray_cleanup_alert_disk_free_critical_percent"),
    "RayMaintenanceMetricsStale": ("warning", "ray_cleanup_alert_stale_after_seconds"),
    "RayMaintenanceCleanupFailing": ("warning", None),
    "RayMaintenanceCannotStart": ("warning", None),
    "RayDiskPressureNotRelieved": ("critical", None),
    "RayPressureGuardDown": ("warning", None),
    "RayDeletedOpenFilesHoldSpace": ("warning", None),
    "RayInodesRunningOut": ("warning", None),
    "RayDiskFullLogged": ("critical", None),
    "RayWorkersOOMKilled": ("critical", None),
}
# Alerts whose `for` is fixed in the rules (the others use ray_cleanup_alert_for).
FIXED_FOR = {"RayDiskPressureNotRelieved": "2m", "RayPressureGuardDown": "2m", "RayDeletedOpenFilesHoldSpace": "15m",
             "RayDiskFullLogged": "0m", "RayWorkersOOMKilled": "0m"}
# What each alert's description tells to run on the node (the others: ray-maintenance cleanup --dry-run).
RUNBOOK = {"RayDiskPressureNotRelieved": "ray-maintenance monitor",
           "RayPressureGuardDown": "systemctl status ray-maintenance-guard",
           "RayDeletedOpenFilesHoldSpace": "ray-maintenance monitor",
           "RayDiskFullLogged": "ray-maintenance diagnose", "RayWorkersOOMKilled": "ray-maintenance diagnose"}

OVERRIDES = {
    "ray_cleanup_alert_tmp_warning_percent": "70",
    "ray_cleanup_alert_tmp_critical_percent": "90",
    "ray_cleanup_alert_disk_free_warning_percent": "40",
    "ray_cleanup_alert_disk_free_critical_percent": "10",
    "ray_cleanup_alert_for": "2m",
    "ray_cleanup_alert_stale_after_seconds": "3630",
}


def role_defaults():
    with open(DEFAULTS_FILE) as handle:
        return yaml.safe_load(handle)


def render(dest_dir, **extra_vars):
    """Render the rules template with ansible.builtin.template, the role's defaults and ``extra_vars``."""
    dest = os.path.join(str(dest_dir), RULES_NAME)
    args = ["localhost", "-m", "ansible.builtin.template", "-a", json.dumps({"src": TEMPLATE, "dest": dest}),
            "-e", "@" + DEFAULTS_FILE]
    for name, value in extra_vars.items():
        args += ["-e", "%s=%s" % (name, value)]
    proc = run_ansible("ansible", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CHANGED" in proc.stdout, proc.stdout
    with open(dest) as handle:
        return dest, handle.read()


def promtool(*args):
    proc = subprocess.run([PROMTOOL] + list(args), capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def write_yaml(path, data):
    with open(str(path), "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return str(path)


def rules_of(text):
    groups = yaml.safe_load(text)["groups"]
    assert [group["name"] for group in groups] == ["ray_cluster_monitoring"]
    return {rule["alert"]: rule for rule in groups[0]["rules"]}


# --- boundary tests generated from a set of thresholds -------------------------------------------------------

GIB = 2 ** 30


def minutes(duration):
    match = re.fullmatch(r"(\d+)([mh])", str(duration))
    assert match, "the generator handles whole minutes or hours, not %r" % duration
    return int(match.group(1)) * (60 if match.group(2) == "h" else 1)


def series(name, labels, values):
    return {"series": "%s{%s}" % (name, ",".join('%s="%s"' % item for item in sorted(labels.items()))),
            "values": values}


def alert_sample(alertname, state, labels):
    labels = dict(labels, alertname=alertname, alertstate=state, severity=ALERTS[alertname][0])
    return {"labels": "ALERTS{%s}" % ",".join('%s="%s"' % item for item in sorted(labels.items())), "value": 1}


def alerts_at(eval_minutes, samples):
    """A promql_expr_test: the ALERTS series (pending and firing) at ``eval_minutes``."""
    return {"expr": "ALERTS", "eval_time": "%dm" % eval_minutes, "exp_samples": samples}


def pending_then_firing(for_min, active_min, expected):
    """Before the first evaluation that is true, nothing; until `for` has passed, pending; then firing.

    ``expected`` is a list of (alertname, labels) that are true from ``active_min`` on.
    """
    tests = [alerts_at(active_min - 1, [])] if active_min >= 1 else []
    return tests + [
        alerts_at(active_min + for_min - 1, [alert_sample(name, "pending", labels) for name, labels in expected]),
        alerts_at(active_min + for_min, [alert_sample(name, "firing", labels) for name, labels in expected]),
    ]


def boundary_tests(thresholds):
    """promtool tests of every alert at and around the thresholds in ``thresholds`` (role variable -> value)."""
    tmp_warn = int(thresholds["ray_cleanup_alert_tmp_warning_percent"])
    tmp_crit = int(thresholds["ray_cleanup_alert_tmp_critical_percent"])
    free_warn = int(thresholds["ray_cleanup_alert_disk_free_warning_percent"])
    free_crit = int(thresholds["ray_cleanup_alert_disk_free_critical_percent"])
    stale = int(thresholds["ray_cleanup_alert_stale_after_seconds"])
    for_min = minutes(thresholds["ray_cleanup_alert_for"])
    assert for_min >= 1
    steps = "x%d" % (for_min + 5)
    node = {"instance": "gen:9100", "job": "node"}

    # The tmp dir of target pNN fills NN % of its filesystem; 60 % is the users' own example.
    percents = sorted({tmp_warn - 1, tmp_warn, tmp_warn + 1, tmp_crit - 1, tmp_crit, tmp_crit + 1, 60})
    tmp_series, tmp_expected = [], []
    for percent in percents:
        target = dict(node, target="p%d" % percent, kind="host")
        tmp_series += [series("rayops_ray_filesystem_size_bytes", target, "%d%s" % (100 * GIB, steps)),
                       series("rayops_ray_tmp_bytes", target, "%d%s" % (percent * GIB, steps))]
        if percent > tmp_warn:
            tmp_expected.append(("RayWorkerLargeTmpDirectory", target))
        if percent > tmp_crit:
            tmp_expected.append(("RayWorkerCriticalTmpDirectory", target))

    # Filesystem /fNN has NN % free and holds Ray's tmp dir; two more with 1 % free do not.
    frees = sorted({free_warn - 1, free_warn, free_warn + 1, free_crit - 1, free_crit, free_crit + 1})
    disk_series, disk_expected = [], []
    for free in frees + ["not-ray", "container-only"]:
        fs = dict(node, device="/dev/f%s" % free, fstype="ext4", mountpoint="/f%s" % free)
        avail = free * 10 if isinstance(free, int) else 10
        disk_series += [series("node_filesystem_size_bytes", fs, "1000" + steps),
                        series("node_filesystem_avail_bytes", fs, "%d%s" % (avail, steps))]
        if free == "not-ray":
            continue
        kind = "container" if free == "container-only" else "host"
        info = dict(node, target="t", kind=kind, path="/tmp", mountpoint=fs["mountpoint"])
        disk_series.append(series("rayops_ray_filesystem_info", info, "1" + steps))
        if kind == "host" and free < free_warn:
            disk_expected.append(("RayWorkerDiskUsageHigh", fs))
        if kind == "host" and free < free_crit:
            disk_expected.append(("RayWorkerDiskCritical", fs))

    # One cleanup at 0 and none since (promtool's clock starts at 0), and one that is always fresh.
    stale_active = stale // 60 + 1  # the first whole minute past the limit
    stale_steps = "x%d" % (stale_active + for_min + 5)
    stale_series = [
        series("rayops_ray_cleanup_last_run_timestamp_seconds", {"instance": "old:9100", "job": "node"},
               "0" + stale_steps),
        series("rayops_ray_cleanup_last_run_timestamp_seconds", {"instance": "fresh:9100", "job": "node"},
               "0+60" + stale_steps),
    ]

    failing_series = [series("rayops_ray_cleanup_success", {"instance": "bad:9100", "job": "node"}, "0" + steps),
                      series("rayops_ray_cleanup_success", {"instance": "good:9100", "job": "node"}, "1" + steps)]

    # A cleanup that cannot start says so (only then is the series there); a healthy node has none.
    start_labels = {"instance": "broken:9100", "job": "node", "command": "cleanup", "reason": "config"}
    start_series = [series("rayops_ray_maintenance_start_error", start_labels, "1" + steps),
                    series("rayops_ray_cleanup_success", {"instance": "good:9100", "job": "node"}, "1" + steps)]

    # Inodes used on a tmp dir's filesystem: more than 0.9 alerts, for ray_cleanup_alert_for.
    inode_series, inode_expected = [], []
    for ratio in ("0.89", "0.9", "0.91"):
        target = dict(node, target="i" + ratio, kind="host")
        inode_series.append(series("rayops_ray_filesystem_inodes_used_ratio", target, ratio + steps))
        if float(ratio) > 0.9:
            inode_expected.append(("RayInodesRunningOut", target))

    # The guard's own alerts and the deleted-open bytes have fixed thresholds and `for`: the same in every rendering.
    deleted_for = minutes(FIXED_FOR["RayDeletedOpenFilesHoldSpace"])
    deleted_series, deleted_expected = [], []
    for size in (GIB - 1, GIB, GIB + 1):
        target = dict(node, target="d%d" % size, kind="container")
        deleted_series.append(series("rayops_ray_deleted_open_bytes", target, "%dx%d" % (size, deleted_for + 5)))
        if size > GIB:
            deleted_expected.append(("RayDeletedOpenFilesHoldSpace", target))

    pressure_for = minutes(FIXED_FOR["RayDiskPressureNotRelieved"])
    pressed = {"instance": "pressed:9100", "job": "node"}
    pressure_series = [series("rayops_ray_pressure_active", pressed, "1x10"),
                       series("rayops_ray_pressure_active", {"instance": "relieved:9100", "job": "node"}, "0x10")]

    # A guard that looked at 0 and never since is more than 60 s late from 2m on; one always exactly 60 s late and
    # one on time never alert.
    down_for = minutes(FIXED_FOR["RayPressureGuardDown"])
    stopped = {"instance": "stopped:9100", "job": "node"}
    heartbeat = "rayops_ray_pressure_watch_timestamp_seconds"
    down_series = [series(heartbeat, stopped, "0x10"),
                   series(heartbeat, {"instance": "at-limit:9100", "job": "node"}, "-60+60x10"),
                   series(heartbeat, {"instance": "fresh:9100", "job": "node"}, "0+60x10")]

    # A failure Ray logged (diagnose's counter rises from 0 to 1 at 2m) fires at once, without pending; a node whose
    # counter never moves does not.
    logged = {"instance": "logged:9100", "job": "node"}
    logged_series = [series("rayops_ray_findings_total", dict(node_labels, kind=kind, severity="critical"), values)
                     for kind in ("disk_full", "oom_killed")
                     for node_labels, values in ((logged, "0 0 1x5"), ({"instance": "calm:9100", "job": "node"}, "3x7"))]
    logged_tests = [alerts_at(1, []), alerts_at(2, [alert_sample(name, "firing", logged)
                                                    for name in ("RayDiskFullLogged", "RayWorkersOOMKilled")])]

    def group(name, input_series, promql_tests):
        return {"name": name, "interval": "1m", "input_series": input_series, "promql_expr_test": promql_tests}

    return {
        "rule_files": [RULES_NAME],
        "evaluation_interval": "1m",
        "tests": [
            group("tmp dir", tmp_series, pending_then_firing(for_min, 0, tmp_expected)),
            group("disk free", disk_series, pending_then_firing(for_min, 0, disk_expected)),
            group("stale", stale_series, pending_then_firing(
                for_min, stale_active, [("RayMaintenanceMetricsStale", {"instance": "old:9100", "job": "node"})])),
            group("failing", failing_series, pending_then_firing(
                for_min, 0, [("RayMaintenanceCleanupFailing", {"instance": "bad:9100", "job": "node"})])),
            group("cannot start", start_series, pending_then_firing(
                for_min, 0, [("RayMaintenanceCannotStart", start_labels)])),
            group("inodes", inode_series, pending_then_firing(for_min, 0, inode_expected)),
            group("deleted open", deleted_series, pending_then_firing(deleted_for, 0, deleted_expected)),
            group("pressure not relieved", pressure_series, pending_then_firing(
                pressure_for, 0, [("RayDiskPressureNotRelieved", pressed)])),
            group("guard down", down_series, pending_then_firing(down_for, 2, [("RayPressureGuardDown", stopped)])),
            group("logged failures", logged_series, logged_tests),
        ],
    }


# --- the pressure guard's alerts, the deleted-open bytes and the inodes: labels and annotations -----------------

GUARD_ALERTS = {"RayDiskPressureNotRelieved", "RayPressureGuardDown", "RayDeletedOpenFilesHoldSpace",
                "RayInodesRunningOut"}


def alertnames_tested_by(test_file_data):
    """The alert names a promtool test file expects to fire, and those it expects not to fire somewhere."""
    firing, quiet = set(), set()
    for group in test_file_data["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
        for case in group.get("promql_expr_test", []):
            firing.update(re.findall(r'alertname="(\w+)"', str(case["exp_samples"])))
    return firing, quiet


# --- the tests -------------------------------------------------------------------------------------------------

@pytest.fixture
def default_rules(tmp_path):
    return render(tmp_path)


def test_rendered_rules_pass_promtool_check_and_yamllint(default_rules):
    path, text = default_rules
    assert text.startswith("#\n# Ansible managed\n#\n---\n"), text[:80]  # `ansible_managed | comment` first
    rc, out = promtool("check", "rules", path)
    assert rc == 0 and "SUCCESS: %d rules found" % len(ALERTS) in out, out
    lint = subprocess.run([os.path.join(BIN, "yamllint"), "--strict", "-c", os.path.join(REPO, ".yamllint"), path],
                          capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    assert "{%" not in text and "{#" not in text  # no Jinja left over
    defaults = role_defaults()
    rules = rules_of(text)
    assert set(rules) == set(ALERTS)
    for name, rule in rules.items():
        severity, variable = ALERTS[name]
        assert rule["labels"] == {"severity": severity}, name
        assert rule["for"] == FIXED_FOR.get(name, defaults["ray_cleanup_alert_for"]), name
        if variable:
            assert re.search(r"[<>] %s\b" % defaults[variable], rule["expr"]), (name, rule["expr"])
        assert set(rule["annotations"]) == {"summary", "description"}, name
        assert "{{ $labels.instance }}" in rule["annotations"]["summary"], name  # Prometheus templating kept
        assert RUNBOOK.get(name, "ray-maintenance cleanup --dry-run") in rule["annotations"]["description"], name
    for name in ("RayWorkerDiskUsageHigh", "RayWorkerDiskCritical"):
        assert 'and on (instance, mountpoint) rayops_ray_filesystem_info{kind="host"}' in rules[name]["expr"]


def test_promtool_unit_tests_of_every_alert(default_rules, tmp_path):
    path, text = default_rules
    test_file = shutil.copy(STATIC_TESTS, str(tmp_path))
    rc, out = promtool("test", "rules", test_file)
    assert rc == 0 and "SUCCESS" in out, out
    guard_file = shutil.copy(GUARD_TESTS_FILE, str(tmp_path))
    rc, out = promtool("test", "rules", guard_file)
    assert rc == 0 and "SUCCESS" in out, out
    diagnose_file = shutil.copy(DIAGNOSE_TESTS_FILE, str(tmp_path))
    rc, out = promtool("test", "rules", diagnose_file)
    assert rc == 0 and "SUCCESS" in out, out

    with open(STATIC_TESTS) as handle:
        firing, quiet = alertnames_tested_by(yaml.safe_load(handle))
    with open(GUARD_TESTS_FILE) as handle:
        guard_firing, guard_quiet = alertnames_tested_by(yaml.safe_load(handle))
    with open(DIAGNOSE_TESTS_FILE) as handle:
        diagnose_firing, diagnose_quiet = alertnames_tested_by(yaml.safe_load(handle))
    assert guard_firing == guard_quiet == GUARD_ALERTS
    assert diagnose_firing == diagnose_quiet == {"RayDiskFullLogged", "RayWorkersOOMKilled"}
    firing, quiet = firing | guard_firing | diagnose_firing, quiet | guard_quiet | diagnose_quiet
    assert firing == set(rules_of(text)), "alerts never seen firing: %s" % (set(rules_of(text)) - firing)
    assert quiet == set(rules_of(text)), "alerts never seen quiet: %s" % (set(rules_of(text)) - quiet)


def test_the_guard_tests_catch_a_broken_rule(default_rules, tmp_path):
    """Sanity of the guard's tests: a guard-down alert that fires at exactly 60 s late, and a pressure alert whose
    description lists the filesystems below their high mark instead of those at or above it, fail them."""
    path, text = default_rules
    broken = text.replace("rayops_ray_pressure_watch_timestamp_seconds > 60",
                          "rayops_ray_pressure_watch_timestamp_seconds >= 60")
    broken = broken.replace(">= on (instance, job, resource)", "< on (instance, job, resource)")
    assert "< on (instance, job, resource)" in broken and ">= 60" in broken
    with open(path, "w") as handle:
        handle.write(broken)
    guard_file = shutil.copy(GUARD_TESTS_FILE, str(tmp_path))
    rc, out = promtool("test", "rules", guard_file)
    assert rc != 0, out
    assert "RayPressureGuardDown" in out and "RayDiskPressureNotRelieved" in out, out


def test_the_unit_tests_catch_a_broken_rule(default_rules, tmp_path):
    """Sanity of the hand-written tests: the disk alerts without their join to Ray's filesystems fail them."""
    path, text = default_rules
    broken = text.replace('and on (instance, mountpoint) rayops_ray_filesystem_info{kind="host"}', "")
    assert broken != text
    with open(path, "w") as handle:
        handle.write(broken)
    rc, out = promtool("test", "rules", shutil.copy(STATIC_TESTS, str(tmp_path)))
    assert rc != 0, out
    assert "RayWorkerDiskUsageHigh" in out and "RayWorkerDiskCritical" in out and "w4:9100" in out, out


@pytest.mark.parametrize("overrides", [{}, OVERRIDES], ids=["defaults", "overridden"])
def test_thresholds_decide_what_fires(tmp_path, overrides):
    thresholds = dict(role_defaults(), **overrides)
    path, text = render(tmp_path, **overrides)
    tests = boundary_tests(thresholds)
    firing, _quiet = alertnames_tested_by(tests)
    assert firing == set(ALERTS)
    rc, out = promtool("test", "rules", write_yaml(tmp_path / "boundary.test.yml", tests))
    assert rc == 0 and "SUCCESS" in out, out


def test_overriding_thresholds_changes_what_fires(tmp_path):
    """Rules rendered with other thresholds fail the tests of the defaults, and the other way round."""
    defaults = role_defaults()
    (tmp_path / "overridden").mkdir()
    (tmp_path / "default").mkdir()
    render(tmp_path / "overridden", **OVERRIDES)
    render(tmp_path / "default")

    # With the tmp warning at 70 %, a tmp dir at 60 % does not fire (it does with the defaults, see above).
    for_min = minutes(OVERRIDES["ray_cleanup_alert_for"])
    at_60 = {"rule_files": [RULES_NAME], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            series("rayops_ray_filesystem_size_bytes", {"instance": "w", "target": "host", "kind": "host"}, "100x30"),
            series("rayops_ray_tmp_bytes", {"instance": "w", "target": "host", "kind": "host"}, "60x30")],
        "alert_rule_test": [{"eval_time": "%dm" % (for_min + 10), "alertname": "RayWorkerLargeTmpDirectory"}],
    }]}
    rc, out = promtool("test", "rules", write_yaml(tmp_path / "overridden" / "at60.test.yml", at_60))
    assert rc == 0 and "SUCCESS" in out, out
    rc, out = promtool("test", "rules", write_yaml(tmp_path / "default" / "at60.test.yml", at_60))
    assert rc != 0 and "RayWorkerLargeTmpDirectory" in out, out

    for rules_dir, thresholds in (("overridden", defaults), ("default", dict(defaults, **OVERRIDES))):
        other = write_yaml(tmp_path / rules_dir / "other.test.yml", boundary_tests(thresholds))
        rc, out = promtool("test", "rules", other)
        assert rc != 0, out
        for name in ALERTS:  # every alert's threshold or `for` differs, so its expectations fail
            if name not in FIXED_FOR:  # (those are the same in both)
                assert name in out, (rules_dir, name, out)
    rc, out = promtool("test", "rules", shutil.copy(STATIC_TESTS, str(tmp_path / "overridden")))
    assert rc != 0, out


def docs_alert_table():
    """Rows of the table under '## Alert rules' in docs/metrics.md: name -> (severity, row text)."""
    with open(DOCS) as handle:
        section = handle.read().split("## Alert rules", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for match in re.finditer(r"^\| `(\w+)` \| (\w+) \| (.*) \|$", section, re.MULTILINE):
        rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def test_docs_and_rules_name_the_same_alerts(default_rules):
    _path, text = default_rules
    rules = rules_of(text)
    docs = docs_alert_table()
    assert set(docs) == set(rules), "docs only: %s; rules only: %s" % (set(docs) - set(rules),
                                                                       set(rules) - set(docs))
    defaults = role_defaults()
    for name, (severity, row) in docs.items():
        assert severity == rules[name]["labels"]["severity"], name
        variable = ALERTS[name][1]
        if variable:  # the documented threshold is the default
            assert re.search(r"\b%s\b" % defaults[variable], row), (name, row)
    assert "ray_cleanup_alert_stale_after_seconds" in docs["RayMaintenanceMetricsStale"][1]
