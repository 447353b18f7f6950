/* x86 vCPU boot state: CPUID, MSRs, LAPIC LINTs, GDT, page tables and 64-bit entry registers. */
#include "cpu.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "lib/layout.h"

#define CR0_PE	 0x1ULL
#define CR0_ET	 0x10ULL
#define CR0_NE	 0x20ULL
#define CR0_PG	 0x80000000ULL
#define CR4_PAE	 0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

#define PTE_P  0x1ULL
#define PTE_RW 0x2ULL
#define PTE_PS 0x80ULL

#define GDT_CODE64 0x00af9b000000ffffULL
#define GDT_DATA   0x00cf93000000ffffULL
#define SEL_CODE   0x10
#define SEL_DATA   0x18

#define MSR_IA32_TSC	      0x10
#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE  0x1a0
#define MSR_MTRR_DEF_TYPE     0x2ff
#define MSR_STAR	      0xc0000081
#define MSR_LSTAR	      0xc0000082
#define MSR_CSTAR	      0xc0000083
#define MSR_SFMASK	      0xc0000084
#define MSR_KERNEL_GS_BASE    0xc0000102

#define APIC_LVT_LINT0	 0x350
#define APIC_LVT_LINT1	 0x360
#define APIC_MODE_EXTINT 0x7
#define APIC_MODE_NMI	 0x4

int x86_write_boot_tables(struct guest_mem *m, struct vmm_err *err)
{
	uint64_t gdt[4] = {0, 0, GDT_CODE64, GDT_DATA};
	uint64_t *pml4 = gm_ptr(m, LAYOUT_PML4, 4096);
	uint64_t *pdpt = gm_ptr(m, LAYOUT_PDPT, 4096);
	uint64_t *pd = gm_ptr(m, LAYOUT_PD, 4 * 4096);

	if (!pml4 || !pdpt || !pd || gm_write(m, LAYOUT_GDT, gdt, sizeof(gdt)) < 0)
		return err_set(err, EFAULT, "guest RAM too small for the boot page tables");
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = LAYOUT_PDPT | PTE_P | PTE_RW;
	for (uint64_t i = 0; i < 4; i++)
		pdpt[i] = (LAYOUT_PD + i * 4096) | PTE_P | PTE_RW;
	for (uint64_t i = 0; i < 4 * 512; i++)
		pd[i] = (i << 21) | PTE_P | PTE_RW | PTE_PS;
	return 0;
}

bool x86_host_is_pvm(void)
{
	struct stat st;

	/* A PVM host binds kvm_pvm and has neither of the hardware modules. */
	return stat("/sys/module/kvm_pvm", &st) == 0 && stat("/sys/module/kvm_intel", &st) != 0 &&
	       stat("/sys/module/kvm_amd", &st) != 0;
}

/* Bits to clear on a PVM host: instructions it cannot run in guest ring 0. */
static void cpuid_hide_pvm(struct kvm_cpuid_entry2 *e)
{
	switch (e->function) {
	case 1:
		e->ecx &= ~((1u << 13) | /* CMPXCHG16B */
			    (1u << 23) | /* POPCNT */
			    (1u << 26) | /* XSAVE */
			    (1u << 27) | /* OSXSAVE */
			    (1u << 28) | /* AVX */
			    (1u << 12) | /* FMA */
			    (1u << 29)); /* F16C */
		break;
	case 7:
		if (e->index == 0) {
			e->ebx &= ~((1u << 5) |	 /* AVX2 */
				    (1u << 16) | /* AVX512F */
				    (1u << 17) | /* AVX512DQ */
				    (1u << 21) | /* AVX512IFMA */
				    (1u << 28) | /* AVX512CD */
				    (1u << 30) | /* AVX512BW */
				    (1u << 31)); /* AVX512VL */
			e->ecx &= ~((1u << 1) |	 /* AVX512VBMI */
				    (1u << 6) |	 /* AVX512VBMI2 */
				    (1u << 11) | /* AVX512VNNI */
				    (1u << 12) | /* AVX512BITALG */
				    (1u << 14)); /* AVX512VPOPCNTDQ */
		}
		break;
	case 0xd:
		e->eax = e->ebx = e->ecx = e->edx = 0;
		break;
	case 0x80000001:
		e->ecx &= ~(1u << 5); /* ABM/LZCNT (shares POPCNT's path) */
		break;
	default:
		break;
	}
}

