# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ray-maintenance``, the node CLI: monitor, check and clean a Ray node from cron (see docs/node-cli.md).

``main(argv)`` runs one command and returns its exit code.  It reads a JSON
config, runs the same code as the modules (``collect_usage``, ``node_run``),
writes node_exporter textfile metrics (``_metrics``) and logs one line per run.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import logging.handlers
import math
import os
import signal
import sys
import textwrap
import threading
import time
from typing import Any, Optional

from ansible_collections.rayops.disk.plugins.module_utils._diagnose import DiagnoseOptions, diagnose
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, printable
from ansible_collections.rayops.disk.plugins.module_utils._metrics import (
    CLEANUP_FILE,
    DIAGNOSE_FILE,
    PRESSURE_FILE,
    SHIP_FILE,
    STATUS_COMMANDS,
    STATUS_FILE,
    USAGE_FILE,
    cleanup_succeeded,
    cleanup_text,
    diagnose_text,
    pressure_text,
    ship_text,
    update_status,
    usage_text,
    write_textfile,
)
from ansible_collections.rayops.disk.plugins.module_utils._node import collect_usage, node_run
from ansible_collections.rayops.disk.plugins.module_utils._optional import boto3, docker, missing, psutil
from ansible_collections.rayops.disk.plugins.module_utils._options import (
    CleanupOptions,
    KINDS,
    LEVELS,
    UsageOptions,
    config_defaults,
    check_watch_interval,
    config_keys,
    level_for,
    option_names,
)
from ansible_collections.rayops.disk.plugins.module_utils._ship import ShipOptions, ship
from ansible_collections.rayops.disk.plugins.module_utils._targets import DOCKER_SOCKET, containers_wanted
from ansible_collections.rayops.disk.plugins.module_utils._text import (
    cleanup_lines,
    diagnose_lines,
    holders_lines,
    monitor_lines,
    ship_lines,
    summary_line,
    target_line,
    tier_summary,
)
from ansible_collections.rayops.disk.plugins.module_utils._watch import Guard
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes

PROG = "ray-maintenance"
CONFIG_ENV = "RAY_MAINTENANCE_CONFIG"
DEFAULT_CONFIG = "/etc/rayops/ray-maintenance.json"
EXIT_OK, EXIT_PROBLEM, EXIT_CRITICAL, EXIT_USAGE = 0, 1, 2, 3
DEBIAN_PACKAGES = {"psutil": "python3-psutil", "docker": "python3-docker", "boto3": "python3-boto3"}
LOGGER = logging.getLogger(PROG)
LOGGER.addHandler(logging.NullHandler())  # no log_file: nothing logged (errors are printed to stderr)
LOGGER.propagate = False
LOGGER.setLevel(logging.INFO)

KEYS = config_keys()
"""The config keys (name to ``_options.Option``): the option table's, less the modules' own."""
KIND_CHECKS = {"path": "text", "text": "text", "names": "list", "paths": "list", "number": "number",
               "count": "count", "bool": "bool", "switch": "switch", "size": "size", "thresholds": "thresholds"}
"""What a config value of each option kind must be in JSON."""
FLAGS = {"max_age_hours": "--max-age-hours", "force": "--force", "min_tmp_size": "--min-tmp-size",
         "containers": "--containers", "metrics_dir": "--metrics-dir"}
"""The config keys a command-line flag sets (its value wins over the file's), and the flag."""
METRICS_SECONDS = 15.0
"""How often ``watch`` writes its metrics while nothing happens (its timestamp is the guard's heartbeat)."""
CHECK_LEVELS = ("ok", "warning", "critical")
"""``check``'s levels, its exit codes 0, 1, 2 (``info`` is ok to it: a level for ``monitor`` and the metrics)."""

