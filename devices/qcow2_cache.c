/*
 * qcow2 table caches: a least-recently-used cache of table clusters keyed by
 * host offset (struct tcache), used for the refcount blocks and for the L2
 * tables; loading, allocating and copying L2 tables.
 *
 * The L2 cache is read by the fast path under q->lock; the metadata side
 * changes it under the lock and does its I/O outside. The refcount block
 * cache belongs to the metadata side alone. A dirty L2 table leaving the
 * cache triggers a checkpoint; a dirty refcount block leaving its cache is
 * just written (early increments are harmless; decrements are applied only
 * after the checkpoint that makes the change durable).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2_internal.h"

int q2_cache_init(struct tcache *c, unsigned int nslots)
{
	unsigned int i;

	c->nslots = nslots ? nslots : 1;
	c->nbuckets = 1;
	while (c->nbuckets < 2 * c->nslots)
		c->nbuckets <<= 1;
	c->slot = calloc(c->nslots, sizeof(*c->slot));
	c->bucket = malloc(c->nbuckets * sizeof(*c->bucket));
	if (!c->slot || !c->bucket)
		return -ENOMEM;
	for (i = 0; i < c->nbuckets; i++)
		c->bucket[i] = -1;
	for (i = 0; i < c->nslots; i++)
		c->slot[i].next = -1;
	return 0;
}

void q2_cache_free(struct tcache *c)
{
	unsigned int i;

	if (c->slot)
		for (i = 0; i < c->nslots; i++)
			free(c->slot[i].data);
	free(c->slot);
	free(c->bucket);
	memset(c, 0, sizeof(*c));
}

static unsigned int cache_hash(const struct tcache *c, uint64_t off)
{
	return (unsigned int)(((off >> 9) * 0x9e3779b97f4a7c15ull) >> 32) & (c->nbuckets - 1);
}

/* The slot holding @off, or -1; a hit counts as a use. */
int q2_cache_find(struct tcache *c, uint64_t off)
{
	int i;

	for (i = c->bucket[cache_hash(c, off)]; i >= 0; i = c->slot[i].next) {
		if (c->slot[i].off == off) {
			c->slot[i].lru = ++c->tick;
			c->hits++;
			return i;
		}
	}
	c->misses++;
	return -1;
}

/* An empty slot, else the least recently used one. */
static int cache_victim(const struct tcache *c)
{
	unsigned int i, best = 0;

	for (i = 0; i < c->nslots; i++) {
		if (!c->slot[i].off)
			return (int)i;
		if (c->slot[i].lru < c->slot[best].lru)
			best = i;
	}
	return (int)best;
}

static void cache_unlink(struct tcache *c, int idx)
{
	struct cslot *s = &c->slot[idx];
	int *p;

	if (!s->off)
		return;
	for (p = &c->bucket[cache_hash(c, s->off)]; *p >= 0; p = &c->slot[*p].next) {
		if (*p == idx) {
			*p = s->next;
			break;
		}
	}
	s->next = -1;
	s->off = 0;
}

/* Key slot @idx (unlinked) as @off, most recently used. */
void q2_cache_link(struct tcache *c, int idx, uint64_t off)
{
	struct cslot *s = &c->slot[idx];
	unsigned int h = cache_hash(c, off);

	s->off = off;
	s->lru = ++c->tick;
	s->next = c->bucket[h];
	c->bucket[h] = idx;
}

void q2_cache_set_dirty(struct tcache *c, int idx, bool dirty)
{
	if (c->slot[idx].dirty != dirty)
		c->ndirty += dirty ? 1 : -1;
	c->slot[idx].dirty = dirty;
}

/* ---- Refcount blocks ---- */

/* Write refcount block slot @idx back if it is dirty. */
static int rb_write_slot(struct qcow2 *q, int idx)
{
	struct cslot *s = &q->rbc.slot[idx];
	int ret;

	if (!s->dirty)
		return 0;
	ret = q2_file_write(q->fd, s->off, s->data, q->cs);
	if (ret == 0)
		q2_cache_set_dirty(&q->rbc, idx, false);
	return ret;
}

