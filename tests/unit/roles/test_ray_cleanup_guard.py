# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pressure guard's systemd unit as the role renders it, checked by the real ``systemd-analyze verify``; the
role's dry run on a fresh systemd node; and preflight's one message where systemd is not the service manager.

This machine runs no systemd: the service manager is made up per host (a cacheable ``set_fact`` of
``service_mgr``, which is what ``ansible_facts['service_mgr']`` reads), and nothing is started.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from ansible_collections.rayops.disk.tests.unit.roles.test_ray_cleanup_cli_install import render
from ansible_collections.rayops.disk.tests.unit.roles.test_ray_cleanup_preflight import (
    REPO,
    ansible_playbook,
    failure,
    skipped,
)

ROLE = os.path.join(REPO, "roles", "ray_cleanup")
TEMPLATE = os.path.join(ROLE, "templates", "ray-maintenance-guard.service.j2")
SERVICE = "ray-maintenance-guard.service"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
UNIT_PATH = "/etc/systemd/system/" + SERVICE
WARNING_TASK = "Tell that the pressure guard needs systemd"


def stub_cli(tmp_path):
    """An executable where ExecStart points (verify checks that it is one)."""
    stub = tmp_path / "bin" / "ray-maintenance"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return str(stub)


def render_units(tmp_path, hosts):
    """The unit rendered with the role's defaults and vars for each host (``{name: variables}``): its text."""
    return render(tmp_path, hosts, "lookup('ansible.builtin.template', '%s')" % TEMPLATE)


def directives(text):
    """``{(section, key): [values]}`` of a unit file."""
    found, section = {}, None
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            key, _sep, value = line.partition("=")
            found.setdefault((section, key), []).append(value)
    return found


def verify(tmp_path, name, text):
    """``systemd-analyze verify`` of ``text`` as ``<name>/ray-maintenance-guard.service``: (rc, its output)."""
    assert os.access(SYSTEMD_ANALYZE, os.X_OK), "%s is needed (Debian's systemd package)" % SYSTEMD_ANALYZE
    unit = tmp_path / name / SERVICE  # verify takes the unit's type from the name
    unit.parent.mkdir()
    unit.write_text(text)
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120,
                          check=False, env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER=""))
    return proc.returncode, proc.stdout + proc.stderr


def about_the_unit(output):
    """The lines of verify's output that are about this unit (it may also grumble about the machine's own units)."""
    return [line for line in output.splitlines() if SERVICE in line or "ray-maintenance" in line]


def test_the_unit_passes_systemd_analyze_verify_with_defaults_and_custom_dirs(tmp_path):
    stub = stub_cli(tmp_path)
    spill = [str(tmp_path / "spill-a"), "/mnt/ray-spill/"]
    hosts = {"default": {"ray_cleanup_bin_path": stub},
             "custom": {"ray_cleanup_bin_path": stub, "ray_cleanup_tmp_dir": str(tmp_path / "scratch"),
                        "ray_cleanup_ray_temp_dir": str(tmp_path / "scratch" / "ray"), "ray_cleanup_spill_dirs": spill,
                        "ray_cleanup_log_dir": "/srv/log/rayops", "ray_cleanup_metrics": False,
                        "ray_cleanup_config_path": "/srv/etc/ray-maintenance.json"},
             "same-dirs": {"ray_cleanup_bin_path": stub, "ray_cleanup_ray_temp_dir": "/tmp",
                           "ray_cleanup_spill_dirs": ["/tmp/", "/tmp"]}}
    units = render_units(tmp_path, hosts)

    for name, text in units.items():
        assert text.startswith("#\n# Ansible managed\n#\n"), text[:80]  # `ansible_managed | comment` first
        rc, output = verify(tmp_path, name, text)
        assert rc == 0 and about_the_unit(output) == [], "%s:\n%s\n%s" % (name, output, text)
        found = directives(text)
        assert found[("Service", "Type")] == ["simple"]
        assert found[("Service", "ProtectSystem")] == ["strict"]
        assert found[("Service", "PrivateTmp")] == ["no"]  # on purpose: it cleans the node's real /tmp
        assert re.search(r"^# PrivateTmp=no ON PURPOSE: the guard cleans the node's real /tmp", text, re.MULTILINE)
        for key in ("NoNewPrivileges", "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                    "RestrictSUIDSGID", "LockPersonality", "ProtectClock", "RestrictNamespaces",
                    "MemoryDenyWriteExecute"):
            assert found[("Service", key)] == ["yes"], key
        # Best-effort at the lowest priority, not idle: an idle-class read waits behind a busy disk's writers.
        assert (found[("Service", "Restart")], found[("Service", "Nice")], found[("Service", "IOSchedulingClass")],
                found[("Service", "IOSchedulingPriority")], found[("Service", "MemoryMax")]) == (
                    ["on-failure"], ["10"], ["best-effort"], ["7"], ["256M"])
        # Root, with only the capabilities the code uses: other users' /proc/<pid>/* (ptrace), their files in
        # 0777 and sticky dirs (DAC override, fowner). molecule/systemd proves each on a live systemd.
        assert found[("Service", "CapabilityBoundingSet")] == ["CAP_SYS_PTRACE CAP_DAC_OVERRIDE CAP_FOWNER"]
        assert (found[("Service", "DevicePolicy")], found[("Service", "RestrictAddressFamilies")],
                found[("Service", "SystemCallFilter")], found[("Service", "SystemCallErrorNumber")]) == (
                    ["closed"], ["AF_UNIX"], ["@system-service", "~@privileged @resources"], ["EPERM"])
        # It must see every process (ProtectProc, ProcSubset) and the host's unix sockets (PrivateNetwork).
        assert not {key for _section, key in found} & {"AmbientCapabilities", "User", "DynamicUser", "ProtectHome",
                                                       "ProtectProc", "ProcSubset", "PrivateNetwork", "PrivateUsers"}
        assert found[("Unit", "After")] == ["local-fs.target docker.service"]
        assert found[("Install", "WantedBy")] == ["multi-user.target"]
        assert found[("Service", "RuntimeDirectory")] == ["rayops"]  # /run/rayops, the lock's dir
        assert found[("Service", "RuntimeDirectoryPreserve")] == ["yes"]  # cron's cleanup may hold its lock there

    default = directives(units["default"])
    assert default[("Service", "ExecStart")] == [
        "%s --config /etc/rayops/ray-maintenance.json --metrics-dir /var/lib/prometheus/node-exporter watch" % stub]
    assert default[("Service", "ReadWritePaths")] == ["/tmp", "/var/log/rayops", "/var/lib/prometheus/node-exporter",
                                                      "-/run/rayops"]

    custom = directives(units["custom"])
    assert custom[("Service", "ExecStart")] == ["%s --config /srv/etc/ray-maintenance.json watch" % stub]
    # The tmp dir must be there; Ray's temp root and the spill dirs may appear later ("-"); no metrics dir.
    assert custom[("Service", "ReadWritePaths")] == [
        str(tmp_path / "scratch"), "-" + str(tmp_path / "scratch" / "ray"), "-" + spill[0], "-/mnt/ray-spill",
        "/srv/log/rayops", "-/run/rayops"]

    same = directives(units["same-dirs"])
    assert same[("Service", "ReadWritePaths")] == ["/tmp", "/var/log/rayops", "/var/lib/prometheus/node-exporter",
                                                   "-/run/rayops"]


