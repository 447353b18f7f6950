/* Proxy device: forwards a virtio device's ops to the device running in a jailed child. */
#include "proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"

/* Config bytes moved per message; longer accesses are split. */
#define PX_CONFIG_CHUNK 256
/* How long a child has to die of SIGSYS after a seccomp violation before it gets SIGKILL. */
#define PX_SIGSYS_GRACE_MS 1000
/* How long destroy() lets the child finish (reset, flush, close) before killing it. */
#define PX_EXIT_TIMEOUT_MS 10000

/*
 * The protocol. Requests go parent -> child on the control socket, each
 * answered by one PX_REPLY with the same seq; PX_EXIT has no reply. The
 * child announces itself with PX_READY on the control socket (after the
 * jail's own SANDBOX_MSG_* messages) and sends PX_NEEDS_RESET on the event
 * socket at any time. Every message is one whole struct px_msg.
 */
enum px_type {
	PX_FEATURES = 1,
	PX_CONFIG_READ,
	PX_CONFIG_WRITE,
	PX_ACTIVATE,
	PX_RESET,
	PX_EXIT,
	PX_READY = 0x100,
	PX_REPLY,
	PX_NEEDS_RESET,
};

/* One queue of an activation: the driver's layout and the device-side indexes. */
struct px_queue {
	uint64_t desc, avail, used;
	uint16_t size, last_avail, used_idx, signalled_used;
	uint8_t present, event_idx, indirect, signalled_valid;
	uint8_t has_kick, has_call; /* fds follow in SCM_RIGHTS: kick then call, queue by queue */
};

struct px_msg {
	uint32_t type;
	uint32_t seq;
	union {
		struct {
			uint32_t off, len;
			uint8_t data[PX_CONFIG_CHUNK];
		} cfg; /* PX_CONFIG_READ (no data), PX_CONFIG_WRITE */
		struct {
			uint64_t features;
			uint32_t nqueues, gen;
			struct px_queue q[VIRTIO_MAX_QUEUES];
		} act; /* PX_ACTIVATE */
		struct {
			int32_t ret;
			uint32_t len;
			uint64_t value;
			uint8_t data[PX_CONFIG_CHUNK];
		} reply; /* PX_REPLY */
		struct {
			uint32_t ns;
		} ready; /* PX_READY */
		struct {
			uint32_t gen;
		} needs_reset; /* PX_NEEDS_RESET */
	} u;
};

#define PX_MAX_FDS (2 * VIRTIO_MAX_QUEUES)

/*
 * The parent's side. Locks: req_lock serialises requests on the control
 * socket; ev_lock guards the activation's callback, which the event thread
 * calls with ev_lock held (so after reset() returns it is not called for
 * the old activation); wait_lock guards reaping. Order: req_lock, ev_lock.
 */
struct virtio_proxy {
	struct virtio_device_ops ops; /* the device's, with the proxy's functions */
	struct virtio_device real;    /* this process's copy: destroyed last */
	const struct guest_mem *mem;
	char name[48];

	pid_t pid;     /* our child: the device, or the waiter outside its pid namespace */
	pid_t dev_pid; /* the device process */
	unsigned int ns;
	int pidfd;	  /* of pid */
	int dev_pidfd;	  /* of dev_pid when it is not pid (pid 1 of its namespace), else -1 */
	int ctl_fd;	  /* requests and replies */
	int ev_fd;	  /* needs_reset from the child */
	int listen_fd;	  /* the child's seccomp listener (the event thread's once started) */
	bool dead;	  /* atomic: the child is gone or was killed; ops fail at once */
	bool timed_out;	  /* atomic: killed for not answering */
	int violation_nr; /* atomic: system call the child was killed for, or -1 */

	pthread_mutex_t req_lock;
	uint32_t seq;

	pthread_mutex_t ev_lock;
	bool active;
	uint32_t gen;
	void (*needs_reset)(void *ctx);
	void *needs_reset_ctx;
	pthread_t ev_thread;
	bool ev_started;

	pthread_mutex_t wait_lock;
	bool reaped;
	int status;	/* from waitpid */
	int reap_errno; /* waitpid failed (someone else reaped the child) */
};

/* ---- Helpers ---- */

