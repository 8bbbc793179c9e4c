#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ray_tmp_usage
short_description: Report how full a Ray node's disk is and what fills it
version_added: 0.1.0
description:
  - Measures the filesystem that holds O(tmp_dir), and everything under O(tmp_dir), Ray's temp roots and the uv
    cache, sorted into disjoint categories (live session, stale sessions, spilled objects, logs, C(logs/old),
    runtime resources, the O(patterns) of the tmp dir, uv cache, other). A byte counts in exactly one category.
  - Ray's temp roots and live sessions are read from the command lines of the running C(raylet), C(gcs_server) and
    C(log_monitor) processes; without a running Ray the root is C($RAY_TMPDIR), C($TMPDIR) or O(tmp_dir), plus C(/ray).
    A session is live when a running Ray process names it, a bound unix socket lies in it, or a process holds a file
    in it open. Every other C(session_*) directory is stale. C(session_latest) is read, never followed.
  - Spill directories outside the sessions (a custom C(object_spilling_config)) are found the same way, or given in
    O(spill_dirs). Each C(ray_spilled_objects_<node id>) in one counts as spilled objects of its node's session
    (never C(other)) and is listed in RV(spill_dirs) as C(live) while a raylet on this machine runs the node or its
    session is live, else C(stale).
  - Sizes are allocated bytes, as C(du -B1) counts them. The scan never follows symlinks, never enters another
    filesystem or mount point, counts a hard-linked file once, opens every directory relative to its parent, and
    reports entries it cannot read or that vanish instead of failing.
  - With O(containers=true), each Docker container whose name matches O(container_name_filter) is measured the same
    way through C(/proc/<pid>/root) of its init process, in its own temp directory O(container_tmp_dir) (the host keeps
    O(tmp_dir)). This needs the module to run on the Docker host as root.
  - The module only reads; it never changes anything.
author:
  - rayops.disk contributors (@rayops)
requirements:
  - psutil
  - docker (the Python Docker SDK), only with O(containers=true)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rayops.disk.thresholds
  - rayops.disk.activity
  - rayops.disk.spill
  - rayops.disk.targets
  - rayops.disk.cleanup_rules
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode returns exactly what a normal run returns.
  diff_mode:
    support: none
  idempotent:
    support: full
    description: Whether the module can be run again without changing anything.
  platform:
    platforms: posix
    details: Linux only (reads C(/proc)).
options:
  uv_cache_dir:
    description:
      - The uv cache to measure. Default C($UV_CACHE_DIR), else C(~/.cache/uv) of the user the module runs as.
      - Not measured inside containers.
    type: path
  activity:
    description:
      - Also tell whether the host and each container are busy, as C(ray_worker_cleanup) decides it. A target is
        busy when a Ray worker runs a task or an actor method (its title, as Ray 2.40 to 2.60 write it), or when
        the CPU that Ray's idle machinery does not explain is at or above O(cpu_idle_percent); see
        O(busy_titles) and O(idle_titles) for what titles cannot tell.
      - All targets are sampled side by side, so twenty containers take about as long as one.
    type: bool
    default: false
  scan_workers:
    description:
      - Processes that scan big trees side by side. Default the usable CPUs, at most 4. C(1) scans in the module's
        own process only, for the lightest touch on a busy node.
    type: int
  rotation_max_bytes:
    description:
      - The C(RAY_ROTATION_MAX_BYTES) you configured (as given to M(rayops.disk.ray_log_config), for example C(1MB)).
        RV(log_rotation) then says whether the running Ray uses it - Ray reads it only when it starts.
      - Not given, RV(log_rotation.in_effect) says whether Ray started with C(RAY_ROTATION_MAX_BYTES) above 0 at all.
    type: str
  rotation_backup_count:
    description:
      - The C(RAY_ROTATION_BACKUP_COUNT) you configured (1 or more), compared as O(rotation_max_bytes) is.
    type: int
