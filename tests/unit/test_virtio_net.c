/*
 * Unit tests for virtio-net: the device runs its worker on fake guest queues, with one end of
 * a SOCK_SEQPACKET socket pair standing in for the tap (tap_info.no_ioctl) so that the test
 * sees every frame; one test uses a real tap in a private network namespace.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "devices/tap.h"
#include "devices/virtio_net.h"
#include "virtio_test_util.h"

#define RAM_SIZE     (8u << 20)
#define QSIZE	     64
#define HDR	     VIRTIO_NET_HDR_SIZE
#define F(bit)	     (1ull << (bit))
#define ALL_OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO)

static const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

struct fixture {
	struct vt_dev d; /* queues VIRTIO_NET_RXQ and VIRTIO_NET_TXQ */
	int peer;	 /* the network's end of the socket pair, -1 for a real tap */
	int dev_fd;	 /* a dup of the device's end, to look at what it has not read */
	bool vnet;
};

/* A device on @fd (which it takes) with @info; the driver negotiated @neg. */
static struct fixture *fixture_new_fd(int fd, const struct tap_info *info, uint64_t neg,
				      unsigned int qflags)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct vmm_err err;

	assert_non_null(f);
	vt_guest_init(&f->d.g, RAM_SIZE);
	vt_dev_queues_init(&f->d, 2, QSIZE, qflags, neg);
	f->vnet = info->vnet_hdr;
	f->peer = -1;
	f->dev_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	assert_true(f->dev_fd >= 0);
	if (virtio_net_create(fd, guest_mac, info, &f->d.dev, &err))
		fail_msg("virtio_net_create: %s", err.msg);
	return f;
}

/* A device on a socket pair; vnet: frames carry the 12-byte header. */
static struct fixture *fixture_new(bool vnet, unsigned int offloads, uint64_t neg,
				   unsigned int qflags)
{
	struct tap_info info = {.vnet_hdr = vnet, .offloads = offloads, .no_ioctl = true};
	struct fixture *f;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	f = fixture_new_fd(sv[0], &info, neg, qflags);
	f->peer = sv[1];
	return f;
}

static void activate(struct fixture *f)
{
	vt_dev_activate(&f->d);
}

static void fixture_free(struct fixture *f)
{
	vt_dev_destroy(&f->d);
	if (f->peer >= 0)
		close(f->peer);
	close(f->dev_fd);
	free(f);
}

static struct vt_queue *rxq(struct fixture *f)
{
	return &f->d.vq[VIRTIO_NET_RXQ];
}

static struct vt_queue *txq(struct fixture *f)
{
	return &f->d.vq[VIRTIO_NET_TXQ];
}

static struct virtio_net_stats stats(struct fixture *f)
{
	struct virtio_net_stats s;

	virtio_net_get_stats(&f->d.dev, &s);
	return s;
}

static void kick_rx(struct fixture *f)
{
	vt_dev_kick(&f->d, VIRTIO_NET_RXQ);
}

static void kick_tx(struct fixture *f)
{
	vt_dev_kick(&f->d, VIRTIO_NET_TXQ);
}

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void wait_used(struct fixture *f, unsigned int qi, uint32_t *id, uint32_t *len)
{
	vt_dev_wait_used(&f->d, qi, id, len);
}

/* Wait until @field of the stats reaches @want. */
#define WAIT_STAT(f, field, want)                                                                  \
	do {                                                                                       \
		uint64_t t0_ = now_ms();                                                           \
		while (stats(f).field < (want)) {                                                  \
			if (now_ms() - t0_ > VT_WAIT_MS)                                           \
				fail_msg("stats." #field " stays at %llu, want %llu",              \
					 (unsigned long long)stats(f).field,                       \
					 (unsigned long long)(want));                              \
			usleep(1000);                                                              \
		}                                                                                  \
	} while (0)

static void pattern(uint8_t *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 8));
}

static void hdr_set(uint8_t *h, uint8_t flags, uint8_t gso, uint16_t hdr_len, uint16_t gso_size,
		    uint16_t csum_start, uint16_t csum_off, uint16_t num_buffers)
{
	h[0] = flags;
	h[1] = gso;
	memcpy(h + 2, &hdr_len, 2);
	memcpy(h + 4, &gso_size, 2);
	memcpy(h + 6, &csum_start, 2);
	memcpy(h + 8, &csum_off, 2);
	memcpy(h + 10, &num_buffers, 2);
}

static uint16_t hdr_num_buffers(const uint8_t *h)
{
	uint16_t v;

	memcpy(&v, h + VIRTIO_NET_HDR_NUM_BUFFERS, 2);
	return v;
}

/* Receive one message from the network side; its full length, or -1 after @timeout_ms. */
static ssize_t peer_recv(struct fixture *f, void *buf, size_t cap, int timeout_ms)
{
	if (!vt_poll_in(f->peer, timeout_ms))
		return -1;
	return recv(f->peer, buf, cap, MSG_TRUNC | MSG_DONTWAIT);
}

/* Send one frame from the network side: @hdr (if not NULL) and @len bytes of @frame. */
static void peer_send(struct fixture *f, const uint8_t *hdr, const uint8_t *frame, size_t len)
{
	struct iovec iov[2];
	int n = 0;

	if (hdr)
		iov[n++] = (struct iovec){.iov_base = (void *)hdr, .iov_len = HDR};
	iov[n++] = (struct iovec){.iov_base = (void *)frame, .iov_len = len};
	assert_int_equal(writev(f->peer, iov, n), (hdr ? HDR : 0) + len);
}

/* Bytes of the next message the device has not read yet (0: none). */
static int pending_bytes(struct fixture *f)
{
	int n = 0;

	assert_int_equal(ioctl(f->dev_fd, FIONREAD, &n), 0);
	return n;
}

static void *gptr(struct fixture *f, uint64_t gpa, uint64_t len)
{
	return vt_host(&f->d.g, gpa, len);
}

/* Post one receive chain of a single writable buffer; returns the buffer. */
static struct vt_buf post_rx(struct fixture *f, uint32_t len, uint16_t *head)
{
	struct vt_buf b = vt_buf_new(&f->d.g, len, true);
	uint16_t h = vt_add_chain(rxq(f), &b, 1);

	if (head)
		*head = h;
	return b;
}

/* Queue a transmit chain of one readable buffer holding @hdr and a @len-byte frame. */
static uint16_t post_tx(struct fixture *f, const uint8_t *hdr, size_t len, unsigned int seed)
{
	struct vt_buf b = vt_buf_new(&f->d.g, (uint32_t)(HDR + len), false);
	uint8_t *p = gptr(f, b.gpa, b.len);

	memcpy(p, hdr, HDR);
	pattern(p + HDR, len, seed);
	return vt_add_chain(txq(f), &b, 1);
}

static uint64_t cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* ---- Model: ops, config, features ---- */

