/*
 * Test-only: put libvmm's guest memory dump (dump_image.c) into QEMU's RAM.
 * Called by shim.S in long mode on the shim's own page tables; returns the
 * guest entry point. Any problem: a "SHIM FAIL" line on COM1 and a reset
 * through the i8042 (QEMU runs with -no-reboot, so it exits).
 *
 * The dump is loaded by QEMU's "-device loader,file=DUMP,addr=A,force-raw=on";
 * A comes from the shim's PVH command line as "dump=0x<hex>".
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define COM1	      0x3f8
#define PVH_MAGIC     0x336ec578u
#define DUMP_HDR      64
#define DUMP_MAX_SIZE (1ul << 30)
#define FOUR_GIB      (1ul << 32)
#define MSR_EFER      0xc0000080u
#define EFER_LME      0x100ul
#define EFER_LMA      0x400ul

/* Q35 MCH (00:00.0): PAM registers and the values that make DRAM read/write. */
#define MCH_ID	    0x29c08086u /* device 0x29c0, vendor 0x8086 */
#define PAM0	    0x90	/* bits 5:4: 0xf0000-0xfffff */
#define PAM5	    0x95	/* 3:0: 0xe0000-0xe3fff, 7:4: 0xe4000-0xe7fff */
#define PAM6	    0x96	/* 3:0: 0xe8000-0xebfff, 7:4: 0xec000-0xeffff */
#define PAM_RW_HI   0x30
#define PAM_RW_BOTH 0x33

u64 shim_main(u32 start_info);

extern char __shim_start[], __shim_end[];

static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outl(u16 port, u32 v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
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
	return (u64)hi << 32 | lo;
}

static inline void wrmsr(u32 msr, u64 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}

/* ---------------------------------------------------------------- COM1 */

static void com_putc(char c)
{
	for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		;
	outb(COM1, (u8)c);
}

static void com_puts(const char *s)
{
	while (*s)
		com_putc(*s++);
}

static void puthex(u64 v)
{
	char buf[19];
	int n = 0;

	buf[n++] = '0';
	buf[n++] = 'x';
	for (int shift = 60; shift >= 0; shift -= 4) {
		unsigned int d = (v >> shift) & 0xf;

		if (d || n > 2 || shift == 0)
			buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
	}
	for (int i = 0; i < n; i++)
		com_putc(buf[i]);
}

static void putdec(u64 v)
{
	char buf[21];
	int n = 0;

	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		com_putc(buf[--n]);
}

