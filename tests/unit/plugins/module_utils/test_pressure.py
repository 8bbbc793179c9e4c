# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pressure reclaim and the guard, through ``ray-maintenance`` on a real small filesystem (a sized tmpfs).

The tmp dir is a 16 MiB tmpfs mounted by the test, before the sandbox node starts (so its processes see it). Its
live session is named by a stand-in raylet of the sandbox, which holds ``raylet.out`` open; a stand-in worker is
alive. The guard as a long-running process, with a writer and real Ray, is in tests/system/test_pressure_guard.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _cli, _node, _pressure, _targets, _watch
from ansible_collections.rayops.disk.plugins.module_utils._metrics import PRESSURE_FILE
from ansible_collections.rayops.disk.plugins.modules import ray_worker_cleanup
from ansible_collections.rayops.disk.tests.unit.conftest import aged, fd_targets, tree_digest, write
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.conftest import (
    LIVE,
    STALE,
    promtool_check,
    samples,
    series,
)

MIB = 1024 * 1024
FS_BYTES = 16 * MIB


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def used_percent(path):
    st = os.statvfs(str(path))
    used = st.f_blocks - st.f_bfree
    return 100.0 * used / (used + st.f_bavail)


@contextlib.contextmanager
def tmpfs(inodes=None):
    """A 16 MiB tmpfs at a short path under /tmp (sockets in it stay under 108 bytes), unmounted after."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    tmp = base / "tmp"
    tmp.mkdir()
    options = "size=%d" % FS_BYTES + (",nr_inodes=%d" % inodes if inodes else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(tmp)], check=True)
    try:
        yield tmp
    finally:
        subprocess.run(["umount", "-l", str(tmp)], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


# Both are asked for before ``node``: mounted before the sandbox's mount namespace is made, its processes see them.
@pytest.fixture
def small_tmp():
    """A 16 MiB tmpfs."""
    with tmpfs() as tmp:
        yield tmp


@pytest.fixture
def few_inodes_tmp():
    """A 16 MiB tmpfs of 1000 inodes."""
    with tmpfs(inodes=1000) as tmp:
        yield tmp


@pytest.fixture
def pressed(small_tmp, node, monkeypatch, tmp_path):
    """A full small tmp dir of a sandbox node: what each tier takes, what no tier may take, and a config.

    Returns ``(tmp dir, config path, paths)``; ``paths`` names the files of each kind (and ``raylet_pid``).
    """
    tmp = small_tmp
    monkeypatch.setattr(_targets, "host_target", lambda: node.target)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "no-uv"))
    logs = tmp / "ray" / LIVE / "logs"
    worker = node.spawn("python-worker", title="ray::IDLE")
    dead = dead_pid()
    paths = {
        "old_log": write(str(logs / "old" / "worker-0a-01-17.out"), 2 * MIB),
        "rotated": write(str(logs / "raylet.out.1"), 1 * MIB),
        "dead_worker": write(str(logs / ("worker-0b-01-%d.out" % dead)), 1 * MIB),
        "live_worker": write(str(logs / ("worker-0c-01-%d.out" % worker.pid)), 1 * MIB),
        "live_core_worker": write(str(logs / ("python-core-worker-0c_%d.log" % worker.pid)), MIB // 2),
        "raylet_log": write(str(logs / "raylet.out"), 1 * MIB),
        "gcs_log": write(str(logs / "gcs_server.err"), MIB // 2),
        "stale": write(str(tmp / "ray" / STALE / "logs" / "raylet.out"), 2 * MIB),
        "litter": write(str(tmp / "ray_tmp_9" / "pkg.zip"), 2 * MIB),
    }
    aged(str(tmp))
    paths["fresh_litter"] = write(str(tmp / "ray_tmp_new" / "pkg.zip"), MIB // 4)
    raylet = node.spawn("raylet", "--session_dir=%s" % (tmp / "ray" / LIVE), "--temp_dir=%s" % (tmp / "ray"),
                        hold=paths["raylet_log"])
    paths["raylet_pid"] = raylet.pid
    deadline = time.monotonic() + 20  # its name is right from the start (Ray's program); the file opens later
    while paths["raylet_log"] not in fd_targets(raylet.pid).values():
        assert time.monotonic() < deadline, "the stand-in raylet did not open %s" % paths["raylet_log"]
        time.sleep(0.02)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    config = tmp_path / "ray-maintenance.json"
    config.write_text(json.dumps({
        "tmp_dir": str(tmp), "containers": False, "age_by": ["mtime"], "lock_file": str(tmp_path / "lock"),
        "lock_timeout": 0, "sample_seconds": 0.2, "scan_workers": 1, "metrics_dir": str(metrics),
        "audit_log": str(tmp_path / "audit.jsonl"), "log_file": str(tmp_path / "ray-maintenance.log")}))
    return tmp, str(config), paths


def fill(tmp, percent):
    """The writer's data: ``data`` grown until the filesystem is ``percent`` used; its path."""
    data = tmp / "data"
    st = os.statvfs(str(tmp))
    total = st.f_blocks * st.f_frsize
    missing = int(total * percent / 100.0) - (st.f_blocks - st.f_bfree) * st.f_frsize
    write(str(data), (data.stat().st_size if data.exists() else 0) + max(0, missing))
    return data


