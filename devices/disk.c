/*
 * Disk images: the generic asynchronous interface, format detection, the
 * raw format, and the two engines that run host I/O.
 *
 * disk_submit() checks a request (operation, read-only, bounds) and hands it
 * to the image format; the raw format passes it straight to the engine, and
 * qcow2 (qcow2.c) translates it into engine requests of its own ("internal"
 * requests, whose completion is the format's business) or runs it on its
 * metadata thread, which hands it back through disk_req_finish_async(). An
 * engine request is a small state machine of host system calls: step_next()
 * says which call comes next and step_done() takes its result. A READ or
 * WRITE repeats readv/writev until every byte moved (short transfers resume
 * where they stopped); a WRITE_ZEROES tries fallocate(PUNCH_HOLE) when unmap
 * is allowed, then fallocate(ZERO_RANGE), then writes zeros; a DISCARD
 * punches a hole, or does nothing where the file system cannot (discard is a
 * hint). The io_uring engine turns each step into an SQE and resumes from
 * the CQE; the thread pool runs the steps with preadv/pwritev/fdatasync/
 * fallocate. Either way finished requests wait on a list until the owner's
 * thread calls disk_complete(), which runs their callbacks.
 */
#include "disk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "qcow2.h"

#if HAVE_LIBURING
#include <liburing.h>
#endif

#define POOL_THREADS  4
#define URING_ENTRIES 128	 /* SQEs given to the kernel at once; the CQ has twice as many */
#define ZERO_BUF_SIZE (1u << 20) /* one write of zeros; untouched pages cost no memory */

enum engine {
	ENGINE_URING,
	ENGINE_THREADS,
};

/* WRITE_ZEROES stages, in the order they are tried. */
enum {
	WZ_PUNCH,
	WZ_ZERO_RANGE,
	WZ_WRITE,
};

/* disk_req_priv.head: how a WRITE of a probed raw disk touches its first bytes. */
enum {
	HEAD_NONE,
	HEAD_WHOLE, /* all of [0, QCOW2_MAGIC_LEN) */
	HEAD_PART,  /* part of it */
};

/* One host system call of a request. */
enum step_kind {
	STEP_READV,
	STEP_WRITEV,
	STEP_FSYNC,
	STEP_FALLOCATE,
};

struct step {
	enum step_kind kind;
	int fd;
	const struct iovec *iov;
	unsigned int iovcnt;
	uint64_t offset;
	int mode; /* fallocate */
	uint64_t len;
};

struct req_list {
	struct disk_req *head, *tail;
};

struct disk;

/*
 * An image format: what it does with a checked request. Raw passes it to
 * the engine; qcow2 translates offsets and issues its own engine requests.
 */
struct image_format {
	const char *name;
	int (*submit)(struct disk *d, struct disk_req *req);
};

struct disk {
	int fd;
	int efd; /* readable when finished requests wait for disk_complete() */
	uint64_t size;
	bool read_only;
	enum engine engine;
	const struct image_format *fmt;
	struct qcow2 *qcow2; /* the qcow2 format's state */
	uint8_t *zero_buf;   /* ZERO_BUF_SIZE zeros, read-write disks only */
	bool probed_raw;     /* writable, detected as raw: guard the first bytes */

	/* Owner's thread only. */
	unsigned int inflight;	  /* accepted, done() not run */
	unsigned int head_whole;  /* probed_raw: WRITEs in flight covering all of [0, 4) */
	unsigned int head_part;	  /* probed_raw: WRITEs in flight covering part of it */
	unsigned int ncompleted;  /* done() calls made by disk_req_finish() */
	struct req_list finished; /* finished without a thread, done() not run */

#if HAVE_LIBURING
	/* io_uring engine, owner's thread only. */
	struct io_uring ring;
	unsigned int ring_busy;	 /* SQEs taken whose CQE was not reaped */
	struct req_list waiting; /* waiting for room in the ring */
#endif

	/* Thread pool. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t threads[POOL_THREADS];
	unsigned int nthreads;	   /* owner's thread only */
	bool stop;		   /* under lock */
	struct req_list queue;	   /* under lock: waiting for a thread */
	struct req_list pool_done; /* under lock: finished by a thread (pool or format) */
};

