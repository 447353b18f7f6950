/* How device models raise interrupts, without knowing about KVM. */
#ifndef LIBVMM_LIB_IRQ_H
#define LIBVMM_LIB_IRQ_H

#include <stdint.h>

/*
 * An interrupt controller input. set_level(ctx, gsi, level) drives line @gsi
 * (level 1 asserts, 0 deasserts). In a VM this is KVM_IRQ_LINE on the
 * in-kernel IOAPIC/PIC; unit tests pass a sink that records calls.
 */
struct irq_chip {
	void (*set_level)(void *ctx, uint32_t gsi, int level);
	void *ctx;
};

static inline void irq_set(const struct irq_chip *c, uint32_t gsi, int level)
{
	if (c && c->set_level)
		c->set_level(c->ctx, gsi, level);
}

#endif
