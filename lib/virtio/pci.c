/* Virtio 1.x modern PCI transport: capabilities, BAR 0 registers, device status, MSI-X routing. */
#include "pci.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define VIRTIO_PCI_VENDOR      0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040 /* + virtio device id: non-transitional */

/* struct virtio_pci_cap (virtio 1.2, 4.1.4): field offsets and cfg_type values. */
#define CAP_CFG_TYPE	3
#define CAP_BAR		4
#define CAP_OFFSET	8
#define CAP_LENGTH	12
#define CAP_SIZE	16
#define CAP_NOTIFY_MULT 16 /* struct virtio_pci_notify_cap */
#define CAP_CFG_DATA	16 /* struct virtio_pci_cfg_cap: pci_cfg_data[4] */
#define CAP_EXT_SIZE	20
#define CAP_COMMON_CFG	1
#define CAP_NOTIFY_CFG	2
#define CAP_ISR_CFG	3
#define CAP_DEVICE_CFG	4
#define CAP_PCI_CFG	5

/* struct virtio_pci_common_cfg (4.1.4.3). */
#define COMMON_DFSELECT 0x00
#define COMMON_DF	0x04
#define COMMON_GFSELECT 0x08
#define COMMON_GF	0x0c
#define COMMON_MSIX	0x10
#define COMMON_NUMQ	0x12
#define COMMON_STATUS	0x14
#define COMMON_CFGGEN	0x15
#define COMMON_Q_SELECT 0x16
#define COMMON_Q_SIZE	0x18
#define COMMON_Q_MSIX	0x1a
#define COMMON_Q_ENABLE 0x1c
#define COMMON_Q_NOFF	0x1e
#define COMMON_Q_DESC	0x20
#define COMMON_Q_AVAIL	0x28
#define COMMON_Q_USED	0x30

#define ISR_QUEUE  0x1
#define ISR_CONFIG 0x2

/* Status bits the driver may set; NEEDS_RESET is the device's. */
#define STATUS_DRIVER_BITS                                                                         \
	(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |            \
	 VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FAILED)

/*
 * Feature bits 24..40 belong to the transport and ring: a device may not
 * offer them; the transport offers only what it implements.
 */
#define TRANSPORT_FEATURE_BITS (((1ull << 41) - 1) & ~((1ull << 24) - 1))
#define TRANSPORT_FEATURES                                                                         \
	((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_RING_EVENT_IDX) |                        \
	 (1ull << VIRTIO_F_INDIRECT_DESC))

#define NOTIFY_LEN 2 /* the driver writes the 16-bit queue index */

/* The driver's view of one queue, and what the transport registered for it. */
struct vp_queue {
	uint16_t size;
	uint16_t vector;
	bool enabled;
	uint64_t desc, avail, used;
	int kick_fd, call_fd; /* created once, kept until destroy */
	bool ioeventfd;	      /* kick_fd registered at ioeventfd_addr */
	uint64_t ioeventfd_addr;
	bool routed; /* call_fd routed to (msi_addr, msi_data) */
	uint64_t msi_addr;
	uint32_t msi_data;
};

/*
 * Locks: op_lock serialises device status changes (activate, reset); lock
 * guards the rest, including fn and msix. Order: op_lock, then lock, then
 * the MMIO bus's lock (bus_register). Neither is held while calling the
 * device's ops, so the device may call needs_reset (which takes lock) from
 * anywhere.
 */
struct virtio_pci {
	struct pci_function fn;
	struct pci_msix msix;
	struct pci_root *pci;
	struct bus *mmio;
	const struct guest_mem *mem;
	struct virtio_platform plat;
	struct virtio_device dev;
	unsigned int slot;
	unsigned int nqueues;
	uint16_t queue_max;
	uint32_t config_size;
	uint8_t cfg_cap; /* offset of the PCI_CFG access capability */
	uint64_t device_features;

	pthread_mutex_t op_lock;
	pthread_mutex_t lock;
	uint64_t decode_addr; /* BAR 0's range on mmio, 0 while it does not decode */
	uint64_t driver_features;
	bool bad_features[3]; /* last write to word 0 / 1 / any higher word had unoffered bits */
	uint32_t dfselect, gfselect;
	uint16_t config_vector;
	uint16_t queue_select;
	uint8_t status;
	uint8_t config_generation;
	uint8_t isr;
	bool active; /* between activation and reset: fds handed to the device */
	struct vp_queue q[VIRTIO_MAX_QUEUES];
	struct virtq vq[VIRTIO_MAX_QUEUES];
	struct virtio_activation act;
};

static void bar_access(struct virtio_pci *vp, uint64_t off, uint8_t *data, uint32_t len,
		       bool is_write);

