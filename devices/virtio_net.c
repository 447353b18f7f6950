/*
 * virtio-net on a tap.
 *
 * One worker thread per active device waits (epoll) on the two kick
 * eventfds, the tap and a stop eventfd.
 *
 * Transmit: each chain's header is copied and checked against the
 * negotiated features; the frame is written with one writev() whose iovecs
 * point into guest RAM (the checked header copy in front when the tap takes
 * vnet headers). When the tap says EAGAIN the chain waits for EPOLLOUT.
 *
 * Receive: popped chains are kept in a "stash" (their writable buffers
 * mapped to iovecs) until a frame arrives; readv() then reads straight into
 * them, with a device buffer (scratch) after the last one. A frame that
 * lands partly in scratch is either completed from there into chains the
 * guest has meanwhile posted, or dropped (the chains are kept for the next
 * frame). The header is checked and num_buffers set, then the chains the
 * frame used go to the used ring. Without stashed chains the tap is not
 * polled at all (backpressure) and the guest's notifications are enabled.
 */
#include "virtio_net.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define HDR	     VIRTIO_NET_HDR_SIZE
#define IOV_LIMIT    1024	     /* UIO_MAXIOV: iovecs per readv/writev */
#define RX_IOV_MAX   (IOV_LIMIT - 1) /* stash iovecs; one more for scratch */
#define SCRATCH_SIZE (HDR + VIRTIO_NET_MAX_FRAME + 1)
#define BATCH	     64 /* frames per queue before interrupting and looking at events */
#define F(bit)	     (1ull << (bit))

enum { EV_RX_KICK, EV_TX_KICK, EV_TAP, EV_STOP };

/* A receive chain the device holds: its writable buffers are rx_iov[iov, iov + niov). */
struct rx_slot {
	uint16_t head;
	uint32_t cap; /* bytes mapped */
	uint32_t iov, niov;
};

struct virtio_net {
	int tap_fd;
	struct tap_info info;
	uint64_t features; /* offered */
	uint8_t config[VIRTIO_NET_CONFIG_SIZE];
	struct virtio_net_stats stats; /* atomic */

	/* Set by activate(), cleared by reset(). */
	bool active;
	pthread_t thread;
	int stop_fd, epoll_fd;
	struct virtio_activation act;
	struct virtq *rxq, *txq;
	uint64_t neg; /* negotiated device features */
	bool mrg;

	/* The worker's. */
	bool broken, tap_dead, rx_notify, rx_pushed, tx_pushed;
	uint32_t tap_events; /* registered with epoll; 0: not registered */
	struct virtq_chain chain;
	/* Transmit: a frame the tap refused with EAGAIN waits here. */
	bool tx_blocked;
	uint16_t tx_head;
	int tx_niov;
	uint8_t tx_hdr[HDR];
	struct iovec tx_iov[IOV_LIMIT];
	/* Receive stash: slots [rx_first, rx_first + rx_n), iovecs up to rx_iov_end. */
	struct rx_slot rx_slots[RX_IOV_MAX];
	struct iovec rx_iov[RX_IOV_MAX + 1];
	uint32_t rx_first, rx_n, rx_iov_end;
	uint64_t rx_cap; /* bytes in the stash */
	uint8_t *scratch;
};

