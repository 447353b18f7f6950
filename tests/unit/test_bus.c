/* Unit tests for the PIO/MMIO bus: registration, lookup and dispatch. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bus.h"

/* What a handler saw on its last call. */
struct dev {
	unsigned int calls;
	uint64_t offset;
	uint32_t len;
	bool is_write;
	uint8_t seen[8]; /* data as passed in */
	uint8_t reply;	 /* fills reads */
};

static void dev_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct dev *d = opaque;

	d->calls++;
	d->offset = offset;
	d->len = len;
	d->is_write = is_write;
	memcpy(d->seen, data, len);
	if (!is_write)
		memset(data, d->reply, len);
}

static int setup(void **state)
{
	struct bus *b = calloc(1, sizeof(*b));

	assert_non_null(b);
	bus_init(b);
	*state = b;
	return 0;
}

static int teardown(void **state)
{
	bus_destroy(*state);
	free(*state);
	return 0;
}

static void test_register_and_dispatch(void **state)
{
	struct bus *b = *state;
	struct dev d = {.reply = 0x42};
	uint8_t data[8];

	assert_int_equal(bus_register(b, 0x3f8, 8, dev_io, &d), 0);
	assert_int_equal(b->count, 1);

	/* A read: the handler sees the 0xff pre-fill and the offset. */
	memset(data, 0, sizeof(data));
	assert_true(bus_access(b, 0x3fb, data, 1, false));
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.offset, 3);
	assert_int_equal(d.len, 1);
	assert_false(d.is_write);
	assert_int_equal(d.seen[0], 0xff);
	assert_int_equal(data[0], 0x42);

	/* A write passes the data through. */
	memcpy(data, "\x11\x22\x33\x44", 4);
	assert_true(bus_access(b, 0x3fc, data, 4, true));
	assert_int_equal(d.calls, 2);
	assert_int_equal(d.offset, 4);
	assert_int_equal(d.len, 4);
	assert_true(d.is_write);
	assert_memory_equal(d.seen, "\x11\x22\x33\x44", 4);

	/* First and last byte; a full-width access of the whole range. */
	assert_true(bus_access(b, 0x3f8, data, 1, false));
	assert_int_equal(d.offset, 0);
	assert_true(bus_access(b, 0x3ff, data, 1, false));
	assert_int_equal(d.offset, 7);
	assert_true(bus_access(b, 0x3f8, data, 8, false));
	assert_int_equal(d.len, 8);
	for (int i = 0; i < 8; i++)
		assert_int_equal(data[i], 0x42);
	assert_int_equal(d.calls, 5);
}

static void test_unmapped(void **state)
{
	struct bus *b = *state;
	struct dev d = {.reply = 0};
	uint8_t data[8];

	/* An empty bus. */
	memset(data, 0, sizeof(data));
	assert_false(bus_access(b, 0x80, data, 4, false));
	for (int i = 0; i < 4; i++)
		assert_int_equal(data[i], 0xff);
	assert_int_equal(data[4], 0); /* only len bytes are touched */

	assert_int_equal(bus_register(b, 0x100, 0x10, dev_io, &d), 0);
	static const uint64_t miss[] = {0, 0xff, 0x110, 0x111, 0x10000, UINT64_MAX};

	for (unsigned int i = 0; i < sizeof(miss) / sizeof(miss[0]); i++) {
		memset(data, 0, sizeof(data));
		assert_false(bus_access(b, miss[i], data, 8, false));
		for (int j = 0; j < 8; j++)
			assert_int_equal(data[j], 0xff);
		/* Writes are dropped and leave the data alone. */
		memset(data, 0x5a, sizeof(data));
		assert_false(bus_access(b, miss[i], data, 8, true));
		assert_int_equal(data[0], 0x5a);
	}
	assert_int_equal(d.calls, 0);
}