static uint64_t eventfd_drain(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

static void eventfd_kick(int fd)
{
	uint64_t one = 1;
	ssize_t r;

	/* EAGAIN: the counter is saturated, the reader is signalled anyway. */
	do {
		r = write(fd, &one, sizeof(one));
	} while (r < 0 && errno == EINTR);
}

static bool ranges_touch(uint32_t a, uint32_t alen, uint32_t b, uint32_t blen)
{
	return a < b + blen && b < a + alen;
}

/* ---- Interrupts ---- */

/* Whether MSI-X vector @vec can fire now (bus mastering on too), and its message. */
static bool vector_ready(struct virtio_pci *vp, uint32_t vec, uint64_t *addr, uint32_t *data)
{
	if (!(pci_cfg_get16(&vp->fn, PCI_COMMAND) & PCI_COMMAND_MASTER))
		return false;
	return pci_msix_deliverable(&vp->msix, &vp->fn, vec, addr, data);
}

static void route_clear(struct virtio_pci *vp, struct vp_queue *q)
{
	if (!q->routed)
		return;
	vp->plat.clear_msi_irqfd(vp->plat.ctx, q->call_fd);
	q->routed = false;
}

/*
 * Bring irqfd routes in line with the MSI-X state (lock held). A queue whose
 * vector can fire has its call eventfd routed to the vector's message; one
 * whose vector is masked (entry, function mask, MSI-X or bus mastering off)
 * has no route, and what the device signalled meanwhile moves from the
 * eventfd to the vector's pending bit. Pending vectors that can fire now are
 * sent and cleared.
 */
static void msix_update(struct virtio_pci *vp)
{
	bool enabled = pci_msix_enabled(&vp->msix, &vp->fn);
	uint64_t addr;
	uint32_t data;

	for (unsigned int i = 0; i < vp->nqueues; i++) {
		struct vp_queue *q = &vp->q[i];

		if (!vp->active || !q->enabled)
			continue;
		if (vector_ready(vp, q->vector, &addr, &data)) {
			if (!q->routed || q->msi_addr != addr || q->msi_data != data) {
				if (vp->plat.set_msi_irqfd(vp->plat.ctx, q->call_fd, addr, data) ==
				    0) {
					q->routed = true;
					q->msi_addr = addr;
					q->msi_data = data;
				} else {
					route_clear(vp, q);
				}
			}
		} else {
			route_clear(vp, q);
		}
		if (!q->routed && enabled && q->vector < vp->msix.nvec && eventfd_drain(q->call_fd))
			pci_msix_set_pending(&vp->msix, q->vector, true);
	}
	for (uint32_t v = 0; v < vp->msix.nvec; v++) {
		if (pci_msix_pending(&vp->msix, v) && vector_ready(vp, v, &addr, &data)) {
			pci_msix_set_pending(&vp->msix, v, false);
			vp->plat.signal_msi(vp->plat.ctx, addr, data);
		}
	}
}

/*
 * Config-change interrupt (lock held): ISR bit 1, then the config vector's
 * MSI, or its pending bit while it is masked. Without MSI-X only the ISR
 * bit is set: libvmm has no INTx line.
 */
static void config_interrupt(struct virtio_pci *vp)
{
	uint64_t addr;
	uint32_t data;

	vp->isr |= ISR_CONFIG;
	if (!pci_msix_enabled(&vp->msix, &vp->fn))
		return;
	if (vector_ready(vp, vp->config_vector, &addr, &data))
		vp->plat.signal_msi(vp->plat.ctx, addr, data);
	else
		pci_msix_set_pending(&vp->msix, vp->config_vector, true);
}

static void vp_needs_reset(void *ctx)
{
	struct virtio_pci *vp = ctx;

	pthread_mutex_lock(&vp->lock);
	if (vp->active && !(vp->status & VIRTIO_STATUS_NEEDS_RESET)) {
		vp->status |= VIRTIO_STATUS_NEEDS_RESET;
		config_interrupt(vp);
	}
	pthread_mutex_unlock(&vp->lock);
}

void virtio_pci_config_changed(struct virtio_pci *vp)
{
	pthread_mutex_lock(&vp->lock);
	vp->config_generation++;
	if (vp->status & VIRTIO_STATUS_DRIVER_OK)
		config_interrupt(vp);
	pthread_mutex_unlock(&vp->lock);
}

/* ---- BAR decoding and ioeventfds ---- */

static void ioeventfds_del(struct virtio_pci *vp)
{
	for (unsigned int i = 0; i < vp->nqueues; i++) {
		struct vp_queue *q = &vp->q[i];

		if (q->ioeventfd)
			vp->plat.del_ioeventfd(vp->plat.ctx, q->ioeventfd_addr, NOTIFY_LEN,
					       q->kick_fd);
		q->ioeventfd = false;
	}
}

/*
 * Register the kick eventfds of the active queues at their notify addresses
 * (lock held, BAR decoding). A queue whose registration fails still works
 * through the MMIO handler, only slower.
 */
static void ioeventfds_add(struct virtio_pci *vp)
{
	for (unsigned int i = 0; i < vp->nqueues; i++) {
		struct vp_queue *q = &vp->q[i];
		uint64_t addr =
			vp->decode_addr + VIRTIO_PCI_NOTIFY_OFF + i * VIRTIO_PCI_NOTIFY_MULT;

		if (!q->enabled || q->ioeventfd)
			continue;
		if (vp->plat.add_ioeventfd(vp->plat.ctx, addr, NOTIFY_LEN, q->kick_fd) == 0) {
			q->ioeventfd = true;
			q->ioeventfd_addr = addr;
		}
	}
}

static void bar_mmio(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	bar_access(opaque, offset, data, len, is_write);
}

/*
 * Decode BAR 0 where the guest put it (lock held): only with memory space
 * enabled and the whole BAR inside the window and clear of other ranges.
 * Otherwise (e.g. all ones while sizing) it does not decode.
 */
static void update_decode(struct virtio_pci *vp)
{
	uint64_t bar = pci_function_bar32(&vp->fn, 0);
	bool mem = pci_cfg_get16(&vp->fn, PCI_COMMAND) & PCI_COMMAND_MEMORY;
	uint64_t want = 0;

	if (mem && bar && pci_in_mmio_window(vp->pci, bar, VIRTIO_PCI_BAR_SIZE))
		want = bar;
	if (want == vp->decode_addr)
		return;
	if (vp->decode_addr) {
		ioeventfds_del(vp);
		bus_unregister(vp->mmio, vp->decode_addr);
		vp->decode_addr = 0;
	}
	if (want && bus_register(vp->mmio, want, VIRTIO_PCI_BAR_SIZE, bar_mmio, vp) == 0) {
		vp->decode_addr = want;
		if (vp->active)
			ioeventfds_add(vp);
	}
}

/* ---- Device status: reset and activation ---- */

/* Forget the driver's setup after the device's reset() (lock held). */
static void transport_reset(struct virtio_pci *vp)
{
	ioeventfds_del(vp);
	for (unsigned int i = 0; i < vp->nqueues; i++) {
		struct vp_queue *q = &vp->q[i];

		route_clear(vp, q);
		eventfd_drain(q->kick_fd);
		eventfd_drain(q->call_fd);
		q->size = vp->queue_max;
		q->vector = VIRTIO_MSI_NO_VECTOR;
		q->enabled = false;
		q->desc = q->avail = q->used = 0;
	}
	memset(vp->vq, 0, sizeof(vp->vq));
	memset(&vp->act, 0, sizeof(vp->act));
	vp->active = false;
	vp->driver_features = 0;
	memset(vp->bad_features, 0, sizeof(vp->bad_features));
	vp->dfselect = vp->gfselect = 0;
	vp->config_vector = VIRTIO_MSI_NO_VECTOR;
	vp->queue_select = 0;
	vp->status = 0;
	vp->isr = 0;
	/* Interrupts of the old setup are gone; the MSI-X table itself is PCI state and stays. */
	vp->msix.pba = 0;
}

static bool features_acceptable(const struct virtio_pci *vp)
{
	return (vp->driver_features & (1ull << VIRTIO_F_VERSION_1)) && !vp->bad_features[0] &&
	       !vp->bad_features[1] && !vp->bad_features[2];
}

/*
 * DRIVER_OK (op_lock and lock held; returns with both held): check and start
 * every enabled queue, register kicks and interrupt routes, then call the
 * device's activate() without the lock. Any failure sets NEEDS_RESET.
 */
static void activate(struct virtio_pci *vp)
{
	struct virtio_activation *act = &vp->act;
	int ret;

	memset(act, 0, sizeof(*act));
	act->features = vp->driver_features;
	act->nqueues = vp->nqueues;
	act->needs_reset = vp_needs_reset;
	act->ctx = vp;
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++)
		act->kick_fd[i] = act->call_fd[i] = -1;
	for (unsigned int i = 0; i < vp->nqueues; i++) {
		struct vp_queue *q = &vp->q[i];
		struct virtq *vq = &vp->vq[i];

		if (!q->enabled)
			continue;
		memset(vq, 0, sizeof(*vq));
		vq->size = q->size;
		vq->desc_gpa = q->desc;
		vq->avail_gpa = q->avail;
		vq->used_gpa = q->used;
		vq->event_idx = vp->driver_features & (1ull << VIRTIO_F_RING_EVENT_IDX);
		vq->indirect = vp->driver_features & (1ull << VIRTIO_F_INDIRECT_DESC);
		vq->mem = vp->mem;
		if (virtq_start(vq) != 0)
			goto broken;
		act->queues[i] = vq;
		act->kick_fd[i] = q->kick_fd;
		act->call_fd[i] = q->call_fd;
	}
	vp->active = true;
	if (vp->decode_addr)
		ioeventfds_add(vp);
	msix_update(vp);

	pthread_mutex_unlock(&vp->lock);
	ret = vp->dev.ops->activate(vp->dev.dev, act);
	if (ret != 0)
		vp->dev.ops->reset(vp->dev.dev);
	pthread_mutex_lock(&vp->lock);
	if (ret == 0)
		return;
	ioeventfds_del(vp);
	for (unsigned int i = 0; i < vp->nqueues; i++)
		route_clear(vp, &vp->q[i]);
	vp->active = false;
broken:
	vp->status |= VIRTIO_STATUS_NEEDS_RESET;
	config_interrupt(vp);
}

