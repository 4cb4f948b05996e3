#!/usr/bin/env bash
# labs/05-storageclass/check.sh [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep]
#
# The instructor check of lab 05 (StorageClasses, binding, our provisioner,
# the static local provisioner). WORKSPACE is the root of a trainee's copy
# (`cargo run -p xtask -- starter 05 --out DIR`); without it, this
# repository's finished code is graded.
#
#   build    the lab's crate compiles (library, binaries, tests)
#   tests    unit tests; tests/local_api.rs (fake API server); tests/local_root.rs
#            (loop-mounted ext4; skipped when not root); the provisioner's tests
#            (tests/provisioner_api.rs, tests/provisioner_leader.rs)
#   local    local-provisioner --dry-run on a temp discovery dir holding one
#            loop-mounted image and one plain dir (root), and every
#            kustomization under deploy/ renders (and validates)
#   cluster  lab 04's driver with a provisioner (see below) + the lab 05
#            manifests in kind: binding modes, reclaim policies, expansion,
#            volume types, the file-only driver without external-attacher,
#            etcd StatefulSet, local PVs (as root on the kind host)
#
# Environment:
#   CLUSTER_PROVISIONER  (or PROVISIONER) which provisioner the cluster stage
#                        deploys: `rust` (default): deploy/overlays/rust-provisioner,
#                        our csi-provisioner-rs, with the checks only it
#                        passes (its annotation, finalizer, Events, Lease);
#                        `official`: lab 04's overlay with the official
#                        csi-provisioner sidecar.
#
# The hints name sections of the book chapter book/src/labs/05-storageclass.md.
source "$(dirname "${BASH_SOURCE[0]}")/../check-lib.sh"
check_init "$@"

PKG=lab05-storageclass
CH="chapter Lab 05"
L5_PROVISIONER=${CLUSTER_PROVISIONER:-${PROVISIONER:-rust}}

# ------------------------------------------------------------------ build
BUILD_FAILED=0
if stage build "compile the lab"; then
  check "cargo build -p $PKG --all-targets" \
    "the starter compiles as generated: read the first compiler error (cargo build -p $PKG) and undo the change that caused it" \
    ws_cargo build -p "$PKG" --all-targets || BUILD_FAILED=1
fi

# ------------------------------------------------------------------ tests
if stage tests "the lab's tests"; then
  check "unit tests: cargo test -p $PKG --lib" \
    "the failing test names the decision: is_ours, plan_create's topology, build_pv's node affinity, on_released (Steps 2-5); classify, desired_pv, plan (Steps 8-10) in the $CH" \
    ws_cargo test -p "$PKG" --lib --no-fail-fast
  check "fake API server: tests/local_api.rs (create, refuse with an Event, clean a Released PV)" \
    "each test names a flow of Agent::sync; the requests it expected are in the assertion ($CH, Step 11)" \
    ws_cargo test -p "$PKG" --test local_api --no-fail-fast
  rcheck "root: tests/local_root.rs (a loop-mounted ext4 disk becomes a PV with its size)" \
    "classify must find the mount in /proc/self/mountinfo; capacity comes from statvfs ($CH, Step 8)" \
    ws_cargo test -p "$PKG" --test local_root --no-fail-fast
  # The Rust external-provisioner's tests (src/provisioner, tests/provisioner*.rs).
  for t in "$LAB_DIR"/tests/provisioner*.rs; do
    [[ -e $t ]] || continue
    name=$(basename "$t" .rs)
    check "provisioner: tests/$name.rs" \
      "the failing test names the provisioner's rule; the requests it expected are in the assertion ($CH, Steps 2-6)" \
      ws_cargo test -p "$PKG" --test "$name" --no-fail-fast
  done
fi

# ------------------------------------------------------------------ local
# The chapter's Verification commands for the local provisioner, as the
# check runs them: DIR (the check's temp dir $LOG_DIR/local) stands in for
# /tmp/lab05, and the loop device is also written to DIR/loopdev so that
# the clean-up can detach it.

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

# _l5_file_only_summary FILE: "<CSIDriver> <attachRequired> <the controller's
# containers, comma-separated>" of the rendered file-only driver, offline
# (kubectl patch --local reads objects without a cluster).
_l5_file_only_summary() {
  local out driver containers
  out=$(kubectl patch --local -f "$1" --type merge -p '{}' \
    -o jsonpath='{.kind}|{.metadata.name}|{.spec.attachRequired}|{.spec.template.spec.containers[*].name}{"\n"}') || return 1
  driver=$(awk -F'|' '$1 == "CSIDriver" { print $2 " " $3 }' <<<"$out")
  containers=$(awk -F'|' '$1 == "Deployment" && $2 == "csi-file-controller" { print $4 }' <<<"$out" | tr ' ' ',')
  echo "$driver $containers"
}
_l5_have_validator() { command -v kubernetes-validate >/dev/null || python3 -c 'import kubernetes_validate' 2>/dev/null; }

