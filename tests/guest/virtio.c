/*
 * Virtio over PCI, ring 0 part: find modern virtio functions on bus 0, map
 * their BARs, set up MSI-X, negotiate features, hand queues to ring 3,
 * run the command line's block / entropy jobs in ring 3 and print results.
 * Ring 0 only does register accesses here; all data work is in uvirtio.c.
 */
#include "virtio.h"

#define PCI_COMMAND	  0x04
#define PCI_STATUS	  0x06
#define PCI_BAR0	  0x10
#define PCI_CAP_PTR	  0x34
#define PCI_CMD_MEM	  0x0002
#define PCI_CMD_MASTER	  0x0004
#define PCI_CMD_INTX_OFF  0x0400
#define PCI_STATUS_CAPS	  0x0010
#define PCI_CAP_ID_VNDR	  0x09
#define PCI_CAP_ID_MSIX	  0x11
#define MSIX_CTRL_ENABLE  0x8000
#define MSIX_CTRL_MASKALL 0x4000
#define BAR_WIN_LO	  0xc0000000UL /* where BARs left at 0 are put (libvmm's window) */
#define BAR_WIN_HI	  0xe0000000UL

#define MSR_APIC_BASE	0x1b
#define APIC_BASE_EXTD	(1UL << 10)
#define APIC_BASE_EN	(1UL << 11)
#define APIC_EOI	0xb0
#define APIC_SVR	0xf0
#define APIC_LVT_TIMER	0x320
#define APIC_TIMER_INIT 0x380
#define APIC_TIMER_DIV	0x3e0
#define VEC_TIMER	0xf0
#define VEC_SPURIOUS	0xff
#define TIMER_PERIOD	10000000 /* APIC timer counts (~10 ms at the usual 1 GHz) */

#define ARENA_START	 0x1000000UL /* 16 MiB */
#define ARENA_END	 0xc0000000UL
#define REQ_TIMEOUT_US	 30000000UL
#define RESET_TIMEOUT_US 1000000UL

u32 ndevs;
bool irq_mode;
static bool feat_min;
u64 arena, arena_size;
static u32 arena_bufs, job_bufs; /* job_bufs: arena_bufs minus the NICs' buffers */
static bool x2apic;
static u64 apic_base;
static u32 apic_id;
static u64 bar_cursor;
static u32 irq_waits; /* ring-3 wait requests served */
static bool apic_ready;

/* ---- small helpers ---- */

bool streq(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

bool has_prefix(const char *s, const char *p)
{
	while (*p) {
		if (*s++ != *p++)
			return false;
	}
	return true;
}

/* Decimal or 0x-hex number; advances *s; false if there is none. */
bool parse_num(const char **s, u64 *v)
{
	const char *p = *s;
	u64 x = 0;
	bool any = false;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		for (p += 2;; p++, any = true) {
			if (*p >= '0' && *p <= '9')
				x = x * 16 + (u64)(*p - '0');
			else if ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'f')
				x = x * 16 + (u64)((*p | 0x20) - 'a' + 10);
			else
				break;
		}
	} else {
		for (; *p >= '0' && *p <= '9'; p++, any = true)
			x = x * 10 + (u64)(*p - '0');
	}
	*s = p;
	*v = x;
	return any;
}

/* "a:b:c..." into v[0..n); the last field may be "zero" (SEED_ZERO) if allow_zero. */
bool parse_fields(const char *s, u64 *v, u32 n, bool allow_zero)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (i && *s++ != ':')
			return false;
		if (allow_zero && i == n - 1 && has_prefix(s, "zero")) {
			v[i] = SEED_ZERO;
			s += 4;
		} else if (!parse_num(&s, &v[i])) {
			return false;
		}
	}
	return *s == '\0';
}

static const char *status_name(u32 st)
{
	switch (st) {
	case VIRTIO_BLK_S_OK:
		return "ok";
	case VIRTIO_BLK_S_IOERR:
		return "ioerr";
	case VIRTIO_BLK_S_UNSUPP:
		return "unsupp";
	case 0xff:
		return "none";
	default:
		return "other";
	}
}

static const char *err_name(u32 e)
{
	switch (e) {
	case VE_TIMEOUT:
		return "timeout waiting for the used ring";
	case VE_NEEDS_RESET:
		return "device status NEEDS_RESET";
	case VE_BAD_ID:
		return "used ring returned an id that is not in flight";
	case VE_NO_STATUS:
		return "request completed without its status byte";
	case VE_TOO_BIG:
		return "request does not fit the queue";
	case VE_RNG_EMPTY:
		return "entropy device returned no bytes";
	case VE_NET_RXBUF:
		return "bad receive buffer (length or num_buffers)";
	default:
		return "unknown error";
	}
}

static const char *type_name(u8 t)
{
	switch (t) {
	case VT_BLK:
		return "blk";
	case VT_RNG:
		return "rng";
	case VT_NET:
		return "net";
	case VT_BALLOON:
		return "balloon";
	default:
		return "other";
	}
}

/* ---- local APIC, legacy PIC ---- */

static u32 apic_read(u32 reg)
{
	return x2apic ? (u32)rdmsr(0x800 + (reg >> 4)) : mmio_read32(apic_base + reg);
}

static void apic_write(u32 reg, u32 v)
{
	if (x2apic)
		wrmsr(0x800 + (reg >> 4), v);
	else
		mmio_write32(apic_base + reg, v);
}

void apic_setup(void)
{
	u64 msr = rdmsr(MSR_APIC_BASE);
	u32 a, b, c, d;

	if (apic_ready)
		return;
	apic_ready = true;
	if (!(msr & APIC_BASE_EN)) {
		msr |= APIC_BASE_EN;
		wrmsr(MSR_APIC_BASE, msr);
	}
	x2apic = !!(msr & APIC_BASE_EXTD);
	apic_base = msr & 0xffffff000UL;
	cpuid(1, 0, &a, &b, &c, &d);
	apic_id = x2apic ? (u32)rdmsr(0x802) : b >> 24;
	apic_write(APIC_SVR, apic_read(APIC_SVR) | 0x100 | VEC_SPURIOUS);
	apic_write(APIC_LVT_TIMER, 1u << 16 | VEC_TIMER); /* masked */
	/* 8259s: mask everything, their vectors would look like exceptions */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
}

