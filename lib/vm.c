/* VM assembly: config checks, guest memory, kernel and tables, vCPUs, legacy devices, run and stop.
 */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "lib/layout.h"
#include "lib/x86/acpi.h"
#include "lib/x86/bootparams.h"
#include "lib/x86/cpu.h"
#include "devices/disk.h"
#include "devices/qcow2.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_rng.h"

#define DEFAULT_MEM_MIB 256
#define MIN_MEM_MIB	16
#define DEFAULT_CMDLINE "console=ttyS0 reboot=k panic=-1"

/* The last vm_create() error of this thread, for vm_last_error(NULL). */
static __thread struct vmm_err create_err;

void vm_config_init(struct vm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->struct_size = sizeof(*cfg);
	cfg->console_in_fd = -1;
	cfg->console_out_fd = -1;
	cfg->log_level = VM_LOG_INFO;
}

const char *vm_version(void)
{
	return LIBVMM_VERSION;
}

const char *vm_exit_reason_name(int reason)
{
	switch (reason) {
	case VM_EXIT_POWEROFF:
		return "poweroff";
	case VM_EXIT_RESET:
		return "reset";
	case VM_EXIT_STOPPED:
		return "stopped";
	case VM_EXIT_TRIPLE_FAULT:
		return "triple fault";
	case VM_EXIT_INTERNAL_ERROR:
		return "internal error";
	case VM_EXIT_HOST_ERROR:
		return "host error";
	default:
		return "unknown";
	}
}

void vm_client_error_set(const struct vmm_err *e)
{
	create_err = *e;
}

const char *vm_last_error(const struct vm *vm)
{
	return vm ? vm->err.msg : create_err.msg;
}

bool vm_exiting(const struct vm *vm)
{
	return atomic_load(&vm->exit_reason) >= 0;
}

void vm_request_exit(struct vm *vm, enum vm_exit_reason reason, const char *fmt, ...)
{
	int expected = -1;
	uint64_t one = 1;

	if (!atomic_compare_exchange_strong(&vm->exit_reason, &expected, (int)reason))
		return;
	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(vm->exit_msg, sizeof(vm->exit_msg), fmt, ap);
		va_end(ap);
	}
	(void)!write(vm->exit_fd, &one, sizeof(one));
}

/* Copy the caller's config, clamping to the size it was compiled with. */
static void config_copy(struct vm_config *dst, const struct vm_config *src)
{
	size_t n = src->struct_size < sizeof(*dst) ? src->struct_size : sizeof(*dst);

	vm_config_init(dst);
	memcpy(dst, src, n);
	dst->struct_size = sizeof(*dst);
}

static int config_check(struct vm *vm, const struct vm_config *cfg, struct vmm_err *err)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t host_mib =
		(pages > 0 && psize > 0) ? ((uint64_t)pages * (uint64_t)psize) >> 20 : 0;

	if (!cfg || cfg->struct_size < offsetof(struct vm_config, log))
		return err_set(err, EINVAL, "vm_config.struct_size is not set");
	config_copy(&vm->cfg, cfg);
	if (!vm->cfg.kernel_path || !vm->cfg.kernel_path[0])
		return err_set(err, EINVAL, "no kernel given");
	if (vm->cfg.mem_mib == 0)
		vm->cfg.mem_mib = DEFAULT_MEM_MIB;
	if (vm->cfg.mem_mib < MIN_MEM_MIB)
		return err_set(err, EINVAL, "guest memory of %u MiB is too small (at least %u MiB)",
			       vm->cfg.mem_mib, MIN_MEM_MIB);
	if (host_mib && vm->cfg.mem_mib > host_mib)
		return err_set(err, EINVAL,
			       "guest memory of %u MiB is more than this host's %llu MiB of RAM",
			       vm->cfg.mem_mib, (unsigned long long)host_mib);
	if (vm->cfg.vcpus == 0)
		vm->cfg.vcpus = 1;
	if (vm->cfg.vcpus > VM_MAX_VCPUS)
		return err_set(err, EINVAL, "%u vCPUs requested; at most %u are supported",
			       vm->cfg.vcpus, VM_MAX_VCPUS);
	if (vm->cfg.sandbox & ~(VM_SANDBOX_DEVICES | VM_SANDBOX_PROCESS))
		return err_set(err, EINVAL, "vm_config.sandbox: unknown bits 0x%x",
			       (unsigned)vm->cfg.sandbox);
	if ((unsigned)vm->cfg.log_level > VM_LOG_DEBUG)
		vm->cfg.log_level = VM_LOG_DEBUG;
	vm->ncpus = vm->cfg.vcpus;
	vm->log = (struct vmm_log){vm->cfg.log, vm->cfg.log_opaque, vm->cfg.log_level};
	return 0;
}

