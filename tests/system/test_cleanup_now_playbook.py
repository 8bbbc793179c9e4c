# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/ray_cleanup_now.yml run by real ansible-playbook over real SSH against a small fleet (sshfleet.py).

node-idle holds old litter, node-busy the same litter and a Ray task running user code, node-bare has no
psutil (the module fails there), node-dead's address gives ``No route to host``. Each node's /tmp is a 64 MiB
tmpfs, so its used % moves measurably. The table is read by the contract every fleet table keeps (see
``sshfleet.parse_table``).
"""

from __future__ import annotations

import re
import time

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import run_ansible
from ansible_collections.rayops.disk.tests.system.sshfleet import (
    CLEANUP_COLUMNS,
    CLEANUP_TARGET_COLUMNS,
    HOSTS,
    TMP_SIZE,
    check_units,
    parse_table,
    recap,
    size_bytes,
    worst,
)

PLAYBOOK = "playbooks/ray_cleanup_now.yml"
OLD_LITTER = {"ray_tmp_1/pkg.zip": 4 << 20, "pip-build-2/setup.py": 1 << 20, "tmpk2/x": 4096,
              "keep-me/data": 65536}  # keep-me matches no pattern
LITTERED = ["keep-me", "pip-build-2", "ray_tmp_1", "ray_tmp_fresh", "tmpk2"]
SIZE_COLUMNS = ("freed",)
TARGET_SIZE_COLUMNS = ("tmp before", "tmp after", "freed")
PERCENT = re.compile(r"^\d+\.\d$")
DURATION = re.compile(r"^\d+\.\d s$")


def ls_tmp(fleet, node):
    return sorted(fleet.shell(node, "ls -A /tmp").split())


def used_percent(fleet, node):
    """/tmp's used % as df computes it: used / (used + available)."""
    used, avail = map(int, fleet.shell(node, "df -B1 --output=used,avail /tmp | tail -n 1").split())
    return 100.0 * used / (used + avail)


def litter(fleet, node):
    """Old files under /tmp (3 days, by mtime; ctime cannot be set back) and one fresh one."""
    fleet.write_files(node, {"/tmp/" + path: size for path, size in OLD_LITTER.items()}, time.time() - 3 * 86400)
    fleet.write_files(node, {"/tmp/ray_tmp_fresh": 1 << 20})


def run_playbook(inventory, *args):
    extra = ["-e", "ray_cleanup_now_containers=false", "-e", "ray_cleanup_now_min_tmp_size=1MB",
             "-e", '{"ray_cleanup_now_age_by": ["mtime"]}']
    return run_ansible("ansible-playbook", "-i", inventory, PLAYBOOK, *(extra + list(args)))


def cleanup_table(stdout):
    """The fleet table; each node's status is the worst of its targets'."""
    table = parse_table(stdout, "Ray cleanup now", CLEANUP_COLUMNS, CLEANUP_TARGET_COLUMNS)
    check_units(table, SIZE_COLUMNS, TARGET_SIZE_COLUMNS)
    for host, row in table.rows.items():
        if row["targets"]:
            assert row["status"] == worst(t["status"] for t in row["targets"]), "%s:\n%s" % (host, table.text())
    return table


@pytest.fixture
def fleet(ssh_fleet):
    litter(ssh_fleet, "node-idle")
    litter(ssh_fleet, "node-busy")
    return ssh_fleet


def assert_unreached(rows, shown):
    """node-dead is unreachable for its address, node-bare failed for its missing psutil; neither measured."""
    dead, bare = rows["node-dead"], rows["node-bare"]
    assert dead["status"] == "unreachable" and "No route to host" in dead["reason"], shown
    assert bare["status"] == "failed" and "psutil" in bare["reason"], shown
    for row in (dead, bare):
        assert (row["used % before"], row["used % after"], row["freed"]) == ("-", "-", "-"), shown
        assert row["duration"] == "-" or DURATION.match(row["duration"]), shown
        assert row["targets"] == [], shown


