/* Device sandbox: policy files compiled with libseccomp, and the jail a device's child enters. */
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/futex.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <termios.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "config.h"

/* Set by the build (config.h); this is meson's default prefix and datadir. */
#ifndef LIBVMM_POLICY_DIR
#define LIBVMM_POLICY_DIR "/usr/local/share/libvmm/policies"
#endif

#if HAVE_SECCOMP
#include <seccomp.h>
#endif
#if HAVE_LIBCAP
#include <sys/capability.h>
#endif

#define POLICY_SUFFIX	 ".policy"
#define POLICY_MAX_DEPTH 8
#define POLICY_LINE_MAX	 1024
#define RULE_MAX_CMP	 6 /* argument comparisons per alternative (libseccomp's limit) */

/* ---- Messages ---- */

static void vlog_line(int fd, const char *what, const char *fmt, va_list ap, char *line, size_t len)
{
	int n = snprintf(line, len, "libvmm: %s sandbox: ", what ? what : "device");
	ssize_t w;

	if (n < 0 || (size_t)n >= len)
		n = 0;
	vsnprintf(line + n, len - (size_t)n, fmt, ap);
	n = (int)strlen(line);
	if ((size_t)n + 1 < len) {
		line[n++] = '\n';
		line[n] = 0;
	}
	do {
		w = write(fd, line, (size_t)n);
	} while (w < 0 && errno == EINTR);
}

void sandbox_log(int fd, const char *what, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vlog_line(fd, what, fmt, ap, line, sizeof(line));
	va_end(ap);
}

const char *sandbox_syscall_name(int nr, char *buf, size_t len)
{
#if HAVE_SECCOMP
	char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);

	if (name) {
		snprintf(buf, len, "%s", name);
		free(name);
		return buf;
	}
#endif
	snprintf(buf, len, "#%d", nr);
	return buf;
}

/* ---- Policy files ---- */