static void test_ops_and_config(void **state)
{
	struct fixture *f = fixture_new(true, ALL_OFFLOADS, 0, 0);
	const struct virtio_device_ops *ops = f->d.dev.ops;
	uint8_t cfg[VIRTIO_NET_CONFIG_SIZE], z[4] = {1, 1, 1, 1};
	uint16_t status;

	assert_string_equal(ops->name, "virtio-net");
	assert_int_equal(ops->device_id, VIRTIO_ID_NET);
	assert_int_equal(ops->nqueues, 2);
	assert_int_equal(ops->config_size, VIRTIO_NET_CONFIG_SIZE);
	assert_true(ops->queue_max >= 1 && !(ops->queue_max & (ops->queue_max - 1)));

	ops->config_read(f->d.dev.dev, 0, cfg, sizeof(cfg));
	assert_memory_equal(cfg, guest_mac, 6);
	memcpy(&status, cfg + VIRTIO_NET_CFG_STATUS, 2);
	assert_int_equal(status, VIRTIO_NET_S_LINK_UP);
	/* Byte-wise and partial reads. */
	ops->config_read(f->d.dev.dev, 3, cfg, 1);
	assert_int_equal(cfg[0], guest_mac[3]);
	ops->config_read(f->d.dev.dev, 6, cfg, 2);
	assert_int_equal(cfg[0], VIRTIO_NET_S_LINK_UP);
	assert_int_equal(cfg[1], 0);
	ops->config_read(f->d.dev.dev, 6, z, 4); /* past the end: zeros, no overrun */
	assert_int_equal(z[0], 0);
	/* Writes are ignored. */
	ops->config_write(f->d.dev.dev, 0, z, 4);
	ops->config_read(f->d.dev.dev, 0, cfg, 6);
	assert_memory_equal(cfg, guest_mac, 6);

	/* reset without activate, and twice, is harmless. */
	ops->reset(f->d.dev.dev);
	ops->reset(f->d.dev.dev);
	fixture_free(f);
}

static void test_features(void **state)
{
	const uint64_t base =
		F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_STATUS) | F(VIRTIO_NET_F_MRG_RXBUF);
	const uint64_t all = F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_GUEST_CSUM) |
			     F(VIRTIO_NET_F_HOST_TSO4) | F(VIRTIO_NET_F_GUEST_TSO4) |
			     F(VIRTIO_NET_F_HOST_TSO6) | F(VIRTIO_NET_F_GUEST_TSO6) |
			     F(VIRTIO_NET_F_HOST_ECN) | F(VIRTIO_NET_F_GUEST_ECN) |
			     F(VIRTIO_NET_F_HOST_UFO) | F(VIRTIO_NET_F_GUEST_UFO);
	struct fixture *f;

	assert_int_equal(virtio_net_offload_features(0), 0);
	assert_int_equal(virtio_net_offload_features(ALL_OFFLOADS), all);
	/* Nothing without checksums; ECN only with TSO. */
	assert_int_equal(virtio_net_offload_features(TUN_F_TSO4 | TUN_F_UFO), 0);
	assert_int_equal(virtio_net_offload_features(TUN_F_CSUM),
			 F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_GUEST_CSUM));
	assert_int_equal(virtio_net_offload_features(TUN_F_CSUM | TUN_F_TSO_ECN),
			 F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_GUEST_CSUM));
	assert_int_equal(
		virtio_net_offload_features(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN),
		all & ~(F(VIRTIO_NET_F_HOST_UFO) | F(VIRTIO_NET_F_GUEST_UFO)));

	f = fixture_new(true, ALL_OFFLOADS, 0, 0);
	assert_int_equal(f->d.dev.ops->features(f->d.dev.dev), base | all);
	fixture_free(f);
	f = fixture_new(true, 0, 0, 0);
	assert_int_equal(f->d.dev.ops->features(f->d.dev.dev), base);
	fixture_free(f);
	/* Offloads need the header: without it they are not offered even if claimed. */
	f = fixture_new(false, ALL_OFFLOADS, 0, 0);
	assert_int_equal(f->d.dev.ops->features(f->d.dev.dev), base);
	fixture_free(f);
}

static void test_create_errors(void **state)
{
	struct tap_info info = {.vnet_hdr = true, .no_ioctl = true};
	const uint8_t mcast[6] = {0x01, 0x00, 0x5e, 0, 0, 1}, zero[6] = {0};
	struct virtio_device d;
	struct vmm_err err;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(virtio_net_create(sv[0], mcast, &info, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "multicast"));
	/* The fd was taken and closed. */
	assert_true(fcntl(sv[0], F_GETFD) < 0 && errno == EBADF);
	close(sv[1]);

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(virtio_net_create(sv[0], zero, &info, &d, &err), -EINVAL);
	assert_int_equal(virtio_net_create(sv[1], guest_mac, NULL, &d, &err), -EINVAL);
	assert_int_equal(virtio_net_create(-1, guest_mac, &info, &d, &err), -EBADF);
}

static void test_activate_errors(void **state)
{
	struct fixture *f = fixture_new(true, 0, 0, 0);
	struct virtio_activation act = f->d.env.act;

	act.nqueues = 1;
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &act), -EINVAL);
	act = f->d.env.act;
	act.kick_fd[1] = -1;
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &act), -EINVAL);
	activate(f);
	assert_int_equal(f->d.dev.ops->activate(f->d.dev.dev, &f->d.env.act), -EBUSY);
	fixture_free(f);
}

/* ---- Transmit ---- */

static void test_tx_one_buffer(void **state)
{
	struct fixture *f = fixture_new(true, 0, 0, 0);
	uint8_t hdr[HDR], want[HDR], got[2048], frame[60];
	uint16_t head;
	uint32_t id, len;

	activate(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 7); /* num_buffers is not the tap's business */
	head = post_tx(f, hdr, 60, 1);
	kick_tx(f);
	wait_used(f, VIRTIO_NET_TXQ, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, 0);
	assert_int_equal(peer_recv(f, got, sizeof(got), VT_WAIT_MS), HDR + 60);
	hdr_set(want, 0, 0, 0, 0, 0, 0, 0);
	assert_memory_equal(got, want, HDR);
	pattern(frame, 60, 1);
	assert_memory_equal(got + HDR, frame, 60);
	assert_int_equal(stats(f).tx_frames, 1);
	assert_int_equal(stats(f).tx_dropped, 0);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	fixture_free(f);
}

/* The header split over three descriptors, the last shared with the frame's start. */
static void tx_split(unsigned int qflags)
{
	struct fixture *f = fixture_new(true, ALL_OFFLOADS, F(VIRTIO_NET_F_CSUM), qflags);
	struct vt_buf b[4] = {
		vt_buf_new(&f->d.g, 5, false),
		vt_buf_new(&f->d.g, 4, false),
		vt_buf_new(&f->d.g, 3 + 20, false),
		vt_buf_new(&f->d.g, 80, false),
	};
	uint8_t hdr[HDR], all[HDR + 100], got[2048];
	uint16_t head;
	uint32_t id, len;

	activate(f);
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6, 0);
	memcpy(all, hdr, HDR);
	pattern(all + HDR, 100, 9);
	memcpy(gptr(f, b[0].gpa, 5), all, 5);
	memcpy(gptr(f, b[1].gpa, 4), all + 5, 4);
	memcpy(gptr(f, b[2].gpa, 23), all + 9, 23);
	memcpy(gptr(f, b[3].gpa, 80), all + 32, 80);
	head = (qflags & VT_INDIRECT) ? vt_add_chain_indirect(txq(f), b, 4)
				      : vt_add_chain(txq(f), b, 4);
	kick_tx(f);
	wait_used(f, VIRTIO_NET_TXQ, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, 0);
	assert_int_equal(peer_recv(f, got, sizeof(got), VT_WAIT_MS), HDR + 100);
	assert_memory_equal(got, all, HDR + 100);
	fixture_free(f);
}

