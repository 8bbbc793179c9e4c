# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Busy or idle: the role of each process from its title, and the CPU that counts, from real processes.

The stand-in workers take their titles with ``ray._raylet.setproctitle``, the
function Ray's own workers call, and an actor's stderr log starts as Ray
writes it (``:job_id:…``, ``:actor_name:<Class>``); real Ray workers of 2.40,
2.53 and 2.60 are in tests/system/test_ray_activity.py.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils._activity import (
    ContainerSample,
    HostSample,
    Seen,
    TitleRules,
    _log_head,
    explain,
    idle_bound,
    role_of,
    sample_all,
    verdict,
)
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._options import UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import Target
from ansible_collections.rayops.disk.tests.unit.conftest import SYSTEM_PYTHON, SandboxNode

NO_RULES = TitleRules()


def no_actor():
    return False


@pytest.mark.parametrize("name, cmdline, role", [
    ("ray::IDLE", ["ray::IDLE"], "idle_worker"),
    ("ray::IDLE_Spill", ["ray::IDLE_SpillWorker"], "idle_worker"),
    ("ray::IDLE_Resto", ["ray::IDLE_RestoreWorker"], "idle_worker"),
    ("ray::SPILL_Spil", ["ray::SPILL_SpillWorker"], "system"),
    ("ray::RESTORE_Re", ["ray::RESTORE_RestoreWorker"], "system"),
    ("ray::DELETE_Spi", ["ray::DELETE_SpillWorker"], "system"),
    ("ray::Dashboard", ["ray::DashboardAgent"], "system"),  # 2.60
    ("ray::RuntimeEn", ["ray::RuntimeEnvAgent"], "system"),  # 2.60
    ("python3.11", ["/venv/bin/python3.11", "-u", "/venv/lib/python3.11/site-packages/ray/dashboard/agent.py",
                    "--node-ip-address=127.0.0.1"], "system"),  # 2.40, 2.53
    ("python3.11", ["/venv/bin/python3.11", "-u",
                    "/venv/lib/python3.11/site-packages/ray/_private/runtime_env/agent/main.py"], "system"),
    ("python3.11", ["/venv/bin/python3.11", "-u",
                    "/venv/lib/python3.11/site-packages/ray/autoscaler/_private/monitor.py"], "system"),
    ("python3.11", ["/venv/bin/python3.11", "/venv/lib/python3.11/site-packages/ray/dashboard/dashboard.py"], "system"),
    ("python3.11", ["/venv/bin/python3.11", "-m", "ray.util.client.server", "--address=127.0.0.1:6379"], "system"),
    ("ray-dashboard-", ["ray-dashboard-ReportHead-0 (/venv/bin/python3.11 -c ...)"], "system"),  # 2.53+
    ("raylet", ["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet", "--head"], "system"),
    ("gcs_server", ["/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server"], "system"),
    ("ray::train_step", ["ray::train_step"], "work"),  # a task
    ("ray::Holder", ["ray::Holder"], "work"),  # a task, or an actor whose log says nothing: busy, the safe side
    ("ray::Trainer.fi", ["ray::Trainer.fit"], "work"),  # an actor method
    ("ray::JobSupervi", ["ray::JobSupervisor"], "work"),  # a submitted job's entrypoint
    ("python", ["python", "train.py"], "other"),
])
def test_the_role_of_each_title_as_ray_writes_it(name, cmdline, role):
    assert role_of(name, cmdline, NO_RULES, no_actor) == (role, cmdline[0] if cmdline[0].startswith("ray") else name)


def test_a_dashboard_module_is_known_by_its_title_even_when_the_command_line_is_split():
    assert role_of("ray-dashboard-R", ["ray-dashboard-ReportHead-0", "(python", "-c"], NO_RULES, no_actor) == (
        "system", "ray-dashboard-ReportHead-0")


def test_user_globs_decide_before_ray_titles_and_busy_wins():
    rules = TitleRules(busy=("ray::ServeReplica:*",), idle=("ray::ServeReplica:*", "ray::poll_*"))
    assert role_of("x", ["ray::ServeReplica:app:Model"], rules, no_actor)[0] == "work"
    assert role_of("x", ["ray::poll_queue"], rules, no_actor)[0] == "idle_actor"
    assert role_of("x", ["ray::train"], rules, no_actor)[0] == "work"


