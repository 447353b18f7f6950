/* virtio-balloon: a worker returns inflated guest pages to the host; the host sets the target. */
#include "virtio_balloon.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define BALLOON_QUEUE_SIZE 256
#define BALLOON_NQUEUES	   2
/* Interrupt at least this often while draining a long burst of chains. */
#define BALLOON_IRQ_BATCH 64
/* PFNs copied out of a chain at a time (Linux sends at most 256 per chain). */
#define BALLOON_PFN_BATCH 256

enum { EV_INFLATE = VIRTIO_BALLOON_Q_INFLATE, EV_DEFLATE = VIRTIO_BALLOON_Q_DEFLATE, EV_STOP };

/*
 * What the host and the driver see, in a MAP_SHARED page: when the device
 * runs sandboxed in a child process (lib/virtio/proxy.c), the VMM's handle
 * and the child's copy share it. Atomics only: a lock in shared memory would
 * let a compromised child block the VMM.
 */
struct balloon_shared {
	uint32_t num_pages; /* config: the host's target */
	uint32_t actual;    /* config: what the driver reports */
	uint64_t inflated, deflated, rejected;
};

struct virtio_balloon {
	const struct guest_mem *mem;
	struct balloon_shared *sh;

	/* The host's notifier, under lock. */
	pthread_mutex_t lock;
	void (*notify)(void *ctx);
	void *notify_ctx;

	bool stop; /* atomic: reset() asks the worker to leave */

	/* Worker state, valid while running. */
	struct virtio_activation act;
	pthread_t thread;
	bool running;
	int stop_fd;
	int epoll_fd;
	struct virtq_chain chain;	  /* worker only */
	uint32_t pfns[BALLOON_PFN_BATCH]; /* worker only */
};

/* A run of guest pages contiguous in one RAM region, released in one go. */
struct page_run {
	const struct gm_region *r;
	uint8_t *host;
	uint64_t len;
};

static bool stopping(struct virtio_balloon *b)
{
	return __atomic_load_n(&b->stop, __ATOMIC_ACQUIRE);
}

static void count(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t balloon_features(void *dev)
{
	return 1ull << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
}

static void balloon_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	struct virtio_balloon *b = dev;
	uint8_t cfg[VIRTIO_BALLOON_CONFIG_SIZE];
	uint32_t v;

	if (off > sizeof(cfg) || len > sizeof(cfg) - off) {
		memset(data, 0, len);
		return;
	}
	v = htole32(__atomic_load_n(&b->sh->num_pages, __ATOMIC_ACQUIRE));
	memcpy(cfg + VIRTIO_BALLOON_CFG_NUM_PAGES, &v, 4);
	v = htole32(__atomic_load_n(&b->sh->actual, __ATOMIC_ACQUIRE));
	memcpy(cfg + VIRTIO_BALLOON_CFG_ACTUAL, &v, 4);
	memcpy(data, cfg + off, len);
}

/* Only `actual` is writable; bytes written to num_pages are ignored. Any width, any offset. */
static void balloon_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
	struct virtio_balloon *b = dev;
	uint8_t act[4];
	uint32_t old, v;

	if (off > VIRTIO_BALLOON_CONFIG_SIZE || len > VIRTIO_BALLOON_CONFIG_SIZE - off)
		return;
	old = __atomic_load_n(&b->sh->actual, __ATOMIC_ACQUIRE);
	do {
		v = htole32(old);
		memcpy(act, &v, 4);
		for (uint32_t i = 0; i < len; i++) {
			uint32_t pos = off + i;

			if (pos >= VIRTIO_BALLOON_CFG_ACTUAL)
				act[pos - VIRTIO_BALLOON_CFG_ACTUAL] = data[i];
		}
		memcpy(&v, act, 4);
		v = le32toh(v);
	} while (!__atomic_compare_exchange_n(&b->sh->actual, &old, v, false, __ATOMIC_ACQ_REL,
					      __ATOMIC_ACQUIRE));
}

static void drain_eventfd(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == sizeof(v))
		;
}

