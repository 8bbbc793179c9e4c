# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ray_diagnose against what real Ray 2.40, 2.53 and the newest write when they fail (127.0.0.1 only).

One head per version, started with ``RAY_BACKEND_LOG_LEVEL=40`` (a number, which Ray ignores: the
``log_setting_ignored`` kind is in its .err logs from the start, and once more for each worker it starts) and
pip kept offline. One driver first runs a
trivial task (diagnose: nothing but the ignored setting), then, in order:

- a task that calls ``os._exit(1)``, and one whose worker the driver SIGKILLs: two ``worker_died``;
- an actor that ``ray.put``s an object and returns its ref, then ``os._exit``s (a third ``worker_died``);
- a task that lowers its own open-files limit to 64 and opens files until ``EMFILE``, printing the error to its
  worker-*.out (``fd_exhausted``), then closes them and restores its limit (the worker lives on);
- a task whose ``runtime_env`` names a ``py_modules`` package that is not in the GCS: ``runtime_env_failed`` in
  2 to 3 s. A ``pip`` package fails the same way but only after 19 to 26 s here (pip makes a virtualenv before it
  finds no index), too slow for CI, so it is not induced;
- then the driver gets the dead actor's object: ``OwnerDiedError``, and the raylet writes the owner's death to
  raylet.out (``owner_died``: 2.53+ ``Owner of object died``, 2.40 ``Failed to get the location``).

diagnose must name each, count the unexpected worker exits exactly, quote real lines of the logs as evidence,
and, run again with the same state file, report nothing as new and read only what Ray wrote since.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import time

from ansible_collections.rayops.disk.plugins.module_utils._text import diagnose_lines
from ansible_collections.rayops.disk.tests.system.conftest import (
    RAY_IMAGE,
    WORKER_IMAGE,
    RayContainer,
    ansible_module,
    kill_tree,
)

FAILURES_DRIVER = r"""
import os, resource, signal, sys, time
import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
report, go, pid_file = sys.argv[2], sys.argv[3], sys.argv[4]

def say(*words):  # not to stdout: Ray prints there too, from other threads, into the middle of a line
    with open(report, "a") as handle:
        handle.write(" ".join(str(word) for word in words) + "\n")

@ray.remote
def trivial():
    return 1

@ray.remote(max_retries=0)
def exit_at_once():
    os._exit(1)

@ray.remote(max_retries=0)
def killed_by_signal(pid_file):
    with open(pid_file + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    time.sleep(600)

@ray.remote(max_restarts=0)
class Owner:
    def make(self):
        return [ray.put(b"x" * (1 << 20))]  # in the object store, owned by this actor

    def exit(self):
        os._exit(1)

@ray.remote(max_retries=0)
def exhaust_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    files = []
    try:
        while len(files) < 1000:
            files.append(open(os.devnull))
        print("opened", len(files), "without an error", flush=True)
    except OSError as exc:
        print("opened", len(files), "then", repr(exc), flush=True)  # into this worker's worker-*.out
    finally:
        for each in files:
            each.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return len(files)

@ray.remote
def needs_a_package():
    return 1

def outcome(name, call):
    try:
        call()
        say(name, "-")
        return True
    except Exception as exc:
        say(name, type(exc).__name__)
        return False

ray.get(trivial.remote(), timeout=120)
say("READY")
deadline = time.time() + 300
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.1)
outcome("exit", lambda: ray.get(exit_at_once.remote(), timeout=60))
ref = killed_by_signal.remote(pid_file)
while not os.path.exists(pid_file) and time.time() < deadline:
    time.sleep(0.1)
os.kill(int(open(pid_file).read()), signal.SIGKILL)
outcome("sigkill", lambda: ray.get(ref, timeout=60))
owner = Owner.remote()
refs = ray.get(owner.make.remote(), timeout=60)
outcome("owner_exit", lambda: ray.get(owner.exit.remote(), timeout=60))
# Ray takes a few seconds to tell the driver the owner is gone (until then the object is still read from the
# node's store): the other cases run meanwhile.
say("files", ray.get(exhaust_files.remote(), timeout=60))
missing = {"py_modules": ["gcs://_ray_pkg_00000000deadbeef.zip"]}
outcome("runtime_env", lambda: ray.get(needs_a_package.options(runtime_env=missing).remote(), timeout=60))
while outcome("owned_object", lambda: ray.get(refs[0], timeout=60)) and time.time() < deadline:
    time.sleep(0.5)
say("DONE")
time.sleep(600)  # stay connected: the job's end would make Ray write more
"""
"""Writes to the file ``argv[2]`` READY, then (once the file ``argv[3]`` exists) one ``<case> <exception name or ->``
line per case, ``files <n>``, then DONE; ``argv[4]``: where the doomed worker writes its pid."""

OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": "/dev/null", "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}

SEVERITY = {"worker_died": "warning", "owner_died": "warning", "fd_exhausted": "critical",
            "log_setting_ignored": "info", "runtime_env_failed": "warning"}
"""The severities the module documents (plugins/module_utils/_findings.py KINDS)."""

WORKER_EXIT = re.compile(r"Reporting worker exit, worker id = ([0-9a-f]+),.*exit_type = "
                         r"(?:SYSTEM_ERROR|UNEXPECTED_SYSTEM_EXIT)")
OWNER_GONE = r"object_directory\.cc:\d+: (?:Owner of object died|Failed to get the location)"
"""What the raylet writes when a pulled object's owner is gone: 2.53+ ``Owner of object died``, 2.40 ``Failed to
get the location: RpcError ... Connection refused`` (both in raylet.out; the driver also gets OwnerDiedError)."""
UNEXPECTED_EXITS = 3
"""Workers that died unexpectedly: the ``os._exit`` task, the SIGKILLed task, the owner actor's ``os._exit``."""


def diagnose(head, state_file):
    """ray_diagnose on the head's temp root, through Ansible; nothing unread, no target failing."""
    args = {"ray_temp_dir": head.temp_dir, "containers": False, "since_hours": 1, "state_file": state_file}
    result = ansible_module("rayops.disk.ray_diagnose", args)
    assert result.get("failed") is not True, result
    assert result["errors"] == [] and result["not_read"] == [], result
    return result


IGNORED = b"Unrecognized setting of RAY_BACKEND_LOG_LEVEL=40"


def ignored_lines(logs_dir):
    """Lines saying Ray ignored RAY_BACKEND_LOG_LEVEL=40: the GCS's and the raylet's at their start, then one more
    in raylet.err for each worker the raylet starts."""
    return sum(IGNORED in line for name in ("gcs_server.err", "raylet.err")
               for line in lines_of(os.path.join(logs_dir, name)))


def diagnose_counted(head, state_file, logs_dir):
    """``diagnose``, with the lines of ``IGNORED`` there were before it and after it."""
    before = ignored_lines(logs_dir)
    result = diagnose(head, state_file)
    return dict(result, ignored_between=(before, ignored_lines(logs_dir)))


def assert_ignored_counted(session, runs):
    """Each run with the same state counts every ``IGNORED`` line once: as many as were written when it read,
    those it had not read before as new."""
    before = 0
    for result in runs:
        finding = of_session(result, session)["log_setting_ignored"]
        low, high = result["ignored_between"]
        assert low <= finding["count"] <= high and finding["new"] == finding["count"] - before, (
            finding, result["ignored_between"], before)
        before = finding["count"]


def of_session(result, session):
    """The log findings of ``session`` by kind (live findings have no session)."""
    found = {}
    for finding in result["findings"]:
        if finding["session"] == session:
            assert finding["kind"] not in found, "two %s findings for one session" % finding["kind"]
            found[finding["kind"]] = finding
    return found


def lines_of(path):
    with open(path, "rb") as handle:
        return handle.read().split(b"\n")


def logs_size(logs_dir):
    """Bytes in the files of a session's logs dir."""
    with os.scandir(logs_dir) as entries:
        return sum(entry.stat().st_size for entry in entries if entry.is_file(follow_symlinks=False))


def as_evidence(line):
    """A line of an ASCII log as the module must quote it: control characters escaped, cut at 400 characters."""
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], line.decode("ascii"))
    return text if len(text) <= 400 else text[:399] + "…"


