# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The levels of a filesystem's used percentage, shared by ray_tmp_usage and ray_diagnose.  Types and defaults are
those of the option table (module_utils/_options.py); a unit test keeps the two in lockstep."""

from __future__ import annotations


class ModuleDocFragment:
    """Used-percentage levels (rayops.disk.thresholds)."""

    DOCUMENTATION = r"""
options:
  thresholds:
    description:
      - Used percentages of a filesystem at which its level becomes C(info), C(warning) and C(critical) - the level
        M(rayops.disk.ray_tmp_usage) reports; M(rayops.disk.ray_diagnose) names a disk at or above C(warning), of its
        bytes or its inodes, a C(disk_pressure) finding.
      - Each from 0 to 100, strictly increasing.
    type: dict
    default: {}
    suboptions:
      info:
        description: Percentage for level C(info).
        type: float
        default: 80
      warning:
        description: Percentage for level C(warning).
        type: float
        default: 90
      critical:
        description: Percentage for level C(critical).
        type: float
        default: 95
"""
