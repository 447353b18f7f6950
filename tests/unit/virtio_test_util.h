/* Test helper for virtio device models: a fake guest, a driver-side view of a split virtqueue,
 * and eventfd sinks for kicks, interrupts and NEEDS_RESET. */
#ifndef LIBVMM_TESTS_UNIT_VIRTIO_TEST_UTIL_H
#define LIBVMM_TESTS_UNIT_VIRTIO_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/memory.h"
#include "lib/virtio/virtio.h"
#include "lib/virtio/virtqueue.h"

/*
 * Every helper fails the running cmocka test (assert_*) on misuse or when a
 * system call fails, so callers need not check results unless stated.
 */

/* How long a test waits for a device before it fails: a bound, not a timing. */
#define VT_WAIT_MS 10000

/* ---- Fake guest RAM ---- */

/*
 * Guest RAM at gpa 0 of exactly @size bytes. vt_guest_init() mallocs it (so
 * an ASan build catches any access one byte past the end) and zeroes it.
 * vt_guest_init_sparse() maps it with MAP_NORESERVE instead, for tests that
 * need gigabytes they never touch. vt_guest_init_shared() is the real thing,
 * gm_init()'s shared memfd mapping (which a sandboxed device process maps
 * too); there the helpers reach only the RAM below the MMIO hole (g->size).
 * A bump allocator (vt_alloc) hands out ranges from gpa 0 upwards.
 */
enum vt_ram_kind {
	VT_RAM_HEAP,   /* vt_guest_init */
	VT_RAM_SPARSE, /* vt_guest_init_sparse */
	VT_RAM_SHARED, /* vt_guest_init_shared */
};

struct vt_guest {
	struct guest_mem mem; /* pass &g->mem to code under test */
	uint8_t *ram;	      /* host address of gpa 0 */
	uint64_t size;
	uint64_t next; /* first gpa vt_alloc() has not handed out */
	enum vt_ram_kind kind;
};

void vt_guest_init(struct vt_guest *g, uint64_t size);
void vt_guest_init_sparse(struct vt_guest *g, uint64_t size);
void vt_guest_init_shared(struct vt_guest *g, uint64_t size);
void vt_guest_destroy(struct vt_guest *g);

/* Reserve @len bytes aligned to @align (a power of two), zeroed; returns the gpa. */
uint64_t vt_alloc(struct vt_guest *g, uint64_t len, uint64_t align);

/* Host pointer for [gpa, gpa + len), asserted to lie inside the fake RAM. */
void *vt_host(struct vt_guest *g, uint64_t gpa, uint64_t len);

/* Whether all @len bytes at @p, or at guest [gpa, gpa + len), equal @v. */
bool vt_filled(const void *p, uint64_t len, uint8_t v);
bool vt_guest_filled(struct vt_guest *g, uint64_t gpa, uint64_t len, uint8_t v);

/* ---- A split virtqueue, driver side ---- */

#define VT_EVENT_IDX 1u /* set q.event_idx (VIRTIO_F_RING_EVENT_IDX) */
#define VT_INDIRECT  2u /* set q.indirect (VIRTIO_F_INDIRECT_DESC) */

/* The feature bits a driver negotiates for queues laid out with @flags, and VERSION_1. */
uint64_t vt_ring_features(unsigned int flags);

/*
 * A queue laid out in a vt_guest: the driver's shadow indexes plus the
 * device-side struct virtq that code under test uses (&vq->q).
 */
struct vt_queue {
	struct vt_guest *g;
	struct virtq q; /* configured and virtq_start()ed */
	uint16_t size;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t avail_idx; /* driver: next avail index to publish */
	uint16_t used_seen; /* driver: used entries consumed by vt_get_used() */
	uint16_t next_free; /* next descriptor slot vt_add_chain() writes (round robin) */
};

/*
 * Lay out a queue of @size entries in @g with vt_alloc() (descriptor table,
 * avail ring and used ring at their spec alignments, each right after the
 * previous one), set q.event_idx / q.indirect from @flags (VT_*), and
 * virtq_start() it; asserts that the start succeeds.
 */
void vt_queue_init(struct vt_queue *vq, struct vt_guest *g, uint16_t size, unsigned int flags);

/*
 * Same with rings at chosen addresses (not allocated, not zeroed, not
 * checked). Returns virtq_start()'s result, so tests can feed bad layouts.
 */
int vt_queue_init_at(struct vt_queue *vq, struct vt_guest *g, uint16_t size, uint64_t desc_gpa,
		     uint64_t avail_gpa, uint64_t used_gpa, unsigned int flags);

/*
 * Move every index (avail->idx, used->idx, the driver shadows, the device's
 * last_avail, used_idx and signalled_used) to @idx, e.g. 65530 to test
 * 16-bit wrap-around without 65530 round trips. Call while the ring is empty.
 */
void vt_queue_set_indexes(struct vt_queue *vq, uint16_t idx);

/* One buffer of a chain to build. */
struct vt_buf {
	uint64_t gpa;
	uint32_t len;
	bool write; /* device-writable */
};

/* A fresh zeroed buffer of @len bytes (vt_alloc, 8-aligned) for a chain. */
struct vt_buf vt_buf_new(struct vt_guest *g, uint32_t len, bool write);

/*
 * Write @bufs[0..n) as a direct chain into descriptor slots next_free,
 * next_free+1, ... (mod size, flags NEXT/WRITE as needed), publish its head
 * in the avail ring (vt_publish) and return the head. n >= 1 and n <= size.
 */
