# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a deploy needs to know about a node before it changes anything, read in one pass (module ray_node_info).

The role ``ray_cleanup`` used to ask with one task per question (a stat per path, a slurp of ``/proc/1/comm``,
``dpkg-query``, a probe of Ray's version), each a round trip to the node. Everything here only reads: paths
are looked at with ``lstat`` (a symlink is reported as one, never followed), programs are run with a
timeout and never through a shell, and Ray's version is asked of the Python Ray is installed in as the
user Ray runs as (that user may own that Python), isolated (``-I``), without importing Ray.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from typing import Optional

CRON_DAEMONS = frozenset(("/usr/sbin/cron", "/usr/sbin/crond"))
"""Where Debian's and Red Hat's cron daemons are installed: a daemon runs as root from one of these."""
PROBE_TIMEOUT = 30
"""Seconds a program run here (dpkg-query, the Ray version probe) may take."""
RAY_VERSION_CODE = "import importlib.metadata as m; print(m.version('ray'))"
"""What the Python Ray is installed in is asked: the installed package's metadata only, Ray is not imported."""
OS_FAMILIES = (("debian", "Debian"), ("rhel", "RedHat"), ("fedora", "RedHat"), ("centos", "RedHat"),
               ("suse", "Suse"), ("arch", "Archlinux"), ("alpine", "Alpine"))
"""os-release ``ID``/``ID_LIKE`` words and the family Ansible names (``ansible_facts['os_family']``)."""


def path_state(path: str) -> dict:
    """What is at ``path``, not following a symlink there (as ``ansible.builtin.stat`` with ``follow: false``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    except NotADirectoryError:  # a component on the way is a file: nothing can be there
        return {"exists": False}
    state = {"exists": True, "isdir": stat.S_ISDIR(st.st_mode), "islnk": stat.S_ISLNK(st.st_mode),
             "issock": stat.S_ISSOCK(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
             "mode": "%04o" % stat.S_IMODE(st.st_mode)}
    if state["islnk"]:
        state["lnk_source"] = os.readlink(path)
    return state


def pid1_name(proc: str = "/proc") -> str:
    """The name of PID 1 (an init system, or a container's own program); "" when it cannot be read."""
    try:
        with open(os.path.join(proc, "1", "comm"), "rb") as handle:
            return handle.read(64).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def cron_running(proc: str = "/proc") -> bool:
    """Whether a cron daemon runs: a root process executing the installed cron binary.

    Not by name: any user can start a process called ``cron``; only root can run one as root."""
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            if os.stat(os.path.join(proc, entry)).st_uid != 0:
                continue
            if os.readlink(os.path.join(proc, entry, "exe")) in CRON_DAEMONS:
                return True
        except OSError:  # gone, or a kernel thread (no exe)
            continue
    return False


def _run(argv: list) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT, check=False)


def installed_packages(names: list) -> dict:
    """Each Debian package of ``names`` -> whether dpkg has it installed; {} without dpkg (not a Debian node)."""
    if not names or shutil.which("dpkg-query") is None:
        return {}
    proc = _run(["dpkg-query", "--show", "--showformat=${Package} ${Status}\\n"] + list(names))
    installed = set()
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        name, _sep, status = line.partition(" ")
        if status.endswith(" ok installed"):
            installed.add(name.partition(":")[0])  # foo:amd64 is foo
    return {name: name in installed for name in names}


def ray_version(python: str, user: str) -> dict:
    """``{"version": ..., "error": ...}``: Ray's version as the Python it is installed in says it, run as ``user``;
    version None and the reason when it cannot say."""
    try:
        proc = _run(["runuser", "-u", user, "--", python, "-I", "-c", RAY_VERSION_CODE])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"version": None, "error": "could not run %s as %s: %s" % (python, user, exc)}
    said = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not said:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return {"version": None, "error": lines[-1] if lines else "exit status %d" % proc.returncode}
    return {"version": said[:64], "error": None}


def os_family(os_release: str = "/etc/os-release") -> str:
    """The OS family as Ansible names it, from os-release's ``ID`` and ``ID_LIKE``; ``ID`` itself (or "unknown")
    for another."""
    fields = {}
    try:
        with open(os_release, "rb") as handle:
            for line in handle.read(1 << 16).decode("utf-8", "replace").splitlines():
                key, _sep, value = line.partition("=")
                fields[key.strip()] = value.strip().strip("\"'")
    except OSError:
        return "unknown"
    words = [fields.get("ID", "")] + fields.get("ID_LIKE", "").split()
    for word in words:
        for like, family in OS_FAMILIES:
            if word == like or word.startswith(like):
                return family
    return fields.get("ID") or "unknown"


def facts(systemd_canary: str, pid1: str) -> dict:
    """What a play's ``setup`` would say of the OS family, the service manager and this Python, for a role that
    gathers nothing else: systemd when its canary dir is there (``sd_booted(3)``), else what runs as PID 1."""
    booted = path_state(systemd_canary)
    manager = "systemd" if booted.get("isdir") and not booted.get("islnk") else (pid1 or "unknown")
    return {"os_family": os_family(), "service_mgr": manager, "python": {"executable": sys.executable}}


def node_info(paths: list, packages: list, ray_python: Optional[str] = None, ray_user: Optional[str] = None,
              systemd_canary: Optional[str] = None) -> dict:
    """Everything the module returns: ``paths`` (path -> its state), ``packages``, ``pid1``, ``cron_running``;
    with ``ray_python``, ``ray_version``; with ``systemd_canary``, ``ansible_facts`` (``facts()``)."""
    info = {"paths": {path: path_state(path) for path in paths}, "packages": installed_packages(packages),
            "pid1": pid1_name(), "cron_running": cron_running()}
    if ray_python:
        info["ray_version"] = ray_version(ray_python, ray_user or "root")
    if systemd_canary:
        info["ansible_facts"] = facts(systemd_canary, info["pid1"])
    return info
