#!/usr/bin/env bash
# Runs the admin commands scripts rely on (ceph -s/df/osd tree/pool ls/auth ... in plain and
# JSON, error cases, rados df/lspools) with two builds of `quarry` against ONE running
# cluster, back to back, and prints every difference. For refactors that must not change
# output: build the old binary, keep a copy, build the new one, then
#   scripts/dev/compare-admin-output.sh OLD_QUARRY NEW_QUARRY
# The cluster is a fresh `quarry up` (3 OSDs) in a temporary directory, started with NEW and
# stopped at the end. Usage figures (`df` bytes) can differ between two calls on a busy disk.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2")
work=$(mktemp -d); trap 'kill "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/old" "$work/new" "$work/out/old" "$work/out/new"
for tool in ceph rados; do ln -s "$old" "$work/old/$tool"; ln -s "$new" "$work/new/$tool"; done
"$new" up "$work/cluster" --osds 3 > "$work/up.log" 2>&1 &
up=$!
conf=(-c "$work/cluster/ceph.conf" -k "$work/cluster/ceph.client.admin.keyring")
for _ in $(seq 1 120); do "$work/new/ceph" "${conf[@]}" -s > /dev/null 2>&1 && break; sleep 0.5; done
run() {
  local name=$1 tool=$2; shift 2
  for v in old new; do
    "$work/$v/$tool" "${conf[@]}" "$@" > "$work/out/$v/$name.out" 2> "$work/out/$v/$name.err" \
      && echo 0 > "$work/out/$v/$name.rc" || echo $? > "$work/out/$v/$name.rc"
  done
}
run status_json ceph -s -f json
run df_json ceph df -f json
run tree_json ceph osd tree -f json
run status ceph -s
run df ceph df
run tree ceph osd tree
run pool_ls_detail ceph osd pool ls detail
run pool_ls_detail_json ceph osd pool ls detail -f json-pretty
run osd_dump ceph osd dump
run osd_dump_json ceph osd dump -f json
run mon_dump ceph mon dump
run health ceph health detail
run auth_ls ceph auth ls
run auth_ls_json ceph auth ls -f json
run auth_get ceph auth get client.admin
run pool_get ceph osd pool get rbd all
run bad_cmd ceph osd frobnicate
run bad_pool ceph osd pool get nosuch size
run bad_fmt ceph -f xml df
run bad_entity ceph auth get admin
run no_words ceph
run rados_df rados df
run rados_df_json rados df -f json
run rados_lspools rados lspools
run version ceph -v
same=0; differ=0
for f in "$work"/out/old/*; do
  b=$(basename "$f")
  if cmp -s "$f" "$work/out/new/$b"; then same=$((same + 1)); else
    differ=$((differ + 1)); echo "== $b differs"; diff "$f" "$work/out/new/$b" | head -8 || true
  fi
done
echo "$same identical, $differ different (stdout, stderr and exit status of 25 commands)"
