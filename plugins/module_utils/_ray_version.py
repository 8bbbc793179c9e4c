# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The running Ray's version and how it rotates its logs, as the node shows them.

The version is read from the package next to the trusted raylet's program
(``ray/_version.py``, else ``ray-*.dist-info/METADATA``), inside the target's
root and only through files and directories trusted users alone control.
What each version rotates (``LOG_KINDS``) is in docs/ray-versions.md; the
effective settings come from the trusted processes' command lines and the
raylet's environment.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Iterable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._fs import Tree, UnsafePath, open_regular, read_head
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import (
    KIND_ORDER,
    RAY_EXECUTABLES,
    RayLayout,
    RayProcess,
    flag_value,
    named_roots,
    trusted_file_problem,
)

VERSION_FILE_MAX = 64 * 1024
"""Bytes read at most from a version file (Ray's ``_version.py`` is ~200 bytes; ``Version:`` opens a METADATA)."""
ENVIRON_MAX = 1024 * 1024
"""Bytes read at most from a process's ``/proc/<pid>/environ``."""
_VERSION_PY = re.compile(rb"""^version\s*=\s*["']([0-9]+\.[0-9]+[0-9A-Za-z.+-]{0,40})["']\s*$""", re.M)
_METADATA_VERSION = re.compile(rb"^Version:[ \t]*([0-9]+\.[0-9]+[0-9A-Za-z.+-]{0,40})[ \t]*\r?$", re.M)
_VERSION_NUMBERS = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")

ROTATION_ENV = ("RAY_ROTATION_MAX_BYTES", "RAY_ROTATION_BACKUP_COUNT")
OUTPUT_ROTATED_SINCE = (2, 53)
"""The first Ray known to rotate ``.out``/``.err`` itself (seen on 2.53 and 2.60; 2.40 does not; the versions in
between were not checked and are taken as 2.40, which only costs a redundant logrotate of their ``.out`` files)."""
LOG_KINDS = {
    "component_logs": ("*.log of Ray's Python components (dashboard, monitor, log_monitor, agents)",),
    "core_logs": ("python-core-*.log",),
    "process_output": ("*.out", "*.err"),
    "client_server_output": ("ray_client_server*.out", "ray_client_server*.err"),
    "job_driver_logs": ("job-driver-*.log",),
}
"""The kinds of files in a session's ``logs/`` as Ray rotates them (or not), and their names.

``component_logs``: Python's RotatingFileHandler at ``--logging-rotate-*`` (``X.log.1``), every version.
``core_logs``: C++ (spdlog) at ``RAY_ROTATION_*`` (2.40: ``…_PID.1.log``, 2.53+: ``…_PID.log.1``); without
``RAY_ROTATION_MAX_BYTES`` 2.53+ never rotates them.  ``process_output``: stdout/stderr of raylet, gcs_server,
workers and agents, rotated by Ray 2.53+ only with ``RAY_ROTATION_MAX_BYTES`` set (``.out.1``), never by 2.40.
``client_server_output`` (Ray Client's server) and ``job_driver_logs`` (Ray Jobs' drivers) are plain redirections
that no Ray version rotates."""
LOGROTATE_KINDS = ("process_output", "client_server_output", "job_driver_logs")
"""What an external logrotate (``copytruncate``) may take over when Ray leaves it unrotated: names that never match
Ray's own backups (``*.out`` misses ``.out.1``; ``job-driver-*.log`` is never rotated by Ray).  ``*.log`` would also
match 2.40's ``…_PID.1.log`` backups, so Ray's own ``.log`` files are never given to logrotate."""


def version_numbers(version: Optional[str]) -> Optional[tuple]:
    """``(2, 53, 0)`` from ``"2.53.0"`` (or ``"2.60.0rc1"``), None when it is not a version."""
    match = _VERSION_NUMBERS.match(version or "")
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def rotates_output(version: Optional[str]) -> bool:
    """Whether this Ray version rotates ``.out``/``.err`` itself (given ``RAY_ROTATION_MAX_BYTES``); False if unknown."""
    numbers = version_numbers(version)
    return numbers is not None and numbers[:2] >= OUTPUT_ROTATED_SINCE