static void test_tx_split_header(void **state)
{
	tx_split(0);
}

static void test_tx_split_header_indirect(void **state)
{
	tx_split(VT_INDIRECT | VT_EVENT_IDX);
}

/* Without vnet headers the tap gets the bare frame. */
static void test_tx_no_vnet_hdr(void **state)
{
	struct fixture *f = fixture_new(false, 0, 0, 0);
	uint8_t hdr[HDR], got[2048], frame[200];
	uint32_t len;

	activate(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	post_tx(f, hdr, 200, 3);
	kick_tx(f);
	wait_used(f, VIRTIO_NET_TXQ, NULL, &len);
	assert_int_equal(peer_recv(f, got, sizeof(got), VT_WAIT_MS), 200);
	pattern(frame, 200, 3);
	assert_memory_equal(got, frame, 200);
	fixture_free(f);
}

/* Bad chains are dropped (used length 0) and the device goes on. */
static void test_tx_drops(void **state)
{
	struct fixture *f = fixture_new(true, TUN_F_CSUM, F(VIRTIO_NET_F_CSUM), 0);
	uint8_t ok[HDR], csum[HDR], tso[HDR], ecn[HDR], bad_gso[HDR], valid[HDR];
	uint8_t *got = malloc(HDR + VIRTIO_NET_MAX_FRAME + 100);
	struct vt_buf b[2];
	unsigned int nchains = 0;
	uint16_t good[2];
	uint32_t id, len;

	assert_non_null(got);
	activate(f);
	hdr_set(ok, 0, 0, 0, 0, 0, 0, 0);
	hdr_set(csum, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 14, 16, 0);
	hdr_set(tso, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16, 0);
	hdr_set(ecn, 0, VIRTIO_NET_HDR_GSO_ECN, 0, 0, 0, 0, 0);
	hdr_set(bad_gso, 0, 7, 0, 0, 0, 0, 0);
	hdr_set(valid, VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 0, 0);

	/* Header only, no frame. */
	b[0] = vt_buf_new(&f->d.g, HDR, false);
	vt_add_chain(txq(f), b, 1);
	nchains++;
	/* A short header. */
	b[0] = vt_buf_new(&f->d.g, 8, false);
	vt_add_chain(txq(f), b, 1);
	nchains++;
	/* A writable buffer in a transmit chain. */
	b[0] = vt_buf_new(&f->d.g, HDR + 60, false);
	b[1] = vt_buf_new(&f->d.g, 16, true);
	vt_add_chain(txq(f), b, 2);
	nchains++;
	/* One byte over the frame limit. */
	post_tx(f, ok, VIRTIO_NET_MAX_FRAME + 1, 0);
	nchains++;
	/* TSO not negotiated; ECN without GSO; an unknown GSO type; DATA_VALID on transmit. */
	post_tx(f, tso, 3000, 0);
	post_tx(f, ecn, 60, 0);
	post_tx(f, bad_gso, 60, 0);
	post_tx(f, valid, 60, 0);
	nchains += 4;
	/* Good ones: the largest frame, and a partial checksum (CSUM negotiated). */
	good[0] = post_tx(f, ok, VIRTIO_NET_MAX_FRAME, 5);
	good[1] = post_tx(f, csum, 100, 6);
	kick_tx(f);
	for (unsigned int i = 0; i < nchains + 2; i++) {
		wait_used(f, VIRTIO_NET_TXQ, &id, &len);
		assert_int_equal(len, 0);
	}
	assert_int_equal(id, good[1]);
	assert_int_equal(peer_recv(f, got, HDR + VIRTIO_NET_MAX_FRAME + 100, VT_WAIT_MS),
			 HDR + VIRTIO_NET_MAX_FRAME);
	assert_int_equal(peer_recv(f, got, HDR + VIRTIO_NET_MAX_FRAME + 100, VT_WAIT_MS),
			 HDR + 100);
	assert_memory_equal(got, csum, HDR);
	assert_int_equal(peer_recv(f, got, 100, 50), -1);
	assert_int_equal(stats(f).tx_dropped, nchains);
	assert_int_equal(stats(f).tx_frames, 2);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	(void)good[0];
	free(got);
	fixture_free(f);
}

/* Negotiated segmentation offloads pass the header through; unnegotiated ones don't. */
static void test_tx_gso(void **state)
{
	struct fixture *f = fixture_new(true, ALL_OFFLOADS,
					F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4) |
						F(VIRTIO_NET_F_HOST_ECN),
					VT_EVENT_IDX);
	uint8_t tso4[HDR], tso6[HDR], got[8192];
	uint32_t len;

	activate(f);
	hdr_set(tso4, VIRTIO_NET_HDR_F_NEEDS_CSUM,
		VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, 54, 1448, 34, 16, 0);
	hdr_set(tso6, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 74, 1428, 54, 16, 0);
	post_tx(f, tso6, 4000, 1); /* HOST_TSO6 offered but not negotiated */
	post_tx(f, tso4, 4000, 2);
	kick_tx(f);
	wait_used(f, VIRTIO_NET_TXQ, NULL, &len);
	wait_used(f, VIRTIO_NET_TXQ, NULL, &len);
	assert_int_equal(peer_recv(f, got, sizeof(got), VT_WAIT_MS), HDR + 4000);
	assert_memory_equal(got, tso4, HDR);
	assert_int_equal(peer_recv(f, got, sizeof(got), 50), -1);
	assert_int_equal(stats(f).tx_dropped, 1);
	fixture_free(f);
}

/* Many chains, over several kicks and across the ring's wrap-around. */
static void test_tx_many(void **state)
{
	struct fixture *f = fixture_new(true, 0, 0, VT_EVENT_IDX);
	uint8_t hdr[HDR], got[2048], frame[300];
	unsigned int seed = 0;

	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	vt_queue_set_indexes(txq(f), 65500);
	activate(f);
	for (unsigned int round = 0; round < 4; round++) {
		for (unsigned int i = 0; i < 50; i++)
			post_tx(f, hdr, 100 + i, seed + i);
		kick_tx(f);
		for (unsigned int i = 0; i < 50; i++) {
			uint32_t len;

			wait_used(f, VIRTIO_NET_TXQ, NULL, &len);
			assert_int_equal(len, 0);
		}
		for (unsigned int i = 0; i < 50; i++) {
			assert_int_equal(peer_recv(f, got, sizeof(got), VT_WAIT_MS), HDR + 100 + i);
			pattern(frame, 100 + i, seed + i);
			assert_memory_equal(got + HDR, frame, 100 + i);
		}
		seed += 50;
	}
	assert_int_equal(stats(f).tx_frames, 200);
	fixture_free(f);
}

