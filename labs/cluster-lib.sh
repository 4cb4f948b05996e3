# shellcheck shell=bash
# labs/cluster-lib.sh: helpers for the cluster stage of the lab checks.
# Source it after check-lib.sh (it uses note, check, on_exit, cluster_up and
# the variables check_init exports: WS, REPO_ROOT, CLUSTER_MODE, KIND_CLUSTER,
# LOG_DIR, KEEP). It sources nothing and defines only functions.
#
#   source "$REPO_ROOT/labs/cluster-lib.sh"
#   if stage cluster "in a kind cluster"; then
#     cluster_stage_run cluster_checks_lab02     # from 04-registration/cluster-checks.sh
#   fi
#
# Every wait has a timeout; every retry loop has a bound.
#
# Environment:
#   CLUSTER_IMAGE        the image the manifests use (default csi-workshop:0.1.0;
#                        the manifests hard-code that name, so change both)
#   CLUSTER_NAMESPACE    default csi-workshop
#   CLUSTER_SKIP_BUILD   1: don't `docker build`, use the local image as it is
#   IMAGE_LOAD_CMD       how to put the image on the nodes, the image name is
#                        appended: e.g. "minikube image load", "k3d image import
#                        -c NAME", or ":" when the nodes already have it.
#                        Default: kind load (for --cluster existing, only when
#                        the kubectl context is a kind cluster, kind-NAME).
#   CLUSTER_BUILD_TIMEOUT  seconds for build + load (default 2400: a first
#                        release build of the workspace takes a while)
#   CLUSTER_SAN_DIR, CLUSTER_DISKS_DIR  the host directories kind-config.yaml
#                        mounts (default /tmp/csi-workshop/san, .../disks)

CLUSTER_IMAGE=${CLUSTER_IMAGE:-csi-workshop:0.1.0}
CLUSTER_NAMESPACE=${CLUSTER_NAMESPACE:-csi-workshop}
_CLUSTER_IMAGE_READY=0

# cluster_stage_run FUNCTION [ARGS...]: the usual body of a cluster stage:
# one SKIP when no cluster can be had; otherwise prepare the host (kind),
# bring the cluster up and run FUNCTION.
cluster_stage_run() {
  if ! cluster_available; then
    cluster_stage_unavailable
    return 0
  fi
  if [[ $CLUSTER_MODE == kind ]]; then
    check "the host directories kind-config.yaml mounts exist" \
      "create them by hand: mkdir -p /tmp/csi-workshop/san /tmp/csi-workshop/disks/worker{1,2}" \
      cluster_prepare_host || return 1
  fi
  cluster_up || return 1
  "$@"
}

# cluster_prepare_host: creates the host directories that kind-config.yaml
# mounts into the nodes (the SAN and each worker's local disks) and makes
# sure the loop driver is there. Run it before `kind create cluster`.
cluster_prepare_host() {
  local san=${CLUSTER_SAN_DIR:-/tmp/csi-workshop/san} disks=${CLUSTER_DISKS_DIR:-/tmp/csi-workshop/disks}
  mkdir -p "$san" "$disks/worker1" "$disks/worker2" || return 1
  if [[ ! -e /dev/loop-control ]]; then
    modprobe loop 2>/dev/null || echo "warning: /dev/loop-control is missing and 'modprobe loop' failed; block volumes need the loop driver" >&2
  fi
  echo "host directories ready: $san $disks/worker1 $disks/worker2"
}

# cluster_build_image [CONTEXT]: docker build -t $CLUSTER_IMAGE, from the
# graded workspace by default (its Dockerfile, or this repository's).
cluster_build_image() {
  local context=${1:-$WS} dockerfile
  dockerfile=$context/Dockerfile
  [[ -f $dockerfile ]] || dockerfile=$REPO_ROOT/Dockerfile
  DOCKER_BUILDKIT=1 docker build -t "$CLUSTER_IMAGE" -f "$dockerfile" "$context"
}

