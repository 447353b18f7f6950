/*
 * Host-side benchmark of a virtio device's whole data path, in-process
 * against sandboxed (lib/virtio/proxy.h), no guest and no KVM: this program
 * plays the guest driver. It lays split virtqueues out in guest RAM (a
 * gm_init() memfd mapping, shared with the device's child when sandboxed),
 * makes buffers available, kicks the queue's eventfd and waits on its call
 * eventfd, exactly the path KVM's ioeventfd and irqfd take, without a vCPU.
 *
 *   devpath [OPTIONS]
 *
 * Workloads (each runs for --time seconds after a short warm-up, steady
 * state; rates are what completed in that window):
 *   blk_seq_read_1m   virtio-blk, sequential 1 MiB reads over the image  (MiB/s)
 *   blk_seq_write_1m  sequential 1 MiB writes                            (MiB/s)
 *   blk_rand_read_4k  4 KiB reads at random 4 KiB-aligned offsets        (IOPS)
 *     32 requests in flight: fill the queue, kick, wait for the interrupt,
 *     reap the used entries, refill. The raw image (--image, on a disk, not
 *     tmpfs) is read into the page cache first: libvmm does not use
 *     O_DIRECT, and a warm cache makes the device path, not the disk, the
 *     bottleneck. sync(2) before each measurement.
 *   net_{tx,rx}_{60,1514}_{tap,sp}  virtio-net, frames of 60 or 1514
 *     bytes (Ethernet header included, no FCS); tx: the driver keeps the
 *     transmit ring full and the device writes the frames to the backend;
 *     rx: a peer thread sends frames as fast as it can and the driver keeps
 *     the receive ring full of 1526-byte buffers (rates: frames delivered to
 *     the driver). Backends: "tap", a tap in a private network namespace
 *     this program makes (the peer is an AF_PACKET socket on the tap's
 *     interface), and "sp", the SOCK_SEQPACKET socket pair the unit tests
 *     use instead of a tap (no network stack: the device's own cost).
 *
 * Each measurement makes a fresh device (and, sandboxed, a fresh jailed
 * child with the shipped policy, --policy-dir), in-process and sandboxed
 * alternating (the order flips every run), --runs times. Besides the rate
 * it takes the CPU time, over the measured window, of everything (this
 * process and the device's child) and of the device's own threads alone
 * (schedstat of its worker, io_uring and pool threads, here or in the
 * child), per request or frame: on a shared machine these move far less
 * than the rates. Prints one line per measurement (with the driver's kicks
 * and sleeps per request), then a table of medians and bests with the
 * ratio sandboxed / in-process and the device's CPU per request, then one
 * machine-readable line per workload:
 *   devpath result workload=W unit=U bytes_per_op=B runs=I/S inproc_median=X
 *       inproc_best=X sandboxed_median=Y sandboxed_best=Y peer_...=P ratio=R
 *       cpu_us_inproc=C cpu_us_sandboxed=C cpu_ratio=Q
 *       dev_cpu_us_inproc=D dev_cpu_us_sandboxed=D dev_cpu_ratio=Q
 * (on one line; rates in MiB/s, IOPS or frames/s). Exit status 1 when a
 * measurement fails, 0 otherwise.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/magic.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "devices/disk.h"
#include "devices/tap.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "lib/err.h"
#include "lib/memory.h"
#include "lib/sandbox.h"
#include "lib/virtio/proxy.h"
#include "lib/virtio/virtio.h"
#include "lib/virtio/virtqueue.h"

#ifndef DEVPATH_POLICY_DIR
#define DEVPATH_POLICY_DIR ""
#endif

#define MIB	      (1024ull * 1024)
#define RAM_BYTES     (128ull * MIB)
#define QSIZE	      256
#define BLK_DEPTH     32
#define NET_HDR	      VIRTIO_NET_HDR_SIZE
#define NET_RXBUF     (NET_HDR + 1514)
#define NET_ETHERTYPE 0x88b5 /* IEEE local experimental: the host stack ignores it */
#define PEER_BATCH    32
#define STALL_MS      5000
#define MAX_RUNS      100

/* ---- Workloads ---- */

enum kind { K_BLK, K_NET_TX, K_NET_RX };
enum backend { B_NONE, B_TAP, B_SP };

struct workload {
	const char *name;
	enum kind kind;
	int blk_type;	   /* VIRTIO_BLK_T_IN / OUT */
	uint32_t io_bytes; /* blk: bytes per request */
	bool random;	   /* blk: random offsets */
	uint32_t frame;	   /* net: frame bytes */
	enum backend backend;
	const char *unit; /* of the rate: "MiB/s", "IOPS", "Mpps" */
};

static const struct workload workloads[] = {
	{"blk_seq_read_1m", K_BLK, VIRTIO_BLK_T_IN, 1 << 20, false, 0, B_NONE, "MiB/s"},
	{"blk_seq_write_1m", K_BLK, VIRTIO_BLK_T_OUT, 1 << 20, false, 0, B_NONE, "MiB/s"},
	{"blk_rand_read_4k", K_BLK, VIRTIO_BLK_T_IN, 4096, true, 0, B_NONE, "IOPS"},
	{"net_tx_60_tap", K_NET_TX, 0, 0, false, 60, B_TAP, "Mpps"},
	{"net_tx_1514_tap", K_NET_TX, 0, 0, false, 1514, B_TAP, "Mpps"},
	{"net_rx_60_tap", K_NET_RX, 0, 0, false, 60, B_TAP, "Mpps"},
	{"net_rx_1514_tap", K_NET_RX, 0, 0, false, 1514, B_TAP, "Mpps"},
	{"net_tx_60_sp", K_NET_TX, 0, 0, false, 60, B_SP, "Mpps"},
	{"net_tx_1514_sp", K_NET_TX, 0, 0, false, 1514, B_SP, "Mpps"},
	{"net_rx_60_sp", K_NET_RX, 0, 0, false, 60, B_SP, "Mpps"},
	{"net_rx_1514_sp", K_NET_RX, 0, 0, false, 1514, B_SP, "Mpps"},
};
#define N_WORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

