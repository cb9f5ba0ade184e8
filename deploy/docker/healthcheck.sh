#!/bin/bash
# HEALTHCHECK of the marketd image: GET /healthz (liveness, api.md
# "Operations") on the port of $LISTEN, over loopback. bash's /dev/tcp, so
# the runtime image needs no HTTP client. Exit 0 on HTTP 200, else 1.
#   Usage: marketd-healthcheck [PATH]     (default /healthz)
path=${1:-/healthz}
port=${LISTEN:-0.0.0.0:8080}
port=${port##*:}
case $port in '' | *[!0-9]*) port=8080 ;; esac

exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3 || exit 1
IFS= read -r -t 3 status <&3 || exit 1
case $status in
"HTTP/1."[01]" 200 "*) exit 0 ;;
*) exit 1 ;;
esac
