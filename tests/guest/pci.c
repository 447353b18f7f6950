/* PCI bus 0 through configuration mechanism #1 (ports 0xcf8/0xcfc). */
#include "guest.h"

#define PCI_ADDR 0xcf8
#define PCI_DATA 0xcfc

static u32 cfg_addr(u32 dev, u32 fn, u32 reg)
{
	return 0x80000000u | dev << 11 | fn << 8 | (reg & 0xfc);
}

static u32 cfg_read(u32 dev, u32 fn, u32 reg)
{
	outl(PCI_ADDR, cfg_addr(dev, fn, reg));
	return inl(PCI_DATA);
}

u32 pci_read32(u32 dev, u32 fn, u32 reg)
{
	return cfg_read(dev, fn, reg);
}

u16 pci_read16(u32 dev, u32 fn, u32 reg)
{
	return (u16)(cfg_read(dev, fn, reg) >> ((reg & 2) * 8));
}

u8 pci_read8(u32 dev, u32 fn, u32 reg)
{
	return (u8)(cfg_read(dev, fn, reg) >> ((reg & 3) * 8));
}

void pci_write32(u32 dev, u32 fn, u32 reg, u32 v)
{
	outl(PCI_ADDR, cfg_addr(dev, fn, reg));
	outl(PCI_DATA, v);
}

void pci_write16(u32 dev, u32 fn, u32 reg, u16 v)
{
	outl(PCI_ADDR, cfg_addr(dev, fn, reg));
	outw((u16)(PCI_DATA + (reg & 2)), v);
}

void pci_scan(void)
{
	u32 dev, fn, nfn, id;

	for (dev = 0; dev < 32; dev++) {
		id = cfg_read(dev, 0, 0);
		if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
			continue;
		nfn = (cfg_read(dev, 0, 0x0c) >> 16) & 0x80 ? 8 : 1; /* multifunction */
		for (fn = 0; fn < nfn; fn++) {
			id = cfg_read(dev, fn, 0);
			if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
				continue;
			gprintf("GUEST pci 00:%02x.%u vendor=0x%04x device=0x%04x class=0x%06x\n",
				dev, fn, id & 0xffff, id >> 16, cfg_read(dev, fn, 0x08) >> 8);
		}
	}
}
