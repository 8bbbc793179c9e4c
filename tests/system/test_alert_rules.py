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
- tests/prometheus/ray_node_alerts.test.yml: the same for the alerts on node_exporter's own series (the forecasts,
  the inodes free, a node without Ray's metrics, a textfile node_exporter cannot read), rendered with the vars its
  header names;
- docs/metrics.md's table of alerts, docs/runbook.md's sections and the rendered rules name the same alerts.
"""

from __future__ import annotations

import json
import math
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
NODE_TESTS_FILE = os.path.join(REPO, "tests", "prometheus", "ray_node_alerts.test.yml")
DOCS = os.path.join(REPO, "docs", "metrics.md")
RUNBOOK_DOC = os.path.join(REPO, "docs", "runbook.md")
RULES_NAME = "ray_disk_alerts.rules.yml"  # the name the promtool test files load

FILL_WARNING = ("ray_cleanup_alert_fill_warning_percent", "ray_cleanup_alert_fill_warning_hours",
                "ray_cleanup_alert_fill_window")
FILL_CRITICAL = ("ray_cleanup_alert_fill_critical_percent", "ray_cleanup_alert_fill_critical_hours",
                 "ray_cleanup_alert_fill_window")
# Each rule, by (alert, severity): the role variables holding its thresholds. RayNodeDiskFillingUp,
# RayNodeInodesFillingUp and RayNodeInodesLow are two rules each, one per severity, under one name.
RULES = {
    ("RayWorkerLargeTmpDirectory", "warning"): ("ray_cleanup_alert_tmp_warning_percent",),
    ("RayWorkerCriticalTmpDirectory", "critical"): ("ray_cleanup_alert_tmp_critical_percent",),
    ("RayWorkerDiskUsageHigh", "warning"): ("ray_cleanup_alert_disk_free_warning_percent",),
    ("RayWorkerDiskCritical", "critical"): ("ray_cleanup_alert_disk_free_critical_percent",),
    ("RayNodeDiskFillingUp", "warning"): FILL_WARNING,
    ("RayNodeDiskFillingUp", "critical"): FILL_CRITICAL,
    ("RayNodeInodesFillingUp", "warning"): FILL_WARNING,
    ("RayNodeInodesFillingUp", "critical"): FILL_CRITICAL,
    ("RayNodeInodesLow", "warning"): ("ray_cleanup_alert_inodes_free_warning_percent",),
    ("RayNodeInodesLow", "critical"): ("ray_cleanup_alert_inodes_free_critical_percent",),
    ("RayMaintenanceMetricsStale", "warning"): ("ray_cleanup_alert_stale_after_seconds",),
    ("RayMaintenanceCleanupFailing", "warning"): (),
    ("RayMaintenanceCannotStart", "warning"): (),
    ("RayMaintenanceMissing", "warning"): ("ray_cleanup_alert_missing_lookback",),
    ("RayMaintenanceTextfileError", "warning"): ("ray_cleanup_alert_missing_lookback",),
    ("RayDiskPressureNotRelieved", "critical"): (),
    ("RayPressureGuardDown", "warning"): (),
    ("RayDeletedOpenFilesHoldSpace", "warning"): (),
    ("RayInodesRunningOut", "warning"): (),
    ("RayDiskFullLogged", "critical"): (),
    ("RayWorkersOOMKilled", "critical"): (),
}
# Each alert and its severities.
ALERTS = {}
for _name, _severity in RULES:
    ALERTS.setdefault(_name, []).append(_severity)
# Alerts whose `for` is a role variable of its own (the others without a fixed one use ray_cleanup_alert_for).
FOR_VARIABLE = {"RayDiskPressureNotRelieved": "ray_cleanup_alert_pressure_for",
                "RayNodeDiskFillingUp": "ray_cleanup_alert_fill_for",
                "RayNodeInodesFillingUp": "ray_cleanup_alert_fill_for"}
# Alerts whose `for` is fixed in the rules.
FIXED_FOR = {"RayPressureGuardDown": "2m", "RayDeletedOpenFilesHoldSpace": "15m",
             "RayDiskFullLogged": "0m", "RayWorkersOOMKilled": "0m"}
# What each alert's description tells to run on the node (the others: ray-maintenance cleanup --dry-run).
RUNBOOK = {"RayDiskPressureNotRelieved": "ray-maintenance monitor",
           "RayPressureGuardDown": "systemctl status ray-maintenance-guard",
           "RayDeletedOpenFilesHoldSpace": "ray-maintenance monitor",
           "RayDiskFullLogged": "ray-maintenance diagnose", "RayWorkersOOMKilled": "ray-maintenance diagnose",
           "RayMaintenanceMissing": "systemctl status prometheus-node-exporter",
           "RayMaintenanceTextfileError": "journalctl -u prometheus-node-exporter"}

OVERRIDES = {
    "ray_cleanup_alert_tmp_warning_percent": "70",
    "ray_cleanup_alert_tmp_critical_percent": "90",
    "ray_cleanup_alert_disk_free_warning_percent": "40",
    "ray_cleanup_alert_disk_free_critical_percent": "10",
    "ray_cleanup_alert_for": "2m",
    "ray_cleanup_alert_stale_after_seconds": "3630",
    "ray_cleanup_alert_fill_warning_percent": "50",
    "ray_cleanup_alert_fill_critical_percent": "10",
    "ray_cleanup_alert_fill_warning_hours": "6",
    "ray_cleanup_alert_fill_critical_hours": "1",
    "ray_cleanup_alert_fill_for": "30m",
    "ray_cleanup_alert_fill_window": "1h",
    "ray_cleanup_alert_inodes_free_warning_percent": "8",
    "ray_cleanup_alert_inodes_free_critical_percent": "1",
    "ray_cleanup_alert_pressure_for": "5m",
    "ray_cleanup_alert_expected_instances": ["never:9100", "plain:9100", "steady:9100"],
    "ray_cleanup_alert_missing_lookback": "2h",
}
# The groups of the generated boundary tests each overridden variable decides: rules rendered with that one
# variable overridden fail exactly these groups of the defaults' boundary tests.
ALERT_FOR_GROUPS = {"tmp dir", "disk free", "stale", "failing", "cannot start", "inodes", "inodes low",
                    "maintenance missing", "textfile error"}
FORECAST_GROUPS = {"disk filling up", "inodes filling up"}
WINDOW_GROUPS = {"disk filling up after a flat window", "inodes filling up after a flat window"}
LONG_GROUPS = WINDOW_GROUPS | {"maintenance missing"}  # hundreds of minutes of evaluations each
DECIDES = {
    "ray_cleanup_alert_tmp_warning_percent": {"tmp dir"},
    "ray_cleanup_alert_tmp_critical_percent": {"tmp dir"},
    "ray_cleanup_alert_disk_free_warning_percent": {"disk free"},
    "ray_cleanup_alert_disk_free_critical_percent": {"disk free"},
    "ray_cleanup_alert_for": ALERT_FOR_GROUPS,
    "ray_cleanup_alert_stale_after_seconds": {"stale"},
    "ray_cleanup_alert_fill_warning_percent": FORECAST_GROUPS,
    "ray_cleanup_alert_fill_critical_percent": FORECAST_GROUPS,
    "ray_cleanup_alert_fill_warning_hours": FORECAST_GROUPS | WINDOW_GROUPS,
    "ray_cleanup_alert_fill_critical_hours": FORECAST_GROUPS,
    "ray_cleanup_alert_fill_for": FORECAST_GROUPS | WINDOW_GROUPS,
    "ray_cleanup_alert_fill_window": WINDOW_GROUPS,
    "ray_cleanup_alert_inodes_free_warning_percent": {"inodes low"},
    "ray_cleanup_alert_inodes_free_critical_percent": {"inodes low"},
    "ray_cleanup_alert_pressure_for": {"pressure not relieved"},
    "ray_cleanup_alert_expected_instances": {"maintenance missing", "textfile error"},
    "ray_cleanup_alert_missing_lookback": {"maintenance missing"},
}


def role_defaults():
    with open(DEFAULTS_FILE) as handle:
        return yaml.safe_load(handle)


def render(dest_dir, **extra_vars):
    """Render the rules template with ansible.builtin.template, the role's defaults and ``extra_vars``."""
    dest = os.path.join(str(dest_dir), RULES_NAME)
    args = ["localhost", "-m", "ansible.builtin.template", "-a", json.dumps({"src": TEMPLATE, "dest": dest}),
            "-e", "@" + DEFAULTS_FILE]
    for name, value in extra_vars.items():  # key=value passes a string; a list needs JSON
        args += ["-e", json.dumps({name: value}) if isinstance(value, (list, dict)) else "%s=%s" % (name, value)]
    proc = run_ansible("ansible", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CHANGED" in proc.stdout, proc.stdout
    with open(dest) as handle:
        return dest, handle.read()


def render_many(root, variants):
    """``render`` of each ``{name: extra_vars}`` of ``variants`` into ``root/<name>``, by one ansible-playbook run."""
    tasks = []
    for name, extra_vars in variants.items():
        os.makedirs(os.path.join(str(root), name))
        tasks.append({"name": name, "ansible.builtin.template": {
            "src": TEMPLATE, "dest": os.path.join(str(root), name, RULES_NAME), "mode": "0644"}, "vars": extra_vars})
    playbook = write_yaml(os.path.join(str(root), "render.yml"),
                          [{"hosts": "localhost", "gather_facts": False, "vars_files": [DEFAULTS_FILE], "tasks": tasks}])
    proc = run_ansible("ansible-playbook", playbook)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed=%d " % len(variants) in proc.stdout, proc.stdout


def promtool(*args):
    proc = subprocess.run([PROMTOOL] + list(args), capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def write_text(path, text):
    with open(str(path), "w") as handle:
        handle.write(text)
    return str(path)


def write_yaml(path, data):
    with open(str(path), "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return str(path)


def rules_of(text):
    """The rules of the rendered file by (alert, severity): an alert has at most one rule per severity."""
    groups = yaml.safe_load(text)["groups"]
    assert [group["name"] for group in groups] == ["ray_cluster_monitoring"]
    rules = {(rule["alert"], rule["labels"]["severity"]): rule for rule in groups[0]["rules"]}
    assert len(rules) == len(groups[0]["rules"]), "two rules with the same alert name and severity"
    return rules


def node_tests_vars():
    """The vars tests/prometheus/ray_node_alerts.test.yml says the rules it tests are rendered with."""
    with open(NODE_TESTS_FILE) as handle:
        match = re.search(r"^# render vars: (\{.*\})$", handle.read(), re.MULTILINE)
    assert match, "the header of %s names its render vars" % NODE_TESTS_FILE
    return json.loads(match.group(1))


# --- boundary tests generated from a set of thresholds -------------------------------------------------------

GIB = 2 ** 30


def minutes(duration):
    match = re.fullmatch(r"(\d+)([mhd])", str(duration))
    assert match, "the generator handles whole minutes, hours or days, not %r" % duration
    return int(match.group(1)) * {"m": 1, "h": 60, "d": 1440}[match.group(2)]


def series(name, labels, values):
    return {"series": "%s{%s}" % (name, ",".join('%s="%s"' % item for item in sorted(labels.items()))),
            "values": values}


def alert_sample(alertname, state, labels, severity=None):
    if severity is None:
        (severity,) = ALERTS[alertname]  # an alert of one severity
    labels = dict(labels, alertname=alertname, alertstate=state, severity=severity)
    return {"labels": "ALERTS{%s}" % ",".join('%s="%s"' % item for item in sorted(labels.items())), "value": 1}


def alerts_at(eval_minutes, samples, alertname=None):
    """A promql_expr_test: the ALERTS series (pending and firing) of ``alertname`` at ``eval_minutes``; without
    one, of every alert but RayMaintenanceMissing (which an expected instance that never reported raises in every
    group)."""
    selector = '{alertname="%s"}' % alertname if alertname else '{alertname!="RayMaintenanceMissing"}'
    return {"expr": "ALERTS" + selector, "eval_time": "%dm" % eval_minutes, "exp_samples": samples}


def pending_then_firing(for_min, active_min, expected):
    """Before the first evaluation that is true, nothing; until `for` has passed, pending; then firing.

    ``expected`` is a list of (alertname, labels) that are true from ``active_min`` on.
    """
    tests = [alerts_at(active_min - 1, [])] if active_min >= 1 else []
    return tests + [
        alerts_at(active_min + for_min - 1, [alert_sample(name, "pending", labels) for name, labels in expected]),
        alerts_at(active_min + for_min, [alert_sample(name, "firing", labels) for name, labels in expected]),
    ]


def alert_state(truth, minute, for_min):
    """What Prometheus makes of a rule whose expression is true at the minutes where ``truth`` is: None (inactive),
    "pending" (true since less than `for`) or "firing"."""
    if not truth[minute]:
        return None
    since = minute
    while since > 0 and truth[since - 1]:
        since -= 1
    return "firing" if minute - since >= for_min else "pending"


def timeline(alertname, for_min, entries):
    """promql_expr_tests of ALERTS{alertname} around every change of ``entries``: (severity, labels, truth), truth
    being whether that rule's expression is true for those labels at each minute (all of the same length). Checked:
    the minute before each becomes true, when it does, the last minute of pending, the first of firing, its last
    true minute and the one after."""
    length = len(entries[0][2])
    minutes_ = set()
    for _severity, _labels, truth in entries:
        assert len(truth) == length
        for minute, true in enumerate(truth):
            if true and (minute == 0 or not truth[minute - 1]):
                minutes_.update({minute - 1, minute, minute + for_min - 1, minute + for_min})
            if true and minute + 1 < length and not truth[minute + 1]:
                minutes_.update({minute, minute + 1})
    tests = []
    for minute in sorted(m for m in minutes_ if 0 <= m < length):
        samples = [alert_sample(alertname, alert_state(truth, minute, for_min), labels, severity)
                   for severity, labels, truth in entries if alert_state(truth, minute, for_min)]
        tests.append(alerts_at(minute, samples, alertname))
    return tests


class Sampled:
    """A series sampled each minute from 0: its promtool notation and its values, from segments of (first value,
    step, number of values)."""

    def __init__(self, *segments):
        self.notation, self.values = [], []
        for first, step, count in segments:
            assert count >= 1
            if step:
                self.notation.append("%d%s%dx%d" % (first, "+" if step > 0 else "-", abs(step), count - 1))
            else:
                self.notation.append("%dx%d" % (first, count - 1))
            self.values += [first + step * i for i in range(count)]

    def __str__(self):
        return " ".join(self.notation)


def predicted(values, minute, window, horizon):
    """PromQL's predict_linear(s[window], horizon) at ``minute``, with window and horizon in minutes, as an exact
    fraction (numerator, denominator > 0) or None: the least-squares line through the samples in
    [minute - window, minute] (Prometheus 2's range, both ends included), at minute + horizon."""
    points = [(m - minute, values[m]) for m in range(max(0, minute - window), minute + 1)]
    n = len(points)
    if n < 2:
        return None
    xs, ys = [x for x, _y in points], [y for _x, y in points]
    sx, sy = sum(xs), sum(ys)
    sxy, sxx = sum(x * y for x, y in points), sum(x * x for x in xs)
    slope_num, slope_den = n * sxy - sx * sy, n * sxx - sx * sx
    # intercept at `minute` = (sy - slope * sx) / n; the line at minute + horizon:
    return slope_num * (horizon * n - sx) + sy * slope_den, n * slope_den


FORECAST_UNIT = 6000000  # 1 % of a generated filesystem's bytes or inodes
FORECAST_CROSS = 10  # the minute at which a declining series is exactly at its rule's percent


def forecast_groups(thresholds, resource):
    """Two groups of tests of RayNodeDiskFillingUp (bytes) or RayNodeInodesFillingUp (inodes): (name, input series,
    promql tests).

    In the first, for each severity, a steady decline exactly at the rule's percent at FORECAST_CROSS (so just above
    before, just below after), one fast enough to empty within 3/4 of the rule's hours and one that takes twice them;
    and that fast critical decline on a read-only filesystem, on one without Ray's data and on one only a container's
    tmp dir is on, which never fire. In the second, a disk below both percents, flat for one window, then declining
    (empty within 3/4 of the warning's hours): when the forecast says so depends on the window. Each rule's verdict
    on each series at each minute is worked out here, exactly, and asserted to be far from the edge (so that
    promtool's floating point cannot tip it); ALERTS is checked around every change.
    """
    alertname, avail, size_metric = {
        "bytes": ("RayNodeDiskFillingUp", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"),
        "inodes": ("RayNodeInodesFillingUp", "node_filesystem_files_free", "node_filesystem_files")}[resource]
    window = minutes(thresholds["ray_cleanup_alert_fill_window"])
    fill_for = minutes(thresholds["ray_cleanup_alert_fill_for"])
    rules = {}
    for severity in ("warning", "critical"):
        percent = float(thresholds["ray_cleanup_alert_fill_%s_percent" % severity])
        horizon = float(thresholds["ray_cleanup_alert_fill_%s_hours" % severity]) * 60
        assert horizon == int(horizon) and percent * FORECAST_UNIT == int(percent * FORECAST_UNIT)
        rules[severity] = (percent, int(horizon))
    size = 100 * FORECAST_UNIT
    node = {"instance": "gen:9100", "job": "node", "fstype": "ext4"}

    def verdicts(name, values, length):
        """The filesystem /name's series, and (severity, labels, truth) of each rule on it."""
        assert min(values.values[:length]) > 0, name
        fs = dict(node, device="/dev/%s" % name, mountpoint="/%s" % name)
        info = {"instance": node["instance"], "job": node["job"], "target": "t", "path": "/x",
                "kind": "container" if name == "container" else "host", "mountpoint": fs["mountpoint"]}
        input_series = [series(size_metric, fs, "%dx%d" % (size, length - 1)), series(avail, fs, str(values)),
                        series("node_filesystem_readonly", fs, "%dx%d" % (name == "ro", length - 1))]
        if name != "not-ray":
            input_series.append(series("rayops_ray_filesystem_info", info, "1x%d" % (length - 1)))
        entries = []
        for severity, (percent, horizon) in rules.items():
            truth = []
            for minute in range(length):
                forecast = predicted(values.values, minute, window, horizon)
                if forecast is not None:  # far from the edge: 0.001 % of the filesystem
                    assert abs(forecast[0]) >= FORECAST_UNIT // 1000 * forecast[1], (name, severity, minute)
                truth.append(100 * values.values[minute] / size < percent and forecast is not None
                             and forecast[0] < 0 and name not in ("ro", "not-ray", "container"))
            entries.append((severity, fs, truth))
        return input_series, entries

    length = FORECAST_CROSS + fill_for + 4  # each changes by FORECAST_CROSS + 1, then fires after `for`
    steady_series, steady_entries = [], []
    declines = {}
    for severity, (percent, horizon) in rules.items():
        level = int(percent * FORECAST_UNIT)
        for pace, factor in (("fast", 0.75), ("slow", 2)):
            step = int(math.ceil(level / (factor * horizon)))
            declines["%s-%s" % (severity, pace)] = Sampled((level + step * FORECAST_CROSS, -step, length))
    for name in ("ro", "not-ray", "container"):
        declines[name] = declines["critical-fast"]
    for name, values in declines.items():
        input_series, entries = verdicts(name, values, length)
        steady_series += input_series
        steady_entries += entries

    flat = int(rules["critical"][0] * FORECAST_UNIT / 2)
    step = int(math.ceil(flat / (0.75 * rules["warning"][1])))
    length = 2 * window + fill_for + 4  # a full window after the flat one, the forecast is the decline's own
    values = Sampled((flat, 0, window + 1), (flat - step, -step, length - window - 1))
    burst_series, burst_entries = verdicts("burst", values, length)
    warning_truth = burst_entries[0][2]
    assert all(warning_truth[-fill_for - 1:]) and not warning_truth[window], "the warning fires after the flat window"

    return [("%s filling up" % ("disk" if resource == "bytes" else "inodes"), steady_series,
             timeline(alertname, fill_for, steady_entries)),
            ("%s filling up after a flat window" % ("disk" if resource == "bytes" else "inodes"), burst_series,
             timeline(alertname, fill_for, burst_entries))]


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

    # The forecasts, on bytes and on inodes.
    forecasts = forecast_groups(thresholds, "bytes") + forecast_groups(thresholds, "inodes")

    # Filesystem /iNN has NN % of its inodes free (steady) and holds Ray's data; at 1 % free, a read-only one and one
    # without Ray's data do not alert.
    inodes_warn = float(thresholds["ray_cleanup_alert_inodes_free_warning_percent"])
    inodes_crit = float(thresholds["ray_cleanup_alert_inodes_free_critical_percent"])
    inodes_low_series, inodes_low_entries = [], []
    inode_frees = sorted({free for free in (inodes_warn - 1, inodes_warn, inodes_warn + 1, inodes_crit - 1, inodes_crit,
                                            inodes_crit + 1) if free >= 0})
    for free in inode_frees + ["ro", "not-ray"]:
        name = free if isinstance(free, str) else "%g" % free
        fs = dict(node, device="/dev/i%s" % name, fstype="ext4", mountpoint="/i%s" % name)
        files_free = 1000 * (1 if isinstance(free, str) else free)
        assert files_free == int(files_free)
        inodes_low_series += [series("node_filesystem_files", fs, "100000" + steps),
                              series("node_filesystem_files_free", fs, "%d%s" % (files_free, steps)),
                              series("node_filesystem_readonly", fs, "%d%s" % (free == "ro", steps))]
        if free != "not-ray":
            info = dict(node, target="t", kind="host", path="/x", mountpoint=fs["mountpoint"])
            inodes_low_series.append(series("rayops_ray_filesystem_info", info, "1" + steps))
        if not isinstance(free, str):
            inodes_low_entries += [(severity, fs) for severity, percent in (("warning", inodes_warn),
                                                                            ("critical", inodes_crit))
                                   if free < percent]
    inodes_low_tests = [alerts_at(for_min - 1, [alert_sample("RayNodeInodesLow", "pending", fs, severity)
                                                for severity, fs in inodes_low_entries], "RayNodeInodesLow"),
                        alerts_at(for_min, [alert_sample("RayNodeInodesLow", "firing", fs, severity)
                                            for severity, fs in inodes_low_entries], "RayNodeInodesLow")]

    # Ray nodes without Ray's usage metrics: gone:9100 wrote them until 9m and stopped (missing from 10m, until its
    # last sample leaves the lookback, unless it is expected); steady:9100 always writes them; every expected
    # instance but those two never does (missing from the start).
    expected = thresholds["ray_cleanup_alert_expected_instances"]
    lookback = minutes(thresholds["ray_cleanup_alert_missing_lookback"])
    missing_length = 9 + lookback + 3
    usage = "rayops_ray_usage_timestamp_seconds"
    missing_series = [series(usage, {"instance": "gone:9100", "job": "node"}, "0+60x9 stale"),
                      series(usage, {"instance": "steady:9100", "job": "node"}, "0+60x%d" % (missing_length - 1))]
    missing_entries = [("warning", {"instance": "gone:9100"},
                        [10 <= minute and (minute <= 9 + lookback or "gone:9100" in expected)
                         for minute in range(missing_length)])]
    missing_entries += [("warning", {"instance": instance}, [True] * missing_length)
                        for instance in expected if instance not in ("gone:9100", "steady:9100")]
    missing_tests = timeline("RayMaintenanceMissing", for_min, missing_entries)

    # node_exporter cannot read a textfile: on a Ray node (ray:9100) that alerts, on a node without Ray's metrics
    # (plain:9100) only if it is expected, and on every other expected instance (say its first file is the broken
    # one); a Ray node whose files all read (steady:9100) does not.
    textfile_steps = "x%d" % (for_min + 5)
    textfile_series = [series(usage, {"instance": "ray:9100", "job": "node"}, "0+60" + textfile_steps),
                       series(usage, {"instance": "steady:9100", "job": "node"}, "0+60" + textfile_steps),
                       series("node_textfile_scrape_error", {"instance": "steady:9100", "job": "node"},
                              "0" + textfile_steps)]
    textfile_expected = []
    for instance in ["ray:9100", "plain:9100"] + [i for i in expected if i not in ("ray:9100", "plain:9100")]:
        if instance == "steady:9100":
            continue
        labels = {"instance": instance, "job": "node"}
        textfile_series.append(series("node_textfile_scrape_error", labels, "1" + textfile_steps))
        if instance != "plain:9100" or instance in expected:
            textfile_expected.append(("RayMaintenanceTextfileError", labels))

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

    # The pressure alert waits ray_cleanup_alert_pressure_for.
    pressure_for = minutes(thresholds["ray_cleanup_alert_pressure_for"])
    pressed = {"instance": "pressed:9100", "job": "node"}
    pressure_series = [series("rayops_ray_pressure_active", pressed, "1x%d" % (pressure_for + 5)),
                       series("rayops_ray_pressure_active", {"instance": "relieved:9100", "job": "node"},
                              "0x%d" % (pressure_for + 5))]

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
        for test in promql_tests:  # promtool names a failing expression, not its group: the comment does
            test["expr"] += "  # %s" % name
        return {"name": name, "interval": "1m", "input_series": input_series, "promql_expr_test": promql_tests}

    return {
        "rule_files": [RULES_NAME],
        "evaluation_interval": "1m",
        "tests": [
            group("tmp dir", tmp_series, pending_then_firing(for_min, 0, tmp_expected)),
            group("disk free", disk_series, pending_then_firing(for_min, 0, disk_expected)),
        ] + [group(*forecast) for forecast in forecasts] + [
            group("inodes low", inodes_low_series, inodes_low_tests),
            group("maintenance missing", missing_series, missing_tests),
            group("textfile error", textfile_series, pending_then_firing(for_min, 0, textfile_expected)),
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


def failing_groups(out):
    """The generated groups whose expectations promtool's output says failed."""
    return set(re.findall(r'expr: ".*  # ([^"]+)", time:', out))


# --- the pressure guard's alerts, the deleted-open bytes and the inodes: labels and annotations -----------------

GUARD_ALERTS = {"RayDiskPressureNotRelieved", "RayPressureGuardDown", "RayDeletedOpenFilesHoldSpace",
                "RayInodesRunningOut"}
# The alerts of tests/prometheus/ray_node_alerts.test.yml.
NODE_ALERTS = {"RayNodeDiskFillingUp", "RayNodeInodesFillingUp", "RayNodeInodesLow", "RayMaintenanceMissing",
               "RayMaintenanceTextfileError"}


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


def threshold_pattern(variable, value):
    """How a rule's expression shows the value of one of its threshold variables."""
    if variable.endswith("_hours"):  # predict_linear's horizon, in seconds
        return r", %d\) < 0" % round(float(value) * 3600)
    if variable.endswith(("_window", "_lookback")):  # a range
        return r"\[%s\]" % re.escape(str(value))
    return r"[<>] %s\b" % value


def test_rendered_rules_pass_promtool_check_and_yamllint(default_rules):
    path, text = default_rules
    assert text.startswith("#\n# Ansible managed\n#\n---\n"), text[:80]  # `ansible_managed | comment` first
    rc, out = promtool("check", "rules", path)
    assert rc == 0 and "SUCCESS: %d rules found" % len(RULES) in out, out
    lint = subprocess.run([os.path.join(BIN, "yamllint"), "--strict", "-c", os.path.join(REPO, ".yamllint"), path],
                          capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    assert "{%" not in text and "{#" not in text  # no Jinja left over
    defaults = role_defaults()
    rules = rules_of(text)
    assert set(rules) == set(RULES)
    for (name, severity), rule in rules.items():
        assert rule["labels"] == {"severity": severity}, name
        assert rule["for"] == FIXED_FOR.get(name, defaults[FOR_VARIABLE.get(name, "ray_cleanup_alert_for")]), name
        for variable in RULES[(name, severity)]:
            assert re.search(threshold_pattern(variable, defaults[variable]), rule["expr"]), (name, rule["expr"])
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == defaults["ray_cleanup_alert_runbook_url"] + "#" + name.lower()
        assert "{{ $labels.instance }}" in rule["annotations"]["summary"], name  # Prometheus templating kept
        assert RUNBOOK.get(name, "ray-maintenance cleanup --dry-run") in rule["annotations"]["description"], name
    join = 'and on (instance, mountpoint) rayops_ray_filesystem_info{kind="host"}'
    for key in (("RayWorkerDiskUsageHigh", "warning"), ("RayWorkerDiskCritical", "critical")):
        assert join in rules[key]["expr"], key
    for name in ("RayNodeDiskFillingUp", "RayNodeInodesFillingUp", "RayNodeInodesLow"):
        for severity in ("warning", "critical"):  # Ray's disks only, and writable ones
            assert join in rules[name, severity]["expr"] and "node_filesystem_readonly == 0" in rules[name, severity]["expr"]


def test_expected_instances_and_runbook_base_render(tmp_path):
    """Expected instances rendered from a list (as an inventory gives them) and another runbook base."""
    _path, text = render(tmp_path, ray_cleanup_alert_expected_instances=["ray-node-80:9100", "ray-node-81:9100"],
                         ray_cleanup_alert_runbook_url="https://wiki.example.org/ray/runbook")
    rules = rules_of(text)
    for name in ("RayMaintenanceMissing", "RayMaintenanceTextfileError"):
        expr = rules[name, "warning"]["expr"]
        assert ('or on (instance) label_replace(vector(1), "instance", "ray-node-80:9100", "", "") '
                'or on (instance) label_replace(vector(1), "instance", "ray-node-81:9100", "", "")') in expr, expr
    for (name, _severity), rule in rules.items():
        assert rule["annotations"]["runbook_url"] == "https://wiki.example.org/ray/runbook#" + name.lower()
    rc, out = promtool("check", "rules", _path)
    assert rc == 0, out


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
    (tmp_path / "node").mkdir()  # rendered with the vars its header names
    render(tmp_path / "node", **node_tests_vars())
    rc, out = promtool("test", "rules", shutil.copy(NODE_TESTS_FILE, str(tmp_path / "node")))
    assert rc == 0 and "SUCCESS" in out, out

    with open(STATIC_TESTS) as handle:
        firing, quiet = alertnames_tested_by(yaml.safe_load(handle))
    with open(GUARD_TESTS_FILE) as handle:
        guard_firing, guard_quiet = alertnames_tested_by(yaml.safe_load(handle))
    with open(DIAGNOSE_TESTS_FILE) as handle:
        diagnose_firing, diagnose_quiet = alertnames_tested_by(yaml.safe_load(handle))
    with open(NODE_TESTS_FILE) as handle:
        node_firing, node_quiet = alertnames_tested_by(yaml.safe_load(handle))
    assert guard_firing == guard_quiet == GUARD_ALERTS
    assert diagnose_firing == diagnose_quiet == {"RayDiskFullLogged", "RayWorkersOOMKilled"}
    assert node_firing == node_quiet == NODE_ALERTS
    firing = firing | guard_firing | diagnose_firing | node_firing
    quiet = quiet | guard_quiet | diagnose_quiet | node_quiet
    names = {name for name, _severity in rules_of(text)}
    assert firing == names, "alerts never seen firing: %s" % (names - firing)
    assert quiet == names, "alerts never seen quiet: %s" % (names - quiet)
    assert severities_seen_firing(NODE_TESTS_FILE) == {
        "RayNodeDiskFillingUp": {"warning", "critical"}, "RayNodeInodesFillingUp": {"warning", "critical"},
        "RayNodeInodesLow": {"warning", "critical"}, "RayMaintenanceMissing": {"warning"},
        "RayMaintenanceTextfileError": {"warning"}}


def severities_seen_firing(test_file):
    """alertname -> the severities an alert_rule_test of ``test_file`` expects firing."""
    with open(test_file) as handle:
        data = yaml.safe_load(handle)
    seen = {}
    for group in data["tests"]:
        for case in group.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                seen.setdefault(case["alertname"], set()).add(alert["exp_labels"]["severity"])
    return seen


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


FORECAST_JOIN = re.compile(r'(predict_linear\(.*\n\s*and node_filesystem_readonly == 0)\n\s*and on \(instance, '
                           r'mountpoint\) rayops_ray_filesystem_info\{kind="host"\}')
# Rules broken as they could be, and the alerts whose hand-written tests must then fail.
BROKEN_NODE_RULES = {
    "writable filter dropped": (lambda text: re.sub(r"\n\s*and node_filesystem_readonly == 0", "", text),
                                {"RayNodeDiskFillingUp", "RayNodeInodesFillingUp", "RayNodeInodesLow"}),
    "forecasts without the Ray join": (lambda text: FORECAST_JOIN.sub(r"\1", text),
                                       {"RayNodeDiskFillingUp", "RayNodeInodesFillingUp"}),
    "forecast horizon of the warning for both": (
        lambda text: text.replace("], 14400) < 0", "], 86400) < 0"), {"RayNodeDiskFillingUp"}),
    "expected instances dropped": (
        lambda text: re.sub(r'\s*or on \(instance\) label_replace\(vector\(1\), "instance", "[^"]*", "", ""\)', "", text),
        {"RayMaintenanceMissing", "RayMaintenanceTextfileError"}),
    "stopped nodes forgotten at once": (
        lambda text: text.replace("max_over_time(rayops_ray_usage_timestamp_seconds[1d])",
                                  "rayops_ray_usage_timestamp_seconds"), {"RayMaintenanceMissing"}),
}


@pytest.fixture(scope="module")
def node_rules_text(tmp_path_factory):
    """The rules rendered with the node file's variables, once for every breakage."""
    return render(tmp_path_factory.mktemp("node-rules"), **node_tests_vars())[1]


@pytest.mark.parametrize("breakage", sorted(BROKEN_NODE_RULES))
def test_the_node_tests_catch_a_broken_rule(tmp_path, node_rules_text, breakage):
    """Sanity of ray_node_alerts.test.yml: each breakage fails it, naming the alerts it breaks (the same file passes
    with the unbroken rules: test_promtool_unit_tests_of_every_alert; the generated tests are proven to see every
    threshold by test_each_threshold_matters)."""
    breaker, names = BROKEN_NODE_RULES[breakage]
    broken = breaker(node_rules_text)
    assert broken != node_rules_text
    path = write_text(tmp_path / RULES_NAME, broken)
    rc, out = promtool("check", "rules", path)
    assert rc == 0, out  # still valid rules
    rc, out = promtool("test", "rules", shutil.copy(NODE_TESTS_FILE, str(tmp_path)))
    assert rc != 0, out
    assert all(name in out for name in names), (names, out)


@pytest.mark.parametrize("overrides", [{}, OVERRIDES, "node-tests"], ids=["defaults", "overridden", "node-tests"])
def test_thresholds_decide_what_fires(tmp_path, overrides):
    if overrides == "node-tests":
        overrides = node_tests_vars()
    thresholds = dict(role_defaults(), **overrides)
    render(tmp_path, **overrides)
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


def test_every_alert_variable_is_overridden():
    """OVERRIDES (and so the test below) covers every role variable of the rules but the runbook's address."""
    variables = {name for name in role_defaults() if name.startswith("ray_cleanup_alert_")}
    assert set(OVERRIDES) == set(DECIDES) == variables - {"ray_cleanup_alert_runbook_url"}


@pytest.fixture(scope="module")
def one_override_rules(tmp_path_factory):
    """The rules rendered with each variable of OVERRIDES overridden alone: variable -> its dir."""
    root = tmp_path_factory.mktemp("one-override")
    render_many(root, {variable: {variable: value} for variable, value in OVERRIDES.items()})
    return {variable: root / variable for variable in OVERRIDES}


@pytest.mark.parametrize("variable", sorted(OVERRIDES))
def test_each_threshold_matters(one_override_rules, variable):
    """Rules rendered with just this variable overridden fail exactly the generated groups it decides, of the
    defaults' boundary tests (the long groups run only where the variable decides them: they take seconds)."""
    tmp_path = one_override_rules[variable]
    tests = boundary_tests(role_defaults())
    tests["tests"] = [group for group in tests["tests"]
                      if group["name"] not in LONG_GROUPS or group["name"] in DECIDES[variable]]
    rc, out = promtool("test", "rules", write_yaml(tmp_path / "default.test.yml", tests))
    assert rc != 0, out
    assert failing_groups(out) == DECIDES[variable], out


def docs_alert_table():
    """Rows of the table under '## Alert rules' in docs/metrics.md: name -> (severities, row text)."""
    with open(DOCS) as handle:
        section = handle.read().split("## Alert rules", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for match in re.finditer(r"^\| `(\w+)` \| (\w+(?: / \w+)*) \| (.*) \|$", section, re.MULTILINE):
        rows[match.group(1)] = (set(match.group(2).split(" / ")), match.group(3))
    return rows


def test_docs_and_rules_name_the_same_alerts(default_rules):
    _path, text = default_rules
    rules = rules_of(text)
    docs = docs_alert_table()
    names = {name for name, _severity in rules}
    assert set(docs) == names, "docs only: %s; rules only: %s" % (set(docs) - names, names - set(docs))
    defaults = role_defaults()
    for name, (severities, row) in docs.items():
        assert severities == {severity for rule_name, severity in rules if rule_name == name}, name
        for severity in severities:  # the documented thresholds are the defaults
            for variable in RULES[name, severity]:
                assert re.search(r"(?<![\w.])%s(?![\d.])" % re.escape(str(defaults[variable])), row), \
                    (name, variable, row)
    assert "ray_cleanup_alert_stale_after_seconds" in docs["RayMaintenanceMetricsStale"][1]
    assert "ray_cleanup_alert_expected_instances" in docs["RayMaintenanceMissing"][1]


def runbook_sections():
    """The `## ` sections of docs/runbook.md: heading -> text."""
    with open(RUNBOOK_DOC) as handle:
        blocks = re.split(r"^## ", handle.read(), flags=re.MULTILINE)[1:]
    sections = {}
    for block in blocks:
        heading, _newline, body = block.partition("\n")
        assert heading not in sections, heading
        sections[heading.strip()] = body
    return sections


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def commands_named(description):
    """The commands an alert's description says to run: its `code` spans outside Prometheus's {{ }} actions (and
    without one inside: `ray-maintenance {{ $labels.command }}` is filled in when the alert fires)."""
    text = re.sub(r"\{\{.*?\}\}", "\0", description, flags=re.DOTALL)
    return {span.strip() for span in re.findall(r"`([^`]+)`", text)
            if "\0" not in span and span.strip().startswith(("ray-maintenance", "systemctl", "journalctl", "promtool"))}


def test_every_alert_links_its_runbook_section(default_rules):
    """Each alert's runbook_url names a `## ` section of docs/runbook.md, each section is an alert's, and it tells
    to run every command the alert's description names."""
    _path, text = default_rules
    sections = runbook_sections()
    anchors = {github_anchor(heading): heading for heading in sections}
    assert set(sections) == set(ALERTS), \
        "runbook only: %s; rules only: %s" % (set(sections) - set(ALERTS), set(ALERTS) - set(sections))
    base = role_defaults()["ray_cleanup_alert_runbook_url"]
    assert base.endswith("/docs/runbook.md")
    for (name, severity), rule in rules_of(text).items():
        url, _hash, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert url == base and anchors.get(anchor) == name, (name, severity, rule["annotations"]["runbook_url"])
        commands = commands_named(rule["annotations"]["description"])
        assert commands, name
        for command in commands:
            assert "`%s`" % command in sections[name], (name, command)
