#!/usr/bin/env bash
# labs/03-node/check.sh [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep]
#
# The instructor check of lab 03 (the Node service). WORKSPACE is the root of
# a trainee's copy (`cargo run -p xtask -- starter 03 --out DIR`); without it,
# this repository's finished code is graded.
#
#   build    the lab's crate and csictl compile
#   tests    the unit tests, and as root the acceptance tests of
#            labs/03-node/tests (loop devices, mkfs, mounts)
#   local    as root: csi-lab03 on a temporary unix socket, called with
#            csictl: two walks, then one block volume staged, published,
#            written, torn down, staged again and read back, refusals, a
#            restart while the volume is published, and nothing left behind.
#            Everything lives under the run's temporary directory; mounts and
#            loop devices left there by a failing driver are removed at exit.
#   cluster  the driver in a kind cluster (the cluster checks come with lab 04)
#
# Not root: the root-only steps are SKIPPED, never passed.
# The hints name sections of the book chapter book/src/labs/03-node.md.
# shellcheck source=labs/check-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../check-lib.sh"
# shellcheck source=labs/cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster-lib.sh"
# shellcheck source=labs/04-registration/cluster-checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/../04-registration/cluster-checks.sh"
check_init "$@"

PKG=lab03-node
CH="chapter Lab 03"

# ROOT_REASON (check-lib.sh) says why root-only steps cannot run; the local
# stage also sets it when the build failed or the driver does not start.

# ------------------------------------------------------------------ build
BUILD_FAILED=0
if stage build "compile the workspace"; then
  check "cargo build -p $PKG -p csictl --all-targets" \
    "read the first compiler error (cargo build -p $PKG): the starter compiles as generated, so it is in code you changed" \
    ws_cargo build -p "$PKG" -p csictl --all-targets || BUILD_FAILED=1
fi

# ------------------------------------------------------------------ tests
if stage tests "the lab's tests"; then
  check "unit tests: cargo test -p $PKG --lib" \
    "dangerous_paths_are_rejected fails until paths::host_path is written ($CH, Step 1)" \
    ws_cargo test -p "$PKG" --lib --no-fail-fast
  rcheck "acceptance tests: tests/node.rs (root: loop devices, mkfs, mounts)" \
    "each failing test names an RPC and a rule: $CH, Steps 5-8 (stage, unstage, publish, unpublish) and Step 9 (restarts)" \
    ws_cargo test -p "$PKG" --test node --no-fail-fast
  rcheck "host primitives: tests/host_primitives.rs (root)" \
    "these test loopdev, fs and mount, which the lab gives you finished: a failure here is the machine (root? loop devices? e2fsprogs?), see the test's message ($CH, Steps 2-4)" \
    ws_cargo test -p "$PKG" --test host_primitives --no-fail-fast
fi

# ------------------------------------------------------------------ local
# The driver on a unix socket in the log directory, called with csictl: the
# commands of the chapter's Verification section, word for word, with $W
# (the log directory) in place of /tmp/lab03 and $BIN_DIR on the PATH.

start_driver() {
  start_bg driver csi-lab03 --drivername csi.workshop.dev --nodeid node-a \
    --backend-dir "$W/backend" --state-dir "$W/state"
}

