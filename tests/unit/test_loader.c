/* Unit tests for the ELF64 and bzImage loaders, file reads and initrd placement. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/layout.h"
#include "lib/loader/kernel.h"
#include "lib/memory.h"
#include "boot_test_util.h"

static char tmpdir[64];

/* Copy @size bytes into an exact-size heap block so ASan sees any overread. */
static uint8_t *dup_exact(const uint8_t *p, size_t size)
{
	uint8_t *q = malloc(size ? size : 1);

	assert_non_null(q);
	if (size)
		memcpy(q, p, size);
	return q;
}

/* ---- The image under test ------------------------------------------------ */

/*
 * The kernel image a test loads: the per-test setups build the usual one, a
 * test may build another in its place, and image_free() (the teardown) frees
 * it, also when the test fails half-way.
 */
static uint8_t *img;
static size_t img_size;

/* Replace the image with @size zero bytes. */
static uint8_t *new_image(size_t size)
{
	free(img);
	img = calloc(1, size);
	assert_non_null(img);
	img_size = size;
	return img;
}

static int image_free(void **state)
{
	free(img);
	img = NULL;
	img_size = 0;
	return 0;
}

/* @load applied to an exact-size copy of the image's first @size bytes. */
static int load_prefix(int (*load)(struct guest_mem *, const uint8_t *, size_t,
				   struct kernel_image *, struct vmm_err *),
		       size_t size, struct kernel_image *k)
{
	uint8_t *copy = dup_exact(img, size);
	int ret = load(&gm, copy, size, k, &err);

	free(copy);
	return ret;
}

/*
 * kernel_load() refuses every proper prefix of the image with -ENOEXEC and a
 * one-line message, and loads nothing from any of them.
 */
static void refuse_every_prefix(void)
{
	struct kernel_image k;

	for (size_t cut = 0; cut < img_size; cut++) {
		int ret = load_prefix(kernel_load, cut, &k);

		if (ret != -ENOEXEC)
			fail_msg("cut at %zu: ret %d (%s)", cut, ret, err.msg);
		assert_true(err.msg[0] != '\0');
		assert_null(strchr(err.msg, '\n'));
	}
	assert_int_equal(ram[MiB(1)], POISON);
}

/* ---- ELF images ---------------------------------------------------------- */

struct seg {
	uint32_t type;
	uint64_t paddr, vaddr, filesz, memsz;
};

/* A valid ELF64 x86-64 ET_EXEC header whose @phnum program headers follow it. */
static void elf_header(Elf64_Ehdr *eh, uint64_t entry, uint16_t phentsize, uint16_t phnum)
{
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = entry;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = phentsize;
	eh->e_phnum = phnum;
}

/*
 * The image becomes an ELF64 x86-64 ET_EXEC: header, @n program headers,
 * then each segment's file bytes (filled with 0x10 + index) back to back.
 */
static void build_elf(const struct seg *s, unsigned int n, uint64_t entry)
{
	size_t off = sizeof(Elf64_Ehdr) + n * sizeof(Elf64_Phdr), total = off;

	for (unsigned int i = 0; i < n; i++)
		total += s[i].filesz;
	new_image(total);
	elf_header((Elf64_Ehdr *)img, entry, sizeof(Elf64_Phdr), (uint16_t)n);
	for (unsigned int i = 0; i < n; i++) {
		Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(Elf64_Ehdr)) + i;

		ph->p_type = s[i].type;
		ph->p_flags = PF_R | PF_X;
		ph->p_offset = off;
		ph->p_vaddr = s[i].vaddr;
		ph->p_paddr = s[i].paddr;
		ph->p_filesz = s[i].filesz;
		ph->p_memsz = s[i].memsz;
		ph->p_align = 0x1000;
		memset(img + off, 0x10 + (int)i, s[i].filesz);
		off += s[i].filesz;
	}
}

static Elf64_Ehdr *ehdr(void)
{
	return (Elf64_Ehdr *)img;
}

static Elf64_Phdr *phdr(unsigned int i)
{
	return (Elf64_Phdr *)(img + sizeof(Elf64_Ehdr)) + i;
}

/* Two segments: text+bss at 1 MiB and data at 2 MiB, entry at 1 MiB + 0x10. */
static const struct seg two_segs[] = {
	{PT_LOAD, MiB(1), MiB(1), 0x1000, 0x3000},
	{PT_LOAD, MiB(2), MiB(2), 0x800, 0x800},
};

static void two_seg_elf(void)
{
	build_elf(two_segs, 2, MiB(1) + 0x10);
}

/* Per-test setup of the ELF tests: poisoned RAM and the two-segment image. */
static int elf_setup(void **state)
{
	fake_ram_reset(state);
	two_seg_elf();
	return 0;
}

/* elf_load() of the image's first @size bytes. */
static int load_elf(size_t size, struct kernel_image *k)
{
	return load_prefix(elf_load, size, k);
}

