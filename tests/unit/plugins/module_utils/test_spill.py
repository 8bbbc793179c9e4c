# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Spill directories outside Ray's sessions: found, attributed, measured, and cleaned only when stale.

A sandbox node stands in for a Ray node: stand-in ``gcs_server`` and ``raylet``
processes carry the command lines real Ray gives them (``--config_list``,
``--fallback_directory``, ``--node_id``; see docs/ray-versions.md and
tests/system/test_ray_spill.py for real Ray), and the modules run through main().
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import tempfile
import uuid

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _cli, _usage
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import RayProcess
from ansible_collections.rayops.disk.plugins.module_utils._ray_spill import (
    decode_config_list,
    filesystem_type,
    named_spill_roots,
    session_node_ids,
    shared_filesystem,
    spill_paths,
)
from ansible_collections.rayops.disk.plugins.modules import ray_tmp_usage, ray_worker_cleanup
from ansible_collections.rayops.disk.tests.unit.conftest import aged, du_bytes, tree_digest, write
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.test_ray_version import opens_of
from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import fail_module

LIVE = "session_2026-11-22_10-00-00_000002_22"
STALE = "session_2026-11-20_10-00-00_000001_11"
STALE_260 = "session_2026-11-21_10-00-00_000003_33"
# Node ids unique to this test process: a raylet another test runs at the same time (ansible-test runs tests in
# parallel) claims its node id machine-wide, and a dead node's dir whose id a live raylet claims is kept.
LIVE_NODE, DEAD_NODE, DEAD_NODE_260, LOST_NODE = (uuid.uuid4().hex + uuid.uuid4().hex[:24] for _node in range(4))


def spill_name(node):
    return "ray_spilled_objects_%s" % node


def config_list(directory_path, **extra):
    """gcs_server's ``--config_list`` as Ray writes it: base64 of JSON whose object_spilling_config is a JSON string."""
    spilling = json.dumps({"type": "filesystem", "params": {"directory_path": directory_path}})
    return base64.b64encode(json.dumps(dict({"object_spilling_config": spilling}, **extra)).encode()).decode()


@pytest.fixture
def spill_node(sandbox, tmp_path):
    """A node whose Ray spills to ``tmp_path/spill``: a live node, two dead ones with sessions, one without.

    Everything is 3 hours old.  Returns ``(tmp, spill)``.
    """
    tmp, spill = tmp_path / "tmp", tmp_path / "spill"
    write(str(tmp / "ray" / LIVE / "logs" / "raylet.out"), 4096)
    write(str(tmp / "ray" / STALE / "logs" / "raylet.out"), 4096)
    with open(str(tmp / "ray" / STALE / "logs" / "debug_state.txt"), "w") as handle:  # as every Ray version writes it
        handle.write("NodeManager:\nNode ID: %s\nNode name: 127.0.0.1\n" % DEAD_NODE)
    write(str(tmp / "ray" / STALE_260 / ("gcs_server_port_%s" % DEAD_NODE_260)), 5)  # Ray 2.60's port files
    write(str(spill / spill_name(LIVE_NODE) / "live-obj-1"), 65536)
    write(str(spill / spill_name(DEAD_NODE) / "dead-obj-1"), 81920)
    write(str(spill / spill_name(DEAD_NODE_260) / "dead-obj-2"), 16384)
    write(str(spill / spill_name(LOST_NODE) / "lost-obj"), 8192)
    write(str(spill / "not-a-node-dir" / "x"), 4096)
    aged(str(tmp_path))
    return tmp, spill


def start_ray(sandbox, tmp, spill, fallback=True, gcs=True):
    """Stand-ins for a head node's gcs_server (2.40+) and raylet (``--fallback_directory`` from 2.53 on)."""
    if gcs:
        sandbox.spawn("gcs_server", "--log_dir=%s" % (tmp / "ray" / LIVE / "logs"),
                      "--config_list=%s" % config_list(str(spill)))
    args = ["--node_id=%s" % LIVE_NODE, "--session_dir=%s" % (tmp / "ray" / LIVE), "--temp_dir=%s" % (tmp / "ray")]
    if fallback:
        args.append("--fallback_directory=%s" % spill)
    sandbox.spawn("raylet", *args)


def usage_args(tmp, **extra):
    return dict({"tmp_dir": str(tmp), "scan_workers": 1, "max_age_hours": 1, "min_tmp_size": "0", "age_by": ["mtime"]},
                **extra)


