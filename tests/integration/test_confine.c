/*
 * The seccomp filters of the vCPU threads (vcpu.policy) and of the VMM
 * process (vmm.policy), without KVM: a VM is created with the sandbox on
 * (its virtio-rng device in a jailed process), then, in a forked child so
 * that the process filter dies with it, the child confines itself as
 * vm_run() does and plays the vCPU: a thread loads vcpu.policy as a vCPU
 * thread does and feeds vcpu_handle_exit() the exits a guest makes (COM1
 * output, CMOS, PCI configuration, the virtio-pci registers up to
 * DRIVER_OK, a queue notify, MSI-X, HLT), while the main thread waits in
 * vm_wait_exit(), vm_run()'s loop, and the parent uses the control socket
 * (status, suspend, resume, balloon, stop). Then a triple fault; the VM is
 * destroyed and the process exits, all under the filters. A forbidden call
 * from the vCPU thread must stop the VM with a message naming it (with
 * VM_SANDBOX_DEVICES alone: under vmm.policy too, a call both forbid kills);
 * one from any thread under the process filter must kill the process with
 * SIGSYS.
 *
 * Also, with the sandbox on: a device process killed, or killed for a
 * forbidden call, stops the VM (vm_wait_exit()) with a message naming the
 * device and the cause, and leaves no process behind.
 *
 * Usage: test_confine CASE KERNEL (CASE: exits, vcpu-violation,
 * device-killed, device-violation, process-kill).
 * The policies come from LIBVMM_SECCOMP_POLICY_DIR (the source tree's).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/layout.h"
#include "lib/sandbox.h"
#include "lib/vcpu.h"
#include "lib/virtio/pci.h"
#include "lib/vm.h"

#define SKIP 77

static const char *kernel;

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("FAIL: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			die(__VA_ARGS__);                                                          \
	} while (0)

static bool sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return true;
#else
	return false;
#endif
}

/* ---- A fake vCPU: its own kvm_run, exits fed to vcpu_handle_exit() ---- */

struct fake {
	struct vm *vm;
	struct vcpu v;
	union {
		struct kvm_run run;
		uint8_t page[8192];
	} * r;
	sem_t loaded, idle, finish;
	int load_ret;
	bool violate; /* make a forbidden call after the exits */
	int violate_errno;
};

#define DATA_OFF 4096

static void pio(struct fake *f, uint16_t port, uint32_t len, bool write, uint32_t *val)
{
	struct kvm_run *run = &f->r->run;
	uint8_t *data = f->r->page + DATA_OFF;

	memset(run, 0, sizeof(*run));
	run->exit_reason = KVM_EXIT_IO;
	run->io.direction = write ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN;
	run->io.size = (uint8_t)len;
	run->io.port = port;
	run->io.count = 1;
	run->io.data_offset = DATA_OFF;
	memset(data, 0, 4);
	if (write)
		memcpy(data, val, len);
	CHECK(vcpu_handle_exit(&f->v), "port 0x%x: the vCPU stopped", port);
	if (!write) {
		*val = 0;
		memcpy(val, data, len);
	}
}

static void mmio(struct fake *f, uint64_t addr, uint32_t len, bool write, uint64_t *val)
{
	struct kvm_run *run = &f->r->run;

	memset(run, 0, sizeof(*run));
	run->exit_reason = KVM_EXIT_MMIO;
	run->mmio.phys_addr = addr;
	run->mmio.len = len;
	run->mmio.is_write = write;
	if (write)
		memcpy(run->mmio.data, val, len);
	CHECK(vcpu_handle_exit(&f->v), "MMIO 0x%llx: the vCPU stopped", (unsigned long long)addr);
	if (!write) {
		*val = 0;
		memcpy(val, run->mmio.data, len);
	}
}

static uint32_t cfg_read(struct fake *f, unsigned int slot, unsigned int reg, uint32_t len)
{
	uint32_t a = 0x80000000u | (slot << 11) | (reg & 0xfc), v;

	pio(f, PORT_PCI_CONFIG, 4, true, &a);
	pio(f, (uint16_t)(PORT_PCI_CONFIG + 4 + (reg & 3)), len, false, &v);
	return v;
}

