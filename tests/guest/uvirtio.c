/*
 * Ring 3: split virtqueues, virtio-blk and virtio-rng requests, the data
 * pattern, benchmarks. Linked into the user pages (it is built as
 * guest-user-virtio.o) and self-contained: it calls nothing outside this
 * file, touches only its own data, the DMA arena and the devices' notify /
 * common configuration registers, all mapped user-accessible by ring 0.
 *
 * A job starts at uvirtio_main() (ring 0's user_call) with vjob filled in
 * and ends with ud2. In interrupt mode ring 3 asks ring 0 to wait for an
 * MSI-X vector: it fills usys and executes ud2; ring 0 waits (sti; hlt),
 * clears usys.op and resumes ring 3 after the ud2.
 */
#include "uvirtio.h"

struct vdev vdevs[VIRTIO_MAX_DEVS];
struct vjob vjob;
struct usys usys;
volatile u32 irq_count[256];
volatile u32 irq_total;

/* ---- the data pattern (tests/guest/pattern.py implements the same) ----
 *
 * mix64(z) = splitmix64's finaliser of z + 0x9e3779b97f4a7c15.
 * key = mix64(seed); the 8-byte little-endian word k (0..63) of sector lba:
 *     mix64(key ^ lba) ^ mix64(~key ^ k)
 */
static u64 pat_key, pat_off[SECTOR / 8];
static bool pat_zero;

u64 mix64(u64 z)
{
	z += 0x9e3779b97f4a7c15UL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
	return z ^ (z >> 31);
}

void pat_init(u64 seed)
{
	u32 k;

	pat_zero = seed == SEED_ZERO;
	pat_key = mix64(seed);
	for (k = 0; k < SECTOR / 8; k++)
		pat_off[k] = pat_zero ? 0 : mix64(~pat_key ^ k);
}

void pat_fill(u64 *p, u64 lba, u64 n)
{
	u64 s, a;
	u32 k;

	for (s = 0; s < n; s++) {
		a = pat_zero ? 0 : mix64(pat_key ^ (lba + s));
		for (k = 0; k < SECTOR / 8; k++)
			*p++ = a ^ pat_off[k];
	}
}

/* Index of the first sector in [0, n) that differs from the pattern, or n. */
static u64 pat_check(const u64 *p, u64 lba, u64 n)
{
	u64 s, a, diff;
	u32 k;

	for (s = 0; s < n; s++) {
		a = pat_zero ? 0 : mix64(pat_key ^ (lba + s));
		diff = 0;
		for (k = 0; k < SECTOR / 8; k++)
			diff |= *p++ ^ a ^ pat_off[k];
		if (diff)
			return s;
	}
	return n;
}

/* ---- split virtqueue ---- */

static inline struct vdesc *vq_desc(struct vq *q)
{
	return (struct vdesc *)q->desc;
}

static inline u16 *vq_headslot(struct vq *q)
{
	return (u16 *)q->headslot;
}

static inline u64 vq_used_event(struct vq *q)
{
	return q->avail + 4 + 2 * (u64)q->size;
}

static inline u64 vq_avail_event(struct vq *q)
{
	return q->used + 4 + 8 * (u64)q->size;
}

/* Zero the rings, chain all descriptors into the free list. */
void vq_init(struct vq *q)
{
	u64 *p = (u64 *)q->desc, *end = (u64 *)(q->headslot + 2 * (u64)q->size);
	struct vdesc *d = vq_desc(q);
	u16 i;

	while (p < end)
		*p++ = 0;
	for (i = 0; i < q->size; i++) {
		d[i].next = (u16)(i + 1);
		vq_headslot(q)[i] = 0xffff;
	}
	q->free_head = 0;
	q->num_free = q->size;
	q->avail_idx = q->kicked_idx = q->last_used = 0;
	/* polling: no used buffer notifications (flags bit, or an event index already passed) */
	wr16(q->avail, !q->event_idx && !q->irq_mode ? VRING_AVAIL_F_NO_INTERRUPT : 0);
	wr16(vq_used_event(q), q->irq_mode ? 0 : 0xffff);
}

