# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where Ray spills objects, shared by ray_tmp_usage and ray_worker_cleanup."""

from __future__ import annotations


class ModuleDocFragment:
    """Ray's spill directories (rayops.disk.spill)."""

    DOCUMENTATION = r"""
options:
  spill_dirs:
    description:
      - Directories Ray spills objects to on the host, besides those its running processes name - the
        C(directory_path) of C(object_spilling_config) (C(RAY_object_spilling_config), C(ray start --system-config)),
        or C(ray start --object-spilling-directory) (2.53+). For nodes where no Ray runs now, or a worker node of
        Ray 2.40 (whose own processes do not name the directory).
      - Running Ray names them itself - C(gcs_server)'s C(--config_list) on a head node, a C(raylet)'s
        C(--fallback_directory) from Ray 2.53 on - when the process is trusted (see O(ray_users)).
      - Each C(ray_spilled_objects_<node id>) directory directly in one is counted as spilled objects of its node's
        session and listed, live or stale, in C(spill_dirs) of the result of M(rayops.disk.ray_tmp_usage). A spill
        directory inside a session (Ray's default) is counted with the session.
      - Absolute paths, not C(/). Each is used only as a real directory (not a symlink) that only root and
        O(ray_users) can change, as a directory a Ray process names must be one only root and that process's user
        can change; others are reported (C(spill_roots) and C(errors) of M(rayops.disk.ray_tmp_usage)) and never
        cleaned.
      - Not used inside containers (their Ray processes name their own).
    type: list
    elements: path
    default: []
"""
