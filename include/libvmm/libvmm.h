/* libvmm public API: create, run, stop and destroy KVM virtual machines. */
#ifndef LIBVMM_LIBVMM_H
#define LIBVMM_LIBVMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define LIBVMM_API __attribute__((visibility("default")))
#else
#define LIBVMM_API
#endif

#define LIBVMM_VERSION_MAJOR 0
#define LIBVMM_VERSION_MINOR 1

/** Opaque handle to one virtual machine. Several may exist in one process. */
struct vm;
struct vm_status;

/** Severity of a log message handed to a struct vm_config::log callback. */
enum vm_log_level {
	VM_LOG_ERROR = 0,
	VM_LOG_WARN = 1,
	VM_LOG_INFO = 2,
	VM_LOG_DEBUG = 3,
};

/**
 * Log callback. @msg is one line without a trailing newline. Called from any
 * of the VM's threads; it must be thread safe. @opaque is config.log_opaque.
 */
typedef void (*vm_log_fn)(void *opaque, enum vm_log_level level, const char *msg);

/**
 * Configuration for vm_create(). Zero-initialise it, set struct_size to
 * sizeof(struct vm_config), then fill in what you need; fields added in later
 * versions are appended, and a caller built against an older header passes a
 * smaller struct_size, for which the missing fields take their defaults.
 */
struct vm_config {
	/** sizeof(struct vm_config) as the caller compiled it. Required. */
	size_t struct_size;
	/** Path of the kernel: an ELF64 vmlinux or a bzImage. Required. */
	const char *kernel_path;
	/** Path of an initial ramdisk, or NULL for none. */
	const char *initrd_path;
	/**
	 * Extra kernel command line, appended after the default one
	 * ("console=ttyS0 reboot=k panic=-1" and what the devices need), or
	 * NULL. Its total length is checked against the kernel's limit.
	 */
	const char *cmdline;
	/** Guest RAM in MiB; 0 means the default, 256. At least 16. */
	uint32_t mem_mib;
	/** Number of vCPUs; 0 means 1. At most VM_MAX_VCPUS. */
	uint32_t vcpus;
	/**
	 * Console (COM1) input fd, read by the VMM; -1 for none. The fd is
	 * not closed by libvmm. Use vm_config_init() to get the default,
	 * which is -1 (no input); vmm-run passes 0.
	 */
	int console_in_fd;
	/** Console (COM1) output fd; -1 discards the output. Not closed. */
	int console_out_fd;
	/** Log callback, or NULL for the default (one line to stderr). */
	vm_log_fn log;
	/** Passed to @log. */
	void *log_opaque;
	/** Messages above this level are not passed to @log. */
	enum vm_log_level log_level;
	/**
	 * 0 (the default): no sandbox, devices run in this process.
	 * VM_SANDBOX_DEVICES (or any non-zero value): run every virtio device
	 * in a process of its own, forked by vm_add_*() once the device's
	 * files are open, jailed (new namespaces where the host allows them,
	 * an empty root, no capabilities, no new privileges, a seccomp filter
	 * from the device's policy file); and confine each vCPU thread with
	 * vcpu.policy (a call it forbids stops the VM with a message naming
	 * it; the log callback and the console fds are then used under that
	 * filter, so the callback may only write and allocate).
	 * VM_SANDBOX_PROCESS (with or without VM_SANDBOX_DEVICES): also, from
	 * vm_run() on, confine every thread of the calling process with
	 * vmm.policy, for good: a call it forbids kills the process. For
	 * programs that run one VM and exit, as vmm-run does (it sets both
	 * unless --disable-sandbox is given).
	 */
	int sandbox;
	/**
	 * Directory of the seccomp policy files (virtio_blk.policy, ...);
	 * NULL: the installed ones. A missing or malformed policy makes
	 * vm_add_*() fail before the guest starts.
	 */
	const char *seccomp_policy_dir;
};

/** vm_config.sandbox: devices in jailed processes, vCPU threads filtered. */
#define VM_SANDBOX_DEVICES (1 << 0)
/** vm_config.sandbox: also the whole process filtered from vm_run() on. */
#define VM_SANDBOX_PROCESS (1 << 1)

/** The most vCPUs a VM may have. */
#define VM_MAX_VCPUS 64