static void cfg_write(struct fake *f, unsigned int slot, unsigned int reg, uint32_t len, uint32_t v)
{
	uint32_t a = 0x80000000u | (slot << 11) | (reg & 0xfc);

	pio(f, PORT_PCI_CONFIG, 4, true, &a);
	pio(f, (uint16_t)(PORT_PCI_CONFIG + 4 + (reg & 3)), len, true, &v);
}

static uint64_t mrd(struct fake *f, uint64_t a, uint32_t len)
{
	uint64_t v;

	mmio(f, a, len, false, &v);
	return v;
}

static void mwr(struct fake *f, uint64_t a, uint32_t len, uint64_t v)
{
	mmio(f, a, len, true, &v);
}

/* virtio 1.x common configuration fields (offsets in the structure). */
enum {
	DFSEL = 0x00,
	DF = 0x04,
	GFSEL = 0x08,
	GF = 0x0c,
	MSIX_CONFIG = 0x10,
	STATUS = 0x14,
	QSEL = 0x16,
	QSIZE = 0x18,
	QMSIX = 0x1a,
	QENABLE = 0x1c,
	QDESC = 0x20,
	QDRIVER = 0x28,
	QDEVICE = 0x30,
};

/* The first virtio-rng (modern) function on bus 0: its BAR 0, decoding; its slot in *@slot. */
static uint64_t find_rng(struct fake *f, unsigned int *slot)
{
	uint64_t bar;

	*slot = 0;
	for (unsigned int s = 1; s < 32 && !*slot; s++)
		if (cfg_read(f, s, 0, 4) == (0x1af4u | (0x1044u << 16)))
			*slot = s;
	CHECK(*slot, "no virtio-rng function on bus 0");
	bar = cfg_read(f, *slot, 0x10, 4) & ~0xfull;
	CHECK(bar, "BAR 0 is not assigned");
	cfg_write(f, *slot, 0x04, 2, 0x0006); /* memory space, bus master */
	return bar;
}

/* What a guest driver does with the rng: find it, map BAR 0, go to DRIVER_OK, notify. */
static void drive_virtio(struct fake *f)
{
	unsigned int slot;
	uint64_t bar = find_rng(f, &slot), common = bar + VIRTIO_PCI_COMMON_OFF, features;
	uint32_t v;

	mwr(f, common + STATUS, 1, 0);
	mwr(f, common + STATUS, 1, 1);
	mwr(f, common + STATUS, 1, 3);
	mwr(f, common + DFSEL, 4, 1);
	features = mrd(f, common + DF, 4) << 32;
	mwr(f, common + DFSEL, 4, 0);
	features |= mrd(f, common + DF, 4);
	CHECK(features & (1ull << 32), "VERSION_1 not offered (features 0x%llx)",
	      (unsigned long long)features);
	mwr(f, common + GFSEL, 4, 1);
	mwr(f, common + GF, 4, 1);
	mwr(f, common + GFSEL, 4, 0);
	mwr(f, common + GF, 4, 0);
	mwr(f, common + STATUS, 1, 0xb);
	CHECK(mrd(f, common + STATUS, 1) == 0xb, "FEATURES_OK refused");
	/* MSI-X on, vector 0 for config, vector 1 for queue 0. */
	for (unsigned int cap = cfg_read(f, slot, 0x34, 1); cap;
	     cap = cfg_read(f, slot, cap + 1, 1))
		if (cfg_read(f, slot, cap, 1) == 0x11)
			cfg_write(f, slot, cap + 2, 2, 0x8000);
	for (unsigned int e = 0; e < 2; e++) {
		uint64_t t = bar + VIRTIO_PCI_MSIX_TABLE_OFF + e * 16;

		mwr(f, t, 4, 0xfee00000);
		mwr(f, t + 4, 4, 0);
		mwr(f, t + 8, 4, 0x40 + e);
		mwr(f, t + 12, 4, 0);
	}
	mwr(f, common + MSIX_CONFIG, 2, 0);
	mwr(f, common + QSEL, 2, 0);
	v = (uint32_t)mrd(f, common + QSIZE, 2);
	CHECK(v >= 8, "queue 0 size %u", v);
	mwr(f, common + QSIZE, 2, 8);
	mwr(f, common + QMSIX, 2, 1);
	mwr(f, common + QDESC, 8, 0x200000);
	mwr(f, common + QDRIVER, 8, 0x201000);
	mwr(f, common + QDEVICE, 8, 0x202000);
	mwr(f, common + QENABLE, 2, 1);
	mwr(f, common + STATUS, 1, 0xf);
	CHECK(mrd(f, common + STATUS, 1) == 0xf, "DRIVER_OK: status 0x%llx",
	      (unsigned long long)mrd(f, common + STATUS, 1));
	mwr(f, bar + VIRTIO_PCI_NOTIFY_OFF, 2, 0); /* nothing queued: the device just looks */
	(void)mrd(f, bar + VIRTIO_PCI_DEVICE_OFF, 1);
	/* A reset by the driver, as Linux does on shutdown. */
	mwr(f, common + STATUS, 1, 0);
}

