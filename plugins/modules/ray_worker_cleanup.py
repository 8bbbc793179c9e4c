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
  - boto3, only with an C(s3://) O(archive_dest)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rayops.disk.activity
  - rayops.disk.spill
  - rayops.disk.targets
  - rayops.disk.cleanup_rules
  - rayops.disk.archive
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
  host:
    description:
      - Clean the host itself. With C(false) and O(containers=true), only the worker containers are cleaned, as the
        users' original script did.
    type: bool
    default: true
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
  disk:
    description:
      - The directory whose filesystem's used % the result's C(disk) gives before and after the run (in check mode,
        after is before less what would be freed). Default O(tmp_dir); for example C(/var/lib/docker) when the
        containers' temp dirs live on Docker's disk.
    type: path
  pressure:
    description:
      - Run the pressure reclaim now instead of the idle cleanup - what C(ray-maintenance watch) (the role's pressure
        guard) runs when a watched filesystem reaches O(pressure_high_percent). On every target whose tmp dir, Ray
        temp roots or spill dirs lie on a filesystem at or above O(pressure_low_percent) (bytes, or inodes), tiers run
        in this order, cheapest harm first, and the run stops as soon as every such filesystem is below
        O(pressure_low_percent) - C(unneeded) (C(logs/old), Ray's rotated log backups, logs of dead workers in the live
        session, stale sessions and spill dirs, busy or not, older than a minute), C(deleted_logs)
        (O(pressure_truncate_deleted_logs)), C(litter_idle) and C(litter_busy) (O(patterns) matches older than
        O(pressure_max_age_hours), on idle targets, then busy ones), C(docker_prune) (with O(docker_prune=true)).
      - Every safety rule still holds (open, locked, bound, live session, mounts, symlinks, O(exclude)).
        O(min_tmp_size) and O(max_age_hours) do not apply.
    type: bool
    default: false
  pressure_high_percent:
    description: Used % of a watched filesystem's bytes at or above which the guard reclaims (below Ray's own 95).
    type: float
    default: 90
  pressure_inodes_high_percent:
    description: Used % of a watched filesystem's inodes at or above which the guard reclaims.
    type: float
    default: 90
  pressure_low_percent:
    description:
      - A reclaim works on targets at or above this used % (bytes or inodes) and stops once all are below it. Below
        both high marks.
    type: float
    default: 80
  pressure_max_age_hours:
    description: Under pressure, O(patterns) matches older than this go, from busy targets too.
    type: float
    default: 1
  pressure_truncate_deleted_logs:
    description:
      - Under pressure, empty Ray log files that are deleted but still held open by a trusted Ray process or its
        worker (in a session's C(logs) dir, owned by the process's user) - space no deletion can free. Never another
        file.
    type: bool
    default: false
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
outcome:
  description:
    - The run in one word, as the fleet table of C(playbooks/ray_cleanup_now.yml) prints it - the worst of its
      targets' statuses in this order - C(error) (a target could not be cleaned, or containers were wanted and
      Docker could not be reached, or the Docker prune failed), C(skipped_locked), C(cleaned) (C(would_clean) in
      check mode), C(skipped_active), C(skipped_below_threshold), C(skipped_not_running), C(no_targets).
  returned: always
  type: str
  sample: cleaned
outcome_reason:
  description: Why, naming the target (for C(cleaned), what was kept and why); or null.
  returned: always
  type: str
  sample: "ray-worker-2: busy: ray::train_step running (pid 4242)"
