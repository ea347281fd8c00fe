#!/usr/bin/env bash
# Run the operator's tests against a real Kubernetes cluster made by kind, for contributors with Docker.
#
# The CI machines have no Docker, so there the same tests run against the in-process API emulator
# (tests/operator/emulator.py). With KUBECONFIG set, tests/operator uses that cluster instead: it installs the CRD,
# creates a namespace per test, and runs the operator as `agent-cache-operator` on this machine (out of the
# cluster), so the operator and the tests reach the Valkey servers the test fixtures start on 127.0.0.1.
#
#   scripts/kind-e2e.sh [pytest args]      e.g. scripts/kind-e2e.sh -k lifecycle
#
# Environment: KIND_CLUSTER (default agent-cache-e2e), KEEP_CLUSTER=1 to keep it afterwards,
# KIND_NODE_IMAGE to pick a Kubernetes version (e.g. kindest/node:v1.33.1; CEL rules need 1.25+).
# Needs: docker, kind (https://kind.sigs.k8s.io), the dev virtualenv (./dev test creates it).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster="${KIND_CLUSTER:-agent-cache-e2e}"
venv=.venv

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

log "installing the AgentCache CRD"
python -c 'import json, sys; from agent_cache_operator.crd import build_crd; json.dump(build_crd(), sys.stdout)' \
  | kubectl apply -f -
kubectl wait --for=condition=established crd/agentcaches.agentcache.dev --timeout=60s

log "running tests/operator against $cluster"
pytest tests/operator -m k8s "$@"
