#!/usr/bin/env bash
# `timed.sh LOG NAME CMD...`: run CMD as phase NAME of `make test`, print how long it took, and
# append it to LOG; `timed.sh LOG --summary` prints every phase of LOG and the total.
set -uo pipefail
log=$1
shift
if [ "$1" = "--summary" ]; then
  echo "make test phases:"
  awk '{printf "  %-12s %6d s  %s\n", $1, $2, $3; total += $2} END {printf "  %-12s %6d s\n", "total", total}' "$log"
  exit 0
fi
name=$1
shift
start=$(date +%s)
"$@"
code=$?
seconds=$(( $(date +%s) - start ))
status=$([ "$code" -eq 0 ] && echo ok || echo "FAILED($code)")
echo "$name $seconds $status" >> "$log"
echo "== phase $name: $seconds s, $status"
exit "$code"
