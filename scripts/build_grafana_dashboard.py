# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the Grafana dashboard the role ships, ``roles/ray_cleanup/files/grafana/ray-disk.json``.

    python scripts/build_grafana_dashboard.py                 # (re)write the checked-in file
    python scripts/build_grafana_dashboard.py --check         # exit 1 with a diff when it is stale, 0 when not
    python scripts/build_grafana_dashboard.py --output PATH   # write (or --check) PATH instead

The dashboard is made with Grafana's own typed builders (``grafana_foundation_sdk``, requirements/dev.txt) from the
metrics in docs/metrics.md and node_exporter's ``node_filesystem_*``. The JSON is sorted, indented and holds
nothing that changes from run to run, so the same code writes the same bytes; tests/unit/roles/
test_ray_cleanup_grafana_dashboard.py fails when the checked-in file is not what this script writes.
``dashboard_queries()`` reads every panel's queries back from a dashboard file, for tests that run them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import typing

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD_PATH = os.path.join(REPO, "roles", "ray_cleanup", "files", "grafana", "ray-disk.json")

UID = "rayops-ray-disk"
TITLE = "Ray node disks"
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The filesystems that hold Ray's tmp dir or a Ray temp root on the host (one rayops_ray_filesystem_info series each).
RAY_FILESYSTEMS = 'and on (instance, mountpoint) rayops_ray_filesystem_info{kind="host"}'

Panel = typing.Union[timeseries.Panel, table.Panel, bargauge.Panel]


def query(ref_id: str, expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    """A PromQL query on the dashboard's data source: over the time range, or its last value as a table row."""
    target = prometheus.Dataquery().ref_id(ref_id).expr(expr).datasource(DATASOURCE)
    target = target.editor_mode(prometheus_models.QueryEditorMode.CODE)
    if instant:
        return target.instant().format(prometheus_models.PromQueryFormat.TABLE)
    return target.range().legend_format(legend)


def thresholds(*steps: tuple[float, str]) -> dashboard.ThresholdsConfig:
    """Green below the first step, then each step's colour from its value on."""
    return dashboard.ThresholdsConfig().mode(dashboard_models.ThresholdsMode.ABSOLUTE).steps(
        [dashboard_models.Threshold(value=None, color="green")]
        + [dashboard_models.Threshold(value=value, color=color) for value, color in steps])


def legend() -> common.VizLegendOptions:
    """A table under the graph: each series' name, last and highest value."""
    return (common.VizLegendOptions().show_legend(True).display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))


def graph(title: str, description: str, unit: str, *targets: prometheus.Dataquery) -> timeseries.Panel:
    """A time series panel of ``targets``, all series in the tooltip."""
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
             .height(9).span(12).legend(legend())
             .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI)
                      .sort(common_models.SortOrder.DESCENDING)))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def bars(panel: timeseries.Panel) -> timeseries.Panel:
    """Draw ``panel``'s series as bars, one per interval (what each interval added), from 0."""
    return panel.draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(80).line_width(1).min(0)


def stacked(panel: timeseries.Panel) -> timeseries.Panel:
    """Stack ``panel``'s series on one another (their parts of one total), filled."""
    return panel.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL)).fill_opacity(60).min(0)


def organize(rename: dict[str, str], order: list[str]) -> dashboard_models.DataTransformerConfig:
    """Keep the columns of ``order`` in that order (the rest hidden), renamed by ``rename``."""
    hidden = {name: True for name in ("Time", "__name__", "job")}
    return dashboard_models.DataTransformerConfig(id_val="organize", options={
        "excludeByName": hidden, "indexByName": {name: index for index, name in enumerate(order)},
        "renameByName": rename})


def grid(title: str, description: str, *targets: prometheus.Dataquery) -> table.Panel:
    """A table of instant ``targets``, one row per series."""
    panel = (table.Panel().title(title).description(description).datasource(DATASOURCE).height(9).span(12)
             .cell_height(common_models.TableCellHeight.SM))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def colour_text(name: str, *properties: dashboard_models.DynamicConfigValue) -> tuple[
        str, list[dashboard_models.DynamicConfigValue]]:
    """An override of the column ``name``: its text coloured by its thresholds or value mapping, and more."""
    return name, [dashboard_models.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
                  *properties]


