/*
 * Virtio block device.
 *
 * One worker thread per active device. It pops chains, checks and parses
 * them, and turns IN/OUT/FLUSH/DISCARD/WRITE_ZEROES into asynchronous disk
 * requests whose iovecs point straight at the guest's buffers; GET_ID and
 * every malformed request complete at once. Disk completions come back on
 * the same thread through disk_complete(): the status byte is written, the
 * chain goes to the used ring, and one interrupt covers each batch.
 *
 * Every request holds a slot from a fixed pool of VIRTIO_BLK_MAX_INFLIGHT
 * (no allocation per request); when all are busy the worker stops popping
 * until one frees. A request's status byte is the last byte of its last
 * non-empty writable buffer, found once when it is popped.
 */
#include "virtio_blk.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define SECTOR_SHIFT 9
#define SECTOR_SIZE  (1u << SECTOR_SHIFT)
#define HDR_SIZE     16	  /* le32 type, le32 reserved, le64 sector */
#define SEG_SIZE     16	  /* le64 sector, le32 num_sectors, le32 flags */
#define ASYNC	     0xff /* not a status: the request went to the disk */

enum {
	EV_KICK,
	EV_DISK,
	EV_STOP,
};

struct blk_seg {
	uint64_t off, len; /* bytes */
	bool unmap;
};

struct virtio_blk;

struct blk_req {
	struct disk_req dr;
	struct virtio_blk *blk;
	struct blk_req *next_free;
	uint8_t *status; /* in guest RAM */
	uint32_t used;	 /* used length to report */
	uint16_t head;
	bool flushing;	   /* writethrough: the flush after the write runs */
	uint8_t nseg, seg; /* discard/write-zeroes segments, the one running */
	struct blk_seg segs[VIRTIO_BLK_DWZ_SEG_MAX];
	struct iovec iov[VIRTIO_BLK_SEG_MAX];
};

struct virtio_blk {
	struct disk *disk;
	bool read_only;
	uint64_t capacity; /* sectors */
	uint8_t id[VIRTIO_BLK_ID_BYTES];
	uint8_t config[VIRTIO_BLK_CONFIG_SIZE];

	/* Set by activate(), cleared by reset(). */
	bool active;
	pthread_t thread;
	int stop_fd, epoll_fd;
	struct virtio_activation act;
	struct virtq *q;
	bool writethrough, discard, write_zeroes;
	struct blk_req *slots;

	/* The worker's. */
	struct blk_req *free;
	bool broken, stopping, pushed;
	struct virtq_chain chain;
};

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static bool range_ok(const struct virtio_blk *b, uint64_t sector, uint64_t sectors)
{
	return sector <= b->capacity && sectors <= b->capacity - sector;
}

/* ---- Completion ---- */

static void blk_finish(struct virtio_blk *b, struct blk_req *r, uint8_t status)
{
	/* While stopping for a reset, the guest no longer waits for these. */
	if (!b->stopping) {
		*r->status = status;
		virtq_push(b->q, r->head, r->used);
		b->pushed = true;
	}
	r->next_free = b->free;
	b->free = r;
}

static void blk_disk_done(struct disk_req *dr);

static void blk_submit(struct virtio_blk *b, struct blk_req *r)
{
	r->dr.done = blk_disk_done;
	r->dr.opaque = r;
	if (disk_submit(b->disk, &r->dr) < 0)
		blk_finish(b, r, VIRTIO_BLK_S_IOERR);
}

static void seg_load(struct blk_req *r)
{
	const struct blk_seg *s = &r->segs[r->seg];

	r->dr.offset = s->off;
	r->dr.len = s->len;
	r->dr.flags = s->unmap ? DISK_REQ_F_UNMAP : 0;
}

static void blk_disk_done(struct disk_req *dr)
{
	struct blk_req *r = dr->opaque;
	struct virtio_blk *b = r->blk;

	if (dr->result < 0) {
		blk_finish(b, r, VIRTIO_BLK_S_IOERR);
		return;
	}
	if (b->stopping) {
		blk_finish(b, r, VIRTIO_BLK_S_OK); /* not pushed: start nothing new */
		return;
	}
	if (!r->flushing && r->seg + 1 < r->nseg) {
		r->seg++;
		seg_load(r);
		blk_submit(b, r);
		return;
	}
	if (b->writethrough && !r->flushing && dr->op != DISK_OP_READ && dr->op != DISK_OP_FLUSH) {
		r->flushing = true;
		memset(dr, 0, sizeof(*dr));
		dr->op = DISK_OP_FLUSH;
		blk_submit(b, r);
		return;
	}
	blk_finish(b, r, VIRTIO_BLK_S_OK);
}

