# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ray-maintenance``, the node CLI: monitor, check and clean a Ray node from cron (see docs/node-cli.md).

``main(argv)`` runs one command and returns its exit code.  It reads a JSON
config, runs the same code as the modules (``collect_usage``, ``Cleanup``),
writes node_exporter textfile metrics (``_metrics``) and logs one line per run.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import logging.handlers
import os
import sys
import textwrap
import time
from typing import Any, Optional

from ansible_collections.rayops.disk.plugins.module_utils._cleanup import Cleanup, CleanupOptions
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, printable
from ansible_collections.rayops.disk.plugins.module_utils._metrics import (
    CLEANUP_FILE,
    USAGE_FILE,
    cleanup_succeeded,
    cleanup_text,
    mountpoint_of,
    usage_text,
    write_textfile,
)
from ansible_collections.rayops.disk.plugins.module_utils._optional import docker, missing, psutil
from ansible_collections.rayops.disk.plugins.module_utils._remove import MAX_LISTED
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes
from ansible_collections.rayops.disk.plugins.module_utils._usage import (
    CATEGORIES,
    LEVELS,
    UsageOptions,
    collect_usage,
    rotation_messages,
    untrusted_message,
    untrusted_messages,
)

PROG = "ray-maintenance"
CONFIG_ENV = "RAY_MAINTENANCE_CONFIG"
DEFAULT_CONFIG = "/etc/rayops/ray-maintenance.json"
EXIT_OK, EXIT_PROBLEM, EXIT_CRITICAL, EXIT_USAGE = 0, 1, 2, 3
DEBIAN_PACKAGES = {"psutil": "python3-psutil", "docker": "python3-docker"}
LOGGER = logging.getLogger(PROG)
LOGGER.addHandler(logging.NullHandler())  # no log_file: nothing logged (errors are printed to stderr)
LOGGER.propagate = False
LOGGER.setLevel(logging.INFO)

# Config keys: (kind, an example for the fix).  Defaults come from CleanupOptions and UsageOptions.
KEYS = {
    "tmp_dir": ("text", '"/tmp"'),
    "ray_temp_dir": ("text?", '"/tmp/ray"'),
    "patterns": ("list", '["ray_tmp_*", "pip-*", "tmp*"]'),
    "exclude": ("list", '["*/checkpoints/*"]'),
    "max_age_hours": ("number", "24"),
    "age_by": ("list", '["mtime", "atime", "ctime"]'),
    "min_tmp_size": ("size", '"5GB"'),
    "cpu_idle_percent": ("number", "5"),
    "sample_seconds": ("number", "1"),
    "busy_titles": ("list", '["ray::ServeReplica*"]'),
    "idle_titles": ("list", '["ray::Poller*"]'),
    "clean_stale_sessions": ("bool", "true"),
    "clean_old_logs": ("bool", "true"),
    "clean_stale_spill": ("bool", "true"),
    "spill_dirs": ("list", '["/mnt/spill"]'),
    "host": ("bool", "true"),
    "containers": ("bool", "false"),
    "container_name_filter": ("text", '"ray-worker"'),
    "container_tmp_dir": ("text", '"/tmp"'),
    "docker_host": ("text?", '"unix:///var/run/docker.sock"'),
    "docker_prune": ("bool", "false"),
    "force": ("bool", "false"),
    "thresholds": ("thresholds", '{"info": 80, "warning": 90, "critical": 95}'),
    "lock_file": ("text", '"/run/rayops/ray-cleanup.lock"'),
    "lock_timeout": ("number", "30"),
    "audit_log": ("text?", '"/var/log/rayops/cleanup-audit.jsonl"'),
    "log_file": ("text?", '"/var/log/rayops/ray-maintenance.log"'),
    "metrics_dir": ("text?", '"/var/lib/prometheus/node-exporter"'),
    "scan_workers": ("count?", "2"),
    "uv_cache_dir": ("text?", '"/home/apiuser/.cache/uv"'),
    "ray_users": ("list", '["apiuser"]'),
    "rotation_max_bytes": ("size?", '"1MB"'),
    "rotation_backup_count": ("count?", "2"),
}
KIND_NAMES = {"text": "a string", "list": "a list of strings", "number": "a number", "bool": "true or false",
              "size": "a size (a string such as \"5GB\", or bytes)", "thresholds": "an object",
              "count": "a whole number"}

