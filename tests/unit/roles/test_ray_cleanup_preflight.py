# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role refuses bad settings before it writes anything, naming the bad one first, with its value and the fix.

Settings that reach a cron line, logrotate's config or a path the role creates are checked by preflight, against
the form that file allows. Settings that go only into the CLI's config are checked by the CLI itself
(``ray-maintenance check-config``, the rules every run applies): in a dry run against the config and CLI a real
run would write, in a real run as the config file's ``validate``. Either way the message starts with the role's
variable.

One ``ansible-playbook --check`` run of the whole role (its ``main`` entry point) on localhost, one inventory host
per bad setting: each host must fail in the argument specs, preflight or the CLI's check, with a message that names
the setting, and run no task of ``configure.yml``. A host with unusual but valid settings runs the role through, so
the checks are not simply too strict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)

LOGROTATE_SCRIPT = "\n    postrotate\n    touch /tmp/pwned\n    endscript"
CRON_LINE = "\n* * * * * root touch /tmp/pwned"

# (setting, bad value); the id of each case is its inventory host name. Preflight refuses these.
BAD = [
    ("ray_cleanup_logrotate_maxsize", "10M" + LOGROTATE_SCRIPT),
    ("ray_cleanup_logrotate_maxsize", "10M\n"),  # `$` would match before the final newline
    ("ray_cleanup_logrotate_maxsize", "10 M"),
    ("ray_cleanup_logrotate_maxsize", "10MB"),
    ("ray_cleanup_logrotate_frequency", "daily" + LOGROTATE_SCRIPT),
    ("ray_cleanup_logrotate_rotate", "3" + LOGROTATE_SCRIPT),
    ("ray_cleanup_logrotate_rotate", "3\n"),  # int("3\n") is 3: the argument specs let it through
    ("ray_cleanup_logrotate_cli_rotate", "8 postrotate"),
    ("ray_cleanup_logrotate_ray_logs", "yes please"),
    ("ray_cleanup_logrotate_ray_log_dirs", ["/tmp/ray/session_2*/logs\n{" + LOGROTATE_SCRIPT + "\n}"]),
    ("ray_cleanup_logrotate_ray_log_dirs", ["/tmp/ray/session_2*/logs /etc/shadow"]),
    ("ray_cleanup_logrotate_ray_log_dirs", ["tmp/ray/session_2*/logs"]),
    ("ray_cleanup_logrotate_ray_log_dirs", ["/tmp/ray/{a,b}/logs"]),
    ("ray_cleanup_logrotate_ray_log_dirs", "/tmp/ray/session_2*/logs"),  # not a list
    ("ray_cleanup_ray_version", 2.4),  # YAML's reading of an unquoted 2.40
    ("ray_cleanup_ray_version", "2.40.0\n"),
    ("ray_cleanup_ray_version", "latest"),
    ("ray_cleanup_ray_python", "python3"),
    ("ray_cleanup_ray_python", "/usr/bin/python3 -c 'import os'"),
    ("ray_cleanup_log_dir", "/var/log/rayops\n/etc/shadow"),
    ("ray_cleanup_log_dir", "/var/log/ray ops"),
    ("ray_cleanup_log_dir", "/var/log/rayops/*"),
    ("ray_cleanup_bin_path", "/usr/local/bin/ray-maintenance; touch /tmp/pwned"),
    ("ray_cleanup_bin_path", "/usr/local/bin/ray%maintenance"),  # cron turns % into a newline
    ("ray_cleanup_config_path", "/etc/rayops/ray-maintenance.json" + CRON_LINE),
    ("ray_cleanup_config_path", "etc/rayops/ray-maintenance.json"),
    ("ray_cleanup_lib_dir", "/usr/local/lib/rayops disk"),
    ("ray_cleanup_venv_path", "/opt/rayops-disk/venv\n"),
    ("ray_cleanup_metrics_dir", "/var/lib/prometheus/node-exporter\n"),
    ("ray_cleanup_cron_minute", "0" + CRON_LINE),
    ("ray_cleanup_cron_minute", "0 * * * * root touch /tmp/pwned #"),
    ("ray_cleanup_cron_hour", "*\n"),
    ("ray_cleanup_cron_day", "1 2"),
    ("ray_cleanup_cron_month", "jan;id"),
    ("ray_cleanup_cron_weekday", "mon fri"),
    ("ray_cleanup_cron_weekday", ""),
    ("ray_cleanup_monitor_cron_minute", "7-59/15" + CRON_LINE),
    ("ray_cleanup_ship_cron_minute", "*/10 * * * * root touch /tmp/pwned #"),
    ("ray_cleanup_ray_user", "ray\nroot"),
    ("ray_cleanup_ray_user", "Ray"),
    ("ray_cleanup_ray_user", "ray user"),
    ("ray_cleanup_ray_user", "rayops-no-such-user"),
    ("ray_cleanup_containers", "sometimes"),
    # The CLI takes any name filter, but "" would match every container, not only Ray's workers.
    ("ray_cleanup_container_name_filter", "ray worker"),
    ("ray_cleanup_container_name_filter", "ray-worker\n"),
    ("ray_cleanup_container_name_filter", ""),
    ("ray_cleanup_ray_env_files", [{"path": "/etc/env ironment", "format": "env"}]),
    ("ray_cleanup_ray_env_files", [{"path": "/etc/environment\n", "format": "env"}]),
    # Ray runs as root (the default ray_cleanup_ray_user ""): logrotate would act as root in its world-writable dirs.
    ("ray_cleanup_logrotate_ray_logs", True),
]

