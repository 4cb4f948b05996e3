# shellcheck shell=bash
# labs/check-lib.sh: the shared part of every lab's check.sh. Source it, then:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../check-lib.sh"
#   check_init "$@"            # [WORKSPACE] [--stages ...] [--cluster ...] [--keep] [--strict]
#   if stage build; then
#     check "the workspace builds" "run cargo build and read the first error" \
#       ws_cargo build --workspace --all-targets
#   fi
#   ...
#   finish                     # prints "N passed, N failed, N skipped", exits 0/1
#
# Sourcing only defines functions; check_init does the rest (arguments, temp
# dir, cleanup trap). Commands given to check* run in a subshell with their
# output captured to a log: a variable they set, or a start_bg/on_exit they
# call, does not reach the script. Read a check's output with `last_output`.
#
# Functions (see each one's comment):
#   check_init "$@"                         parse arguments, set up; call first
#   stage NAME [TITLE]                      start a stage; returns 1 if not selected
#   stage_enabled NAME                      whether --stages selected NAME
#   check DESC HINT CMD...                  PASS when CMD exits 0
#   check_output DESC HINT REGEX CMD...     PASS when CMD exits 0 and stdout matches REGEX
#   check_fails_with DESC HINT CODE CMD...  PASS when CMD exits non-zero printing code=CODE
#   skip DESC REASON                        SKIP, counted apart, never as passed
#                                           (with --strict: FAIL, for grading)
#   rcheck / rcheck_output / rcheck_fails_with  the same, SKIP unless root (ROOT_REASON)
#   note TEXT                               an indented line of information
#   last_output                             stdout of the last check* command
#   ws_cargo ARGS...  /  bin NAME           cargo in $WS  /  path of a built binary
#   start_bg NAME CMD...  stop_bg NAME  bg_alive NAME  bg_log NAME  bg_pid NAME
#   on_exit "COMMAND"                       cleanup to run at exit, last first
#   wait_for_socket PATH TIMEOUT [BG_NAME]  until PATH is a unix socket
#   cluster_available                       0 if the cluster stage can run; else CLUSTER_REASON
#   cluster_stage_unavailable [REASON]      one SKIP for the whole cluster stage
#   cluster_up                              with --cluster kind: create/reuse the cluster
#   finish                                  times, summary line, exit 0 or 1
#
# Exported by check_init:
#   WS            absolute root of the workspace graded (default: this repo)
#   LAB_NAME      e.g. 02-controller (the folder of the check.sh)
#   LAB_NUM       e.g. 02            LAB_TAG  e.g. lab02
#   LAB_DIR       $WS/labs/$LAB_NAME (the trainee's copy of the lab)
#   CHECK_DIR     the folder of the check.sh that runs (the instructor's copy)
#   REPO_ROOT     the repository that holds this library
#   STAGES        comma list of stages to run (build,tests,local,cluster)
#   CLUSTER_MODE  kind | existing | none
#   KEEP          1 with --keep: keep the kind cluster and the logs
#   CHECK_STRICT  1 with --strict (or CHECK_STRICT=1 in the environment):
#                 a step that cannot run is a FAIL, not a SKIP
#   LOG_DIR       temp dir with one log per check and per background process
#   TARGET_DIR    cargo's target dir for WS ($CARGO_TARGET_DIR or $WS/target)
#   BIN_DIR       $TARGET_DIR/debug, where `ws_cargo build` puts the binaries
#
# Tunables (environment): CHECK_TIMEOUT (seconds per check, default 900),
# CHECK_COLOR (auto|always|never), NO_COLOR, KIND_CLUSTER (default csi-workshop),
# CHECK_STRICT (1: as --strict).

# ------------------------------------------------------------------ helpers

# Microseconds since the epoch, in _NOW (no subshell).
_now() { _NOW=${EPOCHREALTIME/[^0-9]/}; }

# fmt_duration MICROSECONDS -> "1.4s", "59.9s", "2m03s" (in _DUR and printed by fmt_duration).
_fmt_dur() {
  local us=$1 tenths
  if ((us < 60000000)); then
    tenths=$(((us + 50000) / 100000))
    printf -v _DUR '%d.%ds' $((tenths / 10)) $((tenths % 10))
  else
    local s=$(((us + 500000) / 1000000))
    printf -v _DUR '%dm%02ds' $((s / 60)) $((s % 60))
  fi
}
fmt_duration() { _fmt_dur "$1"; printf '%s\n' "$_DUR"; }

