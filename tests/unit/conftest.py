# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by the unit tests: tree builders and independent measurements."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import psutil
import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _ray_layout as layout_mod
from ansible_collections.rayops.disk.plugins.module_utils import _targets
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


def aged(path, hours=3.0):
    """Set the times of ``path`` and everything below it ``hours`` back (symlinks themselves, not targets)."""
    then = time.time() - hours * 3600
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (then, then), follow_symlinks=False)
    os.utime(path, (then, then))


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


def fd_targets(pid):
    """What a process holds open now: ``{fd: link target}``; an fd it closes while they are read is left out."""
    found = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            found[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            continue
    return found


def as_nobody(function):
    """``function()`` run in a forked child as uid and gid 65534 (nobody), no groups: what it returned (JSON).

    Modules the child imports must already be loaded: the venv's Python may live where nobody cannot read.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                returned = function()
            except BaseException:  # said in the test's failure
                returned = {"traceback": traceback.format_exc()}
            os.write(write_fd, json.dumps(returned).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        returned = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert not (isinstance(returned, dict) and "traceback" in returned), returned["traceback"]
    return returned


RAY_PROGRAMS = {"raylet": "ray/core/src/ray/raylet/raylet", "gcs_server": "ray/core/src/ray/gcs/gcs_server"}
SYSTEM_PYTHON = os.path.realpath(shutil.which("python3", path="/usr/bin:/bin") or sys.executable)
"""A Python every user may run (this run's own may sit in root's home)."""


def fake_ray_install(base):
    """A stand-in Ray package under ``base``: root-owned copies of Python at the paths of Ray's binaries.

    A process started from one of them passes the collection's trust checks
    the way a real Ray's does (its program is a root-owned file where Ray
    keeps it); tests that need real Ray use real Ray (tests/system).
    """
    programs = {}
    for kind, relative in RAY_PROGRAMS.items():
        path = os.path.join(base, "site-packages", relative)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if not os.path.exists(path):
            shutil.copy2(SYSTEM_PYTHON, path)
            os.chmod(path, 0o755)
        programs[kind] = path
    return programs


class SandboxNode:
    """A private mount namespace standing in for a node: only processes started in it count.

    Other Ray instances on the test machine are outside it, so they cannot
    leak into discovery; files are shared (the namespace starts as a copy).
    ``raylet`` and ``gcs_server`` run from ``ray_programs`` (``fake_ray_install``)
    unless ``impostor`` asks for what any user could start: Python named so.
    """

    def __init__(self, ray_programs=None):
        self.ray_programs = ray_programs or {}
        self.procs = []
        self.init = self._popen(["unshare", "--mount", "--propagation", "unchanged", sys.executable, "-c",
                                 "import time; time.sleep(600)"])
        deadline = time.time() + 10
        while layout_mod.mount_namespace(self.init.pid) in (None, layout_mod.mount_namespace("self")):
            assert time.time() < deadline, "unshare did not create a mount namespace"
            time.sleep(0.02)
        self.target = layout_mod.Target(name="sandbox", prefix="/", mnt_ns=layout_mod.mount_namespace(self.init.pid),
                                        init_pid=self.init.pid)

    def _popen(self, argv, stderr=None):
        proc = subprocess.Popen(argv, stderr=stderr)
        self.procs.append(proc)
        return proc

    def spawn(self, comm, *args, hold=None, title=None, burn=False, impostor=False, user=None, stderr=None):
        """Start a process named ``comm`` with ``args`` on its command line.

        ``hold`` keeps a file open; ``title`` rewrites the command line as Ray
        does for its workers (``ray::IDLE``...); ``burn`` spins a core;
        ``impostor`` runs Python under the name instead of Ray's program;
        ``user`` runs it as that user (``setpriv``); ``stderr`` is a file
        object its stderr goes to (Ray's worker-*.err log).
        """
        code = ("import ctypes,time; f = open(%r) if %r else None; "
                "ctypes.CDLL(None).prctl(15, %r, 0, 0, 0); " % (hold or "/", hold, comm.encode()))
        if title:
            code += "import ray._raylet; ray._raylet.setproctitle(%r); " % title  # what Ray itself calls
        code += "exec('while True: pass') if %r else time.sleep(600)" % burn
        if comm in self.ray_programs and not impostor:
            program = self.ray_programs[comm]
        elif impostor or user:  # what any user can run: the system's Python (the venv may be out of their reach)
            program = SYSTEM_PYTHON
        else:
            program = sys.executable
        become = ["setpriv", "--reuid=%s" % user, "--regid=%s" % user, "--clear-groups", "--"] if user else []
        argv = [program, "-c", code]
        if title and user:  # the title as argv[0], without Ray's module
            code = code.replace("import ray._raylet; ray._raylet.setproctitle(%r); " % title, "")
            argv = [program, "-c", "import os; os.execv(%r, [%r, '-c', %r] + __import__('sys').argv[1:])"
                    % (program, title, code)]
        proc = self._popen(["nsenter", "--mount=/proc/%d/ns/mnt" % self.init.pid] + become + argv + list(args),
                           stderr=stderr)
        deadline = time.time() + 20

        def ready():
            process = psutil.Process(proc.pid)
            return (process.cmdline() or [""])[0] == title if title else process.name() == comm

        while not ready():
            assert time.time() < deadline, "process did not take its name %s / title %s" % (comm, title)
            time.sleep(0.02)
        return proc

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


# Function-scoped, as every fixture with a teardown here: ansible-test runs each test in a forked child, where a
# session fixture would be set up and never torn down.
@pytest.fixture(autouse=True)
def node_without_docker(monkeypatch):
    """``containers: auto`` finds no Docker in a unit test: this machine's Docker, up or down, is no input.

    A test that wants containers says ``containers: true`` (and names its ``docker_host``), or points
    ``_targets.DOCKER_SOCKET`` at a socket of its own.
    """
    monkeypatch.setattr(_targets, "DOCKER_SOCKET", "/nonexistent/rayops-unit-tests/docker.sock")
    monkeypatch.delenv("DOCKER_HOST", raising=False)


@pytest.fixture
def ray_programs():
    """Stand-in Ray programs (``fake_ray_install``) where any user may run them, removed after the test."""
    base = tempfile.mkdtemp(prefix="rayops-fake-ray-", dir="/var/tmp")
    os.chmod(base, 0o755)
    yield fake_ray_install(base)
    shutil.rmtree(base)


def _passwd_command(*argv):
    """Run useradd/userdel/groupdel, again while another test holds the lock on /etc/passwd (exit 1 or 10)."""
    for _attempt in range(20):
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode not in (1, 10):
            break
        time.sleep(0.5)
    return proc


@contextlib.contextmanager
def system_users(names):
    """Real unprivileged users, each with its own group, for the duration: ``names`` maps a role to a name."""
    created = []
    try:
        for name in names.values():
            proc = _passwd_command("useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                                   "/nonexistent", "--shell", "/usr/sbin/nologin", name)
            assert proc.returncode == 0, proc.stderr
            created.append(name)
        yield names
    finally:
        for name in created:
            _passwd_command("userdel", name)
            _passwd_command("groupdel", name)  # gone with the user already, as a rule


@pytest.fixture
def local_users():
    """Two real unprivileged users for the test: ``ray`` (runs Ray) and ``mallory`` (any local user).

    Ask for it before ``node`` or ``sandbox``: fixtures are torn down in reverse, and a user whose
    processes still run cannot be deleted.
    """
    with system_users({"ray": "rayops-t-ray%d" % os.getpid(), "mallory": "rayops-t-mal%d" % os.getpid()}) as names:
        yield names


@pytest.fixture
def node(ray_programs):
    """A sandbox node (see ``SandboxNode``), stopped after the test."""
    sandbox = SandboxNode(ray_programs)
    yield sandbox
    sandbox.stop()


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
