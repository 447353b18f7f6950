/*
 * i8042 keyboard controller, without a keyboard or mouse behind it worth the
 * name: it answers the controller commands an OS uses to probe it, acks
 * keyboard commands, and turns the reset line into a callback. It raises no
 * interrupts.
 */
#include "i8042.h"

#include <pthread.h>
#include <stdlib.h>

#define PORT_DATA 0 /* 0x60 */
#define PORT_CMD  4 /* 0x64 */
#define NPORTS	  5

/* Status register. */
#define STS_OBF	     0x01 /* output buffer full */
#define STS_IBF	     0x02 /* input buffer full: never, writes are taken at once */
#define STS_SYS	     0x04 /* system flag, mirrors the command byte */
#define STS_CMD	     0x08 /* last write was to the command port */
#define STS_UNLOCKED 0x10 /* keyboard not inhibited */
#define STS_AUX	     0x20 /* output buffer holds mouse data */

/* Command byte (controller RAM byte 0). */
#define CTR_KBD_INT	0x01
#define CTR_AUX_INT	0x02
#define CTR_SYS		0x04
#define CTR_KBD_DISABLE 0x10
#define CTR_AUX_DISABLE 0x20
#define CTR_XLATE	0x40
#define CTR_DEFAULT	(CTR_KBD_INT | CTR_SYS | CTR_XLATE)

/* Output port. */
#define OUTP_RESET   0x01 /* 0 holds the CPU in reset */
#define OUTP_A20     0x02
#define OUTP_DEFAULT (OUTP_RESET | OUTP_A20)

/* Controller commands. */
#define CMD_READ_RAM	   0x20 /* 0x20-0x3f: read RAM byte (0x20: command byte) */
#define CMD_WRITE_RAM	   0x60 /* 0x60-0x7f: write RAM byte (0x60: command byte) */
#define CMD_AUX_DISABLE	   0xa7
#define CMD_AUX_ENABLE	   0xa8
#define CMD_AUX_TEST	   0xa9
#define CMD_SELF_TEST	   0xaa
#define CMD_KBD_TEST	   0xab
#define CMD_KBD_DISABLE	   0xad
#define CMD_KBD_ENABLE	   0xae
#define CMD_READ_OUTP	   0xd0
#define CMD_WRITE_OUTP	   0xd1
#define CMD_WRITE_KBD_OBUF 0xd2
#define CMD_WRITE_AUX_OBUF 0xd3
#define CMD_WRITE_AUX	   0xd4
#define CMD_PULSE	   0xf0 /* 0xf0-0xff: low nibble clear bits pulse output lines */

#define SELF_TEST_OK  0x55
#define IFACE_TEST_OK 0x00

/* Keyboard replies. */
#define KBD_ACK	       0xfa
#define KBD_ECHO       0xee
#define KBD_CMD_ECHO   0xee
#define KBD_CMD_GET_ID 0xf2
#define KBD_CMD_RESET  0xff
#define KBD_BAT_OK     0xaa
#define KBD_ID1	       0xab
#define KBD_ID2	       0x83

#define RAM_SIZE  32
#define OBUF_SIZE 4

/* What the next data-port write is for. */
enum pending {
	PEND_NONE,     /* a keyboard command */
	PEND_RAM,      /* controller RAM byte ram_index */
	PEND_OUTP,     /* the output port */
	PEND_KBD_OBUF, /* echo as keyboard data */
	PEND_AUX_OBUF, /* echo as mouse data */
	PEND_AUX,      /* send to the (absent) mouse */
};

struct i8042 {
	pthread_mutex_t lock;
	void (*reset)(void *ctx);
	void *ctx;

	uint8_t ram[RAM_SIZE]; /* ram[0] is the command byte */
	uint8_t outp;
	uint8_t status_cmd; /* STS_CMD when the last write was a command */
	enum pending pending;
	uint8_t ram_index;

	uint8_t obuf[OBUF_SIZE];
	unsigned int ohead, ocount;
	bool obuf_aux; /* the bytes in obuf are mouse data */
	uint8_t last;  /* last byte read from the data port */
};

static void obuf_clear(struct i8042 *k)
{
	k->ohead = 0;
	k->ocount = 0;
	k->obuf_aux = false;
}

static void obuf_push(struct i8042 *k, uint8_t v)
{
	if (k->ocount == OBUF_SIZE)
		return;
	k->obuf[(k->ohead + k->ocount) % OBUF_SIZE] = v;
	k->ocount++;
}

/*
 * A controller reply replaces whatever the output buffer held, so a stale
 * keyboard byte that nobody read cannot be mistaken for the answer.
 */
static void reply(struct i8042 *k, uint8_t v)
{
	obuf_clear(k);
	obuf_push(k, v);
}

static uint8_t read_status(const struct i8042 *k)
{
	uint8_t s = STS_UNLOCKED | k->status_cmd;

	if (k->ocount)
		s |= STS_OBF | (k->obuf_aux ? STS_AUX : 0);
	if (k->ram[0] & CTR_SYS)
		s |= STS_SYS;
	return s;
}

