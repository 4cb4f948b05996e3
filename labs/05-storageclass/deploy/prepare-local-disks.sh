#!/usr/bin/env bash
# labs/05-storageclass/deploy/prepare-local-disks.sh up|down [DISKS_DIR]
#
# The "disks" of the local-PV exercise, made on the HOST (run as root, after
# `kind create cluster --config kind-config.yaml`): small ext4 image files,
# loop-mounted under DISKS_DIR (default /tmp/csi-workshop/disks), which
# kind-config.yaml mounts into the workers at /mnt/disks with
# HostToContainer propagation:
#
#   worker1/disk1, worker1/disk2   two disks of the first worker
#   worker2/disk1                  the second worker's only disk
#   worker2/not-a-disk             a plain directory, which the provisioner refuses
#
# The images live in DISKS_DIR/images. `down` unmounts, detaches and removes
# them. Both are idempotent. Only the check's cluster stage (or you) runs it.
#
# Propagation: the host mounts reach the nodes because the host's / is a
# shared mount (systemd makes it so); on a host where it is not, run
# `mount --make-rshared /` once, or the workers see empty directories.
set -euo pipefail

action=${1:-}
disks=${2:-${CLUSTER_DISKS_DIR:-/tmp/csi-workshop/disks}}
images=$disks/images
size=${DISK_SIZE:-64M}
layout=(worker1/disk1 worker1/disk2 worker2/disk1)

die() { echo "prepare-local-disks: $*" >&2; exit 1; }

up() {
  [[ $(id -u) == 0 ]] || die "run as root (losetup, mkfs, mount)"
  mkdir -p "$images" "$disks/worker2/not-a-disk"
  local d img dev
  for d in "${layout[@]}"; do
    img=$images/${d//\//-}.img
    mkdir -p "$disks/$d"
    if mountpoint -q "$disks/$d"; then
      echo "$disks/$d: already mounted"
      continue
    fi
    [[ -f $img ]] || { truncate -s "$size" "$img" && mkfs.ext4 -q -F "$img"; }
    dev=$(losetup --find --show "$img")
    mount -t ext4 "$dev" "$disks/$d"
    echo "$disks/$d: $dev ($size ext4)"
  done
}

down() {
  local d dev
  for d in "${layout[@]}"; do
    if mountpoint -q "$disks/$d"; then
      dev=$(findmnt -n -o SOURCE --target "$disks/$d")
      umount "$disks/$d"
      if [[ $dev == /dev/loop* ]]; then losetup -d "$dev" 2>/dev/null || true; fi
      echo "$disks/$d: unmounted"
    fi
  done
  # Loop devices left behind by an interrupted run.
  local img
  for img in "$images"/*.img; do
    [[ -e $img ]] || continue
    losetup -j "$img" -O NAME -n | while read -r dev; do losetup -d "$dev"; done
  done
  rm -rf "$images"
  rmdir "$disks"/worker{1,2}/disk* "$disks/worker2/not-a-disk" 2>/dev/null || true
}

case $action in
  up) up ;;
  down) down ;;
  *) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
