# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pressure guard: a real ``ray-maintenance watch`` process against a real small filesystem that a writer fills.

Each test mounts a tmpfs of a set size (and, for inodes, a set ``nr_inodes``) at a short path under /tmp and
unmounts it after; the tmp dir (``tmp_dir``) is that tmpfs and Ray's temp root is ``<tmp dir>/ray``. The CLI runs
as the role installs it (the zipapp behind the role's wrapper), from a JSON config: ``containers: false``, the
lock file, log, metrics and audit log in the test's own tmp dir, ``watch_interval_seconds: 1`` and ``age_by:
[mtime, atime]`` (the junk is aged with ``os.utime``; a ctime cannot be set back).

Ray is real (2.40, 2.53 and the newest, on 127.0.0.1 through ``any_ray_head``, its ``--temp-dir`` on the tmpfs): it is
started, killed as a crash would (its session stays: the stale one) and started again; a driver starts two
actors that print to their ``worker-*.out``; one of them is killed (SIGKILL): a dead worker of the live session.
Ray's log_monitor keeps the dead worker's ``worker-*.out``/``.err`` open (it tails every ``worker*`` file until
it has 200 open), so those are open files the guard must keep; its ``python-core-worker-*_<pid>.log`` nobody
holds, so it goes. A bigger dead worker's log is added as a stand-in: ``python-core-worker-<hex>_<pid>.log``
named with the pid of a process that has exited (log_monitor does not tail that name, so nothing holds it).

Rates and sizes are chosen so that the writer, at a fixed rate, crosses 90 % twice: the first reclaim is
relieved by the ``unneeded`` tier alone (and stops there: the litter stays), the second must take the litter.
"""

from __future__ import annotations

import datetime
import fcntl
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from ansible_collections.rayops.disk.tests.system.conftest import kill_tree
from ansible_collections.rayops.disk.tests.system.test_node_cli import install
from ansible_collections.rayops.disk.tests.unit.conftest import aged, fd_targets
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.conftest import (
    promtool_check,
    samples,
    series,
)

MIB = 1024 * 1024
REACTION_LIMIT = 10.0
"""The issue's requirement: the guard reacts within 10 s of the crossing (it looks every second here)."""

DRIVER = r"""
import os, sys, time
import ray
ray.init(address=sys.argv[1], namespace="rayops-pressure", logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0)
class Chatty:
    def chat(self, mib):
        line = "x" * 1023
        for _ in range(int(mib * 1024)):
            print(line)
        sys.stdout.flush()
        return os.getpid()

live = Chatty.options(name="live", lifetime="detached").remote()
doomed = Chatty.remote()
print(ray.get(live.chat.remote(2)), ray.get(doomed.chat.remote(1)), flush=True)
time.sleep(600)
"""
"""Two actors, each printing to its ``worker-*.out`` (2 MiB, 1 MiB); prints their pids: the live one, the doomed one."""

PING = r"""
import sys
import ray
ray.init(address=sys.argv[1], namespace="rayops-pressure", logging_level="ERROR", log_to_driver=False)
live = ray.get_actor("live")  # kept in a name: Ray 2.40 loses a handle used only inline ("Lost reference to actor")
print(ray.get(live.chat.remote(0)), flush=True)
"""
"""Ray still works after the guard: the live actor answers with its pid."""

WRITER = r"""
import errno, json, os, sys, time
mode, path, mount, rate, total = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
MIB = 1024 * 1024

def used():
    st = os.statvfs(mount)
    taken = st.f_blocks - st.f_bfree
    inodes = 100.0 * (st.f_files - st.f_ffree) / st.f_files if st.f_files else 0.0
    return 100.0 * taken / (taken + st.f_bavail), inodes

samples, error, written = [], None, 0
if mode == "bytes":
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
else:
    os.mkdir(path)
start = time.monotonic()
for index in range(total):
    pause = start + index / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    try:
        if mode == "bytes":
            block = memoryview((b"%08d" % index) * (MIB // 8))
            done = 0
            while done < MIB:
                done += os.write(fd, block[done:])
        else:
            os.close(os.open(os.path.join(path, "f%06d" % index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except OSError as exc:
        error = {"index": index, "errno": errno.errorcode.get(exc.errno, str(exc.errno)), "message": str(exc)}
        break
    written += 1
    samples.append((time.time(),) + used())
print(json.dumps({"written": written, "error": error, "samples": samples}), flush=True)
"""
"""At ``rate`` a second, ``total`` times: append 1 MiB to ``path`` (bytes) or create an empty file in it (inodes).

After each, the used % of bytes and inodes of ``mount``; prints ``{written, error, samples}``; an OSError stops it.
"""

HOLDER = r"""
import os, sys, time
path, size = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"h" * size)
os.unlink(path)
print("HELD", flush=True)
time.sleep(600)
"""
"""A job's process that holds a deleted file of ``size`` bytes open."""

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ray-maintenance\[(\d+)\] ([A-Z]+) (.*)$")
RECLAIM = re.compile(r"^pressure reclaim (relieved|not relieved) in ([0-9.]+)s: freed (.+?) \((.*)\); (.*)$")
LOCKED = "pressure reclaim skipped: another cleanup holds "


# --- the filesystem, the processes, the CLI ------------------------------------------------------------------------


class SmallFs:
    """A tmpfs mounted by the test at a short path under /tmp (unix sockets of Ray in it stay under 108 bytes)."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="rp", dir="/tmp")
        self.mounted = False

    def mount(self, size, inodes=None):
        options = "size=%d,mode=1777" % size + (",nr_inodes=%d" % inodes if inodes else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "rayops-pressure", self.path], check=True)
        self.mounted = True
        return self.path

    def close(self):
        if self.mounted and subprocess.run(["umount", self.path], check=False).returncode != 0:
            subprocess.run(["umount", "-l", self.path], check=False)  # something we did not start still holds it
        os.rmdir(self.path)


@pytest.fixture
def small_fs():
    fs = SmallFs()
    try:
        yield fs
    finally:
        fs.close()


@pytest.fixture
def started(small_fs):
    """Processes the test starts (writer, holder, guard, drivers): killed by pid, before the tmpfs is unmounted."""
    procs = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            kill_tree(proc)


@pytest.fixture
def ray_on(any_ray_head, small_fs, started):
    """Start Ray (each version in turn) with its temp root in the small filesystem; stopped (by pid) before it is
    unmounted."""

    def start(num_cpus=1):
        os.rmdir(any_ray_head.temp_dir)  # the fixture's own (empty) dir: Ray's temp root is on the tmpfs instead
        any_ray_head.temp_dir = os.path.join(small_fs.path, "ray")
        any_ray_head.start(num_cpus=num_cpus)
        return any_ray_head

    try:
        yield start
    finally:
        for proc in reversed(started):
            kill_tree(proc)  # drivers first: they hold files in the tmpfs too
        any_ray_head.stop()


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """The CLI as the role installs it (zipapp + the role's wrapper), run by this test run's venv."""
    return install(tmp_path_factory.mktemp("pressure-node"), sys.prefix)


def cli_env():
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "RAY_MAINTENANCE_CONFIG")}


def run_cli(cli, config, *args, timeout=120):
    proc = subprocess.run([cli, "--config", config] + list(args), env=cli_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def write_config(where, name="ray-maintenance.json", **settings):
    path = os.path.join(str(where), name)
    with open(path, "w") as handle:
        json.dump(settings, handle)
    return path


def guard_config(tmp_path, fs, **extra):
    """The guard's config: the tmp dir on the small filesystem, everything it writes in the test's tmp dir."""
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    settings = {
        "tmp_dir": fs, "ray_temp_dir": os.path.join(fs, "ray"), "containers": False, "age_by": ["mtime", "atime"],
        "lock_file": str(tmp_path / "cleanup.lock"), "log_file": str(tmp_path / "ray-maintenance.log"),
        "metrics_dir": str(metrics), "audit_log": str(tmp_path / "audit.jsonl"), "watch_interval_seconds": 1,
        "sample_seconds": 0.5, "scan_workers": 1, "uv_cache_dir": str(tmp_path / "no-uv-cache"),
    }
    settings.update(extra)
    return write_config(tmp_path, **settings)


def start_guard(cli, config, tmp_path, started, name="guard"):
    """``ray-maintenance watch`` as systemd would run it; returns once it logged that it looks."""
    out = open(str(tmp_path / ("%s.out" % name)), "w")
    err = open(str(tmp_path / ("%s.err" % name)), "w")
    guard = subprocess.Popen([cli, "--config", config, "watch"], env=cli_env(), stdout=out, stderr=err)
    out.close()
    err.close()
    started.append(guard)
    with open(config) as handle:
        log = json.load(handle)["log_file"]
    wait_for(lambda: any(m.startswith("watch: looking every") for _t, pid, _l, m in log_lines(log)
                         if pid == guard.pid), 60, "the guard to start", guard)
    return guard


def stop_guard(guard):
    """SIGTERM, as systemd stops it: it exits 0."""
    guard.send_signal(signal.SIGTERM)
    assert guard.wait(timeout=60) == 0


def wait_for(predicate, timeout, what, *watched):
    deadline = time.time() + timeout
    while not predicate():
        for proc in watched:
            assert proc.poll() is None, "%s exited (%s) while waiting for %s" % (proc.args, proc.returncode, what)
        assert time.time() < deadline, "timed out after %ds waiting for %s" % (timeout, what)
        time.sleep(0.05)


# --- reading what the guard did ------------------------------------------------------------------------------------


def log_lines(path):
    """``(unix time, pid, level, message)`` of each line of the CLI's log."""
    if not os.path.exists(path):
        return []
    found = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = LOG_LINE.match(line.rstrip("\n"))
            if match:
                when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
                found.append((when, int(match.group(2)), match.group(3), match.group(4)))
    return found


def reclaims(path, pid):
    """The guard's reclaims from its log: start and end (unix time), result, freed, the tiers' summary, trigger."""
    found = []
    for when, who, _level, message in log_lines(path):
        match = RECLAIM.match(message)
        if who == pid and match:
            seconds = float(match.group(2))
            tiers = dict(part.split(" ", 1) for part in match.group(4).split(", ") if " " in part)
            found.append({"start": when - seconds, "end": when, "result": match.group(1), "freed": match.group(3),
                          "tiers": tiers, "trigger": match.group(5)})
    return found


def audit_entries(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def audit_time(entry):
    return datetime.datetime.fromisoformat(entry["time"]).timestamp()


TIERS = ("unneeded", "deleted_logs", "litter_idle", "litter_busy", "docker_prune")
AUDIT_TIER = re.compile(r"^under pressure, tier ([a-z_]+): (.*)$")


def tier_of(entry):
    """``(tier, reason)`` of an audit line: a pressure reclaim's names its tier; a plain cleanup's has None."""
    match = AUDIT_TIER.match(entry["reason"])
    return (match.group(1), match.group(2)) if match else (None, entry["reason"])


def used_percent(path):
    """``(bytes %, inodes %)`` used, as the guard computes them (``df``'s used / (used + available))."""
    st = os.statvfs(path)
    taken = st.f_blocks - st.f_bfree
    return 100.0 * taken / (taken + st.f_bavail), 100.0 * (st.f_files - st.f_ffree) / st.f_files


def pressure_metrics(tmp_path):
    with open(str(tmp_path / "metrics" / "rayops_ray_pressure.prom")) as handle:
        text = handle.read()
    promtool_check(text)
    return samples(text)


def holders(path):
    """Pids of the processes that hold ``path`` open."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if path in fd_targets(proc.pid).values():
                found.add(proc.pid)
        except OSError:  # gone, or not ours to read
            pass
    return found


# --- the scene -----------------------------------------------------------------------------------------------------


def write(path, size, content=b"j"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(content * size)
    return path


def empty_files(directory, count, name="f%05d"):
    os.makedirs(directory, exist_ok=True)
    for index in range(count):
        os.close(os.open(os.path.join(directory, name % index), os.O_WRONLY | os.O_CREAT, 0o644))
    return directory


def fill(fs, percent, path):
    """The job's data: ``path`` written until ``fs`` is ``percent`` used (bytes)."""
    st = os.statvfs(fs)
    taken, free = (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize
    write(path, int(percent / 100.0 * (taken + free)) - taken)
    assert used_percent(fs)[0] >= percent - 0.5


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def ray_scene(start_ray, fs, started, mode):
    """Real Ray on the small filesystem with a stale session, dead and live workers, and junk of each tier.

    ``mode`` ``bytes``: the junk is big files; ``inodes``: many empty files. Returns the paths by kind.
    """
    head = start_ray()
    stale = glob.glob(os.path.join(head.temp_dir, "session_2*"))
    head.stop()  # killed as a crash would: its session stays, stale
    head.start(num_cpus=1)
    live = os.path.realpath(os.path.join(head.temp_dir, "session_latest"))
    assert len(stale) == 1 and stale[0] != live
    stale = stale[0]
    logs = os.path.join(live, "logs")
    driver = head.driver(DRIVER)
    started.append(driver)
    live_pid, doomed_pid = map(int, driver.stdout.readline().split())
    doomed = psutil.Process(doomed_pid)
    doomed.kill()
    doomed.wait(timeout=30)

    def of(pid):
        return sorted(glob.glob(os.path.join(logs, "worker-*-%d.*" % pid)) +
                      glob.glob(os.path.join(logs, "python-core-worker-*_%d.log" % pid)))

    paths = {"stale": stale, "live": live, "logs": logs, "live_worker": of(live_pid), "live_pid": live_pid,
             "dead_core_log": glob.glob(os.path.join(logs, "python-core-worker-*_%d.log" % doomed_pid)),
             "dead_out": glob.glob(os.path.join(logs, "worker-*-%d.*" % doomed_pid)), "head": head}
    assert len(paths["live_worker"]) == 3 and len(paths["dead_core_log"]) == 1 and len(paths["dead_out"]) == 2
    assert os.path.getsize([p for p in paths["live_worker"] if p.endswith(".out")][0]) >= 2 * MIB
    scratch = os.path.join(fs, "job-scratch.bin")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, scratch, str(8 * MIB if mode == "bytes" else MIB)],
                              stdout=subprocess.PIPE, text=True)
    started.append(holder)
    assert holder.stdout.readline().strip() == "HELD"
    paths.update(holder=holder, scratch=scratch)
    standin = os.path.join(logs, "python-core-worker-%s_%d.log" % ("5e" * 28, dead_pid()))
    live_core = [p for p in paths["live_worker"] if p.endswith(".log")][0]
    hexid = os.path.basename(live_core)[len("python-core-worker-"):].split("_")[0]
    unneeded = {
        "stale": stale,
        "old_logs": [os.path.join(logs, "old", "worker-%02x%s-01000000-%d.out" % (i, "ab" * 27, 40000 + i))
                     for i in range(4)],
        "rotated": os.path.join(logs, "raylet.out.1"),  # Ray 2.53+'s backup name
        "rotated_240": os.path.join(logs, "python-core-worker-%s_%d.1.log" % (hexid, live_pid)),  # Ray 2.40's
        "standin_dead": standin,
        "dead_core_log": paths["dead_core_log"][0],
    }
    litter = {"ray_tmp": os.path.join(fs, "ray_tmp_7f3a", "pkg.zip"), "pip": os.path.join(fs, "pip-unpack-x9", "w.whl"),
              "tmp": os.path.join(fs, "tmpk2ab9c", "blob")}
    fresh = os.path.join(fs, "ray_tmp_fresh", "pkg.zip")
    if mode == "bytes":
        write(os.path.join(stale, "logs", "raylet.out"), 30 * MIB)  # the crashed node had logged a lot
        for path in unneeded["old_logs"]:
            write(path, 5 * MIB)
        write(unneeded["rotated"], 6 * MIB)
        write(unneeded["rotated_240"], 4 * MIB)
        write(standin, 20 * MIB)
        for path, size in zip(litter.values(), (30 * MIB, 15 * MIB, 15 * MIB)):
            write(path, size)
        write(fresh, 2 * MIB)
    else:
        empty_files(os.path.join(stale, "logs", "old"), 2400, "worker-%05d.out")
        for path in unneeded["old_logs"]:
            write(path, 0)
        empty_files(os.path.join(logs, "old"), 1600, "python-core-worker-%05d.log")
        for path in (unneeded["rotated"], unneeded["rotated_240"], standin):
            write(path, 0)
        for path, count in zip(litter.values(), (1200, 800, 800)):
            empty_files(os.path.dirname(path), count)
            write(path, 0)
        empty_files(os.path.dirname(fresh), 20)
        write(fresh, 0)
    for path in [stale, logs] + [os.path.dirname(p) for p in litter.values()]:
        aged(path)  # the live worker's files too: they stay because they are open and their pid lives, not young
    paths.update(unneeded=unneeded, litter=litter, fresh=fresh)
    return paths


def flatten(values):
    for value in values:
        if isinstance(value, list):
            yield from value
        else:
            yield value


# --- the tests -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bytes", "inodes"])
def test_the_guard_keeps_a_filling_disk_from_full_in_tier_order(mode, cli, small_fs, ray_on, started, tmp_path):
    """A writer fills the tmp dir at a fixed rate past 90 % twice; the guard keeps it below 100 % without ENOSPC.

    Besides Ray, a job's process holds a deleted file open in the tmp dir (8 MiB; inodes: 1 MiB): left as it is.
    bytes: a 256 MiB tmpfs, 80 MiB of ``unneeded`` junk, 60 MiB of litter, a writer of 5 MiB/s (10 % is 5 s of it).
    inodes: a tmpfs of 10,000 inodes, 4,000 empty files of ``unneeded`` junk, 2,800 of litter, a writer creating
    200 empty files a second (10 % is 5 s of it).
    """
    if mode == "bytes":
        fs = small_fs.mount(256 * MIB)
        rate, total, index = 5, 180, 0  # MiB a second, MiB
    else:
        fs = small_fs.mount(256 * MIB, inodes=10000)
        rate, total, index = 200, 7000, 1  # files a second, files
    scene = ray_scene(ray_on, fs, started, mode)
    keep_names = set()
    for dirpath, _dirnames, filenames in os.walk(scene["logs"]):
        keep_names.update(os.path.join(dirpath, name) for name in filenames)
    keep_names -= set(flatten(scene["unneeded"].values())) | set(scene["dead_out"])
    keep_names = {p for p in keep_names if not p.startswith(os.path.join(scene["logs"], "old") + "/")}
    live_worker = {path: (os.stat(path).st_ino, os.path.getsize(path)) for path in scene["live_worker"]}
    before = used_percent(fs)[index]
    assert 55 < before < 75, "the scene should start between the marks' reach: %.1f%%" % before

    config = guard_config(tmp_path, fs)
    log = str(tmp_path / "ray-maintenance.log")
    guard = start_guard(cli, config, tmp_path, started)
    os.mkdir(os.path.join(fs, "job"))
    target = os.path.join(fs, "job", "data" if mode == "bytes" else "files")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, mode, target, fs, str(rate), str(total)],
                              stdout=subprocess.PIPE, text=True)
    started.append(writer)

    # the first reclaim: the unneeded tier is enough, so it stops there, below the low mark, with the litter left
    wait_for(lambda: reclaims(log, guard.pid), 120, "the first reclaim", guard, writer)
    first = reclaims(log, guard.pid)[0]
    litter_after_first = {kind: os.path.exists(path) for kind, path in scene["litter"].items()}
    out, _err = writer.communicate(timeout=180)
    written = json.loads(out)
    time.sleep(2.5)  # two more looks: nothing more to do
    stop_guard(guard)

    # the writer never saw ENOSPC, and the disk never filled
    assert written["error"] is None and written["written"] == total, written["error"]
    assert writer.returncode == 0
    peak = max(sample[1 + index] for sample in written["samples"])
    assert peak < 100.0

    done = reclaims(log, guard.pid)
    assert [r["result"] for r in done] == ["relieved", "relieved"], done
    resource = "bytes" if mode == "bytes" else "inodes"
    assert all(re.match(r"^host %s .*: %s [0-9.]+%% >= 90%%$" % (re.escape(fs), resource), r["trigger"])
               for r in done), done
    assert list(first["tiers"]) == ["unneeded"] and first["tiers"]["unneeded"] != "0 B"
    assert all(litter_after_first.values()), litter_after_first  # it stopped under the low mark: litter kept
    second = done[1]
    assert list(second["tiers"])[0] == "unneeded" and {"litter_idle", "litter_busy"} & set(second["tiers"])
    assert "deleted_logs" not in second["tiers"]  # skipped: pressure_truncate_deleted_logs is off

    # each reclaim within 10 s of the crossing of the high mark (it looks every second)
    since = 0.0
    for reclaim in done:
        crossed = min(t for t, *used in written["samples"] if t > since and used[index] >= 90.0)
        assert reclaim["start"] - crossed < REACTION_LIMIT, (reclaim, crossed)
        since = reclaim["end"]

    # below the low mark after each (the guard's own report of the filesystem after it)
    with open(str(tmp_path / "guard.out")) as handle:
        relieved = re.findall(r"^relieved: below the low mark 80%%: host %s ([0-9.]+)%%$" % re.escape(fs),
                              handle.read(), re.M)
    assert len(relieved) == 2 and all(float(p) < 80 for p in relieved), relieved  # bytes; inodes: "relieved"

    # tier order in the audit log (each line names its tier): all the unneeded tier took came before any litter
    entries = audit_entries(str(tmp_path / "audit.jsonl"))
    tiers = [TIERS.index(tier_of(e)[0]) for e in entries]
    assert tiers == sorted(tiers) and TIERS.index("unneeded") in tiers, entries
    litter_tiers = {TIERS[t] for t in tiers} - {"unneeded"}
    assert litter_tiers and litter_tiers <= {"litter_idle", "litter_busy"}, entries
    assert all(audit_time(e) >= int(first["end"]) for e in entries if tier_of(e)[0] != "unneeded")
    removed = {e["path"]: tier_of(e) for e in entries}
    unneeded = scene["unneeded"]
    assert removed[unneeded["stale"]] == ("unneeded", "stale Ray session")
    for path in unneeded["old_logs"]:
        assert removed[path] == ("unneeded", "old log of %s" % os.path.basename(scene["live"]))
    session = os.path.basename(scene["live"])
    assert removed[unneeded["rotated"]] == ("unneeded", "rotated log backup of %s" % session)
    assert removed[unneeded["rotated_240"]] == ("unneeded", "rotated log backup of %s" % session)
    assert removed[unneeded["standin_dead"]] == ("unneeded", "log of a dead worker of %s" % session)
    assert removed[unneeded["dead_core_log"]] == ("unneeded", "log of a dead worker of %s" % session)
    assert not any(os.path.exists(p) for p in flatten(unneeded.values()))
    for path in scene["litter"].values():
        tier, reason = removed[os.path.dirname(path)]
        assert tier.startswith("litter_") and reason == "matches ray_tmp_*, pip-*, tmp*"
    assert os.path.exists(scene["fresh"])  # younger than pressure_max_age_hours

    # never the live worker's files, Ray's own logs, an open file, or the writer's data
    for path, (inode, size) in live_worker.items():
        assert os.stat(path).st_ino == inode and os.path.getsize(path) >= size
    assert psutil.pid_exists(scene["live_pid"])
    assert sorted(p for p in keep_names if not os.path.exists(p)) == []
    for path in scene["dead_out"]:  # the dead worker's .out/.err: log_monitor tails them, so they are open: kept
        assert os.path.exists(path) == bool(holders(path)), path
    assert not any(e["path"].startswith(os.path.join(fs, "job")) for e in entries)
    pid = scene["holder"].pid
    held = [os.stat("/proc/%d/fd/%d" % (pid, fd)) for fd, target in fd_targets(pid).items()
            if target == scene["scratch"] + " (deleted)"]
    assert len(held) == 1 and held[0].st_blocks * 512 >= (8 * MIB if mode == "bytes" else MIB)  # left as it was
    if mode == "bytes":
        assert os.path.getsize(target) == total * MIB
        with open(target, "rb") as handle:
            for block in range(total):
                handle.seek(block * MIB)
                assert handle.read(8) == b"%08d" % block
    else:
        assert len(os.listdir(target)) == total
    ping = scene["head"].driver(PING)
    started.append(ping)
    assert ping.stdout.readline().strip() == str(scene["live_pid"])  # Ray works on

    found = pressure_metrics(tmp_path)
    assert series(found, "rayops_ray_pressure_reclaims_total", result="relieved") == 2
    assert series(found, "rayops_ray_pressure_reclaims_total", result="not_relieved") == 0
    if mode == "bytes":
        assert series(found, "rayops_ray_pressure_freed_bytes_total", tier="unneeded") >= 80 * MIB
    assert series(found, "rayops_ray_pressure_last_reaction_seconds") < REACTION_LIMIT


