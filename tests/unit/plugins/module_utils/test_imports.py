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


LAYERS = (
    ("base", {"_errors", "_units", "_fs", "_fdwalk", "_locks", "_optional", "_options"}),
    ("discover", {"_ray_layout", "_ray_version", "_ray_spill", "_containers", "_node_info"}),
    ("measure", {"_scan", "_activity", "_targets", "_usage", "_logscan"}),
    ("decide and act", {"_remove", "_cleanup", "_log_config", "_deleted", "_pressure", "_findings", "_archive"}),
    ("run and report", {"_node", "_text", "_metrics", "_watch", "_cli", "_diagnose", "_ship"}),
)
"""module_utils by layer, as the README's Development section shows them: a module imports from its own layer or
below, never from above."""


def own_module_utils_imports(path):
    """The collection's module_utils a file imports (their names, ``_usage``...)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    prefix = OWN + "plugins.module_utils"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix):
            if node.module == prefix:
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.rsplit(".", 1)[1])
    return found


def test_imports_point_down_the_layers():
    layer_of = {name: index for index, (_label, names) in enumerate(LAYERS) for name in names}
    files = sorted(glob.glob(os.path.join(PLUGINS, "module_utils", "_*.py")))
    assert {os.path.basename(path)[:-3] for path in files} == set(layer_of)  # each file has its layer
    upward = {}
    for path in files:
        name = os.path.basename(path)[:-3]
        above = sorted(imported for imported in own_module_utils_imports(path) if layer_of[imported] > layer_of[name])
        if above:
            upward["%s (%s)" % (name, LAYERS[layer_of[name]][0])] = above
    assert upward == {}


def test_no_import_cycle_within_a_layer():
    graph = {os.path.basename(path)[:-3]: own_module_utils_imports(path)
             for path in glob.glob(os.path.join(PLUGINS, "module_utils", "_*.py"))}
    done, stack = set(), []

    def visit(name):
        assert name not in stack, "import cycle: %s" % " -> ".join(stack + [name])
        if name in done:
            return
        stack.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        stack.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
