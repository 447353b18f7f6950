/* Tap backend for virtio-net: check a tap fd handed in, or create and configure one. */
#ifndef LIBVMM_DEVICES_TAP_H
#define LIBVMM_DEVICES_TAP_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"

#define TAP_IFNAMSIZ	  16 /* IFNAMSIZ: names are at most 15 bytes plus the NUL */
#define TAP_VNET_HDR_SIZE 12 /* struct virtio_net_hdr_v1 with num_buffers */

/*
 * What libvmm knows about a tap fd. tap_check_fd() fills ifname, flags and
 * vnet_hdr; tap_enable_offloads() then sets the header size and fills
 * offloads. Tests may fill one by hand for a stand-in backend (no_ioctl).
 */
struct tap_info {
	char ifname[TAP_IFNAMSIZ]; /* interface name, "" when unknown */
	unsigned int flags;	   /* IFF_* flags of the tap (TUNGETIFF; IFF_NO_PI always set) */
	/*
	 * Frames read from and written to the fd carry a 12-byte virtio-net
	 * header in front (IFF_VNET_HDR set at creation, TUNSETVNETHDRSZ 12).
	 * Without it the device offers no offloads and moves bare frames.
	 */
	bool vnet_hdr;
	unsigned int offloads; /* TUN_F_* bits TUNSETOFFLOAD accepted (0 without vnet_hdr) */
	/*
	 * The fd is not a tap but a stand-in (a test's socket pair): the
	 * device issues no tap ioctls and takes vnet_hdr/offloads as given.
	 */
	bool no_ioctl;
};

/*
 * Check that @fd is usable as a virtio-net backend: an open file descriptor
 * (else -EBADF), open for reading and writing (-EBADF), a character device
 * (regular files, directories, sockets, pipes and others are refused with
 * -EINVAL and a message naming what the fd is), attached to an interface
 * (TUNGETIFF works: -ENOTTY for another character device, -EBADFD for a
 * /dev/net/tun fd on which TUNSETIFF was never called), a tap (IFF_TAP, not
 * IFF_TUN: -EINVAL) without packet information (IFF_NO_PI set: -EINVAL).
 *
 * Fills @info (ifname, flags, vnet_hdr = whether the tap was created with
 * IFF_VNET_HDR; offloads 0; no_ioctl false). A tap without IFF_VNET_HDR is
 * accepted: the header cannot be added after creation, so the device then
 * runs without headers and offloads (plain frames, checksums computed by
 * the guest). Returns 0 or -errno with a message in @err (which may be NULL).
 *
 * TUNGETIFF reports IFF_NOFILTER in the bit of IFF_NO_PI while no socket
 * filter is attached; to tell them apart this attaches an accept-all filter
 * to the tap for the time of one ioctl and detaches it again. On a tap that
 * was given a socket filter before (TUNGETFILTER), which may still be live,
 * it cannot tell and assumes IFF_NO_PI. Nothing else about the fd changes.
 */
int tap_check_fd(int fd, struct tap_info *info, struct vmm_err *err);

/*
 * For a tap checked by tap_check_fd() with info->vnet_hdr: set the header
 * size to TAP_VNET_HDR_SIZE (TUNSETVNETHDRSZ), then find which offloads the
 * tap accepts by trying TUNSETOFFLOAD with TUN_F_CSUM | TUN_F_TSO4 |
 * TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO, then without UFO, then CSUM
 * alone, and record the first accepted set in info->offloads. The tap is
 * left with offloads off: the device enables those the guest negotiated
 * when it is activated. Without info->vnet_hdr it only sets offloads to 0.
 * Returns 0, or -errno with a message in @err when the header size cannot
 * be set (the tap would then frame packets in a way libvmm cannot use).
 */
int tap_enable_offloads(int fd, struct tap_info *info, struct vmm_err *err);

/*
 * Create a tap (open /dev/net/tun, TUNSETIFF with IFF_TAP | IFF_NO_PI |
 * IFF_VNET_HDR) named @ifname, or "tap%d" (the kernel picks the number)
 * when @ifname is NULL or "". When @host_ip is not 0, give the host side
 * that IPv4 address and @netmask (both in host byte order, e.g. 0x0a000001
 * for 10.0.0.1; the netmask must be contiguous and not 0), then bring the
 * interface up (IFF_UP | IFF_RUNNING). The guest's MAC is not set on the
 * tap: the tap keeps its own, the host side's.
 *
 * On success *fd_out is the tap fd (close-on-exec, non-blocking), owned by
 * the caller, and @ifname_out (which may be NULL) receives the name.
 * Without CAP_NET_ADMIN returns -EPERM with a message saying so; -EBUSY if
 * the name is taken by an interface in use; -EINVAL for a bad name or
 * netmask; -ENOENT without /dev/net/tun.
 */
int tap_create(const char *ifname, uint32_t host_ip, uint32_t netmask, int *fd_out,
	       char ifname_out[TAP_IFNAMSIZ], struct vmm_err *err);

/*
 * Parse dotted-quad IPv4 "a.b.c.d" (each part decimal 0..255 without
 * leading zeros) into host byte order. Returns 0 or -EINVAL with a message
 * naming @what (e.g. "host IP") and the string.
 */
int tap_parse_ipv4(const char *s, const char *what, uint32_t *ip, struct vmm_err *err);

/*
 * Parse a netmask: dotted quad ("255.255.255.0") or prefix length ("24" or
 * "/24", 1..32). The mask must be contiguous and not 0. Returns 0 or
 * -EINVAL with a message.
 */
int tap_parse_netmask(const char *s, uint32_t *mask, struct vmm_err *err);

/* True when @mask (host byte order) is a contiguous, non-zero netmask. */
bool tap_netmask_valid(uint32_t mask);

/*
 * Parse a MAC "xx:xx:xx:xx:xx:xx" (hex, two digits per byte, either case).
 * Refuses other forms, multicast/broadcast addresses (bit 0 of the first
 * byte) and 00:00:00:00:00:00, with -EINVAL and a message.
 */
int tap_parse_mac(const char *s, uint8_t mac[6], struct vmm_err *err);

/* -EINVAL with a message for a multicast or all-zero @mac, else 0. */
int tap_check_mac(const uint8_t mac[6], struct vmm_err *err);

/* Format @ip (host byte order) as "a.b.c.d" into @buf (16 bytes). */
void tap_format_ipv4(uint32_t ip, char buf[16]);

/* Format @mac as "xx:xx:xx:xx:xx:xx" (lower case) into @buf (18 bytes). */
void tap_format_mac(const uint8_t mac[6], char buf[18]);

#endif
