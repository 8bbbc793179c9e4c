# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Archive before delete, for ray_worker_cleanup (and the ray-maintenance config)."""

from __future__ import annotations


class ModuleDocFragment:
    """Where and how the logs of what cleanup removes are archived first (rayops.disk.archive)."""

    DOCUMENTATION = r"""
options:
  archive_dest:
    description:
      - Archive the logs of every stale session cleanup is about to remove (everything below its C(logs)) and the
        C(logs/old) files it is about to remove, before they go. Unset - nothing is archived.
      - A directory (absolute, local or NFS; it must exist), C(s3://BUCKET/PREFIX) (the Python library boto3 on the
        node, credentials from boto3's usual chain - environment, C(~/.aws), instance profile; see
        O(archive_endpoint_url)), or C(hdfs://...) (through the node's own C(hdfs dfs) client, which must be on its
        PATH).
      - One compressed archive per session and run, C(<dest>/<cluster>/<node>/<session>/<time>.tar.gz), with a
        C(<time>.manifest.json) of its files (path, bytes, SHA-256, inode, mtime), so nodes never overwrite each
        other. The archive is read back and its size and SHA-256 compared before the manifest is written; a file is
        removed only when a manifest lists that very file (same inode, size and mtime). A rerun after a crash
        uploads only what no manifest lists.
      - Only regular files are read, relative to directory file descriptors, never through a symlink, and inside a
        container's root for a container; a link, a FIFO or a device is named in the manifest and never opened.
      - Compressed by a thread at nice 10 and idle I/O priority. Check mode archives nothing and asks no store.
    type: str
  archive_endpoint_url:
    description: The endpoint of an S3-compatible store (MinIO, SeaweedFS, Ceph), for an C(s3://) O(archive_dest).
    type: str
  archive_cluster:
    description: The cluster's name, the first component of the archive paths.
    type: str
    default: ray
  archive_node:
    description:
      - This node's name in the archive paths; default its host name. A container's sessions go under
        C(<node>-<container>).
    type: str
  archive_required:
    description:
      - With C(true), a session whose logs could not be archived and verified is kept, the target's status is
        C(error) with the reason, and the next run tries again.
      - With C(false), it is removed anyway, and the result says so (C(removed_unarchived)).
    type: bool
    default: true
  archive_keep_days:
    description: After each cleanup, remove this node's archives older than this many days from the destination
      (a directory or S3; unset keeps them).
    type: float
  archive_bandwidth_limit:
    description: At most this many bytes a second to the destination (a size such as C(20MB); unset - no limit).
    type: str
  archive_budget_seconds:
    description:
      - Under pressure (O(pressure=true), and the guard), the seconds one reclaim may spend archiving; what is not
        archived by then is kept, and the reclaim goes on to its next tier.
    type: float
    default: 60
"""
