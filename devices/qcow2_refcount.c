/*
 * qcow2 refcounts: refcount entries of every width, the refcount table and
 * its growth, cluster allocation and deferred frees.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2_internal.h"

uint64_t q2_rb_get(const uint8_t *b, unsigned int order, uint64_t i)
{
	unsigned int w;
	uint64_t bit;

	switch (order) {
	case 0:
	case 1:
	case 2:
		w = 1u << order;
		bit = i * w;
		return (b[bit / 8] >> (bit % 8)) & ((1u << w) - 1);
	case 3:
		return b[i];
	case 4:
		return get16(b + i * 2);
	case 5:
		return get32(b + i * 4);
	default:
		return get64(b + i * 8);
	}
}

void q2_rb_set(uint8_t *b, unsigned int order, uint64_t i, uint64_t v)
{
	unsigned int w, mask;
	uint64_t bit;

	switch (order) {
	case 0:
	case 1:
	case 2:
		w = 1u << order;
		mask = (1u << w) - 1;
		bit = i * w;
		b[bit / 8] =
			(uint8_t)((b[bit / 8] & ~(mask << (bit % 8))) | ((v & mask) << (bit % 8)));
		break;
	case 3:
		b[i] = (uint8_t)v;
		break;
	case 4:
		put16(b + i * 2, (uint16_t)v);
		break;
	case 5:
		put32(b + i * 4, (uint32_t)v);
		break;
	default:
		put64(b + i * 8, v);
		break;
	}
}

static uint64_t rc_max(const struct qcow2 *q)
{
	return q->rc_order == 6 ? UINT64_MAX : (1ull << (1u << q->rc_order)) - 1;
}

int q2_rc_get(struct qcow2 *q, uint64_t cluster, uint64_t *v)
{
	uint64_t t = cluster / q->rb_entries;
	uint8_t *b;
	int ret;

	*v = 0;
	if (t >= q->rt_entries)
		return 0;
	ret = q2_rb_load(q, t, &b);
	if (ret < 0 || !b)
		return ret;
	*v = q2_rb_get(b, q->rc_order, cluster % q->rb_entries);
	return 0;
}

static void rt_mark(struct qcow2 *q, uint64_t t)
{
	if (!q->rt_dirty || t < q->rt_lo)
		q->rt_lo = t;
	if (!q->rt_dirty || t > q->rt_hi)
		q->rt_hi = t;
	q->rt_dirty = true;
}

/* Give range @t (which has none) a refcount block in its own first cluster. */
static int rb_create(struct qcow2 *q, uint64_t t)
{
	uint64_t b = t * q->rb_entries, off = b * q->cs;
	int idx, ret;

	if (meta_overlap(q, off, q->cs))
		return -EIO; /* refcounts say the header or a table is free: corrupt */
	ret = q2_rb_take_slot(q, &idx);
	if (ret < 0)
		return ret;
	memset(q->rbc.slot[idx].data, 0, q->cs);
	q2_rb_set(q->rbc.slot[idx].data, q->rc_order, 0, 1);
	q2_cache_link(&q->rbc, idx, off);
	q2_cache_set_dirty(&q->rbc, idx, true);
	q->rt[t] = off;
	rt_mark(q, t);
	q2_file_grew(q, off + q->cs);
	return 0;
}

/*
 * Replace the refcount table by a larger one covering range @t_need: new
 * refcount blocks and the new table go past everything in use, the blocks
 * counting themselves and the table; then the header points at the new
 * table and the old one is freed.
 */
static int rt_grow(struct qcow2 *q, uint64_t t_need)
{
	uint64_t E = q->rb_entries, cs = q->cs, A, r0, r1, k, T, n, i, cl;
	uint64_t old_off = q->rt_off, old_clusters = q->rt_clusters, *nrt;
	uint8_t *blocks, *tab, hdr[12];
	int ret;

	ret = q2_rb_write_dirty(q);
	if (ret < 0)
		return ret;
	A = ceil_div(q->file_size, cs);
	if (A < q->rt_entries * E)
		A = q->rt_entries * E;
	if (A >= MAX_HOST_OFFSET / cs)
		return -ENOSPC;
	r0 = A / E;
	n = q->rt_entries + q->rt_entries / 2;
	if (n < t_need + 1)
		n = t_need + 1;
	for (;;) {
		T = ceil_div(n * 8, cs);
		if (T > MAX_RT_BYTES / cs)
			return -ENOSPC;
		for (k = 1; (A + k + T - 1) / E - r0 + 1 > k; k++)
			;
		r1 = (A + k + T - 1) / E;
		if (r1 + 1 <= n)
			break;
		n = r1 + 1;
	}
	n = T * cs / 8;
	nrt = calloc(n, sizeof(*nrt));
	blocks = calloc(k, cs);
	tab = calloc(T, cs);
	if (!nrt || !blocks || !tab) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(nrt, q->rt, q->rt_entries * sizeof(*nrt));
	for (i = 0; i < k; i++)
		nrt[r0 + i] = (A + i) * cs;
	for (cl = A; cl < A + k + T; cl++)
		q2_rb_set(blocks + (cl / E - r0) * cs, q->rc_order, cl % E, 1);
	for (i = 0; i < n; i++)
		put64(tab + i * 8, nrt[i]);
	ret = q2_file_write(q->fd, A * cs, blocks, k * cs);
	if (!ret)
		ret = q2_file_write(q->fd, (A + k) * cs, tab, T * cs);
	if (!ret)
		ret = q2_file_sync(q);
	if (ret < 0)
		goto out;
	put64(hdr, (A + k) * cs);
	put32(hdr + 8, (uint32_t)T);
	ret = q2_file_write(q->fd, 48, hdr, sizeof(hdr));
	if (!ret)
		ret = q2_file_sync(q);
	if (ret < 0) {
		q2_set_broken(q); /* the header may point either way: stop writing */
		goto out;
	}
	free(q->rt);
	q->rt = nrt;
	nrt = NULL;
	q->rt_entries = n;
	q->rt_off = (A + k) * cs;
	q->rt_clusters = (uint32_t)T;
	q->rt_dirty = false;
	q2_file_grew(q, (A + k + T) * cs);
	/* The old table is unreferenced now that the header is durable. */
	for (i = 0; i < old_clusters && !ret; i++)
		ret = q2_rc_add(q, old_off / cs + i, -1);
	if (old_off / cs < q->free_hint)
		q->free_hint = old_off / cs;
out:
	free(nrt);
	free(blocks);
	free(tab);
	return ret;
}