EPILOG = """\
examples:
  ray-maintenance monitor                      what fills this node's disk, as a table
  ray-maintenance --json monitor               the same as one JSON document
  ray-maintenance check --threshold 85         exit 1 at 85 %% used, 2 at thresholds.critical
  ray-maintenance cleanup --dry-run            what cleanup would remove (removes nothing)
  ray-maintenance --config /etc/rayops/ray-maintenance.json cleanup --quiet      (cron)

exit codes:
  0  ran (check: below the warning threshold); a stopped container is no error
     (cleanup: skipped_not_running)
  1  a target had an error, Docker could not be reached (with containers on),
     docker prune failed, metrics could not be written, or cleanup was locked
     out by another run (check: warning)
  2  check: critical
  3  bad input: unknown option, bad or unreadable config, missing Python library

config: --config FILE, else $%s,
  else %s when it exists, else built-in defaults.
%s
See docs/node-cli.md and docs/metrics.md.
""" % (CONFIG_ENV, DEFAULT_CONFIG, textwrap.fill("keys: " + ", ".join(KEYS) + ".", 79, subsequent_indent="  "))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors exit 3 (bad input), not argparse's 2 (``check``'s critical)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, "%s: error: %s\n" % (self.prog, message))


def _add_global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options valid before and after the command; a command's copy sets only what is given."""
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS if suppress else None,
                        help="JSON config (default: $%s, else %s if it exists)" % (CONFIG_ENV, DEFAULT_CONFIG))
    for flag, text in (("--json", "print the result as one JSON document instead of text"),
                       ("--quiet", "print nothing on success (for cron); errors still go to stderr"),
                       ("--no-metrics", "do not write the textfile metrics, even with metrics_dir set")):
        parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS if suppress else False, help=text)


def build_parser() -> argparse.ArgumentParser:
    """The parser; global options are accepted before or after the command (cron puts --quiet last)."""
    parser = _Parser(prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Keep a Ray node's disk from filling up: measure, check and clean it\n"
                     "(the rayops.disk modules' code, for the command line and cron).")
    _add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("monitor", parents=[common], help="a table: filesystem, what fills the tmp dir, sessions, "
                        "containers", description="Measure the host (and containers) and print a table; "
                        "write the usage metrics.")
    check = commands.add_parser("check", parents=[common], help="exit 0 ok, 1 warning, 2 critical",
                                description="Exit 0 ok, 1 warning, 2 critical: the used % of the disk holding "
                                "the tmp dir, the worst of the host and its containers; write the usage metrics.")
    check.add_argument("--threshold", type=float, metavar="N",
                       help="warning at N %% used (default: the config's thresholds.warning)")
    check.add_argument("--critical", type=float, metavar="N",
                       help="critical at N %% used (default: the config's thresholds.critical)")
    cleanup = commands.add_parser("cleanup", parents=[common], help="clean idle targets (ray_worker_cleanup)",
                                  description="The ray_worker_cleanup run: idle targets only (unless --force), "
                                  "only what is older than max_age_hours, never a live session; then write the "
                                  "cleanup and usage metrics.")
    cleanup.add_argument("--dry-run", action="store_true",
                         help="remove nothing, say what would go (no metrics, no audit log)")
    cleanup.add_argument("--max-age-hours", type=float, metavar="N", help="only what is older goes")
    cleanup.add_argument("--force", action="store_true", default=None, help="clean busy targets too")
    cleanup.add_argument("--min-tmp-size", metavar="SIZE", help="leave a target alone below it (0: always clean)")
    cleanup.add_argument("--containers", action=argparse.BooleanOptionalAction, default=None,
                         help="also clean the running containers named like container_name_filter")
    return parser


def _config_path(given: Optional[str]) -> Optional[str]:
    """The config file to read: the flag, else the environment, else the default if it exists."""
    if given:
        return given
    if os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV]
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def defaults() -> dict:
    """Every config key with its built-in default."""
    found = {f.name: f.default for f in dataclasses.fields(CleanupOptions) if f.init}
    found.update(thresholds=UsageOptions().thresholds, scan_workers=None, log_file=None, metrics_dir=None,
                 uv_cache_dir=None, rotation_max_bytes=None, rotation_backup_count=None)
    return found


