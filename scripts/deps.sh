#!/bin/sh
# Install what libvmm needs to build and test on Debian 12 (run as root, or with sudo available).
set -eu
pkgs="meson ninja-build pkg-config gcc g++ libc6-dev binutils python3 libcmocka-dev
      libseccomp-dev libcap-dev liburing-dev qemu-utils zlib1g-dev libzstd-dev qemu-system-x86 acpica-tools busybox-static cpio
      util-linux iproute2 fio e2fsprogs"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
