/*
 * MC146818 RTC and the PC's CMOS RAM.
 *
 * The clock registers are not stored: each read takes the host's current UTC
 * time, so the guest's clock never drifts and never needs updating. Guest
 * writes to them are ignored (the host owns the time). No periodic, alarm or
 * update-ended interrupts are generated; register C always reads 0.
 */
#include "cmos.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "lib/layout.h"

#define CMOS_SIZE	128
#define CMOS_INDEX_MASK 0x7f /* bit 7 of the index port is the NMI mask */

/* Clock and control registers. */
#define RTC_SECONDS	  0x00
#define RTC_SECONDS_ALARM 0x01
#define RTC_MINUTES	  0x02
#define RTC_MINUTES_ALARM 0x03
#define RTC_HOURS	  0x04
#define RTC_HOURS_ALARM	  0x05
#define RTC_DAY_OF_WEEK	  0x06
#define RTC_DAY_OF_MONTH  0x07
#define RTC_MONTH	  0x08
#define RTC_YEAR	  0x09
#define RTC_REG_A	  0x0a
#define RTC_REG_B	  0x0b
#define RTC_REG_C	  0x0c
#define RTC_REG_D	  0x0d
#define RTC_CENTURY	  0x32

#define REG_A_UIP	0x80
#define REG_A_DEFAULT	0x26 /* 32.768 kHz time base, 1024 Hz periodic rate */
#define REG_B_24H	0x02
#define REG_B_DM_BINARY 0x04
#define REG_D_VRT	0x80 /* RAM and time are valid */
#define HOUR_PM		0x80 /* 12-hour mode */

/* Memory size registers. */
#define CMOS_BASE_MEM_LO 0x15 /* KiB below 1 MiB */
#define CMOS_BASE_MEM_HI 0x16
#define CMOS_EXT_MEM_LO	 0x17 /* KiB from 1 MiB, up to 64 MiB */
#define CMOS_EXT_MEM_HI	 0x18
#define CMOS_EXT_MEM2_LO 0x30 /* the same, as the BIOS reports it */
#define CMOS_EXT_MEM2_HI 0x31
#define CMOS_MEM_16M_LO	 0x34 /* 64 KiB units from 16 MiB to the hole */
#define CMOS_MEM_16M_HI	 0x35
#define CMOS_MEM_4G_LO	 0x5b /* 64 KiB units above 4 GiB, 24 bits */
#define CMOS_MEM_4G_MID	 0x5c
#define CMOS_MEM_4G_HI	 0x5d

#define BASE_MEM_KIB 640

struct cmos {
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t ram[CMOS_SIZE];
};

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void put16(struct cmos *c, unsigned int lo, uint64_t v)
{
	c->ram[lo] = (uint8_t)v;
	c->ram[lo + 1] = (uint8_t)(v >> 8);
}

static void set_memory_size(struct cmos *c, uint64_t low_mem, uint64_t high_mem)
{
	uint64_t ext = 0, above16 = 0;

	put16(c, CMOS_BASE_MEM_LO, min_u64(low_mem >> 10, BASE_MEM_KIB));
	if (low_mem > MiB(1))
		ext = min_u64(low_mem - MiB(1), MiB(63)) >> 10;
	put16(c, CMOS_EXT_MEM_LO, ext);
	put16(c, CMOS_EXT_MEM2_LO, ext);
	if (low_mem > MiB(16))
		above16 = min_u64((low_mem - MiB(16)) >> 16, 0xffff);
	put16(c, CMOS_MEM_16M_LO, above16);
	high_mem = min_u64(high_mem >> 16, 0xffffff);
	c->ram[CMOS_MEM_4G_LO] = (uint8_t)high_mem;
	c->ram[CMOS_MEM_4G_MID] = (uint8_t)(high_mem >> 8);
	c->ram[CMOS_MEM_4G_HI] = (uint8_t)(high_mem >> 16);
}

static bool is_clock_reg(uint8_t index)
{
	switch (index) {
	case RTC_SECONDS:
	case RTC_MINUTES:
	case RTC_HOURS:
	case RTC_DAY_OF_WEEK:
	case RTC_DAY_OF_MONTH:
	case RTC_MONTH:
	case RTC_YEAR:
	case RTC_CENTURY:
		return true;
	default:
		return false;
	}
}

