/*
 * Unit tests for the device sandbox: policy files, and virtio devices run through the proxy in
 * a jailed child (namespaces, no capabilities, seccomp) on guest RAM shared with it. No KVM.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devices/disk.h"
#include "devices/qcow2.h"
#include "devices/virtio_balloon.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "devices/virtio_rng.h"
#include "lib/sandbox.h"
#include "lib/virtio/proxy.h"
#include "virtio_test_util.h"

#ifndef TEST_POLICY_DIR
#error "TEST_POLICY_DIR must name the source tree's policies/ directory"
#endif

#define RAM_SIZE (4u << 20)
#define QSIZE	 16

/* ---- Helpers ---- */

static struct sandbox_config sb_config(const char *policy)
{
	struct sandbox_config c = {
		.policy_dir = TEST_POLICY_DIR,
		.policy_name = policy,
		.namespaces = true,
	};

	return c;
}

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Wait for the child's death through the wait fd, then reap it into @why. */
static void wait_death(struct virtio_proxy *px, char *why, size_t len)
{
	if (!vt_poll_in(virtio_proxy_wait_fd(px), VT_WAIT_MS))
		fail_msg("the device process did not die within %d ms", VT_WAIT_MS);
	assert_int_equal(virtio_proxy_reap(px, why, len), 0);
}

/* activate() through the proxy; on failure, say how the child ended if it did. */
static void activate_ok(struct vt_dev *d, struct virtio_proxy *px)
{
	int ret = d->dev.ops->activate(d->dev.dev, &d->env.act);
	char why[200] = "still running";

	if (ret == 0)
		return;
	if (vt_poll_in(virtio_proxy_wait_fd(px), VT_WAIT_MS))
		virtio_proxy_reap(px, why, sizeof(why));
	fail_msg("activate: %d (the device process: %s)", ret, why);
}

/* The value after "@key:" in /proc/@pid/status, blanks trimmed. */
static bool proc_status(pid_t pid, const char *key, char *out, size_t len)
{
	char path[64], line[256];
	size_t klen = strlen(key);
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char *v = line + klen + 1;

		if (strncmp(line, key, klen) || line[klen] != ':')
			continue;
		while (*v == ' ' || *v == '\t')
			v++;
		v[strcspn(v, "\n")] = 0;
		snprintf(out, len, "%s", v);
		found = true;
		break;
	}
	fclose(f);
	return found;
}

/* /proc/@pid/status has "@key: @want". */
static void expect_status(pid_t pid, const char *key, const char *want)
{
	char val[128];

	if (!proc_status(pid, key, val, sizeof(val)))
		fail_msg("no %s in /proc/%d/status", key, (int)pid);
	assert_string_equal(val, want);
}

/*
 * The jailed process is not dumpable: only root may look at its namespaces,
 * descriptors and mappings. Elsewhere those checks are left out.
 */
static bool can_inspect(void)
{
	return geteuid() == 0;
}

