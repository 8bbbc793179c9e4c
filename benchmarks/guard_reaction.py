# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: how fast the pressure guard (``ray-maintenance watch``) reacts, and what it costs while idle.

Not a test: it prints figures, never asserts. Run as root (it mounts a tmpfs):

    .venv/bin/python benchmarks/guard_reaction.py                         # 512 MiB, 50 MiB/s, 3 rounds, 1 min idle
    .venv/bin/python benchmarks/guard_reaction.py --size-mib 3072 --idle-minutes 5
    .venv/bin/python benchmarks/guard_reaction.py --interval 1 --rounds 10   # looking every second
    .venv/bin/python benchmarks/guard_reaction.py --containers 20 --idle-minutes 3 --rounds 0   # idle, 20 workers

A tmpfs of ``--size-mib`` is mounted under /tmp and holds the tmp dir (``<tmpfs>/ray`` is Ray's temp root). The
guard runs as the role installs it (the zipapp the role builds, ``python -I ray-maintenance.pyz``) with the
default ``watch_interval_seconds`` (5, or ``--interval``) and marks (90 / 80 %), ``containers: false``, its
lock, log and metrics in a scratch dir.

With ``--containers N`` it also watches N worker containers (``rayops-test/busybox``, which scripts/setup.sh
builds; ``containers: true``, their name filter), as it would on a node running Ray workers in Docker: every
look reads their filesystems too, and every minute it lists them, enters each and looks for Ray in it.

First it is left idle: its CPU time (``psutil`` ``cpu_times``, user + system) as % of one core over the first
60 s and over all of ``--idle-minutes`` (a minute's re-listing included), and its RSS at start, after 60 s and
after ``--idle-minutes``.

Then, ``--rounds`` times: the tmpfs gets reclaimable junk (a crashed node's stale session: 30 % of the size in
100 KiB logs; litter ``tmp*`` and ``pip-*``: 20 %; all aged 3 h) and a writer appends 1 MiB chunks at
``--rate-mib`` MiB/s to a job file, past the 90 % mark, until it has written 60 % of the size (10 % more than
fits without the guard). The reaction is from the writer's first write that left the disk at or above 90 % to
the start of the guard's reclaim (its log line's time less the seconds it says the reclaim took, given to
0.1 s); the peak is the highest used % the writer saw after any of its writes. A write that fails with ENOSPC
is counted and retried 50 ms later (a job would have failed).

Only what it started is stopped (by pid, and its containers by name) and only its own tmpfs is unmounted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import docker
import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "roles", "ray_cleanup", "files", "build_ray_maintenance_pyz.py")
MIB = 1024 * 1024
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ray-maintenance\[(\d+)\] ([A-Z]+) (.*)$")
RECLAIM = re.compile(r"^pressure reclaim (relieved|not relieved) in ([0-9.]+)s: freed (.+?) \((.*)\); (.*)$")


def used_percent(path: str) -> float:
    st = os.statvfs(path)
    taken = st.f_blocks - st.f_bfree
    return 100.0 * taken / (taken + st.f_bavail)


def cpu_percent(before: tuple, after: tuple) -> float:
    """% of one core between two ``(cpu_times, monotonic)`` readings of a process (user + system)."""
    (cpu_a, wall_a), (cpu_b, wall_b) = before, after
    return 100.0 * ((cpu_b.user - cpu_a.user) + (cpu_b.system - cpu_a.system)) / (wall_b - wall_a)


def write(path: str, size: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(b"j" * size)


def aged(path: str, hours: float = 3.0) -> None:
    then = time.time() - hours * 3600
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (then, then), follow_symlinks=False)
    os.utime(path, (then, then))