static int build_cmdline(struct vm *vm, struct vmm_err *err)
{
	const char *extra = vm->cfg.cmdline ? vm->cfg.cmdline : "";
	size_t n = strlen(DEFAULT_CMDLINE) + 1 + strlen(extra) + 1;

	vm->cmdline = malloc(n);
	if (!vm->cmdline)
		return err_set(err, ENOMEM, "out of memory");
	snprintf(vm->cmdline, n, "%s%s%s", DEFAULT_CMDLINE, extra[0] ? " " : "", extra);
	return 0;
}

/* Load kernel, initrd, ACPI tables, boot params and boot page tables into RAM. */
static int load_guest(struct vm *vm, struct vmm_err *err)
{
	uint8_t *img = NULL, *initrd = NULL;
	size_t img_size = 0, initrd_size = 0;
	uint64_t initrd_addr = 0, rsdp = 0;
	struct acpi_config ac = {.ncpus = vm->ncpus};
	struct boot_setup bs;
	int ret;

	ret = file_read_all(vm->cfg.kernel_path, "kernel", &img, &img_size, err);
	if (ret < 0)
		return ret;
	if (vm->cfg.initrd_path) {
		ret = file_read_all(vm->cfg.initrd_path, "initrd", &initrd, &initrd_size, err);
		if (ret < 0)
			goto out;
	}
	ret = gm_init(&vm->mem, (uint64_t)vm->cfg.mem_mib << 20, err);
	if (ret < 0)
		goto out;
	ret = kernel_load(&vm->mem, img, img_size, &vm->kernel, err);
	if (ret < 0)
		goto out;
	if (initrd) {
		ret = initrd_load(&vm->mem, &vm->kernel, initrd, initrd_size, &initrd_addr, err);
		if (ret < 0)
			goto out;
	}
	ret = acpi_build(&vm->mem, &ac, &rsdp, err);
	if (ret < 0)
		goto out;
	vm->initrd_addr = initrd_addr;
	vm->initrd_size = initrd_size;
	vm->rsdp = rsdp;
	bs = (struct boot_setup){&vm->kernel, vm->cmdline, initrd_addr, initrd_size, rsdp};
	ret = bootparams_write(&vm->mem, &bs, err);
	if (ret < 0)
		goto out;
	ret = x86_write_boot_tables(&vm->mem, err);
out:
	free(img);
	free(initrd);
	return ret;
}

static void irq_kvm(void *ctx, uint32_t gsi, int level)
{
	struct vm *vm = ctx;

	kvm_irq_line(&vm->kvm, gsi, level);
}

static void vm_reset_line(void *ctx)
{
	vm_request_exit(ctx, VM_EXIT_RESET, NULL);
}

/* Hardware-reduced ACPI registers: sleep control/status and the reset register. */
static void acpi_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct vm *vm = opaque;

	if (!is_write) {
		memset(data, 0, len);
		return;
	}
	switch (offset + PORT_ACPI_SLEEP_CTL) {
	case PORT_ACPI_SLEEP_CTL:
		/* SLP_EN (bit 5) with SLP_TYP (bits 4:2) of \_S5. */
		if ((data[0] & 0x20) && ((data[0] >> 2) & 7) == ACPI_S5_SLP_TYP)
			vm_request_exit(vm, VM_EXIT_POWEROFF, NULL);
		break;
	case PORT_ACPI_RESET:
		if (data[0] == ACPI_RESET_VALUE)
			vm_request_exit(vm, VM_EXIT_RESET, NULL);
		break;
	default:
		break;
	}
}

/* The virtio transport reaches KVM through these. */
static int plat_add_ioeventfd(void *ctx, uint64_t addr, uint32_t len, int fd)
{
	struct vm *vm = ctx;

	/* Length 0 matches a notify write of any size. */
	(void)len;
	return kvm_ioeventfd(&vm->kvm, addr, 0, fd, true);
}

static int plat_del_ioeventfd(void *ctx, uint64_t addr, uint32_t len, int fd)
{
	struct vm *vm = ctx;

	(void)len;
	return kvm_ioeventfd(&vm->kvm, addr, 0, fd, false);
}

static int plat_set_msi_irqfd(void *ctx, int fd, uint64_t addr, uint32_t data)
{
	struct vm *vm = ctx;

	return kvm_msi_irqfd_set(&vm->kvm, fd, addr, data);
}