struct opts {
	const char *image;
	uint64_t size_mib;
	unsigned int runs;
	double secs;
	const char *policy_dir;
	bool namespaces;
	bool keep_image;
	int only_mode; /* -1 both, 0 in-process, 1 sandboxed */
	bool selected[N_WORKLOADS];
};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* ---- The driver's side of a split virtqueue ---- */

struct drvq {
	uint16_t size;
	uint8_t *desc, *avail, *used; /* host addresses */
	uint16_t avail_idx;	      /* next avail index to publish */
	uint16_t kicked_idx;	      /* avail idx the device last heard of */
	uint16_t used_seen;	      /* used entries consumed */
	struct virtq vq;	      /* the device side, as a transport hands it over */
	int kick_fd, call_fd;
	uint64_t kicks, waits;
};

struct ctx {
	struct guest_mem mem;
	uint64_t next_gpa; /* bump allocator over guest RAM */
	struct virtio_device dev;
	bool have_dev, active;
	struct virtio_proxy *px;
	struct drvq q[2];
	unsigned int nq;
	struct virtio_activation act;
	atomic_int needs_reset;
};

static uint64_t galloc(struct ctx *c, uint64_t len, uint64_t align)
{
	uint64_t gpa = (c->next_gpa + align - 1) & ~(align - 1);

	if (gpa + len > gm_low_end(&c->mem)) {
		fprintf(stderr, "devpath: guest RAM exhausted\n");
		exit(1);
	}
	c->next_gpa = gpa + len;
	return gpa;
}

static uint8_t *gptr(struct ctx *c, uint64_t gpa, uint64_t len)
{
	return gm_ptr(&c->mem, gpa, len);
}

static void dq_init(struct ctx *c, struct drvq *q, uint16_t size)
{
	uint64_t d = galloc(c, 16ull * size, 16);
	uint64_t a = galloc(c, 6 + 2ull * size, 2);
	uint64_t u = galloc(c, 6 + 8ull * size, 4);

	memset(q, 0, sizeof(*q));
	q->size = size;
	q->desc = gptr(c, d, 16ull * size);
	q->avail = gptr(c, a, 6 + 2ull * size);
	q->used = gptr(c, u, 6 + 8ull * size);
	memset(q->desc, 0, 16ull * size);
	memset(q->avail, 0, 6 + 2ull * size);
	memset(q->used, 0, 6 + 8ull * size);
	q->vq.size = size;
	q->vq.desc_gpa = d;
	q->vq.avail_gpa = a;
	q->vq.used_gpa = u;
	q->vq.event_idx = true;
	q->vq.mem = &c->mem;
	q->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	q->call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->kick_fd < 0 || q->call_fd < 0 || virtq_start(&q->vq)) {
		fprintf(stderr, "devpath: queue setup failed\n");
		exit(1);
	}
}