uint16_t vt_add_chain(struct vt_queue *vq, const struct vt_buf *bufs, unsigned int n);

/*
 * Write @bufs[0..n) as an indirect table (entries 0..n-1 chained with NEXT)
 * at a fresh vt_alloc()ed gpa, point one descriptor (slot next_free) with
 * VIRTQ_DESC_F_INDIRECT at it, publish it and return the head.
 */
uint16_t vt_add_chain_indirect(struct vt_queue *vq, const struct vt_buf *bufs, unsigned int n);

/* Raw descriptor @i of the ring (no checks on the values: for hostile tests). */
void vt_set_desc(struct vt_queue *vq, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next);

/* Raw entry @i of a descriptor table (e.g. an indirect table) at @table_gpa. */
void vt_set_table_desc(struct vt_guest *g, uint64_t table_gpa, uint32_t i, uint64_t addr,
		       uint32_t len, uint16_t flags, uint16_t next);

/*
 * Put @head (any value) in avail->ring[avail_idx % size], then advance
 * avail->idx by one with a release store, as a driver does.
 */
void vt_publish(struct vt_queue *vq, uint16_t head);

/* Raw avail->idx store (release); the driver shadow follows. */
void vt_set_avail_idx(struct vt_queue *vq, uint16_t idx);

/* avail->flags (VIRTQ_AVAIL_F_NO_INTERRUPT) and used_event (avail->ring[size]). */
void vt_set_avail_flags(struct vt_queue *vq, uint16_t flags);
void vt_set_used_event(struct vt_queue *vq, uint16_t v);

/* What the device wrote: used->flags, used->idx, avail_event (used->ring[size]). */
uint16_t vt_used_flags(struct vt_queue *vq);
uint16_t vt_used_idx(struct vt_queue *vq);
uint16_t vt_avail_event(struct vt_queue *vq);

/*
 * Consume the next used entry: returns true and its @id and @len (either
 * may be NULL), or false when the device has not used more (used->idx ==
 * used_seen).
 */
bool vt_get_used(struct vt_queue *vq, uint32_t *id, uint32_t *len);

/*
 * Wait for the next used entry as a driver would: ask for an interrupt at the
 * next used index (used_event, for event idx queues), look, then sleep on
 * @call_fd. The try_ form returns false after @timeout_ms without progress;
 * vt_wait_used() fails the test after VT_WAIT_MS.
 */
bool vt_try_wait_used(struct vt_queue *vq, int call_fd, uint32_t *id, uint32_t *len,
		      int timeout_ms);
void vt_wait_used(struct vt_queue *vq, int call_fd, uint32_t *id, uint32_t *len);

/* ---- Eventfds: kicks, interrupt sinks ---- */

/* A non-blocking, close-on-exec eventfd with count 0. */
int vt_eventfd(void);

/* Add 1 to the eventfd's count (a kick, or an interrupt). */
void vt_eventfd_signal(int fd);

/* Read and clear the count; 0 when nothing was signalled. Never blocks. */
uint64_t vt_eventfd_read(int fd);

/* Whether @fd becomes readable within @timeout_ms (poll, EINTR retried). */
bool vt_poll_in(int fd, int timeout_ms);

/*
 * Wait up to @timeout_ms for the eventfd to be signalled, then read and
 * clear it. Returns the count, 0 on timeout.
 */
uint64_t vt_eventfd_wait(int fd, int timeout_ms);

/* ---- An activation, as the transport would hand it to a device ---- */

/*
 * act.queues[i] = &vqs[i]->q for i < n, fresh kick and call eventfds per
 * queue, act.features = @features, and act.needs_reset/ctx set so that each
 * NEEDS_RESET report adds 1 to reset_fd. @e must stay at its address while
 * the device is active.
 */
struct vt_env {
	struct virtio_activation act;
	int reset_fd;
};

void vt_env_init(struct vt_env *e, struct vt_queue *const *vqs, unsigned int n, uint64_t features);
/* Close the eventfds (after the device's reset()). */
void vt_env_destroy(struct vt_env *e);

/* ---- A device under test with its guest and queues ---- */

#define VT_DEV_MAX_QUEUES 2

/*
 * The usual fixture of a device test. The caller sets up g (a vt_guest_init*
 * function) and creates dev; vt_dev_queues_init() lays out @nq queues of
 * @qsize entries with VT_* @flags in g and sets up env for them, offering
 * vt_ring_features(@flags) | @features.
 */
struct vt_dev {
	struct vt_guest g;
	struct vt_queue vq[VT_DEV_MAX_QUEUES];
	struct vt_env env;
	struct virtio_device dev;
};

void vt_dev_queues_init(struct vt_dev *d, unsigned int nq, uint16_t qsize, unsigned int flags,
			uint64_t features);

/* dev.ops->activate() with env.act, asserted to succeed. */
void vt_dev_activate(struct vt_dev *d);

/* The driver kicks queue @q. */
void vt_dev_kick(struct vt_dev *d, unsigned int q);

/* vt_wait_used() on queue @q with its call eventfd. */
void vt_dev_wait_used(struct vt_dev *d, unsigned int q, uint32_t *id, uint32_t *len);

/* Reset and destroy dev, close env's eventfds, free g (not @d itself). */
void vt_dev_destroy(struct vt_dev *d);

#endif