def actor_log(tmp_path, text):
    """A worker's stderr log as Ray starts it (a new file each time)."""
    path = tmp_path / ("worker-%d-01000000.err" % len(list(tmp_path.iterdir())))
    path.write_text(text)
    return open(path, "ab")


def host(node, **rules):
    return HostSample(psutil, node.target, TitleRules(**rules))


def test_an_idle_actor_is_idle_and_a_task_of_the_same_shape_is_not(node, tmp_path):
    with actor_log(tmp_path, ":job_id:01000000\n:actor_name:Holder\n") as log:
        node.spawn("python-worker", title="ray::Holder", stderr=log)
    node.spawn("python-worker", title="ray::IDLE")
    idle = sample_all({"node": host(node)}, 0.5, 5)["node"]
    assert idle["busy"] is False and idle["idle_actors"] == ["ray::Holder"] and idle["idle_workers"] == 1
    assert idle["why"].startswith("no task or actor method running; CPU 0.0% < 5%; 1 idle worker(s), 1 idle actor(s)")
    with actor_log(tmp_path, ":job_id:01000000\n:task_name:Holder\n") as log:  # a task named like the class
        node.spawn("python-worker", title="ray::load", stderr=log)
    busy = sample_all({"node": host(node)}, 0.5, 5)["node"]
    assert busy["busy"] is True and busy["ray_tasks"] == ["ray::load"]
    assert busy["reasons"] == ["Ray runs user code: ray::load (as root)"]


def test_an_actor_running_a_method_is_busy_without_using_cpu(node):
    node.spawn("python-worker", title="ray::Holder.hold")
    result = sample_all({"node": host(node)}, 0.5, 5)["node"]
    assert result["busy"] is True and result["ray_tasks"] == ["ray::Holder.hold"] and result["cpu_percent"] < 5


def test_ray_system_processes_and_idle_spill_workers_burning_cpu_leave_the_node_idle(node):
    node.spawn("python-worker", title="ray::IDLE_SpillWorker", burn=True)  # Ray's own, not a task's
    node.spawn("python-agent", title="ray::DashboardAgent", burn=True)
    node.spawn("raylet", "--session_dir=/tmp/ray/session_x", burn=True)
    node.spawn("python-worker", title="ray::IDLE")
    result = sample_all({"node": host(node)}, 1.0, 5)["node"]
    assert result["busy"] is False and result["cpu_percent"] < 5, result["why"]
    assert result["idle_cpu_percent"] >= 5  # over the threshold (three burners on a loaded box): reported, not counted
    assert (result["idle_workers"], result["system_processes"]) == (2, 2)
    assert result["over_idle"]["workers"] == 0 and result["ran_tasks"] == []


def test_a_worker_titled_idle_at_every_look_that_burns_cpu_ran_tasks_between_them(node):
    node.spawn("python-worker", title="ray::IDLE", burn=True)
    result = sample_all({"node": host(node)}, 1.0, 5)["node"]
    over, bound = result["over_idle"], result["over_idle"]["bound_percent"]
    assert result["busy"] is True and result["ray_tasks"] == [] and result["idle_workers"] == 1
    assert over["workers"] == 1 and over["started"] == 0 and 3.0 < bound <= 4.0  # 3 % and a tick of a 1 s window
    assert result["cpu_percent"] == over["excess_percent"] == pytest.approx(over["cpu_percent"] - bound, abs=0.11)
    assert over["cpu_percent"] > bound  # a burning worker; busy, whatever share of a core it got
    assert result["reasons"] == ["CPU %.1f%% >= 5%% (1 worker(s) titled ray::IDLE at every look used %.1f%%, %.1f%% "
                                 "more than idle workers use (%.1f%% each): they ran tasks between the looks)" % (
                                     result["cpu_percent"], over["cpu_percent"], over["excess_percent"], bound)]
    assert result["why"].endswith("; 1 idle worker(s), 0 idle actor(s), 0 Ray system process(es) use %.1f%% CPU, "
                                  "not counted" % result["idle_cpu_percent"])
    assert result["idle_cpu_percent"] == pytest.approx(bound, abs=0.11)  # what an idle worker uses stays uncounted


def test_the_bound_of_an_idle_worker_is_three_percent_and_a_clock_tick():
    assert idle_bound(1.0) == pytest.approx(3.0 + 100.0 / os.sysconf("SC_CLK_TCK"))
    assert idle_bound(2.0) == pytest.approx(3.0 + 50.0 / os.sysconf("SC_CLK_TCK"))


