/*
 * qcow2 checkpoints: dirty metadata written back in a crash-safe order
 * (docs/qcow2.md, "Write ordering and crash safety").
 *
 * Metadata is written back, never in place at once: an allocation writes
 * the data cluster first, then changes refcounts and L2 entries in memory.
 * A checkpoint (at FLUSH, when a dirty table must leave a cache, at close)
 * writes dirty refcount blocks, syncs, writes refcount table entries,
 * syncs, writes dirty L2 tables, syncs, writes L1 entries, syncs (skipping
 * steps with nothing to write). Refcount decrements (discard, copy-on-write
 * of shared clusters) wait for the sync that makes the L2/L1 change
 * durable, and for engine requests that may still target the freed
 * clusters. A crash therefore leaves at worst clusters whose refcount is too
 * high (leaks), never a reference to a cluster with a lower refcount or
 * unwritten contents. The dirty bit is never set.
 */
#include <errno.h>
#include <stdlib.h>

#include "qcow2_internal.h"

static int write_l1(struct qcow2 *q)
{
	uint32_t n = q->l1_hi - q->l1_lo + 1, i;
	uint8_t *buf = malloc((size_t)n * 8);
	int ret;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		put64(buf + (size_t)i * 8, q->l1[q->l1_lo + i]);
	ret = q2_file_write(q->fd, q->l1_off + (uint64_t)q->l1_lo * 8, buf, (size_t)n * 8);
	free(buf);
	if (!ret)
		q->l1_dirty = false;
	return ret;
}

static int write_rt(struct qcow2 *q)
{
	uint64_t n = q->rt_hi - q->rt_lo + 1, i;
	uint8_t *buf = malloc(n * 8);
	int ret;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		put64(buf + i * 8, q->rt[q->rt_lo + i]);
	ret = q2_file_write(q->fd, q->rt_off + q->rt_lo * 8, buf, n * 8);
	free(buf);
	if (!ret)
		q->rt_dirty = false;
	return ret;
}

static int write_l2_dirty(struct qcow2 *q)
{
	struct tcache *c = &q->l2c;
	unsigned int i;
	int ret;

	for (i = 0; i < c->nslots; i++) {
		if (!c->slot[i].dirty)
			continue;
		/* Only this thread writes the table: reading it unlocked is safe. */
		ret = q2_file_write(q->fd, c->slot[i].off, c->slot[i].data, q->cs);
		if (ret < 0)
			return ret;
		pthread_mutex_lock(&q->lock);
		q2_cache_set_dirty(c, (int)i, false);
		pthread_mutex_unlock(&q->lock);
	}
	return 0;
}

/*
 * Apply the queued refcount decrements, once no engine request that may
 * still use the clusters is in flight. Returns 1 when applied.
 */
static int apply_frees(struct qcow2 *q)
{
	bool ok;
	size_t i;
	int ret = 0;

	/* fast_done() signals under the lock when it sees draining and the count at 0. */
	pthread_mutex_lock(&q->lock);
	atomic_store(&q->draining, true);
	while (atomic_load(&q->fast_inflight) && !q->stop)
		pthread_cond_wait(&q->drained, &q->lock);
	ok = atomic_load(&q->fast_inflight) == 0;
	atomic_store(&q->draining, false);
	pthread_mutex_unlock(&q->lock);
	if (!ok)
		return 0;
	for (i = 0; i < q->nfrees && !ret; i++) {
		ret = q2_rc_add(q, q->frees[i], -1);
		if (q->frees[i] < q->free_hint)
			q->free_hint = q->frees[i];
	}
	q->nfrees = 0;
	q->dcache_valid = false;
	return ret < 0 ? ret : 1;
}

void q2_set_broken(struct qcow2 *q)
{
	pthread_mutex_lock(&q->lock);
	q->broken = true;
	pthread_mutex_unlock(&q->lock);
}

/* Write all dirty metadata back in crash-safe order (see the top of the file). */
int q2_checkpoint(struct qcow2 *q)
{
	int ret;

	if (q->raw ||
	    (!q->rbc.ndirty && !q->rt_dirty && !q->l2c.ndirty && !q->l1_dirty && !q->nfrees))
		return 0;
	q->checkpoints++;
	ret = q2_rb_write_dirty(q);
	if (!ret && q->rt_dirty) {
		ret = q2_file_sync(q);
		if (!ret)
			ret = write_rt(q);
	}
	if (!ret && (q->l2c.ndirty || q->l1_dirty)) {
		ret = q2_file_sync(q);
		if (!ret)
			ret = write_l2_dirty(q);
		if (!ret && q->l1_dirty) {
			ret = q2_file_sync(q);
			if (!ret)
				ret = write_l1(q);
		}
		if (!ret)
			ret = q2_file_sync(q);
	}
	if (!ret && q->nfrees)
		ret = apply_frees(q);
	if (ret < 0)
		q2_set_broken(q);
	return ret < 0 ? ret : 0;
}

/* FLUSH: everything durable, freed clusters' refcounts included. */
int q2_flush(struct qcow2 *q)
{
	bool frees = q->nfrees != 0;
	int ret;

	ret = q2_checkpoint(q);
	if (!ret && frees)
		ret = q2_checkpoint(q);
	if (!ret)
		ret = q2_file_sync(q);
	return ret;
}
