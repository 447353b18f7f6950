/*
 * Virtio-pci modern transport driven as a guest would (config space and BAR 0 on the MMIO bus),
 * with a fake platform recording ioeventfds, irqfd routes and MSIs, and a dummy device.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/layout.h"
#include "lib/pci.h"
#include "lib/virtio/pci.h"

/* ---- Fake platform ---- */

#define MAX_REC 32

struct fake_plat {
	struct {
		uint64_t addr;
		uint32_t len;
		int fd;
	} ioev[MAX_REC]; /* live ioeventfds */
	unsigned int nioev;
	unsigned int ioev_adds, ioev_dels;
	struct {
		int fd;
		uint64_t addr;
		uint32_t data;
	} route[MAX_REC]; /* live irqfd routes */
	unsigned int nroute;
	struct {
		uint64_t addr;
		uint32_t data;
	} msi[MAX_REC]; /* MSIs signalled, in order */
	unsigned int nmsi;
	bool fail_irqfd;
};

static int fp_add_ioeventfd(void *ctx, uint64_t addr, uint32_t len, int fd)
{
	struct fake_plat *p = ctx;

	for (unsigned int i = 0; i < p->nioev; i++)
		assert_false(p->ioev[i].addr == addr); /* never twice at one address */
	assert_true(p->nioev < MAX_REC);
	p->ioev[p->nioev].addr = addr;
	p->ioev[p->nioev].len = len;
	p->ioev[p->nioev].fd = fd;
	p->nioev++;
	p->ioev_adds++;
	return 0;
}

static int fp_del_ioeventfd(void *ctx, uint64_t addr, uint32_t len, int fd)
{
	struct fake_plat *p = ctx;

	for (unsigned int i = 0; i < p->nioev; i++) {
		if (p->ioev[i].addr == addr && p->ioev[i].len == len && p->ioev[i].fd == fd) {
			p->ioev[i] = p->ioev[--p->nioev];
			p->ioev_dels++;
			return 0;
		}
	}
	fail_msg("del_ioeventfd of an unregistered fd");
	return -ENOENT;
}

static int fp_find_route(struct fake_plat *p, int fd)
{
	for (unsigned int i = 0; i < p->nroute; i++)
		if (p->route[i].fd == fd)
			return (int)i;
	return -1;
}

static int fp_set_msi_irqfd(void *ctx, int fd, uint64_t addr, uint32_t data)
{
	struct fake_plat *p = ctx;
	int i = fp_find_route(p, fd);

	if (p->fail_irqfd)
		return -ENOSPC;
	if (i < 0) {
		assert_true(p->nroute < MAX_REC);
		i = (int)p->nroute++;
	}
	p->route[i].fd = fd;
	p->route[i].addr = addr;
	p->route[i].data = data;
	return 0;
}

static void fp_clear_msi_irqfd(void *ctx, int fd)
{
	struct fake_plat *p = ctx;
	int i = fp_find_route(p, fd);

	if (i >= 0)
		p->route[i] = p->route[--p->nroute];
}

static int fp_signal_msi(void *ctx, uint64_t addr, uint32_t data)
{
	struct fake_plat *p = ctx;

	/* Count them all; keep the first MAX_REC. */
	if (p->nmsi < MAX_REC) {
		p->msi[p->nmsi].addr = addr;
		p->msi[p->nmsi].data = data;
	}
	p->nmsi++;
	return 0;
}

/* ---- Dummy device: 2 queues, 8 bytes of config ---- */

#define DUMMY_ID     42
#define DUMMY_QMAX   256
#define DUMMY_CFG    8
#define DUMMY_F_A    (1ull << 0)
#define DUMMY_F_B    (1ull << 5)
#define DUMMY_F_HIGH (1ull << 50)
#define F_PACKED     (1ull << 34) /* a transport bit the device may not offer */

struct dummy {
	int activates, resets, destroys;
	int activate_ret;
	struct virtio_activation act;
	uint8_t config[DUMMY_CFG];
	unsigned int config_reads, config_writes;
	/* Optional worker that reports needs_reset when reset() stops it. */
	bool use_worker;
	pthread_t worker;
	int stop_fd[2];
};

static uint64_t d_features(void *dev)
{
	(void)dev;
	return DUMMY_F_A | DUMMY_F_B | DUMMY_F_HIGH | F_PACKED;
}

static void d_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	struct dummy *d = dev;

	assert_true(off < DUMMY_CFG && len <= DUMMY_CFG - off);
	memcpy(data, &d->config[off], len);
	d->config_reads++;
}

static void d_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
	struct dummy *d = dev;

	assert_true(off < DUMMY_CFG && len <= DUMMY_CFG - off);
	memcpy(&d->config[off], data, len);
	d->config_writes++;
}

static void *d_worker(void *arg)
{
	struct dummy *d = arg;
	char c;

	/* Wait for reset(), then report a broken ring while reset() joins us. */
	assert_int_equal(read(d->stop_fd[0], &c, 1), 1);
	d->act.needs_reset(d->act.ctx);
	return NULL;
}

static int d_activate(void *dev, const struct virtio_activation *act)
{
	struct dummy *d = dev;

	d->activates++;
	d->act = *act;
	if (d->activate_ret)
		return d->activate_ret;
	if (d->use_worker) {
		assert_int_equal(pipe(d->stop_fd), 0);
		assert_int_equal(pthread_create(&d->worker, NULL, d_worker, d), 0);
	}
	return 0;
}

static void d_reset(void *dev)
{
	struct dummy *d = dev;

	d->resets++;
	if (d->use_worker && d->stop_fd[1] > 0) {
		assert_int_equal(write(d->stop_fd[1], "x", 1), 1);
		pthread_join(d->worker, NULL);
		close(d->stop_fd[0]);
		close(d->stop_fd[1]);
		d->stop_fd[0] = d->stop_fd[1] = 0;
	}
}

static void d_destroy(void *dev)
{
	struct dummy *d = dev;

	d->destroys++;
}

static const struct virtio_device_ops dummy_ops = {
	.name = "dummy",
	.device_id = DUMMY_ID,
	.nqueues = 2,
	.queue_max = DUMMY_QMAX,
	.config_size = DUMMY_CFG,
	.features = d_features,
	.config_read = d_config_read,
	.config_write = d_config_write,
	.activate = d_activate,
	.reset = d_reset,
	.destroy = d_destroy,
};

/* ---- Fixture: a guest with one virtio-pci function ---- */

#define RAM_SIZE (1u << 20)
#define MSI_ADDR 0xfee00000ull

struct t {
	struct pci_root pci;
	struct bus mmio;
	struct guest_mem mem;
	uint8_t *ram;
	struct fake_plat fp;
	struct virtio_platform plat;
	struct dummy dev;
	struct virtio_pci *vp;
	unsigned int slot;
	uint64_t bar; /* where the guest has BAR 0 */
	/* Caps found by the walk. */
	uint8_t cap[6]; /* by virtio cfg_type */
	uint8_t msix_cap;
};

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));
	struct vmm_err err;

	assert_non_null(t);
	pci_root_init(&t->pci);
	bus_init(&t->mmio);
	t->ram = calloc(1, RAM_SIZE);
	assert_non_null(t->ram);
	gm_init_fake(&t->mem, t->ram, RAM_SIZE);
	t->plat = (struct virtio_platform){fp_add_ioeventfd,   fp_del_ioeventfd, fp_set_msi_irqfd,
					   fp_clear_msi_irqfd, fp_signal_msi,	 &t->fp};
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&dummy_ops, &t->dev}, &t->vp,
					   &err),
			 0);
	t->slot = virtio_pci_slot(t->vp);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;

	virtio_pci_destroy(t->vp);
	assert_int_equal(t->dev.destroys, 1);
	/* Everything the transport registered is gone. */
	assert_int_equal(t->fp.nioev, 0);
	assert_int_equal(t->fp.nroute, 0);
	assert_int_equal(t->mmio.count, 0);
	bus_destroy(&t->mmio);
	pci_root_destroy(&t->pci);
	free(t->ram);
	free(t);
	return 0;
}

