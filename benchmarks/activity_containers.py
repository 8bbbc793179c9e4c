# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the time to decide busy or idle for 1 container against 20, sampled side by side.

Not a test: it prints the ratio, never asserts.  Needs the local Docker engine
and the rayops-test/busybox image that scripts/setup.sh builds.

    .venv/bin/python benchmarks/activity_containers.py
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

import docker
import psutil

from ray_tree import COLLECTIONS

sys.path.insert(0, COLLECTIONS)

from ansible_collections.rayops.disk.plugins.module_utils._activity import (  # noqa: E402 (path above)
    ContainerSample,
    TitleRules,
    sample_all,
)
from ansible_collections.rayops.disk.plugins.module_utils._containers import container_target  # noqa: E402


def decide(containers: list) -> float:
    """Seconds to sample every container once over a 1 s window."""
    samples = {c.name: ContainerSample(psutil, container_target(c), TitleRules()) for c in containers}
    start = time.perf_counter()
    results = sample_all(samples, 1.0, 5.0)
    elapsed = time.perf_counter() - start
    assert all(r.get("busy") is not None for r in results.values()), results
    return elapsed


def main() -> None:
    client = docker.from_env()
    tag = "rayops-bench-%s" % uuid.uuid4().hex[:6]
    containers = [client.containers.run("rayops-test/busybox:latest", name="%s-%02d" % (tag, index), init=True,
                                        detach=True) for index in range(20)]
    try:
        for container in containers:
            container.reload()
        one = [decide(containers[:1]) for _round in range(3)]
        twenty = [decide(containers) for _round in range(3)]
    finally:
        for container in containers:
            container.remove(force=True)
    print("| containers | median s (1 s window, each process read from /proc) | ratio to one |")
    print("|---|---|---|")
    print("| 1 | %.2f | 1.00 |" % statistics.median(one))
    print("| 20 | %.2f | %.2f |" % (statistics.median(twenty), statistics.median(twenty) / statistics.median(one)))


if __name__ == "__main__":
    main()