static void plat_clear_msi_irqfd(void *ctx, int fd)
{
	struct vm *vm = ctx;

	kvm_msi_irqfd_clear(&vm->kvm, fd);
}

static int plat_signal_msi(void *ctx, uint64_t addr, uint32_t data)
{
	struct vm *vm = ctx;

	return kvm_signal_msi(&vm->kvm, addr, data);
}

static int add_devices(struct vm *vm, struct vmm_err *err)
{
	int ret;

	vm->irq = (struct irq_chip){irq_kvm, vm};
	vm->plat = (struct virtio_platform){plat_add_ioeventfd, plat_del_ioeventfd,
					    plat_set_msi_irqfd, plat_clear_msi_irqfd,
					    plat_signal_msi,	vm};
	vm->com1 = serial_create(&vm->irq, IRQ_COM1, vm->cfg.console_out_fd);
	vm->cmos = cmos_create(vm->mem.regions[0].size,
			       vm->mem.nregions > 1 ? vm->mem.regions[1].size : 0);
	vm->i8042 = i8042_create(vm_reset_line, vm);
	if (!vm->com1 || !vm->cmos || !vm->i8042)
		return err_set(err, ENOMEM, "out of memory for devices");
	ret = bus_register(&vm->pio, PORT_COM1, 8, serial_io, vm->com1);
	if (!ret)
		ret = bus_register(&vm->pio, PORT_CMOS, 2, cmos_io, vm->cmos);
	if (!ret)
		ret = bus_register(&vm->pio, PORT_I8042, 5, i8042_io, vm->i8042);
	if (!ret)
		ret = bus_register(&vm->pio, PORT_ACPI_SLEEP_CTL, 3, acpi_io, vm);
	if (!ret)
		ret = bus_register(&vm->pio, PORT_PCI_CONFIG, 8, pci_pio, &vm->pci);
	if (!ret)
		ret = bus_register(&vm->mmio, LAYOUT_ECAM, LAYOUT_ECAM_SIZE, pci_ecam, &vm->pci);
	if (ret < 0)
		return err_set(err, -ret, "cannot register legacy devices: %s", strerror(-ret));
	return 0;
}