/* Named values the grammar accepts besides numbers (docs/sandbox.md lists them). */
static const struct {
	const char *name;
	uint64_t value;
} policy_constants[] = {
	{"PROT_NONE", PROT_NONE},
	{"PROT_READ", PROT_READ},
	{"PROT_WRITE", PROT_WRITE},
	{"PROT_EXEC", PROT_EXEC},
	{"MAP_SHARED", MAP_SHARED},
	{"MAP_PRIVATE", MAP_PRIVATE},
	{"MAP_FIXED", MAP_FIXED},
	{"MAP_ANONYMOUS", MAP_ANONYMOUS},
	{"MAP_NORESERVE", MAP_NORESERVE},
	{"MAP_STACK", MAP_STACK},
	{"MADV_DONTNEED", MADV_DONTNEED},
	{"MADV_FREE", MADV_FREE},
	{"MADV_REMOVE", MADV_REMOVE},
	{"MADV_DONTDUMP", MADV_DONTDUMP},
	{"MADV_HUGEPAGE", MADV_HUGEPAGE},
	{"MADV_NOHUGEPAGE", MADV_NOHUGEPAGE},
	{"FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE},
	{"FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE},
	{"FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE},
	{"F_GETFD", F_GETFD},
	{"F_SETFD", F_SETFD},
	{"F_GETFL", F_GETFL},
	{"F_SETFL", F_SETFL},
	{"FIONBIO", FIONBIO},
	{"FIONREAD", FIONREAD},
	{"FIOCLEX", FIOCLEX},
	{"TUNSETOFFLOAD", TUNSETOFFLOAD},
	{"TUNSETVNETHDRSZ", TUNSETVNETHDRSZ},
	{"TUNGETIFF", TUNGETIFF},
	{"TUNGETFEATURES", TUNGETFEATURES},
	{"CLONE_VM", CLONE_VM},
	{"CLONE_FS", CLONE_FS},
	{"CLONE_FILES", CLONE_FILES},
	{"CLONE_SIGHAND", CLONE_SIGHAND},
	{"CLONE_THREAD", CLONE_THREAD},
	{"CLONE_SYSVSEM", CLONE_SYSVSEM},
	{"CLONE_SETTLS", CLONE_SETTLS},
	{"CLONE_PARENT_SETTID", CLONE_PARENT_SETTID},
	{"CLONE_CHILD_CLEARTID", CLONE_CHILD_CLEARTID},
	{"FUTEX_WAIT", FUTEX_WAIT},
	{"FUTEX_WAKE", FUTEX_WAKE},
	{"FUTEX_PRIVATE_FLAG", FUTEX_PRIVATE_FLAG},
	{"EFD_CLOEXEC", EFD_CLOEXEC},
	{"EFD_NONBLOCK", EFD_NONBLOCK},
	{"EPOLL_CLOEXEC", EPOLL_CLOEXEC},
	{"O_CLOEXEC", O_CLOEXEC},
	{"O_NONBLOCK", O_NONBLOCK},
	{"MSG_DONTWAIT", MSG_DONTWAIT},
	{"MSG_NOSIGNAL", MSG_NOSIGNAL},
	{"MSG_CMSG_CLOEXEC", MSG_CMSG_CLOEXEC},
	{"SIG_BLOCK", SIG_BLOCK},
	{"SIG_UNBLOCK", SIG_UNBLOCK},
	{"SIG_SETMASK", SIG_SETMASK},
	{"PR_SET_NAME", PR_SET_NAME},
	{"PR_SET_NO_NEW_PRIVS", PR_SET_NO_NEW_PRIVS},
	{"SECCOMP_SET_MODE_FILTER", SECCOMP_SET_MODE_FILTER},
	{"SECCOMP_FILTER_FLAG_NEW_LISTENER", SECCOMP_FILTER_FLAG_NEW_LISTENER},
	{"AT_EMPTY_PATH", AT_EMPTY_PATH},
	/* vCPU threads and the VMM process (vcpu.policy, vmm.policy). */
	{"KVM_RUN", KVM_RUN},
	{"KVM_GET_REGS", KVM_GET_REGS},
	{"KVM_GET_SREGS", KVM_GET_SREGS},
	{"KVM_IRQ_LINE", KVM_IRQ_LINE},
	{"KVM_IOEVENTFD", KVM_IOEVENTFD},
	{"KVM_IRQFD", KVM_IRQFD},
	{"KVM_SET_GSI_ROUTING", KVM_SET_GSI_ROUTING},
	{"KVM_SIGNAL_MSI", KVM_SIGNAL_MSI},
	{"KVM_GET_CLOCK", KVM_GET_CLOCK},
	{"KVM_SET_CLOCK", KVM_SET_CLOCK},
	{"SECCOMP_IOCTL_NOTIF_RECV", SECCOMP_IOCTL_NOTIF_RECV},
	{"SECCOMP_IOCTL_NOTIF_SEND", SECCOMP_IOCTL_NOTIF_SEND},
	{"SECCOMP_IOCTL_NOTIF_ID_VALID", SECCOMP_IOCTL_NOTIF_ID_VALID},
	{"TCGETS", TCGETS},
	{"TCSETS", TCSETS},
	{"TCSETSW", TCSETSW},
	{"TCSETSF", TCSETSF},
	{"TIOCGWINSZ", TIOCGWINSZ},
	{"SOCK_CLOEXEC", SOCK_CLOEXEC},
	{"SOCK_NONBLOCK", SOCK_NONBLOCK},
	{"P_PIDFD", P_PIDFD},
	{"WEXITED", WEXITED},
	{"WNOHANG", WNOHANG},
	{"SIGKILL", SIGKILL},
	{"SIGSYS", SIGSYS},
};

/* Errno names "NAME: return ERRNO" accepts (numbers 1..4095 too). */
static const struct {
	const char *name;
	int value;
} policy_errnos[] = {
	{"EPERM", EPERM},   {"ENOENT", ENOENT}, {"EACCES", EACCES},	    {"EINVAL", EINVAL},
	{"ENOTTY", ENOTTY}, {"ENOSYS", ENOSYS}, {"EOPNOTSUPP", EOPNOTSUPP},
};

enum rule_kind { RULE_ALLOW, RULE_ALLOW_IF, RULE_ERRNO };

/* What the policy said about one system call so far, to refuse contradictions. */
struct rule_rec {
	int nr;
	enum rule_kind kind;
	int errnum;
	unsigned int line;
	char file[64]; /* base name, for messages */
};

struct sandbox_policy {
	char path[PATH_MAX];
#if HAVE_SECCOMP
	scmp_filter_ctx ctx;
	bool notify; /* default action is SCMP_ACT_NOTIFY (else KILL_PROCESS) */
#endif
	struct sock_filter *bpf; /* the compiled program, for sandbox_filter_load() */
	unsigned short bpf_len;
	struct rule_rec *recs;
	size_t nrecs, cap;
};

enum cmp_op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_MASKED_EQ };

struct cond {
	unsigned int arg;
	enum cmp_op op;
	uint64_t mask; /* OP_MASKED_EQ */
	uint64_t value;
};

struct parser {
	struct sandbox_policy *p;
	const char *dir;
	struct vmm_err *err;
	const char *file; /* path of the file being read */
	unsigned int line;
	unsigned int depth;
};

static int perr(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(struct parser *ps, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return err_set(ps->err, EINVAL, "policy %s line %u: %s", ps->file, ps->line, msg);
}

static void skip_ws(const char **s)
{
	while (**s == ' ' || **s == '\t')
		(*s)++;
}

static bool is_ident_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident(char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9');
}

/* An identifier into @out (at most @len - 1 bytes); false when there is none or it is too long. */
static bool take_ident(const char **s, char *out, size_t len)
{
	size_t n = 0;

	if (!is_ident_start(**s))
		return false;
	while (is_ident((*s)[n]))
		n++;
	if (n >= len)
		return false;
	memcpy(out, *s, n);
	out[n] = 0;
	*s += n;
	return true;
}

/* TERM := number | CONSTANT; VALUE := TERM { '|' TERM }. */
static int parse_value(struct parser *ps, const char **s, uint64_t *out)
{
	uint64_t v = 0;

	for (;;) {
		char name[64];
		uint64_t t;
		size_t i;

		skip_ws(s);
		if (**s >= '0' && **s <= '9') {
			char *end;

			errno = 0;
			t = strtoull(*s, &end, 0);
			if (errno || is_ident(*end))
				return perr(ps, "bad number '%.*s'", (int)strcspn(*s, " \t|&"), *s);
			*s = end;
		} else if (take_ident(s, name, sizeof(name))) {
			for (i = 0; i < sizeof(policy_constants) / sizeof(policy_constants[0]); i++)
				if (!strcmp(policy_constants[i].name, name))
					break;
			if (i == sizeof(policy_constants) / sizeof(policy_constants[0]))
				return perr(ps, "unknown constant '%s'", name);
			t = policy_constants[i].value;
		} else if (**s == '-') {
			return perr(ps, "negative numbers are not supported");
		} else {
			return perr(ps, "expected a number or a constant at '%.20s'", *s);
		}
		v |= t;
		skip_ws(s);
		/* '|' joins terms; "||" separates alternatives. */
		if (**s != '|' || (*s)[1] == '|')
			break;
		(*s)++;
	}
	*out = v;
	return 0;
}

/* COND := "arg"N [ '&' VALUE ] OP VALUE, with OP one of == != < <= > >= ('&' only with ==). */
static int parse_cond(struct parser *ps, const char **s, struct cond *c)
{
	static const struct {
		const char *tok;
		enum cmp_op op;
	} ops[] = {
		{"==", OP_EQ}, {"!=", OP_NE}, {"<=", OP_LE},
		{">=", OP_GE}, {"<", OP_LT},  {">", OP_GT},
	};
	bool masked = false;
	size_t i;
	int ret;

	skip_ws(s);
	if (strncmp(*s, "arg", 3) || (*s)[3] < '0' || (*s)[3] > '5' || is_ident((*s)[4]))
		return perr(ps, "expected arg0 .. arg5 at '%.20s'", *s);
	memset(c, 0, sizeof(*c));
	c->arg = (unsigned int)((*s)[3] - '0');
	*s += 4;
	skip_ws(s);
	if (**s == '&' && (*s)[1] != '&') {
		(*s)++;
		ret = parse_value(ps, s, &c->mask);
		if (ret)
			return ret;
		masked = true;
	}
	skip_ws(s);
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!strncmp(*s, ops[i].tok, strlen(ops[i].tok)))
			break;
	if (i == sizeof(ops) / sizeof(ops[0]))
		return perr(ps, "expected a comparison (== != < <= > >=) at '%.20s'", *s);
	if (masked && ops[i].op != OP_EQ)
		return perr(ps, "a masked argument (argN & MASK) can only be compared with ==");
	c->op = masked ? OP_MASKED_EQ : ops[i].op;
	*s += strlen(ops[i].tok);
	ret = parse_value(ps, s, &c->value);
	if (ret)
		return ret;
	if (masked && (c->value & ~c->mask))
		return perr(ps, "argN & MASK == VALUE can never hold: VALUE has bits outside MASK");
	return 0;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Record a rule for @nr, refusing one that contradicts an earlier rule. */
static int record_rule(struct parser *ps, const char *name, int nr, enum rule_kind kind, int errnum)
{
	struct sandbox_policy *p = ps->p;
	struct rule_rec *r;

	for (size_t i = 0; i < p->nrecs; i++) {
		r = &p->recs[i];
		if (r->nr != nr)
			continue;
		if (r->kind == kind && (kind != RULE_ERRNO || r->errnum == errnum))
			return 0;
		if (r->kind == RULE_ERRNO || kind == RULE_ERRNO)
			return perr(ps, "'%s' has a different action in %s line %u", name, r->file,
				    r->line);
		return perr(ps, "'%s' is allowed %s conditions in %s line %u and %s them here",
			    name, r->kind == RULE_ALLOW ? "without" : "with", r->file, r->line,
			    kind == RULE_ALLOW ? "without" : "with");
	}
	if (p->nrecs == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		struct rule_rec *n = realloc(p->recs, cap * sizeof(*n));

		if (!n)
			return err_set(ps->err, ENOMEM, "policy %s: out of memory", ps->file);
		p->recs = n;
		p->cap = cap;
	}
	r = &p->recs[p->nrecs++];
	memset(r, 0, sizeof(*r));
	r->nr = nr;
	r->kind = kind;
	r->errnum = errnum;
	r->line = ps->line;
	snprintf(r->file, sizeof(r->file), "%s", base_name(ps->file));
	return 0;
}

#if HAVE_SECCOMP
static int add_rule(struct parser *ps, const char *name, int nr, uint32_t action,
		    const struct cond *conds, unsigned int n)
{
	static const enum scmp_compare map[] = {
		[OP_EQ] = SCMP_CMP_EQ,
		[OP_NE] = SCMP_CMP_NE,
		[OP_LT] = SCMP_CMP_LT,
		[OP_LE] = SCMP_CMP_LE,
		[OP_GT] = SCMP_CMP_GT,
		[OP_GE] = SCMP_CMP_GE,
		[OP_MASKED_EQ] = SCMP_CMP_MASKED_EQ,
	};
	struct scmp_arg_cmp cmp[RULE_MAX_CMP];
	int ret;

	for (unsigned int i = 0; i < n; i++) {
		cmp[i].arg = conds[i].arg;
		cmp[i].op = map[conds[i].op];
		cmp[i].datum_a = conds[i].op == OP_MASKED_EQ ? conds[i].mask : conds[i].value;
		cmp[i].datum_b = conds[i].op == OP_MASKED_EQ ? conds[i].value : 0;
	}
	ret = seccomp_rule_add_exact_array(ps->p->ctx, action, nr, n, cmp);
	if (ret < 0)
		return perr(ps, "libseccomp refused the rule for '%s': %s", name, strerror(-ret));
	return 0;
}
#endif

/* "return ERRNO" after the colon. */
static int parse_errno(struct parser *ps, const char *s, int *out)
{
	char name[32];

	skip_ws(&s);
	if (*s >= '0' && *s <= '9') {
		char *end;
		long v = strtol(s, &end, 10);

		if (v < 1 || v > 4095)
			return perr(ps, "errno %ld is out of range 1..4095", v);
		*out = (int)v;
		s = end;
	} else if (take_ident(&s, name, sizeof(name))) {
		size_t i;

		for (i = 0; i < sizeof(policy_errnos) / sizeof(policy_errnos[0]); i++)
			if (!strcmp(policy_errnos[i].name, name))
				break;
		if (i == sizeof(policy_errnos) / sizeof(policy_errnos[0]))
			return perr(ps, "unknown errno '%s'", name);
		*out = policy_errnos[i].value;
	} else {
		return perr(ps, "expected an errno after 'return'");
	}
	skip_ws(&s);
	if (*s)
		return perr(ps, "unexpected '%.20s' after the errno", s);
	return 0;
}

/* RULE := NAME [ ':' ( "return" ERRNO | ALT { "||" ALT } ) ], ALT := COND { "&&" COND }. */
static int parse_rule(struct parser *ps, const char *s)
{
	char name[64];
	int nr, ret;

	if (!take_ident(&s, name, sizeof(name)))
		return perr(ps, "expected a system call name at '%.20s'", s);
#if HAVE_SECCOMP
	nr = seccomp_syscall_resolve_name(name);
#else
	nr = 0;
#endif
	if (nr < 0)
		return perr(ps, "unknown system call '%s'", name);
	skip_ws(&s);
	if (!*s) {
		ret = record_rule(ps, name, nr, RULE_ALLOW, 0);
#if HAVE_SECCOMP
		if (!ret)
			ret = add_rule(ps, name, nr, SCMP_ACT_ALLOW, NULL, 0);
#endif
		return ret;
	}
	if (*s != ':')
		return perr(ps, "expected ':' or the end of the line after '%s'", name);
	s++;
	skip_ws(&s);
	if (!strncmp(s, "return", 6) && !is_ident(s[6])) {
		int e = 0;

		ret = parse_errno(ps, s + 6, &e);
		if (!ret)
			ret = record_rule(ps, name, nr, RULE_ERRNO, e);
#if HAVE_SECCOMP
		if (!ret)
			ret = add_rule(ps, name, nr, SCMP_ACT_ERRNO((uint32_t)e), NULL, 0);
#endif
		return ret;
	}
	if (!*s)
		return perr(ps, "expected conditions or 'return ERRNO' after '%s:'", name);
	ret = record_rule(ps, name, nr, RULE_ALLOW_IF, 0);
	if (ret)
		return ret;
	for (;;) {
		struct cond conds[RULE_MAX_CMP];
		unsigned int n = 0;

		for (;;) {
			if (n == RULE_MAX_CMP)
				return perr(ps, "more than %d conditions joined by &&",
					    RULE_MAX_CMP);
			ret = parse_cond(ps, &s, &conds[n]);
			if (ret)
				return ret;
			for (unsigned int i = 0; i < n; i++)
				if (conds[i].arg == conds[n].arg)
					return perr(ps,
						    "arg%u is compared twice in one alternative",
						    conds[n].arg);
			n++;
			skip_ws(&s);
			if (strncmp(s, "&&", 2))
				break;
			s += 2;
		}
#if HAVE_SECCOMP
		ret = add_rule(ps, name, nr, SCMP_ACT_ALLOW, conds, n);
		if (ret)
			return ret;
#endif
		skip_ws(&s);
		if (!*s)
			return 0;
		if (strncmp(s, "||", 2))
			return perr(ps, "expected '&&', '||' or the end of the line at '%.20s'", s);
		s += 2;
	}
}

static int parse_file(struct parser *ps, const char *name);

/* "@include FILE": a plain file name in the policy directory. */
static int parse_include(struct parser *ps, const char *s)
{
	char name[NAME_MAX + 1];
	size_t n;

	skip_ws(&s);
	n = strcspn(s, " \t");
	if (!n)
		return perr(ps, "@include needs a file name");
	if (n > NAME_MAX)
		return perr(ps, "@include file name too long");
	memcpy(name, s, n);
	name[n] = 0;
	s += n;
	skip_ws(&s);
	if (*s)
		return perr(ps, "unexpected '%.20s' after the @include file name", s);
	if (strchr(name, '/') || name[0] == '.')
		return perr(ps, "@include takes a file name in the policy directory, not '%s'",
			    name);
	if (ps->depth >= POLICY_MAX_DEPTH)
		return perr(ps, "@include nests more than %d deep (a loop?)", POLICY_MAX_DEPTH);
	return parse_file(ps, name);
}

/* Strip a '#' comment and surrounding blanks in place; returns the start of what is left. */
static char *strip_line(char *line)
{
	char *hash = strchr(line, '#');
	size_t n;

	if (hash)
		*hash = 0;
	n = strlen(line);
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\n' ||
		     line[n - 1] == '\r'))
		line[--n] = 0;
	while (*line == ' ' || *line == '\t')
		line++;
	return line;
}

/*
 * Parse @name in ps->dir. Errors in an included file name that file and
 * line; failing to open an included file names the @include line.
 */
static int parse_file(struct parser *ps, const char *name)
{
	char path[PATH_MAX];
	const char *outer_file = ps->file;
	unsigned int outer_line = ps->line;
	struct stat st;
	char *buf = NULL;
	size_t cap = 0;
	ssize_t len;
	FILE *f;
	int fd, ret = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", ps->dir, name) >= sizeof(path)) {
		if (!outer_file)
			return err_set(ps->err, ENAMETOOLONG, "policy path %s/%s is too long",
				       ps->dir, name);
		return perr(ps, "included policy path %s/%s is too long", ps->dir, name);
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
		close(fd);
		fd = -1;
		errno = EINVAL;
	}
	if (fd < 0) {
		int e = errno;

		if (!outer_file)
			return err_set(ps->err, e, "cannot open policy %s: %s", path,
				       e == EINVAL ? "not a regular file" : strerror(e));
		return perr(ps, "cannot open included policy %s: %s", path,
			    e == EINVAL ? "not a regular file" : strerror(e));
	}
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return err_set(ps->err, ENOMEM, "policy %s: out of memory", path);
	}
	ps->file = path;
	ps->line = 0;
	ps->depth++;
	while ((len = getline(&buf, &cap, f)) >= 0) {
		char *s;

		ps->line++;
		if ((size_t)len != strlen(buf)) {
			ret = perr(ps, "NUL byte in the line");
			break;
		}
		if (len > POLICY_LINE_MAX) {
			ret = perr(ps, "line longer than %d bytes", POLICY_LINE_MAX);
			break;
		}
		s = strip_line(buf);
		if (!*s)
			continue;
		if (!strncmp(s, "@include", 8) && (s[8] == ' ' || s[8] == '\t' || !s[8]))
			ret = parse_include(ps, s + 8);
		else if (*s == '@')
			ret = perr(ps, "unknown directive '%.20s'", s);
		else
			ret = parse_rule(ps, s);
		if (ret)
			break;
	}
	if (!ret && ferror(f))
		ret = err_set(ps->err, EIO, "policy %s: read error", path);
	free(buf);
	fclose(f);
	ps->depth--;
	ps->file = outer_file;
	ps->line = outer_line;
	return ret;
}