/* ---- Request parsing ---- */

/* The last byte of the last non-empty writable buffer, or NULL. */
static uint8_t *status_byte(const struct virtio_blk *b, const struct virtq_chain *c)
{
	uint32_t i;

	for (i = c->nbufs; i > c->nread; i--) {
		const struct virtq_buf *v = &c->bufs[i - 1];

		if (v->len)
			return gm_ptr(b->q->mem, v->gpa + v->len - 1, 1);
	}
	return NULL;
}

/*
 * Point r->iov at @len bytes of bufs[first..end), after skipping @skip
 * bytes. Returns the iovec count, or -1 for more than VIRTIO_BLK_SEG_MAX
 * buffers (or a buffer outside RAM, which the virtqueue already excludes).
 */
static int map_bufs(const struct virtio_blk *b, struct blk_req *r, const struct virtq_chain *c,
		    uint32_t first, uint32_t end, uint64_t skip, uint64_t len)
{
	uint32_t i;
	int n = 0;

	for (i = first; i < end && len; i++) {
		uint64_t blen = c->bufs[i].len, take;
		void *p;

		if (skip >= blen) {
			skip -= blen;
			continue;
		}
		take = blen - skip < len ? blen - skip : len;
		p = gm_ptr(b->q->mem, c->bufs[i].gpa + skip, take);
		if (!p || n == VIRTIO_BLK_SEG_MAX)
			return -1;
		r->iov[n].iov_base = p;
		r->iov[n].iov_len = take;
		n++;
		len -= take;
		skip = 0;
	}
	return len ? -1 : n;
}

static uint8_t prep_rw(struct virtio_blk *b, struct blk_req *r, const struct virtq_chain *c,
		       bool in, uint64_t sector)
{
	uint64_t len;
	int n;

	if (!in && b->read_only)
		return VIRTIO_BLK_S_IOERR;
	/* IN: every writable byte but the status; OUT: every readable byte after the header. */
	len = in ? c->write_len - 1 : c->read_len - HDR_SIZE;
	if (len % SECTOR_SIZE || !range_ok(b, sector, len >> SECTOR_SHIFT))
		return VIRTIO_BLK_S_IOERR;
	if (!len)
		return VIRTIO_BLK_S_OK;
	if (in)
		n = map_bufs(b, r, c, c->nread, c->nbufs, 0, len);
	else
		n = map_bufs(b, r, c, 0, c->nread, HDR_SIZE, len);
	if (n < 0)
		return VIRTIO_BLK_S_IOERR;
	r->dr.op = in ? DISK_OP_READ : DISK_OP_WRITE;
	r->dr.offset = sector << SECTOR_SHIFT;
	r->dr.iov = r->iov;
	r->dr.iovcnt = (unsigned int)n;
	if (in)
		r->used = len + 1 > UINT32_MAX ? UINT32_MAX : (uint32_t)(len + 1);
	return ASYNC;
}