if stage local "local-provisioner --dry-run, and the manifests offline"; then
  LP=$(bin local-provisioner)
  if ((BUILD_FAILED)); then
    skip "local-provisioner --dry-run" "the build failed: $LP is not this code's"
  elif [[ ! -x $LP ]]; then
    skip "local-provisioner --dry-run" "$LP is missing: run the build stage first"
  elif [[ -n $ROOT_REASON ]]; then
    skip "local-provisioner --dry-run on a loop-mounted disk" "$ROOT_REASON"
  else
    LOCAL=$LOG_DIR/local
    on_exit "_local_disks_down '$LOCAL'"
    if check "a discovery dir with a loop-mounted ext4 disk1 and a plain directory" \
      "losetup, mkfs.ext4 and mount must work on this machine" \
      _local_disks "$LOCAL"; then
      check_output "local-provisioner --dry-run plans one PV, for disk1, pinned to node-a" \
        "scan + plan: classify must accept the mount point and desired_pv name it local-<node>-<entry> ($CH, Steps 8-9)" \
        '^create PV local-node-a-disk1 path=[^ ]+/disks/disk1 capacity=[0-9]+ node=node-a class=local-disks reclaim=Delete$' \
        "$LP" --node-name node-a --discovery-dir "$LOCAL/disks" --dry-run
      out=$(last_output)
      check "... exactly one PV" "only mount points become PVs ($CH, Step 8)" \
        test "$(grep -c '^create PV' <<<"$out")" -eq 1
      check_output "... and refuses the plain directory, saying why" \
        "a directory that is not a mount point is refused with Refusal::NotAMountPoint ($CH, Step 8)" \
        '^refuse [^ ]+/disks/plain: not a mount point: one PV per disk, so capacity and I/O are isolated$' \
        printf '%s\n' "$out"
    fi
  fi

  # The manifests: every kustomization under deploy/ renders.
  mapfile -t KUSTOMIZATIONS < <(find "$CHECK_DIR/deploy" -name kustomization.yaml -printf '%h\n' | sort)
  for d in "${KUSTOMIZATIONS[@]}"; do
    if ! command -v kubectl >/dev/null; then
      skip "kubectl kustomize ${d#"$CHECK_DIR"/}" "kubectl is not on PATH"
      continue
    fi
    check "kubectl kustomize ${d#"$CHECK_DIR"/}" \
      "kubectl kustomize $d prints the error" \
      kubectl kustomize "$d"
  done
  # C23 in the rendered objects: the second driver has nothing to attach.
  FO=$CHECK_DIR/deploy/file-only-driver
  if ! command -v kubectl >/dev/null; then
    skip "file-only-driver: attachRequired false, no csi-attacher" "kubectl is not on PATH"
  else
    kubectl kustomize "$FO" >"$LOG_DIR/file-only-driver.yaml" 2>&1
    check_output "file-only-driver: CSIDriver file.csi.workshop.dev with attachRequired: false, and no csi-attacher" \
      "C23: a driver with nothing to attach says attachRequired: false and runs no external-attacher ($CH, Step 13)" \
      '^file\.csi\.workshop\.dev false csi-provisioner,csi-driver$' \
      _l5_file_only_summary "$LOG_DIR/file-only-driver.yaml"
  fi
  VM=$REPO_ROOT/labs/04-registration/validate-manifests.sh
  if [[ -f $VM ]]; then
    # It takes no directory argument: it validates every lab's manifests,
    # the rust-provisioner overlay and the file-only driver among them.
    if ! command -v kubectl >/dev/null; then
      skip "validate-manifests.sh (schema validation)" "kubectl is not on PATH"
    elif _l5_have_validator; then
      check_output "validate-manifests.sh: every lab's manifests validate against the schema" \
        "read its FAIL lines: an unknown or misspelt field" \
        'all manifests render and validate' bash "$VM"
    else
      skip "validate-manifests.sh (schema validation)" "kubernetes-validate is not installed (pip install kubernetes-validate)"
    fi
  fi
fi

# ------------------------------------------------------------------ cluster
# Every command of the chapter's cluster Verification is run by a step
# below, with the manifests' absolute paths and $CLUSTER_NAMESPACE
# (csi-workshop) in place of the chapter's relative paths and -n csi-workshop.

