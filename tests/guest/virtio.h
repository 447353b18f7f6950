/*
 * Virtio over PCI (modern interface) for the test guest: what ring 0
 * (virtio.c: discovery, BARs, MSI-X, device initialisation) and ring 3
 * (uvirtio.c: virtqueues, block and entropy requests, data patterns) share.
 *
 * Everything here lives in memory ring 3 may touch: the structures in
 * uvirtio.c's data (the user pages) and the DMA arena (rings, request
 * slots, data buffers), which ring 0 maps user-accessible.
 */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#include "guest.h"

/* ---- virtio 1.2 constants ---- */
#define VIRTIO_VENDOR	  0x1af4
#define VIRTIO_DEV_MODERN 0x1040 /* + virtio device id */
#define VIRTIO_ID_NET	  1
#define VIRTIO_ID_BLOCK	  2
#define VIRTIO_ID_ENTROPY 4
#define VIRTIO_ID_BALLOON 5

#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG	  3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

/* struct virtio_pci_common_cfg */
#define VCC_DFSELECT	     0x00
#define VCC_DF		     0x04
#define VCC_GFSELECT	     0x08
#define VCC_GF		     0x0c
#define VCC_MSIX	     0x10
#define VCC_NUMQ	     0x12
#define VCC_STATUS	     0x14
#define VCC_CFGGEN	     0x15
#define VCC_Q_SELECT	     0x16
#define VCC_Q_SIZE	     0x18
#define VCC_Q_MSIX	     0x1a
#define VCC_Q_ENABLE	     0x1c
#define VCC_Q_NOFF	     0x1e
#define VCC_Q_DESCLO	     0x20
#define VCC_Q_DESCHI	     0x24
#define VCC_Q_AVAILLO	     0x28
#define VCC_Q_AVAILHI	     0x2c
#define VCC_Q_USEDLO	     0x30
#define VCC_Q_USEDHI	     0x34
#define VIRTIO_MSI_NO_VECTOR 0xffff

#define VIRTIO_S_ACKNOWLEDGE 1
#define VIRTIO_S_DRIVER	     2
#define VIRTIO_S_DRIVER_OK   4
#define VIRTIO_S_FEATURES_OK 8
#define VIRTIO_S_NEEDS_RESET 0x40
#define VIRTIO_S_FAILED	     0x80

#define VIRTIO_F_INDIRECT_DESC	 28
#define VIRTIO_F_EVENT_IDX	 29
#define VIRTIO_F_VERSION_1	 32
#define VIRTIO_F_ACCESS_PLATFORM 33
#define VIRTIO_F_ORDER_PLATFORM	 36

#define VIRTIO_BLK_F_SIZE_MAX	  1
#define VIRTIO_BLK_F_SEG_MAX	  2
#define VIRTIO_BLK_F_GEOMETRY	  4
#define VIRTIO_BLK_F_RO		  5
#define VIRTIO_BLK_F_BLK_SIZE	  6
#define VIRTIO_BLK_F_FLUSH	  9
#define VIRTIO_BLK_F_TOPOLOGY	  10
#define VIRTIO_BLK_F_DISCARD	  13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN		  0
#define VIRTIO_BLK_T_OUT	  1
#define VIRTIO_BLK_T_FLUSH	  4
#define VIRTIO_BLK_T_GET_ID	  8
#define VIRTIO_BLK_T_DISCARD	  11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK		  0
#define VIRTIO_BLK_S_IOERR	  1
#define VIRTIO_BLK_S_UNSUPP	  2
#define VIRTIO_BLK_ID_BYTES	  20

/* virtio-net (5.1) */
#define VIRTIO_NET_F_CSUM	    0
#define VIRTIO_NET_F_GUEST_CSUM	    1
#define VIRTIO_NET_F_MAC	    5
#define VIRTIO_NET_F_MRG_RXBUF	    15
#define VIRTIO_NET_F_STATUS	    16
#define VIRTIO_NET_S_LINK_UP	    1
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_LEN	    12 /* struct virtio_net_hdr (v1: num_buffers always there) */
#define VIRTIO_NET_Q_RX		    0
#define VIRTIO_NET_Q_TX		    1
#define VIRTIO_NET_CFG_MAC	    0
#define VIRTIO_NET_CFG_STATUS	    6

