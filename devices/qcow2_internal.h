/*
 * qcow2 internals shared by the files of the format (QEMU's docs/interop/qcow2.txt):
 *
 *   qcow2_header.c      header parsing and checking (pure, fuzzed)
 *   qcow2_file.c        synchronous file I/O and the cursor over a request's iovecs
 *   qcow2_cache.c       the table caches: L2 tables and refcount blocks
 *   qcow2_refcount.c    refcounts, refcount table growth, cluster allocation
 *   qcow2_checkpoint.c  writing metadata back in a crash-safe order; FLUSH
 *   qcow2_compress.c    compressed clusters (zlib, zstd)
 *   qcow2_io.c          per-cluster read/write/zero/discard and the synchronous API
 *   qcow2.c             opening an image and its backing chain; closing
 *   qcow2_async.c       behind a struct disk: fast path and metadata thread
 *   qcow2_create.c      image creation
 *
 * Functions shared between these files are named q2_*. Threads: the
 * metadata side (the metadata thread, or the caller of the synchronous API)
 * changes metadata; the owner's thread reads the L1 table, the L2 cache and
 * file_size under q->lock (see qcow2_async.c). Unless a comment says
 * otherwise, a q2_* function runs on the metadata side.
 */
#ifndef LIBVMM_DEVICES_QCOW2_INTERNAL_H
#define LIBVMM_DEVICES_QCOW2_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <zlib.h>

#include "config.h"
#include "qcow2.h"

#if HAVE_ZSTD
#include <zstd.h>
#endif

#define QCOW2_MAGIC	 0x514649fbu
#define V2_HEADER_LEN	 72
#define V3_HEADER_LEN	 104
#define MAX_L1_BYTES	 (32u << 20) /* QEMU's limit */
#define MAX_RT_BYTES	 (8u << 20)  /* QEMU's limit */
#define MAX_SNAPSHOTS	 65536
#define MAX_HOST_OFFSET	 (1ull << 56)
#define FAST_MAX_EXTENTS 8
#define FAST_POOL_IOV	 16 /* iovecs of a recycled fast request */
#define FAST_POOL_MAX	 64 /* recycled fast requests kept */

#define INCOMPAT_DIRTY	     (1ull << 0)
#define INCOMPAT_CORRUPT     (1ull << 1)
#define INCOMPAT_DATA_FILE   (1ull << 2)
#define INCOMPAT_COMPRESSION (1ull << 3)
#define INCOMPAT_EXTL2	     (1ull << 4)

#define EXT_END		0x00000000u
#define EXT_BACKING_FMT 0xe2792acau
#define EXT_FEATURES	0x6803f857u

#define OFLAG_COPIED	 (1ull << 63)
#define OFLAG_COMPRESSED (1ull << 62)
#define OFLAG_ZERO	 (1ull << 0)
#define L1E_OFFSET_MASK	 0x00fffffffffffe00ull
#define L1E_RESERVED	 0x7f000000000001ffull
#define L2E_OFFSET_MASK	 0x00fffffffffffe00ull
#define L2E_RESERVED	 0x3f000000000001feull
#define RTE_OFFSET_MASK	 0xfffffffffffffe00ull

/* ---- Byte order (the format is big-endian) ---- */

static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static inline bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

static inline uint64_t ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* L1 entries (L2 tables) that map @size bytes with clusters of 1 << @cluster_bits bytes. */
static inline uint64_t l1_entries_for(uint64_t size, unsigned int cluster_bits)
{
	uint64_t cs = 1ull << cluster_bits;

	return ceil_div(size, cs * (cs / 8));
}

/* ---- Data structures ---- */

/* One cached table cluster (an L2 table or a refcount block), in file byte order. */
struct cslot {
	uint64_t off; /* host offset; 0 when the slot is empty */
	uint64_t lru;
	uint8_t *data;
	int next; /* hash chain; -1 ends it */
	bool dirty;
};

/* A least-recently-used cache of table clusters, keyed by host offset. */
struct tcache {
	struct cslot *slot;
	int *bucket;
	unsigned int nslots, nbuckets, ndirty;
	uint64_t tick;
	uint64_t hits, misses, evictions;
};

/*
 * A request on the fast path: its engine requests and their iovecs follow.
 * Those with one engine request and few iovecs are recycled (q->pool).
 */
struct qfast {
	struct qfast *prev, *next; /* q->live, or q->pool */
	struct qcow2 *q;
	struct disk_req *parent;
	unsigned int pending;
	bool pooled;
	int64_t err;
	struct disk_req child[];
};

