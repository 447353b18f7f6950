/* The public API as an embedder uses it: errors without KVM, and two VMs at once in one process. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libvmm/libvmm.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			failures++;                                                                \
			printf("FAIL %s:%d: ", __FILE__, __LINE__);                                \
			printf(__VA_ARGS__);                                                       \
			printf("\n");                                                              \
		}                                                                                  \
	} while (0)

static const char *kernel;

/* Errors are negative errnos with a one-line message, and nothing leaks. */
static void test_errors(void)
{
	struct vm_config cfg;
	struct vm *vm = (struct vm *)1;
	int ret;

	CHECK(vm_create(NULL, &vm) == -EINVAL && vm == NULL, "NULL config");
	CHECK(strlen(vm_last_error(NULL)) > 0, "message for NULL config");

	memset(&cfg, 0, sizeof(cfg));
	cfg.kernel_path = kernel;
	CHECK(vm_create(&cfg, &vm) == -EINVAL, "struct_size 0 is refused");
	CHECK(strstr(vm_last_error(NULL), "struct_size"), "message names struct_size: %s",
	      vm_last_error(NULL));

	vm_config_init(&cfg);
	CHECK(vm_create(&cfg, &vm) == -EINVAL, "no kernel");
	CHECK(strstr(vm_last_error(NULL), "no kernel"), "message: %s", vm_last_error(NULL));

	cfg.kernel_path = "/nonexistent/kernel";
	ret = vm_create(&cfg, &vm);
	CHECK(ret == -ENOENT, "missing kernel gives -ENOENT, got %d", ret);
	CHECK(strstr(vm_last_error(NULL), "/nonexistent/kernel"), "message names the path: %s",
	      vm_last_error(NULL));
	CHECK(!strchr(vm_last_error(NULL), '\n'), "message is one line");

	cfg.kernel_path = "/";
	CHECK(vm_create(&cfg, &vm) == -EISDIR, "directory as kernel");

	cfg.kernel_path = kernel;
	cfg.mem_mib = 8;
	CHECK(vm_create(&cfg, &vm) == -EINVAL, "8 MiB of RAM is refused");
	cfg.mem_mib = 0;
	cfg.vcpus = VM_MAX_VCPUS + 1;
	CHECK(vm_create(&cfg, &vm) == -EINVAL, "too many vCPUs");
	cfg.vcpus = 1;

	/* A caller built against an older, smaller struct is accepted. */
	cfg.struct_size = offsetof(struct vm_config, log);
	cfg.log_level = (enum vm_log_level)99; /* beyond struct_size: ignored */
	ret = vm_create(&cfg, &vm);
	CHECK(ret == 0, "create with an older struct_size: %s", vm_last_error(NULL));
	if (ret == 0) {
		/* Devices are checked before KVM is needed. */
		CHECK(vm_add_disk(vm, "/nonexistent/disk.img", 0) == -ENOENT, "missing disk");
		CHECK(strstr(vm_last_error(vm), "/nonexistent/disk.img"), "message: %s",
		      vm_last_error(vm));
		CHECK(vm_add_disk(vm, "/", VM_DISK_READ_ONLY) == -EISDIR, "directory as disk");
		CHECK(vm_add_disk(vm, "/dev/null", 99) == -EINVAL, "unknown disk flags");
		CHECK(vm_add_disk_fd(vm, -1, 0) == -EBADF, "bad disk fd");
		CHECK(vm_add_rng(vm) == 0, "rng: %s", vm_last_error(vm));
		{
			struct vm_status st = {.struct_size = sizeof(st)};

			CHECK(vm_get_status(vm, &st) == 0 && st.state == VM_STATE_CREATED &&
				      st.vcpus == 1 && st.mem_bytes == 256ULL << 20,
			      "status of a created VM");
			CHECK(vm_pause(vm) == -EINVAL, "pausing a VM that does not run");
			CHECK(vm_resume(vm) == -EINVAL, "resuming a VM that is not paused");
			st.struct_size = 0;
			CHECK(vm_get_status(vm, &st) == -EINVAL, "status without struct_size");
		}
		if (access("/dev/kvm", F_OK) != 0) {
			struct vm_status st = {.struct_size = sizeof(st)};
			uint64_t events = 0;

			ret = vm_run(vm);
			CHECK(ret == -ENODEV, "without /dev/kvm vm_run gives -ENODEV, got %d", ret);
			CHECK(strstr(vm_last_error(vm), "KVM is not available"), "message: %s",
			      vm_last_error(vm));
			CHECK(vm_run(vm) == -EBUSY, "a VM runs once");
			CHECK(vm_get_status(vm, &st) == 0 && st.state == VM_STATE_STOPPED,
			      "a VM that could not start is stopped");
			CHECK(read(vm_event_fd(vm), &events, sizeof(events)) == 8 && events > 0,
			      "the state change was announced on vm_event_fd");
		}
		vm_destroy(vm);
	}

	/* Two VMs in one process cannot both write one image; both may read it. */
	{
		char path[] = "/tmp/libvmm-api-XXXXXX";
		int fd = mkstemp(path);
		struct vm *a = NULL, *b = NULL;

		CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0, "temp image");
		vm_config_init(&cfg);
		cfg.kernel_path = kernel;
		CHECK(vm_create(&cfg, &a) == 0 && vm_create(&cfg, &b) == 0, "two VMs: %s",
		      vm_last_error(NULL));
		CHECK(vm_add_disk_fd(a, fd, 0) == 0, "writable disk by fd: %s", vm_last_error(a));
		close(fd); /* libvmm holds its own description */
		ret = vm_add_disk(b, path, 0);
		CHECK(ret == -EBUSY, "second writer gets -EBUSY, got %d", ret);
		CHECK(strstr(vm_last_error(b), "in use"), "message: %s", vm_last_error(b));
		CHECK(vm_add_disk(b, path, VM_DISK_READ_ONLY) == -EBUSY, "reader while written");
		vm_destroy(a);
		CHECK(vm_add_disk(b, path, VM_DISK_READ_ONLY | VM_DISK_ROOT) == 0,
		      "lock released with its VM: %s", vm_last_error(b));
		CHECK(vm_add_disk(b, path, VM_DISK_READ_ONLY) == 0, "two readers");
		CHECK(vm_add_disk(b, path, VM_DISK_ROOT) == -EEXIST, "second root disk");
		vm_destroy(b);
		unlink(path);
	}

	/* The control socket end to end, on a VM that has not started. */
	{
		char dir[] = "/tmp/libvmm-ctl-XXXXXX";
		struct vm_status st = {.struct_size = sizeof(st)};
		struct stat sb;
		char path[256] = "";

		CHECK(mkdtemp(dir) != NULL, "temp dir");
		vm_config_init(&cfg);
		cfg.kernel_path = kernel;
		cfg.mem_mib = 128;
		cfg.vcpus = 2;
		CHECK(vm_create(&cfg, &vm) == 0, "create: %s", vm_last_error(NULL));
		CHECK(vm_add_balloon(vm) == 0, "balloon: %s", vm_last_error(vm));
		CHECK(vm_add_balloon(vm) == -EEXIST, "one balloon per VM");
		CHECK(vm_control_listen(vm, dir) == 0, "listen: %s", vm_last_error(vm));
		if (vm_control_path(vm))
			snprintf(path, sizeof(path), "%s", vm_control_path(vm));
		CHECK(strstr(path, "/vmm-") && strstr(path, ".sock"), "socket in the dir: %s",
		      path);
		CHECK(stat(path, &sb) == 0 && S_ISSOCK(sb.st_mode) && (sb.st_mode & 0777) == 0600,
		      "socket mode 0600");
		CHECK(vm_control_send(path, VM_CONTROL_STATUS, 0, &st) == 0 &&
			      st.state == VM_STATE_CREATED && st.vcpus == 2 &&
			      st.mem_bytes == 128ULL << 20,
		      "status over the socket: %s", vm_last_error(NULL));
		CHECK(vm_control_send(path, VM_CONTROL_SUSPEND, 0, NULL) == -EBUSY,
		      "suspend before run is a state error: %s", vm_last_error(NULL));
		CHECK(vm_control_send(path, VM_CONTROL_BALLOON, 64 << 20, NULL) == 0, "balloon: %s",
		      vm_last_error(NULL));
		CHECK(vm_control_send(path, VM_CONTROL_BALLOON, 1ULL << 40, NULL) == -EINVAL,
		      "balloon larger than RAM refused");
		CHECK(vm_control_send(path, VM_CONTROL_STATUS, 0, &st) == 0 &&
			      st.balloon_target_bytes == 64 << 20,
		      "status shows the balloon target");
		CHECK(vm_control_listen(vm, dir) == -EEXIST, "one control socket per VM");
		vm_destroy(vm);
		CHECK(access(path, F_OK) != 0, "socket removed with the VM");
		CHECK(vm_control_send(path, VM_CONTROL_STATUS, 0, NULL) < 0,
		      "nothing listens any more");
		rmdir(dir);
	}

	vm_destroy(NULL);
	CHECK(!strcmp(vm_exit_reason_name(VM_EXIT_POWEROFF), "poweroff"), "reason names");
	CHECK(!strcmp(vm_exit_reason_name(12345), "unknown"), "unknown reason name");
	CHECK(vm_version()[0] >= '0' && vm_version()[0] <= '9', "version string");
}

