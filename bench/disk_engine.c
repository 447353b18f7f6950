/*
 * Host-side benchmark of libvmm's disk layer (devices/disk.h), no guest and
 * no KVM: the three workloads of the test guest's guest.blk.bench, run
 * straight through disk_submit() / disk_complete() on an image file.
 *
 *   disk_engine [OPTIONS] IMAGE
 *   disk_engine --tsc-khz
 *
 * Workloads (like the guest's; the range is [0, size)):
 *   seq_write_1m  sequential 1 MiB writes over the range
 *   seq_read_1m   sequential 1 MiB reads over the range
 *   rand_read_4k  size/4 KiB reads at random 4 KiB-aligned offsets of the
 *                 range (with repeats, as the guest picks them)
 * each with up to --depth requests in flight. A done() callback resubmits
 * at once; the loop polls disk_event_fd() and calls disk_complete(). Time
 * runs from the first disk_submit() to the last done(); opening and
 * disk_close() (which flushes a writable disk) are not timed. With
 * --runtime no request is started after that many seconds, and the figures
 * cover what was done (complete=no). With --loop the workload starts over at
 * the end of the range until the runtime is up (steady state, as fio's
 * time_based).
 *
 * libvmm opens images without O_DIRECT: every request goes through the host
 * page cache. --cold drops the image's pages from the page cache before each
 * workload (fdatasync, then POSIX_FADV_DONTNEED: only this file, no root
 * needed); otherwise the page cache is used as found.
 *
 * The image is raw or qcow2 (--format; detected from its header by
 * default), as disk_open_opts() takes it.
 *
 * One line per workload on stdout:
 *   disk_engine workload=W engine=E format=F depth=N bytes=B ios=N
 *       seconds=S mib_s=X iops=Y complete=yes|no
 * (on one line). --tsc-khz instead measures the TSC rate against
 * CLOCK_MONOTONIC_RAW for about 0.3 s and prints tsc_khz=N: a KVM guest
 * without TSC scaling counts at that rate (bench/blk converts the guest's
 * TSC figures with it when the guest cannot tell its own rate).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "devices/disk.h"
#include "lib/err.h"

#define MIB	    (1024ULL * 1024)
#define BLK_4K	    4096ULL
#define MAX_DEPTH   1024
#define N_WORKLOADS 3

enum workload {
	W_SEQ_WRITE,
	W_SEQ_READ,
	W_RAND_READ,
};

static const char *const wl_names[N_WORKLOADS] = {"seq_write_1m", "seq_read_1m", "rand_read_4k"};

struct slot {
	struct disk_req req;
	struct iovec iov;
	struct run *run;
};

struct run {
	struct disk *d;
	enum workload wl;
	uint64_t range;	 /* bytes of [0, range) the workload covers */
	uint64_t total;	 /* requests the workload makes */
	uint64_t next;	 /* requests started */
	uint64_t done;	 /* requests finished */
	uint64_t bytes;	 /* bytes moved */
	uint64_t rng;	 /* rand_read_4k offsets */
	double deadline; /* no new request after this (CLOCK_MONOTONIC seconds), 0: none */
	bool loop;	 /* start over at the end of the range until the deadline */
	bool stopped;	 /* the deadline passed */
	int error;	 /* first -errno of a request or of disk_submit() */
	unsigned int inflight;
};

static double now(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* splitmix64, as the guest's mix64(). */
static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void req_done(struct disk_req *req);

/* Start the next request of the workload on @s, if any is left. */
static void start(struct slot *s)
{
	struct run *r = s->run;
	uint64_t len, off;
	int ret;

	if (r->error || (r->next >= r->total && !r->loop))
		return;
	if (r->deadline > 0 && (r->next & 7) == 0 && now(CLOCK_MONOTONIC) >= r->deadline)
		r->stopped = true;
	if (r->stopped)
		return;
	if (r->wl == W_RAND_READ) {
		len = BLK_4K;
		off = (mix64(r->rng++) % (r->range / BLK_4K)) * BLK_4K;
	} else {
		off = (r->next % r->total) * MIB;
		len = r->range - off < MIB ? r->range - off : MIB;
	}
	s->iov.iov_len = len;
	s->req.op = r->wl == W_SEQ_WRITE ? DISK_OP_WRITE : DISK_OP_READ;
	s->req.flags = 0;
	s->req.offset = off;
	s->req.iov = &s->iov;
	s->req.iovcnt = 1;
	s->req.done = req_done;
	s->req.opaque = s;
	ret = disk_submit(r->d, &s->req);
	if (ret < 0) {
		r->error = ret;
		return;
	}
	r->next++;
	r->inflight++;
}

static void req_done(struct disk_req *req)
{
	struct slot *s = req->opaque;
	struct run *r = s->run;

	r->inflight--;
	r->done++;
	if (req->result < 0) {
		if (!r->error)
			r->error = (int)req->result;
		return;
	}
	r->bytes += (uint64_t)req->result;
	start(s);
}

/* Write back and drop the page cache of @path (only that file's pages). */
static int drop_cache(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC), e;

	if (fd < 0)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fdatasync(fd) < 0 && errno != EBADF && errno != EINVAL) {
		e = errno;
		close(fd);
		return -e;
	}
	e = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
	return -e;
}

