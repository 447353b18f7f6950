/* Thin wrappers around the KVM ioctls that libvmm uses. */
#ifndef LIBVMM_LIB_KVM_H
#define LIBVMM_LIB_KVM_H

#include <linux/kvm.h>
#include <stdint.h>

#include "lib/err.h"

struct kvm {
	int sys_fd; /* /dev/kvm */
	int vm_fd;
	int run_size; /* KVM_GET_VCPU_MMAP_SIZE */
	struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID result */
};

/*
 * Open @dev (normally "/dev/kvm"), check the API version and the extensions
 * libvmm needs, create a VM with an in-kernel irqchip and PIT, and read the
 * supported CPUID. Returns 0 or -errno with a message (a missing device says
 * that KVM is not available).
 */
int kvm_open(struct kvm *k, const char *dev, struct vmm_err *err);
void kvm_close(struct kvm *k);

/* Map @size bytes at host @host to guest @gpa in memory slot @slot. */
int kvm_set_memory(struct kvm *k, uint32_t slot, uint64_t gpa, uint64_t size, void *host,
		   struct vmm_err *err);

/* Drive interrupt line @gsi of the in-kernel irqchip. Returns 0 or -errno. */
int kvm_irq_line(struct kvm *k, uint32_t gsi, int level);

/* Create vCPU @id; returns the vCPU fd or -errno. */
int kvm_create_vcpu(struct kvm *k, unsigned int id, struct vmm_err *err);

#endif
