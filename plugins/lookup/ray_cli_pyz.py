# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: ray_cli_pyz
author: rayops.disk contributors (@rayops)
version_added: 0.1.0
short_description: Build the node CLI ray-maintenance.pyz from a collection's module_utils, on the controller
description:
  - Builds C(ray-maintenance.pyz), the zipapp the role C(rayops.disk.ray_cleanup) installs on each node, from the
    C(plugins/module_utils) of the collection given, with the role's own builder
    (C(roles/ray_cleanup/files/build_ray_maintenance_pyz.py)), in this process - no command task, no Python started.
  - The build goes to Ansible's own temporary directory of this run (C(DEFAULT_LOCAL_TMP)), which Ansible removes
    when the run ends. Every host and every later lookup of the run reuses it while the collection's files are
    unchanged (same names, sizes and times).
  - The archive is byte-for-byte reproducible, so a deploy that changes nothing copies nothing.
options:
  _terms:
    description: The collection's root directory (holding C(MANIFEST.json) or C(galaxy.yml)), one.
    required: true
    type: path
notes:
  - A build error (not a collection, an unreadable file) fails the task with the builder's message.
"""

EXAMPLES = r"""
- name: Build the CLI once for the play
  ansible.builtin.set_fact:
    cli_build: "{{ lookup('rayops.disk.ray_cli_pyz', role_path ~ '/../..') }}"
  run_once: true

- name: Copy it
  ansible.builtin.copy:
    src: "{{ cli_build.pyz }}"
    dest: /usr/local/lib/rayops-disk/ray-maintenance.pyz
    mode: "0644"
"""

RETURN = r"""
_raw:
  description: What was built, one dict.
  type: list
  elements: dict
  contains:
    dir:
      description: The directory holding it (inside Ansible's temporary directory of this run).
      type: str
    pyz:
      description: The zipapp's path.
      type: str
    version:
      description: The collection's version.
      type: str
      sample: 0.1.0
    sha256:
      description: The zipapp's SHA-256.
      type: str
    label:
      description: The build's identity, C(<version>+<12 hex digits of the SHA-256>).
      type: str
      sample: 0.1.0+4e553d8d6ca1
"""

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

BUILDER = os.path.join("roles", "ray_cleanup", "files", "build_ray_maintenance_pyz.py")
SOURCES = ("MANIFEST.json", "galaxy.yml", BUILDER)
"""Files besides plugins/module_utils/_*.py whose change makes another build."""


def _fingerprint(collection: str) -> str:
    """A key that changes when any file the build reads changes: names, sizes and modification times."""
    utils = os.path.join(collection, "plugins", "module_utils")
    names = sorted(name for name in os.listdir(utils) if name.startswith("_") and name.endswith(".py"))
    digest = hashlib.sha256()
    for path in [os.path.join(utils, name) for name in names] + [os.path.join(collection, name) for name in SOURCES]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        digest.update(("%s\0%d\0%d\0" % (path, st.st_size, st.st_mtime_ns)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def _builder(collection: str):
    spec = importlib.util.spec_from_file_location("_rayops_disk_build_ray_maintenance_pyz",
                                                  os.path.join(collection, BUILDER))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_once(collection: str, where: str) -> dict:
    """The build of ``collection`` in ``where`` (made now, or by an earlier lookup of this run)."""
    final = os.path.join(where, "rayops-disk-cli-%s" % _fingerprint(collection))
    record = os.path.join(final, "build.json")
    if os.path.exists(record):
        with open(record, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    builder = _builder(collection)
    temp = tempfile.mkdtemp(prefix=".rayops-disk-cli.", dir=where)
    try:
        result = builder.build(collection, temp)
        result = dict(result, dir=final, pyz=os.path.join(final, builder.PYZ_NAME))
        with open(os.path.join(temp, "build.json"), "wb") as handle:
            handle.write(json.dumps(result, sort_keys=True).encode("utf-8"))
        try:
            os.rename(temp, final)
        except OSError:  # another host's lookup made it first: the same bytes
            shutil.rmtree(temp, ignore_errors=True)
    except (builder.BuildError, OSError, KeyError, ValueError) as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise AnsibleError("cannot build ray-maintenance.pyz from %s: %s" % (collection, exc)) from exc
    return result


class LookupModule(LookupBase):
    """rayops.disk.ray_cli_pyz"""

    def run(self, terms, variables=None, **kwargs):
        if len(terms) != 1:
            raise AnsibleError("ray_cli_pyz takes one term, the collection's root directory; got %d" % len(terms))
        collection = os.path.realpath(str(terms[0]))
        return [build_once(collection, C.DEFAULT_LOCAL_TMP)]
