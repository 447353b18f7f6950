/* Unit tests for the virtio-blk device model, driven through activate() on a fake queue. */
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
#include <time.h>
#include <unistd.h>

#include "devices/disk.h"
#include "devices/virtio_blk.h"
#include "virtio_test_util.h"

#define DISK_BYTES (1024 * 1024)
#define SECTORS	   (DISK_BYTES / 512)
#define RAM_BYTES  (16 * 1024 * 1024)
#define SERIAL	   "libvmm-test-disk"

/* Open flags for the disk per engine. */
static unsigned int engine_default = 0;
static unsigned int engine_pool = DISK_OPEN_THREAD_POOL;

struct fx {
	char path[PATH_MAX];
	struct vt_guest g;
	struct vt_queue vq;
	struct vt_queue *vqs[1];
	struct vt_env env;
	struct virtio_device dev;
	uint64_t features;
	bool active;
	uint64_t irqs; /* interrupts seen by wait_used() */
};

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 7 + (off >> 9) + 1);
}

static void make_file(struct fx *f, uint64_t size)
{
	const char *dir = getenv("TMPDIR");
	uint8_t *buf = malloc(size ? size : 1);
	uint64_t i;
	int fd;

	snprintf(f->path, sizeof(f->path), "%s/test_virtio_blk.XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkstemp(f->path);
	assert_true(fd >= 0);
	for (i = 0; i < size; i++)
		buf[i] = pattern(i);
	assert_int_equal(pwrite(fd, buf, size, 0), (ssize_t)size);
	close(fd);
	free(buf);
}

static void file_read(struct fx *f, uint64_t off, void *buf, size_t len)
{
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

/* Bytes [off, off + len) of the file still hold the initial pattern. */
static void assert_file_pattern(struct fx *f, uint64_t off, size_t len)
{
	uint8_t *b = malloc(len);
	size_t i;

	file_read(f, off, b, len);
	for (i = 0; i < len; i++)
		if (b[i] != pattern(off + i))
			fail_msg("file byte %llu changed", (unsigned long long)(off + i));
	free(b);
}

static void assert_file_zero(struct fx *f, uint64_t off, size_t len)
{
	uint8_t *b = malloc(len);
	size_t i;

	file_read(f, off, b, len);
	for (i = 0; i < len; i++)
		if (b[i])
			fail_msg("file byte %llu is not zero", (unsigned long long)(off + i));
	free(b);
}

/* Create the device without activating it. */
static struct fx *fx_create(uint64_t size, unsigned int open_flags, const char *serial)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct vmm_err err = {""};
	struct disk *d;

	assert_non_null(f);
	make_file(f, size);
	assert_int_equal(disk_open_flags(f->path, open_flags, &d, &err), 0);
	assert_int_equal(virtio_blk_create(d, serial, &f->dev, &err), 0);
	return f;
}

static void fx_activate(struct fx *f, uint16_t qsize, uint64_t features, unsigned int qflags)
{
	vt_guest_init(&f->g, RAM_BYTES);
	vt_queue_init(&f->vq, &f->g, qsize, qflags);
	f->vqs[0] = &f->vq;
	f->features = features;
	vt_env_init(&f->env, f->vqs, 1, features);
	assert_int_equal(f->dev.ops->activate(f->dev.dev, &f->env.act), 0);
	f->active = true;
}

/* A writable disk, activated with every feature the device offers. */
static struct fx *fx_new(unsigned int open_flags)
{
	struct fx *f = fx_create(DISK_BYTES, open_flags, SERIAL);

	fx_activate(f, 256, f->dev.ops->features(f->dev.dev) | 1ull << VIRTIO_F_VERSION_1, 0);
	return f;
}

static void fx_free(struct fx *f)
{
	f->dev.ops->destroy(f->dev.dev);
	if (f->active) {
		vt_env_destroy(&f->env);
		vt_guest_destroy(&f->g);
	}
	unlink(f->path);
	free(f);
}

static void put_hdr(struct fx *f, uint64_t gpa, uint32_t type, uint64_t sector)
{
	uint8_t *p = vt_host(&f->g, gpa, 16);

	memcpy(p, &type, 4);
	memset(p + 4, 0, 4);
	memcpy(p + 8, &sector, 8);
}

static void put_seg(struct fx *f, uint64_t gpa, uint64_t sector, uint32_t num, uint32_t flags)
{
	uint8_t *p = vt_host(&f->g, gpa, 16);

	memcpy(p, &sector, 8);
	memcpy(p + 8, &num, 4);
	memcpy(p + 12, &flags, 4);
}

static void kick(struct fx *f)
{
	vt_eventfd_signal(f->env.act.kick_fd[0]);
}

/* Wait up to 10 s for the next used entry. */
static void wait_used(struct fx *f, uint32_t *id, uint32_t *len)
{
	int i;

	for (i = 0; i < 1000; i++) {
		if (vt_get_used(&f->vq, id, len))
			return;
		f->irqs += vt_eventfd_wait(f->env.act.call_fd[0], 10);
	}
	fail_msg("no used entry");
}

/* Nothing more is used within @ms. */
static void assert_no_used(struct fx *f, int ms)
{
	vt_eventfd_wait(f->env.act.call_fd[0], ms);
	assert_false(vt_get_used(&f->vq, NULL, NULL));
}

/*
 * A request: header, then @n data buffers, then a status byte in its own
 * buffer. Publishes it, kicks, waits and returns the status; *@used gets
 * the used length.
 */
static uint8_t do_req(struct fx *f, uint32_t type, uint64_t sector, const struct vt_buf *data,
		      unsigned int n, uint32_t *used)
{
	struct vt_buf b[300];
	uint32_t id, len;
	uint8_t *st;
	uint16_t head;

	assert_true(n + 2 <= 300);
	b[0] = vt_buf_new(&f->g, 16, false);
	put_hdr(f, b[0].gpa, type, sector);
	if (n)
		memcpy(b + 1, data, n * sizeof(*data));
	b[n + 1] = vt_buf_new(&f->g, 1, true);
	st = vt_host(&f->g, b[n + 1].gpa, 1);
	*st = 0xee;
	head = vt_add_chain(&f->vq, b, n + 2);
	kick(f);
	wait_used(f, &id, &len);
	assert_int_equal(id, head);
	if (used)
		*used = len;
	return *st;
}

/* One data buffer of @len bytes (device-writable for IN). */
static uint8_t rw1(struct fx *f, uint32_t type, uint64_t sector, uint32_t len, uint8_t **data,
		   uint32_t *used)
{
	struct vt_buf b =
		vt_buf_new(&f->g, len, type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID);

	*data = vt_host(&f->g, b.gpa, len);
	return do_req(f, type, sector, &b, 1, used);
}

static uint32_t cfg32(struct fx *f, uint32_t off)
{
	uint32_t v;

	f->dev.ops->config_read(f->dev.dev, off, (uint8_t *)&v, 4);
	return v;
}

static uint64_t cfg64(struct fx *f, uint32_t off)
{
	uint64_t v;

	f->dev.ops->config_read(f->dev.dev, off, (uint8_t *)&v, 8);
	return v;
}

static uint8_t cfg8(struct fx *f, uint32_t off)
{
	uint8_t v;

	f->dev.ops->config_read(f->dev.dev, off, &v, 1);
	return v;
}

/* ---- Config and features ---- */

static void test_config_rw(void **state)
{
	struct fx *f = fx_create(DISK_BYTES + 300, 0, SERIAL); /* a partial last sector */
	const struct virtio_device_ops *ops = f->dev.ops;
	uint64_t feat = ops->features(f->dev.dev);
	uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};

	assert_string_equal(ops->name, "virtio-blk");
	assert_int_equal(ops->device_id, VIRTIO_ID_BLOCK);
	assert_int_equal(ops->nqueues, 1);
	assert_int_equal(ops->queue_max, 256);
	assert_int_equal(ops->config_size, VIRTIO_BLK_CONFIG_SIZE);

	assert_true(feat & 1ull << VIRTIO_BLK_F_SIZE_MAX);
	assert_true(feat & 1ull << VIRTIO_BLK_F_SEG_MAX);
	assert_true(feat & 1ull << VIRTIO_BLK_F_BLK_SIZE);
	assert_true(feat & 1ull << VIRTIO_BLK_F_FLUSH);
	assert_true(feat & 1ull << VIRTIO_BLK_F_DISCARD);
	assert_true(feat & 1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	assert_false(feat & 1ull << VIRTIO_BLK_F_RO);
	assert_false(feat & 1ull << VIRTIO_F_VERSION_1); /* the transport's */

	assert_int_equal(cfg64(f, VIRTIO_BLK_CFG_CAPACITY), SECTORS);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_SIZE_MAX), VIRTIO_BLK_SIZE_MAX);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_SEG_MAX), VIRTIO_BLK_SEG_MAX);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_BLK_SIZE), 512);
	assert_int_equal(cfg8(f, VIRTIO_BLK_CFG_WRITEBACK), 0);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS), VIRTIO_BLK_DWZ_SECTORS_MAX);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_MAX_DISCARD_SEG), VIRTIO_BLK_DWZ_SEG_MAX);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT), 8);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS),
			 VIRTIO_BLK_DWZ_SECTORS_MAX);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG), VIRTIO_BLK_DWZ_SEG_MAX);
	assert_int_equal(cfg8(f, VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP), 1);
	assert_int_equal(cfg8(f, 57), 0); /* unused1 */
	assert_int_equal(cfg8(f, 59), 0);

	/* Writes are ignored. */
	ops->config_write(f->dev.dev, 0, junk, 8);
	ops->config_write(f->dev.dev, VIRTIO_BLK_CFG_WRITEBACK, junk, 1);
	assert_int_equal(cfg64(f, VIRTIO_BLK_CFG_CAPACITY), SECTORS);
	assert_int_equal(cfg8(f, VIRTIO_BLK_CFG_WRITEBACK), 0);

	/* Reset before activation is a no-op, and idempotent. */
	ops->reset(f->dev.dev);
	ops->reset(f->dev.dev);
	fx_free(f);
}