/* Config space through mechanism #1, as a guest does. */
static uint32_t cfg_read(struct t *t, uint32_t reg, uint32_t len)
{
	uint32_t addr = 0x80000000u | t->slot << 11 | (reg & 0xfc), v = 0;

	pci_pio(&t->pci, 0, (uint8_t *)&addr, 4, true);
	pci_pio(&t->pci, 4 + (reg & 3), (uint8_t *)&v, len, false);
	return v;
}

static void cfg_write(struct t *t, uint32_t reg, uint32_t v, uint32_t len)
{
	uint32_t addr = 0x80000000u | t->slot << 11 | (reg & 0xfc);

	pci_pio(&t->pci, 0, (uint8_t *)&addr, 4, true);
	pci_pio(&t->pci, 4 + (reg & 3), (uint8_t *)&v, len, true);
}

static uint64_t mmio_read(struct t *t, uint64_t off, uint32_t len)
{
	uint64_t v = 0;

	bus_access(&t->mmio, t->bar + off, (uint8_t *)&v, len, false);
	return len == 8 ? v : v & ((1ull << (8 * len)) - 1);
}

static void mmio_write(struct t *t, uint64_t off, uint64_t v, uint32_t len)
{
	bus_access(&t->mmio, t->bar + off, (uint8_t *)&v, len, true);
}

/* Common configuration registers. */
#define DFSELECT    0x00
#define DF	    0x04
#define GFSELECT    0x08
#define GF	    0x0c
#define MSIX_CONFIG 0x10
#define NUMQ	    0x12
#define STATUS	    0x14
#define CFGGEN	    0x15
#define Q_SELECT    0x16
#define Q_SIZE	    0x18
#define Q_MSIX	    0x1a
#define Q_ENABLE    0x1c
#define Q_NOFF	    0x1e
#define Q_DESC	    0x20
#define Q_AVAIL	    0x28
#define Q_USED	    0x30

#define S_ACK	      VIRTIO_STATUS_ACKNOWLEDGE
#define S_DRIVER      VIRTIO_STATUS_DRIVER
#define S_FEAT	      VIRTIO_STATUS_FEATURES_OK
#define S_OK	      VIRTIO_STATUS_DRIVER_OK
#define S_NEEDS_RESET VIRTIO_STATUS_NEEDS_RESET

#define F_V1	    (1ull << VIRTIO_F_VERSION_1)
#define F_EVENT_IDX (1ull << VIRTIO_F_RING_EVENT_IDX)
#define F_INDIRECT  (1ull << VIRTIO_F_INDIRECT_DESC)

/* Enable memory decoding and bus mastering with BAR 0 where it was allocated. */
static void enable_bar(struct t *t)
{
	t->bar = cfg_read(t, PCI_BAR0, 4) & ~0xfull;
	cfg_write(t, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
}

static uint8_t status(struct t *t)
{
	return (uint8_t)mmio_read(t, STATUS, 1);
}

static void write_features(struct t *t, uint64_t f)
{
	mmio_write(t, GFSELECT, 0, 4);
	mmio_write(t, GF, (uint32_t)f, 4);
	mmio_write(t, GFSELECT, 1, 4);
	mmio_write(t, GF, f >> 32, 4);
}

/* Both words of device_feature (@reg DF) or driver_feature (@reg GF). */
static uint64_t read_features(struct t *t, uint32_t reg)
{
	uint32_t sel = reg == DF ? DFSELECT : GFSELECT;
	uint64_t lo;

	mmio_write(t, sel, 0, 4);
	lo = mmio_read(t, reg, 4);
	mmio_write(t, sel, 1, 4);
	return lo | mmio_read(t, reg, 4) << 32;
}

/* Ring addresses for queue @i of @size entries. */
static uint64_t ring_desc(unsigned int i)
{
	return 0x10000 + i * 0x10000;
}

static uint64_t ring_avail(unsigned int i)
{
	return ring_desc(i) + 0x8000;
}

static uint64_t ring_used(unsigned int i)
{
	return ring_desc(i) + 0xa000;
}

/* Set up queue @i: size, rings, MSI-X vector, enable. */
static void setup_queue(struct t *t, unsigned int i, uint16_t size, uint16_t vector)
{
	mmio_write(t, Q_SELECT, i, 2);
	assert_int_equal(mmio_read(t, Q_SIZE, 2), DUMMY_QMAX);
	assert_int_equal(mmio_read(t, Q_NOFF, 2), i);
	mmio_write(t, Q_SIZE, size, 2);
	mmio_write(t, Q_DESC, ring_desc(i), 4); /* lo/hi halves */
	mmio_write(t, Q_DESC + 4, 0, 4);
	mmio_write(t, Q_AVAIL, ring_avail(i), 8); /* one 64-bit access */
	mmio_write(t, Q_USED, ring_used(i), 4);
	mmio_write(t, Q_USED + 4, 0, 4);
	mmio_write(t, Q_MSIX, vector, 2);
	mmio_write(t, Q_ENABLE, 1, 2);
}

/* Program MSI-X table entry @v with data 0x40 + v, unmasked or masked. */
static void msix_entry(struct t *t, unsigned int v, bool masked)
{
	uint64_t e = VIRTIO_PCI_MSIX_TABLE_OFF + 16 * v;

	mmio_write(t, e, MSI_ADDR + 0x1000 * v, 4);
	mmio_write(t, e + 4, 0, 4);
	mmio_write(t, e + 8, 0x40 + v, 4);
	mmio_write(t, e + 12, masked, 4);
}

static void msix_enable(struct t *t, bool enable, bool maskall)
{
	uint32_t ctrl = t->msix_cap + PCI_MSIX_CTRL;

	cfg_write(t, ctrl,
		  (enable ? PCI_MSIX_CTRL_ENABLE : 0) | (maskall ? PCI_MSIX_CTRL_MASKALL : 0), 2);
}

/* Walk the capability list, recording where each virtio cap and MSI-X sit. */
static void walk_caps(struct t *t)
{
	uint32_t off = cfg_read(t, PCI_CAP_PTR, 1);
	unsigned int n = 0;

	while (off) {
		uint8_t id = (uint8_t)cfg_read(t, off, 1);

		assert_true(off >= PCI_CAP_START && off < PCI_CFG_SIZE && (off & 3) == 0);
		assert_true(++n < 16);
		if (id == PCI_CAP_ID_VNDR) {
			uint8_t type = (uint8_t)cfg_read(t, off + 3, 1);

			assert_true(type >= 1 && type <= 5);
			t->cap[type] = (uint8_t)off;
		} else if (id == PCI_CAP_ID_MSIX) {
			t->msix_cap = (uint8_t)off;
		}
		off = cfg_read(t, off + 1, 1);
	}
}

/* Everything a Linux-like driver does up to DRIVER_OK; queue 0 vector 1, queue 1 vector 2. */
static void driver_init(struct t *t, uint64_t features, unsigned int enable_mask)
{
	walk_caps(t);
	enable_bar(t);
	mmio_write(t, STATUS, 0, 1);
	mmio_write(t, STATUS, S_ACK, 1);
	mmio_write(t, STATUS, S_ACK | S_DRIVER, 1);
	write_features(t, features);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT, 1);
	assert_int_equal(status(t), S_ACK | S_DRIVER | S_FEAT);
	for (unsigned int v = 0; v < 3; v++)
		msix_entry(t, v, false);
	msix_enable(t, true, false);
	mmio_write(t, MSIX_CONFIG, 0, 2);
	assert_int_equal(mmio_read(t, MSIX_CONFIG, 2), 0);
	for (unsigned int i = 0; i < 2; i++)
		if (enable_mask & (1u << i))
			setup_queue(t, i, 16, (uint16_t)(i + 1));
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT | S_OK, 1);
}