static int setup_kvm(struct vm *vm, struct vmm_err *err)
{
	bool pvm = x86_host_is_pvm();
	int ret;

	ret = kvm_open(&vm->kvm, "/dev/kvm", err);
	if (ret < 0)
		return ret;
	for (unsigned int i = 0; i < vm->mem.nregions; i++) {
		ret = kvm_set_memory(&vm->kvm, i, vm->mem.regions[i].gpa, vm->mem.regions[i].size,
				     vm->mem.regions[i].host, err);
		if (ret < 0)
			return ret;
	}
	if (pvm)
		log_msg(&vm->log, VM_LOG_INFO,
			"host KVM is nested PVM: hiding CPU features it cannot run in guest ring "
			"0");
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct kvm_cpuid2 *cpuid;

		ret = vcpu_init(&vm->vcpus[i], vm, i, err);
		if (ret < 0)
			return ret;
		cpuid = x86_cpuid_for_vcpu(vm->kvm.cpuid, i, vm->ncpus, pvm);
		if (!cpuid)
			return err_set(err, ENOMEM, "out of memory");
		ret = x86_setup_vcpu(vm->vcpus[i].fd, cpuid, i == 0, vm->kernel.entry,
				     LAYOUT_ZERO_PAGE, err);
		free(cpuid);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Device additions are only allowed between vm_create() and vm_run(). */
int vm_check_can_add(struct vm *vm)
{
	if (atomic_load(&vm->ran))
		return err_set(&vm->err, EBUSY, "devices must be added before vm_run()");
	if (vm->nvdevs == PCI_MAX_DEVICES - 1)
		return err_set(&vm->err, ENOSPC, "no free PCI slot for another device");
	return 0;
}

int vm_add_virtio(struct vm *vm, struct virtio_device dev, struct virtio_pci **out)
{
	struct virtio_proxy *px = NULL;
	struct virtio_pci *vp;
	const char *name = dev.ops->name;
	int ret;

	if (vm->cfg.sandbox) {
		struct sandbox_config sb = {
			.policy_dir = vm->policy_dir,
			.namespaces = true,
			.log_fd = -1,
		};

		/* On success dev becomes the proxy that talks to the jailed copy. */
		ret = virtio_proxy_spawn(&dev, &vm->mem, &sb, &px, &vm->err);
		if (ret < 0) {
			dev.ops->destroy(dev.dev);
			return ret;
		}
	}
	ret = virtio_pci_create(&vm->pci, &vm->mmio, &vm->mem, &vm->plat, dev, &vp, &vm->err);
	if (ret < 0) {
		dev.ops->destroy(dev.dev);
		return ret;
	}
	vm->vdevs[vm->nvdevs++] = vp;
	if (px) {
		vm->proxies[vm->nproxies] = px;
		vm->proxy_names[vm->nproxies++] = name;
	}
	if (out)
		*out = vp;
	return 0;
}

/*
 * Make @c (malloc'ed; this takes it) the guest's command line and rewrite
 * boot_params. On failure (too long for the kernel) the old one stays.
 */
static int vm_set_cmdline(struct vm *vm, char *c)
{
	struct boot_setup bs = {&vm->kernel, c, vm->initrd_addr, vm->initrd_size, vm->rsdp};
	int ret = bootparams_write(&vm->mem, &bs, &vm->err);

	if (ret < 0) {
		bs.cmdline = vm->cmdline;
		bootparams_write(&vm->mem, &bs, NULL);
		free(c);
		return ret;
	}
	free(vm->cmdline);
	vm->cmdline = c;
	return 0;
}

/* Append @arg to the command line; the old one stays on failure. */
static int vm_append_cmdline(struct vm *vm, const char *arg)
{
	size_t n = strlen(vm->cmdline) + 1 + strlen(arg) + 1;
	char *c = malloc(n);

	if (!c)
		return err_set(&vm->err, ENOMEM, "out of memory");
	snprintf(c, n, "%s %s", vm->cmdline, arg);
	return vm_set_cmdline(vm, c);
}

int vm_add_disk(struct vm *vm, const char *path, uint32_t flags)
{
	bool ro = flags & VM_DISK_READ_ONLY, root = flags & VM_DISK_ROOT;
	struct virtio_device dev;
	struct disk *disk;
	char name[8], arg[32], *old_cmdline = NULL;
	int ret;

	err_clear(&vm->err);
	if (!path || !path[0])
		return err_set(&vm->err, EINVAL, "disk: no path given");
	if (flags & ~(VM_DISK_READ_ONLY | VM_DISK_ROOT | VM_DISK_FORMAT_RAW |
		      VM_DISK_FORMAT_QCOW2) ||
	    (flags & VM_DISK_FORMAT_RAW && flags & VM_DISK_FORMAT_QCOW2))
		return err_set(&vm->err, EINVAL, "disk %s: bad flags 0x%x", path, flags);
	ret = vm_check_can_add(vm);
	if (ret < 0)
		return ret;
	if (root && vm->have_root)
		return err_set(&vm->err, EEXIST, "disk %s: the VM already has a root disk", path);
	if (vm->nblk >= 26)
		return err_set(&vm->err, ENOSPC, "disk %s: at most 26 disks", path);
	snprintf(name, sizeof(name), "vd%c", 'a' + vm->nblk);
	{
		struct disk_opts o = {
			.flags = ro ? DISK_OPEN_READ_ONLY : 0,
			.format = flags & VM_DISK_FORMAT_RAW	 ? DISK_FORMAT_RAW
				  : flags & VM_DISK_FORMAT_QCOW2 ? DISK_FORMAT_QCOW2
								 : DISK_FORMAT_DETECT,
		};

		ret = disk_open_opts(path, &o, &disk, &vm->err);
		if (ret < 0)
			return ret;
	}
	ret = virtio_blk_create(disk, name, &dev, &vm->err);
	if (ret < 0)
		return ret;
	if (root) {
		/* Check that root= fits before the device becomes visible. */
		old_cmdline = strdup(vm->cmdline);
		snprintf(arg, sizeof(arg), "root=/dev/%s %s", name, ro ? "ro" : "rw");
		ret = old_cmdline ? vm_append_cmdline(vm, arg)
				  : err_set(&vm->err, ENOMEM, "out of memory");
		if (ret < 0) {
			free(old_cmdline);
			dev.ops->destroy(dev.dev);
			return ret;
		}
	}
	ret = vm_add_virtio(vm, dev, NULL);
	if (ret < 0) {
		/* The disk is not there: neither is its root= argument. */
		if (old_cmdline)
			vm_set_cmdline(vm, old_cmdline);
		return ret;
	}
	free(old_cmdline);
	vm->have_root |= root;
	vm->nblk++;
	return 0;
}

int vm_create_qcow2(const char *path, uint64_t size, uint32_t cluster_size, const char *backing)
{
	unsigned int bits = 0;
	struct vmm_err err;
	int ret;

	err_clear(&err);
	if (cluster_size) {
		while (bits < 32 && (1u << bits) < cluster_size)
			bits++;
		if ((1u << bits) != cluster_size) {
			ret = err_set(&err, EINVAL, "cluster size %u is not a power of two",
				      cluster_size);
			goto out;
		}
	}
	ret = qcow2_create(path, size, bits, backing, &err);
out:
	vm_client_error_set(&err);
	return ret;
}

int vm_add_disk_fd(struct vm *vm, int fd, uint32_t flags)
{
	char path[32];

	if (fd < 0)
		return err_set(&vm->err, EBADF, "disk fd %d is not valid", fd);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return vm_add_disk(vm, path, flags);
}

int vm_add_rng(struct vm *vm)
{
	struct virtio_device dev;
	int ret;

	err_clear(&vm->err);
	ret = vm_check_can_add(vm);
	if (ret < 0)
		return ret;
	ret = virtio_rng_create(&dev, &vm->err);
	if (ret < 0)
		return ret;
	return vm_add_virtio(vm, dev, NULL);
}

/* Allocate a VM and build its guest image; see vm_prepare() in vm.h. */
int vm_prepare(const struct vm_config *cfg, struct vm **out, struct vmm_err *err)
{
	struct vm *vm;
	int ret;

	*out = NULL;
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return err_set(err, ENOMEM, "out of memory");
	vm->mem.fd = -1;
	vm->kvm.sys_fd = vm->kvm.vm_fd = -1;
	vm->exit_fd = -1;
	vm->event_fd = -1;
	vm->resume_fd = -1;
	atomic_init(&vm->exit_reason, -1);
	atomic_init(&vm->ran, false);
	atomic_init(&vm->pause_requested, false);
	pthread_mutex_init(&vm->state_lock, NULL);
	pthread_cond_init(&vm->state_cond, NULL);
	vm->state = VM_STATE_CREATED;
	bus_init(&vm->pio);
	bus_init(&vm->mmio);
	pci_root_init(&vm->pci);

	ret = config_check(vm, cfg, err);
	if (ret < 0)
		goto fail;
	vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus) {
		ret = err_set(err, ENOMEM, "out of memory");
		goto fail;
	}
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		vm->vcpus[i].fd = -1;
		vm->vcpus[i].listener = -1;
	}
	vm->kernel_path = strdup(vm->cfg.kernel_path);
	vm->initrd_path = vm->cfg.initrd_path ? strdup(vm->cfg.initrd_path) : NULL;
	if (!vm->kernel_path || (vm->cfg.initrd_path && !vm->initrd_path)) {
		ret = err_set(err, ENOMEM, "out of memory");
		goto fail;
	}
	vm->cfg.kernel_path = vm->kernel_path;
	vm->cfg.initrd_path = vm->initrd_path;
	if (vm->cfg.seccomp_policy_dir) {
		vm->policy_dir = strdup(vm->cfg.seccomp_policy_dir);
		if (!vm->policy_dir) {
			ret = err_set(err, ENOMEM, "out of memory");
			goto fail;
		}
	}
	vm->cfg.seccomp_policy_dir = vm->policy_dir;
	/* The vCPU and process policies are checked now, before anything runs. */
	if (vm->cfg.sandbox) {
		ret = sandbox_policy_load(vm->policy_dir, "vcpu", &vm->vcpu_policy, err);
		if (ret < 0)
			goto fail;
	}
	if (vm->cfg.sandbox & VM_SANDBOX_PROCESS) {
		ret = sandbox_policy_load_flags(vm->policy_dir, "vmm", SANDBOX_POLICY_KILL,
						&vm->vmm_policy, err);
		if (ret < 0)
			goto fail;
	}
	ret = build_cmdline(vm, err);
	if (ret < 0)
		goto fail;
	vm->cfg.cmdline = NULL;
	vm->exit_fd = eventfd(0, EFD_CLOEXEC);
	vm->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vm->resume_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->exit_fd < 0 || vm->event_fd < 0 || vm->resume_fd < 0) {
		ret = err_set(err, errno, "eventfd: %s", strerror(errno));
		goto fail;
	}
	ret = load_guest(vm, err);
	if (ret < 0)
		goto fail;
	*out = vm;
	return 0;
