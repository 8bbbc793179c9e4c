# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where Ray spills objects outside its sessions, whose node each spill dir is, and whether that node runs.

gcs_server's ``--config_list`` (base64 JSON holding ``object_spilling_config``,
all versions) and the raylet's ``--fallback_directory`` (2.53+) name the
directories; each node spills into ``ray_spilled_objects_<node id>`` there.
Only trusted processes may name a spill directory, and it must pass the same
checks as a temp root.  docs/ray-versions.md has the facts per version.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._fs import (
    Tree,
    UnsafePath,
    is_filesystem_root,
    mount_id,
    open_dir,
    open_regular,
    read_head,
)
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import (
    KIND_ORDER,
    RayLayout,
    RayProcess,
    flag_value,
    iter_ray_processes,
    named_sessions,
    session_of,
    session_started,
)

SPILL_DIR_RE = re.compile(r"^ray_spilled_objects_([0-9a-f]{56})$")
"""``ray_spilled_objects_<node id>``: where one Ray node spills objects (a node id is 28 bytes, in hex)."""
NODE_ID_RE = re.compile(r"^[0-9a-f]{56}$")
_PORT_FILE_NODE = re.compile(r"_port_([0-9a-f]{56})$")
_DEBUG_STATE_NODE = re.compile(rb"^Node ID: ([0-9a-f]{56})$", re.M)
DEBUG_STATE_MAX = 4096
"""Bytes read at most from the top of a session's ``logs/debug_state.txt``."""
SHARED_FILESYSTEMS = frozenset(("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs",
                                "beegfs", "9p", "afs", "ocfs2", "gfs2", "virtiofs", "orangefs", "pvfs2", "davfs"))
"""Filesystems other machines may mount too: a node id that runs nowhere here may run there."""
LOCAL_FUSE = frozenset(("fuse.fuse-overlayfs", "fuse.squashfuse"))


@dataclass(frozen=True)
class SpillRoot:
    """A directory Ray spills into (its nodes make ``ray_spilled_objects_<node id>`` there), and who named it.

    ``trusted_uids``: the users who alone may control the path (checked whenever it is opened), as for a temp
    root a process names: root and the process's user.
    """

    path: str
    source: str
    pid: Optional[int] = None
    trusted_uids: Optional[frozenset] = None


def decode_config_list(value: Optional[str]) -> dict:
    """gcs_server's ``--config_list``: Ray's system config, JSON in base64; ``{}`` when absent or malformed."""
    if not value:
        return {}
    try:
        data = json.loads(base64.b64decode(value, validate=True).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):  # binascii.Error and JSONDecodeError are ValueErrors
        return {}
    return data if isinstance(data, dict) else {}


def spill_paths(config: dict) -> list:
    """The directories of a system config's ``object_spilling_config`` of type ``filesystem``, in order.

    The setting is itself a JSON string (an object is taken too); its ``params.directory_path`` is a path or a
    list of paths.  ``object_spilling_directory`` (a system config key since 2.53) adds one more.
    """
    found: list = []
    spilling = config.get("object_spilling_config")
    if isinstance(spilling, str):
        try:
            spilling = json.loads(spilling) if spilling.strip() else None
        except ValueError:
            spilling = None
    if isinstance(spilling, dict) and spilling.get("type") == "filesystem" and isinstance(spilling.get("params"), dict):
        paths = spilling["params"].get("directory_path")
        found += [paths] if isinstance(paths, str) else [p for p in paths if isinstance(p, str)] \
            if isinstance(paths, list) else []
    directory = config.get("object_spilling_directory")
    if isinstance(directory, str):
        found.append(directory)
    return found


def named_spill_roots(proc: RayProcess) -> list:
    """The spill directories a Ray process's command line names: absolute, normalised, never ``/``.

    gcs_server's ``--config_list`` holds the cluster's ``object_spilling_config`` (2.40, 2.53, 2.60; by
    default the session dir).  A raylet's ``--fallback_directory`` (2.53+) is the first spill directory its node
    was started with, else its session dir (or the temp dir when spilling does not go to a filesystem).
    """
    if proc.kind == "gcs_server":
        paths = spill_paths(decode_config_list(flag_value(proc.cmdline, "--config_list")))
    elif proc.kind == "raylet":
        paths = [flag_value(proc.cmdline, "--fallback_directory") or ""]
    else:
        return []
    roots = [os.path.normpath(path) for path in paths if os.path.isabs(path) and not is_filesystem_root(path)]
    return list(dict.fromkeys(roots))