def _check_value(key: str, value: Any) -> Any:
    """The value of a config key if its JSON type is right (``""`` and null mean unset), else ``UsageError``."""
    kind, example = KEYS[key]
    if kind.endswith("?"):
        if value is None or value == "":
            return None
        kind = kind[:-1]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    good = {"text": isinstance(value, str), "number": number, "bool": isinstance(value, bool),
            "list": isinstance(value, list) and all(isinstance(item, str) for item in value),
            "size": number or isinstance(value, str), "count": number and float(value).is_integer(),
            "thresholds": isinstance(value, dict)}[kind]
    if not good:
        raise UsageError("%s %s is not %s; for example \"%s\": %s"
                         % (key, json.dumps(value), KIND_NAMES[kind], key, example))
    if kind == "thresholds":
        merged = dict(UsageOptions().thresholds)
        for level, percent in value.items():
            if level not in LEVELS[1:]:
                raise UsageError("thresholds has no level %s; valid: %s" % (json.dumps(level), ", ".join(LEVELS[1:])))
            if not isinstance(percent, (int, float)) or isinstance(percent, bool):
                raise UsageError("thresholds.%s %s is not a number; for example \"%s\": 90"
                                 % (level, json.dumps(percent), level))
            merged[level] = percent
        return merged
    if kind == "list":
        return tuple(value)
    return int(value) if kind == "count" else value


def _no_constant(name: str):
    """Refuse ``NaN`` and ``Infinity``, which Python's JSON reader would take."""
    raise ValueError("%s is not a JSON number" % name)


def load_config(path: Optional[str]) -> dict:
    """Built-in defaults overlaid with the JSON object in ``path`` (when given), checked key by key."""
    config = defaults()
    if path is None:
        return config
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"), parse_constant=_no_constant)
    except OSError as exc:
        raise UsageError("cannot read config %s: %s; give a readable file with --config or $%s"
                         % (path, exc.strerror or exc, CONFIG_ENV)) from exc
    except ValueError as exc:
        raise UsageError("config %s is not valid JSON: %s" % (path, exc)) from exc
    if not isinstance(data, dict):
        raise UsageError("config %s must hold a JSON object ({\"key\": value, ...}), not %s"
                         % (path, type(data).__name__))
    for key, value in data.items():
        if key not in KEYS:
            raise UsageError("config %s: unknown key %s; valid keys: %s" % (path, json.dumps(key), ", ".join(KEYS)))
        try:
            config[key] = _check_value(key, value)
        except UsageError as exc:
            raise UsageError("config %s: %s" % (path, exc)) from exc
    return config


def apply_flags(config: dict, args: argparse.Namespace) -> dict:
    """The config with the command line's values on top."""
    flags = {"max_age_hours": getattr(args, "max_age_hours", None), "force": getattr(args, "force", None),
             "min_tmp_size": getattr(args, "min_tmp_size", None), "containers": getattr(args, "containers", None)}
    return dict(config, **{key: value for key, value in flags.items() if value is not None})


def cleanup_options(config: dict) -> CleanupOptions:
    """The cleanup options of a config."""
    return CleanupOptions(**{f.name: config[f.name] for f in dataclasses.fields(CleanupOptions) if f.init})


def usage_options(config: dict, activity: bool = False) -> UsageOptions:
    """The usage options of a config: what cleanup measures, plus thresholds, scan_workers and the uv cache."""
    return dataclasses.replace(cleanup_options(config).usage_options(), thresholds=config["thresholds"],
                               scan_workers=config["scan_workers"], uv_cache_dir=config["uv_cache_dir"],
                               activity=activity, rotation_max_bytes=config["rotation_max_bytes"],
                               rotation_backup_count=config["rotation_backup_count"])


def metrics_enabled(config: dict, args: argparse.Namespace) -> bool:
    """Whether this run writes metrics: metrics_dir set, no --no-metrics, not a dry run."""
    return bool(config["metrics_dir"]) and not args.no_metrics and not getattr(args, "dry_run", False)


