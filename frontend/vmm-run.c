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
		uint32_t flags = (d->writable ? 0 : VM_DISK_READ_ONLY) | (d->root ? VM_DISK_ROOT : 0);
		int ret = vm_add_disk(vm, d->path, flags);

		if (ret < 0)
			return ret;
	}
	return o->no_rng ? 0 : vm_add_rng(vm);
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
			fprintf(stderr, "vmm-run: guest stopped: %s: %s\n", vm_exit_reason_name(ret),
				vm_last_error(vm));
		ret = 1;
		break;
	}
	vm_destroy(vm);
	return ret;
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
	fprintf(stderr, "vmm-run: unknown command '%s' (try 'vmm-run --help')\n", cmd);
	return 1;
}
