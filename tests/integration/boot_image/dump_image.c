/*
 * dump_image: build a guest memory image with vm_prepare() (no KVM needed)
 * and write the parts of guest RAM that libvmm filled in to a file, for
 * shim.S/shim.c to put into a QEMU VM (see README.md).
 *
 * usage: dump_image -k KERNEL [-i INITRD] [-p CMDLINE] [-m MIB] [-c CPUS] -o OUT
 *
 * File format (all little endian):
 *   header, 64 bytes:
 *     0  char[8] magic "LVMMIMG1"
 *     8  u32     version (1)
 *     12 u32     number of records
 *     16 u64     entry point of the boot CPU (vm->kernel.entry)
 *     24 u32     vCPUs
 *     28 u32     guest RAM in MiB
 *     32 u64     initrd guest-physical address (0: none)
 *     40 u64     initrd size in bytes
 *     48 u64     file size in bytes
 *     56 u32     CRC-32 (zlib) of bytes 64 .. file size
 *     60 u32     0
 *   records, sorted by address, not overlapping:
 *     u64 gpa, u64 len, then len bytes, then zeros up to a multiple of 8
 *
 * Records: guest RAM 0-0x9ffff and 0xe0000-0xfffff (low memory: GDT, zero
 * page, page tables, command line, EBDA, ACPI), the kernel's range
 * [load_start, load_end), the initrd's range as recorded in boot_params, and
 * any other non-zero 4 KiB page of guest RAM (found with SEEK_DATA on the RAM
 * memfd). RAM not in a record is zero in libvmm's guest.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/layout.h"
#include "lib/memory.h"
#include "lib/vm.h"
#include "lib/x86/bootparams.h"

#define DUMP_MAGIC   "LVMMIMG1"
#define DUMP_VERSION 1
#define DUMP_HDR     64
#define PAGE	     4096ULL
#define MAX_RECORDS  4096

struct range {
	uint64_t gpa, len;
};

static struct range recs[MAX_RECORDS];
static unsigned int nrecs;

static void usage(void)
{
	fprintf(stderr, "usage: dump_image -k KERNEL [-i INITRD] [-p CMDLINE] [-m MIB] [-c CPUS] "
			"-o OUT\n");
	exit(2);
}

static uint64_t get_le(const uint8_t *p, unsigned int n)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_le(uint8_t *p, uint64_t v, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static int add_range(uint64_t gpa, uint64_t len)
{
	if (len == 0)
		return 0;
	if (nrecs == MAX_RECORDS) {
		fprintf(stderr, "dump_image: more than %u records\n", MAX_RECORDS);
		return -1;
	}
	recs[nrecs++] = (struct range){gpa, len};
	return 0;
}

static bool covered(uint64_t gpa, uint64_t len)
{
	for (unsigned int i = 0; i < nrecs; i++)
		if (gpa >= recs[i].gpa && gpa + len <= recs[i].gpa + recs[i].len)
			return true;
	return false;
}

static int cmp_range(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

/* Sort and merge overlapping or touching ranges. */
static void normalise(void)
{
	unsigned int out = 0;

	qsort(recs, nrecs, sizeof(recs[0]), cmp_range);
	for (unsigned int i = 0; i < nrecs; i++) {
		if (out && recs[i].gpa <= recs[out - 1].gpa + recs[out - 1].len) {
			uint64_t end = recs[i].gpa + recs[i].len;

			if (end > recs[out - 1].gpa + recs[out - 1].len)
				recs[out - 1].len = end - recs[out - 1].gpa;
			continue;
		}
		recs[out++] = recs[i];
	}
	nrecs = out;
}

