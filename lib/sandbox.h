/* Device sandbox: seccomp policy files, and the jail a device's child process enters. */
#ifndef LIBVMM_LIB_SANDBOX_H
#define LIBVMM_LIB_SANDBOX_H

#include <stdbool.h>
#include <sys/types.h>

#include "lib/err.h"

/* Namespaces a jailed process got (sandbox_enter()'s result). */
#define SANDBOX_NS_USER	 (1u << 0)
#define SANDBOX_NS_PID	 (1u << 1)
#define SANDBOX_NS_IPC	 (1u << 2)
#define SANDBOX_NS_NET	 (1u << 3)
#define SANDBOX_NS_MOUNT (1u << 4)
#define SANDBOX_NS_UTS	 (1u << 5)
/* Not a namespace: the process's root is an empty read-only tmpfs (pivot_root or chroot). */
#define SANDBOX_EMPTY_ROOT (1u << 6)

/* uid and gid a jailed process takes when libvmm runs as root and the config names none. */
#define SANDBOX_DEFAULT_ID 65534 /* nobody / nogroup */

/*
 * How to jail one device. Zero-initialise, then set fields.
 *
 * policy_dir: directory of the *.policy files; NULL means
 *   sandbox_default_policy_dir().
 * policy_name: the policy file without ".policy" ("virtio_blk"); NULL means
 *   the device's name with '-' turned into '_' (virtio-blk -> virtio_blk).
 * namespaces: put the process in new user (when not root), pid, ipc, net,
 *   mount and uts namespaces where the host allows them, and pivot into an
 *   empty root; those the host refuses are skipped with a message on the
 *   log fd. false: no namespaces and no new root (privileges are still
 *   dropped and the seccomp filter still loaded).
 * uid, gid: when libvmm runs as root, the ids the jailed process switches
 *   to; 0 means SANDBOX_DEFAULT_ID. Unused when not root (a user namespace
 *   maps the caller's ids).
 * log_fd: where the jailed process writes its messages (one line each);
 *   0 or negative means stderr. It stays open in the child.
 */
struct sandbox_config {
	const char *policy_dir;
	const char *policy_name;
	bool namespaces;
	uid_t uid;
	gid_t gid;
	int log_fd;
};

/*
 * Where the policies are installed: LIBVMM_POLICY_DIR from config.h
 * ($datadir/libvmm/policies), the directory a NULL policy_dir means.
 */
const char *sandbox_default_policy_dir(void);

/* A policy file parsed and compiled into a seccomp filter, not loaded yet. */
struct sandbox_policy;

/*
 * Read @dir/@name.policy (and the files it includes, from @dir; a NULL or
 * empty @dir means sandbox_default_policy_dir()) and compile it. The
 * grammar is in docs/sandbox.md: one rule per line, '#' comments,
 * "@include FILE", "NAME", "NAME: return ERRNO", and argument filters such
 * as "ioctl: arg1 == TUNSETOFFLOAD" or "mmap: arg2 & PROT_EXEC == 0",
 * alternatives joined by "||", conditions by "&&". Any other system call
 * ends the process (see sandbox_enter()).
 *
 * Returns 0 and sets *@out, or -errno with one line in @err: -ENOENT and
 * the errno of open() ("cannot open policy PATH: ..."), -EINVAL ("policy
 * PATH line N: ..." for bad syntax, an unknown system call or constant, an
 * include that is not a plain file name or nests more than 8 deep, or two
 * rules for one system call that contradict each other), -ENOTSUP (built
 * without libseccomp), -ENOMEM.
 */
int sandbox_policy_load(const char *dir, const char *name, struct sandbox_policy **out,
			struct vmm_err *err);

/* sandbox_policy_load_flags() flags. */
/* Forbidden calls kill the whole process at once (no listener, nothing reported). */
#define SANDBOX_POLICY_KILL (1u << 0)

/* sandbox_policy_load() with @flags (SANDBOX_POLICY_*). */
int sandbox_policy_load_flags(const char *dir, const char *name, unsigned int flags,
			      struct sandbox_policy **out, struct vmm_err *err);

/* sandbox_filter_load() flags. */
/* Every thread of the process (SECCOMP_FILTER_FLAG_TSYNC), not just the caller. */
#define SANDBOX_FILTER_ALL_THREADS (1u << 0)

/*
 * Confine the calling thread (threads it starts later inherit the filter)
 * with @pol: PR_SET_NO_NEW_PRIVS, then the filter. Filters stack: a call
 * must pass every filter the thread has. For a policy that reports
 * forbidden calls (the default) *@listener receives the thread's own
 * listener fd: a forbidden call blocks the thread until someone answers it
 * with sandbox_listener_deny(). With SANDBOX_FILTER_ALL_THREADS the
 * filter goes on every thread of the process at once; the policy must then
 * be SANDBOX_POLICY_KILL, and no thread may have a filter the caller does
 * not have (-EBUSY names it). Returns 0 or -errno with @err set.
 */
