/* Unit tests for virtio-balloon: config space, target changes, inflating on fake and memfd RAM. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/virtio_balloon.h"
#include "lib/layout.h"
#include "virtio_test_util.h"

#define RAM_SIZE  (1024 * 1024)
#define QSIZE	  16
#define PAGE	  4096u
#define PATTERN	  0xa5
#define NQ	  2
#define Q_INFLATE VIRTIO_BALLOON_Q_INFLATE
#define Q_DEFLATE VIRTIO_BALLOON_Q_DEFLATE

struct fixture {
	struct vt_dev d;
	struct virtio_balloon *b; /* d.dev.dev */
};

/* A balloon on @size bytes of guest RAM of @kind, its two queues laid out with @flags (VT_*). */
static struct fixture *fixture_new_size(enum vt_ram_kind kind, uint64_t size, unsigned int flags)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	if (kind == VT_RAM_HEAP)
		vt_guest_init(&f->d.g, size);
	else if (kind == VT_RAM_SPARSE)
		vt_guest_init_sparse(&f->d.g, size);
	else
		vt_guest_init_shared(&f->d.g, size); /* queues and test pages below the hole */
	vt_dev_queues_init(&f->d, NQ, QSIZE, flags, 1ull << VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
	assert_int_equal(virtio_balloon_create(&f->d.g.mem, &f->d.dev, &f->b, NULL), 0);
	assert_ptr_equal(f->b, f->d.dev.dev);
	return f;
}

static struct fixture *fixture_new(enum vt_ram_kind kind)
{
	return fixture_new_size(kind, kind == VT_RAM_SHARED ? MiB(64) : RAM_SIZE, VT_EVENT_IDX);
}

static void fixture_free(struct fixture *f)
{
	vt_dev_destroy(&f->d);
	free(f);
}

/* @n page-aligned pages of guest RAM filled with PATTERN; returns the first PFN. */
static uint32_t alloc_pages(struct fixture *f, unsigned int n)
{
	uint64_t gpa = vt_alloc(&f->d.g, (uint64_t)n * PAGE, PAGE);

	memset(vt_host(&f->d.g, gpa, (uint64_t)n * PAGE), PATTERN, (uint64_t)n * PAGE);
	return (uint32_t)(gpa / PAGE);
}

/* A readable buffer holding @pfns as le32. */
static struct vt_buf pfn_buf(struct fixture *f, const uint32_t *pfns, unsigned int n)
{
	struct vt_buf b = vt_buf_new(&f->d.g, n * 4, false);
	uint8_t *p = vt_host(&f->d.g, b.gpa, b.len);

	for (unsigned int i = 0; i < n; i++) {
		uint32_t v = htole32(pfns[i]);

		memcpy(p + 4 * i, &v, 4);
	}
	return b;
}

static bool page_is(struct fixture *f, uint32_t pfn, uint8_t v)
{
	const uint8_t *p = gm_ptr(&f->d.g.mem, (uint64_t)pfn * PAGE, PAGE);

	assert_non_null(p);
	return vt_filled(p, PAGE, v);
}

/* Put one chain of @bufs on queue @q, kick, and wait until the device returns it with 0 bytes. */
static void run_chain(struct fixture *f, unsigned int q, const struct vt_buf *bufs, unsigned int n)
{
	uint16_t head = vt_add_chain(&f->d.vq[q], bufs, n);
	uint32_t id, len;

	vt_dev_kick(&f->d, q);
	vt_dev_wait_used(&f->d, q, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, 0);
}

static void inflate(struct fixture *f, const uint32_t *pfns, unsigned int n)
{
	struct vt_buf b = pfn_buf(f, pfns, n);

	run_chain(f, Q_INFLATE, &b, 1);
}

static struct virtio_balloon_counters counters(struct fixture *f)
{
	struct virtio_balloon_counters c;

	virtio_balloon_get_counters(f->b, &c);
	return c;
}

