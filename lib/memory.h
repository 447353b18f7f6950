/* Guest RAM: a memfd-backed mapping, and checked guest-physical to host translation. */
#ifndef LIBVMM_LIB_MEMORY_H
#define LIBVMM_LIB_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define GM_MAX_REGIONS 4

/* One contiguous range of guest-physical RAM. */
struct gm_region {
	uint64_t gpa;	    /* guest-physical start */
	uint64_t size;	    /* bytes */
	uint8_t *host;	    /* host address of gpa */
	uint64_t fd_offset; /* offset of gpa in the backing fd */
};

/* The guest's RAM. Regions are sorted by gpa and do not overlap. */
struct guest_mem {
	struct gm_region regions[GM_MAX_REGIONS];
	unsigned int nregions;
	int fd;		/* memfd backing all of RAM, or -1 (tests on plain memory) */
	uint8_t *base;	/* the whole mapping, fd offset 0 */
	uint64_t total; /* bytes of RAM */
};

/*
 * Allocate @mem_bytes of guest RAM, split around the MMIO hole
 * (layout_ram()), in one shared memfd mapping. Returns 0 or -errno.
 */
int gm_init(struct guest_mem *m, uint64_t mem_bytes, struct vmm_err *err);

/*
 * Describe caller-owned memory @buf of @size bytes as guest RAM at gpa 0
 * (fd -1). For unit tests that drive code on fake guest memory.
 */
void gm_init_fake(struct guest_mem *m, void *buf, uint64_t size);

/* Unmap and close what gm_init() allocated. Safe on a zeroed struct. */
void gm_destroy(struct guest_mem *m);

/*
 * Host pointer for guest range [gpa, gpa + len), or NULL unless the whole
 * range lies inside one RAM region (checked without overflow). len may be 0,
 * in which case gpa must still lie inside a region or at its end.
 */
void *gm_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* True when [gpa, gpa + len) is RAM (see gm_ptr). */
bool gm_valid(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copy between guest RAM and host memory; -EFAULT if out of range. */
int gm_read(const struct guest_mem *m, void *dst, uint64_t gpa, uint64_t len);
int gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);

/* End of the RAM region that contains gpa 0 (the RAM below the hole). */
uint64_t gm_low_end(const struct guest_mem *m);

#endif