/* Whether a child of ours may make the namespaces a jail asks for (directly or in a user one). */
static bool host_allows_namespaces(void)
{
	int flags = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(unshare(flags) == 0 || unshare(flags | CLONE_NEWUSER) == 0 ? 0 : 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void ns_link(const char *pid, const char *ns, char *out, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%s/ns/%s", pid, ns);
	n = readlink(path, out, len - 1);
	assert_true(n > 0);
	out[n] = 0;
}

/* Write @text to @dir/@name. */
static void write_policy(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "we");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void make_temp_dir(char *dir, size_t len)
{
	const char *t = getenv("TMPDIR");

	snprintf(dir, len, "%s/test_sandbox.XXXXXX", t && *t ? t : "/tmp");
	assert_non_null(mkdtemp(dir));
}

static void remove_temp_dir(const char *dir)
{
	struct dirent *e;
	DIR *d = opendir(dir);

	assert_non_null(d);
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
	rmdir(dir);
}

/* ---- Policy files ---- */

static void test_policy_grammar(void **state)
{
	struct sandbox_policy *p = NULL;
	struct vmm_err err = {""};
	char dir[PATH_MAX], path[PATH_MAX + 16], *text;
	size_t len;
	int fd;

	make_temp_dir(dir, sizeof(dir));
	write_policy(dir, "base.policy", "# a comment\n\nread\n  write   # trailing comment\n");
	write_policy(dir, "dev.policy",
		     "@include base.policy\n"
		     "ioctl: arg1 == TUNSETOFFLOAD || arg1 == 0x5421\n"
		     "mmap: arg2 & PROT_EXEC == 0\n"
		     "fallocate: arg1 == FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE && arg0 >= 3\n"
		     "clone3: return ENOSYS\n"
		     "getrandom\n"
		     "read\n"
		     "ioctl: arg1 == 21537\n");
	if (sandbox_policy_load(dir, "dev", &p, &err))
		fail_msg("%s", err.msg);
	snprintf(path, sizeof(path), "%s/dev.policy", dir);
	assert_string_equal(sandbox_policy_path(p), path);
	/* The compiled filter holds the rules. */
	fd = memfd_create("pfc", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(sandbox_policy_export(p, fd), 0);
	len = (size_t)lseek(fd, 0, SEEK_END);
	text = calloc(1, len + 1);
	assert_int_equal(pread(fd, text, len, 0), (ssize_t)len);
	close(fd);
	assert_non_null(strstr(text, "\"getrandom\""));
	assert_non_null(strstr(text, "\"ioctl\""));
	assert_non_null(strstr(text, "action ERRNO(38)"));
	assert_non_null(strstr(text, "\"mmap\""));
	assert_null(strstr(text, "\"openat\""));
	free(text);
	sandbox_policy_free(p);
	remove_temp_dir(dir);
}

/* Each malformed policy is refused with "policy FILE line N: ..." naming what is wrong. */
static void test_policy_errors(void **state)
{
	static const struct {
		const char *text;
		unsigned int line;
		const char *msg;
	} cases[] = {
		{"read\nfoo_bar_baz\n", 2, "unknown system call 'foo_bar_baz'"},
		{"read:\n", 1, "expected conditions or 'return ERRNO'"},
		{"read junk\n", 1, "expected ':'"},
		{"ioctl: arg6 == 1\n", 1, "expected arg0 .. arg5"},
		{"ioctl: arg1 = 1\n", 1, "expected a comparison"},
		{"ioctl: arg1 == NOT_A_CONSTANT\n", 1, "unknown constant 'NOT_A_CONSTANT'"},
		{"ioctl: arg1 == 12ab\n", 1, "bad number"},
		{"ioctl: arg1 == -1\n", 1, "negative numbers"},
		{"mmap: arg2 & PROT_EXEC != 0\n", 1, "can only be compared with =="},
		{"mmap: arg2 & PROT_EXEC == PROT_READ\n", 1, "can never hold"},
		{"read: arg0 == 1 && arg0 == 2\n", 1, "arg0 is compared twice"},
		{"read: arg0 == 1 &&\n", 1, "expected arg0 .. arg5"},
		{"read: arg0 == 1 ||| arg0 == 2\n", 1, "expected arg0 .. arg5 at '| arg0"},
		{"read: arg0 == 1 xx\n", 1, "expected '&&', '||'"},
		{"ioctl\n\nioctl: arg1 == 1\n", 3,
		 "'ioctl' is allowed without conditions in bad.policy line 1"},
		{"ioctl: arg1 == 1\nioctl\n", 2, "'ioctl' is allowed with conditions"},
		{"clone3: return ENOSYS\nclone3\n", 2, "'clone3' has a different action"},
		{"clone3: return ENOSYS\nclone3: return EPERM\n", 2, "different action"},
		{"clone3: return EBOGUS\n", 1, "unknown errno 'EBOGUS'"},
		{"clone3: return 5000\n", 1, "out of range"},
		{"@foo bar\n", 1, "unknown directive"},
		{"@include\n", 1, "@include needs a file name"},
		{"@include ../etc/passwd\n", 1, "not '../etc/passwd'"},
		{"@include missing.policy\n", 1, "cannot open included policy"},
		{"@include bad.policy\n", 1, "nests more than 8 deep"},
	};
	char dir[PATH_MAX], want[PATH_MAX + 64];

	make_temp_dir(dir, sizeof(dir));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sandbox_policy *p = NULL;
		struct vmm_err err = {""};

		write_policy(dir, "bad.policy", cases[i].text);
		assert_int_equal(sandbox_policy_load(dir, "bad", &p, &err), -EINVAL);
		assert_null(p);
		snprintf(want, sizeof(want), "policy %s/bad.policy line %u: ", dir, cases[i].line);
		if (strncmp(err.msg, want, strlen(want)) || !strstr(err.msg, cases[i].msg))
			fail_msg("case %zu: got \"%s\", want \"%s%s\"", i, err.msg, want,
				 cases[i].msg);
	}
	/* An error in an included file names that file and its line. */
	{
		struct sandbox_policy *p = NULL;
		struct vmm_err err = {""};

		write_policy(dir, "inner.policy", "read\n\nwrite: arg9 == 1\n");
		write_policy(dir, "bad.policy", "@include inner.policy\n");
		assert_int_equal(sandbox_policy_load(dir, "bad", &p, &err), -EINVAL);
		snprintf(want, sizeof(want), "policy %s/inner.policy line 3: ", dir);
		assert_true(!strncmp(err.msg, want, strlen(want)));
	}
	/* A missing file, a name with a slash, a directory. */
	{
		struct sandbox_policy *p = NULL;
		struct vmm_err err = {""};

		assert_int_equal(sandbox_policy_load(dir, "nope", &p, &err), -ENOENT);
		snprintf(want, sizeof(want), "cannot open policy %s/nope.policy: ", dir);
		assert_true(!strncmp(err.msg, want, strlen(want)));
		assert_int_equal(sandbox_policy_load(dir, "../x", &p, &err), -EINVAL);
		snprintf(want, sizeof(want), "%s/sub.policy", dir);
		assert_int_equal(mkdir(want, 0700), 0);
		assert_int_equal(sandbox_policy_load(dir, "sub", &p, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "not a regular file"));
		rmdir(want);
	}
	remove_temp_dir(dir);
}

/* The shipped policies load. */
static void test_policies_shipped(void **state)
{
	static const char *const names[] = {"common", "virtio_rng", "virtio_blk", "virtio_net",
					    "virtio_balloon"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct sandbox_policy *p = NULL;
		struct vmm_err err = {""};

		if (sandbox_policy_load(TEST_POLICY_DIR, names[i], &p, &err))
			fail_msg("%s: %s", names[i], err.msg);
		sandbox_policy_free(p);
	}
}

/* A missing or malformed policy fails the spawn before any child runs; the device stays ours. */
static void test_spawn_refuses_bad_policy(void **state)
{
	struct sandbox_config sb = sb_config("no_such_device");
	struct virtio_device dev, orig;
	struct virtio_proxy *px = NULL;
	struct vmm_err err = {""};
	struct vt_guest g;
	char dir[PATH_MAX];

	vt_guest_init_shared(&g, RAM_SIZE);
	assert_int_equal(virtio_rng_create(&dev, NULL), 0);
	orig = dev;
	assert_int_equal(virtio_proxy_spawn(&dev, &g.mem, &sb, &px, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "cannot open policy"));
	assert_non_null(strstr(err.msg, "no_such_device.policy"));
	assert_ptr_equal(dev.ops, orig.ops);
	assert_ptr_equal(dev.dev, orig.dev);
	assert_null(px);

	make_temp_dir(dir, sizeof(dir));
	write_policy(dir, "virtio_rng.policy", "read\nwrite: arg0 ==\n");
	sb.policy_dir = dir;
	sb.policy_name = NULL; /* from the device's name: virtio_rng */
	assert_int_equal(virtio_proxy_spawn(&dev, &g.mem, &sb, &px, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "virtio_rng.policy line 2: "));
	assert_ptr_equal(dev.ops, orig.ops);
	remove_temp_dir(dir);

	dev.ops->destroy(dev.dev);
	vt_guest_destroy(&g);
}

/*
 * A device moved into a jailed child: d.dev is the proxy's stand-in (its
 * ops reach the child), d.g is shared with the child.
 */
struct pxfx {
	struct vt_dev d;
	struct virtio_proxy *px;
};

/* Move @d's device into a jailed child under @sb; the test fails if it cannot. */
static struct virtio_proxy *spawn(struct vt_dev *d, const struct sandbox_config *sb)
{
	struct virtio_proxy *px;
	struct vmm_err err = {""};

	if (virtio_proxy_spawn(&d->dev, &d->g.mem, sb, &px, &err))
		fail_msg("virtio_proxy_spawn: %s", err.msg);
	return px;
}

static void pxfx_free(struct pxfx *f)
{
	vt_dev_destroy(&f->d);
	free(f);
}

/* ---- virtio-rng through the proxy ---- */

static struct pxfx *rng_new(const struct sandbox_config *sb, unsigned int flags)
{
	struct pxfx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	vt_guest_init_shared(&f->d.g, RAM_SIZE);
	vt_dev_queues_init(&f->d, 1, QSIZE, flags, 0);
	assert_int_equal(virtio_rng_create(&f->d.dev, NULL), 0);
	f->px = spawn(&f->d, sb);
	assert_ptr_equal(f->d.dev.dev, f->px);
	return f;
}

static void test_rng_serves(void **state)
{
	struct sandbox_config sb = sb_config("virtio_rng");
	struct pxfx *f = rng_new(&sb, VT_EVENT_IDX | VT_INDIRECT);
	struct vt_buf b[2] = {vt_buf_new(&f->d.g, 16, true), vt_buf_new(&f->d.g, 48, true)};
	uint8_t cfg[4] = {1, 2, 3, 4};
	uint16_t head;
	uint32_t id, len;

	assert_string_equal(f->d.dev.ops->name, "virtio-rng");
	assert_int_equal(f->d.dev.ops->device_id, VIRTIO_ID_RNG);
	assert_int_equal(f->d.dev.ops->features(f->d.dev.dev), 0);
	f->d.dev.ops->config_read(f->d.dev.dev, 0, cfg, 0);
	assert_int_equal(cfg[0], 1);
	activate_ok(&f->d, f->px);
	/* Both kinds of chain, many rounds: bytes land in guest RAM, interrupts on the call fd. */
	for (unsigned int round = 0; round < 20; round++) {
		memset(vt_host(&f->d.g, b[0].gpa, 16), 0, 16);
		memset(vt_host(&f->d.g, b[1].gpa, 48), 0, 48);
		head = round & 1 ? vt_add_chain(&f->d.vq[0], b, 2)
				 : vt_add_chain_indirect(&f->d.vq[0], b, 2);
		vt_dev_kick(&f->d, 0);
		vt_dev_wait_used(&f->d, 0, &id, &len);
		assert_int_equal(id, head);
		assert_int_equal(len, 64);
		assert_false(vt_guest_filled(&f->d.g, b[0].gpa, 16, 0));
		assert_false(vt_guest_filled(&f->d.g, b[1].gpa, 48, 0));
	}
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	pxfx_free(f);
}

/* A broken ring: NEEDS_RESET comes back through the event socket; reset and restart work. */
static void test_rng_needs_reset(void **state)
{
	struct sandbox_config sb = sb_config("virtio_rng");
	struct pxfx *f = rng_new(&sb, 0);
	struct vt_buf good = vt_buf_new(&f->d.g, 8, true);
	uint32_t len;

	activate_ok(&f->d, f->px);
	vt_set_avail_idx(&f->d.vq[0], QSIZE + 1);
	vt_dev_kick(&f->d, 0);
	assert_int_equal(vt_eventfd_wait(f->d.env.reset_fd, VT_WAIT_MS), 1);

	f->d.dev.ops->reset(f->d.dev.dev);
	assert_int_equal(virtq_start(&f->d.vq[0].q), 0);
	vt_queue_set_indexes(&f->d.vq[0], 0);
	vt_add_chain(&f->d.vq[0], &good, 1);
	activate_ok(&f->d, f->px);
	vt_dev_wait_used(&f->d, 0, NULL, &len);
	assert_int_equal(len, 8);
	/* Activating twice is refused by the device, through the proxy. */
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &f->d.env.act), -EBUSY);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	pxfx_free(f);
}

