/* vmm-run's command-line parsing, kept apart from main() so unit tests can drive it. */
#ifndef LIBVMM_FRONTEND_ARGS_H
#define LIBVMM_FRONTEND_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARGS_ERR_MAX 256

#define RUN_MAX_DISKS 16

/* One -r/--rwroot/-d/--rwdisk option. */
struct disk_opt {
	const char *path;
	bool writable;
	bool root;
};

/* Options of `vmm-run run`. */
struct run_opts {
	struct disk_opt
		disks[RUN_MAX_DISKS]; /* in guest order: the root disk first, then as given */
	unsigned int ndisks;
	bool no_rng;
	bool no_balloon;
	const char *socket;	    /* -s: control socket path or directory */
	bool no_sandbox;	    /* --disable-sandbox */
	const char *policy_dir;	    /* --seccomp-policy-dir */
	int tap_fds[RUN_MAX_DISKS]; /* --tap-fd, in order */
	unsigned int ntap_fds;
	bool tap_create;	   /* --host_ip/--netmask/--mac given (all three) */
	uint32_t host_ip, netmask; /* host byte order */
	uint8_t mac[6];
	const char *kernel;
	const char *initrd;
	char *params;	      /* -p values joined by spaces, malloc'ed, or NULL */
	unsigned int cpus;    /* 0: not given */
	unsigned int mem_mib; /* 0: not given */
	bool help;
};

/*
 * Parse the arguments after "run" (argv[0] is the first option). Returns 0,
 * or -1 with a one-line message in @err (no "vmm-run:" prefix). On success
 * free the result with run_opts_free().
 */
int parse_run_args(int argc, char *const argv[], struct run_opts *o, char *err, size_t errlen);
void run_opts_free(struct run_opts *o);

/*
 * Parse a decimal count for option @name: digits only, no sign, no
 * overflow, between @min and @max. Returns 0 or -1 with a message.
 */
int parse_uint(const char *name, const char *s, unsigned long min, unsigned long max,
	       unsigned long *out, char *err, size_t errlen);

/*
 * Parse a size in bytes for @name: digits with an optional K, M or G suffix
 * (powers of 1024). Returns 0 or -1 with a message.
 */
int parse_size(const char *name, const char *s, uint64_t *out, char *err, size_t errlen);

/* Parse a dotted IPv4 address, a netmask (dotted or a prefix length) and a MAC. */
int parse_ipv4(const char *name, const char *s, uint32_t *out, char *err, size_t errlen);
int parse_netmask(const char *name, const char *s, uint32_t *out, char *err, size_t errlen);
int parse_mac(const char *name, const char *s, uint8_t mac[6], char *err, size_t errlen);

/* Usage text of `vmm-run run` and of `vmm-run` as a whole. */
extern const char run_usage[];
extern const char main_usage[];

#endif
