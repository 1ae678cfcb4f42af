#!/usr/bin/env bash
# NBD benchmarks: fio's nbd engine against `quarry nbd serve` (an image on `quarry up`) and, in
# the same run, against qemu-nbd serving a raw file on the same disk (the baseline: the
# protocol and the disk without a cluster). Prints markdown with ratios. Not a test.
#   scripts/bench-nbd.sh [SECONDS]   (default 5 s per case)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
./scripts/setup.sh >/dev/null
bin=$(pwd)/target/release/quarry
work=$(mktemp -d /var/tmp/quarry-bench-nbd.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT

"$bin" up "$work/cluster" >"$work/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^ready' "$work/up.log" && break; sleep 0.2; done
grep -q '^ready' "$work/up.log" || { cat "$work/up.log"; echo "cluster did not start" >&2; exit 1; }
export CEPH_CONF=$work/cluster/ceph.conf
"$bin" rbd create --size 2G bench
"$bin" nbd serve --port 0 rbd/bench >"$work/nbd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^ready' "$work/nbd.log" && break; sleep 0.2; done
qport=$(grep -o '127.0.0.1:[0-9]*' "$work/nbd.log" | head -1 | cut -d: -f2)
truncate -s 2G "$work/raw"
rport=$((qport + 1))
qemu-nbd -f raw -x raw -p "$rport" -b 127.0.0.1 --cache=none --aio=native -t "$work/raw" &
pids+=($!)
sleep 1

metric() { # $1 json, $2 read|write, $3 field (iops | bw_bytes | lat_mean_us | lat_p99_us)
  python3 - "$@" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.find('{'):])
d = j["jobs"][0][sys.argv[2]]
f = sys.argv[3]
if f == "iops": print(round(d["iops"]))
elif f == "bw": print(round(d["bw_bytes"] / 1e6, 1))
elif f == "mean": print(round(d["clat_ns"]["mean"] / 1000, 1))
elif f == "p99": print(round(d["clat_ns"]["percentile"]["99.000000"] / 1000, 1))
PY
}
ratio() { python3 -c "import sys; a,b=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }

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
  echo "| $rw $bs QD$depth | $(metric "$work/q.json" $dir iops) | $(metric "$work/q.json" $dir bw) | $(metric "$work/q.json" $dir mean) | $(metric "$work/q.json" $dir p99) | $(metric "$work/r.json" $dir iops) | $(metric "$work/r.json" $dir bw) | $(metric "$work/r.json" $dir mean) | $(metric "$work/r.json" $dir p99) | $(ratio "$(metric "$work/q.json" $dir iops)" "$(metric "$work/r.json" $dir iops)") |"
done
echo
echo "Command: scripts/bench-nbd.sh $secs (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')). qemu-nbd: --cache=none --aio=native, writes without FUA (its flushes are not per write); Quarry acknowledges every write durable."
