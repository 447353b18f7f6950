/* Control socket: version-1 wire format, a non-blocking SEQPACKET server, and the client. */
#include "control.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SUN_PATH_MAX	sizeof(((struct sockaddr_un *)0)->sun_path)
#define HEADER_SIZE	8 /* magic, version, command: the same in every version */
#define BALLOON_UNIT	4096ull
#define BALLOON_MAX	(1ull << 44) /* 2^32 pages of 4 KiB: the device's num_pages limit */
#define MSGS_PER_WAKEUP 16	     /* messages read from one client before serving others */
#define ACCEPT_RETRY_MS 100	     /* pause accepting this long when out of fds or memory */

/* epoll data: the listening socket, the accept-retry timer, then client slots. */
enum { EV_LISTEN, EV_TIMER, EV_CLIENT0 };

/* ---- Wire format ---- */

static void put16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return le16toh(v);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

int control_encode_request(const struct control_request *req, uint8_t *buf, size_t len)
{
	if (len < CONTROL_REQUEST_SIZE)
		return -EINVAL;
	put32(buf, CONTROL_MAGIC);
	put16(buf + 4, CONTROL_VERSION);
	put16(buf + 6, req->command);
	put64(buf + 8, req->arg);
	return CONTROL_REQUEST_SIZE;
}

int control_decode_request(const uint8_t *buf, size_t len, struct control_request *req)
{
	memset(req, 0, sizeof(*req));
	if (len < HEADER_SIZE || get32(buf) != CONTROL_MAGIC)
		return CONTROL_E_MALFORMED;
	req->command = get16(buf + 6);
	if (get16(buf + 4) != CONTROL_VERSION)
		return CONTROL_E_VERSION;
	if (len != CONTROL_REQUEST_SIZE)
		return CONTROL_E_MALFORMED;
	req->arg = get64(buf + 8);
	switch (req->command) {
	case CONTROL_CMD_STOP:
	case CONTROL_CMD_SUSPEND:
	case CONTROL_CMD_RESUME:
	case CONTROL_CMD_STATUS:
		return req->arg ? CONTROL_E_ARGUMENT : CONTROL_OK;
	case CONTROL_CMD_BALLOON:
		if (req->arg % BALLOON_UNIT || req->arg >= BALLOON_MAX)
			return CONTROL_E_ARGUMENT;
		return CONTROL_OK;
	default:
		return CONTROL_E_COMMAND;
	}
}

int control_encode_reply(const struct control_reply *rep, uint8_t *buf, size_t len)
{
	if (len < CONTROL_REPLY_SIZE)
		return -EINVAL;
	put32(buf, CONTROL_MAGIC);
	put16(buf + 4, CONTROL_VERSION);
	put16(buf + 6, rep->command);
	put32(buf + 8, rep->status);
	put32(buf + 12, rep->error);
	put32(buf + 16, rep->st.state);
	put32(buf + 20, rep->st.vcpus);
	put64(buf + 24, rep->st.mem_bytes);
	put64(buf + 32, rep->st.balloon_target);
	put64(buf + 40, rep->st.balloon_actual);
	return CONTROL_REPLY_SIZE;
}

int control_decode_reply(const uint8_t *buf, size_t len, struct control_reply *rep)
{
	static const uint8_t zero[CONTROL_REPLY_SIZE - 16];

	memset(rep, 0, sizeof(*rep));
	if (len != CONTROL_REPLY_SIZE || get32(buf) != CONTROL_MAGIC ||
	    get16(buf + 4) != CONTROL_VERSION)
		return -EPROTO;
	rep->command = get16(buf + 6);
	rep->status = get32(buf + 8);
	rep->error = get32(buf + 12);
	if (rep->status > CONTROL_RESULT_MAX)
		return -EPROTO;
	if (rep->command == CONTROL_CMD_STATUS && rep->status == CONTROL_OK) {
		rep->st.state = get32(buf + 16);
		rep->st.vcpus = get32(buf + 20);
		rep->st.mem_bytes = get64(buf + 24);
		rep->st.balloon_target = get64(buf + 32);
		rep->st.balloon_actual = get64(buf + 40);
	} else if (memcmp(buf + 16, zero, sizeof(zero))) {
		return -EPROTO;
	}
	return 0;
}

