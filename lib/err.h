/* Error reporting inside the library: a one-line message plus a negative errno. */
#ifndef LIBVMM_LIB_ERR_H
#define LIBVMM_LIB_ERR_H

#include <stddef.h>

#define VMM_ERR_MAX 256

/* Holds the message of the last failure of an operation. */
struct vmm_err {
	char msg[VMM_ERR_MAX];
};

/*
 * Format a one-line message into @e (which may be NULL) and return -@errnum
 * (errnum is a positive errno value). Use as: return err_set(e, EINVAL, "...").
 */
int err_set(struct vmm_err *e, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Clear the message in @e (which may be NULL). */
void err_clear(struct vmm_err *e);

#endif
