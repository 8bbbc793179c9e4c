# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Observe once (issue 18): a cleanup walks each directory at most twice, measuring and removing, and the usage
metrics it writes afterwards come from what it removed, not from a new walk (a guard step's listings and readings
are counted in test_pressure.py).

Every directory listing of the run is counted by the directory's inode (``os.scandir`` and ``os.listdir`` of an
fd, as the scanner and the remover list), in this process (scan and removal workers set to 1).
"""

from __future__ import annotations

import collections
import json
import os

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _cli, _remove
from ansible_collections.rayops.disk.plugins.module_utils._metrics import USAGE_FILE
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.conftest import LIVE, STALE, samples, series


@pytest.fixture
def listings(monkeypatch):
    """``{(st_dev, st_ino): times listed}`` of every directory listed by fd from now on."""
    counted = collections.Counter()
    scandir, listdir = os.scandir, os.listdir

    def count(target):
        if isinstance(target, int):
            st = os.fstat(target)
            counted[(st.st_dev, st.st_ino)] += 1

    def counting_scandir(target="."):
        count(target)
        return scandir(target)

    def counting_listdir(target="."):
        count(target)
        return listdir(target)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    monkeypatch.setattr(os, "listdir", counting_listdir)
    monkeypatch.setattr(_remove, "default_workers", lambda: 1)
    return counted


def dirs_of(path):
    """``{(st_dev, st_ino): path}`` of every directory below ``path`` (itself included)."""
    found = {}
    for dirpath, _dirnames, _filenames in os.walk(str(path)):
        st = os.stat(dirpath)
        found[(st.st_dev, st.st_ino)] = dirpath
    return found


def test_a_cleanup_with_metrics_lists_each_directory_at_most_twice(capsys, ray_node, tmp_path, listings):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    config = tmp_path / "c.json"
    config.write_text(json.dumps({
        "tmp_dir": str(ray_node), "ray_temp_dir": str(ray_node / "ray"), "min_tmp_size": 0, "max_age_hours": 1,
        "age_by": ["mtime"], "lock_file": str(tmp_path / "lock"), "containers": False, "sample_seconds": 0.1,
        "scan_workers": 1, "metrics_dir": str(metrics)}))
    tree = dirs_of(ray_node)
    code = _cli.main(["--config", str(config), "cleanup"])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    walked = {tree[ident]: count for ident, count in listings.items() if ident in tree}
    assert walked and max(walked.values()) <= 2, walked  # measure, remove: once each
    assert walked[str(ray_node)] == 2  # the tmp dir itself: measured and removed in
    # what it wrote agrees with a monitor's own walk right after
    after = samples((metrics / USAGE_FILE).read_text())
    assert not (ray_node / "ray" / STALE).exists() and (ray_node / "ray" / LIVE).exists()
    _cli.main(["--config", str(config), "--json", "monitor"])
    report = json.loads(capsys.readouterr()[0])
    fresh = samples((metrics / USAGE_FILE).read_text())
    host = {"target": "host", "kind": "host"}
    for name, labels in (("rayops_ray_sessions", dict(host, state="stale")),
                         ("rayops_ray_sessions", dict(host, state="live")),
                         ("rayops_ray_category_bytes", dict(host, category="stale_sessions")),
                         ("rayops_ray_category_bytes", dict(host, category="spilled_objects")),
                         ("rayops_ray_category_bytes", dict(host, category="logs_old")),
                         ("rayops_ray_category_bytes", dict(host, category="tmp_patterns")),
                         ("rayops_ray_tmp_bytes", host)):
        assert series(after, name, **labels) == series(fresh, name, **labels), (name, labels)
    assert series(after, "rayops_ray_sessions", **dict(host, state="stale")) == 0
    assert series(fresh, "rayops_ray_tmp_bytes", **host) == report["tmp_bytes"]