static void list_add(struct req_list *l, struct disk_req *r)
{
	r->priv.next = NULL;
	if (l->tail)
		l->tail->priv.next = r;
	else
		l->head = r;
	l->tail = r;
}

static struct disk_req *list_pop(struct req_list *l)
{
	struct disk_req *r = l->head;

	if (r) {
		l->head = r->priv.next;
		if (!l->head)
			l->tail = NULL;
		r->priv.next = NULL;
	}
	return r;
}

static void kick(struct disk *d)
{
	uint64_t one = 1;
	ssize_t n;

	/* Only fails when the counter would overflow: it is readable then anyway. */
	n = write(d->efd, &one, sizeof(one));
	(void)n;
}

/* ---- Request state machine, shared by both engines ---- */

static void step_next(struct disk *d, struct disk_req *r, struct step *s)
{
	memset(s, 0, sizeof(*s));
	s->fd = r->priv.fd;
	switch (r->op) {
	case DISK_OP_READ:
	case DISK_OP_WRITE:
		s->kind = r->op == DISK_OP_READ ? STEP_READV : STEP_WRITEV;
		s->iov = r->iov + r->priv.iov_idx;
		s->iovcnt = r->iovcnt - r->priv.iov_idx;
		s->offset = r->offset + r->priv.done;
		break;
	case DISK_OP_FLUSH:
		s->kind = STEP_FSYNC;
		break;
	case DISK_OP_DISCARD:
		s->kind = STEP_FALLOCATE;
		s->mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		s->offset = r->offset;
		s->len = r->len;
		break;
	case DISK_OP_WRITE_ZEROES:
		if (r->priv.stage == WZ_WRITE) {
			uint64_t left = r->len - r->priv.done;

			r->priv.zero_iov.iov_base = d->zero_buf;
			r->priv.zero_iov.iov_len = left < ZERO_BUF_SIZE ? left : ZERO_BUF_SIZE;
			s->kind = STEP_WRITEV;
			s->iov = &r->priv.zero_iov;
			s->iovcnt = 1;
			s->offset = r->offset + r->priv.done;
			break;
		}
		s->kind = STEP_FALLOCATE;
		s->mode = FALLOC_FL_KEEP_SIZE |
			  (r->priv.stage == WZ_PUNCH ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);
		s->offset = r->offset;
		s->len = r->len;
		break;
	}
}

static bool finish(struct disk_req *r, int64_t result)
{
	r->result = result;
	return true;
}

/* The file system (or device) cannot do this fallocate mode. */
static bool unsupported(int64_t res)
{
	return res == -EOPNOTSUPP || res == -EINVAL || res == -ENOSYS || res == -ENODEV;
}

/* Skip @n transferred bytes of r->iov[], rewriting the first entry left. */
static void iov_advance(struct disk_req *r, uint64_t n)
{
	while (n && r->priv.iov_idx < r->iovcnt) {
		struct iovec *v = &r->iov[r->priv.iov_idx];

		if (n < v->iov_len) {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= n;
			return;
		}
		n -= v->iov_len;
		r->priv.iov_idx++;
	}
}

/*
 * Take the result of the step last issued for @r. Returns true when the
 * request is finished (r->result set), false when another step follows.
 */
static bool step_done(struct disk_req *r, int64_t res)
{
	uint64_t left;

	if (res == -EINTR || res == -EAGAIN)
		return false;
	switch (r->op) {
	case DISK_OP_READ:
	case DISK_OP_WRITE:
		if (res < 0)
			return finish(r, res);
		left = r->priv.total - r->priv.done;
		if (res == 0 || (uint64_t)res > left)
			return finish(r, -EIO); /* end of file: it shrank under us */
		r->priv.done += (uint64_t)res;
		iov_advance(r, (uint64_t)res);
		if (r->priv.done == r->priv.total)
			return finish(r, (int64_t)r->priv.total);
		return false;
	case DISK_OP_FLUSH:
		return finish(r, res < 0 ? res : 0);
	case DISK_OP_DISCARD:
		return finish(r, res < 0 && !unsupported(res) ? res : 0);
	case DISK_OP_WRITE_ZEROES:
		if (r->priv.stage != WZ_WRITE) {
			if (res >= 0)
				return finish(r, 0);
			if (!unsupported(res))
				return finish(r, res);
			r->priv.stage++;
			r->priv.done = 0;
			return false;
		}
		if (res < 0)
			return finish(r, res);
		left = r->len - r->priv.done;
		if (res == 0 || (uint64_t)res > left)
			return finish(r, -EIO);
		r->priv.done += (uint64_t)res;
		if (r->priv.done == r->len)
			return finish(r, 0);
		return false;
	}
	return finish(r, -EINVAL);
}