# Settings that go only into the CLI's config: the CLI refuses these (its own words follow the variable).
CLI_BAD = [
    ("ray_cleanup_tmp_dir", "/"),
    ("ray_cleanup_tmp_dir", "/tmp/\x1b[2J"),  # no such directory on the node
    ("ray_cleanup_ray_temp_dir", "tmp/ray"),
    ("ray_cleanup_uv_cache_dir", "root/.cache/uv"),
    ("ray_cleanup_spill_dirs", ["mnt/spill"]),
    ("ray_cleanup_spill_dirs", ["//"]),
    ("ray_cleanup_spill_dirs", "/mnt/spill"),  # not a list
    ("ray_cleanup_patterns", ["../etc"]),
    ("ray_cleanup_patterns", "ray_tmp_*"),  # not a list
    ("ray_cleanup_patterns", []),
    ("ray_cleanup_exclude", [""]),
    ("ray_cleanup_busy_titles", ["*"]),
    ("ray_cleanup_min_tmp_size", "lots"),
    ("ray_cleanup_max_age_hours", -1),
    ("ray_cleanup_cpu_idle_percent", -5),
    ("ray_cleanup_thresholds", {"info": 80, "warning": 70, "critical": 95}),
    ("ray_cleanup_thresholds", {"info": 80, "warning": 90, "critical": 101}),
    ("ray_cleanup_ship_paths", ["app/logs/*.log"]),
]
CLI_FAILURE = "Fail, naming the setting the CLI refused (check mode)"
# What a failed host still runs: the cleanup of the temp dirs (on the node, and the build dir on the controller).
CLEANUP = ("Remove the temp dir on the node (check mode)", "Remove the build directory on the controller")

# Unusual but valid: preflight and the CLI must let these through.
GOOD = {
    "ray_cleanup_ray_user": "nobody",
    "ray_cleanup_logrotate_ray_logs": True,
    "ray_cleanup_logrotate_maxsize": "100k",
    "ray_cleanup_logrotate_rotate": 0,
    "ray_cleanup_logrotate_frequency": "hourly",
    "ray_cleanup_logrotate_ray_log_dirs": ["/srv/ray-tmp/session_2*/logs", "/srv/ray_1.x/session_[0-9]*/logs/"],
    "ray_cleanup_ray_version": "2.60.0rc1",
    "ray_cleanup_ray_python": "/opt/ray/venv-2.53/bin/python3.11",
    "ray_cleanup_cron_minute": 0,
    "ray_cleanup_cron_hour": "*/2",
    "ray_cleanup_cron_day": "1,15",
    "ray_cleanup_cron_month": "jan-jun",
    "ray_cleanup_cron_weekday": "mon-fri",
    "ray_cleanup_monitor_cron_minute": "",
    "ray_cleanup_ray_temp_dir": "/srv/ray-tmp",
    "ray_cleanup_spill_dirs": ["/mnt/spill", "/srv/ray-spill/"],
    "ray_cleanup_uv_cache_dir": "/home/api_user/.cache/uv",
    "ray_cleanup_container_name_filter": "^ray-worker-[0-9]+$",
    "ray_cleanup_patterns": ["ray_tmp_*", "pip-*", "[a-z]*.tmp"],
    "ray_cleanup_exclude": ["*/checkpoints/*", "*/keep me/*"],
}

PLAYBOOK = """\
- name: The role, as a deploy runs it
  hosts: all
  gather_facts: false
  roles:
    - role: rayops.disk.ray_cleanup
"""