def run(capsys, config, *argv):
    """``(exit code, --json result, stderr)`` of ``ray-maintenance --config config argv``."""
    code = _cli.main(["--config", config, "--json"] + list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, json.loads(out) if out.strip() else None, err


def gone(paths, *kinds):
    return {kind for kind in kinds if not os.path.exists(paths[kind])}


KEPT = ("live_worker", "live_core_worker", "raylet_log", "gcs_log", "fresh_litter")


def test_one_tier_is_enough_then_it_stops_under_the_low_mark(capsys, pressed):
    tmp, config, paths = pressed
    data = fill(tmp, 93)
    kept = {kind: open(paths[kind], "rb").read() for kind in KEPT}
    data_digest = tree_digest(str(data))
    code, result, err = run(capsys, config, "cleanup", "--pressure")
    assert code == 0, err
    pressure = result["pressure"]
    assert [t["tier"] for t in pressure["tiers"]] == ["unneeded"] and pressure["relieved"] is True
    assert pressure["trigger"][0].startswith("host %s 9" % tmp) and "of bytes" in pressure["trigger"][0]
    assert gone(paths, "old_log", "rotated", "dead_worker", "stale") == {"old_log", "rotated", "dead_worker", "stale"}
    assert os.path.exists(paths["litter"])  # the next tier was not needed
    assert {kind: open(paths[kind], "rb").read() for kind in KEPT} == kept
    assert tree_digest(str(data)) == data_digest
    assert used_percent(tmp) < 80 and pressure["after"][0]["used_percent"] < 80
    host = result["targets"][0]
    assert {g["tier"] for g in host["groups"]} == {"unneeded"}
    assert {g["action"] for g in host["groups"] if g["removed"]} == {
        "clean_old_logs", "clean_rotated_logs", "clean_dead_worker_logs", "remove_stale_sessions"}
    audit = [json.loads(line) for line in (pathlib.Path(config).parent / "audit.jsonl").read_text().splitlines()]
    assert {line["path"] for line in audit} >= {paths["rotated"], paths["dead_worker"]}
    assert {line["reason"] for line in audit if line["path"] == paths["dead_worker"]} == {
        "under pressure, tier unneeded: log of a dead worker of %s" % LIVE}
    log = (pathlib.Path(config).parent / "ray-maintenance.log").read_text()
    assert "pressure reclaim in " in log and ": unneeded 6.0 MiB; host %s 9" % tmp in log


def test_tiers_run_in_order_until_relieved_idle_litter_before_busy(capsys, pressed):
    tmp, config, paths = pressed
    os.unlink(paths["old_log"])
    os.unlink(paths["stale"])  # little that no job needs: the litter tiers must run
    data = fill(tmp, 96)
    code, result, err = run(capsys, config, "cleanup", "--pressure")
    assert code == 0, err
    tiers = result["pressure"]["tiers"]
    assert [t["tier"] for t in tiers] == ["unneeded", "deleted_logs", "litter_idle"]
    assert tiers[1]["skipped"] == "pressure_truncate_deleted_logs is off"
    assert tiers[0]["freed_bytes"] > 0 and tiers[2]["freed_bytes"] >= 2 * MIB
    assert not os.path.exists(paths["litter"]) and os.path.exists(paths["fresh_litter"])  # older than 1 hour only
    assert data.exists() and used_percent(tmp) < 80 and result["pressure"]["relieved"]
    assert result["targets"][0]["activity"]["busy"] is False


def test_busy_target_gives_up_litter_only_in_the_last_tier(capsys, pressed, node):
    tmp, config, paths = pressed
    os.unlink(paths["old_log"])
    os.unlink(paths["stale"])
    node.spawn("python-worker", title="ray::train_step", burn=True)
    fill(tmp, 99)
    code, result, err = run(capsys, config, "cleanup", "--pressure")
    assert code == 0, err
    tiers = {t["tier"]: t for t in result["pressure"]["tiers"]}
    assert list(tiers) == ["unneeded", "deleted_logs", "litter_idle", "litter_busy"]
    assert tiers["litter_idle"]["targets"] == [] and tiers["litter_busy"]["targets"] == ["host"]
    assert result["targets"][0]["activity"]["busy"] is True
    assert not os.path.exists(paths["litter"]) and result["pressure"]["relieved"] is True
    assert all(os.path.exists(paths[kind]) for kind in KEPT)


def test_when_nothing_more_may_go_it_says_not_relieved_and_the_guard_stays_active(capsys, pressed):
    tmp, config, paths = pressed
    for kind in ("old_log", "stale", "litter"):
        os.unlink(paths[kind])
    fill(tmp, 99)  # the rest is the writer's data and what live Ray holds
    code, result, err = run(capsys, config, "cleanup", "--pressure")
    assert code == 1 and result["pressure"]["relieved"] is False
    assert [t["tier"] for t in result["pressure"]["tiers"]] == [
        "unneeded", "deleted_logs", "litter_idle", "litter_busy", "docker_prune"]
    assert "ray-maintenance: pressure not relieved: host %s 8" % tmp in err
    assert all(os.path.exists(paths[kind]) for kind in KEPT) and (tmp / "data").exists()
    fill(tmp, 99)  # the writer goes on: above the high mark again
    code, out, err = run_text(capsys, config, "watch", "--once")
    assert code == 1 and "NOT relieved, still at or above the low mark: host %s" % tmp in out
    metrics = pathlib.Path(json.loads(pathlib.Path(config).read_text())["metrics_dir"])
    found = samples((metrics / PRESSURE_FILE).read_text())
    assert series(found, "rayops_ray_pressure_active") == 1
    assert series(found, "rayops_ray_pressure_reclaims_total", result="not_relieved") == 1


def held_size(pid, path):
    """The size of the file ``pid`` holds open as ``path (deleted)``."""
    for fd, target in fd_targets(pid).items():
        if target == path + " (deleted)":
            return os.stat("/proc/%d/fd/%d" % (pid, fd)).st_size
    raise AssertionError("pid %d does not hold %s" % (pid, path))


def test_deleted_ray_log_still_open_is_reported_and_emptied_only_when_asked(capsys, pressed):
    tmp, config, paths = pressed
    for kind in ("old_log", "stale", "rotated", "dead_worker", "raylet_log"):  # raylet.out: deleted, still open
        os.unlink(paths[kind])
    fill(tmp, 93)
    code, report, err = run(capsys, config, "monitor")
    assert code == 0, err
    held = report["deleted_open"]
    assert held["bytes"] >= 1 * MIB and held["files"] == 1
    assert held["processes"][0]["pid"] == paths["raylet_pid"] and held["processes"][0]["paths"] == [
        paths["raylet_log"]]
    code, out, _err = run_text(capsys, config, "monitor")
    assert "host: 1.0 MiB held by 1 deleted file(s) still open; it is freed when the process closes them" in out
    code, result, err = run(capsys, config, "cleanup", "--pressure")
    tiers = {t["tier"]: t for t in result["pressure"]["tiers"]}
    assert tiers["deleted_logs"]["skipped"] == "pressure_truncate_deleted_logs is off"
    assert held_size(paths["raylet_pid"], paths["raylet_log"]) == 1 * MIB  # off: not touched
    assert not os.path.exists(paths["litter"])  # the litter went instead
    settings = json.loads(pathlib.Path(config).read_text())
    pathlib.Path(config).write_text(json.dumps(dict(settings, pressure_truncate_deleted_logs=True)))
    fill(tmp, 93)
    code, result, err = run(capsys, config, "cleanup", "--pressure")
    tiers = {t["tier"]: t for t in result["pressure"]["tiers"]}
    assert tiers["deleted_logs"]["freed_bytes"] >= 1 * MIB
    assert [(t["target"], t["path"], t["pid"]) for t in tiers["deleted_logs"]["truncated"]] == [
        ("host", paths["raylet_log"], paths["raylet_pid"])]
    assert held_size(paths["raylet_pid"], paths["raylet_log"]) == 0
    assert all(os.path.exists(paths[kind]) for kind in ("live_worker", "live_core_worker", "gcs_log"))


def test_dry_run_changes_nothing_and_projects_the_relief(capsys, pressed):
    tmp, config, _paths = pressed
    fill(tmp, 93)
    before = tree_digest(str(tmp))
    code, result, err = run(capsys, config, "cleanup", "--pressure", "--dry-run")
    assert code == 0, err
    assert tree_digest(str(tmp)) == before
    pressure = result["pressure"]
    assert pressure["projected"] is True and pressure["relieved"] is True
    assert [t["tier"] for t in pressure["tiers"]] == ["unneeded"]
    assert pressure["after"][0]["used_percent"] < 80 <= used_percent(tmp)
    assert not (pathlib.Path(config).parent / "audit.jsonl").exists()


def test_below_the_low_mark_nothing_is_touched(capsys, pressed):
    tmp, config, _paths = pressed
    before = tree_digest(str(tmp))
    code, result, _err = run(capsys, config, "cleanup", "--pressure")
    assert code == 0 and result["pressure"]["tiers"] == [] and result["freed_bytes"] == 0
    assert result["targets"][0]["status"] == "skipped_below_threshold"
    assert "below pressure_low_percent 80%" in result["targets"][0]["reason"]
    assert tree_digest(str(tmp)) == before


def test_inodes_exhausted_by_empty_files_set_it_off(capsys, few_inodes_tmp, node, monkeypatch, tmp_path):
    tmp = few_inodes_tmp
    monkeypatch.setattr(_targets, "host_target", lambda: node.target)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "no-uv"))
    old = tmp / "ray" / LIVE / "logs" / "old"
    old.mkdir(parents=True)
    for index in range(920):
        (old / ("worker-%04d.out" % index)).touch()
    aged(str(tmp))
    node.spawn("raylet", "--session_dir=%s" % (tmp / "ray" / LIVE), "--temp_dir=%s" % (tmp / "ray"))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"tmp_dir": str(tmp), "containers": False, "age_by": ["mtime", "atime"],
                                  "lock_file": str(tmp_path / "lock"), "scan_workers": 1}))
    code, result, err = run(capsys, str(config), "cleanup", "--pressure")
    assert code == 0, err
    assert "inodes 9" in result["pressure"]["trigger"][0] and result["pressure"]["relieved"]
    st = os.statvfs(str(tmp))
    assert (st.f_files - st.f_ffree) / st.f_files < 0.8 and os.listdir(str(old)) == []
    assert os.path.isdir(str(tmp / "ray" / LIVE / "logs"))


