/* Log lines go to the callback the embedder configured, or to stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void log_msg(const struct vmm_log *l, enum vm_log_level level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (!l || level > l->max)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (l->fn) {
		l->fn(l->opaque, level, buf);
	} else {
		char line[600];
		int n = snprintf(line, sizeof(line), "libvmm: %s: %s\n", level_names[level], buf);

		if (n > 0)
			(void)!write(STDERR_FILENO, line,
				     (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	}
}