static void test_elf_valid(void **state)
{
	struct kernel_image k;

	assert_int_equal(kernel_load(&gm, img, img_size, &k, &err), 0);
	assert_int_equal(k.kind, KERNEL_ELF);
	assert_int_equal(k.entry, MiB(1) + 0x10);
	assert_int_equal(k.load_start, MiB(1));
	assert_int_equal(k.load_end, MiB(2) + 0x800);
	assert_int_equal(k.cmdline_max, 2047);
	assert_int_equal(k.initrd_addr_max, RAM_SIZE - 1);
	assert_int_equal(k.protocol, 0);
	for (size_t i = 0; i < 0x1000; i++)
		assert_int_equal(ram[MiB(1) + i], 0x10);
	for (size_t i = 0x1000; i < 0x3000; i++) /* bss zeroed */
		assert_int_equal(ram[MiB(1) + i], 0);
	assert_int_equal(ram[MiB(1) + 0x3000], POISON);
	assert_int_equal(ram[MiB(1) - 1], POISON);
	for (size_t i = 0; i < 0x800; i++)
		assert_int_equal(ram[MiB(2) + i], 0x11);
	assert_int_equal(ram[MiB(2) + 0x800], POISON);
}

/* Linux vmlinux: virtual 0xffffffff81000000, physical 16 MiB, e_entry virtual. */
static void test_elf_virtual_entry(void **state)
{
	static const struct seg s[] = {
		{PT_NOTE, 0, 0, 0x20, 0x20},
		{PT_LOAD, MiB(16), 0xffffffff81000000ULL, 0x2000, 0x4000},
		{PT_LOAD, MiB(20), 0, 0x100, 0x100}, /* percpu: vaddr 0 */
	};
	struct kernel_image k;

	build_elf(s, 3, 0xffffffff81000123ULL);
	assert_int_equal(load_elf(img_size, &k), 0);
	assert_int_equal(k.entry, MiB(16) + 0x123);
	assert_int_equal(k.load_start, MiB(16));
	assert_int_equal(k.load_end, MiB(20) + 0x100);
	assert_int_equal(ram[MiB(16)], 0x11);
	assert_int_equal(ram[MiB(16) + 0x3fff], 0);
	assert_int_equal(ram[MiB(20)], 0x12);

	/* A physical entry is used as is. */
	ehdr()->e_entry = MiB(16) + 0x200;
	assert_int_equal(load_elf(img_size, &k), 0);
	assert_int_equal(k.entry, MiB(16) + 0x200);
}

static void test_elf_truncated_everywhere(void **state)
{
	struct kernel_image k;

	refuse_every_prefix();

	assert_int_equal(load_elf(40, &k), -ENOEXEC);
	expect_msg("ELF header truncated");
	assert_int_equal(load_elf(64 + 56 + 20, &k), -ENOEXEC);
	expect_msg("kernel: ELF program header 1 lies outside the file");
	assert_int_equal(load_elf(img_size - 1, &k), -ENOEXEC);
	expect_msg("ELF segment 1");
	expect_msg("lies outside the file");
}

static void test_elf_bad_ident(void **state)
{
	struct kernel_image k;

	img[EI_CLASS] = ELFCLASS32;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("ELFCLASS32");
	img[EI_CLASS] = 7;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("class 7");
	img[EI_CLASS] = ELFCLASS64;

	img[EI_DATA] = ELFDATA2MSB;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("little endian");
	img[EI_DATA] = ELFDATA2LSB;

	img[EI_VERSION] = 0;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("version");
	img[EI_VERSION] = EV_CURRENT;

	img[1] = 'e';
	assert_int_equal(elf_load(&gm, img, img_size, &k, &err), -ENOEXEC);
	expect_msg("bad magic");
	assert_int_equal(kernel_load(&gm, img, img_size, &k, &err), -ENOEXEC);
	expect_msg("kernel: not an ELF64 vmlinux or bzImage");
	img[1] = 'E';

	assert_int_equal(load_elf(img_size, &k), 0);
}

static void test_elf_bad_machine_type(void **state)
{
	struct kernel_image k;

	ehdr()->e_machine = EM_386;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("machine 3");
	ehdr()->e_machine = EM_AARCH64;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("EM_X86_64");
	ehdr()->e_machine = EM_X86_64;

	ehdr()->e_type = ET_DYN;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("ET_DYN");
	ehdr()->e_type = ET_REL;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("ET_EXEC");
	ehdr()->e_type = ET_CORE;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	ehdr()->e_type = ET_EXEC;
	assert_int_equal(ram[MiB(1)], POISON);
}

