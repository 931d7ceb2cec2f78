#!/usr/bin/env bash
# Backs up everything the quickstart needs to come back: a consistent PostgreSQL dump (pg_dump
# inside stella-postgres), the service state volume (exported files, task artifacts, ledger
# checkpoints), the Redis and NATS data, .env and .secrets/, into one tarball with a MANIFEST
# (SHA-256 of every member) and the images (version and digest) that wrote it. The stack keeps
# running. Restore it with ./restore.sh FILE, which checks all of that first.
#
#   ./backup.sh [FILE]     default: backups/stella-backup-<UTC time>.tar.gz
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
case "${1:-}" in -h | --help) sed -n '2,8p' "$here/$(basename "$0")" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
if [ ! -f .env ] || [ ! -d .secrets ]; then die "no .env or .secrets/ here: run ./quickstart.sh first"; fi
# sha256sum on Linux, shasum on macOS: the same output and the same -c.
if command -v sha256sum >/dev/null; then sha=(sha256sum); elif command -v shasum >/dev/null; then sha=(shasum -a 256); else die "neither sha256sum nor shasum is installed"; fi
out="${1:-backups/stella-backup-$(date -u +%Y%m%dT%H%M%SZ).tar.gz}"
mkdir -p "$(dirname "$out")"
id() { "${compose[@]}" ps -q "$1"; }
pg=$(id stella-postgres)
[ -n "$pg" ] || die "stella-postgres is not running: start the stack with ./quickstart.sh"

work=$(mktemp -d)
trap 'rm -rf "$work" "$out.partial"' EXIT
umask 077
# Passwords go to docker by the variable's name only (`-e NAME`), so no command line holds one.
# pg_dump takes one consistent snapshot of the database while the services keep running.
PGPASSWORD=$(cat .secrets/postgres-password) docker exec -e PGPASSWORD "$pg" \
    /usr/lib/postgresql/15/bin/pg_dump -h 127.0.0.1 -U postgres -d stella -Fc >"$work/stella.pgdump" ||
    die "pg_dump failed: is .secrets/postgres-password the database's password? (nothing was written)"
# The service state volume, through a container that mounts it (`docker cp` reads a read-only
# container's volumes without a shell in the image).
state=""
for s in stella-export stella-task-runner stella-ledger; do
    state=$(id "$s")
    [ -z "$state" ] || break
done
[ -n "$state" ] || die "no container mounts the stella-state volume (stella-export, stella-task-runner, stella-ledger): start the stack with ./quickstart.sh"
docker cp "$state:/var/lib/stella" - >"$work/stella-state.tar"
redis=$(id stella-redis)
if [ -n "$redis" ]; then
    # Flush Redis to disk first; `docker cp` reads the volume without a shell in the image.
    REDISCLI_AUTH=$(cat .secrets/redis-password) docker exec -e REDISCLI_AUTH "$redis" redis-cli SAVE >/dev/null
    docker cp "$redis:/data" - >"$work/redis-data.tar"
fi
nats=$(id stella-nats)
[ -z "$nats" ] || docker cp "$nats:/data" - >"$work/nats-data.tar"
cp .env "$work/env"
mkdir "$work/secrets"
for f in .secrets/*; do cp "$f" "$work/secrets/"; done
# The images that wrote this data, as docker-compose.yml pins them: restore.sh refuses a backup
# made by a newer version than the one it restores into.
grep -E '^    image: ' docker-compose.yml | sed -E 's|.*/(stella-[a-z-]+):([^@"]+)@(sha256:[0-9a-f]+).*|\1 \2 \3|' | sort >"$work/IMAGES"
[ -s "$work/IMAGES" ] || die "docker-compose.yml names no pinned image"
printf 'stella-backup 2\n' >"$work/FORMAT"
# Listed before the MANIFEST exists, so it never lists itself.
sums=$(cd "$work" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | while read -r f; do "${sha[@]}" "$f"; done)
printf '%s\n' "$sums" >"$work/MANIFEST"
# Written next to the target, then renamed: a failed or interrupted backup leaves no half file.
tar -C "$work" -czf "$out.partial" .
mv "$out.partial" "$out"
echo "$out"
