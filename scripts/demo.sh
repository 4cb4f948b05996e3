#!/usr/bin/env bash
# The README's main job, in two parts.
#
#   1. Local (always): build the finished driver, start it on a local unix
#      socket, and walk a block volume and a file volume through the whole
#      CSI lifecycle with csictl, showing every step. Needs root (loop
#      devices, mkfs and mounts are real), no cluster.
#   2. Cluster (when `docker info` succeeds and kind is on PATH): bring up
#      kind with the finished driver (scripts/kind-up.sh), then run lab 04's
#      cluster assertions (labs/04-registration/check.sh --stages cluster):
#      kubelet registers the driver on every worker, and a block and a file
#      volume written on one worker are read on the other. Otherwise it
#      prints `cluster stage skipped: <reason>`; a skipped stage is never
#      reported as passed.
#
# Environment: REGISTRAR (official-registrar or rust-registrar, for both
# kind-up.sh and the check), NO_CLUSTER=1 to skip part 2 on purpose.
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
echo; echo "local part finished: both volumes were created, attached, staged, published, used and torn down."

# ------------------------------------------------------------------ cluster
echo; echo "== cluster stage: the driver in kind"
cluster_reason=''
if [ "${NO_CLUSTER:-0}" = 1 ]; then
    cluster_reason='NO_CLUSTER=1'
elif ! command -v docker >/dev/null 2>&1; then
    cluster_reason='no Docker engine (docker is not on PATH)'
elif ! timeout 30 docker info >/dev/null 2>&1; then
    cluster_reason='no Docker engine (docker info failed)'
elif ! command -v kind >/dev/null 2>&1; then
    cluster_reason='kind is not on PATH'
elif ! command -v kubectl >/dev/null 2>&1; then
    cluster_reason='kubectl is not on PATH'
fi
if [ -n "$cluster_reason" ]; then
    echo "cluster stage skipped: $cluster_reason"
    echo "Nothing was deployed and nothing was checked in a cluster. With Docker and kind"
    echo "installed, run this script again, or: sudo bash scripts/kind-up.sh"
    exit 0
fi

registrar=${REGISTRAR:-official-registrar}
REGISTRAR=$registrar bash scripts/kind-up.sh
echo; echo "== lab 04's cluster assertions (labs/04-registration/check.sh --stages cluster)"
# kind-up.sh has just built and loaded the image; --keep leaves the driver
# deployed afterwards (without it the check deletes what it applied).
check_rc=0
CLUSTER_SKIP_BUILD=1 CLUSTER_REGISTRAR=$registrar \
    bash labs/04-registration/check.sh --stages cluster --cluster kind --keep 2>&1 |
    tee "$work/cluster-check.log" || check_rc=$?
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$work/cluster-check.log" |
    grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' | tail -n 1 || true)
if [ "$check_rc" -ne 0 ]; then
    echo; echo "cluster stage FAILED (${summary:-no summary}): see the FAIL lines above and the diagnostics file they name." >&2
    exit 1
elif ! printf '%s\n' "$summary" | grep -Eq '^[1-9][0-9]* passed, 0 failed, 0 skipped$'; then
    echo; echo "cluster stage skipped: the check ran nothing or skipped something (${summary:-no summary}); not counted as passed."
    exit 0
fi
echo; echo "demo finished: the local walk passed, and in kind ($summary) the driver registered on"
echo "every worker and served a block and a file volume that moved from one worker to the other."
echo "The cluster stays up: kubectl get csinode; kind delete cluster --name ${KIND_CLUSTER:-csi-workshop}"
