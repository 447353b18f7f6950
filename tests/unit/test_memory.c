/* Unit tests for guest memory: gm_ptr bounds, copies, and gm_init's layout. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "lib/layout.h"
#include "lib/memory.h"

#define PAGE 0x1000

static uint8_t buf_a[PAGE], buf_b[PAGE];

/* RAM at [0, 4 KiB) and [12 KiB, 16 KiB), a hole between. */
static void two_regions(struct guest_mem *m)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	m->regions[0] = (struct gm_region){0, PAGE, buf_a, 0};
	m->regions[1] = (struct gm_region){3 * PAGE, PAGE, buf_b, PAGE};
	m->nregions = 2;
	m->total = 2 * PAGE;
}

static void test_fake_bounds(void **state)
{
	struct guest_mem m;

	(void)state;
	gm_init_fake(&m, buf_a, PAGE);
	assert_int_equal(m.nregions, 1);
	assert_int_equal(m.fd, -1);
	assert_ptr_equal(gm_ptr(&m, 0, PAGE), buf_a);
	assert_ptr_equal(gm_ptr(&m, 0, 1), buf_a);
	assert_ptr_equal(gm_ptr(&m, 0, 0), buf_a);
	assert_ptr_equal(gm_ptr(&m, PAGE - 1, 1), buf_a + PAGE - 1);
	/* At the end: only an empty range. */
	assert_ptr_equal(gm_ptr(&m, PAGE, 0), buf_a + PAGE);
	assert_null(gm_ptr(&m, PAGE, 1));
	assert_null(gm_ptr(&m, PAGE + 1, 0));
	assert_null(gm_ptr(&m, 0, PAGE + 1));
	assert_null(gm_ptr(&m, PAGE - 1, 2));
	/* gpa + len overflowing 64 bits. */
	assert_null(gm_ptr(&m, 1, UINT64_MAX));
	assert_null(gm_ptr(&m, PAGE - 1, UINT64_MAX));
	assert_null(gm_ptr(&m, 0, UINT64_MAX));
	assert_null(gm_ptr(&m, UINT64_MAX, 1));
	assert_null(gm_ptr(&m, UINT64_MAX, 0));
	assert_null(gm_ptr(&m, UINT64_MAX - PAGE + 2, PAGE));
	assert_true(gm_valid(&m, 0, PAGE));
	assert_false(gm_valid(&m, 0, PAGE + 1));
	assert_int_equal(gm_low_end(&m), PAGE);
	gm_destroy(&m); /* does not free caller memory */
	assert_int_equal(m.fd, -1);
	assert_int_equal(m.nregions, 0);
}

static void test_two_regions(void **state)
{
	struct guest_mem m;

	(void)state;
	two_regions(&m);
	assert_ptr_equal(gm_ptr(&m, 0, PAGE), buf_a);
	assert_ptr_equal(gm_ptr(&m, PAGE, 0), buf_a + PAGE);
	/* The hole. */
	assert_null(gm_ptr(&m, PAGE, 1));
	assert_null(gm_ptr(&m, 2 * PAGE, 0));
	assert_null(gm_ptr(&m, 2 * PAGE, 1));
	assert_null(gm_ptr(&m, 3 * PAGE - 1, 1));
	assert_null(gm_ptr(&m, 3 * PAGE - 1, 2));
	/* Spanning regions is refused even though both ends are RAM. */
	assert_null(gm_ptr(&m, PAGE - 1, 2));
	assert_null(gm_ptr(&m, 0, 4 * PAGE));
	assert_null(gm_ptr(&m, PAGE - 1, 2 * PAGE + 2));
	/* The second region. */
	assert_ptr_equal(gm_ptr(&m, 3 * PAGE, PAGE), buf_b);
	assert_ptr_equal(gm_ptr(&m, 3 * PAGE, 0), buf_b);
	assert_ptr_equal(gm_ptr(&m, 4 * PAGE - 1, 1), buf_b + PAGE - 1);
	assert_ptr_equal(gm_ptr(&m, 4 * PAGE, 0), buf_b + PAGE);
	assert_null(gm_ptr(&m, 4 * PAGE, 1));
	assert_null(gm_ptr(&m, 3 * PAGE + 1, PAGE));
	assert_null(gm_ptr(&m, 3 * PAGE, UINT64_MAX));
	assert_null(gm_ptr(&m, 3 * PAGE + 1, UINT64_MAX - 3 * PAGE));
	assert_null(gm_ptr(&m, UINT64_MAX, 1));
	assert_int_equal(gm_low_end(&m), PAGE);
}