def logrotate_globs(version: Optional[str], ray_rotation_set: bool = True) -> list:
    """The names in a session's ``logs/`` that Ray leaves unrotated, for logrotate: never one of Ray's backups.

    ``ray_rotation_set``: Ray starts with ``RAY_ROTATION_MAX_BYTES`` above 0.  Without it, or on a version
    before 2.53 (or unknown), that is every ``.out`` and ``.err``; else only Ray Client's server output.  Ray Jobs'
    driver logs always.
    """
    kinds = ["client_server_output", "job_driver_logs"]
    if not (ray_rotation_set and rotates_output(version)):
        kinds[0] = "process_output"
    return [name for kind in kinds for name in LOG_KINDS[kind]]


def ray_package_dir(exe: str) -> Optional[str]:
    """``…/site-packages/ray`` from the path of Ray's raylet or gcs_server program, or None."""
    for suffix in RAY_EXECUTABLES.values():
        if exe.endswith(suffix) and len(exe) > len(suffix):
            return exe[:-len(suffix)] + "/ray"
    return None


def read_trusted(tree: Tree, path: str, trusted: frozenset, limit: int = VERSION_FILE_MAX) -> bytes:
    """At most ``limit`` bytes of a regular file inside ``tree`` that only ``trusted`` users can have written.

    Every directory on the way is checked as ``open_beneath`` does with trusted uids; the file is pinned without
    following a link and opened only when it is a regular file of a trusted user (``_fs.open_regular``: a device
    node or fifo a container's root made there is never opened), then checked through its fd (not group- or
    world-writable).  ``OSError`` (``UnsafePath`` for a path others control) when it cannot be read so.
    """
    parent, name = os.path.split(os.path.normpath(path))
    owners = frozenset(trusted) | {0}
    dirfd = tree.open_dir(parent, trusted_uids=trusted)
    try:
        fd = open_regular(name, dir_fd=dirfd, owners=owners)
    finally:
        os.close(dirfd)
    try:
        reason = trusted_file_problem(tree, path, os.fstat(fd), owners)
        if reason:
            raise UnsafePath(errno.EPERM, reason)
        return read_head(fd, limit)
    finally:
        os.close(fd)


def installed_version(tree: Tree, exe: str, trusted: frozenset) -> tuple:
    """``(version, None)`` of the Ray package a raylet runs from, or ``(None, why not)``.

    ``…/site-packages/ray/_version.py`` (``version = "2.40.0"``), else the ``Version:`` of the one
    ``ray-*.dist-info/METADATA`` beside the package; both read only through ``read_trusted``.
    """
    package = ray_package_dir(exe)
    if package is None:
        return None, "%s is not in a Ray package" % exe
    try:
        match = _VERSION_PY.search(read_trusted(tree, package + "/_version.py", trusted))
        if match:
            return match.group(1).decode("ascii"), None
        why = "%s/_version.py names no version" % package
    except OSError as exc:
        why = "%s/_version.py: %s" % (package, exc.strerror or exc)
    site = os.path.dirname(package)
    try:
        dirfd = tree.open_dir(site, trusted_uids=trusted)
        try:
            names = sorted(name for name in os.listdir(dirfd) if name.startswith("ray-") and name.endswith(".dist-info"))
        finally:
            os.close(dirfd)
    except OSError as exc:
        return None, "%s; %s: %s" % (why, site, exc.strerror or exc)
    if len(names) != 1:
        return None, "%s; %d ray-*.dist-info in %s" % (why, len(names), site)
    try:
        match = _METADATA_VERSION.search(read_trusted(tree, "%s/%s/METADATA" % (site, names[0]), trusted))
    except OSError as exc:
        return None, "%s; %s/%s/METADATA: %s" % (why, site, names[0], exc.strerror or exc)
    if not match:
        return None, "%s; %s/%s/METADATA names no version" % (why, site, names[0])
    return match.group(1).decode("ascii"), None


