#!/usr/bin/env bash
# labs/05-storageclass/check.sh [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep]
#
# The instructor check of lab 05 (StorageClasses, binding, the static local
# provisioner). WORKSPACE is the root of a trainee's copy
# (`cargo run -p xtask -- starter 05 --out DIR`); without it, this
# repository's finished code is graded.
#
#   build    the lab's crate compiles (library, local-provisioner, tests)
#   tests    unit tests; tests/local_api.rs (fake API server); tests/local_root.rs
#            (loop-mounted ext4; skipped when not root); the provisioner's tests
#   local    local-provisioner --dry-run on a temp discovery dir holding one
#            loop-mounted image and one plain dir (root), and every
#            kustomization under deploy/ renders (and validates)
#   cluster  lab 04's driver + the lab 05 manifests in kind: binding modes,
#            reclaim policies, expansion, volume types, etcd StatefulSet,
#            local PVs
#
# The hints name sections of the book chapter book/src/labs/05-storageclass.md.
source "$(dirname "${BASH_SOURCE[0]}")/../check-lib.sh"
check_init "$@"

PKG=lab05-storageclass
CH="chapter Lab 05"

is_root() { [[ $(id -u) == 0 && -e /dev/loop-control ]]; }

# ------------------------------------------------------------------ build
if stage build "compile the lab"; then
  check "cargo build -p $PKG --all-targets" \
    "the starter compiles as generated: read the first compiler error (cargo build -p $PKG) and undo the change that caused it" \
    ws_cargo build -p "$PKG" --all-targets
fi

# ------------------------------------------------------------------ tests
if stage tests "the lab's tests"; then
  check "unit tests: cargo test -p $PKG --lib" \
    "the failing test names the decision: classify (Step 2), desired_pv's node affinity (Step 3), plan's Released case (Step 4) in the $CH" \
    ws_cargo test -p "$PKG" --lib --no-fail-fast
  check "fake API server: tests/local_api.rs (create, refuse with an Event, clean a Released PV)" \
    "each test names a flow of Agent::sync; the requests it expected are in the assertion ($CH, Step 5)" \
    ws_cargo test -p "$PKG" --test local_api --no-fail-fast
  if is_root; then
    check "root: tests/local_root.rs (a loop-mounted ext4 disk becomes a PV with its size)" \
      "classify must find the mount in /proc/self/mountinfo; capacity comes from statvfs ($CH, Step 2)" \
      ws_cargo test -p "$PKG" --test local_root --no-fail-fast
  else
    skip "root: tests/local_root.rs" "needs root and /dev/loop-control (loop devices, mkfs, mounts)"
  fi
  # The Rust external-provisioner's tests (src/provisioner, tests/provisioner*.rs).
  for t in "$LAB_DIR"/tests/provisioner*.rs; do
    [[ -e $t ]] || continue
    name=$(basename "$t" .rs)
    check "provisioner: tests/$name.rs" \
      "the failing test names the provisioner's rule ($CH, the provisioner steps)" \
      ws_cargo test -p "$PKG" --test "$name" --no-fail-fast
  done
fi

# ------------------------------------------------------------------ local
# _local_disks DIR: DIR/disks/disk1 (a loop-mounted 64 MiB ext4 image) and
# DIR/disks/plain (a plain directory). Cleaned up at exit.
_local_disks() {
  local dir=$1 dev
  mkdir -p "$dir/disks/disk1" "$dir/disks/plain" &&
    truncate -s 64M "$dir/disk1.img" &&
    mkfs.ext4 -q -F "$dir/disk1.img" &&
    dev=$(losetup --find --show "$dir/disk1.img") &&
    echo "$dev" >"$dir/loopdev" &&
    mount -t ext4 "$dev" "$dir/disks/disk1" &&
    echo "$dir/disks/disk1: $dev"
}
_local_disks_down() {
  local dir=$1
  mountpoint -q "$dir/disks/disk1" && umount "$dir/disks/disk1"
  [[ -f $dir/loopdev ]] && losetup -d "$(cat "$dir/loopdev")" 2>/dev/null
  rm -rf "$dir/disks" "$dir/disk1.img" "$dir/loopdev"
}

