/* PCI bus 0: host bridge and configuration space access through 0xcf8/0xcfc and ECAM. */
#include "pci.h"

#include <errno.h>
#include <string.h>

#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_CLASS_REVISION 0x08
#define PCI_HEADER_TYPE 0x0e
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_INTERRUPT_LINE 0x3c

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

void pci_function_init(struct pci_function *f, uint16_t vendor, uint16_t device, uint32_t class_code,
		       uint16_t subsys_vendor, uint16_t subsys_id)
{
	memset(f, 0, sizeof(*f));
	put16(&f->cfg[PCI_VENDOR_ID], vendor);
	put16(&f->cfg[PCI_DEVICE_ID], device);
	f->cfg[PCI_CLASS_REVISION + 1] = class_code & 0xff;
	f->cfg[PCI_CLASS_REVISION + 2] = (class_code >> 8) & 0xff;
	f->cfg[PCI_CLASS_REVISION + 3] = (class_code >> 16) & 0xff;
	f->cfg[PCI_HEADER_TYPE] = 0;
	put16(&f->cfg[PCI_SUBSYSTEM_VENDOR_ID], subsys_vendor);
	put16(&f->cfg[PCI_SUBSYSTEM_ID], subsys_id);
	/* Command: I/O, memory, bus master, INTx disable are writable. */
	put16(&f->wmask[PCI_COMMAND], 0x0407);
	f->wmask[PCI_INTERRUPT_LINE] = 0xff;
}

void pci_root_init(struct pci_root *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	pci_function_init(&r->host_bridge, 0x1b36, 0x0008, 0x060000, 0x1b36, 0x0008);
	r->devs[0] = &r->host_bridge;
}

void pci_root_destroy(struct pci_root *r)
{
	pthread_mutex_destroy(&r->lock);
}

int pci_add_device(struct pci_root *r, struct pci_function *f)
{
	int ret = -ENOSPC;

	pthread_mutex_lock(&r->lock);
	for (int i = 1; i < PCI_MAX_DEVICES; i++) {
		if (!r->devs[i]) {
			r->devs[i] = f;
			ret = i;
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void pci_cfg_access(struct pci_root *r, uint32_t dev, uint32_t fn, uint32_t reg, uint8_t *data,
		    uint32_t len, bool is_write)
{
	struct pci_function *f;

	if (len == 0 || len > 4 || reg >= PCI_CFG_SIZE || len > PCI_CFG_SIZE - reg)
		goto absent;
	pthread_mutex_lock(&r->lock);
	f = (dev < PCI_MAX_DEVICES && fn == 0) ? r->devs[dev] : NULL;
	if (!f) {
		pthread_mutex_unlock(&r->lock);
		goto absent;
	}
	if (is_write) {
		for (uint32_t i = 0; i < len; i++)
			f->cfg[reg + i] = (f->cfg[reg + i] & ~f->wmask[reg + i]) |
					  (data[i] & f->wmask[reg + i]);
	} else {
		memcpy(data, &f->cfg[reg], len);
	}
	pthread_mutex_unlock(&r->lock);
	if (is_write && f->cfg_written)
		f->cfg_written(f, reg, len);
	return;
absent:
	if (!is_write)
		memset(data, 0xff, len);
}

void pci_pio(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct pci_root *r = opaque;
	uint32_t addr;

	if (offset < 4) {
		/* CONFIG_ADDRESS takes dword accesses only. */
		if (offset != 0 || len != 4)
			return;
		pthread_mutex_lock(&r->lock);
		if (is_write)
			memcpy(&r->config_address, data, 4);
		else
			memcpy(data, &r->config_address, 4);
		pthread_mutex_unlock(&r->lock);
		return;
	}
	pthread_mutex_lock(&r->lock);
	addr = r->config_address;
	pthread_mutex_unlock(&r->lock);
	if (!(addr & 0x80000000u) || ((addr >> 16) & 0xff) != 0) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	pci_cfg_access(r, (addr >> 11) & 0x1f, (addr >> 8) & 0x7, (addr & 0xfc) + (uint32_t)(offset - 4),
		       data, len, is_write);
}

void pci_ecam(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct pci_root *r = opaque;
	uint32_t reg = offset & 0xfff;

	/* Bus 0 only: the window is one bus long. Extended space reads as absent. */
	if (reg >= PCI_CFG_SIZE) {
		if (!is_write)
			memset(data, reg < 0x100 ? 0xff : 0x00, len);
		return;
	}
	pci_cfg_access(r, (offset >> 15) & 0x1f, (offset >> 12) & 0x7, reg, data, len, is_write);
}
