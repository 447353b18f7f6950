/* Tap backend: check a tap fd handed in, probe its offloads, or create and configure a tap. */
#include "tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define TUN_PATH "/dev/net/tun"

/* Offload sets to try, most first: TSO needs CSUM, ECN needs TSO (linux/if_tun.h). */
static const unsigned int offload_tries[] = {
	TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO,
	TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
	TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
	TUN_F_CSUM,
};

static const char *file_kind(mode_t mode)
{
	if (S_ISREG(mode))
		return "a regular file";
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISFIFO(mode))
		return "a pipe or FIFO";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISLNK(mode))
		return "a symbolic link";
	return "not a character device";
}

/*
 * Whether tap @fd prepends packet information (was created without
 * IFF_NO_PI). TUNGETIFF reports IFF_NOFILTER, the same bit as IFF_NO_PI,
 * while no socket filter is attached, so:
 * - bit clear: a filter is attached and IFF_NO_PI is not set;
 * - bit set, and no filter was ever given to the tap (TUNGETFILTER): attach
 *   an accept-all filter for the time of one TUNGETIFF, then detach it;
 * - bit set, and a filter was given (by the caller, or by an earlier check):
 *   it may be live, and replacing it would lose it, so assume IFF_NO_PI.
 * A tap that takes no filter is not a /dev/net/tun tap (macvtap, which
 * never carries packet information).
 */
static bool tap_has_pi(int fd, unsigned int flags)
{
	struct sock_filter accept_all = BPF_STMT(BPF_RET | BPF_K, 0xffffffffu);
	struct sock_fprog prog;
	struct ifreq ifr;
	int r;

	if (!(flags & IFF_NO_PI))
		return true;
	memset(&prog, 0, sizeof(prog));
	if (ioctl(fd, TUNGETFILTER, &prog) < 0 || prog.len)
		return false;
	prog.len = 1;
	prog.filter = &accept_all;
	if (ioctl(fd, TUNATTACHFILTER, &prog) < 0)
		return false;
	memset(&ifr, 0, sizeof(ifr));
	r = ioctl(fd, TUNGETIFF, &ifr);
	ioctl(fd, TUNDETACHFILTER, &prog);
	return r == 0 && !(ifr.ifr_flags & IFF_NO_PI);
}

int tap_check_fd(int fd, struct tap_info *info, struct vmm_err *err)
{
	struct ifreq ifr;
	struct stat st;
	unsigned int flags;
	int fl;

	memset(info, 0, sizeof(*info));
	if (fd < 0 || fcntl(fd, F_GETFD) < 0)
		return err_set(err, EBADF, "tap fd %d is not an open file descriptor", fd);
	if (fstat(fd, &st) < 0) {
		int e = errno;

		return err_set(err, e, "tap fd %d: fstat: %s", fd, strerror(e));
	}
	if (!S_ISCHR(st.st_mode))
		return err_set(err, EINVAL, "tap fd %d is %s, not a tap device", fd,
			       file_kind(st.st_mode));
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_PATH) || (fl & O_ACCMODE) != O_RDWR)
		return err_set(err, EBADF, "tap fd %d is not open for reading and writing", fd);

	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
		int e = errno;

		if (e == EBADFD)
			return err_set(err, EBADFD,
				       "tap fd %d is an open %s with no interface attached "
				       "(TUNSETIFF was not called on it)",
				       fd, TUN_PATH);
		if (e == ENOTTY || e == EINVAL)
			return err_set(err, ENOTTY,
				       "tap fd %d is a character device (%u:%u) but not a tun/tap",
				       fd, major(st.st_rdev), minor(st.st_rdev));
		return err_set(err, e, "tap fd %d: TUNGETIFF: %s", fd, strerror(e));
	}
	flags = (unsigned short)ifr.ifr_flags;
	if (flags & IFF_TUN)
		return err_set(err, EINVAL,
			       "tap fd %d is a tun (layer 3) device %.15s; libvmm needs a tap", fd,
			       ifr.ifr_name);
	if (!(flags & IFF_TAP))
		return err_set(err, EINVAL, "tap fd %d (%.15s) is neither a tap nor a tun", fd,
			       ifr.ifr_name);
	if (tap_has_pi(fd, flags))
		return err_set(err, EINVAL,
			       "tap %.15s (fd %d) was created without IFF_NO_PI: its frames carry "
			       "packet information libvmm does not use; create it with IFF_NO_PI",
			       ifr.ifr_name, fd);
	memcpy(info->ifname, ifr.ifr_name, TAP_IFNAMSIZ - 1);
	info->ifname[TAP_IFNAMSIZ - 1] = '\0';
	info->flags = flags | IFF_NO_PI; /* known now, whatever IFF_NOFILTER said */
	info->vnet_hdr = flags & IFF_VNET_HDR;
	return 0;
}