notes:
  - Categories are disjoint. C(categories.live_session) and C(categories.stale_sessions) hold what is in a session
    but not in its C(logs), C(logs/old), C(runtime_resources) or C(ray_spilled_objects_*); RV(sessions) gives the
    totals per session.
  - C(categories.pymp_dirs) counts the C(pymp-*) directories Python's multiprocessing makes in O(tmp_dir) (Ray 2.60's
    dashboard leaves one each time it is killed). They are not in the default O(patterns) - a running process keeps
    using its directory by name for its whole life and cannot make it again - add C(pymp-*) to the patterns of
    M(rayops.disk.ray_worker_cleanup) to remove the old ones (a bound socket or an open file in one keeps it).
  - Ray's version is read from the package the trusted C(raylet) runs from (C(ray/_version.py), else the
    C(ray-*.dist-info/METADATA) beside it), inside the target's root, only from files and directories that root or
    O(ray_users) own and no one else may write.
seealso:
  - name: Ray logging and temp directory layout
    description: Where Ray writes its sessions, logs and spilled objects.
    link: https://docs.ray.io/en/latest/ray-observability/user-guides/configure-logging.html
"""

EXAMPLES = r"""
- name: Measure the Ray node's temp disk
  rayops.disk.ray_tmp_usage:
  register: usage

- name: Fail when the disk is critical
  ansible.builtin.assert:
    that: usage.level != 'critical'
    fail_msg: "{{ usage.summary }}"

- name: Include Ray worker containers, with a stricter warning level
  rayops.disk.ray_tmp_usage:
    containers: true
    container_name_filter: ray-worker
    thresholds:
      info: 70
      warning: 80
      critical: 90

- name: Which workers are busy right now (as ray_worker_cleanup would decide)
  rayops.disk.ray_tmp_usage:
    containers: true
    activity: true
    cpu_idle_percent: 5
    sample_seconds: 2
  register: usage

- name: Ray started with --temp-dir=/data/ray and a uv cache of another user
  rayops.disk.ray_tmp_usage:
    ray_temp_dir: /data/ray
    uv_cache_dir: /home/apiuser/.cache/uv

- name: Ray on the host under /home/apiuser/.cache/tmp, Ray in the worker containers under /tmp
  rayops.disk.ray_tmp_usage:
    tmp_dir: /home/apiuser/.cache/tmp
    containers: true
    container_tmp_dir: /tmp
"""

RETURN = r"""
summary:
  description: One line for a human.
  returned: always
  type: str
  sample: "/tmp 91.2% used (8.8 GiB free), level warning; 60.3 GiB in /tmp; Ray head: 1 live, 3 stale session(s);
    cleanup would free 41.0 GiB, kept 3: 3 too new"
level:
  description: The worst level of the filesystems measured (C(ok), C(info), C(warning) or C(critical)).
  returned: always
  type: str
  sample: warning
filesystem:
  description: The filesystem holding O(tmp_dir).
  returned: always
  type: dict
  contains:
    path:
      description: The directory measured.
      type: str
      sample: /tmp
    total_bytes:
      description: Size of the filesystem.
      type: int
      sample: 107374182400
    used_bytes:
      description: Bytes in use.
      type: int
      sample: 97911832576
    free_bytes:
      description: Bytes available to unprivileged users, as C(df) shows them.
      type: int
      sample: 9462349824
    used_percent:
      description: Used share of the usable space, as C(df) computes it.
      type: float
      sample: 91.2
    inodes_total:
      description: Inodes of the filesystem (0 where it has no inode limit).
      type: int
      sample: 6553600
    inodes_used:
      description: Inodes in use.
      type: int
      sample: 6029312
    inodes_free:
      description: Inodes available to unprivileged users.
      type: int
      sample: 524288
    inodes_used_percent:
      description:
        - Used share of the inodes, next to RV(filesystem.used_percent) - 200,000 small log files fill the inodes of a
          disk long before its bytes. Null where the filesystem has no inode limit (btrfs).
      type: float
      sample: 92.0
    level:
      description: Level of this filesystem.
      type: str
      sample: warning
