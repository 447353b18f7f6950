/* One-line error messages for library functions. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

int err_set(struct vmm_err *e, int errnum, const char *fmt, ...)
{
	if (e) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return -errnum;
}

void err_clear(struct vmm_err *e)
{
	if (e)
		e->msg[0] = '\0';
}