static int ioev_index(struct t *t, uint64_t addr)
{
	for (unsigned int i = 0; i < t->fp.nioev; i++)
		if (t->fp.ioev[i].addr == addr)
			return (int)i;
	return -1;
}

static uint64_t efd_read(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

static void efd_signal(int fd)
{
	uint64_t one = 1;

	assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
}

/* ---- Tests ---- */

static void test_enumerate(void **state)
{
	struct t *t = *state;
	uint32_t mult, table, pba;

	assert_int_equal(cfg_read(t, PCI_VENDOR_ID, 2), 0x1af4);
	assert_int_equal(cfg_read(t, PCI_DEVICE_ID, 2), 0x1040 + DUMMY_ID);
	assert_int_equal(cfg_read(t, PCI_CLASS_REVISION, 4), 0x00ff0001); /* class 00ff00, rev 1 */
	assert_int_equal(cfg_read(t, PCI_HEADER_TYPE, 1), 0);
	assert_int_equal(cfg_read(t, PCI_SUBSYSTEM_VENDOR_ID, 2), 0x1af4);
	assert_int_equal(cfg_read(t, PCI_INTERRUPT_PIN, 1), 0);
	assert_true(cfg_read(t, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	assert_int_equal(cfg_read(t, PCI_COMMAND, 2), 0);
	/* BAR 0: 32-bit memory in the window, aligned to its size; others absent. */
	t->bar = cfg_read(t, PCI_BAR0, 4);
	assert_int_equal(t->bar & 0xf, 0);
	assert_true(t->bar >= LAYOUT_PCI_MMIO && t->bar < LAYOUT_PCI_MMIO + LAYOUT_PCI_MMIO_SIZE);
	assert_int_equal(t->bar % VIRTIO_PCI_BAR_SIZE, 0);
	for (unsigned int i = 1; i < PCI_NUM_BARS; i++)
		assert_int_equal(cfg_read(t, PCI_BAR0 + 4 * i, 4), 0);

	walk_caps(t);
	for (unsigned int type = 1; type <= 5; type++) {
		assert_int_not_equal(t->cap[type], 0);
		assert_int_equal(cfg_read(t, t->cap[type] + 4, 1), 0); /* bar */
	}
	assert_int_equal(cfg_read(t, t->cap[1] + 2, 1), 16); /* cap_len */
	assert_int_equal(cfg_read(t, t->cap[1] + 8, 4), VIRTIO_PCI_COMMON_OFF);
	assert_int_equal(cfg_read(t, t->cap[1] + 12, 4), 0x38);
	assert_int_equal(cfg_read(t, t->cap[2] + 2, 1), 20);
	assert_int_equal(cfg_read(t, t->cap[2] + 8, 4), VIRTIO_PCI_NOTIFY_OFF);
	assert_int_equal(cfg_read(t, t->cap[2] + 12, 4), 2 * 4);
	mult = cfg_read(t, t->cap[2] + 16, 4);
	assert_int_equal(mult, 4);
	assert_int_equal(cfg_read(t, t->cap[3] + 8, 4), VIRTIO_PCI_ISR_OFF);
	assert_int_equal(cfg_read(t, t->cap[3] + 12, 4), 1);
	assert_int_equal(cfg_read(t, t->cap[4] + 8, 4), VIRTIO_PCI_DEVICE_OFF);
	assert_int_equal(cfg_read(t, t->cap[4] + 12, 4), DUMMY_CFG);
	assert_int_equal(cfg_read(t, t->cap[5] + 2, 1), 20);
	/* MSI-X: 3 vectors (2 queues + config), table and PBA in BAR 0. */
	assert_int_not_equal(t->msix_cap, 0);
	assert_int_equal(cfg_read(t, t->msix_cap + 2, 2), 3 - 1);
	table = cfg_read(t, t->msix_cap + 4, 4);
	pba = cfg_read(t, t->msix_cap + 8, 4);
	assert_int_equal(table, VIRTIO_PCI_MSIX_TABLE_OFF | 0);
	assert_int_equal(pba, VIRTIO_PCI_MSIX_PBA_OFF | 0);
	/* Capabilities are read-only. */
	cfg_write(t, t->cap[1] + 8, 0x1234, 4);
	assert_int_equal(cfg_read(t, t->cap[1] + 8, 4), VIRTIO_PCI_COMMON_OFF);
	cfg_write(t, t->msix_cap + 2, 0x07ff, 2);
	assert_int_equal(cfg_read(t, t->msix_cap + 2, 2), 2);
	/* Through ECAM too. */
	{
		uint32_t v = 0;

		pci_ecam(&t->pci, (uint64_t)t->slot << 15, (uint8_t *)&v, 4, false);
		assert_int_equal(v, (0x1040u + DUMMY_ID) << 16 | 0x1af4);
	}
}

static void test_bar_sizing_and_decode(void **state)
{
	struct t *t = *state;
	uint32_t orig = cfg_read(t, PCI_BAR0, 4);
	uint8_t b;

	t->bar = orig;
	/* Not decoding until the guest enables memory space. */
	assert_false(bus_access(&t->mmio, orig + NUMQ, &b, 1, false));
	assert_int_equal(t->mmio.count, 0);

	cfg_write(t, PCI_BAR0, 0xffffffff, 4);
	assert_int_equal(cfg_read(t, PCI_BAR0, 4), (uint32_t) ~(VIRTIO_PCI_BAR_SIZE - 1));
	for (unsigned int i = 1; i < PCI_NUM_BARS; i++) {
		cfg_write(t, PCI_BAR0 + 4 * i, 0xffffffff, 4);
		assert_int_equal(cfg_read(t, PCI_BAR0 + 4 * i, 4), 0);
	}
	/* Memory space on while the BAR holds the sizing pattern: no decoding there. */
	cfg_write(t, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
	assert_int_equal(t->mmio.count, 0);
	cfg_write(t, PCI_BAR0, orig, 4);
	assert_int_equal(t->mmio.count, 1);
	assert_int_equal(mmio_read(t, NUMQ, 2), 2);
	/* Byte writes to the BAR merge too; low bits are read-only. */
	cfg_write(t, PCI_BAR0, 0xff, 1);
	assert_int_equal(cfg_read(t, PCI_BAR0, 4), orig);
	/* Memory space off: gone. */
	cfg_write(t, PCI_COMMAND, 0, 2);
	assert_int_equal(t->mmio.count, 0);
	assert_int_equal(mmio_read(t, NUMQ, 2), 0xffff);
}

static void other_range(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	fail_msg("access reached another device's range");
}

static void test_bar_relocation(void **state)
{
	struct t *t = *state;
	uint64_t old, new;

	driver_init(t, F_V1, 3);
	assert_int_equal(t->dev.activates, 1);
	old = t->bar;
	assert_int_equal(t->fp.nioev, 2);
	assert_true(ioev_index(t, old + VIRTIO_PCI_NOTIFY_OFF) >= 0);
	assert_true(ioev_index(t, old + VIRTIO_PCI_NOTIFY_OFF + 4) >= 0);

	/* Move within the window: registration and ioeventfds follow. */
	new = LAYOUT_PCI_MMIO + LAYOUT_PCI_MMIO_SIZE - VIRTIO_PCI_BAR_SIZE;
	cfg_write(t, PCI_BAR0, (uint32_t) new, 4);
	assert_int_equal(t->fp.nioev, 2);
	assert_int_equal(ioev_index(t, old + VIRTIO_PCI_NOTIFY_OFF), -1);
	assert_true(ioev_index(t, new + VIRTIO_PCI_NOTIFY_OFF) >= 0);
	assert_true(ioev_index(t, new + VIRTIO_PCI_NOTIFY_OFF + 4) >= 0);
	assert_int_equal(t->fp.ioev[ioev_index(t, new + VIRTIO_PCI_NOTIFY_OFF)].fd,
			 t->dev.act.kick_fd[0]);
	assert_int_equal(t->fp.ioev[ioev_index(t, new + VIRTIO_PCI_NOTIFY_OFF)].len, 2);
	t->bar = old;
	assert_int_equal(mmio_read(t, NUMQ, 2), 0xffff);
	t->bar = new;
	assert_int_equal(mmio_read(t, NUMQ, 2), 2);
	assert_int_equal(status(t), S_ACK | S_DRIVER | S_FEAT | S_OK);

	/* Outside the window (RAM, or across its end): not decoding, ioeventfds dropped. */
	cfg_write(t, PCI_BAR0, 0x10000000, 4);
	assert_int_equal(t->mmio.count, 0);
	assert_int_equal(t->fp.nioev, 0);
	cfg_write(t, PCI_BAR0, (uint32_t)(LAYOUT_PCI_MMIO + LAYOUT_PCI_MMIO_SIZE), 4);
	assert_int_equal(t->mmio.count, 0);
	cfg_write(t, PCI_BAR0, (uint32_t)(LAYOUT_PCI_MMIO - VIRTIO_PCI_BAR_SIZE), 4);
	assert_int_equal(t->mmio.count, 0);

	/* Overlapping another range on the bus: refused. */
	assert_int_equal(
		bus_register(&t->mmio, LAYOUT_PCI_MMIO + 0x100000, 0x1000, other_range, NULL), 0);
	cfg_write(t, PCI_BAR0, (uint32_t)(LAYOUT_PCI_MMIO + 0x100000), 4);
	assert_int_equal(t->mmio.count, 1);
	assert_int_equal(t->fp.nioev, 0);
	assert_int_equal(bus_unregister(&t->mmio, LAYOUT_PCI_MMIO + 0x100000), 0);

	/* Back in a good place: decoding and ioeventfds again. */
	cfg_write(t, PCI_BAR0, (uint32_t)old, 4);
	t->bar = old;
	assert_int_equal(t->mmio.count, 1);
	assert_int_equal(t->fp.nioev, 2);
	assert_true(ioev_index(t, old + VIRTIO_PCI_NOTIFY_OFF + 4) >= 0);
	/* The device kept running throughout (the one reset is driver_init's). */
	assert_int_equal(t->dev.resets, 1);
	assert_int_equal(t->dev.activates, 1);
}

static void test_features(void **state)
{
	struct t *t = *state;
	uint64_t df;

	walk_caps(t);
	enable_bar(t);
	df = read_features(t, DF);
	assert_int_equal(df,
			 DUMMY_F_A | DUMMY_F_B | DUMMY_F_HIGH | F_V1 | F_EVENT_IDX | F_INDIRECT);
	mmio_write(t, DFSELECT, 7, 4);
	assert_int_equal(mmio_read(t, DF, 4), 0);

	/* Without VERSION_1: FEATURES_OK does not stick, DRIVER_OK is refused. */
	mmio_write(t, STATUS, S_ACK | S_DRIVER, 1);
	write_features(t, DUMMY_F_A);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT, 1);
	assert_int_equal(status(t), S_ACK | S_DRIVER);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT | S_OK, 1);
	assert_int_equal(status(t), S_ACK | S_DRIVER);
	assert_int_equal(t->dev.activates, 0);

	/* Unknown bits: dropped from what reads back, and FEATURES_OK refused. */
	mmio_write(t, STATUS, 0, 1);
	mmio_write(t, STATUS, S_ACK | S_DRIVER, 1);
	write_features(t, F_V1 | DUMMY_F_A | (1ull << 7) | F_PACKED);
	assert_int_equal(read_features(t, GF), F_V1 | DUMMY_F_A);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT, 1);
	assert_int_equal(status(t), S_ACK | S_DRIVER);
	/* A nonzero write to a feature word past 64 bits is unknown too. */
	write_features(t, F_V1 | DUMMY_F_A);
	mmio_write(t, GFSELECT, 3, 4);
	mmio_write(t, GF, 1, 4);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT, 1);
	assert_int_equal(status(t), S_ACK | S_DRIVER);

	/* Good: a subset with VERSION_1; the device's high bit too. */
	mmio_write(t, STATUS, 0, 1);
	assert_int_equal(read_features(t, GF), 0);
	mmio_write(t, STATUS, S_ACK | S_DRIVER, 1);
	write_features(t, F_V1 | DUMMY_F_B | DUMMY_F_HIGH);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT, 1);
	assert_int_equal(status(t), S_ACK | S_DRIVER | S_FEAT);
	/* Frozen after FEATURES_OK. */
	write_features(t, F_V1);
	assert_int_equal(read_features(t, GF), F_V1 | DUMMY_F_B | DUMMY_F_HIGH);
	/* Status bits cannot be cleared but by a reset; NEEDS_RESET is not the driver's. */
	mmio_write(t, STATUS, S_ACK | S_NEEDS_RESET | 0x30, 1);
	assert_int_equal(status(t), S_ACK | S_DRIVER | S_FEAT);
}