static void stat_add(uint64_t *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

static void put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static void drain_eventfd(int fd)
{
	uint64_t v;
	ssize_t r = read(fd, &v, sizeof(v));

	(void)r;
}

/* ---- Headers ---- */

/* May this header from the guest go to the tap? Clears num_buffers. */
static bool tx_hdr_ok(const struct virtio_net *n, uint8_t *h)
{
	uint8_t gso = h[VIRTIO_NET_HDR_GSO_TYPE];
	uint8_t type = gso & ~VIRTIO_NET_HDR_GSO_ECN;

	put_le16(h + VIRTIO_NET_HDR_NUM_BUFFERS, 0);
	if (h[VIRTIO_NET_HDR_FLAGS] & ~VIRTIO_NET_HDR_F_NEEDS_CSUM)
		return false;
	if ((h[VIRTIO_NET_HDR_FLAGS] & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
	    !(n->neg & F(VIRTIO_NET_F_CSUM)))
		return false;
	if ((gso & VIRTIO_NET_HDR_GSO_ECN) &&
	    (type == VIRTIO_NET_HDR_GSO_NONE || !(n->neg & F(VIRTIO_NET_F_HOST_ECN))))
		return false;
	switch (type) {
	case VIRTIO_NET_HDR_GSO_NONE:
		return true;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		return n->neg & F(VIRTIO_NET_F_HOST_TSO4);
	case VIRTIO_NET_HDR_GSO_TCPV6:
		return n->neg & F(VIRTIO_NET_F_HOST_TSO6);
	case VIRTIO_NET_HDR_GSO_UDP:
		return n->neg & F(VIRTIO_NET_F_HOST_UFO);
	default:
		return false;
	}
}

/* May a header from the tap go to the guest? Fixes flags the guest didn't negotiate. */
static bool rx_hdr_ok(const struct virtio_net *n, uint8_t *h)
{
	uint8_t flags = h[VIRTIO_NET_HDR_FLAGS];
	uint8_t gso = h[VIRTIO_NET_HDR_GSO_TYPE];
	uint8_t type = gso & ~VIRTIO_NET_HDR_GSO_ECN;

	if (!(n->neg & F(VIRTIO_NET_F_GUEST_CSUM))) {
		/* 5.1.6.4.1: flags zero; a partial checksum cannot be handed over. */
		if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
			return false;
		flags = 0;
	}
	flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
	h[VIRTIO_NET_HDR_FLAGS] = flags;
	if ((gso & VIRTIO_NET_HDR_GSO_ECN) &&
	    (type == VIRTIO_NET_HDR_GSO_NONE || !(n->neg & F(VIRTIO_NET_F_GUEST_ECN))))
		return false;
	switch (type) {
	case VIRTIO_NET_HDR_GSO_NONE:
		return true;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		return n->neg & F(VIRTIO_NET_F_GUEST_TSO4);
	case VIRTIO_NET_HDR_GSO_TCPV6:
		return n->neg & F(VIRTIO_NET_F_GUEST_TSO6);
	case VIRTIO_NET_HDR_GSO_UDP:
		return n->neg & F(VIRTIO_NET_F_GUEST_UFO);
	default:
		return false;
	}
}

/* ---- Transmit ---- */

/* Fill tx_iov/tx_hdr from n->chain. Returns false when the chain must be dropped. */
static bool tx_prepare(struct virtio_net *n)
{
	const struct virtq_chain *c = &n->chain;
	uint64_t skip = HDR;
	int niov = 0;

	if (c->nbufs > c->nread || c->read_len <= HDR || c->read_len - HDR > VIRTIO_NET_MAX_FRAME)
		return false;
	if (virtq_chain_read(n->txq, c, 0, n->tx_hdr, HDR) != HDR || !tx_hdr_ok(n, n->tx_hdr))
		return false;
	if (n->info.vnet_hdr)
		n->tx_iov[niov++] = (struct iovec){.iov_base = n->tx_hdr, .iov_len = HDR};
	for (uint32_t i = 0; i < c->nread; i++) {
		const struct virtq_buf *b = &c->bufs[i];
		void *p;

		if (skip >= b->len) {
			skip -= b->len;
			continue;
		}
		if (niov == IOV_LIMIT)
			return false;
		p = gm_ptr(n->txq->mem, b->gpa + skip, b->len - skip);
		if (!p)
			return false;
		n->tx_iov[niov++] = (struct iovec){.iov_base = p, .iov_len = b->len - skip};
		skip = 0;
	}
	n->tx_niov = niov;
	n->tx_head = c->head;
	return true;
}

/* Write the prepared frame. Returns 0 (sent or dropped, chain pushed) or -EAGAIN. */
static int tx_send(struct virtio_net *n)
{
	ssize_t r;

	do {
		r = writev(n->tap_fd, n->tx_iov, n->tx_niov);
	} while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !n->tap_dead) {
		n->tx_blocked = true;
		return -EAGAIN;
	}
	n->tx_blocked = false;
	stat_add(r < 0 ? &n->stats.tx_dropped : &n->stats.tx_frames);
	virtq_push(n->txq, n->tx_head, 0);
	n->tx_pushed = true;
	return 0;
}

/* Send what the guest queued, up to BATCH frames. Returns true when more may wait. */
static bool tx_process(struct virtio_net *n)
{
	unsigned int done = 0;
	int ret;

	if (n->tx_blocked && tx_send(n) == -EAGAIN)
		return false; /* resumed on EPOLLOUT */
	virtq_set_notify(n->txq, false);
	for (;;) {
		while (done < BATCH) {
			ret = virtq_pop(n->txq, &n->chain);
			if (ret < 0) {
				n->broken = true;
				return false;
			}
			if (ret == 0)
				break;
			done++;
			if (!tx_prepare(n)) {
				stat_add(&n->stats.tx_dropped);
				virtq_push(n->txq, n->chain.head, 0);
				n->tx_pushed = true;
				continue;
			}
			if (tx_send(n) == -EAGAIN)
				return false;
		}
		if (done >= BATCH)
			return true;
		virtq_set_notify(n->txq, true);
		if (!virtq_has_avail(n->txq))
			return false;
		virtq_set_notify(n->txq, false);
	}
}

/* ---- Receive stash ---- */

static void rx_stash_clear(struct virtio_net *n)
{
	n->rx_first = n->rx_n = n->rx_iov_end = 0;
	n->rx_cap = 0;
}

/* Move the stash to the start of its arrays. */
static void rx_compact(struct virtio_net *n)
{
	uint32_t base;

	if (!n->rx_n) {
		rx_stash_clear(n);
		return;
	}
	base = n->rx_slots[n->rx_first].iov;
	if (!n->rx_first && !base)
		return;
	memmove(n->rx_iov, n->rx_iov + base, (n->rx_iov_end - base) * sizeof(n->rx_iov[0]));
	memmove(n->rx_slots, n->rx_slots + n->rx_first, n->rx_n * sizeof(n->rx_slots[0]));
	for (uint32_t i = 0; i < n->rx_n; i++)
		n->rx_slots[i].iov -= base;
	n->rx_first = 0;
	n->rx_iov_end -= base;
}

/* Return n->chain unused. */
static void rx_reject(struct virtio_net *n)
{
	virtq_push(n->rxq, n->chain.head, 0);
	n->rx_pushed = true;
}

/*
 * Pop receive chains into the stash until it holds @need bytes (one chain
 * without MRG_RXBUF), the ring is empty or the stash is full. Returns 0,
 * or -EIO when the ring is broken.
 */
static int rx_top_up(struct virtio_net *n, uint64_t need)
{
	const struct virtq_chain *c = &n->chain;

	while (n->rx_cap < need && (n->mrg || !n->rx_n)) {
		struct rx_slot *s;
		uint32_t nw, room, i;
		int ret;

		if (n->rx_first + n->rx_n == RX_IOV_MAX || n->rx_iov_end == RX_IOV_MAX)
			rx_compact(n);
		if (n->rx_iov_end == RX_IOV_MAX)
			return 0; /* full of (tiny) buffers */
		ret = virtq_pop(n->rxq, &n->chain);
		if (ret < 0) {
			n->broken = true;
			return -EIO;
		}
		if (ret == 0)
			return 0;
		nw = c->nbufs - c->nread;
		if (c->nread || c->write_len < HDR) {
			rx_reject(n);
			continue;
		}
		if (n->rx_iov_end + nw > RX_IOV_MAX)
			rx_compact(n);
		room = RX_IOV_MAX - n->rx_iov_end;
		s = &n->rx_slots[n->rx_first + n->rx_n];
		*s = (struct rx_slot){.head = c->head, .iov = n->rx_iov_end};
		for (i = c->nread; i < c->nbufs && s->niov < room; i++) {
			void *p = gm_ptr(n->rxq->mem, c->bufs[i].gpa, c->bufs[i].len);

			if (!p)
				break;
			n->rx_iov[s->iov + s->niov++] =
				(struct iovec){.iov_base = p, .iov_len = c->bufs[i].len};
			s->cap += c->bufs[i].len;
		}
		if (s->cap < HDR) {
			rx_reject(n); /* only when buffers are split beyond the iovec limit */
			continue;
		}
		n->rx_iov_end += s->niov;
		n->rx_n++;
		n->rx_cap += s->cap;
	}
	return 0;
}

/* Copy between host memory and the stash at byte @off (to the stash when @to_stash). */
static size_t rx_stash_copy(struct virtio_net *n, uint64_t off, void *buf, size_t len,
			    bool to_stash)
{
	uint8_t *p = buf;
	size_t done = 0;

	if (!n->rx_n)
		return 0;
	for (uint32_t i = n->rx_slots[n->rx_first].iov; i < n->rx_iov_end && done < len; i++) {
		size_t l = n->rx_iov[i].iov_len, k;
		uint8_t *g = n->rx_iov[i].iov_base;

		if (off >= l) {
			off -= l;
			continue;
		}
		k = l - off < len - done ? l - off : len - done;
		if (to_stash)
			memcpy(g + off, p + done, k);
		else
			memcpy(p + done, g + off, k);
		done += k;
		off = 0;
	}
	return done;
}

/* Hand the first chains of the stash, holding @len bytes of frame, to the guest. */
static void rx_deliver(struct virtio_net *n, uint8_t *hdr, uint64_t len)
{
	uint64_t rem = len;
	uint32_t k = 0;

	while (rem && k < n->rx_n) {
		uint32_t c = n->rx_slots[n->rx_first + k].cap;

		rem -= rem < c ? rem : c;
		k++;
	}
	put_le16(hdr + VIRTIO_NET_HDR_NUM_BUFFERS, (uint16_t)k);
	rx_stash_copy(n, 0, hdr, HDR, true);
	stat_add(&n->stats.rx_frames);
	rem = len;
	for (uint32_t i = 0; i < k; i++) {
		const struct rx_slot *s = &n->rx_slots[n->rx_first + i];
		uint32_t used = rem < s->cap ? (uint32_t)rem : s->cap;

		virtq_push(n->rxq, s->head, used);
		rem -= used;
		n->rx_cap -= s->cap;
	}
	n->rx_first += k;
	n->rx_n -= k;
	if (!n->rx_n)
		rx_stash_clear(n);
	n->rx_pushed = true;
}

/*
 * Read one frame into the stash (not empty) and deliver or drop it.
 * Returns 0, -EAGAIN when the tap has nothing, -EPIPE when the tap is gone
 * or -EIO when the ring broke.
 */
static int rx_frame(struct virtio_net *n)
{
	uint64_t skip = n->info.vnet_hdr ? 0 : HDR, placed, cap;
	uint32_t i = n->rx_slots[n->rx_first].iov;
	uint8_t hdr[HDR];
	struct iovec save;
	ssize_t r;

	n->rx_iov[n->rx_iov_end] = (struct iovec){.iov_base = n->scratch, .iov_len = SCRATCH_SIZE};
	/* Without vnet headers the frame goes after a header we write: skip it. */
	while (skip >= n->rx_iov[i].iov_len) {
		skip -= n->rx_iov[i].iov_len;
		i++;
	}
	save = n->rx_iov[i];
	n->rx_iov[i].iov_base = (uint8_t *)save.iov_base + skip;
	n->rx_iov[i].iov_len -= skip;
	do {
		r = readv(n->tap_fd, &n->rx_iov[i], (int)(n->rx_iov_end + 1 - i));
	} while (r < 0 && errno == EINTR);
	n->rx_iov[i] = save;
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -EAGAIN;
	if (r <= 0) {
		n->tap_dead = true; /* EOF, or an error that would repeat */
		return -EPIPE;
	}
	placed = (uint64_t)r + (n->info.vnet_hdr ? 0 : HDR);
	if ((uint64_t)r < (n->info.vnet_hdr ? HDR : 1) || placed - HDR > VIRTIO_NET_MAX_FRAME)
		goto drop;
	cap = n->rx_cap;
	if (placed > cap) {
		/* The tail is in scratch: complete it into chains posted since, if any. */
		if (!n->mrg)
			goto drop;
		if (rx_top_up(n, placed) < 0)
			return -EIO;
		if (n->rx_cap < placed)
			goto drop;
		rx_stash_copy(n, cap, n->scratch, placed - cap, true);
	}
	if (n->info.vnet_hdr)
		rx_stash_copy(n, 0, hdr, HDR, false);
	else
		memset(hdr, 0, HDR);
	if (!rx_hdr_ok(n, hdr))
		goto drop;
	rx_deliver(n, hdr, placed);
	return 0;
drop:
	/* The chains stay in the stash for the next frame. */
	stat_add(&n->stats.rx_dropped);
	return 0;
}

/* Receive up to BATCH frames. Returns true when more may wait. */
static bool rx_process(struct virtio_net *n)
{
	for (unsigned int i = 0; i < BATCH; i++) {
		int ret;

		if (n->tap_dead || n->broken)
			return false;
		if (rx_top_up(n, n->mrg ? HDR + VIRTIO_NET_MAX_FRAME : 1) < 0)
			return false;
		if (!n->rx_n) {
			/* No buffers: stop reading the tap until the guest posts some. */
			if (!n->rx_notify) {
				virtq_set_notify(n->rxq, true);
				n->rx_notify = true;
			}
			if (virtq_has_avail(n->rxq))
				continue;
			return false;
		}
		if (n->rx_notify) {
			virtq_set_notify(n->rxq, false);
			n->rx_notify = false;
		}
		ret = rx_frame(n);
		if (ret < 0)
			return false;
	}
	return true;
}

/* ---- Worker ---- */

/* Register the tap for what the worker waits for: frames (if it has buffers), room. */
static void tap_watch(struct virtio_net *n)
{
	struct epoll_event ev = {.data.u32 = EV_TAP};
	uint32_t want = 0;
	int op;

	if (!n->tap_dead && !n->broken) {
		if (n->rx_n)
			want |= EPOLLIN;
		if (n->tx_blocked)
			want |= EPOLLOUT;
	}
	if (want == n->tap_events)
		return;
	ev.events = want;
	op = !want ? EPOLL_CTL_DEL : !n->tap_events ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(n->epoll_fd, op, n->tap_fd, &ev) < 0 && op != EPOLL_CTL_DEL) {
		/* Cannot wait for the tap (not pollable): treat it as gone. */
		n->tap_dead = true;
		if (n->tap_events)
			epoll_ctl(n->epoll_fd, EPOLL_CTL_DEL, n->tap_fd, NULL);
		want = 0;
	}
	n->tap_events = want;
}

