/* Sorted range table for port I/O and MMIO dispatch. */
#include "bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bus_init(struct bus *b)
{
	memset(b, 0, sizeof(*b));
	pthread_rwlock_init(&b->lock, NULL);
}

void bus_destroy(struct bus *b)
{
	free(b->ranges);
	pthread_rwlock_destroy(&b->lock);
	memset(b, 0, sizeof(*b));
}

/* Index of the first range whose end is above @addr (caller holds the lock). */
static unsigned int bus_lower_bound(const struct bus *b, uint64_t addr)
{
	unsigned int lo = 0, hi = b->count;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &b->ranges[mid];

		if (r->base + r->len <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_handler_fn fn, void *opaque)
{
	unsigned int i;
	int ret = 0;

	if (len == 0 || base + len < base || !fn)
		return -EINVAL;
	pthread_rwlock_wrlock(&b->lock);
	i = bus_lower_bound(b, base);
	if (i < b->count && b->ranges[i].base < base + len) {
		ret = -EEXIST;
		goto out;
	}
	if (b->count == b->cap) {
		unsigned int ncap = b->cap ? b->cap * 2 : 16;
		struct bus_range *n = realloc(b->ranges, ncap * sizeof(*n));

		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		b->ranges = n;
		b->cap = ncap;
	}
	memmove(&b->ranges[i + 1], &b->ranges[i], (b->count - i) * sizeof(b->ranges[0]));
	b->ranges[i] = (struct bus_range){base, len, fn, opaque};
	b->count++;
out:
	pthread_rwlock_unlock(&b->lock);
	return ret;
}

int bus_unregister(struct bus *b, uint64_t base)
{
	unsigned int i;
	int ret = -ENOENT;

	pthread_rwlock_wrlock(&b->lock);
	i = bus_lower_bound(b, base);
	if (i < b->count && b->ranges[i].base == base) {
		memmove(&b->ranges[i], &b->ranges[i + 1],
			(b->count - i - 1) * sizeof(b->ranges[0]));
		b->count--;
		ret = 0;
	}
	pthread_rwlock_unlock(&b->lock);
	return ret;
}

bool bus_access(struct bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
	struct bus_range r;
	unsigned int i;
	bool found = false;

	if (!is_write)
		memset(data, 0xff, len);
	pthread_rwlock_rdlock(&b->lock);
	i = bus_lower_bound(b, addr);
	if (i < b->count && b->ranges[i].base <= addr &&
	    len <= b->ranges[i].len - (addr - b->ranges[i].base)) {
		r = b->ranges[i];
		found = true;
	}
	pthread_rwlock_unlock(&b->lock);
	if (found)
		r.fn(r.opaque, addr - r.base, data, len, is_write);
	return found;
}
