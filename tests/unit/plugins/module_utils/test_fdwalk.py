# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The forked workers the scanner and the remover share (``_fdwalk.in_workers``): real forks, real pipes."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils._fdwalk import FINISHED, WorkerFailed, in_workers
from ansible_collections.rayops.disk.plugins.module_utils._remove import Guards, Policy, Remover
from ansible_collections.rayops.disk.tests.unit.conftest import write


def children_of_this_process():
    """Live children (not zombies) of this test process."""
    found = set()
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture
def no_worker_left():
    """After the test, no child of this process is left that was not there before it."""
    before = children_of_this_process()
    yield
    assert children_of_this_process() <= before


def test_every_index_is_done_once_and_each_worker_finishes(no_worker_left):
    results = list(in_workers(50, 3, lambda index: {"index": index, "pid": os.getpid(), "name": "n\udcff"},
                              os.getpid))
    done = sorted(value["index"] for index, value in results if index != FINISHED)
    assert done == list(range(50))
    assert all(value["index"] == index and value["name"] == "n\udcff" for index, value in results if index != FINISHED)
    finished = [value for index, value in results if index == FINISHED]
    assert len(finished) == 3 and os.getpid() not in finished  # every worker is a process of its own
    assert {value["pid"] for index, value in results if index != FINISHED} <= set(finished)


def test_big_results_cross_the_pipe_whole():
    big = "x" * (1 << 20)  # many pipe buffers
    assert sorted(in_workers(4, 2, lambda index: (index, big))) == [(i, (i, big)) for i in range(4)]


def test_a_failing_worker_is_named_after_the_others_are_reaped(no_worker_left):
    def work(index):
        if index == 7:
            raise ValueError("item 7 is bad")
        return index

    got = []
    with pytest.raises(WorkerFailed, match="ValueError: item 7 is bad"):
        for _index, value in in_workers(20, 2, work):
            got.append(value)
    assert 7 not in got and len(got) >= 10  # the other worker went on to the end


def test_a_killed_worker_is_a_failure_with_its_status(no_worker_left):
    def work(index):
        if index == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return index

    with pytest.raises(WorkerFailed, match="ended with status"):
        list(in_workers(10, 2, work))


def test_closing_early_reaps_every_worker(no_worker_left):
    results = in_workers(1000, 2, lambda index: "y" * 65536)  # workers block on full pipes
    next(results)
    results.close()


def test_the_remover_does_itself_what_a_killed_worker_left(tmp_path, no_worker_left):
    old = time.time() - 7200
    names = ["ray_tmp_%02d" % i for i in range(12)]
    for name in names:
        write(str(tmp_path / name / "f"), 4096)
        for path in (tmp_path / name / "f", tmp_path / name):
            os.utime(path, (old, old))
    remover = Remover(str(tmp_path), Policy(time.time() - 3600, ("mtime",)), Guards(), dry_run=False)
    remover.workers = 2
    real = remover._removed_alone  # pylint: disable=protected-access

    def dies_on_the_fifth(name):
        if name == names[5] and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(name)

    parent = os.getpid()
    remover._removed_alone = dies_on_the_fifth  # pylint: disable=protected-access
    audit = []
    remover.on_remove = lambda *line: audit.append(line[0])
    remover.remove_matching(lambda name: True)
    assert os.listdir(tmp_path) == []
    assert remover.outcome.removed == 24 and remover.outcome.error_count == 0
    assert audit == [str(tmp_path / name) for name in names]  # in name order, each once
