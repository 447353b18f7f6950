/*
 * Ring 3: virtio-net (receiveq 0, transmitq 1) with a minimal IPv4 stack:
 * ARP (answer, resolve), ICMP echo (answer, ping), UDP (send, echo), a
 * bulk transfer over UDP and two rate modes, UDP as fast as the rings go
 * (see README.md, "virtio-net"). Built as
 * guest-user-net.o, linked into the user pages; polling (or MSI-X waits
 * through ring 0), nothing called outside ring 3.
 *
 * Buffers: NIC d owns the data buffer d->netbuf (1 MiB): receive buffer i
 * at i * NET_BUF_STRIDE, transmit buffer i at NET_TX_OFF + i *
 * NET_BUF_STRIDE. Every buffer is used from offset BUF_PAD, so that UDP
 * payloads (virtio_net_hdr 12 + Ethernet 14 + IPv4 20 + UDP 8 = 54 bytes
 * in) are 8-byte aligned. One descriptor per buffer: header and frame
 * together (VERSION_1 implies ANY_LAYOUT).
 */
#include "uvirtio.h"

typedef u16 u16u __attribute__((may_alias, aligned(1)));
typedef u32 u32u __attribute__((may_alias, aligned(1)));
typedef u64 u64u __attribute__((may_alias, aligned(1)));

#define BUF_PAD	      2
#define HDR	      VIRTIO_NET_HDR_LEN
#define ETH_HLEN      14
#define ETH_P_IP      0x0800
#define ETH_P_ARP     0x0806
#define IP_HLEN	      20
#define UDP_HLEN      8
#define FRAME_MAX     1514
#define FRAME_MIN     60
#define IP_PROTO_ICMP 1
#define IP_PROTO_UDP  17

_Static_assert(NET_UDP_MAX == FRAME_MAX - ETH_HLEN - IP_HLEN - UDP_HLEN, "UDP payload bound");

#define PING_ID	  0x4756 /* "GV" */
#define PING_DATA 56
#define UDP_BYTES 512 /* guest.net.udp datagrams: one pattern sector each */

/* Bulk transfer (netpeer.py implements the other end). */
#define MAGIC(a, b, c, d) ((u32)(a) | (u32)(b) << 8 | (u32)(c) << 16 | (u32)(d) << 24)
#define BULK_DATA	  MAGIC('B', 'D', 'A', 'T') /* seq, CHUNK bytes */
#define BULK_START	  MAGIC('B', 'S', 'T', 'A') /* total chunks */
#define BULK_END	  MAGIC('B', 'E', 'N', 'D') /* total chunks */
#define BULK_ACK	  MAGIC('B', 'A', 'C', 'K')
#define BULK_CHUNK	  1024
#define BULK_WINDOW	  256 /* sender: chunks beyond the receiver's high-water mark */
#define BULK_REORDER	  512 /* receiver: chunks held out of order (BULK_REORDER KiB) */
#define BULK_ACK_EVERY	  32
#define BULK_ACK_LEN	  40

#define ARP_SLOTS 8

struct nicst {
	u32 arp_ip[ARP_SLOTS];
	u8 arp_mac[ARP_SLOTS][6];
	u32 arp_next;
	u16 txfree[VQ_MAX_SIZE];
	u16 ntxfree;
	u16 ip_id;
	u8 started;
};

static struct nicst nst[VIRTIO_MAX_DEVS];
struct vnetstats vnetstats[VIRTIO_MAX_DEVS];

/* Frames that arrive in several buffers (MRG_RXBUF) are put together here. */
static u8 merged[BUF_PAD + HDR + FRAME_MAX + 64] __attribute__((aligned(8)));

/* What the running job wants from UDP (and ICMP echo replies). */
typedef void (*udp_fn)(struct vdev *d, const u8 *smac, u32 sip, u16 sport, u16 dport,
		       const u8 *data, u32 n);
static struct {
	struct vdev *d;
	udp_fn udp;
	u32 peer;
	u16 port;
	u16 ping_seq; /* echo reply awaited */
	u8 ping_got;
	u64 count;   /* datagrams taken */
	u64 last_rx; /* TSC of the last datagram taken */
} cur;

static const u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* ---- small helpers ---- */

static inline u16 get_be16(const u8 *p)
{
	return (u16)(p[0] << 8 | p[1]);
}

static inline void put_be16(u8 *p, u16 v)
{
	p[0] = (u8)(v >> 8);
	p[1] = (u8)v;
}

static inline u32 get32(const u8 *p)
{
	return *(const u32u *)p;
}

static inline void put32(u8 *p, u32 v)
{
	*(u32u *)p = v;
}

static void copy(u8 *d, const u8 *s, u32 n)
{
	for (; n >= 8; n -= 8, d += 8, s += 8)
		*(u64u *)d = *(const u64u *)s;
	while (n--)
		*d++ = *s++;
}

static void zero(u8 *d, u32 n)
{
	while (n--)
		*d++ = 0;
}

static bool mac_eq(const u8 *a, const u8 *b)
{
	u32 i;

	for (i = 0; i < 6; i++) {
		if (a[i] != b[i])
			return false;
	}
	return true;
}

static inline u64 now(void)
{
	return rdtsc();
}

static inline bool passed(u64 deadline)
{
	return (long)(rdtsc() - deadline) >= 0;
}

/* One's complement sum in host order (RFC 1071: byte order independent). */
static u64 csum_partial(const u8 *p, u32 n, u64 sum)
{
	for (; n >= 4; n -= 4, p += 4)
		sum += *(const u32u *)p;
	if (n >= 2) {
		sum += *(const u16u *)p;
		p += 2;
		n -= 2;
	}
	if (n)
		sum += *p;
	return sum;
}

static u16 csum_fold(u64 sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (u16)sum;
}

/* The checksum field value (store with a host-order u16 write); 0 means the data checks. */
static u16 csum_final(u64 sum)
{
	return (u16)~csum_fold(sum);
}

