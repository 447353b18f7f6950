/*
 * Unit tests for qcow2: header parsing (valid, truncated, every refused
 * field), translation, allocation, copy-on-write, refcount widths, backing
 * chains, compressed clusters, the L2 cache, discard and write-zeroes, and
 * the disk interface on top. Images come from qcow2_create(), from a small
 * builder here, or from qemu-img when it is installed (those cases skip
 * themselves otherwise).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/disk.h"
#include "devices/qcow2.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)

static char tmpdir[256];

/* ---- Helpers ---- */

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

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static const char *tpath(const char *name)
{
	static char buf[64][512]; /* a ring: names stay valid for 63 more calls */
	static int n;

	n = (n + 1) % 64;
	snprintf(buf[n], sizeof(buf[n]), "%s/%s", tmpdir, name);
	return buf[n];
}

static bool have_qemu_img(void)
{
	return system("qemu-img --version >/dev/null 2>&1") == 0 &&
	       system("qemu-io --version >/dev/null 2>&1") == 0;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* qemu-img check: 0 clean, 3 leaks only, 2 corrupt. */
static int qemu_check(const char *path)
{
	return sh("qemu-img check -q '%s' >/dev/null 2>&1", path);
}

static void fill(uint8_t *p, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

static void read_file_at(const char *path, uint64_t off, void *buf, size_t n)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static void write_file_at(const char *path, uint64_t off, const void *buf, size_t n)
{
	int fd = open(path, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static uint64_t file_u64(const char *path, uint64_t off)
{
	uint8_t b[8];

	read_file_at(path, off, b, 8);
	return get64(b);
}

static void patch_u32(const char *path, uint64_t off, uint32_t v)
{
	uint8_t b[4];

	put32(b, v);
	write_file_at(path, off, b, 4);
}

static void patch_u64(const char *path, uint64_t off, uint64_t v)
{
	uint8_t b[8];

	put64(b, v);
	write_file_at(path, off, b, 8);
}

static void make_raw(const char *path, uint64_t size, unsigned int seed)
{
	uint8_t *buf = malloc(size);
	int fd;

	assert_non_null(buf);
	fill(buf, size, seed);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, size), (ssize_t)size);
	close(fd);
	free(buf);
}

static struct qcow2 *open_q(const char *path, bool ro, uint64_t cache)
{
	struct qcow2_opts o = {.read_only = ro, .cache_bytes = cache};
	struct vmm_err err = {""};
	struct qcow2 *q = NULL;
	int fd = open(path, ro ? O_RDONLY : O_RDWR);

	assert_true(fd >= 0);
	if (qcow2_open(fd, path, &o, &q, &err) < 0) {
		print_error("open %s: %s\n", path, err.msg);
		fail();
	}
	return q;
}

/* The fd behind an open_q() image is leaked on purpose: tests are short. */
static int open_q_err(const char *path, struct vmm_err *err)
{
	struct qcow2_opts o = {.read_only = true};
	struct qcow2 *q = NULL;
	int fd = open(path, O_RDONLY), ret;

	assert_true(fd >= 0);
	ret = qcow2_open(fd, path, &o, &q, err);
	if (ret == 0)
		qcow2_close(q);
	close(fd);
	return ret;
}

static void create(const char *path, uint64_t size, unsigned int cbits, const char *backing)
{
	struct vmm_err err = {""};

	unlink(path);
	if (qcow2_create(path, size, cbits, backing, &err) < 0) {
		print_error("create %s: %s\n", path, err.msg);
		fail();
	}
}

/*
 * Build an image by hand: header (any version, refcount order), refcount
 * table in cluster 1, one refcount block in cluster 2, L1 from cluster 3.
 * With @leak_all, the whole first refcount table's reach is marked used.
 */
struct spec {
	unsigned int version, cbits, rc_order;
	uint64_t size;
	const char *backing, *backing_fmt;
	bool leak_all;
};

static void rb_put(uint8_t *b, unsigned int order, uint64_t i, uint64_t v)
{
	unsigned int w = 1u << order;
	uint64_t bit = i * w;

	if (w < 8) {
		b[bit / 8] |= (uint8_t)(v << (bit % 8));
		return;
	}
	for (unsigned int k = 0; k < w / 8; k++)
		b[bit / 8 + k] = (uint8_t)(v >> (w - 8 - 8 * k));
}

static void build_image(const char *path, const struct spec *s)
{
	uint64_t cs = 1ull << s->cbits, E = cs * 8 >> s->rc_order;
	uint64_t l1n = (s->size + cs * (cs / 8) - 1) / (cs * (cs / 8));
	uint64_t nblocks = s->leak_all ? cs / 8 : 1, L = (l1n * 8 + cs - 1) / cs, l1c, i;
	uint64_t total;
	size_t off = s->version == 3 ? 112 : 72;
	uint8_t *buf;
	int fd;

	l1c = 2 + nblocks;
	total = (l1c + (L ? L : 1)) * cs;
	buf = calloc(1, total);
	assert_non_null(buf);
	put32(buf, 0x514649fb);
	put32(buf + 4, s->version);
	put32(buf + 20, s->cbits);
	put64(buf + 24, s->size);
	put32(buf + 36, (uint32_t)l1n);
	put64(buf + 40, l1c * cs);
	put64(buf + 48, cs);
	put32(buf + 56, 1);
	if (s->version == 3) {
		put32(buf + 96, s->rc_order);
		put32(buf + 100, 112);
	}
	if (s->backing_fmt) {
		put32(buf + off, 0xe2792aca);
		put32(buf + off + 4, (uint32_t)strlen(s->backing_fmt));
		memcpy(buf + off + 8, s->backing_fmt, strlen(s->backing_fmt));
		off += 8 + ((strlen(s->backing_fmt) + 7) & ~7ul);
	}
	off += 8; /* end marker */
	if (s->backing) {
		put64(buf + 8, off);
		put32(buf + 16, (uint32_t)strlen(s->backing));
		memcpy(buf + off, s->backing, strlen(s->backing));
	}
	for (i = 0; i < nblocks; i++)
		put64(buf + cs + i * 8, (2 + i) * cs);
	if (s->leak_all) {
		for (i = 0; i < nblocks * E; i++)
			rb_put(buf + 2 * cs + (i / E) * cs, s->rc_order, i % E, 1);
	} else {
		for (i = 0; i < l1c + (L ? L : 1); i++)
			rb_put(buf + 2 * cs + (i / E) * cs, s->rc_order, i % E, 1);
	}
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, total), (ssize_t)total);
	close(fd);
	free(buf);
}

