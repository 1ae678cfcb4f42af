#!/usr/bin/env bash
# A/B of two quarry binaries (docs/benchmarks.md, "Fourth round" and "Fifth round"): for each
# pair, each binary on a fresh `quarry up` (one OSD, pool rbd size 1), rados bench 4 MiB
# writes at QD32 then QD1, then 4 MiB reads at QD1 of the objects just written, with the
# server's CPU per op (utime + stime of `quarry up` over the run); after each pair, fio's
# 4 MiB QD1 fsync'd writes on a raw file on the same disk. Not a test.
#   A=/path/to/quarry-before B=/path/to/quarry-after scripts/bench-ab-large-writes.sh [SECONDS] [PAIRS]
set -euo pipefail
# shellcheck source=bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
secs=${1:-10}; pairs=${2:-3}
run_one() { # $1 = label, $2 = binary
  local label=$1 bin=$2 pid c0 c1 n
  bench_up "$bin" ab
  pid=$up_pid
  for case in "write 32" "write 1" "rand 1"; do
    # shellcheck disable=SC2086
    set -- $case
    c0=$(bench_cpu "$pid")
    if [ "$1" = write ]; then
      "$bin" rados -p rbd bench "$secs" write -b 4194304 -t "$2" --no-cleanup >"$work/o.txt" 2>&1
    else
      "$bin" rados -p rbd bench "$secs" rand -t "$2" >"$work/o.txt" 2>&1
    fi
    c1=$(bench_cpu "$pid")
    n=$(awk -F: '/^Total (writes|reads) made/ { gsub(/ /, "", $2); print $2; exit }' "$work/o.txt")
    echo "| $label | 4MiB $1 QD$2 | $(bench_field "$work/o.txt" "Average IOPS") | $(bench_field "$work/o.txt" Bandwidth) |" \
      "$(python3 -c 'import sys; print(round(float(sys.argv[1]) * 1000, 2))' "$(bench_field "$work/o.txt" "Average Latency")") |" \
      "$(python3 -c 'import sys; a,b,n=map(float,sys.argv[1:4]); print(f"{(b-a)*1e3/n:.3f}")' "$c0" "$c1" "$n") |"
    # The QD32 objects go; the QD1 ones stay for the reads.
    [ "$1 $2" = "write 32" ] && { "$bin" rados -p rbd cleanup >/dev/null 2>&1 || true; }
  done
  bench_down
}
echo "| binary | case | IOPS | MB/s | mean latency ms | server CPU ms/op |"
echo "|---|---|---|---|---|---|"
for _ in $(seq 1 "$pairs"); do
  run_one A "$A"
  run_one B "$B"
  raw=$(mktemp -d /var/tmp/quarry-ab.XXXXXX)
  fio --name=w --filename="$raw/raw" --size=1G --bs=4M --rw=randwrite --ioengine=libaio \
      --iodepth=1 --direct=1 --fsync=1 --runtime="$secs" --time_based --output-format=json \
      >"$raw/o.json" 2>/dev/null
  echo "| fio raw file | 4MiB write QD1, fsync'd | $(fio_metric "$raw/o.json" write iops) | $(fio_metric "$raw/o.json" write bw) | | |"
  rm -rf "$raw"
done