static void status_write(struct virtio_pci *vp, uint8_t v)
{
	uint8_t old, new;

	pthread_mutex_lock(&vp->op_lock);
	if (v == 0) {
		vp->dev.ops->reset(vp->dev.dev);
		pthread_mutex_lock(&vp->lock);
		transport_reset(vp);
		pthread_mutex_unlock(&vp->lock);
		pthread_mutex_unlock(&vp->op_lock);
		return;
	}
	pthread_mutex_lock(&vp->lock);
	/* Bits are only ever set; clearing takes a reset. */
	old = vp->status;
	new = old | (v & STATUS_DRIVER_BITS);
	if ((new &VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK) &&
	    !features_acceptable(vp))
		new &= ~VIRTIO_STATUS_FEATURES_OK;
	if ((new &VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) &&
	    (!(new &VIRTIO_STATUS_FEATURES_OK) || (new &VIRTIO_STATUS_FAILED)))
		new &= ~VIRTIO_STATUS_DRIVER_OK;
	vp->status = new;
	if ((new &VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK))
		activate(vp);
	pthread_mutex_unlock(&vp->lock);
	pthread_mutex_unlock(&vp->op_lock);
}

/* ---- BAR 0 registers ---- */

static const struct {
	uint8_t off, size;
} common_fields[] = {
	{COMMON_DFSELECT, 4}, {COMMON_DF, 4},	  {COMMON_GFSELECT, 4}, {COMMON_GF, 4},
	{COMMON_MSIX, 2},     {COMMON_NUMQ, 2},	  {COMMON_STATUS, 1},	{COMMON_CFGGEN, 1},
	{COMMON_Q_SELECT, 2}, {COMMON_Q_SIZE, 2}, {COMMON_Q_MSIX, 2},	{COMMON_Q_ENABLE, 2},
	{COMMON_Q_NOFF, 2},   {COMMON_Q_DESC, 8}, {COMMON_Q_AVAIL, 8},	{COMMON_Q_USED, 8},
};

