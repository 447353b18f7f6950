/* qcow2 header parsing and checking: pure, no I/O, no allocation, safe on any input (fuzzed). */
#include <errno.h>
#include <string.h>

#include "qcow2_internal.h"

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
	uint64_t cs, need_l1, l1_bytes, rt_bytes, ext_end;
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
	need_l1 = l1_entries_for(h->size, h->cluster_bits);
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
