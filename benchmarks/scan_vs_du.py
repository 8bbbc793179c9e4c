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
import random
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".build", "collections")

SCAN = """
import resource, sys
from ansible_collections.rayops.disk.plugins.module_utils._scan import Root, scan
from ansible_collections.rayops.disk.plugins.module_utils._usage import RayTmpLayout
workers = int(sys.argv[2]) if sys.argv[2] != "auto" else None
result = scan([Root(sys.argv[1], ("other",), ("ray", sys.argv[1]))], RayTmpLayout(("ray_tmp_*",)), workers)
print(sum(t.bytes for t in result.root_totals), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def make_tree(root: str, files: int) -> None:
    """A Ray temp root: sessions with logs, logs/old, runtime_resources and spilled objects."""
    rng = random.Random(7)
    made, session = 0, 0
    shape = (("logs", 60), ("logs/old", 200), ("runtime_resources/working_dir_files/_ray_pkg_%d", 300),
             ("ray_spilled_objects_node", 40))
    while made < files:
        base = os.path.join(root, "session_2026-11-%02d_10-00-00_000000_%d" % (session % 28 + 1, 1000 + session))
        for sub, count in shape:
            for block in range(count // 20):
                folder = os.path.join(base, sub.replace("%d", str(session)), "d%d" % block)
                os.makedirs(folder, exist_ok=True)
                for index in range(20):
                    with open(os.path.join(folder, "f%d" % index), "wb") as handle:
                        handle.write(b"x" * rng.randint(0, 3000))
                    made += 1
        session += 1
    with open(os.path.join(root, ".complete"), "w") as handle:
        handle.write(str(files))


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
    tree = args.tree or "/var/tmp/rayops-bench-%d" % args.files
    marker = os.path.join(tree, ".complete")
    if not os.path.exists(marker) or open(marker).read() != str(args.files):
        print("building a %d-file tree in %s ..." % (args.files, tree), flush=True)
        subprocess.run(["rm", "-rf", tree], check=True)
        os.makedirs(tree)
        make_tree(tree, args.files)
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
