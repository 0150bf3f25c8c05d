#!/usr/bin/env bash
# Provision a Debian 12 host (as root) so that every lowbuild engine works:
# packages, the docker buildx plugin, podman's configuration (only where a probe shows
# it is needed), a running dockerd, and the two local base images in both podman/buildah
# storage and dockerd. Idempotent: a second run only checks, in a few seconds.
#
# No registry can be pulled from on the hosts this runs on, so base images are made
# locally; every mirror used is the one this host's own apt sources already name.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START_NS=$(date +%s%N)
CACHE_DIR=/var/cache/lowbuild
DOCKERD_LOG=/var/log/lowbuild-dockerd.log
CONF_FILE=/etc/containers/containers.conf
CONF_MARKER="# written by lowbuild's scripts/provision.sh"
PLUGIN=/usr/libexec/docker/cli-plugins/docker-buildx
BUSYBOX_IMAGE=localhost/lowbuild/busybox:latest
BOOKWORM_IMAGE=localhost/lowbuild/bookworm:latest
# The busybox base for each foreign platform lowbuild's multi-arch tests build for, under
# the tag a family looks for it by (the platform appended: see lowbuild/spec/platforms.py).
FOREIGN_ARCHES=(arm64)
# The suite after this host's one carries docker-buildx (bookworm has none).
BUILDX_SUITE=trixie
IMAGE_PATH_ENV='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
PACKAGES=(
    podman buildah skopeo runc crun docker.io docker-registry debootstrap busybox-static
    uidmap slirp4netns fuse-overlayfs iproute2 curl
    # push --sign: GPG keys (podman, buildah and skopeo sign through gpgme)
    gnupg
    # runs doctor's probe program of the other architecture in the unit tests
    qemu-user-static
    # the Makefile's venv needs these; listed so `make provision` alone also fixes them
    python3 python3-venv
)
# --browser (what `make test` asks for): Chromium and its driver too, to check the HTML
# report in a real headless browser (tests/integration/test_run_report.py). `make demo`
# does not need them.
if [[ ${1:-} == --browser ]]; then
    PACKAGES+=(chromium chromium-driver)
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--browser]" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
# Inherited pointers elsewhere would make podman/docker ignore what this script sets up.
unset CONTAINERS_CONF CONTAINERS_CONF_OVERRIDE DOCKER_HOST DOCKER_CONTEXT

# Scratch directories of this run, removed however it ends; --one-file-system because a
# failed debootstrap can leave /proc or /sys mounted inside its target.
SCRATCH=()
trap 'rm -rf --one-file-system "${SCRATCH[@]}"' EXIT
new_scratch() { # sets the caller's `tmp` to a fresh directory
    tmp=$(mktemp -d /tmp/lowbuild-provision.XXXXXX)
    SCRATCH+=("$tmp")
}

log() { echo "provision: $*"; }
die() {
    echo "provision: FAILED: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and writes /etc)"

# ---- 1. packages -------------------------------------------------------------------
install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "packages: all ${#PACKAGES[@]} installed"
        return
    fi
    log "packages: installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
}

# The URI of this host's main Debian archive, from its own apt sources (no host name
# is ever written into the project).
debian_mirror() {
    python3 "$HERE/provision_apt_source.py" "$@" ||
        die "cannot derive the Debian mirror from /etc/apt/sources.list{,.d/}"
}

# ---- 2. docker buildx plugin -------------------------------------------------------
buildx_works() {
    local docker_bin
    for docker_bin in /usr/bin/docker "$(command -v docker)"; do
        "$docker_bin" buildx version >/dev/null 2>&1 || return 1
    done
}

install_buildx() {
    if buildx_works; then
        log "buildx: $(docker buildx version 2>/dev/null | head -n1)"
        return
    fi
    local mirror tmp keyring=/usr/share/keyrings/debian-archive-keyring.gpg opts=() signed_by=""
    mirror=$(debian_mirror)
    new_scratch
    # A private apt state: the host's own sources and lists stay untouched.
    mkdir -p "$tmp/lists/partial" "$tmp/parts" "$tmp/cache/archives/partial" "$tmp/deb"
    [[ -f $keyring ]] && signed_by="[signed-by=$keyring] "
    echo "deb ${signed_by}${mirror} ${BUILDX_SUITE} main" >"$tmp/sources.list"
    opts=(
        -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/parts"
        -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
        -o "APT::Sandbox::User=root"
    )
    log "buildx: fetching docker-buildx from ${BUILDX_SUITE} (private apt state in $tmp)"
    apt-get -q "${opts[@]}" update >/dev/null
    (cd "$tmp/deb" && apt-get -q "${opts[@]}" download docker-buildx >/dev/null)
    dpkg -x "$tmp"/deb/docker-buildx_*.deb "$tmp/root"
    install -D -m 0755 "$tmp/root$PLUGIN" "$PLUGIN"
    buildx_works || die "buildx installed at $PLUGIN but 'docker buildx version' fails with /usr/bin/docker or $(command -v docker)"
    log "buildx: installed $(docker buildx version | head -n1)"
}

