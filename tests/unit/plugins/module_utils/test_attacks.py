# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The audit's attacks by a local user (issue 8), each performed for real against the CLI and the modules.

Real unprivileged users (``local_users``) start real processes in a sandbox
node; the cleanup runs as root, as on a node.  Containers attack in
tests/system/test_container_attacks.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import psutil
import pytest
from ansible.module_utils.common import warnings

from ansible_collections.rayops.disk.plugins.module_utils import _cli, _fdwalk
from ansible_collections.rayops.disk.plugins.module_utils._fs import (
    Tree,
    TreeChanged,
    UnsafePath,
    open_beneath,
    process_start_time,
)
from ansible_collections.rayops.disk.plugins.module_utils._options import UsageOptions
from ansible_collections.rayops.disk.plugins.module_utils._remove import Guards, Policy, Remover
from ansible_collections.rayops.disk.plugins.module_utils._usage import TargetReport
from ansible_collections.rayops.disk.plugins.modules import ray_tmp_usage, ray_worker_cleanup
from ansible_collections.rayops.disk.tests.unit.conftest import SYSTEM_PYTHON, aged, write
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.conftest import STALE, make_tree
from ansible_collections.rayops.disk.tests.unit.plugins.modules.utils import fail_module

ODD = "session_2024-13-45_99-99-99_1_1"
OLD_SESSION = "session_2020-01-01_00-00-00_000001_1"


def run_cli(capsys, *argv):
    """``(exit code, stdout, stderr)``; a traceback is a failure of its own."""
    code = _cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return code, out, err


def config(tmp_path, tmp, **extra):
    settings = dict(tmp_dir=str(tmp), min_tmp_size=0, max_age_hours=1, age_by=["mtime"], containers=False,
                    lock_file=str(tmp_path / "lock"), lock_timeout=0, sample_seconds=0.1, scan_workers=1,
                    metrics_dir=str(tmp_path / "metrics"), audit_log=str(tmp_path / "audit.jsonl"))
    settings.update(extra)
    (tmp_path / "metrics").mkdir(exist_ok=True)
    path = tmp_path / "ray-maintenance.json"
    path.write_text(json.dumps(settings))
    return str(path)


@pytest.fixture
def shared_base():
    """A root-owned 0755 directory that every user may traverse (pytest's own is root-only)."""
    base = tempfile.mkdtemp(prefix="rayops-attack-", dir="/var/tmp")
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base)


def owned_dir(path, user, mode=0o755):
    os.makedirs(path, exist_ok=True)
    shutil.chown(path, user, user)
    os.chmod(path, mode)
    return path


# --- finding 4: a name that looks like a session but is not one ---------------------------------------

def test_an_odd_session_name_is_other_and_stops_nothing(sandbox, tmp_path, capsys):
    tmp = make_tree(tmp_path / "tmp")
    write(str(tmp / "ray" / ODD / "data"), 8192)
    aged(str(tmp / "ray" / ODD))
    path = config(tmp_path, tmp, ray_temp_dir=str(tmp / "ray"))

    code, out, _err = run_cli(capsys, "--config", path, "--json", "monitor")
    report = json.loads(out)
    assert code == 0 and ODD not in {s["name"] for s in report["sessions"]}
    assert report["categories"]["other"]["bytes"] >= 8192
    assert os.path.exists(str(tmp_path / "metrics" / "rayops_ray_usage.prom"))

    code, out, _err = run_cli(capsys, "--config", path, "--json", "cleanup")
    assert code == 0 and json.loads(out)["targets"][0]["status"] == "cleaned"
    assert not os.path.exists(str(tmp / "ray" / STALE))  # the rest of the cleanup happened
    assert os.path.exists(str(tmp / "ray" / ODD / "data"))  # not a session: never removed as one


# --- finding 5: a process named raylet chooses what root deletes ---------------------------------------

@pytest.fixture
def root_only_model(tmp_path):
    """``/…/root-only/x`` (0700, root's) holding an old session with a model checkpoint no user can list."""
    root_only = tmp_path / "root-only"
    ckpt = write(str(root_only / "x" / OLD_SESSION / "data" / "model.ckpt"), 65536)
    aged(str(root_only))
    os.chmod(str(root_only), 0o700)
    return root_only, ckpt


