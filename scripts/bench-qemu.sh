#!/usr/bin/env bash
# QEMU drop-in benchmarks (issue 10): fio's rbd engine through Quarry's librbd.so.1 against a
# `quarry up` image, beside, in the same run, fio on a raw file on the same disk (libaio,
# direct; writes with --fsync=1, as durable as a Quarry write) and fio's nbd engine against
# qemu-nbd serving a qcow2 file; then `qemu-img convert` of a 1 GiB qcow2 into rbd beside the
# same convert into a raw file. Prints markdown with ratios. Not a test.
#   scripts/bench-qemu.sh [SECONDS]   (default 5 s per case)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
./scripts/setup.sh >/dev/null
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh
bench_start_cluster bench-qemu
# shellcheck disable=SC1091
. "$work/cluster/env"
"$bin" rbd create --size 2G bench
qemu-img create -q -f qcow2 "$work/base.qcow2" 2G
port=$((20000 + RANDOM % 20000))
qemu-nbd -f qcow2 -x q -p "$port" -b 127.0.0.1 --cache=none --aio=native -t "$work/base.qcow2" &
bench_track $!
truncate -s 2G "$work/raw"
sleep 1

rbd_fio() { fio --name=b --ioengine=rbd --clientname=admin --pool=rbd --rbdname=bench "$@"; }
nbd_fio() { fio --name=b --ioengine=nbd --uri="nbd://127.0.0.1:$port/q" "$@"; }
raw_fio() { fio --name=b --ioengine=libaio --direct=1 --filename="$work/raw" "$@"; }

# Fill all three so reads read data.
rbd_fio --rw=write --bs=1M --size=2G --iodepth=8 --output-format=json >/dev/null
nbd_fio --rw=write --bs=1M --size=2G --iodepth=8 --output-format=json >/dev/null
raw_fio --rw=write --bs=1M --size=2G --iodepth=8 --output-format=json >/dev/null
echo "| case | Quarry rbd IOPS | MB/s | mean µs | p99 µs | raw file IOPS | MB/s | mean µs | p99 µs | qemu-nbd qcow2 IOPS | MB/s | Quarry/raw | Quarry/qemu-nbd |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for c in "randread 4k 1" "randread 4k 32" "randwrite 4k 1" "randwrite 4k 32" "read 1M 4" "write 1M 4"; do
  read -r rw bs depth <<<"$c"
  dir=$([[ $rw == *read ]] && echo read || echo write)
  sync_flag=$([ "$dir" = write ] && echo "--fsync=1" || echo "--fsync=0")
  common=(--rw="$rw" --bs="$bs" --iodepth="$depth" --size=2G --runtime="$secs" --time_based --output-format=json)
  rbd_fio "${common[@]}" >"$work/q.json" 2>/dev/null
  raw_fio "${common[@]}" "$sync_flag" >"$work/r.json" 2>/dev/null
  nbd_fio "${common[@]}" >"$work/n.json" 2>/dev/null
  qi=$(fio_metric "$work/q.json" $dir iops); ri=$(fio_metric "$work/r.json" $dir iops); ni=$(fio_metric "$work/n.json" $dir iops)
  echo "| $rw $bs QD$depth | $qi | $(fio_metric "$work/q.json" $dir bw) | $(fio_metric "$work/q.json" $dir mean) | $(fio_metric "$work/q.json" $dir p99) | $ri | $(fio_metric "$work/r.json" $dir bw) | $(fio_metric "$work/r.json" $dir mean) | $(fio_metric "$work/r.json" $dir p99) | $ni | $(fio_metric "$work/n.json" $dir bw) | $(ratio "$qi" "$ri") | $(ratio "$qi" "$ni") |"
done
echo

# qemu-img convert of a 1 GiB qcow2 full of data.
qemu-img create -q -f qcow2 "$work/src.qcow2" 1G
qemu-io -f qcow2 -c 'write -P 0x5a 0 1G' "$work/src.qcow2" >/dev/null
t0=$(date +%s.%N); qemu-img convert -f qcow2 -O raw "$work/src.qcow2" rbd:rbd/converted; t1=$(date +%s.%N)
qemu-img convert -f qcow2 -O raw "$work/src.qcow2" "$work/converted.raw"; sync; t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" <<'PY'
import sys
t0, t1, t2 = map(float, sys.argv[1:])
q, r = t1 - t0, t2 - t1
print("| qemu-img convert, 1 GiB qcow2 of data | into rbd: %.1f s (%.0f MB/s) | into a raw file (+sync): %.1f s (%.0f MB/s) | ratio (time) %.2f |" % (q, 1073.7 / q, r, 1073.7 / r, q / r))
PY
echo
echo "Command: scripts/bench-qemu.sh $secs (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')); fio $(fio --version), $(qemu-img --version | head -1)."