def running_version(processes: Iterable[RayProcess], tree: Tree, ray_uids: frozenset) -> tuple:
    """``(version, why not)`` of the Ray whose trusted raylet (else gcs_server) runs on the target; (None, None) if none."""
    trusted = frozenset(ray_uids) | {0}
    why = None
    for proc in sorted(processes, key=lambda p: (KIND_ORDER.index(p.kind), p.pid)):
        if proc.kind == "log_monitor":
            continue
        try:
            exe = os.readlink("/proc/%d/exe" % proc.pid)
        except OSError as exc:
            why = "cannot read the program of %s %d: %s" % (proc.kind, proc.pid, exc.strerror or exc)
            continue
        version, why = installed_version(tree, exe, trusted)
        if version:
            return version, None
    return None, why


def process_environ(pid: int, names: Iterable[str]) -> Optional[dict]:
    """The variables ``names`` of a process's environment as it started (``/proc/<pid>/environ``); None if unreadable.

    Only those names are kept: the rest of the environment (secrets, often) is never returned.
    """
    wanted = set(names)
    try:
        with open("/proc/%d/environ" % pid, "rb") as handle:
            data = handle.read(ENVIRON_MAX)
    except OSError:
        return None
    found = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        name = key.decode("ascii", "replace")
        if sep and name in wanted:
            found[name] = value.decode("utf-8", "replace")
    return found


def _whole(text: Optional[str]) -> Optional[int]:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def effective_rotation(processes: Iterable[RayProcess]) -> Optional[dict]:
    """The rotation settings the running Ray took, from its trusted processes; None when no trusted Ray runs.

    ``max_bytes``/``backup_count``: ``--logging-rotate-*`` of its log_monitor (what ``ray start`` made of
    ``RAY_ROTATION_*`` for every Python component); ``environment``: ``RAY_ROTATION_*`` in its raylet's
    environment, which Ray's C++ side (raylet, gcs_server, workers) reads itself, or None when unreadable.
    """
    processes = sorted(processes, key=lambda p: p.pid)
    if not processes:
        return None
    found = {"max_bytes": None, "backup_count": None, "environment": None}
    for proc in processes:
        if proc.kind == "log_monitor":
            max_bytes = _whole(flag_value(proc.cmdline, "--logging-rotate-bytes"))
            if max_bytes is not None:
                found["max_bytes"] = max_bytes
                found["backup_count"] = _whole(flag_value(proc.cmdline, "--logging-rotate-backup-count"))
                break
    for proc in processes:
        if proc.kind == "raylet":
            found["environment"] = process_environ(proc.pid, ROTATION_ENV)
            if found["environment"] is not None:
                break
    return found


def _settings_text(max_bytes: Optional[int], backup_count: Optional[int]) -> str:
    return "%s bytes and %s backup(s)" % ("?" if max_bytes is None else max_bytes,
                                          "?" if backup_count is None else backup_count)


