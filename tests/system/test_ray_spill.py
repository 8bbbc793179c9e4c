# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A custom spill directory on real Ray 2.40, 2.53 and the newest (127.0.0.1 only, usage stats off).

Ray starts with ``--system-config`` naming a spill directory outside its
sessions, a driver spills into it, the head is killed while the driver holds
the objects (their files stay, as after a crash) and Ray starts again: the
old node's spill dir is stale and belongs to the old session, the new one is
live and belongs to the live session; ray_worker_cleanup removes the stale one
and leaves the live one and the live session as they were.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import time

from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import flag_value
from ansible_collections.rayops.disk.plugins.module_utils._ray_spill import decode_config_list, spill_paths
from ansible_collections.rayops.disk.tests.system.conftest import SPILL_DRIVER, ansible_module, du_bytes


OLD = time.time() - 7200


def digest(path):
    """Names, sizes, mtimes and contents below ``path``: proof that nothing changed."""
    found = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(path)):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            found.update(("%s %d %d\n" % (full, st.st_size, st.st_mtime_ns)).encode())
            with open(full, "rb") as handle:
                found.update(hashlib.sha256(handle.read()).digest())
    return found.hexdigest()


def spill(head, spill_dir, *skip):
    """A driver that spilled into ``spill_dir`` and holds the objects; the new node dir."""
    driver = head.driver(SPILL_DRIVER, os.path.join(spill_dir, "ray_spilled_objects_*"), *skip)
    assert driver.stdout.readline().strip() == "SPILLED"
    fresh = [p for p in glob.glob(os.path.join(spill_dir, "ray_spilled_objects_*")) if os.path.basename(p) not in skip]
    assert len(fresh) == 1, fresh
    return driver, fresh[0]


def test_custom_spill_dir_is_spilled_objects_and_a_dead_nodes_dir_is_cleaned(any_ray_head):
    head = any_ray_head
    spill_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    empty_tmp = tempfile.mkdtemp(prefix="rayops-empty-tmp-")
    audit_fd, audit = tempfile.mkstemp(prefix="rayops-audit-", suffix=".jsonl")
    os.close(audit_fd)
    config = json.dumps({"object_spilling_config": json.dumps(
        {"type": "filesystem", "params": {"directory_path": spill_dir}})})  # accepted by ray start on all three
    drivers = []
    try:
        head.start("--system-config", config)
        driver, old_dir = spill(head, spill_dir)
        drivers.append(driver)
        (old_session,) = glob.glob(os.path.join(head.temp_dir, "session_2*"))
        head.stop()  # killed while the driver holds the refs: the spilled files stay, as after a crash
        assert os.listdir(old_dir)

        head.start("--system-config", config)
        driver, live_dir = spill(head, spill_dir, os.path.basename(old_dir))
        drivers.append(driver)
        (live_session,) = set(glob.glob(os.path.join(head.temp_dir, "session_2*"))) - {old_session}
        live_bytes = du_bytes(live_dir)  # the driver waited until Ray stopped spilling
        args = {"tmp_dir": empty_tmp, "ray_temp_dir": head.temp_dir}
        usage = ansible_module("rayops.disk.ray_tmp_usage", dict(args, max_age_hours=0, min_tmp_size="0"))

        assert usage.get("failed") is not True, usage
        ours = {d["path"]: d for d in usage["spill_dirs"] if d["root"] == spill_dir}
        assert sorted(ours) == sorted([old_dir, live_dir])
        live, old = ours[live_dir], ours[old_dir]
        assert (live["status"], live["session_path"], live["session_from"]) == ("live", live_session, "raylet")
        assert (old["status"], old["session_path"], old["session_from"]) == ("stale", old_session, "session_files")
        assert live["source"] in ("process:gcs_server", "process:raylet")  # raylet: 2.53+ (--fallback_directory)
        assert live["bytes"] == live_bytes >= 60 * 1024 * 1024, (live["bytes"], live_bytes, du_bytes(live_dir))
        assert old["bytes"] == du_bytes(old_dir)
        sessions = {s["path"]: s for s in usage["sessions"]}
        assert sessions[live_session]["live"] and sessions[live_session]["spilled_bytes"] == live_bytes
        assert sessions[old_session]["spilled_bytes"] == old["bytes"]
        assert usage["categories"]["spilled_objects"]["bytes"] >= live_bytes + old["bytes"]
        assert usage["categories"]["other"]["bytes"] < 1024 * 1024  # none of the spill is "other"
        stale_spill = [s for s in usage["suggestions"] if s["action"] == "remove_stale_spill"]
        assert old_dir in stale_spill[0]["paths"] and live_dir not in stale_spill[0]["paths"]

        for dirpath, dirnames, filenames in os.walk(old_dir):
            for name in dirnames + filenames:
                os.utime(os.path.join(dirpath, name), (OLD, OLD))
        os.utime(old_dir, (OLD, OLD))
        before = (digest(live_dir), digest(old_dir))
        live_files = {os.path.join(d, f) for d, _dirs, files in os.walk(live_session) for f in files}
        # force: other Ray heads may run on this machine; every safety rule still applies
        args.update(min_tmp_size="0", max_age_hours=1, age_by=["mtime"], sample_seconds=0.5, force=True,
                    audit_log=audit, clean_stale_sessions=False)
        check = ansible_module("rayops.disk.ray_worker_cleanup", args, check=True)
        assert (digest(live_dir), digest(old_dir)) == before  # check mode changed nothing
        result = ansible_module("rayops.disk.ray_worker_cleanup", args)

        host = result["targets"][0]
        assert host["status"] == "cleaned", host
        assert not os.path.exists(old_dir)
        assert digest(live_dir) == before[0]  # the live node's spill, byte for byte
        assert live_files <= {os.path.join(d, f) for d, _dirs, files in os.walk(live_session) for f in files}
        assert not [p for p in host["removed_paths"] if p.startswith((live_dir, live_session))]
        assert old_dir in host["removed_paths"] and old_dir in check["targets"][0]["removed_paths"]
        assert host["freed_bytes"] >= old["bytes"] - 4096
        with open(audit) as handle:
            lines = [json.loads(line) for line in handle]
        assert [line["path"] for line in lines if line["path"].startswith(spill_dir)] == [old_dir]
    finally:
        for driver in drivers:
            driver.kill()
            driver.wait()
        head.stop()
        shutil.rmtree(spill_dir, ignore_errors=True)
        shutil.rmtree(empty_tmp, ignore_errors=True)
        os.remove(audit)