def test_a_users_fake_raylet_cannot_point_root_at_a_root_only_dir(local_users, sandbox, tmp_path, capsys,
                                                                  root_only_model, run_module):
    root_only, ckpt = root_only_model
    tmp = make_tree(tmp_path / "tmp")
    fake = sandbox.spawn("raylet", "--temp_dir=%s" % (root_only / "x"),
                         "--session_dir=%s" % (root_only / "x" / "session_2099-01-01_00-00-00_000001_2"),
                         "--head", user=local_users["mallory"])
    path = config(tmp_path, tmp)

    code, out, _err = run_cli(capsys, "--config", path, "--json", "monitor")
    report = json.loads(out)
    assert str(root_only / "x") not in report["ray_temp_dirs"] and report["node_role"] == "none"
    assert report["untrusted_processes"] == [{
        "pid": fake.pid, "kind": "raylet",
        "reason": "runs as %s, not as root or a user of ray_users" % local_users["mallory"]}]

    code, out, _err = run_cli(capsys, "--config", path, "--json", "cleanup")
    assert code == 0
    assert os.path.exists(ckpt)
    assert not os.path.exists(str(tmp / "ray" / STALE))  # the real Ray root was still cleaned
    assert json.loads(out)["targets"][0]["untrusted_processes"] == report["untrusted_processes"]

    told = ("host: 1 process(es) say they are Ray's but are not trusted, so the temp roots they name are not measured "
            "or cleaned: pid %d raylet: runs as %s, not as root or a user of ray_users. If Ray runs as that user, "
            "add it to ray_users" % (fake.pid, local_users["mallory"]))
    code, out, _err = run_cli(capsys, "--config", path, "monitor")
    assert code == 0 and told in out.splitlines()  # the operator is told, not left to find out
    code, out, _err = run_cli(capsys, "--config", path, "cleanup", "--dry-run")
    assert "  " + told in out.splitlines()
    run_module(ray_tmp_usage.main, {"tmp_dir": str(tmp), "scan_workers": 1})
    assert told in warnings.get_warning_messages()


def test_a_raylet_naming_slash_is_never_trusted(local_users, sandbox, tmp_path):
    tmp = make_tree(tmp_path / "tmp")
    sandbox.spawn("raylet", "--temp_dir=/", "--head", user=local_users["mallory"])
    sandbox.spawn("raylet", "--temp_dir=/", "--head")  # root's, from Ray's program: still never /
    report = report_of(sandbox, tmp)
    assert "/" not in report["ray_temp_dirs"] and report["node_role"] == "none"
    assert sorted(p["reason"] for p in report["untrusted_processes"]) == [
        "names / as Ray's temp root", "runs as %s, not as root or a user of ray_users" % local_users["mallory"]]


def report_of(sandbox, tmp, **options):
    """The usage report of the sandbox node, as the module makes it."""
    opts = UsageOptions(tmp_dir=str(tmp), scan_workers=1, **options)
    opts.validate()
    return TargetReport(sandbox.target, opts, psutil).measure()


def test_a_process_of_root_named_raylet_that_is_not_rays_program_is_not_trusted(sandbox, tmp_path,
                                                                                root_only_model):
    root_only, ckpt = root_only_model
    tmp = make_tree(tmp_path / "tmp")
    sandbox.spawn("raylet", "--temp_dir=%s" % (root_only / "x"), impostor=True)
    report = report_of(sandbox, tmp)
    assert str(root_only / "x") not in report["ray_temp_dirs"]
    reason = report["untrusted_processes"][0]["reason"]
    assert reason.startswith("its executable %s is not Ray's raylet" % SYSTEM_PYTHON)
    assert os.path.exists(ckpt)


