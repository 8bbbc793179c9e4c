# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Textfile metrics from real usage reports and cleanup runs, checked by promtool and Prometheus' own parser.

The node is a sandbox (see ``SandboxNode``): only the stand-in Ray processes
started in it count, whatever else runs on the machine.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import subprocess
import threading
import time

import docker
import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils._metrics import (
    CLEANUP_FILE,
    LOCK_FILE,
    STATUS_FILE,
    USAGE_FILE,
    cleanup_succeeded,
    cleanup_text,
    escape_label,
    parse_status,
    render,
    status_families,
    update_status,
    usage_text,
    write_textfile,
)
from ansible_collections.rayops.disk.plugins.module_utils._fs import mountpoint_of
from ansible_collections.rayops.disk.plugins.module_utils._node import Cleanup, collect_usage
from ansible_collections.rayops.disk.plugins.module_utils._options import CleanupOptions, UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._usage import CATEGORIES
from ansible_collections.rayops.disk.tests.unit.conftest import du_bytes, write
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.conftest import (
    LIVE,
    STALE,
    count_entries,
    promtool_check,
    samples,
    series,
)


def report_of(tmp, **options):
    options.setdefault("containers", False)  # auto would look for this machine's containers
    return collect_usage(UsageOptions(tmp_dir=str(tmp), ray_temp_dir=str(tmp / "ray"), scan_workers=1,
                                      **options), psutil)


