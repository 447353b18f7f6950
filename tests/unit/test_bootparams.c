/* Unit tests for the e820 map and the Linux zero page (boot_params). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/layout.h"
#include "lib/loader/kernel.h"
#include "lib/memory.h"
#include "lib/x86/bootparams.h"
#include "boot_test_util.h"

/* guest_mem for @mem bytes split like gm_init() does; e820_build reads only gpa/size. */
static struct guest_mem fake_layout(uint64_t mem)
{
	struct layout_ram r = layout_ram(mem);
	struct guest_mem m;

	memset(&m, 0, sizeof(m));
	m.fd = -1;
	m.total = mem;
	m.regions[0] = (struct gm_region){0, r.low_size, NULL, 0};
	m.nregions = 1;
	if (r.high_size) {
		m.regions[1] =
			(struct gm_region){LAYOUT_MMIO_HOLE_END, r.high_size, NULL, r.low_size};
		m.nregions = 2;
	}
	return m;
}

static bool has_entry(const struct e820_entry *e, unsigned int n, uint64_t addr, uint64_t size,
		      uint32_t type)
{
	for (unsigned int i = 0; i < n; i++)
		if (e[i].addr == addr && e[i].size == size && e[i].type == type)
			return true;
	return false;
}

/* Sorted, non-overlapping, non-empty, known types; returns the bytes of RAM. */
static uint64_t check_map(const struct e820_entry *e, unsigned int n)
{
	uint64_t ram_bytes = 0;

	for (unsigned int i = 0; i < n; i++) {
		assert_true(e[i].size > 0);
		assert_true(e[i].type == E820_RAM || e[i].type == E820_RESERVED);
		assert_true(e[i].addr + e[i].size > e[i].addr);
		if (i > 0)
			assert_true(e[i - 1].addr + e[i - 1].size <= e[i].addr);
		if (e[i].type == E820_RAM)
			ram_bytes += e[i].size;
	}
	return ram_bytes;
}

/* The BIOS holes taken out of RAM: the EBDA up to 1 MiB. */
#define LOW_HOLES (LAYOUT_HIMEM - LAYOUT_EBDA)

static void check_sized(uint64_t mem)
{
	struct guest_mem m = fake_layout(mem);
	struct layout_ram r = layout_ram(mem);
	struct e820_entry e[E820_MAX];
	unsigned int n = e820_build(&m, e, E820_MAX);

	assert_true(n >= 5);
	assert_int_equal(check_map(e, n), mem - LOW_HOLES);
	assert_true(has_entry(e, n, 0, LAYOUT_EBDA, E820_RAM));
	assert_true(has_entry(e, n, LAYOUT_EBDA, 0xA0000 - LAYOUT_EBDA, E820_RESERVED));
	assert_true(has_entry(e, n, 0xE0000, 0x20000, E820_RESERVED));
	assert_true(has_entry(e, n, LAYOUT_HIMEM, r.low_size - LAYOUT_HIMEM, E820_RAM));
	assert_true(has_entry(e, n, LAYOUT_ECAM, LAYOUT_ECAM_SIZE, E820_RESERVED));
	if (r.high_size) {
		assert_int_equal(n, 6);
		assert_int_equal(e[5].addr, GiB(4));
		assert_int_equal(e[5].size, r.high_size);
		assert_int_equal(e[5].type, E820_RAM);
	} else {
		assert_int_equal(n, 5);
	}
	/* No RAM inside the MMIO hole. */
	for (unsigned int i = 0; i < n; i++)
		if (e[i].type == E820_RAM)
			assert_true(e[i].addr + e[i].size <= LAYOUT_MMIO_HOLE ||
				    e[i].addr >= LAYOUT_MMIO_HOLE_END);
}

static void test_e820_64m(void **state)
{
	struct guest_mem m = fake_layout(MiB(64));
	struct e820_entry e[E820_MAX];
	unsigned int n = e820_build(&m, e, E820_MAX);
	static const struct e820_entry want[] = {
		{0, 0x9FC00, E820_RAM},
		{0x9FC00, 0x400, E820_RESERVED},
		{0xE0000, 0x20000, E820_RESERVED},
		{0x100000, MiB(63), E820_RAM},
		{LAYOUT_ECAM, LAYOUT_ECAM_SIZE, E820_RESERVED},
	};

	(void)state;
	assert_int_equal(n, 5);
	assert_memory_equal(e, want, sizeof(want));
	check_sized(MiB(64));
}

static void test_e820_sizes(void **state)
{
	(void)state;
	check_sized(MiB(256));
	check_sized(MiB(3072)); /* exactly up to the hole */
	check_sized(MiB(4096)); /* 1 GiB above 4 GiB */
	check_sized(MiB(8192));
	check_sized(MiB(3072) + MiB(2));
}

