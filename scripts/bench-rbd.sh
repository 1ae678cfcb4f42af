#!/usr/bin/env bash
# Image benchmarks against `quarry up`, beside fio on a raw file on the same disk in the same
# run (the physical limit), reported as ratios; plus metadata operations timed at the library
# call (snapshots with 0/100/1000 existing, clones at 1 GiB/100 GiB/10 TiB), 4 KiB write IOPS
# with 50 snapshots and while they are removed, and `rbd du` / `rbd diff` on a 100 GiB sparse
# image. Prints markdown. Not a test: nothing here passes or fails on a number.
#   scripts/bench-rbd.sh [SCALE]   (SCALE multiplies the I/O totals; default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-1}
./scripts/setup.sh >/dev/null
cargo build --release -q -p quarry-cli -p quarry-rbd --example image_ops_bench
ops_bench=$(pwd)/target/release/examples/image_ops_bench
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh
bench_start_cluster bench-rbd
rbd() { "$bin" rbd "$@"; }

# rbd bench's summary line: "elapsed: 5  ops: 4096  ops/sec: 812.3  bytes/sec: 3.2 MiB/s"
bench_iops() { awk '/^elapsed:/ { for (i = 1; i <= NF; i++) if ($i == "ops/sec:") print $(i+1) }' "$1"; }

rbd create --size 2G bench >/dev/null
echo "## rbd bench against fio on a raw file (same disk, same run)"
echo
echo "| case | Quarry ops/s | Quarry MB/s | fio raw file ops/s | fio MB/s | ratio |"
echo "|---|---|---|---|---|---|"
# io-type, io-size, threads, total, pattern; fio's rw, bs, iodepth.
cases=(
  "write 4096 1 $((16 * scale))M rand randwrite 4k 1"
  "write 4096 32 $((64 * scale))M rand randwrite 4k 32"
  "read 4096 1 $((16 * scale))M rand randread 4k 1"
  "read 4096 32 $((64 * scale))M rand randread 4k 32"
  "write 4194304 1 $((1024 * scale))M seq write 4m 1"
  "read 4194304 1 $((1024 * scale))M seq read 4m 1"
)
# Reads need data: fill the image once.
rbd bench --io-type write --io-size 4M --io-threads 4 --io-total 2G --io-pattern seq bench >/dev/null
for c in "${cases[@]}"; do
  read -r type size threads total pattern rw bs depth <<<"$c"
  rbd bench --io-type "$type" --io-size "$size" --io-threads "$threads" --io-total "$total" \
    --io-pattern "$pattern" bench >"$work/b.txt" 2>&1
  q_iops=$(bench_iops "$work/b.txt")
  q_mbs=$(python3 -c "print(round(float('${q_iops:-0}') * $size / 1e6, 1))")
  fsync=$([ "$type" = write ] && echo "--fsync=1" || echo "")
  fio --name=f --filename="$work/raw" --size=2G --bs="$bs" --rw="$rw" --ioengine=libaio \
      --iodepth="$depth" --direct=1 $fsync --runtime=5 --time_based --output-format=json \
      >"$work/f.json" 2>/dev/null
  dir=$([ "$type" = write ] && echo write || echo read)
  f_iops=$(fio_metric "$work/f.json" "$dir" iops); f_mbs=$(fio_metric "$work/f.json" "$dir" bw)
  echo "| $type $pattern $bs threads $threads | $q_iops | $q_mbs | $f_iops | $f_mbs | $(ratio "$q_iops" "$f_iops") |"
done
rbd rm --no-progress bench >/dev/null 2>&1
echo

echo "## Metadata operations at the library call, and writes while snapshots are trimmed"
echo
"$ops_bench" rbd 5
echo

echo "## du and diff on a 100 GiB sparse image (object map and fast-diff)"
echo
# 264 objects spread over the image: write 4 MiB at every 97th object.
python3 - "$work/sparse.raw" <<'EOF'
import sys
with open(sys.argv[1], "wb") as f:
    for k in range(0, 25600, 97):
        f.seek(k * 4 << 20)
        f.write(bytes([k % 251 | 1]) * (4 << 20))
    f.truncate(100 << 30)
EOF
start=$(date +%s.%N); rbd import --no-progress "$work/sparse.raw" sparse >/dev/null; end=$(date +%s.%N)
import_s=$(python3 -c "print(round($end - $start, 2))")
time_cmd() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print(round(($e - $s) * 1000))"; }
du_ms=$(time_cmd rbd du sparse)
diff_ms=$(time_cmd rbd diff sparse)
wc_diff=$(rbd diff sparse | tail -n +2 | wc -l)
echo "| command (process start to exit) | time |"
echo "|---|---|"
echo "| rbd import of a 100 GiB sparse file with 264 objects of data | ${import_s} s |"
echo "| rbd du sparse | ${du_ms} ms |"
echo "| rbd diff sparse (${wc_diff} extents) | ${diff_ms} ms |"
echo
echo "Command: scripts/bench-rbd.sh $scale (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'))."
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/{print $2}') GiB;" \
  "disk: $(df -h "$work" | awk 'NR==2{print $1}') ($(df -T "$work" | awk 'NR==2{print $2}')); kernel $(uname -r); $(fio --version)."