/* Queue indexes that do not start at 0 reach the child (the wrap-around case). */
static void test_rng_indexes(void **state)
{
	struct sandbox_config sb = sb_config("virtio_rng");
	struct pxfx *f = rng_new(&sb, VT_EVENT_IDX);
	struct vt_buf b = vt_buf_new(&f->d.g, 32, true);

	vt_queue_set_indexes(&f->d.vq[0], 65530);
	activate_ok(&f->d, f->px);
	for (unsigned int i = 0; i < 12; i++) {
		uint32_t len;

		vt_add_chain(&f->d.vq[0], &b, 1);
		vt_dev_kick(&f->d, 0);
		vt_dev_wait_used(&f->d, 0, NULL, &len);
		assert_int_equal(len, 32);
	}
	assert_int_equal(vt_used_idx(&f->d.vq[0]), (uint16_t)(65530 + 12));
	pxfx_free(f);
}

/* The child: no capabilities, its own namespaces, an empty root, only its descriptors. */
static void test_jail(void **state)
{
	struct sandbox_config sb = sb_config("virtio_rng");
	int sentinel = memfd_create("sandbox-sentinel", MFD_CLOEXEC);
	static const char *const nss[] = {"pid", "net", "mnt", "ipc", "uts"};
	char val[128], self[128], child[128], path[PATH_MAX], pidstr[16];
	unsigned int sockets = 0, eventfds = 0, n = 0;
	struct pxfx *f;
	struct dirent *e;
	unsigned int ns;
	DIR *d;
	pid_t pid;

	assert_true(sentinel >= 0);
	f = rng_new(&sb, 0);
	pid = virtio_proxy_pid(f->px);
	assert_true(pid > 0 && pid != getpid());
	snprintf(pidstr, sizeof(pidstr), "%d", (int)pid);
	ns = virtio_proxy_namespaces(f->px);

	expect_status(pid, "CapEff", "0000000000000000");
	expect_status(pid, "CapPrm", "0000000000000000");
	expect_status(pid, "CapInh", "0000000000000000");
	expect_status(pid, "CapAmb", "0000000000000000");
	expect_status(pid, "NoNewPrivs", "1");
	expect_status(pid, "Seccomp", "2");
	if (getuid() == 0) {
		expect_status(pid, "CapBnd", "0000000000000000");
		expect_status(pid, "Uid", "65534\t65534\t65534\t65534");
		expect_status(pid, "Gid", "65534\t65534\t65534\t65534");
	}

	if (!can_inspect()) {
		close(sentinel);
		pxfx_free(f);
		return;
	}
	/* Where the host allows namespaces, the device has them, each differing from ours. */
	if (host_allows_namespaces())
		assert_int_equal(ns & (SANDBOX_NS_PID | SANDBOX_NS_NET | SANDBOX_NS_MOUNT |
				       SANDBOX_NS_IPC | SANDBOX_NS_UTS | SANDBOX_EMPTY_ROOT),
				 SANDBOX_NS_PID | SANDBOX_NS_NET | SANDBOX_NS_MOUNT |
					 SANDBOX_NS_IPC | SANDBOX_NS_UTS | SANDBOX_EMPTY_ROOT);
	for (size_t i = 0; i < sizeof(nss) / sizeof(nss[0]); i++) {
		static const unsigned int bits[] = {SANDBOX_NS_PID, SANDBOX_NS_NET,
						    SANDBOX_NS_MOUNT, SANDBOX_NS_IPC,
						    SANDBOX_NS_UTS};

		ns_link("self", nss[i], self, sizeof(self));
		ns_link(pidstr, nss[i], child, sizeof(child));
		if (ns & bits[i])
			assert_string_not_equal(self, child);
		else
			assert_string_equal(self, child);
	}
	if (ns & SANDBOX_NS_PID) {
		/* pid 1 of its namespace. */
		assert_true(proc_status(pid, "NSpid", val, sizeof(val)));
		assert_non_null(strstr(val, "\t1"));
	}
	if (ns & SANDBOX_EMPTY_ROOT) {
		/* Its root is empty: no /etc, no /proc. */
		snprintf(path, sizeof(path), "/proc/%d/root/etc/passwd", (int)pid);
		assert_int_equal(access(path, F_OK), -1);
		assert_int_equal(errno, ENOENT);
		snprintf(path, sizeof(path), "/proc/%d/root/proc/self", (int)pid);
		assert_int_equal(access(path, F_OK), -1);
	}

	/*
	 * Descriptors: /dev/null on 0 and 1, the log fd (2), the two sockets, the rng's stop
	 * eventfd. None of ours.
	 */
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d))) {
		char target[PATH_MAX];
		ssize_t r;

		if (e->d_name[0] == '.')
			continue;
		r = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
		assert_true(r > 0);
		target[r] = 0;
		n++;
		if (!strncmp(target, "socket:", 7))
			sockets++;
		else if (!strcmp(target, "anon_inode:[eventfd]"))
			eventfds++;
		else if (!strcmp(e->d_name, "0") || !strcmp(e->d_name, "1"))
			assert_string_equal(target, "/dev/null");
		else if (strcmp(e->d_name, "2"))
			fail_msg("the child holds fd %s -> %s", e->d_name, target);
		assert_null(strstr(target, "sandbox-sentinel"));
	}
	closedir(d);
	assert_int_equal(sockets, 2);
	assert_int_equal(eventfds, 1);
	assert_int_equal(n, 6);
	close(sentinel);
	pxfx_free(f);
}