def validate(config: dict, args: argparse.Namespace) -> None:
    """Raise ``UsageError`` for the first bad value, before anything is measured or touched."""
    cleanup_options(config).validate()
    usage_options(config).validate()
    for key in ("log_file", "metrics_dir"):
        if config[key] is not None and not os.path.isabs(config[key]):
            raise UsageError("%s %r is not an absolute path; give the full path, for example %s"
                             % (key, config[key], KEYS[key][1]))
    if config["audit_log"] and not os.path.isdir(os.path.dirname(config["audit_log"])):
        raise UsageError("audit_log %r is in a directory that does not exist; create %s or change audit_log"
                         % (config["audit_log"], os.path.dirname(config["audit_log"])))
    if metrics_enabled(config, args) and not os.path.isdir(config["metrics_dir"]):
        raise UsageError("metrics_dir %r is not a directory; create it (node_exporter's "
                         "--collector.textfile.directory), or unset metrics_dir, or pass --no-metrics"
                         % config["metrics_dir"])


def missing_library_message(config: dict, command: str) -> Optional[str]:
    """What to install when a library this run needs cannot be imported, else None."""
    need_docker = config["containers"] or (command == "cleanup" and config["docker_prune"])
    names = [name for name, _error in missing(psutil, docker, need_docker=need_docker)]
    if not names:
        return None
    message = "the Python %s %s cannot be imported by %s; install %s (Debian/Ubuntu: apt-get install %s)" % (
        "libraries" if len(names) > 1 else "library", " and ".join(names), sys.executable or "python3",
        "them" if len(names) > 1 else "it", " ".join(DEBIAN_PACKAGES[name] for name in names))
    if "docker" in names:
        message += ", or set containers: false and docker_prune: false"
    return message


def _one_line(text: str) -> str:
    """Printable on one line (``_scan.printable``): no name reaches the terminal or the log raw."""
    return printable(text)


class _PrintableFormatter(logging.Formatter):
    """Log lines whose every part is printable (a traceback keeps its line breaks)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), keep_newlines=True)


def open_log(path: Optional[str]) -> Optional[logging.Handler]:
    """Log to ``path`` through a handler that reopens the file when logrotate moves it."""
    if not path:
        return None
    try:
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8", errors="backslashreplace")
    except OSError as exc:
        raise UsageError("log_file %r cannot be opened (%s); create its directory or change log_file"
                         % (path, exc.strerror or exc)) from exc
    handler.setFormatter(_PrintableFormatter("%(asctime)s " + PROG + "[%(process)d] %(levelname)s %(message)s"))
    LOGGER.addHandler(handler)
    return handler


class Run:
    """One command's context: arguments, config, output and logging."""

    def __init__(self, args: argparse.Namespace, config: dict) -> None:
        self.args = args
        self.config = config

    def show(self, result: dict, lines: list) -> None:
        """Print the result: JSON with --json, else the lines; nothing with --quiet."""
        if self.args.quiet:
            return
        if self.args.json:
            sys.stdout.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
        else:
            sys.stdout.write("".join(_one_line(line) + "\n" for line in lines))

    def problem(self, message: str) -> None:
        """An error of this run: to stderr (even with --quiet) and the log."""
        message = _one_line(message)
        sys.stderr.write("%s: %s\n" % (PROG, message))
        LOGGER.error(message)

    def write_metrics(self, name: str, text: str) -> int:
        """Write a metrics file when metrics are on; 1 when it could not be written, else 0."""
        if not metrics_enabled(self.config, self.args):
            return EXIT_OK
        try:
            write_textfile(self.config["metrics_dir"], name, text)
        except OSError as exc:
            self.problem("cannot write %s in metrics_dir %s: %s" % (name, self.config["metrics_dir"], exc))
            return EXIT_PROBLEM
        return EXIT_OK

    def measure(self, activity: bool = False) -> tuple:
        """``(usage report, 0 or 1)``: 1 when a target had an error or the metrics could not be written."""
        report = collect_usage(usage_options(self.config, activity), psutil, docker)
        code = EXIT_OK
        if report["containers_error"]:
            self.problem(report["containers_error"])
            code = EXIT_PROBLEM
        for entry in report["containers"]:
            if entry["error"]:
                self.problem("container %s: %s" % (entry["name"], entry["error"]))
                code = EXIT_PROBLEM
        return report, max(code, self.write_metrics(USAGE_FILE, usage_text(report)))