static uint8_t prep_dwz(struct virtio_blk *b, struct blk_req *r, const struct virtq_chain *c,
			bool discard)
{
	uint8_t raw[SEG_SIZE];
	uint64_t len, sector;
	uint32_t num, flags, i, nseg;

	if (b->read_only)
		return VIRTIO_BLK_S_IOERR;
	if (!(discard ? b->discard : b->write_zeroes))
		return VIRTIO_BLK_S_UNSUPP;
	len = c->read_len - HDR_SIZE;
	if (!len || len % SEG_SIZE || len / SEG_SIZE > VIRTIO_BLK_DWZ_SEG_MAX)
		return VIRTIO_BLK_S_IOERR;
	nseg = (uint32_t)(len / SEG_SIZE);
	/* Check every segment before touching the disk. */
	for (i = 0; i < nseg; i++) {
		if (virtq_chain_read(b->q, c, HDR_SIZE + (uint64_t)i * SEG_SIZE, raw, SEG_SIZE) !=
		    SEG_SIZE)
			return VIRTIO_BLK_S_IOERR;
		memcpy(&sector, raw, 8);
		memcpy(&num, raw + 8, 4);
		memcpy(&flags, raw + 12, 4);
		sector = le64toh(sector);
		num = le32toh(num);
		flags = le32toh(flags);
		if ((flags & ~VIRTIO_BLK_SEG_F_UNMAP) || (discard && flags))
			return VIRTIO_BLK_S_UNSUPP;
		if (num > VIRTIO_BLK_DWZ_SECTORS_MAX || !range_ok(b, sector, num))
			return VIRTIO_BLK_S_IOERR;
		if (!num)
			continue;
		r->segs[r->nseg].off = sector << SECTOR_SHIFT;
		r->segs[r->nseg].len = (uint64_t)num << SECTOR_SHIFT;
		r->segs[r->nseg].unmap = flags & VIRTIO_BLK_SEG_F_UNMAP;
		r->nseg++;
	}
	if (!r->nseg)
		return VIRTIO_BLK_S_OK;
	r->dr.op = discard ? DISK_OP_DISCARD : DISK_OP_WRITE_ZEROES;
	seg_load(r);
	return ASYNC;
}

static uint8_t get_id(struct virtio_blk *b, struct blk_req *r, const struct virtq_chain *c)
{
	uint64_t len = c->write_len - 1;
	size_t n = len < VIRTIO_BLK_ID_BYTES ? (size_t)len : VIRTIO_BLK_ID_BYTES;

	n = virtq_chain_write(b->q, c, 0, b->id, n);
	r->used = (uint32_t)n + 1;
	return VIRTIO_BLK_S_OK;
}

/* Start the request in b->chain; a free slot is guaranteed. */
static void blk_handle(struct virtio_blk *b)
{
	const struct virtq_chain *c = &b->chain;
	uint8_t hdr[HDR_SIZE], st;
	struct blk_req *r;
	uint64_t sector;
	uint32_t type;
	uint8_t *status;

	status = status_byte(b, c);
	if (!status) {
		/* Nowhere to put a status: return the chain untouched. */
		virtq_push(b->q, c->head, 0);
		b->pushed = true;
		return;
	}
	r = b->free;
	b->free = r->next_free;
	memset(&r->dr, 0, sizeof(r->dr));
	r->status = status;
	r->head = c->head;
	r->used = 1;
	r->flushing = false;
	r->nseg = r->seg = 0;

	if (c->read_len < HDR_SIZE || virtq_chain_read(b->q, c, 0, hdr, HDR_SIZE) != HDR_SIZE) {
		blk_finish(b, r, VIRTIO_BLK_S_IOERR);
		return;
	}
	memcpy(&type, hdr, 4);
	memcpy(&sector, hdr + 8, 8);
	type = le32toh(type);
	sector = le64toh(sector);

	switch (type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		st = prep_rw(b, r, c, type == VIRTIO_BLK_T_IN, sector);
		break;
	case VIRTIO_BLK_T_FLUSH:
		st = VIRTIO_BLK_S_OK; /* nothing to flush on a read-only disk */
		if (!b->read_only) {
			r->dr.op = DISK_OP_FLUSH;
			st = ASYNC;
		}
		break;
	case VIRTIO_BLK_T_GET_ID:
		st = get_id(b, r, c);
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		st = prep_dwz(b, r, c, type == VIRTIO_BLK_T_DISCARD);
		break;
	default:
		st = VIRTIO_BLK_S_UNSUPP;
		break;
	}
	if (st == ASYNC)
		blk_submit(b, r);
	else
		blk_finish(b, r, st);
}

/* ---- Worker ---- */

/* Pop and start chains while slots are free; follows virtq_set_notify()'s protocol. */
static void blk_process(struct virtio_blk *b)
{
	int ret;

	if (b->broken)
		return;
	virtq_set_notify(b->q, false);
	for (;;) {
		while (b->free) {
			ret = virtq_pop(b->q, &b->chain);
			if (ret < 0) {
				b->broken = true;
				if (b->act.needs_reset)
					b->act.needs_reset(b->act.ctx);
				return;
			}
			if (ret == 0)
				break;
			blk_handle(b);
		}
		if (!b->free)
			return; /* resumed when a request completes */
		virtq_set_notify(b->q, true);
		if (!virtq_has_avail(b->q))
			return;
		virtq_set_notify(b->q, false);
	}
}