#if HAVE_SECCOMP && (defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__))
/*
 * A sanitized build (-Db_sanitize=...): the runtime makes system calls of
 * its own (thread registration, alternate signal stacks, reports). Allow
 * them on top of the policy, unconditionally; a release build never does.
 */
static int add_sanitizer_rules(struct sandbox_policy *p, struct vmm_err *err)
{
	static const char *const calls[] = {
		"gettid",      "getpid",       "sigaltstack", "sched_getaffinity",
		"sched_yield", "madvise",      "mmap",	      "mprotect",
		"prctl",       "rt_sigaction", "nanosleep",   "clock_nanosleep",
		"getrlimit",   "prlimit64",    "getrusage",   "uname",
		"tgkill",      "exit_group",
	};
	int ret;

	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
		int nr = seccomp_syscall_resolve_name(calls[i]);

		if (nr < 0)
			continue;
		ret = seccomp_rule_add(p->ctx, SCMP_ACT_ALLOW, nr, 0);
		if (ret < 0)
			return err_set(err, -ret, "policy %s: sanitizer rule for %s: %s", p->path,
				       calls[i], strerror(-ret));
	}
	return 0;
}
#endif

const char *sandbox_default_policy_dir(void)
{
	return LIBVMM_POLICY_DIR;
}