def test_each_version_names_its_spill_dir_on_the_command_line(any_ray_head):
    """2.40: only gcs_server's --config_list (env RAY_object_spilling_config; no --object-spilling-directory).

    2.53+: ``ray start --object-spilling-directory``, in gcs_server's --config_list and the raylet's
    --fallback_directory.
    """
    head = any_ray_head
    spill_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    empty_tmp = tempfile.mkdtemp(prefix="rayops-empty-tmp-")
    old_ray = head.version == "2.40.0"
    try:
        if old_ray:
            head.env["RAY_object_spilling_config"] = json.dumps(
                {"type": "filesystem", "params": {"directory_path": [spill_dir]}})  # a list works too
            head.start()
        else:
            head.start("--object-spilling-directory=%s" % spill_dir)
        lines = dict(head.named("gcs_server", "raylet").values())
        assert spill_paths(decode_config_list(flag_value(lines["gcs_server"], "--config_list"))) == [spill_dir]
        assert flag_value(lines["raylet"], "--fallback_directory") == (None if old_ray else spill_dir)
        node = flag_value(lines["raylet"], "--node_id")

        usage = ansible_module("rayops.disk.ray_tmp_usage", {"tmp_dir": empty_tmp, "ray_temp_dir": head.temp_dir})
        root = [r for r in usage["spill_roots"] if r["path"] == spill_dir]
        assert root and root[0]["source"] == ("process:gcs_server" if old_ray else "process:raylet")
        assert (root[0]["status"], root[0]["node_dirs"]) == ("measured", 0)  # a node dir appears on its first spill
        assert node and [d for d in usage["spill_dirs"] if d["root"] == spill_dir] == []
    finally:
        head.stop()
        shutil.rmtree(spill_dir, ignore_errors=True)
        shutil.rmtree(empty_tmp, ignore_errors=True)