int tap_enable_offloads(int fd, struct tap_info *info, struct vmm_err *err)
{
	int hdr = TAP_VNET_HDR_SIZE;

	info->offloads = 0;
	if (!info->vnet_hdr) {
		/* Nothing to probe: TUNSETOFFLOAD needs the header. Leave it off. */
		ioctl(fd, TUNSETOFFLOAD, 0ul);
		return 0;
	}
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		int e = errno;

		return err_set(err, e, "tap %s: cannot set the virtio-net header size to %d: %s",
			       info->ifname, hdr, strerror(e));
	}
	for (size_t i = 0; i < sizeof(offload_tries) / sizeof(offload_tries[0]); i++) {
		if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)offload_tries[i]) == 0) {
			info->offloads = offload_tries[i];
			break;
		}
	}
	/* Off until the guest says what it can take (the device sets them on activate). */
	if (info->offloads && ioctl(fd, TUNSETOFFLOAD, 0ul) < 0) {
		int e = errno;

		return err_set(err, e, "tap %s: TUNSETOFFLOAD 0: %s", info->ifname, strerror(e));
	}
	return 0;
}

static int perm_err(struct vmm_err *err, int e, const char *ifname, const char *what)
{
	/* A name template ("tap%d") is not a device name worth showing. */
	if (strchr(ifname, '%'))
		return err_set(err, e, "%s a tap device needs CAP_NET_ADMIN: %s", what,
			       strerror(e));
	return err_set(err, e, "%s tap %s needs CAP_NET_ADMIN: %s", what, ifname, strerror(e));
}

/* Set the host-side address and netmask and bring @ifname up. */
static int tap_configure(const char *ifname, uint32_t host_ip, uint32_t netmask,
			 struct vmm_err *err)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct ifreq ifr;
	int s, ret = 0;

	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		int e = errno;

		return err_set(err, e, "tap %s: socket(AF_INET): %s", ifname, strerror(e));
	}
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, ifname, strnlen(ifname, IFNAMSIZ - 1));

	if (host_ip) {
		char ip[16], mask[16];

		tap_format_ipv4(host_ip, ip);
		tap_format_ipv4(netmask, mask);
		sin.sin_addr.s_addr = htonl(host_ip);
		memcpy(&ifr.ifr_addr, &sin, sizeof(sin));
		if (ioctl(s, SIOCSIFADDR, &ifr) < 0) {
			int e = errno;

			ret = e == EPERM ? perm_err(err, e, ifname, "configuring")
					 : err_set(err, e, "tap %s: setting address %s: %s", ifname,
						   ip, strerror(e));
			goto out;
		}
		sin.sin_addr.s_addr = htonl(netmask);
		memcpy(&ifr.ifr_netmask, &sin, sizeof(sin));
		if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) {
			int e = errno;

			ret = e == EPERM ? perm_err(err, e, ifname, "configuring")
					 : err_set(err, e, "tap %s: setting netmask %s: %s", ifname,
						   mask, strerror(e));
			goto out;
		}
	}
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		int e = errno;

		ret = err_set(err, e, "tap %s: SIOCGIFFLAGS: %s", ifname, strerror(e));
		goto out;
	}
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
		int e = errno;

		ret = e == EPERM
			      ? perm_err(err, e, ifname, "bringing up")
			      : err_set(err, e, "tap %s: bringing it up: %s", ifname, strerror(e));
	}
out:
	close(s);
	return ret;
}

int tap_create(const char *ifname, uint32_t host_ip, uint32_t netmask, int *fd_out,
	       char ifname_out[TAP_IFNAMSIZ], struct vmm_err *err)
{
	const char *want = ifname && *ifname ? ifname : "tap%d";
	char name[TAP_IFNAMSIZ];
	struct ifreq ifr;
	int fd, ret;

	*fd_out = -1;
	if (strlen(want) >= TAP_IFNAMSIZ)
		return err_set(err, EINVAL, "tap name \"%.40s\" is longer than %d bytes", want,
			       TAP_IFNAMSIZ - 1);
	if (host_ip && !tap_netmask_valid(netmask)) {
		char mask[16];

		tap_format_ipv4(netmask, mask);
		return err_set(err, EINVAL, "netmask %s is not a contiguous, non-zero netmask",
			       mask);
	}
	fd = open(TUN_PATH, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;

		if (e == ENOENT || e == ENODEV || e == ENXIO)
			return err_set(err, ENOENT,
				       "cannot open %s: %s (is the tun module loaded?)", TUN_PATH,
				       strerror(e));
		if (e == EACCES || e == EPERM)
			return err_set(err, e,
				       "cannot open %s: %s (creating a tap needs CAP_NET_ADMIN "
				       "and access to %s)",
				       TUN_PATH, strerror(e), TUN_PATH);
		return err_set(err, e, "cannot open %s: %s", TUN_PATH, strerror(e));
	}
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, want, strlen(want));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;

		if (e == EPERM)
			ret = perm_err(err, e, want, "creating");
		else if (e == EBUSY)
			ret = err_set(err, e, "tap %s: the interface exists and is in use", want);
		else if (e == EINVAL)
			ret = err_set(err, e,
				      "tap %s: invalid name, or an interface of another "
				      "kind has it",
				      want);
		else
			ret = err_set(err, e, "tap %s: TUNSETIFF: %s", want, strerror(e));
		close(fd);
		return ret;
	}
	memcpy(name, ifr.ifr_name, TAP_IFNAMSIZ - 1);
	name[TAP_IFNAMSIZ - 1] = '\0';
	ret = tap_configure(name, host_ip, netmask, err);
	if (ret < 0) {
		close(fd); /* the tap is not persistent: it goes away with the fd */
		return ret;
	}
	*fd_out = fd;
	if (ifname_out)
		memcpy(ifname_out, name, TAP_IFNAMSIZ);
	return 0;
}

