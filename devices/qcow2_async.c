/*
 * qcow2 behind a struct disk: the fast path on the owner's thread and the
 * metadata thread.
 *
 * The owner's thread (the device worker) serves READ and WRITE requests
 * whose clusters are already mapped (and, for writes, owned: refcount 1,
 * the COPIED flag) from the L2 caches in memory, following the backing
 * chain for reads: it turns them into engine requests at file offsets (of
 * the image or a backing file), so data moves through io_uring or the
 * thread pool exactly as for a raw image. Everything else (cache misses,
 * allocation, copy-on-write, compressed clusters, discard, write-zeroes,
 * flush) goes to one metadata thread, which does it with synchronous system
 * calls, one request at a time. Only that thread changes metadata; it
 * changes the L1 table, the L2 cache and file_size under q->lock, and does
 * its I/O without the lock, so the owner's thread never waits for a disk.
 * Backing images are touched by the metadata thread and by fast-path
 * lookups only.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2_internal.h"

void qcow2_attach(struct qcow2 *q, struct disk *d)
{
	q->disk = d;
}

/* Run one request on the metadata side; returns its result. */
static int64_t run_req(struct qcow2 *q, struct disk_req *r)
{
	struct iovcur c;
	int ret = 0;

	switch (r->op) {
	case DISK_OP_READ:
	case DISK_OP_WRITE:
		q2_cur_init(&c, r->iov, r->iovcnt);
		ret = q2_do_rw(q, r->op == DISK_OP_WRITE, r->offset, r->priv.total, &c);
		return ret < 0 ? ret : (int64_t)r->priv.total;
	case DISK_OP_FLUSH:
		ret = q2_flush(q);
		break;
	case DISK_OP_DISCARD:
		ret = q2_do_zero(q, r->offset, r->len, Z_DISCARD);
		break;
	case DISK_OP_WRITE_ZEROES:
		ret = q2_do_zero(q, r->offset, r->len,
				 r->flags & DISK_REQ_F_UNMAP ? Z_ZERO_UNMAP : Z_ZERO);
		break;
	}
	return ret;
}

static void *meta_main(void *arg)
{
	struct qcow2 *q = arg;
	struct disk_req *r;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->stop && !q->qhead)
			pthread_cond_wait(&q->cond, &q->lock);
		if (q->stop)
			break;
		r = q->qhead;
		q->qhead = r->priv.next;
		if (!q->qhead)
			q->qtail = NULL;
		pthread_mutex_unlock(&q->lock);
		r->result = run_req(q, r);
		disk_req_finish_async(q->disk, r);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static int slow_submit(struct qcow2 *q, struct disk_req *r)
{
	sigset_t all, old;
	int ret = 0;

	pthread_mutex_lock(&q->lock);
	if (!q->thread_started) {
		/* Started at the first request, so none exists before a sandbox forks. */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		ret = pthread_create(&q->thread, NULL, meta_main, q);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (ret) {
			pthread_mutex_unlock(&q->lock);
			return -EAGAIN;
		}
		q->thread_started = true;
	}
	r->priv.next = NULL;
	if (q->qtail)
		q->qtail->priv.next = r;
	else
		q->qhead = r;
	q->qtail = r;
	q->nslow++;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return ret;
}

static void fast_done(struct disk_req *child)
{
	struct qfast *f = child->opaque;
	struct qcow2 *q = f->q;
	struct disk_req *r = f->parent;

	if (child->result < 0 && !f->err)
		f->err = child->result;
	if (--f->pending)
		return;
	if (atomic_fetch_sub(&q->fast_inflight, 1) == 1 && atomic_load(&q->draining)) {
		pthread_mutex_lock(&q->lock);
		pthread_cond_signal(&q->drained);
		pthread_mutex_unlock(&q->lock);
	}
	if (f->prev)
		f->prev->next = f->next;
	else
		q->live = f->next;
	if (f->next)
		f->next->prev = f->prev;
	r->result = f->err ? f->err : (int64_t)r->priv.total;
	if (f->pooled && q->npool < FAST_POOL_MAX) {
		f->next = q->pool;
		q->pool = f;
		q->npool++;
	} else {
		free(f);
	}
	disk_req_finish(q->disk, r);
}

struct extent {
	uint64_t pos, len; /* within the request */
	int fd;		   /* -1: zeros */
	uint64_t host;
};

/*
 * Map [off, off + *len) of the top image @top (whose lock the caller holds)
 * down the backing chain from the caches alone, shortening *len to what
 * one cluster of every image consulted covers. Sets *fd and *host (*fd -1:
 * zeros). Returns 1 when the metadata thread must do it: a table not in a
 * cache, a compressed cluster, a write that is not in place, anything odd.
 */
static int fast_map(struct qcow2 *top, uint64_t off, uint64_t *len, bool write, int *fd,
		    uint64_t *host)
{
	struct qcow2 *q = top;
	uint64_t in, l1e, e;
	int slot, ret = 1;

	for (;;) {
		if (!q || off >= q->size) {
			*fd = -1; /* no backing file, or past its end */
			return 0;
		}
		if (q->raw) {
			if (*len > q->size - off)
				*len = q->size - off;
			*fd = q->fd;
			*host = off;
			return 0;
		}
		in = off & (q->cs - 1);
		if (*len > q->cs - in)
			*len = q->cs - in;
		if (q != top)
			pthread_mutex_lock(&q->lock);
		l1e = q->l1[l1_index(q, off)];
		e = 0;
		if (l1e & L1E_OFFSET_MASK) {
			slot = q2_cache_find(&q->l2c, l1e & L1E_OFFSET_MASK);
			if (slot < 0)
				goto out;
			e = q2_l2_entry(q, slot, l2_index(q, off));
		}
		switch (q2_l2_type(q, e)) {
		case C_NORMAL:
			*host = e & L2E_OFFSET_MASK;
			if (*host + q->cs > q->file_size ||
			    (write && (!(e & OFLAG_COPIED) || meta_overlap(q, *host, q->cs))))
				goto out;
			*host += in;
			*fd = q->fd;
			ret = 0;
			goto out;
		case C_ZERO:
			*fd = -1;
			ret = write;
			goto out;
		case C_UNALLOC:
			if (write)
				goto out;
			if (q != top)
				pthread_mutex_unlock(&q->lock);
			q = q->backing;
			continue;
		default:
			goto out;
		}
	}
out:
	if (q != top)
		pthread_mutex_unlock(&q->lock);
	return ret;
}

