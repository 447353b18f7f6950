/* Parses `vmm-run run` options (crosvm's names) into a struct run_opts. */
#include "args.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libvmm/libvmm.h"

#define MAX_MEM_MIB (1024UL * 1024) /* 1 TiB: beyond that a value is a typo */

const char main_usage[] =
	"Usage: vmm-run COMMAND [ARGS]\n"
	"\n"
	"Commands:\n"
	"  run [OPTIONS] KERNEL   boot KERNEL (an ELF64 vmlinux or a bzImage) in a new VM\n"
	"  stop SOCKET...         stop the VMs listening on these control sockets\n"
	"  suspend SOCKET...      pause every vCPU of the VMs\n"
	"  resume SOCKET...       let them run again\n"
	"  balloon SIZE SOCKET... set the balloon target (bytes; K, M or G suffix)\n"
	"  status SOCKET...       print one line per VM: state=... vcpus=... mem_mib=...\n"
	"                         balloon_target_mib=... balloon_actual_mib=...\n"
	"  create_qcow2 PATH SIZE [--cluster-size BYTES] [--backing FILE]\n"
	"                         create a qcow2 image (SIZE and BYTES take K, M, G;\n"
	"                         SIZE may be left out with --backing)\n"
	"  version                print the libvmm version\n"
	"  help                   print this help\n"
	"\n"
	"Run 'vmm-run run --help' for the options of run.\n";

const char run_usage[] =
	"Usage: vmm-run run [OPTIONS] KERNEL\n"
	"\n"
	"Boot KERNEL, an ELF64 vmlinux or a bzImage, with its console on COM1\n"
	"wired to this terminal (stdin and stdout; raw mode when stdin is a\n"
	"terminal). Exits 0 when the guest powers off or reboots, or when\n"
	"SIGTERM, SIGINT, SIGHUP or 'vmm-run stop' stops the VM; 1 on errors,\n"
	"a triple fault or a KVM internal error.\n"
	"\n"
	"Options:\n"
	"  -p, --params STR   append STR to the kernel command line (repeatable);\n"
	"                     the command line starts with\n"
	"                     \"console=ttyS0 reboot=k panic=-1\"\n"
	"  -c, --cpus N       number of vCPUs (default 1, at most 64)\n"
	"  -m, --mem MIB      guest memory in MiB (default 256, at least 16)\n"
	"  -i, --initrd PATH  initial ramdisk\n"
	"  -r, --root PATH    read-only root disk: it becomes /dev/vda and the\n"
	"                     command line gets \"root=/dev/vda ro\"\n"
	"      --rwroot PATH  the same, writable (\"root=/dev/vda rw\")\n"
	"  -d, --disk PATH    read-only disk (repeatable; /dev/vdb, ... in order)\n"
	"      --rwdisk PATH  writable disk (repeatable)\n"
	"                     Disks are raw or qcow2 images (detected from the\n"
	"                     file's header); /proc/self/fd/N hands over an\n"
	"                     open fd. Images are locked: shared for read-only\n"
	"                     use, exclusive for writable use. A writable image\n"
	"                     detected as raw refuses guest writes that would\n"
	"                     make it start like a qcow2 image.\n"
	"      --no-rng       no virtio-rng device (present by default)\n"
	"      --no-balloon   no virtio-balloon device (present by default)\n"
	"      --tap-fd N     virtio-net on the configured tap device open as fd N,\n"
	"                     inherited from the caller (repeatable: one NIC each);\n"
	"                     needs no privileges\n"
	"      --host_ip IP   with --netmask and --mac: create a tap, give its host\n"
	"      --netmask MASK side IP and MASK (a.b.c.d or a prefix length), bring it\n"
	"      --mac MAC      up, and give the guest MAC (needs CAP_NET_ADMIN)\n"
	"      --disable-sandbox\n"
	"                     run the devices in this process, without seccomp;\n"
	"                     by default each virtio device runs in a jailed\n"
	"                     process of its own (namespaces, empty root, no\n"
	"                     capabilities, seccomp), and the vCPU threads and\n"
	"                     vmm-run itself run under seccomp filters too\n"
	"  -u, --multiprocess the default (accepted for crosvm compatibility)\n"
	"      --seccomp-policy-dir DIR\n"
	"                     the seccomp policies (default: the\n"
	"                     installed ones, or $LIBVMM_SECCOMP_POLICY_DIR)\n"
	"  -s, --socket PATH  serve the control socket at PATH (a directory gets\n"
	"                     vmm-<pid>.sock inside) for stop, suspend, resume,\n"
	"                     balloon and status; removed when vmm-run exits\n"
	"  -h, --help         print this help\n";

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

