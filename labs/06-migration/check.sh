#!/usr/bin/env bash
# labs/06-migration/check.sh [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep]
#
# The instructor check of lab 06 (FlexVolume, and moving its PVs to CSI).
# WORKSPACE is the root of a trainee's copy (`cargo run -p xtask -- starter
# 06 --out DIR`); without it, this repository's finished code is graded.
#
#   build      the lab's crate (flex-workshop, csi-migrate) compiles
#   tests      unit tests; tests/migration.rs (csi-migrate against a faked
#              API: dry run, full run, resume after a clean stop at every
#              step and after a crash at every write of every step,
#              refusal, rollback from all of those, checksums);
#              tests/binary.rs (the binary over HTTP: exit codes, the
#              SIGKILL of CSI_MIGRATE_CRASH and the resume); tests/flex.rs (the call-out protocol; its mount tests need
#              root); tests/adopt.rs (root: the lab 03 driver stages a block
#              image and a file directory Flex wrote, without touching them)
#   local      flex-workshop driven as kubelet drives it: init, unknown
#              calls, malformed options; as root a block and a file volume
#              mounted, written, unmounted, nothing left behind
#   manifests  every kustomization under deploy/ renders (SKIP without kubectl)
#   cluster    the driver (lab 04) and the Flex driver installed; a legacy
#              app on two Flex PVs writes markers; csi-migrate --dry-run;
#              one PV stopped after step 7 and rolled back to Flex (same
#              markers); a run killed (CSI_MIGRATE_CRASH, SIGKILL) in the
#              middle of delete-flex-pv, resumed by the in-cluster Job;
#              the app runs on CSI PVs with the same markers; Flex removed
#
# csi-migrate --dry-run needs an API server: without a cluster it is graded
# by tests/migration.rs and tests/binary.rs (a fake API server) only. Not root: the root-only steps are SKIPPED.
# The hints name sections of the chapter book/src/labs/06-migration.md.
# shellcheck disable=SC2034 # read by check-lib.sh
CHECK_STAGES_ALL=build,tests,local,manifests,cluster
# shellcheck source=labs/check-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../check-lib.sh"
check_init "$@"

PKG=lab06-migration
CH="chapter Lab 06"


# ------------------------------------------------------------------ build
# The local and cluster stages run the binaries in $BIN_DIR: after a failed
# build those are an older build's, not this code's, so they are skipped.
BUILD_FAILED=0
if stage build "compile the lab"; then
  check "cargo build -p $PKG --all-targets" \
    "the starter compiles as generated: read the first compiler error (cargo build -p $PKG) and undo the change that caused it" \
    ws_cargo build -p "$PKG" --all-targets || BUILD_FAILED=1
fi

# ------------------------------------------------------------------ tests
if stage tests "the lab's tests"; then
  check "unit tests: cargo test -p $PKG --lib" \
    "flex::parse_options, plan::next_step and plan::to_csi_pv are yours to write ($CH, Steps 1, 4 and 5)" \
    ws_cargo test -p "$PKG" --lib --no-fail-fast
  check "migration tests: tests/migration.rs (a faked API server)" \
    "each test names a promise: no writes on --dry-run, resume after any step or crash, rollback from anywhere, refuse a claim in use ($CH, Steps 4-5)" \
    ws_cargo test -p "$PKG" --test migration --no-fail-fast
  check "the csi-migrate binary over HTTP: tests/binary.rs (exit codes, CSI_MIGRATE_CRASH kills it mid-step)" \
    "the binary must exit 3 on --stop-after-step and die by SIGKILL at the fault point ($CH, Verification)" \
    ws_cargo test -p "$PKG" --test binary --no-fail-fast
  if [[ -n $ROOT_REASON ]]; then
    note "tests/flex.rs: its mount tests print SKIP ($ROOT_REASON); the protocol tests run"
  fi
  check "call-out protocol tests: tests/flex.rs" \
    "flex-workshop replies with one JSON object; mount uses loopdev, fs::ensure_formatted and mount from lab 03 ($CH, Steps 1-2)" \
    ws_cargo test -p "$PKG" --test flex --no-fail-fast
  rcheck "adoption test: tests/adopt.rs (root: the CSI driver stages a Flex image and a Flex directory)" \
    "the lab 03 driver must stage an existing ext4 image without mkfs, and bind an existing directory as it is ($CH, Step 6)" \
    ws_cargo test -p "$PKG" --test adopt --no-fail-fast
