# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/ray_disk_report.yml run as the README says: on the local inventory, and over real SSH on a fleet.

The fleet (sshfleet.py): node-idle and node-busy are measured, node-bare has no psutil (the module fails
there), node-dead's address gives ``No route to host``. The fleet table is read by the contract every fleet
table keeps (see ``sshfleet.parse_table``).
"""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import ansible_module, run_ansible
from ansible_collections.rayops.disk.tests.system.sshfleet import (
    CLEANUP_COLUMNS,
    CLEANUP_TARGET_COLUMNS,
    HOSTS,
    REPORT_COLUMNS,
    TMP_SIZE,
    cells,
    check_units,
    parse_table,
    size_bytes,
)

PLAYBOOK = "playbooks/ray_disk_report.yml"
DIAGNOSE_COLUMNS = ("host", "worst", "findings by kind", "newest", "new", "fix (of the worst)")
SIZE_COLUMNS = ("free", "tmp", "freeable", "held open")
MEASURED = ("node-idle", "node-busy")
OLD_LITTER = {"ray_tmp_1/pkg.zip": 6 << 20, "pip-build-2/setup.py": 1 << 20}
"""7 MiB of old files matching cleanup's patterns, on node-idle."""
ROUNDING = 0.05 * (1 << 20) + 4096
"""A MiB cell is rounded to 0.1 MiB; allow a page on top for what changes between two readings."""
PAYLOAD = 512 << 10
"""Room for Ansible's own module payload (AnsiballZ, about 0.2 MiB), in /tmp while the module measures it."""


def fleet_table(stdout):
    table = parse_table(stdout, "Ray disk report", REPORT_COLUMNS)
    check_units(table, SIZE_COLUMNS)
    return table


def df(fleet, node):
    """``(used %, available bytes)`` of the node's /tmp, as df computes them."""
    used, avail = map(int, fleet.shell(node, "df -B1 --output=used,avail /tmp | tail -n 1").split())
    return 100.0 * used / (used + avail), avail


def du(fleet, node):
    return int(fleet.shell(node, "du -sB1 /tmp").split()[0])


def inodes_used(fleet, node):
    """The used % of the inodes of the node's /tmp, as ``df -i`` counts them."""
    used, free = map(int, fleet.shell(node, "df --output=iused,iavail /tmp | tail -n 1").split())
    return 100.0 * used / (used + free)


HOLDER = "exec 3>/tmp/held.log && head -c %d /dev/zero >&3 && rm /tmp/held.log && echo $$ > /run/holder.pid && exec sleep 600"
"""A process on the node that writes a file in /tmp, deletes it and keeps it open (what ``lsof +L1`` lists)."""
HELD = 3 << 20


@pytest.fixture
def held_on_idle(ssh_fleet):
    """node-idle runs ``HOLDER`` during the test; it is killed afterwards, by its pid."""
    ssh_fleet.shell("node-idle", HOLDER % HELD, detach=True)
    deadline = time.time() + 30
    while ssh_fleet.shell("node-idle", "cat /run/holder.pid 2>/dev/null || true").strip() == "":
        assert time.time() < deadline, "the holder never started"
        time.sleep(0.2)
    yield HELD
    ssh_fleet.shell("node-idle", "kill $(cat /run/holder.pid) && rm /run/holder.pid")


