#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ray_worker_cleanup
short_description: Free the disk of idle Ray workers without touching what a running job needs
version_added: 0.1.0
description:
  - For the host and, with O(containers=true), each running Ray worker container, measures the temp dir (O(tmp_dir)
    on the host, O(container_tmp_dir) in a container) as M(rayops.disk.ray_tmp_usage) does and skips the target when
    it holds less than O(min_tmp_size) or when it is busy (a Ray worker runs a task or an actor method, or CPU that
    Ray's idle machinery does not explain is at or above O(cpu_idle_percent)), unless O(force=true).
  - Otherwise removes what may go, older than O(max_age_hours) by every one of O(age_by), and matching no
    O(exclude) glob - entries of the target's temp dir matching O(patterns), stale Ray sessions
    (O(clean_stale_sessions)), files in C(logs/old) of every session (O(clean_old_logs)), and the spill directories of
    Ray nodes that no longer run (O(clean_stale_spill)). The live session is never a candidate.
  - Never removed whatever the options - what a live process holds open, maps or has as working directory, what is
    locked (C(flock) or POSIX), unix sockets some process has bound, device nodes, mount points and anything on
    another filesystem, the targets of symlinks (a symlink itself may go), anything outside the tmp dir, the Ray
    temp roots and the spill directories. Everything is reached relative to directory file descriptors, without
    following symlinks, so a directory swapped for a symlink mid-run leads nowhere.
  - Containers are cleaned from the host through C(/proc/<pid>/root) of their init process, with the same rules;
    nothing is run inside them. A container that stops or vanishes mid-run becomes an C(error) entry.
  - One run at a time per host - a second one waits up to O(lock_timeout) for O(lock_file), then reports
    RV(status=skipped).
author:
  - rayops.disk contributors (@rayops)
requirements:
  - psutil
  - docker (the Python Docker SDK), only with O(containers=true) or O(docker_prune=true)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rayops.disk.activity
  - rayops.disk.spill
attributes:
  check_mode:
    support: full
    details: Check mode is the dry run - the same decisions and figures (as would-free), nothing changed.
  diff_mode:
    support: full
    details: Lists the paths removed (at most 100 per target, with a count of the rest).
  idempotent:
    support: full
    description: Whether running the module again right after changes nothing.
    details: A second run right after a real one finds nothing left to remove and reports no change.
  platform:
    platforms: posix
    details: Linux only (reads C(/proc)).
options:
  tmp_dir:
    description:
      - The temp directory of the host, an existing directory, not a symlink, not C(/). Containers use
        O(container_tmp_dir).
    type: path
    default: /tmp
  ray_temp_dir:
    description: Ray's temp root on the host. Default discovered as in M(rayops.disk.ray_tmp_usage).
    type: path
  ray_users:
    description:
      - Users whose Ray processes are trusted to name Ray's temp roots and live sessions, besides C(root) (always
        trusted). Names, or numeric uids (for Ray in containers, for example C(1000) for rayproject images).
      - A process that says it is C(raylet), C(gcs_server) or C(log_monitor) is trusted only when it runs as one of
        these users, its program is a Ray file owned by such a user, and each temp root it names is a path only root
        and that user control. Others are ignored (M(rayops.disk.ray_tmp_usage) lists them with the reason). Give
        O(ray_temp_dir) to name the root yourself.
    type: list
    elements: str
    default: []
  patterns:
    description:
      - File name globs of entries directly inside O(tmp_dir) (O(container_tmp_dir) in a container) to remove (names
        only; no C(/), no C(..), not a glob matching every name). Ray's own temp root is never matched.
    type: list
    elements: str
    default: ["ray_tmp_*", "pip-*", "tmp*"]
  exclude:
    description: Globs never touched, matched against an entry's name and its path below the root it is removed from.
    type: list
    elements: str
    default: []
  max_age_hours:
    description: Only what is older than this is removed. C(0) means any age.
    type: float
    default: 24
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
      - Do nothing on a target whose tmp dir holds less than this (bytes, or a size like C(5GB), C(500MB); 1 KB is
        1024 bytes). C(0) cleans always.
    type: str
    default: 5GB
  clean_stale_sessions:
    description: Remove Ray sessions no live Ray process uses (with everything in them older than the max age).
    type: bool
    default: true
  clean_old_logs:
    description: Remove files in C(logs/old) of every remaining session older than the max age.
    type: bool
    default: true
  clean_stale_spill:
    description:
      - Remove what is older than the max age in the C(ray_spilled_objects_<node id>) directories, directly in a spill
        directory outside the sessions (see O(spill_dirs)), of nodes that no raylet on this machine runs and whose
        session is not live - objects a dead node spilled, which no one can read back.
      - Only directories of that name, found C(stale) by M(rayops.disk.ray_tmp_usage) and checked again right before;
        never on a network or cluster filesystem (other machines' nodes may spill there). A spill directory inside a
        session goes with its stale session.
    type: bool
    default: true
  host:
    description:
      - Clean the host itself. With C(false) and O(containers=true), only the worker containers are cleaned, as the
        users' original script did.
    type: bool
    default: true
  containers:
    description: Also clean each Docker container whose name matches O(container_name_filter).
    type: bool
    default: false
  container_name_filter:
    description: Docker's C(name) filter (a substring or regular expression of the container name).
    type: str
    default: ray-worker
  container_tmp_dir:
    description:
      - The temp directory inside each container, as the container sees it - what O(tmp_dir) is for the host there -
        measured against O(min_tmp_size), cleaned of O(patterns), and with C(<container_tmp_dir>/ray) as Ray's temp
        root when no Ray process in the container names one (unless the container's C($RAY_TMPDIR) or C($TMPDIR) is
        set).
      - For example C(/tmp) in the workers while Ray on the host lives under O(tmp_dir=/home/apiuser/.cache/tmp) -
        one run cleans both, each in its own directory.
      - An absolute path, not C(/); not expanded on the host (no C(~) or C($VAR)). Each container is checked for it -
        one that lacks it is an C(error) target, and the other targets are still cleaned.
    type: str
    default: /tmp
  docker_host:
    description: The Docker daemon, on this host. Default C($DOCKER_HOST), else the local socket.
    type: str
  docker_prune:
    description:
      - After the targets, remove stopped containers, dangling images and unused build cache. In check mode the
        bytes it would reclaim are reported.
    type: bool
    default: false
  force:
    description: Clean busy targets too. The safety rules still apply.
    type: bool
    default: false
  lock_file:
    description:
      - The lock one run holds at a time on this host. Its directory is created (mode 0755) when missing, which
        for the default takes root.
      - Keep it in a directory only the user running the cleanup can write - a lock file that is not a regular file
        owned by that user (one another user made, to hold its lock forever) is refused with RV(status=skipped).
    type: path
    default: /run/rayops/ray-cleanup.lock
  lock_timeout:
    description: Seconds to wait for another run to finish before reporting RV(status=skipped).
    type: float
    default: 30
  audit_log:
    description: Append a JSON line (time, target, path, bytes, reason) for every entry removed.
    type: path
notes:
  - Ansible's C(--check) runs the whole decision process and reports RV(freed_bytes) as what would be freed.
seealso:
  - module: rayops.disk.ray_tmp_usage
"""

EXAMPLES = r"""
- name: Clean idle Ray workers as the users' hourly script did (only when /tmp holds 5 GB or more)
  rayops.disk.ray_worker_cleanup:
    containers: true
    min_tmp_size: 5GB
    cpu_idle_percent: 5
    max_age_hours: 1
    docker_prune: true
    audit_log: /var/log/rayops/cleanup-audit.jsonl

- name: What would go on this node (dry run with the paths)
  rayops.disk.ray_worker_cleanup:
    min_tmp_size: 0
  check_mode: true
  diff: true
  register: would

- name: Free space now, even on a busy node, keeping checkpoints
  rayops.disk.ray_worker_cleanup:
    force: true
    min_tmp_size: 0
    exclude: ["*/checkpoints/*", "keep-*"]

- name: The users' head - Ray on the host under /home/apiuser/.cache/tmp, in the workers under /tmp
  rayops.disk.ray_worker_cleanup:
    tmp_dir: /home/apiuser/.cache/tmp
    containers: true
    container_tmp_dir: /tmp
"""

RETURN = r"""
status:
  description: C(done), or C(skipped) when another run held the lock or the lock file is not this user's own.
  returned: always
  type: str
  sample: done
reason:
  description: Why the run was skipped, or null.
  returned: always
  type: str
freed_bytes:
  description: Bytes freed (in check mode, that would be freed) on all targets and by the Docker prune.
  returned: always
  type: int
  sample: 37580963840
targets:
  description: One entry per target, the host first (unless O(host=false)).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: C(host) or the container name.
      type: str
    kind:
      description: C(host) or C(container).
      type: str
    tmp_dir:
      description: The target's temp dir, as the target names it - O(tmp_dir) on the host, O(container_tmp_dir) in a
        container.
      type: str
      sample: /tmp
    status:
      description: C(cleaned), C(skipped_active), C(skipped_below_threshold), C(skipped_not_running) (a stopped
        container) or C(error).
      type: str
    reason:
      description: Why it was skipped, failed, or cleaned while busy; else null.
      type: str
    tmp_bytes_before:
      description: Bytes in the tmp dir before.
      type: int
    tmp_bytes_after:
      description: Bytes in the tmp dir after (before minus freed).
      type: int
    freed_bytes:
      description: Bytes freed.
      type: int
    removed:
      description: Entries removed.
      type: int
    removed_paths:
      description: Paths removed, as the target names them (at most 100).
      type: list
      elements: str
    roots:
      description:
        - The directories removed from, as the target names them (its C(tmp_dir), Ray temp roots, C(logs/old), spill
          directories) and
          where they really are on the host (for a container, in its filesystem, for example its overlay's C(merged)
          dir). Each was resolved inside the target's root, never through a symlink to outside it.
      type: list
      elements: dict
      sample: [{"path": "/tmp", "host_path": "/var/lib/docker/overlay2/3f2a/merged/tmp"}]
    kept:
      description: What was protected and why (C(open), C(locked), C(live_socket), C(mount_point), C(fresh)...), at most 100.
      type: list
      elements: dict
    kept_count:
      description: How many entries were kept.
      type: int
    kept_by_reason:
      description: Kept entries counted by reason.
      type: dict
    errors:
      description: Entries that could not be handled, at most 100.
      type: list
      elements: dict
    error_count:
      description: How many entries could not be handled.
      type: int
    activity:
      description: The activity sample (C(busy), C(reasons), C(cpu_percent), C(ray_tasks)).
      type: dict
    untrusted_processes:
      description:
        - Processes of the target that say they are Ray's but were not trusted (see O(ray_users)), with the reason.
          The temp roots they name were not cleaned; a warning says so.
      type: list
      elements: dict
docker_prune:
  description: With O(docker_prune=true), what was pruned (C(containers), C(images), C(build_cache) counts and
    C(reclaimed_bytes)), and C(error) when the prune failed (the cleanup itself stands, with a warning); else null.
  returned: always
  type: dict
containers_error:
  description: Why containers could not be listed (Docker unreachable; the host is still cleaned), or null.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rayops.disk.plugins.module_utils._cleanup import Cleanup, CleanupOptions
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, printable
from ansible_collections.rayops.disk.plugins.module_utils._optional import docker, missing, psutil
from ansible_collections.rayops.disk.plugins.module_utils._usage import untrusted_message


def diff_of(result):
    """Before: every path removed, per target; after: nothing."""
    lines = []
    for target in result["targets"]:
        lines.extend("%s: %s" % (target["name"], printable(path)) for path in target["removed_paths"])
        if target["removed"] > len(target["removed_paths"]):
            lines.append("%s: ... and %d more" % (target["name"], target["removed"] - len(target["removed_paths"])))
    return {"before": "\n".join(lines) + ("\n" if lines else ""), "after": "",
            "before_header": "removed", "after_header": "removed"}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tmp_dir=dict(type="path", default="/tmp"),
            ray_temp_dir=dict(type="path"),
            spill_dirs=dict(type="list", elements="path", default=[]),
            ray_users=dict(type="list", elements="str", default=[]),
            patterns=dict(type="list", elements="str", default=["ray_tmp_*", "pip-*", "tmp*"]),
            exclude=dict(type="list", elements="str", default=[]),
            max_age_hours=dict(type="float", default=24),
            age_by=dict(type="list", elements="str", choices=["mtime", "atime", "ctime"],
                        default=["mtime", "atime", "ctime"]),
            min_tmp_size=dict(type="str", default="5GB"),
            cpu_idle_percent=dict(type="float", default=5),
            sample_seconds=dict(type="float", default=1),
            busy_titles=dict(type="list", elements="str", default=[]),
            idle_titles=dict(type="list", elements="str", default=[]),
            clean_stale_sessions=dict(type="bool", default=True),
            clean_old_logs=dict(type="bool", default=True),
            clean_stale_spill=dict(type="bool", default=True),
            host=dict(type="bool", default=True),
            containers=dict(type="bool", default=False),
            container_name_filter=dict(type="str", default="ray-worker"),
            container_tmp_dir=dict(type="str", default="/tmp"),
            docker_host=dict(type="str"),
            docker_prune=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            lock_file=dict(type="path", default="/run/rayops/ray-cleanup.lock"),
            lock_timeout=dict(type="float", default=30),
            audit_log=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    need_docker = module.params["containers"] or module.params["docker_prune"]
    for library, error in missing(psutil, docker, need_docker=need_docker):
        module.fail_json(msg=missing_required_lib(library), exception=error)

    params = dict(module.params)
    for name in ("patterns", "exclude", "age_by", "ray_users", "busy_titles", "idle_titles", "spill_dirs"):
        params[name] = tuple(params[name])
    try:
        result = Cleanup(CleanupOptions(**params), psutil, docker, check_mode=module.check_mode).run()
    except UsageError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:  # the lock or the audit log cannot be opened (a non-root run and the default lock_file)
        module.fail_json(msg="cleanup failed: %s; run it as root, or give a lock_file (and audit_log) this user can "
                         "create" % exc)
    problems = [result["containers_error"], (result["docker_prune"] or {}).get("error")]
    problems += [untrusted_message(t["name"], t["untrusted_processes"]) for t in result["targets"]]
    for problem in problems:
        if problem:
            module.warn(printable(problem))
    if module._diff:
        result["diff"] = diff_of(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
