#!/usr/bin/env bash
# StellaOps quickstart: from a host with Docker to a running, healthy stack.
#
#   ./quickstart.sh                       images from STELLA_REGISTRY (.env), e.g. your mirror
#   ./quickstart.sh --layout ../../target/oci
#                                         images from a local build: pushed into a registry on
#                                         127.0.0.1 (Debian's docker-registry), pulled from there
#
# Safe to run again: .env and .secrets/ are created once and kept; `up` changes only what changed.
# A secret changes only on purpose: ./quickstart.sh --rotate NAME (see --help).
# EXPOSE_PUBLIC=1 binds the published ports on every interface instead of 127.0.0.1.
set -euo pipefail

caller=$(pwd)
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

began=$(date +%s) # the figure printed at the end covers the whole run: checks, images, up, health
layout=""
registry_port="${STELLA_LOCAL_REGISTRY_PORT:-5000}"
timeout=180
wait_healthy=1
rotate=""
rotatable="admin-password postgres-password db-service-password redis-password"

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,11p' "$here/$(basename "$0")" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

Options:
  --layout DIR         push the OCI layout DIR (from `cargo xtask images`) into a local registry first,
                       with the static loader DIR/bin/stella-load-<arch> (nothing is compiled)
  --registry-port N    port of that local registry on 127.0.0.1 (default 5000)
  --timeout SECONDS    how long to wait for every service to be healthy (default 180)
  --no-wait            start the stack and return
  --rotate NAME        change one secret of a running stack everywhere it is used, on purpose:
                       admin-password (ends the admin's sessions), postgres-password,
                       db-service-password or redis-password
  -h, --help           this help
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --layout) layout=$(cd "$caller" && cd "$2" && pwd) || die "--layout $2: no such directory"; shift 2 ;;
        --registry-port) registry_port="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --no-wait) wait_healthy=0; shift ;;
        --rotate)
            rotate="${2:-}"
            case " $rotatable " in *" $rotate "*) ;; *) die "--rotate ${rotate:-(nothing)}: choose one of: $rotatable" ;; esac
            shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done


# --- Preflight ---------------------------------------------------------------------------
step "preflight"
command -v docker >/dev/null || die "docker is not installed: install Docker Engine (20.10 or later)"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable: is it running, and may this user use it (docker group)?"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    v=$(docker-compose version --short 2>/dev/null || echo 0)
    case "$v" in
        1.29.* | [2-9].*) compose=(docker-compose) ;;
        *) die "docker-compose $v is too old: install the Compose v2 plugin (or docker-compose 1.29)" ;;
    esac
else
    die "Docker Compose is missing: install the Compose v2 plugin (docker compose)"
fi
case "$(docker version -f '{{.Server.Arch}}' 2>/dev/null)" in
    amd64 | x86_64 | arm64 | aarch64) ;;
    *) die "the Docker engine runs on $(docker version -f '{{.Server.Arch}}' 2>/dev/null || echo 'an unknown architecture'): the images are built for linux/amd64 and linux/arm64" ;;
esac
free_kib=$(df -Pk . | awk 'NR==2 {print $4}')
[ "${free_kib:-0}" -ge $((2 * 1024 * 1024)) ] || die "less than 2 GiB free under $here: images and volumes need more"

# --- Configuration: .env once, secrets once --------------------------------------------
if [ ! -f .env ]; then
    cp .env.example .env
    step "wrote .env from .env.example"
fi
set_env() { # set_env NAME VALUE: replace or append in .env
    # No `sed -i`: its argument differs between GNU and BSD sed (macOS); a rename is portable.
    if grep -q "^$1=" .env; then sed "s|^$1=.*|$1=$2|" .env >.env.new && mv .env.new .env; else printf '%s=%s\n' "$1" "$2" >>.env; fi
}
if [ "${EXPOSE_PUBLIC:-0}" = 1 ]; then set_env STELLA_BIND 0.0.0.0; fi