int sandbox_filter_load(const struct sandbox_policy *pol, unsigned int flags, int *listener,
			struct vmm_err *err);

/*
 * Read one report from a listener of sandbox_filter_load() and fail the
 * held call with EPERM, so that the thread goes on. Returns 1 with *@nr
 * set to the system call, 0 when the report vanished, or -errno.
 */
int sandbox_listener_deny(int fd, int *nr);

/* The path of the policy's main file. */
const char *sandbox_policy_path(const struct sandbox_policy *p);

/* Write the compiled filter as libseccomp's pseudo filter code to @fd (for debugging). */
int sandbox_policy_export(const struct sandbox_policy *p, int fd);

/* Free a policy (NULL is a no-op). */
void sandbox_policy_free(struct sandbox_policy *p);

/*
 * Jail the calling process: for a child fork()ed from the VMM, while it is
 * still single-threaded. @what names the device in messages. @parent is the
 * VMM's pid (getpid() before the fork). @keep[0..nkeep) are the descriptors
 * that stay open, besides the log fd; @report_fd (also kept) receives the
 * seccomp violation report below.
 *
 * In this order: PR_SET_PDEATHSIG(SIGKILL), then exit if the parent is
 * already gone; a new session; default signal dispositions (SIGPIPE
 * ignored) and an empty signal mask; every other descriptor closed; new
 * namespaces where allowed (see struct sandbox_config); with a new pid
 * namespace, a second fork: the calling process stays outside as a waiter
 * that drops its privileges and exits as the jailed process does (status or
 * signal), and the new process, pid 1 of the namespace, goes on; the mount
 * tree made private, a read-only empty tmpfs made the root (pivot_root, the
 * old root detached); all capabilities dropped (bounding, ambient,
 * inheritable, permitted, effective), and as root the ids switched to
 * cfg->uid/gid; PR_SET_NO_NEW_PRIVS, not dumpable; and last the seccomp
 * filter of @pol, so that threads started later inherit it.
 *
 * A system call the policy does not allow is held by the kernel
 * (SECCOMP_RET_USER_NOTIF) and reported on a listener fd, which this sends
 * to @report_fd in a SANDBOX_MSG_LISTENER message and closes: the receiver
 * (the VMM) reads the report with sandbox_listener_read() and kills the
 * process with SIGSYS. The jailed process never holds the listener. On a
 * kernel without user notification, such a call kills the process at once
 * (SECCOMP_RET_KILL_PROCESS: SIGSYS, unnamed).
 *
 * Returns the namespaces made (SANDBOX_NS_* and SANDBOX_EMPTY_ROOT) in the
 * jailed process. On failure it writes one line to the log fd, sends it in
 * a SANDBOX_MSG_FAIL message to @report_fd and _exit(1)s; it never returns
 * in the waiter.
 */
unsigned int sandbox_enter(const struct sandbox_config *cfg, const struct sandbox_policy *pol,
			   const char *what, pid_t parent, const int *keep, unsigned int nkeep,
			   int report_fd);

/* Messages sandbox_enter() sends to its report fd (SOCK_SEQPACKET or SOCK_DGRAM). */
#define SANDBOX_MSG_FAIL     0x4c494146u /* text: why the jail could not be made */
#define SANDBOX_MSG_LISTENER 0x4e54534cu /* one fd attached: the seccomp listener */
#define SANDBOX_MSG_TEXT     200
struct sandbox_msg {
	unsigned int type;
	char text[SANDBOX_MSG_TEXT]; /* NUL-terminated */
};

/*
 * Read one report from a seccomp listener fd received in a
 * SANDBOX_MSG_LISTENER message (poll it for POLLIN first). Returns 1 and
 * sets *@nr to the system call a jailed thread attempted (it stays blocked
 * until the process is killed), 0 when the report vanished (the thread was
 * killed meanwhile), or -errno (the fd is not a listener, or every process
 * of the filter is gone).
 */
int sandbox_listener_read(int fd, int *nr);

/*
 * The name of system call @nr on this architecture into @buf ("openat"),
 * or "#NR" when unknown. Returns @buf.
 */
const char *sandbox_syscall_name(int nr, char *buf, size_t len);

/*
 * Write "libvmm: @what sandbox: MESSAGE\n" to @fd in one write(2) (for the
 * jailed process: no allocation, no stdio).
 */
void sandbox_log(int fd, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