struct runner {
	struct vm *vm;
	int out[2];
	int reason;
	char output[65536];
	size_t len;
};

static void *run_thread(void *arg)
{
	struct runner *r = arg;

	r->reason = vm_run(r->vm);
	return NULL;
}

static void *drain_thread(void *arg)
{
	struct runner *r = arg;
	ssize_t n;

	while ((n = read(r->out[0], r->output + r->len, sizeof(r->output) - 1 - r->len)) > 0)
		r->len += (size_t)n;
	r->output[r->len] = '\0';
	return NULL;
}

static int start_vm(struct runner *r, const char *params)
{
	struct vm_config cfg;

	memset(r, 0, sizeof(*r));
	if (pipe2(r->out, O_CLOEXEC) < 0)
		return -errno;
	vm_config_init(&cfg);
	cfg.kernel_path = kernel;
	cfg.cmdline = params;
	cfg.mem_mib = 64;
	cfg.vcpus = 2;
	cfg.console_out_fd = r->out[1];
	return vm_create(&cfg, &r->vm);
}

/* Two VMs created and run at once: both boot, check themselves, power off. */
static void test_two_vms(void)
{
	struct runner r[2];
	pthread_t t[2], d[2];

	for (int i = 0; i < 2; i++) {
		int ret = start_vm(&r[i], "guest.exit=poweroff");

		CHECK(ret == 0, "vm %d: %s", i, vm_last_error(NULL));
		if (ret)
			return;
	}
	for (int i = 0; i < 2; i++) {
		pthread_create(&d[i], NULL, drain_thread, &r[i]);
		pthread_create(&t[i], NULL, run_thread, &r[i]);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		vm_destroy(r[i].vm);
		close(r[i].out[1]);
		pthread_join(d[i], NULL);
		close(r[i].out[0]);
		CHECK(r[i].reason == VM_EXIT_POWEROFF, "vm %d ended with %s: %s", i,
		      vm_exit_reason_name(r[i].reason), r[i].output);
		CHECK(strstr(r[i].output, "GUEST result pass"), "vm %d output:\n%s", i,
		      r[i].output);
	}
}

