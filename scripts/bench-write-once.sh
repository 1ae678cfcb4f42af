#!/usr/bin/env bash
# Write-once large writes (issue 14, docs/benchmarks.md "Fourth round"): rados bench writes
# against one `quarry up` (one OSD: size-1 pools, whose large writes are placed), with
# `osd_write_once_min_bytes` switched at runtime between the default (64K: on) and 0 (off),
# alternating, PAIRS pairs per case, beside fio on a raw file of the same disk (written and
# fsync'd, as scripts/bench.sh; once per case) in the same run. Prints one markdown row per
# run: IOPS, MB/s (rados bench's, MiB), server CPU per op (utime + stime of the `quarry up`
# process over the run), and the IOPS ratio to fio's. Not a test.
#   scripts/bench-write-once.sh [SECONDS] [PAIRS]     (default 10 s, 3 pairs)
#   QUARRY_BIN=/path/to/quarry scripts/bench-write-once.sh ...
#   CASES="4194304:1 4194304:32 4096:1 4096:32" (bytes:queue depth; the default)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
pairs=${2:-3}
cases=${CASES:-"4194304:1 4194304:32 4096:1 4096:32"}
bin=${QUARRY_BIN:-$(pwd)/target/release/quarry}
. scripts/bench-lib.sh
bench_start_cluster bench
pid=${bench_pids[0]}
echo "server pid $pid" >&2

server_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$pid/stat"
}
metric() { awk -F: -v f="$2" '$1 ~ f { gsub(/ /, "", $2); print $2; exit }' "$1"; }
ops() { awk -F: '/^Total writes made/ { gsub(/ /, "", $2); print $2; exit }' "$1"; }
py() { python3 -c "$@"; }
set_once() { "$bin" ceph tell osd.0 config set osd_write_once_min_bytes "$1" >/dev/null; }

echo "| case | write-once | Quarry IOPS | Quarry MB/s | server CPU ms/op | fio IOPS | fio MB/s | ratio (IOPS) |"
echo "|---|---|---|---|---|---|---|---|"
for c in $cases; do
  bs=${c%%:*}; qd=${c##*:}
  label=$([ "$bs" -ge 1048576 ] && echo "$((bs >> 20))MiB" || echo "$((bs >> 10))KiB")
  fio --name=w --filename="$work/raw" --size=1G --bs="$bs" --rw=randwrite --ioengine=libaio \
      --iodepth="$qd" --direct=1 --fsync=1 --runtime="$secs" --time_based --output-format=json \
      >"$work/fw.json" 2>/dev/null
  rm -f "$work/raw"
  fiops=$(py 'import json,sys; j=json.load(open(sys.argv[1])); print(round(sum(x["write"]["iops"] for x in j["jobs"])))' "$work/fw.json")
  fbw=$(py 'import json,sys; j=json.load(open(sys.argv[1])); print(round(sum(x["write"]["bw_bytes"] for x in j["jobs"])/1e6,1))' "$work/fw.json")
  for _ in $(seq 1 "$pairs"); do
    for mode in on off; do
      if [ "$mode" = on ]; then set_once 64K; else set_once 0; fi
      c0=$(server_cpu)
      "$bin" rados -p rbd bench "$secs" write -b "$bs" -t "$qd" --no-cleanup >"$work/w.txt" 2>&1
      c1=$(server_cpu)
      iops=$(metric "$work/w.txt" "Average IOPS"); bw=$(metric "$work/w.txt" "Bandwidth")
      n=$(ops "$work/w.txt")
      cpu=$(py 'import sys; a,b,n=map(float,sys.argv[1:4]); print(f"{(b-a)*1e3/n:.3f}" if n else "n/a")' "$c0" "$c1" "$n")
      ratio=$(py 'import sys; a,b=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print(f"{a/b:.2f}" if b else "n/a")' "$iops" "$fiops")
      echo "| write $label QD$qd | $mode | $iops | $bw | $cpu | $fiops | $fbw | $ratio |"
      "$bin" rados -p rbd cleanup >"$work/c.txt" 2>&1 || echo "warning: cleanup failed: $(tail -1 "$work/c.txt")" >&2
    done
  done
done
echo
if [ -n "${QUARRY_BIN:-}" ]; then built="binary $bin"; else built="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"; fi
echo "Command: scripts/bench-write-once.sh $secs $pairs ($built, $(date -u '+%Y-%m-%d %H:%M UTC'))."
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/{print $2}') GiB;" \
  "disk: $(df -h "$work" | awk 'NR==2{print $1}') ($(df -T "$work" | awk 'NR==2{print $2}')); kernel $(uname -r); $(fio --version)."