/*
 * The field an access of @len bytes at @off addresses with its natural
 * width (64-bit fields also as two dwords): its offset, or -1.
 */
static int common_field(uint64_t off, uint32_t len)
{
	for (size_t i = 0; i < sizeof(common_fields) / sizeof(common_fields[0]); i++) {
		uint32_t f = common_fields[i].off, size = common_fields[i].size;

		if (off == f && len == size)
			return (int)f;
		if (size == 8 && len == 4 && (off == f || off == f + 4))
			return (int)f;
	}
	return -1;
}

static uint16_t valid_vector(const struct virtio_pci *vp, uint16_t v)
{
	return v < vp->msix.nvec ? v : VIRTIO_MSI_NO_VECTOR;
}

static uint64_t common_read(struct virtio_pci *vp, int field, uint64_t off)
{
	struct vp_queue *q = vp->queue_select < vp->nqueues ? &vp->q[vp->queue_select] : NULL;
	unsigned int shift = (unsigned int)(off - (uint64_t)field) * 8;

	switch (field) {
	case COMMON_DFSELECT:
		return vp->dfselect;
	case COMMON_DF:
		return vp->dfselect < 2 ? (uint32_t)(vp->device_features >> (32 * vp->dfselect))
					: 0;
	case COMMON_GFSELECT:
		return vp->gfselect;
	case COMMON_GF:
		return vp->gfselect < 2 ? (uint32_t)(vp->driver_features >> (32 * vp->gfselect))
					: 0;
	case COMMON_MSIX:
		return vp->config_vector;
	case COMMON_NUMQ:
		return vp->nqueues;
	case COMMON_STATUS:
		return vp->status;
	case COMMON_CFGGEN:
		return vp->config_generation;
	case COMMON_Q_SELECT:
		return vp->queue_select;
	case COMMON_Q_SIZE:
		return q ? q->size : 0;
	case COMMON_Q_MSIX:
		return q ? q->vector : VIRTIO_MSI_NO_VECTOR;
	case COMMON_Q_ENABLE:
		return q ? q->enabled : 0;
	case COMMON_Q_NOFF:
		return q ? vp->queue_select : 0;
	case COMMON_Q_DESC:
		return q ? q->desc >> shift : 0;
	case COMMON_Q_AVAIL:
		return q ? q->avail >> shift : 0;
	case COMMON_Q_USED:
		return q ? q->used >> shift : 0;
	}
	return 0;
}