# A callback that records every task result as a JSON line (ansible.posix.json is not there under ansible-test).
RECORDER = """\
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, result, status):
        task = getattr(result, "task", None) or result._task
        host = getattr(result, "host", None) or result._host
        data = getattr(result, "result", None) or result._result
        with open(os.environ["RAYOPS_RECORD"], "a") as handle:
            handle.write(json.dumps({"host": host.get_name(), "task": task.get_name(), "path": task.get_path() or "",
                                     "status": status, "result": data}, default=str) + "\\n")

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")
"""


def case_id(index):
    return "bad%02d" % index


def ansible_playbook(tmp_path, inventory, playbook, *args, check=True):
    """Run ansible-playbook with the repo's ansible.cfg (``--check`` unless ``check`` is false); return
    ``{host: [(task path, task name, result)]}`` in the order the tasks ran, and the process."""
    plugins = tmp_path / "callback_plugins"
    plugins.mkdir()
    (plugins / "record.py").write_text(RECORDER)
    record = tmp_path / "record.jsonl"
    record.write_text("")
    # The collection as this run sees it: under ansible-test, its copy (which sets ANSIBLE_COLLECTIONS_PATH).
    collections = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or os.path.join(REPO, ".build", "collections")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_CALLBACK_PLUGINS=str(plugins),
               ANSIBLE_CALLBACKS_ENABLED="record", ANSIBLE_FORKS="64", RAYOPS_RECORD=str(record),
               PATH=BIN + os.pathsep + os.environ["PATH"])
    program = os.path.join(BIN, "ansible-playbook")
    proc = subprocess.run([program if os.path.exists(program) else "ansible-playbook"] + (["--check"] if check else [])
                          + ["-i", str(inventory), str(playbook)] + list(args), cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    ran = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        entry["result"]["failed"] = entry["status"] == "failed"  # a loop's own result may not say
        # "rayops.disk.ray_cleanup : Assert ..." -> "Assert ..."
        ran.setdefault(entry["host"], []).append((entry["path"], entry["task"].split(" : ", 1)[-1], entry["result"]))
    assert ran, "no task ran:\n%s%s" % (proc.stdout, proc.stderr)
    return ran, proc


def run_role(tmp_path, hosts, *args):
    """``ansible-playbook --check`` of the role on ``hosts`` (name -> variables, all localhost); per host, the
    results of each task it ran, in order: ``[(task path, task name, result)]``."""
    prefix = tmp_path / "node"
    prefix.mkdir()
    # Where a run that got past preflight would write, should one do so: nowhere real.
    base = dict(scratch_node(prefix), ray_cleanup_venv_path=str(prefix / "venv"),
                ray_cleanup_ray_env_files=[{"path": str(prefix / "env" / "ray.env"), "format": "env"}],
                ray_cleanup_prometheus_rules_dir=str(prefix / "rules"))
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {name: dict(base, **variables)
                                                       for name, variables in hosts.items()}}}))
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(PLAYBOOK)
    ran, _proc = ansible_playbook(tmp_path, inventory, playbook, *args)
    assert sorted(ran) == sorted(hosts)
    assert list(prefix.iterdir()) == [], "the role wrote into %s" % prefix
    return ran


def scratch_node(prefix):
    """A localhost node whose paths (lib, bin, config, logs, metrics, diagnose state) are all below ``prefix``."""
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "ray_cleanup_lib_dir": str(prefix / "lib"), "ray_cleanup_bin_path": str(prefix / "bin" / "ray-maintenance"),
            "ray_cleanup_config_path": str(prefix / "etc" / "ray-maintenance.json"),
            "ray_cleanup_log_dir": str(prefix / "log"), "ray_cleanup_metrics_dir": str(prefix / "metrics"),
            "ray_cleanup_diagnose_state_file": str(prefix / "state" / "diagnose-state.json")}


def in_scratch(tmp_path, run, prefix, tags, scratch, playbook=PLAYBOOK, check=False, **variables):
    """The role's tasks tagged ``tags`` on localhost, writing only below ``prefix``: ``(results of the node, process)``.

    The node's paths (lib, bin, config, logs, metrics, state) are below ``prefix``; ``scratch`` gives the role's
    internal paths (vars/main.yml outranks inventory vars, so they are extra vars); ``variables`` are the node's.
    """
    where = tmp_path / run
    where.mkdir()
    node = dict(scratch_node(prefix), ray_cleanup_ray_env_files=[], **variables)
    inventory = where / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"node": node}}}))
    playbook_file = where / "playbook.yml"
    playbook_file.write_text(playbook)
    ran, proc = ansible_playbook(where, inventory, playbook_file, "--tags", tags, "-e", json.dumps(scratch),
                                 check=check)
    return ran["node"], proc


