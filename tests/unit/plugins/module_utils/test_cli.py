# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ray-maintenance`` driven through ``main(argv)`` on real trees of a sandbox node.

Exit codes, config errors, output, dry run, real cleanup, metrics and the
log file; the installed entry point as a subprocess is in tests/system.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import logging.handlers
import os
import pathlib
import re
import shutil
import socket
import sys
import tempfile

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _cli
from ansible_collections.rayops.disk.plugins.module_utils._fs import filesystem_of
from ansible_collections.rayops.disk.plugins.module_utils._metrics import (
    CLEANUP_FILE,
    LOCK_FILE,
    STATUS_FILE,
    USAGE_FILE,
)
from ansible_collections.rayops.disk.plugins.module_utils._fs import mountpoint_of
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes
from ansible_collections.rayops.disk.plugins.module_utils._usage import CATEGORIES
from ansible_collections.rayops.disk.tests.unit.conftest import as_nobody, du_bytes, tree_digest, write
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.conftest import (
    LIVE,
    STALE,
    count_entries,
    make_tree,
    promtool_check,
    samples,
    series,
)

HOST = {"target": "host", "kind": "host"}


@pytest.fixture
def configured(ray_node, tmp_path):
    """``(tmp dir, config path, metrics dir, log file)``: a config that cleans the tree right away."""
    metrics, log = tmp_path / "metrics", tmp_path / "log" / "ray-maintenance.log"
    metrics.mkdir()
    log.parent.mkdir()
    path = write_config(tmp_path, tmp_dir=str(ray_node), ray_temp_dir=str(ray_node / "ray"), min_tmp_size=0,
                        max_age_hours=1, age_by=["mtime"], lock_file=str(tmp_path / "lock"), lock_timeout=0,
                        containers=False, sample_seconds=0.1, scan_workers=1, metrics_dir=str(metrics),
                        log_file=str(log), audit_log=str(tmp_path / "audit.jsonl"))
    return ray_node, path, metrics, log


def write_config(where, **settings):
    path = where / "ray-maintenance.json"
    path.write_text(json.dumps(settings))
    return str(path)


def edit_config(path, **changes):
    with open(path) as handle:
        settings = json.load(handle)
    settings.update(changes)
    with open(path, "w") as handle:
        json.dump(settings, handle)


def cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``ray-maintenance argv``."""
    code = _cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_help_shows_commands_examples_and_exit_codes(capsys):
    code, out, _err = cli(capsys, "--help")
    assert code == 0
    assert out.startswith("usage: ray-maintenance [-h] [--config FILE] [--json] [--quiet] [--no-metrics]")
    for text in ("monitor", "check", "cleanup", "examples:", "cleanup --dry-run", "exit codes:",
                 "3  bad input", "$RAY_MAINTENANCE_CONFIG", "metrics_dir",
                 "a stopped container is no error", "docker prune failed"):
        assert text in out
    assert "keys: %s." % ", ".join(_cli.KEYS) in " ".join(out.split())  # every config key, in order
    code, out, _err = cli(capsys, "cleanup", "--help")
    assert code == 0
    for flag in ("--dry-run", "--max-age-hours N", "--force", "--min-tmp-size SIZE", "--containers | --no-containers",
                 "--quiet"):
        assert flag in out
    code, out, _err = cli(capsys, "check", "--help")
    assert code == 0 and "--threshold N" in out and "--critical N" in out


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: COMMAND"),
    (["clean"], "invalid choice: 'clean'"),
    (["check", "--bogus"], "unrecognized arguments: --bogus"),
    (["check", "--threshold", "ninety"], "argument --threshold: invalid float value: 'ninety'"),
    (["cleanup", "--max-age-hours"], "argument --max-age-hours: expected one argument"),
])
def test_bad_arguments_exit_3(capsys, argv, message):
    code, out, err = cli(capsys, *argv)
    assert code == 3 and out == ""
    assert err.startswith("usage: ray-maintenance") and "ray-maintenance" in err and message in err


@pytest.mark.parametrize("settings, message", [
    ({"max_age": 2}, 'unknown key "max_age"; valid keys: tmp_dir, ray_temp_dir, patterns, exclude, max_age_hours'),
    ({"max_age_hours": "two"}, 'max_age_hours "two" is not a number; for example "max_age_hours": 24'),
    ({"containers": "yes"}, 'containers "yes" is not true, false or "auto"; for example "containers": "auto"'),
    ({"patterns": "tmp*"}, 'patterns "tmp*" is not a list of strings'),
    ({"scan_workers": 1.5}, "scan_workers 1.5 is not a whole number"),
    ({"thresholds": {"warn": 85}}, 'thresholds has no level "warn"; valid: info, warning, critical'),
    ({"thresholds": {"warning": "high"}}, 'thresholds.warning "high" is not a number'),
    ({"max_age_hours": -1}, "max_age_hours -1 is negative; use 0 (any age) or more hours"),
    ({"thresholds": {"warning": 97}}, "thresholds info 80.0, warning 97, critical 95.0 must increase"),
    ({"min_tmp_size": "lots"}, "min_tmp_size 'lots' is not a size; write bytes or a size such as 5GB"),
    ({"patterns": ["*"]}, "pattern '*' matches every name"),
    ({"tmp_dir": "/nonexistent-rayops"}, "tmp_dir '/nonexistent-rayops' does not exist"),
    ({"log_file": "ray.log"}, "log_file 'ray.log' is not an absolute path"),
    ({"metrics_dir": "/nonexistent-rayops"}, "metrics_dir '/nonexistent-rayops' is not a directory; create it"),
    ({"log_file": "/nonexistent-rayops/ray.log"}, "log_file '/nonexistent-rayops/ray.log' cannot be opened"),
    ({"uv_cache_dir": "home/apiuser/.cache/uv"}, "uv_cache_dir 'home/apiuser/.cache/uv' is not an absolute path"),
    ({"uv_cache_dir": 7}, 'uv_cache_dir 7 is not a string; for example "uv_cache_dir": "/home/apiuser/.cache/uv"'),
    ({"audit_log": "/nonexistent-rayops/audit.jsonl"}, "audit_log '/nonexistent-rayops/audit.jsonl' is in a "
     "directory that does not exist; create /nonexistent-rayops or change audit_log"),
])
def test_bad_config_values_exit_3_naming_value_and_fix(capsys, tmp_path, settings, message):
    settings = dict({"tmp_dir": str(tmp_path), "lock_file": str(tmp_path / "lock")}, **settings)
    path = write_config(tmp_path, **settings)
    code, out, err = cli(capsys, "--config", path, "check")
    assert code == 3 and out == ""
    assert message in err and err.startswith("ray-maintenance: ") and err.count("\n") == 1
    assert not os.path.exists(str(tmp_path / "lock"))


@pytest.mark.parametrize("content, message", [
    ('{"tmp_dir": "/tmp",}', "is not valid JSON: Expecting property name enclosed in double quotes: line 1 column"),
    ('["/tmp"]', "must hold a JSON object"),
    ('{"max_age_hours": NaN}', "is not valid JSON: NaN is not a JSON number"),
    (None, "cannot read config"),
])
def test_unreadable_config_exits_3(capsys, tmp_path, content, message):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    code, out, err = cli(capsys, "--config", str(path), "monitor")
    assert code == 3 and out == "" and message in err and str(path) in err


def test_config_from_the_environment(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_MAINTENANCE_CONFIG", write_config(tmp_path, bogus=1))
    code, _out, err = cli(capsys, "check")
    assert code == 3 and "config %s: unknown key \"bogus\"" % (tmp_path / "ray-maintenance.json") in err


def test_a_missing_library_is_named_with_its_debian_package(capsys, monkeypatch, tmp_path):
    path = write_config(tmp_path, tmp_dir=str(tmp_path))
    monkeypatch.setattr(_cli, "psutil", None)
    code, out, err = cli(capsys, "--config", path, "monitor")
    assert code == 3 and out == ""
    assert "the Python library psutil cannot be imported" in err and "apt-get install python3-psutil" in err
    monkeypatch.setattr(_cli, "docker", None)
    edit_config(path, containers=True)
    code, _out, err = cli(capsys, "--config", path, "cleanup")
    assert code == 3 and "psutil and docker" in err and "apt-get install python3-psutil python3-docker" in err
    assert "or set containers: false" in err


def used_percent(path):
    """The used % of the filesystem holding ``path``, with room around it for the thresholds of a test."""
    used = filesystem_of(str(path))["used_percent"]
    assert 3 < used < 97, "the test needs room around the used percentage of %s" % path
    return used


@pytest.mark.parametrize("offsets, expected", [((1.0, 2.0), 0), ((-1.0, 1.0), 1), ((-2.0, -1.0), 2)])
def test_check_exit_code_by_the_used_percent(capsys, configured, offsets, expected):
    tmp, path, metrics, _log = configured
    used = used_percent(tmp)
    warning, critical = used + offsets[0], used + offsets[1]
    code, out, _err = cli(capsys, "check", "--threshold", str(warning), "--critical", str(critical),
                          "--config", path)
    assert code == expected
    assert out.startswith("%s: host %s " % (("OK", "WARNING", "CRITICAL")[expected], tmp))
    assert "warning at %g%%, critical at %g%%" % (warning, critical) in out
    promtool_check((metrics / USAGE_FILE).read_text())  # check measures, so it writes the usage metrics


def test_check_takes_the_config_thresholds(capsys, configured):
    tmp, path, _metrics, _log = configured
    used = used_percent(tmp)
    edit_config(path, thresholds={"info": used - 3, "warning": used - 2, "critical": used + 2})
    code, out, _err = cli(capsys, "--config", path, "--quiet", "check")
    assert code == 1 and out == ""
    code, out, err = cli(capsys, "--config", path, "check", "--critical", str(used - 2.5))
    assert code == 3 and out == ""  # the config's warning is above it
    assert "--critical %g must be above the warning threshold %g (thresholds.warning of the config); give " \
        "--threshold too, below %g" % (used - 2.5, used - 2, used - 2.5) in err
    code, out, _err = cli(capsys, "--config", path, "--json", "check", "--threshold", "0", "--critical",
                          str(used - 1))
    report = json.loads(out)
    assert code == 2 and report["check"] == {"status": "critical", "target": "host", "path": str(tmp),
                                             "used_percent": report["filesystem"]["used_percent"],
                                             "warning": 0.0, "critical": used - 1}


@pytest.mark.parametrize("flags, message", [
    (["--critical", "50"], "--critical 50 must be above the warning threshold 90 (thresholds.warning of the config); "
     "give --threshold too, below 50"),
    (["--threshold", "97"], "--threshold 97 must be below the critical threshold 95 (thresholds.critical of the "
     "config); give --critical too, above 97"),
    (["--threshold", "97", "--critical", "96"], "--threshold 97 must be below --critical 96 (the warning level comes "
     "first)"),
])
def test_crossed_check_limits_name_the_flag_given(capsys, configured, flags, message):
    _tmp, path, _metrics, _log = configured
    code, out, err = cli(capsys, "--config", path, "check", *flags)
    assert code == 3 and out == "" and err.startswith("ray-maintenance: " + message)


def with_containers(monkeypatch, *entries):
    """``collect_usage`` as the CLI calls it, with these container entries in the report."""
    real = _cli.collect_usage

    def collect(options, psutil, docker=None):
        report = real(options, psutil, docker)
        report["containers"] = [entry(report) if callable(entry) else entry for entry in entries]
        return report

    monkeypatch.setattr(_cli, "collect_usage", collect)


STOPPED = {"name": "ray-worker-2", "id": "abc", "status": "exited", "tmp_bytes": None, "error": None}


def test_a_stopped_container_is_no_error_for_check_and_monitor(capsys, configured, monkeypatch):
    tmp, path, metrics, _log = configured
    used = used_percent(tmp)
    with_containers(monkeypatch, STOPPED)
    code, out, err = cli(capsys, "--config", path, "check", "--threshold", str(used + 1), "--critical", str(used + 2))
    assert (code, err) == (0, "") and out.startswith("OK: host %s " % tmp)
    code, out, err = cli(capsys, "--config", path, "--json", "check")
    assert code in (0, 1, 2) and err == "" and json.loads(out)["check"]["target"] == "host"
    code, out, err = cli(capsys, "--config", path, "monitor")
    assert (code, err) == (0, "")
    assert table(out.splitlines(), "CONTAINER")[1] == ["ray-worker-2", "exited", "-", "-", "-", "-", "-", "-"]
    assert "ray-worker-2" not in (metrics / USAGE_FILE).read_text()


def test_check_takes_the_fullest_measured_container_and_skips_the_rest(capsys, configured, monkeypatch):
    tmp, path, _metrics, _log = configured
    used = used_percent(tmp)

    def full(report):
        fs = dict(report["filesystem"], path="/tmp", used_percent=used + 2.5)
        return dict(report, name="ray-worker-1", id="def", status="running", error=None, filesystem=fs)

    broken = dict(STOPPED, name="ray-worker-3", status="running", error="container was removed during the run")
    with_containers(monkeypatch, STOPPED, full, broken)
    code, out, err = cli(capsys, "--config", path, "check", "--threshold", str(used + 1), "--critical", str(used + 2))
    assert code == 2 and out.startswith("CRITICAL: ray-worker-1 /tmp %.1f%% used" % (used + 2.5))
    assert err == "ray-maintenance: container ray-worker-3: container was removed during the run\n"


def test_uv_cache_dir_of_the_config_is_measured(capsys, configured, tmp_path):
    _tmp, path, metrics, _log = configured
    uv = tmp_path / "home" / "apiuser" / ".cache" / "uv"
    write(str(uv / "archive-v0" / "wheel.whl"), 65536)
    code, out, _err = cli(capsys, "--config", path, "--json", "monitor")
    assert code == 0 and json.loads(out)["categories"]["uv_cache"]["bytes"] == 0  # $UV_CACHE_DIR: none
    edit_config(path, uv_cache_dir=str(uv))
    code, out, _err = cli(capsys, "--config", path, "--json", "monitor")
    assert code == 0 and json.loads(out)["categories"]["uv_cache"]["bytes"] == du_bytes(str(uv)) >= 65536
    assert series(samples((metrics / USAGE_FILE).read_text()), "rayops_ray_category_bytes", category="uv_cache",
                  **HOST) == du_bytes(str(uv))
    edit_config(path, uv_cache_dir=None)  # null: the default again
    code, out, _err = cli(capsys, "--config", path, "--json", "monitor")
    assert code == 0 and json.loads(out)["categories"]["uv_cache"]["bytes"] == 0


def test_a_non_root_check_and_monitor_work_without_metrics_and_log(capsys, sandbox, monkeypatch):
    base = pathlib.Path(tempfile.mkdtemp(prefix="rayops-cli-"))  # not tmp_path: nobody must read it
    try:
        os.chmod(str(base), 0o755)
        tmp = make_tree(base / "tmp")
        monkeypatch.setenv("UV_CACHE_DIR", str(base / "no-uv"))
        metrics = base / "metrics"  # root's, as node_exporter's: not written with --no-metrics
        metrics.mkdir(mode=0o700)
        path = write_config(base, tmp_dir=str(tmp), ray_temp_dir=str(tmp / "ray"), scan_workers=1,
                            sample_seconds=0.1, metrics_dir=str(metrics))
        used = used_percent(tmp)
        commands = [["--config", path, "--no-metrics", "check", "--threshold", str(used + 1), "--critical",
                     str(used + 2)], ["--config", path, "--no-metrics", "--json", "monitor"]]
        assert [cli(capsys, *argv)[0] for argv in commands] == [0, 0]  # as root first: every import is loaded

        def run():
            stdout, stderr = io.StringIO(), io.StringIO()
            monkeypatch.setattr(sys, "stdout", stdout)
            monkeypatch.setattr(sys, "stderr", stderr)
            return [(_cli.main(argv), os.geteuid()) for argv in commands], stdout.getvalue(), stderr.getvalue()

        (checked, monitored), out, err = as_nobody(run)
        assert checked == monitored == [0, 65534] and err == ""
        assert out.startswith("OK: host %s " % tmp)
        report = json.loads(out[out.index("\n{") + 1:])
        assert report["tmp_bytes"] == du_bytes(str(tmp)) and report["error_count"] == 0
        assert os.listdir(str(metrics)) == []
    finally:
        shutil.rmtree(str(base))


def table(lines, header):
    """The rows of the table whose header starts with ``header``: lists of cells."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start:]:
        if not line:
            break
        rows.append(re.split(r"\s{2,}", line))
    return rows


