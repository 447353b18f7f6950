/* Unit tests for the disk backend: raw files through io_uring and the thread pool. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/disk.h"

#define DISK_BYTES (1024 * 1024)

/* Open flags per engine: the default (io_uring where the host allows it) and the pool. */
static unsigned int engine_default = 0;
static unsigned int engine_pool = DISK_OPEN_THREAD_POOL;

struct tmp {
	char path[PATH_MAX];
};

/* A temporary file of @size bytes filled with a pattern of @seed. */
static void tmp_create(struct tmp *t, uint64_t size, uint8_t seed)
{
	const char *dir = getenv("TMPDIR");
	uint8_t buf[4096];
	uint64_t off;
	int fd;
	size_t i;

	snprintf(t->path, sizeof(t->path), "%s/test_disk.XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkstemp(t->path);
	assert_true(fd >= 0);
	for (off = 0; off < size; off += sizeof(buf)) {
		size_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);

		for (i = 0; i < n; i++)
			buf[i] = (uint8_t)(seed + (off + i) * 7 + ((off + i) >> 9));
		assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
	}
	close(fd);
}

static void tmp_remove(struct tmp *t)
{
	unlink(t->path);
}

static uint8_t pattern(uint8_t seed, uint64_t off)
{
	return (uint8_t)(seed + off * 7 + (off >> 9));
}