static void test_activate(void **state)
{
	struct t *t = *state;
	const struct virtio_activation *act = &t->dev.act;

	driver_init(t, F_V1 | F_EVENT_IDX | DUMMY_F_A, 3);
	assert_int_equal(status(t), S_ACK | S_DRIVER | S_FEAT | S_OK);
	assert_int_equal(t->dev.activates, 1);
	assert_int_equal(act->features, F_V1 | F_EVENT_IDX | DUMMY_F_A);
	assert_int_equal(act->nqueues, 2);
	for (unsigned int i = 0; i < 2; i++) {
		const struct virtq *q = act->queues[i];
		int k;

		assert_non_null(q);
		assert_int_equal(q->size, 16);
		assert_int_equal(q->desc_gpa, ring_desc(i));
		assert_int_equal(q->avail_gpa, ring_avail(i));
		assert_int_equal(q->used_gpa, ring_used(i));
		assert_true(q->event_idx);
		assert_false(q->indirect);
		assert_ptr_equal(q->mem, &t->mem);
		assert_true(act->kick_fd[i] >= 0 && act->call_fd[i] >= 0);
		assert_int_not_equal(act->kick_fd[i], act->call_fd[i]);
		k = ioev_index(t, t->bar + VIRTIO_PCI_NOTIFY_OFF + 4 * i);
		assert_true(k >= 0);
		assert_int_equal(t->fp.ioev[k].fd, act->kick_fd[i]);
		/* A notify that reaches the handler (no ioeventfd caught it) kicks too. */
		assert_int_equal(efd_read(act->kick_fd[i]), 0);
		mmio_write(t, VIRTIO_PCI_NOTIFY_OFF + 4 * i, i, 2);
		assert_int_equal(efd_read(act->kick_fd[i]), 1);
		mmio_write(t, VIRTIO_PCI_NOTIFY_OFF + 4 * i, i, 4);
		assert_int_equal(efd_read(act->kick_fd[i]), 1);
	}
	assert_null(act->queues[2]);
	assert_int_equal(act->kick_fd[2], -1);
	assert_non_null(act->needs_reset);

	/* Queue setup is frozen after DRIVER_OK. */
	mmio_write(t, Q_SELECT, 0, 2);
	mmio_write(t, Q_SIZE, 32, 2);
	mmio_write(t, Q_DESC, 0x5000, 4);
	mmio_write(t, Q_MSIX, 0, 2);
	assert_int_equal(mmio_read(t, Q_SIZE, 2), 16);
	assert_int_equal(mmio_read(t, Q_DESC, 8), ring_desc(0));
	assert_int_equal(mmio_read(t, Q_MSIX, 2), 1);
	/* A second DRIVER_OK write does not activate again. */
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT | S_OK, 1);
	assert_int_equal(t->dev.activates, 1);
	/* Device config goes to the device. */
	mmio_write(t, VIRTIO_PCI_DEVICE_OFF + 4, 0xa5a5a5a5, 4);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_DEVICE_OFF + 4, 4), 0xa5a5a5a5);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_DEVICE_OFF + 6, 2), 0xa5a5);
	assert_int_equal(t->dev.config[7], 0xa5);
}

