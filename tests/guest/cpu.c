/* Descriptor tables, the TSS, ring-3 page access and exception handling. */
#include "guest.h"

struct tss64 {
	u32 reserved0;
	u64 rsp[3];
	u64 reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3;
	u16 iomap_base;
} __attribute__((packed));

struct idt_gate {
	u16 off0;
	u16 sel;
	u8 ist;
	u8 type;
	u16 off1;
	u32 off2;
	u32 reserved;
};

struct desc_ptr {
	u16 limit;
	u64 base;
} __attribute__((packed));

static struct tss64 tss;
static struct idt_gate idt[256];

static void load_idt(const void *base, u16 limit)
{
	struct desc_ptr p = {.limit = limit, .base = (u64)base};

	__asm__ volatile("lidt %0" : : "m"(p));
}

void cpu_load_idt(void)
{
	load_idt(idt, sizeof(idt) - 1);
}

static void flush_tlb(void)
{
	u64 cr3;

	__asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
}

void cpu_init(void)
{
	u64 base = (u64)&tss, limit = sizeof(tss) - 1;
	u32 i;

	for (i = 0; i < ARRAY_SIZE(idt); i++) {
		u64 h = i < 32 ? isr_table[i] : (u64)irq_stubs + (i - 32) * IRQ_STUB_SIZE;

		idt[i].off0 = (u16)h;
		idt[i].sel = SEL_CODE64;
		idt[i].ist = 0;
		idt[i].type = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
		idt[i].off1 = (u16)(h >> 16);
		idt[i].off2 = (u32)(h >> 32);
	}
	cpu_load_idt();

	/* Ring 3 -> 0 transitions land on trap_stack; no I/O bitmap. */
	tss.rsp[0] = (u64)trap_stack_top;
	tss.iomap_base = sizeof(tss);
	gdt[SEL_TSS / 8] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89UL << 40 |
			   ((limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
	gdt[SEL_TSS / 8 + 1] = base >> 32;
	__asm__ volatile("ltr %w0" : : "r"(SEL_TSS));

	user_map((u64)__user_start, (u64)(__user_end - __user_start));
}

/*
 * Let ring 3 access [addr, addr + size): the U bit on the leaf entries (4 KiB
 * pages below 2 MiB, 2 MiB pages above). Only the first 4 GiB are mapped.
 */
bool user_map(u64 addr, u64 size)
{
	u64 a, end = addr + size;

	if (!size)
		return true;
	if (end < addr || end > 0x100000000UL)
		return false;
	for (a = addr & ~0xfffUL; a < end;) {
		if (a < 0x200000) {
			pt0[a >> 12] |= 0x4;
			a += 0x1000;
		} else {
			pd[a >> 30][(a >> 21) & 511] |= 0x4;
			a = (a & ~0x1fffffUL) + 0x200000;
		}
	}
	flush_tlb();
	return true;
}

/* Page directories for MMIO above 4 GiB, one per GiB, taken as needed. */
#define HI_PDS 2
static u64 pd_hi[HI_PDS][512] __attribute__((aligned(4096)));
static u32 pd_hi_used;

#define PTE_P	0x1
#define PTE_RW	0x2
#define PTE_US	0x4
#define PTE_PWT 0x8
#define PTE_PCD 0x10
#define PTE_PS	0x80

bool map_mmio(u64 addr, u64 size, bool user)
{
	u64 a, end = addr + size, gb, *e;
	u32 i;

	if (!size)
		return true;
	if (end < addr || end > (512UL << 30))
		return false;
	for (a = addr & ~0xfffUL; a < end;) {
		if (a < 0x200000) {
			pt0[a >> 12] |= PTE_PWT | PTE_PCD | (user ? PTE_US : 0);
			a += 0x1000;
			continue;
		}
		gb = a >> 30;
		if (gb >= 4 && !(pdpt[gb] & PTE_P)) {
			if (pd_hi_used >= HI_PDS)
				return false;
			for (i = 0; i < 512; i++)
				pd_hi[pd_hi_used][i] = (gb << 30 | (u64)i << 21) | PTE_P | PTE_RW |
						       PTE_PWT | PTE_PCD | PTE_PS;
			pdpt[gb] = (u64)pd_hi[pd_hi_used++] | PTE_P | PTE_RW | PTE_US;
		}
		e = gb < 4 ? &pd[gb][(a >> 21) & 511]
			   : &((u64 *)(pdpt[gb] & ~0xfffUL))[(a >> 21) & 511];
		*e |= PTE_PWT | PTE_PCD | (user ? PTE_US : 0);
		a = (a & ~0x1fffffUL) + 0x200000;
	}
	flush_tlb();
	return true;
}

u64 user_call(void (*fn)(void))
{
	return user_enter((u64)fn, (u64)(user_stack + USER_STACK_SIZE - 8));
}

NORETURN void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

NORETURN void triple_fault(void)
{
	load_idt(NULL, 0);
	__asm__ volatile("ud2");
	halt_forever();
}

u64 user_fault_rip;

void trap(struct trap_frame *f)
{
	u64 cr2;

	/* Any exception from ring 3 ends the user job (normally ud2 -> #UD). */
	if ((f->cs & 3) == 3) {
		if (f->vec == 6 && virtio_user_trap(f))
			return; /* a wait request from ring 3: resume after its ud2 */
		user_fault_rip = f->rip;
		user_resume(f->vec);
	}
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	fail("exception vec=%lu err=0x%lx rip=0x%lx cr2=0x%lx", f->vec, f->err, f->rip, cr2);
	gprintf("GUEST result fail failures=%d\n", failures);
	gprintf("GUEST exit halt\n");
	halt_forever();
}