/* A region that ends exactly at the top of the 64-bit space. */
static void test_region_at_top(void **state)
{
	struct guest_mem m;
	const uint64_t top = UINT64_MAX - PAGE + 1;

	(void)state;
	memset(&m, 0, sizeof(m));
	m.fd = -1;
	m.regions[0] = (struct gm_region){top, PAGE, buf_a, 0};
	m.nregions = 1;
	assert_ptr_equal(gm_ptr(&m, top, PAGE), buf_a);
	assert_ptr_equal(gm_ptr(&m, UINT64_MAX, 1), buf_a + PAGE - 1);
	assert_ptr_equal(gm_ptr(&m, UINT64_MAX, 0), buf_a + PAGE - 1);
	assert_null(gm_ptr(&m, UINT64_MAX, 2));
	assert_null(gm_ptr(&m, top, PAGE + 1));
	assert_null(gm_ptr(&m, top, UINT64_MAX));
	assert_null(gm_ptr(&m, top - 1, 1));
	assert_null(gm_ptr(&m, 0, 1));
}

/* Regions that touch: a range starting where one region ends belongs to the next. */
static void test_adjacent_regions(void **state)
{
	struct guest_mem m;

	(void)state;
	memset(&m, 0, sizeof(m));
	m.fd = -1;
	m.regions[0] = (struct gm_region){0, PAGE, buf_a, 0};
	m.regions[1] = (struct gm_region){PAGE, PAGE, buf_b, PAGE};
	m.nregions = 2;
	assert_ptr_equal(gm_ptr(&m, PAGE - 1, 1), buf_a + PAGE - 1);
	assert_ptr_equal(gm_ptr(&m, 2 * PAGE - 1, 1), buf_b + PAGE - 1);
	assert_null(gm_ptr(&m, PAGE - 1, 2)); /* spans two mappings */
	assert_ptr_equal(gm_ptr(&m, PAGE, 1), buf_b);
	assert_ptr_equal(gm_ptr(&m, PAGE, PAGE), buf_b);
}

static void test_read_write(void **state)
{
	struct guest_mem m;
	uint8_t out[16], in[16];

	(void)state;
	two_regions(&m);
	memset(buf_a, 0, PAGE);
	memset(buf_b, 0, PAGE);
	for (unsigned int i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i + 1);
	assert_int_equal(gm_write(&m, PAGE - 16, in, 16), 0);
	assert_memory_equal(buf_a + PAGE - 16, in, 16);
	assert_int_equal(gm_read(&m, out, PAGE - 16, 16), 0);
	assert_memory_equal(out, in, 16);
	assert_int_equal(gm_write(&m, 3 * PAGE, in, 16), 0);
	assert_memory_equal(buf_b, in, 16);

	/* Out of range: -EFAULT and nothing copied. */
	memset(out, 0xee, sizeof(out));
	assert_int_equal(gm_read(&m, out, PAGE - 8, 16), -EFAULT);
	assert_int_equal(gm_read(&m, out, 2 * PAGE, 1), -EFAULT);
	assert_int_equal(gm_read(&m, out, UINT64_MAX - 3, 16), -EFAULT);
	for (unsigned int i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 0xee);
	assert_int_equal(gm_write(&m, PAGE - 8, in, 16), -EFAULT);
	assert_int_equal(gm_write(&m, 4 * PAGE - 1, in, 2), -EFAULT);
	assert_int_equal(gm_write(&m, 3 * PAGE - 1, in, 2), -EFAULT);
	for (unsigned int i = 0; i < 8; i++)
		assert_int_equal(buf_a[PAGE - 8 + i], in[8 + i]); /* unchanged */
	assert_int_equal(buf_b[PAGE - 1], 0);
	/* Empty copies at the end of RAM are fine. */
	assert_int_equal(gm_read(&m, out, PAGE, 0), 0);
	assert_int_equal(gm_write(&m, 4 * PAGE, in, 0), 0);
	assert_int_equal(gm_read(&m, out, 2 * PAGE, 0), -EFAULT);
}

