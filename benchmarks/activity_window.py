# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: how often an idle Ray head reads idle, per Ray version and sample window.

Not a test: it prints counts, never asserts.  For each Ray version (the venvs
scripts/setup.sh installs) it starts a 4-CPU head on 127.0.0.1, makes 4 idle
workers and an idle detached actor, and samples the host's activity N times
per window with the defaults of ray_worker_cleanup (cpu_idle_percent 5).

    .venv/bin/python benchmarks/activity_window.py                 # 20 samples, windows 0.5 1 2
    .venv/bin/python benchmarks/activity_window.py --samples 10 --windows 1
"""

from __future__ import annotations

import argparse
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
)


def sample_host(options: UsageOptions) -> dict:
    """One activity verdict of this host, as a cleanup samples it."""
    slot = Slot("host", "host", host_target())
    sample_activity([slot], options, psutil)
    return slot.activity


def measure(version: str, windows: list, samples: int) -> list:
    """``(window, idle count, median counted CPU, median idle-machinery CPU)`` per window."""
    heads = _head(version)
    head = next(heads)
    rows = []
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
                             readings[-1]["idle_workers"], readings[-1]["idle_actors"]))
        finally:
            driver.kill()
            driver.wait()
    finally:
        heads.close()  # the fixture's teardown: kill this head, remove its dirs
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--windows", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--versions", nargs="+", default=list(RAY_VERSIONS))
    args = parser.parse_args()
    print("| Ray | window s | idle readings | median counted CPU % | median idle-machinery CPU % | idle workers, actors |")
    print("|---|---|---|---|---|---|")
    for version in args.versions:
        for window, idle, counted, machinery, workers, actors in measure(version, args.windows, args.samples):
            print("| %s | %g | %d of %d | %.1f | %.1f | %d, %s |" % (version, window, idle, args.samples, counted,
                                                                     machinery, workers, ", ".join(actors)))


if __name__ == "__main__":
    main()
