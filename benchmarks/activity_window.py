# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: how often an idle Ray head reads idle, and one running a stream of short tasks busy.

Not a test: it prints counts, never asserts.  For each Ray version (the venvs
scripts/setup.sh installs) it starts a 4-CPU head on 127.0.0.1, makes 4 idle
workers and an idle detached actor, and samples the host's activity N times
per window with the defaults of ray_worker_cleanup (cpu_idle_percent 5).  With
``--stream`` it then starts the short-task driver of
tests/system/test_ray_activity.py (batches of 4 tasks of 0.1 s of CPU, 0.3 s
apart) and samples N times more per window (issue 18): how many readings are
busy, how many of those saw a task at an end of the window (all the gate saw
before), and the CPU the sampler itself used per reading.

    .venv/bin/python benchmarks/activity_window.py                 # 20 samples, windows 0.5 1 2
    .venv/bin/python benchmarks/activity_window.py --samples 10 --windows 1
    .venv/bin/python benchmarks/activity_window.py --samples 20 --windows 1 --stream
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import psutil

from ray_tree import COLLECTIONS

sys.path.insert(0, COLLECTIONS)

from ansible_collections.rayops.disk.plugins.module_utils._options import UsageOptions  # noqa: E402 (path above)
from ansible_collections.rayops.disk.plugins.module_utils._targets import (  # noqa: E402 (path above)
    Slot,
    host_target,
    sample_activity,
)
from ansible_collections.rayops.disk.tests.system.conftest import (  # noqa: E402
    IDLE_DRIVER,
    RAY_VERSIONS,
    _head,
    kill_tree,
)
from ansible_collections.rayops.disk.tests.system.test_ray_activity import STREAM_DRIVER  # noqa: E402


def sample_host(options: UsageOptions) -> dict:
    """One activity verdict of this host, as a cleanup samples it; ``sampler_ms``: the CPU the sampling took."""
    slot = Slot("host", "host", host_target())
    before = resource.getrusage(resource.RUSAGE_SELF)
    sample_activity([slot], options, psutil)
    after = resource.getrusage(resource.RUSAGE_SELF)
    slot.activity["sampler_ms"] = 1000 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return slot.activity


def stream_rows(head, windows: list, samples: int) -> list:
    """``(window, busy count, busy with a task at an end, median sampler CPU ms)`` under the short-task stream."""
    driver = head.driver(STREAM_DRIVER, "4", "0.3")
    rows = []
    try:
        assert driver.stdout.readline().strip() == "STREAMING"
        for window in windows:
            readings = [sample_host(UsageOptions(activity=True, sample_seconds=window)) for _round in range(samples)]
            rows.append((window, sum(bool(r["busy"]) for r in readings), sum(bool(r["ray_tasks"]) for r in readings),
                         statistics.median(r["sampler_ms"] for r in readings)))
    finally:
        kill_tree(driver)
    return rows


def measure(version: str, windows: list, samples: int, stream: bool) -> tuple:
    """``(window, idle count, median counted CPU, median idle-machinery CPU, …)`` per window; the stream's rows."""
    heads = _head(version)
    head = next(heads)
    rows, streamed = [], []
    try:
        head.start(num_cpus=4)
        driver = head.driver(IDLE_DRIVER, "4")
        try:
            assert driver.stdout.readline().strip() == "IDLE"
            time.sleep(5)  # let start-up work settle
            for window in windows:
                options = UsageOptions(activity=True, sample_seconds=window)
                readings = [sample_host(options) for _round in range(samples)]
                rows.append((window, sum(not r["busy"] for r in readings),
                             statistics.median(r["cpu_percent"] for r in readings),
                             statistics.median(r["idle_cpu_percent"] for r in readings),
                             readings[-1]["idle_workers"], readings[-1]["idle_actors"],
                             statistics.median(r["sampler_ms"] for r in readings)))
            if stream:
                streamed = stream_rows(head, windows, samples)
        finally:
            driver.kill()
            driver.wait()
    finally:
        heads.close()  # the fixture's teardown: kill this head, remove its dirs
    return rows, streamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--windows", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--versions", nargs="+", default=list(RAY_VERSIONS))
    parser.add_argument("--stream", action="store_true", help="then sample the short-task stream too")
    args = parser.parse_args()
    results = {version: measure(version, args.windows, args.samples, args.stream) for version in args.versions}
    print("| Ray | window s | idle readings | median counted CPU % | median idle-machinery CPU % "
          "| idle workers, actors | sampler CPU ms |")
    print("|---|---|---|---|---|---|---|")
    for version, (rows, _streamed) in results.items():
        for window, idle, counted, machinery, workers, actors, sampler in rows:
            print("| %s | %g | %d of %d | %.1f | %.1f | %d, %s | %.1f |" % (
                version, window, idle, args.samples, counted, machinery, workers, ", ".join(actors), sampler))
    if args.stream:
        print("\n| Ray | window s | short-task stream: busy readings | of them with a task at an end "
              "| sampler CPU ms |")
        print("|---|---|---|---|---|")
        for version, (_rows, streamed) in results.items():
            for window, busy, at_ends, sampler in streamed:
                print("| %s | %g | %d of %d | %d | %.1f |" % (version, window, busy, args.samples, at_ends, sampler))


if __name__ == "__main__":
    main()