def test_verify_sees_a_broken_unit(tmp_path):
    """The check above means something: verify names an unknown directive and a missing program."""
    stub = stub_cli(tmp_path)
    text = render_units(tmp_path, {"node": {"ray_cleanup_bin_path": stub}})["node"]
    broken = text.replace("ProtectSystem=strict", "ProtectSystm=strict").replace(stub, stub + "-missing")
    assert broken.count("-missing") == 1 and "ProtectSystm=" in broken
    rc, output = verify(tmp_path, "broken", broken)
    assert rc != 0, output
    assert any("Unknown key" in line and "ProtectSystm" in line for line in about_the_unit(output)), output
    assert any("is not executable" in line for line in about_the_unit(output)), output


# The service manager, made up per host before the role runs (preflight gathers facts only when they are missing).
PLAYBOOK = """\
- name: The role, on hosts with a made-up service manager
  hosts: all
  gather_facts: false
  pre_tasks:
    - name: Gather the minimal facts
      ansible.builtin.setup:
        gather_subset: ["!all", "min"]
      tags: [always]
    - name: Make up the service manager
      ansible.builtin.set_fact:
        service_mgr: "{{ made_up_service_mgr }}"
        cacheable: true
      tags: [always]
  roles:
    - role: rayops.disk.ray_cleanup
"""


def run(tmp_path, hosts, *args, booted=True):
    """``ansible-playbook --check`` of the role on ``hosts`` (name -> (service manager, variables)), all localhost,
    writing (if it wrote) into a scratch prefix; per host, the results of each task it ran."""
    prefix = tmp_path / "node"
    prefix.mkdir()
    base = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "ray_cleanup_packages": [],  # nothing from apt
            "ray_cleanup_lib_dir": str(prefix / "lib"), "ray_cleanup_bin_path": str(prefix / "bin" / "ray-maintenance"),
            "ray_cleanup_config_path": str(prefix / "etc" / "ray-maintenance.json"),
            "ray_cleanup_log_dir": str(prefix / "log"), "ray_cleanup_metrics_dir": str(prefix / "metrics"),
            "ray_cleanup_diagnose_state_file": str(prefix / "state" / "diagnose-state.json"),
            "ray_cleanup_venv_path": str(prefix / "venv"),
            "ray_cleanup_ray_env_files": [{"path": str(prefix / "env" / "ray.env"), "format": "env"}]}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {
        name: dict(base, made_up_service_mgr=manager, **variables) for name, (manager, variables) in hosts.items()}}}))
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(PLAYBOOK)
    canary = tmp_path / "run-systemd-system"  # systemd's canary: there as on a node it runs, unless not booted
    if booted:
        canary.mkdir()
    ran, proc = ansible_playbook(tmp_path, inventory, playbook, "-e", "_ray_cleanup_systemd_canary=%s" % canary, *args)
    assert sorted(ran) == sorted(hosts), proc.stdout
    assert list(prefix.iterdir()) == [], "the role wrote into %s" % prefix
    return ran