def cleanup_args(tmp, tmp_path, **extra):
    return dict({"tmp_dir": str(tmp), "min_tmp_size": "0", "max_age_hours": 1, "age_by": ["mtime"],
                 "lock_file": str(tmp_path / "lock"), "sample_seconds": 0.2,
                 "audit_log": str(tmp_path / "audit.jsonl")}, **extra)


# --- what Ray's command lines say ---------------------------------------------------------------------------------

def test_config_list_decodes_as_ray_writes_it_in_every_form():
    assert spill_paths(decode_config_list(config_list("/mnt/spill"))) == ["/mnt/spill"]
    assert spill_paths(decode_config_list(config_list(["/mnt/a", "/mnt/b"]))) == ["/mnt/a", "/mnt/b"]
    as_object = {"object_spilling_config": {"type": "filesystem", "params": {"directory_path": "/x"}}}
    assert spill_paths(as_object) == ["/x"]
    assert spill_paths({"object_spilling_directory": "/y"}) == ["/y"]
    s3 = json.dumps({"type": "smart_open", "params": {"uri": "s3://bucket/spill"}})
    assert spill_paths({"object_spilling_config": s3}) == []
    for junk in ("", "not base64!", base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b"\xff\xfe").decode()):
        assert decode_config_list(junk) == {}
    assert spill_paths({"object_spilling_config": "{not json"}) == []
    assert spill_paths({"object_spilling_config": json.dumps({"type": "filesystem", "params": {
        "directory_path": [1, None, "/ok"]}})}) == ["/ok"]


def test_only_absolute_paths_other_than_slash_are_spill_roots():
    gcs = RayProcess(1, "gcs_server", ("gcs_server", "--config_list=%s" % config_list(["rel", "/", "//", "/a/../b/"])))
    assert named_spill_roots(gcs) == ["/b"]
    raylet = RayProcess(2, "raylet", ("raylet", "--fallback_directory", "/mnt/spill/"))
    assert named_spill_roots(raylet) == ["/mnt/spill"]
    assert named_spill_roots(RayProcess(3, "raylet", ("raylet",))) == []  # 2.40: no --fallback_directory


def test_filesystem_types_other_machines_may_mount_are_shared(tmp_path):
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        local = filesystem_type(fd, "/proc/self/mountinfo")
    finally:
        os.close(fd)
    assert local and not shared_filesystem(local)
    assert shared_filesystem("nfs4") and shared_filesystem("fuse.sshfs") and shared_filesystem(None)
    assert not shared_filesystem("fuse.fuse-overlayfs") and not shared_filesystem("tmpfs")


# --- measuring ------------------------------------------------------------------------------------------------------

def test_custom_spill_dir_counts_as_spilled_objects_of_its_session(sandbox, spill_node, run_module):
    tmp, spill = spill_node
    start_ray(sandbox, tmp, spill)
    report = run_module(ray_tmp_usage.main, usage_args(tmp))

    dirs = {os.path.basename(d["path"]): d for d in report["spill_dirs"]}
    assert sorted(dirs) == sorted(spill_name(n) for n in (LIVE_NODE, DEAD_NODE, DEAD_NODE_260, LOST_NODE))
    live, dead, dead_260, lost = (dirs[spill_name(n)] for n in (LIVE_NODE, DEAD_NODE, DEAD_NODE_260, LOST_NODE))
    assert (live["status"], live["session"], live["session_from"]) == ("live", LIVE, "raylet")
    assert live["reason"].startswith("raylet pid ") and live["source"] == "process:raylet"  # both name it
    assert (dead["status"], dead["session"], dead["session_from"]) == ("stale", STALE, "session_files")
    assert dead["reason"] == "no raylet on this machine runs node %s; its session %s is not live" % (DEAD_NODE, STALE)
    assert (dead_260["status"], dead_260["session"]) == ("stale", STALE_260)
    assert (lost["status"], lost["session"], lost["session_path"]) == ("stale", None, None)
    for entry in dirs.values():
        assert entry["bytes"] == du_bytes(entry["path"]) and entry["root"] == str(spill)

    sessions = {s["name"]: s for s in report["sessions"]}
    assert sessions[LIVE]["live"] and sessions[LIVE]["spilled_bytes"] == du_bytes(live["path"])
    assert sessions[STALE]["spilled_bytes"] == du_bytes(dead["path"])
    assert sessions[STALE]["bytes"] == du_bytes(str(tmp / "ray" / STALE)) + du_bytes(dead["path"])
    assert report["categories"]["spilled_objects"]["bytes"] == sum(du_bytes(d["path"]) for d in dirs.values())
    assert report["categories"]["other"]["bytes"] < 65536  # none of it is "other"
    assert report["tmp_bytes"] == du_bytes(str(tmp))  # the spill dir is outside tmp_dir

    roots = {r["path"]: r for r in report["spill_roots"]}
    assert roots[str(spill)]["status"] == "measured" and roots[str(spill)]["node_dirs"] == 4
    actions = {s["action"]: s for s in report["suggestions"]}
    assert sorted(actions["remove_stale_spill"]["paths"]) == sorted([dead["path"], dead_260["path"], lost["path"]])
    assert actions["remove_stale_spill"]["bytes"] == dead["bytes"] + dead_260["bytes"] + lost["bytes"]
    assert "remove_orphaned_spill" not in actions  # the lost node's dir is a stale spill dir, counted once
    stale_sessions = actions["remove_stale_sessions"]
    assert stale_sessions["bytes"] == sum(sessions[n]["bytes"] for n in (STALE, STALE_260)) - dead["bytes"] \
        - dead_260["bytes"]


