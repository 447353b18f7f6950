/* PCI root complex: bus 0 configuration space through ports 0xcf8/0xcfc and ECAM, BARs, MSI-X. */
#ifndef LIBVMM_LIB_PCI_H
#define LIBVMM_LIB_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/bus.h"

#define PCI_CFG_SIZE	256
#define PCI_MAX_DEVICES 32

/* Type 0 header registers (PCI Local Bus 3.0, 6.1). */
#define PCI_VENDOR_ID		 0x00
#define PCI_DEVICE_ID		 0x02
#define PCI_COMMAND		 0x04
#define PCI_COMMAND_IO		 0x0001
#define PCI_COMMAND_MEMORY	 0x0002
#define PCI_COMMAND_MASTER	 0x0004
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS		 0x06
#define PCI_STATUS_CAP_LIST	 0x0010
#define PCI_CLASS_REVISION	 0x08 /* revision id, then the 24-bit class code */
#define PCI_HEADER_TYPE		 0x0e
#define PCI_BAR0		 0x10 /* six 32-bit BARs, 0x10-0x27 */
#define PCI_NUM_BARS		 6
#define PCI_BAR_MEM_TYPE_64	 0x4
#define PCI_BAR_MEM_PREFETCH	 0x8
#define PCI_SUBSYSTEM_VENDOR_ID	 0x2c
#define PCI_SUBSYSTEM_ID	 0x2e
#define PCI_CAP_PTR		 0x34
#define PCI_INTERRUPT_LINE	 0x3c
#define PCI_INTERRUPT_PIN	 0x3d
#define PCI_CAP_START		 0x40 /* first byte after the standard header */

/* Capability ids. */
#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

/* MSI-X capability (PCI 3.0, 6.8.2): id, next, message control, table and PBA offset/BIR. */
#define PCI_MSIX_CAP_SIZE     12
#define PCI_MSIX_CTRL	      2 /* offset of message control in the capability */
#define PCI_MSIX_CTRL_ENABLE  0x8000
#define PCI_MSIX_CTRL_MASKALL 0x4000
#define PCI_MSIX_TABLE	      4
#define PCI_MSIX_PBA	      8
#define PCI_MSIX_ENTRY_SIZE   16 /* addr lo, addr hi, data, vector control */
#define PCI_MSIX_ENTRY_MASKED 0x1
#define PCI_MSIX_MAX_VECTORS  64 /* what struct pci_msix holds: one PBA qword */

/*
 * One PCI function's configuration space.
 *
 * By default the root serialises every access under its lock and merges
 * guest writes through @wmask. A function with @cfg_access set handles its
 * own accesses instead (see pci_cfg_access()).
 */
struct pci_function {
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE]; /* bits the guest may change */
	uint8_t cap_last;	     /* offset of the last capability in the list, 0 if none */
	uint8_t cap_end;	     /* first byte after the last capability, 0 if none */
	/*
	 * Optional hook after the guest wrote config space (offset, len), for
	 * functions without @cfg_access. Called without the root's lock.
	 */
	void (*cfg_written)(struct pci_function *f, uint32_t off, uint32_t len);
	/*
	 * Optional: take over every config access to this function. Called
	 * without the root's lock with @reg < PCI_CFG_SIZE, @len 1..4 and
	 * reg + len <= PCI_CFG_SIZE; the function serialises itself (it may
	 * call pci_function_cfg_rw() for the default behaviour). A read must
	 * fill @data.
	 */
	void (*cfg_access)(struct pci_function *f, uint32_t reg, uint8_t *data, uint32_t len,
			   bool is_write);
	void *opaque;
};

struct pci_root {
	pthread_mutex_t lock;
	uint32_t config_address;		    /* last value written to port 0xcf8 */
	struct pci_function *devs[PCI_MAX_DEVICES]; /* function 0 of each slot */
	struct pci_function host_bridge;
	/* The memory window for BARs, and its bump allocator (under @lock). */
	uint64_t mmio_base, mmio_size;
	uint64_t mmio_next;
};

/*
 * Set up bus 0 with a host bridge (1b36:0008, class 0600) in slot 0, and the
 * BAR window [LAYOUT_PCI_MMIO, + LAYOUT_PCI_MMIO_SIZE).
 */
void pci_root_init(struct pci_root *r);
void pci_root_destroy(struct pci_root *r);

/*
 * Fill a function's header: vendor/device ids, class code (24 bits),
 * header type 0, subsystem ids, and the standard write masks.
 */
void pci_function_init(struct pci_function *f, uint16_t vendor, uint16_t device,
		       uint32_t class_code, uint16_t subsys_vendor, uint16_t subsys_id);

/* Put @f in the first free slot; returns the slot or -ENOSPC. */
int pci_add_device(struct pci_root *r, struct pci_function *f);

/*
 * Take @f off the bus (no effect if absent). The caller makes sure that no
 * vCPU is inside one of @f's hooks (the VM is stopped).
 */
void pci_remove_device(struct pci_root *r, struct pci_function *f);

/*
 * Allocate @size bytes (a power of two, at least 16) of the BAR window,
 * naturally aligned. Returns 0 with *@addr set, -EINVAL for a bad size, or
 * -ENOSPC when the window is full. Thread safe.
 */
