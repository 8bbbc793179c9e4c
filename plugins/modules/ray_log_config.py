#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ray_log_config
short_description: Manage Ray's log rotation and level settings in an environment file or systemd drop-in
version_added: 0.1.0
description:
  - Sets C(RAY_ROTATION_MAX_BYTES), C(RAY_ROTATION_BACKUP_COUNT) and C(RAY_BACKEND_LOG_LEVEL) in a C(KEY=value)
    environment file (C(/etc/environment), a Docker Compose C(.env)) or in the C([Service]) section of a systemd
    unit or drop-in, keeping every other line and comment.
  - Values are written as Ray reads them - sizes as integers (Ray parses C(512M) with C(int()) and crashes), levels
    as names (Ray ignores numbers such as C(40) and stays at INFO).
  - Only the settings given are managed; O(state=absent) removes all three.
  - Writes atomically, only when the content really changes.
author:
  - rayops.disk contributors (@rayops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
    description: Whether running the module again right after changes nothing.
  platform:
    platforms: posix
options:
  path:
    description: The file to manage. Created (with its settings) when missing and O(state=present).
    type: path
    required: true
  format:
    description:
      - C(env) for C(KEY=value) lines (an C(export) prefix is kept), C(systemd) for C(Environment=) lines in
        C([Service]).
    type: str
    choices: [env, systemd]
    default: env
  rotation_max_bytes:
    description:
      - Size at which Ray rotates a log file. An integer or a size like C(1MB) (1 KB = 1024 bytes); written as an
        integer. C(0) means no rotation.
    type: str
  rotation_backup_count:
    description: Rotated files kept per log, 1 or more.
    type: int
  backend_log_level:
    description:
      - Log level of Ray's C++ processes - C(trace), C(debug), C(info), C(warning), C(error), C(fatal) (any case), or
        Python's C(10) to C(50), which are written as the matching name (C(40) becomes C(error)).
    type: str
  state:
    description: C(present) sets the given settings, C(absent) removes all three.
    type: str
    choices: [present, absent]
    default: present
  backup:
    description: Keep a timestamped copy of the file before changing it.
    type: bool
    default: false
notes:
  - A disk bound per Ray log file is O(rotation_max_bytes) times (O(rotation_backup_count) + 1).
  - Ray reads these settings when its processes start; restart Ray (or the service) for them to apply.
  - Ray does not reopen logs on a signal; an external logrotate of Ray logs needs C(copytruncate).
"""

EXAMPLES = r"""
- name: Ray logs rotate at 1 MiB, keep 2, errors only (the users' Docker Compose settings)
  rayops.disk.ray_log_config:
    path: /opt/ray/.env
    rotation_max_bytes: 1MB
    rotation_backup_count: 2
    backend_log_level: 40   # written as "error", the name Ray understands

- name: The same for a Ray head run by systemd
  rayops.disk.ray_log_config:
    path: /etc/systemd/system/ray-head.service.d/logging.conf
    format: systemd
    rotation_max_bytes: 1048576
    rotation_backup_count: 2
    backend_log_level: error
    mode: "0644"
"""

RETURN = r"""
settings:
  description: The settings as written (empty with O(state=absent)).
  returned: always
  type: dict
  sample: {"RAY_ROTATION_MAX_BYTES": "1048576", "RAY_ROTATION_BACKUP_COUNT": "2", "RAY_BACKEND_LOG_LEVEL": "error"}
backup_file:
  description: The copy made before the change, with O(backup=true).
  returned: changed and backup
  type: str
  sample: /opt/ray/.env.12345.2026-11-22@06:30:00~
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text

from ansible_collections.rayops.disk.plugins.module_utils._log_config import render, settings
from ansible_collections.rayops.disk.plugins.module_utils._usage import UsageError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            format=dict(type="str", choices=["env", "systemd"], default="env"),
            rotation_max_bytes=dict(type="str"),
            rotation_backup_count=dict(type="int"),
            backend_log_level=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            backup=dict(type="bool", default=False),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    absent = params["state"] == "absent"
    try:
        wanted = {} if absent else settings(params["rotation_max_bytes"], params["rotation_backup_count"],
                                            params["backend_log_level"])
    except UsageError as exc:
        module.fail_json(msg=str(exc))
    if not absent and not wanted:
        module.fail_json(msg="nothing to set: give rotation_max_bytes, rotation_backup_count or backend_log_level, "
                             "or state: absent")
    if os.path.isdir(path):
        module.fail_json(msg="path %r is a directory; give the environment file or drop-in to manage" % path)
    exists = os.path.exists(path)
    before = ""
    if exists:
        with open(path, "rb") as handle:
            before = to_text(handle.read(), errors="surrogate_or_strict")
    after = before if (absent and not exists) else render(before, params["format"], wanted, absent)
    changed = after != before
    diff = dict(before=before, after=after, before_header=path, after_header=path)
    result = dict(changed=changed, settings=wanted, diff=diff)
    if changed and not module.check_mode:
        if params["backup"] and exists:
            result["backup_file"] = module.backup_local(path)
        directory = os.path.dirname(path) or "."
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".ray_log_config-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(to_bytes(after, errors="surrogate_or_strict"))
        module.atomic_move(temp, path, unsafe_writes=params["unsafe_writes"])
    if os.path.exists(path):  # in check mode this only reports what would change
        file_args = module.load_file_common_arguments(params)
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
