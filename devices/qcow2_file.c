/* qcow2: synchronous file I/O of the metadata side, and the cursor over a request's iovecs. */
#include <errno.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2_internal.h"

/* Read [off, off + len); bytes past the end of the file read as zeros. */
int q2_file_read(int fd, uint64_t off, void *buf, size_t len)
{
	uint8_t *p = buf;
	ssize_t n;

	while (len) {
		n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			memset(p, 0, len);
			return 0;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int q2_file_write(int fd, uint64_t off, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	ssize_t n;

	while (len) {
		n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* Skip @n bytes of iov[0..*cnt), which the caller owns. */
static void iov_skip(struct iovec **iov, unsigned int *cnt, size_t n)
{
	while (n && *cnt) {
		if (n < (*iov)->iov_len) {
			(*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
			(*iov)->iov_len -= n;
			return;
		}
		n -= (*iov)->iov_len;
		(*iov)++;
		(*cnt)--;
	}
}

/* preadv/pwritev of @len bytes until done; reads past the end of the file give zeros. */
static int file_rwv(int fd, bool write, uint64_t off, struct iovec *iov, unsigned int cnt,
		    size_t len)
{
	ssize_t n;

	while (len && cnt) {
		n = write ? pwritev(fd, iov, (int)cnt, (off_t)off)
			  : preadv(fd, iov, (int)cnt, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			if (write)
				return -EIO;
			for (; cnt; iov++, cnt--)
				memset(iov->iov_base, 0, iov->iov_len);
			return 0;
		}
		off += (uint64_t)n;
		len -= (size_t)n;
		iov_skip(&iov, &cnt, (size_t)n);
	}
	return 0;
}

int q2_file_sync(struct qcow2 *q)
{
	return fdatasync(q->fd) < 0 ? -errno : 0;
}

void q2_file_grew(struct qcow2 *q, uint64_t end)
{
	if (end > q->file_size) {
		pthread_mutex_lock(&q->lock);
		q->file_size = end;
		pthread_mutex_unlock(&q->lock);
	}
}

int q2_file_size_of(int fd, uint64_t *size, dev_t *dev, ino_t *ino)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*dev = st.st_dev;
	*ino = st.st_ino;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*size = (uint64_t)st.st_size;
	return 0;
}

void q2_cur_init(struct iovcur *c, const struct iovec *iov, unsigned int cnt)
{
	c->iov = iov;
	c->cnt = cnt;
	c->idx = 0;
	c->skip = 0;
}

void q2_cur_advance(struct iovcur *c, size_t n)
{
	size_t left;

	while (n && c->idx < c->cnt) {
		left = c->iov[c->idx].iov_len - c->skip;
		if (n < left) {
			c->skip += n;
			return;
		}
		n -= left;
		c->idx++;
		c->skip = 0;
	}
}

/* Describe the next @n bytes in out[] (at most @max entries); returns the count, 0 if too many. */
unsigned int q2_cur_slice(const struct iovcur *c, size_t n, struct iovec *out, unsigned int max)
{
	unsigned int i = c->idx, k = 0;
	size_t skip = c->skip, take;

	while (n && i < c->cnt) {
		take = c->iov[i].iov_len - skip;
		if (take > n)
			take = n;
		if (take) {
			if (k == max)
				return 0;
			out[k].iov_base = (uint8_t *)c->iov[i].iov_base + skip;
			out[k].iov_len = take;
			k++;
		}
		n -= take;
		i++;
		skip = 0;
	}
	return k;
}

/* Copy @n bytes from @src into the cursor (NULL: zeros) and advance. */
void q2_cur_fill(struct iovcur *c, const uint8_t *src, size_t n)
{
	size_t take;

	while (n && c->idx < c->cnt) {
		take = c->iov[c->idx].iov_len - c->skip;
		if (take > n)
			take = n;
		if (src) {
			memcpy((uint8_t *)c->iov[c->idx].iov_base + c->skip, src, take);
			src += take;
		} else {
			memset((uint8_t *)c->iov[c->idx].iov_base + c->skip, 0, take);
		}
		n -= take;
		q2_cur_advance(c, take);
	}
}

/* Copy @n bytes out of the cursor into @dst and advance. */
void q2_cur_take(struct iovcur *c, uint8_t *dst, size_t n)
{
	size_t take;

	while (n && c->idx < c->cnt) {
		take = c->iov[c->idx].iov_len - c->skip;
		if (take > n)
			take = n;
		memcpy(dst, (uint8_t *)c->iov[c->idx].iov_base + c->skip, take);
		dst += take;
		n -= take;
		q2_cur_advance(c, take);
	}
}

/* Read or write @n bytes at host @off straight from/to the cursor, and advance it. */
int q2_cur_io(struct qcow2 *q, bool write, uint64_t off, struct iovcur *c, size_t n)
{
	unsigned int k;
	int ret;

	if (!q->sl) {
		q->sl = calloc(DISK_MAX_IOV + 2, sizeof(*q->sl));
		if (!q->sl)
			return -ENOMEM;
	}
	k = q2_cur_slice(c, n, q->sl, DISK_MAX_IOV + 2);
	if (!k && n)
		return -EINVAL;
	ret = file_rwv(q->fd, write, off, q->sl, k, n);
	if (ret == 0)
		q2_cur_advance(c, n);
	return ret;
}
