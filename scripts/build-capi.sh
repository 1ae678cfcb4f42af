#!/usr/bin/env bash
# Builds Quarry's librados.so.2 and librbd.so.1 (crates/quarry-capi) and the quarry binary, and
# puts the two libraries in target/<profile>/lib, the directory `quarry up` writes into
# DIR/env's LD_LIBRARY_PATH. After `. DIR/env`, stock qemu-img, qemu-io, fio and python3's
# rados/rbd modules use the Quarry cluster.
#   scripts/build-capi.sh [--release] [--no-build]
# librados.so.2 is the cdylib (every rados_* and rbd_* function); librbd.so.1 has no code: it
# only needs librados.so.2 (DT_NEEDED), where the dynamic linker finds the rbd_* symbols.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
build=1
for arg in "$@"; do
  case "$arg" in
    --release) profile=release ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--release] [--no-build]" >&2; exit 2 ;;
  esac
done
target=${CARGO_TARGET_DIR:-target}
if [ "$build" = 1 ]; then
  flags=()
  [ "$profile" = release ] && flags+=(--release)
  cargo build "${flags[@]}" -p quarry-capi -p quarry-cli
fi
out="$target/$profile"
"$(dirname "$0")/link-capi.sh" "$out/librados.so" "$out/lib"
echo "build-capi: $out/lib/{librados.so.2,librbd.so.1}"