def add_spill_roots(layout: RayLayout, processes: Iterable[RayProcess], tree: Tree) -> None:
    """The spill roots and live nodes that trusted Ray processes name, into ``layout``.

    A spill directory is used only when, like a temp root a process names, it is a path only root and that
    process's user control (``open_beneath`` with trusted uids); one that is not goes to ``spill_refused`` with
    the reason.  One that does not exist yet is kept (nothing was spilled there), and so is one inside a session
    (Ray's default, the session dir), unchecked: it is never opened as a spill directory (``_usage.SpillDirs``).
    """
    seen = set()
    for proc in sorted(processes, key=lambda p: (KIND_ORDER.index(p.kind), p.pid)):
        if proc.kind == "raylet":
            node = flag_value(proc.cmdline, "--node_id") or ""
            sessions = named_sessions(proc)
            if NODE_ID_RE.match(node) and sessions:
                layout.nodes.setdefault(node, sessions[0])
        for path in named_spill_roots(proc):
            if path in seen:
                continue
            seen.add(path)
            uids = frozenset((0, proc.uid))
            source = "process:%s" % proc.kind
            in_session = session_of(path)
            if in_session and session_started(in_session[1]):  # Ray's default: the session's layout counts it
                layout.spill_roots.append(SpillRoot(path, source, proc.pid, uids))
                continue
            try:
                os.close(tree.open_dir(path, trusted_uids=uids))
            except FileNotFoundError:
                pass
            except OSError as exc:
                layout.spill_refused.append({"path": path, "source": source, "pid": proc.pid,
                                             "reason": exc.strerror or str(exc)})
                continue
            layout.spill_roots.append(SpillRoot(path, source, proc.pid, uids))


def live_node_ids(psutil) -> dict:
    """``{node id: pid}`` of every process on this machine that says it is a raylet, in any namespace, trusted or not.

    Only what is kept depends on it (a node counts as running when anything claims to run it), so a process
    nobody trusts may keep a spill directory, never lose one.
    """
    found: dict = {}
    for proc, kind, _title, cmdline in iter_ray_processes(psutil, None):
        if kind == "raylet":
            node = flag_value(cmdline, "--node_id")
            if node:
                found.setdefault(node, proc.pid)
    return found


def _read_top(dir_fd: int, name: str, limit: int) -> bytes:
    """The first ``limit`` bytes of a regular file in an open directory (any owner's); ``b""`` for anything else.

    A link, fifo, socket or device node is never opened (``_fs.open_regular``): Ray's session dirs are 0777.
    """
    try:
        fd = open_regular(name, dir_fd=dir_fd)
    except UnsafePath:
        return b""
    try:
        return read_head(fd, limit)
    finally:
        os.close(fd)


def session_node_ids(root_fd: int, name: str) -> set:
    """Node ids a session's own files name (the session ``name`` in the temp root open as ``root_fd``).

    2.60 writes ``<what>_port_<node id>`` files in the session; every version's raylet writes
    ``logs/debug_state.txt`` at once, starting ``NodeManager:`` / ``Node ID: <node id>``.  Everything is opened
    relative to its parent without following a link.  Ray's session dirs are world-writable: what they say only
    tells which session a node belonged to, never whether it runs.
    """
    found: set = set()
    try:
        session_fd = open_dir(name, dir_fd=root_fd)
    except OSError:
        return found
    try:
        for entry in os.listdir(session_fd):
            match = _PORT_FILE_NODE.search(entry)
            if match:
                found.add(match.group(1))
        logs_fd = open_dir("logs", dir_fd=session_fd)
        try:
            found.update(node.decode() for node in
                         _DEBUG_STATE_NODE.findall(_read_top(logs_fd, "debug_state.txt", DEBUG_STATE_MAX)))
        finally:
            os.close(logs_fd)
    except OSError:
        pass
    finally:
        os.close(session_fd)
    return found


def nodes_of_sessions(tree: Tree, temp_roots: Iterable[str]) -> dict:
    """``{node id: (temp root, session name)}`` from the files of every session in ``temp_roots``.

    A node id that two sessions claim belongs to neither (None).
    """
    found: dict = {}
    for root in temp_roots:
        try:
            root_fd = tree.open_dir(root)
        except OSError:
            continue
        try:
            names = sorted(name for name in os.listdir(root_fd) if session_started(name))
            for name in names:
                for node in session_node_ids(root_fd, name):
                    found[node] = None if node in found and found[node] != (root, name) else (root, name)
        except OSError:
            continue
        finally:
            os.close(root_fd)
    return found


def filesystem_type(fd: int, mountinfo: str) -> Optional[str]:
    """The type (``ext4``, ``nfs4``...) of the filesystem of an open directory, from the mount table; None if unknown."""
    mnt = mount_id(fd)
    if mnt is None:
        return None
    try:
        with open(mountinfo, "rb") as table:
            for line in table:
                fields = line.split()
                if fields and fields[0] == b"%d" % mnt and b"-" in fields[6:]:
                    index = fields.index(b"-", 6)
                    return fields[index + 1].decode("utf-8", "replace") if index + 1 < len(fields) else None
    except (OSError, ValueError):
        return None
    return None


def shared_filesystem(fs_type: Optional[str]) -> bool:
    """Whether other machines may mount this filesystem too (network, cluster, FUSE), or its type is unknown."""
    if fs_type is None:
        return True
    return fs_type in SHARED_FILESYSTEMS or (fs_type.startswith("fuse") and fs_type not in LOCAL_FUSE)
