/* PIO and MMIO buses: address ranges mapped to device handlers, looked up on vCPU exits. */
#ifndef LIBVMM_LIB_BUS_H
#define LIBVMM_LIB_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * A device's register handler, one signature for PIO and MMIO.
 * @opaque: the pointer given at registration.
 * @offset: address minus the range's base.
 * @data:   @len bytes (1, 2, 4 or 8) to write, or to fill on a read.
 *          On a read the bus pre-fills @data with 0xff.
 * Called on a vCPU thread; it must not block for long.
 */
typedef void (*bus_handler_fn)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
			       bool is_write);

struct bus_range {
	uint64_t base;
	uint64_t len;
	bus_handler_fn fn;
	void *opaque;
};

/* A set of non-overlapping ranges, sorted by base. Lookups may run concurrently. */
struct bus {
	struct bus_range *ranges;
	unsigned int count;
	unsigned int cap;
	pthread_rwlock_t lock;
};

void bus_init(struct bus *b);
void bus_destroy(struct bus *b);

/*
 * Map [base, base + len) to @fn. Returns 0, -EINVAL for len 0 or an
 * overflowing range, -EEXIST if it overlaps a registered range, -ENOMEM.
 */
int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_handler_fn fn, void *opaque);

/* Remove the range that starts at @base. Returns 0 or -ENOENT. */
int bus_unregister(struct bus *b, uint64_t base);

/*
 * Dispatch an access of @len bytes at @addr. An access must lie entirely in
 * one range. Returns true if a handler took it; false otherwise, in which case
 * a read's @data is all 0xff.
 */
bool bus_access(struct bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

#endif