static void dq_desc(struct drvq *q, uint16_t i, uint64_t gpa, uint32_t len, uint16_t flags,
		    uint16_t next)
{
	uint8_t *d = q->desc + 16ull * i;

	memcpy(d, &gpa, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static uint16_t *u16_at(uint8_t *p)
{
	return (uint16_t *)(void *)p;
}

/* Put @head in the avail ring; visible to the device at the next dq_kick(). */
static void dq_add(struct drvq *q, uint16_t head)
{
	__atomic_store_n(u16_at(q->avail + 4 + 2ull * (q->avail_idx & (q->size - 1))), head,
			 __ATOMIC_RELAXED);
	q->avail_idx++;
}

/* Publish avail->idx and notify when the device's avail_event asks for it (event idx). */
static void dq_kick(struct drvq *q)
{
	uint16_t old = q->kicked_idx, now = q->avail_idx, ev;
	uint64_t one = 1;

	if (old == now)
		return;
	__atomic_store_n(u16_at(q->avail + 2), now, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	ev = __atomic_load_n(u16_at(q->used + 4 + 8ull * q->size), __ATOMIC_ACQUIRE);
	q->kicked_idx = now;
	if ((uint16_t)(now - ev - 1) < (uint16_t)(now - old)) {
		if (write(q->kick_fd, &one, 8) != 8)
			abort();
		q->kicks++;
	}
}

/* Take the next used entry. */
static bool dq_used(struct drvq *q, uint32_t *id, uint32_t *len)
{
	const uint8_t *e;

	if (__atomic_load_n(u16_at(q->used + 2), __ATOMIC_ACQUIRE) == q->used_seen)
		return false;
	e = q->used + 4 + 8ull * (q->used_seen & (q->size - 1));
	memcpy(id, e, 4);
	memcpy(len, e + 4, 4);
	q->used_seen++;
	return true;
}

/*
 * Ask for an interrupt once @ahead more entries are used (used_event), then
 * look again. Returns true when entries are already there (do not sleep).
 */
static bool dq_arm(struct drvq *q, uint16_t ahead)
{
	__atomic_store_n(u16_at(q->avail + 4 + 2ull * q->size), (uint16_t)(q->used_seen + ahead),
			 __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return __atomic_load_n(u16_at(q->used + 2), __ATOMIC_ACQUIRE) != q->used_seen;
}

/* Wait up to @ms for the call eventfd. Returns false on timeout. */
static bool dq_wait(struct drvq *q, int ms)
{
	struct pollfd p = {.fd = q->call_fd, .events = POLLIN};
	uint64_t v;
	int r;

	q->waits++;
	do {
		r = poll(&p, 1, ms);
	} while (r < 0 && errno == EINTR);
	if (r <= 0)
		return false;
	if (read(q->call_fd, &v, 8) < 0 && errno != EAGAIN)
		abort();
	return true;
}

/* ---- Device set-up: in-process or through virtio_proxy_spawn() ---- */

static void on_needs_reset(void *opaque)
{
	struct ctx *c = opaque;

	atomic_store(&c->needs_reset, 1);
}

static void ctx_free(struct ctx *c)
{
	if (c->have_dev) {
		c->dev.ops->reset(c->dev.dev);
		c->dev.ops->destroy(c->dev.dev);
	}
	for (unsigned int i = 0; i < c->nq; i++) {
		close(c->q[i].kick_fd);
		close(c->q[i].call_fd);
	}
	gm_destroy(&c->mem);
	free(c);
}

/*
 * Take @dev (created, not activated) into a context: sandbox it when
 * @sandboxed, lay out @nq queues, activate with @want of the device's
 * features. Returns NULL with a message on failure (the device is freed).
 */
static struct ctx *ctx_new(struct virtio_device *dev, struct ctx *c, bool sandboxed,
			   const struct opts *o, const char *policy, unsigned int nq, uint64_t want)
{
	struct vmm_err err = {""};
	uint64_t features;
	uint16_t qsize;
	int ret;

	c->dev = *dev;
	c->have_dev = true;
	if (sandboxed) {
		struct sandbox_config sb = {
			.policy_dir = o->policy_dir,
			.policy_name = policy,
			.namespaces = o->namespaces,
		};

		ret = virtio_proxy_spawn(&c->dev, &c->mem, &sb, &c->px, &err);
		if (ret) {
			fprintf(stderr, "devpath: virtio_proxy_spawn: %s\n", err.msg);
			ctx_free(c);
			return NULL;
		}
	}
	features = c->dev.ops->features(c->dev.dev);
	qsize = c->dev.ops->queue_max < QSIZE ? c->dev.ops->queue_max : QSIZE;
	c->nq = nq;
	for (unsigned int i = 0; i < nq; i++)
		dq_init(c, &c->q[i], qsize);
	memset(&c->act, 0, sizeof(c->act));
	c->act.features =
		(features & want) | 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_F_RING_EVENT_IDX;
	c->act.nqueues = nq;
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++)
		c->act.kick_fd[i] = c->act.call_fd[i] = -1;
	for (unsigned int i = 0; i < nq; i++) {
		c->act.queues[i] = &c->q[i].vq;
		c->act.kick_fd[i] = c->q[i].kick_fd;
		c->act.call_fd[i] = c->q[i].call_fd;
	}
	c->act.needs_reset = on_needs_reset;
	c->act.ctx = c;
	ret = c->dev.ops->activate(c->dev.dev, &c->act);
	if (ret) {
		char why[200] = "";

		if (c->px && virtio_proxy_reap(c->px, why, sizeof(why)) == 0)
			fprintf(stderr, "devpath: activate: %s (the device process %s)\n",
				strerror(-ret), why);
		else
			fprintf(stderr, "devpath: activate: %s\n", strerror(-ret));
		ctx_free(c);
		return NULL;
	}
	c->active = true;
	return c;
}

static struct ctx *ctx_alloc(void)
{
	struct ctx *c = calloc(1, sizeof(*c));
	struct vmm_err err = {""};

	if (!c || gm_init(&c->mem, RAM_BYTES, &err)) {
		fprintf(stderr, "devpath: guest RAM: %s\n", c ? err.msg : "out of memory");
		exit(1);
	}
	c->next_gpa = 0x1000;
	return c;
}

/* Why a measurement stopped early, for the message. */
static const char *ctx_trouble(struct ctx *c, char *buf, size_t len)
{
	if (atomic_load(&c->needs_reset))
		return "the device reported NEEDS_RESET";
	if (c->px && virtio_proxy_reap(c->px, buf, len) == 0)
		return buf;
	return "no interrupt within 5 s";
}

/* Driver-side counts of the last measurement (warm-up included): notifications sent, sleeps. */
static struct {
	uint64_t ops, kicks, waits;
	double cpu;    /* CPU seconds of this process and the device's, measured window */
	double dcpu;   /* CPU seconds of the device's threads alone, measured window */
	uint64_t mops; /* operations in the measured window */
} counts;

static pid_t peer_tid; /* the peer thread, while one runs */

/*
 * Run time (schedstat, ns) of the threads of process @pid, except @skip1
 * and @skip2: the device's own threads (its worker, io_uring workers, a
 * thread pool), in this process or in its jailed child.
 */
static double threads_cpu(pid_t pid, pid_t skip1, pid_t skip2)
{
	char path[64];
	struct dirent *e;
	double v = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		unsigned long long ns;
		char sp[384];
		pid_t tid = (pid_t)atoi(e->d_name);
		FILE *f;

		if (tid <= 0 || tid == skip1 || tid == skip2)
			continue;
		snprintf(sp, sizeof(sp), "%s/%s/schedstat", path, e->d_name);
		f = fopen(sp, "re");
		if (!f)
			continue;
		if (fscanf(f, "%llu", &ns) == 1)
			v += ns / 1e9;
		fclose(f);
	}
	closedir(d);
	return v;
}

static double dev_cpu_now(const struct ctx *c)
{
	if (c->px)
		return threads_cpu(virtio_proxy_pid(c->px), 0, 0);
	return threads_cpu(getpid(), getpid(), peer_tid);
}

/*
 * CPU time used so far by this process (driver, peer and, in-process, the
 * device's worker) plus the device's process when sandboxed.
 */
static double cpu_now(const struct ctx *c)
{
	struct timespec t;
	double v = 0;
	clockid_t cid;

	if (!clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t))
		v = (double)t.tv_sec + t.tv_nsec / 1e9;
	if (c->px && !clock_getcpuclockid(virtio_proxy_pid(c->px), &cid) && !clock_gettime(cid, &t))
		v += (double)t.tv_sec + t.tv_nsec / 1e9;
	return v;
}

static void note_counts(const struct drvq *q, uint64_t ops)
{
	counts.ops = ops;
	counts.kicks = q->kicks;
	counts.waits = q->waits;
}

/* ---- virtio-blk ---- */

struct blk_slot {
	uint64_t hdr, data, status; /* gpas */
};

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

struct blk_state {
	const struct workload *w;
	struct ctx *c;
	struct drvq *q;
	struct blk_slot slot[BLK_DEPTH];
	uint64_t range, off, rng, nblocks;
	unsigned int inflight;
};

/* Make request @i (descriptors 3i..3i+2) available at the next offset. */
static void blk_submit(struct blk_state *s, unsigned int i)
{
	uint8_t *h = gptr(s->c, s->slot[i].hdr, 16);
	uint32_t type = (uint32_t)s->w->blk_type, zero = 0;
	uint64_t at = s->off, sector;

	if (s->w->random)
		at = (xorshift(&s->rng) % s->nblocks) * s->w->io_bytes;
	else
		s->off = s->off + s->w->io_bytes >= s->range ? 0 : s->off + s->w->io_bytes;
	sector = at / 512;
	memcpy(h, &type, 4);
	memcpy(h + 4, &zero, 4);
	memcpy(h + 8, &sector, 8);
	*gptr(s->c, s->slot[i].status, 1) = 0xff;
	dq_add(s->q, (uint16_t)(3 * i));
	s->inflight++;
}

/* One measurement. Returns the rate (MiB/s or IOPS), or a negative value on failure. */
static double blk_measure(const struct workload *w, bool sandboxed, const struct opts *o)
{
	struct disk_opts dopt = {.format = DISK_FORMAT_RAW};
	struct vmm_err err = {""};
	struct virtio_device dev;
	struct blk_state s = {.w = w, .rng = 0x9e3779b97f4a7c15ull};
	uint64_t done = 0, done0 = 0, measured = 0;
	double t0, tstart = 0, tend = 0, warm = o->secs * 0.2;
	bool measuring = false, stopping = false;
	struct disk *d;
	char why[200];

	s.range = o->size_mib * MIB;
	s.nblocks = s.range / w->io_bytes;
	if (disk_open_opts(o->image, &dopt, &d, &err)) {
		fprintf(stderr, "devpath: %s\n", err.msg);
		return -1;
	}
	if (virtio_blk_create(d, "devpath", &dev, &err)) {
		fprintf(stderr, "devpath: virtio_blk_create: %s\n", err.msg);
		return -1;
	}
	s.c = ctx_new(&dev, ctx_alloc(), sandboxed, o, "virtio_blk", 1,
		      1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_SIZE_MAX |
			      1ull << VIRTIO_BLK_F_BLK_SIZE | 1ull << VIRTIO_BLK_F_FLUSH);
	if (!s.c)
		return -1;
	s.q = &s.c->q[0];
	for (unsigned int i = 0; i < BLK_DEPTH; i++) {
		struct blk_slot *b = &s.slot[i];

		b->hdr = galloc(s.c, 16, 16);
		b->data = galloc(s.c, w->io_bytes, 4096);
		b->status = galloc(s.c, 1, 1);
		memset(gptr(s.c, b->data, w->io_bytes), 0x5a ^ (int)i, w->io_bytes);
		dq_desc(s.q, (uint16_t)(3 * i), b->hdr, 16, VIRTQ_DESC_F_NEXT,
			(uint16_t)(3 * i + 1));
		dq_desc(s.q, (uint16_t)(3 * i + 1), b->data, w->io_bytes,
			VIRTQ_DESC_F_NEXT |
				(w->blk_type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0),
			(uint16_t)(3 * i + 2));
		dq_desc(s.q, (uint16_t)(3 * i + 2), b->status, 1, VIRTQ_DESC_F_WRITE, 0);
	}

	t0 = now_s();
	for (unsigned int i = 0; i < BLK_DEPTH; i++)
		blk_submit(&s, i);
	dq_kick(s.q);
	while (s.inflight) {
		uint32_t id, len;
		bool got = false;
		double t;

		while (dq_used(s.q, &id, &len)) {
			unsigned int i = id / 3;
			uint8_t st = i < BLK_DEPTH ? *gptr(s.c, s.slot[i].status, 1) : 0xff;

			if (id % 3 || i >= BLK_DEPTH || st != VIRTIO_BLK_S_OK) {
				fprintf(stderr, "devpath: %s: request %u failed (status %u)\n",
					w->name, id, st);
				ctx_free(s.c);
				return -1;
			}
			got = true;
			done++;
			s.inflight--;
			if (!stopping)
				blk_submit(&s, i);
		}
		t = now_s();
		if (!measuring && t - t0 >= warm) {
			measuring = true;
			tstart = t;
			done0 = done;
			counts.cpu = -cpu_now(s.c);
			counts.dcpu = -dev_cpu_now(s.c);
		} else if (measuring && !stopping && t - tstart >= o->secs) {
			stopping = true; /* let what is in flight finish, uncounted */
			tend = t;
			measured = done - done0;
			counts.cpu += cpu_now(s.c);
			counts.dcpu += dev_cpu_now(s.c);
			counts.mops = measured;
		}
		if (got) {
			dq_kick(s.q);
			continue;
		}
		if (dq_arm(s.q, 0))
			continue;
		if (!dq_wait(s.q, STALL_MS) || atomic_load(&s.c->needs_reset)) {
			fprintf(stderr, "devpath: %s: %s\n", w->name,
				ctx_trouble(s.c, why, sizeof(why)));
			ctx_free(s.c);
			return -1;
		}
	}
	note_counts(s.q, done);
	ctx_free(s.c);
	if (tend <= tstart)
		return -1;
	if (w->random)
		return (double)measured / (tend - tstart);
	return (double)measured * w->io_bytes / MIB / (tend - tstart);
}

/* ---- virtio-net: backends and the peer ---- */

static const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0xde, 0x7a, 0x01};