int parse_uint(const char *name, const char *s, unsigned long min, unsigned long max,
	       unsigned long *out, char *err, size_t errlen)
{
	unsigned long v;
	char *end;

	if (!s[0] || s[0] < '0' || s[0] > '9')
		return fail(err, errlen, "%s: '%s' is not a number", name, s);
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end)
		return fail(err, errlen, "%s: '%s' is not a number", name, s);
	if (errno == ERANGE || v > max)
		return fail(err, errlen, "%s: %s is too large (at most %lu)", name, s, max);
	if (v < min)
		return fail(err, errlen, "%s: %s is too small (at least %lu)", name, s, min);
	*out = v;
	return 0;
}

int parse_size(const char *name, const char *s, uint64_t *out, char *err, size_t errlen)
{
	unsigned long long v;
	unsigned int shift = 0;
	char *end;

	if (!s[0] || s[0] < '0' || s[0] > '9')
		return fail(err, errlen, "%s: '%s' is not a size", name, s);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (*end)
		return fail(err, errlen, "%s: '%s' is not a size (a number with K, M or G)", name,
			    s);
	if (errno == ERANGE || v > (UINT64_MAX >> shift))
		return fail(err, errlen, "%s: %s is too large", name, s);
	*out = (uint64_t)v << shift;
	return 0;
}

int parse_ipv4(const char *name, const char *s, uint32_t *out, char *err, size_t errlen)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		return fail(err, errlen, "%s: '%s' is not an IPv4 address", name, s);
	*out = ntohl(a.s_addr);
	return 0;
}

int parse_netmask(const char *name, const char *s, uint32_t *out, char *err, size_t errlen)
{
	unsigned long bits;
	uint32_t m = 0;

	if (s[0] == '/')
		s++;
	if (!strchr(s, '.')) {
		if (parse_uint(name, s, 0, 32, &bits, err, errlen) < 0)
			return -1;
		*out = bits ? ~0u << (32 - bits) : 0;
		return 0;
	}
	if (parse_ipv4(name, s, &m, err, errlen) < 0)
		return -1;
	if (m & (~m >> 1))
		return fail(err, errlen, "%s: '%s' is not a contiguous netmask", name, s);
	*out = m;
	return 0;
}

int parse_mac(const char *name, const char *s, uint8_t mac[6], char *err, size_t errlen)
{
	unsigned int b[6];
	char tail;

	if (strlen(s) != 17 || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3],
				      &b[4], &b[5], &tail) != 6)
		return fail(err, errlen, "%s: '%s' is not a MAC address (xx:xx:xx:xx:xx:xx)", name,
			    s);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	if (mac[0] & 1)
		return fail(err, errlen, "%s: %s is a multicast address", name, s);
	if (!(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]))
		return fail(err, errlen, "%s: the zero MAC address is not usable", name);
	return 0;
}

static int add_param(struct run_opts *o, const char *p, char *err, size_t errlen)
{
	size_t old = o->params ? strlen(o->params) : 0;
	char *n = realloc(o->params, old + strlen(p) + 2);

	if (!n)
		return fail(err, errlen, "out of memory");
	if (old)
		n[old++] = ' ';
	strcpy(n + old, p);
	o->params = n;
	return 0;
}

/* Add a disk; the root disk goes first so that it is /dev/vda. */
static int add_disk(struct run_opts *o, const char *name, const char *path, bool writable,
		    bool root, char *err, size_t errlen)
{
	struct disk_opt d = {path, writable, root};

	if (!path[0])
		return fail(err, errlen, "%s: empty path", name);
	if (o->ndisks == RUN_MAX_DISKS)
		return fail(err, errlen, "%s: too many disks (at most %d)", name, RUN_MAX_DISKS);
	if (root) {
		if (o->ndisks && o->disks[0].root)
			return fail(err, errlen, "%s: a root disk was already given (%s)", name,
				    o->disks[0].path);
		memmove(&o->disks[1], &o->disks[0], o->ndisks * sizeof(o->disks[0]));
		o->disks[0] = d;
	} else {
		o->disks[o->ndisks] = d;
	}
	o->ndisks++;
	return 0;
}