static void test_elf_phdr_table_bounds(void **state)
{
	struct kernel_image k;
	Elf64_Ehdr *eh = ehdr();

	eh->e_phoff = UINT64_MAX - 10;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("program header 0 lies outside the file");
	eh->e_phoff = UINT64_MAX;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	eh->e_phoff = img_size;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	eh->e_phoff = img_size - 55;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	eh->e_phoff = sizeof(Elf64_Ehdr);

	eh->e_phnum = 0xfffe; /* table runs far past the end */
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("lies outside the file");
	eh->e_phnum = PN_XNUM;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("PN_XNUM");
	eh->e_phnum = 0;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("no program headers");
	eh->e_phnum = 2;

	eh->e_phentsize = 16;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("e_phentsize 16");
	eh->e_phentsize = 0;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	eh->e_phentsize = 0xffff; /* header 1 would start far away */
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("program header 1 lies outside the file");
	eh->e_phentsize = sizeof(Elf64_Phdr);

	assert_int_equal(load_elf(img_size, &k), 0);
}

/* A larger e_phentsize (allowed by the ELF spec) is honoured. */
static void test_elf_large_phentsize(void **state)
{
	const size_t ent = 64, nph = 2, data = 0x100;
	struct kernel_image k;
	Elf64_Phdr ph = {0};

	new_image(sizeof(Elf64_Ehdr) + nph * ent + data);
	elf_header(ehdr(), MiB(3), (uint16_t)ent, (uint16_t)nph);
	ph.p_type = PT_NOTE;
	memcpy(img + sizeof(Elf64_Ehdr), &ph, sizeof(ph));
	ph.p_type = PT_LOAD;
	ph.p_offset = img_size - data;
	ph.p_paddr = MiB(3);
	ph.p_filesz = data;
	ph.p_memsz = data;
	memcpy(img + sizeof(Elf64_Ehdr) + ent, &ph, sizeof(ph));
	memset(img + img_size - data, 0x5a, data);
	assert_int_equal(load_elf(img_size, &k), 0);
	assert_int_equal(k.entry, MiB(3));
	assert_int_equal(ram[MiB(3) + data - 1], 0x5a);
}

static void test_elf_segment_checks(void **state)
{
	struct kernel_image k;
	Elf64_Phdr *p1 = phdr(1);

	/* p_filesz > p_memsz */
	p1->p_memsz = 0x7ff;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("segment 1 has p_filesz 0x800 larger than p_memsz 0x7ff");
	p1->p_memsz = 0x800;

	/* p_offset + p_filesz past the file, and overflowing */
	p1->p_offset = img_size - 0x7ff;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("outside the file");
	p1->p_offset = UINT64_MAX - 0x10;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	p1->p_offset = img_size - 0x800;
	p1->p_filesz = UINT64_MAX;
	p1->p_memsz = UINT64_MAX;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	p1->p_filesz = 0x800;
	p1->p_memsz = 0x800;

	/* Outside guest RAM: does not fit. */
	p1->p_paddr = RAM_SIZE - 0x400;
	assert_int_equal(load_elf(img_size, &k), -E2BIG);
	expect_msg("segment 1");
	expect_msg("outside guest RAM (64 MiB)");
	p1->p_paddr = GiB(1);
	assert_int_equal(load_elf(img_size, &k), -E2BIG);

	/* p_paddr + p_memsz wrapping 64 bits, and absurd addresses. */
	p1->p_paddr = UINT64_MAX - 0x3ff;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("wraps around");
	p1->p_paddr = UINT64_MAX - 0x7ff; /* ends exactly at 2^64 */
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	p1->p_paddr = 1ULL << 60;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("beyond any physical address");
	p1->p_paddr = MiB(2);

	/* Nothing was copied by any failed load: segment 0 is still poison. */
	assert_int_equal(ram[MiB(1)], POISON);
	assert_int_equal(load_elf(img_size, &k), 0);
}

static void test_elf_no_load(void **state)
{
	static const struct seg notes[] = {
		{PT_NOTE, MiB(1), MiB(1), 0x10, 0x10},
		{PT_GNU_STACK, 0, 0, 0, 0},
	};
	static const struct seg empty[] = {
		{PT_LOAD, MiB(1), MiB(1), 0, 0},
	};
	struct kernel_image k;

	build_elf(notes, 2, MiB(1));
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("no loadable (PT_LOAD) segment");
	build_elf(empty, 1, MiB(1));
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("no loadable");
}

static void test_elf_entry_outside(void **state)
{
	struct kernel_image k;

	ehdr()->e_entry = MiB(1) + 0x3000; /* one past segment 0's bss */
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	expect_msg("entry point 0x103000 lies outside every loaded segment");
	ehdr()->e_entry = 0;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	ehdr()->e_entry = UINT64_MAX;
	assert_int_equal(load_elf(img_size, &k), -ENOEXEC);
	ehdr()->e_entry = MiB(1) + 0x2fff; /* last bss byte: fine */
	assert_int_equal(load_elf(img_size, &k), 0);
	assert_int_equal(k.entry, MiB(1) + 0x2fff);
}

