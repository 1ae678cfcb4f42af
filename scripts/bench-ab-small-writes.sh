#!/usr/bin/env bash
# A/B of two quarry builds on small writes (docs/benchmarks.md, "Twenty-first round"): both
# builds' clusters (`quarry up`, one OSD, pool rbd size 1) run at once and the runs alternate
# between them, so that both see the same minutes of this noisy VM. Per run: `rados bench`
# 4 KiB writes of new objects at QD (default 32) for SECONDS, with IOPS, mean latency, the
# server's CPU per write (utime + stime of `quarry up`) and its split over the server's
# threads (the tokio workers, the apply thread, the WAL writer). Not a test.
#   A=/path/to/dir-a B=/path/to/dir-b scripts/bench-ab-small-writes.sh [ROUNDS] [SECONDS] [QD]
# A and B are directories holding a build's `quarry`.
set -euo pipefail
rounds=${1:-6}; secs=${2:-5}; qd=${3:-32}
# shellcheck source=bench-ab-lib.sh
. "$(dirname "$0")/bench-ab-lib.sh"
# CPU ticks of a process's threads by name: "workers apply wal total".
threads() {
  local p=$1 t
  for t in /proc/"$p"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{ sub(/^.*\) /, ""); print ($12 + $13) }' "$t/stat")"
  done | awk '{ s += $2 } /^tokio/ { w += $2 } /^quarry-apply/ { a += $2 } /^quarry-wal/ { l += $2 }
    END { print w + 0, a + 0, l + 0, s + 0 }'
}
ab_up writes
for x in A B; do
  # A warm-up: the first seconds of a new store allocate its tables.
  in_cluster "$x" "${!x}/quarry" rados -p rbd bench 2 write -b 4096 -t "$qd" --no-cleanup >/dev/null 2>&1
done
hz=$(getconf CLK_TCK)
echo "| build | round | IOPS | mean latency µs | server CPU µs/write | workers | apply | WAL writer |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  for x in A B; do
    out=${dir[$x]}/out.txt
    read -r w0 a0 l0 s0 < <(threads "${pid[$x]}")
    in_cluster "$x" "${!x}/quarry" rados -p rbd bench "$secs" write -b 4096 -t "$qd" --no-cleanup >"$out" 2>&1
    read -r w1 a1 l1 s1 < <(threads "${pid[$x]}")
    n=$(awk -F: '/^Total writes made/ { gsub(/ /, "", $2); print $2 }' "$out")
    iops=$(awk -F: '/^Average IOPS/ { gsub(/ /, "", $2); print $2 }' "$out")
    lat=$(awk -F: '/^Average Latency/ { gsub(/ /, "", $2); print $2 * 1e6 }' "$out")
    python3 - "$x" "$r" "$iops" "$lat" "$n" "$hz" "$((s1 - s0))" "$((w1 - w0))" "$((a1 - a0))" "$((l1 - l0))" <<'PY'
import sys
x, r, iops, lat, n, hz = sys.argv[1:7]
per = lambda t: f"{int(t) * 1e6 / int(hz) / int(n):.1f}"
print(f"| {x} | {r} | {iops} | {float(lat):.0f} | {per(sys.argv[7])} | {per(sys.argv[8])} | {per(sys.argv[9])} | {per(sys.argv[10])} |")
PY
  done
done