const char *control_strerror(uint32_t status)
{
	switch (status) {
	case CONTROL_OK:
		return "ok";
	case CONTROL_E_MALFORMED:
		return "malformed request";
	case CONTROL_E_VERSION:
		return "unsupported protocol version";
	case CONTROL_E_COMMAND:
		return "unknown command";
	case CONTROL_E_ARGUMENT:
		return "invalid argument";
	case CONTROL_E_UNSUPPORTED:
		return "not supported by this VM";
	case CONTROL_E_STATE:
		return "not possible in the VM's current state";
	case CONTROL_E_FAILED:
		return "failed";
	default:
		return "unknown status";
	}
}

const char *control_command_name(uint16_t command)
{
	switch (command) {
	case CONTROL_CMD_STOP:
		return "stop";
	case CONTROL_CMD_SUSPEND:
		return "suspend";
	case CONTROL_CMD_RESUME:
		return "resume";
	case CONTROL_CMD_BALLOON:
		return "balloon";
	case CONTROL_CMD_STATUS:
		return "status";
	default:
		return NULL;
	}
}

const char *control_state_name(uint32_t state)
{
	switch (state) {
	case CONTROL_STATE_RUNNING:
		return "running";
	case CONTROL_STATE_PAUSED:
		return "paused";
	case CONTROL_STATE_STOPPING:
		return "stopping";
	case CONTROL_STATE_CREATED:
		return "created";
	default:
		return "unknown";
	}
}

int control_format_status(const struct control_status *st, char *buf, size_t len)
{
	int n = snprintf(buf, len,
			 "state=%s vcpus=%u mem_mib=%llu balloon_target_mib=%llu "
			 "balloon_actual_mib=%llu",
			 control_state_name(st->state), st->vcpus,
			 (unsigned long long)(st->mem_bytes >> 20),
			 (unsigned long long)(st->balloon_target >> 20),
			 (unsigned long long)(st->balloon_actual >> 20));

	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	return n;
}

/* ---- Server ---- */

struct control_client {
	int fd;		/* -1: free slot */
	uint64_t stamp; /* last activity, for evicting the longest idle client */
};

struct control_server {
	char path[SUN_PATH_MAX];
	dev_t dev; /* identity of the socket file, so close() removes only ours */
	ino_t ino;
	int listen_fd;
	int epoll_fd;
	int timer_fd; /* re-enables accepting after running out of fds */
	int stop_fd;
	bool accept_paused;
	uint64_t clock; /* activity counter */
	struct control_client clients[CONTROL_MAX_CLIENTS];
	struct control_ops ops; /* the thread's copy */
	pthread_t thread;
	bool running;
};

const char *control_path(const struct control_server *s)
{
	return s->path;
}

int control_fd(const struct control_server *s)
{
	return s->epoll_fd;
}

static int fill_addr(struct sockaddr_un *a, const char *path)
{
	size_t n = strlen(path);

	if (n == 0)
		return -EINVAL;
	if (n >= sizeof(a->sun_path))
		return -ENAMETOOLONG;
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	memcpy(a->sun_path, path, n + 1);
	return 0;
}

/* Final socket path: @path itself, or @path/vmm-<pid>.sock for a directory. */
static int socket_path(const char *path, char *out, struct vmm_err *err)
{
	struct stat st;
	size_t n = strlen(path);
	int len;

	if (n == 0)
		return err_set(err, EINVAL, "control socket: empty path");
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		while (n > 1 && path[n - 1] == '/')
			n--;
		len = snprintf(out, SUN_PATH_MAX, "%.*s%svmm-%ld.sock", (int)n, path,
			       path[n - 1] == '/' ? "" : "/", (long)getpid());
	} else {
		len = snprintf(out, SUN_PATH_MAX, "%s", path);
	}
	if (len < 0 || (size_t)len >= SUN_PATH_MAX)
		return err_set(err, ENAMETOOLONG,
			       "control socket: path %s is too long for a Unix socket (%zu bytes)",
			       path, SUN_PATH_MAX - 1);
	return 0;
}

