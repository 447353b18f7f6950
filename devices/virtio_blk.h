/* Virtio block device model: one request queue served by a disk backend. */
#ifndef LIBVMM_DEVICES_VIRTIO_BLK_H
#define LIBVMM_DEVICES_VIRTIO_BLK_H

#include "devices/disk.h"
#include "lib/err.h"
#include "lib/virtio/virtio.h"

/* Feature bits (virtio 1.2, 5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX	  1
#define VIRTIO_BLK_F_SEG_MAX	  2
#define VIRTIO_BLK_F_RO		  5
#define VIRTIO_BLK_F_BLK_SIZE	  6
#define VIRTIO_BLK_F_FLUSH	  9
#define VIRTIO_BLK_F_DISCARD	  13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status values (5.2.6). */
#define VIRTIO_BLK_T_IN		  0
#define VIRTIO_BLK_T_OUT	  1
#define VIRTIO_BLK_T_FLUSH	  4
#define VIRTIO_BLK_T_GET_ID	  8
#define VIRTIO_BLK_T_DISCARD	  11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK		  0
#define VIRTIO_BLK_S_IOERR	  1
#define VIRTIO_BLK_S_UNSUPP	  2

#define VIRTIO_BLK_ID_BYTES    20
#define VIRTIO_BLK_SEG_F_UNMAP 1u /* discard/write-zeroes segment flag */

/* Offsets in struct virtio_blk_config (5.2.4); the device exposes the first 60 bytes. */
#define VIRTIO_BLK_CFG_CAPACITY			0  /* le64, 512-byte sectors */
#define VIRTIO_BLK_CFG_SIZE_MAX			8  /* le32 */
#define VIRTIO_BLK_CFG_SEG_MAX			12 /* le32 */
#define VIRTIO_BLK_CFG_BLK_SIZE			20 /* le32 */
#define VIRTIO_BLK_CFG_WRITEBACK		32 /* u8 */
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS	36 /* le32 */
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG		40 /* le32 */
#define VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT 44 /* le32 */
#define VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS 48 /* le32 */
#define VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG	52 /* le32 */
#define VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP	56 /* u8 */
#define VIRTIO_BLK_CONFIG_SIZE			60

/* What this device offers and accepts. */
#define VIRTIO_BLK_QUEUE_MAX	   256
#define VIRTIO_BLK_SEG_MAX	   126	      /* data buffers per IN/OUT request */
#define VIRTIO_BLK_SIZE_MAX	   (1u << 20) /* advertised largest buffer (not enforced) */
#define VIRTIO_BLK_MAX_INFLIGHT	   128	      /* requests handed to the disk at once */
#define VIRTIO_BLK_DWZ_SEG_MAX	   8	      /* segments per discard/write-zeroes */
#define VIRTIO_BLK_DWZ_SECTORS_MAX (1u << 21) /* sectors per segment (1 GiB) */
#define VIRTIO_BLK_DISCARD_ALIGN   8	      /* sectors (4 KiB) */

/*
 * Create a virtio-blk device on @disk, which it owns from now on (also when
 * this fails: the disk is closed then). @serial, if not NULL, is the id
 * string returned by GET_ID (at most 20 bytes, NUL padded).
 *
 * The config space exposes capacity (whole 512-byte sectors of the disk),
 * size_max, seg_max, blk_size 512 and the discard/write-zeroes limits; it
 * is read-only (writes are ignored). Features: SIZE_MAX, SEG_MAX, BLK_SIZE,
 * FLUSH, and RO for a read-only disk or DISCARD and WRITE_ZEROES for a
 * writable one. When the driver does not accept FLUSH, every write is
 * followed by a flush before it completes (writethrough, as 5.2.6.2 asks).
 *
 * activate() starts a worker thread that waits on the queue's kick eventfd
 * and the disk's completion eventfd, submits up to VIRTIO_BLK_MAX_INFLIGHT
 * requests to the disk at once, and interrupts once per batch of
 * completions. reset() stops the worker after every request in flight has
 * finished (no I/O into guest memory continues after it returns; requests
 * still in flight are not put in the used ring). destroy() resets, flushes
 * and closes the disk.
 *
 * Security: every request comes from the guest. A chain without a writable
 * byte is returned with used length 0; a short header, a data length that
 * is not a multiple of 512, more than VIRTIO_BLK_SEG_MAX data buffers, a
 * range past the capacity or overflowing, too many or too long discard/
 * write-zeroes segments, or a write to a read-only disk get
 * VIRTIO_BLK_S_IOERR; unknown types and flags get VIRTIO_BLK_S_UNSUPP. A
 * broken ring makes the device report NEEDS_RESET and stop taking requests.
 *
 * Returns 0 and fills @out, or -EINVAL (serial too long, no disk) or
 * -ENOMEM, with a message in @err.
 */
int virtio_blk_create(struct disk *disk, const char *serial, struct virtio_device *out,
		      struct vmm_err *err);

#endif
