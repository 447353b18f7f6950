/*
 * A host-side driver of libvmm's disk layer, for qcow2_interop.py: opens an
 * image through disk_open_opts() and runs commands read from stdin, one per
 * line, with several requests in flight (requests whose ranges overlap one
 * in flight wait for it, so results do not depend on timing).
 *
 *   disk_tool [--format F] [--ro] [--threads] [--cache BYTES] [--qd N] IMAGE
 *   disk_tool create PATH SIZE [CLUSTER_BITS [BACKING]]
 *
 * Commands (offsets and lengths in bytes; FILE is a raw file holding the
 * expected contents at the same offsets):
 *   write OFF LEN FILE   write FILE's bytes [OFF, OFF+LEN)
 *   verify OFF LEN FILE  read and compare with FILE; a mismatch exits 1
 *   read OFF LEN FILE    read into FILE at OFF
 *   discard OFF LEN | zero OFF LEN [unmap] | flush | wait | info
 *   bench-read COUNT BS SEED   random BS-aligned reads; prints iops
 *   stress SEED COUNT [LIMIT]  random writes, discards, zeroes and flushes
 *                              (in [0, LIMIT) when given)
 * Exits 0 when every command succeeded, 1 on a failed request or mismatch,
 * 2 on a usage or open error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "devices/disk.h"
#include "devices/qcow2.h"

#define MAX_QD 64

struct slot {
	struct disk_req req;
	struct iovec iov[4];
	uint8_t *buf;
	size_t cap;
	bool busy;
	int verify_fd; /* compare with this file after a read */
	int read_fd;   /* store a read here */
	uint64_t off, len;
};

static struct disk *disk;
static struct slot slots[MAX_QD];
static unsigned int qd = 8;
static int failed;
static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void req_done(struct disk_req *r)
{
	struct slot *s = r->opaque;
	uint8_t *exp;

	s->busy = false;
	if (r->result < 0) {
		fprintf(stderr, "disk_tool: op %d at %" PRIu64 "+%" PRIu64 " failed: %s\n", r->op,
			s->off, s->len, strerror((int)-r->result));
		failed = 1;
		return;
	}
	if (s->verify_fd >= 0) {
		exp = malloc(s->len);
		if (!exp || pread(s->verify_fd, exp, s->len, (off_t)s->off) != (ssize_t)s->len) {
			fprintf(stderr, "disk_tool: cannot read the expected data\n");
			failed = 1;
		} else if (memcmp(exp, s->buf, s->len)) {
			uint64_t i = 0;

			while (exp[i] == s->buf[i])
				i++;
			fprintf(stderr, "disk_tool: mismatch at %" PRIu64 ": got %#x, want %#x\n",
				s->off + i, s->buf[i], exp[i]);
			failed = 1;
		}
		free(exp);
	}
	if (s->read_fd >= 0 && pwrite(s->read_fd, s->buf, s->len, (off_t)s->off) != (ssize_t)s->len)
		failed = 1;
}

static void pump(bool block)
{
	struct pollfd p = {.fd = disk_event_fd(disk), .events = POLLIN};

	if (disk_complete(disk) == 0 && block && disk_inflight(disk))
		poll(&p, 1, 1000);
}

static void wait_all(void)
{
	disk_wait(disk);
}

/* A free slot whose range does not overlap any request in flight. */
static struct slot *get_slot(uint64_t off, uint64_t len, bool barrier)
{
	unsigned int i;
	bool clash;

	for (;;) {
		struct slot *free_slot = NULL;

		clash = false;
		for (i = 0; i < qd; i++) {
			struct slot *s = &slots[i];

			if (!s->busy) {
				if (!free_slot)
					free_slot = s;
				continue;
			}
			if (barrier || (off < s->off + s->len && s->off < off + len))
				clash = true;
		}
		if (free_slot && !clash)
			return free_slot;
		pump(true);
	}
}