fi

# ------------------------------------------------------------------ local
# flex CALL...: runs flex-workshop as kubelet does; prints the reply and
# `exit=N`, and always succeeds, so the regex decides.
flex() {
  local rc=0
  FLEX_WORKSHOP_STATE_DIR=$W/flex-state "$(bin flex-workshop)" "$@" || rc=$?
  echo "exit=$rc"
}

cleanup_host() {
  local dir=$1 m dev
  findmnt --list --noheadings --output TARGET | grep "^$dir/" | tac | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  losetup --list --noheadings --output NAME,BACK-FILE |
    awk -v d="$dir/" 'index($2, d) == 1 { print $1 }' |
    while read -r dev; do losetup -d "$dev"; done
  return 0
}
_l6_create_volumes() {
  "$(bin flex-workshop)" create-volume --id v-block --type block --size 64Mi --backend-dir "$B" &&
    "$(bin flex-workshop)" create-volume --id v-file --type file --backend-dir "$B"
}
# Mount the block volume somewhere else and read what the first pod wrote.
_l6_remount_and_read() {
  flex mount "$W/pods/p2/v-block" "{\"volumeId\":\"v-block\",\"backendDir\":\"$B\"}" >/dev/null
  cat "$W/pods/p2/v-block/hello.txt"
}
# The image holds ext4; asking for xfs must fail (and never reformat).
_l6_wrong_fs_type() {
  flex unmount "$W/pods/p2/v-block" >/dev/null
  flex mount "$W/pods/p3/v-block" "{\"volumeId\":\"v-block\",\"backendDir\":\"$B\",\"kubernetes.io/fsType\":\"xfs\"}"
}
# The runbook's flags, all of them (the regex then looks for the last).
_l6_help() {
  local help flag
  help=$("$(bin csi-migrate)" --help) || return 1
  for flag in --dry-run --drain --stop-after-step --rollback --pv; do
    grep -q -- "$flag" <<<"$help" || { echo "no $flag in csi-migrate --help"; return 1; }
  done
  printf '%s\n' "$help"
}
mounts_under() { findmnt --list --noheadings --output TARGET | grep -c "^$1/" || true; }
loops_under() { losetup --list --noheadings --output BACK-FILE | grep -c "^$1/" || true; }