# _l5_k ARGS: kubectl in the workshop namespace.
_l5_k() { kubectl -n "$CLUSTER_NAMESPACE" "$@"; }
_l5_phase() { kubectl -n "$CLUSTER_NAMESPACE" --request-timeout=30s get "$1" -o jsonpath='{.status.phase}'; }
_l5_is() { [[ $(_l5_phase "$1") == "$2" ]] || { echo "$1 is $(_l5_phase "$1"), not $2"; return 1; }; }
_l5_pv_of() { _l5_k --request-timeout=30s get pvc "$1" -o jsonpath='{.spec.volumeName}'; }
_l5_handle() { # PVC -> its volume handle
  local pv
  pv=$(_l5_pv_of "$1") && [[ -n $pv ]] &&
    kubectl get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}'
}
_l5_backend() { _l5_k exec deploy/csi-controller -c csi-driver -- ls /var/lib/csi-workshop/backend/volumes; }
_l5_df_mib() { _l5_k exec "$1" -- df --output=size -BM /data | tail -n 1 | tr -dc 0-9; }
_l5_bigger() { local s; s=$(_l5_df_mib "$1"); echo "df: ${s}M"; ((s > $2)); }
_l5_etcd() { _l5_k exec "$1" -- etcdctl --endpoints=http://127.0.0.1:2379 "${@:2}"; }
_l5_etcd_get() { [[ $(_l5_etcd "$1" get "$2" --print-value-only) == "$3" ]]; }
_l5_pv_of_node() { # PVC NODE: the PVC's local PV is pinned to NODE
  local pv values
  pv=$(_l5_pv_of "$1")
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
# _l5_etcd_claims: the chapter's `get pvc -l app.kubernetes.io/name=etcd`
# (the StatefulSet labels its claims with its selector), then one line
# "<name> <status> ..." to match.
_l5_etcd_claims() {
  local out
  out=$(_l5_k get pvc -l app.kubernetes.io/name=etcd) || return 1
  printf '%s\n' "$out" >&2
  awk 'NR > 1 { printf "%s%s %s", sep, $1, $2; sep = " " } END { print "" }' <<<"$out"
}
# _l5_etcd_bindings: "claim=uid/volume" for data-etcd-0..2, one line: what
# must be the same before and after a scale-down and scale-up (the same
# claims, bound to the same PVs).
_l5_etcd_bindings() {
  _l5_k get pvc data-etcd-0 data-etcd-1 data-etcd-2 \
    -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}/{.spec.volumeName}{" "}{end}'
}
# _l5_local_pv_table: the chapter's `kubectl get pv -l ...managed-by=...`;
# passes when it lists three PVs, all Available.
_l5_local_pv_table() {
  local out
  out=$(kubectl get pv -l app.kubernetes.io/managed-by=local-provisioner.csi.workshop.dev) || return 1
  printf '%s\n' "$out"
  [[ $(awk 'NR > 1 && $5 == "Available"' <<<"$out" | wc -l) -eq 3 ]]
}
# _l5_recreated PV OLD_UID CLAIM: PV exists again under a new uid (the
# local provisioner cleaned the disk, deleted the PV and published it anew),
# and is Available, or already Bound to CLAIM: a Pending claim waiting for
# a disk on that node takes it within seconds, so Available alone would race.
_l5_recreated() {
  local pv=$1 old=$2 claim=$3 out uid phase ref
  out=$(kubectl --request-timeout=30s get pv "$pv" -o jsonpath='{.metadata.uid} {.status.phase} {.spec.claimRef.name}' 2>/dev/null) ||
    { echo "$pv does not exist (being recreated)"; return 1; }
  read -r uid phase ref <<<"$out"
  [[ $uid != "$old" ]] || { echo "$pv is still the old PV ($phase)"; return 1; }
  case $phase in
    Available) echo "$pv recreated (uid $uid): Available" ;;
    Bound) [[ $ref == "$claim" ]] || { echo "$pv recreated but bound to $ref, not $claim"; return 1; }
      echo "$pv recreated (uid $uid): Bound to $claim" ;;
    *) echo "$pv recreated (uid $uid): $phase"; return 1 ;;
  esac
}

# --- what only our provisioner does (CLUSTER_PROVISIONER=rust)