def test_a_253_worker_raylet_names_the_spill_dir_with_fallback_directory(sandbox, spill_node, run_module):
    tmp, spill = spill_node
    start_ray(sandbox, tmp, spill, gcs=False)  # a worker node of 2.53+: no gcs_server here
    report = run_module(ray_tmp_usage.main, usage_args(tmp))
    assert [(r["path"], r["source"]) for r in report["spill_roots"]] == [(str(spill), "process:raylet")]
    assert len(report["spill_dirs"]) == 4


def test_the_option_finds_spill_dirs_where_nothing_runs(sandbox, spill_node, run_module, tmp_path):
    tmp, spill = spill_node
    report = run_module(ray_tmp_usage.main, usage_args(tmp))
    assert report["spill_dirs"] == [] and report["categories"]["spilled_objects"]["bytes"] == 0

    report = run_module(ray_tmp_usage.main, usage_args(tmp, spill_dirs=[str(spill) + "/"]))
    assert {d["status"] for d in report["spill_dirs"]} == {"stale"}
    assert [(r["path"], r["source"]) for r in report["spill_roots"]] == [(str(spill), "option")]
    assert report["categories"]["spilled_objects"]["bytes"] == sum(d["bytes"] for d in report["spill_dirs"])
    result = run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path, spill_dirs=[str(spill)]))
    assert sorted(os.listdir(str(spill))) == ["not-a-node-dir"] and result["changed"] is True


def test_the_default_spill_dir_in_the_session_is_counted_once(sandbox, tmp_path, run_module):
    tmp = tmp_path / "tmp"
    write(str(tmp / "ray" / LIVE / spill_name(LIVE_NODE) / "obj"), 65536)
    sandbox.spawn("gcs_server", "--log_dir=%s" % (tmp / "ray" / LIVE / "logs"),
                  "--config_list=%s" % config_list(str(tmp / "ray" / LIVE)))
    sandbox.spawn("raylet", "--node_id=%s" % LIVE_NODE, "--session_dir=%s" % (tmp / "ray" / LIVE),
                  "--temp_dir=%s" % (tmp / "ray"), "--fallback_directory=%s" % (tmp / "ray" / LIVE))
    os.chmod(str(tmp / "ray"), 0o777)  # as Ray makes it: the session dir is not a safe spill root, nor need it be
    report = run_module(ray_tmp_usage.main, usage_args(tmp))
    assert report["spill_dirs"] == [] and report["errors"] == []
    assert {r["status"] for r in report["spill_roots"]} == {"in_session"}
    live = [s for s in report["sessions"] if s["name"] == LIVE][0]
    assert live["spilled_bytes"] == report["categories"]["spilled_objects"]["bytes"] == du_bytes(
        str(tmp / "ray" / LIVE / spill_name(LIVE_NODE)))


