/* Thin wrappers around the KVM ioctls that libvmm uses. */
#ifndef LIBVMM_LIB_KVM_H
#define LIBVMM_LIB_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"

#include <pthread.h>

/* GSIs 0-23 are the irqchip pins; MSI routes take GSIs from here up. */
#define KVM_MSI_GSI_BASE   24
#define KVM_MAX_MSI_ROUTES 256

/* One MSI route bound to an irqfd. */
struct kvm_msi_route {
	int fd; /* -1: free */
	uint32_t gsi;
	uint64_t addr;
	uint32_t data;
};

struct kvm {
	int sys_fd; /* /dev/kvm */
	int vm_fd;
	int run_size;		  /* KVM_GET_VCPU_MMAP_SIZE */
	struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID result */
	pthread_mutex_t routes_lock;
	struct kvm_msi_route routes[KVM_MAX_MSI_ROUTES];
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

/*
 * Make eventfd @fd readable when the guest writes @len bytes (0: any length)
 * at MMIO address @addr (KVM_IOEVENTFD), or stop doing so (@assign false).
 */
int kvm_ioeventfd(struct kvm *k, uint64_t addr, uint32_t len, int fd, bool assign);

/*
 * Route eventfd @fd to the MSI (@addr, @data): a write to @fd injects it
 * without leaving the kernel (KVM_SET_GSI_ROUTING + KVM_IRQFD). Calling it
 * again for the same fd changes the message. Returns 0 or -errno.
 */
int kvm_msi_irqfd_set(struct kvm *k, int fd, uint64_t addr, uint32_t data);

/* Unbind @fd from its MSI route, if it has one. */
void kvm_msi_irqfd_clear(struct kvm *k, int fd);

/* Inject one MSI now (KVM_SIGNAL_MSI). Returns 0 or -errno. */
int kvm_signal_msi(struct kvm *k, uint64_t addr, uint32_t data);

#endif
