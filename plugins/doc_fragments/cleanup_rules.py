# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a cleanup may remove, shared by ray_worker_cleanup (which removes it) and ray_tmp_usage (which says what a
cleanup would free).  Types and defaults are those of the option table (module_utils/_options.py); a unit test keeps
the two in lockstep."""

from __future__ import annotations


class ModuleDocFragment:
    """The cleanup's rules (rayops.disk.cleanup_rules)."""

    DOCUMENTATION = r"""
options:
  exclude:
    description:
      - Globs never removed, matched against an entry's name and its path below the root it is removed from.
    type: list
    elements: str
    default: []
  max_age_hours:
    description:
      - Only what is older than this is removed, and a Ray session untouched for this long (its newest modification)
        no live process uses is stale. C(0) means any age.
    type: float
    default: 24
    aliases: [stale_after_hours]
  age_by:
    description:
      - Which times must all be older than O(max_age_hours). A directory's ctime never counts (removing its children
        changes it), as with systemd-tmpfiles.
    type: list
    elements: str
    choices: [mtime, atime, ctime]
    default: [mtime, atime, ctime]
  min_tmp_size:
    description:
      - A target whose temp dir holds less than this is left alone (bytes, or a size like C(5GB), C(500MB); 1 KB is
        1024 bytes). C(0) cleans always.
    type: str
    default: 5GB
  clean_stale_sessions:
    description:
      - Remove Ray sessions no live Ray process uses (with everything in them older than the max age).
    type: bool
    default: true
  clean_old_logs:
    description:
      - Remove files in C(logs/old) of every remaining session older than the max age.
    type: bool
    default: true
  clean_stale_spill:
    description:
      - Remove what is older than the max age in the C(ray_spilled_objects_<node id>) directories, directly in a spill
        directory outside the sessions (see O(spill_dirs)), of nodes that no raylet on this machine runs and whose
        session is not live - objects a dead node spilled, which no one can read back.
      - Only directories of that name, found C(stale) as M(rayops.disk.ray_tmp_usage) reports them and checked again
        right before; never on a network or cluster filesystem (other machines' nodes may spill there). A spill
        directory inside a session goes with its stale session.
    type: bool
    default: true
"""
