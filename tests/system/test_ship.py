# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ray-maintenance ship``: the head node ships shared log paths, a worker does not, a node without Ray ships alone.

The CLI runs as cron runs it (a subprocess, as root). A Ray head is a real one on this machine (``RayHead``, loopback
only); a Ray worker node is a real ``ray start --address`` started inside a PID namespace of its own
(``unshare --pid --fork --mount-proc``) together with the CLI, so that the CLI's ``/proc`` shows the worker's raylet
and not the head outside. "No Ray" is the CLI alone in such a namespace: other tests may run Ray on this machine at
the same time, and the host's ``/proc`` would show it. Stores: a real directory, the real S3 server (``s3_server``,
SeaweedFS on loopback) and the ``hdfs dfs`` stand-in (``hdfs_standin``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from ansible_collections.rayops.disk.tests.system.conftest import REPO, free_ports
from ansible_collections.rayops.disk.tests.unit.plugins.module_utils.conftest import promtool_check, samples, series

CLI = "import sys; from ansible_collections.rayops.disk.plugins.module_utils._cli import main; sys.exit(main(sys.argv[1:]))"
ALONE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")
"""A PID namespace of its own (and a /proc showing only it): no Ray of any other test is seen."""
SECRET = b"root-only secret: never shipped\n"
WORKER_PORTS = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-grpc-port",
                "dashboard-agent-listen-port", "runtime-env-agent-port")
"""The ``ray start`` flags of the ports a worker node listens on (each given: none picked at random)."""


def cli_env(**extra):
    """The environment of the CLI: the collection importable, no config from the environment, nothing disabled."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_MAINTENANCE_CONFIG", "RAY_DISABLE_HDFS_COPY")}
    env["PYTHONPATH"] = os.path.join(REPO, ".build", "collections")
    env.update(extra)
    return env


def ship(config, *args, alone=True, env=None, timeout=120):
    """``ray-maintenance --config CONFIG [ARGS] ship``, alone in a PID namespace unless ``alone`` is false."""
    argv = [sys.executable, "-c", CLI, "--config", str(config)] + list(args)
    started = time.monotonic()
    proc = subprocess.run((list(ALONE) if alone else []) + argv, env=env or cli_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)
    proc.seconds = time.monotonic() - started
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def result_of(proc):
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def write_config(tmp_path, **settings):
    settings.setdefault("ship_state", str(tmp_path / "state" / "ship-state.json"))
    settings.setdefault("metrics_dir", str(tmp_path / "metrics"))
    settings.setdefault("log_file", str(tmp_path / "ray-maintenance.log"))
    settings.setdefault("archive_node", "node-1")
    os.makedirs(settings["metrics_dir"], exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(settings))
    return path


def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


@pytest.fixture
def shared():
    """Log dirs as the users have them: the app's own, and one dir per node below a shared one (any user may write
    /tmp: its dirs are 0755 and root's, as the app makes them)."""
    base = tempfile.mkdtemp(prefix="rayops-ship-", dir="/tmp")
    os.chmod(base, 0o755)
    files = {
        os.path.join(base, "app", "logs", "api.log"): b"api line\n" * 300,
        os.path.join(base, "app", "logs", "worker.log"): b"worker line\n" * 40,
        os.path.join(base, "tmp", "logs", "node-a", "task.log"): b"task on a\n" * 7,
        os.path.join(base, "tmp", "logs", "node-b", "task.log"): b"task on b\n" * 9,
    }
    for path, data in files.items():
        put(path, data)
    try:
        yield base, files
    finally:
        subprocess.run(["rm", "-rf", base], check=False)


def globs(base):
    return [os.path.join(base, "app", "logs", "*.log"), os.path.join(base, "tmp", "logs", "*", "*.log")]


def stored(dest):
    """``{path below dest: (inode, mtime_ns, bytes)}`` of every file in a directory store."""
    found = {}
    for dirpath, _dirs, names in os.walk(dest):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, dest)] = (st.st_ino, st.st_mtime_ns, handle.read())
    return found


def key(path, node="node-1"):
    return "ray/%s/shipped/%s" % (node, path.lstrip("/"))


def metrics(tmp_path):
    text = (tmp_path / "metrics" / "rayops_ray_ship.prom").read_text()
    promtool_check(text)
    return samples(text)


def by_status(result):
    found = {}
    for entry in result["files"]:
        found.setdefault(entry["status"], []).append(entry["path"])
    return {status: sorted(paths) for status, paths in found.items()}