fail:
	vm_destroy(vm);
	return ret;
}

int vm_create(const struct vm_config *cfg, struct vm **out)
{
	struct vmm_err *err = &create_err;
	struct vm *vm;
	int ret;

	err_clear(err);
	if (!out)
		return err_set(err, EINVAL, "vm_create: out is NULL");
	*out = NULL;
	/* KVM is opened by vm_run(): every error in the caller's input
	 * (here and in vm_add_*) is reported the same way on any host. */
	ret = vm_prepare(cfg, &vm, err);
	if (ret < 0)
		return ret;
	ret = add_devices(vm, err);
	if (ret < 0) {
		vm_destroy(vm);
		return ret;
	}
	*out = vm;
	return 0;
}

/* Host input -> COM1, waiting for FIFO room instead of dropping input. */
static void *console_thread(void *arg)
{
	struct vm *vm = arg;
	int in = vm->cfg.console_in_fd;
	bool in_open = true;
	uint8_t buf[64];
	size_t have = 0; /* bytes read from the host but not yet taken by the UART */

	pthread_setname_np(pthread_self(), "console");
	while (!vm_exiting(vm)) {
		struct pollfd p[3] = {
			{.fd = vm->exit_fd, .events = POLLIN},
			{.fd = serial_rx_space_fd(vm->com1), .events = POLLIN},
			{.fd = (in_open && have == 0) ? in : -1, .events = POLLIN},
		};

		if (have) {
			size_t took = serial_feed(vm->com1, buf, have);

			memmove(buf, buf + took, have - took);
			have -= took;
		}
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents)
			break;
		if (p[1].revents) {
			uint64_t v;

			(void)!read(p[1].fd, &v, sizeof(v));
		}
		if (p[2].revents) {
			ssize_t n = read(in, buf, sizeof(buf));

			if (n > 0)
				have = (size_t)n;
			else if (n == 0 || (errno != EINTR && errno != EAGAIN))
				in_open = false;
		}
	}
	return NULL;
}

