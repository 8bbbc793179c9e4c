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
  - Sizes are allocated bytes, as C(du -B1) counts them. The scan never follows symlinks, never enters another
    filesystem or mount point, counts a hard-linked file once, opens every directory relative to its parent, and
    reports entries it cannot read or that vanish instead of failing.
  - With O(containers=true), each Docker container whose name matches O(container_name_filter) is measured the same
    way through C(/proc/<pid>/root) of its init process. This needs the module to run on the Docker host as root.
  - The module only reads; it never changes anything.
author:
  - rayops.disk contributors (@rayops)
requirements:
  - psutil
  - docker (the Python Docker SDK), only with O(containers=true)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
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
  tmp_dir:
    description:
      - The temp directory to measure, whose filesystem figures and level are reported.
      - Must be an existing directory, not a symlink, and not C(/).
    type: path
    default: /tmp
  ray_temp_dir:
    description:
      - Ray's temp root (the directory holding C(session_*)), for example C(/tmp/ray).
      - By default it is discovered from the running Ray processes, else C($RAY_TMPDIR), C($TMPDIR) or O(tmp_dir),
        plus C(/ray).
    type: path
  ray_users:
    description:
      - Users whose Ray processes are trusted to name Ray's temp roots and live sessions, besides C(root) (always
        trusted). Names, or numeric uids (for Ray in containers, for example C(1000) for rayproject images).
      - A process that says it is C(raylet), C(gcs_server) or C(log_monitor) is trusted only when it runs as one of
        these users, its program is a Ray file owned by such a user, and each temp root it names is a path only root
        and that user control. Others are listed in RV(untrusted_processes) and ignored. Give O(ray_temp_dir) to
        name the root yourself.
    type: list
    elements: str
    default: []
  patterns:
    description:
      - File name globs of entries directly inside O(tmp_dir) that packaging, pip and C(tempfile) leave behind.
      - Names only; a pattern with C(/) or C(..), or one that matches every name, is rejected.
    type: list
    elements: str
    default: ["ray_tmp_*", "pip-*", "tmp*"]
  thresholds:
    description:
      - Used percentages of a filesystem at which RV(level) becomes C(info), C(warning) and C(critical).
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
  stale_after_hours:
    description:
      - Stale sessions untouched (newest modification) for at least this many hours are suggested for cleanup.
    type: float
    default: 24
  uv_cache_dir:
    description:
      - The uv cache to measure. Default C($UV_CACHE_DIR), else C(~/.cache/uv) of the user the module runs as.
      - Not measured inside containers.
    type: path
  containers:
    description:
      - Also measure each Docker container whose name matches O(container_name_filter).
      - When the Docker daemon cannot be reached, the host report is still returned, RV(containers_error) says why
        and an entry is added to RV(errors); the task does not fail.
    type: bool
    default: false
  container_name_filter:
    description:
      - Docker's C(name) filter (a substring or regular expression of the container name).
    type: str
    default: ray-worker
  docker_host:
    description:
      - The Docker daemon to ask, for example C(unix:///var/run/docker.sock). Default C($DOCKER_HOST), else the
        local socket. The daemon must run on the host the module runs on.
    type: str
  activity:
    description:
      - Also tell whether the host and each container are busy, as C(ray_worker_cleanup) decides it. A target is
        busy when a Ray worker runs user code (a process titled C(ray::<task or actor>), not the C(ray::IDLE*)
        family and not Ray's own agents) or when its CPU use over O(sample_seconds) is at or above
        O(cpu_idle_percent).
      - All targets are sampled side by side, so twenty containers take about as long as one.
    type: bool
    default: false
  cpu_idle_percent:
    description:
      - CPU use, in percent of one core as C(docker stats) shows it, at or above which a target counts as busy.
      - On the host it is the CPU of Ray's worker processes (C(ray::IDLE*) and task workers, not raylet, gcs_server
        or the agents); in a container, the whole container's.
    type: float
    default: 5
  sample_seconds:
    description:
      - Length of the CPU sample window, more than 0 and at most 300. Reading a container's CPU through the Docker
        SDK takes about a second more.
    type: float
    default: 1
  scan_workers:
    description:
      - Processes that scan big trees side by side. Default the usable CPUs, at most 4. C(1) scans in the module's
        own process only, for the lightest touch on a busy node.
    type: int
notes:
  - Categories are disjoint. C(categories.live_session) and C(categories.stale_sessions) hold what is in a session
    but not in its C(logs), C(logs/old), C(runtime_resources) or C(ray_spilled_objects_*); RV(sessions) gives the
    totals per session.
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
"""

RETURN = r"""
summary:
  description: One line for a human.
  returned: always
  type: str
  sample: "/tmp 91.2% used (8.8 GiB free), level warning; 60.3 GiB in /tmp; Ray head: 1 live, 3 stale session(s); 41.0 GiB freeable"
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
    level:
      description: Level of this filesystem.
      type: str
      sample: warning
filesystems:
  description: Each distinct filesystem measured (O(tmp_dir), Ray temp roots, uv cache), shaped like RV(filesystem).
  returned: always
  type: list
  elements: dict
tmp_dir:
  description: The temp directory measured.
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
categories:
  description:
    - Disjoint categories, each with C(bytes) (allocated), C(apparent_bytes) and C(files) (non-directories).
    - Keys C(live_session), C(stale_sessions), C(spilled_objects), C(logs), C(logs_old), C(runtime_resources),
      C(tmp_patterns) (with C(by_pattern)), C(uv_cache), C(other).
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
      description: Hours since anything in the session was last modified.
      type: float
      sample: 30.5
    bytes:
      description: Allocated bytes of the whole session.
      type: int
    files:
      description: Files in the session.
      type: int
    spilled_bytes:
      description: Bytes of spilled objects in it.
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
suggestions:
  description: What cleanup would free, biggest first.
  returned: always
  type: list
  elements: dict
  sample:
    - action: remove_stale_sessions
      bytes: 44023414784
      paths: ["/tmp/ray/session_2026-11-20_10-00-00_000000_1234"]
      message: "1 stale Ray session(s) untouched for 24 h or more hold 41.0 GiB; ray_worker_cleanup
        (clean_stale_sessions) would free them"
containers:
  description:
    - One entry per matching container, with C(name), C(id), C(status), C(tmp_bytes) and C(error), and for running
      ones C(level), C(filesystem), C(node_role), C(categories), C(sessions), C(suggestions), C(errors); with
      O(activity=true) also C(activity), shaped like RV(activity).
    - C(tmp_bytes) is null for a container that is not running or could not be measured. For a stopped one
      C(error) is null and C(status) (C(exited), C(created), C(paused)...) says why; for a running one that could not
      be measured C(error) says why.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "ray-worker-1", "id": "3f2a1b0c9d8e", "status": "running", "tmp_bytes": 37580963840}]
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
      sample: ["Ray runs user code: ray::train_step", "CPU 97.5% >= 5%"]
    cpu_percent:
      description: CPU use over the window, in percent of one core.
      type: float
      sample: 97.5
    ray_tasks:
      description: Titles of the Ray workers running user code (at most 20).
      type: list
      elements: str
      sample: ["ray::train_step"]
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

