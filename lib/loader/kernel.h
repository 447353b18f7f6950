/* Kernel and initrd loaders: ELF64 vmlinux and bzImage (Linux x86 boot protocol). */
#ifndef LIBVMM_LIB_LOADER_KERNEL_H
#define LIBVMM_LIB_LOADER_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/memory.h"

enum kernel_kind {
	KERNEL_ELF = 1,
	KERNEL_BZIMAGE = 2,
};

/* Size of the bzImage setup header copied into boot_params (0x1f1..0x268). */
#define SETUP_HDR_OFFSET 0x1f1
#define SETUP_HDR_MAX	 0x77

/* What a loaded kernel needs from the rest of the boot setup. */
struct kernel_image {
	enum kernel_kind kind;
	uint64_t entry;	     /* guest-physical 64-bit entry point */
	uint64_t load_start; /* guest range the kernel occupies (for initrd placement) */
	uint64_t load_end;
	uint32_t cmdline_max;	  /* longest command line the kernel takes, bytes without NUL */
	uint64_t initrd_addr_max; /* highest address the initrd's last byte may have */
	uint16_t protocol;	  /* boot protocol version (bzImage), 0 for ELF */
	/* bzImage: the setup header as read from the file, bytes 0x1f1 onwards,
	 * to be copied into boot_params.hdr; setup_hdr_len valid bytes. */
	uint8_t setup_hdr[SETUP_HDR_MAX];
	uint32_t setup_hdr_len;
};

/*
 * Load a kernel image held in @img (@size bytes) into guest memory, detecting
 * ELF64 vmlinux or bzImage by content. Every offset and size from the image is
 * checked against @size and against guest RAM. Returns 0, -ENOEXEC for a file
 * that is neither (or is truncated/corrupt), -E2BIG/-ENOMEM if it does not fit
 * in guest RAM; @err gets a one-line message naming the problem.
 */
int kernel_load(struct guest_mem *m, const uint8_t *img, size_t size, struct kernel_image *k,
		struct vmm_err *err);

/* Format-specific halves of kernel_load(); same contract. */
int elf_load(struct guest_mem *m, const uint8_t *img, size_t size, struct kernel_image *k,
	     struct vmm_err *err);
int bzimage_load(struct guest_mem *m, const uint8_t *img, size_t size, struct kernel_image *k,
		 struct vmm_err *err);

/*
 * Read the whole file at @path into a new buffer (*out, *size; free() it).
 * Refuses directories, non-regular files and empty files with a message that
 * names @what ("kernel", "initrd") and the path. Returns 0 or -errno.
 */
int file_read_all(const char *path, const char *what, uint8_t **out, size_t *size,
		  struct vmm_err *err);

/*
 * Place an initrd of @size bytes (@data) in guest RAM as the boot protocol
 * requires: page aligned, above the kernel, its last byte at or below
 * k->initrd_addr_max and inside RAM below the MMIO hole, as high as possible.
 * Returns 0 and the address in *addr, or -E2BIG if it does not fit.
 */
int initrd_load(struct guest_mem *m, const struct kernel_image *k, const uint8_t *data, size_t size,
		uint64_t *addr, struct vmm_err *err);

#endif
