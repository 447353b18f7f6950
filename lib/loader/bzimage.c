/* bzImage loader: the Linux x86 boot protocol's 64-bit entry (protocol 2.12+). */
#include "kernel.h"

#include <errno.h>
#include <string.h>

#include "lib/layout.h"

/* Setup header offsets in the file (= in boot_params), Documentation/arch/x86/boot.rst. */
#define HDR_SETUP_SECTS	    0x1f1
#define HDR_SYSSIZE	    0x1f4
#define HDR_BOOT_FLAG	    0x1fe
#define HDR_JUMP	    0x200
#define HDR_MAGIC	    0x202
#define HDR_VERSION	    0x206
#define HDR_LOADFLAGS	    0x211
#define HDR_CODE32_START    0x214
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_RELOCATABLE	    0x234
#define HDR_XLOADFLAGS	    0x236
#define HDR_CMDLINE_SIZE    0x238
#define HDR_PREF_ADDRESS    0x258
#define HDR_INIT_SIZE	    0x260
#define HDR_END_2_12	    0x268 /* through handover_offset */

#define BOOT_FLAG	0xAA55
#define LOADED_HIGH	0x01
#define XLF_KERNEL_64	0x0001
#define ENTRY_64_OFFSET 0x200
#define MIN_PROTOCOL	0x0206
#define XLF_PROTOCOL	0x020c

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)le16(p) | (uint32_t)le16(p + 2) << 16;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static unsigned long long mib_up(uint64_t bytes)
{
	return (unsigned long long)((bytes >> 20) + ((bytes & (MiB(1) - 1)) != 0));
}

/* True when [addr, addr + len) is RAM below the MMIO hole. */
static bool fits_low(const struct guest_mem *m, uint64_t addr, uint64_t len)
{
	uint64_t low_end = gm_low_end(m);

	return addr <= low_end && len <= low_end - addr && gm_ptr(m, addr, len);
}

int bzimage_load(struct guest_mem *m, const uint8_t *img, size_t size, struct kernel_image *k,
		 struct vmm_err *err)
{
	uint64_t code_off, code_size, need, load, pref, low_end;
	uint32_t init_size, initrd_max;
	unsigned int setup_sects;
	size_t hdr_end;
	uint16_t version;
	uint8_t *dst;

	if (size < HDR_VERSION || le16(img + HDR_BOOT_FLAG) != BOOT_FLAG ||
	    memcmp(img + HDR_MAGIC, "HdrS", 4) != 0)
		return err_set(err, ENOEXEC, "kernel: not a bzImage (no \"HdrS\" setup header)");
	if (size < HDR_VERSION + 2)
		return err_set(err, ENOEXEC,
			       "kernel: bzImage setup header truncated (file is %zu bytes)", size);
	version = le16(img + HDR_VERSION);
	if (version < MIN_PROTOCOL)
		return err_set(err, ENOEXEC,
			       "kernel: bzImage boot protocol %u.%02u is too old (need 2.06 or "
			       "later)",
			       version >> 8, version & 0xff);
	if (version < XLF_PROTOCOL)
		return err_set(err, ENOEXEC,
			       "kernel: bzImage has no 64-bit entry point (boot protocol %u.%02u "
			       "predates xloadflags; need 2.12 or later)",
			       version >> 8, version & 0xff);
	if (size < HDR_END_2_12)
		return err_set(
			err, ENOEXEC,
			"kernel: bzImage setup header truncated (file is %zu bytes, protocol "
			"%u.%02u needs %u)",
			size, version >> 8, version & 0xff, HDR_END_2_12);
	if (!(le16(img + HDR_XLOADFLAGS) & XLF_KERNEL_64))
		return err_set(err, ENOEXEC,
			       "kernel: bzImage has no 64-bit entry point (XLF_KERNEL_64 not set "
			       "in xloadflags)");
	if (!(img[HDR_LOADFLAGS] & LOADED_HIGH))
		return err_set(err, ENOEXEC,
			       "kernel: bzImage is not LOADED_HIGH (a zImage loaded at 0x10000 is "
			       "not supported)");

	setup_sects = img[HDR_SETUP_SECTS];
	if (setup_sects == 0)
		setup_sects = 4;
	code_off = (uint64_t)(setup_sects + 1) * 512;
	if (code_off > size)
		return err_set(err, ENOEXEC,
			       "kernel: bzImage setup_sects %u runs past the end of the file (%zu "
			       "bytes)",
			       setup_sects, size);
	if (code_off == size)
		return err_set(err, ENOEXEC,
			       "kernel: bzImage has no protected-mode code after its %u setup "
			       "sectors",
			       setup_sects);
	code_size = size - code_off;
	/* syssize (32 bits since 2.04) counts the payload in 16-byte paragraphs. */
	if ((uint64_t)le32(img + HDR_SYSSIZE) * 16 > code_size)
		return err_set(err, ENOEXEC,
			       "kernel: bzImage is truncated: syssize says %llu bytes of "
			       "protected-mode code but the file has %llu",
			       (unsigned long long)le32(img + HDR_SYSSIZE) * 16,
			       (unsigned long long)code_size);

	init_size = le32(img + HDR_INIT_SIZE);
	need = init_size > code_size ? init_size : code_size;
	pref = le64(img + HDR_PREF_ADDRESS);
	load = LAYOUT_KERNEL_DEFAULT;
	if (img[HDR_RELOCATABLE] && pref >= LAYOUT_HIMEM && fits_low(m, pref, need))
		load = pref;
	if (!fits_low(m, load, need)) {
		unsigned long long total = mib_up(m->total), low = mib_up(gm_low_end(m));

		if (low != total)
			return err_set(
				err, E2BIG,
				"kernel needs %llu MiB of memory at 0x%llx but the guest has "
				"%llu MiB (%llu MiB below the PCI hole)",
				mib_up(need), (unsigned long long)load, total, low);
		return err_set(err, E2BIG,
			       "kernel needs %llu MiB of memory at 0x%llx but the guest has %llu "
			       "MiB",
			       mib_up(need), (unsigned long long)load, total);
	}

	dst = gm_ptr(m, load, code_size);
	memcpy(dst, img + code_off, code_size);

	memset(k, 0, sizeof(*k));
	k->kind = KERNEL_BZIMAGE;
	k->entry = load + ENTRY_64_OFFSET;
	k->load_start = load;
	k->load_end = load + need;
	k->cmdline_max = le32(img + HDR_CMDLINE_SIZE);
	low_end = gm_low_end(m);
	initrd_max = le32(img + HDR_INITRD_ADDR_MAX);
	k->initrd_addr_max = initrd_max;
	if (low_end && k->initrd_addr_max > low_end - 1)
		k->initrd_addr_max = low_end - 1;
	k->protocol = version;

	/* The header ends at 0x202 + the jump's offset byte (boot.rst). */
	hdr_end = (size_t)HDR_MAGIC + img[HDR_JUMP + 1];
	if (hdr_end > size)
		hdr_end = size;
	k->setup_hdr_len = (uint32_t)(hdr_end - SETUP_HDR_OFFSET);
	if (k->setup_hdr_len > SETUP_HDR_MAX)
		k->setup_hdr_len = SETUP_HDR_MAX;
	memcpy(k->setup_hdr, img + SETUP_HDR_OFFSET, k->setup_hdr_len);
	return 0;
}
