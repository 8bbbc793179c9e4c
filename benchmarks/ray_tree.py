# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Ray-like tree the benchmarks run on, built once and reused."""

from __future__ import annotations

import os
import random
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".build", "collections")


def make_tree(root: str, files: int) -> None:
    """A Ray temp root: sessions with logs, logs/old, runtime_resources and spilled objects."""
    rng = random.Random(7)
    made, session = 0, 0
    shape = (("logs", 60), ("logs/old", 200), ("runtime_resources/working_dir_files/_ray_pkg_%d", 300),
             ("ray_spilled_objects_node", 40))
    while made < files:
        base = os.path.join(root, "session_2026-11-%02d_10-00-00_000000_%d" % (session % 28 + 1, 1000 + session))
        for sub, count in shape:
            for block in range(count // 20):
                folder = os.path.join(base, sub.replace("%d", str(session)), "d%d" % block)
                os.makedirs(folder, exist_ok=True)
                for index in range(20):
                    with open(os.path.join(folder, "f%d" % index), "wb") as handle:
                        handle.write(b"x" * rng.randint(0, 3000))
                    made += 1
        session += 1
    with open(os.path.join(root, ".complete"), "w") as handle:
        handle.write(str(files))


def ensure_tree(tree: str, files: int) -> str:
    """Build the tree at ``tree`` unless a complete one of that size is there; return its path."""
    marker = os.path.join(tree, ".complete")
    if not os.path.exists(marker) or open(marker).read() != str(files):
        print("building a %d-file tree in %s ..." % (files, tree), flush=True)
        subprocess.run(["rm", "-rf", tree], check=True)
        os.makedirs(tree)
        make_tree(tree, files)
    return tree
