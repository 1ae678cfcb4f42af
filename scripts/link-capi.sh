#!/usr/bin/env bash
# link-capi.sh CDYLIB DIR: makes DIR/librados.so.2 (a link to CDYLIB, the quarry-capi cdylib)
# and DIR/librbd.so.1 (no code; DT_NEEDED librados.so.2). Idempotent. Used by build-capi.sh
# and by the quarry-capi tests.
set -euo pipefail
lib=$(realpath "$1")
dir=$2
mkdir -p "$dir"
[ "$(readlink "$dir/librados.so.2" 2>/dev/null)" = "$lib" ] || ln -sfn "$lib" "$dir/librados.so.2"
# librbd.so.1 carries the word QUARRY-CAPI-LIBRARY, as librados.so.2 does, so `quarry
# which-libs` and `quarry install-libs` tell it from Ceph's; one built before that is rebuilt.
if [ ! -e "$dir/librbd.so.1" ] || ! grep -qa QUARRY-CAPI-LIBRARY "$dir/librbd.so.1"; then
  # Unique temporary names: tests may run this concurrently.
  src=$(mktemp --suffix=.c)
  out=$(mktemp "$dir/.librbd.XXXXXX")
  trap 'rm -f "$src" "$out"' EXIT
  echo 'const char quarry_capi_marker[] __attribute__((used)) = "QUARRY-CAPI-LIBRARY librbd.so.1 quarry";' > "$src"
  cc -shared -fPIC -o "$out" "$src" \
    -Wl,-soname,librbd.so.1 -Wl,--no-as-needed -L "$dir" -l:librados.so.2
  chmod 755 "$out"
  mv -f "$out" "$dir/librbd.so.1"
fi