static __attribute__((noreturn)) void fail(const char *what, u64 a, u64 b)
{
	com_puts("SHIM FAIL ");
	com_puts(what);
	com_puts(" ");
	puthex(a);
	com_puts(" ");
	puthex(b);
	com_puts("\n");
	outb(0x64, 0xfe); /* i8042 reset: QEMU -no-reboot exits */
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* ---------------------------------------------------------------- helpers */

static u64 get(u64 addr, int n)
{
	const volatile u8 *p = (const volatile u8 *)addr;
	u64 v = 0;

	for (int i = 0; i < n; i++)
		v |= (u64)p[i] << (8 * i);
	return v;
}

static u32 crc_table[256];

static u32 crc32(u64 addr, u64 len)
{
	const volatile u8 *p = (const volatile u8 *)addr;
	u32 crc = ~0u;

	for (u32 i = 0; i < 256; i++) {
		u32 c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
	for (u64 i = 0; i < len; i++)
		crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static int overlaps(u64 a, u64 alen, u64 b, u64 blen)
{
	return a < b + blen && b < a + alen;
}

/* "dump=0x<hex>" from the PVH command line, or 0. */
static u64 dump_addr(u32 start_info)
{
	const volatile char *cmd, *s;
	u64 v = 0;

	if (get(start_info, 4) != PVH_MAGIC)
		fail("no PVH start_info at", start_info, 0);
	cmd = (const volatile char *)get(start_info + 0x18, 8); /* cmdline_paddr */
	for (s = cmd; s && *s; s++) {
		if ((s == cmd || s[-1] == ' ') && s[0] == 'd' && s[1] == 'u' && s[2] == 'm' &&
		    s[3] == 'p' && s[4] == '=' && s[5] == '0' && s[6] == 'x')
			break;
	}
	if (!s || !*s)
		return 0;
	for (s += 7; *s && *s != ' '; s++) {
		char c = *s;

		if (c >= '0' && c <= '9')
			v = v << 4 | (u64)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (u64)(c - 'a' + 10);
		else
			return 0;
	}
	return v;
}

static u32 pci_read32(u32 reg)
{
	outl(0xcf8, 0x80000000u | (reg & 0xfc));
	return inl(0xcfc);
}

static u8 pci_read8(u32 reg)
{
	outl(0xcf8, 0x80000000u | (reg & 0xfc));
	return inb((u16)(0xcfc + (reg & 3)));
}

static void pci_write8(u32 reg, u8 v)
{
	outl(0xcf8, 0x80000000u | (reg & 0xfc));
	outb((u16)(0xcfc + (reg & 3)), v);
}

/* SeaBIOS leaves 0xe0000-0xfffff read-only (PAM "read DRAM, write PCI"). */
static void pam_open(void)
{
	static const u8 regs[3] = {PAM0, PAM5, PAM6};
	static const u8 vals[3] = {PAM_RW_HI, PAM_RW_BOTH, PAM_RW_BOTH};

	if (pci_read32(0) != MCH_ID)
		fail("00:00.0 is not a Q35 MCH: id", pci_read32(0), 0);
	com_puts("SHIM pam before 0x90=");
	puthex(pci_read8(PAM0));
	com_puts(" 0x95=");
	puthex(pci_read8(PAM5));
	com_puts(" 0x96=");
	puthex(pci_read8(PAM6));
	com_puts("\n");
	for (int i = 0; i < 3; i++) {
		u8 v = (u8)((pci_read8(regs[i]) & (regs[i] == PAM0 ? 0x0f : 0)) | vals[i]);

		pci_write8(regs[i], v);
		if (pci_read8(regs[i]) != v)
			fail("PAM register did not take the value", regs[i], v);
	}
}

/* ---------------------------------------------------------------- main */

u64 shim_main(u32 start_info)
{
	u64 dump = dump_addr(start_info), size, n, entry, off, total = 0;
	u64 shim_lo = (u64)__shim_start, shim_len = (u64)__shim_end - (u64)__shim_start;
	u32 crc;

	com_puts("SHIM start\n");
	if (!dump)
		fail("no dump=0x<addr> on the command line", 0, 0);
	if (get(dump, 4) != 0x4d4d564cu || get(dump + 4, 4) != 0x31474d49u) /* "LVMMIMG1" */
		fail("no dump image at", dump, get(dump, 8));
	if (get(dump + 8, 4) != 1)
		fail("dump version", get(dump + 8, 4), 1);
	n = get(dump + 12, 4);
	entry = get(dump + 16, 8);
	size = get(dump + 48, 8);
	if (size < DUMP_HDR || size > DUMP_MAX_SIZE || dump + size > FOUR_GIB)
		fail("dump size", size, dump);
	if (overlaps(dump, size, shim_lo, shim_len))
		fail("dump overlaps the shim", dump, shim_lo);
	crc = crc32(dump + DUMP_HDR, size - DUMP_HDR);
	if (crc != get(dump + 56, 4))
		fail("dump CRC-32", crc, get(dump + 56, 4));
	if (!entry || entry >= FOUR_GIB)
		fail("entry point", entry, 0);
	com_puts("SHIM dump at ");
	puthex(dump);
	com_puts(" size ");
	putdec(size);
	com_puts(" records ");
	putdec(n);
	com_puts(" crc32 ok\n");

	/* Check every record before changing any memory. */
	off = DUMP_HDR;
	for (u64 i = 0; i < n; i++) {
		u64 gpa, len;

		if (off + 16 > size)
			fail("record header past the end", i, off);
		gpa = get(dump + off, 8);
		len = get(dump + off + 8, 8);
		if (len > size - off - 16 || gpa >= FOUR_GIB || len > FOUR_GIB - gpa)
			fail("record out of range", gpa, len);
		if (overlaps(gpa, len, dump, size))
			fail("record overlaps the dump", gpa, len);
		if (overlaps(gpa, len, shim_lo, shim_len))
			fail("record overlaps the shim", gpa, len);
		off += 16 + ((len + 7) & ~7ul);
	}
	if (off != size)
		fail("records do not fill the dump", off, size);

	pam_open();

	off = DUMP_HDR;
	for (u64 i = 0; i < n; i++) {
		u64 gpa = get(dump + off, 8), len = get(dump + off + 8, 8);
		const volatile u8 *src = (const volatile u8 *)(dump + off + 16);
		volatile u8 *dst = (volatile u8 *)gpa;

		for (u64 j = 0; j < len; j++)
			dst[j] = src[j];
		for (u64 j = 0; j < len; j++)
			if (dst[j] != src[j])
				fail("read-back differs at", gpa + j, src[j]);
		com_puts("SHIM record ");
		puthex(gpa);
		com_puts("-");
		puthex(gpa + len);
		com_puts(" copied, read back ok\n");
		total += len;
		off += 16 + ((len + 7) & ~7ul);
	}

	/* EFER exactly as libvmm sets it: LME | LMA, nothing else. */
	wrmsr(MSR_EFER, EFER_LME);
	if (rdmsr(MSR_EFER) != (EFER_LME | EFER_LMA))
		fail("EFER", rdmsr(MSR_EFER), EFER_LME | EFER_LMA);

	com_puts("SHIM copied ");
	putdec(total);
	com_puts(" bytes; entering ");
	puthex(entry);
	com_puts(" cs=0x10 rsi=0x7000 cr3=0x9000 gdt=0x500\n");
	return entry;
}
