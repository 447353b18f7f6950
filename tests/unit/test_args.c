/* vmm-run option parsing: every option form, and every bad input giving a one-line error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "frontend/args.h"

static int parse(struct run_opts *o, char *err, int argc, ...)
{
	char *argv[16];
	va_list ap;

	va_start(ap, argc);
	for (int i = 0; i < argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	err[0] = '\0';
	return parse_run_args(argc, argv, o, err, ARGS_ERR_MAX);
}

static void test_all_options(void **state)
{
	struct run_opts o;
	char err[ARGS_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&o, err, 10, "-p", "a=1", "--params", "b=2", "-c", "4", "--mem=4096",
			       "-i", "initrd.img", "kernel"),
			 0);
	assert_string_equal(o.kernel, "kernel");
	assert_string_equal(o.initrd, "initrd.img");
	assert_string_equal(o.params, "a=1 b=2");
	assert_int_equal(o.cpus, 4);
	assert_int_equal(o.mem_mib, 4096);
	assert_false(o.help);
	run_opts_free(&o);
}

static void test_inline_values(void **state)
{
	struct run_opts o;
	char err[ARGS_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&o, err, 5, "-c2", "-m64", "--params=x y", "--initrd=/i", "k"), 0);
	assert_int_equal(o.cpus, 2);
	assert_int_equal(o.mem_mib, 64);
	assert_string_equal(o.params, "x y");
	assert_string_equal(o.initrd, "/i");
	run_opts_free(&o);
}

static void test_defaults_and_help(void **state)
{
	struct run_opts o;
	char err[ARGS_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&o, err, 1, "vmlinux"), 0);
	assert_int_equal(o.cpus, 0);
	assert_int_equal(o.mem_mib, 0);
	assert_null(o.params);
	assert_null(o.initrd);
	run_opts_free(&o);
	assert_int_equal(parse(&o, err, 1, "--help"), 0);
	assert_true(o.help);
	run_opts_free(&o);
	assert_int_equal(parse(&o, err, 1, "-h"), 0);
	assert_true(o.help);
	run_opts_free(&o);
}

static void test_dash_dash(void **state)
{
	struct run_opts o;
	char err[ARGS_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&o, err, 2, "--", "-weird-kernel-name"), 0);
	assert_string_equal(o.kernel, "-weird-kernel-name");
	run_opts_free(&o);
}

struct bad_case {
	int argc;
	const char *argv[6];
	const char *msg; /* substring of the error */
};

static void test_bad_input(void **state)
{
	static const struct bad_case cases[] = {
		{0, {NULL}, "no kernel given"},
		{2, {"-m", "0"}, "-m/--mem: 0 is too small (at least 16)"},
		{2, {"-c", "0"}, "-c/--cpus: 0 is too small (at least 1)"},
		{3, {"-c", "65", "k"}, "-c/--cpus: 65 is too large (at most 64)"},
		{3,
		 {"-m", "99999999999999999999999", "k"},
		 "-m/--mem: 99999999999999999999999 is too large"},
		{3, {"-m", "2000000", "k"}, "is too large (at most 1048576)"},
		{3, {"-m", "-5", "k"}, "-m/--mem: '-5' is not a number"},
		{3, {"-m", "12abc", "k"}, "'12abc' is not a number"},
		{3, {"-c", "", "k"}, "'' is not a number"},
		{2, {"--frobnicate", "k"}, "unknown option '--frobnicate'"},
		{2, {"-x", "k"}, "unknown option '-x'"},
		{2, {"--help=yes", "k"}, "unknown option '--help=yes'"},
		{2, {"k", "-c"}, "option '-c' needs a value"},
		{2, {"k1", "k2"}, "unexpected argument 'k2'"},
		{5, {"-i", "a", "-i", "b"}, "-i/--initrd given twice"},
		{3, {"-i", "", "k"}, "empty path"},
		{4, {"-r", "a", "-r", "b"}, "-r/--root: a root disk was already given (a)"},
		{4, {"-r", "a", "--rwroot", "b"}, "--rwroot: a root disk was already given (a)"},
		{3, {"--rwdisk", "", "k"}, "--rwdisk: empty path"},
		{2, {"--no-rng=1", "k"}, "unknown option '--no-rng=1'"},
		{3, {"--tap-fd", "x", "k"}, "--tap-fd: 'x' is not a number"},
		{3, {"--host_ip", "10.0.0", "k"}, "--host_ip: '10.0.0' is not an IPv4 address"},
		{3, {"--netmask", "255.0.255.0", "k"}, "not a contiguous netmask"},
		{3, {"--netmask", "33", "k"}, "--netmask: 33 is too large"},
		{3, {"--mac", "01:00:00:00:00:01", "k"}, "is a multicast address"},
		{3, {"--mac", "00:00:00:00:00:00", "k"}, "zero MAC"},
		{3, {"--mac", "52:54:00:12:34", "k"}, "is not a MAC address"},
		{3, {"--host_ip", "10.0.0.1", "k"}, "go together (missing --netmask)"},
		{5, {"--host_ip", "10.0.0.1", "--netmask", "24", "k"}, "(missing --mac)"},
		{5,
		 {"--tap-fd", "3", "--mac", "52:54:00:12:34:56", "k"},
		 "--tap-fd cannot be combined"},
		{4, {"--mac", "52:54:00:12:34:56", "--mac", "52:54:00:12:34:57"}, "given once"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct run_opts o;
		char err[ARGS_ERR_MAX] = "";

		assert_int_equal(parse_run_args(cases[i].argc, (char *const *)cases[i].argv, &o,
						err, sizeof(err)),
				 -1);
		if (!strstr(err, cases[i].msg))
			fail_msg("case %zu: '%s' does not contain '%s'", i, err, cases[i].msg);
		assert_null(strchr(err, '\n'));
	}
}

static void test_disks(void **state)
{
	struct run_opts o;
	char err[ARGS_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&o, err, 9, "-d", "d1", "--rwdisk", "w1", "-r", "root.img",
			       "--disk=d2", "--no-rng", "k"),
			 0);
	assert_int_equal(o.ndisks, 4);
	assert_string_equal(o.disks[0].path, "root.img"); /* root first: /dev/vda */
	assert_true(o.disks[0].root);
	assert_false(o.disks[0].writable);
	assert_string_equal(o.disks[1].path, "d1");
	assert_false(o.disks[1].writable);
	assert_string_equal(o.disks[2].path, "w1");
	assert_true(o.disks[2].writable);
	assert_false(o.disks[2].root);
	assert_string_equal(o.disks[3].path, "d2");
	assert_true(o.no_rng);
	run_opts_free(&o);

	assert_int_equal(parse(&o, err, 3, "--rwroot", "/proc/self/fd/3", "k"), 0);
	assert_true(o.disks[0].root && o.disks[0].writable);
	assert_false(o.no_rng);
	run_opts_free(&o);
}