from ansible_collections.rayops.disk.plugins.module_utils._optional import docker, missing, psutil
from ansible_collections.rayops.disk.plugins.module_utils._scan import printable
from ansible_collections.rayops.disk.plugins.module_utils._usage import (
    UsageError,
    UsageOptions,
    collect_usage,
    untrusted_messages,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tmp_dir=dict(type="path", default="/tmp"),
            ray_temp_dir=dict(type="path"),
            ray_users=dict(type="list", elements="str", default=[]),
            patterns=dict(type="list", elements="str", default=["ray_tmp_*", "pip-*", "tmp*"]),
            thresholds=dict(type="dict", default={}, apply_defaults=True, options=dict(
                info=dict(type="float", default=80),
                warning=dict(type="float", default=90),
                critical=dict(type="float", default=95),
            )),
            stale_after_hours=dict(type="float", default=24),
            uv_cache_dir=dict(type="path"),
            containers=dict(type="bool", default=False),
            container_name_filter=dict(type="str", default="ray-worker"),
            docker_host=dict(type="str"),
            scan_workers=dict(type="int"),
            activity=dict(type="bool", default=False),
            cpu_idle_percent=dict(type="float", default=5),
            sample_seconds=dict(type="float", default=1),
        ),
        supports_check_mode=True,
    )
    for library, error in missing(psutil, docker, need_docker=module.params["containers"]):
        module.fail_json(msg=missing_required_lib(library), exception=error)

    params = dict(module.params)
    params["patterns"] = tuple(params["patterns"])
    params["ray_users"] = tuple(params["ray_users"])
    try:
        report = collect_usage(UsageOptions(**params), psutil, docker)
    except UsageError as exc:
        module.fail_json(msg=str(exc))
    for problem in [report["containers_error"]] + untrusted_messages(report):
        if problem:
            module.warn(printable(problem))
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
