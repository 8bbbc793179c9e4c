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
  - Writes atomically, only when the content (or O(mode), O(owner), O(group)) really changes, and only through
    file descriptors, never through a path that another user could replace (see the notes).
author:
  - rayops.disk contributors (@rayops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Nothing is created or changed; C(changed) and the diff are those of the real run.
  diff_mode:
    support: partial
    details: The diff shows the file's content before and after; a change of only O(mode), O(owner) or O(group)
      reports C(changed) with equal content.
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
      - Which files Ray rotates depends on its version - Ray 2.40 rotates only its C(.log) files, never C(.out) and
        C(.err) (C(worker-*.out), C(raylet.out), C(gcs_server.out) grow without bound); Ray 2.53 and later rotate
        those too. See the notes.
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
    description: Keep a timestamped copy of the file (same mode and owner) before changing its content.
    type: bool
    default: false
  mode:
    description:
      - The file's permissions, octal (quote it, V('0644')) or symbolic (V(u=rw,g=r,o=r)).
      - When not given, a file that exists keeps its mode and a new one gets C(0666) minus the umask.
    type: raw
  owner:
    description: User that owns the file, a name or a uid. When not given, a file that exists keeps its owner.
    type: str
  group:
    description: Group of the file, a name or a gid. When not given, a file that exists keeps its group.
    type: str
notes:
  - A disk bound per Ray log file is O(rotation_max_bytes) times (O(rotation_backup_count) + 1).
  - Ray reads these settings when its processes start; restart Ray (or the service) for them to apply.
    M(rayops.disk.ray_tmp_usage) with the same O(rotation_max_bytes) and O(rotation_backup_count) reports whether the
    running Ray uses them (RV(rayops.disk.ray_tmp_usage#module:log_rotation.in_effect)).
  - What the settings rotate, by Ray version - Ray 2.40 rotates the C(.log) files of its Python components and C++
    core workers (backups C(..._PID.1.log)) and never its C(.out) and C(.err) files; Ray 2.53 and later also
    rotate C(.out) and C(.err) (C(.out.1)), but only when C(RAY_ROTATION_MAX_BYTES) is in Ray's environment. No
    version rotates C(ray_client_server*.out) or Ray Jobs' C(job-driver-*.log). The role C(rayops.disk.ray_cleanup)
    gives logrotate exactly what Ray leaves on its version.
  - Ray does not reopen logs on a signal; an external logrotate of Ray logs needs C(copytruncate).
  - The module runs as root on files in directories other users may own (C(/opt/ray/.env)). Such a user can
    rename or replace any entry there at any moment, so no symlink anywhere in O(path) is followed - the
    directories are opened one at a time from C(/) (or the working directory for a relative path), and a symlink
    among them or at the file is refused, with or without check mode, naming it and its target; its target is
    never read or shown in a diff. Give the real path.
    A file with more than one hard link, a named pipe or a device is refused too.
  - New content is written in a private C(0700) directory made next to the file, given its mode and owner through
    its file descriptor (the current file's extended attributes, such as an SELinux label or ACL, are copied) and
    renamed into place. Ansible's C(atomic_move) is not used, so there are no C(unsafe_writes), SELinux or
    C(attributes) options.
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

import stat
from types import SimpleNamespace

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError
from ansible_collections.rayops.disk.plugins.module_utils._log_config import (
    Destination,
    current_umask,
    group_id,
    render,
    settings,
    user_id,
)

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    format=dict(type="str", choices=["env", "systemd"], default="env"),
    rotation_max_bytes=dict(type="str"),
    rotation_backup_count=dict(type="int"),
    backend_log_level=dict(type="str"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    backup=dict(type="bool", default=False),
    mode=dict(type="raw"),
    owner=dict(type="str"),
    group=dict(type="str"),
)


def wanted_mode(mode, dest):
    """``mode`` (an int, an octal string or a symbolic mode) as a number, against the file as it is or will be."""
    if mode is None or isinstance(mode, int) and not isinstance(mode, bool):
        number = mode
    else:
        try:
            number = int(mode, 8)
        except (TypeError, ValueError):
            base = dest.stat or SimpleNamespace(st_mode=stat.S_IFREG | (0o666 & ~current_umask()))
            try:
                number = AnsibleModule._symbolic_mode_to_octal(base, str(mode))
            except Exception as exc:
                raise UsageError("mode %r must be in octal or symbolic form, for example '0644' or 'u=rw,g=r,o=r' "
                                 "(%s)" % (mode, to_native(exc)))
    if number is not None and number != stat.S_IMODE(number):
        raise UsageError("mode %r is not a file mode: only permission bits are allowed, for example '0644'" % (mode,))
    return number


def run(params, check_mode):
    """The module's work: the result, or ``UsageError``/``OSError``; changes nothing in check mode."""
    absent = params["state"] == "absent"
    wanted = {} if absent else settings(params["rotation_max_bytes"], params["rotation_backup_count"],
                                        params["backend_log_level"])
    if not absent and not wanted:
        raise UsageError("nothing to set: give rotation_max_bytes, rotation_backup_count or backend_log_level, "
                         "or state: absent")
    uid = None if params["owner"] is None else user_id(params["owner"])
    gid = None if params["group"] is None else group_id(params["group"])
    path = params["path"]
    dest = Destination(path)
    try:
        mode = wanted_mode(params["mode"], dest)
        before = "" if dest.content is None else to_text(dest.content, errors="surrogate_or_strict")
        after = before if (absent and not dest.exists) else render(before, params["format"], wanted, absent)
        rewrite = after != before
        result = dict(changed=rewrite or dest.attributes_differ(mode, uid, gid), settings=wanted,
                      diff=dict(before=before, after=after, before_header=path, after_header=path))
        if result["changed"] and not check_mode:
            if rewrite and params["backup"] and dest.exists:
                result["backup_file"] = dest.backup()
            if rewrite:
                dest.replace(to_bytes(after, errors="surrogate_or_strict"), mode, uid, gid)
            else:
                dest.set_attributes(mode, uid, gid)
        return result
    finally:
        dest.close()


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module.params, module.check_mode)
    except UsageError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="could not update %r: %s" % (module.params["path"], to_native(exc)))
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
