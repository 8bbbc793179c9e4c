# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Grafana dashboard the role ships (roles/ray_cleanup/files/grafana/ray-disk.json) is what
scripts/build_grafana_dashboard.py writes, and each of its queries runs on the dashboard's data source variable, for
the nodes of its node variable, on metrics that exist: those of docs/metrics.md and node_exporter's filesystems."""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, "scripts", "build_grafana_dashboard.py")
SHIPPED = os.path.join(REPO, "roles", "ray_cleanup", "files", "grafana", "ray-disk.json")
PROMTOOL = shutil.which("promtool") or "/usr/local/bin/promtool"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NODE = 'instance=~"$node"'
# The right-hand side of the join that keeps only the filesystems holding Ray's dirs: `and` keeps the left side's
# series (already of the selected nodes), so this selector needs no node filter.
JOIN = 'and on (instance, mountpoint) rayops_ray_filesystem_info{kind="host"}'
UNITS = {"percent", "bytes", "s", "short"}


def generator():
    """scripts/build_grafana_dashboard.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("build_grafana_dashboard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, check=False)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


BOARD = json.loads(read(SHIPPED))


def panels():
    """The dashboard's panels that are not rows (also any inside a collapsed row)."""
    found = []
    for panel in BOARD["panels"]:
        found.extend(inner for inner in [panel] + panel.get("panels", []) if inner["type"] != "row")
    return found


def targets():
    return [(panel["title"], target) for panel in panels() for target in panel["targets"]]