deleted_open:
  description:
    - Space that deletion cannot free - files deleted while a process still holds them open (what C(lsof +L1) lists),
      on the filesystems of RV(filesystems), held by any process of the host. They are freed only when the process
      closes them (restarts). Each container's entry has its own, for its processes and its filesystem.
    - C(bytes) (allocated, a file held by several processes counted once), C(files), and C(processes) (largest
      first, at most 10) with C(pid), C(process), C(bytes), C(files) and up to 5 C(paths) as the process sees them.
  returned: always
  type: dict
  sample: {"bytes": 15837691904, "files": 1, "processes": [{"pid": 4242, "process": "raylet", "bytes": 15837691904,
           "files": 1, "paths": ["/tmp/ray/session_2026-11-22_10-00-00_000002_22/logs/raylet.out"]}]}
holders:
  description:
    - Who and what holds the measured dirs, from the same walk - each entry directly in O(tmp_dir) or a Ray temp root
      (a session counted whole) with its C(owner) (user name, else C(uid N)), C(uid), C(bytes) and C(inodes) (its
      files and directories).
    - C(paths) the 5 largest by bytes, C(by_inodes) the 5 with the most inodes; C(owners) the 5 owners holding the
      most bytes, C(owners_by_inodes) the most inodes, each with C(bytes), C(inodes) and C(entries). Each container's
      entry has its own.
  returned: always
  type: dict
  sample: {"paths": [{"path": "/tmp/alice-data", "owner": "alice", "uid": 1001, "bytes": 15837691904, "inodes": 1}],
           "by_inodes": [{"path": "/tmp/ray/session_2026-11-22_10-00-00_000002_22", "owner": "root", "uid": 0,
                          "bytes": 1048576, "inodes": 201402}],
           "owners": [{"owner": "alice", "uid": 1001, "bytes": 15837691904, "inodes": 1, "entries": 1}],
           "owners_by_inodes": [{"owner": "root", "uid": 0, "bytes": 1048576, "inodes": 201402, "entries": 1}]}
filesystems:
  description: Each distinct filesystem measured (O(tmp_dir), Ray temp roots, uv cache), shaped like RV(filesystem).
  returned: always
  type: list
  elements: dict
tmp_dir:
  description: The temp directory measured on the host (O(tmp_dir)); each entry of RV(containers) has its own.
  returned: always
  type: str
  sample: /tmp
tmp_bytes:
  description: Allocated bytes under O(tmp_dir), including Ray roots inside it.
  returned: always
  type: int
  sample: 64747151360
scanned_bytes:
  description: Allocated bytes of everything scanned (also Ray roots and the uv cache outside O(tmp_dir)).
  returned: always
  type: int
  sample: 64747151360
ray_temp_dirs:
  description: Ray temp roots measured.
  returned: always
  type: list
  elements: str
  sample: ["/tmp/ray"]
node_role:
  description: C(head) when C(gcs_server) or a head raylet runs here, C(worker) when only a raylet runs, else C(none).
  returned: always
  type: str
  sample: head
ray_processes:
  description: Ray system processes found (pid and kind).
  returned: always
  type: list
  elements: dict
  sample: [{"pid": 4242, "kind": "raylet"}, {"pid": 4230, "kind": "gcs_server"}]
untrusted_processes:
  description:
    - Processes that say they are Ray's but were not trusted (see O(ray_users)), with the reason; ignored.
  returned: always
  type: list
  elements: dict
  sample: [{"pid": 5150, "kind": "raylet", "reason": "runs as mallory, not as root or a user of ray_users"}]
