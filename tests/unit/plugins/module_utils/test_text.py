# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet tables and lines of ``_text``: statuses, reasons and units as an operator reads them."""

from __future__ import annotations

import re

from ansible_collections.rayops.disk.plugins.module_utils._text import (
    cleanup_table,
    connection_reason,
    report_table,
    shorten,
)
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes

SIZE = re.compile(r"^\d+ B$|^\d+\.\d (KiB|MiB|GiB|TiB)$")
SSH_DOWN = ("Failed to connect to the host via ssh: ssh: connect to host 172.17.0.9 port 22: No route to host")
MISSING_PSUTIL = ("Failed to import the required Python library (psutil) on node-bare's Python /usr/bin/python3. "
                  "Please read the module documentation and install it in the appropriate location. If the required "
                  "library is installed, but Ansible is using the wrong Python interpreter, please consult the "
                  "documentation on ansible_python_interpreter")


def rows_of(lines):
    """Header names and rows (split on two or more spaces) of a table's lines, target lines apart."""
    header = re.split(r"\s{2,}", lines[1].strip())
    rows, targets = {}, []
    for line in lines[2:-1]:
        cells = re.split(r"\s{2,}", line.strip())
        if line.startswith("  "):
            targets.append(cells)
            continue
        assert len(cells) == len(header), line
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows, targets


def cleaned(freed=3 << 20):
    target = {"name": "host", "kind": "host", "status": "cleaned", "reason": None, "tmp_bytes_before": 5 << 20,
              "tmp_bytes_after": (5 << 20) - freed, "freed_bytes": freed, "kept_by_reason": {"fresh": 2}}
    return {"outcome": "cleaned", "outcome_reason": "kept 2: 2 too new", "freed_bytes": freed, "targets": [target],
            "disk": {"path": "/tmp", "used_percent_before": 41.0, "used_percent_after": 38.5, "projected": False}}


def test_unreachable_and_failed_nodes_are_told_apart_with_their_cause():
    lines = cleanup_table([
        {"host": "node-idle", "result": cleaned(), "seconds": 1.24},
        {"host": "node-dead", "unreachable": SSH_DOWN, "seconds": 3.0},
        {"host": "node-bare", "failure": MISSING_PSUTIL, "seconds": 0.8},
    ], check=False)
    header, rows, targets = rows_of(lines)
    assert header == ["host", "used % before", "used % after", "freed", "duration", "status", "reason"]
    assert rows["node-dead"]["status"] == "unreachable"
    assert rows["node-dead"]["reason"] == "ssh: connect to host 172.17.0.9 port 22: No route to host"
    assert rows["node-bare"]["status"] == "failed" and "(psutil)" in rows["node-bare"]["reason"]
    assert rows["node-idle"]["status"] == "cleaned" and rows["node-idle"]["freed"] == "3.0 MiB"
    assert (rows["node-idle"]["used % before"], rows["node-idle"]["used % after"]) == ("41.0", "38.5")
    assert targets[1] == ["host", "5.0 MiB", "2.0 MiB", "3.0 MiB", "cleaned", "-"]
    assert lines[-1] == "3 node(s): 1 cleaned, 1 unreachable, 1 failed; 3.0 MiB freed"


def test_a_dry_run_says_would_clean_and_marks_the_projection():
    result = cleaned()
    result["disk"]["projected"] = True
    lines = cleanup_table([{"host": "n1", "result": result, "seconds": 1.0}], check=True)
    assert "DRY RUN" in lines[0]
    _header, rows, targets = rows_of(lines)
    assert rows["n1"]["used % after"] == "~38.5"
    assert targets[1][4] == "would_clean"
    assert lines[-1].endswith("3.0 MiB would be freed")


def test_every_size_cell_has_an_iec_label():
    lines = report_table([{"host": "n1", "result": {
        "level": "ok", "filesystem": {"used_percent": 27.3, "free_bytes": 27 << 30}, "tmp_bytes": 0,
        "sessions": [{"live": False}], "cleanup": {"freed_bytes": 265 << 20}, "containers": []}}])
    _header, rows, _targets = rows_of(lines)
    for column in ("free", "tmp", "freeable", "held open"):
        assert SIZE.match(rows["n1"][column]), rows["n1"][column]
    assert rows["n1"]["free"] == "27.0 GiB" and rows["n1"]["tmp"] == "0 B"
    assert (rows["n1"]["inodes %"], rows["n1"]["held open"]) == ("-", "0 B")  # no inode limit, nothing held


def test_held_open_adds_the_host_and_its_containers_and_inodes_show_beside_bytes():
    lines = report_table([{"host": "n1", "result": {
        "level": "ok", "filesystem": {"used_percent": 50.0, "inodes_used_percent": 91.25, "free_bytes": 1 << 30},
        "tmp_bytes": 0, "sessions": [], "deleted_open": {"bytes": 1 << 30, "files": 1, "processes": []},
        "containers": [{"name": "w1", "deleted_open": {"bytes": 512 << 20, "files": 2, "processes": []}},
                       {"name": "w2", "deleted_open": None}]}}])
    _header, rows, _targets = rows_of(lines)
    assert (rows["n1"]["inodes %"], rows["n1"]["held open"]) == ("91.2", "1.5 GiB")
    assert format_bytes(0) == "0 B" and format_bytes(1023) == "1023 B" and format_bytes(1536) == "1.5 KiB"


def test_a_node_whose_docker_is_down_is_an_error_in_the_report():
    lines = report_table([{"host": "n1", "result": {
        "level": "ok", "filesystem": {"used_percent": 1.0, "free_bytes": 1}, "tmp_bytes": 0, "sessions": [],
        "containers": [], "containers_error": "cannot reach the Docker daemon at unix:///var/run/docker.sock"}}])
    _header, rows, _targets = rows_of(lines)
    assert rows["n1"]["status"] == "error" and rows["n1"]["reason"].startswith("cannot reach the Docker daemon")


def test_a_long_reason_keeps_its_end():
    long = "ssh: " + "x" * 300 + ": No route to host"
    short = connection_reason(long)
    assert len(short) <= 110 and short.endswith("No route to host") and short.startswith("ssh: x")
    assert shorten("a\nb\x1b[2Jc") == "a b\\x1b[2Jc"  # one line, nothing reaches the terminal raw