/*
 * Make the n descriptors in t (the slot's table: addr, len, WRITE flag)
 * available as one request of slot s: through one INDIRECT descriptor when
 * negotiated, else as a chain from the free list. -1: not enough room.
 */
int vq_submit(struct vq *q, u16 s, struct vdesc *t, u16 n)
{
	struct vdesc *desc = vq_desc(q), *d;
	u16 head, idx, i;

	if (q->indirect && n > 1) {
		if (!q->num_free)
			return -1;
		for (i = 0; i < n; i++) {
			if (i + 1 < n) {
				t[i].flags |= VRING_DESC_F_NEXT;
				t[i].next = (u16)(i + 1);
			} else {
				t[i].next = 0;
			}
		}
		head = q->free_head;
		d = &desc[head];
		q->free_head = d->next;
		q->num_free--;
		d->addr = (u64)t;
		d->len = (u32)n * sizeof(struct vdesc);
		d->flags = VRING_DESC_F_INDIRECT;
	} else {
		if (n > q->num_free || n > q->size)
			return -1;
		head = idx = q->free_head;
		for (i = 0; i < n; i++) {
			d = &desc[idx];
			d->addr = t[i].addr;
			d->len = t[i].len;
			/* d->next already links to the next free descriptor */
			d->flags = (u16)(t[i].flags | (i + 1 < n ? VRING_DESC_F_NEXT : 0));
			idx = d->next;
		}
		q->free_head = idx;
		q->num_free = (u16)(q->num_free - n);
	}
	vq_headslot(q)[head] = s;
	wr16(q->avail + 4 + 2 * (u64)(q->avail_idx & (q->size - 1)), head);
	barrier(); /* x86 keeps stores in order: ring entry, then idx */
	q->avail_idx++;
	wr16(q->avail + 2, q->avail_idx);
	return 0;
}

/* Notify the device of what was made available since the last kick, if it wants to know. */
void vq_kick(struct vq *q)
{
	u16 new = q->avail_idx, old = q->kicked_idx, ev;

	if (new == old)
		return;
	q->kicked_idx = new;
	mb(); /* publish avail idx before reading the device's suppression state */
	if (q->event_idx) {
		ev = rd16(vq_avail_event(q));
		if ((u16)(new - ev - 1) >= (u16)(new - old))
			return;
	} else if (rd16(q->used) & VRING_USED_F_NO_NOTIFY) {
		return;
	}
	wr16(q->notify, q->index);
}

/* Take one used element: 1 (slot, len set), 0 none, -1 bad id (vjob.err set). */
int vq_get(struct vq *q, u16 *slot, u32 *len)
{
	struct vdesc *desc = vq_desc(q);
	u16 uidx = rd16(q->used + 2), i, n;
	volatile u32 *e;
	u32 id;

	if (uidx == q->last_used)
		return 0;
	barrier(); /* x86 keeps loads in order: idx, then the element */
	e = (volatile u32 *)(q->used + 4 + 8 * (u64)(q->last_used & (q->size - 1)));
	id = e[0];
	*len = e[1];
	if (id >= q->size || vq_headslot(q)[id] == 0xffff) {
		vjob.err = VE_BAD_ID;
		vjob.r[7] = id;
		return -1;
	}
	for (i = (u16)id, n = 1; desc[i].flags & VRING_DESC_F_NEXT; n++) {
		i = desc[i].next;
		if (n > q->size) {
			vjob.err = VE_BAD_ID;
			return -1;
		}
	}
	desc[i].next = q->free_head;
	q->free_head = (u16)id;
	q->num_free = (u16)(q->num_free + n);
	*slot = vq_headslot(q)[id];
	vq_headslot(q)[id] = 0xffff;
	q->last_used++;
	if (q->event_idx && !q->irq_mode)
		wr16(vq_used_event(q), (u16)(q->last_used - 1)); /* keep it behind: no interrupts */
	return 1;
}