int pci_alloc_mmio(struct pci_root *r, uint64_t size, uint64_t *addr);

/* True when [addr, addr + len) lies inside the BAR window (checked without overflow). */
bool pci_in_mmio_window(const struct pci_root *r, uint64_t addr, uint64_t len);

/* Bus handlers: ports 0xcf8-0xcff (register with length 8) and the ECAM window. */
void pci_pio(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
void pci_ecam(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

/*
 * Read or write config space of bus 0 (what both handlers call). Accesses
 * to absent functions, of length 0 or over 4, or past the 256 bytes read as
 * all ones and are otherwise ignored.
 */
void pci_cfg_access(struct pci_root *r, uint32_t dev, uint32_t fn, uint32_t reg, uint8_t *data,
		    uint32_t len, bool is_write);

/*
 * The default access on @f's config space: a read copies, a write merges
 * through wmask. Out-of-range accesses are ignored (a read gives all ones).
 * No locking: the caller serialises.
 */
void pci_function_cfg_rw(struct pci_function *f, uint32_t reg, uint8_t *data, uint32_t len,
			 bool is_write);

/* Little-endian config space fields (no locking; @off + size must be <= 256). */
uint16_t pci_cfg_get16(const struct pci_function *f, uint32_t off);
uint32_t pci_cfg_get32(const struct pci_function *f, uint32_t off);
void pci_cfg_set16(struct pci_function *f, uint32_t off, uint16_t v);
void pci_cfg_set32(struct pci_function *f, uint32_t off, uint32_t v);

/*
 * Make BAR @bar a 32-bit non-prefetchable memory BAR of @size bytes (a power
 * of two, 16 bytes to 2 GiB) at @addr (aligned to @size). The guest sizes it
 * the usual way: writing all ones reads back ~(size - 1) | type bits.
 * Returns 0 or -EINVAL.
 */
int pci_function_set_bar32(struct pci_function *f, unsigned int bar, uint32_t addr, uint32_t size);

/* Address currently in 32-bit memory BAR @bar (type bits cleared); 0 for a bad index. */
uint32_t pci_function_bar32(const struct pci_function *f, unsigned int bar);

/*
 * Append a capability of @len bytes (4..PCI_CFG_SIZE) to @f's list. @cap[0]
 * is the capability id; the next pointer (cap[1]) is filled in. The list
 * starts at PCI_CAP_START and entries are dword aligned; the status
 * register's CAP_LIST bit is set. Write masks of the new bytes are zero.
 * Returns the capability's offset, or -EINVAL / -ENOSPC.
 */
int pci_function_add_cap(struct pci_function *f, const uint8_t *cap, uint32_t len);

/*
 * MSI-X state of one function: the vector table and pending bits behind a
 * BAR, and where its capability sits in config space. The owner serialises
 * all calls (it holds its own lock).
 */
struct pci_msix {
	uint8_t cap;				 /* offset of the MSI-X capability */
	uint16_t nvec;				 /* table size, 1..PCI_MSIX_MAX_VECTORS */
	uint32_t table[PCI_MSIX_MAX_VECTORS][4]; /* addr lo, addr hi, data, vector control */
	uint64_t pba;				 /* pending bit array */
};

/*
 * Add an MSI-X capability to @f for @nvec vectors whose table sits at
 * @table_off and PBA at @pba_off (both 8-byte aligned) in BAR @bar, and set
 * every vector masked. Message control's enable and function-mask bits
 * become writable. Returns 0, -EINVAL or -ENOSPC.
 */
int pci_msix_init(struct pci_msix *m, struct pci_function *f, uint16_t nvec, unsigned int bar,
		  uint32_t table_off, uint32_t pba_off);

/* Bytes of the table and of the PBA for @m. */
uint32_t pci_msix_table_size(const struct pci_msix *m);
uint32_t pci_msix_pba_size(const struct pci_msix *m);

/* Message control's enable and function-mask bits, read from @f's config space. */
bool pci_msix_enabled(const struct pci_msix *m, const struct pci_function *f);
bool pci_msix_function_masked(const struct pci_msix *m, const struct pci_function *f);

/*
 * Whether vector @vec can be delivered now: MSI-X enabled, function not
 * masked, @vec < nvec and the entry not masked. If so, *@addr and *@data get
 * its message (either pointer may be NULL).
 */
bool pci_msix_deliverable(const struct pci_msix *m, const struct pci_function *f, uint32_t vec,
			  uint64_t *addr, uint32_t *data);

/*
 * Guest access to the table, @off bytes from its start. Only aligned dword
 * and qword accesses inside the table count; others read 0 and write
 * nothing. Reserved bits of vector control read 0. Returns true when a write
 * changed an entry (the owner re-evaluates its routes).
 */
bool pci_msix_table_access(struct pci_msix *m, uint64_t off, uint8_t *data, uint32_t len,
			   bool is_write);

/* Guest read of the PBA (aligned dword or qword; others and anything outside read 0). */
void pci_msix_pba_read(const struct pci_msix *m, uint64_t off, uint8_t *data, uint32_t len);

/* Set or clear vector @vec's pending bit (ignored when @vec >= nvec). */
void pci_msix_set_pending(struct pci_msix *m, uint32_t vec, bool pending);
bool pci_msix_pending(const struct pci_msix *m, uint32_t vec);

#endif