static void *net_worker(void *arg)
{
	struct virtio_net *n = arg;
	struct epoll_event ev[4];
	bool work = true; /* look at both rings once at start */
	bool reported = false;

	/* Named from inside: naming another thread opens /proc, which a sandbox forbids. */
	pthread_setname_np(pthread_self(), "virtio-net");
	for (;;) {
		int nev;

		if (work && !n->broken) {
			work = tx_process(n);
			if (!n->broken)
				work |= rx_process(n);
		}
		if (n->rx_pushed) {
			n->rx_pushed = false;
			virtio_queue_interrupt(&n->act, VIRTIO_NET_RXQ);
		}
		if (n->tx_pushed) {
			n->tx_pushed = false;
			virtio_queue_interrupt(&n->act, VIRTIO_NET_TXQ);
		}
		if (n->broken && !reported) {
			/* Stop listening to the guest; only reset() wakes us now. */
			reported = true;
			work = false;
			epoll_ctl(n->epoll_fd, EPOLL_CTL_DEL, n->act.kick_fd[VIRTIO_NET_RXQ], NULL);
			epoll_ctl(n->epoll_fd, EPOLL_CTL_DEL, n->act.kick_fd[VIRTIO_NET_TXQ], NULL);
			if (n->act.needs_reset)
				n->act.needs_reset(n->act.ctx);
		}
		tap_watch(n);

		nev = epoll_wait(n->epoll_fd, ev, 4, work ? 0 : -1);
		if (nev < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		for (int i = 0; i < nev; i++) {
			switch (ev[i].data.u32) {
			case EV_STOP:
				return NULL;
			case EV_RX_KICK:
				drain_eventfd(n->act.kick_fd[VIRTIO_NET_RXQ]);
				break;
			case EV_TX_KICK:
				drain_eventfd(n->act.kick_fd[VIRTIO_NET_TXQ]);
				break;
			case EV_TAP:
				if (ev[i].events & EPOLLERR)
					n->tap_dead = true; /* detached from its interface */
				break;
			}
			work = true;
		}
	}
}

/* ---- Device ops ---- */

uint64_t virtio_net_offload_features(unsigned int tun)
{
	uint64_t f;

	if (!(tun & TUN_F_CSUM))
		return 0;
	f = F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_GUEST_CSUM);
	if (tun & TUN_F_TSO4)
		f |= F(VIRTIO_NET_F_HOST_TSO4) | F(VIRTIO_NET_F_GUEST_TSO4);
	if (tun & TUN_F_TSO6)
		f |= F(VIRTIO_NET_F_HOST_TSO6) | F(VIRTIO_NET_F_GUEST_TSO6);
	if ((tun & TUN_F_TSO_ECN) && (tun & (TUN_F_TSO4 | TUN_F_TSO6)))
		f |= F(VIRTIO_NET_F_HOST_ECN) | F(VIRTIO_NET_F_GUEST_ECN);
	if (tun & TUN_F_UFO)
		f |= F(VIRTIO_NET_F_HOST_UFO) | F(VIRTIO_NET_F_GUEST_UFO);
	return f;
}