/* Ask ring 0 to wait (sti; hlt) until irq_count[vector] != seen or the deadline. */
void usys_wait(u32 vector, u32 seen, u64 deadline)
{
	usys.vector = vector;
	usys.seen = seen;
	usys.deadline = deadline;
	barrier();
	usys.op = USYS_WAIT;
	__asm__ volatile("ud2" ::: "memory");
}

/* The same until irq_total != seen (an interrupt on any device vector). */
void usys_wait_any(u32 seen, u64 deadline)
{
	usys.vector = 0;
	usys.seen = seen;
	usys.deadline = deadline;
	barrier();
	usys.op = USYS_WAIT_ANY;
	__asm__ volatile("ud2" ::: "memory");
}

void vq_arm(struct vq *q)
{
	if (q->event_idx)
		wr16(vq_used_event(q), q->last_used); /* interrupt on the next entry */
	else
		wr16(q->avail, 0);
}

void vq_disarm(struct vq *q)
{
	if (q->irq_mode)
		return;
	if (q->event_idx)
		wr16(vq_used_event(q), (u16)(q->last_used - 1));
	else
		wr16(q->avail, VRING_AVAIL_F_NO_INTERRUPT);
}

/* Wait until the used ring has something: spin (polling) or via ring 0 (interrupts). */
int vq_wait(struct vdev *d, struct vq *q)
{
	u64 start = rdtsc(), timeout = vjob.tsc_timeout;
	u32 seen;

	for (;;) {
		if (rd16(q->used + 2) != q->last_used)
			return 0;
		if (q->irq_mode) {
			seen = irq_count[q->vector];
			if (q->event_idx)
				wr16(vq_used_event(q),
				     q->last_used); /* interrupt on the next entry */
			mb();
			if (rd16(q->used + 2) != q->last_used)
				return 0;
			usys_wait(q->vector, seen, start + timeout);
		} else {
			cpu_relax();
		}
		if (rdtsc() - start > timeout) {
			vjob.err = rd8(d->common + VCC_STATUS) & VIRTIO_S_NEEDS_RESET
					   ? VE_NEEDS_RESET
					   : VE_TIMEOUT;
			d->broken = 1;
			return -1;
		}
	}
}

/* ---- virtio-blk ---- */

static inline u64 slot_addr(struct vdev *d, u16 s)
{
	return d->vq.slots + (u64)s * SLOT_SIZE;
}

static inline u64 buf_addr(u16 s)
{
	return vjob.data + (u64)s * DATA_BUF_SIZE;
}

/* Fill slot s's table with header, data segments and status; returns the count. */
static u16 blk_build(struct vdev *d, u16 s, u32 type, u64 lba, u64 data, u32 len, bool in)
{
	u64 sa = slot_addr(d, s);
	struct vdesc *t = (struct vdesc *)(sa + SLOT_ITABLE);
	u16 n = 0;
	u32 c;

	*(u32 *)(sa + SLOT_HDR) = type;
	*(u32 *)(sa + SLOT_HDR + 4) = 0;
	*(u64 *)(sa + SLOT_HDR + 8) = lba;
	*(volatile u8 *)(sa + SLOT_STATUS) = 0xff;
	t[n].addr = sa + SLOT_HDR;
	t[n].len = 16;
	t[n++].flags = 0;
	while (len) {
		c = len < d->seg_bytes ? len : d->seg_bytes;
		t[n].addr = data;
		t[n].len = c;
		t[n++].flags = in ? VRING_DESC_F_WRITE : 0;
		data += c;
		len -= c;
	}
	t[n].addr = sa + SLOT_STATUS;
	t[n].len = 1;
	t[n++].flags = VRING_DESC_F_WRITE;
	return n;
}

static inline u8 blk_status(struct vdev *d, u16 s)
{
	return rd8(slot_addr(d, s) + SLOT_STATUS);
}

