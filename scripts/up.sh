#!/usr/bin/env bash
# The main job: build Quarry and run the embedded one-machine cluster (a monitor and the OSDs
# in one process) with its data in DIR (default /var/lib/quarry). Ctrl-C stops it cleanly;
# running it again restarts the same cluster with its data.
#   scripts/up.sh [DIR] [--osds N]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
dir=${1:-/var/lib/quarry}
shift || true
mkdir -p "$dir"
export PATH="$(pwd)/target/bin:$PATH"
echo "In another shell: . $dir/env; export PATH=$(pwd)/target/bin:\$PATH; ceph -s"
exec ./target/release/quarry up "$dir" "$@"
