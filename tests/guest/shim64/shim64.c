/* Test-only: turn PVH start_info into struct boot_params for the 64-bit entry. */
typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long u64;

#define ZERO_PAGE 0x7000UL
#define CMDLINE	  0x20000UL

void shim_main(u32 start_info);

static void put32(u64 addr, u32 v)
{
	*(volatile u32 *)addr = v;
}

static void put64(u64 addr, u64 v)
{
	*(volatile u64 *)addr = v;
}

static u32 get32(u64 addr)
{
	return *(volatile u32 *)addr;
}

static u64 get64(u64 addr)
{
	return *(volatile u64 *)addr;
}

void shim_main(u32 start_info)
{
	u64 si = start_info, map, mods, i, n;
	const volatile char *cmd;

	for (i = 0; i < 4096; i += 8)
		put64(ZERO_PAGE + i, 0);
	/* setup header essentials: boot_flag, "HdrS", version 2.15 */
	*(volatile unsigned short *)(ZERO_PAGE + 0x1fe) = 0xaa55;
	put32(ZERO_PAGE + 0x202, 0x53726448);
	*(volatile unsigned short *)(ZERO_PAGE + 0x206) = 0x020f;
	*(volatile u8 *)(ZERO_PAGE + 0x210) = 0xff; /* type_of_loader: undefined */

	map = get64(si + 0x28);
	n = get32(si + 0x30);
	if (n > 128)
		n = 128;
	*(volatile u8 *)(ZERO_PAGE + 0x1e8) = (u8)n;
	for (i = 0; i < n; i++) {
		u64 e = ZERO_PAGE + 0x2d0 + i * 20;

		put64(e, get64(map + i * 24));
		put64(e + 8, get64(map + i * 24 + 8));
		put32(e + 16, get32(map + i * 24 + 16));
	}

	cmd = (const volatile char *)get64(si + 0x18);
	for (i = 0; cmd && i < 2047 && cmd[i]; i++)
		*(volatile char *)(CMDLINE + i) = cmd[i];
	*(volatile char *)(CMDLINE + i) = 0;
	put32(ZERO_PAGE + 0x228, CMDLINE);
	put32(ZERO_PAGE + 0x238, 2047);

	mods = get64(si + 0x10);
	if (get32(si + 0x0c) && mods) {
		put32(ZERO_PAGE + 0x218, (u32)get64(mods));
		put32(ZERO_PAGE + 0x21c, (u32)get64(mods + 8));
	}
	put64(ZERO_PAGE + 0x70, get64(si + 0x20)); /* acpi_rsdp_addr */
}