def disks_row() -> list[Panel]:
    """Disks: how full the filesystems holding Ray's dirs are, in bytes and inodes, and when they fill up."""
    used = (graph("Disk used, filesystems holding Ray's dirs",
                  "How full each filesystem that holds Ray's tmp dir or a Ray temp root is, as node_exporter reads it "
                  "now (df's view, live between cleanups). Orange from 70 % and red from 85 %: the "
                  "RayWorkerDiskUsageHigh and RayWorkerDiskCritical alerts fire there (less than 30 % and 15 % free, "
                  "by default). Run ray-maintenance monitor on the node to see what fills it.",
                  "percent",
                  query("A", '100 * (1 - node_filesystem_avail_bytes{instance=~"$node"} / '
                        'node_filesystem_size_bytes{instance=~"$node"}) ' + RAY_FILESYSTEMS,
                        "{{instance}} {{mountpoint}}"))
            .min(0).max(100).thresholds(thresholds((70, "orange"), (85, "red")))
            .thresholds_style(common.GraphThresholdsStyleConfig().mode(common_models.GraphThresholdsStyleMode.DASHED)))
    full = (graph("Time until full, filling filesystems only",
                  "At the pace free space shrank over the last 30 minutes, how long until each filesystem holding "
                  "Ray's dirs is full. Only filesystems that are filling show; an empty panel means none is. "
                  "Under an hour: find the writer now (ray-maintenance monitor on the node).",
                  "s",
                  query("A", 'node_filesystem_avail_bytes{instance=~"$node"} / '
                        '-deriv(node_filesystem_avail_bytes{instance=~"$node"}[30m]) > 0 ' + RAY_FILESYSTEMS,
                        "{{instance}} {{mountpoint}}"))
            .min(0))
    inodes = (graph("Inodes used, filesystems holding Ray's dirs",
                    "Share of the inodes (file slots) used on each filesystem holding Ray's dirs. When it reaches "
                    "100 % no new file can be made although bytes are free; many small files (Ray sessions, "
                    "runtime envs) use them up. Orange from 80 %, red from 90 % (RayInodesRunningOut).",
                    "percent",
                    query("A", '100 * (1 - node_filesystem_files_free{instance=~"$node"} / '
                          'node_filesystem_files{instance=~"$node"}) ' + RAY_FILESYSTEMS,
                          "{{instance}} {{mountpoint}}"))
              .min(0).max(100).thresholds(thresholds((80, "orange"), (90, "red"))))
    return [used.span(8), full.span(8), inodes.span(8)]


def ray_tmp_row() -> list[Panel]:
    """Ray tmp: what fills Ray's tmp dirs, by category, and how many sessions are live or stale."""
    categories = stacked(graph(
        "Ray tmp by category, selected nodes together",
        "Bytes in Ray's tmp dirs (hosts and containers) by what they are, summed over the selected nodes, as the "
        "last measurement (hourly cleanup, monitor every 15 minutes) found them. stale_sessions, logs_old and "
        "tmp_patterns are what cleanup removes; live_session and spilled_objects belong to running work.",
        "bytes",
        query("A", 'sum by (category) (rayops_ray_category_bytes{instance=~"$node"})', "{{category}}")))
    sessions = graph(
        "Ray sessions, live and stale",
        "Ray session dirs on each node: live is the running session, stale every other one (whatever its age). "
        "Stale sessions are what cleanup removes; a count that only grows means cleanup is not running or cannot "
        "remove them (see the Cleanup row).",
        "short",
        query("A", 'sum by (instance, state) (rayops_ray_sessions{instance=~"$node"})', "{{instance}} {{state}}"))
    return [categories, sessions.min(0).decimals(0)]