int sandbox_policy_load(const char *dir, const char *name, struct sandbox_policy **out,
			struct vmm_err *err)
{
	return sandbox_policy_load_flags(dir, name, 0, out, err);
}

#if HAVE_SECCOMP
/*
 * Keep the compiled program: sandbox_filter_load() installs it with
 * seccomp(2) itself, for vCPU threads and jailed devices alike, since
 * libseccomp's seccomp_load() keeps one listener for the whole process
 * (each vCPU thread needs its own) and compiles, allocating, at load time
 * (in a child forked from a threaded process).
 */
static int keep_bpf(struct sandbox_policy *p, struct vmm_err *err)
{
	int fd = memfd_create("libvmm-bpf", MFD_CLOEXEC);
	off_t len;
	int ret;

	if (fd < 0)
		return err_set(err, errno, "policy %s: memfd_create: %s", p->path, strerror(errno));
	ret = seccomp_export_bpf(p->ctx, fd);
	len = lseek(fd, 0, SEEK_END);
	if (ret < 0 || len <= 0 || len % (off_t)sizeof(struct sock_filter) ||
	    len / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
		close(fd);
		return err_set(err, EINVAL, "policy %s: cannot compile the filter (%s)", p->path,
			       ret < 0 ? strerror(-ret) : "bad length");
	}
	p->bpf = malloc((size_t)len);
	if (!p->bpf || pread(fd, p->bpf, (size_t)len, 0) != len) {
		close(fd);
		return err_set(err, EIO, "policy %s: cannot read the compiled filter", p->path);
	}
	close(fd);
	p->bpf_len = (unsigned short)(len / (off_t)sizeof(struct sock_filter));
	return 0;
}
#endif

