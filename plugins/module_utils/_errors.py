# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The base of every layer: the error bad input raises, and text made safe to print.

``UsageError`` is what every front door (modules, CLI, role validation) turns into one clear message that names
the value and the fix.  ``printable`` escapes what a hostile file name could use to forge a terminal line.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
import re


class UsageError(ValueError):
    """Bad input: the message names the value and the fix."""


def display_path(path: str) -> str:
    """Return ``path`` printable as UTF-8: undecodable bytes become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r"}


_UNPRINTABLE_KEEP_NEWLINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal or a log line.

    Undecodable bytes, control characters (ESC, BEL, CR, a newline unless
    kept) and bidi overrides are written as backslash escapes (x1b, u202e),
    so no name can move the cursor, retitle the terminal or forge a line.
    """
    pattern = _UNPRINTABLE_KEEP_NEWLINES if keep_newlines else _UNPRINTABLE
    return pattern.sub(_escape, display_path(text))


def _escape(match) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or ("\\x%02x" if ord(char) < 0x100 else "\\u%04x") % ord(char)


def describe_os_error(exc: OSError) -> str:
    """A short message for an OSError, without the path (reported separately)."""
    return exc.strerror or exc.__class__.__name__