disk:
  description:
    - The used % of the filesystem holding O(disk) (default O(tmp_dir)), as C(df) computes it, right before and
      right after the run (C(used_percent_before), C(used_percent_after), C(path)).
    - In check mode C(projected) is true and C(used_percent_after) is before minus what would be freed.
  returned: always
  type: dict
  sample: {"path": "/tmp", "used_percent_before": 97.4, "used_percent_after": 61.2, "projected": false}
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
    groups:
      description:
        - What each kind of removal did (C(action) - C(clean_tmp_patterns), C(clean_old_logs),
          C(remove_stale_sessions), C(remove_stale_spill), under pressure also C(clean_rotated_logs) and
          C(clean_dead_worker_logs)) in the directory C(path) - C(freed_bytes), C(removed),
          the top-level C(removed_paths), C(kept_by_reason), C(error_count).
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
pressure:
  description:
    - With O(pressure=true), the reclaim - its marks (C(high_percent), C(inodes_high_percent), C(low_percent)),
      C(trigger) (each filesystem at or above a mark, and why), the watched filesystems C(before) and C(after)
      (C(target), C(path), C(used_percent), C(inodes_used_percent), C(free_bytes); in check mode C(projected) is
      true and after is before less what would be freed), C(tiers) in the order they ran (C(tier), C(reason),
      C(targets), C(freed_bytes), C(removed), C(skipped)), C(relieved) (every filesystem below the low mark),
      C(still_above_low) and C(seconds). Else null.
    - The litter tiers take only entries owned by root or a user of O(ray_users); anyone else's go only by the idle
      cleanup's rules and are otherwise kept as C(other_user). C(docker_prune) runs only when Docker's data root is on
      a pressed filesystem of the host.
    - When not relieved, C(held) names per pressed target what is left (C(target), C(paths), C(by_inodes), C(owners),
      C(owners_by_inodes), as RV(rayops.disk.ray_tmp_usage#module:holders)) and C(held_text) says it in one line;
      C(unreadable) lists watched dirs that could not be read safely (C(target), C(path), C(reason)).
    - Each removal group in RV(targets[].groups) names its C(tier).
  returned: always
  type: dict
  sample: {"relieved": true, "projected": false, "seconds": 2.4, "low_percent": 80, "high_percent": 90,
           "trigger": ["host /tmp 93.1% of bytes used: bytes 93.1% >= 80%"],
           "tiers": [{"tier": "unneeded", "freed_bytes": 12884901888, "removed": 41, "targets": ["host"],
                      "skipped": null, "reason": "host /tmp 93.1% of bytes used: bytes 93.1% >= 80%"}]}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, printable
from ansible_collections.rayops.disk.plugins.module_utils._node import node_run
from ansible_collections.rayops.disk.plugins.module_utils._optional import boto3, docker, missing, psutil
from ansible_collections.rayops.disk.plugins.module_utils._options import (
    CleanupOptions,
    argument_spec,
    option_names,
    option_values,
)
from ansible_collections.rayops.disk.plugins.module_utils._targets import containers_wanted
from ansible_collections.rayops.disk.plugins.module_utils._text import untrusted_message


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
        argument_spec=argument_spec(option_names(CleanupOptions)),
        supports_check_mode=True,
    )
    need_docker = containers_wanted(module.params["containers"], module.params["docker_host"]) or module.params["docker_prune"]
    need_boto3 = (module.params["archive_dest"] or "").startswith("s3://")
    for library, error in missing(psutil, docker, need_docker, boto3 if need_boto3 else True):
        module.fail_json(msg=missing_required_lib(library), exception=error)

    params = option_values(module.params)
    try:
        result = node_run(CleanupOptions(**params), psutil, docker, check_mode=module.check_mode).run()
    except UsageError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:  # the lock or the audit log cannot be opened (a non-root run and the default lock_file)
        module.fail_json(msg="cleanup failed: %s; run it as root, or give a lock_file (and audit_log) this user can "
                         "create" % exc)
    problems = [result["containers_error"], (result["docker_prune"] or {}).get("error")]
    if result["pressure"] and not result["pressure"]["relieved"]:
        problems.append("pressure not relieved: %s" % "; ".join(result["pressure"]["still_above_low"]))
    problems += [untrusted_message(t["name"], t["untrusted_processes"]) for t in result["targets"]]
    for problem in problems:
        if problem:
            module.warn(printable(problem))
    if module._diff:
        result["diff"] = diff_of(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