/* ---- Thread pool engine ---- */

static int64_t step_run(struct disk *d, const struct step *s)
{
	ssize_t n = -1;

	switch (s->kind) {
	case STEP_READV:
		n = preadv(s->fd, s->iov, (int)s->iovcnt, (off_t)s->offset);
		break;
	case STEP_WRITEV:
		n = pwritev(s->fd, s->iov, (int)s->iovcnt, (off_t)s->offset);
		break;
	case STEP_FSYNC:
		n = fdatasync(s->fd);
		break;
	case STEP_FALLOCATE:
		n = fallocate(s->fd, s->mode, (off_t)s->offset, (off_t)s->len);
		break;
	}
	return n < 0 ? -errno : n;
}

static void *pool_main(void *arg)
{
	struct disk *d = arg;
	struct disk_req *r;
	struct step s;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		while (!d->stop && !d->queue.head)
			pthread_cond_wait(&d->cond, &d->lock);
		if (d->stop)
			break;
		r = list_pop(&d->queue);
		pthread_mutex_unlock(&d->lock);

		do {
			step_next(d, r, &s);
		} while (!step_done(r, step_run(d, &s)));

		pthread_mutex_lock(&d->lock);
		list_add(&d->pool_done, r);
		kick(d);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* Start the threads at the first request, so none exists before a sandbox forks. */
static int pool_start(struct disk *d)
{
	sigset_t all, old;

	if (d->nthreads)
		return 0;
	/* The workers take no signals: they belong to the VM's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	while (d->nthreads < POOL_THREADS &&
	       pthread_create(&d->threads[d->nthreads], NULL, pool_main, d) == 0)
		d->nthreads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return d->nthreads ? 0 : -EAGAIN;
}

static void pool_submit(struct disk *d, struct disk_req *r)
{
	pthread_mutex_lock(&d->lock);
	list_add(&d->queue, r);
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static void pool_stop(struct disk *d)
{
	unsigned int i;

	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	/* A thread finishes the request it runs; queued ones never start. */
	for (i = 0; i < d->nthreads; i++)
		pthread_join(d->threads[i], NULL);
	d->nthreads = 0;
}

/* ---- io_uring engine ---- */

#if HAVE_LIBURING
static bool uring_init(struct disk *d)
{
	static const int ops[] = {IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC,
				  IORING_OP_FALLOCATE};
	struct io_uring_probe *p;
	bool ok;
	size_t i;

	if (io_uring_queue_init(URING_ENTRIES, &d->ring, 0) < 0)
		return false; /* ENOSYS, EPERM (seccomp, sysctl), ENOMEM */
	p = io_uring_get_probe_ring(&d->ring);
	ok = p != NULL;
	for (i = 0; ok && i < sizeof(ops) / sizeof(ops[0]); i++)
		ok = io_uring_opcode_supported(p, ops[i]);
	if (p)
		io_uring_free_probe(p);
	if (ok)
		ok = io_uring_register_eventfd(&d->ring, d->efd) == 0;
	if (!ok)
		io_uring_queue_exit(&d->ring);
	return ok;
}

static void uring_prep(struct disk *d, struct disk_req *r, struct io_uring_sqe *sqe)
{
	struct step s;

	step_next(d, r, &s);
	switch (s.kind) {
	case STEP_READV:
		io_uring_prep_readv(sqe, s.fd, s.iov, s.iovcnt, s.offset);
		break;
	case STEP_WRITEV:
		io_uring_prep_writev(sqe, s.fd, s.iov, s.iovcnt, s.offset);
		break;
	case STEP_FSYNC:
		io_uring_prep_fsync(sqe, s.fd, IORING_FSYNC_DATASYNC);
		break;
	case STEP_FALLOCATE:
		io_uring_prep_fallocate(sqe, s.fd, s.mode, (off_t)s.offset, (off_t)s.len);
		break;
	}
	io_uring_sqe_set_data(sqe, r);
	d->ring_busy++;
}

/* Fill the ring from the waiting list and hand the SQEs to the kernel. */
static void uring_push(struct disk *d)
{
	struct io_uring_sqe *sqe;
	int ret;

	while (d->waiting.head && d->ring_busy < URING_ENTRIES) {
		sqe = io_uring_get_sqe(&d->ring);
		if (!sqe)
			break;
		uring_prep(d, list_pop(&d->waiting), sqe);
	}
	if (!io_uring_sq_ready(&d->ring))
		return;
	ret = io_uring_submit(&d->ring);
	/*
	 * Out of kernel memory or a full completion queue: the SQEs stay in
	 * the ring; make the owner call disk_complete() to try again.
	 */
	if (ret == -EAGAIN || ret == -EBUSY || ret == -EINTR)
		kick(d);
}

static void uring_reap(struct disk *d)
{
	struct io_uring_cqe *cqe;
	struct disk_req *r;
	int res;

	while (io_uring_peek_cqe(&d->ring, &cqe) == 0) {
		r = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&d->ring, cqe);
		d->ring_busy--;
		if (step_done(r, res))
			list_add(&d->finished, r);
		else
			list_add(&d->waiting, r); /* the next step */
	}
	uring_push(d);
}

