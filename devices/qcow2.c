/*
 * qcow2 images, versions 2 and 3 (QEMU's docs/interop/qcow2.txt).
 *
 * Layout of this file: header parsing (pure, fuzzed), the table caches,
 * refcounts and cluster allocation, L2 tables, the checkpoint that writes
 * metadata back in a crash-safe order, compressed clusters, per-cluster
 * read/write/zero, opening a backing chain, the asynchronous glue for
 * disk.c (fast path and metadata thread), the synchronous API, and image
 * creation.
 *
 * Threads. Behind a struct disk, the owner's thread (the device worker)
 * serves READ and WRITE requests whose clusters are already mapped (and,
 * for writes, owned: refcount 1, the COPIED flag) from the L2 caches in
 * memory, following the backing chain for reads: it turns them into engine
 * requests at file offsets (of the image or a backing file), so data moves
 * through io_uring or the thread pool exactly as for a raw image. Everything
 * else (cache misses, allocation, copy-on-write, backing files, compressed
 * clusters, discard, write-zeroes, flush) goes to one metadata thread, which
 * does it with synchronous system calls, one request at a time. Only that
 * thread changes metadata; it changes the L1 table, the L2 cache and
 * file_size under q->lock, and does its I/O without the lock, so the owner's
 * thread never waits for a disk. Backing images are touched by the metadata
 * thread only.
 *
 * Crash safety (see docs/qcow2.md). Metadata is written back, never in
 * place at once: an allocation writes the data cluster first, then changes
 * refcounts and L2 entries in memory. A checkpoint (at FLUSH, when a dirty
 * table must leave a cache, at close) writes dirty refcount blocks, syncs,
 * writes refcount table entries, syncs, writes dirty L2 tables, syncs,
 * writes L1 entries, syncs (skipping steps with nothing to write). Refcount
 * decrements (discard, copy-on-write of shared clusters) wait for the sync
 * that makes the L2/L1 change durable, and for engine requests that may
 * still target the freed clusters. A crash therefore leaves at worst
 * clusters whose refcount is too high (leaks), never a reference to a
 * cluster with a lower refcount or unwritten contents. The dirty bit is
 * never set.
 */
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "config.h"

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

/* ---- Byte order ---- */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

/* ---- Header ---- */

bool qcow2_probe(const void *buf, size_t len)
{
	return len >= 4 && get32(buf) == QCOW2_MAGIC;
}

