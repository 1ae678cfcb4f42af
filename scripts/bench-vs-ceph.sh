#!/usr/bin/env bash
# Quarry against a real Ceph 16.2 in the same run (issue 14, item 3): starts a one-OSD Ceph
# (BlueStore on a file on this disk, pool size 1) with the project's Ceph anchor scripts and a
# `quarry up` (one OSD), then runs `rados bench` with the same flags against both, reading the
# server CPU per op from /proc of each side's daemons, and their resident memory at the end.
# Not a test: it prints a table.
#   scripts/bench-vs-ceph.sh [SECONDS]     (default 10 s per case)
#   CEPH_ANCHORS=DIR    where up.sh/down.sh and side-by-side-rados-bench.sh live
#                       (default: ../shared/anchors next to this checkout)
#   OSD_BLOCK_SIZE=20G  Ceph's block file, sparse (OSD_BLOCK_PREFILL=0: a prefilled 24G file
#                       took the disk Quarry's OSD needed, which then refused writes as full;
#                       each case's objects are removed before the next; with 12G, Ceph's
#                       OSD aborted on ENOSPC in its 4 MiB QD32 case once: BlueStore had not
#                       reused the space the earlier cases' removed objects freed)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
anchors=${CEPH_ANCHORS:-$(cd .. && pwd)/shared/anchors}
[ -x "$anchors/ceph/up.sh" ] || { echo "no Ceph anchor scripts in $anchors (set CEPH_ANCHORS)" >&2; exit 1; }
./scripts/setup.sh >/dev/null
bin=$(pwd)/target/release/quarry
work=$(mktemp -d /var/tmp/quarry-vs-ceph.XXXXXX)
qpid=""
cleanup() {
  set +e
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
  "$anchors/ceph/down.sh" "$work/ceph" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
NUM_OSDS=1 POOL_SIZE=1 OSD_BLOCK_SIZE=${OSD_BLOCK_SIZE:-20G} OSD_BLOCK_PREFILL=${OSD_BLOCK_PREFILL:-0} \
  "$anchors/ceph/up.sh" "$work/ceph" >"$work/ceph-up.log" 2>&1 \
  || { tail -20 "$work/ceph-up.log"; echo "Ceph did not start" >&2; exit 1; }
"$bin" up "$work/quarry" >"$work/up.log" 2>&1 &
qpid=$!
for _ in $(seq 1 100); do grep -q '^ready' "$work/up.log" && break; sleep 0.2; done
grep -q '^ready' "$work/up.log" || { cat "$work/up.log"; echo "quarry up did not start" >&2; exit 1; }
ceph_pids=$(cat "$work"/ceph/pids/*.pid | tr '\n' ' ')
# Bounded: a `rados bench` against a daemon that died (Ceph's OSD aborted on ENOSPC once) waits
# forever; 16 runs of $secs plus set-up and clean-up fit well within 30 x $secs + 300 s.
CEPH_CONF_A=$work/ceph/ceph.conf CEPH_PIDS=$ceph_pids QUARRY_CONF=$work/quarry/ceph.conf \
  QUARRY_PIDS=$qpid QUARRY_BIN=$bin timeout $((secs * 30 + 300)) \
  "$anchors/side-by-side-rados-bench.sh" "$secs" \
  || { echo "the side-by-side run failed or took over $((secs * 30 + 300)) s" >&2; exit 1; }
echo "Command: scripts/bench-vs-ceph.sh $secs (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown));" \
  "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(df -T "$work" | awk 'NR==2{print $1 " (" $2 ")"}')."