def seen(role, title, cpu, **flags):
    return Seen(pid=len(title), role=role, title=title, user="root", cpu=cpu, **flags)


def test_only_workers_titled_idle_are_bounded_and_only_their_excess_counts():
    processes = [seen("idle_worker", "ray::IDLE", 2.0), seen("idle_worker", "ray::IDLE", 10.0, born=True),
                 seen("idle_worker", "ray::IDLE_SpillWorker", 30.0), seen("idle_actor", "ray::Holder", 30.0),
                 seen("system", "raylet", 20.0), seen("other", "python", 1.0)]
    reading = explain(processes, 4.0)
    assert reading["over_idle"] == {"workers": 1, "started": 1, "cpu_percent": 10.0, "excess_percent": 6.0,
                                    "bound_percent": 4.0}
    assert reading["cpu_percent"] == 7.0 and reading["idle_cpu_percent"] == 86.0
    assert reading["idle_workers"] == 3 and reading["ray_tasks"] == reading["ran_tasks"] == []
    assert explain(processes[:1] + processes[2:], 4.0)["cpu_percent"] == 1.0


def test_a_task_seen_at_an_end_is_running_one_seen_only_between_them_ran():
    reading = explain([seen("work", "ray::train", 50.0), seen("work", "ray::short_task", 10.0, between=True),
                       seen("work", "ray::train", 10.0, between=True)], 4.0)
    assert reading["ray_tasks"] == ["ray::train"] and reading["ran_tasks"] == ["ray::short_task"]
    assert reading["owners"] == {"ray::train": ["root"], "ray::short_task": ["root"]}


SWITCHING_WORKER = r"""
import signal, sys, time
import ray._raylet
titles = sys.argv[1:]

def switch(signum, frame):
    titles.append(titles.pop(0))
    ray._raylet.setproctitle(titles[0])

signal.signal(signal.SIGUSR1, switch)
ray._raylet.setproctitle(titles[0])
while True:
    time.sleep(600)
"""
"""A worker that takes the next of its titles (``argv[1:]``, in a ring) at each SIGUSR1, as Ray's do per task."""


def wait_for_title(worker, title):
    deadline = time.time() + 20
    while psutil.Process(worker.pid).cmdline()[:1] != [title]:
        assert time.time() < deadline, "the worker did not take the title %s" % title
        time.sleep(0.02)


def retitle(worker, title):
    """Make a ``SWITCHING_WORKER`` take its next title, ``title``, and wait until it has."""
    worker.send_signal(signal.SIGUSR1)
    wait_for_title(worker, title)


@pytest.mark.parametrize("peek", [True, False])
def test_a_task_run_between_the_ends_of_the_window_is_seen_by_a_look_within_it(node, peek):
    worker = subprocess.Popen(["nsenter", "--mount=/proc/%d/ns/mnt" % node.init.pid, sys.executable, "-c",
                               SWITCHING_WORKER, "ray::IDLE", "ray::short_task"])
    try:
        wait_for_title(worker, "ray::IDLE")
        sample = host(node)
        sample.start()
        retitle(worker, "ray::short_task")  # a task of 0.1 s, no CPU to speak of
        if peek:
            sample.peek()
        retitle(worker, "ray::IDLE")  # done: idle at both ends
        result = verdict(sample.finish(), 5)
    finally:
        worker.kill()
        worker.wait()
    if not peek:  # the ends alone: what issue 18 reported
        assert result["busy"] is False and result["idle_workers"] == 1
        return
    assert result["busy"] is True and result["ray_tasks"] == [] and result["ran_tasks"] == ["ray::short_task"]
    assert result["reasons"] == ["Ray ran user code within the window (idle again at its ends): ray::short_task "
                                 "(as root)"]
    assert result["idle_workers"] == 0 and result["cpu_percent"] < 5