def assert_real_evidence(finding, logs_dir):
    """Each line of evidence is in the session's logs, at the line number given, quoted exactly."""
    assert finding["evidence"], finding
    for item in finding["evidence"]:
        assert os.path.dirname(item["file"]) == logs_dir, item
        assert as_evidence(lines_of(item["file"])[item["line"] - 1]) == item["text"], item


def wait_for_report(driver, path, last, timeout=240):
    """The lines the driver wrote to ``path``, once the last is ``last``."""
    deadline = time.time() + timeout
    while True:
        lines = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        if lines and lines[-1] == last:
            return lines
        assert driver.poll() is None and time.time() < deadline, "the driver wrote %s, then stopped (%s)" % (
            lines, driver.poll())
        time.sleep(0.2)


def wait_for_lines(path, pattern, count, timeout=30):
    """The lines of ``path`` matching ``pattern``, once there are ``count`` (Ray writes them moments later)."""
    deadline = time.time() + timeout
    while True:
        found = [(number, line.decode("ascii", "replace")) for number, line in enumerate(lines_of(path), 1)
                 if re.search(pattern, line.decode("ascii", "replace"))]
        if len(found) >= count or time.time() > deadline:
            return found
        time.sleep(0.5)


def test_diagnose_names_each_failure_ray_wrote(any_ray_head, tmp_path):
    head = any_ray_head
    head.env.update(OFFLINE_PIP, RAY_BACKEND_LOG_LEVEL="40")
    head.start()
    sessions = glob.glob(os.path.join(head.temp_dir, "session_2*"))
    assert len(sessions) == 1
    session, logs_dir = os.path.basename(sessions[0]), os.path.join(sessions[0], "logs")
    state_file, report, go = str(tmp_path / "state.json"), str(tmp_path / "report"), str(tmp_path / "go")
    driver = head.driver(FAILURES_DRIVER, report, go, str(tmp_path / "pid"))
    try:
        wait_for_report(driver, report, "READY")
        healthy = diagnose_counted(head, state_file, logs_dir)
        began = time.time()
        with open(go, "w"):
            pass
        outcomes = [line.split() for line in wait_for_report(driver, report, "DONE")[1:-1]]
        gcs_exits = wait_for_lines(os.path.join(logs_dir, "gcs_server.out"), WORKER_EXIT, UNEXPECTED_EXITS)
        owner_lines = wait_for_lines(os.path.join(logs_dir, "raylet.out"), OWNER_GONE, 1)
        size_before_first = logs_size(logs_dir)
        first = diagnose_counted(head, state_file, logs_dir)
        ended = time.time()
        again = diagnose_counted(head, state_file, logs_dir)
        growth = logs_size(logs_dir) - size_before_first
    finally:
        kill_tree(driver)

    # A healthy head (a trivial task ran): only the setting Ray ignored, read from its start.
    assert set(of_session(healthy, session)) == {"log_setting_ignored"}, healthy["summary"]
    assert_ignored_counted(session, [healthy, first, again])

    # The driver saw each failure happen.
    assert [each for each in outcomes if each != ["owned_object", "-"]] == [
        ["exit", "WorkerCrashedError"], ["sigkill", "WorkerCrashedError"], ["owner_exit", "ActorDiedError"],
        ["files", outcomes[3][1]], ["runtime_env", "RuntimeEnvSetupError"], ["owned_object", "OwnerDiedError"]]
    assert 0 < int(outcomes[3][1]) < 64, outcomes  # EMFILE before the 64th open
    assert len(gcs_exits) == UNEXPECTED_EXITS, gcs_exits

    found = of_session(first, session)
    assert owner_lines, "Ray %s wrote nothing of the owner's death to raylet.out" % head.version
    expected = {"worker_died", "owner_died", "fd_exhausted", "log_setting_ignored", "runtime_env_failed"}
    assert set(found) == expected, first["summary"]
    for kind, finding in found.items():
        assert finding["severity"] == SEVERITY[kind], finding
        assert finding["target"] == "host"
        assert_real_evidence(finding, logs_dir)
    assert first["worst"] == "critical"  # fd_exhausted

    died = found["worker_died"]
    assert died["count"] == died["new"] == UNEXPECTED_EXITS, died
    assert [item["line"] for item in died["evidence"]] == [number for number, _line in gcs_exits]
    assert {os.path.basename(item["file"]) for item in died["evidence"]} == {"gcs_server.out"}
    worker_ids = [WORKER_EXIT.search(line).group(1) for _number, line in gcs_exits]
    assert all(any(wid[:12] in name for name in died["processes"]) for wid in worker_ids), died["processes"]
    assert began - 1 <= died["first"] <= died["last"] <= ended + 1, (began, died["first"], died["last"], ended)

    fd = found["fd_exhausted"]
    assert fd["new"] == fd["count"] >= 1
    assert any(re.fullmatch(r"worker-[0-9a-f]+-[0-9a-f]+-\d+\.(out|err)", os.path.basename(item["file"]))
               and "Too many open files" in item["text"] for item in fd["evidence"]), fd["evidence"]

    ignored = found["log_setting_ignored"]
    assert all("RAY_BACKEND_LOG_LEVEL=40" in item["text"] for item in ignored["evidence"])
    assert {os.path.basename(item["file"]) for item in ignored["evidence"]} <= {"raylet.err", "gcs_server.err"}

    runtime_env = found["runtime_env_failed"]
    assert runtime_env["new"] == runtime_env["count"] >= 1
    assert all("Failed to create runtime env for job" in item["text"] for item in runtime_env["evidence"])

    owner = found["owner_died"]
    assert owner["count"] == owner["new"] == len(owner_lines), (owner, owner_lines)
    assert {os.path.basename(item["file"]) for item in owner["evidence"]} == {"raylet.out"}
    assert {item["line"] for item in owner["evidence"]} <= {number for number, _line in owner_lines}

    # What ray-maintenance diagnose prints names each kind and its fix.
    text = "\n".join(diagnose_lines(first))
    assert all(("%s on host: " % kind) in text and ("fix: %s" % f["remedy"]) in text for kind, f in found.items())

    # Read again with the same state: the same events, none new, only what Ray wrote since.
    # (log_setting_ignored is counted against the lines in assert_ignored_counted: a worker Ray starts meanwhile
    # writes one more.)
    again_found = of_session(again, session)
    ignored_since = again_found["log_setting_ignored"]["new"]
    assert {kind: f["count"] for kind, f in again_found.items()} == dict(
        {kind: f["count"] for kind, f in found.items()}, log_setting_ignored=ignored["count"] + ignored_since)
    assert all(f["new"] == 0 for kind, f in again_found.items() if kind != "log_setting_ignored"), again["findings"]
    assert again["new"] == ignored_since
    # Ray goes on writing (a state dump to raylet.out now and then): at most what the logs grew since the first run
    # began, and a line in each file that was still being written then.
    assert first["bytes_read"] > 16384 and again["bytes_read"] <= growth + 4096, (
        first["bytes_read"], again["bytes_read"], growth)