if stage local "local-provisioner --dry-run, and the manifests offline"; then
  LP=$(bin local-provisioner)
  if [[ ! -x $LP ]]; then
    skip "local-provisioner --dry-run" "$LP is missing: run the build stage first"
  elif ! is_root; then
    skip "local-provisioner --dry-run on a loop-mounted disk" "needs root and /dev/loop-control (losetup, mkfs, mount)"
  else
    LOCAL=$LOG_DIR/local
    on_exit "_local_disks_down '$LOCAL'"
    if check "a discovery dir with a loop-mounted ext4 disk1 and a plain directory" \
      "losetup, mkfs.ext4 and mount must work on this machine" \
      _local_disks "$LOCAL"; then
      check_output "local-provisioner --dry-run plans one PV, for disk1, pinned to node-a" \
        "scan + plan: classify must accept the mount point and desired_pv name it local-<node>-<entry> ($CH, Steps 2-3)" \
        '^create PV local-node-a-disk1 path=[^ ]+/disks/disk1 capacity=[0-9]+ node=node-a class=local-disks reclaim=Delete$' \
        "$LP" --node-name node-a --discovery-dir "$LOCAL/disks" --dry-run
      out=$(last_output)
      check "... exactly one PV" "only mount points become PVs ($CH, Step 2)" \
        test "$(grep -c '^create PV' <<<"$out")" -eq 1
      check_output "... and refuses the plain directory, saying why" \
        "a directory that is not a mount point is refused with Refusal::NotAMountPoint ($CH, Step 2)" \
        '^refuse [^ ]+/disks/plain: not a mount point: one PV per disk, so capacity and I/O are isolated$' \
        printf '%s\n' "$out"
    fi
  fi

  # The manifests: every kustomization under deploy/ renders.
  while IFS= read -r k; do
    d=$(dirname "$k")
    check "kubectl kustomize ${d#"$CHECK_DIR"/}" \
      "kubectl kustomize $d prints the error" \
      kubectl kustomize "$d"
  done < <(find "$CHECK_DIR/deploy" -name kustomization.yaml | sort)
  VM=$REPO_ROOT/labs/04-registration/validate-manifests.sh
  if [[ -f $VM ]]; then
    # It takes no directory argument: it validates every lab's manifests.
    if command -v kubernetes-validate >/dev/null || python3 -c 'import kubernetes_validate' 2>/dev/null; then
      check_output "validate-manifests.sh: every lab's manifests validate against the schema" \
        "read its FAIL lines: an unknown or misspelt field" \
        'all manifests render and validate' bash "$VM"
    else
      skip "validate-manifests.sh (schema validation)" "kubernetes-validate is not installed (pip install kubernetes-validate)"
    fi
  fi
fi

