#!/usr/bin/env bash
# Deletes the quickstart's data: stops the stack and removes its containers and volumes
# (PostgreSQL, Redis, NATS, service state). .env and .secrets/ are kept, so ./quickstart.sh
# starts again from empty volumes with the same credentials; --all removes them too.
# It asks first, unless --yes.
#
#   ./reset.sh [--yes] [--all]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
yes=0
all=0
for a in "$@"; do
    case "$a" in
        --yes) yes=1 ;;
        --all) all=1 ;;
        -h | --help) sed -n '2,7p' "$here/$(basename "$0")" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) printf 'error: unknown option %s (see --help)\n' "$a" >&2; exit 2 ;;
    esac
done
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
if [ "$yes" != 1 ]; then
    printf '\n  !!! This DELETES every volume of the StellaOps stack in %s:\n' "$here"
    printf '  !!! the database, Redis, NATS and all service state. Back up first: ./backup.sh\n\n'
    printf 'Type "delete" to go on: '
    read -r answer
    [ "$answer" = delete ] || { echo "nothing deleted"; exit 1; }
fi
# docker-compose 1.29 may try to remove the network while a container's endpoint is still
# being released ("has active endpoints"): try again briefly. Docker Engine 20.10 can also leak
# an endpoint for good (the network then lists no container but cannot be removed): the
# containers are gone by then, so the volumes are removed by their project label, and the
# network is left to be reused by the next start.
project=${COMPOSE_PROJECT_NAME:-$(grep '^COMPOSE_PROJECT_NAME=' .env 2>/dev/null | cut -d= -f2)}
project=${project:-$(basename "$here" | tr '[:upper:]' '[:lower:]' | tr -cd '[:lower:][:digit:]_-')}
for attempt in 1 2 3 4 5; do
    "${compose[@]}" down -v --remove-orphans && break
    if [ "$attempt" -eq 5 ]; then
        left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
        [ -z "$left" ] || { printf 'error: containers of %s are still there: %s\n' "$project" "$left" >&2; exit 1; }
        for v in $(docker volume ls -q --filter "label=com.docker.compose.project=$project"); do
            docker volume rm "$v" >/dev/null
        done
        printf 'warning: the network %s_stella-net could not be removed (a Docker Engine endpoint leak); the next start reuses it, and restarting Docker clears it\n' "$project" >&2
        break
    fi
    sleep 2
done
if [ "$all" = 1 ]; then rm -rf .secrets .env; fi
echo "reset done: ./quickstart.sh starts a fresh stack"
