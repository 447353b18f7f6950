/* Proxy device: a virtio device model run in its own jailed child process. */
#ifndef LIBVMM_LIB_VIRTIO_PROXY_H
#define LIBVMM_LIB_VIRTIO_PROXY_H

#include <stddef.h>
#include <sys/types.h>

#include "lib/err.h"
#include "lib/memory.h"
#include "lib/sandbox.h"
#include "lib/virtio/virtio.h"

struct virtio_proxy;

/*
 * Most descriptors a device may keep in its child (ops->keep_fds()).
 */
#define VIRTIO_PROXY_MAX_FDS 64

/*
 * A reply the child owes is awaited this long; then the child is killed
 * (the VM sees it die) and the operation fails.
 */
#define VIRTIO_PROXY_REPLY_TIMEOUT_MS 30000

/*
 * Move the device model @dev (created, never activated) into a child
 * process jailed as @sb says (lib/sandbox.h), and replace *@dev with a
 * proxy device that forwards every op to it.
 *
 * Before forking, the policy is loaded and checked (a missing or malformed
 * file fails here, with its message in @err) and the device's descriptors
 * are collected with ops->keep_fds(). The child closes every other
 * descriptor (it keeps its two socket ends and the log fd), unmaps the
 * guest RAM and kvm_run pages of other VMs of this process, enters the jail
 * (sandbox_enter()) and serves requests: features, config_read,
 * config_write, activate (queue layouts as plain data, the kick and call
 * eventfds passed with SCM_RIGHTS; the child builds its own struct virtq on
 * @mem), reset, and exit. needs_reset() from the device comes back on a
 * second socket, where a thread of this process turns it into the
 * activation's callback. Queue notifications and interrupts go straight
 * between KVM and the child through the eventfds: nothing per request passes
 * through this process.
 *
 * @mem must be guest RAM shared with the child: a MAP_SHARED mapping (as
 * gm_init() makes), at the same address in both processes since the child
 * is forked; it must outlive the proxy. Every virtq of an activation must
 * use @mem.
 *
 * Returns 0 once the child reports its jail ready: *@dev is then the proxy
 * (ops->destroy() ends the child, waits for it, then calls the device's own
 * destroy() on this process's untouched copy to free it; no other op of that
 * copy is called) and *@handle refers to it, valid until that destroy().
 * Returns -errno with a message in @err otherwise, leaving *@dev as it was
 * (still the caller's): -EINVAL (no device or memory, keep_fds() failed or
 * named a closed fd), -E2BIG (more than VIRTIO_PROXY_MAX_FDS fds), the
 * policy errors of sandbox_policy_load(), -ENOTSUP (built without
 * libseccomp or libcap), -ENOSYS (no pidfd_open: Linux 5.3 or later is
 * needed), -ECHILD ("the child died while setting up its jail: ...", with
 * the jail's own message when it sent one), -ETIMEDOUT, -EPROTO (it
 * answered out of protocol), or the errno of socketpair() or fork().
 *
 * Thread safety: spawn() forks; call it from the thread that lives as long
 * as the VM (the child gets SIGKILL when the forking thread exits, as
 * PR_SET_PDEATHSIG works per thread). The proxy's ops may be called from any
 * thread: requests are serialised. A dead child makes every op fail
 * quickly: features() returns 0, config_read() zeros, config_write() and
 * reset() do nothing, activate() returns -EIO.
 *
 * Security: the child is untrusted: its replies are checked (length,
 * sequence number, value ranges) and a protocol error kills it. A system
 * call its policy does not allow is reported to this process, which kills
 * it with SIGSYS (see virtio_proxy_reap()).
 */
int virtio_proxy_spawn(struct virtio_device *dev, const struct guest_mem *mem,
		       const struct sandbox_config *sb, struct virtio_proxy **handle,
		       struct vmm_err *err);

/* The device process's pid (pid 1 of its own pid namespace when it has one). */
pid_t virtio_proxy_pid(const struct virtio_proxy *h);

/* The namespaces the device process got (SANDBOX_NS_*, SANDBOX_EMPTY_ROOT). */
unsigned int virtio_proxy_namespaces(const struct virtio_proxy *h);

/*
 * A descriptor (a pidfd) that polls readable once the child has exited,
 * whatever the cause. Owned by the proxy.
 */
int virtio_proxy_wait_fd(const struct virtio_proxy *h);

/*
 * Reap the child once virtio_proxy_wait_fd() is readable and describe in
 * @why (at most @len bytes, NUL-terminated) how it ended: "exited with
 * status N", "killed by signal SIGKILL", "killed by signal SIGSYS (seccomp
 * violation: syscall openat)", with " (no reply within N s)" when the proxy
 * killed it for not answering. Later ops fail cleanly. Returns 0, or
 * -EAGAIN while the child still runs. Calling it again repeats the
 * description.
 */
int virtio_proxy_reap(struct virtio_proxy *h, char *why, size_t len);

#endif
