/* The VM's network interfaces: virtio-net on a tap handed in or created here. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "devices/tap.h"
#include "devices/virtio_net.h"
#include "lib/vm.h"

/* A random locally administered unicast MAC. */
static void random_mac(uint8_t mac[6])
{
	if (getrandom(mac, 6, 0) != 6)
		memset(mac, 0x5a, 6);
	mac[0] = (mac[0] & 0xfc) | 0x02;
}

/* Checks shared by both ways to add a NIC; picks the guest MAC into @mac. */
static int net_precheck(struct vm *vm, const uint8_t *mac_in, uint8_t mac[6])
{
	int ret;

	err_clear(&vm->err);
	ret = vm_check_can_add(vm);
	if (ret < 0)
		return ret;
	if (!mac_in) {
		random_mac(mac);
		return 0;
	}
	ret = tap_check_mac(mac_in, &vm->err);
	if (ret == 0)
		memcpy(mac, mac_in, 6);
	return ret;
}

/* Add virtio-net on @fd, which this takes (closed on failure). */
static int vm_add_net(struct vm *vm, int fd, struct tap_info *info, const uint8_t mac[6],
		      uint32_t host_ip, uint32_t netmask)
{
	struct vm_net_config *n = &vm->nets[vm->nnets];
	struct virtio_device dev;
	int ret;

	ret = tap_enable_offloads(fd, info, &vm->err);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	ret = virtio_net_create(fd, mac, info, &dev, &vm->err);
	if (ret < 0)
		return ret;
	ret = vm_add_virtio(vm, dev, NULL);
	if (ret < 0)
		return ret;
	memset(n, 0, sizeof(*n));
	n->struct_size = sizeof(*n);
	n->tap_fd = fd;
	memcpy(n->ifname, info->ifname, sizeof(n->ifname) - 1);
	n->host_ip = host_ip;
	n->netmask = netmask;
	memcpy(n->mac, mac, 6);
	vm->nnets++;
	return 0;
}

int vm_add_tap_fd(struct vm *vm, int fd, const uint8_t mac_in[6])
{
	struct tap_info info;
	uint8_t mac[6];
	int own, ret;

	ret = net_precheck(vm, mac_in, mac);
	if (ret < 0)
		return ret;
	ret = tap_check_fd(fd, &info, &vm->err);
	if (ret < 0)
		return ret;
	own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (own < 0)
		return err_set(&vm->err, errno, "cannot duplicate tap fd %d: %s", fd,
			       strerror(errno));
	return vm_add_net(vm, own, &info, mac, 0, 0);
}

int vm_add_tap(struct vm *vm, uint32_t host_ip, uint32_t netmask, const uint8_t mac_in[6])
{
	struct tap_info info;
	char ifname[TAP_IFNAMSIZ];
	uint8_t mac[6];
	int fd, ret;

	/* Check everything the caller gave before anything is created. */
	ret = net_precheck(vm, mac_in, mac);
	if (ret < 0)
		return ret;
	if (!tap_netmask_valid(netmask))
		return err_set(&vm->err, EINVAL, "netmask 0x%08x is not a contiguous netmask",
			       netmask);
	if (host_ip == 0)
		return err_set(&vm->err, EINVAL, "no host IP address given");
	ret = tap_create(NULL, host_ip, netmask, &fd, ifname, &vm->err);
	if (ret < 0)
		return ret;
	ret = tap_check_fd(fd, &info, &vm->err);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return vm_add_net(vm, fd, &info, mac, host_ip, netmask);
}

int vm_get_net_config(struct vm *vm, unsigned int index, struct vm_net_config *out)
{
	size_t n;

	if (!out || out->struct_size < offsetof(struct vm_net_config, ifname))
		return err_set(&vm->err, EINVAL, "vm_net_config.struct_size is not set");
	if (index >= vm->nnets)
		return err_set(&vm->err, ENOENT, "the VM has no network interface %u", index);
	n = out->struct_size < sizeof(*out) ? out->struct_size : sizeof(*out);
	memcpy(out, &vm->nets[index], n);
	out->struct_size = n;
	return 0;
}
