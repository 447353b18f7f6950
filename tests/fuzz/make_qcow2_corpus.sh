#!/bin/sh
# Seed corpus for fuzz_qcow2: small images made by qemu-img and qemu-io
# (4 KiB clusters, v2 and v3, refcount widths, compressed, a snapshot).
# Usage: make_qcow2_corpus.sh DIR
set -eu
dir=${1:?usage: make_qcow2_corpus.sh DIR}
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
for opts in cluster_size=4k cluster_size=4k,compat=0.10 cluster_size=4k,refcount_bits=1 \
	    cluster_size=4k,refcount_bits=64 cluster_size=4k,lazy_refcounts=on; do
	n=$((n + 1))
	qemu-img create -q -f qcow2 -o "$opts" "$dir/seed$n.qcow2" 2M
	qemu-io -c 'write -P 3 0 12k' -c 'write -z 64k 64k' -c 'write -P 9 1M 5k' \
		"$dir/seed$n.qcow2" >/dev/null
done
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 7 + (i >> 9)) & 255 for i in range(196608)) + bytes(65536))' >"$tmp/r.raw"
qemu-img convert -c -O qcow2 -o cluster_size=4k "$tmp/r.raw" "$dir/zlib.qcow2"
qemu-img convert -c -O qcow2 -o cluster_size=4k,compression_type=zstd "$tmp/r.raw" "$dir/zstd.qcow2"
cp "$dir/seed1.qcow2" "$dir/snap.qcow2"
qemu-img snapshot -c s "$dir/snap.qcow2"
qemu-io -c 'write -P 7 0 4k' "$dir/snap.qcow2" >/dev/null