def test_a_held_lock_keeps_the_reclaim_out(capsys, pressed):
    tmp, config, _paths = pressed
    fill(tmp, 93)
    before = tree_digest(str(tmp))
    with open(json.loads(pathlib.Path(config).read_text())["lock_file"], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, result, err = run(capsys, config, "cleanup", "--pressure")
    assert code == 1 and result["status"] == "skipped" and result["outcome"] == "skipped_locked"
    assert "another cleanup holds" in err and tree_digest(str(tmp)) == before


def test_the_guard_reclaims_at_the_high_mark_and_writes_its_metrics(capsys, pressed):
    tmp, config, paths = pressed
    metrics = pathlib.Path(json.loads(pathlib.Path(config).read_text())["metrics_dir"])
    fill(tmp, 85)  # above the low mark, below the high one: the guard only looks
    before = tree_digest(str(tmp))
    code, out, err = run_text(capsys, config, "watch", "--once")
    assert code == 0 and out == "" and err == "" and tree_digest(str(tmp)) == before
    text = (metrics / PRESSURE_FILE).read_text()
    promtool_check(text)
    found = samples(text)
    assert series(found, "rayops_ray_pressure_active") == 0
    assert abs(series(found, "rayops_ray_pressure_used_ratio", target="host", kind="host", path=str(tmp),
                      resource="bytes") - used_percent(tmp) / 100) < 0.01
    assert series(found, "rayops_ray_pressure_reclaims_total", result="relieved") == 0
    fill(tmp, 93)
    code, out, err = run_text(capsys, config, "watch", "--once")
    assert code == 0, err
    assert out.splitlines()[0].startswith("pressure reclaim (high 90%% (inodes 90%%), low 80%%): host %s 9" % tmp)
    assert "  tier unneeded: freed " in out and "relieved: below the low mark 80%" in out
    found = samples((metrics / PRESSURE_FILE).read_text())
    assert series(found, "rayops_ray_pressure_reclaims_total", result="relieved") == 1
    assert series(found, "rayops_ray_pressure_freed_bytes_total", tier="unneeded") >= 6 * MIB
    assert series(found, "rayops_ray_pressure_active") == 0
    assert 0 < series(found, "rayops_ray_pressure_last_reaction_seconds") < 60
    log = (pathlib.Path(config).parent / "ray-maintenance.log").read_text()
    assert "pressure reclaim relieved in " in log and "watch exit 0" in log
    assert not os.path.exists(paths["rotated"]) and os.path.exists(paths["live_worker"])


def run_text(capsys, config, *argv):
    """``(exit code, stdout, stderr)`` of ``ray-maintenance --config config argv``."""
    code = _cli.main(["--config", config] + list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_the_module_takes_pressure_check_real_again(run_module, pressed):
    tmp, config, paths = pressed
    fill(tmp, 93)
    settings = json.loads(pathlib.Path(config).read_text())
    args = {key: settings[key] for key in ("tmp_dir", "containers", "age_by", "lock_file", "sample_seconds")}
    args["pressure"] = True
    before = tree_digest(str(tmp))
    check = run_module(ray_worker_cleanup.main, args, check_mode=True)
    assert tree_digest(str(tmp)) == before and check["pressure"]["projected"] is True
    real = run_module(ray_worker_cleanup.main, args)
    again = run_module(ray_worker_cleanup.main, args)
    assert check["changed"] is real["changed"] is True and again["changed"] is False
    assert check["freed_bytes"] == real["freed_bytes"] >= 6 * MIB
    assert real["pressure"]["relieved"] and again["pressure"]["tiers"] == []
    assert os.path.exists(paths["live_worker"]) and not os.path.exists(paths["dead_worker"])


@pytest.mark.parametrize("settings, message", [
    ({"pressure_low_percent": 95}, "pressure_low_percent 95 must be below pressure_high_percent 90"),
    ({"pressure_high_percent": 120}, "pressure_high_percent 120 is outside 0-100"),
    ({"pressure_max_age_hours": -1}, "pressure_max_age_hours -1 is negative"),
    ({"watch_interval_seconds": 0}, "watch_interval_seconds 0 must be more than 0 and at most 60"),
])
def test_bad_marks_name_the_key_and_the_fix(capsys, tmp_path, settings, message):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(dict(settings, tmp_dir=str(tmp_path))))
    code, out, err = run_text(capsys, str(config), "watch", "--once")
    assert code == 3 and out == ""
    assert err.startswith("ray-maintenance: config %s: %s" % (config, message)), err


# --- the guard within its mandate (issue 18) ---------------------------------------------------------------------

def fill_up(path, owner):
    """Write ``path`` until the filesystem is full (ENOSPC), owned by ``owner``: a user filling a disk."""
    with open(str(path), "ab") as handle:
        try:
            while True:
                handle.write(b"m" * (256 * 1024))
                handle.flush()
        except OSError:
            pass
    shutil.chown(str(path), owner, owner)


def owned_tree(path, owner, mode=0o700, files=2, size=MIB // 2):
    """A dir ``path`` of ``files`` files, all ``owner``'s, mode ``mode`` for the dir."""
    for index in range(files):
        write(str(path / ("f%d" % index)), size)
    for dirpath, _dirnames, filenames in os.walk(str(path)):
        shutil.chown(dirpath, owner, owner)
        for name in filenames:
            shutil.chown(os.path.join(dirpath, name), owner, owner)
    os.chmod(str(path), mode)
    return path


def mandate_config(tmp, tmp_path, **extra):
    config = tmp_path / "mandate.json"
    config.write_text(json.dumps(dict({
        "tmp_dir": str(tmp), "containers": False, "age_by": ["mtime"], "lock_file": str(tmp_path / "lock"),
        "lock_timeout": 0,
        "sample_seconds": 0.2, "scan_workers": 1, "metrics_dir": str(tmp_path / "metrics"),
        "audit_log": str(tmp_path / "audit.jsonl"), "log_file": str(tmp_path / "ray-maintenance.log")}, **extra)))
    (tmp_path / "metrics").mkdir(exist_ok=True)
    return str(config)


@pytest.mark.parametrize("resource", ["bytes", "inodes"])
def test_pressure_takes_only_what_is_rays_or_roots_and_names_who_fills_the_disk(
        capsys, local_users, resource, node, monkeypatch, tmp_path):
    """Finding 1: a user fills /tmp with a file no pattern matches (or with empty files, for inodes) on a busy node.

    Before: the guard removed another user's 0700 ``tmpjob_*`` (2 h old, node busy, below min_tmp_size: no cleanup
    would touch it) and said nothing of the filler.  Now: only root's ``pip-req-build-*`` goes (the mandate); the
    other user's dir stays, and the result, the log and the metrics name the filler.
    """
    with tmpfs(inodes=400 if resource == "inodes" else None) as tmp:
        monkeypatch.setattr(_targets, "host_target", lambda: node.target)
        monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "no-uv"))
        victim, filler = local_users["ray"], local_users["mallory"]
        theirs = owned_tree(tmp / "tmpjob_1", victim)
        roots = owned_tree(tmp / "pip-req-build-x", "root", mode=0o755)
        aged(str(tmp), hours=2)
        node.spawn("python-worker", title="ray::train_step", burn=True)  # busy (root's Ray worker, trusted)
        if resource == "bytes":
            fill_up(tmp / "mallory-data", filler)
        else:
            mine = tmp / "mallory-files"
            mine.mkdir()
            try:
                for index in range(1000):
                    (mine / str(index)).touch()
            except OSError:
                pass
            for dirpath, _dirnames, filenames in os.walk(str(mine)):
                shutil.chown(dirpath, filler, filler)
                for name in filenames:
                    shutil.chown(os.path.join(dirpath, name), filler, filler)
        digest = tree_digest(str(theirs))
        config = mandate_config(tmp, tmp_path)
        code, result, err = run(capsys, config, "cleanup", "--pressure")
        assert code == 1 and result["pressure"]["relieved"] is False, err
        assert os.path.isdir(str(theirs)) and tree_digest(str(theirs)) == digest  # not Ray's, not root's: stays
        assert not os.path.exists(str(roots))  # root's litter, older than pressure_max_age_hours: the mandate
        host = result["targets"][0]
        assert host["kept_by_reason"].get("other_user") == 1
        assert any(k["path"] == str(theirs) and k["reason"] == "other_user" for k in host["kept"])
        held = result["pressure"]["held"][0]
        figure = "bytes" if resource == "bytes" else "inodes"
        ranked = held["owners"] if resource == "bytes" else held["owners_by_inodes"]
        assert held["target"] == "host" and ranked[0]["owner"] == filler
        said = "held by host: %s " % filler if resource == "bytes" else "(inodes: %s " % filler
        assert said in err, err
        # the guard: the same verdict, said in its log line and its metrics, then it backs off
        fill_up(tmp / ("mallory-data" if resource == "bytes" else "mallory-more"), filler)
        code, out, err = run_text(capsys, config, "watch", "--once")
        assert code == 1 and "what is left on host, which the reclaim may not take:" in out
        log = (tmp_path / "ray-maintenance.log").read_text()
        assert said in log and "next reclaim in 30s at the earliest" in log
        found = samples((tmp_path / "metrics" / PRESSURE_FILE).read_text())
        assert series(found, "rayops_ray_pressure_held_%s" % figure, target="host", owner=filler) > 0
        assert os.path.isdir(str(theirs)) and tree_digest(str(theirs)) == digest


