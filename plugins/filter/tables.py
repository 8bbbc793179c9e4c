# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The playbooks' fleet tables, rendered by the collection's one text module (``_text``) on the controller."""

from __future__ import annotations

from ansible_collections.rayops.disk.plugins.module_utils._text import (
    cleanup_table,
    diagnose_lines,
    diagnose_table,
    monitor_lines,
    node_outcome,
    report_table,
)


def _hosts(rows) -> list:
    return [dict(row) for row in rows]


def ray_cleanup_table(rows, check=False) -> str:
    """The ``ray_cleanup_now.yml`` table from one row per node (see the filter's documentation)."""
    return "\n".join(cleanup_table(_hosts(rows), bool(check)))


def ray_report_table(rows) -> str:
    """The ``ray_disk_report.yml`` fleet table from one row per node."""
    return "\n".join(report_table(_hosts(rows)))


def ray_node_report(report) -> str:
    """One node's ``ray_tmp_usage`` report as ``ray-maintenance monitor`` prints it."""
    return "\n".join(monitor_lines(dict(report)))


def ray_diagnose_table(rows) -> str:
    """The ``ray_diagnose.yml`` fleet table from one row per node."""
    return "\n".join(diagnose_table(_hosts(rows)))


def ray_node_findings(result) -> str:
    """One node's ``ray_diagnose`` result as ``ray-maintenance diagnose`` prints it."""
    return "\n".join(diagnose_lines(dict(result)))


def ray_node_outcome(row) -> dict:
    """``{status, reason}`` of one node's row, as its table line says."""
    status, reason = node_outcome(dict(row))
    return {"status": status, "reason": reason}


class FilterModule:
    """rayops.disk table filters."""

    def filters(self):
        return {"ray_cleanup_table": ray_cleanup_table, "ray_report_table": ray_report_table,
                "ray_node_outcome": ray_node_outcome, "ray_node_report": ray_node_report,
                "ray_diagnose_table": ray_diagnose_table, "ray_node_findings": ray_node_findings}