void irq_handler(u64 vec)
{
	irq_count[vec & 0xff]++;
	if (vec >= VEC_QUEUE_BASE && vec < VEC_CONFIG_BASE + VIRTIO_MAX_DEVS)
		irq_total++;
	if (vec != VEC_SPURIOUS)
		apic_write(APIC_EOI, 0);
}

/* The periodic APIC timer bounds each hlt, so a TSC deadline is seen. */
static void timer_on(void)
{
	apic_write(APIC_TIMER_DIV, 0xb); /* divide by 1 */
	apic_write(APIC_LVT_TIMER, 1u << 17 | VEC_TIMER);
	apic_write(APIC_TIMER_INIT, TIMER_PERIOD);
}

static void timer_off(void)
{
	apic_write(APIC_LVT_TIMER, 1u << 16 | VEC_TIMER);
	apic_write(APIC_TIMER_INIT, 0);
}

void wait_until(u64 tsc)
{
	apic_setup();
	timer_on();
	while ((long)(rdtsc() - tsc) < 0)
		__asm__ volatile("sti; hlt; cli" ::: "memory");
	timer_off();
}

/* A ring-3 ud2 with usys.op set: wait for an interrupt, then resume ring 3. */
bool virtio_user_trap(struct trap_frame *f)
{
	u32 op = usys.op, v, seen;
	u64 deadline;

	if (op != USYS_WAIT && op != USYS_WAIT_ANY)
		return false;
	usys.op = 0;
	irq_waits++;
	v = usys.vector & 0xff;
	seen = usys.seen;
	deadline = usys.deadline;
	timer_on();
	if (op == USYS_WAIT) {
		while (irq_count[v] == seen && (long)(rdtsc() - deadline) < 0)
			__asm__ volatile("sti; hlt; cli" ::: "memory");
	} else {
		while (irq_total == seen && (long)(rdtsc() - deadline) < 0)
			__asm__ volatile("sti; hlt; cli" ::: "memory");
	}
	timer_off();
	f->rip += 2;
	return true;
}

/* ---- PCI: BARs ---- */

static bool bar_is_mem64(u32 dev, u32 fn, u32 bar)
{
	return (pci_read32(dev, fn, PCI_BAR0 + 4 * bar) & 7) == 4;
}

/* Size of memory BAR `bar` (decoding must be off). */
static u64 bar_size(u32 dev, u32 fn, u32 bar)
{
	u32 reg = PCI_BAR0 + 4 * bar, lo = pci_read32(dev, fn, reg), hi = 0, slo, shi = 0xffffffff;
	bool is64 = (lo & 7) == 4;

	if (is64)
		hi = pci_read32(dev, fn, reg + 4);
	pci_write32(dev, fn, reg, 0xffffffff);
	slo = pci_read32(dev, fn, reg);
	pci_write32(dev, fn, reg, lo);
	if (is64) {
		pci_write32(dev, fn, reg + 4, 0xffffffff);
		shi = pci_read32(dev, fn, reg + 4);
		pci_write32(dev, fn, reg + 4, hi);
	}
	return ~((u64)shi << 32 | (slo & ~0xfu)) + 1;
}

/* Highest end of the memory BARs in the window, over all of bus 0. */
static void bar_cursor_init(void)
{
	u32 dev, fn, bar, id, nfn;
	u16 cmd;

	bar_cursor = BAR_WIN_LO;
	for (dev = 0; dev < 32; dev++) {
		id = pci_read32(dev, 0, 0);
		if ((id & 0xffff) == 0xffff || !(id & 0xffff))
			continue;
		nfn = pci_read8(dev, 0, 0x0e) & 0x80 ? 8 : 1;
		for (fn = 0; fn < nfn; fn++) {
			id = pci_read32(dev, fn, 0);
			if ((id & 0xffff) == 0xffff || (pci_read8(dev, fn, 0x0e) & 0x7f) != 0)
				continue;
			cmd = pci_read16(dev, fn, PCI_COMMAND);
			for (bar = 0; bar < 6; bar++) {
				u32 lo = pci_read32(dev, fn, PCI_BAR0 + 4 * bar);
				u64 addr = lo & ~0xfUL, size;
				bool is64 = (lo & 7) == 4;

				if (lo & 1)
					continue; /* I/O */
				if (is64 && bar < 5)
					addr |= (u64)pci_read32(dev, fn, PCI_BAR0 + 4 * bar + 4)
						<< 32;
				if (addr >= BAR_WIN_LO && addr < BAR_WIN_HI) {
					pci_write16(dev, fn, PCI_COMMAND, cmd & ~PCI_CMD_MEM);
					size = bar_size(dev, fn, bar);
					pci_write16(dev, fn, PCI_COMMAND, cmd);
					if (addr + size > bar_cursor)
						bar_cursor = addr + size;
				}
				bar += is64;
			}
		}
	}
}

/* Address of memory BAR `bar`; one left at 0 gets a place in the window. 0: unusable. */
static u64 bar_addr(struct vdev *d, u32 bar)
{
	u32 reg = PCI_BAR0 + 4 * bar, lo = pci_read32(d->slot, d->fn, reg);
	u64 addr, size;
	u16 cmd;

	if (bar > 5 || (lo & 1)) {
		fail("virtio dev=%u: BAR%u is not a memory BAR", d->slot, bar);
		return 0;
	}
	addr = lo & ~0xfUL;
	if (bar_is_mem64(d->slot, d->fn, bar) && bar < 5)
		addr |= (u64)pci_read32(d->slot, d->fn, reg + 4) << 32;
	if (addr)
		return addr;
	if (!bar_cursor)
		bar_cursor_init();
	cmd = pci_read16(d->slot, d->fn, PCI_COMMAND);
	pci_write16(d->slot, d->fn, PCI_COMMAND, cmd & ~PCI_CMD_MEM);
	size = bar_size(d->slot, d->fn, bar);
	if (size < 16 || (size & (size - 1))) {
		fail("virtio dev=%u: BAR%u size 0x%lx", d->slot, bar, size);
		return 0;
	}
	addr = (bar_cursor + size - 1) & ~(size - 1);
	if (addr + size > BAR_WIN_HI) {
		fail("virtio dev=%u: no room for BAR%u (0x%lx bytes)", d->slot, bar, size);
		return 0;
	}
	bar_cursor = addr + size;
	pci_write32(d->slot, d->fn, reg, (u32)addr | (lo & 0xf));
	if (bar_is_mem64(d->slot, d->fn, bar))
		pci_write32(d->slot, d->fn, reg + 4, 0);
	gprintf("GUEST virtio dev=%u bar%u assigned=0x%lx size=0x%lx\n", d->slot, bar, addr, size);
	return addr;
}