def test_two_reclaims_never_overlap(cli, small_fs, started, tmp_path):
    """Cron's ``cleanup`` and the guard share the cleanup lock: never two at once.

    Ray-free: what is tested is the lock. While the test holds the lock (as cron's cleanup would), the guard under
    pressure says it is locked out and tries again at each look. Once the lock is free, the guard reclaims; its
    litter tiers sample activity for ``sample_seconds`` (5 here) under the lock, so the reclaim lasts long enough to
    start two ``cleanup`` runs during it: one with ``lock_timeout`` 0 is locked out (exit 1, it says so, touches
    nothing), one with ``lock_timeout`` 60 waits and does its work (an old ``old-*`` dir only its own ``patterns``
    name) after the guard's reclaim ended. Who holds the lock is sampled from ``/proc/locks`` meanwhile.
    """
    fs = small_fs.mount(64 * MIB)
    litter = os.path.join(fs, "tmpq1litter")
    write(os.path.join(litter, "blob"), 30 * MIB)
    cron_only = os.path.join(fs, "old-build-cache")
    write(os.path.join(cron_only, "blob"), MIB)
    aged(litter, hours=48)
    aged(cron_only, hours=48)
    config = guard_config(tmp_path, fs, sample_seconds=5)
    log = str(tmp_path / "ray-maintenance.log")
    lock_file = str(tmp_path / "cleanup.lock")
    with open(config) as handle:
        settings = json.load(handle)
    patterns = ["ray_tmp_*", "pip-*", "tmp*", "old-*"]
    cron = dict(settings, force=True, min_tmp_size=0, sample_seconds=0.5, patterns=patterns)
    cron_now = write_config(tmp_path, "cron-now.json", **dict(cron, lock_timeout=0))
    cron_wait = write_config(tmp_path, "cron-wait.json", **dict(cron, lock_timeout=60))
    guard = start_guard(cli, config, tmp_path, started)

    lock = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fill(fs, 92, os.path.join(fs, "job", "data"))
        wait_for(lambda: sum(m.startswith(LOCKED) for _t, p, _l, m in log_lines(log) if p == guard.pid) >= 3, 30,
                 "the guard to be locked out three times", guard)
        assert os.path.isdir(litter) and audit_entries(str(tmp_path / "audit.jsonl")) == []
    finally:
        os.close(lock)  # released
    released = time.time()
    lock_stat = os.stat(lock_file)
    wait_for(lambda: guard.pid in lock_holders(lock_stat), 30, "the guard to take the lock", guard)
    now_proc = subprocess.Popen([cli, "--config", cron_now, "cleanup"], env=cli_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    wait_proc = subprocess.Popen([cli, "--config", cron_wait, "cleanup"], env=cli_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    started.extend([now_proc, wait_proc])
    seen = []  # (time, pids holding the lock)
    while wait_proc.poll() is None or now_proc.poll() is None:
        seen.append((time.time(), lock_holders(lock_stat)))
        time.sleep(0.01)
    _out, now_err = now_proc.communicate()
    _out, wait_err = wait_proc.communicate()
    wait_for(lambda: reclaims(log, guard.pid), 30, "the guard's reclaim line", guard)
    stop_guard(guard)

    lines = log_lines(log)
    locked = [t for t, p, _l, m in lines if p == guard.pid and m.startswith(LOCKED)]
    assert len(locked) >= 3 and all(b - a > 0.5 for a, b in zip(locked, locked[1:]))  # tried again at each look
    assert all(t < released for t in locked)
    [reclaim] = reclaims(log, guard.pid)
    assert reclaim["result"] == "relieved" and {"litter_idle", "litter_busy"} & set(reclaim["tiers"]), reclaim
    assert reclaim["start"] >= released - 0.01

    # started during the reclaim with lock_timeout 0: locked out, says so, exit 1, removes nothing
    assert now_proc.returncode == 1, now_err
    assert "cleanup skipped: another cleanup holds %s (waited 0s)" % lock_file in now_err
    # with lock_timeout 60: waited for the guard, then cleaned
    assert wait_proc.returncode == 0, wait_err
    held = [(t, pids) for t, pids in seen if pids]
    assert all(len(pids) == 1 for _t, pids in held)
    guard_held = [t for t, pids in held if guard.pid in pids]
    wait_held = [t for t, pids in held if wait_proc.pid in pids]
    assert guard_held and wait_held and max(guard_held) < min(wait_held)
    assert not any(now_proc.pid in pids for _t, pids in held)

    entries = audit_entries(str(tmp_path / "audit.jsonl"))
    assert [(e["path"],) + tier_of(e) for e in entries] == [
        (litter, list(reclaim["tiers"])[-1], "matches ray_tmp_*, pip-*, tmp*"),  # the guard's
        (cron_only, None, "matches ray_tmp_*, pip-*, tmp*, old-*")]  # cron's
    assert audit_time(entries[0]) <= reclaim["end"] and audit_time(entries[1]) >= int(reclaim["end"])
    cleaned = [t for t, p, _l, m in lines if p == wait_proc.pid and m.startswith("cleanup target host (host): cleaned")]
    assert cleaned and cleaned[0] >= reclaim["end"]
    assert not [m for _t, p, _l, m in lines if p == now_proc.pid and m.startswith("cleanup target")]


def lock_holders(st):
    """Pids holding a flock on the file of ``st`` (an ``os.stat`` result), from ``/proc/locks``."""
    file_id = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    found = set()
    with open("/proc/locks") as handle:
        for line in handle:
            fields = line.split()
            if "->" in fields:
                continue  # a waiter
            if fields[1] == "FLOCK" and fields[5] == file_id:
                found.add(int(fields[4]))
    return found


def deleted_open(cli, config):
    """``monitor --json``'s ``deleted_open`` of the host: ``{pid: bytes}``."""
    proc = run_cli(cli, config, "--json", "monitor")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)["deleted_open"]
    return {holder["pid"]: holder for holder in found["processes"]}, found


def test_deleted_open_files_are_shown_and_only_rays_deleted_logs_are_emptied(
        cli, small_fs, ray_on, started, tmp_path):
    """Space deletion cannot free: a job's deleted file (40 MiB) and the live raylet's deleted ``raylet.out`` (60 MiB).

    ``monitor --json`` shows both in ``deleted_open``. With ``pressure_truncate_deleted_logs`` off the guard frees
    neither and says it is not relieved; with it on, it empties ``raylet.out`` (held by the trusted raylet) and
    the disk comes back below the low mark, while the job's file, not a Ray log, is left.
    """
    fs = small_fs.mount(256 * MIB)
    head = ray_on()
    live = os.path.realpath(os.path.join(head.temp_dir, "session_latest"))
    raylet_out = os.path.join(live, "logs", "raylet.out")
    raylet = list(head.named("raylet"))
    assert len(raylet) == 1 and raylet[0] in holders(raylet_out)
    write(raylet_out, 60 * MIB, b"r")  # as if the raylet had logged a lot
    os.unlink(raylet_out)  # someone deleted it: the raylet still holds it
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, os.path.join(fs, "job-scratch.bin"), str(40 * MIB)],
                              stdout=subprocess.PIPE, text=True)
    started.append(holder)
    assert holder.stdout.readline().strip() == "HELD"
    off = guard_config(tmp_path, fs)
    by_pid, found = deleted_open(cli, off)
    assert by_pid[holder.pid]["bytes"] >= 40 * MIB and by_pid[holder.pid]["paths"] == [
        os.path.join(fs, "job-scratch.bin")]
    assert by_pid[raylet[0]]["bytes"] >= 60 * MIB and raylet_out in by_pid[raylet[0]]["paths"]
    assert found["bytes"] >= 100 * MIB
    fill(fs, 92, os.path.join(fs, "job", "data"))

    guard = start_guard(cli, off, tmp_path, started)
    log = str(tmp_path / "ray-maintenance.log")
    wait_for(lambda: reclaims(log, guard.pid), 60, "the guard's reclaim", guard)
    stop_guard(guard)
    [reclaim] = reclaims(log, guard.pid)
    assert reclaim["result"] == "not relieved" and "deleted_logs" not in reclaim["tiers"]
    with open(str(tmp_path / "guard.out")) as handle:
        assert "  tier deleted_logs: skipped, pressure_truncate_deleted_logs is off\n" in handle.read()
    by_pid, _found = deleted_open(cli, off)
    assert by_pid[holder.pid]["bytes"] >= 40 * MIB and by_pid[raylet[0]]["bytes"] >= 60 * MIB
    assert used_percent(fs)[0] >= 91

    on = guard_config(tmp_path, fs, pressure_truncate_deleted_logs=True)
    proc = run_cli(cli, on, "--json", "cleanup", "--pressure", "--dry-run")
    tier = {t["tier"]: t for t in json.loads(proc.stdout)["pressure"]["tiers"]}["deleted_logs"]
    assert [(t["pid"], t["path"]) for t in tier["truncated"]] == [(raylet[0], raylet_out)]
    assert tier["truncated"][0]["bytes"] >= 60 * MIB
    kept = [k for k in tier["kept"] if k["pid"] == holder.pid]
    assert kept and kept[0]["reason"].startswith("not held by a trusted Ray process")
    guard = start_guard(cli, on, tmp_path, started, name="guard-on")
    wait_for(lambda: reclaims(log, guard.pid), 60, "the guard's reclaim", guard)
    stop_guard(guard)
    [reclaim] = reclaims(log, guard.pid)
    assert reclaim["result"] == "relieved" and reclaim["tiers"]["deleted_logs"].endswith("MiB"), reclaim
    assert used_percent(fs)[0] < 80  # the space came back
    by_pid, _found = deleted_open(cli, off)
    assert by_pid[holder.pid]["bytes"] >= 40 * MIB  # the job's file: left
    assert by_pid.get(raylet[0], {"bytes": 0})["bytes"] < MIB
    assert psutil.Process(raylet[0]).is_running() and psutil.Process(holder.pid).is_running()
    assert audit_entries(str(tmp_path / "audit.jsonl")) == []  # nothing was removed, only emptied
