/* Disk images behind one asynchronous interface: raw files and block devices (qcow2 later). */
#ifndef LIBVMM_DEVICES_DISK_H
#define LIBVMM_DEVICES_DISK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "lib/err.h"

struct disk;

enum disk_op {
	DISK_OP_READ,	      /* read into iov[] at offset */
	DISK_OP_WRITE,	      /* write iov[] at offset */
	DISK_OP_FLUSH,	      /* make completed writes stable (fdatasync) */
	DISK_OP_DISCARD,      /* deallocate [offset, offset + len): a hint, contents undefined */
	DISK_OP_WRITE_ZEROES, /* make [offset, offset + len) read as zeros */
};

/* disk_req.flags */
#define DISK_REQ_F_UNMAP 1u /* WRITE_ZEROES may deallocate the range */

/* Most iovec entries one READ or WRITE may carry (the kernel's UIO_MAXIOV). */
#define DISK_MAX_IOV 1024

/* Private per-request state of the disk; callers do not touch it. */
struct disk_req_priv {
	struct disk_req *next;
	uint64_t total;	      /* bytes the request covers */
	uint64_t done;	      /* bytes transferred so far (short transfers resume) */
	unsigned int iov_idx; /* first iov[] entry not fully transferred */
	unsigned int stage;
	struct iovec zero_iov; /* WRITE_ZEROES by writing zeros */
};

/*
 * One asynchronous request. The caller owns the memory: it stays valid and
 * untouched until done() has run.
 *
 * READ and WRITE transfer iov[0..iovcnt) (zero copy: the entries may point
 * straight into guest RAM) at byte @offset; their length is the sum of the
 * entries. The disk may rewrite the iov[] entries while the request is in
 * flight (to resume a short transfer): their contents are undefined after
 * completion. FLUSH uses no other field. DISCARD and WRITE_ZEROES cover
 * [offset, offset + len).
 *
 * Before done() runs, @result is set: for READ and WRITE the byte count
 * (always the whole length: short transfers are resumed), 0 for the other
 * operations, or -errno (-EIO when the file ended early, for instance
 * because it shrank under us).
 */
struct disk_req {
	enum disk_op op;
	unsigned int flags; /* DISK_REQ_F_* */
	uint64_t offset;
	uint64_t len; /* DISCARD, WRITE_ZEROES */
	struct iovec *iov;
	unsigned int iovcnt;
	void (*done)(struct disk_req *req);
	void *opaque; /* for the caller */
	int64_t result;
	struct disk_req_priv priv;
};

/* disk_open_flags() flags */
#define DISK_OPEN_READ_ONLY (1u << 0)
/*
 * Never use io_uring, run requests on the thread pool: for tests of that
 * engine, and for hosts that forbid io_uring in a sandbox.
 */
#define DISK_OPEN_THREAD_POOL (1u << 1)

/*
 * Open the disk image at @path: a regular file or a block device, opened
 * O_RDONLY or O_RDWR with O_CLOEXEC (a /proc/self/fd/N path reopens that
 * file). Directories, FIFOs, sockets and character devices are refused
 * without blocking. An OFD lock on the whole file (shared for read-only,
 * exclusive for read-write) keeps two writers, or a writer and readers,
 * from using one image at once; it lasts until disk_close().
 *
 * The size is st_size for a file and BLKGETSIZE64 for a block device. A
 * size that is not a multiple of 512 is accepted: requests may reach the
 * last byte, and virtio-blk exposes only the whole sectors (the tail is
 * invisible to the guest).
 *
 * Requests run on io_uring when the kernel allows it (readv, writev, fsync,
 * fallocate supported), else on a pool of 4 threads started at the first
 * request (so no thread exists before a sandbox forks).
 *
 * Returns 0 and sets *@out, or -errno with a one-line message naming the
 * path in @err: -EISDIR (a directory), -EINVAL (empty path, not a file or
 * block device), -EBUSY ("disk PATH is in use by another process
 * (locked)"), the errno of open(), fstat() or the size ioctl.
 */
int disk_open_flags(const char *path, unsigned int flags, struct disk **out, struct vmm_err *err);

/* disk_open_flags() with DISK_OPEN_READ_ONLY when @read_only. */
int disk_open(const char *path, bool read_only, struct disk **out, struct vmm_err *err);

/*
 * Wait for requests still in flight (their done() is not run; queued ones
 * that had not started never run), flush a writable disk, release the lock
 * and free the disk. NULL is a no-op.
 */
void disk_close(struct disk *d);

/* Size in bytes, as found by disk_open(). */
uint64_t disk_size(const struct disk *d);

bool disk_read_only(const struct disk *d);

/* "io_uring" or "threads": the engine that runs the requests. */
const char *disk_engine(const struct disk *d);

/*
 * Queue @req. Returns 0 when accepted: its done() then runs exactly once,
 * from a later disk_complete() or disk_wait(). Returns -errno, without
 * calling done(), when refused: -EROFS (WRITE, DISCARD or WRITE_ZEROES on a
 * read-only disk), -EINVAL (no done(), unknown op or flag, iovcnt over DISK_MAX_IOV, a
 * range past disk_size() or overflowing: the file is never extended), or
 * -EAGAIN (no thread could be started).
 */
int disk_submit(struct disk *d, struct disk_req *req);

/*
 * An eventfd (owned by the disk) that is readable when finished requests
 * wait for disk_complete(). Poll it; do not read it.
 */
int disk_event_fd(const struct disk *d);

/*
 * Run done() of every finished request, on the caller's thread, and start
 * queued ones. Never blocks. done() may call disk_submit(). Returns the
 * number of done() calls.
 */
unsigned int disk_complete(struct disk *d);

/* Requests accepted whose done() has not run yet. */
unsigned int disk_inflight(const struct disk *d);

/* Block until disk_inflight() is 0, running done() as requests finish. */
void disk_wait(struct disk *d);

/*
 * Thread safety: disk_size(), disk_read_only(), disk_engine() and
 * disk_event_fd() may be called from any thread. disk_submit(),
 * disk_complete(), disk_inflight(), disk_wait() and disk_close() must not
 * run concurrently on one disk: one thread (a device worker) drives it.
 */

#endif