/* Test hook (guest.virtio.reassign=1): clear the memory BARs so bar_addr() assigns them. */
static void bars_clear(struct vdev *d)
{
	u32 bar, lo;

	pci_write16(d->slot, d->fn, PCI_COMMAND,
		    pci_read16(d->slot, d->fn, PCI_COMMAND) & ~PCI_CMD_MEM);
	for (bar = 0; bar < 6; bar++) {
		lo = pci_read32(d->slot, d->fn, PCI_BAR0 + 4 * bar);
		if (lo & 1)
			continue;
		pci_write32(d->slot, d->fn, PCI_BAR0 + 4 * bar, lo & 0xf);
		if ((lo & 7) == 4 && bar < 5)
			pci_write32(d->slot, d->fn, PCI_BAR0 + 4 * ++bar, 0);
	}
}

/* ---- device discovery and set-up ---- */

static void find_devices(void)
{
	u32 dev, fn, nfn, id;
	char opt[8];
	/* a balloon is only driven when asked for (vmm-run adds one by default) */
	bool balloon = cmdline_get("guest.balloon=", opt, sizeof(opt)) && streq(opt, "1");

	for (dev = 0; dev < 32; dev++) {
		id = pci_read32(dev, 0, 0);
		if ((id & 0xffff) == 0xffff || !(id & 0xffff))
			continue;
		nfn = pci_read8(dev, 0, 0x0e) & 0x80 ? 8 : 1;
		for (fn = 0; fn < nfn; fn++) {
			struct vdev *d;
			u16 did;

			id = pci_read32(dev, fn, 0);
			did = (u16)(id >> 16);
			if ((id & 0xffff) != VIRTIO_VENDOR || did < VIRTIO_DEV_MODERN ||
			    did > 0x107f)
				continue;
			if (ndevs >= VIRTIO_MAX_DEVS) {
				fail("virtio: more than %u devices", VIRTIO_MAX_DEVS);
				return;
			}
			d = &vdevs[ndevs++];
			d->slot = (u8)dev;
			d->fn = (u8)fn;
			d->device_id = (u16)(did - VIRTIO_DEV_MODERN);
			switch (d->device_id) {
			case VIRTIO_ID_BLOCK:
				d->type = VT_BLK;
				break;
			case VIRTIO_ID_ENTROPY:
				d->type = VT_RNG;
				break;
			case VIRTIO_ID_NET:
				d->type = VT_NET;
				break;
			case VIRTIO_ID_BALLOON:
				d->type = balloon ? VT_BALLOON : VT_OTHER;
				break;
			default:
				d->type = VT_OTHER;
				break;
			}
		}
	}
}

/* MSI-X table entry n: fixed delivery to the BSP, edge, vector vec, unmasked. */
static void msix_entry(struct vdev *d, u32 n, u32 vec)
{
	u64 e = d->msix_table + 16UL * n;

	mmio_write32(e + 0, 0xfee00000u | (apic_id & 0xff) << 12);
	mmio_write32(e + 4, 0);
	mmio_write32(e + 8, vec);
	mmio_write32(e + 12, 0); /* unmasked */
}