/* A private name next to @final for binding before the file gets its mode. */
static int temp_path(const char *final, char *out)
{
	const char *slash = strrchr(final, '/');
	int dirlen = slash ? (int)(slash - final + 1) : 0;
	uint64_t rnd = 0;
	int len;

	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		rnd ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
	}
	len = snprintf(out, SUN_PATH_MAX, "%.*s.vmm%08x", dirlen, final, (uint32_t)rnd);
	if (len < 0 || (size_t)len >= SUN_PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * Deal with what exists at @path: nothing (0), a stale socket (removed, 0),
 * a live one (-EADDRINUSE) or something else (-EEXIST).
 */
static int clear_stale(const char *path, struct vmm_err *err)
{
	struct sockaddr_un a;
	struct stat st;
	int fd, r, e;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return err_set(err, errno, "control socket: %s: %s", path, strerror(errno));
	}
	if (!S_ISSOCK(st.st_mode))
		return err_set(err, EEXIST, "control socket: %s exists and is not a socket", path);
	fill_addr(&a, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(err, errno, "control socket: socket: %s", strerror(errno));
	r = connect(fd, (struct sockaddr *)&a, sizeof(a));
	e = errno;
	close(fd);
	/* EAGAIN: a listener with a full backlog; EPROTOTYPE: someone bound another type. */
	if (r == 0 || e == EAGAIN || e == EINPROGRESS || e == EPROTOTYPE)
		return err_set(err, EADDRINUSE, "%s is in use by a running VMM", path);
	if (e == ENOENT)
		return 0;
	if (e != ECONNREFUSED)
		return err_set(err, e, "control socket: cannot check %s: %s", path, strerror(e));
	/* Nobody listens: left behind by a VMM that did not exit cleanly. */
	if (unlink(path) < 0 && errno != ENOENT)
		return err_set(err, errno, "control socket: cannot remove stale %s: %s", path,
			       strerror(errno));
	return 0;
}

/* Create the listening socket at s->path with mode 0600. */
static int bind_socket(struct control_server *s, struct vmm_err *err)
{
	char tmp[SUN_PATH_MAX];
	struct sockaddr_un a;
	struct stat st;
	bool linked = false;
	int r, tries = 0;

	s->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0)
		return err_set(err, errno, "control socket: socket: %s", strerror(errno));
	for (;;) {
		if (temp_path(s->path, tmp) < 0)
			return err_set(err, ENAMETOOLONG,
				       "control socket: path %s is too long for a Unix socket",
				       s->path);
		fill_addr(&a, tmp);
		if (bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			break;
		if (errno != EADDRINUSE || ++tries > 8)
			return err_set(err, errno,
				       "control socket: cannot bind in the directory of %s: %s",
				       s->path, strerror(errno));
	}
	/*
	 * Nobody can connect yet: listen() comes after the mode is right, and
	 * before the final name appears, so that a socket at the final path
	 * always accepts (another VMM starting at once sees it as live).
	 */
	if (chmod(tmp, 0600) < 0 || listen(s->listen_fd, 16) < 0) {
		r = err_set(err, errno, "control socket: cannot set up %s: %s", tmp,
			    strerror(errno));
		unlink(tmp);
		return r;
	}
	/* Move it into place without ever replacing what another process put there. */
	r = renameat2(AT_FDCWD, tmp, AT_FDCWD, s->path, RENAME_NOREPLACE);
	if (r < 0 && (errno == EINVAL || errno == ENOSYS)) {
		/* No RENAME_NOREPLACE on this filesystem: link() never replaces either. */
		linked = true;
		r = link(tmp, s->path);
	}
	if (r < 0) {
		int e = errno;

		unlink(tmp);
		if (e == EEXIST)
			return err_set(err, EADDRINUSE, "%s is in use by a running VMM", s->path);
		return err_set(err, e, "control socket: cannot create %s: %s", s->path,
			       strerror(e));
	}
	if (linked)
		unlink(tmp);
	if (lstat(s->path, &st) == 0) {
		s->dev = st.st_dev;
		s->ino = st.st_ino;
	}
	return 0;
}

static int epoll_add(int epfd, int fd, uint32_t data)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = data};

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void free_server(struct control_server *s)
{
	struct stat st;

	for (unsigned int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (s->clients[i].fd >= 0)
			close(s->clients[i].fd);
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		/* Remove the file only if it is still ours (not a successor's socket). */
		if (s->ino && lstat(s->path, &st) == 0 && st.st_dev == s->dev &&
		    st.st_ino == s->ino)
			unlink(s->path);
	}
	if (s->epoll_fd >= 0)
		close(s->epoll_fd);
	if (s->timer_fd >= 0)
		close(s->timer_fd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	free(s);
}

int control_listen(const char *path, struct control_server **out, struct vmm_err *err)
{
	struct control_server *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return err_set(err, ENOMEM, "control socket: out of memory");
	s->listen_fd = s->epoll_fd = s->timer_fd = s->stop_fd = -1;
	for (unsigned int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		s->clients[i].fd = -1;
	r = socket_path(path, s->path, err);
	if (r == 0)
		r = clear_stale(s->path, err);
	if (r == 0)
		r = bind_socket(s, err);
	if (r < 0)
		goto fail;
	s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	s->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->epoll_fd < 0 || s->timer_fd < 0 || s->stop_fd < 0 ||
	    epoll_add(s->epoll_fd, s->listen_fd, EV_LISTEN) < 0 ||
	    epoll_add(s->epoll_fd, s->timer_fd, EV_TIMER) < 0) {
		r = err_set(err, errno, "control socket: %s", strerror(errno));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	free_server(s);
	return r;
}

static void drop_client(struct control_server *s, unsigned int i)
{
	/* Closing the fd takes it out of the epoll set. */
	close(s->clients[i].fd);
	s->clients[i].fd = -1;
	if (s->accept_paused) {
		/* An fd is free again: accept again. */
		struct itimerspec off = {0};

		timerfd_settime(s->timer_fd, 0, &off, NULL);
		if (epoll_add(s->epoll_fd, s->listen_fd, EV_LISTEN) == 0)
			s->accept_paused = false;
	}
}

/* Stop watching the listening socket for a while (no fd or memory for a client). */
static void pause_accept(struct control_server *s)
{
	struct itimerspec t = {.it_value = {0, ACCEPT_RETRY_MS * 1000000L}};

	if (s->accept_paused)
		return;
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->listen_fd, NULL) == 0) {
		s->accept_paused = true;
		timerfd_settime(s->timer_fd, 0, &t, NULL);
	}
}

