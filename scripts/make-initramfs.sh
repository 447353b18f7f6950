#!/bin/sh
# make-initramfs.sh OUT.cpio.gz KERNELDIR
#
# Build libvmm's Linux test initramfs: a static busybox, /init and the test
# scripts from tests/linux/initramfs/, and the virtio modules of the kernel
# that scripts/fetch-debian-kernel.sh unpacked into KERNELDIR, with ext4 for
# the disk tests (modules that are built into that kernel are skipped), in
# dependency order: a module's depends= and its softdep "pre:" modules load
# before it.
#
# The guest runs /tests/NAME.sh for `test=NAME` on its command line, prints
# "LINUX-TEST NAME PASS|FAIL" and powers off; see tests/linux/initramfs/init.
#
# Environment:
#   BUSYBOX          a statically linked busybox to use (default: the one of
#                    Debian's busybox-static, installed with apt-get if missing)
#   INITRAMFS_MODULES  the modules wanted (names; dependencies are added)
set -eu

die() { echo "make-initramfs: $*" >&2; exit 1; }
log() { echo "make-initramfs: $*" >&2; }

[ $# -eq 2 ] || die "usage: $0 OUT.cpio.gz KERNELDIR"
OUT=$1
KDIR=$2
HERE=$(cd "$(dirname "$0")" && pwd)
SRC="$HERE/../tests/linux/initramfs"
[ -f "$SRC/init" ] || die "$SRC/init not found"
[ -f "$KDIR/version" ] || die "$KDIR/version not found: run scripts/fetch-debian-kernel.sh $KDIR first"
REL=$(cat "$KDIR/version")
MODDIR="$KDIR/modules/$REL"
[ -d "$MODDIR" ] || die "$MODDIR not found"
for t in cpio gzip find sort awk; do
	command -v "$t" >/dev/null 2>&1 || die "$t not found (Debian: apt-get install cpio gzip findutils coreutils)"
done

# ext4 needs jbd2, mbcache and crc16 (depends=) and crc32c (a softdep on
# the crypto alias, provided by crc32c_generic): in Debian's cloud kernel all
# of them are built in, in other kernels they may be modules.
WANT=${INITRAMFS_MODULES:-"virtio virtio_ring virtio_pci virtio_mmio virtio_blk virtio_net virtio_rng virtio_console virtio_balloon virtio_scsi ext4 crc32c_generic"}

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/initramfs.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT INT TERM

# --- busybox -------------------------------------------------------------
is_static() {
	# A static executable has no PT_INTERP program header.
	[ -x "$1" ] || return 1
	if command -v readelf >/dev/null 2>&1; then
		! readelf -lW "$1" 2>/dev/null | grep -q 'INTERP'
	else
		! grep -q 'ld-linux-x86-64' "$1"
	fi
}
find_busybox() {
	if [ -n "${BUSYBOX:-}" ]; then
		is_static "$BUSYBOX" || die "BUSYBOX=$BUSYBOX is not a static executable"
		echo "$BUSYBOX"; return
	fi
	if [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] &&
	   is_static /bin/busybox; then
		echo /bin/busybox; return
	fi
	return 1
}
if ! BB=$(find_busybox); then
	log "busybox-static is not installed: apt-get install busybox-static"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2 ||
			die "cannot install busybox-static (set BUSYBOX=/path/to/static/busybox)"
	fi
	BB=$(find_busybox) || die "busybox-static installed but /bin/busybox is not static"
fi

mkdir -p "$STAGE/bin" "$STAGE/dev" "$STAGE/proc" "$STAGE/sys" "$STAGE/tmp" \
	"$STAGE/run" "$STAGE/root" "$STAGE/etc" "$STAGE/lib/modules" "$STAGE/tests"
cp "$BB" "$STAGE/bin/busybox"
for applet in $("$BB" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$STAGE/bin/$applet"
done
ln -s bin "$STAGE/sbin"
# The kernel opens /dev/console for init's stdio before /init can mount
# devtmpfs. mknod needs root; without it /init reopens the console itself.
mknod -m 600 "$STAGE/dev/console" c 5 1 2>/dev/null || log "no mknod (not root?): /init will open the console after mounting devtmpfs"
mknod -m 666 "$STAGE/dev/null" c 1 3 2>/dev/null || true

# --- init and tests --------------------------------------------------------
cp "$SRC/init" "$STAGE/init"
chmod 755 "$STAGE/init"
cp "$SRC"/tests/*.sh "$STAGE/tests/"
[ -d "$SRC/etc" ] && cp -R "$SRC/etc/." "$STAGE/etc/"
echo "root:x:0:0:root:/root:/bin/sh" > "$STAGE/etc/passwd"
echo "root:x:0:" > "$STAGE/etc/group"

# --- modules ---------------------------------------------------------------
# Names are normalised to underscores (virtio-rng.ko is module virtio_rng).
norm() { echo "$1" | tr '-' '_'; }
INDEX="$STAGE/.modindex"
find "$MODDIR" -name '*.ko' |
	awk '{ n = $0; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n); print n, $0 }' > "$INDEX"
BUILTIN_LIST="$MODDIR/modules.builtin"
lookup() { sed -n "s|^$1 ||p" "$INDEX" | head -n 1; }
is_builtin() {
	[ -f "$BUILTIN_LIST" ] && sed 's|.*/||; s|\.ko$||' "$BUILTIN_LIST" | tr '-' '_' | grep -qx "$1"
}
# The depends= entry of the module's .modinfo section.
depends_of() { tr '\0' '\n' < "$1" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '; }
# The "pre:" names of its softdep= entries ("softdep=pre: a b post: c").
softdeps_of() {
	tr '\0' '\n' < "$1" | sed -n 's/^softdep=//p' |
		awk '{ pre = 0; for (i = 1; i <= NF; i++) {
			if ($i == "pre:") pre = 1; else if ($i == "post:") pre = 0;
			else if (pre) print $i } }'
}