_setup_colors() {
  local mode=${CHECK_COLOR:-auto}
  if [[ $mode == always || ($mode == auto && -t 1 && -z ${NO_COLOR:-}) ]]; then
    C_PASS=$'\e[32m' C_FAIL=$'\e[1;31m' C_SKIP=$'\e[33m' C_HEAD=$'\e[1;36m' C_DIM=$'\e[2m' C_OFF=$'\e[0m'
  else
    C_PASS='' C_FAIL='' C_SKIP='' C_HEAD='' C_DIM='' C_OFF=''
  fi
}
_setup_colors

_die() { printf 'check: %s\n' "$*" >&2; exit 2; }

# _kill_tree PID [SIGNAL]: the process and all its descendants, children first.
_kill_tree() {
  local pid=$1 sig=${2:-TERM} child
  for child in $(pgrep -P "$pid" 2>/dev/null); do
    _kill_tree "$child" "$sig"
  done
  kill "-$sig" "$pid" 2>/dev/null
}

# _stop_tree PID: TERM, up to 5 s grace, then KILL; reaps it if it is our child.
_stop_tree() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  _kill_tree "$pid" TERM
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && _kill_tree "$pid" KILL
  wait "$pid" 2>/dev/null
  return 0
}

# ------------------------------------------------------------------ root-only steps

# Why steps that need root (loop devices, mkfs, mounts) cannot run here;
# empty when they can. check_init sets it; a lab may set it too, e.g. when
# its build failed and the binaries are not this code's.
_root_reason() {
  if ((EUID != 0)); then
    echo 'needs root (loop devices, mkfs and mounts)'
  elif [[ ! -e /dev/loop-control ]]; then
    echo 'needs /dev/loop-control (no loop device support; try modprobe loop)'
  elif ! PATH=$PATH:/usr/sbin:/sbin command -v mkfs.ext4 >/dev/null; then
    echo 'needs mkfs.ext4 (install e2fsprogs)'
  fi
}

# rcheck, rcheck_output, rcheck_fails_with: check, check_output and
# check_fails_with for steps that need root; SKIP with ROOT_REASON otherwise.
rcheck() { if [[ -z $ROOT_REASON ]]; then check "$@"; else skip "$1" "$ROOT_REASON"; fi; }
rcheck_output() { if [[ -z $ROOT_REASON ]]; then check_output "$@"; else skip "$1" "$ROOT_REASON"; fi; }
rcheck_fails_with() { if [[ -z $ROOT_REASON ]]; then check_fails_with "$@"; else skip "$1" "$ROOT_REASON"; fi; }

# ------------------------------------------------------------------ init

CHECK_STAGES_ALL=${CHECK_STAGES_ALL:-build,tests,local,cluster}

check_usage() {
  cat <<EOF
usage: ${CHECK_SCRIPT:-check.sh} [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep] [--strict]

  WORKSPACE   root of the workspace to grade: a trainee's copy made by
              'cargo run -p xtask -- starter NN --out DIR' (default: this repo)
  --stages    comma list out of $CHECK_STAGES_ALL (default: all)
  --cluster   kind: a kind cluster (needs Docker and kind; the default)
              existing: the cluster of the current kubectl context
              none: skip the cluster stage
  --keep      keep the kind cluster and the logs afterwards
  --strict    for grading: a step that cannot run here (not root, no
              cluster) is a FAIL instead of a SKIP, so only a machine that
              runs every step can pass (also: CHECK_STRICT=1)
EOF
}

