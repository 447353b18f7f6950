/* The x86_64 guest physical memory map: one place defines every fixed address. */
#ifndef LIBVMM_LIB_LAYOUT_H
#define LIBVMM_LIB_LAYOUT_H

#include <stdint.h>

#define KiB(x) ((uint64_t)(x) << 10)
#define MiB(x) ((uint64_t)(x) << 20)
#define GiB(x) ((uint64_t)(x) << 30)

/* Low memory used by the VMM while setting up the boot CPU. */
#define LAYOUT_GDT	   0x500ULL   /* 4 entries: null, null, code64, data */
#define LAYOUT_IDT	   0x520ULL   /* empty IDT (limit 0) */
#define LAYOUT_ZERO_PAGE   0x7000ULL  /* struct boot_params, 4 KiB */
#define LAYOUT_PML4	   0x9000ULL  /* identity page tables: PML4 */
#define LAYOUT_PDPT	   0xA000ULL  /*   PDPT */
#define LAYOUT_PD	   0xB000ULL  /*   4 PDs of 2 MiB pages: 0xB000-0xEFFF */
#define LAYOUT_BOOT_STACK  0x8ff0ULL  /* initial RSP for the boot CPU */
#define LAYOUT_CMDLINE	   0x20000ULL /* kernel command line */
#define LAYOUT_CMDLINE_MAX 0x10000ULL /* room for the command line, bytes */
#define LAYOUT_EBDA	   0x9FC00ULL /* end of low RAM (EBDA start) */
#define LAYOUT_ACPI	   0xE0000ULL /* RSDP and ACPI tables: 0xE0000-0xFFFFF */
#define LAYOUT_ACPI_SIZE   0x20000ULL
#define LAYOUT_HIMEM	   0x100000ULL /* 1 MiB: start of high memory */

/* Where a bzImage / ELF kernel goes when it does not say. */
#define LAYOUT_KERNEL_DEFAULT 0x100000ULL

/* The MMIO hole below 4 GiB. RAM above the hole start continues at 4 GiB. */
#define LAYOUT_MMIO_HOLE     0xC0000000ULL
#define LAYOUT_MMIO_HOLE_END 0x100000000ULL
#define LAYOUT_PCI_MMIO	     0xC0000000ULL /* 32-bit PCI BAR window */
#define LAYOUT_PCI_MMIO_SIZE 0x20000000ULL /* 512 MiB */
#define LAYOUT_ECAM	     0xE0000000ULL /* PCI ECAM, bus 0 only for now */
#define LAYOUT_ECAM_SIZE     0x100000ULL   /* 1 MiB = 1 bus */
#define LAYOUT_IOAPIC	     0xFEC00000ULL
#define LAYOUT_LAPIC	     0xFEE00000ULL

/* I/O ports of the VMM's own ACPI hardware (hardware-reduced ACPI). */
#define PORT_ACPI_SLEEP_CTL 0x600 /* FADT SLEEP_CONTROL_REG, 1 byte */
#define PORT_ACPI_SLEEP_STS 0x601 /* FADT SLEEP_STATUS_REG, 1 byte */
#define PORT_ACPI_RESET	    0x602 /* FADT RESET_REG, 1 byte */
#define ACPI_RESET_VALUE    0x1
#define ACPI_S5_SLP_TYP	    5 /* value of _S5 written to SLP_TYPx */

/* Legacy devices. */
#define PORT_COM1	0x3f8
#define PORT_COM2	0x2f8
#define PORT_COM3	0x3e8
#define PORT_COM4	0x2e8
#define IRQ_COM1	4
#define IRQ_COM2	3
#define PORT_CMOS	0x70  /* 0x70-0x71 */
#define PORT_I8042	0x60  /* data 0x60, command/status 0x64 */
#define PORT_PCI_CONFIG 0xcf8 /* 0xcf8-0xcff */

/* The guest's RAM is split around the MMIO hole into at most two ranges. */
struct layout_ram {
	uint64_t low_size;  /* RAM at [0, low_size) */
	uint64_t high_size; /* RAM at [4 GiB, 4 GiB + high_size) */
};

/* Split @mem_bytes of RAM around the hole. */
struct layout_ram layout_ram(uint64_t mem_bytes);

#endif
