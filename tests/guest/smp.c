/*
 * Application processors: INIT / INIT de-assert / SIPI / SIPI to every
 * enabled local APIC in the MADT except the BSP's, all at once. Each AP runs
 * the trampoline at TRAMPOLINE, reaches long mode, records its APIC id and
 * halts.
 */
#include "guest.h"

#define MSR_APIC_BASE	  0x1b
#define APIC_BASE_EXTD	  (1UL << 10)
#define APIC_BASE_EN	  (1UL << 11)
#define APIC_SVR	  0xf0
#define APIC_ICR_LO	  0x300
#define APIC_ICR_HI	  0x310
#define MSR_X2APIC_SVR	  0x80f
#define MSR_X2APIC_ICR	  0x830
#define ICR_BUSY	  (1u << 12)
#define ICR_INIT_ASSERT	  0xc500 /* INIT, level triggered, assert */
#define ICR_INIT_DEASSERT 0x8500
#define ICR_STARTUP	  0x4600
#define AP_TIMEOUT_US	  3000000

static bool x2apic;
static u64 apic_base;
static u32 ap_count;		  /* APs that reported in */
static u32 ap_apic_ids[MAX_CPUS]; /* APIC id + 1 by stack slot; 0: slot unused */

u32 bsp_apic_id(void)
{
	u32 a, b, c, d;

	cpuid(1, 0, &a, &b, &c, &d);
	return b >> 24;
}

void ap_main(u32 slot)
{
	cpu_load_idt();
	/* this CPU's initial APIC id, published before the count */
	__atomic_store_n(&ap_apic_ids[slot], bsp_apic_id() + 1, __ATOMIC_RELEASE);
	__atomic_fetch_add(&ap_count, 1, __ATOMIC_RELEASE);
	halt_forever();
}

static void send_ipi(u32 dest, u32 icr)
{
	int i;

	if (x2apic) {
		wrmsr(MSR_X2APIC_ICR, (u64)dest << 32 | icr);
		return;
	}
	mmio_write32(apic_base + APIC_ICR_HI, dest << 24);
	mmio_write32(apic_base + APIC_ICR_LO, icr);
	for (i = 0; i < 100000 && (mmio_read32(apic_base + APIC_ICR_LO) & ICR_BUSY); i++)
		cpu_relax();
}

static bool reported(u32 id)
{
	u32 i;

	for (i = 0; i < MAX_CPUS; i++) {
		if (__atomic_load_n(&ap_apic_ids[i], __ATOMIC_ACQUIRE) == id + 1)
			return true;
	}
	return false;
}

void smp_boot(bool wake)
{
	u32 bsp = bsp_apic_id(), n = acpi.lapic_count, targets = 0, i, pass, online;
	u64 msr, start, timeout;

	if (n > MAX_CPUS) {
		fail("cpus: %u local APICs, only %u supported", n, MAX_CPUS);
		n = MAX_CPUS;
	}
	for (i = 0; i < n; i++)
		targets += acpi.lapic_ids[i] != bsp;
	if (!wake || !targets) {
		gprintf("GUEST cpus expected=%u online=1\n", acpi.lapic_count);
		return;
	}
	if (!e820_usable(TRAMPOLINE, 0x1000)) {
		fail("trampoline page 0x%x is not usable RAM in the e820 map", TRAMPOLINE);
		gprintf("GUEST cpus expected=%u online=1\n", acpi.lapic_count);
		return;
	}
	memcpy(phys(TRAMPOLINE), tramp_start, (size_t)(tramp_end - tramp_start));

	msr = rdmsr(MSR_APIC_BASE);
	if (!(msr & APIC_BASE_EN)) {
		msr |= APIC_BASE_EN;
		wrmsr(MSR_APIC_BASE, msr);
	}
	x2apic = !!(msr & APIC_BASE_EXTD);
	apic_base = msr & 0xffffff000UL;
	if (x2apic)
		wrmsr(MSR_X2APIC_SVR, rdmsr(MSR_X2APIC_SVR) | 0x1ff);
	else
		mmio_write32(apic_base + APIC_SVR, mmio_read32(apic_base + APIC_SVR) | 0x1ff);

	for (i = 0; i < n; i++) {
		if (acpi.lapic_ids[i] == bsp)
			continue;
		send_ipi(acpi.lapic_ids[i], ICR_INIT_ASSERT);
		if (!x2apic) /* x2APIC has no INIT level de-assert */
			send_ipi(acpi.lapic_ids[i], ICR_INIT_DEASSERT);
	}
	delay_us(10000);
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < n; i++) {
			if (acpi.lapic_ids[i] != bsp)
				send_ipi(acpi.lapic_ids[i], ICR_STARTUP | (TRAMPOLINE >> 12));
		}
		delay_us(200);
	}

	timeout = tsc_ticks_us(AP_TIMEOUT_US);
	start = rdtsc();
	while (__atomic_load_n(&ap_count, __ATOMIC_ACQUIRE) < targets && rdtsc() - start < timeout)
		cpu_relax();

	online = 1;
	for (i = 0; i < n; i++) {
		u32 id = acpi.lapic_ids[i];

		if (id == bsp)
			continue;
		if (reported(id)) {
			gprintf("GUEST cpu %u apic_id=%u up\n", i, id);
			online++;
		} else {
			fail("cpu %u apic_id=%u not up", i, id);
		}
	}
	gprintf("GUEST cpus expected=%u online=%u\n", acpi.lapic_count, online);
	if (online != acpi.lapic_count)
		fail("cpus online=%u expected=%u", online, acpi.lapic_count);
}
