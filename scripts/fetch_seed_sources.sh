#!/usr/bin/env bash
# Fetch the upstream source tarballs the seed family pins (nginx, haproxy) through
# Debian's source archive, for hosts that cannot reach nginx.org / haproxy.org.
#
# Debian's `.orig.tar.gz` of these packages is the upstream release tarball, byte for
# byte; that is checked here against the same sha256 that contexts/*/image.yaml pins,
# so nothing unverified leaves this script.
#
# Usage: fetch_seed_sources.sh [DEST]  (default: $LOWBUILD_SEED_SOURCES, else /var/cache/lowbuild/seed-sources)
# Prints DEST on stdout. The files are then admitted to lowbuild's cache by the
# `lowbuild` on PATH ($LOWBUILD to name another); without one, or when it cannot admit
# them, the script fails. Idempotent: files already in DEST with the right digest are
# kept and nothing is downloaded.
#
# The mirror is the one this host's own apt sources name (scripts/provision_apt_source.py);
# apt runs with a private state, so the host's sources and lists stay untouched.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DEST=${1:-${LOWBUILD_SEED_SOURCES:-/var/cache/lowbuild/seed-sources}}

# upstream file name | Debian source package | upstream version | sha256 (as pinned in image.yaml)
PINS=(
    "nginx-1.22.1.tar.gz|nginx|1.22.1|9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31"
    "haproxy-2.6.12.tar.gz|haproxy|2.6.12|58f9edb26bf3288f4b502658399281cc5d6478468bd178eafe579c8f41895854"
)

log() { echo "fetch_seed_sources: $*" >&2; }
die() { log "error: $*"; exit 1; }

has_digest() { # FILE SHA256
    [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]
}

missing=()
mkdir -p "$DEST"
for pin in "${PINS[@]}"; do
    IFS='|' read -r file _ _ sha <<<"$pin"
    if has_digest "$DEST/$file" "$sha"; then
        log "$file: already in $DEST (sha256 ok)"
    else
        missing+=("$pin")
    fi
done

if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian host"
    mirror=$(python3 "$HERE/provision_apt_source.py") ||
        die "cannot derive the Debian mirror from /etc/apt/sources.list{,.d/}"
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/lists/partial" "$tmp/parts" "$tmp/cache/archives/partial" "$tmp/src"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    signed_by=""
    [[ -f $keyring ]] && signed_by="[signed-by=$keyring] "
    # The release suite and its point-release updates: both carry these packages'
    # source with the same orig tarball; the security suite lives on another host.
    for suite in "$codename" "${codename}-updates"; do
        echo "deb-src ${signed_by}${mirror} ${suite} main"
    done >"$tmp/sources.list"
    opts=(
        -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/parts"
        -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
        -o "APT::Sandbox::User=root"
    )
    log "reading source indexes of ${codename} from ${mirror} (private apt state)"
    apt-get -q "${opts[@]}" update >/dev/null

    for pin in "${missing[@]}"; do
        IFS='|' read -r file package upstream sha <<<"$pin"
        orig="${package}_${upstream}.orig.tar.gz"
        # Every Debian version of this upstream release, newest first: if one 404s
        # (a suite moved on since the index was read), the next has the same orig.
        mapfile -t versions < <(apt-cache "${opts[@]}" showsrc "$package" |
            sed -n 's/^Version: //p' | grep -F "${upstream}-" | sort -u -r -V)
        ((${#versions[@]})) || die "no Debian source of $package $upstream in ${codename}"
        got=""
        for version in "${versions[@]}"; do
            if (cd "$tmp/src" && apt-get -q "${opts[@]}" source --download-only \
                "${package}=${version}" >/dev/null 2>&1) && [[ -f $tmp/src/$orig ]]; then
                got=$version
                break
            fi
            log "$package=$version: download failed, trying the next version"
        done
        [[ -n $got ]] || die "could not download $orig (tried: ${versions[*]})"
        has_digest "$tmp/src/$orig" "$sha" ||
            die "$orig from $package=$got has sha256 $(sha256sum "$tmp/src/$orig" | cut -d' ' -f1), expected $sha; not kept"
        # Same directory as the final name, then rename: DEST never holds a partial file.
        cp "$tmp/src/$orig" "$DEST/.$file.part"
        mv -f "$DEST/.$file.part" "$DEST/$file"
        log "$file: from Debian source $package=$got (sha256 ok)"
    done
fi

# Hand the files to lowbuild's cache: the `lowbuild` on PATH (a wheel, a venv's bin/;
# $LOWBUILD names another). It admits only files whose digest the project pins.
lowbuild_bin=${LOWBUILD:-lowbuild}
command -v "$lowbuild_bin" >/dev/null ||
    die "no \`$lowbuild_bin\` on PATH to admit the files to its cache (they are in $DEST): install lowbuild, or put its venv's bin/ on PATH"
files=()
for pin in "${PINS[@]}"; do
    IFS='|' read -r file _ _ _ <<<"$pin"
    files+=("$DEST/$file")
done
"$lowbuild_bin" cache add -f "$ROOT/lowbuild.yaml" "${files[@]}" >&2 ||
    die "\`$lowbuild_bin cache add\` could not admit ${files[*]} (its message is above)"

echo "$DEST"
