/* The test guest's main sequence: check the machine, print, exit (or tick forever). */
#include "virtio.h"

#define ECHO_MAX 4096

static const char *entry_name(int entry)
{
	switch (entry) {
	case ENTRY_64:
		return "64";
	case ENTRY_32:
		return "32";
	case ENTRY_PVH:
		return "pvh";
	default:
		return "unknown";
	}
}

static u64 parse_dec(const char *s)
{
	u64 v = 0;

	while (*s >= '0' && *s <= '9')
		v = v * 10 + (u64)(*s++ - '0');
	return v;
}

static void print_memory(void)
{
	u64 ram = 0;
	u32 i;

	gprintf("GUEST e820 entries=%u\n", bi.e820_count);
	for (i = 0; i < bi.e820_count; i++) {
		const struct e820_entry *e = &bi.e820[i];

		gprintf("GUEST e820 0x%lx 0x%lx %u\n", e->addr, e->size, e->type);
		if (e->type == 1)
			ram += e->size;
	}
	gprintf("GUEST ram_mib=%lu ram_kib=%lu\n", ram >> 20, ram >> 10);
	if (!bi.e820_count)
		fail("no e820 map");
}

/* CRC-32 of the initrd, computed in ring 3. */
static void check_initrd(void)
{
	u64 vec;

	if (!bi.initrd_size) {
		gprintf("GUEST initrd none\n");
		return;
	}
	if (!user_map(bi.initrd_addr, bi.initrd_size)) {
		fail("initrd at 0x%lx size %lu not below 4 GiB", bi.initrd_addr, bi.initrd_size);
		return;
	}
	ujob.addr = bi.initrd_addr;
	ujob.size = bi.initrd_size;
	ujob.crc = 0;
	ujob.done = 0;
	vec = user_call(user_crc32);
	if (vec != 6 || !ujob.done) {
		fail("ring 3 job ended by exception vec=%lu rip=0x%lx", vec, user_fault_rip);
		return;
	}
	gprintf("GUEST initrd addr=0x%lx size=%lu crc32=%08x\n", bi.initrd_addr, bi.initrd_size,
		ujob.crc);
}

static void copy_reg(char *dst, u32 v)
{
	__builtin_memcpy(dst, &v, 4);
}

static void print_cpuid(void)
{
	char vendor[13], hv[13];
	u32 a, b, c, d, i;

	cpuid(0, 0, &a, &b, &c, &d);
	copy_reg(vendor, b);
	copy_reg(vendor + 4, d);
	copy_reg(vendor + 8, c);
	vendor[12] = '\0';
	hv[0] = '\0';
	cpuid(1, 0, &a, &b, &c, &d);
	if (c & (1u << 31)) {
		cpuid(0x40000000, 0, &a, &b, &c, &d);
		copy_reg(hv, b);
		copy_reg(hv + 4, c);
		copy_reg(hv + 8, d);
		hv[12] = '\0';
		for (i = 0; hv[i]; i++) {
			if (hv[i] < 0x20 || hv[i] > 0x7e)
				hv[i] = '.';
		}
	}
	gprintf("GUEST cpuid vendor=%s hypervisor=%s apic_id=%u\n", vendor, hv[0] ? hv : "none",
		bsp_apic_id());
}

static void echo(u64 n)
{
	static u8 buf[ECHO_MAX];
	u64 i;

	if (n > ECHO_MAX) {
		fail("guest.echo=%lu larger than %u", n, ECHO_MAX);
		n = ECHO_MAX;
	}
	for (i = 0; i < n; i++)
		buf[i] = (u8)uart_getc();
	gprintf("GUEST echo=");
	for (i = 0; i < n; i++) {
		if (buf[i] >= 0x20 && buf[i] < 0x7f)
			uart_putc((char)buf[i]);
		else
			gprintf("\\x%02x", buf[i]);
	}
	uart_putc('\n');
}

static void gas_write8(u8 space, u64 addr, u8 v)
{
	if (space == 1)
		outb((u16)addr, v);
	else if (space == 0 && addr < 0x100000000UL)
		mmio_write8(addr, v);
}

static NORETURN void poweroff(void)
{
	u16 v;

	if (acpi.have_fadt && acpi.s5_typ >= 0) {
		if (acpi.hw_reduced && acpi.sleep_ctl) {
			gas_write8(acpi.sleep_ctl_space, acpi.sleep_ctl,
				   (u8)((acpi.s5_typ & 7) << 2 | 1 << 5));
		} else if (acpi.pm1a_cnt) {
			v = (u16)((acpi.s5_typ & 7) << 10 | 1 << 13);
			outw((u16)acpi.pm1a_cnt, v);
			if (acpi.pm1b_cnt)
				outw((u16)acpi.pm1b_cnt, v);
		}
		delay_us(100000);
	}
	fail("poweroff");
	halt_forever();
}

static NORETURN void reset(void)
{
	outb(0x64, 0xfe); /* i8042: pulse the reset line */
	delay_us(100000);
	if (acpi.have_reset) {
		gas_write8(acpi.reset_space, acpi.reset_addr, acpi.reset_value);
		delay_us(100000);
	}
	fail("reset");
	halt_forever();
}

void kmain(void)
{
	char opt[32], mode[16] = "poweroff";
	bool forever, quick;

	uart_init();
	gprintf("GUEST hello\n");
	cpu_init();
	boot_collect();
	gprintf("GUEST entry=%s long_mode=%d cs=0x%x bp=0x%lx\n", entry_name(bi.entry),
		bi.long_mode, bi.cs, bi.ptr);
	print_memory();
	gprintf("GUEST cmdline=%s\n", bi.cmdline);

	if (cmdline_get("guest.exit=", opt, sizeof(opt))) {
		if (streq(opt, "poweroff") || streq(opt, "reset") || streq(opt, "triplefault") ||
		    streq(opt, "halt"))
			memcpy(mode, opt, strlen(opt) + 1);
		else
			fail("unknown guest.exit=%s", opt);
	}

	forever = cmdline_get("guest.run=", opt, sizeof(opt)) && streq(opt, "forever");
	/* guest.checks=min: no initrd CRC, CPUID line, APs or PCI list (ACPI is still read) */
	quick = cmdline_get("guest.checks=", opt, sizeof(opt)) && streq(opt, "min");
	if (!quick) {
		check_initrd();
		print_cpuid();
	}
	acpi_scan();
	if (!quick) {
		smp_boot(!(cmdline_get("guest.aps=", opt, sizeof(opt)) && streq(opt, "0")));
		pci_scan();
	}
	virtio_run();
	balloon_run();
	if (cmdline_get("guest.echo=", opt, sizeof(opt)))
		echo(parse_dec(opt));

	if (failures)
		gprintf("GUEST result fail failures=%d\n", failures);
	else
		gprintf("GUEST result pass\n");
	if (forever)
		counter_run();
	gprintf("GUEST exit %s\n", mode);

	if (streq(mode, "reset"))
		reset();
	if (streq(mode, "triplefault"))
		triple_fault();
	if (streq(mode, "halt"))
		halt_forever();
	poweroff();
}
