# Shared by the bench-*.sh scripts (sourced): a `quarry up` cluster in a temporary directory
# that is stopped and removed on exit, and fio JSON readers.
#   bench_start_cluster        sets $bin (unless set), $work, exports CEPH_CONF; registers cleanup
#   bench_track PID            stops PID on exit too
#   bench_up BIN NAME / bench_down   one of several clusters in turn (A/B scripts): sets $work,
#                              $up_pid, exports CEPH_CONF / stops it and removes $work
#   bench_cpu PID              CPU seconds (user + system) PID has used so far
#   bench_field FILE KEY       the value of `KEY: value` in rados bench's output
#   fio_metric FILE read|write iops|bw|mean|p99
#   ratio A B

bench_pids=()
bench_cleanup() {
  # (errexit would end the trap at the first kill of a process already gone.)
  set +e
  for p in "${bench_pids[@]}"; do
    kill "$p" 2>/dev/null
    # (qemu-nbd -t may outlive a SIGTERM: give each 5 s, then SIGKILL.)
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  rm -rf "$work"
}
bench_track() { bench_pids+=("$1"); }

bench_start_cluster() { # $1: a name for the temporary directory
  bin=${bin:-$(pwd)/target/release/quarry}
  work=$(mktemp -d "/var/tmp/quarry-$1.XXXXXX")
  trap bench_cleanup EXIT
  "$bin" up "$work/cluster" >"$work/up.log" 2>&1 &
  bench_track $!
  for _ in $(seq 1 100); do grep -q '^ready' "$work/up.log" && break; sleep 0.2; done
  grep -q '^ready' "$work/up.log" || { cat "$work/up.log"; echo "cluster did not start" >&2; exit 1; }
  export CEPH_CONF=$work/cluster/ceph.conf
}

bench_up() { # $1 = binary, $2 = a name for the temporary directory
  work=$(mktemp -d "/var/tmp/quarry-$2.XXXXXX")
  "$1" up "$work/cluster" >"$work/up.log" 2>&1 &
  up_pid=$!
  for _ in $(seq 1 100); do grep -q '^ready' "$work/up.log" && break; sleep 0.2; done
  export CEPH_CONF=$work/cluster/ceph.conf
}
bench_down() {
  kill "$up_pid"; wait "$up_pid" 2>/dev/null || true
  unset CEPH_CONF
  rm -rf "$work"
}
bench_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
bench_field() { awk -F: -v f="$2" '$1 ~ f { gsub(/ /, "", $2); print $2; exit }' "$1"; }

fio_metric() {
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

ratio() {
  python3 -c "import sys; a,b=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"
}