/** Why vm_run() returned. */
enum vm_exit_reason {
	/** The guest powered off (ACPI S5). */
	VM_EXIT_POWEROFF = 0,
	/** The guest asked for a reset (i8042, ACPI reset register). */
	VM_EXIT_RESET = 1,
	/** vm_stop() was called. */
	VM_EXIT_STOPPED = 2,
	/** The guest triple-faulted (KVM_EXIT_SHUTDOWN). */
	VM_EXIT_TRIPLE_FAULT = 3,
	/** KVM reported an internal or emulation error; see vm_last_error(). */
	VM_EXIT_INTERNAL_ERROR = 4,
	/** A host-side error stopped the VM; see vm_last_error(). */
	VM_EXIT_HOST_ERROR = 5,
};

/**
 * Fill @cfg with defaults: struct_size set, console fds -1, log level INFO.
 */
LIBVMM_API void vm_config_init(struct vm_config *cfg);

/**
 * Create a VM: check the config, allocate guest memory, load the kernel and
 * initrd, build the boot tables and the legacy devices. /dev/kvm is opened
 * by vm_run(), so every problem with the caller's input is reported here or
 * by vm_add_*() on any host, before anything depends on KVM.
 *
 * @cfg:  the configuration; read during the call only.
 * @out:  receives the new VM on success.
 *
 * Returns 0, or a negative errno: -EINVAL for a bad config (zero or absurd
 * sizes), -ENOENT/-EACCES/-EISDIR for unusable files, -ENOEXEC for a kernel
 * that is neither an ELF64 vmlinux nor a bzImage, -E2BIG for a command line
 * or initrd that does not fit, -ENOMEM. On failure nothing is left allocated
 * and vm_last_error(NULL) describes the problem in one line for the calling
 * thread.
 *
 * Security: the kernel, initrd and all guest activity are untrusted; libvmm
 * checks every guest-supplied address and length.
 */
LIBVMM_API int vm_create(const struct vm_config *cfg, struct vm **out);

/** vm_add_disk() flags. */
/** The guest may not write: VIRTIO_BLK_F_RO, and the image is opened read-only. */
#define VM_DISK_READ_ONLY (1u << 0)
/**
 * The root disk: "root=/dev/vdX ro" (or "rw") is appended to the kernel
 * command line, where vdX is this disk's name (vda for the first disk).
 * At most one disk per VM.
 */
#define VM_DISK_ROOT (1u << 1)
/**
 * The image's format. Neither flag: detected from the file's first bytes
 * (qcow2 magic, else raw), never from its name. Security: a guest that can
 * write a raw image can put a qcow2 header naming a host file as backing
 * file into it; open such images with VM_DISK_FORMAT_RAW.
 */
#define VM_DISK_FORMAT_RAW   (1u << 2)
#define VM_DISK_FORMAT_QCOW2 (1u << 3)

/**
 * Add a virtio-blk disk backed by the raw image at @path. Disks appear to the
 * guest in the order they are added (vda, vdb, ...). The image is locked:
 * shared for a read-only disk, exclusive for a writable one, so two VMs
 * cannot write one image. A path of the form /proc/self/fd/N reopens an fd
 * the caller holds.
 *
 * Call it after vm_create() and before vm_run().
 *
 * Returns 0, or -ENOENT/-EACCES/-EISDIR/-EINVAL for an unusable path, -EBUSY
 * when another process holds a conflicting lock on the image, -EEXIST for a
 * second root disk, -E2BIG when the root= argument no longer fits the
 * kernel's command line, -ENOSPC when the PCI bus is full, -EBUSY after
 * vm_run(). vm_last_error(vm) names the problem.
 *
 * Security: the image's content is guest data; libvmm checks every request's
 * sector range against the image size.
 */
LIBVMM_API int vm_add_disk(struct vm *vm, const char *path, uint32_t flags);

/**
 * Create a qcow2 (version 3) image at @path like `qemu-img create -f qcow2`:
 * @size bytes of virtual disk (0 with a backing file: the backing file's
 * size), clusters of @cluster_size bytes (0: 64 KiB; a power of two from
 * 4 KiB to 2 MiB), and an optional backing file (raw or qcow2, recorded as
 * given; relative paths are resolved against the new image's directory).
 * An existing file is not overwritten (-EEXIST). Returns 0 or -errno with
 * a message in vm_last_error(NULL).
 */
LIBVMM_API int vm_create_qcow2(const char *path, uint64_t size, uint32_t cluster_size,
			       const char *backing);

/**
 * Like vm_add_disk(), for an image the caller has open as @fd. libvmm opens
 * its own description of the file (via /proc/self/fd), so the caller may
 * close @fd afterwards; with VM_DISK_READ_ONLY unset, @fd's file must be
 * writable.
 */
