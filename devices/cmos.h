/* CMOS/RTC model: wall-clock time from the host and the guest's memory size. */
#ifndef LIBVMM_DEVICES_CMOS_H
#define LIBVMM_DEVICES_CMOS_H

#include <stdbool.h>
#include <stdint.h>

struct cmos;

/*
 * Create the CMOS at ports 0x70 (index) and 0x71 (data). @low_mem and
 * @high_mem are the bytes of RAM below the MMIO hole and above 4 GiB; they
 * fill the memory-size registers (0x15-0x18, 0x30-0x31, 0x34-0x35, 0x5b-0x5d).
 * Returns NULL on allocation failure.
 */
struct cmos *cmos_create(uint64_t low_mem, uint64_t high_mem);
void cmos_destroy(struct cmos *c);

/* Bus handler for ports 0x70-0x71 (offset 0 index, 1 data); @opaque is the cmos. */
void cmos_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#endif
