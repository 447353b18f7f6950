/*
 * ACPI: find the RSDP, check every table listed in the XSDT (or RSDT) plus
 * the DSDT, and pull out what the guest needs: local APIC ids and IOAPICs
 * from the MADT, sleep/reset registers from the FADT, SLP_TYP of \_S5.
 */
#include "guest.h"

#define LIMIT_4G	0x100000000UL
#define HDR_LEN		36
#define SIG(a, b, c, d) ((u32)(a) | (u32)(b) << 8 | (u32)(c) << 16 | (u32)(d) << 24)

/* FADT offsets (ACPI 6.x, 5.2.9) */
#define FADT_DSDT	   40
#define FADT_PM1A_CNT	   64
#define FADT_PM1B_CNT	   68
#define FADT_FLAGS	   112
#define FADT_RESET_REG	   116
#define FADT_RESET_VALUE   128
#define FADT_X_DSDT	   140
#define FADT_X_PM1A_CNT	   172
#define FADT_SLEEP_CTL_REG 244
#define FLAG_RESET_REG_SUP (1u << 10)
#define FLAG_HW_REDUCED	   (1u << 20)

struct acpi_info acpi = {.s5_typ = -1};

static u16 rd16(const u8 *p)
{
	return (u16)(p[0] | p[1] << 8);
}