static void *blk_worker(void *arg)
{
	struct virtio_blk *b = arg;
	struct epoll_event ev[4];
	uint64_t v;
	ssize_t rd = 0;
	int n, i;

	while (!b->stopping) {
		disk_complete(b->disk);
		blk_process(b);
		if (b->pushed) {
			b->pushed = false;
			virtio_queue_interrupt(&b->act, 0);
		}
		n = epoll_wait(b->epoll_fd, ev, 4, -1);
		if (n < 0 && errno != EINTR)
			break;
		for (i = 0; i < n; i++) {
			if (ev[i].data.u32 == EV_STOP)
				b->stopping = true;
			else if (ev[i].data.u32 == EV_KICK)
				rd = read(b->act.kick_fd[0], &v, sizeof(v));
		}
	}
	(void)rd;
	/* Let every request in flight finish before reset() returns. */
	b->stopping = true;
	disk_wait(b->disk);
	return NULL;
}

/* ---- Device ops ---- */

static uint64_t blk_features(void *dev)
{
	struct virtio_blk *b = dev;
	uint64_t f = 1ull << VIRTIO_BLK_F_SIZE_MAX | 1ull << VIRTIO_BLK_F_SEG_MAX |
		     1ull << VIRTIO_BLK_F_BLK_SIZE | 1ull << VIRTIO_BLK_F_FLUSH;

	if (b->read_only)
		f |= 1ull << VIRTIO_BLK_F_RO;
	else
		f |= 1ull << VIRTIO_BLK_F_DISCARD | 1ull << VIRTIO_BLK_F_WRITE_ZEROES;
	return f;
}

static void blk_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	struct virtio_blk *b = dev;

	if (off <= sizeof(b->config) && len <= sizeof(b->config) - off)
		memcpy(data, b->config + off, len);
	else
		memset(data, 0, len);
}

static void blk_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
	/* Nothing is writable: CONFIG_WCE is not offered. */
}

