#!/usr/bin/env bash
# The README's Kubernetes install path, end to end on a kind cluster, then the operator's tests against that cluster.
#
# 1. exactly the README's steps: `./dev image` (docker build), `kind load docker-image`, `helm install`, a Valkey and
#    the example AgentCache, `kubectl get agentcaches` — and it waits until that AgentCache is Ready, which proves
#    the operator image runs in the cluster and reconciles;
# 2. then (unless INSTALL_ONLY=1) it uninstalls the release and runs tests/operator with KUBECONFIG set: there the
#    operator runs as `agent-cache-operator` on this machine (out of the cluster), so it and the tests reach the
#    Valkey servers the test fixtures start on 127.0.0.1.
#
# The CI machines have no Docker, so there tests/operator runs against the in-process API emulator
# (tests/operator/emulator.py) and tests/observability/test_dockerfile.py checks the image's build context.
#
#   scripts/kind-e2e.sh [pytest args]      e.g. scripts/kind-e2e.sh -k lifecycle
#
# Environment: KIND_CLUSTER (default agent-cache-e2e), KEEP_CLUSTER=1 to keep it afterwards, INSTALL_ONLY=1 to stop
# after the install path, KIND_NODE_IMAGE to pick a Kubernetes version (e.g. kindest/node:v1.33.1; 1.29+).
# Needs: docker, kind (https://kind.sigs.k8s.io), the dev virtualenv (./dev test creates it; kubectl and helm are
# installed into it).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster="${KIND_CLUSTER:-agent-cache-e2e}"
venv=.venv
release=agent-cache-operator
release_namespace=agent-cache

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v docker >/dev/null || die "docker is required"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
command -v kind >/dev/null || die "kind is required: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
[ -x "$venv/bin/python" ] || die "no $venv: run ./dev test once (it installs the dev dependencies)"
scripts/install-k8s-tools.sh "$venv/bin"
export PATH="$PWD/$venv/bin:$PATH"

kubeconfig="$(mktemp -t kind-agent-cache.XXXXXX)"
created=0
cleanup() {
  if [ "$created" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    log "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  rm -f "$kubeconfig"
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -x "$cluster" >/dev/null; then
  log "using the existing kind cluster $cluster"
  kind export kubeconfig --name "$cluster" --kubeconfig "$kubeconfig"
else
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --kubeconfig "$kubeconfig" --wait 120s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
  created=1
fi
export KUBECONFIG="$kubeconfig"

# ── the README's install path (README.md, "Kubernetes") ──────────────────────
image=$(./dev image --print)
log "building $image"
./dev image
log "loading $image into kind"
kind load docker-image "$image" --name "$cluster"
if helm status "$release" --namespace "$release_namespace" >/dev/null 2>&1; then
  log "removing the release left in $cluster by an earlier run"
  helm uninstall "$release" --namespace "$release_namespace" --wait
fi
log "helm install $release"
helm install "$release" charts/agent-cache-operator --namespace "$release_namespace" --create-namespace \
  --wait --timeout 180s
kubectl rollout status "deployment/$release" --namespace "$release_namespace" --timeout=120s
log "a Valkey for the example, and the example AgentCache"
kubectl create deployment valkey --image=valkey/valkey:8.1 --port=6379 --dry-run=client -o yaml | kubectl apply -f -
kubectl expose deployment valkey --port=6379 --dry-run=client -o yaml | kubectl apply -f -
kubectl rollout status deployment/valkey --timeout=180s
kubectl apply -f manifests/examples/agentcache-minimal.yaml
if ! kubectl wait --for=condition=Ready agentcache/support-bot --timeout=120s; then
  kubectl get agentcache support-bot -o yaml || true
  kubectl logs "deployment/$release" --namespace "$release_namespace" --tail=100 || true
  die "the example AgentCache did not become Ready"
fi
kubectl get agentcaches
log "the install path works"

[ "${INSTALL_ONLY:-0}" = 1 ] && exit 0

# ── the operator's tests, against this cluster ───────────────────────────────
# The in-cluster operator would reconcile the tests' AgentCaches too: remove the example (its finalizer needs the
# operator) and the release first. The CRDs stay (crds.keep).
kubectl delete -f manifests/examples/agentcache-minimal.yaml --wait=true --timeout=60s
helm uninstall "$release" --namespace "$release_namespace" --wait
log "running tests/operator against $cluster"
pytest tests/operator -m k8s "$@"
