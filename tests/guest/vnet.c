/*
 * virtio-net, ring 0 part: features, configuration, the guest.net.*
 * options and their output lines. The packets are all handled in ring 3
 * (unet.c); ring 0 only parses, starts jobs and prints.
 */
#include "virtio.h"

#define RXBUF_DEFAULT 1536 /* >= 12 + 1514: one buffer per frame without MRG_RXBUF */
#define RXBUF_MAX     (NET_BUF_STRIDE - 2)

static bool opts_read, mrg_off, csum_on;
static u32 rxbuf_opt;

static void read_opts(void)
{
	char opt[16];
	const char *p;
	u64 v;

	if (opts_read)
		return;
	opts_read = true;
	mrg_off = cmdline_get("guest.net.mrg=", opt, sizeof(opt)) && streq(opt, "0");
	csum_on = cmdline_get("guest.net.csum=", opt, sizeof(opt)) && streq(opt, "1");
	if (cmdline_get("guest.net.rxbuf=", opt, sizeof(opt))) {
		p = opt;
		if (!parse_num(&p, &v) || *p || v < NET_RXBUF_MIN || v > RXBUF_MAX)
			fail("bad guest.net.rxbuf=%s (%u..%u)", opt, NET_RXBUF_MIN, RXBUF_MAX);
		else
			rxbuf_opt = (u32)v;
	}
}

u64 net_wanted_features(void)
{
	u64 f = 1UL << VIRTIO_NET_F_MAC | 1UL << VIRTIO_NET_F_STATUS;

	read_opts();
	if (!mrg_off)
		f |= 1UL << VIRTIO_NET_F_MRG_RXBUF;
	if (csum_on)
		f |= 1UL << VIRTIO_NET_F_CSUM | 1UL << VIRTIO_NET_F_GUEST_CSUM;
	return f;
}

/* MAC and link status (under config_generation), buffer size. */
void net_config(struct vdev *d)
{
	u32 i, tries = 0;
	u8 gen;

	do {
		gen = mmio_read8(d->common + VCC_CFGGEN);
		for (i = 0; i < 6; i++)
			d->mac[i] = dev_has(d, VIRTIO_NET_F_MAC)
					    ? mmio_read8(d->devcfg + VIRTIO_NET_CFG_MAC + i)
					    : 0;
		d->net_status = dev_has(d, VIRTIO_NET_F_STATUS)
					? mmio_read16(d->devcfg + VIRTIO_NET_CFG_STATUS)
					: VIRTIO_NET_S_LINK_UP;
	} while (gen != mmio_read8(d->common + VCC_CFGGEN) && ++tries < 100);
	if (!dev_has(d, VIRTIO_NET_F_MAC)) { /* locally administered 02:47:56:00:00:<nic> */
		d->mac[0] = 0x02;
		d->mac[1] = 'G';
		d->mac[2] = 'V';
		d->mac[5] = d->nic;
	}
	d->mrg = (u8)dev_has(d, VIRTIO_NET_F_MRG_RXBUF);
	d->csum = (u8)(dev_has(d, VIRTIO_NET_F_CSUM) | dev_has(d, VIRTIO_NET_F_GUEST_CSUM) << 1);
	d->rxbuf = d->mrg && rxbuf_opt ? rxbuf_opt : RXBUF_DEFAULT;
}

void net_print(struct vdev *d)
{
	gprintf("GUEST net %u slot=%u mac=%02x:%02x:%02x:%02x:%02x:%02x status=%u mrg=%u\n", d->nic,
		d->slot, d->mac[0], d->mac[1], d->mac[2], d->mac[3], d->mac[4], d->mac[5],
		d->net_status & VIRTIO_NET_S_LINK_UP, d->mrg);
	gprintf("GUEST net %u config csum=%u guest_csum=%u rxbuf=%u rx_queue=%u tx_queue=%u\n",
		d->nic, d->csum & 1, d->csum >> 1, d->rxbuf, d->vq.size, d->vq1.size);
}