/* virtio-balloon (5.5) */
#define VIRTIO_BALLOON_F_MUST_TELL_HOST 0
#define VIRTIO_BALLOON_Q_INFLATE	0
#define VIRTIO_BALLOON_Q_DEFLATE	1
#define VIRTIO_BALLOON_CFG_NUM_PAGES	0
#define VIRTIO_BALLOON_CFG_ACTUAL	4
#define VIRTIO_BALLOON_PFN_SHIFT	12

#define VRING_DESC_F_NEXT	   1
#define VRING_DESC_F_WRITE	   2
#define VRING_DESC_F_INDIRECT	   4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY	   1

#define SECTOR 512

/* ---- the guest's limits and DMA arena layout ---- */
#define VIRTIO_MAX_DEVS 16
#define VQ_MAX_SIZE	256  /* queue size = min(device maximum, this) */
#define VQ_SLOTS	32   /* requests in flight per queue, at most */
#define SLOT_SIZE	2048 /* per request: header, status, segment, id, indirect table */
#define SLOT_HDR	0    /* struct virtio_blk_req header, 16 bytes */
#define SLOT_STATUS	16   /* status byte */
#define SLOT_SEG	32   /* one discard / write-zeroes segment, 16 bytes */
#define SLOT_ID		64   /* GET_ID answer, 20 bytes */
#define SLOT_ITABLE	128  /* indirect descriptor table */
#define SLOT_MAX_DESC	((SLOT_SIZE - SLOT_ITABLE) / 16) /* 120 */

/* One device's area: desc table, avail ring, used ring, head->slot map, slots. */
#define DEV_AREA       0x20000
#define DA_DESC	       0x0000
#define DA_AVAIL       0x1000
#define DA_USED	       0x2000
#define DA_HEADSLOT    0x3000
#define DA_SLOTS       0x4000
#define ARENA_RINGS    (VIRTIO_MAX_DEVS * DEV_AREA) /* 2 MiB */
#define DATA_BUF_SIZE  0x100000			    /* 1 MiB per slot */
#define ARENA_MAX_BUFS VQ_SLOTS
#define ARENA_SIZE     (ARENA_RINGS + ARENA_MAX_BUFS * DATA_BUF_SIZE) /* 34 MiB */
#define ARENA_MIN_BUFS 4

/* Queue 1 (virtio-net transmitq, virtio-balloon deflateq) of the same device. */
#define DA_Q1_DESC     0x14000
#define DA_Q1_AVAIL    0x15000
#define DA_Q1_USED     0x16000
#define DA_Q1_HEADSLOT 0x17000
#define DA_Q1_SLOTS    0x18000 /* 32 KiB, to the end of the area */

/*
 * virtio-net: each NIC owns one data buffer (1 MiB) for as long as the
 * guest runs: receive buffers in the first half, transmit buffers in the
 * second, NET_BUF_STRIDE bytes each (virtio_net_hdr + frame).
 */
#define NET_BUF_STRIDE 2048
#define NET_TX_OFF     0x80000
#define NET_RXBUF_MIN  64   /* guest.net.rxbuf= lower bound (with MRG_RXBUF) */
#define NET_UDP_MAX    1472 /* UDP payload in a 1514-byte frame */
#define NET_RATE_MAX_S 3600 /* guest.net.blast_tx / sink: seconds, at most */

/* Interrupt vectors: queue 0 (and 1) of device i, its configuration changes. */
#define VEC_QUEUE_BASE	0x40 /* + device index */
#define VEC_CONFIG_BASE 0x60 /* + device index */

#ifndef __ASSEMBLER__

struct vdesc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

/* One split virtqueue. Ring 0 fills the configuration, ring 3 owns the rest. */
struct vq {
	u64 desc, avail, used; /* identity-mapped addresses */
	u64 notify;	       /* this queue's notify register (MMIO) */
	u64 headslot;	       /* u16[size]: request slot of each chain head */
	u64 slots;	       /* VQ_SLOTS * SLOT_SIZE */
	u16 size;
	u16 index;
	u16 msix_entry; /* VIRTIO_MSI_NO_VECTOR: none */
	u8 vector;	/* IDT vector, 0: none */
	u8 event_idx, indirect, irq_mode;
	/* ring-3 state */
	u16 free_head, num_free, avail_idx, kicked_idx, last_used;
};

