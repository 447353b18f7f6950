/* PCI root complex: bus 0 configuration space through ports 0xcf8/0xcfc and ECAM. */
#ifndef LIBVMM_LIB_PCI_H
#define LIBVMM_LIB_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/bus.h"

#define PCI_CFG_SIZE 256
#define PCI_MAX_DEVICES 32

/* One PCI function's configuration space. */
struct pci_function {
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE]; /* bits the guest may change */
	/* Optional hook after the guest wrote config space (offset, len). */
	void (*cfg_written)(struct pci_function *f, uint32_t off, uint32_t len);
	void *opaque;
};

struct pci_root {
	pthread_mutex_t lock;
	uint32_t config_address; /* last value written to port 0xcf8 */
	struct pci_function *devs[PCI_MAX_DEVICES]; /* function 0 of each slot */
	struct pci_function host_bridge;
};

/* Set up bus 0 with a host bridge (1b36:0008, class 0600) in slot 0. */
void pci_root_init(struct pci_root *r);
void pci_root_destroy(struct pci_root *r);

/*
 * Fill a function's header: vendor/device ids, class code (24 bits),
 * header type 0, subsystem ids, and the standard write masks.
 */
void pci_function_init(struct pci_function *f, uint16_t vendor, uint16_t device, uint32_t class_code,
		       uint16_t subsys_vendor, uint16_t subsys_id);

/* Put @f in the first free slot; returns the slot or -ENOSPC. */
int pci_add_device(struct pci_root *r, struct pci_function *f);

/* Bus handlers: ports 0xcf8-0xcff (register with length 8) and the ECAM window. */
void pci_pio(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
void pci_ecam(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

/* Read or write config space of bus 0 (what both handlers call). */
void pci_cfg_access(struct pci_root *r, uint32_t dev, uint32_t fn, uint32_t reg, uint8_t *data,
		    uint32_t len, bool is_write);

#endif
