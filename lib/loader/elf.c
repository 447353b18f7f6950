/* ELF64 vmlinux loader: PT_LOAD segments copied to their physical addresses. */
#include "kernel.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

#include "lib/layout.h"

/* Physical addresses above this are not addresses any x86 CPU can reach. */
#define PHYS_ADDR_LIMIT (1ULL << 52)

static unsigned long long mib_up(uint64_t bytes)
{
	return (unsigned long long)((bytes >> 20) + ((bytes & (MiB(1) - 1)) != 0));
}

/*
 * Fetch program header @i into @ph; -ENOEXEC unless it lies wholly inside
 * the file. e_phnum < 0xffff and e_phentsize < 0x10000, so i * phentsize
 * cannot overflow.
 */
static int read_phdr(const uint8_t *img, size_t size, const Elf64_Ehdr *eh, unsigned int i,
		     Elf64_Phdr *ph, struct vmm_err *err)
{
	uint64_t rel = (uint64_t)i * eh->e_phentsize;

	if (eh->e_phoff > size || rel > size - eh->e_phoff ||
	    size - eh->e_phoff - rel < sizeof(*ph))
		return err_set(err, ENOEXEC,
			       "kernel: ELF program header %u lies outside the file "
			       "(e_phoff 0x%llx, %zu bytes)",
			       i, (unsigned long long)eh->e_phoff, size);
	memcpy(ph, img + eh->e_phoff + rel, sizeof(*ph));
	return 0;
}

static int check_ehdr(const uint8_t *img, size_t size, Elf64_Ehdr *eh, struct vmm_err *err)
{
	if (size < SELFMAG || memcmp(img, ELFMAG, SELFMAG) != 0)
		return err_set(err, ENOEXEC, "kernel: not an ELF file (bad magic)");
	if (size < EI_NIDENT)
		return err_set(err, ENOEXEC, "kernel: ELF header truncated (file is %zu bytes)",
			       size);
	if (img[EI_CLASS] == ELFCLASS32)
		return err_set(err, ENOEXEC,
			       "kernel: 32-bit ELF (ELFCLASS32); need an ELF64 x86-64 vmlinux");
	if (img[EI_CLASS] != ELFCLASS64)
		return err_set(err, ENOEXEC, "kernel: ELF class %u is not ELFCLASS64",
			       img[EI_CLASS]);
	if (img[EI_DATA] != ELFDATA2LSB)
		return err_set(err, ENOEXEC, "kernel: ELF data encoding %u is not little endian",
			       img[EI_DATA]);
	if (img[EI_VERSION] != EV_CURRENT)
		return err_set(err, ENOEXEC, "kernel: ELF version %u is not EV_CURRENT",
			       img[EI_VERSION]);
	if (size < sizeof(*eh))
		return err_set(err, ENOEXEC,
			       "kernel: ELF header truncated (file is %zu bytes, the header needs "
			       "%zu)",
			       size, sizeof(*eh));
	memcpy(eh, img, sizeof(*eh));
	if (eh->e_machine != EM_X86_64)
		return err_set(err, ENOEXEC, "kernel: ELF machine %u is not x86-64 (EM_X86_64)",
			       eh->e_machine);
	if (eh->e_type == ET_DYN)
		return err_set(err, ENOEXEC,
			       "kernel: ELF type ET_DYN (position-independent) is not supported; "
			       "need an ET_EXEC vmlinux");
	if (eh->e_type != ET_EXEC)
		return err_set(err, ENOEXEC, "kernel: ELF type %u is not an executable (ET_EXEC)",
			       eh->e_type);
	if (eh->e_phnum == 0)
		return err_set(err, ENOEXEC,
			       "kernel: ELF has no program headers (nothing to load)");
	if (eh->e_phnum == PN_XNUM)
		return err_set(err, ENOEXEC, "kernel: ELF has too many program headers (PN_XNUM)");
	if (eh->e_phentsize < sizeof(Elf64_Phdr))
		return err_set(err, ENOEXEC,
			       "kernel: ELF e_phentsize %u is smaller than a program header (%zu)",
			       eh->e_phentsize, sizeof(Elf64_Phdr));
	return 0;
}

/* Validate one PT_LOAD against the file and guest RAM. */
static int check_load(const struct guest_mem *m, size_t size, unsigned int i, const Elf64_Phdr *ph,
		      struct vmm_err *err)
{
	unsigned long long off = ph->p_offset, filesz = ph->p_filesz, memsz = ph->p_memsz;
	unsigned long long pa = ph->p_paddr;

