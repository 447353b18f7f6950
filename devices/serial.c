/*
 * 16550A UART.
 *
 * Transmission is instantaneous: a byte written to THR is written to the
 * output fd at once, so THR and the transmitter are always empty (LSR THRE
 * and TEMT stay set). The receive side is a FIFO of 16 bytes when the guest
 * enables FIFOs through FCR, or the single RBR of a 16450 when it does not;
 * serial_feed() never accepts more than there is room for.
 *
 * Interrupts follow the datasheet's priorities: line status, received data,
 * THR empty, modem status. The combined output drives one ISA line, gated by
 * MCR OUT2 as on a PC, and only changes of that output reach the irq chip.
 */
#include "serial.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Register offsets. */
#define UART_RBR   0 /* read, DLAB 0 */
#define UART_THR   0 /* write, DLAB 0 */
#define UART_DLL   0 /* DLAB 1 */
#define UART_IER   1 /* DLAB 0 */
#define UART_DLM   1 /* DLAB 1 */
#define UART_IIR   2 /* read */
#define UART_FCR   2 /* write */
#define UART_LCR   3
#define UART_MCR   4
#define UART_LSR   5
#define UART_MSR   6
#define UART_SCR   7
#define UART_NREGS 8

#define IER_RDI	 0x01 /* received data available */
#define IER_THRI 0x02 /* THR empty */
#define IER_RLSI 0x04 /* receiver line status */
#define IER_MSI	 0x08 /* modem status */
#define IER_MASK 0x0f

#define IIR_NO_INT  0x01
#define IIR_MSI	    0x00
#define IIR_THRI    0x02
#define IIR_RDI	    0x04
#define IIR_RLSI    0x06
#define IIR_FIFO_ON 0xc0

#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

#define LCR_DLAB 0x80

#define MCR_DTR	 0x01
#define MCR_RTS	 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR	   0x01
#define LSR_OE	   0x02
#define LSR_PE	   0x04
#define LSR_FE	   0x08
#define LSR_BI	   0x10
#define LSR_THRE   0x20
#define LSR_TEMT   0x40
#define LSR_ERRORS (LSR_OE | LSR_PE | LSR_FE | LSR_BI)

#define MSR_DCTS   0x01
#define MSR_DDSR   0x02
#define MSR_TERI   0x04
#define MSR_DDCD   0x08
#define MSR_CTS	   0x10
#define MSR_DSR	   0x20
#define MSR_RI	   0x40
#define MSR_DCD	   0x80
#define MSR_DELTAS 0x0f

#define FIFO_SIZE 16

struct serial {
	pthread_mutex_t lock;
	struct irq_chip irq;
	uint32_t gsi;
	int out_fd;
	int space_fd; /* eventfd: receive room appeared */

	uint8_t ier, lcr, mcr, lsr, msr, scr, dll, dlm;
	bool fifo_on;	  /* FCR bit 0 */
	bool thr_pending; /* THR-empty interrupt armed */
	bool line;	  /* level last driven on the irq line */

	uint8_t rx[FIFO_SIZE];
	unsigned int rx_head, rx_count;
	uint8_t rbr; /* last byte read, returned again when empty */
};

static unsigned int rx_capacity(const struct serial *s)
{
	return s->fifo_on ? FIFO_SIZE : 1;
}

/* Room the host may fill: none while the receiver listens to the transmitter. */
static size_t host_space(const struct serial *s)
{
	if (s->mcr & MCR_LOOP)
		return 0;
	return rx_capacity(s) - s->rx_count;
}

/* The pending interrupt of highest priority, as IIR bits 3:0. */
static uint8_t pending_iid(const struct serial *s)
{
	if ((s->ier & IER_RLSI) && (s->lsr & LSR_ERRORS))
		return IIR_RLSI;
	if ((s->ier & IER_RDI) && (s->lsr & LSR_DR))
		return IIR_RDI;
	if ((s->ier & IER_THRI) && s->thr_pending)
		return IIR_THRI;
	if ((s->ier & IER_MSI) && (s->msr & MSR_DELTAS))
		return IIR_MSI;
	return IIR_NO_INT;
}

