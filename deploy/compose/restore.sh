#!/usr/bin/env bash
# Restores a backup made by ./backup.sh into this directory's stack: .env and .secrets/ are put
# back, the stack is recreated with empty volumes, PostgreSQL is restored from the dump before
# any service starts, Redis and NATS get their data back, then everything starts.
# Existing data of this stack is replaced: it asks first, unless --yes.
#
#   ./restore.sh [--yes] FILE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
yes=0
file=""
for a in "$@"; do
    case "$a" in
        --yes) yes=1 ;;
        -h | --help) sed -n '2,7p' "$here/$(basename "$0")" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) file="$a" ;;
    esac
done
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
[ -n "$file" ] && [ -f "$file" ] || die "usage: ./restore.sh [--yes] FILE (a tarball from ./backup.sh)"
file=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$file"
[ "$(cat "$work/FORMAT" 2>/dev/null)" = "stella-backup 1" ] || die "$file is not a backup written by ./backup.sh"
if [ "$yes" != 1 ]; then
    printf 'This REPLACES all data of the stack in %s with %s.\nType "restore" to go on: ' "$here" "$file"
    read -r answer
    [ "$answer" = restore ] || die "nothing changed"
fi

# docker-compose 1.29 may try to remove the network while a container's endpoint is still
# being released ("has active endpoints"): try again briefly.
for attempt in 1 2 3 4 5; do
    "${compose[@]}" down -v --remove-orphans && break
    [ "$attempt" -lt 5 ] || exit 1
    sleep 2
done
cp "$work/env" .env
rm -rf .secrets && cp -r "$work/secrets" .secrets && chmod 700 .secrets && chmod 644 .secrets/*

id() { "${compose[@]}" ps -q "$1"; }
# Redis and NATS created but not started (they depend on nothing, so nothing waits), so their
# data lands in the fresh volumes before they first read them.
# `docker cp` refuses a read-only container, so the data goes through a temporary container of
# the same image and volume, created but never started (no shell or tar needed in the image).
load_volume() { # load_volume SERVICE TARBALL
    local c vol image tmp
    c=$(id "$1")
    vol=$(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{end}}{{end}}' "$c")
    image=$(docker inspect -f '{{.Config.Image}}' "$c")
    tmp=$(docker create --user 65532:65532 -v "$vol:/data" "$image")
    docker cp - "$tmp:/" <"$2"
    docker rm "$tmp" >/dev/null
}
"${compose[@]}" up --no-start stella-redis stella-nats
[ ! -f "$work/redis-data.tar" ] || load_volume stella-redis "$work/redis-data.tar"
[ ! -f "$work/nats-data.tar" ] || load_volume stella-nats "$work/nats-data.tar"
# PostgreSQL alone first: the dump is restored before the migrator or any service connects.
"${compose[@]}" up -d stella-postgres
pg=$(id stella-postgres)
for _ in $(seq 120); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$pg")" = healthy ] && break
    sleep 1
done
docker exec -i -e PGPASSWORD="$(cat .secrets/postgres-password)" "$pg" \
    /usr/lib/postgresql/15/bin/pg_restore -h 127.0.0.1 -U postgres -d stella --clean --if-exists --no-owner --no-privileges <"$work/stella.pgdump"
echo "restored $file; starting the stack"
exec ./quickstart.sh --timeout 180