# The directory is 0700: only this user can read the secrets on the host. The files are 0644
# inside it because the containers read them as uid 65532 through bind mounts.
umask 077
mkdir -p .secrets
chmod 700 .secrets
random() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32; }
# A secret is made once, on the stack's first run. Once the stack has data, a missing or
# unreadable one is never made again behind the operator's back: the database, the admin
# account and the ledger's checkpoints hold the old one, so a new file would not work (and a
# new admin password printed here would be a lie). Restore it, or rotate it on purpose.
# The project as Compose names it: the environment wins over .env, which wins over the directory.
project=${COMPOSE_PROJECT_NAME:-$(grep '^COMPOSE_PROJECT_NAME=' .env | cut -d= -f2)}
project=${project:-$(basename "$here" | tr '[:upper:]' '[:lower:]' | tr -cd '[:lower:][:digit:]_-')}
has_data=$(docker volume ls -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.volume=pgdata")
kept_secrets="postgres-password redis-password admin-password db-service-password ledger-checkpoint-key"
for s in $kept_secrets; do
    f=".secrets/$s"
    if [ -e "$f" ] && [ ! -r "$f" ]; then
        die "$here/$f is not readable by $(id -un): fix its owner or mode (the files are 0644 in a 0700 directory)"
    fi
    if [ -n "$has_data" ] && [ ! -s "$f" ] && [ "$s" != "$rotate" ]; then
        die "$here/$f is missing or empty, but this stack already has data (volume ${project}_pgdata) made with the old one. A new one would not match it.
  Either restore it from a backup:    ./restore.sh backups/<file>   (puts back .env and .secrets/ with the data)
$(case " $rotatable " in *" $s "*) printf '  or change it on purpose everywhere: ./quickstart.sh --rotate %s\n' "$s" ;; esac)  (./reset.sh --all deletes the data and the secrets: a fresh start)"
    fi
done
first_run=0
for s in postgres-password redis-password admin-password; do
    [ "$s" != "$rotate" ] || continue
    if [ ! -s ".secrets/$s" ]; then random >".secrets/$s"; [ -n "$has_data" ] || first_run=1; fi
done
# The services connect as stella_service, a role that can neither change the schema nor rewrite
# append-only data; the migrator alone uses the owner's URL, and creates that role.
if [ ! -s .secrets/db-service-password ]; then random >.secrets/db-service-password; fi
if [ ! -s .secrets/migrator-database-url ]; then
    printf 'postgres://postgres:%s@stella-postgres:5432/stella\n' "$(cat .secrets/postgres-password)" >.secrets/migrator-database-url
fi
# An earlier quickstart gave the services the owner's URL: they get the role's from now on.
if [ ! -s .secrets/database-url ] || grep -q '^postgres://postgres:' .secrets/database-url; then
    [ -s .secrets/database-url ] && step "the services now connect as stella_service (least privilege), not as postgres"
    printf 'postgres://stella_service:%s@stella-postgres:5432/stella\n' "$(cat .secrets/db-service-password)" >.secrets/database-url
fi
# The ledger signs each tenant's head with a key kept outside the database (stella_core::checkpoint).
if [ ! -s .secrets/ledger-checkpoint-key ]; then
    command -v openssl >/dev/null || { echo "openssl is needed once, to make the ledger's signing key" >&2; exit 1; }
    openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt >.secrets/ledger-checkpoint-key
fi
# The URLs of Redis and NATS, as every service reads them (the Helm chart mounts the same files).
if [ ! -s .secrets/redis-url ]; then
    printf 'redis://:%s@stella-redis:6379\n' "$(cat .secrets/redis-password)" >.secrets/redis-url
fi
if [ ! -s .secrets/queue-url ]; then
    printf 'nats://stella-nats:4222\n' >.secrets/queue-url
