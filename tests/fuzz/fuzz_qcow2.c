/*
 * libFuzzer target for the qcow2 header and table parser: the input is a
 * whole image file. It goes through qcow2_parse_header(), then, in a memfd,
 * through qcow2_open() (tables, extensions; backing files refused) and a few
 * reads, writes, discards, write-zeroes and a flush, which walk the L1/L2
 * tables, refcount blocks and compressed clusters the input describes.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. -Iinclude \
 *     -IBUILD tests/fuzz/fuzz_qcow2.c devices/qcow2.c devices/disk.c lib/err.c \
 *     -luring -lz -lzstd -lpthread -o fuzz_qcow2
 *   ./fuzz_qcow2 -max_len=262144 CORPUS_DIR
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "devices/qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_opts o = {.no_backing = true, .cache_bytes = 1 << 14};
	static uint8_t buf[1 << 16];
	struct qcow2_header h;
	struct vmm_err err;
	struct qcow2 *q;
	uint64_t vsize, off;
	int fd, i;

	qcow2_parse_header(data, size, size, &h, &err);

	fd = memfd_create("fuzz_qcow2", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size || qcow2_open(fd, "/fuzz/image", &o, &q, &err)) {
		close(fd);
		return 0;
	}
	vsize = qcow2_size(q);
	/* Reads at the start, the middle and the end of the disk. */
	for (i = 0; i < 3 && vsize; i++) {
		off = i == 0   ? 0
		      : i == 1 ? vsize / 2
			       : vsize - (vsize < sizeof(buf) ? vsize : sizeof(buf));
		qcow2_read(q, off, buf,
			   vsize - off < sizeof(buf) ? (size_t)(vsize - off) : sizeof(buf));
	}
	/* Writes allocate, copy on write and update refcounts; then free some. */
	if (vsize >= 8192 && size < (1 << 20)) {
		memset(buf, 0x5a, 8192);
		qcow2_write(q, 512, buf, 8192);
		qcow2_write(q, vsize / 3, buf, 4096);
		qcow2_discard(q, 0, vsize < (1 << 22) ? vsize : 1 << 22);
		qcow2_write_zeroes(q, vsize / 3, 1 << 16 < vsize - vsize / 3 ? 1 << 16 : 4096,
				   false);
		qcow2_read(q, 0, buf, 8192);
		qcow2_flush(q);
	}
	qcow2_close(q);
	close(fd);
	return 0;
}