def rotation_report(version: Optional[str], effective: Optional[dict], max_bytes: Optional[int] = None,
                    backup_count: Optional[int] = None, where: str = "host",
                    version_error: Optional[str] = None) -> Optional[dict]:
    """What Ray rotates on a target and whether the configured ``RAY_ROTATION_*`` took effect; None without Ray.

    ``max_bytes``/``backup_count`` are the configured values (as ``ray_log_config`` wrote them), or None
    when not given: then ``in_effect`` says whether Ray started with ``RAY_ROTATION_MAX_BYTES`` above 0 at all.
    ``in_effect`` is None when it cannot be told (the raylet's environment is unreadable).
    """
    if effective is None:
        return None
    env = effective.get("environment")
    env_bytes = _whole(env.get(ROTATION_ENV[0])) if env is not None else None
    env_count = _whole(env.get(ROTATION_ENV[1])) if env is not None else None
    cpp_set = None if env is None else bool(env_bytes)  # unset, 0 or not a number: Ray's C++ side does not rotate
    assume_set = cpp_set is not False
    newer = rotates_output(version)
    rotated = {
        "component_logs": effective.get("max_bytes") != 0,
        "core_logs": assume_set or not newer,  # before 2.53 a built-in default applied without the variable
        "process_output": newer and assume_set,
        "client_server_output": False,
        "job_driver_logs": False,
    }
    report = {
        "max_bytes": effective.get("max_bytes"),
        "backup_count": effective.get("backup_count"),
        "environment": env,
        "ray_rotates": [kind for kind in LOG_KINDS if rotated[kind]],
        "ray_leaves": [kind for kind in LOG_KINDS if not rotated[kind]],
        "logrotate_globs": logrotate_globs(version, assume_set),
        "configured_max_bytes": max_bytes,
        "configured_backup_count": backup_count,
        "in_effect": None,
        "message": None,
    }
    ray = "Ray %s on %s" % (version or "(version unknown)", where)
    running = "%s runs with log rotation at %s (--logging-rotate-* of its log_monitor)" % (
        ray, _settings_text(report["max_bytes"], report["backup_count"]))
    restart = ("Ray reads RAY_ROTATION_* only when it starts: restart Ray on this node (stop its "
               "own processes, then start it with the environment file loaded) after changing the file")
    problems = []
    if max_bytes is not None or backup_count is not None:
        for name, want, flag, from_env in (("RAY_ROTATION_MAX_BYTES", max_bytes, report["max_bytes"], env_bytes),
                                           ("RAY_ROTATION_BACKUP_COUNT", backup_count, report["backup_count"],
                                            env_count)):
            if want is None:
                continue
            if flag != want:
                unset = env is not None and name not in env
                problems.append("%s is %s, not the configured %d" % (
                    name, "unset (Ray's default %s applies)" % flag if unset else "?" if flag is None else flag, want))
            elif env is not None and from_env != want and (name == ROTATION_ENV[0] or from_env is not None):
                problems.append("%s is %s in its raylet's environment, not the configured %d"
                                % (name, env.get(name, "unset"), want))
        report["in_effect"] = not problems if (env is not None or problems) else None
        if problems:
            report["message"] = "%s; %s. %s." % (running, "; ".join(problems), restart)
    else:
        report["in_effect"] = None if cpp_set is None else cpp_set and report["max_bytes"] != 0
    if report["message"] is None and cpp_set is False and max_bytes is None:
        report["in_effect"] = False
        leaves = "python-core-*.log" + (", *.out and *.err" if newer else "")
        report["message"] = ("%s was started without RAY_ROTATION_MAX_BYTES (above 0) in its environment, so its C++ "
                             "processes do not rotate %s by Ray's settings%s; set it in the environment file Ray "
                             "starts with (rayops.disk.ray_log_config) and restart Ray"
                             % (ray, leaves, "" if newer else " (and this version never rotates *.out and *.err)"))
    if version is None and version_error:
        note = "Ray's version could not be read (%s): what Ray rotates is given as for Ray 2.40" % version_error
        report["message"] = "%s; %s" % (report["message"], note) if report["message"] else note
    return report


def describe_version(layout: RayLayout, tree: Tree, ray_uids: frozenset, ray_temp_dir: Optional[str]) -> None:
    """Set ``layout.ray_version``, ``version_error`` and ``rotation`` from its trusted processes.

    When another Ray runs here too, the Ray of the temp roots measured is the one described.
    """
    measured = [proc for proc in layout.trusted if set(named_roots(proc)) & set(layout.temp_roots)]
    if measured or not ray_temp_dir:
        layout.ray_version, layout.version_error = running_version(measured or layout.trusted, tree, ray_uids)
        layout.rotation = effective_rotation(measured or layout.trusted)
