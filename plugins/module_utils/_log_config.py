# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ray's log settings in an environment file or a systemd drop-in: the core of ``ray_log_config``.

Ray reads ``RAY_ROTATION_MAX_BYTES`` with ``int()`` (a "512M" makes ``ray
start`` crash; 0 means no rotation), ``RAY_ROTATION_BACKUP_COUNT`` as an
integer, and ``RAY_BACKEND_LOG_LEVEL`` as a name (trace, debug, info,
warning, error, fatal); a number there is ignored with "Unrecognized
setting".  So values are normalised before they are written: sizes become
integers, Python-style levels 10-50 become names.  Rendering keeps every
other line and comment of the file.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import re
import shlex
from typing import Optional

from ansible_collections.rayops.disk.plugins.module_utils._usage import UsageError, parse_size

MAX_BYTES = "RAY_ROTATION_MAX_BYTES"
BACKUP_COUNT = "RAY_ROTATION_BACKUP_COUNT"
LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL"
MANAGED = (MAX_BYTES, BACKUP_COUNT, LOG_LEVEL)

LEVEL_NAMES = ("trace", "debug", "info", "warning", "error", "fatal")
NUMERIC_LEVELS = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "fatal"}
"""Python's logging numbers, as the users' documents write them (40 = ERROR)."""

_ENV_LINE = re.compile(r"^(\s*(?:export\s+)?)([A-Za-z_][A-Za-z0-9_]*)=")
_SECTION = re.compile(r"^\s*\[([^]]+)\]\s*$")


def settings(max_bytes=None, backup_count=None, log_level=None) -> dict:
    """The managed settings as Ray reads them (only those given), or ``UsageError`` naming the bad value."""
    wanted = {}
    if max_bytes is not None:
        wanted[MAX_BYTES] = str(parse_size(max_bytes, "rotation_max_bytes"))
    if backup_count is not None:
        if isinstance(backup_count, bool) or not isinstance(backup_count, int) or backup_count < 1:
            raise UsageError("rotation_backup_count %r must be a whole number of 1 or more (Ray treats 0 as 1); "
                             "for example 2" % (backup_count,))
        wanted[BACKUP_COUNT] = str(backup_count)
    if log_level is not None:
        wanted[LOG_LEVEL] = level_name(log_level)
    return wanted


def level_name(value) -> str:
    """Ray's name for a log level given as a name (any case) or as Python's 10-50."""
    text = str(value).strip().lower()
    if text in LEVEL_NAMES:
        return text
    if text.isdigit() and int(text) in NUMERIC_LEVELS:
        return NUMERIC_LEVELS[int(text)]
    if text in ("critical", "warn"):
        return {"critical": "fatal", "warn": "warning"}[text]
    raise UsageError("backend_log_level %r is not a level Ray knows; use one of %s (or 10, 20, 30, 40, 50)"
                     % (value, ", ".join(LEVEL_NAMES)))


def _with_newline(lines: list) -> list:
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def render_env(text: str, wanted: dict, absent: bool = False) -> str:
    """A ``KEY=value`` file with the managed keys set (or removed), everything else kept.

    A key already there is rewritten in place (an ``export`` kept); repeats
    of it are dropped; missing keys are appended.
    """
    out, seen = [], set()
    for line in text.splitlines(keepends=True):
        match = _ENV_LINE.match(line)
        key = match.group(2) if match else None
        if key not in MANAGED:
            out.append(line)
            continue
        if absent or key in seen or key not in wanted:
            if not absent and key not in wanted:
                out.append(line)  # managed by name but not asked for this time: leave it
            continue
        seen.add(key)
        out.append("%s%s=%s\n" % (match.group(1), key, wanted[key]))
    if not absent:
        out = _with_newline(out) + ["%s=%s\n" % (key, wanted[key]) for key in MANAGED if key in wanted and key not in seen]
    return "".join(out)


def _assignments(value: str) -> Optional[list]:
    """The ``KEY=value`` words of a systemd ``Environment=`` value, or None when it cannot be split."""
    try:
        return shlex.split(value)
    except ValueError:
        return None


def render_systemd(text: str, wanted: dict, absent: bool = False) -> str:
    """A systemd unit or drop-in with ``Environment="KEY=value"`` lines for the managed keys in ``[Service]``.

    Managed assignments are taken out of existing ``Environment=`` lines
    (other assignments on them stay); one line per key is written at the end
    of ``[Service]``, which is added when missing.
    """
    lines = text.splitlines(keepends=True)
    out, section, service_end = [], None, None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            if section == "Service":
                service_end = len(out)
            section = header.group(1).strip()
            out.append(line)
            continue
        stripped = line.strip()
        if section == "Service" and stripped.startswith("Environment="):
            words = _assignments(stripped[len("Environment="):])
            if words is not None and any(w.split("=", 1)[0] in MANAGED for w in words):
                keep = [w for w in words if w.split("=", 1)[0] not in MANAGED or
                        (w.split("=", 1)[0] not in wanted and not absent)]
                if keep:
                    out.append("Environment=%s\n" % " ".join(shlex.quote(w) for w in keep))
                continue
        out.append(line)
    if section == "Service":
        service_end = len(out)
    if absent or not wanted:
        return "".join(out)
    new = ['Environment="%s=%s"\n' % (key, wanted[key]) for key in MANAGED if key in wanted]
    if service_end is None:
        out = _with_newline(out) + (["\n"] if out else []) + ["[Service]\n"] + new
    else:
        while service_end > 0 and not out[service_end - 1].strip():
            service_end -= 1  # after the section's last line, before blank lines
        out = _with_newline(out[:service_end]) + new + out[service_end:]
    return "".join(out)


def render(text: str, file_format: str, wanted: dict, absent: bool = False) -> str:
    """The new content of a file of ``file_format`` (``env`` or ``systemd``)."""
    if file_format == "systemd":
        return render_systemd(text, wanted, absent)
    return render_env(text, wanted, absent)