enum vtype { VT_OTHER, VT_BLK, VT_RNG, VT_NET, VT_BALLOON };

struct vdev {
	u8 slot, fn;
	u8 type; /* enum vtype */
	u8 broken;
	u16 device_id;
	u64 common, isr, devcfg, notify_base;
	u32 notify_mult;
	u32 msix_size; /* MSI-X table entries, 0: no MSI-X */
	u64 msix_table;
	u64 offered, features;
	u64 area;      /* this device's DEV_AREA */
	struct vq vq;  /* queue 0 */
	struct vq vq1; /* queue 1 (net, balloon); size 0: none */
	u16 cfg_msix;  /* configuration change MSI-X entry, VIRTIO_MSI_NO_VECTOR: none */
	u8 cfg_vector; /* its IDT vector, 0: none */
	/* virtio-net */
	u8 nic; /* index among the NICs */
	u8 mac[6];
	u16 net_status; /* config status (VIRTIO_NET_S_LINK_UP if STATUS is not negotiated) */
	u8 mrg, csum;	/* MRG_RXBUF, CSUM + GUEST_CSUM negotiated */
	u32 ip;		/* IPv4 address, network byte order in memory; 0: none */
	u32 rxbuf;	/* bytes per receive buffer (header included) */
	u64 netbuf;	/* this NIC's data buffer (NET_BUF_STRIDE-sized buffers) */
	/* virtio-blk configuration */
	u64 capacity;
	u32 size_max, seg_max, blk_size;
	u32 max_discard_sectors, max_discard_seg, max_wz_sectors, max_wz_seg;
	/* derived by ring 0: request shape */
	u32 seg_bytes;	 /* largest data segment */
	u32 req_sectors; /* largest read/write request */
	u32 depth;	 /* requests in flight */
};

enum vjob_op {
	VJ_INIT_QUEUES,
	VJ_BLK_VERIFY,
	VJ_BLK_WRITE,
	VJ_BLK_FLUSH,
	VJ_BLK_ROTEST,
	VJ_BLK_DISCARD,
	VJ_BLK_ZEROES,
	VJ_BLK_ID,
	VJ_RNG,
	VJ_BENCH,
	VJ_NET_START,	 /* post the receive buffers */
	VJ_NET_PING,	 /* arg: peer ip, count */
	VJ_NET_UDP,	 /* arg: peer ip, port, count */
	VJ_NET_RECV,	 /* arg: port, count */
	VJ_NET_BULK_TX,	 /* arg: peer ip, port, MiB, seed */
	VJ_NET_BULK_RX,	 /* arg: port, MiB */
	VJ_NET_BLAST_TX, /* arg: peer ip, port, seconds, payload bytes */
	VJ_NET_SINK,	 /* arg: port, seconds */
	VJ_TOUCH,	 /* write one byte per page of the balloon pool */
	VJ_BALLOON,	 /* follow num_pages once */
	VJ_SERVICE,	 /* arg: TSC deadline; answer ARP / ICMP, follow the balloon */
};

/* Ring-3 driver errors (vjob.err). */
enum verr {
	VE_NONE,
	VE_TIMEOUT,	/* no completion within the TSC timeout */
	VE_NEEDS_RESET, /* device status has NEEDS_RESET */
	VE_BAD_ID,	/* used ring returned an id that is not an in-flight head */
	VE_NO_STATUS,	/* request completed without its status byte written */
	VE_TOO_BIG,	/* request does not fit the queue */
	VE_RNG_EMPTY,	/* entropy device returned 0 bytes */
	VE_NET_RXBUF,	/* bad receive buffer length / num_buffers */
};

#define SEED_ZERO (~0UL) /* pattern "seed" meaning all-zero data */