static void build(const char *path, const struct spec *spec)
{
	struct spec s = *spec;

	if (s.version == 2)
		s.rc_order = 4; /* version 2 has 16-bit refcounts only */
	build_image(path, &s);
}

/* Refcount of host cluster @c of an image with refcount order @order (one table cluster read). */
static uint64_t refcount_of(const char *path, uint64_t c)
{
	uint64_t cs = 1ull << (file_u64(path, 16) & 0xffffffff), order = 4, E, rt, blk;
	uint8_t hdr[104], *b;
	uint64_t v = 0;
	unsigned int w;

	read_file_at(path, 0, hdr, sizeof(hdr));
	if ((get64(hdr) & 0xffffffff) == 3)
		order = get64(hdr + 96) >> 32;
	w = 1u << order;
	E = cs * 8 / w;
	rt = get64(hdr + 48);
	blk = file_u64(path, rt + (c / E) * 8);
	if (!blk)
		return 0;
	b = malloc(cs);
	read_file_at(path, blk, b, cs);
	if (w < 8) {
		v = (b[(c % E) * w / 8] >> ((c % E) * w % 8)) & ((1u << w) - 1);
	} else {
		for (unsigned int k = 0; k < w / 8; k++)
			v = v << 8 | b[(c % E) * w / 8 + k];
	}
	free(b);
	return v;
}

/* L2 entry for guest offset @off, read from the file (0 when there is no table). */
static uint64_t l2_entry_of(const char *path, uint64_t off)
{
	uint8_t hdr[48];
	uint64_t cs, l1, l1e, l2b;
	unsigned int cb;

	read_file_at(path, 0, hdr, sizeof(hdr));
	cb = (unsigned int)(get64(hdr + 16) & 0xffffffff);
	cs = 1ull << cb;
	l2b = cb - 3;
	l1 = get64(hdr + 40);
	l1e = file_u64(path, l1 + (off >> (cb + l2b)) * 8) & 0x00fffffffffffe00ull;
	if (!l1e)
		return 0;
	return file_u64(path, l1e + ((off / cs) & ((1ull << l2b) - 1)) * 8);
}

/* ---- Header parsing ---- */

/* A valid header cluster in @buf (4 KiB clusters) for a file of 64 KiB. */
static size_t good_header(uint8_t *buf, unsigned int version)
{
	memset(buf, 0, 4096);
	put32(buf, 0x514649fb);
	put32(buf + 4, version);
	put32(buf + 20, 12);
	put64(buf + 24, 16 * MIB);
	put32(buf + 36, 8);
	put64(buf + 40, 3 * 4096);
	put64(buf + 48, 4096);
	put32(buf + 56, 1);
	if (version == 3) {
		put32(buf + 96, 4);
		put32(buf + 100, 104);
	}
	return 4096;
}

static int parse(const uint8_t *buf, size_t len, struct qcow2_header *h, struct vmm_err *err)
{
	return qcow2_parse_header(buf, len, 64 * KIB, h, err);
}

static void test_header_valid(void **state)
{
	struct qcow2_header h;
	struct vmm_err err = {""};
	uint8_t buf[4096];

	good_header(buf, 2);
	assert_int_equal(parse(buf, 4096, &h, &err), 0);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.refcount_order, 4);
	assert_int_equal(h.header_length, 72);
	assert_int_equal(h.size, 16 * MIB);
	assert_false(h.has_backing);

	good_header(buf, 3);
	put32(buf + 96, 0);
	put32(buf + 100, 112);
	/* Backing format extension, a feature table, an unknown one, then the name. */
	put32(buf + 112, 0xe2792aca);
	put32(buf + 116, 3);
	memcpy(buf + 120, "raw", 3);
	put32(buf + 128, 0x12345678);
	put32(buf + 132, 5);
	put32(buf + 144, 0);
	put64(buf + 8, 160);
	put32(buf + 16, 8);
	memcpy(buf + 160, "base.img", 8);
	assert_int_equal(parse(buf, 4096, &h, &err), 0);
	assert_int_equal(h.refcount_order, 0);
	assert_true(h.has_backing);
	assert_string_equal(h.backing, "base.img");
	assert_string_equal(h.backing_format, "raw");
	assert_true(qcow2_probe(buf, 4));
	assert_false(qcow2_probe("QFI", 3));
}

static void test_header_truncated(void **state)
{
	struct qcow2_header h;
	struct vmm_err err = {""};
	uint8_t buf[4096];
	size_t len;
	unsigned int v;

	/* A file that ends inside any field of the header is refused. */
	for (v = 2; v <= 3; v++) {
		good_header(buf, v);
		for (len = 0; len < (v == 3 ? 104u : 72u); len++) {
			memset(&h, 0xaa, sizeof(h));
			assert_int_equal(qcow2_parse_header(buf, len, len, &h, &err), -EINVAL);
		}
	}
	/* A header cluster cut short while the file claims to be longer. */
	good_header(buf, 3);
	assert_int_equal(qcow2_parse_header(buf, 2048, 64 * KIB, &h, &err), -EINVAL);
}

struct bad {
	const char *what;
	unsigned int off, width; /* field to patch */
	uint64_t value;
	int err;
	const char *msg; /* substring of the message, or NULL */
};