def test_usage_metrics_are_the_report_and_pass_promtool(ray_node):
    report = report_of(ray_node)
    text = usage_text(report, now=1700000000.5)
    promtool_check(text)
    found = samples(text)
    host = {"target": "host", "kind": "host"}
    assert series(found, "rayops_ray_tmp_bytes", **host) == du_bytes(str(ray_node)) == report["tmp_bytes"]
    by_category = {c: series(found, "rayops_ray_category_bytes", category=c, **host) for c in CATEGORIES}
    assert sum(by_category.values()) == du_bytes(str(ray_node))
    assert by_category["spilled_objects"] == du_bytes(str(ray_node / "ray" / STALE / "ray_spilled_objects_n"))
    assert by_category["logs_old"] == du_bytes(str(ray_node / "ray" / LIVE / "logs" / "old"))
    assert by_category["tmp_patterns"] == sum(du_bytes(str(ray_node / n))
                                              for n in ("ray_tmp_1", "pip-unpack-2", "tmpq1", "tmpfresh"))
    assert series(found, "rayops_ray_sessions", state="live", **host) == 1
    assert series(found, "rayops_ray_sessions", state="stale", **host) == 2
    statvfs = os.statvfs(str(ray_node))
    assert series(found, "rayops_ray_filesystem_size_bytes", **host) == statvfs.f_blocks * statvfs.f_frsize
    assert series(found, "rayops_ray_filesystem_avail_bytes", **host) == report["filesystem"]["free_bytes"]
    assert series(found, "rayops_ray_filesystem_used_bytes", **host) == report["filesystem"]["used_bytes"]
    assert series(found, "rayops_ray_usage_level", **host) == ("ok", "info", "warning", "critical").index(
        report["level"])
    assert series(found, "rayops_ray_usage_errors", **host) == 0
    mount = subprocess.run(["findmnt", "-n", "-o", "TARGET", "--target", str(ray_node)], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert found["rayops_ray_filesystem_info"] == {
        frozenset(dict(host, path=str(ray_node), mountpoint=mount).items()): 1}
    assert found["rayops_ray_usage_timestamp_seconds"] == {frozenset(): 1700000000.5}
    assert found["rayops_ray_containers_up"] == {frozenset(): 1}
    inodes = (statvfs.f_files - statvfs.f_ffree) / statvfs.f_files
    assert abs(series(found, "rayops_ray_filesystem_inodes_used_ratio", **host) - inodes) < 0.001
    assert series(found, "rayops_ray_deleted_open_bytes", **host) == report["deleted_open"]["bytes"]
    assert set(found) == {"rayops_ray_" + name for name in (
        "filesystem_size_bytes", "filesystem_avail_bytes", "filesystem_used_bytes", "filesystem_info",
        "filesystem_inodes_used_ratio", "deleted_open_bytes", "tmp_bytes", "category_bytes", "sessions",
        "usage_level", "usage_errors", "usage_timestamp_seconds", "containers_up")}


def test_every_metric_has_help_and_type_before_its_samples(ray_node):
    text = usage_text(report_of(ray_node)) + cleanup_text(None, 1.0)
    declared = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            declared.append(line.split()[2])
        elif line.startswith("# TYPE "):
            assert line.split()[2:] == [declared[-1], "gauge"]
        else:
            assert line.split("{")[0].split()[0] == declared[-1], line
    assert len(declared) == len(set(declared)) == 13 + 9


def test_a_ray_root_on_another_filesystem_gets_its_own_info_series(ray_node, bind_mount, tmp_path):
    elsewhere = bind_mount(None, str(tmp_path / "scratch"), fstype="tmpfs")
    write(os.path.join(elsewhere, "ray", STALE, "logs", "x"), 4096)
    report = collect_usage(UsageOptions(tmp_dir=str(ray_node), ray_temp_dir=os.path.join(elsewhere, "ray"),
                                        scan_workers=1), psutil)
    text = usage_text(report)
    promtool_check(text)
    info = {dict(labels)["path"]: dict(labels)["mountpoint"] for labels in samples(text)["rayops_ray_filesystem_info"]}
    assert info == {str(ray_node): mountpoint_of(str(ray_node)), os.path.join(elsewhere, "ray"): elsewhere}
    assert mountpoint_of(os.path.join(elsewhere, "ray", STALE, "logs", "x")) == elsewhere
    assert mountpoint_of(os.path.join(elsewhere, "ray", "does-not-exist")) == elsewhere


def test_hostile_names_are_escaped_and_read_back(sandbox, tmp_path):
    hostile = os.path.join(os.fsencode(str(tmp_path)), b'we"ird\\dir\nname \xff\xfe')
    os.makedirs(hostile)
    write(os.fsdecode(os.path.join(hostile, b"ray_tmp_1", b"x")), 4096)
    tmp_dir = os.fsdecode(hostile)
    report = collect_usage(UsageOptions(tmp_dir=tmp_dir, ray_temp_dir=os.path.join(tmp_dir, "ray"),
                                        scan_workers=1), psutil)
    text = usage_text(report)
    text.encode("utf-8")  # valid UTF-8: the undecodable bytes are spelled out
    promtool_check(text)
    assert 'path="%s/we\\"ird\\\\dir\\nname \\\\xff\\\\xfe"' % tmp_path in text
    (labels,) = samples(text)["rayops_ray_filesystem_info"]
    assert dict(labels)["path"] == str(tmp_path) + '/we"ird\\dir\nname \\xff\\xfe'
    du_out = subprocess.run(["du", "-sxB1", hostile], capture_output=True, check=True).stdout  # bytes: the name
    assert series(samples(text), "rayops_ray_tmp_bytes", target="host", kind="host") == int(du_out.split()[0])


def test_escape_label():
    assert escape_label('a"b\\c\nd\udcff') == 'a\\"b\\\\c\\nd\\\\xff'
    assert escape_label("ray-worker-1") == "ray-worker-1"


def test_containers_have_their_series_and_unmeasured_ones_none(ray_node):
    report = report_of(ray_node)
    keys = ("tmp_bytes", "level", "filesystem", "categories", "sessions", "error_count")
    measured = {key: report[key] for key in keys}
    report["containers"] = [dict(measured, name="ray-worker-1", error=None, status="running"),
                            {"name": "ray-worker-2", "error": None, "status": "exited", "tmp_bytes": None},
                            {"name": "ray-worker-3", "error": "container was removed during the run",
                             "status": "running", "tmp_bytes": None}]
    report["containers_error"] = None
    text = usage_text(report)
    promtool_check(text)
    found = samples(text)
    worker = {"target": "ray-worker-1", "kind": "container"}
    assert series(found, "rayops_ray_tmp_bytes", **worker) == report["tmp_bytes"]
    assert series(found, "rayops_ray_filesystem_info", path=str(ray_node), mountpoint=str(ray_node), **worker) == 1
    assert series(found, "rayops_ray_sessions", state="live", **worker) == 1
    for unmeasured in ("ray-worker-2", "ray-worker-3"):
        assert not any(("target", unmeasured) in labels for values in found.values() for labels in values)


def test_docker_down_is_containers_up_0_not_a_host_error(ray_node):
    report = collect_usage(UsageOptions(tmp_dir=str(ray_node), ray_temp_dir=str(ray_node / "ray"), scan_workers=1,
                                        containers=True, docker_host="unix://%s/no-docker.sock" % ray_node),
                           psutil, docker)
    assert report["containers_error"] and report["error_count"] == 1
    found = samples(usage_text(report))
    assert found["rayops_ray_containers_up"] == {frozenset(): 0}
    assert series(found, "rayops_ray_usage_errors", target="host", kind="host") == 0


def run_cleanup(tmp, **options):
    settings = dict(tmp_dir=str(tmp), ray_temp_dir=str(tmp / "ray"), min_tmp_size=0, max_age_hours=1,
                    age_by=("mtime",), lock_file=str(tmp.parent / "lock"), sample_seconds=0.1, containers=False)
    settings.update(options)
    return Cleanup(CleanupOptions(**settings), psutil).run()


def test_cleanup_metrics_of_a_real_run(ray_node):
    before, entries = du_bytes(str(ray_node)), count_entries(ray_node)
    result = run_cleanup(ray_node)
    text = cleanup_text(result, 2.25, finished=1700000001.0)
    promtool_check(text)
    found = samples(text)
    host = {"target": "host", "kind": "host"}
    assert series(found, "rayops_ray_cleanup_freed_bytes", **host) == before - du_bytes(str(ray_node)) > 81920
    assert series(found, "rayops_ray_cleanup_removed_entries", **host) == entries - count_entries(ray_node) == 14
    assert found["rayops_ray_cleanup_target_status"] == {frozenset(dict(host, status="cleaned").items()): 1}
    assert found["rayops_ray_cleanup_success"] == {frozenset(): 1} and cleanup_succeeded(result)
    assert found["rayops_ray_cleanup_duration_seconds"] == {frozenset(): 2.25}
    assert found["rayops_ray_cleanup_last_run_timestamp_seconds"] == {frozenset(): 1700000001.0}
    assert found["rayops_ray_cleanup_docker_reclaimed_bytes"] == {frozenset(): 0}


def test_locked_out_failed_and_error_runs_are_not_a_success(ray_node):
    with open(str(ray_node.parent / "lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        locked = run_cleanup(ray_node, lock_timeout=0)
    assert locked["status"] == "skipped"
    errored = run_cleanup(ray_node, min_tmp_size="1TB")
    errored["targets"].append(dict(errored["targets"][0], name="ray-worker-9", kind="container", status="error"))
    for result in (locked, None, errored):
        text = cleanup_text(result, 0.5)
        promtool_check(text)
        assert samples(text)["rayops_ray_cleanup_success"] == {frozenset(): 0}
        assert not cleanup_succeeded(result)
    assert "rayops_ray_cleanup_freed_bytes{" not in cleanup_text(locked, 0.5)
    statuses = samples(cleanup_text(errored, 0.5))["rayops_ray_cleanup_target_status"]
    assert set(statuses) == {frozenset({"target": "host", "kind": "host", "status": "skipped_below_threshold"}.items()),
                             frozenset({"target": "ray-worker-9", "kind": "container", "status": "error"}.items())}


def test_write_is_a_rename_with_mode_0644(tmp_path):
    old_umask = os.umask(0o077)
    try:
        path = write_textfile(str(tmp_path), USAGE_FILE, "a 1\n")
        with open(path) as old:
            inode = os.fstat(old.fileno()).st_ino
            write_textfile(str(tmp_path), USAGE_FILE, "b 2\n")
            assert old.read() == "a 1\n"  # the reader of the old file still sees it whole
    finally:
        os.umask(old_umask)
    assert path == str(tmp_path / USAGE_FILE)
    st = os.stat(path)
    assert st.st_ino != inode and stat.S_IMODE(st.st_mode) == 0o644
    assert (tmp_path / USAGE_FILE).read_text() == "b 2\n"
    assert sorted(os.listdir(str(tmp_path))) == [LOCK_FILE, USAGE_FILE]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(bind_mount, tmp_path):
    small = bind_mount(None, str(tmp_path / "small"), fstype="tmpfs")  # 4 MiB
    write_textfile(small, CLEANUP_FILE, "a 1\n")
    with pytest.raises(OSError) as failed:
        write_textfile(small, CLEANUP_FILE, "x" * (8 << 20))
    assert failed.value.errno == errno.ENOSPC
    assert sorted(os.listdir(small)) == [LOCK_FILE, CLEANUP_FILE]
    with open(os.path.join(small, CLEANUP_FILE)) as handle:
        assert handle.read() == "a 1\n"


def test_a_planted_temp_file_is_replaced_not_written_through(tmp_path):
    outside = write(str(tmp_path / "outside"), 5)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    os.symlink(outside, str(metrics / (".%s.tmp" % USAGE_FILE)))
    write_textfile(str(metrics), USAGE_FILE, "a 1\n")
    assert (tmp_path / "outside").read_bytes() == b"rrrrr"
    assert sorted(os.listdir(str(metrics))) == [LOCK_FILE, USAGE_FILE]
    assert not os.path.islink(str(metrics / USAGE_FILE))


def test_concurrent_writers_never_show_a_partial_file(tmp_path):
    texts = [("%s 1\n" % letter) * 20000 for letter in "ab"]  # 80 KB each: many write() calls
    errors = []

    def writer(text):
        try:
            for _round in range(30):
                write_textfile(str(tmp_path), USAGE_FILE, text)
        except Exception as exc:  # reported by the test
            errors.append(exc)

    write_textfile(str(tmp_path), USAGE_FILE, texts[0])
    threads = [threading.Thread(target=writer, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    reads = 0
    while any(thread.is_alive() for thread in threads):
        with open(str(tmp_path / USAGE_FILE)) as handle:
            assert handle.read() in texts
        reads += 1
    for thread in threads:
        thread.join()
    assert errors == [] and reads > 0 and sorted(os.listdir(str(tmp_path))) == [LOCK_FILE, USAGE_FILE]


def test_a_lock_on_the_directory_does_not_block_the_write(tmp_path):
    """Any user may open the metrics dir and flock it: the writer locks its own 0600 file instead."""
    dir_fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        started = time.monotonic()
        write_textfile(str(tmp_path), USAGE_FILE, "a 1\n", lock_timeout=5)
        assert time.monotonic() - started < 1
    finally:
        os.close(dir_fd)
    assert (tmp_path / USAGE_FILE).read_text() == "a 1\n"
    lock = os.stat(str(tmp_path / LOCK_FILE))
    assert stat.S_IMODE(lock.st_mode) == 0o600 and lock.st_uid == os.geteuid()


def test_a_held_metrics_lock_is_waited_for_then_an_error_naming_it(tmp_path):
    write_textfile(str(tmp_path), USAGE_FILE, "a 1\n")
    with open(str(tmp_path / LOCK_FILE)) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a writer that hangs
        started = time.monotonic()
        with pytest.raises(OSError) as failed:
            write_textfile(str(tmp_path), USAGE_FILE, "b 2\n", lock_timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 3
    assert str(failed.value) == "the metrics lock %s is still held by another process after 0.5s (fuser -v %s " \
        "names it)" % (tmp_path / LOCK_FILE, tmp_path / LOCK_FILE)
    assert (tmp_path / USAGE_FILE).read_text() == "a 1\n"
    write_textfile(str(tmp_path), USAGE_FILE, "b 2\n", lock_timeout=0.5)  # released: it goes
    assert (tmp_path / USAGE_FILE).read_text() == "b 2\n"


@pytest.mark.parametrize("plant", ["file", "symlink"])
def test_a_planted_metrics_lock_is_refused(tmp_path, plant):
    outside = write(str(tmp_path / "outside"), 5)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    if plant == "file":
        (metrics / LOCK_FILE).write_text("")
        os.chown(str(metrics / LOCK_FILE), 65534, 65534)
    else:
        os.symlink(outside, str(metrics / LOCK_FILE))
    with pytest.raises(OSError) as failed:
        write_textfile(str(metrics), USAGE_FILE, "a 1\n", lock_timeout=0)
    if plant == "file":
        assert str(failed.value).startswith("lock file %s is not a regular file of this user (uid 0; its owner is "
                                            "uid 65534): someone else may have made it" % (metrics / LOCK_FILE))
    else:
        assert failed.value.errno == errno.ELOOP  # never opened through a symlink
    assert (tmp_path / "outside").read_bytes() == b"rrrrr" and not os.path.exists(str(metrics / USAGE_FILE))


# --- the status of runs that cannot start (rayops_ray_maintenance.prom) -------------------------------------------

def test_status_is_written_kept_per_command_and_removed_with_the_last(tmp_path):
    update_status(str(tmp_path), "cleanup", "config", now=100.0)
    update_status(str(tmp_path), "monitor", "library", now=200.0)
    text = (tmp_path / STATUS_FILE).read_text()
    promtool_check(text)
    assert parse_status(text) == {"cleanup": ("config", 100.0), "monitor": ("library", 200.0)}
    assert 'rayops_ray_maintenance_start_error{command="cleanup",reason="config"} 1' in text.splitlines()
    assert oct(stat.S_IMODE(os.stat(str(tmp_path / STATUS_FILE)).st_mode)) == oct(0o644)
    update_status(str(tmp_path), "cleanup", "log", now=300.0)  # the newest reason replaces the older
    assert parse_status((tmp_path / STATUS_FILE).read_text()) == {"cleanup": ("log", 300.0),
                                                                  "monitor": ("library", 200.0)}
    update_status(str(tmp_path), "cleanup", None)  # cleanup started
    assert parse_status((tmp_path / STATUS_FILE).read_text()) == {"monitor": ("library", 200.0)}
    update_status(str(tmp_path), "monitor", None)
    assert sorted(os.listdir(str(tmp_path))) == [LOCK_FILE]  # the last entry took the file with it


def test_a_healthy_run_only_looks_for_the_status_file(tmp_path):
    assert update_status(str(tmp_path), "monitor", None) is None
    assert os.listdir(str(tmp_path)) == []  # no lock file made, nothing written


def test_status_reads_back_only_what_it_writes(tmp_path):
    planted = (
        '# HELP rayops_ray_maintenance_start_error x\n'
        'rayops_ray_maintenance_start_error{command="cleanup",reason="config"} 1\n'
        'rayops_ray_maintenance_start_error{command="evil\\"} 1\n"} 1\n'
        'rayops_ray_maintenance_start_error{command="check",reason="config"} 1\n'
        'rayops_ray_maintenance_start_error{command="monitor",reason="$(reboot)"} 1\n'
        'rayops_ray_maintenance_start_error_timestamp_seconds{command="cleanup"} NaNs\n'
        'other_metric{command="monitor",reason="config"} 1\n')
    (tmp_path / STATUS_FILE).write_text(planted)
    assert parse_status(planted) == {"cleanup": ("config", 0.0)}
    update_status(str(tmp_path), "monitor", "log", now=5.0)
    text = (tmp_path / STATUS_FILE).read_text()
    promtool_check(text)
    assert parse_status(text) == {"cleanup": ("config", 0.0), "monitor": ("log", 5.0)}
    assert "evil" not in text and "reboot" not in text and "other_metric" not in text


def test_status_takes_only_known_commands_and_reasons(tmp_path):
    for command, error in (("check", "config"), ("cleanup", "bad config: x"), ("monitor", "")):
        with pytest.raises(ValueError):
            update_status(str(tmp_path), command, error)
    assert os.listdir(str(tmp_path)) == []
    assert render(status_families({})).count("\n") == 4  # help and type only