/* Give the pages of @run back to the host; afterwards they read as zero. */
static void release_run(struct virtio_balloon *b, struct page_run *run)
{
	const struct guest_mem *m = b->mem;
	bool aligned = !((uintptr_t)run->host & (VIRTIO_BALLOON_PAGE_SIZE - 1));

	if (!run->len)
		return;
	if (m->fd >= 0) {
		/*
		 * RAM is a shared memfd mapping: dropping the mapping alone
		 * would leave the pages in the page cache. Punching the fd
		 * frees them (and unmaps them from every mapping); the
		 * madvise is for mappings the punch does not reach.
		 */
		uint64_t fd_off = run->r->fd_offset + (uint64_t)(run->host - run->r->host);

		fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)fd_off,
			  (off_t)run->len);
		if (aligned)
			madvise(run->host, run->len, MADV_DONTNEED);
	} else if (!aligned || madvise(run->host, run->len, MADV_DONTNEED) < 0) {
		/* Test memory not aligned to host pages: zero it instead. */
		memset(run->host, 0, run->len);
	}
	count(&b->sh->inflated, run->len / VIRTIO_BALLOON_PAGE_SIZE);
	run->len = 0;
}

/* Add page @pfn to @run if it is guest RAM, releasing the run when the page does not extend it. */
static void inflate_pfn(struct virtio_balloon *b, struct page_run *run, uint32_t pfn)
{
	const struct guest_mem *m = b->mem;
	uint64_t gpa = (uint64_t)pfn << VIRTIO_BALLOON_PFN_SHIFT;
	uint8_t *host = gm_ptr(m, gpa, VIRTIO_BALLOON_PAGE_SIZE);
	const struct gm_region *r = NULL;

	if (host) {
		for (unsigned int i = 0; i < m->nregions && !r; i++) {
			const struct gm_region *c = &m->regions[i];

			if (host >= c->host && (uint64_t)(host - c->host) < c->size &&
			    c->size - (uint64_t)(host - c->host) >= VIRTIO_BALLOON_PAGE_SIZE)
				r = c;
		}
	}
	if (!r) {
		count(&b->sh->rejected, 1);
		return;
	}
	if (run->len && run->r == r && run->host + run->len == host) {
		run->len += VIRTIO_BALLOON_PAGE_SIZE;
		return;
	}
	release_run(b, run);
	run->r = r;
	run->host = host;
	run->len = VIRTIO_BALLOON_PAGE_SIZE;
}

/* Release every valid page named in the popped chain's readable bytes. */
static void inflate_chain(struct virtio_balloon *b, struct virtq *q)
{
	uint64_t n = b->chain.read_len / sizeof(uint32_t);
	struct page_run run = {0};

	for (uint64_t i = 0; i < n && !stopping(b); i += BALLOON_PFN_BATCH) {
		uint64_t want = n - i < BALLOON_PFN_BATCH ? n - i : BALLOON_PFN_BATCH;
		size_t got = virtq_chain_read(q, &b->chain, i * sizeof(uint32_t), b->pfns,
					      want * sizeof(uint32_t));

		for (size_t j = 0; j < got / sizeof(uint32_t); j++)
			inflate_pfn(b, &run, le32toh(b->pfns[j]));
		if (got < want * sizeof(uint32_t))
			break;
	}
	release_run(b, &run);
}

/* Serve every available chain of queue @qi. Returns 0, or -EIO when the ring is broken. */
static int balloon_serve(struct virtio_balloon *b, unsigned int qi)
{
	struct virtq *q = b->act.queues[qi];
	unsigned int pushed = 0;
	int ret = 0;

	for (;;) {
		virtq_set_notify(q, false);
		while (!stopping(b)) {
			ret = virtq_pop(q, &b->chain);
			if (ret <= 0)
				break;
			ret = 0;
			if (qi == VIRTIO_BALLOON_Q_INFLATE)
				inflate_chain(b, q);
			else
				count(&b->sh->deflated, b->chain.read_len / sizeof(uint32_t));
			virtq_push(q, b->chain.head, 0);
			if (++pushed % BALLOON_IRQ_BATCH == 0)
				virtio_queue_interrupt(&b->act, qi);
		}
		if (ret < 0 || stopping(b))
			break;
		/* Re-enable notifications, then look again to close the race with the guest. */
		virtq_set_notify(q, true);
		if (!virtq_has_avail(q))
			break;
	}
	if (pushed % BALLOON_IRQ_BATCH)
		virtio_queue_interrupt(&b->act, qi);
	return ret;
}

static bool has_queue(const struct virtio_balloon *b, unsigned int qi)
{
	return qi < b->act.nqueues && b->act.queues[qi];
}