static const struct bad bad_fields[] = {
	{"magic", 0, 4, 0x514649fa, -EINVAL, "magic"},
	{"version 1", 4, 4, 1, -ENOTSUP, "version"},
	{"version 4", 4, 4, 4, -ENOTSUP, "version"},
	{"cluster_bits 11", 20, 4, 11, -ENOTSUP, "cluster_bits"},
	{"cluster_bits 22", 20, 4, 22, -ENOTSUP, "cluster_bits"},
	{"cluster_bits huge", 20, 4, 0xffffffff, -ENOTSUP, "cluster_bits"},
	{"aes", 32, 4, 1, -ENOTSUP, "encrypted"},
	{"luks", 32, 4, 2, -ENOTSUP, "encrypted"},
	{"dirty", 72, 8, 1, -EUCLEAN,
	 "image is dirty (in use, or not cleanly closed); repair it with qemu-img check -r all"},
	{"corrupt", 72, 8, 2, -EUCLEAN, "corrupt"},
	{"data file", 72, 8, 4, -ENOTSUP, "external data file"},
	{"extended l2", 72, 8, 16, -ENOTSUP, "extended L2"},
	{"unknown incompat", 72, 8, 1ull << 40, -ENOTSUP, "bit 40"},
	{"compression bit without type", 72, 8, 8, -EINVAL, "compression"},
	{"refcount_order 7", 96, 4, 7, -EINVAL, "refcount_order"},
	{"header_length 100", 100, 4, 100, -EINVAL, "header_length"},
	{"header_length 108", 100, 4, 108, -EINVAL, "header_length"},
	{"header_length past cluster", 100, 4, 8192, -EINVAL, "header_length"},
	{"size overflows", 24, 8, 1ull << 63, -EINVAL, NULL},
	{"l1 too small", 36, 4, 7, -EINVAL, "too small"},
	{"l1 too large", 36, 4, 0x4000000, -EINVAL, "too large"},
	{"l1 outside file", 40, 8, 64 * KIB, -EINVAL, "L1 table"},
	{"l1 misaligned", 40, 8, 3 * 4096 + 8, -EINVAL, "L1 table"},
	{"l1 on header", 40, 8, 0, -EINVAL, "L1 table"},
	{"l1 offset overflows", 40, 8, ~0ull << 12, -EINVAL, "L1 table"},
	{"rt clusters 0", 56, 4, 0, -EINVAL, "refcount table"},
	{"rt clusters huge", 56, 4, 0xffffffff, -EINVAL, "refcount table"},
	{"rt outside file", 48, 8, 16 * 4096, -EINVAL, "refcount table"},
	{"rt misaligned", 48, 8, 4096 + 512, -EINVAL, "refcount table"},
	{"rt on header", 48, 8, 0, -EINVAL, "refcount table"},
	{"rt over l1", 48, 8, 3 * 4096, -EINVAL, "overlap"},
	{"too many snapshots", 60, 4, 100000, -EINVAL, "snapshots"},
	{"snapshot table misaligned", 60, 4, 1, -EINVAL, "snapshot"},
	{"backing name too long", 16, 4, 1024, -EINVAL, "backing"},
	{"backing name outside header", 8, 8, 4090, -EINVAL, "backing"},
	{"backing name in header", 8, 8, 16, -EINVAL, "backing"},
};

static void test_header_invalid(void **state)
{
	struct qcow2_header h;
	struct vmm_err err;
	uint8_t buf[4096];
	size_t i;

	for (i = 0; i < sizeof(bad_fields) / sizeof(bad_fields[0]); i++) {
		const struct bad *b = &bad_fields[i];

		good_header(buf, 3);
		if (!strncmp(b->what, "backing", 7)) {
			put64(buf + 8, 200);
			put32(buf + 16, 4);
			memcpy(buf + 200, "base", 4);
		}
		if (b->width == 4)
			put32(buf + b->off, (uint32_t)b->value);
		else
			put64(buf + b->off, b->value);
		err.msg[0] = '\0';
		if (parse(buf, 4096, &h, &err) != b->err) {
			print_error("case '%s': got %d (%s)\n", b->what, parse(buf, 4096, &h, &err),
				    err.msg);
			fail();
		}
		if (b->msg && !strstr(err.msg, b->msg)) {
			print_error("case '%s': message '%s'\n", b->what, err.msg);
			fail();
		}
	}
}

static void test_header_extensions(void **state)
{
	struct qcow2_header h;
	struct vmm_err err = {""};
	uint8_t buf[4096];

	/* An extension longer than the cluster. */
	good_header(buf, 3);
	put32(buf + 104, 0x11111111);
	put32(buf + 108, 0xfffffff0);
	assert_int_equal(parse(buf, 4096, &h, &err), -EINVAL);
	/* An extension overlapping the backing file name. */
	good_header(buf, 3);
	put64(buf + 8, 128);
	put32(buf + 16, 4);
	memcpy(buf + 128, "base", 4);
	put32(buf + 104, 0x11111111);
	put32(buf + 108, 64);
	assert_int_equal(parse(buf, 4096, &h, &err), -EINVAL);
	/* Backing format: empty, too long, NUL inside. */
	good_header(buf, 3);
	put32(buf + 104, 0xe2792aca);
	put32(buf + 108, 0);
	assert_int_equal(parse(buf, 4096, &h, &err), -EINVAL);
	put32(buf + 108, 40);
	assert_int_equal(parse(buf, 4096, &h, &err), -EINVAL);
	put32(buf + 108, 5);
	memcpy(buf + 112, "ra\0w2", 5);
	assert_int_equal(parse(buf, 4096, &h, &err), -EINVAL);
	/* The feature name table names an unknown incompatible feature. */
	good_header(buf, 3);
	put64(buf + 72, 1ull << 9);
	put32(buf + 104, 0x6803f857);
	put32(buf + 108, 96);
	buf[112] = 1;
	buf[113] = 9;
	memcpy(buf + 114, "not this one", 12);
	buf[160] = 0;
	buf[161] = 9;
	memcpy(buf + 162, "time travel", 11);
	assert_int_equal(parse(buf, 4096, &h, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "'time travel'"));
	/* Backing file name with a NUL. */
	good_header(buf, 2);
	put64(buf + 8, 200);
	put32(buf + 16, 4);
	memcpy(buf + 200, "ba\0e", 4);
	assert_int_equal(parse(buf, 4096, &h, &err), -EINVAL);
	/* zstd compression needs the bit and a long enough header. */
	good_header(buf, 3);
	put32(buf + 100, 112);
	buf[104] = 1;
	assert_int_equal(parse(buf, 4096, &h, &err), -EINVAL);
	put64(buf + 72, 8);
	assert_int_equal(parse(buf, 4096, &h, &err), 0);
	assert_int_equal(h.compression_type, 1);
	buf[104] = 2;
	assert_int_equal(parse(buf, 4096, &h, &err), -ENOTSUP);
}

/* ---- Images ---- */