static uint64_t memfd_blocks(struct fixture *f)
{
	struct stat st;

	assert_int_equal(fstat(f->d.g.mem.fd, &st), 0);
	return (uint64_t)st.st_blocks;
}

static uint32_t cfg_read32(struct fixture *f, uint32_t off)
{
	uint32_t v;

	f->d.dev.ops->config_read(f->d.dev.dev, off, (uint8_t *)&v, 4);
	return le32toh(v);
}

static void cfg_write32(struct fixture *f, uint32_t off, uint32_t val)
{
	uint32_t v = htole32(val);

	f->d.dev.ops->config_write(f->d.dev.dev, off, (const uint8_t *)&v, 4);
}

static void test_ops(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_HEAP);
	const struct virtio_device_ops *ops = f->d.dev.ops;
	uint64_t feat = ops->features(f->d.dev.dev);

	assert_string_equal(ops->name, "virtio-balloon");
	assert_int_equal(ops->device_id, VIRTIO_ID_BALLOON);
	assert_int_equal(ops->device_id, 5);
	assert_int_equal(ops->nqueues, 2);
	assert_int_equal(ops->config_size, 8);
	assert_true(ops->queue_max >= 1 && !(ops->queue_max & (ops->queue_max - 1)));
	assert_true(feat & (1ull << VIRTIO_BALLOON_F_DEFLATE_ON_OOM));
	assert_false(feat & (1ull << VIRTIO_BALLOON_F_STATS_VQ));
	assert_false(feat & (1ull << VIRTIO_BALLOON_F_MUST_TELL_HOST));
	/* reset without activate, and twice, is harmless. */
	ops->reset(f->d.dev.dev);
	ops->reset(f->d.dev.dev);
	fixture_free(f);
}

