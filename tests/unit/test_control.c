/* Unit tests for the control socket: wire format, socket paths, and a server driven by clients. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/control.h"

#define WAIT_MS 5000

/* ---- Helpers ---- */

struct tmpdir {
	char dir[64];
	char path[128]; /* dir/ctl.sock */
};

static void tmpdir_init(struct tmpdir *t)
{
	strcpy(t->dir, "/tmp/vmmctl-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/ctl.sock", t->dir);
}

/* Remove whatever the test left in the directory, then the directory. */
static void tmpdir_destroy(struct tmpdir *t)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	assert_int_equal(system(cmd), 0);
}

static void make_addr(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	assert_true(strlen(path) < sizeof(a->sun_path));
	strcpy(a->sun_path, path);
}

/* A raw SEQPACKET client connected to @path. */
static int raw_connect(const char *path)
{
	struct sockaddr_un a;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	make_addr(&a, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void raw_send(int fd, const void *buf, size_t len)
{
	assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

static bool wait_readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r;

	do {
		r = poll(&p, 1, ms);
	} while (r < 0 && errno == EINTR);
	return r == 1;
}

/* Wait for one reply on @fd (failing after WAIT_MS) and decode it. */
static void raw_reply(int fd, struct control_reply *rep)
{
	uint8_t buf[CONTROL_MSG_MAX];
	ssize_t n;

	if (!wait_readable(fd, WAIT_MS))
		fail_msg("no reply within %d ms", WAIT_MS);
	n = recv(fd, buf, sizeof(buf), 0);
	assert_int_equal(n, CONTROL_REPLY_SIZE);
	assert_int_equal(control_decode_reply(buf, (size_t)n, rep), 0);
}

/* True when the server has closed @fd's connection (EOF within WAIT_MS). */
static bool raw_closed(int fd)
{
	uint8_t buf[CONTROL_MSG_MAX];

	for (;;) {
		ssize_t n;

		if (!wait_readable(fd, WAIT_MS))
			return false;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0)
			return false;
		/* a reply still queued before the hang-up: skip it */
	}
}

static void encode(uint16_t cmd, uint64_t arg, uint8_t *buf)
{
	struct control_request r = {.command = cmd, .arg = arg};

	assert_int_equal(control_encode_request(&r, buf, CONTROL_REQUEST_SIZE),
			 CONTROL_REQUEST_SIZE);
}

static mode_t file_mode(const char *path)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode;
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* A socket file nobody listens on, as a crashed VMM leaves behind. */
static void make_stale_socket(const char *path)
{
	struct sockaddr_un a;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);

	assert_true(fd >= 0);
	make_addr(&a, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	close(fd);
	assert_true(S_ISSOCK(file_mode(path)));
}

/* ---- Fake VM operations ---- */

struct fake_vm {
	int stops, suspends, resumes, balloons, statuses;
	uint64_t balloon_bytes;
	int ret; /* what every op returns */
};

static int fake_stop(void *ctx)
{
	struct fake_vm *v = ctx;

	__atomic_fetch_add(&v->stops, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&v->ret, __ATOMIC_SEQ_CST);
}

static int fake_suspend(void *ctx)
{
	struct fake_vm *v = ctx;

	__atomic_fetch_add(&v->suspends, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&v->ret, __ATOMIC_SEQ_CST);
}

static int fake_resume(void *ctx)
{
	struct fake_vm *v = ctx;

	__atomic_fetch_add(&v->resumes, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&v->ret, __ATOMIC_SEQ_CST);
}

static int fake_balloon(void *ctx, uint64_t bytes)
{
	struct fake_vm *v = ctx;

	__atomic_store_n(&v->balloon_bytes, bytes, __ATOMIC_SEQ_CST);
	__atomic_fetch_add(&v->balloons, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&v->ret, __ATOMIC_SEQ_CST);
}

static int fake_status(void *ctx, struct control_status *st)
{
	struct fake_vm *v = ctx;

	__atomic_fetch_add(&v->statuses, 1, __ATOMIC_SEQ_CST);
	st->state = CONTROL_STATE_PAUSED;
	st->vcpus = 3;
	st->mem_bytes = 512ull << 20;
	st->balloon_target = __atomic_load_n(&v->balloon_bytes, __ATOMIC_SEQ_CST);
	st->balloon_actual = 64ull << 20;
	return __atomic_load_n(&v->ret, __ATOMIC_SEQ_CST);
}

static struct control_ops fake_ops(struct fake_vm *v)
{
	return (struct control_ops){
		.stop = fake_stop,
		.suspend = fake_suspend,
		.resume = fake_resume,
		.balloon = fake_balloon,
		.status = fake_status,
		.ctx = v,
	};
}

struct served {
	struct tmpdir t;
	struct fake_vm vm;
	struct control_server *s;
};

static void served_start(struct served *sv)
{
	struct control_ops ops;
	struct vmm_err err;

	memset(sv, 0, sizeof(*sv));
	tmpdir_init(&sv->t);
	ops = fake_ops(&sv->vm);
	assert_int_equal(control_listen(sv->t.path, &sv->s, &err), 0);
	assert_int_equal(control_start(sv->s, &ops, &err), 0);
}

static void served_stop(struct served *sv)
{
	control_close(sv->s);
	assert_false(exists(sv->t.path));
	tmpdir_destroy(&sv->t);
}

static int request(const char *path, uint16_t cmd, uint64_t arg, struct control_reply *rep,
		   struct vmm_err *err)
{
	struct control_request req = {.command = cmd, .arg = arg};

	return control_request(path, &req, rep, err);
}

/* ---- Wire format ---- */

static void assert_reply_equal(const struct control_reply *a, const struct control_reply *b)
{
	assert_int_equal(a->command, b->command);
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->error, b->error);
	assert_int_equal(a->st.state, b->st.state);
	assert_int_equal(a->st.vcpus, b->st.vcpus);
	assert_int_equal(a->st.mem_bytes, b->st.mem_bytes);
	assert_int_equal(a->st.balloon_target, b->st.balloon_target);
	assert_int_equal(a->st.balloon_actual, b->st.balloon_actual);
}

