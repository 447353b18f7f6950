/* The Linux zero page (struct boot_params), its e820 map and the command line. */
#include "bootparams.h"

#include <errno.h>
#include <string.h>

#include "lib/layout.h"

#define LOADED_HIGH		 0x01
#define CAN_USE_HEAP		 0x80
#define HEAP_END_PTR		 0xfe00
#define VID_MODE_NORMAL		 0xffff
#define TYPE_OF_LOADER_UNDEFINED 0xff
#define ELF_HDR_VERSION		 0x020f
#define BP_VID_MODE		 0x1fa
#define BP_SETUP_DATA		 0x250
#define BIOS_AREA_END		 LAYOUT_HIMEM

struct e820_list {
	struct e820_entry *e;
	unsigned int n, max;
};

static void e820_add(struct e820_list *l, uint64_t addr, uint64_t size, uint32_t type)
{
	if (size == 0 || l->n >= l->max)
		return;
	l->e[l->n++] = (struct e820_entry){.addr = addr, .size = size, .type = type};
}

/* True when [addr, addr + size) overlaps a RAM region of @m. */
static bool overlaps_ram(const struct guest_mem *m, uint64_t addr, uint64_t size)
{
	for (unsigned int i = 0; i < m->nregions; i++) {
		const struct gm_region *r = &m->regions[i];

		if (r->size && addr < r->gpa + r->size && r->gpa < addr + size)
			return true;
	}
	return false;
}

unsigned int e820_build(const struct guest_mem *m, struct e820_entry *out, unsigned int max)
{
	struct e820_list l = {out, 0, max};
	bool ecam_done = overlaps_ram(m, LAYOUT_ECAM, LAYOUT_ECAM_SIZE);

	/* Fixed low-memory layout: conventional RAM, the EBDA, the BIOS area. */
	for (unsigned int i = 0; i < m->nregions; i++) {
		const struct gm_region *r = &m->regions[i];
		uint64_t start = r->gpa, end = r->gpa + r->size;

		if (r->size == 0)
			continue;
		if (!ecam_done && start >= LAYOUT_ECAM + LAYOUT_ECAM_SIZE) {
			e820_add(&l, LAYOUT_ECAM, LAYOUT_ECAM_SIZE, E820_RESERVED);
			ecam_done = true;
		}
		if (start < BIOS_AREA_END) {
			/* RAM below the EBDA, then the reserved holes, then the rest. */
			if (start < LAYOUT_EBDA)
				e820_add(&l, start, (end < LAYOUT_EBDA ? end : LAYOUT_EBDA) - start,
					 E820_RAM);
			if (start <= LAYOUT_EBDA)
				e820_add(&l, LAYOUT_EBDA, 0xA0000 - LAYOUT_EBDA, E820_RESERVED);
			if (start <= LAYOUT_ACPI)
				e820_add(&l, LAYOUT_ACPI, BIOS_AREA_END - LAYOUT_ACPI,
					 E820_RESERVED);
			if (end > BIOS_AREA_END)
				e820_add(&l, BIOS_AREA_END, end - BIOS_AREA_END, E820_RAM);
			continue;
		}
		e820_add(&l, start, r->size, E820_RAM);
	}
	if (!ecam_done)
		e820_add(&l, LAYOUT_ECAM, LAYOUT_ECAM_SIZE, E820_RESERVED);
	return l.n;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

int bootparams_write(struct guest_mem *m, const struct boot_setup *s, struct vmm_err *err)
{
	const struct kernel_image *k = s->kernel;
	const char *cmdline = s->cmdline ? s->cmdline : "";
	size_t len = strlen(cmdline);
	struct e820_entry e820[E820_MAX];
	unsigned int n;
	uint8_t *zp, *cl;

	if (!k)
		return err_set(err, EINVAL, "boot_params: no kernel loaded");
	if (len > k->cmdline_max)
		return err_set(err, E2BIG,
			       "kernel command line is %zu bytes; this kernel accepts at most %u",
			       len, k->cmdline_max);
	if (len > LAYOUT_CMDLINE_MAX - 1)
		return err_set(err, E2BIG,
			       "kernel command line is %zu bytes; the VMM accepts at most %llu",
			       len, (unsigned long long)(LAYOUT_CMDLINE_MAX - 1));
	zp = gm_ptr(m, LAYOUT_ZERO_PAGE, BP_SIZE);
	cl = gm_ptr(m, LAYOUT_CMDLINE, len + 1);
	if (!zp || !cl)
		return err_set(err, E2BIG,
			       "guest RAM (%llu KiB) is too small for boot_params and the command "
			       "line",
			       (unsigned long long)(m->total >> 10));

	memset(zp, 0, BP_SIZE);
	if (k->kind == KERNEL_BZIMAGE) {
		uint32_t hl = k->setup_hdr_len < SETUP_HDR_MAX ? k->setup_hdr_len : SETUP_HDR_MAX;

		memcpy(zp + BP_HDR, k->setup_hdr, hl);
		/* setup_data is the loader's linked list; we pass none. */
		put64(zp + BP_SETUP_DATA, 0);
	} else {
		put16(zp + BP_BOOT_FLAG, 0xAA55);
		memcpy(zp + BP_HEADER_MAGIC, "HdrS", 4);
		put16(zp + BP_VERSION, ELF_HDR_VERSION);
	}
	zp[BP_TYPE_OF_LOADER] = TYPE_OF_LOADER_UNDEFINED;
	zp[BP_LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
	put16(zp + BP_HEAP_END_PTR, HEAP_END_PTR);
	put16(zp + BP_VID_MODE, VID_MODE_NORMAL);
	put32(zp + BP_CMD_LINE_PTR, (uint32_t)LAYOUT_CMDLINE);
	put32(zp + BP_EXT_CMD_LINE_PTR, (uint32_t)(LAYOUT_CMDLINE >> 32));
	put32(zp + BP_RAMDISK_IMAGE, (uint32_t)s->initrd_addr);
	put32(zp + BP_RAMDISK_SIZE, (uint32_t)s->initrd_size);
	put32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(s->initrd_addr >> 32));
	put32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)(s->initrd_size >> 32));
	put64(zp + BP_ACPI_RSDP_ADDR, s->rsdp_addr);

	n = e820_build(m, e820, E820_MAX);
	zp[BP_E820_ENTRIES] = (uint8_t)n;
	memcpy(zp + BP_E820_TABLE, e820, n * sizeof(e820[0]));

	memcpy(cl, cmdline, len + 1);
	return 0;
}
