/* Shared fixture of the loader and boot_params tests: fake guest RAM, messages, LE fields. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "boot_test_util.h"

uint8_t *ram;
struct guest_mem gm;
struct vmm_err err;

int fake_ram_setup(void **state)
{
	ram = malloc(RAM_SIZE);
	if (!ram)
		return -1;
	gm_init_fake(&gm, ram, RAM_SIZE);
	return 0;
}

int fake_ram_teardown(void **state)
{
	free(ram);
	ram = NULL;
	return 0;
}

int fake_ram_reset(void **state)
{
	memset(ram, POISON, RAM_SIZE);
	err_clear(&err);
	return 0;
}

void expect_msg(const char *needle)
{
	if (!strstr(err.msg, needle))
		fail_msg("message \"%s\" does not contain \"%s\"", err.msg, needle);
}

void put_le(uint8_t *p, uint64_t v, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t get_le(const uint8_t *p, unsigned int n)
{
	uint64_t v = 0;

	for (unsigned int i = n; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}