# _l5_containers_are_ours: the controller Deployment runs csi-provisioner-rs
# and not the official csi-provisioner.
_l5_containers_are_ours() {
  local names
  names=$(_l5_k --request-timeout=30s get deploy csi-controller -o jsonpath='{.spec.template.spec.containers[*].name}') || return 1
  echo "containers: $names"
  [[ " $names " == *" csi-provisioner-rs "* && " $names " != *" csi-provisioner "* ]]
}
# _l5_lease: the chapter's `get lease`; passes when the Lease is held by a
# controller Pod and was renewed in the last 15 s (the lease duration).
_l5_lease() {
  local out holder renew age pods
  out=$(_l5_k --request-timeout=30s get lease csi-workshop-dev-rs-provisioner -o jsonpath='{.spec.holderIdentity} {.spec.renewTime}') || return 1
  echo "$out"
  read -r holder renew <<<"$out"
  [[ -n $holder && -n $renew ]] || { echo "the Lease is not held"; return 1; }
  age=$(($(date +%s) - $(date -d "$renew" +%s)))
  pods=$(_l5_k --request-timeout=30s get pods -l app.kubernetes.io/component=controller -o jsonpath='{.items[*].metadata.name}')
  [[ " $pods " == *" $holder "* ]] || { echo "holder $holder is not one of the controller Pods ($pods)"; return 1; }
  echo "held by $holder, renewed ${age}s ago"
  ((age <= 15))
}
# _l5_pv_marks PV: the chapter's `get pv` of annotation and finalizers.
_l5_pv_marks() {
  kubectl --request-timeout=30s get pv "$1" -o jsonpath='{.metadata.annotations.pv\.kubernetes\.io/provisioned-by} {.metadata.finalizers}'
}
# _l5_pv_is_ours PV: provisioned-by our driver, with our finalizer and
# without the official provisioner's.
_l5_pv_is_ours() {
  local out
  out=$(_l5_pv_marks "$1") || return 1
  echo "$out"
  [[ $out == "csi.workshop.dev "*'"csi.workshop.dev/provisioner-protection"'* &&
    $out != *external-provisioner.volume.kubernetes.io/finalizer* ]]
}
# _l5_no_our_finalizer PV: a Retain PV gets none of our finalizer.
_l5_no_our_finalizer() {
  local out
  out=$(_l5_pv_marks "$1") || return 1
  echo "$out"
  [[ $out == "csi.workshop.dev "* && $out != *csi.workshop.dev/provisioner-protection* ]]
}
# _l5_reclaim_marks DELETE_PV RETAIN_PV: our finalizer on the first only.
_l5_reclaim_marks() { _l5_pv_is_ours "$1" && _l5_no_our_finalizer "$2"; }
# _l5_events CLAIM REASON: the chapter's `get events` for a claim.
_l5_events() {
  _l5_k --request-timeout=30s get events --field-selector "involvedObject.name=$1,reason=$2" \
    -o jsonpath='{range .items[*]}{.reportingComponent}: {.message}{"\n"}{end}'
}
_l5_event_from_us() { # CLAIM REASON TEXT
  local out
  out=$(_l5_events "$1" "$2") || return 1
  printf '%s\n' "$out"
  grep -q "^csi-provisioner-rs: $3" <<<"$out"
}

# --- the file-only driver (C23)

# _l5_file_registered: every node running a csi-file-node Pod lists
# file.csi.workshop.dev in its CSINode.
_l5_file_registered() {
  local nodes node drivers missing=''
  nodes=$(_l5_k --request-timeout=30s get pods -l app.kubernetes.io/component=file-node -o jsonpath='{.items[*].spec.nodeName}') || return 1
  [[ -n $nodes ]] || { echo "no csi-file-node Pods"; return 1; }
  for node in $nodes; do
    drivers=$(kubectl --request-timeout=30s get csinode "$node" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null)
    [[ " $drivers " == *" file.csi.workshop.dev "* ]] || missing+=" $node"
  done
  [[ -z $missing ]] || { echo "not registered yet on:$missing"; return 1; }
  echo "registered on: $nodes"
}
# _l5_attachments: the chapter's VolumeAttachment listing.
_l5_attachments() {
  kubectl --request-timeout=30s get volumeattachments \
    -o custom-columns=PV:.spec.source.persistentVolumeName,ATTACHER:.spec.attacher,NODE:.spec.nodeName
}
# _l5_no_attachment PV: no VolumeAttachment names PV.
_l5_no_attachment() {
  local out
  out=$(_l5_attachments) || return 1
  printf '%s\n' "$out"
  if grep -q "^$1 " <<<"$out"; then
    echo "a VolumeAttachment names $1"
    return 1
  fi
  echo "no VolumeAttachment names $1"
}
# _l5_delete_file_only FILE: the file-only exercise goes, and with its claim
# the PV (the file driver's provisioner calls DeleteVolume).
_l5_delete_file_only() {
  _l5_k delete -f "$1" --wait=true --timeout=120s && cluster_poll 120 _l5_file_pvs_gone
}
_l5_file_pvs_gone() {
  local left
  left=$(kubectl --request-timeout=60s get pv \
    -o jsonpath='{range .items[?(@.spec.csi.driver=="file.csi.workshop.dev")]}{.metadata.name}{" "}{end}') || return 1
  [[ -z $left ]] || { echo "PVs left: $left"; return 1; }
}

