/*
 * The host's end of the test guest's UDP rate modes (guest.net.blast_tx,
 * guest.net.sink; tests/guest/README.md): a plain UDP socket that counts
 * what arrives, or sends as fast as the kernel takes it. No guest needed.
 *
 *   netblast sink IFACE_OR_BIND PORT SECONDS [--idle S] [--wait S]
 *   netblast send DST_IP PORT SECONDS BYTES
 *
 * sink binds PORT on an IPv4 address (a.b.c.d, 0.0.0.0 for any) or on an
 * interface (SO_BINDTODEVICE, any address), waits up to --wait seconds
 * (default 60) for the first datagram, then counts datagrams for SECONDS
 * from it, stopping earlier when none came for --idle seconds (default 1).
 * "seconds" is from the first datagram counted to the last (CLOCK_MONOTONIC).
 *
 * send sends datagrams of BYTES bytes (zeros, 1-65507) to DST_IP:PORT for
 * SECONDS, in batches of 64 (sendmmsg), without a UDP checksum
 * (SO_NO_CHECK: the receiver has nothing to verify). "frames" counts what
 * the kernel accepted, not what arrived: a full queue on the way drops
 * silently. "seconds" is from the first batch to the last.
 *
 * Both stop early on SIGINT / SIGTERM and print what they have, one line:
 *   netblast sink port=P frames=N bytes=N seconds=S
 *   netblast send dst=A port=P frames=N bytes=N seconds=S errors=N
 * bytes are UDP payload bytes. Exit status: 0, 1 when nothing was received
 * or sent (or on an error), 2 on bad usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH	  64
#define BUF_SIZE  2048	/* a 1514-byte frame's payload fits; longer ones are counted truncated */
#define UDP_LIMIT 65507 /* largest IPv4 UDP payload */
#define RCVBUF	  (16 << 20)

#ifndef SO_NO_CHECK
#define SO_NO_CHECK 11
#endif

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A decimal number in [min, max]; false if s is not one. */
static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *v)
{
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9')
		return false;
	*v = strtoull(s, &end, 10);
	return !errno && !*end && *v >= min && *v <= max;
}

/* Seconds, > 0 (fractions allowed). */
static bool parse_secs(const char *s, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(s, &end);
	return !errno && end != s && !*end && *v > 0 && *v < 1e6;
}

static int sink(const char *where, uint16_t port, double secs, double idle, double wait)
{
	static char bufs[BATCH][BUF_SIZE];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	uint64_t frames = 0, bytes = 0;
	double first = 0, last = 0, t, until;
	struct pollfd pfd;
	int fd, n, i, size = RCVBUF, ms;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("netblast: socket");
		return 1;
	}
	if (inet_pton(AF_INET, where, &sa.sin_addr) != 1) {
		sa.sin_addr.s_addr = htonl(INADDR_ANY);
		if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, where, (socklen_t)strlen(where)) <
		    0) {
			fprintf(stderr,
				"netblast: %s: neither an IPv4 address nor an interface: %s\n",
				where, strerror(errno));
			close(fd);
			return 2;
		}
	}
	/* a deep queue: the count must not depend on how quickly this loop is scheduled */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "netblast: bind %s port %u: %s\n", where, port, strerror(errno));
		close(fd);
		return 1;
	}
	printf("netblast sink listening port=%u\n", port);
	fflush(stdout);
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = BUF_SIZE;
		memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	pfd.fd = fd;
	pfd.events = POLLIN;
	until = now() + wait;
	while (!stop) {
		t = now();
		if (frames && t >= first + secs)
			break;
		if (t >= until)
			break;
		n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT | MSG_TRUNC, NULL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				perror("netblast: recvmmsg");
				break;
			}
			ms = (int)((until - t) * 1000) + 1;
			if (frames && first + secs < until)
				ms = (int)((first + secs - t) * 1000) + 1;
			if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
				perror("netblast: poll");
				break;
			}
			continue;
		}
		t = now();
		if (!frames)
			first = t;
		else if (t >= first + secs)
			break; /* after the window: not counted */
		frames += (uint64_t)n;
		for (i = 0; i < n; i++)
			bytes += msgs[i].msg_len;
		last = t;
		until = t + idle;
	}
	close(fd);
	printf("netblast sink port=%u frames=%llu bytes=%llu seconds=%.6f\n", port,
	       (unsigned long long)frames, (unsigned long long)bytes, frames ? last - first : 0.0);
	return frames ? 0 : 1;
}

static int send_udp(const char *dst, uint16_t port, double secs, uint32_t size)
{
	static char payload[UDP_LIMIT];
	struct mmsghdr msgs[BATCH];
	struct iovec iov = {.iov_base = payload, .iov_len = size};
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	uint64_t frames = 0, errors = 0;
	double first = 0, last = 0, end;
	int fd, n, i, one = 1, ret = 0;

	if (inet_pton(AF_INET, dst, &sa.sin_addr) != 1) {
		fprintf(stderr, "netblast: %s is not an IPv4 address\n", dst);
		return 2;
	}
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("netblast: socket");
		return 1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof(one)) < 0)
		fprintf(stderr, "netblast: SO_NO_CHECK: %s (sending with checksums)\n",
			strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "netblast: connect %s port %u: %s\n", dst, port, strerror(errno));
		close(fd);
		return 1;
	}
	for (i = 0; i < BATCH; i++) {
		memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	first = now();
	end = first + secs;
	while (!stop && (last = now()) < end) {
		n = sendmmsg(fd, msgs, BATCH, 0);
		if (n >= 0) {
			frames += (uint64_t)n;
			continue;
		}
		/* a full queue, or ICMP unreachable from an earlier datagram: go on */
		if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED ||
		    errno == EHOSTUNREACH || errno == EINTR) {
			errors++;
			continue;
		}
		perror("netblast: sendmmsg");
		ret = 1;
		break;
	}
	close(fd);
	printf("netblast send dst=%s port=%u frames=%llu bytes=%llu seconds=%.6f errors=%llu\n",
	       dst, port, (unsigned long long)frames, (unsigned long long)frames * size,
	       last - first, (unsigned long long)errors);
	return ret ? ret : frames ? 0 : 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: netblast sink IFACE_OR_BIND PORT SECONDS [--idle S] [--wait S]\n"
		   "       netblast send DST_IP PORT SECONDS BYTES\n");
}

int main(int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: stop waiting */
	double secs, idle = 1, wait = 60;
	uint64_t port, size;
	int i;

	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	if (argc < 5 || !parse_u64(argv[3], 1, 65535, &port) || !parse_secs(argv[4], &secs)) {
		usage(stderr);
		return 2;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[1], "sink")) {
		for (i = 5; i < argc; i += 2) {
			if (i + 1 >= argc ||
			    (strcmp(argv[i], "--idle") && strcmp(argv[i], "--wait")) ||
			    !parse_secs(argv[i + 1], !strcmp(argv[i], "--idle") ? &idle : &wait)) {
				usage(stderr);
				return 2;
			}
		}
		return sink(argv[2], (uint16_t)port, secs, idle, wait);
	}
	if (!strcmp(argv[1], "send") && argc == 6 && parse_u64(argv[5], 1, UDP_LIMIT, &size))
		return send_udp(argv[2], (uint16_t)port, secs, (uint32_t)size);
	usage(stderr);
	return 2;
}