/* ---- bzImage ------------------------------------------------------------- */

struct bz_opts {
	uint8_t setup_sects; /* as stored; 0 means 4 */
	size_t code_size;
	uint16_t version;
	uint16_t xloadflags;
	uint8_t loadflags;
	uint8_t relocatable;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t cmdline_size;
	uint32_t initrd_addr_max;
};

static struct bz_opts bz_default(void)
{
	return (struct bz_opts){
		.setup_sects = 4,
		.code_size = 0x3000,
		.version = 0x020f,
		.xloadflags = 0x3, /* XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G */
		.loadflags = 0x01, /* LOADED_HIGH */
		.relocatable = 0,
		.pref_address = 0,
		.init_size = MiB(1),
		.cmdline_size = 0xfff,
		.initrd_addr_max = 0x7fffffff,
	};
}

/* Byte @i of the protected-mode code. */
static uint8_t code_byte(size_t i)
{
	return (uint8_t)(i * 7 + 3);
}

/*
 * The image becomes a bzImage as @o says. Its header is written from the boot
 * protocol (Documentation/arch/x86/boot.rst) with put_le(), not with anything
 * of the library's: an expectation of its own.
 */
static void build_bz(const struct bz_opts *o)
{
	unsigned int sects = o->setup_sects ? o->setup_sects : 4;
	size_t off = (sects + 1) * 512;

	new_image(off + o->code_size);
	for (size_t i = 0; i < off; i++) /* setup code: junk */
		img[i] = (uint8_t)(i ^ 0xa5);
	memset(img + 0x1f1, 0, 0x26c - 0x1f1);
	img[0x1f1] = o->setup_sects;
	put_le(img + 0x1f4, (uint32_t)(o->code_size / 16), 4); /* syssize */
	put_le(img + 0x1fa, 0xfffd, 2);			       /* vid_mode */
	put_le(img + 0x1fe, 0xAA55, 2);
	img[0x200] = 0xeb;
	img[0x201] = 0x26c - 0x202; /* header ends after kernel_info_offset */
	memcpy(img + 0x202, "HdrS", 4);
	put_le(img + 0x206, o->version, 2);
	img[0x211] = o->loadflags;
	put_le(img + 0x214, 0x100000, 4); /* code32_start */
	put_le(img + 0x22c, o->initrd_addr_max, 4);
	put_le(img + 0x230, MiB(2), 4); /* kernel_alignment */
	img[0x234] = o->relocatable;
	img[0x235] = 21;
	put_le(img + 0x236, o->xloadflags, 2);
	put_le(img + 0x238, o->cmdline_size, 4);
	put_le(img + 0x258, o->pref_address, 8);
	put_le(img + 0x260, o->init_size, 4);
	put_le(img + 0x268, 0x1234, 4); /* kernel_info_offset: past SETUP_HDR_MAX */
	for (size_t i = 0; i < o->code_size; i++)
		img[off + i] = code_byte(i);
}

/* Per-test setup of the bzImage tests: poisoned RAM and the default image. */
static int bz_setup(void **state)
{
	struct bz_opts o = bz_default();

	fake_ram_reset(state);
	build_bz(&o);
	return 0;
}

/* kernel_load() of the image's first @size bytes. */
static int load_bz(size_t size, struct kernel_image *k)
{
	return load_prefix(kernel_load, size, k);
}

static void test_bz_valid(void **state)
{
	const size_t code_size = bz_default().code_size;
	struct kernel_image k;

	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.kind, KERNEL_BZIMAGE);
	assert_int_equal(k.protocol, 0x020f);
	assert_int_equal(k.entry, MiB(1) + 0x200);
	assert_int_equal(k.load_start, MiB(1));
	assert_int_equal(k.load_end, MiB(2)); /* init_size */
	assert_int_equal(k.cmdline_max, 0xfff);
	assert_int_equal(k.initrd_addr_max, RAM_SIZE - 1); /* clamped to RAM */
	for (size_t i = 0; i < code_size; i++)
		assert_int_equal(ram[MiB(1) + i], code_byte(i));
	assert_int_equal(ram[MiB(1) + code_size], POISON);
	assert_int_equal(ram[MiB(1) - 1], POISON);

	/* The header is 0x1f1..0x26c; the copy stops at SETUP_HDR_MAX. */
	assert_int_equal(k.setup_hdr_len, SETUP_HDR_MAX);
	assert_memory_equal(k.setup_hdr, img + 0x1f1, SETUP_HDR_MAX);

	/* A lower initrd_addr_max is kept as is. */
	put_le(img + 0x22c, 0x1ffffff, 4);
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.initrd_addr_max, 0x1ffffff);

	/* A short header (per the jump byte) is copied only as far as it goes. */
	img[0x201] = 0x236 - 0x202;
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.setup_hdr_len, 0x236 - 0x1f1);
}