static int run_workload(const char *path, enum workload wl, unsigned int flags,
			enum disk_format format, uint64_t size_mib, unsigned int depth,
			double runtime, bool loop, uint8_t *bufs)
{
	struct disk_opts o = {.flags = flags | (wl == W_SEQ_WRITE ? 0 : DISK_OPEN_READ_ONLY),
			      .format = format};
	struct vmm_err err = {{0}};
	struct slot *slots;
	struct pollfd pfd;
	struct run r;
	const char *engine, *fmt;
	double t0, t1, secs;
	unsigned int i;
	int ret;

	memset(&r, 0, sizeof(r));
	r.wl = wl;
	r.loop = loop;
	r.rng = 0x5eed;
	ret = disk_open_opts(path, &o, &r.d, &err);
	if (ret < 0) {
		fprintf(stderr, "disk_engine: %s\n", err.msg);
		return 1;
	}
	r.range = size_mib ? size_mib * MIB : disk_size(r.d) / MIB * MIB;
	if (r.range < MIB || r.range > disk_size(r.d)) {
		fprintf(stderr,
			"disk_engine: %s: size %llu MiB does not fit the image (%llu bytes)\n",
			path, (unsigned long long)(r.range / MIB),
			(unsigned long long)disk_size(r.d));
		disk_close(r.d);
		return 1;
	}
	r.total = wl == W_RAND_READ ? r.range / BLK_4K : r.range / MIB;
	slots = calloc(depth, sizeof(*slots));
	if (!slots) {
		disk_close(r.d);
		return 1;
	}
	for (i = 0; i < depth; i++) {
		slots[i].run = &r;
		slots[i].iov.iov_base = bufs + (size_t)i * MIB;
	}

	t0 = now(CLOCK_MONOTONIC);
	if (runtime > 0)
		r.deadline = t0 + runtime;
	for (i = 0; i < depth; i++)
		start(&slots[i]);
	pfd.fd = disk_event_fd(r.d);
	pfd.events = POLLIN;
	while (r.inflight) {
		if (disk_complete(r.d) == 0 && r.inflight) {
			if (poll(&pfd, 1, 60000) == 0) {
				fprintf(stderr, "disk_engine: %s: no completion for 60 s\n", path);
				r.error = -ETIMEDOUT;
				break;
			}
		}
	}
	t1 = now(CLOCK_MONOTONIC);
	engine = disk_engine(r.d); /* static strings: still valid after disk_close() */
	fmt = disk_format_name(r.d);
	disk_close(r.d);
	free(slots);
	if (r.error) {
		fprintf(stderr, "disk_engine: %s: %s: %s\n", path, wl_names[wl],
			strerror(-r.error));
		return 1;
	}
	secs = t1 - t0;
	printf("disk_engine workload=%s engine=%s format=%s depth=%u bytes=%llu ios=%llu "
	       "seconds=%.6f mib_s=%.1f iops=%.0f complete=%s\n",
	       wl_names[wl], engine, fmt, depth, (unsigned long long)r.bytes,
	       (unsigned long long)r.done, secs, secs > 0 ? (double)r.bytes / MIB / secs : 0.0,
	       secs > 0 ? (double)r.done / secs : 0.0, r.done >= r.total ? "yes" : "no");
	fflush(stdout);
	return 0;
}

