/* Virtio device model interface: what a device implements, and what the transport hands it. */
#ifndef LIBVMM_LIB_VIRTIO_VIRTIO_H
#define LIBVMM_LIB_VIRTIO_VIRTIO_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/memory.h"
#include "lib/virtio/virtqueue.h"

/* Device ids (virtio 1.x section 5). */
#define VIRTIO_ID_NET	  1
#define VIRTIO_ID_BLOCK	  2
#define VIRTIO_ID_RNG	  4
#define VIRTIO_ID_BALLOON 5

/* Transport-level feature bits. */
#define VIRTIO_F_INDIRECT_DESC	28
#define VIRTIO_F_RING_EVENT_IDX 29
#define VIRTIO_F_VERSION_1	32

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER	  2
#define VIRTIO_STATUS_DRIVER_OK	  4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED	  128

#define VIRTIO_MAX_QUEUES 8

/*
 * What a device gets when the driver sets DRIVER_OK: the negotiated
 * features, its queues (already virtq_start()ed), for each queue an eventfd
 * that becomes readable when the guest notifies it (an ioeventfd under KVM)
 * and an eventfd to write to interrupt the guest for that queue (an irqfd
 * bound to the queue's MSI-X vector under KVM), and a callback to report a
 * broken ring (the transport then sets NEEDS_RESET and raises a config
 * interrupt). The fds stay owned by the transport and valid until reset().
 */
struct virtio_activation {
	uint64_t features;
	unsigned int nqueues;
	struct virtq *queues[VIRTIO_MAX_QUEUES];
	int kick_fd[VIRTIO_MAX_QUEUES];
	int call_fd[VIRTIO_MAX_QUEUES];
	void (*needs_reset)(void *ctx);
	void *ctx;
};

/* A virtio device model: a small ops table and its opaque state. */
struct virtio_device_ops {
	const char *name; /* "virtio-blk", for messages */
	uint16_t device_id;
	unsigned int nqueues;
	uint16_t queue_max;   /* largest queue size offered (power of two) */
	uint32_t config_size; /* bytes of device-specific config */
	/* Device feature bits (the transport adds VERSION_1, EVENT_IDX, INDIRECT_DESC). */
	uint64_t (*features)(void *dev);
	/* Device config space; off + len <= config_size is guaranteed by the transport. */
	void (*config_read)(void *dev, uint32_t off, uint8_t *data, uint32_t len);
	void (*config_write)(void *dev, uint32_t off, const uint8_t *data, uint32_t len);
	/* Start serving queues (typically a worker thread). Returns 0 or -errno. */
	int (*activate)(void *dev, const struct virtio_activation *act);
	/* Stop serving (join the worker) and forget queue state. Idempotent. */
	void (*reset)(void *dev);
	/* Free the device (after reset). */
	void (*destroy)(void *dev);
	/*
	 * Optional, for the sandbox (lib/virtio/proxy.c): write the file
	 * descriptors the device uses into @fds[0..max) (its backend: disk
	 * image, the disk's eventfd and io_uring, a tap; its own eventfds;
	 * guest RAM's memfd if it touches the fd) and return how many there
	 * are, which may exceed @max (the caller then refuses), or -errno.
	 * Every other descriptor is closed in the device's child process.
	 * NULL: the device needs none.
	 */
	int (*keep_fds)(void *dev, int *fds, int max);
};

struct virtio_device {
	const struct virtio_device_ops *ops;
	void *dev;
};

/* Interrupt the guest for a queue: write 1 to its call eventfd if the ring asks for it. */
void virtio_queue_interrupt(const struct virtio_activation *act, unsigned int q);

#endif
