# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the core scanner against ``du -sB1`` on the same Ray-like tree, in one run.

Not a test: it prints wall-time ratios and peak memory, never asserts.  Each
contender runs in a fresh process, alternating, so both see the same (warm)
cache and the same noise; compare the ratios, not the seconds.

    .venv/bin/python benchmarks/scan_vs_du.py            # 300,000 files, 5 rounds
    .venv/bin/python benchmarks/scan_vs_du.py --files 3000000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from ray_tree import COLLECTIONS, ensure_tree

SCAN = """
import resource, sys
from ansible_collections.rayops.disk.plugins.module_utils._scan import Root, scan
from ansible_collections.rayops.disk.plugins.module_utils._usage import RayTmpLayout
workers = int(sys.argv[2]) if sys.argv[2] != "auto" else None
result = scan([Root(sys.argv[1], ("other",), ("ray", sys.argv[1]))], RayTmpLayout(("ray_tmp_*",)), workers)
print(sum(t.bytes for t in result.root_totals), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def timed(argv: list, env: dict | None = None) -> tuple:
    """Wall seconds, peak RSS of the process and of its children in MiB, and the bytes it printed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit("%s failed" % argv)
    words = out.decode().split()
    children = int(words[1]) / 1024.0 if len(words) > 1 and words[1].isdigit() else 0.0  # du prints a path
    return elapsed, usage.ru_maxrss / 1024.0, children, words[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", help="where to build (and reuse) the tree; default a dir under /var/tmp")
    args = parser.parse_args()
    tree = ensure_tree(args.tree or "/var/tmp/rayops-bench-%d" % args.files, args.files)
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    contenders = {
        "du -sB1": ["du", "-sB1", tree],
        "scanner (auto workers)": [sys.executable, "-c", SCAN, tree, "auto"],
        "scanner (1 process)": [sys.executable, "-c", SCAN, tree, "1"],
    }
    timed(contenders["du -sB1"])  # warm the cache once for everybody
    runs = {name: [] for name in contenders}
    sizes = {}
    for _round in range(args.rounds):
        for name, argv in contenders.items():  # alternate: every round runs each once
            seconds, rss, children, out = timed(argv, env)
            runs[name].append((seconds, max(rss, children)))
            sizes[name] = out
    base = statistics.median(s for s, _rss in runs["du -sB1"])
    print()
    print("tree: %s (%d files), %d rounds, %d CPUs usable" % (tree, args.files, args.rounds,
                                                              len(os.sched_getaffinity(0))))
    print("| contender | median s | ratio to du | peak RSS MiB (largest process) | bytes reported |")
    print("|---|---|---|---|---|")
    for name, values in runs.items():
        median = statistics.median(s for s, _rss in values)
        print("| %s | %.3f | %.2f | %.1f | %s |" % (name, median, median / base, max(r for _s, r in values),
                                                    sizes[name]))


if __name__ == "__main__":
    main()