static void test_config_ro(void **state)
{
	struct fx *f = fx_create(DISK_BYTES, DISK_OPEN_READ_ONLY, NULL);
	uint64_t feat = f->dev.ops->features(f->dev.dev);

	assert_true(feat & 1ull << VIRTIO_BLK_F_RO);
	assert_true(feat & 1ull << VIRTIO_BLK_F_FLUSH);
	assert_true(feat & 1ull << VIRTIO_BLK_F_SEG_MAX);
	assert_false(feat & 1ull << VIRTIO_BLK_F_DISCARD);
	assert_false(feat & 1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	assert_int_equal(cfg64(f, VIRTIO_BLK_CFG_CAPACITY), SECTORS);
	assert_int_equal(cfg32(f, VIRTIO_BLK_CFG_MAX_DISCARD_SEG), 0);
	assert_int_equal(cfg8(f, VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP), 0);
	fx_free(f);
}

static void test_create_errors(void **state)
{
	struct vmm_err err = {""};
	struct virtio_device dev;
	struct fx *f = calloc(1, sizeof(*f));
	struct disk *d;

	assert_int_equal(virtio_blk_create(NULL, NULL, &dev, &err), -EINVAL);
	make_file(f, 4096);
	assert_int_equal(disk_open(f->path, false, &d, &err), 0);
	/* 21 bytes: refused, and the disk is closed (so it can be opened again). */
	assert_int_equal(virtio_blk_create(d, "123456789012345678901", &dev, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "serial"));
	assert_int_equal(disk_open(f->path, false, &d, &err), 0);
	assert_int_equal(virtio_blk_create(d, "12345678901234567890", &dev, &err), 0);
	dev.ops->destroy(dev.dev);
	unlink(f->path);
	free(f);
}

/* ---- Requests ---- */

static void test_in_out_flush(void **state)
{
	struct fx *f = fx_new(*(unsigned int *)*state);
	uint8_t *data, chk[1024];
	struct vt_buf b;
	uint32_t used;
	int i;

	/* IN: data matches the file; used = data + status. */
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, 3, 2048, &data, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 2049);
	for (i = 0; i < 2048; i++)
		assert_int_equal(data[i], pattern(3 * 512 + i));

	/* OUT: the file changes exactly there; used = the status byte. */
	b = vt_buf_new(&f->g, 1024, false);
	data = vt_host(&f->g, b.gpa, 1024);
	for (i = 0; i < 1024; i++)
		data[i] = (uint8_t)(i * 31);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_OUT, SECTORS - 2, &b, 1, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 1);
	file_read(f, DISK_BYTES - 1024, chk, 1024);
	assert_memory_equal(chk, data, 1024);
	assert_file_pattern(f, DISK_BYTES - 2048, 1024);

	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, SECTORS - 2, 1024, &data, &used), VIRTIO_BLK_S_OK);
	assert_memory_equal(chk, data, 1024);

	/* FLUSH, with no data. */
	assert_int_equal(do_req(f, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 1);

	/* A zero-length IN at the very end is fine. */
	assert_int_equal(do_req(f, VIRTIO_BLK_T_IN, SECTORS, NULL, 0, &used), VIRTIO_BLK_S_OK);
	assert_true(f->irqs > 0);
	fx_free(f);
}