def test_monitor_table_and_json_tell_the_same(capsys, configured):
    tmp, path, metrics, _log = configured
    code, out, err = cli(capsys, "--config", path, "monitor")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("%s " % tmp) and lines[0].endswith("; idle")
    assert "Ray sessions: 1 live, 2 stale; node role worker" in lines
    spilled = du_bytes(str(tmp / "ray" / STALE / "ray_spilled_objects_n"))
    assert "%s in %s; %s scanned (with the Ray temp roots and the uv cache)" % (
        format_bytes(du_bytes(str(tmp))), tmp, format_bytes(du_bytes(str(tmp)))) in lines
    code, out, _err = cli(capsys, "--config", path, "--json", "monitor")
    report = json.loads(out)
    assert code == 0 and report["tmp_bytes"] == du_bytes(str(tmp))
    assert report["categories"]["spilled_objects"]["bytes"] == spilled
    assert [s["name"] for s in report["sessions"] if s["live"]] == [LIVE]
    assert report["activity"]["busy"] is False and report["containers"] == []
    why = "host idle: no task or actor method running; CPU "  # why, for the operator
    assert [line for line in lines if line.startswith(why)] and report["activity"]["why"].startswith(why[11:])
    assert table(lines, "CATEGORY")[:len(CATEGORIES) + 1] == [["CATEGORY", "BYTES", "FILES"]] + [
        [name, format_bytes(report["categories"][name]["bytes"]), str(report["categories"][name]["files"])]
        for name in CATEGORIES]
    assert table(lines, "FILESYSTEM")[1] == [str(tmp), mountpoint_of(str(tmp)), format_bytes(
        report["filesystem"]["total_bytes"]), "%.1f%%" % report["filesystem"]["used_percent"], format_bytes(
        report["filesystem"]["free_bytes"]), "%.1f%%" % report["filesystem"]["inodes_used_percent"], report["level"]]
    text = (metrics / USAGE_FILE).read_text()
    promtool_check(text)
    assert series(samples(text), "rayops_ray_tmp_bytes", **HOST) == du_bytes(str(tmp))
    assert sorted(os.listdir(str(metrics))) == [LOCK_FILE, USAGE_FILE]  # monitor does not clean: no cleanup file