def test_an_idle_node_over_min_tmp_size_gives_up_others_old_litter_by_the_normal_rules(
        capsys, local_users, node, monkeypatch, tmp_path):
    """Another user's litter follows the idle cleanup's own rules under pressure: older than max_age_hours, on an
    idle target holding min_tmp_size; younger, it stays."""
    with tmpfs() as tmp:
        monkeypatch.setattr(_targets, "host_target", lambda: node.target)
        monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "no-uv"))
        victim = local_users["ray"]
        old = owned_tree(tmp / "tmpjob_old", victim, files=4, size=2 * MIB)
        aged(str(old), hours=30)
        young = owned_tree(tmp / "tmpjob_young", victim)
        aged(str(young), hours=2)
        fill(tmp, 95)
        config = mandate_config(tmp, tmp_path, min_tmp_size="1MB")
        code, result, err = run(capsys, config, "cleanup", "--pressure")
        assert code == 0 and result["pressure"]["relieved"], err
        assert not os.path.exists(str(old)) and os.path.isdir(str(young))


@pytest.mark.parametrize("plant", ["dangling_symlink", "fifo", "others_dir"])
def test_a_planted_ray_root_never_blinds_the_guard(capsys, local_users, plant, node, monkeypatch, tmp_path):
    """Finding 4: ``/tmp/ray`` (the default Ray root, no Ray running) planted as a link to nowhere, a fifo or another
    user's dir.  Before: every reading of the target was discarded, the disk filled to 100 % and ``watch`` did
    nothing, said nothing and exited 0.  Now the tmp dir is still read and reclaimed, the planted root is said once
    in the log and in a metric, and it is never taken as Ray's."""
    with tmpfs() as tmp:
        monkeypatch.setattr(_targets, "host_target", lambda: node.target)
        monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "no-uv"))
        monkeypatch.delenv("RAY_TMPDIR", raising=False)
        monkeypatch.delenv("TMPDIR", raising=False)
        planted, stale = tmp / "ray", None
        if plant == "dangling_symlink":
            planted.symlink_to("/nonexistent/rayops-nowhere")
        elif plant == "fifo":
            os.mkfifo(str(planted))
        else:
            stale = owned_tree(planted / STALE, local_users["mallory"], files=1)
            shutil.chown(str(planted), local_users["mallory"], local_users["mallory"])
        litter = owned_tree(tmp / "ray_tmp_1", "root", mode=0o755, files=4, size=MIB)
        aged(str(tmp), hours=2)
        fill_up(tmp / "data", "root")
        config = mandate_config(tmp, tmp_path)
        code, out, err = run_text(capsys, config, "watch", "--once")
        assert not os.path.exists(str(litter)), out + err  # reclaimed although /tmp/ray is unusable
        assert "watched dir %s cannot be read safely" % planted in err or plant == "others_dir", err
        if stale is not None:
            assert os.path.isdir(str(stale))  # another user's "session" in a root nobody trusts is never Ray's
        log = (tmp_path / "ray-maintenance.log").read_text()
        assert "watched dir %s cannot be read safely" % planted in log
        assert "pressure reclaim " in log
        found = samples((tmp_path / "metrics" / PRESSURE_FILE).read_text())
        assert series(found, "rayops_ray_pressure_dir_unreadable", target="host", path=str(planted)) == 1
        assert os.path.lexists(str(planted))  # said, never touched


