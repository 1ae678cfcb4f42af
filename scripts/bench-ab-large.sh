#!/usr/bin/env bash
# A/B of two quarry builds on large objects: for each pair, a fresh `quarry up` of build A,
# then of build B, each running `rados bench SECS write -b 4 MiB -t 1`, `rand -t 1` and
# `write -b 4 MiB -t 32`, with the server's CPU per op (utime + stime of `quarry up`, from
# /proc); then fio's 4 MiB QD1 fsync'd writes on a raw file on the same disk. Alternating
# builds in one run is how changes on this noisy VM are compared. Not a test.
#   scripts/bench-ab-large.sh SECS PAIRS BIN_A BIN_B
# (e.g. cp target/release/quarry /tmp/quarry-base before a change, then
#  scripts/bench-ab-large.sh 8 3 /tmp/quarry-base target/release/quarry)
set -euo pipefail
secs=$1; pairs=$2; bin_a=$3; bin_b=$4
work=""; pid=""
cleanup() { set +e; [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; [ -n "$work" ] && rm -rf "$work"; }
trap cleanup EXIT

run_one() { # BIN LABEL
  local bin=$1 label=$2 out spec c0 c1 n bw lat
  work=$(mktemp -d /var/tmp/quarry-ab.XXXXXX)
  "$bin" up "$work/c" >"$work/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q '^ready' "$work/up.log" && break; sleep 0.2; done
  grep -q '^ready' "$work/up.log" || { cat "$work/up.log"; echo "cluster did not start" >&2; exit 1; }
  export CEPH_CONF=$work/c/ceph.conf
  cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$pid/stat"; }
  out="| $label"
  for spec in "write -b 4194304 -t 1 --no-cleanup" "rand -t 1" "write -b 4194304 -t 32 --no-cleanup"; do
    c0=$(cpu)
    # shellcheck disable=SC2086
    "$bin" rados -p rbd bench "$secs" $spec >"$work/o.txt" 2>&1
    c1=$(cpu)
    n=$(awk -F: '/^Total (writes|reads) made/ { gsub(/ /, "", $2); print $2; exit }' "$work/o.txt")
    bw=$(awk -F: '$1 ~ "Bandwidth" { gsub(/ /, "", $2); print $2; exit }' "$work/o.txt")
    lat=$(awk -F: '$1 ~ "Average Latency" { gsub(/ /, "", $2); printf "%.2f", $2 * 1000; exit }' "$work/o.txt")
    out="$out | $bw MB/s, $lat ms, $(python3 -c "import sys; a,b,n=map(float,sys.argv[1:4]); print(f'{(b-a)*1e3/n:.2f}' if n else 'n/a')" "$c0" "$c1" "${n:-0}") ms CPU"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  rm -rf "$work"; work=""
  echo "$out |"
}

echo "| build | write 4MiB QD1 | read 4MiB QD1 | write 4MiB QD32 |"
echo "|---|---|---|---|"
for _ in $(seq 1 "$pairs"); do
  run_one "$bin_a" A
  run_one "$bin_b" B
  work=$(mktemp -d /var/tmp/quarry-ab.XXXXXX)
  fio --name=w --filename="$work/raw" --size=1G --bs=4M --rw=randwrite --ioengine=libaio \
      --iodepth=1 --direct=1 --fsync=1 --runtime="$secs" --time_based --output-format=json \
      >"$work/o.json" 2>/dev/null
  echo "| fio raw file | $(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round(sum(x["write"]["bw_bytes"] for x in j["jobs"])/1e6,1))' "$work/o.json") MB/s (fsync'd writes) | | |"
  rm -rf "$work"; work=""
done
echo
echo "A: $bin_a; B: $bin_b; $(date -u '+%Y-%m-%d %H:%M UTC'); ${secs} s per case."
