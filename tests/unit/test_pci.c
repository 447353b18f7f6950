/* PCI bus 0: host bridge, mechanism #1, ECAM, write masks, BARs, capabilities, MSI-X. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/layout.h"
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
	assert_int_equal(pio_read(&r, cf8(0, 0, 0xc), 6, 1), 0);    /* header type 0 */
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

static void test_bar32_sizing(void **state)
{
	struct pci_root r;
	struct pci_function f;
	uint32_t all = 0xffffffff, addr;

	(void)state;
	pci_root_init(&r);
	pci_function_init(&f, 0x1af4, 0x1041, 0xff0000, 0x1af4, 0);
	assert_int_equal(pci_function_set_bar32(&f, 0, 0xc0004000, 0x4000), 0);
	assert_int_equal(pci_function_set_bar32(&f, 6, 0, 0x1000), -EINVAL);
	assert_int_equal(pci_function_set_bar32(&f, 1, 0, 0x1800), -EINVAL);	  /* not 2^n */
	assert_int_equal(pci_function_set_bar32(&f, 1, 0x1000, 0x4000), -EINVAL); /* misaligned */
	assert_int_equal(pci_function_set_bar32(&f, 1, 0, 8), -EINVAL);
	assert_int_equal(pci_add_device(&r, &f), 1);
	assert_int_equal(pio_read(&r, cf8(1, 0, 0x10), 4, 4), 0xc0004000);
	/* Sizing: all ones reads back the size mask, unimplemented BARs read 0. */
	addr = cf8(1, 0, 0x10);
	pci_pio(&r, 0, (uint8_t *)&addr, 4, true);
	pci_pio(&r, 4, (uint8_t *)&all, 4, true);
	assert_int_equal(pio_read(&r, cf8(1, 0, 0x10), 4, 4), 0xffffc000);
	addr = cf8(1, 0, 0x14);
	pci_pio(&r, 0, (uint8_t *)&addr, 4, true);
	pci_pio(&r, 4, (uint8_t *)&all, 4, true);
	assert_int_equal(pio_read(&r, cf8(1, 0, 0x14), 4, 4), 0);
	assert_int_equal(pci_function_bar32(&f, 0), 0xffffc000);
	assert_int_equal(pci_function_bar32(&f, 9), 0);
	pci_remove_device(&r, &f);
	assert_int_equal(pio_read(&r, cf8(1, 0, 0), 4, 4), 0xffffffffu);
	pci_root_destroy(&r);
}

static void test_caps(void **state)
{
	struct pci_function f;
	uint8_t cap[16] = {PCI_CAP_ID_VNDR, 0xee, 16, 1};
	uint8_t big[200] = {PCI_CAP_ID_VNDR};
	int a, b, c;

	(void)state;
	pci_function_init(&f, 0x1af4, 0x1041, 0xff0000, 0x1af4, 0);
	assert_int_equal(pci_cfg_get16(&f, PCI_STATUS) & PCI_STATUS_CAP_LIST, 0);
	a = pci_function_add_cap(&f, cap, 16);
	assert_int_equal(a, PCI_CAP_START);
	b = pci_function_add_cap(&f, cap, 6); /* next one dword aligned */
	assert_int_equal(b, PCI_CAP_START + 16);
	c = pci_function_add_cap(&f, cap, 4);
	assert_int_equal(c, PCI_CAP_START + 24);
	assert_true(pci_cfg_get16(&f, PCI_STATUS) & PCI_STATUS_CAP_LIST);
	assert_int_equal(f.cfg[PCI_CAP_PTR], a);
	assert_int_equal(f.cfg[a + 1], b);
	assert_int_equal(f.cfg[b + 1], c);
	assert_int_equal(f.cfg[c + 1], 0);
	assert_int_equal(f.cfg[a + 3], 1);
	assert_int_equal(f.wmask[a + 3], 0);
	/* Full: refused, list unchanged. */
	assert_int_equal(pci_function_add_cap(&f, big, sizeof(big)), -ENOSPC);
	assert_int_equal(pci_function_add_cap(&f, cap, 3), -EINVAL);
	assert_int_equal(f.cfg[c + 1], 0);
	/* Fill to the last byte exactly, then nothing more fits. */
	assert_int_equal(pci_function_add_cap(&f, big, PCI_CFG_SIZE - (PCI_CAP_START + 28)),
			 PCI_CAP_START + 28);
	assert_int_equal(pci_function_add_cap(&f, cap, 4), -ENOSPC);
}