/* Wait for every SQE given to the kernel; drop the requests. */
static void uring_stop(struct disk *d)
{
	struct io_uring_cqe *cqe;
	int ret;

	while (d->ring_busy) {
		ret = io_uring_submit_and_wait(&d->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			break;
		while (io_uring_peek_cqe(&d->ring, &cqe) == 0) {
			io_uring_cqe_seen(&d->ring, cqe);
			d->ring_busy--;
		}
	}
	io_uring_queue_exit(&d->ring);
}
#endif

/* ---- Raw format ---- */

static int engine_submit(struct disk *d, struct disk_req *r)
{
#if HAVE_LIBURING
	if (d->engine == ENGINE_URING) {
		list_add(&d->waiting, r);
		uring_push(d);
		return 0;
	}
#endif
	pool_submit(d, r);
	return 0;
}

static const struct image_format raw_format = {
	.name = "raw",
	.submit = engine_submit,
};

static int qcow2_format_submit(struct disk *d, struct disk_req *r)
{
	return qcow2_submit(d->qcow2, r);
}

static const struct image_format qcow2_format = {
	.name = "qcow2",
	.submit = qcow2_format_submit,
};

/* ---- Interface for image formats ---- */

int disk_engine_submit(struct disk *d, struct disk_req *r, int fd)
{
	unsigned int i;
	int ret;

	if (d->engine == ENGINE_THREADS) {
		ret = pool_start(d);
		if (ret < 0)
			return ret;
	}
	r->priv.next = NULL;
	r->priv.done = 0;
	r->priv.iov_idx = 0;
	r->priv.stage = WZ_WRITE;
	r->priv.internal = true;
	r->priv.fd = fd < 0 ? d->fd : fd;
	r->priv.total = 0;
	for (i = 0; i < r->iovcnt; i++)
		r->priv.total += r->iov[i].iov_len;
	r->result = 0;
	return engine_submit(d, r);
}

/* Count @r in (or out of) the WRITEs of the first bytes in flight. */
static void head_count(struct disk *d, const struct disk_req *r, bool in)
{
	unsigned int *n = r->priv.head == HEAD_WHOLE  ? &d->head_whole
			  : r->priv.head == HEAD_PART ? &d->head_part
						      : NULL;

	if (n)
		*n = in ? *n + 1 : *n - 1;
}

static void req_finish(struct disk *d, struct disk_req *r)
{
	head_count(d, r, false);
	d->inflight--;
	d->ncompleted++;
	r->done(r);
}

void disk_req_finish(struct disk *d, struct disk_req *r)
{
	req_finish(d, r);
}

void disk_req_finish_async(struct disk *d, struct disk_req *r)
{
	pthread_mutex_lock(&d->lock);
	list_add(&d->pool_done, r);
	kick(d);
	pthread_mutex_unlock(&d->lock);
}

/* ---- Generic interface ---- */

static bool range_ok(const struct disk *d, uint64_t off, uint64_t len)
{
	return off <= d->size && len <= d->size - off;
}

/*
 * A raw image whose format was detected must never come to start with the
 * qcow2 magic: the next detection would take it for qcow2 and follow the
 * backing file name the guest wrote (any host file). So a WRITE of a
 * writable probed raw disk that touches the first QCOW2_MAGIC_LEN bytes is
 * checked against what they will hold afterwards (as QEMU does for probed
 * raw images). WRITE_ZEROES and DISCARD only ever leave zeros or the old
 * bytes, and the magic has no zero byte: they cannot make it.
 *
 * A WRITE covering all the bytes decides them alone; one covering part of
 * them is merged with the bytes in the file. With WRITEs in flight the
 * outcome depends on the order they land in, so a partial one is refused
 * while any other WRITE of these bytes is in flight, and any is refused
 * while a partial one is. (virtio-blk requests are whole sectors: guests
 * never write part of them.)
 *
 * Returns 0 and sets r->priv.head (HEAD_NONE, HEAD_WHOLE or HEAD_PART), or
 * -EPERM (refused), -EIO (the first bytes could not be read).
 */
static int head_check(struct disk *d, struct disk_req *r, uint64_t total)
{
	uint8_t head[QCOW2_MAGIC_LEN] = {0};
	uint64_t end = r->offset + total, pos = 0, i;
	unsigned int k;
	ssize_t n;

	if (!d->probed_raw || r->op != DISK_OP_WRITE || r->offset >= QCOW2_MAGIC_LEN ||
	    total == 0 || d->size < QCOW2_MAGIC_LEN)
		return 0;
	if (d->head_part)
		return -EPERM;
	if (r->offset == 0 && end >= QCOW2_MAGIC_LEN) {
		r->priv.head = HEAD_WHOLE;
	} else {
		if (d->head_whole)
			return -EPERM;
		r->priv.head = HEAD_PART;
		n = pread(d->fd, head, sizeof(head), 0);
		if (n != (ssize_t)sizeof(head))
			return -EIO;
	}
	/* The request's bytes over [offset, min(end, 4)). */
	for (k = 0; k < r->iovcnt && r->offset + pos < QCOW2_MAGIC_LEN; k++) {
		for (i = 0; i < r->iov[k].iov_len && r->offset + pos < QCOW2_MAGIC_LEN; i++, pos++)
			head[r->offset + pos] = ((const uint8_t *)r->iov[k].iov_base)[i];
	}
	return qcow2_probe(head, sizeof(head)) ? -EPERM : 0;
}

int disk_submit(struct disk *d, struct disk_req *r)
{
	uint64_t total = 0;
	unsigned int i;
	int ret;

	if (!r->done || (r->flags & ~DISK_REQ_F_UNMAP))
		return -EINVAL;
	switch (r->op) {
	case DISK_OP_READ:
	case DISK_OP_WRITE:
		if (r->op == DISK_OP_WRITE && d->read_only)
			return -EROFS;
		if (r->iovcnt > DISK_MAX_IOV || (r->iovcnt && !r->iov))
			return -EINVAL;
		for (i = 0; i < r->iovcnt; i++) {
			if (r->iov[i].iov_len > UINT64_MAX - total)
				return -EINVAL;
			total += r->iov[i].iov_len;
		}
		break;
	case DISK_OP_FLUSH:
		break;
	case DISK_OP_DISCARD:
	case DISK_OP_WRITE_ZEROES:
		if (d->read_only)
			return -EROFS;
		total = r->len;
		break;
	default:
		return -EINVAL;
	}
	if (r->op != DISK_OP_FLUSH && !range_ok(d, r->offset, total))
		return -EINVAL;
	if (d->engine == ENGINE_THREADS && d->fmt == &raw_format) {
		ret = pool_start(d);
		if (ret < 0)
			return ret;
	}

	memset(&r->priv, 0, sizeof(r->priv));
	ret = head_check(d, r, total);
	if (ret < 0)
		return ret;
	r->priv.fd = d->fd;
	r->priv.total = total;
	r->priv.stage = r->flags & DISK_REQ_F_UNMAP ? WZ_PUNCH : WZ_ZERO_RANGE;
	r->result = 0;
	d->inflight++;
	head_count(d, r, true);
	if (total == 0 && r->op != DISK_OP_FLUSH) {
		/* Nothing to move: finish without a system call. */
		list_add(&d->finished, r);
		kick(d);
		return 0;
	}
	ret = d->fmt->submit(d, r);
	if (ret < 0) {
		d->inflight--;
		head_count(d, r, false);
	}
	return ret;
}

unsigned int disk_complete(struct disk *d)
{
	struct req_list done = {NULL, NULL};
	unsigned int before = d->ncompleted;
	struct disk_req *r;
	uint64_t v;
	ssize_t rd;

	/* Clear the eventfd first: anything finishing later sets it again. */
	rd = read(d->efd, &v, sizeof(v));
	(void)rd;
#if HAVE_LIBURING
	if (d->engine == ENGINE_URING)
		uring_reap(d);
#endif
	if ((d->engine == ENGINE_THREADS && d->nthreads) || d->qcow2) {
		pthread_mutex_lock(&d->lock);
		done = d->pool_done;
		d->pool_done.head = d->pool_done.tail = NULL;
		pthread_mutex_unlock(&d->lock);
	}
	/* Take the lists whole: a done() that submits must not extend them under us. */
	if (d->finished.head) {
		if (done.tail)
			done.tail->priv.next = d->finished.head;
		else
			done.head = d->finished.head;
		done.tail = d->finished.tail;
		d->finished.head = d->finished.tail = NULL;
	}
	while ((r = list_pop(&done))) {
		if (r->priv.internal)
			r->done(r); /* the format's: it finishes its owner's request */
		else
			req_finish(d, r);
	}
	return d->ncompleted - before;
}

void disk_wait(struct disk *d)
{
	struct pollfd p = {.fd = d->efd, .events = POLLIN};

	while (d->inflight) {
		if (disk_complete(d) == 0 && d->inflight)
			poll(&p, 1, -1);
	}
}

unsigned int disk_inflight(const struct disk *d)
{
	return d->inflight;
}

int disk_event_fd(const struct disk *d)
{
	return d->efd;
}

uint64_t disk_size(const struct disk *d)
{
	return d->size;
}

bool disk_read_only(const struct disk *d)
{
	return d->read_only;
}

const char *disk_engine(const struct disk *d)
{
	return d->engine == ENGINE_URING ? "io_uring" : "threads";
}

const char *disk_format_name(const struct disk *d)
{
	return d->fmt->name;
}

int disk_format_parse(const char *name, enum disk_format *out)
{
	if (!name || !*name || !strcmp(name, "detect"))
		*out = DISK_FORMAT_DETECT;
	else if (!strcmp(name, "raw"))
		*out = DISK_FORMAT_RAW;
	else if (!strcmp(name, "qcow2"))
		*out = DISK_FORMAT_QCOW2;
	else
		return -EINVAL;
	return 0;
}

/* Open @path without blocking on a FIFO and without taking a terminal. */
static int open_image(const char *path, bool ro, uint64_t *size, struct vmm_err *err)
{
	struct flock lk = {.l_whence = SEEK_SET};
	struct stat st;
	int fd, fl, e;

	fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		e = errno;
		if (e == EISDIR)
			return err_set(err, e, "disk %s is a directory", path);
		return err_set(err, e, "cannot open disk %s: %s", path, strerror(e));
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		return err_set(err, e, "cannot stat disk %s: %s", path, strerror(e));
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return err_set(err, EISDIR, "disk %s is a directory", path);
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		return err_set(err, EINVAL, "disk %s is not a regular file or block device", path);
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		e = errno;
		close(fd);
		return err_set(err, e, "cannot set flags of disk %s: %s", path, strerror(e));
	}

	lk.l_type = ro ? F_RDLCK : F_WRLCK;
	if (fcntl(fd, F_OFD_SETLK, &lk) < 0) {
		e = errno;
		close(fd);
		if (e == EAGAIN || e == EACCES)
			return err_set(err, EBUSY, "disk %s is in use by another process (locked)",
				       path);
		return err_set(err, e, "cannot lock disk %s: %s", path, strerror(e));
	}

	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0) {
			e = errno;
			close(fd);
			return err_set(err, e, "cannot get the size of disk %s: %s", path,
				       strerror(e));
		}
	} else {
		*size = (uint64_t)st.st_size;
	}
	return fd;
}

