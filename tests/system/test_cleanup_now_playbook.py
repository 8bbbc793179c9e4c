# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/ray_cleanup_now.yml run by real ansible-playbook against a small fleet of local containers.

Each node of the fleet is a Debian container reached with the community.docker.docker connection (docker exec
on the local engine's unix socket, no network); a fourth node's container does not exist, like the users'
server "pending SSH access". Each container's /tmp is a small tmpfs, so its used % moves measurably.
"""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest

from ansible_collections.rayops.disk.tests.system.conftest import run_ansible

PLAYBOOK = "playbooks/ray_cleanup_now.yml"
IMAGE = "rayops-test/debian-python:bookworm-2"
OLD_LITTER = {"ray_tmp_1/pkg.zip": 4 << 20, "pip-build-2/setup.py": 1 << 20, "tmpk2/x": 4096,
              "keep-me/data": 65536}  # keep-me matches no pattern
SIZE_UNITS = {"Bytes": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
ROW = re.compile(r"^(?P<host>\S+)\s+(?P<before>[\d.]+|-)\s+(?P<after>~?[\d.]+|-)\s+(?P<freed>[\d.]+ \w+|-)\s+"
                 r"(?P<duration>[\d.]+ s|-)\s+(?P<status>dry run|\w+)(?:: (?P<reason>.*))?$")
TARGET = re.compile(r"^  (?P<name>\S+)\s+(?P<tmp_before>[\d.]+ \w+)\s+(?P<tmp_after>[\d.]+ \w+)\s+"
                    r"(?P<freed>[\d.]+ \w+)\s+(?P<status>would be cleaned|\w+)(?:: (?P<reason>.*))?$")


def size(text):
    number, unit = text.split()
    return float(number) * SIZE_UNITS[unit]


def shell(container, script):
    code, out = container.exec_run(["bash", "-c", script])
    assert code == 0, out.decode()
    return out.decode()


def ls_tmp(container):
    return sorted(shell(container, "ls -A /tmp").split())


def litter(container):
    """Old files under /tmp (3 days, by mtime; ctime cannot be set back) and one fresh one."""
    commands = []
    for path, nbytes in OLD_LITTER.items():
        commands.append("mkdir -p /tmp/%s && head -c %d /dev/urandom > /tmp/%s" % (os.path.dirname(path), nbytes, path))
    commands.append("head -c 1048576 /dev/urandom > /tmp/ray_tmp_fresh")
    commands.append("touch -d '3 days ago' " + " ".join("/tmp/%s /tmp/%s" % (p, os.path.dirname(p)) for p in OLD_LITTER))
    shell(container, " && ".join(commands))


def table(stdout):
    """The fleet table printed by the playbook: title, node rows with their target lines, footer."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("Ray cleanup now"))
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = next(i for i in range(start, len(lines)) if " node(s): " in lines[i])
    body = [line[indent:] for line in lines[start:end + 1]]
    rows, current = {}, None
    for line in body[3:-1]:
        target = TARGET.match(line)
        if target:
            current["targets"].append(target.groupdict())
            continue
        row = ROW.match(line)
        assert row, "not a table row: %r\n%s" % (line, "\n".join(body))
        current = rows[row["host"]] = dict(row.groupdict(), targets=[])
    return body[0], rows, body[-1]


@pytest.fixture
def fleet(docker_client, tmp_path):
    """Three worker containers (old litter, empty, busy), a node whose cleanup fails, one that is missing."""
    tag = "rayops-now-%s" % uuid.uuid4().hex[:8]
    containers = {}
    try:
        for role in ("idle", "empty", "busy"):
            containers[role] = docker_client.containers.run(IMAGE, ["sleep", "infinity"], name="%s-%s" % (tag, role),
                                                            init=True, detach=True, tmpfs={"/tmp": "size=32m"})
        litter(containers["idle"])
        litter(containers["busy"])
        # A Ray worker running user code, as Ray titles it: busy, whatever its CPU.
        containers["busy"].exec_run(["bash", "-c", "exec -a ray::train_step python3 -c 'while True: pass'"],
                                    detach=True)
        hosts = {"pending-node": {"ansible_host": "%s-pending" % tag}}  # first: the table needs no first node
        hosts.update(("%s-node" % role, {"ansible_host": c.name}) for role, c in containers.items())
        # Inventory variables reach the playbook: this node's cleanup fails (no such tmp dir), after measuring.
        hosts["broken-node"] = {"ansible_host": containers["empty"].name, "ray_cleanup_now_tmp_dir": "/no/such/dir",
                                "ray_cleanup_now_disk": "/tmp"}
        inventory = tmp_path / "fleet.yml"
        inventory.write_text(json.dumps({"all": {"vars": {"ansible_connection": "community.docker.docker",
                                                          "ansible_python_interpreter": "/usr/bin/python3"},
                                                 "hosts": hosts}}))  # JSON is YAML
        yield str(inventory), containers
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": tag}):
            container.remove(force=True)


def run_playbook(inventory, *args):
    extra = ["-e", "ray_cleanup_now_containers=false", "-e", "ray_cleanup_now_min_tmp_size=1MB",
             "-e", '{"ray_cleanup_now_age_by": ["mtime"]}']
    return run_ansible("ansible-playbook", "-i", inventory, PLAYBOOK, *(extra + list(args)))


def test_dry_run_then_cleanup_of_a_fleet_with_an_unreachable_node(fleet):
    inventory, containers = fleet
    littered = ["keep-me", "pip-build-2", "ray_tmp_1", "ray_tmp_fresh", "tmpk2"]

    check = run_playbook(inventory, "--check", "--diff")
    output = check.stdout + check.stderr
    assert check.returncode == 2, output  # the pending node was unreachable
    title, rows, footer = table(check.stdout)
    assert "DRY RUN" in title, title
    assert ls_tmp(containers["idle"]) == littered  # nothing removed
    assert ls_tmp(containers["busy"]) == littered
    assert list(rows) == ["pending-node", "idle-node", "empty-node", "busy-node", "broken-node"]
    assert rows["pending-node"]["status"] == "unreachable"
    assert rows["broken-node"]["status"] == "failed"
    for host in ("idle-node", "empty-node", "busy-node"):
        assert rows[host]["status"] == "dry run", rows[host]
        assert rows[host]["after"].startswith("~")  # projected
    assert [t["status"] for t in rows["idle-node"]["targets"]] == ["would be cleaned"]
    assert [t["status"] for t in rows["empty-node"]["targets"]] == ["skipped_below_threshold"]
    assert [t["status"] for t in rows["busy-node"]["targets"]] == ["skipped_active"]
    assert size(rows["idle-node"]["freed"]) >= 5 << 20  # would be freed
    assert float(rows["idle-node"]["after"][1:]) < float(rows["idle-node"]["before"])
    assert "host: /tmp/ray_tmp_1/pkg.zip" in check.stdout  # --diff lists the paths
    assert "would be freed" in footer

    real = run_playbook(inventory)
    output = real.stdout + real.stderr
    assert real.returncode == 2, output
    title, rows, footer = table(real.stdout)
    assert "DRY RUN" not in title
    statuses = {host: row["status"] for host, row in rows.items()}
    assert statuses == {"pending-node": "unreachable", "idle-node": "cleaned", "empty-node": "skipped_below_threshold",
                        "busy-node": "skipped_active", "broken-node": "failed"}, \
        "\n".join([title] + list(map(str, rows.values())))
    assert ls_tmp(containers["idle"]) == ["keep-me", "ray_tmp_fresh"]  # old litter gone, fresh and unmatched kept
    assert ls_tmp(containers["busy"]) == littered  # never touched while Ray runs user code
    assert re.search(r"Ray runs user code: ray::train_step", rows["busy-node"]["targets"][0]["reason"])

    idle = rows["idle-node"]
    assert size(idle["freed"]) >= 5 << 20  # shown to two decimals: 5.00 MB and up
    before, after = float(idle["before"]), float(idle["after"])
    assert before >= 15.0 and after <= 5.0, idle  # a 32 MiB tmpfs with 5+ MiB of litter, then ~1 MiB
    assert idle["duration"] != "-" and 0 < float(idle["duration"].split()[0]) < 120
    assert size(idle["targets"][0]["tmp_before"]) > size(idle["targets"][0]["tmp_after"])
    for host in ("empty-node", "busy-node"):
        assert size(rows[host]["freed"]) == 0, rows[host]
        assert rows[host]["before"] != "-" and rows[host]["after"] == rows[host]["after"].lstrip("~") != "-"
    pending = rows["pending-node"]
    assert (pending["before"], pending["after"], pending["freed"], pending["duration"]) == ("-", "-", "-", "-")
    broken = rows["broken-node"]
    assert broken["reason"].startswith("Clean idle Ray workers: ") and "/no/such/dir" in broken["reason"], broken
    assert broken["before"] != "-" and (broken["after"], broken["freed"], broken["duration"]) == ("-", "-", "-")
    assert footer.startswith("5 node(s): 1 cleaned, 1 failed, 1 skipped_active, 1 skipped_below_threshold, "
                             "1 unreachable; 5."), footer

    recap = {m["host"]: m for m in re.finditer(r"^(?P<host>\S+)\s+: ok=\d+\s+changed=(?P<changed>\d+)\s+"
                                               r"unreachable=\d+\s+failed=(?P<failed>\d+)", real.stdout, re.M)}
    assert recap["pending-node"]["failed"] == "1"  # the play goes on past it, and says so at the end
    assert recap["broken-node"]["failed"] == "1"
    assert recap["idle-node"]["changed"] == "1"
    assert all(recap[host]["failed"] == "0" for host in ("idle-node", "empty-node", "busy-node")), real.stdout
    assert "pending-node unreachable: " in real.stdout

    again = run_playbook(inventory, "--limit", "idle-node")
    assert again.returncode == 0, again.stdout + again.stderr  # every node reached: success
    _title, rows, footer = table(again.stdout)
    assert list(rows) == ["idle-node"] and rows["idle-node"]["status"] == "cleaned"
    assert size(rows["idle-node"]["freed"]) == 0  # nothing left to remove
    assert re.search(r"idle-node\s+: ok=\d+\s+changed=0 ", again.stdout)
