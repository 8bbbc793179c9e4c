# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How full one target's disk is and what fills it: the measuring of ``ray_tmp_usage`` and of every cleanup.

``TargetReport(target, options, psutil).measure()`` scans a target (the host, or a container through its root)
and returns a plain dict.  Every byte scanned counts in exactly one category; ``sessions`` gives per-session
totals; ``spill_dirs`` the spill dirs outside the sessions.  ``_node`` runs it over the host and its containers.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from typing import Hashable, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, display_path
from ansible_collections.rayops.disk.plugins.module_utils._fs import UnsafePath, filesystems_under
from ansible_collections.rayops.disk.plugins.module_utils._options import LEVELS, UsageOptions, level_for
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import (
    Target,
    discover,
    latest_session,
    mark_live_sessions,
    session_of,
    session_started,
    user_label,
)
from ansible_collections.rayops.disk.plugins.module_utils._ray_spill import (
    SPILL_DIR_RE,
    SpillRoot,
    add_spill_roots,
    filesystem_type,
    live_node_ids,
    nodes_of_sessions,
    shared_filesystem,
)
from ansible_collections.rayops.disk.plugins.module_utils._ray_version import describe_version, rotation_report
from ansible_collections.rayops.disk.plugins.module_utils._scan import Notes, Root, Tally, scan
from ansible_collections.rayops.disk.plugins.module_utils._units import parse_size

CATEGORIES = ("live_session", "stale_sessions", "spilled_objects", "logs", "logs_old",
              "runtime_resources", "tmp_patterns", "uv_cache", "pymp_dirs", "other")
SPILL_PREFIX = "ray_spilled_objects"
PYMP_PREFIX = "pymp-"
"""Python's multiprocessing temp dirs (``util.get_temp_dir``), reported but not in the default patterns: a live
process keeps its dir's name for its life and cannot make it again once removed."""


def check_target_dir(target: Target, option: str, path: str) -> None:
    """A directory to work in on a target must exist there as a real directory, resolved inside its root."""
    where = path if target.prefix == "/" else "%s (in container %s)" % (path, target.name)
    try:
        os.close(target.tree.open_dir(path))
    except UnsafePath as exc:
        raise UsageError("%s %s: %s" % (option, where, exc.strerror)) from exc
    except FileNotFoundError as exc:
        raise UsageError("%s %s does not exist; create it or give the temp directory Ray uses" % (option, where)) \
            from exc
    except NotADirectoryError as exc:
        raise UsageError("%s %s is not a directory; give a directory such as /tmp" % (option, where)) from exc
    except OSError as exc:
        raise UsageError("%s %s cannot be opened: %s" % (option, where, exc.strerror or exc)) from exc


class RayTmpLayout:
    """Classifies entries of the tmp dir and Ray temp roots into categories.

    Keys: ``("pattern", glob, path)``, ``("pymp", path)``, ``("other", path)`` for the entries directly in the tmp
    dir or a Ray temp root (``path`` names the entry: what holds the bytes, ``holders``), ``("other",)`` and
    ``("uv",)`` for roots, and for a session ``(kind, root, name)`` with kind ``session`` (the rest of it),
    ``logs``, ``logs_old``, ``runtime_resources`` or ``spilled``.
    """

    def __init__(self, patterns: tuple) -> None:
        self.patterns = patterns

    def child(self, state: Hashable, key: Hashable, name: str, is_dir: bool) -> tuple:
        """The key and state of an entry from its parent's state."""
        kind = state[0]
        if kind == "tmp":
            if name.startswith(SPILL_PREFIX):
                return ("spilled", None, None), None
            path = os.path.join(state[1], name)
            for pattern in self.patterns:
                if fnmatch.fnmatchcase(name, pattern):
                    return ("pattern", pattern, path), None
            if is_dir and name.startswith(PYMP_PREFIX):
                return ("pymp", path), None
            return ("other", path), None
        if kind == "ray":
            if is_dir and session_started(name):
                session = ("session", state[1], name)
                return session, session
            if name.startswith(SPILL_PREFIX):
                return ("spilled", None, None), None
            return ("other", os.path.join(state[1], name)), None
        root, session = state[1], state[2]
        if kind == "session":
            if name == "logs" and is_dir:
                logs = ("logs", root, session)
                return logs, logs
            if name == "runtime_resources":
                return ("runtime_resources", root, session), None
            if name.startswith(SPILL_PREFIX):
                return ("spilled", root, session), None
            return key, None
        if name == "old" and is_dir:  # kind == "logs"
            return ("logs_old", root, session), None
        return key, None


