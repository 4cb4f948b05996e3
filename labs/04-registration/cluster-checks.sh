# shellcheck shell=bash
# labs/04-registration/cluster-checks.sh: the cluster assertions of labs 01-04.
# Source it after check-lib.sh and cluster-lib.sh; each lab's check.sh then
# runs its function inside the cluster stage:
#
#   if stage cluster "in a kind cluster"; then
#     cluster_stage_run cluster_checks_lab01     # or _lab02, _lab03, _lab04
#   fi
#
# Each function builds and loads the csi-workshop image (once per run),
# applies the lab's manifests, asserts with check/check_output (PASS/FAIL
# lines), and registers the clean-up with on_exit (skipped with --keep). On a
# failure it writes cluster diagnostics to $LOG_DIR and says where.
#
# The manifests come from this repository (the instructor's copy), the image
# from the graded workspace ($WS): the trainee's code runs in the cluster.
# Override with CLUSTER_DEPLOY_ROOT=<repo root>.

_CC_FAILED=0

# The repository whose labs/*/deploy manifests are applied.
_cc_root() { printf '%s\n' "${CLUSTER_DEPLOY_ROOT:-$REPO_ROOT}"; }

# _cc_k ARGS...: kubectl in the workshop namespace. (No --request-timeout:
# it would cut `exec` and `wait` streams; those carry their own --timeout,
# and check's CHECK_TIMEOUT watchdog bounds everything else.)
_cc_k() { kubectl -n "$CLUSTER_NAMESPACE" "$@"; }
# _cc_get ARGS...: a plain read, which never needs more than 30 s.
_cc_get() { kubectl -n "$CLUSTER_NAMESPACE" --request-timeout=30s get "$@"; }

_cc_fail() { _CC_FAILED=1; }

# _cc_end: when anything failed, the diagnostics; returns 1 then.
_cc_end() {
  if ((_CC_FAILED)); then
    cluster_dump_diagnostics "$CLUSTER_NAMESPACE" "$LOG_DIR/cluster-diagnostics-$LAB_TAG.txt"
    return 1
  fi
  return 0
}

