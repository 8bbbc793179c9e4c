# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by the unit tests: tree builders and independent measurements."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import module_runner


def write(path, size, content=b"r"):
    """Write a file of ``size`` bytes (real data, no holes), creating parents."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write((content * (size // len(content) + 1))[:size])
    return path


def du_bytes(path, *extra):
    """Allocated bytes as GNU du counts them, one filesystem, no symlinks followed."""
    out = subprocess.run(["du", "-sxB1", *extra, path], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def tree_digest(path):
    """A digest of names, types, sizes, mtimes and contents: proof that nothing changed."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(path)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            digest.update(full + b"\0%o %d %d\n" % (st.st_mode, st.st_size, st.st_mtime_ns))
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


@pytest.fixture
def run_module(monkeypatch):
    """``run_module(main, args, check_mode=False)`` runs a module's main() and returns its result."""
    return module_runner(monkeypatch)


@pytest.fixture
def bind_mount():
    """``bind_mount(src, dst)`` bind-mounts (root only) and unmounts at teardown."""
    mounted = []

    def mount(src, dst, fstype=None):
        os.makedirs(dst, exist_ok=True)
        if fstype:
            subprocess.run(["mount", "-t", fstype, "-o", "size=4m", fstype, dst], check=True)
        else:
            subprocess.run(["mount", "--bind", src, dst], check=True)
        mounted.append(dst)
        return dst

    yield mount
    for dst in reversed(mounted):
        subprocess.run(["umount", "-l", dst], check=False)