static u64 pseudo_sum(u32 src, u32 dst, u8 proto, u16 len)
{
	u8 ph[12];

	put32(ph, src);
	put32(ph + 4, dst);
	ph[8] = 0;
	ph[9] = proto;
	put_be16(ph + 10, len);
	return csum_partial(ph, 12, 0);
}

/* ---- CRC-32 (zlib's), slicing by 8 ---- */

static u32 crc_tab[8][256];
static bool crc_ready;

static void crc_init(void)
{
	u32 i, k, c;

	if (crc_ready)
		return;
	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320 ^ (c >> 1) : c >> 1;
		crc_tab[0][i] = c;
	}
	for (i = 0; i < 256; i++) {
		for (k = 1; k < 8; k++)
			crc_tab[k][i] =
				(crc_tab[k - 1][i] >> 8) ^ crc_tab[0][crc_tab[k - 1][i] & 0xff];
	}
	crc_ready = true;
}

/* crc: the running value (start with ~0, finish with ~). */
static u32 crc_update(u32 crc, const u8 *p, u64 n)
{
	u32 a, b;

	for (; n >= 8; n -= 8, p += 8) {
		a = crc ^ get32(p);
		b = get32(p + 4);
		crc = crc_tab[7][a & 0xff] ^ crc_tab[6][(a >> 8) & 0xff] ^
		      crc_tab[5][(a >> 16) & 0xff] ^ crc_tab[4][a >> 24] ^ crc_tab[3][b & 0xff] ^
		      crc_tab[2][(b >> 8) & 0xff] ^ crc_tab[1][(b >> 16) & 0xff] ^
		      crc_tab[0][b >> 24];
	}
	while (n--)
		crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

/* ---- buffers and queues ---- */

static inline u8 *rxbuf(struct vdev *d, u16 s)
{
	return (u8 *)(d->netbuf + (u64)s * NET_BUF_STRIDE + BUF_PAD);
}

static inline u8 *txbuf(struct vdev *d, u16 s)
{
	return (u8 *)(d->netbuf + NET_TX_OFF + (u64)s * NET_BUF_STRIDE + BUF_PAD);
}

static inline struct nicst *st(struct vdev *d)
{
	return &nst[d - vdevs];
}

static inline struct vnetstats *stats(struct vdev *d)
{
	return &vnetstats[d - vdevs];
}

static inline bool nic_up(struct vdev *d)
{
	return d->type == VT_NET && !d->broken && st(d)->started;
}

static void rx_post(struct vdev *d, u16 s)
{
	struct vdesc t;

	t.addr = (u64)rxbuf(d, s);
	t.len = d->rxbuf;
	t.flags = VRING_DESC_F_WRITE;
	t.next = 0;
	vq_submit(&d->vq, s, &t, 1); /* one descriptor per buffer: always fits */
}

void net_start(struct vdev *d)
{
	struct nicst *n = st(d);
	u16 s;

	for (s = 0; s < d->vq.size; s++)
		rx_post(d, s);
	vq_kick(&d->vq);
	for (s = 0; s < d->vq1.size; s++)
		n->txfree[s] = s;
	n->ntxfree = d->vq1.size;
	n->started = 1;
}

static void dev_error(struct vdev *d, u32 err)
{
	if (!vjob.err)
		vjob.err = err;
	d->broken = 1;
}

/* Take back transmitted buffers. -1: bad used ring. */
static int tx_reclaim(struct vdev *d)
{
	struct nicst *n = st(d);
	u16 s;
	u32 len;
	int r;

	while ((r = vq_get(&d->vq1, &s, &len)) > 0) {
		if (s >= d->vq1.size || n->ntxfree >= d->vq1.size) {
			dev_error(d, VE_BAD_ID);
			return -1;
		}
		n->txfree[n->ntxfree++] = s;
	}
	if (r < 0)
		d->broken = 1;
	return r;
}

static void net_wait(u64 deadline, struct vdev *txd);

/* A free transmit buffer (its frame area); NULL on error (vjob.err set). */
static u8 *tx_alloc(struct vdev *d, u16 *s)
{
	struct nicst *n = st(d);
	u64 start;

	if (d->broken)
		return NULL;
	if (!n->ntxfree) {
		if (tx_reclaim(d) < 0)
			return NULL;
		start = now();
		vq_kick(&d->vq1);
		while (!n->ntxfree) {
			net_wait(start + vjob.tsc_timeout, d);
			if (tx_reclaim(d) < 0)
				return NULL;
			if (!n->ntxfree && passed(start + vjob.tsc_timeout)) {
				dev_error(d, rd8(d->common + VCC_STATUS) & VIRTIO_S_NEEDS_RESET
						     ? VE_NEEDS_RESET
						     : VE_TIMEOUT);
				return NULL;
			}
		}
	}
	*s = n->txfree[--n->ntxfree];
	return txbuf(d, *s) + HDR;
}

/*
 * Wait until the device has used every transmit buffer (sent the frames):
 * what a job sent last must not be lost when the guest powers off next.
 */
static void tx_drain(struct vdev *d)
{
	struct nicst *n = st(d);
	u64 start = now();

	vq_kick(&d->vq1);
	while (!d->broken && n->ntxfree < d->vq1.size) {
		if (tx_reclaim(d) < 0 || n->ntxfree == d->vq1.size)
			break;
		if (passed(start + vjob.tsc_timeout)) {
			dev_error(d, VE_TIMEOUT);
			break;
		}
		net_wait(start + vjob.tsc_timeout, d);
	}
}

/* Queue the frame in buffer s (len bytes); csum_start != 0: the device completes a checksum. */
static void tx_send(struct vdev *d, u16 s, u32 len, u16 csum_start, u16 csum_off, bool kick)
{
	u8 *b = txbuf(d, s);
	struct vdesc t;

	if (len < FRAME_MIN) {
		zero(b + HDR + len, FRAME_MIN - len);
		len = FRAME_MIN;
	}
	b[0] = csum_start ? VIRTIO_NET_HDR_F_NEEDS_CSUM : 0;
	b[1] = 0; /* VIRTIO_NET_HDR_GSO_NONE */
	*(u16u *)(b + 2) = 0;
	*(u16u *)(b + 4) = 0;
	*(u16u *)(b + 6) = csum_start;
	*(u16u *)(b + 8) = csum_off;
	*(u16u *)(b + 10) = 0;
	t.addr = (u64)b;
	t.len = HDR + len;
	t.flags = 0;
	t.next = 0;
	vq_submit(&d->vq1, s, &t, 1); /* as many descriptors as buffers: always fits */
	stats(d)->tx_frames++;
	if (kick)
		vq_kick(&d->vq1);
}

static u8 *eth_build(struct vdev *d, u8 *f, const u8 *dst, u16 type)
{
	copy(f, dst, 6);
	copy(f + 6, d->mac, 6);
	put_be16(f + 12, type);
	return f + ETH_HLEN;
}

/* IPv4 header without options; returns the payload. */
static u8 *ip_build(struct vdev *d, u8 *ip, u32 dst, u8 proto, u32 plen)
{
	ip[0] = 0x45;
	ip[1] = 0;
	put_be16(ip + 2, (u16)(IP_HLEN + plen));
	put_be16(ip + 4, st(d)->ip_id++);
	put_be16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = proto;
	*(u16u *)(ip + 10) = 0;
	put32(ip + 12, d->ip);
	put32(ip + 16, dst);
	*(u16u *)(ip + 10) = csum_final(csum_partial(ip, IP_HLEN, 0));
	return ip + IP_HLEN;
}

/* A UDP datagram of n bytes: the payload to fill (8-byte aligned), then udp_finish(). */
static u8 *udp_begin(struct vdev *d, u16 *s)
{
	u8 *f = tx_alloc(d, s);

	return f ? f + ETH_HLEN + IP_HLEN + UDP_HLEN : NULL;
}

/* udp_finish() flags */
#define TX_KICK	   1 /* notify the device (if it wants to know) */
#define TX_NO_CSUM 2 /* UDP checksum 0 (none), with or without CSUM */

static void udp_finish(struct vdev *d, u16 s, const u8 *dmac, u32 dip, u16 sport, u16 dport, u32 n,
		       u32 how)
{
	u8 *f = txbuf(d, s) + HDR, *ip = eth_build(d, f, dmac, ETH_P_IP), *u;
	u16 ulen = (u16)(UDP_HLEN + n), c;

	u = ip_build(d, ip, dip, IP_PROTO_UDP, ulen);
	put_be16(u, sport);
	put_be16(u + 2, dport);
	put_be16(u + 4, ulen);
	*(u16u *)(u + 6) = 0;
	if (how & TX_NO_CSUM) {
		tx_send(d, s, ETH_HLEN + IP_HLEN + ulen, 0, 0, how & TX_KICK);
		return;
	}
	if (d->csum & 1) { /* VIRTIO_NET_F_CSUM */
		/* the device sums from csum_start on, the field holds the pseudo header's sum */
		*(u16u *)(u + 6) = csum_fold(pseudo_sum(d->ip, dip, IP_PROTO_UDP, ulen));
		tx_send(d, s, ETH_HLEN + IP_HLEN + ulen, ETH_HLEN + IP_HLEN, 6, how & TX_KICK);
		return;
	}
	c = csum_final(csum_partial(u, ulen, pseudo_sum(d->ip, dip, IP_PROTO_UDP, ulen)));
	*(u16u *)(u + 6) = c ? c : 0xffff;
	tx_send(d, s, ETH_HLEN + IP_HLEN + ulen, 0, 0, how & TX_KICK);
}

static int udp_send(struct vdev *d, const u8 *dmac, u32 dip, u16 sport, u16 dport, const u8 *data,
		    u32 n)
{
	u16 s;
	u8 *p = udp_begin(d, &s);

	if (!p)
		return -1;
	copy(p, data, n);
	udp_finish(d, s, dmac, dip, sport, dport, n, TX_KICK);
	return 0;
}

/* ---- ARP ---- */

static bool arp_lookup(struct vdev *d, u32 ip, u8 *mac)
{
	struct nicst *n = st(d);
	u32 i;

	for (i = 0; i < ARP_SLOTS; i++) {
		if (n->arp_ip[i] == ip && ip) {
			if (mac)
				copy(mac, n->arp_mac[i], 6);
			return true;
		}
	}
	return false;
}

static void arp_learn(struct vdev *d, u32 ip, const u8 *mac)
{
	struct nicst *n = st(d);
	u32 i;

	for (i = 0; i < ARP_SLOTS; i++) {
		if (n->arp_ip[i] == ip) {
			copy(n->arp_mac[i], mac, 6);
			return;
		}
	}
	i = n->arp_next++ % ARP_SLOTS;
	n->arp_ip[i] = ip;
	copy(n->arp_mac[i], mac, 6);
}

static int arp_send(struct vdev *d, u16 op, const u8 *dmac, const u8 *tha, u32 tpa)
{
	u16 s;
	u8 *f = tx_alloc(d, &s), *a;

	if (!f)
		return -1;
	a = eth_build(d, f, dmac, ETH_P_ARP);
	put_be16(a, 1);
	put_be16(a + 2, ETH_P_IP);
	a[4] = 6;
	a[5] = 4;
	put_be16(a + 6, op);
	copy(a + 8, d->mac, 6);
	put32(a + 14, d->ip);
	copy(a + 18, tha, 6);
	put32(a + 24, tpa);
	tx_send(d, s, ETH_HLEN + 28, 0, 0, true);
	return 0;
}

static void arp_input(struct vdev *d, const u8 *a, u32 n)
{
	u32 spa, tpa;
	u16 op;

	if (n < 28 || get_be16(a) != 1 || get_be16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4 ||
	    !d->ip) {
		stats(d)->rx_dropped++;
		return;
	}
	op = get_be16(a + 6);
	spa = get32(a + 14);
	tpa = get32(a + 24);
	if (tpa != d->ip) {
		stats(d)->rx_dropped++;
		return;
	}
	if (spa)
		arp_learn(d, spa, a + 8);
	if (op == 1 && arp_send(d, 2, a + 8, a + 8, spa) == 0)
		stats(d)->arp_replies++;
}

/* ---- IPv4 input ---- */

static void icmp_input(struct vdev *d, const u8 *f, const u8 *ip, const u8 *p, u32 n)
{
	u32 src = get32(ip + 12), i;
	u16 s;
	u8 *r, *rp;

	if (n < 8 || csum_final(csum_partial(p, n, 0))) {
		stats(d)->bad_csum += n >= 8;
		stats(d)->rx_dropped++;
		return;
	}
	if (p[0] == 8 && p[1] == 0) { /* echo request: answer */
		if (n > FRAME_MAX - ETH_HLEN - IP_HLEN) {
			stats(d)->rx_dropped++;
			return;
		}
		r = tx_alloc(d, &s);
		if (!r)
			return;
		rp = ip_build(d, eth_build(d, r, f + 6, ETH_P_IP), src, IP_PROTO_ICMP, n);
		copy(rp, p, n);
		rp[0] = 0;
		*(u16u *)(rp + 2) = 0;
		*(u16u *)(rp + 2) = csum_final(csum_partial(rp, n, 0));
		tx_send(d, s, ETH_HLEN + IP_HLEN + n, 0, 0, true);
		stats(d)->icmp_replies++;
		return;
	}
	if (p[0] == 0 && p[1] == 0 && cur.d == d && cur.ping_seq && src == cur.peer &&
	    get_be16(p + 4) == PING_ID && get_be16(p + 6) == cur.ping_seq && n == 8 + PING_DATA) {
		for (i = 0; i < PING_DATA && p[8 + i] == (u8)(i + cur.ping_seq); i++)
			;
		if (i == PING_DATA)
			cur.ping_got = 1;
		return;
	}
	stats(d)->rx_dropped++;
}

static void udp_input(struct vdev *d, const u8 *f, const u8 *ip, const u8 *u, u32 n, u8 hflags)
{
	u32 src = get32(ip + 12), ulen;

	if (n < UDP_HLEN || (ulen = get_be16(u + 4)) < UDP_HLEN || ulen > n) {
		stats(d)->rx_dropped++;
		return;
	}
	/* a partial checksum (NEEDS_CSUM) or one the device checked (DATA_VALID) is not ours */
	if (*(const u16u *)(u + 6) &&
	    !(hflags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)) &&
	    csum_final(csum_partial(u, ulen, pseudo_sum(src, d->ip, IP_PROTO_UDP, (u16)ulen)))) {
		stats(d)->bad_csum++;
		stats(d)->rx_dropped++;
		return;
	}
	if (cur.d != d || !cur.udp) {
		stats(d)->rx_dropped++;
		return;
	}
	cur.udp(d, f + 6, src, get_be16(u), get_be16(u + 2), u + UDP_HLEN, ulen - UDP_HLEN);
}