static int sys_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int sys_pidfd_send_signal(int pidfd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* poll() one fd until @deadline (ms, CLOCK_MONOTONIC); 1 ready, 0 timeout, -errno. */
static int poll_until(int fd, short events, int64_t deadline)
{
	struct pollfd pf = {.fd = fd, .events = events};
	int r;

	for (;;) {
		int64_t left = deadline - now_ms();

		if (left < 0)
			left = 0;
		r = poll(&pf, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (r > 0)
			return 1;
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

static bool is_dead(const struct virtio_proxy *p)
{
	return __atomic_load_n(&p->dead, __ATOMIC_ACQUIRE);
}

static void set_dead(struct virtio_proxy *p)
{
	__atomic_store_n(&p->dead, true, __ATOMIC_RELEASE);
}

/* Kill the child (the waiter takes the device down with it through PR_SET_PDEATHSIG). */
static void kill_child(struct virtio_proxy *p, int sig)
{
	if (p->pidfd >= 0)
		sys_pidfd_send_signal(p->pidfd, sig);
	set_dead(p);
}

/* Send one message with @fds attached. Returns 0 or -errno. */
static int send_msg(int sock, const struct px_msg *m, const int *fds, unsigned int nfds)
{
	struct iovec iov = {(void *)m, sizeof(*m)};
	union {
		char buf[CMSG_SPACE(sizeof(int) * PX_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t r;

	if (nfds) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	do {
		r = sendmsg(sock, &mh, MSG_NOSIGNAL);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == (ssize_t)sizeof(*m) ? 0 : -EIO;
}

/* ---- The child ---- */

struct px_child {
	struct virtio_device dev;
	const struct guest_mem *mem;
	int ctl, ev;
	uint32_t gen; /* atomic: activation the device's needs_reset belongs to */
	bool active;
	struct virtq vq[VIRTIO_MAX_QUEUES];
	struct virtio_activation act;
	int fds[PX_MAX_FDS]; /* received with the activation, closed at reset */
	unsigned int nfds;
};

static void child_needs_reset(void *ctx)
{
	struct px_child *c = ctx;
	struct px_msg m;

	memset(&m, 0, sizeof(m));
	m.type = PX_NEEDS_RESET;
	m.u.needs_reset.gen = __atomic_load_n(&c->gen, __ATOMIC_ACQUIRE);
	/* From a device thread: never block. */
	while (send(c->ev, &m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR)
		;
}

static void child_close_fds(struct px_child *c)
{
	for (unsigned int i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	c->nfds = 0;
}

static void child_reset(struct px_child *c)
{
	if (!c->active)
		return;
	c->dev.ops->reset(c->dev.dev);
	child_close_fds(c);
	memset(&c->act, 0, sizeof(c->act));
	c->active = false;
}

/* Build the activation the device sees from @m and the fds received with it. */
static int child_activate(struct px_child *c, const struct px_msg *m, const int *fds,
			  unsigned int nfds)
{
	struct virtio_activation *act = &c->act;
	unsigned int want = 0, next = 0;
	int ret;

	if (c->active) {
		for (unsigned int i = 0; i < nfds; i++)
			close(fds[i]);
		return -EBUSY;
	}
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++)
		want += !!m->u.act.q[i].has_kick + !!m->u.act.q[i].has_call;
	memcpy(c->fds, fds, sizeof(int) * nfds);
	c->nfds = nfds;
	if (want != nfds || m->u.act.nqueues > VIRTIO_MAX_QUEUES) {
		child_close_fds(c);
		return -EINVAL;
	}
	memset(act, 0, sizeof(*act));
	act->features = m->u.act.features;
	act->nqueues = m->u.act.nqueues;
	act->needs_reset = child_needs_reset;
	act->ctx = c;
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		const struct px_queue *pq = &m->u.act.q[i];
		struct virtq *vq = &c->vq[i];

		act->kick_fd[i] = pq->has_kick ? c->fds[next++] : -1;
		act->call_fd[i] = pq->has_call ? c->fds[next++] : -1;
		if (!pq->present)
			continue;
		memset(vq, 0, sizeof(*vq));
		vq->size = pq->size;
		vq->desc_gpa = pq->desc;
		vq->avail_gpa = pq->avail;
		vq->used_gpa = pq->used;
		vq->event_idx = pq->event_idx;
		vq->indirect = pq->indirect;
		vq->mem = c->mem;
		if (virtq_start(vq) != 0) {
			child_close_fds(c);
			return -EINVAL;
		}
		/* The parent's queue may not start at index 0 (tests move the indexes). */
		vq->last_avail = pq->last_avail;
		vq->used_idx = pq->used_idx;
		vq->signalled_used = pq->signalled_used;
		vq->signalled_valid = pq->signalled_valid;
		act->queues[i] = vq;
	}
	__atomic_store_n(&c->gen, m->u.act.gen, __ATOMIC_RELEASE);
	ret = c->dev.ops->activate(c->dev.dev, act);
	if (ret) {
		child_close_fds(c);
		return ret;
	}
	c->active = true;
	return 0;
}

static void child_reply(struct px_child *c, struct px_msg *r, uint32_t seq)
{
	r->type = PX_REPLY;
	r->seq = seq;
	send_msg(c->ctl, r, NULL, 0);
}

/* Answer requests until PX_EXIT or the parent goes away; then reset, destroy, exit. */
static void __attribute__((noreturn)) child_serve(struct px_child *c)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * PX_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct px_msg m, r;

	for (;;) {
		struct iovec iov = {&m, sizeof(m)};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		int fds[PX_MAX_FDS];
		unsigned int nfds = 0;
		struct cmsghdr *cm;
		ssize_t n;

		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		n = recvmsg(c->ctl, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; (i + 1) * sizeof(int) <= cm->cmsg_len - CMSG_LEN(0);
			     i++) {
				int fd;

				memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				if (nfds < PX_MAX_FDS)
					fds[nfds++] = fd;
				else
					close(fd);
			}
		}
		if (n != (ssize_t)sizeof(m) || (m.type != PX_ACTIVATE && nfds)) {
			for (unsigned int i = 0; i < nfds; i++)
				close(fds[i]);
			break; /* the parent does not send these */
		}
		memset(&r, 0, sizeof(r));
		switch (m.type) {
		case PX_FEATURES:
			r.u.reply.value = c->dev.ops->features(c->dev.dev);
			break;
		case PX_CONFIG_READ:
		case PX_CONFIG_WRITE:
			if (m.u.cfg.len > PX_CONFIG_CHUNK ||
			    m.u.cfg.off > c->dev.ops->config_size ||
			    m.u.cfg.len > c->dev.ops->config_size - m.u.cfg.off) {
				r.u.reply.ret = -EINVAL;
				break;
			}
			if (m.type == PX_CONFIG_WRITE) {
				c->dev.ops->config_write(c->dev.dev, m.u.cfg.off, m.u.cfg.data,
							 m.u.cfg.len);
				break;
			}
			c->dev.ops->config_read(c->dev.dev, m.u.cfg.off, r.u.reply.data,
						m.u.cfg.len);
			r.u.reply.len = m.u.cfg.len;
			break;
		case PX_ACTIVATE:
			r.u.reply.ret = child_activate(c, &m, fds, nfds);
			break;
		case PX_RESET:
			child_reset(c);
			break;
		case PX_EXIT:
			goto out;
		default:
			r.u.reply.ret = -EINVAL;
			break;
		}
		child_reply(c, &r, m.seq);
	}
out:
	child_reset(c);
	c->dev.ops->destroy(c->dev.dev);
	_exit(0);
}

/* Whether [lo, hi) lies in the host range of one of @mem's regions. */
static bool in_guest_ram(const struct guest_mem *mem, uintptr_t lo, uintptr_t hi)
{
	for (unsigned int i = 0; i < mem->nregions; i++) {
		uintptr_t r = (uintptr_t)mem->regions[i].host;

		if (lo >= r && hi <= r + mem->regions[i].size)
			return true;
	}
	return lo >= (uintptr_t)mem->base && hi <= (uintptr_t)mem->base + mem->total;
}

/*
 * Several VMs may share the VMM process: unmap what the others left in our
 * copy of its address space, their guest RAM (libvmm's memfd mappings
 * outside @mem) and their vCPUs' kvm_run pages. Before the jail (it reads
 * /proc/self/maps); best effort.
 */
static void child_unmap_foreign(const struct guest_mem *mem)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap), *line;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (!buf || fd < 0)
		goto out;
	for (;;) {
		if (len + 1 == cap) {
			char *b = realloc(buf, cap * 2);

			if (!b)
				goto out;
			buf = b;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = 0;
	for (line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		unsigned long lo, hi;
		char *eol = strchr(line, '\n'), *path;

		if (eol)
			*eol = 0;
		path = strchr(line, '/');
		if (!path)
			path = strstr(line, "anon_inode:");
		if (eol)
			*eol = '\n';
		if (!path || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		if (!strncmp(path, "anon_inode:kvm-vcpu", 19) ||
		    (!strncmp(path, "/memfd:libvmm-ram", 17) && !in_guest_ram(mem, lo, hi)))
			munmap((void *)lo, hi - lo);
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
}

/* In the forked child: enter the jail, announce readiness, serve. */
static void __attribute__((noreturn))
child_main(const struct virtio_device *dev, const struct guest_mem *mem,
	   const struct sandbox_config *sb, const struct sandbox_policy *pol, const char *name,
	   pid_t parent, const int *devfds, unsigned int ndevfds, int ctl, int ev)
{
	int keep[VIRTIO_PROXY_MAX_FDS + 2];
	struct px_child c;
	struct px_msg m;
	unsigned int ns;

	memcpy(keep, devfds, sizeof(int) * ndevfds);
	keep[ndevfds] = ctl;
	keep[ndevfds + 1] = ev;
	child_unmap_foreign(mem);
	ns = sandbox_enter(sb, pol, name, parent, keep, ndevfds + 2, ctl);

	memset(&c, 0, sizeof(c));
	c.dev = *dev;
	c.mem = mem;
	c.ctl = ctl;
	c.ev = ev;
	memset(&m, 0, sizeof(m));
	m.type = PX_READY;
	m.u.ready.ns = ns;
	if (send_msg(ctl, &m, NULL, 0) < 0)
		_exit(1);
	child_serve(&c);
}

/* ---- The parent: requests ---- */

/*
 * Send @req (with @fds) and wait for its reply into @rep (req_lock held).
 * Returns 0, or -EIO when the child is gone, did not answer in time (it is
 * killed) or answered out of protocol (it is killed).
 */
static int px_call(struct virtio_proxy *p, struct px_msg *req, const int *fds, unsigned int nfds,
		   struct px_msg *rep)
{
	int64_t deadline;
	int r;

	if (is_dead(p))
		return -EIO;
	req->seq = ++p->seq;
	if (send_msg(p->ctl_fd, req, fds, nfds) < 0) {
		set_dead(p);
		return -EIO;
	}
	if (req->type == PX_EXIT)
		return 0;
	deadline = now_ms() + VIRTIO_PROXY_REPLY_TIMEOUT_MS;
	for (;;) {
		ssize_t n;

		r = poll_until(p->ctl_fd, POLLIN, deadline);
		if (r == 0) {
			__atomic_store_n(&p->timed_out, true, __ATOMIC_RELEASE);
			kill_child(p, SIGKILL);
			return -EIO;
		}
		if (r < 0) {
			set_dead(p);
			return -EIO;
		}
		/* No control buffer: descriptors the child might attach are closed by the kernel.
		 */
		n = recv(p->ctl_fd, rep, sizeof(*rep), MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			set_dead(p);
			return -EIO;
		}
		if (n != (ssize_t)sizeof(*rep) || rep->type != PX_REPLY || rep->seq != req->seq) {
			kill_child(p, SIGKILL);
			return -EIO;
		}
		return 0;
	}
}

static struct virtio_proxy *to_proxy(void *dev)
{
	return dev;
}

static uint64_t px_features(void *dev)
{
	struct virtio_proxy *p = to_proxy(dev);
	struct px_msg req, rep;
	uint64_t v = 0;

	memset(&req, 0, sizeof(req));
	req.type = PX_FEATURES;
	pthread_mutex_lock(&p->req_lock);
	if (px_call(p, &req, NULL, 0, &rep) == 0)
		v = rep.u.reply.value;
	pthread_mutex_unlock(&p->req_lock);
	return v;
}

/*
 * Device config access in PX_CONFIG_CHUNK pieces: into @rd (a read) or from
 * @wr (a write). Returns how many bytes were done before a failure.
 */
static uint32_t px_config_xfer(struct virtio_proxy *p, uint32_t off, uint8_t *rd, const uint8_t *wr,
			       uint32_t len)
{
	struct px_msg req, rep;
	uint32_t done = 0;

	pthread_mutex_lock(&p->req_lock);
	while (done < len) {
		uint32_t n = len - done < PX_CONFIG_CHUNK ? len - done : PX_CONFIG_CHUNK;

		memset(&req, 0, sizeof(req));
		req.type = rd ? PX_CONFIG_READ : PX_CONFIG_WRITE;
		req.u.cfg.off = off + done;
		req.u.cfg.len = n;
		if (wr)
			memcpy(req.u.cfg.data, wr + done, n);
		if (px_call(p, &req, NULL, 0, &rep))
			break;
		if (rd) {
			if (rep.u.reply.ret || rep.u.reply.len != n)
				break;
			memcpy(rd + done, rep.u.reply.data, n);
		}
		done += n;
	}
	pthread_mutex_unlock(&p->req_lock);
	return done;
}

static void px_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	uint32_t done = px_config_xfer(to_proxy(dev), off, data, NULL, len);

	if (done < len)
		memset(data + done, 0, len - done);
}

static void px_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
	px_config_xfer(to_proxy(dev), off, NULL, data, len);
}

static int px_activate(void *dev, const struct virtio_activation *act)
{
	struct virtio_proxy *p = to_proxy(dev);
	struct px_msg req, rep;
	int fds[PX_MAX_FDS];
	unsigned int nfds = 0;
	int ret;

	if (act->nqueues > VIRTIO_MAX_QUEUES)
		return -EINVAL;
	memset(&req, 0, sizeof(req));
	req.type = PX_ACTIVATE;
	req.u.act.features = act->features;
	req.u.act.nqueues = act->nqueues;
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		const struct virtq *q = act->queues[i];
		struct px_queue *pq = &req.u.act.q[i];

		if (i < act->nqueues && act->kick_fd[i] >= 0) {
			pq->has_kick = 1;
			fds[nfds++] = act->kick_fd[i];
		}
		if (i < act->nqueues && act->call_fd[i] >= 0) {
			pq->has_call = 1;
			fds[nfds++] = act->call_fd[i];
		}
		if (i >= act->nqueues || !q)
			continue;
		/* The child has only the guest RAM it was given. */
		if (q->mem != p->mem)
			return -EINVAL;
		pq->present = 1;
		pq->size = q->size;
		pq->desc = q->desc_gpa;
		pq->avail = q->avail_gpa;
		pq->used = q->used_gpa;
		pq->event_idx = q->event_idx;
		pq->indirect = q->indirect;
		pq->last_avail = q->last_avail;
		pq->used_idx = q->used_idx;
		pq->signalled_used = q->signalled_used;
		pq->signalled_valid = q->signalled_valid;
	}

	pthread_mutex_lock(&p->req_lock);
	pthread_mutex_lock(&p->ev_lock);
	/* Armed before the child runs, so that an early needs_reset is not lost. */
	req.u.act.gen = ++p->gen;
	p->needs_reset = act->needs_reset;
	p->needs_reset_ctx = act->ctx;
	p->active = true;
	pthread_mutex_unlock(&p->ev_lock);
	ret = px_call(p, &req, fds, nfds, &rep);
	if (ret == 0) {
		ret = rep.u.reply.ret;
		/* The child is untrusted: only 0 or a plausible -errno. */
		if (ret > 0 || ret < -4095)
			ret = -EIO;
	}
	if (ret) {
		pthread_mutex_lock(&p->ev_lock);
		p->active = false;
		pthread_mutex_unlock(&p->ev_lock);
	}
	pthread_mutex_unlock(&p->req_lock);
	return ret;
}

static void px_reset(void *dev)
{
	struct virtio_proxy *p = to_proxy(dev);
	struct px_msg req, rep;

	memset(&req, 0, sizeof(req));
	req.type = PX_RESET;
	pthread_mutex_lock(&p->req_lock);
	px_call(p, &req, NULL, 0, &rep);
	pthread_mutex_lock(&p->ev_lock);
	p->active = false;
	p->needs_reset = NULL;
	p->needs_reset_ctx = NULL;
	pthread_mutex_unlock(&p->ev_lock);
	pthread_mutex_unlock(&p->req_lock);
}

/* ---- The parent: the child's end ---- */

static void record_wait(struct virtio_proxy *p, pid_t r, int status, int e)
{
	p->reaped = true;
	if (r == p->pid) {
		p->status = status;
		p->reap_errno = 0;
	} else {
		p->reap_errno = e ? e : ECHILD;
	}
	set_dead(p);
}

/* Block until the child is reaped (wait_lock held). */
static void reap_blocking(struct virtio_proxy *p)
{
	int status = 0;
	pid_t r;

	if (p->reaped)
		return;
	do {
		r = waitpid(p->pid, &status, 0);
	} while (r < 0 && errno == EINTR);
	record_wait(p, r, status, errno);
}

static void describe(struct virtio_proxy *p, char *why, size_t len)
{
	int nr = __atomic_load_n(&p->violation_nr, __ATOMIC_ACQUIRE);
	bool timed_out = __atomic_load_n(&p->timed_out, __ATOMIC_ACQUIRE);
	char call[64] = "", sig[32];
	int sig_no, n;

	if (!len)
		return;
	if (nr >= 0)
		sandbox_syscall_name(nr, call, sizeof(call));
	if (p->reap_errno) {
		snprintf(why, len, "exited (status unknown: %s)", strerror(p->reap_errno));
		return;
	}
	if (WIFEXITED(p->status)) {
		snprintf(why, len, "exited with status %d", WEXITSTATUS(p->status));
		return;
	}
	sig_no = WTERMSIG(p->status);
	if (sigabbrev_np(sig_no))
		snprintf(sig, sizeof(sig), "SIG%s", sigabbrev_np(sig_no));
	else
		snprintf(sig, sizeof(sig), "%d", sig_no);
	n = snprintf(why, len, "killed by signal %s", sig);
	if (n < 0 || (size_t)n >= len)
		return;
	if (sig_no == SIGSYS && nr >= 0)
		n += snprintf(why + n, len - (size_t)n, " (seccomp violation: syscall %s)", call);
	else if (sig_no == SIGSYS)
		n += snprintf(why + n, len - (size_t)n, " (seccomp violation)");
	else if (nr >= 0)
		n += snprintf(why + n, len - (size_t)n, " (after a seccomp violation: syscall %s)",
			      call);
	if (n >= 0 && (size_t)n < len && timed_out)
		snprintf(why + n, len - (size_t)n, " (no reply within %d s)",
			 VIRTIO_PROXY_REPLY_TIMEOUT_MS / 1000);
}

int virtio_proxy_reap(struct virtio_proxy *p, char *why, size_t len)
{
	pthread_mutex_lock(&p->wait_lock);
	if (!p->reaped) {
		int status = 0;
		pid_t r;

		do {
			r = waitpid(p->pid, &status, WNOHANG);
		} while (r < 0 && errno == EINTR);
		if (r == 0) {
			pthread_mutex_unlock(&p->wait_lock);
			if (len)
				snprintf(why, len, "still running");
			return -EAGAIN;
		}
		record_wait(p, r, status, errno);
	}
	describe(p, why, len);
	pthread_mutex_unlock(&p->wait_lock);
	return 0;
}

pid_t virtio_proxy_pid(const struct virtio_proxy *p)
{
	return p->dev_pid;
}

unsigned int virtio_proxy_namespaces(const struct virtio_proxy *p)
{
	return p->ns;
}

int virtio_proxy_wait_fd(const struct virtio_proxy *p)
{
	return p->pidfd;
}

/*
 * A forbidden system call (the calling thread is held by the kernel):
 * remember it and kill the child with SIGSYS, as SECCOMP_RET_KILL_PROCESS
 * would. Behind a waiter, the device (pid 1 of its namespace, which ignores
 * signals it has no handler for unless they are SIGKILL) gets SIGKILL.
 */
static void on_violation(struct virtio_proxy *p, int nr)
{
	int none = -1;

	__atomic_compare_exchange_n(&p->violation_nr, &none, nr, false, __ATOMIC_ACQ_REL,
				    __ATOMIC_ACQUIRE);
	kill_child(p, SIGSYS);
	if (p->dev_pidfd >= 0)
		sys_pidfd_send_signal(p->dev_pidfd, SIGKILL);
	/*
	 * SIGSYS stays pending while every thread blocks it (a device thread
	 * being started with all signals blocked, say): then SIGKILL.
	 */
	if (poll_until(p->pidfd, POLLIN, now_ms() + PX_SIGSYS_GRACE_MS) == 0)
		sys_pidfd_send_signal(p->pidfd, SIGKILL);
}

/* Read the listener; false when it is finished with (closed). */
static bool listener_event(struct virtio_proxy *p, int fd, short revents)
{
	int nr = -1, r;

	if (!(revents & POLLIN))
		return false;
	r = sandbox_listener_read(fd, &nr);
	if (r == 1)
		on_violation(p, nr);
	return r >= 0;
}

/* The event thread: needs_reset from the child, and its seccomp reports. */
static void *ev_main(void *arg)
{
	struct virtio_proxy *p = arg;
	struct px_msg m;

	for (;;) {
		struct pollfd pf[2] = {{.fd = p->ev_fd, .events = POLLIN},
				       {.fd = p->listen_fd, .events = POLLIN}};
		nfds_t n = p->listen_fd >= 0 ? 2 : 1;
		ssize_t r;

		if (poll(pf, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (n == 2 && pf[1].revents && !listener_event(p, p->listen_fd, pf[1].revents)) {
			close(p->listen_fd);
			p->listen_fd = -1;
		}
		if (!pf[0].revents)
			continue;
		r = recv(p->ev_fd, &m, sizeof(m), MSG_DONTWAIT);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0)
			break;
		if (r != (ssize_t)sizeof(m) || m.type != PX_NEEDS_RESET)
			continue; /* the child is untrusted; nothing else is expected here */
		pthread_mutex_lock(&p->ev_lock);
		if (p->active && m.u.needs_reset.gen == p->gen && p->needs_reset)
			p->needs_reset(p->needs_reset_ctx);
		pthread_mutex_unlock(&p->ev_lock);
	}
	return NULL;
}

static void px_destroy(void *dev)
{
	struct virtio_proxy *p = to_proxy(dev);
	struct px_msg req;

	if (!p)
		return;
	memset(&req, 0, sizeof(req));
	req.type = PX_EXIT;
	pthread_mutex_lock(&p->req_lock);
	px_call(p, &req, NULL, 0, NULL);
	set_dead(p);
	pthread_mutex_unlock(&p->req_lock);

	pthread_mutex_lock(&p->wait_lock);
	if (!p->reaped && poll_until(p->pidfd, POLLIN, now_ms() + PX_EXIT_TIMEOUT_MS) <= 0)
		sys_pidfd_send_signal(p->pidfd, SIGKILL);
	reap_blocking(p);
	pthread_mutex_unlock(&p->wait_lock);

	/* Our own end: the thread sees EOF even if a stray fork still holds the child's. */
	shutdown(p->ev_fd, SHUT_RDWR);
	if (p->ev_started)
		pthread_join(p->ev_thread, NULL);
	if (p->listen_fd >= 0)
		close(p->listen_fd);
	close(p->ev_fd);
	close(p->ctl_fd);
	close(p->pidfd);
	if (p->dev_pidfd >= 0)
		close(p->dev_pidfd);
	/* Nothing ran on this copy since the fork: freeing it touches no shared state. */
	p->real.ops->destroy(p->real.dev);
	pthread_mutex_destroy(&p->req_lock);
	pthread_mutex_destroy(&p->ev_lock);
	pthread_mutex_destroy(&p->wait_lock);
	free(p);
}

/* ---- Spawning ---- */

/*
 * Wait for PX_READY, taking the jail's listener and failure text on the
 * way. Returns 0, or -errno with the child killed and reaped and @err set.
 */
static int handshake(struct virtio_proxy *p, struct vmm_err *err)
{
	int64_t deadline = now_ms() + VIRTIO_PROXY_REPLY_TIMEOUT_MS;
	char fail_text[SANDBOX_MSG_TEXT] = "", why[160];
	union {
		struct px_msg px;
		struct sandbox_msg sb;
	} m;
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} u;
	int ret = -ECHILD, one = 0;

	for (;;) {
		struct pollfd pf[2] = {{.fd = p->ctl_fd, .events = POLLIN},
				       {.fd = p->listen_fd, .events = POLLIN}};
		struct iovec iov = {&m, sizeof(m)};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		struct ucred cred = {0};
		bool have_cred = false;
		int fds[4], nfds = 0;
		int64_t left = deadline - now_ms();
		ssize_t n;

		if (left <= 0) {
			ret = -ETIMEDOUT;
			kill_child(p, SIGKILL);
			break;
		}
		if (poll(pf, p->listen_fd >= 0 ? 2 : 1, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			kill_child(p, SIGKILL);
			break;
		}
		if (p->listen_fd >= 0 && pf[1].revents &&
		    !listener_event(p, p->listen_fd, pf[1].revents)) {
			close(p->listen_fd);
			p->listen_fd = -1;
		}
		if (!pf[0].revents)
			continue;
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		n = recvmsg(p->ctl_fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET)
				continue;
			if (c->cmsg_type == SCM_CREDENTIALS &&
			    c->cmsg_len >= CMSG_LEN(sizeof(cred))) {
				memcpy(&cred, CMSG_DATA(c), sizeof(cred));
				have_cred = true;
			} else if (c->cmsg_type == SCM_RIGHTS) {
				for (size_t i = 0;
				     (i + 1) * sizeof(int) <= c->cmsg_len - CMSG_LEN(0); i++) {
					int fd;

					memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
					if (nfds < 4)
						fds[nfds++] = fd;
					else
						close(fd);
				}
			}
		}
		if (n == (ssize_t)sizeof(m.sb) && m.sb.type == SANDBOX_MSG_LISTENER && nfds == 1 &&
		    p->listen_fd < 0) {
			p->listen_fd = fds[0];
			continue;
		}
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		if (n <= 0) {
			/* EOF: the child is exiting; anything else, make sure it does. */
			if (n < 0 ||
			    poll_until(p->pidfd, POLLIN, now_ms() + PX_EXIT_TIMEOUT_MS) <= 0)
				kill_child(p, SIGKILL);
			ret = -ECHILD;
			break;
		}
		if (n == (ssize_t)sizeof(m.sb) && m.sb.type == SANDBOX_MSG_FAIL) {
			m.sb.text[sizeof(m.sb.text) - 1] = 0;
			snprintf(fail_text, sizeof(fail_text), "%s", m.sb.text);
			continue;
		}
		if (n == (ssize_t)sizeof(m.px) && m.px.type == PX_READY && have_cred &&
		    cred.pid > 0) {
			p->dev_pid = cred.pid;
			p->ns = m.px.u.ready.ns;
			/* Behind a waiter: a handle on the device process itself. */
			if (p->dev_pid != p->pid)
				p->dev_pidfd = sys_pidfd_open(p->dev_pid);
			setsockopt(p->ctl_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
			return 0;
		}
		ret = -EPROTO;
		kill_child(p, SIGKILL);
		break;
	}
	pthread_mutex_lock(&p->wait_lock);
	reap_blocking(p);
	describe(p, why, sizeof(why));
	pthread_mutex_unlock(&p->wait_lock);
	if (ret == -ETIMEDOUT)
		return err_set(err, ETIMEDOUT, "%s: the sandboxed child was not ready within %d s",
			       p->name, VIRTIO_PROXY_REPLY_TIMEOUT_MS / 1000);
	if (fail_text[0])
		return err_set(err, ECHILD, "%s: cannot sandbox the device: %s", p->name,
			       fail_text);
	return err_set(err, -ret == EPROTO ? EPROTO : ECHILD,
		       "%s: the sandboxed child died while setting up its jail: %s", p->name, why);
}

/* The policy named after the device: "virtio-blk" -> "virtio_blk". */
static void default_policy_name(const char *dev_name, char *out, size_t len)
{
	size_t i;

	for (i = 0; dev_name[i] && i + 1 < len; i++)
		out[i] = dev_name[i] == '-' ? '_' : dev_name[i];
	out[i] = 0;
}

/* The device's descriptors, checked to be open. Returns how many, or -errno with @err set. */
static int collect_fds(const struct virtio_device *dev, const char *name, int *fds,
		       struct vmm_err *err)
{
	int n;

	if (!dev->ops->keep_fds)
		return 0;
	n = dev->ops->keep_fds(dev->dev, fds, VIRTIO_PROXY_MAX_FDS);
	if (n < 0)
		return err_set(err, -n, "%s: cannot list the descriptors it needs: %s", name,
			       strerror(-n));
	if (n > VIRTIO_PROXY_MAX_FDS)
		return err_set(err, E2BIG, "%s: needs %d descriptors, the sandbox keeps at most %d",
			       name, n, VIRTIO_PROXY_MAX_FDS);
	for (int i = 0; i < n; i++)
		if (fds[i] < 0 || fcntl(fds[i], F_GETFD) < 0)
			return err_set(err, EINVAL, "%s: keeps descriptor %d, which is not open",
				       name, fds[i]);
	return n;
}

int virtio_proxy_spawn(struct virtio_device *dev, const struct guest_mem *mem,
		       const struct sandbox_config *sb, struct virtio_proxy **handle,
		       struct vmm_err *err)
{
	int devfds[VIRTIO_PROXY_MAX_FDS];
	struct sandbox_policy *pol = NULL;
	struct virtio_proxy *p;
	char pname[64];
	const char *name;
	int ctl[2] = {-1, -1}, ev[2] = {-1, -1};
	int ndevfds, ret, one = 1, e;
	sigset_t all, old;
	pid_t parent;

	if (!dev || !dev->ops || !mem || !sb || !handle)
		return err_set(err, EINVAL, "virtio proxy: no device, guest memory or sandbox");
	name = dev->ops->name ? dev->ops->name : "virtio device";
	if (!HAVE_LIBCAP)
		return err_set(err, ENOTSUP, "%s: libvmm was built without libcap: no sandbox",
			       name);
	if (sb->policy_name)
		snprintf(pname, sizeof(pname), "%s", sb->policy_name);
	else
		default_policy_name(name, pname, sizeof(pname));
	ret = sandbox_policy_load(sb->policy_dir, pname, &pol, err);
	if (ret)
		return ret;
	ndevfds = collect_fds(dev, name, devfds, err);
	if (ndevfds < 0) {
		sandbox_policy_free(pol);
		return ndevfds;
	}

	p = calloc(1, sizeof(*p));
	if (!p) {
		sandbox_policy_free(pol);
		return err_set(err, ENOMEM, "%s: out of memory", name);
	}
	p->real = *dev;
	p->mem = mem;
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->ops = *dev->ops;
	p->ops.features = px_features;
	p->ops.config_read = px_config_read;
	p->ops.config_write = px_config_write;
	p->ops.activate = px_activate;
	p->ops.reset = px_reset;
	p->ops.destroy = px_destroy;
	p->ops.keep_fds = NULL;
	p->pidfd = p->dev_pidfd = p->ctl_fd = p->ev_fd = p->listen_fd = -1;
	p->violation_nr = -1;
	pthread_mutex_init(&p->req_lock, NULL);
	pthread_mutex_init(&p->ev_lock, NULL);
	pthread_mutex_init(&p->wait_lock, NULL);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ev) < 0) {
		ret = err_set(err, errno, "%s: socketpair: %s", name, strerror(errno));
		goto fail;
	}
	/* READY carries the device process's pid, as seen from here. */
	if (setsockopt(ctl[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
		ret = err_set(err, errno, "%s: SO_PASSCRED: %s", name, strerror(errno));
		goto fail;
	}
	parent = getpid();
	p->pid = fork();
	if (p->pid == 0)
		child_main(dev, mem, sb, pol, name, parent, devfds, (unsigned int)ndevfds, ctl[1],
			   ev[1]);
	e = errno;
	close(ctl[1]);
	close(ev[1]);
	ctl[1] = ev[1] = -1;
	p->ctl_fd = ctl[0];
	p->ev_fd = ev[0];
	ctl[0] = ev[0] = -1;
	if (p->pid < 0) {
		ret = err_set(err, e, "%s: fork: %s", name, strerror(e));
		goto fail;
	}
	p->pidfd = sys_pidfd_open(p->pid);
	if (p->pidfd < 0) {
		e = errno;
		kill(p->pid, SIGKILL);
		while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
			;
		ret = err_set(err, e, "%s: pidfd_open: %s (the sandbox needs Linux 5.3 or later)",
			      name, strerror(e));
		goto fail;
	}
	ret = handshake(p, err);
	if (ret)
		goto fail;
	sandbox_policy_free(pol);
	pol = NULL;

	/* The event thread takes no signals: they belong to the vCPU and main threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&p->ev_thread, NULL, ev_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		/* The child is ready; end it through destroy, but keep the caller's device. */
		err_set(err, ret, "%s: cannot start the proxy thread: %s", name, strerror(ret));
		kill_child(p, SIGKILL);
		pthread_mutex_lock(&p->wait_lock);
		reap_blocking(p);
		pthread_mutex_unlock(&p->wait_lock);
		ret = -ret;
		goto fail;
	}
	p->ev_started = true;
	pthread_setname_np(p->ev_thread, "virtio-proxy");

	dev->ops = &p->ops;
	dev->dev = p;
	*handle = p;
	return 0;

fail:
	for (int i = 0; i < 2; i++) {
		if (ctl[i] >= 0)
			close(ctl[i]);
		if (ev[i] >= 0)
			close(ev[i]);
	}
	if (p->listen_fd >= 0)
		close(p->listen_fd);
	if (p->ctl_fd >= 0)
		close(p->ctl_fd);
	if (p->ev_fd >= 0)
		close(p->ev_fd);
	if (p->pidfd >= 0)
		close(p->pidfd);
	if (p->dev_pidfd >= 0)
		close(p->dev_pidfd);
	pthread_mutex_destroy(&p->req_lock);
	pthread_mutex_destroy(&p->ev_lock);
	pthread_mutex_destroy(&p->wait_lock);
	free(p);
	sandbox_policy_free(pol);
	return ret;
}
