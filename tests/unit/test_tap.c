/*
 * Unit tests for the tap backend: tap_check_fd() on every kind of fd, tap_create() and
 * tap_enable_offloads() on real taps in private network namespaces (forked children, so this
 * process is untouched), and the address parsers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices/tap.h"

/* ---- Children in a private network namespace ---- */

#define SKIP_EXIT 77

/* In a child: report a failed check on stderr and exit 1 (no cmocka there). */
#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			_exit(1);                                                                  \
		}                                                                                  \
	} while (0)

#define CHECK_MSG(err, needle)                                                                     \
	do {                                                                                       \
		if (!strstr((err).msg, (needle))) {                                                \
			fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__,          \
				__LINE__, (err).msg, (needle));                                    \
			_exit(1);                                                                  \
		}                                                                                  \
	} while (0)

/*
 * Run @fn in a forked child inside a new network namespace. Skips the test
 * (with the reason) when namespaces or /dev/net/tun are not available.
 */
static void run_in_netns(void (*fn)(void))
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) < 0) {
			fprintf(stderr, "skip: unshare(CLONE_NEWNET): %s\n", strerror(errno));
			_exit(SKIP_EXIT);
		}
		if (access("/dev/net/tun", R_OK | W_OK) < 0) {
			fprintf(stderr, "skip: /dev/net/tun: %s\n", strerror(errno));
			_exit(SKIP_EXIT);
		}
		fn();
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == SKIP_EXIT)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Open /dev/net/tun and attach it to a new interface with @flags; -1 on failure. */
static int raw_tun(const char *name, short flags)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = flags;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- tap_check_fd on things that are not taps ---- */

static void test_check_closed_fd(void **state)
{
	struct tap_info info;
	struct vmm_err err;
	int fd = open("/dev/null", O_RDWR);

	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(tap_check_fd(fd, &info, &err), -EBADF);
	assert_non_null(strstr(err.msg, "not an open file descriptor"));
	assert_int_equal(tap_check_fd(-1, &info, &err), -EBADF);
	assert_non_null(strstr(err.msg, "-1"));
}

static void test_check_regular_file(void **state)
{
	struct tap_info info;
	struct vmm_err err;
	FILE *f = tmpfile();

	assert_non_null(f);
	assert_int_equal(tap_check_fd(fileno(f), &info, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "a regular file"));
	fclose(f);
}

static void test_check_socket(void **state)
{
	struct tap_info info;
	struct vmm_err err;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(tap_check_fd(sv[0], &info, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "a socket"));
	close(sv[0]);
	close(sv[1]);
}

static void test_check_pipe(void **state)
{
	struct tap_info info;
	struct vmm_err err;
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(tap_check_fd(p[0], &info, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "a pipe"));
	close(p[0]);
	close(p[1]);
}

static void test_check_directory(void **state)
{
	struct tap_info info;
	struct vmm_err err;
	int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(tap_check_fd(fd, &info, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "a directory"));
	close(fd);
}

static void test_check_other_chardev(void **state)
{
	struct tap_info info;
	struct vmm_err err;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(tap_check_fd(fd, &info, &err), -ENOTTY);
	assert_non_null(strstr(err.msg, "not a tun/tap"));
	close(fd);
	/* Read-only: refused before any ioctl. */
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(tap_check_fd(fd, &info, &err), -EBADF);
	assert_non_null(strstr(err.msg, "reading and writing"));
	close(fd);
}

/* /dev/net/tun opened but never attached: needs no namespace, creates nothing. */
static void test_check_unattached_tun(void **state)
{
	struct tap_info info;
	struct vmm_err err;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		print_message("skip: /dev/net/tun: %s\n", strerror(errno));
		skip();
	}
	assert_int_equal(tap_check_fd(fd, &info, &err), -EBADFD);
	assert_non_null(strstr(err.msg, "no interface attached"));
	close(fd);
}

/* ---- Real tun/tap devices (children in a private namespace) ---- */