def test_a_ray_users_raylet_is_trusted_only_with_a_safe_temp_root(local_users, sandbox, tmp_path, shared_base):
    ray, mallory = local_users["ray"], local_users["mallory"]
    tmp = make_tree(tmp_path / "tmp")
    own = owned_dir(owned_dir(os.path.join(shared_base, "rayhome"), ray) + "/ray", ray, 0o777)
    sticky = os.path.join(shared_base, "sticky")
    os.makedirs(sticky)
    os.chmod(sticky, 0o1777)
    in_sticky = owned_dir(owned_dir(os.path.join(sticky, "mine"), ray) + "/ray", ray)
    theirs = owned_dir(owned_dir(os.path.join(sticky, "theirs"), mallory) + "/ray", ray)
    planted = owned_dir(owned_dir(os.path.join(shared_base, "mallorys"), mallory) + "/ray", ray)
    for root in (own, in_sticky, theirs, planted):
        sandbox.spawn("raylet", "--temp_dir=%s" % root, user=ray)

    report = report_of(sandbox, tmp, ray_users=(ray,))
    assert sorted(report["ray_temp_dirs"]) == sorted([own, in_sticky])
    reasons = sorted(p["reason"] for p in report["untrusted_processes"])
    assert len(reasons) == 2 and all(r.startswith("names ") for r in reasons)
    assert any(r.startswith("names %s, which is not safe: a directory on the way" % planted) for r in reasons)
    assert any(r.startswith("names %s, which is not safe: a directory on the way" % theirs) for r in reasons)

    without = report_of(sandbox, tmp)  # ray_users not given: that user's Ray is nobody's
    assert without["ray_temp_dirs"] == [str(tmp / "ray")] and len(without["untrusted_processes"]) == 4


def test_an_unknown_ray_user_is_bad_input_naming_it(run_module, tmp_path):
    result = fail_module(ray_tmp_usage.main, {"tmp_dir": str(tmp_path), "ray_users": ["no-such-user-rayops"]})
    assert result["msg"] == ("ray_users ['no-such-user-rayops']: 'no-such-user-rayops' is not a user on this node; "
                             "give the user that runs Ray (a name from /etc/passwd, or a numeric uid such as 1000 "
                             "for Ray in containers)")


# --- finding 6: any user's ray::<title> kept the host busy forever ------------------------------------

def test_another_users_ray_title_does_not_make_the_host_busy(local_users, sandbox, tmp_path, run_module):
    ray, mallory = local_users["ray"], local_users["mallory"]
    tmp = make_tree(tmp_path / "tmp")
    sandbox.spawn("python-worker", title="ray::train_forever", user=mallory)
    args = {"tmp_dir": str(tmp), "activity": True, "sample_seconds": 0.3, "cpu_idle_percent": 50,
            "scan_workers": 1}
    assert run_module(ray_tmp_usage.main, args)["activity"]["busy"] is False

    sandbox.spawn("python-worker", title="ray::train_step", user=ray)
    busy = run_module(ray_tmp_usage.main, dict(args, ray_users=[ray]))["activity"]
    assert busy["busy"] is True and busy["ray_tasks"] == ["ray::train_step"]
    assert busy["reasons"][0] == "Ray runs user code: ray::train_step (as %s)" % ray


# --- finding 7: time grew with the square of the depth -------------------------------------------------

def test_removing_a_deep_chain_spells_out_paths_a_bounded_number_of_times(tmp_path, monkeypatch):
    depth = 4000
    top = tmp_path / "tmp" / "tmp_deep"
    os.makedirs(str(top))
    fd = os.open(str(top), os.O_RDONLY)
    for _level in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    spelt = []
    names = _fdwalk.DirStack.names

    def counting(self, *args, **kwargs):
        found = names(self, *args, **kwargs)
        spelt.append(len(found))
        return found

    monkeypatch.setattr(_fdwalk.DirStack, "names", counting)
    audit = []
    remover = Remover(str(tmp_path / "tmp"), Policy(time.time() + 60, ("mtime",)), Guards(), dry_run=False)
    remover.on_remove = lambda *line: audit.append(line)
    assert remover.remove("tmp_deep") is True
    assert remover.outcome.removed == depth + 1
    # Quadratic work spelt out ~depth**2 / 2 = 8,000,000 names; linear work lists at most 100 paths.
    assert sum(spelt) <= 101 * (depth + 1)
    assert len(audit) == 1 and audit[0][3] == depth + 1  # one audit line for the entry, with its count
    assert max(len(path) for path in remover.outcome.removed_paths) < 400  # a listed path stays readable