/* Name of incompatible feature @bit from the image's feature name table, or NULL. */
static const char *feature_name(const uint8_t *tab, size_t len, unsigned int bit, char *name,
				size_t size)
{
	size_t i;

	for (i = 0; i + 48 <= len; i += 48) {
		if (tab[i] != 0 || tab[i + 1] != bit)
			continue;
		memcpy(name, tab + i + 2, 46 < size - 1 ? 46 : size - 1);
		name[46 < size - 1 ? 46 : size - 1] = '\0';
		for (char *c = name; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
				*c = '?';
		return name[0] ? name : NULL;
	}
	return NULL;
}

/* Walk the header extensions in buf[start, end). */
static int parse_extensions(const uint8_t *buf, size_t start, size_t end, struct qcow2_header *h,
			    const uint8_t **ftab, size_t *ftab_len, struct vmm_err *err)
{
	size_t off = start;
	uint32_t type, len;
	uint64_t next;

	while (off < end) {
		if (end - off < 8)
			return err_set(err, EINVAL, "header extension at %zu is truncated", off);
		type = get32(buf + off);
		len = get32(buf + off + 4);
		if (type == EXT_END)
			return 0;
		next = (uint64_t)off + 8 + (((uint64_t)len + 7) & ~7ull);
		if ((uint64_t)off + 8 + len > end || next > end + 7ull)
			return err_set(err, EINVAL,
				       "header extension %#x at %zu overruns the header", type,
				       off);
		switch (type) {
		case EXT_BACKING_FMT:
			if (len == 0 || len >= sizeof(h->backing_format))
				return err_set(err, EINVAL, "backing format name of %u bytes", len);
			memcpy(h->backing_format, buf + off + 8, len);
			h->backing_format[len] = '\0';
			if (strlen(h->backing_format) != len)
				return err_set(err, EINVAL, "backing format name contains a NUL");
			break;
		case EXT_FEATURES:
			*ftab = buf + off + 8;
			*ftab_len = len;
			break;
		default: /* bitmaps, encryption header, data file name, unknown: ignored */
			break;
		}
		if (next >= end)
			return 0;
		off = (size_t)next;
	}
	return 0;
}

static int check_features(const struct qcow2_header *h, const uint8_t *ftab, size_t ftab_len,
			  struct vmm_err *err)
{
	uint64_t unknown = h->incompatible & ~0x1full;
	char name[48];
	unsigned int bit;

	if (h->incompatible & INCOMPAT_DIRTY)
		return err_set(err, EUCLEAN,
			       "image is dirty (in use, or not cleanly closed); "
			       "repair it with qemu-img check -r all");
	if (h->incompatible & INCOMPAT_CORRUPT)
		return err_set(err, EUCLEAN,
			       "image is marked corrupt; repair it with qemu-img check -r all");
	if (h->incompatible & INCOMPAT_DATA_FILE)
		return err_set(err, ENOTSUP, "images with an external data file are not supported");
	if (h->incompatible & INCOMPAT_EXTL2)
		return err_set(err, ENOTSUP, "images with extended L2 entries are not supported");
	if (unknown) {
		bit = (unsigned int)__builtin_ctzll(unknown);
		if (feature_name(ftab, ftab_len, bit, name, sizeof(name)))
			return err_set(err, ENOTSUP,
				       "image uses unsupported feature '%s' "
				       "(incompatible bit %u)",
				       name, bit);
		return err_set(err, ENOTSUP, "image uses unknown incompatible feature bit %u", bit);
	}
	return 0;
}

int qcow2_parse_header(const void *data, size_t len, uint64_t file_size, struct qcow2_header *h,
		       struct vmm_err *err)
{
	const uint8_t *buf = data, *ftab = NULL;
	uint64_t cs, l2_cover, need_l1, l1_bytes, rt_bytes, ext_end;
	size_t ftab_len = 0;
	int ret;

	memset(h, 0, sizeof(*h));
	if (len > file_size)
		len = (size_t)file_size;
	if (len < 4 || get32(buf) != QCOW2_MAGIC)
		return err_set(err, EINVAL, "not a qcow2 image (no QFI\\xfb magic)");
	if (len < V2_HEADER_LEN)
		return err_set(err, EINVAL, "header is truncated (%zu bytes)", len);
	h->version = get32(buf + 4);
	if (h->version != 2 && h->version != 3)
		return err_set(err, ENOTSUP, "qcow2 version %u is not supported (only 2 and 3)",
			       h->version);
	h->cluster_bits = get32(buf + 20);
	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return err_set(err, ENOTSUP, "cluster_bits %u outside %u..%u", h->cluster_bits,
			       QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
	cs = 1ull << h->cluster_bits;
	if (len < cs && len < file_size)
		return err_set(err, EINVAL, "header cluster is truncated");
	if (len > cs)
		len = (size_t)cs;
	h->size = get64(buf + 24);
	h->crypt_method = get32(buf + 32);
	h->l1_size = get32(buf + 36);
	h->l1_offset = get64(buf + 40);
	h->refcount_table_offset = get64(buf + 48);
	h->refcount_table_clusters = get32(buf + 56);
	h->nb_snapshots = get32(buf + 60);
	h->snapshots_offset = get64(buf + 64);
	h->refcount_order = 4;
	h->header_length = V2_HEADER_LEN;
	if (h->version == 3) {
		if (len < V3_HEADER_LEN)
			return err_set(err, EINVAL, "version 3 header is truncated (%zu bytes)",
				       len);
		h->incompatible = get64(buf + 72);
		h->compatible = get64(buf + 80);
		h->autoclear = get64(buf + 88);
		h->refcount_order = get32(buf + 96);
		h->header_length = get32(buf + 100);
		if (h->header_length < V3_HEADER_LEN || h->header_length % 8 ||
		    h->header_length > len)
			return err_set(err, EINVAL, "header_length %u is invalid",
				       h->header_length);
		if (h->header_length > V3_HEADER_LEN)
			h->compression_type = buf[104];
	}

	/* Extensions lie between the header and the backing file name, in the first cluster. */
	{
		uint64_t boff = get64(buf + 8);
		uint32_t blen = get32(buf + 16);

		ext_end = len;
		if (boff) {
			if (blen == 0 || blen > QCOW2_MAX_BACKING_NAME)
				return err_set(err, EINVAL, "backing file name of %u bytes", blen);
			if (boff < h->header_length || boff > len || blen > len - boff)
				return err_set(err, EINVAL,
					       "backing file name lies outside the header cluster");
			memcpy(h->backing, buf + boff, blen);
			h->backing[blen] = '\0';
			if (strlen(h->backing) != blen)
				return err_set(err, EINVAL, "backing file name contains a NUL");
			h->has_backing = true;
			ext_end = boff;
		}
	}
	ret = parse_extensions(buf, h->header_length, (size_t)ext_end, h, &ftab, &ftab_len, err);
	if (ret < 0)
		return ret;
	ret = check_features(h, ftab, ftab_len, err);
	if (ret < 0)
		return ret;
	if (h->compression_type > 1)
		return err_set(err, ENOTSUP, "compression type %u is not supported",
			       h->compression_type);
	if (!!(h->incompatible & INCOMPAT_COMPRESSION) != (h->compression_type != 0))
		return err_set(err, EINVAL,
			       "compression type %u does not match the header's "
			       "feature bit",
			       h->compression_type);
#if !HAVE_ZSTD
	if (h->compression_type == 1)
		return err_set(err, ENOTSUP, "zstd compression is not supported by this build");
#endif
	if (h->crypt_method)
		return err_set(err, ENOTSUP, "encrypted images (crypt_method %u) are not supported",
			       h->crypt_method);
	if (h->refcount_order > 6)
		return err_set(err, EINVAL, "refcount_order %u is above 6", h->refcount_order);

	/* Sizes. */
	l2_cover = cs * (cs / 8); /* bytes one L2 table maps */
	need_l1 = h->size / l2_cover + (h->size % l2_cover != 0);
	l1_bytes = (uint64_t)h->l1_size * 8;
	if (l1_bytes > MAX_L1_BYTES)
		return err_set(err, EINVAL, "L1 table of %u entries is too large", h->l1_size);
	if (need_l1 > h->l1_size)
		return err_set(err, EINVAL,
			       "L1 table of %u entries is too small for a virtual size "
			       "of %llu bytes",
			       h->l1_size, (unsigned long long)h->size);
	if (h->size > INT64_MAX)
		return err_set(err, EINVAL, "virtual size overflows");
	if (h->refcount_table_clusters == 0 ||
	    (uint64_t)h->refcount_table_clusters > MAX_RT_BYTES / cs)
		return err_set(err, EINVAL, "refcount table of %u clusters is invalid",
			       h->refcount_table_clusters);
	rt_bytes = (uint64_t)h->refcount_table_clusters * cs;

	/* Tables: aligned, inside the file, clear of the header and of each other. */
	if (h->l1_size) {
		if (h->l1_offset % cs || h->l1_offset < cs || h->l1_offset > file_size ||
		    l1_bytes > file_size - h->l1_offset)
			return err_set(err, EINVAL,
				       "L1 table at %#llx lies outside the file or is "
				       "misaligned",
				       (unsigned long long)h->l1_offset);
	}
	if (h->refcount_table_offset % cs || h->refcount_table_offset < cs ||
	    h->refcount_table_offset > file_size || rt_bytes > file_size - h->refcount_table_offset)
		return err_set(err, EINVAL,
			       "refcount table at %#llx lies outside the file or is "
			       "misaligned",
			       (unsigned long long)h->refcount_table_offset);
	if (overlaps(h->l1_offset, l1_bytes, h->refcount_table_offset, rt_bytes))
		return err_set(err, EINVAL, "L1 table and refcount table overlap");
	if (h->nb_snapshots > MAX_SNAPSHOTS)
		return err_set(err, EINVAL, "%u snapshots is too many", h->nb_snapshots);
	if (h->nb_snapshots &&
	    (h->snapshots_offset % cs || h->snapshots_offset < cs ||
	     h->snapshots_offset >= file_size ||
	     overlaps(h->snapshots_offset, 1, h->l1_offset, l1_bytes) ||
	     overlaps(h->snapshots_offset, 1, h->refcount_table_offset, rt_bytes)))
		return err_set(err, EINVAL, "snapshot table at %#llx is invalid",
			       (unsigned long long)h->snapshots_offset);
	return 0;
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

static uint64_t ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* Does [off, off + len) touch the header cluster, the L1 table or the refcount table? */
static bool meta_overlap(const struct qcow2 *q, uint64_t off, uint64_t len)
{
	return off < q->cs || overlaps(off, len, q->l1_off, (uint64_t)q->l1_size * 8) ||
	       overlaps(off, len, q->rt_off, (uint64_t)q->rt_clusters * q->cs);
}

/* ---- File I/O ---- */

/* Read [off, off + len); bytes past the end of the file read as zeros. */
static int file_read(int fd, uint64_t off, void *buf, size_t len)
{
	uint8_t *p = buf;
	ssize_t n;

	while (len) {
		n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			memset(p, 0, len);
			return 0;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int file_write(int fd, uint64_t off, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	ssize_t n;

	while (len) {
		n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* Skip @n bytes of iov[0..*cnt), which the caller owns. */
static void iov_skip(struct iovec **iov, unsigned int *cnt, size_t n)
{
	while (n && *cnt) {
		if (n < (*iov)->iov_len) {
			(*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
			(*iov)->iov_len -= n;
			return;
		}
		n -= (*iov)->iov_len;
		(*iov)++;
		(*cnt)--;
	}
}

/* preadv/pwritev of @len bytes until done; reads past the end of the file give zeros. */
static int file_rwv(int fd, bool write, uint64_t off, struct iovec *iov, unsigned int cnt,
		    size_t len)
{
	ssize_t n;

	while (len && cnt) {
		n = write ? pwritev(fd, iov, (int)cnt, (off_t)off)
			  : preadv(fd, iov, (int)cnt, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			if (write)
				return -EIO;
			for (; cnt; iov++, cnt--)
				memset(iov->iov_base, 0, iov->iov_len);
			return 0;
		}
		off += (uint64_t)n;
		len -= (size_t)n;
		iov_skip(&iov, &cnt, (size_t)n);
	}
	return 0;
}

static int file_sync(struct qcow2 *q)
{
	return fdatasync(q->fd) < 0 ? -errno : 0;
}

/* ---- A cursor over a request's iovecs ---- */

struct iovcur {
	const struct iovec *iov;
	unsigned int cnt, idx;
	size_t skip; /* bytes of iov[idx] already used */
};

static void cur_init(struct iovcur *c, const struct iovec *iov, unsigned int cnt)
{
	c->iov = iov;
	c->cnt = cnt;
	c->idx = 0;
	c->skip = 0;
}

static void cur_advance(struct iovcur *c, size_t n)
{
	size_t left;

	while (n && c->idx < c->cnt) {
		left = c->iov[c->idx].iov_len - c->skip;
		if (n < left) {
			c->skip += n;
			return;
		}
		n -= left;
		c->idx++;
		c->skip = 0;
	}
}

/* Describe the next @n bytes in out[] (at most @max entries); returns the count, 0 if too many. */
static unsigned int cur_slice(const struct iovcur *c, size_t n, struct iovec *out, unsigned int max)
{
	unsigned int i = c->idx, k = 0;
	size_t skip = c->skip, take;

	while (n && i < c->cnt) {
		take = c->iov[i].iov_len - skip;
		if (take > n)
			take = n;
		if (take) {
			if (k == max)
				return 0;
			out[k].iov_base = (uint8_t *)c->iov[i].iov_base + skip;
			out[k].iov_len = take;
			k++;
		}
		n -= take;
		i++;
		skip = 0;
	}
	return k;
}

/* Copy @n bytes from @src into the cursor (NULL: zeros) and advance. */
static void cur_fill(struct iovcur *c, const uint8_t *src, size_t n)
{
	size_t take;

	while (n && c->idx < c->cnt) {
		take = c->iov[c->idx].iov_len - c->skip;
		if (take > n)
			take = n;
		if (src) {
			memcpy((uint8_t *)c->iov[c->idx].iov_base + c->skip, src, take);
			src += take;
		} else {
			memset((uint8_t *)c->iov[c->idx].iov_base + c->skip, 0, take);
		}
		n -= take;
		cur_advance(c, take);
	}
}

/* Copy @n bytes out of the cursor into @dst and advance. */
static void cur_take(struct iovcur *c, uint8_t *dst, size_t n)
{
	size_t take;

	while (n && c->idx < c->cnt) {
		take = c->iov[c->idx].iov_len - c->skip;
		if (take > n)
			take = n;
		memcpy(dst, (uint8_t *)c->iov[c->idx].iov_base + c->skip, take);
		dst += take;
		n -= take;
		cur_advance(c, take);
	}
}

/* Read or write @n bytes at host @off straight from/to the cursor, and advance it. */
static int cur_io(struct qcow2 *q, bool write, uint64_t off, struct iovcur *c, size_t n)
{
	unsigned int k;
	int ret;

	if (!q->sl) {
		q->sl = calloc(DISK_MAX_IOV + 2, sizeof(*q->sl));
		if (!q->sl)
			return -ENOMEM;
	}
	k = cur_slice(c, n, q->sl, DISK_MAX_IOV + 2);
	if (!k && n)
		return -EINVAL;
	ret = file_rwv(q->fd, write, off, q->sl, k, n);
	if (ret == 0)
		cur_advance(c, n);
	return ret;
}

/* ---- Table caches ---- */

static int cache_init(struct tcache *c, unsigned int nslots)
{
	unsigned int i;

	c->nslots = nslots ? nslots : 1;
	c->nbuckets = 1;
	while (c->nbuckets < 2 * c->nslots)
		c->nbuckets <<= 1;
	c->slot = calloc(c->nslots, sizeof(*c->slot));
	c->bucket = malloc(c->nbuckets * sizeof(*c->bucket));
	if (!c->slot || !c->bucket)
		return -ENOMEM;
	for (i = 0; i < c->nbuckets; i++)
		c->bucket[i] = -1;
	for (i = 0; i < c->nslots; i++)
		c->slot[i].next = -1;
	return 0;
}

static void cache_free(struct tcache *c)
{
	unsigned int i;

	if (c->slot)
		for (i = 0; i < c->nslots; i++)
			free(c->slot[i].data);
	free(c->slot);
	free(c->bucket);
	memset(c, 0, sizeof(*c));
}

static unsigned int cache_hash(const struct tcache *c, uint64_t off)
{
	return (unsigned int)(((off >> 9) * 0x9e3779b97f4a7c15ull) >> 32) & (c->nbuckets - 1);
}

/* The slot holding @off, or -1; a hit counts as a use. */
static int cache_find(struct tcache *c, uint64_t off)
{
	int i;

	for (i = c->bucket[cache_hash(c, off)]; i >= 0; i = c->slot[i].next) {
		if (c->slot[i].off == off) {
			c->slot[i].lru = ++c->tick;
			c->hits++;
			return i;
		}
	}
	c->misses++;
	return -1;
}

/* An empty slot, else the least recently used one. */
static int cache_victim(const struct tcache *c)
{
	unsigned int i, best = 0;

	for (i = 0; i < c->nslots; i++) {
		if (!c->slot[i].off)
			return (int)i;
		if (c->slot[i].lru < c->slot[best].lru)
			best = i;
	}
	return (int)best;
}

static void cache_unlink(struct tcache *c, int idx)
{
	struct cslot *s = &c->slot[idx];
	int *p;

	if (!s->off)
		return;
	for (p = &c->bucket[cache_hash(c, s->off)]; *p >= 0; p = &c->slot[*p].next) {
		if (*p == idx) {
			*p = s->next;
			break;
		}
	}
	s->next = -1;
	s->off = 0;
}

/* Key slot @idx (unlinked) as @off, most recently used. */
static void cache_link(struct tcache *c, int idx, uint64_t off)
{
	struct cslot *s = &c->slot[idx];
	unsigned int h = cache_hash(c, off);

	s->off = off;
	s->lru = ++c->tick;
	s->next = c->bucket[h];
	c->bucket[h] = idx;
}

static void cache_set_dirty(struct tcache *c, int idx, bool dirty)
{
	if (c->slot[idx].dirty != dirty)
		c->ndirty += dirty ? 1 : -1;
	c->slot[idx].dirty = dirty;
}

/* ---- Refcounts ---- */

static uint64_t rb_get(const uint8_t *b, unsigned int order, uint64_t i)
{
	unsigned int w;
	uint64_t bit;

	switch (order) {
	case 0:
	case 1:
	case 2:
		w = 1u << order;
		bit = i * w;
		return (b[bit / 8] >> (bit % 8)) & ((1u << w) - 1);
	case 3:
		return b[i];
	case 4:
		return get16(b + i * 2);
	case 5:
		return get32(b + i * 4);
	default:
		return get64(b + i * 8);
	}
}

static void rb_set(uint8_t *b, unsigned int order, uint64_t i, uint64_t v)
{
	unsigned int w, mask;
	uint64_t bit;

	switch (order) {
	case 0:
	case 1:
	case 2:
		w = 1u << order;
		mask = (1u << w) - 1;
		bit = i * w;
		b[bit / 8] =
			(uint8_t)((b[bit / 8] & ~(mask << (bit % 8))) | ((v & mask) << (bit % 8)));
		break;
	case 3:
		b[i] = (uint8_t)v;
		break;
	case 4:
		put16(b + i * 2, (uint16_t)v);
		break;
	case 5:
		put32(b + i * 4, (uint32_t)v);
		break;
	default:
		put64(b + i * 8, v);
		break;
	}
}

static uint64_t rc_max(const struct qcow2 *q)
{
	return q->rc_order == 6 ? UINT64_MAX : (1ull << (1u << q->rc_order)) - 1;
}

/* Write every dirty refcount block. */
static int rb_write_dirty(struct qcow2 *q)
{
	struct tcache *c = &q->rbc;
	unsigned int i;
	int ret;

	for (i = 0; i < c->nslots && c->ndirty; i++) {
		if (!c->slot[i].dirty)
			continue;
		ret = file_write(q->fd, c->slot[i].off, c->slot[i].data, q->cs);
		if (ret < 0)
			return ret;
		cache_set_dirty(c, (int)i, false);
	}
	return 0;
}

/* A slot of the refcount block cache to reuse: written back if dirty, with a buffer. */
static int rb_take_slot(struct qcow2 *q, int *out)
{
	struct tcache *c = &q->rbc;
	int idx = cache_victim(c), ret;

	if (c->slot[idx].dirty) {
		ret = file_write(q->fd, c->slot[idx].off, c->slot[idx].data, q->cs);
		if (ret < 0)
			return ret;
		cache_set_dirty(c, idx, false);
	}
	if (c->slot[idx].off)
		c->evictions++;
	cache_unlink(c, idx);
	if (!c->slot[idx].data) {
		c->slot[idx].data = malloc(q->cs);
		if (!c->slot[idx].data)
			return -ENOMEM;
	}
	*out = idx;
	return 0;
}

/* The refcount block of range @t in the cache (*out NULL when the range has none). */
static int rb_load(struct qcow2 *q, uint64_t t, uint8_t **out)
{
	uint64_t off = q->rt[t];
	int idx, ret;

	*out = NULL;
	if (!off)
		return 0;
	idx = cache_find(&q->rbc, off);
	if (idx < 0) {
		ret = rb_take_slot(q, &idx);
		if (ret < 0)
			return ret;
		ret = file_read(q->fd, off, q->rbc.slot[idx].data, q->cs);
		if (ret < 0)
			return ret;
		cache_link(&q->rbc, idx, off);
	}
	*out = q->rbc.slot[idx].data;
	return 0;
}

static int rc_get(struct qcow2 *q, uint64_t cluster, uint64_t *v)
{
	uint64_t t = cluster / q->rb_entries;
	uint8_t *b;
	int ret;

	*v = 0;
	if (t >= q->rt_entries)
		return 0;
	ret = rb_load(q, t, &b);
	if (ret < 0 || !b)
		return ret;
	*v = rb_get(b, q->rc_order, cluster % q->rb_entries);
	return 0;
}

static void rt_mark(struct qcow2 *q, uint64_t t)
{
	if (!q->rt_dirty || t < q->rt_lo)
		q->rt_lo = t;
	if (!q->rt_dirty || t > q->rt_hi)
		q->rt_hi = t;
	q->rt_dirty = true;
}

static void file_grew(struct qcow2 *q, uint64_t end)
{
	if (end > q->file_size) {
		pthread_mutex_lock(&q->lock);
		q->file_size = end;
		pthread_mutex_unlock(&q->lock);
	}
}

/* Give range @t (which has none) a refcount block in its own first cluster. */
static int rb_create(struct qcow2 *q, uint64_t t)
{
	uint64_t b = t * q->rb_entries, off = b * q->cs;
	int idx, ret;

	if (meta_overlap(q, off, q->cs))
		return -EIO; /* refcounts say the header or a table is free: corrupt */
	ret = rb_take_slot(q, &idx);
	if (ret < 0)
		return ret;
	memset(q->rbc.slot[idx].data, 0, q->cs);
	rb_set(q->rbc.slot[idx].data, q->rc_order, 0, 1);
	cache_link(&q->rbc, idx, off);
	cache_set_dirty(&q->rbc, idx, true);
	q->rt[t] = off;
	rt_mark(q, t);
	file_grew(q, off + q->cs);
	return 0;
}

static int rc_add(struct qcow2 *q, uint64_t cluster, int delta);

/*
 * Replace the refcount table by a larger one covering range @t_need: new
 * refcount blocks and the new table go past everything in use, the blocks
 * counting themselves and the table; then the header points at the new
 * table and the old one is freed.
 */
static int rt_grow(struct qcow2 *q, uint64_t t_need)
{
	uint64_t E = q->rb_entries, cs = q->cs, A, r0, r1, k, T, n, i, cl;
	uint64_t old_off = q->rt_off, old_clusters = q->rt_clusters, *nrt;
	uint8_t *blocks, *tab, hdr[12];
	int ret;

	ret = rb_write_dirty(q);
	if (ret < 0)
		return ret;
	A = ceil_div(q->file_size, cs);
	if (A < q->rt_entries * E)
		A = q->rt_entries * E;
	if (A >= MAX_HOST_OFFSET / cs)
		return -ENOSPC;
	r0 = A / E;
	n = q->rt_entries + q->rt_entries / 2;
	if (n < t_need + 1)
		n = t_need + 1;
	for (;;) {
		T = ceil_div(n * 8, cs);
		if (T > MAX_RT_BYTES / cs)
			return -ENOSPC;
		for (k = 1; (A + k + T - 1) / E - r0 + 1 > k; k++)
			;
		r1 = (A + k + T - 1) / E;
		if (r1 + 1 <= n)
			break;
		n = r1 + 1;
	}
	n = T * cs / 8;
	nrt = calloc(n, sizeof(*nrt));
	blocks = calloc(k, cs);
	tab = calloc(T, cs);
	if (!nrt || !blocks || !tab) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(nrt, q->rt, q->rt_entries * sizeof(*nrt));
	for (i = 0; i < k; i++)
		nrt[r0 + i] = (A + i) * cs;
	for (cl = A; cl < A + k + T; cl++)
		rb_set(blocks + (cl / E - r0) * cs, q->rc_order, cl % E, 1);
	for (i = 0; i < n; i++)
		put64(tab + i * 8, nrt[i]);
	ret = file_write(q->fd, A * cs, blocks, k * cs);
	if (!ret)
		ret = file_write(q->fd, (A + k) * cs, tab, T * cs);
	if (!ret)
		ret = file_sync(q);
	if (ret < 0)
		goto out;
	put64(hdr, (A + k) * cs);
	put32(hdr + 8, (uint32_t)T);
	ret = file_write(q->fd, 48, hdr, sizeof(hdr));
	if (!ret)
		ret = file_sync(q);
	if (ret < 0) {
		/* The header may point either way: stop writing. */
		pthread_mutex_lock(&q->lock);
		q->broken = true;
		pthread_mutex_unlock(&q->lock);
		goto out;
	}
	free(q->rt);
	q->rt = nrt;
	nrt = NULL;
	q->rt_entries = n;
	q->rt_off = (A + k) * cs;
	q->rt_clusters = (uint32_t)T;
	q->rt_dirty = false;
	file_grew(q, (A + k + T) * cs);
	/* The old table is unreferenced now that the header is durable. */
	for (i = 0; i < old_clusters && !ret; i++)
		ret = rc_add(q, old_off / cs + i, -1);
	if (old_off / cs < q->free_hint)
		q->free_hint = old_off / cs;
out:
	free(nrt);
	free(blocks);
	free(tab);
	return ret;
}

/* Add @delta (+1 or -1) to the refcount of @cluster, creating blocks and growing as needed. */
static int rc_add(struct qcow2 *q, uint64_t cluster, int delta)
{
	uint64_t t = cluster / q->rb_entries, v;
	uint8_t *b;
	int idx, ret;

	if (t >= q->rt_entries) {
		if (delta < 0)
			return -EIO;
		ret = rt_grow(q, t);
		if (ret < 0)
			return ret;
	}
	if (!q->rt[t]) {
		if (delta < 0)
			return -EIO;
		ret = rb_create(q, t);
		if (ret < 0)
			return ret;
	}
	ret = rb_load(q, t, &b);
	if (ret < 0)
		return ret;
	v = rb_get(b, q->rc_order, cluster % q->rb_entries);
	if ((delta < 0 && v == 0) || (delta > 0 && v == rc_max(q)))
		return -EIO;
	rb_set(b, q->rc_order, cluster % q->rb_entries, delta < 0 ? v - 1 : v + 1);
	idx = cache_find(&q->rbc, q->rt[t]);
	cache_set_dirty(&q->rbc, idx, true);
	return 0;
}

/* The first free cluster at or after q->free_hint that is not the header or a table. */
static int find_free(struct qcow2 *q, uint64_t *out)
{
	uint64_t i = q->free_hint, t, end;
	uint8_t *b;
	int ret;

	for (;;) {
		t = i / q->rb_entries;
		if (t >= q->rt_entries || !q->rt[t]) {
			if (!meta_overlap(q, i * q->cs, q->cs))
				break;
			i++;
			continue;
		}
		ret = rb_load(q, t, &b);
		if (ret < 0)
			return ret;
		end = (t + 1) * q->rb_entries;
		for (; i < end; i++)
			if (!rb_get(b, q->rc_order, i % q->rb_entries) &&
			    !meta_overlap(q, i * q->cs, q->cs))
				goto found;
	}
found:
	*out = i;
	return 0;
}

/* Allocate one cluster (refcount 1); returns its host offset in *off. */
static int alloc_cluster(struct qcow2 *q, uint64_t *off)
{
	uint64_t i, t;
	int ret;

	for (;;) {
		ret = find_free(q, &i);
		if (ret < 0)
			return ret;
		if (i >= MAX_HOST_OFFSET / q->cs)
			return -ENOSPC;
		t = i / q->rb_entries;
		if (t >= q->rt_entries) {
			ret = rt_grow(q, t);
		} else if (!q->rt[t]) {
			ret = rb_create(q, t);
		} else {
			ret = rc_add(q, i, 1);
			if (ret < 0)
				return ret;
			q->free_hint = i + 1;
			*off = i * q->cs;
			q->allocations++;
			return 0;
		}
		if (ret < 0)
			return ret;
	}
}

/* Drop a reference to @cluster once the metadata that referred to it is durable. */
static int queue_free(struct qcow2 *q, uint64_t cluster)
{
	uint64_t *n;

	if (q->nfrees == q->frees_cap) {
		n = realloc(q->frees, (q->frees_cap ? q->frees_cap * 2 : 64) * sizeof(*n));
		if (!n)
			return -ENOMEM; /* the cluster leaks: harmless */
		q->frees = n;
		q->frees_cap = q->frees_cap ? q->frees_cap * 2 : 64;
	}
	q->frees[q->nfrees++] = cluster;
	return 0;
}

/* ---- L2 entries ---- */

enum ctype {
	C_UNALLOC,
	C_ZERO,
	C_NORMAL,
	C_COMPRESSED,
	C_BAD,
};

static enum ctype l2_type(const struct qcow2 *q, uint64_t e)
{
	if (e & OFLAG_COMPRESSED)
		return e & OFLAG_COPIED ? C_BAD : C_COMPRESSED;
	if (e & L2E_RESERVED)
		return C_BAD;
	if ((e & L2E_OFFSET_MASK) % q->cs)
		return C_BAD;
	if (e & OFLAG_ZERO)
		return q->version >= 3 ? C_ZERO : C_BAD;
	if (!(e & L2E_OFFSET_MASK))
		return e & OFLAG_COPIED ? C_BAD : C_UNALLOC;
	return C_NORMAL;
}

/* Host clusters that compressed entry @e occupies: [*first, *first + *count). */
static void compressed_extent(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len)
{
	unsigned int x = 62 - (q->cluster_bits - 8);
	uint64_t nsect = (e >> x) & ((1ull << (q->cluster_bits - 8)) - 1);

	*off = e & ((1ull << x) - 1);
	*len = (nsect + 1) * 512;
}

static int free_entry(struct qcow2 *q, uint64_t e)
{
	uint64_t off, len, c;
	int ret = 0;

	switch (l2_type(q, e)) {
	case C_NORMAL:
	case C_ZERO:
		if (e & L2E_OFFSET_MASK)
			ret = queue_free(q, (e & L2E_OFFSET_MASK) / q->cs);
		break;
	case C_COMPRESSED:
		compressed_extent(q, e, &off, &len);
		off &= ~511ull;
		for (c = off / q->cs; c <= (off + len - 1) / q->cs && !ret; c++)
			ret = queue_free(q, c);
		break;
	default:
		break;
	}
	return ret;
}

static uint64_t l2_entry(const struct qcow2 *q, int slot, uint64_t l2i)
{
	return get64(q->l2c.slot[slot].data + l2i * 8);
}

static void l2_set(struct qcow2 *q, int slot, uint64_t l2i, uint64_t e)
{
	pthread_mutex_lock(&q->lock);
	put64(q->l2c.slot[slot].data + l2i * 8, e);
	cache_set_dirty(&q->l2c, slot, true);
	pthread_mutex_unlock(&q->lock);
}

static void l1_set(struct qcow2 *q, uint32_t i, uint64_t e)
{
	pthread_mutex_lock(&q->lock);
	q->l1[i] = e;
	pthread_mutex_unlock(&q->lock);
	if (!q->l1_dirty || i < q->l1_lo)
		q->l1_lo = i;
	if (!q->l1_dirty || i > q->l1_hi)
		q->l1_hi = i;
	q->l1_dirty = true;
}

/* ---- Checkpoint ---- */

static int write_l1(struct qcow2 *q)
{
	uint32_t n = q->l1_hi - q->l1_lo + 1, i;
	uint8_t *buf = malloc((size_t)n * 8);
	int ret;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		put64(buf + (size_t)i * 8, q->l1[q->l1_lo + i]);
	ret = file_write(q->fd, q->l1_off + (uint64_t)q->l1_lo * 8, buf, (size_t)n * 8);
	free(buf);
	if (!ret)
		q->l1_dirty = false;
	return ret;
}

static int write_rt(struct qcow2 *q)
{
	uint64_t n = q->rt_hi - q->rt_lo + 1, i;
	uint8_t *buf = malloc(n * 8);
	int ret;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		put64(buf + i * 8, q->rt[q->rt_lo + i]);
	ret = file_write(q->fd, q->rt_off + q->rt_lo * 8, buf, n * 8);
	free(buf);
	if (!ret)
		q->rt_dirty = false;
	return ret;
}

static int write_l2_dirty(struct qcow2 *q)
{
	struct tcache *c = &q->l2c;
	unsigned int i;
	int ret;

	for (i = 0; i < c->nslots; i++) {
		if (!c->slot[i].dirty)
			continue;
		/* Only this thread writes the table: reading it unlocked is safe. */
		ret = file_write(q->fd, c->slot[i].off, c->slot[i].data, q->cs);
		if (ret < 0)
			return ret;
		pthread_mutex_lock(&q->lock);
		cache_set_dirty(c, (int)i, false);
		pthread_mutex_unlock(&q->lock);
	}
	return 0;
}

/*
 * Apply the queued refcount decrements, once no engine request that may
 * still use the clusters is in flight. Returns 1 when applied.
 */
static int apply_frees(struct qcow2 *q)
{
	bool ok;
	size_t i;
	int ret = 0;

	/* fast_done() signals under the lock when it sees draining and the count at 0. */
	pthread_mutex_lock(&q->lock);
	atomic_store(&q->draining, true);
	while (atomic_load(&q->fast_inflight) && !q->stop)
		pthread_cond_wait(&q->drained, &q->lock);
	ok = atomic_load(&q->fast_inflight) == 0;
	atomic_store(&q->draining, false);
	pthread_mutex_unlock(&q->lock);
	if (!ok)
		return 0;
	for (i = 0; i < q->nfrees && !ret; i++) {
		ret = rc_add(q, q->frees[i], -1);
		if (q->frees[i] < q->free_hint)
			q->free_hint = q->frees[i];
	}
	q->nfrees = 0;
	q->dcache_valid = false;
	return ret < 0 ? ret : 1;
}

/* Write all dirty metadata back in crash-safe order (see the top of the file). */
static int checkpoint(struct qcow2 *q)
{
	int ret;

	if (q->raw ||
	    (!q->rbc.ndirty && !q->rt_dirty && !q->l2c.ndirty && !q->l1_dirty && !q->nfrees))
		return 0;
	q->checkpoints++;
	ret = rb_write_dirty(q);
	if (!ret && q->rt_dirty) {
		ret = file_sync(q);
		if (!ret)
			ret = write_rt(q);
	}
	if (!ret && (q->l2c.ndirty || q->l1_dirty)) {
		ret = file_sync(q);
		if (!ret)
			ret = write_l2_dirty(q);
		if (!ret && q->l1_dirty) {
			ret = file_sync(q);
			if (!ret)
				ret = write_l1(q);
		}
		if (!ret)
			ret = file_sync(q);
	}
	if (!ret && q->nfrees)
		ret = apply_frees(q);
	if (ret < 0) {
		pthread_mutex_lock(&q->lock);
		q->broken = true;
		pthread_mutex_unlock(&q->lock);
	}
	return ret < 0 ? ret : 0;
}

/* FLUSH: everything durable, freed clusters' refcounts included. */
static int do_flush(struct qcow2 *q)
{
	bool frees = q->nfrees != 0;
	int ret;

	ret = checkpoint(q);
	if (!ret && frees)
		ret = checkpoint(q);
	if (!ret)
		ret = file_sync(q);
	return ret;
}

/* ---- L2 tables ---- */

/* Check an L2 table offset taken from the L1 table. */
static bool l2_off_ok(const struct qcow2 *q, uint64_t off)
{
	return off % q->cs == 0 && off < q->file_size && !meta_overlap(q, off, q->cs);
}

/*
 * Put @buf (the table at @off, one cluster) in the L2 cache, evicting the
 * least recently used table (after a checkpoint if it is dirty). Returns the
 * slot; @buf becomes the cache's and the evicted buffer the new spare.
 */
static int l2_install(struct qcow2 *q, uint64_t off, bool dirty, int *out)
{
	struct tcache *c = &q->l2c;
	uint8_t *old;
	int idx, ret;

	pthread_mutex_lock(&q->lock);
	idx = cache_victim(c);
	if (c->slot[idx].dirty) {
		pthread_mutex_unlock(&q->lock);
		ret = checkpoint(q);
		if (ret < 0)
			return ret;
		pthread_mutex_lock(&q->lock);
		idx = cache_victim(c);
	}
	if (c->slot[idx].off)
		c->evictions++;
	cache_unlink(c, idx);
	old = c->slot[idx].data;
	c->slot[idx].data = q->l2_spare;
	q->l2_spare = old;
	cache_link(c, idx, off);
	cache_set_dirty(c, idx, dirty);
	pthread_mutex_unlock(&q->lock);
	*out = idx;
	return 0;
}

static int l2_spare(struct qcow2 *q)
{
	if (!q->l2_spare)
		q->l2_spare = malloc(q->cs);
	return q->l2_spare ? 0 : -ENOMEM;
}

/*
 * The L2 table of L1 entry @l1i in the cache: *slot, or -1 when it has none
 * and !@write. With @write the table is made the active L1's own (refcount
 * 1, COPIED): allocated when missing, copied when shared with a snapshot.
 */
static int l2_get(struct qcow2 *q, uint32_t l1i, bool write, int *slot)
{
	uint64_t l1e = q->l1[l1i], off = l1e & L1E_OFFSET_MASK, rc, noff;
	int idx, ret;

	*slot = -1;
	if (!off && !write)
		return 0;
	ret = l2_spare(q);
	if (ret < 0)
		return ret;
	if (!off) {
		ret = alloc_cluster(q, &noff);
		if (ret < 0)
			return ret;
		memset(q->l2_spare, 0, q->cs);
		ret = l2_install(q, noff, true, &idx);
		if (ret < 0)
			return ret;
		l1_set(q, l1i, noff | OFLAG_COPIED);
		file_grew(q, noff + q->cs);
		*slot = idx;
		return 0;
	}
	pthread_mutex_lock(&q->lock);
	idx = cache_find(&q->l2c, off);
	pthread_mutex_unlock(&q->lock);
	if (idx < 0) {
		if (!l2_off_ok(q, off))
			return -EIO;
		ret = file_read(q->fd, off, q->l2_spare, q->cs);
		if (ret < 0)
			return ret;
		ret = l2_install(q, off, false, &idx);
		if (ret < 0)
			return ret;
	}
	if (write && !(l1e & OFLAG_COPIED)) {
		ret = rc_get(q, off / q->cs, &rc);
		if (ret < 0)
			return ret;
		if (rc == 0)
			return -EIO;
		if (rc == 1) {
			l1_set(q, l1i, off | OFLAG_COPIED);
		} else {
			/* Shared with a snapshot: this copy becomes the active table. */
			ret = alloc_cluster(q, &noff);
			if (ret < 0)
				return ret;
			pthread_mutex_lock(&q->lock);
			cache_unlink(&q->l2c, idx);
			cache_link(&q->l2c, idx, noff);
			cache_set_dirty(&q->l2c, idx, true);
			pthread_mutex_unlock(&q->lock);
			l1_set(q, l1i, noff | OFLAG_COPIED);
			file_grew(q, noff + q->cs);
			q->cows++;
			ret = queue_free(q, off / q->cs);
			if (ret < 0)
				return ret;
		}
	}
	*slot = idx;
	return 0;
}

/* ---- Compressed clusters ---- */

static int inflate_zlib(struct qcow2 *q, const uint8_t *in, size_t len, uint8_t *out)
{
	z_stream *z = &q->zs;
	int ret;

	if (!q->zs_ready) {
		memset(z, 0, sizeof(*z));
		if (inflateInit2(z, -15) != Z_OK)
			return -ENOMEM;
		q->zs_ready = true;
	} else if (inflateReset(z) != Z_OK) {
		return -EIO;
	}
	z->next_in = (Bytef *)(uintptr_t)in;
	z->avail_in = (uInt)len;
	z->next_out = out;
	z->avail_out = (uInt)q->cs;
	ret = inflate(z, Z_FINISH);
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z->avail_out == 0)
		return 0;
	return -EIO;
}

#if HAVE_ZSTD
static int inflate_zstd(struct qcow2 *q, const uint8_t *in, size_t len, uint8_t *out)
{
	ZSTD_inBuffer ib = {in, len, 0};
	ZSTD_outBuffer ob = {out, q->cs, 0};
	size_t r, ipos, opos;

	if (!q->zd) {
		q->zd = ZSTD_createDCtx();
		if (!q->zd)
			return -ENOMEM;
		/* The largest window a cluster of at most 2 MiB needs: bounds memory. */
		ZSTD_DCtx_setParameter(q->zd, ZSTD_d_windowLogMax, 22);
	} else {
		ZSTD_DCtx_reset(q->zd, ZSTD_reset_session_only);
	}
	while (ob.pos < ob.size) {
		ipos = ib.pos;
		opos = ob.pos;
		r = ZSTD_decompressStream(q->zd, &ob, &ib);
		if (ZSTD_isError(r))
			return -EIO;
		if (r == 0 || (ib.pos == ipos && ob.pos == opos))
			break;
	}
	return ob.pos == ob.size ? 0 : -EIO;
}
#endif

/* Decompress the cluster of entry @e into q->dcache. */
static int read_compressed(struct qcow2 *q, uint64_t e)
{
	uint64_t off, len;
	int ret;

	if (q->dcache_valid && q->dcache_key == e)
		return 0;
	if (!q->dcache)
		q->dcache = malloc(q->cs);
	if (!q->cbuf)
		q->cbuf = malloc(2 * q->cs);
	if (!q->dcache || !q->cbuf)
		return -ENOMEM;
	compressed_extent(q, e, &off, &len);
	len -= off & 511;
	if (off >= MAX_HOST_OFFSET || off >= q->file_size || off < q->cs)
		return -EIO;
	if (len > q->file_size - off)
		len = q->file_size - off; /* the last sector may be partial */
	ret = file_read(q->fd, off, q->cbuf, len);
	if (ret < 0)
		return ret;
	q->dcache_valid = false;
#if HAVE_ZSTD
	if (q->compression == 1)
		ret = inflate_zstd(q, q->cbuf, len, q->dcache);
	else
#endif
		ret = inflate_zlib(q, q->cbuf, len, q->dcache);
	if (ret < 0)
		return ret;
	q->dcache_key = e;
	q->dcache_valid = true;
	return 0;
}

/* ---- Reading, writing, zeroing ---- */

/* Where guest offset @off of @q maps: the entry, or 0 (unallocated) when there is no table. */
static int lookup(struct qcow2 *q, uint64_t off, bool write, int *slot, uint64_t *e)
{
	uint32_t l1i = (uint32_t)(off >> (q->cluster_bits + q->l2_bits));
	uint64_t l2i = (off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1);
	int ret;

	ret = l2_get(q, l1i, write, slot);
	if (ret < 0)
		return ret;
	*e = *slot < 0 ? 0 : l2_entry(q, *slot, l2i);
	return 0;
}

static int img_read(struct qcow2 *q, uint64_t off, size_t len, struct iovcur *c);

/* Read [off, off + n) of one cluster of @q into the cursor. */
static int read_chunk(struct qcow2 *q, uint64_t off, size_t n, struct iovcur *c)
{
	uint64_t e, host;
	int slot, ret;

	ret = lookup(q, off, false, &slot, &e);
	if (ret < 0)
		return ret;
	switch (l2_type(q, e)) {
	case C_UNALLOC:
		if (q->backing)
			return img_read(q->backing, off, n, c);
		cur_fill(c, NULL, n);
		return 0;
	case C_ZERO:
		cur_fill(c, NULL, n);
		return 0;
	case C_NORMAL:
		host = e & L2E_OFFSET_MASK;
		return cur_io(q, false, host + (off & (q->cs - 1)), c, n);
	case C_COMPRESSED:
		ret = read_compressed(q, e);
		if (ret < 0)
			return ret;
		cur_fill(c, q->dcache + (off & (q->cs - 1)), n);
		return 0;
	default:
		return -EIO;
	}
}

/* Read [off, off + len) of image @q (any image of a chain); past its size reads zeros. */
static int img_read(struct qcow2 *q, uint64_t off, size_t len, struct iovcur *c)
{
	size_t n;
	int ret;

	while (len) {
		if (off >= q->size) {
			cur_fill(c, NULL, len);
			return 0;
		}
		if (q->raw) {
			n = q->size - off < len ? (size_t)(q->size - off) : len;
			ret = cur_io(q, false, off, c, n);
		} else {
			n = q->cs - (off & (q->cs - 1));
			if (n > len)
				n = len;
			if (n > q->size - off)
				n = (size_t)(q->size - off);
			ret = read_chunk(q, off, n, c);
		}
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

/* Fill q->bounce with what guest cluster @cstart of the top image reads as (entry @e). */
static int old_contents(struct qcow2 *q, uint64_t cstart, uint64_t e)
{
	struct iovec v = {q->bounce, q->cs};
	struct iovcur c;

	switch (l2_type(q, e)) {
	case C_NORMAL:
		return file_read(q->fd, e & L2E_OFFSET_MASK, q->bounce, q->cs);
	case C_COMPRESSED: {
		int ret = read_compressed(q, e);

		if (ret == 0)
			memcpy(q->bounce, q->dcache, q->cs);
		return ret;
	}
	case C_UNALLOC:
		if (q->backing) {
			cur_init(&c, &v, 1);
			return img_read(q->backing, cstart, q->cs, &c);
		}
		/* fall through */
	default:
		memset(q->bounce, 0, q->cs);
		return 0;
	}
}

/* Write [off, off + n) of one cluster from the cursor (NULL: zeros). */
static int write_chunk(struct qcow2 *q, uint64_t off, size_t n, struct iovcur *c)
{
	uint64_t in = off & (q->cs - 1), cstart = off - in, l2i, e, host, rc, noff;
	enum ctype type;
	int slot, ret;

	if (!q->bounce && !(q->bounce = malloc(q->cs)))
		return -ENOMEM;
	ret = lookup(q, off, true, &slot, &e);
	if (ret < 0)
		return ret;
	l2i = (off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1);
	type = l2_type(q, e);
	host = e & L2E_OFFSET_MASK;
	if (type == C_BAD)
		return -EIO;
	if ((type == C_NORMAL || type == C_ZERO) && host) {
		if (meta_overlap(q, host, q->cs) || host >= q->file_size)
			return -EIO;
		if (!(e & OFLAG_COPIED)) {
			ret = rc_get(q, host / q->cs, &rc);
			if (ret < 0)
				return ret;
			if (rc == 0)
				return -EIO;
			if (rc == 1) {
				e |= OFLAG_COPIED;
				if (type == C_NORMAL)
					l2_set(q, slot, l2i, e);
			}
		}
	}
	if (type == C_NORMAL && (e & OFLAG_COPIED)) {
		/* Ours: write in place. */
		if (!c) {
			memset(q->bounce, 0, n);
			return file_write(q->fd, host + in, q->bounce, n);
		}
		return cur_io(q, true, host + in, c, n);
	}
	if (type == C_ZERO && host && (e & OFLAG_COPIED)) {
		/* A preallocated zero cluster: fill it, then drop the zero flag. */
		memset(q->bounce, 0, q->cs);
		if (c)
			cur_take(c, q->bounce + in, n);
		ret = file_write(q->fd, host, q->bounce, q->cs);
		if (ret == 0)
			l2_set(q, slot, l2i, host | OFLAG_COPIED);
		return ret;
	}

	/* A new cluster, with the old contents around the written part. */
	ret = alloc_cluster(q, &noff);
	if (ret < 0)
		return ret;
	if (n == q->cs && c) {
		ret = cur_io(q, true, noff, c, n);
	} else {
		if (n != q->cs) {
			ret = old_contents(q, cstart, e);
			if (ret < 0)
				return ret;
			if (type != C_UNALLOC || q->backing)
				q->cows++;
		}
		if (c)
			cur_take(c, q->bounce + in, n);
		else
			memset(q->bounce + in, 0, n);
		ret = file_write(q->fd, noff, q->bounce, q->cs);
	}
	if (ret < 0) {
		queue_free(q, noff / q->cs); /* never referenced */
		return ret;
	}
	file_grew(q, noff + q->cs);
	l2_set(q, slot, l2i, noff | OFLAG_COPIED);
	return free_entry(q, e);
}

enum zmode {
	Z_ZERO,
	Z_ZERO_UNMAP,
	Z_DISCARD,
};

/* Zero or discard [off, off + n) of one cluster. */
static int zero_chunk(struct qcow2 *q, uint64_t off, size_t n, enum zmode mode)
{
	uint64_t in = off & (q->cs - 1), l2i, e, ne, host;
	bool full = in == 0 && (n == q->cs || off + n == q->size);
	enum ctype type;
	int slot, ret;

	ret = lookup(q, off, false, &slot, &e);
	if (ret < 0)
		return ret;
	type = l2_type(q, e);
	if (type == C_BAD)
		return -EIO;
	if (type == C_ZERO ||
	    (type == C_UNALLOC && (!q->backing || (mode == Z_DISCARD && q->version == 2))))
		return 0; /* reads as it should already */
	if (!full) {
		if (mode == Z_DISCARD)
			return 0; /* a hint: partial clusters keep their data */
		return write_chunk(q, off, n, NULL);
	}
	if (q->version == 2 && q->backing && mode != Z_DISCARD)
		return write_chunk(q, off, n, NULL); /* no zero flag: write zeros */
	ret = lookup(q, off, true, &slot, &e);	     /* may copy a shared table */
	if (ret < 0)
		return ret;
	l2i = (off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1);
	type = l2_type(q, e);
	host = e & L2E_OFFSET_MASK;
	if (type == C_BAD)
		return -EIO;
	ne = q->version >= 3 && q->backing ? OFLAG_ZERO : 0;
	if (mode == Z_ZERO && q->version >= 3 && type == C_NORMAL && (e & OFLAG_COPIED))
		ne = e | OFLAG_ZERO; /* keep the allocation */
	if (ne == e)
		return 0;
	l2_set(q, slot, l2i, ne);
	if (ne & L2E_OFFSET_MASK)
		return 0;
	(void)host;
	return free_entry(q, e);
}

/* The metadata side of every operation, cluster by cluster. */
static int do_rw(struct qcow2 *q, bool write, uint64_t off, uint64_t len, struct iovcur *c)
{
	size_t n;
	int ret;

	if (write && q->broken)
		return -EIO;
	while (len) {
		n = q->cs - (off & (q->cs - 1));
		if (n > len)
			n = (size_t)len;
		ret = write ? write_chunk(q, off, n, c) : read_chunk(q, off, n, c);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

static int do_zero(struct qcow2 *q, uint64_t off, uint64_t len, enum zmode mode)
{
	uint64_t l2_cover = q->cs << q->l2_bits, skip;
	size_t n;
	int ret;

	if (q->broken)
		return -EIO;
	while (len) {
		/* Whole L2 ranges without a table need nothing when they read as zeros. */
		if (!(q->l1[off >> (q->cluster_bits + q->l2_bits)] & L1E_OFFSET_MASK) &&
		    (!q->backing || (mode == Z_DISCARD && q->version == 2))) {
			skip = l2_cover - (off & (l2_cover - 1));
			if (skip >= len)
				return 0;
			off += skip;
			len -= skip;
			continue;
		}
		n = q->cs - (off & (q->cs - 1));
		if (n > len)
			n = (size_t)len;
		ret = zero_chunk(q, off, n, mode);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

/* ---- Opening ---- */

static void img_free(struct qcow2 *q)
{
	struct qcow2 *b;
	struct qfast *f;

	while (q) {
		b = q->backing;
		while ((f = q->live)) {
			q->live = f->next;
			free(f);
		}
		while ((f = q->pool)) {
			q->pool = f->next;
			free(f);
		}
		cache_free(&q->l2c);
		cache_free(&q->rbc);
		free(q->l1);
		free(q->rt);
		free(q->frees);
		free(q->bounce);
		free(q->cbuf);
		free(q->dcache);
		free(q->sl);
		free(q->l2_spare);
		free(q->path);
		if (q->zs_ready)
			inflateEnd(&q->zs);
#if HAVE_ZSTD
		ZSTD_freeDCtx(q->zd);
#endif
		if (q->own_fd && q->fd >= 0)
			close(q->fd);
		pthread_mutex_destroy(&q->lock);
		pthread_cond_destroy(&q->drained);
		pthread_cond_destroy(&q->cond);
		free(q);
		q = b;
	}
}

static struct qcow2 *img_alloc(int fd, const char *path)
{
	struct qcow2 *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->fd = fd;
	q->path = strdup(path);
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->drained, NULL);
	pthread_cond_init(&q->cond, NULL);
	if (!q->path) {
		img_free(q);
		return NULL;
	}
	return q;
}

static int file_size_of(int fd, uint64_t *size, dev_t *dev, ino_t *ino)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*dev = st.st_dev;
	*ino = st.st_ino;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*size = (uint64_t)st.st_size;
	return 0;
}

/* Read a table of @n big-endian 64-bit entries at @off into host order. */
static int read_table(int fd, uint64_t off, uint64_t n, uint64_t **out)
{
	uint64_t *t = malloc((n ? n : 1) * sizeof(*t)), i;
	int ret;

	*out = t;
	if (!t)
		return -ENOMEM;
	ret = file_read(fd, off, t, n * 8);
	if (ret < 0)
		return ret;
	for (i = 0; i < n; i++)
		t[i] = get64((const uint8_t *)&t[i]);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Every L2 table and refcount block is its own cluster: two table pointers
 * to one cluster are corruption (and would let a small file make scans
 * quadratic). Returns true when they are all distinct.
 */
static bool tables_distinct(const struct qcow2 *q)
{
	uint64_t *all, n = 0, i;
	bool ok = true;

	all = malloc(((uint64_t)q->l1_size + q->rt_entries + 1) * sizeof(*all));
	if (!all)
		return false;
	for (i = 0; i < q->l1_size; i++)
		if (q->l1[i] & L1E_OFFSET_MASK)
			all[n++] = q->l1[i] & L1E_OFFSET_MASK;
	for (i = 0; i < q->rt_entries; i++)
		if (q->rt[i])
			all[n++] = q->rt[i];
	qsort(all, n, sizeof(*all), cmp_u64);
	for (i = 1; i < n && ok; i++)
		ok = all[i] != all[i - 1];
	free(all);
	return ok;
}

/* Parse the header and load the tables of the qcow2 image q->fd. */
static int img_load(struct qcow2 *q, uint64_t cache_bytes, struct vmm_err *err)
{
	struct qcow2_header *h;
	uint64_t fsize, i, e, need, slots;
	uint8_t *buf;
	size_t len;
	int ret;

	ret = file_size_of(q->fd, &fsize, &q->dev, &q->ino);
	if (ret < 0)
		return err_set(err, -ret, "%s: cannot stat: %s", q->path, strerror(-ret));
	/* The header cluster, whose size the header gives (the parser checks it). */
	len = 1u << QCOW2_MIN_CLUSTER_BITS;
	buf = malloc(len);
	h = malloc(sizeof(*h));
	if (buf && h && fsize >= 24 && file_read(q->fd, 20, buf, 4) == 0) {
		uint32_t cb =
			(uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | buf[2] << 8 | buf[3];

		if (cb > QCOW2_MIN_CLUSTER_BITS && cb <= QCOW2_MAX_CLUSTER_BITS) {
			free(buf);
			len = (size_t)1 << cb;
			buf = malloc(len);
		}
	}
	if (!h || !buf) {
		free(h);
		free(buf);
		return err_set(err, ENOMEM, "%s: out of memory", q->path);
	}
	if (len > fsize)
		len = (size_t)fsize;
	ret = file_read(q->fd, 0, buf, len);
	if (ret < 0) {
		err_set(err, -ret, "%s: cannot read the header: %s", q->path, strerror(-ret));
		goto out;
	}
	ret = qcow2_parse_header(buf, len, fsize, h, err);
	if (ret < 0) {
		char msg[VMM_ERR_MAX];

		snprintf(msg, sizeof(msg), "%s", err ? err->msg : "");
		err_set(err, -ret, "qcow2 image %s: %s", q->path, msg);
		goto out;
	}
	q->version = h->version;
	q->cluster_bits = h->cluster_bits;
	q->cs = 1ull << h->cluster_bits;
	q->l2_bits = h->cluster_bits - 3;
	q->rc_order = h->refcount_order;
	q->rb_entries = q->cs * 8 >> h->refcount_order;
	q->compression = h->compression_type;
	q->size = h->size;
	q->file_size = fsize;
	q->l1_off = h->l1_offset;
	q->l1_size = h->l1_size;
	q->rt_off = h->refcount_table_offset;
	q->rt_clusters = h->refcount_table_clusters;
	q->rt_entries = (uint64_t)h->refcount_table_clusters * q->cs / 8;
	q->free_hint = 1;

	ret = read_table(q->fd, q->l1_off, q->l1_size, &q->l1);
	if (!ret)
		ret = read_table(q->fd, q->rt_off, q->rt_entries, &q->rt);
	if (ret < 0) {
		err_set(err, -ret, "qcow2 image %s: cannot read its tables: %s", q->path,
			strerror(-ret));
		goto out;
	}
	for (i = 0; i < q->l1_size; i++) {
		e = q->l1[i];
		if ((e & L1E_RESERVED) ||
		    ((e & L1E_OFFSET_MASK) && !l2_off_ok(q, e & L1E_OFFSET_MASK))) {
			ret = err_set(err, EINVAL,
				      "qcow2 image %s: L1 entry %llu (%#llx) is invalid", q->path,
				      (unsigned long long)i, (unsigned long long)e);
			goto out;
		}
	}
	for (i = 0; i < q->rt_entries; i++) {
		e = q->rt[i];
		if (e && (e & ~RTE_OFFSET_MASK || e % q->cs || e >= fsize ||
			  meta_overlap(q, e, q->cs))) {
			ret = err_set(
				err, EINVAL,
				"qcow2 image %s: refcount table entry %llu (%#llx) is invalid",
				q->path, (unsigned long long)i, (unsigned long long)e);
			goto out;
		}
	}

	if (!tables_distinct(q)) {
		ret = err_set(err, EINVAL, "qcow2 image %s: two tables share a cluster", q->path);
		goto out;
	}

	/* Enough L2 tables to map the whole disk, within the budget. */
	need = q->size ? ceil_div(q->size, q->cs << q->l2_bits) : 1;
	slots = (cache_bytes ? cache_bytes : DISK_DEFAULT_CACHE) / q->cs;
	if (slots > need)
		slots = need;
	if (slots < 1)
		slots = 1;
	if (cache_init(&q->l2c, (unsigned int)slots) < 0 ||
	    cache_init(&q->rbc, slots / 4 > 2 ? (unsigned int)(slots / 4) : 2) < 0) {
		ret = err_set(err, ENOMEM, "%s: out of memory", q->path);
		goto out;
	}
	ret = 0;
out:
	free(buf);
	free(h);
	return ret;
}

/* Open a backing file read-only with a shared lock. */
static int open_backing_file(const char *path, int *fd_out)
{
	struct flock lk = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
	struct stat st;
	int fd, fl, e;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
		close(fd);
		return -EINVAL;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 || fcntl(fd, F_OFD_SETLK, &lk) < 0) {
		e = errno == EAGAIN || errno == EACCES ? EBUSY : errno;
		close(fd);
		return -e;
	}
	*fd_out = fd;
	return 0;
}

/* @name resolved against the directory of @base. */
static char *resolve(const char *base, const char *name)
{
	const char *slash = strrchr(base, '/');
	size_t dlen = slash ? (size_t)(slash - base) + 1 : 0;
	char *p;

	if (name[0] == '/' || !dlen)
		return strdup(name);
	p = malloc(dlen + strlen(name) + 1);
	if (!p)
		return NULL;
	memcpy(p, base, dlen);
	strcpy(p + dlen, name);
	return p;
}

/* Read the backing name and format of the qcow2 image q (header already checked). */
static int backing_of(struct qcow2 *q, struct qcow2_header *h, struct vmm_err *err)
{
	uint8_t *buf;
	size_t len = q->file_size < q->cs ? (size_t)q->file_size : (size_t)q->cs;
	int ret;

	buf = malloc(q->cs);
	if (!buf)
		return err_set(err, ENOMEM, "%s: out of memory", q->path);
	ret = file_read(q->fd, 0, buf, len);
	if (!ret)
		ret = qcow2_parse_header(buf, len, q->file_size, h, err);
	free(buf);
	return ret;
}

static int open_chain(struct qcow2 *top, const struct qcow2_opts *o, struct vmm_err *err)
{
	struct qcow2 *cur = top, *b, *it;
	struct qcow2_header *h;
	unsigned int depth = 1;
	uint8_t magic[4];
	char *path;
	int fd, ret = 0;
	bool qcow;

	h = malloc(sizeof(*h));
	if (!h)
		return err_set(err, ENOMEM, "out of memory");
	for (;;) {
		ret = backing_of(cur, h, err);
		if (ret < 0)
			break;
		if (!h->has_backing)
			break;
		if (o->no_backing) {
			ret = err_set(err, ENOTSUP,
				      "qcow2 image %s: backing files are not allowed here",
				      cur->path);
			break;
		}
		if (++depth > QCOW2_MAX_CHAIN) {
			ret = err_set(err, ELOOP,
				      "qcow2 image %s: backing chain longer than %u images",
				      top->path, QCOW2_MAX_CHAIN);
			break;
		}
		path = resolve(cur->path, h->backing);
		if (!path) {
			ret = err_set(err, ENOMEM, "out of memory");
			break;
		}
		ret = open_backing_file(path, &fd);
		if (ret < 0) {
			if (ret == -ENOENT)
				err_set(err, ENOENT, "backing file %s of %s does not exist", path,
					cur->path);
			else
				err_set(err, -ret, "cannot open backing file %s of %s: %s", path,
					cur->path, strerror(-ret));
			free(path);
			break;
		}
		b = img_alloc(fd, path);
		free(path);
		if (!b) {
			close(fd);
			ret = err_set(err, ENOMEM, "out of memory");
			break;
		}
		b->own_fd = true;
		b->read_only = true;
		cur->backing = b;
		ret = file_size_of(fd, &b->file_size, &b->dev, &b->ino);
		if (ret < 0) {
			err_set(err, -ret, "cannot stat backing file %s: %s", b->path,
				strerror(-ret));
			break;
		}
		for (it = top; it != b; it = it->backing) {
			if (it->dev == b->dev && it->ino == b->ino) {
				ret = err_set(err, ELOOP, "backing chain of %s loops at %s",
					      top->path, b->path);
				goto out;
			}
		}
		if (h->backing_format[0] && strcmp(h->backing_format, "raw") &&
		    strcmp(h->backing_format, "qcow2")) {
			ret = err_set(err, ENOTSUP,
				      "backing file %s has format '%s' (only raw and "
				      "qcow2 are supported)",
				      b->path, h->backing_format);
			break;
		}
		if (h->backing_format[0])
			qcow = !strcmp(h->backing_format, "qcow2");
		else
			qcow = pread(fd, magic, 4, 0) == 4 && qcow2_probe(magic, 4);
		if (!qcow) {
			b->raw = true;
			b->size = b->file_size;
			break;
		}
		ret = img_load(b, o->cache_bytes, err);
		if (ret < 0)
			break;
		cur = b;
	}
out:
	free(h);
	return ret;
}

int qcow2_open(int fd, const char *path, const struct qcow2_opts *o, struct qcow2 **out,
	       struct vmm_err *err)
{
	static const uint8_t zero8[8];
	struct qcow2_header h;
	struct qcow2 *q;
	int ret;

	*out = NULL;
	q = img_alloc(fd, path);
	if (!q)
		return err_set(err, ENOMEM, "%s: out of memory", path);
	q->read_only = o->read_only;
	ret = img_load(q, o->cache_bytes, err);
	if (ret == 0)
		ret = open_chain(q, o, err);
	if (ret == 0 && !q->read_only) {
		/* Unknown auto-clear features must be cleared before writing. */
		ret = backing_of(q, &h, err);
		if (ret == 0 && h.version >= 3 && h.autoclear) {
			ret = file_write(fd, 88, zero8, 8);
			if (ret == 0)
				ret = file_sync(q);
			if (ret < 0)
				err_set(err, -ret,
					"qcow2 image %s: cannot clear auto-clear features: %s",
					path, strerror(-ret));
		}
	}
	if (ret < 0) {
		img_free(q);
		return ret;
	}
	*out = q;
	return 0;
}

uint64_t qcow2_size(const struct qcow2 *q)
{
	return q->size;
}

void qcow2_get_stats(struct qcow2 *q, struct qcow2_stats *s)
{
	pthread_mutex_lock(&q->lock);
	s->l2_hits = q->l2c.hits;
	s->l2_misses = q->l2c.misses;
	s->l2_evictions = q->l2c.evictions;
	s->l2_slots = q->l2c.nslots;
	pthread_mutex_unlock(&q->lock);
	s->allocations = q->allocations;
	s->cow = q->cows;
	s->fast = q->nfast;
	s->slow = q->nslow;
	s->checkpoints = q->checkpoints;
}

/* ---- Asynchronous use ---- */

void qcow2_attach(struct qcow2 *q, struct disk *d)
{
	q->disk = d;
}

/* Run one request on the metadata side; returns its result. */
static int64_t run_req(struct qcow2 *q, struct disk_req *r)
{
	struct iovcur c;
	int ret = 0;

	switch (r->op) {
	case DISK_OP_READ:
	case DISK_OP_WRITE:
		cur_init(&c, r->iov, r->iovcnt);
		ret = do_rw(q, r->op == DISK_OP_WRITE, r->offset, r->priv.total, &c);
		return ret < 0 ? ret : (int64_t)r->priv.total;
	case DISK_OP_FLUSH:
		ret = do_flush(q);
		break;
	case DISK_OP_DISCARD:
		ret = do_zero(q, r->offset, r->len, Z_DISCARD);
		break;
	case DISK_OP_WRITE_ZEROES:
		ret = do_zero(q, r->offset, r->len,
			      r->flags & DISK_REQ_F_UNMAP ? Z_ZERO_UNMAP : Z_ZERO);
		break;
	}
	return ret;
}

static void *meta_main(void *arg)
{
	struct qcow2 *q = arg;
	struct disk_req *r;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->stop && !q->qhead)
			pthread_cond_wait(&q->cond, &q->lock);
		if (q->stop)
			break;
		r = q->qhead;
		q->qhead = r->priv.next;
		if (!q->qhead)
			q->qtail = NULL;
		pthread_mutex_unlock(&q->lock);
		r->result = run_req(q, r);
		disk_req_finish_async(q->disk, r);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static int slow_submit(struct qcow2 *q, struct disk_req *r)
{
	sigset_t all, old;
	int ret = 0;

	pthread_mutex_lock(&q->lock);
	if (!q->thread_started) {
		/* Started at the first request, so none exists before a sandbox forks. */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		ret = pthread_create(&q->thread, NULL, meta_main, q);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (ret) {
			pthread_mutex_unlock(&q->lock);
			return -EAGAIN;
		}
		q->thread_started = true;
	}
	r->priv.next = NULL;
	if (q->qtail)
		q->qtail->priv.next = r;
	else
		q->qhead = r;
	q->qtail = r;
	q->nslow++;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return ret;
}

static void fast_done(struct disk_req *child)
{
	struct qfast *f = child->opaque;
	struct qcow2 *q = f->q;
	struct disk_req *r = f->parent;

	if (child->result < 0 && !f->err)
		f->err = child->result;
	if (--f->pending)
		return;
	if (atomic_fetch_sub(&q->fast_inflight, 1) == 1 && atomic_load(&q->draining)) {
		pthread_mutex_lock(&q->lock);
		pthread_cond_signal(&q->drained);
		pthread_mutex_unlock(&q->lock);
	}
	if (f->prev)
		f->prev->next = f->next;
	else
		q->live = f->next;
	if (f->next)
		f->next->prev = f->prev;
	r->result = f->err ? f->err : (int64_t)r->priv.total;
	if (f->pooled && q->npool < FAST_POOL_MAX) {
		f->next = q->pool;
		q->pool = f;
		q->npool++;
	} else {
		free(f);
	}
	disk_req_finish(q->disk, r);
}

struct extent {
	uint64_t pos, len; /* within the request */
	int fd;		   /* -1: zeros */
	uint64_t host;
};

/*
 * Map [off, off + *len) of the top image @top (whose lock the caller holds)
 * down the backing chain from the caches alone, shortening *len to what
 * one cluster of every image consulted covers. Sets *fd and *host (*fd -1:
 * zeros). Returns 1 when the metadata thread must do it: a table not in a
 * cache, a compressed cluster, a write that is not in place, anything odd.
 */
static int fast_map(struct qcow2 *top, uint64_t off, uint64_t *len, bool write, int *fd,
		    uint64_t *host)
{
	struct qcow2 *q = top;
	uint64_t in, l1e, e;
	int slot, ret = 1;

	for (;;) {
		if (!q || off >= q->size) {
			*fd = -1; /* no backing file, or past its end */
			return 0;
		}
		if (q->raw) {
			if (*len > q->size - off)
				*len = q->size - off;
			*fd = q->fd;
			*host = off;
			return 0;
		}
		in = off & (q->cs - 1);
		if (*len > q->cs - in)
			*len = q->cs - in;
		if (q != top)
			pthread_mutex_lock(&q->lock);
		l1e = q->l1[off >> (q->cluster_bits + q->l2_bits)];
		e = 0;
		if (l1e & L1E_OFFSET_MASK) {
			slot = cache_find(&q->l2c, l1e & L1E_OFFSET_MASK);
			if (slot < 0)
				goto out;
			e = l2_entry(q, slot,
				     (off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1));
		}
		switch (l2_type(q, e)) {
		case C_NORMAL:
			*host = e & L2E_OFFSET_MASK;
			if (*host + q->cs > q->file_size ||
			    (write && (!(e & OFLAG_COPIED) || meta_overlap(q, *host, q->cs))))
				goto out;
			*host += in;
			*fd = q->fd;
			ret = 0;
			goto out;
		case C_ZERO:
			*fd = -1;
			ret = write;
			goto out;
		case C_UNALLOC:
			if (write)
				goto out;
			if (q != top)
				pthread_mutex_unlock(&q->lock);
			q = q->backing;
			continue;
		default:
			goto out;
		}
	}
out:
	if (q != top)
		pthread_mutex_unlock(&q->lock);
	return ret;
}

/*
 * Serve a READ or WRITE from the L2 caches when every cluster it touches is
 * mapped (owned, for a write). Returns 0 when done so, 1 when the request
 * needs the metadata thread, -errno when the engine refused.
 */
static int fast_submit(struct qcow2 *q, struct disk_req *r)
{
	struct extent ext[FAST_MAX_EXTENTS];
	bool write = r->op == DISK_OP_WRITE;
	unsigned int n = 0, ndata = 0, i, k;
	uint64_t pos = 0, len, host = 0;
	struct qfast *f;
	struct iovec *iov;
	struct iovcur c;
	int fd, ret;

	pthread_mutex_lock(&q->lock);
	if (atomic_load(&q->draining) || q->broken)
		goto slow;
	while (pos < r->priv.total) {
		len = r->priv.total - pos;
		if (fast_map(q, r->offset + pos, &len, write, &fd, &host))
			goto slow;
		if (n && ext[n - 1].fd == fd &&
		    (fd < 0 || ext[n - 1].host + ext[n - 1].len == host)) {
			ext[n - 1].len += len;
		} else {
			if (n == FAST_MAX_EXTENTS)
				goto slow;
			ext[n].pos = pos;
			ext[n].len = len;
			ext[n].fd = fd;
			ext[n].host = host;
			ndata += fd >= 0;
			n++;
		}
		pos += len;
	}
	if (ndata)
		atomic_fetch_add(&q->fast_inflight, 1);
	q->nfast++;
	pthread_mutex_unlock(&q->lock);

	/* Zeros first (reads only), then the data extents go to the engine. */
	if (ndata < n) {
		cur_init(&c, r->iov, r->iovcnt);
		for (pos = 0, i = 0; i < n; i++) {
			cur_advance(&c, ext[i].pos - pos);
			pos = ext[i].pos;
			if (ext[i].fd < 0) {
				cur_fill(&c, NULL, ext[i].len);
				pos += ext[i].len;
			}
		}
	}
	if (!ndata) {
		r->result = (int64_t)r->priv.total;
		disk_req_finish_async(q->disk, r);
		return 0;
	}
	if (ndata == 1 && r->iovcnt + 1 <= FAST_POOL_IOV && q->pool) {
		f = q->pool;
		q->pool = f->next;
		q->npool--;
		memset(f, 0, sizeof(*f) + sizeof(struct disk_req));
		f->pooled = true;
	} else {
		bool small = ndata == 1 && r->iovcnt + 1 <= FAST_POOL_IOV;

		f = calloc(1, sizeof(*f) + ndata * sizeof(struct disk_req) +
				      (small ? FAST_POOL_IOV : r->iovcnt + ndata) *
					      sizeof(struct iovec));
		if (!f) {
			ret = -ENOMEM;
			goto undo;
		}
		f->pooled = small;
	}
	f->q = q;
	f->parent = r;
	f->pending = ndata;
	iov = (struct iovec *)&f->child[ndata];
	cur_init(&c, r->iov, r->iovcnt);
	for (pos = 0, i = 0, k = 0; i < n; i++) {
		struct disk_req *ch;

		if (ext[i].fd < 0)
			continue;
		cur_advance(&c, ext[i].pos - pos);
		pos = ext[i].pos;
		ch = &f->child[k++];
		ch->op = r->op;
		ch->offset = ext[i].host;
		ch->iov = iov;
		ch->iovcnt = cur_slice(&c, ext[i].len, iov, r->iovcnt + 1);
		ch->done = fast_done;
		ch->opaque = f;
		ch->priv.fd = ext[i].fd;
		iov += ch->iovcnt;
	}
	f->next = q->live;
	if (q->live)
		q->live->prev = f;
	q->live = f;
	for (k = 0; k < ndata; k++) {
		ret = disk_engine_submit(q->disk, &f->child[k], f->child[k].priv.fd);
		if (ret < 0) {
			if (k == 0) {
				q->live = f->next;
				if (q->live)
					q->live->prev = NULL;
				free(f);
				goto undo;
			}
			/* Not reached with a started engine; finish what was sent. */
			f->err = ret;
			f->pending -= ndata - k;
			break;
		}
	}
	return 0;

undo:
	atomic_fetch_sub(&q->fast_inflight, 1);
	return ret;
slow:
	pthread_mutex_unlock(&q->lock);
	return 1;
}

int qcow2_submit(struct qcow2 *q, struct disk_req *r)
{
	int ret;

	if ((r->op == DISK_OP_READ || r->op == DISK_OP_WRITE) && r->priv.total) {
		ret = fast_submit(q, r);
		if (ret <= 0)
			return ret;
	}
	return slow_submit(q, r);
}

void qcow2_stop(struct qcow2 *q)
{
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	pthread_cond_broadcast(&q->drained);
	pthread_mutex_unlock(&q->lock);
	if (q->thread_started)
		pthread_join(q->thread, NULL);
	q->thread_started = false;
}

int qcow2_fds(const struct qcow2 *q, int *fds, int max)
{
	int n = 0;

	for (const struct qcow2 *b = q->backing; b; b = b->backing) {
		if (!b->own_fd || b->fd < 0)
			continue;
		if (n < max)
			fds[n] = b->fd;
		n++;
	}
	return n;
}

void qcow2_close(struct qcow2 *q)
{
	if (!q)
		return;
	if (q->thread_started)
		qcow2_stop(q);
	/* The engine has stopped: nothing targets freed clusters any more. */
	atomic_store(&q->fast_inflight, 0);
	q->stop = false;
	if (!q->read_only && !q->broken)
		do_flush(q);
	img_free(q);
}

/* ---- Synchronous API ---- */

static int sync_check(struct qcow2 *q, uint64_t off, uint64_t len, bool write)
{
	if (write && q->read_only)
		return -EROFS;
	if (off > q->size || len > q->size - off)
		return -EINVAL;
	return 0;
}

int qcow2_read(struct qcow2 *q, uint64_t off, void *buf, size_t len)
{
	struct iovec v = {buf, len};
	struct iovcur c;
	int ret = sync_check(q, off, len, false);

	if (ret < 0)
		return ret;
	cur_init(&c, &v, 1);
	return do_rw(q, false, off, len, &c);
}

int qcow2_write(struct qcow2 *q, uint64_t off, const void *buf, size_t len)
{
	struct iovec v = {(void *)(uintptr_t)buf, len};
	struct iovcur c;
	int ret = sync_check(q, off, len, true);

	if (ret < 0)
		return ret;
	cur_init(&c, &v, 1);
	return do_rw(q, true, off, len, &c);
}

int qcow2_discard(struct qcow2 *q, uint64_t off, uint64_t len)
{
	int ret = sync_check(q, off, len, true);

	return ret < 0 ? ret : do_zero(q, off, len, Z_DISCARD);
}

int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len, bool unmap)
{
	int ret = sync_check(q, off, len, true);

	return ret < 0 ? ret : do_zero(q, off, len, unmap ? Z_ZERO_UNMAP : Z_ZERO);
}

int qcow2_flush(struct qcow2 *q)
{
	return q->read_only ? 0 : do_flush(q);
}

/* ---- Creation ---- */

static const struct {
	uint8_t type, bit;
	const char *name;
} feature_table[] = {
	{0, 0, "dirty bit"},	    {0, 1, "corrupt bit"},	   {0, 2, "external data file"},
	{0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
	{2, 0, "bitmaps"},	    {2, 1, "raw external data"},
};

/* Size and format of the backing file at @path (probed, fully opened when qcow2). */
static int probe_backing(const char *path, const char *shown, uint64_t *size, bool *qcow,
			 struct vmm_err *err)
{
	struct qcow2_opts o = {.read_only = true, .cache_bytes = 1};
	struct qcow2 *b;
	uint8_t magic[4];
	dev_t dev;
	ino_t ino;
	int fd, ret;

	ret = open_backing_file(path, &fd);
	if (ret < 0) {
		if (ret == -ENOENT)
			return err_set(err, ENOENT, "backing file %s does not exist", shown);
		return err_set(err, -ret, "cannot open backing file %s: %s", shown, strerror(-ret));
	}
	*qcow = pread(fd, magic, 4, 0) == 4 && qcow2_probe(magic, 4);
	if (*qcow) {
		ret = qcow2_open(fd, path, &o, &b, err);
		if (ret == 0) {
			*size = b->size;
			qcow2_close(b);
		}
	} else {
		ret = file_size_of(fd, size, &dev, &ino);
		if (ret < 0)
			err_set(err, -ret, "cannot stat backing file %s: %s", shown,
				strerror(-ret));
	}
	close(fd);
	return ret;
}

int qcow2_create(const char *path, uint64_t size, unsigned int cluster_bits, const char *backing,
		 struct vmm_err *err)
{
	uint64_t cs, l1_entries, E, R = 1, B = 1, L, total, i, l2_cover;
	size_t hlen, off, blen = backing ? strlen(backing) : 0;
	uint8_t *buf = NULL;
	bool qcow = false;
	char *bpath;
	int fd, ret;

	if (!path || !*path)
		return err_set(err, EINVAL, "image path is empty");
	if (!cluster_bits)
		cluster_bits = QCOW2_DEFAULT_CLUSTER_BITS;
	if (cluster_bits < QCOW2_MIN_CLUSTER_BITS || cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return err_set(err, EINVAL, "%s: cluster_bits %u outside %u..%u", path,
			       cluster_bits, QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
	cs = 1ull << cluster_bits;
	if (backing) {
		if (!blen || blen > QCOW2_MAX_BACKING_NAME)
			return err_set(err, EINVAL, "%s: backing file name of %zu bytes", path,
				       blen);
		bpath = resolve(path, backing);
		if (!bpath)
			return err_set(err, ENOMEM, "out of memory");
		i = 0;
		ret = probe_backing(bpath, backing, &i, &qcow, err);
		free(bpath);
		if (ret < 0)
			return ret;
		if (!size)
			size = i;
	}
	if (size > INT64_MAX - 511)
		return err_set(err, EINVAL, "%s: size %llu is too large", path,
			       (unsigned long long)size);
	size = (size + 511) & ~511ull;
	l2_cover = cs * (cs / 8);
	l1_entries = ceil_div(size, l2_cover);
	if (l1_entries * 8 > MAX_L1_BYTES)
		return err_set(err, EINVAL, "%s: size %llu is too large for %llu-byte clusters",
			       path, (unsigned long long)size, (unsigned long long)cs);
	/* Header, refcount table, refcount blocks, L1 table: refcounts cover them all. */
	E = cs * 8 / 16;
	L = ceil_div(l1_entries * 8, cs);
	for (;;) {
		total = 1 + R + B + L;
		if (ceil_div(total, E) <= B && ceil_div(B * 8, cs) <= R)
			break;
		B = ceil_div(total, E);
		R = ceil_div(B * 8, cs);
	}
	hlen = 112;
	buf = calloc(1 + R + B, cs);
	if (!buf)
		return err_set(err, ENOMEM, "out of memory");
	put32(buf, QCOW2_MAGIC);
	put32(buf + 4, 3);
	put32(buf + 20, cluster_bits);
	put64(buf + 24, size);
	put32(buf + 36, (uint32_t)l1_entries);
	put64(buf + 40, (1 + R + B) * cs);
	put64(buf + 48, cs);
	put32(buf + 56, (uint32_t)R);
	put32(buf + 96, 4);
	put32(buf + 100, (uint32_t)hlen);
	off = hlen;
	if (backing) {
		const char *fmt = qcow ? "qcow2" : "raw";

		put32(buf + off, EXT_BACKING_FMT);
		put32(buf + off + 4, (uint32_t)strlen(fmt));
		memcpy(buf + off + 8, fmt, strlen(fmt));
		off += 8 + ((strlen(fmt) + 7) & ~7ul);
	}
	put32(buf + off, EXT_FEATURES);
	put32(buf + off + 4, (uint32_t)(48 * (sizeof(feature_table) / sizeof(feature_table[0]))));
	off += 8;
	for (i = 0; i < sizeof(feature_table) / sizeof(feature_table[0]); i++, off += 48) {
		buf[off] = feature_table[i].type;
		buf[off + 1] = feature_table[i].bit;
		memcpy(buf + off + 2, feature_table[i].name, strlen(feature_table[i].name));
	}
	off += 8; /* end of extensions */
	if (backing) {
		if (off + blen > cs) {
			free(buf);
			return err_set(err, EINVAL, "%s: backing file name does not fit the header",
				       path);
		}
		put64(buf + 8, off);
		put32(buf + 16, (uint32_t)blen);
		memcpy(buf + off, backing, blen);
	}
	for (i = 0; i < B; i++)
		put64(buf + cs + i * 8, (1 + R + i) * cs);
	for (i = 0; i < total; i++)
		rb_set(buf + (1 + R) * cs + (i / E) * cs, 4, i % E, 1);

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0) {
		ret = -errno;
		free(buf);
		if (ret == -EEXIST)
			return err_set(err, EEXIST, "%s already exists", path);
		return err_set(err, -ret, "cannot create %s: %s", path, strerror(-ret));
	}
	ret = file_write(fd, 0, buf, (1 + R + B) * cs);
	if (!ret && ftruncate(fd, (off_t)((1 + R + B) * cs + l1_entries * 8)) < 0)
		ret = -errno;
	if (!ret && fdatasync(fd) < 0)
		ret = -errno;
	close(fd);
	free(buf);
	if (ret < 0) {
		unlink(path);
		return err_set(err, -ret, "cannot write %s: %s", path, strerror(-ret));
	}
	return 0;
}