check_init() {
  set +e # a failing check must not end the run
  CHECK_SCRIPT=${BASH_SOURCE[1]:-check.sh}
  CHECK_DIR=$(cd "$(dirname "$CHECK_SCRIPT")" && pwd)
  REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  LAB_NAME=$(basename "$CHECK_DIR")
  LAB_NUM=${LAB_NAME%%-*}
  LAB_TAG=lab$LAB_NUM

  local ws='' stages=$CHECK_STAGES_ALL cluster=kind
  KEEP=0
  [[ ${CHECK_STRICT:-0} == 1 ]] || CHECK_STRICT=0
  while (($#)); do
    case $1 in
      --stages) (($# >= 2)) || _die "--stages needs a value"; stages=$2; shift ;;
      --stages=*) stages=${1#*=} ;;
      --cluster) (($# >= 2)) || _die "--cluster needs a value"; cluster=$2; shift ;;
      --cluster=*) cluster=${1#*=} ;;
      --keep) KEEP=1 ;;
      --strict) CHECK_STRICT=1 ;;
      -h | --help) check_usage; exit 0 ;;
      -*) check_usage >&2; _die "unknown option: $1" ;;
      *) [[ -z $ws ]] || _die "two workspaces given: $ws and $1"; ws=$1 ;;
    esac
    shift
  done

  local s
  for s in ${stages//,/ }; do
    [[ ",$CHECK_STAGES_ALL," == *",$s,"* ]] || _die "unknown stage '$s' (stages: $CHECK_STAGES_ALL)"
  done
  case $cluster in kind | existing | none) ;; *) _die "--cluster must be kind, existing or none, not '$cluster'" ;; esac

  [[ -n $ws ]] || ws=$REPO_ROOT
  [[ -d $ws ]] || _die "workspace $ws does not exist"
  WS=$(cd "$ws" && pwd)
  [[ -f $WS/Cargo.toml ]] || _die "$WS has no Cargo.toml: give the root of the workspace"
  LAB_DIR=$WS/labs/$LAB_NAME
  [[ -d $LAB_DIR ]] || _die "$WS has no labs/$LAB_NAME"
  STAGES=$stages
  CLUSTER_MODE=$cluster
  TARGET_DIR=${CARGO_TARGET_DIR:-$WS/target}
  BIN_DIR=$TARGET_DIR/debug
  KIND_CLUSTER=${KIND_CLUSTER:-csi-workshop}
  export WS LAB_NAME LAB_NUM LAB_TAG LAB_DIR CHECK_DIR REPO_ROOT STAGES CLUSTER_MODE KEEP TARGET_DIR BIN_DIR KIND_CLUSTER CHECK_STRICT

  ROOT_REASON=$(_root_reason)
  LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/check-$LAB_NAME.XXXXXX") || _die "cannot create a temp dir"
  export LOG_DIR

  _N=0 _PASSED=0 _FAILED=0 _SKIPPED=0
  _STAGE='' _STAGE_T0=0 _S_PASSED=0 _S_FAILED=0 _S_SKIPPED=0
  _STAGE_ROWS=() _STEP_TIMES=() _EXIT_CMDS=() _BG_NAMES=()
  declare -gA _BG_PIDS=()
  _CUR_PID='' _FINISHED=0 _CLUSTER_OK='' CLUSTER_REASON=''
  _LAST_OUT=''
  _now
  _T0=$_NOW
  trap _check_on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  printf '%s== %s check%s  workspace %s\n' "$C_HEAD" "$LAB_TAG ($LAB_NAME)" "$C_OFF" "$WS"
  printf '   stages %s, cluster %s%s%s\n' "$STAGES" "$CLUSTER_MODE" "$([[ $KEEP == 1 ]] && echo ', --keep')" \
    "$([[ $CHECK_STRICT == 1 ]] && echo ', --strict (a SKIP counts as FAIL)')"
}

# ------------------------------------------------------------------ stages

# stage_enabled NAME: whether --stages selected NAME.
stage_enabled() { [[ ",$STAGES," == *",$1,"* ]]; }

_close_stage() {
  [[ -n $_STAGE ]] || return 0
  _now
  _fmt_dur $((_NOW - _STAGE_T0))
  printf '%s-- %s: %d passed, %d failed, %d skipped (%s)%s\n' \
    "$C_DIM" "$_STAGE" "$_S_PASSED" "$_S_FAILED" "$_S_SKIPPED" "$_DUR" "$C_OFF"
  _STAGE_ROWS+=("$(printf '  %-10s %8s   %d passed, %d failed, %d skipped' \
    "$_STAGE" "$_DUR" "$_S_PASSED" "$_S_FAILED" "$_S_SKIPPED")")
  _STAGE=''
}