/* A vCPU of @vm played by this program: no KVM fd, a run structure of its own. */
static void fake_init(struct fake *f, struct vm *vm)
{
	memset(f, 0, sizeof(*f));
	f->r = aligned_alloc(4096, sizeof(*f->r));
	CHECK(f->r, "out of memory");
	f->vm = vm;
	f->v.vm = vm;
	f->v.fd = -1;
	f->v.listener = -1;
	f->v.run = &f->r->run;
}

static void *fake_vcpu(void *arg)
{
	struct fake *f = arg;
	uint32_t v;

	/* As vcpu_thread() does. */
	f->load_ret = sandbox_filter_load(f->vm->vcpu_policy, 0, &f->vm->vcpus[0].listener,
					  &f->v.start_err);
	sem_post(&f->loaded);
	if (f->load_ret < 0)
		return NULL;
	v = 'V';
	pio(f, PORT_COM1, 1, true, &v); /* COM1 THR */
	v = 0x00;
	pio(f, PORT_CMOS, 1, true, &v); /* CMOS seconds */
	pio(f, PORT_CMOS + 1, 1, false, &v);
	pio(f, PORT_I8042 + 4, 1, false, &v); /* i8042 status */
	drive_virtio(f);
	f->r->run.exit_reason = KVM_EXIT_HLT;
	CHECK(vcpu_handle_exit(&f->v), "HLT stopped the vCPU");
	if (f->violate) {
		int fd = open("/etc/hostname", O_RDONLY);

		f->violate_errno = fd < 0 ? errno : 0;
		return NULL;
	}
	/* Idle while the control client works; then a triple fault (it reads the registers). */
	sem_post(&f->idle);
	while (sem_wait(&f->finish) < 0)
		;
	f->r->run.exit_reason = KVM_EXIT_SHUTDOWN;
	CHECK(!vcpu_handle_exit(&f->v), "a triple fault did not stop the vCPU");
	return NULL;
}

static struct vm *make_bare_vm(int console_out, int sandbox, const char *policy_dir)
{
	struct vm_config cfg;
	struct vm *vm;

	vm_config_init(&cfg);
	cfg.kernel_path = kernel;
	cfg.mem_mib = 64;
	cfg.console_out_fd = console_out;
	cfg.sandbox = sandbox;
	cfg.seccomp_policy_dir = policy_dir;
	cfg.log_level = VM_LOG_WARN;
	CHECK(vm_create(&cfg, &vm) == 0, "vm_create: %s", vm_last_error(NULL));
	return vm;
}

static struct vm *make_vm(int console_out, int sandbox)
{
	struct vm *vm = make_bare_vm(console_out, sandbox, getenv("LIBVMM_SECCOMP_POLICY_DIR"));

	CHECK(vm_add_rng(vm) == 0, "vm_add_rng: %s", vm_last_error(vm));
	CHECK(vm_add_balloon(vm) == 0, "vm_add_balloon: %s", vm_last_error(vm));
	return vm;
}

