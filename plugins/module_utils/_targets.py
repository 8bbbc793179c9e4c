# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The targets of a run on one node: the host and each Ray worker container, listed by one loop for every front door.

``node_targets`` lists them once for the report and the cleanup alike: whether containers are wanted
(``containers: auto`` asks whether the node has Docker) and Docker unreachable (an error of the run, never
silence).  It only lists: whoever uses a container ``enter``s it right before (a container that is not running,
one whose root cannot be entered, one that stopped since the listing), and ``sample_activity`` says whether each
is busy, sampled side by side over one window.

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ansible_collections.rayops.disk.plugins.module_utils._activity import (
    ContainerSample,
    HostSample,
    TitleRules,
    sample_all,
)
from ansible_collections.rayops.disk.plugins.module_utils._containers import (
    DockerUnavailable,
    NotRunning,
    container_env,
    container_target,
    ray_worker_containers,
)
from ansible_collections.rayops.disk.plugins.module_utils._options import switch
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import Target, mount_namespace

DOCKER_SOCKET = "/var/run/docker.sock"
"""The Docker socket whose presence makes ``containers: auto`` look for containers (as the role decides)."""


def containers_wanted(containers: Any, docker_host: Optional[str]) -> bool:
    """``containers`` as given (true, false), or for ``auto`` whether this node has Docker (``docker_host``,
    ``$DOCKER_HOST`` or the socket)."""
    value = switch(containers)
    if value == "auto":
        return bool(docker_host or os.environ.get("DOCKER_HOST") or os.path.exists(DOCKER_SOCKET))
    return bool(value)


def host_target() -> Target:
    """This host, seen from this process."""
    return Target(name="host", prefix="/", mnt_ns=mount_namespace("self"))


@dataclass
class Slot:
    """One target of a run: the host or a container, and why it cannot be worked on (``status``), if so."""

    name: str
    kind: str
    target: Optional[Target]
    options: Any = None
    """What the target is measured and cleaned with, decided once at listing: the run's options for the host, their
    ``for_container()`` for a container (its own tmp dir, ``container_tmp_dir``, and its own Ray)."""
    container: Any = None
    environ: Optional[dict] = None
    status: Optional[str] = None
    """None when it can be measured (a container once ``enter``ed: listed, ``target`` is None); ``not_running`` (a
    stopped container) or ``error`` (``reason`` says why)."""
    reason: Optional[str] = None
    activity: Optional[dict] = None


@dataclass
class NodeTargets:
    """The host (unless left out) and the Ray worker containers of this node."""

    slots: list = field(default_factory=list)
    containers_wanted: bool = False
    containers_error: Optional[str] = None
    """Containers were wanted and Docker could not be reached or asked: the run has an error."""

    @property
    def host(self) -> Optional[Slot]:
        """The host's slot, or None when the run leaves the host out."""
        return next((slot for slot in self.slots if slot.kind == "host"), None)

    @property
    def containers(self) -> list:
        """The containers' slots, by name."""
        return [slot for slot in self.slots if slot.kind == "container"]


def node_targets(options, docker, host: bool = True) -> NodeTargets:
    """List the targets of ``options`` (containers, container_name_filter, docker_host); containers are not entered."""
    found = NodeTargets(containers_wanted=containers_wanted(options.containers, options.docker_host))
    if host:
        found.slots.append(Slot("host", "host", host_target(), options))
    if found.containers_wanted:
        try:
            containers = ray_worker_containers(options, docker)
        except DockerUnavailable as exc:
            found.containers_error = str(exc)
            containers = []
        inner = options.for_container()
        found.slots += [Slot(container.name, "container", None, inner, container=container) for container in containers]
    return found


def enter(slot: Slot) -> None:
    """Resolve a container's root now, right before it is used (it may have stopped since the listing or the last use).

    A slot already found unusable (``status``) and the host are left as they are.
    """
    if slot.kind != "container" or slot.status is not None:
        return
    try:
        slot.target = container_target(slot.container)
        slot.environ = container_env(slot.container.attrs)
    except NotRunning as exc:
        slot.status, slot.reason, slot.target = "not_running", str(exc), None
    except LookupError as exc:
        slot.status, slot.reason, slot.target = "error", str(exc), None


def sample_activity(slots: list, options, psutil) -> None:
    """Set ``activity`` (busy or idle, and why) of every slot that can be measured, sampled over one window.

    A container not entered yet is entered first, right before the window; one already entered is sampled as it is.
    """
    rules = TitleRules(tuple(options.busy_titles), tuple(options.idle_titles))
    samples = {}
    for index, slot in enumerate(slots):
        if slot.target is None:
            enter(slot)
            if slot.target is None:
                continue
        if slot.kind == "host":
            samples[index] = HostSample(psutil, slot.target, rules, options.ray_uids | {0})
        else:
            samples[index] = ContainerSample(psutil, slot.target, rules)
    for index, verdict in sample_all(samples, options.sample_seconds, options.cpu_idle_percent).items():
        slots[index].activity = verdict