# stage NAME [TITLE]: starts a stage; returns 1 (after saying so) when --stages
# did not select it, so write `if stage tests; then ...; fi`.
stage() {
  local name=$1 title=${2:-}
  _close_stage
  echo
  if ! stage_enabled "$name"; then
    printf '%s== %s%s: not selected (--stages %s)\n' "$C_HEAD" "$name" "$C_OFF" "$STAGES"
    _STAGE_ROWS+=("$(printf '  %-10s %8s   not selected' "$name" '-')")
    return 1
  fi
  printf '%s== %s%s%s\n' "$C_HEAD" "$name" "${title:+: $title}" "$C_OFF"
  _STAGE=$name _S_PASSED=0 _S_FAILED=0 _S_SKIPPED=0
  _now
  _STAGE_T0=$_NOW
  return 0
}

# ------------------------------------------------------------------ checks

# _run OUT ERR CMD...: runs CMD in the background with stdout to OUT and
# stderr to ERR (or to OUT when ERR is empty), under a CHECK_TIMEOUT watchdog.
# Sets _RC (124 on timeout) and _ELAPSED (microseconds).
_run() {
  local out=$1 err=$2 t0 wd flag
  shift 2
  flag=$out.timeout
  _now
  t0=$_NOW
  if [[ -n $err ]]; then
    "$@" >"$out" 2>"$err" </dev/null &
  else
    "$@" >"$out" 2>&1 </dev/null &
  fi
  _CUR_PID=$!
  # The watchdog polls instead of trapping signals: a subshell that sets a
  # trap may run the script's EXIT trap too, and a killed one orphans its sleep.
  (
    end=$((t0 + ${CHECK_TIMEOUT:-900} * 1000000))
    while kill -0 "$_CUR_PID" 2>/dev/null; do
      _now
      if ((_NOW >= end)); then
        : >"$flag"
        _kill_tree "$_CUR_PID" TERM
        for _ in 1 2 3 4 5 6 7 8 9 10; do
          kill -0 "$_CUR_PID" 2>/dev/null || break
          sleep 0.3
        done
        _kill_tree "$_CUR_PID" KILL
        break
      fi
      sleep 0.5
    done
  ) >/dev/null 2>&1 &
  wd=$!
  _RC=0
  wait "$_CUR_PID" || _RC=$?
  [[ -e $flag ]] || kill "$wd" 2>/dev/null
  wait "$wd" 2>/dev/null
  _CUR_PID=''
  if [[ -e $flag ]]; then
    _RC=124
    printf '\n(check: killed after CHECK_TIMEOUT=%ss)\n' "${CHECK_TIMEOUT:-900}" >>"${err:-$out}"
  fi
  _now
  _ELAPSED=$((_NOW - t0))
}

_begin() {
  _N=$((_N + 1))
  printf '[%2d] %s ... ' "$_N" "$1"
}

_tail() { # FILE [LINES] [LABEL]
  [[ -s $1 ]] || return 0
  [[ -z ${3:-} ]] || printf '      %s\n' "$3"
  tail -n "${2:-15}" "$1" | sed -e 's/\r$//' -e 's/^/      | /'
}

_pass() {
  _PASSED=$((_PASSED + 1)) _S_PASSED=$((_S_PASSED + 1))
  _fmt_dur "$_ELAPSED"
  printf '%sPASS%s (%s)\n' "$C_PASS" "$C_OFF" "$_DUR"
  _STEP_TIMES+=("$_ELAPSED [$(printf '%2d' "$_N")] $1")
  return 0
}

# _fail DESC HINT [WHY]: the FAIL line, the hint and why; the caller adds the output.
_fail() {
  _FAILED=$((_FAILED + 1)) _S_FAILED=$((_S_FAILED + 1))
  _fmt_dur "$_ELAPSED"
  local extra=''
  ((_RC == 124)) && extra=', timed out'
  printf '%sFAIL%s (%s%s)\n' "$C_FAIL" "$C_OFF" "$_DUR" "$extra"
  printf '      hint: %s\n' "$2"
  [[ -z ${3:-} ]] || printf '      %s\n' "$3"
  _STEP_TIMES+=("$_ELAPSED [$(printf '%2d' "$_N")] $1")
}

_logname() { printf '%s/%02d-%s' "$LOG_DIR" "$_N" "$(printf '%s' "$1" | tr -c 'A-Za-z0-9_-' '_' | cut -c1-40)"; }