/* ---- option parsing ---- */

static bool parse_ip(const char **s, u64 *ip)
{
	u64 v, r = 0;
	u32 i;

	for (i = 0; i < 4; i++) {
		if (i && *(*s)++ != '.')
			return false;
		if (!parse_num(s, &v) || v > 255)
			return false;
		r |= v << (8 * i); /* network order in memory */
	}
	*ip = r;
	return true;
}

/* "f0:f1:..." where field ipf (if < n) is an IPv4 address. */
static bool parse_net(const char *s, u64 *v, u32 n, u32 ipf)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (i && *s++ != ':')
			return false;
		if (i == ipf ? !parse_ip(&s, &v[i]) : !parse_num(&s, &v[i]))
			return false;
	}
	return *s == '\0';
}

static void ip_str(char *buf, u64 ip)
{
	u32 i, v, n = 0;

	for (i = 0; i < 4; i++) {
		v = (u32)(ip >> (8 * i)) & 0xff;
		if (i)
			buf[n++] = '.';
		if (v >= 100)
			buf[n++] = (char)('0' + v / 100);
		if (v >= 10)
			buf[n++] = (char)('0' + v / 10 % 10);
		buf[n++] = (char)('0' + v % 10);
	}
	buf[n] = '\0';
}

/* The NIC with index n (slot order), usable; else a FAIL line and NULL. */
static struct vdev *nic(u64 n, const char *op, bool need_ip)
{
	u32 i;

	for (i = 0; i < ndevs; i++) {
		struct vdev *d = &vdevs[i];

		if (d->type != VT_NET || d->nic != n)
			continue;
		if (d->broken || !d->vq.size) {
			fail("net %s: nic %lu is not usable", op, n);
			return NULL;
		}
		if (need_ip && !d->ip) {
			fail("net %s: nic %lu has no address (guest.net.ip=%lu:a.b.c.d)", op, n, n);
			return NULL;
		}
		return d;
	}
	fail("net %s: no nic %lu", op, n);
	return NULL;
}

/* guest.net.ip options first: an address holds for every operation. */
static void apply_ips(void)
{
	static char word[128];
	const char *p = bi.cmdline;
	struct vdev *d;
	u64 f[2];
	u32 n;

	while (*p) {
		while (*p == ' ')
			p++;
		for (n = 0; p[n] && p[n] != ' '; n++) {
			if (n + 1 < sizeof(word))
				word[n] = p[n];
		}
		word[n < sizeof(word) ? n : sizeof(word) - 1] = '\0';
		p += n;
		if (!has_prefix(word, "guest.net.ip="))
			continue;
		if (!parse_net(word + 13, f, 2, 1) || !f[1]) {
			fail("bad %s", word);
			continue;
		}
		d = nic(f[0], "ip", false);
		if (d)
			d->ip = (u32)f[1];
	}
}

void net_start_all(void)
{
	char ip[16];
	u32 i;

	for (i = 0; i < ndevs; i++) {
		struct vdev *d = &vdevs[i];

		if (d->type == VT_NET && !d->broken && d->vq.size)
			run_job(VJ_NET_START, d, 0, 0, 0);
	}
	apply_ips();
	for (i = 0; i < ndevs; i++) {
		struct vdev *d = &vdevs[i];

		if (d->type == VT_NET && d->ip) {
			ip_str(ip, d->ip);
			gprintf("GUEST net %u ip=%s\n", d->nic, ip);
		}
	}
}

