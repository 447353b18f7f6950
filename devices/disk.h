/* Disk images behind one asynchronous interface: raw files, block devices and qcow2 images. */
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
	bool internal;	       /* issued by an image format, not by the disk's owner */
	unsigned char head;    /* a WRITE of the first bytes of a probed raw disk (disk.c) */
	int fd;		       /* the file the engine works on */
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

/* Image formats. */
enum disk_format {
	DISK_FORMAT_DETECT, /* qcow2 when the file starts with "QFI\xfb", else raw */
	DISK_FORMAT_RAW,
	DISK_FORMAT_QCOW2,
};

/* Everything disk_open_opts() can be told; zero-initialise, then set fields. */
struct disk_opts {
	unsigned int flags;	 /* DISK_OPEN_* */
	enum disk_format format; /* DISK_FORMAT_DETECT when zero */
	/*
	 * qcow2: most bytes of L2 tables cached per image of the chain; 0
	 * means DISK_DEFAULT_CACHE. The cache never holds more tables than
	 * the image has, and holds at least one whatever the budget.
	 */
	uint64_t cache_bytes;
};

#define DISK_DEFAULT_CACHE (32u << 20)

/*
 * Open the disk image at @path: a regular file or a block device, opened
 * O_RDONLY or O_RDWR with O_CLOEXEC (a /proc/self/fd/N path reopens that
 * file). Directories, FIFOs, sockets and character devices are refused
 * without blocking. An OFD lock on the whole file (shared for read-only,
 * exclusive for read-write) keeps two writers, or a writer and readers,
 * from using one image at once; it lasts until disk_close(). Backing files
 * of a qcow2 image are opened read-only with a shared lock.
 *
 * The format comes from @o->format: DISK_FORMAT_DETECT looks at the first
 * bytes of the file (never at its name), DISK_FORMAT_RAW takes the file as
 * it is even when it starts with the qcow2 magic, DISK_FORMAT_QCOW2 refuses
 * a file that is not qcow2. Security: a guest that can write a raw image
 * could write a qcow2 header into it naming any host file as its backing
 * file, which a later detection would follow. So when DISK_FORMAT_DETECT
 * finds a writable image raw, disk_submit() refuses (-EPERM) every WRITE
 * that would make the image start with the qcow2 magic, as QEMU does for
 * probed raw images; DISK_FORMAT_RAW lifts the restriction.
 *
 * The size of a raw disk is st_size for a file and BLKGETSIZE64 for a block
 * device; that of a qcow2 disk is the virtual size in its header. A size
 * that is not a multiple of 512 is accepted: requests may reach the last
 * byte, and virtio-blk exposes only the whole sectors (the tail is invisible
 * to the guest). See docs/qcow2.md for what qcow2 images may contain.
 *
 * Requests run on io_uring when the kernel allows it (readv, writev, fsync,
 * fallocate supported), else on a pool of 4 threads started at the first
 * request (so no thread exists before a sandbox forks). A qcow2 disk also
 * starts one metadata thread at its first request that needs one.
 *
 * Returns 0 and sets *@out, or -errno with a one-line message naming the
 * path in @err: -EISDIR (a directory), -EINVAL (empty path, not a file or
 * block device, unknown flags or format, a malformed qcow2 image),
 * -ENOTSUP (a qcow2 feature libvmm does not implement: encryption, external
 * data files, extended L2 entries, an unknown incompatible feature bit, a
 * compression type), -EUCLEAN (a qcow2 image marked dirty or corrupt),
 * -ELOOP (a backing chain that loops or is too deep), -ENOENT (a missing
 * backing file), -EBUSY ("disk PATH is in use by another process
 * (locked)"), -EIO, the errno of open(), fstat() or the size ioctl.
 */
int disk_open_opts(const char *path, const struct disk_opts *o, struct disk **out,
		   struct vmm_err *err);

/* disk_open_opts() with @flags and the format detected. */
int disk_open_flags(const char *path, unsigned int flags, struct disk **out, struct vmm_err *err);

/* disk_open_flags() with DISK_OPEN_READ_ONLY when @read_only. */
int disk_open(const char *path, bool read_only, struct disk **out, struct vmm_err *err);

/*
 * The format named @name: "detect" (or NULL or ""), "raw" or "qcow2".
 * Returns 0 and sets *@out, or -EINVAL.
 */
int disk_format_parse(const char *name, enum disk_format *out);

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

/* "raw" or "qcow2": the format the disk was opened with. */
const char *disk_format_name(const struct disk *d);

/*
 * Queue @req. Returns 0 when accepted: its done() then runs exactly once,
 * from a later disk_complete() or disk_wait(). Returns -errno, without
 * calling done(), when refused: -EROFS (WRITE, DISCARD or WRITE_ZEROES on a
 * read-only disk), -EINVAL (no done(), unknown op or flag, iovcnt over DISK_MAX_IOV, a
 * range past disk_size() or overflowing: the file is never extended),
 * -EAGAIN (no thread could be started), -EPERM (a WRITE of a raw disk
 * whose format was detected that would make its first 4 bytes the qcow2
 * magic; or, for WRITEs covering only part of those 4 bytes, that races
 * with another WRITE of them still in flight), -EIO (those bytes could
 * not be read).
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
 * Write the descriptors the disk uses (the image, backing files, the
 * completion eventfd, the io_uring ring) into @fds[0..max) and return how
 * many there are, which may exceed @max (only the first @max are written).
 * For the sandbox: a device process keeps exactly these open.
 */
int disk_fds(const struct disk *d, int *fds, int max);

/*
 * Thread safety: disk_size(), disk_read_only(), disk_engine(),
 * disk_format_name() and disk_event_fd() may be called from any thread. disk_submit(),
 * disk_complete(), disk_inflight(), disk_wait() and disk_close() must not
 * run concurrently on one disk: one thread (a device worker) drives it.
 */

/*
 * For image formats (devices/qcow2.c) only, not for device models.
 *
 * disk_engine_submit() runs @r (op READ, WRITE or FLUSH) on the engine
 * against file @fd (-1: the image file itself; else a file the format owns,
 * open until disk_close()): @offset is a file offset and nothing is
 * checked. Owner's thread only. Its
 * done() runs from disk_complete() like any request's, but does not count
 * as one of the owner's requests.
 *
 * disk_req_finish() completes an owner's request that the format took:
 * r->result must be set; it runs r->done() at once, so call it only from
 * the owner's thread inside disk_complete() (from an internal request's
 * done(), typically). disk_req_finish_async() may be called from any
 * thread: r->done() runs at the next disk_complete().
 */
int disk_engine_submit(struct disk *d, struct disk_req *r, int fd);
void disk_req_finish(struct disk *d, struct disk_req *r);
void disk_req_finish_async(struct disk *d, struct disk_req *r);

#endif