static void test_config(void **state)
{
	/* 1 GiB of sparse RAM, so that a target of 0x12345 pages fits. */
	const uint64_t ram = GiB(1);
	struct fixture *f = fixture_new_size(VT_RAM_SPARSE, ram, 0);
	uint8_t raw[8], one;
	uint16_t two;

	assert_int_equal(virtio_balloon_target(f->b), 0);
	assert_int_equal(virtio_balloon_actual(f->b), 0);
	assert_int_equal(cfg_read32(f, 0), 0);
	assert_int_equal(cfg_read32(f, 4), 0);

	/* num_pages in little endian, whole and partial reads. */
	assert_int_equal(virtio_balloon_set_target(f->b, 0x12345 * 4096ull), 0);
	assert_int_equal(virtio_balloon_target(f->b), 0x12345 * 4096ull);
	f->d.dev.ops->config_read(f->d.dev.dev, 0, raw, 8);
	assert_int_equal(raw[0], 0x45);
	assert_int_equal(raw[1], 0x23);
	assert_int_equal(raw[2], 0x01);
	assert_int_equal(raw[3], 0x00);
	assert_int_equal(cfg_read32(f, 0), 0x12345);
	f->d.dev.ops->config_read(f->d.dev.dev, 1, &one, 1);
	assert_int_equal(one, 0x23);
	f->d.dev.ops->config_read(f->d.dev.dev, 2, (uint8_t *)&two, 2);
	assert_int_equal(le16toh(two), 0x0001);

	/* The target rounds down to pages and may not exceed RAM. */
	assert_int_equal(virtio_balloon_set_target(f->b, 3 * 4096 + 4095), 0);
	assert_int_equal(cfg_read32(f, 0), 3);
	assert_int_equal(virtio_balloon_target(f->b), 3 * 4096);
	assert_int_equal(virtio_balloon_set_target(f->b, ram + 1), -EINVAL);
	assert_int_equal(virtio_balloon_set_target(f->b, UINT64_MAX), -EINVAL);
	assert_int_equal(cfg_read32(f, 0), 3);
	assert_int_equal(virtio_balloon_set_target(f->b, ram), 0);
	assert_int_equal(cfg_read32(f, 0), ram / 4096);

	/* The driver writes actual; writes to num_pages are ignored. */
	cfg_write32(f, 4, 100);
	assert_int_equal(cfg_read32(f, 4), 100);
	assert_int_equal(virtio_balloon_actual(f->b), 100 * 4096);
	cfg_write32(f, 0, 7);
	assert_int_equal(cfg_read32(f, 0), ram / 4096);
	/* Partial writes merge into actual. */
	one = 0x02;
	f->d.dev.ops->config_write(f->d.dev.dev, 5, &one, 1);
	assert_int_equal(cfg_read32(f, 4), 0x264);
	two = htole16(0x0102);
	f->d.dev.ops->config_write(f->d.dev.dev, 6, (uint8_t *)&two, 2);
	assert_int_equal(cfg_read32(f, 4), 0x01020264);
	/* A write straddling both fields changes only actual's bytes. */
	memcpy(raw, "\x11\x22\x33\x44", 4);
	f->d.dev.ops->config_write(f->d.dev.dev, 2, raw, 4);
	assert_int_equal(cfg_read32(f, 0), ram / 4096);
	assert_int_equal(cfg_read32(f, 4), 0x01024433);
	/* Out-of-range accesses (the transport never makes them) are harmless. */
	f->d.dev.ops->config_write(f->d.dev.dev, 6, raw, 4);
	f->d.dev.ops->config_write(f->d.dev.dev, UINT32_MAX, raw, 2);
	memset(raw, 0xff, sizeof(raw));
	f->d.dev.ops->config_read(f->d.dev.dev, 7, raw, 2);
	assert_int_equal(raw[0], 0);
	assert_int_equal(raw[1], 0);
	assert_int_equal(cfg_read32(f, 4), 0x01024433);

	/* A hostile actual is capped at guest RAM for the host. */
	cfg_write32(f, 4, UINT32_MAX);
	assert_int_equal(cfg_read32(f, 4), UINT32_MAX);
	assert_int_equal(virtio_balloon_actual(f->b), ram);

	/* Reset forgets actual (the driver starts over), keeps the host's target. */
	f->d.dev.ops->reset(f->d.dev.dev);
	assert_int_equal(cfg_read32(f, 4), 0);
	assert_int_equal(virtio_balloon_actual(f->b), 0);
	assert_int_equal(virtio_balloon_target(f->b), ram);
	fixture_free(f);
}

struct notify_rec {
	struct fixture *f;
	unsigned int calls;
	uint32_t seen; /* num_pages as the guest would read it from the notifier */
};

static void on_config_change(void *ctx)
{
	struct notify_rec *r = ctx;

	r->calls++;
	r->seen = cfg_read32(r->f, 0);
}

static void test_notify(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_HEAP);
	struct notify_rec rec = {.f = f};

	/* No notifier: nothing to call. */
	assert_int_equal(virtio_balloon_set_target(f->b, 8192), 0);

	virtio_balloon_set_notify(f->b, on_config_change, &rec);
	assert_int_equal(virtio_balloon_set_target(f->b, MiB(1) / 2), 0);
	assert_int_equal(rec.calls, 1);
	assert_int_equal(rec.seen, 128);
	assert_int_equal(virtio_balloon_set_target(f->b, 0), 0);
	assert_int_equal(rec.calls, 2);
	assert_int_equal(rec.seen, 0);
	/* A refused target changes nothing and notifies nobody. */
	assert_int_equal(virtio_balloon_set_target(f->b, RAM_SIZE + 4096), -EINVAL);
	assert_int_equal(rec.calls, 2);
	/* The guest writing actual is not a host change. */
	cfg_write32(f, 4, 5);
	assert_int_equal(rec.calls, 2);

	virtio_balloon_set_notify(f->b, NULL, NULL);
	assert_int_equal(virtio_balloon_set_target(f->b, 4096), 0);
	assert_int_equal(rec.calls, 2);
	fixture_free(f);
}

