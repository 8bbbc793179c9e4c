#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ray_node_info
short_description: What a deploy of Ray disk hygiene needs to know about a node, in one round trip
version_added: 0.9.0
description:
  - Reads, in one call, what the role C(rayops.disk.ray_cleanup) decides by before it changes anything - the state
    of given paths, which Debian packages are installed, what runs as PID 1 (an init system or a container's own
    program), whether a cron daemon runs, and which Ray the Python Ray is installed in has.
  - Each of these used to be a task of its own (a stat, a slurp, a command), each a round trip to the node.
  - Read-only. Paths are looked at with C(lstat) - a symlink is reported as one and never followed.
author:
  - rayops.disk contributors (@rayops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: It only reads, and reads the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    description: Whether running the module again right after changes nothing.
  platform:
    platforms: posix
options:
  paths:
    description: Paths to look at, each with C(lstat); a missing one is reported as not existing.
    type: list
    elements: path
    default: []
  packages:
    description: Debian packages whose installed state to report (C(dpkg-query)); ignored where there is no dpkg.
    type: list
    elements: str
    default: []
  ray_python:
    description:
      - The Python Ray is installed in. When given, it is run as O(ray_user), isolated (C(-I)), to read the installed
        Ray package's version from its metadata - Ray is neither imported nor started.
    type: path
  ray_user:
    description: The user O(ray_python) is run as (C(runuser)), never root unless given; the user that runs Ray.
    type: str
    default: root
  gather_facts:
    description:
      - Also set the facts C(os_family) (from C(/etc/os-release)), C(service_mgr) (C(systemd) when O(systemd_canary)
        is a directory, as C(sd_booted(3)) asks, else the name of PID 1) and C(python.executable) - what the role
        needs of C(setup), without its cost. Only when the play has not gathered them.
    type: bool
    default: false
  systemd_canary:
    description: The directory systemd makes when it runs the node.
    type: path
    default: /run/systemd/system
notes:
  - A cron daemon is one that runs as root from C(/usr/sbin/cron) or C(/usr/sbin/crond), not any process of that
    name - any local user can start a process called C(cron).
"""

EXAMPLES = r"""
- name: Look at the node once
  rayops.disk.ray_node_info:
    paths:
      - /run/systemd/system
      - /var/run/docker.sock
    packages: [cron, logrotate]
    ray_python: /opt/ray/bin/python
    ray_user: ray
  register: node

- name: Act only where systemd runs the node
  ansible.builtin.debug:
    msg: systemd runs {{ inventory_hostname }}
  when: node.paths['/run/systemd/system'].isdir | default(false)
"""

RETURN = r"""
paths:
  description: Each path given -> what is there. Only C(exists) for a missing path.
  returned: always
  type: dict
  sample:
    /run/systemd/system: {exists: true, isdir: true, islnk: false, issock: false, uid: 0, gid: 0, mode: "0755"}
    /opt/ray: {exists: true, isdir: false, islnk: true, issock: false, lnk_source: /srv/ray, uid: 0, gid: 0,
               mode: "0777"}
    /var/run/docker.sock: {exists: false}
packages:
  description: Each package of O(packages) -> whether it is installed; empty where there is no dpkg.
  returned: always
  type: dict
  sample: {cron: true, logrotate: false}
pid1:
  description: The name of the program running as PID 1 (C(/proc/1/comm)); empty when it cannot be read.
  returned: always
  type: str
  sample: systemd
cron_running:
  description: Whether a cron daemon runs as root.
  returned: always
  type: bool
  sample: true
ansible_facts:
  description: With O(gather_facts), the OS family, the service manager and the Python running the module.
  returned: when O(gather_facts=true)
  type: dict
  sample: {os_family: Debian, service_mgr: systemd, python: {executable: /usr/bin/python3}}
ray_version:
  description: Ray's version as O(ray_python) says it, or null and why not.
  returned: when O(ray_python) is given
  type: dict
  contains:
    version:
      description: The version of the installed C(ray) package; null when unknown.
      type: str
      sample: 2.53.0
    error:
      description: Why the version is unknown (the last line the Python printed, or why it could not run); null when
        known.
      type: str
      sample: "importlib.metadata.PackageNotFoundError: No package metadata was found for ray"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rayops.disk.plugins.module_utils._node_info import node_info

ARGUMENT_SPEC = dict(
    paths=dict(type="list", elements="path", default=[]),
    packages=dict(type="list", elements="str", default=[]),
    ray_python=dict(type="path"),
    ray_user=dict(type="str", default="root"),
    gather_facts=dict(type="bool", default=False),
    systemd_canary=dict(type="path", default="/run/systemd/system"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    module.exit_json(changed=False, **node_info(params["paths"], params["packages"], params["ray_python"],
                                                params["ray_user"],
                                                params["systemd_canary"] if params["gather_facts"] else None))


if __name__ == "__main__":
    main()
