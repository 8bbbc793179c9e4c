# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``_archive`` without servers or network: ``open_store``'s choices and messages, ``_ChunkReader`` (what boto3 reads
an archive from), ``Archived.covers`` (what cleanup asks before it unlinks a log), ``prune``'s age limit.

The stores against a real S3 server, the ``hdfs`` command and hostile trees: tests/system/test_archive_stores.py.
"""

from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.rayops.disk.plugins.module_utils._archive import (
    Archived,
    DirStore,
    HdfsStore,
    S3Store,
    Store,
    _ChunkReader,
    open_store,
    prune,
)
from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError


class FakeBoto3:
    """Stands for the boto3 module: records the client asked for (of a session of its own), makes no connection."""

    def __init__(self):
        self.asked = []
        self.session = self

    def Session(self):  # noqa: N802 (boto3.session.Session)
        return self

    def client(self, service, endpoint_url=None):
        self.asked.append((service, endpoint_url))
        return object()


def usage_error(*args):
    with pytest.raises(UsageError) as caught:
        open_store(*args)
    return str(caught.value)


# --- open_store ------------------------------------------------------------------------------------------------

def test_relative_path_is_refused_with_an_example():
    message = usage_error("ray-archive")
    assert "'ray-archive'" in message
    assert "is not an absolute directory, s3://BUCKET/PREFIX or hdfs://" in message
    assert "/mnt/nfs/ray-archive" in message  # the fix, by example


@pytest.mark.parametrize("dest", ["ftp://x", "file:///tmp/archive", "S3://bucket/x", "gs://bucket"])
def test_other_schemes_are_refused(dest):
    message = usage_error(dest)
    assert repr(dest) in message
    assert "s3://BUCKET/PREFIX or hdfs://" in message


@pytest.mark.parametrize("dest", ["s3://", "s3:///archive"])
def test_s3_without_bucket(dest):
    message = usage_error(dest, None, FakeBoto3())
    assert repr(dest) in message and "names no bucket" in message
    assert "s3://BUCKET/PREFIX" in message and "s3://ray-logs/archive" in message


def test_s3_without_boto3_names_it():
    message = usage_error("s3://ray-logs/archive", None, None)
    assert "'s3://ray-logs/archive'" in message
    assert "boto3" in message and "python3-boto3" in message  # the library, and how to install it


def test_hdfs_without_the_command_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no hdfs there
    message = usage_error("hdfs://namenode:8020/ray/archive")
    assert "'hdfs://namenode:8020/ray/archive'" in message
    assert "hdfs command" in message and "PATH" in message and "hdfs dfs" in message


def test_missing_directory_is_refused(tmp_path):
    missing = str(tmp_path / "not-mounted")
    message = usage_error(missing)
    assert repr(missing) in message and "create it (or mount the NFS share)" in message
    assert not os.path.exists(missing)  # never created by the check


def test_directory_store(tmp_path):
    store = open_store(str(tmp_path) + "/")
    assert isinstance(store, DirStore)
    assert (store.root, store.describe("c/n/s/x.tar.gz")) == (str(tmp_path), str(tmp_path) + "/c/n/s/x.tar.gz")


@pytest.mark.parametrize("dest, bucket, prefix, key", [
    ("s3://ray-logs", "ray-logs", "", "c/n/x"),
    ("s3://ray-logs/", "ray-logs", "", "c/n/x"),
    ("s3://ray-logs/archive/eu/", "ray-logs", "archive/eu", "archive/eu/c/n/x"),
])
def test_s3_store(dest, bucket, prefix, key):
    boto3 = FakeBoto3()
    store = open_store(dest, "http://127.0.0.1:9000", boto3)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store._key("c/n/x")) == (bucket, prefix, key)
    assert store.describe("c/n/x") == "s3://%s/%s" % (bucket, key)
    assert boto3.asked == [("s3", "http://127.0.0.1:9000")]


def test_s3_store_without_endpoint_uses_aws():
    boto3 = FakeBoto3()
    open_store("s3://ray-logs/archive", "", boto3)
    assert boto3.asked == [("s3", None)]  # an empty endpoint_url is boto3's default, not a URL ""


def test_hdfs_store_uses_the_command_on_path(tmp_path, monkeypatch):
    command = tmp_path / "hdfs"
    command.write_text("#!/bin/sh\nexit 99\n")
    command.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    store = open_store("hdfs://namenode:8020/ray/archive/")
    assert isinstance(store, HdfsStore)
    assert store.command == str(command)
    assert store.describe("c/n/x") == "hdfs://namenode:8020/ray/archive/c/n/x"


# --- _ChunkReader ----------------------------------------------------------------------------------------------

class Counting:
    """An iterator of chunks that counts how many were taken."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.taken = 0

    def __iter__(self):
        return self

    def __next__(self):
        chunk = next(self.chunks)
        self.taken += 1
        return chunk


