#!/usr/bin/env bash
# A/B of two quarry binaries on 4 MiB reads (docs/benchmarks.md, "Ninth round"): for each
# round, each binary on a fresh `quarry up` (one OSD, pool rbd size 1) writes 4 MiB objects
# for a few seconds at QD16, then reads them at random, QD1 three times and QD32 once; per
# run: IOPS, mean latency, the server's CPU per read (utime + stime of `quarry up`), and for
# the QD1 runs the median of the OSD's own time per op (`ceph tell osd.0 dump_historic_ops`,
# its last 20 ops), which separates the device from the rest of the chain. Not a test.
#   A=/path/to/quarry-before B=/path/to/quarry-after scripts/bench-ab-large-reads.sh [SECONDS] [ROUNDS]
set -euo pipefail
# shellcheck source=bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
secs=${1:-5}; rounds=${2:-2}
work=
up_pid=
trap '[ -n "$up_pid" ] && bench_down' EXIT
run_one() { # $1 = label, $2 = binary
  local label=$1 bin=$2 c0 c1 n t op o
  bench_up "$bin" abr
  o=$work/o.txt
  "$bin" rados -p rbd bench 6 write -b 4194304 -t 16 --no-cleanup >/dev/null 2>&1
  for t in 1 1 1 32; do
    c0=$(bench_cpu "$up_pid")
    "$bin" rados -p rbd bench "$secs" rand -t "$t" >"$o" 2>&1
    c1=$(bench_cpu "$up_pid")
    n=$(bench_field "$o" "Total reads made")
    op=
    if [ "$t" = 1 ]; then
      "$bin" ceph tell osd.0 dump_historic_ops >"$work/h.json" 2>/dev/null
      op=$(python3 -c 'import json, statistics, sys
ops = [o["duration"] for o in json.load(open(sys.argv[1])).get("ops", [])[-20:]]
print("%.2f" % (statistics.median(ops) * 1000) if ops else "")' "$work/h.json")
    fi
    echo "| $label | 4MiB rand QD$t | $(bench_field "$o" "Average IOPS") |" \
      "$(python3 -c 'import sys; print(round(float(sys.argv[1]) * 1000, 2))' "$(bench_field "$o" "Average Latency")") |" \
      "$op | $(python3 -c 'import sys; a,b,n=map(float,sys.argv[1:4]); print(f"{(b-a)*1e3/n:.2f}")' "$c0" "$c1" "$n") |"
  done
  bench_down
  up_pid=
}
echo "| binary | case | IOPS | mean latency ms | OSD op median ms | server CPU ms/op |"
echo "|---|---|---|---|---|---|"
for _ in $(seq 1 "$rounds"); do
  run_one A "$A"
  run_one B "$B"
done