static int submit(struct slot *s, enum disk_op op, uint64_t off, uint64_t len, unsigned int flags)
{
	struct disk_req *r = &s->req;
	int ret;

	memset(r, 0, sizeof(*r));
	r->op = op;
	r->offset = off;
	r->flags = flags;
	r->done = req_done;
	r->opaque = s;
	s->off = off;
	s->len = len;
	if (op == DISK_OP_READ || op == DISK_OP_WRITE) {
		/* Up to four pieces, to exercise scatter-gather. */
		uint64_t left = len, p = 0;
		unsigned int n = 0;

		while (left && n < 4) {
			uint64_t piece = n == 3 || left < 1024 ? left : 512 + rnd() % left;

			if (piece > left)
				piece = left;
			s->iov[n].iov_base = s->buf + p;
			s->iov[n].iov_len = piece;
			p += piece;
			left -= piece;
			n++;
		}
		r->iov = s->iov;
		r->iovcnt = n;
	} else {
		r->len = len;
	}
	s->busy = true;
	ret = disk_submit(disk, r);
	if (ret < 0) {
		s->busy = false;
		fprintf(stderr,
			"disk_tool: submit of op %d at %" PRIu64 "+%" PRIu64 " refused: %s\n", op,
			off, len, strerror(-ret));
		failed = 1;
	}
	return ret;
}

static int ensure_buf(struct slot *s, uint64_t len)
{
	if (s->cap >= len)
		return 0;
	free(s->buf);
	s->buf = malloc(len ? len : 1);
	s->cap = s->buf ? len : 0;
	return s->buf ? 0 : -ENOMEM;
}

