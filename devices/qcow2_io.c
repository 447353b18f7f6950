/*
 * qcow2 data path of the metadata side: READ, WRITE (allocation,
 * copy-on-write), WRITE_ZEROES and DISCARD cluster by cluster, down the
 * backing chain for reads; and the synchronous API built on it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2_internal.h"

enum ctype q2_l2_type(const struct qcow2 *q, uint64_t e)
{
	if (e & OFLAG_COMPRESSED)
		return e & OFLAG_COPIED ? C_BAD : C_COMPRESSED;
	if (e & L2E_RESERVED)
		return C_BAD;
	if ((e & L2E_OFFSET_MASK) % q->cs)
		return C_BAD;
	if (e & OFLAG_ZERO)
		return q->version >= 3 ? C_ZERO : C_BAD;
	if (!(e & L2E_OFFSET_MASK))
		return e & OFLAG_COPIED ? C_BAD : C_UNALLOC;
	return C_NORMAL;
}

/* Where guest offset @off of @q maps: the entry, or 0 (unallocated) when there is no table. */
static int lookup(struct qcow2 *q, uint64_t off, bool write, int *slot, uint64_t *e)
{
	int ret;

	ret = q2_l2_get(q, l1_index(q, off), write, slot);
	if (ret < 0)
		return ret;
	*e = *slot < 0 ? 0 : q2_l2_entry(q, *slot, l2_index(q, off));
	return 0;
}

static int img_read(struct qcow2 *q, uint64_t off, size_t len, struct iovcur *c);

/* Read [off, off + n) of one cluster of @q into the cursor. */
static int read_chunk(struct qcow2 *q, uint64_t off, size_t n, struct iovcur *c)
{
	uint64_t e, host;
	int slot, ret;

	ret = lookup(q, off, false, &slot, &e);
	if (ret < 0)
		return ret;
	switch (q2_l2_type(q, e)) {
	case C_UNALLOC:
		if (q->backing)
			return img_read(q->backing, off, n, c);
		q2_cur_fill(c, NULL, n);
		return 0;
	case C_ZERO:
		q2_cur_fill(c, NULL, n);
		return 0;
	case C_NORMAL:
		host = e & L2E_OFFSET_MASK;
		return q2_cur_io(q, false, host + (off & (q->cs - 1)), c, n);
	case C_COMPRESSED:
		ret = q2_read_compressed(q, e);
		if (ret < 0)
			return ret;
		q2_cur_fill(c, q->dcache + (off & (q->cs - 1)), n);
		return 0;
	default:
		return -EIO;
	}
}

