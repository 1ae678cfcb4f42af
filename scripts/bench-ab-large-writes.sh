#!/usr/bin/env bash
# A/B of two quarry binaries (docs/benchmarks.md, "Fourth round"): for each pair, each binary
# on a fresh `quarry up` (one OSD, pool rbd size 1), rados bench 4 MiB writes at QD32 then
# QD1, and the server's CPU per op (utime + stime of `quarry up` over the run). Not a test.
#   A=/path/to/quarry-before B=/path/to/quarry-after scripts/bench-ab-large-writes.sh [SECONDS] [PAIRS]
set -euo pipefail
secs=${1:-10}; pairs=${2:-3}
run_one() { # $1 = label, $2 = binary
  local bin=$2 work pid
  work=$(mktemp -d /var/tmp/quarry-ab.XXXXXX)
  "$bin" up "$work/cluster" >"$work/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q '^ready' "$work/up.log" && break; sleep 0.2; done
  export CEPH_CONF=$work/cluster/ceph.conf
  for qd in 32 1; do
    c0=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$pid/stat")
    "$bin" rados -p rbd bench "$secs" write -b 4194304 -t "$qd" --no-cleanup >"$work/w.txt" 2>&1
    c1=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$pid/stat")
    n=$(awk -F: '/^Total writes made/ { gsub(/ /, "", $2); print $2; exit }' "$work/w.txt")
    bw=$(awk -F: '/^Bandwidth/ { gsub(/ /, "", $2); print $2; exit }' "$work/w.txt")
    iops=$(awk -F: '/^Average IOPS/ { gsub(/ /, "", $2); print $2; exit }' "$work/w.txt")
    cpu=$(python3 -c 'import sys; a,b,n=map(float,sys.argv[1:4]); print(f"{(b-a)*1e3/n:.3f}")' "$c0" "$c1" "$n")
    echo "| $1 | 4MiB QD$qd | $iops | $bw | $cpu |"
    "$bin" rados -p rbd cleanup >/dev/null 2>&1 || true
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  unset CEPH_CONF
  rm -rf "$work"
}
echo "| binary | case | IOPS | MB/s | server CPU ms/op |"
echo "|---|---|---|---|---|"
for _ in $(seq 1 "$pairs"); do
  run_one A "$A"
  run_one B "$B"
done