def test_a_node_without_ray_ships_new_and_changed_files_keeping_their_paths(shared, tmp_path):
    base, files = shared
    dest = tmp_path / "dest"
    dest.mkdir()
    config = write_config(tmp_path, ship_paths=globs(base), ship_dest=str(dest))

    proc = ship(config, "--json", "ship")
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc)
    assert (result["decision"], result["reason"], result["node_role"], result["skipped_by"]) == (
        "ship", "no Ray here: runs as standalone", "none", None)
    assert by_status(result) == {"shipped": sorted(files)}
    assert (result["shipped"], result["bytes_shipped"], result["failed"]) == (4, sum(map(len, files.values())), 0)
    first = stored(str(dest))
    assert {name: data for name, (_ino, _mtime, data) in first.items()} == {key(p): d for p, d in files.items()}
    for entry in result["files"]:
        assert entry["key"] == os.path.join(str(dest), key(entry["path"]))
        assert entry["sha256"] == hashlib.sha256(files[entry["path"]]).hexdigest()
    state = os.stat(str(tmp_path / "state" / "ship-state.json"))
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (0, 0o600)
    assert stat.S_IMODE(os.stat(str(tmp_path / "state")).st_mode) == 0o700
    found = metrics(tmp_path)
    assert series(found, "rayops_ray_ship_files_shipped") == 4
    assert series(found, "rayops_ray_ship_bytes_shipped") == sum(map(len, files.values()))
    assert series(found, "rayops_ray_ship_files_failed") == 0
    assert {series(found, "rayops_ray_ship_skipped", reason=reason)
            for reason in ("RAY_DISABLE_HDFS_COPY", "ship_disabled", "worker")} == {0}
    log = (tmp_path / "ray-maintenance.log").read_text()
    assert "ship decision: ship: no Ray here: runs as standalone" in log and "ship exit 0 in " in log

    # Nothing changed: nothing uploaded (each upload renames a new file into place: a new inode).
    proc = ship(config, "ship")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ship: no Ray here: runs as standalone"
    assert lines[1].split() == ["status", "bytes", "path", "to", "/", "why"]
    assert sum(1 for line in lines if line.startswith("unchanged ")) == 4
    assert lines[-1].startswith("shipped 0 file(s) (0 B) to %s, 4 unchanged, 0 not shipped, 0 failed" % dest)
    assert stored(str(dest)) == first
    assert series(metrics(tmp_path), "rayops_ray_ship_files_shipped") == 0

    # One log grows, one is touched with the same bytes, one is new: only the grown and the new one go.
    api, worker = sorted(files)[:2]
    with open(api, "ab") as handle:
        handle.write(b"one more line\n")
    os.utime(worker, (time.time() + 5, time.time() + 5))
    new = put(os.path.join(base, "tmp", "logs", "node-c", "task.log"), b"task on c\n")
    dry = result_of(ship(config, "--json", "ship", "--dry-run"))
    assert by_status(dry)["would_ship"] == sorted([api, new]) and dry["dry_run"] is True
    assert stored(str(dest)) == first  # a dry run uploads nothing
    proc = ship(config, "--json", "ship")
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc)
    assert by_status(result) == {"shipped": sorted([api, new]), "unchanged": sorted(set(files) - {api})}
    after = stored(str(dest))
    with open(api, "rb") as handle:
        assert after[key(api)][2] == handle.read()
    assert after[key(new)][2] == b"task on c\n"
    assert {name: value for name, value in after.items() if name not in (key(api), key(new))} == \
        {name: value for name, value in first.items() if name != key(api)}
    assert after[key(api)][0] != first[key(api)][0]  # uploaded anew


