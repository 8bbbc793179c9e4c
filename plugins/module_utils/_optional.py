# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The optional libraries the modules need on a target, imported once.

A module fails with Ansible's ``missing_required_lib`` message (and the
traceback kept here) when one it needs is missing.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import traceback

__all__ = ["BOTO3_IMPORT_ERROR", "DOCKER_IMPORT_ERROR", "PSUTIL_IMPORT_ERROR", "boto3", "docker", "missing", "psutil"]

try:
    import psutil
except ImportError:
    psutil = None
    PSUTIL_IMPORT_ERROR = traceback.format_exc()
else:
    PSUTIL_IMPORT_ERROR = None

try:
    import docker
except ImportError:
    docker = None
    DOCKER_IMPORT_ERROR = traceback.format_exc()
else:
    DOCKER_IMPORT_ERROR = None

try:
    import boto3
except ImportError:
    boto3 = None
    BOTO3_IMPORT_ERROR = traceback.format_exc()
else:
    BOTO3_IMPORT_ERROR = None


def missing(psutil_module, docker_module, need_docker: bool, boto3_module: object = True) -> list:
    """``(library, import traceback)`` for each library a run needs that is not there.

    The modules pass the names they hold, so a test can take one away.
    """
    found = []
    if psutil_module is None:
        found.append(("psutil", PSUTIL_IMPORT_ERROR))
    if need_docker and docker_module is None:
        found.append(("docker", DOCKER_IMPORT_ERROR))
    if boto3_module is None:  # only a run that archives to s3:// passes it
        found.append(("boto3", BOTO3_IMPORT_ERROR))
    return found
