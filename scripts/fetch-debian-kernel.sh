#!/bin/sh
# fetch-debian-kernel.sh DESTDIR
#
# Fetch Debian 12's cloud kernel (the package the metapackage
# linux-image-cloud-amd64 depends on) with `apt-get download` -- nothing is
# installed on the host -- and unpack it into DESTDIR:
#
#   DESTDIR/vmlinuz              the bzImage
#   DESTDIR/config               the kernel's .config (to tell built-in from module)
#   DESTDIR/version              the kernel release, e.g. 6.1.0-56-cloud-amd64
#   DESTDIR/package              the .deb's name and version
#   DESTDIR/modules/<release>/   the package's lib/modules/<release> tree
#
# Idempotent: when DESTDIR already holds a complete unpack (DESTDIR/.complete)
# it does nothing. Concurrent runs on the same DESTDIR serialise on a lock.
# `apt-get update` runs only when the package lists are missing or stale.
set -eu

META=linux-image-cloud-amd64

die() { echo "fetch-debian-kernel: $*" >&2; exit 1; }
log() { echo "fetch-debian-kernel: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 DESTDIR"
DEST=$1
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)

complete() { [ -f "$DEST/.complete" ] && [ -s "$DEST/vmlinuz" ] && [ -s "$DEST/version" ]; }

if complete; then
	echo "$DEST/vmlinuz ($(cat "$DEST/version"), cached)"
	exit 0
fi

for t in apt-get apt-cache dpkg-deb; do
	command -v "$t" >/dev/null 2>&1 || die "$t not found: this script needs a Debian host"
done

# Serialise concurrent runs (two tests may want the kernel at once).
if command -v flock >/dev/null 2>&1 && [ -z "${FETCH_DEBIAN_KERNEL_LOCKED:-}" ]; then
	FETCH_DEBIAN_KERNEL_LOCKED=1 exec flock "$DEST/.lock" sh "$0" "$@"
fi
if complete; then
	echo "$DEST/vmlinuz ($(cat "$DEST/version"), cached)"
	exit 0
fi

updated=0
apt_update() {
	[ $updated -eq 0 ] || return 1
	updated=1
	log "package lists missing or stale: running apt-get update"
	apt-get update -qq >&2 || die "apt-get update failed"
}

# The versioned package the metapackage points at (the candidate version).
resolve() {
	apt-cache depends "$META" 2>/dev/null |
		sed -n 's/^ *Depends: *\(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}
PKG=$(resolve || true)
if [ -z "$PKG" ]; then
	apt_update
	PKG=$(resolve || true)
fi
[ -n "$PKG" ] || die "cannot resolve $META to a versioned kernel package (apt-cache depends $META)"
log "$META -> $PKG"

WORK="$DEST/.work"
rm -rf "$WORK"
mkdir -p "$WORK/dl"
# Let apt's unprivileged download user write there (else apt warns, harmlessly).
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
	chown _apt "$WORK/dl" 2>/dev/null || true
fi
# apt-get download writes into the current directory. As root it warns that
# the download runs unsandboxed (user _apt cannot write here); harmless.
dl() { (cd "$WORK/dl" && apt-get download -q "$PKG" >&2); }
if ! dl; then
	# Usually "Unable to locate package" / 404: the lists are missing or
	# name a version the mirror no longer has.
	apt_update || die "apt-get download $PKG failed"
	PKG=$(resolve || true)
	[ -n "$PKG" ] || die "cannot resolve $META after apt-get update"
	dl || die "apt-get download $PKG failed"
fi
DEB=$(ls "$WORK"/dl/*.deb | head -n 1)
[ -f "$DEB" ] || die "apt-get download produced no .deb"
log "downloaded $(basename "$DEB") ($(du -h "$DEB" | cut -f1))"

dpkg-deb -x "$DEB" "$WORK/root"

KIMG=$(ls "$WORK"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$KIMG" ] || die "$(basename "$DEB") has no boot/vmlinuz-*"
REL=${KIMG##*/vmlinuz-}
[ -d "$WORK/root/lib/modules/$REL" ] || die "$(basename "$DEB") has no lib/modules/$REL"

rm -rf "$DEST/modules" "$DEST/vmlinuz" "$DEST/config" "$DEST/System.map"
mkdir -p "$DEST/modules"
mv "$KIMG" "$DEST/vmlinuz"
[ -f "$WORK/root/boot/config-$REL" ] && mv "$WORK/root/boot/config-$REL" "$DEST/config"
[ -f "$WORK/root/boot/System.map-$REL" ] && mv "$WORK/root/boot/System.map-$REL" "$DEST/System.map"
mv "$WORK/root/lib/modules/$REL" "$DEST/modules/$REL"
echo "$REL" > "$DEST/version"
echo "$(dpkg-deb -f "$DEB" Package) $(dpkg-deb -f "$DEB" Version)" > "$DEST/package"
rm -rf "$WORK"
touch "$DEST/.complete"

echo "$DEST/vmlinuz ($REL, $(cat "$DEST/package"))"
