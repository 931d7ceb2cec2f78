#!/usr/bin/env bash
# Kubernetes end-to-end on kind, the release workflow's `kind` job: the previous release installed
# from its chart with the bundled PostgreSQL, Redis and NATS; data written through the API; an
# upgrade to this commit's chart; `helm test`; the data still there; `helm rollback`; `helm test`
# and the data again. Images come from the OCI layouts `cargo xtask images` writes, imported into
# the node's containerd by digest, so no registry is involved and the chart's pinned digests are
# the ones that run.
#
# Usage: .github/kind-e2e.sh PREVIOUS_CHECKOUT   (a worktree of the previous release, built)
# Needs: kind (cluster "stella" running), helm, kubectl, docker, jq, curl; run from the checkout
# of this commit after `cargo xtask images`.
#
# Not run on the machine this project is tested on (no Kubernetes there); shellcheck checks it.
set -euo pipefail

previous=${1:?usage: kind-e2e.sh PREVIOUS_CHECKOUT}
ns=stella
node=stella-control-plane
api_port=18081

step() { printf '\n== %s\n' "$*"; }

# Imports the images of an OCI layout into the node's containerd. Only the image indexes are
# listed (signatures and other artifacts are not images), each under its full name; then each is
# also named `<repository>@<digest>`, the name the kubelet looks a pinned image up by (an import
# records only the tag).
import_layout() {
    local layout=$1 staged name digest
    staged=$(mktemp -d)
    cp -R "$layout/blobs" "$staged/blobs"
    cp "$layout/oci-layout" "$staged/"
    jq '.manifests |= map(select(.annotations["io.containerd.image.name"] != null))' \
        "$layout/index.json" >"$staged/index.json"
    tar -C "$staged" -cf - . | docker exec -i "$node" ctr -n k8s.io images import --all-platforms -
    jq -r '.manifests[] | "\(.annotations["io.containerd.image.name"]) \(.digest)"' "$staged/index.json" |
        while read -r name digest; do
            docker exec "$node" ctr -n k8s.io images tag --force "$name" "${name%:*}@$digest" >/dev/null
        done
    rm -rf "$staged"
}

# Signs in as the first admin through a port-forward and prints a session token.
login() {
    curl -sf -X POST "localhost:$api_port/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"tenant\": \"default\", \"username\": \"admin\", \"password\": \"$ADMIN_PASSWORD\"}" | jq -r .token
}

scans() {
    curl -sf "localhost:$api_port/api/v1/scans" -H "authorization: Bearer $(login)" | jq '.total'
}

forward() {
    kubectl -n "$ns" port-forward svc/stella-api "$api_port:8081" >/dev/null 2>&1 &
    forwarder=$!
    for _ in $(seq 60); do
        curl -sf "localhost:$api_port/health/liveness" >/dev/null && return 0
        sleep 1
    done
    echo "the API did not answer through the port-forward" >&2
    return 1
}

unforward() {
    kill "$forwarder" 2>/dev/null || true
    wait "$forwarder" 2>/dev/null || true
}

# Every Deployment of the release available, after a change of release.
settled() { kubectl -n "$ns" wait --for=condition=Available deployment --all --timeout=15m; }

step "images of both releases into the node"
import_layout "$previous/target/oci"
import_layout target/oci

step "the previous release ($(git -C "$previous" describe --tags)), bundled dependencies"
kubectl create namespace "$ns"
ADMIN_PASSWORD=$(openssl rand -base64 24)
kubectl -n "$ns" create secret generic stella-admin --from-literal=admin-password="$ADMIN_PASSWORD"
kubectl create priorityclass lab-high --value 1000
values=(-f "$previous/deploy/helm/stella/ci/bundled-values.yaml" --set migrator.admin.existingSecret=stella-admin)
# No --wait: in bundled mode the migrator (which creates the services' database role) is a
# post-install hook, and Helm runs those only after --wait; helm install still waits for hooks.
helm install stella "$previous/deploy/helm/stella" -n "$ns" "${values[@]}" --timeout 15m
settled
helm test stella -n "$ns" --timeout 5m

step "data written through the previous release"
forward
sbom='{"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
  "name": "kind-e2e", "documentNamespace": "https://stella-ops.org/spdx/kind-e2e",
  "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: kind-e2e"]},
  "packages": [{"SPDXID": "SPDXRef-openssl", "name": "openssl", "versionInfo": "3.0.1",
    "downloadLocation": "NOASSERTION",
    "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
      "referenceLocator": "pkg:generic/openssl@3.0.1"}]}]}'
curl -sf -X POST "localhost:$api_port/api/v1/scans?name=kind-e2e" -H "authorization: Bearer $(login)" \
    -H 'content-type: application/json' -d "$sbom" >/dev/null
before=$(scans)
unforward
test "$before" -ge 1

# After a change of release (named $1): every Deployment available, `helm test` passing, and as
# many scans as before.
kept() {
    local now
    settled
    helm test stella -n "$ns" --timeout 5m
    forward
    now=$(scans)
    unforward
    test "$now" -eq "$before" || { echo "$1: $before scans before, $now after" >&2; exit 1; }
}

step "upgrade to this commit"
helm upgrade stella deploy/helm/stella -n "$ns" -f deploy/helm/stella/ci/bundled-values.yaml \
    --set migrator.admin.existingSecret=stella-admin --wait --timeout 15m
kept upgrade

step "roll back to the previous release"
helm rollback stella 1 -n "$ns" --wait --timeout 15m
kept rollback

step "install, helm test, upgrade and rollback kept every scan ($before)"
