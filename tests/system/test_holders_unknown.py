# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""When in doubt, keep: a cleanup that cannot see what a live process holds open removes nothing (issue 18).

Root without ``CAP_SYS_PTRACE`` (a supervisor that drops it, a hardened ``/proc``) may not read another user's
``/proc/<pid>/fd``.  Before, such a process counted as holding nothing and the file it had open in old litter was
removed under it; now the target is an error that says why, and nothing of it goes.  The CLI runs as root with
``CAP_SYS_PTRACE`` dropped from its bounding set (``setpriv``), a real user's process holds the file.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import kill_tree
from ansible_collections.rayops.disk.tests.unit.conftest import SYSTEM_PYTHON, aged, system_users, write

CLI = "import sys; from ansible_collections.rayops.disk.plugins.module_utils._cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def tmp():
    """A tmp dir a user other than root can reach (pytest's own is root's 0700)."""
    base = tempfile.mkdtemp(prefix="rayops-hld-", dir="/var/tmp")
    os.chmod(base, 0o755)
    yield pathlib.Path(base) / "tmp"
    shutil.rmtree(base)


def test_a_file_held_by_a_process_root_cannot_see_into_stays(tmp, tmp_path):
    held = write(str(tmp / "ray_tmp_1" / "model.ckpt"), 1 << 20)
    other = write(str(tmp / "ray_tmp_2" / "pkg.zip"), 1 << 20)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"tmp_dir": str(tmp), "containers": False, "min_tmp_size": 0, "max_age_hours": 1,
                                  "age_by": ["mtime"], "lock_file": str(tmp_path / "lock"), "force": True,
                                  "sample_seconds": 0.2, "scan_workers": 1}))
    with system_users({"holder": "rayops-t-hld%d" % os.getpid()}) as users:
        shutil.chown(held, users["holder"], users["holder"])
        aged(str(tmp))
        holder = subprocess.Popen(["setpriv", "--reuid=%s" % users["holder"], "--regid=%s" % users["holder"],
                                   "--clear-groups", SYSTEM_PYTHON, "-c",
                                   "import sys, time; f = open(sys.argv[1]); print('HOLDING', flush=True); "
                                   "time.sleep(600)", held], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "HOLDING"
            argv = [sys.executable, "-c", CLI, "--config", str(config), "--json", "cleanup"]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
            blind = subprocess.run(["setpriv", "--bounding-set", "-sys_ptrace", "--"] + argv, env=env,
                                   capture_output=True, text=True, timeout=120, check=False)
            result = json.loads(blind.stdout)
            host = result["targets"][0]
            assert blind.returncode == 1 and host["status"] == "error", blind.stdout + blind.stderr
            assert host["reason"].startswith("cannot see what process ")  # the holder, or any user's process
            assert os.path.exists(held) and os.path.exists(other)  # nothing went from a target it cannot see into
            # with its capabilities (as root runs it, and the role's unit), the file held open stays, the rest goes
            seeing = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
            assert seeing.returncode == 0, seeing.stdout + seeing.stderr
            assert os.path.exists(held) and not os.path.exists(other)
            assert json.loads(seeing.stdout)["targets"][0]["kept_by_reason"].get("open") == 1
        finally:
            kill_tree(holder)