static void test_get_id(void **state)
{
	struct fx *f = fx_new(0);
	uint8_t *data, want[20] = SERIAL;
	struct vt_buf b;
	uint32_t used;

	memset(want + strlen(SERIAL), 0, sizeof(want) - strlen(SERIAL));
	assert_int_equal(rw1(f, VIRTIO_BLK_T_GET_ID, 0, 20, &data, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 21);
	assert_memory_equal(data, want, 20);
	/* A shorter buffer gets what fits. */
	assert_int_equal(rw1(f, VIRTIO_BLK_T_GET_ID, 0, 4, &data, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 5);
	assert_memory_equal(data, SERIAL, 4);
	fx_free(f);

	/* No serial: zeros. */
	f = fx_create(DISK_BYTES, 0, NULL);
	fx_activate(f, 16, f->dev.ops->features(f->dev.dev), 0);
	b = vt_buf_new(&f->g, 20, true);
	data = vt_host(&f->g, b.gpa, 20);
	memset(data, 0x55, 20);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_GET_ID, 0, &b, 1, &used), VIRTIO_BLK_S_OK);
	memset(want, 0, sizeof(want));
	assert_memory_equal(data, want, 20);
	fx_free(f);
}

/* The header split over three descriptors, OUT data sharing the last one. */
static void test_split_header(void **state)
{
	struct fx *f = fx_new(0);
	struct vt_buf b[5];
	uint8_t hdr[16], *p, *st, chk[512];
	uint32_t type = VIRTIO_BLK_T_OUT, id, len;
	uint64_t sector = 100;
	int i;

	memcpy(hdr, &type, 4);
	memset(hdr + 4, 0, 4);
	memcpy(hdr + 8, &sector, 8);
	b[0] = vt_buf_new(&f->g, 3, false);
	b[1] = vt_buf_new(&f->g, 6, false);
	b[2] = vt_buf_new(&f->g, 7 + 300, false); /* header tail + data head */
	b[3] = vt_buf_new(&f->g, 212, false);
	b[4] = vt_buf_new(&f->g, 1, true);
	memcpy(vt_host(&f->g, b[0].gpa, 3), hdr, 3);
	memcpy(vt_host(&f->g, b[1].gpa, 6), hdr + 3, 6);
	p = vt_host(&f->g, b[2].gpa, 307);
	memcpy(p, hdr + 9, 7);
	for (i = 0; i < 300; i++)
		p[7 + i] = (uint8_t)(0x80 + i);
	p = vt_host(&f->g, b[3].gpa, 212);
	for (i = 0; i < 212; i++)
		p[i] = (uint8_t)(0x80 + 300 + i);
	st = vt_host(&f->g, b[4].gpa, 1);
	vt_add_chain(&f->vq, b, 5);
	kick(f);
	wait_used(f, &id, &len);
	assert_int_equal(*st, VIRTIO_BLK_S_OK);
	file_read(f, 100 * 512, chk, 512);
	for (i = 0; i < 512; i++)
		assert_int_equal(chk[i], (uint8_t)(0x80 + i));

	/* IN whose status byte shares the last data buffer. */
	b[0] = vt_buf_new(&f->g, 16, false);
	put_hdr(f, b[0].gpa, VIRTIO_BLK_T_IN, 100);
	b[1] = vt_buf_new(&f->g, 100, true);
	b[2] = vt_buf_new(&f->g, 413, true);
	vt_add_chain(&f->vq, b, 3);
	kick(f);
	wait_used(f, &id, &len);
	assert_int_equal(len, 513);
	assert_int_equal(*(uint8_t *)vt_host(&f->g, b[2].gpa + 412, 1), VIRTIO_BLK_S_OK);
	assert_memory_equal(vt_host(&f->g, b[1].gpa, 100), chk, 100);
	assert_memory_equal(vt_host(&f->g, b[2].gpa, 412), chk + 100, 412);
	fx_free(f);
}