static void test_request_roundtrip(void **state)
{
	static const uint16_t cmds[] = {CONTROL_CMD_STOP, CONTROL_CMD_SUSPEND, CONTROL_CMD_RESUME,
					CONTROL_CMD_BALLOON, CONTROL_CMD_STATUS};
	uint8_t buf[CONTROL_REQUEST_SIZE];
	struct control_request out;

	for (unsigned int i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		uint64_t arg = cmds[i] == CONTROL_CMD_BALLOON ? 0x123456789000ull >> 4 : 0;

		arg &= ~4095ull;
		encode(cmds[i], arg, buf);
		assert_int_equal(control_decode_request(buf, sizeof(buf), &out), CONTROL_OK);
		assert_int_equal(out.command, cmds[i]);
		assert_int_equal(out.arg, arg);
		assert_non_null(control_command_name(cmds[i]));
	}
	/* The layout: "VMMC", le16 version, le16 command, le64 arg. */
	encode(CONTROL_CMD_BALLOON, 0x0102030405060000ull & ((1ull << 44) - 1), buf);
	assert_memory_equal(buf, "VMMC\x01\x00\x04\x00", 8);
	assert_memory_equal(buf + 8, "\x00\x00\x06\x05\x04\x03\x00\x00", 8);
	assert_int_equal(control_encode_request(&out, buf, CONTROL_REQUEST_SIZE - 1), -EINVAL);
	assert_string_equal(control_command_name(CONTROL_CMD_STATUS), "status");
	assert_null(control_command_name(0));
	assert_null(control_command_name(6));
}

static void test_request_malformed(void **state)
{
	uint8_t buf[CONTROL_MSG_MAX + 8] = {0};
	uint8_t good[CONTROL_REQUEST_SIZE];
	struct control_request out;

	encode(CONTROL_CMD_STATUS, 0, good);
	/* Short and long. */
	for (size_t len = 0; len < sizeof(buf); len++) {
		if (len == CONTROL_REQUEST_SIZE)
			continue;
		memcpy(buf, good, sizeof(good));
		assert_int_equal(control_decode_request(buf, len, &out), CONTROL_E_MALFORMED);
	}
	/* Bad magic, in each byte. */
	for (unsigned int i = 0; i < 4; i++) {
		memcpy(buf, good, sizeof(good));
		buf[i] ^= 0x20;
		assert_int_equal(control_decode_request(buf, sizeof(good), &out),
				 CONTROL_E_MALFORMED);
	}
	/* Wrong version, whatever the size; the command is still reported. */
	{
		static const uint16_t versions[] = {0, 2, 0x100, 0xffff};

		for (unsigned int i = 0; i < 4; i++) {
			memcpy(buf, good, sizeof(good));
			buf[4] = (uint8_t)versions[i];
			buf[5] = (uint8_t)(versions[i] >> 8);
			assert_int_equal(control_decode_request(buf, sizeof(good), &out),
					 CONTROL_E_VERSION);
			assert_int_equal(out.command, CONTROL_CMD_STATUS);
			assert_int_equal(control_decode_request(buf, 64, &out), CONTROL_E_VERSION);
			assert_int_equal(control_decode_request(buf, 8, &out), CONTROL_E_VERSION);
		}
	}
	/* Unknown commands. */
	{
		static const uint16_t bad[] = {0, 6, 7, 0x100, 0xffff};

		for (unsigned int i = 0; i < 5; i++) {
			encode(bad[i], 0, buf);
			assert_int_equal(control_decode_request(buf, CONTROL_REQUEST_SIZE, &out),
					 CONTROL_E_COMMAND);
			assert_int_equal(out.command, bad[i]);
		}
	}
	/* An argument where none belongs. */
	{
		static const uint16_t noarg[] = {CONTROL_CMD_STOP, CONTROL_CMD_SUSPEND,
						 CONTROL_CMD_RESUME, CONTROL_CMD_STATUS};

		for (unsigned int i = 0; i < 4; i++) {
			encode(noarg[i], 4096, buf);
			assert_int_equal(control_decode_request(buf, CONTROL_REQUEST_SIZE, &out),
					 CONTROL_E_ARGUMENT);
			encode(noarg[i], 1ull << 63, buf);
			assert_int_equal(control_decode_request(buf, CONTROL_REQUEST_SIZE, &out),
					 CONTROL_E_ARGUMENT);
		}
	}
	/* Balloon sizes: 4 KiB multiples below 16 TiB only. */
	{
		static const uint64_t bad[] = {
			1,
			4095,
			4097,
			1ull << 44,
			(1ull << 44) + 4096,
			UINT64_MAX,
			UINT64_MAX - 4095,
		};
		static const uint64_t ok[] = {0, 4096, 1ull << 30, (1ull << 44) - 4096};

		for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			encode(CONTROL_CMD_BALLOON, bad[i], buf);
			assert_int_equal(control_decode_request(buf, CONTROL_REQUEST_SIZE, &out),
					 CONTROL_E_ARGUMENT);
		}
		for (unsigned int i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
			encode(CONTROL_CMD_BALLOON, ok[i], buf);
			assert_int_equal(control_decode_request(buf, CONTROL_REQUEST_SIZE, &out),
					 CONTROL_OK);
			assert_int_equal(out.arg, ok[i]);
		}
	}
}