SESSION_PARTS = ("session", "logs", "logs_old", "runtime_resources", "spilled")


def session_of_key(key: tuple) -> Optional[tuple]:
    """``(root, session name)`` for a key that lies in a session, else None."""
    if key[0] in SESSION_PARTS and key[2]:
        return key[1], key[2]
    return None


def _within(path: str, parent: str) -> bool:
    path, parent = os.path.normpath(path), os.path.normpath(parent)
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _figures(tally) -> dict:
    return {"bytes": tally.bytes, "apparent_bytes": tally.apparent_bytes, "files": tally.files}


class SpillDirs:
    """The node dirs (``ray_spilled_objects_<node id>``) of Ray's spill directories outside its sessions.

    A spill directory is named by a trusted Ray process (``discover``) or by ``spill_dirs`` (the host's), and
    opened inside the target only as a path the users trusted for it control (the process's user and root; for
    ``spill_dirs`` root and ``ray_users``), never through a link.  Each node dir directly in it is a scan root of
    its own, keyed by its node's session (the session of a raylet running the node, else the session whose files
    name it), so its bytes are that session's ``spilled_bytes`` and ``spilled_objects``, never ``other``.  A spill
    directory in a session (Ray's default) is left to the session's layout, as are its node dirs.
    """

    def __init__(self, target: Target, layout, options: UsageOptions, notes: Notes) -> None:
        self.target = target
        self.layout = layout
        self.notes = notes
        trusted = frozenset(options.ray_uids) | {0}
        self.wanted = list(layout.spill_roots) + [SpillRoot(os.path.normpath(path), "option", None, trusted)
                                                  for path in options.spill_dirs]
        self.named: list = []
        """One entry per spill directory looked at: where it came from, and what became of it."""
        self.dirs: list = []
        self._session_files: Optional[dict] = None

    def roots(self, existing: list) -> list:
        """``(path, Root)`` of every node dir to scan, besides the ``existing`` roots (none measured twice)."""
        idents = set()
        for _path, root in existing:
            try:
                fd = root.open()
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                idents.add((st.st_dev, st.st_ino))
            finally:
                os.close(fd)
        found, seen = [], set()
        for spill_root in self.wanted:
            if spill_root.path in seen:
                continue
            seen.add(spill_root.path)
            entry = {"path": spill_root.path, "source": spill_root.source, "pid": spill_root.pid, "status": "measured",
                     "reason": None, "filesystem_type": None, "node_dirs": 0}
            self.named.append(entry)
            in_session = session_of(spill_root.path)
            if in_session and session_started(in_session[1]):
                entry.update(status="in_session", reason="inside session %s: counted with it" % in_session[1])
                continue
            found += self._node_dirs(spill_root, entry, idents)
        for refused in self.layout.spill_refused:
            reason = "not safe, not measured or cleaned: %s" % refused["reason"]
            self.named.append({"path": refused["path"], "source": refused["source"], "pid": refused["pid"],
                               "status": "refused", "reason": reason, "filesystem_type": None, "node_dirs": 0})
            self.notes.error(self.target.host_path(refused["path"]), "spill directory named by %s pid %d is %s"
                             % (refused["source"].split(":")[-1], refused["pid"], reason))
        return found

    def _node_dirs(self, spill_root, entry: dict, idents: set) -> list:
        tree = self.target.tree
        try:
            fd = tree.open_dir(spill_root.path, trusted_uids=spill_root.trusted_uids)
        except FileNotFoundError:
            entry.update(status="missing", reason="does not exist (nothing spilled there yet)")
            return []
        except OSError as exc:
            reason = exc.strerror or str(exc)
            fix = "; name a real directory that only root and ray_users can change" \
                if spill_root.source == "option" else ""
            entry.update(status="refused", reason="not safe, not measured or cleaned: %s%s" % (reason, fix))
            self.notes.error(tree.host_path(spill_root.path),
                             "spill directory (%s) %s" % (spill_root.source, entry["reason"]))
            return []
        listed = []
        try:
            entry["filesystem_type"] = filesystem_type(fd, self.target.mountinfo())
            with os.scandir(fd) as entries:
                for item in entries:
                    match = SPILL_DIR_RE.match(item.name)
                    if match:
                        try:
                            listed.append((item.name, match.group(1), item.stat(follow_symlinks=False)))
                        except OSError:
                            continue
        except OSError as exc:
            self.notes.error(tree.host_path(spill_root.path), exc.strerror or str(exc))
        finally:
            os.close(fd)
        found = []
        for name, node, st in sorted(listed):
            inner = os.path.join(spill_root.path, name)
            if stat.S_ISLNK(st.st_mode):
                self.notes.skip(tree.host_path(inner), "symlink, not followed")
                continue
            if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) in idents:
                continue
            idents.add((st.st_dev, st.st_ino))
            session, session_from = self._session_of(node)
            key = ("spilled",) + (session or (None, None)) + (inner,)
            self.dirs.append({"path": inner, "root": spill_root.path, "source": spill_root.source, "node": node,
                              "session": session, "session_from": session_from, "key": key,
                              "filesystem_type": entry["filesystem_type"]})
            found.append((inner, Root(tree.host_path(inner), key, None, mountinfo=self.target.mountinfo(),
                                      inner_path=inner, tree=tree)))
        entry["node_dirs"] = len(found)
        return found

    def _session_of(self, node: str) -> tuple:
        """``((temp root, session), how it is known)`` of a node, or ``(None, None)``."""
        if node in self.layout.nodes:
            return self.layout.nodes[node], "raylet"
        if self._session_files is None:
            self._session_files = nodes_of_sessions(self.target.tree, self.layout.temp_roots)
        session = self._session_files.get(node)
        return (session, "session_files") if session else (None, None)

    def report(self, tallies: dict, sessions: list, psutil, now: float) -> list:
        """Each node dir measured: its node, session, status (``live``, ``stale``, ``unknown``) and why, and size."""
        if not self.dirs:
            return []
        running = live_node_ids(psutil)
        by_session = {(s["root"], s["name"]): s for s in sessions}
        found = []
        for spill in self.dirs:
            tally = tallies.get(spill["key"]) or Tally()
            session = by_session.get(spill["session"]) if spill["session"] else None
            status, reason = self._status(spill, running, session)
            found.append({
                "path": spill["path"], "root": spill["root"], "source": spill["source"], "node_id": spill["node"],
                "session": spill["session"][1] if spill["session"] else None,
                "session_path": os.path.join(*spill["session"]) if spill["session"] else None,
                "session_from": spill["session_from"], "status": status, "reason": reason,
                "bytes": tally.bytes, "apparent_bytes": tally.apparent_bytes, "files": tally.files,
                "age_hours": round(max(0.0, now - tally.newest_mtime) / 3600.0, 2),
            })
        return sorted(found, key=lambda item: item["path"])

    @staticmethod
    def _status(spill: dict, running: dict, session: Optional[dict]) -> tuple:
        node = spill["node"]
        if node in running:
            return "live", "raylet pid %d runs node %s" % (running[node], node)
        if session is not None and session["live"]:
            return "live", "its session %s is live (%s)" % (session["name"], session["live_reason"])
        if shared_filesystem(spill["filesystem_type"]):
            return "unknown", ("on a %s filesystem, which other machines may mount: their Ray nodes may spill "
                               "here, so it is never cleaned" % (spill["filesystem_type"] or "unknown"))
        where = "its session %s is not live" % session["name"] if session else "no session here names the node"
        return "stale", "no raylet on this machine runs node %s; %s" % (node, where)


