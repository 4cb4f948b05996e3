#!/usr/bin/env bash
# labs/02-controller/check.sh [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep]
#
# The instructor check of lab 02 (the Controller service). WORKSPACE is the
# root of a trainee's copy (`cargo run -p xtask -- starter 02 --out DIR`);
# without it, this repository's finished code is graded.
#
#   build    the lab's crate and csictl compile
#   tests    the unit tests and the acceptance tests of labs/02-controller/tests
#   local    csi-lab02 on a temporary unix socket and backend directory,
#            called with csictl: the commands of the chapter's Verification
#            section, including a restart of the driver half-way
#   cluster  the driver in a kind cluster (the cluster checks come with lab 04)
#
# The hints name sections of the book chapter book/src/labs/02-controller.md.
# shellcheck source=labs/check-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../check-lib.sh"
# shellcheck source=labs/cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster-lib.sh"
# shellcheck source=labs/04-registration/cluster-checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/../04-registration/cluster-checks.sh"
check_init "$@"

PKG=lab02-controller
CH="chapter Lab 02"

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
    "the failing test names the function: validate::id (Step 3), capacity::from_range (Step 4), write_json_atomic (Step 2), check_requirement (Step 5) in the $CH" \
    ws_cargo test -p "$PKG" --lib --no-fail-fast
  check "acceptance tests: tests/controller.rs" \
    "each failing test names an RPC and a rule; $CH, Steps 5-7 (CreateVolume, DeleteVolume, ControllerPublish/Unpublish) and Step 10 (error codes)" \
    ws_cargo test -p "$PKG" --test controller --no-fail-fast
fi

# ------------------------------------------------------------------ local
# The driver on a unix socket in the log directory, called with csictl: the
# commands of the chapter's Verification section, word for word, with
# $LOG_DIR in place of /tmp/lab02 and the binaries of $BIN_DIR on the PATH.

# start_driver: csi-lab02 in the background, waits for its socket.
start_driver() {
  start_bg driver csi-lab02 --drivername csi.workshop.dev --backend-dir "$BACKEND"
}