/*
 * In a child: confine, play the vCPU, wait as vm_run() does (the parent
 * uses the control socket meanwhile, then stops the VM), destroy, exit.
 */
static void __attribute__((noreturn)) child_run(bool violate, const char *sock, int ready_fd)
{
	int out[2];
	struct fake f;
	pthread_t t;
	char buf[8];
	int reason;

	CHECK(pipe2(out, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2");
	/*
	 * A forbidden call is reported (not fatal) where vmm.policy allows it
	 * or is not loaded: the latter is an embedder's VM_SANDBOX_DEVICES.
	 */
	fake_init(&f, make_vm(out[1], violate ? VM_SANDBOX_DEVICES
					      : VM_SANDBOX_DEVICES | VM_SANDBOX_PROCESS));
	f.violate = violate;
	sem_init(&f.loaded, 0, 0);
	sem_init(&f.idle, 0, 0);
	sem_init(&f.finish, 0, 0);
	if (!violate) {
		CHECK(vm_control_listen(f.vm, sock) == 0, "vm_control_listen: %s",
		      vm_last_error(f.vm));
		/* vm_run() says so before it waits; pause and resume need it. */
		pthread_mutex_lock(&f.vm->state_lock);
		f.vm->state = VM_STATE_RUNNING;
		pthread_mutex_unlock(&f.vm->state_lock);
	}
	CHECK(vm_confine_process(f.vm) == 0, "vm_confine_process: %s", vm_last_error(f.vm));
	CHECK(pthread_create(&t, NULL, fake_vcpu, &f) == 0, "pthread_create");
	while (sem_wait(&f.loaded) < 0)
		;
	CHECK(f.load_ret == 0, "vcpu.policy: %s", f.v.start_err.msg);
	CHECK(f.vm->vcpus[0].listener >= 0, "no listener for the vCPU thread");
	if (!violate) {
		while (sem_wait(&f.idle) < 0)
			;
		CHECK(write(ready_fd, "r", 1) == 1, "write");
	}
	vm_wait_exit(f.vm);
	sem_post(&f.finish);
	pthread_join(t, NULL);
	reason = atomic_load(&f.vm->exit_reason);
	if (violate) {
		CHECK(reason == VM_EXIT_HOST_ERROR, "exit reason %d", reason);
		CHECK(strstr(f.vm->exit_msg, "vCPU 0 made a system call") &&
			      strstr(f.vm->exit_msg, "vcpu.policy") &&
			      strstr(f.vm->exit_msg, ": openat"),
		      "message: %s", f.vm->exit_msg);
		CHECK(f.violate_errno == EPERM, "the forbidden call failed with %s, not EPERM",
		      strerror(f.violate_errno));
	} else {
		CHECK(reason == VM_EXIT_STOPPED, "exit reason %d (%s)", reason, f.vm->exit_msg);
		CHECK(read(out[0], buf, sizeof(buf)) == 1 && buf[0] == 'V',
		      "COM1 output did not reach the console fd");
	}
	printf("ok: %s\n", violate ? f.vm->exit_msg : "stopped through the control socket");
	vm_destroy(f.vm);
	free(f.r);
	exit(0);
}

static int wait_child(pid_t pid)
{
	int st;

	CHECK(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
	return st;
}

/* The control socket's commands, from this (unconfined) process. */
static void control_client(const char *sock, int ready_fd)
{
	struct vm_status st = {.struct_size = sizeof(st)};
	char c;

	CHECK(read(ready_fd, &c, 1) == 1, "the confined VMM did not get ready");
	CHECK(vm_control_send(sock, VM_CONTROL_STATUS, 0, &st) == 0, "status: %s",
	      vm_last_error(NULL));
	CHECK(st.state == VM_STATE_RUNNING, "status: state %d", (int)st.state);
	CHECK(vm_control_send(sock, VM_CONTROL_SUSPEND, 0, NULL) == 0, "suspend: %s",
	      vm_last_error(NULL));
	CHECK(vm_control_send(sock, VM_CONTROL_STATUS, 0, &st) == 0 && st.state == VM_STATE_PAUSED,
	      "status after suspend: %s", vm_last_error(NULL));
	CHECK(vm_control_send(sock, VM_CONTROL_RESUME, 0, NULL) == 0, "resume: %s",
	      vm_last_error(NULL));
	CHECK(vm_control_send(sock, VM_CONTROL_BALLOON, 16u << 20, NULL) == 0, "balloon: %s",
	      vm_last_error(NULL));
	CHECK(vm_control_send(sock, VM_CONTROL_STATUS, 0, &st) == 0 &&
		      st.balloon_target_bytes == 16u << 20,
	      "status after balloon: target %llu", (unsigned long long)st.balloon_target_bytes);
	CHECK(vm_control_send(sock, VM_CONTROL_STOP, 0, NULL) == 0, "stop: %s",
	      vm_last_error(NULL));
}

static void case_exits(bool violate)
{
	char sock[64];
	int ready[2];
	pid_t pid;
	int st;

	snprintf(sock, sizeof(sock), "/tmp/libvmm-confine-%d.sock", (int)getpid());
	CHECK(pipe(ready) == 0, "pipe");
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(ready[0]);
		child_run(violate, sock, ready[1]);
	}
	close(ready[1]);
	if (!violate)
		control_client(sock, ready[0]);
	st = wait_child(pid);
	if (WIFSIGNALED(st))
		die("the confined VMM was killed by signal %d (%s)%s", WTERMSIG(st),
		    strsignal(WTERMSIG(st)),
		    WTERMSIG(st) == SIGSYS ? ": vmm.policy lacks a call the VMM made" : "");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the confined VMM exited with %d",
	      WEXITSTATUS(st));
	CHECK(access(sock, F_OK) < 0, "the control socket %s is left behind", sock);
}

static void *open_later(void *arg)
{
	int *go = arg;
	char c;

	/* Blocked in read() while the main thread loads the filter on every thread. */
	if (read(go[0], &c, 1) == 1)
		open("/etc/hostname", O_RDONLY);
	return NULL;
}

/* vmm.policy is on every thread, started before it too; a forbidden call kills the process. */
static void case_process_kill(void)
{
	pid_t pid;
	int st;

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct vm *vm = make_vm(-1, VM_SANDBOX_DEVICES | VM_SANDBOX_PROCESS);
		int go[2];
		pthread_t t;

		CHECK(pipe(go) == 0, "pipe");
		CHECK(pthread_create(&t, NULL, open_later, go) == 0, "pthread_create");
		CHECK(vm_confine_process(vm) == 0, "vm_confine_process: %s", vm_last_error(vm));
		CHECK(write(go[1], "x", 1) == 1, "write");
		pthread_join(t, NULL);
		_exit(3); /* not reached: the thread's open() kills the process */
	}
	st = wait_child(pid);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS,
	      "a forbidden call under vmm.policy did not kill the process with SIGSYS (status "
	      "0x%x)",
	      st);
	printf("ok: killed by SIGSYS\n");
}

