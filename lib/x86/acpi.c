/*
 * ACPI tables for the guest (ACPI 6.3 layouts): RSDP, XSDT, a hardware-reduced
 * FADT, MADT, MCFG and a DSDT built with the AML emitter.
 *
 * All tables are assembled in a host staging buffer that mirrors the guest
 * range they occupy, checksummed, and copied in with one bounds-checked
 * gm_write().
 */
#include "acpi.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lib/layout.h"
#include "lib/x86/aml.h"

#define ACPI_OEM_ID	      "LIBVMM"	 /* 6 bytes */
#define ACPI_OEM_TABLE_ID     "LIBVMMPC" /* 8 bytes */
#define ACPI_OEM_REVISION     1
#define ACPI_CREATOR_ID	      "LVMM" /* 4 bytes */
#define ACPI_CREATOR_REVISION 1
#define ACPI_HYPERVISOR_ID    "LIBVMM  " /* FADT Hypervisor Vendor Identity, 8 bytes */

#define ACPI_ALIGN 16

struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_rsdp {
	char signature[8];
	uint8_t checksum; /* first 20 bytes */
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum; /* all 36 bytes */
	uint8_t reserved[3];
} __attribute__((packed));

/* Generic Address Structure. */
struct acpi_gas {
	uint8_t space_id;
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size;
	uint64_t address;
} __attribute__((packed));

#define GAS_SYSTEM_IO	1
#define GAS_ACCESS_BYTE 1

struct acpi_fadt {
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable;
	uint8_t acpi_disable;
	uint8_t s4bios_req;
	uint8_t pstate_cnt;
	uint32_t pm1a_evt_blk;
	uint32_t pm1b_evt_blk;
	uint32_t pm1a_cnt_blk;
	uint32_t pm1b_cnt_blk;
	uint32_t pm2_cnt_blk;
	uint32_t pm_tmr_blk;
	uint32_t gpe0_blk;
	uint32_t gpe1_blk;
	uint8_t pm1_evt_len;
	uint8_t pm1_cnt_len;
	uint8_t pm2_cnt_len;
	uint8_t pm_tmr_len;
	uint8_t gpe0_blk_len;
	uint8_t gpe1_blk_len;
	uint8_t gpe1_base;
	uint8_t cst_cnt;
	uint16_t p_lvl2_lat;
	uint16_t p_lvl3_lat;
	uint16_t flush_size;
	uint16_t flush_stride;
	uint8_t duty_offset;
	uint8_t duty_width;
	uint8_t day_alrm;
	uint8_t mon_alrm;
	uint8_t century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk;
	struct acpi_gas x_pm1b_evt_blk;
	struct acpi_gas x_pm1a_cnt_blk;
	struct acpi_gas x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk;
	struct acpi_gas x_pm_tmr_blk;
	struct acpi_gas x_gpe0_blk;
	struct acpi_gas x_gpe1_blk;
	struct acpi_gas sleep_control_reg;
	struct acpi_gas sleep_status_reg;
	char hypervisor_vendor_id[8];
} __attribute__((packed));

/* FADT flags. */
#define FADT_WBINVD	     (1u << 0)
#define FADT_PWR_BUTTON	     (1u << 4) /* no fixed-feature power button */
#define FADT_SLP_BUTTON	     (1u << 5) /* no fixed-feature sleep button */
#define FADT_RESET_REG_SUP   (1u << 10)
#define FADT_HW_REDUCED_ACPI (1u << 20)

/* FADT IA-PC boot architecture flags. */
#define BOOT_ARCH_LEGACY_DEVICES  (1u << 0)
#define BOOT_ARCH_8042		  (1u << 1)
#define BOOT_ARCH_VGA_NOT_PRESENT (1u << 2)

struct acpi_madt {
	struct acpi_header h;
	uint32_t lapic_address;
	uint32_t flags;
} __attribute__((packed));

#define MADT_PCAT_COMPAT (1u << 0)

struct madt_lapic {
	uint8_t type; /* 0 */
	uint8_t length;
	uint8_t uid;
	uint8_t apic_id;
	uint32_t flags;
} __attribute__((packed));

struct madt_ioapic {
	uint8_t type; /* 1 */
	uint8_t length;
	uint8_t id;
	uint8_t reserved;
	uint32_t address;
	uint32_t gsi_base;
} __attribute__((packed));

