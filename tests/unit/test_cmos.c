/* Unit tests for the CMOS/RTC model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <time.h>

#include "devices/cmos.h"
#include "lib/layout.h"

#define REG_A 0x0a
#define REG_B 0x0b
#define REG_C 0x0c
#define REG_D 0x0d

static void set_index(struct cmos *c, uint8_t index)
{
	cmos_io(c, 0, &index, 1, true);
}

static uint8_t get(struct cmos *c, uint8_t index)
{
	uint8_t v = 0xff;

	set_index(c, index);
	cmos_io(c, 1, &v, 1, false);
	return v;
}

static void put(struct cmos *c, uint8_t index, uint8_t v)
{
	set_index(c, index);
	cmos_io(c, 1, &v, 1, true);
}

static unsigned int get16(struct cmos *c, uint8_t lo)
{
	return get(c, lo) | (unsigned int)get(c, lo + 1) << 8;
}

static unsigned int get24(struct cmos *c, uint8_t lo)
{
	return get16(c, lo) | (unsigned int)get(c, lo + 2) << 16;
}

static unsigned int from_bcd(uint8_t v)
{
	assert_true((v & 0x0f) < 10);
	assert_true((v >> 4) < 10);
	return (v >> 4) * 10 + (v & 0x0f);
}

static time_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec;
}

/* The clock registers as read, plus the host time they must match. */
struct rtc_read {
	uint8_t sec, min, hour, wday, mday, mon, year, century;
	struct tm tm;
};

/* Read the clock within one host second, so it can be compared exactly. */
static void read_clock(struct cmos *c, struct rtc_read *r)
{
	for (int tries = 0; tries < 100; tries++) {
		time_t t0 = now(), t1;

		r->sec = get(c, 0x00);
		r->min = get(c, 0x02);
		r->hour = get(c, 0x04);
		r->wday = get(c, 0x06);
		r->mday = get(c, 0x07);
		r->mon = get(c, 0x08);
		r->year = get(c, 0x09);
		r->century = get(c, 0x32);
		t1 = now();
		if (t0 == t1) {
			assert_non_null(gmtime_r(&t0, &r->tm));
			return;
		}
	}
	fail_msg("the clock kept ticking over while being read");
}

static void check_date(const struct rtc_read *r, unsigned int (*dec)(uint8_t))
{
	int sec = r->tm.tm_sec > 59 ? 59 : r->tm.tm_sec;

	assert_int_equal(dec(r->sec), sec);
	assert_int_equal(dec(r->min), r->tm.tm_min);
	assert_int_equal(dec(r->wday), r->tm.tm_wday + 1);
	assert_int_equal(dec(r->mday), r->tm.tm_mday);
	assert_int_equal(dec(r->mon), r->tm.tm_mon + 1);
	assert_int_equal(dec(r->year), (r->tm.tm_year + 1900) % 100);
	assert_int_equal(dec(r->century), (r->tm.tm_year + 1900) / 100);
}

static unsigned int from_bin(uint8_t v)
{
	return v;
}

static void test_defaults(void **state)
{
	struct cmos *c = cmos_create(MiB(64), 0);

	(void)state;
	assert_non_null(c);
	assert_int_equal(get(c, REG_A), 0x26);
	assert_int_equal(get(c, REG_B), 0x02);
	assert_int_equal(get(c, REG_C), 0x00);
	assert_int_equal(get(c, REG_D), 0x80);
	/* C and D are read-only; A's UIP bit cannot be set. */
	put(c, REG_C, 0xf0);
	assert_int_equal(get(c, REG_C), 0x00);
	put(c, REG_D, 0x00);
	assert_int_equal(get(c, REG_D), 0x80);
	put(c, REG_A, 0xa6);
	assert_int_equal(get(c, REG_A), 0x26);
	put(c, REG_A, 0x2f);
	assert_int_equal(get(c, REG_A), 0x2f);
	/* B is writable. */
	put(c, REG_B, 0x16);
	assert_int_equal(get(c, REG_B), 0x16);
	cmos_destroy(c);
	cmos_destroy(NULL);
}

