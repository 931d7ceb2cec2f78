#!/usr/bin/env bash
# Restores a backup made by ./backup.sh into this directory's stack. First it checks the archive
# and refuses, changing nothing, one that is damaged or truncated, has a member that does not
# match its MANIFEST (or is not listed there), or was made by a newer StellaOps than the one
# docker-compose.yml runs. Then .env and .secrets/ are put back, the stack is recreated with
# empty volumes, PostgreSQL is restored from the dump before any service starts, the service
# state, Redis and NATS volumes get their data back, and everything starts.
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
        -h | --help) sed -n '2,10p' "$here/$(basename "$0")" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) printf 'error: unknown option %s (see --help)\n' "$a" >&2; exit 2 ;;
        *) file="$a" ;;
    esac
done
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
if [ -z "$file" ] || [ ! -f "$file" ]; then die "usage: ./restore.sh [--yes] FILE (a tarball from ./backup.sh)"; fi
file=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
if command -v sha256sum >/dev/null; then sha=(sha256sum); elif command -v shasum >/dev/null; then sha=(shasum -a 256); else die "neither sha256sum nor shasum is installed"; fi

# --- Check the archive; nothing is touched before this passes -----------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
refuse() { die "$file: $*; nothing was changed"; }
err=$(tar -C "$work" -xzf "$file" 2>&1) || refuse "cannot be read as a backup (truncated or damaged?): $(printf '%s' "$err" | tail -n 1)"
format=$(cat "$work/FORMAT" 2>/dev/null || true)
case "$format" in
    "stella-backup 2") ;;
    "stella-backup 1") refuse "was written by an older backup.sh, without checksums or the service state volume: restore it with the restore.sh of the version that made it" ;;
    *) refuse "is not a backup written by ./backup.sh (no FORMAT)" ;;
esac
[ -f "$work/MANIFEST" ] || refuse "has no MANIFEST"
bad=$(cd "$work" || exit 1; "${sha[@]}" -c MANIFEST 2>&1 | grep -v ': OK$' || true)
[ -z "$bad" ] || refuse "members do not match the MANIFEST: $(printf '%s' "$bad" | tr '\n' ';')"
listed=$(awk '{print $2}' "$work/MANIFEST" | LC_ALL=C sort)
present=$(cd "$work" && find . -type f ! -name MANIFEST | sed 's|^\./||' | LC_ALL=C sort)
unlisted=$(printf '%s\n' "$present" | grep -vxF -f <(printf '%s\n' "$listed") || true)
[ -z "$unlisted" ] || refuse "holds files the MANIFEST does not list: $(printf '%s' "$unlisted" | tr '\n' ' ')"
for member in stella.pgdump stella-state.tar env IMAGES; do
    [ -f "$work/$member" ] || refuse "lacks $member"
done
# The version: a backup from a newer StellaOps holds a schema this stack's code does not know.
images_of() { grep -E '^    image: ' "$1" | sed -E 's|.*/(stella-[a-z-]+):([^@"]+)@(sha256:[0-9a-f]+).*|\1 \2 \3|' | sort; }
version_in() { awk '$1 == "stella-migrator" {print $2}' "$1"; }
images_of docker-compose.yml >"$work.current"
trap 'rm -rf "$work" "$work.current"' EXIT
theirs=$(version_in "$work/IMAGES")
ours=$(version_in "$work.current")
if [ -z "$theirs" ] || [ -z "$ours" ]; then refuse "names no stella-migrator version (IMAGES), or docker-compose.yml does not"; fi
newer() { # newer A B: whether version A (vX.Y.Z) is after B
    awk -v a="${1#v}" -v b="${2#v}" 'BEGIN { split(a, x, /[.-]/); split(b, y, /[.-]/)
        for (i = 1; i <= 3; i++) { if (x[i] + 0 > y[i] + 0) exit 0; if (x[i] + 0 < y[i] + 0) exit 1 } exit 1 }'
}
if newer "$theirs" "$ours"; then
    refuse "was made by StellaOps $theirs, and this stack runs $ours: its database is newer than this code. Restore it with the deploy/compose of $theirs"
elif newer "$ours" "$theirs"; then
    echo "note: the backup was made by $theirs; stella-migrator upgrades its database to $ours when the stack starts"
elif ! cmp -s "$work/IMAGES" "$work.current"; then
    echo "note: the backup's images are other builds of $theirs than this stack's (digests differ)"
fi

if [ "$yes" != 1 ]; then
    printf 'This REPLACES all data of the stack in %s with %s.\nType "restore" to go on: ' "$here" "$file"
    read -r answer
    [ "$answer" = restore ] || die "nothing changed"
fi

# --- Replace ------------------------------------------------------------------------------
# The containers and volumes go as reset.sh removes them (it keeps .env and .secrets/, replaced
# just below, and works around Docker's endpoint leaks).
"$here/reset.sh" --yes >/dev/null
cp "$work/env" .env
rm -rf .secrets && mkdir .secrets && cp "$work"/secrets/* .secrets/ && chmod 700 .secrets && chmod 644 .secrets/*

id() { "${compose[@]}" ps -q "$1"; }
# The containers that mount the volumes are created but not started (nothing waits for them),
# so their data lands in the fresh volumes before anything reads them. `docker cp` refuses a
# read-only container, so the data goes through a temporary container of the same image and
# volume, created but never started (no shell or tar needed in the image).
load_volume() { # load_volume SERVICE MOUNT TARBALL: the volume SERVICE mounts at MOUNT gets TARBALL
    local c vol image tmp
    c=$(id "$1")
    vol=$(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{.Destination}}{{println}}{{end}}{{end}}' "$c" | awk -v d="$2" '$2 == d {print $1}')
    [ -n "$vol" ] || die "$1 mounts no volume at $2"
    image=$(docker inspect -f '{{.Config.Image}}' "$c")
    tmp=$(docker create --user 65532:65532 -v "$vol:$2" "$image")
    docker cp - "$tmp:$(dirname "$2")" <"$3"
    docker rm "$tmp" >/dev/null
}
# --no-deps: Compose would otherwise wait for the dependencies' conditions (a migrator that is
# not started yet) and never return.
"${compose[@]}" up --no-start --no-deps stella-redis stella-nats stella-export
load_volume stella-export /var/lib/stella "$work/stella-state.tar"
[ ! -f "$work/redis-data.tar" ] || load_volume stella-redis /data "$work/redis-data.tar"
[ ! -f "$work/nats-data.tar" ] || load_volume stella-nats /data "$work/nats-data.tar"
# PostgreSQL alone first: the dump is restored before the migrator or any service connects.
"${compose[@]}" up -d stella-postgres
pg=$(id stella-postgres)
for _ in $(seq 120); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$pg")" = healthy ] && break
    sleep 1
done
# The password goes to docker by the variable's name only, so no command line holds it.
PGPASSWORD=$(cat .secrets/postgres-password) docker exec -i -e PGPASSWORD "$pg" \
    /usr/lib/postgresql/15/bin/pg_restore -h 127.0.0.1 -U postgres -d stella --clean --if-exists --no-owner --no-privileges <"$work/stella.pgdump"
echo "restored $file; starting the stack"
exec ./quickstart.sh --timeout 180