def cleanup_row() -> list[Panel]:
    """Cleanup: what each node's last cleanup freed, how long ago it ran and whether it succeeded."""
    freed = (bargauge.Panel().title("Freed by each node's last cleanup")
             .description("Bytes the most recent hourly cleanup freed on each node (hosts and containers "
                          "together). 0 is normal when nothing was old enough to remove.")
             .datasource(DATASOURCE).unit("bytes").min(0).height(9).span(12)
             .orientation(common_models.VizOrientation.HORIZONTAL)
             .display_mode(common_models.BarGaugeDisplayMode.BASIC)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(thresholds())
             .with_target(query("A", 'sum by (instance) (rayops_ray_cleanup_freed_bytes{instance=~"$node"})',
                                "{{instance}}")))
    last = (grid("Last cleanup: how long ago, and did it succeed",
                 "One row per node. Cleanup runs hourly: orange after 2 hours, red after 3 hours "
                 "(RayMaintenanceMetricsStale, by default) - then check cron on the node. Succeeded no: a target "
                 "had an error or the run was locked out (RayMaintenanceCleanupFailing); read "
                 "/var/log/rayops/ray-maintenance.log and run ray-maintenance cleanup --dry-run.",
                 query("A", 'time() - rayops_ray_cleanup_last_run_timestamp_seconds{instance=~"$node"}', instant=True),
                 query("B", 'rayops_ray_cleanup_success{instance=~"$node"}', instant=True))
            .with_transformation(dashboard_models.DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(organize({"instance": "Node", "Value #A": "Since last cleanup",
                                           "Value #B": "Succeeded"},
                                          ["instance", "Value #A", "Value #B"]))
            .override_by_name(*colour_text(
                "Since last cleanup",
                dashboard_models.DynamicConfigValue(id_val="unit", value="s"),
                dashboard_models.DynamicConfigValue(id_val="thresholds", value=thresholds(
                    (7200, "orange"), (10800, "red")).build())))
            .override_by_name(*colour_text(
                "Succeeded",
                dashboard_models.DynamicConfigValue(id_val="mappings", value=[dashboard_models.ValueMap(options={
                    "0": dashboard_models.ValueMappingResult(text="no", color="red", index=0),
                    "1": dashboard_models.ValueMappingResult(text="yes", color="green", index=1)})]))))
    return [freed, last]


def pressure_row() -> list[Panel]:
    """Pressure guard: its reclaims and what they freed, and what it was not allowed to take."""
    reclaims = bars(graph(
        "Pressure-guard reclaims, by result",
        "Reclaims the pressure guard (ray-maintenance watch) made when a disk crossed its high mark: relieved "
        "(back below the low mark), not_relieved (still full after all it may take: see What blocked relief), "
        "locked (another cleanup was running), failed (its journal: journalctl -u ray-maintenance-guard).",
        "short",
        query("A", 'sum by (instance, result) (increase(rayops_ray_pressure_reclaims_total{instance=~"$node"}'
              '[$__rate_interval]))', "{{instance}} {{result}}")))
    tiers = stacked(bars(graph(
        "Freed by the pressure guard, by tier",
        "Bytes the guard's reclaims freed, by tier, in the order it takes them: unneeded (stale sessions, old "
        "logs), deleted_logs (truncated deleted-but-open logs), litter_idle, litter_busy, docker_prune.",
        "bytes",
        query("A", 'sum by (instance, tier) (increase(rayops_ray_pressure_freed_bytes_total{instance=~"$node"}'
              '[$__rate_interval]))', "{{instance}} {{tier}}"))))
    held = graph(
        "What blocked relief: bytes held, by owner",
        "After a reclaim that could not bring a disk below its high mark: the bytes each of the 5 largest owners "
        "holds in the measured dirs, which the guard may not take (running work, another user's files). Gone "
        "once the disk is below its high mark.",
        "bytes",
        query("A", 'rayops_ray_pressure_held_bytes{instance=~"$node"}', "{{instance}} {{target}} {{owner}}"))
    paths = (grid("What blocked relief: largest entries left",
                  "The 5 largest entries the guard left in the measured dirs after a reclaim that did not relieve "
                  "the disk, with their owner: what to look at (or ask the owner about) first.",
                  query("A", 'rayops_ray_pressure_held_path_bytes{instance=~"$node"}', instant=True))
             .with_transformation(organize({"instance": "Node", "target": "Target", "path": "Path", "owner": "Owner",
                                            "Value": "Bytes"},
                                           ["instance", "target", "path", "owner", "Value"]))
             .override_by_name("Bytes", [dashboard_models.DynamicConfigValue(id_val="unit", value="bytes")])
             .sort_by([common.TableSortByFieldState().display_name("Bytes").desc(True)]))
    return [reclaims, tiers, held.min(0), paths]


def failures_row() -> list[Panel]:
    """Failures: what ray-maintenance diagnose reads in Ray's logs and sees on the node, now and over time."""
    now = (grid("Diagnose findings now",
                "Findings of ray-maintenance diagnose (run after each cleanup) per node: events in the logs of "
                "sessions changed within 24 hours, and live conditions (open files near the limit, memory near "
                "Ray's threshold, small /dev/shm, disk pressure, deleted open files). Run ray-maintenance diagnose "
                "on the node for the sessions, processes, log lines and the fix.",
                query("A", 'sum by (instance, kind, severity) (rayops_ray_findings_current{instance=~"$node"}) > 0',
                      instant=True))
           .with_transformation(organize({"instance": "Node", "kind": "Kind", "severity": "Severity",
                                          "Value": "Findings"},
                                         ["instance", "severity", "kind", "Value"]))
           .sort_by([common.TableSortByFieldState().display_name("Findings").desc(True)]))
    events = bars(graph(
        "Failures read in Ray's logs, over time",
        "New events diagnose read in Ray's logs, by kind (disk_full, oom_killed, worker_died, ...), per interval. "
        "disk_full and oom_killed raise critical alerts (RayDiskFullLogged, RayWorkersOOMKilled).",
        "short",
        query("A", 'sum by (instance, kind) (increase(rayops_ray_findings_total{instance=~"$node"}'
              '[$__rate_interval]))', "{{instance}} {{kind}}")))
    return [now, events]


ROWS: list[tuple[str, typing.Callable[[], list[Panel]]]] = [
    ("Disks", disks_row), ("Ray tmp", ray_tmp_row), ("Cleanup", cleanup_row), ("Pressure guard", pressure_row),
    ("Failures", failures_row)]


def variables() -> list[dashboard.DatasourceVariable | dashboard.QueryVariable]:
    """``datasource`` (a Prometheus) and ``node`` (its instances that export Ray usage; All by default)."""
    source = (dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
              .description("The Prometheus that scrapes the Ray nodes' node_exporter."))
    node = (dashboard.QueryVariable("node").label("Node").datasource(DATASOURCE)
            .description("Ray nodes (instance label) whose node_exporter exports rayops.disk's metrics.")
            .query("label_values(rayops_ray_usage_timestamp_seconds, instance)")
            .multi(True).include_all(True).all_value(".+")
            .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard_models.VariableSort.NATURAL_ASC)
            .current(dashboard_models.VariableOption(selected=True, text=["All"], value=["$__all"])))
    return [source, node]


