/*
 * Ring 0 part of guest.touch, guest.balloon and guest.run=forever: the
 * page pool, the jobs and the output lines. The pages themselves are only
 * ever written from ring 3 (uballoon.c).
 */
#include "virtio.h"

#define POOL_LOW  0x200000UL	/* the image, page tables and stacks are below */
#define POOL_HIGH 0x100000000UL /* ring 3 can reach the first 4 GiB only */
#define TICK_US	  100000UL

static u64 hole_start[2], hole_end[2];
static u32 nholes;

/* [a, b) minus the holes from h on, 4 KiB aligned, appended to the pool. */
static void pool_add(u64 a, u64 b, u32 h)
{
	struct vballoon *p = &vballoon;

	a = (a + 0xfff) & ~0xfffUL;
	b &= ~0xfffUL;
	if (a >= b)
		return;
	for (; h < nholes; h++) {
		if (hole_start[h] < b && a < hole_end[h]) {
			pool_add(a, hole_start[h], h + 1);
			pool_add(hole_end[h], b, h + 1);
			return;
		}
	}
	if (p->nranges >= POOL_MAX_RANGES)
		return;
	p->start[p->nranges] = a;
	p->pages[p->nranges] = (b - a) >> VIRTIO_BALLOON_PFN_SHIFT;
	p->pool_pages += p->pages[p->nranges];
	p->nranges++;
}

/* Usable RAM in [2 MiB, 4 GiB) minus the DMA arena and the initrd, mapped for ring 3. */
static bool pool_build(void)
{
	u64 a, b;
	u32 i;

	nholes = 0;
	if (arena_size) {
		hole_start[nholes] = arena;
		hole_end[nholes++] = arena + arena_size;
	}
	if (bi.initrd_size) {
		hole_start[nholes] = bi.initrd_addr;
		hole_end[nholes++] = bi.initrd_addr + bi.initrd_size;
	}
	for (i = 0; i < bi.e820_count; i++) {
		const struct e820_entry *e = &bi.e820[i];

		if (e->type != 1)
			continue;
		a = e->addr < POOL_LOW ? POOL_LOW : e->addr;
		b = e->addr + e->size > POOL_HIGH ? POOL_HIGH : e->addr + e->size;
		if (a < b)
			pool_add(a, b, 0);
	}
	for (i = 0; i < vballoon.nranges; i++) {
		if (!user_map(vballoon.start[i], vballoon.pages[i] << VIRTIO_BALLOON_PFN_SHIFT)) {
			fail("balloon: cannot map 0x%lx for ring 3", vballoon.start[i]);
			return false;
		}
	}
	vballoon.tick = tsc_ticks_us(TICK_US);
	return true;
}

static void print_balloon(void)
{
	gprintf("GUEST balloon target_pages=%lu actual_pages=%lu\n", vjob.r[1], vjob.r[2]);
}

void balloon_run(void)
{
	char opt[8];
	bool bal = cmdline_get("guest.balloon=", opt, sizeof(opt)) && streq(opt, "1");
	bool touch = cmdline_get("guest.touch=", opt, sizeof(opt)) ? streq(opt, "1") : bal;
	struct vdev *d;

	if (bal && !vballoon.present) {
		fail("guest.balloon=1: no usable virtio-balloon device");
		bal = false;
	}
	if (!bal && !touch)
		return;
	if (!pool_build())
		return;
	if (touch) {
		if (!run_job(VJ_TOUCH, NULL, 0, 0, 0))
			return;
		gprintf("GUEST touch pages=%lu mib=%lu\n", vjob.r[0], vjob.r[0] >> 8);
	}
	if (!bal)
		return;
	d = &vdevs[vballoon.dev];
	vballoon.enabled = 1;
	gprintf("GUEST balloon slot=%u pool_pages=%lu config_irq=%u\n", d->slot,
		vballoon.pool_pages, d->cfg_vector ? 1 : 0);
	if (!run_job(VJ_BALLOON, d, 0, 0, 0)) {
		vballoon.enabled = 0;
		return;
	}
	print_balloon();
}

/*
 * guest.run=forever: "GUEST tick <n>" every ~100 ms (TSC) until the VMM
 * stops the guest. In between, a ring-3 job answers ARP / ICMP on the NICs
 * with an address and follows the balloon, waiting in ring 0 (sti; hlt)
 * for interrupts when there is nothing to do. After a pause (the VM was
 * suspended) the ticks go on from the current time, without a burst.
 */
NORETURN void counter_run(void)
{
	u64 period = tsc_ticks_us(TICK_US), next, t, n = 1, a[5] = {0, 0, 0, 0, 0};
	bool service = false;
	u32 i;

	for (i = 0; i < ndevs; i++) {
		if (vdevs[i].type == VT_NET && vdevs[i].ip && !vdevs[i].broken)
			service = true;
	}
	if (vballoon.present && vballoon.enabled)
		service = true;
	if (!vballoon.tick)
		vballoon.tick = period;
	gprintf("GUEST run forever\n");
	next = rdtsc() + period;
	for (;;) {
		if (service) {
			a[0] = next;
			if (!run_job5(VJ_SERVICE, NULL, a)) {
				service = false; /* FAIL printed; ticks go on */
			} else if (vjob.r[0]) {
				print_balloon();
				continue;
			}
		} else {
			wait_until(next);
		}
		t = rdtsc();
		if ((long)(t - next) < 0)
			continue;
		gprintf("GUEST tick %lu\n", n++);
		next += period;
		if ((long)(t - next) >= 0)
			next = t + period;
	}
}