/* Data in many small buffers, both directions; more than seg_max is refused. */
static void test_many_small_buffers(void **state)
{
	struct fx *f = fx_new(*(unsigned int *)*state);
	struct vt_buf b[VIRTIO_BLK_SEG_MAX + 1];
	uint8_t chk[8192];
	uint32_t used;
	int i, j;

	for (i = 0; i < 64; i++) {
		b[i] = vt_buf_new(&f->g, 64, true);
	}
	assert_int_equal(do_req(f, VIRTIO_BLK_T_IN, 40, b, 64, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(used, 4097);
	for (i = 0; i < 64; i++)
		for (j = 0; j < 64; j++)
			assert_int_equal(*(uint8_t *)vt_host(&f->g, b[i].gpa + j, 1),
					 pattern(40 * 512 + i * 64 + j));

	for (i = 0; i < VIRTIO_BLK_SEG_MAX; i++) {
		b[i] = vt_buf_new(&f->g, 64, false);
		memset(vt_host(&f->g, b[i].gpa, 64), i + 1, 64);
	}
	assert_int_equal(do_req(f, VIRTIO_BLK_T_OUT, 200, b, 64, &used), VIRTIO_BLK_S_OK);
	file_read(f, 200 * 512, chk, 4096);
	for (i = 0; i < 4096; i++)
		assert_int_equal(chk[i], i / 64 + 1);

	/* seg_max buffers: fine; one more: IOERR, file untouched. */
	for (i = 0; i < VIRTIO_BLK_SEG_MAX + 1; i++) {
		b[i] = vt_buf_new(&f->g, 512, false);
		memset(vt_host(&f->g, b[i].gpa, 512), 0x77, 512);
	}
	assert_int_equal(do_req(f, VIRTIO_BLK_T_OUT, 400, b, VIRTIO_BLK_SEG_MAX + 1, &used),
			 VIRTIO_BLK_S_IOERR);
	assert_file_pattern(f, 400 * 512, (VIRTIO_BLK_SEG_MAX + 1) * 512);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_OUT, 400, b, VIRTIO_BLK_SEG_MAX, &used),
			 VIRTIO_BLK_S_OK);
	file_read(f, 400 * 512, chk, 512);
	assert_int_equal(chk[0], 0x77);
	fx_free(f);
}