def build() -> dashboard.Dashboard:
    """The whole dashboard: its settings, variables, and each row followed by its panels (numbered from 1)."""
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["ray", "rayops"])
             .description("Disks of the Ray nodes and what rayops.disk's ray-maintenance does about them. Provisioned "
                          "by the role ray_cleanup (tasks_from: grafana); made by scripts/build_grafana_dashboard.py: "
                          "change that, not this copy.")
             .refresh("1m").time("now-24h", "now").timezone("browser")
             .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
             .annotation(dashboard.AnnotationQuery().name("Annotations & Alerts").built_in(1).enable(True).hide(True)
                         .datasource(dashboard_models.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                         .icon_color("rgba(0, 211, 255, 1)").type("dashboard"))
             .variables(variables()))
    number = 0
    for title, panels in ROWS:
        number += 1
        board = board.with_row(dashboard.Row(title).id(number))
        for panel in panels():
            number += 1
            board = board.with_panel(panel.id(number))
    return board


def render() -> str:
    """The dashboard as the file holds it: sorted keys, two-space indent, a final newline."""
    return json.dumps(build().build(), cls=JSONEncoder, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def dashboard_queries(path: str = DASHBOARD_PATH) -> list[tuple[str, str]]:
    """Every query of the dashboard in ``path`` as ``(panel title, expr)``, in the order of its panels."""
    with open(path, encoding="utf-8") as handle:
        board = json.load(handle)
    found = []
    for panel in board["panels"]:
        for inner in [panel] + panel.get("panels", []):
            found.extend((inner["title"], target["expr"]) for target in inner.get("targets", []))
    return found


def stale_diff(path: str, text: str) -> str:
    """A unified diff from the file at ``path`` (empty when missing) to ``text``; "" when they are equal."""
    try:
        with open(path, encoding="utf-8") as handle:
            current = handle.read()
    except FileNotFoundError:
        current = ""
    return "".join(difflib.unified_diff(current.splitlines(keepends=True), text.splitlines(keepends=True),
                                        fromfile=path, tofile="generated"))


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard, or with ``--check`` say whether the file is what would be written (0) or not (1)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff when the file differs")
    parser.add_argument("--output", default=DASHBOARD_PATH, help="the dashboard file (default: %(default)s)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        diff = stale_diff(args.output, text)
        if diff:
            sys.stdout.write(diff)
            sys.stderr.write("%s is stale: run python scripts/build_grafana_dashboard.py\n" % args.output)
            return 1
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