/* Whether /proc/@pid/maps has a mapping that starts at @addr. */
static bool maps_has(pid_t pid, const void *addr)
{
	char path[64], line[512], want[32];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	snprintf(want, sizeof(want), "%lx-", (unsigned long)(uintptr_t)addr);
	f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, want, strlen(want)))
			found = true;
	fclose(f);
	return found;
}

/* Another VM's guest RAM in the same process is not mapped in this VM's device process. */
static void test_foreign_ram(void **state)
{
	struct sandbox_config sb = sb_config("virtio_rng");
	struct guest_mem other;
	struct pxfx *f;

	assert_int_equal(gm_init(&other, RAM_SIZE, NULL), 0);
	f = rng_new(&sb, 0);
	assert_true(maps_has(getpid(), other.base));
	if (can_inspect()) {
		assert_true(maps_has(virtio_proxy_pid(f->px), f->d.g.mem.base));
		assert_false(maps_has(virtio_proxy_pid(f->px), other.base));
	}
	pxfx_free(f);
	gm_destroy(&other);
}

/* Without namespaces: still no capabilities, the filter, no other descriptors. */
static void test_jail_no_namespaces(void **state)
{
	struct sandbox_config sb = sb_config("virtio_rng");
	struct pxfx *f;
	char self[128], child[128], pidstr[16];
	struct vt_buf b;
	uint32_t len;

	sb.namespaces = false;
	f = rng_new(&sb, 0);
	assert_int_equal(virtio_proxy_namespaces(f->px), 0);
	if (can_inspect()) {
		snprintf(pidstr, sizeof(pidstr), "%d", (int)virtio_proxy_pid(f->px));
		ns_link("self", "net", self, sizeof(self));
		ns_link(pidstr, "net", child, sizeof(child));
		assert_string_equal(self, child);
	}
	expect_status(virtio_proxy_pid(f->px), "CapEff", "0000000000000000");
	expect_status(virtio_proxy_pid(f->px), "Seccomp", "2");
	b = vt_buf_new(&f->d.g, 100, true);
	activate_ok(&f->d, f->px);
	vt_add_chain(&f->d.vq[0], &b, 1);
	vt_dev_kick(&f->d, 0);
	vt_dev_wait_used(&f->d, 0, NULL, &len);
	assert_int_equal(len, 100);
	pxfx_free(f);
}