def test_no_metrics_writes_none(capsys, configured):
    _tmp, path, metrics, _log = configured
    assert cli(capsys, "monitor", "--no-metrics", "--quiet", "--config", path) == (0, "", "")
    assert os.listdir(str(metrics)) == []


def test_dry_run_changes_nothing_and_says_what_would_go(capsys, configured, tmp_path):
    tmp, path, metrics, log = configured
    before = tree_digest(str(tmp))
    code, out, err = cli(capsys, "--config", path, "cleanup", "--dry-run")
    assert code == 0 and err == ""
    assert tree_digest(str(tmp)) == before
    assert os.listdir(str(metrics)) == [] and not os.path.exists(str(tmp_path / "audit.jsonl"))
    lines = out.splitlines()
    assert lines[0] == "dry run: nothing was removed; this is what would go"
    assert lines[1].startswith("host (host): would_clean, would free ")
    assert "  would remove %s" % (tmp / "ray_tmp_1") in lines and "  would remove %s" % (tmp / "ray" / STALE) in lines
    assert "  would remove %s" % (tmp / "tmpfresh") not in lines
    assert log.read_text().splitlines()[-1].split(" INFO ")[1].startswith("cleanup exit 0 in ")
    assert "dry run, done, would free" in log.read_text()


def test_cleanup_removes_old_matching_entries_and_writes_metrics(capsys, configured, tmp_path):
    tmp, path, metrics, log = configured
    before, entries = du_bytes(str(tmp)), count_entries(tmp)
    assert cli(capsys, "--config", path, "cleanup", "--quiet") == (0, "", "")  # as cron runs it
    assert sorted(os.listdir(str(tmp))) == ["ray", "tmpfresh", "unrelated"]
    assert sorted(os.listdir(str(tmp / "ray"))) == [LIVE]
    assert os.listdir(str(tmp / "ray" / LIVE / "logs" / "old")) == ["worker-new.out"]
    freed = before - du_bytes(str(tmp))
    cleanup = samples((metrics / CLEANUP_FILE).read_text())
    promtool_check((metrics / CLEANUP_FILE).read_text())
    assert series(cleanup, "rayops_ray_cleanup_freed_bytes", **HOST) == freed
    assert series(cleanup, "rayops_ray_cleanup_removed_entries", **HOST) == entries - count_entries(tmp)
    assert series(cleanup, "rayops_ray_cleanup_target_status", status="cleaned", **HOST) == 1
    assert cleanup["rayops_ray_cleanup_success"] == {frozenset(): 1}
    usage = samples((metrics / USAGE_FILE).read_text())  # measured after the cleanup
    assert series(usage, "rayops_ray_tmp_bytes", **HOST) == du_bytes(str(tmp))
    assert series(usage, "rayops_ray_sessions", state="stale", **HOST) == 0
    assert sorted(os.listdir(str(metrics))) == [LOCK_FILE, CLEANUP_FILE, USAGE_FILE]
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert sum(line["bytes"] for line in audit) == freed
    logged = [line.split(" INFO ", 1)[1] for line in log.read_text().splitlines()]
    assert logged[0].startswith("cleanup target host (host): cleaned, freed %s, " % format_bytes(freed))
    assert logged[1].startswith("cleanup exit 0 in ") and logged[1].endswith(
        ": done, freed %s: host cleaned" % format_bytes(freed))
    assert len(logged) == 2
    code, out, _err = cli(capsys, "--config", path, "--json", "cleanup")
    again = json.loads(out)
    assert code == 0 and again["freed_bytes"] == 0 and again["targets"][0]["status"] == "cleaned"


