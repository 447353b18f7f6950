/* qcow2 image creation, like qemu-img create -f qcow2 (version 3, 16-bit refcounts). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2_internal.h"

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
	dev_t dev;
	ino_t ino;
	int fd, ret;

	ret = q2_open_backing_file(path, &fd);
	if (ret < 0) {
		if (ret == -ENOENT)
			return err_set(err, ENOENT, "backing file %s does not exist", shown);
		return err_set(err, -ret, "cannot open backing file %s: %s", shown, strerror(-ret));
	}
	*qcow = qcow2_probe_fd(fd);
	if (*qcow) {
		ret = qcow2_open(fd, path, &o, &b, err);
		if (ret == 0) {
			*size = b->size;
			qcow2_close(b);
		}
	} else {
		ret = q2_file_size_of(fd, size, &dev, &ino);
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
	uint64_t cs, l1_entries, E, R = 1, B = 1, L, total, i;
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
		bpath = q2_resolve(path, backing);
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
	l1_entries = l1_entries_for(size, cluster_bits);
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
		q2_rb_set(buf + (1 + R) * cs + (i / E) * cs, 4, i % E, 1);

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0) {
		ret = -errno;
		free(buf);
		if (ret == -EEXIST)
			return err_set(err, EEXIST, "%s already exists", path);
		return err_set(err, -ret, "cannot create %s: %s", path, strerror(-ret));
	}
	ret = q2_file_write(fd, 0, buf, (1 + R + B) * cs);
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
