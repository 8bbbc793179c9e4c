# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: a deploy that changes nothing (playbooks/deploy_ray_cleanup.yml run again), to 1 and to 3 SSH hosts.

Not a test: it prints seconds, never asserts.  The hosts are the system tests' SSH fleet (tests/system/sshfleet.py:
containers of rayops-test/sshd:bookworm, which scripts/setup.sh builds, reached over real SSH at their bridge
addresses, as root with a key and pinned host keys), all of them idle nodes.  The role is deployed once for real,
then each round times one whole ``ansible-playbook`` run against 1 host (``--limit``) and against all 3; a round
that changed anything is flagged.  The issue's target: 8 s per host at most.

    .venv/bin/python benchmarks/deploy_noop.py              # 3 rounds
    .venv/bin/python benchmarks/deploy_noop.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import docker

from ray_tree import COLLECTIONS, REPO

sys.path.insert(0, COLLECTIONS)

from ansible_collections.rayops.disk.tests.system.sshfleet import SSHD_IMAGE, SSHFleet  # noqa: E402 (path above)

PLAYBOOK = "playbooks/deploy_ray_cleanup.yml"
TARGET = 8.0
"""Seconds per host the issue asks of a no-op deploy."""


def deploy(inventory: str, limit: str) -> tuple:
    """Wall seconds of one ``ansible-playbook`` run, and the changed count of each host in its recap."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory, "--limit", limit,
            PLAYBOOK]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("deploy to %s failed (%d):\n%s%s" % (limit, proc.returncode, proc.stdout[-5000:],
                                                              proc.stderr[-2000:]))
    changed = {m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)}
    return elapsed, changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    client = docker.from_env()
    fleet = SSHFleet(client, set(), nodes=[("node-%d" % index, SSHD_IMAGE) for index in (1, 2, 3)], dead=False)
    try:
        fleet.start()
        inventory = fleet.inventory()
        every = ",".join(fleet.hosts)
        first, _changed = deploy(inventory, every)
        print("first deploy to %d hosts (for real): %.1f s" % (len(fleet.hosts), first), flush=True)
        times = {1: [], 3: []}
        changed_rounds = {1: 0, 3: 0}
        for _round in range(args.rounds):
            for hosts, limit in ((1, fleet.hosts[0]), (3, every)):
                elapsed, changed = deploy(inventory, limit)
                times[hosts].append(elapsed)
                changed_rounds[hosts] += any(changed.values())
    finally:
        fleet.close()
        client.close()
    print()
    print("| hosts | no-op deploy, median s (%d rounds) | per host s | target per host s | rounds that changed "
          "something |" % args.rounds)
    print("|---|---|---|---|---|")
    for hosts, runs in times.items():
        median = statistics.median(runs)
        print("| %d | %.1f | %.1f | %.0f | %d |" % (hosts, median, median / hosts, TARGET, changed_rounds[hosts]))


if __name__ == "__main__":
    main()