static void test_reply_roundtrip(void **state)
{
	struct control_reply in = {
		.command = CONTROL_CMD_STATUS,
		.status = CONTROL_OK,
		.st = {CONTROL_STATE_RUNNING, 4, 1ull << 33, 1ull << 28, 3ull << 26},
	};
	struct control_reply out;
	uint8_t buf[CONTROL_REPLY_SIZE];

	assert_int_equal(control_encode_reply(&in, buf, sizeof(buf)), CONTROL_REPLY_SIZE);
	assert_memory_equal(buf, "VMMC\x01\x00\x05\x00", 8);
	assert_int_equal(control_decode_reply(buf, sizeof(buf), &out), 0);
	assert_reply_equal(&in, &out);
	assert_int_equal(control_encode_reply(&in, buf, sizeof(buf) - 1), -EINVAL);

	/* Every status code of a non-status command. */
	for (uint32_t s = 0; s <= CONTROL_RESULT_MAX; s++) {
		struct control_reply e = {.command = CONTROL_CMD_BALLOON, .status = s, .error = s};

		control_encode_reply(&e, buf, sizeof(buf));
		assert_int_equal(control_decode_reply(buf, sizeof(buf), &out), 0);
		assert_reply_equal(&e, &out);
		assert_string_not_equal(control_strerror(s), "unknown status");
	}
	/* A reply to an unreadable request has command 0. */
	{
		struct control_reply e = {.status = CONTROL_E_MALFORMED};

		control_encode_reply(&e, buf, sizeof(buf));
		assert_int_equal(control_decode_reply(buf, sizeof(buf), &out), 0);
		assert_int_equal(out.command, 0);
	}
}

/* The client does not trust the server either. */
static void test_reply_malformed(void **state)
{
	struct control_reply good = {.command = CONTROL_CMD_STATUS, .st = {1, 1, 1, 1, 1}};
	struct control_reply out;
	uint8_t buf[CONTROL_MSG_MAX];

	control_encode_reply(&good, buf, sizeof(buf));
	assert_int_equal(control_decode_reply(buf, CONTROL_REPLY_SIZE - 1, &out), -EPROTO);
	assert_int_equal(control_decode_reply(buf, CONTROL_REPLY_SIZE + 1, &out), -EPROTO);
	assert_int_equal(control_decode_reply(buf, 0, &out), -EPROTO);
	buf[0] ^= 1;
	assert_int_equal(control_decode_reply(buf, CONTROL_REPLY_SIZE, &out), -EPROTO);
	buf[0] ^= 1;
	buf[4] = 2;
	assert_int_equal(control_decode_reply(buf, CONTROL_REPLY_SIZE, &out), -EPROTO);
	buf[4] = 1;
	/* Status out of range. */
	buf[8] = CONTROL_RESULT_MAX + 1;
	assert_int_equal(control_decode_reply(buf, CONTROL_REPLY_SIZE, &out), -EPROTO);
	/* Status data with an error status, or with another command. */
	buf[8] = CONTROL_E_FAILED;
	assert_int_equal(control_decode_reply(buf, CONTROL_REPLY_SIZE, &out), -EPROTO);
	buf[8] = CONTROL_OK;
	buf[6] = CONTROL_CMD_STOP;
	assert_int_equal(control_decode_reply(buf, CONTROL_REPLY_SIZE, &out), -EPROTO);
	buf[6] = CONTROL_CMD_STATUS;
	assert_int_equal(control_decode_reply(buf, CONTROL_REPLY_SIZE, &out), 0);
	assert_int_equal(out.st.vcpus, 1);
}

