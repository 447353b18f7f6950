/* AML emitter: encodes ACPI namespace objects and resource templates into a byte buffer. */
#include "aml.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* What aml_end() closes. */
enum {
	AML_KIND_PKG,	 /* PkgLength only: Scope, Device, Method, Package */
	AML_KIND_BUFFER, /* PkgLength, then BufferSize */
	AML_KIND_RT,	 /* a Buffer closed by an End Tag */
};

/* Small and large resource item tags. */
#define RES_IO		   0x47 /* small item 0x08, 7 bytes */
#define RES_IRQ_NOFLAGS	   0x22 /* small item 0x04, 2 bytes */
#define RES_END_TAG	   0x79 /* small item 0x0f, 1 byte */
#define RES_MEMORY32_FIXED 0x86
#define RES_DWORD_SPACE	   0x87
#define RES_WORD_SPACE	   0x88
#define RES_QWORD_SPACE	   0x8a

static void fail(struct aml *a, int err)
{
	if (!a->error)
		a->error = err;
}

void aml_init(struct aml *a)
{
	memset(a, 0, sizeof(*a));
}

void aml_free(struct aml *a)
{
	free(a->buf);
	a->buf = NULL;
	a->len = 0;
	a->cap = 0;
	a->depth = 0;
}

int aml_finish(const struct aml *a)
{
	if (a->error)
		return a->error;
	if (a->depth)
		return -EINVAL;
	return 0;
}

