/*
 * qcow2 images, versions 2 and 3 (QEMU's docs/interop/qcow2.txt): opening
 * an image and its backing chain, statistics, closing. qcow2_internal.h
 * lists the other files of the format.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2_internal.h"

static void img_free(struct qcow2 *q)
{
	struct qcow2 *b;
	struct qfast *f;

	while (q) {
		b = q->backing;
		while ((f = q->live)) {
			q->live = f->next;
			free(f);
		}
		while ((f = q->pool)) {
			q->pool = f->next;
			free(f);
		}
		q2_cache_free(&q->l2c);
		q2_cache_free(&q->rbc);
		free(q->l1);
		free(q->rt);
		free(q->frees);
		free(q->bounce);
		free(q->cbuf);
		free(q->dcache);
		free(q->sl);
		free(q->l2_spare);
		free(q->path);
		if (q->zs_ready)
			inflateEnd(&q->zs);
#if HAVE_ZSTD
		ZSTD_freeDCtx(q->zd);
#endif
		if (q->own_fd && q->fd >= 0)
			close(q->fd);
		pthread_mutex_destroy(&q->lock);
		pthread_cond_destroy(&q->drained);
		pthread_cond_destroy(&q->cond);
		free(q);
		q = b;
	}
}

static struct qcow2 *img_alloc(int fd, const char *path)
{
	struct qcow2 *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->fd = fd;
	q->path = strdup(path);
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->drained, NULL);
	pthread_cond_init(&q->cond, NULL);
	if (!q->path) {
		img_free(q);
		return NULL;
	}
	return q;
}

/* Read a table of @n big-endian 64-bit entries at @off into host order. */
static int read_table(int fd, uint64_t off, uint64_t n, uint64_t **out)
{
	uint64_t *t = malloc((n ? n : 1) * sizeof(*t)), i;
	int ret;

	*out = t;
	if (!t)
		return -ENOMEM;
	ret = q2_file_read(fd, off, t, n * 8);
	if (ret < 0)
		return ret;
	for (i = 0; i < n; i++)
		t[i] = get64((const uint8_t *)&t[i]);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Every L2 table and refcount block is its own cluster: two table pointers
 * to one cluster are corruption (and would let a small file make scans
 * quadratic). Returns true when they are all distinct.
 */
static bool tables_distinct(const struct qcow2 *q)
{
	uint64_t *all, n = 0, i;
	bool ok = true;

	all = malloc(((uint64_t)q->l1_size + q->rt_entries + 1) * sizeof(*all));
	if (!all)
		return false;
	for (i = 0; i < q->l1_size; i++)
		if (q->l1[i] & L1E_OFFSET_MASK)
			all[n++] = q->l1[i] & L1E_OFFSET_MASK;
	for (i = 0; i < q->rt_entries; i++)
		if (q->rt[i])
			all[n++] = q->rt[i];
	qsort(all, n, sizeof(*all), cmp_u64);
	for (i = 1; i < n && ok; i++)
		ok = all[i] != all[i - 1];
	free(all);
	return ok;
}

/* Read and parse the header of the image q->fd, a file of @fsize bytes. */
static int read_header(struct qcow2 *q, uint64_t fsize, struct qcow2_header *h, struct vmm_err *err)
{
	uint8_t cb[4];
	uint8_t *buf;
	size_t len = 1u << QCOW2_MIN_CLUSTER_BITS;
	int ret;

	/* The header cluster, whose size the header gives (the parser checks it). */
	if (fsize >= 24 && q2_file_read(q->fd, 20, cb, 4) == 0 &&
	    get32(cb) > QCOW2_MIN_CLUSTER_BITS && get32(cb) <= QCOW2_MAX_CLUSTER_BITS)
		len = (size_t)1 << get32(cb);
	buf = malloc(len);
	if (!buf)
		return err_set(err, ENOMEM, "%s: out of memory", q->path);
	if (len > fsize)
		len = (size_t)fsize;
	ret = q2_file_read(q->fd, 0, buf, len);
	if (ret < 0) {
		err_set(err, -ret, "%s: cannot read the header: %s", q->path, strerror(-ret));
		goto out;
	}
	ret = qcow2_parse_header(buf, len, fsize, h, err);
	if (ret < 0) {
		char msg[VMM_ERR_MAX];

		snprintf(msg, sizeof(msg), "%s", err ? err->msg : "");
		err_set(err, -ret, "qcow2 image %s: %s", q->path, msg);
	}
out:
	free(buf);
	return ret;
}

/* Parse the header and load the tables of the qcow2 image q->fd. */
static int img_load(struct qcow2 *q, uint64_t cache_bytes, struct vmm_err *err)
{
	struct qcow2_header *h;
	uint64_t fsize, i, e, need, slots;
	int ret;

	ret = q2_file_size_of(q->fd, &fsize, &q->dev, &q->ino);
	if (ret < 0)
		return err_set(err, -ret, "%s: cannot stat: %s", q->path, strerror(-ret));
	h = malloc(sizeof(*h));
	if (!h)
		return err_set(err, ENOMEM, "%s: out of memory", q->path);
	ret = read_header(q, fsize, h, err);
	if (ret < 0)
		goto out;
	q->version = h->version;
	q->cluster_bits = h->cluster_bits;
	q->cs = 1ull << h->cluster_bits;
	q->l2_bits = h->cluster_bits - 3;
	q->rc_order = h->refcount_order;
	q->rb_entries = q->cs * 8 >> h->refcount_order;
	q->compression = h->compression_type;
	q->size = h->size;
	q->file_size = fsize;
	q->l1_off = h->l1_offset;
	q->l1_size = h->l1_size;
	q->rt_off = h->refcount_table_offset;
	q->rt_clusters = h->refcount_table_clusters;
	q->rt_entries = (uint64_t)h->refcount_table_clusters * q->cs / 8;
	q->free_hint = 1;

	ret = read_table(q->fd, q->l1_off, q->l1_size, &q->l1);
	if (!ret)
		ret = read_table(q->fd, q->rt_off, q->rt_entries, &q->rt);
	if (ret < 0) {
		err_set(err, -ret, "qcow2 image %s: cannot read its tables: %s", q->path,
			strerror(-ret));
		goto out;
	}
	for (i = 0; i < q->l1_size; i++) {
		e = q->l1[i];
		if ((e & L1E_RESERVED) ||
		    ((e & L1E_OFFSET_MASK) && !q2_l2_off_ok(q, e & L1E_OFFSET_MASK))) {
			ret = err_set(err, EINVAL,
				      "qcow2 image %s: L1 entry %llu (%#llx) is invalid", q->path,
				      (unsigned long long)i, (unsigned long long)e);
			goto out;
		}
	}
	for (i = 0; i < q->rt_entries; i++) {
		e = q->rt[i];
		if (e && (e & ~RTE_OFFSET_MASK || e % q->cs || e >= fsize ||
			  meta_overlap(q, e, q->cs))) {
			ret = err_set(
				err, EINVAL,
				"qcow2 image %s: refcount table entry %llu (%#llx) is invalid",
				q->path, (unsigned long long)i, (unsigned long long)e);
			goto out;
		}
	}

	if (!tables_distinct(q)) {
		ret = err_set(err, EINVAL, "qcow2 image %s: two tables share a cluster", q->path);
		goto out;
	}

	/* Enough L2 tables to map the whole disk, within the budget. */
	need = q->size ? l1_entries_for(q->size, q->cluster_bits) : 1;
	slots = (cache_bytes ? cache_bytes : DISK_DEFAULT_CACHE) / q->cs;
	if (slots > need)
		slots = need;
	if (slots < 1)
		slots = 1;
	if (q2_cache_init(&q->l2c, (unsigned int)slots) < 0 ||
	    q2_cache_init(&q->rbc, slots / 4 > 2 ? (unsigned int)(slots / 4) : 2) < 0) {
		ret = err_set(err, ENOMEM, "%s: out of memory", q->path);
		goto out;
	}
	ret = 0;
out:
	free(h);
	return ret;
}

bool qcow2_probe_fd(int fd)
{
	uint8_t magic[4];

	return pread(fd, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
	       qcow2_probe(magic, sizeof(magic));
}

/* Open a backing file read-only with a shared lock. */
int q2_open_backing_file(const char *path, int *fd_out)
{
	struct flock lk = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
	struct stat st;
	int fd, fl, e;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
		close(fd);
		return -EINVAL;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 || fcntl(fd, F_OFD_SETLK, &lk) < 0) {
		e = errno == EAGAIN || errno == EACCES ? EBUSY : errno;
		close(fd);
		return -e;
	}
	*fd_out = fd;
	return 0;
}

/* @name resolved against the directory of @base. */
char *q2_resolve(const char *base, const char *name)
{
	const char *slash = strrchr(base, '/');
	size_t dlen = slash ? (size_t)(slash - base) + 1 : 0;
	char *p;

	if (name[0] == '/' || !dlen)
		return strdup(name);
	p = malloc(dlen + strlen(name) + 1);
	if (!p)
		return NULL;
	memcpy(p, base, dlen);
	strcpy(p + dlen, name);
	return p;
}

static int open_chain(struct qcow2 *top, const struct qcow2_opts *o, struct vmm_err *err)
{
	struct qcow2 *cur = top, *b, *it;
	struct qcow2_header *h;
	unsigned int depth = 1;
	char *path;
	int fd, ret = 0;
	bool qcow;

	h = malloc(sizeof(*h));
	if (!h)
		return err_set(err, ENOMEM, "out of memory");
	for (;;) {
		ret = read_header(cur, cur->file_size, h, err);
		if (ret < 0)
			break;
		if (!h->has_backing)
			break;
		if (o->no_backing) {
			ret = err_set(err, ENOTSUP,
				      "qcow2 image %s: backing files are not allowed here",
				      cur->path);
			break;
		}
		if (++depth > QCOW2_MAX_CHAIN) {
			ret = err_set(err, ELOOP,
				      "qcow2 image %s: backing chain longer than %u images",
				      top->path, QCOW2_MAX_CHAIN);
			break;
		}
		path = q2_resolve(cur->path, h->backing);
		if (!path) {
			ret = err_set(err, ENOMEM, "out of memory");
			break;
		}
		ret = q2_open_backing_file(path, &fd);
		if (ret < 0) {
			if (ret == -ENOENT)
				err_set(err, ENOENT, "backing file %s of %s does not exist", path,
					cur->path);
			else
				err_set(err, -ret, "cannot open backing file %s of %s: %s", path,
					cur->path, strerror(-ret));
			free(path);
			break;
		}
		b = img_alloc(fd, path);
		free(path);
		if (!b) {
			close(fd);
			ret = err_set(err, ENOMEM, "out of memory");
			break;
		}
		b->own_fd = true;
		b->read_only = true;
		cur->backing = b;
		ret = q2_file_size_of(fd, &b->file_size, &b->dev, &b->ino);
		if (ret < 0) {
			err_set(err, -ret, "cannot stat backing file %s: %s", b->path,
				strerror(-ret));
			break;
		}
		for (it = top; it != b; it = it->backing) {
			if (it->dev == b->dev && it->ino == b->ino) {
				ret = err_set(err, ELOOP, "backing chain of %s loops at %s",
					      top->path, b->path);
				goto out;
			}
		}
		if (h->backing_format[0] && strcmp(h->backing_format, "raw") &&
		    strcmp(h->backing_format, "qcow2")) {
			ret = err_set(err, ENOTSUP,
				      "backing file %s has format '%s' (only raw and "
				      "qcow2 are supported)",
				      b->path, h->backing_format);
			break;
		}
		if (h->backing_format[0])
			qcow = !strcmp(h->backing_format, "qcow2");
		else
			qcow = qcow2_probe_fd(fd);
		if (!qcow) {
			b->raw = true;
			b->size = b->file_size;
			break;
		}
		ret = img_load(b, o->cache_bytes, err);
		if (ret < 0)
			break;
		cur = b;
	}
out:
	free(h);
	return ret;
}

int qcow2_open(int fd, const char *path, const struct qcow2_opts *o, struct qcow2 **out,
	       struct vmm_err *err)
{
	static const uint8_t zero8[8];
	struct qcow2_header h;
	struct qcow2 *q;
	int ret;

	*out = NULL;
	q = img_alloc(fd, path);
	if (!q)
		return err_set(err, ENOMEM, "%s: out of memory", path);
	q->read_only = o->read_only;
	ret = img_load(q, o->cache_bytes, err);
	if (ret == 0)
		ret = open_chain(q, o, err);
	if (ret == 0 && !q->read_only) {
		/* Unknown auto-clear features must be cleared before writing. */
		ret = read_header(q, q->file_size, &h, err);
		if (ret == 0 && h.version >= 3 && h.autoclear) {
			ret = q2_file_write(fd, 88, zero8, 8);
			if (ret == 0)
				ret = q2_file_sync(q);
			if (ret < 0)
				err_set(err, -ret,
					"qcow2 image %s: cannot clear auto-clear features: %s",
					path, strerror(-ret));
		}
	}
	if (ret < 0) {
		img_free(q);
		return ret;
	}
	*out = q;
	return 0;
}

uint64_t qcow2_size(const struct qcow2 *q)
{
	return q->size;
}

void qcow2_get_stats(struct qcow2 *q, struct qcow2_stats *s)
{
	pthread_mutex_lock(&q->lock);
	s->l2_hits = q->l2c.hits;
	s->l2_misses = q->l2c.misses;
	s->l2_evictions = q->l2c.evictions;
	s->l2_slots = q->l2c.nslots;
	pthread_mutex_unlock(&q->lock);
	s->allocations = q->allocations;
	s->cow = q->cows;
	s->fast = q->nfast;
	s->slow = q->nslow;
	s->checkpoints = q->checkpoints;
}

int qcow2_fds(const struct qcow2 *q, int *fds, int max)
{
	int n = 0;

	for (const struct qcow2 *b = q->backing; b; b = b->backing) {
		if (!b->own_fd || b->fd < 0)
			continue;
		if (n < max)
			fds[n] = b->fd;
		n++;
	}
	return n;
}

void qcow2_close(struct qcow2 *q)
{
	if (!q)
		return;
	if (q->thread_started)
		qcow2_stop(q);
	/* The engine has stopped: nothing targets freed clusters any more. */
	atomic_store(&q->fast_inflight, 0);
	q->stop = false;
	if (!q->read_only && !q->broken)
		q2_flush(q);
	img_free(q);
}
