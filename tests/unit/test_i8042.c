/* Unit tests for the i8042 keyboard controller model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "devices/i8042.h"

#define DATA 0
#define CMD  4

#define STS_OBF 0x01
#define STS_IBF 0x02
#define STS_SYS 0x04
#define STS_AUX 0x20

struct fixture {
	struct i8042 *k;
	unsigned int resets;
	uint8_t status_in_reset; /* status read from inside the callback */
};

static uint8_t rd(struct i8042 *k, uint64_t off)
{
	uint8_t v = 0xff;

	i8042_io(k, off, &v, 1, false);
	return v;
}

static void wr(struct i8042 *k, uint64_t off, uint8_t v)
{
	i8042_io(k, off, &v, 1, true);
}

static void on_reset(void *ctx)
{
	struct fixture *f = ctx;

	f->resets++;
	/* The callback runs without the controller's lock held. */
	f->status_in_reset = rd(f->k, CMD);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->k = i8042_create(on_reset, f);
	assert_non_null(f->k);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	i8042_destroy(f->k);
	free(f);
	return 0;
}

/* Issue @cmd and read its one-byte answer. */
static uint8_t command_reply(struct i8042 *k, uint8_t cmd)
{
	wr(k, CMD, cmd);
	assert_true(rd(k, CMD) & STS_OBF);
	return rd(k, DATA);
}

static void test_self_test(void **state)
{
	struct fixture *f = *state;
	uint8_t st = rd(f->k, CMD);

	assert_int_equal(st & (STS_OBF | STS_IBF), 0);
	assert_true(st & STS_SYS);
	assert_int_equal(command_reply(f->k, 0xaa), 0x55);
	assert_int_equal(rd(f->k, CMD) & (STS_OBF | STS_IBF), 0);
	/* Interface tests pass. */
	assert_int_equal(command_reply(f->k, 0xab), 0x00);
	assert_int_equal(command_reply(f->k, 0xa9), 0x00);
	assert_int_equal(f->resets, 0);
}

static void test_obf(void **state)
{
	struct fixture *f = *state;

	assert_false(rd(f->k, CMD) & STS_OBF);
	wr(f->k, CMD, 0xaa);
	/* Reading the status does not consume the byte. */
	assert_true(rd(f->k, CMD) & STS_OBF);
	assert_true(rd(f->k, CMD) & STS_OBF);
	assert_int_equal(rd(f->k, DATA), 0x55);
	assert_false(rd(f->k, CMD) & STS_OBF);
	/* An empty buffer reads back the last byte. */
	assert_int_equal(rd(f->k, DATA), 0x55);
	assert_false(rd(f->k, CMD) & STS_OBF);
}

static void test_command_byte(void **state)
{
	struct fixture *f = *state;
	uint8_t ctr = command_reply(f->k, 0x20);

	assert_true(ctr & 0x04); /* system flag */
	wr(f->k, CMD, 0x60);
	assert_false(rd(f->k, CMD) & STS_OBF);
	wr(f->k, DATA, 0x47);
	assert_false(rd(f->k, CMD) & STS_OBF); /* not taken as a keyboard byte */
	assert_int_equal(command_reply(f->k, 0x20), 0x47);
	/* The status system flag follows the command byte. */
	wr(f->k, CMD, 0x60);
	wr(f->k, DATA, 0x41);
	assert_false(rd(f->k, CMD) & STS_SYS);
	wr(f->k, CMD, 0x60);
	wr(f->k, DATA, 0x45);
	assert_true(rd(f->k, CMD) & STS_SYS);

	/* Port enable/disable commands show in the command byte. */
	wr(f->k, CMD, 0xa7);
	assert_int_equal(command_reply(f->k, 0x20), 0x65);
	wr(f->k, CMD, 0xad);
	assert_int_equal(command_reply(f->k, 0x20), 0x75);
	wr(f->k, CMD, 0xa8);
	assert_int_equal(command_reply(f->k, 0x20), 0x55);
	wr(f->k, CMD, 0xae);
	assert_int_equal(command_reply(f->k, 0x20), 0x45);

	/* The rest of the controller RAM. */
	wr(f->k, CMD, 0x7f);
	wr(f->k, DATA, 0x9c);
	assert_int_equal(command_reply(f->k, 0x3f), 0x9c);
	assert_int_equal(command_reply(f->k, 0x20), 0x45);
	/* A command cancels a pending data byte. */
	wr(f->k, CMD, 0x60);
	wr(f->k, CMD, 0xae);
	wr(f->k, DATA, 0x00);
	assert_int_equal(rd(f->k, DATA), 0xfa); /* went to the keyboard */
	assert_int_equal(command_reply(f->k, 0x20), 0x45);
	assert_int_equal(f->resets, 0);
}

