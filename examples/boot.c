/* Minimal embedder: boot a kernel with its console on this process's stdout. */
#include <stdio.h>
#include <unistd.h>

#include <libvmm/libvmm.h>

int main(int argc, char **argv)
{
	struct vm_config cfg;
	struct vm *vm;
	int reason;

	if (argc != 2) {
		fprintf(stderr, "usage: %s KERNEL\n", argv[0]);
		return 2;
	}
	vm_config_init(&cfg);
	cfg.kernel_path = argv[1];
	cfg.mem_mib = 128;
	cfg.vcpus = 2;
	cfg.cmdline = "guest.exit=poweroff";
	cfg.console_out_fd = STDOUT_FILENO;
	if (vm_create(&cfg, &vm) < 0) {
		fprintf(stderr, "vm_create: %s\n", vm_last_error(NULL));
		return 1;
	}
	reason = vm_run(vm); /* blocks; vm_stop(vm) from another thread ends it */
	printf("guest exited: %s\n", vm_exit_reason_name(reason));
	vm_destroy(vm);
	return reason == VM_EXIT_POWEROFF ? 0 : 1;
}