fi
chmod 644 .secrets/*
umask 022

# --- Images -------------------------------------------------------------------------------
if [ -n "$layout" ]; then
    registry="127.0.0.1:$registry_port"
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$registry_port") 2>/dev/null; then
        command -v docker-registry >/dev/null ||
            die "no registry on $registry and docker-registry is not installed (apt install docker-registry), or start one there"
        mkdir -p .registry
        cat >.registry/config.yml <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $here/.registry/data
http:
  addr: $registry
EOF
        nohup docker-registry serve .registry/config.yml >.registry/log 2>&1 &
        echo $! >.registry/pid
        for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$registry_port") 2>/dev/null && break; sleep 0.2; done
        step "started a local registry on $registry (stop it with: kill \$(cat $here/.registry/pid))"
    fi
    step "pushing $layout to $registry/stella"
    # The static loader `cargo xtask images` writes beside the layout pushes it: nothing to
    # compile. Only where it cannot run (not Linux, or a layout from an older build) does the
    # workspace's xtask push instead.
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64 | Linux/amd64) loader="$layout/bin/stella-load-amd64" ;;
        Linux/aarch64 | Linux/arm64) loader="$layout/bin/stella-load-arm64" ;;
        *) loader="" ;;
    esac
    if [ -n "$loader" ] && [ -x "$loader" ]; then
        "$loader" push-layout "$layout" --to "$registry" --prefix stella | tail -n 1
    else
        workspace="${STELLA_WORKSPACE:-$(cd "$here/../.." && pwd)}"
        [ -f "$workspace/Cargo.toml" ] || die "$workspace is not the StellaOps workspace: set STELLA_WORKSPACE"
        printf 'note: no loader for this host in %s/bin: compiling xtask to push\n' "$layout" >&2
        (cd "$workspace" && cargo xtask publish --to "$registry/stella" --layout "$layout") | tail -n 1
    fi
    set_env STELLA_REGISTRY "$registry/stella"
fi

# --- Rotate one secret, on purpose ----------------------------------------------------------
# Each new value goes where the old one is used; nothing holds it on a command line.
recreate=()
if [ -n "$rotate" ]; then
    pg=$("${compose[@]}" ps -q stella-postgres)
    if [ -z "$pg" ] || [ "$(docker inspect -f '{{.State.Running}}' "$pg")" != true ]; then
        die "--rotate needs the stack running: start it with ./quickstart.sh first"
    fi
    umask 077
    new=$(random)
    case "$rotate" in
        postgres-password)
            # The old password from its file, or from the migrator's URL if the file is gone.
            old=$(cat .secrets/postgres-password 2>/dev/null || sed -n 's|^postgres://postgres:\([^@]*\)@.*|\1|p' .secrets/migrator-database-url)
            printf "ALTER ROLE postgres PASSWORD '%s';\n" "$new" |
                PGPASSWORD=$old docker exec -i -e PGPASSWORD "$pg" /usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -U postgres -d stella -v ON_ERROR_STOP=1 -q >/dev/null ||
                die "could not change the postgres role's password (is the old one in .secrets/postgres-password or .secrets/migrator-database-url?); nothing changed"
            printf '%s' "$new" >.secrets/postgres-password
            printf 'postgres://postgres:%s@stella-postgres:5432/stella\n' "$new" >.secrets/migrator-database-url
            changed="the postgres role, .secrets/postgres-password, .secrets/migrator-database-url (stella-migrator runs again)"
            recreate=(--force-recreate) ;;
        db-service-password)
            printf '%s' "$new" >.secrets/db-service-password
            printf 'postgres://stella_service:%s@stella-postgres:5432/stella\n' "$new" >.secrets/database-url
            changed="the stella_service role (set by stella-migrator), .secrets/db-service-password, .secrets/database-url; every service restarts"
            recreate=(--force-recreate) ;;
        redis-password)
            printf '%s' "$new" >.secrets/redis-password
            printf 'redis://:%s@stella-redis:6379\n' "$new" >.secrets/redis-url
            changed="Redis's password, .secrets/redis-password, .secrets/redis-url; Redis and every service restart"
            recreate=(--force-recreate) ;;
        admin-password)
            [ ! -f .secrets/admin-password ] || cp .secrets/admin-password .secrets/admin-password.previous
            printf '%s' "$new" >.secrets/admin-password
            chmod 644 .secrets/admin-password
            if ! out=$("${compose[@]}" run --rm -e STELLA_ADMIN_PASSWORD_RESET=true stella-migrator 2>&1); then
                [ ! -f .secrets/admin-password.previous ] || mv .secrets/admin-password.previous .secrets/admin-password
                printf '%s\n' "$out" | tail -n 5 >&2
                die "stella-migrator could not reset the admin's password (its last lines are above); the old one still works"
            fi
            rm -f .secrets/admin-password.previous
            changed="the admin user's password (its sessions ended), .secrets/admin-password" ;;
    esac
    chmod 644 .secrets/*
    umask 022
    step "rotated $rotate: $changed"
fi

# --- Ports: each one free, or already this stack's ---------------------------------------------
# What holds a port, for the message: a container, else the program (lsof on macOS and most
# Linux hosts, ss on the others).
holder() {
    local c
    c=$(docker ps --filter "publish=$1" --format '{{.Names}}' | head -n 1)
    if [ -n "$c" ]; then echo "the container $c"; return; fi
    if command -v lsof >/dev/null; then c=$(lsof -nP -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | awk 'NR == 2 {print $1 " (pid " $2 ")"}'); fi
    if [ -z "$c" ] && command -v ss >/dev/null; then c=$(ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n 1); fi
    echo "${c:-another program}"
}
for var in $(grep -oE '^STELLA_[A-Z_]+_PORT=' .env | tr -d '='); do
    port=${!var:-$(grep "^$var=" .env | cut -d= -f2)}
    [ -n "$port" ] || continue
    [ -z "$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter "publish=$port")" ] || continue
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port ($var) is in use by $(holder "$port"): stop it, or give StellaOps another port in $here/.env ($var=...)"
    fi
done

# --- Start -----------------------------------------------------------------------------------
# When something does not come up: the service, its exit code and its last error line, where
# the troubleshooting guide covers it, and what is left running.
diagnose() { # diagnose SERVICE...
    local s c state code last running
    for s in "$@"; do
        c=$("${compose[@]}" ps -q "$s")
        if [ -z "$c" ]; then
            printf '  %s: not created (it waits for a dependency above)\n' "$s" >&2
            continue
        fi
        state=$(docker inspect -f '{{.State.Status}}{{if .State.Health}}, health {{.State.Health.Status}}{{end}}' "$c")
        code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
        last=$(docker logs --tail 50 "$c" 2>&1 | grep -iE 'error|"level":"(warn|error)"' | tail -n 1)
        [ -n "$last" ] || last=$(docker logs --tail 1 "$c" 2>&1)
        case "$state" in
            exited*) printf '  %s: exit code %s%s\n' "$s" "$code" "$([ "$code" = 78 ] && echo ' (a setting is wrong; the line below names it)')" >&2 ;;
            *) printf '  %s: %s\n' "$s" "$state" >&2 ;;
        esac
        printf '    last error: %s\n' "${last:-(no log output)}" >&2
    done
    running=$("${compose[@]}" ps --services --filter status=running 2>/dev/null | tr '\n' ' ')
    printf '  troubleshooting: docs/operations/troubleshooting.md ("A service will not start")\n' >&2
    printf '  still running: %s\n  stop them with: %s down\n' "${running:-nothing}" "${compose[*]}" >&2
}
exited_with_error() { # the services that exited with a non-zero code
    local ids
    ids=$("${compose[@]}" ps -q)
    [ -n "$ids" ] || return 0
    # $ids is a list of container ids: split on purpose.
    # shellcheck disable=SC2086
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}|{{.State.Status}}|{{.State.ExitCode}}' $ids |
        awk -F'|' '$2 == "exited" && $3 != "0" {print $1}'
}
step "starting the stack (${compose[*]} up -d)"
if ! "${compose[@]}" up -d --quiet-pull ${recreate[@]+"${recreate[@]}"}; then
    failed=$(exited_with_error | tr '\n' ' ')
    printf 'error: the stack did not start%s\n' "${failed:+: $failed failed}" >&2
    # Word splitting of the service list is wanted here.
    # shellcheck disable=SC2086
    diagnose $failed
    exit 1
fi
[ "$wait_healthy" = 1 ] || exit 0

# --- Wait until healthy -------------------------------------------------------------------------
start=$(date +%s)
while :; do
    # docker inspect rather than `compose ps --format`, which docker-compose 1.29 lacks.
    ids=$("${compose[@]}" ps -q)
    # $ids is a list of container ids: split on purpose.
    # shellcheck disable=SC2086
    status=$([ -z "$ids" ] || docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}|{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.ExitCode}}' $ids)
    total=$(printf '%s\n' "$status" | grep -c . || true)
    healthy=$(printf '%s\n' "$status" | awk -F'|' '$3 == "healthy" || ($2 == "exited" && $4 == "0") {n++} END {print n+0}')
    failed=$(printf '%s\n' "$status" | awk -F'|' '$2 == "exited" && $4 != "0" {print $1}')
    elapsed=$(($(date +%s) - start))
    if [ -t 1 ]; then printf '\r    ready %s/%s (%ss)  ' "$healthy" "$total" "$elapsed"; else echo "    ready $healthy/$total (${elapsed}s)"; fi
    if [ -n "$failed" ]; then
        echo
        printf 'error: failed: %s\n' "$(printf '%s' "$failed" | tr '\n' ' ')" >&2
        # shellcheck disable=SC2086
        diagnose $failed
        exit 1
    fi
    [ "$healthy" = "$total" ] && [ "$total" -gt 0 ] && break
    if [ "$elapsed" -ge "$timeout" ]; then
        echo
        waiting=$(printf '%s\n' "$status" | awk -F'|' '!($3 == "healthy" || ($2 == "exited" && $4 == "0")) {print $1}' | tr '\n' ' ')
        printf 'error: not healthy after %ss: %s\n' "$timeout" "$waiting" >&2
        # shellcheck disable=SC2086
        diagnose $waiting
        exit 1
    fi
    sleep 1
done
[ -t 1 ] && echo

# --- Where everything is -----------------------------------------------------------------------
bind=$(grep '^STELLA_BIND=' .env | cut -d= -f2)
host=$([ "$bind" = 0.0.0.0 ] && hostname -f 2>/dev/null || echo 127.0.0.1)
port() { grep "^$1=" .env | cut -d= -f2; }
step "StellaOps is running ($(($(date +%s) - began))s from start to all healthy: checks, images, start-up)"
echo "    Console:  http://$host:$(port STELLA_CONSOLE_PORT)/"
echo "    API:      http://$host:$(port STELLA_API_PORT)/"
if [ "$rotate" = admin-password ]; then
    echo "    Admin:    admin / $(cat .secrets/admin-password)   (new, shown once; kept in $here/.secrets/admin-password)"
elif [ "$first_run" = 1 ]; then
    echo "    Admin:    admin / $(cat .secrets/admin-password)   (shown once; kept in $here/.secrets/admin-password)"
fi
echo "    Stop:     ${compose[*]} down        Backup: ./backup.sh        Reset: ./reset.sh"