/* ---- A device that breaks its policy ---- */

struct evil {
	pthread_t thread;
	bool running;
};

static uint64_t evil_features(void *dev)
{
	return 1;
}

static void evil_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	memset(data, 0xab, len);
}

static void evil_open(void)
{
	int fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);

	if (fd >= 0)
		close(fd);
}

/* A guest-reachable bug: the config write handler opens a host file. */
static void evil_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
	evil_open();
}

static void *evil_worker(void *arg)
{
	evil_open();
	return NULL;
}

/* The same from a worker thread that blocks every signal, as the real devices' do. */
static int evil_activate(void *dev, const struct virtio_activation *act)
{
	struct evil *e = dev;
	sigset_t all, old;
	int ret;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&e->thread, NULL, evil_worker, e);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		return -ret;
	e->running = true;
	return 0;
}

static void evil_reset(void *dev)
{
	struct evil *e = dev;

	if (e->running)
		pthread_join(e->thread, NULL);
	e->running = false;
}

static void evil_destroy(void *dev)
{
	evil_reset(dev);
	free(dev);
}

static const struct virtio_device_ops evil_ops = {
	.name = "test-evil",
	.device_id = VIRTIO_ID_RNG,
	.nqueues = 1,
	.queue_max = 16,
	.config_size = 8,
	.features = evil_features,
	.config_read = evil_config_read,
	.config_write = evil_config_write,
	.activate = evil_activate,
	.reset = evil_reset,
	.destroy = evil_destroy,
};

/* The evil device in a jailed child under the rng's policy; no queues yet. */
static struct virtio_proxy *evil_spawn(struct vt_dev *d)
{
	struct sandbox_config sb = sb_config("virtio_rng");

	memset(d, 0, sizeof(*d));
	vt_guest_init_shared(&d->g, RAM_SIZE);
	d->dev.ops = &evil_ops;
	d->dev.dev = calloc(1, sizeof(struct evil));
	assert_non_null(d->dev.dev);
	return spawn(d, &sb);
}

static void test_violation_config_write(void **state)
{
	struct vt_dev d;
	struct virtio_proxy *px = evil_spawn(&d);
	uint8_t data[8] = {0};
	char why[200];
	int64_t t0;

	assert_int_equal(d.dev.ops->features(d.dev.dev), 1);
	d.dev.ops->config_read(d.dev.dev, 0, data, 8);
	assert_int_equal(data[7], 0xab);
	assert_int_equal(virtio_proxy_reap(px, why, sizeof(why)), -EAGAIN);

	t0 = now_ms();
	d.dev.ops->config_write(d.dev.dev, 0, data, 4);
	wait_death(px, why, sizeof(why));
	assert_true(now_ms() - t0 < VT_WAIT_MS);
	assert_string_equal(why, "killed by signal SIGSYS (seccomp violation: syscall openat)");
	/* Afterwards every op fails cleanly and at once. */
	assert_int_equal(d.dev.ops->features(d.dev.dev), 0);
	d.dev.ops->config_read(d.dev.dev, 0, data, 8);
	assert_int_equal(data[0], 0);
	/* Reaping again repeats the description. */
	assert_int_equal(virtio_proxy_reap(px, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "seccomp"));
	d.dev.ops->destroy(d.dev.dev);
	vt_guest_destroy(&d.g);
}

static void test_violation_worker(void **state)
{
	struct vt_dev d;
	struct virtio_proxy *px = evil_spawn(&d);
	char why[200];

	vt_dev_queues_init(&d, 1, QSIZE, 0, 0);
	/* The reply may or may not beat the violation. */
	d.dev.ops->activate(d.dev.dev, &d.env.act);
	wait_death(px, why, sizeof(why));
	assert_string_equal(why, "killed by signal SIGSYS (seccomp violation: syscall openat)");
	assert_int_equal(d.dev.ops->activate(d.dev.dev, &d.env.act), -EIO);
	vt_dev_destroy(&d);
}

/* ---- The child's death ---- */

