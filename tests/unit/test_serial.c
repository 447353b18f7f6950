/* Unit tests for the 16550A UART model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/serial.h"

#define GSI 4

#define THR 0
#define RBR 0
#define DLL 0
#define IER 1
#define DLM 1
#define IIR 2
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define MSR 6
#define SCR 7

#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

/* Records every call the UART makes on its interrupt line. */
struct sink {
	pthread_mutex_t lock;
	unsigned int calls;
	uint32_t gsi[64]; /* the first 64 calls */
	int level[64];
	uint32_t last_gsi;
	int last_level;
	bool bad_toggle; /* a call that did not change the level */
};

static void sink_set(void *ctx, uint32_t gsi, int level)
{
	struct sink *k = ctx;

	pthread_mutex_lock(&k->lock);
	if (k->calls ? level == k->last_level : level == 0)
		k->bad_toggle = true;
	k->last_gsi = gsi;
	k->last_level = level;
	if (k->calls < 64) {
		k->gsi[k->calls] = gsi;
		k->level[k->calls] = level;
	}
	k->calls++;
	pthread_mutex_unlock(&k->lock);
}

struct fixture {
	struct sink sink;
	struct irq_chip chip;
	int pipe[2]; /* the UART writes pipe[1]; tests read pipe[0] */
	struct serial *s;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	pthread_mutex_init(&f->sink.lock, NULL);
	f->chip = (struct irq_chip){sink_set, &f->sink};
	assert_int_equal(pipe2(f->pipe, O_CLOEXEC), 0);
	assert_int_equal(fcntl(f->pipe[0], F_SETFL, O_NONBLOCK), 0);
	f->s = serial_create(&f->chip, GSI, f->pipe[1]);
	assert_non_null(f->s);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	serial_destroy(f->s);
	close(f->pipe[0]);
	close(f->pipe[1]);
	pthread_mutex_destroy(&f->sink.lock);
	free(f);
	return 0;
}

static void wr(struct serial *s, uint64_t off, uint8_t v)
{
	serial_io(s, off, &v, 1, true);
}

static uint8_t rd(struct serial *s, uint64_t off)
{
	uint8_t v = 0xff;

	serial_io(s, off, &v, 1, false);
	return v;
}

/* Bytes waiting in the output pipe (non-blocking). */
static ssize_t drain(struct fixture *f, uint8_t *buf, size_t n)
{
	ssize_t r = read(f->pipe[0], buf, n);

	if (r < 0) {
		assert_true(errno == EAGAIN);
		return 0;
	}
	return r;
}

static int last_level(struct fixture *f)
{
	assert_true(f->sink.calls > 0);
	assert_int_equal(f->sink.last_gsi, GSI);
	return f->sink.last_level;
}