class TargetReport:
    """Measures one target (the host or a container) and shapes its report."""

    def __init__(self, target: Target, options: UsageOptions, psutil, environ: Optional[dict] = None,
                 now: Optional[float] = None) -> None:
        self.target = target
        self.options = options
        self.psutil = psutil
        self.environ = environ
        self.now = time.time() if now is None else now
        self.held: dict = {}
        """What the last ``measure`` found in each entry directly in the tmp dir and the Ray temp roots (sessions
        whole): ``{path: [bytes, inodes]}``, for ``holders``."""

    def _roots(self, ray_roots: list, notes: Notes) -> list:
        """The dirs to scan: tmp_dir, each existing Ray root, the uv cache; each once."""
        wanted = [(self.options.tmp_dir, ("other",), ("tmp", self.options.tmp_dir))]
        wanted += [(root, ("other",), ("ray", root)) for root in ray_roots]
        if self.options.uv_cache_dir:
            wanted.append((self.options.uv_cache_dir, ("uv",), None))
        roots, seen = [], {}
        tree = self.target.tree
        for path, key, state in wanted:
            on_host = tree.host_path(path)
            try:
                fd = tree.open_dir(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                notes.error(on_host, exc.strerror or str(exc))
                continue
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            root = Root(on_host, key, state, mountinfo=self.target.mountinfo(), inner_path=path, tree=tree)
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                roots[seen[ident]] = (path, root)  # the more specific layout wins
                continue
            seen[ident] = len(roots)
            roots.append((path, root))
        return roots

    def measure(self) -> dict:
        """Scan the target and return its report (without containers)."""
        opts = self.options
        # A container is measured with ``for_container()`` options: its tmp_dir is container_tmp_dir.
        check_target_dir(self.target, "tmp_dir" if self.target.prefix == "/" else "container_tmp_dir", opts.tmp_dir)
        layout = discover(self.target, self.psutil, opts.tmp_dir, opts.ray_temp_dir, self.environ, opts.ray_uids)
        describe_version(layout, self.target.tree, opts.ray_uids, opts.ray_temp_dir)
        add_spill_roots(layout, layout.trusted, self.target.tree)
        notes = Notes()
        for refused in layout.refused_roots:
            notes.error(self.target.host_path(refused["path"]), "Ray's default temp root is not safe (%s): its "
                        "entries count as the tmp dir's, never as Ray's" % refused["reason"])
        roots = self._roots(layout.temp_roots, notes)
        spill = SpillDirs(self.target, layout, opts, notes)
        roots += spill.roots(roots)
        result = scan([root for _path, root in roots], RayTmpLayout(tuple(opts.patterns)), opts.scan_workers)
        notes.merge(result.notes)
        found = {session_of_key(key) for key in result.tallies} - {None}
        mark_live_sessions(layout, found, self.target, self.psutil)
        sessions = self._sessions(result.tallies, layout)
        live = {(s["root"], s["name"]) for s in sessions if s["live"]}
        categories = self._categories(result.tallies, live)
        tmp_bytes = sum(total.bytes for (path, _root), total in zip(roots, result.root_totals)
                        if _within(path, opts.tmp_dir))
        filesystems = self._filesystems([path for path, _root in roots] or [opts.tmp_dir])
        self.held = held_entries(result.tallies)
        report = {
            "filesystem": filesystems[0],
            "filesystems": filesystems,
            "level": max((fs["level"] for fs in filesystems), key=LEVELS.index),
            "tmp_dir": opts.tmp_dir,
            "tmp_bytes": tmp_bytes,
            "scanned_bytes": sum(total.bytes for total in result.root_totals),
            "ray_temp_dirs": layout.temp_roots,
            "node_role": layout.node_role,
            "ray_processes": layout.processes,
            "untrusted_processes": layout.untrusted,
            "ray_version": layout.ray_version,
            "log_rotation": rotation_report(
                layout.ray_version, layout.rotation,
                None if opts.rotation_max_bytes is None else parse_size(opts.rotation_max_bytes, "rotation_max_bytes"),
                opts.rotation_backup_count, self.target.name, layout.version_error),
            "categories": categories,
            "holders": holders(self.held, self.target.tree),
            "sessions": [{k: v for k, v in s.items() if k != "root"} for s in sessions],
            "spill_dirs": spill.report(result.tallies, sessions, self.psutil, self.now),
            "spill_roots": spill.named,
            "errors": notes.errors,
            "error_count": notes.error_count,
            "not_measured": notes.skipped,  # not "skipped": Ansible reads that key as a skipped task
            "not_measured_count": notes.skipped_count,
        }
        return report

    def _filesystems(self, paths: list) -> list:
        found = []
        for _path, _dev, fs in filesystems_under(self.target.tree, paths, skipped=(OSError,)):
            fs["level"] = level_for(fs["used_percent"], self.options.thresholds)
            found.append(fs)
        return found

    def _sessions(self, tallies: dict, layout) -> list:
        by_session: dict = {}
        for key, tally in tallies.items():
            session = session_of_key(key)
            if session:  # a session's spill dirs elsewhere (``SpillDirs``) add to its own "spilled"
                by_session.setdefault(session, {}).setdefault(key[0], Tally()).add(tally)
        latest = {root: latest_session(self.target.tree, root) for root in layout.temp_roots}
        sessions = []
        for (root, name), parts in sorted(by_session.items(), key=lambda item: item[0][1]):
            reason = layout.live_sessions.get((root, name))
            newest = max(t.newest_mtime for t in parts.values())
            started = session_started(name)
            sessions.append({
                "root": root,
                "name": name,
                "path": os.path.join(root, name),
                "live": reason is not None,
                "live_reason": reason,
                "latest": latest.get(root) == name,
                "started": started.isoformat() if started else None,
                "age_hours": round(max(0.0, self.now - newest) / 3600.0, 2),
                "bytes": sum(t.bytes for t in parts.values()),
                "files": sum(t.files for t in parts.values()),
                "spilled_bytes": parts["spilled"].bytes if "spilled" in parts else 0,
                "logs_bytes": parts["logs"].bytes if "logs" in parts else 0,
                "logs_old_bytes": parts["logs_old"].bytes if "logs_old" in parts else 0,
                "logs_old_files": parts["logs_old"].files if "logs_old" in parts else 0,
                "runtime_resources_bytes": parts["runtime_resources"].bytes if "runtime_resources" in parts else 0,
            })
        return sessions

    def _categories(self, tallies: dict, live: set) -> dict:
        totals = {name: Tally() for name in CATEGORIES}
        by_pattern = {pattern: Tally() for pattern in self.options.patterns}
        names = {"spilled": "spilled_objects", "logs": "logs", "logs_old": "logs_old",
                 "runtime_resources": "runtime_resources", "uv": "uv_cache", "pymp": "pymp_dirs", "other": "other"}
        for key, tally in tallies.items():
            kind = key[0]
            if kind == "pattern":
                by_pattern[key[1]].add(tally)
                totals["tmp_patterns"].add(tally)
            elif kind == "session":
                totals["live_session" if (key[1], key[2]) in live else "stale_sessions"].add(tally)
            else:
                totals[names[kind]].add(tally)
        categories = {name: _figures(tally) for name, tally in totals.items()}
        categories["tmp_patterns"]["by_pattern"] = {p: _figures(t) for p, t in by_pattern.items()}
        return categories


HOLDERS_LISTED = 5
"""Paths and owners ``holders`` lists by bytes and by inodes."""


def held_entries(tallies: dict) -> dict:
    """``{path: [bytes, inodes]}`` of every entry directly in the tmp dir or a Ray temp root, from a scan's tallies.

    A session counts whole (its logs, spill, runtime resources with it); inodes are its files and directories.
    """
    found: dict = {}
    for key, tally in tallies.items():
        if key[0] in ("other", "pymp") and len(key) == 2:
            path = key[1]
        elif key[0] == "pattern" and len(key) == 3:
            path = key[2]
        else:
            session = session_of_key(key) if len(key) >= 3 else None
            if session is None:
                continue
            path = os.path.join(*session)
        figures = found.setdefault(path, [0, 0])
        figures[0] += tally.bytes
        figures[1] += tally.files + tally.dirs
    return found


def holders(held: dict, tree, limit: int = HOLDERS_LISTED) -> dict:
    """Who and what holds the measured dirs: the largest entries by bytes and by inodes, and the owners' totals.

    ``held``: ``held_entries``.  Each entry is looked at now (``lstat`` inside ``tree``, one directory fd per
    parent): its owner, and one gone since (removed by a reclaim) is left out.
    """
    by_parent: dict = {}
    for path in held:
        parent, name = os.path.split(path)
        by_parent.setdefault(parent, []).append(name)
    present, owners = [], {}
    for parent, names in by_parent.items():
        try:
            fd = tree.open_dir(parent)
        except OSError:
            continue
        try:
            for name in names:
                try:
                    uid = os.lstat(name, dir_fd=fd).st_uid
                except OSError:
                    continue
                path = os.path.join(parent, name)
                size, inodes = held[path]
                present.append({"path": display_path(path), "owner": user_label(uid), "uid": uid, "bytes": size,
                                "inodes": inodes})
                total = owners.setdefault(uid, {"owner": user_label(uid), "uid": uid, "bytes": 0, "inodes": 0,
                                                "entries": 0})
                total["bytes"] += size
                total["inodes"] += inodes
                total["entries"] += 1
        finally:
            os.close(fd)
    return {"paths": sorted(present, key=lambda item: (-item["bytes"], item["path"]))[:limit],
            "by_inodes": sorted(present, key=lambda item: (-item["inodes"], item["path"]))[:limit],
            "owners": sorted(owners.values(), key=lambda item: (-item["bytes"], item["uid"]))[:limit],
            "owners_by_inodes": sorted(owners.values(), key=lambda item: (-item["inodes"], item["uid"]))[:limit]}


def default_uv_cache_dir() -> str:
    """``$UV_CACHE_DIR``, else ``~/.cache/uv`` of the user running this."""
    return os.environ.get("UV_CACHE_DIR") or os.path.expanduser("~/.cache/uv")


def beyond_cleanup(report: dict, options: UsageOptions) -> list:
    """What fills the disk that cleanup does not take (``by_cleanup: false``): orphaned spill, the uv cache."""
    found = []
    spill_dirs = report.get("spill_dirs") or []
    orphan_spill = report["categories"]["spilled_objects"]["bytes"] - sum(s["spilled_bytes"] for s in report["sessions"])
    orphan_spill -= sum(d["bytes"] for d in spill_dirs if d["session_path"] is None)  # node dirs: their own status
    if orphan_spill > 0:
        found.append({"action": "remove_orphaned_spill", "bytes": orphan_spill, "paths": [], "by_cleanup": False})
    uv = report["categories"]["uv_cache"]
    if uv["bytes"]:
        found.append({"action": "prune_uv_cache", "bytes": uv["bytes"], "paths": [options.uv_cache_dir],
                      "by_cleanup": False})
    return found