static void test_too_many_disks(void **state)
{
	char *argv[2 * RUN_MAX_DISKS + 3];
	struct run_opts o;
	char err[ARGS_ERR_MAX];
	int n = 0;

	(void)state;
	for (int i = 0; i <= RUN_MAX_DISKS; i++) {
		argv[n++] = "-d";
		argv[n++] = "disk.img";
	}
	argv[n++] = "k";
	assert_int_equal(parse_run_args(n, argv, &o, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too many disks (at most 16)"));
}

static void test_net(void **state)
{
	struct run_opts o;
	char err[ARGS_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&o, err, 7, "--host_ip", "10.1.2.3", "--netmask", "255.255.255.0",
			       "--mac", "52:54:00:ab:cd:ef", "k"),
			 0);
	assert_true(o.tap_create);
	assert_int_equal(o.host_ip, 0x0a010203);
	assert_int_equal(o.netmask, 0xffffff00);
	assert_int_equal(o.mac[0], 0x52);
	assert_int_equal(o.mac[5], 0xef);
	run_opts_free(&o);
	assert_int_equal(parse(&o, err, 5, "--tap-fd", "3", "--tap-fd=7", "--netmask=x", "k"), -1);
	assert_int_equal(parse(&o, err, 4, "--tap-fd", "3", "--tap-fd=7", "k"), 0);
	assert_int_equal(o.ntap_fds, 2);
	assert_int_equal(o.tap_fds[1], 7);
	assert_false(o.tap_create);
	run_opts_free(&o);
	assert_int_equal(parse(&o, err, 7, "--host_ip", "192.168.0.1", "--netmask", "/16", "--mac",
			       "02:00:00:00:00:01", "k"),
			 0);
	assert_int_equal(o.netmask, 0xffff0000);
	run_opts_free(&o);
}

static void test_parse_uint(void **state)
{
	unsigned long v;
	char err[ARGS_ERR_MAX];

	(void)state;
	assert_int_equal(parse_uint("n", "42", 1, 100, &v, err, sizeof(err)), 0);
	assert_int_equal(v, 42);
	assert_int_equal(parse_uint("n", "100", 1, 100, &v, err, sizeof(err)), 0);
	assert_int_equal(parse_uint("n", "101", 1, 100, &v, err, sizeof(err)), -1);
	assert_int_equal(parse_uint("n", " 5", 1, 100, &v, err, sizeof(err)), -1);
	assert_int_equal(parse_uint("n", "+5", 1, 100, &v, err, sizeof(err)), -1);
	assert_int_equal(parse_uint("n", "0x10", 0, 100, &v, err, sizeof(err)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_all_options),
		cmocka_unit_test(test_inline_values),
		cmocka_unit_test(test_defaults_and_help),
		cmocka_unit_test(test_dash_dash),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_parse_uint),
		cmocka_unit_test(test_disks),
		cmocka_unit_test(test_too_many_disks),
		cmocka_unit_test(test_net),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