def test_spill_dir_that_is_the_tmp_dir_itself(sandbox, tmp_path, run_module):
    tmp = tmp_path / "tmp"
    write(str(tmp / "ray" / LIVE / "logs" / "raylet.out"), 4096)
    write(str(tmp / spill_name(LIVE_NODE) / "obj"), 65536)
    write(str(tmp / spill_name(DEAD_NODE) / "obj"), 32768)
    aged(str(tmp))
    sandbox.spawn("raylet", "--node_id=%s" % LIVE_NODE, "--session_dir=%s" % (tmp / "ray" / LIVE),
                  "--temp_dir=%s" % (tmp / "ray"), "--fallback_directory=%s" % tmp)
    report = run_module(ray_tmp_usage.main, usage_args(tmp, patterns=["ray_*", "tmp*"]))
    dirs = {d["node_id"]: d for d in report["spill_dirs"]}
    assert (dirs[LIVE_NODE]["status"], dirs[DEAD_NODE]["status"]) == ("live", "stale")
    assert report["categories"]["tmp_patterns"]["bytes"] == 0  # not litter, though ray_* matches
    assert report["categories"]["spilled_objects"]["bytes"] == dirs[LIVE_NODE]["bytes"] + dirs[DEAD_NODE]["bytes"]
    assert report["tmp_bytes"] == du_bytes(str(tmp))

    result = run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path, patterns=["ray_*", "tmp*"]))
    assert not os.path.exists(str(tmp / spill_name(DEAD_NODE)))
    assert os.path.exists(str(tmp / spill_name(LIVE_NODE) / "obj"))  # neither litter nor stale
    assert str(tmp / spill_name(DEAD_NODE)) in result["targets"][0]["removed_paths"]


# --- cleaning -------------------------------------------------------------------------------------------------------

def test_cleanup_removes_only_stale_node_dirs(sandbox, spill_node, run_module, tmp_path):
    tmp, spill = spill_node
    start_ray(sandbox, tmp, spill)
    live_dir = spill / spill_name(LIVE_NODE)
    before, live_before = (tree_digest(str(tmp)), tree_digest(str(spill))), tree_digest(str(live_dir))
    live_session = tree_digest(str(tmp / "ray" / LIVE))

    check = run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path), check_mode=True)
    assert (tree_digest(str(tmp)), tree_digest(str(spill))) == before  # check mode changed nothing
    real = run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path))
    again = run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path))

    host = real["targets"][0]
    gone = [str(spill / spill_name(n)) for n in (DEAD_NODE, DEAD_NODE_260, LOST_NODE)]
    assert host["status"] == "cleaned" and set(gone) <= set(host["removed_paths"])
    assert check["targets"][0]["removed_paths"] == host["removed_paths"]
    assert check["freed_bytes"] == real["freed_bytes"]
    assert again["changed"] is False
    assert not any(os.path.exists(path) for path in gone)
    assert tree_digest(str(live_dir)) == live_before and tree_digest(str(tmp / "ray" / LIVE)) == live_session
    assert os.path.exists(str(spill / "not-a-node-dir" / "x"))  # only ray_spilled_objects_<node id> goes
    assert {"path": str(spill), "host_path": str(spill)} in host["roots"]
    with open(str(tmp_path / "audit.jsonl")) as handle:
        audit = [json.loads(line) for line in handle]
    spilled = [line for line in audit if line["path"].startswith(str(spill))]
    assert sorted(line["path"] for line in spilled) == sorted(gone)
    assert {line["reason"] for line in spilled} == {"stale spill dir of a Ray node that no longer runs here"}


def test_fresh_files_of_a_dead_node_stay_and_clean_stale_spill_false_keeps_all(sandbox, spill_node, run_module,
                                                                               tmp_path):
    tmp, spill = spill_node
    start_ray(sandbox, tmp, spill)
    fresh = write(str(spill / spill_name(LOST_NODE) / "just-spilled"), 4096)
    off = run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path, clean_stale_spill=False))
    assert not any(p.startswith(str(spill)) for p in off["targets"][0]["removed_paths"])
    run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path))
    assert os.path.exists(fresh) and not os.path.exists(str(spill / spill_name(LOST_NODE) / "lost-obj"))


def test_a_node_that_any_process_says_it_runs_is_kept(sandbox, spill_node, run_module, tmp_path):
    tmp, spill = spill_node
    start_ray(sandbox, tmp, spill)
    sandbox.spawn("raylet", "--node_id=%s" % DEAD_NODE, impostor=True)  # not trusted: it may keep, never take
    report = run_module(ray_tmp_usage.main, usage_args(tmp))
    dead = [d for d in report["spill_dirs"] if d["node_id"] == DEAD_NODE][0]
    assert dead["status"] == "live" and dead["reason"].startswith("raylet pid ")
    run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path))
    assert os.path.exists(str(spill / spill_name(DEAD_NODE) / "dead-obj-1"))
    assert not os.path.exists(str(spill / spill_name(LOST_NODE)))