static void test_init_64m(void **state)
{
	struct guest_mem m;
	struct vmm_err err = {{0}};
	uint8_t v = 0x5a, got = 0;

	(void)state;
	assert_int_equal(gm_init(&m, MiB(64), &err), 0);
	assert_true(m.fd >= 0);
	assert_non_null(m.base);
	assert_int_equal(m.total, MiB(64));
	assert_int_equal(m.nregions, 1);
	assert_int_equal(m.regions[0].gpa, 0);
	assert_int_equal(m.regions[0].size, MiB(64));
	assert_ptr_equal(m.regions[0].host, m.base);
	assert_int_equal(m.regions[0].fd_offset, 0);
	assert_int_equal(gm_low_end(&m), MiB(64));
	assert_ptr_equal(gm_ptr(&m, MiB(64) - 1, 1), m.base + MiB(64) - 1);
	assert_null(gm_ptr(&m, MiB(64), 1));
	assert_null(gm_ptr(&m, LAYOUT_MMIO_HOLE_END, 0));
	/* Guest writes land in the shared memfd. */
	assert_int_equal(gm_write(&m, MiB(64) - 1, &v, 1), 0);
	assert_int_equal(pread(m.fd, &got, 1, (off_t)(MiB(64) - 1)), 1);
	assert_int_equal(got, 0x5a);
	assert_int_equal(gm_write(&m, MiB(64) - 1, &v, 2), -EFAULT);
	gm_destroy(&m);
	assert_int_equal(m.fd, -1);
	assert_null(m.base);
	assert_int_equal(m.nregions, 0);
	gm_destroy(&m); /* twice is harmless */
}

static void test_init_above_hole(void **state)
{
	struct guest_mem m;
	struct vmm_err err = {{0}};
	const uint64_t size = GiB(4);
	const uint64_t high = size - LAYOUT_MMIO_HOLE;
	uint8_t v = 0xa7, got = 0;

	(void)state;
	/* MAP_NORESERVE: only the pages touched below are ever allocated. */
	assert_int_equal(gm_init(&m, size, &err), 0);
	assert_int_equal(m.total, size);
	assert_int_equal(m.nregions, 2);
	assert_int_equal(m.regions[0].gpa, 0);
	assert_int_equal(m.regions[0].size, LAYOUT_MMIO_HOLE);
	assert_ptr_equal(m.regions[0].host, m.base);
	assert_int_equal(m.regions[1].gpa, LAYOUT_MMIO_HOLE_END);
	assert_int_equal(m.regions[1].gpa, GiB(4));
	assert_int_equal(m.regions[1].size, high);
	assert_int_equal(m.regions[1].fd_offset, LAYOUT_MMIO_HOLE);
	assert_ptr_equal(m.regions[1].host, m.base + LAYOUT_MMIO_HOLE);
	assert_int_equal(gm_low_end(&m), LAYOUT_MMIO_HOLE);

	/* The hole is not RAM. */
	assert_non_null(gm_ptr(&m, LAYOUT_MMIO_HOLE - 1, 1));
	assert_null(gm_ptr(&m, LAYOUT_MMIO_HOLE, 1));
	assert_null(gm_ptr(&m, LAYOUT_MMIO_HOLE - 1, 2));
	assert_null(gm_ptr(&m, LAYOUT_IOAPIC, 4));
	assert_null(gm_ptr(&m, GiB(4) - 1, 1));
	/* RAM resumes at 4 GiB and ends 1 GiB later. */
	assert_ptr_equal(gm_ptr(&m, GiB(4), 1), m.base + LAYOUT_MMIO_HOLE);
	assert_ptr_equal(gm_ptr(&m, GiB(4) + high - 1, 1), m.base + size - 1);
	assert_null(gm_ptr(&m, GiB(4) + high, 1));
	assert_null(gm_ptr(&m, GiB(4), high + 1));

	assert_int_equal(gm_write(&m, GiB(4), &v, 1), 0);
	assert_int_equal(pread(m.fd, &got, 1, (off_t)LAYOUT_MMIO_HOLE), 1);
	assert_int_equal(got, 0xa7);
	v = 0x3c;
	assert_int_equal(pwrite(m.fd, &v, 1, (off_t)(size - 1)), 1);
	assert_int_equal(gm_read(&m, &got, GiB(4) + high - 1, 1), 0);
	assert_int_equal(got, 0x3c);
	gm_destroy(&m);
	assert_int_equal(m.fd, -1);
}