/* Walk the capability list: virtio structures (first of each type) and MSI-X. */
static bool pci_caps(struct vdev *d)
{
	u32 pos, n, cfg[5] = {0}, msix = 0, type, bar, off, len, t, pba;
	u64 base;
	u16 ctrl;

	d->cfg_msix = VIRTIO_MSI_NO_VECTOR;
	d->cfg_vector = 0;
	if (!(pci_read16(d->slot, d->fn, PCI_STATUS) & PCI_STATUS_CAPS)) {
		fail("virtio dev=%u: no capability list", d->slot);
		return false;
	}
	for (pos = pci_read8(d->slot, d->fn, PCI_CAP_PTR) & 0xfc, n = 0; pos && n < 48;
	     pos = pci_read8(d->slot, d->fn, pos + 1) & 0xfc, n++) {
		u8 id = pci_read8(d->slot, d->fn, pos);

		if (id == PCI_CAP_ID_MSIX && !msix)
			msix = pos;
		if (id != PCI_CAP_ID_VNDR)
			continue;
		type = pci_read8(d->slot, d->fn, pos + 3);
		bar = pci_read8(d->slot, d->fn, pos + 4);
		if (type >= 1 && type <= 4 && bar <= 5 && !cfg[type])
			cfg[type] = pos;
	}
	if (!cfg[VIRTIO_PCI_CAP_COMMON_CFG] || !cfg[VIRTIO_PCI_CAP_NOTIFY_CFG] ||
	    !cfg[VIRTIO_PCI_CAP_ISR_CFG] ||
	    (d->type != VT_RNG && !cfg[VIRTIO_PCI_CAP_DEVICE_CFG])) {
		fail("virtio dev=%u: missing virtio capability (common %u notify %u isr %u device "
		     "%u)",
		     d->slot, cfg[1], cfg[2], cfg[3], cfg[4]);
		return false;
	}
	for (t = 1; t <= 4; t++) {
		if (!cfg[t])
			continue;
		bar = pci_read8(d->slot, d->fn, cfg[t] + 4);
		off = pci_read32(d->slot, d->fn, cfg[t] + 8);
		len = pci_read32(d->slot, d->fn, cfg[t] + 12);
		base = bar_addr(d, bar);
		if (!base)
			return false;
		if (!map_mmio(base + off, len ? len : 1, true)) {
			fail("virtio dev=%u: cannot map BAR%u at 0x%lx", d->slot, bar, base);
			return false;
		}
		if (t == VIRTIO_PCI_CAP_COMMON_CFG)
			d->common = base + off;
		else if (t == VIRTIO_PCI_CAP_NOTIFY_CFG)
			d->notify_base = base + off;
		else if (t == VIRTIO_PCI_CAP_ISR_CFG)
			d->isr = base + off;
		else
			d->devcfg = base + off;
	}
	d->notify_mult = pci_read32(d->slot, d->fn, cfg[VIRTIO_PCI_CAP_NOTIFY_CFG] + 16);
	if (msix) {
		ctrl = pci_read16(d->slot, d->fn, msix + 2);
		t = pci_read32(d->slot, d->fn, msix + 4);
		pba = pci_read32(d->slot, d->fn, msix + 8);
		(void)pba;
		base = bar_addr(d, t & 7);
		if (!base)
			return false;
		d->msix_size = (ctrl & 0x7ff) + 1u;
		d->msix_table = base + (t & ~7u);
		if (!map_mmio(d->msix_table, d->msix_size * 16UL, false)) {
			fail("virtio dev=%u: cannot map the MSI-X table", d->slot);
			return false;
		}
	}
	pci_write16(d->slot, d->fn, PCI_COMMAND,
		    pci_read16(d->slot, d->fn, PCI_COMMAND) | PCI_CMD_MEM | PCI_CMD_MASTER |
			    PCI_CMD_INTX_OFF);
	/* MSI-X: enabled, entries programmed while the function is masked */
	if (msix) {
		u32 vec = VEC_QUEUE_BASE + (u32)(d - vdevs);

		/*
		 * entry 0 for queues 0 and 1, entry 1 for the balloon's
		 * configuration changes; the others stay masked as reset left them
		 */
		pci_write16(d->slot, d->fn, msix + 2, ctrl | MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
		msix_entry(d, 0, vec);
		d->vq.msix_entry = d->vq1.msix_entry = 0;
		d->vq.vector = d->vq1.vector = (u8)vec;
		if (d->type == VT_BALLOON && d->msix_size >= 2) {
			msix_entry(d, 1, VEC_CONFIG_BASE + (u32)(d - vdevs));
			d->cfg_msix = 1;
			d->cfg_vector = (u8)(VEC_CONFIG_BASE + (u32)(d - vdevs));
		}
		pci_write16(d->slot, d->fn, msix + 2,
			    (ctrl | MSIX_CTRL_ENABLE) & ~MSIX_CTRL_MASKALL);
	} else {
		d->vq.msix_entry = d->vq1.msix_entry = VIRTIO_MSI_NO_VECTOR;
	}
	return true;
}

static u8 st_read(struct vdev *d)
{
	return mmio_read8(d->common + VCC_STATUS);
}

static void st_set(struct vdev *d, u8 bits)
{
	mmio_write8(d->common + VCC_STATUS, st_read(d) | bits);
}

static u64 wanted_features(struct vdev *d)
{
	u64 f = 1UL << VIRTIO_F_VERSION_1 | 1UL << VIRTIO_F_ACCESS_PLATFORM |
		1UL << VIRTIO_F_ORDER_PLATFORM;

	if (!feat_min)
		f |= 1UL << VIRTIO_F_EVENT_IDX | 1UL << VIRTIO_F_INDIRECT_DESC;
	if (d->type == VT_BLK)
		f |= 1UL << VIRTIO_BLK_F_SIZE_MAX | 1UL << VIRTIO_BLK_F_SEG_MAX |
		     1UL << VIRTIO_BLK_F_GEOMETRY | 1UL << VIRTIO_BLK_F_RO |
		     1UL << VIRTIO_BLK_F_BLK_SIZE | 1UL << VIRTIO_BLK_F_FLUSH |
		     1UL << VIRTIO_BLK_F_TOPOLOGY | 1UL << VIRTIO_BLK_F_DISCARD |
		     1UL << VIRTIO_BLK_F_WRITE_ZEROES;
	if (d->type == VT_NET)
		f |= net_wanted_features();
	if (d->type == VT_BALLOON)
		f |= 1UL << VIRTIO_BALLOON_F_MUST_TELL_HOST; /* pages go back only when told */
	return f;
}

static bool has(struct vdev *d, u32 bit)
{
	return (d->features >> bit) & 1;
}

bool dev_has(struct vdev *d, u32 bit)
{
	return has(d, bit);
}

static void blk_config(struct vdev *d)
{
	u64 c = d->devcfg;
	u8 gen;
	u32 segs, bytes, tries = 0;

	do {
		gen = mmio_read8(d->common + VCC_CFGGEN);
		d->capacity = mmio_read32(c + 0) | (u64)mmio_read32(c + 4) << 32;
		d->size_max = has(d, VIRTIO_BLK_F_SIZE_MAX) ? mmio_read32(c + 0x08) : 0;
		d->seg_max = has(d, VIRTIO_BLK_F_SEG_MAX) ? mmio_read32(c + 0x0c) : 0;
		d->blk_size = has(d, VIRTIO_BLK_F_BLK_SIZE) ? mmio_read32(c + 0x14) : 0;
		d->max_discard_sectors = has(d, VIRTIO_BLK_F_DISCARD) ? mmio_read32(c + 0x24) : 0;
		d->max_discard_seg = has(d, VIRTIO_BLK_F_DISCARD) ? mmio_read32(c + 0x28) : 0;
		d->max_wz_sectors = has(d, VIRTIO_BLK_F_WRITE_ZEROES) ? mmio_read32(c + 0x30) : 0;
		d->max_wz_seg = has(d, VIRTIO_BLK_F_WRITE_ZEROES) ? mmio_read32(c + 0x34) : 0;
	} while (gen != mmio_read8(d->common + VCC_CFGGEN) && ++tries < 100);
	if (tries >= 100)
		fail("virtio dev=%u: config_generation keeps changing", d->slot);

	/* request shape: segments of at most size_max, at most seg_max of them */
	d->seg_bytes = d->size_max && d->size_max < DATA_BUF_SIZE ? d->size_max : DATA_BUF_SIZE;
	segs = SLOT_MAX_DESC - 2;
	if (d->vq.size - 2u < segs)
		segs = d->vq.size - 2u;
	if (d->seg_max && d->seg_max < segs)
		segs = d->seg_max;
	bytes = (u64)segs * d->seg_bytes < DATA_BUF_SIZE ? segs * d->seg_bytes : DATA_BUF_SIZE;
	d->req_sectors = bytes / SECTOR;
	/* in flight: a slot and a data buffer each; without indirect tables the ring bounds it too
	 */
	d->depth = VQ_SLOTS < arena_bufs ? VQ_SLOTS : arena_bufs;
	if (!d->vq.indirect) {
		segs = 2 + (bytes + d->seg_bytes - 1) / d->seg_bytes;
		if (d->vq.size / segs < d->depth)
			d->depth = d->vq.size / segs ? d->vq.size / segs : 1;
	} else if (d->vq.size < d->depth) {
		d->depth = d->vq.size;
	}
	if (!d->req_sectors) {
		fail("virtio dev=%u: size_max %u seg_max %u leave no room for a sector", d->slot,
		     d->size_max, d->seg_max);
		d->broken = 1;
	}
}

/* Queue n's size and place in the device's area (the rings at the given offsets). */
static bool queue_size(struct vdev *d, struct vq *q, u16 n, u32 desc, u32 avail, u32 used,
		       u32 headslot, u32 slots)
{
	u16 qmax;

	mmio_write16(d->common + VCC_Q_SELECT, n);
	qmax = mmio_read16(d->common + VCC_Q_SIZE);
	if (!qmax) {
		fail("virtio dev=%u: queue %u unavailable", d->slot, n);
		st_set(d, VIRTIO_S_FAILED);
		return false;
	}
	q->size = VQ_MAX_SIZE;
	while (q->size > qmax)
		q->size >>= 1;
	mmio_write16(d->common + VCC_Q_SIZE, q->size);
	q->index = n;
	q->event_idx = has(d, VIRTIO_F_EVENT_IDX);
	q->indirect = has(d, VIRTIO_F_INDIRECT_DESC);
	q->irq_mode = irq_mode && q->vector;
	q->desc = d->area + desc;
	q->avail = d->area + avail;
	q->used = d->area + used;
	q->headslot = d->area + headslot;
	q->slots = d->area + slots;
	return true;
}

/* Reset .. FEATURES_OK, queue sizes; the queues themselves come after ring 3 zeroed them. */
static bool dev_init(struct vdev *d)
{
	u64 start, timeout = tsc_ticks_us(RESET_TIMEOUT_US);

	mmio_write8(d->common + VCC_STATUS, 0);
	start = rdtsc();
	while (st_read(d)) {
		if (rdtsc() - start > timeout) {
			fail("virtio dev=%u: reset did not complete", d->slot);
			return false;
		}
		cpu_relax();
	}
	st_set(d, VIRTIO_S_ACKNOWLEDGE);
	st_set(d, VIRTIO_S_DRIVER);
	mmio_write32(d->common + VCC_DFSELECT, 0);
	d->offered = mmio_read32(d->common + VCC_DF);
	mmio_write32(d->common + VCC_DFSELECT, 1);
	d->offered |= (u64)mmio_read32(d->common + VCC_DF) << 32;
	if (!(d->offered >> VIRTIO_F_VERSION_1 & 1)) {
		fail("virtio dev=%u: VIRTIO_F_VERSION_1 not offered", d->slot);
		st_set(d, VIRTIO_S_FAILED);
		return false;
	}
	d->features = d->offered & wanted_features(d);
	mmio_write32(d->common + VCC_GFSELECT, 0);
	mmio_write32(d->common + VCC_GF, (u32)d->features);
	mmio_write32(d->common + VCC_GFSELECT, 1);
	mmio_write32(d->common + VCC_GF, (u32)(d->features >> 32));
	st_set(d, VIRTIO_S_FEATURES_OK);
	if (!(st_read(d) & VIRTIO_S_FEATURES_OK)) {
		fail("virtio dev=%u: device refused FEATURES_OK (features 0x%lx)", d->slot,
		     d->features);
		st_set(d, VIRTIO_S_FAILED);
		return false;
	}

	d->area = arena + (u64)(d - vdevs) * DEV_AREA;
	if (!queue_size(d, &d->vq, 0, DA_DESC, DA_AVAIL, DA_USED, DA_HEADSLOT, DA_SLOTS))
		return false;
	d->vq1.size = 0;
	if ((d->type == VT_NET || d->type == VT_BALLOON) &&
	    !queue_size(d, &d->vq1, 1, DA_Q1_DESC, DA_Q1_AVAIL, DA_Q1_USED, DA_Q1_HEADSLOT,
			DA_Q1_SLOTS))
		return false;
	if (d->type == VT_BLK)
		blk_config(d);
	if (d->type == VT_NET)
		net_config(d);
	return true;
}

static void queue_enable(struct vdev *d, struct vq *q)
{
	u64 c = d->common;
	u16 noff;

	mmio_write16(c + VCC_Q_SELECT, q->index);
	if (q->msix_entry != VIRTIO_MSI_NO_VECTOR) {
		mmio_write16(c + VCC_Q_MSIX, q->msix_entry);
		if (mmio_read16(c + VCC_Q_MSIX) != q->msix_entry) {
			fail("virtio dev=%u: queue %u MSI-X vector not accepted", d->slot,
			     q->index);
			q->msix_entry = VIRTIO_MSI_NO_VECTOR;
			q->vector = 0;
			q->irq_mode = 0;
		}
	}
	mmio_write32(c + VCC_Q_DESCLO, (u32)q->desc);
	mmio_write32(c + VCC_Q_DESCHI, (u32)(q->desc >> 32));
	mmio_write32(c + VCC_Q_AVAILLO, (u32)q->avail);
	mmio_write32(c + VCC_Q_AVAILHI, (u32)(q->avail >> 32));
	mmio_write32(c + VCC_Q_USEDLO, (u32)q->used);
	mmio_write32(c + VCC_Q_USEDHI, (u32)(q->used >> 32));
	noff = mmio_read16(c + VCC_Q_NOFF);
	q->notify = d->notify_base + (u64)noff * d->notify_mult;
	mmio_write16(c + VCC_Q_ENABLE, 1);
}

static bool queue_start(struct vdev *d)
{
	u64 c = d->common;

	if (d->cfg_msix != VIRTIO_MSI_NO_VECTOR) {
		mmio_write16(c + VCC_MSIX, d->cfg_msix);
		if (mmio_read16(c + VCC_MSIX) != d->cfg_msix) {
			fail("virtio dev=%u: configuration MSI-X vector not accepted", d->slot);
			d->cfg_msix = VIRTIO_MSI_NO_VECTOR;
			d->cfg_vector = 0;
		}
	}
	queue_enable(d, &d->vq);
	if (d->vq1.size)
		queue_enable(d, &d->vq1);
	st_set(d, VIRTIO_S_DRIVER_OK);
	if (st_read(d) & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED)) {
		fail("virtio dev=%u: status 0x%x after DRIVER_OK", d->slot, st_read(d));
		return false;
	}
	return true;
}