/* Replace the @len bytes at @off - @field of a 64-bit register with @v. */
static void set64(uint64_t *reg, int field, uint64_t off, uint32_t len, uint64_t v)
{
	if (len == 8)
		*reg = v;
	else if (off == (uint64_t)field)
		*reg = (*reg & 0xffffffff00000000ull) | (uint32_t)v;
	else
		*reg = (*reg & 0xffffffffull) | v << 32;
}

static void driver_features_write(struct virtio_pci *vp, uint32_t v)
{
	uint32_t offered;

	/* Features are fixed once FEATURES_OK was accepted. */
	if (vp->status & VIRTIO_STATUS_FEATURES_OK)
		return;
	if (vp->gfselect >= 2) {
		if (v)
			vp->bad_features[2] = true;
		return;
	}
	offered = (uint32_t)(vp->device_features >> (32 * vp->gfselect));
	vp->bad_features[vp->gfselect] = (v & ~offered) != 0;
	v &= offered;
	if (vp->gfselect == 0)
		vp->driver_features = (vp->driver_features & ~0xffffffffull) | v;
	else
		vp->driver_features = (vp->driver_features & 0xffffffffull) | (uint64_t)v << 32;
}

static void common_write(struct virtio_pci *vp, int field, uint64_t off, uint32_t len, uint64_t v)
{
	struct vp_queue *q = vp->queue_select < vp->nqueues ? &vp->q[vp->queue_select] : NULL;

	/* A queue's setup is frozen from DRIVER_OK to the next reset. */
	if (vp->status & VIRTIO_STATUS_DRIVER_OK)
		q = NULL;
	switch (field) {
	case COMMON_DFSELECT:
		vp->dfselect = (uint32_t)v;
		break;
	case COMMON_GFSELECT:
		vp->gfselect = (uint32_t)v;
		break;
	case COMMON_GF:
		driver_features_write(vp, (uint32_t)v);
		break;
	case COMMON_MSIX:
		vp->config_vector = valid_vector(vp, (uint16_t)v);
		msix_update(vp);
		break;
	case COMMON_Q_SELECT:
		vp->queue_select = (uint16_t)v;
		break;
	case COMMON_Q_SIZE:
		if (q && v && !(v & (v - 1)) && v <= vp->queue_max)
			q->size = (uint16_t)v;
		break;
	case COMMON_Q_MSIX:
		if (q)
			q->vector = valid_vector(vp, (uint16_t)v);
		break;
	case COMMON_Q_ENABLE:
		/* Without VIRTIO_F_RING_RESET a queue cannot be disabled but by a reset. */
		if (q && v == 1)
			q->enabled = true;
		break;
	case COMMON_Q_DESC:
		if (q)
			set64(&q->desc, field, off, len, v);
		break;
	case COMMON_Q_AVAIL:
		if (q)
			set64(&q->avail, field, off, len, v);
		break;
	case COMMON_Q_USED:
		if (q)
			set64(&q->used, field, off, len, v);
		break;
	default: /* read-only */
		break;
	}
}

static void common_access(struct virtio_pci *vp, uint64_t off, uint8_t *data, uint32_t len,
			  bool is_write)
{
	int field = common_field(off, len);
	uint64_t v = 0;

	if (field < 0)
		return; /* reads were zeroed by the caller */
	if (is_write) {
		memcpy(&v, data, len);
		if (field == COMMON_STATUS) {
			status_write(vp, (uint8_t)v);
			return;
		}
		pthread_mutex_lock(&vp->lock);
		common_write(vp, field, off, len, v);
		pthread_mutex_unlock(&vp->lock);
	} else {
		pthread_mutex_lock(&vp->lock);
		v = common_read(vp, field, off);
		pthread_mutex_unlock(&vp->lock);
		memcpy(data, &v, len);
	}
}

/*
 * ISR status, read to clear. With MSI-X off, interrupts the device raised
 * on its call eventfds (not routed then) show as the queue bit.
 */