def test_a_glob_makes_a_serve_replica_busy_and_a_poller_idle(node, tmp_path):
    with actor_log(tmp_path, ":actor_name:ServeReplica:app:Model\n") as log:
        node.spawn("python-worker", title="ray::ServeReplica:app:Model", stderr=log)
    assert sample_all({"node": host(node)}, 0.3, 5)["node"]["busy"] is False
    busy = sample_all({"node": host(node, busy=("ray::ServeReplica:*",))}, 0.3, 5)["node"]
    assert busy["ray_tasks"] == ["ray::ServeReplica:app:Model"]
    node.spawn("python-worker", title="ray::poll_queue", burn=True)
    assert sample_all({"node": host(node)}, 0.5, 5)["node"]["busy"] is True
    idle = sample_all({"node": host(node, idle=("ray::poll_*",))}, 0.5, 5)["node"]
    assert idle["busy"] is False and idle["idle_actors"] == ["ray::ServeReplica:app:Model", "ray::poll_queue"]


def test_in_a_container_any_process_but_ray_idle_machinery_counts(node):
    node.spawn("python-worker", title="ray::IDLE_RestoreWorker", burn=True)
    node.spawn("raylet", "--session_dir=/tmp/ray/session_x")
    sample = ContainerSample(psutil, node.target, NO_RULES)
    assert sample_all({"c": sample}, 0.5, 5)["c"]["busy"] is False
    node.spawn("trainer", burn=True)  # not Ray at all: a program of the container's own
    result = sample_all({"c": ContainerSample(psutil, node.target, NO_RULES)}, 1.0, 5)["c"]
    assert result["busy"] is True and result["ray_tasks"] == []
    assert result["counted"][0]["title"] == "trainer" and result["counted"][0]["role"] == "other"
    trainer = result["counted"][0]["cpu_percent"]
    assert result["reasons"] == ["CPU %.1f%% >= 5%% (trainer %.1f%%)" % (result["cpu_percent"], trainer)]


def test_busy_processes_of_another_node_do_not_count(node):
    other = SandboxNode()
    try:
        other.spawn("python-worker", title="ray::train_step", burn=True)
        result = sample_all({"node": host(node)}, 0.5, 5)["node"]
    finally:
        other.stop()
    assert result["busy"] is False and result["cpu_percent"] < 5


class Vanishing(ContainerSample):
    """A target that disappears between readings, as a container removed mid-run."""

    def __init__(self):
        super().__init__(psutil, Target(name="gone"), NO_RULES)
        self.calls = 0

    def _processes(self):
        self.calls += 1
        if self.calls > 1:
            raise LookupError("container ray-worker-9 is gone")
        return []


def test_a_target_vanishing_mid_sample_is_an_error_and_the_rest_is_sampled(node):
    results = sample_all({"gone": Vanishing(), "node": host(node)}, 0.2, 5)
    assert results["gone"] == {"busy": None, "error": "cannot sample activity: container ray-worker-9 is gone"}
    assert results["node"]["busy"] is False


NOT_OVER = {"workers": 0, "started": 0, "cpu_percent": 0.0, "excess_percent": 0.0, "bound_percent": 4.0}


def reading(cpu, tasks, owners, ran=(), over=None):
    return {"cpu_percent": cpu, "idle_cpu_percent": 3.0, "ray_tasks": tasks, "ran_tasks": list(ran), "owners": owners,
            "over_idle": over or NOT_OVER,
            "counted": [{"pid": 7, "title": "ray::a", "role": "work", "user": "root", "cpu_percent": cpu}],
            "idle_actors": [], "idle_workers": 2, "system_processes": 5}


def test_verdict_lists_every_reason_and_why():
    result = verdict(reading(12.5, ["ray::a", "ray::b"], {"ray::a": ["root"], "ray::b": ["apiuser", "root"]}), 5)
    assert result["reasons"] == ["Ray runs user code: ray::a (as root), ray::b (as apiuser, root)",
                                 "CPU 12.5% >= 5% (ray::a 12.5%)"]
    assert result["why"].endswith("; 2 idle worker(s), 0 idle actor(s), 5 Ray system process(es) use 3.0% CPU, "
                                  "not counted")
    assert verdict(reading(4.9, [], {}), 5)["busy"] is False
    assert verdict(reading(5.0, [], {}), 5)["busy"] is True


def test_verdict_names_tasks_seen_only_between_the_ends_and_idle_workers_over_their_bound():
    over = {"workers": 7, "started": 2, "cpu_percent": 67.3, "excess_percent": 39.3, "bound_percent": 4.0}
    result = verdict(reading(39.3, [], {"ray::short_task": ["root"]}, ran=["ray::short_task"], over=over), 5)
    assert result["busy"] is True and result["ray_tasks"] == [] and result["ran_tasks"] == ["ray::short_task"]
    assert result["reasons"] == [
        "Ray ran user code within the window (idle again at its ends): ray::short_task (as root)",
        "CPU 39.3% >= 5% (ray::a 39.3%; 7 worker(s) titled ray::IDLE at every look used 67.3%, 39.3% more than idle "
        "workers use (4.0% each): they ran tasks between the looks (2 of them started in the window))"]
    assert "owners" not in result and result["over_idle"] == over


