#!/usr/bin/env bash
# Bootstrap this machine for the rayops.disk test rig (Debian 12, run as root).
#
# Idempotent: every step checks first and does nothing when already done.
#   - Debian packages: docker.io busybox-static rsync git python3-venv shellcheck util-linux
#     logrotate cron mmdebstrap
#   - promtool, prometheus and prometheus-alertmanager (only the binaries, out of Debian's packages) in
#     /usr/local/bin: the monitoring test starts the two servers on loopback
#   - Docker engine (dockerd in the background, no systemd needed)
#   - local images (no registry): rayops-test/busybox:latest from busybox-static, and
#     rayops-test/debian-python:bookworm-2 (Debian minbase with python3, python3-venv, cron,
#     logrotate; the tag changes when its package list does), and rayops-test/debian-bare:bookworm
#     (python3 only: a fresh node for molecule's `fresh` scenario); rayops-test/sshd:bookworm (debian-python's
#     packages and openssh-server) and rayops-test/sshd-bare:bookworm (python3 and openssh-server only), the
#     system tests' SSH fleet (no host keys in the image: each container makes its own); rayops-test/systemd:bookworm-2
#     ($PY_IMAGE plus systemd, systemd-sysv and prometheus-node-exporter, CMD /sbin/init: a node with a live systemd
#     and node_exporter as its own service for molecule's `systemd` scenario; its build container fetches the packages
#     from Debian's mirror)
#   - $REPO/.venv with requirements/dev.txt (pip re-run only when the file changes)
#   - the users' Ray versions beside the newest (.venv's): venvs /var/cache/rayops-disk/ray-2.40.0 and
#     ray-2.53.0 with ray[default]==<version>, from the same base python as .venv (pip re-run only when
#     the stamp .rayops-ray.sha256 or `import ray` disagrees; a venv made by hand that works is kept)
#   - rayops-test/ray:2.53.0 (no registry): $PY_IMAGE plus ray==2.53.0 in /opt/ray (on PATH), installed
#     offline from wheels downloaded once (cp311, manylinux x86_64) to /var/cache/rayops-disk/ray-wheels-2.53.0;
#     a Ray worker container as the users run them
#   - wheels of psutil and docker (and what docker needs) in /var/cache/rayops-disk/wheels, for
#     the role's venv install method in molecule's `venv` scenario (no index inside containers)
#   - community.docker and ansible.posix (molecule's driver, the docker connection) out of PyPI's
#     `ansible` wheel, cached in /var/cache/rayops-disk
#   - offline pip bootstrap script for ansible-test in ~/.ansible/test/cache/
#   - $REPO/.build/collections/ansible_collections/rayops/disk -> $REPO (symlink)
#   - $REPO/.build/ansible-test/ansible_collections/rayops/disk (real copy, see
#     scripts/sync-test-copy.sh)
# Nothing is exported: callers use $REPO/.venv/bin/... directly.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQS="$REPO/requirements/dev.txt"
IMAGE="rayops-test/busybox:latest"
PY_IMAGE="rayops-test/debian-python:bookworm-2"
BARE_IMAGE="rayops-test/debian-bare:bookworm"
SSHD_IMAGE="rayops-test/sshd:bookworm"
SSHD_BARE_IMAGE="rayops-test/sshd-bare:bookworm"
SYSTEMD_IMAGE="rayops-test/systemd:bookworm-2"
RAY_VERSIONS=(2.40.0 2.53.0)       # the users' versions; the newest is .venv's (requirements/dev.txt)
RAY_IMAGE_VERSION=2.53.0
RAY_IMAGE="rayops-test/ray:$RAY_IMAGE_VERSION"
CACHE=/var/cache/rayops-disk
ANSIBLE_WHEEL="ansible-12.3.0-py3-none-any.whl"  # bundles community.docker 4.8.5
DOCKERD_LOG="/var/log/dockerd-rayops.log"
APT_PACKAGES=(docker.io busybox-static rsync git python3-venv shellcheck util-linux logrotate cron mmdebstrap)