def test_flags_win_over_the_config(capsys, configured):
    tmp, path, _metrics, _log = configured
    before = tree_digest(str(tmp))
    code, out, _err = cli(capsys, "--config", path, "cleanup", "--min-tmp-size", "1TB")
    assert code == 0 and out.startswith("host (host): skipped_below_threshold; tmp ")
    code, out, _err = cli(capsys, "--config", path, "cleanup", "--max-age-hours", "5")
    assert code == 0 and "  removed " not in out and "freed 0 B in total" in out  # all is 3 hours old
    assert tree_digest(str(tmp)) == before
    code, out, _err = cli(capsys, "--config", path, "cleanup", "--min-tmp-size", "1 TB?")
    assert code == 3 and out == ""


def test_a_locked_out_cleanup_exits_1_and_reports_failure(capsys, configured, tmp_path):
    tmp, path, metrics, _log = configured
    before = tree_digest(str(tmp))
    with open(str(tmp_path / "lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another cleanup is running
        code, out, err = cli(capsys, "--config", path, "cleanup", "--quiet")
    assert code == 1 and out == ""
    assert err == "ray-maintenance: cleanup skipped: another cleanup holds %s (waited 0s)\n" % (tmp_path / "lock")
    assert tree_digest(str(tmp)) == before
    cleanup = samples((metrics / CLEANUP_FILE).read_text())
    assert cleanup["rayops_ray_cleanup_success"] == {frozenset(): 0}
    assert "rayops_ray_cleanup_target_status" not in cleanup
    assert not os.path.exists(str(metrics / USAGE_FILE))  # the run holding the lock writes it


def test_a_planted_lock_file_is_refused_exit_1_and_success_0(capsys, configured, tmp_path):
    tmp, path, metrics, _log = configured
    before = tree_digest(str(tmp))
    (tmp_path / "lock").write_text("")
    os.chown(str(tmp_path / "lock"), 65534, 65534)  # a user made it first, to hold its flock
    code, out, err = cli(capsys, "--config", path, "cleanup", "--quiet")
    assert code == 1 and out == "" and tree_digest(str(tmp)) == before
    assert err == ("ray-maintenance: cleanup skipped: lock file %s is not a regular file of this user (uid 0; its "
                   "owner is uid 65534): someone else may have made it to hold the lock forever; remove it, and keep "
                   "the lock in a directory only uid 0 can write\n" % (tmp_path / "lock"))
    assert samples((metrics / CLEANUP_FILE).read_text())["rayops_ray_cleanup_success"] == {frozenset(): 0}


def test_a_cleanup_that_fails_exits_1_with_success_0(capsys, configured, tmp_path):
    _tmp, path, metrics, log = configured
    write(str(tmp_path / "a-file"), 1)
    edit_config(path, lock_file=str(tmp_path / "a-file" / "lock"))  # its directory cannot be made
    code, out, err = cli(capsys, "--config", path, "--json", "cleanup")
    assert code == 1 and json.loads(out)["failed"] is True
    assert err.startswith("ray-maintenance: cleanup failed: [Errno 17] File exists")
    assert samples((metrics / CLEANUP_FILE).read_text())["rayops_ray_cleanup_success"] == {frozenset(): 0}
    assert "Traceback" in log.read_text()  # the details go to the log


def test_a_failed_docker_prune_keeps_the_cleanup_and_exits_1(capsys, configured, tmp_path):
    tmp, path, metrics, _log = configured
    edit_config(path, docker_prune=True, docker_host="unix://%s/no-docker.sock" % tmp_path)
    code, out, err = cli(capsys, "--config", path, "--json", "cleanup")
    result = json.loads(out)
    assert code == 1 and result["targets"][0]["status"] == "cleaned" and result["freed_bytes"] > 0
    assert result["docker_prune"]["error"].startswith("docker prune failed: cannot reach the Docker daemon")
    assert err.startswith("ray-maintenance: docker prune failed: cannot reach the Docker daemon at unix://%s"
                          % tmp_path)
    cleanup = samples((metrics / CLEANUP_FILE).read_text())
    assert cleanup["rayops_ray_cleanup_success"] == {frozenset(): 0}
    assert series(cleanup, "rayops_ray_cleanup_freed_bytes", **HOST) == result["freed_bytes"]
    assert not os.path.exists(str(tmp / "ray_tmp_1"))


def test_the_log_is_reopened_when_logrotate_moves_it(capsys, configured):
    _tmp, path, _metrics, log = configured
    rotated = str(log) + ".1"

    class Rotate(logging.Handler):
        """Moves the log away before the second line, as logrotate would mid-run."""

        def __init__(self):
            super().__init__()
            self.seen = 0

        def emit(self, record):
            self.seen += 1
            if self.seen == 2:
                os.rename(str(log), rotated)

    rotate = Rotate()
    _cli.LOGGER.handlers.insert(0, rotate)  # before the CLI's own handler
    try:
        assert cli(capsys, "--config", path, "cleanup", "--quiet") == (0, "", "")
    finally:
        _cli.LOGGER.removeHandler(rotate)
    with open(rotated) as handle:
        assert [" INFO cleanup target host (host): " in line for line in handle] == [True]
    with open(str(log)) as handle:
        assert [" INFO cleanup exit 0 in " in line for line in handle] == [True]
    assert not any(isinstance(handler, logging.handlers.WatchedFileHandler) for handler in _cli.LOGGER.handlers)


def test_hostile_tmp_dir_is_printed_and_logged_on_one_line(capsys, sandbox, tmp_path):
    hostile = os.path.join(os.fsencode(str(tmp_path)), b"a\nb\xff")
    write(os.fsdecode(os.path.join(hostile, b"tmp1")), 4096)
    metrics, log = tmp_path / "metrics", tmp_path / "log"
    metrics.mkdir()
    path = write_config(tmp_path, tmp_dir=os.fsdecode(hostile), ray_temp_dir=os.fsdecode(hostile) + "/ray",
                        scan_workers=1, metrics_dir=str(metrics), log_file=str(log), sample_seconds=0.1)
    code, out, _err = cli(capsys, "--config", path, "monitor")
    assert code == 0 and out.splitlines()[0].startswith("%s/a\\nb\\xff " % tmp_path)
    assert len(log.read_text().splitlines()) == 1
    promtool_check((metrics / USAGE_FILE).read_text())
    code, out, _err = cli(capsys, "--config", path, "--json", "monitor")
    assert json.loads(out)["tmp_dir"] == os.fsdecode(hostile)


# --- check: one verdict (issue 10, item 5) -----------------------------------------------------------------------

def test_check_says_one_level_in_its_line_summary_json_and_exit_code(capsys, configured):
    tmp, path, metrics, _log = configured
    used = used_percent(tmp)
    edit_config(path, thresholds={"info": used + 1, "warning": used + 2, "critical": used + 3})  # the config: ok
    for flags, level, code in ((["--threshold", str(used - 1)], "warning", 1),
                               (["--threshold", str(used - 2), "--critical", str(used - 1)], "critical", 2),
                               ([], "ok", 0)):
        exit_code, out, err = cli(capsys, "--config", path, "check", *flags)
        first, summary, *held = out.splitlines()
        assert (exit_code, err) == (code, "")
        # past ok, it says who holds the measured dirs: the owners, the largest entries by bytes and by inodes
        assert [line.split(":")[0] for line in held] == ([] if level == "ok" else ["held by", "largest", "most inodes"])
        assert first.startswith("%s: host %s " % (level.upper(), tmp)) and ", level %s; " % level in summary
        exit_code, out, _err = cli(capsys, "--config", path, "--json", "check", *flags)
        report = json.loads(out)
        assert exit_code == code and report["check"]["status"] == report["level"] == level
        assert ", level %s; " % level in report["summary"]
        assert {fs["level"] for fs in report["filesystems"]} == {level}
        # the metrics keep the config's thresholds, whatever a check's flags said
        assert series(samples((metrics / USAGE_FILE).read_text()), "rayops_ray_usage_level", **HOST) == 0


def test_check_has_no_info_level(capsys, configured):
    tmp, path, _metrics, _log = configured
    used = used_percent(tmp)
    edit_config(path, thresholds={"info": used - 1, "warning": used + 1, "critical": used + 2})
    code, out, _err = cli(capsys, "--config", path, "monitor")
    assert code == 0 and ", level info; " in out.splitlines()[0]  # monitor and the metrics know info
    code, out, _err = cli(capsys, "--config", path, "check")
    assert code == 0 and out.startswith("OK: host ") and ", level ok; " in out.splitlines()[1]


# --- a bad flag is the flag's, a bad key the file's (item 8) ------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["cleanup", "--min-tmp-size", "lots"],
     '--min-tmp-size "lots" is not a size; write bytes or a size such as 5GB, 500MB, 0'),
    (["cleanup", "--min-tmp-size=-5GB"], '--min-tmp-size "-5GB" is not a size'),
    (["cleanup", "--max-age-hours", "-1"], "--max-age-hours -1 is negative; use 0 (any age) or more hours"),
    (["--metrics-dir", "metrics", "monitor"], '--metrics-dir "metrics" is not an absolute path; give the full path'),
    (["monitor", "--metrics-dir", "/nonexistent-rayops"], '--metrics-dir "/nonexistent-rayops" is not a directory'),
])
def test_a_bad_flag_is_named_as_the_flag_not_blamed_on_the_config(capsys, configured, tmp_path, argv, message):
    _tmp, path, metrics, _log = configured
    code, out, err = cli(capsys, "--config", path, *argv)
    assert (code, out) == (3, "") and err.startswith("ray-maintenance: " + message)
    assert err.count("\n") == 1 and path not in err and "config" not in err.split(";")[0]
    assert os.listdir(str(metrics)) == [] and not os.path.exists(str(tmp_path / "lock"))  # a bad flag: no record