static int tsc_khz(void)
{
	double w0, w1;
	uint64_t c0, c1;

	w0 = now(CLOCK_MONOTONIC_RAW);
	c0 = __rdtsc();
	do
		w1 = now(CLOCK_MONOTONIC_RAW);
	while (w1 - w0 < 0.3);
	c1 = __rdtsc();
	printf("tsc_khz=%.0f\n", (double)(c1 - c0) / (w1 - w0) / 1000.0);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: disk_engine [OPTIONS] IMAGE\n"
		"       disk_engine --tsc-khz\n"
		"\n"
		"Benchmark libvmm's disk layer on IMAGE (overwritten by seq_write_1m).\n"
		"\n"
		"  -w, --workload W   seq_write_1m, seq_read_1m or rand_read_4k (repeatable;\n"
		"                     default: all three in that order)\n"
		"  -e, --engine E     io_uring (default; libvmm falls back to threads when the\n"
		"                     kernel refuses io_uring) or threads (DISK_OPEN_THREAD_POOL)\n"
		"  -f, --format F     raw, qcow2 or detect (default: detect from the header)\n"
		"  -s, --size MIB     range [0, MIB MiB) (default: the whole image)\n"
		"  -q, --depth N      requests in flight (default 32, at most %d)\n"
		"  -t, --runtime S    start no request after S s per workload (default: no limit)\n"
		"      --loop         with --runtime: go over the range again and again until\n"
		"                     then (steady state; complete=yes once it was covered)\n"
		"      --cold         drop the image's page cache before each workload\n"
		"      --tsc-khz      print the TSC rate measured against CLOCK_MONOTONIC_RAW\n",
		MAX_DEPTH);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"workload", required_argument, NULL, 'w'},
		{"engine", required_argument, NULL, 'e'},
		{"format", required_argument, NULL, 'f'},
		{"size", required_argument, NULL, 's'},
		{"depth", required_argument, NULL, 'q'},
		{"runtime", required_argument, NULL, 't'},
		{"cold", no_argument, NULL, 'c'},
		{"tsc-khz", no_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{"loop", no_argument, NULL, 'l'},
		{NULL, 0, NULL, 0},
	};
	enum workload wls[16];
	unsigned int nwl = 0, depth = 32, flags = 0, i, w;
	enum disk_format format = DISK_FORMAT_DETECT;
	uint64_t size_mib = 0;
	double runtime = 0;
	bool cold = false, loop = false;
	uint8_t *bufs;
	char *end;
	int c, ret;

	while ((c = getopt_long(argc, argv, "w:e:f:s:q:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 'w':
			for (w = 0; w < N_WORKLOADS && strcmp(optarg, wl_names[w]); w++)
				;
			if (w == N_WORKLOADS || nwl == sizeof(wls) / sizeof(wls[0])) {
				fprintf(stderr, "disk_engine: bad or too many --workload: %s\n",
					optarg);
				return 2;
			}
			wls[nwl++] = (enum workload)w;
			break;
		case 'e':
			if (!strcmp(optarg, "threads")) {
				flags = DISK_OPEN_THREAD_POOL;
			} else if (!strcmp(optarg, "io_uring")) {
				flags = 0;
			} else {
				fprintf(stderr, "disk_engine: --engine io_uring|threads\n");
				return 2;
			}
			break;
		case 'f':
			if (disk_format_parse(optarg, &format) < 0) {
				fprintf(stderr, "disk_engine: --format raw|qcow2|detect\n");
				return 2;
			}
			break;
		case 's':
			errno = 0;
			size_mib = strtoull(optarg, &end, 0);
			if (errno || *end || !size_mib || size_mib > (1ULL << 40)) {
				fprintf(stderr, "disk_engine: bad --size: %s\n", optarg);
				return 2;
			}
			break;
		case 'q':
			depth = (unsigned int)strtoul(optarg, &end, 0);
			if (*end || !depth || depth > MAX_DEPTH) {
				fprintf(stderr, "disk_engine: bad --depth: %s\n", optarg);
				return 2;
			}
			break;
		case 't':
			runtime = strtod(optarg, &end);
			if (*end || runtime < 0) {
				fprintf(stderr, "disk_engine: bad --runtime: %s\n", optarg);
				return 2;
			}
			break;
		case 'c':
			cold = true;
			break;
		case 'l':
			loop = true;
			break;
		case 'k':
			return tsc_khz();
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	if (loop && runtime <= 0) {
		fprintf(stderr, "disk_engine: --loop needs --runtime\n");
		return 2;
	}
	if (!nwl) {
		for (w = 0; w < N_WORKLOADS; w++)
			wls[nwl++] = (enum workload)w;
	}
	/* One 1 MiB buffer per slot; written data is a fixed non-zero pattern. */
	if (posix_memalign((void **)&bufs, 4096, (size_t)depth * MIB)) {
		fprintf(stderr, "disk_engine: out of memory\n");
		return 1;
	}
	for (i = 0; i < depth * MIB / 8; i++)
		((uint64_t *)bufs)[i] = mix64(i);

	ret = 0;
	for (i = 0; i < nwl && !ret; i++) {
		if (cold) {
			ret = drop_cache(argv[optind]);
			if (ret < 0) {
				fprintf(stderr,
					"disk_engine: cannot drop the page cache of %s: %s\n",
					argv[optind], strerror(-ret));
				ret = 1;
				break;
			}
		}
		ret = run_workload(argv[optind], wls[i], flags, format, size_mib, depth, runtime,
				   loop, bufs);
	}
	free(bufs);
	return ret;
}