@pytest.mark.parametrize("option, globs, message", [
    ("busy_titles", [""], "busy_titles [''] has an empty glob; give process title globs such as"),
    ("idle_titles", ["ray::*"], "idle_titles glob 'ray::*' matches every Ray worker, idle or not; name the titles"),
])
def test_bad_title_globs_are_named(option, globs, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]").replace("*", r"\*")):
        UsageOptions(**{option: tuple(globs)}).validate()


PIPED_WORKER = r"""
import os, sys
log = os.open(os.path.join(sys.argv[1], "worker-ab12-01000000-%d.err" % os.getpid()), os.O_WRONLY | os.O_CREAT, 0o644)
os.write(log, sys.argv[2].encode())
if len(sys.argv) > 3:
    os.fchown(log, int(sys.argv[3]), -1)
os.set_inheritable(log, True)  # held open, as a 2.53+ worker holds its log with RAY_ROTATION_* set
read, write = os.pipe()
os.dup2(write, 2)  # stderr into a pipe, as 2.53+ do with RAY_ROTATION_* set
os.execv(sys.executable, ["ray::Holder", "-c", "import time; time.sleep(600)"])
"""


def sample_beside_a_piped_worker(node, logs, log, owner=None):
    """Sample the node while a worker whose stderr is a pipe holds ``logs/worker-*-<pid>.err`` (``log``) open."""
    worker = subprocess.Popen(["nsenter", "--mount=/proc/%d/ns/mnt" % node.init.pid, SYSTEM_PYTHON, "-c",
                               PIPED_WORKER, str(logs), log] + ([str(owner)] if owner is not None else []))
    try:
        deadline = time.time() + 20
        while psutil.Process(worker.pid).cmdline()[:1] != ["ray::Holder"]:
            assert time.time() < deadline
            time.sleep(0.02)
        assert os.readlink("/proc/%d/fd/2" % worker.pid).startswith("pipe:")
        return sample_all({"node": host(node)}, 0.3, 5)["node"]
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.parametrize("log, idle", [(":job_id:01000000\n:actor_name:Holder\n", True),
                                       (":job_id:01000000\n:task_name:Holder\n", False)])
def test_a_worker_whose_stderr_is_a_pipe_is_judged_by_the_log_it_holds_open(node, tmp_path, log, idle):
    result = sample_beside_a_piped_worker(node, tmp_path, log)
    assert result["busy"] is not idle
    assert result["idle_actors"] == (["ray::Holder"] if idle else [])


def test_a_log_another_user_owns_is_not_believed(local_users, node, tmp_path):
    mallory = pwd.getpwnam(local_users["mallory"])  # Ray's log dirs are 0777: anyone may plant a file there
    result = sample_beside_a_piped_worker(node, tmp_path, ":actor_name:Holder\n", owner=mallory.pw_uid)
    assert result["busy"] is True and result["ray_tasks"] == ["ray::Holder"]  # unsure: the safe side


def test_the_log_behind_an_fd_is_read_only_when_it_is_a_regular_file_of_an_owner(tmp_path):
    log = tmp_path / "worker-ab12-01000000-7.err"
    log.write_bytes(b":job_id:01000000\n:actor_name:Holder\n" + b"x" * 70000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fds = [os.open(log, os.O_RDONLY), os.open(fifo, os.O_RDWR), os.open("/dev/zero", os.O_RDONLY)]
    try:
        links = ["/proc/self/fd/%d" % fd for fd in fds]
        head = _log_head(links[0], frozenset((0,)))
        assert head.startswith(b":job_id:") and len(head) == 65536  # the top 64 KiB
        assert _log_head(links[0], frozenset((12345,))) is None  # not the worker's file
        assert _log_head(links[1], frozenset((0,))) is None and _log_head(links[2], frozenset((0,))) is None
        assert _log_head(str(tmp_path / "gone"), frozenset((0,))) is None
    finally:
        for fd in fds:
            os.close(fd)