/* TUN_F_* for the receive offloads the guest negotiated (what the tap may hand us). */
static unsigned long guest_tun_offloads(const struct virtio_net *n)
{
	unsigned long t = 0;

	if (!(n->neg & F(VIRTIO_NET_F_GUEST_CSUM)))
		return 0;
	t = TUN_F_CSUM;
	if (n->neg & F(VIRTIO_NET_F_GUEST_TSO4))
		t |= TUN_F_TSO4;
	if (n->neg & F(VIRTIO_NET_F_GUEST_TSO6))
		t |= TUN_F_TSO6;
	if ((n->neg & F(VIRTIO_NET_F_GUEST_ECN)) && (t & (TUN_F_TSO4 | TUN_F_TSO6)))
		t |= TUN_F_TSO_ECN;
	if (n->neg & F(VIRTIO_NET_F_GUEST_UFO))
		t |= TUN_F_UFO;
	return t & n->info.offloads;
}

static void set_tap_offloads(struct virtio_net *n, unsigned long t)
{
	if (n->info.no_ioctl || !n->info.vnet_hdr)
		return;
	/* If refused, run without: rx_hdr_ok() drops what the guest could not take. */
	if (ioctl(n->tap_fd, TUNSETOFFLOAD, t) < 0 && t)
		ioctl(n->tap_fd, TUNSETOFFLOAD, 0ul);
}