/* Set the state and tell the embedder (caller holds state_lock). */
static void vm_set_state(struct vm *vm, enum vm_state st)
{
	uint64_t one = 1;

	vm->state = st;
	pthread_cond_broadcast(&vm->state_cond);
	(void)!write(vm->event_fd, &one, sizeof(one));
}

void vm_vcpu_pause_point(struct vm *vm)
{
	if (!atomic_load(&vm->pause_requested))
		return;
	pthread_mutex_lock(&vm->state_lock);
	vm->paused_vcpus++;
	pthread_cond_broadcast(&vm->state_cond);
	pthread_mutex_unlock(&vm->state_lock);
	/* Wait without the lock: vm_stop() may run in a signal handler and
	 * only writes exit_fd, which nobody reads, so it stays readable. */
	while (atomic_load(&vm->pause_requested) && !vm_exiting(vm)) {
		struct pollfd p[2] = {
			{.fd = vm->exit_fd, .events = POLLIN},
			{.fd = vm->resume_fd, .events = POLLIN},
		};

		poll(p, 2, -1);
	}
	pthread_mutex_lock(&vm->state_lock);
	vm->paused_vcpus--;
	pthread_cond_broadcast(&vm->state_cond);
	pthread_mutex_unlock(&vm->state_lock);
}