static uint8_t isr_read(struct virtio_pci *vp)
{
	uint8_t v;

	pthread_mutex_lock(&vp->lock);
	if (vp->active && !pci_msix_enabled(&vp->msix, &vp->fn)) {
		for (unsigned int i = 0; i < vp->nqueues; i++) {
			if (vp->q[i].enabled && eventfd_drain(vp->q[i].call_fd))
				vp->isr |= ISR_QUEUE;
		}
	}
	v = vp->isr;
	vp->isr = 0;
	pthread_mutex_unlock(&vp->lock);
	return v;
}

static void notify_write(struct virtio_pci *vp, uint64_t off, uint32_t len)
{
	uint64_t i = off / VIRTIO_PCI_NOTIFY_MULT;

	if ((len != 2 && len != 4) || off % VIRTIO_PCI_NOTIFY_MULT || i >= vp->nqueues)
		return;
	/* A write the ioeventfd did not catch (other width, PCI_CFG window): kick by hand. */
	pthread_mutex_lock(&vp->lock);
	if (vp->active && vp->q[i].enabled)
		eventfd_kick(vp->q[i].kick_fd);
	pthread_mutex_unlock(&vp->lock);
}

/* Any access to BAR 0 at @off, from the MMIO bus or the PCI_CFG window. Unmapped reads give 0. */
static void bar_access(struct virtio_pci *vp, uint64_t off, uint8_t *data, uint32_t len,
		       bool is_write)
{
	if (!is_write)
		memset(data, 0, len);
	if (len == 0 || len > 8 || off >= VIRTIO_PCI_BAR_SIZE || len > VIRTIO_PCI_BAR_SIZE - off)
		return;
	switch (off & ~0xfffull) {
	case VIRTIO_PCI_COMMON_OFF:
		common_access(vp, off, data, len, is_write);
		break;
	case VIRTIO_PCI_ISR_OFF:
		if (!is_write && off == VIRTIO_PCI_ISR_OFF && len == 1)
			data[0] = isr_read(vp);
		break;
	case VIRTIO_PCI_DEVICE_OFF:
		off -= VIRTIO_PCI_DEVICE_OFF;
		if (off >= vp->config_size || len > vp->config_size - off)
			break;
		if (is_write)
			vp->dev.ops->config_write(vp->dev.dev, (uint32_t)off, data, len);
		else
			vp->dev.ops->config_read(vp->dev.dev, (uint32_t)off, data, len);
		break;
	case VIRTIO_PCI_NOTIFY_OFF:
		if (is_write)
			notify_write(vp, off - VIRTIO_PCI_NOTIFY_OFF, len);
		break;
	case VIRTIO_PCI_MSIX_TABLE_OFF:
		pthread_mutex_lock(&vp->lock);
		if (pci_msix_table_access(&vp->msix, off - VIRTIO_PCI_MSIX_TABLE_OFF, data, len,
					  is_write))
			msix_update(vp);
		pthread_mutex_unlock(&vp->lock);
		break;
	case VIRTIO_PCI_MSIX_PBA_OFF:
		if (is_write)
			break;
		pthread_mutex_lock(&vp->lock);
		msix_update(vp); /* collect what masked queues signalled */
		pci_msix_pba_read(&vp->msix, off - VIRTIO_PCI_MSIX_PBA_OFF, data, len);
		pthread_mutex_unlock(&vp->lock);
		break;
	default:
		break;
	}
}

/* ---- Config space ---- */

/*
 * Config space accesses: the default merge through the write masks, then
 * what a write changes (BAR 0 decoding, MSI-X enable and mask), and the
 * PCI_CFG window: touching pci_cfg_data reads or writes cap.length bytes
 * of BAR cap.bar at cap.offset (BAR 0 only; length 1, 2 or 4, aligned).
 */
static void vp_cfg_access(struct pci_function *f, uint32_t reg, uint8_t *data, uint32_t len,
			  bool is_write)
{
	struct virtio_pci *vp = f->opaque;
	uint32_t win = vp->cfg_cap + CAP_CFG_DATA;
	uint32_t boff, blen;
	uint8_t bar, buf[4];

	pthread_mutex_lock(&vp->lock);
	if (is_write) {
		pci_function_cfg_rw(f, reg, data, len, true);
		if (ranges_touch(reg, len, PCI_COMMAND, 2) || ranges_touch(reg, len, PCI_BAR0, 4))
			update_decode(vp);
		if (ranges_touch(reg, len, PCI_COMMAND, 2) ||
		    ranges_touch(reg, len, vp->msix.cap + PCI_MSIX_CTRL, 2))
			msix_update(vp);
	}
	bar = f->cfg[vp->cfg_cap + CAP_BAR];
	boff = pci_cfg_get32(f, vp->cfg_cap + CAP_OFFSET);
	blen = pci_cfg_get32(f, vp->cfg_cap + CAP_LENGTH);
	memcpy(buf, &f->cfg[win], sizeof(buf));
	pthread_mutex_unlock(&vp->lock);

	if (ranges_touch(reg, len, win, 4) && bar == 0 && (blen == 1 || blen == 2 || blen == 4) &&
	    boff % blen == 0 && boff < VIRTIO_PCI_BAR_SIZE) {
		bar_access(vp, boff, buf, blen, is_write);
		if (!is_write) {
			pthread_mutex_lock(&vp->lock);
			memcpy(&f->cfg[win], buf, blen);
			pthread_mutex_unlock(&vp->lock);
		}
	}
	if (!is_write) {
		pthread_mutex_lock(&vp->lock);
		pci_function_cfg_rw(f, reg, data, len, false);
		pthread_mutex_unlock(&vp->lock);
	}
}

