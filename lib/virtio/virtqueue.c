/* Split virtqueues (virtio 1.2 section 2.7): the device side, every guest value checked. */
#include "virtqueue.h"

#include <errno.h>
#include <string.h>

/*
 * Ring layout (all little-endian, which is the host's byte order here):
 *   descriptor: u64 addr, u32 len, u16 flags, u16 next (16 bytes)
 *   avail: u16 flags, u16 idx, u16 ring[size], u16 used_event
 *   used:  u16 flags, u16 idx, {u32 id, u32 len} ring[size], u16 avail_event
 * The guest writes these concurrently; a field is read once into a local
 * and only the local is checked and used.
 */
#define DESC_SIZE 16
#define RING_HDR  4 /* flags + idx */

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static uint64_t desc_table_bytes(uint16_t size)
{
	return (uint64_t)DESC_SIZE * size;
}

static uint64_t avail_bytes(uint16_t size)
{
	return RING_HDR + 2ull * size + 2;
}

static uint64_t used_bytes(uint16_t size)
{
	return RING_HDR + 8ull * size + 2;
}

/*
 * Host pointer of a naturally aligned 16-bit ring field, or NULL. The rings
 * were checked by virtq_start(), but a queue used without a successful start
 * must not fault either.
 */
static uint16_t *ring_u16(const struct virtq *q, uint64_t gpa)
{
	if (!q->mem || (gpa & 1))
		return NULL;
	return gm_ptr(q->mem, gpa, 2);
}

static uint16_t avail_idx_acquire(const struct virtq *q, bool *ok)
{
	uint16_t *p = ring_u16(q, q->avail_gpa + 2);

	*ok = p != NULL;
	/* Acquire: ring entries the guest wrote before idx are visible after this load. */
	return p ? __atomic_load_n(p, __ATOMIC_ACQUIRE) : 0;
}

int virtq_start(struct virtq *q)
{
	q->last_avail = 0;
	q->used_idx = 0;
	q->signalled_used = 0;
	q->signalled_valid = false;
	q->broken = false;

	if (!q->mem || q->size == 0 || q->size > VIRTQ_MAX_SIZE || (q->size & (q->size - 1)))
		return -EINVAL;
	if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
		return -EINVAL;
	if (!gm_valid(q->mem, q->desc_gpa, desc_table_bytes(q->size)) ||
	    !gm_valid(q->mem, q->avail_gpa, avail_bytes(q->size)) ||
	    !gm_valid(q->mem, q->used_gpa, used_bytes(q->size)))
		return -EINVAL;
	return 0;
}

static int read_desc(const struct guest_mem *mem, uint64_t table, uint32_t i, struct desc *d)
{
	uint8_t raw[DESC_SIZE];

	/* table + 16 * i cannot overflow: the whole table was checked to be RAM. */
	if (gm_read(mem, raw, table + (uint64_t)DESC_SIZE * i, DESC_SIZE))
		return -EIO;
	memcpy(&d->addr, raw, 8);
	memcpy(&d->len, raw + 8, 4);
	memcpy(&d->flags, raw + 12, 2);
	memcpy(&d->next, raw + 14, 2);
	return 0;
}

/* Chain walking state shared by the direct and indirect parts of one chain. */
struct walk {
	const struct virtq *q;
	struct virtq_chain *c;
	uint32_t ndesc; /* descriptors seen, for VIRTQ_MAX_CHAIN */
	bool seen_write;
};