enum opt_id {
	OPT_PARAMS,
	OPT_CPUS,
	OPT_MEM,
	OPT_INITRD,
	OPT_ROOT,
	OPT_RWROOT,
	OPT_DISK,
	OPT_RWDISK,
	OPT_NO_RNG,
	OPT_NO_BALLOON,
	OPT_SOCKET,
	OPT_TAP_FD,
	OPT_NO_SANDBOX,
	OPT_MULTIPROCESS,
	OPT_POLICY_DIR,
	OPT_HOST_IP,
	OPT_NETMASK,
	OPT_MAC,
	OPT_HELP,
};

static const struct option_def {
	char short_name;
	const char *long_name;
	bool has_arg;
	enum opt_id id;
} options[] = {
	{'p', "params", true, OPT_PARAMS},
	{'c', "cpus", true, OPT_CPUS},
	{'m', "mem", true, OPT_MEM},
	{'i', "initrd", true, OPT_INITRD},
	{'r', "root", true, OPT_ROOT},
	{0, "rwroot", true, OPT_RWROOT},
	{'d', "disk", true, OPT_DISK},
	{0, "rwdisk", true, OPT_RWDISK},
	{0, "no-rng", false, OPT_NO_RNG},
	{0, "no-balloon", false, OPT_NO_BALLOON},
	{'s', "socket", true, OPT_SOCKET},
	{0, "tap-fd", true, OPT_TAP_FD},
	{0, "host_ip", true, OPT_HOST_IP},
	{0, "netmask", true, OPT_NETMASK},
	{0, "mac", true, OPT_MAC},
	{0, "disable-sandbox", false, OPT_NO_SANDBOX},
	{'u', "multiprocess", false, OPT_MULTIPROCESS},
	{0, "seccomp-policy-dir", true, OPT_POLICY_DIR},
	{'h', "help", false, OPT_HELP},
};

/* Find the option @arg names; *inline_val gets "--opt=VAL" or "-oVAL" values. */
static const struct option_def *find_option(const char *arg, const char **inline_val)
{
	*inline_val = NULL;
	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
		const struct option_def *d = &options[i];

		if (arg[1] == '-') {
			size_t n = strlen(d->long_name);

			if (strncmp(arg + 2, d->long_name, n) != 0)
				continue;
			if (arg[2 + n] == '=' && d->has_arg)
				*inline_val = arg + 3 + n;
			else if (arg[2 + n] != '\0')
				continue;
			return d;
		}
		if (d->short_name && arg[1] == d->short_name) {
			if (arg[2] && d->has_arg)
				*inline_val = arg + 2;
			else if (arg[2])
				continue;
			return d;
		}
	}
	return NULL;
}

/* How often the tap creation options were given. */
struct net_seen {
	int host_ip, netmask, mac;
};