def test_report_over_ssh_lists_every_node_with_its_status_and_fails(ssh_fleet, held_on_idle):
    ssh_fleet.write_files("node-idle", {"/tmp/" + path: size for path, size in OLD_LITTER.items()},
                          time.time() - 3 * 86400)
    proc = run_ansible("ansible-playbook", "-i", ssh_fleet.inventory(), PLAYBOOK)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output  # a node unreachable, one failed
    table = fleet_table(proc.stdout)
    shown = table.text()
    rows = table.rows
    assert table.title.startswith("Ray disk report"), shown
    assert list(rows) == list(HOSTS), shown  # every inventory host, in its order
    assert {host: row["status"] for host, row in rows.items()} == {
        "node-idle": "ok", "node-busy": "ok", "node-bare": "failed", "node-dead": "unreachable"}, shown
    assert "No route to host" in rows["node-dead"]["reason"], shown
    assert "psutil" in rows["node-bare"]["reason"], shown
    for host in ("node-bare", "node-dead"):
        assert [rows[host][column] for column in REPORT_COLUMNS[2:-1]] == ["-"] * 8, shown  # nothing measured
    for host in MEASURED:
        row = rows[host]
        percent, avail = df(ssh_fleet, host)
        assert row["level"] == "ok", shown  # a few % of a 64 MiB tmpfs
        # As df and du measure /tmp now, give or take the module's payload.
        assert re.match(r"^\d+\.\d$", row["used %"]), shown
        assert -0.1 <= float(row["used %"]) - percent <= 0.1 + 100.0 * PAYLOAD / TMP_SIZE, "%s\n%s" % (percent, shown)
        assert -ROUNDING - PAYLOAD <= size_bytes(row["free"]) - avail <= ROUNDING, "%s\n%s" % (avail, shown)
        assert -ROUNDING <= size_bytes(row["tmp"]) - du(ssh_fleet, host) <= ROUNDING + PAYLOAD, shown
        assert row["stale"] == "0", shown  # no Ray sessions
        assert abs(float(row["inodes %"]) - inodes_used(ssh_fleet, host)) <= 0.1, shown
    # The deleted file node-idle's holder keeps open: space no deletion frees, in the node's column only.
    assert (size_bytes(rows["node-idle"]["held open"]), rows["node-busy"]["held open"]) == (held_on_idle, "0 B"), shown
    assert size_bytes(rows["node-idle"]["tmp"]) >= 7 << 20, shown
    # What cleanup would free by its own rules: nothing below its min_tmp_size (5 GiB), however old the litter.
    assert rows["node-idle"]["freeable"] == rows["node-busy"]["freeable"] == "0 B", shown
    assert "4 node(s): " in table.footer, shown
    assert "10.0.0." not in proc.stdout

    # playbooks/ray_diagnose.yml on the same fleet (one fleet for both: CI time): node-idle has a stale Ray session
    # whose GCS logged two workers dying; node-busy none; node-bare and node-dead say why they were not read.
    logs = "/tmp/ray/session_2026-12-06_11-00-00_000000_1/logs"
    died = ("[%s,200 W 6033 6033] (gcs_server) gcs_worker_manager.cc:58: Reporting worker exit, worker id = %s, "
            "node id = %s, address = 127.0.0.1, exit_type = SYSTEM_ERROR, exit_detail = Worker unexpectedly exits "
            "with a connection error code 2. End of file.")
    lines = [died % (time.strftime("%Y-%m-%d %H:%M:%S"), str(index) * 56, "0" * 56) for index in (1, 2)]
    ssh_fleet.shell("node-idle", "mkdir -p %s && printf '%%s\\n' %s > %s/gcs_server.out" % (
        logs, " ".join(shlex.quote(line) for line in lines), logs))
    proc = run_ansible("ansible-playbook", "-i", ssh_fleet.inventory(), "playbooks/ray_diagnose.yml")
    assert proc.returncode == 2, proc.stdout + proc.stderr  # a node unreachable, one failed
    table = parse_table(proc.stdout, "Ray diagnose", DIAGNOSE_COLUMNS)
    shown = table.text()
    rows = table.rows
    assert list(rows) == list(HOSTS), shown
    assert {host: row["worst"] for host, row in rows.items()} == {
        "node-idle": "warning", "node-busy": "ok", "node-bare": "failed", "node-dead": "unreachable"}, shown
    assert (rows["node-idle"]["findings by kind"], rows["node-idle"]["new"]) == ("worker_died 2", "2"), shown
    assert rows["node-idle"]["fix (of the worst)"].startswith("Read the worker's .err log"), shown
    assert rows["node-busy"]["findings by kind"] == "-" and "psutil" in rows["node-bare"]["fix (of the worst)"], shown
    assert "No route to host" in rows["node-dead"]["fix (of the worst)"], shown
    assert "%s/gcs_server.out:2:" % logs in proc.stdout and lines[1][:80] in proc.stdout  # node-idle's evidence


def test_freeable_over_ssh_is_what_cleanup_then_frees_with_the_same_rules(ssh_fleet):
    ssh_fleet.write_files("node-idle", {"/tmp/" + path: size for path, size in OLD_LITTER.items()},
                          time.time() - 3 * 86400)
    inventory = ssh_fleet.inventory(hosts=("node-idle",))
    rules = {"min_tmp_size": "0", "age_by": ["mtime"]}  # ctime cannot be set back
    report = run_ansible("ansible-playbook", "-i", inventory, PLAYBOOK,
                         "-e", json.dumps({"ray_disk_report_" + key: value for key, value in rules.items()}))
    assert report.returncode == 0, report.stdout + report.stderr
    freeable = fleet_table(report.stdout).rows["node-idle"]["freeable"]
    assert 7 << 20 <= size_bytes(freeable) <= (7 << 20) + ROUNDING + 8192, report.stdout  # the files and their dirs
    cleanup = run_ansible("ansible-playbook", "-i", inventory, "playbooks/ray_cleanup_now.yml",
                          "-e", json.dumps({"ray_cleanup_now_" + key: value for key, value in rules.items()}))
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    freed = parse_table(cleanup.stdout, "Ray cleanup now", CLEANUP_COLUMNS, CLEANUP_TARGET_COLUMNS).rows[
        "node-idle"]["freed"]
    assert freed == freeable, cleanup.stdout


