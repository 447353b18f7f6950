#!/bin/sh
# Install dependencies, build, and boot a demo guest with vmm-run.
#   scripts/demo.sh          the project's test guest: it checks the machine from inside,
#                            prints what it found and powers off (any KVM host)
#   scripts/demo.sh --linux  the Debian cloud kernel with a busybox shell (hosts with
#                            hardware KVM; nested PVM KVM cannot run Linux)
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
vmm=build/frontend/vmm-run
# Uninstalled: the devices' seccomp policies come from the source tree.
export LIBVMM_SECCOMP_POLICY_DIR="$PWD/policies"
if [ "${1:-}" = "--linux" ]; then
	sh scripts/fetch-debian-kernel.sh build/linux
	sh scripts/make-initramfs.sh build/linux/initramfs.cpio.gz build/linux
	exec "$vmm" run -c 2 -m 512 -i build/linux/initramfs.cpio.gz -p "quiet test=shell" build/linux/vmlinuz
fi
exec "$vmm" run -c 2 -m 256 -p "demo=1" build/tests/guest/guest.bzImage
