/* Logging through the embedder's callback; nothing in the library prints on its own. */
#ifndef LIBVMM_LIB_LOG_H
#define LIBVMM_LIB_LOG_H

#include "libvmm/libvmm.h"

struct vmm_log {
	vm_log_fn fn; /* NULL: the default, one line to stderr */
	void *opaque;
	enum vm_log_level max;
};

/* Format one line and hand it to @l's callback if @level <= l->max. */
void log_msg(const struct vmm_log *l, enum vm_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
