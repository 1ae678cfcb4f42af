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

# The C ABI's tests and benchmarks run stock programs against Quarry's librados.so.2 and
# librbd.so.1: Debian 12's QEMU 7.2 (qemu-img, qemu-io, qemu-system-x86 and block-rbd.so, its
# rbd module, in qemu-block-extra), fio's rbd engine and python3's rados/rbd modules. A machine
# may carry a backported qemu-utils without the rbd module: pin bookworm's, downgrading.
qemu_ok() {
  [ -e /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ] &&
    dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q '^1:7\.2' &&
    dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"
}
capi_pkgs=()
for p in fio python3-rbd python3-rados; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || capi_pkgs+=("$p")
done
if ! qemu_ok || [ ${#capi_pkgs[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! grep -rqs "bookworm" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > /etc/apt/sources.list.d/quarry-bookworm.sources
  fi
  apt-get update -qq
  echo "setup: installing qemu-utils/bookworm qemu-block-extra/bookworm qemu-system-x86/bookworm ${capi_pkgs[*]}"
  apt-get install -y -qq --allow-downgrades \
    qemu-utils/bookworm qemu-block-extra/bookworm qemu-system-x86/bookworm "${capi_pkgs[@]}"
fi

# libvirt (crates/quarry-capi/tests/libvirt.rs, docs/libvirt.md): Debian 12's libvirt 9.0 with
# its rbd storage backend, which uses bookworm's QEMU 7.2 above (its packages depend on
# qemu-system, satisfied by the pinned one: no upgrade). Without systemd nothing is started;
# the test runs its own session libvirtd.
lv_pkgs=()
for p in libvirt-daemon-system libvirt-daemon-driver-storage-rbd libvirt-clients; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || lv_pkgs+=("$p")
done
if [ ${#lv_pkgs[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  echo "setup: installing ${lv_pkgs[*]}"
  # -t bookworm: the whole libvirt stack from the release the pinned QEMU comes from.
  apt-get install -y -qq --no-install-recommends -t bookworm "${lv_pkgs[@]}"
  qemu_ok || { echo "setup: installing libvirt changed QEMU away from 7.2" >&2; exit 1; }
fi

# The VM test (crates/quarry-capi/tests/tools.rs) boots Debian 12's cloud kernel with a
# busybox initramfs it builds: fetch both packages once into target/vm (not installed on the
# host).
vm=target/vm
if [ ! -e "$vm/vmlinuz" ] || [ ! -e "$vm/busybox" ]; then
  echo "setup: fetching the test VM's kernel and busybox into $vm"
  rm -rf "$vm/tmp" && mkdir -p "$vm/tmp"
  kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  (cd "$vm/tmp" && apt-get download -qq "$kpkg" busybox-static 2>/dev/null)
  for deb in "$vm"/tmp/*.deb; do dpkg-deb -x "$deb" "$vm/tmp/x"; done
  mkdir -p "$vm/modules"
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    find "$vm/tmp/x/lib/modules" -name "$m.ko" -exec cp {} "$vm/modules/" \;
  done
  cp "$vm/tmp/x/bin/busybox" "$vm/busybox"
  cp "$vm"/tmp/x/boot/vmlinuz-* "$vm/vmlinuz"
  rm -rf "$vm/tmp"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
    exit 1
  fi
fi

cargo build --release --locked -p quarry-cli -p quarry-capi
./scripts/link-capi.sh target/release/librados.so target/release/lib
mkdir -p target/bin
for link in ceph rados rbd; do ln -sf ../release/quarry "target/bin/$link"; done
ln -sf ../release/quarry target/bin/quarry
echo "setup: built $(pwd)/target/release/quarry (ceph/rados/rbd links in $(pwd)/target/bin)"
echo "setup: built $(pwd)/target/release/lib/{librados.so.2,librbd.so.1} (DIR/env of quarry up uses them)"