struct madt_iso {
	uint8_t type; /* 2 */
	uint8_t length;
	uint8_t bus;
	uint8_t source;
	uint32_t gsi;
	uint16_t flags;
} __attribute__((packed));

struct madt_lapic_nmi {
	uint8_t type; /* 4 */
	uint8_t length;
	uint8_t uid;
	uint16_t flags;
	uint8_t lint;
} __attribute__((packed));

struct madt_x2apic {
	uint8_t type; /* 9 */
	uint8_t length;
	uint16_t reserved;
	uint32_t x2apic_id;
	uint32_t flags;
	uint32_t uid;
} __attribute__((packed));

struct madt_x2apic_nmi {
	uint8_t type; /* 0xa */
	uint8_t length;
	uint16_t flags;
	uint32_t uid;
	uint8_t lint;
	uint8_t reserved[3];
} __attribute__((packed));

#define MADT_TYPE_LAPIC		   0
#define MADT_TYPE_IOAPIC	   1
#define MADT_TYPE_ISO		   2
#define MADT_TYPE_LAPIC_NMI	   4
#define MADT_TYPE_X2APIC	   9
#define MADT_TYPE_X2APIC_NMI	   0xa
#define MADT_LAPIC_ENABLED	   (1u << 0)
#define MADT_ALL_PROCESSORS	   0xff
#define MADT_X2APIC_ALL_PROCESSORS 0xffffffffu
/* APIC ids from here on need x2APIC entries (0xff is the xAPIC broadcast id). */
#define MADT_XAPIC_MAX_ID 0xfe

struct mcfg_alloc {
	uint64_t base;
	uint16_t segment;
	uint8_t start_bus;
	uint8_t end_bus;
	uint32_t reserved;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_header) == 36, "ACPI header");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP");
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS");
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT 6");
_Static_assert(offsetof(struct acpi_fadt, iapc_boot_arch) == 109, "FADT IAPC_BOOT_ARCH");
_Static_assert(offsetof(struct acpi_fadt, flags) == 112, "FADT flags");
_Static_assert(offsetof(struct acpi_fadt, x_dsdt) == 140, "FADT X_DSDT");
_Static_assert(offsetof(struct acpi_fadt, sleep_control_reg) == 244, "FADT SLEEP_CONTROL_REG");
_Static_assert(sizeof(struct acpi_madt) == 44, "MADT");
_Static_assert(sizeof(struct madt_lapic) == 8, "MADT local APIC");
_Static_assert(sizeof(struct madt_ioapic) == 12, "MADT I/O APIC");
_Static_assert(sizeof(struct madt_iso) == 10, "MADT interrupt source override");
_Static_assert(sizeof(struct madt_lapic_nmi) == 6, "MADT local APIC NMI");
_Static_assert(sizeof(struct madt_x2apic) == 16, "MADT x2APIC");
_Static_assert(sizeof(struct madt_x2apic_nmi) == 12, "MADT x2APIC NMI");
_Static_assert(sizeof(struct mcfg_alloc) == 16, "MCFG allocation");

/* Table revisions (ACPI 6.3). */
#define RSDP_REVISION	   2
#define XSDT_REVISION	   1
#define FADT_REVISION	   6
#define FADT_MINOR_VERSION 3
#define MADT_REVISION	   5
#define MCFG_REVISION	   1
#define DSDT_REVISION	   2 /* 64-bit integers */

#define XSDT_ENTRIES 3 /* FADT, MADT, MCFG */
#define MCFG_LENGTH  (sizeof(struct acpi_header) + 8 + sizeof(struct mcfg_alloc))

uint8_t acpi_checksum(const void *p, uint32_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	for (uint32_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + b[i]);
	return (uint8_t)-sum;
}

static void fill_header(struct acpi_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	h->checksum = 0;
	memcpy(h->oem_id, ACPI_OEM_ID, 6);
	memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, 8);
	h->oem_revision = ACPI_OEM_REVISION;
	memcpy(h->creator_id, ACPI_CREATOR_ID, 4);
	h->creator_revision = ACPI_CREATOR_REVISION;
}

/* Set the checksum of the table at @t, whose header gives its length. */
static void seal(void *t)
{
	struct acpi_header *h = t;

	h->checksum = 0;
	h->checksum = acpi_checksum(t, h->length);
}

static struct acpi_gas io_gas(uint16_t port)
{
	return (struct acpi_gas){
		.space_id = GAS_SYSTEM_IO,
		.bit_width = 8,
		.bit_offset = 0,
		.access_size = GAS_ACCESS_BYTE,
		.address = port,
	};
}