def test_report_over_ssh_succeeds_when_every_node_is_reached_and_none_critical(ssh_fleet):
    inventory = ssh_fleet.inventory(hosts=MEASURED)
    for args in ([], ["--check"]):
        proc = run_ansible("ansible-playbook", "-i", inventory, PLAYBOOK, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        table = fleet_table(proc.stdout)
        assert {host: row["status"] for host, row in table.rows.items()} == {"node-idle": "ok", "node-busy": "ok"}, \
            table.text()
        assert "2 node(s): " in table.footer, table.text()
        assert re.search(r"^node-idle\s+: ok=\d+\s+changed=0 ", proc.stdout, re.M), proc.stdout
        assert re.search(r"^node-busy\s+: ok=\d+\s+changed=0 ", proc.stdout, re.M), proc.stdout


def test_report_over_ssh_fails_when_a_node_is_critical(ssh_fleet):
    critical = {"ray_disk_report_thresholds": {"info": 0.001, "warning": 0.002, "critical": 0.003}}
    proc = run_ansible("ansible-playbook", "-i", ssh_fleet.inventory(hosts=("node-idle",)), PLAYBOOK,
                       "-e", json.dumps(critical))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    table = fleet_table(proc.stdout)
    assert list(table.rows) == ["node-idle"], table.text()
    assert (table.rows["node-idle"]["status"], table.rows["node-idle"]["level"]) == ("ok", "critical"), table.text()
    assert "node-idle is critical: /tmp" in proc.stdout


NODE_REPORT = re.compile(r"^\s*FILESYSTEM\s{2,}MOUNTPOINT\s{2,}.*\n\s*/tmp\s{2,}", re.M)
"""The node's report names its temp dir's filesystem."""


def test_report_prints_the_node_and_the_fleet_table_on_the_local_inventory():
    proc = run_ansible("ansible-playbook", PLAYBOOK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert NODE_REPORT.search(proc.stdout), proc.stdout
    assert "live_session" in proc.stdout and "stale_sessions" in proc.stdout
    table = fleet_table(proc.stdout)
    assert list(table.rows) == ["localhost"] and table.rows["localhost"]["status"] == "ok", table.text()
    assert "10.0.0." not in proc.stdout


def test_report_runs_in_check_mode():
    proc = run_ansible("ansible-playbook", PLAYBOOK, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert NODE_REPORT.search(proc.stdout), proc.stdout
    assert "changed=0" in proc.stdout


def test_the_node_report_says_a_stopped_container_is_not_measured():
    report = ansible_module("rayops.disk.ray_tmp_usage", {"containers": False})
    measured = {"filesystem": report["filesystems"][0], "level": report["level"], "sessions": [], "activity": None}
    report["containers"] = [
        dict(measured, name="ray-worker-1", id="3f2a1b0c9d8e", status="running", tmp_bytes=1048576, error=None),
        {"name": "ray-worker-2", "id": "abc", "status": "exited", "tmp_bytes": None, "error": None},
        {"name": "ray-worker-3", "id": "def", "status": "running", "tmp_bytes": None,
         "error": "container was removed during the run"}]
    proc = run_ansible("ansible", "localhost", "-m", "ansible.builtin.debug", "-a",
                       "msg={{ (ray_disk_report | rayops.disk.ray_node_report).splitlines() }}",
                       "-e", json.dumps({"ray_disk_report": report}), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",
                       ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = json.loads(proc.stdout.partition(" => ")[2])["msg"]
    start = next(index for index, line in enumerate(lines) if line.startswith("CONTAINER  "))
    header = cells(lines[start])
    rows = {values[0]: dict(zip(header, values)) for values in map(cells, lines[start + 1:start + 4])}
    measurements = [column for column in header if column not in ("CONTAINER", "STATUS", "ACTIVITY")]
    assert rows["ray-worker-1"]["STATUS"] == "running" and rows["ray-worker-1"]["TMP"] == "1.0 MiB", lines
    assert rows["ray-worker-2"] == dict(dict.fromkeys(header, "-"), CONTAINER="ray-worker-2", STATUS="exited"), lines
    assert [rows["ray-worker-3"][column] for column in measurements] == ["-"] * len(measurements), lines
    assert rows["ray-worker-3"]["ACTIVITY"] == "error: container was removed during the run", lines