/* Encode @v (0-99) as register B asks: BCD unless DM is set. */
static uint8_t rtc_encode(const struct cmos *c, unsigned int v)
{
	if (c->ram[RTC_REG_B] & REG_B_DM_BINARY)
		return (uint8_t)v;
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t rtc_hours(const struct cmos *c, unsigned int hour)
{
	unsigned int h12;

	if (c->ram[RTC_REG_B] & REG_B_24H)
		return rtc_encode(c, hour);
	h12 = hour % 12 ? hour % 12 : 12;
	return rtc_encode(c, h12) | (hour >= 12 ? HOUR_PM : 0);
}

static uint8_t read_clock(const struct cmos *c, uint8_t index)
{
	struct timespec ts;
	struct tm tm;
	time_t t;

	clock_gettime(CLOCK_REALTIME, &ts);
	t = ts.tv_sec;
	if (!gmtime_r(&t, &tm))
		return 0;
	switch (index) {
	case RTC_SECONDS:
		/* tm_sec is 60 on a leap second; the RTC has no such value. */
		return rtc_encode(c, tm.tm_sec > 59 ? 59 : (unsigned int)tm.tm_sec);
	case RTC_MINUTES:
		return rtc_encode(c, (unsigned int)tm.tm_min);
	case RTC_HOURS:
		return rtc_hours(c, (unsigned int)tm.tm_hour);
	case RTC_DAY_OF_WEEK:
		return rtc_encode(c, (unsigned int)tm.tm_wday + 1); /* Sunday is 1 */
	case RTC_DAY_OF_MONTH:
		return rtc_encode(c, (unsigned int)tm.tm_mday);
	case RTC_MONTH:
		return rtc_encode(c, (unsigned int)tm.tm_mon + 1);
	case RTC_YEAR:
		return rtc_encode(c, (unsigned int)(tm.tm_year + 1900) % 100);
	default: /* RTC_CENTURY */
		return rtc_encode(c, (unsigned int)(tm.tm_year + 1900) / 100 % 100);
	}
}

static uint8_t read_data(struct cmos *c)
{
	uint8_t index = c->index, v;

	if (is_clock_reg(index))
		return read_clock(c, index);
	switch (index) {
	case RTC_REG_A:
		return c->ram[index] & ~REG_A_UIP; /* never mid-update */
	case RTC_REG_C:
		/* Reading C acknowledges the interrupt flags; none are raised. */
		v = c->ram[index];
		c->ram[index] = 0;
		return v;
	case RTC_REG_D:
		return REG_D_VRT;
	default:
		return c->ram[index];
	}
}

static void write_data(struct cmos *c, uint8_t v)
{
	uint8_t index = c->index;

	if (is_clock_reg(index))
		return; /* the time is the host's */
	switch (index) {
	case RTC_REG_A:
		c->ram[index] = v & ~REG_A_UIP;
		break;
	case RTC_REG_C:
	case RTC_REG_D:
		break; /* read-only */
	default:
		c->ram[index] = v;
		break;
	}
}

void cmos_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct cmos *c = opaque;

	if (offset > 1 || len == 0)
		return;
	pthread_mutex_lock(&c->lock);
	if (offset == 0) {
		/* The index port is write-only; the NMI mask bit is not modelled. */
		if (is_write)
			c->index = data[0] & CMOS_INDEX_MASK;
		else
			data[0] = 0xff;
	} else if (is_write) {
		write_data(c, data[0]);
	} else {
		data[0] = read_data(c);
	}
	pthread_mutex_unlock(&c->lock);
}

struct cmos *cmos_create(uint64_t low_mem, uint64_t high_mem)
{
	struct cmos *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	c->ram[RTC_REG_A] = REG_A_DEFAULT;
	c->ram[RTC_REG_B] = REG_B_24H;
	c->ram[RTC_REG_C] = 0;
	c->ram[RTC_REG_D] = REG_D_VRT;
	set_memory_size(c, low_mem, high_mem);
	/*
	 * glibc's gmtime_r() reads /etc/localtime on its first call in the
	 * process; do that now, not on a vCPU thread under its seccomp filter.
	 */
	tzset();
	return c;
}

void cmos_destroy(struct cmos *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c);
}
