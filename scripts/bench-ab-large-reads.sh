#!/usr/bin/env bash
# A/B of two quarry binaries on 4 MiB reads (docs/benchmarks.md, "Ninth round"): for each
# round, each binary on a fresh `quarry up` (one OSD, pool rbd size 1) writes 4 MiB objects
# for a few seconds at QD16, then reads them at random, QD1 three times and QD32 once; per
# run: IOPS, mean latency, the server's CPU per read (utime + stime of `quarry up`), and for
# the QD1 runs the median of the OSD's own time per op (`ceph tell osd.0 dump_historic_ops`,
# its last 20 ops), which separates the device from the rest of the chain. Not a test.
#   A=/path/to/quarry-before B=/path/to/quarry-after scripts/bench-ab-large-reads.sh [SECONDS] [ROUNDS]
set -euo pipefail
secs=${1:-5}; rounds=${2:-2}
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
field() { awk -F: -v f="$2" '$1 ~ f { gsub(/ /, "", $2); print $2; exit }' "$1"; }
work=
pid=
cleanup() {
  set +e
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
run_one() { # $1 = label, $2 = binary
  local label=$1 bin=$2 c0 c1 n t op
  work=$(mktemp -d /var/tmp/quarry-abr.XXXXXX)
  "$bin" up "$work/cluster" >"$work/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q '^ready' "$work/up.log" && break; sleep 0.2; done
  export CEPH_CONF=$work/cluster/ceph.conf
  "$bin" rados -p rbd bench 6 write -b 4194304 -t 16 --no-cleanup >/dev/null 2>&1
  for t in 1 1 1 32; do
    c0=$(cpu "$pid")
    "$bin" rados -p rbd bench "$secs" rand -t "$t" >"$work/o.txt" 2>&1
    c1=$(cpu "$pid")
    n=$(field "$work/o.txt" "Total reads made")
    op=
    if [ "$t" = 1 ]; then
      "$bin" ceph tell osd.0 dump_historic_ops >"$work/h.json" 2>/dev/null
      op=$(python3 -c 'import json, statistics, sys
ops = [o["duration"] for o in json.load(open(sys.argv[1])).get("ops", [])[-20:]]
print("%.2f" % (statistics.median(ops) * 1000) if ops else "")' "$work/h.json")
    fi
    echo "| $label | 4MiB rand QD$t | $(field "$work/o.txt" "Average IOPS") |" \
      "$(python3 -c 'import sys; print(round(float(sys.argv[1]) * 1000, 2))' "$(field "$work/o.txt" "Average Latency")") |" \
      "$op | $(python3 -c 'import sys; a,b,n=map(float,sys.argv[1:4]); print(f"{(b-a)*1e3/n:.2f}")' "$c0" "$c1" "$n") |"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
  unset CEPH_CONF
  rm -rf "$work"
  work=
}
echo "| binary | case | IOPS | mean latency ms | OSD op median ms | server CPU ms/op |"
echo "|---|---|---|---|---|---|"
for _ in $(seq 1 "$rounds"); do
  run_one A "$A"
  run_one B "$B"
done