static void test_out_of_range(void **state)
{
	struct fx *f = fx_new(0);
	uint8_t *data;
	uint32_t used;

	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, SECTORS - 1, 1024, &data, &used),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(used, 1);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, SECTORS, 512, &data, &used), VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, UINT64_MAX, 512, &data, &used),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, UINT64_MAX >> 9, 512, &data, &used),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_OUT, SECTORS - 1, 1024, &data, &used),
			 VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_OUT, UINT64_MAX - 1, 512, &data, &used),
			 VIRTIO_BLK_S_IOERR);
	assert_file_pattern(f, DISK_BYTES - 512, 512);
	/* The last sector itself is fine. */
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, SECTORS - 1, 512, &data, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(data[511], pattern(DISK_BYTES - 1));
	fx_free(f);
}

static void test_read_only(void **state)
{
	struct fx *f = fx_create(DISK_BYTES, DISK_OPEN_READ_ONLY, SERIAL);
	uint8_t *data;
	uint32_t used;
	struct vt_buf seg;

	/* Even if the driver claims DISCARD and WRITE_ZEROES. */
	fx_activate(f, 64,
		    f->dev.ops->features(f->dev.dev) | 1ull << VIRTIO_BLK_F_DISCARD |
			    1ull << VIRTIO_BLK_F_WRITE_ZEROES,
		    0);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_OUT, 0, 4096, &data, &used), VIRTIO_BLK_S_IOERR);
	seg = vt_buf_new(&f->g, 16, false);
	put_seg(f, seg.gpa, 0, 8, 0);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_DISCARD, 0, &seg, 1, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &seg, 1, NULL),
			 VIRTIO_BLK_S_IOERR);
	assert_file_pattern(f, 0, 8192);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, 0, 512, &data, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(data[100], pattern(100));
	assert_int_equal(do_req(f, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, NULL), VIRTIO_BLK_S_OK);
	fx_free(f);
}

/* @n segments at gpa of one buffer. */
static struct vt_buf segs(struct fx *f, unsigned int n)
{
	return vt_buf_new(&f->g, 16 * n, false);
}