static void test_overlap(void **state)
{
	struct bus *b = *state;
	struct dev d = {0};

	assert_int_equal(bus_register(b, 0x100, 0x10, dev_io, &d), 0);
	assert_int_equal(bus_register(b, 0x100, 0x10, dev_io, &d), -EEXIST);
	assert_int_equal(bus_register(b, 0x108, 0x10, dev_io, &d), -EEXIST); /* tail */
	assert_int_equal(bus_register(b, 0xf8, 0x9, dev_io, &d), -EEXIST);   /* head */
	assert_int_equal(bus_register(b, 0x104, 0x1, dev_io, &d), -EEXIST);  /* inside */
	assert_int_equal(bus_register(b, 0x0, 0x1000, dev_io, &d), -EEXIST); /* around */
	assert_int_equal(bus_register(b, 0x10f, 0x1, dev_io, &d), -EEXIST);  /* last byte */
	assert_int_equal(b->count, 1);

	/* Touching ranges are fine on both sides. */
	assert_int_equal(bus_register(b, 0xf0, 0x10, dev_io, &d), 0);
	assert_int_equal(bus_register(b, 0x110, 0x10, dev_io, &d), 0);
	assert_int_equal(b->count, 3);
	/* Overlapping just the last byte of a neighbour is refused too. */
	assert_int_equal(bus_register(b, 0x11f, 0x2, dev_io, &d), -EEXIST);
	assert_int_equal(bus_register(b, 0x120, 0x1, dev_io, &d), 0);
	assert_int_equal(b->count, 4);
}

static void test_invalid(void **state)
{
	struct bus *b = *state;
	struct dev d = {0};

	assert_int_equal(bus_register(b, 0x100, 0, dev_io, &d), -EINVAL);
	assert_int_equal(bus_register(b, UINT64_MAX, 2, dev_io, &d), -EINVAL);
	assert_int_equal(bus_register(b, 0x10, UINT64_MAX, dev_io, &d), -EINVAL);
	assert_int_equal(bus_register(b, UINT64_MAX - 0xf, 0x20, dev_io, &d), -EINVAL);
	assert_int_equal(bus_register(b, 0x100, 1, NULL, &d), -EINVAL);
	assert_int_equal(b->count, 0);

	/* The last addressable bytes are usable. */
	assert_int_equal(bus_register(b, UINT64_MAX - 8, 8, dev_io, &d), 0);
	uint8_t data[8];

	assert_true(bus_access(b, UINT64_MAX - 1, data, 1, false));
	assert_int_equal(d.offset, 7);
	assert_false(bus_access(b, UINT64_MAX - 1, data, 2, false));
	assert_false(bus_access(b, UINT64_MAX, data, 1, false));
	assert_int_equal(d.calls, 1);
}

static void test_spanning(void **state)
{
	struct bus *b = *state;
	struct dev d1 = {.reply = 1}, d2 = {.reply = 2};
	uint8_t data[8];

	assert_int_equal(bus_register(b, 0x100, 4, dev_io, &d1), 0);
	assert_int_equal(bus_register(b, 0x104, 4, dev_io, &d2), 0);
	/* Across the boundary between two devices. */
	memset(data, 0, sizeof(data));
	assert_false(bus_access(b, 0x102, data, 4, false));
	for (int i = 0; i < 4; i++)
		assert_int_equal(data[i], 0xff);
	assert_false(bus_access(b, 0x100, data, 8, false));
	assert_false(bus_access(b, 0x103, data, 2, true));
	/* Past the end of the last one. */
	assert_false(bus_access(b, 0x106, data, 4, false));
	assert_false(bus_access(b, 0x107, data, 2, false));
	assert_int_equal(d1.calls, 0);
	assert_int_equal(d2.calls, 0);
	/* Right up to each boundary works. */
	assert_true(bus_access(b, 0x100, data, 4, false));
	assert_int_equal(data[0], 1);
	assert_true(bus_access(b, 0x104, data, 4, false));
	assert_int_equal(data[0], 2);
	assert_true(bus_access(b, 0x103, data, 1, false));
	assert_int_equal(d1.offset, 3);
}

static void test_unregister(void **state)
{
	struct bus *b = *state;
	struct dev d1 = {.reply = 1}, d2 = {.reply = 2};
	uint8_t data[1];

	assert_int_equal(bus_register(b, 0x60, 5, dev_io, &d1), 0);
	assert_int_equal(bus_register(b, 0x70, 2, dev_io, &d2), 0);
	/* Only a range's base names it. */
	assert_int_equal(bus_unregister(b, 0x61), -ENOENT);
	assert_int_equal(bus_unregister(b, 0x65), -ENOENT);
	assert_int_equal(bus_unregister(b, 0x0), -ENOENT);
	assert_int_equal(bus_unregister(b, 0x60), 0);
	assert_int_equal(b->count, 1);
	assert_false(bus_access(b, 0x60, data, 1, false));
	assert_int_equal(data[0], 0xff);
	assert_int_equal(bus_unregister(b, 0x60), -ENOENT);
	assert_true(bus_access(b, 0x71, data, 1, false));
	assert_int_equal(data[0], 2);
	/* The space is free again. */
	assert_int_equal(bus_register(b, 0x5e, 0x12, dev_io, &d1), 0);
	assert_true(bus_access(b, 0x6f, data, 1, false));
	assert_int_equal(data[0], 1);
	assert_int_equal(d1.offset, 0x11);
	assert_int_equal(bus_unregister(b, 0x70), 0);
	assert_int_equal(bus_unregister(b, 0x5e), 0);
	assert_int_equal(b->count, 0);
	assert_int_equal(bus_unregister(b, 0x5e), -ENOENT);
}

