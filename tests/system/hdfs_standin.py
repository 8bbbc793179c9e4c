# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A STAND-IN for Hadoop's ``hdfs`` command, not HDFS: the archive tests' only way to drive ``HdfsStore``.

No HDFS can run here (a NameNode and a DataNode need a JVM and Hadoop's distribution, neither of which this test
machine has or may download), so this script plays the client's part over a local directory. It implements only
what ``HdfsStore`` runs, with the real client's output format and exit codes as far as the store relies on them:

* ``hdfs dfs -mkdir -p URL``
* ``hdfs dfs -put -f - URL``: the bytes of stdin to URL; like the real client it writes ``URL._COPYING_`` first and
  renames it when stdin ends, and fails when URL's parent directory does not exist
* ``hdfs dfs -cat URL``
* ``hdfs dfs -ls -R URL``: one line per entry, HDFS's 8 fields (permissions, replication or ``-`` for a directory,
  owner, group, size, date, time, path); the path as given (a full URL in, full URLs out); a missing URL: exit 1
* ``hdfs dfs -rm -f URL``: a file (a directory needs ``-r``, which is not implemented)

URLs must be ``hdfs://namenode:8020/...``; the path below that maps into ``$HDFS_STANDIN_ROOT``. Every call's argv
(after ``hdfs``) is appended as a JSON line to ``$HDFS_STANDIN_LOG``. With ``HDFS_STANDIN_FAIL_PUT=1`` every
``-put`` fails as a NameNode that refuses the write does: it exits 1 with a message, without reading stdin.
Anything else exits 2 (``Unknown command``), so a test learns when the store runs something this does not cover.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import sys

AUTHORITY = "hdfs://namenode:8020"


class Failed(Exception):
    """A command's failure: the message goes to stderr and the exit status is 1."""


def local(url):
    """The local path of ``url`` below the root; refuses another namenode and ``..``."""
    if url != AUTHORITY and not url.startswith(AUTHORITY + "/"):
        raise Failed("stand-in: %s is not below %s" % (url, AUTHORITY))
    parts = [part for part in url[len(AUTHORITY):].split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise Failed("stand-in: %s has . or .. in it" % url)
    return os.path.join(os.environ["HDFS_STANDIN_ROOT"], *parts)


def mkdir(url):
    os.makedirs(local(url), exist_ok=True)


def put(url):
    if os.environ.get("HDFS_STANDIN_FAIL_PUT") == "1":
        raise Failed("put: Permission denied: user=ray, access=WRITE, inode=\"%s\":hdfs:supergroup:drwxr-xr-x"
                     % url[len(AUTHORITY):])
    path = local(url)
    if not os.path.isdir(os.path.dirname(path)):
        raise Failed("put: `%s': No such file or directory" % url)
    copying = path + "._COPYING_"
    with open(copying, "wb") as handle:
        while True:
            chunk = sys.stdin.buffer.read(1 << 16)
            if not chunk:
                break
            handle.write(chunk)
    os.rename(copying, path)


def cat(url):
    path = local(url)
    if not os.path.isfile(path):
        raise Failed("cat: `%s': No such file or directory" % url)
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 16)
            if not chunk:
                return
            sys.stdout.buffer.write(chunk)


def ls_line(path, url):
    st = os.lstat(path)
    when = datetime.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M")
    if stat.S_ISDIR(st.st_mode):
        return "drwxr-xr-x   - ray supergroup %10d %s %s" % (0, when, url)
    return "-rw-r--r--   3 ray supergroup %10d %s %s" % (st.st_size, when, url)


def ls_recursive(url):
    top = local(url)
    if not os.path.lexists(top):
        raise Failed("ls: `%s': No such file or directory" % url)
    if not os.path.isdir(top):
        print(ls_line(top, url))
        return
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            print(ls_line(path, url.rstrip("/") + "/" + os.path.relpath(path, top)))


def rm(url):
    path = local(url)
    if os.path.isdir(path):
        raise Failed("rm: `%s': Is a directory" % url)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # -f


COMMANDS = {("dfs", "-mkdir", "-p"): mkdir, ("dfs", "-put", "-f", "-"): put, ("dfs", "-cat"): cat,
            ("dfs", "-ls", "-R"): ls_recursive, ("dfs", "-rm", "-f"): rm}


def main(argv):
    with open(os.environ["HDFS_STANDIN_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    command = COMMANDS.get(tuple(argv[:-1]))
    if command is None:
        sys.stderr.write("stand-in: Unknown command: %s\n" % " ".join(argv))
        return 2
    try:
        command(argv[-1])
    except Failed as exc:
        sys.stderr.write("%s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