/*
 * Drive the line from the current state (lock held). OUT2 enables the
 * interrupt buffer on a PC; loopback forces OUT2 inactive, which cuts it off.
 */
static void update_irq(struct serial *s)
{
	bool level = pending_iid(s) != IIR_NO_INT && (s->mcr & (MCR_OUT2 | MCR_LOOP)) == MCR_OUT2;

	if (level == s->line)
		return;
	s->line = level;
	irq_set(&s->irq, s->gsi, level);
}

static void signal_space(struct serial *s)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is already non-zero: the reader wakes anyway. */
	(void)!write(s->space_fd, &one, sizeof(one));
}

static void rx_clear(struct serial *s)
{
	s->rx_head = 0;
	s->rx_count = 0;
	s->lsr &= ~LSR_DR;
}

/* Receive one byte (lock held); on overrun the FIFO keeps its contents. */
static void rx_push(struct serial *s, uint8_t b)
{
	if (s->rx_count == rx_capacity(s)) {
		s->lsr |= LSR_OE;
		if (s->fifo_on)
			return;
		/* A 16450 overwrites its receiver buffer. */
		s->rx_count = 0;
	}
	s->rx[(s->rx_head + s->rx_count) % FIFO_SIZE] = b;
	s->rx_count++;
	s->lsr |= LSR_DR;
}

static uint8_t rx_pop(struct serial *s)
{
	if (s->rx_count) {
		s->rbr = s->rx[s->rx_head];
		s->rx_head = (s->rx_head + 1) % FIFO_SIZE;
		s->rx_count--;
	}
	if (!s->rx_count)
		s->lsr &= ~LSR_DR;
	return s->rbr;
}

/* The modem inputs: wired to MCR in loopback, a present, ready peer otherwise. */
static uint8_t modem_inputs(const struct serial *s)
{
	uint8_t m = 0;

	if (!(s->mcr & MCR_LOOP))
		return MSR_DCD | MSR_DSR | MSR_CTS;
	if (s->mcr & MCR_RTS)
		m |= MSR_CTS;
	if (s->mcr & MCR_DTR)
		m |= MSR_DSR;
	if (s->mcr & MCR_OUT1)
		m |= MSR_RI;
	if (s->mcr & MCR_OUT2)
		m |= MSR_DCD;
	return m;
}

/* Recompute the MSR inputs after an MCR change, latching the delta bits. */
static void update_msr(struct serial *s)
{
	uint8_t old = s->msr & ~MSR_DELTAS, now = modem_inputs(s);
	uint8_t changed = old ^ now, deltas = 0;

	if (changed & MSR_CTS)
		deltas |= MSR_DCTS;
	if (changed & MSR_DSR)
		deltas |= MSR_DDSR;
	if ((old & MSR_RI) && !(now & MSR_RI))
		deltas |= MSR_TERI;
	if (changed & MSR_DCD)
		deltas |= MSR_DDCD;
	s->msr = now | (s->msr & MSR_DELTAS) | deltas;
}

static void write_fcr(struct serial *s, uint8_t v)
{
	bool on = v & FCR_ENABLE;

	/* Switching between 16450 and FIFO mode empties both FIFOs. */
	if (on != s->fifo_on) {
		s->fifo_on = on;
		rx_clear(s);
	} else if (on && (v & FCR_CLEAR_RX)) {
		rx_clear(s);
	}
	/* The transmit FIFO is always empty: FCR_CLEAR_TX has nothing to do. */
}

static void write_ier(struct serial *s, uint8_t v)
{
	uint8_t old = s->ier;

	s->ier = v & IER_MASK;
	/* Enabling the THRE interrupt with THR empty raises it at once. */
	if ((s->ier & IER_THRI) && !(old & IER_THRI))
		s->thr_pending = true;
	else if (!(s->ier & IER_THRI))
		s->thr_pending = false;
}

/* Write @b out in full, retrying interrupted and partial writes. */
static void tx_out(int fd, uint8_t b)
{
	for (;;) {
		ssize_t n = write(fd, &b, 1);

		if (n == 1)
			return;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* A non-blocking console: wait like a blocking one would. */
			struct pollfd p = {.fd = fd, .events = POLLOUT};

			if (poll(&p, 1, -1) >= 0 || errno == EINTR)
				continue;
		}
		return; /* the console is gone: drop the byte */
	}
}