static void test_activate_partial(void **state)
{
	struct t *t = *state;
	const struct virtio_activation *act = &t->dev.act;

	/* Only queue 1 enabled, INDIRECT negotiated. */
	driver_init(t, F_V1 | F_INDIRECT, 2);
	assert_int_equal(t->dev.activates, 1);
	assert_null(act->queues[0]);
	assert_int_equal(act->kick_fd[0], -1);
	assert_int_equal(act->call_fd[0], -1);
	assert_non_null(act->queues[1]);
	assert_true(act->queues[1]->indirect);
	assert_false(act->queues[1]->event_idx);
	assert_int_equal(t->fp.nioev, 1);
	assert_int_equal(t->fp.nroute, 1);
	/* Notifying the disabled queue does nothing. */
	mmio_write(t, VIRTIO_PCI_NOTIFY_OFF, 0, 2);
}

static void test_activate_bad_ring(void **state)
{
	struct t *t = *state;

	/* Queue 1's used ring runs past the end of RAM: NEEDS_RESET, no activation. */
	walk_caps(t);
	enable_bar(t);
	mmio_write(t, STATUS, S_ACK | S_DRIVER, 1);
	write_features(t, F_V1);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT, 1);
	msix_entry(t, 0, false);
	msix_enable(t, true, false);
	mmio_write(t, MSIX_CONFIG, 0, 2);
	setup_queue(t, 0, 16, 1);
	setup_queue(t, 1, 16, 2);
	mmio_write(t, Q_USED, RAM_SIZE - 8, 4);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT | S_OK, 1);
	assert_int_equal(t->dev.activates, 0);
	assert_true(status(t) & S_NEEDS_RESET);
	assert_int_equal(t->fp.nioev, 0);
	assert_int_equal(t->fp.nroute, 0);
	/* Config-change interrupt on the config vector, and ISR bit 1. */
	assert_int_equal(t->fp.nmsi, 1);
	assert_int_equal(t->fp.msi[0].addr, MSI_ADDR);
	assert_int_equal(t->fp.msi[0].data, 0x40);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 1), 2);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 1), 0);

	/* The driver resets and tries again with a good ring. */
	mmio_write(t, STATUS, 0, 1);
	assert_int_equal(status(t), 0);
	driver_init(t, F_V1, 3);
	assert_int_equal(t->dev.activates, 1);
	assert_int_equal(status(t), S_ACK | S_DRIVER | S_FEAT | S_OK);
}

static void test_activate_fails(void **state)
{
	struct t *t = *state;

	t->dev.activate_ret = -EIO;
	driver_init(t, F_V1, 3);
	assert_int_equal(t->dev.activates, 1);
	assert_int_equal(t->dev.resets, 2); /* the driver's reset write, then the failure */
	assert_true(status(t) & S_NEEDS_RESET);
	assert_int_equal(t->fp.nioev, 0);
	assert_int_equal(t->fp.nroute, 0);
	assert_int_equal(t->fp.nmsi, 1);
}

static int route_of(struct t *t, int fd)
{
	return fp_find_route(&t->fp, fd);
}

