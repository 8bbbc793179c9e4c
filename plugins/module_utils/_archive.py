# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Archive before delete: a session's logs copied, verified and recorded before cleanup may remove them.

A *store* is where archives go: a directory (local or NFS), ``s3://bucket/prefix`` (boto3, an endpoint URL for
S3-compatible stores, credentials from boto3's usual chain) or ``hdfs://...`` (the node's own ``hdfs dfs`` client).
Every node writes under ``<dest>/<cluster>/<node>/<session>/`` only, so nodes never overwrite each other.

``Archiver.ensure`` archives the regular files below a session's ``logs`` (or ``logs/old``): it lists them
fd-relative inside the target's root without following a link, leaving out what is not a regular file (a FIFO, a
device, a link: named in the manifest, never opened) and what lies on another filesystem; it streams one
``<stamp>.tar.gz`` to the store (compressed by a thread at nice 10 and idle I/O priority, at most
``bandwidth`` bytes a second), reads it back and compares size and SHA-256, and only then writes
``<stamp>.manifest.json``: the files (path, bytes, SHA-256, inode, mtime). The manifest is the proof: a file that
a manifest of its session lists with the same inode, size and mtime is archived, and a rerun after a crash
uploads only what no manifest lists. ``Archived.covers`` is the question cleanup asks before it unlinks a file.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import json
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ansible_collections.rayops.disk.plugins.module_utils._errors import UsageError, describe_os_error, printable
from ansible_collections.rayops.disk.plugins.module_utils._fs import Tree, open_dir

CHUNK = 1 << 20
MANIFEST_SUFFIX = ".manifest.json"
ARCHIVE_SUFFIX = ".tar.gz"
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}
"""The ioprio_set syscall's number (no Python API: an idle I/O class for one thread)."""


class ArchiveError(Exception):
    """An archive that could not be written or verified: the session is kept, and the message says why."""


# --- stores ----------------------------------------------------------------------------------------------------

