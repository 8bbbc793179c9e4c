# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the remover, all safety checks on, against ``rm -rf`` and ``systemd-tmpfiles --clean``.

Not a test: it prints wall-time ratios and peak memory, never asserts.  Every
run gets a fresh copy of the same Ray-like tree (the copy is not timed), the
contenders alternate round by round, each in a fresh process.

    .venv/bin/python benchmarks/remove_vs_rm.py                # 300,000 files, 3 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ray_tree import COLLECTIONS, ensure_tree

REMOVE = """
import sys, time
import psutil
from ansible_collections.rayops.disk.plugins.module_utils._options import AGE_FIELDS
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import Target, unix_socket_paths
from ansible_collections.rayops.disk.plugins.module_utils._remove import (
    Guards,
    Policy,
    Remover,
    locked_inodes,
    socket_inodes,
    used_inodes,
)
guards = Guards(used_inodes(psutil.pids()), locked_inodes(), socket_inodes(unix_socket_paths(Target("host"))))
remover = Remover(sys.argv[1], Policy(time.time(), AGE_FIELDS), guards, dry_run=False)
if sys.argv[2] != "auto":
    remover.workers = int(sys.argv[2])
remover.remove_matching(lambda name: True)  # as the cleanup calls it
print(remover.outcome.removed, remover.outcome.error_count)
"""


def copy_of(tree: str, scratch: str) -> str:
    """A fresh copy of the tree (contents only) to remove."""
    target = tempfile.mkdtemp(prefix="run-", dir=scratch)
    subprocess.run(["cp", "-a", tree + "/.", target], check=True)
    os.unlink(os.path.join(target, ".complete"))
    return target


def timed(argv: list, env: dict) -> tuple:
    """Wall seconds and peak RSS in MiB of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit("%s failed" % argv)
    return elapsed, usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tree = ensure_tree("/var/tmp/rayops-bench-%d" % args.files, args.files)
    scratch = tempfile.mkdtemp(prefix="rayops-remove-bench-", dir="/var/tmp")
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    conf = os.path.join(scratch, "bench.conf")
    contenders = {
        "rm -rf": lambda target: ["rm", "-rf", target],
        "systemd-tmpfiles --clean (age 0)": lambda target: ["systemd-tmpfiles", "--clean", conf],
        "remover, all checks (auto workers)": lambda target: [sys.executable, "-c", REMOVE, target, "auto"],
        "remover, all checks (1 process)": lambda target: [sys.executable, "-c", REMOVE, target, "1"],
    }
    runs = {name: [] for name in contenders}
    try:
        for _round in range(args.rounds):
            for name, argv in contenders.items():
                target = copy_of(tree, scratch)
                with open(conf, "w") as handle:
                    handle.write("e %s - - - 0\n" % target)
                subprocess.run(["sync"], check=True)
                runs[name].append(timed(argv(target), env))
                left = len(os.listdir(target)) if os.path.isdir(target) else 0
                if left:
                    raise SystemExit("%s left %d entries in %s" % (name, left, target))
                subprocess.run(["rm", "-rf", target], check=True)
    finally:
        subprocess.run(["rm", "-rf", scratch], check=True)
    base = statistics.median(seconds for seconds, _rss in runs["rm -rf"])
    print()
    print("tree: %s (%d files), %d rounds, fresh copy per run" % (tree, args.files, args.rounds))
    print("| contender | median s | ratio to rm -rf | peak RSS MiB |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        median = statistics.median(seconds for seconds, _rss in values)
        print("| %s | %.3f | %.2f | %.1f |" % (name, median, median / base, max(rss for _s, rss in values)))


if __name__ == "__main__":
    main()