if stage local "flex-workshop called as kubelet calls it"; then
  W=$(realpath "$LOG_DIR")
  B=$W/backend
  if ((BUILD_FAILED)); then
    skip "the local stage" "the build failed: the binaries in $BIN_DIR are not this code's"
  elif [[ ! -x $(bin flex-workshop) || ! -x $(bin csi-migrate) ]]; then
    skip "the local stage" "$(bin flex-workshop) or $(bin csi-migrate) is missing: run the build stage first"
  else
    [[ -n $ROOT_REASON ]] || on_exit "cleanup_host '$W'"
    check_output "flex init: Success, attach false" \
      "init must print {\"status\":\"Success\",\"capabilities\":{\"attach\":false}} ($CH, Step 1)" \
      '^\{"status":"Success","capabilities":\{"attach":false\}\}$' flex init
    check_output "flex getvolumename: Not supported, exit 0" \
      "calls we do not implement answer Not supported with exit code 0 ($CH, Step 1)" \
      '"status":"Not supported".*' flex getvolumename '{}'
    check_output "flex attach: Not supported (no attach: the controller side needs no binary)" \
      "with attach:false kubelet never calls attach; answer Not supported anyway ($CH, Step 1)" \
      '^exit=0$' flex attach '{}' node-a
    check_output "flex mount with malformed JSON: Failure, exit 1" \
      "parse_options turns bad JSON into FlexError::MalformedOptions ($CH, Step 1)" \
      '^exit=1$' flex mount "$W/pods/x" '{not json'
    check_output "flex mount without volumeId: Failure naming the option" \
      "volumeId is the one required option ($CH, Step 1)" \
      '"status":"Failure","message":"option \\"volumeId\\" is required' flex mount "$W/pods/x" '{"type":"block"}'
    check_output "flex mount of an unknown volume: Failure, nothing created" \
      "Flex volumes are pre-provisioned: an unknown id is a Failure ($CH, Step 2)" \
      'does not exist in the backend' flex mount "$W/pods/x" "{\"volumeId\":\"nope\",\"backendDir\":\"$W\"}"
    check_output "flex-workshop create-volume: a 64 MiB block and a file volume" \
      "create-volume uses lab 02's Backend::create ($CH, Step 2)" \
      'volume v-file created' _l6_create_volumes
    rcheck_output "flex mount block: loop device, mkfs.ext4 (blank), mount" \
      "mount_image: loopdev::attach, fs::ensure_formatted, mount::mount_device ($CH, Step 2)" \
      '^\{"status":"Success"' flex mount "$W/pods/p1/v-block" "{\"volumeId\":\"v-block\",\"type\":\"block\",\"backendDir\":\"$B\",\"kubernetes.io/fsType\":\"ext4\",\"kubernetes.io/readwrite\":\"rw\"}"
    rcheck_output "findmnt: ext4 on a loop device at the mount dir" \
      "Success was answered but nothing is mounted ($CH, Step 2)" \
      '^/dev/loop[0-9]+ +ext4$' findmnt --noheadings --output SOURCE,FSTYPE --mountpoint "$W/pods/p1/v-block"
    rcheck "the pod writes into the block volume" "the mount must be writable" \
      sh -c "echo 'written through flex' > '$W/pods/p1/v-block/hello.txt'"
    rcheck_output "flex mount file: a bind mount of the data directory" \
      "file volumes: mount::bind_mount of <backend>/volumes/<id>/data ($CH, Step 2)" \
      '^\{"status":"Success"' flex mount "$W/pods/p1/v-file" "{\"volumeId\":\"v-file\",\"type\":\"file\",\"backendDir\":\"$B\"}"
    rcheck_output "flex unmount block: unmounted, loop device detached" \
      "unmount reads the mount record to find the loop device ($CH, Step 2)" \
      '^\{"status":"Success"' flex unmount "$W/pods/p1/v-block"
    rcheck_output "flex unmount file" "unmount is the same for both kinds" \
      '^\{"status":"Success"' flex unmount "$W/pods/p1/v-file"
    rcheck_output "flex unmount again: Success (idempotent)" \
      "kubelet retries: an unmounted dir is not an error ($CH, Step 2)" \
      'was not mounted' flex unmount "$W/pods/p1/v-block"
    rcheck_output "flex mount block again: the file is still there (no reformat)" \
      "fs::ensure_formatted formats only blank devices ($CH, Step 2)" \
      '^written through flex$' _l6_remount_and_read
    rcheck_output "flex mount with the wrong fsType fails and leaves nothing" \
      "a failed mount must undo its loop device ($CH, Step 2)" \
      '^exit=1$' _l6_wrong_fs_type
    rcheck_output "nothing mounted under the temporary directory" \
      "every unmount must unmount what mount mounted ($CH, Step 2)" '^0$' mounts_under "$W"
    rcheck_output "no loop device backed by a file under the temporary directory" \
      "unmount (and a failed mount) must detach the loop device ($CH, Step 2)" '^0$' loops_under "$W"
    check_output "csi-migrate --help lists --dry-run, --stop-after-step, --rollback and CSI_MIGRATE_CRASH" \
      "the flags of the chapter's runbook ($CH, Step 5)" \
      'CSI_MIGRATE_CRASH' _l6_help
  fi
  # Not a step of its own: a SKIP here would be permanent, on every machine.
  note "csi-migrate --dry-run needs an API server: stage tests runs it against the fake one (tests/migration.rs, tests/binary.rs), stage cluster against a real one"
fi

# ------------------------------------------------------------------ manifests
if stage manifests "the manifests render"; then
  for k in flex-install flex-uninstall legacy migrate; do
    if ! command -v kubectl >/dev/null; then
      skip "kubectl kustomize deploy/$k" "kubectl is not on PATH"
      continue
    fi
    check "kubectl kustomize deploy/$k" \
      "a kustomization must render: read kubectl's message" \
      kubectl kustomize "$CHECK_DIR/deploy/$k"
  done
fi

# ------------------------------------------------------------------ cluster
MIG=$CHECK_DIR/deploy