static u32 rd32(const u8 *p)
{
	u32 v;

	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

static u64 rd64(const u8 *p)
{
	u64 v;

	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

static bool sum_ok(const u8 *p, u32 n)
{
	u8 s = 0;

	while (n--)
		s += *p++;
	return s == 0;
}

static void sig_str(const u8 *p, char *out, int n)
{
	int i;

	for (i = 0; i < n; i++)
		out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
	out[n] = '\0';
}

/* Validate the header of the table at addr and print its line; NULL if unusable. */
static const u8 *table(u64 addr, const char *what)
{
	const u8 *t = (const u8 *)addr;
	char sig[5];
	u32 len;
	bool ok;

	if (!addr || addr >= LIMIT_4G - HDR_LEN) {
		fail("acpi %s at 0x%lx not mapped", what, addr);
		return NULL;
	}
	len = rd32(t + 4);
	if (len < HDR_LEN || len > LIMIT_4G - addr || len > 0x1000000) {
		fail("acpi %s at 0x%lx has bad length %u", what, addr, len);
		return NULL;
	}
	sig_str(t, sig, 4);
	ok = sum_ok(t, len);
	gprintf("GUEST acpi table %s addr=0x%lx len=%u rev=%u checksum=%s\n", sig, addr, len, t[8],
		ok ? "ok" : "bad");
	if (!ok)
		fail("acpi table %s checksum", sig);
	return t;
}

static u64 find_rsdp_in(u64 start, u64 end)
{
	u64 a;

	for (a = start; a + 20 <= end; a += 16) {
		if (rd64((const u8 *)a) == 0x2052545020445352UL && /* "RSD PTR " */
		    sum_ok((const u8 *)a, 20))
			return a;
	}
	return 0;
}

static u64 find_rsdp(void)
{
	u64 ebda;

	if (bi.rsdp)
		return bi.rsdp;
	ebda = (u64)rd16(phys(0x40e)) << 4; /* BDA: EBDA segment */
	if (ebda >= 0x80000 && ebda < 0xa0000) {
		u64 a = find_rsdp_in(ebda, ebda + 1024);

		if (a)
			return a;
	}
	return find_rsdp_in(0xe0000, 0x100000);
}

static void parse_madt(const u8 *t)
{
	const u8 *p = t + 44, *end = t + rd32(t + 4);

	while (p + 2 <= end && p[1] >= 2 && p + p[1] <= end) {
		u32 id = 0, flags = 0;
		bool lapic = false;

		if (p[0] == 0 && p[1] >= 8) { /* Processor Local APIC */
			id = p[3];
			flags = rd32(p + 4);
			lapic = true;
		} else if (p[0] == 9 && p[1] >= 16) { /* Processor Local x2APIC */
			id = rd32(p + 4);
			flags = rd32(p + 8);
			lapic = true;
		} else if (p[0] == 1) {
			acpi.ioapic_count++;
		}
		if (lapic && (flags & 1)) {
			if (acpi.lapic_count < MAX_CPUS)
				acpi.lapic_ids[acpi.lapic_count] = id;
			acpi.lapic_count++;
		}
		p += p[1];
	}
}

/* Generic Address Structure: space id at +0, address at +4. */
static void parse_fadt(const u8 *t, u64 *dsdt)
{
	u32 len = rd32(t + 4);
	u32 flags = len >= FADT_FLAGS + 4 ? rd32(t + FADT_FLAGS) : 0;

	acpi.have_fadt = true;
	acpi.hw_reduced = !!(flags & FLAG_HW_REDUCED);
	*dsdt = rd32(t + FADT_DSDT);
	if (len >= FADT_X_DSDT + 8 && rd64(t + FADT_X_DSDT))
		*dsdt = rd64(t + FADT_X_DSDT);
	acpi.pm1a_cnt = len >= FADT_PM1A_CNT + 4 ? rd32(t + FADT_PM1A_CNT) : 0;
	acpi.pm1b_cnt = len >= FADT_PM1B_CNT + 4 ? rd32(t + FADT_PM1B_CNT) : 0;
	if (!acpi.pm1a_cnt && len >= FADT_X_PM1A_CNT + 12 && t[FADT_X_PM1A_CNT] == 1)
		acpi.pm1a_cnt = (u32)rd64(t + FADT_X_PM1A_CNT + 4);
	if (len >= FADT_RESET_VALUE + 1 && (flags & FLAG_RESET_REG_SUP) &&
	    rd64(t + FADT_RESET_REG + 4)) {
		acpi.have_reset = true;
		acpi.reset_space = t[FADT_RESET_REG];
		acpi.reset_addr = rd64(t + FADT_RESET_REG + 4);
		acpi.reset_value = t[FADT_RESET_VALUE];
	}
	if (len >= FADT_SLEEP_CTL_REG + 12 && rd64(t + FADT_SLEEP_CTL_REG + 4)) {
		acpi.sleep_ctl_space = t[FADT_SLEEP_CTL_REG];
		acpi.sleep_ctl = rd64(t + FADT_SLEEP_CTL_REG + 4);
	}
}

/*
 * Find "Name (_S5_, Package () { SLP_TYPa, ... })" in the AML: NameOp (0x08),
 * optional root prefix '\', "_S5_", PackageOp (0x12), PkgLength, NumElements,
 * then the first element as BytePrefix n, ZeroOp, OneOp, WordPrefix or
 * DWordPrefix.
 */
static int find_s5(const u8 *t)
{
	u32 len = rd32(t + 4), i;

	for (i = HDR_LEN + 1; i + 4 < len; i++) {
		u32 j = i + 4;

		if (rd32(t + i) != SIG('_', 'S', '5', '_'))
			continue;
		if (t[i - 1] != 0x08 && !(t[i - 1] == '\\' && t[i - 2] == 0x08))
			continue;
		if (j >= len || t[j] != 0x12)
			continue;
		j++;
		if (j >= len)
			break;
		j += 1 + (t[j] >> 6); /* PkgLength */
		j++;		      /* NumElements */
		if (j + 1 >= len)
			break;
		switch (t[j]) {
		case 0x00:
			return 0;
		case 0x01:
			return 1;
		case 0x0a:
			return t[j + 1];
		case 0x0b:
			return j + 2 < len ? rd16(t + j + 1) : -1;
		case 0x0c:
			return j + 4 < len ? (int)(rd32(t + j + 1) & 0xffff) : -1;
		default:
			return -1;
		}
	}
	return -1;
}

/* Address space of a Generic Address Structure. */
static const char *space_name(u8 space)
{
	if (space == 1)
		return "io";
	return space == 0 ? "mem" : "other";
}

static void print_gas(const char *name, u8 space, u64 addr)
{
	if (!addr)
		gprintf(" %s=none", name);
	else
		gprintf(" %s=%s:0x%lx", name, space_name(space), addr);
}

void acpi_scan(void)
{
	u64 rsdp_addr = find_rsdp(), root, dsdt = 0;
	const u8 *rsdp = (const u8 *)rsdp_addr, *rt, *t;
	bool xsdt, have_madt = false;
	u32 i, n, entsz;
	char oem[7];

	if (!rsdp_addr) {
		gprintf("GUEST acpi none\n");
		return;
	}
	if (rsdp_addr >= LIMIT_4G - 36 || rd64(rsdp) != 0x2052545020445352UL) {
		fail("acpi rsdp at 0x%lx has no signature", rsdp_addr);
		return;
	}
	acpi.found = true;
	sig_str(rsdp + 9, oem, 6);
	gprintf("GUEST acpi rsdp=0x%lx rev=%u oem=%s\n", rsdp_addr, rsdp[15], oem);
	if (!sum_ok(rsdp, 20))
		fail("acpi rsdp checksum");
	xsdt = rsdp[15] >= 2 && rd64(rsdp + 24);
	if (rsdp[15] >= 2 && (rd32(rsdp + 20) < 36 || !sum_ok(rsdp, rd32(rsdp + 20))))
		fail("acpi rsdp extended checksum");
	root = xsdt ? rd64(rsdp + 24) : rd32(rsdp + 16);
	entsz = xsdt ? 8 : 4;

	rt = table(root, xsdt ? "XSDT" : "RSDT");
	if (!rt)
		return;
	if (rd32(rt) != (xsdt ? SIG('X', 'S', 'D', 'T') : SIG('R', 'S', 'D', 'T')))
		fail("acpi root table signature");
	n = (rd32(rt + 4) - HDR_LEN) / entsz;
	for (i = 0; i < n; i++) {
		const u8 *e = rt + HDR_LEN + i * entsz;

		t = table(xsdt ? rd64(e) : rd32(e), "table");
		if (!t)
			continue;
		if (rd32(t) == SIG('F', 'A', 'C', 'P') && !acpi.have_fadt) {
			parse_fadt(t, &dsdt);
		} else if (rd32(t) == SIG('A', 'P', 'I', 'C') && !have_madt) {
			have_madt = true;
			parse_madt(t);
		}
	}
	if (!acpi.have_fadt)
		fail("acpi no FADT");
	else if (!dsdt)
		fail("acpi FADT has no DSDT");
	if (dsdt) {
		t = table(dsdt, "DSDT");
		if (t && rd32(t) != SIG('D', 'S', 'D', 'T'))
			fail("acpi DSDT signature");
		if (t)
			acpi.s5_typ = find_s5(t);
	}
	if (!have_madt)
		fail("acpi no MADT");

	gprintf("GUEST acpi madt lapics=%u ioapics=%u\n", acpi.lapic_count, acpi.ioapic_count);
	if (acpi.have_fadt) {
		gprintf("GUEST acpi fadt hw_reduced=%d", acpi.hw_reduced);
		print_gas("sleep_ctl", acpi.sleep_ctl_space, acpi.sleep_ctl);
		gprintf(" pm1a_cnt=0x%x", acpi.pm1a_cnt);
		if (acpi.have_reset)
			gprintf(" reset=%s:0x%lx=0x%x\n", space_name(acpi.reset_space),
				acpi.reset_addr, acpi.reset_value);
		else
			gprintf(" reset=none\n");
	}
	if (acpi.s5_typ >= 0)
		gprintf("GUEST acpi s5 slp_typ=%d\n", acpi.s5_typ);
	else
		gprintf("GUEST acpi s5 none\n");
}