static void *balloon_worker(void *arg)
{
	struct virtio_balloon *b = arg;
	struct epoll_event ev[BALLOON_NQUEUES + 1];
	bool pending[BALLOON_NQUEUES] = {true, true}; /* look at the rings once at start */
	bool broken = false;

	/* Named from inside: naming another thread opens /proc, which a sandbox forbids. */
	pthread_setname_np(pthread_self(), "virtio-balloon");
	for (;;) {
		int n;

		for (unsigned int qi = 0; qi < BALLOON_NQUEUES && !broken; qi++) {
			if (!pending[qi] || !has_queue(b, qi))
				continue;
			pending[qi] = false;
			if (balloon_serve(b, qi) < 0) {
				/* Stop listening to the guest; only reset() wakes us now. */
				broken = true;
				for (unsigned int k = 0; k < BALLOON_NQUEUES; k++)
					if (has_queue(b, k))
						epoll_ctl(b->epoll_fd, EPOLL_CTL_DEL,
							  b->act.kick_fd[k], NULL);
				if (b->act.needs_reset)
					b->act.needs_reset(b->act.ctx);
			}
		}

		n = epoll_wait(b->epoll_fd, ev, BALLOON_NQUEUES + 1, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			unsigned int qi = ev[i].data.u32;
			uint64_t v;

			if (qi == EV_STOP)
				return NULL;
			/* The transport's fd may be blocking: read only what epoll reported. */
			if (read(b->act.kick_fd[qi], &v, sizeof(v)) < 0 && errno != EAGAIN &&
			    errno != EINTR)
				return NULL;
			pending[qi] = true;
		}
	}
}