static void test_bz_setup_sects_zero(void **state)
{
	struct bz_opts o = bz_default();
	struct kernel_image k;

	o.setup_sects = 0;
	build_bz(&o);
	assert_int_equal(img_size, 5 * 512 + o.code_size);
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(ram[MiB(1)], code_byte(0));
	assert_int_equal(ram[MiB(1) + 1], code_byte(1));

	o.setup_sects = 30;
	build_bz(&o);
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(ram[MiB(1) + 0x123], code_byte(0x123));
}

static void test_bz_bad_magic(void **state)
{
	struct kernel_image k;

	img[0x205] = 'T';
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("kernel: not an ELF64 vmlinux or bzImage");
	expect_msg("boot sector without");
	assert_int_equal(bzimage_load(&gm, img, img_size, &k, &err), -ENOEXEC);
	expect_msg("HdrS");
	img[0x205] = 'S';
	img[0x1fe] = 0;
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("bad magic");
	assert_int_equal(bzimage_load(&gm, img, img_size, &k, &err), -ENOEXEC);
	img[0x1fe] = 0x55;
	assert_int_equal(ram[MiB(1)], POISON);
}

static void test_bz_protocol(void **state)
{
	struct kernel_image k;

	put_le(img + 0x206, 0x0205, 2);
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("boot protocol 2.05 is too old");
	put_le(img + 0x206, 0x0200, 2);
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("2.00 is too old");
	put_le(img + 0x206, 0x020a, 2);
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("bzImage has no 64-bit entry point");
	expect_msg("2.10");
	put_le(img + 0x206, 0x020c, 2);
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.protocol, 0x020c);

	/* No XLF_KERNEL_64. */
	put_le(img + 0x236, 0x2, 2);
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("bzImage has no 64-bit entry point");
	expect_msg("XLF_KERNEL_64");
	put_le(img + 0x236, 0x3, 2);

	/* Not LOADED_HIGH. */
	img[0x211] = 0x80;
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("LOADED_HIGH");
}

static void test_bz_setup_sects_past_eof(void **state)
{
	struct bz_opts o = bz_default();
	struct kernel_image k;

	o.code_size = 4096 - 5 * 512;
	build_bz(&o);
	assert_int_equal(img_size, 4096);
	img[0x1f1] = 200;
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	assert_string_equal(err.msg, "kernel: bzImage setup_sects 200 runs past the end of the "
				     "file (4096 bytes)");
	img[0x1f1] = 255;
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("setup_sects 255");
}

static void test_bz_empty_payload(void **state)
{
	struct bz_opts o = bz_default();
	struct kernel_image k;

	o.code_size = 0;
	build_bz(&o);
	assert_int_equal(img_size, 5 * 512);
	assert_int_equal(load_bz(img_size, &k), -ENOEXEC);
	expect_msg("no protected-mode code");
}

static void test_bz_truncated_everywhere(void **state)
{
	struct bz_opts o = bz_default();
	struct kernel_image k;

	refuse_every_prefix();
	assert_int_equal(load_bz(img_size - 16, &k), -ENOEXEC);
	expect_msg("truncated");
	expect_msg("syssize");
	/* Extra bytes after the payload (e.g. a signature) are fine. */
	o.code_size += 0x100;
	build_bz(&o);
	put_le(img + 0x1f4, 0x3000 / 16, 4);
	assert_int_equal(load_bz(img_size, &k), 0);
}

static void test_bz_init_size_too_big(void **state)
{
	struct bz_opts o = bz_default();
	struct kernel_image k;

	o.init_size = MiB(128);
	build_bz(&o);
	assert_int_equal(load_bz(img_size, &k), -E2BIG);
	assert_string_equal(err.msg, "kernel needs 128 MiB of memory at 0x100000 but the guest "
				     "has 64 MiB");
	/* Exactly to the end of RAM is fine. */
	put_le(img + 0x260, (uint32_t)(RAM_SIZE - MiB(1)), 4);
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.load_end, RAM_SIZE);
	put_le(img + 0x260, (uint32_t)(RAM_SIZE - MiB(1) + 1), 4);
	assert_int_equal(load_bz(img_size, &k), -E2BIG);
	put_le(img + 0x260, UINT32_MAX, 4);
	assert_int_equal(load_bz(img_size, &k), -E2BIG);
	expect_msg("4096 MiB");
}

