/* virtio-rng: a worker thread answers each request chain with getrandom(2) bytes. */
#include "virtio_rng.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#define RNG_QUEUE_SIZE 256
/* Interrupt at least this often while draining a long burst of requests. */
#define RNG_IRQ_BATCH 64

enum { EV_KICK, EV_STOP };

struct virtio_rng {
	struct virtio_activation act; /* valid while running */
	pthread_t thread;
	bool running;
	bool stop;   /* atomic: reset() asks the worker to leave */
	int stop_fd; /* eventfd that wakes the worker for stop */
	int epoll_fd;
	struct virtq_chain chain;	     /* worker only */
	uint8_t buf[VIRTIO_RNG_MAX_REQUEST]; /* worker only */
};

static uint64_t rng_features(void *dev)
{
	return 0;
}

/* No config space: the transport never calls these with len > 0. */
static void rng_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	if (len)
		memset(data, 0, len);
}

static void rng_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
}

static void drain_eventfd(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == sizeof(v))
		;
}

/* Fill the chain's writable buffers (up to the cap); returns the bytes written. */
static uint32_t rng_fill(struct virtio_rng *r, struct virtq *q)
{
	size_t want = r->chain.write_len < sizeof(r->buf) ? r->chain.write_len : sizeof(r->buf);
	size_t got = 0;

	while (got < want) {
		ssize_t n = getrandom(r->buf + got, want - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		got += (size_t)n;
	}
	return (uint32_t)virtq_chain_write(q, &r->chain, 0, r->buf, got);
}

/* Serve every available chain. Returns 0, or -EIO when the ring is broken. */
static int rng_serve(struct virtio_rng *r)
{
	struct virtq *q = r->act.queues[0];
	unsigned int pushed = 0;
	int ret = 0;

	for (;;) {
		virtq_set_notify(q, false);
		while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
			ret = virtq_pop(q, &r->chain);
			if (ret <= 0)
				break;
			ret = 0;
			virtq_push(q, r->chain.head, rng_fill(r, q));
			if (++pushed % RNG_IRQ_BATCH == 0)
				virtio_queue_interrupt(&r->act, 0);
		}
		if (ret < 0 || __atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
			break;
		/* Re-enable notifications, then look again to close the race with the guest. */
		virtq_set_notify(q, true);
		if (!virtq_has_avail(q))
			break;
	}
	if (pushed % RNG_IRQ_BATCH)
		virtio_queue_interrupt(&r->act, 0);
	return ret;
}

static void *rng_worker(void *arg)
{
	struct virtio_rng *r = arg;
	struct epoll_event ev[2];
	bool broken = false;
	bool pending = true; /* look at the ring once at start, kick or not */

	/* Named from inside: naming another thread opens /proc, which a sandbox forbids. */
	pthread_setname_np(pthread_self(), "virtio-rng");
	for (;;) {
		int n;

		if (pending && !broken && rng_serve(r) < 0) {
			/* Stop listening to the guest; only reset() wakes us now. */
			broken = true;
			epoll_ctl(r->epoll_fd, EPOLL_CTL_DEL, r->act.kick_fd[0], NULL);
			if (r->act.needs_reset)
				r->act.needs_reset(r->act.ctx);
		}
		pending = false;

		n = epoll_wait(r->epoll_fd, ev, 2, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			uint64_t v;

			if (ev[i].data.u32 == EV_STOP)
				return NULL;
			/*
			 * One read clears the count. The transport's fd may be
			 * blocking, so read only what epoll reported readable.
			 */
			if (read(r->act.kick_fd[0], &v, sizeof(v)) < 0 && errno != EAGAIN &&
			    errno != EINTR)
				return NULL;
			pending = true;
		}
	}
}

static int rng_activate(void *dev, const struct virtio_activation *act)
{
	struct virtio_rng *r = dev;
	struct epoll_event ev = {.events = EPOLLIN};
	sigset_t all, old;
	int ret;

	if (r->running)
		return -EBUSY;
	if (act->nqueues < 1 || !act->queues[0] || act->kick_fd[0] < 0 || act->call_fd[0] < 0)
		return -EINVAL;
	r->act = *act;
	r->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epoll_fd < 0)
		return -errno;
	ev.data.u32 = EV_KICK;
	if (epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, act->kick_fd[0], &ev) < 0)
		goto fail_errno;
	ev.data.u32 = EV_STOP;
	if (epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, r->stop_fd, &ev) < 0)
		goto fail_errno;
	drain_eventfd(r->stop_fd);
	__atomic_store_n(&r->stop, false, __ATOMIC_RELEASE);

	/* The worker takes no signals: they belong to the vCPU and main threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&r->thread, NULL, rng_worker, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		close(r->epoll_fd);
		r->epoll_fd = -1;
		return -ret;
	}
	r->running = true;
	return 0;

fail_errno:
	ret = -errno;
	close(r->epoll_fd);
	r->epoll_fd = -1;
	return ret;
}

static void rng_reset(void *dev)
{
	struct virtio_rng *r = dev;
	uint64_t one = 1;

	if (!r->running)
		return;
	__atomic_store_n(&r->stop, true, __ATOMIC_RELEASE);
	/* The counter cannot be near overflow: only reset() writes it, once. */
	while (write(r->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(r->thread, NULL);
	close(r->epoll_fd);
	r->epoll_fd = -1;
	drain_eventfd(r->stop_fd);
	memset(&r->act, 0, sizeof(r->act));
	r->running = false;
}

static void rng_destroy(void *dev)
{
	struct virtio_rng *r = dev;

	if (!r)
		return;
	rng_reset(r);
	close(r->stop_fd);
	free(r);
}

/* For the sandbox: the stop eventfd (the queue's fds come with activate()). */
static int rng_keep_fds(void *dev, int *fds, int max)
{
	struct virtio_rng *r = dev;

	if (max >= 1)
		fds[0] = r->stop_fd;
	return 1;
}

static const struct virtio_device_ops rng_ops = {
	.name = "virtio-rng",
	.device_id = VIRTIO_ID_RNG,
	.nqueues = 1,
	.queue_max = RNG_QUEUE_SIZE,
	.config_size = 0,
	.features = rng_features,
	.config_read = rng_config_read,
	.config_write = rng_config_write,
	.activate = rng_activate,
	.reset = rng_reset,
	.destroy = rng_destroy,
	.keep_fds = rng_keep_fds,
};

int virtio_rng_create(struct virtio_device *out, struct vmm_err *err)
{
	struct virtio_rng *r = calloc(1, sizeof(*r));

	if (!r)
		return err_set(err, ENOMEM, "virtio-rng: out of memory");
	r->epoll_fd = -1;
	r->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->stop_fd < 0) {
		int e = errno;

		free(r);
		return err_set(err, e, "virtio-rng: eventfd: %s", strerror(e));
	}
	out->ops = &rng_ops;
	out->dev = r;
	return 0;
}