struct net_backend {
	int dev_fd;  /* handed to the device */
	int peer_fd; /* the other end: an AF_PACKET socket or the socket pair's end */
	struct tap_info info;
};

static bool tap_ok; /* a private network namespace was made */

static int backend_open(enum backend b, struct net_backend *nb)
{
	struct vmm_err err = {""};
	char ifname[TAP_IFNAMSIZ];
	struct sockaddr_ll sll;
	int sv[2], one = 1;

	memset(nb, 0, sizeof(*nb));
	nb->dev_fd = nb->peer_fd = -1;
	if (b == B_SP) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
			fprintf(stderr, "devpath: socketpair: %s\n", strerror(errno));
			return -1;
		}
		nb->dev_fd = sv[0];
		nb->peer_fd = sv[1];
		nb->info.no_ioctl = true;
		return 0;
	}
	if (tap_create(NULL, 0x0a630001, 0xffffff00, &nb->dev_fd, ifname, &err) ||
	    tap_check_fd(nb->dev_fd, &nb->info, &err) ||
	    tap_enable_offloads(nb->dev_fd, &nb->info, &err)) {
		fprintf(stderr, "devpath: tap: %s\n", err.msg);
		if (nb->dev_fd >= 0)
			close(nb->dev_fd);
		return -1;
	}
	nb->peer_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(NET_ETHERTYPE));
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(NET_ETHERTYPE);
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	if (nb->peer_fd < 0 || !sll.sll_ifindex ||
	    bind(nb->peer_fd, (struct sockaddr *)&sll, sizeof(sll))) {
		fprintf(stderr, "devpath: AF_PACKET socket on %s: %s\n", ifname, strerror(errno));
		close(nb->dev_fd);
		if (nb->peer_fd >= 0)
			close(nb->peer_fd);
		return -1;
	}
	/* Straight to the tap's xmit, as a NIC driver would hand frames over. */
	setsockopt(nb->peer_fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	return 0;
}