def results_of(results, name):
    return [result for _path, task, result in results if task == name]


def test_preflight_says_once_that_the_guard_needs_systemd(tmp_path):
    hosts = {"systemd": ("systemd", {}), "sysvinit": ("sysvinit", {}), "container": ("sh", {}),
             "openrc-no-cron": ("openrc", {"ray_cleanup_cron_enabled": False}),
             "silenced": ("sysvinit", {"ray_cleanup_guard": False})}
    ran = run(tmp_path, hosts, "--tags", "ray_cleanup_preflight")
    said = {}
    for host in hosts:
        assert failure(ran[host]) is None, failure(ran[host])
        told = results_of(ran[host], WARNING_TASK)
        assert len(told) == 1, (host, told)
        said[host] = None if skipped(told[0]) else told[0]["msg"]
    assert said["systemd"] is None and said["silenced"] is None
    assert said["sysvinit"] == (
        "ray_cleanup_guard: sysvinit is not run by systemd (service manager sysvinit): the pressure guard "
        "(ray-maintenance watch) is not installed; cron's cleanup keeps running. Run `%s/bin/ray-maintenance --config "
        "%s/etc/ray-maintenance.json watch` under your own supervisor, or set ray_cleanup_guard: false to silence this."
        % (tmp_path / "node", tmp_path / "node"))
    assert said["container"].startswith("ray_cleanup_guard: container is not run by systemd (service manager sh): ")
    assert "nothing else cleans under pressure (ray_cleanup_cron_enabled is false)" in said["openrc-no-cron"]
    # Each host is looked at once, the unit's path with the rest (one round trip).
    for host in hosts:
        looked, = results_of(ran[host], "Look at the node (paths, packages, PID 1, cron, Ray's version; the facts the role needs)")
        assert looked["paths"][UNIT_PATH] == {"exists": False}, looked


def test_systemd_installed_but_not_running_is_no_systemd(tmp_path):
    """A container with systemd installed whose PID 1 is another program: Ansible's service_mgr says systemd, but
    systemd's canary dir is missing, so the guard is not installed and the message says why."""
    ran = run(tmp_path, {"installed": ("systemd", {})}, "--tags", "ray_cleanup_preflight", booted=False)
    told, = results_of(ran["installed"], WARNING_TASK)
    assert told["msg"].startswith("ray_cleanup_guard: installed is not run by systemd (service manager systemd, but "
                                  "no %s): the pressure guard (ray-maintenance watch) is not installed"
                                  % (tmp_path / "run-systemd-system")), told


def test_a_dry_run_on_a_fresh_systemd_node_installs_nothing_and_starts_nothing(tmp_path):
    """The whole role, --check: on a systemd node without the unit it would write the unit and skips the start (there
    is nothing to start yet); elsewhere the guard's tasks are skipped; a spill dir a unit cannot name is refused,
    naming the variable."""
    assert not os.path.exists(UNIT_PATH), "this machine has the guard's unit: the dry run would not be a fresh one"
    # Cron off: ansible.builtin.service would ask the made-up systemd about cron.
    hosts = {"systemd": ("systemd", {"ray_cleanup_cron_enabled": False}), "nosystemd": ("sh", {}),
             "spaced": ("systemd", {"ray_cleanup_cron_enabled": False, "ray_cleanup_spill_dirs": ["/mnt/ray spill"]})}
    ran = run(tmp_path, hosts)

    results = ran["systemd"]
    assert failure(results) is None, failure(results)
    unit, = results_of(results, "Install the pressure guard's systemd unit")
    assert unit.get("changed") and not os.path.exists(UNIT_PATH), unit
    started, = results_of(results, "Start the pressure guard, and start it at boot")
    assert skipped(started) and started["false_condition"] == (
        "_ray_cleanup_guard_unit_exists or not ansible_check_mode"), started
    restart, = results_of(results, "Restart the pressure guard")  # notified by the unit, which would change:
    assert skipped(restart), restart  # nothing restarts in a dry run
    assert [task for _path, task, _result in results if task == WARNING_TASK] == [WARNING_TASK]

    results = ran["nosystemd"]
    assert failure(results) is None, failure(results)
    guard = [(task, result) for path, task, result in results if path.split(":")[0].endswith("/tasks/guard.yml")]
    assert guard and all(skipped(result) for _task, result in guard), guard

    message = failure(ran["spaced"])
    assert message == (
        'ray_cleanup_spill_dirs ["/mnt/ray spill"] cannot be named in the pressure guard\'s systemd unit '
        "(ReadWritePaths=): give an absolute path of letters, digits and ._-+@=:,/ (no spaces, newlines, quotes or "
        "glob characters), or set ray_cleanup_guard: false."), message