/* Inflate contiguous and scattered pages; neighbours keep their contents. */
static void inflate_basic(enum vt_ram_kind kind)
{
	struct fixture *f = fixture_new(kind);
	uint32_t p = alloc_pages(f, 8);
	/* p+0..2 contiguous, then p+5, p+4 (reverse), p+7; p+3 and p+6 stay. */
	uint32_t pfns[6] = {p, p + 1, p + 2, p + 5, p + 4, p + 7};
	struct virtio_balloon_counters c;

	vt_dev_activate(&f->d);
	inflate(f, pfns, 6);
	for (unsigned int i = 0; i < 8; i++)
		assert_true(page_is(f, p + i, (i == 3 || i == 6) ? PATTERN : 0));
	c = counters(f);
	assert_int_equal(c.inflated, 6);
	assert_int_equal(c.rejected, 0);
	assert_int_equal(c.deflated, 0);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);

	/* Inflated pages are usable again (deflate needs nothing from the host). */
	memset(gm_ptr(&f->d.g.mem, (uint64_t)p * PAGE, PAGE), 0x5a, PAGE);
	assert_true(page_is(f, p, 0x5a));
	fixture_free(f);
}

static void test_inflate_calloc(void **state)
{
	inflate_basic(VT_RAM_HEAP);
}

static void test_inflate_sparse(void **state)
{
	inflate_basic(VT_RAM_SPARSE);
}

static void test_inflate_memfd(void **state)
{
	inflate_basic(VT_RAM_SHARED);
}

/* With a memfd, inflating gives the memory back: the file's allocated blocks drop. */
static void test_inflate_frees_memfd_blocks(void **state)
{
	enum { N = 1000 }; /* more than one batch of PFNs per chain */
	struct fixture *f = fixture_new(VT_RAM_SHARED);
	uint32_t p = alloc_pages(f, N);
	uint32_t *pfns = calloc(N, sizeof(*pfns));
	struct vt_buf b[2];
	uint64_t before, after;

	assert_non_null(pfns);
	/* Two runs, in a two-descriptor chain; the second run backwards. */
	for (unsigned int i = 0; i < N / 2; i++)
		pfns[i] = p + i;
	for (unsigned int i = N / 2; i < N; i++)
		pfns[i] = p + N - 1 - (i - N / 2);
	b[0] = pfn_buf(f, pfns, N / 2);
	b[1] = pfn_buf(f, pfns + N / 2, N / 2);
	before = memfd_blocks(f);
	assert_true(before >= (uint64_t)N * PAGE / 512);

	vt_dev_activate(&f->d);
	run_chain(f, Q_INFLATE, b, 2);
	after = memfd_blocks(f);
	assert_true(after + (uint64_t)N * PAGE / 512 <= before);
	for (unsigned int i = 0; i < N; i++)
		assert_true(page_is(f, p + i, 0));
	assert_int_equal(counters(f).inflated, N);
	free(pfns);
	fixture_free(f);
}

/*
 * Guest RAM of 3 GiB + 64 MiB from gm_init: 3 GiB below the MMIO hole, 64 MiB
 * at 4 GiB. Pages in the hole and past the end are ignored; a page above the
 * hole is punched at its own fd offset.
 */
