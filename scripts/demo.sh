#!/usr/bin/env bash
# The README's main job: build the finished driver, start it on a local unix
# socket, and walk a block volume and a file volume through the whole CSI
# lifecycle with csictl, showing every step. No cluster needed; root is
# (loop devices, mkfs and mounts are real).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: needs root (the driver attaches loop devices and mounts filesystems)." >&2
    echo "      run: sudo $0" >&2
    exit 1
fi
ensure_host_tools

echo "== building the driver (csi-lab03) and the client (csictl)"
cargo build --quiet -p lab03-node -p csictl
bin="$repo/target/debug"

work=$(mktemp -d /tmp/csi-demo.XXXXXX)
socket="$work/csi.sock"
driver_pid=""
cleanup() {
    if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        wait "$driver_pid" 2>/dev/null || true
    fi
    # Anything a failed step left mounted or attached under the work dir.
    findmnt -rn -o TARGET | grep "^$work" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v w="$work" 'index($2, w) == 1 {print $1}' | xargs -r -n1 losetup -d 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== starting csi-lab03 on unix://$socket"
"$bin/csi-lab03" --endpoint "unix://$socket" --nodeid demo-node \
    --backend-dir "$work/backend" --state-dir "$work/state" --log-level warn &
driver_pid=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { echo "the driver did not create its socket" >&2; exit 1; }

csictl() { "$bin/csictl" --endpoint "unix://$socket" "$@"; }

echo; echo "== Identity"
csictl identity info
csictl identity probe

for type in block file; do
    echo; echo "== walking a $type volume through its lifecycle"
    csictl walk --type "$type" --size 64Mi --work-dir "$work/walk-$type"
done

echo; echo "== stopping the driver with SIGTERM"
kill -TERM "$driver_pid"
wait "$driver_pid"
driver_pid=""
[ ! -e "$socket" ] && echo "socket removed on shutdown"
echo; echo "demo finished: both volumes were created, attached, staged, published, used and torn down."
echo "The cluster stage (kind) comes with lab 04; see the README."
