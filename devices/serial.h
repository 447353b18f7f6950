/* 16550A UART model: the guest console on COM1. */
#ifndef LIBVMM_DEVICES_SERIAL_H
#define LIBVMM_DEVICES_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/irq.h"

struct serial;

/*
 * Create a UART that raises @gsi on @irq and writes transmitted bytes to
 * @out_fd (-1: discard). Does not take ownership of @out_fd.
 * Returns NULL on allocation failure.
 */
struct serial *serial_create(const struct irq_chip *irq, uint32_t gsi, int out_fd);
void serial_destroy(struct serial *s);

/* Bus handler for the 8 registers at the UART's base port; @opaque is the serial. */
void serial_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

/*
 * Queue bytes from the host side for the guest to read (RBR). Accepts at most
 * serial_rx_space() bytes and returns how many it took; raises the receive
 * interrupt when enabled. Thread safe.
 */
size_t serial_feed(struct serial *s, const uint8_t *buf, size_t n);

/* Free room in the receive FIFO. Thread safe. */
size_t serial_rx_space(struct serial *s);

/*
 * An eventfd that becomes readable when the guest frees room in a receive
 * FIFO that was full, so an input thread can wait instead of polling.
 * The caller reads (clears) it. Owned by the serial.
 */
int serial_rx_space_fd(const struct serial *s);

#endif