static void test_time_bcd(void **state)
{
	struct cmos *c = cmos_create(MiB(64), 0);
	struct rtc_read r;

	(void)state;
	read_clock(c, &r);
	check_date(&r, from_bcd);
	assert_int_equal(from_bcd(r.hour), r.tm.tm_hour);
	/* This century, in BCD. */
	assert_int_equal(r.century, 0x20);
	cmos_destroy(c);
}

static void test_time_binary(void **state)
{
	struct cmos *c = cmos_create(MiB(64), 0);
	struct rtc_read r;

	(void)state;
	put(c, REG_B, 0x06); /* 24-hour, binary */
	read_clock(c, &r);
	check_date(&r, from_bin);
	assert_int_equal(r.hour, r.tm.tm_hour);
	assert_int_equal(r.century, 20);
	cmos_destroy(c);
}

static void test_time_12h(void **state)
{
	struct cmos *c = cmos_create(MiB(64), 0);
	struct rtc_read r;
	unsigned int h12;
	bool pm;

	(void)state;
	put(c, REG_B, 0x00); /* 12-hour, BCD */
	read_clock(c, &r);
	check_date(&r, from_bcd);
	pm = r.tm.tm_hour >= 12;
	h12 = r.tm.tm_hour % 12 ? r.tm.tm_hour % 12 : 12;
	assert_int_equal(!!(r.hour & 0x80), pm);
	assert_int_equal(from_bcd(r.hour & 0x7f), h12);

	put(c, REG_B, 0x04); /* 12-hour, binary */
	read_clock(c, &r);
	pm = r.tm.tm_hour >= 12;
	h12 = r.tm.tm_hour % 12 ? r.tm.tm_hour % 12 : 12;
	assert_int_equal(!!(r.hour & 0x80), pm);
	assert_int_equal(r.hour & 0x7f, h12);
	cmos_destroy(c);
}

static void test_time_writes_ignored(void **state)
{
	struct cmos *c = cmos_create(MiB(64), 0);
	struct rtc_read r;

	(void)state;
	put(c, 0x09, 0x42);
	put(c, 0x08, 0x13);
	put(c, 0x32, 0x19);
	read_clock(c, &r);
	check_date(&r, from_bcd);
	/* Alarm registers are storage. */
	put(c, 0x01, 0x11);
	put(c, 0x03, 0x22);
	put(c, 0x05, 0x33);
	assert_int_equal(get(c, 0x01), 0x11);
	assert_int_equal(get(c, 0x03), 0x22);
	assert_int_equal(get(c, 0x05), 0x33);
	cmos_destroy(c);
}

struct mem_case {
	uint64_t low, high;
	unsigned int base_kib, ext_kib, above16, above4g;
};

static void check_memory(const struct mem_case *m)
{
	struct cmos *c = cmos_create(m->low, m->high);

	assert_non_null(c);
	assert_int_equal(get16(c, 0x15), m->base_kib);
	assert_int_equal(get16(c, 0x17), m->ext_kib);
	assert_int_equal(get16(c, 0x30), m->ext_kib);
	assert_int_equal(get16(c, 0x34), m->above16);
	assert_int_equal(get24(c, 0x5b), m->above4g);
	cmos_destroy(c);
}

static void test_memory_sizes(void **state)
{
	static const struct mem_case cases[] = {
		/* 64 MiB: 63 MiB of extended memory, 48 MiB above 16 MiB. */
		{MiB(64), 0, 640, 0xfc00, 0x0300, 0},
		/* 256 MiB: extended memory is capped at 63 MiB. */
		{MiB(256), 0, 640, 0xfc00, 0x0f00, 0},
		/* 8 GiB: 3 GiB below the hole, 5 GiB above 4 GiB. */
		{GiB(3), GiB(5), 640, 0xfc00, 0xbf00, 0x014000},
		/* Small guests. */
		{MiB(16), 0, 640, 0x3c00, 0, 0},
		{MiB(2), 0, 640, 0x0400, 0, 0},
		{MiB(1), 0, 640, 0, 0, 0},
		{KiB(512), 0, 512, 0, 0, 0},
		/* 24-bit cap above 4 GiB (1 TiB is 0x1000000 units). */
		{GiB(3), GiB(1024), 640, 0xfc00, 0xbf00, 0xffffff},
		{GiB(3), GiB(1024) - KiB(64), 640, 0xfc00, 0xbf00, 0xffffff},
	};

	(void)state;
	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_memory(&cases[i]);
}