def test_on_a_shared_filesystem_nothing_is_stale(sandbox, spill_node, run_module, tmp_path, monkeypatch):
    tmp, spill = spill_node
    start_ray(sandbox, tmp, spill)
    monkeypatch.setattr(_usage, "filesystem_type", lambda fd, mountinfo: "nfs4")
    report = run_module(ray_tmp_usage.main, usage_args(tmp))
    assert {d["status"] for d in report["spill_dirs"]} == {"live", "unknown"}
    assert "other machines may mount" in [d for d in report["spill_dirs"] if d["status"] == "unknown"][0]["reason"]
    before = tree_digest(str(spill))
    run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path))
    assert tree_digest(str(spill)) == before


# --- hostile trees --------------------------------------------------------------------------------------------------

@pytest.fixture
def victim(tmp_path):
    """A root-only dir holding an old ``ray_spilled_objects_<node id>`` that is not a spill dir of Ray's."""
    root_only = tmp_path / "root-only"
    data = write(str(root_only / "store" / spill_name(LOST_NODE) / "precious"), 65536)
    aged(str(root_only))
    os.chmod(str(root_only), 0o700)
    return root_only / "store", data


def test_a_symlinked_spill_dir_is_refused(sandbox, spill_node, victim, run_module, tmp_path):
    tmp, _spill = spill_node
    store, data = victim
    link = tmp_path / "spill-link"
    os.symlink(str(store), str(link))
    start_ray(sandbox, tmp, link)
    report = run_module(ray_tmp_usage.main, usage_args(tmp))
    refused = [r for r in report["spill_roots"] if r["path"] == str(link)]
    assert refused and {r["status"] for r in refused} == {"refused"}
    assert "is a symlink; give the real directory instead" in refused[0]["reason"]
    assert report["spill_dirs"] == [] and any(e["path"] == str(link) for e in report["errors"])

    opt = run_module(ray_tmp_usage.main, usage_args(tmp, spill_dirs=[str(link)]))
    assert opt["spill_dirs"] == []
    run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path, spill_dirs=[str(link)]))
    assert os.path.exists(data)


def test_a_symlinked_node_dir_is_not_followed(sandbox, spill_node, victim, run_module, tmp_path):
    tmp, spill = spill_node
    store, data = victim
    os.symlink(str(store / spill_name(LOST_NODE)), str(spill / spill_name("e5" * 28)))
    start_ray(sandbox, tmp, spill)
    report = run_module(ray_tmp_usage.main, usage_args(tmp))
    assert spill_name("e5" * 28) not in {os.path.basename(d["path"]) for d in report["spill_dirs"]}
    assert {"path": str(spill / spill_name("e5" * 28)), "reason": "symlink, not followed"} in report["not_measured"]
    run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path))
    assert os.path.exists(data) and os.path.islink(str(spill / spill_name("e5" * 28)))


def test_a_spill_dir_named_by_an_untrusted_process_is_ignored(sandbox, spill_node, victim, run_module, tmp_path):
    tmp, _spill = spill_node
    store, data = victim
    fake = sandbox.spawn("gcs_server", "--config_list=%s" % config_list(str(store)), impostor=True)
    sandbox.spawn("raylet", "--fallback_directory=%s" % store, impostor=True)
    report = run_module(ray_tmp_usage.main, usage_args(tmp))
    assert report["spill_roots"] == [] and report["spill_dirs"] == []
    assert fake.pid in {p["pid"] for p in report["untrusted_processes"]}
    result = run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path))
    assert result["targets"][0]["status"] == "cleaned" and os.path.exists(data)


