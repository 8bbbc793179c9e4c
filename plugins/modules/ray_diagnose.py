#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ray_diagnose
short_description: Why a Ray node failed, from its own logs and the live node, with the fix
version_added: 0.1.0
description:
  - Reads the logs of Ray's sessions whose logs changed within O(since_hours), on the host and in each Ray worker
    container, for the failures Ray writes - a full disk (C(disk_full)), its file system monitor's warning
    (C(fs_monitor)), a C(runtime_env) that could not be set up (C(runtime_env_failed)), a worker killed for memory
    (C(oom_killed); also the kernel OOM killer's kills of Ray's processes in the host's C(/dev/kmsg), session
    C(kernel)), a worker that died (C(worker_died)), an object whose owner died (C(owner_died)), open files
    exhausted (C(fd_exhausted)), the object store on disk for a small C(/dev/shm) (C(shm_fallback)), an ignored log
    setting (C(log_setting_ignored)).
  - Looks at the live node too - the raylet's open files against its limit (C(fd_near_limit), C(fd_limit_low)),
    memory against Ray's C(RAY_memory_usage_threshold) (C(memory_near_threshold)), C(/dev/shm) against the object
    store (C(shm_too_small)), Ray's log rotation against what C(ray_log_config) wrote (C(log_rotation_off)), the disks
    (C(disk_pressure)), deleted files held open (C(deleted_open)).
  - Each finding has its kind, severity, count, first and last time, session, the processes its lines name, a few
    lines of evidence (file, line number, the line escaped) and the remedy in one or two sentences. Lines no
    signature knows are not findings.
  - The signatures are those Ray 2.40, 2.53 and 2.60 write when each failure is induced (see
    C(docs/ray-failure-wording.md)); the same signature matches every version.
  - Logs are streamed, never loaded whole - C(grep -F) finds the few lines holding a signature's literal (reading
    the log through this module's own safely opened file, never by path), and only those are parsed. With
    O(state_file), where each log was read to is remembered (by inode,
    so a rotation or truncation is noticed) and a run reads only what was written since; findings found in this
    run have C(new) above 0.