static int balloon_activate(void *dev, const struct virtio_activation *act)
{
	struct virtio_balloon *b = dev;
	struct epoll_event ev = {.events = EPOLLIN};
	sigset_t all, old;
	int ret;

	if (b->running)
		return -EBUSY;
	for (unsigned int qi = 0; qi < BALLOON_NQUEUES && qi < act->nqueues; qi++)
		if (act->queues[qi] && (act->kick_fd[qi] < 0 || act->call_fd[qi] < 0))
			return -EINVAL;
	b->act = *act;
	b->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (b->epoll_fd < 0)
		return -errno;
	for (unsigned int qi = 0; qi < BALLOON_NQUEUES; qi++) {
		if (!has_queue(b, qi))
			continue;
		ev.data.u32 = qi;
		if (epoll_ctl(b->epoll_fd, EPOLL_CTL_ADD, act->kick_fd[qi], &ev) < 0)
			goto fail_errno;
	}
	ev.data.u32 = EV_STOP;
	if (epoll_ctl(b->epoll_fd, EPOLL_CTL_ADD, b->stop_fd, &ev) < 0)
		goto fail_errno;
	drain_eventfd(b->stop_fd);
	__atomic_store_n(&b->stop, false, __ATOMIC_RELEASE);

	/* The worker takes no signals: they belong to the vCPU and main threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&b->thread, NULL, balloon_worker, b);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		close(b->epoll_fd);
		b->epoll_fd = -1;
		memset(&b->act, 0, sizeof(b->act));
		return -ret;
	}
	b->running = true;
	return 0;

fail_errno:
	ret = -errno;
	close(b->epoll_fd);
	b->epoll_fd = -1;
	memset(&b->act, 0, sizeof(b->act));
	return ret;
}

static void balloon_reset(void *dev)
{
	struct virtio_balloon *b = dev;
	uint64_t one = 1;

	/* A reset driver holds no pages in the balloon; the host's target stays. */
	__atomic_store_n(&b->sh->actual, 0, __ATOMIC_RELEASE);
	if (!b->running)
		return;
	__atomic_store_n(&b->stop, true, __ATOMIC_RELEASE);
	/* The counter cannot be near overflow: only reset() writes it, once per activation. */
	while (write(b->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(b->thread, NULL);
	close(b->epoll_fd);
	b->epoll_fd = -1;
	drain_eventfd(b->stop_fd);
	memset(&b->act, 0, sizeof(b->act));
	b->running = false;
}

static void balloon_destroy(void *dev)
{
	struct virtio_balloon *b = dev;

	if (!b)
		return;
	balloon_reset(b);
	close(b->stop_fd);
	pthread_mutex_destroy(&b->lock);
	munmap(b->sh, sizeof(*b->sh));
	free(b);
}

/* For the sandbox: the stop eventfd, and guest RAM's memfd that inflating punches. */
static int balloon_keep_fds(void *dev, int *fds, int max)
{
	struct virtio_balloon *b = dev;
	int n = 0;

	if (n < max)
		fds[n] = b->stop_fd;
	n++;
	if (b->mem->fd >= 0) {
		if (n < max)
			fds[n] = b->mem->fd;
		n++;
	}
	return n;
}

static const struct virtio_device_ops balloon_ops = {
	.name = "virtio-balloon",
	.device_id = VIRTIO_ID_BALLOON,
	.nqueues = BALLOON_NQUEUES,
	.queue_max = BALLOON_QUEUE_SIZE,
	.config_size = VIRTIO_BALLOON_CONFIG_SIZE,
	.features = balloon_features,
	.config_read = balloon_config_read,
	.config_write = balloon_config_write,
	.activate = balloon_activate,
	.reset = balloon_reset,
	.destroy = balloon_destroy,
	.keep_fds = balloon_keep_fds,
};

int virtio_balloon_create(const struct guest_mem *mem, struct virtio_device *out,
			  struct virtio_balloon **handle, struct vmm_err *err)
{
	struct virtio_balloon *b = calloc(1, sizeof(*b));
	int ret;

	if (!b)
		return err_set(err, ENOMEM, "virtio-balloon: out of memory");
	b->sh = mmap(NULL, sizeof(*b->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
		     0);
	if (b->sh == MAP_FAILED) {
		free(b);
		return err_set(err, ENOMEM, "virtio-balloon: out of memory");
	}
	ret = pthread_mutex_init(&b->lock, NULL);
	if (ret) {
		munmap(b->sh, sizeof(*b->sh));
		free(b);
		return err_set(err, ret, "virtio-balloon: mutex: %s", strerror(ret));
	}
	b->mem = mem;
	b->epoll_fd = -1;
	b->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->stop_fd < 0) {
		int e = errno;

		pthread_mutex_destroy(&b->lock);
		munmap(b->sh, sizeof(*b->sh));
		free(b);
		return err_set(err, e, "virtio-balloon: eventfd: %s", strerror(e));
	}
	out->ops = &balloon_ops;
	out->dev = b;
	if (handle)
		*handle = b;
	return 0;
}

void virtio_balloon_set_notify(struct virtio_balloon *b, void (*fn)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&b->lock);
	b->notify = fn;
	b->notify_ctx = ctx;
	pthread_mutex_unlock(&b->lock);
}

int virtio_balloon_set_target(struct virtio_balloon *b, uint64_t bytes)
{
	void (*fn)(void *ctx);
	void *ctx;

	if (bytes > b->mem->total)
		return -EINVAL;
	/* At most 2^32 - 1 pages: 16 TiB, more than guest RAM can be. */
	__atomic_store_n(&b->sh->num_pages,
			 (uint32_t)((bytes >> VIRTIO_BALLOON_PFN_SHIFT) > UINT32_MAX
					    ? UINT32_MAX
					    : bytes >> VIRTIO_BALLOON_PFN_SHIFT),
			 __ATOMIC_RELEASE);
	pthread_mutex_lock(&b->lock);
	fn = b->notify;
	ctx = b->notify_ctx;
	pthread_mutex_unlock(&b->lock);
	if (fn)
		fn(ctx);
	return 0;
}

uint64_t virtio_balloon_target(struct virtio_balloon *b)
{
	uint64_t pages;

	pages = __atomic_load_n(&b->sh->num_pages, __ATOMIC_ACQUIRE);
	return pages << VIRTIO_BALLOON_PFN_SHIFT;
}

uint64_t virtio_balloon_actual(struct virtio_balloon *b)
{
	uint64_t bytes;

	bytes = (uint64_t)__atomic_load_n(&b->sh->actual, __ATOMIC_ACQUIRE)
		<< VIRTIO_BALLOON_PFN_SHIFT;
	return bytes < b->mem->total ? bytes : b->mem->total;
}

void virtio_balloon_get_counters(struct virtio_balloon *b, struct virtio_balloon_counters *c)
{
	c->inflated = __atomic_load_n(&b->sh->inflated, __ATOMIC_RELAXED);
	c->deflated = __atomic_load_n(&b->sh->deflated, __ATOMIC_RELAXED);
	c->rejected = __atomic_load_n(&b->sh->rejected, __ATOMIC_RELAXED);
}