static int open_file(const char *path, bool create)
{
	int fd = open(path, create ? O_RDWR | O_CREAT : O_RDONLY, 0644);

	if (fd < 0)
		fprintf(stderr, "disk_tool: cannot open %s: %s\n", path, strerror(errno));
	return fd;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_read(uint64_t count, uint64_t bs, uint64_t seed)
{
	uint64_t blocks = disk_size(disk) / bs, i;
	double t0;
	struct slot *s;

	rng_state = seed | 1;
	if (!blocks)
		return;
	t0 = now();
	for (i = 0; i < count; i++) {
		uint64_t off = (rnd() % blocks) * bs;

		s = get_slot(off, 0, false);
		if (ensure_buf(s, bs) < 0)
			exit(2);
		s->verify_fd = s->read_fd = -1;
		if (submit(s, DISK_OP_READ, off, bs, 0) < 0)
			return;
	}
	wait_all();
	printf("bench-read ops %" PRIu64 " secs %.4f iops %.0f\n", count, now() - t0,
	       (double)count / (now() - t0));
}

static void stress(uint64_t seed, uint64_t count, uint64_t limit)
{
	uint64_t size = disk_size(disk), i, off, len;
	unsigned int kind;
	struct slot *s;

	rng_state = seed | 1;
	if (limit && limit < size)
		size = limit;
	for (i = 0; i < count && !failed; i++) {
		kind = (unsigned int)(rnd() % 20);
		len = 512 * (1 + rnd() % 512);
		off = (rnd() % (size / 512)) * 512;
		if (off + len > size)
			len = size - off;
		if (kind == 0) {
			s = get_slot(0, 0, true);
			submit(s, DISK_OP_FLUSH, 0, 0, 0);
			continue;
		}
		s = get_slot(off, len, false);
		s->verify_fd = s->read_fd = -1;
		if (kind < 3) {
			submit(s, DISK_OP_DISCARD, off, len, 0);
		} else if (kind < 5) {
			submit(s, DISK_OP_WRITE_ZEROES, off, len, kind == 4 ? DISK_REQ_F_UNMAP : 0);
		} else {
			if (ensure_buf(s, len) < 0)
				exit(2);
			memset(s->buf, (int)(rnd() & 0xff), len);
			submit(s, kind < 8 ? DISK_OP_READ : DISK_OP_WRITE, off, len, 0);
		}
	}
	wait_all();
}

static int run(FILE *in)
{
	char line[4096], cmd[32], file[3072], extra[32];
	uint64_t a, b, c;
	struct slot *s;
	int n, fd;

	while (fgets(line, sizeof(line), in) && !failed) {
		extra[0] = '\0';
		n = sscanf(line, "%31s %" SCNu64 " %" SCNu64 " %3071s", cmd, &a, &b, file);
		if (n < 1 || cmd[0] == '#')
			continue;
		if (!strcmp(cmd, "write") || !strcmp(cmd, "verify") || !strcmp(cmd, "read")) {
			bool wr = cmd[0] == 'w';

			if (n != 4)
				goto usage;
			fd = open_file(file, cmd[0] == 'r');
			if (fd < 0)
				return 2;
			s = get_slot(a, b, false);
			if (ensure_buf(s, b) < 0)
				return 2;
			s->verify_fd = cmd[0] == 'v' ? fd : -1;
			s->read_fd = cmd[0] == 'r' ? fd : -1;
			if (wr && pread(fd, s->buf, b, (off_t)a) != (ssize_t)b) {
				fprintf(stderr, "disk_tool: %s is too short\n", file);
				return 2;
			}
			submit(s, wr ? DISK_OP_WRITE : DISK_OP_READ, a, b, 0);
			wait_all(); /* the fd is closed next: keep it simple */
			close(fd);
		} else if (!strcmp(cmd, "discard") || !strcmp(cmd, "zero")) {
			if (n < 3)
				goto usage;
			sscanf(line, "%*s %*s %*s %31s", extra);
			s = get_slot(a, b, false);
			s->verify_fd = s->read_fd = -1;
			submit(s, cmd[0] == 'd' ? DISK_OP_DISCARD : DISK_OP_WRITE_ZEROES, a, b,
			       !strcmp(extra, "unmap") ? DISK_REQ_F_UNMAP : 0);
		} else if (!strcmp(cmd, "flush")) {
			s = get_slot(0, 0, true);
			submit(s, DISK_OP_FLUSH, 0, 0, 0);
		} else if (!strcmp(cmd, "wait")) {
			wait_all();
		} else if (!strcmp(cmd, "info")) {
			printf("size %" PRIu64 " format %s engine %s\n", disk_size(disk),
			       disk_format_name(disk), disk_engine(disk));
		} else if (!strcmp(cmd, "bench-read")) {
			if (sscanf(line, "%*s %" SCNu64 " %" SCNu64 " %" SCNu64, &a, &b, &c) != 3)
				goto usage;
			bench_read(a, b, c);
		} else if (!strcmp(cmd, "stress")) {
			if (n < 3)
				goto usage;
			stress(a, b, n == 4 ? strtoull(file, NULL, 0) : 0);
		} else {
			goto usage;
		}
		fflush(stdout);
	}
	wait_all();
	return failed;
usage:
	fprintf(stderr, "disk_tool: bad command: %s", line);
	return 2;
}

int main(int argc, char **argv)
{
	struct disk_opts o = {0};
	struct vmm_err err = {""};
	int i = 1, ret;

	if (argc >= 4 && !strcmp(argv[1], "create")) {
		ret = qcow2_create(argv[2], strtoull(argv[3], NULL, 0),
				   argc > 4 ? (unsigned int)atoi(argv[4]) : 0,
				   argc > 5 ? argv[5] : NULL, &err);
		if (ret < 0) {
			fprintf(stderr, "disk_tool: %s\n", err.msg);
			return 1;
		}
		return 0;
	}
	for (; i < argc - 1; i++) {
		if (!strcmp(argv[i], "--format") && i + 1 < argc - 1) {
			if (disk_format_parse(argv[++i], &o.format) < 0)
				return 2;
		} else if (!strcmp(argv[i], "--ro")) {
			o.flags |= DISK_OPEN_READ_ONLY;
		} else if (!strcmp(argv[i], "--threads")) {
			o.flags |= DISK_OPEN_THREAD_POOL;
		} else if (!strcmp(argv[i], "--cache") && i + 1 < argc - 1) {
			o.cache_bytes = strtoull(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--qd") && i + 1 < argc - 1) {
			qd = (unsigned int)atoi(argv[++i]);
			if (qd < 1 || qd > MAX_QD)
				return 2;
		} else {
			break;
		}
	}
	if (i != argc - 1) {
		fprintf(stderr, "usage: disk_tool [--format F] [--ro] [--threads] [--cache B] "
				"[--qd N] IMAGE < commands\n"
				"       disk_tool create PATH SIZE [CLUSTER_BITS [BACKING]]\n");
		return 2;
	}
	ret = disk_open_opts(argv[i], &o, &disk, &err);
	if (ret < 0) {
		fprintf(stderr, "disk_tool: %s\n", err.msg);
		return 2;
	}
	ret = run(stdin);
	disk_close(disk);
	for (i = 0; i < MAX_QD; i++)
		free(slots[i].buf);
	return ret;
}
