#!/usr/bin/env bash
# labs/check-all.sh [WORKSPACE] [--stages LIST] [--cluster MODE] [--keep] [--strict]
#
# Runs every labs/NN-*/check.sh in order with the same arguments, shows each
# one's output, then a table of per-lab results and times, and ends with the
# summed line `N passed, N failed, N skipped`. Exits 1 if any lab failed.
# --strict (or CHECK_STRICT=1), for grading: each lab counts a step it
# cannot run (not root, no cluster) as failed instead of skipped.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=labs/check-lib.sh
source "$here/check-lib.sh" # for fmt_duration and the colours only

case ${1:-} in
  -h | --help)
    echo "usage: $0 [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep] [--strict]"
    echo "Runs every labs/NN-*/check.sh with these arguments and sums the results."
    echo "--strict: a step that cannot run here counts as failed, not skipped (for grading)."
    exit 0
    ;;
esac

shopt -s nullglob
checks=("$here"/[0-9][0-9]-*/check.sh)
((${#checks[@]} > 0)) || { echo "check-all: no labs/NN-*/check.sh found under $here" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-all.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Keep the labs' colours when we are on a terminal, though their output goes through tee.
if [[ -t 1 && ${CHECK_COLOR:-auto} == auto && -z ${NO_COLOR:-} ]]; then
  export CHECK_COLOR=always
fi

rows=() total_p=0 total_f=0 total_s=0 bad=0
_now
t_all=$_NOW
for check in "${checks[@]}"; do
  lab=$(basename "$(dirname "$check")")
  printf '\n%s######## %s%s\n' "$C_HEAD" "$lab" "$C_OFF"
  _now
  t0=$_NOW
  bash "$check" "$@" 2>&1 | tee "$tmp/$lab.log"
  rc=${PIPESTATUS[0]}
  _now
  _fmt_dur $((_NOW - t0))
  summary=$(sed 's/\x1b\[[0-9;]*m//g' "$tmp/$lab.log" | grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' | tail -n 1)
  if [[ -n $summary ]]; then
    read -r p _ f _ s _ <<<"${summary//,/}"
  else
    p=0 f=0 s=0
  fi
  total_p=$((total_p + p)) total_f=$((total_f + f)) total_s=$((total_s + s))
  if [[ -z $summary ]]; then
    result="ERROR (exit $rc, no summary line)"
    bad=$((bad + 1))
  elif ((rc != 0)); then
    result=FAIL
    bad=$((bad + 1))
  elif ((p == 0 && s > 0)); then
    result=SKIP
  elif ((s > 0)); then
    # Passed what could run here: a SKIP is not a pass, so say it in the row.
    result="PASS, $s SKIP"
  else
    result=PASS
  fi
  rows+=("$(printf '%-18s %-13s %7d %7d %8d %9s' "$lab" "$result" "$p" "$f" "$s" "$_DUR")")
done

_now
_fmt_dur $((_NOW - t_all))
echo
printf '%-18s %-13s %7s %7s %8s %9s\n' lab result passed failed skipped time
printf '%s\n' "${rows[@]}"
printf '%-18s %-13s %7d %7d %8d %9s\n' total "" "$total_p" "$total_f" "$total_s" "$_DUR"
if ((total_s > 0)); then
  echo "SKIPs are not passes: each was printed above with its reason (the cluster stages need Docker and kind, or --cluster existing)."
fi
printf '%d passed, %d failed, %d skipped\n' "$total_p" "$total_f" "$total_s"
((bad == 0))