static void ip_input(struct vdev *d, const u8 *f, const u8 *ip, u32 n, u8 hflags)
{
	u32 ihl, tot;

	if (n < IP_HLEN || (ip[0] >> 4) != 4 || (ihl = (ip[0] & 15) * 4u) < IP_HLEN ||
	    (tot = get_be16(ip + 2)) < ihl || tot > n || !d->ip) {
		stats(d)->rx_dropped++;
		return;
	}
	if (csum_final(csum_partial(ip, ihl, 0))) {
		stats(d)->bad_csum++;
		stats(d)->rx_dropped++;
		return;
	}
	if ((get_be16(ip + 6) & 0x3fff) || get32(ip + 16) != d->ip) { /* fragments, not ours */
		stats(d)->rx_dropped++;
		return;
	}
	if (ip[9] == IP_PROTO_ICMP)
		icmp_input(d, f, ip, ip + ihl, tot - ihl);
	else if (ip[9] == IP_PROTO_UDP)
		udp_input(d, f, ip, ip + ihl, tot - ihl, hflags);
	else
		stats(d)->rx_dropped++;
}

static void net_input(struct vdev *d, const u8 *f, u32 n, u8 hflags)
{
	u16 type;

	stats(d)->rx_frames++;
	if (n < ETH_HLEN || (!mac_eq(f, d->mac) && !mac_eq(f, bcast))) {
		stats(d)->rx_dropped++;
		return;
	}
	type = get_be16(f + 12);
	if (type == ETH_P_ARP)
		arp_input(d, f + ETH_HLEN, n - ETH_HLEN);
	else if (type == ETH_P_IP)
		ip_input(d, f, f + ETH_HLEN, n - ETH_HLEN, hflags);
	else
		stats(d)->rx_dropped++;
}