static void test_discard_write_zeroes(void **state)
{
	struct fx *f = fx_new(*(unsigned int *)*state);
	struct vt_buf s;
	unsigned int i;

	/* DISCARD: the range reads as zeros on this file system (a hole). */
	s = segs(f, 1);
	put_seg(f, s.gpa, 16, 8, 0);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_DISCARD, 0, &s, 1, NULL), VIRTIO_BLK_S_OK);
	assert_file_zero(f, 16 * 512, 8 * 512);
	assert_file_pattern(f, 15 * 512, 512);
	assert_file_pattern(f, 24 * 512, 512);

	/* WRITE_ZEROES, two segments, one with unmap. */
	s = segs(f, 2);
	put_seg(f, s.gpa, 101, 3, 0);
	put_seg(f, s.gpa + 16, 200, 17, VIRTIO_BLK_SEG_F_UNMAP);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, NULL), VIRTIO_BLK_S_OK);
	assert_file_zero(f, 101 * 512, 3 * 512);
	assert_file_zero(f, 200 * 512, 17 * 512);
	assert_file_pattern(f, 100 * 512, 512);
	assert_file_pattern(f, 104 * 512, 96 * 512);
	assert_file_pattern(f, 217 * 512, 512);

	/* The maximum number of segments; the last sector. */
	s = segs(f, VIRTIO_BLK_DWZ_SEG_MAX);
	for (i = 0; i < VIRTIO_BLK_DWZ_SEG_MAX; i++)
		put_seg(f, s.gpa + 16 * i, 300 + 2 * i, 1, 0);
	put_seg(f, s.gpa, SECTORS - 1, 1, 0);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, NULL), VIRTIO_BLK_S_OK);
	assert_file_zero(f, DISK_BYTES - 512, 512);
	assert_file_zero(f, 302 * 512, 512);
	assert_file_pattern(f, 303 * 512, 512);

	/* Bad requests: a good first segment must not be applied either. */
	s = segs(f, VIRTIO_BLK_DWZ_SEG_MAX + 1);
	for (i = 0; i < VIRTIO_BLK_DWZ_SEG_MAX + 1; i++)
		put_seg(f, s.gpa + 16 * i, 500, 1, 0);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_DISCARD, 0, &s, 1, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, NULL), VIRTIO_BLK_S_IOERR);
	s = segs(f, 2);
	put_seg(f, s.gpa, 500, 1, 0);
	put_seg(f, s.gpa + 16, SECTORS - 1, 2, 0); /* past the end */
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, NULL), VIRTIO_BLK_S_IOERR);
	put_seg(f, s.gpa + 16, UINT64_MAX - 1, 4, 0); /* overflowing */
	assert_int_equal(do_req(f, VIRTIO_BLK_T_DISCARD, 0, &s, 1, NULL), VIRTIO_BLK_S_IOERR);
	put_seg(f, s.gpa + 16, 0, VIRTIO_BLK_DWZ_SECTORS_MAX + 1, 0); /* too long */
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, NULL), VIRTIO_BLK_S_IOERR);
	put_seg(f, s.gpa + 16, 600, 1, VIRTIO_BLK_SEG_F_UNMAP); /* unmap on discard */
	assert_int_equal(do_req(f, VIRTIO_BLK_T_DISCARD, 0, &s, 1, NULL), VIRTIO_BLK_S_UNSUPP);
	put_seg(f, s.gpa + 16, 600, 1, 2); /* unknown flag */
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, NULL), VIRTIO_BLK_S_UNSUPP);
	assert_file_pattern(f, 500 * 512, 512);
	assert_file_pattern(f, 600 * 512, 512);

	/* Data that is not whole segments, or none. */
	s = vt_buf_new(&f->g, 24, false);
	put_seg(f, s.gpa, 500, 1, 0);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_DISCARD, 0, NULL, 0, NULL), VIRTIO_BLK_S_IOERR);
	assert_file_pattern(f, 500 * 512, 512);
	fx_free(f);

	/* Not negotiated: UNSUPP. Without FLUSH writes are writethrough and still work. */
	f = fx_create(DISK_BYTES, 0, NULL);
	fx_activate(f, 64, 1ull << VIRTIO_BLK_F_SEG_MAX, 0);
	s = segs(f, 1);
	put_seg(f, s.gpa, 16, 8, 0);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_DISCARD, 0, &s, 1, NULL), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, NULL), VIRTIO_BLK_S_UNSUPP);
	assert_file_pattern(f, 16 * 512, 8 * 512);
	s = vt_buf_new(&f->g, 512, false);
	assert_int_equal(do_req(f, VIRTIO_BLK_T_OUT, 16, &s, 1, NULL), VIRTIO_BLK_S_OK);
	assert_file_zero(f, 16 * 512, 512);
	fx_free(f);
}

