# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Sizes for every front door: one parser, one formatter, IEC labels.

``parse_size`` reads what an operator writes (``5GB``, ``512M``, ``1.5GiB``, bytes); like Ansible's
``human_to_bytes`` every unit is a power of 1024, so ``5GB`` and ``5GiB`` are both 5 x 1024^3 bytes.
``format_bytes`` writes sizes as the modules, the CLI, the playbook tables and the logs print them:
``0 B``, ``1023 B``, ``1.5 KiB`` ... ``2.0 TiB``, labels saying that they count in 1024s.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import re

from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(value, option: str) -> int:
    """Bytes from an integer or a human size (``5GB``, ``512M``, ``1.5GiB``; 1 KB = 1024 bytes, as Ansible)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UsageError("%s %r is negative; use 0 or a size such as 5GB" % (option, value))
        return value
    match = _SIZE.match(str(value))
    if not match or match.group(3).lower() == "i":
        raise UsageError("%s %r is not a size; write bytes or a size such as 5GB, 500MB, 0" % (option, value))
    return int(float(match.group(1)) * 1024 ** " kmgtp".index(match.group(2).lower() or " "))


def format_bytes(count: float) -> str:
    """Binary human size: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return ("%d %s" % (count, unit)) if unit == "B" else ("%.1f %s" % (count, unit))
        count /= 1024.0
    raise AssertionError("unreachable")
