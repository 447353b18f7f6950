/* vmm-run: turns command-line flags into libvmm API calls; the only place that exits. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "args.h"
#include "libvmm/libvmm.h"

/* The VM that signal handlers stop; set while vm_run() runs. */
static struct vm *volatile running_vm;

static struct termios saved_tio;
static int tio_saved;

static void on_stop_signal(int sig)
{
	(void)sig;
	if (running_vm)
		vm_stop(running_vm);
}

static void tty_restore(void)
{
	if (tio_saved) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
		tio_saved = 0;
	}
}

/* Raw mode for an interactive console: bytes go to the guest as typed. */
static void tty_raw(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tio) < 0)
		return;
	t = saved_tio;
	cfmakeraw(&t);
	t.c_oflag |= OPOST | ONLCR; /* keep the host's newline handling for output */
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) {
		tio_saved = 1;
		atexit(tty_restore);
	}
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Disks in guest order (root first), then the rng unless --no-rng. */
static int add_devices(struct vm *vm, const struct run_opts *o)
{
	for (unsigned int i = 0; i < o->ndisks; i++) {
		const struct disk_opt *d = &o->disks[i];
		uint32_t flags =
			(d->writable ? 0 : VM_DISK_READ_ONLY) | (d->root ? VM_DISK_ROOT : 0);
		int ret = vm_add_disk(vm, d->path, flags);

		if (ret < 0)
			return ret;
	}
	for (unsigned int i = 0; i < o->ntap_fds; i++)
		if (vm_add_tap_fd(vm, o->tap_fds[i], NULL) < 0)
			return -1;
	if (o->tap_create && vm_add_tap(vm, o->host_ip, o->netmask, o->mac) < 0)
		return -1;
	if (!o->no_rng && vm_add_rng(vm) < 0)
		return -1;
	if (!o->no_balloon && vm_add_balloon(vm) < 0)
		return -1;
	if (o->socket && vm_control_listen(vm, o->socket) < 0)
		return -1;
	return 0;
}