/* ---- DMA arena ---- */

#define ALIGN_2M(x) (((x) + 0x1fffffUL) & ~0x1fffffUL)

/* First 2 MiB-aligned place in usable RAM in [16 MiB, 3 GiB) clear of the initrd. */
static bool arena_place(void)
{
	u64 a, size, iend = ALIGN_2M(bi.initrd_addr + bi.initrd_size);
	u32 bufs, i, k;

	for (bufs = ARENA_MAX_BUFS; bufs >= ARENA_MIN_BUFS; bufs /= 2) {
		size = ARENA_RINGS + (u64)bufs * DATA_BUF_SIZE;
		for (i = 0; i < bi.e820_count; i++) {
			const struct e820_entry *e = &bi.e820[i];

			if (e->type != 1)
				continue;
			a = ALIGN_2M(e->addr < ARENA_START ? ARENA_START : e->addr);
			for (k = 0; k < 2; k++) { /* as is, then past the initrd */
				if (bi.initrd_size && a < iend && bi.initrd_addr < a + size)
					a = iend;
				else if (a + size <= ARENA_END && e820_usable(a, size))
					break;
			}
			if (k == 2 || a + size > ARENA_END || !e820_usable(a, size))
				continue;
			arena = a;
			arena_size = size;
			arena_bufs = job_bufs = bufs;
			return user_map(a, size);
		}
	}
	return false;
}