/* The next used receive buffer of a merged frame; it is normally there already. */
static int rx_next(struct vdev *d, u16 *s, u32 *len)
{
	u64 start = now();
	int r;

	while ((r = vq_get(&d->vq, s, len)) == 0) {
		if (passed(start + vjob.tsc_timeout)) {
			dev_error(d, VE_TIMEOUT);
			return -1;
		}
		cpu_relax();
	}
	if (r < 0)
		d->broken = 1;
	return r;
}

/* Take what the receive queue has; -1 on a device error. */
static int rx_poll(struct vdev *d)
{
	struct vq *q = &d->vq;
	u32 len, flen, nb, k;
	u16 s;
	u8 *b, flags;
	int r, n = 0;

	while ((r = vq_get(q, &s, &len)) > 0) {
		b = rxbuf(d, s);
		if (s >= q->size || len < HDR || len > d->rxbuf) {
			dev_error(d, VE_NET_RXBUF);
			return -1;
		}
		flags = b[0];
		nb = d->mrg ? *(const u16u *)(b + 10) : 1;
		if (nb == 1) {
			net_input(d, b + HDR, len - HDR, flags);
			rx_post(d, s);
		} else {
			if (nb == 0 || nb > q->size) {
				dev_error(d, VE_NET_RXBUF);
				return -1;
			}
			flen = len - HDR;
			if (flen <= FRAME_MAX)
				copy(merged + BUF_PAD, b + HDR, flen);
			rx_post(d, s);
			for (k = 1; k < nb; k++) {
				if (rx_next(d, &s, &len) < 0)
					return -1;
				if (s >= q->size || len > d->rxbuf) {
					dev_error(d, VE_NET_RXBUF);
					return -1;
				}
				if (flen <= FRAME_MAX && flen + len <= FRAME_MAX)
					copy(merged + BUF_PAD + flen, rxbuf(d, s), len);
				flen += len;
				rx_post(d, s);
			}
			if (flen <= FRAME_MAX)
				net_input(d, merged + BUF_PAD, flen, flags);
			else
				stats(d)->rx_dropped++;
		}
		n++;
	}
	if (r < 0) {
		d->broken = 1;
		return -1;
	}
	if (n)
		vq_kick(q);
	return n;
}