struct peer {
	pthread_t thread;
	int fd, stop_fd;
	bool send; /* rx workload: the peer sends */
	uint32_t frame;
	uint64_t frames;
	atomic_bool stop;
	int error;
};

static void make_frame(uint8_t *f, uint32_t len, uint32_t seq)
{
	static const uint8_t src[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
	uint16_t et = htons(NET_ETHERTYPE);

	memcpy(f, guest_mac, 6);
	memcpy(f + 6, src, 6);
	memcpy(f + 12, &et, 2);
	for (uint32_t i = 14; i < len; i++)
		f[i] = (uint8_t)(i + seq);
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	uint8_t(*bufs)[2048] = calloc(PEER_BATCH, 2048);
	struct mmsghdr m[PEER_BATCH];
	struct iovec iov[PEER_BATCH];
	struct pollfd pf[2] = {{.fd = p->fd, .events = p->send ? POLLOUT : POLLIN},
			       {.fd = p->stop_fd, .events = POLLIN}};

	__atomic_store_n(&peer_tid, gettid(), __ATOMIC_RELEASE);
	if (!bufs) {
		p->error = ENOMEM;
		return NULL;
	}
	for (unsigned int i = 0; i < PEER_BATCH; i++) {
		if (p->send)
			make_frame(bufs[i], p->frame, i);
		iov[i] = (struct iovec){bufs[i], p->send ? p->frame : sizeof(bufs[i])};
		memset(&m[i], 0, sizeof(m[i]));
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
	}
	while (!atomic_load_explicit(&p->stop, memory_order_relaxed)) {
		int r = p->send ? sendmmsg(p->fd, m, PEER_BATCH, MSG_DONTWAIT)
				: recvmmsg(p->fd, m, PEER_BATCH, MSG_DONTWAIT, NULL);

		if (r > 0) {
			__atomic_fetch_add(&p->frames, (unsigned int)r, __ATOMIC_RELAXED);
			continue;
		}
		if (r < 0 && errno == ENOBUFS) {
			sched_yield(); /* the tap's queue is full */
			continue;
		}
		if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			p->error = errno;
			break;
		}
		if (poll(pf, 2, -1) < 0 && errno != EINTR) {
			p->error = errno;
			break;
		}
	}
	free(bufs);
	return NULL;
}

/*
 * One measurement. Returns frames per second delivered (tx: written by the
 * device, rx: received by the driver), or a negative value on failure.
 * *@peer_rate gets what the peer counted per second over the same window.
 */