static void test_sigkill(void **state)
{
	struct sandbox_config sb = sb_config("virtio_rng");
	struct pxfx *f = rng_new(&sb, 0);
	uint8_t data[4] = {1, 1, 1, 1};
	char why[200];
	int64_t t0;

	activate_ok(&f->d, f->px);
	assert_false(vt_poll_in(virtio_proxy_wait_fd(f->px), 0));
	assert_int_equal(kill(virtio_proxy_pid(f->px), SIGKILL), 0);
	assert_true(vt_poll_in(virtio_proxy_wait_fd(f->px), VT_WAIT_MS));
	/* Before reaping: requests see the closed socket and fail at once. */
	t0 = now_ms();
	assert_int_equal(f->d.dev.ops->features(f->d.dev.dev), 0);
	assert_int_equal(virtio_proxy_reap(f->px, why, sizeof(why)), 0);
	assert_string_equal(why, "killed by signal SIGKILL");
	f->d.dev.ops->config_read(f->d.dev.dev, 0, data, 0);
	f->d.dev.ops->config_write(f->d.dev.dev, 0, data, 0);
	f->d.dev.ops->reset(f->d.dev.dev);
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &f->d.env.act), -EIO);
	f->d.dev.ops->reset(f->d.dev.dev);
	assert_true(now_ms() - t0 < 1000);
	pxfx_free(f);
}