def failure(results):
    """The message of the task that failed the host (None if none failed)."""
    for _path, _name, result in results:
        if result.get("failed"):
            if "results" in result:  # a loop: the failed item
                return next(item["msg"] for item in result["results"] if item.get("failed"))
            return result["msg"]
    return None


def skipped(result):
    """Whether a task (or every item of a loop) was skipped."""
    if "results" in result:
        return all(skipped(item) for item in result["results"])
    return bool(result.get("skipped") or "skip_reason" in result)


def check_bad(name, value, results, by_cli=False):
    """What is wrong with how the role took ``name=value`` (None: refused before anything was written)."""
    message = failure(results)
    if message is None:
        return "accepted; tasks run: %s" % [task for _path, task, _result in results]
    failed = next(index for index, (_path, _task, result) in enumerate(results) if result.get("failed"))
    task = results[failed][1]
    if by_cli and task != CLI_FAILURE:
        return "not refused by the CLI's check but by %r: %s" % (task, message)
    if task.startswith("Validating arguments against arg spec"):
        if name not in message:  # Ansible's own words: "... value of <name> must be ..."
            return "the argument specs refused it without naming it: %s" % message
    elif not message.startswith(name + " "):  # the role names the setting first, then its value and the fix
        return "the message does not start with the name: %s" % message
    elif json.dumps(value) not in message and not (isinstance(value, list) and value and json.dumps(value[0]) in message):
        return "the message does not show the value: %s" % message
    # Only the cleanup of temp dirs runs after the failure, and before it every task only looked (or, in the dry
    # run of install.yml, said what it would do): nothing of configure.yml. A handler the install notified is
    # listed with force_handlers (ansible-test units sets ANSIBLE_FORCE_HANDLERS), skipped: its conditions hold it.
    after = [task for _path, task, result in results[failed + 1:] if task not in CLEANUP and not skipped(result)]
    if after:
        return "tasks ran after the failure: %s" % after
    for path, task, result in results[:failed]:
        if "/tasks/configure.yml" in path:
            return "a task of configure.yml ran: %s" % task
        if not by_cli and "/tasks/preflight.yml" not in path and not task.startswith("Validating arguments"):
            return "a task outside preflight ran: %s (%s)" % (task, path)
        if result.get("changed") and "/tasks/preflight.yml" in path:
            return "a task changed something: %s" % task
    if by_cli and " is refused by the CLI (ray-maintenance check-config): " not in message:
        return "the message does not say the CLI refused it: %s" % message
    return None


def test_each_bad_setting_fails_naming_it_before_anything_is_written(tmp_path):
    """All cases in one run, one host each (one test, so that pytest-xdist runs the playbook once)."""
    cases = [(name, value, False) for name, value in BAD] + [(name, value, True) for name, value in CLI_BAD]
    ran = run_role(tmp_path, {case_id(index): {name: value} for index, (name, value, _cli) in enumerate(cases)})
    problems = ["%s=%s: %s" % (name, json.dumps(value), problem) for index, (name, value, by_cli) in enumerate(cases)
                for problem in [check_bad(name, value, ran[case_id(index)], by_cli)] if problem]
    assert problems == [], "\n".join(problems)

    # The CLI's words follow the variable: what is wrong and the fix.
    message = failure(ran[case_id(len(BAD) + [name for name, _value in CLI_BAD].index("ray_cleanup_min_tmp_size"))])
    assert message == ('ray_cleanup_min_tmp_size "lots" is refused by the CLI (ray-maintenance check-config): '
                       "min_tmp_size 'lots' is not a size; write bytes or a size such as 5GB, 500MB, 0"), message
    message = failure(ran[case_id(len(BAD) + CLI_BAD.index(("ray_cleanup_patterns", ["../etc"])))])
    assert message.startswith('ray_cleanup_patterns ["../etc"] is refused by the CLI (ray-maintenance check-config): '
                              "pattern '../etc' is not a plain file name glob"), message

    # The audit's value passes the argument specs (a str): preflight itself stops it.
    results = ran[case_id(0)]
    assert results[-1][1] == "Assert each setting has the form the file it goes into allows"
    message = failure(results)
    assert message.startswith('ray_cleanup_logrotate_maxsize "10M\\n    postrotate\\n    touch /tmp/pwned'), message
    assert "digits with an optional k, M or G" in message

    # logrotate as root in Ray's world-writable dirs: the message names the danger and the fix.
    message = failure(ran[case_id(len(BAD) - 1)])
    assert message.startswith("ray_cleanup_logrotate_ray_logs true with Ray running as root"), message
    assert "plant a symlink" in message and "truncate any file" in message
    assert "Set ray_cleanup_ray_user to the user running Ray, or ray_cleanup_logrotate_ray_logs: false" in message