ray_version:
  description: The version of the Ray that runs here (its trusted C(raylet)'s package), or null when no trusted Ray
    runs or its version cannot be read (RV(log_rotation.message) says why).
  returned: always
  type: str
  sample: 2.40.0
log_rotation:
  description:
    - How the running Ray rotates its logs, or null when no trusted Ray runs. Containers carry their own.
    - What Ray rotates differs by version - Ray 2.40 rotates only C(.log) files (its backups named C(..._PID.1.log)),
      never C(.out) and C(.err); Ray 2.53 and later rotate those too (C(.out.1)), but only when C(RAY_ROTATION_MAX_BYTES)
      was in Ray's environment when it started. See C(docs/ray-versions.md).
  returned: always
  type: dict
  contains:
    max_bytes:
      description: The rotation size Ray's components got (C(--logging-rotate-bytes) of its C(log_monitor)); C(0) is
        no rotation.
      type: int
      sample: 1048576
    backup_count:
      description: Backups kept per log (C(--logging-rotate-backup-count) of its C(log_monitor)).
      type: int
      sample: 2
    environment:
      description: C(RAY_ROTATION_MAX_BYTES) and C(RAY_ROTATION_BACKUP_COUNT) as the C(raylet)'s environment holds them
        (only these two are read); null when it cannot be read (not root).
      type: dict
      sample: {"RAY_ROTATION_MAX_BYTES": "1048576", "RAY_ROTATION_BACKUP_COUNT": "2"}
    ray_rotates:
      description: Kinds of log Ray rotates itself here - C(component_logs) (C(.log) of its Python components),
        C(core_logs) (C(python-core-*.log)), C(process_output) (C(.out) and C(.err) of raylet, gcs_server, workers
        and agents).
      type: list
      elements: str
      sample: ["component_logs", "core_logs"]
    ray_leaves:
      description: Kinds it never rotates here - the others, and always C(client_server_output)
        (C(ray_client_server*.out) and C(.err)) and C(job_driver_logs) (C(job-driver-*.log)).
      type: list
      elements: str
      sample: ["process_output", "client_server_output", "job_driver_logs"]
    logrotate_globs:
      description: Names in a session's C(logs) that an external logrotate (with C(copytruncate)) should rotate, as
        the role C(rayops.disk.ray_cleanup) does - what Ray leaves, never one of Ray's own backups.
      type: list
      elements: str
      sample: ["*.out", "*.err", "job-driver-*.log"]
    configured_max_bytes:
      description: O(rotation_max_bytes) in bytes, or null.
      type: int
    configured_backup_count:
      description: O(rotation_backup_count), or null.
      type: int
    in_effect:
      description:
        - With O(rotation_max_bytes) or O(rotation_backup_count), whether Ray runs with them.
        - Without, whether Ray started with C(RAY_ROTATION_MAX_BYTES) above 0 (without it Ray's C++ processes
          do not rotate by Ray's settings).
        - Null when it cannot be told (the C(raylet)'s environment is unreadable). A C(false) is also a module warning.
      type: bool
      sample: false
    message:
      description: What is wrong and the fix (restart Ray after changing its environment file), or a note; else null.
      type: str
      sample: "Ray 2.40.0 on host runs with log rotation at 536870912 bytes and 5 backup(s) (--logging-rotate-* of its
        log_monitor); RAY_ROTATION_MAX_BYTES is 536870912, not the configured 1048576; ... restart Ray ..."
categories:
  description:
    - Disjoint categories, each with C(bytes) (allocated), C(apparent_bytes) and C(files) (non-directories).
    - Keys C(live_session), C(stale_sessions), C(spilled_objects), C(logs), C(logs_old), C(runtime_resources),
      C(tmp_patterns) (with C(by_pattern)), C(uv_cache), C(pymp_dirs) (C(pymp-*) directories in O(tmp_dir) that are
      not in O(patterns)), C(other).
  returned: always
  type: dict
  sample:
    stale_sessions: {"bytes": 1048576, "apparent_bytes": 1000000, "files": 12}
    spilled_objects: {"bytes": 160432128, "apparent_bytes": 160000000, "files": 20}
    tmp_patterns:
      bytes: 4096
      apparent_bytes: 10
      files: 1
      by_pattern: {"ray_tmp_*": {"bytes": 4096, "apparent_bytes": 10, "files": 1}}
sessions:
  description: Every Ray session found, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Directory name.
      type: str
      sample: session_2026-11-22_04-19-03_123456_4242
    path:
      description: Full path (inside the container for container entries).
      type: str
      sample: /tmp/ray/session_2026-11-22_04-19-03_123456_4242
    live:
      description: Whether Ray is using it.
      type: bool
    live_reason:
      description: Why it counts as live (C(process:raylet), C(socket), C(open_file)...), or null.
      type: str
      sample: process:raylet
    latest:
      description: Whether C(session_latest) names it.
      type: bool
    started:
      description: Start time from the directory name (node local time), or null.
      type: str
      sample: "2026-11-22T04:19:03"
    age_hours:
      description: Hours since anything in the session (its spill directories elsewhere included) was last modified.
      type: float
      sample: 30.5
    bytes:
      description: Allocated bytes of the whole session, with its node's spill directories elsewhere (RV(spill_dirs)).
      type: int
    files:
      description: Files in the session (with its spill directories elsewhere).
      type: int
    spilled_bytes:
      description: Bytes of spilled objects of its nodes, in it and in spill directories elsewhere (RV(spill_dirs)).
      type: int
    logs_bytes:
      description: Bytes in C(logs), without C(logs/old).
      type: int
    logs_old_bytes:
      description: Bytes in C(logs/old).
      type: int
    logs_old_files:
      description: Files in C(logs/old).
      type: int
    runtime_resources_bytes:
      description: Bytes in C(runtime_resources).
      type: int
spill_dirs:
  description:
    - Each C(ray_spilled_objects_<node id>) directory directly in a spill directory outside Ray's sessions (see
      O(spill_dirs)), by path. Its bytes are in RV(categories) as C(spilled_objects) and in the RV(sessions) entry of
      its node's session.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The node's spill directory (inside the container for container entries).
      type: str
      sample: /mnt/spill/ray_spilled_objects_40c0a367bdd99b013fceeb7d5bf7e1efb4d177e1a1d5aa3e0d551333
    root:
      description: The spill directory it is in.
      type: str
      sample: /mnt/spill
    source:
      description: Who named the spill directory - C(process:gcs_server), C(process:raylet) or C(option)
        (O(spill_dirs)).
      type: str
    node_id:
      description: The Ray node that spilled into it.
      type: str
    session:
      description: The session of the node (name), or null when no session here is known to hold it.
      type: str
    session_path:
      description: Full path of that session, or null.
      type: str
    session_from:
      description:
        - How the session is known - C(raylet) (the command line of the raylet running the node) or C(session_files)
          (the session's C(logs/debug_state.txt), and on Ray 2.60 its C(*_port_<node id>) files); null when unknown.
      type: str
    status:
      description:
        - C(live) while a process on this machine says it is the raylet of the node, or the node's session is live;
          C(stale) when neither (M(rayops.disk.ray_worker_cleanup) may remove it); C(unknown) on a network or cluster
          filesystem, where other machines' nodes may spill (never removed).
      type: str
      sample: stale
    reason:
      description: Why it has that status.
      type: str
      sample: "no raylet on this machine runs node 40c0a367...; its session session_2026-11-22_04-19-03_123456_4242 is
        not live"
    bytes:
      description: Allocated bytes.
      type: int
    apparent_bytes:
      description: Apparent bytes.
      type: int
    files:
      description: Files in it.
      type: int
    age_hours:
      description: Hours since anything in it was last modified.
      type: float
spill_roots:
  description:
    - Every spill directory looked at, with C(path), C(source) (as in RV(spill_dirs)), C(pid) (of the naming process),
      C(status), C(reason), C(filesystem_type) and C(node_dirs) (how many node directories it holds).
    - C(status) is C(measured), C(in_session) (Ray's default, counted with the session), C(missing) (nothing spilled
      yet), or C(refused) - a symlink, or a path another user could change; C(reason) says why and how to fix it.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/mnt/spill", "source": "process:gcs_server", "pid": 4230, "status": "measured", "reason": null,
            "filesystem_type": "ext4", "node_dirs": 2}]