static void file_read(const char *path, uint64_t off, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

struct counter {
	unsigned int calls;
	int64_t last;
};

static void on_done(struct disk_req *r)
{
	struct counter *c = r->opaque;

	c->calls++;
	c->last = r->result;
}

/* Submit @r, wait for it, return its result; asserts done() ran once. */
static int64_t run(struct disk *d, struct disk_req *r)
{
	struct counter c = {0, 0};

	r->done = on_done;
	r->opaque = &c;
	assert_int_equal(disk_submit(d, r), 0);
	disk_wait(d);
	assert_int_equal(c.calls, 1);
	assert_int_equal(disk_inflight(d), 0);
	return c.last;
}

static int64_t rw(struct disk *d, enum disk_op op, uint64_t off, void *buf, size_t len)
{
	struct iovec v = {buf, len};
	struct disk_req r = {.op = op, .offset = off, .iov = &v, .iovcnt = 1};

	return run(d, &r);
}

static int64_t ranged(struct disk *d, enum disk_op op, uint64_t off, uint64_t len,
		      unsigned int flags)
{
	struct disk_req r = {.op = op, .offset = off, .len = len, .flags = flags};

	return run(d, &r);
}

static struct disk *open_ok(const char *path, unsigned int flags)
{
	struct vmm_err err = {""};
	struct disk *d = NULL;

	assert_int_equal(disk_open_flags(path, flags, &d, &err), 0);
	assert_non_null(d);
	if (flags & DISK_OPEN_THREAD_POOL)
		assert_string_equal(disk_engine(d), "threads");
	return d;
}

static void test_open_basics(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	struct tmp t;
	struct disk *d;

	tmp_create(&t, DISK_BYTES, 1);
	d = open_ok(t.path, eng);
	assert_int_equal(disk_size(d), DISK_BYTES);
	assert_false(disk_read_only(d));
	assert_true(disk_event_fd(d) >= 0);
	assert_true(!strcmp(disk_engine(d), "io_uring") || !strcmp(disk_engine(d), "threads"));
	if (!eng)
		print_message("default engine: %s\n", disk_engine(d));
	assert_int_equal(disk_inflight(d), 0);
	assert_int_equal(disk_complete(d), 0);
	disk_close(d);

	d = open_ok(t.path, eng | DISK_OPEN_READ_ONLY);
	assert_true(disk_read_only(d));
	disk_close(d);
	disk_close(NULL);
	tmp_remove(&t);
}

static void test_read_write_flush(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	uint8_t *buf = malloc(65536), *chk = malloc(65536);
	struct tmp t;
	struct disk *d;
	size_t i;

	tmp_create(&t, DISK_BYTES, 2);
	d = open_ok(t.path, eng);

	assert_int_equal(rw(d, DISK_OP_READ, 4096, buf, 8192), 8192);
	for (i = 0; i < 8192; i++)
		assert_int_equal(buf[i], pattern(2, 4096 + i));

	for (i = 0; i < 65536; i++)
		buf[i] = (uint8_t)(i * 13 + 5);
	assert_int_equal(rw(d, DISK_OP_WRITE, DISK_BYTES - 65536, buf, 65536), 65536);
	assert_int_equal(ranged(d, DISK_OP_FLUSH, 0, 0, 0), 0);
	file_read(t.path, DISK_BYTES - 65536, chk, 65536);
	assert_memory_equal(buf, chk, 65536);

	memset(chk, 0, 65536);
	assert_int_equal(rw(d, DISK_OP_READ, DISK_BYTES - 65536, chk, 65536), 65536);
	assert_memory_equal(buf, chk, 65536);
	assert_int_equal(disk_size(d), DISK_BYTES); /* never extended */

	disk_close(d);
	tmp_remove(&t);
	free(buf);
	free(chk);
}

/* Scatter-gather: many small, odd-sized iovec entries in one request. */
static void test_scatter_gather(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	static uint8_t parts[100][37];
	struct iovec v[100];
	uint8_t chk[3700];
	struct disk_req r = {.op = DISK_OP_WRITE, .offset = 1000, .iov = v, .iovcnt = 100};
	struct tmp t;
	struct disk *d;
	size_t i, j;

	tmp_create(&t, DISK_BYTES, 3);
	d = open_ok(t.path, eng);
	for (i = 0; i < 100; i++) {
		for (j = 0; j < 37; j++)
			parts[i][j] = (uint8_t)(i ^ (j * 3));
		v[i].iov_base = parts[i];
		v[i].iov_len = 37;
	}
	assert_int_equal(run(d, &r), 3700);
	file_read(t.path, 1000, chk, sizeof(chk));
	for (i = 0; i < 100; i++)
		assert_memory_equal(chk + i * 37, parts[i], 37);

	memset(parts, 0, sizeof(parts));
	for (i = 0; i < 100; i++) {
		v[i].iov_base = parts[i];
		v[i].iov_len = 37;
	}
	r.op = DISK_OP_READ;
	assert_int_equal(run(d, &r), 3700);
	for (i = 0; i < 100; i++)
		assert_memory_equal(chk + i * 37, parts[i], 37);
	disk_close(d);
	tmp_remove(&t);
}

static void test_bounds(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	uint8_t buf[1024];
	struct iovec v[2] = {{buf, 512}, {buf, SIZE_MAX}};
	struct disk_req r = {.op = DISK_OP_READ, .iov = v, .iovcnt = 1, .done = on_done};
	struct stat st;
	struct tmp t;
	struct disk *d;

	tmp_create(&t, DISK_BYTES, 4);
	d = open_ok(t.path, eng);

	r.offset = DISK_BYTES - 511; /* one byte past the end */
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.op = DISK_OP_WRITE;
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.offset = UINT64_MAX - 100; /* overflows */
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.offset = 0;
	r.iovcnt = 2; /* lengths sum past 2^64 */
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.iovcnt = DISK_MAX_IOV + 1;
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.iovcnt = 1;
	r.done = NULL;
	r.offset = 0;
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.done = on_done;
	r.op = (enum disk_op)77;
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.op = DISK_OP_READ;
	r.flags = 0x80;
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.flags = 0;

	r.op = DISK_OP_DISCARD;
	r.offset = DISK_BYTES - 4096;
	r.len = 8192;
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.op = DISK_OP_WRITE_ZEROES;
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	r.offset = UINT64_MAX;
	r.len = 2;
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	assert_int_equal(disk_inflight(d), 0);

	/* The last byte is reachable; zero-length requests at the end complete. */
	assert_int_equal(rw(d, DISK_OP_READ, DISK_BYTES - 1, buf, 1), 1);
	assert_int_equal(rw(d, DISK_OP_WRITE, DISK_BYTES, buf, 0), 0);
	assert_int_equal(ranged(d, DISK_OP_DISCARD, DISK_BYTES, 0, 0), 0);

	disk_close(d);
	assert_int_equal(stat(t.path, &st), 0);
	assert_int_equal(st.st_size, DISK_BYTES);
	tmp_remove(&t);
}

/* A size that is not a multiple of 512: every byte is reachable, none past it. */
static void test_odd_size(void **state)
{
	uint8_t buf[512];
	struct iovec v = {buf, 512};
	struct disk_req r = {
		.op = DISK_OP_READ, .offset = 512, .iov = &v, .iovcnt = 1, .done = on_done};
	struct tmp t;
	struct disk *d;

	tmp_create(&t, 1000, 5);
	d = open_ok(t.path, 0);
	assert_int_equal(disk_size(d), 1000);
	assert_int_equal(rw(d, DISK_OP_READ, 512, buf, 488), 488);
	assert_int_equal(buf[487], pattern(5, 999));
	assert_int_equal(disk_submit(d, &r), -EINVAL);
	disk_close(d);
	tmp_remove(&t);
}

static void test_read_only(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	uint8_t buf[4096], chk[4096];
	struct iovec v = {buf, sizeof(buf)};
	struct disk_req r = {.op = DISK_OP_WRITE, .iov = &v, .iovcnt = 1, .done = on_done};
	struct tmp t;
	struct disk *d;

	tmp_create(&t, DISK_BYTES, 6);
	d = open_ok(t.path, eng | DISK_OPEN_READ_ONLY);
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(disk_submit(d, &r), -EROFS);
	r.op = DISK_OP_DISCARD;
	r.len = 4096;
	assert_int_equal(disk_submit(d, &r), -EROFS);
	r.op = DISK_OP_WRITE_ZEROES;
	assert_int_equal(disk_submit(d, &r), -EROFS);
	assert_int_equal(ranged(d, DISK_OP_FLUSH, 0, 0, 0), 0);
	assert_int_equal(rw(d, DISK_OP_READ, 0, buf, sizeof(buf)), sizeof(buf));
	file_read(t.path, 0, chk, sizeof(chk));
	assert_memory_equal(buf, chk, sizeof(buf));
	assert_int_equal(chk[0], pattern(6, 0));
	disk_close(d);
	tmp_remove(&t);
}

static void assert_zero(const char *path, uint64_t off, size_t len)
{
	uint8_t *b = malloc(len);
	size_t i;

	file_read(path, off, b, len);
	for (i = 0; i < len; i++)
		if (b[i])
			fail_msg("byte %zu of [%llu, +%zu) is %#x", i, (unsigned long long)off, len,
				 b[i]);
	free(b);
}

static void test_discard_write_zeroes(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	uint8_t b[2];
	struct stat st;
	struct tmp t;
	struct disk *d;

	tmp_create(&t, DISK_BYTES, 7);
	d = open_ok(t.path, eng);

	assert_int_equal(ranged(d, DISK_OP_DISCARD, 8192, 16384, 0), 0);
	assert_zero(t.path, 8192, 16384);
	assert_int_equal(ranged(d, DISK_OP_WRITE_ZEROES, 65536 + 100, 5000, 0), 0);
	assert_zero(t.path, 65536 + 100, 5000);
	assert_int_equal(ranged(d, DISK_OP_WRITE_ZEROES, 131072, 300000, DISK_REQ_F_UNMAP), 0);
	assert_zero(t.path, 131072, 300000);

	/* Neighbours untouched. */
	file_read(t.path, 8191, b, 1);
	assert_int_equal(b[0], pattern(7, 8191));
	file_read(t.path, 8192 + 16384, b, 1);
	assert_int_equal(b[0], pattern(7, 8192 + 16384));
	file_read(t.path, 65536 + 99, b, 2);
	assert_int_equal(b[0], pattern(7, 65536 + 99));
	assert_int_equal(b[1], 0);
	file_read(t.path, 65536 + 5100, b, 1);
	assert_int_equal(b[0], pattern(7, 65536 + 5100));

	assert_int_equal(stat(t.path, &st), 0);
	assert_int_equal(st.st_size, DISK_BYTES);
	disk_close(d);
	tmp_remove(&t);
}

/*
 * A memfd reopened through /proc/self/fd/N: tmpfs cannot FALLOC_FL_ZERO_RANGE,
 * so WRITE_ZEROES without unmap falls back to writing zeros (2.5 chunks).
 */
static void test_proc_fd_and_zero_fallback(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	uint64_t size = 4 << 20;
	uint8_t *fill = malloc(size);
	char path[64];
	struct disk *d;
	int fd;

	fd = memfd_create("test_disk", MFD_CLOEXEC);
	assert_true(fd >= 0);
	memset(fill, 0xa5, size);
	assert_int_equal(pwrite(fd, fill, size, 0), (ssize_t)size);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	d = open_ok(path, eng);
	assert_int_equal(disk_size(d), size);
	assert_int_equal(ranged(d, DISK_OP_WRITE_ZEROES, 1000, (5 << 19) + 3, 0), 0);
	assert_zero(path, 1000, (5 << 19) + 3);
	assert_int_equal(ranged(d, DISK_OP_DISCARD, 3 << 20, 4096, 0), 0);
	assert_int_equal(ranged(d, DISK_OP_WRITE_ZEROES, size - 4096, 4096, DISK_REQ_F_UNMAP), 0);
	assert_zero(path, size - 4096, 4096);
	file_read(path, 999, fill, 1);
	assert_int_equal(fill[0], 0xa5);
	file_read(path, 1000 + (5 << 19) + 3, fill, 1);
	assert_int_equal(fill[0], 0xa5);
	disk_close(d);
	close(fd);
	free(fill);
}

#define NREQ 64

struct many {
	struct disk_req r[NREQ];
	struct iovec v[NREQ];
	uint8_t buf[NREQ][4096];
	unsigned int done;
	bool bad;
};

static void many_done(struct disk_req *r)
{
	struct many *m = r->opaque;

	if (r->result != 4096)
		m->bad = true;
	m->done++;
}

static void test_many_in_flight(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	struct many *m = calloc(1, sizeof(*m));
	struct tmp t;
	struct disk *d;
	unsigned int i, j;

	tmp_create(&t, DISK_BYTES, 8);
	d = open_ok(t.path, eng);
	for (i = 0; i < NREQ; i++) {
		memset(m->buf[i], (int)i + 1, 4096);
		m->v[i] = (struct iovec){m->buf[i], 4096};
		m->r[i] = (struct disk_req){.op = DISK_OP_WRITE,
					    .offset = (uint64_t)i * 8192,
					    .iov = &m->v[i],
					    .iovcnt = 1,
					    .done = many_done,
					    .opaque = m};
		assert_int_equal(disk_submit(d, &m->r[i]), 0);
	}
	assert_int_equal(disk_inflight(d), NREQ);
	disk_wait(d);
	assert_int_equal(m->done, NREQ);
	assert_false(m->bad);

	/* Read them back, all in flight again, through the event fd. */
	for (i = 0; i < NREQ; i++) {
		memset(m->buf[i], 0, 4096);
		m->v[i] = (struct iovec){m->buf[i], 4096};
		m->r[i].op = DISK_OP_READ;
		assert_int_equal(disk_submit(d, &m->r[i]), 0);
	}
	m->done = 0;
	while (m->done < NREQ) {
		struct pollfd p = {.fd = disk_event_fd(d), .events = POLLIN};

		assert_int_equal(poll(&p, 1, 10000), 1);
		disk_complete(d);
	}
	assert_false(m->bad);
	for (i = 0; i < NREQ; i++)
		for (j = 0; j < 4096; j++)
			assert_int_equal(m->buf[i][j], i + 1);
	disk_close(d);
	tmp_remove(&t);
	free(m);
}

/* done() may submit the next request; closing with requests in flight is safe. */
struct chain_state {
	struct disk *d;
	struct disk_req r;
	struct iovec v;
	uint8_t buf[512];
	unsigned int steps;
};

static void chain_done(struct disk_req *r)
{
	struct chain_state *c = r->opaque;

	assert_int_equal(r->result, 512);
	if (++c->steps < 10) {
		r->offset += 512;
		c->v = (struct iovec){c->buf, 512};
		assert_int_equal(disk_submit(c->d, r), 0);
	}
}

static void test_resubmit_and_close(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	struct chain_state *c = calloc(1, sizeof(*c));
	struct many *m = calloc(1, sizeof(*m));
	struct tmp t;
	unsigned int i;

	tmp_create(&t, DISK_BYTES, 9);
	c->d = open_ok(t.path, eng);
	c->v = (struct iovec){c->buf, 512};
	c->r = (struct disk_req){
		.op = DISK_OP_READ, .iov = &c->v, .iovcnt = 1, .done = chain_done, .opaque = c};
	assert_int_equal(disk_submit(c->d, &c->r), 0);
	disk_wait(c->d);
	assert_int_equal(c->steps, 10);
	assert_int_equal(c->buf[511], pattern(9, 9 * 512 + 511));

	for (i = 0; i < NREQ; i++) {
		m->v[i] = (struct iovec){m->buf[i], 4096};
		m->r[i] = (struct disk_req){.op = DISK_OP_READ,
					    .offset = (uint64_t)i * 4096,
					    .iov = &m->v[i],
					    .iovcnt = 1,
					    .done = many_done,
					    .opaque = m};
		assert_int_equal(disk_submit(c->d, &m->r[i]), 0);
	}
	disk_close(c->d); /* waits for the I/O, runs no callbacks */
	assert_int_equal(m->done, 0);
	tmp_remove(&t);
	free(m);
	free(c);
}

/* The file shrank under the disk: a read crossing the new end fails, after the bytes before it. */
static void test_file_shrank(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	uint8_t a[4096], b[4096];
	struct iovec v[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
	struct disk_req r = {.op = DISK_OP_READ, .offset = 4096, .iov = v, .iovcnt = 2};
	struct tmp t;
	struct disk *d;

	tmp_create(&t, DISK_BYTES, 11);
	d = open_ok(t.path, eng);
	assert_int_equal(truncate(t.path, 8192 + 100), 0);
	memset(b, 0, sizeof(b));
	assert_int_equal(run(d, &r), -EIO);
	assert_int_equal(a[0], pattern(11, 4096));
	assert_int_equal(a[4095], pattern(11, 8191));
	assert_int_equal(b[99], pattern(11, 8291)); /* the second entry got its 100 bytes */
	assert_int_equal(b[100], 0);
	disk_close(d);
	tmp_remove(&t);
}

static int open_err(const char *path, unsigned int flags, struct vmm_err *err)
{
	struct disk *d = (struct disk *)1;
	int ret;

	err->msg[0] = '\0';
	ret = disk_open_flags(path, flags, &d, err);
	assert_null(d);
	assert_true(ret < 0);
	assert_non_null(strstr(err->msg, path));
	assert_null(strchr(err->msg, '\n'));
	return ret;
}

static void test_locking(void **state)
{
	struct vmm_err err;
	struct tmp t;
	struct disk *a, *b, *c;

	tmp_create(&t, DISK_BYTES, 10);
	a = open_ok(t.path, 0);
	/* A second open file description, even in this process, is another user. */
	assert_int_equal(open_err(t.path, 0, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "is in use by another process (locked)"));
	assert_int_equal(open_err(t.path, DISK_OPEN_READ_ONLY, &err), -EBUSY);
	disk_close(a);

	a = open_ok(t.path, DISK_OPEN_READ_ONLY);
	b = open_ok(t.path, DISK_OPEN_READ_ONLY | DISK_OPEN_THREAD_POOL);
	assert_int_equal(open_err(t.path, 0, &err), -EBUSY);
	disk_close(a);
	assert_int_equal(open_err(t.path, 0, &err), -EBUSY);
	disk_close(b);
	c = open_ok(t.path, 0); /* the lock went with the last reader */
	disk_close(c);
	tmp_remove(&t);
}

static void test_bad_paths(void **state)
{
	const char *dir = getenv("TMPDIR");
	char base[PATH_MAX], fifo[PATH_MAX + 16], missing[PATH_MAX + 16];
	struct vmm_err err;
	struct disk *d = NULL;

	snprintf(base, sizeof(base), "%s/test_disk_dir.XXXXXX", dir && *dir ? dir : "/tmp");
	assert_non_null(mkdtemp(base));
	assert_int_equal(open_err(base, DISK_OPEN_READ_ONLY, &err), -EISDIR);
	assert_non_null(strstr(err.msg, "directory"));
	assert_int_equal(open_err(base, 0, &err), -EISDIR);

	snprintf(missing, sizeof(missing), "%s/missing", base);
	assert_int_equal(open_err(missing, 0, &err), -ENOENT);

	/* A FIFO without a writer must be refused, not block. */
	snprintf(fifo, sizeof(fifo), "%s/fifo", base);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(open_err(fifo, DISK_OPEN_READ_ONLY, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a regular file or block device"));
	assert_int_equal(open_err(fifo, 0, &err), -EINVAL);
	unlink(fifo);
	rmdir(base);

	assert_int_equal(open_err("/dev/null", 0, &err), -EINVAL);
	assert_int_equal(disk_open("", false, &d, &err), -EINVAL);
	assert_null(d);
	assert_int_equal(disk_open_flags("/dev/null", 0x100, &d, &err), -EINVAL);
}

/* Submit a WRITE of @len bytes of @buf at @off in two iovecs split at @split; returns
 * disk_submit(). */
static int write_split(struct disk *d, struct disk_req *r, struct iovec *v, uint64_t off,
		       uint8_t *buf, size_t len, size_t split, struct counter *c)
{
	v[0].iov_base = buf;
	v[0].iov_len = split;
	v[1].iov_base = buf + split;
	v[1].iov_len = len - split;
	memset(r, 0, sizeof(*r));
	r->op = DISK_OP_WRITE;
	r->offset = off;
	r->iov = v;
	r->iovcnt = 2;
	r->done = on_done;
	r->opaque = c;
	return disk_submit(d, r);
}

static void assert_file_head(const char *path, const uint8_t *want, size_t len)
{
	uint8_t got[512];

	assert_true(len <= sizeof(got));
	file_read(path, 0, got, len);
	assert_memory_equal(got, want, len);
}

/*
 * A writable raw image whose format was detected never comes to start with
 * the qcow2 magic: such writes fail (the guest sees an I/O error) and leave
 * the file as it was. Explicit DISK_FORMAT_RAW allows them.
 */
static void test_probed_raw_guard(void **state)
{
	unsigned int eng = *(unsigned int *)*state;
	static const uint8_t magic[4] = {'Q', 'F', 'I', 0xfb};
	struct disk_opts raw = {.flags = eng, .format = DISK_FORMAT_RAW};
	uint8_t sec[512], before[512], mbr[512];
	struct vmm_err err = {""};
	struct disk_req r, r2;
	struct iovec v[2], v2[2];
	struct counter c = {0, 0}, c2 = {0, 0};
	struct tmp t;
	struct disk *d;

	tmp_create(&t, DISK_BYTES, 21);
	d = open_ok(t.path, eng);
	assert_string_equal(disk_format_name(d), "raw");
	file_read(t.path, 0, before, sizeof(before));

	/* A qcow2 header naming a host file as its backing file, in one sector. */
	memset(sec, 0, sizeof(sec));
	memcpy(sec, magic, 4);
	sec[7] = 3;
	memcpy(sec + 200, "/etc/shadow", 11);
	assert_int_equal(write_split(d, &r, v, 0, sec, sizeof(sec), 256, &c), -EPERM);
	assert_int_equal(write_split(d, &r, v, 0, sec, sizeof(sec), 2, &c), -EPERM);
	assert_int_equal(write_split(d, &r, v, 0, sec, 4, 1, &c), -EPERM);
	assert_int_equal(disk_inflight(d), 0);
	assert_int_equal(c.calls, 0);
	assert_file_head(t.path, before, sizeof(before));

	/* Bytes already there plus a partial write that completes the magic. */
	memset(sec, 0, sizeof(sec));
	sec[3] = 0xfb;
	assert_int_equal(rw(d, DISK_OP_WRITE, 0, sec, sizeof(sec)), sizeof(sec));
	assert_int_equal(write_split(d, &r, v, 0, (uint8_t *)"QFI", 3, 1, &c), -EPERM);
	assert_int_equal(write_split(d, &r, v, 1, (uint8_t *)"FIxx", 4, 2, &c), 0); /* "\0FIx" */
	disk_wait(d);
	assert_int_equal(c.last, 4);
	memcpy(sec, "QFI", 3);
	sec[3] = 0;
	assert_int_equal(rw(d, DISK_OP_WRITE, 0, sec, 4), 4);
	sec[3] = 0xfb;
	assert_int_equal(write_split(d, &r, v, 3, sec + 3, 1, 0, &c), -EPERM);
	assert_int_equal(write_split(d, &r, v, 2, sec + 2, 2, 1, &c), -EPERM);
	sec[3] = 0;
	assert_file_head(t.path, sec, 4);

	/* An MBR, zeroes and discard of sector 0 are ordinary writes. */
	memset(mbr, 0, sizeof(mbr));
	mbr[0] = 0xeb;
	mbr[1] = 0x63;
	mbr[2] = 0x90;
	mbr[446] = 0x80;
	mbr[450] = 0x83;
	mbr[510] = 0x55;
	mbr[511] = 0xaa;
	assert_int_equal(rw(d, DISK_OP_WRITE, 0, mbr, sizeof(mbr)), sizeof(mbr));
	assert_file_head(t.path, mbr, sizeof(mbr));
	assert_int_equal(ranged(d, DISK_OP_WRITE_ZEROES, 0, 4096, 0), 0);
	assert_int_equal(ranged(d, DISK_OP_DISCARD, 0, 4096, 0), 0);
	assert_int_equal(rw(d, DISK_OP_WRITE, 0, mbr, sizeof(mbr)), sizeof(mbr));

	/*
	 * With a write of the first bytes in flight, a partial one could land
	 * before or after it: refused until it finished. Whole ones may overlap.
	 */
	assert_int_equal(write_split(d, &r, v, 0, mbr, sizeof(mbr), 100, &c), 0);
	assert_int_equal(write_split(d, &r2, v2, 1, (uint8_t *)"FI", 2, 1, &c2), -EPERM);
	assert_int_equal(write_split(d, &r2, v2, 0, mbr, sizeof(mbr), 3, &c2), 0);
	disk_wait(d);
	assert_int_equal(write_split(d, &r, v, 1, (uint8_t *)"FI", 2, 1, &c), 0);
	assert_int_equal(write_split(d, &r2, v2, 0, mbr, sizeof(mbr), 3, &c2), -EPERM);
	disk_wait(d);
	assert_int_equal(c.last, 2);
	assert_int_equal(c2.calls, 1);
	assert_int_equal(c.calls, 3);
	disk_close(d);

	/* Still raw when detected again. */
	d = open_ok(t.path, eng | DISK_OPEN_READ_ONLY);
	assert_string_equal(disk_format_name(d), "raw");
	disk_close(d);

	/* Explicit raw: the file is the caller's business. */
	assert_int_equal(disk_open_opts(t.path, &raw, &d, &err), 0);
	memset(sec, 0, sizeof(sec));
	memcpy(sec, magic, 4);
	assert_int_equal(rw(d, DISK_OP_WRITE, 0, sec, sizeof(sec)), sizeof(sec));
	disk_close(d);
	assert_file_head(t.path, magic, 4);
	tmp_remove(&t);
}

/* Each engine test twice: the default engine (io_uring where allowed), then the thread pool. */
/* clang-format off */
#define ENG(fn)								\
	{ #fn "/default", fn, NULL, NULL, &engine_default },		\
	{ #fn "/threads", fn, NULL, NULL, &engine_pool }
/* clang-format on */

int main(void)
{
	const struct CMUnitTest tests[] = {
		ENG(test_open_basics),
		ENG(test_read_write_flush),
		ENG(test_scatter_gather),
		ENG(test_bounds),
		ENG(test_read_only),
		ENG(test_discard_write_zeroes),
		ENG(test_proc_fd_and_zero_fallback),
		ENG(test_many_in_flight),
		ENG(test_resubmit_and_close),
		ENG(test_file_shrank),
		ENG(test_probed_raw_guard),
		cmocka_unit_test(test_odd_size),
		cmocka_unit_test(test_locking),
		cmocka_unit_test(test_bad_paths),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
