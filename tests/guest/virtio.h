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
#define VIRTIO_ID_BLOCK	  2
#define VIRTIO_ID_ENTROPY 4

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

enum vtype { VT_OTHER, VT_BLK, VT_RNG };

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
	u64 area; /* this device's DEV_AREA */
	struct vq vq;
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
};

#define SEED_ZERO (~0UL) /* pattern "seed" meaning all-zero data */

/* A job for ring 3: ring 0 fills op..tsc_*, ring 3 fills the results. */
struct vjob {
	u32 op;
	u32 dev;	 /* index into vdevs[] */
	u64 arg[4];	 /* op-specific */
	u64 tsc_timeout; /* TSC ticks to wait for one completion */
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

/* A ring-3 request to ring 0 (ud2 with op set): wait for an interrupt. */
#define USYS_WAIT 1
struct usys {
	u32 op;
	u32 vector;
	u32 seen;     /* irq_count[vector] ring 3 saw before checking the ring */
	u64 deadline; /* TSC */
};

/* uvirtio.c (ring 3 code and data) */
extern struct vdev vdevs[VIRTIO_MAX_DEVS];
extern struct vjob vjob;
extern struct usys usys;
extern volatile u32 irq_count[256];
void uvirtio_main(void);

/* virtio.c (ring 0) */
void virtio_run(void);
bool virtio_user_trap(struct trap_frame *f);
void irq_handler(u64 vec);

#endif /* !__ASSEMBLER__ */
#endif
