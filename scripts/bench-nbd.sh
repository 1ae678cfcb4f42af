#!/usr/bin/env bash
# NBD benchmarks: fio's nbd engine against `quarry nbd serve` (an image on `quarry up`) and, in
# the same run, against qemu-nbd serving a raw file on the same disk (the baseline: the
# protocol and the disk without a cluster). Prints markdown with ratios. Not a test.
#   scripts/bench-nbd.sh [SECONDS]   (default 5 s per case)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
./scripts/setup.sh >/dev/null
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh
bench_start_cluster bench-nbd
"$bin" rbd create --size 2G bench
"$bin" nbd serve --port 0 rbd/bench >"$work/nbd.log" 2>&1 &
bench_track $!
for _ in $(seq 1 100); do grep -q '^ready' "$work/nbd.log" && break; sleep 0.2; done
qport=$(grep -o '127.0.0.1:[0-9]*' "$work/nbd.log" | head -1 | cut -d: -f2)
truncate -s 2G "$work/raw"
rport=$((qport + 1))
qemu-nbd -f raw -x raw -p "$rport" -b 127.0.0.1 --cache=none --aio=native -t "$work/raw" &
bench_track $!
sleep 1


# Fill both so reads read data.
for uri in "nbd://127.0.0.1:$qport/rbd/bench" "nbd://127.0.0.1:$rport/raw"; do
  fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --size=2G --iodepth=8 --output-format=json >/dev/null
done
echo "| case | Quarry IOPS | MB/s | mean µs | p99 µs | qemu-nbd raw file IOPS | MB/s | mean µs | p99 µs | ratio (IOPS) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for c in "randread 4k 1" "randread 4k 32" "randwrite 4k 1" "randwrite 4k 32" "read 1M 4" "write 1M 4"; do
  read -r rw bs depth <<<"$c"
  dir=$([[ $rw == *read ]] && echo read || echo write)
  for side in q r; do
    uri=$([ $side = q ] && echo "nbd://127.0.0.1:$qport/rbd/bench" || echo "nbd://127.0.0.1:$rport/raw")
    fio --name=b --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$depth" --size=2G \
        --runtime="$secs" --time_based --output-format=json >"$work/$side.json" 2>/dev/null
  done
  echo "| $rw $bs QD$depth | $(fio_metric "$work/q.json" $dir iops) | $(fio_metric "$work/q.json" $dir bw) | $(fio_metric "$work/q.json" $dir mean) | $(fio_metric "$work/q.json" $dir p99) | $(fio_metric "$work/r.json" $dir iops) | $(fio_metric "$work/r.json" $dir bw) | $(fio_metric "$work/r.json" $dir mean) | $(fio_metric "$work/r.json" $dir p99) | $(ratio "$(fio_metric "$work/q.json" $dir iops)" "$(fio_metric "$work/r.json" $dir iops)") |"
done
echo
echo "Command: scripts/bench-nbd.sh $secs (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')). qemu-nbd: --cache=none --aio=native, writes without FUA (its flushes are not per write); Quarry acknowledges every write durable."
