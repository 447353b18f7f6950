/* vCPU threads: each runs KVM_RUN and dispatches port and MMIO exits to the buses. */
#ifndef LIBVMM_LIB_VCPU_H
#define LIBVMM_LIB_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>

#include "lib/err.h"

struct vm;

struct vcpu {
	struct vm *vm;
	unsigned int id;
	int fd;
	struct kvm_run *run; /* the shared kvm_run page(s) */
	size_t run_size;
	pthread_t thread;
	bool started;
	/* With the sandbox: the thread's seccomp listener (vm_wait_exit() reads it), else -1. */
	int listener;
	/* Start-up handshake: the thread's filter loaded (0) or why not. */
	sem_t ready;
	int start_ret;
	struct vmm_err start_err;
};

/* Create vCPU @id of @vm and map its run structure. Returns 0 or -errno. */
int vcpu_init(struct vcpu *v, struct vm *vm, unsigned int id, struct vmm_err *err);

/*
 * Start the thread that runs the vCPU until the VM exits. With the VM's
 * vcpu.policy (the sandbox on), the thread loads it on itself first and
 * hands its listener over in v->listener; a failure to load it is this
 * call's error.
 */
int vcpu_start(struct vcpu *v, struct vmm_err *err);

/* Make the vCPU leave KVM_RUN (async-signal safe). */
void vcpu_kick(struct vcpu *v);

/* Wait for the thread; then unmap and close. Safe on a never-started vCPU. */
void vcpu_join(struct vcpu *v);
void vcpu_destroy(struct vcpu *v);

/*
 * Handle the exit in v->run (KVM_RUN returned 0): port and MMIO accesses go
 * to the buses, fatal exits become the VM's exit reason. Returns false when
 * the vCPU must stop. Tests call it with a run structure of their own.
 */
bool vcpu_handle_exit(struct vcpu *v);

/* The signal libvmm uses to kick vCPU threads out of KVM_RUN (SIGRTMIN). */
int vcpu_kick_signal(void);

/* Install the (empty) handler for the kick signal. Idempotent. */
int vcpu_install_kick_handler(void);

#endif
