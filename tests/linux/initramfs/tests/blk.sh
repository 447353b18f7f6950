# test=blk: two virtio-blk disks.
#
# The root disk (named by root=, read-only) holds an ext4 file system the
# host filled with known files; the second disk (blk_rw=vdX, writable) holds
# a fresh, empty ext4 file system.
#
# Kernel command line read here:
#   root=/dev/vdX    the read-only disk (vmm-run -r adds "root=/dev/vda ro")
#   blk_rw=vdX       the writable disk
#   blk_sum=HEX      sha256 of the read-only disk's manifest: the output of
#                    `find . -type f | sort | xargs sha256sum` at its root
#
# Prints, for the host-side driver to check:
#   BLK dev=vdX ro=0|1 sectors=N     for both disks (/sys/block/vdX/{ro,size})
#   BLK file HEX ./PATH              each file of the read-only disk
#   BLK manifest=HEX
#   BLK rw_file=/f bytes=N sha256=HEX   the file written to the writable disk
fail=0
bad() { echo "blk: FAIL: $*"; fail=1; }

root=""
rw=""
want_sum=""
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=/dev/*) root=${arg#root=/dev/} ;;
	blk_rw=*) rw=${arg#blk_rw=} ;;
	blk_sum=*) want_sum=${arg#blk_sum=} ;;
	esac
done
[ -n "$root" ] || { echo "blk: FAIL: no root=/dev/... on the command line"; exit 1; }
[ -n "$rw" ] || { echo "blk: FAIL: no blk_rw=... on the command line"; exit 1; }
echo "BLK disks: $(ls /sys/block | tr '\n' ' ')"

for d in "$root" "$rw"; do
	if [ ! -b "/dev/$d" ]; then
		bad "/dev/$d is not a block device"
		continue
	fi
	echo "BLK dev=$d ro=$(cat "/sys/block/$d/ro") sectors=$(cat "/sys/block/$d/size")" \
		"driver=$(basename "$(readlink "/sys/block/$d/device/driver")")"
done
[ "$(cat "/sys/block/$root/ro" 2>/dev/null)" = 1 ] || bad "/sys/block/$root/ro is not 1"
[ "$(cat "/sys/block/$rw/ro" 2>/dev/null)" = 0 ] || bad "/sys/block/$rw/ro is not 0"
[ $fail -eq 0 ] || exit 1

# --- the read-only disk -----------------------------------------------------
mkdir -p /mnt/ro /mnt/rw
if ! mount -t ext4 -o ro "/dev/$root" /mnt/ro; then
	dmesg | tail -n 20
	echo "blk: FAIL: cannot mount /dev/$root read-only"
	exit 1
fi
(cd /mnt/ro && find . -type f | sort | xargs sha256sum) > /tmp/manifest
sed 's/^\([0-9a-f]*\)  \(.*\)$/BLK file \1 \2/' /tmp/manifest
sum=$(sha256sum < /tmp/manifest | cut -d' ' -f1)
echo "BLK manifest=$sum"
[ "$sum" = "$want_sum" ] || bad "manifest sha256 $sum, the host expects $want_sum"
[ -s /tmp/manifest ] || bad "no files on /dev/$root"

# Writes must fail: through the file system, by remounting it read-write,
# and straight to the device (sector 1, unused by ext4 with 4 KiB blocks).
if touch /mnt/ro/written 2>/dev/null; then bad "created a file on the read-only mount"; fi
if mount -o remount,rw /mnt/ro 2>/dev/null; then
	bad "remounted /dev/$root read-write"
	umount /mnt/ro
	mount -t ext4 -o ro "/dev/$root" /mnt/ro
fi
if dd if=/dev/zero of="/dev/$root" bs=512 seek=1 count=1 conv=notrunc,fsync 2>/tmp/dd.err; then
	bad "dd wrote to /dev/$root"
else
	echo "BLK write to /dev/$root refused: $(grep -v records /tmp/dd.err | head -n 1)"
fi
umount /mnt/ro || bad "umount /mnt/ro"

# --- the writable disk ------------------------------------------------------
if ! mount -t ext4 "/dev/$rw" /mnt/rw; then
	dmesg | tail -n 20
	echo "blk: FAIL: cannot mount /dev/$rw"
	exit 1
fi
# 4 MiB + 1 KiB of random data: not a multiple of the block size.
dd if=/dev/urandom of=/tmp/f bs=1024 count=4097 2>/dev/null
cp /tmp/f /mnt/rw/f || bad "cannot write /mnt/rw/f"
sync
wsum=$(sha256sum < /tmp/f | cut -d' ' -f1)
umount /mnt/rw || bad "umount /mnt/rw"
# Read it back from the disk, not from the page cache.
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 -o ro "/dev/$rw" /mnt/rw || bad "cannot mount /dev/$rw again"
rsum=$(sha256sum < /mnt/rw/f | cut -d' ' -f1)
[ "$rsum" = "$wsum" ] || bad "/f reads back as $rsum, wrote $wsum"
echo "BLK rw_file=/f bytes=$(wc -c < /mnt/rw/f) sha256=$rsum"
umount /mnt/rw || bad "umount /mnt/rw (second)"
sync
exit $fail
