/* virtio-balloon (virtio 1.2 section 5.5, the traditional balloon): the guest gives pages back. */
#ifndef LIBVMM_DEVICES_VIRTIO_BALLOON_H
#define LIBVMM_DEVICES_VIRTIO_BALLOON_H

#include <stdint.h>

#include "lib/err.h"
#include "lib/memory.h"
#include "lib/virtio/virtio.h"

/* Feature bits (virtio 1.2 5.5.3). Only DEFLATE_ON_OOM is offered. */
#define VIRTIO_BALLOON_F_MUST_TELL_HOST 0
#define VIRTIO_BALLOON_F_STATS_VQ	1
#define VIRTIO_BALLOON_F_DEFLATE_ON_OOM 2

/* Queues: 0 inflateq, 1 deflateq (no statsq: STATS_VQ is not offered). */
#define VIRTIO_BALLOON_Q_INFLATE 0
#define VIRTIO_BALLOON_Q_DEFLATE 1

/* Page frame numbers in the queues are 32-bit, in 4 KiB units, whatever the guest's page size. */
#define VIRTIO_BALLOON_PFN_SHIFT 12
#define VIRTIO_BALLOON_PAGE_SIZE (1u << VIRTIO_BALLOON_PFN_SHIFT)

/* Device config: le32 num_pages (host's target, read-only), le32 actual (driver writes). */
#define VIRTIO_BALLOON_CFG_NUM_PAGES 0
#define VIRTIO_BALLOON_CFG_ACTUAL    4
#define VIRTIO_BALLOON_CONFIG_SIZE   8

struct virtio_balloon;

/* What the device did since it was created (monotonic, 4 KiB pages). */
struct virtio_balloon_counters {
	uint64_t inflated; /* valid PFNs given back to the host */
	uint64_t deflated; /* PFNs the guest took back (entries in deflateq buffers) */
	uint64_t rejected; /* inflateq PFNs ignored: not a whole page of guest RAM */
};

/*
 * Create a virtio-balloon device (device id 5, queues inflateq and deflateq,
 * 8 bytes of config, feature DEFLATE_ON_OOM) for the guest RAM @mem into
 * @out, and return a handle on the same device in *@handle for the host
 * side (set_target, actual). @mem must outlive the device. activate()
 * starts a worker thread that serves both queues; reset() joins it. Free it
 * with out->ops->destroy(out->dev) (virtio_pci_destroy() does that once the
 * transport owns it): the handle is valid until then.
 *
 * Inflating: each inflateq chain's device-readable bytes, taken as one
 * array, hold le32 PFNs (a trailing 1-3 bytes are ignored). Each page
 * [pfn << 12, +4096) that lies wholly in one region of @mem is given back to
 * the host: with a memfd (mem->fd >= 0) its range of the fd is punched
 * (fallocate PUNCH_HOLE | KEEP_SIZE) and the host mapping dropped
 * (MADV_DONTNEED), contiguous pages in one call; without an fd (test
 * memory, taken to be private anonymous) the page is dropped with
 * MADV_DONTNEED, or zeroed when it is not host-page aligned. Either way it
 * reads as zero afterwards. Any other PFN (beyond RAM, in the MMIO hole) is
 * counted as rejected and otherwise ignored. Deflating needs no work: a
 * page comes back when the guest touches it; deflateq chains are only
 * counted and returned. Chains are returned with 0 bytes written.
 *
 * Returns 0, or -ENOMEM / -errno with a message in @err (may be NULL).
 *
 * Security: queue descriptors come through virtq_pop(), which checks them; a
 * malformed ring makes the device report NEEDS_RESET and stop serving until
 * reset(). Every PFN is checked against @mem before anything is done to it,
 * so no host memory outside guest RAM is ever touched or released.
 */
int virtio_balloon_create(const struct guest_mem *mem, struct virtio_device *out,
			  struct virtio_balloon **handle, struct vmm_err *err);

/*
 * Call @fn(@ctx) whenever the host changes the target (the VM wires it to
 * virtio_pci_config_changed() so that the guest gets a config interrupt);
 * @fn NULL disables. Call it before the device can be reached from another
 * thread, or at least before virtio_balloon_set_target() runs concurrently.
 * @fn runs on the thread that calls virtio_balloon_set_target(), with no
 * balloon lock held; it may read the config (config_read) itself.
 */
void virtio_balloon_set_notify(struct virtio_balloon *b, void (*fn)(void *ctx), void *ctx);

/*
 * Ask the guest to hold @bytes of its RAM in the balloon: num_pages =
 * @bytes / 4096 (rounded down), then call the notifier. Returns 0, or
 * -EINVAL when @bytes exceeds the guest's RAM (nothing changes).
 * Thread safe.
 */
int virtio_balloon_set_target(struct virtio_balloon *b, uint64_t bytes);

/* The current target in bytes (num_pages * 4096). Thread safe. */
uint64_t virtio_balloon_target(struct virtio_balloon *b);

/*
 * The balloon size the driver reports (config `actual`, as written by the
 * guest) in bytes, capped at the guest's RAM size since the guest may write
 * anything. 0 after reset. Thread safe.
 */
uint64_t virtio_balloon_actual(struct virtio_balloon *b);

/* Copy the counters into @c. Thread safe. */
void virtio_balloon_get_counters(struct virtio_balloon *b, struct virtio_balloon_counters *c);

#endif