static void test_msix_routing(void **state)
{
	struct t *t = *state;
	const struct virtio_activation *act = &t->dev.act;
	int r;

	driver_init(t, F_V1, 3);
	assert_int_equal(t->fp.nroute, 2);
	for (unsigned int i = 0; i < 2; i++) {
		r = route_of(t, act->call_fd[i]);
		assert_true(r >= 0);
		assert_int_equal(t->fp.route[r].addr, MSI_ADDR + 0x1000 * (i + 1));
		assert_int_equal(t->fp.route[r].data, 0x40 + i + 1);
	}
	/* Table reads back what was written; reserved control bits read 0. */
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 8, 4), 0x41);
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 12, 0xfffffffe, 4);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 12, 4), 0);

	/* Mask vector 1: queue 0 loses its route. */
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 12, 1, 4);
	assert_int_equal(route_of(t, act->call_fd[0]), -1);
	assert_true(route_of(t, act->call_fd[1]) >= 0);
	/* The device interrupts while masked: the PBA shows it pending. */
	efd_signal(act->call_fd[0]);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_PBA_OFF, 8), 1u << 1);
	assert_int_equal(t->fp.nmsi, 0);
	mmio_write(t, VIRTIO_PCI_MSIX_PBA_OFF, 0, 8); /* read-only */
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_PBA_OFF, 4), 1u << 1);
	/* Unmask: route restored, the pending interrupt delivered once. */
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 12, 0, 4);
	r = route_of(t, act->call_fd[0]);
	assert_true(r >= 0);
	assert_int_equal(t->fp.route[r].data, 0x41);
	assert_int_equal(t->fp.nmsi, 1);
	assert_int_equal(t->fp.msi[0].addr, MSI_ADDR + 0x1000);
	assert_int_equal(t->fp.msi[0].data, 0x41);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_PBA_OFF, 8), 0);
	assert_int_equal(efd_read(act->call_fd[0]), 0);

	/* Reprogramming a routed entry moves the route (64-bit write of the address). */
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 32, MSI_ADDR + 0x7000, 8);
	r = route_of(t, act->call_fd[1]);
	assert_int_equal(t->fp.route[r].addr, MSI_ADDR + 0x7000);

	/* Function mask: all routes go; an interrupt while masked is pending, then sent. */
	msix_enable(t, true, true);
	assert_int_equal(t->fp.nroute, 0);
	efd_signal(act->call_fd[1]);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_PBA_OFF, 4), 1u << 2);
	msix_enable(t, true, false);
	assert_int_equal(t->fp.nroute, 2);
	assert_int_equal(t->fp.nmsi, 2);
	assert_int_equal(t->fp.msi[1].addr, MSI_ADDR + 0x7000);
	assert_int_equal(t->fp.msi[1].data, 0x42);

	/* Bus mastering off: no MSIs either. */
	cfg_write(t, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
	assert_int_equal(t->fp.nroute, 0);
	cfg_write(t, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
	assert_int_equal(t->fp.nroute, 2);

	/* MSI-X disabled: no routes; interrupts show in the ISR instead. */
	msix_enable(t, false, false);
	assert_int_equal(t->fp.nroute, 0);
	efd_signal(act->call_fd[0]);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 1), 1);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 1), 0);
	msix_enable(t, true, false);
	assert_int_equal(t->fp.nroute, 2);

	/* A platform that cannot route: no route recorded, interrupts become pending. */
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 12, 1, 4);
	t->fp.fail_irqfd = true;
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 12, 0, 4);
	assert_int_equal(route_of(t, act->call_fd[0]), -1);
	t->fp.fail_irqfd = false;
}

static void test_config_vector(void **state)
{
	struct t *t = *state;
	unsigned int n;

	driver_init(t, F_V1, 3);
	/* needs_reset from the device: NEEDS_RESET, config interrupt on vector 0. */
	t->dev.act.needs_reset(t->dev.act.ctx);
	assert_true(status(t) & S_NEEDS_RESET);
	assert_int_equal(t->fp.nmsi, 1);
	assert_int_equal(t->fp.msi[0].data, 0x40);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 1), 2);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 1), 0);
	/* Reported once. */
	t->dev.act.needs_reset(t->dev.act.ctx);
	assert_int_equal(t->fp.nmsi, 1);

	/* A host-side config change with vector 0 masked: pending, then sent on unmask. */
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 12, 1, 4);
	n = (unsigned int)mmio_read(t, CFGGEN, 1);
	virtio_pci_config_changed(t->vp);
	assert_int_equal(mmio_read(t, CFGGEN, 1), (n + 1) & 0xff);
	assert_int_equal(t->fp.nmsi, 1);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_PBA_OFF, 4), 1);
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 12, 0, 4);
	assert_int_equal(t->fp.nmsi, 2);
	assert_int_equal(t->fp.msi[1].data, 0x40);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_PBA_OFF, 4), 0);

	/* No vector: ISR only. */
	mmio_write(t, MSIX_CONFIG, VIRTIO_MSI_NO_VECTOR, 2);
	virtio_pci_config_changed(t->vp);
	assert_int_equal(t->fp.nmsi, 2);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 1), 2);

	/* After a reset, a late needs_reset is ignored. */
	mmio_write(t, STATUS, 0, 1);
	t->dev.act.needs_reset(t->dev.act.ctx);
	assert_int_equal(status(t), 0);
}

static void test_reset(void **state)
{
	struct t *t = *state;
	int kick0;

	driver_init(t, F_V1 | F_EVENT_IDX, 3);
	kick0 = t->dev.act.kick_fd[0];
	efd_signal(kick0);
	assert_int_equal(t->fp.nioev, 2);
	assert_int_equal(t->fp.nroute, 2);
	mmio_write(t, STATUS, 0, 1);
	assert_int_equal(t->dev.resets, 2);
	assert_int_equal(status(t), 0);
	assert_int_equal(t->fp.nioev, 0);
	assert_int_equal(t->fp.nroute, 0);
	assert_int_equal(efd_read(kick0), 0); /* stale counts drained */
	assert_int_equal(read_features(t, GF), 0);
	assert_int_equal(mmio_read(t, MSIX_CONFIG, 2), VIRTIO_MSI_NO_VECTOR);
	for (unsigned int i = 0; i < 2; i++) {
		mmio_write(t, Q_SELECT, i, 2);
		assert_int_equal(mmio_read(t, Q_SIZE, 2), DUMMY_QMAX);
		assert_int_equal(mmio_read(t, Q_ENABLE, 2), 0);
		assert_int_equal(mmio_read(t, Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
		assert_int_equal(mmio_read(t, Q_DESC, 8), 0);
	}
	/* The MSI-X table is PCI state: it survives a virtio reset. */
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_TABLE_OFF + 8, 4), 0x40);
	/* Notifies after reset go nowhere. */
	mmio_write(t, VIRTIO_PCI_NOTIFY_OFF, 0, 2);
	assert_int_equal(efd_read(kick0), 0);
	/* And the device comes back. */
	driver_init(t, F_V1, 3);
	assert_int_equal(t->dev.activates, 2);
	assert_int_equal(t->fp.nioev, 2);
}

static void test_reset_with_worker(void **state)
{
	struct t *t = *state;

	/* reset() joins a worker that calls needs_reset(): must not deadlock. */
	t->dev.use_worker = true;
	driver_init(t, F_V1, 3);
	mmio_write(t, STATUS, 0, 1);
	assert_int_equal(status(t), 0);
	driver_init(t, F_V1, 3);
	/* Teardown's reset joins the second worker the same way. */
}