def test_links_fifos_devices_and_hard_links_are_listed_and_never_read(shared, tmp_path):
    base, files = shared
    logs = os.path.join(base, "app", "logs")
    hidden = tempfile.mkdtemp(prefix="rayops-ship-secret-", dir="/tmp")  # root's, 0700
    try:
        secret = put(os.path.join(hidden, "secret.log"), SECRET)
        os.chmod(secret, 0o600)
        os.symlink("/etc/shadow", os.path.join(logs, "shadow.log"))
        os.symlink(secret, os.path.join(logs, "secret.log"))
        os.link(secret, os.path.join(logs, "hard.log"))
        os.mkfifo(os.path.join(logs, "pipe.log"))
        os.mknod(os.path.join(logs, "null.log"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        put(os.path.join(hidden, "evil", "task.log"), SECRET)
        os.symlink(os.path.join(hidden, "evil"), os.path.join(base, "tmp", "logs", "evil"))  # a dir component
        dest = tmp_path / "dest"
        dest.mkdir()
        config = write_config(tmp_path, ship_paths=globs(base), ship_dest=str(dest))

        proc = ship(config, "--json", "ship", timeout=60)  # a FIFO never makes it wait for a writer
        assert proc.returncode == 0 and proc.seconds < 30, proc.stderr
        result = result_of(proc)
        assert by_status(result)["shipped"] == sorted(files)
        refused = {os.path.basename(entry["path"]) if "evil" not in entry["path"] else "evil": entry["reason"]
                   for entry in result["files"] if entry["status"] == "not_shipped"}
        assert refused == {
            "shadow.log": "a symlink, not a regular file: never read",
            "secret.log": "a symlink, not a regular file: never read",
            "hard.log": "a file with 2 hard links (it may be another file's, such as /etc/shadow): never read",
            "pipe.log": "a FIFO, not a regular file: never read",
            "null.log": "a device, not a regular file: never read",
            "evil": "a symlink on the way (%s): never followed" % os.path.join(base, "tmp", "logs", "evil"),
        }
        assert result["not_shipped"] == 6 and result["failed"] == 0
        with open("/etc/shadow", "rb") as handle:
            shadow = handle.read()
        for _name, (_ino, _mtime, data) in stored(str(dest)).items():
            assert SECRET not in data and (not shadow.strip() or shadow not in data)
        assert sorted(stored(str(dest))) == sorted(key(path) for path in files)
        assert series(metrics(tmp_path), "rayops_ray_ship_files_not_shipped") == 6
        lines = ship(config, "ship").stdout.splitlines()  # the table says each one and why
        row, = [line for line in lines if os.path.join(logs, "pipe.log") in line]
        assert row.split(None, 4) == ["not", "shipped", "-", os.path.join(logs, "pipe.log"),
                                      "a FIFO, not a regular file: never read"]
    finally:
        subprocess.run(["rm", "-rf", hidden], check=False)


def test_check_config_names_a_bad_glob_and_ship_needs_its_keys(tmp_path):
    config = write_config(tmp_path, ship_paths=["app/logs/*.log"], ship_dest=str(tmp_path))
    proc = ship(config, "check-config", alone=False)
    assert proc.returncode == 3
    assert proc.stderr == ("ray-maintenance: config %s: ship_paths ['app/logs/*.log']: 'app/logs/*.log' is not an "
                           "absolute path glob; give the full path of the logs, for example /app/logs/*.log\n" % config)
    config = write_config(tmp_path, ship_paths=["/app/../etc/*"])
    assert "has a . or .. component" in ship(config, "check-config", alone=False).stderr
    config = write_config(tmp_path, ship_dest="ftp://somewhere/logs")
    assert "ship_dest 'ftp://somewhere/logs' is not an absolute directory, s3://BUCKET/PREFIX or hdfs://..." in \
        ship(config, "check-config", alone=False).stderr
    config = write_config(tmp_path, ship_paths=["/app/logs/*.log"], ship_dest="s3://ray-logs/shipped",
                          ship_disabled=True)
    proc = ship(config, "check-config", alone=False)
    assert (proc.returncode, proc.stdout) == (0, "config %s: ok\n" % config), proc.stderr
    config = write_config(tmp_path, ship_paths=["/app/logs/*.log"])
    proc = ship(config, "ship", alone=False)
    assert (proc.returncode, proc.stderr) == (3, 'ray-maintenance: nothing to ship: ship_dest is not set; give it in '
                                                 'the config, for example "ship_dest": "hdfs://namenode:8020/logs"\n')
    config = write_config(tmp_path, ship_paths=["/app/logs/*.log"], ship_dest=str(tmp_path / "missing"))
    proc = ship(config, "ship")
    assert proc.returncode == 3 and "ship_dest '%s' is not a directory on this node" % (tmp_path / "missing") in \
        proc.stderr

    # Cron's ship with a config it cannot start with says so where monitoring looks, until a run starts.
    status = tmp_path / "metrics" / "rayops_ray_maintenance.prom"
    config = write_config(tmp_path, ship_paths=["logs/*.log"], ship_dest=str(tmp_path))
    assert ship(config, "--quiet", "ship", alone=False).returncode == 3
    text = status.read_text()
    promtool_check(text)
    assert series(samples(text), "rayops_ray_maintenance_start_error", command="ship", reason="config") == 1
    config = write_config(tmp_path, ship_paths=["/nothing-here/*.log"], ship_dest=str(tmp_path))
    proc = ship(config, "--quiet", "ship")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert not status.exists()


def test_disabled_by_the_environment_or_the_config_ships_nothing(shared, tmp_path):
    base, files = shared
    dest = tmp_path / "dest"
    dest.mkdir()
    config = write_config(tmp_path, ship_paths=globs(base), ship_dest=str(dest))
    for value in ("true", "TRUE", "1", "Yes"):
        proc = ship(config, "--json", "ship", env=cli_env(RAY_DISABLE_HDFS_COPY=value))
        assert proc.returncode == 0, proc.stderr
        result = result_of(proc)
        assert (result["decision"], result["reason"], result["skipped_by"]) == (
            "skip", "disabled by RAY_DISABLE_HDFS_COPY", "RAY_DISABLE_HDFS_COPY")
        assert result["files"] == [] and list(dest.iterdir()) == []
    found = metrics(tmp_path)
    assert series(found, "rayops_ray_ship_skipped", reason="RAY_DISABLE_HDFS_COPY") == 1
    assert series(found, "rayops_ray_ship_skipped", reason="worker") == 0
    assert "ship decision: skip: disabled by RAY_DISABLE_HDFS_COPY" in (tmp_path / "ray-maintenance.log").read_text()

    config = write_config(tmp_path, ship_paths=globs(base), ship_dest=str(dest), ship_disabled=True)
    proc = ship(config, "ship")
    assert (proc.returncode, proc.stdout) == (0, "skipped: disabled by ship_disabled\n"), proc.stderr
    assert series(metrics(tmp_path), "rayops_ray_ship_skipped", reason="ship_disabled") == 1
    assert list(dest.iterdir()) == []

    config = write_config(tmp_path, ship_paths=globs(base), ship_dest=str(dest))
    proc = ship(config, "--json", "ship", env=cli_env(RAY_DISABLE_HDFS_COPY="false"))
    assert result_of(proc)["shipped"] == 4


def test_one_run_at_a_time(shared, tmp_path):
    base, _files = shared
    dest = tmp_path / "dest"
    dest.mkdir()
    config = write_config(tmp_path, ship_paths=globs(base), ship_dest=str(dest))
    (tmp_path / "state").mkdir(mode=0o700)
    lock = str(tmp_path / "state" / "ship-state.json.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another run ships now
        proc = ship(config, "--json", "ship")
        assert proc.returncode == 1 and result_of(proc)["status"] == "locked"
        assert proc.stderr == "ray-maintenance: ship locked out: another ship run holds %s\n" % lock
        assert list(dest.iterdir()) == [] and not (tmp_path / "state" / "ship-state.json").exists()
    finally:
        os.close(fd)
    assert ship(config, "ship").returncode == 0


def test_the_head_node_ships_and_RAY_DISABLE_HDFS_COPY_stops_it(ray_head, shared, tmp_path):
    base, files = shared
    dest = tmp_path / "dest"
    dest.mkdir()
    ray_head.start()
    config = write_config(tmp_path, ship_paths=globs(base), ship_dest=str(dest))
    proc = ship(config, "--json", "ship", env=cli_env(RAY_DISABLE_HDFS_COPY="true"), alone=False)
    result = result_of(proc)
    assert (proc.returncode, result["decision"], result["reason"]) == (0, "skip", "disabled by RAY_DISABLE_HDFS_COPY")
    assert list(dest.iterdir()) == []

    proc = ship(config, "--json", "ship", alone=False)  # the host's /proc: this head (and any other test's Ray)
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc)
    assert (result["decision"], result["reason"], result["node_role"]) == ("ship", "the Ray head node: it ships",
                                                                           "head")
    assert result["untrusted_processes"] == []
    assert by_status(result) == {"shipped": sorted(files)}
    assert sorted(stored(str(dest))) == sorted(key(path) for path in files)


RAY_START_JOINING = """
import sys, types
import ray._private.ray_constants as constants
import ray.scripts.scripts as scripts
class Joining(types.ModuleType):
    def __getattr__(self, name):
        return getattr(constants, name)
joining = Joining("ray_constants")
joining.ENABLE_RAY_CLUSTER = True
scripts.ray_constants = joining
sys.argv[0] = "ray"
sys.exit(scripts.main())
"""
"""``ray start`` that may add a node although RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (RayHead's env): that setting keeps
every address on 127.0.0.1 (else Ray swaps it for the machine's interface address), and ``ray start`` refuses to add
a node under it. Only its own check is told otherwise; everything else, in it and in the node's processes, keeps
the setting."""


def worker_script(head, temp_dir, config):
    """A Ray worker node joining ``head`` (its own temp dir), then the CLI; the CLI's exit code is the script's."""
    ports = free_ports(len(WORKER_PORTS), taken={head.port})
    start = [head.python, "-c", RAY_START_JOINING, "start", "--address=127.0.0.1:%d" % head.port,
             "--node-ip-address=127.0.0.1", "--temp-dir=%s" % temp_dir, "--num-cpus=1",
             "--object-store-memory=78643200", "--disable-usage-stats"]
    start += ["--%s=%d" % pair for pair in zip(WORKER_PORTS, ports)]
    log = shlex.quote(os.path.join(temp_dir, "ray-start.log"))
    return ("%s >%s 2>&1 || { cat %s >&2; exit 99; }\nexec %s\n" % (
        shlex.join(start), log, log, shlex.join([sys.executable, "-c", CLI, "--config", str(config), "--json", "ship"])))


def worker_processes(temp_dir):
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp_dir in arg for arg in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_a_ray_worker_node_skips(ray_head, shared, tmp_path):
    base, _files = shared
    dest = tmp_path / "dest"
    dest.mkdir()
    ray_head.start()
    temp_dir = tempfile.mkdtemp(prefix="rw", dir="/tmp")  # short: Ray's unix socket paths
    config = write_config(tmp_path, ship_paths=globs(base), ship_dest=str(dest))
    env = dict(ray_head.env, **{key: value for key, value in cli_env().items() if key == "PYTHONPATH"})
    # The worker and the CLI in one PID namespace: its init is the shell; when the shell ends, the kernel kills
    # every process left in it (the worker's raylet and the rest), and --kill-child ends the shell with unshare.
    node = subprocess.Popen(list(ALONE) + ["sh", "-c", worker_script(ray_head, temp_dir, config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = node.communicate(timeout=240)
        assert node.returncode == 0, err + out
        result = json.loads(out)
        assert (result["decision"], result["reason"], result["node_role"], result["skipped_by"]) == (
            "skip", "a Ray worker node: only the head ships", "worker", "worker"), result
        assert result["files"] == [] and list(dest.iterdir()) == []
        assert series(metrics(tmp_path), "rayops_ray_ship_skipped", reason="worker") == 1
        assert "ship decision: skip: a Ray worker node: only the head ships" in \
            (tmp_path / "ray-maintenance.log").read_text()
        with open(os.path.join(temp_dir, "ray-start.log")) as handle:
            started = re.sub(r"\x1b\[[0-9;]*m", "", handle.read())
        assert "Ray runtime started" in started and "Local node IP: 127.0.0.1\n" in started  # loopback only
    finally:
        try:
            os.killpg(node.pid, signal.SIGKILL)  # the unshare process group, by its leader's pid
        except ProcessLookupError:
            pass
        node.wait(timeout=30)
        deadline = time.time() + 30
        while worker_processes(temp_dir) and time.time() < deadline:
            time.sleep(0.2)
        left = worker_processes(temp_dir)
        subprocess.run(["rm", "-rf", temp_dir], check=False)
        assert left == [], "the worker node outlived its namespace: %s" % left


def test_ships_to_s3_and_uploads_only_what_changed(s3_server, shared, tmp_path):
    base, files = shared
    bucket = s3_server.bucket()
    config = write_config(tmp_path, ship_paths=globs(base), ship_dest="s3://%s/shipped-logs" % bucket,
                          archive_endpoint_url=s3_server.endpoint_url)
    env = cli_env(**s3_server.env)
    proc = ship(config, "--json", "ship", env=env)
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc)
    assert by_status(result) == {"shipped": sorted(files)} and result["dest"] == "s3://%s/shipped-logs" % bucket
    assert {entry["key"] for entry in result["files"]} == {
        "s3://%s/shipped-logs/%s" % (bucket, key(path)) for path in files}
    client = s3_server.client()

    def objects():
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {item["Key"]: (item["LastModified"], item["ETag"]) for item in listed}

    first = objects()
    assert sorted(first) == sorted("shipped-logs/" + key(path) for path in files)
    for path, data in files.items():
        assert client.get_object(Bucket=bucket, Key="shipped-logs/" + key(path))["Body"].read() == data

    time.sleep(1.1)  # S3 times are whole seconds: an upload now would show
    result = result_of(ship(config, "--json", "ship", env=env))
    assert by_status(result) == {"unchanged": sorted(files)} and objects() == first

    changed = sorted(files)[0]
    with open(changed, "ab") as handle:
        handle.write(b"appended\n")
    result = result_of(ship(config, "--json", "ship", env=env))
    assert by_status(result) == {"shipped": [changed], "unchanged": sorted(set(files) - {changed})}
    now = objects()
    assert now["shipped-logs/" + key(changed)] != first["shipped-logs/" + key(changed)]
    assert {k: v for k, v in now.items() if k != "shipped-logs/" + key(changed)} == \
        {k: v for k, v in first.items() if k != "shipped-logs/" + key(changed)}
    with open(changed, "rb") as handle:
        assert client.get_object(Bucket=bucket, Key="shipped-logs/" + key(changed))["Body"].read() == handle.read()


def test_ships_through_hdfs_dfs_only_what_changed_and_a_failure_ships_again(hdfs_standin, shared, tmp_path):
    base, files = shared
    config = write_config(tmp_path, ship_paths=globs(base), ship_dest="hdfs://namenode:8020/logs")
    proc = ship(config, "--json", "ship", env=cli_env(**hdfs_standin.env))  # its hdfs on PATH, root, log
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc)
    assert by_status(result) == {"shipped": sorted(files)}
    assert {entry["key"] for entry in result["files"]} == {"hdfs://namenode:8020/logs/" + key(path) for path in files}
    assert len(hdfs_standin.puts()) == 4
    for path, data in files.items():
        assert hdfs_standin.read("hdfs://namenode:8020/logs/" + key(path)) == data

    result = result_of(ship(config, "--json", "ship", env=cli_env(**hdfs_standin.env)))
    assert by_status(result) == {"unchanged": sorted(files)}
    assert len(hdfs_standin.puts()) == 4  # nothing uploaded again

    changed = sorted(files)[-1]
    with open(changed, "ab") as handle:
        handle.write(b"appended\n")
    result = result_of(ship(config, "--json", "ship", env=cli_env(**hdfs_standin.env)))
    assert by_status(result) == {"shipped": [changed], "unchanged": sorted(set(files) - {changed})}
    assert len(hdfs_standin.puts()) == 5
    with open(changed, "rb") as handle:
        assert hdfs_standin.read("hdfs://namenode:8020/logs/" + key(changed)) == handle.read()

    # The NameNode refuses every write: each changed file fails and keeps its old state; after 3 failures in a row
    # the store is taken as down and the rest is not tried. The next run ships them all.
    for path in files:
        with open(path, "ab") as handle:
            handle.write(b"more\n")
    hdfs_standin.fail_puts()
    proc = ship(config, "--json", "ship", env=cli_env(**hdfs_standin.env))
    assert proc.returncode == 1
    result = result_of(proc)
    assert by_status(result) == {"failed": sorted(files)} and result["failed"] == 4
    reasons = [entry["reason"] for entry in result["files"]]
    assert sum(1 for reason in reasons if reason.startswith("the store failed: hdfs dfs -put ")
               and "Permission denied" in reason) == 3
    assert reasons[-1] == "not tried: the store failed 3 times in a row (the last on %s)" % sorted(files)[2]
    assert len(hdfs_standin.puts()) == 5 + 3
    assert proc.stderr.count("ray-maintenance: ship ") == 4
    assert series(metrics(tmp_path), "rayops_ray_ship_files_failed") == 4
    proc = ship(config, "--json", "ship", env=cli_env(**dict(hdfs_standin.env, HDFS_STANDIN_FAIL_PUT="0")))
    assert proc.returncode == 0, proc.stderr
    assert by_status(result_of(proc)) == {"shipped": sorted(files)}
    for path in files:
        with open(path, "rb") as handle:
            assert hdfs_standin.read("hdfs://namenode:8020/logs/" + key(path)) == handle.read()