/* Service every NIC once: received frames, transmit completions. */
static int poll_all(void)
{
	u32 i;
	int n = 0, r;

	for (i = 0; i < vjob.ndevs; i++) {
		struct vdev *d = &vdevs[i];

		if (!nic_up(d))
			continue;
		if ((r = rx_poll(d)) < 0 || tx_reclaim(d) < 0)
			return -1;
		n += r;
	}
	return n;
}

bool net_any(void)
{
	u32 i;

	for (i = 0; i < vjob.ndevs; i++) {
		if (nic_up(&vdevs[i]) && vdevs[i].ip)
			return true;
	}
	return false;
}

/*
 * Nothing to do: in interrupt mode (or when sleeping is asked for) arm the
 * receive queues (and txd's transmit queue), re-check and wait in ring 0
 * for any device interrupt or the deadline; else just pause.
 */
static void net_wait_mode(u64 deadline, struct vdev *txd, bool sleep)
{
	u32 i, seen = irq_total;
	bool pending = false;

	if (!sleep) {
		cpu_relax();
		return;
	}
	for (i = 0; i < vjob.ndevs; i++) {
		struct vdev *d = &vdevs[i];

		if (nic_up(d) && !d->vq.vector) {
			cpu_relax(); /* no MSI-X: nothing would wake us */
			return;
		}
	}
	for (i = 0; i < vjob.ndevs; i++) {
		if (nic_up(&vdevs[i]))
			vq_arm(&vdevs[i].vq);
	}
	if (txd)
		vq_arm(&txd->vq1);
	mb(); /* the rings' event fields before their used indexes */
	for (i = 0; i < vjob.ndevs; i++) {
		if (nic_up(&vdevs[i]))
			pending |= vq_pending(&vdevs[i].vq);
	}
	if (txd)
		pending |= vq_pending(&txd->vq1);
	if (!pending && !passed(deadline))
		usys_wait_any(seen, deadline);
	for (i = 0; i < vjob.ndevs; i++) {
		if (nic_up(&vdevs[i]))
			vq_disarm(&vdevs[i].vq);
	}
	if (txd)
		vq_disarm(&txd->vq1);
}

static bool sleep_mode;

static void net_wait(u64 deadline, struct vdev *txd)
{
	net_wait_mode(deadline, txd, sleep_mode);
}

int net_service(u64 deadline, bool sleep)
{
	int r = poll_all();

	if (r != 0)
		return r;
	net_wait_mode(deadline, NULL, sleep);
	return poll_all();
}

/* Poll until cond() or the deadline; -1 on a device error. */
static int poll_until(u64 deadline, bool (*cond)(void))
{
	while (!cond()) {
		if (poll_all() < 0)
			return -1;
		if (cond() || passed(deadline))
			break;
		net_wait(deadline, NULL);
	}
	return 0;
}

/* ---- ARP resolution ---- */

static u32 arp_want_ip;
static struct vdev *arp_want_dev;

static bool arp_known(void)
{
	return arp_lookup(arp_want_dev, arp_want_ip, NULL);
}

/* 1: resolved into mac, 0: no answer (5 tries, 1 s apart), -1: error */
static int arp_resolve(struct vdev *d, u32 ip, u8 *mac)
{
	u32 try;

	arp_want_ip = ip;
	arp_want_dev = d;
	for (try = 0; try < 5 && !arp_known(); try++) {
		if (arp_send(d, 1, bcast, (const u8 *)"\0\0\0\0\0\0", ip) < 0)
			return -1;
		if (poll_until(now() + 1000 * vjob.tsc_ms, arp_known) < 0)
			return -1;
	}
	return arp_lookup(d, ip, mac) ? 1 : 0;
}

/* ---- guest.net.ping ---- */

static bool ping_answered(void)
{
	return cur.ping_got;
}

/* arg: peer, count; r[0] sent, r[1] received, r[2] ARP answered */
static void job_ping(struct vdev *d)
{
	u64 count = vjob.arg[1], k;
	u32 peer = (u32)vjob.arg[0], i;
	u8 mac[6], *f, *p;
	u16 s, seq;
	int r;

	cur.peer = peer;
	r = arp_resolve(d, peer, mac);
	if (r <= 0)
		return;
	vjob.r[2] = 1;
	for (k = 0; k < count; k++) {
		seq = (u16)(k + 1);
		f = tx_alloc(d, &s);
		if (!f)
			return;
		p = ip_build(d, eth_build(d, f, mac, ETH_P_IP), peer, IP_PROTO_ICMP, 8 + PING_DATA);
		p[0] = 8;
		p[1] = 0;
		*(u16u *)(p + 2) = 0;
		put_be16(p + 4, PING_ID);
		put_be16(p + 6, seq);
		for (i = 0; i < PING_DATA; i++)
			p[8 + i] = (u8)(i + seq);
		*(u16u *)(p + 2) = csum_final(csum_partial(p, 8 + PING_DATA, 0));
		cur.ping_seq = seq;
		cur.ping_got = 0;
		tx_send(d, s, ETH_HLEN + IP_HLEN + 8 + PING_DATA, 0, 0, true);
		vjob.r[0]++;
		if (poll_until(now() + 1000 * vjob.tsc_ms, ping_answered) < 0)
			return;
		vjob.r[1] += cur.ping_got;
	}
	cur.ping_seq = 0;
}