# _cc_deploy DIR: the image, then `kubectl apply -k DIR`, deleted again at exit.
_cc_deploy() {
  local dir=$1 rel
  rel=${dir#"$(_cc_root)"/}
  cluster_image_step || return 1
  if [[ $KEEP == 1 ]]; then
    note "--keep: $rel stays applied; remove it with: kubectl delete -k $dir"
  else
    on_exit "cluster_delete '$dir'"
  fi
  check "kubectl apply -k $rel" \
    "read kubectl's message; 'bash labs/04-registration/validate-manifests.sh' checks the manifests offline" \
    cluster_apply "$dir"
}

# cluster_wait_gone TIMEOUT_SECONDS RESOURCE: waits until RESOURCE (pv/NAME,
# namespaced ones in the workshop namespace) no longer exists.
cluster_wait_gone() {
  cluster_poll "$1" _cc_gone "$2"
}
_cc_gone() {
  local left
  left=$(_cc_get "$1" --ignore-not-found -o name) || return 1
  [[ -z $left ]] || { echo "$left still exists"; return 1; }
}

# _cc_exec_driver POD ARGS...: runs ARGS in POD's csi-driver container.
_cc_exec_driver() {
  local pod=$1
  shift
  _cc_k exec "$pod" -c csi-driver -- "$@"
}

# _cc_csictl POD ARGS...: csictl against the driver socket inside POD.
_cc_csictl() {
  local pod=$1
  shift
  _cc_exec_driver "$pod" csictl --endpoint unix:///csi/csi.sock "$@"
}

# _cc_class_line CLASS: "<provisioner> <is-default-class annotation>".
_cc_class_line() {
  kubectl --request-timeout=60s get storageclass "$1" \
    -o jsonpath='{.provisioner} {.metadata.annotations.storageclass\.kubernetes\.io/is-default-class}'
}

_cc_check_class_not_default() {
  check_output "StorageClass $1 provisions with csi.workshop.dev and is not the cluster default" \
    "kind's own 'standard' class is the default; ours must say storageclass.kubernetes.io/is-default-class: \"false\"" \
    '^csi\.workshop\.dev false$' _cc_class_line "$1" || _cc_fail
}

# ------------------------------------------------------------------ lab 01

# cluster_checks_lab01: csi-lab01 + livenessprobe, whose /healthz is the
# pod's readiness probe. The pod is Ready; renaming the backend directory
# away makes Probe fail (FailedPrecondition) and the pod NotReady; renaming it back
# makes it Ready again.
cluster_checks_lab01() {
  local dir pod sel=app.kubernetes.io/component=lab01
  local backend=/var/lib/csi-workshop/backend
  _CC_FAILED=0
  dir=$(_cc_root)/labs/01-identity/deploy
  _cc_deploy "$dir" || { _cc_fail; _cc_end; return 1; }

  # A Deployment has rolled out when its new pod is Ready, and this pod is
  # Ready when livenessprobe's /healthz, i.e. Probe, says so.
  check "the csi-lab01 pod becomes Ready (livenessprobe's /healthz: Probe says ready)" \
    "describe the pod: a failing readiness probe means Probe answered not ready or not at all" \
    cluster_wait_rollout deployment/csi-lab01 180s || { _cc_fail; _cc_end; return 1; }
  pod=$(cluster_pod_on "" "$sel")
  [[ -n $pod ]] || { check "the csi-lab01 pod exists" "kubectl get pods -n $CLUSTER_NAMESPACE" false; _cc_fail; _cc_end; return 1; }

  check_output "GetPluginInfo from inside the pod names csi.workshop.dev" \
    "csi-lab01 was started with --drivername=csi.workshop.dev" \
    '^name: csi\.workshop\.dev$' _cc_csictl "$pod" identity info || _cc_fail

  check "renaming the backend directory away inside the pod" \
    "the backend is a directory inside an emptyDir, so it can be renamed" \
    _cc_exec_driver "$pod" mv "$backend" "$backend.off" || { _cc_fail; _cc_end; return 1; }
  check_fails_with "Probe now answers FailedPrecondition" \
    "Probe must check that the backend directory is usable, and fail with FAILED_PRECONDITION when it is not" \
    FailedPrecondition _cc_csictl "$pod" identity probe || _cc_fail
  check "the pod turns NotReady (livenessprobe's /healthz fails)" \
    "livenessprobe answers 500 when Probe fails or says not ready; the readiness probe polls every 2 s" \
    _cc_k wait "pod/$pod" --for=condition=Ready=false --timeout=60s || _cc_fail

  check "renaming the backend directory back" "the mv above must have worked" \
    _cc_exec_driver "$pod" mv "$backend.off" "$backend" || { _cc_fail; _cc_end; return 1; }
  check "the pod is Ready again" \
    "Probe must report ready as soon as the directory is back, without a restart" \
    _cc_k wait "pod/$pod" --for=condition=Ready --timeout=60s || _cc_fail
  _cc_end
}

# ------------------------------------------------------------------ lab 02

# cluster_checks_lab02: csi-lab02 with external-provisioner and
# external-attacher. A claim of the lab 02 class (Immediate, file) binds to a
# PV of our driver, the volume exists in the backend, and deleting the claim
# deletes the PV and the volume.
cluster_checks_lab02() {
  local dir claim pv handle line
  local vols=/var/lib/csi-workshop/backend/volumes
  _CC_FAILED=0
  dir=$(_cc_root)/labs/02-controller/deploy
  claim=$dir/checks/pvc.yaml
  _cc_k delete -f "$claim" --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
  _cc_deploy "$dir" || { _cc_fail; _cc_end; return 1; }
  # Registered after the manifests' delete, so it runs before it: the
  # provisioner must still be there to delete the volume.
  [[ $KEEP == 1 ]] || on_exit "_cc_k delete -f '$claim' --ignore-not-found --wait=true --timeout=120s; _cc_wait_our_pvs_gone 180"

  check "the controller Deployment rolls out (csi-lab02, csi-provisioner, csi-attacher)" \
    "look at the pod's events and logs: image pulls, a crashing driver, a sidecar that cannot reach /csi/csi.sock" \
    cluster_wait_rollout deployment/csi-controller 300s || { _cc_fail; _cc_end; return 1; }
  _cc_check_class_not_default csi-workshop-lab02

  check "kubectl apply the lab 02 claim" "see labs/02-controller/deploy/checks/pvc.yaml" \
    _cc_k apply -f "$claim" || { _cc_fail; _cc_end; return 1; }
  check "the claim binds (external-provisioner called CreateVolume)" \
    "kubectl describe pvc lab02-claim -n $CLUSTER_NAMESPACE: the events show the provisioner's errors" \
    _cc_k wait pvc/lab02-claim --for=jsonpath='{.status.phase}'=Bound --timeout=120s || { _cc_fail; _cc_end; return 1; }
  check_output "the claim kept our class and names its PV" \
    "a claim without storageClassName goes to the default class" \
    '^csi-workshop-lab02 pvc-[0-9a-f-]+$' \
    _cc_get pvc lab02-claim -o jsonpath='{.spec.storageClassName} {.spec.volumeName}' || { _cc_fail; _cc_end; return 1; }
  line=$(last_output)
  pv=${line#* }
  check_output "the PV is a CSI volume of csi.workshop.dev with our volume id as handle" \
    "CreateVolume's volume_id becomes spec.csi.volumeHandle" \
    '^csi\.workshop\.dev [A-Za-z0-9._-]+$' \
    kubectl --request-timeout=30s get pv "$pv" -o jsonpath='{.spec.csi.driver} {.spec.csi.volumeHandle}' || { _cc_fail; _cc_end; return 1; }
  line=$(last_output)
  handle=${line#* }
  check "the backend holds the volume ($vols/$handle/data, seen from the controller pod)" \
    "CreateVolume must create <backend>/volumes/<id>/data for a file volume" \
    _cc_k exec deploy/csi-controller -c csi-driver -- test -d "$vols/$handle/data" || _cc_fail

  check "deleting the claim" "kubectl delete pvc lab02-claim" \
    _cc_k delete pvc lab02-claim --wait=true --timeout=60s || { _cc_fail; _cc_end; return 1; }
  check "the PV is deleted (reclaimPolicy Delete: DeleteVolume, then the PV goes)" \
    "kubectl describe pv $pv: a failing DeleteVolume shows in its events" \
    cluster_wait_gone 120 "pv/$pv" || _cc_fail
  check "the volume is gone from the backend" \
    "DeleteVolume must remove <backend>/volumes/<id>" \
    _cc_k exec deploy/csi-controller -c csi-driver -- test ! -e "$vols/$handle" || _cc_fail
  _cc_end
}

# _cc_wait_our_pvs_gone TIMEOUT: until no PV of csi.workshop.dev is left
# (used by the clean-up, before the driver itself is deleted).
_cc_wait_our_pvs_gone() {
  cluster_poll "$1" _cc_no_pvs_left
}
_cc_no_pvs_left() {
  local left
  left=$(kubectl --request-timeout=60s get pv \
    -o jsonpath='{range .items[?(@.spec.csi.driver=="csi.workshop.dev")]}{.metadata.name}{" "}{end}') || return 1
  [[ -z $left ]] || { echo "PVs left: $left"; return 1; }
}

# ------------------------------------------------------------------ lab 03

# cluster_checks_lab03: the full driver as a privileged DaemonSet on the
# workers (no registrar). Inside one of its pods, csictl walks a block and a
# file volume through their whole lifecycle: loop devices, mkfs and mounts
# work inside a kind node.
cluster_checks_lab03() {
  local dir pod node sel=app.kubernetes.io/component=node
  _CC_FAILED=0
  dir=$(_cc_root)/labs/03-node/deploy
  _cc_deploy "$dir" || { _cc_fail; _cc_end; return 1; }

  check "the node DaemonSet rolls out on the workers (csi-lab03 --mode all)" \
    "look at the pods' events and the csi-driver logs" \
    cluster_wait_rollout daemonset/csi-node 300s || { _cc_fail; _cc_end; return 1; }
  pod=$(cluster_pod_on "" "$sel")
  node=$(_cc_get pod "$pod" -o jsonpath='{.spec.nodeName}' 2>/dev/null)
  [[ -n $pod && -n $node ]] || { check "a node plugin pod runs" "kubectl get pods -n $CLUSTER_NAMESPACE -o wide" false; _cc_fail; _cc_end; return 1; }
  note "node plugin pod $pod on $node"

  check_output "NodeGetInfo inside $pod reports the node name $node" \
    "NODE_ID comes from spec.nodeName through the downward API" \
    "^node_id: $node\$" _cc_csictl "$pod" node info || _cc_fail
  check_output "csictl walk --type block inside $pod (loop device, mkfs, mounts)" \
    "read the walk's failing step; the csi-driver logs say more: kubectl logs -n $CLUSTER_NAMESPACE $pod -c csi-driver" \
    'walk complete' _cc_csictl "$pod" walk --type block --size 64Mi --work-dir /tmp/csictl-walk-block || _cc_fail
  check_output "csictl walk --type file inside $pod (bind mounts of a backend directory)" \
    "read the walk's failing step; kubectl logs -n $CLUSTER_NAMESPACE $pod -c csi-driver" \
    'walk complete' _cc_csictl "$pod" walk --type file --size 64Mi --work-dir /tmp/csictl-walk-file || _cc_fail
  _cc_end
}

# ------------------------------------------------------------------ lab 04

# cluster_checks_lab04 [official-registrar|rust-registrar]: the whole driver
# (default overlay: $CLUSTER_REGISTRAR or official-registrar). It runs the
# commands of the chapter's "In the cluster" Verification, in its order:
#   - kubectl -n csi-workshop get pods: the controller 5/5, each node Pod 3/3;
#   - kubectl get csidriver: attachRequired true, podInfoOnMount false;
#   - kubectl get csinode: one driver on every worker;
#   - kubelet registered the driver on every worker: CSINode lists
#     csi.workshop.dev with both topology keys (and its JSON entry), the
#     nodes carry the labels (kubectl get nodes -L) and the nodeid
#     annotation, and the workers share one backend;
#   - the registrar's log has kubelet's NotifyRegistrationStatus(true);
#   - our StorageClasses are not default;
#   - for each volume type: a claim binds (block: only once its pod is
#     scheduled), a pod on one worker writes, the pod is recreated on the
#     other worker and reads the data back; for block, the VolumeAttachment
#     moves to the other node; deleting the claim deletes the PV and the
#     backend volume.
cluster_checks_lab04() {
  local overlay=${1:-${CLUSTER_REGISTRAR:-official-registrar}} deploy dir
  local -a nodes
  _CC_FAILED=0
  deploy=$(_cc_root)/labs/04-registration/deploy
  dir=$deploy/overlays/$overlay
  [[ -d $dir ]] || { check "overlay $overlay exists" "use official-registrar or rust-registrar" false; return 1; }
  _cc_cleanup_lab04_workloads >/dev/null 2>&1
  _cc_deploy "$dir" || { _cc_fail; _cc_end; return 1; }
  [[ $KEEP == 1 ]] || on_exit "_cc_cleanup_lab04_workloads"

  check "the controller Deployment rolls out (csi-lab03 --mode controller + sidecars)" \
    "look at the pod's events and logs: image pulls, a crashing driver, RBAC errors in a sidecar" \
    cluster_wait_rollout deployment/csi-controller 300s || _cc_fail
  check "the node DaemonSet rolls out ($overlay)" \
    "look at the pods' events and the csi-driver and registrar logs" \
    cluster_wait_rollout daemonset/csi-node 300s || { _cc_fail; _cc_end; return 1; }

  mapfile -t nodes < <(_cc_get pods -l app.kubernetes.io/component=node \
    -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u)
  ((${#nodes[@]} > 0)) || { check "node plugin pods run" "kubectl get pods -n $CLUSTER_NAMESPACE -o wide" false; _cc_fail; _cc_end; return 1; }

  _cc_lab04_pods "${#nodes[@]}"
  check_output "kubectl get csidriver: csi.workshop.dev, ATTACHREQUIRED true, PODINFOONMOUNT false" \
    "the CSIDriver object is deploy/base/csidriver/csidriver.yaml; attachRequired: true, podInfoOnMount: false" \
    '^csi\.workshop\.dev +true +false ' kubectl --request-timeout=30s get csidriver || _cc_fail
  _cc_lab04_registration "${nodes[@]}"
  _cc_lab04_registrar_log "$overlay"
  _cc_check_class_not_default csi-workshop-block
  _cc_check_class_not_default csi-workshop-file

  local a=${nodes[0]} b=${nodes[1]:-}
  if [[ -z $b ]]; then
    note "only one node runs the node plugin: the pods are recreated on $a itself"
    b=$a
  fi
  _cc_lab04_move block block-claim "$a" "$b" "$deploy/checks"
  _cc_lab04_move file file-claim "$a" "$b" "$deploy/checks"
  _cc_end
}

# _cc_lab04_pods N_NODES: `kubectl -n csi-workshop get pods`, as the chapter
# shows it: the controller Pod 5/5 Running, N_NODES node Pods 3/3 Running.
_cc_lab04_pods() {
  check_output "kubectl -n $CLUSTER_NAMESPACE get pods: csi-controller 5/5 and $1 csi-node Pod(s) 3/3, Running" \
    "a container that is not ready or restarts: kubectl -n $CLUSTER_NAMESPACE describe pod, and its logs" \
    '^all driver pods ready$' _cc_pods_ready "$1" || _cc_fail
}
_cc_pods_ready() {
  local out
  out=$(_cc_get pods) || return 1
  printf '%s\n' "$out"
  awk -v want="$1" '
    $1 ~ /^csi-controller-/ { c++; if ($2 == "5/5" && $3 == "Running") ok_c++ }
    $1 ~ /^csi-node-/ { n++; if ($2 == "3/3" && $3 == "Running") ok_n++ }
    END {
      # A Pod of an older rollout may still be Terminating: count the ready ones.
      if (ok_c >= 1 && ok_n == want) { print "all driver pods ready"; exit 0 }
      printf "controller pods %d (ready %d), node pods %d (ready %d), want 1 and %d\n", c, ok_c, n, ok_n, want > "/dev/stderr"
      exit 1
    }' <<<"$out"
}

# _cc_lab04_registrar_log OVERLAY: the registrar's side of the registration,
# `kubectl -n csi-workshop logs ds/csi-node -c CONTAINER` (one node's Pod).
_cc_lab04_registrar_log() {
  local container=node-driver-registrar re='Received NotifyRegistrationStatus call.*PluginRegistered:true'
  if [[ $1 == rust-registrar ]]; then
    container=csi-registrar re='kubelet registered the plugin'
  fi
  check_output "kubectl -n $CLUSTER_NAMESPACE logs ds/csi-node -c $container: kubelet's NotifyRegistrationStatus said registered" \
    "no such line: kubelet never finished the registration; read the whole log and kubelet's" \
    "$re" _cc_k logs ds/csi-node -c "$container" --request-timeout=30s || _cc_fail
}

# _cc_lab04_registration NODE...: CSINode, node labels and annotation, one
# shared backend.
_cc_lab04_registration() {
  local node line first=''
  for node in "$@"; do
    check_output "kubelet registered csi.workshop.dev on $node (CSINode: node id and both topology keys)" \
      "no CSINode entry: the registrar's logs, then kubelet's ('docker exec $node journalctl -u kubelet' on kind)" \
      "^$node topology\\.csi\\.workshop\\.dev/backend,topology\\.csi\\.workshop\\.dev/node\$" \
      cluster_poll 120 _cc_csinode_line "$node" || { _cc_fail; continue; }
    check_output "kubectl get csinode $node -o jsonpath: our entry, as JSON" \
      "kubelet writes name, nodeID and topologyKeys from NodeGetInfo" \
      "^\\{.*\"name\":\"csi\\.workshop\\.dev\",\"nodeID\":\"$node\",\"topologyKeys\":\\[.*topology\\.csi\\.workshop\\.dev/backend.*\\]\\}\$" \
      kubectl --request-timeout=30s get csinode "$node" \
      -o jsonpath='{.spec.drivers[?(@.name=="csi.workshop.dev")]}{"\n"}' || _cc_fail
    check_output "kubectl get node $node: the csi.volume.kubernetes.io/nodeid annotation maps our driver to $node" \
      "kubelet writes this annotation with the CSINode entry" \
      "\"csi\\.workshop\\.dev\":\"$node\"" \
      kubectl --request-timeout=30s get node "$node" \
      -o jsonpath='{.metadata.annotations.csi\.volume\.kubernetes\.io/nodeid}{"\n"}' || _cc_fail
    check_output "kubectl get nodes -L ...: $node carries our topology labels" \
      "kubelet sets them from NodeGetInfo's accessible_topology" \
      "^$node .* [^ ]+ +$node *\$" \
      kubectl --request-timeout=30s get nodes -L topology.csi.workshop.dev/backend -L topology.csi.workshop.dev/node || _cc_fail
    check_output "$node carries our topology labels (backend id, node)" \
      "kubelet sets them from NodeGetInfo's accessible_topology" \
      "^[^ ]+ $node\$" _cc_node_topology "$node" || { _cc_fail; continue; }
    line=$(last_output)
    if [[ -z $first ]]; then
      first=${line%% *}
    elif [[ ${line%% *} != "$first" ]]; then
      check "$node is on the same backend as ${1} ($first)" \
        "every node must mount the same SAN directory (kind-config.yaml extraMounts)" false
      _cc_fail
    fi
  done
  check_output "kubectl get csinode: DRIVERS 1 on every worker ($*)" \
    "a worker with 0 drivers has no registration: see the checks above" \
    '^every worker lists one driver$' _cc_csinode_table "$@" || _cc_fail
}
_cc_csinode_table() {
  local out node
  out=$(kubectl --request-timeout=30s get csinode) || return 1
  printf '%s\n' "$out"
  for node in "$@"; do
    awk -v n="$node" '$1 == n && $2 >= 1 { found = 1 } END { exit !found }' <<<"$out" ||
      { echo "$node: no CSINode with a driver" >&2; return 1; }
  done
  echo "every worker lists one driver"
}

# "<nodeID> <topology keys, sorted, comma-separated>" of our driver in NODE's
# CSINode; fails while the driver is not (fully) registered.
_cc_csinode_line() {
  local out id keys
  out=$(kubectl --request-timeout=30s get csinode "$1" \
    -o jsonpath='{.spec.drivers[?(@.name=="csi.workshop.dev")].nodeID}{"|"}{.spec.drivers[?(@.name=="csi.workshop.dev")].topologyKeys[*]}') || return 1
  id=${out%%|*}
  keys=$(tr ' ' '\n' <<<"${out#*|}" | sed '/^$/d' | sort | paste -sd, -)
  [[ -n $id && $keys == *backend*node* ]] || { echo "not registered yet: '$out'"; return 1; }
  echo "$id $keys"
}

# "<backend id> <node label>" from NODE's topology labels.
_cc_node_topology() {
  kubectl --request-timeout=30s get node "$1" \
    -o jsonpath='{.metadata.labels.topology\.csi\.workshop\.dev/backend} {.metadata.labels.topology\.csi\.workshop\.dev/node}'
}

# _cc_app_pod NAME CLAIM NODE CHECKS_DIR: checks/pod.yaml, renamed, using
# CLAIM, pinned to NODE with a nodeSelector, applied.
_cc_app_pod() {
  local name=$1 claim=$2 node=$3 checks=$4 patch
  patch=$(printf '{"metadata":{"name":"%s"},"spec":{"nodeSelector":{"kubernetes.io/hostname":"%s"},"volumes":[{"name":"data","persistentVolumeClaim":{"claimName":"%s"}}]}}' \
    "$name" "$node" "$claim")
  kubectl patch --local -f "$checks/pod.yaml" --type merge -p "$patch" -o yaml | _cc_k apply -f -
}

# The columns of `kubectl get volumeattachments` that the chapter shows.
CC_VA_COLUMNS=PV:.spec.source.persistentVolumeName,NODE:.spec.nodeName,ATTACHED:.status.attached

# _cc_attachments PV: one "<node>=<attached>" line per VolumeAttachment of
# PV, read from `kubectl get volumeattachments -o custom-columns=...`, the
# chapter's command (whose table goes to stderr, into the check's log).
_cc_attachments() {
  local out
  out=$(kubectl --request-timeout=30s get volumeattachments -o "custom-columns=$CC_VA_COLUMNS") || return 1
  printf '%s\n' "$out" >&2
  awk -v pv="$1" 'NR > 1 && $1 == pv { print $2 "=" $3 }' <<<"$out"
}

# _cc_attached_only_to PV NODE: exactly one attachment, to NODE, attached.
_cc_attached_only_to() {
  local out
  out=$(_cc_attachments "$1") || return 1
  echo "$out"
  [[ $out == "$2=true" ]]
}

# _cc_not_attached_to PV NODE: no VolumeAttachment of PV for NODE.
_cc_not_attached_to() {
  local out
  out=$(_cc_attachments "$1") || return 1
  if grep -q "^$2=" <<<"$out"; then
    echo "still attached: $out"
    return 1
  fi
}

# _cc_lab04_move TYPE CLAIM NODE_A NODE_B CHECKS_DIR: one volume's journey.
_cc_lab04_move() {
  local type=$1 claim=$2 a=$3 b=$4 checks=$5 pv handle line token
  local vols=/var/lib/csi-workshop/backend/volumes
  token="$type-written-on-$a-$RANDOM"

  check "kubectl apply the $type claim" "see labs/04-registration/deploy/checks/pvc-$type.yaml" \
    _cc_k apply -f "$checks/pvc-$type.yaml" || { _cc_fail; return 1; }
  if [[ $type == block ]]; then
    check_output "the block claim waits for its first consumer (Pending, no PV yet)" \
      "csi-workshop-block must have volumeBindingMode: WaitForFirstConsumer" \
      '^Pending $' _cc_get pvc "$claim" -o jsonpath='{.status.phase} {.spec.volumeName}' || _cc_fail
  fi

  check "a pod using $claim is scheduled on $a" "kubectl patch --local | kubectl apply failed" \
    _cc_app_pod "app-$type-1" "$claim" "$a" "$checks" || { _cc_fail; return 1; }
  check "it starts: the volume is provisioned, attached, staged and published on $a" \
    "kubectl describe pod app-$type-1 -n $CLUSTER_NAMESPACE: FailedAttachVolume / FailedMount events name the failing RPC" \
    _cc_k wait "pod/app-$type-1" --for=condition=Ready --timeout=240s || { _cc_fail; return 1; }
  check_output "$claim is bound to a PV of its own class" \
    "a claim without storageClassName would go to kind's default class" \
    "^csi-workshop-$type pvc-[0-9a-f-]+\$" \
    _cc_get pvc "$claim" -o jsonpath='{.spec.storageClassName} {.spec.volumeName}' || { _cc_fail; return 1; }
  line=$(last_output)
  pv=${line#* }
  check_output "its PV is a volume of csi.workshop.dev" "CreateVolume's volume_id becomes spec.csi.volumeHandle" \
    '^csi\.workshop\.dev [A-Za-z0-9._-]+$' \
    kubectl --request-timeout=30s get pv "$pv" -o jsonpath='{.spec.csi.driver} {.spec.csi.volumeHandle}' || { _cc_fail; return 1; }
  line=$(last_output)
  handle=${line#* }

  check "the pod on $a writes to the volume" "the volume must be mounted read-write at /data" \
    _cc_k exec "app-$type-1" -- sh -c "echo $token > /data/hello.txt && sync" || { _cc_fail; return 1; }
  if [[ $type == block ]]; then
    check_output "the VolumeAttachment says: attached to $a" \
      "external-attacher calls ControllerPublishVolume and sets status.attached" \
      "^$a=true\$" _cc_attachments "$pv" || _cc_fail
  else
    check_output "the file is in the volume's directory on the backend (seen from the controller)" \
      "a file volume is <backend>/volumes/<id>/data, bind-mounted into the pod" \
      "^$token\$" _cc_k exec deploy/csi-controller -c csi-driver -- cat "$vols/$handle/data/hello.txt" || _cc_fail
  fi

  check "the pod on $a is deleted" "kubectl delete pod app-$type-1 -n $CLUSTER_NAMESPACE" \
    _cc_k delete pod "app-$type-1" --wait=true --timeout=120s || { _cc_fail; return 1; }
  if [[ $type == block && $b != "$a" ]]; then
    check "the attachment to $a goes away (NodeUnpublish, NodeUnstage, ControllerUnpublish)" \
      "kubectl describe volumeattachments: a detach error shows there" \
      cluster_poll 180 _cc_not_attached_to "$pv" "$a" || _cc_fail
  fi

  check "a new pod using $claim is scheduled on $b" "kubectl patch --local | kubectl apply failed" \
    _cc_app_pod "app-$type-2" "$claim" "$b" "$checks" || { _cc_fail; return 1; }
  check "it starts on $b" \
    "kubectl describe pod app-$type-2 -n $CLUSTER_NAMESPACE: Multi-Attach or FailedAttachVolume events mean the old attachment is still there" \
    _cc_k wait "pod/app-$type-2" --for=condition=Ready --timeout=240s || { _cc_fail; return 1; }
  check_output "the pod on $b reads what the pod on $a wrote" \
    "the node must stage the same image/directory, not a fresh one (and not reformat it)" \
    "^$token\$" _cc_k exec "app-$type-2" -- cat /data/hello.txt || _cc_fail
  if [[ $type == block ]]; then
    check_output "the VolumeAttachment moved: attached to $b only" \
      "one VolumeAttachment per (volume, node): the one for $a must be gone" \
      "^$b=true\$" cluster_poll 60 _cc_attached_only_to "$pv" "$b" || _cc_fail
  fi

  check "the pod on $b is deleted" "kubectl delete pod app-$type-2 -n $CLUSTER_NAMESPACE" \
    _cc_k delete pod "app-$type-2" --wait=true --timeout=120s || _cc_fail
  check "deleting $claim" "kubectl delete pvc $claim -n $CLUSTER_NAMESPACE" \
    _cc_k delete pvc "$claim" --wait=true --timeout=60s || { _cc_fail; return 1; }
  check "its PV is deleted (after the detach: DeleteVolume, then the PV goes)" \
    "kubectl describe pv $pv: a failing DeleteVolume shows in its events" \
    cluster_wait_gone 180 "pv/$pv" || _cc_fail
  check "the $type volume is gone from the backend" \
    "DeleteVolume must remove <backend>/volumes/<id>" \
    _cc_k exec deploy/csi-controller -c csi-driver -- test ! -e "$vols/$handle" || _cc_fail
}

# The check workloads of lab 04, and their PVs (while the driver still runs).
_cc_cleanup_lab04_workloads() {
  _cc_k delete pod -l app.kubernetes.io/component=check-app --ignore-not-found --wait=true --timeout=120s
  _cc_k delete pvc block-claim file-claim --ignore-not-found --wait=true --timeout=120s
  _cc_wait_our_pvs_gone 180
}
