#!/usr/bin/env bash
# scripts/kind-up.sh: one command from a machine with Docker and kind to a
# kind cluster running the finished driver.
#
#   sudo bash scripts/kind-up.sh
#
#   1. checks for a running Docker engine (`docker info`), kind and kubectl;
#   2. prepares the host directories kind-config.yaml mounts into the nodes
#      (the shared "SAN" and each worker's local disks) and the loop driver;
#   3. creates the kind cluster from kind-config.yaml, unless it exists;
#   4. builds the csi-workshop:0.1.0 image (Dockerfile) and loads it onto
#      the nodes;
#   5. applies lab 04's driver (labs/04-registration/deploy/overlays/$REGISTRAR)
#      and, when lab 05 is there, its StorageClasses;
#   6. waits for the controller Deployment and the node DaemonSet, and for
#      kubelet to register the driver on every worker;
#   7. prints the CSIDriver, the CSINodes and the StorageClasses, and what
#      to do next.
# Running it again is safe: it reuses the cluster and re-applies.
#
# Environment:
#   REGISTRAR           official-registrar (default) or rust-registrar
#   KIND_CLUSTER        the cluster's name (default csi-workshop, as in
#                       kind-config.yaml)
#   CLUSTER_SKIP_BUILD  1: load the local csi-workshop:0.1.0 image as it is
# and those of labs/cluster-lib.sh (CLUSTER_SAN_DIR, CLUSTER_DISKS_DIR, ...).
#
# Without Docker, kind or kubectl it exits 1 and says which is missing.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

REGISTRAR=${REGISTRAR:-official-registrar}
KIND_CLUSTER=${KIND_CLUSTER:-csi-workshop}
# What labs/cluster-lib.sh reads: the workspace to build, and how to load the
# image (kind, into $KIND_CLUSTER). It needs nothing from check-lib.sh for
# the functions used here.
WS=$repo
REPO_ROOT=$repo
CLUSTER_MODE=kind
export WS REPO_ROOT CLUSTER_MODE KIND_CLUSTER
# shellcheck source=labs/cluster-lib.sh
. labs/cluster-lib.sh

say() { printf '\n== %s\n' "$*"; }
die() {
  printf 'kind-up: %s\n' "$1" >&2
  shift
  local line
  for line in "$@"; do printf '         %s\n' "$line" >&2; done
  exit 1
}

overlay=labs/04-registration/deploy/overlays/$REGISTRAR
classes05=labs/05-storageclass/deploy/storageclasses
[[ -d $overlay ]] || die "no overlay $overlay: REGISTRAR must be official-registrar or rust-registrar"

# ------------------------------------------------------------------ 1. tools
say "checking Docker, kind and kubectl"
command -v docker >/dev/null ||
  die "no Docker engine: the docker command is not on PATH." \
    "kind runs every Kubernetes node as a Docker container; install Docker Engine" \
    "(https://docs.docker.com/engine/install/) and start it."
if ! docker_err=$(timeout 30 docker info 2>&1 >/dev/null); then
  die "no Docker engine: 'docker info' failed:" \
    "$(printf '%s' "$docker_err" | grep -v '^$' | tail -n 3 | tr '\n' ' ')" \
    "start the engine (systemctl start docker) or run this script as a user who may use it (sudo)."
fi
command -v kind >/dev/null ||
  die "kind is not on PATH ($PATH)." \
    "install it: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
command -v kubectl >/dev/null ||
  die "kubectl is not on PATH ($PATH)." \
    "install it: https://kubernetes.io/docs/tasks/tools/#kubectl"
echo "docker: $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), $(kind version), kubectl $(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n 1)"
if [[ $(id -u) != 0 && ! -e /dev/loop-control ]]; then
  echo "warning: /dev/loop-control is missing and you are not root: block volumes need the loop driver (sudo modprobe loop)" >&2
fi

# ------------------------------------------------------------------ 2. host
say "preparing the host directories kind-config.yaml mounts"
cluster_prepare_host

# ------------------------------------------------------------------ 3. cluster
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  say "reusing the kind cluster $KIND_CLUSTER"
else
  say "creating the kind cluster $KIND_CLUSTER (kind-config.yaml: one control plane, two workers)"
  kind create cluster --name "$KIND_CLUSTER" --config kind-config.yaml --wait 180s
fi
# Points the current kubectl context at the cluster (kind-$KIND_CLUSTER).
kind export kubeconfig --name "$KIND_CLUSTER"

# ------------------------------------------------------------------ 4. image
if [[ ${CLUSTER_SKIP_BUILD:-0} == 1 ]]; then
  say "loading the local $CLUSTER_IMAGE image onto the nodes (CLUSTER_SKIP_BUILD=1)"
else
  say "building $CLUSTER_IMAGE (a first build compiles the workspace: several minutes) and loading it"
fi
cluster_build_and_load_image "$repo"

# ------------------------------------------------------------------ 5. apply
say "applying $overlay"
cluster_apply "$overlay"
if [[ -d $classes05 ]]; then
  say "applying lab 05's StorageClasses ($classes05)"
  cluster_apply "$classes05"
fi

# ------------------------------------------------------------------ 6. wait
diagnostics() {
  local file
  file=$(mktemp "${TMPDIR:-/tmp}/kind-up-diagnostics.XXXXXX.txt")
  cluster_dump_diagnostics "$CLUSTER_NAMESPACE" "$file"
}
say "waiting for the controller Deployment and the node DaemonSet"
cluster_wait_rollout deployment/csi-controller 300s || { diagnostics; die "the controller Deployment did not roll out (diagnostics above)"; }
cluster_wait_rollout daemonset/csi-node 300s || { diagnostics; die "the node DaemonSet did not roll out (diagnostics above)"; }

# _registered NODE: whether NODE's CSINode lists our driver.
_registered() {
  kubectl --request-timeout=30s get csinode "$1" \
    -o jsonpath='{.spec.drivers[?(@.name=="csi.workshop.dev")].nodeID}' | grep -q .
}
say "waiting for kubelet to register csi.workshop.dev on every worker"
mapfile -t workers < <(cluster_workers)
((${#workers[@]} > 0)) || die "the cluster has no schedulable worker node: kubectl get nodes"
for node in "${workers[@]}"; do
  if cluster_poll 120 _registered "$node" >/dev/null; then
    echo "$node: registered"
  else
    diagnostics
    die "kubelet did not register csi.workshop.dev on $node within 120 s" \
      "read the registrar's log: kubectl -n $CLUSTER_NAMESPACE logs -l app.kubernetes.io/component=node --all-containers --prefix" \
      "and kubelet's: docker exec $node journalctl -u kubelet | grep -i csi"
  fi
done

# ------------------------------------------------------------------ 7. report
say "kubectl get csidriver,csinode,storageclass"
kubectl get csidriver,csinode,storageclass

cat <<EOF

The driver runs in kind cluster '$KIND_CLUSTER' (registrar: $REGISTRAR).
Next:
  kubectl -n $CLUSTER_NAMESPACE get pods -o wide
  kubectl -n $CLUSTER_NAMESPACE apply -f labs/04-registration/deploy/checks/pvc-file.yaml
  kubectl -n $CLUSTER_NAMESPACE get pvc file-claim -w
  labs/04-registration/check.sh --stages cluster --keep    # lab 04's cluster assertions
  kind delete cluster --name $KIND_CLUSTER                  # remove it all
EOF