int vm_pause(struct vm *vm)
{
	int ret = 0;

	pthread_mutex_lock(&vm->state_lock);
	if (vm->state == VM_STATE_PAUSED)
		goto out;
	if (vm->state != VM_STATE_RUNNING) {
		ret = err_set(&vm->err, EINVAL, "the VM is not running");
		goto out;
	}
	atomic_store(&vm->pause_requested, true);
	for (unsigned int i = 0; i < vm->started_vcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	while (vm->paused_vcpus < vm->started_vcpus && !vm_exiting(vm)) {
		struct timespec ts;

		/* vm_stop() cannot signal the condition: look at the exit flag
		 * now and then. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&vm->state_cond, &vm->state_lock, &ts);
	}
	if (vm_exiting(vm)) {
		atomic_store(&vm->pause_requested, false);
		ret = err_set(&vm->err, ESHUTDOWN, "the VM stopped");
		goto out;
	}
	memset(&vm->paused_clock, 0, sizeof(vm->paused_clock));
	if (ioctl(vm->kvm.vm_fd, KVM_GET_CLOCK, &vm->paused_clock) < 0)
		log_msg(&vm->log, VM_LOG_WARN, "KVM_GET_CLOCK: %s", strerror(errno));
	vm_set_state(vm, VM_STATE_PAUSED);
out:
	pthread_mutex_unlock(&vm->state_lock);
	return ret;
}

int vm_resume(struct vm *vm)
{
	struct kvm_clock_data clock;
	uint64_t one = 1, v;
	int ret = 0;

	pthread_mutex_lock(&vm->state_lock);
	if (vm->state == VM_STATE_RUNNING)
		goto out;
	if (vm->state != VM_STATE_PAUSED) {
		ret = err_set(&vm->err, EINVAL, "the VM is not paused");
		goto out;
	}
	/* The guest's clock goes on from where it stopped. */
	memset(&clock, 0, sizeof(clock));
	clock.clock = vm->paused_clock.clock;
	if (ioctl(vm->kvm.vm_fd, KVM_SET_CLOCK, &clock) < 0)
		log_msg(&vm->log, VM_LOG_WARN, "KVM_SET_CLOCK: %s", strerror(errno));
	atomic_store(&vm->pause_requested, false);
	(void)!write(vm->resume_fd, &one, sizeof(one));
	while (vm->paused_vcpus > 0)
		pthread_cond_wait(&vm->state_cond, &vm->state_lock);
	(void)!read(vm->resume_fd, &v, sizeof(v));
	vm_set_state(vm, VM_STATE_RUNNING);
out:
	pthread_mutex_unlock(&vm->state_lock);
	return ret;
}

int vm_event_fd(struct vm *vm)
{
	return vm->event_fd;
}

int vm_get_status(struct vm *vm, struct vm_status *st)
{
	struct vm_status s;

	if (!st || st->struct_size < offsetof(struct vm_status, vcpus))
		return err_set(&vm->err, EINVAL, "vm_status.struct_size is not set");
	memset(&s, 0, sizeof(s));
	s.struct_size = st->struct_size < sizeof(s) ? st->struct_size : sizeof(s);
	pthread_mutex_lock(&vm->state_lock);
	s.state = vm->state;
	pthread_mutex_unlock(&vm->state_lock);
	s.vcpus = vm->ncpus;
	s.mem_bytes = vm->mem.total;
	if (vm->balloon) {
		s.balloon_target_bytes = virtio_balloon_target(vm->balloon);
		s.balloon_actual_bytes = virtio_balloon_actual(vm->balloon);
	}
	memcpy(st, &s, s.struct_size);
	return 0;
}

int vm_confine_process(struct vm *vm)
{
	if (!vm->vmm_policy)
		return 0;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	/* LeakSanitizer's exit check needs ptrace and /proc: no process filter. */
	log_msg(&vm->log, VM_LOG_INFO,
		"sanitized build: %s is not loaded on the process (the vCPU filter is)",
		sandbox_policy_path(vm->vmm_policy));
	return 0;
#else
	return sandbox_filter_load(vm->vmm_policy, SANDBOX_FILTER_ALL_THREADS, NULL, &vm->err);
#endif
}

/* A vCPU thread's forbidden call: fail it and stop the VM, naming it. */
static void vcpu_violation(struct vm *vm, struct vcpu *v, short revents)
{
	char name[32];
	int nr = -1, ret;

	/* POLLHUP alone, or a failed read: the thread is gone, nothing more can come. */
	ret = revents & POLLIN ? sandbox_listener_deny(v->listener, &nr) : -ESRCH;
	if (ret < 0) {
		close(v->listener);
		v->listener = -1;
	}
	if (ret <= 0)
		return;
	vm_request_exit(vm, VM_EXIT_HOST_ERROR,
			"vCPU %u made a system call its seccomp policy (%s) forbids: %s", v->id,
			sandbox_policy_path(vm->vcpu_policy),
			sandbox_syscall_name(nr, name, sizeof(name)));
}

void vm_wait_exit(struct vm *vm)
{
	while (!vm_exiting(vm)) {
		struct pollfd p[1 + PCI_MAX_DEVICES + VM_MAX_VCPUS];
		struct vcpu *who[VM_MAX_VCPUS];
		unsigned int n = 0, nv = 0;

		p[n++] = (struct pollfd){.fd = vm->exit_fd, .events = POLLIN};
		/* A device process that dies stops the VM. */
		for (unsigned int i = 0; i < vm->nproxies; i++)
			p[n++] = (struct pollfd){.fd = virtio_proxy_wait_fd(vm->proxies[i]),
						 .events = POLLIN};
		/* So does a vCPU thread's forbidden system call. */
		for (unsigned int i = 0; i < vm->ncpus; i++) {
			if (vm->vcpus[i].listener < 0)
				continue;
			who[nv++] = &vm->vcpus[i];
			p[n++] = (struct pollfd){.fd = vm->vcpus[i].listener, .events = POLLIN};
		}
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			vm_request_exit(vm, VM_EXIT_HOST_ERROR, "poll: %s", strerror(errno));
			break;
		}
		for (unsigned int i = 0; i < vm->nproxies; i++) {
			char why[128];

			if (!p[1 + i].revents)
				continue;
			if (virtio_proxy_reap(vm->proxies[i], why, sizeof(why)) == -EAGAIN)
				continue;
			vm_request_exit(vm, VM_EXIT_HOST_ERROR, "device %s (pid %d) died: %s",
					vm->proxy_names[i], (int)virtio_proxy_pid(vm->proxies[i]),
					why);
		}
		for (unsigned int i = 0; i < nv; i++)
			if (p[1 + vm->nproxies + i].revents)
				vcpu_violation(vm, who[i], p[1 + vm->nproxies + i].revents);
	}
}

int vm_run(struct vm *vm)
{
	struct vmm_err *err = &vm->err;
	bool expected = false;
	unsigned int started = 0;
	int ret, reason;

	if (!atomic_compare_exchange_strong(&vm->ran, &expected, true))
		return err_set(err, EBUSY, "vm_run: this VM has already run");
	ret = setup_kvm(vm, err);
	if (ret < 0)
		goto not_run;
	ret = vcpu_install_kick_handler();
	if (ret < 0) {
		ret = err_set(err, -ret, "cannot install the vCPU kick signal handler");
		goto not_run;
	}
	ret = vm_confine_process(vm);
	if (ret < 0)
		goto not_run;
	if (vm->cfg.console_in_fd >= 0) {
		ret = pthread_create(&vm->console_thread, NULL, console_thread, vm);
		if (ret) {
			ret = err_set(err, ret, "cannot start the console thread: %s",
				      strerror(ret));
			goto not_run;
		}
		vm->console_started = true;
	}
	pthread_mutex_lock(&vm->state_lock);
	for (; started < vm->ncpus && !vm_exiting(vm); started++) {
		ret = vcpu_start(&vm->vcpus[started], err);
		if (ret < 0) {
			vm_request_exit(vm, VM_EXIT_HOST_ERROR, "%s", err->msg);
			break;
		}
	}
	vm->started_vcpus = started;
	vm_set_state(vm, VM_STATE_RUNNING);
	pthread_mutex_unlock(&vm->state_lock);
	vm_wait_exit(vm);
	pthread_mutex_lock(&vm->state_lock);
	vm_set_state(vm, VM_STATE_STOPPED);
	pthread_mutex_unlock(&vm->state_lock);
	for (unsigned int i = 0; i < started; i++)
		vcpu_kick(&vm->vcpus[i]);
	for (unsigned int i = 0; i < started; i++)
		vcpu_join(&vm->vcpus[i]);
	if (vm->console_started) {
		pthread_join(vm->console_thread, NULL);
		vm->console_started = false;
	}
	reason = atomic_load(&vm->exit_reason);
	if (vm->exit_msg[0])
		err_set(err, EIO, "%s", vm->exit_msg);
	else
		err_clear(err);
	log_msg(&vm->log, VM_LOG_DEBUG, "VM exited: %s", vm_exit_reason_name(reason));
	return reason;
not_run:
	/* Nothing was started: the VM is over before it ran. */
	pthread_mutex_lock(&vm->state_lock);
	vm_set_state(vm, VM_STATE_STOPPED);
	pthread_mutex_unlock(&vm->state_lock);
	return ret;
}

int vm_stop(struct vm *vm)
{
	vm_request_exit(vm, VM_EXIT_STOPPED, NULL);
	return 0;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	vm_control_close(vm);
	/* Devices first: their workers use guest memory and KVM fds. */
	for (unsigned int i = 0; i < vm->nvdevs; i++)
		virtio_pci_destroy(vm->vdevs[i]);
	if (vm->vcpus) {
		for (unsigned int i = 0; i < vm->ncpus; i++)
			vcpu_destroy(&vm->vcpus[i]);
		free(vm->vcpus);
	}
	serial_destroy(vm->com1);
	cmos_destroy(vm->cmos);
	i8042_destroy(vm->i8042);
	pci_root_destroy(&vm->pci);
	kvm_close(&vm->kvm);
	gm_destroy(&vm->mem);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	if (vm->exit_fd >= 0)
		close(vm->exit_fd);
	if (vm->event_fd >= 0)
		close(vm->event_fd);
	if (vm->resume_fd >= 0)
		close(vm->resume_fd);
	pthread_cond_destroy(&vm->state_cond);
	pthread_mutex_destroy(&vm->state_lock);
	free(vm->kernel_path);
	free(vm->initrd_path);
	free(vm->policy_dir);
	sandbox_policy_free(vm->vcpu_policy);
	sandbox_policy_free(vm->vmm_policy);
	free(vm->cmdline);
	free(vm);
}