static void test_bz_relocatable(void **state)
{
	struct bz_opts o = bz_default();
	struct kernel_image k;

	o.relocatable = 1;
	o.pref_address = MiB(16);
	o.init_size = MiB(8);
	build_bz(&o);
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.load_start, MiB(16));
	assert_int_equal(k.load_end, MiB(24));
	assert_int_equal(k.entry, MiB(16) + 0x200);
	assert_int_equal(ram[MiB(16) + 5], code_byte(5));
	assert_int_equal(ram[MiB(1)], POISON);

	/* pref_address + init_size beyond RAM: fall back to 1 MiB. */
	memset(ram, POISON, RAM_SIZE);
	put_le(img + 0x258, MiB(60), 8);
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.entry, MiB(1) + 0x200);
	assert_int_equal(ram[MiB(1) + 5], code_byte(5));
	put_le(img + 0x258, UINT64_MAX - 0x1000, 8); /* overflowing */
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.entry, MiB(1) + 0x200);
	put_le(img + 0x258, 0x1000, 8); /* below 1 MiB: ignored */
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.entry, MiB(1) + 0x200);

	/* Not relocatable: pref_address is ignored. */
	put_le(img + 0x258, MiB(16), 8);
	img[0x234] = 0;
	assert_int_equal(load_bz(img_size, &k), 0);
	assert_int_equal(k.entry, MiB(1) + 0x200);
}

/* ---- kernel_load detection ------------------------------------------------ */

static void test_detect_junk(void **state)
{
	static const uint8_t tiny[3] = {0x7f, 'E', 'L'};
	static const uint8_t gz[64] = {0x1f, 0x8b, 0x08};
	const char *text = "#!/bin/sh\necho this is not a kernel\n";
	struct kernel_image k;
	uint8_t *p;

	p = dup_exact(tiny, 0);
	assert_int_equal(kernel_load(&gm, p, 0, &k, &err), -ENOEXEC);
	expect_msg("empty");
	free(p);
	p = dup_exact(tiny, sizeof(tiny));
	assert_int_equal(kernel_load(&gm, p, sizeof(tiny), &k, &err), -ENOEXEC);
	expect_msg("kernel: not an ELF64 vmlinux or bzImage");
	expect_msg("3 bytes");
	free(p);
	p = dup_exact((const uint8_t *)text, strlen(text));
	assert_int_equal(kernel_load(&gm, p, strlen(text), &k, &err), -ENOEXEC);
	expect_msg("text file");
	free(p);
	p = dup_exact(gz, sizeof(gz));
	assert_int_equal(kernel_load(&gm, p, sizeof(gz), &k, &err), -ENOEXEC);
	expect_msg("gzip");
	free(p);
	/* Just "\x7fELF": goes to the ELF loader, which says what is missing. */
	p = dup_exact((const uint8_t *)"\x7f"
				       "ELF",
		      4);
	assert_int_equal(kernel_load(&gm, p, 4, &k, &err), -ENOEXEC);
	expect_msg("ELF header truncated");
	free(p);
}

/* ---- initrd -------------------------------------------------------------- */

static struct kernel_image initrd_kernel(uint64_t load_end, uint64_t initrd_max)
{
	struct kernel_image k;

	memset(&k, 0, sizeof(k));
	k.kind = KERNEL_BZIMAGE;
	k.load_start = MiB(1);
	k.load_end = load_end;
	k.initrd_addr_max = initrd_max;
	return k;
}

static void test_initrd_highest(void **state)
{
	struct kernel_image k = initrd_kernel(MiB(2), RAM_SIZE - 1);
	uint8_t data[0x1234];
	uint64_t addr;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 13);
	assert_int_equal(initrd_load(&gm, &k, data, sizeof(data), &addr, &err), 0);
	assert_int_equal(addr, RAM_SIZE - 0x2000);
	assert_int_equal(addr % 4096, 0);
	assert_true(addr + sizeof(data) <= RAM_SIZE);
	assert_memory_equal(ram + addr, data, sizeof(data));

	/* A whole number of pages ends exactly at the top. */
	assert_int_equal(initrd_load(&gm, &k, data, 0x1000, &addr, &err), 0);
	assert_int_equal(addr, RAM_SIZE - 0x1000);

	/* initrd_addr_max above RAM (or "no limit") is cut to RAM. */
	k.initrd_addr_max = UINT64_MAX;
	assert_int_equal(initrd_load(&gm, &k, data, sizeof(data), &addr, &err), 0);
	assert_int_equal(addr, RAM_SIZE - 0x2000);
	k.initrd_addr_max = 0xffffffff;
	assert_int_equal(initrd_load(&gm, &k, data, sizeof(data), &addr, &err), 0);
	assert_int_equal(addr, RAM_SIZE - 0x2000);
}

static void test_initrd_addr_max(void **state)
{
	struct kernel_image k = initrd_kernel(MiB(2), MiB(32) - 1);
	uint8_t data[0x1234] = {1, 2, 3};
	uint64_t addr;

	assert_int_equal(initrd_load(&gm, &k, data, sizeof(data), &addr, &err), 0);
	assert_int_equal(addr, MiB(32) - 0x2000);
	/* An unaligned limit: the last byte is still at or below it. */
	k.initrd_addr_max = 0x1fffabc;
	assert_int_equal(initrd_load(&gm, &k, data, sizeof(data), &addr, &err), 0);
	assert_int_equal(addr % 4096, 0);
	assert_true(addr + sizeof(data) - 1 <= 0x1fffabc);
	assert_int_equal(addr, 0x1ffe000);
	assert_memory_equal(ram + addr, data, sizeof(data));
}

