/*
 * The control socket: a Unix SOCK_SEQPACKET socket through which `vmm-run stop|suspend|resume|
 * balloon|status` (or any client) drives a running VM. Wire format: docs/control-protocol.md.
 *
 * This module is transport and protocol only: what a command does is up to
 * the caller's struct control_ops callbacks, so it knows nothing of struct vm.
 */
#ifndef LIBVMM_LIB_CONTROL_H
#define LIBVMM_LIB_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Protocol version this code speaks (requests and replies carry it). */
#define CONTROL_VERSION 1
/* "VMMC" as little-endian bytes, the first 4 bytes of every message. */
#define CONTROL_MAGIC 0x434d4d56u

/* Sizes of version-1 messages; the server reads at most CONTROL_MSG_MAX bytes. */
#define CONTROL_REQUEST_SIZE 16
#define CONTROL_REPLY_SIZE   48
#define CONTROL_MSG_MAX	     256

/* Most clients connected at once; one more evicts the one idle the longest. */
#define CONTROL_MAX_CLIENTS 32
/* How long control_request() waits for the server, in milliseconds. */
#define CONTROL_CLIENT_TIMEOUT_MS 30000

enum control_command {
	CONTROL_CMD_STOP = 1,	 /* end the VM (vm_run returns) */
	CONTROL_CMD_SUSPEND = 2, /* pause every vCPU */
	CONTROL_CMD_RESUME = 3,	 /* let the vCPUs run again */
	CONTROL_CMD_BALLOON = 4, /* set the balloon target to arg bytes */
	CONTROL_CMD_STATUS = 5,	 /* report struct control_status */
};

/* Reply status codes (the wire value). */
enum control_result {
	CONTROL_OK = 0,
	CONTROL_E_MALFORMED = 1,   /* wrong size, bad magic, bytes that must be zero are not */
	CONTROL_E_VERSION = 2,	   /* a protocol version this server does not speak */
	CONTROL_E_COMMAND = 3,	   /* unknown command */
	CONTROL_E_ARGUMENT = 4,	   /* bad argument (e.g. balloon size) */
	CONTROL_E_UNSUPPORTED = 5, /* this VM cannot do it (e.g. no balloon device) */
	CONTROL_E_STATE = 6,	   /* not now (e.g. the VM is stopping) */
	CONTROL_E_FAILED = 7,	   /* the VM tried and failed; reply.error says why */
};
#define CONTROL_RESULT_MAX CONTROL_E_FAILED

enum control_state {
	CONTROL_STATE_RUNNING = 1,
	CONTROL_STATE_PAUSED = 2,
	CONTROL_STATE_STOPPING = 3, /* a stop was requested or the VM ended */
	CONTROL_STATE_CREATED = 4,  /* set up, not started yet */
};

struct control_status {
	uint32_t state; /* enum control_state */
	uint32_t vcpus;
	uint64_t mem_bytes;	 /* guest RAM */
	uint64_t balloon_target; /* bytes the host asked the balloon to hold; 0 without balloon */
	uint64_t balloon_actual; /* bytes the guest reports in the balloon */
};

struct control_request {
	uint16_t command; /* enum control_command */
	uint64_t arg;	  /* CONTROL_CMD_BALLOON: bytes; 0 for every other command */
};

struct control_reply {
	uint16_t command;	  /* the request's command, 0 if it could not be read */
	uint32_t status;	  /* enum control_result */
	uint32_t error;		  /* a positive errno from the VM side, or 0 */
	struct control_status st; /* CONTROL_CMD_STATUS only; zero otherwise */
};

/*
 * What commands do. Each callback returns 0 or a negative errno, which the
 * server maps to a reply status: -EINVAL/-ERANGE -> CONTROL_E_ARGUMENT,
 * -ENODEV/-ENOTSUP/-ENOSYS -> CONTROL_E_UNSUPPORTED, -EBUSY/-EALREADY/-EAGAIN/
 * -ESHUTDOWN -> CONTROL_E_STATE, anything else -> CONTROL_E_FAILED; error carries the
 * errno in every case. A NULL callback means CONTROL_E_UNSUPPORTED.
 *
 * Callbacks run on the thread that runs control_handle() (the server
 * thread after control_start()), one at a time. They must not block for
 * long (every client waits meanwhile) and must not wait for the thread
 * that calls control_close(). stop should only request the stop
 * (vm_stop-like) and return: the reply goes out before the VM is down.
 * balloon gets a size already checked to be a multiple of 4096 and below
 * 16 TiB; the callback checks it against the VM (e.g. -EINVAL above RAM).
 */
struct control_ops {
	int (*stop)(void *ctx);
	int (*suspend)(void *ctx);
	int (*resume)(void *ctx);
	int (*balloon)(void *ctx, uint64_t bytes);
	int (*status)(void *ctx, struct control_status *st);
	void *ctx;
};

/* ---- Wire format (pure functions, no I/O) ---- */

/*
 * Encode @req into @buf (@len >= CONTROL_REQUEST_SIZE). Returns the message
 * length, or -EINVAL when @len is too small. Any command value is encoded,
 * so tests can build bad requests.
 */