_l5_cleanup() {
  local root fo; root=$(_cc_root)/labs/05-storageclass/deploy
  fo=$root/file-only-driver
  _l5_k delete -k "$root/local-pv/exercise" --ignore-not-found --wait=true --timeout=120s
  _l5_k delete -k "$root/exercises" --ignore-not-found --wait=true --timeout=180s
  _l5_k delete -k "$root/statefulset-etcd" --ignore-not-found --wait=true --timeout=120s
  _l5_k delete pvc -l app.kubernetes.io/name=etcd --ignore-not-found --timeout=120s
  _l5_k delete pvc data-etcd-0 data-etcd-1 data-etcd-2 --ignore-not-found --wait=true --timeout=120s
  # The file driver deletes its volumes before it goes itself.
  cluster_poll 120 _l5_file_pvs_gone
  kubectl delete -k "$fo" --ignore-not-found --wait=true --timeout=120s
  # The Retain exercise's PV and volume stay by design: remove them by hand.
  local pv h
  for pv in $(kubectl get pv -o jsonpath='{range .items[?(@.spec.storageClassName=="retain-block")]}{.metadata.name}{" "}{end}'); do
    h=$(kubectl get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
    kubectl delete pv "$pv" --wait=true --timeout=60s
    [[ -n $h ]] && _l5_k exec deploy/csi-controller -c csi-driver -- rm -rf "/var/lib/csi-workshop/backend/volumes/$h"
  done
  kubectl delete -k "$root/local-pv" --ignore-not-found --wait=true --timeout=120s
  kubectl delete pv -l app.kubernetes.io/managed-by=local-provisioner.csi.workshop.dev --ignore-not-found --timeout=60s
  [[ -n $ROOT_REASON ]] || bash "$root/prepare-local-disks.sh" down
  _cc_wait_our_pvs_gone 180
}

cluster_checks_lab05() {
  local root ex fo overlay h pvs node pv old
  _CC_FAILED=0
  root=$(_cc_root)/labs/05-storageclass/deploy
  ex=$root/exercises
  fo=$root/file-only-driver
  case $L5_PROVISIONER in
    rust) overlay=$root/overlays/rust-provisioner ;;
    official) overlay=$(_cc_root)/labs/04-registration/deploy/overlays/official-registrar ;;
    *)
      check "CLUSTER_PROVISIONER is rust or official" "CLUSTER_PROVISIONER=$L5_PROVISIONER is neither" false
      return 1
      ;;
  esac
  note "provisioner: $L5_PROVISIONER (CLUSTER_PROVISIONER=rust|official), overlay ${overlay#"$(_cc_root)"/}"
  _cc_deploy "$overlay" || { _cc_fail; _cc_end; return 1; }
  [[ $KEEP == 1 ]] || on_exit "_l5_cleanup"
  check "the driver rolls out (lab 04: controller Deployment and node DaemonSet)" \
    "lab 04 must pass first: bash labs/04-registration/check.sh; with CLUSTER_PROVISIONER=rust, kubectl logs deploy/csi-controller -c csi-provisioner-rs" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE rollout status deployment/csi-controller --timeout=300s && kubectl -n $CLUSTER_NAMESPACE rollout status daemonset/csi-node --timeout=300s" || { _cc_fail; _cc_end; return 1; }
  if [[ $L5_PROVISIONER == rust ]]; then
    check_output "the controller Pod runs csi-provisioner-rs, not the official csi-provisioner" \
      "the overlay's patch deletes the csi-provisioner container and adds csi-provisioner-rs ($CH, Step 7)" \
      '^containers: ' _l5_containers_are_ours || _cc_fail
    check_output "csi-provisioner-rs holds its Lease csi-workshop-dev-rs-provisioner and renews it" \
      "--leader-election: kubectl logs deploy/csi-controller -c csi-provisioner-rs says 'became the leader' or why not ($CH, Step 6)" \
      '^held by ' cluster_poll 120 _l5_lease || _cc_fail
  fi
  check "kubectl apply -k deploy/storageclasses (wffc-block, immediate-file, retain-block, expandable-block)" \
    "read kubectl's message" cluster_apply "$root/storageclasses" || { _cc_fail; _cc_end; return 1; }

  # Immediate vs WaitForFirstConsumer (C26)
  check "apply exercises/binding-claims.yaml" "kubectl apply -f" _l5_k apply -f "$ex/binding-claims.yaml" || _cc_fail
  check "immediate-claim binds with no Pod (Immediate)" \
    "kubectl describe pvc immediate-claim: the provisioner's events" \
    _l5_k wait pvc/immediate-claim --for=jsonpath='{.status.phase}'=Bound --timeout=120s || _cc_fail
  sleep 5
  check_output "get pvc: immediate-claim Bound, wffc-claim still Pending" \
    "a WaitForFirstConsumer claim must not bind before a Pod uses it ($CH, Concepts: delayed binding)" \
    '^wffc-claim +Pending ' _l5_k get pvc immediate-claim wffc-claim || _cc_fail
  check_output "describe pvc wffc-claim: waiting for its first consumer" \
    "the PV controller's event on a WaitForFirstConsumer claim without a Pod" \
    'waiting for first consumer' _l5_k describe pvc wffc-claim || _cc_fail
  if [[ $L5_PROVISIONER == rust ]]; then
    pv=$(_l5_pv_of immediate-claim)
    check_output "immediate-claim's PV ($pv) says provisioned-by csi.workshop.dev and carries our finalizer" \
      "build_pv: the pv.kubernetes.io/provisioned-by annotation and, for policy Delete, csi.workshop.dev/provisioner-protection ($CH, Step 4)" \
      '^csi\.workshop\.dev ' _l5_pv_is_ours "${pv:-none}" || _cc_fail
    check_output "an Event from csi-provisioner-rs on immediate-claim: ProvisioningSucceeded" \
      "reconcile_claim records it after creating the PV ($CH, Step 6)" \
      '^csi-provisioner-rs: Successfully provisioned volume pvc-' \
      cluster_poll 60 _l5_event_from_us immediate-claim ProvisioningSucceeded 'Successfully provisioned volume pvc-' || _cc_fail
  fi
  check "apply exercises/binding-pod.yaml; wffc-claim binds" \
    "the scheduler writes volume.kubernetes.io/selected-node, then the provisioner creates the volume" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$ex/binding-pod.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pvc/wffc-claim --for=jsonpath='{.status.phase}'=Bound --timeout=180s && kubectl -n $CLUSTER_NAMESPACE wait pod/wffc-app --for=condition=Ready --timeout=180s" || _cc_fail
  check_output "get pvc: both claims Bound" "wffc-claim binds once wffc-app is scheduled" \
    '^wffc-claim +Bound ' _l5_k get pvc immediate-claim wffc-claim || _cc_fail

  # Delete vs Retain (C20)
  local hd hr pvr pvd
  check "apply exercises/reclaim.yaml; both claims bind and reclaim-app runs" \
    "kubectl describe pod reclaim-app" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$ex/reclaim.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pod/reclaim-app --for=condition=Ready --timeout=240s" || _cc_fail
  hd=$(_l5_handle delete-claim) hr=$(_l5_handle retain-claim)
  pvr=$(_l5_pv_of retain-claim) pvd=$(_l5_pv_of delete-claim)
  if [[ $L5_PROVISIONER == rust ]]; then
    check_output "delete-claim's PV ($pvd) carries our finalizer, retain-claim's ($pvr) does not" \
      "build_pv adds the finalizer only for reclaim policy Delete ($CH, Step 4)" \
      '^csi\.workshop\.dev ' _l5_reclaim_marks "${pvd:-none}" "${pvr:-none}" || _cc_fail
  fi
  check "delete reclaim-app, then both claims" "kubectl delete pod reclaim-app; kubectl delete pvc delete-claim retain-claim" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE delete pod reclaim-app --wait=true --timeout=120s && kubectl -n $CLUSTER_NAMESPACE delete pvc delete-claim retain-claim --wait=true --timeout=120s" || _cc_fail
  check "Delete: delete-claim's volume ($hd) disappears from the backend" \
    "reclaimPolicy Delete: the provisioner waits for the VolumeAttachment to go, then calls DeleteVolume ($CH, Step 6)" \
    cluster_poll 180 bash -c "! kubectl -n $CLUSTER_NAMESPACE exec deploy/csi-controller -c csi-driver -- ls /var/lib/csi-workshop/backend/volumes | grep -qx '${hd:-none}'" || _cc_fail
  check "Delete: and its PV ($pvd) is gone" "after DeleteVolume the provisioner deletes the PV and its finalizer goes" \
    cluster_wait_gone 120 "pv/${pvd:-none}" || _cc_fail
  check "Retain: retain-claim's PV ($pvr) is Released" "reclaimPolicy Retain keeps the PV" \
    cluster_poll 60 _l5_is "pv/${pvr:-none}" Released || _cc_fail
  check_output "Retain: its volume ($hr) stays in the backend" "reclaimPolicy Retain: no DeleteVolume" \
    "^${hr:-none}\$" _l5_backend || _cc_fail

  # Expansion (csi-resizer in both set-ups, see the rust-provisioner overlay)
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

  # A file-storage driver without external-attacher (C23)
  # (Its clean-up is in _l5_cleanup: the claim first, then the driver.)
  check "kubectl apply -k deploy/file-only-driver; csi-file-controller and csi-file-node roll out" \
    "kubectl describe pod -l app.kubernetes.io/component=file-controller; the image must have csi-lab03" \
    bash -c "kubectl apply -k '$fo' && kubectl -n $CLUSTER_NAMESPACE rollout status deployment/csi-file-controller --timeout=300s && kubectl -n $CLUSTER_NAMESPACE rollout status daemonset/csi-file-node --timeout=300s" || _cc_fail
  check_output "CSIDriver file.csi.workshop.dev: attachRequired false" "deploy/file-only-driver/csidriver.yaml ($CH, Step 13)" \
    '^false$' kubectl get csidriver file.csi.workshop.dev -o jsonpath='{.spec.attachRequired}' || _cc_fail
  check "kubelet registered file.csi.workshop.dev on every node running csi-file-node (CSINode)" \
    "kubectl logs ds/csi-file-node -c node-driver-registrar" cluster_poll 120 _l5_file_registered || _cc_fail
  check "apply exercises/file-only.yaml; file-only-claim binds and file-only-app runs" \
    "kubectl describe pvc file-only-claim (csi-provisioner's events), kubectl describe pod file-only-app" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE apply -f '$ex/file-only.yaml' && kubectl -n $CLUSTER_NAMESPACE wait pvc/file-only-claim --for=jsonpath='{.status.phase}'=Bound --timeout=180s && kubectl -n $CLUSTER_NAMESPACE wait pod/file-only-app --for=condition=Ready --timeout=240s" || _cc_fail
  pv=$(_l5_pv_of file-only-claim)
  check "file-only-app writes to its volume" "NodeStage/NodePublish of file.csi.workshop.dev bind-mount the directory" \
    _l5_k exec file-only-app -- sh -c 'echo hello > /data/hello.txt && cat /data/hello.txt' || _cc_fail
  check_output "no VolumeAttachment names file-only-claim's PV ($pv): nothing was attached" \
    "attachRequired: false: the attach/detach controller makes no VolumeAttachment ($CH, Step 13)" \
    '^no VolumeAttachment names ' _l5_no_attachment "${pv:-none}" || _cc_fail
  check "deleting file-only-app and file-only-claim deletes the PV (DeleteVolume by the file driver)" \
    "kubectl logs deploy/csi-file-controller -c csi-provisioner" \
    _l5_delete_file_only "$ex/file-only.yaml" || _cc_fail

  # etcd StatefulSet (C24)
  check "kubectl apply -k deploy/statefulset-etcd; three members run" \
    "kubectl describe pod etcd-0; the image is registry.k8s.io/etcd" \
    bash -c "kubectl apply -k '$root/statefulset-etcd' && kubectl -n $CLUSTER_NAMESPACE rollout status statefulset/etcd --timeout=600s" || _cc_fail
  check_output "get pvc -l app.kubernetes.io/name=etcd: three numbered claims, data-etcd-0..2, Bound" \
    "volumeClaimTemplates: one claim per replica, labelled with the StatefulSet's selector" \
    '^data-etcd-0 Bound data-etcd-1 Bound data-etcd-2 Bound$' \
    _l5_etcd_claims || _cc_fail
  check_output "etcdctl put lab05 hello (through etcd-0)" "etcdctl endpoint health inside etcd-0" \
    '^OK$' cluster_poll 120 _l5_etcd etcd-0 put lab05 hello || _cc_fail
  check "deleting etcd-1: it comes back with the same claim" "the StatefulSet recreates etcd-1 and reuses data-etcd-1" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE delete pod etcd-1 --wait=true --timeout=120s && kubectl -n $CLUSTER_NAMESPACE rollout status statefulset/etcd --timeout=300s" || _cc_fail
  check "etcd-1 still has lab05=hello" "the member's data directory is on its PV" cluster_poll 120 _l5_etcd_get etcd-1 lab05 hello || _cc_fail
  local etcd_before
  etcd_before=$(_l5_etcd_bindings)
  echo "etcd claims before scaling: $etcd_before"
  check "scale to 1: the claims stay" "scale-down never deletes PVCs (persistentVolumeClaimRetentionPolicy defaults to Retain)" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE scale statefulset/etcd --replicas=1 && kubectl -n $CLUSTER_NAMESPACE wait pod/etcd-2 --for=delete --timeout=120s && kubectl -n $CLUSTER_NAMESPACE get pvc data-etcd-1 data-etcd-2" || _cc_fail
  check "scale back to 3: every member reuses its claim" "the new etcd-1/etcd-2 mount data-etcd-1/2 again" \
    bash -c "kubectl -n $CLUSTER_NAMESPACE scale statefulset/etcd --replicas=3 && kubectl -n $CLUSTER_NAMESPACE rollout status statefulset/etcd --timeout=300s" || _cc_fail
  check "etcd-2 reads lab05=hello (data intact)" "the member rejoined from the data on its volume" \
    cluster_poll 180 _l5_etcd_get etcd-2 lab05 hello || _cc_fail
  check "after scaling, data-etcd-0..2 are the same claims bound to the same PVs" \
    "a new uid or volumeName means a claim was recreated: scale-down must keep the claims (Retain)" \
    bash -c '[[ -n $1 && $1 == "$2" ]] || { echo "before: $1"; echo "after:  $2"; exit 1; }' _ \
    "$etcd_before" "$(_l5_etcd_bindings)" || _cc_fail

  # Local PVs (C25-C27)
  local lex=$root/local-pv/exercise
  if [[ $CLUSTER_MODE != kind ]]; then
    skip "local PVs" "prepare-local-disks.sh mounts disks on the host of a kind cluster; --cluster $CLUSTER_MODE"
    _cc_end
    return
  fi
  if [[ -n $ROOT_REASON ]]; then
    skip "local PVs (prepare-local-disks.sh up, on the kind host)" "$ROOT_REASON: run the check as root to loop-mount the workers' disks"
    _cc_end
    return
  fi
  check "prepare-local-disks.sh up (host loop mounts under /tmp/csi-workshop/disks)" \
    "read its message: losetup, mkfs.ext4 and mount on the host" bash "$root/prepare-local-disks.sh" up || { _cc_fail; _cc_end; return 1; }
  check "kubectl apply -k deploy/local-pv; the local-provisioner DaemonSet rolls out" \
    "is local-provisioner in the image? kubectl logs ds/local-provisioner" \
    bash -c "kubectl apply -k '$root/local-pv' && kubectl -n $CLUSTER_NAMESPACE rollout status daemonset/local-provisioner --timeout=180s" || { _cc_fail; _cc_end; return 1; }
  check "a local PV per mount point: 2 on csi-workshop-worker" "local-provisioner's log on that node" \
    cluster_poll 60 _l5_local_pvs csi-workshop-worker 2 || _cc_fail
  check "... and 1 on csi-workshop-worker2 (not-a-disk refused)" "local-provisioner's log on worker2" \
    cluster_poll 60 _l5_local_pvs csi-workshop-worker2 1 || _cc_fail
  check_output "get pv -l app.kubernetes.io/managed-by=...: the three PVs, Available" \
    "desired_pv labels every PV it makes ($CH, Step 9)" \
    'local-csi-workshop-worker2-disk1' cluster_poll 60 _l5_local_pv_table || _cc_fail
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
  # Released -> cleaned -> recreated. local-pinned-claim is waiting for a
  # disk on worker2, so the recreated PV may be bound to it at once.
  pvs=$(_l5_pv_of local-filler-claim)
  old=$(kubectl get pv "${pvs:-none}" -o jsonpath='{.metadata.uid}' 2>/dev/null)
  check "deleting local-filler-app and its claim" "kubectl delete -f filler.yaml" \
    _l5_k delete -f "$lex/filler.yaml" --wait=true --timeout=120s || _cc_fail
  check_output "its PV ($pvs) is cleaned and recreated: a new uid, Available or bound to local-pinned-claim" \
    "local-provisioner cleans a Released PV and deletes it (uid precondition); the next scan creates it anew ($CH, Step 10)" \
    'recreated' cluster_poll 180 _l5_recreated "${pvs:-none}" "${old:-none}" local-pinned-claim || _cc_fail
  check "local-pinned-app starts on the recreated disk" "local-pinned-claim binds the recreated PV; kubectl describe pod local-pinned-app" \
    _l5_k wait pod/local-pinned-app --for=condition=Ready --timeout=180s || _cc_fail
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