/*
 * Serve a READ or WRITE from the L2 caches when every cluster it touches is
 * mapped (owned, for a write). Returns 0 when done so, 1 when the request
 * needs the metadata thread, -errno when the engine refused.
 */
static int fast_submit(struct qcow2 *q, struct disk_req *r)
{
	struct extent ext[FAST_MAX_EXTENTS];
	bool write = r->op == DISK_OP_WRITE;
	unsigned int n = 0, ndata = 0, i, k;
	uint64_t pos = 0, len, host = 0;
	struct qfast *f;
	struct iovec *iov;
	struct iovcur c;
	int fd, ret;

	pthread_mutex_lock(&q->lock);
	if (atomic_load(&q->draining) || q->broken)
		goto slow;
	while (pos < r->priv.total) {
		len = r->priv.total - pos;
		if (fast_map(q, r->offset + pos, &len, write, &fd, &host))
			goto slow;
		if (n && ext[n - 1].fd == fd &&
		    (fd < 0 || ext[n - 1].host + ext[n - 1].len == host)) {
			ext[n - 1].len += len;
		} else {
			if (n == FAST_MAX_EXTENTS)
				goto slow;
			ext[n].pos = pos;
			ext[n].len = len;
			ext[n].fd = fd;
			ext[n].host = host;
			ndata += fd >= 0;
			n++;
		}
		pos += len;
	}
	if (ndata)
		atomic_fetch_add(&q->fast_inflight, 1);
	q->nfast++;
	pthread_mutex_unlock(&q->lock);

	/* Zeros first (reads only), then the data extents go to the engine. */
	if (ndata < n) {
		q2_cur_init(&c, r->iov, r->iovcnt);
		for (pos = 0, i = 0; i < n; i++) {
			q2_cur_advance(&c, ext[i].pos - pos);
			pos = ext[i].pos;
			if (ext[i].fd < 0) {
				q2_cur_fill(&c, NULL, ext[i].len);
				pos += ext[i].len;
			}
		}
	}
	if (!ndata) {
		r->result = (int64_t)r->priv.total;
		disk_req_finish_async(q->disk, r);
		return 0;
	}
	if (ndata == 1 && r->iovcnt + 1 <= FAST_POOL_IOV && q->pool) {
		f = q->pool;
		q->pool = f->next;
		q->npool--;
		memset(f, 0, sizeof(*f) + sizeof(struct disk_req));
		f->pooled = true;
	} else {
		bool small = ndata == 1 && r->iovcnt + 1 <= FAST_POOL_IOV;

		f = calloc(1, sizeof(*f) + ndata * sizeof(struct disk_req) +
				      (small ? FAST_POOL_IOV : r->iovcnt + ndata) *
					      sizeof(struct iovec));
		if (!f) {
			ret = -ENOMEM;
			goto undo;
		}
		f->pooled = small;
	}
	f->q = q;
	f->parent = r;
	f->pending = ndata;
	iov = (struct iovec *)&f->child[ndata];
	q2_cur_init(&c, r->iov, r->iovcnt);
	for (pos = 0, i = 0, k = 0; i < n; i++) {
		struct disk_req *ch;

		if (ext[i].fd < 0)
			continue;
		q2_cur_advance(&c, ext[i].pos - pos);
		pos = ext[i].pos;
		ch = &f->child[k++];
		ch->op = r->op;
		ch->offset = ext[i].host;
		ch->iov = iov;
		ch->iovcnt = q2_cur_slice(&c, ext[i].len, iov, r->iovcnt + 1);
		ch->done = fast_done;
		ch->opaque = f;
		ch->priv.fd = ext[i].fd;
		iov += ch->iovcnt;
	}
	f->next = q->live;
	if (q->live)
		q->live->prev = f;
	q->live = f;
	for (k = 0; k < ndata; k++) {
		ret = disk_engine_submit(q->disk, &f->child[k], f->child[k].priv.fd);
		if (ret < 0) {
			if (k == 0) {
				q->live = f->next;
				if (q->live)
					q->live->prev = NULL;
				free(f);
				goto undo;
			}
			/* Not reached with a started engine; finish what was sent. */
			f->err = ret;
			f->pending -= ndata - k;
			break;
		}
	}
	return 0;

undo:
	atomic_fetch_sub(&q->fast_inflight, 1);
	return ret;
slow:
	pthread_mutex_unlock(&q->lock);
	return 1;
}

int qcow2_submit(struct qcow2 *q, struct disk_req *r)
{
	int ret;

	if ((r->op == DISK_OP_READ || r->op == DISK_OP_WRITE) && r->priv.total) {
		ret = fast_submit(q, r);
		if (ret <= 0)
			return ret;
	}
	return slow_submit(q, r);
}

void qcow2_stop(struct qcow2 *q)
{
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	pthread_cond_broadcast(&q->drained);
	pthread_mutex_unlock(&q->lock);
	if (q->thread_started)
		pthread_join(q->thread, NULL);
	q->thread_started = false;
}