static int cmd_run(int argc, char *argv[])
{
	struct run_opts o;
	struct vm_config cfg;
	struct vm *vm;
	char err[ARGS_ERR_MAX];
	int ret;

	if (parse_run_args(argc, argv, &o, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmm-run: %s\n", err);
		return 1;
	}
	if (o.help) {
		fputs(run_usage, stdout);
		run_opts_free(&o);
		return 0;
	}
	vm_config_init(&cfg);
	cfg.kernel_path = o.kernel;
	cfg.initrd_path = o.initrd;
	cfg.cmdline = o.params;
	cfg.mem_mib = o.mem_mib;
	cfg.vcpus = o.cpus;
	cfg.console_in_fd = STDIN_FILENO;
	cfg.console_out_fd = STDOUT_FILENO;
	cfg.log_level = VM_LOG_WARN;
	cfg.sandbox = o.no_sandbox ? 0 : VM_SANDBOX_DEVICES | VM_SANDBOX_PROCESS;
	cfg.seccomp_policy_dir = o.policy_dir ? o.policy_dir : getenv("LIBVMM_SECCOMP_POLICY_DIR");

	ret = vm_create(&cfg, &vm);
	if (ret < 0) {
		fprintf(stderr, "vmm-run: %s\n", vm_last_error(NULL));
		run_opts_free(&o);
		return 1;
	}
	ret = add_devices(vm, &o);
	run_opts_free(&o);
	if (ret < 0) {
		fprintf(stderr, "vmm-run: %s\n", vm_last_error(vm));
		vm_destroy(vm);
		return 1;
	}
	install_signals();
	tty_raw();
	running_vm = vm;
	ret = vm_run(vm);
	running_vm = NULL;
	tty_restore();
	switch (ret) {
	case VM_EXIT_POWEROFF:
	case VM_EXIT_RESET:
	case VM_EXIT_STOPPED:
		ret = 0;
		break;
	default:
		if (ret < 0)
			fprintf(stderr, "vmm-run: %s\n", vm_last_error(vm));
		else
			fprintf(stderr, "vmm-run: guest stopped: %s: %s\n",
				vm_exit_reason_name(ret), vm_last_error(vm));
		ret = 1;
		break;
	}
	vm_destroy(vm);
	return ret;
}

static const struct {
	const char *name;
	enum vm_control_command cmd;
} control_cmds[] = {
	{"stop", VM_CONTROL_STOP},     {"suspend", VM_CONTROL_SUSPEND},
	{"resume", VM_CONTROL_RESUME}, {"balloon", VM_CONTROL_BALLOON},
	{"status", VM_CONTROL_STATUS},
};

static const char *const state_names[] = {"created", "running", "paused", "stopped"};

/* vmm-run stop|suspend|resume|status SOCKET... and balloon SIZE SOCKET... */
static int cmd_control(const char *name, enum vm_control_command cmd, int argc, char *argv[])
{
	char err[ARGS_ERR_MAX];
	uint64_t size = 0;
	int first = 0, ret = 0;

	if (cmd == VM_CONTROL_BALLOON) {
		if (argc < 1 || parse_size("balloon SIZE", argv[0], &size, err, sizeof(err)) < 0) {
			fprintf(stderr, "vmm-run: %s\n",
				argc < 1 ? "balloon needs a SIZE and a socket path" : err);
			return 1;
		}
		first = 1;
	}
	if (first >= argc) {
		fprintf(stderr, "vmm-run: %s needs at least one control socket path\n", name);
		return 1;
	}
	for (int i = first; i < argc; i++) {
		struct vm_status st = {.struct_size = sizeof(st)};

		if (vm_control_send(argv[i], cmd, size, &st) < 0) {
			fprintf(stderr, "vmm-run: %s\n", vm_last_error(NULL));
			ret = 1;
			continue;
		}
		if (cmd == VM_CONTROL_STATUS)
			printf("%s%sstate=%s vcpus=%u mem_mib=%llu balloon_target_mib=%llu "
			       "balloon_actual_mib=%llu\n",
			       argc - first > 1 ? argv[i] : "", argc - first > 1 ? ": " : "",
			       (unsigned)st.state < 4 ? state_names[st.state] : "unknown", st.vcpus,
			       (unsigned long long)(st.mem_bytes >> 20),
			       (unsigned long long)(st.balloon_target_bytes >> 20),
			       (unsigned long long)(st.balloon_actual_bytes >> 20));
	}
	return ret;
}

/* vmm-run create_qcow2 PATH [SIZE] [--cluster-size BYTES] [--backing FILE] */
static int cmd_create_qcow2(int argc, char *argv[])
{
	const char *path = NULL, *size_s = NULL, *backing = NULL;
	uint64_t size = 0, cluster = 0;
	char err[ARGS_ERR_MAX];

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];

		if ((!strcmp(a, "--cluster-size") || !strcmp(a, "--backing")) && i + 1 >= argc) {
			fprintf(stderr, "vmm-run: option '%s' needs a value\n", a);
			return 1;
		}
		if (!strcmp(a, "--cluster-size")) {
			if (parse_size("--cluster-size", argv[++i], &cluster, err, sizeof(err)) <
				    0 ||
			    cluster > (2u << 20)) {
				fprintf(stderr, "vmm-run: %s\n",
					cluster > (2u << 20) ? "--cluster-size: at most 2M" : err);
				return 1;
			}
		} else if (!strcmp(a, "--backing")) {
			backing = argv[++i];
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "vmm-run: unknown option '%s'\n", a);
			return 1;
		} else if (!path) {
			path = a;
		} else if (!size_s) {
			size_s = a;
		} else {
			fprintf(stderr, "vmm-run: unexpected argument '%s'\n", a);
			return 1;
		}
	}
	if (!path || (!size_s && !backing)) {
		fprintf(stderr,
			"vmm-run: usage: vmm-run create_qcow2 PATH SIZE [--cluster-size BYTES] "
			"[--backing FILE]\n");
		return 1;
	}
	if (size_s && parse_size("SIZE", size_s, &size, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmm-run: %s\n", err);
		return 1;
	}
	if (vm_create_qcow2(path, size, (uint32_t)cluster, backing) < 0) {
		fprintf(stderr, "vmm-run: %s\n", vm_last_error(NULL));
		return 1;
	}
	return 0;
}

int main(int argc, char *argv[])
{
	const char *cmd = argc > 1 ? argv[1] : NULL;

	if (!cmd) {
		fputs(main_usage, stderr);
		return 1;
	}
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		fputs(main_usage, stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("vmm-run %s\n", vm_version());
		return 0;
	}
	if (!strcmp(cmd, "run"))
		return cmd_run(argc - 2, argv + 2);
	if (!strcmp(cmd, "create_qcow2"))
		return cmd_create_qcow2(argc - 2, argv + 2);
	for (size_t i = 0; i < sizeof(control_cmds) / sizeof(control_cmds[0]); i++)
		if (!strcmp(cmd, control_cmds[i].name))
			return cmd_control(cmd, control_cmds[i].cmd, argc - 2, argv + 2);
	fprintf(stderr, "vmm-run: unknown command '%s' (try 'vmm-run --help')\n", cmd);
	return 1;
}