# ---- 4. dockerd --------------------------------------------------------------------
start_dockerd() {
    if docker info >/dev/null 2>&1; then
        log "dockerd: running"
        return
    fi
    log "dockerd: not answering; starting it detached (log: $DOCKERD_LOG)"
    setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    local waited=0
    until docker info >/dev/null 2>&1; do
        ((waited >= 60)) && die "dockerd did not come up within 60 s; last lines of $DOCKERD_LOG:
$(tail -n 25 "$DOCKERD_LOG")"
        sleep 1
        waited=$((waited + 1))
    done
    log "dockerd: up after ${waited} s"
}

# ---- 5. base images ----------------------------------------------------------------
# Import the tarball $2 (a rootfs) as image $1 wherever it is missing.
import_everywhere() {
    local name=$1 tarball=$2 cmd=$3 tmp
    if ! podman image exists "$name"; then
        [[ -f $tarball ]] || die "$name: no $tarball to import"
        podman import --quiet --change "$IMAGE_PATH_ENV" --change "CMD [\"$cmd\"]" \
            "$tarball" "$name" >/dev/null
        log "images: imported $name into podman/buildah storage"
    fi
    if [[ $(docker_image_id "$name") != "$(podman_image_id "$name")" ]]; then
        # podman's very image, saved and loaded (an import of its own would get another
        # ID): one image ID on every engine, so the fingerprints of what is built on it
        # agree across engines, and so does a registry cache shared between them.
        new_scratch
        podman save --quiet --format docker-archive --output "$tmp/image.tar" "$name"
        docker load --quiet --input "$tmp/image.tar" >/dev/null
        log "images: loaded podman's $name into dockerd"
    fi
}

podman_image_id() { echo "sha256:$(podman image inspect --format '{{.Id}}' "$1" 2>/dev/null)"; }
docker_image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

image_missing_somewhere() { # or not the same image in podman and dockerd
    ! podman image exists "$1" || [[ $(docker_image_id "$1") != "$(podman_image_id "$1")" ]]
}

busybox_image() {
    image_missing_somewhere "$BUSYBOX_IMAGE" || return 0
    local tmp root
    new_scratch
    root=$tmp/rootfs
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,run,var/www}
    install -d -m 1777 "$root/tmp"
    install -m 0755 /bin/busybox "$root/bin/busybox"
    # Let busybox itself lay out its applet links (sh, tar, httpd, ...) at their usual paths.
    chroot "$root" /bin/busybox --install -s
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar --numeric-owner -C "$root" -cf "$tmp/rootfs.tar" .
    import_everywhere "$BUSYBOX_IMAGE" "$tmp/rootfs.tar" /bin/sh
}

# busybox-static of architecture $1 from this host's own Debian mirror, through a private
# apt state whose architecture is $1 (no dpkg --add-architecture), laid out like the
# native image (its applet links are listed by the native busybox: the same package
# version has the same applets) and imported with that architecture.
foreign_busybox_image() {
    local arch=$1 name="${BUSYBOX_IMAGE}-linux-$1" mirror tmp root signed_by="" p
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    image_missing_somewhere "$name" || return 0
    if ! podman image exists "$name"; then
        mirror=$(debian_mirror)
        new_scratch
        mkdir -p "$tmp/lists/partial" "$tmp/parts" "$tmp/cache/archives/partial" "$tmp/deb"
        [[ -f $keyring ]] && signed_by="[signed-by=$keyring] "
        echo "deb ${signed_by}${mirror} bookworm main" >"$tmp/sources.list"
        local opts=(
            -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/parts"
            -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
            -o "APT::Sandbox::User=root" -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
        )
        log "images: fetching busybox-static:$arch (private apt state in $tmp)"
        apt-get -q "${opts[@]}" update >/dev/null
        (cd "$tmp/deb" && apt-get -q "${opts[@]}" download busybox-static >/dev/null)
        dpkg -x "$tmp"/deb/busybox-static_*.deb "$tmp/pkg"
        root=$tmp/rootfs
        mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,run,var/www}
        install -d -m 1777 "$root/tmp"
        install -m 0755 "$tmp/pkg/bin/busybox" "$root/bin/busybox"
        for p in $(/bin/busybox --list-full); do
            [[ -e $root/$p || -L $root/$p ]] || ln -s /bin/busybox "$root/$p"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
            >"$root/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
        tar --numeric-owner -C "$root" -cf "$tmp/rootfs.tar" .
        podman import --quiet --arch "$arch" --change "$IMAGE_PATH_ENV" --change 'CMD ["/bin/sh"]' \
            "$tmp/rootfs.tar" "$name" >/dev/null
        log "images: imported $name ($arch) into podman/buildah storage"
    fi
    import_everywhere "$name" /nonexistent /bin/sh
}