/* When the tap is full (EAGAIN) the device waits for room instead of dropping. */
static void test_tx_backpressure(void **state)
{
	struct fixture *f = fixture_new(true, 0, 0, 0);
	uint8_t hdr[HDR], got[8192], frame[4000];
	int small = 4096;
	const unsigned int n = 40;

	assert_int_equal(setsockopt(f->dev_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	activate(f);
	for (unsigned int i = 0; i < n; i++)
		post_tx(f, hdr, 4000, i);
	kick_tx(f);
	/* The socket fills: the device holds the rest, completing nothing more. */
	WAIT_STAT(f, tx_frames, 1);
	usleep(100 * 1000);
	assert_true(stats(f).tx_frames < n);
	assert_int_equal(vt_used_idx(txq(f)), stats(f).tx_frames);
	/* Nothing is dropped: every frame arrives, in order, as the network reads. */
	for (unsigned int i = 0; i < n; i++) {
		assert_int_equal(peer_recv(f, got, sizeof(got), VT_WAIT_MS), HDR + 4000);
		pattern(frame, 4000, i);
		assert_memory_equal(got + HDR, frame, 4000);
	}
	for (unsigned int i = 0; i < n; i++)
		wait_used(f, VIRTIO_NET_TXQ, NULL, NULL);
	assert_int_equal(stats(f).tx_frames, n);
	assert_int_equal(stats(f).tx_dropped, 0);
	fixture_free(f);
}

/* ---- Receive ---- */

static void test_rx_mrg_one(void **state)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), 0);
	uint8_t hdr[HDR], frame[1000];
	struct vt_buf b[4];
	uint16_t heads[4];
	uint32_t id, len;
	uint8_t *p;

	for (int i = 0; i < 4; i++)
		b[i] = post_rx(f, 2048, &heads[i]);
	activate(f);
	kick_rx(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	pattern(frame, sizeof(frame), 4);
	peer_send(f, hdr, frame, sizeof(frame));
	wait_used(f, VIRTIO_NET_RXQ, &id, &len);
	assert_int_equal(id, heads[0]);
	assert_int_equal(len, HDR + 1000);
	p = gptr(f, b[0].gpa, 2048);
	assert_int_equal(hdr_num_buffers(p), 1);
	assert_int_equal(p[0], 0);
	assert_int_equal(p[1], 0);
	assert_memory_equal(p + HDR, frame, 1000);
	/* A second frame takes the next chain. */
	peer_send(f, hdr, frame, 100);
	wait_used(f, VIRTIO_NET_RXQ, &id, &len);
	assert_int_equal(id, heads[1]);
	assert_int_equal(len, HDR + 100);
	assert_int_equal(stats(f).rx_frames, 2);
	fixture_free(f);
}

/* A frame larger than one buffer spans several chains; num_buffers says how many. */
static void rx_span(unsigned int qflags)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), qflags);
	uint8_t hdr[HDR], frame[1500], got[1500];
	struct vt_buf b[8];
	uint16_t heads[8];
	uint32_t id, len, lens[3] = {512, 512, 488};
	size_t off = 0;

	activate(f);
	for (int i = 0; i < 8; i++)
		b[i] = post_rx(f, 512, &heads[i]);
	kick_rx(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	pattern(frame, sizeof(frame), 8);
	peer_send(f, hdr, frame, sizeof(frame));
	for (int i = 0; i < 3; i++) {
		wait_used(f, VIRTIO_NET_RXQ, &id, &len);
		assert_int_equal(id, heads[i]);
		assert_int_equal(len, lens[i]);
	}
	assert_int_equal(hdr_num_buffers(gptr(f, b[0].gpa, HDR)), 3);
	memcpy(got, gptr(f, b[0].gpa + HDR, 500), 500);
	off = 500;
	memcpy(got + off, gptr(f, b[1].gpa, 512), 512);
	off += 512;
	memcpy(got + off, gptr(f, b[2].gpa, 488), 488);
	assert_memory_equal(got, frame, sizeof(frame));
	/* The next small frame: one buffer. */
	peer_send(f, hdr, frame, 10);
	wait_used(f, VIRTIO_NET_RXQ, &id, &len);
	assert_int_equal(id, heads[3]);
	assert_int_equal(len, HDR + 10);
	assert_int_equal(hdr_num_buffers(gptr(f, b[3].gpa, HDR)), 1);
	fixture_free(f);
}

static void test_rx_mrg_span(void **state)
{
	rx_span(0);
}

static void test_rx_mrg_span_event_idx(void **state)
{
	rx_span(VT_EVENT_IDX);
}

/* Chains of several buffers, the header split across them. */
static void test_rx_split_header(void **state)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), VT_INDIRECT);
	struct vt_buf b[3] = {
		vt_buf_new(&f->d.g, 5, true),
		vt_buf_new(&f->d.g, 10, true),
		vt_buf_new(&f->d.g, 100, true),
	};
	uint8_t hdr[HDR], frame[90], got[HDR + 90];
	uint32_t len;

	activate(f);
	vt_add_chain_indirect(rxq(f), b, 3);
	kick_rx(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	pattern(frame, sizeof(frame), 2);
	peer_send(f, hdr, frame, sizeof(frame));
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + 90);
	memcpy(got, gptr(f, b[0].gpa, 5), 5);
	memcpy(got + 5, gptr(f, b[1].gpa, 10), 10);
	memcpy(got + 15, gptr(f, b[2].gpa, 87), 87);
	assert_int_equal(hdr_num_buffers(got), 1);
	assert_memory_equal(got + HDR, frame, 90);
	fixture_free(f);
}