log() { echo "setup: $*"; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# --------------------------------------------------------------------------
# 1. Debian packages
# --------------------------------------------------------------------------
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "apt: packages already installed"
fi

# Prometheus' promtool, prometheus and Debian's prometheus-alertmanager: only their binaries, out of the Debian
# packages (installing the packages would start both servers as services, listening on every address and scraping
# the machine). promtool validates metrics and rules; the two servers run only when the monitoring test starts them,
# on loopback.
deb_binary() {  # deb_binary PACKAGE PATH_IN_PACKAGE DEST [DIR_IN_PACKAGE]: the binary, and a dir of its data to /
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -qq "$1" 2>/dev/null) || { rm -rf "$tmp"; die "apt-get download $1 failed"; }
    dpkg-deb --fsys-tarfile "$tmp/$1"_*.deb | tar -x -O ".$2" >"$tmp/binary" || { rm -rf "$tmp"; die "no $2 in $1"; }
    if [ -n "${4:-}" ]; then
        dpkg-deb --fsys-tarfile "$tmp/$1"_*.deb | tar -x -C / ".$4" || { rm -rf "$tmp"; die "no $4 in $1"; }
    fi
    install -m 0755 "$tmp/binary" "$3"
    rm -rf "$tmp"
}
# Debian's alertmanager reads its notification templates from /usr/share/prometheus/alertmanager.
for spec in prometheus:/usr/bin/promtool:/usr/local/bin/promtool: \
    prometheus:/usr/bin/prometheus:/usr/local/bin/prometheus: \
    prometheus-alertmanager:/usr/bin/prometheus-alertmanager:/usr/local/bin/prometheus-alertmanager:/usr/share/prometheus/alertmanager; do
    IFS=: read -r package inside dest data <<<"$spec"
    if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1 && { [ -z "$data" ] || [ -d "$data" ]; }; then
        log "$(basename "$dest"): $("$dest" --version 2>&1 | head -1)"
    else
        deb_binary "$package" "$inside" "$dest" "$data"
        log "$(basename "$dest"): installed $("$dest" --version 2>&1 | head -1)"
    fi
done

# --------------------------------------------------------------------------
# 2. Docker engine
# --------------------------------------------------------------------------
docker_ok() { timeout 15 docker info >/dev/null 2>&1; }