static void note_status(u8 st, u64 lba)
{
	if (st == VIRTIO_BLK_S_OK)
		return;
	if (!vjob.status)
		vjob.status = st;
	if (lba < vjob.at)
		vjob.at = lba;
}

/* One request in slot 0, waited for. 0: done (status in *st), -1: driver error. */
static int blk_one(struct vdev *d, u32 type, u64 lba, u64 data, u32 len, bool in, u8 *st)
{
	struct vq *q = &d->vq;
	u16 n = blk_build(d, 0, type, lba, data, len, in), s;
	u32 ulen;
	int r;

	if (vq_submit(q, 0, (struct vdesc *)(slot_addr(d, 0) + SLOT_ITABLE), n) < 0) {
		vjob.err = VE_TOO_BIG;
		return -1;
	}
	vq_kick(q);
	for (;;) {
		if (vq_wait(d, q) < 0)
			return -1;
		r = vq_get(q, &s, &ulen);
		if (r < 0)
			return -1;
		if (r > 0)
			break;
	}
	*st = blk_status(d, 0);
	if (*st == 0xff)
		vjob.err = VE_NO_STATUS;
	return 0;
}

enum smode {
	SM_VERIFY,    /* read, check the pattern */
	SM_WRITE,     /* write the pattern */
	SM_RAW_READ,  /* read, no check (bench) */
	SM_RAW_WRITE, /* write whatever the buffers hold (bench) */
	SM_RAND_READ, /* 4 KiB reads at random 4 KiB-aligned sectors of [lba, lba + span) (bench) */
};

struct sreq {
	u64 lba;
	u32 nsect;
	u32 busy;
};

static struct sreq sreq[VQ_SLOTS];

/*
 * count sectors from lba (SM_RAND_READ: count requests over span sectors),
 * in requests of up to d->req_sectors, up to d->depth in flight. Failed
 * requests and pattern mismatches go to vjob.status / vjob.at.
 */
static int blk_stream(struct vdev *d, u32 mode, u64 lba, u64 count, u64 span)
{
	struct vq *q = &d->vq;
	bool rnd = mode == SM_RAND_READ, in = mode != SM_WRITE && mode != SM_RAW_WRITE;
	u32 depth = d->depth < vjob.nbufs ? d->depth : vjob.nbufs, inflight = 0, ulen, nsect;
	u64 next = 0, l = 0, bad, rstate = 0x5eed;
	bool have = false;
	u16 s, n;
	int r;

	if (!depth)
		depth = 1;
	for (s = 0; s < VQ_SLOTS; s++)
		sreq[s].busy = 0;
	while (next < count || inflight) {
		while (next < count && inflight < depth) {
			for (s = 0; s < depth && sreq[s].busy; s++)
				;
			if (rnd) {
				if (!have)
					l = lba + (mix64(rstate++) % (span / 8)) * 8;
				nsect = 8;
			} else {
				l = lba + next;
				nsect = (u32)min64(d->req_sectors, count - next);
			}
			have = true;
			if (mode == SM_WRITE)
				pat_fill((u64 *)buf_addr(s), l, nsect);
			n = blk_build(d, s, in ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, l, buf_addr(s),
				      nsect * SECTOR, in);
			if (vq_submit(q, s, (struct vdesc *)(slot_addr(d, s) + SLOT_ITABLE), n) <
			    0) {
				if (!inflight) {
					vjob.err = VE_TOO_BIG;
					return -1;
				}
				break;
			}
			have = false;
			sreq[s].lba = l;
			sreq[s].nsect = nsect;
			sreq[s].busy = 1;
			next += rnd ? 1 : nsect;
			inflight++;
		}
		vq_kick(q);
		if (vq_wait(d, q) < 0)
			return -1;
		while ((r = vq_get(q, &s, &ulen)) > 0) {
			u8 st = blk_status(d, s);

			if (s >= depth || !sreq[s].busy) {
				vjob.err = VE_BAD_ID;
				return -1;
			}
			inflight--;
			sreq[s].busy = 0;
			if (st == 0xff)
				vjob.err = VE_NO_STATUS;
			if (st != VIRTIO_BLK_S_OK) {
				note_status(st, sreq[s].lba);
			} else if (mode == SM_VERIFY) {
				bad = pat_check((const u64 *)buf_addr(s), sreq[s].lba,
						sreq[s].nsect);
				if (bad < sreq[s].nsect && sreq[s].lba + bad < vjob.at)
					vjob.at = sreq[s].lba + bad;
			}
		}
		if (r < 0)
			return -1;
	}
	return 0;
}