/* The DSDT's definition block (everything after the header). */
static int build_dsdt_aml(struct aml *a)
{
	const uint8_t both_fixed = AML_RES_MIN_FIXED | AML_RES_MAX_FIXED;

	/*
	 * The definition block starts in the root scope, so "_S5" is "\_S5"
	 * (and the shorter encoding, the one iasl emits).
	 * \_S5: SLP_TYPa, SLP_TYPb, reserved, reserved.
	 */
	aml_name(a, "_S5");
	aml_package_begin(a, 4);
	aml_integer(a, ACPI_S5_SLP_TYP);
	aml_integer(a, ACPI_S5_SLP_TYP);
	aml_integer(a, 0);
	aml_integer(a, 0);
	aml_end(a);

	aml_scope_begin(a, "_SB");

	/* The PCI Express root bridge: segment 0, bus 0. */
	aml_device_begin(a, "PCI0");
	aml_name_eisaid(a, "_HID", "PNP0A08");
	aml_name_eisaid(a, "_CID", "PNP0A03");
	/* No _ADR: a device has a _HID or an _ADR, not both (ACPI 6.x, 6.1). */
	aml_name_integer(a, "_SEG", 0);
	aml_name_integer(a, "_UID", 0);
	aml_name_integer(a, "_BBN", 0);
	aml_name(a, "_CRS");
	aml_rt_begin(a);
	aml_rt_word_space(a, AML_RES_TYPE_BUS, both_fixed, 0, 0,
			  (uint16_t)((LAYOUT_ECAM_SIZE >> 20) - 1));
	aml_rt_io(a, true, PORT_PCI_CONFIG, PORT_PCI_CONFIG, 1, 8);
	aml_rt_word_space(a, AML_RES_TYPE_IO, both_fixed, AML_IO_ENTIRE_RANGE, 0x0000,
			  PORT_PCI_CONFIG - 1);
	aml_rt_word_space(a, AML_RES_TYPE_IO, both_fixed, AML_IO_ENTIRE_RANGE, PORT_PCI_CONFIG + 8,
			  0xffff);
	aml_rt_dword_space(a, AML_RES_TYPE_MEMORY, both_fixed, AML_MEM_NONCACHEABLE | AML_MEM_RW,
			   (uint32_t)LAYOUT_PCI_MMIO,
			   (uint32_t)(LAYOUT_PCI_MMIO + LAYOUT_PCI_MMIO_SIZE - 1));
	aml_end(a); /* _CRS */
	aml_end(a); /* PCI0 */

	/*
	 * Motherboard resources: the ECAM window, so that Linux finds MCFG's
	 * range reserved by firmware and uses it.
	 */
	aml_device_begin(a, "MBRD");
	aml_name_eisaid(a, "_HID", "PNP0C02");
	aml_name_integer(a, "_UID", 0);
	aml_name(a, "_CRS");
	aml_rt_begin(a);
	aml_rt_memory32_fixed(a, true, (uint32_t)LAYOUT_ECAM, (uint32_t)LAYOUT_ECAM_SIZE);
	aml_end(a); /* _CRS */
	aml_end(a); /* MBRD */

	aml_device_begin(a, "COM1");
	aml_name_eisaid(a, "_HID", "PNP0501");
	aml_name_integer(a, "_UID", 1);
	aml_name(a, "_CRS");
	aml_rt_begin(a);
	aml_rt_io(a, true, PORT_COM1, PORT_COM1, 0, 8);
	aml_rt_irq_noflags(a, IRQ_COM1);
	aml_end(a); /* _CRS */
	aml_end(a); /* COM1 */

	aml_end(a); /* \_SB */
	return aml_finish(a);
}

static uint64_t madt_length(unsigned int ncpus)
{
	uint64_t n = ncpus, xapic = n < MADT_XAPIC_MAX_ID + 1 ? n : MADT_XAPIC_MAX_ID + 1;
	uint64_t len = sizeof(struct acpi_madt);

	len += xapic * sizeof(struct madt_lapic);
	len += (n - xapic) * sizeof(struct madt_x2apic);
	len += sizeof(struct madt_ioapic) + sizeof(struct madt_iso) + sizeof(struct madt_lapic_nmi);
	if (n > xapic)
		len += sizeof(struct madt_x2apic_nmi);
	return len;
}