static void test_hole_and_high_memory(void **state)
{
	struct fixture *f = fixture_new_size(VT_RAM_SHARED, GiB(3) + MiB(64), 0);
	const uint32_t hole = (uint32_t)(LAYOUT_MMIO_HOLE / PAGE);
	const uint32_t high = (uint32_t)(LAYOUT_MMIO_HOLE_END / PAGE);
	const uint32_t end = high + (uint32_t)(MiB(64) / PAGE);
	uint32_t pfns[] = {
		hole,	       /* first page of the hole */
		hole + 0x1234, /* inside it */
		high - 1,      /* last page below 4 GiB */
		high + 2,      /* RAM above the hole */
		hole - 1,      /* last page of low RAM */
		end,	       /* first page past RAM */
		end + 1,       /* further */
		UINT32_MAX,    /* the largest PFN */
	};
	uint8_t *hi, *lo, *below;
	uint64_t before;
	struct virtio_balloon_counters c;

	assert_int_equal(f->d.g.mem.nregions, 2);
	hi = gm_ptr(&f->d.g.mem, (uint64_t)(high + 2) * PAGE, PAGE);
	lo = gm_ptr(&f->d.g.mem, (uint64_t)(hole - 1) * PAGE, PAGE);
	below = gm_ptr(&f->d.g.mem, (uint64_t)(hole - 2) * PAGE, PAGE);
	assert_non_null(hi);
	assert_non_null(lo);
	assert_non_null(below);
	assert_null(gm_ptr(&f->d.g.mem, (uint64_t)hole * PAGE, PAGE));
	memset(hi, PATTERN, PAGE);
	memset(lo, PATTERN, PAGE);
	memset(below, PATTERN, PAGE);
	/* The neighbours of the high page, on the same fd. */
	memset(hi - PAGE, PATTERN, PAGE);
	memset(hi + PAGE, PATTERN, PAGE);
	before = memfd_blocks(f);

	vt_dev_activate(&f->d);
	inflate(f, pfns, sizeof(pfns) / sizeof(pfns[0]));
	c = counters(f);
	assert_int_equal(c.inflated, 2);
	assert_int_equal(c.rejected, 6);
	/* Check the blocks first: reading a punched page of a memfd allocates it again. */
	assert_true(memfd_blocks(f) + 2 * PAGE / 512 <= before);
	assert_true(vt_filled(hi, PAGE, 0));
	assert_true(vt_filled(lo, PAGE, 0));
	assert_true(vt_filled(below, PAGE, PATTERN));
	assert_true(vt_filled(hi - PAGE, PAGE, PATTERN));
	assert_true(vt_filled(hi + PAGE, PAGE, PATTERN));
	fixture_free(f);
}

/*
 * The same on a two-region layout built by hand over plain memory: 1 MiB at
 * gpa 0 and 1 MiB at 4 GiB, adjacent in host memory. A page number for the
 * gap is refused even though the host memory behind it exists.
 */
static void test_hand_built_layout(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_SPARSE);
	uint8_t *extra = mmap(NULL, 2 * RAM_SIZE, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct guest_mem m = {0};
	struct virtio_device dev;
	struct virtio_balloon *b;
	struct virtio_activation act = f->d.env.act;
	struct vt_buf buf;
	const uint32_t high = (uint32_t)(GiB(4) / PAGE);
	uint32_t pfns[] = {
		RAM_SIZE / PAGE,	/* just past region 0 */
		high - 1,		/* in the gap */
		high,			/* region 1 */
		high + 1,		/* region 1 */
		0x80000,		/* in the gap */
		RAM_SIZE / PAGE - 1,	/* last page of region 0 */
		high + RAM_SIZE / PAGE, /* just past region 1 */
	};

	assert_true(extra != MAP_FAILED);
	m.fd = -1;
	m.base = extra;
	m.total = 2 * RAM_SIZE;
	m.regions[0] = (struct gm_region){0, RAM_SIZE, extra, 0};
	m.regions[1] = (struct gm_region){GiB(4), RAM_SIZE, extra + RAM_SIZE, RAM_SIZE};
	m.nregions = 2;
	memset(extra, PATTERN, 2 * RAM_SIZE);

	/* The queues stay in the fixture's memory; the balloon works on m. */
	assert_int_equal(virtio_balloon_create(&m, &dev, &b, NULL), 0);
	buf = pfn_buf(f, pfns, sizeof(pfns) / sizeof(pfns[0]));
	vt_add_chain(&f->d.vq[Q_INFLATE], &buf, 1);
	assert_int_equal(dev.ops->activate(dev.dev, &act), 0);
	vt_dev_wait_used(&f->d, Q_INFLATE, NULL, NULL);
	dev.ops->reset(dev.dev);
	{
		struct virtio_balloon_counters c;

		virtio_balloon_get_counters(b, &c);
		assert_int_equal(c.inflated, 3);
		assert_int_equal(c.rejected, 4);
	}
	assert_true(vt_filled(extra, RAM_SIZE - PAGE, PATTERN));
	assert_true(vt_filled(extra + RAM_SIZE - PAGE, 3 * PAGE, 0));
	assert_true(vt_filled(extra + RAM_SIZE + 2 * PAGE, RAM_SIZE - 2 * PAGE, PATTERN));
	dev.ops->destroy(dev.dev);
	munmap(extra, 2 * RAM_SIZE);
	fixture_free(f);
}

