/* The Linux zero page (struct boot_params), the e820 memory map and the command line. */
#ifndef LIBVMM_LIB_X86_BOOTPARAMS_H
#define LIBVMM_LIB_X86_BOOTPARAMS_H

#include <stdint.h>

#include "lib/err.h"
#include "lib/loader/kernel.h"
#include "lib/memory.h"

#define E820_RAM      1
#define E820_RESERVED 2
#define E820_ACPI     3
#define E820_MAX      128 /* entries in boot_params.e820_table */

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* Offsets in struct boot_params (Documentation/arch/x86/zero-page.rst). */
#define BP_ACPI_RSDP_ADDR    0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES	     0x1e8
#define BP_HDR		     0x1f1
#define BP_E820_TABLE	     0x2d0
#define BP_SIZE		     0x1000
/* Offsets in boot_params of setup header fields (BP_HDR-relative + 0x1f1). */
#define BP_SETUP_SECTS	   0x1f1
#define BP_BOOT_FLAG	   0x1fe
#define BP_HEADER_MAGIC	   0x202
#define BP_VERSION	   0x206
#define BP_TYPE_OF_LOADER  0x210
#define BP_LOADFLAGS	   0x211
#define BP_CODE32_START	   0x214
#define BP_RAMDISK_IMAGE   0x218
#define BP_RAMDISK_SIZE	   0x21c
#define BP_HEAP_END_PTR	   0x224
#define BP_CMD_LINE_PTR	   0x228
#define BP_INITRD_ADDR_MAX 0x22c
#define BP_CMDLINE_SIZE	   0x238

/*
 * The e820 map for @m: RAM below the EBDA, the EBDA and BIOS/ACPI area
 * reserved, RAM from 1 MiB to the hole, the PCI ECAM window reserved, RAM
 * above 4 GiB. Returns the number of entries written to @out (at most @max).
 */
unsigned int e820_build(const struct guest_mem *m, struct e820_entry *out, unsigned int max);

/* Parameters for bootparams_write(). */
struct boot_setup {
	const struct kernel_image *kernel;
	const char *cmdline;  /* full command line, NUL terminated */
	uint64_t initrd_addr; /* 0 if no initrd */
	uint64_t initrd_size;
	uint64_t rsdp_addr; /* 0 if no ACPI */
};

/*
 * Write the command line at LAYOUT_CMDLINE and boot_params at
 * LAYOUT_ZERO_PAGE: the kernel's setup header (bzImage) or a minimal one
 * (ELF), type_of_loader 0xff, loadflags, the initrd, the command line
 * pointer, the RSDP address and the e820 map. Returns 0, or -E2BIG (with a
 * message giving both lengths) when the command line exceeds
 * kernel->cmdline_max.
 */
int bootparams_write(struct guest_mem *m, const struct boot_setup *s, struct vmm_err *err);

#endif
