#!/bin/sh
# load.sh: verify this StellaOps bundle, then load its images into a registry.
#   ./load.sh --to HOST[:PORT] [--prefix stella] [--insecure | --ca-file CA.pem] [--key cosign.pub | --fingerprint sha256:...]
#   ./load.sh --to docker [--port 5000] [--key cosign.pub | --fingerprint sha256:...]   (this host's Docker, no registry)
#   ./load.sh --verify-only [--key cosign.pub | --fingerprint sha256:... | --trust-embedded]
# The key or fingerprint must come from StellaOps by another channel than this bundle; only
# --trust-embedded accepts the key the bundle carries (proof of integrity, not origin). Without
# any, --verify-only says "intact, origin unknown" and exits 3; a push is refused.
# Nothing is pushed unless bundle.sig (over checksums.txt) and every file check out first.
# A second run uploads nothing; an interrupted run resumes. Written by `cargo xtask bundle`.
# Credentials, when the registry asks: STELLA_REGISTRY_USERNAME, STELLA_REGISTRY_PASSWORD(_FILE).
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

to="" prefix="stella" insecure="" ca="" key="" fingerprint="" verify_only="" jobs="4" embedded="" port="5000"
while [ $# -gt 0 ]; do
    case "$1" in
        --to) to="${2:?--to needs HOST[:PORT]}"; shift 2 ;;
        --prefix) prefix="${2?--prefix needs a value}"; shift 2 ;;
        --insecure) insecure=1; shift ;;
        --ca-file) ca="${2:?--ca-file needs a PEM file}"; shift 2 ;;
        --key) key="${2:?--key needs a file}"; shift 2 ;;
        --fingerprint) fingerprint="${2:?--fingerprint needs sha256:<hex>}"; shift 2 ;;
        --jobs) jobs="${2:?--jobs needs a number}"; shift 2 ;;
        --port) port="${2:?--port needs a number}"; shift 2 ;;
        --verify-only) verify_only=1; shift ;;
        --trust-embedded) embedded=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "load.sh: unknown argument $1" >&2; usage ;;
    esac
done

case "$(uname -m)" in
    x86_64|amd64) arch=amd64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) echo "load.sh: no loader for $(uname -m); this bundle has amd64 and arm64" >&2; exit 2 ;;
esac
loader="$here/bin/stella-load-$arch"

# The loader's arguments, built with `set --` so that paths with spaces stay whole.
if [ -n "$key" ]; then
    set -- --key "$key"
elif [ -n "$fingerprint" ]; then
    set -- --fingerprint "$fingerprint"
elif [ -n "$embedded" ]; then
    echo "load.sh: checking against the key this bundle carries: this proves the bundle is whole, not who made it" >&2
    set -- --trust-embedded
elif [ -n "$verify_only" ]; then
    set --
else
    echo "load.sh: give the signing key (--key FILE) or its fingerprint (--fingerprint sha256:...) as StellaOps published them;" >&2
    echo "         --trust-embedded accepts the fingerprint inside this bundle, which proves integrity only" >&2
    exit 2
fi

if [ -n "$verify_only" ]; then
    exec "$loader" verify --bundle "$here" "$@"
fi
if [ -z "$to" ]; then
    echo "load.sh: --to HOST[:PORT] is required (or --verify-only)" >&2
    usage
fi
if [ "$to" = docker ]; then
    exec "$loader" docker --bundle "$here" --port "$port" --prefix "$prefix" "$@"
fi
[ -n "$insecure" ] && set -- "$@" --insecure
[ -n "$ca" ] && set -- "$@" --ca-file "$ca"
exec "$loader" push --bundle "$here" --to "$to" --prefix "$prefix" --jobs "$jobs" "$@"