static int sys_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* SIGKILL of the VMM leaves no device process behind. */
static void test_parent_death(void **state)
{
	int pfd[2], status, dfd;
	pid_t helper, dev_pid = 0;

	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	helper = fork();
	assert_true(helper >= 0);
	if (helper == 0) {
		/* A small VMM: spawn the device, report its pid, wait to be killed. */
		struct sandbox_config sb = sb_config("virtio_rng");
		struct virtio_proxy *px;
		struct virtio_device dev;
		struct vt_guest g;
		pid_t pid;

		memset(&g, 0, sizeof(g));
		if (gm_init(&g.mem, RAM_SIZE, NULL) || virtio_rng_create(&dev, NULL) ||
		    virtio_proxy_spawn(&dev, &g.mem, &sb, &px, NULL))
			_exit(1);
		pid = virtio_proxy_pid(px);
		if (write(pfd[1], &pid, sizeof(pid)) != sizeof(pid))
			_exit(1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	assert_true(vt_poll_in(pfd[0], VT_WAIT_MS));
	assert_int_equal(read(pfd[0], &dev_pid, sizeof(dev_pid)), sizeof(dev_pid));
	close(pfd[0]);
	dfd = sys_pidfd_open(dev_pid);
	assert_true(dfd >= 0);
	assert_false(vt_poll_in(dfd, 0));
	assert_int_equal(kill(helper, SIGKILL), 0);
	assert_int_equal(waitpid(helper, &status, 0), helper);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	if (!vt_poll_in(dfd, VT_WAIT_MS))
		fail_msg("device process %d outlived its VMM", (int)dev_pid);
	close(dfd);
}

/* ---- virtio-blk: real images (raw and qcow2 over a raw backing file), both engines ---- */

#define IMG_BYTES (1u << 20)

static uint8_t img_pattern(uint64_t off)
{
	return (uint8_t)(off * 13 + 5);
}

static void make_image(char *path, size_t len)
{
	const char *t = getenv("TMPDIR");
	uint8_t *buf = malloc(IMG_BYTES);
	int fd;

	assert_non_null(buf);
	snprintf(path, len, "%s/test_sandbox.XXXXXX", t && *t ? t : "/tmp");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	for (unsigned int i = 0; i < IMG_BYTES; i++)
		buf[i] = img_pattern(i);
	assert_int_equal(pwrite(fd, buf, IMG_BYTES, 0), IMG_BYTES);
	close(fd);
	free(buf);
}

/* Open @path, make a virtio-blk on it, move it into a jailed child and activate it. */
static struct pxfx *blk_open(const char *path, const struct disk_opts *o)
{
	struct sandbox_config sb = sb_config("virtio_blk");
	struct pxfx *f = calloc(1, sizeof(*f));
	struct vmm_err err = {""};
	struct disk *d;
	uint64_t cap;

	assert_non_null(f);
	if (disk_open_opts(path, o, &d, &err))
		fail_msg("disk_open_opts: %s", err.msg);
	assert_int_equal(virtio_blk_create(d, "sandboxed", &f->d.dev, &err), 0);
	vt_guest_init_shared(&f->d.g, RAM_SIZE);
	f->px = spawn(&f->d, &sb);
	/* The capacity comes through config space. */
	f->d.dev.ops->config_read(f->d.dev.dev, VIRTIO_BLK_CFG_CAPACITY, (uint8_t *)&cap, 8);
	assert_int_equal(le64toh(cap), IMG_BYTES / 512);
	vt_dev_queues_init(&f->d, 1, 64, VT_EVENT_IDX, f->d.dev.ops->features(f->d.dev.dev));
	activate_ok(&f->d, f->px);
	return f;
}

/* One request: header, @len bytes at @data_gpa (none when 0), status. Returns the status. */
static uint8_t do_blk(struct pxfx *f, uint32_t type, uint64_t sector, uint64_t data_gpa,
		      uint32_t len)
{
	struct vt_buf b[3];
	uint32_t t = htole32(type), id, used;
	uint64_t s = htole64(sector);
	unsigned int n = 0, st;
	uint16_t head;
	uint8_t *hdr;

	b[n++] = vt_buf_new(&f->d.g, 16, false);
	if (len)
		b[n++] = (struct vt_buf){data_gpa, len, type == VIRTIO_BLK_T_IN};
	st = n;
	b[n++] = vt_buf_new(&f->d.g, 1, true);
	hdr = vt_host(&f->d.g, b[0].gpa, 16);
	memcpy(hdr, &t, 4);
	memcpy(hdr + 8, &s, 8);
	*(uint8_t *)vt_host(&f->d.g, b[st].gpa, 1) = 0xff;
	head = vt_add_chain(&f->d.vq[0], b, n);
	vt_dev_kick(&f->d, 0);
	vt_dev_wait_used(&f->d, 0, &id, &used);
	assert_int_equal(id, head);
	return *(uint8_t *)vt_host(&f->d.g, b[st].gpa, 1);
}

/* DISCARD or WRITE_ZEROES of [sector, sector + n). */
static uint8_t do_blk_range(struct pxfx *f, uint32_t type, uint64_t sector, uint32_t n,
			    uint32_t flags)
{
	uint64_t gpa = vt_alloc(&f->d.g, 16, 8);
	uint8_t *seg = vt_host(&f->d.g, gpa, 16);
	uint64_t s = htole64(sector);
	uint32_t v = htole32(n), fl = htole32(flags);

	memcpy(seg, &s, 8);
	memcpy(seg + 8, &v, 4);
	memcpy(seg + 12, &fl, 4);
	return do_blk(f, type, 0, gpa, 16);
}

static bool guest_is(struct pxfx *f, uint64_t gpa, uint64_t disk_off, uint32_t len, int fill)
{
	const uint8_t *p = vt_host(&f->d.g, gpa, len);

	for (uint32_t i = 0; i < len; i++)
		if (p[i] != (fill >= 0 ? (uint8_t)fill : img_pattern(disk_off + i)))
			return false;
	return true;
}

/*
 * The guest's workload: read untouched data, write and read back (a qcow2
 * image allocates clusters: its metadata thread runs), flush, discard,
 * write zeroes. What was written is checked in @path through a second
 * sandboxed device, which also shows that the first one's image lock went
 * with its child.
 */
static void blk_workload(unsigned int open_flags, bool qcow2)
{
	struct disk_opts o = {.flags = open_flags,
			      .format = qcow2 ? DISK_FORMAT_QCOW2 : DISK_FORMAT_RAW};
	char base[PATH_MAX], top[PATH_MAX + 8];
	struct vmm_err err = {""};
	struct pxfx *f;
	uint64_t wgpa, rgpa;

	make_image(base, sizeof(base));
	snprintf(top, sizeof(top), "%s", base);
	if (qcow2) {
		snprintf(top, sizeof(top), "%s.qcow2", base);
		if (qcow2_create(top, 0, 0, base, &err))
			fail_msg("qcow2_create: %s", err.msg);
	}
	f = blk_open(top, &o);
	wgpa = vt_alloc(&f->d.g, 8192, 512);
	rgpa = vt_alloc(&f->d.g, 8192, 512);
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_IN, 100, rgpa, 4096), VIRTIO_BLK_S_OK);
	assert_true(guest_is(f, rgpa, 100 * 512, 4096, -1));
	for (unsigned int i = 0; i < 8192; i++)
		((uint8_t *)vt_host(&f->d.g, wgpa, 8192))[i] = (uint8_t)(i ^ 0x5a);
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_OUT, 10, wgpa, 8192), VIRTIO_BLK_S_OK);
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_IN, 10, rgpa, 8192), VIRTIO_BLK_S_OK);
	assert_memory_equal(vt_host(&f->d.g, rgpa, 8192), vt_host(&f->d.g, wgpa, 8192), 8192);
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0), VIRTIO_BLK_S_OK);
	assert_int_equal(do_blk_range(f, VIRTIO_BLK_T_WRITE_ZEROES, 512, 128, 0), VIRTIO_BLK_S_OK);
	assert_int_equal(
		do_blk_range(f, VIRTIO_BLK_T_WRITE_ZEROES, 1024, 128, VIRTIO_BLK_SEG_F_UNMAP),
		VIRTIO_BLK_S_OK);
	assert_int_equal(do_blk_range(f, VIRTIO_BLK_T_DISCARD, 1536, 128, 0), VIRTIO_BLK_S_OK);
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0), VIRTIO_BLK_S_OK);
	pxfx_free(f);

	/* Again, in a new child: the data is there, and the zeroed ranges read as zero. */
	f = blk_open(top, &o);
	rgpa = vt_alloc(&f->d.g, 8192, 512);
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_IN, 10, rgpa, 8192), VIRTIO_BLK_S_OK);
	for (unsigned int i = 0; i < 8192; i++)
		assert_int_equal(((uint8_t *)vt_host(&f->d.g, rgpa, 8192))[i], (uint8_t)(i ^ 0x5a));
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_IN, 512, rgpa, 8192), VIRTIO_BLK_S_OK);
	assert_true(guest_is(f, rgpa, 0, 8192, 0));
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_IN, 1024, rgpa, 8192), VIRTIO_BLK_S_OK);
	assert_true(guest_is(f, rgpa, 0, 8192, 0));
	assert_int_equal(do_blk(f, VIRTIO_BLK_T_IN, 2000, rgpa, 4096), VIRTIO_BLK_S_OK);
	assert_true(guest_is(f, rgpa, 2000 * 512, 4096, -1));
	pxfx_free(f);
	if (qcow2)
		unlink(top);
	unlink(base);
}

static void test_blk_raw_io_uring(void **state)
{
	blk_workload(0, false);
}

static void test_blk_raw_thread_pool(void **state)
{
	blk_workload(DISK_OPEN_THREAD_POOL, false);
}

static void test_blk_qcow2_io_uring(void **state)
{
	blk_workload(0, true);
}

static void test_blk_qcow2_thread_pool(void **state)
{
	blk_workload(DISK_OPEN_THREAD_POOL, true);
}

/* ---- virtio-net on a socket pair standing in for the tap ---- */