/* One image of a chain (the top one, a qcow2 backing file, or a raw backing file). */
struct qcow2 {
	/* Fixed after open. */
	int fd;
	bool own_fd; /* backing images */
	bool raw;    /* a raw backing file: fd and size only */
	bool read_only;
	char *path;
	uint64_t size;
	unsigned int version, cluster_bits, l2_bits, rc_order;
	uint64_t cs;
	uint64_t rb_entries; /* refcounts per refcount block */
	uint8_t compression;
	struct qcow2 *backing;
	dev_t dev;
	ino_t ino;
	uint64_t l1_off;
	uint32_t l1_size;

	/* Under lock: written by the metadata side, read by the fast path. */
	pthread_mutex_t lock;
	uint64_t *l1; /* host byte order */
	uint64_t file_size;
	struct tcache l2c;
	atomic_bool draining;	   /* frees wait for the fast path to drain */
	atomic_uint fast_inflight; /* fast requests with engine requests out */
	pthread_cond_t drained;
	bool broken; /* metadata could not be written: writes fail */

	/* Metadata side only. */
	uint8_t *l2_spare;
	bool l1_dirty;
	uint32_t l1_lo, l1_hi; /* dirty L1 entries [lo, hi] */
	uint64_t *rt;	       /* refcount table, host byte order */
	uint64_t rt_entries, rt_off;
	uint32_t rt_clusters;
	bool rt_dirty;
	uint64_t rt_lo, rt_hi;
	struct tcache rbc;
	uint64_t free_hint; /* first cluster index that may be free */
	uint64_t *frees;    /* clusters whose refcount drops after the next sync */
	size_t nfrees, frees_cap;
	uint8_t *bounce; /* one cluster */
	uint8_t *cbuf;	 /* compressed input, two clusters */
	uint8_t *dcache; /* last decompressed cluster */
	uint64_t dcache_key;
	bool dcache_valid;
	struct iovec *sl; /* DISK_MAX_IOV + 2 entries for slices */
	z_stream zs;
	bool zs_ready;
#if HAVE_ZSTD
	ZSTD_DCtx *zd;
#endif

	/* Asynchronous use. */
	struct disk *disk;
	pthread_t thread;
	bool thread_started;
	bool stop;			/* under lock */
	pthread_cond_t cond;		/* under lock: work for the metadata thread */
	struct disk_req *qhead, *qtail; /* under lock: its queue */
	struct qfast *live;		/* owner's thread: fast requests not finished */
	struct qfast *pool;		/* owner's thread: recycled fast requests */
	unsigned int npool;
	uint64_t nfast, nslow;
	uint64_t allocations, cows, checkpoints;
};

/* Does [off, off + len) touch the header cluster, the L1 table or the refcount table? */
static inline bool meta_overlap(const struct qcow2 *q, uint64_t off, uint64_t len)
{
	return off < q->cs || overlaps(off, len, q->l1_off, (uint64_t)q->l1_size * 8) ||
	       overlaps(off, len, q->rt_off, (uint64_t)q->rt_clusters * q->cs);
}

/* The L1 index, and the index in its L2 table, of guest offset @off. */
static inline uint32_t l1_index(const struct qcow2 *q, uint64_t off)
{
	return (uint32_t)(off >> (q->cluster_bits + q->l2_bits));
}

static inline uint64_t l2_index(const struct qcow2 *q, uint64_t off)
{
	return (off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1);
}

/* What an L2 entry says about its cluster. */
enum ctype {
	C_UNALLOC,
	C_ZERO,
	C_NORMAL,
	C_COMPRESSED,
	C_BAD,
};

/* Zeroing requests: WRITE_ZEROES without and with UNMAP, DISCARD. */
enum zmode {
	Z_ZERO,
	Z_ZERO_UNMAP,
	Z_DISCARD,
};

/* A cursor over a request's iovecs. */
struct iovcur {
	const struct iovec *iov;
	unsigned int cnt, idx;
	size_t skip; /* bytes of iov[idx] already used */
};

/* ---- qcow2_file.c ---- */

/* pread/pwrite all of [off, off + len); bytes past the end of the file read as zeros. */
int q2_file_read(int fd, uint64_t off, void *buf, size_t len);
int q2_file_write(int fd, uint64_t off, const void *buf, size_t len);
/* fdatasync of the image. */
int q2_file_sync(struct qcow2 *q);
/* Raise q->file_size (under the lock) to @end when the file grew. */
void q2_file_grew(struct qcow2 *q, uint64_t end);
/* Size (st_size, or BLKGETSIZE64 of a block device), device and inode of @fd; -EINVAL otherwise. */
int q2_file_size_of(int fd, uint64_t *size, dev_t *dev, ino_t *ino);