static int apply(struct run_opts *o, struct net_seen *seen, const struct option_def *d,
		 const char *val, char *err, size_t errlen)
{
	char name[32];
	unsigned long v;

	if (d->short_name)
		snprintf(name, sizeof(name), "-%c/--%s", d->short_name, d->long_name);
	else
		snprintf(name, sizeof(name), "--%s", d->long_name);
	switch (d->id) {
	case OPT_PARAMS:
		return add_param(o, val, err, errlen);
	case OPT_CPUS:
		if (parse_uint(name, val, 1, VM_MAX_VCPUS, &v, err, errlen) < 0)
			return -1;
		o->cpus = (unsigned int)v;
		return 0;
	case OPT_MEM:
		if (parse_uint(name, val, 16, MAX_MEM_MIB, &v, err, errlen) < 0)
			return -1;
		o->mem_mib = (unsigned int)v;
		return 0;
	case OPT_INITRD:
		if (o->initrd)
			return fail(err, errlen, "%s given twice", name);
		if (!val[0])
			return fail(err, errlen, "%s: empty path", name);
		o->initrd = val;
		return 0;
	case OPT_ROOT:
	case OPT_RWROOT:
	case OPT_DISK:
	case OPT_RWDISK:
		return add_disk(o, name, val, d->id == OPT_RWROOT || d->id == OPT_RWDISK,
				d->id == OPT_ROOT || d->id == OPT_RWROOT, err, errlen);
	case OPT_NO_RNG:
		o->no_rng = true;
		return 0;
	case OPT_NO_BALLOON:
		o->no_balloon = true;
		return 0;
	case OPT_SOCKET:
		if (o->socket)
			return fail(err, errlen, "%s given twice", name);
		if (!val[0])
			return fail(err, errlen, "%s: empty path", name);
		o->socket = val;
		return 0;
	case OPT_TAP_FD:
		if (o->ntap_fds == RUN_MAX_DISKS)
			return fail(err, errlen, "%s: too many (at most %d)", name, RUN_MAX_DISKS);
		if (parse_uint(name, val, 0, 1 << 20, &v, err, errlen) < 0)
			return -1;
		o->tap_fds[o->ntap_fds++] = (int)v;
		return 0;
	case OPT_NO_SANDBOX:
		o->no_sandbox = true;
		return 0;
	case OPT_MULTIPROCESS:
		return 0;
	case OPT_POLICY_DIR:
		if (!val[0])
			return fail(err, errlen, "%s: empty path", name);
		o->policy_dir = val;
		return 0;
	case OPT_HOST_IP:
		seen->host_ip++;
		return parse_ipv4(name, val, &o->host_ip, err, errlen);
	case OPT_NETMASK:
		seen->netmask++;
		return parse_netmask(name, val, &o->netmask, err, errlen);
	case OPT_MAC:
		seen->mac++;
		return parse_mac(name, val, o->mac, err, errlen);
	case OPT_HELP:
		o->help = true;
		return 0;
	}
	return fail(err, errlen, "internal error: unhandled option");
}

int parse_run_args(int argc, char *const argv[], struct run_opts *o, char *err, size_t errlen)
{
	bool only_args = false;
	struct net_seen seen = {0, 0, 0};

	memset(o, 0, sizeof(*o));
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const struct option_def *d;
		const char *val;

		if (only_args || a[0] != '-' || a[1] == '\0') {
			if (o->kernel) {
				fail(err, errlen, "unexpected argument '%s' (the kernel is '%s')",
				     a, o->kernel);
				goto bad;
			}
			o->kernel = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_args = true;
			continue;
		}
		d = find_option(a, &val);
		if (!d) {
			fail(err, errlen, "unknown option '%s'", a);
			goto bad;
		}
		if (d->has_arg && !val) {
			if (i + 1 >= argc) {
				fail(err, errlen, "option '%s' needs a value", a);
				goto bad;
			}
			val = argv[++i];
		}
		if (apply(o, &seen, d, val, err, errlen) < 0)
			goto bad;
	}
	if (seen.host_ip > 1 || seen.netmask > 1 || seen.mac > 1) {
		fail(err, errlen, "--host_ip, --netmask and --mac may each be given once");
		goto bad;
	}
	if (seen.host_ip || seen.netmask || seen.mac) {
		if (o->ntap_fds) {
			fail(err, errlen,
			     "--tap-fd cannot be combined with --host_ip, --netmask or --mac");
			goto bad;
		}
		if (!seen.host_ip || !seen.netmask || !seen.mac) {
			fail(err, errlen, "--host_ip, --netmask and --mac go together (missing %s)",
			     !seen.host_ip   ? "--host_ip"
			     : !seen.netmask ? "--netmask"
					     : "--mac");
			goto bad;
		}
		o->tap_create = true;
	}
	if (!o->help && !o->kernel) {
		fail(err, errlen, "no kernel given (usage: vmm-run run [OPTIONS] KERNEL)");
		goto bad;
	}
	return 0;
bad:
	run_opts_free(o);
	return -1;
}

void run_opts_free(struct run_opts *o)
{
	free(o->params);
	o->params = NULL;
}