static void test_init_exact_hole(void **state)
{
	struct guest_mem m;
	struct vmm_err err = {{0}};

	(void)state;
	/* Exactly the RAM below the hole: one region. */
	assert_int_equal(gm_init(&m, LAYOUT_MMIO_HOLE, &err), 0);
	assert_int_equal(m.nregions, 1);
	assert_int_equal(m.regions[0].size, LAYOUT_MMIO_HOLE);
	assert_null(gm_ptr(&m, GiB(4), 0));
	gm_destroy(&m);
}

/* "Safe on a zeroed struct": a zeroed struct's fd is 0, which must not be closed. */
/* RAM's size is sealed: the fd cannot shrink or grow (a device process holds it), holes can be
 * punched. */
static void test_size_sealed(void **state)
{
	struct guest_mem m;
	struct vmm_err err = {""};
	uint8_t *p;

	(void)state;
	assert_int_equal(gm_init(&m, MiB(16), &err), 0);
	assert_int_equal(fcntl(m.fd, F_GET_SEALS), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	assert_int_equal(ftruncate(m.fd, MiB(8)), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(ftruncate(m.fd, MiB(32)), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(fcntl(m.fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
	assert_int_equal(errno, EPERM);
	/* What the balloon does: the page reads back as zero. */
	p = gm_ptr(&m, MiB(1), 4096);
	assert_non_null(p);
	memset(p, 0xaa, 4096);
	assert_int_equal(fallocate(m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB(1), 4096),
			 0);
	assert_int_equal(p[0], 0);
	gm_destroy(&m);
}

static void test_destroy_zeroed(void **state)
{
	struct guest_mem m;
	int saved = dup(0);
	bool closed;

	(void)state;
	assert_true(saved >= 0);
	memset(&m, 0, sizeof(m));
	gm_destroy(&m);
	assert_int_equal(m.fd, -1);
	closed = fcntl(0, F_GETFD) < 0;
	if (closed)
		dup2(saved, 0);
	close(saved);
	assert_false(closed); /* gm_destroy on a zeroed guest_mem must not close fd 0 */
}

int main(void)
{
	/* clang-format off */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fake_bounds),
		cmocka_unit_test(test_two_regions),
		cmocka_unit_test(test_region_at_top),
		cmocka_unit_test(test_adjacent_regions),
		cmocka_unit_test(test_read_write),
		cmocka_unit_test(test_init_64m),
		cmocka_unit_test(test_init_above_hole),
		cmocka_unit_test(test_init_exact_hole),
		cmocka_unit_test(test_size_sealed),
		cmocka_unit_test(test_destroy_zeroed),
	};
	/* clang-format on */

	return cmocka_run_group_tests(tests, NULL, NULL);
}
