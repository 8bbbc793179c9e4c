# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Archive before delete, through the installed CLI (the zipapp behind the role's wrapper): cleanup archives the
logs of a stale session and the logs/old files of a live one, verified, before it removes them; a destination that
fails keeps them and fails the run until a later run archives them; a crash after the upload never uploads again;
check mode writes nothing; a planted link to /etc/shadow is never shipped; under pressure a spent time budget keeps
the session and the reclaim goes on. The stores themselves (a directory, real S3 on SeaweedFS, HDFS's client) are
tested in test_archive_stores.py; a directory destination stands for all of them here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

from ansible_collections.rayops.disk.plugins.module_utils._archive import Archiver, DirStore
from ansible_collections.rayops.disk.plugins.module_utils._fs import Tree
from ansible_collections.rayops.disk.tests.system.test_node_cli import install, metrics_of, run, write_config

STALE = "session_2020-01-01_00-00-00_000001_1"
OLD = time.time() - 3 * 86400


@pytest.fixture
def installed(tmp_path):
    return install(tmp_path / "node", sys.prefix)


def aged(path):
    os.utime(path, (OLD, OLD), follow_symlinks=False)


def stale_session(tmp):
    """A stale session under ``tmp``/ray with two logs, a logs/old file, other data, a link to /etc/shadow and a
    FIFO planted in its logs; every time three days old. Its files' contents, by path below the session."""
    session = os.path.join(str(tmp), "ray", STALE)
    contents = {"logs/raylet.out": os.urandom(150000), "logs/worker-1.err": b"Traceback...\n" * 1000,
                "logs/old/raylet.1.out": b"rotated\n" * 100, "runtime_resources/pkg.zip": os.urandom(20000)}
    for rel, data in contents.items():
        os.makedirs(os.path.dirname(os.path.join(session, rel)), exist_ok=True)
        with open(os.path.join(session, rel), "wb") as handle:
            handle.write(data)
    os.symlink("/etc/shadow", os.path.join(session, "logs", "shadow.log"))
    os.mkfifo(os.path.join(session, "logs", "pipe.log"))
    for top, dirs, files in os.walk(session, topdown=False):
        for name in files + dirs:
            aged(os.path.join(top, name))
    aged(session)
    return session, contents


def config(tmp_path, dest, **extra):
    settings = dict(tmp_dir=str(tmp_path / "tmp"), min_tmp_size="0", containers=False, max_age_hours=1,
                    age_by=["mtime", "atime"],  # a file made by the test has a ctime of now
                    lock_file=str(tmp_path / "lock"), archive_dest=dest, archive_cluster="c1", archive_node="n1")
    settings.update(extra)
    return write_config(tmp_path, **settings)


def cleanup(installed, config_path, *args):
    proc = run(installed, "--config", config_path, "--no-metrics", "cleanup", "--json", *args)
    return proc.returncode, json.loads(proc.stdout)["targets"][0] if proc.stdout.startswith("{") else proc


def archives_in(dest):
    return sorted(os.path.relpath(os.path.join(top, name), dest) for top, _dirs, names in os.walk(dest)
                  for name in names)


def test_a_stale_session_is_archived_verified_then_removed(installed, tmp_path):
    dest = tmp_path / "archive"
    dest.mkdir()
    session, contents = stale_session(tmp_path / "tmp")
    code, target = cleanup(installed, config(tmp_path, str(dest)))
    assert code == 0 and target["status"] == "cleaned", target
    assert not os.path.exists(session)  # everything went, the link and the FIFO too (they hold no data)
    [found] = target["archives"]
    assert found["status"] == "archived" and found["files"] == 3, found
    assert {item["path"] for item in found["not_archived"]} == {"logs/shadow.log", "logs/pipe.log"}
    names = archives_in(str(dest))
    assert len(names) == 2 and all(n.startswith("c1/n1/%s/" % STALE) for n in names), names
    archive = os.path.join(str(dest), [n for n in names if n.endswith(".tar.gz")][0])
    assert found["archive"] == archive
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["logs/old/raylet.1.out", "logs/raylet.out", "logs/worker-1.err"]
        for name in tar.getnames():
            assert tar.extractfile(name).read() == contents[name]
    with open("/etc/shadow", "rb") as handle:
        shadow = handle.read()
    with open(archive, "rb") as handle:
        packed = handle.read()
    with tarfile.open(archive) as tar:
        unpacked = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    assert shadow not in unpacked and shadow not in packed
    manifest = json.loads(open(archive[:-len(".tar.gz")] + ".manifest.json").read())
    assert {f["path"] for f in manifest["files"]} == {"logs/old/raylet.1.out", "logs/raylet.out", "logs/worker-1.err"}


def test_a_failing_destination_keeps_the_session_until_a_later_run_archives_it(installed, tmp_path, monkeypatch):
    session, _contents = stale_session(tmp_path / "tmp")
    # S3 on a loopback port nothing listens on: the upload fails.
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    code, target = cleanup(installed, config(tmp_path, "s3://logs/ray", archive_endpoint_url="http://127.0.0.1:9"))
    assert code == 1 and target["status"] == "error", target
    assert "could not be archived to s3://logs/ray" in target["reason"], target["reason"]
    assert target["archives"][0]["status"] == "failed" and "kept until its logs are archived" in \
        target["archives"][0]["error"]
    assert os.path.isfile(os.path.join(session, "logs", "raylet.out"))  # nothing lost
    assert target["removed"] == 0 or all(STALE not in path for path in target["removed_paths"])

    dest = tmp_path / "archive"
    dest.mkdir()
    code, target = cleanup(installed, config(tmp_path, str(dest)))
    assert code == 0 and target["archives"][0]["status"] == "archived" and not os.path.exists(session), target


def blocked(dest):
    """A destination whose session dir cannot be made: a file stands where it goes (every upload fails)."""
    os.makedirs(os.path.join(str(dest), "c1", "n1"))
    with open(os.path.join(str(dest), "c1", "n1", STALE), "w") as handle:
        handle.write("in the way\n")


def test_archive_not_required_removes_and_says_so(installed, tmp_path):
    dest = tmp_path / "archive"
    blocked(dest)
    session, _contents = stale_session(tmp_path / "tmp")
    code, target = cleanup(installed, config(tmp_path, str(dest)))
    assert code == 1 and os.path.isfile(os.path.join(session, "logs", "raylet.out"))  # required: kept
    code, target = cleanup(installed, config(tmp_path, str(dest), archive_required=False))
    assert code == 0 and not os.path.exists(session), target
    assert target["archives"][0]["status"] == "removed_unarchived" and target["archives"][0]["error"], target
    proc = run(installed, "--config", config(tmp_path, str(dest), archive_required=False), "--no-metrics",
               "cleanup")
    assert proc.returncode == 0  # nothing left to say: the session is gone


def test_the_cleanup_metrics_count_archives_and_failures(installed, tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    dest = tmp_path / "archive"
    blocked(dest)
    stale_session(tmp_path / "tmp")
    proc = run(installed, "--config", config(tmp_path, str(dest), metrics_dir=str(metrics)), "cleanup", "--quiet")
    assert proc.returncode == 1
    found = metrics_of(str(metrics / "rayops_ray_cleanup.prom"))
    host = {("target", "host"), ("kind", "host")}
    assert found[("rayops_ray_cleanup_archives", frozenset(host | {("status", "failed")}))] == 1
    assert found[("rayops_ray_cleanup_success", frozenset())] == 0
    os.unlink(os.path.join(str(dest), "c1", "n1", STALE))
    proc = run(installed, "--config", config(tmp_path, str(dest), metrics_dir=str(metrics)), "cleanup", "--quiet")
    assert proc.returncode == 0, proc.stderr
    found = metrics_of(str(metrics / "rayops_ray_cleanup.prom"))
    assert found[("rayops_ray_cleanup_archives", frozenset(host | {("status", "archived")}))] == 1
    assert found[("rayops_ray_cleanup_archived_bytes", frozenset(host))] > 0
    assert found[("rayops_ray_cleanup_success", frozenset())] == 1


def test_a_missing_destination_is_a_usage_error_and_touches_nothing(installed, tmp_path):
    session, _contents = stale_session(tmp_path / "tmp")
    proc = run(installed, "--config", config(tmp_path, str(tmp_path / "nowhere")), "--no-metrics", "cleanup")
    assert proc.returncode == 3 and "archive_dest" in proc.stderr and "not a directory" in proc.stderr, proc.stderr
    assert os.path.isfile(os.path.join(session, "logs", "raylet.out"))


def test_a_crash_after_the_upload_never_uploads_again(installed, tmp_path):
    dest = tmp_path / "archive"
    dest.mkdir()
    session, _contents = stale_session(tmp_path / "tmp")
    # The upload and its manifest are done, then the run dies before it removes anything.
    done = Archiver(DirStore(str(dest)), "c1", "n1").ensure(Tree("/"), session, ("logs",))
    assert done.status == "archived"
    before = archives_in(str(dest))
    code, target = cleanup(installed, config(tmp_path, str(dest)))
    assert code == 0 and target["archives"][0]["status"] == "already_archived", target
    assert archives_in(str(dest)) == before and not os.path.exists(session)


def test_a_log_written_after_the_archive_is_kept(installed, tmp_path):
    dest = tmp_path / "archive"
    dest.mkdir()
    session, _contents = stale_session(tmp_path / "tmp")
    Archiver(DirStore(str(dest)), "c1", "n1").ensure(Tree("/"), session, ("logs",))
    log = os.path.join(session, "logs", "raylet.out")
    with open(log, "ab") as handle:  # changed since its archive: a new archive takes it, or it stays
        handle.write(b"one more line\n")
    aged(log)
    code, target = cleanup(installed, config(tmp_path, str(dest)))
    assert code == 0 and target["archives"][0]["status"] == "archived" and target["archives"][0]["files"] == 1
    assert not os.path.exists(session)


def test_check_mode_writes_nothing_and_asks_no_store(installed, tmp_path):
    session, _contents = stale_session(tmp_path / "tmp")
    dest = tmp_path / "archive"
    dest.mkdir()
    code, target = cleanup(installed, config(tmp_path, str(dest)), "--dry-run")
    assert code == 0 and target["archives"][0]["status"] == "would_archive", target
    assert archives_in(str(dest)) == [] and os.path.isfile(os.path.join(session, "logs", "raylet.out"))
    proc = run(installed, "--config", config(tmp_path, str(dest)), "--no-metrics", "cleanup", "--dry-run")
    assert "would archive the logs of %s first" % STALE in proc.stdout


def test_old_logs_of_a_live_session_are_archived_before_they_go(installed, tmp_path):
    """A session a process holds a file of is live: only its logs/old goes, archived first."""
    dest = tmp_path / "archive"
    dest.mkdir()
    session, contents = stale_session(tmp_path / "tmp")
    with open(os.path.join(session, "logs", "raylet.out"), "rb") as held:
        holder = subprocess.Popen(["sleep", "120"], stdin=held)
    try:
        code, target = cleanup(installed, config(tmp_path, str(dest)))
    finally:
        holder.kill()
        holder.wait()
    assert code == 0, target
    [found] = target["archives"]
    assert found["status"] == "archived" and found["files"] == 1, found
    assert not os.path.exists(os.path.join(session, "logs", "old", "raylet.1.out"))
    assert os.path.isfile(os.path.join(session, "logs", "raylet.out"))  # the live session stays
    with tarfile.open(found["archive"]) as tar:
        assert tar.getnames() == ["logs/old/raylet.1.out"]
        assert tar.extractfile("logs/old/raylet.1.out").read() == contents["logs/old/raylet.1.out"]


def test_under_pressure_a_spent_budget_keeps_the_session(installed, tmp_path):
    dest = tmp_path / "archive"
    dest.mkdir()
    session, _contents = stale_session(tmp_path / "tmp")
    path = config(tmp_path, str(dest), archive_budget_seconds=1e-9, pressure_high_percent=0.001,
                  pressure_inodes_high_percent=0.001, pressure_low_percent=0.0001)
    proc = run(installed, "--config", path, "--no-metrics", "cleanup", "--pressure", "--json")
    result = json.loads(proc.stdout)
    target = result["targets"][0]
    assert [a["status"] for a in target["archives"]] == ["failed"], target["archives"]
    assert "time budget" in target["archives"][0]["error"]
    assert os.path.isfile(os.path.join(session, "logs", "raylet.out")) and archives_in(str(dest)) == []
    assert result["pressure"]["tiers"], result["pressure"]  # the reclaim went on past the archive