/* Make room for @n more bytes. */
static bool reserve(struct aml *a, size_t n)
{
	size_t want, cap;
	uint8_t *p;

	if (a->error)
		return false;
	if (n > SIZE_MAX - a->len) {
		fail(a, -ENOMEM);
		return false;
	}
	want = a->len + n;
	if (want <= a->cap)
		return true;
	cap = a->cap ? a->cap : 256;
	while (cap < want) {
		if (cap > SIZE_MAX / 2) {
			cap = want;
			break;
		}
		cap *= 2;
	}
	p = realloc(a->buf, cap);
	if (!p) {
		fail(a, -ENOMEM);
		return false;
	}
	a->buf = p;
	a->cap = cap;
	return true;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (!n || !reserve(a, n))
		return;
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

static void put_le(struct aml *a, uint64_t v, unsigned int n)
{
	uint8_t b[8];

	for (unsigned int i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	aml_bytes(a, b, n);
}

/* Insert @n bytes at offset @at, moving what follows. */
static void insert(struct aml *a, size_t at, const uint8_t *p, size_t n)
{
	if (!reserve(a, n))
		return;
	memmove(a->buf + at + n, a->buf + at, a->len - at);
	memcpy(a->buf + at, p, n);
	a->len += n;
}

unsigned int aml_pkglength_encode(uint32_t value, uint8_t out[4])
{
	unsigned int follow;

	if (value <= 0x3f) {
		out[0] = (uint8_t)value;
		return 1;
	}
	if (value <= 0xfff)
		follow = 1;
	else if (value <= 0xfffff)
		follow = 2;
	else if (value <= AML_PKGLENGTH_MAX)
		follow = 3;
	else
		return 0;
	/* Lead byte: bits 7-6 count the bytes that follow, bits 3-0 the low nibble. */
	out[0] = (uint8_t)((follow << 6) | (value & 0xf));
	for (unsigned int i = 1; i <= follow; i++)
		out[i] = (uint8_t)(value >> (4 + 8 * (i - 1)));
	return follow + 1;
}

unsigned int aml_pkglength_size(size_t content)
{
	static const size_t max[] = {0x3f, 0xfff, 0xfffff, AML_PKGLENGTH_MAX};

	for (unsigned int n = 1; n <= 4; n++) {
		if (content <= max[n - 1] - n)
			return n;
	}
	return 0;
}

/* Encode an integer constant into @out (at most 9 bytes); returns its size. */
static unsigned int encode_integer(uint64_t v, uint8_t out[9])
{
	unsigned int n;

	if (v == 0) {
		out[0] = AML_ZERO_OP;
		return 1;
	}
	if (v == 1) {
		out[0] = AML_ONE_OP;
		return 1;
	}
	if (v <= 0xff) {
		out[0] = AML_BYTE_PREFIX;
		n = 1;
	} else if (v <= 0xffff) {
		out[0] = AML_WORD_PREFIX;
		n = 2;
	} else if (v <= 0xffffffffu) {
		out[0] = AML_DWORD_PREFIX;
		n = 4;
	} else {
		out[0] = AML_QWORD_PREFIX;
		n = 8;
	}
	for (unsigned int i = 0; i < n; i++)
		out[1 + i] = (uint8_t)(v >> (8 * i));
	return n + 1;
}

void aml_integer(struct aml *a, uint64_t v)
{
	uint8_t b[9];

	aml_bytes(a, b, encode_integer(v, b));
}

void aml_string(struct aml *a, const char *s)
{
	for (const char *c = s; *c; c++) {
		if ((unsigned char)*c > 0x7f) {
			fail(a, -EINVAL);
			return;
		}
	}
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, s, strlen(s) + 1);
}

static bool name_char(char c, bool lead)
{
	if ((c >= 'A' && c <= 'Z') || c == '_')
		return true;
	return !lead && c >= '0' && c <= '9';
}

void aml_name_string(struct aml *a, const char *path)
{
	char segs[255][4];
	unsigned int nsegs = 0;
	const char *p = path;

	if (a->error)
		return;
	if (*p == '\\') {
		aml_byte(a, AML_ROOT_CHAR);
		p++;
	} else {
		while (*p == '^') {
			aml_byte(a, AML_PARENT_PREFIX);
			p++;
		}
	}
	while (*p) {
		unsigned int n = 0;

		if (nsegs == 255)
			goto bad;
		while (*p && *p != '.') {
			if (n == 4 || !name_char(*p, n == 0))
				goto bad;
			segs[nsegs][n++] = *p++;
		}
		if (n == 0)
			goto bad;
		while (n < 4)
			segs[nsegs][n++] = '_';
		nsegs++;
		if (*p == '.') {
			p++;
			if (!*p)
				goto bad;
		}
	}
	if (nsegs == 0) {
		aml_byte(a, 0x00); /* NullName */
		return;
	}
	if (nsegs == 2) {
		aml_byte(a, AML_DUAL_NAME_PREFIX);
	} else if (nsegs > 2) {
		aml_byte(a, AML_MULTI_NAME_PREFIX);
		aml_byte(a, (uint8_t)nsegs);
	}
	aml_bytes(a, segs, 4 * (size_t)nsegs);
	return;
bad:
	fail(a, -EINVAL);
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

uint32_t aml_eisaid_value(const char *id)
{
	uint16_t mfg;
	uint8_t b[4];
	int d[4];

	if (strlen(id) != 7)
		return 0;
	for (int i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z')
			return 0;
	}
	for (int i = 0; i < 4; i++) {
		d[i] = hex_digit(id[3 + i]);
		if (d[i] < 0)
			return 0;
	}
	/*
	 * Three letters of 5 bits each ('A' = 1) in bits 14-0 of a big-endian
	 * 16-bit value, then the product number as 4 hex digits, also big-endian.
	 */
	mfg = (uint16_t)(((id[0] - 0x40) << 10) | ((id[1] - 0x40) << 5) | (id[2] - 0x40));

	b[0] = (uint8_t)(mfg >> 8);
	b[1] = (uint8_t)mfg;
	b[2] = (uint8_t)((d[0] << 4) | d[1]);
	b[3] = (uint8_t)((d[2] << 4) | d[3]);
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

void aml_eisaid(struct aml *a, const char *id)
{
	uint32_t v = aml_eisaid_value(id);

	if (!v) {
		fail(a, -EINVAL);
		return;
	}
	/* Always a DWord constant, as ASL compilers emit it. */
	aml_byte(a, AML_DWORD_PREFIX);
	put_le(a, v, 4);
}

void aml_name(struct aml *a, const char *path)
{
	aml_byte(a, AML_NAME_OP);
	aml_name_string(a, path);
}

void aml_name_integer(struct aml *a, const char *path, uint64_t v)
{
	aml_name(a, path);
	aml_integer(a, v);
}

void aml_name_eisaid(struct aml *a, const char *path, const char *id)
{
	aml_name(a, path);
	aml_eisaid(a, id);
}

/* Remember where the PkgLength of the object being opened goes. */
static void open_obj(struct aml *a, uint8_t kind)
{
	if (a->error)
		return;
	if (a->depth == AML_MAX_DEPTH) {
		fail(a, -EINVAL);
		return;
	}
	a->open[a->depth] = a->len;
	a->kind[a->depth] = kind;
	a->depth++;
}

void aml_scope_begin(struct aml *a, const char *path)
{
	aml_byte(a, AML_SCOPE_OP);
	open_obj(a, AML_KIND_PKG);
	aml_name_string(a, path);
}

void aml_device_begin(struct aml *a, const char *path)
{
	aml_byte(a, AML_EXT_OP_PREFIX);
	aml_byte(a, AML_EXT_DEVICE_OP);
	open_obj(a, AML_KIND_PKG);
	aml_name_string(a, path);
}

void aml_method_begin(struct aml *a, const char *path, unsigned int nargs, bool serialized,
		      unsigned int sync_level)
{
	if (nargs > 7 || sync_level > 15) {
		fail(a, -EINVAL);
		return;
	}
	aml_byte(a, AML_METHOD_OP);
	open_obj(a, AML_KIND_PKG);
	aml_name_string(a, path);
	aml_byte(a, (uint8_t)(nargs | (serialized ? 0x08 : 0) | (sync_level << 4)));
}

void aml_return(struct aml *a)
{
	aml_byte(a, AML_RETURN_OP);
}

void aml_package_begin(struct aml *a, unsigned int nelems)
{
	if (nelems > 255) {
		fail(a, -EINVAL);
		return;
	}
	aml_byte(a, AML_PACKAGE_OP);
	open_obj(a, AML_KIND_PKG);
	aml_byte(a, (uint8_t)nelems);
}

void aml_buffer_begin(struct aml *a)
{
	aml_byte(a, AML_BUFFER_OP);
	open_obj(a, AML_KIND_BUFFER);
}

void aml_buffer(struct aml *a, const void *p, size_t n)
{
	aml_buffer_begin(a);
	aml_bytes(a, p, n);
	aml_end(a);
}

void aml_rt_begin(struct aml *a)
{
	aml_byte(a, AML_BUFFER_OP);
	open_obj(a, AML_KIND_RT);
}

void aml_end(struct aml *a)
{
	uint8_t head[4 + 9];
	unsigned int hlen = 0, plen;
	size_t start, content;
	uint8_t kind;

	if (a->error)
		return;
	if (a->depth == 0) {
		fail(a, -EINVAL);
		return;
	}
	start = a->open[a->depth - 1];
	kind = a->kind[a->depth - 1];

	if (kind == AML_KIND_RT) {
		uint8_t sum = RES_END_TAG;

		for (size_t i = start; i < a->len; i++)
			sum = (uint8_t)(sum + a->buf[i]);
		aml_byte(a, RES_END_TAG);
		aml_byte(a, (uint8_t)-sum);
		if (a->error)
			return;
	}
	content = a->len - start;
	if (kind != AML_KIND_PKG) {
		uint8_t size[9];
		unsigned int slen = encode_integer(content, size);

		/* BufferSize sits between the PkgLength and the bytes. */
		plen = aml_pkglength_size(content + slen);
		if (!plen || aml_pkglength_encode((uint32_t)(content + slen + plen), head) != plen)
			goto too_big;
		memcpy(head + plen, size, slen);
		hlen = plen + slen;
	} else {
		plen = aml_pkglength_size(content);
		if (!plen || aml_pkglength_encode((uint32_t)(content + plen), head) != plen)
			goto too_big;
		hlen = plen;
	}
	insert(a, start, head, hlen);
	a->depth--;
	return;
too_big:
	fail(a, -E2BIG);
}

void aml_rt_io(struct aml *a, bool decode16, uint16_t min, uint16_t max, uint8_t align, uint8_t len)
{
	aml_byte(a, RES_IO);
	aml_byte(a, decode16 ? 1 : 0);
	put_le(a, min, 2);
	put_le(a, max, 2);
	aml_byte(a, align);
	aml_byte(a, len);
}

void aml_rt_irq_noflags(struct aml *a, unsigned int irq)
{
	if (irq > 15) {
		fail(a, -EINVAL);
		return;
	}
	aml_byte(a, RES_IRQ_NOFLAGS);
	put_le(a, 1u << irq, 2);
}

void aml_rt_memory32_fixed(struct aml *a, bool rw, uint32_t base, uint32_t len)
{
	aml_byte(a, RES_MEMORY32_FIXED);
	put_le(a, 9, 2);
	aml_byte(a, rw ? 1 : 0);
	put_le(a, base, 4);
	put_le(a, len, 4);
}

/*
 * Address space descriptor: tag, length, resource type, general flags,
 * type-specific flags, then granularity, min, max, translation offset and
 * length, each @size bytes.
 */
static void rt_space(struct aml *a, uint8_t tag, unsigned int size, uint8_t type, uint8_t gflags,
		     uint8_t tflags, uint64_t min, uint64_t max)
{
	aml_byte(a, tag);
	put_le(a, 3 + 5 * size, 2);
	aml_byte(a, type);
	aml_byte(a, gflags);
	aml_byte(a, tflags);
	put_le(a, 0, size); /* granularity */
	put_le(a, min, size);
	put_le(a, max, size);
	put_le(a, 0, size);		/* translation offset */
	put_le(a, max - min + 1, size); /* length */
}

void aml_rt_word_space(struct aml *a, uint8_t type, uint8_t gflags, uint8_t tflags, uint16_t min,
		       uint16_t max)
{
	if (max < min) {
		fail(a, -EINVAL);
		return;
	}
	rt_space(a, RES_WORD_SPACE, 2, type, gflags, tflags, min, max);
}

void aml_rt_dword_space(struct aml *a, uint8_t type, uint8_t gflags, uint8_t tflags, uint32_t min,
			uint32_t max)
{
	if (max < min) {
		fail(a, -EINVAL);
		return;
	}
	rt_space(a, RES_DWORD_SPACE, 4, type, gflags, tflags, min, max);
}

void aml_rt_qword_space(struct aml *a, uint8_t type, uint8_t gflags, uint8_t tflags, uint64_t min,
			uint64_t max)
{
	if (max < min) {
		fail(a, -EINVAL);
		return;
	}
	rt_space(a, RES_QWORD_SPACE, 8, type, gflags, tflags, min, max);
}