static void op_ping(const char *v)
{
	u64 f[3];
	char ip[16];
	struct vdev *d;

	if (!parse_net(v, f, 3, 1)) {
		fail("bad guest.net.ping=%s", v);
		return;
	}
	d = nic(f[0], "ping", true);
	if (!d)
		return;
	ip_str(ip, f[1]);
	if (!run_job(VJ_NET_PING, d, f[1], f[2], 0))
		return;
	gprintf("GUEST net ping nic=%lu peer=%s sent=%lu received=%lu\n", f[0], ip, vjob.r[0],
		vjob.r[1]);
	if (!vjob.r[2])
		fail("net ping nic=%lu: no ARP answer from %s", f[0], ip);
	else if (vjob.r[1] != f[2])
		fail("net ping nic=%lu: %lu of %lu echo requests answered", f[0], vjob.r[1], f[2]);
}

static void op_udp(const char *v)
{
	u64 f[4];
	char ip[16];
	struct vdev *d;

	if (!parse_net(v, f, 4, 1) || !f[2] || f[2] > 0xffff) {
		fail("bad guest.net.udp=%s", v);
		return;
	}
	d = nic(f[0], "udp", true);
	if (!d)
		return;
	ip_str(ip, f[1]);
	if (!run_job(VJ_NET_UDP, d, f[1], f[2], f[3]))
		return;
	gprintf("GUEST net udp nic=%lu peer=%s port=%lu sent=%lu\n", f[0], ip, f[2], vjob.r[0]);
	if (!vjob.r[2])
		fail("net udp nic=%lu: no ARP answer from %s", f[0], ip);
}

static void op_recv(const char *v)
{
	u64 f[3];
	struct vdev *d;

	if (!parse_net(v, f, 3, 9) || !f[1] || f[1] > 0xffff) {
		fail("bad guest.net.recv=%s", v);
		return;
	}
	d = nic(f[0], "recv", true);
	if (!d || !run_job(VJ_NET_RECV, d, f[1], f[2], 0))
		return;
	gprintf("GUEST net recv nic=%lu port=%lu received=%lu\n", f[0], f[1], vjob.r[0]);
	if (vjob.r[0] != f[2])
		fail("net recv nic=%lu: %lu of %lu datagrams", f[0], vjob.r[0], f[2]);
}

static void op_bulk_tx(const char *v)
{
	u64 f[6] = {0}; /* nic, then the job's five arguments: peer, port, MiB, seed, 0 */
	char ip[16];
	struct vdev *d;

	if (!parse_net(v, f, 5, 1) || !f[2] || f[2] > 0xffff || !f[3] || f[3] > 0x3fffff) {
		fail("bad guest.net.bulk_tx=%s", v);
		return;
	}
	d = nic(f[0], "bulk_tx", true);
	if (!d)
		return;
	ip_str(ip, f[1]);
	if (!run_job5(VJ_NET_BULK_TX, d, f + 1))
		return;
	gprintf("GUEST net bulk_tx nic=%lu peer=%s port=%lu bytes=%lu crc32=%08lx acked=%lu "
		"peer_bytes=%lu peer_crc32=%08lx peer_lost=%lu tsc=%lu stalls=%lu\n",
		f[0], ip, f[2], vjob.r[0], vjob.r[1], vjob.r[2], vjob.r[3], vjob.r[4], vjob.r[5],
		vjob.r[6], vjob.r[7]);
	if (vjob.at != 1)
		fail("net bulk_tx nic=%lu: no ARP answer from %s", f[0], ip);
	else if (!vjob.r[0])
		fail("net bulk_tx nic=%lu: no receiver at %s port %lu", f[0], ip, f[2]);
	else if (!vjob.r[2])
		fail("net bulk_tx nic=%lu: no final acknowledgement", f[0]);
	else if (vjob.r[3] != vjob.r[0] || vjob.r[4] != vjob.r[1])
		fail("net bulk_tx nic=%lu: the receiver got %lu bytes crc32 %08lx", f[0], vjob.r[3],
		     vjob.r[4]);
}