/* Odd lengths, PFNs split across descriptors, writable buffers, empty chains. */
static void test_hostile_buffers(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_SPARSE);
	uint32_t p = alloc_pages(f, 8);
	uint32_t pfns[3] = {p, p + 1, p + 2};
	struct vt_buf b, parts[3], w;
	struct virtio_balloon_counters c;
	uint8_t *h;

	vt_dev_activate(&f->d);

	/* 15 bytes: three PFNs and three stray bytes that would name page p+3. */
	b = vt_buf_new(&f->d.g, 15, false);
	h = vt_host(&f->d.g, b.gpa, 15);
	for (unsigned int i = 0; i < 3; i++) {
		uint32_t v = htole32(pfns[i]);

		memcpy(h + 4 * i, &v, 4);
	}
	{
		uint32_t v = htole32(p + 3);

		memcpy(h + 12, &v, 3);
	}
	run_chain(f, Q_INFLATE, &b, 1);
	assert_true(page_is(f, p, 0) && page_is(f, p + 1, 0) && page_is(f, p + 2, 0));
	assert_true(page_is(f, p + 3, PATTERN));
	c = counters(f);
	assert_int_equal(c.inflated, 3);

	/* A PFN split 3 + 1 across two descriptors, another in a third; 1-3 byte buffers. */
	{
		uint32_t v4 = htole32(p + 4), v5 = htole32(p + 5);

		parts[0] = vt_buf_new(&f->d.g, 3, false);
		parts[1] = vt_buf_new(&f->d.g, 1, false);
		parts[2] = vt_buf_new(&f->d.g, 6, false);
		memcpy(vt_host(&f->d.g, parts[0].gpa, 3), &v4, 3);
		memcpy(vt_host(&f->d.g, parts[1].gpa, 1), (uint8_t *)&v4 + 3, 1);
		memcpy(vt_host(&f->d.g, parts[2].gpa, 4), &v5, 4);
	}
	run_chain(f, Q_INFLATE, parts, 3);
	assert_true(page_is(f, p + 4, 0) && page_is(f, p + 5, 0));
	assert_true(page_is(f, p + 6, PATTERN));
	assert_int_equal(counters(f).inflated, 5);

	/* Writable-only chain: nothing to read, returned with 0 bytes. */
	w = vt_buf_new(&f->d.g, 64, true);
	memset(vt_host(&f->d.g, w.gpa, 64), 0xee, 64);
	run_chain(f, Q_INFLATE, &w, 1);
	assert_true(vt_filled(vt_host(&f->d.g, w.gpa, 64), 64, 0xee));

	/* Readable then writable: the PFNs count, the writable part is left alone. */
	{
		uint32_t one = p + 6;
		struct vt_buf mix[2] = {pfn_buf(f, &one, 1), w};

		run_chain(f, Q_INFLATE, mix, 2);
	}
	assert_true(page_is(f, p + 6, 0));
	assert_true(page_is(f, p + 7, PATTERN));

	/* Page numbers beyond RAM, one whose last byte would pass the end, and huge ones. */
	{
		uint32_t bad[] = {
			RAM_SIZE / PAGE, RAM_SIZE / PAGE + 1, 0x100000,
			0x7fffffff,	 UINT32_MAX,	      UINT32_MAX - 1,
		};

		inflate(f, bad, sizeof(bad) / sizeof(bad[0]));
	}
	c = counters(f);
	assert_int_equal(c.inflated, 6);
	assert_int_equal(c.rejected, 6);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	fixture_free(f);
}