/* Without MRG_RXBUF one chain holds a frame; frames larger than it are dropped. */
static void test_rx_no_mrg(void **state)
{
	struct fixture *f = fixture_new(true, 0, 0, 0);
	uint8_t hdr[HDR], frame[3000];
	struct vt_buf b[2];
	uint16_t heads[2];
	uint32_t id, len;

	activate(f);
	b[0] = post_rx(f, 1526, &heads[0]);
	b[1] = post_rx(f, 1526, &heads[1]);
	kick_rx(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	pattern(frame, sizeof(frame), 11);
	peer_send(f, hdr, frame, 1514);
	wait_used(f, VIRTIO_NET_RXQ, &id, &len);
	assert_int_equal(id, heads[0]);
	assert_int_equal(len, 1526);
	assert_int_equal(hdr_num_buffers(gptr(f, b[0].gpa, HDR)), 1);
	assert_memory_equal(gptr(f, b[0].gpa + HDR, 1514), frame, 1514);
	/* Too large for a 1526-byte buffer: dropped, the buffer kept for the next frame. */
	peer_send(f, hdr, frame, 1515);
	peer_send(f, hdr, frame, 3000);
	WAIT_STAT(f, rx_dropped, 2);
	peer_send(f, hdr, frame + 1, 64);
	wait_used(f, VIRTIO_NET_RXQ, &id, &len);
	assert_int_equal(id, heads[1]);
	assert_int_equal(len, HDR + 64);
	assert_memory_equal(gptr(f, b[1].gpa + HDR, 64), frame + 1, 64);
	assert_int_equal(stats(f).rx_frames, 2);
	fixture_free(f);
}

/* Big buffers (the driver's layout with segmentation offloads and no MRG_RXBUF). */
static void test_rx_no_mrg_big(void **state)
{
	struct fixture *f = fixture_new(true, ALL_OFFLOADS,
					F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_TSO4), 0);
	uint8_t hdr[HDR], *frame = malloc(VIRTIO_NET_MAX_FRAME + 1);
	struct vt_buf b[2];
	uint32_t len;

	assert_non_null(frame);
	activate(f);
	b[0] = vt_buf_new(&f->d.g, HDR, true);
	b[1] = vt_buf_new(&f->d.g, VIRTIO_NET_MAX_FRAME, true);
	vt_add_chain(rxq(f), b, 2);
	kick_rx(f);
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16, 9);
	pattern(frame, VIRTIO_NET_MAX_FRAME + 1, 1);
	peer_send(f, hdr, frame, VIRTIO_NET_MAX_FRAME + 1); /* over the limit: dropped */
	peer_send(f, hdr, frame, VIRTIO_NET_MAX_FRAME);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + VIRTIO_NET_MAX_FRAME);
	assert_int_equal(stats(f).rx_dropped, 1);
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16, 1);
	assert_memory_equal(gptr(f, b[0].gpa, HDR), hdr, HDR);
	assert_memory_equal(gptr(f, b[1].gpa, VIRTIO_NET_MAX_FRAME), frame, VIRTIO_NET_MAX_FRAME);
	free(frame);
	fixture_free(f);
}

/* Without vnet headers the device writes a zero header itself. */
static void test_rx_no_vnet_hdr(void **state)
{
	struct fixture *f = fixture_new(false, 0, F(VIRTIO_NET_F_MRG_RXBUF), 0);
	uint8_t frame[200], zero[HDR];
	struct vt_buf b[2];
	uint32_t len;

	activate(f);
	/* First chain: 12-byte header buffer, then the frame buffer. */
	b[0] = vt_buf_new(&f->d.g, HDR, true);
	b[1] = vt_buf_new(&f->d.g, 1000, true);
	memset(gptr(f, b[0].gpa, HDR), 0xee, HDR);
	vt_add_chain(rxq(f), b, 2);
	kick_rx(f);
	pattern(frame, sizeof(frame), 5);
	peer_send(f, NULL, frame, sizeof(frame));
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + 200);
	hdr_set(zero, 0, 0, 0, 0, 0, 0, 1);
	assert_memory_equal(gptr(f, b[0].gpa, HDR), zero, HDR);
	assert_memory_equal(gptr(f, b[1].gpa, 200), frame, 200);
	/* One buffer holding header and frame; then a frame over two 100-byte chains. */
	b[0] = post_rx(f, 2048, NULL);
	kick_rx(f);
	peer_send(f, NULL, frame, 150);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + 150);
	assert_memory_equal(gptr(f, b[0].gpa, HDR), zero, HDR);
	assert_memory_equal(gptr(f, b[0].gpa + HDR, 150), frame, 150);
	b[0] = post_rx(f, 100, NULL);
	b[1] = post_rx(f, 100, NULL);
	kick_rx(f);
	usleep(20 * 1000);
	peer_send(f, NULL, frame, 150);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, 100);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + 150 - 100);
	hdr_set(zero, 0, 0, 0, 0, 0, 0, 2);
	assert_memory_equal(gptr(f, b[0].gpa, HDR), zero, HDR);
	assert_memory_equal(gptr(f, b[0].gpa + HDR, 100 - HDR), frame, 100 - HDR);
	assert_memory_equal(gptr(f, b[1].gpa, 62), frame + 100 - HDR, 62);
	fixture_free(f);
}

/* Headers from the tap are checked against what the guest negotiated. */
static void test_rx_header_checks(void **state)
{
	struct fixture *f = fixture_new(true, ALL_OFFLOADS, F(VIRTIO_NET_F_MRG_RXBUF), 0);
	uint8_t hdr[HDR], frame[100];
	struct vt_buf b;
	uint32_t len;

	activate(f);
	b = post_rx(f, 2048, NULL);
	kick_rx(f);
	pattern(frame, sizeof(frame), 1);
	/* No GUEST_CSUM: partial checksums and segments cannot be handed over. */
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 16, 0);
	peer_send(f, hdr, frame, 100);
	hdr_set(hdr, 0, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 0, 0, 0);
	peer_send(f, hdr, frame, 100);
	hdr_set(hdr, 0, 9, 0, 0, 0, 0, 0);
	peer_send(f, hdr, frame, 100);
	WAIT_STAT(f, rx_dropped, 3);
	/* DATA_VALID is cleared (flags must be 0 without GUEST_CSUM). */
	hdr_set(hdr, VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 0, 0);
	peer_send(f, hdr, frame, 100);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + 100);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 1);
	assert_memory_equal(gptr(f, b.gpa, HDR), hdr, HDR);
	assert_int_equal(stats(f).rx_frames, 1);
	fixture_free(f);

	/* With GUEST_CSUM and GUEST_TSO4 (no ECN, no TSO6). */
	f = fixture_new(true, ALL_OFFLOADS,
			F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_NET_F_GUEST_CSUM) |
				F(VIRTIO_NET_F_GUEST_TSO4),
			0);
	activate(f);
	b = post_rx(f, 2048, NULL);
	kick_rx(f);
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 74, 1428, 54, 16, 0);
	peer_send(f, hdr, frame, 100);
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
		54, 1448, 34, 16, 0);
	peer_send(f, hdr, frame, 100);
	WAIT_STAT(f, rx_dropped, 2);
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM | 0x40, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16,
		0);
	peer_send(f, hdr, frame, 100);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16, 1);
	assert_memory_equal(gptr(f, b.gpa, HDR), hdr, HDR);
	fixture_free(f);
}

/*
 * No receive buffers: the device leaves the frame in the tap (does not read,
 * does not spin); once the guest posts a buffer and notifies, it arrives.
 */
static void rx_backpressure(unsigned int qflags)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), qflags);
	uint8_t hdr[HDR], frame[500];
	uint64_t cpu0, cpu1;
	struct vt_buf b;
	uint32_t len;

	activate(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	pattern(frame, sizeof(frame), 3);
	peer_send(f, hdr, frame, sizeof(frame));
	peer_send(f, hdr, frame, 100);
	cpu0 = cpu_us();
	usleep(300 * 1000);
	cpu1 = cpu_us();
	assert_true(pending_bytes(f) >= HDR + 500);
	assert_true(cpu1 - cpu0 < 100 * 1000);
	assert_int_equal(stats(f).rx_dropped, 0);
	assert_false(vt_get_used(rxq(f), NULL, NULL));
	/* Now the guest posts one buffer and notifies. */
	b = post_rx(f, 2048, NULL);
	kick_rx(f);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + 500);
	assert_memory_equal(gptr(f, b.gpa + HDR, 500), frame, 500);
	/* The second frame waits again, then follows the next buffer. */
	usleep(50 * 1000);
	assert_int_equal(pending_bytes(f), HDR + 100);
	b = post_rx(f, 2048, NULL);
	kick_rx(f);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + 100);
	assert_int_equal(pending_bytes(f), 0);
	assert_int_equal(stats(f).rx_dropped, 0);
	fixture_free(f);
}

