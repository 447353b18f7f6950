/*
 * Unit tests for the ACPI tables and the AML emitter: build the tables on
 * fake guest memory and parse them back at the offsets the ACPI 6.x spec
 * gives (not through the builder's own structs). When iasl is installed,
 * every table is also disassembled by it and the DSDT recompiled.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/layout.h"
#include "lib/memory.h"
#include "lib/x86/acpi.h"
#include "lib/x86/aml.h"

#define RAM_SIZE MiB(2)

/* ------------------------------------------------------------------ */
/* Fixture: guest RAM with the tables built for some number of CPUs.   */

struct fixture {
	unsigned int ncpus;
	uint8_t *ram;
	struct guest_mem m;
	uint64_t rsdp;
	/* Found by walking RSDP -> XSDT -> FADT -> DSDT. */
	uint64_t xsdt, fadt, madt, mcfg, dsdt;
	char tmpdir[512]; /* test_iasl's files, removed by the teardown */
};

static int build_setup(void **state)
{
	struct fixture *f = *state;
	struct vmm_err err = {{0}};
	struct acpi_config c = {.ncpus = f->ncpus};

	f->ram = calloc(1, RAM_SIZE);
	if (!f->ram)
		return -1;
	/* Garbage everywhere, so that fields left unset would show. */
	memset(f->ram, 0xa5, RAM_SIZE);
	gm_init_fake(&f->m, f->ram, RAM_SIZE);
	f->rsdp = 0;
	if (acpi_build(&f->m, &c, &f->rsdp, &err) != 0) {
		fprintf(stderr, "acpi_build: %s\n", err.msg);
		free(f->ram);
		return -1;
	}
	return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int build_teardown(void **state)
{
	struct fixture *f = *state;

	if (f->tmpdir[0]) {
		nftw(f->tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
		f->tmpdir[0] = 0;
	}
	free(f->ram);
	f->ram = NULL;
	return 0;
}

static const uint8_t *at(const struct fixture *f, uint64_t gpa, uint64_t len)
{
	const uint8_t *p = gm_ptr(&f->m, gpa, len);

	assert_non_null(p);
	return p;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint8_t sum8(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	for (size_t i = 0; i < n; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

static bool in_acpi_area(uint64_t gpa, uint64_t len)
{
	return gpa >= LAYOUT_ACPI && len <= LAYOUT_ACPI_SIZE &&
	       gpa - LAYOUT_ACPI <= LAYOUT_ACPI_SIZE - len;
}

/*
 * Check the table at @gpa: in the ACPI area, 16-byte aligned, signature,
 * revision, OEM fields, a plausible length and a zero byte sum. Returns its length.
 */
static uint32_t check_table(const struct fixture *f, uint64_t gpa, const char *sig, uint8_t rev)
{
	const uint8_t *h = at(f, gpa, 36);
	uint32_t len = le32(h + 4);

	assert_true(in_acpi_area(gpa, 36));
	assert_int_equal(gpa % 16, 0);
	assert_memory_equal(h, sig, 4);
	assert_true(len >= 36);
	assert_true(in_acpi_area(gpa, len));
	assert_int_equal(h[8], rev);
	assert_memory_equal(h + 10, "LIBVMM", 6);
	assert_int_equal(sum8(at(f, gpa, len), len), 0);
	return len;
}

static uint64_t xsdt_find(const struct fixture *f, const char *sig)
{
	uint32_t len = le32(at(f, f->xsdt + 4, 4));

	for (uint32_t off = 36; off + 8 <= len; off += 8) {
		uint64_t t = le64(at(f, f->xsdt + off, 8));

		if (memcmp(at(f, t, 4), sig, 4) == 0)
			return t;
	}
	return 0;
}

/* Walk RSDP -> XSDT -> tables and fill in their addresses. */
static void find_tables(struct fixture *f)
{
	const uint8_t *r = at(f, f->rsdp, 36);

	f->xsdt = le64(r + 24);
	f->fadt = xsdt_find(f, "FACP");
	f->madt = xsdt_find(f, "APIC");
	f->mcfg = xsdt_find(f, "MCFG");
	assert_true(f->fadt && f->madt && f->mcfg);
	f->dsdt = le64(at(f, f->fadt + 140, 8));
}

/* ------------------------------------------------------------------ */
/* Tables                                                              */

static void test_checksum(void **state)
{
	uint8_t buf[40];

	(void)state;
	for (unsigned int i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 37 + 11);
	buf[9] = 0;
	buf[9] = acpi_checksum(buf, sizeof(buf));
	assert_int_equal(sum8(buf, sizeof(buf)), 0);
	assert_int_equal(acpi_checksum(buf, 0), 0);
	buf[0] = 0xff;
	assert_int_equal(acpi_checksum(buf, 1), 1);
}

static void test_rsdp(void **state)
{
	struct fixture *f = *state;
	const uint8_t *r;

	assert_int_equal(f->rsdp, LAYOUT_ACPI);
	r = at(f, f->rsdp, 36);
	assert_memory_equal(r, "RSD PTR ", 8);
	assert_int_equal(sum8(r, 20), 0);
	assert_int_equal(sum8(r, 36), 0);
	assert_memory_equal(r + 9, "LIBVMM", 6);
	assert_int_equal(r[15], 2);	    /* revision */
	assert_int_equal(le32(r + 16), 0);  /* no RSDT */
	assert_int_equal(le32(r + 20), 36); /* length */
	assert_int_equal(r[33] | r[34] | r[35], 0);
	find_tables(f);
	assert_true(in_acpi_area(f->xsdt, 36));
	assert_int_equal(check_table(f, f->xsdt, "XSDT", 1), 36 + 3 * 8);
}

static void test_tables_checksums_and_layout(void **state)
{
	struct fixture *f = *state;
	uint64_t start[6], len[6];
	unsigned int n = 0;

	find_tables(f);
	start[n] = f->rsdp;
	len[n++] = 36;
	start[n] = f->xsdt;
	len[n++] = check_table(f, f->xsdt, "XSDT", 1);
	start[n] = f->fadt;
	len[n++] = check_table(f, f->fadt, "FACP", 6);
	start[n] = f->madt;
	len[n++] = check_table(f, f->madt, "APIC", 5);
	start[n] = f->mcfg;
	len[n++] = check_table(f, f->mcfg, "MCFG", 1);
	start[n] = f->dsdt;
	len[n++] = check_table(f, f->dsdt, "DSDT", 2);

	for (unsigned int i = 0; i < n; i++) {
		assert_true(in_acpi_area(start[i], len[i]));
		for (unsigned int j = i + 1; j < n; j++)
			assert_true(start[i] + len[i] <= start[j] || start[j] + len[j] <= start[i]);
	}
	/* Nothing written outside the ACPI area. */
	for (uint64_t g = 0; g < RAM_SIZE; g++) {
		if (g == LAYOUT_ACPI)
			g += LAYOUT_ACPI_SIZE;
		if (g < RAM_SIZE && f->ram[g] != 0xa5)
			fail_msg("byte at %#llx written", (unsigned long long)g);
	}
}

static void check_io_gas(const uint8_t *g, uint16_t port)
{
	assert_int_equal(g[0], 1); /* System I/O */
	assert_int_equal(g[1], 8); /* bit width */
	assert_int_equal(g[2], 0); /* bit offset */
	assert_int_equal(g[3], 1); /* byte access */
	assert_int_equal(le64(g + 4), port);
}

static void test_fadt(void **state)
{
	struct fixture *f = *state;
	const uint8_t *t;
	uint32_t flags;

	find_tables(f);
	assert_int_equal(check_table(f, f->fadt, "FACP", 6), 276);
	t = at(f, f->fadt, 276);
	assert_int_equal(le32(t + 36), 0);		/* FIRMWARE_CTRL: no FACS */
	assert_int_equal(le32(t + 40), f->dsdt);	/* DSDT */
	assert_int_equal(le64(t + 140), f->dsdt);	/* X_DSDT */
	assert_int_equal(le64(t + 132), 0);		/* X_FIRMWARE_CTRL */
	assert_int_equal(le16(t + 46), 0);		/* SCI_INT */
	assert_int_equal(le32(t + 48), 0);		/* SMI_CMD */
	for (unsigned int off = 56; off < 88; off += 4) /* PM1a..GPE1 blocks */
		assert_int_equal(le32(t + off), 0);
	for (unsigned int off = 148; off < 244; off++) /* X_PM1a..X_GPE1 */
		assert_int_equal(t[off], 0);

	flags = le32(t + 112);
	assert_true(flags & (1u << 20)); /* HW_REDUCED_ACPI */
	assert_true(flags & (1u << 10)); /* RESET_REG_SUP */
	assert_true(flags & (1u << 4));	 /* PWR_BUTTON: none fixed */
	assert_true(flags & (1u << 5));	 /* SLP_BUTTON: none fixed */

	assert_true(le16(t + 109) & (1u << 1));	 /* IAPC_BOOT_ARCH: 8042 */
	assert_true(le16(t + 109) & (1u << 2));	 /* VGA not present */
	assert_false(le16(t + 109) & (1u << 5)); /* the CMOS RTC is there */

	check_io_gas(t + 116, PORT_ACPI_RESET);
	assert_int_equal(t[128], ACPI_RESET_VALUE);
	assert_int_equal(t[131] & 0xf, 3); /* minor version: ACPI 6.3 */
	check_io_gas(t + 244, PORT_ACPI_SLEEP_CTL);
	check_io_gas(t + 256, PORT_ACPI_SLEEP_STS);
	assert_memory_equal(t + 268, "LIBVMM", 6);
}

static void test_madt(void **state)
{
	struct fixture *f = *state;
	unsigned int nlapic = 0, nioapic = 0, niso = 0, nnmi = 0;
	bool seen[256] = {false};
	const uint8_t *t;
	uint32_t len;

	find_tables(f);
	len = check_table(f, f->madt, "APIC", 5);
	t = at(f, f->madt, len);
	assert_int_equal(le32(t + 36), LAYOUT_LAPIC);
	assert_int_equal(le32(t + 40) & ~1u, 0); /* only PCAT_COMPAT may be set */

	for (uint32_t off = 44; off < len;) {
		const uint8_t *e = t + off;

		assert_true(off + 2 <= len);
		assert_true(e[1] >= 2 && off + e[1] <= len);
		switch (e[0]) {
		case 0: /* Processor Local APIC */
			assert_int_equal(e[1], 8);
			assert_int_equal(e[2], e[3]); /* uid == APIC id */
			assert_true(e[3] < f->ncpus);
			assert_false(seen[e[3]]);
			seen[e[3]] = true;
			assert_int_equal(le32(e + 4) & 1, 1); /* enabled */
			nlapic++;
			break;
		case 1: /* I/O APIC */
			assert_int_equal(e[1], 12);
			assert_int_equal(e[2], 0);
			assert_int_equal(le32(e + 4), LAYOUT_IOAPIC);
			assert_int_equal(le32(e + 8), 0);
			nioapic++;
			break;
		case 2: /* Interrupt Source Override */
			assert_int_equal(e[1], 10);
			assert_int_equal(e[2], 0); /* ISA */
			assert_int_equal(e[3], 0); /* IRQ 0 */
			assert_int_equal(le32(e + 4), 2);
			niso++;
			break;
		case 4: /* Local APIC NMI */
			assert_int_equal(e[1], 6);
			assert_int_equal(e[2], 0xff); /* all processors */
			assert_int_equal(e[5], 1);    /* LINT1 */
			nnmi++;
			break;
		default:
			fail_msg("unexpected MADT entry type %u", e[0]);
		}
		off += e[1];
	}
	assert_int_equal(nlapic, f->ncpus);
	assert_int_equal(nioapic, 1);
	assert_int_equal(niso, 1);
	assert_int_equal(nnmi, 1);
}

static void test_mcfg(void **state)
{
	struct fixture *f = *state;
	const uint8_t *t;

	find_tables(f);
	assert_int_equal(check_table(f, f->mcfg, "MCFG", 1), 44 + 16);
	t = at(f, f->mcfg, 60);
	assert_int_equal(le64(t + 36), 0); /* reserved */
	assert_int_equal(le64(t + 44), LAYOUT_ECAM);
	assert_int_equal(le16(t + 52), 0); /* segment */
	assert_int_equal(t[54], 0);	   /* start bus */
	assert_int_equal(t[55], (LAYOUT_ECAM_SIZE >> 20) - 1);
	assert_int_equal(t[55], 0);
	assert_int_equal(le32(t + 56), 0);
}

/* ------------------------------------------------------------------ */
/* A small AML reader for what the DSDT holds                          */

/* Decode a PkgLength at @p; returns its size in bytes, 0 if malformed. */
static unsigned int pkglen_decode(const uint8_t *p, size_t avail, uint32_t *value)
{
	unsigned int follow;

	if (avail < 1)
		return 0;
	follow = p[0] >> 6;
	if (avail < 1 + follow)
		return 0;
	if (follow == 0) {
		*value = p[0] & 0x3f;
		return 1;
	}
	if (p[0] & 0x30)
		return 0; /* reserved bits */
	*value = p[0] & 0xf;
	for (unsigned int i = 1; i <= follow; i++)
		*value |= (uint32_t)p[i] << (4 + 8 * (i - 1));
	return follow + 1;
}

#define MAX_NAMES 64

struct aml_reader {
	const uint8_t *base;
	struct {
		char path[64];
		size_t off; /* of the data object */
	} names[MAX_NAMES];
	unsigned int nnames;
};

/* Read a NameString into @out ("\\_SB_.PCI0"); returns bytes consumed. */
static size_t read_name(const uint8_t *p, size_t avail, char *out, size_t outsz)
{
	size_t i = 0, o = 0;
	unsigned int nsegs;

	assert_true(avail >= 1);
	if (p[0] == '\\')
		out[o++] = p[i++];
	assert_true(p[i] != '^'); /* not emitted */
	if (p[i] == 0x00) {
		nsegs = 0;
		i++;
	} else if (p[i] == 0x2e) {
		nsegs = 2;
		i++;
	} else if (p[i] == 0x2f) {
		nsegs = p[i + 1];
		i += 2;
	} else {
		nsegs = 1;
	}
	assert_true(i + 4 * (size_t)nsegs <= avail);
	for (unsigned int s = 0; s < nsegs; s++) {
		assert_true(o + 6 < outsz);
		if (s)
			out[o++] = '.';
		memcpy(out + o, p + i, 4);
		o += 4;
		i += 4;
	}
	out[o] = 0;
	return i;
}

static void join_path(char *dst, size_t dstsz, const char *scope, const char *name)
{
	if (name[0] == '\\')
		snprintf(dst, dstsz, "%s", name);
	else if (strcmp(scope, "\\") == 0)
		snprintf(dst, dstsz, "\\%s", name);
	else
		snprintf(dst, dstsz, "%s.%s", scope, name);
}

/* Integer constant at @p; returns bytes consumed, 0 if not an integer. */
static size_t read_integer(const uint8_t *p, size_t avail, uint64_t *v)
{
	unsigned int n;

	assert_true(avail >= 1);
	switch (p[0]) {
	case 0x00:
		*v = 0;
		return 1;
	case 0x01:
		*v = 1;
		return 1;
	case 0xff:
		*v = UINT64_MAX;
		return 1;
	case 0x0a:
		n = 1;
		break;
	case 0x0b:
		n = 2;
		break;
	case 0x0c:
		n = 4;
		break;
	case 0x0e:
		n = 8;
		break;
	default:
		return 0;
	}
	assert_true(avail >= 1 + n);
	*v = 0;
	for (unsigned int i = 0; i < n; i++)
		*v |= (uint64_t)p[1 + i] << (8 * i);
	return 1 + n;
}

static size_t read_data_object(const uint8_t *p, size_t avail);

/* A PkgLength-delimited object starting at its PkgLength; returns its end offset. */
static size_t pkg_end(const uint8_t *p, size_t avail, unsigned int *plen)
{
	uint32_t v;

	*plen = pkglen_decode(p, avail, &v);
	assert_true(*plen > 0);
	assert_true(v >= *plen && v <= avail);
	return v;
}

static size_t read_data_object(const uint8_t *p, size_t avail)
{
	uint64_t v;
	size_t n = read_integer(p, avail, &v);
	unsigned int plen;

	if (n)
		return n;
	switch (p[0]) {
	case 0x0d: { /* String */
		const uint8_t *z = memchr(p + 1, 0, avail - 1);

		assert_non_null(z);
		return (size_t)(z - p) + 1;
	}
	case 0x12: { /* Package */
		size_t end = 1 + pkg_end(p + 1, avail - 1, &plen);
		size_t off = 1 + plen + 1;
		unsigned int count = 0;

		while (off < end) {
			off += read_data_object(p + off, end - off);
			count++;
		}
		assert_int_equal(off, end);
		assert_int_equal(count, p[1 + plen]);
		return end;
	}
	case 0x11: { /* Buffer */
		size_t end = 1 + pkg_end(p + 1, avail - 1, &plen);
		size_t off = 1 + plen;

		n = read_integer(p + off, end - off, &v);
		assert_true(n > 0);
		assert_int_equal(end - off - n, v);
		return end;
	}
	default:
		fail_msg("unexpected data object opcode %#x", p[0]);
	}
	return 0;
}

static void read_term_list(struct aml_reader *r, size_t off, size_t end, const char *scope)
{
	const uint8_t *b = r->base;

	while (off < end) {
		char name[64], path[64];
		unsigned int plen;
		size_t oend;

		if (b[off] == 0x08) { /* Name */
			off++;
			off += read_name(b + off, end - off, name, sizeof(name));
			assert_true(r->nnames < MAX_NAMES);
			join_path(r->names[r->nnames].path, sizeof(r->names[0].path), scope, name);
			r->names[r->nnames++].off = off;
			off += read_data_object(b + off, end - off);
		} else if (b[off] == 0x10 || (b[off] == 0x5b && b[off + 1] == 0x82)) {
			/* Scope or Device */
			off += b[off] == 0x10 ? 1 : 2;
			oend = off + pkg_end(b + off, end - off, &plen);
			off += plen;
			off += read_name(b + off, oend - off, name, sizeof(name));
			join_path(path, sizeof(path), scope, name);
			read_term_list(r, off, oend, path);
			off = oend;
		} else {
			fail_msg("unexpected opcode %#x at %zu", b[off], off);
		}
	}
	assert_int_equal(off, end);
}

static const uint8_t *find_name(const struct aml_reader *r, const char *path)
{
	for (unsigned int i = 0; i < r->nnames; i++) {
		if (strcmp(r->names[i].path, path) == 0)
			return r->base + r->names[i].off;
	}
	fail_msg("%s not in the DSDT", path);
	return NULL;
}

static bool has_name(const struct aml_reader *r, const char *path)
{
	for (unsigned int i = 0; i < r->nnames; i++) {
		if (strcmp(r->names[i].path, path) == 0)
			return true;
	}
	return false;
}

static uint64_t name_integer(const struct aml_reader *r, const char *path)
{
	const uint8_t *p = find_name(r, path);
	uint64_t v;

	assert_true(read_integer(p, 9, &v) > 0);
	return v;
}

/* The bytes of the Buffer named @path; checks it is a well-formed resource template. */
static const uint8_t *name_resources(const struct aml_reader *r, const char *path, size_t *len)
{
	const uint8_t *p = find_name(r, path);
	uint32_t total;
	unsigned int plen;
	uint64_t size;
	size_t n, off = 0;

	assert_int_equal(p[0], 0x11);
	plen = pkglen_decode(p + 1, 4, &total);
	n = read_integer(p + 1 + plen, 9, &size);
	assert_true(n > 0);
	assert_int_equal(total, plen + n + size);
	p += 1 + plen + n;
	*len = size;
	/* Walk the descriptors to the End Tag, which must close the buffer. */
	for (;;) {
		assert_true(off < size);
		if (p[off] & 0x80) {
			assert_true(off + 3 <= size);
			off += 3 + le16(p + off + 1);
		} else if (p[off] == 0x79) {
			assert_int_equal(off + 2, size);
			assert_int_equal(sum8(p, size), 0);
			break;
		} else {
			off += 1 + (p[off] & 7);
		}
	}
	return p;
}

static void read_dsdt(const struct fixture *f, struct aml_reader *r, const uint8_t **body,
		      size_t *len)
{
	uint32_t tlen = le32(at(f, f->dsdt + 4, 4));

	*body = at(f, f->dsdt, tlen) + 36;
	*len = tlen - 36;
	memset(r, 0, sizeof(*r));
	r->base = *body;
	read_term_list(r, 0, *len, "\\");
}

static void test_dsdt_s5(void **state)
{
	struct fixture *f = *state;
	struct aml_reader r;
	const uint8_t *body, *p;
	unsigned int plen;
	uint32_t total;
	uint64_t v;
	size_t len, off;

	find_tables(f);
	read_dsdt(f, &r, &body, &len);

	/* The first object is Name(_S5_, Package(4) { 5, 5, 0, 0 }) in the root scope. */
	assert_int_equal(body[0], 0x08);
	assert_memory_equal(body + 1, "_S5_", 4);
	p = find_name(&r, "\\_S5_");
	assert_ptr_equal(p, body + 5);
	assert_int_equal(p[0], 0x12);
	plen = pkglen_decode(p + 1, 4, &total);
	assert_int_equal(p[1 + plen], 4);
	off = 1 + plen + 1;
	assert_int_equal(read_integer(p + off, 9, &v), 2); /* BytePrefix */
	assert_int_equal(v, ACPI_S5_SLP_TYP);
	assert_int_equal(v, 5);
	off += 2;
	assert_true(read_integer(p + off, 9, &v) > 0);
	assert_int_equal(v, ACPI_S5_SLP_TYP);
}

/* One address space descriptor at @d: returns its size. */
static size_t check_space(const uint8_t *d, uint8_t tag, uint8_t type, uint8_t tflags, uint64_t min,
			  uint64_t max)
{
	unsigned int w = tag == 0x88 ? 2 : tag == 0x87 ? 4 : 8;
	const uint8_t *q = d + 6;
	uint64_t fld[5];

	assert_int_equal(d[0], tag);
	assert_int_equal(le16(d + 1), 3 + 5 * w);
	assert_int_equal(d[3], type);
	assert_int_equal(d[4], 0x0c); /* producer, min and max fixed, positive decode */
	assert_int_equal(d[5], tflags);
	for (unsigned int i = 0; i < 5; i++, q += w)
		fld[i] = w == 2 ? le16(q) : w == 4 ? le32(q) : le64(q);
	assert_int_equal(fld[0], 0); /* granularity */
	assert_int_equal(fld[1], min);
	assert_int_equal(fld[2], max);
	assert_int_equal(fld[3], 0); /* translation */
	assert_int_equal(fld[4], max - min + 1);
	return 6 + 5 * w;
}

static void test_dsdt_devices(void **state)
{
	struct fixture *f = *state;
	static const uint8_t cf8[] = {0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08};
	static const uint8_t com1[] = {0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03,
				       0x00, 0x08, 0x22, 0x10, 0x00, 0x79};
	struct aml_reader r;
	const uint8_t *body, *rt;
	size_t len, rlen, off = 0;

	find_tables(f);
	read_dsdt(f, &r, &body, &len);

	assert_int_equal(name_integer(&r, "\\_SB_.PCI0._HID"), 0x080ad041); /* PNP0A08 */
	assert_int_equal(name_integer(&r, "\\_SB_.PCI0._CID"), 0x030ad041); /* PNP0A03 */
	assert_false(has_name(&r, "\\_SB_.PCI0._ADR")); /* _HID or _ADR, not both */
	assert_int_equal(name_integer(&r, "\\_SB_.PCI0._SEG"), 0);
	assert_int_equal(name_integer(&r, "\\_SB_.PCI0._UID"), 0);
	assert_int_equal(name_integer(&r, "\\_SB_.PCI0._BBN"), 0);

	rt = name_resources(&r, "\\_SB_.PCI0._CRS", &rlen);
	off += check_space(rt + off, 0x88, 2, 0, 0, 0);
	assert_memory_equal(rt + off, cf8, sizeof(cf8));
	off += sizeof(cf8);
	off += check_space(rt + off, 0x88, 1, 0x03, 0, 0xcf7);
	off += check_space(rt + off, 0x88, 1, 0x03, 0xd00, 0xffff);
	off += check_space(rt + off, 0x87, 0, 0x01, LAYOUT_PCI_MMIO,
			   LAYOUT_PCI_MMIO + LAYOUT_PCI_MMIO_SIZE - 1);
	assert_int_equal(rt[off], 0x79);
	assert_int_equal(off + 2, rlen);

	assert_int_equal(name_integer(&r, "\\_SB_.COM1._HID"), 0x0105d041); /* PNP0501 */
	assert_int_equal(name_integer(&r, "\\_SB_.COM1._UID"), 1);
	rt = name_resources(&r, "\\_SB_.COM1._CRS", &rlen);
	assert_int_equal(rlen, sizeof(com1) + 1);
	assert_memory_equal(rt, com1, sizeof(com1));

	assert_int_equal(name_integer(&r, "\\_SB_.MBRD._HID"), 0x020cd041); /* PNP0C02 */
	rt = name_resources(&r, "\\_SB_.MBRD._CRS", &rlen);
	assert_int_equal(rt[0], 0x86);
	assert_int_equal(le32(rt + 4), LAYOUT_ECAM);
	assert_int_equal(le32(rt + 8), LAYOUT_ECAM_SIZE);
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

static void test_zero_cpus(void **state)
{
	uint8_t *ram = calloc(1, RAM_SIZE);
	struct acpi_config c = {.ncpus = 0};
	struct vmm_err err = {{0}};
	struct guest_mem m;
	uint64_t rsdp = 123;

	(void)state;
	assert_non_null(ram);
	gm_init_fake(&m, ram, RAM_SIZE);
	assert_int_equal(acpi_build(&m, &c, &rsdp, &err), -EINVAL);
	assert_true(err.msg[0] != 0);
	assert_int_equal(rsdp, 123);
	assert_int_equal(acpi_build(&m, NULL, &rsdp, NULL), -EINVAL);
	free(ram);
}

static void test_too_many_cpus(void **state)
{
	uint8_t *ram = calloc(1, RAM_SIZE);
	struct acpi_config c = {.ncpus = 20000};
	struct vmm_err err = {{0}};
	struct guest_mem m;
	uint64_t rsdp = 0;

	(void)state;
	assert_non_null(ram);
	gm_init_fake(&m, ram, RAM_SIZE);
	assert_int_equal(acpi_build(&m, &c, &rsdp, &err), -ENOSPC);
	assert_non_null(strstr(err.msg, "20000"));
	for (size_t i = 0; i < RAM_SIZE; i++)
		assert_int_equal(ram[i], 0);
	c.ncpus = UINT32_MAX;
	assert_int_equal(acpi_build(&m, &c, &rsdp, NULL), -ENOSPC);
	free(ram);
}

static void test_ram_too_small(void **state)
{
	uint8_t *ram = calloc(1, LAYOUT_ACPI + 64);
	struct acpi_config c = {.ncpus = 1};
	struct vmm_err err = {{0}};
	struct guest_mem m;
	uint64_t rsdp = 0;

	(void)state;
	assert_non_null(ram);
	gm_init_fake(&m, ram, LAYOUT_ACPI + 64);
	assert_int_equal(acpi_build(&m, &c, &rsdp, &err), -EFAULT);
	assert_true(err.msg[0] != 0);
	free(ram);
}

/* More than 255 CPUs: the APIC ids from 255 on are x2APIC entries. */
static void test_x2apic(void **state)
{
	struct fixture fx = {.ncpus = 300};
	struct fixture *f = &fx;
	void *st = f;
	unsigned int nlapic = 0, nx2apic = 0, nx2nmi = 0;
	const uint8_t *t;
	uint32_t len;

	(void)state;
	assert_int_equal(build_setup(&st), 0);
	find_tables(f);
	len = check_table(f, f->madt, "APIC", 5);
	t = at(f, f->madt, len);
	for (uint32_t off = 44; off < len; off += t[off + 1]) {
		const uint8_t *e = t + off;

		assert_true(e[1] >= 2);
		if (e[0] == 0) {
			assert_int_equal(e[3], nlapic);
			nlapic++;
		} else if (e[0] == 9) {
			assert_int_equal(e[1], 16);
			assert_int_equal(le32(e + 4), 255 + nx2apic); /* x2APIC id */
			assert_int_equal(le32(e + 8) & 1, 1);
			assert_int_equal(le32(e + 12), 255 + nx2apic); /* uid */
			nx2apic++;
		} else if (e[0] == 0xa) {
			assert_int_equal(e[1], 12);
			assert_int_equal(le32(e + 4), 0xffffffffu);
			assert_int_equal(e[8], 1);
			nx2nmi++;
		}
	}
	assert_int_equal(nlapic, 255);
	assert_int_equal(nx2apic, 45);
	assert_int_equal(nx2nmi, 1);
	build_teardown(&st);
}

/* ------------------------------------------------------------------ */
/* AML emitter                                                         */

static void test_pkglength_encode(void **state)
{
	uint8_t b[4];

	(void)state;
	assert_int_equal(aml_pkglength_encode(0, b), 1);
	assert_int_equal(b[0], 0);
	assert_int_equal(aml_pkglength_encode(63, b), 1);
	assert_int_equal(b[0], 63);
	assert_int_equal(aml_pkglength_encode(64, b), 2);
	assert_int_equal(b[0], 0x40);
	assert_int_equal(b[1], 0x04);
	assert_int_equal(aml_pkglength_encode(0x123, b), 2);
	assert_int_equal(b[0], 0x43);
	assert_int_equal(b[1], 0x12);
	assert_int_equal(aml_pkglength_encode(4095, b), 2);
	assert_int_equal(b[0], 0x4f);
	assert_int_equal(b[1], 0xff);
	assert_int_equal(aml_pkglength_encode(4096, b), 3);
	assert_int_equal(b[0], 0x80);
	assert_int_equal(b[1], 0x00);
	assert_int_equal(b[2], 0x01);
	assert_int_equal(aml_pkglength_encode(0xfffff, b), 3);
	assert_int_equal(b[0], 0x8f);
	assert_int_equal(b[1], 0xff);
	assert_int_equal(b[2], 0xff);
	assert_int_equal(aml_pkglength_encode(0x100000, b), 4);
	assert_int_equal(b[0], 0xc0);
	assert_int_equal(b[1], 0x00);
	assert_int_equal(b[2], 0x00);
	assert_int_equal(b[3], 0x01);
	assert_int_equal(aml_pkglength_encode(0x0fffffff, b), 4);
	assert_int_equal(b[0], 0xcf);
	assert_int_equal(b[3], 0xff);
	assert_int_equal(aml_pkglength_encode(0x10000000, b), 0);

	/* Every value decodes back. */
	for (uint32_t v = 0; v < 0x20000; v++) {
		uint32_t d = 0;
		unsigned int n = aml_pkglength_encode(v, b);

		assert_int_equal(pkglen_decode(b, 4, &d), n);
		assert_int_equal(d, v);
	}
}

static void test_pkglength_size(void **state)
{
	(void)state;
	assert_int_equal(aml_pkglength_size(0), 1);
	assert_int_equal(aml_pkglength_size(62), 1);	  /* total 63 */
	assert_int_equal(aml_pkglength_size(63), 2);	  /* 64 would not fit one byte */
	assert_int_equal(aml_pkglength_size(4093), 2);	  /* total 4095 */
	assert_int_equal(aml_pkglength_size(4094), 3);	  /* total 4097 */
	assert_int_equal(aml_pkglength_size(0xffffc), 3); /* total 0xfffff */
	assert_int_equal(aml_pkglength_size(0xffffd), 4);
	assert_int_equal(aml_pkglength_size(0x0ffffffb), 4);
	assert_int_equal(aml_pkglength_size(0x0ffffffc), 0);
}

/* Scope(FOO_) holding @filler bytes: check the PkgLength form and value. */
static void check_scope_len(size_t filler, unsigned int want_bytes)
{
	uint8_t *junk = calloc(1, filler + 1);
	struct aml a;
	uint32_t v;

	assert_non_null(junk);
	aml_init(&a);
	aml_scope_begin(&a, "FOO");
	aml_bytes(&a, junk, filler);
	aml_end(&a);
	assert_int_equal(aml_finish(&a), 0);
	assert_int_equal(a.buf[0], 0x10);
	assert_int_equal(pkglen_decode(a.buf + 1, a.len - 1, &v), want_bytes);
	assert_int_equal(v, a.len - 1);
	assert_memory_equal(a.buf + 1 + want_bytes, "FOO_", 4);
	assert_int_equal(a.len, 1 + want_bytes + 4 + filler);
	aml_free(&a);
	free(junk);
}

static void test_pkglength_in_builder(void **state)
{
	(void)state;
	/* Content = 4-byte name + filler. */
	check_scope_len(0, 1);
	check_scope_len(58, 1);	  /* content 62, total 63 */
	check_scope_len(59, 2);	  /* content 63, total 65 */
	check_scope_len(60, 2);	  /* content 64 */
	check_scope_len(4089, 2); /* content 4093, total 4095 */
	check_scope_len(4090, 3); /* content 4094, total 4097 */
	check_scope_len(4092, 3); /* total 4096 + 3 */
	check_scope_len(0x100000, 4);
}

static void test_nested_pkglength(void **state)
{
	struct aml a;
	uint8_t junk[5000] = {0};
	uint32_t outer, inner;
	unsigned int no, ni;

	(void)state;
	aml_init(&a);
	aml_scope_begin(&a, "\\_SB");
	aml_device_begin(&a, "DEV0");
	aml_bytes(&a, junk, sizeof(junk)); /* inner grows to 3 bytes: outer must too */
	aml_end(&a);
	aml_name_integer(&a, "X", 7);
	aml_end(&a);
	assert_int_equal(aml_finish(&a), 0);

	assert_int_equal(a.buf[0], 0x10);
	no = pkglen_decode(a.buf + 1, a.len - 1, &outer);
	assert_int_equal(no, 3);
	assert_int_equal(outer, a.len - 1);
	assert_memory_equal(a.buf + 1 + no, "\\_SB_", 5);
	assert_int_equal(a.buf[1 + no + 5], 0x5b);
	assert_int_equal(a.buf[1 + no + 6], 0x82);
	ni = pkglen_decode(a.buf + 1 + no + 7, a.len, &inner);
	assert_int_equal(ni, 3);
	assert_int_equal(inner, ni + 4 + sizeof(junk));
	/* Name(X___, 7) follows the device. */
	assert_memory_equal(a.buf + 1 + no + 7 + inner, "\x08X___\x0a\x07", 7);
	assert_int_equal(1 + no + 7 + inner + 7, a.len);
	aml_free(&a);
}

static void test_name_strings(void **state)
{
	static const struct {
		const char *in;
		const char *out;
		size_t len;
	} ok[] = {
		{"_S5", "_S5_", 4},
		{"\\_S5", "\\_S5_", 5},
		{"PCI0", "PCI0", 4},
		{"\\_SB.PCI0", "\\\x2e_SB_PCI0", 10},
		{"^^FOO", "^^FOO_", 6},
		{"\\A.B.C",
		 "\\\x2f\x03"
		 "A___B___C___",
		 15},
		{"\\", "\\\x00", 2},
		{"A1_Z", "A1_Z", 4},
	};
	static const char *const bad[] = {"1ABC", "ABCDE", "pci0", "A..B", "A.", ".A", "A-B"};
	struct aml a;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		aml_init(&a);
		aml_name_string(&a, ok[i].in);
		assert_int_equal(aml_finish(&a), 0);
		assert_int_equal(a.len, ok[i].len);
		assert_memory_equal(a.buf, ok[i].out, ok[i].len);
		aml_free(&a);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		aml_init(&a);
		aml_name_string(&a, bad[i]);
		assert_int_equal(aml_finish(&a), -EINVAL);
		aml_free(&a);
	}
}

static void test_integers(void **state)
{
	static const struct {
		uint64_t v;
		const char *enc;
		size_t len;
	} cases[] = {
		{0, "\x00", 1},
		{1, "\x01", 1},
		{2, "\x0a\x02", 2},
		{0xff, "\x0a\xff", 2},
		{0x100, "\x0b\x00\x01", 3},
		{0xffff, "\x0b\xff\xff", 3},
		{0x10000, "\x0c\x00\x00\x01\x00", 5},
		{0xffffffff, "\x0c\xff\xff\xff\xff", 5},
		{0x100000000ULL, "\x0e\x00\x00\x00\x00\x01\x00\x00\x00", 9},
	};
	struct aml a;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		aml_init(&a);
		aml_integer(&a, cases[i].v);
		assert_int_equal(aml_finish(&a), 0);
		assert_int_equal(a.len, cases[i].len);
		assert_memory_equal(a.buf, cases[i].enc, cases[i].len);
		aml_free(&a);
	}
	aml_init(&a);
	aml_string(&a, "Hi");
	assert_int_equal(a.len, 4);
	assert_memory_equal(a.buf, "\x0dHi\x00", 4);
	aml_free(&a);
}

static void test_eisaid(void **state)
{
	struct aml a;

	(void)state;
	assert_int_equal(aml_eisaid_value("PNP0A03"), 0x030ad041);
	assert_int_equal(aml_eisaid_value("PNP0A08"), 0x080ad041);
	assert_int_equal(aml_eisaid_value("PNP0501"), 0x0105d041);
	assert_int_equal(aml_eisaid_value("PNP0C02"), 0x020cd041);
	assert_int_equal(aml_eisaid_value("PNP0A0"), 0);
	assert_int_equal(aml_eisaid_value("pnp0A03"), 0);
	assert_int_equal(aml_eisaid_value("PNP0A0G"), 0);

	aml_init(&a);
	aml_name_eisaid(&a, "_HID", "PNP0A03");
	assert_int_equal(aml_finish(&a), 0);
	assert_memory_equal(a.buf, "\x08_HID\x0c\x41\xd0\x0a\x03", 10);
	aml_name_eisaid(&a, "_CID", "bad");
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_free(&a);
}

static void test_package_buffer_method(void **state)
{
	static const uint8_t s5[] = {0x08, '\\', '_',  'S',  '5',  '_',	 0x12, 0x08,
				     0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00};
	uint8_t data[100];
	struct aml a;

	(void)state;
	aml_init(&a);
	aml_name(&a, "\\_S5");
	aml_package_begin(&a, 4);
	aml_integer(&a, 5);
	aml_integer(&a, 5);
	aml_integer(&a, 0);
	aml_integer(&a, 0);
	aml_end(&a);
	assert_int_equal(aml_finish(&a), 0);
	assert_int_equal(a.len, sizeof(s5));
	assert_memory_equal(a.buf, s5, sizeof(s5));
	aml_free(&a);

	/* Buffer(100): BufferOp, PkgLength (2 bytes: 1 + 2 + 2 + 100 > 63), BytePrefix 100. */
	memset(data, 0x5a, sizeof(data));
	aml_init(&a);
	aml_buffer(&a, data, sizeof(data));
	assert_int_equal(aml_finish(&a), 0);
	assert_int_equal(a.len, 1 + 2 + 2 + 100);
	assert_int_equal(a.buf[0], 0x11);
	assert_int_equal(a.buf[1], 0x40 | ((2 + 2 + 100) & 0xf));
	assert_int_equal(a.buf[2], (2 + 2 + 100) >> 4);
	assert_int_equal(a.buf[3], 0x0a);
	assert_int_equal(a.buf[4], 100);
	assert_memory_equal(a.buf + 5, data, sizeof(data));
	aml_free(&a);

	/* Method(_STA, 0, NotSerialized) { Return (0x0F) } */
	aml_init(&a);
	aml_method_begin(&a, "_STA", 0, false, 0);
	aml_return(&a);
	aml_integer(&a, 0x0f);
	aml_end(&a);
	assert_int_equal(aml_finish(&a), 0);
	assert_int_equal(a.len, 10);
	assert_memory_equal(a.buf, "\x14\x09_STA\x00\xa4\x0a\x0f", 10);
	aml_free(&a);

	aml_init(&a);
	aml_method_begin(&a, "_PRT", 2, true, 3);
	aml_end(&a);
	assert_int_equal(a.buf[6], 0x3a);
	aml_free(&a);
}

static void test_resource_template(void **state)
{
	struct aml a;
	size_t n;

	(void)state;
	aml_init(&a);
	aml_rt_begin(&a);
	aml_rt_io(&a, true, 0x3f8, 0x3f8, 0, 8);
	aml_rt_irq_noflags(&a, 4);
	aml_rt_qword_space(&a, AML_RES_TYPE_MEMORY, AML_RES_MIN_FIXED | AML_RES_MAX_FIXED,
			   AML_MEM_RW | AML_MEM_PREFETCHABLE, 0x100000000ULL, 0x1ffffffffULL);
	aml_end(&a);
	assert_int_equal(aml_finish(&a), 0);

	/* IO, IRQ, QWord, End Tag: 59 bytes, so the PkgLength (62) still takes one byte. */
	n = 8 + 3 + 46 + 2;
	assert_int_equal(a.buf[0], 0x11);
	assert_int_equal(a.buf[1], 1 + 2 + n);
	assert_int_equal(a.buf[2], 0x0a);
	assert_int_equal(a.buf[3], n);
	assert_int_equal(a.len, 4 + n);
	assert_memory_equal(a.buf + 4, "\x47\x01\xf8\x03\xf8\x03\x00\x08", 8);
	assert_int_equal(a.buf[4 + 8], 0x22);
	assert_int_equal(le16(a.buf + 4 + 9), 1u << 4);
	check_space(a.buf + 4 + 11, 0x8a, 0, 0x07, 0x100000000ULL, 0x1ffffffffULL);
	assert_int_equal(a.buf[a.len - 2], 0x79);
	assert_int_equal(sum8(a.buf + 4, n), 0);
	aml_free(&a);
}

static void test_builder_errors(void **state)
{
	struct aml a;

	(void)state;
	aml_init(&a);
	aml_scope_begin(&a, "\\_SB");
	assert_int_equal(aml_finish(&a), -EINVAL); /* unclosed */
	aml_end(&a);
	assert_int_equal(aml_finish(&a), 0);
	aml_end(&a); /* nothing open */
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_free(&a);

	aml_init(&a);
	for (int i = 0; i < AML_MAX_DEPTH + 1; i++)
		aml_scope_begin(&a, "S");
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_free(&a);

	aml_init(&a);
	aml_package_begin(&a, 256);
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_free(&a);

	aml_init(&a);
	aml_rt_begin(&a);
	aml_rt_irq_noflags(&a, 16);
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_free(&a);

	aml_init(&a);
	aml_rt_begin(&a);
	aml_rt_word_space(&a, AML_RES_TYPE_IO, 0, 0, 10, 9);
	assert_int_equal(aml_finish(&a), -EINVAL);
	aml_free(&a);
	aml_free(&a); /* twice is fine */
}

/* ------------------------------------------------------------------ */
/* iasl                                                                */

static bool find_iasl(char *out, size_t outsz)
{
	const char *path = getenv("PATH");
	char dir[512];

	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		if (n > 0 && n < sizeof(dir)) {
			memcpy(dir, path, n);
			dir[n] = 0;
			if ((size_t)snprintf(out, outsz, "%s/iasl", dir) < outsz &&
			    access(out, X_OK) == 0)
				return true;
		}
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

/* Run iasl with @args in @dir, output to @dir/iasl.log; returns its exit status. */
static int run_iasl(const char *iasl, const char *dir, const char *const args[], char *log,
		    size_t logsz)
{
	char logpath[600];
	const char *argv[8];
	unsigned int n = 0;
	FILE *fp;
	pid_t pid;
	int status;
	size_t got;

	snprintf(logpath, sizeof(logpath), "%s/iasl.log", dir);
	argv[n++] = iasl;
	for (; args[n - 1] && n < 7; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fd < 0 || chdir(dir) < 0)
			_exit(126);
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
		execv(iasl, (char *const *)argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	fp = fopen(logpath, "r");
	assert_non_null(fp);
	got = fread(log, 1, logsz - 1, fp);
	log[got] = 0;
	fclose(fp);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_file(const char *dir, const char *name, const void *p, size_t len)
{
	char path[600];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

static size_t read_whole(const char *dir, const char *name, void *buf, size_t max)
{
	char path[600];
	size_t got;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "rb");
	if (!fp)
		fail_msg("cannot open %s", path);
	got = fread(buf, 1, max - 1, fp);
	((char *)buf)[got] = 0;
	fclose(fp);
	return got;
}

/*
 * Each table goes through iasl twice: disassembled (-d), then the
 * disassembly compiled back. Both must pass without errors or warnings, and
 * the recompiled table must equal ours byte for byte, except for the
 * checksum and the compiler id/revision that iasl puts in the header.
 */
static void test_iasl(void **state)
{
	struct fixture *f = *state;
	static char log[65536], dsl[65536];
	static uint8_t again[65536];
	const char *tmp = getenv("TMPDIR");
	char iasl[600], dir[512], name[64], out[64];
	struct {
		const char *base;
		uint64_t gpa;
	} tables[5];
	unsigned int n = 0, nendtags = 0;

	if (!find_iasl(iasl, sizeof(iasl))) {
		fprintf(stderr, "iasl not found (install acpica-tools): skipping\n");
		skip();
	}
	find_tables(f);
	/* (iasl cannot read an RSDP from a file: it has no table header.) */
	tables[n].base = "xsdt";
	tables[n++].gpa = f->xsdt;
	tables[n].base = "facp";
	tables[n++].gpa = f->fadt;
	tables[n].base = "apic";
	tables[n++].gpa = f->madt;
	tables[n].base = "mcfg";
	tables[n++].gpa = f->mcfg;
	tables[n].base = "dsdt";
	tables[n++].gpa = f->dsdt;

	snprintf(dir, sizeof(dir), "%s/libvmm-acpi-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(f->tmpdir, sizeof(f->tmpdir), "%s", dir);

	for (unsigned int i = 0; i < n; i++) {
		uint32_t len = le32(at(f, tables[i].gpa + 4, 4));
		const uint8_t *t = at(f, tables[i].gpa, len);
		size_t got;
		int rc;

		snprintf(name, sizeof(name), "%s.dat", tables[i].base);
		write_file(dir, name, t, len);
		{
			const char *args[] = {"-d", name, NULL};

			rc = run_iasl(iasl, dir, args, log, sizeof(log));
			if (rc != 0 || strstr(log, "Error") || strstr(log, "Warning") ||
			    strstr(log, "Invalid"))
				fail_msg("iasl -d %s (exit %d):\n%s", name, rc, log);
		}
		snprintf(name, sizeof(name), "%s.dsl", tables[i].base);
		snprintf(out, sizeof(out), "%s2", tables[i].base);
		{
			const char *args[] = {"-p", out, name, NULL};

			rc = run_iasl(iasl, dir, args, log, sizeof(log));
			if (rc != 0 || !strstr(log, " 0 Errors") || !strstr(log, " 0 Warnings"))
				fail_msg("iasl %s (exit %d):\n%s", name, rc, log);
		}
		snprintf(name, sizeof(name), "%s2.aml", tables[i].base);
		got = read_whole(dir, name, again, sizeof(again));
		assert_int_equal(got, len);
		assert_memory_equal(again, t, 9);		  /* signature .. revision */
		assert_memory_equal(again + 10, t + 10, 28 - 10); /* OEM fields */
		/*
		 * The table itself. iasl leaves the End Tag checksum of a
		 * resource template 0 ("valid"); ours is the real sum.
		 */
		for (uint32_t b = 36; b < len; b++) {
			if (again[b] == t[b])
				continue;
			if (!(again[b] == 0 && t[b - 1] == 0x79 && !strcmp(tables[i].base, "dsdt")))
				fail_msg("%s byte %u: iasl %#x, ours %#x", tables[i].base, b,
					 again[b], t[b]);
			nendtags++;
		}
	}

	assert_true(nendtags <= 3); /* PCI0, MBRD and COM1 _CRS */

	/* The DSDT's disassembly names what it should hold. */
	read_whole(dir, "dsdt.dsl", dsl, sizeof(dsl));
	assert_non_null(strstr(dsl, "Name (_S5, Package (0x04)"));
	assert_non_null(strstr(dsl, "EisaId (\"PNP0A08\")"));
	assert_non_null(strstr(dsl, "EisaId (\"PNP0A03\")"));
	assert_non_null(strstr(dsl, "EisaId (\"PNP0501\")"));
	assert_non_null(strstr(dsl, "WordBusNumber (ResourceProducer, MinFixed, MaxFixed"));
	assert_non_null(strstr(dsl, "DWordMemory (ResourceProducer, PosDecode, MinFixed, "
				    "MaxFixed, NonCacheable, ReadWrite"));
	assert_non_null(strstr(dsl, "IRQNoFlags ()"));
}

/* ------------------------------------------------------------------ */

static struct fixture fx1 = {.ncpus = 1};
static struct fixture fx4 = {.ncpus = 4};
static struct fixture fx64 = {.ncpus = 64};

/* Like cmocka_unit_test_prestate_setup_teardown(), named after the CPU count too. */
/* clang-format off */
#define BUILT(fn, fx) { #fn "/" #fx, fn, build_setup, build_teardown, &fx }
/* clang-format on */
#define BUILT_ALL(fn) BUILT(fn, fx1), BUILT(fn, fx4), BUILT(fn, fx64)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_checksum),
		BUILT_ALL(test_rsdp),
		BUILT_ALL(test_tables_checksums_and_layout),
		BUILT_ALL(test_fadt),
		BUILT_ALL(test_madt),
		BUILT_ALL(test_mcfg),
		BUILT_ALL(test_dsdt_s5),
		BUILT_ALL(test_dsdt_devices),
		BUILT(test_iasl, fx1),
		BUILT(test_iasl, fx64),
		cmocka_unit_test(test_zero_cpus),
		cmocka_unit_test(test_too_many_cpus),
		cmocka_unit_test(test_ram_too_small),
		cmocka_unit_test(test_x2apic),
		cmocka_unit_test(test_pkglength_encode),
		cmocka_unit_test(test_pkglength_size),
		cmocka_unit_test(test_pkglength_in_builder),
		cmocka_unit_test(test_nested_pkglength),
		cmocka_unit_test(test_name_strings),
		cmocka_unit_test(test_integers),
		cmocka_unit_test(test_eisaid),
		cmocka_unit_test(test_package_buffer_method),
		cmocka_unit_test(test_resource_template),
		cmocka_unit_test(test_builder_errors),
	};

	return cmocka_run_group_tests_name("acpi", tests, NULL, NULL);
}