static void test_create_and_translate(void **state)
{
	const char *p = tpath("t.qcow2");
	struct vmm_err err = {""};
	uint8_t *w = malloc(200 * KIB), *r = malloc(200 * KIB), data[4096];
	struct qcow2 *q;
	uint64_t e;

	create(p, 10 * MIB + 1000, 12, NULL);
	assert_int_equal(qcow2_create(p, MIB, 0, NULL, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "already exists"));
	assert_int_equal(qcow2_create(tpath("x.qcow2"), MIB, 11, NULL, &err), -EINVAL);
	assert_int_equal(qcow2_create(tpath("x.qcow2"), MIB, 22, NULL, &err), -EINVAL);

	q = open_q(p, false, 0);
	assert_int_equal(qcow2_size(q), 10 * MIB + 1024); /* rounded up to 512 */
	fill(w, 200 * KIB, 1);
	assert_int_equal(qcow2_write(q, 5000, w, 200 * KIB), 0);
	assert_int_equal(qcow2_write(q, 10 * MIB + 24, w, 1000), 0); /* the partial last cluster */
	memset(r, 0xee, 200 * KIB);
	assert_int_equal(qcow2_read(q, 5000, r, 200 * KIB), 0);
	assert_memory_equal(r, w, 200 * KIB);
	assert_int_equal(qcow2_read(q, 0, r, 5000), 0);
	for (size_t i = 0; i < 5000; i++)
		assert_int_equal(r[i], 0);
	/* Reads and writes past the end are refused. */
	assert_int_equal(qcow2_read(q, 10 * MIB + 1024, r, 1), -EINVAL);
	assert_int_equal(qcow2_read(q, 10 * MIB, r, 2048), -EINVAL);
	assert_int_equal(qcow2_write(q, UINT64_MAX - 10, w, 20), -EINVAL);
	assert_int_equal(qcow2_flush(q), 0);
	qcow2_close(q);

	/* Follow the tables by hand: guest 8192 is in the second written cluster. */
	e = l2_entry_of(p, 8192);
	assert_true(e & (1ull << 63)); /* COPIED */
	assert_int_equal(e & 0xfff, 0);
	read_file_at(p, e & 0x00fffffffffffe00ull, data, 4096);
	assert_memory_equal(data, w + 8192 - 5000, 4096);
	assert_int_equal(refcount_of(p, (e & 0x00fffffffffffe00ull) / 4096), 1);
	if (have_qemu_img())
		assert_int_equal(qemu_check(p), 0);
	free(w);
	free(r);
}

static void test_refcount_widths(void **state)
{
	static const unsigned int orders[] = {0, 1, 2, 3, 5, 6};
	uint8_t *w = malloc(64 * KIB), *r = malloc(64 * KIB);
	unsigned int i, v;
	char name[32];

	for (v = 2; v <= 3; v++) {
		for (i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
			struct spec s = {
				.version = v, .cbits = 12, .rc_order = orders[i], .size = 8 * MIB};
			struct qcow2 *q;
			uint64_t e, c;

			if (v == 2 && orders[i] != 4)
				s.rc_order = 4; /* version 2 is always 16 bits */
			snprintf(name, sizeof(name), "rc%u-v%u.qcow2", orders[i], v);
			build(tpath(name), &s);
			q = open_q(tpath(name), false, 0);
			fill(w, 64 * KIB, i);
			assert_int_equal(qcow2_write(q, 1 * MIB + 100, w, 64 * KIB), 0);
			assert_int_equal(qcow2_discard(q, 1 * MIB + 8192, 8192), 0);
			assert_int_equal(qcow2_flush(q), 0);
			assert_int_equal(qcow2_read(q, 1 * MIB + 100, r, 8092), 0);
			assert_memory_equal(r, w, 8092);
			qcow2_close(q);
			e = l2_entry_of(tpath(name), 1 * MIB);
			c = (e & 0x00fffffffffffe00ull) / 4096;
			assert_true(c > 0);
			assert_int_equal(refcount_of(tpath(name), c), 1);
			/* The discarded cluster went back to refcount 0. */
			assert_int_equal(l2_entry_of(tpath(name), 1 * MIB + 8192) & ~1ull, 0);
			if (have_qemu_img() && qemu_check(tpath(name)) != 0) {
				print_error("qemu-img check %s failed\n", name);
				fail();
			}
		}
	}
	free(w);
	free(r);
}

static void test_refcount_table_growth(void **state)
{
	/* 4 KiB clusters, 64-bit refcounts: one table cluster reaches 1 GiB, all marked used. */
	struct spec s = {
		.version = 3, .cbits = 12, .rc_order = 6, .size = 64 * MIB, .leak_all = true};
	const char *p = tpath("grow.qcow2");
	uint8_t w[8192], r[8192];
	struct qcow2 *q;
	uint64_t e, i;

	build(p, &s);
	q = open_q(p, false, 0);
	for (i = 0; i < 40; i++) {
		fill(w, sizeof(w), (unsigned int)i);
		assert_int_equal(qcow2_write(q, i * MIB, w, sizeof(w)), 0);
	}
	assert_int_equal(qcow2_flush(q), 0);
	for (i = 0; i < 40; i++) {
		fill(w, sizeof(w), (unsigned int)i);
		assert_int_equal(qcow2_read(q, i * MIB, r, sizeof(r)), 0);
		assert_memory_equal(r, w, sizeof(r));
	}
	qcow2_close(q);
	/* The table moved past 1 GiB and grew. */
	assert_true(file_u64(p, 48) >= (1ull << 30));
	assert_true((file_u64(p, 56) >> 32) >= 2);
	e = l2_entry_of(p, 0) & 0x00fffffffffffe00ull;
	assert_true(e >= (1ull << 30));
	assert_int_equal(refcount_of(p, e / 4096), 1);
	/* The old table's cluster was freed and reused: referenced once, counted once. */
	assert_int_equal(refcount_of(p, 1), 1);
	if (have_qemu_img())
		assert_int_equal(qemu_check(p), 3); /* the leaks we built, nothing else */
}