int disk_open_opts(const char *path, const struct disk_opts *o, struct disk **out,
		   struct vmm_err *err)
{
	unsigned int flags = o->flags;
	bool ro = flags & DISK_OPEN_READ_ONLY;
	enum disk_format format = o->format;
	struct qcow2_opts qo = {0};
	struct disk *d;
	int e;

	*out = NULL;
	if (flags & ~(DISK_OPEN_READ_ONLY | DISK_OPEN_THREAD_POOL))
		return err_set(err, EINVAL, "disk %s: unknown open flags %#x", path ? path : "",
			       flags);
	if (format != DISK_FORMAT_DETECT && format != DISK_FORMAT_RAW &&
	    format != DISK_FORMAT_QCOW2)
		return err_set(err, EINVAL, "disk %s: unknown format %d", path ? path : "",
			       (int)format);
	if (!path || !*path)
		return err_set(err, EINVAL, "disk path is empty");
	d = calloc(1, sizeof(*d));
	if (!d)
		return err_set(err, ENOMEM, "disk %s: out of memory", path);
	d->read_only = ro;
	d->fmt = &raw_format;
	d->efd = -1;
	d->fd = open_image(path, ro, &d->size, err);
	if (d->fd < 0) {
		e = -d->fd;
		free(d);
		return -e;
	}
	if (format == DISK_FORMAT_DETECT) {
		format = qcow2_probe_fd(d->fd) ? DISK_FORMAT_QCOW2 : DISK_FORMAT_RAW;
		d->probed_raw = format == DISK_FORMAT_RAW && !ro;
	}
	if (format == DISK_FORMAT_QCOW2) {
		qo.read_only = ro;
		qo.cache_bytes = o->cache_bytes;
		e = -qcow2_open(d->fd, path, &qo, &d->qcow2, err);
		if (e) {
			close(d->fd);
			free(d);
			return -e;
		}
		d->fmt = &qcow2_format;
		d->size = qcow2_size(d->qcow2);
	}
	d->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->efd < 0) {
		e = errno;
		goto fail;
	}
	if (!ro) {
		d->zero_buf = calloc(1, ZERO_BUF_SIZE);
		if (!d->zero_buf) {
			e = ENOMEM;
			goto fail;
		}
	}
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	d->engine = ENGINE_THREADS;
#if HAVE_LIBURING
	if (!(flags & DISK_OPEN_THREAD_POOL) && uring_init(d))
		d->engine = ENGINE_URING;
