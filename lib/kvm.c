/* KVM system and VM file descriptors: open, capability checks, memory slots, irq lines. */
#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "lib/layout.h"

#define KVM_CPUID_MAX 256

static int kvm_check_ext(struct kvm *k, long ext)
{
	return ioctl(k->sys_fd, KVM_CHECK_EXTENSION, ext);
}

static int kvm_read_cpuid(struct kvm *k, struct vmm_err *err)
{
	size_t sz = sizeof(struct kvm_cpuid2) + KVM_CPUID_MAX * sizeof(struct kvm_cpuid_entry2);

	k->cpuid = calloc(1, sz);
	if (!k->cpuid)
		return err_set(err, ENOMEM, "out of memory");
	k->cpuid->nent = KVM_CPUID_MAX;
	if (ioctl(k->sys_fd, KVM_GET_SUPPORTED_CPUID, k->cpuid) < 0)
		return err_set(err, errno, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
	return 0;
}

int kvm_open(struct kvm *k, const char *dev, struct vmm_err *err)
{
	static const struct {
		long ext;
		const char *name;
	} needed[] = {
		{KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
		{KVM_CAP_PIT2, "KVM_CAP_PIT2"},
		{KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
		{KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
		{KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
		{KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
		{KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
		{KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"},
		{KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI"},
	};
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	int ret, v;

	memset(k, 0, sizeof(*k));
	k->vm_fd = -1;
	pthread_mutex_init(&k->routes_lock, NULL);
	for (int i = 0; i < KVM_MAX_MSI_ROUTES; i++)
		k->routes[i].fd = -1;
	k->sys_fd = open(dev, O_RDWR | O_CLOEXEC);
	if (k->sys_fd < 0) {
		int e = errno;

		if (e == ENOENT || e == ENODEV || e == ENXIO)
			return err_set(err, ENODEV, "%s: KVM is not available on this host (%s)",
				       dev, strerror(e));
		return err_set(err, e, "cannot open %s: %s", dev, strerror(e));
	}
	v = ioctl(k->sys_fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		ret = err_set(err, ENOTSUP, "%s: unsupported KVM API version %d", dev, v);
		goto fail;
	}
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (kvm_check_ext(k, needed[i].ext) <= 0) {
			ret = err_set(err, ENOTSUP, "%s lacks %s", dev, needed[i].name);
			goto fail;
		}
	}
	k->run_size = ioctl(k->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_size <= 0) {
		ret = err_set(err, errno, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
		goto fail;
	}
	ret = kvm_read_cpuid(k, err);
	if (ret < 0)
		goto fail;
	k->vm_fd = ioctl(k->sys_fd, KVM_CREATE_VM, 0);
	if (k->vm_fd < 0) {
		ret = err_set(err, errno, "KVM_CREATE_VM: %s", strerror(errno));
		goto fail;
	}
	if (ioctl(k->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0) {
		ret = err_set(err, errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
		goto fail;
	}
	{
		uint64_t ident = 0xfffbc000ULL;

		if (ioctl(k->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &ident) < 0) {
			ret = err_set(err, errno, "KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
			goto fail;
		}
	}
	if (ioctl(k->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		ret = err_set(err, errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
		goto fail;
	}
	if (ioctl(k->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
		ret = err_set(err, errno, "KVM_CREATE_PIT2: %s", strerror(errno));
		goto fail;
	}
	return 0;
fail:
	kvm_close(k);
	return ret;
}

void kvm_close(struct kvm *k)
{
	if (k->sys_fd >= 0 || k->vm_fd >= 0)
		pthread_mutex_destroy(&k->routes_lock);
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->sys_fd >= 0)
		close(k->sys_fd);
	free(k->cpuid);
	memset(k, 0, sizeof(*k));
	k->sys_fd = -1;
	k->vm_fd = -1;
}

int kvm_set_memory(struct kvm *k, uint32_t slot, uint64_t gpa, uint64_t size, void *host,
		   struct vmm_err *err)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)host,
	};

	if (ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return err_set(err, errno, "KVM_SET_USER_MEMORY_REGION (slot %u, %llu MiB): %s",
			       slot, (unsigned long long)(size >> 20), strerror(errno));
	return 0;
}

int kvm_irq_line(struct kvm *k, uint32_t gsi, int level)
{
	struct kvm_irq_level l = {.irq = gsi, .level = (uint32_t)level};

	return ioctl(k->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

int kvm_create_vcpu(struct kvm *k, unsigned int id, struct vmm_err *err)
{
	int fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);

	if (fd < 0)
		return err_set(err, errno, "KVM_CREATE_VCPU %u: %s", id, strerror(errno));
	return fd;
}

int kvm_ioeventfd(struct kvm *k, uint64_t addr, uint32_t len, int fd, bool assign)
{
	struct kvm_ioeventfd io = {
		.addr = addr,
		.len = len,
		.fd = fd,
		.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};

	return ioctl(k->vm_fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

/*
 * Install the whole GSI routing table: KVM's defaults for the irqchip pins
 * (GSI 0-15 to the PIC and IOAPIC, 16-23 to the IOAPIC), which
 * KVM_SET_GSI_ROUTING would otherwise drop, plus every MSI route in use.
 * Caller holds routes_lock.
 */
static int kvm_commit_routes(struct kvm *k)
{
	enum { MAX = 16 * 2 + 8 + KVM_MAX_MSI_ROUTES };
	struct kvm_irq_routing *r;
	uint32_t n = 0;
	int ret;

	r = calloc(1, sizeof(*r) + MAX * sizeof(r->entries[0]));
	if (!r)
		return -ENOMEM;
	for (uint32_t gsi = 0; gsi < 24; gsi++) {
		if (gsi < 16) {
			r->entries[n].gsi = gsi;
			r->entries[n].type = KVM_IRQ_ROUTING_IRQCHIP;
			r->entries[n].u.irqchip.irqchip =
				gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
			r->entries[n].u.irqchip.pin = gsi % 8;
			n++;
		}
		r->entries[n].gsi = gsi;
		r->entries[n].type = KVM_IRQ_ROUTING_IRQCHIP;
		r->entries[n].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		r->entries[n].u.irqchip.pin = gsi;
		n++;
	}
	for (int i = 0; i < KVM_MAX_MSI_ROUTES; i++) {
		const struct kvm_msi_route *m = &k->routes[i];

		if (m->fd < 0)
			continue;
		r->entries[n].gsi = m->gsi;
		r->entries[n].type = KVM_IRQ_ROUTING_MSI;
		r->entries[n].u.msi.address_lo = (uint32_t)m->addr;
		r->entries[n].u.msi.address_hi = (uint32_t)(m->addr >> 32);
		r->entries[n].u.msi.data = m->data;
		n++;
	}
	r->nr = n;
	ret = ioctl(k->vm_fd, KVM_SET_GSI_ROUTING, r) < 0 ? -errno : 0;
	free(r);
	return ret;
}

int kvm_msi_irqfd_set(struct kvm *k, int fd, uint64_t addr, uint32_t data)
{
	struct kvm_msi_route *m = NULL, *free_slot = NULL;
	bool bind = false;
	int ret;

	pthread_mutex_lock(&k->routes_lock);
	for (int i = 0; i < KVM_MAX_MSI_ROUTES && !m; i++) {
		if (k->routes[i].fd == fd)
			m = &k->routes[i];
		else if (k->routes[i].fd < 0 && !free_slot)
			free_slot = &k->routes[i];
	}
	if (!m) {
		if (!free_slot) {
			ret = -ENOSPC;
			goto out;
		}
		m = free_slot;
		m->fd = fd;
		m->gsi = KVM_MSI_GSI_BASE + (uint32_t)(m - k->routes);
		bind = true;
	}
	m->addr = addr;
	m->data = data;
	ret = kvm_commit_routes(k);
	if (ret == 0 && bind) {
		struct kvm_irqfd irqfd = {.fd = (uint32_t)fd, .gsi = m->gsi};

		if (ioctl(k->vm_fd, KVM_IRQFD, &irqfd) < 0)
			ret = -errno;
	}
	if (ret < 0 && bind) {
		m->fd = -1;
		kvm_commit_routes(k);
	}
out:
	pthread_mutex_unlock(&k->routes_lock);
	return ret;
}

void kvm_msi_irqfd_clear(struct kvm *k, int fd)
{
	pthread_mutex_lock(&k->routes_lock);
	for (int i = 0; i < KVM_MAX_MSI_ROUTES; i++) {
		struct kvm_msi_route *m = &k->routes[i];

		if (m->fd != fd)
			continue;
		{
			struct kvm_irqfd irqfd = {
				.fd = (uint32_t)fd,
				.gsi = m->gsi,
				.flags = KVM_IRQFD_FLAG_DEASSIGN,
			};

			ioctl(k->vm_fd, KVM_IRQFD, &irqfd);
		}
		m->fd = -1;
		kvm_commit_routes(k);
		break;
	}
	pthread_mutex_unlock(&k->routes_lock);
}

int kvm_signal_msi(struct kvm *k, uint64_t addr, uint32_t data)
{
	struct kvm_msi msi = {
		.address_lo = (uint32_t)addr,
		.address_hi = (uint32_t)(addr >> 32),
		.data = data,
	};

	return ioctl(k->vm_fd, KVM_SIGNAL_MSI, &msi) < 0 ? -errno : 0;
}
