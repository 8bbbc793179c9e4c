# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Archive before delete (``_archive``) against each kind of store, checked through the store's own means.

* ``dir``: a directory here (what an NFS mount is to the node);
* ``s3``: a real S3 server, SeaweedFS on 127.0.0.1 (conftest's ``s3_server``), spoken to by boto3 with credentials
  from its usual chain (the environment);
* ``hdfs``: ``hdfs_standin.py`` as the ``hdfs`` command (conftest's ``hdfs_standin``; no HDFS can run here: see
  the stand-in's docstring).

What a store holds is read back with other means than the store classes (the directory itself, a boto3 client of
the test's own, the stand-in's directory), tarballs are extracted and compared byte for byte with the session's
files. Hostile trees are built for real (a FIFO, a device node, a bound socket, links to /etc).
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import io
import json
import os
import pathlib
import re
import socket
import stat
import subprocess
import tarfile
import threading
import time
import zlib

import pytest

from ansible_collections.rayops.disk.plugins.module_utils import _archive
from ansible_collections.rayops.disk.plugins.module_utils._archive import Archiver, open_store, prune
from ansible_collections.rayops.disk.plugins.module_utils._fs import Tree
from ansible_collections.rayops.disk.tests.system.conftest import free_port

HOST = Tree("/")
CLUSTER = "c1"
NODE = "node-a"
SESSION = "session_2026-11-20_10-00-00_000001_11"
HDFS_DEST = "hdfs://namenode:8020/ray/archive"
STAMP = r"\d{8}T\d{6}\.\d{6}Z"
SECRET = "/etc/shadow"
"""A secret every hostile tree points at; its bytes must never be in a store."""
REAL_LIST_LOGS = _archive.list_logs


# --- the stores, and independent ways to look into them --------------------------------------------------------

@pytest.fixture
def hdfs(hdfs_standin, monkeypatch):
    """conftest's ``hdfs`` stand-in, on this process's PATH (``HdfsStore`` runs ``hdfs`` as a child)."""
    use_hdfs(hdfs_standin, monkeypatch)
    return hdfs_standin


def use_hdfs(standin, monkeypatch):
    """The stand-in's environment (again, after ``fail_puts()``) for this process and what it starts."""
    for name, value in standin.env.items():
        monkeypatch.setenv(name, value)


def s3_env(server, monkeypatch, **changes):
    """The S3 server's credentials where boto3's chain finds them (the environment), nothing else of the machine's;
    ``changes`` override some. boto3's default session resolves credentials once and keeps them for every later
    ``boto3.client()``: it is dropped, so the next store resolves them from this environment."""
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in dict(server.env, **changes).items():
        monkeypatch.setenv(name, value)


class Backend:
    """One store of a test: how the archiver reaches it (``open()``) and raw access past the store classes."""

    def __init__(self, kind, tmp_path, request, monkeypatch):
        self.kind = kind
        self.endpoint_url = None
        if kind == "dir":
            self.root = tmp_path / "archive"
            self.root.mkdir()
            self.dest = str(self.root)
        elif kind == "hdfs":
            self.hdfs = request.getfixturevalue("hdfs")
            self.root = pathlib.Path(self.hdfs.root, "ray", "archive")
            self.dest = HDFS_DEST
        else:
            self.server = request.getfixturevalue("s3_server")
            s3_env(self.server, monkeypatch)
            self.bucket = self.server.bucket()
            self.client = self.server.client()
            self.dest = "s3://%s/archive" % self.bucket
            self.endpoint_url = self.server.endpoint_url

    def open(self):
        import boto3

        return open_store(self.dest, self.endpoint_url, boto3)

    def keys(self):
        """Every key the store holds, relative to the destination."""
        if self.kind == "s3":
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            found = [item["Key"] for page in pages for item in page.get("Contents", [])]
            assert all(key.startswith("archive/") for key in found), found
            return sorted(key[len("archive/"):] for key in found)
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            found += [os.path.relpath(os.path.join(dirpath, name), self.root) for name in files]
        return sorted(found)

    def _s3(self, key):
        return "archive/" + key

    def read(self, key):
        if self.kind == "s3":
            return self.client.get_object(Bucket=self.bucket, Key=self._s3(key))["Body"].read()
        return (self.root / key).read_bytes()

    def put(self, key, data):
        if self.kind == "s3":
            self.client.put_object(Bucket=self.bucket, Key=self._s3(key), Body=data)
        else:
            (self.root / key).parent.mkdir(parents=True, exist_ok=True)
            (self.root / key).write_bytes(data)

    def snapshot(self):
        """What changes when anything is written: each key's identity (and, for hdfs, the number of puts)."""
        if self.kind == "s3":
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            return {item["Key"]: (item["ETag"], item["LastModified"], item["Size"])
                    for page in pages for item in page.get("Contents", [])}
        found = {}
        for key in self.keys():
            st = os.stat(self.root / key)
            found[key] = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self.kind == "hdfs":
            found["-put calls"] = len(self.hdfs.puts())
        return found

    def everything(self):
        """Every stored byte, tarballs (and hdfs -put's partial ones) decompressed: what no secret may be part of."""
        data = b""
        for key in self.keys():
            raw = self.read(key)
            data += raw
            if key.endswith(".tar.gz"):
                data += b"".join(members(raw).values())
            elif key.endswith(".tar.gz._COPYING_"):
                data += zlib.decompressobj(wbits=31).decompress(raw)
        return data


@pytest.fixture(params=["dir", "s3", "hdfs"])
def backend(request, tmp_path, monkeypatch):
    """Each kind of store in turn (S3: a fresh bucket of the session's SeaweedFS)."""
    return Backend(request.param, tmp_path, request, monkeypatch)


# --- helpers ---------------------------------------------------------------------------------------------------

def secret():
    with open(SECRET, "rb") as handle:
        return handle.read()


def members(archive):
    """``{name: bytes}`` of a tar.gz; every member must be a regular file."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            assert member.isreg(), (member.name, member.type)
            found[member.name] = tar.extractfile(member).read()
    return found


def make_session(base, name=SESSION):
    """A Ray session dir with logs (nested, rotated, empty, odd names, random bytes) and things beside the logs."""
    session = base / name
    rand = os.urandom
    files = {
        "logs/raylet.out": rand(150_000),
        "logs/worker-01000000ffffffff-01000000.log": b"INFO task started\n" * 3000,
        "logs/old/gcs_server.out.1": rand(40_000),
        "logs/old/raylet.err.2": rand(3_000),
        "logs/a/b/c/deep.log": rand(1_234),
        "logs/empty.log": b"",
        "logs/name with spaces \u00e9.log": rand(777),
    }
    for path, data in files.items():
        (session / path).parent.mkdir(parents=True, exist_ok=True)
        (session / path).write_bytes(data)
    (session / "sockets").mkdir()
    (session / "session.json").write_bytes(b"{}")  # beside logs: never archived
    (session / "runtime_resources" / "pip").mkdir(parents=True)
    (session / "runtime_resources" / "pip" / "x.whl").write_bytes(rand(1000))
    return session, files


def manifests(keys):
    return sorted(key for key in keys if key.endswith(".manifest.json"))


def stamp_of(key):
    """The UTC time in an archive's name, as a timestamp."""
    name = os.path.basename(key)[:-len(".tar.gz")]
    return datetime.datetime.strptime(name, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


# --- the round trip --------------------------------------------------------------------------------------------

def test_archive_verify_rerun_and_append(backend, tmp_path):
    """Archived: one tar.gz of exactly the regular files below logs, byte for byte, and a manifest whose sums, sizes,
    inodes and mtimes are the files'; a rerun uploads nothing; an appended file is archived alone, then covered."""
    session, files = make_session(tmp_path / "ray")
    archiver = Archiver(backend.open(), CLUSTER, NODE)

    first = archiver.ensure(HOST, str(session), ("logs",))

    assert (first.status, first.error, first.not_archived) == ("archived", None, [])
    prefix = "%s/%s/%s/" % (CLUSTER, NODE, SESSION)
    assert re.fullmatch(re.escape(prefix) + STAMP + r"\.tar\.gz", first.key)
    manifest_key = first.key[:-len(".tar.gz")] + ".manifest.json"
    assert backend.keys() == sorted([first.key, manifest_key])
    archive = backend.read(first.key)
    assert members(archive) == files
    manifest = json.loads(backend.read(manifest_key))
    assert (manifest["cluster"], manifest["node"], manifest["session"], manifest["archive"]) == (
        CLUSTER, NODE, SESSION, os.path.basename(first.key))
    assert (manifest["archive_bytes"], manifest["archive_sha256"]) == (len(archive), hashlib.sha256(archive).hexdigest())
    assert (first.files, first.bytes) == (len(files), len(archive))
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert set(listed) == set(files)
    for path, data in files.items():
        st = os.stat(session / path)
        assert listed[path] == {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}
        assert first.archived.covers(path, st)
    assert first.result(archiver.store)["archive"] == archiver.store.describe(first.key)

    before = backend.snapshot()
    again = archiver.ensure(HOST, str(session), ("logs",))
    assert (again.status, again.error, again.key) == ("already_archived", None, None)
    assert backend.snapshot() == before  # nothing uploaded, nothing rewritten
    assert all(again.archived.covers(path, os.stat(session / path)) for path in files)

    grown = "logs/worker-01000000ffffffff-01000000.log"
    with open(session / grown, "ab") as handle:
        handle.write(b"INFO one more line\n")
    appended = os.stat(session / grown)
    assert not again.archived.covers(grown, appended)  # what cleanup would ask now: not this file
    third = archiver.ensure(HOST, str(session), ("logs",))

    assert (third.status, third.error, third.files) == ("archived", None, 1)
    assert third.key != first.key
    assert members(backend.read(third.key)) == {grown: files[grown] + b"INFO one more line\n"}
    assert len(manifests(backend.keys())) == 2
    assert json.loads(backend.read(manifest_key)) == manifest  # the first manifest is left as it was
    assert third.archived.covers(grown, appended)
    assert all(third.archived.covers(path, os.stat(session / path)) for path in files)
    assert Archiver(backend.open(), CLUSTER, NODE).recorded(SESSION).files == third.archived.files  # from the store
    assert archiver.ensure(HOST, str(session), ("logs",)).status == "already_archived"


def test_big_archive(backend, tmp_path):
    """An archive of 12 MiB of incompressible logs: more than boto3's multipart threshold (8 MiB: a multipart upload
    of a stream that cannot seek) and many times a pipe's buffer; stored, read back and listed whole."""
    session = tmp_path / "ray" / SESSION
    files = {"logs/big-%d.log" % index: os.urandom(3 << 20) for index in range(4)}
    for path, data in files.items():
        (session / path).parent.mkdir(parents=True, exist_ok=True)
        (session / path).write_bytes(data)

    outcome = Archiver(backend.open(), CLUSTER, NODE).ensure(HOST, str(session), ("logs",))

    assert (outcome.status, outcome.error, outcome.files) == ("archived", None, 4)
    archive = backend.read(outcome.key)
    assert len(archive) == outcome.bytes > 12 << 20
    assert members(archive) == files


def test_prune_removes_only_this_nodes_old_archives(backend, tmp_path):
    """prune: a manifest older than keep_days goes, its archive with it; a newer one, another node's (even one whose
    name begins like this node's), another cluster's and a key that is not a stamp stay."""
    session, _files = make_session(tmp_path / "ray")
    store = backend.open()
    archiver = Archiver(store, CLUSTER, NODE)
    old = archiver.ensure(HOST, str(session), ("logs",))
    time.sleep(0.01)
    (session / "logs" / "late.log").write_bytes(b"late\n")
    new = archiver.ensure(HOST, str(session), ("logs",))
    others = [Archiver(store, cluster, node).ensure(HOST, str(session), ("logs",)).key
              for cluster, node in ((CLUSTER, "node-b"), (CLUSTER, NODE + "2"), ("c2", NODE))]
    foreign = "%s/%s/%s/notes.manifest.json" % (CLUSTER, NODE, SESSION)
    backend.put(foreign, b"{}")
    assert [old.status, new.status] == ["archived", "archived"]

    def manifest(key):
        return key[:-len(".tar.gz")] + ".manifest.json"

    keep_days = 3
    between = (stamp_of(old.key) + stamp_of(new.key)) / 2  # the limit falls between the two archives
    assert stamp_of(old.key) < between < stamp_of(new.key)
    removed = prune(store, CLUSTER, NODE, keep_days, between + keep_days * 86400)

    assert sorted(removed) == sorted([manifest(old.key), old.key])
    assert backend.keys() == sorted([new.key, manifest(new.key), foreign]
                                    + others + [manifest(key) for key in others])

    removed = prune(store, CLUSTER, NODE, keep_days, time.time() + 30 * 86400)

    assert sorted(removed) == sorted([manifest(new.key), new.key])
    assert backend.keys() == sorted([foreign] + others + [manifest(key) for key in others])
    assert prune(store, CLUSTER, NODE, keep_days, time.time() + 30 * 86400) == []
    if backend.kind == "hdfs":
        assert [call[:3] for call in backend.hdfs.calls() if call[1] == "-rm"] == [["dfs", "-rm", "-f"]] * 4


# --- failures: a failed archive is never recorded ---------------------------------------------------------------

def test_hdfs_put_refused(hdfs, tmp_path, monkeypatch):
    """The NameNode refuses the write (-put exits 1 without reading): failed, hdfs's message in the error, no manifest.
    The archive here is smaller than a pipe's buffer, so the store's writes all succeed before -put exits."""
    session = tmp_path / "ray" / SESSION
    (session / "logs").mkdir(parents=True)
    (session / "logs" / "raylet.out").write_bytes(b"small\n")
    hdfs.fail_puts()
    use_hdfs(hdfs, monkeypatch)

    outcome = Archiver(open_store(HDFS_DEST), CLUSTER, NODE).ensure(HOST, str(session), ("logs",))

    assert outcome.status == "failed"
    assert "Permission denied: user=ray, access=WRITE" in outcome.error and "exit 1" in outcome.error, outcome.error
    assert [call[:4] for call in hdfs.puts()] == [["dfs", "-put", "-f", "-"]]  # the archive only, no manifest
    assert not [path for path in pathlib.Path(hdfs.root).rglob("*") if path.is_file()]


def test_hdfs_put_refused_big_archive(hdfs, tmp_path, monkeypatch):
    """As above with an archive larger than a pipe's buffer (incompressible 1 MB): -put exits before the store has
    written everything into its stdin. The error must still be hdfs's message, not the store's broken pipe."""
    session = tmp_path / "ray" / SESSION
    (session / "logs").mkdir(parents=True)
    (session / "logs" / "raylet.out").write_bytes(os.urandom(1 << 20))
    hdfs.fail_puts()
    use_hdfs(hdfs, monkeypatch)

    outcome = Archiver(open_store(HDFS_DEST), CLUSTER, NODE).ensure(HOST, str(session), ("logs",))

    assert outcome.status == "failed"
    assert not [path for path in pathlib.Path(hdfs.root).rglob("*") if path.is_file()]
    assert "Permission denied: user=ray, access=WRITE" in outcome.error, outcome.error


def test_s3_endpoint_down(s3_server, tmp_path, monkeypatch):
    """Nothing listens at the endpoint (a free loopback port): failed, the error names the endpoint."""
    import boto3

    s3_env(s3_server, monkeypatch)
    session, _files = make_session(tmp_path / "ray")
    endpoint = "http://127.0.0.1:%d" % free_port()

    outcome = Archiver(open_store("s3://ray-logs/archive", endpoint, boto3), CLUSTER, NODE).ensure(
        HOST, str(session), ("logs",))

    assert outcome.status == "failed"
    assert outcome.error.startswith("EndpointConnectionError: Could not connect to the endpoint URL") \
        and endpoint in outcome.error, outcome.error


def test_s3_wrong_bucket(s3_server, tmp_path, monkeypatch):
    """A bucket that does not exist: failed with S3's NoSuchBucket; the server made no bucket and wrote nothing."""
    import boto3

    s3_env(s3_server, monkeypatch)
    session, _files = make_session(tmp_path / "ray")
    before = [bucket["Name"] for bucket in s3_server.client().list_buckets()["Buckets"]]

    outcome = Archiver(open_store("s3://no-such-bucket-rayops/archive", s3_server.endpoint_url, boto3),
                       CLUSTER, NODE).ensure(HOST, str(session), ("logs",))

    assert outcome.status == "failed"
    assert "NoSuchBucket" in outcome.error, outcome.error
    assert [bucket["Name"] for bucket in s3_server.client().list_buckets()["Buckets"]] == before


def test_s3_wrong_secret(s3_server, tmp_path, monkeypatch):
    """The server checks signatures: a wrong secret in the environment fails (nothing stored), the right one works.
    Proves the archiver's boto3 takes its credentials from the chain, and that the fixture's S3 is not open."""
    import boto3

    bucket = s3_server.bucket()
    session, _files = make_session(tmp_path / "ray")
    s3_env(s3_server, monkeypatch, AWS_SECRET_ACCESS_KEY="not-the-secret")

    outcome = Archiver(open_store("s3://%s/archive" % bucket, s3_server.endpoint_url, boto3), CLUSTER, NODE).ensure(
        HOST, str(session), ("logs",))

    assert outcome.status == "failed"
    assert "SignatureDoesNotMatch" in outcome.error or "AccessDenied" in outcome.error, outcome.error
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)
    s3_env(s3_server, monkeypatch)
    assert Archiver(open_store("s3://%s/archive" % bucket, s3_server.endpoint_url, boto3), CLUSTER, NODE).ensure(
        HOST, str(session), ("logs",)).status == "archived"


# --- hostile trees ---------------------------------------------------------------------------------------------

def test_hostile_entries_are_never_read(backend, tmp_path, monkeypatch):
    """Below logs: a symlink to /etc/shadow, a FIFO nobody writes, a device node (/dev/zero's numbers), a bound unix
    socket, and logs/old a symlink to /etc. Only the regular file is shipped; ensure returns (the FIFO is never
    opened); the manifest names each of the others with why; /etc/shadow's bytes are nowhere in the store."""
    session = tmp_path / "ray" / SESSION
    logs = session / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.out").write_bytes(b"fine\n")
    os.symlink(SECRET, logs / "x")
    os.mkfifo(logs / "fifo")
    os.mknod(logs / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    os.symlink("/etc", logs / "old")
    with socket.socket(socket.AF_UNIX) as sock:
        with monkeypatch.context() as here:  # a relative name: tmp_path is too long for sockaddr_un
            here.chdir(logs)
            sock.bind("sock")
        archiver = Archiver(backend.open(), CLUSTER, NODE)
        done = []
        worker = threading.Thread(target=lambda: done.append(archiver.ensure(HOST, str(session), ("logs",))),
                                  daemon=True)
        worker.start()
        worker.join(60)
        try:
            assert not worker.is_alive(), "ensure blocked on a hostile entry"
        finally:
            if worker.is_alive():  # let a reader blocked on the FIFO go
                os.close(os.open(logs / "fifo", os.O_WRONLY | os.O_NONBLOCK))
    outcome = done[0]

    assert (outcome.status, outcome.error, outcome.files) == ("archived", None, 1)
    assert members(backend.read(outcome.key)) == {"logs/raylet.out": b"fine\n"}
    expected = {"logs/dev": "a device, not a regular file: never read",
                "logs/fifo": "a FIFO, not a regular file: never read",
                "logs/old": "a symlink, not a regular file: never read",
                "logs/sock": "a socket, not a regular file: never read",
                "logs/x": "a symlink, not a regular file: never read"}
    assert {entry["path"]: entry["reason"] for entry in outcome.not_archived} == expected
    manifest = json.loads(backend.read(outcome.key[:-len(".tar.gz")] + ".manifest.json"))
    assert {entry["path"]: entry["reason"] for entry in manifest["not_archived"]} == expected
    assert [entry["path"] for entry in manifest["files"]] == ["logs/raylet.out"]
    assert secret() not in backend.everything()


def test_logs_itself_a_symlink(backend, tmp_path):
    """A session whose logs is a symlink to /etc: nothing read, nothing stored, logs named as not archived."""
    session = tmp_path / "ray" / SESSION
    session.mkdir(parents=True)
    os.symlink("/etc", session / "logs")

    outcome = Archiver(backend.open(), CLUSTER, NODE).ensure(HOST, str(session), ("logs",))

    assert (outcome.status, outcome.error, outcome.key) == ("already_archived", None, None)  # nothing to archive
    assert [entry["path"] for entry in outcome.not_archived] == ["logs"]
    assert outcome.not_archived[0]["reason"].startswith("not a directory of its own"), outcome.not_archived
    assert backend.keys() == []


def swap_after_listing(monkeypatch, session, replace):
    """``list_logs`` as the archiver calls it, then ``replace(path)`` on logs/b.log before anything is read."""
    def listed_then_swapped(*args, **kwargs):
        result = REAL_LIST_LOGS(*args, **kwargs)
        assert "logs/b.log" in [entry.path for entry in result[0]]
        replace(session / "logs" / "b.log")
        return result

    monkeypatch.setattr(_archive, "list_logs", listed_then_swapped)


def to_symlink(path):
    os.symlink(SECRET, str(path) + ".new")
    os.replace(str(path) + ".new", path)


def to_other_file(path):
    with open(str(path) + ".new", "wb") as handle:
        handle.write(b"another file\n")  # another inode
    os.replace(str(path) + ".new", path)


@pytest.mark.parametrize("replace", [to_symlink, to_other_file])
def test_file_swapped_after_listing(backend, tmp_path, monkeypatch, replace):
    """logs/b.log is replaced (by a symlink to /etc/shadow, or by another file) between listing and reading: failed,
    the error names the file, no manifest, no secret stored; the next run archives what is there now."""
    session = tmp_path / "ray" / SESSION
    (session / "logs").mkdir(parents=True)
    (session / "logs" / "a.log").write_bytes(os.urandom(5000))
    (session / "logs" / "b.log").write_bytes(os.urandom(5000))
    archiver = Archiver(backend.open(), CLUSTER, NODE)
    swap_after_listing(monkeypatch, session, replace)

    outcome = archiver.ensure(HOST, str(session), ("logs",))

    assert outcome.status == "failed"
    assert not manifests(backend.keys())
    assert not [key for key in backend.keys() if not key.endswith("._COPYING_")]  # hdfs -put's own leftover, killed
    assert secret() not in backend.everything()
    assert outcome.archived.files == {}
    assert "logs/b.log" in outcome.error, outcome.error

    monkeypatch.setattr(_archive, "list_logs", REAL_LIST_LOGS)
    retry = archiver.ensure(HOST, str(session), ("logs",))
    assert retry.status == "archived", retry.error
    shipped = members(backend.read(retry.key))
    assert "logs/a.log" in shipped
    if replace is to_symlink:
        assert set(shipped) == {"logs/a.log"}
        assert [entry["path"] for entry in retry.not_archived] == ["logs/b.log"]


# --- throttling and priority -----------------------------------------------------------------------------------

def test_bandwidth_limit(tmp_path):
    """bandwidth=200 kB/s: ~600 kB of incompressible logs take at least 2.5 s to ship (a lower bound only)."""
    session = tmp_path / "ray" / SESSION
    (session / "logs").mkdir(parents=True)
    for index in range(3):
        (session / "logs" / ("w%d.log" % index)).write_bytes(os.urandom(200_000))
    (tmp_path / "archive").mkdir()
    archiver = Archiver(open_store(str(tmp_path / "archive")), CLUSTER, NODE, bandwidth=200_000)

    started = time.monotonic()
    outcome = archiver.ensure(HOST, str(session), ("logs",))
    took = time.monotonic() - started

    assert outcome.status == "archived", outcome.error
    assert outcome.bytes >= 600_000
    assert took >= 2.5, took


IOPRIO_GET = {"x86_64": 252, "aarch64": 31}


def test_compressing_thread_runs_at_nice_10_and_idle_io(tmp_path, monkeypatch):
    """The thread that reads and compresses the logs runs at nice 10 in the idle I/O class; the caller's own thread
    keeps its priority."""
    seen = []
    real = _archive._lower_priority

    def recording():
        real()
        tid = threading.get_native_id()
        ioprio = ctypes.CDLL(None, use_errno=True).syscall(IOPRIO_GET[os.uname().machine], 1, tid)
        with open("/proc/self/task/%d/stat" % tid) as handle:
            nice = int(handle.read().rpartition(")")[2].split()[16])  # field 19 of stat
        seen.append((tid, os.getpriority(os.PRIO_PROCESS, tid), nice, ioprio >> 13))

    monkeypatch.setattr(_archive, "_lower_priority", recording)
    session, _files = make_session(tmp_path / "ray")
    (tmp_path / "archive").mkdir()
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    outcome = Archiver(open_store(str(tmp_path / "archive")), CLUSTER, NODE).ensure(HOST, str(session), ("logs",))

    assert outcome.status == "archived", outcome.error
    assert len(seen) == 1
    tid, priority, nice, io_class = seen[0]
    assert tid != threading.get_native_id()
    assert (priority, nice, io_class) == (10, 10, 3)  # IOPRIO_CLASS_IDLE
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_hdfs_standin_speaks_like_the_client(hdfs):
    """The stand-in itself: -ls -R prints HDFS's 8 fields with full URLs, a missing path exits 1 as the client does,
    -put needs the parent (the store's -mkdir -p makes it), and a command it does not implement exits 2."""
    def run(*args, data=None):
        return subprocess.run(["hdfs", "dfs"] + list(args), input=data, capture_output=True, check=False)

    top = HDFS_DEST + "/t"
    assert run("-put", "-f", "-", top + "/d/f", data=b"x").returncode == 1  # no parent yet
    assert run("-mkdir", "-p", top + "/d").returncode == 0
    assert run("-put", "-f", "-", top + "/d/f", data=b"hello").returncode == 0
    listing = run("-ls", "-R", top)
    lines = [line.split(None, 7) for line in listing.stdout.decode().splitlines()]
    expected = [("d", "0", top + "/d"), ("-", "5", top + "/d/f")]
    assert [(fields[0][0], fields[4], fields[7]) for fields in lines] == expected
    assert all(len(fields) == 8 for fields in lines)
    assert run("-cat", top + "/d/f").stdout == b"hello"
    missing = run("-cat", top + "/nothing")
    assert (missing.returncode, missing.stderr) == (1, b"cat: `%s/nothing': No such file or directory\n" % top.encode())
    assert run("-ls", "-R", HDFS_DEST + "/none").returncode == 1
    assert run("-rm", "-f", top + "/d/f").returncode == 0 and run("-rm", "-f", top + "/d/f").returncode == 0
    assert run("-stat", top).returncode == 2
    assert [call[1] for call in hdfs.calls()] == ["-put", "-mkdir", "-put", "-ls", "-cat", "-cat", "-ls", "-rm", "-rm",
                                                  "-stat"]