/* Write every dirty refcount block. */
int q2_rb_write_dirty(struct qcow2 *q)
{
	unsigned int i;
	int ret;

	for (i = 0; i < q->rbc.nslots && q->rbc.ndirty; i++) {
		ret = rb_write_slot(q, (int)i);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* A slot of the refcount block cache to reuse: written back if dirty, with a buffer. */
int q2_rb_take_slot(struct qcow2 *q, int *out)
{
	struct tcache *c = &q->rbc;
	int idx = cache_victim(c), ret;

	ret = rb_write_slot(q, idx);
	if (ret < 0)
		return ret;
	if (c->slot[idx].off)
		c->evictions++;
	cache_unlink(c, idx);
	if (!c->slot[idx].data) {
		c->slot[idx].data = malloc(q->cs);
		if (!c->slot[idx].data)
			return -ENOMEM;
	}
	*out = idx;
	return 0;
}

/* The refcount block of range @t in the cache (*out NULL when the range has none). */
int q2_rb_load(struct qcow2 *q, uint64_t t, uint8_t **out)
{
	uint64_t off = q->rt[t];
	int idx, ret;

	*out = NULL;
	if (!off)
		return 0;
	idx = q2_cache_find(&q->rbc, off);
	if (idx < 0) {
		ret = q2_rb_take_slot(q, &idx);
		if (ret < 0)
			return ret;
		ret = q2_file_read(q->fd, off, q->rbc.slot[idx].data, q->cs);
		if (ret < 0)
			return ret;
		q2_cache_link(&q->rbc, idx, off);
	}
	*out = q->rbc.slot[idx].data;
	return 0;
}

/* ---- L2 tables ---- */

uint64_t q2_l2_entry(const struct qcow2 *q, int slot, uint64_t l2i)
{
	return get64(q->l2c.slot[slot].data + l2i * 8);
}

void q2_l2_set(struct qcow2 *q, int slot, uint64_t l2i, uint64_t e)
{
	pthread_mutex_lock(&q->lock);
	put64(q->l2c.slot[slot].data + l2i * 8, e);
	q2_cache_set_dirty(&q->l2c, slot, true);
	pthread_mutex_unlock(&q->lock);
}

static void l1_set(struct qcow2 *q, uint32_t i, uint64_t e)
{
	pthread_mutex_lock(&q->lock);
	q->l1[i] = e;
	pthread_mutex_unlock(&q->lock);
	if (!q->l1_dirty || i < q->l1_lo)
		q->l1_lo = i;
	if (!q->l1_dirty || i > q->l1_hi)
		q->l1_hi = i;
	q->l1_dirty = true;
}

/* Check an L2 table offset taken from the L1 table. */
bool q2_l2_off_ok(const struct qcow2 *q, uint64_t off)
{
	return off % q->cs == 0 && off < q->file_size && !meta_overlap(q, off, q->cs);
}

/*
 * Put @buf (the table at @off, one cluster) in the L2 cache, evicting the
 * least recently used table (after a checkpoint if it is dirty). Returns the
 * slot; @buf becomes the cache's and the evicted buffer the new spare.
 */
static int l2_install(struct qcow2 *q, uint64_t off, bool dirty, int *out)
{
	struct tcache *c = &q->l2c;
	uint8_t *old;
	int idx, ret;

	pthread_mutex_lock(&q->lock);
	idx = cache_victim(c);
	if (c->slot[idx].dirty) {
		pthread_mutex_unlock(&q->lock);
		ret = q2_checkpoint(q);
		if (ret < 0)
			return ret;
		pthread_mutex_lock(&q->lock);
		idx = cache_victim(c);
	}
	if (c->slot[idx].off)
		c->evictions++;
	cache_unlink(c, idx);
	old = c->slot[idx].data;
	c->slot[idx].data = q->l2_spare;
	q->l2_spare = old;
	q2_cache_link(c, idx, off);
	q2_cache_set_dirty(c, idx, dirty);
	pthread_mutex_unlock(&q->lock);
	*out = idx;
	return 0;
}

static int l2_spare(struct qcow2 *q)
{
	if (!q->l2_spare)
		q->l2_spare = malloc(q->cs);
	return q->l2_spare ? 0 : -ENOMEM;
}

/*
 * The L2 table of L1 entry @l1i in the cache: *slot, or -1 when it has none
 * and !@write. With @write the table is made the active L1's own (refcount
 * 1, COPIED): allocated when missing, copied when shared with a snapshot.
 */
int q2_l2_get(struct qcow2 *q, uint32_t l1i, bool write, int *slot)
{
	uint64_t l1e = q->l1[l1i], off = l1e & L1E_OFFSET_MASK, rc, noff;
	int idx, ret;

	*slot = -1;
	if (!off && !write)
		return 0;
	ret = l2_spare(q);
	if (ret < 0)
		return ret;
	if (!off) {
		ret = q2_alloc_cluster(q, &noff);
		if (ret < 0)
			return ret;
		memset(q->l2_spare, 0, q->cs);
		ret = l2_install(q, noff, true, &idx);
		if (ret < 0)
			return ret;
		l1_set(q, l1i, noff | OFLAG_COPIED);
		q2_file_grew(q, noff + q->cs);
		*slot = idx;
		return 0;
	}
	pthread_mutex_lock(&q->lock);
	idx = q2_cache_find(&q->l2c, off);
	pthread_mutex_unlock(&q->lock);
	if (idx < 0) {
		if (!q2_l2_off_ok(q, off))
			return -EIO;
		ret = q2_file_read(q->fd, off, q->l2_spare, q->cs);
		if (ret < 0)
			return ret;
		ret = l2_install(q, off, false, &idx);
		if (ret < 0)
			return ret;
	}
	if (write && !(l1e & OFLAG_COPIED)) {
		ret = q2_rc_get(q, off / q->cs, &rc);
		if (ret < 0)
			return ret;
		if (rc == 0)
			return -EIO;
		if (rc == 1) {
			l1_set(q, l1i, off | OFLAG_COPIED);
		} else {
			/* Shared with a snapshot: this copy becomes the active table. */
			ret = q2_alloc_cluster(q, &noff);
			if (ret < 0)
				return ret;
			pthread_mutex_lock(&q->lock);
			cache_unlink(&q->l2c, idx);
			q2_cache_link(&q->l2c, idx, noff);
			q2_cache_set_dirty(&q->l2c, idx, true);
			pthread_mutex_unlock(&q->lock);
			l1_set(q, l1i, noff | OFLAG_COPIED);
			q2_file_grew(q, noff + q->cs);
			q->cows++;
			ret = q2_queue_free(q, off / q->cs);
			if (ret < 0)
				return ret;
		}
	}
	*slot = idx;
	return 0;
}