/*
 * A guest that balloons the pages holding its own rings: the device zeroes
 * them under itself, then sees a ring that makes no sense and asks for a
 * reset. Nothing outside guest RAM is touched and nothing hangs.
 */
static void test_inflate_own_rings(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_SPARSE);
	uint32_t pfns[] = {0, 1, 2, 3};
	struct vt_buf b = pfn_buf(f, pfns, 4);

	vt_dev_activate(&f->d);
	vt_add_chain(&f->d.vq[Q_INFLATE], &b, 1);
	vt_dev_kick(&f->d, Q_INFLATE);
	/* The used entry lands in the zeroed ring; then avail->idx reads 0, one behind. */
	assert_int_equal(vt_eventfd_wait(f->d.env.reset_fd, VT_WAIT_MS), 1);
	assert_int_equal(counters(f).inflated, 4);
	fixture_free(f);
}

static void test_deflate(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_SHARED);
	uint32_t p = alloc_pages(f, 2);
	uint32_t pfns[] = {p, p + 1, UINT32_MAX};
	struct vt_buf b = pfn_buf(f, pfns, 3);
	struct virtio_balloon_counters c;

	vt_dev_activate(&f->d);
	/* Deflating does not touch the pages; they are the guest's again. */
	run_chain(f, Q_DEFLATE, &b, 1);
	assert_true(page_is(f, p, PATTERN) && page_is(f, p + 1, PATTERN));
	c = counters(f);
	assert_int_equal(c.deflated, 3);
	assert_int_equal(c.inflated, 0);

	/* Inflate then deflate, as DEFLATE_ON_OOM does, and reuse the page. */
	inflate(f, pfns, 1);
	assert_true(page_is(f, p, 0));
	b = pfn_buf(f, pfns, 1);
	run_chain(f, Q_DEFLATE, &b, 1);
	memset(gm_ptr(&f->d.g.mem, (uint64_t)p * PAGE, PAGE), 0x77, PAGE);
	assert_true(page_is(f, p, 0x77));
	c = counters(f);
	assert_int_equal(c.deflated, 4);
	assert_int_equal(c.inflated, 1);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	fixture_free(f);
}

/* Many chains on both queues across 16-bit index wrap-around, published before activation. */
static void test_many_chains(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_SPARSE);
	uint32_t p = alloc_pages(f, 40);

	vt_queue_set_indexes(&f->d.vq[Q_INFLATE], 65530);
	vt_queue_set_indexes(&f->d.vq[Q_DEFLATE], 65533);
	{
		uint32_t pfn = p;

		vt_add_chain(&f->d.vq[Q_INFLATE], (struct vt_buf[]){pfn_buf(f, &pfn, 1)}, 1);
	}
	vt_dev_activate(&f->d);
	vt_dev_wait_used(&f->d, Q_INFLATE, NULL, NULL);
	for (unsigned int i = 1; i < 40; i++) {
		uint32_t pfn = p + i;
		struct vt_buf b = pfn_buf(f, &pfn, 1);

		run_chain(f, Q_INFLATE, &b, 1);
		run_chain(f, Q_DEFLATE, &b, 1);
	}
	for (unsigned int i = 0; i < 40; i++)
		assert_true(page_is(f, p + i, 0));
	assert_int_equal(counters(f).inflated, 40);
	assert_int_equal(counters(f).deflated, 39);
	assert_int_equal(vt_used_idx(&f->d.vq[Q_INFLATE]), (uint16_t)(65530 + 40));
	fixture_free(f);
}

