# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Monitoring end to end, every component real: ray-maintenance writes its textfiles on the node → the node's own
node_exporter (Debian's prometheus-node-exporter, a systemd service, textfile collector on the role's metrics dir)
→ Prometheus (Debian's, started here on loopback) evaluating the rules the role rendered → Alertmanager (Debian's,
on loopback) → a webhook receiver run by this test.

molecule/systemd/verify.yml runs this file on the controller after it proved the guard, on the node molecule booted
and the role converged. It passes, in the environment:
- RAYOPS_NODE: the node's container; Prometheus scrapes its node_exporter on the container's own address (a
  container this test run started, over Docker's bridge: nothing else is contacted);
- RAYOPS_RULES_DIR: where the role's `prometheus` entry point rendered the rules, with test-sized `for:` and windows;
- RAYOPS_NEVER_SCRAPED: an instance the rules expect (ray_cleanup_alert_expected_instances) that no scrape config
  names: a node that never reported;
- RAYOPS_DASHBOARD: the dashboard the role's `grafana` entry point provisioned; every query of every panel must
  return series from this Prometheus.

Real conditions drive the alerts: a writer fills the node's 64 MiB tmpfs, a foreign file the textfile collector
cannot read, a config that is not JSON, node_exporter stopped. The receiver must get each alert firing, then resolved
once the condition is cleared. `promtool test rules` (tests/system/test_alert_rules.py) keeps the boundaries.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
import build_grafana_dashboard  # noqa: E402 (the generator of the dashboard reads its queries back)

PROMETHEUS = "/usr/local/bin/prometheus"  # scripts/setup.sh takes both out of Debian's packages
ALERTMANAGER = "/usr/local/bin/prometheus-alertmanager"
CLI = "/usr/local/bin/ray-maintenance"
CONFIG = "/etc/rayops/ray-maintenance.json"
METRICS_DIR = "/var/lib/prometheus/node-exporter"
TMP = "/srv/raytmp"  # the node's tmp dir for the role: a 64 MiB tmpfs (molecule.yml)
FILLER = TMP + "/dataset.bin"  # root's, no litter pattern: what the guard may not take
FOREIGN = METRICS_DIR + "/foreign.prom"
NEVER_SCRAPED = os.environ.get("RAYOPS_NEVER_SCRAPED", "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_exec(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``command`` on the node (its container) and return what it did."""
    args = ["docker", "exec", os.environ["RAYOPS_NODE"]] + list(command)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert not check or proc.returncode == 0, "%s: exit %d\n%s%s" % (
        " ".join(command), proc.returncode, proc.stdout, proc.stderr)
    return proc


def wait_for(what: str, predicate, timeout: float, explain) -> None:
    """Poll ``predicate`` until it is true; fail with ``explain()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail("%s: not within %d s\n%s" % (what, timeout, explain()))


class Receiver:
    """Alertmanager's webhook receiver: keeps every alert of every notification it is sent."""

    def __init__(self) -> None:
        self.alerts: list = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.alerts.extend(body["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def got(self, status: str, name: str, **labels: str) -> list:
        """The alerts named ``name`` with ``status`` (firing, resolved) and these labels received so far."""
        with self.lock:
            return [alert for alert in self.alerts if alert["status"] == status and alert["labels"]["alertname"] == name
                    and all(alert["labels"].get(key) == value for key, value in labels.items())]

    def summary(self) -> str:
        with self.lock:
            return "\n".join(sorted({"%s %s %s" % (alert["status"], alert["labels"]["alertname"],
                                                   json.dumps(alert["labels"], sort_keys=True))
                                     for alert in self.alerts})) or "(nothing received)"


class Server:
    """A Prometheus or Alertmanager this test started: its process (killed by PID) and its HTTP API on loopback."""

    def __init__(self, argv: list, port: int, log_path: str) -> None:
        self.base = "http://127.0.0.1:%d" % port
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("%s ready" % os.path.basename(argv[0]), self.ready, 30, self.log)

    def ready(self) -> bool:
        assert self.proc.poll() is None, "%s exited:\n%s" % (self.base, self.log())
        try:
            with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def get(self, path: str, **params) -> dict:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def log(self) -> str:
        with open(self.log_path) as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def work():
    path = tempfile.mkdtemp(prefix="rayops-monitoring-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def node_instance() -> str:
    proc = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                           os.environ["RAYOPS_NODE"]], capture_output=True, text=True, check=True)
    return "%s:9100" % proc.stdout.split()[0]


@pytest.fixture(scope="module")
def receiver():
    found = Receiver()
    yield found
    found.server.shutdown()


@pytest.fixture(scope="module")
def alertmanager(work, receiver):
    config = os.path.join(work, "alertmanager.yml")
    with open(config, "w") as handle:
        yaml.safe_dump({
            "route": {"receiver": "test", "group_by": ["alertname", "instance", "severity"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "test", "webhook_configs": [{"url": receiver.url, "send_resolved": True}]}],
        }, handle)
    port = free_port()
    server = Server([ALERTMANAGER, "--config.file=" + config, "--storage.path=" + os.path.join(work, "am"),
                     "--web.listen-address=127.0.0.1:%d" % port, "--cluster.listen-address="],  # no gossip port
                    port, os.path.join(work, "alertmanager.log"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prometheus(work, alertmanager, node_instance):
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as handle:
        yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [os.path.join(os.environ["RAYOPS_RULES_DIR"], "*.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.base[len("http://"):]]}]}]},
            "scrape_configs": [{"job_name": "node", "static_configs": [{"targets": [node_instance]}]}],
        }, handle)
    port = free_port()
    server = Server([PROMETHEUS, "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(work, "tsdb"),
                     "--web.listen-address=127.0.0.1:%d" % port, "--rules.alert.resend-delay=1s"],
                    port, os.path.join(work, "prometheus.log"))
    yield server
    server.stop()


def firing_in_prometheus(prometheus: Server) -> set:
    return {(alert["labels"]["alertname"], alert["labels"].get("instance", ""), alert["labels"]["severity"])
            for alert in prometheus.get("/api/v1/alerts")["data"]["alerts"] if alert["state"] == "firing"}


def has_series(prometheus: Server, expr: str) -> bool:
    return bool(prometheus.get("/api/v1/query", query=expr)["data"]["result"])


def explain(prometheus: Server, receiver: Receiver):
    return lambda: "received:\n%s\nPrometheus alerts:\n%s\nPrometheus log:\n%s" % (
        receiver.summary(), json.dumps(prometheus.get("/api/v1/alerts")["data"]["alerts"], indent=1)[-6000:],
        prometheus.log())


def cron_monitor() -> subprocess.CompletedProcess:
    """Run the node's `monitor` as its cron job does (the role's line in /etc/cron.d, with its --metrics-dir)."""
    lines = node_exec("cat", "/etc/cron.d/rayops-ray-maintenance").stdout.splitlines()
    commands = [line.split(None, 6)[6] for line in lines if line.strip() and not line.startswith("#")
                and line.split()[-2:] == ["monitor", "--quiet"]]
    assert len(commands) == 1, lines
    return node_exec("sh", "-c", commands[0], check=False)


def df_avail_mib() -> int:
    return int(node_exec("df", "--output=avail", "-B1M", TMP).stdout.split()[-1])


@pytest.fixture(scope="module")
def started(prometheus, receiver, node_instance):
    """The node measured (usage, cleanup and diagnose metrics written, as cron would) and scraped: the test's t0."""
    t0 = time.time()
    assert cron_monitor().returncode == 0
    node_exec(CLI, "cleanup")
    node_exec(CLI, "diagnose", "--state", "/var/lib/rayops/diagnose-state.json")
    wait_for("the node's metrics in Prometheus",
             lambda: has_series(prometheus, 'rayops_ray_usage_timestamp_seconds{instance="%s"}' % node_instance)
             and has_series(prometheus, 'rayops_ray_pressure_watch_timestamp_seconds{instance="%s"}' % node_instance),
             30, explain(prometheus, receiver))
    return t0


def test_a_healthy_node_raises_nothing_but_the_node_that_never_reported(started, prometheus, receiver):
    # A few evaluations with every `for:` (3-5 s) passed.
    time.sleep(8)
    assert firing_in_prometheus(prometheus) == {("RayMaintenanceMissing", NEVER_SCRAPED, "warning")}
    wait_for("the never-scraped node's page",
             lambda: receiver.got("firing", "RayMaintenanceMissing", instance=NEVER_SCRAPED),
             15, explain(prometheus, receiver))
    alert = receiver.got("firing", "RayMaintenanceMissing", instance=NEVER_SCRAPED)[0]
    assert alert["annotations"]["summary"] == "No Ray disk metrics from %s" % NEVER_SCRAPED
    assert ": Prometheus does not scrape it;" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"].endswith("/docs/runbook.md#raymaintenancemissing")


def test_a_filling_disk_and_a_foreign_textfile_page_and_resolve(started, prometheus, receiver, node_instance):
    node_exec("sh", "-c", "printf 'this is not a metric\\n' > %s" % FOREIGN)
    try:
        fill_and_clear(prometheus, receiver, node_instance)
    finally:
        node_exec("rm", "-f", FILLER, FOREIGN)


def fill_and_clear(prometheus: Server, receiver: Receiver, node_instance: str) -> None:
    """Fill the tmp dir (a foreign textfile lies in the metrics dir meanwhile), then free it."""
    # 1 MiB every 0.25 s until 2 MiB are left: the forecast sees the disk full within seconds.
    writer = ("while [ \"$(df --output=avail -B1M %s | tail -n 1)\" -gt 2 ]; do "
              "head -c 1M /dev/zero >> %s || break; sleep 0.25; done" % (TMP, FILLER))
    node_exec("sh", "-c", writer)
    assert df_avail_mib() <= 2
    assert cron_monitor().returncode == 0  # the tmp dir's size as cron's next monitor would see it
    diagnose = node_exec(CLI, "diagnose", "--state", "/var/lib/rayops/diagnose-state.json", check=False)
    assert diagnose.returncode == 1 and "disk_pressure on host" in diagnose.stdout, diagnose.stdout  # a warning
    disk = {"instance": node_instance, "mountpoint": TMP}
    expected = [("RayNodeDiskFillingUp", dict(disk, severity="warning")),
                ("RayNodeDiskFillingUp", dict(disk, severity="critical")),
                ("RayWorkerDiskUsageHigh", disk), ("RayWorkerDiskCritical", disk),
                ("RayWorkerLargeTmpDirectory", {"instance": node_instance, "target": "host"}),
                ("RayWorkerCriticalTmpDirectory", {"instance": node_instance, "target": "host"}),
                ("RayDiskPressureNotRelieved", {"instance": node_instance}),
                ("RayMaintenanceTextfileError", {"instance": node_instance})]
    wait_for("every alert of a full disk and a foreign textfile at the receiver",
             lambda: all(receiver.got("firing", name, **labels) for name, labels in expected),
             60, explain(prometheus, receiver))

    held = receiver.got("firing", "RayDiskPressureNotRelieved", instance=node_instance)[-1]["annotations"]
    assert held["summary"].startswith("Disk pressure on %s is not relieved by the pressure guard: held by root (" %
                                      node_instance), held
    assert "the largest entry is %s of root (" % FILLER in held["description"], held
    filling = receiver.got("firing", "RayNodeDiskFillingUp", severity="critical")[0]["annotations"]
    assert filling["summary"].startswith("Disk %s on %s runs out of bytes" % (TMP, node_instance)), filling
    assert "% of its bytes free (less than 20%)" in filling["description"], filling

    # The writer stopped: once the forecast's window has passed, the disk no longer fills, and the forecast resolves
    # while the disk is still full.
    wait_for("the forecast resolving once the disk stopped filling",
             lambda: receiver.got("resolved", "RayNodeDiskFillingUp", severity="warning", **disk)
             and receiver.got("resolved", "RayNodeDiskFillingUp", severity="critical", **disk),
             60, explain(prometheus, receiver))
    assert ("RayWorkerDiskCritical", node_instance, "critical") in firing_in_prometheus(prometheus)

    node_exec("rm", "-f", FILLER, FOREIGN)
    assert cron_monitor().returncode == 0
    wait_for("every alert of the full disk and the foreign file resolved",
             lambda: all(receiver.got("resolved", name, **labels) for name, labels in expected[2:]),
             60, explain(prometheus, receiver))


def test_a_config_error_pages_and_resolves(started, prometheus, receiver, node_instance):
    node_exec("cp", CONFIG, CONFIG + ".good")
    node_exec("sh", "-c", "printf '{\"tmp_dir\": ' > %s" % CONFIG)
    try:
        broken = cron_monitor()
        assert broken.returncode == 3 and "config" in broken.stderr, broken.stderr
        wait_for("RayMaintenanceCannotStart at the receiver",
                 lambda: receiver.got("firing", "RayMaintenanceCannotStart", instance=node_instance,
                                      command="monitor", reason="config"),
                 30, explain(prometheus, receiver))
    finally:
        node_exec("mv", CONFIG + ".good", CONFIG)
    assert cron_monitor().returncode == 0
    wait_for("RayMaintenanceCannotStart resolved",
             lambda: receiver.got("resolved", "RayMaintenanceCannotStart", instance=node_instance),
             30, explain(prometheus, receiver))


def test_every_dashboard_query_returns_series(started, prometheus):
    """After the conditions above (a disk filled and freed, the guard's reclaims, diagnose's findings), every query
    the shipped dashboard holds returns series over the test's time range."""
    queries = build_grafana_dashboard.dashboard_queries(os.environ["RAYOPS_DASHBOARD"])
    assert len(queries) >= 10, queries
    empty = []
    for title, expr in queries:
        query = expr.replace("$node", ".+").replace("$__rate_interval", "1m")
        result = prometheus.get("/api/v1/query_range", query=query, start=started, end=time.time(), step="1s")
        assert result["status"] == "success", (title, query, result)
        if not result["data"]["result"]:
            empty.append("%s: %s" % (title, query))
    assert not empty, "panel queries without series:\n" + "\n".join(empty)


def test_a_node_that_stops_reporting_pages_and_resolves(started, prometheus, receiver, node_instance):
    node_exec("systemctl", "stop", "prometheus-node-exporter")
    try:
        wait_for("RayMaintenanceMissing for the node whose node_exporter stopped",
                 lambda: receiver.got("firing", "RayMaintenanceMissing", instance=node_instance),
                 30, explain(prometheus, receiver))
    finally:
        node_exec("systemctl", "start", "prometheus-node-exporter")
    missing = receiver.got("firing", "RayMaintenanceMissing", instance=node_instance)[0]["annotations"]
    assert ": its node_exporter does not answer (up is 0);" in missing["description"], missing
    wait_for("RayMaintenanceMissing resolved once node_exporter answers again",
             lambda: receiver.got("resolved", "RayMaintenanceMissing", instance=node_instance),
             30, explain(prometheus, receiver))
    time.sleep(5)
    assert firing_in_prometheus(prometheus) == {("RayMaintenanceMissing", NEVER_SCRAPED, "warning")}
