/*
 * Shared fixture of the loader and boot_params tests: one fake guest RAM with
 * its error message, and the tests' own little-endian field access.
 */
#ifndef LIBVMM_TESTS_UNIT_BOOT_TEST_UTIL_H
#define LIBVMM_TESTS_UNIT_BOOT_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "lib/layout.h"
#include "lib/memory.h"

#define RAM_SIZE MiB(64)
#define POISON	 0xcc /* what every byte of RAM holds when a test starts */

extern uint8_t *ram;	    /* RAM_SIZE bytes: guest physical 0 */
extern struct guest_mem gm; /* a fake guest_mem over ram */
extern struct vmm_err err;  /* pass &err to code under test */

/* cmocka group setup and teardown: allocate and free ram, set up gm. */
int fake_ram_setup(void **state);
int fake_ram_teardown(void **state);

/* cmocka per-test setup: fill ram with POISON and clear err. */
int fake_ram_reset(void **state);

/* Fail the test unless err.msg contains @needle. */
void expect_msg(const char *needle);

/*
 * The @n-byte little-endian field at @p (n <= 8). The tests encode and decode
 * boot protocol fields with these and not with the library's own helpers, so
 * that a byte-order bug in the library cannot cancel itself out in a test.
 */
void put_le(uint8_t *p, uint64_t v, unsigned int n);
uint64_t get_le(const uint8_t *p, unsigned int n);

#endif