static bool space_fd_ready(struct serial *s)
{
	struct pollfd p = {.fd = serial_rx_space_fd(s), .events = POLLIN};

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void test_tx_in_order(void **state)
{
	struct fixture *f = *state;
	const char *msg = "Hello, guest console!\n";
	uint8_t buf[64];

	for (size_t i = 0; i < strlen(msg); i++)
		wr(f->s, THR, (uint8_t)msg[i]);
	assert_int_equal(drain(f, buf, sizeof(buf)), strlen(msg));
	assert_memory_equal(buf, msg, strlen(msg));
	assert_int_equal(drain(f, buf, sizeof(buf)), 0);
}

static void test_dlab(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[8];

	wr(f->s, IER, 0x05);
	wr(f->s, LCR, 0x83); /* DLAB, 8N1 */
	wr(f->s, DLL, 0x01);
	wr(f->s, DLM, 0x02);
	assert_int_equal(rd(f->s, DLL), 0x01);
	assert_int_equal(rd(f->s, DLM), 0x02);
	assert_int_equal(rd(f->s, LCR), 0x83);
	wr(f->s, LCR, 0x03);
	/* The divisor did not go out, and IER is untouched behind it. */
	assert_int_equal(drain(f, buf, sizeof(buf)), 0);
	assert_int_equal(rd(f->s, IER), 0x05);
	wr(f->s, THR, 'x');
	assert_int_equal(drain(f, buf, sizeof(buf)), 1);
	assert_int_equal(buf[0], 'x');
	/* The divisor is kept. */
	wr(f->s, LCR, 0x83);
	assert_int_equal(rd(f->s, DLL), 0x01);
	assert_int_equal(rd(f->s, DLM), 0x02);
}

static void test_lsr(void **state)
{
	struct fixture *f = *state;
	uint8_t b = 'a';

	assert_int_equal(rd(f->s, LSR), 0x60); /* THRE | TEMT */
	wr(f->s, THR, 'z');
	assert_int_equal(rd(f->s, LSR), 0x60);
	assert_int_equal(serial_feed(f->s, &b, 1), 1);
	assert_int_equal(rd(f->s, LSR), 0x61);
	assert_int_equal(rd(f->s, RBR), 'a');
	assert_int_equal(rd(f->s, LSR), 0x60);
	/* An empty receiver returns the last byte again and keeps DR clear. */
	assert_int_equal(rd(f->s, RBR), 'a');
	assert_int_equal(rd(f->s, LSR), 0x60);
}

static void test_rx_16450(void **state)
{
	struct fixture *f = *state;
	const uint8_t in[2] = {'p', 'q'};

	/* FIFOs off: one receiver buffer. */
	assert_int_equal(serial_rx_space(f->s), 1);
	assert_int_equal(serial_feed(f->s, in, 2), 1);
	assert_int_equal(serial_rx_space(f->s), 0);
	assert_int_equal(serial_feed(f->s, in + 1, 1), 0);
	assert_false(space_fd_ready(f->s));
	assert_int_equal(rd(f->s, RBR), 'p');
	assert_true(space_fd_ready(f->s));
	assert_int_equal(serial_rx_space(f->s), 1);
	assert_int_equal(serial_feed(f->s, in + 1, 1), 1);
	assert_int_equal(rd(f->s, RBR), 'q');
	assert_int_equal(rd(f->s, LSR) & 0x03, 0); /* no DR, no overrun */
}

static void test_rx_fifo(void **state)
{
	struct fixture *f = *state;
	uint8_t in[20], b;
	uint64_t count;

	for (unsigned int i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(0x40 + i);
	wr(f->s, FCR, 0x07); /* enable, clear both */
	assert_int_equal(rd(f->s, IIR) & 0xc0, 0xc0);
	assert_int_equal(serial_rx_space(f->s), 16);
	assert_int_equal(serial_feed(f->s, in, 5), 5);
	assert_int_equal(serial_rx_space(f->s), 11);
	assert_int_equal(serial_feed(f->s, in + 5, 15), 11);
	assert_int_equal(serial_rx_space(f->s), 0);
	assert_int_equal(serial_feed(f->s, in, 1), 0);
	/* A full FIFO fed by the host never overruns. */
	assert_int_equal(rd(f->s, LSR), 0x61);
	assert_false(space_fd_ready(f->s));

	assert_int_equal(rd(f->s, RBR), in[0]);
	assert_int_equal(serial_rx_space(f->s), 1);
	assert_true(space_fd_ready(f->s));
	assert_int_equal(read(serial_rx_space_fd(f->s), &count, sizeof(count)), sizeof(count));
	assert_int_equal(count, 1);
	assert_false(space_fd_ready(f->s));
	/* Draining a FIFO that was not full does not signal. */
	for (unsigned int i = 1; i < 16; i++) {
		assert_int_equal(rd(f->s, LSR) & 0x01, 0x01);
		assert_int_equal(rd(f->s, RBR), in[i]);
	}
	assert_false(space_fd_ready(f->s));
	assert_int_equal(rd(f->s, LSR), 0x60);
	assert_int_equal(serial_rx_space(f->s), 16);

	/* FCR clear-RX empties the FIFO, and signals when it was full. */
	assert_int_equal(serial_feed(f->s, in, 16), 16);
	wr(f->s, FCR, 0x03);
	assert_int_equal(serial_rx_space(f->s), 16);
	assert_int_equal(rd(f->s, LSR), 0x60);
	assert_true(space_fd_ready(f->s));
	assert_int_equal(read(serial_rx_space_fd(f->s), &count, sizeof(count)), sizeof(count));

	/* Turning FIFOs off drops back to one byte, emptied. */
	b = 'k';
	assert_int_equal(serial_feed(f->s, &b, 1), 1);
	wr(f->s, FCR, 0x00);
	assert_int_equal(rd(f->s, IIR) & 0xc0, 0);
	assert_int_equal(serial_rx_space(f->s), 1);
	assert_int_equal(rd(f->s, LSR), 0x60);
}

static void test_rx_irq(void **state)
{
	struct fixture *f = *state;
	uint8_t b = 'r';

	wr(f->s, IER, 0x01);
	/* OUT2 clear: the interrupt is pending but gated off the line. */
	assert_int_equal(serial_feed(f->s, &b, 1), 1);
	assert_int_equal(f->sink.calls, 0);
	assert_int_equal(rd(f->s, IIR), 0x04);
	wr(f->s, MCR, MCR_OUT2);
	assert_int_equal(f->sink.calls, 1);
	assert_int_equal(last_level(f), 1);
	assert_int_equal(rd(f->s, IIR), 0x04);
	assert_int_equal(rd(f->s, RBR), 'r');
	assert_int_equal(rd(f->s, IIR), 0x01);
	assert_int_equal(f->sink.calls, 2);
	assert_int_equal(last_level(f), 0);

	/* A new byte after the clear gives a fresh rising edge. */
	b = 's';
	assert_int_equal(serial_feed(f->s, &b, 1), 1);
	assert_int_equal(f->sink.calls, 3);
	assert_int_equal(last_level(f), 1);
	/* Disabling the source lowers the line. */
	wr(f->s, IER, 0x00);
	assert_int_equal(f->sink.calls, 4);
	assert_int_equal(last_level(f), 0);
	assert_int_equal(rd(f->s, IIR), 0x01);
	wr(f->s, IER, 0x01);
	assert_int_equal(last_level(f), 1);
	/* Clearing OUT2 lowers it too. */
	wr(f->s, MCR, 0x00);
	assert_int_equal(last_level(f), 0);
	assert_int_equal(rd(f->s, IIR), 0x04);
	assert_int_equal(f->sink.calls, 6);

	/* FIFO mode sets IIR bits 7:6. */
	wr(f->s, FCR, 0x01);
	assert_int_equal(serial_feed(f->s, &b, 1), 1);
	assert_int_equal(rd(f->s, IIR), 0xc4);
}

static void test_thre_irq(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[4];

	wr(f->s, MCR, MCR_OUT2 | 0x03);
	assert_int_equal(f->sink.calls, 0);
	/* Enabling the THRE interrupt with THR empty raises it at once. */
	wr(f->s, IER, 0x02);
	assert_int_equal(f->sink.calls, 1);
	assert_int_equal(last_level(f), 1);
	/* Reading IIR while it reports THRE clears it. */
	assert_int_equal(rd(f->s, IIR), 0x02);
	assert_int_equal(last_level(f), 0);
	assert_int_equal(rd(f->s, IIR), 0x01);
	assert_int_equal(f->sink.calls, 2);

	/* Each THR write empties THR again: a new interrupt, a new edge. */
	wr(f->s, THR, 'a');
	assert_int_equal(f->sink.calls, 3);
	assert_int_equal(last_level(f), 1);
	/* While pending, a THR write clears it and it returns on its own edge. */
	wr(f->s, THR, 'b');
	assert_int_equal(f->sink.calls, 5);
	assert_int_equal(f->sink.level[3], 0);
	assert_int_equal(f->sink.level[4], 1);
	assert_int_equal(drain(f, buf, sizeof(buf)), 2);

	/* Disabling the interrupt lowers the line; re-enabling re-arms it. */
	wr(f->s, IER, 0x00);
	assert_int_equal(last_level(f), 0);
	assert_int_equal(rd(f->s, IIR), 0x01);
	wr(f->s, IER, 0x02);
	assert_int_equal(last_level(f), 1);
	assert_int_equal(rd(f->s, IIR), 0x02);
	assert_int_equal(last_level(f), 0);
	assert_int_equal(f->sink.calls, 8);
	for (unsigned int i = 0; i < f->sink.calls; i++)
		assert_int_equal(f->sink.gsi[i], GSI);
}

static void test_irq_priority(void **state)
{
	struct fixture *f = *state;
	uint8_t b = 'x';

	wr(f->s, MCR, MCR_OUT2);
	wr(f->s, IER, 0x03);
	assert_int_equal(serial_feed(f->s, &b, 1), 1);
	/* Received data outranks THR empty. */
	assert_int_equal(rd(f->s, IIR), 0x04);
	assert_int_equal(rd(f->s, IIR), 0x04);
	assert_int_equal(last_level(f), 1);
	assert_int_equal(rd(f->s, RBR), 'x');
	/* The THRE interrupt was not cleared by the IIR reads that showed RX. */
	assert_int_equal(rd(f->s, IIR), 0x02);
	assert_int_equal(rd(f->s, IIR), 0x01);
	assert_int_equal(last_level(f), 0);
}

static void test_loopback(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[4], b = 'h';

	assert_int_equal(rd(f->s, MSR) & 0xf0, 0xb0); /* DCD, DSR, CTS */
	wr(f->s, FCR, 0x01);
	wr(f->s, IER, 0x01);
	/* The probe Linux does: RTS and OUT2 come back as CTS and DCD. */
	wr(f->s, MCR, MCR_LOOP | 0x0a);
	assert_int_equal(rd(f->s, MCR), MCR_LOOP | 0x0a);
	assert_int_equal(rd(f->s, MSR) & 0xf0, 0x90);
	wr(f->s, MCR, MCR_LOOP | 0x05);
	assert_int_equal(rd(f->s, MSR) & 0xf0, 0x60);

	/* The receiver hears the transmitter, not the host. */
	assert_int_equal(serial_rx_space(f->s), 0);
	assert_int_equal(serial_feed(f->s, &b, 1), 0);
	wr(f->s, THR, 'L');
	wr(f->s, THR, 'B');
	assert_int_equal(drain(f, buf, sizeof(buf)), 0);
	assert_int_equal(rd(f->s, LSR), 0x61);
	/* Loopback cuts the interrupt off the line even with OUT2 set. */
	assert_int_equal(rd(f->s, IIR), 0xc4);
	wr(f->s, MCR, MCR_LOOP | MCR_OUT2);
	assert_int_equal(f->sink.calls, 0);
	assert_int_equal(rd(f->s, RBR), 'L');
	assert_int_equal(rd(f->s, RBR), 'B');
	assert_int_equal(rd(f->s, LSR), 0x60);

	/* Leaving loopback gives the host its room back, and says so. */
	assert_false(space_fd_ready(f->s));
	wr(f->s, MCR, MCR_OUT2);
	assert_int_equal(serial_rx_space(f->s), 16);
	assert_true(space_fd_ready(f->s));
	assert_int_equal(rd(f->s, MSR) & 0xf0, 0xb0);
	wr(f->s, THR, 'o');
	assert_int_equal(drain(f, buf, sizeof(buf)), 1);
	assert_int_equal(buf[0], 'o');
}

static void test_overrun(void **state)
{
	struct fixture *f = *state;

	wr(f->s, FCR, 0x01);
	wr(f->s, MCR, MCR_LOOP);
	for (unsigned int i = 0; i < 17; i++)
		wr(f->s, THR, (uint8_t)('a' + i));
	wr(f->s, IER, 0x05);
	/* Line status outranks received data; reading LSR clears OE. */
	assert_int_equal(rd(f->s, IIR), 0xc6);
	assert_int_equal(rd(f->s, LSR), 0x63);
	assert_int_equal(rd(f->s, LSR), 0x61);
	assert_int_equal(rd(f->s, IIR), 0xc4);
	/* The FIFO kept the first 16 bytes; the 17th was lost. */
	for (unsigned int i = 0; i < 16; i++)
		assert_int_equal(rd(f->s, RBR), 'a' + i);
	assert_int_equal(rd(f->s, LSR), 0x60);
	assert_int_equal(rd(f->s, IIR), 0xc1);

	/* Without FIFOs the new byte overwrites the old one. */
	wr(f->s, FCR, 0x00);
	wr(f->s, THR, '1');
	wr(f->s, THR, '2');
	assert_int_equal(rd(f->s, LSR), 0x63);
	assert_int_equal(rd(f->s, RBR), '2');
	assert_int_equal(rd(f->s, LSR), 0x60);
}

static void test_modem_status_irq(void **state)
{
	struct fixture *f = *state;

	wr(f->s, IER, 0x08);
	assert_int_equal(rd(f->s, IIR), 0x01);
	wr(f->s, MCR, MCR_LOOP | 0x02); /* CTS 1 -> 1, DSR and DCD 1 -> 0 */
	assert_int_equal(rd(f->s, IIR), 0x00);
	assert_int_equal(rd(f->s, MSR), 0x1a);
	assert_int_equal(rd(f->s, MSR), 0x10);
	assert_int_equal(rd(f->s, IIR), 0x01);
	wr(f->s, MCR, MCR_LOOP | 0x06); /* RI rises: no trailing edge yet */
	assert_int_equal(rd(f->s, MSR), 0x50);
	wr(f->s, MCR, MCR_LOOP | 0x02); /* RI falls */
	assert_int_equal(rd(f->s, MSR), 0x14);
	assert_int_equal(f->sink.calls, 0);
}

static void test_scratch(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(rd(f->s, SCR), 0);
	wr(f->s, SCR, 0xa5);
	assert_int_equal(rd(f->s, SCR), 0xa5);
	wr(f->s, SCR, 0x5a);
	assert_int_equal(rd(f->s, SCR), 0x5a);
	/* LSR and MSR ignore writes. */
	wr(f->s, LSR, 0x00);
	assert_int_equal(rd(f->s, LSR), 0x60);
	wr(f->s, MSR, 0x00);
	assert_int_equal(rd(f->s, MSR), 0xb0);
}

static void test_odd_accesses(void **state)
{
	struct fixture *f = *state;
	uint8_t d[8], out[16];
	static const uint32_t lens[] = {0, 2, 4, 8};

	wr(f->s, SCR, 0x77);
	for (unsigned int l = 0; l < 4; l++) {
		for (uint64_t off = 0; off < 12; off++) {
			memset(d, 0xff, sizeof(d));
			serial_io(f->s, off, d, lens[l], false);
			for (uint32_t i = 1; i < lens[l]; i++)
				assert_int_equal(d[i], 0xff);
		}
	}
	memset(d, 0xff, sizeof(d));
	serial_io(f->s, 7, d, 4, false);
	assert_int_equal(d[0], 0x77);
	/* A wide write is its first byte. */
	memcpy(d, "wxyz", 4);
	serial_io(f->s, 0, d, 4, true);
	assert_int_equal(drain(f, out, sizeof(out)), 1);
	assert_int_equal(out[0], 'w');
	/* Offsets past the 8 registers are ignored. */
	static const uint64_t far[] = {8, 9, 255, 0x10000, UINT64_MAX};

	for (unsigned int i = 0; i < 5; i++) {
		memset(d, 0xff, sizeof(d));
		serial_io(f->s, far[i], d, 1, false);
		assert_int_equal(d[0], 0xff);
		d[0] = 'q';
		serial_io(f->s, far[i], d, 1, true);
	}
	assert_int_equal(drain(f, out, sizeof(out)), 0);
	assert_int_equal(rd(f->s, SCR), 0x77);
	assert_int_equal(f->sink.calls, 0);
}

static void test_discard_and_no_irq_chip(void **state)
{
	struct serial *s = serial_create(NULL, GSI, -1);
	uint8_t b = 'n';

	(void)state;
	assert_non_null(s);
	assert_true(serial_rx_space_fd(s) >= 0);
	wr(s, MCR, MCR_OUT2);
	wr(s, IER, 0x03);
	wr(s, THR, 'd');
	assert_int_equal(serial_feed(s, &b, 1), 1);
	assert_int_equal(rd(s, IIR), 0x04);
	assert_int_equal(rd(s, RBR), 'n');
	assert_int_equal(rd(s, LSR), 0x60);
	serial_destroy(s);
	serial_destroy(NULL);
}

/* A host input thread and a guest reading concurrently: nothing lost or reordered. */
#define STRESS_BYTES 20000

static void *feeder(void *arg)
{
	struct serial *s = arg;
	unsigned int sent = 0;

	while (sent < STRESS_BYTES) {
		uint8_t buf[37];
		size_t n = 0;

		while (n < sizeof(buf) && sent + n < STRESS_BYTES) {
			buf[n] = (uint8_t)((sent + n) * 7);
			n++;
		}
		size_t took = serial_feed(s, buf, n);

		sent += (unsigned int)took;
		if (took < n) {
			struct pollfd p = {.fd = serial_rx_space_fd(s), .events = POLLIN};
			uint64_t v;

			if (serial_rx_space(s) == 0)
				poll(&p, 1, 1000);
			(void)!read(p.fd, &v, sizeof(v));
		}
	}
	return NULL;
}

static void test_concurrent_feed(void **state)
{
	struct fixture *f = *state;
	pthread_t t;
	unsigned int got = 0, spins = 0;

	wr(f->s, FCR, 0x01);
	wr(f->s, MCR, MCR_OUT2);
	wr(f->s, IER, 0x01);
	assert_int_equal(pthread_create(&t, NULL, feeder, f->s), 0);
	while (got < STRESS_BYTES && spins < 100000000) {
		if (rd(f->s, LSR) & 0x01) {
			assert_int_equal(rd(f->s, RBR), (uint8_t)(got * 7));
			got++;
		} else {
			spins++;
		}
	}
	pthread_join(t, NULL);
	assert_int_equal(got, STRESS_BYTES);
	assert_int_equal(rd(f->s, LSR), 0x60);
	/* The line was toggled consistently: levels alternate, and it ends low. */
	assert_true(f->sink.calls > 0);
	assert_false(f->sink.bad_toggle);
	assert_int_equal(last_level(f), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_tx_in_order),
		T(test_dlab),
		T(test_lsr),
		T(test_rx_16450),
		T(test_rx_fifo),
		T(test_rx_irq),
		T(test_thre_irq),
		T(test_irq_priority),
		T(test_loopback),
		T(test_overrun),
		T(test_modem_status_irq),
		T(test_scratch),
		T(test_odd_accesses),
		cmocka_unit_test(test_discard_and_no_irq_chip),
		T(test_concurrent_feed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