# qemu-user-static's binfmt_misc handlers: its own start is blocked by policy-rc.d in
# containers, so mount binfmt_misc and register the handler of each foreign architecture
# from the package's binfmt.d file (flag F: the interpreter is opened now, so containers
# and chroots use it too). Where binfmt_misc cannot be mounted (an unprivileged
# container), say so: the multi-arch tests then skip, naming this.
register_binfmt() {
    local dir=/proc/sys/fs/binfmt_misc arch qemu conf
    if [[ ! -e $dir/register ]] && ! mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null; then
        log "binfmt: cannot mount binfmt_misc here: foreign platforms cannot run (multi-arch tests skip)"
        return 0
    fi
    for arch in "${FOREIGN_ARCHES[@]}"; do
        case $arch in arm64) qemu=aarch64 ;; *) qemu=$arch ;; esac
        conf=/usr/lib/binfmt.d/qemu-$qemu.conf
        if [[ -e $dir/qemu-$qemu ]]; then
            grep -qx enabled "$dir/qemu-$qemu" || echo 1 >"$dir/qemu-$qemu"
        elif [[ -f $conf ]]; then
            cat "$conf" >"$dir/register" || die "could not register $conf with binfmt_misc"
            log "binfmt: registered qemu-$qemu"
        else
            die "no $conf: is qemu-user-static installed?"
        fi
    done
    log "binfmt: $(cd "$dir" && ls -d qemu-* 2>/dev/null | tr '\n' ' ')"
}