/* Append a struct virtio_pci_cap of @size bytes; returns its offset or -errno. */
static int add_virtio_cap(struct virtio_pci *vp, uint8_t type, uint32_t offset, uint32_t length,
			  uint32_t size, uint32_t extra)
{
	uint8_t cap[CAP_EXT_SIZE] = {PCI_CAP_ID_VNDR, 0, (uint8_t)size, type, 0};

	for (int i = 0; i < 4; i++) {
		cap[CAP_OFFSET + i] = (offset >> (8 * i)) & 0xff;
		cap[CAP_LENGTH + i] = (length >> (8 * i)) & 0xff;
		cap[CAP_SIZE + i] = (extra >> (8 * i)) & 0xff;
	}
	return pci_function_add_cap(&vp->fn, cap, size);
}

static uint32_t class_code(uint16_t device_id)
{
	switch (device_id) {
	case VIRTIO_ID_BLOCK:
		return 0x018000; /* mass storage, other */
	case VIRTIO_ID_NET:
		return 0x020000; /* network, ethernet */
	default:
		return 0x00ff00; /* unclassified */
	}
}

static int check_device(const struct virtio_device *dev, const struct virtio_platform *plat,
			struct vmm_err *err)
{
	const struct virtio_device_ops *ops = dev->ops;

	if (!plat || !plat->add_ioeventfd || !plat->del_ioeventfd || !plat->set_msi_irqfd ||
	    !plat->clear_msi_irqfd || !plat->signal_msi)
		return err_set(err, EINVAL, "virtio-pci: incomplete platform callbacks");
	if (!ops || !ops->features || !ops->activate || !ops->reset || !ops->destroy)
		return err_set(err, EINVAL, "virtio-pci: incomplete device ops");
	if (ops->nqueues == 0 || ops->nqueues > VIRTIO_MAX_QUEUES)
		return err_set(err, EINVAL, "%s: %u queues (1 to %u supported)",
			       ops->name ? ops->name : "virtio", ops->nqueues, VIRTIO_MAX_QUEUES);
	if (ops->queue_max == 0 || ops->queue_max > VIRTQ_MAX_SIZE ||
	    (ops->queue_max & (ops->queue_max - 1)))
		return err_set(err, EINVAL, "%s: queue size %u is not a power of two up to %u",
			       ops->name ? ops->name : "virtio", ops->queue_max, VIRTQ_MAX_SIZE);
	if (ops->config_size > VIRTIO_PCI_DEVICE_MAX ||
	    (ops->config_size && (!ops->config_read || !ops->config_write)))
		return err_set(err, EINVAL, "%s: bad device config space (%u bytes)",
			       ops->name ? ops->name : "virtio", ops->config_size);
	return 0;
}

static void free_vp(struct virtio_pci *vp)
{
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		if (vp->q[i].kick_fd >= 0)
			close(vp->q[i].kick_fd);
		if (vp->q[i].call_fd >= 0)
			close(vp->q[i].call_fd);
	}
	pthread_mutex_destroy(&vp->lock);
	pthread_mutex_destroy(&vp->op_lock);
	free(vp);
}