static void test_hostile_common(void **state)
{
	struct t *t = *state;
	uint64_t v;

	walk_caps(t);
	enable_bar(t);
	mmio_write(t, STATUS, S_ACK | S_DRIVER, 1);
	mmio_write(t, Q_SELECT, 0, 2);
	/* Sizes: 0, not a power of two, too big, 16-bit overflow through a dword: ignored. */
	mmio_write(t, Q_SIZE, 0, 2);
	mmio_write(t, Q_SIZE, 3, 2);
	mmio_write(t, Q_SIZE, 512, 2);
	mmio_write(t, Q_SIZE, 0x8000, 2);
	mmio_write(t, Q_SIZE, 65536 | 8, 4);
	assert_int_equal(mmio_read(t, Q_SIZE, 2), DUMMY_QMAX);
	mmio_write(t, Q_SIZE, 1, 2);
	assert_int_equal(mmio_read(t, Q_SIZE, 2), 1);
	/* Vectors out of range read back NO_VECTOR. */
	mmio_write(t, Q_MSIX, 3, 2);
	assert_int_equal(mmio_read(t, Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	mmio_write(t, Q_MSIX, 2, 2);
	assert_int_equal(mmio_read(t, Q_MSIX, 2), 2);
	mmio_write(t, MSIX_CONFIG, 0x8000, 2);
	assert_int_equal(mmio_read(t, MSIX_CONFIG, 2), VIRTIO_MSI_NO_VECTOR);
	/* queue_enable 0 does not disable. */
	mmio_write(t, Q_ENABLE, 1, 2);
	mmio_write(t, Q_ENABLE, 0, 2);
	assert_int_equal(mmio_read(t, Q_ENABLE, 2), 1);
	/* Queue select out of range: fields read 0 (size 0 = absent), writes go nowhere. */
	for (uint32_t sel = 2; sel < 0x10000; sel += 0x7fff) {
		mmio_write(t, Q_SELECT, sel, 2);
		assert_int_equal(mmio_read(t, Q_SELECT, 2), sel);
		mmio_write(t, Q_SIZE, 4, 2);
		mmio_write(t, Q_ENABLE, 1, 2);
		mmio_write(t, Q_DESC, 0x1000, 8);
		mmio_write(t, Q_MSIX, 1, 2);
		assert_int_equal(mmio_read(t, Q_SIZE, 2), 0);
		assert_int_equal(mmio_read(t, Q_ENABLE, 2), 0);
		assert_int_equal(mmio_read(t, Q_DESC, 8), 0);
		assert_int_equal(mmio_read(t, Q_NOFF, 2), 0);
		assert_int_equal(mmio_read(t, Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	}
	/* Misaligned and odd-sized accesses: writes ignored, reads 0. */
	mmio_write(t, Q_SELECT, 0, 2);
	assert_int_equal(mmio_read(t, NUMQ, 1), 0);
	assert_int_equal(mmio_read(t, NUMQ, 4), 0);
	assert_int_equal(mmio_read(t, NUMQ - 1, 2), 0);
	assert_int_equal(mmio_read(t, DFSELECT, 8), 0);
	assert_int_equal(mmio_read(t, Q_DESC + 2, 4), 0);
	assert_int_equal(mmio_read(t, Q_DESC + 4, 8), 0);
	mmio_write(t, Q_SIZE + 1, 0x01, 1);
	mmio_write(t, Q_SIZE, 0x0404, 1);
	mmio_write(t, STATUS, (uint64_t)S_FEAT << 8 | 0xff, 2);
	mmio_write(t, STATUS - 1, 0xffffffff, 4);
	mmio_write(t, Q_DESC + 1, 0xffffffff, 4);
	assert_int_equal(mmio_read(t, Q_SIZE, 2), 1);
	assert_int_equal(mmio_read(t, Q_DESC, 8), 0);
	assert_int_equal(status(t), S_ACK | S_DRIVER);
	/* Past the common structure, holes of the BAR, the BAR's last bytes. */
	assert_int_equal(mmio_read(t, 0x38, 4), 0);
	assert_int_equal(mmio_read(t, 0xffc, 4), 0);
	mmio_write(t, 0x38, 0xffffffff, 4);
	assert_int_equal(mmio_read(t, 0x6000, 4), 0);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_BAR_SIZE - 8, 8), 0);
	mmio_write(t, VIRTIO_PCI_BAR_SIZE - 8, ~0ull, 8);
	v = 0;
	assert_false(
		bus_access(&t->mmio, t->bar + VIRTIO_PCI_BAR_SIZE - 4, (uint8_t *)&v, 8, false));
	/* ISR: only a byte read at its address. */
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 4), 0);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF + 1, 1), 0);
	/* Device config out of range: never reaches the device. */
	t->dev.config_reads = t->dev.config_writes = 0;
	assert_int_equal(mmio_read(t, VIRTIO_PCI_DEVICE_OFF + DUMMY_CFG - 1, 2), 0);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_DEVICE_OFF + DUMMY_CFG, 1), 0);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_DEVICE_OFF + 0xffc, 4), 0);
	mmio_write(t, VIRTIO_PCI_DEVICE_OFF + DUMMY_CFG - 4, ~0ull, 8);
	mmio_write(t, VIRTIO_PCI_DEVICE_OFF + 0x800, 1, 1);
	assert_int_equal(t->dev.config_reads + t->dev.config_writes, 0);
	mmio_read(t, VIRTIO_PCI_DEVICE_OFF + DUMMY_CFG - 8, 8);
	assert_int_equal(t->dev.config_reads, 1);
	/* Notify: unknown queues, odd offsets, before DRIVER_OK: nothing. */
	mmio_write(t, VIRTIO_PCI_NOTIFY_OFF + 4 * 7, 7, 2);
	mmio_write(t, VIRTIO_PCI_NOTIFY_OFF + 0xffc, 0, 4);
	mmio_write(t, VIRTIO_PCI_NOTIFY_OFF + 1, 0, 2);
	mmio_write(t, VIRTIO_PCI_NOTIFY_OFF, 0, 2);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_NOTIFY_OFF, 2), 0);
	/* MSI-X table: unaligned, short, and beyond the 3 entries. */
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 2, 0xffffffff, 4);
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF, 0xff, 1);
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 4, ~0ull, 8);
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF + 3 * 16, 0xffffffff, 4);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_TABLE_OFF, 8), 0);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_TABLE_OFF + 3 * 16, 4), 0);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_TABLE_OFF + 12, 4), 1); /* still masked */
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_PBA_OFF + 1, 2), 0);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_PBA_OFF + 8, 4), 0);
	/* MSI address bits 1:0 are reserved. */
	mmio_write(t, VIRTIO_PCI_MSIX_TABLE_OFF, MSI_ADDR | 3, 4);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_MSIX_TABLE_OFF, 4), MSI_ADDR);
}

static void test_hostile_activation(void **state)
{
	struct t *t = *state;

	/* Rings at misaligned or huge addresses, size 1: NEEDS_RESET, no crash. */
	walk_caps(t);
	enable_bar(t);
	mmio_write(t, STATUS, S_ACK | S_DRIVER, 1);
	write_features(t, F_V1);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT, 1);
	mmio_write(t, Q_SELECT, 0, 2);
	mmio_write(t, Q_SIZE, 1, 2);
	mmio_write(t, Q_DESC, 0xfffffffffffffff0ull, 8);
	mmio_write(t, Q_AVAIL, 0x1001, 8);
	mmio_write(t, Q_USED, 0, 8);
	mmio_write(t, Q_ENABLE, 1, 2);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT | S_OK, 1);
	assert_int_equal(t->dev.activates, 0);
	assert_true(status(t) & S_NEEDS_RESET);
	/* MSI-X off: the config interrupt shows in the ISR only. */
	assert_int_equal(t->fp.nmsi, 0);
	assert_int_equal(mmio_read(t, VIRTIO_PCI_ISR_OFF, 1), 2);
	/* DRIVER_OK with FAILED set does not activate either. */
	mmio_write(t, STATUS, 0, 1);
	mmio_write(t, STATUS, S_ACK | S_DRIVER, 1);
	write_features(t, F_V1);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT, 1);
	mmio_write(t, STATUS, S_ACK | S_DRIVER | S_FEAT | S_OK | VIRTIO_STATUS_FAILED, 1);
	assert_int_equal(t->dev.activates, 0);
	assert_false(status(t) & S_OK);
}

