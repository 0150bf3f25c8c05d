#!/bin/sh
# Start Tomcat in the foreground (the tutorial's run_tomcat.sh started it with
# `catalina.sh start` and kept the container alive with `tail -f`): `catalina.sh run`
# execs the JVM, so it is the container's main process and gets its stop signal.
set -eu
: "${CATALINA_HOME:=/apps/tomcat}"
exec "$CATALINA_HOME/bin/catalina.sh" run "$@"