ORDER=""
BUILTIN=""
MISSING=""
VISITING=""
resolve() {
	_n=$(norm "$1")
	case " $ORDER $BUILTIN $MISSING " in *" $_n "*) return 0 ;; esac
	case " $VISITING " in *" $_n "*) die "module dependency cycle at $_n" ;; esac
	if is_builtin "$_n"; then BUILTIN="$BUILTIN $_n"; return 0; fi
	_f=$(lookup "$_n")
	if [ -z "$_f" ]; then MISSING="$MISSING $_n"; return 0; fi
	VISITING="$VISITING $_n"
	for _d in $(depends_of "$_f"); do
		resolve "$_d"
	done
	# A soft dependency may name an alias (ext4's "crc32c"), not a module:
	# only those that are modules or built in are followed.
	_f=$(lookup "$(norm "$1")")
	for _d in $(softdeps_of "$_f"); do
		if [ -n "$(lookup "$(norm "$_d")")" ] || is_builtin "$(norm "$_d")"; then
			resolve "$_d"
		fi
	done
	# $_n and $_f were overwritten by the recursion: recompute from $1.
	_n=$(norm "$1")
	ORDER="$ORDER $_n"
	cp "$(lookup "$_n")" "$STAGE/lib/modules/$_n.ko"
}
for m in $WANT; do resolve "$m"; done
rm -f "$INDEX"
for m in $ORDER; do echo "$m"; done > "$STAGE/lib/modules/load-order"
for m in $BUILTIN; do echo "$m"; done > "$STAGE/lib/modules/builtin"
echo "$REL" > "$STAGE/lib/modules/release"
[ -z "$MISSING" ] || log "not in $REL (neither module nor built-in):$MISSING"

# --- archive ---------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
TMPOUT="$OUT.tmp.$$"
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9n > "$TMPOUT"
mv -f "$TMPOUT" "$OUT"
log "$OUT: $(du -k "$OUT" | cut -f1) KiB; kernel $REL; modules:$ORDER${BUILTIN:+; built in:$BUILTIN}"
