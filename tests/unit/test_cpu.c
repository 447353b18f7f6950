/* vCPU boot state that needs no KVM: CPUID per vCPU, boot page tables, GDT, page walks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/layout.h"
#include "lib/memory.h"
#include "lib/x86/cpu.h"

static struct kvm_cpuid2 *make_supported(void)
{
	static const uint32_t leaves[][2] = {
		{0, 0},	  {1, 0},   {4, 0},   {4, 1},	       {7, 0},		{0xb, 0},
		{0xb, 1}, {0xb, 2}, {0xd, 0}, {0x80000001, 0}, {0x80000008, 0}, {0x8000001e, 0},
	};
	size_t n = sizeof(leaves) / sizeof(leaves[0]);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

	c->nent = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		c->entries[i].function = leaves[i][0];
		c->entries[i].index = leaves[i][1];
		c->entries[i].eax = c->entries[i].ebx = 0xffffffffu;
		c->entries[i].ecx = c->entries[i].edx = 0xffffffffu;
	}
	return c;
}

static const struct kvm_cpuid_entry2 *leaf(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	fail_msg("leaf 0x%x.%u missing", fn, idx);
	return NULL;
}

static void test_cpuid_topology(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();

	(void)state;
	for (unsigned int id = 0; id < 6; id++) {
		struct kvm_cpuid2 *c = x86_cpuid_for_vcpu(sup, id, 6, false);

		assert_non_null(c);
		assert_int_equal(leaf(c, 1, 0)->ebx >> 24, id);		 /* initial APIC id */
		assert_int_equal((leaf(c, 1, 0)->ebx >> 16) & 0xff, 6);	 /* logical CPUs */
		assert_true(leaf(c, 1, 0)->ecx & (1u << 31));		 /* hypervisor */
		assert_int_equal(leaf(c, 4, 0)->eax >> 26, 5);		 /* cores - 1 */
		assert_int_equal(leaf(c, 0xb, 0)->edx, id);		 /* x2APIC id */
		assert_int_equal(leaf(c, 0xb, 0)->ebx, 1);		 /* 1 thread per core */
		assert_int_equal((leaf(c, 0xb, 0)->ecx >> 8) & 0xff, 1); /* SMT level */
		assert_int_equal(leaf(c, 0xb, 1)->eax, 3);		 /* shift: 6 -> 3 bits */
		assert_int_equal(leaf(c, 0xb, 1)->ebx, 6);		 /* CPUs in the package */
		assert_int_equal((leaf(c, 0xb, 1)->ecx >> 8) & 0xff, 2); /* core level */
		assert_int_equal(leaf(c, 0xb, 2)->ebx, 0);		 /* no further levels */
		assert_int_equal(leaf(c, 0x80000008, 0)->ecx & 0xff, 5); /* AMD: cores - 1 */
		assert_int_equal(leaf(c, 0x8000001e, 0)->eax, id);	 /* AMD: extended APIC id */
		/* Not on a PVM host: features stay. */
		assert_true(leaf(c, 1, 0)->ecx & (1u << 23));
		free(c);
	}
	free(sup);
}

static void test_cpuid_pvm_hides_features(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();
	struct kvm_cpuid2 *c = x86_cpuid_for_vcpu(sup, 0, 1, true);

	(void)state;
	assert_false(leaf(c, 1, 0)->ecx & (1u << 23)); /* POPCNT */
	assert_false(leaf(c, 1, 0)->ecx & (1u << 13)); /* CMPXCHG16B */
	assert_false(leaf(c, 1, 0)->ecx & (1u << 26)); /* XSAVE */
	assert_false(leaf(c, 1, 0)->ecx & (1u << 28)); /* AVX */
	assert_false(leaf(c, 7, 0)->ebx & (1u << 5));  /* AVX2 */
	assert_false(leaf(c, 7, 0)->ebx & (1u << 16)); /* AVX512F */
	assert_int_equal(leaf(c, 0xd, 0)->eax, 0);     /* no XSAVE state */
	assert_true(leaf(c, 1, 0)->ecx & (1u << 31));  /* still a hypervisor */
	free(c);
	free(sup);
}

static void test_boot_tables(void **state)
{
	size_t size = 16 << 20;
	uint8_t *ram = calloc(1, size);
	struct guest_mem m;
	uint64_t gpa, gdt[4];

	(void)state;
	gm_init_fake(&m, ram, size);
	assert_int_equal(x86_write_boot_tables(&m, NULL), 0);
	assert_int_equal(gm_read(&m, gdt, LAYOUT_GDT, sizeof(gdt)), 0);
	assert_int_equal(gdt[0], 0);
	/* Selector 0x10: present, DPL 0, code, long mode (L=1, D=0). */
	assert_true(gdt[2] & (1ULL << 47));
	assert_true(gdt[2] & (1ULL << 43));
	assert_true(gdt[2] & (1ULL << 53));
	assert_false(gdt[2] & (1ULL << 54));
	/* Selector 0x18: present, writable data. */
	assert_true(gdt[3] & (1ULL << 47));
	assert_false(gdt[3] & (1ULL << 43));
	/* Identity map of the first 4 GiB. */
	for (uint64_t va = 0; va < GiB(4); va += MiB(7) + 4095) {
		assert_true(x86_gva_to_gpa(&m, LAYOUT_PML4, va, &gpa));
		assert_int_equal(gpa, va);
	}
	assert_true(x86_gva_to_gpa(&m, LAYOUT_PML4, GiB(4) - 1, &gpa));
	assert_int_equal(gpa, GiB(4) - 1);
	assert_false(x86_gva_to_gpa(&m, LAYOUT_PML4, GiB(4), &gpa));
	assert_false(x86_gva_to_gpa(&m, LAYOUT_PML4, 0xffffffff81000000ULL, &gpa));
	free(ram);
}

static void test_boot_tables_tiny_ram(void **state)
{
	uint8_t ram[0x8000];
	struct guest_mem m;

	(void)state;
	gm_init_fake(&m, ram, sizeof(ram));
	assert_int_equal(x86_write_boot_tables(&m, NULL), -EFAULT);
}

static void test_page_walk_hostile(void **state)
{
	size_t size = 1 << 20;
	uint8_t *ram = calloc(1, size);
	struct guest_mem m;
	uint64_t gpa, *pml4 = (uint64_t *)(ram + 0x1000);

	(void)state;
	gm_init_fake(&m, ram, size);
	/* Table pointers outside guest RAM must fail, not read out of bounds. */
	pml4[0] = 0x7ffffffff000ULL | 3;
	assert_false(x86_gva_to_gpa(&m, 0x1000, 0x1234, &gpa));
	/* A CR3 outside RAM. */
	assert_false(x86_gva_to_gpa(&m, 0xfffffffff000ULL, 0, &gpa));
	/* Not present. */
	pml4[0] = 0;
	assert_false(x86_gva_to_gpa(&m, 0x1000, 0, &gpa));
	free(ram);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpuid_topology),
		cmocka_unit_test(test_cpuid_pvm_hides_features),
		cmocka_unit_test(test_boot_tables),
		cmocka_unit_test(test_boot_tables_tiny_ram),
		cmocka_unit_test(test_page_walk_hostile),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