static void resume_accept(struct control_server *s)
{
	uint64_t v;

	while (read(s->timer_fd, &v, sizeof(v)) == sizeof(v))
		;
	if (s->accept_paused && epoll_add(s->epoll_fd, s->listen_fd, EV_LISTEN) == 0)
		s->accept_paused = false;
}

/* Only our own user and root may talk to the VMM. */
static bool peer_allowed(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred))
		return false;
	return cred.uid == geteuid() || cred.uid == 0;
}

static int accept_clients(struct control_server *s)
{
	for (unsigned int n = 0; n < CONTROL_MAX_CLIENTS; n++) {
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		unsigned int slot = 0;

		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			if (errno == ECONNABORTED || errno == EPROTO || errno == EPERM)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				pause_accept(s);
				return 0;
			}
			return -errno;
		}
		/* The file mode already limits who connects; check the peer anyway. */
		if (!peer_allowed(fd)) {
			close(fd);
			continue;
		}
		/* A free slot, else the client idle the longest makes room. */
		for (unsigned int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
			if (s->clients[i].fd < 0) {
				slot = i;
				break;
			}
			if (s->clients[i].stamp < s->clients[slot].stamp)
				slot = i;
		}
		if (s->clients[slot].fd >= 0)
			drop_client(s, slot);
		if (epoll_add(s->epoll_fd, fd, EV_CLIENT0 + slot) < 0) {
			close(fd);
			continue;
		}
		s->clients[slot].fd = fd;
		s->clients[slot].stamp = ++s->clock;
	}
	return 0;
}