#endif
	if (d->qcow2)
		qcow2_attach(d->qcow2, d);
	*out = d;
	return 0;

fail:
	free(d->zero_buf);
	if (d->efd >= 0)
		close(d->efd);
	if (d->qcow2)
		qcow2_close(d->qcow2);
	close(d->fd);
	free(d);
	return err_set(err, e, "disk %s: %s", path, strerror(e));
}

int disk_fds(const struct disk *d, int *fds, int max)
{
	int n = 0;

	if (n < max)
		fds[n] = d->fd;
	n++;
	if (n < max)
		fds[n] = d->efd;
	n++;
#if HAVE_LIBURING
	if (d->engine == ENGINE_URING) {
		if (n < max)
			fds[n] = d->ring.ring_fd;
		n++;
	}
#endif
	if (d->qcow2)
		n += qcow2_fds(d->qcow2, n < max ? fds + n : NULL, n < max ? max - n : 0);
	return n;
}

int disk_open_flags(const char *path, unsigned int flags, struct disk **out, struct vmm_err *err)
{
	struct disk_opts o = {.flags = flags};

	return disk_open_opts(path, &o, out, err);
}

int disk_open(const char *path, bool read_only, struct disk **out, struct vmm_err *err)
{
	return disk_open_flags(path, read_only ? DISK_OPEN_READ_ONLY : 0, out, err);
}

void disk_close(struct disk *d)
{
	if (!d)
		return;
	/* qcow2: its metadata thread first (it may wait for engine requests), then the engine. */
	if (d->qcow2)
		qcow2_stop(d->qcow2);
#if HAVE_LIBURING
	if (d->engine == ENGINE_URING)
		uring_stop(d);
#endif
	if (d->engine == ENGINE_THREADS)
		pool_stop(d);
	/* Nothing runs now: qcow2 writes its metadata back and syncs. */
	if (d->qcow2)
		qcow2_close(d->qcow2);
	else if (!d->read_only)
		fdatasync(d->fd); /* what the guest wrote reaches stable storage; nobody to tell */
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	close(d->efd);
	close(d->fd); /* releases the lock */
	free(d->zero_buf);
	free(d);
}