static void test_backing_chain(void **state)
{
	const char *base = tpath("chain-base.raw");
	uint8_t *exp = malloc(4 * MIB), *r = malloc(4 * MIB), w[6000];
	struct vmm_err err = {""};
	struct qcow2 *q;
	char rel[64];

	mkdir(tpath("sub"), 0755);
	make_raw(base, 3 * MIB, 5);
	/* Depth 3 below the top: raw <- sub/mid1 (v2, built) <- sub/mid2 (4k) <- top. */
	{
		struct spec s = {.version = 2,
				 .cbits = 16,
				 .size = 4 * MIB,
				 .backing = "../chain-base.raw",
				 .backing_fmt = "raw"};

		build(tpath("sub/mid1.qcow2"), &s);
	}
	q = open_q(tpath("sub/mid1.qcow2"), false, 0);
	fill(w, sizeof(w), 9);
	assert_int_equal(qcow2_write(q, 100000, w, sizeof(w)), 0); /* copy-on-write from raw */
	qcow2_close(q);
	create(tpath("sub/mid2.qcow2"), 0, 12, "mid1.qcow2");
	q = open_q(tpath("sub/mid2.qcow2"), false, 0);
	assert_int_equal(qcow2_size(q), 4 * MIB);
	assert_int_equal(qcow2_write(q, 3 * MIB + 10, w, 100), 0); /* past the raw file's end */
	assert_int_equal(qcow2_write_zeroes(q, 200000, 4096 * 3, false), 0);
	qcow2_close(q);
	snprintf(rel, sizeof(rel), "sub/mid2.qcow2");
	create(tpath("top.qcow2"), 0, 16, rel);

	read_file_at(base, 0, exp, 3 * MIB);
	memset(exp + 3 * MIB, 0, MIB);
	memcpy(exp + 100000, w, sizeof(w));
	memcpy(exp + 3 * MIB + 10, w, 100);
	memset(exp + 200000, 0, 4096 * 3);
	q = open_q(tpath("top.qcow2"), false, 0);
	assert_int_equal(qcow2_read(q, 0, r, 4 * MIB), 0);
	assert_memory_equal(r, exp, 4 * MIB);
	/* A partial write copies the rest of its cluster up the chain. */
	assert_int_equal(qcow2_write(q, 99000, w, 10), 0);
	memcpy(exp + 99000, w, 10);
	assert_int_equal(qcow2_read(q, 0, r, 4 * MIB), 0);
	assert_memory_equal(r, exp, 4 * MIB);
	qcow2_close(q);
	if (have_qemu_img())
		assert_int_equal(qemu_check(tpath("top.qcow2")), 0);

	/* Loops: an image that is its own backing file, and a -> b -> a. */
	{
		struct spec s = {.version = 3, .cbits = 16, .size = MIB, .backing = "self.qcow2"};

		build(tpath("self.qcow2"), &s);
		assert_int_equal(open_q_err(tpath("self.qcow2"), &err), -ELOOP);
		assert_non_null(strstr(err.msg, "loops"));
		s.backing = "b.qcow2";
		build(tpath("a.qcow2"), &s);
		s.backing = "a.qcow2";
		build(tpath("b.qcow2"), &s);
		assert_int_equal(open_q_err(tpath("a.qcow2"), &err), -ELOOP);
		/* Missing backing file. */
		s.backing = "nowhere.qcow2";
		build(tpath("orphan.qcow2"), &s);
		assert_int_equal(open_q_err(tpath("orphan.qcow2"), &err), -ENOENT);
		assert_non_null(strstr(err.msg, "nowhere.qcow2"));
		assert_non_null(strstr(err.msg, "does not exist"));
		/* An unsupported backing format. */
		s.backing = "chain-base.raw";
		s.backing_fmt = "vmdk";
		build(tpath("vmdk.qcow2"), &s);
		assert_int_equal(open_q_err(tpath("vmdk.qcow2"), &err), -ENOTSUP);
	}
	free(exp);
	free(r);
}

static void test_cow_snapshot(void **state)
{
	const char *p = tpath("snap.qcow2");
	uint8_t w[8192], r[8192], old[8192];
	struct qcow2 *q;
	uint64_t before, after;

	if (!have_qemu_img())
		skip();
	create(p, 4 * MIB, 0, NULL);
	assert_int_equal(sh("qemu-io -c 'write -P 0x11 0 256k' '%s' >/dev/null", p), 0);
	assert_int_equal(sh("qemu-img snapshot -c s1 '%s'", p), 0);
	before = l2_entry_of(p, 65536);
	assert_false(before & (1ull << 63)); /* shared: no COPIED */
	assert_int_equal(refcount_of(p, (before & 0x00fffffffffffe00ull) / 65536), 2);
	q = open_q(p, false, 0);
	fill(w, sizeof(w), 3);
	assert_int_equal(qcow2_write(q, 65536 + 100, w, sizeof(w)), 0);
	assert_int_equal(qcow2_read(q, 65536, old, 100), 0);
	memset(r, 0x11, 100);
	assert_memory_equal(old, r, 100);
	assert_int_equal(qcow2_read(q, 65536 + 100, r, sizeof(r)), 0);
	assert_memory_equal(r, w, sizeof(w));
	qcow2_close(q);
	after = l2_entry_of(p, 65536);
	assert_true(after & (1ull << 63));
	assert_int_not_equal(after & 0x00fffffffffffe00ull, before & 0x00fffffffffffe00ull);
	assert_int_equal(refcount_of(p, (before & 0x00fffffffffffe00ull) / 65536), 1);
	assert_int_equal(refcount_of(p, (after & 0x00fffffffffffe00ull) / 65536), 1);
	assert_int_equal(qemu_check(p), 0);
	/* The snapshot still has the old data. */
	assert_int_equal(sh("qemu-img snapshot -a s1 '%s'", p), 0);
	assert_int_equal(sh("qemu-io -c 'read -P 0x11 0 256k' '%s' >/dev/null", p), 0);
}

static void test_compressed(void **state)
{
	static const char *types[] = {"zlib", "zstd"};
	const char *raw = tpath("comp.raw");
	uint8_t *exp = malloc(4 * MIB), *r = malloc(4 * MIB);
	struct qcow2 *q;
	unsigned int i;
	char img[64];

	if (!have_qemu_img())
		skip();
	make_raw(raw, 4 * MIB, 77);
	read_file_at(raw, 0, exp, 4 * MIB);
	memset(exp + MIB, 0, MIB); /* runs of zeros and of one byte compress */
	memset(exp + 2 * MIB, 0x42, MIB);
	write_file_at(raw, 0, exp, 4 * MIB);
	for (i = 0; i < 2; i++) {
		snprintf(img, sizeof(img), "comp-%s.qcow2", types[i]);
		unlink(tpath(img));
		assert_int_equal(sh("qemu-img convert -c -O qcow2 -o compression_type=%s,"
				    "cluster_size=4k '%s' '%s'",
				    types[i], raw, tpath(img)),
				 0);
		q = open_q(tpath(img), false, 0);
		assert_int_equal(qcow2_read(q, 0, r, 4 * MIB), 0);
		assert_memory_equal(r, exp, 4 * MIB);
		/* Partial writes copy out of compressed clusters and free them. */
		assert_int_equal(qcow2_write(q, 2 * MIB + 10, "hello", 5), 0);
		memcpy(exp + 2 * MIB + 10, "hello", 5);
		assert_int_equal(qcow2_read(q, 2 * MIB, r, 8192), 0);
		assert_memory_equal(r, exp + 2 * MIB, 8192);
		qcow2_close(q);
		assert_int_equal(qemu_check(tpath(img)), 0);
		/* A corrupt compressed stream reads as -EIO, not garbage. */
		{
			uint64_t e = l2_entry_of(tpath(img), 0), off;
			uint8_t junk[64];

			assert_true(e & (1ull << 62));
			off = e & ((1ull << (62 - 4)) - 1);
			memset(junk, 0xff, sizeof(junk));
			write_file_at(tpath(img), off, junk, sizeof(junk));
			q = open_q(tpath(img), true, 0);
			assert_int_equal(qcow2_read(q, 0, r, 4096), -EIO);
			qcow2_close(q);
		}
		read_file_at(raw, 2 * MIB + 10, exp + 2 * MIB + 10, 5);
	}
	free(exp);
	free(r);
}