static void test_format_status(void **state)
{
	struct control_status st = {CONTROL_STATE_RUNNING, 2, 256ull << 20, 0, 0};
	char buf[128];
	char small[10];

	assert_int_equal(control_format_status(&st, buf, sizeof(buf)),
			 (int)strlen("state=running vcpus=2 mem_mib=256 balloon_target_mib=0 "
				     "balloon_actual_mib=0"));
	assert_string_equal(buf, "state=running vcpus=2 mem_mib=256 balloon_target_mib=0 "
				 "balloon_actual_mib=0");
	st = (struct control_status){CONTROL_STATE_PAUSED, 64, 1ull << 40, (1ull << 30) + 4096,
				     (3ull << 20) + (1ull << 19)};
	assert_true(control_format_status(&st, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "state=paused vcpus=64 mem_mib=1048576 balloon_target_mib=1024 "
				 "balloon_actual_mib=3");
	st.state = CONTROL_STATE_STOPPING;
	control_format_status(&st, buf, sizeof(buf));
	assert_memory_equal(buf, "state=stopping ", 15);
	st.state = CONTROL_STATE_CREATED;
	control_format_status(&st, buf, sizeof(buf));
	assert_memory_equal(buf, "state=created ", 14);
	st.state = 99;
	control_format_status(&st, buf, sizeof(buf));
	assert_memory_equal(buf, "state=unknown ", 14);
	assert_int_equal(control_format_status(&st, small, sizeof(small)), -ENOSPC);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_int_equal(control_format_status(&st, NULL, 0), -ENOSPC);
	assert_string_equal(control_state_name(CONTROL_STATE_RUNNING), "running");
}

/* ---- Socket paths ---- */

static void test_path_directory(void **state)
{
	struct tmpdir t;
	struct control_server *s;
	struct vmm_err err;
	char want[160], slash[80];
	mode_t old = umask(0); /* the mode must not depend on the umask */

	tmpdir_init(&t);
	snprintf(want, sizeof(want), "%s/vmm-%ld.sock", t.dir, (long)getpid());
	assert_int_equal(control_listen(t.dir, &s, &err), 0);
	assert_string_equal(control_path(s), want);
	assert_true(S_ISSOCK(file_mode(want)));
	assert_int_equal(file_mode(want) & 07777, 0600);
	assert_true(control_fd(s) >= 0);
	control_close(s);
	assert_false(exists(want));

	/* A trailing slash gives the same name. */
	snprintf(slash, sizeof(slash), "%s//", t.dir);
	assert_int_equal(control_listen(slash, &s, &err), 0);
	assert_string_equal(control_path(s), want);
	control_close(s);

	/* A file path is used as is; also 0600 with a restrictive umask. */
	umask(0777);
	assert_int_equal(control_listen(t.path, &s, &err), 0);
	assert_string_equal(control_path(s), t.path);
	assert_int_equal(file_mode(t.path) & 07777, 0600);
	control_close(s);
	assert_false(exists(t.path));
	umask(old);
	/* No temporary names left behind. */
	{
		char cmd[160];

		snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", t.dir);
		assert_int_equal(system(cmd), 0);
	}
	tmpdir_destroy(&t);
}

static void test_path_stale_replaced(void **state)
{
	struct served sv;
	struct control_server *s;
	struct control_reply rep;
	struct vmm_err err;
	struct fake_vm vm = {0};
	struct control_ops ops = fake_ops(&vm);

	memset(&sv, 0, sizeof(sv));
	tmpdir_init(&sv.t);
	make_stale_socket(sv.t.path);
	/* A client sees no VMM there. */
	assert_int_equal(request(sv.t.path, CONTROL_CMD_STATUS, 0, &rep, &err), -ECONNREFUSED);
	assert_int_equal(control_listen(sv.t.path, &s, &err), 0);
	assert_int_equal(file_mode(sv.t.path) & 07777, 0600);
	assert_int_equal(control_start(s, &ops, &err), 0);
	assert_int_equal(request(sv.t.path, CONTROL_CMD_STATUS, 0, &rep, &err), 0);
	assert_int_equal(vm.statuses, 1);
	sv.s = s;
	served_stop(&sv);
}

static void test_path_live_refused(void **state)
{
	struct served sv;
	struct control_server *s2 = NULL;
	struct control_reply rep;
	struct vmm_err err;
	char want[200];

	served_start(&sv);
	assert_int_equal(control_listen(sv.t.path, &s2, &err), -EADDRINUSE);
	assert_null(s2);
	snprintf(want, sizeof(want), "%s is in use by a running VMM", sv.t.path);
	assert_string_equal(err.msg, want);
	/* The first server is untouched. */
	assert_int_equal(request(sv.t.path, CONTROL_CMD_STATUS, 0, &rep, &err), 0);
	/* Through the directory form too, when the names match. */
	{
		char dirsock[160];
		struct control_server *a, *b = NULL;

		snprintf(dirsock, sizeof(dirsock), "%s/vmm-%ld.sock", sv.t.dir, (long)getpid());
		assert_int_equal(control_listen(sv.t.dir, &a, &err), 0);
		assert_int_equal(control_listen(dirsock, &b, &err), -EADDRINUSE);
		assert_null(b);
		control_close(a);
	}
	served_stop(&sv);
}

/* A live socket of another kind (a stream listener) is not ours to take either. */
static void test_path_live_other_type(void **state)
{
	struct tmpdir t;
	struct sockaddr_un a;
	struct control_server *s = NULL;
	struct vmm_err err;
	int fd;

	tmpdir_init(&t);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	make_addr(&a, t.path);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(control_listen(t.path, &s, &err), -EADDRINUSE);
	assert_true(exists(t.path));
	/* Bound but not listening counts as stale. */
	close(fd);
	unlink(t.path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(control_listen(t.path, &s, &err), 0);
	control_close(s);
	close(fd);
	tmpdir_destroy(&t);
}

static void test_path_not_socket(void **state)
{
	struct tmpdir t;
	struct control_server *s = NULL;
	struct vmm_err err;
	char other[160], longp[200];
	FILE *fp;

	tmpdir_init(&t);
	/* A regular file is refused and left alone. */
	fp = fopen(t.path, "w");
	assert_non_null(fp);
	fputs("keep", fp);
	fclose(fp);
	assert_int_equal(control_listen(t.path, &s, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "not a socket"));
	assert_true(S_ISREG(file_mode(t.path)));
	unlink(t.path);

	/* A symlink (even to a stale socket) is refused, not followed. */
	snprintf(other, sizeof(other), "%s/target.sock", t.dir);
	make_stale_socket(other);
	assert_int_equal(symlink(other, t.path), 0);
	assert_int_equal(control_listen(t.path, &s, &err), -EEXIST);
	assert_true(S_ISLNK(file_mode(t.path)));
	assert_true(S_ISSOCK(file_mode(other)));
	unlink(t.path);

	/* A directory is not a socket path: listen() uses it as a directory instead. */
	/* Missing parent directory. */
	snprintf(other, sizeof(other), "%s/missing/ctl.sock", t.dir);
	assert_true(control_listen(other, &s, &err) < 0);
	assert_null(s);
	/* Too long for sun_path. */
	memset(longp, 'a', sizeof(longp));
	memcpy(longp, "/tmp/", 5);
	longp[sizeof(longp) - 1] = '\0';
	assert_int_equal(control_listen(longp, &s, &err), -ENAMETOOLONG);
	assert_int_equal(control_listen("", &s, &err), -EINVAL);
	assert_null(s);
	tmpdir_destroy(&t);
}

/* close() removes only its own socket file. */
static void test_close_keeps_successor(void **state)
{
	struct tmpdir t;
	struct control_server *s;
	struct vmm_err err;
	FILE *fp;

	tmpdir_init(&t);
	assert_int_equal(control_listen(t.path, &s, &err), 0);
	unlink(t.path);
	fp = fopen(t.path, "w");
	assert_non_null(fp);
	fclose(fp);
	control_close(s);
	assert_true(S_ISREG(file_mode(t.path)));
	control_close(NULL);
	tmpdir_destroy(&t);
}

/* ---- Server with fake VM operations ---- */

static void test_server_commands(void **state)
{
	struct served sv;
	struct control_reply rep;
	struct vmm_err err;

	served_start(&sv);
	assert_int_equal(request(sv.t.path, CONTROL_CMD_SUSPEND, 0, &rep, &err), 0);
	assert_int_equal(rep.status, CONTROL_OK);
	assert_int_equal(rep.command, CONTROL_CMD_SUSPEND);
	assert_int_equal(sv.vm.suspends, 1);
	assert_int_equal(request(sv.t.path, CONTROL_CMD_RESUME, 0, &rep, &err), 0);
	assert_int_equal(sv.vm.resumes, 1);
	assert_int_equal(request(sv.t.path, CONTROL_CMD_BALLOON, 128ull << 20, &rep, &err), 0);
	assert_int_equal(sv.vm.balloons, 1);
	assert_int_equal(sv.vm.balloon_bytes, 128ull << 20);
	assert_int_equal(request(sv.t.path, CONTROL_CMD_STATUS, 0, &rep, &err), 0);
	assert_int_equal(sv.vm.statuses, 1);
	assert_int_equal(rep.st.state, CONTROL_STATE_PAUSED);
	assert_int_equal(rep.st.vcpus, 3);
	assert_int_equal(rep.st.mem_bytes, 512ull << 20);
	assert_int_equal(rep.st.balloon_target, 128ull << 20);
	assert_int_equal(rep.st.balloon_actual, 64ull << 20);
	assert_int_equal(request(sv.t.path, CONTROL_CMD_STOP, 0, &rep, &err), 0);
	assert_int_equal(sv.vm.stops, 1);

	/* A bad balloon size never reaches the VM. */
	assert_int_equal(request(sv.t.path, CONTROL_CMD_BALLOON, 4095, &rep, &err), -EINVAL);
	assert_int_equal(rep.status, CONTROL_E_ARGUMENT);
	assert_int_equal(sv.vm.balloons, 1);
	assert_int_equal(request(sv.t.path, 42, 0, &rep, &err), -EOPNOTSUPP);
	assert_int_equal(rep.status, CONTROL_E_COMMAND);
	assert_int_equal(rep.command, 42);

	/* Errors from the VM side map to statuses. */
	{
		static const struct {
			int ret;
			uint32_t status;
			int client;
		} map[] = {
			{-EINVAL, CONTROL_E_ARGUMENT, -EINVAL},
			{-ERANGE, CONTROL_E_ARGUMENT, -EINVAL},
			{-ENODEV, CONTROL_E_UNSUPPORTED, -EOPNOTSUPP},
			{-EBUSY, CONTROL_E_STATE, -EBUSY},
			{-EALREADY, CONTROL_E_STATE, -EBUSY},
			{-ESHUTDOWN, CONTROL_E_STATE, -EBUSY},
			{-EIO, CONTROL_E_FAILED, -EIO},
			{-ENOMEM, CONTROL_E_FAILED, -ENOMEM},
			{1, CONTROL_E_FAILED, -EIO},
		};

		for (unsigned int i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
			__atomic_store_n(&sv.vm.ret, map[i].ret, __ATOMIC_SEQ_CST);
			assert_int_equal(
				request(sv.t.path, CONTROL_CMD_BALLOON, 1ull << 30, &rep, &err),
				map[i].client);
			assert_int_equal(rep.status, map[i].status);
			assert_non_null(strstr(err.msg, "balloon refused"));
		}
		/* A failed status carries no status data. */
		assert_int_equal(request(sv.t.path, CONTROL_CMD_STATUS, 0, &rep, &err), -EIO);
		assert_int_equal(rep.st.vcpus, 0);
		__atomic_store_n(&sv.vm.ret, 0, __ATOMIC_SEQ_CST);
	}
	served_stop(&sv);
}

/* A VM without some operations says so. */
static void test_server_unsupported(void **state)
{
	struct tmpdir t;
	struct control_server *s;
	struct control_ops ops = {0};
	struct control_reply rep;
	struct vmm_err err;

	tmpdir_init(&t);
	assert_int_equal(control_listen(t.path, &s, &err), 0);
	assert_int_equal(control_start(s, &ops, &err), 0);
	assert_int_equal(control_start(s, &ops, &err), -EBUSY);
	for (uint16_t c = CONTROL_CMD_STOP; c <= CONTROL_CMD_STATUS; c++) {
		assert_int_equal(request(t.path, c, 0, &rep, &err), -EOPNOTSUPP);
		assert_int_equal(rep.status, CONTROL_E_UNSUPPORTED);
		assert_int_equal(rep.error, ENOTSUP);
	}
	control_close(s);
	tmpdir_destroy(&t);
}

struct hammer {
	const char *path;
	int n;
	int ok;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;

	for (int i = 0; i < h->n; i++) {
		struct control_reply rep;
		struct vmm_err err;

		if (request(h->path, CONTROL_CMD_STATUS, 0, &rep, &err) == 0 && rep.st.vcpus == 3)
			h->ok++;
	}
	return NULL;
}

/*
 * Clients that send nothing, garbage, half a message, too much, a wrong
 * version, or hang up mid-way get an error reply or are dropped, while a
 * well-behaved client in another thread is served throughout.
 */
static void test_server_hostile_clients(void **state)
{
	struct served sv;
	struct hammer h;
	pthread_t th;
	struct control_reply rep;
	uint8_t buf[1024];
	int idle, fd;

	served_start(&sv);
	h = (struct hammer){.path = sv.t.path, .n = 200};
	/* Connects and sends nothing, for the whole test. */
	idle = raw_connect(sv.t.path);
	assert_int_equal(pthread_create(&th, NULL, hammer_thread, &h), 0);

	for (unsigned int round = 0; round < 20; round++) {
		/* Garbage. */
		fd = raw_connect(sv.t.path);
		memset(buf, 0x5a, sizeof(buf));
		raw_send(fd, buf, CONTROL_REQUEST_SIZE);
		raw_reply(fd, &rep);
		assert_int_equal(rep.status, CONTROL_E_MALFORMED);
		assert_int_equal(rep.command, 0);
		/* The same connection still works after a bad message. */
		encode(CONTROL_CMD_STATUS, 0, buf);
		raw_send(fd, buf, CONTROL_REQUEST_SIZE);
		raw_reply(fd, &rep);
		assert_int_equal(rep.status, CONTROL_OK);
		/* Half a message (the header only). */
		raw_send(fd, buf, 8);
		raw_reply(fd, &rep);
		assert_int_equal(rep.status, CONTROL_E_MALFORMED);
		assert_int_equal(rep.command, CONTROL_CMD_STATUS);
		/* Too long, and far too long (more than the server reads). */
		raw_send(fd, buf, CONTROL_REQUEST_SIZE + 1);
		raw_reply(fd, &rep);
		assert_int_equal(rep.status, CONTROL_E_MALFORMED);
		raw_send(fd, buf, sizeof(buf));
		raw_reply(fd, &rep);
		assert_int_equal(rep.status, CONTROL_E_MALFORMED);
		/* Wrong version. */
		buf[4] = 9;
		raw_send(fd, buf, CONTROL_REQUEST_SIZE);
		raw_reply(fd, &rep);
		assert_int_equal(rep.status, CONTROL_E_VERSION);
		/* Unknown command. */
		encode(77, 0, buf);
		raw_send(fd, buf, CONTROL_REQUEST_SIZE);
		raw_reply(fd, &rep);
		assert_int_equal(rep.status, CONTROL_E_COMMAND);
		close(fd);

		/* Half a message, then hang up without reading the reply. */
		fd = raw_connect(sv.t.path);
		encode(CONTROL_CMD_STOP, 0, buf);
		raw_send(fd, buf, 5);
		close(fd);
		/* A whole stop request, then hang up at once. */
		fd = raw_connect(sv.t.path);
		raw_send(fd, buf, CONTROL_REQUEST_SIZE);
		close(fd);
		/* Connect and hang up. */
		close(raw_connect(sv.t.path));
		/* An empty packet: the server hangs up. */
		fd = raw_connect(sv.t.path);
		raw_send(fd, buf, 0);
		assert_true(raw_closed(fd));
		close(fd);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(h.ok, h.n);
	/* The idle client is still connected and can still ask. */
	encode(CONTROL_CMD_RESUME, 0, buf);
	raw_send(idle, buf, CONTROL_REQUEST_SIZE);
	raw_reply(idle, &rep);
	assert_int_equal(rep.status, CONTROL_OK);
	close(idle);
	/* Stop requests from clients that hung up still went through (at most 20). */
	assert_true(sv.vm.stops <= 20);
	served_stop(&sv);
}

/* A client that sends requests but never reads the replies is dropped, not waited for. */
static void test_server_client_not_reading(void **state)
{
	struct served sv;
	struct control_reply rep;
	struct vmm_err err;
	uint8_t buf[CONTROL_REQUEST_SIZE];
	struct timeval tv = {5, 0};
	int fd, sent = 0;
	ssize_t n;

	served_start(&sv);
	fd = raw_connect(sv.t.path);
	/* A failure guard only: a blocked send gives up after 5 s. */
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
	encode(CONTROL_CMD_STATUS, 0, buf);
	for (;;) {
		n = send(fd, buf, sizeof(buf), MSG_NOSIGNAL);
		if (n < 0)
			break;
		assert_true(++sent < 1000000);
	}
	assert_true(errno == EPIPE || errno == ECONNRESET);
	close(fd);
	assert_int_equal(request(sv.t.path, CONTROL_CMD_STATUS, 0, &rep, &err), 0);
	served_stop(&sv);
}

/* More clients than slots: the one idle the longest makes room; the newest is served. */
static void test_server_too_many_clients(void **state)
{
	struct served sv;
	struct control_reply rep;
	struct vmm_err err;
	int fds[CONTROL_MAX_CLIENTS + 4];
	const int n = CONTROL_MAX_CLIENTS + 4;

	served_start(&sv);
	for (int i = 0; i < n; i++) {
		uint8_t buf[CONTROL_REQUEST_SIZE];

		fds[i] = raw_connect(sv.t.path);
		/* One request each, so that they are accepted in this order. */
		encode(CONTROL_CMD_STATUS, 0, buf);
		raw_send(fds[i], buf, sizeof(buf));
		raw_reply(fds[i], &rep);
	}
	assert_int_equal(request(sv.t.path, CONTROL_CMD_STATUS, 0, &rep, &err), 0);
	/* The 5 oldest were evicted (4 for the extra raw clients, 1 for request()). */
	for (int i = 0; i < 5; i++)
		assert_true(raw_closed(fds[i]));
	for (int i = 5; i < n; i++) {
		uint8_t buf[CONTROL_REQUEST_SIZE];

		encode(CONTROL_CMD_STATUS, 0, buf);
		raw_send(fds[i], buf, sizeof(buf));
		raw_reply(fds[i], &rep);
		assert_int_equal(rep.status, CONTROL_OK);
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
	served_stop(&sv);
}

/* Embedded in the caller's loop: control_fd() + control_handle(), no thread. */
static void test_embedded_loop(void **state)
{
	struct tmpdir t;
	struct control_server *s;
	struct fake_vm vm = {0};
	struct control_ops ops = fake_ops(&vm);
	struct control_reply rep;
	struct vmm_err err;
	uint8_t buf[CONTROL_MSG_MAX];
	int fd;

	tmpdir_init(&t);
	assert_int_equal(control_listen(t.path, &s, &err), 0);
	/* Nothing to do: returns at once. */
	assert_int_equal(control_handle(s, &ops), 0);
	fd = raw_connect(t.path);
	encode(CONTROL_CMD_BALLOON, 1ull << 20, buf);
	raw_send(fd, buf, CONTROL_REQUEST_SIZE);
	for (;;) {
		struct pollfd p[2] = {{.fd = control_fd(s), .events = POLLIN},
				      {.fd = fd, .events = POLLIN}};

		assert_true(poll(p, 2, WAIT_MS) > 0);
		if (p[1].revents)
			break;
		assert_int_equal(control_handle(s, &ops), 0);
	}
	raw_reply(fd, &rep);
	assert_int_equal(rep.status, CONTROL_OK);
	assert_int_equal(rep.command, CONTROL_CMD_BALLOON);
	assert_int_equal(vm.balloons, 1);
	assert_int_equal(vm.balloon_bytes, 1ull << 20);
	close(fd);
	control_close(s);
	assert_false(exists(t.path));
	tmpdir_destroy(&t);
}

/* ---- Client against bad servers ---- */

struct bad_server {
	int listen_fd;
	int mode; /* 0: reply garbage, 1: wrong command, 2: hang up, 3: oversized reply */
};

static void *bad_server_thread(void *arg)
{
	struct bad_server *b = arg;
	int fd = accept(b->listen_fd, NULL, NULL);
	uint8_t buf[512] = {0};
	struct control_reply rep = {.command = CONTROL_CMD_SUSPEND};

	if (fd < 0)
		return NULL;
	if (recv(fd, buf, sizeof(buf), 0) < 0)
		abort();
	if (b->mode == 0) {
		memset(buf, 0xee, CONTROL_REPLY_SIZE);
		if (send(fd, buf, CONTROL_REPLY_SIZE, MSG_NOSIGNAL) < 0)
			abort();
	} else if (b->mode == 1) {
		control_encode_reply(&rep, buf, sizeof(buf));
		if (send(fd, buf, CONTROL_REPLY_SIZE, MSG_NOSIGNAL) < 0)
			abort();
	} else if (b->mode == 3) {
		rep.command = CONTROL_CMD_STATUS;
		control_encode_reply(&rep, buf, sizeof(buf));
		if (send(fd, buf, sizeof(buf), MSG_NOSIGNAL) < 0)
			abort();
	}
	close(fd);
	return NULL;
}

static void test_client_errors(void **state)
{
	struct tmpdir t;
	struct control_reply rep;
	struct vmm_err err;
	static const int expect[] = {-EPROTO, -EPROTO, -ECONNRESET, -EPROTO};

	tmpdir_init(&t);
	assert_int_equal(request(t.path, CONTROL_CMD_STATUS, 0, &rep, &err), -ENOENT);
	assert_int_equal(request("", CONTROL_CMD_STATUS, 0, &rep, &err), -EINVAL);
	for (int mode = 0; mode < 4; mode++) {
		struct bad_server b = {.mode = mode};
		struct sockaddr_un a;
		pthread_t th;

		b.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		make_addr(&a, t.path);
		assert_int_equal(bind(b.listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(listen(b.listen_fd, 1), 0);
		assert_int_equal(pthread_create(&th, NULL, bad_server_thread, &b), 0);
		assert_int_equal(request(t.path, CONTROL_CMD_STATUS, 0, &rep, &err), expect[mode]);
		assert_int_equal(rep.status, 0);
		assert_int_equal(rep.st.vcpus, 0);
		pthread_join(th, NULL);
		close(b.listen_fd);
		unlink(t.path);
	}
	tmpdir_destroy(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_roundtrip),
		cmocka_unit_test(test_request_malformed),
		cmocka_unit_test(test_reply_roundtrip),
		cmocka_unit_test(test_reply_malformed),
		cmocka_unit_test(test_format_status),
		cmocka_unit_test(test_path_directory),
		cmocka_unit_test(test_path_stale_replaced),
		cmocka_unit_test(test_path_live_refused),
		cmocka_unit_test(test_path_live_other_type),
		cmocka_unit_test(test_path_not_socket),
		cmocka_unit_test(test_close_keeps_successor),
		cmocka_unit_test(test_server_commands),
		cmocka_unit_test(test_server_unsupported),
		cmocka_unit_test(test_server_hostile_clients),
		cmocka_unit_test(test_server_client_not_reading),
		cmocka_unit_test(test_server_too_many_clients),
		cmocka_unit_test(test_embedded_loop),
		cmocka_unit_test(test_client_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