static double net_measure(const struct workload *w, bool sandboxed, const struct opts *o,
			  double *peer_rate)
{
	struct vmm_err err = {""};
	struct virtio_device dev;
	struct net_backend nb;
	struct peer peer = {0};
	bool tx = w->kind == K_NET_TX, measuring = false, stopping = false;
	uint64_t done = 0, done0 = 0, pdone0 = 0, pdone = 0;
	double t0, tstart = 0, tend = 0, warm = o->secs * 0.2, result = -1, last;
	unsigned int outstanding = 0, n;
	uint64_t one = 1, base;
	struct drvq *q;
	struct ctx *c;
	char why[200];

	if (backend_open(w->backend, &nb))
		return -1;
	if (virtio_net_create(nb.dev_fd, guest_mac, &nb.info, &dev, &err)) {
		fprintf(stderr, "devpath: virtio_net_create: %s\n", err.msg);
		close(nb.peer_fd);
		return -1;
	}
	c = ctx_new(&dev, ctx_alloc(), sandboxed, o, "virtio_net", 2,
		    1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS);
	if (!c) {
		close(nb.peer_fd);
		return -1;
	}
	q = &c->q[tx ? VIRTIO_NET_TXQ : VIRTIO_NET_RXQ];
	n = q->size;
	/* Buffer i is descriptor i, one descriptor per frame (header + frame), fixed. */
	base = galloc(c, (uint64_t)n * 2048, 4096);
	for (unsigned int i = 0; i < n; i++) {
		uint64_t gpa = base + 2048ull * i;

		if (tx) {
			memset(gptr(c, gpa, NET_HDR), 0, NET_HDR);
			make_frame(gptr(c, gpa + NET_HDR, w->frame), w->frame, i);
			dq_desc(q, (uint16_t)i, gpa, NET_HDR + w->frame, 0, 0);
		} else {
			dq_desc(q, (uint16_t)i, gpa, NET_RXBUF, VIRTQ_DESC_F_WRITE, 0);
		}
	}

	peer.fd = nb.peer_fd;
	peer.stop_fd = eventfd(0, EFD_CLOEXEC);
	peer.send = !tx;
	peer.frame = w->frame;
	if (peer.stop_fd < 0 || pthread_create(&peer.thread, NULL, peer_main, &peer)) {
		fprintf(stderr, "devpath: peer thread: %s\n", strerror(errno));
		goto out_nopeer;
	}

	t0 = last = now_s();
	for (unsigned int i = 0; i < n; i++)
		dq_add(q, (uint16_t)i);
	outstanding = n;
	dq_kick(q);
	for (;;) {
		uint32_t id, len;
		bool got = false;
		double t;

		while (dq_used(q, &id, &len)) {
			if (id >= n || (!tx && len < NET_HDR)) {
				fprintf(stderr, "devpath: %s: bad used entry %u len %u\n", w->name,
					id, len);
				goto out;
			}
			got = true;
			outstanding--;
			if (tx || len > NET_HDR)
				done++;
			if (!stopping) {
				dq_add(q, (uint16_t)id);
				outstanding++;
			}
		}
		t = now_s();
		if (!measuring && t - t0 >= warm) {
			measuring = true;
			tstart = t;
			done0 = done;
			counts.cpu = -cpu_now(c);
			counts.dcpu = -dev_cpu_now(c);
			pdone0 = __atomic_load_n(&peer.frames, __ATOMIC_RELAXED);
		} else if (measuring && !stopping && t - tstart >= o->secs) {
			stopping = true;
			tend = t;
			done -= done0;
			counts.cpu += cpu_now(c);
			counts.dcpu += dev_cpu_now(c);
			counts.mops = done;
			pdone = __atomic_load_n(&peer.frames, __ATOMIC_RELAXED) - pdone0;
			break;
		}
		if (got) {
			last = t;
			dq_kick(q);
			continue;
		}
		/* tx: half of what is out; rx: the next frame (as NAPI re-enables). */
		if (dq_arm(q, tx ? (uint16_t)(outstanding / 2) : 0))
			continue;
		if (!dq_wait(q, tx ? STALL_MS : 100) && (tx || t - last > STALL_MS / 1000.0)) {
			fprintf(stderr, "devpath: %s: %s\n", w->name,
				ctx_trouble(c, why, sizeof(why)));
			goto out;
		}
		if (atomic_load(&c->needs_reset)) {
			fprintf(stderr, "devpath: %s: %s\n", w->name,
				ctx_trouble(c, why, sizeof(why)));
			goto out;
		}
	}
	result = (double)done / (tend - tstart);
	note_counts(q, done + done0);
	*peer_rate = (double)pdone / (tend - tstart);
out:
	atomic_store(&peer.stop, true);
	if (write(peer.stop_fd, &one, 8) != 8)
		abort();
	pthread_join(peer.thread, NULL);
	peer_tid = 0;
	if (peer.error)
		fprintf(stderr, "devpath: %s: peer: %s\n", w->name, strerror(peer.error));
out_nopeer:
	ctx_free(c); /* the device goes first: the tap with it */
	close(nb.peer_fd);
	if (peer.stop_fd >= 0)
		close(peer.stop_fd);
	return result;
}

/* A private network namespace for the taps, IPv6 off in it (no stray router solicitations). */
static void netns_setup(void)
{
	static const char *const knobs[] = {"/proc/sys/net/ipv6/conf/default/disable_ipv6",
					    "/proc/sys/net/ipv6/conf/all/disable_ipv6"};

	if (unshare(CLONE_NEWNET)) {
		printf("devpath: no network namespace (%s): tap workloads skipped\n",
		       strerror(errno));
		return;
	}
	for (unsigned int i = 0; i < 2; i++) {
		int fd = open(knobs[i], O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (write(fd, "1", 1) != 1)
				printf("devpath: could not write %s\n", knobs[i]);
			close(fd);
		}
	}
	tap_ok = access("/dev/net/tun", R_OK | W_OK) == 0;
	if (!tap_ok)
		printf("devpath: no /dev/net/tun: tap workloads skipped\n");
}

/* ---- The image ---- */