static void test_alloc_mmio(void **state)
{
	struct pci_root r;
	uint64_t a, b, c;

	(void)state;
	pci_root_init(&r);
	assert_int_equal(r.mmio_base, LAYOUT_PCI_MMIO);
	assert_int_equal(pci_alloc_mmio(&r, 0x1000, &a), 0);
	assert_int_equal(a, LAYOUT_PCI_MMIO);
	assert_int_equal(pci_alloc_mmio(&r, 0x8000, &b), 0);
	assert_int_equal(b, LAYOUT_PCI_MMIO + 0x8000); /* naturally aligned */
	assert_int_equal(pci_alloc_mmio(&r, 0x3000, &c), -EINVAL);
	assert_int_equal(pci_alloc_mmio(&r, 8, &c), -EINVAL);
	assert_int_equal(pci_alloc_mmio(&r, LAYOUT_PCI_MMIO_SIZE * 2, &c), -EINVAL);
	assert_int_equal(pci_alloc_mmio(&r, LAYOUT_PCI_MMIO_SIZE / 2, &c), 0);
	assert_int_equal(c, LAYOUT_PCI_MMIO + LAYOUT_PCI_MMIO_SIZE / 2);
	assert_int_equal(pci_alloc_mmio(&r, LAYOUT_PCI_MMIO_SIZE / 2, &c), -ENOSPC);
	assert_int_equal(pci_alloc_mmio(&r, 16, &c), -ENOSPC);

	assert_true(pci_in_mmio_window(&r, LAYOUT_PCI_MMIO, LAYOUT_PCI_MMIO_SIZE));
	assert_true(pci_in_mmio_window(&r, LAYOUT_PCI_MMIO + LAYOUT_PCI_MMIO_SIZE - 16, 16));
	assert_false(pci_in_mmio_window(&r, LAYOUT_PCI_MMIO + LAYOUT_PCI_MMIO_SIZE - 16, 17));
	assert_false(pci_in_mmio_window(&r, LAYOUT_PCI_MMIO - 1, 16));
	assert_false(pci_in_mmio_window(&r, ~0ull - 8, 16));
	assert_false(pci_in_mmio_window(&r, LAYOUT_PCI_MMIO, ~0ull));
	pci_root_destroy(&r);
}

struct hook_rec {
	uint32_t reg, len, calls;
	bool is_write;
};

static void hook(struct pci_function *f, uint32_t reg, uint8_t *data, uint32_t len, bool is_write)
{
	struct hook_rec *h = f->opaque;

	h->reg = reg;
	h->len = len;
	h->is_write = is_write;
	h->calls++;
	if (!is_write)
		memset(data, 0x5a, len);
}

static void test_cfg_access_hook(void **state)
{
	struct pci_root r;
	struct pci_function f;
	struct hook_rec h = {0};
	uint32_t v = 0;

	(void)state;
	pci_root_init(&r);
	pci_function_init(&f, 0x1af4, 0x1041, 0xff0000, 0x1af4, 0);
	f.cfg_access = hook;
	f.opaque = &h;
	assert_int_equal(pci_add_device(&r, &f), 1);
	assert_int_equal(pio_read(&r, cf8(1, 0, 0x40), 6, 2), 0x5a5a);
	assert_int_equal(h.reg, 0x42);
	assert_int_equal(h.len, 2);
	pci_ecam(&r, (1u << 15) | 0xfc, (uint8_t *)&v, 4, true);
	assert_true(h.is_write);
	assert_int_equal(h.reg, 0xfc);
	/* Bad lengths never reach the hook. */
	h.calls = 0;
	pci_cfg_access(&r, 1, 0, 0xfe, (uint8_t *)&v, 4, false);
	pci_cfg_access(&r, 1, 0, 0, (uint8_t *)&v, 0, true);
	assert_int_equal(h.calls, 0);
	pci_root_destroy(&r);
}

