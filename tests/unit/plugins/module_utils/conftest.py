# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures and helpers of the metrics and CLI tests: a sandboxed Ray node with a tree, promtool, parsed samples."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.rayops.disk.plugins.module_utils import _targets
from ansible_collections.rayops.disk.tests.unit.conftest import aged, write

PROMTOOL = shutil.which("promtool") or "/usr/local/bin/promtool"
STALE = "session_2026-11-20_10-00-00_000001_11"
LIVE = "session_2026-11-22_10-00-00_000002_22"
OTHER = "session_2026-11-21_10-00-00_000003_33"


def promtool_check(text):
    """``promtool check metrics`` on the text: it must pass with nothing to say."""
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), text


def samples(text):
    """``{metric name: {frozenset of label items: value}}`` as Prometheus' parser reads the text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def series(found, name, **labels):
    """The value of the one series of ``name`` with exactly ``labels``."""
    return found[name][frozenset(labels.items())]


def make_tree(tmp):
    """A tmp dir: litter, a stale and a fresh Ray session, a live one; all old but what is said fresh."""
    write(str(tmp / "ray_tmp_1" / "pkg.zip"), 65536)
    write(str(tmp / "pip-unpack-2" / "wheel"), 16384)
    write(str(tmp / "tmpq1"), 4096)
    write(str(tmp / "unrelated" / "data"), 8192)
    write(str(tmp / "ray" / STALE / "ray_spilled_objects_n" / "obj"), 81920)
    write(str(tmp / "ray" / STALE / "logs" / "raylet.out"), 4096)
    write(str(tmp / "ray" / LIVE / "logs" / "old" / "worker-old.out"), 8192)
    write(str(tmp / "ray" / LIVE / "logs" / "raylet.out"), 4096)
    write(str(tmp / "ray" / OTHER / "logs" / "raylet.out"), 4096)
    aged(str(tmp))  # 3 hours
    write(str(tmp / "tmpfresh" / "x"), 4096)
    write(str(tmp / "ray" / LIVE / "logs" / "old" / "worker-new.out"), 4096)
    return tmp


@pytest.fixture
def sandbox(node, monkeypatch, tmp_path):
    """This process measures and cleans the sandbox node as its host; no uv cache."""
    monkeypatch.setattr(_targets, "host_target", lambda: node.target)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "no-uv"))
    return node


@pytest.fixture
def ray_node(sandbox, tmp_path):
    """The sandbox with a tree in ``tmp_path/tmp`` whose LIVE session a stand-in raylet names."""
    tmp = make_tree(tmp_path / "tmp")
    sandbox.spawn("raylet", "--session_dir=%s" % (tmp / "ray" / LIVE), "--temp_dir=%s" % (tmp / "ray"))
    return tmp


def count_entries(path):
    """Files, dirs and links below ``path``."""
    return sum(len(dirnames) + len(filenames) for _dirpath, dirnames, filenames in os.walk(str(path)))
