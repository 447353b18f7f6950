/* virtio-net (virtio 1.2 section 5.1): one receive and one transmit queue on a tap. */
#ifndef LIBVMM_DEVICES_VIRTIO_NET_H
#define LIBVMM_DEVICES_VIRTIO_NET_H

#include <stdint.h>

#include "devices/tap.h"
#include "lib/err.h"
#include "lib/virtio/virtio.h"

/* Feature bits (5.1.3). */
#define VIRTIO_NET_F_CSUM	0 /* guest -> host: partial checksums */
#define VIRTIO_NET_F_GUEST_CSUM 1 /* host -> guest: partial checksums */
#define VIRTIO_NET_F_MAC	5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN	9
#define VIRTIO_NET_F_GUEST_UFO	10
#define VIRTIO_NET_F_HOST_TSO4	11
#define VIRTIO_NET_F_HOST_TSO6	12
#define VIRTIO_NET_F_HOST_ECN	13
#define VIRTIO_NET_F_HOST_UFO	14
#define VIRTIO_NET_F_MRG_RXBUF	15
#define VIRTIO_NET_F_STATUS	16

/* struct virtio_net_hdr (5.1.6), 12 bytes with VERSION_1, all little-endian. */
#define VIRTIO_NET_HDR_SIZE	    12
#define VIRTIO_NET_HDR_FLAGS	    0  /* u8 */
#define VIRTIO_NET_HDR_GSO_TYPE	    1  /* u8 */
#define VIRTIO_NET_HDR_HDR_LEN	    2  /* le16 */
#define VIRTIO_NET_HDR_GSO_SIZE	    4  /* le16 */
#define VIRTIO_NET_HDR_CSUM_START   6  /* le16 */
#define VIRTIO_NET_HDR_CSUM_OFFSET  8  /* le16 */
#define VIRTIO_NET_HDR_NUM_BUFFERS  10 /* le16 */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE	    0
#define VIRTIO_NET_HDR_GSO_TCPV4    1
#define VIRTIO_NET_HDR_GSO_UDP	    3
#define VIRTIO_NET_HDR_GSO_TCPV6    4
#define VIRTIO_NET_HDR_GSO_ECN	    0x80

/* Config space (5.1.4): mac[6], le16 status. */
#define VIRTIO_NET_CFG_MAC     0
#define VIRTIO_NET_CFG_STATUS  6
#define VIRTIO_NET_CONFIG_SIZE 8
#define VIRTIO_NET_S_LINK_UP   1

#define VIRTIO_NET_QUEUE_MAX 256 /* entries per queue offered */
#define VIRTIO_NET_RXQ	     0
#define VIRTIO_NET_TXQ	     1
/*
 * Largest Ethernet frame, header not included, moved either way: a 64 KiB
 * GSO frame (65535-byte IP packet, 14-byte Ethernet header, rounded to the
 * 65550 that makes Linux's 65562-byte "big" receive buffers). Longer frames
 * are dropped.
 */
#define VIRTIO_NET_MAX_FRAME 65550

/* Counters, for tests and reports (monotonic, read while the device runs). */
struct virtio_net_stats {
	uint64_t tx_frames;  /* written to the tap */
	uint64_t tx_dropped; /* bad, oversized or refused by the tap */
	uint64_t rx_frames;  /* delivered to the guest */
	uint64_t rx_dropped; /* did not fit the guest's buffers, or a header the guest can't take */
};

/*
 * The virtio-net feature bits matching the TUN_F_* @tun_offloads a tap
 * accepted: TUN_F_CSUM gives CSUM and GUEST_CSUM, TSO4/TSO6/TSO_ECN/UFO
 * give HOST_ and GUEST_ TSO4/TSO6/ECN/UFO (each only with CSUM). MAC,
 * STATUS and MRG_RXBUF are not included.
 */
uint64_t virtio_net_offload_features(unsigned int tun_offloads);

/*
 * Create a virtio-net device (id 1; queue 0 receive, queue 1 transmit; no
 * control queue, no multiqueue) on @tap_fd, which the device owns from now
 * on (also when this fails: it is closed then). The caller passes its own
 * dup; note that the device makes the fd non-blocking, which the open file
 * description shares with every dup of it. @info comes from tap_check_fd()
 * and tap_enable_offloads() (or a test's stand-in with no_ioctl). @mac is
 * the guest's MAC (unicast, non-zero: else -EINVAL).
 *
 * Features: MAC, STATUS (link up), MRG_RXBUF, and the offloads of
 * virtio_net_offload_features(info->offloads) when info->vnet_hdr. With
 * info->vnet_hdr (and not no_ioctl) the tap's header size is set to 12
 * (TUNSETVNETHDRSZ: -errno if refused); on activation its TUNSETOFFLOAD is
 * set to what the guest negotiated (GUEST_*), so the tap hands over only
 * frames the guest can take, and back to 0 on reset.
 *
 * activate() starts a worker thread (epoll on the two kick eventfds, the
 * tap and a stop eventfd); reset() joins it. Transmit writes each chain's
 * readable buffers straight from guest RAM with one writev(); receive reads
 * straight into the guest's buffers with readv() (several chains with
 * MRG_RXBUF, num_buffers set). When the guest has no receive buffers the
 * device stops reading the tap until the guest adds some and notifies; the
 * kernel queues (or drops) frames meanwhile.
 *
 * Security: every chain comes through virtq_pop(); a malformed ring makes
 * the device report NEEDS_RESET and stop until reset(). Headers from the
 * guest are copied and checked against the negotiated features before the
 * tap sees them; headers from the tap are checked before the guest does.
 * Frames over VIRTIO_NET_MAX_FRAME, transmit chains with writable buffers,
 * receive chains with readable buffers or less than a header are dropped
 * (used length 0).
 *
 * Returns 0, or -errno with a message in @err (which may be NULL).
 */
int virtio_net_create(int tap_fd, const uint8_t mac[6], const struct tap_info *info,
		      struct virtio_device *out, struct vmm_err *err);

/* Copy the counters of a device made by virtio_net_create(). Thread safe. */
void virtio_net_get_stats(const struct virtio_device *d, struct virtio_net_stats *s);

#endif