/* ---- Parsing and formatting ---- */

/* One decimal part 0..255 at *p, no leading zeros; advances *p. */
static bool parse_octet(const char **p, uint32_t *v)
{
	const char *s = *p;
	uint32_t n = 0;
	int digits = 0;

	while (*s >= '0' && *s <= '9' && digits < 4) {
		n = n * 10 + (uint32_t)(*s - '0');
		s++;
		digits++;
	}
	if (digits == 0 || digits > 3 || n > 255 || (digits > 1 && **p == '0'))
		return false;
	*v = n;
	*p = s;
	return true;
}

static bool parse_quad(const char *s, uint32_t *out)
{
	uint32_t ip = 0, v;

	for (int i = 0; i < 4; i++) {
		if (!parse_octet(&s, &v))
			return false;
		ip = ip << 8 | v;
		if (i < 3 && *s++ != '.')
			return false;
	}
	if (*s)
		return false;
	*out = ip;
	return true;
}

int tap_parse_ipv4(const char *s, const char *what, uint32_t *ip, struct vmm_err *err)
{
	if (!s || !parse_quad(s, ip))
		return err_set(err, EINVAL,
			       "%s \"%.40s\" is not an IPv4 address (a.b.c.d, each 0-255, "
			       "no leading zeros)",
			       what ? what : "address", s ? s : "");
	return 0;
}

bool tap_netmask_valid(uint32_t mask)
{
	/* Contiguous: the inverted mask plus one is a power of two (or wraps to 0). */
	uint32_t inv = ~mask;

	return mask != 0 && (inv & (inv + 1)) == 0;
}

int tap_parse_netmask(const char *s, uint32_t *mask, struct vmm_err *err)
{
	const char *p = s;
	uint32_t m;

	if (!s || !*s)
		return err_set(err, EINVAL, "empty netmask");
	if (*p == '/')
		p++;
	if (strchr(p, '.') == NULL) {
		uint32_t bits = 0;
		int digits = 0;

		while (*p >= '0' && *p <= '9' && digits < 3) {
			bits = bits * 10 + (uint32_t)(*p++ - '0');
			digits++;
		}
		if (*p || !digits || bits < 1 || bits > 32)
			return err_set(err, EINVAL,
				       "netmask \"%.40s\" is neither a.b.c.d nor a prefix length "
				       "1-32",
				       s);
		*mask = bits == 32 ? 0xffffffffu : ~(0xffffffffu >> bits);
		return 0;
	}
	if (*s == '/' || !parse_quad(s, &m))
		return err_set(err, EINVAL, "netmask \"%.40s\" is not a.b.c.d (or a prefix length)",
			       s);
	if (!tap_netmask_valid(m))
		return err_set(err, EINVAL,
			       "netmask %.40s is not contiguous (ones then zeros, and not 0.0.0.0)",
			       s);
	*mask = m;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tap_check_mac(const uint8_t mac[6], struct vmm_err *err)
{
	char buf[18];

	tap_format_mac(mac, buf);
	if (mac[0] & 1)
		return err_set(err, EINVAL,
			       "MAC %s is a multicast address; the guest needs a unicast MAC", buf);
	if (!(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]))
		return err_set(err, EINVAL, "MAC %s is the all-zero address", buf);
	return 0;
}

int tap_parse_mac(const char *s, uint8_t mac[6], struct vmm_err *err)
{
	uint8_t m[6];

	if (!s || strlen(s) != 17)
		goto bad;
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
			goto bad;
		m[i] = (uint8_t)(hi << 4 | lo);
	}
	if (tap_check_mac(m, err))
		return -EINVAL;
	memcpy(mac, m, 6);
	return 0;
bad:
	return err_set(err, EINVAL, "MAC \"%.40s\" is not of the form xx:xx:xx:xx:xx:xx",
		       s ? s : "");
}

void tap_format_ipv4(uint32_t ip, char buf[16])
{
	snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
}

void tap_format_mac(const uint8_t mac[6], char buf[18])
{
	snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
		 mac[5]);
}