static void test_rx_backpressure(void **state)
{
	rx_backpressure(0);
}

static void test_rx_backpressure_event_idx(void **state)
{
	rx_backpressure(VT_EVENT_IDX);
}

/* With MRG_RXBUF, too few buffers for a frame: dropped; with more, it spans them. */
static void test_rx_mrg_short(void **state)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), 0);
	uint8_t hdr[HDR], frame[3000];
	uint16_t heads[4];
	struct vt_buf b[4];
	uint32_t id, len;

	activate(f);
	b[0] = post_rx(f, 1024, &heads[0]);
	b[1] = post_rx(f, 1024, &heads[1]);
	kick_rx(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	pattern(frame, sizeof(frame), 6);
	peer_send(f, hdr, frame, sizeof(frame));
	WAIT_STAT(f, rx_dropped, 1);
	assert_false(vt_get_used(rxq(f), NULL, NULL));
	b[2] = post_rx(f, 1024, &heads[2]);
	b[3] = post_rx(f, 1024, &heads[3]);
	kick_rx(f);
	usleep(20 * 1000);
	peer_send(f, hdr, frame, sizeof(frame));
	for (int i = 0; i < 3; i++) {
		wait_used(f, VIRTIO_NET_RXQ, &id, &len);
		assert_int_equal(id, heads[i]);
		assert_int_equal(len, i < 2 ? 1024 : HDR + 3000 - 2048);
	}
	assert_int_equal(hdr_num_buffers(gptr(f, b[0].gpa, HDR)), 3);
	assert_memory_equal(gptr(f, b[1].gpa, 1024), frame + 1024 - HDR, 1024);
	assert_memory_equal(gptr(f, b[2].gpa, 3000 - 2048 + HDR), frame + 2048 - HDR,
			    3000 - 2048 + HDR);
	fixture_free(f);
}

/* Receive chains with a readable part or smaller than a header go back unused. */
static void test_rx_bad_chains(void **state)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), 0);
	uint8_t hdr[HDR], frame[64];
	struct vt_buf b[2];
	uint16_t h_ro, h_small, h_good;
	uint32_t id, len;

	activate(f);
	b[0] = vt_buf_new(&f->d.g, 16, false);
	b[1] = vt_buf_new(&f->d.g, 2048, true);
	h_ro = vt_add_chain(rxq(f), b, 2);
	b[0] = vt_buf_new(&f->d.g, HDR - 1, true);
	h_small = vt_add_chain(rxq(f), b, 1);
	post_rx(f, 2048, &h_good);
	kick_rx(f);
	wait_used(f, VIRTIO_NET_RXQ, &id, &len);
	assert_int_equal(id, h_ro);
	assert_int_equal(len, 0);
	wait_used(f, VIRTIO_NET_RXQ, &id, &len);
	assert_int_equal(id, h_small);
	assert_int_equal(len, 0);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	pattern(frame, sizeof(frame), 0);
	peer_send(f, hdr, frame, sizeof(frame));
	wait_used(f, VIRTIO_NET_RXQ, &id, &len);
	assert_int_equal(id, h_good);
	assert_int_equal(len, HDR + 64);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	fixture_free(f);
}

/* Many frames through a small ring, with the guest recycling buffers. */
static void test_rx_many(void **state)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), VT_EVENT_IDX);
	uint8_t hdr[HDR], frame[1500];
	struct vt_buf bufs[QSIZE];
	uint16_t head;
	const unsigned int total = 500;
	unsigned int sent = 0, got = 0;

	vt_queue_set_indexes(rxq(f), 65400);
	for (unsigned int i = 0; i < 16; i++) {
		struct vt_buf b = post_rx(f, 1600, &head);

		bufs[head] = b;
	}
	activate(f);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	while (got < total) {
		uint32_t id, len;

		while (sent < total && sent < got + 8) {
			pattern(frame, 100 + sent % 1400, sent);
			peer_send(f, hdr, frame, 100 + sent % 1400);
			sent++;
		}
		wait_used(f, VIRTIO_NET_RXQ, &id, &len);
		assert_true(id < QSIZE);
		assert_int_equal(len, HDR + 100 + got % 1400);
		pattern(frame, 100 + got % 1400, got);
		assert_memory_equal(gptr(f, bufs[id].gpa + HDR, len - HDR), frame, len - HDR);
		assert_int_equal(hdr_num_buffers(gptr(f, bufs[id].gpa, HDR)), 1);
		/* Give the buffer back. */
		vt_set_desc(rxq(f), (uint16_t)id, bufs[id].gpa, bufs[id].len, VIRTQ_DESC_F_WRITE,
			    0);
		vt_publish(rxq(f), (uint16_t)id);
		kick_rx(f);
		got++;
	}
	assert_int_equal(stats(f).rx_frames, total);
	assert_int_equal(stats(f).rx_dropped, 0);
	fixture_free(f);
}

/* ---- Hostile rings, a vanished tap, reset ---- */

static void test_hostile_rx_ring(void **state)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), 0);
	uint8_t hdr[HDR], frame[64];

	activate(f);
	/* A receive descriptor pointing past guest RAM. */
	vt_set_desc(rxq(f), 0, RAM_SIZE - 8, 4096, VIRTQ_DESC_F_WRITE, 0);
	vt_publish(rxq(f), 0);
	kick_rx(f);
	assert_true(vt_eventfd_wait(f->d.env.reset_fd, VT_WAIT_MS) >= 1);
	/* Frames arriving now are not read; nothing is pushed. */
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	pattern(frame, sizeof(frame), 0);
	peer_send(f, hdr, frame, sizeof(frame));
	usleep(50 * 1000);
	assert_false(vt_get_used(rxq(f), NULL, NULL));

	/* reset() recovers: a fresh ring works again. */
	f->d.dev.ops->reset(f->d.dev.dev);
	vt_queue_init(rxq(f), &f->d.g, QSIZE, 0);
	vt_queue_init(txq(f), &f->d.g, QSIZE, 0);
	activate(f);
	post_rx(f, 2048, NULL);
	kick_rx(f);
	wait_used(f, VIRTIO_NET_RXQ, NULL, NULL);
	fixture_free(f);
}

