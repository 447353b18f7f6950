/* qcow2 compressed clusters: reading and decompressing them (zlib raw deflate, zstd). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2_internal.h"

/* Host clusters that compressed entry @e occupies: [*first, *first + *count). */
void q2_compressed_extent(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len)
{
	unsigned int x = 62 - (q->cluster_bits - 8);
	uint64_t nsect = (e >> x) & ((1ull << (q->cluster_bits - 8)) - 1);

	*off = e & ((1ull << x) - 1);
	*len = (nsect + 1) * 512;
}

static int inflate_zlib(struct qcow2 *q, const uint8_t *in, size_t len, uint8_t *out)
{
	z_stream *z = &q->zs;
	int ret;

	if (!q->zs_ready) {
		memset(z, 0, sizeof(*z));
		if (inflateInit2(z, -15) != Z_OK)
			return -ENOMEM;
		q->zs_ready = true;
	} else if (inflateReset(z) != Z_OK) {
		return -EIO;
	}
	z->next_in = (Bytef *)(uintptr_t)in;
	z->avail_in = (uInt)len;
	z->next_out = out;
	z->avail_out = (uInt)q->cs;
	ret = inflate(z, Z_FINISH);
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z->avail_out == 0)
		return 0;
	return -EIO;
}

#if HAVE_ZSTD
static int inflate_zstd(struct qcow2 *q, const uint8_t *in, size_t len, uint8_t *out)
{
	ZSTD_inBuffer ib = {in, len, 0};
	ZSTD_outBuffer ob = {out, q->cs, 0};
	size_t r, ipos, opos;

	if (!q->zd) {
		q->zd = ZSTD_createDCtx();
		if (!q->zd)
			return -ENOMEM;
		/* The largest window a cluster of at most 2 MiB needs: bounds memory. */
		ZSTD_DCtx_setParameter(q->zd, ZSTD_d_windowLogMax, 22);
	} else {
		ZSTD_DCtx_reset(q->zd, ZSTD_reset_session_only);
	}
	while (ob.pos < ob.size) {
		ipos = ib.pos;
		opos = ob.pos;
		r = ZSTD_decompressStream(q->zd, &ob, &ib);
		if (ZSTD_isError(r))
			return -EIO;
		if (r == 0 || (ib.pos == ipos && ob.pos == opos))
			break;
	}
	return ob.pos == ob.size ? 0 : -EIO;
}
#endif

/* Decompress the cluster of entry @e into q->dcache. */
int q2_read_compressed(struct qcow2 *q, uint64_t e)
{
	uint64_t off, len;
	int ret;

	if (q->dcache_valid && q->dcache_key == e)
		return 0;
	if (!q->dcache)
		q->dcache = malloc(q->cs);
	if (!q->cbuf)
		q->cbuf = malloc(2 * q->cs);
	if (!q->dcache || !q->cbuf)
		return -ENOMEM;
	q2_compressed_extent(q, e, &off, &len);
	len -= off & 511;
	if (off >= MAX_HOST_OFFSET || off >= q->file_size || off < q->cs)
		return -EIO;
	if (len > q->file_size - off)
		len = q->file_size - off; /* the last sector may be partial */
	ret = q2_file_read(q->fd, off, q->cbuf, len);
	if (ret < 0)
		return ret;
	q->dcache_valid = false;
#if HAVE_ZSTD
	if (q->compression == 1)
		ret = inflate_zstd(q, q->cbuf, len, q->dcache);
	else
#endif
		ret = inflate_zlib(q, q->cbuf, len, q->dcache);
	if (ret < 0)
		return ret;
	q->dcache_key = e;
	q->dcache_valid = true;
	return 0;
}