static void test_unknown_type(void **state)
{
	struct fx *f = fx_new(0);
	struct vt_buf b = vt_buf_new(&f->g, 512, true);
	uint32_t used;

	assert_int_equal(do_req(f, 99, 0, &b, 1, &used), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(used, 1);
	assert_int_equal(do_req(f, 10 /* GET_LIFETIME */, 0, &b, 1, NULL), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(do_req(f, 0x80000000u, 0, NULL, 0, NULL), VIRTIO_BLK_S_UNSUPP);
	fx_free(f);
}

static void test_malformed(void **state)
{
	struct fx *f = fx_new(0);
	struct vt_buf b[3];
	uint32_t id, len;
	uint8_t *st, *data;
	uint16_t head;

	/* No writable byte at all: returned with length 0. */
	b[0] = vt_buf_new(&f->g, 16, false);
	put_hdr(f, b[0].gpa, VIRTIO_BLK_T_IN, 0);
	b[1] = vt_buf_new(&f->g, 512, false);
	head = vt_add_chain(&f->vq, b, 2);
	kick(f);
	wait_used(f, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, 0);

	/* Writable buffers of length 0 only. */
	b[1] = (struct vt_buf){.gpa = b[1].gpa, .len = 0, .write = true};
	head = vt_add_chain(&f->vq, b, 2);
	kick(f);
	wait_used(f, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, 0);

	/* A header too short; none at all. */
	b[0] = vt_buf_new(&f->g, 15, false);
	b[1] = vt_buf_new(&f->g, 1, true);
	st = vt_host(&f->g, b[1].gpa, 1);
	vt_add_chain(&f->vq, b, 2);
	kick(f);
	wait_used(f, &id, &len);
	assert_int_equal(*st, VIRTIO_BLK_S_IOERR);
	assert_int_equal(len, 1);
	*st = 0xee;
	vt_add_chain(&f->vq, b + 1, 1);
	kick(f);
	wait_used(f, &id, &len);
	assert_int_equal(*st, VIRTIO_BLK_S_IOERR);

	/* Data lengths that are not whole sectors. */
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, 0, 100, &data, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(data[0], 0);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, 0, 513, &data, NULL), VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_OUT, 0, 511, &data, NULL), VIRTIO_BLK_S_IOERR);
	assert_file_pattern(f, 0, 1024);

	/* The device still works. */
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, 1, 512, &data, NULL), VIRTIO_BLK_S_OK);
	assert_int_equal(data[0], pattern(512));
	assert_int_equal(vt_eventfd_read(f->env.reset_fd), 0);
	fx_free(f);
}

/* A head index out of range: NEEDS_RESET, nothing more is served, reset works. */
static void test_hostile_ring(void **state)
{
	struct fx *f = fx_create(DISK_BYTES, 0, NULL);
	struct vt_buf b[2];
	uint8_t *data;

	fx_activate(f, 16, f->dev.ops->features(f->dev.dev), 0);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, 0, 512, &data, NULL), VIRTIO_BLK_S_OK);
	vt_publish(&f->vq, 999);
	kick(f);
	assert_int_equal(vt_eventfd_wait(f->env.reset_fd, 5000), 1);
	/* A good chain after the bad one is not taken. */
	b[0] = vt_buf_new(&f->g, 16, false);
	b[1] = vt_buf_new(&f->g, 1, true);
	put_hdr(f, b[0].gpa, VIRTIO_BLK_T_FLUSH, 0);
	vt_add_chain(&f->vq, b, 2);
	kick(f);
	assert_no_used(f, 100);
	assert_int_equal(vt_eventfd_read(f->env.reset_fd), 0); /* reported once */

	f->dev.ops->reset(f->dev.dev);
	f->dev.ops->reset(f->dev.dev);
	/* A fresh queue after the reset works again. */
	vt_queue_init(&f->vq, &f->g, 16, 0);
	assert_int_equal(f->dev.ops->activate(f->dev.dev, &f->env.act), 0);
	assert_int_equal(f->dev.ops->activate(f->dev.dev, &f->env.act), -EBUSY);
	assert_int_equal(rw1(f, VIRTIO_BLK_T_IN, 2, 512, &data, NULL), VIRTIO_BLK_S_OK);
	assert_int_equal(data[0], pattern(1024));
	fx_free(f);
}