int control_encode_request(const struct control_request *req, uint8_t *buf, size_t len);

/*
 * Decode and check a request of @len bytes. Returns CONTROL_OK with *@req
 * filled, or the status to reply with: CONTROL_E_MALFORMED (shorter than 8
 * bytes, bad magic, a v1 message not exactly CONTROL_REQUEST_SIZE),
 * CONTROL_E_VERSION, CONTROL_E_COMMAND, CONTROL_E_ARGUMENT (a non-zero arg
 * for a command without one; a balloon size not a multiple of 4096 or of
 * 16 TiB or more). req->command is set whenever the header was readable.
 */
int control_decode_request(const uint8_t *buf, size_t len, struct control_request *req);

/* Encode @rep into @buf (@len >= CONTROL_REPLY_SIZE). Returns the length or -EINVAL. */
int control_encode_reply(const struct control_reply *rep, uint8_t *buf, size_t len);

/*
 * Decode and check a reply (client side: the server is not trusted either).
 * Returns 0, or -EPROTO when the size, magic or version is wrong, the status
 * is out of range, or status data comes with a reply other than a
 * successful CONTROL_CMD_STATUS.
 */
int control_decode_reply(const uint8_t *buf, size_t len, struct control_reply *rep);

/* "ok", "malformed request", ...; "unknown status" for other values. */
const char *control_strerror(uint32_t status);

/* "stop", "suspend", "resume", "balloon", "status", or NULL. */
const char *control_command_name(uint16_t command);

/* "running", "paused", "stopping", "created", or "unknown". */
const char *control_state_name(uint32_t state);

/*
 * Format @st on one line for scripts:
 * "state=running vcpus=2 mem_mib=256 balloon_target_mib=0 balloon_actual_mib=0"
 * (sizes in MiB, rounded down; no trailing newline). Returns the length, or
 * -ENOSPC when @len is too small (the output is then truncated and still
 * NUL-terminated if @len > 0).
 */
int control_format_status(const struct control_status *st, char *buf, size_t len);

/* ---- Server ---- */

struct control_server;

/*
 * Create the control socket at @path and listen on it. When @path is a
 * directory, the socket is @path/vmm-<pid>.sock. The socket file is created
 * with mode 0600 whatever the umask (bound under a private temporary name,
 * chmod-ed, then hard-linked to its final name, and listening only starts
 * after that), so only the owner (and root) can connect.
 *
 * What already exists at the final path: a socket nobody listens on (a VMM
 * that crashed) is replaced; a socket that accepts a connection is refused
 * with -EADDRINUSE ("PATH is in use by a running VMM"); anything else (file,
 * directory, symlink) is refused with -EEXIST. Other errors: -ENAMETOOLONG
 * (longer than a Unix socket address allows), -errno of socket calls.
 *
 * Returns 0 with *@out set, or a negative errno with a message in @err.
 * Commands are served only once control_start() or control_handle() runs.
 */
int control_listen(const char *path, struct control_server **out, struct vmm_err *err);

/* The socket's final path (valid until control_close()). */
const char *control_path(const struct control_server *s);

/*
 * For embedding in the caller's event loop: an fd (epoll) that becomes
 * readable when control_handle() has work: a client connecting, sending,
 * or hanging up.
 */
int control_fd(const struct control_server *s);

/*
 * Do all pending work without blocking: accept new clients, read each
 * ready client's messages, call @ops and reply. A client that sends an
 * unreadable message gets an error reply; one that hangs up, or whose reply
 * cannot be sent at once (it does not read its replies), is dropped.
 * Never blocks on a client. Returns 0, or -errno if the listening socket
 * or epoll failed (the server is then unusable). Not thread safe: call
 * from one thread, and not while control_start()'s thread runs.
 */
int control_handle(struct control_server *s, const struct control_ops *ops);

/*
 * Serve in a thread of its own (all signals blocked) until control_close().
 * @ops is copied. Returns 0, -EBUSY if already started, or -errno of
 * pthread_create with a message in @err.
 */
int control_start(struct control_server *s, const struct control_ops *ops, struct vmm_err *err);

/*
 * Stop the thread (if started), drop every client, close the socket and
 * remove its file (only if the path still names this socket). NULL is a
 * no-op. Must not be called from a control_ops callback.
 */
void control_close(struct control_server *s);

/* ---- Client ---- */

/*
 * Send @req to the server at @path and wait (at most
 * CONTROL_CLIENT_TIMEOUT_MS) for its reply, which is checked and stored in
 * *@rep. Returns 0 when the server replied CONTROL_OK. When it replied with
 * an error, *@rep holds the reply and the return is -EPROTO (malformed or
 * version), -EOPNOTSUPP (unknown command, unsupported), -EINVAL (argument),
 * -EBUSY (state) or -(rep->error) (failed, -EIO if 0), with a message in
 * @err. Transport errors: -errno of socket/connect/send/recv (-ECONNREFUSED
 * for a stale socket, -ENOENT for no socket), -ETIMEDOUT, -EPROTO for a
 * reply that does not decode. Thread safe.
 */
int control_request(const char *path, const struct control_request *req, struct control_reply *rep,
		    struct vmm_err *err);

#endif