def _table(header: tuple, rows: list) -> list:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [header] + rows]


def _sessions(entry: dict) -> str:
    live = sum(1 for session in entry["sessions"] if session["live"])
    return "%d live, %d stale" % (live, len(entry["sessions"]) - live)


def _activity(activity: Optional[dict]) -> str:
    if not activity:
        return "-"
    if activity.get("busy") is None:
        return "unknown (%s)" % activity.get("error")
    return "busy (%s)" % "; ".join(activity["reasons"]) if activity["busy"] else "idle"


def monitor_lines(report: dict) -> list:
    """The ``monitor`` table of a usage report."""
    lines = [report["summary"], ""]
    lines += _table(("FILESYSTEM", "MOUNTPOINT", "SIZE", "USED", "FREE", "LEVEL"), [
        (fs["path"], mountpoint_of(fs["path"]), format_bytes(fs["total_bytes"]), "%.1f%%" % fs["used_percent"],
         format_bytes(fs["free_bytes"]), fs["level"]) for fs in report["filesystems"]])
    lines.append("")
    lines += _table(("CATEGORY", "BYTES", "FILES"), [
        (name, format_bytes(report["categories"][name]["bytes"]), report["categories"][name]["files"])
        for name in CATEGORIES])
    lines.append("%s in %s; %s scanned (with the Ray temp roots and the uv cache)"
                 % (format_bytes(report["tmp_bytes"]), report["tmp_dir"], format_bytes(report["scanned_bytes"])))
    lines.append("Ray sessions: %s; node role %s" % (_sessions(report), report["node_role"]))
    if report.get("activity") and report["activity"].get("why"):
        lines.append("host %s: %s" % ("busy" if report["activity"]["busy"] else "idle", report["activity"]["why"]))
    spill: dict = {}
    for entry in report.get("spill_dirs") or []:
        count, size = spill.get(entry["status"], (0, 0))
        spill[entry["status"]] = (count + 1, size + entry["bytes"])
    if spill:
        lines.append("spill dirs outside the sessions: %s" % ", ".join(
            "%d %s (%s)" % (count, status, format_bytes(size)) for status, (count, size) in sorted(spill.items())))
    lines += ["cleanup could free: %s" % suggestion["message"] for suggestion in report["suggestions"]]
    if report["error_count"]:
        lines.append("%d entries could not be measured (see --json: errors)" % report["error_count"])
    lines += untrusted_messages(report)
    lines += [rotation_line(name, entry) for name, entry in [("host", report)] + [
        (entry["name"], entry) for entry in report["containers"]] if entry.get("log_rotation")]
    lines += rotation_messages(report)
    if report["containers"]:
        rows = []
        for entry in report["containers"]:
            if entry["tmp_bytes"] is None:  # stopped, or could not be measured
                rows.append((entry["name"], entry["status"], "-", "-", "-", "-", "-",
                             "error: " + entry["error"] if entry["error"] else "-"))
                continue
            fs = entry["filesystem"]
            rows.append((entry["name"], entry["status"], "%.1f%%" % fs["used_percent"], format_bytes(fs["free_bytes"]),
                         entry["level"], format_bytes(entry["tmp_bytes"]), _sessions(entry),
                         _activity(entry.get("activity"))))
        lines.append("")
        lines += _table(("CONTAINER", "STATUS", "USED", "FREE", "LEVEL", "TMP", "SESSIONS", "ACTIVITY"), rows)
    return lines


def rotation_line(name: str, entry: dict) -> str:
    """How the Ray of a target rotates its logs, and what it leaves to logrotate."""
    rotation = entry["log_rotation"]
    return "%s: Ray %s rotates its logs at %s bytes, %s backup(s) (%s; in effect: %s); leaves to logrotate: %s" % (
        name, entry.get("ray_version") or "(version unknown)", rotation["max_bytes"], rotation["backup_count"],
        ", ".join(rotation["ray_rotates"]) or "nothing", {True: "yes", False: "no", None: "unknown"}[
            rotation["in_effect"]], ", ".join(rotation["logrotate_globs"]))


