#!/bin/sh
# Configure, compile and install nginx from /usr/local/src/nginx-$NGINX_VERSION into
# /apps/nginx (the tutorial's build script). Only the modules the family uses, all
# cores, no debug symbols; the source tree is removed afterwards.
set -eu
: "${NGINX_VERSION:?set NGINX_VERSION}"
src=/usr/local/src/nginx-${NGINX_VERSION}
cd "$src"
./configure \
    --prefix=/apps/nginx \
    --user=nginx --group=nginx \
    --with-http_ssl_module \
    --with-http_v2_module \
    --with-http_realip_module \
    --with-http_stub_status_module \
    --with-http_gzip_static_module \
    --with-pcre \
    --without-mail_pop3_module --without-mail_imap_module --without-mail_smtp_module
make -j"$(nproc)"
make install
strip /apps/nginx/sbin/nginx
ln -sf /apps/nginx/sbin/nginx /usr/sbin/nginx
mkdir -p /data/nginx/html
chown -R nginx:nginx /apps/nginx /data/nginx
cd /
rm -rf "$src" /usr/local/src/build-nginx.sh
/apps/nginx/sbin/nginx -V