def test_chunk_reader_sizes_across_chunks():
    chunks = [b"abc", b"defgh", b"i", b"jklmnopq"]
    reader = _ChunkReader(iter(chunks))
    got = [reader.read(4) for _times in range(5)]
    assert got == [b"abcd", b"efgh", b"ijkl", b"mnop", b"q"]
    assert reader.read(4) == b"" and reader.read() == b""  # the end, and it stays the end


def test_chunk_reader_reads_lazily():
    source = Counting([b"ab", b"cd", b"ef", b"gh"])
    reader = _ChunkReader(source)
    assert reader.read(3) == b"abc"
    assert source.taken == 2  # no more than the bytes asked for need
    assert reader.read(1) == b"d"
    assert source.taken == 2
    assert reader.read(0) == b""
    assert source.taken == 2


def test_chunk_reader_read_all():
    reader = _ChunkReader(iter([b"x" * 10, b"y" * 5]))
    assert reader.read(3) == b"xxx"
    assert reader.read() == b"x" * 7 + b"y" * 5
    assert reader.read(-1) == b""


def test_chunk_reader_big_reads_are_whole():
    data = os.urandom(3 * (1 << 20) + 17)
    reader = _ChunkReader(iter([data[i:i + 65536] for i in range(0, len(data), 65536)]))
    parts = []
    while True:
        part = reader.read(1 << 20)
        if not part:
            break
        parts.append(part)
    assert [len(part) for part in parts] == [1 << 20] * 3 + [17]
    assert b"".join(parts) == data


def test_chunk_reader_passes_the_source_error_on():
    def failing():
        yield b"abc"
        raise OSError(5, "the logs could not be read")

    reader = _ChunkReader(failing())
    assert reader.read(2) == b"ab"
    with pytest.raises(OSError, match="could not be read"):
        reader.read(2)


# --- Archived.covers -------------------------------------------------------------------------------------------

def test_covers_only_the_very_file(tmp_path):
    path = tmp_path / "raylet.out"
    path.write_bytes(b"x" * 100)
    st = os.stat(path)
    archived = Archived()
    archived.add([{"path": "logs/raylet.out", "ino": st.st_ino, "bytes": 100, "mtime_ns": st.st_mtime_ns,
                   "sha256": "0" * 64}])
    assert archived.covers("logs/raylet.out", st)
    assert not archived.covers("logs/other.out", st)  # another path, even with the same identity

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: another mtime
    assert not archived.covers("logs/raylet.out", os.stat(path))

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open(path, "ab") as handle:  # appended to: another size (mtime put back)
        handle.write(b"y")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not archived.covers("logs/raylet.out", os.stat(path))

    replaced = tmp_path / "new"
    replaced.write_bytes(b"x" * 100)
    os.utime(replaced, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replaced, path)  # the same size and mtime, another inode
    now = os.stat(path)
    assert (now.st_size, now.st_mtime_ns) == (100, st.st_mtime_ns) and now.st_ino != st.st_ino
    assert not archived.covers("logs/raylet.out", now)


def test_a_later_manifest_wins():
    archived = Archived()
    archived.add([{"path": "logs/a", "ino": 1, "bytes": 10, "mtime_ns": 5},
                  {"path": "logs/b", "ino": 2, "bytes": 20, "mtime_ns": 6}])
    archived.add([{"path": "logs/a", "ino": 1, "bytes": 11, "mtime_ns": 7}])
    assert archived.files == {"logs/a": (1, 11, 7), "logs/b": (2, 20, 6)}


def test_nothing_recorded_covers_nothing(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    assert not Archived().covers("logs/f", os.stat(tmp_path / "f"))


# --- prune's limit ---------------------------------------------------------------------------------------------

class MemoryStore(Store):
    """Keys in a dict (prune only lists and deletes)."""

    def __init__(self, keys):
        self.data = dict.fromkeys(keys, b"")
        self.deleted = []

    def keys(self, prefix):
        return sorted(key for key in self.data if key.startswith(prefix))

    def delete(self, key):
        self.deleted.append(key)
        self.data.pop(key, None)


def test_prune_limit_is_strict_and_manifest_goes_first():
    now = datetime.datetime(2026, 12, 10, 12, 0, 0, tzinfo=datetime.timezone.utc)
    at_limit = "c1/n1/s1/20261207T120000.000000Z"  # exactly keep_days=3 old: kept
    older = "c1/n1/s1/20261207T115959.999999Z"
    keys = [at_limit + ".manifest.json", at_limit + ".tar.gz", older + ".manifest.json", older + ".tar.gz",
            "c1/n1/s1/old.manifest.json", "c1/n12/s1/20200101T000000.000000Z.manifest.json"]
    store = MemoryStore(keys)

    removed = prune(store, "c1", "n1", 3, now.timestamp())

    assert removed == [older + ".manifest.json", older + ".tar.gz"]
    assert store.deleted == removed  # the manifest before its archive
    assert sorted(store.data) == sorted(set(keys) - set(removed))
