#!/usr/bin/env bash
# labs/04-registration/validate-manifests.sh: offline validation of every
# kustomization under labs/*/deploy (CI runs it; no cluster needed).
#
# For each directory with a kustomization.yaml (checks/ folders excluded):
#   1. `kubectl kustomize DIR` must render;
#   2. every rendered object must validate against the Kubernetes
#      $K8S_VERSION OpenAPI schema, strictly (unknown fields are errors), with
#      kubernetes-validate (PyPI; installed with pip when missing).
# The plain test workloads in deploy/checks/ are validated file by file.
#
# One line per kustomization; exit status 1 if anything failed.
#
# Environment: K8S_VERSION (default 1.32.0, the workshop's kubectl),
# KUBERNETES_VALIDATE_VERSION (the pip pin, default 1.37.0).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
k8s_version=${K8S_VERSION:-1.32.0}
kv_pin=${KUBERNETES_VALIDATE_VERSION:-1.37.0}

command -v kubectl >/dev/null || { echo "validate-manifests: kubectl is not on PATH" >&2; exit 2; }

kv=(kubernetes-validate)
if ! command -v kubernetes-validate >/dev/null; then
  if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "validate-manifests: installing kubernetes-validate==$kv_pin (pip)" >&2
    python3 -m pip install --quiet "kubernetes-validate==$kv_pin" >&2 ||
      { echo "validate-manifests: pip install kubernetes-validate failed" >&2; exit 2; }
  fi
  # The console script may land outside PATH (pip --user); the module works.
  command -v kubernetes-validate >/dev/null || kv=(python3 -m kubernetes_validate)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/validate-manifests.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failed=0
n=0

# validate LABEL FILE: one line for FILE's objects; details on failure.
validate() {
  local label=$1 file=$2 objects
  objects=$(grep -c '^kind:' "$file" || true)
  if "${kv[@]}" --kubernetes-version "$k8s_version" --strict --quiet "$file" >"$tmp/kv.log" 2>&1; then
    printf 'ok    %-58s %2d objects\n' "$label" "$objects"
  else
    printf 'FAIL  %-58s schema errors (Kubernetes %s, strict):\n' "$label" "$k8s_version"
    sed 's/^/        /' "$tmp/kv.log"
    failed=1
  fi
}

mapfile -t kustomizations < <(
  find "$repo/labs" -path '*/deploy/*' -name kustomization.yaml -not -path '*/checks/*' -printf '%h\n' | sort
)
((${#kustomizations[@]} > 0)) || { echo "validate-manifests: no kustomization.yaml under labs/*/deploy" >&2; exit 1; }

for dir in "${kustomizations[@]}"; do
  rel=${dir#"$repo"/}
  n=$((n + 1))
  out=$tmp/$n.yaml
  if ! kubectl kustomize "$dir" >"$out" 2>"$tmp/kustomize.log"; then
    printf 'FAIL  %-58s kubectl kustomize failed:\n' "$rel"
    sed 's/^/        /' "$tmp/kustomize.log"
    failed=1
    continue
  fi
  validate "$rel" "$out"
done

# The test workloads the cluster checks apply (after patching names/nodes).
while IFS= read -r file; do
  validate "${file#"$repo"/}" "$file"
done < <(find "$repo/labs" -path '*/deploy/checks/*' -name '*.yaml' | sort)

if ((failed)); then
  echo "validate-manifests: FAILED"
  exit 1
fi
echo "validate-manifests: all manifests render and validate (Kubernetes $k8s_version, strict)"