int sandbox_policy_load_flags(const char *dir, const char *name, unsigned int flags,
			      struct sandbox_policy **out, struct vmm_err *err)
{
	struct parser ps = {0};
	struct sandbox_policy *p;
	char file[NAME_MAX + 1];
	int ret;

	*out = NULL;
	if (!dir || !*dir)
		dir = LIBVMM_POLICY_DIR;
	if (!name || !*name || strchr(name, '/') || name[0] == '.')
		return err_set(err, EINVAL, "bad policy name '%s'", name ? name : "");
	if ((size_t)snprintf(file, sizeof(file), "%s%s", name, POLICY_SUFFIX) >= sizeof(file))
		return err_set(err, ENAMETOOLONG, "policy name '%s' is too long", name);
	p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(err, ENOMEM, "policy %s: out of memory", name);
	snprintf(p->path, sizeof(p->path), "%s/%s", dir, file);
#if HAVE_SECCOMP
	/*
	 * Forbidden calls go to the VMM through a listener (it names the call
	 * and kills the process) where the kernel and libseccomp can do it;
	 * otherwise the kernel kills the process at once.
	 */
	p->notify = !(flags & SANDBOX_POLICY_KILL) && seccomp_api_get() >= 5;
	p->ctx = seccomp_init(p->notify ? SCMP_ACT_NOTIFY : SCMP_ACT_KILL_PROCESS);
	if (!p->ctx) {
		free(p);
		return err_set(err, ENOMEM, "policy %s: seccomp_init failed", name);
	}
	/* A call through another ABI (int 0x80, x32) kills the process. */
	seccomp_attr_set(p->ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
#endif
	ps.p = p;
	ps.dir = dir;
	ps.err = err;
	ret = parse_file(&ps, file);
#if HAVE_SECCOMP && (defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__))
	if (!ret)
		ret = add_sanitizer_rules(p, err);
#endif
#if HAVE_SECCOMP
	if (!ret)
		ret = keep_bpf(p, err);
#else
	/* The file was still checked (without resolving names). */
	if (!ret)
		ret = err_set(err, ENOTSUP, "policy %s: libvmm was built without libseccomp",
			      p->path);
#endif
	if (ret) {
		sandbox_policy_free(p);
		return ret;
	}
	*out = p;
	return 0;
}

const char *sandbox_policy_path(const struct sandbox_policy *p)
{
	return p->path;
}

int sandbox_policy_export(const struct sandbox_policy *p, int fd)
{
#if HAVE_SECCOMP
	return seccomp_export_pfc(p->ctx, fd);
#else
	return -ENOTSUP;
#endif
}

void sandbox_policy_free(struct sandbox_policy *p)
{
	if (!p)
		return;
#if HAVE_SECCOMP
	if (p->ctx)
		seccomp_release(p->ctx);
#endif
	free(p->bpf);
	free(p->recs);
	free(p);
}

/* ---- Reports from a jailed process's filter ---- */

/* Read one report from listener @fd; with @deny, fail the held call with EPERM. */
static int listener_take(int fd, int *nr, bool deny)
{
#if HAVE_SECCOMP
	struct seccomp_notif *req = NULL;
	struct seccomp_notif_resp *resp = NULL;
	int ret;

	ret = seccomp_notify_alloc(&req, &resp);
	if (ret < 0)
		return ret;
	ret = seccomp_notify_receive(fd, req);
	if (ret == 0) {
		*nr = req->data.nr;
		if (deny) {
			memset(resp, 0, sizeof(*resp));
			resp->id = req->id;
			resp->error = -EPERM;
			/* -ENOENT: the thread was interrupted meanwhile; the report stands. */
			(void)seccomp_notify_respond(fd, resp);
		}
		ret = 1;
	} else if (ret == -ENOENT) {
		ret = 0;
	} else if (ret >= 0 || ret == -ECANCELED) {
		/* libseccomp 2.5 reports some kernel failures as -ECANCELED. */
		ret = -EIO;
	}
	seccomp_notify_free(req, resp);
	return ret;
#else
	(void)fd;
	(void)nr;
	(void)deny;
	return -ENOTSUP;
#endif
}

int sandbox_listener_read(int fd, int *nr)
{
	return listener_take(fd, nr, false);
}

int sandbox_listener_deny(int fd, int *nr)
{
	return listener_take(fd, nr, true);
}

int sandbox_filter_load(const struct sandbox_policy *pol, unsigned int flags, int *listener,
			struct vmm_err *err)
{
	if (listener)
		*listener = -1;
#if HAVE_SECCOMP
	struct sock_fprog prog = {.len = pol->bpf_len, .filter = pol->bpf};
	unsigned long fl = 0;
	long ret;