/* ---- ring-3 jobs ---- */

/*
 * Take the interrupts that arrived while IF was 0 (the device may finish
 * before ring 3 ever waits): MSI-X works in both modes, and in polling mode
 * the counts show whether the device honoured the suppression.
 */
static void drain_irqs(void)
{
	__asm__ volatile("sti" ::: "memory");
	delay_us(100);
	__asm__ volatile("cli" ::: "memory");
}

bool run_job(u32 op, struct vdev *d, u64 a0, u64 a1, u64 a2)
{
	u64 a[5] = {a0, a1, a2, 0, 0};

	return run_job5(op, d, a);
}

bool run_job5(u32 op, struct vdev *d, const u64 *a)
{
	u64 vec;
	u32 i;

	apic_setup(); /* the 8259s masked before drain_irqs() (no virtio devices: not done yet) */
	vjob.op = op;
	vjob.dev = d ? (u32)(d - vdevs) : 0;
	for (i = 0; i < ARRAY_SIZE(vjob.arg); i++)
		vjob.arg[i] = a[i];
	vjob.tsc_timeout = tsc_ticks_us(REQ_TIMEOUT_US);
	vjob.tsc_ms = tsc_ticks_us(1000);
	vjob.data = arena + ARENA_RINGS;
	vjob.nbufs = job_bufs;
	vjob.ndevs = ndevs;
	vjob.done = 0;
	usys.op = 0;
	vec = user_call(uvirtio_main);
	drain_irqs();
	if (vec != 6 || !vjob.done) {
		fail("virtio ring 3 job %u ended by exception vec=%lu rip=0x%lx", op, vec,
		     user_fault_rip);
		if (d)
			d->broken = 1;
		return false;
	}
	if (vjob.err) {
		fail("virtio dev=%u: %s", d ? d->slot : 0, err_name(vjob.err));
		if (vjob.err != VE_NO_STATUS && d)
			d->broken = 1;
		return false;
	}
	if (d && st_read(d) & VIRTIO_S_NEEDS_RESET) {
		fail("virtio dev=%u: device status NEEDS_RESET", d->slot);
		d->broken = 1;
		return false;
	}
	return true;
}

static struct vdev *disk(u64 n, const char *op)
{
	u32 i, k = 0;

	for (i = 0; i < ndevs; i++) {
		if (vdevs[i].type != VT_BLK)
			continue;
		if (k++ == n) {
			if (vdevs[i].broken) {
				fail("blk %s: disk %lu is not usable", op, n);
				return NULL;
			}
			return &vdevs[i];
		}
	}
	fail("blk %s: no disk %lu", op, n);
	return NULL;
}

static bool in_range(struct vdev *d, u64 n, u64 lba, u64 count, const char *op)
{
	if (lba > d->capacity || count > d->capacity - lba) {
		fail("blk %s disk=%lu: sectors %lu+%lu beyond capacity %lu", op, n, lba, count,
		     d->capacity);
		return false;
	}
	return true;
}

/*
 * The disk of guest.blk.OP=DISK:FIRST:COUNT[:...] (@n fields into @f), with the sectors in its
 * range; NULL (after a FAIL line) otherwise.
 */
static struct vdev *blk_target(const char *v, const char *op, u64 *f, u32 n, bool allow_zero)
{
	struct vdev *d;

	if (!parse_fields(v, f, n, allow_zero)) {
		fail("bad guest.blk.%s=%s", op, v);
		return NULL;
	}
	d = disk(f[0], op);
	return d && in_range(d, f[0], f[1], f[2], op) ? d : NULL;
}

static void op_verify(const char *v)
{
	u64 f[4];
	struct vdev *d = blk_target(v, "verify", f, 4, true);
	bool ok;

	if (!d)
		return;
	ok = run_job(VJ_BLK_VERIFY, d, f[1], f[2], f[3]);
	gprintf("GUEST blk verify disk=%lu sectors=%lu ", f[0], f[2]);
	if (!ok) {
		gprintf("error\n");
	} else if (vjob.status) {
		gprintf("bad at=%lu status=%s\n", vjob.at, status_name(vjob.status));
		fail("blk verify disk=%lu: request at sector %lu: %s", f[0], vjob.at,
		     status_name(vjob.status));
	} else if (vjob.at != ~0UL) {
		gprintf("bad at=%lu\n", vjob.at);
		fail("blk verify disk=%lu: data differs at sector %lu", f[0], vjob.at);
	} else {
		gprintf("ok\n");
	}
}

static void print_status(const char *what, bool ok)
{
	gprintf("%s", what);
	if (!ok)
		gprintf("error\n");
	else if (vjob.status)
		gprintf("%s at=%lu\n", status_name(vjob.status), vjob.at);
	else
		gprintf("ok\n");
}

static void op_write(const char *v)
{
	u64 f[4];
	struct vdev *d = blk_target(v, "write", f, 4, true);
	bool ok;

	if (!d)
		return;
	ok = run_job(VJ_BLK_WRITE, d, f[1], f[2], f[3]);
	gprintf("GUEST blk write disk=%lu sectors=%lu status=", f[0], f[2]);
	print_status("", ok);
	if (ok && vjob.status)
		fail("blk write disk=%lu: %s at sector %lu", f[0], status_name(vjob.status),
		     vjob.at);
	if (!ok)
		return;
	ok = run_job(VJ_BLK_FLUSH, d, 0, 0, 0);
	gprintf("GUEST blk flush disk=%lu status=%s\n", f[0],
		ok ? status_name(vjob.status) : "error");
	if (ok && vjob.status && has(d, VIRTIO_BLK_F_FLUSH))
		fail("blk flush disk=%lu: %s", f[0], status_name(vjob.status));
}