/* Pause and resume from another thread, watched through vm_event_fd. */
static void test_pause_resume(void)
{
	struct runner r;
	struct vm_status st = {.struct_size = sizeof(st)};
	pthread_t t, d;
	uint64_t ev;

	if (start_vm(&r, "guest.exit=halt guest.aps=0") != 0) {
		CHECK(0, "create: %s", vm_last_error(NULL));
		return;
	}
	pthread_create(&d, NULL, drain_thread, &r);
	pthread_create(&t, NULL, run_thread, &r);
	/* Wait for RUNNING through the event fd. */
	for (;;) {
		struct pollfd p = {.fd = vm_event_fd(r.vm), .events = POLLIN};

		CHECK(poll(&p, 1, 10000) == 1, "state change announced");
		(void)!read(vm_event_fd(r.vm), &ev, sizeof(ev));
		vm_get_status(r.vm, &st);
		if (st.state != VM_STATE_CREATED)
			break;
	}
	CHECK(st.state == VM_STATE_RUNNING, "running, got %d", st.state);
	CHECK(vm_pause(r.vm) == 0, "pause: %s", vm_last_error(r.vm));
	vm_get_status(r.vm, &st);
	CHECK(st.state == VM_STATE_PAUSED, "paused");
	CHECK(vm_pause(r.vm) == 0, "pausing twice is fine");
	CHECK(vm_resume(r.vm) == 0, "resume: %s", vm_last_error(r.vm));
	vm_get_status(r.vm, &st);
	CHECK(st.state == VM_STATE_RUNNING, "running again");
	CHECK(vm_pause(r.vm) == 0, "pause again");
	vm_stop(r.vm); /* a paused VM stops too */
	pthread_join(t, NULL);
	CHECK(r.reason == VM_EXIT_STOPPED, "stopped while paused, got %d", r.reason);
	vm_get_status(r.vm, &st);
	CHECK(st.state == VM_STATE_STOPPED, "stopped");
	vm_destroy(r.vm);
	close(r.out[1]);
	pthread_join(d, NULL);
	close(r.out[0]);
}

/* vm_stop from another thread ends a guest that would run forever. */
static void test_stop(void)
{
	struct runner r;
	pthread_t t, d;

	if (start_vm(&r, "guest.exit=halt guest.aps=0") != 0) {
		CHECK(0, "create: %s", vm_last_error(NULL));
		return;
	}
	pthread_create(&d, NULL, drain_thread, &r);
	pthread_create(&t, NULL, run_thread, &r);
	/* Stopping at any moment must work, even before the guest printed. */
	CHECK(vm_stop(r.vm) == 0, "vm_stop");
	pthread_join(t, NULL);
	CHECK(r.reason == VM_EXIT_STOPPED, "stopped VM returns VM_EXIT_STOPPED, got %d", r.reason);
	CHECK(vm_run(r.vm) == -EBUSY, "second vm_run is refused");
	vm_destroy(r.vm);
	close(r.out[1]);
	pthread_join(d, NULL);
	close(r.out[0]);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s errors|vms GUEST_KERNEL\n", argv[0]);
		return 2;
	}
	kernel = argv[2];
	if (!strcmp(argv[1], "errors")) {
		test_errors();
	} else {
		if (access("/dev/kvm", F_OK) != 0) {
			printf("skipped: /dev/kvm is not present on this host\n");
			return 77;
		}
		test_two_vms();
		test_stop();
		test_pause_resume();
	}
	printf("%s: %d failure(s)\n", argv[1], failures);
	return failures ? 1 : 0;
}
