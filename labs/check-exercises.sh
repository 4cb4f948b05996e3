#!/usr/bin/env bash
# labs/check-exercises.sh [--strict] [LAB...]: the two-sided exercise check (rustlings style).
#
# For each lab (default: every labs/NN-*/ with a check.sh; LAB is 02, lab02
# or 02-controller):
#   starter   `xtask starter NN` writes the trainee's copy; the lab's check.sh
#             on it must exit non-zero, PASS its build stage (the starter
#             compiles) and FAIL, with a hint, in its acceptance stages
#             (tests or local): a failure anywhere else proves nothing about
#             the exercise;
#   solution  the lab's check.sh on this repository must exit 0.
# Both run with --stages build,tests,local --cluster none. The starters share
# one CARGO_TARGET_DIR ($repo/target/starters), so dependencies compile once.
#
# A step that cannot run here (labs 03, 05 and 06 have root-only steps: loop
# devices, mkfs, mounts) is SKIP in either run; such a lab ends with SKIP,
# never PASS: the two sides are proven only for the steps that ran. With
# --strict (or CHECK_STRICT=1), such a lab is a FAIL.
# Ends with `N passed, N failed, N skipped` (one per lab); exits 1 on any failure.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=labs/check-lib.sh
source "$here/check-lib.sh" # for the timing helpers and the colours only

stages=(--stages "build,tests,local" --cluster none)

strict=${CHECK_STRICT:-0}
args=()
for arg in "$@"; do
  case $arg in
    -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --strict) strict=1 ;;
    -*) echo "check-exercises: unknown option $arg" >&2; exit 2 ;;
    *) args+=("$arg") ;;
  esac
done
set -- "${args[@]}"
# The labs' own checks run without --strict: their SKIP lines must stay
# SKIP lines, or a skipped local step of a starter would look like the
# acceptance failure this script looks for. Strictness is applied here.
unset CHECK_STRICT

