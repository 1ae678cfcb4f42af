#!/usr/bin/env bash
# A/B of two quarry builds on small reads, and small writes through the C library (mode
# `fio-write`) (docs/benchmarks.md, "Eighteenth round"): both builds' clusters (`quarry up`,
# one OSD, pool rbd size 1) run at once and the runs alternate between them, so that both see
# the same minutes of this noisy VM. Per run: IOPS, mean latency, the server's CPU per op
# (utime + stime of `quarry up`) and the client's (of `rados bench` or fio, from
# /usr/bin/time). Not a test.
#   A=/path/to/dir-a B=/path/to/dir-b [BS=4k] scripts/bench-ab-small-reads.sh MODE [ROUNDS] [SECONDS] [QD]
# BS: the fio modes' block size (e.g. BS=4M for large I/O through the C library).
# A and B are directories holding a build's `quarry` and, for the fio modes, its
# `lib/librados.so.2` and `lib/librbd.so.1` (copies: target/release/lib links to the newest
# build). MODE:
#   rados        rados bench: 4 KiB objects written for SECONDS, then `rand -t QD` (default 32)
#   fio-cold     fio's rbd engine, 4 KiB random reads at QD (default 1) of a 1 GiB image
#                written with 1 MiB writes; the page cache is dropped before every run (root)
#   fio-warm     the same without dropping the page cache (the image warms as rounds go)
#   fio-frag     fio-warm over an image written 4 KiB at a time instead (every block once, in
#                random order: a VM image's objects, each with ~1024 extent rows)
#   fio-write    fio's rbd engine, 4 KiB random writes at QD (default 1) over fio-warm's image
#                (the one small-write case here: the library's path for writes)
set -euo pipefail
mode=${1:?mode: rados, fio-cold, fio-warm or fio-frag}
rounds=${2:-6}; secs=${3:-3}
case $mode in rados) qd=${4:-32} ;; *) qd=${4:-1} ;; esac
case $mode in fio-write) rw=randwrite; dir_key=write ;; *) rw=randread; dir_key=read ;; esac
# shellcheck source=bench-ab-lib.sh
. "$(dirname "$0")/bench-ab-lib.sh"
hz=$(getconf CLK_TCK)
cpu() { awk '{ sub(/^.*\) /, ""); print ($12 + $13) }' "/proc/$1/stat"; }
ab_up small
for x in A B; do
  if [ "$mode" = rados ]; then
    in_cluster "$x" rados -p rbd bench "$secs" write -b 4096 -t 32 --no-cleanup >"${dir[$x]}/fill.txt" 2>&1
    echo "$x: $(awk -F: '/^Total writes made/ { gsub(/ /, "", $2); print $2 }' "${dir[$x]}/fill.txt") objects written"
  else
    in_cluster "$x" rbd create rbd/bench --size 1G
    if [ "$mode" = fio-frag ]; then fill=(--rw=randwrite --bs=4k --iodepth=32); else fill=(--rw=write --bs=1M --iodepth=8); fi
    in_cluster "$x" fio --name=fill --ioengine=rbd --clientname=admin --pool=rbd \
      --rbdname=bench --size=1G "${fill[@]}" >/dev/null
  fi
done
echo "| build | round | IOPS | mean latency µs | server CPU µs/op | client CPU µs/op |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  for x in A B; do
    out=${dir[$x]}/out.txt
    [ "$mode" = fio-cold ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }
    c0=$(cpu "${pid[$x]}")
    if [ "$mode" = rados ]; then
      in_cluster "$x" /usr/bin/time -f '%U %S' -o "${dir[$x]}/time.txt" \
        rados -p rbd bench "$secs" rand -t "$qd" >"$out" 2>&1
      n=$(awk -F: '/^Total reads made/ { gsub(/ /, "", $2); print $2 }' "$out")
      iops=$(awk -F: '/^Average IOPS/ { gsub(/ /, "", $2); print $2 }' "$out")
      lat=$(awk -F: '/^Average Latency/ { gsub(/ /, "", $2); print $2 * 1e6 }' "$out")
    else
      in_cluster "$x" /usr/bin/time -f '%U %S' -o "${dir[$x]}/time.txt" \
        fio --name=ab --ioengine=rbd --clientname=admin --pool=rbd \
        --rbdname=bench --size=1G --rw="$rw" --bs="${BS:-4k}" --iodepth="$qd" \
        --runtime="$secs" --time_based --output-format=json >"$out"
      read -r iops lat n < <(python3 -c 'import json, sys
t = open(sys.argv[1]).read(); r = json.loads(t[t.find("{"):])["jobs"][0][sys.argv[2]]
print(round(r["iops"]), round(r["clat_ns"]["mean"] / 1000), r["total_ios"])' "$out" "$dir_key")
    fi
    c1=$(cpu "${pid[$x]}")
    read -r cu cs < "${dir[$x]}/time.txt"
    echo "| $x | $r | $iops | ${lat%.*} | $(python3 -c 'import sys
a, b, n, hz, cu, cs = map(float, sys.argv[1:7])
print(f"{(b - a) / hz * 1e6 / n:.1f} | {(cu + cs) * 1e6 / n:.1f}" if n else "n/a | n/a")' \
      "$c0" "$c1" "$n" "$hz" "$cu" "$cs") |"
  done
done
if [ "$mode" = rados ]; then
  # The object metadata cache at the end (the reads' hits depend on how much of the objects
  # it holds).
  for x in A B; do
    echo "$x: $(in_cluster "$x" ceph tell osd.0 perf dump 2>/dev/null | python3 -c 'import json, sys
m = json.load(sys.stdin).get("quarry_meta_cache", {})
print("metadata cache", m.get("entries"), "entries,", m.get("bytes"), "bytes,", m.get("hits"), "hits,", m.get("misses"), "misses")')"
  done
fi
