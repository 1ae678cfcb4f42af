#!/usr/bin/env bash
# link-capi.sh CDYLIB DIR: makes DIR/librados.so.2 (a link to CDYLIB, the quarry-capi cdylib)
# and DIR/librbd.so.1 (no code; DT_NEEDED librados.so.2). Idempotent. Used by build-capi.sh
# and by the quarry-capi tests.
set -euo pipefail
lib=$(realpath "$1")
dir=$2
mkdir -p "$dir"
ln -sfn "$lib" "$dir/librados.so.2"
if [ ! -e "$dir/librbd.so.1" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  : > "$tmp/empty.c"
  cc -shared -fPIC -o "$dir/librbd.so.1.tmp" "$tmp/empty.c" \
    -Wl,-soname,librbd.so.1 -Wl,--no-as-needed -L "$dir" -l:librados.so.2
  mv "$dir/librbd.so.1.tmp" "$dir/librbd.so.1"
fi