/* Add @delta (+1 or -1) to the refcount of @cluster, creating blocks and growing as needed. */
int q2_rc_add(struct qcow2 *q, uint64_t cluster, int delta)
{
	uint64_t t = cluster / q->rb_entries, v;
	uint8_t *b;
	int idx, ret;

	if (t >= q->rt_entries) {
		if (delta < 0)
			return -EIO;
		ret = rt_grow(q, t);
		if (ret < 0)
			return ret;
	}
	if (!q->rt[t]) {
		if (delta < 0)
			return -EIO;
		ret = rb_create(q, t);
		if (ret < 0)
			return ret;
	}
	ret = q2_rb_load(q, t, &b);
	if (ret < 0)
		return ret;
	v = q2_rb_get(b, q->rc_order, cluster % q->rb_entries);
	if ((delta < 0 && v == 0) || (delta > 0 && v == rc_max(q)))
		return -EIO;
	q2_rb_set(b, q->rc_order, cluster % q->rb_entries, delta < 0 ? v - 1 : v + 1);
	idx = q2_cache_find(&q->rbc, q->rt[t]);
	q2_cache_set_dirty(&q->rbc, idx, true);
	return 0;
}

/* The first free cluster at or after q->free_hint that is not the header or a table. */
static int find_free(struct qcow2 *q, uint64_t *out)
{
	uint64_t i = q->free_hint, t, end;
	uint8_t *b;
	int ret;

	for (;;) {
		t = i / q->rb_entries;
		if (t >= q->rt_entries || !q->rt[t]) {
			if (!meta_overlap(q, i * q->cs, q->cs))
				break;
			i++;
			continue;
		}
		ret = q2_rb_load(q, t, &b);
		if (ret < 0)
			return ret;
		end = (t + 1) * q->rb_entries;
		for (; i < end; i++)
			if (!q2_rb_get(b, q->rc_order, i % q->rb_entries) &&
			    !meta_overlap(q, i * q->cs, q->cs))
				goto found;
	}
found:
	*out = i;
	return 0;
}

/* Allocate one cluster (refcount 1); returns its host offset in *off. */
int q2_alloc_cluster(struct qcow2 *q, uint64_t *off)
{
	uint64_t i, t;
	int ret;

	for (;;) {
		ret = find_free(q, &i);
		if (ret < 0)
			return ret;
		if (i >= MAX_HOST_OFFSET / q->cs)
			return -ENOSPC;
		t = i / q->rb_entries;
		if (t >= q->rt_entries) {
			ret = rt_grow(q, t);
		} else if (!q->rt[t]) {
			ret = rb_create(q, t);
		} else {
			ret = q2_rc_add(q, i, 1);
			if (ret < 0)
				return ret;
			q->free_hint = i + 1;
			*off = i * q->cs;
			q->allocations++;
			return 0;
		}
		if (ret < 0)
			return ret;
	}
}

/* Drop a reference to @cluster once the metadata that referred to it is durable. */
int q2_queue_free(struct qcow2 *q, uint64_t cluster)
{
	uint64_t *n;

	if (q->nfrees == q->frees_cap) {
		n = realloc(q->frees, (q->frees_cap ? q->frees_cap * 2 : 64) * sizeof(*n));
		if (!n)
			return -ENOMEM; /* the cluster leaks: harmless */
		q->frees = n;
		q->frees_cap = q->frees_cap ? q->frees_cap * 2 : 64;
	}
	q->frees[q->nfrees++] = cluster;
	return 0;
}

int q2_free_entry(struct qcow2 *q, uint64_t e)
{
	uint64_t off, len, c;
	int ret = 0;

	switch (q2_l2_type(q, e)) {
	case C_NORMAL:
	case C_ZERO:
		if (e & L2E_OFFSET_MASK)
			ret = q2_queue_free(q, (e & L2E_OFFSET_MASK) / q->cs);
		break;
	case C_COMPRESSED:
		q2_compressed_extent(q, e, &off, &len);
		off &= ~511ull;
		for (c = off / q->cs; c <= (off + len - 1) / q->cs && !ret; c++)
			ret = q2_queue_free(q, c);
		break;
	default:
		break;
	}
	return ret;
}
