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
};

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
 * Create a VM: open /dev/kvm, allocate guest memory, load the kernel and
 * initrd, build the boot tables, create the vCPUs and the legacy devices.
 *
 * @cfg:  the configuration; read during the call only.
 * @out:  receives the new VM on success.
 *
 * Returns 0, or a negative errno: -EINVAL for a bad config (zero or absurd
 * sizes), -ENOENT/-EACCES/-EISDIR for unusable files, -ENOEXEC for a kernel
 * that is neither an ELF64 vmlinux nor a bzImage, -E2BIG for a command line
 * or initrd that does not fit, -ENOMEM, -ENODEV when /dev/kvm is absent.
 * On failure nothing is left allocated and vm_last_error(NULL) describes the
 * problem in one line for the calling thread.
 *
 * Security: the kernel, initrd and all guest activity are untrusted; libvmm
 * checks every guest-supplied address and length.
 */
LIBVMM_API int vm_create(const struct vm_config *cfg, struct vm **out);

/**
 * Run the VM until the guest powers off or resets, vm_stop() is called, or
 * an error occurs. Blocks the calling thread; the vCPUs run in threads of
 * their own. May be called once per VM.
 *
 * Returns a non-negative enum vm_exit_reason, or a negative errno if the VM
 * could not be started (-EBUSY if it already ran).
 */
LIBVMM_API int vm_run(struct vm *vm);

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