static int image_make(const struct opts *o)
{
	uint64_t bytes = o->size_mib * MIB, s = 0x1234567887654321ull;
	struct statfs sf;
	struct stat st;
	uint64_t *buf;
	int fd;

	if (stat(o->image, &st) == 0 && (uint64_t)st.st_size == bytes && S_ISREG(st.st_mode)) {
		printf("devpath: image %s (%llu MiB, reused)\n", o->image,
		       (unsigned long long)o->size_mib);
	} else {
		fd = open(o->image, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		buf = malloc(MIB);
		if (fd < 0 || !buf) {
			fprintf(stderr, "devpath: cannot create %s: %s\n", o->image,
				strerror(errno));
			return -1;
		}
		for (uint64_t m = 0; m < o->size_mib; m++) {
			for (size_t i = 0; i < MIB / 8; i++)
				buf[i] = xorshift(&s);
			if (write(fd, buf, MIB) != (ssize_t)MIB) {
				fprintf(stderr, "devpath: writing %s: %s\n", o->image,
					strerror(errno));
				close(fd);
				free(buf);
				return -1;
			}
		}
		fsync(fd);
		close(fd);
		free(buf);
		printf("devpath: image %s: %llu MiB of random data written\n", o->image,
		       (unsigned long long)o->size_mib);
	}
	if (statfs(o->image, &sf) == 0 && (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC))
		printf("devpath: warning: %s is on tmpfs/ramfs, not a disk\n", o->image);
	return 0;
}

/* sync(2), then read the whole image into the page cache. */
static void image_warm(const struct opts *o)
{
	static char buf[1 << 20];
	int fd;

	sync();
	fd = open(o->image, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
}

/* ---- Main ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned int n)
{
	double s[MAX_RUNS];

	if (!n)
		return -1;
	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double best(const double *v, unsigned int n)
{
	double b = -1;

	for (unsigned int i = 0; i < n; i++)
		if (v[i] > b)
			b = v[i];
	return b;
}

/* "1234 MiB/s", "56789 IOPS" or "1.234 Mpps 5.67 Gbit/s" for a rate of workload @w. */
static void fmt(char *buf, size_t len, const struct workload *w, double r)
{
	if (r < 0)
		snprintf(buf, len, "n/a");
	else if (w->kind == K_BLK)
		snprintf(buf, len, "%.0f %s", r, w->unit);
	else
		snprintf(buf, len, "%.3f Mpps %.2f Gbit/s", r / 1e6, r * w->frame * 8 / 1e9);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: devpath [OPTIONS]\n"
		"  -i, --image PATH       raw image for virtio-blk (default ./devpath.img; on a "
		"disk)\n"
		"  -s, --size MIB         image size and range of the blk workloads (default 256)\n"
		"  -n, --runs N           measurements per workload and mode (default 5)\n"
		"  -t, --time SECONDS     measured time of each (default 1; plus 20%% warm-up)\n"
		"  -p, --policy-dir DIR   seccomp policies (default: the source tree's policies/)\n"
		"  -w, --workload LIST    comma-separated names or prefixes (blk, net, net_tx, "
		"_sp...)\n"
		"      --no-namespaces    sandboxed without namespaces (seccomp and no caps only)\n"
		"      --keep-image       do not delete the image at the end\n"
		"  -m, --mode MODE        only inproc or only sandboxed (for profiling)\n"
		"workloads:");
	for (unsigned int i = 0; i < N_WORKLOADS; i++)
		fprintf(f, " %s", workloads[i].name);
	fprintf(f, "\n");
}

static int parse_workloads(const char *list, struct opts *o)
{
	char *dup = strdup(list), *save = NULL;
	int ret = 0;

	for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		bool any = false;

		for (unsigned int i = 0; i < N_WORKLOADS; i++) {
			if (!strncmp(workloads[i].name, t, strlen(t)) ||
			    (t[0] == '_' && strstr(workloads[i].name, t))) {
				o->selected[i] = true;
				any = true;
			}
		}
		if (!any) {
			fprintf(stderr, "devpath: unknown workload '%s'\n", t);
			ret = -1;
		}
	}
	free(dup);
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{"image", required_argument, NULL, 'i'},
		{"size", required_argument, NULL, 's'},
		{"runs", required_argument, NULL, 'n'},
		{"time", required_argument, NULL, 't'},
		{"policy-dir", required_argument, NULL, 'p'},
		{"workload", required_argument, NULL, 'w'},
		{"no-namespaces", no_argument, NULL, 'N'},
		{"keep-image", no_argument, NULL, 'K'},
		{"mode", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static double res[N_WORKLOADS][2][MAX_RUNS], peer[N_WORKLOADS][2][MAX_RUNS];
	static double cpu[N_WORKLOADS][2][MAX_RUNS], dcpu[N_WORKLOADS][2][MAX_RUNS];
	unsigned int nres[N_WORKLOADS][2] = {{0}};
	struct opts o = {.image = "devpath.img",
			 .size_mib = 256,
			 .runs = 5,
			 .secs = 1,
			 .namespaces = true,
			 .only_mode = -1};
	bool any_blk = false, any_tap = false, any = false, failed = false;
	const char *env;
	int ch;

	env = getenv("LIBVMM_SECCOMP_POLICY_DIR");
	o.policy_dir = env && *env ? env : DEVPATH_POLICY_DIR;
	while ((ch = getopt_long(argc, argv, "i:s:n:t:p:w:m:h", lopts, NULL)) != -1) {
		switch (ch) {
		case 'i':
			o.image = optarg;
			break;
		case 's':
			o.size_mib = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			o.runs = (unsigned int)strtoul(optarg, NULL, 0);
			break;
		case 't':
			o.secs = strtod(optarg, NULL);
			break;
		case 'p':
			o.policy_dir = optarg;
			break;
		case 'w':
			if (parse_workloads(optarg, &o))
				return 2;
			break;
		case 'N':
			o.namespaces = false;
			break;
		case 'K':
			o.keep_image = true;
			break;
		case 'm':
			if (!strcmp(optarg, "inproc")) {
				o.only_mode = 0;
			} else if (!strcmp(optarg, "sandboxed")) {
				o.only_mode = 1;
			} else {
				usage(stderr);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || o.runs < 1 || o.runs > MAX_RUNS || o.size_mib < 1 || o.secs <= 0) {
		usage(stderr);
		return 2;
	}
	if (!o.policy_dir || !*o.policy_dir)
		o.policy_dir = NULL; /* the installed policies */
	for (unsigned int i = 0; i < N_WORKLOADS; i++)
		any |= o.selected[i];
	for (unsigned int i = 0; i < N_WORKLOADS; i++) {
		o.selected[i] |= !any;
		any_blk |= o.selected[i] && workloads[i].kind == K_BLK;
		any_tap |= o.selected[i] && workloads[i].backend == B_TAP;
	}

	printf("devpath: %u runs of %.1f s per workload and mode, policies from %s, sandbox %s\n",
	       o.runs, o.secs, o.policy_dir ? o.policy_dir : sandbox_default_policy_dir(),
	       o.namespaces ? "with namespaces" : "without namespaces");
	if (any_tap)
		netns_setup();
	if (any_blk && image_make(&o))
		return 1;
	fflush(stdout);

	for (unsigned int run = 0; run < o.runs; run++) {
		for (unsigned int wi = 0; wi < N_WORKLOADS; wi++) {
			const struct workload *w = &workloads[wi];

			if (!o.selected[wi] || (w->backend == B_TAP && !tap_ok))
				continue;
			for (unsigned int k = 0; k < 2; k++) {
				unsigned int mode = (run + k) % 2; /* 0 in-process, 1 sandboxed */
				double r, pr = 0;
				char a[64];

				if (o.only_mode >= 0 && (int)mode != o.only_mode)
					continue;
				memset(&counts, 0, sizeof(counts));
				if (w->kind == K_BLK) {
					image_warm(&o);
					r = blk_measure(w, mode, &o);
				} else {
					r = net_measure(w, mode, &o, &pr);
				}
				fmt(a, sizeof(a), w, r);
				printf("devpath run=%u workload=%s mode=%s rate=%.1f (%s)", run + 1,
				       w->name, mode ? "sandboxed" : "inproc", r, a);
				if (w->kind != K_BLK)
					printf(" peer=%.0f/s", pr);
				if (r >= 0 && counts.ops)
					printf(" cpu_us/op=%.2f dev_cpu_us/op=%.2f kicks/op=%.3f "
					       "sleeps/op=%.3f",
					       counts.mops ? counts.cpu / counts.mops * 1e6 : -1,
					       counts.mops ? counts.dcpu / counts.mops * 1e6 : -1,
					       (double)counts.kicks / counts.ops,
					       (double)counts.waits / counts.ops);
				printf("\n");
				fflush(stdout);
				if (r < 0) {
					failed = true;
					continue;
				}
				cpu[wi][mode][nres[wi][mode]] =
					counts.mops ? counts.cpu / counts.mops * 1e6 : -1;
				dcpu[wi][mode][nres[wi][mode]] =
					counts.mops ? counts.dcpu / counts.mops * 1e6 : -1;
				res[wi][mode][nres[wi][mode]] = r;
				peer[wi][mode][nres[wi][mode]++] = pr;
			}
		}
	}

	printf("\nvirtio device data path, host only (no KVM): median (best) of %u runs of %.1f "
	       "s;\n"
	       "CPU: microseconds of CPU used by the device's threads (worker, io_uring workers) "
	       "per\n"
	       "request or frame, median; the result lines also give the total with the driver\n",
	       o.runs, o.secs);
	printf("%-17s %-32s %-32s %-6s %-9s %-9s %s\n", "workload", "in-process", "sandboxed",
	       "ratio", "CPU in-p.", "CPU sand.", "CPU ratio");
	for (unsigned int wi = 0; wi < N_WORKLOADS; wi++) {
		const struct workload *w = &workloads[wi];
		unsigned int ni = nres[wi][0], ns = nres[wi][1];
		double mi, ms, ci, cs;
		char a[64], b[64], ca[100], cb[100], rr[16] = "n/a", cr[16] = "n/a";

		if (!o.selected[wi] || (w->backend == B_TAP && !tap_ok))
			continue;
		mi = median(res[wi][0], ni);
		ms = median(res[wi][1], ns);
		ci = median(dcpu[wi][0], ni);
		cs = median(dcpu[wi][1], ns);
		fmt(a, sizeof(a), w, mi);
		fmt(b, sizeof(b), w, ms);
		if (w->kind == K_BLK) {
			snprintf(ca, sizeof(ca), "%s (%.0f)", a, best(res[wi][0], ni));
			snprintf(cb, sizeof(cb), "%s (%.0f)", b, best(res[wi][1], ns));
		} else {
			snprintf(ca, sizeof(ca), "%s (%.3f)", a, best(res[wi][0], ni) / 1e6);
			snprintf(cb, sizeof(cb), "%s (%.3f)", b, best(res[wi][1], ns) / 1e6);
		}
		if (mi > 0 && ms >= 0)
			snprintf(rr, sizeof(rr), "%.2f", ms / mi);
		if (ci > 0 && cs > 0)
			snprintf(cr, sizeof(cr), "%.2f", cs / ci);
		printf("%-17s %-32s %-32s %-6s %-9.2f %-9.2f %s\n", w->name, ca, cb, rr, ci, cs,
		       cr);
	}
	printf("\n");
	for (unsigned int wi = 0; wi < N_WORKLOADS; wi++) {
		const struct workload *w = &workloads[wi];
		unsigned int ni = nres[wi][0], ns = nres[wi][1];
		double mi, ms, ci, cs;

		if (!o.selected[wi] || (w->backend == B_TAP && !tap_ok))
			continue;
		mi = median(res[wi][0], ni);
		ms = median(res[wi][1], ns);
		ci = median(cpu[wi][0], ni);
		cs = median(cpu[wi][1], ns);
		printf("devpath result workload=%s unit=%s bytes_per_op=%u runs=%u/%u "
		       "inproc_median=%.1f inproc_best=%.1f sandboxed_median=%.1f "
		       "sandboxed_best=%.1f peer_inproc_median=%.1f peer_sandboxed_median=%.1f "
		       "ratio=%.4f cpu_us_inproc=%.3f cpu_us_sandboxed=%.3f cpu_ratio=%.4f "
		       "dev_cpu_us_inproc=%.3f dev_cpu_us_sandboxed=%.3f dev_cpu_ratio=%.4f\n",
		       w->name, w->kind == K_BLK ? w->unit : "frames/s",
		       w->kind == K_BLK ? w->io_bytes : w->frame, ni, ns, mi, best(res[wi][0], ni),
		       ms, best(res[wi][1], ns), median(peer[wi][0], ni), median(peer[wi][1], ns),
		       mi > 0 && ms >= 0 ? ms / mi : -1, ci, cs, ci > 0 && cs > 0 ? cs / ci : -1,
		       median(dcpu[wi][0], ni), median(dcpu[wi][1], ns),
		       median(dcpu[wi][0], ni) > 0 && median(dcpu[wi][1], ns) > 0
			       ? median(dcpu[wi][1], ns) / median(dcpu[wi][0], ni)
			       : -1);
	}
	if (any_blk && !o.keep_image)
		unlink(o.image);
	return failed ? 1 : 0;
}