	if ((flags & SANDBOX_FILTER_ALL_THREADS) && pol->notify)
		return err_set(err, EINVAL,
			       "policy %s: a filter for every thread must kill, not report",
			       pol->path);
	if (pol->notify && !listener)
		return err_set(err, EINVAL, "policy %s: nowhere to put the listener", pol->path);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return err_set(err, errno, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	if (flags & SANDBOX_FILTER_ALL_THREADS)
		fl |= SECCOMP_FILTER_FLAG_TSYNC;
	if (pol->notify)
		fl |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
	ret = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, fl, &prog);
	if (ret < 0)
		return err_set(err, errno, "cannot load the seccomp filter of %s: %s", pol->path,
			       strerror(errno));
	if ((flags & SANDBOX_FILTER_ALL_THREADS) && ret > 0)
		return err_set(err, EBUSY,
			       "cannot load the seccomp filter of %s on every thread: thread %ld "
			       "already has a filter of its own",
			       pol->path, ret);
	if (pol->notify)
		*listener = (int)ret;
	return 0;
#else
	(void)pol;
	(void)flags;
	return err_set(err, ENOTSUP, "libvmm was built without libseccomp");
#endif
}

/* ---- The jail (in the child) ---- */

struct jail {
	const struct sandbox_config *cfg;
	const char *what;
	int log_fd;
	int report_fd;
};

/* Send a message (and @fd, when >= 0) to the report fd; false when it could not be sent. */
static bool report(const struct jail *j, unsigned int type, const char *text, int fd)
{
	struct sandbox_msg m;
	struct iovec iov = {&m, sizeof(m)};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t r;

	if (j->report_fd < 0)
		return false;
	memset(&m, 0, sizeof(m));
	m.type = type;
	if (text)
		snprintf(m.text, sizeof(m.text), "%s", text);
	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	do {
		r = sendmsg(j->report_fd, &mh, MSG_NOSIGNAL);
	} while (r < 0 && errno == EINTR);
	return r == (ssize_t)sizeof(m);
}

/* Log why the jail failed, tell the VMM, and leave. */
static void __attribute__((noreturn, format(printf, 2, 3)))
fail(const struct jail *j, const char *fmt, ...)
{
	char text[SANDBOX_MSG_TEXT];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	sandbox_log(j->log_fd, j->what, "%s", text);
	report(j, SANDBOX_MSG_FAIL, text, -1);
	_exit(1);
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* close_range(2), or a walk of /proc/self/fd where it is missing. */
static void close_between(unsigned int lo, unsigned int hi)
{
	DIR *d;
	struct dirent *e;

	if (lo > hi)
		return;
	if (syscall(SYS_close_range, lo, hi, 0) == 0)
		return;
	d = opendir("/proc/self/fd");
	if (!d) {
		for (unsigned int fd = lo; fd <= hi && fd < 65536; fd++)
			close((int)fd);
		return;
	}
	while ((e = readdir(d))) {
		char *end;
		unsigned long fd = strtoul(e->d_name, &end, 10);

		if (*end || e->d_name[0] == '.' || (int)fd == dirfd(d))
			continue;
		if (fd >= lo && fd <= hi)
			close((int)fd);
	}
	closedir(d);
}

/* Close every descriptor but @keep[0..n) (negative entries are ignored). */
static void close_all_but(const int *keep, unsigned int n)
{
	int sorted[80];
	unsigned int m = 0, lo = 0;

	for (unsigned int i = 0; i < n && m < sizeof(sorted) / sizeof(sorted[0]); i++)
		if (keep[i] >= 0)
			sorted[m++] = keep[i];
	qsort(sorted, m, sizeof(int), cmp_int);
	for (unsigned int i = 0; i < m; i++) {
		unsigned int k = (unsigned int)sorted[i];

		if (k > lo)
			close_between(lo, k - 1);
		if (k + 1 > lo)
			lo = k + 1;
	}
	close_between(lo, ~0u);
}

/*
 * Keep 0, 1 and 2 taken (by /dev/null, or the log fd): nothing else may
 * land there (a stray printf), and libseccomp takes a listener fd of 0 for
 * none.
 */
static void fill_std_fds(const struct jail *j)
{
	for (int fd = 0; fd < 3; fd++) {
		int nfd;

		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		nfd = open("/dev/null", O_RDWR | O_NOCTTY);
		if (nfd < 0)
			nfd = fcntl(j->log_fd, F_DUPFD, 0);
		if (nfd < 0)
			fail(j, "cannot fill descriptor %d: %s", fd, strerror(errno));
		if (nfd != fd) {
			if (dup2(nfd, fd) < 0)
				fail(j, "cannot fill descriptor %d: %s", fd, strerror(errno));
			close(nfd);
		}
	}
}

/* Default dispositions (SIGPIPE ignored: writes to a closed peer fail with EPIPE), nothing blocked.
 */
static void reset_signals(void)
{
	struct sigaction sa;
	sigset_t none;

	memset(&sa, 0, sizeof(sa));
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		sa.sa_handler = sig == SIGPIPE ? SIG_IGN : SIG_DFL;
		sigaction(sig, &sa, NULL); /* EINVAL for the C library's own signals */
	}
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static void write_file(const struct jail *j, const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n = -1;

	if (fd >= 0) {
		n = write(fd, text, strlen(text));
		if (n < 0) {
			int e = errno;

			close(fd);
			errno = e;
		} else {
			close(fd);
		}
	}
	if (n != (ssize_t)strlen(text))
		fail(j, "cannot write %s: %s", path, strerror(errno));
}

static const struct {
	int flag;
	unsigned int bit;
	const char *name;
} ns_table[] = {
	{CLONE_NEWUSER, SANDBOX_NS_USER, "user"}, {CLONE_NEWPID, SANDBOX_NS_PID, "pid"},
	{CLONE_NEWIPC, SANDBOX_NS_IPC, "ipc"},	  {CLONE_NEWNET, SANDBOX_NS_NET, "net"},
	{CLONE_NEWNS, SANDBOX_NS_MOUNT, "mount"}, {CLONE_NEWUTS, SANDBOX_NS_UTS, "uts"},
};

static int ns_flags(unsigned int bits)
{
	int flags = 0;

	for (size_t i = 0; i < sizeof(ns_table) / sizeof(ns_table[0]); i++)
		if (bits & ns_table[i].bit)
			flags |= ns_table[i].flag;
	return flags;
}

/* The ids a root process switches to. */
static void jail_ids(const struct jail *j, uid_t *uid, gid_t *gid)
{
	*uid = j->cfg->uid ? j->cfg->uid : SANDBOX_DEFAULT_ID;
	*gid = j->cfg->gid ? j->cfg->gid : SANDBOX_DEFAULT_ID;
}

static void switch_ids(const struct jail *j)
{
	uid_t uid, ruid, euid, suid;
	gid_t gid;

	jail_ids(j, &uid, &gid);
	if (setgroups(0, NULL) < 0)
		fail(j, "cannot clear the supplementary groups: %s", strerror(errno));
	if (setresgid(gid, gid, gid) < 0)
		fail(j, "cannot switch to gid %u: %s", (unsigned int)gid, strerror(errno));
	if (setresuid(uid, uid, uid) < 0)
		fail(j, "cannot switch to uid %u: %s", (unsigned int)uid, strerror(errno));
	if (getresuid(&ruid, &euid, &suid) < 0 || ruid != uid || euid != uid || suid != uid)
		fail(j, "uid switch to %u did not take", (unsigned int)uid);
}

/*
 * Empty the capability bounding set. That needs CAP_SETPCAP; a process
 * without it (not root, no user namespace) has no capability to lose, and
 * no_new_privs keeps it from gaining any.
 */
static void drop_bounding_set(const struct jail *j)
{
#if HAVE_LIBCAP
	int last = (int)cap_max_bits();

	for (int c = 0; c < last; c++) {
		if (cap_drop_bound((cap_value_t)c) == 0 || errno == EINVAL)
			continue;
		if (errno == EPERM)
			break;
		fail(j, "cannot drop capability %d from the bounding set: %s", c, strerror(errno));
	}
#endif
}

/*
 * unshare() each namespace of @want alone; those refused are logged when
 * @log, else their errno is left in @errs (indexed like ns_table).
 */
static unsigned int unshare_each(const struct jail *j, unsigned int want, bool log, int *errs)
{
	unsigned int made = 0;

	for (size_t i = 0; i < sizeof(ns_table) / sizeof(ns_table[0]); i++) {
		if (!(want & ns_table[i].bit))
			continue;
		if (unshare(ns_table[i].flag) == 0) {
			made |= ns_table[i].bit;
			continue;
		}
		if (errs)
			errs[i] = errno;
		if (log)
			sandbox_log(j->log_fd, j->what, "no %s namespace: %s", ns_table[i].name,
				    strerror(errno));
	}
	return made;
}

/*
 * New namespaces. Root makes them directly (its ids are switched later),
 * all at once or one by one. When root gets none (a container that refuses
 * unshare), or when not root, a user namespace comes first: root switches
 * to the unprivileged ids before, so that the namespace maps an
 * unprivileged id to 0 inside. Whatever the host refuses is logged and
 * skipped. Returns the SANDBOX_NS_* made; *@ids_done is set when the ids
 * were switched already.
 */
static unsigned int make_namespaces(const struct jail *j, bool *ids_done)
{
	const unsigned int base = SANDBOX_NS_PID | SANDBOX_NS_IPC | SANDBOX_NS_NET |
				  SANDBOX_NS_MOUNT | SANDBOX_NS_UTS;
	int errs[sizeof(ns_table) / sizeof(ns_table[0])] = {0};
	unsigned int made;
	uid_t uid;
	gid_t gid;
	char map[64];

	*ids_done = false;
	if (geteuid() == 0) {
		if (unshare(ns_flags(base)) == 0)
			return base;
		made = unshare_each(j, base, false, errs);
		if (made) {
			for (size_t i = 0; i < sizeof(ns_table) / sizeof(ns_table[0]); i++)
				if (errs[i])
					sandbox_log(j->log_fd, j->what, "no %s namespace: %s",
						    ns_table[i].name, strerror(errs[i]));
			return made;
		}
		/* The bounding set needs CAP_SETPCAP: empty it while we have it. */
		drop_bounding_set(j);
		switch_ids(j);
		*ids_done = true;
	}
	uid = geteuid();
	gid = getegid();
	if (unshare(ns_flags(base | SANDBOX_NS_USER)) == 0)
		made = base | SANDBOX_NS_USER;
	else
		made = unshare_each(j, base | SANDBOX_NS_USER, true, NULL);
	if (made & SANDBOX_NS_USER) {
		/*
		 * Map our own ids to 0 inside: root there, nobody special
		 * outside. After an id switch the process is not dumpable and
		 * its /proc files are root's: make it dumpable to write them
		 * (drop_privileges() undoes that).
		 */
		if (*ids_done)
			prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
		write_file(j, "/proc/self/setgroups", "deny");
		snprintf(map, sizeof(map), "0 %u 1", (unsigned int)uid);
		write_file(j, "/proc/self/uid_map", map);
		snprintf(map, sizeof(map), "0 %u 1", (unsigned int)gid);
		write_file(j, "/proc/self/gid_map", map);
	}
	return made;
}

/*
 * The root becomes an empty read-only tmpfs: mount it over a directory of
 * our private mount tree, pivot_root into it and detach the old root (or
 * chroot into it where pivot_root is refused).
 */
static unsigned int make_root(const struct jail *j)
{
	static const char *const dirs[] = {"/tmp", "/mnt", "/run", "/dev", "/var"};
	const char *dir = NULL;
	struct stat st;

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		fail(j, "cannot make the mount tree private: %s", strerror(errno));
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !dir; i++)
		if (stat(dirs[i], &st) == 0 && S_ISDIR(st.st_mode))
			dir = dirs[i];
	if (!dir)
		fail(j, "no directory to mount the empty root on");
	if (mount("libvmm-sandbox", dir, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "size=4k,nr_inodes=2,mode=0555") < 0)
		fail(j, "cannot mount an empty tmpfs on %s: %s", dir, strerror(errno));
	if (chdir(dir) < 0)
		fail(j, "cannot enter %s: %s", dir, strerror(errno));
	/* pivot_root(".", "."): the old root ends up on top of the new one, then goes. */
	if (syscall(SYS_pivot_root, ".", ".") == 0) {
		if (umount2(".", MNT_DETACH) < 0)
			fail(j, "cannot detach the old root: %s", strerror(errno));
	} else {
		sandbox_log(j->log_fd, j->what, "pivot_root refused (%s): chroot instead",
			    strerror(errno));
		if (chroot(".") < 0)
			fail(j, "cannot chroot into the empty root: %s", strerror(errno));
	}
	if (chdir("/") < 0)
		fail(j, "cannot enter the empty root: %s", strerror(errno));
	return SANDBOX_EMPTY_ROOT;
}

/*
 * Drop every capability: the bounding set first, then as root in the
 * host's user namespace the ids, then whatever is left (permitted,
 * effective, inheritable, ambient).
 */
static void drop_privileges(const struct jail *j, bool switch_to_ids)
{
#if HAVE_LIBCAP
	cap_t none;

	drop_bounding_set(j);
	if (switch_to_ids)
		switch_ids(j);
	cap_reset_ambient(); /* EINVAL on kernels without ambient capabilities */
	none = cap_init();
	if (!none || cap_set_proc(none) < 0)
		fail(j, "cannot drop capabilities: %s", strerror(errno));
	cap_free(none);
#else
	fail(j, "libvmm was built without libcap");
#endif
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail(j, "cannot set no_new_privs: %s", strerror(errno));
	/* No core dumps (they would hold guest RAM), no ptrace from peers. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

#if HAVE_SECCOMP
/* The waiter's filter: wait, mirror the status, exit. */
static void waiter_filter(const struct jail *j)
{
	static const int calls[] = {
		SCMP_SYS(wait4),	SCMP_SYS(waitid),
		SCMP_SYS(exit_group),	SCMP_SYS(exit),
		SCMP_SYS(kill),		SCMP_SYS(getpid),
		SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask),
		SCMP_SYS(rt_sigreturn), SCMP_SYS(restart_syscall),
		SCMP_SYS(write),
	};
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	int ret = ctx ? 0 : -ENOMEM;

	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]) && !ret; i++)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0);
	if (!ret)
		ret = seccomp_load(ctx);
	if (ret)
		fail(j, "cannot load the waiter's seccomp filter: %s", strerror(-ret));
	seccomp_release(ctx);
}
#endif