/* A broken deflate ring asks for a reset; after reset and restart both queues serve again. */
static void test_hostile_ring(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_SPARSE);
	uint32_t p = alloc_pages(f, 1);
	struct vt_buf b;

	vt_dev_activate(&f->d);
	vt_set_avail_idx(&f->d.vq[Q_DEFLATE], QSIZE + 1);
	vt_dev_kick(&f->d, Q_DEFLATE);
	assert_int_equal(vt_eventfd_wait(f->d.env.reset_fd, VT_WAIT_MS), 1);
	/* Out of range head on the inflate queue is not even looked at now. */
	vt_publish(&f->d.vq[Q_INFLATE], QSIZE + 3);
	vt_dev_kick(&f->d, Q_INFLATE);
	assert_int_equal(vt_eventfd_wait(f->d.env.reset_fd, 200), 0);

	f->d.dev.ops->reset(f->d.dev.dev);
	for (unsigned int i = 0; i < NQ; i++) {
		assert_int_equal(virtq_start(&f->d.vq[i].q), 0);
		vt_queue_set_indexes(&f->d.vq[i], 0);
	}
	vt_dev_activate(&f->d);
	b = pfn_buf(f, &p, 1);
	run_chain(f, Q_INFLATE, &b, 1);
	assert_true(page_is(f, p, 0));
	run_chain(f, Q_DEFLATE, &b, 1);

	/* A bad head on the inflate queue. */
	vt_publish(&f->d.vq[Q_INFLATE], QSIZE + 3);
	vt_dev_kick(&f->d, Q_INFLATE);
	assert_int_equal(vt_eventfd_wait(f->d.env.reset_fd, VT_WAIT_MS), 1);
	fixture_free(f);
}

static void test_activate_rules(void **state)
{
	struct fixture *f = fixture_new(VT_RAM_SPARSE);
	struct virtio_activation a = f->d.env.act;
	uint32_t p = alloc_pages(f, 1);
	struct vt_buf b = pfn_buf(f, &p, 1);

	a.kick_fd[Q_DEFLATE] = -1;
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &a), -EINVAL);
	a = f->d.env.act;
	a.call_fd[Q_INFLATE] = -1;
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &a), -EINVAL);

	/* A driver may leave the deflate queue disabled. */
	a = f->d.env.act;
	a.queues[Q_DEFLATE] = NULL;
	a.kick_fd[Q_DEFLATE] = -1;
	a.call_fd[Q_DEFLATE] = -1;
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &a), 0);
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &f->d.env.act), -EBUSY);
	run_chain(f, Q_INFLATE, &b, 1);
	f->d.dev.ops->reset(f->d.dev.dev);
	f->d.dev.ops->reset(f->d.dev.dev);

	/* No queues at all: nothing to serve, but reset still works. */
	a.nqueues = 0;
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &a), 0);
	f->d.dev.ops->reset(f->d.dev.dev);

	for (unsigned int i = 0; i < 20; i++) {
		vt_dev_activate(&f->d);
		f->d.dev.ops->reset(f->d.dev.dev);
	}
	/* Destroy while active joins the worker. */
	vt_dev_activate(&f->d);
	fixture_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ops),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_notify),
		cmocka_unit_test(test_inflate_calloc),
		cmocka_unit_test(test_inflate_sparse),
		cmocka_unit_test(test_inflate_memfd),
		cmocka_unit_test(test_inflate_frees_memfd_blocks),
		cmocka_unit_test(test_hole_and_high_memory),
		cmocka_unit_test(test_hand_built_layout),
		cmocka_unit_test(test_hostile_buffers),
		cmocka_unit_test(test_inflate_own_rings),
		cmocka_unit_test(test_deflate),
		cmocka_unit_test(test_many_chains),
		cmocka_unit_test(test_hostile_ring),
		cmocka_unit_test(test_activate_rules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