void q2_cur_init(struct iovcur *c, const struct iovec *iov, unsigned int cnt);
void q2_cur_advance(struct iovcur *c, size_t n);
/* Describe the next @n bytes in out[] (at most @max entries); returns the count, 0 if too many. */
unsigned int q2_cur_slice(const struct iovcur *c, size_t n, struct iovec *out, unsigned int max);
/* Copy @n bytes from @src into the cursor (NULL: zeros) and advance. */
void q2_cur_fill(struct iovcur *c, const uint8_t *src, size_t n);
/* Copy @n bytes out of the cursor into @dst and advance. */
void q2_cur_take(struct iovcur *c, uint8_t *dst, size_t n);
/* Read or write @n bytes at host @off of @q straight from/to the cursor, and advance it. */
int q2_cur_io(struct qcow2 *q, bool write, uint64_t off, struct iovcur *c, size_t n);

/* ---- qcow2_cache.c ---- */

/* Any thread, under the image's lock for its L2 cache. */
int q2_cache_init(struct tcache *c, unsigned int nslots);
void q2_cache_free(struct tcache *c);
/* The slot holding @off, or -1; a hit counts as a use. */
int q2_cache_find(struct tcache *c, uint64_t off);
/* Key slot @idx (unlinked) as @off, most recently used. */
void q2_cache_link(struct tcache *c, int idx, uint64_t off);
void q2_cache_set_dirty(struct tcache *c, int idx, bool dirty);

/* Write every dirty refcount block. */
int q2_rb_write_dirty(struct qcow2 *q);
/* A slot of the refcount block cache to reuse: written back if dirty, with a buffer. */
int q2_rb_take_slot(struct qcow2 *q, int *out);
/* The refcount block of range @t in the cache (*out NULL when the range has none). */
int q2_rb_load(struct qcow2 *q, uint64_t t, uint8_t **out);

/* Check an L2 table offset taken from the L1 table. */
bool q2_l2_off_ok(const struct qcow2 *q, uint64_t off);
/* Entry @l2i of the cached L2 table in @slot (caller holds the lock, or is the metadata side). */
uint64_t q2_l2_entry(const struct qcow2 *q, int slot, uint64_t l2i);
void q2_l2_set(struct qcow2 *q, int slot, uint64_t l2i, uint64_t e);
/*
 * The L2 table of L1 entry @l1i in the cache: *slot, or -1 when it has none
 * and !@write. With @write the table is made the active L1's own (refcount
 * 1, COPIED): allocated when missing, copied when shared with a snapshot.
 */
int q2_l2_get(struct qcow2 *q, uint32_t l1i, bool write, int *slot);

/* ---- qcow2_refcount.c ---- */

/* Refcount @i of a refcount block @b of 1 << @order bits per entry, and its setter. */
uint64_t q2_rb_get(const uint8_t *b, unsigned int order, uint64_t i);
void q2_rb_set(uint8_t *b, unsigned int order, uint64_t i, uint64_t v);
int q2_rc_get(struct qcow2 *q, uint64_t cluster, uint64_t *v);
/* Add @delta (+1 or -1) to the refcount of @cluster, creating blocks and growing as needed. */
int q2_rc_add(struct qcow2 *q, uint64_t cluster, int delta);
/* Allocate one cluster (refcount 1); returns its host offset in *off. */
int q2_alloc_cluster(struct qcow2 *q, uint64_t *off);
/* Drop a reference to @cluster once the metadata that referred to it is durable. */
int q2_queue_free(struct qcow2 *q, uint64_t cluster);
/* q2_queue_free() every host cluster L2 entry @e refers to. */
int q2_free_entry(struct qcow2 *q, uint64_t e);

/* ---- qcow2_checkpoint.c ---- */

/* Write all dirty metadata back in crash-safe order. */
int q2_checkpoint(struct qcow2 *q);
/* FLUSH: everything durable, freed clusters' refcounts included. */
int q2_flush(struct qcow2 *q);
/* Refuse further writes: metadata could not be written. */
void q2_set_broken(struct qcow2 *q);

/* ---- qcow2_compress.c ---- */

/* Host bytes that compressed entry @e occupies: [*off, *off + *len). */
void q2_compressed_extent(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len);
/* Decompress the cluster of entry @e into q->dcache. */
int q2_read_compressed(struct qcow2 *q, uint64_t e);

/* ---- qcow2_io.c ---- */

/* Any thread: the kind of L2 entry @e of image @q. */
enum ctype q2_l2_type(const struct qcow2 *q, uint64_t e);
/* The metadata side of READ and WRITE, cluster by cluster. */
int q2_do_rw(struct qcow2 *q, bool write, uint64_t off, uint64_t len, struct iovcur *c);
/* The metadata side of DISCARD and WRITE_ZEROES. */
int q2_do_zero(struct qcow2 *q, uint64_t off, uint64_t len, enum zmode mode);

/* ---- qcow2.c ---- */

/* Open a backing file read-only with a shared lock; -EBUSY when locked. */
int q2_open_backing_file(const char *path, int *fd_out);
/* @name resolved against the directory of @base (malloc'd, NULL when out of memory). */
char *q2_resolve(const char *base, const char *name);

#endif