/*
 * A THR write (lock held). Returns true when @b must go out on the wire,
 * which the caller does after dropping the lock.
 */
static bool write_thr(struct serial *s, uint8_t b)
{
	/*
	 * Writing THR clears the THRE interrupt; the byte then leaves at once
	 * and THR is empty again. Dropping the line in between gives the
	 * new THRE interrupt its own rising edge.
	 */
	s->thr_pending = false;
	update_irq(s);
	if (s->ier & IER_THRI)
		s->thr_pending = true;
	if (s->mcr & MCR_LOOP) {
		rx_push(s, b);
		return false;
	}
	return s->out_fd >= 0;
}

static uint8_t read_reg(struct serial *s, uint64_t offset)
{
	uint8_t v, iid;

	switch (offset) {
	case UART_RBR:
		if (s->lcr & LCR_DLAB)
			return s->dll;
		return rx_pop(s);
	case UART_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case UART_IIR:
		iid = pending_iid(s);
		/* Reading IIR while it reports THRE clears that interrupt. */
		if (iid == IIR_THRI)
			s->thr_pending = false;
		return iid | (s->fifo_on ? IIR_FIFO_ON : 0);
	case UART_LCR:
		return s->lcr;
	case UART_MCR:
		return s->mcr;
	case UART_LSR:
		v = s->lsr;
		s->lsr &= ~LSR_ERRORS;
		return v;
	case UART_MSR:
		v = s->msr;
		s->msr &= ~MSR_DELTAS;
		return v;
	default:
		return s->scr;
	}
}

/* Returns true when @v must be transmitted. */
static bool write_reg(struct serial *s, uint64_t offset, uint8_t v)
{
	switch (offset) {
	case UART_THR:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
			return false;
		}
		return write_thr(s, v);
	case UART_IER:
		if (s->lcr & LCR_DLAB)
			s->dlm = v;
		else
			write_ier(s, v);
		break;
	case UART_FCR:
		write_fcr(s, v);
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		s->mcr = v & MCR_MASK;
		update_msr(s);
		break;
	case UART_LSR:
	case UART_MSR:
		break; /* factory test registers: writes ignored */
	default:
		s->scr = v;
		break;
	}
	return false;
}

void serial_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct serial *s = opaque;
	bool tx = false;
	size_t space;

	if (offset >= UART_NREGS || len == 0)
		return;
	pthread_mutex_lock(&s->lock);
	space = host_space(s);
	if (is_write)
		tx = write_reg(s, offset, data[0]);
	else
		data[0] = read_reg(s, offset);
	update_irq(s);
	if (space == 0 && host_space(s) > 0)
		signal_space(s);
	pthread_mutex_unlock(&s->lock);
	/* Outside the lock: a slow console must not stall input or other vCPUs. */
	if (tx)
		tx_out(s->out_fd, data[0]);
}

size_t serial_feed(struct serial *s, const uint8_t *buf, size_t n)
{
	size_t space, i;

	pthread_mutex_lock(&s->lock);
	space = host_space(s);
	if (n > space)
		n = space;
	for (i = 0; i < n; i++)
		rx_push(s, buf[i]);
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

size_t serial_rx_space(struct serial *s)
{
	size_t space;

	pthread_mutex_lock(&s->lock);
	space = host_space(s);
	pthread_mutex_unlock(&s->lock);
	return space;
}

int serial_rx_space_fd(const struct serial *s)
{
	return s->space_fd;
}

struct serial *serial_create(const struct irq_chip *irq, uint32_t gsi, int out_fd)
{
	struct serial *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->space_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->space_fd < 0) {
		free(s);
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	if (irq)
		s->irq = *irq;
	s->gsi = gsi;
	s->out_fd = out_fd;
	s->lsr = LSR_THRE | LSR_TEMT;
	s->msr = modem_inputs(s);
	s->dll = 0x0c; /* 9600 baud */
	return s;
}

void serial_destroy(struct serial *s)
{
	if (!s)
		return;
	close(s->space_fd);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