/* ---- A device process that dies stops the VM, naming the device and the cause ---- */

static void evil_nop(void *dev)
{
	(void)dev;
}

static uint64_t evil_features(void *dev)
{
	(void)dev;
	return 0;
}

static void evil_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	(void)dev;
	(void)off;
	memset(data, 0, len);
}

/* A device bug a guest found: the device opens a file. */
static void evil_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
	(void)dev;
	(void)off;
	(void)data;
	(void)len;
	open("/etc/hostname", O_RDONLY);
}

static int evil_activate(void *dev, const struct virtio_activation *act)
{
	(void)dev;
	(void)act;
	return 0;
}

static void evil_destroy(void *dev)
{
	free(dev);
}

static const struct virtio_device_ops evil_ops = {
	.name = "test-evil",
	.device_id = 4, /* shows as virtio-rng */
	.nqueues = 1,
	.queue_max = 16,
	.config_size = 8,
	.features = evil_features,
	.config_read = evil_config_read,
	.config_write = evil_config_write,
	.activate = evil_activate,
	.reset = evil_nop,
	.destroy = evil_destroy,
};

/* A policy directory with the shipped common.policy and test_evil.policy on it. */
static void evil_policy_dir(char *dir, size_t len)
{
	const char *src = getenv("LIBVMM_SECCOMP_POLICY_DIR");
	char path[512], cmd[1200];
	FILE *f;

	snprintf(dir, len, "/tmp/libvmm-confine-policies-XXXXXX");
	CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	snprintf(cmd, sizeof(cmd), "cp '%s/common.policy' '%s/vcpu.policy' '%s/'", src, src, dir);
	CHECK(system(cmd) == 0, "%s failed", cmd);
	snprintf(path, sizeof(path), "%s/test_evil.policy", dir);
	f = fopen(path, "w");
	CHECK(f, "%s: %s", path, strerror(errno));
	fputs("@include common.policy\n", f);
	fclose(f);
}

