# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""diagnose's reading of logs: streaming from a mark (rotation, truncation, a line being written, a line too long),
signatures on the lines each Ray version writes (copied from real sessions in docs/ray-failure-wording.md), the
state file, and a hostile logs dir (links, fifos, other users' files are never opened).

tests/system/test_diagnose.py induces the failures on real Ray of each version and diagnoses them."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _diagnose, _logscan
from ansible_collections.rayops.disk.plugins.module_utils._findings import KINDS, SIGNATURES, escaped, line_time
from ansible_collections.rayops.disk.plugins.module_utils._logscan import LogReader, Mark
from ansible_collections.rayops.disk.plugins.modules import ray_diagnose
from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import fail_module

# One line per signature as Ray 2.40, 2.53 and 2.60 wrote it (from sessions where each failure was induced).
RAY_LINES = {
    "gcs_server.out": [
        ("worker_died", b"[2026-12-06 11:32:32,200 W 6033 6033] (gcs_server) gcs_worker_manager.cc:58: Reporting worker "
         b"exit, worker id = 6da46f14896e830625d1118c34a21c46061b5c827b94372fb0f89553, node id = 051c5ee6edd987a4502c16b0"
         b"25a2046b61b73d2685fb457fcecea4b0, address = 127.0.0.1, exit_type = SYSTEM_ERROR, exit_detail = Worker "
         b"unexpectedly exits with a connection error code 2. End of file."),
        ("oom_killed", b"[2026-12-06 11:27:13,588 W 27604 27604] (gcs_server) gcs_worker_manager.cc:70: Reporting "
         b"worker exit, worker id = 7753713d08e0ab50b56ac7f0e68003bed5551451d879fe4d47ab1537, node id = 8de7e0cf0666c0"
         b"287339957bb9a4599db393f3ee8cb9f164c2984aae, address = 127.0.0.1, exit_type = NODE_OUT_OF_MEMORY, "
         b"exit_detail = 1 worker(s) were killed due to the node running low on memory."),
        (None, b"[2026-12-06 11:32:32,200 W 6033 6033] (gcs_server) gcs_worker_manager.cc:58: Reporting worker exit, "
         b"worker id = 6da46f14896e830625d1118c34a21c46061b5c827b94372fb0f89553, node id = 051c5ee6edd987a4502c16b025a2"
         b"046b61b73d2685fb457fcecea4b0, address = 127.0.0.1, exit_type = INTENDED_USER_EXIT, exit_detail = killed"),
    ],
    "raylet.out": [
        ("owner_died", b"[2026-12-06 11:33:05,774 I 8772 8772] (raylet) ownership_object_directory.cc:345: Owner of "
         b"object died: Disconnected: GRPC client is shut down. object_id=00668a65bda616c18a011a4e2f32dfd38b033b6601"),
        ("owner_died", b"[2026-12-06 11:42:35,747 I 15964 15964] (raylet) ownership_based_object_directory.cc:359: "
         b"Failed to get the location: RpcError: RPC Error message: failed to connect to all addresses; last error: "
         b"UNKNOWN: ipv4:127.0.0.1:10003: Failed to connect to remote host: Connection refused; RPC Error details:  "),
        ("runtime_env_failed", b"[2026-12-06 11:36:01,001 I 8772 8772] (raylet) worker_pool.cc:1669: Failed to create "
         b"runtime env for job 01000000, status = IOError: Failed to install pip packages."),
        ("shm_fallback", b"[2026-12-06 11:40:52,748 I 8661 8661] (raylet) store_runner.cc:66: Starting object store with "
         b"directory /tmp, fallback /tmp/ray/session_2026-12-06_11-40-42_393108_7454, and huge page support disabled"),
        (None, b"[2026-12-06 11:38:01,806 I 31014 31014] (raylet) store_runner.cc:66: Starting object store with "
         b"directory /dev/shm, fallback /tmp/ray/session_2026-12-06_11-37-56_864172_30347, and huge page support "
         b"disabled"),
        ("disk_full", b"[2026-12-06 11:30:38,732 E 31879 31889] (raylet) dlmalloc.cc:204: Out of disk space with "
         b"fallocate error: No space left on device"),
    ],
    "raylet.err": [
        ("fs_monitor", b"[2026-12-06 11:29:47,157 E 31127 31138] (raylet) file_system_monitor.cc:116: /tmp/ray/session_"
         b"2026-12-06_11-29-41_235844_30914 is over 95% full, available space: 0.00868225 GB; capacity: 0.292969 GB. "
         b"Object creation will fail if spilling is required."),
        ("log_setting_ignored", b"[2026-12-06 11:42:00,100 W 9 9] (raylet) logging.cc:199: Unrecognized setting of "
         b"RAY_BACKEND_LOG_LEVEL=40"),
    ],
    "worker-e8f8b6c4fabd73e8bcc0482e0d94c2802bb73db27b683ebd0adecb0e-ffffffff-31294.err": [
        ("disk_full", b"[*** LOG ERROR #0001 ***] [2026-12-06 11:30:24] [ray_log_sink] Failed flush to file "
         b"/tmp/ray/session_x/logs/python-core-worker-e8f8b6c4_31294.log: No space left on device"),
        ("fd_exhausted", b"E1206 11:27:35.043515046 28209 tcp_server_posix.cc:378] File descriptor limit reached. "
         b"Retrying."),
    ],
    "worker-82fad75494ceb02b9eaa1b9c73d19ea9a23925a0706cda84462c9cae-ffffffff-28191.out": [
        ("fd_exhausted", b"opened 87 then OSError(24, 'Too many open files')"),
    ],
    # Ray's dashboard agent repeats events it could not report: never counted twice.
    "dashboard_agent.log": [
        (None, b"2026-12-06 11:35:24,019\tERROR event_agent.py:99 -- Report event failed: Too many open files"),
    ],
}


# Written now (the lines' own times say when an event happened, and a finding shows within since_hours of it).
_NOW = time.strftime("%Y-%m-%d %H:%M:%S").encode("ascii")
RAY_LINES = {name: [(kind, re.sub(rb"2026-12-06 \d\d:\d\d:\d\d", _NOW, line)) for kind, line in lines]
             for name, lines in RAY_LINES.items()}


@pytest.fixture(autouse=True)
def no_kernel_log(monkeypatch, tmp_path):
    """Not this machine's kernel log (tests/system/test_diagnose.py reads a real OOM kill in it)."""
    monkeypatch.setattr(_diagnose, "KMSG", str(tmp_path / "no-kmsg"))


def session(tmp_path, name="session_2026-12-06_11-00-00_000000_1", files=None):
    """A Ray temp root holding one session whose logs are ``files`` (name -> lines)."""
    logs = tmp_path / "ray" / name / "logs"
    logs.mkdir(parents=True)
    for file_name, lines in (files if files is not None else RAY_LINES).items():
        (logs / file_name).write_bytes(b"".join(line + b"\n" for _kind, line in lines))
    return logs


def run(run_module, tmp_path, **extra):
    args = dict({"ray_temp_dir": str(tmp_path / "ray"), "containers": False, "live": False}, **extra)
    return run_module(ray_diagnose.main, args)


def test_each_signature_counts_the_lines_ray_writes_once(run_module, tmp_path):
    logs = session(tmp_path)
    result = run(run_module, tmp_path)
    expected = {}
    for lines in RAY_LINES.values():
        for kind, _line in lines:
            if kind:
                expected[kind] = expected.get(kind, 0) + 1
    assert result["by_kind"] == expected
    assert set(expected) <= set(KINDS)
    assert {signature.kind for signature in SIGNATURES} == set(expected)  # every signature is shown here
    worker = next(f for f in result["findings"] if f["kind"] == "worker_died")
    assert worker["evidence"] == [{"file": str(logs / "gcs_server.out"), "line": 1,
                                   "text": RAY_LINES["gcs_server.out"][0][1].decode()}]
    assert worker["processes"] == ["worker 6da46f14896e"] and worker["severity"] == "warning"
    assert worker["first"] == line_time(RAY_LINES["gcs_server.out"][0][1]) and worker["new"] == 1
    assert result["worst"] == "critical" and result["findings"][0]["severity"] == "critical"
    assert result["not_read"] == [] and result["errors"] == []


def test_a_second_run_reads_only_new_lines_and_reports_no_old_event_as_new(run_module, tmp_path):
    logs = session(tmp_path)
    state = tmp_path / "state.json"
    first = run(run_module, tmp_path, state_file=str(state))
    assert stat.S_IMODE(os.stat(str(state)).st_mode) == 0o600
    again = run(run_module, tmp_path, state_file=str(state))
    assert again["new"] == 0 and again["bytes_read"] == 0 and again["by_kind"] == first["by_kind"]
    assert all(finding["new"] == 0 for finding in again["findings"])
    with open(str(logs / "gcs_server.out"), "ab") as handle:
        handle.write(RAY_LINES["gcs_server.out"][0][1] + b"\n")
    third = run(run_module, tmp_path, state_file=str(state))
    assert third["new"] == 1 and third["by_kind"]["worker_died"] == 2
    assert third["totals"]["worker_died"] == 2 and third["bytes_read"] == len(RAY_LINES["gcs_server.out"][0][1]) + 1
    worker = next(f for f in third["findings"] if f["kind"] == "worker_died")
    assert worker["evidence"][-1]["line"] == 4  # line numbers go on from the mark
    # A check-mode run reads, but leaves the state as it was.
    before = state.read_bytes()
    with open(str(logs / "gcs_server.out"), "ab") as handle:
        handle.write(RAY_LINES["gcs_server.out"][0][1] + b"\n")
    checked = run_module(ray_diagnose.main, {"ray_temp_dir": str(tmp_path / "ray"), "containers": False,
                                             "live": False, "state_file": str(state)}, check_mode=True)
    assert checked["new"] == 1 and state.read_bytes() == before


def test_a_damaged_or_foreign_state_file_reads_everything_again(run_module, tmp_path):
    session(tmp_path)
    state = tmp_path / "state.json"
    state.write_text("{not json")
    assert run(run_module, tmp_path, state_file=str(state))["new"] > 0
    state.write_text(json.dumps({"version": 1, "marks": {"host:x": [1, 2, "3", 4]}, "findings": [{"kind": "nope"}]}))
    assert run(run_module, tmp_path, state_file=str(state))["new"] > 0
    os.chown(str(state), 65534, 65534)  # another user's: not trusted, not read
    with pytest.raises(Exception):
        run(run_module, tmp_path, state_file=str(state))


def test_the_reader_follows_a_rotation_a_truncation_a_partial_and_a_long_line(tmp_path, monkeypatch):
    monkeypatch.setattr(_logscan, "CHUNK", 7)
    monkeypatch.setattr(_logscan, "MAX_LINE", 40)
    path = tmp_path / "raylet.out"
    path.write_bytes(b"hello\nNo space left on device\n" + b"x" * 100 + b"No space\nbar\npartial No sp")

    def read(mark):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            st = os.fstat(fd)
            reader = LogReader(fd, (mark or Mark(st.st_dev, st.st_ino)).start_for(st), [b"No sp"])
            return [(hit.line, hit.text) for hit in reader.hits()], reader.end
        finally:
            os.close(fd)

    hits, mark = read(None)
    assert hits == [(2, b"No space left on device"), (3, b"x" * 40)]  # cut at MAX_LINE; the last is not complete yet
    assert mark.offset == len(b"hello\nNo space left on device\n" + b"x" * 100 + b"No space\nbar\n")
    assert mark.line is None  # counted only when a later hit needs it
    with open(str(path), "ab") as handle:
        handle.write(b"ace left\n")
    assert read(mark)[0] == [(5, b"partial No space left")]
    path.write_bytes(b"No space again\n")  # truncated and written again: from 0
    assert read(mark)[0] == [(1, b"No space again")]
    os.rename(str(path), str(tmp_path / "raylet.out.1"))  # rotated: another inode, from 0
    path.write_bytes(b"x\nNo space new\n")
    assert read(mark)[0] == [(2, b"No space new")]


def test_hostile_logs_are_never_opened(run_module, tmp_path):
    """A local user who can write Ray's 0777 session dirs plants links, a fifo and own files named like Ray's logs."""
    logs = session(tmp_path, files={})
    secret = tmp_path / "secret"
    secret.write_text("No space left on device\n")
    (logs / "raylet.out").symlink_to(secret)
    os.mkfifo(str(logs / "gcs_server.out"))  # opening it for reading would block the run
    (logs / "worker-1-2-3.err").write_text("Too many open files\n")
    os.chown(str(logs / "worker-1-2-3.err"), 65534, 65534)
    result = run(run_module, tmp_path)
    assert result["findings"] == []
    assert sorted(os.path.basename(item["path"]) for item in result["not_read"]) == [
        "gcs_server.out", "raylet.out", "worker-1-2-3.err"]
    why = {os.path.basename(item["path"]): item["error"] for item in result["not_read"]}
    assert why["raylet.out"] == "raylet.out is a symlink, not a regular file: not opened"
    assert why["gcs_server.out"] == "gcs_server.out is a fifo, not a regular file: not opened"
    assert "owned by uid 65534" in why["worker-1-2-3.err"]


def test_evidence_is_escaped_and_capped():
    assert escaped(b"a\x1b[31mred\tend\xff") == "a\\x1b[31mred\\tend\\xff"
    assert len(escaped(b"x" * 1000)) == 400


def test_bad_input_names_the_value_and_the_fix(run_module, tmp_path):
    args = {"ray_temp_dir": str(tmp_path / "ray"), "containers": False}
    result = fail_module(ray_diagnose.main, dict(args, since_hours=0))
    assert result["msg"] == "since_hours 0.0 must be more than 0 and at most a year (8760); for example 24"
    result = fail_module(ray_diagnose.main, dict(args, state_file="relative/state.json"))
    assert "is not an absolute path" in result["msg"]


def test_a_session_out_of_the_window_and_back_counts_its_events_once(run_module, tmp_path):
    """Its marks stay while it exists (only a session cleaned up loses them): read again, nothing is counted twice."""
    logs = session(tmp_path, files={"raylet.out": RAY_LINES["raylet.out"]})
    state = str(tmp_path / "state.json")
    first = run(run_module, tmp_path, state_file=state)
    old = os.stat(str(logs)).st_mtime - 3 * 3600
    os.utime(str(logs), (old, old))
    os.utime(str(logs / "raylet.out"), (old, old))
    assert run(run_module, tmp_path, state_file=state, since_hours=1)["new"] == 0  # out of the window
    (logs / "new-file").write_text("")  # back in: the logs dir changed
    back = run(run_module, tmp_path, state_file=state)
    assert back["new"] == 0 and back["by_kind"] == first["by_kind"] and back["totals"] == first["totals"]
    shutil.rmtree(str(logs.parent))  # cleaned up: its marks go, its findings stay a week
    gone = run(run_module, tmp_path, state_file=state)
    assert json.loads(open(state).read())["marks"] == {} and gone["by_kind"] == first["by_kind"]