def test_a_non_finite_number_flag_is_refused(capsys, configured):
    _tmp, path, _metrics, _log = configured
    for argv in (["check", "--threshold", "nan"], ["cleanup", "--max-age-hours", "inf"]):
        code, out, err = cli(capsys, "--config", path, *argv)
        assert (code, out) == (3, "") and "is not a finite number" in err


def test_a_bad_config_value_names_the_file_and_key_and_the_same_flag_wins(capsys, configured):
    _tmp, path, _metrics, _log = configured
    edit_config(path, min_tmp_size="lots")
    code, _out, err = cli(capsys, "--config", path, "cleanup", "--dry-run")
    assert code == 3 and err == ("ray-maintenance: config %s: min_tmp_size 'lots' is not a size; write bytes or a size "
                                 "such as 5GB, 500MB, 0\n" % path)
    edit_config(path, min_tmp_size="0")
    code, out, _err = cli(capsys, "--config", path, "cleanup", "--dry-run", "--min-tmp-size", "1TB")
    assert code == 0 and "skipped_below_threshold" in out


# --- non-root check and monitor with the deployed config (item 9) ------------------------------------------------

def test_non_root_check_and_monitor_with_a_config_like_the_roles(capsys, sandbox, monkeypatch):
    """The log file and metrics dir are root's, Docker's socket too: each is said once, the exit codes stay."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="rayops-cli-"))  # not tmp_path: nobody must read it
    docker_socket = socket.socket(socket.AF_UNIX)
    try:
        os.chmod(str(base), 0o755)
        tmp = make_tree(base / "tmp")
        monkeypatch.setenv("UV_CACHE_DIR", str(base / "no-uv"))
        logs, metrics = base / "log", base / "metrics"
        logs.mkdir(mode=0o750)  # as the role makes /var/log/rayops
        metrics.mkdir(mode=0o755)  # node_exporter's textfile dir, root's
        docker_socket.bind(str(base / "docker.sock"))  # root's, 0600 under umask 077: as Docker's to a user
        os.chmod(str(base / "docker.sock"), 0o600)
        path = write_config(base, tmp_dir=str(tmp), ray_temp_dir=str(tmp / "ray"), scan_workers=1,
                            sample_seconds=0.1, metrics_dir=str(metrics), log_file=str(logs / "ray-maintenance.log"),
                            audit_log=str(logs / "cleanup-audit.jsonl"), containers=True,
                            docker_host="unix://%s/docker.sock" % base, lock_file=str(base / "run" / "lock"))
        os.chmod(path, 0o644)
        used = used_percent(tmp)
        commands = [["--config", path, "check", "--threshold", str(used + 1), "--critical", str(used + 2)],
                    ["--config", path, "--json", "monitor"]]
        for argv in commands:  # as root first: every import is loaded, and root's files are there
            cli(capsys, *argv)
        before = {name: (metrics / name).read_bytes() for name in os.listdir(str(metrics))}
        logged = (logs / "ray-maintenance.log").read_bytes()

        def run():
            stdout, stderr = io.StringIO(), io.StringIO()
            monkeypatch.setattr(sys, "stdout", stdout)
            monkeypatch.setattr(sys, "stderr", stderr)
            return [(_cli.main(argv), os.geteuid()) for argv in commands], stdout.getvalue(), stderr.getvalue()

        (checked, monitored), out, err = as_nobody(run)
        assert checked == monitored == [0, 65534], err
        assert out.startswith("OK: host %s " % tmp)
        report = json.loads(out[out.index("\n{") + 1:])
        assert report["tmp_bytes"] == du_bytes(str(tmp)) and report["containers"] == []
        notes = err.splitlines()
        assert all(line.startswith("ray-maintenance: note: ") for line in notes), err
        for text in ("not logged: log_file %s cannot be opened by uid 65534 (Permission denied)"
                     % (logs / "ray-maintenance.log"),
                     "metrics not written: metrics_dir %s is not writable by uid 65534 (Permission denied)" % metrics,
                     "containers not measured: uid 65534 may not use the Docker socket %s/docker.sock" % base):
            assert sum(text in line for line in notes) == 2, (text, err)  # once per run
        assert len(notes) == 6
        assert {name: (metrics / name).read_bytes() for name in os.listdir(str(metrics))} == before
        assert (logs / "ray-maintenance.log").read_bytes() == logged
    finally:
        docker_socket.close()
        shutil.rmtree(str(base))


# --- a run that cannot start says so to Prometheus (item 11) ------------------------------------------------------

def status_of(metrics):
    """``{(command, reason): 1}`` of the status file, checked by promtool; {} when there is none."""
    status = metrics / STATUS_FILE
    if not status.exists():
        return {}
    text = status.read_text()
    promtool_check(text)
    found = samples(text)
    assert set(found) == {"rayops_ray_maintenance_start_error", "rayops_ray_maintenance_start_error_timestamp_seconds"}
    return {(dict(labels)["command"], dict(labels)["reason"]): value
            for labels, value in found["rayops_ray_maintenance_start_error"].items()}


def test_a_run_that_cannot_start_is_recorded_until_one_starts(capsys, configured, tmp_path):
    _tmp, path, metrics, _log = configured
    edit_config(path, max_age_hours=-1)
    for command in ("monitor", "cleanup"):
        code, _out, err = cli(capsys, "--config", path, command, "--quiet")
        assert code == 3 and err.startswith("ray-maintenance: config %s: max_age_hours -1 is negative" % path)
    assert status_of(metrics) == {("monitor", "config"): 1, ("cleanup", "config"): 1}
    assert sorted(os.listdir(str(metrics))) == [LOCK_FILE, STATUS_FILE]  # nothing else was written
    for argv in (["check"], ["cleanup", "--dry-run"], ["monitor", "--no-metrics"], ["check-config"]):
        assert cli(capsys, "--config", path, *argv)[0] == 3
    assert status_of(metrics) == {("monitor", "config"): 1, ("cleanup", "config"): 1}  # those record nothing
    edit_config(path, max_age_hours=1)
    assert cli(capsys, "--config", path, "monitor", "--quiet") == (0, "", "")
    assert status_of(metrics) == {("cleanup", "config"): 1}  # monitor starts again; cleanup has not yet
    assert cli(capsys, "--config", path, "cleanup", "--quiet") == (0, "", "")
    assert status_of(metrics) == {} and STATUS_FILE not in os.listdir(str(metrics))


def test_an_unreadable_config_is_recorded_in_the_metrics_dir_flag(capsys, configured, tmp_path):
    _tmp, path, metrics, _log = configured
    with open(path, "w") as handle:
        handle.write('{"metrics_dir": "%s", "tmp_dir": ' % metrics)  # cut short
    code, _out, err = cli(capsys, "--config", path, "cleanup")
    assert code == 3 and "is not valid JSON" in err and status_of(metrics) == {}  # nowhere said where to write
    code, _out, err = cli(capsys, "--config", path, "--metrics-dir", str(metrics), "cleanup")
    assert code == 3 and err.count("\n") == 1 and status_of(metrics) == {("cleanup", "config"): 1}
    os.unlink(path)
    code, _out, err = cli(capsys, "--config", path, "monitor", "--metrics-dir", str(metrics))
    assert code == 3 and "cannot read config" in err
    assert status_of(metrics) == {("cleanup", "config"): 1, ("monitor", "config"): 1}


def test_a_bad_value_elsewhere_still_records_in_the_configs_metrics_dir(capsys, configured):
    _tmp, path, metrics, _log = configured
    edit_config(path, patterns="tmp*")  # a type error: the config is not loaded, its metrics_dir is still read
    assert cli(capsys, "--config", path, "cleanup")[0] == 3
    assert status_of(metrics) == {("cleanup", "config"): 1}


def test_a_missing_library_and_an_unusable_log_are_recorded(capsys, configured, monkeypatch, tmp_path):
    _tmp, path, metrics, _log = configured
    monkeypatch.setattr(_cli, "psutil", None)
    code, _out, err = cli(capsys, "--config", path, "cleanup")
    assert code == 3 and "the Python library psutil cannot be imported" in err
    assert status_of(metrics) == {("cleanup", "library"): 1}
    monkeypatch.undo()
    (tmp_path / "a-dir").mkdir()
    edit_config(path, log_file=str(tmp_path / "a-dir"))  # a directory: it cannot be opened as the log
    code, _out, err = cli(capsys, "--config", path, "monitor")
    assert code == 3 and "log_file %r cannot be opened (Is a directory)" % str(tmp_path / "a-dir") in err
    assert status_of(metrics) == {("cleanup", "library"): 1, ("monitor", "log"): 1}


def test_the_metrics_dir_flag_wins_over_the_config(capsys, configured, tmp_path):
    _tmp, path, metrics, _log = configured
    other = tmp_path / "other-metrics"
    other.mkdir()
    assert cli(capsys, "--config", path, "--metrics-dir", str(other), "monitor", "--quiet") == (0, "", "")
    assert os.listdir(str(metrics)) == [] and sorted(os.listdir(str(other))) == [LOCK_FILE, USAGE_FILE]


# --- check-config: what the role validates its config with -------------------------------------------------------

BAD_CONFIGS = next(mark.args[1] for mark in test_bad_config_values_exit_3_naming_value_and_fix.pytestmark
                   if mark.name == "parametrize")


def test_check_config_says_ok_and_touches_nothing(capsys, configured, monkeypatch, tmp_path):
    tmp, path, metrics, log = configured
    monkeypatch.setattr(_cli, "psutil", None)  # it needs neither
    monkeypatch.setattr(_cli, "docker", None)
    edit_config(path, containers=True, docker_prune=True)
    before = tree_digest(str(tmp_path))
    assert cli(capsys, "--config", path, "check-config") == (0, "config %s: ok\n" % path, "")
    code, out, _err = cli(capsys, "--config", path, "--json", "check-config")
    assert code == 0 and json.loads(out) == {"config": path, "valid": True}
    assert cli(capsys, "check-config", "--config", path, "--quiet") == (0, "", "")
    assert tree_digest(str(tmp_path)) == before and not os.path.exists(str(log))
    assert os.listdir(str(metrics)) == [] and not os.path.exists(str(tmp_path / "lock"))


@pytest.mark.parametrize("settings, message", BAD_CONFIGS)
def test_check_config_says_what_a_run_says(capsys, tmp_path, settings, message):
    settings = dict({"tmp_dir": str(tmp_path), "lock_file": str(tmp_path / "lock")}, **settings)
    path = write_config(tmp_path, **settings)
    code, out, err = cli(capsys, "--config", path, "check-config")
    assert (code, out) == (3, "") and err.count("\n") == 1 and message in err
    assert (code, out, err) == cli(capsys, "--config", path, "check")  # the same message as a run's


# --- the log file: one line per message ----------------------------------------------------------------------------

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ray-maintenance\[\d+\] [A-Z]+ ")


def _log_record(message, *args, exc_info=None, stack_info=None):
    record = logging.LogRecord("ray-maintenance", logging.ERROR, __file__, 1, message, args, exc_info)
    record.stack_info = stack_info
    return record


def test_a_logged_message_is_one_line_and_only_a_traceback_keeps_its_line_breaks():
    formatter = _cli._PrintableFormatter("%(asctime)s " + _cli.PROG + "[%(process)d] %(levelname)s %(message)s")
    forged = "/tmp/a\nFORGED 2026 ray-maintenance[1] INFO cleanup target host: nothing\r\x1b[2K"
    text = formatter.format(_log_record("pressure: reclaim %s", forged))
    assert "\n" not in text and LOG_LINE.match(text)
    assert text.endswith("pressure: reclaim /tmp/a\\nFORGED 2026 ray-maintenance[1] INFO cleanup target host: "
                         "nothing\\r\\x1b[2K")
    failed = None
    try:
        raise ValueError("no such session %s" % forged)
    except ValueError:
        failed = sys.exc_info()
    text = formatter.format(_log_record("cleanup of %s failed", forged, exc_info=failed, stack_info="Stack:\n  f()"))
    lines = text.split("\n")
    assert LOG_LINE.match(lines[0]) and lines[0].endswith("cleanup of /tmp/a\\nFORGED 2026 ray-maintenance[1] INFO "
                                                          "cleanup target host: nothing\\r\\x1b[2K failed")
    assert any(line.strip() == "Traceback (most recent call last):" for line in lines[1:])
    assert any(line.lstrip().startswith('File "%s"' % __file__) for line in lines[1:])  # the frames, a line each
    assert lines[-2:] == ["  Stack:", "    f()"]
    # The traceback keeps its line breaks, but no line of it can pass for a record: each is indented.
    assert all(line.startswith("  ") for line in lines[1:]) and not any(LOG_LINE.match(line) for line in lines[1:])
    assert "\x1b" not in text and "\r" not in text