/* Check one buffer descriptor and append it to the chain. */
static int add_buf(struct walk *w, const struct desc *d)
{
	struct virtq_chain *c = w->c;
	bool write = d->flags & VIRTQ_DESC_F_WRITE;

	if (++w->ndesc > VIRTQ_MAX_CHAIN)
		return -EIO;
	if (!write && w->seen_write)
		return -EIO; /* readable buffers must all come before writable ones */
	if (write)
		w->seen_write = true;
	/* A zero-length buffer is legal and carries nothing: skip it, address unused. */
	if (d->len == 0)
		return 0;
	if (!gm_valid(w->q->mem, d->addr, d->len))
		return -EIO; /* also rejects addr + len past 2^64 */
	if (c->read_len + c->write_len + d->len > UINT32_MAX)
		return -EIO; /* the used ring's len is 32 bits */
	c->bufs[c->nbufs] = (struct virtq_buf){.gpa = d->addr, .len = d->len, .write = write};
	c->nbufs++;
	if (write) {
		c->write_len += d->len;
	} else {
		c->read_len += d->len;
		c->nread++;
	}
	return 0;
}

/* Walk the indirect table that descriptor @d points at; it ends the chain. */
static int walk_indirect(struct walk *w, const struct desc *d)
{
	uint32_t n, i, seen;
	struct desc e;

	if (!w->q->indirect)
		return -EIO;
	if (d->flags & VIRTQ_DESC_F_NEXT)
		return -EIO;
	if (d->len == 0 || d->len % DESC_SIZE)
		return -EIO;
	n = d->len / DESC_SIZE;
	if (n > VIRTQ_MAX_CHAIN)
		return -EIO;
	if (!gm_valid(w->q->mem, d->addr, d->len))
		return -EIO;

	for (i = 0, seen = 0;; seen++) {
		/* More steps than entries means the table's next links loop. */
		if (seen >= n)
			return -EIO;
		if (read_desc(w->q->mem, d->addr, i, &e))
			return -EIO;
		if (e.flags & VIRTQ_DESC_F_INDIRECT)
			return -EIO; /* no indirect table inside an indirect table */
		if (add_buf(w, &e))
			return -EIO;
		if (!(e.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (e.next >= n)
			return -EIO;
		i = e.next;
	}
}

static int walk_chain(const struct virtq *q, uint16_t head, struct virtq_chain *c)
{
	struct walk w = {.q = q, .c = c};
	uint32_t i = head, seen;
	struct desc d;

	if (head >= q->size)
		return -EIO;
	for (seen = 0;; seen++) {
		/* A chain visiting more descriptors than the ring holds is a loop. */
		if (seen >= q->size)
			return -EIO;
		if (read_desc(q->mem, q->desc_gpa, i, &d))
			return -EIO;
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return walk_indirect(&w, &d);
		if (add_buf(&w, &d))
			return -EIO;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (d.next >= q->size)
			return -EIO;
		i = d.next;
	}
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
	uint16_t avail, head, *slot;
	bool ok;

	c->head = 0;
	c->nbufs = 0;
	c->nread = 0;
	c->read_len = 0;
	c->write_len = 0;
	if (q->broken)
		return -EIO;

	avail = avail_idx_acquire(q, &ok);
	if (!ok)
		goto broken;
	if (avail == q->last_avail)
		return 0;
	if ((uint16_t)(avail - q->last_avail) > q->size)
		goto broken;

	slot = ring_u16(q, q->avail_gpa + RING_HDR + 2ull * (q->last_avail & (q->size - 1)));
	if (!slot)
		goto broken;
	head = __atomic_load_n(slot, __ATOMIC_RELAXED);
	q->last_avail++;
	c->head = head;
	if (walk_chain(q, head, c))
		goto broken;
	return 1;

broken:
	q->broken = true;
	c->nbufs = 0;
	c->nread = 0;
	c->read_len = 0;
	c->write_len = 0;
	return -EIO;
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
	uint64_t elem;
	uint32_t id = head;
	uint16_t *idx;
	uint32_t *p;

	if (!q->mem || q->size == 0 || (q->size & (q->size - 1)))
		return;
	elem = q->used_gpa + RING_HDR + 8ull * (q->used_idx & (q->size - 1));
	idx = ring_u16(q, q->used_gpa + 2);
	p = (elem & 3) ? NULL : gm_ptr(q->mem, elem, 8);
	if (!idx || !p)
		return;
	__atomic_store_n(&p[0], id, __ATOMIC_RELAXED);
	__atomic_store_n(&p[1], written, __ATOMIC_RELAXED);
	q->used_idx++;
	/* Release: the entry is visible to the guest before the index that covers it. */
	__atomic_store_n(idx, q->used_idx, __ATOMIC_RELEASE);
}

bool virtq_need_interrupt(struct virtq *q)
{
	uint16_t old = q->signalled_used, new = q->used_idx, *p;
	bool valid = q->signalled_valid;

	/*
	 * Full fence: the used idx store above must be visible before we read
	 * the guest's used_event / flags, or the guest could re-enable
	 * interrupts after our read yet miss the new entries.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	q->signalled_used = new;
	q->signalled_valid = true;
	if (valid && old == new)
		return false; /* nothing pushed since the last check */

	if (q->event_idx) {
		uint16_t event;

		p = ring_u16(q, q->avail_gpa + RING_HDR + 2ull * q->size);
		if (!p)
			return true;
		event = __atomic_load_n(p, __ATOMIC_RELAXED);
		if (!valid)
			return true;
		/* vring_need_event: did used idx step past used_event in (old, new]? */
		return (uint16_t)(new - event - 1) < (uint16_t)(new - old);
	}
	p = ring_u16(q, q->avail_gpa);
	if (!p)
		return true;
	return !(__atomic_load_n(p, __ATOMIC_RELAXED) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

void virtq_set_notify(struct virtq *q, bool enable)
{
	uint16_t *p;

	if (q->event_idx) {
		/* With event idx there is no "off": just stop moving avail_event. */
		if (enable) {
			p = ring_u16(q, q->used_gpa + RING_HDR + 8ull * q->size);
			if (p)
				__atomic_store_n(p, q->last_avail, __ATOMIC_RELAXED);
		}
	} else {
		p = ring_u16(q, q->used_gpa);
		if (p) {
			uint16_t f = __atomic_load_n(p, __ATOMIC_RELAXED);

			if (enable)
				f &= (uint16_t)~VIRTQ_USED_F_NO_NOTIFY;
			else
				f |= VIRTQ_USED_F_NO_NOTIFY;
			__atomic_store_n(p, f, __ATOMIC_RELAXED);
		}
	}
	/* Full fence: the store is visible before the caller re-reads avail idx. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

bool virtq_has_avail(struct virtq *q)
{
	bool ok;
	uint16_t avail;

	if (q->broken)
		return false;
	avail = avail_idx_acquire(q, &ok);
	return ok && avail != q->last_avail;
}

/* Copy the readable buffers to @dst, or @src (when not NULL) into the writable buffers. */
static size_t chain_copy(const struct virtq *q, const struct virtq_chain *c, uint64_t off,
			 uint8_t *dst, const uint8_t *src, size_t len)
{
	bool write = src != NULL; /* host -> guest */
	uint32_t first = write ? c->nread : 0;
	uint32_t end = write ? c->nbufs : c->nread;
	size_t done = 0;

	if (end > c->nbufs || end > VIRTQ_MAX_CHAIN || !q->mem)
		return 0;
	for (uint32_t i = first; i < end && done < len; i++) {
		const struct virtq_buf *b = &c->bufs[i];
		uint64_t n;
		uint8_t *p;

		if (off >= b->len) {
			off -= b->len;
			continue;
		}
		n = b->len - off;
		if (n > len - done)
			n = len - done;
		p = gm_ptr(q->mem, b->gpa + off, n);
		if (!p)
			break;
		if (write)
			memcpy(p, src + done, n);
		else
			memcpy(dst + done, p, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t virtq_chain_read(const struct virtq *q, const struct virtq_chain *c, uint64_t off, void *dst,
			size_t len)
{
	return chain_copy(q, c, off, dst, NULL, len);
}

size_t virtq_chain_write(const struct virtq *q, const struct virtq_chain *c, uint64_t off,
			 const void *src, size_t len)
{
	return chain_copy(q, c, off, NULL, src, len);
}
