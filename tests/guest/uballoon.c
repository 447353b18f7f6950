/*
 * Ring 3: touching the free RAM (guest.touch), the virtio-balloon driver
 * (inflateq 0, deflateq 1) and the counter mode's service job. Built as
 * guest-user-balloon.o, linked into the user pages.
 *
 * The pool (ranges from ring 0) is used from the top: balloon page i is
 * the i-th page counted down from the highest one, so the balloon always
 * holds pages [0, inflated) and deflating gives back the last ones taken.
 */
#include "uvirtio.h"

struct vballoon vballoon;

/* The PFN of pool page i (0: the highest page). */
static u64 pool_pfn(u64 i)
{
	struct vballoon *b = &vballoon;
	u32 k;

	for (k = b->nranges; k-- > 0;) {
		if (i < b->pages[k])
			return (b->start[k] >> VIRTIO_BALLOON_PFN_SHIFT) + b->pages[k] - 1 - i;
		i -= b->pages[k];
	}
	return 0;
}

/* One byte per page, so the host has to back it. */
static void touch_page(u64 pfn)
{
	*(volatile u8 *)(pfn << VIRTIO_BALLOON_PFN_SHIFT) = (u8)(pfn | 1);
}

static void job_touch(void)
{
	struct vballoon *b = &vballoon;
	u64 p, base;
	u32 k;

	for (k = 0; k < b->nranges; k++) {
		base = b->start[k] >> VIRTIO_BALLOON_PFN_SHIFT;
		for (p = 0; p < b->pages[k]; p++)
			touch_page(base + p);
	}
	b->touched = b->pool_pages;
	vjob.r[0] = b->pool_pages;
}

/* One request: the PFNs of pool pages [first, first + n) to queue q; -1 on error. */
static int bal_request(struct vdev *d, struct vq *q, u64 first, u32 n)
{
	u32 *pfn = (u32 *)q->slots, k, len;
	struct vdesc t;
	u16 s;
	int r;

	for (k = 0; k < n; k++) /* ascending PFNs: contiguous runs for the device */
		pfn[k] = (u32)pool_pfn(first + n - 1 - k);
	t.addr = (u64)pfn;
	t.len = n * 4;
	t.flags = 0;
	t.next = 0;
	if (vq_submit(q, 0, &t, 1) < 0) {
		vjob.err = VE_TOO_BIG;
		return -1;
	}
	vq_kick(q);
	for (;;) {
		if (vq_wait(d, q) < 0)
			return -1;
		r = vq_get(q, &s, &len);
		if (r < 0) {
			d->broken = 1;
			return -1;
		}
		if (r > 0)
			return 0;
	}
}

static u32 bal_target(struct vdev *d)
{
	return rd32(d->devcfg + VIRTIO_BALLOON_CFG_NUM_PAGES);
}

/*
 * Follow num_pages until `actual` equals it (or the pool is used up).
 * 1: there is a new (target, actual) to print (r[1], r[2]), 0: nothing new, -1: error.
 */
static int bal_follow(void)
{
	struct vballoon *b = &vballoon;
	struct vdev *d = &vdevs[b->dev];
	u64 want, k;
	u32 n;

	if (d->broken)
		return 0;
	for (;;) {
		b->target = bal_target(d);
		want = min64(b->target, b->pool_pages);
		if (b->inflated < want) {
			n = (u32)min64(BALLOON_BATCH, want - b->inflated);
			if (bal_request(d, &d->vq, b->inflated, n) < 0)
				return -1;
			b->inflated += n;
		} else if (b->inflated > want) {
			n = (u32)min64(BALLOON_BATCH, b->inflated - want);
			if (bal_request(d, &d->vq1, b->inflated - n, n) < 0)
				return -1;
			b->inflated -= n;
			for (k = 0; k < n; k++) /* ours again: use them */
				touch_page(pool_pfn(b->inflated + k));
		} else {
			break;
		}
		wr32(d->devcfg + VIRTIO_BALLOON_CFG_ACTUAL, b->inflated);
	}
	vjob.r[1] = b->target;
	vjob.r[2] = b->inflated;
	if (b->shown && b->shown_target == b->target && b->shown_actual == b->inflated)
		return 0;
	b->shown = 1;
	b->shown_target = b->target;
	b->shown_actual = b->inflated;
	return 1;
}

/* guest.touch / guest.balloon outside the counter: r[0] as the job says */
void balloon_job(void)
{
	int r;

	if (vjob.op == VJ_TOUCH) {
		job_touch();
		return;
	}
	r = bal_follow();
	vjob.r[0] = r > 0;
	vballoon.cfg_polled = rdtsc();
	if (vballoon.dev < VIRTIO_MAX_DEVS && vdevs[vballoon.dev].cfg_vector)
		vballoon.cfg_seen = irq_count[vdevs[vballoon.dev].cfg_vector];
}

/*
 * Re-read num_pages on the first call of a service job (so at least every
 * ~100 ms), on a configuration change interrupt, and every vballoon.tick
 * without one.
 */
static int bal_service(bool first)
{
	struct vballoon *b = &vballoon;
	struct vdev *d = &vdevs[b->dev];
	u32 seen = d->cfg_vector ? irq_count[d->cfg_vector] : 0;
	u64 t = rdtsc();

	if (!first && seen == b->cfg_seen && (d->cfg_vector || t - b->cfg_polled < b->tick))
		return 0;
	b->cfg_seen = seen;
	b->cfg_polled = t;
	return bal_follow();
}

/*
 * Counter mode, one period: answer ARP / ICMP on the NICs with an address
 * and follow the balloon until the deadline (arg[0], TSC). Waits in ring 0
 * for device interrupts (receive queues armed, the balloon's configuration
 * vector) when there is nothing to do. Returns early with r[0] = 1 when
 * there is a balloon line to print (r[1] target, r[2] actual).
 */
void service_job(void)
{
	struct vballoon *b = &vballoon;
	u64 deadline = vjob.arg[0], wake;
	bool first = true, nets = net_any(), bal = b->present && b->enabled;
	int r;

	for (;;) {
		if (nets && net_service(rdtsc(), false) < 0)
			return;
		if (bal) {
			r = bal_service(first);
			if (r < 0)
				return;
			if (r > 0) {
				vjob.r[0] = 1;
				return;
			}
		}
		first = false;
		if ((long)(rdtsc() - deadline) >= 0)
			return;
		wake = deadline;
		if (bal && !vdevs[b->dev].cfg_vector && b->cfg_polled + b->tick < wake)
			wake = b->cfg_polled + b->tick;
		if (nets) {
			if (net_service(wake, true) < 0)
				return;
		} else {
			usys_wait_any(irq_total, wake);
		}
	}
}
