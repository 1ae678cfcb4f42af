#!/usr/bin/env bash
# Object benchmarks through the client (rados bench against `quarry up`), beside fio on a raw
# file on the same disk with the same durability, in the same run. Prints a markdown table of
# results and ratios (Quarry / fio), the server's CPU per op (utime + stime of the `quarry up`
# process, monitor and OSD together, from /proc, over each case) and its resident memory at
# the end. Not a test: nothing here passes or fails on a number.
#   scripts/bench.sh [SECONDS]        (default 10 s per case)
#   QUARRY_BIN=/path/to/quarry scripts/bench.sh [SECONDS]   (another build, e.g. a baseline;
#                                                           no setup/build then)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
if [ -n "${QUARRY_BIN:-}" ]; then
  bin=$QUARRY_BIN
else
  ./scripts/setup.sh >/dev/null
  bin=$(pwd)/target/release/quarry
fi
work=$(mktemp -d /var/tmp/quarry-bench.XXXXXX)
pid=""
cleanup() { set +e; [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$bin" up "$work/cluster" >"$work/up.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q '^ready' "$work/up.log" && break; sleep 0.2; done
grep -q '^ready' "$work/up.log" || { cat "$work/up.log"; echo "cluster did not start" >&2; exit 1; }
export CEPH_CONF=$work/cluster/ceph.conf

# CPU seconds (user + system) the server process has used so far.
server_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$pid/stat"
}
# Milliseconds of server CPU per op between two server_cpu readings and an op count.
cpu_per_op() {
  python3 -c 'import sys; a,b,n=map(float,sys.argv[1:4]); print(f"{(b-a)*1e3/n:.3f}" if n else "n/a")' "$1" "$2" "$3"
}
rados_ops() { # total ops of a rados bench output: "Total writes made" / "Total reads made"
  awk -F: '/^Total (writes|reads) made/ { gsub(/ /, "", $2); print $2; exit }' "$1"
}

rados_metric() { # $1 = output file, $2 = field name
  awk -F: -v f="$2" '$1 ~ f { gsub(/ /, "", $2); print $2; exit }' "$1"
}
fio_iops() { # $1 = json file, $2 = read|write
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round(sum(x[sys.argv[2]]["iops"] for x in j["jobs"])))' "$1" "$2"
}
# Where a write case's time went on the server, from `perf dump` before and after it (the
# OSD's op latency, the WAL's commit latency, the apply's): one line, or nothing for a build
# without those counters.
perf_dump() { "$bin" ceph tell osd.0 perf dump 2>/dev/null || echo '{}'; }
write_stages() { # $1 = label, $2 / $3 = perf dump files before / after
  python3 - "$@" <<'PY'
import json, sys
label, before, after = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
def mean_us(section, key):
    a, b = before[section][key], after[section][key]
    n = b["avgcount"] - a["avgcount"]
    return (b["sum"] - a["sum"]) / n * 1e6 if n else 0.0
try:
    op, wal, apply = (mean_us("osd", "op_w_latency"), mean_us("quarry_wal", "commit_latency"),
                      mean_us("quarry_apply", "apply_latency"))
except KeyError:
    sys.exit(0)
print(f"- write {label}: the OSD's op latency {op:.0f} µs = WAL commit {wal:.0f} + apply "
      f"{apply:.0f} + Raft core and op path {op - wal - apply:.0f}")
PY
}
stages=""

fio_bw() {
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round(sum(x[sys.argv[2]]["bw_bytes"] for x in j["jobs"])/1e6,1))' "$1" "$2"
}