def junk(fs: str, size: int, round_no: int) -> None:
    """A crashed node's stale session (30 % of the size, 100 KiB logs) and litter (20 %), aged 3 h."""
    stale = os.path.join(fs, "ray", "session_2025-01-01_00-00-%02d_000000_%d" % (round_no, 100 + round_no))
    for index in range(int(0.30 * size) // (100 * 1024)):
        write(os.path.join(stale, "logs", "worker-%06d-01000000-%d.out" % (index, 40000 + index)), 100 * 1024)
    aged(stale)
    for name, share in (("tmpbench%d/blob" % round_no, 0.12), ("pip-unpack-%d/w.whl" % round_no, 0.08)):
        write(os.path.join(fs, name), int(share * size))
        aged(os.path.join(fs, os.path.dirname(name)))


def log_lines(path: str) -> list:
    found = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                match = LOG_LINE.match(line.rstrip("\n"))
                if match:
                    when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    found.append((when, match.group(4)))
    return found


def reclaims(path: str) -> list:
    found = []
    for when, message in log_lines(path):
        match = RECLAIM.match(message)
        if match:
            seconds = float(match.group(2))
            found.append({"start": when - seconds, "end": when, "seconds": seconds, "result": match.group(1),
                          "freed": match.group(3), "tiers": match.group(4)})
    return found


def writer(path: str, mount: str, rate: float, chunks: int) -> dict:
    """Append ``chunks`` MiB at ``rate`` MiB/s; the used % after each write; ENOSPC counted and retried."""
    samples, enospc = [], 0
    block = b"w" * MIB
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        start = time.monotonic()
        index = 0
        while index < chunks:
            pause = start + index / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != 28:
                    raise
                enospc += 1
                time.sleep(0.05)
                continue
            index += 1
            samples.append((time.time(), used_percent(mount)))
    finally:
        os.close(fd)
    return {"samples": samples, "enospc": enospc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512, help="tmpfs size (default 512)")
    parser.add_argument("--rate-mib", type=float, default=50.0, help="the writer's MiB/s (default 50)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-minutes", type=float, default=1.0, help="idle time before the rounds (at least 1)")
    parser.add_argument("--interval", type=float, default=None,
                        help="watch_interval_seconds (default: the config's default, 5)")
    parser.add_argument("--containers", type=int, default=0, help="worker containers to watch too (default 0)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each round as it ends, also into a file
    if os.geteuid() != 0:
        raise SystemExit("run as root: it mounts a tmpfs")
    size = args.size_mib * MIB
    scratch = tempfile.mkdtemp(prefix="rayops-guard-bench-")
    fs = tempfile.mkdtemp(prefix="rpb", dir="/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=1777" % size, "rayops-guard-bench", fs], check=True)
    guard = None
    client = docker.from_env() if args.containers else None
    tag = "rayops-guard-bench-%s" % uuid.uuid4().hex[:6]
    workers = []
    try:
        for index in range(args.containers):
            workers.append(client.containers.run("rayops-test/busybox:latest", name="%s-%02d" % (tag, index),
                                                 init=True, detach=True))
        os.mkdir(os.path.join(scratch, "lib"))
        built = json.loads(subprocess.run([sys.executable, BUILD, REPO, os.path.join(scratch, "lib")], check=True,
                                          capture_output=True, text=True).stdout)
        log = os.path.join(scratch, "ray-maintenance.log")
        os.mkdir(os.path.join(scratch, "metrics"))
        config = os.path.join(scratch, "ray-maintenance.json")
        with open(config, "w") as handle:
            json.dump({"tmp_dir": fs, "ray_temp_dir": os.path.join(fs, "ray"), "containers": bool(workers),
                       "container_name_filter": tag,
                       "age_by": ["mtime", "atime"], "lock_file": os.path.join(scratch, "cleanup.lock"),
                       "log_file": log, "metrics_dir": os.path.join(scratch, "metrics"),
                       "audit_log": os.path.join(scratch, "audit.jsonl"),
                       "uv_cache_dir": os.path.join(scratch, "no-uv-cache"),
                       **({"watch_interval_seconds": args.interval} if args.interval else {})}, handle)
        os.mkdir(os.path.join(fs, "ray"))
        os.mkdir(os.path.join(fs, "job"))
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "RAY_MAINTENANCE_CONFIG")}
        guard = subprocess.Popen([sys.executable, "-I", built["pyz"], "--config", config, "watch"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not any(m.startswith("watch: looking every") for _t, m in log_lines(log)):
            if guard.poll() is not None:
                raise SystemExit("the guard exited: %s" % guard.returncode)
            time.sleep(0.05)
        proc = psutil.Process(guard.pid)
        print("guard %s, pid %d, tmpfs %s of %d MiB, writer %g MiB/s, %d worker container(s)" % (
            built["label"], guard.pid, fs, args.size_mib, args.rate_mib, len(workers)))

        # idle: CPU over the first 60 s, RSS at start, after 60 s and after --idle-minutes
        rss_start = proc.memory_info().rss / MIB
        start = (proc.cpu_times(), time.monotonic())
        time.sleep(60)
        minute = (proc.cpu_times(), time.monotonic())
        rss_60 = proc.memory_info().rss / MIB
        time.sleep(max(0.0, args.idle_minutes * 60 - 60))
        end = (proc.cpu_times(), time.monotonic())
        rss_end = proc.memory_info().rss / MIB
        cpu, cpu_all = cpu_percent(start, minute), cpu_percent(start, end)
        with open(os.path.join(scratch, "metrics", "rayops_ray_pressure.prom")) as handle:
            watched = set(re.findall(r'^rayops_ray_pressure_used_ratio\{[^}]*target="([^"]+)"', handle.read(), re.M))
        print("idle, watching %d target(s): CPU %.2f%% of one core over 60 s, %.2f%% over %g min; RSS %.1f MiB at "
              "start, %.1f MiB after 1 min, %.1f MiB after %g min" % (
                  len(watched), cpu, cpu_all, args.idle_minutes, rss_start, rss_60, rss_end, args.idle_minutes))

        reactions, peaks, durations, enospc = [], [], [], 0
        for round_no in range(args.rounds):
            junk(fs, size, round_no)
            job = os.path.join(fs, "job", "data")
            time.sleep(random.uniform(0, 5))  # a random phase against the guard's looks
            before = used_percent(fs)
            done = len(reclaims(log))
            result = writer(job, fs, args.rate_mib, int(0.60 * size) // MIB)
            deadline = time.time() + 30
            while len(reclaims(log)) == done and time.time() < deadline:
                time.sleep(0.1)
            found = reclaims(log)[done:]
            crossed = next((t for t, used in result["samples"] if used >= 90.0), None)
            peak = max(used for _t, used in result["samples"])
            peaks.append(peak)
            enospc += result["enospc"]
            if found and crossed is not None:
                reaction = found[0]["start"] - crossed
                reactions.append(reaction)
                durations.append(found[0]["seconds"])
                print("round %d: %.1f%% -> crossed 90%% -> reclaim after %.2f s (took %.2f s, %s: freed %s: %s); "
                      "peak %.1f%%, ENOSPC %d" % (round_no + 1, before, reaction, found[0]["seconds"],
                                                  found[0]["result"], found[0]["freed"], found[0]["tiers"], peak,
                                                  result["enospc"]))
            else:
                print("round %d: no reclaim seen (crossed: %s), peak %.1f%%" % (round_no + 1, crossed, peak))
            os.unlink(job)
            for name in os.listdir(fs):  # what the guard left (it stops below the low mark) goes before the next round
                if name != "job":
                    subprocess.run(["rm", "-rf", "--one-file-system", os.path.join(fs, name)], check=True)
            os.mkdir(os.path.join(fs, "ray"))
            time.sleep(6)  # the guard looks again: below the marks
        metrics = open(os.path.join(scratch, "metrics", "rayops_ray_pressure.prom")).read()
        last = re.search(r"^rayops_ray_pressure_last_reaction_seconds (\S+)$", metrics, re.M)
        headroom = 0.10 * args.size_mib / args.rate_mib
        print("headroom from 90%% to full at %g MiB/s: %.1f s (the guard looks every %g s)" % (
            args.rate_mib, headroom, args.interval or 5))
        if reactions:
            print("summary: reaction median %.2f s (min %.2f, max %.2f, %d rounds), reclaim %.2f s median; guard's "
                  "own last_reaction_seconds %s; peak %.1f%%; ENOSPC %d; idle CPU %.2f%% of one core; RSS %.1f MiB "
                  "at start, %.1f MiB after %g min idle" % (
                      statistics.median(reactions), min(reactions), max(reactions), len(reactions),
                      statistics.median(durations), last.group(1) if last else "-", max(peaks), enospc, cpu,
                      rss_start, rss_end, args.idle_minutes))
        elif peaks:
            print("summary: no reaction measured; peak %.1f%%; ENOSPC %d" % (max(peaks), enospc))
    finally:
        if guard is not None and guard.poll() is None:
            guard.send_signal(signal.SIGTERM)
            try:
                guard.wait(timeout=30)
            except subprocess.TimeoutExpired:
                guard.kill()
                guard.wait()
        for worker in workers:
            worker.remove(force=True)
        if subprocess.run(["umount", fs], check=False).returncode != 0:
            subprocess.run(["umount", "-l", fs], check=False)
        os.rmdir(fs)
        subprocess.run(["rm", "-rf", scratch], check=False)


if __name__ == "__main__":
    main()