static int blk_activate(void *dev, const struct virtio_activation *act)
{
	struct virtio_blk *b = dev;
	struct epoll_event ev = {.events = EPOLLIN};
	unsigned int i, nslots;
	sigset_t all, old;
	int ret;

	if (b->active)
		return -EBUSY;
	if (act->nqueues < 1 || !act->queues[0] || act->kick_fd[0] < 0)
		return -EINVAL;
	b->act = *act;
	b->q = act->queues[0];
	b->writethrough = !(act->features & 1ull << VIRTIO_BLK_F_FLUSH);
	b->discard = !b->read_only && (act->features & 1ull << VIRTIO_BLK_F_DISCARD);
	b->write_zeroes = !b->read_only && (act->features & 1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	b->broken = b->stopping = b->pushed = false;

	nslots = b->q->size < VIRTIO_BLK_MAX_INFLIGHT ? b->q->size : VIRTIO_BLK_MAX_INFLIGHT;
	if (!nslots)
		nslots = 1;
	b->slots = calloc(nslots, sizeof(*b->slots));
	if (!b->slots)
		return -ENOMEM;
	b->free = NULL;
	for (i = nslots; i-- > 0;) {
		b->slots[i].blk = b;
		b->slots[i].next_free = b->free;
		b->free = &b->slots[i];
	}

	b->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	b->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (b->stop_fd < 0 || b->epoll_fd < 0)
		goto fail_errno;
	ev.data.u32 = EV_KICK;
	if (epoll_ctl(b->epoll_fd, EPOLL_CTL_ADD, act->kick_fd[0], &ev) < 0)
		goto fail_errno;
	ev.data.u32 = EV_DISK;
	if (epoll_ctl(b->epoll_fd, EPOLL_CTL_ADD, disk_event_fd(b->disk), &ev) < 0)
		goto fail_errno;
	ev.data.u32 = EV_STOP;
	if (epoll_ctl(b->epoll_fd, EPOLL_CTL_ADD, b->stop_fd, &ev) < 0)
		goto fail_errno;

	/* The worker takes no signals: they belong to the vCPU and main threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	ret = pthread_create(&b->thread, NULL, blk_worker, b);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		ret = -ret;
		goto fail;
	}
	b->active = true;
	return 0;

fail_errno:
	ret = -errno;
fail:
	if (b->epoll_fd >= 0)
		close(b->epoll_fd);
	if (b->stop_fd >= 0)
		close(b->stop_fd);
	free(b->slots);
	b->slots = NULL;
	return ret;
}

static void blk_reset(void *dev)
{
	struct virtio_blk *b = dev;
	uint64_t one = 1;
	ssize_t wr;

	if (!b->active)
		return;
	wr = write(b->stop_fd, &one, sizeof(one));
	(void)wr;
	pthread_join(b->thread, NULL);
	close(b->epoll_fd);
	close(b->stop_fd);
	b->epoll_fd = b->stop_fd = -1;
	free(b->slots);
	b->slots = NULL;
	b->free = NULL;
	b->q = NULL;
	b->active = false;
}

static void blk_destroy(void *dev)
{
	struct virtio_blk *b = dev;

	blk_reset(b);
	disk_close(b->disk);
	free(b);
}

/* For the sandbox: the disk's descriptors (the worker's eventfds are made by activate()). */
static int blk_keep_fds(void *dev, int *fds, int max)
{
	struct virtio_blk *b = dev;

	return disk_fds(b->disk, fds, max);
}

static const struct virtio_device_ops virtio_blk_ops = {
	.name = "virtio-blk",
	.device_id = VIRTIO_ID_BLOCK,
	.nqueues = 1,
	.queue_max = VIRTIO_BLK_QUEUE_MAX,
	.config_size = VIRTIO_BLK_CONFIG_SIZE,
	.features = blk_features,
	.config_read = blk_config_read,
	.config_write = blk_config_write,
	.activate = blk_activate,
	.reset = blk_reset,
	.destroy = blk_destroy,
	.keep_fds = blk_keep_fds,
};

int virtio_blk_create(struct disk *disk, const char *serial, struct virtio_device *out,
		      struct vmm_err *err)
{
	struct virtio_blk *b;
	uint64_t cap;

	if (!disk)
		return err_set(err, EINVAL, "virtio-blk: no disk");
	if (serial && strlen(serial) > VIRTIO_BLK_ID_BYTES) {
		disk_close(disk);
		return err_set(err, EINVAL, "virtio-blk serial \"%.32s\" is longer than %d bytes",
			       serial, VIRTIO_BLK_ID_BYTES);
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		disk_close(disk);
		return err_set(err, ENOMEM, "virtio-blk: out of memory");
	}
	b->disk = disk;
	b->read_only = disk_read_only(disk);
	b->capacity = disk_size(disk) >> SECTOR_SHIFT; /* a partial last sector is not exposed */
	b->stop_fd = b->epoll_fd = -1;
	if (serial)
		memcpy(b->id, serial, strlen(serial));

	cap = htole64(b->capacity);
	memcpy(b->config + VIRTIO_BLK_CFG_CAPACITY, &cap, sizeof(cap));
	put_le32(b->config + VIRTIO_BLK_CFG_SIZE_MAX, VIRTIO_BLK_SIZE_MAX);
	put_le32(b->config + VIRTIO_BLK_CFG_SEG_MAX, VIRTIO_BLK_SEG_MAX);
	put_le32(b->config + VIRTIO_BLK_CFG_BLK_SIZE, SECTOR_SIZE);
	if (!b->read_only) {
		put_le32(b->config + VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS,
			 VIRTIO_BLK_DWZ_SECTORS_MAX);
		put_le32(b->config + VIRTIO_BLK_CFG_MAX_DISCARD_SEG, VIRTIO_BLK_DWZ_SEG_MAX);
		put_le32(b->config + VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT,
			 VIRTIO_BLK_DISCARD_ALIGN);
		put_le32(b->config + VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS,
			 VIRTIO_BLK_DWZ_SECTORS_MAX);
		put_le32(b->config + VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG, VIRTIO_BLK_DWZ_SEG_MAX);
		b->config[VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP] = 1;
	}

	out->ops = &virtio_blk_ops;
	out->dev = b;
	return 0;
}
