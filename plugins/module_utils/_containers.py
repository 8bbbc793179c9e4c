# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ray worker containers as targets: listed through the Docker SDK, reached from the host.

A running container's files are reached through ``/proc/<pid>/root`` of its
init process, so the same scanner and rules apply as on the host and nothing
runs inside the container.  This needs the module to run on the Docker host
itself (as root, or as the containers' user).

Private to the rayops.disk collection: not a public API.  No Ansible imports.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from ansible_collections.rayops.disk.plugins.module_utils._fs import process_start_time
from ansible_collections.rayops.disk.plugins.module_utils._ray_layout import Target, mount_namespace


class DockerUnavailable(Exception):
    """The Docker daemon could not be reached or asked."""


def docker_client(docker, docker_host):
    """A connected Docker SDK client, or ``DockerUnavailable`` saying what to fix."""
    where = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        if docker_host:
            client = docker.DockerClient(base_url=docker_host, timeout=30)
        else:
            client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests or socket errors alike
        raise DockerUnavailable("cannot reach the Docker daemon at %s (%s); start Docker, or set docker_host, "
                                "or set containers: false" % (where, exc)) from exc
    return client


def container_env(attrs: dict) -> dict:
    """The container's configured environment as a dict."""
    env = {}
    for item in (attrs.get("Config") or {}).get("Env") or []:
        name, _sep, value = item.partition("=")
        env[name] = value
    return env


class NotRunning(LookupError):
    """The container is not running: it has no files to reach, which is no error."""


def pid_of_container(pid: int, container_id: str) -> bool:
    """Whether process ``pid`` is in the container's cgroup (so its pid was not reused by another process)."""
    try:
        with open("/proc/%d/cgroup" % pid, "rb") as handle:
            return container_id.encode() in handle.read()
    except OSError:
        return False


def container_target(container: Any) -> Target:
    """The target for a running container, reached through its init's ``/proc/<pid>/root``.

    Docker's pid is checked, right here, to be in the container's cgroup, and
    its start time is kept: each later entry into the root checks it again.
    ``NotRunning`` for a stopped container, ``LookupError`` when a running one cannot be reached.
    """
    if container.status != "running":
        raise NotRunning("container is %s" % container.status)
    pid = (container.attrs.get("State") or {}).get("Pid") or 0
    if not pid:
        raise LookupError("container is running but Docker gives no process for it")
    prefix = "/proc/%d/root" % pid
    start_time = process_start_time(pid)
    mnt_ns = mount_namespace(pid)
    if mnt_ns is None or start_time is None:
        try:
            container.reload()
        except Exception as exc:  # the SDK's NotFound, without importing docker here
            raise LookupError("container was removed during the run (%s)" % exc) from exc
        if container.status != "running":
            raise LookupError("container is %s, it stopped during the run" % container.status)
        raise LookupError("process %d of the container is not visible here; run the module on the Docker host "
                          "itself, as root" % pid)
    if not pid_of_container(pid, container.id):
        raise LookupError("process %d is not in the container's cgroup: its pid was reused by another process (the "
                          "container restarted?); run again" % pid)
    if process_start_time(pid) != start_time or mount_namespace(pid) != mnt_ns:
        raise LookupError("process %d of the container changed while it was checked; the container restarted" % pid)
    return Target(name=container.name, prefix=prefix, mnt_ns=mnt_ns, init_pid=pid, start_time=start_time)


def ray_worker_containers(options, docker) -> list:
    """The containers whose name matches ``options.container_name_filter``, by name."""
    client = docker_client(docker, options.docker_host)
    try:
        containers = client.containers.list(all=True, filters={"name": options.container_name_filter})
    except Exception as exc:
        raise DockerUnavailable("cannot list containers: %s" % exc) from exc
    return sorted(containers, key=lambda c: c.name)


def docker_root_dir(docker, docker_host: Optional[str]) -> str:
    """Where the Docker daemon keeps images and containers (``DockerRootDir``); ``DockerUnavailable`` if unknown."""
    try:
        root = docker_client(docker, docker_host).info().get("DockerRootDir")
    except DockerUnavailable:
        raise
    except Exception as exc:  # the SDK's APIError and requests' errors alike
        raise DockerUnavailable("cannot ask Docker for its data root: %s" % exc) from exc
    if not isinstance(root, str) or not os.path.isabs(root):
        raise DockerUnavailable("Docker names no data root (DockerRootDir %r)" % (root,))
    return root


def prune_docker(docker, docker_host: Optional[str], check_mode: bool) -> dict:
    """Stopped containers, dangling images and unused build cache: pruned, or measured in check mode.

    A failure (the daemon gone, an API error) is reported in ``error``: the cleanup before it stands.
    """
    try:
        return _prune(docker_client(docker, docker_host), check_mode)
    except Exception as exc:  # DockerUnavailable, or the SDK's APIError and requests' errors alike
        return {"changed": False, "reclaimed_bytes": 0, "containers": 0, "images": 0, "build_cache": 0,
                "error": "docker prune failed: %s" % exc}


def _prune(client, check_mode: bool) -> dict:
    if check_mode:
        usage = client.df()
        stopped = [c for c in usage.get("Containers") or [] if c.get("State") != "running"]
        dangling = [i for i in usage.get("Images") or [] if not i.get("RepoTags") or
                    i.get("RepoTags") == ["<none>:<none>"]]
        cache = [b for b in usage.get("BuildCache") or [] if not b.get("InUse")]
        reclaim = (sum(c.get("SizeRw") or 0 for c in stopped) + sum(i.get("Size") or 0 for i in dangling)
                   + sum(b.get("Size") or 0 for b in cache))
        return {"changed": bool(stopped or dangling or cache), "reclaimed_bytes": reclaim,
                "containers": len(stopped), "images": len(dangling), "build_cache": len(cache), "error": None}
    containers = client.containers.prune()
    images = client.images.prune(filters={"dangling": True})
    builds = client.api.prune_builds()
    reclaim = sum((r or {}).get("SpaceReclaimed") or 0 for r in (containers, images, builds))
    counts = {"containers": len(containers.get("ContainersDeleted") or []),
              "images": len(images.get("ImagesDeleted") or []),
              "build_cache": len(builds.get("CachesDeleted") or [])}
    return dict(counts, changed=bool(reclaim or any(counts.values())), reclaimed_bytes=reclaim, error=None)