static void test_e820_tiny(void **state)
{
	static const uint64_t sizes[] = {0,	  KiB(4),   KiB(512), 0x9FC00,
					 0xA0000, KiB(768), MiB(1),   MiB(1) + KiB(4)};
	struct e820_entry e[E820_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct guest_mem m = fake_layout(sizes[i]);
		unsigned int n = e820_build(&m, e, E820_MAX);
		uint64_t want = sizes[i] < LAYOUT_EBDA ? sizes[i] : LAYOUT_EBDA;

		if (sizes[i] > LAYOUT_HIMEM)
			want += sizes[i] - LAYOUT_HIMEM;
		assert_int_equal(check_map(e, n), want);
		/* Never RAM past the end of RAM. */
		for (unsigned int j = 0; j < n; j++)
			if (e[j].type == E820_RAM)
				assert_true(e[j].addr + e[j].size <= sizes[i]);
	}
	/* A table shorter than the map is filled, not overrun. */
	{
		struct guest_mem m = fake_layout(MiB(8192));
		struct e820_entry small[3];

		memset(e, 0xee, sizeof(e));
		assert_int_equal(e820_build(&m, small, 3), 3);
		assert_int_equal(e820_build(&m, e, 0), 0);
		assert_int_equal(e[0].type, 0xeeeeeeee);
	}
}

/* ---- bootparams_write ------------------------------------------------------ */

static struct kernel_image elf_kernel(void)
{
	struct kernel_image k;

	memset(&k, 0, sizeof(k));
	k.kind = KERNEL_ELF;
	k.entry = MiB(16);
	k.load_start = MiB(16);
	k.load_end = MiB(32);
	k.cmdline_max = 2047;
	k.initrd_addr_max = RAM_SIZE - 1;
	return k;
}

/* A bzImage kernel whose header carries recognisable values. */
static struct kernel_image bz_kernel(void)
{
	struct kernel_image k = elf_kernel();
	uint8_t h[BP_HDR + SETUP_HDR_MAX]; /* indexed by boot_params offset */

	k.kind = KERNEL_BZIMAGE;
	k.protocol = 0x020f;
	k.cmdline_max = 0xfff;
	for (unsigned int i = 0; i < sizeof(h); i++)
		h[i] = (uint8_t)(0x40 + i);
	h[BP_SETUP_SECTS] = 27;
	h[BP_BOOT_FLAG] = 0x55;
	h[BP_BOOT_FLAG + 1] = 0xAA;
	memcpy(h + BP_HEADER_MAGIC, "HdrS", 4);
	h[BP_VERSION] = 0x0f;
	h[BP_VERSION + 1] = 0x02;
	h[BP_LOADFLAGS] = 0x21; /* LOADED_HIGH | QUIET_FLAG */
	h[BP_CMDLINE_SIZE] = 0xff;
	h[BP_CMDLINE_SIZE + 1] = 0x0f;
	h[BP_CMDLINE_SIZE + 2] = 0;
	h[BP_CMDLINE_SIZE + 3] = 0;
	memcpy(k.setup_hdr, h + BP_HDR, SETUP_HDR_MAX);
	k.setup_hdr_len = SETUP_HDR_MAX;
	return k;
}

static void check_common(const uint8_t *zp, const struct boot_setup *s)
{
	struct e820_entry e[E820_MAX];
	unsigned int n = e820_build(&gm, e, E820_MAX);
	size_t len = strlen(s->cmdline);

	assert_int_equal(zp[BP_TYPE_OF_LOADER], 0xff);
	assert_int_equal(zp[BP_LOADFLAGS] & 0x81, 0x81);
	assert_int_equal(get_le(zp + BP_HEAP_END_PTR, 2), 0xfe00);
	assert_int_equal(get_le(zp + 0x1fa, 2), 0xffff); /* vid_mode */
	assert_int_equal(get_le(zp + BP_BOOT_FLAG, 2), 0xAA55);
	assert_memory_equal(zp + BP_HEADER_MAGIC, "HdrS", 4);
	assert_int_equal(get_le(zp + BP_CMD_LINE_PTR, 4), LAYOUT_CMDLINE);
	assert_int_equal(get_le(zp + BP_EXT_CMD_LINE_PTR, 4), 0);
	assert_memory_equal(ram + LAYOUT_CMDLINE, s->cmdline, len + 1);
	assert_int_equal(get_le(zp + BP_RAMDISK_IMAGE, 4), (uint32_t)s->initrd_addr);
	assert_int_equal(get_le(zp + BP_RAMDISK_SIZE, 4), (uint32_t)s->initrd_size);
	assert_int_equal(get_le(zp + BP_EXT_RAMDISK_IMAGE, 4), (uint32_t)(s->initrd_addr >> 32));
	assert_int_equal(get_le(zp + BP_EXT_RAMDISK_SIZE, 4), (uint32_t)(s->initrd_size >> 32));
	assert_int_equal(get_le(zp + BP_ACPI_RSDP_ADDR, 8), s->rsdp_addr);
	assert_int_equal(zp[BP_E820_ENTRIES], n);
	assert_int_equal(n, 5);
	assert_memory_equal(zp + BP_E820_TABLE, e, n * sizeof(e[0]));
	/* The rest of the e820 table and unrelated areas are zero, not poison. */
	assert_int_equal(zp[BP_E820_TABLE + n * sizeof(e[0])], 0);
	assert_int_equal(zp[0], 0);
	assert_int_equal(zp[BP_SIZE - 1], 0);
	/* Nothing outside the zero page was touched. */
	assert_int_equal(ram[LAYOUT_ZERO_PAGE - 1], POISON);
	assert_int_equal(ram[LAYOUT_ZERO_PAGE + BP_SIZE], POISON);
	assert_int_equal(ram[LAYOUT_CMDLINE + len + 1], POISON);
}