def documented_metrics():
    """The metric names of docs/metrics.md's metric tables (the first cell of each row)."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", read(os.path.join(REPO, "docs", "metrics.md")), re.MULTILINE))


def metric_names(expr):
    """The metric names a PromQL expression selects: names that are no function, keyword, label or duration."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    bare = re.sub(r"\{[^}]*\}", "{}", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "[]", bare)  # range durations
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)  # label lists
    names = re.findall(r"(?<![\w:$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare)
    return {name for name in names if name not in {"and", "or", "unless", "bool", "offset"}}


def test_the_checked_in_dashboard_is_what_the_generator_writes(tmp_path):
    written = tmp_path / "ray-disk.json"
    proc = build("--output", str(written))
    assert proc.returncode == 0, proc.stderr
    generated, shipped = written.read_text(encoding="utf-8"), read(SHIPPED)
    diff = "".join(difflib.unified_diff(shipped.splitlines(True), generated.splitlines(True), SHIPPED, "generated"))
    stale = "the checked-in dashboard is stale: run python scripts/build_grafana_dashboard.py\n"
    assert generated == shipped, stale + diff
    again = tmp_path / "again.json"
    assert build("--output", str(again)).returncode == 0
    assert again.read_bytes() == written.read_bytes()  # nothing in it changes from run to run


def test_check_says_whether_the_file_is_stale_and_writes_nothing(tmp_path):
    copy = tmp_path / "ray-disk.json"
    assert build("--output", str(copy)).returncode == 0
    proc = build("--check", "--output", str(copy))
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr

    fresh = copy.read_text(encoding="utf-8")
    copy.write_text(fresh.replace('"title": "Ray node disks"', '"title": "Edited in Grafana"'), encoding="utf-8")
    edited = copy.read_bytes()
    proc = build("--check", "--output", str(copy))
    assert proc.returncode == 1
    assert proc.stdout.startswith("--- %s\n+++ generated\n" % copy), proc.stdout
    assert '-  "title": "Edited in Grafana",\n+  "title": "Ray node disks",\n' in proc.stdout, proc.stdout
    assert "is stale: run python scripts/build_grafana_dashboard.py" in proc.stderr
    assert copy.read_bytes() == edited

    proc = build("--check", "--output", str(tmp_path / "missing.json"))
    assert proc.returncode == 1 and '+  "uid": "rayops-ray-disk"\n' in proc.stdout
    assert not (tmp_path / "missing.json").exists()


def test_the_file_is_sorted_indented_json_of_the_dashboard():
    text = read(SHIPPED)
    assert text == json.dumps(BOARD, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert (BOARD["uid"], BOARD["title"], BOARD["tags"]) == ("rayops-ray-disk", "Ray node disks", ["ray", "rayops"])
    assert (BOARD["refresh"], BOARD["time"]) == ("1m", {"from": "now-24h", "to": "now"})
    assert "id" not in BOARD  # Grafana gives the id; a provisioned dashboard is known by its uid


def test_the_datasource_and_node_variables():
    variables = {variable["name"]: variable for variable in BOARD["templating"]["list"]}
    assert sorted(variables) == ["datasource", "node"]
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    node = variables["node"]
    assert (node["type"], node["datasource"]) == ("query", DATASOURCE)
    assert node["query"] == "label_values(rayops_ray_usage_timestamp_seconds, instance)"
    assert (node["multi"], node["includeAll"], node["allValue"]) == (True, True, ".+")
    assert node["refresh"] == 2  # on time range change: a node that appears is offered


def test_every_panel_and_query_uses_the_datasource_variable():
    assert len(panels()) >= 9
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), (panel["title"], ref_ids)
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
            assert target["expr"].strip(), (panel["title"], target["refId"])


def test_every_selector_is_of_the_selected_nodes():
    for title, target in targets():
        expr = target["expr"]
        selectors = re.findall(r"[a-zA-Z_:][\w:]*\{[^}]*\}", expr)
        assert selectors, (title, expr)
        for selector in selectors:
            assert NODE in selector or (JOIN.endswith(selector) and expr.endswith(JOIN)), (title, expr, selector)


def test_every_metric_is_documented_or_node_exporters():
    documented = documented_metrics()
    assert {"rayops_ray_usage_timestamp_seconds", "rayops_ray_findings_total"} <= documented  # the tables were read
    assert metric_names('sum by (instance) (increase(rayops_ray_x_total{a="b"}[5m])) > 0 and on (instance) up') == {
        "rayops_ray_x_total", "up"}
    used = set()
    for title, target in targets():
        names = metric_names(target["expr"])
        assert names, (title, target["expr"])
        unknown = {name for name in names if name not in documented and not name.startswith("node_filesystem_")}
        assert not unknown, (title, target["expr"], unknown)
        used |= names
    assert {"node_filesystem_avail_bytes", "rayops_ray_pressure_held_path_bytes"} <= used


def test_every_query_parses(tmp_path):
    """promtool reads each query (as Grafana sends it: the variables replaced) as a recording rule's expression."""
    rules = [{"record": "dashboard:query%d" % index,
              "expr": target["expr"].replace("$node", ".+").replace("$__rate_interval", "2m")}
             for index, (_title, target) in enumerate(targets())]
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: %d rules found" % len(rules) in proc.stdout


def test_panels_are_in_rows_with_a_title_description_and_unit():
    rows = [panel["title"] for panel in BOARD["panels"] if panel["type"] == "row"]
    assert rows == ["Disks", "Ray tmp", "Cleanup", "Pressure guard", "Failures"]
    kinds = [panel["type"] for panel in BOARD["panels"]]
    assert kinds[0] == "row" and "row" not in [kinds[i + 1] for i, kind in enumerate(kinds[:-1]) if kind == "row"]
    assert kinds[-1] != "row"  # every row is followed by its panels
    ids = [panel["id"] for panel in BOARD["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in panels():
        assert panel["title"] and len(panel["description"]) > 40, panel["title"]
        assert {"timeseries", "table", "bargauge", "stat"} >= {panel["type"]}
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit in UNITS or panel["type"] == "table", (panel["title"], unit)
        for target in panel["targets"]:
            if target.get("range"):  # a graph's legend names every label that tells its series apart
                grouped = re.match(r"sum by \(([^)]*)\)", target["expr"])
                labels = grouped.group(1).split(", ") if grouped else ["instance"]
                assert all("{{%s}}" % label in target["legendFormat"] for label in labels), (panel["title"], target)


def test_disk_used_panel_shows_the_alert_thresholds():
    disk = next(panel for panel in panels() if panel["title"].startswith("Disk used"))
    defaults = disk["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percent", 0, 100)
    assert [(step["value"], step["color"]) for step in defaults["thresholds"]["steps"]] == [
        (None, "green"), (70, "orange"), (85, "red")]
    assert disk["targets"][0]["legendFormat"] == "{{instance}} {{mountpoint}}"


def test_dashboard_queries_reads_every_target_back(tmp_path):
    read_back = generator().dashboard_queries(SHIPPED)
    assert read_back == [(title, target["expr"]) for title, target in targets()]
    assert ("Ray sessions, live and stale", 'sum by (instance, state) (rayops_ray_sessions{instance=~"$node"})') in (
        read_back)
    collapsed = {"panels": [{"type": "row", "title": "Hidden", "collapsed": True, "panels": [
        {"type": "timeseries", "title": "Inside", "targets": [{"refId": "A", "expr": "up"}]}]}]}
    path = tmp_path / "collapsed.json"
    path.write_text(json.dumps(collapsed))
    assert generator().dashboard_queries(str(path)) == [("Inside", "up")]
