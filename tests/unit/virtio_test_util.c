/* Test helper for virtio device models: fake guest RAM, a driver-side split virtqueue, eventfds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "virtio_test_util.h"

void vt_guest_init(struct vt_guest *g, uint64_t size)
{
	memset(g, 0, sizeof(*g));
	g->ram = calloc(1, size ? size : 1);
	assert_non_null(g->ram);
	g->size = size;
	gm_init_fake(&g->mem, g->ram, size);
}

void vt_guest_init_sparse(struct vt_guest *g, uint64_t size)
{
	void *p;

	memset(g, 0, sizeof(*g));
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	assert_true(p != MAP_FAILED);
	g->ram = p;
	g->size = size;
	g->kind = VT_RAM_SPARSE;
	gm_init_fake(&g->mem, g->ram, size);
}

void vt_guest_init_shared(struct vt_guest *g, uint64_t size)
{
	memset(g, 0, sizeof(*g));
	assert_int_equal(gm_init(&g->mem, size, NULL), 0);
	g->ram = g->mem.base;
	g->size = gm_low_end(&g->mem);
	g->kind = VT_RAM_SHARED;
}

void vt_guest_destroy(struct vt_guest *g)
{
	if (g->kind == VT_RAM_SHARED)
		gm_destroy(&g->mem);
	else if (g->kind == VT_RAM_SPARSE)
		munmap(g->ram, g->size);
	else
		free(g->ram);
	memset(g, 0, sizeof(*g));
}

uint64_t vt_alloc(struct vt_guest *g, uint64_t len, uint64_t align)
{
	uint64_t gpa;

	assert_true(align && !(align & (align - 1)));
	gpa = (g->next + align - 1) & ~(align - 1);
	assert_true(gpa >= g->next && gpa <= g->size && len <= g->size - gpa);
	g->next = gpa + len;
	memset(g->ram + gpa, 0, len);
	return gpa;
}

void *vt_host(struct vt_guest *g, uint64_t gpa, uint64_t len)
{
	assert_true(gpa <= g->size && len <= g->size - gpa);
	return g->ram + gpa;
}

bool vt_filled(const void *p, uint64_t len, uint8_t v)
{
	const uint8_t *b = p;

	for (uint64_t i = 0; i < len; i++)
		if (b[i] != v)
			return false;
	return true;
}

bool vt_guest_filled(struct vt_guest *g, uint64_t gpa, uint64_t len, uint8_t v)
{
	return vt_filled(vt_host(g, gpa, len), len, v);
}

uint64_t vt_ring_features(unsigned int flags)
{
	uint64_t f = 1ull << VIRTIO_F_VERSION_1;

	if (flags & VT_EVENT_IDX)
		f |= 1ull << VIRTIO_F_RING_EVENT_IDX;
	if (flags & VT_INDIRECT)
		f |= 1ull << VIRTIO_F_INDIRECT_DESC;
	return f;
}

static int queue_setup(struct vt_queue *vq, struct vt_guest *g, uint16_t size, uint64_t desc,
		       uint64_t avail, uint64_t used, unsigned int flags)
{
	memset(vq, 0, sizeof(*vq));
	vq->g = g;
	vq->size = size;
	vq->desc_gpa = desc;
	vq->avail_gpa = avail;
	vq->used_gpa = used;
	vq->q.size = size;
	vq->q.desc_gpa = desc;
	vq->q.avail_gpa = avail;
	vq->q.used_gpa = used;
	vq->q.event_idx = flags & VT_EVENT_IDX;
	vq->q.indirect = flags & VT_INDIRECT;
	vq->q.mem = &g->mem;
	return virtq_start(&vq->q);
}

void vt_queue_init(struct vt_queue *vq, struct vt_guest *g, uint16_t size, unsigned int flags)
{
	uint64_t desc, avail, used;

	assert_true(size > 0);
	desc = vt_alloc(g, 16ull * size, 16);
	avail = vt_alloc(g, 6 + 2ull * size, 2);
	used = vt_alloc(g, 6 + 8ull * size, 4);
	assert_int_equal(queue_setup(vq, g, size, desc, avail, used, flags), 0);
}

int vt_queue_init_at(struct vt_queue *vq, struct vt_guest *g, uint16_t size, uint64_t desc_gpa,
		     uint64_t avail_gpa, uint64_t used_gpa, unsigned int flags)
{
	return queue_setup(vq, g, size, desc_gpa, avail_gpa, used_gpa, flags);
}

static uint16_t *avail_field(struct vt_queue *vq, uint64_t off)
{
	return vt_host(vq->g, vq->avail_gpa + off, 2);
}

static uint16_t *used_field(struct vt_queue *vq, uint64_t off)
{
	return vt_host(vq->g, vq->used_gpa + off, 2);
}

void vt_queue_set_indexes(struct vt_queue *vq, uint16_t idx)
{
	__atomic_store_n(avail_field(vq, 2), idx, __ATOMIC_RELEASE);
	__atomic_store_n(used_field(vq, 2), idx, __ATOMIC_RELEASE);
	vq->avail_idx = idx;
	vq->used_seen = idx;
	vq->q.last_avail = idx;
	vq->q.used_idx = idx;
	vq->q.signalled_used = idx;
}

struct vt_buf vt_buf_new(struct vt_guest *g, uint32_t len, bool write)
{
	return (struct vt_buf){.gpa = vt_alloc(g, len, 8), .len = len, .write = write};
}

void vt_set_table_desc(struct vt_guest *g, uint64_t table_gpa, uint32_t i, uint64_t addr,
		       uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *d = vt_host(g, table_gpa + 16ull * i, 16);

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

void vt_set_desc(struct vt_queue *vq, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	vt_set_table_desc(vq->g, vq->desc_gpa, i, addr, len, flags, next);
}

void vt_publish(struct vt_queue *vq, uint16_t head)
{
	uint16_t *slot = avail_field(vq, 4 + 2ull * (vq->avail_idx & (vq->size - 1)));

	__atomic_store_n(slot, head, __ATOMIC_RELAXED);
	vq->avail_idx++;
	__atomic_store_n(avail_field(vq, 2), vq->avail_idx, __ATOMIC_RELEASE);
}

void vt_set_avail_idx(struct vt_queue *vq, uint16_t idx)
{
	vq->avail_idx = idx;
	__atomic_store_n(avail_field(vq, 2), idx, __ATOMIC_RELEASE);
}

static uint16_t buf_flags(const struct vt_buf *b)
{
	return b->write ? VIRTQ_DESC_F_WRITE : 0;
}

uint16_t vt_add_chain(struct vt_queue *vq, const struct vt_buf *bufs, unsigned int n)
{
	uint16_t mask = vq->size - 1;
	uint16_t head = vq->next_free & mask;

	assert_true(n >= 1 && n <= vq->size);
	for (unsigned int i = 0; i < n; i++) {
		uint16_t slot = (vq->next_free + i) & mask;
		uint16_t next = (slot + 1) & mask;
		uint16_t flags = buf_flags(&bufs[i]) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);

		vt_set_desc(vq, slot, bufs[i].gpa, bufs[i].len, flags, i + 1 < n ? next : 0);
	}
	vq->next_free = (vq->next_free + n) & mask;
	vt_publish(vq, head);
	return head;
}

uint16_t vt_add_chain_indirect(struct vt_queue *vq, const struct vt_buf *bufs, unsigned int n)
{
	uint16_t head = vq->next_free & (vq->size - 1);
	uint64_t table;

	assert_true(n >= 1);
	table = vt_alloc(vq->g, 16ull * n, 16);
	for (unsigned int i = 0; i < n; i++) {
		uint16_t flags = buf_flags(&bufs[i]) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);

		vt_set_table_desc(vq->g, table, i, bufs[i].gpa, bufs[i].len, flags,
				  i + 1 < n ? (uint16_t)(i + 1) : 0);
	}
	vt_set_desc(vq, head, table, 16u * n, VIRTQ_DESC_F_INDIRECT, 0);
	vq->next_free = (vq->next_free + 1) & (vq->size - 1);
	vt_publish(vq, head);
	return head;
}

void vt_set_avail_flags(struct vt_queue *vq, uint16_t flags)
{
	__atomic_store_n(avail_field(vq, 0), flags, __ATOMIC_RELEASE);
}

void vt_set_used_event(struct vt_queue *vq, uint16_t v)
{
	__atomic_store_n(avail_field(vq, 4 + 2ull * vq->size), v, __ATOMIC_RELEASE);
}

uint16_t vt_used_flags(struct vt_queue *vq)
{
	return __atomic_load_n(used_field(vq, 0), __ATOMIC_ACQUIRE);
}

uint16_t vt_used_idx(struct vt_queue *vq)
{
	return __atomic_load_n(used_field(vq, 2), __ATOMIC_ACQUIRE);
}

uint16_t vt_avail_event(struct vt_queue *vq)
{
	return __atomic_load_n(used_field(vq, 4 + 8ull * vq->size), __ATOMIC_ACQUIRE);
}

bool vt_get_used(struct vt_queue *vq, uint32_t *id, uint32_t *len)
{
	uint8_t *e;
	uint32_t v;

	if (vt_used_idx(vq) == vq->used_seen)
		return false;
	e = vt_host(vq->g, vq->used_gpa + 4 + 8ull * (vq->used_seen & (vq->size - 1)), 8);
	if (id) {
		memcpy(&v, e, 4);
		*id = v;
	}
	if (len) {
		memcpy(&v, e + 4, 4);
		*len = v;
	}
	vq->used_seen++;
	return true;
}

bool vt_try_wait_used(struct vt_queue *vq, int call_fd, uint32_t *id, uint32_t *len, int timeout_ms)
{
	for (;;) {
		vt_set_used_event(vq, vq->used_seen);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (vt_get_used(vq, id, len))
			return true;
		if (!vt_eventfd_wait(call_fd, timeout_ms))
			return false;
	}
}

void vt_wait_used(struct vt_queue *vq, int call_fd, uint32_t *id, uint32_t *len)
{
	if (!vt_try_wait_used(vq, call_fd, id, len, VT_WAIT_MS))
		fail_msg("no used entry within %d ms", VT_WAIT_MS);
}

int vt_eventfd(void)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

void vt_eventfd_signal(int fd)
{
	uint64_t one = 1;

	assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
}

uint64_t vt_eventfd_read(int fd)
{
	uint64_t v;
	ssize_t r = read(fd, &v, sizeof(v));

	if (r < 0) {
		assert_int_equal(errno, EAGAIN);
		return 0;
	}
	assert_int_equal(r, sizeof(v));
	return v;
}

bool vt_poll_in(int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r;

	do {
		r = poll(&p, 1, timeout_ms);
	} while (r < 0 && errno == EINTR);
	assert_true(r >= 0);
	return r > 0;
}

uint64_t vt_eventfd_wait(int fd, int timeout_ms)
{
	return vt_poll_in(fd, timeout_ms) ? vt_eventfd_read(fd) : 0;
}

static void env_needs_reset(void *ctx)
{
	struct vt_env *e = ctx;
	uint64_t one = 1;

	/* Called from a device thread: no cmocka asserts here. */
	if (write(e->reset_fd, &one, sizeof(one)) != sizeof(one))
		abort();
}