static unsigned int order_base_2(unsigned int n)
{
	unsigned int b = 0;

	while ((1u << b) < n)
		b++;
	return b;
}

struct kvm_cpuid2 *x86_cpuid_for_vcpu(const struct kvm_cpuid2 *supported, unsigned int id,
				      unsigned int ncpus, bool hide_pvm)
{
	size_t sz = sizeof(*supported) + supported->nent * sizeof(supported->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);
	unsigned int shift = order_base_2(ncpus);

	if (!c)
		return NULL;
	memcpy(c, supported, sz);
	for (unsigned int i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0x0000ffffu) | (id << 24) | ((ncpus & 0xff) << 16);
			e->ecx |= 1u << 31; /* running under a hypervisor */
			if (ncpus > 1)
				e->edx |= 1u << 28; /* HTT: EBX[23:16] is valid */
			break;
		case 4:
			/* Cores per package - 1 in EAX[31:26]. */
			e->eax = (e->eax & 0x03ffffffu) | ((ncpus - 1u) << 26);
			break;
		case 0xb:
		case 0x1f:
			e->edx = id;
			if (e->index == 0) { /* SMT level: one thread per core */
				e->eax = 0;
				e->ebx = 1;
				e->ecx = (1u << 8) | 0;
			} else if (e->index == 1) { /* core level */
				e->eax = shift;
				e->ebx = ncpus;
				e->ecx = (2u << 8) | 1;
			} else {
				e->eax = e->ebx = 0;
				e->ecx = e->index;
			}
			break;
		case 0x80000008:
			e->ecx = (e->ecx & ~0xf0ffu) | (shift << 12) | ((ncpus - 1u) & 0xff);
			break;
		case 0x8000001e:
			e->eax = id;
			/* Compute unit id = APIC id, one thread per unit. */
			e->ebx = (e->ebx & ~0xffffu) | (id & 0xff);
			e->ecx &= ~0x7ffu;
			break;
		default:
			break;
		}
		if (hide_pvm)
			cpuid_hide_pvm(e);
	}
	return c;
}

static int set_msrs(int fd, struct vmm_err *err)
{
	static const struct {
		uint32_t index;
		uint64_t data;
	} msrs[] = {
		{MSR_IA32_SYSENTER_CS, 0},
		{MSR_IA32_SYSENTER_ESP, 0},
		{MSR_IA32_SYSENTER_EIP, 0},
		{MSR_STAR, 0},
		{MSR_CSTAR, 0},
		{MSR_KERNEL_GS_BASE, 0},
		{MSR_SFMASK, 0},
		{MSR_LSTAR, 0},
		{MSR_IA32_TSC, 0},
		{MSR_IA32_MISC_ENABLE, 1},	     /* fast strings */
		{MSR_MTRR_DEF_TYPE, (1u << 11) | 6}, /* MTRRs on, write-back */
	};
	enum { N = sizeof(msrs) / sizeof(msrs[0]) };
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[N];
	} buf;
	int ret;

	memset(&buf, 0, sizeof(buf));
	buf.hdr.nmsrs = N;
	for (int i = 0; i < N; i++) {
		buf.e[i].index = msrs[i].index;
		buf.e[i].data = msrs[i].data;
	}
	ret = ioctl(fd, KVM_SET_MSRS, &buf);
	if (ret < 0)
		return err_set(err, errno, "KVM_SET_MSRS: %s", strerror(errno));
	if (ret != N)
		return err_set(err, EINVAL, "KVM_SET_MSRS: MSR 0x%x was refused", msrs[ret].index);
	return 0;
}

