/* PCI bus 0: host bridge, config space through 0xcf8/0xcfc and ECAM, BARs, capabilities, MSI-X. */
#include "pci.h"

#include <errno.h>
#include <string.h>

#include "layout.h"

uint16_t pci_cfg_get16(const struct pci_function *f, uint32_t off)
{
	return (uint16_t)(f->cfg[off] | f->cfg[off + 1] << 8);
}

uint32_t pci_cfg_get32(const struct pci_function *f, uint32_t off)
{
	return (uint32_t)f->cfg[off] | (uint32_t)f->cfg[off + 1] << 8 |
	       (uint32_t)f->cfg[off + 2] << 16 | (uint32_t)f->cfg[off + 3] << 24;
}

void pci_cfg_set16(struct pci_function *f, uint32_t off, uint16_t v)
{
	f->cfg[off] = v & 0xff;
	f->cfg[off + 1] = v >> 8;
}

void pci_cfg_set32(struct pci_function *f, uint32_t off, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		f->cfg[off + i] = (v >> (8 * i)) & 0xff;
}

static void wmask_set32(struct pci_function *f, uint32_t off, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		f->wmask[off + i] = (v >> (8 * i)) & 0xff;
}

void pci_function_init(struct pci_function *f, uint16_t vendor, uint16_t device,
		       uint32_t class_code, uint16_t subsys_vendor, uint16_t subsys_id)
{
	memset(f, 0, sizeof(*f));
	pci_cfg_set16(f, PCI_VENDOR_ID, vendor);
	pci_cfg_set16(f, PCI_DEVICE_ID, device);
	f->cfg[PCI_CLASS_REVISION + 1] = class_code & 0xff;
	f->cfg[PCI_CLASS_REVISION + 2] = (class_code >> 8) & 0xff;
	f->cfg[PCI_CLASS_REVISION + 3] = (class_code >> 16) & 0xff;
	f->cfg[PCI_HEADER_TYPE] = 0;
	pci_cfg_set16(f, PCI_SUBSYSTEM_VENDOR_ID, subsys_vendor);
	pci_cfg_set16(f, PCI_SUBSYSTEM_ID, subsys_id);
	pci_cfg_set16(f, PCI_COMMAND, 0);
	f->wmask[PCI_COMMAND] = (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER) & 0xff;
	f->wmask[PCI_COMMAND + 1] = PCI_COMMAND_INTX_DISABLE >> 8;
	f->wmask[PCI_INTERRUPT_LINE] = 0xff;
}