/* ---- guest.net.udp ---- */

/* arg: peer, port, count; r[0] sent, r[2] ARP answered */
static void job_udp(struct vdev *d)
{
	u32 peer = (u32)vjob.arg[0];
	u16 port = (u16)vjob.arg[1], s;
	u64 count = vjob.arg[2], k;
	u8 mac[6], *p;

	if (arp_resolve(d, peer, mac) <= 0)
		return;
	vjob.r[2] = 1;
	pat_init(port);
	for (k = 0; k < count; k++) {
		p = udp_begin(d, &s);
		if (!p)
			return;
		pat_fill((u64 *)p, k, 1);
		udp_finish(d, s, mac, peer, port, port, UDP_BYTES, TX_KICK);
		vjob.r[0]++;
		if (poll_all() < 0)
			return;
	}
}

/* ---- guest.net.recv: echo datagrams to a port ---- */

static void recv_udp(struct vdev *d, const u8 *smac, u32 sip, u16 sport, u16 dport, const u8 *data,
		     u32 n)
{
	if (dport != cur.port) {
		stats(d)->rx_dropped++;
		return;
	}
	if (cur.count < vjob.arg[1] && udp_send(d, smac, sip, dport, sport, data, n) == 0)
		cur.count++;
	cur.last_rx = now();
}

static bool recv_done(void)
{
	return cur.count >= vjob.arg[1] || passed(cur.last_rx + vjob.tsc_timeout);
}

/* arg: port, count; r[0] datagrams echoed */
static void job_recv(struct vdev *d)
{
	cur.port = (u16)vjob.arg[0];
	cur.udp = recv_udp;
	cur.last_rx = now();
	while (!recv_done()) {
		if (poll_until(cur.last_rx + vjob.tsc_timeout, recv_done) < 0)
			break;
	}
	vjob.r[0] = cur.count;
}

/* ---- bulk transfer ---- */

static struct {
	u32 total, base, high, acked;
	u32 lost, ooo, dup, crc;
	u64 bytes, t0;
	u8 started, done, peer_known;
	u8 peer_mac[6];
	u32 peer_ip;
	u16 peer_port;
	u8 have[BULK_REORDER / 8];
	/* sender side */
	u32 ack_high, ack_done, ack_lost, ack_crc;
	u64 ack_bytes;
	u8 got_ack;
} bk;

static inline u8 *bk_slot(u32 seq)
{
	return (u8 *)vjob.data + (u64)(seq % BULK_REORDER) * BULK_CHUNK;
}

static inline bool bk_have(u32 seq)
{
	u32 i = seq % BULK_REORDER;

	return bk.have[i / 8] >> (i % 8) & 1;
}

static inline void bk_mark(u32 seq, bool on)
{
	u32 i = seq % BULK_REORDER;

	if (on)
		bk.have[i / 8] |= (u8)(1u << (i % 8));
	else
		bk.have[i / 8] &= (u8) ~(1u << (i % 8));
}

static void bk_send_ack(struct vdev *d)
{
	u8 a[BULK_ACK_LEN];

	if (!bk.peer_known)
		return;
	put32(a, BULK_ACK);
	put32(a + 4, bk.high);
	put32(a + 8, bk.base);
	put32(a + 12, bk.done);
	put32(a + 16, bk.lost);
	put32(a + 20, ~bk.crc);
	*(u64u *)(a + 24) = bk.bytes;
	put32(a + 32, bk.ooo);
	put32(a + 36, bk.dup);
	udp_send(d, bk.peer_mac, bk.peer_ip, cur.port, bk.peer_port, a, BULK_ACK_LEN);
	bk.acked = bk.high;
}

/* Give up on everything still missing below seq (lost), taking what is there. */
static void bk_advance(u32 upto)
{
	while (bk.base < upto) {
		if (bk_have(bk.base)) {
			bk.crc = crc_update(bk.crc, bk_slot(bk.base), BULK_CHUNK);
			bk.bytes += BULK_CHUNK;
			bk_mark(bk.base, false);
		} else {
			bk.lost++;
		}
		bk.base++;
	}
}

static void bk_chunk(u32 seq, const u8 *data)
{
	if (seq >= bk.total || seq < bk.base || (seq < bk.base + BULK_REORDER && bk_have(seq))) {
		bk.dup++;
		return;
	}
	if (seq < bk.high)
		bk.ooo++; /* overtaken by a later one */
	if (seq + 1 > bk.high)
		bk.high = seq + 1;
	if (seq == bk.base) { /* in order: straight into the CRC */
		bk.crc = crc_update(bk.crc, data, BULK_CHUNK);
		bk.bytes += BULK_CHUNK;
		bk.base++;
	} else {
		if (seq >= bk.base + BULK_REORDER)
			bk_advance(seq - BULK_REORDER + 1);
		copy(bk_slot(seq), data, BULK_CHUNK);
		bk_mark(seq, true);
	}
	while (bk.base < bk.total && bk_have(bk.base)) {
		bk.crc = crc_update(bk.crc, bk_slot(bk.base), BULK_CHUNK);
		bk.bytes += BULK_CHUNK;
		bk_mark(bk.base, false);
		bk.base++;
	}
}

