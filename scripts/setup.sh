#!/usr/bin/env bash
# Installs what Quarry needs to build and test on a fresh Debian 12 machine, then builds the
# release binary. Idempotent: a second run only checks. Run as root (apt) or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$1"); }
# Build: a C toolchain for crates with C parts. Tests and benchmarks: fio (the raw-disk
# baseline), util-linux (flock), procps (pkill in cleanup), iproute2 (network namespaces).
# NBD tests: libnbd-bin (nbdinfo, nbdcopy).
for p in build-essential pkg-config fio util-linux procps iproute2 python3 libnbd-bin; do want "$p"; done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
    exit 1
  fi
fi

cargo build --release --locked -p quarry-cli
mkdir -p target/bin
for link in ceph rados rbd; do ln -sf ../release/quarry "target/bin/$link"; done
ln -sf ../release/quarry target/bin/quarry
echo "setup: built $(pwd)/target/release/quarry (ceph/rados/rbd links in $(pwd)/target/bin)"