# --- finding 10 (the part without Docker): a tree is bound to the process it was made for ----------------

def test_a_tree_whose_process_was_replaced_is_not_entered(tmp_path):
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", "import time; time.sleep(60)"])
    try:
        real = Tree("/proc/%d/root" % proc.pid, proc.pid, process_start_time(proc.pid))
        os.close(real.open_dir("/tmp"))
        reused = Tree("/proc/%d/root" % proc.pid, proc.pid, process_start_time(proc.pid) - 1)  # another process's
        with pytest.raises(TreeChanged, match="process %d is gone or was replaced" % proc.pid):
            reused.open_dir("/tmp")
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(FileNotFoundError):  # gone: its /proc/<pid>/root with it
        real.open_dir("/tmp")


# --- path resolution inside a root (finding 1's mechanism; the container attack is in tests/system) ----

def test_absolute_symlinks_and_dotdot_resolve_inside_the_root_never_outside(tmp_path):
    root = tmp_path / "root"
    host_dir = tmp_path / "hostdir"
    write(str(host_dir / "ray" / "secret"), 10)
    write(str(root / str(host_dir).lstrip("/") / "ray" / "decoy"), 10)  # the same path, inside the root
    os.symlink(str(host_dir), str(root / "x"))  # absolute: the kernel would leave the root through it
    os.symlink("../../../../../../../..", str(root / "up"))  # climbs no higher than the root
    for path in ("/x/ray", "/up/x/ray", "/up/up/%s/ray" % str(host_dir).lstrip("/"), "/x/../hostdir/ray"):
        fd = open_beneath(str(root), path)
        try:
            assert os.listdir(fd) == ["decoy"], path
        finally:
            os.close(fd)
    with pytest.raises(UnsafePath, match="/x is a symlink; give the real directory instead"):
        open_beneath(str(root), "/x")
    os.symlink("loop", str(root / "loop"))
    with pytest.raises(UnsafePath, match="too many symlinks on the way to /loop/ray"):
        open_beneath(str(root), "/loop/ray")
    with pytest.raises(FileNotFoundError):
        open_beneath(str(root), "/nothing/ray")


# --- finding 8: names that drive the terminal --------------------------------------------------------

HOSTILE = {"tmp\x1b]0;owned\x07": "dir", "ray_tmp_\r\x1b[2Kall clear": "file", "pip-\u202egnp.exe": "file"}
RAW = ("\x1b", "\x07", "\r", "\u202e")


def test_names_with_terminal_escapes_reach_no_output_or_log_raw(sandbox, tmp_path, capsys, run_module):
    tmp = make_tree(tmp_path / "tmp")
    for name, kind in HOSTILE.items():
        write(str(tmp / name / "x") if kind == "dir" else str(tmp / name), 4096)
        aged(str(tmp / name))
    log = tmp_path / "ray-maintenance.log"
    path = config(tmp_path, tmp, ray_temp_dir=str(tmp / "ray"), log_file=str(log))
    shown = ""
    for argv in (["monitor"], ["cleanup", "--dry-run"]):
        code, out, err = run_cli(capsys, "--config", path, *argv)
        assert code == 0
        shown += out + err
    args = {"tmp_dir": str(tmp), "min_tmp_size": "0", "max_age_hours": 1, "age_by": ["mtime"],
            "sample_seconds": 0.1, "lock_file": str(tmp_path / "lock"), "_ansible_diff": True}
    result = run_module(ray_worker_cleanup.main, args)
    assert result["changed"] and not any(os.path.lexists(str(tmp / name)) for name in HOSTILE)
    shown += result["diff"]["before"] + log.read_text()
    assert not [char for char in RAW if char in shown], shown
    assert "tmp\\x1b]0;owned\\x07" in shown and "ray_tmp_\\r\\x1b[2Kall clear" in shown
    assert "pip-\\u202egnp.exe" in result["diff"]["before"]
    # the JSON result keeps the real names (JSON escapes them itself)
    assert str(tmp / "tmp\x1b]0;owned\x07") in result["targets"][0]["removed_paths"]
