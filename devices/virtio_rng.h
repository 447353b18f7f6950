/* virtio-rng (virtio 1.2 section 5.4): fills the guest's buffers with host random bytes. */
#ifndef LIBVMM_DEVICES_VIRTIO_RNG_H
#define LIBVMM_DEVICES_VIRTIO_RNG_H

#include "lib/err.h"
#include "lib/virtio/virtio.h"

/* Bytes served per request at most; a larger writable chain gets this many. */
#define VIRTIO_RNG_MAX_REQUEST (64 * 1024)

/*
 * Create a virtio-rng device (device id 4, one queue "requestq", no config
 * space, no device features) into @out. Its activate() starts a worker
 * thread that serves the queue from getrandom(2); reset() joins it. Free it
 * with out->ops->destroy(out->dev). Returns 0, or -ENOMEM / -errno with a
 * message in @err (which may be NULL).
 *
 * Security: every descriptor comes through virtq_pop(), which checks it; a
 * malformed ring makes the device report NEEDS_RESET through the activation's
 * callback and stop serving until reset(). A chain without writable buffers
 * completes with 0 bytes.
 */
int virtio_rng_create(struct virtio_device *out, struct vmm_err *err);

#endif
