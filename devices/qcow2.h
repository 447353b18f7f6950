/* qcow2 images (versions 2 and 3): parsing, translation, allocation, backing chains, creation. */
#ifndef LIBVMM_DEVICES_QCOW2_H
#define LIBVMM_DEVICES_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/disk.h"
#include "lib/err.h"

struct qcow2;

#define QCOW2_MIN_CLUSTER_BITS	   12 /* 4 KiB */
#define QCOW2_MAX_CLUSTER_BITS	   21 /* 2 MiB */
#define QCOW2_DEFAULT_CLUSTER_BITS 16 /* 64 KiB, as qemu-img */
#define QCOW2_MAX_BACKING_NAME	   1023
#define QCOW2_MAX_CHAIN		   64 /* images in a backing chain, the top one included */

/* The header fields libvmm uses, in host byte order, as found in the file. */
struct qcow2_header {
	uint32_t version;
	uint32_t cluster_bits;
	uint64_t size; /* virtual size in bytes */
	uint32_t crypt_method;
	uint32_t l1_size; /* entries */
	uint64_t l1_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompatible;
	uint64_t compatible;
	uint64_t autoclear;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type; /* 0 zlib, 1 zstd */
	bool has_backing;
	char backing[QCOW2_MAX_BACKING_NAME + 1]; /* NUL-terminated */
	char backing_format[32];		  /* from the header extension, or "" */
};

#define QCOW2_MAGIC_LEN 4 /* "QFI\xfb" */

/* Does @buf (at least 4 bytes) start with the qcow2 magic "QFI\xfb"? */
bool qcow2_probe(const void *buf, size_t len);

/* Does the file @fd start with the qcow2 magic? Short or unreadable files do not. */
bool qcow2_probe_fd(int fd);

/*
 * Parse and check the header, its extensions and the backing file name in
 * @buf, the first min(cluster size, file size) bytes of an image whose file
 * is @file_size bytes long (pass @len < that and the cluster size only when
 * the file is shorter). Checks every field against the file, the others and
 * overflow; refuses what libvmm does not implement. Pure: no I/O, no
 * allocation, safe on any input.
 *
 * Returns 0, or -EINVAL (malformed, truncated), -ENOTSUP (unsupported
 * feature) or -EUCLEAN (dirty or corrupt bit set), with a one-line message.
 */
int qcow2_parse_header(const void *buf, size_t len, uint64_t file_size, struct qcow2_header *h,
		       struct vmm_err *err);

struct qcow2_opts {
	bool read_only;
	bool no_backing;      /* refuse images with a backing file (fuzzing) */
	uint64_t cache_bytes; /* L2 cache budget per image; 0 = DISK_DEFAULT_CACHE */
};

/*
 * Open the qcow2 image in @fd (which stays the caller's, and must stay open
 * until qcow2_close()), named @path in messages and for resolving a
 * relative backing file name, and its whole backing chain: each backing
 * file is opened read-only with a shared OFD lock, relative names are
 * resolved against the directory of the image that names them, a loop
 * (same device and inode twice) or a chain longer than QCOW2_MAX_CHAIN is
 * refused with -ELOOP, a missing file with -ENOENT. A writable image with
 * auto-clear feature bits set has them cleared (as the format requires).
 *
 * Returns 0 and sets *@out, or -errno with a one-line message.
 */
int qcow2_open(int fd, const char *path, const struct qcow2_opts *o, struct qcow2 **out,
	       struct vmm_err *err);

/* Virtual size in bytes. */
uint64_t qcow2_size(const struct qcow2 *q);

/*
 * Asynchronous use behind a struct disk (disk.c): attach once after the
 * engine exists. qcow2_submit() takes a request disk_submit() checked;
 * returns 0 (done() will run) or -errno (refused, done() will not run).
 * qcow2_stop() ends the metadata thread (the request it runs finishes,
 * queued ones are dropped); call it before the engine stops. qcow2_close()
 * then writes the metadata back, syncs and frees everything but the fd
 * given to qcow2_open(). qcow2_close() alone suffices when nothing was
 * attached.
 */
void qcow2_attach(struct qcow2 *q, struct disk *d);
int qcow2_submit(struct qcow2 *q, struct disk_req *r);
void qcow2_stop(struct qcow2 *q);
void qcow2_close(struct qcow2 *q);

/*
 * The descriptors of the backing chain that the image opened itself (not
 * the top image's, which is the caller's) into @fds[0..max); returns how
 * many there are, which may exceed @max.
 */
int qcow2_fds(const struct qcow2 *q, int *fds, int max);

/*
 * Synchronous access for tests, tools and fuzzing, on an image that is not
 * attached to a disk. Ranges past qcow2_size() are refused with -EINVAL.
 * Return 0 or -errno (-EIO for a corrupt image, -EROFS when read-only).
 * qcow2_discard() deallocates whole clusters (reading as zeros afterwards
 * except in a version 2 image with a backing file, where the backing file
 * shows through); qcow2_write_zeroes() with @unmap may deallocate them
 * too. qcow2_flush() makes everything durable.
 */
int qcow2_read(struct qcow2 *q, uint64_t off, void *buf, size_t len);
int qcow2_write(struct qcow2 *q, uint64_t off, const void *buf, size_t len);
int qcow2_discard(struct qcow2 *q, uint64_t off, uint64_t len);
int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len, bool unmap);
int qcow2_flush(struct qcow2 *q);

/* Counters for tests and benchmarks. */
struct qcow2_stats {
	uint64_t l2_hits, l2_misses, l2_evictions; /* L2 cache of the top image */
	unsigned int l2_slots;			   /* tables the cache may hold */
	uint64_t allocations;			   /* clusters allocated */
	uint64_t cow;				   /* allocations that copied old contents */
	uint64_t fast, slow;			   /* requests by path (attached use) */
	uint64_t checkpoints;			   /* metadata write-backs */
};
void qcow2_get_stats(struct qcow2 *q, struct qcow2_stats *s);

/*
 * Create a qcow2 version 3 image at @path like `qemu-img create -f qcow2`
 * (refcount_order 4, zlib compression type, no lazy refcounts): @size
 * bytes, rounded up to 512, with clusters of 1 << @cluster_bits bytes (0
 * means QCOW2_DEFAULT_CLUSTER_BITS; else 12..21). With @backing (or NULL),
 * the image records that name as given (a relative name is resolved
 * against @path's directory, now and when opened) and the format found in
 * it ("raw" or "qcow2"); @size 0 then means the backing file's size. An
 * existing @path is never overwritten (-EEXIST).
 *
 * Returns 0, or -errno with a one-line message.
 */
int qcow2_create(const char *path, uint64_t size, unsigned int cluster_bits, const char *backing,
		 struct vmm_err *err);

#endif
