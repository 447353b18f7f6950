/* vCPU threads: KVM_RUN loop, port/MMIO dispatch, and turning fatal exits into VM exit reasons. */
#include "vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lib/sandbox.h"
#include "lib/vm.h"
#include "lib/x86/cpu.h"

int vcpu_kick_signal(void)
{
	return SIGRTMIN;
}

static void kick_handler(int sig)
{
	(void)sig;
}

int vcpu_install_kick_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	return sigaction(vcpu_kick_signal(), &sa, NULL) < 0 ? -errno : 0;
}

int vcpu_init(struct vcpu *v, struct vm *vm, unsigned int id, struct vmm_err *err)
{
	memset(v, 0, sizeof(*v));
	v->vm = vm;
	v->id = id;
	v->listener = -1;
	v->fd = kvm_create_vcpu(&vm->kvm, id, err);
	if (v->fd < 0)
		return v->fd;
	v->run_size = (size_t)vm->kvm.run_size;
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		int e = errno;

		v->run = NULL;
		close(v->fd);
		v->fd = -1;
		return err_set(err, e, "mmap of vCPU %u run area: %s", id, strerror(e));
	}
	return 0;
}

/* Describe where the vCPU is: rip and the instruction bytes there, if readable. */
static void vcpu_where(struct vcpu *v, char *buf, size_t size)
{
	struct kvm_regs r;
	struct kvm_sregs sr;
	uint64_t gpa = 0;
	size_t n;

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sr) < 0) {
		snprintf(buf, size, "registers unavailable");
		return;
	}
	n = (size_t)snprintf(buf, size, "rip=0x%llx", (unsigned long long)r.rip);
	if (sr.cr0 & 0x80000000ULL) {
		if (!x86_gva_to_gpa(&v->vm->mem, sr.cr3, r.rip, &gpa))
			return;
	} else {
		gpa = r.rip + sr.cs.base;
	}
	{
		const uint8_t *p = gm_ptr(&v->vm->mem, gpa, 1);
		size_t avail = p ? 1 : 0;

		/* Print up to 15 bytes, stopping where guest RAM ends. */
		while (p && avail < 15 && gm_ptr(&v->vm->mem, gpa + avail, 1))
			avail++;
		if (!p || n >= size)
			return;
		n += (size_t)snprintf(buf + n, size - n, " code:");
		for (size_t i = 0; i < avail && n < size; i++)
			n += (size_t)snprintf(buf + n, size - n, " %02x", p[i]);
	}
}

static void vcpu_handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

	for (uint32_t i = 0; i < run->io.count; i++) {
		bus_access(&v->vm->pio, run->io.port, data, run->io.size, is_write);
		data += run->io.size;
	}
}

bool vcpu_handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char where[160];

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		vcpu_handle_io(v);
		return true;
	case KVM_EXIT_MMIO:
		if (run->mmio.len <= sizeof(run->mmio.data))
			bus_access(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
				   run->mmio.is_write);
		return true;
	case KVM_EXIT_HLT:
	case KVM_EXIT_INTR:
	case KVM_EXIT_IRQ_WINDOW_OPEN:
		return true;
	case KVM_EXIT_SHUTDOWN:
		vcpu_where(v, where, sizeof(where));
		vm_request_exit(v->vm, VM_EXIT_TRIPLE_FAULT, "vCPU %u: triple fault (%s)", v->id,
				where);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
			vm_request_exit(v->vm, VM_EXIT_RESET, NULL);
		else
			vm_request_exit(v->vm, VM_EXIT_POWEROFF, NULL);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		vcpu_where(v, where, sizeof(where));
		vm_request_exit(v->vm, VM_EXIT_INTERNAL_ERROR,
				"vCPU %u: KVM internal error (suberror %u) at %s", v->id,
				run->internal.suberror, where);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		vcpu_where(v, where, sizeof(where));
		vm_request_exit(v->vm, VM_EXIT_INTERNAL_ERROR,
				"vCPU %u: KVM entry failed (hardware reason 0x%llx) at %s", v->id,
				(unsigned long long)run->fail_entry.hardware_entry_failure_reason,
				where);
		return false;
	default:
		vcpu_where(v, where, sizeof(where));
		vm_request_exit(v->vm, VM_EXIT_INTERNAL_ERROR,
				"vCPU %u: unexpected KVM exit reason %u at %s", v->id,
				run->exit_reason, where);
		return false;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	sigset_t set;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%u", v->id);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&set);
	sigaddset(&set, vcpu_kick_signal());
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	v->start_ret = 0;
	if (v->vm->vcpu_policy)
		v->start_ret =
			sandbox_filter_load(v->vm->vcpu_policy, 0, &v->listener, &v->start_err);
	sem_post(&v->ready);
	if (v->start_ret < 0)
		return NULL;

	while (!vm_exiting(v->vm)) {
		vm_vcpu_pause_point(v->vm);
		if (vm_exiting(v->vm))
			break;
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			int e = errno;

			if (e == EINTR || e == EAGAIN) {
				v->run->immediate_exit = 0;
				continue;
			}
			vm_request_exit(v->vm, VM_EXIT_HOST_ERROR, "vCPU %u: KVM_RUN: %s", v->id,
					strerror(e));
			break;
		}
		if (!vcpu_handle_exit(v))
			break;
	}
	return NULL;
}

int vcpu_start(struct vcpu *v, struct vmm_err *err)
{
	sigset_t set, old;
	int ret;

	/* Start with the kick signal blocked; the thread unblocks it itself. */
	sigemptyset(&set);
	sigaddset(&set, vcpu_kick_signal());
	pthread_sigmask(SIG_BLOCK, &set, &old);
	sem_init(&v->ready, 0, 0);
	ret = pthread_create(&v->thread, NULL, vcpu_thread, v);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		sem_destroy(&v->ready);
		return err_set(err, ret, "cannot start vCPU %u thread: %s", v->id, strerror(ret));
	}
	while (sem_wait(&v->ready) < 0 && errno == EINTR)
		;
	sem_destroy(&v->ready);
	if (v->start_ret < 0) {
		pthread_join(v->thread, NULL);
		return err_set(err, -v->start_ret, "vCPU %u: %s", v->id, v->start_err.msg);
	}
	v->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	if (!v->started)
		return;
	v->run->immediate_exit = 1;
	pthread_kill(v->thread, vcpu_kick_signal());
}

void vcpu_join(struct vcpu *v)
{
	if (v->started) {
		pthread_join(v->thread, NULL);
		v->started = false;
	}
}

void vcpu_destroy(struct vcpu *v)
{
	vcpu_join(v);
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->fd >= 0)
		close(v->fd);
	if (v->listener >= 0)
		close(v->listener);
	v->run = NULL;
	v->fd = -1;
	v->listener = -1;
}