if stage local "csi-lab02 on a unix socket, called with csictl"; then
  SOCK=$LOG_DIR/csi.sock
  BACKEND=$LOG_DIR/backend
  export PATH=$BIN_DIR:$PATH
  export CSI_ENDPOINT=unix://$SOCK

  if ((BUILD_FAILED)); then
    skip "the local stage" "the build failed: the binaries in $BIN_DIR are not this code's"
  elif [[ ! -x $(bin csi-lab02) || ! -x $(bin csictl) ]]; then
    skip "the local stage" "$(bin csi-lab02) or $(bin csictl) is missing: run the build stage first"
  else
    check_output "register node-a with the backend (csi-lab02 register-node)" \
      "register-node writes <backend>/nodes/node-a.json; read its error" \
      '^node node-a registered' csi-lab02 --backend-dir "$BACKEND" register-node --nodeid node-a
    check_output "register node-b with the backend" \
      "register-node writes <backend>/nodes/node-b.json; read its error" \
      '^node node-b registered' csi-lab02 --backend-dir "$BACKEND" register-node --nodeid node-b

    start_driver
    if ! check "csi-lab02 starts and listens on $SOCK" \
      "the driver exits or never binds: see its log $(bg_log driver)" \
      wait_for_socket "$SOCK" 20 driver; then
      skip "the other local checks" "the driver is not running"
    else
      check_output "GetPluginCapabilities advertises the Controller service" \
        "identity_service(.., true) switches CONTROLLER_SERVICE on" \
        '^  - service: CONTROLLER_SERVICE$' csictl identity caps
      check_output "ControllerGetCapabilities lists PUBLISH_UNPUBLISH_VOLUME" \
        "without it external-attacher never calls ControllerPublishVolume ($CH, Step 8)" \
        '^  - PUBLISH_UNPUBLISH_VOLUME$' csictl controller caps

      # CreateVolume
      check_output "CreateVolume makes a 64 MiB block volume" \
        "capacity::from_range (Step 4), then create the record and the image (Steps 1 and 5 of the $CH)" \
        '^capacity_bytes: 67108864 ' csictl controller create --name vol-block --size 64Mi --type block
      check_output "the block volume is a sparse 64 MiB image on the backend" \
        "Backend::create: File::create + set_len makes a sparse file of the capacity ($CH, Step 1)" \
        '^67108864 bytes, [0-9]{1,3} blocks allocated$' \
        stat --format='%s bytes, %b blocks allocated' "$BACKEND/volumes/vol-block/disk.img"
      check_output "CreateVolume makes a 32 MiB file volume" \
        "the type parameter chooses the kind ($CH, Steps 1 and 5)" \
        '^  type: file$' csictl controller create --name vol-file --size 32Mi --type file
      check_output "the file volume is a directory on the backend" \
        "Backend::create: a file volume is <backend>/volumes/<id>/data ($CH, Step 1)" \
        '^data$' ls -1 "$BACKEND/volumes/vol-file"
      check_output "CreateVolume again with the same arguments returns the same volume" \
        "a retry with the same name and arguments must succeed and return the existing volume ($CH, Step 5)" \
        '^volume_id: vol-block$' csictl controller create --name vol-block --size 64Mi --type block
      check_fails_with "the same name with another type is AlreadyExists" \
        "same name, incompatible arguments: Error::NameConflict ($CH, Step 5)" \
        AlreadyExists csictl controller create --name vol-block --size 64Mi --type file
      check_fails_with "a name with ../ in it is InvalidArgument" \
        "validate::id must refuse '/', '..' and a leading '.' ($CH, Step 3)" \
        InvalidArgument csictl controller create --name ../x --size 64Mi
      check_fails_with "2Ti, above --max-volume-size (1Ti), is OutOfRange" \
        "capacity::from_range: a required size above the maximum is CapacityOutOfRange ($CH, Step 4)" \
        OutOfRange csictl controller create --name huge --size 2Ti

      # ControllerPublish
      check_output "ControllerPublish attaches vol-block to node-a and returns the image path" \
        "record the attachment and return the publish context ($CH, Step 7)" \
        '^  image: volumes/vol-block/disk\.img$' csictl controller publish --id vol-block --node-id node-a
      check_output "ControllerPublish to node-a again is OK" \
        "the same attachment again is a retry: answer as the first time ($CH, Step 7)" \
        '^  image: volumes/vol-block/disk\.img$' csictl controller publish --id vol-block --node-id node-a
      check_fails_with "ControllerPublish of vol-block to node-b is FailedPrecondition" \
        "a single-node volume published elsewhere: Error::PublishedElsewhere ($CH, Step 7)" \
        FailedPrecondition csictl controller publish --id vol-block --node-id node-b
      check_fails_with "ControllerPublish to a node that never registered is NotFound" \
        "Backend::node returns None: Error::NodeNotFound ($CH, Step 7)" \
        NotFound csictl controller publish --id vol-block --node-id node-x

      # Restart: everything is in the backend, nothing in memory.
      stop_bg driver
      start_driver
      if check "csi-lab02 restarts on the same backend" \
        "see the driver's log $(bg_log driver)" \
        wait_for_socket "$SOCK" 20 driver; then
        check_output "after the restart ControllerGetVolume still shows vol-block published to node-a" \
          "attachments live in volume.json, written with write_json_atomic ($CH, Steps 2 and 7)" \
          '^  - node-a$' csictl controller get --id vol-block

        # ListVolumes
        check_output "ListVolumes with --max-entries 1 returns a next_token" \
          "list_volumes pages through the sorted records ($CH, Step 8)" \
          '^next_token: [^" ]' csictl controller list --max-entries 1
        TOKEN=$(last_output | sed -n 's/^next_token: //p')
        check_output "ListVolumes from that token returns vol-file" \
          "the token names the next volume id ($CH, Step 8)" \
          '^ +volume_id: vol-file$' csictl controller list --max-entries 1 --starting-token "${TOKEN:-none}"
        check_fails_with "ListVolumes with a bad token is Aborted" \
          "an unknown starting_token is Error::BadListToken, ABORTED by the spec ($CH, Step 8)" \
          Aborted csictl controller list --starting-token bogus

        check_output "GetCapacity reports the backend's free space" \
          "get_capacity: statvfs of the backend ($CH, Step 8)" \
          '^available_capacity: [1-9][0-9]* ' csictl controller capacity
        check_output "ValidateVolumeCapabilities confirms single-node-writer for vol-file" \
          "confirm what the volume supports ($CH, Step 8)" \
          '^confirmed: true$' csictl controller validate --id vol-file
        check_output "ControllerExpandVolume grows vol-block to 128 MiB" \
          "expand: grow the image and save the record ($CH, Step 9)" \
          '^capacity_bytes: 134217728 ' csictl controller expand --id vol-block --size 128Mi

        # Delete
        check_fails_with "DeleteVolume of a published volume is FailedPrecondition" \
          "a volume still published must not be deleted: Error::StillPublished ($CH, Step 6)" \
          FailedPrecondition csictl controller delete --id vol-block
        check_output "ControllerUnpublish detaches vol-block from node-a" \
          "remove the node's attachment and save ($CH, Step 7)" \
          '^unpublished: true$' csictl controller unpublish --id vol-block --node-id node-a
        check_output "ControllerUnpublish again is OK" \
          "an attachment that is already gone is success ($CH, Step 7)" \
          '^unpublished: true$' csictl controller unpublish --id vol-block --node-id node-a
        check_output "DeleteVolume deletes vol-block" \
          "delete the volume's directory from the backend ($CH, Step 6)" \
          '^deleted: true$' csictl controller delete --id vol-block
        check_output "DeleteVolume again is OK" \
          "deleting a volume that does not exist succeeds: it may be a retry ($CH, Step 6)" \
          '^deleted: true$' csictl controller delete --id vol-block
        check_fails_with "ControllerGetVolume of the deleted volume is NotFound" \
          "Backend::get of a missing volume is Error::VolumeNotFound ($CH, Step 10)" \
          NotFound csictl controller get --id vol-block
      fi
    fi
  fi
fi

# ------------------------------------------------------------------ cluster
if stage cluster "the driver in a Kubernetes cluster"; then
  cluster_stage_run cluster_checks_lab02
fi

finish