/* A small deterministic generator, so a failure can be reproduced. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#define NRANGES 1000

static void check_sorted(const struct bus *b)
{
	for (unsigned int i = 1; i < b->count; i++)
		assert_true(b->ranges[i - 1].base + b->ranges[i - 1].len <= b->ranges[i].base);
}

static void test_many_random(void **state)
{
	struct bus *b = *state;
	static struct dev devs[NRANGES];
	static unsigned int order[NRANGES];
	uint64_t seed = 0x9e3779b97f4a7c15ULL;
	uint8_t data[4];

	memset(devs, 0, sizeof(devs));
	for (unsigned int i = 0; i < NRANGES; i++) {
		order[i] = i;
		devs[i].reply = (uint8_t)i;
	}
	for (unsigned int i = NRANGES - 1; i > 0; i--) {
		unsigned int j = (unsigned int)(rng_next(&seed) % (i + 1));
		unsigned int t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	/* Range i is [i * 16, i * 16 + 1 + i % 15): gaps of varying size. */
	for (unsigned int n = 0; n < NRANGES; n++) {
		unsigned int i = order[n];

		assert_int_equal(bus_register(b, i * 16ULL, 1 + i % 15, dev_io, &devs[i]), 0);
		/* A duplicate is still refused as the table grows. */
		assert_int_equal(bus_register(b, i * 16ULL + i % 15, 1, dev_io, &devs[i]), -EEXIST);
	}
	assert_int_equal(b->count, NRANGES);
	check_sorted(b);
	for (unsigned int i = 0; i < NRANGES; i++) {
		uint64_t len = 1 + i % 15;

		assert_true(bus_access(b, i * 16ULL + len - 1, data, 1, false));
		assert_int_equal(data[0], (uint8_t)i);
		assert_int_equal(devs[i].offset, len - 1);
		assert_false(bus_access(b, i * 16ULL + len, data, 1, false));
	}

	/* Remove every other range in random order; the rest stay reachable. */
	for (unsigned int n = 0; n < NRANGES; n++) {
		unsigned int i = order[n];

		if (i % 2)
			assert_int_equal(bus_unregister(b, i * 16ULL), 0);
	}
	assert_int_equal(b->count, NRANGES / 2);
	check_sorted(b);
	for (unsigned int i = 0; i < NRANGES; i++) {
		data[0] = 0;
		assert_int_equal(bus_access(b, i * 16ULL, data, 1, false), i % 2 == 0);
		assert_int_equal(data[0], i % 2 ? 0xff : (uint8_t)i);
	}
}

/* Lookups racing with registration of other ranges (for the sanitizers). */
struct race {
	struct bus *b;
	atomic_bool stop;
	atomic_uint hits;
};

static void count_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct race *r = opaque;

	atomic_fetch_add(&r->hits, 1);
	data[0] = (uint8_t)offset;
}

static void *reader(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->stop)) {
		uint8_t v = 0;

		/* No cmocka asserts off the main thread: they longjmp into it. */
		if (!bus_access(r->b, 0x1003, &v, 1, false) || v != 3)
			abort();
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	struct race r = {.b = *state};
	pthread_t t[3];

	atomic_init(&r.stop, false);
	atomic_init(&r.hits, 0);
	assert_int_equal(bus_register(r.b, 0x1000, 8, count_io, &r), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, &r), 0);
	for (unsigned int round = 0; round < 200; round++) {
		for (uint64_t i = 0; i < 40; i++)
			assert_int_equal(bus_register(r.b, 0x2000 + i * 8, 8, count_io, &r), 0);
		for (uint64_t i = 0; i < 40; i++)
			assert_int_equal(bus_unregister(r.b, 0x2000 + i * 8), 0);
	}
	while (atomic_load(&r.hits) < 1000)
		sched_yield();
	atomic_store(&r.stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(r.b->count, 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_register_and_dispatch),
		T(test_unmapped),
		T(test_overlap),
		T(test_invalid),
		T(test_spanning),
		T(test_unregister),
		T(test_many_random),
		T(test_concurrent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
