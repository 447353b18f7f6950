/* Splits guest RAM around the MMIO hole below 4 GiB. */
#include "layout.h"

struct layout_ram layout_ram(uint64_t mem_bytes)
{
	struct layout_ram r;

	if (mem_bytes <= LAYOUT_MMIO_HOLE) {
		r.low_size = mem_bytes;
		r.high_size = 0;
	} else {
		r.low_size = LAYOUT_MMIO_HOLE;
		r.high_size = mem_bytes - LAYOUT_MMIO_HOLE;
	}
	return r;
}