# The lab folders to check, from the arguments or all with a check.sh.
labs=()
if (($# == 0)); then
  for c in "$here"/[0-9][0-9]-*/check.sh; do
    [[ -e $c ]] && labs+=("$(basename "$(dirname "$c")")")
  done
else
  for arg in "$@"; do
    nn=${arg#lab}
    nn=${nn%%-*}
    [[ $nn =~ ^[0-9]+$ ]] || { echo "check-exercises: '$arg' is not a lab (e.g. 02, lab02, 02-controller)" >&2; exit 2; }
    printf -v nn '%02d' "$((10#$nn))"
    dirs=("$here/$nn"-*/)
    [[ -d ${dirs[0]} ]] || { echo "check-exercises: no labs/$nn-*" >&2; exit 2; }
    labs+=("$(basename "${dirs[0]}")")
  done
fi
((${#labs[@]} > 0)) || { echo "check-exercises: no labs/NN-*/check.sh yet" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-exercises.XXXXXX")
starter_target=$repo/target/starters
passed=0 failed=0 skipped=0

# say LINE...: prints lines of explanation, indented.
say() { printf '      %s\n' "$@"; }
# fail_blocks: the FAIL lines of a check.sh output with their hint and output, quoted.
fail_blocks() {
  awk '/^\[ *[0-9]+\] .* \.\.\. FAIL/ { p = 1; print; next } p && /^      / { print; next } { p = 0 }' |
    head -n "$1" | sed 's/^/      | /'
}
# fails_with_hint_in STAGE_REGEX: how many FAIL lines followed by a hint a
# check.sh output (stdin, without colours) has in the stages named by
# STAGE_REGEX. A stage starts at its `== NAME: title` line.
fails_with_hint_in() {
  awk -v want="^($1)\$" '
    /^== [a-z]+(: |$)/ { stage = $2; sub(/:$/, "", stage); next }
    /^\[ *[0-9]+\] .* \.\.\. FAIL/ { f = (stage ~ want); next }
    f && /^      hint: ./ { n++ }
    { f = 0 }
    END { print n + 0 }'
}
# skip_lines: the SKIP lines of a check.sh output (stdin), as "[n] step: reason".
skip_lines() {
  sed -n 's/^\[ *\([0-9]*\)\] \(.*\) \.\.\. SKIP (\(.*\))$/[\1] \2: \3/p'
}

root_reason=$(_root_reason)
if [[ -n $root_reason ]]; then
  printf '%scheck-exercises: this machine %s: the root-only steps of labs 03, 05 and 06 will be SKIP, and those labs end with SKIP, not PASS%s\n' \
    "$C_SKIP" "$root_reason" "$C_OFF"
fi

_now
t_all=$_NOW
for lab in "${labs[@]}"; do
  nn=${lab%%-*}
  check=$here/$lab/check.sh
  out=$tmp/lab$nn
  ok=1 starter_skips='' solution_skips=''
  _now
  t0=$_NOW
  printf '%s== lab%s (%s)%s\n' "$C_HEAD" "$nn" "$lab" "$C_OFF"

  if [[ ! -f $check ]]; then
    say "labs/$lab has no check.sh"
    ok=0
  elif ! (cd "$repo" && cargo run -q -p xtask -- starter "$nn" --out "$out" --force) >"$tmp/lab$nn-starter-gen.log" 2>&1; then
    say "xtask starter $nn failed:"
    tail -n 15 "$tmp/lab$nn-starter-gen.log" | sed 's/^/      | /'
    ok=0
  else
    # The starter: must fail, but only after building.
    log=$tmp/lab$nn-starter.log
    CARGO_TARGET_DIR=$starter_target bash "$check" "$out" "${stages[@]}" >"$log" 2>&1
    rc=$?
    plain=$(sed 's/\x1b\[[0-9;]*m//g' "$log")
    build_line=$(grep -E '^-- build: ' <<<"$plain" | tail -n 1)
    fails_with_hint=$(fails_with_hint_in 'tests|local' <<<"$plain")
    fails_elsewhere=$(fails_with_hint_in '[a-z]+' <<<"$plain")
    fails_elsewhere=$((fails_elsewhere - fails_with_hint))
    # A starter's step skipped after an earlier failure (the driver did not
    # start) is expected; one skipped for want of root is a part of the
    # exercise that was never shown to fail.
    starter_skips=$(skip_lines <<<"$plain" | grep -Ei 'root|loop-control|mkfs' || true)
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' <<<"$plain" | tail -n 1)
    starter_ok=1
    if ((rc == 0)); then
      say "starter:  check.sh exited 0, but the starter must fail its checks (is a solution region missing?)"
      starter_ok=0
    fi
    if [[ ! $build_line =~ ^--\ build:\ ([0-9]+)\ passed,\ 0\ failed ]] || ((BASH_REMATCH[1] == 0)); then
      say "starter:  the build stage did not pass (${build_line:-no build stage}); the starter must compile"
      fail_blocks 20 <<<"$plain"
      starter_ok=0
    fi
    if ((fails_with_hint == 0)); then
      if ((fails_elsewhere > 0)); then
        say "starter:  it fails, but not in its acceptance stages (tests, local): $fails_elsewhere FAIL line(s) elsewhere prove nothing about the exercise"
        fail_blocks 20 <<<"$plain"
      else
        say "starter:  no FAIL line followed by a hint in the tests or local stage"
      fi
      starter_ok=0
    fi
    if ((starter_ok)); then
      say "starter:  fails as expected ($fails_with_hint failing acceptance checks with hints; ${summary:-no summary})"
    fi
    ok=$starter_ok

    # The solution: must pass everything.
    log=$tmp/lab$nn-solution.log
    bash "$check" "$repo" "${stages[@]}" >"$log" 2>&1
    rc=$?
    plain=$(sed 's/\x1b\[[0-9;]*m//g' "$log")
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' <<<"$plain" | tail -n 1)
    solution_skips=$(skip_lines <<<"$plain")
    if ((rc == 0)); then
      say "solution: passes ($summary)"
    else
      say "solution: check.sh exited $rc (${summary:-no summary line}); the solution must pass:"
      if grep -qE '^\[ *[0-9]+\] .* \.\.\. FAIL' <<<"$plain"; then
        fail_blocks 40 <<<"$plain"
      else
        tail -n 15 "$log" | sed 's/^/      | /'
      fi
      ok=0
    fi
  fi

  # Steps skipped on either side (not root, no mkfs...): those were proven
  # neither failing on the starter nor passing on the solution.
  partial=''
  if ((ok)) && [[ -n ${starter_skips:-}${solution_skips:-} ]]; then
    partial=1
    n_skips=$(printf '%s\n' "${starter_skips:-}" "${solution_skips:-}" | sed '/^$/d' | wc -l)
    say "not proven: $n_skips step(s) were skipped on this machine, so the two-sided check covers only the steps that ran:"
    [[ -z ${starter_skips:-} ]] || printf '%s\n' "$starter_skips" | sed 's/^/        starter:  /'
    [[ -z ${solution_skips:-} ]] || printf '%s\n' "$solution_skips" | sed 's/^/        solution: /'
    if [[ -n $root_reason ]]; then
      say "this machine $root_reason: the root-only steps (loop devices, mkfs, mounts) did not run; run as root for the full proof"
    fi
  fi

  _now
  _fmt_dur $((_NOW - t0))
  if ((ok)) && [[ -n $partial ]] && ((strict)); then
    failed=$((failed + 1))
    printf '%sFAIL%s lab%s %s (%s): --strict, and steps were skipped\n' "$C_FAIL" "$C_OFF" "$nn" "$lab" "$_DUR"
  elif ((ok)) && [[ -n $partial ]]; then
    skipped=$((skipped + 1))
    printf '%sSKIP%s lab%s %s (%s): starter fails and solution passes where they ran; the skipped steps are not proven\n' \
      "$C_SKIP" "$C_OFF" "$nn" "$lab" "$_DUR"
  elif ((ok)); then
    passed=$((passed + 1))
    printf '%sPASS%s lab%s %s (%s)\n' "$C_PASS" "$C_OFF" "$nn" "$lab" "$_DUR"
  else
    failed=$((failed + 1))
    printf '%sFAIL%s lab%s %s (%s); logs: %s/lab%s-*.log\n' "$C_FAIL" "$C_OFF" "$nn" "$lab" "$_DUR" "$tmp" "$nn"
  fi
done

_now
_fmt_dur $((_NOW - t_all))
echo "total time: $_DUR"
if ((failed == 0)); then
  rm -rf "$tmp"
else
  echo "logs kept in $tmp"
fi
printf '%d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
((failed == 0))
