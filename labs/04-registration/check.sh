#!/usr/bin/env bash
# shellcheck disable=SC2317 # the helpers below run through check/check_output
# labs/04-registration/check.sh [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep] [--strict]
#
# The instructor check of lab 04 (registering the driver with kubelet, and
# deploying it). WORKSPACE is the root of a trainee's copy
# (`cargo run -p xtask -- starter 04 --out DIR`); without it, this
# repository's finished code is graded.
#
#   build      the lab's crate (csi-registrar, kubelet-sim), the lab 03
#              driver and csictl compile
#   tests      the unit tests and the acceptance tests of labs/04-registration/tests
#              (registration.rs, binaries.rs, manifests.rs; manifests.rs is a
#              SKIP without kubectl), and cluster_lib.rs (the cluster stage's
#              node parsing, offline)
#   local      no cluster, no root: csi-lab03 --mode node on a temporary unix
#              socket, csi-registrar serving <registry>/csi.workshop.dev-reg.sock
#              and /healthz, and kubelet-sim playing kubelet's plugin watcher:
#              the driver registers with its node id and topology, a dot-file
#              in the registry is ignored, `ls -A` of the registry shows it
#              and <driver>-reg.sock, /healthz answers 200, a registrar
#              advertising a path kubelet cannot dial is refused (step
#              dial-driver) and exits non-zero, and SIGTERM removes the socket.
#              These are the commands of the chapter's Verification section.
#              Skipped when the build stage failed.
#   manifests  every kustomization under labs/*/deploy renders and validates
#              against the Kubernetes schema (validate-manifests.sh; installs
#              kubernetes-validate from PyPI when missing; SKIP without kubectl)
#   cluster    the whole driver in kind (or --cluster existing), the
#              commands of the chapter's "In the cluster": the Pods, the
#              CSIDriver, CSINode (entry, table), the nodeid annotation and
#              topology labels on every worker, the registrar's log, a block and a file volume
#              written on one worker and read on the other. The registrar is
#              $CLUSTER_REGISTRAR: official-registrar (default) or rust-registrar.
#
# The hints name steps of the book chapter book/src/labs/04-registration.md.

# This lab has one stage more than the others: the offline manifest check.
# shellcheck disable=SC2034 # read by check-lib.sh when it is sourced
CHECK_STAGES_ALL=build,tests,local,manifests,cluster
# shellcheck source=labs/check-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../check-lib.sh"
# shellcheck source=labs/cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster-lib.sh"
# shellcheck source=labs/04-registration/cluster-checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-checks.sh"
check_init "$@"

PKG=lab04-registration
CH="chapter Lab 04"
DRIVER=csi.workshop.dev

# ------------------------------------------------------------------ build
BUILD_FAILED=0
if stage build "compile the lab, the lab 03 driver and csictl"; then
  check "cargo build -p $PKG -p lab03-node -p csictl --all-targets" \
    "the starter compiles as generated: read the first compiler error (cargo build -p $PKG) and undo the change that caused it" \
    ws_cargo build -p "$PKG" -p lab03-node -p csictl --all-targets || BUILD_FAILED=1
fi

# ------------------------------------------------------------------ tests
if stage tests "the lab's tests"; then
  check "unit tests: cargo test -p $PKG --lib" \
    "only_csi_plugins_with_a_name_and_a_1_x_version_are_valid fails until kubelet::validate_plugin_info is written ($CH, Step 6)" \
    ws_cargo test -p "$PKG" --lib --no-fail-fast
  check "acceptance tests: tests/registration.rs (registrar and plugin watcher over real sockets)" \
    "each failing test names one part of the flow: GetInfo and NotifyRegistrationStatus (Step 2), the socket's name (Step 3), waiting for the driver (Step 4), kubelet's validation (Step 6) of the $CH" \
    ws_cargo test -p "$PKG" --test registration --no-fail-fast
  check "acceptance tests: tests/binaries.rs (csi-registrar and kubelet-sim as processes)" \
    "the binaries' exit codes follow kubelet's verdict: a rejection must end csi-registrar with an error, so NotifyRegistrationStatus must publish it ($CH, Steps 2 and 5)" \
    ws_cargo test -p "$PKG" --test binaries --no-fail-fast
  # Without kubectl these tests cannot render anything and pass empty-handed:
  # that is a SKIP, not a PASS.
  if command -v kubectl >/dev/null; then
    check "acceptance tests: tests/manifests.rs (the manifests fit together)" \
      "the manifests are given finished: a failure means deploy/ was edited; the failing test names the object and the rule ($CH, Steps 7 and 8)" \
      ws_cargo test -p "$PKG" --test manifests --no-fail-fast
  else
    skip "acceptance tests: tests/manifests.rs (the manifests fit together)" "kubectl is not on PATH: the kustomizations cannot be rendered"
  fi
  check "tests/cluster_lib.rs (the cluster stage's node parsing, offline)" \
    "labs/cluster-lib.sh is given finished: a failure means it was edited; cluster_workers_from_nodes must keep every ordinary worker" \
    ws_cargo test -p "$PKG" --test cluster_lib --no-fail-fast