bookworm_image() {
    image_missing_somewhere "$BOOKWORM_IMAGE" || return 0
    local tarball=$CACHE_DIR/bookworm-minbase.tar
    if ! podman image exists "$BOOKWORM_IMAGE" && [[ ! -f $tarball ]]; then
        local mirror tmp t0
        mirror=$(debian_mirror bookworm)
        new_scratch
        t0=$(date +%s)
        log "images: debootstrap --variant=minbase bookworm from $mirror (about 25 s)"
        debootstrap --variant=minbase bookworm "$tmp/rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
            die "debootstrap failed; last lines of its log:
$(tail -n 25 "$tmp/debootstrap.log")"
        # Downloaded .debs and the build host's identity do not belong in the image.
        rm -f "$tmp"/rootfs/var/cache/apt/archives/*.deb
        : >"$tmp/rootfs/etc/hostname"
        : >"$tmp/rootfs/etc/resolv.conf"
        mkdir -p "$CACHE_DIR"
        tar --numeric-owner -C "$tmp/rootfs" -cf "$tarball.part" .
        mv "$tarball.part" "$tarball"
        log "images: bookworm rootfs cached at $tarball after $(($(date +%s) - t0)) s"
    fi
    import_everywhere "$BOOKWORM_IMAGE" "$tarball" /bin/bash
}

# ---- 3. podman configuration, only where a probe shows it is needed ---------------
probe_output=""
probe_podman() {
    probe_output=$(podman run --rm "$BUSYBOX_IMAGE" /bin/true 2>&1) &&
        probe_output=$(podman_buildah_run 2>&1)
}

# buildah reads the same containers.conf; check its RUN path too.
podman_buildah_run() {
    local ctr rc=0
    ctr=$(buildah from --pull-never "$BUSYBOX_IMAGE")
    buildah run "$ctr" /bin/true || rc=$?
    buildah rm "$ctr" >/dev/null
    return "$rc"
}

hard_limit() { # prints the hard limit of ulimit flag $1, or nothing when unlimited
    local v
    v=$(ulimit -H "$1")
    [[ $v == unlimited ]] || echo "$v"
}

write_containers_conf() {
    local runtime=$1 ulimits=$2
    if [[ -f $CONF_FILE ]] && ! grep -qF "$CONF_MARKER" "$CONF_FILE"; then
        cp "$CONF_FILE" "$CONF_FILE.before-lowbuild"
        log "podman: kept the previous $CONF_FILE as $CONF_FILE.before-lowbuild"
    fi
    {
        echo "$CONF_MARKER because a probe (podman run) failed without these keys."
        echo "# Re-run scripts/provision.sh after changing it; 'lowbuild doctor' explains each key."
        if [[ -n $ulimits ]]; then
            echo
            echo "[containers]"
            echo "# podman's default RLIMIT_NOFILE/NPROC for root are above this host's hard limits."
            echo "default_ulimits = [$ulimits]"
        fi
        if [[ -n $runtime ]]; then
            echo
            echo "[engine]"
            echo "# crun cannot run containers on hybrid (v1+v2) cgroups; runc can."
            echo "runtime = \"$runtime\""
        fi
    } >"$CONF_FILE"
}

configure_podman() {
    if probe_podman; then
        log "podman: probe run works ($(podman info --format '{{.Host.OCIRuntime.Name}}') runtime)"
        return
    fi
    local runtime="" ulimits="" attempt nofile nproc pid_max changed
    for attempt in 1 2 3; do
        changed=0
        if [[ -z $ulimits ]] && grep -qiE 'setrlimit|error setting rlimit|RLIMIT_' <<<"$probe_output"; then
            nofile=$(hard_limit -n)
            nproc=$(hard_limit -u)
            # Seen on podman 4.3: it runs (and so the runtime sets rlimits) with nproc lowered
            # to kernel.pid_max, so a higher value is refused even when below `ulimit -Hu`.
            pid_max=$(cat /proc/sys/kernel/pid_max)
            if [[ -z $nproc ]] || ((nproc > pid_max)); then nproc=$pid_max; fi
            ulimits=""
            [[ -n $nofile ]] && ulimits="\"nofile=$nofile:$nofile\""
            [[ -n $nproc ]] && ulimits="${ulimits:+$ulimits, }\"nproc=$nproc:$nproc\""
            log "podman: the default rlimits are above what this host allows; setting default_ulimits = [$ulimits]"
            changed=1
        fi
        if [[ -z $runtime ]] && grep -qiE 'crun.*cgroup|cgroups in hybrid mode' <<<"$probe_output"; then
            runtime=runc
            log "podman: crun cannot use this host's hybrid cgroups; setting runtime = runc"
            changed=1
        fi
        ((changed)) || die "podman cannot run $BUSYBOX_IMAGE and the cause is not one provision knows:
$probe_output"
        write_containers_conf "$runtime" "$ulimits"
        if probe_podman; then
            log "podman: probe run works after writing $CONF_FILE (attempt $attempt)"
            return
        fi
    done
    die "podman still cannot run $BUSYBOX_IMAGE with $CONF_FILE:
$probe_output"
}

verify_base_images() {
    local image
    for image in "$BUSYBOX_IMAGE" "$BOOKWORM_IMAGE" "${FOREIGN_ARCHES[@]/#/$BUSYBOX_IMAGE-linux-}"; do
        podman image exists "$image" || die "$image missing from podman storage"
        docker image inspect "$image" >/dev/null 2>&1 || die "$image missing from dockerd"
        [[ $(docker_image_id "$image") == "$(podman_image_id "$image")" ]] ||
            die "$image is not the same image in dockerd as in podman storage"
    done
}

# Order matters: dockerd and the busybox image must exist before podman can be probed.
install_packages
install_buildx
start_dockerd
busybox_image
configure_podman
bookworm_image
for arch in "${FOREIGN_ARCHES[@]}"; do foreign_busybox_image "$arch"; done
register_binfmt
verify_base_images

elapsed_ms=$((($(date +%s%N) - START_NS) / 1000000))
log "done in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000))) s: podman $(podman version --format '{{.Client.Version}}'), buildah $(buildah version --json | sed -n 's/.*"version": "\(.*\)".*/\1/p'), docker $(docker version --format '{{.Server.Version}}'), buildx $(docker buildx version | awk '{print $2}'), images $BUSYBOX_IMAGE $BOOKWORM_IMAGE"
