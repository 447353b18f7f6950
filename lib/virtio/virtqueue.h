/* Split virtqueues: the device side of the ring, with every guest value checked before use. */
#ifndef LIBVMM_LIB_VIRTIO_VIRTQUEUE_H
#define LIBVMM_LIB_VIRTIO_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/memory.h"

#define VIRTQ_MAX_SIZE 32768 /* largest queue size the spec allows */
/* Longest descriptor chain the device accepts (direct or through one indirect table). */
#define VIRTQ_MAX_CHAIN 1024

#define VIRTQ_DESC_F_NEXT	   1
#define VIRTQ_DESC_F_WRITE	   2
#define VIRTQ_DESC_F_INDIRECT	   4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY	   1

/* One buffer of a chain: guest-physical range, checked to lie in guest RAM. */
struct virtq_buf {
	uint64_t gpa;
	uint32_t len;
	bool write; /* device-writable */
};

/* A popped descriptor chain: device-readable buffers first, then writable ones. */
struct virtq_chain {
	uint16_t head; /* id to hand back in the used ring */
	uint32_t nbufs;
	uint32_t nread;	    /* how many of bufs[] are device-readable (they come first) */
	uint64_t read_len;  /* total bytes readable */
	uint64_t write_len; /* total bytes writable */
	struct virtq_buf bufs[VIRTQ_MAX_CHAIN];
};

/* Device-side state of one split virtqueue. Set the fields, then virtq_start(). */
struct virtq {
	/* Set by the transport from the guest's configuration. */
	uint16_t size; /* power of two, 1..VIRTQ_MAX_SIZE */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool event_idx; /* VIRTIO_F_RING_EVENT_IDX negotiated */
	bool indirect;	/* VIRTIO_F_INDIRECT_DESC negotiated */
	const struct guest_mem *mem;

	/* Device state. */
	uint16_t last_avail;	 /* next avail ring index to consume */
	uint16_t used_idx;	 /* next used ring index to fill */
	uint16_t signalled_used; /* used_idx when we last interrupted (event idx) */
	bool signalled_valid;
	bool broken; /* the guest corrupted the ring: the device needs a reset */
};

/*
 * Check the ring addresses and size against guest RAM (descriptor table
 * 16*size bytes aligned 16, avail 6+2*size aligned 2, used 6+8*size aligned
 * 4) and reset the device-side indexes. Returns 0 or -EINVAL.
 */
int virtq_start(struct virtq *q);

/*
 * Take the next available chain. Returns 1 and fills @c, 0 when the ring is
 * empty, or -EIO when the guest's ring is malformed (an avail index more
 * than size ahead, a head or next index out of range, a loop, a chain longer
 * than the ring or VIRTQ_MAX_CHAIN, a buffer outside guest RAM, an indirect
 * descriptor without the feature, inside an indirect table, with NEXT set or
 * a bad table length, a readable buffer after a writable one, a total length
 * over 4 GiB). On -EIO the queue is marked broken and stays so until
 * virtq_start() again; the chain, if any, is consumed.
 */
int virtq_pop(struct virtq *q, struct virtq_chain *c);

/* Put chain @head back in the used ring with @written bytes written. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t written);

/*
 * Whether the guest wants an interrupt for what was pushed since the last
 * interrupt (event index or VIRTQ_AVAIL_F_NO_INTERRUPT). Call after one or
 * more virtq_push(); it records that an interrupt is being sent if it
 * returns true.
 */
bool virtq_need_interrupt(struct virtq *q);

/*
 * Ask the guest not to notify (false) or to notify again (true) for new
 * buffers: the used ring's NO_NOTIFY flag, or avail_event with event idx.
 * After enabling, re-check virtq_has_avail() to close the race.
 */
void virtq_set_notify(struct virtq *q, bool enable);

/* True when the guest has made chains available that were not popped. */
bool virtq_has_avail(struct virtq *q);

/*
 * Copy between a chain's buffers and host memory, as if the readable (or
 * writable) buffers were one contiguous range, starting @off bytes into it.
 * Returns the bytes copied (less than @len when the chain is shorter).
 */
size_t virtq_chain_read(const struct virtq *q, const struct virtq_chain *c, uint64_t off, void *dst,
			size_t len);
size_t virtq_chain_write(const struct virtq *q, const struct virtq_chain *c, uint64_t off,
			 const void *src, size_t len);

#endif