static int set_lint(int fd, struct vmm_err *err)
{
	struct kvm_lapic_state l;
	uint32_t v;

	if (ioctl(fd, KVM_GET_LAPIC, &l) < 0)
		return err_set(err, errno, "KVM_GET_LAPIC: %s", strerror(errno));
	memcpy(&v, &l.regs[APIC_LVT_LINT0], 4);
	v = (v & ~0x700u) | (APIC_MODE_EXTINT << 8);
	memcpy(&l.regs[APIC_LVT_LINT0], &v, 4);
	memcpy(&v, &l.regs[APIC_LVT_LINT1], 4);
	v = (v & ~0x700u) | (APIC_MODE_NMI << 8);
	memcpy(&l.regs[APIC_LVT_LINT1], &v, 4);
	if (ioctl(fd, KVM_SET_LAPIC, &l) < 0)
		return err_set(err, errno, "KVM_SET_LAPIC: %s", strerror(errno));
	return 0;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->base = 0;
	s->limit = 0xffffffff;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->g = 1;
	s->l = code;
	s->db = !code;
}

static int set_long_mode(int fd, uint64_t entry, uint64_t zero_page, struct vmm_err *err)
{
	struct kvm_sregs sr;
	struct kvm_regs r;

	if (ioctl(fd, KVM_GET_SREGS, &sr) < 0)
		return err_set(err, errno, "KVM_GET_SREGS: %s", strerror(errno));
	seg(&sr.cs, SEL_CODE, 0xb, true);
	seg(&sr.ds, SEL_DATA, 0x3, false);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	sr.gdt.base = LAYOUT_GDT;
	sr.gdt.limit = 4 * 8 - 1;
	sr.idt.base = LAYOUT_IDT;
	sr.idt.limit = 0;
	sr.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
	sr.cr3 = LAYOUT_PML4;
	sr.cr4 = CR4_PAE;
	sr.efer = EFER_LME | EFER_LMA;
	if (ioctl(fd, KVM_SET_SREGS, &sr) < 0)
		return err_set(err, errno, "KVM_SET_SREGS: %s", strerror(errno));
	memset(&r, 0, sizeof(r));
	r.rflags = 0x2;
	r.rip = entry;
	r.rsi = zero_page;
	r.rsp = LAYOUT_BOOT_STACK;
	if (ioctl(fd, KVM_SET_REGS, &r) < 0)
		return err_set(err, errno, "KVM_SET_REGS: %s", strerror(errno));
	return 0;
}

int x86_setup_vcpu(int fd, const struct kvm_cpuid2 *cpuid, bool bsp, uint64_t entry,
		   uint64_t zero_page, struct vmm_err *err)
{
	struct kvm_fpu fpu;
	int ret;

	if (ioctl(fd, KVM_SET_CPUID2, cpuid) < 0)
		return err_set(err, errno, "KVM_SET_CPUID2: %s", strerror(errno));
	ret = set_msrs(fd, err);
	if (ret < 0)
		return ret;
	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	if (ioctl(fd, KVM_SET_FPU, &fpu) < 0)
		return err_set(err, errno, "KVM_SET_FPU: %s", strerror(errno));
	ret = set_lint(fd, err);
	if (ret < 0)
		return ret;
	if (bsp)
		return set_long_mode(fd, entry, zero_page, err);
	return 0;
}

bool x86_gva_to_gpa(const struct guest_mem *m, uint64_t cr3, uint64_t gva, uint64_t *gpa)
{
	uint64_t table = cr3 & 0x000ffffffffff000ULL;

	for (int level = 3; level >= 0; level--) {
		unsigned int idx = (gva >> (12 + 9 * level)) & 0x1ff;
		uint64_t pte;

		if (gm_read(m, &pte, table + idx * 8ULL, 8) < 0 || !(pte & PTE_P))
			return false;
		if (level > 0 && level < 3 && (pte & PTE_PS)) {
			uint64_t size = 1ULL << (12 + 9 * level);

			*gpa = (pte & 0x000fffffffffe000ULL & ~(size - 1)) | (gva & (size - 1));
			return true;
		}
		table = pte & 0x000ffffffffff000ULL;
	}
	*gpa = table | (gva & 0xfff);
	return true;
}
