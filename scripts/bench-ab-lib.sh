#!/usr/bin/env bash
# Shared by the A/B scripts that keep two builds' clusters up at once and alternate runs
# between them (bench-ab-small-reads.sh, bench-ab-small-writes.sh). Sourced, not run.
# A and B name directories holding a build's `quarry`. Defines `dir[A|B]`, `pid[A|B]`,
# `in_cluster`, `ab_up`; removes both clusters on exit.
: "${A:?A=directory of build A}" "${B:?B=directory of build B}"
declare -A dir pid
ab_cleanup() {
  set +e
  for x in A B; do [ -n "${pid[$x]:-}" ] && kill "${pid[$x]}" 2>/dev/null && wait "${pid[$x]}" 2>/dev/null; done
  for x in A B; do [ -n "${dir[$x]:-}" ] && rm -rf "${dir[$x]}"; done
}
trap ab_cleanup EXIT
in_cluster() { # $1 = A|B, then a command run with that cluster's env (CEPH_CONF, PATH, libs)
  local x=$1; shift
  (. "${dir[$x]}/cluster/env"; "$@")
}
ab_up() { # $1: a name for the temporary directories. Starts both `quarry up`, waits for both.
  local x
  for x in A B; do
    dir[$x]=$(mktemp -d "/var/tmp/quarry-ab-$1.XXXXXX")
    "${!x}/quarry" up "${dir[$x]}/cluster" >"${dir[$x]}/up.log" 2>&1 &
    pid[$x]=$!
  done
  for x in A B; do
    for _ in $(seq 1 100); do grep -q '^ready' "${dir[$x]}/up.log" && break; sleep 0.2; done
    grep -q '^ready' "${dir[$x]}/up.log" || { cat "${dir[$x]}/up.log"; exit 1; }
  done
}