/* Discard / write zeroes of [lba, lba + count): requests of at most max sectors, one segment. */
static int blk_dwz(struct vdev *d, u32 type, u64 lba, u64 count, u32 max)
{
	u64 sa = slot_addr(d, 0);
	u32 n;
	u8 st;

	if (!max)
		max = 0xffffffffu;
	do {
		n = (u32)min64(count, max);
		*(u64 *)(sa + SLOT_SEG) = lba;
		*(u32 *)(sa + SLOT_SEG + 8) = n;
		*(u32 *)(sa + SLOT_SEG + 12) = 0; /* unmap = 0 */
		if (blk_one(d, type, 0, sa + SLOT_SEG, 16, false, &st) < 0)
			return -1;
		note_status(st, lba);
		if (st != VIRTIO_BLK_S_OK)
			return 0;
		lba += n;
		count -= n;
	} while (count);
	return 0;
}

#define READBACK_MAX 131072 /* sectors read back after discard / write zeroes */

static void job_blk(struct vdev *d)
{
	struct vjob *j = &vjob;
	u64 sa = slot_addr(d, 0), t0, i;
	u8 st = 0;
	int r = 0;

	switch (j->op) {
	case VJ_BLK_VERIFY: /* arg: lba, count, seed */
		pat_init(j->arg[2]);
		r = blk_stream(d, SM_VERIFY, j->arg[0], j->arg[1], 0);
		break;
	case VJ_BLK_WRITE:
		pat_init(j->arg[2]);
		r = blk_stream(d, SM_WRITE, j->arg[0], j->arg[1], 0);
		break;
	case VJ_BLK_FLUSH:
		r = blk_one(d, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, &st);
		note_status(st, 0);
		break;
	case VJ_BLK_ROTEST: /* one sector of pattern 0 at sector 0 */
		pat_init(0);
		pat_fill((u64 *)buf_addr(0), 0, 1);
		r = blk_one(d, VIRTIO_BLK_T_OUT, 0, buf_addr(0), SECTOR, false, &st);
		note_status(st, 0);
		break;
	case VJ_BLK_DISCARD:
	case VJ_BLK_ZEROES: /* arg: lba, count; r[0]: readback 0 zero, 1 not zero, 2 not read */
		j->r[0] = 2;
		r = blk_dwz(d,
			    j->op == VJ_BLK_DISCARD ? VIRTIO_BLK_T_DISCARD
						    : VIRTIO_BLK_T_WRITE_ZEROES,
			    j->arg[0], j->arg[1],
			    j->op == VJ_BLK_DISCARD ? d->max_discard_sectors : d->max_wz_sectors);
		if (r == 0 && !j->status) {
			pat_init(SEED_ZERO);
			r = blk_stream(d, SM_VERIFY, j->arg[0], min64(j->arg[1], READBACK_MAX), 0);
			if (r == 0 && !j->status) {
				j->r[0] = j->at != ~0UL;
				j->r[1] = j->at;
				j->at = ~0UL;
			}
		}
		break;
	case VJ_BLK_ID:
		for (i = 0; i < VIRTIO_BLK_ID_BYTES; i++)
			*(u8 *)(sa + SLOT_ID + i) = 0;
		r = blk_one(d, VIRTIO_BLK_T_GET_ID, 0, sa + SLOT_ID, VIRTIO_BLK_ID_BYTES, true,
			    &st);
		note_status(st, 0);
		for (i = 0; i < VIRTIO_BLK_ID_BYTES; i++)
			j->id[i] = (char)rd8(sa + SLOT_ID + i);
		j->id[VIRTIO_BLK_ID_BYTES] = '\0';
		break;
	case VJ_BENCH: /* arg: MiB; r[0..2]: TSC ticks of seq. write, seq. read, random reads */
		t0 = rdtsc();
		r = blk_stream(d, SM_RAW_WRITE, 0, j->arg[0] * 2048, 0);
		j->r[0] = rdtsc() - t0;
		if (r == 0) {
			t0 = rdtsc();
			r = blk_stream(d, SM_RAW_READ, 0, j->arg[0] * 2048, 0);
			j->r[1] = rdtsc() - t0;
		}
		if (r == 0) {
			t0 = rdtsc();
			r = blk_stream(d, SM_RAND_READ, 0, j->arg[0] * 256, j->arg[0] * 2048);
			j->r[2] = rdtsc() - t0;
		}
		break;
	default:
		break;
	}
	(void)r;
}