static void test_cache_eviction(void **state)
{
	const char *p = tpath("cache.qcow2");
	struct qcow2_stats st;
	uint8_t w[4096], r[4096];
	struct qcow2 *q;
	uint64_t i;

	/* 4 KiB clusters: one L2 table maps 2 MiB; a 1-byte budget keeps one table. */
	create(p, 64 * MIB, 12, NULL);
	q = open_q(p, false, 1);
	qcow2_get_stats(q, &st);
	assert_int_equal(st.l2_slots, 1);
	for (i = 0; i < 32; i++) {
		fill(w, sizeof(w), (unsigned int)i);
		assert_int_equal(qcow2_write(q, i * 2 * MIB + 4096 * (i % 7), w, sizeof(w)), 0);
	}
	for (i = 0; i < 32; i++) {
		fill(w, sizeof(w), (unsigned int)i);
		assert_int_equal(qcow2_read(q, i * 2 * MIB + 4096 * (i % 7), r, sizeof(r)), 0);
		assert_memory_equal(r, w, sizeof(r));
	}
	qcow2_get_stats(q, &st);
	assert_true(st.l2_evictions >= 60);
	assert_true(st.checkpoints >= 30); /* dirty tables written back on eviction */
	qcow2_close(q);
	if (have_qemu_img())
		assert_int_equal(qemu_check(p), 0);

	/* The default budget holds every table of a small disk. */
	q = open_q(p, true, 0);
	qcow2_get_stats(q, &st);
	assert_int_equal(st.l2_slots, 32);
	qcow2_close(q);
}

static void test_discard_zeroes(void **state)
{
	uint8_t *w = malloc(MIB), *r = malloc(MIB), *z = calloc(1, MIB);
	const char *base = tpath("dz-base.raw");
	unsigned int v;

	make_raw(base, 4 * MIB, 3);
	for (v = 2; v <= 3; v++) {
		struct spec s = {.version = v, .cbits = 16, .rc_order = 4, .size = 4 * MIB};
		const char *p = tpath("dz.qcow2");
		struct qcow2 *q;
		uint64_t e, c;

		/* No backing file: both deallocate whole clusters. */
		build(p, &s);
		q = open_q(p, false, 0);
		fill(w, MIB, 1);
		assert_int_equal(qcow2_write(q, 0, w, MIB), 0);
		assert_int_equal(qcow2_flush(q), 0);
		e = l2_entry_of(p, 65536);
		c = (e & 0x00fffffffffffe00ull) / 65536;
		assert_int_equal(refcount_of(p, c), 1);
		assert_int_equal(qcow2_discard(q, 65536 - 512, 65536 + 1024), 0);
		assert_int_equal(qcow2_write_zeroes(q, 4 * 65536, 2 * 65536, true), 0);
		assert_int_equal(qcow2_write_zeroes(q, 7 * 65536 + 100, 200, false), 0);
		assert_int_equal(qcow2_flush(q), 0);
		assert_int_equal(qcow2_read(q, 0, r, MIB), 0);
		memset(w + 65536, 0, 65536);
		memset(w + 4 * 65536, 0, 2 * 65536);
		memset(w + 7 * 65536 + 100, 0, 200);
		assert_memory_equal(r, w, MIB);
		qcow2_close(q);
		assert_int_equal(l2_entry_of(p, 65536), 0);
		assert_int_equal(refcount_of(p, c), 0);
		if (have_qemu_img())
			assert_int_equal(qemu_check(p), 0);

		/* Write-zeroes without unmap keeps a v3 allocation (zero flag + offset). */
		if (v == 3) {
			q = open_q(p, false, 0);
			assert_int_equal(qcow2_write_zeroes(q, 8 * 65536, 65536, false), 0);
			qcow2_close(q);
			e = l2_entry_of(p, 8 * 65536);
			assert_true(e & 1);
			assert_true(e & 0x00fffffffffffe00ull);
			q = open_q(p, false, 0);
			assert_int_equal(qcow2_read(q, 8 * 65536, r, 65536), 0);
			assert_memory_equal(r, z, 65536);
			/* Writing into it reuses the cluster. */
			assert_int_equal(qcow2_write(q, 8 * 65536 + 5, "abc", 3), 0);
			assert_int_equal(qcow2_read(q, 8 * 65536, r, 65536), 0);
			assert_memory_equal(r + 5, "abc", 3);
			assert_memory_equal(r, z, 5);
			assert_memory_equal(r + 8, z, 65536 - 8);
			qcow2_close(q);
			assert_int_equal(l2_entry_of(p, 8 * 65536) & 0x00fffffffffffe00ull,
					 e & 0x00fffffffffffe00ull);
			if (have_qemu_img())
				assert_int_equal(qemu_check(p), 0);
		}

		/* With a backing file: zeros hide it (v3 zero flag; v2 writes zeros). */
		s.backing = "dz-base.raw";
		s.backing_fmt = "raw";
		build(p, &s);
		q = open_q(p, false, 0);
		assert_int_equal(qcow2_write_zeroes(q, 65536, 65536, true), 0);
		assert_int_equal(qcow2_discard(q, 3 * 65536, 65536), 0);
		assert_int_equal(qcow2_read(q, 65536, r, 65536), 0);
		assert_memory_equal(r, z, 65536);
		assert_int_equal(qcow2_read(q, 3 * 65536, r, 65536), 0);
		read_file_at(base, 3 * 65536, w, 65536);
		if (v == 3)
			assert_memory_equal(r, z, 65536);
		else
			assert_memory_equal(r, w, 65536); /* v2: the backing file shows through */
		qcow2_close(q);
		e = l2_entry_of(p, 65536);
		if (v == 3)
			assert_int_equal(e, 1); /* the zero flag alone */
		else
			assert_true(e & 0x00fffffffffffe00ull);
		if (have_qemu_img())
			assert_int_equal(qemu_check(p), 0);
	}
	free(w);
	free(r);
	free(z);
}

