/* Freestanding helpers: memory/string functions and TSC delays. */
#include "guest.h"

void *memcpy(void *dst, const void *src, size_t n)
{
	u8 *d = dst;
	const u8 *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	u8 *d = dst;

	while (n--)
		*d++ = (u8)c;
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;

	for (; n; n--, x++, y++) {
		if (*x != *y)
			return *x < *y ? -1 : 1;
	}
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

static u64 tsc_khz;
static bool tsc_known;

/* TSC rate from CPUID (hypervisor leaf, 0x15, 0x16); else assume 1 GHz. */
static u64 tsc_rate_khz(void)
{
	u32 a, b, c, d, max;

	if (tsc_khz)
		return tsc_khz;
	tsc_khz = 1000000;
	cpuid(1, 0, &a, &b, &c, &d);
	if (c & (1u << 31)) {
		cpuid(0x40000000, 0, &max, &b, &c, &d);
		if (max >= 0x40000010 && max < 0x40010000) {
			cpuid(0x40000010, 0, &a, &b, &c, &d);
			if (a) {
				tsc_khz = a;
				tsc_known = true;
				return tsc_khz;
			}
		}
	}
	cpuid(0, 0, &max, &b, &c, &d);
	if (max >= 0x15) {
		cpuid(0x15, 0, &a, &b, &c, &d);
		if (a && b && c) {
			tsc_khz = (u64)c * b / a / 1000;
			tsc_known = true;
			return tsc_khz;
		}
	}
	if (max >= 0x16) {
		cpuid(0x16, 0, &a, &b, &c, &d);
		if (a & 0xffff) {
			tsc_khz = (u64)(a & 0xffff) * 1000;
			tsc_known = true;
		}
	}
	return tsc_khz;
}

u64 tsc_khz_known(void)
{
	u64 khz = tsc_rate_khz();

	return tsc_known ? khz : 0;
}

u64 tsc_ticks_us(u64 us)
{
	return us * tsc_rate_khz() / 1000;
}

void delay_us(u64 us)
{
	u64 start = rdtsc(), ticks = tsc_ticks_us(us);

	while (rdtsc() - start < ticks)
		cpu_relax();
}