/* A job for ring 3: ring 0 fills op..tsc_*, ring 3 fills the results. */
struct vjob {
	u32 op;
	u32 dev;	 /* index into vdevs[] */
	u64 arg[5];	 /* op-specific */
	u64 tsc_timeout; /* TSC ticks to wait for one completion */
	u64 tsc_ms;	 /* TSC ticks per millisecond */
	u64 data;	 /* data buffers: nbufs * DATA_BUF_SIZE */
	u32 nbufs;
	u32 ndevs;
	/* results */
	u32 status; /* first non-OK VIRTIO_BLK_S_* (0: all OK), 0xff: not written */
	u32 err;    /* enum verr */
	u64 at;	    /* sector of the first bad data / failed request; ~0: none */
	u64 r[8];   /* op-specific results */
	char id[VIRTIO_BLK_ID_BYTES + 4];
	u32 done;
};

/*
 * A ring-3 request to ring 0 (ud2 with op set): wait for an interrupt on
 * one vector (USYS_WAIT: until irq_count[vector] != seen) or on any device
 * vector (USYS_WAIT_ANY: until irq_total != seen), or the deadline.
 */
#define USYS_WAIT     1
#define USYS_WAIT_ANY 2
struct usys {
	u32 op;
	u32 vector;
	u32 seen;     /* irq_count[vector] / irq_total ring 3 saw before checking the rings */
	u64 deadline; /* TSC */
};

/*
 * The balloon's page pool: usable RAM below 4 GiB above 2 MiB, minus the
 * DMA arena and the initrd; ring 0 fills the ranges and maps them for
 * ring 3. Balloon page i (0 = the highest page) is inflated i-th.
 */
#define POOL_MAX_RANGES 32
#define BALLOON_BATCH	256 /* PFNs per inflate / deflate request */
struct vballoon {
	u32 present; /* a virtio-balloon was set up */
	u32 dev;     /* its vdevs[] index */
	u32 nranges;
	u64 start[POOL_MAX_RANGES], pages[POOL_MAX_RANGES];
	u64 pool_pages;
	u64 touched; /* pages written by VJ_TOUCH */
	u64 tick;    /* TSC ticks between configuration polls (~100 ms) */
	/* ring-3 state */
	u32 inflated;	/* pages in the balloon (what `actual` says) */
	u32 target;	/* num_pages last read */
	u32 cfg_seen;	/* irq_count[cfg_vector] when the configuration was last read */
	u64 cfg_polled; /* TSC of that read */
	u32 shown_target, shown_actual;
	u8 shown, enabled;
};

/* Per-NIC counters (ring 3 writes, ring 0 prints). */
struct vnetstats {
	u64 rx_frames, tx_frames, rx_dropped, bad_csum, arp_replies, icmp_replies;
};

/* uvirtio.c and the other guest-user-*.o files (ring 3 code and data) */
extern struct vdev vdevs[VIRTIO_MAX_DEVS];
extern struct vjob vjob;
extern struct usys usys;
extern volatile u32 irq_count[256];
extern volatile u32 irq_total; /* interrupts on device vectors */
extern struct vballoon vballoon;
extern struct vnetstats vnetstats[VIRTIO_MAX_DEVS];
void uvirtio_main(void);

/* virtio.c (ring 0) */
void virtio_run(void);
bool virtio_user_trap(struct trap_frame *f);
void irq_handler(u64 vec);
/* for vnet.c and vballoon.c */
extern u32 ndevs;
extern u64 arena, arena_size;
extern bool irq_mode;
bool run_job(u32 op, struct vdev *d, u64 a0, u64 a1, u64 a2);
bool run_job5(u32 op, struct vdev *d, const u64 *a);
bool has_prefix(const char *s, const char *p);
bool streq(const char *a, const char *b);
bool parse_num(const char **s, u64 *v);
bool parse_fields(const char *s, u64 *v, u32 n, bool allow_zero);
void apic_setup(void);
void wait_until(u64 tsc); /* ring 0: sti; hlt with the APIC timer until the TSC passes tsc */
bool dev_has(struct vdev *d, u32 bit);

/* vnet.c (ring 0): virtio-net options and output */
u64 net_wanted_features(void);
void net_config(struct vdev *d);
void net_print(struct vdev *d);
void net_start_all(void);
bool net_op(const char *word);
void net_print_stats(void);

/* vballoon.c (ring 0): page pool, guest.touch, guest.balloon, guest.run=forever */
void balloon_run(void);
NORETURN void counter_run(void);

#endif /* !__ASSEMBLER__ */
#endif