# The two markers the legacy app wrote, as one string.
_l6_markers() { kubectl -n legacy exec deploy/writer -- cat /data/block/marker.txt /data/file/marker.txt; }
_l6_pv_driver() { kubectl get pv "$1" -o jsonpath='{.spec.flexVolume.driver}{.spec.csi.driver}{"\n"}'; }
_l6_migrate() { "$(bin csi-migrate)" --journal-namespace "$CLUSTER_NAMESPACE" --timeout 300 "$@"; }
# A clean stop of one PV after create-csi-pv (exit 3): a CSI PV, the workload down.
_l6_stopped_after_7() {
  local rc=0
  _l6_migrate --drain --pv legacy-block --stop-after-step 7 || rc=$?
  echo "exit=$rc"
}
# What a rollback must leave: the Flex PV, its old policy, no journal on it
# and no entry in the ConfigMap (the runbook's two commands, then the test).
_l6_rolled_back_state() {
  local out
  out=$(kubectl get pv legacy-block -o jsonpath='{.spec.flexVolume.driver}{.spec.csi.driver} policy={.spec.persistentVolumeReclaimPolicy} journal={.metadata.annotations.csi-migrate\.workshop\.dev/journal}{"\n"}' &&
    kubectl -n "$CLUSTER_NAMESPACE" get configmap csi-migrate-journal -o jsonpath='entries={.data.legacy-block\.journal}{.data.legacy-block\.pv}{"\n"}') || return 1
  printf '%s\n' "$out"
  grep -Fqx 'csi.workshop.dev/flex policy=Delete journal=' <<<"$out" && grep -Fqx 'entries=' <<<"$out"
}
# The run killed in the middle of delete-flex-pv: right after the DELETE of
# the first PV (legacy-block), before the finalizer is lifted or the journal
# written. The shell reports SIGKILL as 137.
_l6_killed_mid_delete() {
  local rc=0
  CSI_MIGRATE_CRASH=delete-flex-pv:1 _l6_migrate --drain || rc=$?
  echo "exit=$rc"
}
# What the kill left: the Flex PV terminating (pv-protection holds it), the
# journal one step behind (the runbook's two commands, then the test).
_l6_killed_state() {
  local out
  out=$(kubectl get pv legacy-block -o jsonpath='{.spec.flexVolume.driver} deletionTimestamp={.metadata.deletionTimestamp}{"\n"}' &&
    kubectl -n "$CLUSTER_NAMESPACE" get configmap csi-migrate-journal -o jsonpath='{.data.legacy-block\.journal}{"\n"}') || return 1
  printf '%s\n' "$out"
  grep -Eq '^csi\.workshop\.dev/flex deletionTimestamp=[0-9]{4}-' <<<"$out" &&
    grep -Fq '"completed":"save-original"' <<<"$out"
}
# The runbook's view of both PVs after the migration: one line each, with
# the provisioner the Delete policy relies on.
_l6_pvs_migrated() {
  local out
  out=$(kubectl get pv legacy-block legacy-file -o jsonpath='{range .items[*]}{.metadata.name} {.spec.csi.driver} {.spec.csi.volumeHandle} {.spec.persistentVolumeReclaimPolicy} {.metadata.annotations.pv\.kubernetes\.io/provisioned-by} {.status.phase}{"\n"}{end}') || return 1
  printf '%s\n' "$out"
  grep -Fqx 'legacy-block csi.workshop.dev legacy-block Delete csi.workshop.dev Bound' <<<"$out" &&
    grep -Fqx 'legacy-file csi.workshop.dev legacy-file Retain csi.workshop.dev Bound' <<<"$out"
}
# The claims, as `kubectl -n legacy get pvc` shows them: Bound to the same PVs.
_l6_claims_bound() {
  local out
  out=$(kubectl -n legacy get pvc) || return 1
  printf '%s\n' "$out"
  grep -Eq '^block-data +Bound +legacy-block +64Mi +RWO +legacy-flex ' <<<"$out" &&
    grep -Eq '^file-data +Bound +legacy-file +64Mi +RWX +legacy-flex ' <<<"$out"
}
# same_markers LABEL: the markers now equal those read before the migration.
_l6_same_markers() {
  local now
  now=$(_l6_markers) || return 1
  printf '%s\n' "$now"
  [[ -n $L6_BEFORE && $now == "$L6_BEFORE" ]] || { echo "the markers changed; before: $L6_BEFORE" >&2; return 1; }
}
_l6_driver_rolled_out() {
  cluster_wait_rollout deployment/csi-controller 300s && cluster_wait_rollout daemonset/csi-node 300s
}
_l6_create_legacy_volumes() {
  kubectl -n "$CLUSTER_NAMESPACE" exec ds/flex-install -- flex-workshop create-volume --id legacy-block --type block --size 64Mi &&
    kubectl -n "$CLUSTER_NAMESPACE" exec ds/flex-install -- flex-workshop create-volume --id legacy-file --type file --size 64Mi
}
_l6_resume_with_job() {
  kubectl apply -k "$MIG/migrate" &&
    kubectl -n "$CLUSTER_NAMESPACE" wait --for=condition=complete job/csi-migrate --timeout=900s
}
_l6_uninstall_flex() {
  kubectl delete -k "$MIG/flex-install" --wait=true &&
    kubectl apply -k "$MIG/flex-uninstall" &&
    kubectl -n "$CLUSTER_NAMESPACE" rollout status daemonset/flex-uninstall --timeout=180s &&
    kubectl delete -k "$MIG/flex-uninstall" --wait=true
}
_l6_cleanup() {
  kubectl delete job -n "$CLUSTER_NAMESPACE" csi-migrate --ignore-not-found --wait=true
  kubectl delete -k "$MIG/migrate" --ignore-not-found
  kubectl delete -k "$MIG/legacy" --ignore-not-found --wait=true --timeout=180s
  kubectl delete configmap -n "$CLUSTER_NAMESPACE" csi-migrate-journal --ignore-not-found
  kubectl delete -k "$MIG/flex-install" --ignore-not-found
  kubectl delete -k "$MIG/flex-uninstall" --ignore-not-found
}