static void op_bulk_rx(const char *v)
{
	u64 f[3];
	struct vdev *d;

	if (!parse_net(v, f, 3, 9) || !f[1] || f[1] > 0xffff || !f[2] || f[2] > 0x3fffff) {
		fail("bad guest.net.bulk_rx=%s", v);
		return;
	}
	d = nic(f[0], "bulk_rx", true);
	if (!d || !run_job(VJ_NET_BULK_RX, d, f[1], f[2], 0))
		return;
	gprintf("GUEST net bulk_rx nic=%lu port=%lu bytes=%lu crc32=%08lx lost=%lu ooo=%lu dup=%lu "
		"tsc=%lu\n",
		f[0], f[1], vjob.r[0], vjob.r[1], vjob.r[2], vjob.r[3], vjob.r[4], vjob.r[5]);
	if (!vjob.r[6])
		fail("net bulk_rx nic=%lu: nothing from a sender on port %lu", f[0], f[1]);
}

static void op_blast_tx(const char *v)
{
	u64 f[6] = {0}, khz = tsc_khz_known(); /* nic, then peer, port, seconds, bytes, 0 */
	char ip[16];
	struct vdev *d;

	if (!parse_net(v, f, 5, 1) || !f[2] || f[2] > 0xffff || !f[3] || f[3] > NET_RATE_MAX_S ||
	    !f[4] || f[4] > NET_UDP_MAX) {
		fail("bad guest.net.blast_tx=%s", v);
		return;
	}
	d = nic(f[0], "blast_tx", true);
	if (!d)
		return;
	ip_str(ip, f[1]);
	if (!run_job5(VJ_NET_BLAST_TX, d, f + 1))
		return;
	gprintf("GUEST net blast_tx nic=%lu frames=%lu bytes=%lu tsc=%lu tsc_khz=%lu\n", f[0],
		vjob.r[0], vjob.r[1], vjob.r[2], khz);
	if (vjob.at != 1)
		fail("net blast_tx nic=%lu: no ARP answer from %s", f[0], ip);
}

static void op_sink(const char *v)
{
	u64 f[3], khz = tsc_khz_known();
	struct vdev *d;

	if (!parse_net(v, f, 3, 9) || !f[1] || f[1] > 0xffff || !f[2] || f[2] > NET_RATE_MAX_S) {
		fail("bad guest.net.sink=%s", v);
		return;
	}
	d = nic(f[0], "sink", true);
	if (!d || !run_job(VJ_NET_SINK, d, f[1], f[2], 0))
		return;
	gprintf("GUEST net sink nic=%lu frames=%lu bytes=%lu tsc=%lu tsc_khz=%lu\n", f[0],
		vjob.r[0], vjob.r[1], vjob.r[2], khz);
	if (!vjob.r[0])
		fail("net sink nic=%lu: nothing to port %lu", f[0], f[1]);
}

bool net_op(const char *w)
{
	if (has_prefix(w, "guest.net.ping="))
		op_ping(w + 15);
	else if (has_prefix(w, "guest.net.udp="))
		op_udp(w + 14);
	else if (has_prefix(w, "guest.net.recv="))
		op_recv(w + 15);
	else if (has_prefix(w, "guest.net.bulk_tx="))
		op_bulk_tx(w + 18);
	else if (has_prefix(w, "guest.net.bulk_rx="))
		op_bulk_rx(w + 18);
	else if (has_prefix(w, "guest.net.blast_tx="))
		op_blast_tx(w + 19);
	else if (has_prefix(w, "guest.net.sink="))
		op_sink(w + 15);
	else
		return false;
	return true;
}

void net_print_stats(void)
{
	u32 i;

	for (i = 0; i < ndevs; i++) {
		struct vdev *d = &vdevs[i];
		struct vnetstats *s = &vnetstats[i];

		if (d->type != VT_NET || !d->vq.size)
			continue;
		gprintf("GUEST net stats nic=%u rx=%lu tx=%lu dropped=%lu bad_csum=%lu "
			"arp_replies=%lu icmp_replies=%lu\n",
			d->nic, s->rx_frames, s->tx_frames, s->rx_dropped, s->bad_csum,
			s->arp_replies, s->icmp_replies);
	}
}