static void test_reset_fe(void **state)
{
	struct fixture *f = *state;

	wr(f->k, CMD, 0xfe);
	assert_int_equal(f->resets, 1);
	assert_true(f->status_in_reset & STS_SYS);
	wr(f->k, CMD, 0xfe);
	assert_int_equal(f->resets, 2);
}

static void test_pulse_lines(void **state)
{
	struct fixture *f = *state;

	for (unsigned int cmd = 0xf0; cmd <= 0xff; cmd++) {
		unsigned int before = f->resets;

		wr(f->k, CMD, (uint8_t)cmd);
		/* Bit 0 clear pulses the reset line. */
		assert_int_equal(f->resets - before, (cmd & 1) ? 0 : 1);
	}
	assert_false(rd(f->k, CMD) & STS_OBF);
}

static void test_output_port(void **state)
{
	struct fixture *f = *state;
	uint8_t outp = command_reply(f->k, 0xd0);

	assert_int_equal(outp & 0x03, 0x03); /* not in reset, A20 on */
	/* Bit 0 set: no reset. */
	wr(f->k, CMD, 0xd1);
	wr(f->k, DATA, 0x01);
	assert_int_equal(f->resets, 0);
	assert_false(rd(f->k, CMD) & STS_OBF);
	assert_int_equal(command_reply(f->k, 0xd0), 0x01);
	wr(f->k, CMD, 0xd1);
	wr(f->k, DATA, 0xdf);
	assert_int_equal(f->resets, 0);
	assert_int_equal(command_reply(f->k, 0xd0), 0xdf);
	/* Bit 0 clear: reset, once. */
	wr(f->k, CMD, 0xd1);
	wr(f->k, DATA, 0xde);
	assert_int_equal(f->resets, 1);
	/* The following data byte is a keyboard byte again, not a second reset. */
	wr(f->k, DATA, 0x00);
	assert_int_equal(f->resets, 1);
	assert_int_equal(rd(f->k, DATA), 0xfa);
	/* The line came back up after the pulse. */
	assert_int_equal(command_reply(f->k, 0xd0) & 0x01, 0x01);
}

static void test_write_obufs(void **state)
{
	struct fixture *f = *state;

	/* 0xd2: as if from the keyboard. */
	wr(f->k, CMD, 0xd2);
	wr(f->k, DATA, 0x1c);
	assert_int_equal(rd(f->k, CMD) & (STS_OBF | STS_AUX), STS_OBF);
	assert_int_equal(rd(f->k, DATA), 0x1c);
	/* 0xd3: as if from the mouse (the AUX loopback probe). */
	wr(f->k, CMD, 0xd3);
	wr(f->k, DATA, 0x5a);
	assert_int_equal(rd(f->k, CMD) & (STS_OBF | STS_AUX), STS_OBF | STS_AUX);
	assert_int_equal(rd(f->k, DATA), 0x5a);
	assert_int_equal(rd(f->k, CMD) & (STS_OBF | STS_AUX), 0);
	/* 0xd4: to the mouse, which is absent: nothing comes back. */
	wr(f->k, CMD, 0xd4);
	wr(f->k, DATA, 0xf2);
	assert_false(rd(f->k, CMD) & STS_OBF);
	assert_int_equal(f->resets, 0);
}

static void test_keyboard_bytes(void **state)
{
	struct fixture *f = *state;

	wr(f->k, DATA, 0xf4); /* enable scanning */
	assert_true(rd(f->k, CMD) & STS_OBF);
	assert_int_equal(rd(f->k, DATA), 0xfa);
	assert_false(rd(f->k, CMD) & STS_OBF);

	wr(f->k, DATA, 0xf2); /* identify */
	assert_int_equal(rd(f->k, DATA), 0xfa);
	assert_int_equal(rd(f->k, DATA), 0xab);
	assert_int_equal(rd(f->k, DATA), 0x83);
	assert_false(rd(f->k, CMD) & STS_OBF);

	wr(f->k, DATA, 0xff); /* reset the keyboard, not the machine */
	assert_int_equal(rd(f->k, DATA), 0xfa);
	assert_int_equal(rd(f->k, DATA), 0xaa);
	wr(f->k, DATA, 0xee);
	assert_int_equal(rd(f->k, DATA), 0xee);
	assert_false(rd(f->k, CMD) & STS_OBF);

	/* A controller reply replaces unread keyboard bytes. */
	wr(f->k, DATA, 0xf4);
	wr(f->k, DATA, 0xf4);
	assert_int_equal(command_reply(f->k, 0xaa), 0x55);
	assert_false(rd(f->k, CMD) & STS_OBF);
	/* Unread bytes never overflow. */
	for (int i = 0; i < 100; i++)
		wr(f->k, DATA, 0xf2);
	for (int i = 0; i < 16 && (rd(f->k, CMD) & STS_OBF); i++)
		rd(f->k, DATA);
	assert_false(rd(f->k, CMD) & STS_OBF);
	assert_int_equal(f->resets, 0);
}

