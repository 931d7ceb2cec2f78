#!/usr/bin/env bash
# Backs up the quickstart: a consistent PostgreSQL dump (pg_dump inside stella-postgres), the
# Redis and NATS data (after Redis has written its append-only file), .env and .secrets/, into
# one tarball. The stack keeps running. Restore it with ./restore.sh FILE.
#
#   ./backup.sh [FILE]     default: backups/stella-backup-<UTC time>.tar.gz
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
case "${1:-}" in -h | --help) sed -n '2,6p' "$here/$(basename "$0")" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
[ -f .env ] && [ -d .secrets ] || die "no .env or .secrets/ here: run ./quickstart.sh first"
out="${1:-backups/stella-backup-$(date -u +%Y%m%dT%H%M%SZ).tar.gz}"
mkdir -p "$(dirname "$out")"
id() { "${compose[@]}" ps -q "$1"; }
pg=$(id stella-postgres)
[ -n "$pg" ] || die "stella-postgres is not running: start the stack with ./quickstart.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
# pg_dump takes one consistent snapshot of the database while the services keep running.
docker exec -e PGPASSWORD="$(cat .secrets/postgres-password)" "$pg" \
    /usr/lib/postgresql/15/bin/pg_dump -h 127.0.0.1 -U postgres -d stella -Fc >"$work/stella.pgdump"
redis=$(id stella-redis)
if [ -n "$redis" ]; then
    # Flush Redis to disk first; `docker cp` reads the volume without a shell in the image.
    docker exec -e REDISCLI_AUTH="$(cat .secrets/redis-password)" "$redis" redis-cli SAVE >/dev/null
    docker cp "$redis:/data" - >"$work/redis-data.tar"
fi
nats=$(id stella-nats)
[ -z "$nats" ] || docker cp "$nats:/data" - >"$work/nats-data.tar"
cp .env "$work/env"
cp -r .secrets "$work/secrets"
printf 'stella-backup 1\n' >"$work/FORMAT"
tar -C "$work" -czf "$out" .
echo "$out"