static void test_net(void **state)
{
	static const uint8_t mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
	struct sandbox_config sb = sb_config("virtio_net");
	struct tap_info info = {.no_ioctl = true};
	struct vt_queue *rx, *tx;
	struct virtio_proxy *px;
	struct vt_dev d;
	uint8_t frame[60], got[128], cfg[6];
	struct vt_buf b;
	uint32_t len;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	memset(&d, 0, sizeof(d));
	assert_int_equal(virtio_net_create(sv[0], mac, &info, &d.dev, NULL), 0);
	vt_guest_init_shared(&d.g, RAM_SIZE);
	px = spawn(&d, &sb);
	d.dev.ops->config_read(d.dev.dev, VIRTIO_NET_CFG_MAC, cfg, 6);
	assert_memory_equal(cfg, mac, 6);
	vt_dev_queues_init(&d, 2, QSIZE, 0, 0);
	rx = &d.vq[VIRTIO_NET_RXQ];
	tx = &d.vq[VIRTIO_NET_TXQ];
	activate_ok(&d, px);

	/* Transmit: header + frame from the guest, the frame on the "tap". */
	for (unsigned int i = 0; i < sizeof(frame); i++)
		frame[i] = (uint8_t)i;
	b = vt_buf_new(&d.g, VIRTIO_NET_HDR_SIZE + sizeof(frame), false);
	memcpy(vt_host(&d.g, b.gpa + VIRTIO_NET_HDR_SIZE, sizeof(frame)), frame, sizeof(frame));
	vt_add_chain(tx, &b, 1);
	vt_dev_kick(&d, VIRTIO_NET_TXQ);
	assert_true(vt_poll_in(sv[1], VT_WAIT_MS));
	assert_int_equal(recv(sv[1], got, sizeof(got), 0), sizeof(frame));
	assert_memory_equal(got, frame, sizeof(frame));

	/* Receive: a frame from the "tap" lands after the header. */
	b = vt_buf_new(&d.g, 1526, true);
	vt_add_chain(rx, &b, 1);
	vt_dev_kick(&d, VIRTIO_NET_RXQ);
	frame[0] = 0xee;
	assert_int_equal(send(sv[1], frame, sizeof(frame), 0), sizeof(frame));
	vt_dev_wait_used(&d, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, VIRTIO_NET_HDR_SIZE + sizeof(frame));
	assert_memory_equal(vt_host(&d.g, b.gpa + VIRTIO_NET_HDR_SIZE, sizeof(frame)), frame,
			    sizeof(frame));

	vt_dev_destroy(&d);
	close(sv[1]);
}

/* ---- virtio-balloon: the VMM's handle and the sandboxed device share config and counters ---- */

static void test_balloon(void **state)
{
	struct sandbox_config sb = sb_config("virtio_balloon");
	struct virtio_balloon_counters c;
	struct virtio_balloon *b;
	struct virtio_proxy *px;
	struct vt_dev d;
	uint8_t cfg[8];
	uint32_t v, pfn;
	uint64_t page;
	struct vt_buf pb;
	uint32_t len;

	memset(&d, 0, sizeof(d));
	vt_guest_init_shared(&d.g, RAM_SIZE);
	assert_int_equal(virtio_balloon_create(&d.g.mem, &d.dev, &b, NULL), 0);
	px = spawn(&d, &sb);

	/* The host's target reaches the guest's config through the child. */
	assert_int_equal(virtio_balloon_set_target(b, 1 << 20), 0);
	d.dev.ops->config_read(d.dev.dev, 0, cfg, 8);
	memcpy(&v, cfg + VIRTIO_BALLOON_CFG_NUM_PAGES, 4);
	assert_int_equal(le32toh(v), 256);
	/* The driver's `actual` reaches the host. */
	v = htole32(100);
	d.dev.ops->config_write(d.dev.dev, VIRTIO_BALLOON_CFG_ACTUAL, (uint8_t *)&v, 4);
	assert_int_equal(virtio_balloon_actual(b), 100 * 4096);

	/* Inflate one page: it reads as zero afterwards; the host's counters see it. */
	vt_dev_queues_init(&d, 2, QSIZE, 0, 0);
	activate_ok(&d, px);
	page = vt_alloc(&d.g, 4096, 4096);
	memset(vt_host(&d.g, page, 4096), 0x77, 4096);
	pfn = htole32((uint32_t)(page >> 12));
	pb = vt_buf_new(&d.g, 4, false);
	memcpy(vt_host(&d.g, pb.gpa, 4), &pfn, 4);
	vt_add_chain(&d.vq[0], &pb, 1);
	vt_dev_kick(&d, 0);
	vt_dev_wait_used(&d, 0, NULL, &len);
	assert_true(vt_guest_filled(&d.g, page, 4096, 0));
	virtio_balloon_get_counters(b, &c);
	assert_int_equal(c.inflated, 1);

	/* Reset in the child clears `actual` for the host too. */
	d.dev.ops->reset(d.dev.dev);
	assert_int_equal(virtio_balloon_actual(b), 0);
	vt_dev_destroy(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy_grammar),
		cmocka_unit_test(test_policy_errors),
		cmocka_unit_test(test_policies_shipped),
		cmocka_unit_test(test_spawn_refuses_bad_policy),
		cmocka_unit_test(test_rng_serves),
		cmocka_unit_test(test_rng_needs_reset),
		cmocka_unit_test(test_rng_indexes),
		cmocka_unit_test(test_jail),
		cmocka_unit_test(test_jail_no_namespaces),
		cmocka_unit_test(test_foreign_ram),
		cmocka_unit_test(test_violation_config_write),
		cmocka_unit_test(test_violation_worker),
		cmocka_unit_test(test_sigkill),
		cmocka_unit_test(test_parent_death),
		cmocka_unit_test(test_blk_raw_io_uring),
		cmocka_unit_test(test_blk_raw_thread_pool),
		cmocka_unit_test(test_blk_qcow2_io_uring),
		cmocka_unit_test(test_blk_qcow2_thread_pool),
		cmocka_unit_test(test_net),
		cmocka_unit_test(test_balloon),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