LIBVMM_API int vm_add_disk_fd(struct vm *vm, int fd, uint32_t flags);

/**
 * Add a virtio-rng device whose entropy comes from the host's getrandom(2).
 * vmm-run adds one unless --no-rng is given. Call before vm_run(). Returns 0,
 * -ENOSPC when the PCI bus is full, or -EBUSY after vm_run().
 */
LIBVMM_API int vm_add_rng(struct vm *vm);

/** A VM's network interface, as vm_get_net_config() reports it. */
struct vm_net_config {
	size_t struct_size; /* set by the caller */
	/** The tap fd libvmm uses; valid until vm_destroy(); do not close it. */
	int tap_fd;
	/** The tap interface's name on the host. */
	char ifname[16];
	/** Host-side IPv4 address and netmask (host byte order); 0 for a tap handed in. */
	uint32_t host_ip;
	uint32_t netmask;
	/** The guest's MAC address. */
	uint8_t mac[6];
};

/**
 * Add a virtio-net device on an already configured tap device @fd (opened
 * from /dev/net/tun with IFF_TAP; IFF_VNET_HDR enables checksum and TSO
 * offloads). libvmm checks that @fd is an open tap, takes its own duplicate
 * (the caller may close @fd) and needs no privileges for networking. The fd
 * is made non-blocking (a flag its duplicates share). @mac is the guest's
 * MAC address; NULL picks a random locally administered one.
 *
 * Call before vm_run(). Returns 0, -EBADF for an fd that is not open,
 * -EINVAL for an fd that is not a tap (a regular file, a socket, a tun
 * device) or a bad MAC (multicast or zero), -ENOSPC, -EBUSY after vm_run().
 */
LIBVMM_API int vm_add_tap_fd(struct vm *vm, int fd, const uint8_t mac[6]);

/**
 * Create a tap device, give its host side @host_ip and @netmask (host byte
 * order; the netmask contiguous), bring it up, and add a virtio-net device
 * on it with the guest MAC @mac (NULL: random, locally administered). Needs
 * CAP_NET_ADMIN (-EPERM otherwise, with a message saying so). Same other
 * errors as vm_add_tap_fd(). The tap disappears with the VM.
 */
LIBVMM_API int vm_add_tap(struct vm *vm, uint32_t host_ip, uint32_t netmask, const uint8_t mac[6]);

/**
 * Report network interface @index (0 for the first added) in @out, whose
 * struct_size the caller sets. Returns 0, or -ENOENT when there is no such
 * interface, -EINVAL without struct_size.
 */
LIBVMM_API int vm_get_net_config(struct vm *vm, unsigned int index, struct vm_net_config *out);

/**
 * Add a virtio-balloon device (inflate and deflate queues, DEFLATE_ON_OOM).
 * Pages the guest puts in the balloon are returned to the host, so the
 * VMM's memory use really drops. Call before vm_run(). Returns 0, -EEXIST
 * for a second balloon, -ENOSPC when the PCI bus is full, -EBUSY after
 * vm_run().
 */
LIBVMM_API int vm_add_balloon(struct vm *vm);

/**
 * Ask the guest's balloon driver to hold @bytes (rounded down to 4 KiB
 * pages) of its memory. Thread safe, callable while vm_run() runs. Returns
 * 0, -ENODEV without a balloon, -EINVAL for more than guest RAM.
 */
LIBVMM_API int vm_set_balloon(struct vm *vm, uint64_t bytes);

/**
 * Serve the control socket at @path (a directory gets "vmm-<pid>.sock"
 * inside): stop, suspend, resume, balloon and status requests from other
 * processes, as `vmm-run stop PATH` sends them (protocol: docs/
 * control-protocol.md). The socket is mode 0600; a stale socket of a dead
 * VMM is replaced, a live one refused (-EADDRINUSE). It is removed by
 * vm_destroy(). Call before vm_run(); at most once. Returns 0 or -errno.
 */
LIBVMM_API int vm_control_listen(struct vm *vm, const char *path);

/** The control socket's path, or NULL if vm_control_listen() was not called. */
LIBVMM_API const char *vm_control_path(const struct vm *vm);

/** Requests vm_control_send() can make. */
enum vm_control_command {
	VM_CONTROL_STOP = 1,
	VM_CONTROL_SUSPEND = 2,
	VM_CONTROL_RESUME = 3,
	VM_CONTROL_BALLOON = 4, /* arg: target size in bytes, a multiple of 4096 */
	VM_CONTROL_STATUS = 5,	/* fills *status */
};