class Store:
    """Where archives go; keys are ``/``-separated paths below the destination."""

    url: str = ""

    def describe(self, key: str) -> str:
        """The key as the operator names the place (for messages and results)."""
        return self.url.rstrip("/") + "/" + key

    def write(self, key: str, chunks: Iterator[bytes]) -> None:
        """Store the bytes of ``chunks`` at ``key`` (replacing what a crashed run left there)."""
        raise NotImplementedError

    def read(self, key: str) -> Iterator[bytes]:
        """The bytes stored at ``key``, read back from the store."""
        raise NotImplementedError

    def keys(self, prefix: str) -> list:
        """Every key below ``prefix`` (``a/b/`` lists ``a/b/c/d``)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        raise NotImplementedError

    def get_text(self, key: str) -> str:
        """The text stored at ``key``."""
        return b"".join(self.read(key)).decode("utf-8")


class DirStore(Store):
    """A directory, local or NFS: each file written to a temporary name, flushed, then renamed."""

    def __init__(self, path: str) -> None:
        self.root = path.rstrip("/") or "/"
        self.url = self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def write(self, key: str, chunks: Iterator[bytes]) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        partial = "%s.partial-%d" % (path, os.getpid())
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(partial, path)
        except BaseException:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise

    def read(self, key: str) -> Iterator[bytes]:
        with open(self._path(key), "rb") as handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    return
                yield chunk

    def keys(self, prefix: str) -> list:
        top = self._path(prefix.rstrip("/"))
        found = []
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                found.append(posixpath.join(prefix.rstrip("/"), os.path.relpath(os.path.join(dirpath, name), top)))
        return sorted(found)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        parent = os.path.dirname(path)
        while parent != self.root and parent.startswith(self.root + "/"):  # empty session and node dirs go too
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)


class S3Store(Store):
    """An S3 bucket (or an S3-compatible store at ``endpoint_url``), through boto3."""

    def __init__(self, bucket: str, prefix: str, boto3: Any, endpoint_url: Optional[str]) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = "s3://%s/%s" % (bucket, self.prefix) if self.prefix else "s3://%s" % bucket
        # A session of its own: boto3's default one is shared by the process and not thread-safe.
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None)

    def _key(self, key: str) -> str:
        return "%s/%s" % (self.prefix, key) if self.prefix else key

    def write(self, key: str, chunks: Iterator[bytes]) -> None:
        self.client.upload_fileobj(_ChunkReader(chunks), self.bucket, self._key(key))

    def read(self, key: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        yield from body.iter_chunks(CHUNK)

    def keys(self, prefix: str) -> list:
        found = []
        start = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self._key(prefix)):
            found.extend(item["Key"][start:] for item in page.get("Contents", []))
        return sorted(found)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


class HdfsStore(Store):
    """HDFS through the node's own ``hdfs dfs`` client (``-put -f -`` from a pipe, ``-cat`` to read back)."""

    def __init__(self, url: str, command: str) -> None:
        self.url = url.rstrip("/")
        self.command = command

    def _run(self, *args: str, stdin: Any = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.command, "dfs"] + list(args), stdin=stdin, capture_output=True, timeout=3600,
                              check=False)
        if proc.returncode != 0:
            raise ArchiveError("hdfs dfs %s failed (exit %d): %s" % (
                " ".join(args), proc.returncode, printable(proc.stderr.decode("utf-8", "replace").strip()[-400:])))
        return proc

    def write(self, key: str, chunks: Iterator[bytes]) -> None:
        target = self.describe(key)
        self._run("-mkdir", "-p", posixpath.dirname(target))
        with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty client never blocks on it
            proc = subprocess.Popen([self.command, "dfs", "-put", "-f", "-", target], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=errors)
            stopped = False
            try:
                for chunk in chunks:
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:  # it stopped reading: its exit code and message say why
                stopped = True
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if proc.wait() != 0 or stopped:
                errors.seek(0)
                said = printable(errors.read().decode("utf-8", "replace").strip()[-400:])
                raise ArchiveError("hdfs dfs -put %s failed (exit %d): %s" % (
                    target, proc.returncode, said or "it stopped reading the archive"))

    def read(self, key: str) -> Iterator[bytes]:
        proc = subprocess.Popen([self.command, "dfs", "-cat", self.describe(key)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        while True:
            chunk = proc.stdout.read(CHUNK)
            if not chunk:
                break
            yield chunk
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise ArchiveError("hdfs dfs -cat %s failed (exit %d): %s" % (
                self.describe(key), proc.returncode, printable(err.decode("utf-8", "replace").strip()[-400:])))

    def keys(self, prefix: str) -> list:
        top = self.describe(prefix.rstrip("/"))
        proc = subprocess.run([self.command, "dfs", "-ls", "-R", top], capture_output=True, timeout=600,
                              check=False)
        if proc.returncode != 0:
            return []  # nothing there yet
        found = []
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            fields = line.split(None, 7)
            if len(fields) == 8 and fields[0].startswith("-") and fields[7].startswith(top + "/"):
                found.append(posixpath.join(prefix.rstrip("/"), fields[7][len(top) + 1:]))
        return sorted(found)

    def delete(self, key: str) -> None:
        self._run("-rm", "-f", self.describe(key))


def open_store(dest: str, endpoint_url: Optional[str] = None, boto3: Any = None,
               option: str = "archive_dest") -> Store:
    """The store ``dest`` names (the config key ``option``); ``UsageError`` naming it, the value and the fix when
    it is none."""
    if dest.startswith("s3://"):
        bucket, _sep, prefix = dest[len("s3://"):].partition("/")
        if not bucket:
            raise UsageError("%s %r names no bucket; give s3://BUCKET/PREFIX, for example "
                             "s3://ray-logs/archive" % (option, dest))
        if boto3 is None:
            raise UsageError("%s %r needs the Python library boto3 on the node; install python3-boto3 "
                             "(or boto3 in the role's venv)" % (option, dest))
        return S3Store(bucket, prefix, boto3, endpoint_url)
    if dest.startswith("hdfs://"):
        command = shutil.which("hdfs")
        if command is None:
            raise UsageError("%s %r needs the hdfs command on the node's PATH (the Hadoop client's "
                             "`hdfs dfs`); install it, or give a directory or s3:// destination" % (option, dest))
        return HdfsStore(dest, command)
    if "://" in dest or not os.path.isabs(dest):
        raise UsageError("%s %r is not an absolute directory, s3://BUCKET/PREFIX or hdfs://...; for "
                         "example /mnt/nfs/ray-archive" % (option, dest))
    if not os.path.isdir(dest):
        raise UsageError("%s %r is not a directory on this node; create it (or mount the NFS share) "
                         "first" % (option, dest))
    return DirStore(dest)


class _ChunkReader:
    """A read()-only file object over an iterator of bytes (what boto3 uploads from, without seeking)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


# --- what is archived ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogFile:
    """A regular file below a session, as listed before archiving: path relative to the session, identity, size."""

    path: str
    ino: int
    size: int
    mtime_ns: int


@dataclass
class Archived:
    """What the manifests of one session say is archived: session-relative path to ``(ino, size, mtime_ns)``."""

    files: dict = field(default_factory=dict)

    def covers(self, path: str, st: os.stat_result) -> bool:
        """Whether this very file (same inode, size and mtime) is in a verified archive. A link, a FIFO or another
        entry that is not a regular file holds no data to archive, and a hard link is not the file's only name:
        removing either loses nothing, so both are covered."""
        return (not stat.S_ISREG(st.st_mode) or st.st_nlink > 1
                or self.files.get(path) == (st.st_ino, st.st_size, st.st_mtime_ns))

    def add(self, entries: list) -> None:
        """Add a manifest's ``files``."""
        for entry in entries:
            self.files[entry["path"]] = (entry["ino"], entry["bytes"], entry["mtime_ns"])


@dataclass
class SessionArchive:
    """The archive of one session's logs: what was done, and what is archived now (``archived``)."""

    session: str
    status: str
    """``archived`` (uploaded and verified now), ``already_archived`` (a manifest had every file), ``failed``."""
    archived: Archived = field(default_factory=Archived)
    key: Optional[str] = None
    files: int = 0
    bytes: int = 0
    not_archived: list = field(default_factory=list)
    error: Optional[str] = None

    def result(self, store: Store) -> dict:
        """The plain dict a module, the CLI's JSON and its table show."""
        return {"session": self.session, "status": self.status, "archive": store.describe(self.key)
                if self.key else None, "files": self.files, "bytes": self.bytes, "not_archived": self.not_archived,
                "error": self.error}


def list_logs(tree: Tree, session_path: str, below: tuple) -> tuple:
    """``(files, not_archived)`` below ``session_path``/``below`` (inside ``tree``), never through a link.

    ``files`` are ``LogFile``s of the regular files (paths relative to the session); ``not_archived`` names each
    entry that is not one (a link, a FIFO, a device, a socket) or that lies on another filesystem, with why.
    """
    files: list = []
    skipped: list = []
    fd = tree.open_dir(session_path)
    try:
        dev = os.fstat(fd).st_dev
        prefix = []
        for name in below:
            try:
                child = open_dir(name, dir_fd=fd)
            except FileNotFoundError:
                return files, skipped
            except OSError as exc:
                skipped.append({"path": "/".join(prefix + [name]), "reason": "not a directory of its own: %s"
                                % describe_os_error(exc)})
                return files, skipped
            os.close(fd)
            fd = child
            prefix.append(name)
        _walk(fd, prefix, dev, files, skipped)
    finally:
        os.close(fd)
    return files, skipped


def _walk(fd: int, prefix: list, dev: int, files: list, skipped: list) -> None:
    for name in sorted(os.listdir(fd)):
        path = "/".join(prefix + [name])
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            continue
        if st.st_dev != dev:
            skipped.append({"path": path, "reason": "on another filesystem"})
        elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:  # another name of a file anyone may have chosen
            skipped.append({"path": path, "reason": "a hard link (%d names), not read: its other names keep it"
                            % st.st_nlink})
        elif stat.S_ISREG(st.st_mode):
            files.append(LogFile(path, st.st_ino, st.st_size, st.st_mtime_ns))
        elif stat.S_ISDIR(st.st_mode):
            try:
                child = open_dir(name, dir_fd=fd)
            except OSError as exc:
                skipped.append({"path": path, "reason": describe_os_error(exc)})
                continue
            try:
                if os.fstat(child).st_ino == st.st_ino:
                    _walk(child, prefix + [name], dev, files, skipped)
            finally:
                os.close(child)
        else:
            kind = ("a symlink" if stat.S_ISLNK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket")
            skipped.append({"path": path, "reason": "%s, not a regular file: never read" % kind})


def _open_listed(tree: Tree, session_path: str, entry: LogFile) -> int:
    """Open the listed file again, component by component without following a link; the same inode or an error."""
    fd = tree.open_dir(session_path)
    try:
        parts = entry.path.split("/")
        for name in parts[:-1]:
            child = open_dir(name, dir_fd=fd)
            os.close(fd)
            fd = child
        try:  # reading must not make the file look used: cleanup's age check reads atime too
            file_fd = os.open(parts[-1], _FILE_FLAGS | _NOATIME, dir_fd=fd)
        except PermissionError:
            file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
    st = os.fstat(file_fd)
    if not stat.S_ISREG(st.st_mode) or st.st_ino != entry.ino:
        os.close(file_fd)
        raise ArchiveError("%s changed while it was archived (not the file listed)" % entry.path)
    return file_fd


def _lower_priority() -> None:
    """This thread only: nice 10 and the idle I/O class, so compressing never competes with Ray."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 10)  # per thread on Linux
    except OSError:
        pass
    number = _IOPRIO_SET.get(os.uname().machine)
    if number is not None:
        try:
            ctypes.CDLL(None, use_errno=True).syscall(number, 1, tid, 3 << 13)  # IOPRIO_WHO_PROCESS, CLASS_IDLE
        except (OSError, AttributeError):
            pass


class _TarStream:
    """A tar.gz of listed files, made by a thread into a pipe; read as chunks, hashed and throttled."""

    def __init__(self, tree: Tree, session_path: str, entries: list, deadline: Optional[float],
                 bandwidth: Optional[int]) -> None:
        self.tree, self.session_path, self.entries = tree, session_path, entries
        self.deadline, self.bandwidth = deadline, bandwidth
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.file_sums: dict = {}
        self.error: Optional[BaseException] = None
        rfd, self.wfd = os.pipe()
        self.reader = os.fdopen(rfd, "rb")
        self.thread = threading.Thread(target=self._produce, daemon=True)

    def _produce(self) -> None:
        _lower_priority()
        try:
            with os.fdopen(self.wfd, "wb") as pipe, tarfile.open(fileobj=pipe, mode="w|gz") as tar:
                for entry in self.entries:
                    if self.deadline is not None and time.monotonic() > self.deadline:
                        raise ArchiveError("the time budget for archiving ran out")
                    self._add(tar, entry)
        except BaseException as exc:  # the reader sees a short stream; ``chunks`` raises this
            self.error = exc

    def _add(self, tar: tarfile.TarFile, entry: LogFile) -> None:
        try:
            fd = _open_listed(self.tree, self.session_path, entry)
        except OSError as exc:
            raise ArchiveError("%s could not be opened again (not the file listed): %s"
                               % (entry.path, describe_os_error(exc))) from exc
        with os.fdopen(fd, "rb") as handle:
            info = tarfile.TarInfo(entry.path)
            info.size, info.mtime, info.mode = entry.size, entry.mtime_ns // 10 ** 9, 0o640
            digest = hashlib.sha256()
            tar.addfile(info, _Hashing(handle, digest, entry))
            self.file_sums[entry.path] = digest.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        """The archive's bytes as the thread makes them; raises what stopped the thread."""
        self.thread.start()
        started = time.monotonic()
        with self.reader:
            while True:
                chunk = self.reader.read(CHUNK)
                if not chunk:
                    break
                self.sha256.update(chunk)
                self.size += len(chunk)
                if self.bandwidth:
                    ahead = self.size / self.bandwidth - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                yield chunk
        self.thread.join()
        if self.error is not None:
            raise ArchiveError(str(self.error) if isinstance(self.error, ArchiveError)
                               else "reading the logs failed: %s" % (describe_os_error(self.error)
                                                                     if isinstance(self.error, OSError)
                                                                     else self.error))


class _Hashing:
    """Reads exactly the listed size from a file, hashing it; a file that shrank is an error, not a short entry."""

    def __init__(self, handle: Any, digest: Any, entry: LogFile) -> None:
        self.handle, self.digest, self.left, self.entry = handle, digest, entry.size, entry

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.handle.read(size)
        if len(data) < size:
            raise ArchiveError("%s shrank while it was archived" % self.entry.path)
        self.left -= len(data)
        self.digest.update(data)
        return data


class Archiver:
    """Archives sessions of one target to a store, under ``<cluster>/<node>/<session>/``."""

    def __init__(self, store: Store, cluster: str, node: str, bandwidth: Optional[int] = None,
                 deadline: Optional[float] = None) -> None:
        self.store = store
        self.cluster = cluster
        self.node = node
        self.bandwidth = bandwidth
        self.deadline = deadline
        """A ``time.monotonic()`` after which no archive is started or continued (the guard's time budget)."""

    def prefix(self, session: str) -> str:
        """Where one session's archives and manifests go."""
        return "%s/%s/%s/" % (self.cluster, self.node, session)

    def recorded(self, session: str) -> Archived:
        """What the verified manifests of ``session`` in the store say is archived."""
        found = Archived()
        for key in self.store.keys(self.prefix(session)):
            if key.endswith(MANIFEST_SUFFIX):
                found.add(json.loads(self.store.get_text(key))["files"])
        return found

    def ensure(self, tree: Tree, session_path: str, below: tuple) -> SessionArchive:
        """Archive what of ``session_path``/``below`` no manifest has yet; verified, or ``failed`` with why."""
        session = posixpath.basename(session_path.rstrip("/"))
        outcome = SessionArchive(session, "failed")
        try:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise ArchiveError("the time budget for archiving ran out")
            files, outcome.not_archived = list_logs(tree, session_path, below)
            outcome.archived = self.recorded(session)
            missing = [entry for entry in files if outcome.archived.files.get(entry.path)
                       != (entry.ino, entry.size, entry.mtime_ns)]
            if not missing:
                outcome.status = "already_archived"
                return outcome
            self._upload(tree, session_path, session, missing, outcome)
        except (ArchiveError, UsageError) as exc:
            outcome.error = str(exc)
        except OSError as exc:
            outcome.error = describe_os_error(exc)
        except Exception as exc:  # a store's own errors (boto3's ClientError, EndpointConnectionError, ...)
            outcome.error = "%s: %s" % (type(exc).__name__, printable(str(exc))[:400])
        return outcome

    def _upload(self, tree: Tree, session_path: str, session: str, missing: list, outcome: SessionArchive) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        key = self.prefix(session) + stamp + ARCHIVE_SUFFIX
        stream = _TarStream(tree, session_path, missing, self.deadline, self.bandwidth)
        self.store.write(key, stream.chunks())
        check, size = hashlib.sha256(), 0
        for chunk in self.store.read(key):
            check.update(chunk)
            size += len(chunk)
        if (size, check.hexdigest()) != (stream.size, stream.sha256.hexdigest()):
            raise ArchiveError("%s read back %d bytes with another checksum than the %d written"
                               % (self.store.describe(key), size, stream.size))
        entries = [{"path": e.path, "bytes": e.size, "sha256": stream.file_sums[e.path], "ino": e.ino,
                    "mtime_ns": e.mtime_ns} for e in missing]
        manifest = {"format": 1, "cluster": self.cluster, "node": self.node, "session": session,
                    "archive": posixpath.basename(key), "archive_bytes": stream.size,
                    "archive_sha256": stream.sha256.hexdigest(), "created": stamp, "files": entries,
                    "not_archived": outcome.not_archived}
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        manifest_key = key[:-len(ARCHIVE_SUFFIX)] + MANIFEST_SUFFIX
        self.store.write(manifest_key, iter([text.encode("utf-8")]))
        if self.store.get_text(manifest_key) != text:
            raise ArchiveError("%s did not read back as written" % self.store.describe(manifest_key))
        outcome.archived.add(entries)
        outcome.status, outcome.key = "archived", key
        outcome.files, outcome.bytes = len(entries), stream.size


def prune(store: Store, cluster: str, node: str, keep_days: float, now: float) -> list:
    """Remove this node's archives whose manifest is older than ``keep_days``; the keys removed."""
    limit = datetime.datetime.fromtimestamp(now - keep_days * 86400, datetime.timezone.utc)
    removed = []
    keys = store.keys("%s/%s/" % (cluster, node))
    for key in keys:
        suffix = MANIFEST_SUFFIX if key.endswith(MANIFEST_SUFFIX) else ARCHIVE_SUFFIX if key.endswith(
            ARCHIVE_SUFFIX) else None
        if suffix is None:
            continue
        try:
            created = datetime.datetime.strptime(posixpath.basename(key)[:-len(suffix)], "%Y%m%dT%H%M%S.%fZ")
        except ValueError:
            continue  # not one of ours
        if created.replace(tzinfo=datetime.timezone.utc) >= limit:
            continue
        if suffix == MANIFEST_SUFFIX:
            archive = key[:-len(MANIFEST_SUFFIX)] + ARCHIVE_SUFFIX
            store.delete(key)  # the manifest first: an archive without one is never taken as proof
            store.delete(archive)
            removed += [key, archive]
        elif key[:-len(ARCHIVE_SUFFIX)] + MANIFEST_SUFFIX not in keys:  # a crashed run's unverified archive
            store.delete(key)
            removed.append(key)
    return removed
