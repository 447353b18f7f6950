/* x86 vCPU boot state: CPUID, MSRs, LAPIC LINTs, GDT, identity page tables and 64-bit entry
 * registers. */
#ifndef LIBVMM_LIB_X86_CPU_H
#define LIBVMM_LIB_X86_CPU_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/memory.h"

/*
 * Write the boot GDT (LAYOUT_GDT), an empty IDT and identity page tables for
 * the first 4 GiB (2 MiB pages at LAYOUT_PML4..) into guest RAM.
 * Returns 0 or -EFAULT when RAM is too small to hold them.
 */
int x86_write_boot_tables(struct guest_mem *m, struct vmm_err *err);

/*
 * Make a per-vCPU copy of @supported with this vCPU's APIC id and a topology
 * of @ncpus cores in one package filled in, the hypervisor bit set and, when
 * @hide_pvm is true, the features a PVM-nested host cannot run in guest ring
 * 0 removed. Returns a malloc'ed struct (free it) or NULL.
 */
struct kvm_cpuid2 *x86_cpuid_for_vcpu(const struct kvm_cpuid2 *supported, unsigned int id,
				      unsigned int ncpus, bool hide_pvm);

/*
 * Set CPUID, the MSRs Linux expects at reset, the FPU state and the LAPIC's
 * LINT0 (ExtINT) / LINT1 (NMI) on vCPU @fd. For the boot CPU (@bsp) also the
 * 64-bit entry state: long mode with the boot tables, RIP @entry, RSI
 * @zero_page. Application processors stay in the wait-for-SIPI state.
 */
int x86_setup_vcpu(int fd, const struct kvm_cpuid2 *cpuid, bool bsp, uint64_t entry,
		   uint64_t zero_page, struct vmm_err *err);

/*
 * Translate guest virtual @gva through the 4-level page tables at @cr3
 * (guest RAM only). Returns true and *gpa on success.
 */
bool x86_gva_to_gpa(const struct guest_mem *m, uint64_t cr3, uint64_t gva, uint64_t *gpa);

/* True when this host's KVM is nested KVM of the PVM kind. */
bool x86_host_is_pvm(void);

#endif
