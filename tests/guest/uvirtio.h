/*
 * Ring 3 only: what the guest-user-*.o files (uvirtio.c, unet.c,
 * uballoon.c) share. Everything declared here lives in the user pages;
 * nothing in ring 3 calls ring-0 code.
 */
#ifndef GUEST_UVIRTIO_H
#define GUEST_UVIRTIO_H

#include "virtio.h"

#define barrier() __asm__ volatile("" ::: "memory")

/* Full barrier (store -> load order) without SSE2's mfence. */
static inline void mb(void)
{
	__asm__ volatile("lock orl $0, (%%rsp)" ::: "memory", "cc");
}

static inline u8 rd8(u64 a)
{
	return *(volatile u8 *)a;
}

static inline u16 rd16(u64 a)
{
	return *(volatile u16 *)a;
}

static inline u32 rd32(u64 a)
{
	return *(volatile u32 *)a;
}

static inline void wr16(u64 a, u16 v)
{
	*(volatile u16 *)a = v;
}

static inline void wr32(u64 a, u32 v)
{
	*(volatile u32 *)a = v;
}

static inline u64 min64(u64 a, u64 b)
{
	return a < b ? a : b;
}

/* the data pattern (README: "The data pattern") */
u64 mix64(u64 z);
void pat_init(u64 seed);
void pat_fill(u64 *p, u64 lba, u64 n);

/* split virtqueues */
void vq_init(struct vq *q);
int vq_submit(struct vq *q, u16 s, struct vdesc *t, u16 n);
void vq_kick(struct vq *q);
int vq_get(struct vq *q, u16 *slot, u32 *len);
int vq_wait(struct vdev *d, struct vq *q);
/* Used-buffer notifications on (arm) / back to the queue's mode (disarm). */
void vq_arm(struct vq *q);
void vq_disarm(struct vq *q);

static inline bool vq_pending(struct vq *q)
{
	return rd16(q->used + 2) != q->last_used;
}

/* Ask ring 0 to wait (sti; hlt) for an interrupt on vector / on any device vector. */
void usys_wait(u32 vector, u32 seen, u64 deadline);
void usys_wait_any(u32 seen, u64 deadline);

/* unet.c */
void net_job(void);
void net_start(struct vdev *d);
/* Answer ARP / ICMP on every NIC with an address; with sleep, wait (armed) until
 * something arrives or the deadline when nothing is pending. */
int net_service(u64 deadline, bool sleep);
bool net_any(void);

/* uballoon.c */
void balloon_job(void);
void service_job(void);

#endif
