/* i8042 keyboard controller model: just enough for Linux's probe and the reset line. */
#ifndef LIBVMM_DEVICES_I8042_H
#define LIBVMM_DEVICES_I8042_H

#include <stdbool.h>
#include <stdint.h>

struct i8042;

/*
 * Create the controller. @reset(ctx) is called on a vCPU thread when the
 * guest pulses the reset line (command 0xFE, or output port bit 0 cleared
 * through command 0xD1). Returns NULL on allocation failure.
 */
struct i8042 *i8042_create(void (*reset)(void *ctx), void *ctx);
void i8042_destroy(struct i8042 *k);

/* Bus handler for ports 0x60-0x64 (register it with base 0x60, length 5):
 * offset 0 is the data port, offset 4 the command/status port; offsets 1-3
 * (port 0x61 etc.) read as 0 and ignore writes. @opaque is the i8042. */
void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#endif
