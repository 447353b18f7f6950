/* COM1 console: polled 16550 at 0x3f8, 115200 8N1, and a tiny printf. */
#include "guest.h"

#define COM1	 0x3f8
#define UART_THR 0
#define UART_RBR 0
#define UART_IER 1
#define UART_DLL 0
#define UART_DLM 1
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_DR	 0x01
#define LSR_THRE 0x20

int failures;

/*
 * The FIFO control register is left alone: enabling or resetting the FIFOs
 * would drop input that already arrived (the echo test writes early).
 */
void uart_init(void)
{
	outb(COM1 + UART_IER, 0x00);
	outb(COM1 + UART_LCR, 0x80); /* DLAB */
	outb(COM1 + UART_DLL, 0x01); /* 115200 baud */
	outb(COM1 + UART_DLM, 0x00);
	outb(COM1 + UART_LCR, 0x03); /* 8N1 */
	outb(COM1 + UART_MCR, 0x03); /* DTR, RTS; OUT2 off: no interrupts */
}

void uart_putc(char c)
{
	int i;

	for (i = 0; i < 100000 && !(inb(COM1 + UART_LSR) & LSR_THRE); i++)
		cpu_relax();
	outb(COM1 + UART_THR, (u8)c);
}

int uart_getc(void)
{
	while (!(inb(COM1 + UART_LSR) & LSR_DR))
		cpu_relax();
	return inb(COM1 + UART_RBR);
}

static void put_num(u64 v, unsigned int base, int width, char pad, bool neg)
{
	char buf[24];
	int n = 0;

	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		buf[n++] = '-';
	while (width-- > n)
		uart_putc(pad);
	while (n)
		uart_putc(buf[--n]);
}

/* %[0][width][l]{d,u,x,s,c} and %% */
static void vformat(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		char pad = ' ';
		int width = 0;
		bool lng = false;
		const char *s;
		u64 v;
		long sv;

		if (*fmt != '%') {
			uart_putc(*fmt);
			continue;
		}
		fmt++;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') {
			lng = true;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
			sv = lng ? va_arg(ap, long) : va_arg(ap, int);
			put_num(sv < 0 ? -(u64)sv : (u64)sv, 10, width, pad, sv < 0);
			break;
		case 'u':
		case 'x':
			v = lng ? va_arg(ap, u64) : va_arg(ap, u32);
			put_num(v, *fmt == 'u' ? 10 : 16, width, pad, false);
			break;
		case 's':
			s = va_arg(ap, const char *);
			for (s = s ? s : "(null)"; *s; s++)
				uart_putc(*s);
			break;
		case 'c':
			uart_putc((char)va_arg(ap, int));
			break;
		case '\0':
			return;
		default:
			uart_putc(*fmt);
			break;
		}
	}
}

void gprintf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vformat(fmt, ap);
	va_end(ap);
}

/* "GUEST FAIL <reason>" and count it for the result line. */
void fail(const char *fmt, ...)
{
	va_list ap;

	failures++;
	gprintf("GUEST FAIL ");
	va_start(ap, fmt);
	vformat(fmt, ap);
	va_end(ap);
	uart_putc('\n');
}
