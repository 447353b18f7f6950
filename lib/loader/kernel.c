/* Kernel format detection, whole-file reads and initrd placement. */
#include "kernel.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/layout.h"

#define FILE_MAX     GiB(1)
#define PAGE_SIZE_4K 0x1000ULL

static unsigned long long mib_up(uint64_t bytes)
{
	return (unsigned long long)((bytes >> 20) + ((bytes & (MiB(1) - 1)) != 0));
}

/* Heuristic for the error message only: the first bytes are printable text. */
static bool looks_like_text(const uint8_t *img, size_t size)
{
	size_t n = size < 256 ? size : 256;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = img[i];

		if (c != '\n' && c != '\r' && c != '\t' && (c < 0x20 || c > 0x7e))
			return false;
	}
	return n > 0;
}

int kernel_load(struct guest_mem *m, const uint8_t *img, size_t size, struct kernel_image *k,
		struct vmm_err *err)
{
	const char *why = "bad magic";

	if (size >= SELFMAG && memcmp(img, ELFMAG, SELFMAG) == 0)
		return elf_load(m, img, size, k, err);
	if (size >= 0x206 && img[0x1fe] == 0x55 && img[0x1ff] == 0xAA &&
	    memcmp(img + 0x202, "HdrS", 4) == 0)
		return bzimage_load(m, img, size, k, err);

	if (size == 0)
		why = "the file is empty";
	else if (looks_like_text(img, size))
		why = "it looks like a text file";
	else if (size >= 2 && img[0] == 0x1f && img[1] == 0x8b)
		why = "gzip data; decompress it or use the bzImage";
	else if (size >= 0x200 && img[0x1fe] == 0x55 && img[0x1ff] == 0xAA)
		why = "a boot sector without a Linux \"HdrS\" setup header";
	else if (size < 0x206)
		why = "bad magic, and too small to be a kernel";
	return err_set(err, ENOEXEC, "kernel: not an ELF64 vmlinux or bzImage (%s; %zu bytes)", why,
		       size);
}

int file_read_all(const char *path, const char *what, uint8_t **out, size_t *size,
		  struct vmm_err *err)
{
	struct stat st;
	uint8_t *buf;
	size_t len, done = 0;
	int fd, ret;

	*out = NULL;
	*size = 0;
	/* O_NONBLOCK: opening a FIFO must not hang; fstat below refuses it. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return err_set(err, errno, "%s %s: %s", what, path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		ret = err_set(err, errno, "%s %s: %s", what, path, strerror(errno));
		goto out_close;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = err_set(err, EISDIR, "%s %s is a directory", what, path);
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = err_set(err, EINVAL, "%s %s is not a regular file", what, path);
		goto out_close;
	}
	if (st.st_size == 0) {
		ret = err_set(err, ENOEXEC, "%s %s is empty", what, path);
		goto out_close;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size > FILE_MAX) {
		ret = err_set(err, EFBIG, "%s %s is %llu MiB; files over %llu MiB are refused",
			      what, path, mib_up((uint64_t)st.st_size),
			      (unsigned long long)(FILE_MAX >> 20));
		goto out_close;
	}
	len = (size_t)st.st_size;
	buf = malloc(len);
	if (!buf) {
		ret = err_set(err, ENOMEM, "%s %s: cannot allocate %llu MiB", what, path,
			      mib_up(len));
		goto out_close;
	}
	while (done < len) {
		ssize_t n = read(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = err_set(err, errno, "%s %s: read: %s", what, path, strerror(errno));
			goto out_free;
		}
		if (n == 0) {
			ret = err_set(err, EIO,
				      "%s %s shrank from %zu to %zu bytes while being read", what,
				      path, len, done);
			goto out_free;
		}
		done += (size_t)n;
	}
	close(fd);
	*out = buf;
	*size = len;
	return 0;

out_free:
	free(buf);
out_close:
	close(fd);
	return ret;
}

int initrd_load(struct guest_mem *m, const struct kernel_image *k, const uint8_t *data, size_t size,
		uint64_t *addr, struct vmm_err *err)
{
	uint64_t low_end = gm_low_end(m), limit, lo, at;
	uint8_t *dst;

	*addr = 0;
	if (size == 0)
		return err_set(err, EINVAL, "initrd is empty");

	limit = low_end;
	if (k->initrd_addr_max < UINT64_MAX && k->initrd_addr_max + 1 < limit)
		limit = k->initrd_addr_max + 1;
	lo = k->load_end > LAYOUT_HIMEM ? k->load_end : LAYOUT_HIMEM;
	if (lo > UINT64_MAX - (PAGE_SIZE_4K - 1))
		lo = UINT64_MAX;
	else
		lo = (lo + PAGE_SIZE_4K - 1) & ~(PAGE_SIZE_4K - 1);

	if ((uint64_t)size > limit || ((limit - size) & ~(PAGE_SIZE_4K - 1)) < lo)
		return err_set(err, E2BIG,
			       "initrd (%llu MiB) does not fit in guest memory (%llu MiB; room "
			       "for it is 0x%llx-0x%llx, above the kernel and below the initrd "
			       "limit)",
			       mib_up(size), mib_up(m->total), (unsigned long long)lo,
			       (unsigned long long)(limit > lo ? limit : lo));
	at = (limit - size) & ~(PAGE_SIZE_4K - 1);
	dst = gm_ptr(m, at, size);
	if (!dst)
		return err_set(err, E2BIG, "initrd (%llu MiB) does not fit in guest RAM at 0x%llx",
			       mib_up(size), (unsigned long long)at);
	memcpy(dst, data, size);
	*addr = at;
	return 0;
}