static void child_check_tun_and_taps(void)
{
	struct sock_filter accept_all = BPF_STMT(BPF_RET | BPF_K, 0xffffffffu);
	struct sock_fprog prog;
	struct tap_info info;
	struct ifreq ifr;
	struct vmm_err err;
	int fd, hdr = 0;

	/* A tun (layer 3) device. */
	fd = raw_tun("ltun0", IFF_TUN | IFF_NO_PI);
	CHECK(fd >= 0);
	CHECK(tap_check_fd(fd, &info, &err) == -EINVAL);
	CHECK_MSG(err, "is a tun (layer 3) device");
	CHECK_MSG(err, "libvmm needs a tap");
	close(fd);

	/* A tap with packet information; the check leaves no filter behind. */
	fd = raw_tun("ltap0", IFF_TAP);
	CHECK(fd >= 0);
	CHECK(tap_check_fd(fd, &info, &err) == -EINVAL);
	CHECK_MSG(err, "IFF_NO_PI");
	memset(&ifr, 0, sizeof(ifr));
	CHECK(ioctl(fd, TUNGETIFF, &ifr) == 0 && (ifr.ifr_flags & IFF_NOFILTER));
	/* With a live filter of the caller's, TUNGETIFF's bit is IFF_NO_PI alone. */
	prog.len = 1;
	prog.filter = &accept_all;
	CHECK(ioctl(fd, TUNATTACHFILTER, &prog) == 0);
	CHECK(tap_check_fd(fd, &info, &err) == -EINVAL);
	close(fd);
	fd = raw_tun("ltap0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
	CHECK(fd >= 0);
	CHECK(ioctl(fd, TUNATTACHFILTER, &prog) == 0);
	CHECK(tap_check_fd(fd, &info, &err) == 0);
	CHECK(info.vnet_hdr && (info.flags & IFF_NO_PI));
	close(fd);

	/* A tap without IFF_VNET_HDR: accepted, run without headers and offloads. */
	fd = raw_tun("ltap1", IFF_TAP | IFF_NO_PI);
	CHECK(fd >= 0);
	CHECK(tap_check_fd(fd, &info, &err) == 0);
	CHECK(strcmp(info.ifname, "ltap1") == 0);
	CHECK(!info.vnet_hdr);
	CHECK(info.flags & IFF_TAP);
	CHECK(tap_enable_offloads(fd, &info, &err) == 0);
	CHECK(info.offloads == 0);
	close(fd);

	/* A proper tap. */
	fd = raw_tun("ltap2", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
	CHECK(fd >= 0);
	CHECK(tap_check_fd(fd, &info, &err) == 0);
	CHECK(strcmp(info.ifname, "ltap2") == 0);
	CHECK(info.vnet_hdr);
	CHECK(!info.no_ioctl);
	CHECK(tap_enable_offloads(fd, &info, &err) == 0);
	CHECK(ioctl(fd, TUNGETVNETHDRSZ, &hdr) == 0);
	CHECK(hdr == TAP_VNET_HDR_SIZE);
	/* Every kernel since 2.6.27 takes checksum and TCP segmentation offloads. */
	CHECK(info.offloads & TUN_F_CSUM);
	CHECK(info.offloads & TUN_F_TSO4);
	CHECK(info.offloads & TUN_F_TSO6);
	CHECK(info.offloads & TUN_F_TSO_ECN);
	CHECK(!(info.offloads &
		~(unsigned int)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO)));
	close(fd);

	/* Open read-only (TUNSETIFF works on it): refused. */
	fd = open("/dev/net/tun", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "ltap3");
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	CHECK(ioctl(fd, TUNSETIFF, &ifr) == 0);
	CHECK(tap_check_fd(fd, &info, &err) == -EBADF);
	CHECK_MSG(err, "reading and writing");
	close(fd);
}

static void test_check_real_devices(void **state)
{
	run_in_netns(child_check_tun_and_taps);
}

/* Read an IPv4 address-type ioctl of @ifname (SIOCGIFADDR, SIOCGIFNETMASK). */
static uint32_t if_get_addr(const char *ifname, unsigned long req)
{
	struct sockaddr_in sin;
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	CHECK(s >= 0);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	CHECK(ioctl(s, req, &ifr) == 0);
	memcpy(&sin, &ifr.ifr_addr, sizeof(sin));
	close(s);
	return ntohl(sin.sin_addr.s_addr);
}

static short if_get_flags(const char *ifname)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	CHECK(s >= 0);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	CHECK(ioctl(s, SIOCGIFFLAGS, &ifr) == 0);
	close(s);
	return ifr.ifr_flags;
}