static void op_rotest(const char *v)
{
	u64 n;
	struct vdev *d;
	bool ok;

	if (!parse_fields(v, &n, 1, false)) {
		fail("bad guest.blk.rotest=%s", v);
		return;
	}
	d = disk(n, "rotest");
	if (!d || !in_range(d, n, 0, 1, "rotest"))
		return;
	ok = run_job(VJ_BLK_ROTEST, d, 0, 0, 0);
	gprintf("GUEST blk rotest disk=%lu status=%s\n", n,
		ok ? status_name(vjob.status) : "error");
	if (ok && vjob.status != VIRTIO_BLK_S_IOERR)
		fail("blk rotest disk=%lu: write status %s, expected ioerr", n,
		     status_name(vjob.status));
}

static void op_dwz(const char *v, bool zeroes)
{
	const char *name = zeroes ? "zeroes" : "discard";
	u64 f[3];
	struct vdev *d = blk_target(v, name, f, 3, false);
	bool ok;

	if (!d || !f[2])
		return;
	ok = run_job(zeroes ? VJ_BLK_ZEROES : VJ_BLK_DISCARD, d, f[1], f[2], 0);
	gprintf("GUEST blk %s disk=%lu sector=%lu count=%lu status=%s readback=%s\n", name, f[0],
		f[1], f[2], ok ? status_name(vjob.status) : "error",
		!ok || vjob.r[0] == 2 ? "none"
		: vjob.r[0]	      ? "nonzero"
				      : "zero");
	if (!ok)
		return;
	if (vjob.status && has(d, zeroes ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD))
		fail("blk %s disk=%lu: %s", name, f[0], status_name(vjob.status));
	if (zeroes && !vjob.status && vjob.r[0] == 1)
		fail("blk zeroes disk=%lu: sector %lu reads back non-zero", f[0], vjob.r[1]);
}

static void op_id(const char *v)
{
	u64 n;
	struct vdev *d;
	u32 i;
	u8 c;

	if (!parse_fields(v, &n, 1, false)) {
		fail("bad guest.blk.id=%s", v);
		return;
	}
	d = disk(n, "id");
	if (!d)
		return;
	if (!run_job(VJ_BLK_ID, d, 0, 0, 0))
		return;
	gprintf("GUEST blk id disk=%lu id=", n);
	for (i = 0; i < VIRTIO_BLK_ID_BYTES && !vjob.status && vjob.id[i]; i++) {
		c = (u8)vjob.id[i];
		if (c > 0x20 && c < 0x7f && c != '\\')
			uart_putc((char)c);
		else
			gprintf("\\x%02x", c);
	}
	uart_putc('\n');
	if (vjob.status)
		fail("blk id disk=%lu: %s", n, status_name(vjob.status));
}

static void op_rng(const char *v)
{
	u64 n;
	u32 i;
	struct vdev *d = NULL;

	if (!parse_fields(v, &n, 1, false) || !n) {
		fail("bad guest.rng=%s", v);
		return;
	}
	if (n > (u64)job_bufs * DATA_BUF_SIZE / 2) {
		fail("guest.rng=%lu: at most %lu bytes", n, (u64)job_bufs * DATA_BUF_SIZE / 2);
		return;
	}
	for (i = 0; i < ndevs && !d; i++) {
		if (vdevs[i].type == VT_RNG && !vdevs[i].broken)
			d = &vdevs[i];
	}
	if (!d) {
		fail("rng: no virtio-rng device");
		return;
	}
	if (!run_job(VJ_RNG, d, n, 0, 0))
		return;
	gprintf("GUEST rng bytes=%lu zero=%lu differ=%lu\n", n, vjob.r[0], vjob.r[1]);
	if (n >= 16 && (vjob.r[0] || !vjob.r[1]))
		fail("rng: %lu bytes %s", n, vjob.r[0] ? "all zero" : "the same twice");
}

static void op_bench(const char *v)
{
	static const char *const names[3] = {"seq_write_1m", "seq_read_1m", "rand_read_4k"};
	u64 f[2], bytes[3], khz = tsc_khz_known();
	struct vdev *d;
	u32 i;

	if (!parse_fields(v, f, 2, false) || !f[1]) {
		fail("bad guest.blk.bench=%s", v);
		return;
	}
	d = disk(f[0], "bench");
	if (!d || !in_range(d, f[0], 0, f[1] * 2048, "bench"))
		return;
	if (!run_job(VJ_BENCH, d, f[1], 0, 0))
		return;
	if (vjob.status) {
		fail("blk bench disk=%lu: %s at sector %lu", f[0], status_name(vjob.status),
		     vjob.at);
		return;
	}
	bytes[0] = bytes[1] = f[1] << 20;
	bytes[2] = f[1] << 20; /* MiB * 256 requests of 4 KiB */
	for (i = 0; i < 3; i++)
		gprintf("GUEST bench %s bytes=%lu tsc=%lu tsc_khz=%lu\n", names[i], bytes[i],
			vjob.r[i], khz);
}

/* Command-line operations, in command-line order. */
static void run_ops(void)
{
	static const struct {
		const char *key;
		void (*fn)(const char *v);
	} ops[] = {
		{"guest.blk.verify=", op_verify}, {"guest.blk.write=", op_write},
		{"guest.blk.rotest=", op_rotest}, {"guest.blk.id=", op_id},
		{"guest.rng=", op_rng},		  {"guest.blk.bench=", op_bench},
	};
	static char word[256];
	const char *p = bi.cmdline;
	u32 n, i;

	while (*p) {
		while (*p == ' ')
			p++;
		for (n = 0; p[n] && p[n] != ' '; n++) {
			if (n + 1 < sizeof(word))
				word[n] = p[n];
		}
		word[n < sizeof(word) ? n : sizeof(word) - 1] = '\0';
		p += n;
		if (has_prefix(word, "guest.blk.discard=")) {
			op_dwz(word + 18, false);
			continue;
		}
		if (has_prefix(word, "guest.blk.zeroes=")) {
			op_dwz(word + 17, true);
			continue;
		}
		if (net_op(word))
			continue;
		for (i = 0; i < ARRAY_SIZE(ops); i++) {
			if (has_prefix(word, ops[i].key)) {
				ops[i].fn(word + strlen(ops[i].key));
				break;
			}
		}
	}
}