def cmd_monitor(run: Run) -> tuple:
    """Measure with activity, print the table; ``(exit code, summary)``."""
    report, code = run.measure(activity=True)
    run.show(report, monitor_lines(report))
    return code, report["summary"]


def check_limits(run: Run) -> tuple:
    """``(warning, critical)`` percentages from the flags, else the config; ``UsageError`` when they are bad."""
    thresholds = run.config["thresholds"]
    warning = thresholds["warning"] if run.args.threshold is None else run.args.threshold
    critical = thresholds["critical"] if run.args.critical is None else run.args.critical
    for flag, value in (("--threshold", warning), ("--critical", critical)):
        if not 0 <= value <= 100:
            raise UsageError("%s %g is outside 0-100; give a percentage of the disk, for example 90" % (flag, value))
    if warning >= critical:
        raise UsageError(_limits_message(run.args, warning, critical))
    return warning, critical


def _limits_message(args: argparse.Namespace, warning: float, critical: float) -> str:
    """Why ``warning`` (not below ``critical``) is wrong, naming the flag given and the config's value."""
    if args.threshold is None:
        return ("--critical %g must be above the warning threshold %g (thresholds.warning of the config); "
                "give --threshold too, below %g" % (critical, warning, critical))
    if args.critical is None:
        return ("--threshold %g must be below the critical threshold %g (thresholds.critical of the config); "
                "give --critical too, above %g" % (warning, critical, warning))
    return ("--threshold %g must be below --critical %g (the warning level comes first); "
            "for example --threshold 90 --critical 95" % (warning, critical))


def cmd_check(run: Run) -> tuple:
    """Exit 0/1/2 by the worst used % of the disks holding the tmp dir; ``(exit code, summary)``."""
    warning, critical = check_limits(run)
    report, _code = run.measure()  # target errors are said; the exit code is the level
    used = [("host", report["filesystem"])] + [(entry["name"], entry["filesystem"]) for entry in report["containers"]
                                               if entry["tmp_bytes"] is not None]  # not stopped, no error
    target, fs = max(used, key=lambda item: item[1]["used_percent"])
    code = EXIT_CRITICAL if fs["used_percent"] >= critical else EXIT_PROBLEM if fs["used_percent"] >= warning \
        else EXIT_OK
    line = "%s: %s %s %.1f%% used (%s free), warning at %g%%, critical at %g%%" % (
        ("OK", "WARNING", "CRITICAL")[code], target, fs["path"], fs["used_percent"], format_bytes(fs["free_bytes"]),
        warning, critical)
    report["check"] = {"status": ("ok", "warning", "critical")[code], "target": target, "path": fs["path"],
                       "used_percent": fs["used_percent"], "warning": warning, "critical": critical}
    run.show(report, [line, report["summary"]])
    return code, line


def target_line(target: dict, dry_run: bool) -> str:
    """One line for a cleanup target: status, what went, why."""
    line = "%s (%s): %s" % (target["name"], target["kind"], target["status"])
    if target["status"] == "cleaned":
        line += ", %s %s, %d removed, %d kept, %d errors" % (
            "would free" if dry_run else "freed", format_bytes(target["freed_bytes"]), target["removed"],
            target["kept_count"], target["error_count"])
    if target["tmp_bytes_before"] is not None:
        line += "; tmp %s -> %s" % (format_bytes(target["tmp_bytes_before"]), format_bytes(target["tmp_bytes_after"]))
    if target["reason"]:
        line += "; " + target["reason"]
    return _one_line(line)


def cleanup_lines(result: dict, dry_run: bool) -> list:
    """What a cleanup did (or would do), per target, with the paths."""
    lines = ["dry run: nothing was removed; this is what would go"] if dry_run else []
    if result["status"] != "done":
        return lines + ["cleanup %s: %s" % (result["status"], result["reason"])]
    for target in result["targets"]:
        lines.append(target_line(target, dry_run))
        lines += ["  %s %s" % ("would remove" if dry_run else "removed", path) for path in target["removed_paths"]]
        if target["removed"] > MAX_LISTED:
            lines.append("  ... and %d more" % (target["removed"] - MAX_LISTED))
        lines += ["  error %s: %s" % (error["path"], error["error"]) for error in target["errors"]]
        untrusted = untrusted_message(target["name"], target["untrusted_processes"])
        if untrusted:
            lines.append("  " + untrusted)
    if result["docker_prune"]:
        lines.append("docker prune: %s reclaimed" % format_bytes(result["docker_prune"]["reclaimed_bytes"]))
    lines.append("%s %s in total" % ("would free" if dry_run else "freed", format_bytes(result["freed_bytes"])))
    return lines