fi

# ------------------------------------------------------------------ local
# The commands of the chapter's Verification section, with $W (the log
# directory) in place of /tmp/lab04, the binaries of $BIN_DIR on the PATH, a
# free port in place of 9809, and bash's /dev/tcp in place of curl.

# free_port: a TCP port on 127.0.0.1 that nobody listens on (bash only).
free_port() {
  local port i
  for ((i = 0; i < 50; i++)); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# http_get HOST PORT PATH: a GET over bash's /dev/tcp; prints the status
# line, the headers and the body.
http_get() {
  local host=$1 port=$2 path=$3 line
  exec 3<>"/dev/tcp/$host/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
  while IFS= read -r -t 5 line <&3 || [[ -n $line ]]; do
    printf '%s\n' "${line%$'\r'}"
    line=''
  done
  exec 3<&-
}

# kubelet_sim_once DIR OUT [EXPECTED_EXIT]: kubelet-sim watch --once on DIR,
# its lines to stdout and to OUT; succeeds when it exits EXPECTED_EXIT (0).
kubelet_sim_once() {
  local dir=$1 out=$2 want=${3:-0} rc
  kubelet-sim watch --dir "$dir" --once --timeout 20 >"$out"
  rc=$?
  cat "$out"
  if ((rc != want)); then
    echo "kubelet-sim exited $rc, expected $want (0 registered, 1 failed, 2 nothing appeared)" >&2
    return 1
  fi
}

# ls_is DIR NAME...: `ls -A DIR` (printed), and whether it lists exactly NAME...
ls_is() {
  local dir=$1 got want
  shift
  got=$(ls -A "$dir") || return 1
  printf '%s\n' "$got"
  want=$(printf '%s\n' "$@")
  [[ $got == "$want" ]] || { printf 'expected exactly:\n%s\n' "$want" >&2; return 1; }
}

# make_socket PATH: a unix socket file nobody serves (what a crash leaves).
make_socket() {
  python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$1"
}

# wait_exit NAME SECONDS: waits for a background process to end; sets
# EXIT_RC to its exit status, or to "running" if it is still there.
wait_exit() {
  local name=$1 pid i
  pid=$(bg_pid "$name")
  for ((i = 0; i < $2 * 10; i++)); do
    bg_alive "$name" || break
    sleep 0.1
  done
  if bg_alive "$name"; then
    EXIT_RC=running
  else
    wait "$pid"
    EXIT_RC=$?
  fi
}

# exited_with WANT: says how the last wait_exit ended; succeeds when it
# matches WANT (0, or "non-zero").
exited_with() {
  if [[ $EXIT_RC == running ]]; then
    echo "still running" >&2
    return 1
  fi
  echo "exited with status $EXIT_RC"
  case $1 in
    0) ((EXIT_RC == 0)) ;;
    non-zero) ((EXIT_RC != 0)) ;;
  esac
}

