# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's code imports its own modules at the top of each file only: no cycle hidden in a function."""

from __future__ import annotations

import ast
import glob
import os

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
PLUGINS = os.path.join(REPO, "plugins")
OWN = "ansible_collections.rayops.disk."


def nested_own_imports(path):
    """``(line, module)`` of each import of the collection's own code that is not at the file's top level."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in top and (node.module or "").startswith(OWN):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import) and id(node) not in top:
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith(OWN)]
    return found


def test_no_function_local_import_of_the_collections_own_modules():
    files = sorted(glob.glob(os.path.join(PLUGINS, "**", "*.py"), recursive=True))
    assert len(files) >= 15  # the modules, module_utils and doc fragments were found
    offenders = {os.path.relpath(path, PLUGINS): nested_own_imports(path) for path in files}
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_check_sees_a_nested_import(tmp_path):
    sample = tmp_path / "_sample.py"
    sample.write_text("import os\n\n\ndef late():\n    from ansible_collections.rayops.disk.plugins.module_utils"
                      "._usage import UsageError\n    return UsageError\n")
    assert nested_own_imports(str(sample)) == [(5, "ansible_collections.rayops.disk.plugins.module_utils._usage")]