static void test_hostile_tx_ring(void **state)
{
	struct fixture *f = fixture_new(true, 0, 0, 0);

	activate(f);
	/* A descriptor loop, then an avail index far ahead. */
	vt_set_desc(txq(f), 0, 0, 16, VIRTQ_DESC_F_NEXT, 1);
	vt_set_desc(txq(f), 1, 0, 16, VIRTQ_DESC_F_NEXT, 0);
	vt_publish(txq(f), 0);
	kick_tx(f);
	assert_true(vt_eventfd_wait(f->d.env.reset_fd, VT_WAIT_MS) >= 1);
	fixture_free(f);

	f = fixture_new(true, 0, 0, 0);
	activate(f);
	vt_set_avail_idx(txq(f), QSIZE + 5);
	kick_tx(f);
	assert_true(vt_eventfd_wait(f->d.env.reset_fd, VT_WAIT_MS) >= 1);
	fixture_free(f);

	/* A head index out of range on the receive ring. */
	f = fixture_new(true, 0, 0, 0);
	activate(f);
	vt_publish(rxq(f), QSIZE + 3);
	kick_rx(f);
	assert_true(vt_eventfd_wait(f->d.env.reset_fd, VT_WAIT_MS) >= 1);
	fixture_free(f);
}

/* reset() while the device holds receive chains and a blocked frame; then it starts afresh. */
static void test_reset_while_holding(void **state)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), VT_EVENT_IDX);
	uint8_t hdr[HDR], frame[4000], got[8192];
	int small = 4096;
	struct vt_buf b;
	uint32_t len;

	assert_int_equal(setsockopt(f->dev_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	activate(f);
	for (int i = 0; i < 4; i++)
		post_rx(f, 2048, NULL);
	kick_rx(f);
	for (unsigned int i = 0; i < 20; i++)
		post_tx(f, hdr, 4000, i);
	kick_tx(f);
	WAIT_STAT(f, tx_frames, 1);
	usleep(50 * 1000);
	assert_true(stats(f).tx_frames < 20);

	f->d.dev.ops->reset(f->d.dev.dev);
	/* Drain what the network got, then a fresh ring pair. */
	while (peer_recv(f, got, sizeof(got), 0) > 0)
		;
	vt_queue_init(rxq(f), &f->d.g, QSIZE, VT_EVENT_IDX);
	vt_queue_init(txq(f), &f->d.g, QSIZE, VT_EVENT_IDX);
	activate(f);
	b = post_rx(f, 2048, NULL);
	kick_rx(f);
	pattern(frame, 300, 1);
	peer_send(f, hdr, frame, 300);
	wait_used(f, VIRTIO_NET_RXQ, NULL, &len);
	assert_int_equal(len, HDR + 300);
	assert_memory_equal(gptr(f, b.gpa + HDR, 300), frame, 300);
	post_tx(f, hdr, 100, 7);
	kick_tx(f);
	wait_used(f, VIRTIO_NET_TXQ, NULL, &len);
	assert_int_equal(peer_recv(f, got, sizeof(got), VT_WAIT_MS), HDR + 100);
	pattern(frame, 100, 7);
	assert_memory_equal(got + HDR, frame, 100);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	fixture_free(f);
}

/* The network end goes away: transmit chains still complete, nothing spins. */
static void test_peer_closed(void **state)
{
	struct fixture *f = fixture_new(true, 0, F(VIRTIO_NET_F_MRG_RXBUF), 0);
	uint8_t hdr[HDR];
	uint64_t cpu0, cpu1;
	uint32_t len;

	activate(f);
	post_rx(f, 2048, NULL);
	kick_rx(f);
	close(f->peer);
	f->peer = -1;
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	post_tx(f, hdr, 100, 0);
	kick_tx(f);
	wait_used(f, VIRTIO_NET_TXQ, NULL, &len);
	assert_int_equal(len, 0);
	assert_int_equal(stats(f).tx_dropped, 1);
	cpu0 = cpu_us();
	usleep(200 * 1000);
	cpu1 = cpu_us();
	assert_true(cpu1 - cpu0 < 100 * 1000);
	assert_int_equal(vt_eventfd_read(f->d.env.reset_fd), 0);
	fixture_free(f);
}

/* ---- A real tap in a private network namespace ---- */

static uint16_t ip_csum(const uint8_t *p, size_t len)
{
	uint32_t s = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		s += (uint32_t)p[len - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	put_be16(p, (uint16_t)(v >> 16));
	put_be16(p + 2, (uint16_t)v);
}

#define HOST_IP	 0x0a0b0c01 /* 10.11.12.1 */
#define GUEST_IP 0x0a0b0c02

/* Wait for a received frame for which @match returns true; other frames are skipped. */
static bool rx_find(struct fixture *f, struct vt_buf *bufs, bool (*match)(const uint8_t *, size_t),
		    uint8_t *out, size_t *out_len)
{
	uint64_t t0 = now_ms();
	uint32_t id, len;

	while (now_ms() - t0 < VT_WAIT_MS) {
		const uint8_t *p;

		if (!vt_try_wait_used(rxq(f), f->d.env.act.call_fd[VIRTIO_NET_RXQ], &id, &len,
				      VT_WAIT_MS))
			return false;
		assert_true(id < QSIZE && len >= HDR && len <= bufs[id].len);
		p = gptr(f, bufs[id].gpa, len);
		memcpy(out, p + HDR, len - HDR);
		*out_len = len - HDR;
		/* Recycle the buffer. */
		vt_set_desc(rxq(f), (uint16_t)id, bufs[id].gpa, bufs[id].len, VIRTQ_DESC_F_WRITE,
			    0);
		vt_publish(rxq(f), (uint16_t)id);
		kick_rx(f);
		if (match(out, *out_len))
			return true;
	}
	return false;
}

static bool is_arp_reply(const uint8_t *p, size_t len)
{
	return len >= 42 && p[12] == 0x08 && p[13] == 0x06 && p[20] == 0 && p[21] == 2 &&
	       !memcmp(p + 32, guest_mac, 6) && p[28] == 10 && p[29] == 11 && p[30] == 12 &&
	       p[31] == 1;
}

static bool is_echo_reply(const uint8_t *p, size_t len)
{
	return len >= 42 && p[12] == 0x08 && p[13] == 0x00 && p[23] == 1 && p[34] == 0 &&
	       p[38] == 0x12 && p[39] == 0x34;
}

static bool is_tcp_rst(const uint8_t *p, size_t len)
{
	return len >= 54 && p[12] == 0x08 && p[13] == 0x00 && p[23] == 6 && (p[47] & 0x04);
}

/* Eth + IPv4 header for a frame to the host from the guest; returns the IP header offset. */
static void ipv4_frame(uint8_t *p, const uint8_t *host_mac, uint8_t proto, size_t ip_len)
{
	memcpy(p, host_mac, 6);
	memcpy(p + 6, guest_mac, 6);
	put_be16(p + 12, 0x0800);
	p[14] = 0x45;
	p[15] = 0;
	put_be16(p + 16, (uint16_t)ip_len);
	put_be16(p + 18, 0x1234);
	put_be16(p + 20, 0x4000); /* DF */
	p[22] = 64;
	p[23] = proto;
	put_be16(p + 24, 0);
	put_be32(p + 26, GUEST_IP);
	put_be32(p + 30, HOST_IP);
	put_be16(p + 24, ip_csum(p + 14, 20));
}

static void send_tx_frame(struct fixture *f, const uint8_t *hdr, const uint8_t *frame, size_t len)
{
	struct vt_buf b = vt_buf_new(&f->d.g, (uint32_t)(HDR + len), false);
	uint8_t *p = gptr(f, b.gpa, b.len);
	uint32_t ulen;

	memcpy(p, hdr, HDR);
	memcpy(p + HDR, frame, len);
	vt_add_chain(txq(f), &b, 1);
	kick_tx(f);
	wait_used(f, VIRTIO_NET_TXQ, NULL, &ulen);
}

/*
 * ARP, ping with a partial checksum, and a TSO segment, through a real tap
 * whose host side the kernel of a private namespace answers.
 */
static void test_real_tap(void **state)
{
	const uint64_t neg = F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_NET_F_CSUM) |
			     F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_HOST_TSO4) |
			     F(VIRTIO_NET_F_GUEST_TSO4) | F(VIRTIO_NET_F_HOST_TSO6) |
			     F(VIRTIO_NET_F_GUEST_TSO6);
	uint8_t hdr[HDR], frame[8192], host_mac[6];
	struct vt_buf bufs[QSIZE];
	struct tap_info info;
	struct vmm_err err;
	struct fixture *f;
	char name[TAP_IFNAMSIZ];
	size_t len;
	int orig, fd, ret;

	orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	assert_true(orig >= 0);
	if (unshare(CLONE_NEWNET) < 0) {
		print_message("skip: unshare(CLONE_NEWNET): %s\n", strerror(errno));
		close(orig);
		skip();
	}
	ret = tap_create(NULL, HOST_IP, 0xffffff00, &fd, name, &err);
	if (ret < 0) {
		print_message("skip: %s\n", err.msg);
		assert_int_equal(setns(orig, CLONE_NEWNET), 0);
		close(orig);
		skip();
	}
	assert_int_equal(tap_check_fd(fd, &info, &err), 0);
	assert_int_equal(tap_enable_offloads(fd, &info, &err), 0);
	assert_true(info.vnet_hdr && (info.offloads & TUN_F_TSO4));
	f = fixture_new_fd(fd, &info, neg, VT_EVENT_IDX);
	assert_int_equal(f->d.dev.ops->features(f->d.dev.dev) & neg, neg);
	for (unsigned int i = 0; i < 32; i++) {
		uint16_t head;
		struct vt_buf b = post_rx(f, 4096, &head);

		bufs[head] = b;
	}
	activate(f);

	/* ARP: who has 10.11.12.1? */
	memset(frame, 0, 60);
	memset(frame, 0xff, 6);
	memcpy(frame + 6, guest_mac, 6);
	put_be16(frame + 12, 0x0806);
	put_be16(frame + 14, 1);
	put_be16(frame + 16, 0x0800);
	frame[18] = 6;
	frame[19] = 4;
	put_be16(frame + 20, 1);
	memcpy(frame + 22, guest_mac, 6);
	put_be32(frame + 28, GUEST_IP);
	put_be32(frame + 38, HOST_IP);
	hdr_set(hdr, 0, 0, 0, 0, 0, 0, 0);
	send_tx_frame(f, hdr, frame, 60);
	assert_true(rx_find(f, bufs, is_arp_reply, frame, &len));
	memcpy(host_mac, frame + 22, 6);

	/* Ping with the ICMP checksum left to the host (NEEDS_CSUM from byte 34, field at +2). */
	ipv4_frame(frame, host_mac, 1, 20 + 8 + 32);
	memset(frame + 34, 0, 8 + 32);
	frame[34] = 8;
	put_be16(frame + 38, 0x1234);
	put_be16(frame + 40, 1);
	pattern(frame + 42, 32, 0);
	hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 2, 0);
	send_tx_frame(f, hdr, frame, 14 + 20 + 8 + 32);
	assert_true(rx_find(f, bufs, is_echo_reply, frame, &len));
	assert_int_equal(len, 14 + 20 + 8 + 32);
	assert_int_equal(ip_csum(frame + 34, 8 + 32), 0);

	/* A 3000-byte TCP segment to a closed port, segmented by the host: a reset comes back. */
	{
		const size_t payload = 3000, ip_len = 20 + 20 + payload;
		uint8_t *t = frame + 34;

		ipv4_frame(frame, host_mac, 6, ip_len);
		memset(t, 0, 20);
		put_be16(t, 40000);
		put_be16(t + 2, 9); /* discard: nobody listens in a fresh namespace */
		put_be32(t + 4, 1000);
		t[12] = 5 << 4;
		t[13] = 0x18; /* PSH ACK */
		put_be16(t + 14, 65535);
		pattern(t + 20, payload, 0);
		/* Partial checksum: the pseudo-header sum, not inverted, in the field. */
		{
			uint32_t s = (GUEST_IP >> 16) + (GUEST_IP & 0xffff) + (HOST_IP >> 16) +
				     (HOST_IP & 0xffff) + 6 + (uint32_t)(20 + payload);

			while (s >> 16)
				s = (s & 0xffff) + (s >> 16);
			put_be16(t + 16, (uint16_t)s);
		}
		hdr_set(hdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1000, 34,
			16, 0);
		send_tx_frame(f, hdr, frame, 14 + ip_len);
		assert_true(rx_find(f, bufs, is_tcp_rst, frame, &len));
	}
	assert_int_equal(stats(f).tx_dropped, 0);
	assert_int_equal(stats(f).tx_frames, 3);

	fixture_free(f);
	assert_int_equal(setns(orig, CLONE_NEWNET), 0);
	close(orig);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ops_and_config),
		cmocka_unit_test(test_features),
		cmocka_unit_test(test_create_errors),
		cmocka_unit_test(test_activate_errors),
		cmocka_unit_test(test_tx_one_buffer),
		cmocka_unit_test(test_tx_split_header),
		cmocka_unit_test(test_tx_split_header_indirect),
		cmocka_unit_test(test_tx_no_vnet_hdr),
		cmocka_unit_test(test_tx_drops),
		cmocka_unit_test(test_tx_gso),
		cmocka_unit_test(test_tx_many),
		cmocka_unit_test(test_tx_backpressure),
		cmocka_unit_test(test_rx_mrg_one),
		cmocka_unit_test(test_rx_mrg_span),
		cmocka_unit_test(test_rx_mrg_span_event_idx),
		cmocka_unit_test(test_rx_split_header),
		cmocka_unit_test(test_rx_no_mrg),
		cmocka_unit_test(test_rx_no_mrg_big),
		cmocka_unit_test(test_rx_no_vnet_hdr),
		cmocka_unit_test(test_rx_header_checks),
		cmocka_unit_test(test_rx_backpressure),
		cmocka_unit_test(test_rx_backpressure_event_idx),
		cmocka_unit_test(test_rx_mrg_short),
		cmocka_unit_test(test_rx_bad_chains),
		cmocka_unit_test(test_rx_many),
		cmocka_unit_test(test_hostile_rx_ring),
		cmocka_unit_test(test_hostile_tx_ring),
		cmocka_unit_test(test_reset_while_holding),
		cmocka_unit_test(test_peer_closed),
		cmocka_unit_test(test_real_tap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