static void build_madt(uint8_t *t, uint32_t len, unsigned int ncpus)
{
	struct acpi_madt *madt = (struct acpi_madt *)t;
	uint8_t *p = t + sizeof(*madt);

	fill_header(&madt->h, "APIC", len, MADT_REVISION);
	madt->lapic_address = (uint32_t)LAYOUT_LAPIC;
	madt->flags = MADT_PCAT_COMPAT; /* KVM's in-kernel irqchip has the 8259 pair */

	for (unsigned int i = 0; i < ncpus; i++) {
		if (i <= MADT_XAPIC_MAX_ID) {
			struct madt_lapic *e = (struct madt_lapic *)p;

			e->type = MADT_TYPE_LAPIC;
			e->length = sizeof(*e);
			e->uid = (uint8_t)i;
			e->apic_id = (uint8_t)i;
			e->flags = MADT_LAPIC_ENABLED;
			p += sizeof(*e);
		} else {
			struct madt_x2apic *e = (struct madt_x2apic *)p;

			e->type = MADT_TYPE_X2APIC;
			e->length = sizeof(*e);
			e->x2apic_id = i;
			e->flags = MADT_LAPIC_ENABLED;
			e->uid = i;
			p += sizeof(*e);
		}
	}

	struct madt_ioapic *io = (struct madt_ioapic *)p;

	io->type = MADT_TYPE_IOAPIC;
	io->length = sizeof(*io);
	io->id = 0;
	io->address = (uint32_t)LAYOUT_IOAPIC;
	io->gsi_base = 0;
	p += sizeof(*io);

	/* The PIT's ISA IRQ 0 is wired to I/O APIC pin 2; bus and polarity conform. */
	struct madt_iso *iso = (struct madt_iso *)p;

	iso->type = MADT_TYPE_ISO;
	iso->length = sizeof(*iso);
	iso->bus = 0;
	iso->source = 0;
	iso->gsi = 2;
	iso->flags = 0;
	p += sizeof(*iso);

	struct madt_lapic_nmi *nmi = (struct madt_lapic_nmi *)p;

	nmi->type = MADT_TYPE_LAPIC_NMI;
	nmi->length = sizeof(*nmi);
	nmi->uid = MADT_ALL_PROCESSORS;
	nmi->flags = 0;
	nmi->lint = 1;
	p += sizeof(*nmi);

	if (ncpus > MADT_XAPIC_MAX_ID + 1) {
		struct madt_x2apic_nmi *xnmi = (struct madt_x2apic_nmi *)p;

		xnmi->type = MADT_TYPE_X2APIC_NMI;
		xnmi->length = sizeof(*xnmi);
		xnmi->flags = 0;
		xnmi->uid = MADT_X2APIC_ALL_PROCESSORS;
		xnmi->lint = 1;
	}
	seal(t);
}

static void build_fadt(uint8_t *t, uint64_t dsdt)
{
	struct acpi_fadt *f = (struct acpi_fadt *)t;

	fill_header(&f->h, "FACP", sizeof(*f), FADT_REVISION);
	f->dsdt = (uint32_t)dsdt;
	f->x_dsdt = dsdt;
	f->sci_int = 0; /* hardware-reduced: no SCI */
	f->iapc_boot_arch = BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042 | BOOT_ARCH_VGA_NOT_PRESENT;
	f->flags = FADT_WBINVD | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_RESET_REG_SUP |
		   FADT_HW_REDUCED_ACPI;
	f->reset_reg = io_gas(PORT_ACPI_RESET);
	f->reset_value = ACPI_RESET_VALUE;
	f->minor_version = FADT_MINOR_VERSION;
	f->sleep_control_reg = io_gas(PORT_ACPI_SLEEP_CTL);
	f->sleep_status_reg = io_gas(PORT_ACPI_SLEEP_STS);
	memcpy(f->hypervisor_vendor_id, ACPI_HYPERVISOR_ID, 8);
	seal(t);
}

static void build_mcfg(uint8_t *t)
{
	struct acpi_header *h = (struct acpi_header *)t;
	struct mcfg_alloc *e = (struct mcfg_alloc *)(t + sizeof(*h) + 8);

	fill_header(h, "MCFG", MCFG_LENGTH, MCFG_REVISION);
	e->base = LAYOUT_ECAM;
	e->segment = 0;
	e->start_bus = 0;
	e->end_bus = (uint8_t)((LAYOUT_ECAM_SIZE >> 20) - 1);
	seal(t);
}