/* SIGKILL to a device process, or a forbidden call in it: vm_wait_exit() stops, naming both. */
static void case_device_death(bool violate)
{
	struct vm *vm;
	struct fake f;
	char dir[64], cmd[128];
	int reason;

	if (violate) {
		struct virtio_device dev = {&evil_ops, calloc(1, 8)};
		unsigned int slot;
		uint64_t bar;

		evil_policy_dir(dir, sizeof(dir));
		vm = make_bare_vm(-1, VM_SANDBOX_DEVICES, dir);
		CHECK(vm_add_virtio(vm, dev, NULL) == 0, "vm_add_virtio: %s", vm->err.msg);
		/* The guest writes the device's config: the device process opens a file. */
		fake_init(&f, vm);
		bar = find_rng(&f, &slot);
		mwr(&f, bar + VIRTIO_PCI_DEVICE_OFF, 4, 0x12345678);
		free(f.r);
	} else {
		vm = make_vm(-1, VM_SANDBOX_DEVICES);
		CHECK(kill(virtio_proxy_pid(vm->proxies[0]), SIGKILL) == 0, "kill: %s",
		      strerror(errno));
	}
	vm_wait_exit(vm);
	reason = atomic_load(&vm->exit_reason);
	CHECK(reason == VM_EXIT_HOST_ERROR, "exit reason %d (%s)", reason, vm->exit_msg);
	if (violate)
		CHECK(strstr(vm->exit_msg, "device test-evil (pid ") &&
			      strstr(vm->exit_msg, "died: killed by signal SIGSYS (seccomp "
						   "violation: syscall openat)"),
		      "message: %s", vm->exit_msg);
	else
		CHECK(strstr(vm->exit_msg, "device virtio-rng (pid ") &&
			      strstr(vm->exit_msg, "died: killed by signal SIGKILL"),
		      "message: %s", vm->exit_msg);
	printf("ok: %s\n", vm->exit_msg);
	vm_destroy(vm);
	if (violate) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		CHECK(system(cmd) == 0, "%s failed", cmd);
	}
	/* Nothing is left: no child of ours, running or zombie. */
	CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD, "a child process is left");
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr,
			"usage: %s "
			"exits|vcpu-violation|device-killed|device-violation|process-kill "
			"KERNEL\n",
			argv[0]);
		return 2;
	}
	kernel = argv[2];
	setvbuf(stdout, NULL, _IONBF, 0);
	if (!strcmp(argv[1], "exits")) {
		case_exits(false);
	} else if (!strcmp(argv[1], "vcpu-violation")) {
		case_exits(true);
	} else if (!strcmp(argv[1], "device-killed")) {
		case_device_death(false);
	} else if (!strcmp(argv[1], "device-violation")) {
		case_device_death(true);
	} else if (!strcmp(argv[1], "process-kill")) {
		if (sanitized()) {
			printf("skipped: a sanitized build does not load vmm.policy on the process "
			       "(LeakSanitizer needs ptrace and /proc at exit)\n");
			return SKIP;
		}
		case_process_kill();
	} else {
		fprintf(stderr, "unknown case %s\n", argv[1]);
		return 2;
	}
	return 0;
}
