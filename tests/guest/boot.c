/*
 * What the loader handed over: struct boot_params (Linux boot protocol,
 * 32- and 64-bit entries) or struct hvm_start_info (PVH). Everything the
 * guest needs is copied into `bi` before anything else touches low memory.
 */
#include "guest.h"

/* struct boot_params offsets (Documentation/arch/x86/zero-page.rst, boot.rst) */
#define BP_ACPI_RSDP_ADDR    0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES	     0x1e8
#define BP_RAMDISK_IMAGE     0x218
#define BP_RAMDISK_SIZE	     0x21c
#define BP_CMD_LINE_PTR	     0x228
#define BP_CMDLINE_SIZE	     0x238
#define BP_E820_TABLE	     0x2d0
#define BP_E820_ENTRY_SIZE   20

/* struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h) */
#define PVH_MAGIC	      0x336ec578
#define PVH_VERSION	      0x04
#define PVH_NR_MODULES	      0x0c
#define PVH_MODLIST	      0x10
#define PVH_CMDLINE	      0x18
#define PVH_RSDP	      0x20
#define PVH_MEMMAP	      0x28
#define PVH_MEMMAP_ENTRIES    0x30
#define PVH_MEMMAP_ENTRY_SIZE 24

#define LIMIT_4G 0x100000000UL

struct bootinfo bi;

static u32 rd32(u64 addr)
{
	u32 v;

	__builtin_memcpy(&v, (const void *)addr, sizeof(v));
	return v;
}

static u64 rd64(u64 addr)
{
	u64 v;

	__builtin_memcpy(&v, (const void *)addr, sizeof(v));
	return v;
}

/* Everything here runs on the identity map of the first 4 GiB. */
static bool below_4g(u64 addr, u64 size)
{
	return addr < LIMIT_4G && size <= LIMIT_4G - addr;
}

static void copy_cmdline(u64 addr, u64 max)
{
	const char *s = (const char *)addr;
	u64 i;

	if (!addr)
		return;
	if (!max || max > CMDLINE_MAX - 1)
		max = CMDLINE_MAX - 1;
	if (!below_4g(addr, max)) {
		fail("cmdline at 0x%lx above 4 GiB", addr);
		return;
	}
	for (i = 0; i < max && s[i]; i++)
		bi.cmdline[i] = s[i];
	bi.cmdline[i] = '\0';
}

static void add_e820(u64 addr, u64 size, u32 type)
{
	struct e820_entry *e;

	if (bi.e820_count >= MAX_E820)
		return;
	e = &bi.e820[bi.e820_count++];
	e->addr = addr;
	e->size = size;
	e->type = type;
}

static void collect_boot_params(u64 bp)
{
	u32 n, i;

	n = *(const u8 *)(bp + BP_E820_ENTRIES);
	for (i = 0; i < n && i < MAX_E820; i++) {
		u64 e = bp + BP_E820_TABLE + i * BP_E820_ENTRY_SIZE;

		add_e820(rd64(e), rd64(e + 8), rd32(e + 16));
	}
	copy_cmdline(rd32(bp + BP_CMD_LINE_PTR) | (u64)rd32(bp + BP_EXT_CMD_LINE_PTR) << 32,
		     rd32(bp + BP_CMDLINE_SIZE));
	bi.initrd_addr = rd32(bp + BP_RAMDISK_IMAGE) | (u64)rd32(bp + BP_EXT_RAMDISK_IMAGE) << 32;
	bi.initrd_size = rd32(bp + BP_RAMDISK_SIZE) | (u64)rd32(bp + BP_EXT_RAMDISK_SIZE) << 32;
	bi.rsdp = rd64(bp + BP_ACPI_RSDP_ADDR);
}

static void collect_pvh(u64 si)
{
	u64 map, mods;
	u32 n, i;

	if (rd32(si) != PVH_MAGIC) {
		fail("pvh start_info magic 0x%x", rd32(si));
		return;
	}
	mods = rd64(si + PVH_MODLIST);
	if (rd32(si + PVH_NR_MODULES) && mods && below_4g(mods, 32)) {
		bi.initrd_addr = rd64(mods);
		bi.initrd_size = rd64(mods + 8);
	}
	copy_cmdline(rd64(si + PVH_CMDLINE), 0);
	bi.rsdp = rd64(si + PVH_RSDP);
	if (rd32(si + PVH_VERSION) < 1) {
		fail("pvh start_info version 0 has no memory map");
		return;
	}
	map = rd64(si + PVH_MEMMAP);
	n = rd32(si + PVH_MEMMAP_ENTRIES);
	if (n && !below_4g(map, (u64)n * PVH_MEMMAP_ENTRY_SIZE)) {
		fail("pvh memmap at 0x%lx above 4 GiB", map);
		return;
	}
	for (i = 0; i < n; i++) {
		u64 e = map + i * PVH_MEMMAP_ENTRY_SIZE;

		add_e820(rd64(e), rd64(e + 8), rd32(e + 16));
	}
}

void boot_collect(void)
{
	bi.entry = (int)boot_entry;
	bi.long_mode = (int)boot_lm;
	bi.cs = boot_cs;
	bi.ptr = boot_ptr;
	if (!below_4g(bi.ptr, 4096)) {
		fail("boot pointer 0x%lx above 4 GiB", bi.ptr);
		return;
	}
	if (bi.entry == ENTRY_PVH)
		collect_pvh(bi.ptr);
	else
		collect_boot_params(bi.ptr);
}

bool e820_usable(u64 addr, u64 size)
{
	u32 i;

	for (i = 0; i < bi.e820_count; i++) {
		const struct e820_entry *e = &bi.e820[i];

		if (e->type == 1 && e->addr <= addr && addr + size <= e->addr + e->size)
			return true;
	}
	return false;
}

static bool has_prefix(const char *s, const char *prefix)
{
	while (*prefix) {
		if (*s++ != *prefix++)
			return false;
	}
	return true;
}

bool cmdline_get(const char *key, char *buf, size_t len)
{
	const char *p = bi.cmdline;

	while (*p) {
		size_t n = 0;

		while (*p == ' ')
			p++;
		if (has_prefix(p, key)) {
			p += strlen(key);
			while (p[n] && p[n] != ' ' && n + 1 < len) {
				buf[n] = p[n];
				n++;
			}
			buf[n] = '\0';
			return true;
		}
		while (*p && *p != ' ')
			p++;
	}
	return false;
}
