#!/bin/sh
# Compile haproxy from /usr/local/src/haproxy-$HAPROXY_VERSION and install it under
# /apps/haproxy (the tutorial's build script). PCRE2 (the base has libpcre2-dev; PCRE1
# is deprecated), OpenSSL and zlib, all cores; the source tree is removed afterwards.
set -eu
: "${HAPROXY_VERSION:?set HAPROXY_VERSION}"
src=/usr/local/src/haproxy-${HAPROXY_VERSION}
cd "$src"
make -j"$(nproc)" TARGET=linux-glibc \
    USE_PCRE2=1 USE_PCRE2_JIT=1 USE_OPENSSL=1 USE_ZLIB=1
make install-bin PREFIX=/apps/haproxy
strip /apps/haproxy/sbin/haproxy
ln -sf /apps/haproxy/sbin/haproxy /usr/sbin/haproxy
# haproxy drops to this user after binding (global `user`/`group`).
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin haproxy
cd /
rm -rf "$src" /usr/local/src/build-haproxy.sh
/apps/haproxy/sbin/haproxy -vv | head -n 20
