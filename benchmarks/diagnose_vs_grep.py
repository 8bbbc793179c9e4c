# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: ``ray-maintenance diagnose`` reading Ray's logs against ``grep -c -E`` with the same patterns on the same
logs, in one run; and its memory at two sizes (flat: logs are streamed). Prints figures; asserts nothing.

The logs are made up of lines as Ray writes them (C++ and Python prefixes, worker stderr), one failure line in
about 20,000, in a session of a made-up Ray temp root: ``raylet.out``, ``gcs_server.out``, ``raylet.err`` and
worker ``.out``/``.err`` files. ``grep`` gets the signatures' literal needles as one extended regex, over the files
diagnose reads; diagnose runs as the CLI does (``--no-metrics``, no state file, no live findings), in a fresh
process whose peak RSS is read from ``/proc/self/status`` (``VmHWM``). Page cache warm for both (one read first).

    .venv/bin/python benchmarks/diagnose_vs_grep.py              # 1 GiB and 100 MiB
    .venv/bin/python benchmarks/diagnose_vs_grep.py --mib 256
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".build", "collections")
sys.path.insert(0, COLLECTIONS)

from ansible_collections.rayops.disk.plugins.module_utils._findings import NEEDLES  # noqa: E402 (path above)

SESSION = "session_2026-12-06_11-00-00_000000_1"
FILES = ("raylet.out", "gcs_server.out", "raylet.err", "worker-%s-ffffffff-4242.out" % ("ab" * 28),
         "worker-%s-ffffffff-4243.err" % ("cd" * 28))
NOISE = (b"[2026-12-06 11:29:47,157 I 31127 31138] (raylet) node_manager.cc:1409: Disconnecting worker, graceful=true, "
         b"disconnect_type=1, has_creation_task_exception=false worker_id=%056d job_id=01000000\n",
         b"[2026-12-06 11:29:47,160 I 31127 31127] (raylet) worker_pool.cc:733: Job 01000000 already started in worker "
         b"pool. seq=%d\n",
         b"2026-12-06 11:29:48,001\tINFO log_monitor.py:312 -- Log monitor now watching file %d of the session.\n",
         b"step %d loss=0.0131 lr=3e-4 tokens/s=18211.4\n")
FAILURES = (b"[2026-12-06 11:32:32,200 W 6033 6033] (gcs_server) gcs_worker_manager.cc:58: Reporting worker exit, "
            b"worker id = %056d, node id = 051c, address = 127.0.0.1, exit_type = SYSTEM_ERROR, exit_detail = Worker "
            b"unexpectedly exits with a connection error code 2. End of file.\n",
            b"OSError: [Errno 28] No space left on device: '/tmp/ray/spill/%d'\n")
CLI = "import sys; from ansible_collections.rayops.disk.plugins.module_utils._cli import main; sys.exit(main(sys.argv[1:]))"


def make_logs(root: str, size: int) -> list:
    """Write ``size`` bytes of Ray-like logs under ``root``; the files."""
    logs = os.path.join(root, SESSION, "logs")
    os.makedirs(logs)
    paths = [os.path.join(logs, name) for name in FILES]
    per_file = size // len(paths)
    for path in paths:
        with open(path, "wb") as handle:
            written, line = 0, 0
            while written < per_file:
                block = []
                for _line in range(20000):
                    line += 1
                    block.append(NOISE[line % len(NOISE)] % line)
                block.append(FAILURES[line % len(FAILURES)] % line)
                data = b"".join(block)
                handle.write(data)
                written += len(data)
    return paths


def timed(argv: list, env: dict = None) -> tuple:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, check=False)
    return time.perf_counter() - start, proc


def run(size_mib: int, rounds: int) -> dict:
    root = tempfile.mkdtemp(prefix="rayops-bench-diag-", dir="/var/tmp")
    try:
        paths = make_logs(root, size_mib << 20)
        size = sum(os.path.getsize(path) for path in paths)
        pattern = "|".join(re.escape(needle.decode()) for needle in NEEDLES)
        for path in paths:  # warm the page cache for both
            with open(path, "rb") as handle:
                while handle.read(1 << 24):
                    pass
        config = os.path.join(root, "config.json")
        with open(config, "w") as handle:
            handle.write('{"ray_temp_dir": "%s", "containers": false}' % root)
        env = dict(os.environ, PYTHONPATH=COLLECTIONS)
        probe = CLI.replace("sys.exit(main(sys.argv[1:]))", "code = main(sys.argv[1:]); print([l for l in open("
                            "'/proc/self/status') if l.startswith('VmHWM')][0].split()[1], file=sys.stderr); "
                            "sys.exit(code)")
        greps, ours, rss, found = [], [], 0, None
        for _round in range(rounds):
            seconds, proc = timed(["grep", "-c", "-E", pattern] + paths)
            greps.append(seconds)
            grep_count = sum(int(line.rsplit(b":", 1)[1]) for line in proc.stdout.splitlines())
            seconds, proc = timed([sys.executable, "-c", probe, "--config", config, "--no-metrics", "--json",
                                   "diagnose", "--since", "24"], env=env)
            ours.append(seconds)
            rss = max(rss, int(proc.stderr.decode().strip().splitlines()[-1]))
            found = proc.stdout.count(b'"kind"')
        return {"mib": size / (1 << 20), "grep": min(greps), "grep_lines": grep_count, "ours": min(ours),
                "rss_kib": rss, "findings": found}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="*", default=[100, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = [run(mib, args.rounds) for mib in args.mib]
    print("| logs | grep -c -E s (lines) | diagnose s | ratio | diagnose peak RSS |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| %.0f MiB | %.2f (%d) | %.2f | %.2fx | %.1f MiB |" % (
            row["mib"], row["grep"], row["grep_lines"], row["ours"], row["ours"] / row["grep"], row["rss_kib"] / 1024))


if __name__ == "__main__":
    main()
