# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/deploy_ray_cleanup.yml over real SSH, as the README says: --check --diff, then for real, then again.

The fleet (sshfleet.py): node-idle and node-busy have the role's packages, node-dead's address answers with
``No route to host``. node-bare is left out (``--limit``): it has python3 only, and installing the packages
needs a Debian mirror, which the fleet's network cannot reach (molecule's ``fresh`` scenario covers that node).
"""

from __future__ import annotations

import json

from ansible_collections.rayops.disk.tests.system.conftest import run_ansible
from ansible_collections.rayops.disk.tests.system.sshfleet import recap

PLAYBOOK = "playbooks/deploy_ray_cleanup.yml"
LIMIT = "node-idle,node-busy,node-dead"
REACHED = ("node-idle", "node-busy")
SNAPSHOT = r"""
import hashlib, json, os, stat
tree = {}
for root in ("/etc", "/usr/local", "/opt", "/var/lib", "/var/log/rayops", "/var/spool/cron"):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            digest = None
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            tree[path] = [info.st_mode, info.st_uid, info.st_gid, digest]
print(json.dumps(tree))
"""
"""Every file the role could write, with its mode, owner and content."""


def snapshot(fleet, node):
    code, out = fleet.containers[node].exec_run(["python3", "-c", SNAPSHOT])
    assert code == 0, out.decode()
    return json.loads(out)


def deploy(inventory, *args):
    return run_ansible("ansible-playbook", "-i", inventory, "--limit", LIMIT, PLAYBOOK, *args)


def test_deploy_check_then_real_then_again_over_ssh(ssh_fleet):
    inventory = ssh_fleet.inventory()
    before = {node: snapshot(ssh_fleet, node) for node in REACHED}

    check = deploy(inventory, "--check", "--diff")
    output = check.stdout + check.stderr
    assert check.returncode == 4, output  # node-dead is unreachable; the others go on
    assert "No route to host" in output
    predicted = recap(check.stdout)
    assert predicted["node-dead"]["unreachable"] == 1, predicted
    for node in REACHED:
        assert predicted[node]["failed"] == 0 and predicted[node]["unreachable"] == 0, "%s:\n%s" % (node, output)
        assert predicted[node]["changed"] > 0, "%s:\n%s" % (node, output)  # a fresh node: the dry run has things to do
        assert snapshot(ssh_fleet, node) == before[node], "the dry run changed %s" % node
    assert "+++ after" in check.stdout  # --diff shows what would be written

    real = deploy(inventory)
    output = real.stdout + real.stderr
    assert real.returncode == 4, output
    done = recap(real.stdout)
    assert done["node-dead"]["unreachable"] == 1, done
    for node in REACHED:
        assert done[node]["failed"] == 0 and done[node]["unreachable"] == 0, "%s:\n%s" % (node, output)
        assert done[node]["changed"] == predicted[node]["changed"], "%s: %s, then %s:\n%s" % (
            node, predicted[node], done[node], output)  # the dry run said what the real run does
        assert snapshot(ssh_fleet, node) != before[node]
        # The CLI the role installed runs on the node, over the same SSH.
        cli = ssh_fleet.ssh(node, "ray-maintenance --help")
        assert cli.returncode == 0 and "usage" in cli.stdout.lower(), "%s: %s%s" % (node, cli.stdout, cli.stderr)
        assert "ray-maintenance" in ssh_fleet.shell(node, "cat /etc/cron.d/*")
    deployed = {node: snapshot(ssh_fleet, node) for node in REACHED}

    again = deploy(inventory)
    output = again.stdout + again.stderr
    assert again.returncode == 4, output
    repeat = recap(again.stdout)
    for node in REACHED:
        assert repeat[node]["changed"] == 0 and repeat[node]["failed"] == 0, "%s: %s:\n%s" % (
            node, repeat[node], output)
        assert snapshot(ssh_fleet, node) == deployed[node], "the second run changed %s" % node
    assert "10.0.0." not in check.stdout + real.stdout + again.stdout


def test_the_fleet_is_reached_only_with_its_pinned_host_keys(ssh_fleet, tmp_path):
    """known_hosts pins each node's own key: another node's key at that address is refused."""
    assert ssh_fleet.ssh("node-idle", "true").returncode == 0
    with open(ssh_fleet.known_hosts) as handle:
        pins = dict(line.split(" ", 1) for line in handle)
    swapped = tmp_path / "known_hosts"
    swapped.write_text("%s %s" % (ssh_fleet.addresses["node-idle"], pins[ssh_fleet.addresses["node-busy"]]))
    proc = ssh_fleet.ssh("node-idle", "true", known_hosts=str(swapped))
    assert proc.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr, proc.stderr
    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    proc = ssh_fleet.ssh("node-idle", "true", known_hosts=str(unknown))
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr, proc.stderr