static uint32_t result_of(int r)
{
	switch (r) {
	case 0:
		return CONTROL_OK;
	case -EINVAL:
	case -ERANGE:
		return CONTROL_E_ARGUMENT;
	case -ENODEV:
	case -ENOTSUP:
	case -ENOSYS:
		return CONTROL_E_UNSUPPORTED;
	case -EBUSY:
	case -EALREADY:
	case -EAGAIN:
	case -ESHUTDOWN:
		return CONTROL_E_STATE;
	default:
		return CONTROL_E_FAILED;
	}
}

/* Run a decoded request through @ops and fill in the reply. */
static void dispatch(const struct control_ops *ops, const struct control_request *req,
		     struct control_reply *rep)
{
	struct control_status st = {0};
	int r = -ENOTSUP;

	switch (req->command) {
	case CONTROL_CMD_STOP:
		if (ops->stop)
			r = ops->stop(ops->ctx);
		break;
	case CONTROL_CMD_SUSPEND:
		if (ops->suspend)
			r = ops->suspend(ops->ctx);
		break;
	case CONTROL_CMD_RESUME:
		if (ops->resume)
			r = ops->resume(ops->ctx);
		break;
	case CONTROL_CMD_BALLOON:
		if (ops->balloon)
			r = ops->balloon(ops->ctx, req->arg);
		break;
	case CONTROL_CMD_STATUS:
		if (ops->status)
			r = ops->status(ops->ctx, &st);
		if (r == 0)
			rep->st = st;
		break;
	}
	if (r > 0)
		r = -EIO; /* a callback breaking its contract */
	rep->status = result_of(r);
	rep->error = (uint32_t)-r;
}

/* Read and answer what client @i sent. */
static void serve_client(struct control_server *s, unsigned int i, const struct control_ops *ops)
{
	for (unsigned int n = 0; n < MSGS_PER_WAKEUP; n++) {
		uint8_t buf[CONTROL_MSG_MAX], out[CONTROL_REPLY_SIZE];
		struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		struct control_request req;
		struct control_reply rep = {0};
		ssize_t len = recvmsg(s->clients[i].fd, &msg, MSG_DONTWAIT);

		if (len < 0 && errno == EINTR)
			continue;
		if (len < 0 && errno == EAGAIN)
			return;
		if (len <= 0) {
			/* Hang-up (or an empty packet, which is not a request either). */
			drop_client(s, i);
			return;
		}
		s->clients[i].stamp = ++s->clock;
		/* Oversized: the kernel dropped the rest; its length alone makes it malformed. */
		rep.status = control_decode_request(
			buf, (msg.msg_flags & MSG_TRUNC) ? sizeof(buf) : (size_t)len, &req);
		rep.command = req.command;
		if (rep.status == CONTROL_OK)
			dispatch(ops, &req, &rep);
		control_encode_reply(&rep, out, sizeof(out));
		/* A client that does not read its replies is dropped, never waited for. */
		if (send(s->clients[i].fd, out, sizeof(out), MSG_DONTWAIT | MSG_NOSIGNAL) !=
		    (ssize_t)sizeof(out)) {
			drop_client(s, i);
			return;
		}
	}
}