static void bulk_rx_udp(struct vdev *d, const u8 *smac, u32 sip, u16 sport, u16 dport, const u8 *p,
			u32 n)
{
	u32 magic;

	if (dport != cur.port || n < 8) {
		stats(d)->rx_dropped++;
		return;
	}
	cur.last_rx = now();
	magic = get32(p);
	if (!bk.peer_known || bk.peer_ip != sip || bk.peer_port != sport) {
		if (magic != BULK_START && magic != BULK_DATA) {
			stats(d)->rx_dropped++;
			return;
		}
		copy(bk.peer_mac, smac, 6);
		bk.peer_ip = sip;
		bk.peer_port = sport;
		bk.peer_known = 1;
	}
	if (!bk.started) {
		bk.started = 1;
		bk.t0 = now();
	}
	if (magic == BULK_START) {
		bk_send_ack(d);
	} else if (magic == BULK_DATA && n == 8 + BULK_CHUNK) {
		if (!bk.done)
			bk_chunk(get32(p + 4), p + 8);
		if (bk.base == bk.total && !bk.done) {
			bk.done = 1;
			vjob.r[5] = now() - bk.t0;
		}
		if (bk.done || bk.high - bk.acked >= BULK_ACK_EVERY)
			bk_send_ack(d);
	} else if (magic == BULK_END) {
		if (!bk.done) {
			bk_advance(bk.total);
			bk.done = 1;
			vjob.r[5] = now() - bk.t0;
		}
		bk_send_ack(d);
	} else {
		bk.dup++;
	}
}

static u64 bk_until;

static bool bulk_rx_over(void)
{
	return bk.done || passed(cur.last_rx + vjob.tsc_timeout);
}

static bool bulk_linger_over(void)
{
	return passed(bk_until);
}

/* arg: port, MiB; r[0] bytes, r[1] crc32, r[2] lost, r[3] ooo, r[4] dup, r[5] tsc, r[6] started */
static void job_bulk_rx(struct vdev *d)
{
	u32 i;

	for (i = 0; i < sizeof(bk.have); i++)
		bk.have[i] = 0;
	bk.total = (u32)(vjob.arg[1] << 10);
	bk.base = bk.high = bk.acked = bk.lost = bk.ooo = bk.dup = 0;
	bk.crc = ~0u;
	bk.bytes = 0;
	bk.started = bk.done = bk.peer_known = 0;
	cur.port = (u16)vjob.arg[0];
	cur.udp = bulk_rx_udp;
	cur.last_rx = now();
	while (!bulk_rx_over()) {
		if (poll_until(cur.last_rx + vjob.tsc_timeout, bulk_rx_over) < 0)
			return;
	}
	if (!bk.done && bk.started) { /* the sender went quiet: the rest is lost */
		bk_advance(bk.total);
		vjob.r[5] = now() - bk.t0;
	}
	if (bk.done) { /* answer repeated ENDs for a moment: our final ACK may be lost */
		bk_until = now() + 200 * vjob.tsc_ms;
		if (poll_until(bk_until, bulk_linger_over) < 0)
			return;
	}
	vjob.r[0] = bk.bytes;
	vjob.r[1] = ~bk.crc;
	vjob.r[2] = bk.lost;
	vjob.r[3] = bk.ooo;
	vjob.r[4] = bk.dup;
	vjob.r[6] = bk.started;
}

static void bulk_tx_udp(struct vdev *d, const u8 *smac, u32 sip, u16 sport, u16 dport, const u8 *p,
			u32 n)
{
	if (dport != cur.port || sip != cur.peer || sport != cur.port || n < BULK_ACK_LEN ||
	    get32(p) != BULK_ACK) {
		stats(d)->rx_dropped++;
		return;
	}
	bk.got_ack = 1;
	if (get32(p + 4) > bk.ack_high)
		bk.ack_high = get32(p + 4);
	if (get32(p + 12)) {
		bk.ack_done = 1;
		bk.ack_lost = get32(p + 16);
		bk.ack_crc = get32(p + 20);
		bk.ack_bytes = *(const u64u *)(p + 24);
	}
}

static u32 bk_seq;

static bool bk_got_ack(void)
{
	return bk.got_ack;
}

static bool bk_window_open(void)
{
	return bk_seq < bk.ack_high + BULK_WINDOW;
}

static bool bk_final(void)
{
	return bk.ack_done;
}

static int bk_control(struct vdev *d, const u8 *mac, u32 magic)
{
	u8 m[8];

	put32(m, magic);
	put32(m + 4, bk.total);
	return udp_send(d, mac, cur.peer, cur.port, cur.port, m, 8);
}

/*
 * arg: peer, port, MiB, seed; r[0] bytes, r[1] crc32, r[2] final ACK, r[3] peer bytes,
 * r[4] peer crc32, r[5] peer lost, r[6] tsc, r[7] window stalls; vjob.at: ARP answered
 */