static void test_hostile_tables(void **state)
{
	const char *p = tpath("hostile.qcow2");
	struct vmm_err err = {""};
	uint8_t w[4096], r[4096];
	struct qcow2 *q;
	uint64_t l1, l2, e;

	create(p, 8 * MIB, 12, NULL);
	q = open_q(p, false, 0);
	fill(w, sizeof(w), 1);
	assert_int_equal(qcow2_write(q, 0, w, sizeof(w)), 0);
	qcow2_close(q);
	l1 = file_u64(p, 40);
	l2 = file_u64(p, l1) & 0x00fffffffffffe00ull;
	e = file_u64(p, l2);

	/* L2 entries: beyond the file, misaligned, reserved bits, on the header. */
	patch_u64(p, l2, (1ull << 63) | (1ull << 40));
	q = open_q(p, false, 0);
	assert_int_equal(qcow2_read(q, 0, r, sizeof(r)), 0); /* zeros past EOF, like QEMU */
	assert_int_equal(qcow2_write(q, 0, w, sizeof(w)), -EIO);
	qcow2_close(q);
	patch_u64(p, l2, e + 512);
	q = open_q(p, false, 0);
	assert_int_equal(qcow2_read(q, 0, r, sizeof(r)), -EIO);
	qcow2_close(q);
	patch_u64(p, l2, e | 2);
	q = open_q(p, false, 0);
	assert_int_equal(qcow2_read(q, 0, r, sizeof(r)), -EIO);
	qcow2_close(q);
	patch_u64(p, l2, (1ull << 63) | 0);
	q = open_q(p, false, 0);
	assert_int_equal(qcow2_read(q, 0, r, sizeof(r)), -EIO);
	qcow2_close(q);
	patch_u64(p, l2, (1ull << 63) | l1);
	q = open_q(p, false, 0);
	assert_int_equal(qcow2_write(q, 0, w, sizeof(w)), -EIO); /* would overwrite the L1 */
	qcow2_close(q);
	patch_u64(p, l2, e);

	/* L1 entries: reserved bits, misaligned, outside the file, on the refcount table. */
	patch_u64(p, l1, l2 | (1ull << 60));
	assert_int_equal(open_q_err(p, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "L1 entry"));
	patch_u64(p, l1, l2 + 512);
	assert_int_equal(open_q_err(p, &err), -EINVAL);
	patch_u64(p, l1, 1ull << 50);
	assert_int_equal(open_q_err(p, &err), -EINVAL);
	patch_u64(p, l1, file_u64(p, 48));
	assert_int_equal(open_q_err(p, &err), -EINVAL);
	patch_u64(p, l1, l2 | (1ull << 63));

	/* Refcount table entries. */
	{
		uint64_t rt = file_u64(p, 48), rb = file_u64(p, rt);

		patch_u64(p, rt + 8, 1ull << 45);
		assert_int_equal(open_q_err(p, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "refcount table entry"));
		patch_u64(p, rt + 8, rb + 1);
		assert_int_equal(open_q_err(p, &err), -EINVAL);
		patch_u64(p, rt + 8, l1);
		assert_int_equal(open_q_err(p, &err), -EINVAL);
		patch_u64(p, rt + 8, 0);
	}
	/* Dirty and corrupt images are refused with a clear message. */
	patch_u64(p, 72, 1);
	assert_int_equal(open_q_err(p, &err), -EUCLEAN);
	assert_non_null(strstr(err.msg, "repair it with qemu-img check -r all"));
	patch_u64(p, 72, 2);
	assert_int_equal(open_q_err(p, &err), -EUCLEAN);
	patch_u64(p, 72, 0);
	/* Unknown auto-clear bits are cleared by a writer. */
	patch_u64(p, 88, 3);
	q = open_q(p, false, 0);
	qcow2_close(q);
	assert_int_equal(file_u64(p, 88), 0);
	assert_int_equal(open_q_err(p, &err), 0);
	(void)patch_u32;
}

/* ---- Through the disk interface ---- */

struct waiter {
	unsigned int calls;
	int64_t result;
};

static void done_cb(struct disk_req *r)
{
	struct waiter *w = r->opaque;

	w->calls++;
	w->result = r->result;
}

static int64_t drun(struct disk *d, struct disk_req *r)
{
	struct waiter w = {0, 0};

	r->done = done_cb;
	r->opaque = &w;
	assert_int_equal(disk_submit(d, r), 0);
	disk_wait(d);
	assert_int_equal(w.calls, 1);
	return w.result;
}

static int64_t drw(struct disk *d, enum disk_op op, uint64_t off, void *buf, size_t len)
{
	struct iovec v[3] = {{buf, len / 3},
			     {(uint8_t *)buf + len / 3, len / 3},
			     {(uint8_t *)buf + 2 * (len / 3), len - 2 * (len / 3)}};
	struct disk_req r = {.op = op, .offset = off, .iov = v, .iovcnt = 3};

	return drun(d, &r);
}