static void child_create(void)
{
	char name[TAP_IFNAMSIZ], name2[TAP_IFNAMSIZ];
	struct tap_info info;
	struct vmm_err err;
	int fd, fd2, fl;

	/* Kernel-chosen name, address and netmask set, interface up. */
	CHECK(tap_create(NULL, 0x0a000201, 0xffffff00, &fd, name, &err) == 0);
	CHECK(strncmp(name, "tap", 3) == 0);
	CHECK(if_get_addr(name, SIOCGIFADDR) == 0x0a000201);
	CHECK(if_get_addr(name, SIOCGIFNETMASK) == 0xffffff00);
	CHECK(if_get_flags(name) & IFF_UP);
	fl = fcntl(fd, F_GETFL);
	CHECK(fl >= 0 && (fl & O_NONBLOCK));
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* What tap_create made passes tap_check_fd with a vnet header. */
	CHECK(tap_check_fd(fd, &info, &err) == 0);
	CHECK(strcmp(info.ifname, name) == 0);
	CHECK(info.vnet_hdr);
	CHECK(tap_enable_offloads(fd, &info, &err) == 0);
	CHECK(info.offloads & TUN_F_CSUM);

	/* A chosen name; a /30. */
	CHECK(tap_create("vmtest0", 0xc0a86401, 0xfffffffc, &fd2, name2, &err) == 0);
	CHECK(strcmp(name2, "vmtest0") == 0);
	CHECK(if_get_addr("vmtest0", SIOCGIFADDR) == 0xc0a86401);
	CHECK(if_get_addr("vmtest0", SIOCGIFNETMASK) == 0xfffffffc);
	/* The name is taken while the first fd holds it. */
	CHECK(tap_create("vmtest0", 0, 0, &fd, NULL, &err) == -EBUSY);
	CHECK(fd == -1);
	CHECK_MSG(err, "in use");
	close(fd2);
	/* Without an address: only brought up. */
	CHECK(tap_create("vmtest1", 0, 0, &fd2, NULL, &err) == 0);
	CHECK(if_get_flags("vmtest1") & IFF_UP);
	close(fd2);

	/* Refused before creating anything. */
	CHECK(tap_create("a-name-that-is-too-long", 0, 0, &fd2, NULL, &err) == -EINVAL);
	CHECK_MSG(err, "longer than 15");
	CHECK(tap_create("vmtest2", 0x0a000001, 0xff00ff00, &fd2, NULL, &err) == -EINVAL);
	CHECK_MSG(err, "255.0.255.0");
	CHECK(tap_create("vmtest2", 0x0a000001, 0, &fd2, NULL, &err) == -EINVAL);
	CHECK(tap_create("bad/name", 0, 0, &fd2, NULL, &err) == -EINVAL);
	close(fd);
}

static void test_create(void **state)
{
	run_in_netns(child_create);
}

/* Drop CAP_NET_ADMIN from this (child) process: effective, permitted and inheritable. */
static void drop_net_admin(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];

	CHECK(syscall(SYS_capget, &h, d) == 0);
	d[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
	d[CAP_NET_ADMIN / 32].permitted &= ~(1u << (CAP_NET_ADMIN % 32));
	d[CAP_NET_ADMIN / 32].inheritable &= ~(1u << (CAP_NET_ADMIN % 32));
	CHECK(syscall(SYS_capset, &h, d) == 0);
}

static void child_create_no_cap(void)
{
	struct vmm_err err;
	int fd;

	drop_net_admin();
	CHECK(tap_create("vmtest3", 0x0a000001, 0xffffff00, &fd, NULL, &err) == -EPERM);
	CHECK(fd == -1);
	CHECK_MSG(err, "CAP_NET_ADMIN");
}

static void test_create_without_cap(void **state)
{
	run_in_netns(child_create_no_cap);
}

/* ---- Parsers ---- */

static void test_parse_ipv4(void **state)
{
	static const char *const bad[] = {
		"",	      "1.2.3",	   "1.2.3.4.5",	 "256.1.1.1", "1.2.3.-4",
		"01.2.3.4",   "1.2.3.4 ",  " 1.2.3.4",	 "1..3.4",    "a.b.c.d",
		"1.2.3.4/24", "0x1.2.3.4", "1.2.3.1000",
	};
	struct vmm_err err;
	uint32_t ip;
	char buf[16];

	assert_int_equal(tap_parse_ipv4("10.0.2.1", "host IP", &ip, &err), 0);
	assert_int_equal(ip, 0x0a000201);
	assert_int_equal(tap_parse_ipv4("0.0.0.0", "host IP", &ip, &err), 0);
	assert_int_equal(ip, 0);
	assert_int_equal(tap_parse_ipv4("255.255.255.255", "host IP", &ip, &err), 0);
	assert_int_equal(ip, 0xffffffff);
	assert_int_equal(tap_parse_ipv4("192.168.100.10", NULL, &ip, &err), 0);
	tap_format_ipv4(ip, buf);
	assert_string_equal(buf, "192.168.100.10");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ip = 12345;
		assert_int_equal(tap_parse_ipv4(bad[i], "host IP", &ip, &err), -EINVAL);
		assert_int_equal(ip, 12345);
		assert_non_null(strstr(err.msg, "host IP"));
	}
	assert_int_equal(tap_parse_ipv4(NULL, "host IP", &ip, &err), -EINVAL);
}

