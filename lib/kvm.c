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
		{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
		{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
		{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
		{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
		{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
	};
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	int ret, v;

	memset(k, 0, sizeof(*k));
	k->vm_fd = -1;
	k->sys_fd = open(dev, O_RDWR | O_CLOEXEC);
	if (k->sys_fd < 0) {
		int e = errno;

		if (e == ENOENT || e == ENODEV || e == ENXIO)
			return err_set(err, ENODEV, "%s: KVM is not available on this host (%s)", dev,
				       strerror(e));
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
	struct kvm_irq_level l = { .irq = gsi, .level = (uint32_t)level };

	return ioctl(k->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

int kvm_create_vcpu(struct kvm *k, unsigned int id, struct vmm_err *err)
{
	int fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);

	if (fd < 0)
		return err_set(err, errno, "KVM_CREATE_VCPU %u: %s", id, strerror(errno));
	return fd;
}
