/*
 * Virtio 1.x "modern" PCI transport with MSI-X: one bus-0 PCI function per virtio device.
 *
 * libvmm requires MSI-X: the machine describes no INTx routing (_PRT), so the
 * function's interrupt pin is 0. With MSI-X disabled the transport keeps ISR
 * semantics only (ISR bit 0 reflects what the device signalled on its call
 * eventfds, bit 1 config changes) and raises no interrupt.
 */
#ifndef LIBVMM_LIB_VIRTIO_PCI_H
#define LIBVMM_LIB_VIRTIO_PCI_H

#include <stdint.h>

#include "lib/bus.h"
#include "lib/err.h"
#include "lib/memory.h"
#include "lib/pci.h"
#include "lib/virtio/virtio.h"

/*
 * BAR 0: one 32-bit non-prefetchable memory BAR of VIRTIO_PCI_BAR_SIZE bytes
 * (the BAR window lies below 4 GiB), each structure in its own 4 KiB page.
 * Anything not listed reads 0 and ignores writes.
 */
#define VIRTIO_PCI_BAR_SIZE	  0x8000u
#define VIRTIO_PCI_COMMON_OFF	  0x0000u /* common configuration, 0x38 bytes */
#define VIRTIO_PCI_ISR_OFF	  0x1000u /* ISR status, 1 byte, read to clear */
#define VIRTIO_PCI_DEVICE_OFF	  0x2000u /* device config, ops->config_size bytes */
#define VIRTIO_PCI_NOTIFY_OFF	  0x3000u /* queue i notifies at + i * 4 */
#define VIRTIO_PCI_NOTIFY_MULT	  4u	  /* notify_off_multiplier; queue_notify_off = i */
#define VIRTIO_PCI_MSIX_TABLE_OFF 0x4000u /* nqueues + 1 entries of 16 bytes */
#define VIRTIO_PCI_MSIX_PBA_OFF	  0x5000u /* 8 bytes */
#define VIRTIO_PCI_COMMON_SIZE	  0x38u
#define VIRTIO_PCI_DEVICE_MAX	  0x1000u /* largest config_size a device may have */

/* MSI-X vector value meaning "no interrupt" in config_msix_vector / queue_msix_vector. */
#define VIRTIO_MSI_NO_VECTOR 0xffff

/*
 * How the transport reaches the hypervisor. lib/vm.c implements it with KVM
 * (KVM_IOEVENTFD, KVM_SET_GSI_ROUTING + KVM_IRQFD, KVM_SIGNAL_MSI); unit
 * tests fake it. Returns are 0 or -errno.
 *
 * Threads: a transport calls these with its own lock held, from vCPU threads
 * (register accesses), a device worker (needs_reset -> signal_msi) or the
 * thread that destroys it; they must not call back into the transport.
 * Several transports call concurrently, so state shared by all of them
 * (KVM's per-VM GSI routing table) needs the platform's own lock.
 */
struct virtio_platform {
	/*
	 * Make @fd readable on a guest write of @len bytes (2: the 16-bit queue
	 * index a driver writes; a platform may match any length instead,
	 * e.g. KVM len 0) at guest-physical @addr, whatever the value.
	 */
	int (*add_ioeventfd)(void *ctx, uint64_t addr, uint32_t len, int fd);
	/* Undo add_ioeventfd with the same arguments. */
	int (*del_ioeventfd)(void *ctx, uint64_t addr, uint32_t len, int fd);
	/*
	 * From now on, a write to eventfd @fd injects the MSI (@msi_addr,
	 * @msi_data); replaces any route @fd had. Values come from the guest
	 * unchecked: the platform must accept any address and data.
	 */
	int (*set_msi_irqfd)(void *ctx, int fd, uint64_t msi_addr, uint32_t msi_data);
	/* No more injection for @fd (no effect if it had no route). */
	void (*clear_msi_irqfd)(void *ctx, int fd);
	/* Inject one MSI now. */
	int (*signal_msi)(void *ctx, uint64_t msi_addr, uint32_t msi_data);
	void *ctx;
};

struct virtio_pci;

/*
 * Create the PCI function for @dev and put it on bus 0 of @pci (next free
 * slot): vendor 0x1af4, device 0x1040 + device id, revision 1, virtio
 * capabilities (common, notify, ISR, device config if config_size > 0,
 * PCI_CFG access window) and MSI-X (nqueues + 1 vectors: one per queue and
 * one for config changes) with BAR 0 allocated from @pci's BAR window.
 *
 * BAR 0 decodes on @mmio only while the guest has the memory-space bit of
 * the command register set and the BAR lies inside the window without
 * overlapping another range on @mmio; the guest may size and move it.
 *
 * @mem is the guest RAM that queues live in; @plat is copied; @pci, @mmio
 * and @mem must outlive the transport. @dev's ops must have nqueues
 * 1..VIRTIO_MAX_QUEUES, queue_max a power of two up to VIRTQ_MAX_SIZE,
 * config_size <= VIRTIO_PCI_DEVICE_MAX, and features/activate/reset/destroy
 * (config_read/write too when config_size > 0).
 *
 * At DRIVER_OK the device's activate() gets a struct virtio_activation with
 * queues[i] set (and virtq_start()ed) for each queue the driver enabled; a
 * queue the driver left disabled has queues[i] NULL and kick/call fd -1.
 * Kick eventfds are ioeventfds at the notify addresses (the MMIO handler
 * also kicks for writes that reach it); call eventfds are irqfds routed to
 * the queue's MSI-X vector while it can fire.
 *
 * The transport never holds its lock while it calls @dev's ops, so a device
 * may call the activation's needs_reset() from any thread, including from
 * within reset() or activate(). config_read/config_write may run on vCPU
 * threads concurrently with each other and with activate/reset.
 *
 * Returns 0 with *@out set, and then owns @dev (virtio_pci_destroy() calls
 * reset() then destroy()); or -EINVAL (bad ops), -ENOSPC (no slot or BAR
 * space), -ENOMEM, -errno of eventfd(), with a message in @err; @dev then
 * still belongs to the caller.
 */
int virtio_pci_create(struct pci_root *pci, struct bus *mmio, const struct guest_mem *mem,
		      const struct virtio_platform *plat, struct virtio_device dev,
		      struct virtio_pci **out, struct vmm_err *err);

/*
 * Reset and destroy the device, take the function off the bus and BAR 0 off
 * @mmio, drop every ioeventfd and irqfd route, close the eventfds and free
 * @vp. Call with no vCPU running. NULL is a no-op.
 */
void virtio_pci_destroy(struct virtio_pci *vp);

/* Bus-0 slot of the function (its device number). */
unsigned int virtio_pci_slot(const struct virtio_pci *vp);

/*
 * The host changed the device's configuration (e.g. a balloon target):
 * bump config_generation and, once the driver has set DRIVER_OK, send a
 * config-change interrupt (ISR bit 1 and the config MSI-X vector, or its
 * pending bit while masked). Thread safe, also from within the device's ops.
 */
void virtio_pci_config_changed(struct virtio_pci *vp);

#endif