int control_handle(struct control_server *s, const struct control_ops *ops)
{
	struct epoll_event ev[CONTROL_MAX_CLIENTS + 2];
	int n;

	do {
		n = epoll_wait(s->epoll_fd, ev, CONTROL_MAX_CLIENTS + 2, 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (int k = 0; k < n; k++) {
		uint32_t id = ev[k].data.u32;
		int r;

		if (id == EV_LISTEN) {
			r = accept_clients(s);
			if (r < 0)
				return r;
		} else if (id == EV_TIMER) {
			resume_accept(s);
		} else if (id - EV_CLIENT0 < CONTROL_MAX_CLIENTS &&
			   s->clients[id - EV_CLIENT0].fd >= 0) {
			/* A slot freed and refilled in this round just finds nothing to read. */
			serve_client(s, id - EV_CLIENT0, ops);
		}
	}
	return 0;
}

static void *server_thread(void *arg)
{
	struct control_server *s = arg;
	struct pollfd p[2] = {{.fd = s->epoll_fd, .events = POLLIN},
			      {.fd = s->stop_fd, .events = POLLIN}};

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if (p[1].revents)
			return NULL;
		if (p[0].revents && control_handle(s, &s->ops) < 0)
			return NULL;
	}
}

int control_start(struct control_server *s, const struct control_ops *ops, struct vmm_err *err)
{
	sigset_t all, old;
	int r;

	if (s->running)
		return err_set(err, EBUSY, "control socket: already serving");
	s->ops = *ops;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&s->thread, NULL, server_thread, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		return err_set(err, r, "control socket: cannot start thread: %s", strerror(r));
	pthread_setname_np(s->thread, "vmm-control");
	s->running = true;
	return 0;
}

void control_close(struct control_server *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (s->running) {
		while (write(s->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
		pthread_join(s->thread, NULL);
		s->running = false;
	}
	free_server(s);
}

/* ---- Client ---- */

static int client_errno(const struct control_reply *rep)
{
	switch (rep->status) {
	case CONTROL_E_MALFORMED:
	case CONTROL_E_VERSION:
		return EPROTO;
	case CONTROL_E_COMMAND:
	case CONTROL_E_UNSUPPORTED:
		return EOPNOTSUPP;
	case CONTROL_E_ARGUMENT:
		return EINVAL;
	case CONTROL_E_STATE:
		return EBUSY;
	default:
		return rep->error && rep->error < 4096 ? (int)rep->error : EIO;
	}
}

int control_request(const char *path, const struct control_request *req, struct control_reply *rep,
		    struct vmm_err *err)
{
	struct timeval tv = {CONTROL_CLIENT_TIMEOUT_MS / 1000,
			     (CONTROL_CLIENT_TIMEOUT_MS % 1000) * 1000};
	uint8_t out[CONTROL_REQUEST_SIZE], in[CONTROL_MSG_MAX];
	struct iovec iov = {.iov_base = in, .iov_len = sizeof(in)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	const char *name = control_command_name(req->command);
	struct sockaddr_un a;
	ssize_t n;
	int fd, r, e;

	memset(rep, 0, sizeof(*rep));
	if (!name)
		name = "request";
	r = fill_addr(&a, path);
	if (r < 0)
		return err_set(err, -r, "control socket path \"%s\": %s", path, strerror(-r));
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(err, errno, "socket: %s", strerror(errno));
	/* Bounds connect (full backlog), send and recv alike. */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		r = err_set(err, errno, "setsockopt: %s", strerror(errno));
		goto out;
	}
	do {
		r = connect(fd, (struct sockaddr *)&a, sizeof(a));
	} while (r < 0 && errno == EINTR);
	if (r < 0) {
		e = errno == EAGAIN ? ETIMEDOUT : errno;
		if (e == ECONNREFUSED)
			r = err_set(err, e, "%s: no VMM listens on this socket (stale)", path);
		else
			r = err_set(err, e, "%s: cannot connect: %s", path, strerror(e));
		goto out;
	}
	control_encode_request(req, out, sizeof(out));
	do {
		n = send(fd, out, sizeof(out), MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(out)) {
		e = n < 0 ? (errno == EAGAIN ? ETIMEDOUT : errno) : EIO;
		r = err_set(err, e, "%s: cannot send: %s", path, strerror(e));
		goto out;
	}
	do {
		n = recvmsg(fd, &msg, 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		e = errno == EAGAIN ? ETIMEDOUT : errno;
		r = err_set(err, e, "%s: no reply: %s", path, strerror(e));
		goto out;
	}
	if (n == 0) {
		r = err_set(err, ECONNRESET, "%s: the VMM closed the connection without a reply",
			    path);
		goto out;
	}
	if ((msg.msg_flags & MSG_TRUNC) || control_decode_reply(in, (size_t)n, rep) < 0 ||
	    rep->command != req->command) {
		memset(rep, 0, sizeof(*rep));
		r = err_set(err, EPROTO, "%s: malformed reply from the VMM", path);
		goto out;
	}
	if (rep->status != CONTROL_OK) {
		e = client_errno(rep);
		if (rep->error)
			r = err_set(err, e, "%s refused: %s (%s)", name,
				    control_strerror(rep->status), strerror((int)rep->error));
		else
			r = err_set(err, e, "%s refused: %s", name, control_strerror(rep->status));
		goto out;
	}
	r = 0;
out:
	close(fd);
	return r;
}