# cleanup_host DIR: unmounts everything mounted under DIR (last mounted
# first, stacked mounts too) and detaches the loop devices whose backing file is
# under DIR. Registered with on_exit, so a failing driver leaves nothing.
# shellcheck disable=SC2317 # this and the two below run through on_exit and check_output
cleanup_host() {
  local dir=$1 m dev
  local -a mounts
  for _ in 1 2 3 4 5; do
    mapfile -t mounts < <(findmnt --list --noheadings --output TARGET | grep "^$dir/" | tac)
    ((${#mounts[@]} > 0)) || break
    for m in "${mounts[@]}"; do
      echo "cleanup: umount $m"
      umount "$m" 2>/dev/null || umount -l "$m"
    done
  done
  losetup --list --noheadings --output NAME,BACK-FILE |
    awk -v d="$dir/" 'index($2, d) == 1 { print $1 }' |
    while read -r dev; do
      echo "cleanup: losetup -d $dev"
      losetup -d "$dev"
    done
  return 0
}

# The two counts of the Verification section's last commands.
# shellcheck disable=SC2317
mounts_under() { findmnt --list --noheadings --output TARGET | grep -c "^$1/" || true; }
# shellcheck disable=SC2317
loops_under() { losetup --list --noheadings --output BACK-FILE | grep -c "^$1/" || true; }

if stage local "csi-lab03 on a unix socket: loop devices, mkfs, mounts"; then
  # Canonical, because the kernel reports resolved paths (mountinfo, losetup).
  W=$(realpath "$LOG_DIR")
  SOCK=$W/csi.sock
  export PATH=$BIN_DIR:$PATH
  export CSI_ENDPOINT=unix://$SOCK
  STAGING=$W/staging/data
  POD1=$W/pods/pod-1/data
  POD2=$W/pods/pod-2/data
  RUNNING=0

  if [[ -n $ROOT_REASON ]]; then
    note "$ROOT_REASON: every step of this stage is skipped"
  elif ((BUILD_FAILED)); then
    ROOT_REASON="the build failed: the binaries in $BIN_DIR are not this code's"
  elif [[ ! -x $(bin csi-lab03) || ! -x $(bin csictl) ]]; then
    ROOT_REASON="$(bin csi-lab03) or $(bin csictl) is missing: run the build stage first"
  else
    on_exit "cleanup_host '$W'"
    start_driver
    if check "csi-lab03 starts and listens on $SOCK" \
      "the driver exits or never binds: see its log $(bg_log driver)" \
      wait_for_socket "$SOCK" 20 driver; then
      RUNNING=1
    else
      ROOT_REASON='the driver is not running'
    fi
  fi

  rcheck_output "NodeGetInfo reports node-a and the backend topology" \
    "node_get_info returns --nodeid and the topology segments ($CH, Step 10)" \
    '^node_id: node-a$' csictl node info
  rcheck_output "NodeGetCapabilities lists STAGE_UNSTAGE_VOLUME" \
    "without it kubelet never calls NodeStageVolume ($CH, Step 10)" \
    '^  - STAGE_UNSTAGE_VOLUME$' csictl node caps

  # Whole lifecycles, as a CO would drive them.
  rcheck_output "csictl walk --type block: create, attach, stage, publish, write, read, and back" \
    "the walk prints which step failed; the driver's log $(bg_log driver) says why ($CH, Steps 5-8)" \
    '^walk complete' csictl walk --type block --size 64Mi --name walk-block --work-dir "$W/walk-block"
  rcheck_output "csictl walk --type file: the same with a shared directory" \
    "file volumes bind-mount <backend>/volumes/<id>/data at the staging path ($CH, Step 5)" \
    '^walk complete' csictl walk --type file --size 64Mi --name walk-file --work-dir "$W/walk-file"

  # One block volume by hand.
  rcheck_output "CreateVolume: a 64 MiB block volume 'data'" \
    "this is lab 02's CreateVolume; run labs/02-controller/check.sh" \
    '^volume_id: data$' csictl controller create --name data --size 64Mi --type block
  rcheck_fails_with "NodeStage before ControllerPublish is FailedPrecondition" \
    "a block volume must be attached to this node first: Error::NotAttached ($CH, Step 5)" \
    FailedPrecondition csictl node stage --id data --staging-path "$STAGING"
  rcheck_output "ControllerPublish attaches 'data' to node-a" \
    "this is lab 02's ControllerPublishVolume; the node registered itself with the backend at start" \
    '^  image: volumes/data/disk\.img$' csictl controller publish --id data --node-id node-a
  rcheck_fails_with "NodePublish before NodeStage is FailedPrecondition" \
    "publish needs the volume staged at staging_target_path: Error::NotStaged ($CH, Step 7)" \
    FailedPrecondition csictl node publish --id data --staging-path "$STAGING" --target-path "$POD1"
  rcheck_fails_with "NodePublish to target path / is InvalidArgument" \
    "paths::host_path must refuse the root directory ($CH, Step 1)" \
    InvalidArgument csictl node publish --id data --staging-path "$STAGING" --target-path /
  rcheck_fails_with "NodePublish with the unknown mount flag 'suid' is InvalidArgument" \
    "mount options go through mount::parse_mount_options, an allowlist ($CH, Step 4)" \
    InvalidArgument csictl node publish --id data --staging-path "$STAGING" --target-path "$POD1" --mount-flag suid

  rcheck_output "NodeStage 'data' at the staging path (loop device, mkfs.ext4 as it is blank, mount)" \
    "stage: loopdev::attach, fs::ensure_formatted, mount::mount_device, then record it ($CH, Step 5)" \
    '^staged: true$' csictl node stage --id data --staging-path "$STAGING" --publish-context image=volumes/data/disk.img
  rcheck_output "findmnt: an ext4 filesystem on a loop device is mounted at the staging path" \
    "nothing is mounted at the staging path: NodeStage must attach, format and mount, not only record it ($CH, Step 5)" \
    '^/dev/loop[0-9]+ +ext4$' findmnt --noheadings --output SOURCE,FSTYPE --mountpoint "$STAGING"
  rcheck_output "NodePublish: bind-mount the staging path into pod-1's target path" \
    "publish: create the target directory, mount::bind_mount, record it ($CH, Step 7)" \
    '^published: true$' csictl node publish --id data --staging-path "$STAGING" --target-path "$POD1"
  rcheck "pod-1 writes hello.txt into the volume" \
    "the target must be a writable mount of the volume ($CH, Step 7)" \
    sh -c "echo 'written by pod-1' > '$POD1/hello.txt'"
  rcheck_output "NodeGetVolumeStats on pod-1's target: mounted, normal" \
    "stats come from statvfs of the mounted path ($CH, Step 10)" \
    '^  abnormal: false$' csictl node stats --id data --path "$POD1"
  rcheck_output "NodeUnpublish pod-1" \
    "unpublish: unmount the target, remove it, forget it ($CH, Step 8)" \
    '^unpublished: true$' csictl node unpublish --id data --target-path "$POD1"
  rcheck_output "NodeUnstage: unmount the staging path and detach the loop device" \
    "unstage: mount::unmount, then loopdev::detach ($CH, Step 6)" \
    '^unstaged: true$' csictl node unstage --id data --staging-path "$STAGING"
  rcheck_output "NodeStage 'data' again" \
    "stage must format only a blank device: fs::ensure_formatted ($CH, Steps 3 and 5)" \
    '^staged: true$' csictl node stage --id data --staging-path "$STAGING" --publish-context image=volumes/data/disk.img
  rcheck_output "NodePublish into pod-2's target path" \
    "publish: create the target directory, mount::bind_mount, record it ($CH, Step 7)" \
    '^published: true$' csictl node publish --id data --staging-path "$STAGING" --target-path "$POD2"
  rcheck_output "pod-2 reads the file pod-1 wrote: the volume was not reformatted" \
    "the data is gone: stage ran mkfs on a device that had a filesystem, or mounted another device ($CH, Steps 3 and 5)" \
    '^written by pod-1$' cat "$POD2/hello.txt"

  # A restart while the volume is staged and published.
  if ((RUNNING)); then
    stop_bg driver
    start_driver
  fi
  rcheck "csi-lab03 restarts while 'data' is published" \
    "see the driver's log $(bg_log driver): reconcile runs at start-up ($CH, Step 9)" \
    wait_for_socket "$SOCK" 20 driver
  rcheck_output "after the restart, NodeUnpublish pod-2" \
    "the restarted driver must find its records: they are in --state-dir ($CH, Steps 8 and 9)" \
    '^unpublished: true$' csictl node unpublish --id data --target-path "$POD2"
  rcheck_output "after the restart, NodeUnstage" \
    "unstage finds the loop device by its backing file, not from memory ($CH, Steps 6 and 9)" \
    '^unstaged: true$' csictl node unstage --id data --staging-path "$STAGING"
  rcheck_output "ControllerUnpublish detaches 'data' from node-a" \
    "this is lab 02's ControllerUnpublishVolume" \
    '^unpublished: true$' csictl controller unpublish --id data --node-id node-a
  rcheck_output "DeleteVolume deletes 'data'" \
    "this is lab 02's DeleteVolume" \
    '^deleted: true$' csictl controller delete --id data

  # Nothing left behind.
  rcheck_output "findmnt: nothing is mounted under the temporary directory any more" \
    "a mount was left behind: every NodeUnpublish/NodeUnstage must unmount what was mounted ($CH, Steps 6 and 8)" \
    '^0$' mounts_under "$W"
  rcheck_output "losetup: no loop device is backed by a file under the temporary directory" \
    "a loop device was left attached: NodeUnstage must detach it ($CH, Step 6)" \
    '^0$' loops_under "$W"
fi

# ------------------------------------------------------------------ cluster
if stage cluster "the driver in a Kubernetes cluster"; then
  cluster_stage_run cluster_checks_lab03
fi

finish