static void test_initrd_too_big(void **state)
{
	struct kernel_image k = initrd_kernel(MiB(2), RAM_SIZE - 1);
	size_t big = RAM_SIZE - MiB(2);
	uint8_t *data = calloc(1, big + 0x1000);
	uint64_t addr = 123;

	assert_non_null(data);
	/* Exactly the room between the kernel and the end of RAM. */
	assert_int_equal(initrd_load(&gm, &k, data, big, &addr, &err), 0);
	assert_int_equal(addr, MiB(2));
	/* One byte more no longer fits. */
	assert_int_equal(initrd_load(&gm, &k, data, big + 1, &addr, &err), -E2BIG);
	expect_msg("initrd (63 MiB) does not fit in guest memory (64 MiB");
	/* An unaligned kernel end rounds the lowest start up to a page. */
	k.load_end = MiB(2) + 1;
	assert_int_equal(initrd_load(&gm, &k, data, big, &addr, &err), -E2BIG);
	assert_int_equal(initrd_load(&gm, &k, data, big - 0x1000, &addr, &err), 0);
	assert_int_equal(addr, MiB(2) + 0x1000);
	/* A small one still goes at the very top. */
	assert_int_equal(initrd_load(&gm, &k, data, 1, &addr, &err), 0);
	k.load_end = MiB(2);
	k.initrd_addr_max = MiB(10) - 1;
	assert_int_equal(initrd_load(&gm, &k, data, MiB(8) + 1, &addr, &err), -E2BIG);
	assert_int_equal(initrd_load(&gm, &k, data, MiB(8), &addr, &err), 0);
	assert_int_equal(addr, MiB(2));
	/* Kernel above the limit: no room at all. */
	k.load_end = MiB(12);
	assert_int_equal(initrd_load(&gm, &k, data, 1, &addr, &err), -E2BIG);
	expect_msg("does not fit");
	/* Kernel ending at 2^64 - 1 must not wrap. */
	k.load_end = UINT64_MAX;
	k.initrd_addr_max = UINT64_MAX;
	assert_int_equal(initrd_load(&gm, &k, data, 1, &addr, &err), -E2BIG);
	/* Low kernels still keep the initrd above 1 MiB. */
	k.load_end = 0x8000;
	k.initrd_addr_max = MiB(1) + 0xfff;
	assert_int_equal(initrd_load(&gm, &k, data, 0x1000, &addr, &err), 0);
	assert_int_equal(addr, MiB(1));
	assert_int_equal(initrd_load(&gm, &k, data, 0x1001, &addr, &err), -E2BIG);
	free(data);
}

/* ---- file_read_all ------------------------------------------------------- */

static int setup_files(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_loader.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	return fake_ram_setup(state);
}

static int teardown_files(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		return -1;
	return fake_ram_teardown(state);
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	if (len)
		assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_file_missing(void **state)
{
	char path[128];
	uint8_t *buf = (uint8_t *)1;
	size_t size = 1;

	snprintf(path, sizeof(path), "%s/nonexistent", tmpdir);
	assert_int_equal(file_read_all(path, "kernel", &buf, &size, &err), -ENOENT);
	assert_null(buf);
	assert_int_equal(size, 0);
	expect_msg("kernel ");
	expect_msg(path);
	expect_msg("No such file or directory");
}

static void test_file_directory(void **state)
{
	uint8_t *buf;
	size_t size;

	assert_int_equal(file_read_all(tmpdir, "initrd", &buf, &size, &err), -EISDIR);
	expect_msg("initrd ");
	expect_msg("is a directory");
}

static void test_file_not_regular(void **state)
{
	char path[128];
	uint8_t *buf;
	size_t size;

	assert_int_equal(file_read_all("/dev/null", "kernel", &buf, &size, &err), -EINVAL);
	expect_msg("kernel /dev/null is not a regular file");
	/* A FIFO must be refused without blocking in open(). */
	snprintf(path, sizeof(path), "%s/fifo", tmpdir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(file_read_all(path, "kernel", &buf, &size, &err), -EINVAL);
	expect_msg("not a regular file");
}

static void test_file_empty(void **state)
{
	char path[128];
	uint8_t *buf;
	size_t size;

	snprintf(path, sizeof(path), "%s/empty", tmpdir);
	write_file(path, NULL, 0);
	assert_int_equal(file_read_all(path, "kernel", &buf, &size, &err), -ENOEXEC);
	expect_msg("is empty");
	expect_msg(path);
}

static void test_file_too_big(void **state)
{
	char path[128];
	uint8_t *buf;
	size_t size;
	int fd;

	snprintf(path, sizeof(path), "%s/huge", tmpdir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)GiB(1) + 1), 0); /* sparse */
	close(fd);
	assert_int_equal(file_read_all(path, "initrd", &buf, &size, &err), -EFBIG);
	expect_msg("initrd ");
	expect_msg("files over 1024 MiB are refused");
	assert_int_equal(unlink(path), 0);
}