EPILOG = """\
examples:
  ray-maintenance monitor                      what fills this node's disk, as a table
  ray-maintenance --json monitor               the same as one JSON document
  ray-maintenance check --threshold 85         exit 1 at 85 %% used, 2 at thresholds.critical
  ray-maintenance cleanup --dry-run            what cleanup would remove (removes nothing)
  ray-maintenance cleanup --pressure --dry-run what the pressure guard would reclaim now, tier by tier
  ray-maintenance watch                        the pressure guard, in the foreground (systemd runs it)
  ray-maintenance diagnose --since 6           why Ray failed here in the last 6 hours, with the fix
  ray-maintenance ship --dry-run               what ship would copy to ship_dest (only the Ray head ships)
  ray-maintenance --config /etc/rayops/ray-maintenance.json cleanup --quiet      (cron)
  ray-maintenance --config FILE check-config   is FILE a good config? (exit 0, or 3 naming the bad key)

exit codes:
  0  ran (check: below the warning threshold); a stopped container is no error
     (cleanup: skipped_not_running)
  1  a target had an error, Docker could not be reached (with containers on),
     docker prune failed, metrics could not be written, or cleanup was locked
     out by another run, or cleanup --pressure left a disk at or above
     pressure_low_percent (check: warning); check and monitor run by a user who
     is not root only note on stderr what they may not write or use; ship: a
     file could not be uploaded and verified, or another ship run held its lock
  2  check: critical; diagnose: a critical finding (1: a warning finding)
  3  bad input: unknown option, bad or unreadable config, missing Python library
     (monitor and cleanup then record it in rayops_ray_maintenance.prom in
     metrics_dir, or in --metrics-dir when the config cannot say)

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
    parser.add_argument("--metrics-dir", metavar="DIR", default=argparse.SUPPRESS if suppress else None,
                        help="node_exporter's textfile directory, instead of the config's metrics_dir; a run that "
                        "cannot start (bad config, missing library) still says so there")


def _finite(text: str) -> float:
    """A float that is a number (argparse's ``float`` also takes nan and inf)."""
    value = float(text)  # ValueError: argparse says "invalid float value"
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("%r is not a finite number" % text)
    return value


_finite.__name__ = "float"  # argparse names the type in its message


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
    check.add_argument("--threshold", type=_finite, metavar="N",
                       help="warning at N %% used (default: the config's thresholds.warning)")
    check.add_argument("--critical", type=_finite, metavar="N",
                       help="critical at N %% used (default: the config's thresholds.critical)")
    cleanup = commands.add_parser("cleanup", parents=[common], help="clean idle targets (ray_worker_cleanup)",
                                  description="The ray_worker_cleanup run: idle targets only (unless --force), "
                                  "only what is older than max_age_hours, never a live session; then write the "
                                  "cleanup and usage metrics.")
    cleanup.add_argument("--dry-run", action="store_true",
                         help="remove nothing, say what would go (no metrics, no audit log)")
    cleanup.add_argument("--max-age-hours", type=_finite, metavar="N", help="only what is older goes")
    cleanup.add_argument("--force", action="store_true", default=None, help="clean busy targets too")
    cleanup.add_argument("--min-tmp-size", metavar="SIZE", help="leave a target alone below it (0: always clean)")
    cleanup.add_argument("--containers", action=argparse.BooleanOptionalAction, default=None,
                         help="also clean the running containers named like container_name_filter")
    cleanup.add_argument("--pressure", action="store_true",
                         help="run the pressure reclaim now, as watch does at pressure_high_percent: tiers, cheapest "
                         "harm first, busy targets too, until every watched disk is below pressure_low_percent")
    watch = commands.add_parser("watch", parents=[common], help="the pressure guard: reclaim within seconds when a "
                                "disk fills (systemd runs it)",
                                description="Every watch_interval_seconds, read the filesystems holding the tmp dirs "
                                "and Ray temp roots of the host and its Ray worker containers (bytes and inodes); at "
                                "pressure_high_percent run the pressure reclaim (cleanup --pressure) until below "
                                "pressure_low_percent. Runs until SIGTERM; writes rayops_ray_pressure.prom.")
    watch.add_argument("--once", action="store_true", help="look once (and reclaim if needed), then exit")
    diag = commands.add_parser("diagnose", parents=[common], help="why Ray failed here: findings from its logs and "
                               "the live node, each with its fix",
                               description="Read the logs of Ray's sessions (host and worker containers) changed "
                               "within --since hours for failures Ray wrote (a full disk, OOM kills, dead workers, "
                               "lost owners, open-file limits, runtime_env errors, the object store on disk, an "
                               "ignored log setting), and look at the live node (open files against the raylet's "
                               "limit, memory against Ray's threshold, /dev/shm against the object store, disks, "
                               "deleted files held open). Exit 0, 1 with a warning finding, 2 with a critical one; "
                               "write rayops_ray_diagnose.prom.")
    diag.add_argument("--since", type=_finite, metavar="HOURS", default=24.0,
                      help="the sessions whose logs changed in the last HOURS, and their findings (default 24)")
    diag.add_argument("--state", metavar="FILE",
                      help="remember in FILE where each log was read to and what was found: a run reads only the "
                      "lines written since the last one, says which findings are new, and the metrics count "
                      "every event once (the role's cron gives /var/lib/rayops/diagnose-state.json)")
    ship_cmd = commands.add_parser("ship", parents=[common], help="copy the logs of ship_paths to ship_dest, on the "
                                   "Ray head node only", description="Copy the files matching ship_paths to "
                                   "ship_dest, keeping their paths (<cluster>/<node>/shipped/<path>), as the "
                                   "LogManager's HDFS copy did: only on the Ray head node or where no Ray runs, never "
                                   "on a worker, never with RAY_DISABLE_HDFS_COPY=true or ship_disabled. Only new or "
                                   "changed files (ship_state), each read back and verified; a symlink on the way, a "
                                   "FIFO, a device or a hard-linked file is never read. Writes rayops_ray_ship.prom.")
    ship_cmd.add_argument("--dry-run", action="store_true",
                          help="upload nothing, say what would be shipped (no state, no metrics)")
    commands.add_parser("check-config", parents=[common], help="is the config good? exit 0, else 3 and why",
                        description="Validate the config as a run would (every key and value, the same messages): "
                        "print 'config FILE: ok' and exit 0, or exit 3 with one line naming the bad key and the fix. "
                        "Reads the file and looks at the paths it names; writes nothing, needs no psutil or Docker "
                        "(for Ansible's validate:).")
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
    return config_defaults()


def _check_value(key: str, value: Any) -> Any:
    """The value of a config key if its JSON type is right (``""`` and null mean unset), else ``UsageError``."""
    option = KEYS[key]
    if option.nullable and (value is None or value == ""):
        return None
    kind = KIND_CHECKS[option.kind]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    good = {"text": isinstance(value, str), "number": number, "bool": isinstance(value, bool),
            "list": isinstance(value, list) and all(isinstance(item, str) for item in value),
            "size": number or isinstance(value, str), "count": number and float(value).is_integer(),
            "thresholds": isinstance(value, dict), "switch": isinstance(value, bool) or value == "auto"}[kind]
    if not good:
        raise UsageError("%s %s is not %s; for example \"%s\": %s"
                         % (key, json.dumps(value), KINDS[option.kind][2], key, json.dumps(option.example)))
    if kind == "thresholds":
        merged = dict(option.default)
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
    return dict(config, **{key: getattr(args, key) for key in FLAGS if getattr(args, key, None) is not None})


def _shown(value: Any) -> str:
    """A flag's value as a message shows it: a string quoted, a number as typed."""
    if isinstance(value, float):
        return "%g" % value
    return json.dumps(value)


def _flag_message(key: str, value: Any, message: str) -> str:
    """A message about config key ``key`` told about its flag: ``--min-tmp-size "lots" is not a size; ...``."""
    subject = "%s %r" % (key, value)
    if message.startswith(subject):
        return "%s %s%s" % (FLAGS[key], _shown(value), message[len(subject):])
    return "%s %s: %s" % (FLAGS[key], _shown(value), message)


def check_flags(config: dict, args: argparse.Namespace) -> dict:
    """The (valid) config with the flags on top, each checked as its key is: ``UsageError`` names the flag."""
    merged = dict(config)
    for key in FLAGS:
        value = getattr(args, key, None)
        if value is None:
            continue
        merged[key] = value
        try:
            validate(merged, args)
        except UsageError as exc:
            raise UsageError(_flag_message(key, value, str(exc))) from exc
    return merged


def cleanup_options(config: dict) -> CleanupOptions:
    """The cleanup options of a config."""
    return CleanupOptions(**{name: config[name] for name in option_names(CleanupOptions) if name in config})


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
    check_watch_interval(config["watch_interval_seconds"])
    ShipOptions.from_config(config).validate()
    for key in ("log_file", "metrics_dir"):
        if config[key] is not None and not os.path.isabs(config[key]):
            raise UsageError("%s %r is not an absolute path; give the full path, for example %s"
                             % (key, config[key], KEYS[key].example))
    if config["log_file"] and not os.path.isdir(os.path.dirname(config["log_file"])):
        raise UsageError("log_file %r cannot be opened: its directory %s does not exist; create it or change log_file"
                         % (config["log_file"], os.path.dirname(config["log_file"])))
    if config["audit_log"] and not os.path.isdir(os.path.dirname(config["audit_log"])):
        raise UsageError("audit_log %r is in a directory that does not exist; create %s or change audit_log"
                         % (config["audit_log"], os.path.dirname(config["audit_log"])))
    if metrics_enabled(config, args) and not os.path.isdir(config["metrics_dir"]):
        raise UsageError("metrics_dir %r is not a directory; create it (node_exporter's "
                         "--collector.textfile.directory), or unset metrics_dir, or pass --no-metrics"
                         % config["metrics_dir"])


def missing_library_message(config: dict, command: str) -> Optional[str]:
    """What to install when a library this run needs cannot be imported, else None."""
    need_docker = command != "ship" and (containers_wanted(config["containers"], config["docker_host"]) or
                                         (command in ("cleanup", "watch") and config["docker_prune"]))
    dest = config.get("ship_dest") if command == "ship" else config.get("archive_dest") if command in (
        "cleanup", "watch") else None
    names = [name for name, _error in missing(psutil, docker, need_docker, boto3 if (dest or "").startswith("s3://")
                                              else True)]
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
    """One line per logged message, every part printable: no name in it can forge a line.

    The message's newlines are escaped like any control character.  Only a traceback or stack (``exc_info``,
    ``stack_info``) keeps its line breaks, each of its lines indented, so none of them can pass for a record.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = printable(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for block in (record.exc_text, self.formatStack(record.stack_info) if record.stack_info else None):
            if block:
                text += "".join("\n  " + line for line in printable(block, keep_newlines=True).split("\n"))
        return text


class CannotStart(UsageError):
    """Bad input that stops a run before it starts (exit 3).

    ``reason`` (``config``, ``library``, ``log``) is recorded in the status metrics of ``monitor`` and ``cleanup``,
    which cron runs; None (a bad command-line flag: the typist's mistake, said on their terminal) is not.
    """

    def __init__(self, message: str, reason: Optional[str] = None) -> None:
        super().__init__(message)
        self.reason = reason


class Run:
    """One command's context: arguments, config, output, logging and metrics."""

    def __init__(self, args: argparse.Namespace, config: dict) -> None:
        self.args = args
        self.config = config
        self.noted: set = set()
        self.handler: Optional[logging.Handler] = None

    def tolerates(self, exc: OSError) -> bool:
        """Whether a log or metrics file this run may not write is only a note, not a failure.

        So for ``check`` and ``monitor`` run by a user who is not root (a monitoring agent) with the deployed config,
        whose log file and metrics directory are root's: they measure what they can read and say the rest.
        """
        return isinstance(exc, PermissionError) and os.geteuid() != 0 and self.args.command in ("check", "monitor")

    def note(self, what: str, message: str) -> None:
        """Say ``message`` on stderr, once per run for ``what``; no error: the exit code stays."""
        if what not in self.noted:
            self.noted.add(what)
            sys.stderr.write("%s: note: %s\n" % (PROG, _one_line(message)))

    def open_log(self) -> None:
        """Log to ``log_file`` through a handler that reopens the file when logrotate moves it."""
        path = self.config["log_file"]
        if not path:
            return
        try:
            handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            if self.tolerates(exc):
                self.note("log", "not logged: log_file %s cannot be opened by uid %d (%s); only root's runs are "
                          "logged" % (path, os.geteuid(), exc.strerror or exc))
                return
            raise CannotStart("log_file %r cannot be opened (%s); create its directory or change log_file"
                              % (path, exc.strerror or exc), "log") from exc
        handler.setFormatter(_PrintableFormatter("%(asctime)s " + PROG + "[%(process)d] %(levelname)s %(message)s"))
        LOGGER.addHandler(handler)
        self.handler = handler

    def close_log(self) -> None:
        """Stop logging to ``log_file``."""
        if self.handler is not None:
            LOGGER.removeHandler(self.handler)
            self.handler.close()
            self.handler = None

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
        return self._metrics(name, lambda directory: write_textfile(directory, name, text))

    def record_start(self) -> int:
        """``monitor`` and ``cleanup``: record in the status metrics that this run started; 1 when it could not."""
        if self.args.command not in STATUS_COMMANDS:
            return EXIT_OK
        return self._metrics(STATUS_FILE, lambda directory: update_status(directory, self.args.command, None))

    def _metrics(self, name: str, write) -> int:
        if not metrics_enabled(self.config, self.args):
            return EXIT_OK
        directory = self.config["metrics_dir"]
        try:
            write(directory)
        except OSError as exc:
            if self.tolerates(exc):
                self.note("metrics", "metrics not written: metrics_dir %s is not writable by uid %d (%s); only "
                          "root's runs write them (--no-metrics: do not try)" % (directory, os.geteuid(),
                                                                                 exc.strerror or exc))
                return EXIT_OK
            self.problem("cannot write %s in metrics_dir %s: %s" % (name, directory, exc))
            return EXIT_PROBLEM
        return EXIT_OK

    def measured_config(self) -> dict:
        """The config to measure with: without containers when this user may not use Docker's local socket.

        For ``check`` and ``monitor`` run by a user who is not root: Docker's socket is root's (and the docker
        group's), and a container's files are reached through root-only ``/proc/<pid>/root``, so the containers
        cannot be measured; ``containers: true`` (as the role deploys it on a Docker node) says so once on stderr,
        ``auto`` is quietly the host only.  Root, or a user who may use the socket, measures them as configured.
        """
        config = self.config
        if self.args.command not in ("check", "monitor") or os.geteuid() == 0 or \
                not containers_wanted(config["containers"], config["docker_host"]):
            return config
        where = config["docker_host"] or os.environ.get("DOCKER_HOST") or "unix://" + DOCKER_SOCKET
        socket_path = where[len("unix://"):] if where.startswith("unix://") else None
        if not socket_path or not os.path.exists(socket_path) or os.access(socket_path, os.R_OK | os.W_OK):
            return config  # another daemon, none (said as Docker unreachable), or one this user may use
        if config["containers"] is True:
            self.note("containers", "containers not measured: uid %d may not use the Docker socket %s; only root's "
                      "runs measure them" % (os.geteuid(), socket_path))
        return dict(config, containers=False)

    def measure(self, activity: bool = False) -> tuple:
        """``(usage report, 0 or 1)``: 1 when a target had an error or the metrics could not be written."""
        report = collect_usage(usage_options(self.measured_config(), activity), psutil, docker)
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


def check_verdict(report: dict, warning: float, critical: float) -> tuple:
    """``(level, target, filesystem)``: the check's one verdict on a usage report, the worst level of its filesystems.

    Every filesystem measured - the host's (its tmp dir, Ray temp roots, uv cache) and each measured container's
    tmp dir - is levelled once with ``warning`` and ``critical``, and the report takes those levels (``level``,
    each ``filesystems`` entry, each container's, ``summary``), so its text and JSON say what the exit code says.
    The metrics, already written, keep the config's thresholds.
    """
    limits = {"info": warning, "warning": warning, "critical": critical}  # info is ok to check
    measured = [("host", fs) for fs in report["filesystems"]]
    measured += [(entry["name"], entry["filesystem"]) for entry in report["containers"]
                 if entry["tmp_bytes"] is not None]  # not stopped, no error
    for _target, fs in measured:
        fs["level"] = level_for(fs["used_percent"], limits)
    for entry in report["containers"]:
        if entry["tmp_bytes"] is not None:
            entry["level"] = entry["filesystem"]["level"]
    report["level"] = max((fs["level"] for fs in report["filesystems"]), key=LEVELS.index, default="ok")
    report["summary"] = summary_line(report)
    target, fs = max(measured, key=lambda item: (LEVELS.index(item[1]["level"]), item[1]["used_percent"]))
    return fs["level"], target, fs


def cmd_check(run: Run) -> tuple:
    """Exit 0/1/2 by the worst level of the disks measured; ``(exit code, summary)``."""
    warning, critical = check_limits(run)
    report, _code = run.measure()  # target errors are said; the exit code is the level
    level, target, fs = check_verdict(report, warning, critical)
    line = "%s: %s %s %.1f%% used (%s free), warning at %g%%, critical at %g%%" % (
        level.upper(), target, fs["path"], fs["used_percent"], format_bytes(fs["free_bytes"]), warning, critical)
    report["check"] = {"status": level, "target": target, "path": fs["path"], "used_percent": fs["used_percent"],
                       "warning": warning, "critical": critical}
    run.show(report, [line, report["summary"]] + (holders_lines(report["holders"]) if level != "ok" else []))
    return CHECK_LEVELS.index(level), line


def cmd_check_config(args: argparse.Namespace, path: Optional[str]) -> int:
    """The config is good (``prepare`` said so): say it; exit 0."""
    if not args.quiet:
        if args.json:
            sys.stdout.write(json.dumps({"config": path, "valid": True}) + "\n")
        else:
            sys.stdout.write("config %s: ok\n" % _one_line(path or "(none: built-in defaults)"))
    return EXIT_OK


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
        options = dataclasses.replace(cleanup_options(run.config), pressure=run.args.pressure)
        cleanup = node_run(options, psutil, docker, check_mode=dry_run, usage=usage_options(run.config))
        result = cleanup.run()
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
    relieved = True
    if result.get("pressure"):
        LOGGER.info("pressure reclaim%s in %.1fs: %s; %s", " (dry run)" if dry_run else "",
                    result["pressure"]["seconds"], tier_summary(result["pressure"]),
                    "; ".join(result["pressure"]["trigger"]) or "no disk at or above the low mark")
    if result.get("pressure") and not result["pressure"]["relieved"]:
        relieved = False
        held = result["pressure"]["held_text"]
        still = "; ".join(result["pressure"]["still_above_low"])
        run.problem("pressure not relieved: %s%s" % (still, "; held by %s" % held if held else ""))
    code = max(EXIT_OK if cleanup_succeeded(result) and relieved else EXIT_PROBLEM,
               run.write_metrics(CLEANUP_FILE, cleanup_text(result, duration)))
    if result["status"] == "done" and metrics_enabled(run.config, run.args):
        after = cleanup.usage_after(run.config["thresholds"])  # from this run's own walks: nothing walked again
        code = max(code, run.write_metrics(USAGE_FILE, usage_text(after)) if after else run.measure()[1])
    run.show(result, cleanup_lines(result, dry_run))
    summary = "%s%s, %s %s: %s" % (
        "dry run, " if dry_run else "", result["status"], "would free" if dry_run else "freed",
        format_bytes(result["freed_bytes"]), ", ".join("%s %s" % (t["name"], t["status"]) for t in result["targets"])
        or result["reason"] or "no targets")
    return code, summary


def _watch_problems(run: Run, guard: Guard, said: list) -> list:
    """Say the targets the guard cannot watch, when that list changes; the list said."""
    if guard.state.problems != said:
        for problem in guard.state.problems:
            run.problem("watch: %s" % problem)
    return guard.state.problems


def _watch_reclaim(run: Run, result: dict) -> None:
    """Log and print one reclaim of the guard."""
    if result.get("failed"):
        run.problem(result["msg"])
        return
    if result["status"] != "done":
        LOGGER.warning("pressure: reclaim %s: %s", result["status"], result["reason"])
        run.problem("pressure reclaim %s: %s (tried again at the next look)" % (result["status"], result["reason"]))
        return
    pressure = result["pressure"]
    line = "pressure reclaim %s in %.1fs: freed %s (%s)" % (
        result["guard_result"].replace("_", " "), pressure["seconds"], format_bytes(result["freed_bytes"]),
        tier_summary(pressure))
    if pressure["relieved"]:
        LOGGER.info("%s; %s", line, "; ".join(pressure["trigger"]))
    else:
        LOGGER.warning("%s; %s; held by %s; next reclaim in %gs at the earliest", line,
                       "; ".join(pressure["still_above_low"]), pressure["held_text"] or "nothing measured",
                       result.get("retry_seconds") or 0)
    for target in result["targets"]:
        if target["status"] == "cleaned" or target["status"] == "error":
            LOGGER.info("pressure target %s", target_line(target, False))
    if not run.args.quiet:
        sys.stdout.write("".join(_one_line(text) + "\n" for text in cleanup_lines(result, False)))
        sys.stdout.flush()


def cmd_watch(run: Run) -> tuple:
    """The pressure guard: look, reclaim under pressure, write the metrics; until SIGTERM/SIGINT (or ``--once``)."""
    guard = Guard(cleanup_options(run.config), psutil, docker)
    interval = run.config["watch_interval_seconds"]
    stop = threading.Event()
    if not run.args.once:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: stop.set())
    marks = guard.state.marks
    LOGGER.info("watch: looking every %gs; reclaim at %g%% of bytes or %g%% of inodes, down to %g%%",
                interval, marks["bytes"], marks["inodes"], marks["low"])
    said: list = []
    written_at = None
    code = EXIT_OK
    while True:
        result = guard.step()
        said = _watch_problems(run, guard, said)
        if result is not None:
            _watch_reclaim(run, result)
        now = time.monotonic()
        if result is not None or written_at is None or now - written_at >= METRICS_SECONDS:
            code = max(code, run.write_metrics(PRESSURE_FILE, pressure_text(guard.state)))
            written_at = now
        if run.args.once or stop.wait(interval):
            break
    counts = ", ".join("%s %s" % (count, name.replace("_", " ")) for name, count in guard.state.reclaims.items())
    if run.args.once:
        return max(code, EXIT_PROBLEM if guard.troubled else EXIT_OK), "reclaims: %s" % counts
    return EXIT_OK, "stopped; reclaims: %s" % counts


def cmd_diagnose(run: Run) -> tuple:
    """Findings of the logs and the live node; exit 0, 1 (a warning finding or an error), 2 (a critical one)."""
    options = DiagnoseOptions(usage_options(run.config), since_hours=run.args.since, state_file=run.args.state)
    result = diagnose(options, psutil, docker)
    run.show(result, diagnose_lines(result))
    for error in result["errors"]:
        run.problem("%s: %s" % (error["target"], error["error"]))
    code = max(DIAGNOSE_EXIT.get(result["worst"], EXIT_OK), EXIT_PROBLEM if result["errors"] else EXIT_OK)
    return max(code, run.write_metrics(DIAGNOSE_FILE, diagnose_text(result, time.time()))), result["summary"]


DIAGNOSE_EXIT = {"warning": EXIT_PROBLEM, "critical": EXIT_CRITICAL}
"""diagnose's exit code by its worst finding (none or info: 0)."""


def cmd_ship(run: Run) -> tuple:
    """Ship the logs of ship_paths (on the Ray head, or without Ray); exit 1 when a file failed or another run held
    the lock."""
    result = ship(ShipOptions.from_config(run.config), psutil, boto3, dry_run=run.args.dry_run)
    LOGGER.info("ship decision: %s: %s", result["decision"], result["reason"])
    for entry in result["files"]:
        if entry["status"] == "failed":
            run.problem("ship %s: %s" % (entry["path"], entry["reason"]))
        elif entry["status"] == "not_shipped":
            LOGGER.warning("ship: not shipped %s: %s", entry["path"], entry["reason"])
    if result["status"] == "locked":
        run.problem("ship %s" % result["summary"])
    run.show(result, ship_lines(result))
    code = EXIT_PROBLEM if result["failed"] or result["status"] == "locked" else EXIT_OK
    if result["status"] != "locked":
        code = max(code, run.write_metrics(SHIP_FILE, ship_text(result, time.time())))
    return code, result["summary"]


COMMANDS = {"monitor": cmd_monitor, "check": cmd_check, "cleanup": cmd_cleanup, "watch": cmd_watch,
            "diagnose": cmd_diagnose, "ship": cmd_ship}


def _where(path: Optional[str]) -> str:
    return "config %s" % path if path else "built-in defaults (no config file)"


def prepare(args: argparse.Namespace) -> tuple:
    """``(config path, config)`` of this run, checked: the file, then the flags, then libraries.

    ``CannotStart`` says what to fix: a bad value names the file and key (``config FILE: key ...``), a bad flag
    names the flag (``--min-tmp-size "lots" ...``).
    """
    path = _config_path(args.config)
    try:
        config = load_config(path)
    except UsageError as exc:
        raise CannotStart(str(exc), "config") from exc
    try:
        validate(config, args)
    except UsageError as exc:
        raise CannotStart("%s: %s" % (_where(path), exc), "config") from exc
    try:
        config = check_flags(config, args)
    except UsageError as exc:
        raise CannotStart(str(exc)) from exc
    if args.command != "check-config":  # it needs neither psutil nor Docker
        needed = missing_library_message(config, args.command)
        if needed:
            raise CannotStart(needed, "library")
    return path, config


def _metrics_dir_in(path: Optional[str]) -> Optional[str]:
    """``metrics_dir`` of a config file that may be bad otherwise, if it can be read and is an absolute path."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"), parse_constant=_no_constant)
    except (OSError, ValueError):
        return None
    value = data.get("metrics_dir") if isinstance(data, dict) else None
    return value if isinstance(value, str) and os.path.isabs(value) else None


def record_start_failure(args: argparse.Namespace, reason: str) -> None:
    """``monitor`` or ``cleanup`` could not start: say so in the status metrics, in --metrics-dir or metrics_dir."""
    if args.command not in STATUS_COMMANDS or args.no_metrics or getattr(args, "dry_run", False):
        return
    directory = args.metrics_dir or _metrics_dir_in(_config_path(args.config))
    if not directory or not os.path.isabs(directory):
        return
    try:
        update_status(directory, args.command, reason)
    except (FileNotFoundError, NotADirectoryError):
        pass  # no such directory: no node_exporter to tell (the message said what is wrong)
    except OSError as exc:
        where = _one_line(os.path.join(directory, STATUS_FILE))
        sys.stderr.write("%s: and cannot record it in %s: %s\n" % (PROG, where, exc))


def main(argv: Optional[list] = None) -> int:
    """Run ``ray-maintenance`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (3)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    started = time.monotonic()
    run = None
    try:
        path, config = prepare(args)
        if args.command == "check-config":
            return cmd_check_config(args, path)
        run = Run(args, config)
        run.open_log()
        recorded = run.record_start()
        code, summary = COMMANDS[args.command](run)
        code = max(code, recorded)
        LOGGER.info("%s exit %d in %.1fs: %s", args.command, code, time.monotonic() - started, _one_line(summary))
        return code
    except UsageError as exc:
        sys.stderr.write("%s: %s\n" % (PROG, _one_line(str(exc))))
        LOGGER.error("%s exit %d: %s", args.command, EXIT_USAGE, _one_line(str(exc)))
        if getattr(exc, "reason", None):
            record_start_failure(args, exc.reason)
        return EXIT_USAGE
    finally:
        if run is not None:
            run.close_log()