/* Config space: identity, BAR 0 and the capability list. */
static int build_config_space(struct virtio_pci *vp, uint32_t bar_addr)
{
	const struct virtio_device_ops *ops = vp->dev.ops;
	int ret, cap;

	pci_function_init(&vp->fn, VIRTIO_PCI_VENDOR, VIRTIO_PCI_DEVICE_BASE + ops->device_id,
			  class_code(ops->device_id), VIRTIO_PCI_VENDOR, ops->device_id);
	vp->fn.cfg[PCI_CLASS_REVISION] = 1; /* non-transitional */
	vp->fn.cfg[PCI_INTERRUPT_PIN] = 0;  /* no INTx: MSI-X only */
	vp->fn.cfg_access = vp_cfg_access;
	vp->fn.opaque = vp;
	ret = pci_function_set_bar32(&vp->fn, 0, bar_addr, VIRTIO_PCI_BAR_SIZE);
	if (ret < 0)
		return ret;
	ret = add_virtio_cap(vp, CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFF, VIRTIO_PCI_COMMON_SIZE,
			     CAP_SIZE, 0);
	if (ret >= 0)
		ret = add_virtio_cap(vp, CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFF,
				     vp->nqueues * VIRTIO_PCI_NOTIFY_MULT, CAP_EXT_SIZE,
				     VIRTIO_PCI_NOTIFY_MULT);
	if (ret >= 0)
		ret = add_virtio_cap(vp, CAP_ISR_CFG, VIRTIO_PCI_ISR_OFF, 1, CAP_SIZE, 0);
	if (ret >= 0 && vp->config_size)
		ret = add_virtio_cap(vp, CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFF, vp->config_size,
				     CAP_SIZE, 0);
	if (ret < 0)
		return ret;
	cap = add_virtio_cap(vp, CAP_PCI_CFG, 0, 0, CAP_EXT_SIZE, 0);
	if (cap < 0)
		return cap;
	vp->cfg_cap = (uint8_t)cap;
	/* The driver picks bar, offset, length and data of the window. */
	vp->fn.wmask[cap + CAP_BAR] = 0xff;
	memset(&vp->fn.wmask[cap + CAP_OFFSET], 0xff, 12);
	return pci_msix_init(&vp->msix, &vp->fn, (uint16_t)(vp->nqueues + 1), 0,
			     VIRTIO_PCI_MSIX_TABLE_OFF, VIRTIO_PCI_MSIX_PBA_OFF);
}

int virtio_pci_create(struct pci_root *pci, struct bus *mmio, const struct guest_mem *mem,
		      const struct virtio_platform *plat, struct virtio_device dev,
		      struct virtio_pci **out, struct vmm_err *err)
{
	const struct virtio_device_ops *ops = dev.ops;
	struct virtio_pci *vp;
	uint64_t bar;
	int ret;

	ret = check_device(&dev, plat, err);
	if (ret < 0)
		return ret;
	vp = calloc(1, sizeof(*vp));
	if (!vp)
		return err_set(err, ENOMEM, "%s: out of memory", ops->name ? ops->name : "virtio");
	pthread_mutex_init(&vp->lock, NULL);
	pthread_mutex_init(&vp->op_lock, NULL);
	vp->pci = pci;
	vp->mmio = mmio;
	vp->mem = mem;
	vp->plat = *plat;
	vp->dev = dev;
	vp->nqueues = ops->nqueues;
	vp->queue_max = ops->queue_max;
	vp->config_size = ops->config_size;
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++)
		vp->q[i].kick_fd = vp->q[i].call_fd = -1;
	for (unsigned int i = 0; i < vp->nqueues; i++) {
		vp->q[i].kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		vp->q[i].call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vp->q[i].kick_fd < 0 || vp->q[i].call_fd < 0) {
			ret = err_set(err, errno, "%s: eventfd: %s",
				      ops->name ? ops->name : "virtio", strerror(errno));
			goto fail;
		}
	}
	vp->device_features =
		(ops->features(dev.dev) & ~TRANSPORT_FEATURE_BITS) | TRANSPORT_FEATURES;
	transport_reset(vp);

	ret = pci_alloc_mmio(pci, VIRTIO_PCI_BAR_SIZE, &bar);
	if (ret < 0) {
		ret = err_set(err, ENOSPC, "%s: no room for BAR 0 in the PCI MMIO window",
			      ops->name ? ops->name : "virtio");
		goto fail;
	}
	ret = build_config_space(vp, (uint32_t)bar);
	if (ret < 0) {
		ret = err_set(err, -ret, "%s: cannot build PCI config space",
			      ops->name ? ops->name : "virtio");
		goto fail;
	}
	ret = pci_add_device(pci, &vp->fn);
	if (ret < 0) {
		ret = err_set(err, ENOSPC, "%s: no free slot on PCI bus 0",
			      ops->name ? ops->name : "virtio");
		goto fail;
	}
	vp->slot = (unsigned int)ret;
	*out = vp;
	return 0;
fail:
	free_vp(vp);
	return ret;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	if (!vp)
		return;
	pci_remove_device(vp->pci, &vp->fn);
	vp->dev.ops->reset(vp->dev.dev);
	pthread_mutex_lock(&vp->lock);
	transport_reset(vp);
	if (vp->decode_addr)
		bus_unregister(vp->mmio, vp->decode_addr);
	vp->decode_addr = 0;
	pthread_mutex_unlock(&vp->lock);
	vp->dev.ops->destroy(vp->dev.dev);
	free_vp(vp);
}

unsigned int virtio_pci_slot(const struct virtio_pci *vp)
{
	return vp->slot;
}