static uint64_t net_features(void *dev)
{
	struct virtio_net *n = dev;

	return n->features;
}

static void net_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	struct virtio_net *n = dev;

	if (off <= sizeof(n->config) && len <= sizeof(n->config) - off)
		memcpy(data, n->config + off, len);
	else
		memset(data, 0, len);
}

static void net_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
	/* Read-only with VERSION_1: the MAC is set by the device. */
}

static int net_activate(void *dev, const struct virtio_activation *act)
{
	struct virtio_net *n = dev;
	struct epoll_event ev = {.events = EPOLLIN};
	sigset_t all, old;
	int ret;

	if (n->active)
		return -EBUSY;
	if (act->nqueues < 2 || !act->queues[VIRTIO_NET_RXQ] || !act->queues[VIRTIO_NET_TXQ] ||
	    act->kick_fd[VIRTIO_NET_RXQ] < 0 || act->kick_fd[VIRTIO_NET_TXQ] < 0)
		return -EINVAL;
	n->act = *act;
	n->rxq = act->queues[VIRTIO_NET_RXQ];
	n->txq = act->queues[VIRTIO_NET_TXQ];
	n->neg = act->features & n->features;
	n->mrg = n->neg & F(VIRTIO_NET_F_MRG_RXBUF);
	n->broken = n->tap_dead = n->rx_pushed = n->tx_pushed = n->tx_blocked = false;
	n->rx_notify = true; /* a fresh used ring asks for notifications */
	n->tap_events = 0;
	rx_stash_clear(n);
	set_tap_offloads(n, guest_tun_offloads(n));

	n->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	n->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (n->stop_fd < 0 || n->epoll_fd < 0)
		goto fail_errno;
	ev.data.u32 = EV_RX_KICK;
	if (epoll_ctl(n->epoll_fd, EPOLL_CTL_ADD, act->kick_fd[VIRTIO_NET_RXQ], &ev) < 0)
		goto fail_errno;
	ev.data.u32 = EV_TX_KICK;
	if (epoll_ctl(n->epoll_fd, EPOLL_CTL_ADD, act->kick_fd[VIRTIO_NET_TXQ], &ev) < 0)
		goto fail_errno;
	ev.data.u32 = EV_STOP;
	if (epoll_ctl(n->epoll_fd, EPOLL_CTL_ADD, n->stop_fd, &ev) < 0)
		goto fail_errno;

	/* The worker takes no signals: they belong to the vCPU and main threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	ret = pthread_create(&n->thread, NULL, net_worker, n);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		ret = -ret;
		goto fail;
	}
	n->active = true;
	return 0;

fail_errno:
	ret = -errno;
fail:
	if (n->epoll_fd >= 0)
		close(n->epoll_fd);
	if (n->stop_fd >= 0)
		close(n->stop_fd);
	n->epoll_fd = n->stop_fd = -1;
	set_tap_offloads(n, 0);
	return ret;
}

static void net_reset(void *dev)
{
	struct virtio_net *n = dev;
	uint64_t one = 1;
	ssize_t wr;

	if (!n->active)
		return;
	do {
		wr = write(n->stop_fd, &one, sizeof(one));
	} while (wr < 0 && errno == EINTR);
	pthread_join(n->thread, NULL);
	close(n->epoll_fd);
	close(n->stop_fd);
	n->epoll_fd = n->stop_fd = -1;
	/* Chains held (stash, a blocked frame) belong to the queue state the reset discards. */
	rx_stash_clear(n);
	n->tx_blocked = false;
	set_tap_offloads(n, 0);
	memset(&n->act, 0, sizeof(n->act));
	n->rxq = n->txq = NULL;
	n->active = false;
}

