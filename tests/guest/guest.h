/* The libvmm test guest: shared declarations. Freestanding, no libc headers. */
#ifndef GUEST_H
#define GUEST_H

#ifndef __ASSEMBLER__
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef unsigned long size_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type)   __builtin_va_arg(ap, type)
#define va_end(ap)	   __builtin_va_end(ap)

#endif /* !__ASSEMBLER__ */

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NORETURN      __attribute__((noreturn))

/* Layout constants, also used by entry.S. */
#define TRAMPOLINE    0x8000 /* AP real-mode trampoline page */
#define MAX_CPUS      64
#define ENTRY_64      64
#define ENTRY_32      32
#define ENTRY_PVH     1
#define SEL_CODE64    0x10
#define SEL_DATA      0x18
#define SEL_USER_CODE 0x23
#define SEL_USER_DATA 0x2b
#define SEL_TSS	      0x30

#define MAX_E820	128
#define CMDLINE_MAX	4096
#define USER_STACK_SIZE 8192
#define IRQ_STUB_SIZE	16

#ifndef __ASSEMBLER__

/* ---- port I/O, MSRs, CPUID ---- */
static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(u16 port, u16 v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(u16 port, u32 v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u32 inl(u16 port)
{
	u32 v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u64 rdmsr(u32 msr)
{
	u32 lo, hi;

	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}

static inline void wrmsr(u32 msr, u64 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* A pointer to a fixed physical address (identity mapped), opaque to the optimiser. */
static inline void *phys(u64 addr)
{
	__asm__("" : "+r"(addr));
	return (void *)addr;
}

static inline u8 mmio_read8(u64 addr)
{
	return *(volatile u8 *)addr;
}

static inline void mmio_write8(u64 addr, u8 v)
{
	*(volatile u8 *)addr = v;
}

static inline u16 mmio_read16(u64 addr)
{
	return *(volatile u16 *)addr;
}

static inline void mmio_write16(u64 addr, u16 v)
{
	*(volatile u16 *)addr = v;
}

static inline u32 mmio_read32(u64 addr)
{
	return *(volatile u32 *)addr;
}

static inline void mmio_write32(u64 addr, u32 v)
{
	*(volatile u32 *)addr = v;
}

/* ---- lib.c ---- */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
u64 tsc_ticks_us(u64 us);
u64 tsc_khz_known(void); /* TSC rate from CPUID, 0 if the 1 GHz guess is in use */
void delay_us(u64 us);

/* ---- uart.c: COM1 console ---- */
void uart_init(void);
void uart_putc(char c);
int uart_getc(void); /* blocks */
void gprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int failures;

/* ---- boot.c: what the loader handed over, copied early ---- */
struct e820_entry {
	u64 addr;
	u64 size;
	u32 type;
};

struct bootinfo {
	int entry;     /* ENTRY_64, ENTRY_32 or ENTRY_PVH */
	int long_mode; /* EFER.LMA at entry */
	u16 cs;	       /* CS selector at entry */
	u64 ptr;       /* boot_params or hvm_start_info */
	u32 e820_count;
	struct e820_entry e820[MAX_E820];
	char cmdline[CMDLINE_MAX];
	u64 initrd_addr;
	u64 initrd_size;
	u64 rsdp; /* 0: not given */
};

extern struct bootinfo bi;
void boot_collect(void);
bool e820_usable(u64 addr, u64 size);
/* Value of word "key=" in the command line, copied into buf; false if absent. */
bool cmdline_get(const char *key, char *buf, size_t len);

/* ---- cpu.c: descriptor tables, paging, ring 3 ---- */
struct trap_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8;
	u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vec, err;
	u64 rip, cs, rflags, rsp, ss;
};

void kmain(void);
void cpu_init(void);
void cpu_load_idt(void);
bool user_map(u64 addr, u64 size);
/* Map MMIO [addr, addr + size) uncached (2 MiB pages, up to 512 GiB), user-accessible if user. */
bool map_mmio(u64 addr, u64 size, bool user);
/* Run fn in ring 3; returns the vector of the exception that ended it. */
u64 user_call(void (*fn)(void));
void trap(struct trap_frame *f);
NORETURN void halt_forever(void);
NORETURN void triple_fault(void);

extern u64 user_fault_rip;

/* entry.S and the linker script */
extern u64 boot_ptr;
extern u32 boot_entry, boot_lm, ap_next;
extern u16 boot_cs;
extern u64 gdt[];
extern u64 pml4[512], pdpt[512], pd[4][512], pt0[512];
extern u64 isr_table[32];
extern char irq_stubs[]; /* vectors 32-255, IRQ_STUB_SIZE bytes each */
extern char trap_stack_top[];
extern char tramp_start[], tramp_end[];
extern char __user_start[], __user_end[];
u64 user_enter(u64 rip, u64 rsp);
NORETURN void user_resume(u64 ret);

/* ---- user.c: the ring-3 job ---- */
struct user_job {
	u64 addr;
	u64 size;
	u32 crc;
	u32 done;
};
extern struct user_job ujob;
extern u8 user_stack[USER_STACK_SIZE];
void user_crc32(void);

/* ---- acpi.c ---- */
struct acpi_info {
	bool found;
	bool have_fadt;
	u32 lapic_count;
	u32 lapic_ids[MAX_CPUS];
	u32 ioapic_count;
	bool hw_reduced;
	u8 sleep_ctl_space; /* 0: memory, 1: I/O */
	u64 sleep_ctl;	    /* 0: none */
	u32 pm1a_cnt, pm1b_cnt;
	bool have_reset;
	u8 reset_space;
	u64 reset_addr;
	u8 reset_value;
	int s5_typ; /* -1: none */
};

extern struct acpi_info acpi;
void acpi_scan(void);

/* ---- smp.c ---- */
void smp_boot(bool wake);
void ap_main(u32 slot);
u32 bsp_apic_id(void);

/* ---- pci.c ---- */
void pci_scan(void);
u32 pci_read32(u32 dev, u32 fn, u32 reg);
u16 pci_read16(u32 dev, u32 fn, u32 reg);
u8 pci_read8(u32 dev, u32 fn, u32 reg);
void pci_write32(u32 dev, u32 fn, u32 reg, u32 v);
void pci_write16(u32 dev, u32 fn, u32 reg, u16 v);

/* ---- virtio.c ---- */
void virtio_run(void);
bool virtio_user_trap(struct trap_frame *f);
void irq_handler(u64 vec);

#endif /* !__ASSEMBLER__ */
#endif