static void test_msix(void **state)
{
	struct pci_function f;
	struct pci_msix m;
	uint64_t addr;
	uint32_t data, v;
	uint64_t q;
	int cap;

	(void)state;
	pci_function_init(&f, 0x1af4, 0x1041, 0xff0000, 0x1af4, 0);
	assert_int_equal(pci_msix_init(&m, &f, 0, 0, 0, 0x800), -EINVAL);
	assert_int_equal(pci_msix_init(&m, &f, PCI_MSIX_MAX_VECTORS + 1, 0, 0, 0x800), -EINVAL);
	assert_int_equal(pci_msix_init(&m, &f, 4, 0, 4, 0x800), -EINVAL);
	assert_int_equal(pci_msix_init(&m, &f, 4, 2, 0x1000, 0x1800), 0);
	cap = m.cap;
	assert_int_equal(cap, PCI_CAP_START);
	assert_int_equal(f.cfg[cap], PCI_CAP_ID_MSIX);
	assert_int_equal(pci_cfg_get16(&f, cap + 2), 3);
	assert_int_equal(pci_cfg_get32(&f, cap + 4), 0x1000 | 2);
	assert_int_equal(pci_cfg_get32(&f, cap + 8), 0x1800 | 2);
	assert_int_equal(pci_msix_table_size(&m), 64);
	assert_int_equal(pci_msix_pba_size(&m), 8);
	/* Only enable and function mask are writable. */
	v = 0xffff;
	pci_function_cfg_rw(&f, cap + 2, (uint8_t *)&v, 2, true);
	assert_int_equal(pci_cfg_get16(&f, cap + 2), 0xc003);
	assert_true(pci_msix_enabled(&m, &f));
	assert_true(pci_msix_function_masked(&m, &f));

	/* Entries start masked. */
	pci_msix_table_access(&m, 12, (uint8_t *)&v, 4, false);
	assert_int_equal(v, 1);
	q = 0xfee01003ull;
	assert_true(pci_msix_table_access(&m, 16, (uint8_t *)&q, 8, true));
	assert_false(pci_msix_table_access(&m, 16, (uint8_t *)&q, 8, true)); /* no change */
	v = 0x31;
	assert_true(pci_msix_table_access(&m, 24, (uint8_t *)&v, 4, true));
	v = 0;
	assert_true(pci_msix_table_access(&m, 28, (uint8_t *)&v, 4, true));
	assert_false(pci_msix_deliverable(&m, &f, 1, &addr, &data)); /* function masked */
	v = PCI_MSIX_CTRL_ENABLE;
	pci_function_cfg_rw(&f, cap + 2, (uint8_t *)&v, 2, true);
	assert_true(pci_msix_deliverable(&m, &f, 1, &addr, &data));
	assert_int_equal(addr, 0xfee01000ull);
	assert_int_equal(data, 0x31);
	assert_false(pci_msix_deliverable(&m, &f, 0, NULL, NULL));
	assert_false(pci_msix_deliverable(&m, &f, 4, NULL, NULL));
	assert_false(pci_msix_deliverable(&m, &f, 0xffff, NULL, NULL));
	/* Bad accesses: ignored, read 0. */
	v = 0xffffffff;
	assert_false(pci_msix_table_access(&m, 2, (uint8_t *)&v, 4, true));
	assert_false(pci_msix_table_access(&m, 64, (uint8_t *)&v, 4, true));
	assert_false(pci_msix_table_access(&m, 60, (uint8_t *)&q, 8, true));
	assert_false(pci_msix_table_access(&m, 16, (uint8_t *)&v, 2, true));
	assert_false(pci_msix_table_access(&m, ~0ull - 3, (uint8_t *)&v, 4, true));
	pci_msix_table_access(&m, 64, (uint8_t *)&v, 4, false);
	assert_int_equal(v, 0);
	/* Pending bits. */
	pci_msix_set_pending(&m, 3, true);
	pci_msix_set_pending(&m, 9, true);
	assert_true(pci_msix_pending(&m, 3));
	assert_false(pci_msix_pending(&m, 9));
	pci_msix_pba_read(&m, 0, (uint8_t *)&q, 8);
	assert_int_equal(q, 1u << 3);
	pci_msix_pba_read(&m, 4, (uint8_t *)&v, 4);
	assert_int_equal(v, 0);
	pci_msix_pba_read(&m, 1, (uint8_t *)&v, 4);
	assert_int_equal(v, 0);
	pci_msix_set_pending(&m, 3, false);
	assert_false(pci_msix_pending(&m, 3));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_host_bridge),
		cmocka_unit_test(test_config_address_register),
		cmocka_unit_test(test_write_mask),
		cmocka_unit_test(test_ecam),
		cmocka_unit_test(test_hostile_lengths),
		cmocka_unit_test(test_add_device),
		cmocka_unit_test(test_bar32_sizing),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_alloc_mmio),
		cmocka_unit_test(test_cfg_access_hook),
		cmocka_unit_test(test_msix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