def test_a_spill_dir_in_another_users_directory_is_refused(local_users, sandbox, spill_node, run_module, tmp_path):
    tmp, _spill = spill_node
    base = tempfile.mkdtemp(prefix="rayops-spill-", dir="/var/tmp")
    try:
        os.chmod(base, 0o755)
        theirs = os.path.join(base, "mallorys")
        os.makedirs(theirs)
        shutil.chown(theirs, local_users["mallory"], local_users["mallory"])
        store = os.path.join(theirs, "spill")  # mallory can swap this for anything: root must not go there
        data = write(os.path.join(store, spill_name(LOST_NODE), "obj"), 8192)
        aged(base)
        start_ray(sandbox, tmp, store)
        report = run_module(ray_tmp_usage.main, usage_args(tmp))
        refused = [r for r in report["spill_roots"] if r["path"] == store]
        assert refused[0]["status"] == "refused" and "owned by uid" in refused[0]["reason"]
        assert report["spill_dirs"] == []
        option = run_module(ray_tmp_usage.main, usage_args(tmp, spill_dirs=[store]))
        refused = [r for r in option["spill_roots"] if r["source"] == "option"][0]
        assert refused["status"] == "refused" and "name a real directory that only root and ray_users can change" in refused["reason"]
        run_module(ray_worker_cleanup.main, cleanup_args(tmp, tmp_path, spill_dirs=[store]))
        assert os.path.exists(data)
    finally:
        shutil.rmtree(base)


# --- bad input ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    (["spill"], "spill_dirs ['spill']: 'spill' is not an absolute path; give the directories Ray spills objects to "
                "(directory_path of object_spilling_config, or --object-spilling-directory), for example /mnt/spill"),
    (["/mnt/ok", "//"], "spill_dirs ['/mnt/ok', '//']: '//' is the root of the filesystem; give the directory Ray "
                        "spills objects to, for example /mnt/spill"),
])
def test_bad_spill_dirs_name_the_value_and_the_fix(run_module, tmp_path, value, message):
    assert fail_module(ray_tmp_usage.main, {"tmp_dir": str(tmp_path), "spill_dirs": value})["msg"] == message
    result = fail_module(ray_worker_cleanup.main, {"tmp_dir": str(tmp_path), "spill_dirs": value,
                                                   "lock_file": str(tmp_path / "lock")})
    assert result["msg"] == message


def test_cli_config_takes_spill_dirs_and_clean_stale_spill(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"spill_dirs": "/mnt/spill"}))
    assert _cli.main(["--config", str(path), "monitor"]) == 3
    assert 'spill_dirs "/mnt/spill" is not a list of strings; for example "spill_dirs": ["/mnt/spill"]' in \
        capsys.readouterr().err
    path.write_text(json.dumps({"spill_dirs": ["/mnt/spill"], "clean_stale_spill": False}))
    config = _cli.load_config(str(path))
    options = _cli.cleanup_options(config)
    assert options.spill_dirs == ("/mnt/spill",) and options.clean_stale_spill is False
    assert _cli.usage_options(config).spill_dirs == ("/mnt/spill",)


def test_monitor_says_how_many_spill_dirs_are_live_and_stale(sandbox, spill_node, tmp_path, capsys):
    tmp, spill = spill_node
    start_ray(sandbox, tmp, spill)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"tmp_dir": str(tmp), "scan_workers": 1, "sample_seconds": 0.1}))
    assert _cli.main(["--config", str(path), "monitor"]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("spill dirs outside the sessions: ")][0]
    assert line.startswith("spill dirs outside the sessions: 1 live (68.0 KiB), 3 stale (")


# --- a session's files are only read when they are regular files ---------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "character device", "symlink"])
def test_a_debug_state_that_is_not_a_regular_file_is_never_opened(tmp_path, kind):
    """Ray's session dirs are 0777: anyone (a container's root: anything) may put a fifo or device there."""
    logs = tmp_path / "ray" / STALE / "logs"
    logs.mkdir(parents=True)
    write(str(tmp_path / "ray" / STALE / ("gcs_server_port_%s" % DEAD_NODE_260)), 5)
    debug_state = logs / "debug_state.txt"
    secret = tmp_path / "secret"
    secret.write_text("NodeManager:\nNode ID: %s\n" % DEAD_NODE)
    if kind == "fifo":
        os.mkfifo(str(debug_state))
    elif kind == "symlink":
        debug_state.symlink_to(secret)
    else:
        os.mknod(str(debug_state), 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    root_fd = os.open(str(tmp_path / "ray"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with opens_of([debug_state if kind != "symlink" else secret]) as opened:
            assert session_node_ids(root_fd, STALE) == {DEAD_NODE_260}
    finally:
        os.close(root_fd)
    assert opened == []
    debug_state.unlink()
    debug_state.write_text("NodeManager:\nNode ID: %s\n" % DEAD_NODE)
    root_fd = os.open(str(tmp_path / "ray"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert session_node_ids(root_fd, STALE) == {DEAD_NODE_260, DEAD_NODE}  # a regular file is read
    finally:
        os.close(root_fd)