/*
 * Die with the parent. Changing ids clears the setting, so this runs again
 * after that; when the parent is visible (@parent > 0), check it is still
 * the same (it may have died just before).
 */
static void arm_death_signal(pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		_exit(1);
	if (parent > 0 && getppid() != parent)
		_exit(1);
}

/*
 * Outside the new pid namespace: wait for its first process and exit the
 * same way (a signal is re-raised on ourselves; a core dump is impossible,
 * we are not dumpable).
 */
static void __attribute__((noreturn))
waiter(const struct jail *j, pid_t parent, pid_t child, bool root_ids)
{
	int status, sig;
	pid_t r;

	close_all_but(&j->log_fd, 1);
	drop_privileges(j, root_ids);
	arm_death_signal(parent);
#if HAVE_SECCOMP
	waiter_filter(j);
#endif
	do {
		r = waitpid(child, &status, 0);
	} while (r < 0 && errno == EINTR);
	if (r != child)
		_exit(1);
	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	sig = WTERMSIG(status);
	signal(sig, SIG_DFL);
	kill(getpid(), sig);
	_exit(128 + sig); /* a signal whose default is to be ignored */
}

unsigned int sandbox_enter(const struct sandbox_config *cfg, const struct sandbox_policy *pol,
			   const char *what, pid_t parent, const int *keep, unsigned int nkeep,
			   int report_fd)
{
	struct jail j = {cfg, what, cfg->log_fd > 0 ? cfg->log_fd : 2, report_fd};
	int fds[72];
	unsigned int made = 0, n = 0;
	bool ids_done = false;
	pid_t pid;

	/* Die with the VMM; if it is gone already, nobody will ever talk to us. */
	arm_death_signal(parent);
	setsid(); /* no terminal signals (^C, hangup) */
	reset_signals();

	if (nkeep > sizeof(fds) / sizeof(fds[0]) - 2)
		fail(&j, "too many descriptors to keep (%u)", nkeep);
	for (unsigned int i = 0; i < nkeep; i++)
		fds[n++] = keep[i];
	fds[n++] = j.log_fd;
	fds[n++] = report_fd;
	close_all_but(fds, n);
	fill_std_fds(&j);

	if (cfg->namespaces) {
		made = make_namespaces(&j, &ids_done);
		if (made & SANDBOX_NS_PID) {
			/* The next child is pid 1 of the namespace: it becomes the device. */
			pid = fork();
			if (pid < 0)
				fail(&j, "cannot fork into the pid namespace: %s", strerror(errno));
			if (pid > 0)
				waiter(&j, parent, pid,
				       !ids_done && !(made & SANDBOX_NS_USER) && geteuid() == 0);
			/* Our parent, the waiter, is outside the namespace (getppid() is 0). */
			arm_death_signal(0);
			parent = 0;
		}
		if (made & SANDBOX_NS_MOUNT)
			made |= make_root(&j);
		else
			sandbox_log(j.log_fd, what,
				    "no mount namespace: the root stays the host's");
	}
	drop_privileges(&j, !ids_done && !(made & SANDBOX_NS_USER) && geteuid() == 0);
	/*
	 * The id switch cleared the death signal. Had the parent died meanwhile,
	 * the next read of the VMM's socket would see EOF anyway.
	 */
	arm_death_signal(parent);

	{
		struct vmm_err e = {""};
		int lfd, ret;

		/* The program compiled at load time: nothing to allocate here. */
		if (sandbox_filter_load(pol, 0, &lfd, &e) < 0)
			fail(&j, "%s", e.msg);
		if (lfd >= 0) {
			if (report_fd < 0) {
				close(lfd);
				fail(&j, "no report fd for the seccomp listener");
			}
			ret = report(&j, SANDBOX_MSG_LISTENER, NULL, lfd) ? 0 : -errno;
			/* Holding it would let this process answer its own reports. */
			close(lfd);
			if (ret)
				fail(&j, "cannot hand the seccomp listener over: %s",
				     strerror(-ret));
		}
	}
	return made;
}
