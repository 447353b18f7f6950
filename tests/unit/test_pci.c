/* PCI bus 0: host bridge identity, config mechanism #1, ECAM, write masks, hostile accesses. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/pci.h"

static uint32_t cf8(uint32_t dev, uint32_t fn, uint32_t reg)
{
	return 0x80000000u | (dev << 11) | (fn << 8) | (reg & 0xfc);
}

static uint32_t pio_read(struct pci_root *r, uint32_t addr, uint32_t port_off, uint32_t len)
{
	uint8_t d[4];
	uint32_t v = 0;

	pci_pio(r, 0, (uint8_t *)&addr, 4, true);
	memset(d, 0xff, sizeof(d));
	pci_pio(r, port_off, d, len, false);
	memcpy(&v, d, len);
	return v;
}

static void test_host_bridge(void **state)
{
	struct pci_root r;

	(void)state;
	pci_root_init(&r);
	assert_int_equal(pio_read(&r, cf8(0, 0, 0), 4, 4), 0x00081b36);
	assert_int_equal(pio_read(&r, cf8(0, 0, 8), 4, 4) >> 8, 0x060000);
	assert_int_equal(pio_read(&r, cf8(0, 0, 0), 6, 2), 0x0008); /* device id via 0xcfe */
	assert_int_equal(pio_read(&r, cf8(0, 0, 0xc), 6, 1), 0);   /* header type 0 */
	/* Empty slots and other functions read as all ones. */
	assert_int_equal(pio_read(&r, cf8(1, 0, 0), 4, 4), 0xffffffffu);
	assert_int_equal(pio_read(&r, cf8(0, 1, 0), 4, 4), 0xffffffffu);
	/* Enable bit clear, or another bus: no device. */
	assert_int_equal(pio_read(&r, cf8(0, 0, 0) & 0x7fffffff, 4, 4), 0xffffffffu);
	assert_int_equal(pio_read(&r, cf8(0, 0, 0) | (1u << 16), 4, 4), 0xffffffffu);
	pci_root_destroy(&r);
}

static void test_config_address_register(void **state)
{
	struct pci_root r;
	uint32_t v = 0x80001234, back = 0;
	uint8_t b = 0x55;

	(void)state;
	pci_root_init(&r);
	pci_pio(&r, 0, (uint8_t *)&v, 4, true);
	pci_pio(&r, 0, (uint8_t *)&back, 4, false);
	assert_int_equal(back, 0x80001234);
	/* Byte writes to 0xcf8-0xcfb do not change CONFIG_ADDRESS. */
	pci_pio(&r, 1, &b, 1, true);
	pci_pio(&r, 0, (uint8_t *)&back, 4, false);
	assert_int_equal(back, 0x80001234);
	pci_root_destroy(&r);
}

static void test_write_mask(void **state)
{
	struct pci_root r;
	uint32_t addr = cf8(0, 0, 0);
	uint16_t cmd = 0xffff, id = 0x1234;

	(void)state;
	pci_root_init(&r);
	pci_pio(&r, 0, (uint8_t *)&addr, 4, true);
	pci_pio(&r, 4, (uint8_t *)&id, 2, true); /* vendor id is read-only */
	assert_int_equal(pio_read(&r, cf8(0, 0, 0), 4, 2), 0x1b36);
	addr = cf8(0, 0, 4);
	pci_pio(&r, 0, (uint8_t *)&addr, 4, true);
	pci_pio(&r, 4, (uint8_t *)&cmd, 2, true);
	assert_int_equal(pio_read(&r, cf8(0, 0, 4), 4, 2), 0x0407);
	pci_root_destroy(&r);
}

static void test_ecam(void **state)
{
	struct pci_root r;
	uint32_t v = 0;

	(void)state;
	pci_root_init(&r);
	pci_ecam(&r, 0, (uint8_t *)&v, 4, false);
	assert_int_equal(v, 0x00081b36);
	pci_ecam(&r, (3u << 15), (uint8_t *)&v, 4, false);
	assert_int_equal(v, 0xffffffffu);
	/* Extended config space of a present device reads as 0 (no capabilities). */
	pci_ecam(&r, 0x100, (uint8_t *)&v, 4, false);
	assert_int_equal(v, 0);
	pci_root_destroy(&r);
}

static void test_hostile_lengths(void **state)
{
	struct pci_root r;
	uint8_t d[8];

	(void)state;
	pci_root_init(&r);
	/* Accesses running past the 256-byte space or longer than 4 bytes are refused. */
	memset(d, 0, sizeof(d));
	pci_cfg_access(&r, 0, 0, 254, d, 4, false);
	assert_int_equal(d[0], 0xff);
	pci_cfg_access(&r, 0, 0, 0, d, 8, false);
	assert_int_equal(d[7], 0xff);
	pci_cfg_access(&r, 0, 0, 300, d, 1, true);
	pci_cfg_access(&r, 99, 0, 0, d, 4, true);
	pci_cfg_access(&r, 0, 0, 0, d, 0, false);
	pci_root_destroy(&r);
}

static void test_add_device(void **state)
{
	struct pci_root r;
	struct pci_function f[PCI_MAX_DEVICES];

	(void)state;
	pci_root_init(&r);
	for (int i = 1; i < PCI_MAX_DEVICES; i++) {
		pci_function_init(&f[i], 0x1af4, 0x1040 + i, 0xff0000, 0x1af4, 0);
		assert_int_equal(pci_add_device(&r, &f[i]), i);
	}
	pci_function_init(&f[0], 0x1af4, 0x1040, 0xff0000, 0x1af4, 0);
	assert_int_equal(pci_add_device(&r, &f[0]), -ENOSPC);
	assert_int_equal(pio_read(&r, cf8(5, 0, 0), 4, 4), (0x1040u + 5) << 16 | 0x1af4);
	pci_root_destroy(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_host_bridge),    cmocka_unit_test(test_config_address_register),
		cmocka_unit_test(test_write_mask),     cmocka_unit_test(test_ecam),
		cmocka_unit_test(test_hostile_lengths), cmocka_unit_test(test_add_device),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
