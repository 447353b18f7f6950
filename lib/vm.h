/* The VM object: assembles memory, vCPUs, buses and devices from a config, runs and stops them. */
#ifndef LIBVMM_LIB_VM_H
#define LIBVMM_LIB_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "devices/cmos.h"
#include "devices/i8042.h"
#include "devices/serial.h"
#include "lib/bus.h"
#include "lib/err.h"
#include "lib/irq.h"
#include "lib/kvm.h"
#include "lib/loader/kernel.h"
#include "lib/log.h"
#include "lib/memory.h"
#include "lib/pci.h"
#include "devices/virtio_balloon.h"
#include "lib/control.h"
#include "lib/vcpu.h"
#include "lib/virtio/pci.h"
#include "lib/virtio/proxy.h"
#include "libvmm/libvmm.h"

struct vm {
	struct vm_config cfg; /* copy; the path strings below are owned */
	char *kernel_path;
	char *initrd_path;
	char *cmdline; /* the full command line given to the guest */
	struct vmm_log log;
	struct vmm_err err; /* last error of an API call on this VM */

	struct kvm kvm;
	struct guest_mem mem;
	struct bus pio;
	struct bus mmio;
	struct pci_root pci;
	struct irq_chip irq;
	struct serial *com1;
	struct cmos *cmos;
	struct i8042 *i8042;
	struct kernel_image kernel;

	/* Where bootparams_write() put things, to rewrite it when root= changes. */
	uint64_t initrd_addr, initrd_size, rsdp;

	struct virtio_platform plat;
	struct virtio_pci *vdevs[PCI_MAX_DEVICES];
	struct virtio_proxy *proxies[PCI_MAX_DEVICES]; /* sandboxed devices: their processes */
	const char *proxy_names[PCI_MAX_DEVICES];
	unsigned int nproxies;
	char *policy_dir;		    /* owned copy of cfg.seccomp_policy_dir */
	struct sandbox_policy *vcpu_policy; /* vcpu.policy when the sandbox is on */
	struct sandbox_policy *vmm_policy;  /* vmm.policy with VM_SANDBOX_PROCESS */
	unsigned int nvdevs;
	unsigned int nblk; /* virtio-blk devices: the next one is /dev/vd('a' + nblk) */
	bool have_root;
	struct vm_net_config nets[PCI_MAX_DEVICES]; /* what vm_get_net_config() reports */
	unsigned int nnets;
	struct virtio_balloon *balloon; /* NULL without a balloon */
	struct control_server *ctl;	/* NULL without a control socket */

	unsigned int ncpus;
	struct vcpu *vcpus;

	/* Lifecycle: state changes under state_lock and are announced on event_fd. */
	pthread_mutex_t state_lock;
	pthread_cond_t state_cond;
	enum vm_state state;
	int event_fd;  /* eventfd for the embedder: written on every state change */
	int resume_fd; /* eventfd: readable while paused vCPUs may go on */
	atomic_bool pause_requested;
	unsigned int paused_vcpus; /* vCPUs parked in vm_vcpu_pause_point() */
	unsigned int started_vcpus;
	struct kvm_clock_data paused_clock;

	atomic_int exit_reason; /* -1 while running */
	atomic_bool ran;
	int exit_fd; /* eventfd: written once when exit_reason is set */
	char exit_msg[VMM_ERR_MAX];

	pthread_t console_thread;
	bool console_started;
};

/*
 * Record why the VM must stop (the first caller wins), with a message for
 * vm_last_error(), and wake vm_run(). Called from vCPU and device threads.
 * @fmt may be NULL. Async-signal safe when @fmt is NULL.
 */
void vm_request_exit(struct vm *vm, enum vm_exit_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * The first half of vm_create(), which needs no KVM: check and copy the
 * config, allocate guest RAM and write the kernel, initrd, ACPI tables,
 * boot_params, command line, GDT and page tables into it. vm_create() adds
 * KVM, vCPUs and devices. Tests use it to inspect the guest image on hosts
 * without KVM. Returns 0 or -errno with @err set; free with vm_destroy().
 */
int vm_prepare(const struct vm_config *cfg, struct vm **out, struct vmm_err *err);

/*
 * Called by each vCPU thread outside KVM_RUN: parks the thread while a pause
 * is requested, until vm_resume() or an exit.
 */
void vm_vcpu_pause_point(struct vm *vm);

/* Put a virtio device on PCI bus 0 (lib/vm.c); takes ownership of @dev. */
int vm_add_virtio(struct vm *vm, struct virtio_device dev, struct virtio_pci **out);

/* Checks shared by the vm_add_*() calls: before vm_run(), a free PCI slot. */
int vm_check_can_add(struct vm *vm);

/* Close the control socket, if any (lib/vm_control.c). */
void vm_control_close(struct vm *vm);

/*
 * Set the calling thread's message for vm_last_error(NULL): for calls that
 * have no VM (vm_create, vm_control_send, vm_create_qcow2).
 */
void vm_client_error_set(const struct vmm_err *e);

/*
 * Load vmm.policy on every thread of the process (vm_run() does, with
 * VM_SANDBOX_PROCESS, once KVM is set up and before the vCPU threads
 * start). A no-op without vm->vmm_policy. Returns 0 or -errno with vm->err set.
 */
int vm_confine_process(struct vm *vm);

/*
 * vm_run()'s wait: until an exit is requested, watch the device processes
 * (one that dies stops the VM) and the vCPU threads' seccomp listeners (a
 * forbidden call is failed with EPERM and stops the VM).
 */
void vm_wait_exit(struct vm *vm);

/* True once an exit has been requested. */
bool vm_exiting(const struct vm *vm);

#endif