cleanup:
  description:
    - What M(rayops.disk.ray_worker_cleanup) would do on the host now with the same options - a dry run of its own
      rules (O(min_tmp_size), O(max_age_hours) by O(age_by), O(exclude), live sessions, open, locked and mounted
      entries), not an estimate. Without O(activity=true) the host counts as idle.
    - C(status) is C(cleaned) (would clean), C(skipped_below_threshold), C(skipped_active) or C(error), with its
      C(reason); C(freed_bytes) what it would free; C(kept_count) and C(kept_by_reason) what it would keep, and why
      (C(fresh) is too new for O(max_age_hours)).
  returned: always
  type: dict
  sample: {"status": "cleaned", "reason": null, "freed_bytes": 44023414784, "kept_count": 12,
           "kept_by_reason": {"fresh": 9, "open": 3}}
suggestions:
  description:
    - What fills the disk and what frees it, biggest first. The actions of cleanup (C(by_cleanup=true)) are
      RV(cleanup) split by what it takes - C(remove_stale_sessions), C(clean_old_logs), C(clean_tmp_patterns),
      C(remove_stale_spill) (RV(spill_dirs) that are C(stale)) - each with the C(bytes) and C(entries) it would
      free, the top-level C(paths) it would remove (at most 100) and what it would keep (C(kept), C(kept_by_reason)).
    - C(remove_orphaned_spill) and C(prune_uv_cache) (C(by_cleanup=false)) are space cleanup does not take.
    - C(message) says it in one line, with what would be kept and why.
  returned: always
  type: list
  elements: dict
  sample:
    - action: remove_stale_sessions
      by_cleanup: true
      bytes: 44023414784
      entries: 1520
      paths: ["/tmp/ray/session_2026-11-20_10-00-00_000000_1234"]
      kept: 3
      kept_by_reason: {"fresh": 3}
      message: "stale Ray sessions: cleanup would free 41.0 GiB (1520 entries, older than 24 h); kept 3: 3 too new"