static void build_xsdt(uint8_t *t, const uint64_t *entries, unsigned int n)
{
	struct acpi_header *h = (struct acpi_header *)t;

	fill_header(h, "XSDT", (uint32_t)(sizeof(*h) + 8 * n), XSDT_REVISION);
	memcpy(t + sizeof(*h), entries, 8 * n);
	seal(t);
}

static void build_rsdp(uint8_t *t, uint64_t xsdt)
{
	struct acpi_rsdp *r = (struct acpi_rsdp *)t;

	memcpy(r->signature, "RSD PTR ", 8);
	memcpy(r->oem_id, ACPI_OEM_ID, 6);
	r->revision = RSDP_REVISION;
	r->rsdt_address = 0; /* XSDT only */
	r->length = sizeof(*r);
	r->xsdt_address = xsdt;
	r->checksum = 0;
	r->extended_checksum = 0;
	r->checksum = acpi_checksum(r, 20);
	r->extended_checksum = acpi_checksum(r, sizeof(*r));
}

static uint64_t align_up(uint64_t v)
{
	return (v + ACPI_ALIGN - 1) & ~(uint64_t)(ACPI_ALIGN - 1);
}

int acpi_build(struct guest_mem *m, const struct acpi_config *c, uint64_t *rsdp,
	       struct vmm_err *err)
{
	uint64_t at_rsdp, at_xsdt, at_fadt, at_dsdt, at_madt, at_mcfg, end;
	uint64_t dsdt_len, madt_len;
	struct aml a;
	uint8_t *stage;
	int ret;

	if (!c || c->ncpus == 0)
		return err_set(err, EINVAL, "ACPI tables need at least one CPU");

	aml_init(&a);
	ret = build_dsdt_aml(&a);
	if (ret < 0) {
		aml_free(&a);
		return err_set(err, -ret, "cannot build the DSDT's AML: %s", strerror(-ret));
	}

	dsdt_len = sizeof(struct acpi_header) + a.len;
	madt_len = madt_length(c->ncpus);

	at_rsdp = LAYOUT_ACPI;
	at_xsdt = align_up(at_rsdp + sizeof(struct acpi_rsdp));
	at_fadt = align_up(at_xsdt + sizeof(struct acpi_header) + 8 * XSDT_ENTRIES);
	at_mcfg = align_up(at_fadt + sizeof(struct acpi_fadt));
	at_dsdt = align_up(at_mcfg + MCFG_LENGTH);
	at_madt = align_up(at_dsdt + dsdt_len);
	end = at_madt + madt_len;
	if (end > LAYOUT_ACPI + LAYOUT_ACPI_SIZE) {
		aml_free(&a);
		return err_set(err, ENOSPC,
			       "ACPI tables for %u CPUs need %llu bytes, the ACPI area has %llu",
			       c->ncpus, (unsigned long long)(end - LAYOUT_ACPI),
			       (unsigned long long)LAYOUT_ACPI_SIZE);
	}

	stage = calloc(1, end - LAYOUT_ACPI);
	if (!stage) {
		aml_free(&a);
		return err_set(err, ENOMEM, "no memory to stage the ACPI tables");
	}
#define T(addr) (stage + ((addr)-LAYOUT_ACPI))

	fill_header((struct acpi_header *)T(at_dsdt), "DSDT", (uint32_t)dsdt_len, DSDT_REVISION);
	memcpy(T(at_dsdt) + sizeof(struct acpi_header), a.buf, a.len);
	seal(T(at_dsdt));
	aml_free(&a);

	build_fadt(T(at_fadt), at_dsdt);
	build_madt(T(at_madt), (uint32_t)madt_len, c->ncpus);
	build_mcfg(T(at_mcfg));
	build_xsdt(T(at_xsdt), (const uint64_t[]){at_fadt, at_madt, at_mcfg}, XSDT_ENTRIES);
	build_rsdp(T(at_rsdp), at_xsdt);
#undef T

	ret = gm_write(m, LAYOUT_ACPI, stage, end - LAYOUT_ACPI);
	free(stage);
	if (ret < 0)
		return err_set(err, -ret, "guest RAM does not hold the ACPI area [%#llx, %#llx)",
			       (unsigned long long)LAYOUT_ACPI, (unsigned long long)end);
	if (rsdp)
		*rsdp = at_rsdp;
	return 0;
}
