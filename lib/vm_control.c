/* The VM's balloon and control socket: vm_add_balloon, vm_set_balloon, vm_control_*. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lib/vm.h"

static void balloon_config_changed(void *ctx)
{
	virtio_pci_config_changed(ctx);
}

int vm_add_balloon(struct vm *vm)
{
	struct virtio_device dev;
	struct virtio_balloon *b;
	struct virtio_pci *vp;
	int ret;

	err_clear(&vm->err);
	ret = vm_check_can_add(vm);
	if (ret < 0)
		return ret;
	if (vm->balloon)
		return err_set(&vm->err, EEXIST, "the VM already has a balloon");
	ret = virtio_balloon_create(&vm->mem, &dev, &b, &vm->err);
	if (ret < 0)
		return ret;
	ret = vm_add_virtio(vm, dev, &vp);
	if (ret < 0)
		return ret;
	virtio_balloon_set_notify(b, balloon_config_changed, vp);
	vm->balloon = b;
	return 0;
}

int vm_set_balloon(struct vm *vm, uint64_t bytes)
{
	if (!vm->balloon)
		return err_set(&vm->err, ENODEV, "the VM has no balloon");
	if (virtio_balloon_set_target(vm->balloon, bytes) < 0)
		return err_set(&vm->err, EINVAL,
			       "balloon size %llu MiB is more than the guest's %llu MiB",
			       (unsigned long long)(bytes >> 20),
			       (unsigned long long)(vm->mem.total >> 20));
	return 0;
}

/* Control socket requests, served on the control thread. */
static int ctl_stop(void *ctx)
{
	return vm_stop(ctx);
}

static int ctl_suspend(void *ctx)
{
	int ret = vm_pause(ctx);

	/* Not running is a state problem, not a bad argument. */
	return ret == -EINVAL ? -EBUSY : ret;
}

static int ctl_resume(void *ctx)
{
	int ret = vm_resume(ctx);

	return ret == -EINVAL ? -EBUSY : ret;
}

static int ctl_balloon(void *ctx, uint64_t bytes)
{
	return vm_set_balloon(ctx, bytes);
}

static int ctl_status(void *ctx, struct control_status *cs)
{
	static const uint32_t states[] = {
		[VM_STATE_CREATED] = CONTROL_STATE_CREATED,
		[VM_STATE_RUNNING] = CONTROL_STATE_RUNNING,
		[VM_STATE_PAUSED] = CONTROL_STATE_PAUSED,
		[VM_STATE_STOPPED] = CONTROL_STATE_STOPPING,
	};
	struct vm_status st = {.struct_size = sizeof(st)};
	int ret = vm_get_status(ctx, &st);

	if (ret < 0)
		return ret;
	cs->state = states[st.state];
	cs->vcpus = st.vcpus;
	cs->mem_bytes = st.mem_bytes;
	cs->balloon_target = st.balloon_target_bytes;
	cs->balloon_actual = st.balloon_actual_bytes;
	return 0;
}

int vm_control_listen(struct vm *vm, const char *path)
{
	struct control_ops ops = {ctl_stop, ctl_suspend, ctl_resume, ctl_balloon, ctl_status, vm};
	struct control_server *s;
	int ret;

	err_clear(&vm->err);
	if (!path || !path[0])
		return err_set(&vm->err, EINVAL, "control socket: no path given");
	if (vm->ctl)
		return err_set(&vm->err, EEXIST, "the VM already has a control socket");
	if (atomic_load(&vm->ran))
		return err_set(&vm->err, EBUSY,
			       "the control socket must be set up before vm_run()");
	ret = control_listen(path, &s, &vm->err);
	if (ret < 0)
		return ret;
	ret = control_start(s, &ops, &vm->err);
	if (ret < 0) {
		control_close(s);
		return ret;
	}
	vm->ctl = s;
	return 0;
}

const char *vm_control_path(const struct vm *vm)
{
	return vm->ctl ? control_path(vm->ctl) : NULL;
}

void vm_control_close(struct vm *vm)
{
	if (vm->ctl) {
		control_close(vm->ctl);
		vm->ctl = NULL;
	}
}

int vm_control_send(const char *path, enum vm_control_command cmd, uint64_t arg,
		    struct vm_status *status)
{
	static const enum vm_state states[] = {
		[CONTROL_STATE_RUNNING] = VM_STATE_RUNNING,
		[CONTROL_STATE_PAUSED] = VM_STATE_PAUSED,
		[CONTROL_STATE_STOPPING] = VM_STATE_STOPPED,
		[CONTROL_STATE_CREATED] = VM_STATE_CREATED,
	};
	struct control_request req = {.command = (uint16_t)cmd, .arg = arg};
	struct control_reply rep;
	struct vmm_err err;
	int ret;

	err_clear(&err);
	if (!path || cmd < VM_CONTROL_STOP || cmd > VM_CONTROL_STATUS) {
		ret = err_set(&err, EINVAL, "control request: bad path or command");
		goto out;
	}
	ret = control_request(path, &req, &rep, &err);
	if (ret == 0 && status) {
		struct vm_status s;
		size_t n = status->struct_size < sizeof(s) ? status->struct_size : sizeof(s);

		memset(&s, 0, sizeof(s));
		s.struct_size = n;
		s.state = rep.st.state < sizeof(states) / sizeof(states[0]) ? states[rep.st.state]
									    : VM_STATE_STOPPED;
		s.vcpus = rep.st.vcpus;
		s.mem_bytes = rep.st.mem_bytes;
		s.balloon_target_bytes = rep.st.balloon_target;
		s.balloon_actual_bytes = rep.st.balloon_actual;
		if (n >= offsetof(struct vm_status, vcpus))
			memcpy(status, &s, n);
	}
out:
	vm_client_error_set(&err);
	return ret;
}