static void job_bulk_tx(struct vdev *d)
{
	u32 crc = ~0u, t;
	u64 start, t0;
	u8 mac[6], *p;
	u16 s;

	cur.peer = (u32)vjob.arg[0];
	cur.port = (u16)vjob.arg[1];
	bk.total = (u32)(vjob.arg[2] << 10);
	bk.got_ack = bk.ack_done = 0;
	bk.ack_high = 0;
	vjob.at = 0;
	if (arp_resolve(d, cur.peer, mac) <= 0)
		return;
	vjob.at = 1;
	cur.udp = bulk_tx_udp;
	/* START until the receiver answers */
	start = now();
	while (!bk.got_ack && !passed(start + vjob.tsc_timeout)) {
		if (bk_control(d, mac, BULK_START) < 0 ||
		    poll_until(now() + 200 * vjob.tsc_ms, bk_got_ack) < 0)
			return;
	}
	if (!bk.got_ack)
		return;
	pat_init(vjob.arg[3]);
	t0 = now();
	for (bk_seq = 0; bk_seq < bk.total; bk_seq++) {
		if (!bk_window_open()) {
			vq_kick(&d->vq1);
			if (poll_until(now() + 1000 * vjob.tsc_ms, bk_window_open) < 0)
				return;
			if (!bk_window_open()) { /* no ACK for a second: go on regardless */
				vjob.r[7]++;
				bk.ack_high = bk_seq - BULK_WINDOW + 1;
			}
		}
		p = udp_begin(d, &s);
		if (!p)
			return;
		put32(p, BULK_DATA);
		put32(p + 4, bk_seq);
		pat_fill((u64 *)(p + 8), 2 * (u64)bk_seq, 2);
		crc = crc_update(crc, p + 8, BULK_CHUNK);
		udp_finish(d, s, mac, cur.peer, cur.port, cur.port, 8 + BULK_CHUNK,
			   bk_seq % 32 == 31 ? TX_KICK : 0);
		if (bk_seq % 32 == 31 && poll_all() < 0)
			return;
	}
	vq_kick(&d->vq1);
	vjob.r[0] = (u64)bk.total * BULK_CHUNK;
	vjob.r[1] = ~crc;
	/* the receiver's final ACK: wait, then END until it comes */
	for (t = 0; t < 50 && !bk.ack_done; t++) {
		if (t && bk_control(d, mac, BULK_END) < 0)
			return;
		if (poll_until(now() + 200 * vjob.tsc_ms, bk_final) < 0)
			return;
	}
	vjob.r[6] = now() - t0;
	vjob.r[2] = bk.ack_done;
	vjob.r[3] = bk.ack_bytes;
	vjob.r[4] = bk.ack_crc;
	vjob.r[5] = bk.ack_lost;
}

/* ---- rate modes: guest.net.blast_tx, guest.net.sink ---- */

/*
 * arg: peer, port, seconds, payload bytes; r[0] frames, r[1] payload bytes, r[2] tsc (first
 * frame queued to the last one used); vjob.at: ARP answered. Every free transmit buffer gets a
 * datagram, then one kick; used buffers are taken back by polling.
 */
static void job_blast_tx(struct vdev *d)
{
	struct nicst *n = st(d);
	u32 peer = (u32)vjob.arg[0], bytes = (u32)vjob.arg[3];
	u16 port = (u16)vjob.arg[1], s;
	u64 t0, end, frames = 0;
	u8 mac[6];

	vjob.at = 0;
	if (arp_resolve(d, peer, mac) <= 0)
		return;
	vjob.at = 1;
	tx_drain(d); /* every buffer back: the payloads are set once, here */
	if (d->broken)
		return;
	for (s = 0; s < d->vq1.size; s++)
		zero(txbuf(d, s) + HDR + ETH_HLEN + IP_HLEN + UDP_HLEN, bytes);
	t0 = now();
	end = t0 + vjob.arg[2] * 1000 * vjob.tsc_ms;
	while (!passed(end)) {
		if (poll_all() < 0) /* sent buffers back, ARP answered */
			return;
		if (!n->ntxfree) {
			net_wait(end, d);
			continue;
		}
		while (n->ntxfree) {
			if (!udp_begin(d, &s))
				return;
			udp_finish(d, s, mac, peer, port, port, bytes, TX_NO_CSUM);
			frames++;
		}
		vq_kick(&d->vq1);
	}
	tx_drain(d);
	vjob.r[0] = frames;
	vjob.r[1] = frames * bytes;
	vjob.r[2] = now() - t0;
}

static struct {
	u64 frames, bytes, t0, last, window;
} sk;

static void sink_udp(struct vdev *d, const u8 *smac, u32 sip, u16 sport, u16 dport, const u8 *data,
		     u32 n)
{
	u64 t;

	if (dport != cur.port) {
		stats(d)->rx_dropped++;
		return;
	}
	t = now();
	if (!sk.frames)
		sk.t0 = t;
	else if (t - sk.t0 >= sk.window)
		return; /* after the window (the rest of a batch): not counted */
	sk.frames++;
	sk.bytes += n;
	sk.last = t;
}

static bool sink_started(void)
{
	return sk.frames != 0;
}

static bool sink_over(void)
{
	return passed(sk.t0 + sk.window);
}

/* arg: port, seconds; r[0] frames, r[1] payload bytes, r[2] tsc (first frame to the last counted)
 */
static void job_sink(struct vdev *d)
{
	sk.frames = sk.bytes = 0;
	sk.window = vjob.arg[1] * 1000 * vjob.tsc_ms;
	cur.port = (u16)vjob.arg[0];
	cur.udp = sink_udp;
	if (poll_until(now() + vjob.tsc_timeout, sink_started) < 0)
		return;
	if (sk.frames && poll_until(sk.t0 + sk.window, sink_over) < 0)
		return;
	vjob.r[0] = sk.frames;
	vjob.r[1] = sk.bytes;
	vjob.r[2] = sk.frames ? sk.last - sk.t0 : 0;
}

/* ---- jobs ---- */

void net_job(void)
{
	struct vdev *d = &vdevs[vjob.dev];

	crc_init();
	cur.d = d;
	cur.udp = NULL;
	cur.ping_seq = 0;
	cur.count = 0;
	sleep_mode = d->vq.irq_mode;
	switch (vjob.op) {
	case VJ_NET_START:
		net_start(d);
		break;
	case VJ_NET_PING:
		job_ping(d);
		break;
	case VJ_NET_UDP:
		job_udp(d);
		break;
	case VJ_NET_RECV:
		job_recv(d);
		break;
	case VJ_NET_BULK_TX:
		job_bulk_tx(d);
		break;
	case VJ_NET_BULK_RX:
		job_bulk_rx(d);
		break;
	case VJ_NET_BLAST_TX:
		job_blast_tx(d);
		break;
	case VJ_NET_SINK:
		job_sink(d);
		break;
	default:
		break;
	}
	cur.d = NULL;
	cur.udp = NULL;
	if (nic_up(d))
		tx_drain(d);
}