# true when process $1 exists and is not a zombie (PID 1 here may be slow to
# reap, and `kill -0` succeeds on zombies); with $2, its comm must equal $2
pid_alive() {
    local pid="$1" name="${2:-}" state
    [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
    if [ -n "$name" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
        return 1
    fi
    state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
    [ -n "$state" ] && [ "$state" != "Z" ] && [ "$state" != "X" ]
}

wait_docker() {
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        docker_ok && return 0
        sleep 1
    done
    docker_ok
}

if docker_ok; then
    log "docker: engine already running"
else
    pidfile=/var/run/docker.pid
    running_pid=""
    if [ -f "$pidfile" ]; then
        running_pid="$(cat "$pidfile" 2>/dev/null || true)"
        if ! pid_alive "$running_pid" dockerd; then
            log "docker: removing stale $pidfile (pid '${running_pid}')"
            rm -f "$pidfile"
            running_pid=""
        fi
    fi
    # stale pid file of the containerd that dockerd manages itself
    cpid=/var/run/docker/containerd/containerd.pid
    if [ -f "$cpid" ] && ! pid_alive "$(cat "$cpid" 2>/dev/null || true)" containerd; then
        log "docker: removing stale $cpid"
        rm -f "$cpid"
    fi
    if [ -n "$running_pid" ]; then
        log "docker: dockerd (pid $running_pid) running but not answering yet, waiting"
    else
        DOCKERD="$(command -v dockerd || echo /usr/sbin/dockerd)"
        [ -x "$DOCKERD" ] || die "dockerd not found"
        log "docker: starting dockerd (log: $DOCKERD_LOG)"
        nohup "$DOCKERD" >>"$DOCKERD_LOG" 2>&1 </dev/null &
        disown || true
    fi
    if ! wait_docker; then
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        die "docker engine did not answer within 60 s"
    fi
    log "docker: engine up"
fi

# --------------------------------------------------------------------------
# 3. Local busybox image (no registry)
# --------------------------------------------------------------------------
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image: $IMAGE present"
else
    log "image: building $IMAGE from busybox-static"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    bb=/bin/busybox
    # the installed busybox must be the static one; otherwise unpack the .deb
    if ! pkg_installed busybox-static || ldd "$bb" >/dev/null 2>&1; then
        (cd "$tmp" && apt-get download -qq busybox-static >/dev/null)
        dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/deb"
        bb="$tmp/deb/bin/busybox"
    fi
    root="$tmp/rootfs"
    mkdir -p "$root"/{bin,etc,proc,sys,dev,root,tmp,var/tmp,usr}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 700 "$root/root"
    install -m 0755 "$bb" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    ln -s bin "$root/sbin"
    ln -s ../bin "$root/usr/bin"
    ln -s ../bin "$root/usr/sbin"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -c . |
        docker import -c 'CMD ["sleep","2147483647"]' - "$IMAGE" >/dev/null
    rm -rf "$tmp"
    trap - EXIT
    out="$(docker run --rm --init "$IMAGE" sh -c 'echo ok; du -sk /tmp')"
    echo "$out" | head -1 | grep -qx ok || die "image smoke test failed: $out"
    log "image: $IMAGE built and verified"
fi

# Debian images for molecule and for containers as Ansible hosts (mmdebstrap, no registry):
# $PY_IMAGE has the role's packages already, so converging needs no mirror; $BARE_IMAGE has
# python3 only, a fresh node for the role's dry run. Further arguments go to mmdebstrap.
debian_image() {
    local tag="$1" packages="$2" probe="$3" mirror
    if docker image inspect "$tag" >/dev/null 2>&1; then
        log "image: $tag present"
        return 0
    fi
    log "image: building $tag with mmdebstrap (about a minute)"
    mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    mmdebstrap --quiet --variant=minbase --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' "${@:4}" \
        bookworm - "deb ${mirror:-http://deb.debian.org/debian} bookworm main" |
        docker import -c 'CMD ["sleep","infinity"]' - "$tag" >/dev/null
    docker run --rm --init "$tag" python3 -c "$probe" || die "image $tag failed its check: $probe"
    log "image: $tag built and verified"
}
debian_image "$PY_IMAGE" python3,python3-apt,python3-venv,python3-psutil,python3-docker,cron,logrotate,procps \
    'import psutil, docker, venv'
debian_image "$BARE_IMAGE" python3 'import sys'
# The SSH fleet of the playbook system tests (tests/system/sshfleet.py): sshd as the users' nodes run it. The
# host keys openssh-server's postinst made are removed, or every container would share them: the fleet makes
# each container's own at start (and /run/sshd, which mmdebstrap empties) and pins it in known_hosts.
# sshd-bare is a node the module fails on (no psutil).
# shellcheck disable=SC2016  # mmdebstrap's hook expands "$1" (the chroot)
SSHD_HOOK='rm -f "$1"/etc/ssh/ssh_host_*_key "$1"/etc/ssh/ssh_host_*_key.pub'
SSHD_PROBE='import os; assert os.access("/usr/sbin/sshd", os.X_OK) and not any(n.startswith("ssh_host_") for n in os.listdir("/etc/ssh"))'
debian_image "$SSHD_IMAGE" python3,python3-apt,python3-venv,python3-psutil,python3-docker,cron,logrotate,procps,openssh-server \
    "import psutil, docker, venv; $SSHD_PROBE" --customize-hook="$SSHD_HOOK"
debian_image "$SSHD_BARE_IMAGE" python3,openssh-server \
    "import importlib.util; assert importlib.util.find_spec('psutil') is None; $SSHD_PROBE" --customize-hook="$SSHD_HOOK"

# A node with a live systemd (molecule's `systemd` scenario): $PY_IMAGE plus systemd as PID 1. It boots without
# --privileged: --cap-add SYS_ADMIN, seccomp and apparmor unconfined, /sys/fs/cgroup rw and tmpfs /run, /run/lock.
# What is useless in a container is masked (no consoles, no udev, no kernel to set up).
SYSTEMD_BOOT=(--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock)
if docker image inspect "$SYSTEMD_IMAGE" >/dev/null 2>&1; then
    log "image: $SYSTEMD_IMAGE present"
else
    log "image: building $SYSTEMD_IMAGE from $PY_IMAGE with Debian's systemd (about a minute)"
    build_log="$(mktemp)"
    if ! docker build --build-arg "BASE=$PY_IMAGE" -t "$SYSTEMD_IMAGE" - >"$build_log" 2>&1 <<'EOF'
ARG BASE
FROM $BASE
RUN apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd systemd-sysv \
        prometheus-node-exporter && \
    apt-get clean && rm -rf /var/lib/apt/lists/* && \
    systemctl mask getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
        systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
        systemd-remount-fs.service systemd-firstboot.service && \
    rm -f /etc/machine-id && : >/etc/machine-id
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
EOF
    then
        tail -n 30 "$build_log" >&2
        rm -f "$build_log"
        die "docker build of $SYSTEMD_IMAGE failed"
    fi
    rm -f "$build_log"
    cid="$(docker run -d "${SYSTEMD_BOOT[@]}" "$SYSTEMD_IMAGE")"
    state=""
    for _ in $(seq 60); do  # until systemd's bus is up (at first: "Failed to connect to bus")
        state="$(docker exec "$cid" timeout 60 systemctl is-system-running --wait 2>&1 || true)"
        case "$state" in running | degraded | maintenance) break ;; esac
        sleep 1
    done
    docker rm -f "$cid" >/dev/null
    if [ "$state" != running ]; then
        docker image rm "$SYSTEMD_IMAGE" >/dev/null 2>&1 || true  # built but broken: the next run builds again
        die "image $SYSTEMD_IMAGE does not boot: systemctl is-system-running said: $state"
    fi
    log "image: $SYSTEMD_IMAGE built and verified (systemd boots: $state)"
fi

# --------------------------------------------------------------------------
# 4. Python virtualenv
# --------------------------------------------------------------------------
PY="${PYTHON:-python3}"
if ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    log "venv: creating $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.rayops-requirements.sha256"
want="$(cat "$REQS" <("$VENV/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
    log "venv: requirements up to date"
else
    log "venv: installing requirements/dev.txt (this takes ~1 min cold)"
    # (drop pip's noise about find-links/extra-index entries of the machine's pip.conf)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" 2>&1 |
        { grep -v -e "is neither a file nor a directory" -e "^\[notice\]" || true; }
    "$VENV/bin/python" -m pip check >/dev/null || die "pip check found conflicts"
    echo "$want" >"$stamp"
    log "venv: requirements installed"
fi

# --------------------------------------------------------------------------
# 4b. Ray venvs of the users' versions (the newest Ray is .venv's)
# --------------------------------------------------------------------------
# Kept when `import ray` gives the version and the stamp matches; a venv without the stamp (made
# by hand) that imports the right Ray is kept too: pip only completes ray[default] (nothing to do
# when it is there) and the stamp is written. Otherwise the venv is made again.
base_version="$("$PY" -c 'import sys; print(sys.version)')"
for ray_ver in "${RAY_VERSIONS[@]}"; do
    ray_venv="$CACHE/ray-$ray_ver"
    ray_stamp="$ray_venv/.rayops-ray.sha256"
    ray_probe="import ray, sys; assert ray.__version__ == '$ray_ver'; print(sys.version)"
    want="$(printf 'ray[default]==%s\n%s\n' "$ray_ver" "$base_version" | sha256sum | cut -d' ' -f1)"
    have_version="$("$ray_venv/bin/python" -c "$ray_probe" 2>/dev/null || true)"
    if [ "$have_version" = "$base_version" ] && [ "$(cat "$ray_stamp" 2>/dev/null || true)" = "$want" ]; then
        log "ray $ray_ver: $ray_venv up to date"
        continue
    fi
    if [ "$have_version" = "$base_version" ]; then
        log "ray $ray_ver: $ray_venv works, no stamp yet: completing ray[default]==$ray_ver"
    else
        log "ray $ray_ver: creating $ray_venv (a minute or two)"
        rm -rf "$ray_venv"
        mkdir -p "$CACHE"
        "$PY" -m venv "$ray_venv"
    fi
    "$ray_venv/bin/python" -m pip install -q --disable-pip-version-check "ray[default]==$ray_ver" 2>&1 |
        { grep -v -e "is neither a file nor a directory" -e "^\[notice\]" || true; }
    [ "$("$ray_venv/bin/python" -c "$ray_probe" 2>/dev/null || true)" = "$base_version" ] ||
        die "ray $ray_ver: $ray_venv does not import Ray $ray_ver"
    echo "$want" >"$ray_stamp"
    log "ray $ray_ver: $ray_venv ready"
done

# --------------------------------------------------------------------------
# 5. ansible-test offline pip bootstrap
# --------------------------------------------------------------------------
# ansible-test bootstraps pip into each sanity venv by downloading
# get-pip-<ver>.py from ci-files.testing.ansible.com (unreachable here), unless
# ~/.ansible/test/cache/get_pip_<ver with _>.py already exists.  It runs that
# file as `python get_pip_X.py --disable-pip-version-check pip==X --no-setuptools
# --no-wheel`.  Our replacement: ensurepip, then pip install --upgrade <args>.
pip_ver="$("$VENV/bin/python" - <<'EOF'
import re, pathlib, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
m = re.search(r"default_packages = dict\(\s*pip='([^']+)'", src.read_text())
print(m.group(1) if m else "")
EOF
)"
[ -n "$pip_ver" ] || die "could not find ansible-test's pip version"
cache_dir="$HOME/.ansible/test/cache"
get_pip="$cache_dir/get_pip_${pip_ver//./_}.py"
marker="# rayops offline get-pip v1"
if grep -qxF "$marker" "$get_pip" 2>/dev/null; then
    log "ansible-test: offline pip bootstrap present ($get_pip)"
else
    mkdir -p "$cache_dir"
    cat >"$get_pip.tmp" <<EOF
$marker
"""Offline stand-in for get-pip.py (pip $pip_ver), written by rayops scripts/setup.sh.

ansible-test runs it as: python get_pip_X.py [pip options] pip==X [--no-setuptools] [--no-wheel]
"""
import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'],
                          stdout=subprocess.DEVNULL)
    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--upgrade'] + args)


if __name__ == '__main__':
    main()
EOF
    mv "$get_pip.tmp" "$get_pip"
    log "ansible-test: wrote offline pip bootstrap $get_pip"
fi

# --------------------------------------------------------------------------
# 6. Collection paths
# --------------------------------------------------------------------------
link_dir="$REPO/.build/collections/ansible_collections/rayops"
if [ "$(readlink "$link_dir/disk" 2>/dev/null || true)" != "../../../.." ]; then
    mkdir -p "$link_dir"
    rm -rf "$link_dir/disk"
    ln -s ../../../.. "$link_dir/disk"
    log "collections: linked $link_dir/disk -> $REPO"
fi
# Wheels for the role's venv method, installed in a test container with --no-index
wheels="$CACHE/wheels"
want_wheels="$(grep -E '^(psutil|docker)==' "$REQS" | sort | tr '\n' ' ')"
if [ "$(cat "$wheels/.pins" 2>/dev/null || true)" = "$want_wheels" ]; then
    log "wheels: present in $wheels"
else
    rm -rf "$wheels"
    mkdir -p "$wheels"
    # shellcheck disable=SC2086  # one argument per pin
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$wheels" \
        $want_wheels 2>&1 | { grep -v "is neither a file" || true; }
    echo "$want_wheels" >"$wheels/.pins"
    log "wheels: downloaded $want_wheels to $wheels"
fi

# community.docker (molecule's driver, the docker connection) and ansible.posix (molecule's
# create playbook) without Galaxy: out of the `ansible` wheel from PyPI (cached)
coll_dir="$REPO/.build/collections/ansible_collections/community"
if [ -f "$coll_dir/docker/MANIFEST.json" ] && [ -f "$REPO/.build/collections/ansible_collections/ansible/posix/MANIFEST.json" ]; then
    log "collections: community.docker and ansible.posix present"
else
    mkdir -p "$CACHE"
    [ -f "$CACHE/$ANSIBLE_WHEEL" ] || "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
        -d "$CACHE" "ansible==$(echo "$ANSIBLE_WHEEL" | cut -d- -f2)" 2>&1 | { grep -v "is neither a file" || true; }
    [ -f "$CACHE/$ANSIBLE_WHEEL" ] || die "could not download $ANSIBLE_WHEEL"
    rm -rf "$coll_dir/docker" "$coll_dir/library_inventory_filtering_v1" "$REPO/.build/collections/ansible_collections/ansible"
    "$VENV/bin/python" - "$CACHE/$ANSIBLE_WHEEL" "$REPO/.build/collections" <<'EOF'
import sys, zipfile
wanted = ("ansible_collections/community/docker/", "ansible_collections/community/library_inventory_filtering_v1/",
          "ansible_collections/ansible/posix/")
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extractall(sys.argv[2], [m for m in wheel.namelist() if m.startswith(wanted)])
EOF
    log "collections: community.docker and ansible.posix extracted from $ANSIBLE_WHEEL"
fi
bash "$REPO/scripts/sync-test-copy.sh" >/dev/null
log "collections: ANSIBLE_COLLECTIONS_PATH=$REPO/.build/collections, ansible-test copy in .build/ansible-test"

# --------------------------------------------------------------------------
# 7. Ray worker image (the users' topology: Ray in worker containers), offline
# --------------------------------------------------------------------------
# Wheels of plain `ray` (no [default] extras: a minimal Ray, as worker images often are) and what it needs,
# for the image's python (Debian bookworm: CPython 3.11, glibc 2.36, x86_64), whatever python runs pip here.
ray_wheels="$CACHE/ray-wheels-$RAY_IMAGE_VERSION"
want_pins="ray==$RAY_IMAGE_VERSION cp311 manylinux_2_36_x86_64"
if [ "$(cat "$ray_wheels/.pins" 2>/dev/null || true)" = "$want_pins" ]; then
    log "ray image wheels: present in $ray_wheels"
else
    rm -rf "$ray_wheels"
    mkdir -p "$ray_wheels"
    platforms=()
    for glibc_minor in $(seq 36 -1 17); do
        platforms+=(--platform "manylinux_2_${glibc_minor}_x86_64")
    done
    platforms+=(--platform manylinux2014_x86_64)  # pip adds manylinux2010 and manylinux1
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
        --implementation cp --python-version 3.11 --abi cp311 "${platforms[@]}" -d "$ray_wheels" \
        "ray==$RAY_IMAGE_VERSION" 2>&1 | { grep -v -e "is neither a file nor a directory" -e "^\[notice\]" || true; }
    compgen -G "$ray_wheels/ray-$RAY_IMAGE_VERSION-*.whl" >/dev/null || die "no ray $RAY_IMAGE_VERSION wheel in $ray_wheels"
    echo "$want_pins" >"$ray_wheels/.pins"
    log "ray image wheels: downloaded ray==$RAY_IMAGE_VERSION and its dependencies to $ray_wheels"
fi

if docker image inspect "$RAY_IMAGE" >/dev/null 2>&1; then
    log "image: $RAY_IMAGE present"
else
    log "image: building $RAY_IMAGE from $PY_IMAGE and $ray_wheels (no network)"
    build_log="$(mktemp)"
    # Two stages: the wheels stay in the first, the image gets only /opt/ray.
    if ! docker build --network none --build-arg "BASE=$PY_IMAGE" --build-arg "RAY_VERSION=$RAY_IMAGE_VERSION" \
        -t "$RAY_IMAGE" -f - "$ray_wheels" >"$build_log" 2>&1 <<'EOF'
ARG BASE
FROM $BASE AS build
ARG RAY_VERSION
COPY *.whl /wheels/
RUN python3 -m venv /opt/ray && \
    /opt/ray/bin/pip install -q --disable-pip-version-check --no-index --find-links /wheels "ray==$RAY_VERSION"

FROM $BASE
COPY --from=build /opt/ray /opt/ray
# ~/ray_bootstrap_config.yaml says the provider is local: Ray then never probes a cloud metadata address
RUN printf 'provider:\n  type: local\n' >/root/ray_bootstrap_config.yaml
ENV PATH=/opt/ray/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
CMD ["sleep", "infinity"]
EOF
    then
        tail -n 30 "$build_log" >&2
        rm -f "$build_log"
        die "docker build of $RAY_IMAGE failed"
    fi
    rm -f "$build_log"
    out="$(docker run --rm --network none "$RAY_IMAGE" python -c 'import ray; print(ray.__version__)' 2>&1 || true)"
    got="$(echo "$out" | tail -n 1)"
    if [ "$got" != "$RAY_IMAGE_VERSION" ]; then
        docker image rm "$RAY_IMAGE" >/dev/null 2>&1 || true  # built but broken: the next run builds again
        die "image $RAY_IMAGE failed its check (import ray gave: $out)"
    fi
    log "image: $RAY_IMAGE built and verified (ray $got)"
fi

# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------
dv="$(docker version --format 'client {{.Client.Version}}, engine {{.Server.Version}}' 2>/dev/null || echo '?')"
av="$("$VENV/bin/python" -c 'import ansible; print(ansible.__version__)')"
rv="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("ray"))')"
log "ready: docker $dv; ansible-core $av; ray $rv (and ${RAY_VERSIONS[*]} in $CACHE/ray-<version>);" \
    "images $IMAGE $PY_IMAGE $BARE_IMAGE $SSHD_IMAGE $SSHD_BARE_IMAGE $SYSTEMD_IMAGE $RAY_IMAGE"