def test_dry_run_then_cleanup_of_a_fleet_over_ssh(fleet):
    inventory = fleet.inventory()

    check = run_playbook(inventory, "--check", "--diff")
    output = check.stdout + check.stderr
    assert check.returncode == 2, output  # node-dead unreachable, node-bare failed
    table = cleanup_table(check.stdout)
    shown = table.text()
    assert table.title.startswith("Ray cleanup now") and "DRY RUN" in table.title, shown
    assert list(table.rows) == list(HOSTS), shown  # every inventory host, in its order
    assert ls_tmp(fleet, "node-idle") == LITTERED and ls_tmp(fleet, "node-busy") == LITTERED  # nothing removed
    rows = table.rows
    assert {host: row["status"] for host, row in rows.items()} == {
        "node-idle": "would_clean", "node-busy": "skipped_active", "node-bare": "failed",
        "node-dead": "unreachable"}, shown
    assert_unreached(rows, shown)
    idle = rows["node-idle"]
    assert [t["status"] for t in idle["targets"]] == ["would_clean"], shown
    assert [t["status"] for t in rows["node-busy"]["targets"]] == ["skipped_active"], shown
    assert "ray::train_step" in rows["node-busy"]["targets"][0]["reason"], shown
    predicted = size_bytes(idle["freed"])
    assert predicted >= 5 << 20, shown  # 5 MiB and 4 KiB of old litter
    for host in ("node-idle", "node-busy"):
        row = rows[host]
        assert PERCENT.match(row["used % before"]) and row["used % after"].startswith("~"), shown  # projected
        before, after = float(row["used % before"]), float(row["used % after"][1:])
        # after = before - freed: each rounded to 0.1 (the percents) or to 0.1 MiB (freed, of a 64 MiB disk)
        assert abs(before - 100.0 * size_bytes(row["freed"]) / TMP_SIZE - after) <= 0.2, shown
        assert DURATION.match(row["duration"]), shown
    assert float(idle["used % after"][1:]) < float(idle["used % before"]), shown
    assert size_bytes(rows["node-busy"]["freed"]) == 0, shown
    assert "/tmp/ray_tmp_1/pkg.zip" in check.stdout  # --diff lists the paths
    assert "4 node(s): " in table.footer, shown

    real = run_playbook(inventory)
    output = real.stdout + real.stderr
    assert real.returncode == 2, output
    table = cleanup_table(real.stdout)
    shown = table.text()
    rows = table.rows
    assert table.title.startswith("Ray cleanup now") and "DRY RUN" not in table.title, shown
    assert list(rows) == list(HOSTS), shown
    assert {host: row["status"] for host, row in rows.items()} == {
        "node-idle": "cleaned", "node-busy": "skipped_active", "node-bare": "failed",
        "node-dead": "unreachable"}, shown
    assert_unreached(rows, shown)
    assert ls_tmp(fleet, "node-idle") == ["keep-me", "ray_tmp_fresh"]  # old litter gone, fresh and unmatched kept
    assert ls_tmp(fleet, "node-busy") == LITTERED  # never touched while Ray runs user code
    idle = rows["node-idle"]
    assert [t["status"] for t in idle["targets"]] == ["cleaned"], shown
    assert size_bytes(idle["freed"]) == predicted, shown  # the dry run said what the cleanup frees
    before, after = float(idle["used % before"]), float(idle["used % after"])
    assert before >= 9.0 and after <= 2.5, shown  # 6+ MiB of a 64 MiB tmpfs, then 1 MiB and 64 KiB
    # Measured as df measures, while Ansible's own module payload (AnsiballZ, about 0.3 MiB) sits in /tmp.
    assert 0 <= after - used_percent(fleet, "node-idle") <= 0.6, shown
    assert 0 < float(idle["duration"].split()[0]) < 120, shown
    target = idle["targets"][0]
    assert size_bytes(target["tmp before"]) - size_bytes(target["tmp after"]) >= 5 << 20, shown
    busy = rows["node-busy"]
    assert size_bytes(busy["freed"]) == 0 and busy["used % after"] == busy["used % before"], shown
    assert "ray::train_step" in busy["targets"][0]["reason"], shown
    assert "4 node(s): " in table.footer, shown

    counts = recap(real.stdout)
    assert counts["node-dead"]["failed"] == 1 and counts["node-bare"]["failed"] == 1, real.stdout  # and said so
    assert counts["node-idle"]["changed"] == 1 and counts["node-idle"]["failed"] == 0, real.stdout
    assert counts["node-busy"]["changed"] == 0 and counts["node-busy"]["failed"] == 0, real.stdout

    again = run_playbook(inventory, "--limit", "node-idle")
    assert again.returncode == 0, again.stdout + again.stderr  # every node reached: success
    table = cleanup_table(again.stdout)
    assert list(table.rows) == ["node-idle"] and table.rows["node-idle"]["status"] == "cleaned", table.text()
    assert size_bytes(table.rows["node-idle"]["freed"]) == 0, table.text()  # nothing left to remove
    assert recap(again.stdout)["node-idle"]["changed"] == 0, again.stdout

    below = run_playbook(inventory, "--limit", "node-idle", "-e", "ray_cleanup_now_min_tmp_size=1GB")
    assert below.returncode == 0, below.stdout + below.stderr
    table = cleanup_table(below.stdout)
    assert table.rows["node-idle"]["status"] == "skipped_below_threshold", table.text()
    assert ls_tmp(fleet, "node-idle") == ["keep-me", "ray_tmp_fresh"]
