# test=rng: the virtio-rng device behind /dev/hwrng.
#
# Kernel command line read here:
#   rng=virtio   (default) a virtio-rng device must be the current hw_random
#                source; 64 KiB read from /dev/hwrng must look random
#   rng=none     the VM has no virtio-rng device: none may be bound
#
# Prints RNG current=NAME available=NAMES devices=N, and for rng=virtio
# RNG bytes=N nonzero=N distinct_blocks=N gzip_bytes=N sha256=HEX.
fail=0
bad() { echo "rng: FAIL: $*"; fail=1; }

want=virtio
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	rng=*) want=${arg#rng=} ;;
	esac
done

hw=/sys/class/misc/hw_random
current=$(cat $hw/rng_current 2>/dev/null)
available=$(cat $hw/rng_available 2>/dev/null)
# Devices bound to the virtio_rng driver (links named virtioN).
ndev=$(ls /sys/bus/virtio/drivers/virtio_rng 2>/dev/null | grep -c '^virtio')
echo "RNG current=${current:-?} available=${available:-?} devices=$ndev"

if [ "$want" = none ]; then
	[ "$ndev" -eq 0 ] || bad "$ndev virtio-rng devices, expected none"
	case "$current" in virtio_rng*) bad "the current hw_random source is $current" ;; esac
	exit $fail
fi

[ "$ndev" -eq 1 ] || bad "$ndev virtio-rng devices bound to virtio_rng, expected 1"
case "$current" in
virtio_rng*) ;;
*) bad "the current hw_random source is '$current', not virtio_rng" ;;
esac
[ -c /dev/hwrng ] || { bad "/dev/hwrng is missing"; exit 1; }
[ $fail -eq 0 ] || exit 1

# head -c reads until it has the count (reads from hwrng may come back short).
head -c 65536 /dev/hwrng > /tmp/rng || bad "reading /dev/hwrng failed"
bytes=$(wc -c < /tmp/rng)
nonzero=$(tr -d '\000' < /tmp/rng | wc -c)
# The sixteen 4 KiB blocks must all differ.
i=0
: > /tmp/blocks
while [ $i -lt 16 ]; do
	dd if=/tmp/rng bs=4096 skip=$i count=1 2>/dev/null | sha256sum >> /tmp/blocks
	i=$((i + 1))
done
distinct=$(sort -u /tmp/blocks | wc -l)
# Random data does not compress; zeros, a repeated block or a short
# period do.
gz=$(gzip -c /tmp/rng | wc -c)
echo "RNG bytes=$bytes nonzero=$nonzero distinct_blocks=$distinct gzip_bytes=$gz" \
	"sha256=$(sha256sum < /tmp/rng | cut -d' ' -f1)"

[ "$bytes" -eq 65536 ] || bad "read $bytes bytes, expected 65536"
# About 1 byte in 256 is zero in random data: 65280 expected.
[ "$nonzero" -ge 64000 ] || bad "only $nonzero of $bytes bytes are non-zero"
[ "$distinct" -eq 16 ] || bad "only $distinct distinct 4 KiB blocks of 16"
[ "$gz" -ge 65000 ] || bad "64 KiB from /dev/hwrng gzip to $gz bytes: not random"
# A second read gives other bytes.
a=$(head -c 4096 /dev/hwrng | sha256sum | cut -d' ' -f1)
b=$(head -c 4096 /dev/hwrng | sha256sum | cut -d' ' -f1)
[ "$a" != "$b" ] || bad "two 4 KiB reads from /dev/hwrng are equal"
exit $fail