# ------------------------------------------------------------------ cluster
# _l5_k ARGS: kubectl in the workshop namespace.
_l5_k() { kubectl -n "$CLUSTER_NAMESPACE" "$@"; }
_l5_phase() { kubectl -n "$CLUSTER_NAMESPACE" --request-timeout=30s get "$1" -o jsonpath='{.status.phase}'; }
_l5_is() { [[ $(_l5_phase "$1") == "$2" ]] || { echo "$1 is $(_l5_phase "$1"), not $2"; return 1; }; }
_l5_handle() { # PVC -> its volume handle
  local pv
  pv=$(_l5_k get pvc "$1" -o jsonpath='{.spec.volumeName}') && [[ -n $pv ]] &&
    kubectl get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}'
}
_l5_backend() { _l5_k exec deploy/csi-controller -c csi-driver -- ls /var/lib/csi-workshop/backend/volumes; }
_l5_df_mib() { _l5_k exec "$1" -- df --output=size -BM /data | tail -n 1 | tr -dc 0-9; }
_l5_bigger() { local s; s=$(_l5_df_mib "$1"); echo "df: ${s}M"; ((s > $2)); }
_l5_etcd() { _l5_k exec "$1" -- etcdctl --endpoints=http://127.0.0.1:2379 "${@:2}"; }
_l5_etcd_get() { [[ $(_l5_etcd "$1" get "$2" --print-value-only) == "$3" ]]; }
_l5_pv_of_node() { # PVC NODE: the PVC's local PV is pinned to NODE
  local pv values
  pv=$(_l5_k get pvc "$1" -o jsonpath='{.spec.volumeName}')
  values=$(kubectl get pv "$pv" -o jsonpath='{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}')
  echo "$1 -> $pv on $values"
  [[ $values == "$2" ]]
}
_l5_local_pvs() { # NODE COUNT: the node has COUNT local PVs of ours
  local n
  n=$(kubectl get pv -l "local.csi.workshop.dev/node=$1" -o name | wc -l)
  echo "$1: $n local PVs"
  ((n == $2))
}

_l5_cleanup() {
  local root; root=$(_cc_root)/labs/05-storageclass/deploy
  _l5_k delete -k "$root/local-pv/exercise" --ignore-not-found --wait=true --timeout=120s
  _l5_k delete -k "$root/exercises" --ignore-not-found --wait=true --timeout=180s
  _l5_k delete -k "$root/statefulset-etcd" --ignore-not-found --wait=true --timeout=120s
  _l5_k delete pvc -l app.kubernetes.io/name=etcd --ignore-not-found --timeout=120s
  _l5_k delete pvc data-etcd-0 data-etcd-1 data-etcd-2 --ignore-not-found --wait=true --timeout=120s
  # The Retain exercise's PV and volume stay by design: remove them by hand.
  local pv h
  for pv in $(kubectl get pv -o jsonpath='{range .items[?(@.spec.storageClassName=="retain-block")]}{.metadata.name}{" "}{end}'); do
    h=$(kubectl get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
    kubectl delete pv "$pv" --wait=true --timeout=60s
    [[ -n $h ]] && _l5_k exec deploy/csi-controller -c csi-driver -- rm -rf "/var/lib/csi-workshop/backend/volumes/$h"
  done
  kubectl delete -k "$root/local-pv" --ignore-not-found --wait=true --timeout=120s
  kubectl delete pv -l app.kubernetes.io/managed-by=local-provisioner.csi.workshop.dev --ignore-not-found --timeout=60s
  bash "$root/prepare-local-disks.sh" down
  _cc_wait_our_pvs_gone 180
}

cluster_checks_lab05() {
  local root ex h pvs pod node
  _CC_FAILED=0
  root=$(_cc_root)/labs/05-storageclass/deploy
  ex=$root/exercises
  _cc_deploy "$(_cc_root)/labs/04-registration/deploy/overlays/official-registrar" || { _cc_fail; _cc_end; return 1; }
  [[ $KEEP == 1 ]] || on_exit "_l5_cleanup"
  check "the driver rolls out (lab 04: controller Deployment and node DaemonSet)" \
    "lab 04 must pass first: bash labs/04-registration/check.sh" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE rollout status deployment/csi-controller --timeout=300s && kubectl -n $CLUSTER_NAMESPACE rollout status daemonset/csi-node --timeout=300s" || { _cc_fail; _cc_end; return 1; }
  check "kubectl apply -k deploy/storageclasses (wffc-block, immediate-file, retain-block, expandable-block)" \
    "read kubectl's message" cluster_apply "$root/storageclasses" || { _cc_fail; _cc_end; return 1; }

  # Immediate vs WaitForFirstConsumer (C26)
  check "apply exercises/binding-claims.yaml" "kubectl apply -f" _l5_k apply -f "$ex/binding-claims.yaml" || _cc_fail
  check "immediate-claim binds with no Pod (Immediate)" \
    "kubectl describe pvc immediate-claim: the provisioner's events" \
    _l5_k wait pvc/immediate-claim --for=jsonpath='{.status.phase}'=Bound --timeout=120s || _cc_fail
  sleep 5
  check_output "wffc-claim is still Pending, waiting for its first consumer" \
    "a WaitForFirstConsumer claim must not bind before a Pod uses it ($CH, Concepts: delayed binding)" \
    'waiting for first consumer' _l5_k describe pvc wffc-claim || _cc_fail
  note "$(_l5_k get pvc immediate-claim wffc-claim 2>&1 | sed 's/^/  /')"
  check "apply exercises/binding-pod.yaml; wffc-claim binds" \
    "the scheduler writes volume.kubernetes.io/selected-node, then the provisioner creates the volume" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$ex/binding-pod.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pvc/wffc-claim --for=jsonpath='{.status.phase}'=Bound --timeout=180s && kubectl -n $CLUSTER_NAMESPACE wait pod/wffc-app --for=condition=Ready --timeout=180s" || _cc_fail
  note "$(_l5_k get pvc immediate-claim wffc-claim 2>&1 | sed 's/^/  /')"

  # Delete vs Retain (C20)
  local hd hr pvr
  check "apply exercises/reclaim.yaml; both claims bind and reclaim-app runs" \
    "kubectl describe pod reclaim-app" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$ex/reclaim.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pod/reclaim-app --for=condition=Ready --timeout=240s" || _cc_fail
  hd=$(_l5_handle delete-claim) hr=$(_l5_handle retain-claim)
  pvr=$(_l5_k get pvc retain-claim -o jsonpath='{.spec.volumeName}')
  check "delete reclaim-app, then both claims" "kubectl delete pod reclaim-app; kubectl delete pvc delete-claim retain-claim" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE delete pod reclaim-app --wait=true --timeout=120s && kubectl -n $CLUSTER_NAMESPACE delete pvc delete-claim retain-claim --wait=true --timeout=120s" || _cc_fail
  check "Delete: delete-claim's volume ($hd) disappears from the backend" \
    "reclaimPolicy Delete: external-provisioner calls DeleteVolume" \
    cluster_poll 180 bash -c "! kubectl -n $CLUSTER_NAMESPACE exec deploy/csi-controller -c csi-driver -- ls /var/lib/csi-workshop/backend/volumes | grep -qx '${hd:-none}'" || _cc_fail
  check "Retain: retain-claim's PV ($pvr) is Released" "reclaimPolicy Retain keeps the PV" \
    cluster_poll 60 _l5_is "pv/${pvr:-none}" Released || _cc_fail
  check_output "Retain: its volume ($hr) stays in the backend" "reclaimPolicy Retain: no DeleteVolume" \
    "^${hr:-none}\$" _l5_backend || _cc_fail

  # Expansion
  check "apply exercises/expansion.yaml; grow-app runs" "kubectl describe pod grow-app" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$ex/expansion.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pod/grow-app --for=condition=Ready --timeout=240s" || _cc_fail
  check_output "df in grow-app shows a filesystem of at most 64M" "the claim asked 64Mi" '^df: ([0-9]|[1-5][0-9]|6[0-4])M$' \
    bash -c "s=\$(kubectl -n $CLUSTER_NAMESPACE exec grow-app -- df --output=size -BM /data | tail -n 1 | tr -dc 0-9); echo \"df: \${s}M\"" || _cc_fail
  check "grow grow-claim to 128Mi; its capacity becomes 128Mi" \
    "expandable-block has allowVolumeExpansion; external-resizer calls ControllerExpandVolume" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE patch pvc grow-claim -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"128Mi\"}}}}' && kubectl -n $CLUSTER_NAMESPACE wait pvc/grow-claim --for=jsonpath='{.status.capacity.storage}'=128Mi --timeout=180s" || _cc_fail
  check_output "df in grow-app shows the bigger filesystem (NodeExpandVolume: resize2fs)" \
    "kubelet calls NodeExpandVolume on the mounted volume" '^df: ' cluster_poll 120 _l5_bigger grow-app 64 || _cc_fail

  # Volume types
  check "apply exercises/volume-types.yaml; types-app runs" "kubectl describe pod types-app" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$ex/volume-types.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pod/types-app --for=condition=Ready --timeout=240s" || _cc_fail
  check_output "type block: /data/type-block is ext4 on a loop device" "NodeStage formats and mounts the loop device" \
    '^/dev/loop[0-9]+ ext4$' _l5_k exec types-app -- findmnt -n -o SOURCE,FSTYPE /data/type-block || _cc_fail
  h=$(_l5_handle type-file-claim)
  check_output "type file: /data/type-file is a bind mount of the backend directory" "NodePublish bind-mounts <backend>/volumes/<id>/data" \
    "\\[/.*${h:-none}/data\\]" _l5_k exec types-app -- findmnt -n -o SOURCE /data/type-file || _cc_fail

  # etcd StatefulSet (C24)
  check "kubectl apply -k deploy/statefulset-etcd; three members run" \
    "kubectl describe pod etcd-0; the image is registry.k8s.io/etcd" \
    bash -c "kubectl apply -k '$root/statefulset-etcd' && kubectl -n $CLUSTER_NAMESPACE rollout status statefulset/etcd --timeout=600s" || _cc_fail
  check_output "three numbered claims, data-etcd-0..2, are Bound" "volumeClaimTemplates: one claim per replica" \
    '^data-etcd-0 Bound data-etcd-1 Bound data-etcd-2 Bound $' \
    bash -c "kubectl -n $CLUSTER_NAMESPACE get pvc data-etcd-0 data-etcd-1 data-etcd-2 -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {end}'" || _cc_fail
  check "etcdctl put lab05 hello (through etcd-0)" "etcdctl endpoint health inside etcd-0" \
    cluster_poll 120 _l5_etcd etcd-0 put lab05 hello || _cc_fail
  check "deleting etcd-1: it comes back with the same claim" "the StatefulSet recreates etcd-1 and reuses data-etcd-1" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE delete pod etcd-1 --wait=true --timeout=120s && kubectl -n $CLUSTER_NAMESPACE rollout status statefulset/etcd --timeout=300s" || _cc_fail
  check "etcd-1 still has lab05=hello" "the member's data directory is on its PV" cluster_poll 120 _l5_etcd_get etcd-1 lab05 hello || _cc_fail
  check "scale to 1: the claims stay" "scale-down never deletes PVCs (persistentVolumeClaimRetentionPolicy defaults to Retain)" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE scale statefulset/etcd --replicas=1 && kubectl -n $CLUSTER_NAMESPACE wait pod/etcd-2 --for=delete --timeout=120s && kubectl -n $CLUSTER_NAMESPACE get pvc data-etcd-1 data-etcd-2" || _cc_fail
  check "scale back to 3: every member reuses its claim" "the new etcd-1/etcd-2 mount data-etcd-1/2 again" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE scale statefulset/etcd --replicas=3 && kubectl -n $CLUSTER_NAMESPACE rollout status statefulset/etcd --timeout=300s" || _cc_fail
  check "etcd-2 reads lab05=hello (data intact)" "the member rejoined from the data on its volume" \
    cluster_poll 180 _l5_etcd_get etcd-2 lab05 hello || _cc_fail

  # Local PVs (C25-C27)
  local lex=$root/local-pv/exercise
  if [[ $CLUSTER_MODE != kind ]]; then
    skip "local PVs" "prepare-local-disks.sh mounts disks on the host of a kind cluster; --cluster $CLUSTER_MODE"
    _cc_end
    return
  fi
  check "prepare-local-disks.sh up (host loop mounts under /tmp/csi-workshop/disks)" \
    "needs root on the host" bash "$root/prepare-local-disks.sh" up || { _cc_fail; _cc_end; return 1; }
  check "kubectl apply -k deploy/local-pv; the local-provisioner DaemonSet rolls out" \
    "is local-provisioner in the image? kubectl logs ds/local-provisioner" \
    bash -c "kubectl apply -k '$root/local-pv' && kubectl -n $CLUSTER_NAMESPACE rollout status daemonset/local-provisioner --timeout=180s" || { _cc_fail; _cc_end; return 1; }
  check "a local PV per mount point: 2 on csi-workshop-worker" "local-provisioner's log on that node" \
    cluster_poll 60 _l5_local_pvs csi-workshop-worker 2 || _cc_fail
  check "... and 1 on csi-workshop-worker2 (not-a-disk refused)" "local-provisioner's log on worker2" \
    cluster_poll 60 _l5_local_pvs csi-workshop-worker2 1 || _cc_fail
  check_output "worker2's Node has a Warning Event for not-a-disk" "Agent::node_event" \
    'not a mount point' kubectl get events -n default --field-selector involvedObject.name=csi-workshop-worker2,reason=NotADisk -o jsonpath='{.items[*].message}' || _cc_fail
  check "local-filler-app takes worker2's only disk" "kubectl describe pod local-filler-app" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$lex/filler.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pod/local-filler-app --for=condition=Ready --timeout=180s" || _cc_fail
  check "local-claim is Pending before its Pod (WaitForFirstConsumer)" "local-disks must be WaitForFirstConsumer" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$lex/claim.yaml' && sleep 5 && [[ \$(kubectl -n $CLUSTER_NAMESPACE get pvc local-claim -o jsonpath='{.status.phase}') == Pending ]]" || _cc_fail
  check "local-app is scheduled and local-claim binds" "kubectl describe pod local-app" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$lex/pod.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pod/local-app --for=condition=Ready --timeout=180s" || _cc_fail
  node=$(_l5_k get pod local-app -o jsonpath='{.spec.nodeName}')
  check_output "local-claim's PV is on local-app's node ($node)" "the PV's nodeAffinity must name its node" \
    "on ${node:-none}\$" _l5_pv_of_node local-claim "${node:-none}" || _cc_fail
  check "local-pinned-app (worker2, no free disk) stays Pending" "it must not start: its claim cannot bind" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$lex/pinned.yaml' && sleep 15 && [[ \$(kubectl -n $CLUSTER_NAMESPACE get pod local-pinned-app -o jsonpath='{.status.phase}') == Pending ]]" || _cc_fail
  check_output "kubectl describe pod local-pinned-app gives the scheduler's reason" "the scheduler's VolumeBinding plugin" \
    "didn't find available persistent volumes to bind" _l5_k describe pod local-pinned-app || _cc_fail
  # Released -> cleaned -> Available again
  pvs=$(_l5_k get pvc local-filler-claim -o jsonpath='{.spec.volumeName}')
  check "deleting local-filler-app and its claim: the PV is cleaned and comes back Available" \
    "local-provisioner cleans a Released PV and deletes it; the next scan recreates it" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE delete -f '$lex/filler.yaml' --wait=true --timeout=120s && for i in \$(seq 60); do [[ \$(kubectl get pv ${pvs:-none} -o jsonpath='{.status.phase}' 2>/dev/null) == Available ]] && exit 0; sleep 2; done; exit 1" || _cc_fail
  _cc_end
}

if stage cluster "lab 05 in a Kubernetes cluster"; then
  # shellcheck source=labs/cluster-lib.sh
  source "$REPO_ROOT/labs/cluster-lib.sh"
  # shellcheck source=labs/04-registration/cluster-checks.sh
  source "$REPO_ROOT/labs/04-registration/cluster-checks.sh"
  cluster_stage_run cluster_checks_lab05
fi

finish