void vt_env_init(struct vt_env *e, struct vt_queue *const *vqs, unsigned int n, uint64_t features)
{
	assert_true(n <= VIRTIO_MAX_QUEUES);
	memset(e, 0, sizeof(*e));
	e->act.features = features;
	e->act.nqueues = n;
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		e->act.kick_fd[i] = -1;
		e->act.call_fd[i] = -1;
	}
	for (unsigned int i = 0; i < n; i++) {
		e->act.queues[i] = &vqs[i]->q;
		e->act.kick_fd[i] = vt_eventfd();
		e->act.call_fd[i] = vt_eventfd();
	}
	e->act.needs_reset = env_needs_reset;
	e->act.ctx = e;
	e->reset_fd = vt_eventfd();
}

void vt_env_destroy(struct vt_env *e)
{
	for (unsigned int i = 0; i < e->act.nqueues; i++) {
		close(e->act.kick_fd[i]);
		close(e->act.call_fd[i]);
	}
	close(e->reset_fd);
	memset(e, 0, sizeof(*e));
	e->reset_fd = -1;
}

void vt_dev_queues_init(struct vt_dev *d, unsigned int nq, uint16_t qsize, unsigned int flags,
			uint64_t features)
{
	struct vt_queue *qs[VT_DEV_MAX_QUEUES];

	assert_true(nq <= VT_DEV_MAX_QUEUES);
	for (unsigned int i = 0; i < nq; i++) {
		vt_queue_init(&d->vq[i], &d->g, qsize, flags);
		qs[i] = &d->vq[i];
	}
	vt_env_init(&d->env, qs, nq, vt_ring_features(flags) | features);
}

void vt_dev_activate(struct vt_dev *d)
{
	assert_int_equal(d->dev.ops->activate(d->dev.dev, &d->env.act), 0);
}

void vt_dev_kick(struct vt_dev *d, unsigned int q)
{
	vt_eventfd_signal(d->env.act.kick_fd[q]);
}

void vt_dev_wait_used(struct vt_dev *d, unsigned int q, uint32_t *id, uint32_t *len)
{
	vt_wait_used(&d->vq[q], d->env.act.call_fd[q], id, len);
}

void vt_dev_destroy(struct vt_dev *d)
{
	d->dev.ops->reset(d->dev.dev);
	d->dev.ops->destroy(d->dev.dev);
	vt_env_destroy(&d->env);
	vt_guest_destroy(&d->g);
}