static void test_parse_netmask(void **state)
{
	static const char *const bad[] = {
		"255.0.255.0",
		"255.255.255.1",
		"0.255.255.255",
		"0.0.0.0",
		"0",
		"/0",
		"33",
		"/33",
		"",
		"/",
		"24x",
		"255.255.255",
		"/255.255.255.0",
		"128.0.0.1",
	};
	struct vmm_err err;
	uint32_t m;

	assert_int_equal(tap_parse_netmask("255.255.255.0", &m, &err), 0);
	assert_int_equal(m, 0xffffff00);
	assert_int_equal(tap_parse_netmask("255.255.255.255", &m, &err), 0);
	assert_int_equal(m, 0xffffffff);
	assert_int_equal(tap_parse_netmask("128.0.0.0", &m, &err), 0);
	assert_int_equal(m, 0x80000000);
	assert_int_equal(tap_parse_netmask("24", &m, &err), 0);
	assert_int_equal(m, 0xffffff00);
	assert_int_equal(tap_parse_netmask("/30", &m, &err), 0);
	assert_int_equal(m, 0xfffffffc);
	assert_int_equal(tap_parse_netmask("32", &m, &err), 0);
	assert_int_equal(m, 0xffffffff);
	assert_int_equal(tap_parse_netmask("1", &m, &err), 0);
	assert_int_equal(m, 0x80000000);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(tap_parse_netmask(bad[i], &m, &err), -EINVAL);
	assert_int_equal(tap_parse_netmask("255.0.255.0", &m, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not contiguous"));

	assert_true(tap_netmask_valid(0xffffff00));
	assert_true(tap_netmask_valid(0xffffffff));
	assert_false(tap_netmask_valid(0));
	assert_false(tap_netmask_valid(0xff00ff00));
	assert_false(tap_netmask_valid(0x00ffffff));
}

static void test_parse_mac(void **state)
{
	static const char *const bad[] = {
		"",
		"52:54:00:12:34",
		"52:54:00:12:34:56:78",
		"52-54-00-12-34-56",
		"5254.0012.3456",
		"52:54:00:12:34:5g",
		"52:54:0:12:34:56:",
		"525400123456",
		" 52:54:00:12:34:56",
		"52:54:00:12:34:56 ",
	};
	struct vmm_err err;
	uint8_t mac[6], want[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
	char buf[18];

	assert_int_equal(tap_parse_mac("52:54:00:ab:cd:ef", mac, &err), 0);
	assert_memory_equal(mac, want, 6);
	assert_int_equal(tap_parse_mac("52:54:00:AB:Cd:eF", mac, &err), 0);
	assert_memory_equal(mac, want, 6);
	tap_format_mac(mac, buf);
	assert_string_equal(buf, "52:54:00:ab:cd:ef");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(tap_parse_mac(bad[i], mac, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "xx:xx:xx:xx:xx:xx"));
	}
	assert_int_equal(tap_parse_mac(NULL, mac, &err), -EINVAL);
	/* Multicast, broadcast and zero are well-formed but not usable. */
	assert_int_equal(tap_parse_mac("01:00:5e:00:00:01", mac, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "multicast"));
	assert_int_equal(tap_parse_mac("33:33:00:00:00:01", mac, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "multicast"));
	assert_int_equal(tap_parse_mac("ff:ff:ff:ff:ff:ff", mac, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "multicast"));
	assert_int_equal(tap_parse_mac("00:00:00:00:00:00", mac, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "all-zero"));
	/* Locally administered unicast is fine. */
	assert_int_equal(tap_parse_mac("02:00:00:00:00:01", mac, &err), 0);
	assert_int_equal(tap_check_mac(want, &err), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_closed_fd),
		cmocka_unit_test(test_check_regular_file),
		cmocka_unit_test(test_check_socket),
		cmocka_unit_test(test_check_pipe),
		cmocka_unit_test(test_check_directory),
		cmocka_unit_test(test_check_other_chardev),
		cmocka_unit_test(test_check_unattached_tun),
		cmocka_unit_test(test_check_real_devices),
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_create_without_cap),
		cmocka_unit_test(test_parse_ipv4),
		cmocka_unit_test(test_parse_netmask),
		cmocka_unit_test(test_parse_mac),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