/* zlib's CRC-32 (reflected, polynomial 0xedb88320), continued from @crc. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, uint64_t n)
{
	static uint32_t table[256];

	if (!table[1]) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;

			for (int k = 0; k < 8; k++)
				c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
	}
	crc = ~crc;
	for (uint64_t i = 0; i < n; i++)
		crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static bool page_is_zero(const uint8_t *p)
{
	for (uint64_t i = 0; i < PAGE; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * Add every non-zero page that libvmm wrote outside the expected ranges.
 * SEEK_DATA on the memfd visits only pages that were ever touched, so a
 * 4 GiB guest is not read (and not allocated) in full.
 */
static int add_stray_pages(const struct guest_mem *m, unsigned int *stray)
{
	*stray = 0;
	for (unsigned int r = 0; r < m->nregions; r++) {
		const struct gm_region *reg = &m->regions[r];
		off_t pos = (off_t)reg->fd_offset, end = (off_t)(reg->fd_offset + reg->size);

		while (pos < end) {
			off_t data = lseek(m->fd, pos, SEEK_DATA), hole;

			if (data < 0 && errno == ENXIO)
				break;
			if (data < 0) {
				fprintf(stderr, "dump_image: SEEK_DATA: %s\n", strerror(errno));
				return -1;
			}
			if (data >= end)
				break;
			hole = lseek(m->fd, data, SEEK_HOLE);
			if (hole < 0 || hole > end)
				hole = end;
			for (off_t o = data & ~(off_t)(PAGE - 1); o < hole; o += (off_t)PAGE) {
				uint64_t gpa = reg->gpa + (uint64_t)o - reg->fd_offset;

				if (covered(gpa, PAGE) ||
				    page_is_zero(reg->host + (gpa - reg->gpa)))
					continue;
				if (add_range(gpa, PAGE) < 0)
					return -1;
				(*stray)++;
			}
			pos = hole;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *kernel = NULL, *initrd = NULL, *cmdline = NULL, *out_path = NULL;
	unsigned long mem_mib = 256, cpus = 1;
	struct vm_config cfg;
	struct vmm_err err = {0};
	struct vm *vm;
	uint8_t zp[BP_SIZE], hdr[DUMP_HDR] = {0}, rh[16];
	uint64_t initrd_addr, initrd_size, fsize = DUMP_HDR, payload = 0;
	unsigned int stray = 0;
	uint32_t crc = 0;
	FILE *f;
	int opt;

	while ((opt = getopt(argc, argv, "k:i:p:m:c:o:")) != -1) {
		switch (opt) {
		case 'k':
			kernel = optarg;
			break;
		case 'i':
			initrd = optarg;
			break;
		case 'p':
			cmdline = optarg;
			break;
		case 'm':
			mem_mib = strtoul(optarg, NULL, 0);
			break;
		case 'c':
			cpus = strtoul(optarg, NULL, 0);
			break;
		case 'o':
			out_path = optarg;
			break;
		default:
			usage();
		}
	}
	if (!kernel || !out_path || optind != argc || mem_mib == 0 || mem_mib > UINT32_MAX ||
	    cpus == 0 || cpus > UINT32_MAX)
		usage();

	vm_config_init(&cfg);
	cfg.kernel_path = kernel;
	cfg.initrd_path = initrd;
	cfg.cmdline = cmdline;
	cfg.mem_mib = (uint32_t)mem_mib;
	cfg.vcpus = (uint32_t)cpus;
	if (vm_prepare(&cfg, &vm, &err) < 0) {
		fprintf(stderr, "dump_image: vm_prepare: %s\n", err.msg);
		return 1;
	}

	if (gm_read(&vm->mem, zp, LAYOUT_ZERO_PAGE, sizeof(zp)) < 0) {
		fprintf(stderr, "dump_image: no zero page in guest RAM\n");
		return 1;
	}
	initrd_addr = get_le(zp + BP_RAMDISK_IMAGE, 4) | get_le(zp + BP_EXT_RAMDISK_IMAGE, 4) << 32;
	initrd_size = get_le(zp + BP_RAMDISK_SIZE, 4) | get_le(zp + BP_EXT_RAMDISK_SIZE, 4) << 32;

	/* Low memory up to the VGA window, and the BIOS/ACPI area. */
	if (add_range(0, 0xA0000) < 0 || add_range(LAYOUT_ACPI, LAYOUT_ACPI_SIZE) < 0 ||
	    add_range(vm->kernel.load_start, vm->kernel.load_end - vm->kernel.load_start) < 0 ||
	    add_range(initrd_addr, initrd_size) < 0)
		return 1;
	normalise();
	if (vm->mem.fd >= 0 && add_stray_pages(&vm->mem, &stray) < 0)
		return 1;
	normalise();
	for (unsigned int i = 0; i < nrecs; i++) {
		if (!gm_valid(&vm->mem, recs[i].gpa, recs[i].len)) {
			fprintf(stderr, "dump_image: range 0x%llx+0x%llx is not guest RAM\n",
				(unsigned long long)recs[i].gpa, (unsigned long long)recs[i].len);
			return 1;
		}
		fsize += 16 + ((recs[i].len + 7) & ~7ULL);
		payload += recs[i].len;
	}

	f = fopen(out_path, "wb");
	if (!f) {
		fprintf(stderr, "dump_image: %s: %s\n", out_path, strerror(errno));
		return 1;
	}
	/* Header first with a zero CRC; rewritten at the end. */
	if (fwrite(hdr, 1, sizeof(hdr), f) != sizeof(hdr))
		goto io_error;
	for (unsigned int i = 0; i < nrecs; i++) {
		static const uint8_t pad[8];
		const uint8_t *src = gm_ptr(&vm->mem, recs[i].gpa, recs[i].len);
		size_t npad = (size_t)((8 - (recs[i].len & 7)) & 7);

		put_le(rh, recs[i].gpa, 8);
		put_le(rh + 8, recs[i].len, 8);
		crc = crc32_update(crc, rh, sizeof(rh));
		crc = crc32_update(crc, src, recs[i].len);
		crc = crc32_update(crc, pad, npad);
		if (fwrite(rh, 1, sizeof(rh), f) != sizeof(rh) ||
		    fwrite(src, 1, recs[i].len, f) != recs[i].len ||
		    fwrite(pad, 1, npad, f) != npad)
			goto io_error;
	}
	memcpy(hdr, DUMP_MAGIC, 8);
	put_le(hdr + 8, DUMP_VERSION, 4);
	put_le(hdr + 12, nrecs, 4);
	put_le(hdr + 16, vm->kernel.entry, 8);
	put_le(hdr + 24, vm->ncpus, 4);
	put_le(hdr + 28, vm->cfg.mem_mib, 4);
	put_le(hdr + 32, initrd_addr, 8);
	put_le(hdr + 40, initrd_size, 8);
	put_le(hdr + 48, fsize, 8);
	put_le(hdr + 56, crc, 4);
	if (fseek(f, 0, SEEK_SET) < 0 || fwrite(hdr, 1, sizeof(hdr), f) != sizeof(hdr))
		goto io_error;
	if (fclose(f) != 0) {
		f = NULL;
		goto io_error;
	}

	printf("dump: %s entry=0x%llx vcpus=%u mem_mib=%u records=%u bytes=%llu stray_pages=%u\n",
	       out_path, (unsigned long long)vm->kernel.entry, vm->ncpus, vm->cfg.mem_mib, nrecs,
	       (unsigned long long)payload, stray);
	for (unsigned int i = 0; i < nrecs; i++)
		printf("record 0x%llx-0x%llx\n", (unsigned long long)recs[i].gpa,
		       (unsigned long long)(recs[i].gpa + recs[i].len));
	vm_destroy(vm);
	return 0;

io_error:
	fprintf(stderr, "dump_image: writing %s: %s\n", out_path, strerror(errno));
	if (f)
		fclose(f);
	return 1;
}
