/* Guest RAM allocation and bounds-checked guest-physical address translation. */
#include "memory.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "layout.h"

int gm_init(struct guest_mem *m, uint64_t mem_bytes, struct vmm_err *err)
{
	struct layout_ram r = layout_ram(mem_bytes);
	int ret;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	m->fd = memfd_create("libvmm-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (m->fd < 0)
		return err_set(err, errno, "memfd_create for guest RAM: %s", strerror(errno));
	if (ftruncate(m->fd, (off_t)mem_bytes) < 0) {
		ret = err_set(err, errno, "cannot size guest RAM to %llu MiB: %s",
			      (unsigned long long)(mem_bytes >> 20), strerror(errno));
		goto fail;
	}
	/*
	 * The size is final: a device process holding the fd (the balloon
	 * punches pages out of it) can neither shrink it under the VMM's
	 * mapping (SIGBUS) nor grow it, nor lift the seals.
	 */
	if (fcntl(m->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		ret = err_set(err, errno, "cannot seal guest RAM's size: %s", strerror(errno));
		goto fail;
	}
	m->base =
		mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (m->base == MAP_FAILED) {
		m->base = NULL;
		ret = err_set(err, errno, "cannot map %llu MiB of guest RAM: %s",
			      (unsigned long long)(mem_bytes >> 20), strerror(errno));
		goto fail;
	}
	m->total = mem_bytes;
	m->regions[0] = (struct gm_region){0, r.low_size, m->base, 0};
	m->nregions = 1;
	if (r.high_size) {
		m->regions[1] = (struct gm_region){LAYOUT_MMIO_HOLE_END, r.high_size,
						   m->base + r.low_size, r.low_size};
		m->nregions = 2;
	}
	return 0;
fail:
	close(m->fd);
	m->fd = -1;
	return ret;
}

void gm_init_fake(struct guest_mem *m, void *buf, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	m->base = buf;
	m->total = size;
	m->regions[0] = (struct gm_region){0, size, buf, 0};
	m->nregions = 1;
}

void gm_destroy(struct guest_mem *m)
{
	/* A zeroed struct has fd 0 but no mapping: only close what gm_init made. */
	if (m->fd >= 0 && m->base) {
		munmap(m->base, m->total);
		close(m->fd);
	}
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

void *gm_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned int i = 0; i < m->nregions; i++) {
		const struct gm_region *r = &m->regions[i];

		if (gpa < r->gpa || gpa - r->gpa > r->size)
			continue;
		/* gpa may be the end of this region and the start of the next. */
		if (len > r->size - (gpa - r->gpa))
			continue;
		return r->host + (gpa - r->gpa);
	}
	return NULL;
}

bool gm_valid(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	return gm_ptr(m, gpa, len) != NULL;
}

int gm_read(const struct guest_mem *m, void *dst, uint64_t gpa, uint64_t len)
{
	void *p = gm_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gm_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

uint64_t gm_low_end(const struct guest_mem *m)
{
	return m->nregions ? m->regions[0].size : 0;
}
