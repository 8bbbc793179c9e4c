# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every table and line a person reads: the CLI's output and the playbooks' fleet tables.

The modules and the CLI return data; this module alone turns it into text, so the CLI, the playbooks and the
logs print the same sizes (``format_bytes``: IEC labels), the same statuses and the same reasons.  Tables have
columns two or more spaces apart and no empty cell (``-``), so a person's eye and a script's split agree.

Private to the rayops.disk collection: not a public API.  No Ansible imports (the ``rayops.disk`` filter
plugins call it on the controller).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from ansible_collections.rayops.disk.plugins.module_utils._errors import printable
from ansible_collections.rayops.disk.plugins.module_utils._fs import mountpoint_of
from ansible_collections.rayops.disk.plugins.module_utils._remove import MAX_LISTED
from ansible_collections.rayops.disk.plugins.module_utils._units import format_bytes
from ansible_collections.rayops.disk.plugins.module_utils._usage import CATEGORIES

REASON_WIDTH = 110
"""Longest reason printed in a table; longer ones lose their middle, never their end (where the cause is)."""

NODE_STATUSES = ("unreachable", "failed")
"""What the controller knows of a node before any module result: ranked above every status a module returns."""


def shorten(text: str, width: int = REASON_WIDTH) -> str:
    """``text`` on one line, at most ``width`` characters: a long one keeps its start and its end."""
    flat = printable(" ".join(str(text).split()))
    if len(flat) <= width:
        return flat
    head = (width - 5) // 2
    return flat[:head].rstrip() + " ... " + flat[len(flat) - (width - 3 - head) + 2:].lstrip()