# cluster_load_image: puts $CLUSTER_IMAGE on every node (see IMAGE_LOAD_CMD).
cluster_load_image() {
  local ctx name archive cmd=()
  if [[ -n ${IMAGE_LOAD_CMD:-} ]]; then
    read -r -a cmd <<<"$IMAGE_LOAD_CMD"
    "${cmd[@]}" "$CLUSTER_IMAGE"
    return
  fi
  case $CLUSTER_MODE in
    kind) name=$KIND_CLUSTER ;;
    *)
      ctx=$(kubectl config current-context 2>/dev/null)
      if [[ $ctx != kind-* ]]; then
        echo "don't know how to load $CLUSTER_IMAGE into the cluster of context '$ctx':" >&2
        echo "set IMAGE_LOAD_CMD (e.g. 'minikube image load', or ':' if the nodes have it)" >&2
        return 1
      fi
      name=${ctx#kind-}
      ;;
  esac
  kind load docker-image "$CLUSTER_IMAGE" --name "$name" && return 0
  # With Docker's containerd image store, `kind load docker-image` can fail
  # on what `docker save` produces for it; an archive works around that.
  echo "kind load docker-image failed; retrying through docker save + kind load image-archive" >&2
  archive=$(mktemp "${TMPDIR:-/tmp}/csi-workshop-image.XXXXXX.tar") || return 1
  docker save -o "$archive" "$CLUSTER_IMAGE" &&
    kind load image-archive "$archive" --name "$name"
  local rc=$?
  rm -f "$archive"
  return "$rc"
}

# cluster_build_and_load_image [CONTEXT]: both, unless CLUSTER_SKIP_BUILD=1.
cluster_build_and_load_image() {
  if [[ ${CLUSTER_SKIP_BUILD:-0} != 1 ]]; then
    cluster_build_image "$@" || return 1
  fi
  cluster_load_image
}

# cluster_image_step: the build-and-load as one check, once per check run.
cluster_image_step() {
  ((_CLUSTER_IMAGE_READY)) && return 0
  CHECK_TIMEOUT=${CLUSTER_BUILD_TIMEOUT:-2400} check \
    "the $CLUSTER_IMAGE image builds and is loaded into the cluster" \
    "read the docker build output; CLUSTER_SKIP_BUILD=1 reuses a local image, IMAGE_LOAD_CMD changes how it is loaded" \
    cluster_build_and_load_image || return 1
  _CLUSTER_IMAGE_READY=1
}

# cluster_apply DIR: kubectl apply -k DIR.
cluster_apply() {
  kubectl apply -k "$1"
}

# cluster_delete DIR [TIMEOUT]: deletes what DIR applied and waits for it to go.
cluster_delete() {
  kubectl delete -k "$1" --ignore-not-found --wait=true --timeout="${2:-180s}"
}

# cluster_wait_rollout RESOURCE [TIMEOUT] [NAMESPACE]: waits until a
# Deployment or DaemonSet (deployment/NAME, daemonset/NAME) has rolled out.
cluster_wait_rollout() {
  kubectl -n "${3:-$CLUSTER_NAMESPACE}" rollout status "$1" --timeout="${2:-180s}"
}

# cluster_poll TIMEOUT_SECONDS COMMAND...: runs COMMAND every second until it
# succeeds; fails (with COMMAND's last output) after TIMEOUT_SECONDS.
cluster_poll() {
  local timeout=$1 end out
  shift
  end=$((SECONDS + timeout))
  while true; do
    if out=$("$@" 2>&1); then
      [[ -z $out ]] || printf '%s\n' "$out"
      return 0
    fi
    if ((SECONDS >= end)); then
      printf 'gave up after %ss; the last attempt said:\n%s\n' "$timeout" "$out" >&2
      return 1
    fi
    sleep 1
  done
}

# One line per node: "<name> TAB <spec.unschedulable> TAB <labels as JSON>".
# A field the node does not have prints as nothing: kubectl's jsonpath
# printer allows missing keys. (A filter such as
# `.items[?(@.spec.unschedulable!=true)]` does not: client-go's jsonpath
# drops the items that lack the field, which is every ordinary node.)
CLUSTER_NODE_FIELDS='{.metadata.name}{"\t"}{.spec.unschedulable}{"\t"}{.metadata.labels}{"\n"}'