def test_a_node_without_ray_has_no_findings_and_no_errors(tmp_path):
    empty = tmp_path / "ray"
    empty.mkdir()
    args = {"ray_temp_dir": str(empty), "containers": False, "state_file": str(tmp_path / "state.json")}
    result = ansible_module("rayops.disk.ray_diagnose", args)
    assert result.get("failed") is not True, result
    # The kernel's log may hold an earlier kill of a ray:: process (the kernel test's, of an earlier run on this
    # machine): session "kernel", read once.
    kernel = sum(f["count"] for f in result["findings"] if f["session"] == "kernel")
    assert [f for f in result["findings"] if f["session"] not in (None, "kernel")] == []
    assert result["errors"] == [] and result["not_read"] == []
    assert (result["files_read"], result["bytes_read"], result["new"]) == (0, 0, kernel)
    assert result["totals"] == ({"oom_killed": kernel} if kernel else {})


HOG = ("import ctypes\nctypes.CDLL(None).prctl(15, b'ray::hog', 0, 0, 0)  # PR_SET_NAME: named as Ray names a worker\n"
       "held = []\nwhile True:\n    held.append(bytearray(1 << 20))\n")


def test_the_kernel_oom_killer_killing_a_ray_worker_is_found_once(docker_client, tmp_path):
    """A real kill by the kernel's OOM killer: a process named like a Ray worker (``ray::hog``) in a container of
    its own limited to 32 MiB, no network. Ray logs such a kill as any worker death; the kernel's log tells."""
    empty = tmp_path / "ray"
    empty.mkdir()
    args = {"ray_temp_dir": str(empty), "containers": False, "live": False, "state_file": str(tmp_path / "state")}
    before = ansible_module("rayops.disk.ray_diagnose", args)  # reads the kernel's log up to now
    assert before.get("failed") is not True and before["not_read"] == [], before
    container = docker_client.containers.run(WORKER_IMAGE, ["python3", "-c", HOG], mem_limit="32m",
                                             memswap_limit="32m", network_mode="none", detach=True)
    try:
        assert container.wait(timeout=120)["StatusCode"] == 137  # SIGKILL
    finally:
        container.remove(force=True)
    after = ansible_module("rayops.disk.ray_diagnose", args)
    kernel = [finding for finding in after["findings"] if finding["session"] == "kernel"]
    assert len(kernel) == 1 and kernel[0]["new"] == 1, after["findings"]
    killed = kernel[0]
    assert (killed["kind"], killed["severity"], killed["target"]) == ("oom_killed", "critical", "host")
    assert re.match(r"^pid \d+ \(ray::hog\)$", killed["processes"][0]), killed
    assert killed["evidence"][0]["file"] == "/dev/kmsg"
    assert re.search(r"out of memory: Killed process \d+ \(ray::hog\)", killed["evidence"][0]["text"]), killed
    assert abs(killed["last"] - time.time()) < 120, killed  # the record's time, from the boot's
    again = ansible_module("rayops.disk.ray_diagnose", args)
    assert [f["new"] for f in again["findings"] if f["session"] == "kernel"] == [0]  # read once