author:
  - rayops.disk contributors (@rayops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rayops.disk.thresholds
  - rayops.disk.targets
attributes:
  check_mode:
    support: full
    details: Read-only; in check mode O(state_file) is read but not written.
  diff_mode:
    support: none
  idempotent:
    support: full
    description: Whether running the module again right after changes nothing.
  platform:
    platforms: posix
options:
  since_hours:
    description: The sessions whose logs changed in the last this many hours are read, and their findings shown.
    type: float
    default: 24
  state_file:
    description:
      - A file (root's, C(0600)) remembering where each log was read to, the findings and the totals per kind; a run
        reads only the lines written since the last one. Without it every run reads the window again.
      - Share it with C(ray-maintenance diagnose --state) (the role's cron uses C(/var/lib/rayops/diagnose-state.json))
        and an event is counted once, whichever reads it first.
    type: path
  live:
    description: Also look at the live node (open files, memory, C(/dev/shm), disks, deleted files held open).
    type: bool
    default: true
  rotation_max_bytes:
    description:
      - The C(RAY_ROTATION_MAX_BYTES) you configured (as given to M(rayops.disk.ray_log_config), for example C(1MB));
        a running Ray without it is a C(log_rotation_off) finding - Ray reads it only when it starts.
      - Not given, a Ray started without C(RAY_ROTATION_MAX_BYTES) above 0 at all is one.
    type: str
  rotation_backup_count:
    description:
      - The C(RAY_ROTATION_BACKUP_COUNT) you configured (1 or more), compared as O(rotation_max_bytes) is.
    type: int
requirements:
  - psutil
  - docker (Python SDK), only for containers
  - grep (C(/usr/bin) or C(/bin)), which finds the candidate lines of each log at its own speed
notes:
  - Every log is opened inside its target's root, never through a symlink, and only when it is a regular file owned
    by root, a user of O(ray_users) or the user a trusted Ray process runs as; any other is listed in RV(not_read).
  - Ray 2.53 and later write a full disk mostly to the driver's output (and Ray Jobs' C(job-driver-*.log)), not to
    the session's own logs, which are on the full disk; their C(fs_monitor) line in C(raylet.out) still shows it.
"""

EXAMPLES = r"""
- name: Why did this node fail in the last 6 hours?
  rayops.disk.ray_diagnose:
    since_hours: 6
  register: diagnosis

- name: Show it as ray-maintenance diagnose does
  ansible.builtin.debug:
    msg: "{{ diagnosis | rayops.disk.ray_node_findings }}"
"""

RETURN = r"""
findings:
  description: The findings, worst and newest first.
  returned: always
  type: list
  elements: dict
  sample:
    - kind: oom_killed
      severity: critical
      summary: a worker was killed for memory
      remedy: Give the task more memory (num_cpus or memory= in its options) or fewer tasks per node, or lower its use.
      target: host
      session: session_2026-12-06_11-34-02_123456_15028
      count: 1
      new: 1
      first: 1796556854.051
      last: 1796556854.051
      processes: [worker e9f43eb75d20]
      evidence:
        - file: /tmp/ray/session_2026-12-06_11-34-02_123456_15028/logs/gcs_server.out
          line: 214
          text: "[2026-12-06 11:34:14,051 W 14624 14624] (gcs_server) gcs_worker_manager.cc:58: Reporting worker exit..."
      detail: null
by_kind:
  description: Events per kind among the findings shown.
  returned: always
  type: dict
  sample: {oom_killed: 1, worker_died: 3}
new:
  description: Events read in this run (with O(state_file), those written since the last run).
  returned: always
  type: int
  sample: 4
worst:
  description: The worst severity found (C(info), C(warning), C(critical)), null when nothing was.
  returned: always
  type: str
  sample: critical
newest:
  description: When the newest finding happened (Unix time), null when nothing was found.
  returned: always
  type: float
  sample: 1796556854.051
totals:
  description: Events per kind ever read (kept in O(state_file); this run's alone without one).
  returned: always
  type: dict
  sample: {oom_killed: 7}
newest_by_kind:
  description: Per kind, when its newest event ever happened (Unix time).
  returned: always
  type: dict
  sample: {oom_killed: 1796556854.051}
files_read:
  description: Log files read in this run.
  returned: always
  type: int
  sample: 42
bytes_read:
  description: Bytes of logs read in this run.
  returned: always
  type: int
  sample: 1527154
not_read:
  description: Logs or log dirs not read, and why (a symlink, another user's file, a fifo...).
  returned: always
  type: list
  elements: dict
  sample: [{path: /tmp/ray/session_latest/logs/raylet.out, error: "raylet.out is owned by uid 1001, not by a trusted user: not opened"}]
errors:
  description: Targets that could not be read (Docker unreachable, a container gone), with the reason.
  returned: always
  type: list
  elements: dict
  sample: []
summary:
  description: One line - how many findings of which kinds, the worst first.
  returned: always
  type: str
  sample: "2 finding(s), worst critical: oom_killed, worker_died"
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rayops.disk.plugins.module_utils._diagnose import DiagnoseOptions, diagnose
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._optional import docker, missing, psutil
from ansible_collections.rayops.disk.plugins.module_utils._options import UsageOptions, argument_spec, option_values
from ansible_collections.rayops.disk.plugins.module_utils._targets import containers_wanted

USAGE_NAMES = ("tmp_dir", "ray_temp_dir", "ray_users", "patterns", "containers", "container_name_filter",
               "container_tmp_dir", "docker_host", "thresholds", "rotation_max_bytes", "rotation_backup_count")
"""The usage options it takes (doc fragment rayops.disk.targets, thresholds, the rotation configured): where Ray and
its containers are, and what it should run with."""


def module_argument_spec() -> dict:
    """The module's argument_spec, made anew for each use (AnsibleModule fills the thresholds' default in place)."""
    return dict(argument_spec(USAGE_NAMES), since_hours=dict(type="float", default=24.0), state_file=dict(type="path"),
                live=dict(type="bool", default=True))


def main():
    module = AnsibleModule(argument_spec=module_argument_spec(), supports_check_mode=True)
    params = module.params
    for name, error in missing(psutil, docker, containers_wanted(params["containers"], params["docker_host"])):
        module.fail_json(msg=missing_required_lib(name), exception=error)
    usage = UsageOptions(**option_values({name: params[name] for name in USAGE_NAMES}))
    options = DiagnoseOptions(usage, since_hours=params["since_hours"], state_file=params["state_file"],
                              live=params["live"])
    try:
        result = diagnose(options, psutil, docker, save=not module.check_mode)
    except UsageError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