static void test_unknown_commands(void **state)
{
	struct fixture *f = *state;

	for (unsigned int cmd = 0; cmd < 0xf0; cmd++) {
		wr(f->k, CMD, (uint8_t)cmd);
		/* Whatever the command waits for gets a harmless byte. */
		wr(f->k, DATA, 0x47);
		for (int i = 0; i < 8 && (rd(f->k, CMD) & STS_OBF); i++)
			rd(f->k, DATA);
		assert_false(rd(f->k, CMD) & STS_OBF);
	}
	assert_int_equal(f->resets, 0);
	assert_int_equal(command_reply(f->k, 0xaa), 0x55);
	assert_int_equal(command_reply(f->k, 0x20), 0x47);
}

/* What Linux's probe does: flush, self test, read and write the command byte. */
static void test_linux_like_probe(void **state)
{
	struct fixture *f = *state;
	uint8_t ctr;
	int i;

	for (i = 0; i < 16 && (rd(f->k, CMD) & STS_OBF); i++)
		rd(f->k, DATA);
	assert_int_equal(i, 0);
	assert_int_equal(command_reply(f->k, 0xaa), 0x55);
	ctr = command_reply(f->k, 0x20);
	ctr &= (uint8_t)~0x03; /* interrupts off */
	ctr |= 0x30;	       /* both ports off */
	wr(f->k, CMD, 0x60);
	wr(f->k, DATA, ctr);
	assert_int_equal(command_reply(f->k, 0x20), ctr);
	wr(f->k, CMD, 0xd3);
	wr(f->k, DATA, 0xa5);
	assert_int_equal(rd(f->k, DATA), 0xa5);
	assert_int_equal(command_reply(f->k, 0xa9), 0x00);
	wr(f->k, CMD, 0xa8);
	assert_false(command_reply(f->k, 0x20) & 0x20);
	assert_int_equal(f->resets, 0);
}

static void test_other_ports(void **state)
{
	struct fixture *f = *state;
	uint8_t d[8];
	static const uint32_t lens[] = {0, 2, 4, 8};

	for (uint64_t off = 1; off < 4; off++) {
		assert_int_equal(rd(f->k, off), 0x00);
		wr(f->k, off, 0xfe);
		wr(f->k, off, 0xaa);
	}
	assert_int_equal(f->resets, 0);
	assert_false(rd(f->k, CMD) & STS_OBF);
	/* Beyond the range: untouched. */
	assert_int_equal(rd(f->k, 5), 0xff);
	assert_int_equal(rd(f->k, UINT64_MAX), 0xff);
	wr(f->k, 5, 0xfe);
	wr(f->k, UINT64_MAX, 0xfe);
	assert_int_equal(f->resets, 0);
	/* Odd lengths: the first byte only. */
	for (unsigned int l = 0; l < 4; l++) {
		for (uint64_t off = 0; off < 6; off++) {
			memset(d, 0xff, sizeof(d));
			i8042_io(f->k, off, d, lens[l], false);
			for (uint32_t i = 1; i < lens[l]; i++)
				assert_int_equal(d[i], 0xff);
		}
	}
	memset(d, 0, sizeof(d));
	d[0] = 0xaa;
	d[1] = 0xfe;
	i8042_io(f->k, CMD, d, 2, true);
	assert_int_equal(f->resets, 0);
	assert_int_equal(rd(f->k, DATA), 0x55);
}

static void test_no_callback(void **state)
{
	struct i8042 *k = i8042_create(NULL, NULL);

	(void)state;
	assert_non_null(k);
	wr(k, CMD, 0xfe);
	wr(k, CMD, 0xd1);
	wr(k, DATA, 0x00);
	assert_int_equal(command_reply(k, 0xaa), 0x55);
	i8042_destroy(k);
	i8042_destroy(NULL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_self_test),	  T(test_obf),
		T(test_command_byte),	  T(test_reset_fe),
		T(test_pulse_lines),	  T(test_output_port),
		T(test_write_obufs),	  T(test_keyboard_bytes),
		T(test_unknown_commands), T(test_linux_like_probe),
		T(test_other_ports),	  cmocka_unit_test(test_no_callback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