# cluster_workers: the schedulable nodes that are not control planes, sorted.
cluster_workers() {
  local out
  out=$(kubectl --request-timeout=30s get nodes -o jsonpath="{range .items[*]}$CLUSTER_NODE_FIELDS{end}") || return 1
  cluster_workers_from_nodes <<<"$out" | sort
}

# cluster_workers_from_nodes: reads CLUSTER_NODE_FIELDS lines on stdin and
# prints the names of the worker nodes: not cordoned (unschedulable: true)
# and without a control-plane role label (node-role.kubernetes.io/
# control-plane, or the older .../master). The label's value is "" on kind
# and kubeadm, so the test is whether the key is present.
cluster_workers_from_nodes() {
  awk -F '\t' '
    $1 == "" { next }
    $2 == "true" { next }
    $3 ~ /"node-role\.kubernetes\.io\/(control-plane|master)"/ { next }
    { print $1 }
  '
}

# cluster_pod_on NODE SELECTOR [NAMESPACE]: the name of the pod matching
# SELECTOR that runs on NODE (empty NODE: any node).
cluster_pod_on() {
  local node=$1 selector=$2 ns=${3:-$CLUSTER_NAMESPACE} field=()
  [[ -z $node ]] || field=(--field-selector "spec.nodeName=$node")
  kubectl -n "$ns" --request-timeout=30s get pods -l "$selector" "${field[@]}" -o jsonpath='{.items[0].metadata.name}'
}

# cluster_dump_diagnostics NAMESPACE [FILE]: what you need to debug a failed
# cluster check: describe of the namespace's pods and claims, of every PV,
# VolumeAttachment and CSINode, the events, and the logs of every container
# of every pod in NAMESPACE (the previous run's too, after a restart). With
# FILE, writes it there and prints only where it is and the pods' state.
cluster_dump_diagnostics() {
  local ns=${1:-$CLUSTER_NAMESPACE} file=${2:-}
  if [[ -n $file ]]; then
    _cluster_diagnostics "$ns" >"$file" 2>&1
    echo "      cluster diagnostics (describe + logs of every container): $file"
    kubectl -n "$ns" get pods -o wide 2>&1 | sed 's/^/      | /'
    return 0
  fi
  _cluster_diagnostics "$ns" 2>&1
}

_cluster_section() { printf '\n===== %s\n' "$*"; }

# A subshell, so the kubectl wrapper below stays in it.
_cluster_diagnostics() (
  ns=$1
  # Called directly, without check's watchdog: no request may hang.
  kubectl() { command kubectl --request-timeout=30s "$@"; }
  _cluster_section "kubectl get nodes"
  kubectl get nodes -o wide --show-labels
  _cluster_section "kubectl -n $ns get all,pvc"
  kubectl -n "$ns" get all,pvc -o wide
  _cluster_section "kubectl get pv,volumeattachments,csinodes,csidrivers,storageclasses"
  kubectl get pv,volumeattachments,csinodes,csidrivers,storageclasses -o wide
  _cluster_section "kubectl -n $ns describe pods"
  kubectl -n "$ns" describe pods
  _cluster_section "kubectl -n $ns describe pvc"
  kubectl -n "$ns" describe pvc
  _cluster_section "kubectl describe pv"
  kubectl describe pv
  _cluster_section "kubectl describe volumeattachments"
  kubectl describe volumeattachments
  _cluster_section "kubectl describe csinodes"
  kubectl describe csinodes
  _cluster_section "kubectl -n $ns get events (oldest first)"
  kubectl -n "$ns" get events --sort-by=.lastTimestamp
  for pod in $(kubectl -n "$ns" get pods -o name); do
    _cluster_section "kubectl -n $ns logs $pod --all-containers --prefix"
    kubectl -n "$ns" logs "$pod" --all-containers --prefix --timestamps
    if kubectl -n "$ns" get "$pod" -o jsonpath='{.status.containerStatuses[*].restartCount}' | grep -q '[1-9]'; then
      _cluster_section "kubectl -n $ns logs $pod --all-containers --prefix --previous"
      kubectl -n "$ns" logs "$pod" --all-containers --prefix --timestamps --previous
    fi
  done
  exit 0
)