def _cleanup_failed(run: Run, exc: Exception, duration: float) -> tuple:
    """A cleanup that raised: said, logged with its traceback, and success 0 in the metrics."""
    LOGGER.exception("cleanup failed")
    run.problem("cleanup failed: %s" % exc)
    run.write_metrics(CLEANUP_FILE, cleanup_text(None, duration))
    if run.args.json and not run.args.quiet:
        sys.stdout.write(json.dumps({"failed": True, "msg": "cleanup failed: %s" % _one_line(str(exc))}) + "\n")
    return EXIT_PROBLEM, "failed: %s" % exc


def cmd_cleanup(run: Run) -> tuple:
    """The ``ray_worker_cleanup`` run, logged per target; metrics unless dry run; ``(exit code, summary)``."""
    dry_run = run.args.dry_run
    started = time.monotonic()
    try:
        result = Cleanup(cleanup_options(run.config), psutil, docker, check_mode=dry_run).run()
    except UsageError:
        raise
    except Exception as exc:  # a lock or audit file that cannot be opened
        return _cleanup_failed(run, exc, time.monotonic() - started)
    duration = time.monotonic() - started
    for target in result["targets"]:
        LOGGER.info("cleanup target %s", target_line(target, dry_run))
    if result["status"] != "done":
        run.problem("cleanup %s: %s" % (result["status"], result["reason"]))
    elif result["containers_error"]:
        run.problem(result["containers_error"])
    if (result["docker_prune"] or {}).get("error"):
        run.problem(result["docker_prune"]["error"])
    for target in result["targets"]:
        if target["status"] == "error":
            run.problem("%s: %s" % (target["name"], target["reason"]))
    code = max(EXIT_OK if cleanup_succeeded(result) else EXIT_PROBLEM,
               run.write_metrics(CLEANUP_FILE, cleanup_text(result, duration)))
    if result["status"] == "done" and metrics_enabled(run.config, run.args):
        code = max(code, run.measure()[1])
    run.show(result, cleanup_lines(result, dry_run))
    summary = "%s%s, %s %s: %s" % (
        "dry run, " if dry_run else "", result["status"], "would free" if dry_run else "freed",
        format_bytes(result["freed_bytes"]), ", ".join("%s %s" % (t["name"], t["status"]) for t in result["targets"])
        or result["reason"] or "no targets")
    return code, summary


COMMANDS = {"monitor": cmd_monitor, "check": cmd_check, "cleanup": cmd_cleanup}


def prepare(args: argparse.Namespace) -> dict:
    """The config of this run, checked: values, then libraries; ``UsageError`` says what to fix."""
    path = _config_path(args.config)
    config = apply_flags(load_config(path), args)
    try:
        validate(config, args)
    except UsageError as exc:
        raise UsageError("%s (config: %s)" % (exc, path or "built-in defaults")) from exc
    needed = missing_library_message(config, args.command)
    if needed:
        raise UsageError(needed)
    return config


def main(argv: Optional[list] = None) -> int:
    """Run ``ray-maintenance`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (3)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    started = time.monotonic()
    handler = None
    try:
        config = prepare(args)
        handler = open_log(config["log_file"])
        code, summary = COMMANDS[args.command](Run(args, config))
        LOGGER.info("%s exit %d in %.1fs: %s", args.command, code, time.monotonic() - started, _one_line(summary))
        return code
    except UsageError as exc:
        sys.stderr.write("%s: %s\n" % (PROG, _one_line(str(exc))))
        LOGGER.error("%s exit %d: %s", args.command, EXIT_USAGE, _one_line(str(exc)))
        return EXIT_USAGE
    finally:
        if handler is not None:
            LOGGER.removeHandler(handler)
            handler.close()