static void test_disk_formats(void **state)
{
	const char *p = tpath("fmt.qcow2"), *raw = tpath("fmt.raw");
	struct disk_opts o = {0};
	struct vmm_err err = {""};
	enum disk_format f;
	struct disk *d;
	struct stat st;

	create(p, 3 * MIB, 0, NULL);
	make_raw(raw, MIB, 1);
	assert_int_equal(disk_open(p, true, &d, &err), 0);
	assert_string_equal(disk_format_name(d), "qcow2");
	assert_int_equal(disk_size(d), 3 * MIB);
	disk_close(d);
	/* Explicit raw stays raw on a qcow2 file. */
	o.format = DISK_FORMAT_RAW;
	o.flags = DISK_OPEN_READ_ONLY;
	assert_int_equal(disk_open_opts(p, &o, &d, &err), 0);
	assert_string_equal(disk_format_name(d), "raw");
	stat(p, &st);
	assert_int_equal(disk_size(d), (uint64_t)st.st_size);
	disk_close(d);
	/* Explicit qcow2 refuses a raw file; detection makes it raw. */
	o.format = DISK_FORMAT_QCOW2;
	assert_int_equal(disk_open_opts(raw, &o, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a qcow2 image"));
	assert_int_equal(disk_open(raw, true, &d, &err), 0);
	assert_string_equal(disk_format_name(d), "raw");
	disk_close(d);
	/* A raw file that starts with the magic is detected as qcow2 (and refused here). */
	write_file_at(raw, 0, "QFI\xfb", 4);
	assert_true(disk_open(raw, true, &d, &err) < 0);
	o.format = DISK_FORMAT_RAW;
	assert_int_equal(disk_open_opts(raw, &o, &d, &err), 0);
	disk_close(d);
	o.format = (enum disk_format)7;
	assert_int_equal(disk_open_opts(raw, &o, &d, &err), -EINVAL);

	assert_int_equal(disk_format_parse("raw", &f), 0);
	assert_int_equal(f, DISK_FORMAT_RAW);
	assert_int_equal(disk_format_parse("qcow2", &f), 0);
	assert_int_equal(f, DISK_FORMAT_QCOW2);
	assert_int_equal(disk_format_parse("detect", &f), 0);
	assert_int_equal(f, DISK_FORMAT_DETECT);
	assert_int_equal(disk_format_parse(NULL, &f), 0);
	assert_int_equal(disk_format_parse("vmdk", &f), -EINVAL);
}

static void disk_io(unsigned int flags)
{
	const char *p = tpath("io.qcow2");
	uint8_t *w = malloc(MIB), *r = malloc(MIB), *z = calloc(1, MIB);
	struct disk_opts o = {.flags = flags};
	struct vmm_err err = {""};
	struct disk_req req;
	struct qcow2_stats st;
	struct disk *d;
	uint64_t off;
	int i;

	create(p, 16 * MIB, 0, NULL);
	assert_int_equal(disk_open_opts(p, &o, &d, &err), 0);
	fill(w, MIB, 4);
	/* Allocating writes (metadata thread), then rewrites and reads (fast path). */
	assert_int_equal(drw(d, DISK_OP_WRITE, 100000, w, MIB), (int64_t)MIB);
	assert_int_equal(drw(d, DISK_OP_WRITE, 100000, w, MIB), (int64_t)MIB);
	for (i = 0; i < 20; i++)
		assert_int_equal(drw(d, DISK_OP_READ, 100000, r, MIB), (int64_t)MIB);
	assert_memory_equal(r, w, MIB);
	assert_int_equal(drw(d, DISK_OP_READ, 8 * MIB, r, MIB), (int64_t)MIB);
	assert_memory_equal(r, z, MIB);
	memset(&req, 0, sizeof(req));
	req.op = DISK_OP_FLUSH;
	assert_int_equal(drun(d, &req), 0);
	req.op = DISK_OP_DISCARD;
	req.offset = 0;
	req.len = 512 * KIB + 100;
	assert_int_equal(drun(d, &req), 0);
	req.op = DISK_OP_WRITE_ZEROES;
	req.offset = 5 * MIB + 3;
	req.len = 1000;
	req.flags = DISK_REQ_F_UNMAP;
	assert_int_equal(drun(d, &req), 0);
	assert_int_equal(drw(d, DISK_OP_READ, 100000, r, MIB), (int64_t)MIB);
	/* Whole clusters of the discarded range read as zeros, the partial one keeps data. */
	for (off = 100000; off < 100000 + MIB; off++)
		assert_int_equal(r[off - 100000], off < 512 * KIB ? 0 : w[off - 100000]);
	/* Past the end: refused at submission. */
	req.op = DISK_OP_READ;
	req.offset = 16 * MIB;
	req.iov = &(struct iovec){r, 512};
	req.iovcnt = 1;
	req.done = done_cb;
	assert_int_equal(disk_submit(d, &req), -EINVAL);
	disk_close(d);
	if (have_qemu_img())
		assert_int_equal(qemu_check(p), 0);
	(void)st;
	free(w);
	free(r);
	free(z);
}

static void test_disk_io_default(void **state)
{
	disk_io(0);
}

static void test_disk_io_threads(void **state)
{
	disk_io(DISK_OPEN_THREAD_POOL);
}

static void test_disk_many_in_flight(void **state)
{
	const char *p = tpath("many.qcow2");
	enum { N = 64, BS = 8192 };
	struct disk_req req[N];
	struct iovec v[N];
	struct waiter w[N];
	uint8_t *buf = malloc(N * BS), *r = malloc(N * BS);
	struct vmm_err err = {""};
	struct disk *d;
	int i, round;

	create(p, 8 * MIB, 12, NULL);
	assert_int_equal(disk_open(p, false, &d, &err), 0);
	for (round = 0; round < 3; round++) {
		fill(buf, N * BS, (unsigned int)round);
		for (i = 0; i < N; i++) {
			memset(&req[i], 0, sizeof(req[i]));
			memset(&w[i], 0, sizeof(w[i]));
			v[i].iov_base = buf + i * BS;
			v[i].iov_len = BS;
			req[i].op = DISK_OP_WRITE;
			req[i].offset = (uint64_t)((i * 37) % N) * BS * 2 + (round ? 512 : 0);
			req[i].iov = &v[i];
			req[i].iovcnt = 1;
			req[i].done = done_cb;
			req[i].opaque = &w[i];
			assert_int_equal(disk_submit(d, &req[i]), 0);
		}
		disk_wait(d);
		assert_int_equal(disk_inflight(d), 0);
		for (i = 0; i < N; i++) {
			assert_int_equal(w[i].calls, 1);
			assert_int_equal(w[i].result, BS);
		}
		for (i = 0; i < N; i++) {
			assert_int_equal(drw(d, DISK_OP_READ,
					     (uint64_t)((i * 37) % N) * BS * 2 + (round ? 512 : 0),
					     r + i * BS, BS),
					 BS);
		}
		assert_memory_equal(r, buf, N * BS);
	}
	/* Close with requests in flight: no done() runs, nothing leaks or hangs. */
	for (i = 0; i < N; i++) {
		v[i].iov_base = r + i * BS;
		req[i].op = i % 3 ? DISK_OP_READ : DISK_OP_DISCARD;
		req[i].len = BS;
		w[i].calls = 0;
		assert_int_equal(disk_submit(d, &req[i]), 0);
	}
	disk_close(d);
	if (have_qemu_img())
		assert_true(qemu_check(p) == 0 || qemu_check(p) == 3);
	free(buf);
	free(r);
}

static int setup(void **state)
{
	const char *dir = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/test_qcow2.XXXXXX", dir && *dir ? dir : "/tmp");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_valid),
		cmocka_unit_test(test_header_truncated),
		cmocka_unit_test(test_header_invalid),
		cmocka_unit_test(test_header_extensions),
		cmocka_unit_test(test_create_and_translate),
		cmocka_unit_test(test_refcount_widths),
		cmocka_unit_test(test_refcount_table_growth),
		cmocka_unit_test(test_backing_chain),
		cmocka_unit_test(test_cow_snapshot),
		cmocka_unit_test(test_compressed),
		cmocka_unit_test(test_cache_eviction),
		cmocka_unit_test(test_discard_zeroes),
		cmocka_unit_test(test_hostile_tables),
		cmocka_unit_test(test_disk_formats),
		cmocka_unit_test(test_disk_io_default),
		cmocka_unit_test(test_disk_io_threads),
		cmocka_unit_test(test_disk_many_in_flight),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