def test_unusual_valid_settings_pass_preflight(tmp_path):
    ran = run_role(tmp_path, {"good": GOOD}, "--tags", "ray_cleanup_preflight")
    results = ran["good"]
    assert failure(results) is None, failure(results)
    assert results[-1][1] == "Tell that the pressure guard needs systemd", results[-1]  # preflight's last task: it ran
    looked, = [result for _path, task, result in results
               if task == "Look at the node (paths, packages, PID 1, cron, Ray's version; the facts the role needs)"]
    assert "ray_version" not in looked, looked  # ray_cleanup_ray_version is given: Ray's Python is not asked


def test_unusual_valid_settings_pass_the_clis_check(tmp_path):
    """The whole role in a dry run: the CLI a real run would install accepts the config it would write."""
    ran = run_role(tmp_path, {"good": GOOD})
    results = ran["good"]
    assert failure(results) is None, failure(results)
    asked = [result for _path, task, result in results if task == "Ask the CLI whether it accepts the config (check mode)"]
    assert [(result["rc"], result["stdout"].endswith(": ok")) for result in asked] == [(0, True)], asked


PROMETHEUS_BAD = [("ray_cleanup_prometheus_rules_dir", "/etc/prometheus/rules\n"),
                  ("ray_cleanup_prometheus_rules_dir", "/etc/prometheus/rules /x"),
                  ("ray_cleanup_prometheus_promtool", "promtool\ncheck")]
# Each alert setting: the bad one is named first, with its value and the fix (not a list of every setting).
ALERT_BAD = [("ray_cleanup_alert_tmp_warning_percent", 0),
             ("ray_cleanup_alert_tmp_warning_percent", 85),  # above the critical 80
             ("ray_cleanup_alert_tmp_critical_percent", 120),
             ("ray_cleanup_alert_disk_free_warning_percent", 100),
             ("ray_cleanup_alert_disk_free_critical_percent", 40),  # above the warning 30
             ("ray_cleanup_alert_stale_after_seconds", 0),
             ("ray_cleanup_alert_for", "5 minutes")]


def test_prometheus_entry_point_checks_its_paths(tmp_path):
    playbook = tmp_path / "prometheus.yml"
    playbook.write_text("- name: Rules\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                        "    - name: Rules\n      ansible.builtin.include_role:\n        name: rayops.disk.ray_cleanup\n"
                        "        tasks_from: prometheus\n")
    hosts = {case_id(index): {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                              "ray_cleanup_prometheus_rules_dir": str(tmp_path / "rules"), name: value}
             for index, (name, value) in enumerate(PROMETHEUS_BAD)}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    ran, _proc = ansible_playbook(tmp_path, inventory, playbook)
    for index, (name, value) in enumerate(PROMETHEUS_BAD):
        results = ran[case_id(index)]
        assert results[-1][2].get("failed"), results[-1]
        assert results[-1][1] == "Assert the rules dir and promtool have the form a path allows"
        message = failure(results)
        assert message.startswith(name) and json.dumps(value) in message, message
    assert not (tmp_path / "rules").exists()


def test_a_bad_alert_setting_is_named_first(tmp_path):
    playbook = tmp_path / "prometheus.yml"
    playbook.write_text("- name: Rules\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                        "    - name: Rules\n      ansible.builtin.include_role:\n        name: rayops.disk.ray_cleanup\n"
                        "        tasks_from: prometheus\n")
    hosts = {case_id(index): {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                              "ray_cleanup_prometheus_rules_dir": str(tmp_path / "rules"), name: value}
             for index, (name, value) in enumerate(ALERT_BAD)}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    ran, _proc = ansible_playbook(tmp_path, inventory, playbook)
    for index, (name, value) in enumerate(ALERT_BAD):
        results = ran[case_id(index)]
        assert results[-1][1] == "Assert each alert setting is sensible" and results[-1][2].get("failed"), results[-1]
        failed = {item["item"]["name"]: item["msg"] for item in results[-1][2]["results"] if item.get("failed")}
        # Each bad one in a message of its own (two in the wrong order: both, each naming the other's value).
        assert name in failed and len(failed) <= 2, failed
        message = failed[name]
        assert message.startswith("%s %s is not allowed: give " % (name, json.dumps(value))), message
        assert "for example" in message, message
    assert not (tmp_path / "rules").exists()
