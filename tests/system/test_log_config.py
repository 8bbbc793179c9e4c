# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Ray, started with the environment file ray_log_config wrote, rotates its logs at that size."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

from ansible_collections.rayops.disk.tests.system.conftest import ansible_module

CHATTY_DRIVER = r"""
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote
def chatty():
    for index in range(36000):
        print("%06d " % index + "x" * 93, flush=index % 500 == 0)  # 3.6 MB of stdout
    return "done"

print(ray.get(chatty.remote()))
"""


def test_ray_rotates_worker_logs_at_the_size_written(ray_head, tmp_path):
    env_file = tmp_path / "ray.env"
    result = ansible_module("rayops.disk.ray_log_config", {"path": str(env_file), "rotation_max_bytes": "1MB",
                                                           "rotation_backup_count": 2, "backend_log_level": "40"})
    assert result["changed"] is True
    for line in env_file.read_text().splitlines():  # as a Compose .env or an EnvironmentFile= would
        key, value = line.split("=", 1)
        ray_head.env[key] = value
    assert ray_head.env["RAY_BACKEND_LOG_LEVEL"] == "error"
    ray_head.start()
    run = subprocess.run([sys.executable, "-c", CHATTY_DRIVER, "127.0.0.1:%d" % ray_head.port], env=ray_head.env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.stdout.strip().endswith("done"), run.stderr
    session = glob.glob(os.path.join(ray_head.temp_dir, "session_2*"))[0]
    worker_logs = glob.glob(os.path.join(session, "logs", "worker-*.out*"))
    rotated = [path for path in worker_logs if path.endswith(".out.1")]
    assert rotated, sorted(worker_logs)
    assert max(os.path.getsize(path) for path in worker_logs) <= 1024 * 1024
    assert not [path for path in worker_logs if path.endswith(".out.3")]  # two backups kept, no more