cluster_checks_lab06() {
  local deploy
  _CC_FAILED=0
  deploy=$(_cc_root)/labs/04-registration/deploy/overlays/official-registrar
  _cc_deploy "$deploy" || { _cc_fail; _cc_end; return 1; }
  [[ $KEEP == 1 ]] || on_exit "_l6_cleanup >/dev/null 2>&1"
  check "the CSI driver rolls out (lab 04)" "see labs/04-registration/check.sh" \
    _l6_driver_rolled_out || { _cc_fail; _cc_end; return 1; }

  check "kubectl apply -k deploy/flex-install" "read kubectl's message" cluster_apply "$MIG/flex-install" || _cc_fail
  check "the flex-install DaemonSet copies the driver onto every node" \
    "kubectl -n $CLUSTER_NAMESPACE logs ds/flex-install ($CH, Step 2)" \
    cluster_wait_rollout daemonset/flex-install 300s || { _cc_fail; _cc_end; return 1; }
  check "flex-workshop create-volume legacy-block and legacy-file (pre-provisioning)" \
    "the install Pod mounts the backend at /var/lib/csi-workshop/backend ($CH, Verification)" \
    _l6_create_legacy_volumes || _cc_fail
  check "kubectl apply -k deploy/legacy (Flex PVs, claims, the writer)" "read kubectl's message" \
    cluster_apply "$MIG/legacy" || _cc_fail
  check "the writer runs on the Flex volumes (kubelet called flex mount)" \
    "kubectl -n legacy describe pod -l app=writer: FailedMount events carry the driver's message" \
    cluster_wait_rollout deployment/writer 300s legacy || { _cc_fail; _cc_end; return 1; }
  check_output "the writer wrote its markers" "kubectl -n legacy logs deploy/writer" \
    '^[0-9a-f]{64}  -$' _l6_markers || _cc_fail
  L6_BEFORE=$(last_output)

  check_output "csi-migrate --dry-run prints the plan" \
    "--dry-run must list the steps and change nothing ($CH, Verification)" \
    '^dry run: nothing was changed$' _l6_migrate --dry-run --drain || _cc_fail
  check_output "after the dry run, legacy-block is still a Flex PV" \
    "a dry run must not write ($CH, Step 5)" '^csi\.workshop\.dev/flex$' _l6_pv_driver legacy-block || _cc_fail

  # Rollback, from the worst clean stop: a CSI PV and the workload down.
  check_output "csi-migrate --drain --pv legacy-block --stop-after-step 7: stopped after create-csi-pv" \
    "the run stops with exit code 3 after step 7 ($CH, Verification)" \
    '^exit=3$' _l6_stopped_after_7 || _cc_fail
  check_output "legacy-block is a CSI PV, the writer is down" "step 7 creates it ($CH, Step 5)" \
    '^csi\.workshop\.dev$' _l6_pv_driver legacy-block || _cc_fail
  check_output "csi-migrate --rollback --pv legacy-block" \
    "kubectl get pv legacy-block -o yaml; the journal ConfigMap holds the Flex PV ($CH, Verification)" \
    '^legacy-block: rolled back to csi\.workshop\.dev/flex$' _l6_migrate --rollback --pv legacy-block || _cc_fail
  check "after the rollback: the Flex PV, policy Delete again, no journal on it or in the ConfigMap" \
    "rollback restores the policy and clears the journal in one patch, then the ConfigMap ($CH, Step 5)" \
    _l6_rolled_back_state || _cc_fail
  check "the writer runs again, on Flex" "kubectl -n legacy describe pod -l app=writer" \
    cluster_wait_rollout deployment/writer 300s legacy || _cc_fail
  check_output "after the rollback the markers are identical" "a rollback must not copy or reformat ($CH, Verification)" \
    '^[0-9a-f]{64}  -$' _l6_same_markers || _cc_fail

  # Resume, after a real interruption: SIGKILL in the middle of a step.
  check_output "CSI_MIGRATE_CRASH=delete-flex-pv:1 csi-migrate --drain: killed right after the Flex PV's DELETE" \
    "fault::Tracker kills the process after the n-th write of the step; exit 137 is SIGKILL ($CH, Verification)" \
    '^exit=137$' _l6_killed_mid_delete || _cc_fail
  check "the kill left legacy-block terminating, the journal at save-original" \
    "pv-protection holds the deleted PV; the journal is written only after the step ($CH, Verification)" \
    _l6_killed_state || _cc_fail
  check "the in-cluster Job resumes the migration" \
    "kubectl -n $CLUSTER_NAMESPACE logs job/csi-migrate; RBAC errors name the missing verb ($CH, Step 7)" \
    _l6_resume_with_job || _cc_fail
  check_output "the Job's log: migration complete" "kubectl -n $CLUSTER_NAMESPACE logs job/csi-migrate" \
    '^migration complete' kubectl -n "$CLUSTER_NAMESPACE" logs job/csi-migrate || _cc_fail
  check "both PVs are CSI PVs, policies restored, csi.workshop.dev as their provisioner" \
    "step 7 creates them, plan::to_csi_pv sets pv.kubernetes.io/provisioned-by, step 10 restores the policy ($CH, Steps 4-5)" \
    _l6_pvs_migrated || _cc_fail
  check "the claims are still Bound to the same PVs" \
    "the claims keep spec.volumeName; the PV keeps claimRef.uid ($CH, Concepts)" \
    _l6_claims_bound || _cc_fail
  check "the writer runs again, on CSI" "kubectl -n legacy describe pod -l app=writer" \
    cluster_wait_rollout deployment/writer 300s legacy || _cc_fail
  check_output "the markers are identical" "the data must not be copied or reformatted ($CH, Verification)" \
    '^[0-9a-f]{64}  -$' _l6_same_markers || _cc_fail

  check "uninstall Flex: delete flex-install, run flex-uninstall everywhere" \
    "kubectl -n $CLUSTER_NAMESPACE logs ds/flex-uninstall ($CH, Verification)" \
    _l6_uninstall_flex || _cc_fail
  if ((_CC_FAILED)); then
    cluster_dump_diagnostics legacy "$LOG_DIR/cluster-diagnostics-legacy.txt"
  fi
  _cc_end
}

if stage cluster "Flex to CSI in a Kubernetes cluster"; then
  if [[ -f $REPO_ROOT/labs/cluster-lib.sh && -f $REPO_ROOT/labs/04-registration/cluster-checks.sh ]]; then
    # shellcheck source=labs/cluster-lib.sh
    source "$REPO_ROOT/labs/cluster-lib.sh"
    # shellcheck source=labs/04-registration/cluster-checks.sh
    source "$REPO_ROOT/labs/04-registration/cluster-checks.sh"
  fi
  if ! declare -F cluster_stage_run >/dev/null || ! declare -F _cc_deploy >/dev/null; then
    skip "cluster stage" "needs labs/cluster-lib.sh and labs/04-registration/cluster-checks.sh"
  elif ((BUILD_FAILED)); then
    skip "cluster stage" "the build failed: $(bin csi-migrate) is not this code's"
  elif [[ ! -x $(bin csi-migrate) ]] && cluster_available; then
    skip "cluster stage" "$(bin csi-migrate) is missing: run the build stage first"
  else
    cluster_stage_run cluster_checks_lab06
  fi
fi

finish