	if (ph->p_filesz > ph->p_memsz)
		return err_set(err, ENOEXEC,
			       "kernel: ELF segment %u has p_filesz 0x%llx larger than p_memsz "
			       "0x%llx",
			       i, filesz, memsz);
	if (ph->p_offset > size || ph->p_filesz > size - ph->p_offset)
		return err_set(err, ENOEXEC,
			       "kernel: ELF segment %u (file offset 0x%llx, 0x%llx bytes) lies "
			       "outside the file (%zu bytes)",
			       i, off, filesz, size);
	if (ph->p_memsz == 0)
		return 0;
	if (ph->p_paddr > UINT64_MAX - ph->p_memsz)
		return err_set(err, ENOEXEC,
			       "kernel: ELF segment %u at 0x%llx (0x%llx bytes) wraps around the "
			       "address space",
			       i, pa, memsz);
	if (ph->p_paddr + ph->p_memsz > PHYS_ADDR_LIMIT)
		return err_set(err, ENOEXEC,
			       "kernel: ELF segment %u at physical 0x%llx (0x%llx bytes) lies "
			       "beyond any physical address",
			       i, pa, memsz);
	if (!gm_ptr(m, ph->p_paddr, ph->p_memsz))
		return err_set(err, E2BIG,
			       "kernel: ELF segment %u at [0x%llx, 0x%llx) lies outside guest RAM "
			       "(%llu MiB)",
			       i, pa, pa + memsz, mib_up(m->total));
	return 0;
}

/*
 * Find the physical entry point: e_entry itself when some segment loads it
 * physically, else e_entry translated through the segment whose virtual
 * range holds it. Returns 0 or -ENOEXEC.
 */
static int find_entry(const uint8_t *img, size_t size, const Elf64_Ehdr *eh, uint64_t *entry,
		      struct vmm_err *err)
{
	uint64_t e = eh->e_entry;
	Elf64_Phdr ph;

	for (unsigned int i = 0; i < eh->e_phnum; i++) {
		if (read_phdr(img, size, eh, i, &ph, err))
			return -ENOEXEC;
		if (ph.p_type == PT_LOAD && e >= ph.p_paddr && e - ph.p_paddr < ph.p_memsz) {
			*entry = e;
			return 0;
		}
	}
	for (unsigned int i = 0; i < eh->e_phnum; i++) {
		if (read_phdr(img, size, eh, i, &ph, err))
			return -ENOEXEC;
		if (ph.p_type == PT_LOAD && e >= ph.p_vaddr && e - ph.p_vaddr < ph.p_memsz) {
			*entry = ph.p_paddr + (e - ph.p_vaddr);
			return 0;
		}
	}
	return err_set(err, ENOEXEC,
		       "kernel: ELF entry point 0x%llx lies outside every loaded "
		       "segment",
		       (unsigned long long)e);
}

int elf_load(struct guest_mem *m, const uint8_t *img, size_t size, struct kernel_image *k,
	     struct vmm_err *err)
{
	uint64_t lo = UINT64_MAX, hi = 0, entry = 0, low_end;
	unsigned int nload = 0;
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	int ret;

	ret = check_ehdr(img, size, &eh, err);
	if (ret)
		return ret;

	/* Validate everything before touching guest memory: the table first. */
	for (unsigned int i = 0; i < eh.e_phnum; i++) {
		ret = read_phdr(img, size, &eh, i, &ph, err);
		if (ret)
			return ret;
	}
	for (unsigned int i = 0; i < eh.e_phnum; i++) {
		read_phdr(img, size, &eh, i, &ph, NULL);
		if (ph.p_type != PT_LOAD)
			continue;
		ret = check_load(m, size, i, &ph, err);
		if (ret)
			return ret;
		if (ph.p_memsz == 0)
			continue;
		nload++;
		if (ph.p_paddr < lo)
			lo = ph.p_paddr;
		if (ph.p_paddr + ph.p_memsz > hi)
			hi = ph.p_paddr + ph.p_memsz;
	}
	if (nload == 0)
		return err_set(err, ENOEXEC, "kernel: ELF has no loadable (PT_LOAD) segment");
	ret = find_entry(img, size, &eh, &entry, err);
	if (ret)
		return ret;

	for (unsigned int i = 0; i < eh.e_phnum; i++) {
		uint8_t *dst;

		read_phdr(img, size, &eh, i, &ph, NULL);
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		dst = gm_ptr(m, ph.p_paddr, ph.p_memsz);
		if (!dst) /* checked above; RAM does not change */
			return err_set(err, EFAULT, "kernel: ELF segment %u vanished", i);
		memcpy(dst, img + ph.p_offset, ph.p_filesz);
		memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
	}

	low_end = gm_low_end(m);
	if (low_end > LAYOUT_MMIO_HOLE_END)
		low_end = LAYOUT_MMIO_HOLE_END;
	memset(k, 0, sizeof(*k));
	k->kind = KERNEL_ELF;
	k->entry = entry;
	k->load_start = lo;
	k->load_end = hi;
	k->cmdline_max = 2047; /* COMMAND_LINE_SIZE 2048 including the NUL */
	k->initrd_addr_max = low_end ? low_end - 1 : 0;
	k->protocol = 0;
	return 0;
}