static void net_destroy(void *dev)
{
	struct virtio_net *n = dev;

	if (!n)
		return;
	net_reset(n);
	close(n->tap_fd);
	free(n->scratch);
	free(n);
}

/* For the sandbox: the tap (the worker's eventfds are made by activate()). */
static int net_keep_fds(void *dev, int *fds, int max)
{
	struct virtio_net *n = dev;

	if (max >= 1)
		fds[0] = n->tap_fd;
	return 1;
}

static const struct virtio_device_ops virtio_net_ops = {
	.name = "virtio-net",
	.device_id = VIRTIO_ID_NET,
	.nqueues = 2,
	.queue_max = VIRTIO_NET_QUEUE_MAX,
	.config_size = VIRTIO_NET_CONFIG_SIZE,
	.features = net_features,
	.config_read = net_config_read,
	.config_write = net_config_write,
	.activate = net_activate,
	.reset = net_reset,
	.destroy = net_destroy,
	.keep_fds = net_keep_fds,
};

int virtio_net_create(int tap_fd, const uint8_t mac[6], const struct tap_info *info,
		      struct virtio_device *out, struct vmm_err *err)
{
	struct virtio_net *n;
	int fl, ret;

	if (tap_fd < 0)
		return err_set(err, EBADF, "virtio-net: no tap fd");
	if (!mac || !info) {
		ret = err_set(err, EINVAL, "virtio-net: no MAC or tap info");
		goto fail_fd;
	}
	ret = tap_check_mac(mac, err);
	if (ret < 0)
		goto fail_fd;
	/* tap_enable_offloads() did this; repeat it so that no tap frames headers of another size.
	 */
	if (info->vnet_hdr && !info->no_ioctl && ioctl(tap_fd, TUNSETVNETHDRSZ, &(int){HDR}) < 0) {
		int e = errno;

		ret = err_set(err, e, "virtio-net: tap %s: cannot set the header size to %d: %s",
			      info->ifname, HDR, strerror(e));
		goto fail_fd;
	}
	fl = fcntl(tap_fd, F_GETFL);
	if (fl < 0 || fcntl(tap_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		int e = errno;

		ret = err_set(err, e, "virtio-net: tap fd %d: %s", tap_fd, strerror(e));
		goto fail_fd;
	}
	n = calloc(1, sizeof(*n));
	if (n)
		n->scratch = malloc(SCRATCH_SIZE);
	if (!n || !n->scratch) {
		free(n);
		ret = err_set(err, ENOMEM, "virtio-net: out of memory");
		goto fail_fd;
	}
	n->tap_fd = tap_fd;
	n->info = *info;
	if (!n->info.vnet_hdr)
		n->info.offloads = 0;
	n->stop_fd = n->epoll_fd = -1;
	n->features = F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_STATUS) | F(VIRTIO_NET_F_MRG_RXBUF) |
		      virtio_net_offload_features(n->info.offloads);
	memcpy(n->config + VIRTIO_NET_CFG_MAC, mac, 6);
	put_le16(n->config + VIRTIO_NET_CFG_STATUS, VIRTIO_NET_S_LINK_UP);
	out->ops = &virtio_net_ops;
	out->dev = n;
	return 0;

fail_fd:
	close(tap_fd);
	return ret;
}

void virtio_net_get_stats(const struct virtio_device *d, struct virtio_net_stats *s)
{
	const struct virtio_net *n = d->dev;

	s->tx_frames = __atomic_load_n(&n->stats.tx_frames, __ATOMIC_RELAXED);
	s->tx_dropped = __atomic_load_n(&n->stats.tx_dropped, __ATOMIC_RELAXED);
	s->rx_frames = __atomic_load_n(&n->stats.rx_frames, __ATOMIC_RELAXED);
	s->rx_dropped = __atomic_load_n(&n->stats.rx_dropped, __ATOMIC_RELAXED);
}