static void print_dev(struct vdev *d)
{
	gprintf("GUEST virtio dev=%u id=%u type=%s offered=0x%lx features=0x%lx queue_size=%u "
		"event_idx=%u indirect=%u msix=%u mode=%s\n",
		d->slot, d->device_id, type_name(d->type), d->offered, d->features, d->vq.size,
		d->vq.event_idx, d->vq.indirect, d->msix_size, d->vq.irq_mode ? "irq" : "poll");
}

static void print_blk(struct vdev *d, u32 n)
{
	gprintf("GUEST blk %u slot=%u capacity=%lu ro=%u flush=%u discard=%u write_zeroes=%u\n", n,
		d->slot, d->capacity, has(d, VIRTIO_BLK_F_RO), has(d, VIRTIO_BLK_F_FLUSH),
		has(d, VIRTIO_BLK_F_DISCARD), has(d, VIRTIO_BLK_F_WRITE_ZEROES));
	gprintf("GUEST blk %u config size_max=%u seg_max=%u blk_size=%u max_discard_sectors=%u "
		"max_discard_seg=%u max_write_zeroes_sectors=%u max_write_zeroes_seg=%u "
		"req_sectors=%u depth=%u\n",
		n, d->size_max, d->seg_max, d->blk_size, d->max_discard_sectors, d->max_discard_seg,
		d->max_wz_sectors, d->max_wz_seg, d->req_sectors, d->depth);
}

/* A NIC keeps one data buffer for its rings' packet buffers: the last ones, in NIC order. */
static bool nic_place(struct vdev *d, u32 *nnic)
{
	if (d->type != VT_NET)
		return true;
	if (*nnic + 2 > arena_bufs) {
		fail("virtio dev=%u: no data buffer left for another NIC", d->slot);
		return false;
	}
	d->nic = (u8)*nnic;
	d->netbuf = arena + ARENA_RINGS + (u64)(arena_bufs - 1 - *nnic) * DATA_BUF_SIZE;
	(*nnic)++;
	job_bufs = arena_bufs - *nnic;
	return true;
}

void virtio_run(void)
{
	char opt[16];
	u32 i, nblk = 0, v, nnic = 0;
	bool ok[VIRTIO_MAX_DEVS];

	find_devices();
	if (!ndevs)
		return;
	irq_mode = cmdline_get("guest.virtio.irq=", opt, sizeof(opt)) && streq(opt, "1");
	feat_min = cmdline_get("guest.virtio.features=", opt, sizeof(opt)) && streq(opt, "min");
	if (!arena_place()) {
		fail("virtio: no %u MiB of usable RAM above 16 MiB for the DMA arena",
		     (ARENA_RINGS + ARENA_MIN_BUFS * DATA_BUF_SIZE) >> 20);
		return;
	}
	gprintf("GUEST virtio devices=%u arena=0x%lx size=0x%lx mode=%s features=%s\n", ndevs,
		arena, (u64)ARENA_RINGS + (u64)arena_bufs * DATA_BUF_SIZE,
		irq_mode ? "irq" : "poll", feat_min ? "min" : "all");
	apic_setup();
	if (cmdline_get("guest.virtio.reassign=", opt, sizeof(opt)) && streq(opt, "1")) {
		for (i = 0; i < ndevs; i++)
			bars_clear(&vdevs[i]);
	}

	for (i = 0; i < ndevs; i++) {
		struct vdev *d = &vdevs[i];

		ok[i] = d->type != VT_OTHER && nic_place(d, &nnic) && pci_caps(d) && dev_init(d);
		if (irq_mode && ok[i] && !d->vq.vector)
			fail("virtio dev=%u: no MSI-X, interrupt mode unavailable", d->slot);
		if (!ok[i]) {
			d->vq.size = 0;
			d->vq1.size = 0;
			d->broken = 1;
		}
		if (d->type == VT_BALLOON && ok[i] && !vballoon.present) {
			vballoon.present = 1;
			vballoon.dev = i;
		}
	}
	for (i = 0; i < ndevs; i++) { /* the NICs' buffers are not for block requests */
		if (vdevs[i].type == VT_BLK && vdevs[i].depth > job_bufs)
			vdevs[i].depth = job_bufs;
	}
	if (!run_job(VJ_INIT_QUEUES, NULL, 0, 0, 0))
		return;
	for (i = 0; i < ndevs; i++) {
		struct vdev *d = &vdevs[i];

		if (ok[i] && !queue_start(d))
			d->broken = 1;
		if (d->type == VT_OTHER)
			gprintf("GUEST virtio dev=%u id=%u type=other skipped\n", d->slot,
				d->device_id);
		else
			print_dev(d);
		if (d->type == VT_BLK && ok[i])
			print_blk(d, nblk);
		nblk += d->type == VT_BLK;
		if (d->type == VT_NET && ok[i] && !d->broken)
			net_print(d);
	}
	net_start_all();

	run_ops();
	net_print_stats();

	if (irq_mode)
		gprintf("GUEST virtio irq_waits=%u\n", irq_waits);
	for (i = 0; i < ndevs; i++) {
		struct vdev *d = &vdevs[i];

		if (d->vq.vector)
			gprintf("GUEST msix dev=%u queue=0 vector=%u count=%u\n", d->slot,
				d->vq.vector, irq_count[d->vq.vector]);
		if (d->cfg_vector)
			gprintf("GUEST msix dev=%u config vector=%u count=%u\n", d->slot,
				d->cfg_vector, irq_count[d->cfg_vector]);
	}
	for (v = 32; v < 256; v++) {
		if (!irq_count[v] || v == VEC_TIMER || v == VEC_SPURIOUS ||
		    (v >= VEC_QUEUE_BASE && v < VEC_QUEUE_BASE + ndevs) ||
		    (v >= VEC_CONFIG_BASE && v < VEC_CONFIG_BASE + ndevs &&
		     vdevs[v - VEC_CONFIG_BASE].cfg_vector == v))
			continue;
		fail("unexpected interrupt vector=%u count=%u", v, irq_count[v]);
	}
}