def test_a_worker_container_with_a_small_dev_shm_is_named_with_its_fix(docker_client, tmp_path):
    """The classic Docker default: a Ray worker container with 64 MiB of /dev/shm and a 200 MB object store. Ray
    (2.53 in the image) puts the store on disk; diagnose, reaching the container as every command does, names it
    from the raylet's log and from the live container, with the --shm-size to give."""
    name = "ray-worker-rayops-shm-%s" % os.urandom(4).hex()
    container = docker_client.containers.run(RAY_IMAGE, name=name, network_mode="none", init=True, shm_size="64m",
                                             detach=True)
    try:
        worker = RayContainer(container)
        worker.exec("ray", "start", "--head", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                    "--disable-usage-stats", "--num-cpus=1", "--object-store-memory=200000000")
        empty = tmp_path / "ray"
        empty.mkdir()
        args = {"ray_temp_dir": str(empty), "containers": True, "container_name_filter": name}
        result = ansible_module("rayops.disk.ray_diagnose", args)
    finally:
        container.remove(force=True)
    assert result.get("failed") is not True and result["errors"] == [] and result["not_read"] == [], result
    found = {(f["kind"], f["session"] is None): f for f in result["findings"] if f["target"] == name}
    fallback = found[("shm_fallback", False)]
    assert fallback["count"] == 1 and fallback["evidence"][0]["file"].endswith("/logs/raylet.out"), fallback
    assert "Starting object store with directory /tmp" in fallback["evidence"][0]["text"], fallback
    too_small = found[("shm_too_small", True)]
    assert too_small["detail"] == ("/dev/shm holds 64.0 MiB, the object store is 190.7 MiB: give the container "
                                   "--shm-size=191m or more"), too_small
    assert "--shm-size" in too_small["remedy"] and "--shm-size" in fallback["remedy"]