#define NREQ 64

/* 64 requests published before one kick: all complete, with at most one interrupt each. */
static void test_many_in_flight(void **state)
{
	struct fx *f = fx_create(DISK_BYTES, *(unsigned int *)*state, NULL);
	struct vt_buf b[3];
	uint8_t *st[NREQ], chk[4096];
	bool seen[NREQ] = {false};
	uint16_t heads[NREQ];
	uint32_t id, len;
	int i, j, k;

	fx_activate(f, 256, f->dev.ops->features(f->dev.dev), 0);
	for (i = 0; i < NREQ; i++) {
		b[0] = vt_buf_new(&f->g, 16, false);
		put_hdr(f, b[0].gpa, VIRTIO_BLK_T_OUT, (uint64_t)i * 16);
		b[1] = vt_buf_new(&f->g, 4096, false);
		memset(vt_host(&f->g, b[1].gpa, 4096), i + 1, 4096);
		b[2] = vt_buf_new(&f->g, 1, true);
		st[i] = vt_host(&f->g, b[2].gpa, 1);
		*st[i] = 0xee;
		heads[i] = vt_add_chain(&f->vq, b, 3);
	}
	kick(f);
	for (i = 0; i < NREQ; i++) {
		wait_used(f, &id, &len);
		for (k = 0; k < NREQ && heads[k] != id; k++)
			;
		assert_true(k < NREQ);
		assert_false(seen[k]);
		seen[k] = true;
		assert_int_equal(len, 1);
		assert_int_equal(*st[k], VIRTIO_BLK_S_OK);
	}
	f->irqs += vt_eventfd_wait(f->env.act.call_fd[0], 50);
	assert_true(f->irqs >= 1 && f->irqs <= NREQ);
	print_message("%d requests, %llu interrupts\n", NREQ, (unsigned long long)f->irqs);
	for (i = 0; i < NREQ; i++) {
		file_read(f, (uint64_t)i * 16 * 512, chk, 4096);
		for (j = 0; j < 4096; j++)
			assert_int_equal(chk[j], i + 1);
	}
	fx_free(f);
}

/* Reset with requests in flight: it returns only when no I/O touches guest memory. */
static void test_reset_in_flight(void **state)
{
	struct fx *f = fx_create(DISK_BYTES, *(unsigned int *)*state, NULL);
	struct vt_buf b[3];
	uint8_t *bufs[NREQ], *snap;
	uint16_t used_after;
	int i;

	fx_activate(f, 256, f->dev.ops->features(f->dev.dev), 0);
	for (i = 0; i < NREQ; i++) {
		b[0] = vt_buf_new(&f->g, 16, false);
		put_hdr(f, b[0].gpa, VIRTIO_BLK_T_IN, (uint64_t)(i % 8) * 128);
		b[1] = vt_buf_new(&f->g, 65536, true);
		bufs[i] = vt_host(&f->g, b[1].gpa, 65536);
		memset(bufs[i], 0xcc, 65536);
		b[2] = vt_buf_new(&f->g, 1, true);
		vt_add_chain(&f->vq, b, 3);
	}
	kick(f);
	f->dev.ops->reset(f->dev.dev);

	/* After reset() nothing changes any more: no used entries, no data. */
	used_after = vt_used_idx(&f->vq);
	snap = malloc((size_t)NREQ * 65536);
	for (i = 0; i < NREQ; i++)
		memcpy(snap + (size_t)i * 65536, bufs[i], 65536);
	usleep(100 * 1000);
	assert_int_equal(vt_used_idx(&f->vq), used_after);
	for (i = 0; i < NREQ; i++)
		assert_memory_equal(snap + (size_t)i * 65536, bufs[i], 65536);
	free(snap);
	f->dev.ops->reset(f->dev.dev);
	fx_free(f);
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
		cmocka_unit_test(test_config_rw),
		cmocka_unit_test(test_config_ro),
		cmocka_unit_test(test_create_errors),
		ENG(test_in_out_flush),
		cmocka_unit_test(test_get_id),
		cmocka_unit_test(test_split_header),
		ENG(test_many_small_buffers),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_read_only),
		ENG(test_discard_write_zeroes),
		cmocka_unit_test(test_unknown_type),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_hostile_ring),
		ENG(test_many_in_flight),
		ENG(test_reset_in_flight),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