static void test_file_text(void **state)
{
	const char *text = "console=ttyS0\nthis is a text file, not a kernel\n";
	struct kernel_image k;
	char path[128];
	uint8_t *buf;
	size_t size;

	snprintf(path, sizeof(path), "%s/notes.txt", tmpdir);
	write_file(path, text, strlen(text));
	assert_int_equal(file_read_all(path, "kernel", &buf, &size, &err), 0);
	assert_int_equal(size, strlen(text));
	assert_memory_equal(buf, text, size);
	assert_int_equal(kernel_load(&gm, buf, size, &k, &err), -ENOEXEC);
	expect_msg("not an ELF64 vmlinux or bzImage");
	free(buf);
}

static void test_file_proc_fd(void **state)
{
	struct kernel_image k;
	char path[128];
	uint8_t *buf;
	size_t size;
	int fd;

	two_seg_elf();
	snprintf(path, sizeof(path), "%s/vmlinux", tmpdir);
	write_file(path, img, img_size);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	assert_int_equal(file_read_all(path, "kernel", &buf, &size, &err), 0);
	assert_int_equal(size, img_size);
	assert_memory_equal(buf, img, size);
	assert_int_equal(kernel_load(&gm, buf, size, &k, &err), 0);
	assert_int_equal(k.entry, MiB(1) + 0x10);
	close(fd);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest loader[] = {
		cmocka_unit_test_setup_teardown(test_elf_valid, elf_setup, image_free),
		cmocka_unit_test_setup_teardown(test_elf_virtual_entry, fake_ram_reset, image_free),
		cmocka_unit_test_setup_teardown(test_elf_truncated_everywhere, elf_setup,
						image_free),
		cmocka_unit_test_setup_teardown(test_elf_bad_ident, elf_setup, image_free),
		cmocka_unit_test_setup_teardown(test_elf_bad_machine_type, elf_setup, image_free),
		cmocka_unit_test_setup_teardown(test_elf_phdr_table_bounds, elf_setup, image_free),
		cmocka_unit_test_setup_teardown(test_elf_large_phentsize, fake_ram_reset,
						image_free),
		cmocka_unit_test_setup_teardown(test_elf_segment_checks, elf_setup, image_free),
		cmocka_unit_test_setup_teardown(test_elf_no_load, fake_ram_reset, image_free),
		cmocka_unit_test_setup_teardown(test_elf_entry_outside, elf_setup, image_free),
		cmocka_unit_test_setup_teardown(test_bz_valid, bz_setup, image_free),
		cmocka_unit_test_setup_teardown(test_bz_setup_sects_zero, fake_ram_reset,
						image_free),
		cmocka_unit_test_setup_teardown(test_bz_bad_magic, bz_setup, image_free),
		cmocka_unit_test_setup_teardown(test_bz_protocol, bz_setup, image_free),
		cmocka_unit_test_setup_teardown(test_bz_setup_sects_past_eof, fake_ram_reset,
						image_free),
		cmocka_unit_test_setup_teardown(test_bz_empty_payload, fake_ram_reset, image_free),
		cmocka_unit_test_setup_teardown(test_bz_truncated_everywhere, bz_setup, image_free),
		cmocka_unit_test_setup_teardown(test_bz_init_size_too_big, fake_ram_reset,
						image_free),
		cmocka_unit_test_setup_teardown(test_bz_relocatable, fake_ram_reset, image_free),
		cmocka_unit_test_setup(test_detect_junk, fake_ram_reset),
		cmocka_unit_test_setup(test_initrd_highest, fake_ram_reset),
		cmocka_unit_test_setup(test_initrd_addr_max, fake_ram_reset),
		cmocka_unit_test_setup(test_initrd_too_big, fake_ram_reset),
	};
	const struct CMUnitTest files[] = {
		cmocka_unit_test_setup(test_file_missing, fake_ram_reset),
		cmocka_unit_test_setup(test_file_directory, fake_ram_reset),
		cmocka_unit_test_setup(test_file_not_regular, fake_ram_reset),
		cmocka_unit_test_setup(test_file_empty, fake_ram_reset),
		cmocka_unit_test_setup(test_file_too_big, fake_ram_reset),
		cmocka_unit_test_setup(test_file_text, fake_ram_reset),
		cmocka_unit_test_setup_teardown(test_file_proc_fd, fake_ram_reset, image_free),
	};
	int failed =
		cmocka_run_group_tests_name("loader", loader, fake_ram_setup, fake_ram_teardown);

	failed += cmocka_run_group_tests_name("files", files, setup_files, teardown_files);
	return failed;
}