FULL_DRIVER = r"""
import os, sys, time
import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
report, session_dir = sys.argv[2], sys.argv[3]

def say(*words):
    with open(report, "a") as handle:
        handle.write(" ".join(str(word) for word in words) + "\n")

@ray.remote(max_retries=0)
def hog():  # grows until Ray's memory monitor kills it (the test's threshold is 1 GiB above what is used now)
    held = []
    for _step in range(64):
        held.append(b"\1" * (128 << 20))
        time.sleep(0.05)
    return len(held)

@ray.remote(max_retries=0)
def write_until_full(path):  # into the session dir, on the nearly full disk
    try:
        with open(path, "wb") as handle:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
    except OSError as exc:
        os.unlink(path)  # room again for the line below
        print("could not write %s: %r" % (path, exc), file=sys.stderr, flush=True)  # into its worker-*.err
        return exc.errno

try:
    say("hog", ray.get(hog.remote(), timeout=120))
except Exception as exc:
    say("hog", type(exc).__name__)
say("full", ray.get(write_until_full.remote(os.path.join(session_dir, "filler")), timeout=120))
say("DONE")
time.sleep(600)
"""
"""Writes to the file ``argv[2]``: ``hog <exception>``, ``full <errno>``, DONE."""


def test_a_full_disk_and_an_oom_kill_on_real_ray(any_ray_head, tmp_path):
    """Ray's temp dir on a 192 MiB tmpfs filled to 97 % (its file system monitor warns above 95 %), a task that
    writes until ENOSPC and prints the error; Ray's memory monitor at 1 GiB above what the machine uses now, and a
    task that grows until it is killed. diagnose names fs_monitor, disk_full and oom_killed from Ray's own lines."""
    head = any_ray_head
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192m,mode=0755", "tmpfs", head.temp_dir], check=True)
    try:
        with open("/proc/meminfo") as handle:
            memory = {line.split(":")[0]: int(line.split()[1]) << 10 for line in handle}
        threshold = (memory["MemTotal"] - memory["MemAvailable"] + (1 << 30)) / memory["MemTotal"]
        head.env.update(RAY_memory_usage_threshold="%.3f" % threshold, RAY_memory_monitor_refresh_ms="100")
        head.start()
        session = glob.glob(os.path.join(head.temp_dir, "session_2*"))[0]
        logs_dir = os.path.join(session, "logs")
        free = os.statvfs(head.temp_dir)
        filler = int(free.f_bavail * free.f_frsize - 0.03 * free.f_blocks * free.f_frsize)  # 97 % used
        with open(os.path.join(head.temp_dir, "filler"), "wb") as handle:
            handle.truncate(0)
            for _chunk in range(filler >> 20):
                handle.write(b"\0" * (1 << 20))
        report = str(tmp_path / "report")
        driver = head.driver(FULL_DRIVER, report, session)
        try:
            outcomes = [line.split() for line in wait_for_report(driver, report, "DONE")[:-1]]
            over = wait_for_lines(os.path.join(logs_dir, "raylet.err"), r"is over \d+% full", 1, timeout=40)
            result = diagnose(head, str(tmp_path / "state.json"))
        finally:
            kill_tree(driver)
        assert outcomes == [["hog", "OutOfMemoryError"], ["full", "28"]], outcomes
        found = of_session(result, os.path.basename(session))
        assert over and found["fs_monitor"]["count"] >= len(over), (over, found.get("fs_monitor"))
        assert all(re.search(r"is over 95% full", item["text"]) for item in found["fs_monitor"]["evidence"])
        full = found["disk_full"]
        assert any(item["file"].endswith(".err") and "No space left on device" in item["text"]
                   for item in full["evidence"]), full
        oom = found["oom_killed"]
        assert oom["count"] == 1 and oom["severity"] == "critical", oom
        assert os.path.basename(oom["evidence"][0]["file"]) == "gcs_server.out"
        assert "NODE_OUT_OF_MEMORY" in oom["evidence"][0]["text"]
        for kind in ("fs_monitor", "disk_full", "oom_killed"):
            assert_real_evidence(found[kind], logs_dir)  # before the tmpfs goes
        # The live node: memory in use is within 1 GiB of the threshold the raylet runs with (read from its
        # environment, not Ray's default 0.95).
        near, = [f for f in result["findings"] if f["kind"] == "memory_near_threshold"]
        assert near["session"] is None and near["detail"].endswith(
            "Ray kills workers at %.0f%% (RAY_memory_usage_threshold)" % (100 * float(head.env[
                "RAY_memory_usage_threshold"]))), near
    finally:
        head.stop()
        subprocess.run(["umount", "-l", head.temp_dir], check=False)
