# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a run looks at - the host's temp dir, Ray's temp root, trusted users, worker containers - shared by
ray_tmp_usage and ray_worker_cleanup.  Types and defaults are those of the option table (module_utils/_options.py);
a unit test keeps the two in lockstep."""

from __future__ import annotations


class ModuleDocFragment:
    """The host and its Ray worker containers (rayops.disk.targets)."""

    DOCUMENTATION = r"""
options:
  tmp_dir:
    description:
      - The temp directory of the host - its filesystem's figures and level are reported, what is in it is measured,
        and M(rayops.disk.ray_worker_cleanup) removes its entries matching O(patterns). Containers use
        O(container_tmp_dir).
      - Must be an existing directory, not a symlink, and not C(/).
    type: path
    default: /tmp
  ray_temp_dir:
    description:
      - Ray's temp root on the host (the directory holding C(session_*)), for example C(/tmp/ray).
      - By default it is discovered from the running Ray processes, else C($RAY_TMPDIR), C($TMPDIR) or O(tmp_dir),
        plus C(/ray).
    type: path
  ray_users:
    description:
      - Users whose Ray processes are trusted to name Ray's temp roots and live sessions, besides C(root) (always
        trusted). Names, or numeric uids (for Ray in containers, for example C(1000) for rayproject images).
      - A process that says it is C(raylet), C(gcs_server) or C(log_monitor) is trusted only when it runs as one of
        these users, its program is a Ray file owned by such a user, and each temp root it names is a path only root
        and that user control. Others are ignored - their temp roots are neither measured nor cleaned - and listed
        with the reason in C(untrusted_processes) of the result (per target for M(rayops.disk.ray_worker_cleanup)).
        Give O(ray_temp_dir) to name the root yourself.
    type: list
    elements: str
    default: []
  patterns:
    description:
      - File name globs of the entries directly inside O(tmp_dir) (O(container_tmp_dir) in a container) that
        packaging, pip and C(tempfile) leave behind - counted as C(tmp_patterns) by M(rayops.disk.ray_tmp_usage),
        removed by M(rayops.disk.ray_worker_cleanup). Ray's own temp root and spill directories are never matched.
      - Names only; a pattern with C(/) or C(..), or one that matches every name, is rejected.
    type: list
    elements: str
    default: ["ray_tmp_*", "pip-*", "tmp*"]
  containers:
    description:
      - Also measure (M(rayops.disk.ray_tmp_usage)) or clean (M(rayops.disk.ray_worker_cleanup)) each Docker
        container whose name matches O(container_name_filter), through C(/proc/<pid>/root) of its init process. This
        needs the module to run on the Docker host as root.
      - V(true), V(false), or V(auto) - containers when the node has Docker (O(docker_host), C($DOCKER_HOST) or
        C(/var/run/docker.sock)).
      - When the Docker daemon cannot be reached, the host is still measured or cleaned, C(containers_error) of the
        result says why, and the task does not fail.
    type: raw
    default: auto
  container_name_filter:
    description:
      - Docker's C(name) filter (a substring or regular expression of the container name).
    type: str
    default: ray-worker
  container_tmp_dir:
    description:
      - The temp directory inside each container, as the container sees it - what O(tmp_dir) is for the host there -
        with its filesystem and level, its O(patterns), and Ray's temp root C(<container_tmp_dir>/ray) when no Ray
        process in the container names one (unless the container's C($RAY_TMPDIR) or C($TMPDIR) is set).
      - For example C(/tmp) in the workers while Ray on the host lives under O(tmp_dir=/home/apiuser/.cache/tmp) -
        one run handles both, each in its own directory.
      - An absolute path, not C(/); not expanded on the host (no C(~) or C($VAR)). Each container is checked for it -
        one that lacks it gets an C(error) (its entry in the result), and the task does not fail.
    type: str
    default: /tmp
  docker_host:
    description:
      - The Docker daemon to ask, for example C(unix:///var/run/docker.sock). Default C($DOCKER_HOST), else the
        local socket. The daemon must run on the host the module runs on.
    type: str
"""