def test_a_guard_step_lists_once_and_reads_each_filesystem_before_and_after(capsys, pressed, monkeypatch):
    """A step that finds pressure and one tier relieves it: one listing of the targets (the refresh), one reading of
    each watched filesystem before the reclaim and one after it; the reclaim lists and reads nothing again."""
    tmp, config, _paths = pressed
    fill(tmp, 93)
    listed, read = [], []
    monkeypatch.setattr(_watch, "node_targets", lambda *args, **kwargs: listed.append(1) or _targets.node_targets(
        *args, **kwargs))
    monkeypatch.setattr(_node, "node_targets", lambda *args, **kwargs: listed.append(1) or _targets.node_targets(
        *args, **kwargs))
    real = _pressure.filesystem_of
    monkeypatch.setattr(_pressure, "filesystem_of", lambda *args, **kwargs: read.append(1) or real(*args, **kwargs))
    guard = _watch.Guard(_cli.cleanup_options(_cli.load_config(config)), _cli.psutil)
    result = guard.step()
    assert result["guard_result"] == "relieved" and [t["tier"] for t in result["pressure"]["tiers"]] == ["unneeded"]
    assert len(listed) == 1 and len(read) == 2  # one filesystem: read before, read after the tier
    assert guard.state.active is False and guard.state.readings[0].used_percent < 80


def test_the_guard_validates_its_options_once_not_on_every_reclaim(capsys, pressed, monkeypatch):
    tmp, config, _paths = pressed
    options = _cli.cleanup_options(_cli.load_config(config))
    checked = []
    real = type(options).validate
    monkeypatch.setattr(type(options), "validate", lambda self: checked.append(1) or real(self))
    guard = _watch.Guard(options, _cli.psutil)
    results = []
    for _step in range(2):
        fill(tmp, 93)
        results.append(guard.step()["guard_result"])
        guard.retry_at = 0.0
    assert results[0] == "relieved" and results[1] in ("relieved", "not_relieved")  # two reclaims ran
    assert len(checked) == 1