static void test_nmi_bit_and_wrap(void **state)
{
	struct cmos *c = cmos_create(MiB(64), 0);
	uint8_t v;

	(void)state;
	/* Bit 7 of the index is the NMI mask, not part of the index. */
	assert_int_equal(get(c, 0x80 | REG_D), 0x80);
	assert_int_equal(get(c, 0x80 | REG_A), 0x26);
	put(c, 0x80 | 0x40, 0x5a);
	assert_int_equal(get(c, 0x40), 0x5a);
	assert_int_equal(get(c, 0xc0), 0x5a);
	/* The last byte, through a wrapping index. */
	put(c, 0xff, 0xa5);
	assert_int_equal(get(c, 0x7f), 0xa5);
	put(c, 0x7f, 0x3c);
	assert_int_equal(get(c, 0xff), 0x3c);
	/* Index 0x80 is the seconds register. */
	v = get(c, 0x80);
	assert_true(from_bcd(v) < 60);
	cmos_destroy(c);
}

static void test_plain_storage(void **state)
{
	struct cmos *c = cmos_create(MiB(64), 0);

	(void)state;
	for (unsigned int i = 0x0e; i < 0x80; i++) {
		if (i == 0x32)
			continue;
		put(c, (uint8_t)i, (uint8_t)(i ^ 0xa5));
	}
	for (unsigned int i = 0x0e; i < 0x80; i++) {
		if (i == 0x32)
			continue;
		assert_int_equal(get(c, (uint8_t)i), (uint8_t)(i ^ 0xa5));
	}
	cmos_destroy(c);
}

static void test_odd_accesses(void **state)
{
	struct cmos *c = cmos_create(MiB(64), 0);
	uint8_t d[8];
	static const uint32_t lens[] = {0, 1, 2, 4, 8};

	(void)state;
	put(c, 0x50, 0x12);
	/* The index port is write-only. */
	memset(d, 0, sizeof(d));
	cmos_io(c, 0, d, 1, false);
	assert_int_equal(d[0], 0xff);
	/* Wide accesses use their first byte; the rest is left alone. */
	for (unsigned int l = 0; l < 5; l++) {
		for (uint64_t off = 0; off < 4; off++) {
			memset(d, 0xff, sizeof(d));
			cmos_io(c, off, d, lens[l], false);
			for (uint32_t i = 1; i < lens[l]; i++)
				assert_int_equal(d[i], 0xff);
		}
	}
	d[0] = 0x50;
	d[1] = 0x51;
	cmos_io(c, 0, d, 2, true);
	memset(d, 0xff, sizeof(d));
	cmos_io(c, 1, d, 4, false);
	assert_int_equal(d[0], 0x12);
	/* Offsets past the data port are ignored. */
	d[0] = 0x77;
	cmos_io(c, 2, d, 1, true);
	cmos_io(c, UINT64_MAX, d, 1, true);
	assert_int_equal(get(c, 0x50), 0x12);
	cmos_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_time_bcd),
		cmocka_unit_test(test_time_binary),
		cmocka_unit_test(test_time_12h),
		cmocka_unit_test(test_time_writes_ignored),
		cmocka_unit_test(test_memory_sizes),
		cmocka_unit_test(test_nmi_bit_and_wrap),
		cmocka_unit_test(test_plain_storage),
		cmocka_unit_test(test_odd_accesses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
