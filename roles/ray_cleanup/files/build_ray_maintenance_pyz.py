# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build ``ray-maintenance.pyz``, the node CLI as one file, from this collection's ``plugins/module_utils``.

    python3 build_ray_maintenance_pyz.py COLLECTION_DIR [OUTPUT_DIR]

The role ``ray_cleanup`` runs it on the controller (``ansible_playbook_python``) at deploy time and copies the
result to each node. The zipapp holds the top-level ``_*.py`` of ``COLLECTION_DIR/plugins/module_utils`` under
their import names (``ansible_collections/rayops/disk/plugins/module_utils/``, each package with an empty
``__init__.py``) and a ``__main__.py`` that runs ``_cli.main()`` and exits with its code.

The archive is byte-for-byte reproducible, so a deploy that changes nothing copies nothing: entries in sorted
order, every timestamp 1980-01-01, mode 0644, no compression (a deflated stream depends on the zlib build of the
controller; stored entries do not), no extra fields. Its identity is ``<collection version>+<sha256 of the archive,
12 hex digits>`` (``label``), which the role writes into the ``ray-maintenance`` command's comment for ``--diff``.

Without ``OUTPUT_DIR`` it builds into a new private temp dir (``rayops-disk-cli.*``), which the caller removes.
Prints one JSON object: ``{"dir": ..., "pyz": ..., "version": ..., "sha256": ..., "label": ...}``.
Standard library only (PyYAML for galaxy.yml when present), so any controller's Python runs it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile

try:
    import yaml  # galaxy.yml of a source tree: ansible-core requires PyYAML, so the controller has it
except ImportError:  # another Python (a test): galaxy.yml's top-level scalars are read line by line
    yaml = None

PACKAGE = ("ansible_collections", "rayops", "disk", "plugins", "module_utils")
PYZ_NAME = "ray-maintenance.pyz"
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
MAIN = '''\
# ray-maintenance, the node CLI of {collection} {version} (built by the role ray_cleanup).
# Runs this collection's module_utils, the code its modules run: see docs/node-cli.md.
import sys

from ansible_collections.rayops.disk.plugins.module_utils._cli import main

if __name__ == "__main__":
    sys.exit(main())
'''


class BuildError(Exception):
    """What is wrong with the collection given, in words for the operator."""


def collection_info(collection: str) -> tuple:
    """``(namespace.name, version)`` of the collection: ``MANIFEST.json`` of an installed collection, else the
    ``galaxy.yml`` of a source tree."""
    manifest = os.path.join(collection, "MANIFEST.json")
    if os.path.exists(manifest):
        with open(manifest, "rb") as handle:
            info = json.loads(handle.read().decode("utf-8"))["collection_info"]
    else:
        galaxy = os.path.join(collection, "galaxy.yml")
        if not os.path.exists(galaxy):
            raise BuildError("%s holds neither MANIFEST.json nor galaxy.yml: give the collection's root directory"
                             % collection)
        with open(galaxy, "rb") as handle:
            text = handle.read().decode("utf-8")
        if yaml is not None:
            info = yaml.safe_load(text)
        else:
            info = {key: value.strip("'\"") for key, value in re.findall(r"(?m)^([a-z_]+):[ \t]*(\S+)[ \t]*$", text)}
    version = str(info.get("version") or "")
    if not re.match(r"^[0-9A-Za-z][0-9A-Za-z.+~-]*\Z", version):
        raise BuildError("the collection's version %r is not a version" % version)
    return "%s.%s" % (info["namespace"], info["name"]), version


def entries(collection: str, label: str) -> list:
    """``[(name in the zip, bytes)]``, sorted by name."""
    source = os.path.join(collection, "plugins", "module_utils")
    modules = sorted(name for name in os.listdir(source) if re.match(r"^_[A-Za-z0-9_]*\.py\Z", name)
                     and os.path.isfile(os.path.join(source, name)))
    if "_cli.py" not in modules:
        raise BuildError("%s has no _cli.py: give the rayops.disk collection's root directory" % source)
    found = {"/".join(PACKAGE[:depth] + ("__init__.py",)): b"" for depth in range(1, len(PACKAGE) + 1)}
    for name in modules:
        with open(os.path.join(source, name), "rb") as handle:
            found["/".join(PACKAGE + (name,))] = handle.read()
    collection_name, version = label
    found["__main__.py"] = MAIN.format(collection=collection_name, version=version).encode("utf-8")
    return sorted(found.items())


def archive(files: list) -> bytes:
    """The zip of ``files``, the same bytes for the same files on any controller."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as pyz:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # Unix, so that the mode below is read as such
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            pyz.writestr(info, data)
    return buffer.getvalue()


def write(path: str, data: bytes) -> None:
    """Write ``path`` whole (a temp file renamed into place), mode 0644."""
    temp = "%s.tmp%d" % (path, os.getpid())
    with open(temp, "wb") as handle:
        handle.write(data)
    os.chmod(temp, 0o644)
    os.replace(temp, path)


def build(collection: str, output: str) -> dict:
    """Build the zipapp in ``output``; what was built."""
    collection_name, version = collection_info(collection)
    data = archive(entries(collection, (collection_name, version)))
    digest = hashlib.sha256(data).hexdigest()
    label = "%s+%s" % (version, digest[:12])
    pyz = os.path.join(output, PYZ_NAME)
    write(pyz, data)
    return {"dir": output, "pyz": pyz, "version": version, "sha256": digest, "label": label}


def main(argv: list) -> int:
    if len(argv) not in (1, 2):
        sys.stderr.write("usage: build_ray_maintenance_pyz.py COLLECTION_DIR [OUTPUT_DIR]\n")
        return 2
    output = os.path.abspath(argv[1]) if len(argv) == 2 else tempfile.mkdtemp(prefix="rayops-disk-cli.")
    try:
        result = build(os.path.abspath(argv[0]), output)
    except (BuildError, OSError, KeyError, ValueError) as exc:
        if len(argv) == 1:
            shutil.rmtree(output, ignore_errors=True)
        sys.stderr.write("build_ray_maintenance_pyz.py: %s\n" % exc)
        return 1
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