static void test_bp_elf(void **state)
{
	struct kernel_image k = elf_kernel();
	struct boot_setup s = {
		.kernel = &k,
		.cmdline = "console=ttyS0 root=/dev/vda rw",
		.initrd_addr = 0x3000000,
		.initrd_size = 0x123456,
		.rsdp_addr = LAYOUT_ACPI,
	};
	const uint8_t *zp = ram + LAYOUT_ZERO_PAGE;

	(void)state;
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	check_common(zp, &s);
	assert_int_equal(get_le(zp + BP_VERSION, 2), 0x020f);
	assert_int_equal(zp[BP_LOADFLAGS], 0x81);
	assert_int_equal(zp[BP_SETUP_SECTS], 0);
}

static void test_bp_bzimage(void **state)
{
	struct kernel_image k = bz_kernel();
	struct boot_setup s = {
		.kernel = &k,
		.cmdline = "quiet",
		.initrd_addr = 0,
		.initrd_size = 0,
		.rsdp_addr = 0,
	};
	const uint8_t *zp = ram + LAYOUT_ZERO_PAGE;

	(void)state;
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	check_common(zp, &s);
	assert_int_equal(zp[BP_SETUP_SECTS], 27);
	assert_int_equal(get_le(zp + BP_VERSION, 2), 0x020f);
	assert_int_equal(zp[BP_LOADFLAGS], 0xa1); /* QUIET kept, CAN_USE_HEAP added */
	assert_int_equal(get_le(zp + BP_CMDLINE_SIZE, 4), 0xfff);
	/* Every header byte the loader does not own is the kernel's. */
	for (unsigned int off = BP_HDR; off < BP_HDR + SETUP_HDR_MAX; off++) {
		bool ours = (off >= 0x1fa && off < 0x1fc) || off == BP_TYPE_OF_LOADER ||
			    off == BP_LOADFLAGS || (off >= BP_RAMDISK_IMAGE && off < 0x220) ||
			    (off >= BP_HEAP_END_PTR && off < 0x226) ||
			    (off >= BP_CMD_LINE_PTR && off < 0x22c) ||
			    (off >= 0x250 && off < 0x258); /* setup_data */

		if (!ours && zp[off] != k.setup_hdr[off - BP_HDR])
			fail_msg("header byte 0x%x: 0x%02x != 0x%02x", off, zp[off],
				 k.setup_hdr[off - BP_HDR]);
	}
	assert_int_equal(get_le(zp + 0x250, 8), 0);
	/* Past the copied header: zero. */
	assert_int_equal(zp[BP_HDR + SETUP_HDR_MAX], 0);

	/* A shorter header copies fewer bytes. */
	memset(ram + LAYOUT_ZERO_PAGE, POISON, BP_SIZE);
	k.setup_hdr_len = 0x30;
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	assert_int_equal(zp[BP_HDR + 0x2f], k.setup_hdr[0x2f]);
	assert_int_equal(zp[BP_HDR + 0x30], 0);
}

static void test_bp_high_initrd(void **state)
{
	struct kernel_image k = elf_kernel();
	struct boot_setup s = {
		.kernel = &k,
		.cmdline = "",
		.initrd_addr = 0x123456000ULL,
		.initrd_size = 0x2000000010ULL,
		.rsdp_addr = 0xfedcba9876543210ULL,
	};
	const uint8_t *zp = ram + LAYOUT_ZERO_PAGE;

	(void)state;
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	check_common(zp, &s);
	assert_int_equal(get_le(zp + BP_RAMDISK_IMAGE, 4), 0x23456000);
	assert_int_equal(get_le(zp + BP_EXT_RAMDISK_IMAGE, 4), 1);
	assert_int_equal(get_le(zp + BP_RAMDISK_SIZE, 4), 0x10);
	assert_int_equal(get_le(zp + BP_EXT_RAMDISK_SIZE, 4), 0x20);
	assert_int_equal(ram[LAYOUT_CMDLINE], 0);

	/* A NULL command line is an empty one. */
	s.cmdline = NULL;
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	assert_int_equal(ram[LAYOUT_CMDLINE], 0);
}