void pci_root_init(struct pci_root *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	pci_function_init(&r->host_bridge, 0x1b36, 0x0008, 0x060000, 0x1b36, 0x0008);
	r->devs[0] = &r->host_bridge;
	r->mmio_base = LAYOUT_PCI_MMIO;
	r->mmio_size = LAYOUT_PCI_MMIO_SIZE;
	r->mmio_next = LAYOUT_PCI_MMIO;
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

void pci_remove_device(struct pci_root *r, struct pci_function *f)
{
	pthread_mutex_lock(&r->lock);
	for (int i = 1; i < PCI_MAX_DEVICES; i++) {
		if (r->devs[i] == f)
			r->devs[i] = NULL;
	}
	pthread_mutex_unlock(&r->lock);
}

int pci_alloc_mmio(struct pci_root *r, uint64_t size, uint64_t *addr)
{
	uint64_t a, end = r->mmio_base + r->mmio_size;
	int ret = -ENOSPC;

	if (size < 16 || (size & (size - 1)) || size > r->mmio_size)
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	a = (r->mmio_next + size - 1) & ~(size - 1);
	if (a >= r->mmio_next && a <= end && size <= end - a) {
		r->mmio_next = a + size;
		*addr = a;
		ret = 0;
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

bool pci_in_mmio_window(const struct pci_root *r, uint64_t addr, uint64_t len)
{
	return addr >= r->mmio_base && addr - r->mmio_base <= r->mmio_size &&
	       len <= r->mmio_size - (addr - r->mmio_base);
}

void pci_function_cfg_rw(struct pci_function *f, uint32_t reg, uint8_t *data, uint32_t len,
			 bool is_write)
{
	if (len == 0 || len > 4 || reg >= PCI_CFG_SIZE || len > PCI_CFG_SIZE - reg) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	if (is_write) {
		for (uint32_t i = 0; i < len; i++)
			f->cfg[reg + i] = (f->cfg[reg + i] & ~f->wmask[reg + i]) |
					  (data[i] & f->wmask[reg + i]);
	} else {
		memcpy(data, &f->cfg[reg], len);
	}
}

int pci_function_set_bar32(struct pci_function *f, unsigned int bar, uint32_t addr, uint32_t size)
{
	uint32_t off = PCI_BAR0 + 4 * bar;

	if (bar >= PCI_NUM_BARS || size < 16 || size > 0x80000000u || (size & (size - 1)) ||
	    (addr & (size - 1)))
		return -EINVAL;
	/* Memory space (bit 0 clear), 32-bit type (bits 2:1 = 0), not prefetchable. */
	pci_cfg_set32(f, off, addr);
	wmask_set32(f, off, ~(size - 1));
	return 0;
}

uint32_t pci_function_bar32(const struct pci_function *f, unsigned int bar)
{
	if (bar >= PCI_NUM_BARS)
		return 0;
	return pci_cfg_get32(f, PCI_BAR0 + 4 * bar) & ~0xfu;
}

int pci_function_add_cap(struct pci_function *f, const uint8_t *cap, uint32_t len)
{
	uint32_t off = f->cap_end ? ((uint32_t)f->cap_end + 3) & ~3u : PCI_CAP_START;

	if (len < 4 || len > PCI_CFG_SIZE)
		return -EINVAL;
	if (off >= PCI_CFG_SIZE || len > PCI_CFG_SIZE - off)
		return -ENOSPC;
	memcpy(&f->cfg[off], cap, len);
	memset(&f->wmask[off], 0, len);
	f->cfg[off + 1] = 0;
	if (f->cap_last)
		f->cfg[f->cap_last + 1] = (uint8_t)off;
	else
		f->cfg[PCI_CAP_PTR] = (uint8_t)off;
	f->cap_last = (uint8_t)off;
	/* An end at byte 256 does not fit in uint8_t: it then reads as full below. */
	f->cap_end = (uint8_t)(off + len < PCI_CFG_SIZE ? off + len : PCI_CFG_SIZE - 1);
	pci_cfg_set16(f, PCI_STATUS, pci_cfg_get16(f, PCI_STATUS) | PCI_STATUS_CAP_LIST);
	return (int)off;
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
	if (f->cfg_access) {
		/* Functions are only removed while no vCPU runs: @f stays valid. */
		pthread_mutex_unlock(&r->lock);
		f->cfg_access(f, reg, data, len, is_write);
		return;
	}
	pci_function_cfg_rw(f, reg, data, len, is_write);
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
	pci_cfg_access(r, (addr >> 11) & 0x1f, (addr >> 8) & 0x7,
		       (addr & 0xfc) + (uint32_t)(offset - 4), data, len, is_write);
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

/* ---- MSI-X ---- */

int pci_msix_init(struct pci_msix *m, struct pci_function *f, uint16_t nvec, unsigned int bar,
		  uint32_t table_off, uint32_t pba_off)
{
	uint8_t cap[PCI_MSIX_CAP_SIZE] = {PCI_CAP_ID_MSIX};
	int off;

	if (nvec == 0 || nvec > PCI_MSIX_MAX_VECTORS || bar >= PCI_NUM_BARS || (table_off & 7) ||
	    (pba_off & 7))
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	m->nvec = nvec;
	for (unsigned int i = 0; i < nvec; i++)
		m->table[i][3] = PCI_MSIX_ENTRY_MASKED;
	/* Table size is encoded as N - 1; enable and function mask start clear. */
	cap[PCI_MSIX_CTRL] = (nvec - 1) & 0xff;
	cap[PCI_MSIX_CTRL + 1] = ((nvec - 1) >> 8) & 0x07;
	for (int i = 0; i < 4; i++) {
		cap[PCI_MSIX_TABLE + i] = ((table_off | bar) >> (8 * i)) & 0xff;
		cap[PCI_MSIX_PBA + i] = ((pba_off | bar) >> (8 * i)) & 0xff;
	}
	off = pci_function_add_cap(f, cap, sizeof(cap));
	if (off < 0)
		return off;
	m->cap = (uint8_t)off;
	f->wmask[off + PCI_MSIX_CTRL + 1] = (PCI_MSIX_CTRL_ENABLE | PCI_MSIX_CTRL_MASKALL) >> 8;
	return 0;
}

uint32_t pci_msix_table_size(const struct pci_msix *m)
{
	return (uint32_t)m->nvec * PCI_MSIX_ENTRY_SIZE;
}

uint32_t pci_msix_pba_size(const struct pci_msix *m)
{
	return ((uint32_t)m->nvec + 63) / 64 * 8;
}

bool pci_msix_enabled(const struct pci_msix *m, const struct pci_function *f)
{
	return m->cap && (pci_cfg_get16(f, m->cap + PCI_MSIX_CTRL) & PCI_MSIX_CTRL_ENABLE);
}

bool pci_msix_function_masked(const struct pci_msix *m, const struct pci_function *f)
{
	return m->cap && (pci_cfg_get16(f, m->cap + PCI_MSIX_CTRL) & PCI_MSIX_CTRL_MASKALL);
}

bool pci_msix_deliverable(const struct pci_msix *m, const struct pci_function *f, uint32_t vec,
			  uint64_t *addr, uint32_t *data)
{
	if (!pci_msix_enabled(m, f) || pci_msix_function_masked(m, f) || vec >= m->nvec ||
	    (m->table[vec][3] & PCI_MSIX_ENTRY_MASKED))
		return false;
	if (addr)
		*addr = (uint64_t)m->table[vec][1] << 32 | m->table[vec][0];
	if (data)
		*data = m->table[vec][2];
	return true;
}

/* Bits of each table dword the guest may write: address dword aligned, vector control bit 0. */
static const uint32_t msix_entry_wmask[4] = {0xfffffffcu, 0xffffffffu, 0xffffffffu,
					     PCI_MSIX_ENTRY_MASKED};

bool pci_msix_table_access(struct pci_msix *m, uint64_t off, uint8_t *data, uint32_t len,
			   bool is_write)
{
	uint64_t size = pci_msix_table_size(m);
	bool changed = false;

	if ((len != 4 && len != 8) || (off & (len - 1)) || off >= size || len > size - off) {
		if (!is_write)
			memset(data, 0, len);
		return false;
	}
	for (uint32_t done = 0; done < len; done += 4) {
		uint64_t dw = (off + done) / 4;
		uint32_t *p = &m->table[dw / 4][dw % 4];
		uint32_t mask = msix_entry_wmask[dw % 4];
		uint32_t v;

		if (is_write) {
			memcpy(&v, data + done, 4);
			v = (*p & ~mask) | (v & mask);
			if (v != *p)
				changed = true;
			*p = v;
		} else {
			memcpy(data + done, p, 4);
		}
	}
	return changed;
}

void pci_msix_pba_read(const struct pci_msix *m, uint64_t off, uint8_t *data, uint32_t len)
{
	uint64_t v;

	memset(data, 0, len);
	if ((len != 4 && len != 8) || (off & (len - 1)) || off >= 8)
		return;
	v = m->pba >> (8 * off);
	memcpy(data, &v, len);
}

void pci_msix_set_pending(struct pci_msix *m, uint32_t vec, bool pending)
{
	if (vec >= m->nvec)
		return;
	if (pending)
		m->pba |= 1ull << vec;
	else
		m->pba &= ~(1ull << vec);
}

bool pci_msix_pending(const struct pci_msix *m, uint32_t vec)
{
	return vec < m->nvec && (m->pba >> vec) & 1;
}