# check DESC HINT CMD...: passes when CMD exits 0.
check() {
  (($# >= 3)) || _die "usage: check DESCRIPTION HINT COMMAND..."
  local desc=$1 hint=$2 log
  shift 2
  _begin "$desc"
  log=$(_logname "$desc").log
  _LAST_OUT=$log
  _run "$log" '' "$@"
  if ((_RC == 0)); then
    _pass "$desc"
  else
    _fail "$desc" "$hint" "exit status $_RC; last lines of the output:"
    _tail "$log"
    printf '      %s(full log: %s)%s\n' "$C_DIM" "$log" "$C_OFF"
    return 1
  fi
}

# check_output DESC HINT REGEX CMD...: passes when CMD exits 0 and its stdout
# matches the extended regex REGEX (grep -E).
check_output() {
  (($# >= 4)) || _die "usage: check_output DESCRIPTION HINT REGEX COMMAND..."
  local desc=$1 hint=$2 re=$3 base
  shift 3
  _begin "$desc"
  base=$(_logname "$desc")
  _LAST_OUT=$base.out
  _run "$base.out" "$base.err" "$@"
  if ((_RC == 0)) && grep -Eq -- "$re" "$base.out"; then
    _pass "$desc"
    return 0
  fi
  if ((_RC == 0)); then
    _fail "$desc" "$hint" "the output does not match /$re/; it was:"
  else
    _fail "$desc" "$hint" "exit status $_RC (expected 0 and output matching /$re/); last lines:"
  fi
  _tail "$base.out"
  _tail "$base.err" 8 "stderr:"
  return 1
}

# check_fails_with DESC HINT CODE CMD...: passes when CMD exits non-zero and
# prints `code=CODE` (csictl prints `error: code=NotFound message=...`).
check_fails_with() {
  (($# >= 4)) || _die "usage: check_fails_with DESCRIPTION HINT CODE COMMAND..."
  local desc=$1 hint=$2 code=$3 log
  shift 3
  _begin "$desc"
  log=$(_logname "$desc").log
  _LAST_OUT=$log
  _run "$log" '' "$@"
  if ((_RC != 0 && _RC != 124)) && grep -Eq -- "code=${code}([^A-Za-z0-9_]|\$)" "$log"; then
    _pass "$desc"
    return 0
  fi
  if ((_RC == 0)); then
    _fail "$desc" "$hint" "the command succeeded; expected it to fail with code=$code. Output:"
  else
    local got
    got=$(grep -Eo 'code=[A-Za-z]+' "$log" | head -n 1)
    _fail "$desc" "$hint" "expected code=$code, got ${got:-no code=... at all} (exit status $_RC):"
  fi
  _tail "$log"
  return 1
}

# skip DESC REASON: a check not run; counted as skipped, never as passed.
# With --strict it is counted as failed instead: grading needs every step.
# Either way it returns 0, so the script goes on as it would after a SKIP.
skip() {
  local desc=$1 reason=${2:-}
  _begin "$desc"
  if [[ ${CHECK_STRICT:-0} == 1 ]]; then
    _FAILED=$((_FAILED + 1)) _S_FAILED=$((_S_FAILED + 1))
    printf '%sFAIL%s (not run: %s)\n' "$C_FAIL" "$C_OFF" "$reason"
    printf '      hint: --strict counts a step that cannot run as failed; run the check where it can (root, a cluster), or without --strict to see it as SKIP\n'
    return 0
  fi
  _SKIPPED=$((_SKIPPED + 1)) _S_SKIPPED=$((_S_SKIPPED + 1))
  printf '%sSKIP%s (%s)\n' "$C_SKIP" "$C_OFF" "$reason"
  return 0
}

# note TEXT: an indented line of information.
note() { printf '      %s%s%s\n' "$C_DIM" "$*" "$C_OFF"; }

# last_output: prints the stdout of the last check* command.
last_output() { [[ -n $_LAST_OUT && -f $_LAST_OUT ]] && cat "$_LAST_OUT"; }

# ------------------------------------------------------------------ workspace helpers

# ws_cargo ARGS...: cargo in the graded workspace.
ws_cargo() { (cd "$WS" && cargo "$@"); }

# bin NAME: the path of a binary built by `ws_cargo build`.
bin() { printf '%s/%s\n' "$BIN_DIR" "$1"; }

# ------------------------------------------------------------------ background processes and cleanup

# start_bg NAME CMD...: runs CMD in the background, output to $(bg_log NAME);
# it is stopped at exit (or by stop_bg NAME). Call it directly, not via check.
start_bg() {
  (($# >= 2)) || _die "usage: start_bg NAME COMMAND..."
  local name=$1
  shift
  [[ -z ${_BG_PIDS[$name]:-} ]] || stop_bg "$name"
  "$@" >"$LOG_DIR/bg-$name.log" 2>&1 </dev/null &
  _BG_PIDS[$name]=$!
  _BG_NAMES+=("$name")
}

bg_log() { printf '%s\n' "$LOG_DIR/bg-$1.log"; }
bg_pid() { printf '%s\n' "${_BG_PIDS[$1]:-}"; }
# bg_alive NAME: whether the background process still runs.
bg_alive() { local p=${_BG_PIDS[$1]:-}; [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

# stop_bg NAME: TERM (then KILL after 5 s) the process and its children.
stop_bg() {
  local p=${_BG_PIDS[$1]:-}
  [[ -n $p ]] || return 0
  _stop_tree "$p"
  unset '_BG_PIDS[$1]'
}

# on_exit "COMMAND": run at exit (and by finish), last registered first,
# e.g. on_exit "umount '$mnt'" or on_exit "losetup -d $dev". Errors are ignored.
on_exit() { _EXIT_CMDS+=("$1"); }

_cleanup() {
  local name i
  [[ -z ${_CUR_PID:-} ]] || _stop_tree "$_CUR_PID"
  for name in "${_BG_NAMES[@]}"; do
    stop_bg "$name"
  done
  _BG_NAMES=()
  for ((i = ${#_EXIT_CMDS[@]} - 1; i >= 0; i--)); do
    (eval "${_EXIT_CMDS[i]}") >>"$LOG_DIR/cleanup.log" 2>&1 ||
      printf 'check: cleanup failed: %s (see %s)\n' "${_EXIT_CMDS[i]}" "$LOG_DIR/cleanup.log" >&2
  done
  _EXIT_CMDS=()
}

_check_on_exit() {
  local rc=$?
  ((BASHPID == $$)) || return 0 # never in a subshell
  _cleanup
  if ((_FINISHED == 0)); then
    printf 'check: %s stopped before finish (exit status %d); logs kept in %s\n' "$CHECK_SCRIPT" "$rc" "$LOG_DIR" >&2
  elif [[ $KEEP == 0 && $_FAILED == 0 ]]; then
    rm -rf "$LOG_DIR"
  fi
}

# wait_for_socket PATH TIMEOUT_SECONDS [BG_NAME]: waits until PATH is a unix
# socket. With BG_NAME, gives up as soon as that background process exits.
wait_for_socket() {
  local path=$1 timeout=${2:-10} name=${3:-} t_end
  _now
  t_end=$((_NOW + timeout * 1000000))
  while [[ ! -S $path ]]; do
    if [[ -n $name ]] && ! bg_alive "$name"; then
      echo "$name exited before creating $path; the end of its log:" >&2
      tail -n 15 "$(bg_log "$name")" >&2
      return 1
    fi
    _now
    if ((_NOW >= t_end)); then
      echo "no socket at $path after ${timeout}s" >&2
      [[ -z $name ]] || { echo "the end of $name's log:" >&2; tail -n 15 "$(bg_log "$name")" >&2; }
      return 1
    fi
    sleep 0.1
  done
}

# ------------------------------------------------------------------ cluster

# cluster_available: whether the cluster stage can run in CLUSTER_MODE. When
# not, CLUSTER_REASON says why. The answer is cached.
cluster_available() {
  if [[ -z $_CLUSTER_OK ]]; then
    _CLUSTER_OK=0 CLUSTER_REASON=''
    case $CLUSTER_MODE in
      none) CLUSTER_REASON='disabled by --cluster none' ;;
      kind)
        if ! command -v docker >/dev/null; then
          CLUSTER_REASON='no Docker engine: docker is not on PATH'
        elif ! timeout 30 docker info >/dev/null 2>&1; then
          CLUSTER_REASON='no Docker engine: docker info failed'
        elif ! command -v kind >/dev/null; then
          CLUSTER_REASON='kind is not on PATH'
        elif ! command -v kubectl >/dev/null; then
          CLUSTER_REASON='kubectl is not on PATH'
        else
          _CLUSTER_OK=1
        fi
        ;;
      existing)
        if ! command -v kubectl >/dev/null; then
          CLUSTER_REASON='kubectl is not on PATH'
        elif ! timeout 30 kubectl cluster-info >/dev/null 2>&1; then
          CLUSTER_REASON="no cluster: kubectl cluster-info failed (context: $(kubectl config current-context 2>/dev/null || echo none))"
        else
          _CLUSTER_OK=1
        fi
        ;;
    esac
  fi
  ((_CLUSTER_OK == 1))
}

# cluster_stage_unavailable [REASON]: one SKIP for the whole cluster stage.
cluster_stage_unavailable() {
  skip "cluster stage" "${1:-${CLUSTER_REASON:-cluster not available}}"
  note "use --cluster existing for the current kubectl context, or install Docker and kind"
}

# _kind_create: the cluster from the graded workspace's kind-config.yaml, or
# from this repository's when the workspace has none. Never without one:
# kind's default is a single node, and the checks need two workers sharing
# the SAN directory.
_kind_create() {
  local cfg=$WS/kind-config.yaml
  if [[ ! -f $cfg ]]; then
    cfg=$REPO_ROOT/kind-config.yaml
    echo "$WS has no kind-config.yaml; using $cfg"
  fi
  [[ -f $cfg ]] || { echo "no kind-config.yaml in $WS or $REPO_ROOT: refusing to create kind's one-node default" >&2; return 1; }
  echo "kind create cluster --name $KIND_CLUSTER --config $cfg"
  kind create cluster --name "$KIND_CLUSTER" --config "$cfg" --kubeconfig "$LOG_DIR/kubeconfig" --wait 120s
}

# cluster_up: with --cluster kind, creates the kind cluster $KIND_CLUSTER (or
# reuses it) and points KUBECONFIG at it; deletes it at exit unless --keep or
# it existed before. With --cluster existing, nothing to do. Call it directly.
cluster_up() {
  [[ $CLUSTER_MODE == kind ]] || return 0
  if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    note "reusing kind cluster $KIND_CLUSTER"
  else
    check "a kind cluster '$KIND_CLUSTER' starts" \
      "read the log; 'kind delete cluster --name $KIND_CLUSTER' clears a half-made cluster" \
      _kind_create || return 1
    if [[ $KEEP == 1 ]]; then
      note "--keep: the cluster stays; delete it with: kind delete cluster --name $KIND_CLUSTER"
    else
      on_exit "kind delete cluster --name '$KIND_CLUSTER'"
    fi
  fi
  kind get kubeconfig --name "$KIND_CLUSTER" >"$LOG_DIR/kubeconfig" 2>/dev/null || return 1
  export KUBECONFIG=$LOG_DIR/kubeconfig
}

# ------------------------------------------------------------------ finish

# finish: closes the last stage, cleans up, prints the times and the summary
# line `N passed, N failed, N skipped`, and exits 1 if any check failed.
finish() {
  _close_stage
  _cleanup
  _now
  local total=$((_NOW - _T0)) row
  echo
  echo "time per stage:"
  for row in "${_STAGE_ROWS[@]}"; do
    printf '%s\n' "$row"
  done
  if ((${#_STEP_TIMES[@]} > 0)); then
    echo "slowest steps:"
    printf '%s\n' "${_STEP_TIMES[@]}" | sort -rn | head -n 3 | while read -r us rest; do
      _fmt_dur "$us"
      printf '  %8s  %s\n' "$_DUR" "$rest"
    done
  fi
  _fmt_dur "$total"
  printf 'total time: %s (%s, workspace %s)\n' "$_DUR" "$LAB_TAG" "$WS"
  if ((_FAILED > 0 || KEEP == 1)); then
    echo "logs kept in $LOG_DIR"
  fi
  _FINISHED=1
  printf '%d passed, %d failed, %d skipped\n' "$_PASSED" "$_FAILED" "$_SKIPPED"
  ((_FAILED == 0)) && exit 0
  exit 1
}