static uint8_t read_data(struct i8042 *k)
{
	if (k->ocount) {
		k->last = k->obuf[k->ohead];
		k->ohead = (k->ohead + 1) % OBUF_SIZE;
		if (!--k->ocount)
			k->obuf_aux = false;
	}
	return k->last;
}

/* Returns true when the reset line was pulsed. */
static bool write_command(struct i8042 *k, uint8_t cmd)
{
	k->pending = PEND_NONE;
	if (cmd >= CMD_READ_RAM && cmd < CMD_READ_RAM + RAM_SIZE) {
		reply(k, k->ram[cmd - CMD_READ_RAM]);
		return false;
	}
	if (cmd >= CMD_WRITE_RAM && cmd < CMD_WRITE_RAM + RAM_SIZE) {
		k->pending = PEND_RAM;
		k->ram_index = cmd - CMD_WRITE_RAM;
		return false;
	}
	if (cmd >= CMD_PULSE)
		return !(cmd & OUTP_RESET);
	switch (cmd) {
	case CMD_AUX_DISABLE:
		k->ram[0] |= CTR_AUX_DISABLE;
		break;
	case CMD_AUX_ENABLE:
		k->ram[0] &= ~CTR_AUX_DISABLE;
		break;
	case CMD_KBD_DISABLE:
		k->ram[0] |= CTR_KBD_DISABLE;
		break;
	case CMD_KBD_ENABLE:
		k->ram[0] &= ~CTR_KBD_DISABLE;
		break;
	case CMD_AUX_TEST:
	case CMD_KBD_TEST:
		reply(k, IFACE_TEST_OK);
		break;
	case CMD_SELF_TEST:
		reply(k, SELF_TEST_OK);
		break;
	case CMD_READ_OUTP:
		reply(k, k->outp);
		break;
	case CMD_WRITE_OUTP:
		k->pending = PEND_OUTP;
		break;
	case CMD_WRITE_KBD_OBUF:
		k->pending = PEND_KBD_OBUF;
		break;
	case CMD_WRITE_AUX_OBUF:
		k->pending = PEND_AUX_OBUF;
		break;
	case CMD_WRITE_AUX:
		k->pending = PEND_AUX;
		break;
	default:
		break; /* unknown: ignored */
	}
	return false;
}

/* A byte for the keyboard: it acks everything, and answers a few commands. */
static void keyboard_write(struct i8042 *k, uint8_t v)
{
	/* Keyboard replies queue behind unread keyboard bytes, not mouse bytes. */
	if (k->obuf_aux)
		obuf_clear(k);
	switch (v) {
	case KBD_CMD_ECHO:
		obuf_push(k, KBD_ECHO);
		break;
	case KBD_CMD_GET_ID:
		obuf_push(k, KBD_ACK);
		obuf_push(k, KBD_ID1);
		obuf_push(k, KBD_ID2);
		break;
	case KBD_CMD_RESET:
		obuf_push(k, KBD_ACK);
		obuf_push(k, KBD_BAT_OK);
		break;
	default:
		obuf_push(k, KBD_ACK);
		break;
	}
}

/* Returns true when the reset line was pulsed. */
static bool write_data(struct i8042 *k, uint8_t v)
{
	enum pending p = k->pending;

	k->pending = PEND_NONE;
	switch (p) {
	case PEND_RAM:
		k->ram[k->ram_index] = v;
		break;
	case PEND_OUTP:
		/* The CPU is reset and comes back with the line released. */
		k->outp = v | OUTP_RESET;
		return !(v & OUTP_RESET);
	case PEND_KBD_OBUF:
		reply(k, v);
		break;
	case PEND_AUX_OBUF:
		reply(k, v);
		k->obuf_aux = true;
		break;
	case PEND_AUX:
		break; /* no mouse: nothing answers */
	default:
		keyboard_write(k, v);
		break;
	}
	return false;
}

void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct i8042 *k = opaque;
	bool reset = false;

	if (offset >= NPORTS || len == 0)
		return;
	if (offset != PORT_DATA && offset != PORT_CMD) {
		if (!is_write)
			data[0] = 0;
		return;
	}
	pthread_mutex_lock(&k->lock);
	if (offset == PORT_CMD) {
		if (is_write) {
			k->status_cmd = STS_CMD;
			reset = write_command(k, data[0]);
		} else {
			data[0] = read_status(k);
		}
	} else {
		if (is_write) {
			k->status_cmd = 0;
			reset = write_data(k, data[0]);
		} else {
			data[0] = read_data(k);
		}
	}
	pthread_mutex_unlock(&k->lock);
	/* Outside the lock: the callback may well touch the controller again. */
	if (reset && k->reset)
		k->reset(k->ctx);
}

struct i8042 *i8042_create(void (*reset)(void *ctx), void *ctx)
{
	struct i8042 *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	pthread_mutex_init(&k->lock, NULL);
	k->reset = reset;
	k->ctx = ctx;
	k->ram[0] = CTR_DEFAULT;
	k->outp = OUTP_DEFAULT;
	return k;
}

void i8042_destroy(struct i8042 *k)
{
	if (!k)
		return;
	pthread_mutex_destroy(&k->lock);
	free(k);
}
