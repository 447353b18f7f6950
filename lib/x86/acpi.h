/* ACPI tables for the guest: RSDP, XSDT, FADT (hardware-reduced), MADT, DSDT, MCFG. */
#ifndef LIBVMM_LIB_X86_ACPI_H
#define LIBVMM_LIB_X86_ACPI_H

#include <stdint.h>

#include "lib/err.h"
#include "lib/memory.h"

struct acpi_config {
	unsigned int ncpus; /* MADT gets one enabled local APIC per CPU, APIC id = index */
};

/*
 * Build the tables in guest RAM at [LAYOUT_ACPI, LAYOUT_ACPI + LAYOUT_ACPI_SIZE):
 * RSDP (revision 2) first, then XSDT -> FADT, MADT, MCFG; FADT -> DSDT.
 * The FADT is hardware-reduced ACPI 6: SLEEP_CONTROL/SLEEP_STATUS at
 * PORT_ACPI_SLEEP_CTL/STS and RESET_REG at PORT_ACPI_RESET (value
 * ACPI_RESET_VALUE). The DSDT holds \_S5 = Package {ACPI_S5_SLP_TYP, ...},
 * the PCI root bridge (PNP0A08/PNP0A03, segment 0, bus 0, _CRS with the
 * 0xcf8 ports, the I/O window and the LAYOUT_PCI_MMIO window) and COM1.
 * Every table checksum is valid. Returns 0 and the RSDP's guest address in
 * *rsdp, or -errno.
 */
int acpi_build(struct guest_mem *m, const struct acpi_config *c, uint64_t *rsdp,
	       struct vmm_err *err);

/* 8-bit sum that makes @len bytes at @p sum to zero once stored in the checksum field. */
uint8_t acpi_checksum(const void *p, uint32_t len);

#endif
