# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Observe once (issue 18): how often a cleanup lists each directory, and how often a guard step reads each
filesystem, counted by ``strace`` on the real CLI.  Prints figures; asserts nothing (a benchmark, not a test).

- ``cleanup --force`` (this machine may be busy) with metrics on a tree of litter and stale sessions with
  ``logs/old``: a directory listing ends with a
  ``getdents64`` that returns 0, so those calls per directory are the walks per directory (measure, remove: 2).
- ``watch --once`` on a 64 MiB tmpfs at 93 %: ``statfs``/``fstatfs`` calls in a step that reclaims (the look before,
  one reading after each tier that took something), and connections to Docker (none: containers off).

Run as root (it mounts a tmpfs): ``.venv/bin/python benchmarks/observe_once.py [--dirs 400]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".build", "collections")
CLI = "import sys; from ansible_collections.rayops.disk.plugins.module_utils._cli import main; sys.exit(main(sys.argv[1:]))"
STALE = "session_2020-01-01_00-00-00_000001_%d"
OLD = time.time() - 48 * 3600


def tree(tmp: str, dirs: int) -> int:
    """Litter dirs, stale sessions with logs/old, all two days old; the number of directories (``tmp`` too)."""
    for index in range(dirs // 5):
        for path in (os.path.join(tmp, "ray_tmp_%d" % index, "a"),
                     os.path.join(tmp, "ray", STALE % index, "logs", "old")):
            os.makedirs(path)
            with open(os.path.join(path, "f"), "wb") as handle:
                handle.write(b"x" * 4096)
    made = 0
    for dirpath, dirnames, filenames in os.walk(tmp):
        made += 1
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (OLD, OLD))
    return made


def traced(config: str, argv: list, calls: str) -> list:
    """The strace lines of ``ray-maintenance --config config argv`` (``-f``: the forked workers too; ``-y``: each fd
    with its path, so only the tree's directories count, not ``/proc``'s)."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        env = dict(os.environ, PYTHONPATH=COLLECTIONS)
        subprocess.run(["strace", "-f", "-qq", "-y", "-e", "trace=" + calls, "-o", out.name, sys.executable, "-c", CLI,
                        "--config", config] + argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, timeout=600)
        return out.read().splitlines()


def config_file(where: str, tmp: str, **extra) -> str:
    path = os.path.join(where, "config.json")
    metrics = os.path.join(where, "metrics")
    os.makedirs(metrics, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(dict({"tmp_dir": tmp, "containers": False, "min_tmp_size": 0, "max_age_hours": 1,
                        "age_by": ["mtime"], "lock_file": os.path.join(where, "lock"), "sample_seconds": 0.2,
                        "scan_workers": 1, "metrics_dir": metrics, "force": True}, **extra), handle)
    return path


def cleanup_walks(dirs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rayops-bench-", dir="/var/tmp") as where:
        tmp = os.path.join(where, "tmp")
        os.makedirs(tmp)
        made = tree(tmp, dirs)
        lines = traced(config_file(where, tmp, ray_temp_dir=os.path.join(tmp, "ray")), ["cleanup", "--quiet"],
                       "getdents64")
        ends = sum(1 for line in lines if re.search(r"getdents64\(\d+<%s[/>].*\) += 0$" % re.escape(tmp), line))
        left = sum(len(d) + len(f) for _p, d, f in os.walk(tmp))
        print("cleanup with metrics: %d directories, %d listings (getdents64 = 0): %.2f per directory; %d entries "
              "left (the Ray root stays)" % (made, ends, ends / float(made), left))


def guard_readings() -> None:
    with tempfile.TemporaryDirectory(prefix="rayops-bench-", dir="/var/tmp") as where:
        tmp = os.path.join(where, "tmp")
        os.makedirs(tmp)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", tmp], check=True)
        try:
            for index in range(4):
                path = os.path.join(tmp, "ray_tmp_%d" % index)
                os.makedirs(path)
                with open(os.path.join(path, "pkg"), "wb") as handle:
                    handle.write(b"x" * (4 << 20))
                os.utime(os.path.join(path, "pkg"), (OLD, OLD))
                os.utime(path, (OLD, OLD))
            with open(os.path.join(tmp, "data"), "wb") as handle:
                handle.write(b"d" * (int(64 * 0.93) - 16 << 20))
            lines = traced(config_file(where, tmp, watch_interval_seconds=1), ["watch", "--once", "--quiet"],
                           "statfs,fstatfs,connect")
            reads = sum(1 for line in lines if re.search(r"\bf?statfs\(", line))
            docker = sum(1 for line in lines if "connect(" in line and "docker" in line)
            print("guard step that reclaims (one tier): %d statfs/fstatfs calls, %d Docker connections; used %.1f%% "
                  "after. Per watched filesystem: the look, the report of the measuring walk, the reading after the "
                  "tier; and 2 for the result's used %% of tmp_dir before and after (a Ray running on this machine "
                  "adds its temp root's filesystem)" % (reads, docker, used(tmp)))
        finally:
            subprocess.run(["umount", "-l", tmp], check=False)


def used(path: str) -> float:
    st = os.statvfs(path)
    taken = st.f_blocks - st.f_bfree
    return 100.0 * taken / (taken + st.f_bavail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--dirs", type=int, default=400, help="directories in the cleanup's tree")
    args = parser.parse_args()
    cleanup_walks(args.dirs)
    guard_readings()


if __name__ == "__main__":
    main()