containers:
  description:
    - One entry per matching container, with C(name), C(id), C(status), C(tmp_dir) (O(container_tmp_dir), as the
      container sees it), C(tmp_bytes) and C(error), and for running ones C(level), C(filesystem), C(node_role),
      C(categories), C(sessions), C(cleanup), C(suggestions), C(errors), C(ray_version), C(log_rotation),
      C(spill_dirs), C(deleted_open); with
      O(activity=true) also C(activity), shaped like RV(activity).
    - C(tmp_bytes) is null for a container that is not running or could not be measured. For a stopped one
      C(error) is null and C(status) (C(exited), C(created), C(paused)...) says why; for a running one that could not
      be measured C(error) says why.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "ray-worker-1", "id": "3f2a1b0c9d8e", "status": "running", "tmp_dir": "/tmp",
            "tmp_bytes": 37580963840}]
activity:
  description:
    - With O(activity=true), whether the host is busy, else null. Containers carry their own C(activity).
    - C(busy) is null and C(error) says why when a target could not be sampled (a container that stopped).
  returned: always
  type: dict
  contains:
    busy:
      description: Whether the target is busy.
      type: bool
      sample: true
    reasons:
      description: Why it is busy.
      type: list
      elements: str
      sample: ["Ray runs user code: ray::train_step (as apiuser)", "CPU 97.5% >= 5% (ray::train_step 97.5%)"]
    cpu_percent:
      description: CPU over the window, in percent of one core, of what counts (see O(cpu_idle_percent)) - with what
        C(ray::IDLE) workers used beyond what an idle worker uses (RV(activity.over_idle)).
      type: float
      sample: 97.5
    ray_tasks:
      description: Titles of the Ray workers running a task or an actor method, at the start or end of the window
        (at most 20).
      type: list
      elements: str
      sample: ["ray::train_step"]
    ran_tasks:
      description: Titles of the tasks or methods seen only within the window (its titles are looked at 3 times),
        the workers idle again at its ends - short tasks.
      type: list
      elements: str
      sample: ["ray::short_task"]
    over_idle:
      description: The C(ray::IDLE) workers that used more than an idle worker does (C(bound_percent), 3 % of a core
        and a clock tick) - they ran tasks between the looks; C(workers), C(started) (of them, born in the window),
        C(cpu_percent) and C(excess_percent) (what counts).
      type: dict
      sample: {"workers": 7, "started": 0, "cpu_percent": 67.3, "excess_percent": 39.3, "bound_percent": 4.0}
    why:
      description: One line for a human - why busy or idle, and what Ray's idle machinery used.
      type: str
      sample: "no task or actor method running; CPU 0.0% < 5%; 4 idle worker(s), 1 idle actor(s), 11 Ray system
        process(es) use 9.4% CPU, not counted"
    idle_cpu_percent:
      description: CPU of idle workers (up to what an idle one uses), idle actors and Ray's system processes over the
        window, never counted.
      type: float
      sample: 9.4
    counted:
      description: The processes whose CPU counted, busiest first (at most 20), with C(pid), C(title), C(role)
        (C(work) or C(other)), C(user) and C(cpu_percent).
      type: list
      elements: dict
      sample: [{"pid": 4242, "title": "ray::train_step", "role": "work", "user": "apiuser", "cpu_percent": 97.5}]
    idle_actors:
      description: Titles of the actors alive between calls.
      type: list
      elements: str
      sample: ["ray::Holder"]
    idle_workers:
      description: How many idle workers (C(ray::IDLE*)) there were.
      type: int
      sample: 4
    system_processes:
      description: How many of Ray's own processes (raylet, gcs_server, agents, dashboard, monitors) there were.
      type: int
      sample: 11