/* Read [off, off + len) of image @q (any image of a chain); past its size reads zeros. */
static int img_read(struct qcow2 *q, uint64_t off, size_t len, struct iovcur *c)
{
	size_t n;
	int ret;

	while (len) {
		if (off >= q->size) {
			q2_cur_fill(c, NULL, len);
			return 0;
		}
		if (q->raw) {
			n = q->size - off < len ? (size_t)(q->size - off) : len;
			ret = q2_cur_io(q, false, off, c, n);
		} else {
			n = q->cs - (off & (q->cs - 1));
			if (n > len)
				n = len;
			if (n > q->size - off)
				n = (size_t)(q->size - off);
			ret = read_chunk(q, off, n, c);
		}
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

/* Fill q->bounce with what guest cluster @cstart of the top image reads as (entry @e). */
static int old_contents(struct qcow2 *q, uint64_t cstart, uint64_t e)
{
	struct iovec v = {q->bounce, q->cs};
	struct iovcur c;

	switch (q2_l2_type(q, e)) {
	case C_NORMAL:
		return q2_file_read(q->fd, e & L2E_OFFSET_MASK, q->bounce, q->cs);
	case C_COMPRESSED: {
		int ret = q2_read_compressed(q, e);

		if (ret == 0)
			memcpy(q->bounce, q->dcache, q->cs);
		return ret;
	}
	case C_UNALLOC:
		if (q->backing) {
			q2_cur_init(&c, &v, 1);
			return img_read(q->backing, cstart, q->cs, &c);
		}
		/* fall through */
	default:
		memset(q->bounce, 0, q->cs);
		return 0;
	}
}

/* Write [off, off + n) of one cluster from the cursor (NULL: zeros). */
static int write_chunk(struct qcow2 *q, uint64_t off, size_t n, struct iovcur *c)
{
	uint64_t in = off & (q->cs - 1), cstart = off - in, l2i, e, host, rc, noff;
	enum ctype type;
	int slot, ret;

	if (!q->bounce && !(q->bounce = malloc(q->cs)))
		return -ENOMEM;
	ret = lookup(q, off, true, &slot, &e);
	if (ret < 0)
		return ret;
	l2i = l2_index(q, off);
	type = q2_l2_type(q, e);
	host = e & L2E_OFFSET_MASK;
	if (type == C_BAD)
		return -EIO;
	if ((type == C_NORMAL || type == C_ZERO) && host) {
		if (meta_overlap(q, host, q->cs) || host >= q->file_size)
			return -EIO;
		if (!(e & OFLAG_COPIED)) {
			ret = q2_rc_get(q, host / q->cs, &rc);
			if (ret < 0)
				return ret;
			if (rc == 0)
				return -EIO;
			if (rc == 1) {
				e |= OFLAG_COPIED;
				if (type == C_NORMAL)
					q2_l2_set(q, slot, l2i, e);
			}
		}
	}
	if (type == C_NORMAL && (e & OFLAG_COPIED)) {
		/* Ours: write in place. */
		if (!c) {
			memset(q->bounce, 0, n);
			return q2_file_write(q->fd, host + in, q->bounce, n);
		}
		return q2_cur_io(q, true, host + in, c, n);
	}
	if (type == C_ZERO && host && (e & OFLAG_COPIED)) {
		/* A preallocated zero cluster: fill it, then drop the zero flag. */
		memset(q->bounce, 0, q->cs);
		if (c)
			q2_cur_take(c, q->bounce + in, n);
		ret = q2_file_write(q->fd, host, q->bounce, q->cs);
		if (ret == 0)
			q2_l2_set(q, slot, l2i, host | OFLAG_COPIED);
		return ret;
	}

	/* A new cluster, with the old contents around the written part. */
	ret = q2_alloc_cluster(q, &noff);
	if (ret < 0)
		return ret;
	if (n == q->cs && c) {
		ret = q2_cur_io(q, true, noff, c, n);
	} else {
		if (n != q->cs) {
			ret = old_contents(q, cstart, e);
			if (ret < 0)
				return ret;
			if (type != C_UNALLOC || q->backing)
				q->cows++;
		}
		if (c)
			q2_cur_take(c, q->bounce + in, n);
		else
			memset(q->bounce + in, 0, n);
		ret = q2_file_write(q->fd, noff, q->bounce, q->cs);
	}
	if (ret < 0) {
		q2_queue_free(q, noff / q->cs); /* never referenced */
		return ret;
	}
	q2_file_grew(q, noff + q->cs);
	q2_l2_set(q, slot, l2i, noff | OFLAG_COPIED);
	return q2_free_entry(q, e);
}

/* Zero or discard [off, off + n) of one cluster. */
static int zero_chunk(struct qcow2 *q, uint64_t off, size_t n, enum zmode mode)
{
	uint64_t in = off & (q->cs - 1), l2i, e, ne;
	bool full = in == 0 && (n == q->cs || off + n == q->size);
	enum ctype type;
	int slot, ret;

	ret = lookup(q, off, false, &slot, &e);
	if (ret < 0)
		return ret;
	type = q2_l2_type(q, e);
	if (type == C_BAD)
		return -EIO;
	if (type == C_ZERO ||
	    (type == C_UNALLOC && (!q->backing || (mode == Z_DISCARD && q->version == 2))))
		return 0; /* reads as it should already */
	if (!full) {
		if (mode == Z_DISCARD)
			return 0; /* a hint: partial clusters keep their data */
		return write_chunk(q, off, n, NULL);
	}
	if (q->version == 2 && q->backing && mode != Z_DISCARD)
		return write_chunk(q, off, n, NULL); /* no zero flag: write zeros */
	ret = lookup(q, off, true, &slot, &e);	     /* may copy a shared table */
	if (ret < 0)
		return ret;
	l2i = l2_index(q, off);
	type = q2_l2_type(q, e);
	if (type == C_BAD)
		return -EIO;
	ne = q->version >= 3 && q->backing ? OFLAG_ZERO : 0;
	if (mode == Z_ZERO && q->version >= 3 && type == C_NORMAL && (e & OFLAG_COPIED))
		ne = e | OFLAG_ZERO; /* keep the allocation */
	if (ne == e)
		return 0;
	q2_l2_set(q, slot, l2i, ne);
	if (ne & L2E_OFFSET_MASK)
		return 0;
	return q2_free_entry(q, e);
}

/* The metadata side of every operation, cluster by cluster. */
int q2_do_rw(struct qcow2 *q, bool write, uint64_t off, uint64_t len, struct iovcur *c)
{
	size_t n;
	int ret;

	if (write && q->broken)
		return -EIO;
	while (len) {
		n = q->cs - (off & (q->cs - 1));
		if (n > len)
			n = (size_t)len;
		ret = write ? write_chunk(q, off, n, c) : read_chunk(q, off, n, c);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

int q2_do_zero(struct qcow2 *q, uint64_t off, uint64_t len, enum zmode mode)
{
	uint64_t l2_cover = q->cs << q->l2_bits, skip;
	size_t n;
	int ret;

	if (q->broken)
		return -EIO;
	while (len) {
		/* Whole L2 ranges without a table need nothing when they read as zeros. */
		if (!(q->l1[l1_index(q, off)] & L1E_OFFSET_MASK) &&
		    (!q->backing || (mode == Z_DISCARD && q->version == 2))) {
			skip = l2_cover - (off & (l2_cover - 1));
			if (skip >= len)
				return 0;
			off += skip;
			len -= skip;
			continue;
		}
		n = q->cs - (off & (q->cs - 1));
		if (n > len)
			n = (size_t)len;
		ret = zero_chunk(q, off, n, mode);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

/* ---- Synchronous API ---- */

static int sync_check(struct qcow2 *q, uint64_t off, uint64_t len, bool write)
{
	if (write && q->read_only)
		return -EROFS;
	if (off > q->size || len > q->size - off)
		return -EINVAL;
	return 0;
}

int qcow2_read(struct qcow2 *q, uint64_t off, void *buf, size_t len)
{
	struct iovec v = {buf, len};
	struct iovcur c;
	int ret = sync_check(q, off, len, false);

	if (ret < 0)
		return ret;
	q2_cur_init(&c, &v, 1);
	return q2_do_rw(q, false, off, len, &c);
}

int qcow2_write(struct qcow2 *q, uint64_t off, const void *buf, size_t len)
{
	struct iovec v = {(void *)(uintptr_t)buf, len};
	struct iovcur c;
	int ret = sync_check(q, off, len, true);

	if (ret < 0)
		return ret;
	q2_cur_init(&c, &v, 1);
	return q2_do_rw(q, true, off, len, &c);
}

int qcow2_discard(struct qcow2 *q, uint64_t off, uint64_t len)
{
	int ret = sync_check(q, off, len, true);

	return ret < 0 ? ret : q2_do_zero(q, off, len, Z_DISCARD);
}

int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len, bool unmap)
{
	int ret = sync_check(q, off, len, true);

	return ret < 0 ? ret : q2_do_zero(q, off, len, unmap ? Z_ZERO_UNMAP : Z_ZERO);
}

int qcow2_flush(struct qcow2 *q)
{
	return q->read_only ? 0 : q2_flush(q);
}