if stage local "csi-lab03 --mode node, csi-registrar and kubelet-sim on unix sockets"; then
  W=$LOG_DIR
  SOCK=$W/csi.sock
  REGISTRY=$W/registry
  REG_SOCK=$REGISTRY/$DRIVER-reg.sock
  export PATH=$BIN_DIR:$PATH
  NOT_RUN=''

  if ((BUILD_FAILED)); then
    NOT_RUN="the build failed: the binaries in $BIN_DIR are not this code's"
  elif [[ ! -x $(bin csi-lab03) || ! -x $(bin csi-registrar) || ! -x $(bin kubelet-sim) ]]; then
    NOT_RUN="$(bin csi-lab03), csi-registrar or kubelet-sim is missing: run the build stage first"
  elif ! PORT=$(free_port); then
    NOT_RUN='found no free TCP port on 127.0.0.1 for /healthz'
  elif ! command -v python3 >/dev/null; then
    NOT_RUN='python3 is needed to create the stale dot-file socket'
  fi

  if [[ -n $NOT_RUN ]]; then
    skip "the local stage" "$NOT_RUN"
  else
    start_bg driver csi-lab03 --mode node --nodeid node-a --endpoint "unix://$SOCK" \
      --backend-dir "$W/backend" --state-dir "$W/state"
    if ! check "csi-lab03 --mode node starts and listens on $SOCK" \
      "this is the lab 03 driver: run labs/03-node/check.sh; its log is $(bg_log driver)" \
      wait_for_socket "$SOCK" 20 driver; then
      skip "the other local checks" "the driver is not running"
    else
      # A socket whose name starts with a dot, as an editor or a crashed
      # tool might leave: kubelet's plugin watcher must skip it.
      mkdir -p "$REGISTRY"
      make_socket "$REGISTRY/.stale-reg.sock"
      start_bg registrar csi-registrar --csi-address "unix://$SOCK" \
        --kubelet-registration-path "$SOCK" --plugin-registration-path "$REGISTRY" \
        --http-endpoint "127.0.0.1:$PORT"

      check_output "kubelet-sim registers $DRIVER with node id node-a and both topology segments" \
        "the kubelet-sim lines name the failing step: getinfo (Step 2), validated (Step 6), nodegetinfo (Steps 2-3: the advertised endpoint); the registrar's log is $(bg_log registrar)" \
        "^registered ${DRIVER//./\\.} endpoint=[^ ]+/csi\\.sock node_id=node-a topology=topology\\.csi\\.workshop\\.dev/backend=[^,]+,topology\\.csi\\.workshop\\.dev/node=node-a " \
        kubelet_sim_once "$REGISTRY" "$W/kubelet-sim.out"
      check_output "kubelet would write the CSINode entry: nodeID node-a, both topology keys" \
        "kubelet copies NodeGetInfo into CSINode: node_id and the keys of accessible_topology ($CH, Concepts C17)" \
        '^would-write csinode driver=csi\.workshop\.dev nodeID=node-a topologyKeys=\[topology\.csi\.workshop\.dev/backend,topology\.csi\.workshop\.dev/node\]' \
        cat "$W/kubelet-sim.out"
      check_output "the dot-file socket in the registry is ignored" \
        "kubelet skips names starting with '.'; kubelet::scan must too (read it in $CH, Step 6)" \
        "^ignored [^ ]+/\\.stale-reg\\.sock: kubelet skips names starting with '\\.'" \
        cat "$W/kubelet-sim.out"
      check "the registration socket is $REGISTRY/$DRIVER-reg.sock" \
        "registration_socket_path must name it <driver>-reg.sock in --plugin-registration-path ($CH, Step 3); the registry holds: $(find "$REGISTRY" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null)" \
        test -S "$REG_SOCK"
      check "ls -A the registry: the dot-file and $DRIVER-reg.sock, nothing else" \
        "the registrar serves exactly one socket, <driver>-reg.sock, and leaves other files alone ($CH, Step 3)" \
        ls_is "$REGISTRY" .stale-reg.sock "$DRIVER-reg.sock"
      check_output "GET /healthz on 127.0.0.1:$PORT answers 200" \
        "/healthz is OK while the registration socket answers GetInfo ($CH, Steps 2 and 5); the registrar's log is $(bg_log registrar)" \
        '^HTTP/1\.[01] 200' http_get 127.0.0.1 "$PORT" /healthz

      # The failure path: a second registrar that advertises a path that
      # does not exist "on the host", in a registry of its own.
      start_bg bad-registrar csi-registrar --csi-address "unix://$SOCK" \
        --kubelet-registration-path "$W/not-on-the-host/csi.sock" \
        --plugin-registration-path "$W/registry-bad"
      check_output "a registrar advertising a path kubelet cannot dial is refused at step dial-driver" \
        "GetInfo must advertise --kubelet-registration-path as the endpoint, and kubelet-sim must exit 1 ($CH, Steps 2 and 6)" \
        '^failed [^ ]+ name=csi\.workshop\.dev step=dial-driver: ' \
        kubelet_sim_once "$W/registry-bad" "$W/kubelet-sim-bad.out" 1
      wait_exit bad-registrar 10
      check_output "that registrar, told plugin_registered=false, exits non-zero" \
        "NotifyRegistrationStatus must publish Verdict::Rejected, which ends the registrar with an error ($CH, Step 2); its log is $(bg_log bad-registrar)" \
        'exited with status [1-9]' exited_with non-zero

      # SIGTERM, as kubelet stops a container.
      kill -TERM "$(bg_pid registrar)" 2>/dev/null
      wait_exit registrar 10
      check_output "SIGTERM: csi-registrar exits 0" \
        "a signal is a clean stop, not a failure ($CH, Step 5); its log is $(bg_log registrar)" \
        '^exited with status 0$' exited_with 0
      check "csi-registrar removed $DRIVER-reg.sock, and left the dot-file alone (ls -A the registry)" \
        "on shutdown the registrar removes its own socket, so kubelet deregisters the driver ($CH, Step 5)" \
        ls_is "$REGISTRY" .stale-reg.sock
    fi
  fi
fi

# ------------------------------------------------------------------ manifests
if stage manifests "the manifests, offline"; then
  if command -v kubectl >/dev/null; then
    check_output "every kustomization under labs/*/deploy renders and validates (validate-manifests.sh)" \
      "the lines marked FAIL name the kustomization and the field; no cluster is needed to reproduce: bash labs/04-registration/validate-manifests.sh ($CH, Steps 7 and 8)" \
      '^validate-manifests: all manifests render and validate \(Kubernetes [0-9.]+, strict\)$' \
      bash "$WS/labs/04-registration/validate-manifests.sh"
  else
    skip "every kustomization under labs/*/deploy renders and validates (validate-manifests.sh)" \
      "kubectl is not on PATH: kubectl kustomize renders the manifests"
  fi
fi

# ------------------------------------------------------------------ cluster
if stage cluster "the whole driver in a Kubernetes cluster (kind unless --cluster existing)"; then
  cluster_stage_run cluster_checks_lab04 "${CLUSTER_REGISTRAR:-official-registrar}"
fi

finish