containers_error:
  description: Why containers could not be listed (Docker unreachable), or null.
  returned: always
  type: str
errors:
  description: Entries that could not be measured (path and error), at most 50; see RV(error_count).
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/tmp/private", "error": "Permission denied"}]
error_count:
  description: Number of errors, including those not listed.
  returned: always
  type: int
not_measured:
  description: Entries deliberately not measured (mount points, other filesystems, vanished), at most 50.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/tmp/ray/mnt", "reason": "mount point"}]
not_measured_count:
  description: Number of entries not measured, including those not listed.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, printable
from ansible_collections.rayops.disk.plugins.module_utils._node import collect_usage
from ansible_collections.rayops.disk.plugins.module_utils._optional import docker, missing, psutil
from ansible_collections.rayops.disk.plugins.module_utils._options import (
    UsageOptions,
    argument_spec,
    option_names,
    option_values,
)
from ansible_collections.rayops.disk.plugins.module_utils._targets import containers_wanted
from ansible_collections.rayops.disk.plugins.module_utils._text import rotation_messages, untrusted_messages


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(option_names(UsageOptions)),
        supports_check_mode=True,
    )
    for library, error in missing(psutil, docker, need_docker=containers_wanted(module.params["containers"], module.params["docker_host"])):
        module.fail_json(msg=missing_required_lib(library), exception=error)

    params = option_values(module.params)
    try:
        report = collect_usage(UsageOptions(**params), psutil, docker)
    except UsageError as exc:
        module.fail_json(msg=str(exc))
    for problem in [report["containers_error"]] + untrusted_messages(report) + rotation_messages(report):
        if problem:
            module.warn(printable(problem))
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