/**
 * Client side of the control socket: send @cmd (with @arg) to the VMM
 * listening at @path and wait for its reply (30 s at most). @status may be
 * NULL; for VM_CONTROL_STATUS it receives the VM's status (set its
 * struct_size). Returns 0, or -errno with a message in vm_last_error(NULL):
 * -ENOENT/-ECONNREFUSED when nothing listens there, -EINVAL for a refused
 * argument, -EBUSY when the VM is in the wrong state, -EOPNOTSUPP (e.g. a
 * balloon request to a VM without one).
 */
LIBVMM_API int vm_control_send(const char *path, enum vm_control_command cmd, uint64_t arg,
			       struct vm_status *status);

/**
 * Run the VM until the guest powers off or resets, vm_stop() is called, or
 * an error occurs. Blocks the calling thread; the vCPUs run in threads of
 * their own. May be called once per VM.
 *
 * First opens /dev/kvm and creates the KVM VM, its memory slots and vCPUs.
 *
 * Returns a non-negative enum vm_exit_reason, or a negative errno if the VM
 * could not be started: -ENODEV when KVM is not available on this host,
 * -EACCES when /dev/kvm cannot be opened, -EBUSY if the VM already ran;
 * vm_last_error(vm) says why.
 */
LIBVMM_API int vm_run(struct vm *vm);

/** Lifecycle states reported by vm_get_status(). */
enum vm_state {
	VM_STATE_CREATED = 0, /* vm_run() not called yet */
	VM_STATE_RUNNING = 1,
	VM_STATE_PAUSED = 2,
	VM_STATE_STOPPED = 3, /* vm_run() has returned or is returning */
};

/** A snapshot of a VM's state; set struct_size before calling vm_get_status(). */
struct vm_status {
	size_t struct_size;
	enum vm_state state;
	uint32_t vcpus;
	uint64_t mem_bytes;
	/** Balloon target and the size the guest reports; 0 without a balloon. */
	uint64_t balloon_target_bytes;
	uint64_t balloon_actual_bytes;
};

/**
 * Fill @st (whose struct_size the caller sets; smaller, older structs are
 * filled as far as they go). Thread safe. Returns 0 or -EINVAL.
 */
LIBVMM_API int vm_get_status(struct vm *vm, struct vm_status *st);

/**
 * Pause a running VM: every vCPU leaves the guest and waits; the guest's
 * kvmclock is saved so that it does not jump by the paused time on resume.
 * Returns when all vCPUs are parked. Thread safe (not from a signal
 * handler). Returns 0 (also if already paused), -EINVAL if the VM is not
 * running, -ESHUTDOWN if it stopped meanwhile.
 */
LIBVMM_API int vm_pause(struct vm *vm);

/** Resume a paused VM. Returns 0 (also if running), -EINVAL if not paused. */
LIBVMM_API int vm_resume(struct vm *vm);

/**
 * An eventfd that becomes readable whenever the VM's state changes
 * (running, paused, resumed, stopped). Poll it, read 8 bytes to clear it,
 * then call vm_get_status(). Owned by the VM; valid until vm_destroy().
 */
LIBVMM_API int vm_event_fd(struct vm *vm);

/**
 * Ask a running VM to stop: every vCPU leaves the guest and vm_run() returns
 * VM_EXIT_STOPPED. Thread safe and async-signal safe; may be called before
 * vm_run(), in which case vm_run() returns at once. Returns 0.
 */
LIBVMM_API int vm_stop(struct vm *vm);

/**
 * Free everything the VM holds. The VM must not be running (vm_run() has
 * returned or was never called). NULL is accepted.
 */
LIBVMM_API void vm_destroy(struct vm *vm);

/**
 * The last error message for @vm, or for the calling thread's last failed
 * vm_create() when @vm is NULL. Never NULL; "" when there was none. Valid
 * until the next call on the same VM (or thread).
 */
LIBVMM_API const char *vm_last_error(const struct vm *vm);

/** A short name for an exit reason ("poweroff", "reset", ...). */
LIBVMM_API const char *vm_exit_reason_name(int reason);

/** The library version as "MAJOR.MINOR.PATCH". */
LIBVMM_API const char *vm_version(void);

#ifdef __cplusplus
}
#endif

#endif /* LIBVMM_LIBVMM_H */