echo "| case | Quarry IOPS | Quarry MB/s | server CPU ms/op | fio raw file IOPS | fio MB/s | ratio (IOPS) |"
echo "|---|---|---|---|---|---|---|"
for bs in 4096 4194304; do
  for qd in 1 32; do
    label=$([ "$bs" = 4096 ] && echo 4KiB || echo 4MiB)
    perf_dump >"$work/p0.json"
    c0=$(server_cpu)
    "$bin" rados -p rbd bench "$secs" write -b "$bs" -t "$qd" --no-cleanup >"$work/w.txt" 2>&1
    c1=$(server_cpu)
    perf_dump >"$work/p1.json"
    stage=$(write_stages "$label QD$qd" "$work/p0.json" "$work/p1.json")
    [ -n "$stage" ] && stages+="$stage"$'\n'
    w_iops=$(rados_metric "$work/w.txt" "Average IOPS")
    w_bw=$(rados_metric "$work/w.txt" "Bandwidth")
    w_cpu=$(cpu_per_op "$c0" "$c1" "$(rados_ops "$work/w.txt")")
    c1=$(server_cpu)
    "$bin" rados -p rbd bench "$secs" rand -t "$qd" >"$work/r.txt" 2>&1
    c2=$(server_cpu)
    r_iops=$(rados_metric "$work/r.txt" "Average IOPS")
    r_bw=$(rados_metric "$work/r.txt" "Bandwidth")
    r_cpu=$(cpu_per_op "$c1" "$c2" "$(rados_ops "$work/r.txt")")
    # Remove this case's objects so the next case starts from the same store; a failure is
    # reported (the numbers after it would be measured on a fuller store), not fatal.
    if ! "$bin" rados -p rbd cleanup >"$work/c.txt" 2>&1; then
      echo "warning: rados cleanup failed after write $label QD$qd: $(tail -1 "$work/c.txt")" >&2
    fi
    # The disk with the same durability: every write followed by an fsync (fdatasync would
    # be cheaper; Quarry's WAL uses fdatasync, fio's --fsync=1 is what the issue names).
    fio --name=w --filename="$work/raw" --size=1G --bs="$bs" --rw=randwrite --ioengine=libaio \
        --iodepth="$qd" --direct=1 --fsync=1 --runtime="$secs" --time_based --output-format=json \
        >"$work/fw.json" 2>/dev/null
    fio --name=r --filename="$work/raw" --size=1G --bs="$bs" --rw=randread --ioengine=libaio \
        --iodepth="$qd" --direct=1 --runtime="$secs" --time_based --output-format=json \
        >"$work/fr.json" 2>/dev/null
    fw_iops=$(fio_iops "$work/fw.json" write); fw_bw=$(fio_bw "$work/fw.json" write)
    fr_iops=$(fio_iops "$work/fr.json" read); fr_bw=$(fio_bw "$work/fr.json" read)
    ratio() { python3 -c "import sys; a,b=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
    echo "| write $label QD$qd | $w_iops | $w_bw | $w_cpu | $fw_iops | $fw_bw | $(ratio "$w_iops" "$fw_iops") |"
    echo "| read $label QD$qd | $r_iops | $r_bw | $r_cpu | $fr_iops | $fr_bw | $(ratio "$r_iops" "$fr_iops") |"
  done
done
# The fio rows above overwrite a laid-out file; every placed write of Quarry's goes to new
# blocks of its data file, which this file system writes more slowly (docs/benchmarks.md,
# "Eighth round"). The same fio job into a fresh file, written once from its start, for
# reference (not a ratio of the table).
fio --name=n --filename="$work/fresh" --size=64G --bs=4M --rw=write --ioengine=libaio \
    --iodepth=1 --direct=1 --fsync=1 --fallocate=none --runtime="$secs" --time_based \
    --output-format=json >"$work/fn.json" 2>/dev/null
rm -f "$work/fresh"
echo
if [ -n "$stages" ]; then
  echo "Where the writes' time went on the server (\`ceph tell osd.0 perf dump\`, means per write):"
  printf '%s' "$stages"
  echo
fi
echo "fio 4 MiB writes QD1 into new blocks (fresh file, \`--fallocate=none\`, fsync'd): $(fio_iops "$work/fn.json" write) IOPS, $(fio_bw "$work/fn.json" write) MB/s."
echo "Server resident memory after the run (\`quarry up\`: monitor + 1 OSD): $(awk '/^VmRSS/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$pid/status") (peak $(awk '/^VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$pid/status"))."
if [ -n "${QUARRY_BIN:-}" ]; then built="binary $bin"; else built="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"; fi
echo "Command: scripts/bench.sh $secs ($built, $(date -u '+%Y-%m-%d %H:%M UTC'))."
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/{print $2}') GiB;" \
  "disk: $(df -h "$work" | awk 'NR==2{print $1}') ($(df -T "$work" | awk 'NR==2{print $2}')); kernel $(uname -r); $(fio --version); ${secs} s per case."