static void test_pci_cfg_window(void **state)
{
	struct t *t = *state;
	uint32_t c;

	walk_caps(t);
	c = t->cap[5];
	/* Works without memory decoding: that is its point. */
	assert_int_equal(t->mmio.count, 0);
	cfg_write(t, c + 4, 0, 1);    /* bar */
	cfg_write(t, c + 8, NUMQ, 4); /* offset */
	cfg_write(t, c + 12, 2, 4);   /* length */
	assert_int_equal(cfg_read(t, c + 16, 2), 2);
	/* A write: device status through the window. */
	cfg_write(t, c + 8, STATUS, 4);
	cfg_write(t, c + 12, 1, 4);
	cfg_write(t, c + 16, S_ACK, 4);
	assert_int_equal(cfg_read(t, c + 16, 1), S_ACK);
	/* Device config, 4 bytes. */
	cfg_write(t, c + 8, VIRTIO_PCI_DEVICE_OFF, 4);
	cfg_write(t, c + 12, 4, 4);
	cfg_write(t, c + 16, 0x12345678, 4);
	assert_int_equal(t->dev.config[0], 0x78);
	assert_int_equal(cfg_read(t, c + 16, 4), 0x12345678);
	/* Bad windows do nothing: length 3 or 8, misaligned, other BAR, past the BAR. */
	t->dev.config_reads = t->dev.config_writes = 0;
	cfg_write(t, c + 12, 3, 4);
	cfg_write(t, c + 16, 0, 4);
	cfg_write(t, c + 12, 8, 4);
	cfg_write(t, c + 16, 0, 4);
	cfg_write(t, c + 12, 4, 4);
	cfg_write(t, c + 8, VIRTIO_PCI_DEVICE_OFF + 2, 4);
	cfg_write(t, c + 16, 0, 4);
	cfg_write(t, c + 8, VIRTIO_PCI_DEVICE_OFF, 4);
	cfg_write(t, c + 4, 1, 1);
	cfg_write(t, c + 16, 0, 4);
	cfg_write(t, c + 4, 0, 1);
	cfg_write(t, c + 8, 0xfffffffc, 4);
	cfg_write(t, c + 16, 0, 4);
	(void)cfg_read(t, c + 16, 4);
	assert_int_equal(t->dev.config_writes + t->dev.config_reads, 0);
	assert_int_equal(t->dev.config[0], 0x78);
	/* Status unchanged by all of it. */
	cfg_write(t, c + 8, STATUS, 4);
	cfg_write(t, c + 12, 1, 4);
	assert_int_equal(cfg_read(t, c + 16, 1), S_ACK);
}

static int free_slots_fill(struct pci_root *r, struct pci_function *f, unsigned int n)
{
	int filled = 0;

	for (unsigned int i = 0; i < n; i++) {
		pci_function_init(&f[i], 0x1234, 0x5678, 0xff0000, 0, 0);
		if (pci_add_device(r, &f[i]) > 0)
			filled++;
	}
	return filled;
}

static void test_create_errors(void **state)
{
	struct t *t = *state;
	struct virtio_device_ops ops;
	struct virtio_pci *vp = NULL;
	struct dummy d = {0};
	struct vmm_err err;
	struct pci_function *f;

	ops = dummy_ops;
	ops.nqueues = 0;
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&ops, &d}, &vp, &err),
			 -EINVAL);
	ops.nqueues = VIRTIO_MAX_QUEUES + 1;
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&ops, &d}, &vp, &err),
			 -EINVAL);
	ops = dummy_ops;
	ops.queue_max = 3;
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&ops, &d}, &vp, &err),
			 -EINVAL);
	ops = dummy_ops;
	ops.config_size = VIRTIO_PCI_DEVICE_MAX + 1;
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&ops, &d}, &vp, &err),
			 -EINVAL);
	ops = dummy_ops;
	ops.config_read = NULL;
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&ops, &d}, &vp, &err),
			 -EINVAL);
	ops = dummy_ops;
	ops.reset = NULL;
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&ops, &d}, &vp, &err),
			 -EINVAL);
	assert_true(strlen(err.msg) > 0);

	/* A second device gets the next slot and its own BAR; no config space is fine. */
	ops = dummy_ops;
	ops.config_size = 0;
	ops.nqueues = VIRTIO_MAX_QUEUES;
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&ops, &d}, &vp, &err),
			 0);
	assert_int_equal(virtio_pci_slot(vp), t->slot + 1);
	virtio_pci_destroy(vp);
	assert_int_equal(d.destroys, 1);

	/* Bus full: -ENOSPC, and the device still belongs to the caller. */
	f = calloc(PCI_MAX_DEVICES, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(free_slots_fill(&t->pci, f, PCI_MAX_DEVICES), PCI_MAX_DEVICES - 2);
	d.destroys = 0;
	assert_int_equal(virtio_pci_create(&t->pci, &t->mmio, &t->mem, &t->plat,
					   (struct virtio_device){&dummy_ops, &d}, &vp, &err),
			 -ENOSPC);
	assert_int_equal(d.destroys, 0);
	for (unsigned int i = 0; i < PCI_MAX_DEVICES; i++)
		pci_remove_device(&t->pci, &f[i]);
	free(f);
}

static void test_threads(void **state);

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_enumerate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_sizing_and_decode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_relocation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_features, setup, teardown),
		cmocka_unit_test_setup_teardown(test_activate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_activate_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_activate_bad_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_activate_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msix_routing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_vector, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_with_worker, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_common, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_activation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pci_cfg_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* ---- Concurrency: vCPU threads hammering registers while the driver resets ---- */

struct hammer {
	struct t *t;
	uint64_t bar;	   /* BAR 0, fixed for the test */
	uint64_t ecam_cfg; /* ECAM offset of the function */
	uint32_t window;   /* offset of the PCI_CFG window's data */
	bool stop;	   /* atomic */
	unsigned int n;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	uint64_t v;

	while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
		v = 0;
		bus_access(&h->t->mmio, h->bar + Q_SELECT, (uint8_t *)&v, 2, false);
		bus_access(&h->t->mmio, h->bar + VIRTIO_PCI_ISR_OFF, (uint8_t *)&v, 1, false);
		bus_access(&h->t->mmio, h->bar + VIRTIO_PCI_MSIX_PBA_OFF, (uint8_t *)&v, 8, false);
		v = h->n & 1;
		bus_access(&h->t->mmio, h->bar + VIRTIO_PCI_MSIX_TABLE_OFF + 28, (uint8_t *)&v, 4,
			   true);
		/* Config space from this "vCPU" too: the window reads num_queues. */
		pci_ecam(&h->t->pci, h->ecam_cfg + h->window, (uint8_t *)&v, 2, false);
		assert_int_equal(v & 0xffff, 2);
		pci_ecam(&h->t->pci, h->ecam_cfg + PCI_COMMAND, (uint8_t *)&v, 2, false);
		h->n++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct t *t = *state;
	struct hammer h = {.t = t};
	pthread_t th;

	driver_init(t, F_V1, 3);
	h.bar = t->bar;
	h.ecam_cfg = (uint64_t)t->slot << 15;
	h.window = t->cap[5] + 16;
	cfg_write(t, t->cap[5] + 8, NUMQ, 4);
	cfg_write(t, t->cap[5] + 12, 2, 4);
	assert_int_equal(pthread_create(&th, NULL, hammer_thread, &h), 0);
	for (int i = 0; i < 50; i++) {
		mmio_write(t, STATUS, 0, 1);
		driver_init(t, F_V1, 3);
		t->dev.act.needs_reset(t->dev.act.ctx);
	}
	__atomic_store_n(&h.stop, true, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	assert_int_equal(t->dev.activates, 51);
}