/* ---- virtio-rng ---- */

static int rng_read(struct vdev *d, u64 buf, u64 n)
{
	struct vq *q = &d->vq;
	struct vdesc *t = (struct vdesc *)(slot_addr(d, 0) + SLOT_ITABLE);
	u64 got = 0;
	u32 len, empty = 0;
	u16 s;
	int r;

	while (got < n) {
		t[0].addr = buf + got;
		t[0].len = (u32)min64(n - got, 0x10000);
		t[0].flags = VRING_DESC_F_WRITE;
		if (vq_submit(q, 0, t, 1) < 0) {
			vjob.err = VE_TOO_BIG;
			return -1;
		}
		vq_kick(q);
		for (;;) {
			if (vq_wait(d, q) < 0)
				return -1;
			r = vq_get(q, &s, &len);
			if (r < 0)
				return -1;
			if (r > 0)
				break;
		}
		if (!len && ++empty >= 3) {
			vjob.err = VE_RNG_EMPTY;
			return -1;
		}
		got += min64(len, t[0].len);
	}
	return 0;
}

/* arg: bytes; r[0]: all bytes of both reads zero, r[1]: the two reads differ */
static void job_rng(struct vdev *d)
{
	u64 n = vjob.arg[0], i;
	const u8 *a = (const u8 *)vjob.data, *b = a + n;
	bool zero = true, differ = false;

	if (rng_read(d, (u64)a, n) < 0 || rng_read(d, (u64)b, n) < 0)
		return;
	for (i = 0; i < n; i++) {
		zero &= !a[i] && !b[i];
		differ |= a[i] != b[i];
	}
	vjob.r[0] = zero;
	vjob.r[1] = differ;
}

void uvirtio_main(void)
{
	struct vjob *j = &vjob;
	u32 i;

	j->status = 0;
	j->err = VE_NONE;
	j->at = ~0UL;
	for (i = 0; i < ARRAY_SIZE(j->r); i++)
		j->r[i] = 0;
	switch (j->op) {
	case VJ_INIT_QUEUES:
		for (i = 0; i < j->ndevs; i++) {
			if (vdevs[i].vq.size)
				vq_init(&vdevs[i].vq);
			if (vdevs[i].vq1.size)
				vq_init(&vdevs[i].vq1);
		}
		break;
	case VJ_RNG:
		job_rng(&vdevs[j->dev]);
		break;
	case VJ_NET_START:
	case VJ_NET_PING:
	case VJ_NET_UDP:
	case VJ_NET_RECV:
	case VJ_NET_BULK_TX:
	case VJ_NET_BULK_RX:
	case VJ_NET_BLAST_TX:
	case VJ_NET_SINK:
		net_job();
		break;
	case VJ_TOUCH:
	case VJ_BALLOON:
		balloon_job();
		break;
	case VJ_SERVICE:
		service_job();
		break;
	default:
		job_blk(&vdevs[j->dev]);
		break;
	}
	j->done = 1;
	__asm__ volatile("ud2" ::: "memory");
	for (;;)
		;
}