static void test_bp_cmdline_too_long(void **state)
{
	struct kernel_image k = elf_kernel();
	struct boot_setup s = {.kernel = &k};
	char *line = malloc(LAYOUT_CMDLINE_MAX + 1);

	(void)state;
	assert_non_null(line);
	memset(line, 'a', LAYOUT_CMDLINE_MAX);

	/* ELF: 2047 bytes fit, 2048 do not. */
	line[2047] = '\0';
	s.cmdline = line;
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	assert_int_equal(ram[LAYOUT_CMDLINE + 2046], 'a');
	assert_int_equal(ram[LAYOUT_CMDLINE + 2047], 0);
	line[2047] = 'a';
	line[2048] = '\0';
	memset(ram, POISON, RAM_SIZE);
	assert_int_equal(bootparams_write(&gm, &s, &err), -E2BIG);
	assert_string_equal(err.msg,
			    "kernel command line is 2048 bytes; this kernel accepts at most 2047");
	/* Nothing written on failure. */
	assert_int_equal(ram[LAYOUT_ZERO_PAGE + BP_TYPE_OF_LOADER], POISON);
	assert_int_equal(ram[LAYOUT_CMDLINE], POISON);

	/* The kernel's own cmdline_size. */
	k = bz_kernel();
	k.cmdline_max = 10;
	s.cmdline = "0123456789";
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	s.cmdline = "0123456789a";
	assert_int_equal(bootparams_write(&gm, &s, &err), -E2BIG);
	expect_msg("11 bytes");
	expect_msg("at most 10");
	k.cmdline_max = 0;
	s.cmdline = "";
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	s.cmdline = "x";
	assert_int_equal(bootparams_write(&gm, &s, &err), -E2BIG);

	/* A kernel that takes anything is still held to the VMM's buffer. */
	k.cmdline_max = UINT32_MAX;
	memset(line, 'a', LAYOUT_CMDLINE_MAX);
	line[LAYOUT_CMDLINE_MAX - 1] = '\0';
	s.cmdline = line;
	assert_int_equal(bootparams_write(&gm, &s, &err), 0);
	line[LAYOUT_CMDLINE_MAX - 1] = 'a';
	line[LAYOUT_CMDLINE_MAX] = '\0';
	assert_int_equal(bootparams_write(&gm, &s, &err), -E2BIG);
	expect_msg("65536 bytes");
	free(line);
}

static void test_bp_tiny_ram(void **state)
{
	struct kernel_image k = elf_kernel();
	struct boot_setup s = {.kernel = &k, .cmdline = "console=ttyS0"};
	struct guest_mem small;

	(void)state;
	gm_init_fake(&small, ram, KiB(64)); /* zero page fits, command line does not */
	assert_int_equal(bootparams_write(&small, &s, &err), -E2BIG);
	expect_msg("too small");
	gm_init_fake(&small, ram, KiB(16));
	assert_int_equal(bootparams_write(&small, &s, &err), -E2BIG);
	/* Exactly large enough for the command line. */
	gm_init_fake(&small, ram, LAYOUT_CMDLINE + strlen(s.cmdline) + 1);
	assert_int_equal(bootparams_write(&small, &s, &err), 0);
	assert_int_equal(ram[LAYOUT_ZERO_PAGE + BP_E820_ENTRIES], 4); /* no RAM above 1 MiB */

	s.kernel = NULL;
	assert_int_equal(bootparams_write(&gm, &s, &err), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest e820[] = {
		cmocka_unit_test(test_e820_64m),
		cmocka_unit_test(test_e820_sizes),
		cmocka_unit_test(test_e820_tiny),
	};
	const struct CMUnitTest bp[] = {
		cmocka_unit_test_setup(test_bp_elf, fake_ram_reset),
		cmocka_unit_test_setup(test_bp_bzimage, fake_ram_reset),
		cmocka_unit_test_setup(test_bp_high_initrd, fake_ram_reset),
		cmocka_unit_test_setup(test_bp_cmdline_too_long, fake_ram_reset),
		cmocka_unit_test_setup(test_bp_tiny_ram, fake_ram_reset),
	};
	int failed = cmocka_run_group_tests_name("e820", e820, NULL, NULL);

	failed += cmocka_run_group_tests_name("bootparams", bp, fake_ram_setup, fake_ram_teardown);
	return failed;
}