def table(header: Sequence[str], rows: Sequence[Sequence], right: Sequence[int] = (), indent: str = "") -> list:
    """Lines of a table: columns two spaces apart, ``right`` ones right-aligned, ``-`` for an empty cell."""
    cells = [[_cell(value) for value in row] for row in [header] + list(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [cell.rjust(width) if i in right else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def _cell(value) -> str:
    text = " ".join(printable(str(value)).split()) if value is not None else ""
    return text or "-"


def percent(value: Optional[float], projected: bool = False, sign: str = "") -> str:
    """``41.2`` (``~41.2`` when projected; ``sign``: ``41.2%``), ``-`` when unknown."""
    if value is None:
        return "-"
    return ("~" if projected else "") + "%.1f" % value + sign


def size(value: Optional[float]) -> str:
    """``format_bytes``, or ``-`` when unknown."""
    return "-" if value is None else format_bytes(value)


def connection_reason(message: Optional[str]) -> str:
    """Why a node could not be reached, as its transport said it, without Ansible's preamble."""
    lines = [line.strip() for line in str(message or "unreachable").splitlines() if line.strip()]
    last = lines[-1] if lines else "unreachable"
    for prefix in ("Failed to connect to the host via ssh: ", "Task failed: "):
        if last.startswith(prefix):
            last = last[len(prefix):]
    return shorten(last)


def failure_reason(message: Optional[str]) -> str:
    """Why a task failed on a reached node: its message's first line, without Ansible's preamble."""
    lines = [line.strip() for line in str(message or "failed").splitlines() if line.strip()]
    first = lines[0] if lines else "failed"
    if first.startswith("Task failed: "):
        first = first[len("Task failed: "):]
    sentence = first.split(". ")[0]
    return shorten(sentence if len(first) > REASON_WIDTH and len(sentence) >= 20 else first)


def node_outcome(host: dict) -> tuple:
    """``(status, reason)`` of a node from what the controller saw: unreachable, failed, else its module's."""
    if host.get("unreachable"):
        return "unreachable", connection_reason(host["unreachable"])
    if host.get("failure"):
        return "failed", failure_reason(host["failure"])
    result = host.get("result")
    if not result:
        return "failed", "did not run"
    if "level" in result:  # ray_tmp_usage's report
        return report_outcome(result)
    return result.get("outcome") or "failed", shorten(result.get("outcome_reason") or "-")


def cleanup_table(hosts: Sequence[dict], check: bool) -> list:
    """The fleet table of ``ray_cleanup_now.yml``: a row per node, a line per target beneath it.

    ``hosts``: ``{"host", "result" (ray_worker_cleanup's), "unreachable", "failure" (messages), "seconds"}``.
    """
    title = "Ray cleanup now"
    if check:
        title += " - DRY RUN (--check): nothing was removed; '~' marks a projected used % (before minus what " \
                 "would be freed)"
    rows, targets, statuses, freed = [], [], [], 0
    for host in hosts:
        status, reason = node_outcome(host)
        statuses.append(status)
        result = host.get("result") or {}
        disk = result.get("disk") or {}
        if status not in NODE_STATUSES:
            freed += result.get("freed_bytes") or 0
        rows.append((host["host"], percent(disk.get("used_percent_before")),
                     percent(disk.get("used_percent_after"), disk.get("projected", False)),
                     size(result.get("freed_bytes") if status not in NODE_STATUSES else None),
                     "-" if host.get("seconds") is None else "%.1f s" % host["seconds"], status, reason))
        targets.append([(target["name"], size(target.get("tmp_bytes_before")), size(target.get("tmp_bytes_after")),
                         size(target.get("freed_bytes")), target_status(target, check),
                         shorten(target.get("reason") or "-"))
                        for target in (result.get("targets") or [] if status not in NODE_STATUSES else [])])
    header = ("host", "used % before", "used % after", "freed", "duration", "status", "reason")
    main = table(header, rows, right=(1, 2, 3, 4))
    sub_header = ("target", "tmp before", "tmp after", "freed", "status", "reason")
    sub = table(sub_header, [t for group in targets for t in group], right=(1, 2, 3), indent="  ")
    lines = [title, main[0], sub[0]]
    position = 1
    for index, row_line in enumerate(main[1:]):
        lines.append(row_line)
        lines += sub[position:position + len(targets[index])]
        position += len(targets[index])
    lines.append(footer(statuses, "%s %s" % (format_bytes(freed), "would be freed" if check else "freed")))
    return lines


def target_status(target: dict, check: bool) -> str:
    """A cleanup target's status as printed: ``would_clean`` for ``cleaned`` in a dry run."""
    return "would_clean" if check and target.get("status") == "cleaned" else target.get("status") or "-"


def footer(statuses: Sequence[str], tail: str) -> str:
    """``N node(s): 2 cleaned, 1 unreachable; <tail>``, the statuses in the order of their first row."""
    counts: dict = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return "%d node(s): %s; %s" % (len(statuses), ", ".join("%d %s" % (n, s) for s, n in counts.items()) or "none",
                                   tail)


def report_table(hosts: Sequence[dict]) -> list:
    """The fleet table of ``ray_disk_report.yml``: a row per node.

    ``hosts``: ``{"host", "result" (ray_tmp_usage's), "unreachable", "failure"}``.  "held open" is what deleted
    files still open hold on the host and its containers: space no deletion frees until the holder closes them.
    """
    rows, statuses = [], []
    for host in hosts:
        result = host.get("result") or {}
        status, reason = node_outcome(host)
        statuses.append(status)
        if status in NODE_STATUSES:
            rows.append((host["host"], status) + ("-",) * 8 + (reason,))
            continue
        fs = result["filesystem"]
        targets = [result] + list(result.get("containers") or [])
        freeable = sum(freeable_bytes(target) for target in targets)
        held = sum((target.get("deleted_open") or {}).get("bytes", 0) for target in targets)
        rows.append((host["host"], status, result["level"], "%.1f" % fs["used_percent"],
                     percent(fs.get("inodes_used_percent")), format_bytes(fs["free_bytes"]),
                     format_bytes(result["tmp_bytes"]), sum(1 for s in result["sessions"] if not s["live"]),
                     format_bytes(freeable), format_bytes(held), reason))
    header = ("host", "status", "level", "used %", "inodes %", "free", "tmp", "stale", "freeable", "held open",
              "reason")
    lines = table(header, rows, right=(3, 4, 5, 6, 7, 8, 9))
    return ["Ray disk report: fleet"] + lines + [footer(statuses, "see each node's report above")]


def report_outcome(report: dict) -> tuple:
    """``(status, reason)`` of a reached node's usage report: ``error`` when part of it could not be measured."""
    if report.get("containers_error"):
        return "error", shorten(report["containers_error"])
    broken = [c for c in report.get("containers") or [] if c.get("error")]
    if broken:
        return "error", shorten("container %s: %s" % (broken[0]["name"], broken[0]["error"]))
    if report.get("level") == "critical":
        return "ok", shorten(report.get("summary") or "-")
    return "ok", "-"


KEPT_WORDS = {"fresh": "too new", "excluded": "excluded", "open": "open", "locked": "locked",
              "live_socket": "a live socket", "device": "a device", "mount_point": "a mount point",
              "other_filesystem": "on another filesystem", "changed": "changed meanwhile",
              "not_empty": "kept its contents", "other_user": "another user's (under pressure only root's and "
              "ray_users' go)"}
"""What each reason the remover keeps an entry for means, in the words of a table."""


def kept_text(kept_by_reason: dict) -> str:
    """``kept 12: 9 too new, 3 open``, or ``""`` when nothing was kept."""
    total = sum(kept_by_reason.values())
    if not total:
        return ""
    parts = ["%d %s" % (count, KEPT_WORDS.get(why, why)) for why, count in
             sorted(kept_by_reason.items(), key=lambda item: (-item[1], item[0]))]
    return "kept %d: %s" % (total, ", ".join(parts))


SUGGESTED = {"clean_tmp_patterns": "litter matching patterns in %(where)s",
             "remove_stale_sessions": "stale Ray sessions",
             "clean_old_logs": "logs/old of the sessions",
             "remove_stale_spill": "spill dirs of Ray nodes that no longer run here",
             "remove_orphaned_spill": "spilled objects outside any session (left by crashed workers)",
             "prune_uv_cache": "the uv cache"}


def suggestion_message(item: dict, options) -> str:
    """One line for a suggestion: what, how much cleanup would free (and keep, and why) or what frees it."""
    what = SUGGESTED.get(item["action"], item["action"]) % {"where": options.tmp_dir}
    if not item.get("by_cleanup"):
        tail = "; 'uv cache prune' frees what no environment uses" if item["action"] == "prune_uv_cache" \
            else "; cleanup does not remove them"
        return "%s hold %s%s" % (what, format_bytes(item["bytes"]), tail)
    line = "%s: cleanup would free %s (%d entries, older than %g h)" % (
        what, format_bytes(item["bytes"]), item["entries"], options.max_age_hours)
    kept = kept_text(item.get("kept_by_reason") or {})
    return line + ("; " + kept if kept else "")


def freeable_bytes(report: dict) -> int:
    """What cleanup would free on a target now (its own rules), 0 when it would leave the target alone."""
    return (report.get("cleanup") or {}).get("freed_bytes") or 0


def summary_line(report: dict) -> str:
    """One line for a human: fullness, level, what Ray holds and what cleanup would free now."""
    fs = report["filesystem"]
    live = sum(1 for s in report["sessions"] if s["live"])
    stale = len(report["sessions"]) - live
    line = "%s %.1f%% used (%s free), level %s; %s in %s; Ray %s: %d live, %d stale session(s); " % (
        fs["path"], fs["used_percent"], format_bytes(fs["free_bytes"]), report["level"],
        format_bytes(report["tmp_bytes"]), report["tmp_dir"], report["node_role"], live, stale)
    cleanup = report.get("cleanup") or {}
    if cleanup.get("status") not in (None, "cleaned"):
        line += "cleanup would skip it (%s)" % (cleanup.get("reason") or cleanup["status"])
    else:
        line += "cleanup would free %s" % format_bytes(freeable_bytes(report))
        kept = kept_text(cleanup.get("kept_by_reason") or {})
        if kept:
            line += ", " + kept
    activity = report.get("activity")
    if activity:
        if activity["busy"] is None:
            line += "; activity unknown"
        else:
            line += "; busy (%s)" % "; ".join(activity["reasons"]) if activity["busy"] else "; idle"
    if report.get("containers"):
        line += "; %d container(s)" % len(report["containers"])
    return printable(line)


def untrusted_message(target: str, untrusted: list) -> Optional[str]:
    """What to tell an operator when processes claim to be Ray's and were ignored, or None."""
    if not untrusted:
        return None
    shown = "; ".join("pid %d %s: %s" % (p["pid"], p["kind"], p["reason"]) for p in untrusted[:5])
    more = " (and %d more)" % (len(untrusted) - 5) if len(untrusted) > 5 else ""
    return printable("%s: %d process(es) say they are Ray's but are not trusted, so the temp roots they name are not "
                     "measured or cleaned: %s%s. If Ray runs as that user, add it to ray_users"
                     % (target, len(untrusted), shown, more))


def untrusted_messages(report: dict) -> list:
    """``untrusted_message`` for the host and each container of a usage report, where there is one."""
    found = [untrusted_message("host", report["untrusted_processes"])]
    found += [untrusted_message(c["name"], c.get("untrusted_processes") or []) for c in report["containers"]]
    return [message for message in found if message]


def rotation_messages(report: dict) -> list:
    """The ``log_rotation`` messages of the host and each container whose Ray's rotation is not in effect."""
    found = []
    for entry in [report] + list(report["containers"]):
        rotation = entry.get("log_rotation")
        if rotation and rotation["in_effect"] is False and rotation["message"]:
            found.append(printable(rotation["message"]))
    return found


def _sessions(entry: dict) -> str:
    live = sum(1 for session in entry["sessions"] if session["live"])
    return "%d live, %d stale" % (live, len(entry["sessions"]) - live)


def _activity(activity: Optional[dict]) -> str:
    if not activity:
        return "-"
    if activity.get("busy") is None:
        return "unknown (%s)" % activity.get("error")
    return "busy (%s)" % "; ".join(activity["reasons"]) if activity["busy"] else "idle"


def monitor_lines(report: dict) -> list:
    """The ``monitor`` table of a usage report."""
    lines = [report["summary"], ""]
    lines += table(("FILESYSTEM", "MOUNTPOINT", "SIZE", "USED", "FREE", "INODES USED", "LEVEL"), [
        (fs["path"], mountpoint_of(fs["path"]), format_bytes(fs["total_bytes"]), "%.1f%%" % fs["used_percent"],
         format_bytes(fs["free_bytes"]), percent(fs.get("inodes_used_percent"), sign="%"), fs["level"])
        for fs in report["filesystems"]])
    lines.append("")
    lines += table(("CATEGORY", "BYTES", "FILES"), [
        (name, format_bytes(report["categories"][name]["bytes"]), report["categories"][name]["files"])
        for name in CATEGORIES])
    lines.append("%s in %s; %s scanned (with the Ray temp roots and the uv cache)"
                 % (format_bytes(report["tmp_bytes"]), report["tmp_dir"], format_bytes(report["scanned_bytes"])))
    lines.append("Ray sessions: %s; node role %s" % (_sessions(report), report["node_role"]))
    if report.get("activity") and report["activity"].get("why"):
        lines.append("host %s: %s" % ("busy" if report["activity"]["busy"] else "idle", report["activity"]["why"]))
    spill: dict = {}
    for entry in report.get("spill_dirs") or []:
        count, size = spill.get(entry["status"], (0, 0))
        spill[entry["status"]] = (count + 1, size + entry["bytes"])
    if spill:
        lines.append("spill dirs outside the sessions: %s" % ", ".join(
            "%d %s (%s)" % (count, status, format_bytes(size)) for status, (count, size) in sorted(spill.items())))
    lines += holders_lines(report.get("holders"))
    lines += ["suggestion: %s" % suggestion["message"] for suggestion in report["suggestions"]]
    lines += deleted_open_lines("host", report.get("deleted_open"))
    for entry in report["containers"]:
        lines += deleted_open_lines(entry["name"], entry.get("deleted_open"))
    if report["error_count"]:
        lines.append("%d entries could not be measured (see --json: errors)" % report["error_count"])
    lines += untrusted_messages(report)
    lines += [rotation_line(name, entry) for name, entry in [("host", report)] + [
        (entry["name"], entry) for entry in report["containers"]] if entry.get("log_rotation")]
    lines += rotation_messages(report)
    if report["containers"]:
        rows = []
        for entry in report["containers"]:
            if entry["tmp_bytes"] is None:  # stopped, or could not be measured
                rows.append((entry["name"], entry["status"], "-", "-", "-", "-", "-",
                             "error: " + entry["error"] if entry["error"] else "-"))
                continue
            fs = entry["filesystem"]
            rows.append((entry["name"], entry["status"], "%.1f%%" % fs["used_percent"], format_bytes(fs["free_bytes"]),
                         entry["level"], format_bytes(entry["tmp_bytes"]), _sessions(entry),
                         _activity(entry.get("activity"))))
        lines.append("")
        lines += table(("CONTAINER", "STATUS", "USED", "FREE", "LEVEL", "TMP", "SESSIONS", "ACTIVITY"), rows)
    return lines


def holders_lines(found: Optional[dict], indent: str = "") -> list:
    """Who holds the measured dirs: the owners' totals, the largest entries by bytes and by inodes."""
    if not found or not found["owners"]:
        return []
    lines = [indent + "held by: " + ", ".join("%s %s in %d entries" % (
        owner["owner"], format_bytes(owner["bytes"]), owner["entries"]) for owner in found["owners"])
        + "; inodes: " + ", ".join("%s %d" % (owner["owner"], owner["inodes"]) for owner in found["owners_by_inodes"])]
    lines.append(indent + "largest: " + ", ".join("%s %s (%s)" % (item["path"], format_bytes(item["bytes"]),
                                                                  item["owner"]) for item in found["paths"]))
    lines.append(indent + "most inodes: " + ", ".join("%s %d (%s)" % (item["path"], item["inodes"], item["owner"])
                                                      for item in found["by_inodes"]))
    return [printable(line) for line in lines]


def rotation_line(name: str, entry: dict) -> str:
    """How the Ray of a target rotates its logs, and what it leaves to logrotate."""
    rotation = entry["log_rotation"]
    return "%s: Ray %s rotates its logs at %s bytes, %s backup(s) (%s; in effect: %s); leaves to logrotate: %s" % (
        name, entry.get("ray_version") or "(version unknown)", rotation["max_bytes"], rotation["backup_count"],
        ", ".join(rotation["ray_rotates"]) or "nothing", {True: "yes", False: "no", None: "unknown"}[
            rotation["in_effect"]], ", ".join(rotation["logrotate_globs"]))


def target_line(target: dict, dry_run: bool) -> str:
    """One line for a cleanup target: status, what went, why."""
    line = "%s (%s): %s" % (target["name"], target["kind"], target_status(target, dry_run))
    if target["status"] == "cleaned":
        line += ", %s %s, %d removed, %d errors" % (
            "would free" if dry_run else "freed", format_bytes(target["freed_bytes"]), target["removed"],
            target["error_count"])
        line += ", " + (kept_text(target["kept_by_reason"]) or "kept 0")
    if target["tmp_bytes_before"] is not None:
        line += "; tmp %s -> %s" % (format_bytes(target["tmp_bytes_before"]), format_bytes(target["tmp_bytes_after"]))
    if target["reason"]:
        line += "; " + target["reason"]
    return printable(line)


def deleted_open_lines(target: str, found: Optional[dict]) -> list:
    """What deleted-but-open files hold on a target, and who holds them: space deleting cannot free."""
    if not found or not found["bytes"]:
        return []
    lines = ["%s: %s held by %d deleted file(s) still open; it is freed when the process closes them (restart it)"
             % (target, format_bytes(found["bytes"]), found["files"])]
    lines += ["  pid %d %s holds %s: %s" % (proc["pid"], proc["process"], format_bytes(proc["bytes"]),
                                            ", ".join(proc["paths"])) for proc in found["processes"]]
    return lines


def tier_summary(pressure: dict) -> str:
    """``unneeded 1.2 GiB, litter_idle 0 B``: what each tier that ran freed."""
    return ", ".join("%s %s" % (t["tier"], format_bytes(t["freed_bytes"])) for t in pressure["tiers"]
                     if not t["skipped"]) or "no tier ran"


def pressure_lines(pressure: dict, dry_run: bool) -> list:
    """A pressure reclaim: what set it off, each tier, and where the disk stands after it."""
    marks = "high %g%% (inodes %g%%), low %g%%" % (pressure["high_percent"], pressure["inodes_high_percent"],
                                                   pressure["low_percent"])
    trigger = "; ".join(pressure["trigger"]) or "nothing at or above the low mark, no tier ran"
    lines = ["pressure reclaim (%s): %s" % (marks, trigger)]
    for tier in pressure["tiers"]:
        if tier["skipped"]:
            lines.append("  tier %s: skipped, %s" % (tier["tier"], tier["skipped"]))
            continue
        lines.append("  tier %s: %s %s from %s" % (tier["tier"], "would free" if dry_run else "freed",
                                                   format_bytes(tier["freed_bytes"]), ", ".join(tier["targets"])
                                                   or "no target"))
    after = ", ".join("%s %s %s" % (r["target"], r["path"], percent(r["used_percent"], pressure["projected"], "%"))
                      for r in pressure["after"])
    if pressure["relieved"]:
        lines.append("relieved: below the low mark %g%%%s" % (pressure["low_percent"], ": " + after if after else ""))
    else:
        lines.append("NOT relieved, still at or above the low mark: %s" % "; ".join(pressure["still_above_low"]))
        for held in pressure.get("held") or []:
            lines.append("  what is left on %s, which the reclaim may not take:" % held["target"])
            lines += holders_lines(held, indent="    ")
    lines += ["  not watched: %s %s: %s" % (u["target"], u["path"], u["reason"]) for u in pressure.get("unreadable")
              or []]
    return [printable(line) for line in lines]


def archive_line(found: dict) -> str:
    """One session's archive, as cleanup did it before removing (a failed one is among the target's errors)."""
    if found["status"] == "would_archive":
        return "  would archive the logs of %s first" % found["session"]
    if found["status"] == "already_archived":
        return "  logs of %s: already in a verified archive" % found["session"]
    if found["status"] == "removed_unarchived":
        return "  logs of %s removed WITHOUT an archive (archive_required: false): %s" % (
            found["session"], found["error"])
    skipped = ["%s (%s)" % (item["path"], item["reason"].split(",")[0]) for item in found["not_archived"]]
    note = "; not archived: %s" % ", ".join(skipped) if skipped else ""
    return "  archived %d file(s) of %s to %s (%s, verified)%s" % (
        found["files"], found["session"], found["archive"], format_bytes(found["bytes"]), note)


def cleanup_lines(result: dict, dry_run: bool) -> list:
    """What a cleanup did (or would do), per target, with the paths."""
    lines = ["dry run: nothing was removed; this is what would go"] if dry_run else []
    if result["status"] != "done":
        return lines + ["cleanup %s: %s" % (result["status"], result["reason"])]
    if result.get("pressure"):
        lines += pressure_lines(result["pressure"], dry_run)
    for target in result["targets"]:
        lines.append(target_line(target, dry_run))
        lines += ["  %s %s" % ("would remove" if dry_run else "removed", path) for path in target["removed_paths"]]
        if target["removed"] > MAX_LISTED:
            lines.append("  ... and %d more" % (target["removed"] - MAX_LISTED))
        lines += [archive_line(found) for found in target.get("archives", ()) if found["status"] != "failed"]
        lines += ["  error %s: %s" % (error["path"], error["error"]) for error in target["errors"]]
        untrusted = untrusted_message(target["name"], target["untrusted_processes"])
        if untrusted:
            lines.append("  " + untrusted)
    if result["docker_prune"]:
        lines.append("docker prune: %s reclaimed" % format_bytes(result["docker_prune"]["reclaimed_bytes"]))
    lines.append("%s %s in total" % ("would free" if dry_run else "freed", format_bytes(result["freed_bytes"])))
    return lines


def _clock(when: Optional[float]) -> str:
    """A time of a finding as the node's local ``YYYY-MM-DD HH:MM``, ``-`` when unknown."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if when else "-"


def diagnose_lines(result: dict) -> list:
    """``ray-maintenance diagnose``: a table of the findings (worst and newest first), then each one's evidence and
    fix, then the summary."""
    findings = result["findings"]
    lines = []
    if findings:
        rows = [(f["severity"].upper(), f["kind"], f["target"], f["session"] or "live node", f["count"],
                 f["new"] or "-", _clock(f["first"]), _clock(f["last"])) for f in findings]
        lines += table(("severity", "kind", "target", "session", "count", "new", "first", "last"), rows,
                       right=(4, 5))
        for number, finding in enumerate(findings, 1):
            lines.append("")
            lines.append("%d. %s on %s: %s" % (number, finding["kind"], finding["target"], finding["summary"]))
            if finding["detail"]:
                lines.append("   now: %s" % finding["detail"])
            if finding["processes"]:
                lines.append("   processes: %s" % shorten("; ".join(finding["processes"])))
            for item in finding["evidence"]:
                lines.append("   %s:%d:" % (printable(item["file"]), item["line"]))
                lines.append("     %s" % shorten(item["text"], 2 * REASON_WIDTH))
            lines.append("   fix: %s" % finding["remedy"])
        lines.append("")
    for item in result["not_read"]:
        lines.append("not read: %s: %s" % (printable(item["path"]), shorten(item["error"])))
    for error in result["errors"]:
        lines.append("error: %s: %s" % (error["target"], shorten(error["error"])))
    lines.append(result["summary"])
    return lines


def diagnose_table(hosts: Sequence[dict]) -> list:
    """The fleet table of ``ray_diagnose.yml``: a row per node with its findings by kind, the newest, the worst and
    the worst finding's fix in one line. ``hosts``: ``{"host", "result" (ray_diagnose's), "unreachable",
    "failure"}``."""
    rows, statuses = [], []
    for host in hosts:
        result = host.get("result") or {}
        if host.get("unreachable") or host.get("failure") or not result:
            status, reason = node_outcome(host)
            statuses.append(status)
            rows.append((host["host"], status, "-", "-", "-", reason))
            continue
        worst = result["worst"] or "ok"
        statuses.append("ok" if worst in ("ok", "info") else worst)
        kinds = ", ".join("%s %d" % (kind, count) for kind, count in sorted(
            result["by_kind"].items(), key=lambda item: (-item[1], item[0]))) or "-"
        fix = shorten(result["findings"][0]["remedy"]) if result["findings"] else "-"
        rows.append((host["host"], worst, kinds, _clock(result["newest"]), result["new"], fix))
    lines = table(("host", "worst", "findings by kind", "newest", "new", "fix (of the worst)"), rows, right=(4,))
    return ["Ray diagnose: fleet"] + lines + [footer(statuses, "see each node's findings above")]


SHIP_STATUS = {"shipped": "shipped", "would_ship": "would ship", "unchanged": "unchanged", "not_shipped": "not shipped",
               "failed": "FAILED"}
"""How ``ray-maintenance ship`` names what it did with each file."""


def ship_lines(result: dict) -> list:
    """``ray-maintenance ship``: the decision, a table of the files (shipped, unchanged, not shipped and why, failed),
    then the summary."""
    if result["decision"] != "ship":
        return [result["summary"]]
    lines = ["ship: %s" % result["reason"]]
    if result["dry_run"]:
        lines.append("dry run: nothing was uploaded; this is what would be")
    rows = [(SHIP_STATUS[entry["status"]], size(entry["bytes"]), entry["path"],
             entry["key"] if entry["status"] in ("shipped", "would_ship", "unchanged") else shorten(entry["reason"]))
            for entry in result["files"]]
    if rows:
        lines += table(("status", "bytes", "path", "to / why"), rows, right=(1,))
    lines += ["no match: %s" % printable(item["pattern"]) for item in result["patterns"] if not item["matches"]]
    for item in result["untrusted_processes"]:
        lines.append("not trusted (decides nothing): %s pid %d: %s" % (item["kind"], item["pid"], shorten(item["reason"])))
    lines.append(result["summary"])
    return lines
