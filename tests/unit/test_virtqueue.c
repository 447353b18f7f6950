/* Unit tests for the split virtqueue: good chains, hostile rings, event index, chain copies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/virtio/virtqueue.h"
#include "virtio_test_util.h"

/* Fake RAM for most tests: rings of 16 entries plus room for buffers and tables. */
#define RAM_SIZE (64 * 1024)
#define QSIZE	 16

struct fixture {
	struct vt_guest g;
	struct vt_queue vq;
	struct virtq_chain c;
};

static struct fixture *fixture_new(uint64_t ram, uint16_t qsize, unsigned int flags)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	vt_guest_init(&f->g, ram);
	vt_queue_init(&f->vq, &f->g, qsize, flags);
	return f;
}

static void fixture_free(struct fixture *f)
{
	vt_guest_destroy(&f->g);
	free(f);
}

/* Pop must fail with -EIO, mark the queue broken and keep failing. */
static void expect_broken(struct fixture *f)
{
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), -EIO);
	assert_true(f->vq.q.broken);
	assert_int_equal(f->c.nbufs, 0);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), -EIO);
	assert_false(virtq_has_avail(&f->vq.q));
}

/* ---- good chains ---- */

static void test_empty(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);

	assert_false(virtq_has_avail(&f->vq.q));
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 0);
	assert_false(f->vq.q.broken);
	fixture_free(f);
}

static void test_direct_chain(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b[4] = {
		vt_buf_new(&f->g, 16, false),
		vt_buf_new(&f->g, 100, false),
		vt_buf_new(&f->g, 512, true),
		vt_buf_new(&f->g, 1, true),
	};
	uint16_t head = vt_add_chain(&f->vq, b, 4);
	uint32_t id, len;

	assert_true(virtq_has_avail(&f->vq.q));
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.head, head);
	assert_int_equal(f->c.nbufs, 4);
	assert_int_equal(f->c.nread, 2);
	assert_int_equal(f->c.read_len, 116);
	assert_int_equal(f->c.write_len, 513);
	for (unsigned int i = 0; i < 4; i++) {
		assert_int_equal(f->c.bufs[i].gpa, b[i].gpa);
		assert_int_equal(f->c.bufs[i].len, b[i].len);
		assert_int_equal(f->c.bufs[i].write, b[i].write);
	}
	assert_false(virtq_has_avail(&f->vq.q));
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 0);

	assert_false(vt_get_used(&f->vq, NULL, NULL));
	virtq_push(&f->vq.q, head, 77);
	assert_true(vt_get_used(&f->vq, &id, &len));
	assert_int_equal(id, head);
	assert_int_equal(len, 77);
	assert_int_equal(vt_used_idx(&f->vq), 1);
	fixture_free(f);
}

static void test_indirect_chain(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf b[3] = {
		vt_buf_new(&f->g, 16, false),
		vt_buf_new(&f->g, 4096, true),
		vt_buf_new(&f->g, 1, true),
	};
	uint16_t head = vt_add_chain_indirect(&f->vq, b, 3);

	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.head, head);
	assert_int_equal(f->c.nbufs, 3);
	assert_int_equal(f->c.nread, 1);
	assert_int_equal(f->c.read_len, 16);
	assert_int_equal(f->c.write_len, 4097);
	for (unsigned int i = 0; i < 3; i++) {
		assert_int_equal(f->c.bufs[i].gpa, b[i].gpa);
		assert_int_equal(f->c.bufs[i].len, b[i].len);
		assert_int_equal(f->c.bufs[i].write, b[i].write);
	}
	fixture_free(f);
}

/* A direct descriptor followed (NEXT) by an indirect one that ends the chain. */
static void test_direct_then_indirect(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf r = vt_buf_new(&f->g, 8, false);
	struct vt_buf w = vt_buf_new(&f->g, 32, true);
	uint64_t table = vt_alloc(&f->g, 32, 16);

	vt_set_table_desc(&f->g, table, 0, r.gpa + 4, 4, VIRTQ_DESC_F_NEXT, 1);
	vt_set_table_desc(&f->g, table, 1, w.gpa, 32, VIRTQ_DESC_F_WRITE, 0);
	vt_set_desc(&f->vq, 5, r.gpa, 4, VIRTQ_DESC_F_NEXT, 9);
	vt_set_desc(&f->vq, 9, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
	vt_publish(&f->vq, 5);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.head, 5);
	assert_int_equal(f->c.nbufs, 3);
	assert_int_equal(f->c.nread, 2);
	assert_int_equal(f->c.read_len, 8);
	assert_int_equal(f->c.write_len, 32);
	fixture_free(f);
}

/* Chains of exactly VIRTQ_MAX_CHAIN descriptors pass, one more fails. */
static void test_chain_limit_direct(void **state)
{
	uint16_t qsize = 2 * VIRTQ_MAX_CHAIN;
	struct fixture *f = fixture_new(64 * 1024 + 16 * 2 * VIRTQ_MAX_CHAIN * 2, qsize, 0);
	struct vt_buf *b = calloc(VIRTQ_MAX_CHAIN + 1, sizeof(*b));
	struct vt_buf one = vt_buf_new(&f->g, 64, true);

	assert_non_null(b);
	for (unsigned int i = 0; i <= VIRTQ_MAX_CHAIN; i++)
		b[i] = (struct vt_buf){one.gpa + (i % 64), 1, i >= 10};
	vt_add_chain(&f->vq, b, VIRTQ_MAX_CHAIN);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.nbufs, VIRTQ_MAX_CHAIN);
	assert_int_equal(f->c.nread, 10);
	assert_int_equal(f->c.write_len, VIRTQ_MAX_CHAIN - 10);

	vt_add_chain(&f->vq, b, VIRTQ_MAX_CHAIN + 1);
	expect_broken(f);
	free(b);
	fixture_free(f);
}

static void test_chain_limit_indirect(void **state)
{
	struct fixture *f = fixture_new(128 * 1024, QSIZE, VT_INDIRECT);
	struct vt_buf *b = calloc(VIRTQ_MAX_CHAIN + 1, sizeof(*b));
	struct vt_buf one = vt_buf_new(&f->g, 1, true);

	assert_non_null(b);
	for (unsigned int i = 0; i <= VIRTQ_MAX_CHAIN; i++)
		b[i] = (struct vt_buf){one.gpa, 1, true};
	vt_add_chain_indirect(&f->vq, b, VIRTQ_MAX_CHAIN);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.nbufs, VIRTQ_MAX_CHAIN);
	assert_int_equal(f->c.write_len, VIRTQ_MAX_CHAIN);

	/* A table with more entries than the limit. */
	vt_add_chain_indirect(&f->vq, b, VIRTQ_MAX_CHAIN + 1);
	expect_broken(f);
	free(b);
	fixture_free(f);
}

/* A direct prefix plus an indirect table must also respect the limit in total. */
static void test_chain_limit_mixed(void **state)
{
	struct fixture *f = fixture_new(128 * 1024, QSIZE, VT_INDIRECT);
	struct vt_buf one = vt_buf_new(&f->g, 1, true);
	uint64_t table = vt_alloc(&f->g, 16ull * VIRTQ_MAX_CHAIN, 16);

	for (unsigned int i = 0; i < VIRTQ_MAX_CHAIN; i++)
		vt_set_table_desc(&f->g, table, i, one.gpa, 1,
				  VIRTQ_DESC_F_WRITE |
					  (i + 1 < VIRTQ_MAX_CHAIN ? VIRTQ_DESC_F_NEXT : 0),
				  (uint16_t)(i + 1));
	vt_set_desc(&f->vq, 0, one.gpa, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vt_set_desc(&f->vq, 1, table, 16u * VIRTQ_MAX_CHAIN, VIRTQ_DESC_F_INDIRECT, 0);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

/* Indexes wrap past 65535: pop/push one at a time and a full ring at once. */
static void test_wraparound(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);
	uint32_t id, len;

	vt_queue_set_indexes(&f->vq, 65530);
	for (unsigned int i = 0; i < 20; i++) {
		uint16_t head = vt_add_chain(&f->vq, &b, 1);

		assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
		assert_int_equal(f->c.head, head);
		virtq_push(&f->vq.q, head, i);
		assert_true(vt_get_used(&f->vq, &id, &len));
		assert_int_equal(id, head);
		assert_int_equal(len, i);
	}
	assert_int_equal(vt_used_idx(&f->vq), (uint16_t)(65530 + 20));

	/* Fill the whole ring across the wrap, then drain. */
	vt_queue_set_indexes(&f->vq, 65535 - 3);
	for (unsigned int i = 0; i < QSIZE; i++)
		vt_add_chain(&f->vq, &b, 1);
	for (unsigned int i = 0; i < QSIZE; i++) {
		assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
		virtq_push(&f->vq.q, f->c.head, 8);
	}
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 0);
	for (unsigned int i = 0; i < QSIZE; i++)
		assert_true(vt_get_used(&f->vq, NULL, &len));
	assert_false(vt_get_used(&f->vq, NULL, NULL));
	assert_false(f->vq.q.broken);
	fixture_free(f);
}

/* Many chains through a small ring, completed out of order, including a natural wrap. */
static void test_many_chains(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, 8, 0);
	struct vt_buf b[2] = {vt_buf_new(&f->g, 4, false), vt_buf_new(&f->g, 4, true)};
	uint16_t heads[4];
	unsigned int total = 0;

	for (unsigned int round = 0; round < 20000; round++) {
		uint16_t expect[4];

		for (unsigned int i = 0; i < 4; i++)
			expect[i] = vt_add_chain(&f->vq, b, 2);
		for (unsigned int i = 0; i < 4; i++) {
			assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
			assert_int_equal(f->c.head, expect[i]);
			heads[i] = f->c.head;
		}
		assert_int_equal(virtq_pop(&f->vq.q, &f->c), 0);
		for (int i = 3; i >= 0; i--)
			virtq_push(&f->vq.q, heads[i], 4);
		for (int i = 3; i >= 0; i--) {
			uint32_t id;

			assert_true(vt_get_used(&f->vq, &id, NULL));
			assert_int_equal(id, heads[i]);
			total++;
		}
	}
	assert_int_equal(vt_used_idx(&f->vq), (uint16_t)total);
	fixture_free(f);
}

/* Zero-length buffers are accepted and ignored, whatever their address. */
static void test_zero_length(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf w = vt_buf_new(&f->g, 8, true);
	struct vt_buf b[3] = {
		{UINT64_MAX, 0, false},
		{w.gpa, 8, true},
		{RAM_SIZE + 12345, 0, true},
	};

	vt_add_chain(&f->vq, b, 3);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.nbufs, 1);
	assert_int_equal(f->c.nread, 0);
	assert_int_equal(f->c.write_len, 8);
	assert_int_equal(f->c.bufs[0].gpa, w.gpa);

	vt_add_chain_indirect(&f->vq, b, 3);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.nbufs, 1);

	/* A chain of one zero-length buffer. */
	vt_add_chain(&f->vq, b, 1);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.nbufs, 0);
	assert_int_equal(f->c.read_len + f->c.write_len, 0);
	fixture_free(f);
}

/* A buffer that ends exactly at the end of RAM is fine. */
static void test_buffer_at_ram_end(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = {RAM_SIZE - 100, 100, true};
	uint8_t data[100];

	memset(data, 0xab, sizeof(data));
	vt_add_chain(&f->vq, &b, 1);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(virtq_chain_write(&f->vq.q, &f->c, 0, data, sizeof(data)), 100);
	assert_int_equal(f->g.ram[RAM_SIZE - 1], 0xab);
	fixture_free(f);
}

/* ---- hostile rings ---- */

static void test_self_loop(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, false);

	vt_set_desc(&f->vq, 3, b.gpa, 8, VIRTQ_DESC_F_NEXT, 3);
	vt_publish(&f->vq, 3);
	expect_broken(f);
	/* The chain was consumed. */
	assert_int_equal(f->vq.q.last_avail, 1);
	fixture_free(f);
}

static void test_two_cycle(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, false);

	vt_set_desc(&f->vq, 0, b.gpa, 8, VIRTQ_DESC_F_NEXT, 1);
	vt_set_desc(&f->vq, 1, b.gpa, 8, VIRTQ_DESC_F_NEXT, 0);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

/* Every descriptor of the ring chained in a circle: longer than the ring. */
static void test_chain_longer_than_ring(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, 4, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, false);

	for (uint16_t i = 0; i < 4; i++)
		vt_set_desc(&f->vq, i, b.gpa, 8, VIRTQ_DESC_F_NEXT, (i + 1) % 4);
	vt_publish(&f->vq, 2);
	expect_broken(f);
	fixture_free(f);
}

/* A chain using every descriptor of the ring once is legal. */
static void test_chain_whole_ring(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, 4, 0);
	struct vt_buf b[4];

	for (unsigned int i = 0; i < 4; i++)
		b[i] = vt_buf_new(&f->g, 8, i >= 2);
	vt_add_chain(&f->vq, b, 4);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.nbufs, 4);
	fixture_free(f);
}

static void test_next_out_of_range(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, false);

	vt_set_desc(&f->vq, 0, b.gpa, 8, VIRTQ_DESC_F_NEXT, QSIZE);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

static void test_next_out_of_range_max(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, false);

	vt_set_desc(&f->vq, 0, b.gpa, 8, VIRTQ_DESC_F_NEXT, 0xffff);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

static void test_head_out_of_range(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);

	vt_publish(&f->vq, QSIZE);
	expect_broken(f);
	fixture_free(f);
}

static void test_buffer_outside_ram(void **state)
{
	static const struct {
		uint64_t addr;
		uint32_t len;
	} bad[] = {
		{RAM_SIZE - 4, 8},     /* straddles the end */
		{RAM_SIZE, 1},	       /* starts at the end */
		{RAM_SIZE + 4096, 16}, /* beyond */
		{1ull << 40, 1},       /* far beyond */
		{UINT64_MAX - 3, 16},  /* addr + len wraps past 2^64 */
		{UINT64_MAX, 1},       /* last byte of the address space */
		{0, UINT32_MAX},       /* longer than RAM */
	};

	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
		struct vt_buf b[2] = {vt_buf_new(&f->g, 8, false), {bad[i].addr, bad[i].len, true}};

		vt_add_chain(&f->vq, b, 2);
		expect_broken(f);
		fixture_free(f);

		/* Same inside an indirect table. */
		f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
		b[0] = vt_buf_new(&f->g, 8, false);
		vt_add_chain_indirect(&f->vq, b, 2);
		expect_broken(f);
		fixture_free(f);
	}
}

/* Buffers that each fit in RAM but sum past 4 GiB (RAM is a sparse 2 GiB mapping). */
static void test_total_length_overflow(void **state)
{
	struct vt_guest g;
	struct vt_queue vq;
	struct virtq_chain *c = calloc(1, sizeof(*c));
	uint64_t big = 0x80000000ull;
	struct vt_buf b[3];

	assert_non_null(c);
	vt_guest_init_sparse(&g, big + 64 * 1024);
	vt_queue_init(&vq, &g, QSIZE, VT_INDIRECT);

	/* 2 GiB + (2 GiB - 1): exactly UINT32_MAX, accepted. */
	b[0] = (struct vt_buf){0, (uint32_t)big, false};
	b[1] = (struct vt_buf){0, (uint32_t)(big - 1), true};
	vt_add_chain(&vq, b, 2);
	assert_int_equal(virtq_pop(&vq.q, c), 1);
	assert_int_equal(c->read_len + c->write_len, UINT32_MAX);

	/* 2 GiB + 2 GiB: 4 GiB, refused. */
	b[1].len = (uint32_t)big;
	vt_add_chain(&vq, b, 2);
	assert_int_equal(virtq_pop(&vq.q, c), -EIO);
	assert_true(vq.q.broken);

	/* Three buffers through an indirect table. */
	assert_int_equal(virtq_start(&vq.q), 0);
	vt_queue_set_indexes(&vq, 0);
	b[0] = (struct vt_buf){0, 0x60000000, true};
	b[1] = b[0];
	b[2] = b[0];
	vt_add_chain_indirect(&vq, b, 3);
	assert_int_equal(virtq_pop(&vq.q, c), -EIO);
	assert_true(vq.q.broken);

	vt_guest_destroy(&g);
	free(c);
}

static void test_readable_after_writable(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf b[3] = {
		vt_buf_new(&f->g, 8, false),
		vt_buf_new(&f->g, 8, true),
		vt_buf_new(&f->g, 8, false),
	};

	vt_add_chain(&f->vq, b, 3);
	expect_broken(f);
	fixture_free(f);

	f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	b[0] = vt_buf_new(&f->g, 8, false);
	b[1] = vt_buf_new(&f->g, 8, true);
	b[2] = vt_buf_new(&f->g, 8, false);
	vt_add_chain_indirect(&f->vq, b, 3);
	expect_broken(f);
	fixture_free(f);
}

/* A writable direct descriptor, then an indirect table starting with a readable one. */
static void test_readable_after_writable_mixed(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf r = vt_buf_new(&f->g, 8, false);
	struct vt_buf w = vt_buf_new(&f->g, 8, true);
	uint64_t table = vt_alloc(&f->g, 16, 16);

	vt_set_table_desc(&f->g, table, 0, r.gpa, 8, 0, 0);
	vt_set_desc(&f->vq, 0, w.gpa, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vt_set_desc(&f->vq, 1, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

static void test_indirect_without_feature(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);

	vt_add_chain_indirect(&f->vq, &b, 1);
	expect_broken(f);
	fixture_free(f);
}

static void test_indirect_nested(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);
	uint64_t inner = vt_alloc(&f->g, 16, 16);
	uint64_t outer = vt_alloc(&f->g, 32, 16);

	vt_set_table_desc(&f->g, inner, 0, b.gpa, 8, VIRTQ_DESC_F_WRITE, 0);
	vt_set_table_desc(&f->g, outer, 0, b.gpa, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vt_set_table_desc(&f->g, outer, 1, inner, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vt_set_desc(&f->vq, 0, outer, 32, VIRTQ_DESC_F_INDIRECT, 0);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

/* An indirect table pointing at itself. */
static void test_indirect_self(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	uint64_t table = vt_alloc(&f->g, 16, 16);

	vt_set_table_desc(&f->g, table, 0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vt_set_desc(&f->vq, 0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

static void test_indirect_with_next(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);
	uint64_t table = vt_alloc(&f->g, 16, 16);

	vt_set_table_desc(&f->g, table, 0, b.gpa, 8, VIRTQ_DESC_F_WRITE, 0);
	vt_set_desc(&f->vq, 0, table, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	vt_set_desc(&f->vq, 1, b.gpa, 8, VIRTQ_DESC_F_WRITE, 0);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

static void test_indirect_bad_table(void **state)
{
	static const struct {
		uint64_t addr_off; /* from the end of RAM when from_end */
		bool from_end;
		uint32_t len;
	} bad[] = {
		{0, false, 0},	/* empty table */
		{0, false, 24}, /* not a multiple of 16 */
		{0, false, 15},
		{16, true, 32},				 /* runs past the end of RAM */
		{0, true, 16},				 /* starts at the end of RAM */
		{0, false, 16u * (VIRTQ_MAX_CHAIN + 1)}, /* too many entries */
		{0, false, 0xfffffff0u},		 /* huge */
	};

	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
		struct vt_buf b = vt_buf_new(&f->g, 8, true);
		uint64_t table = vt_alloc(&f->g, 32, 16);
		uint64_t addr = bad[i].from_end ? RAM_SIZE - bad[i].addr_off : table;

		vt_set_table_desc(&f->g, table, 0, b.gpa, 8, VIRTQ_DESC_F_WRITE, 0);
		vt_set_desc(&f->vq, 0, addr, bad[i].len, VIRTQ_DESC_F_INDIRECT, 0);
		vt_publish(&f->vq, 0);
		expect_broken(f);
		fixture_free(f);
	}
}

/* A table exactly at the end of RAM is fine. */
static void test_indirect_table_at_ram_end(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);
	uint64_t table = RAM_SIZE - 32;

	vt_set_table_desc(&f->g, table, 0, b.gpa, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vt_set_table_desc(&f->g, table, 1, b.gpa + 4, 4, VIRTQ_DESC_F_WRITE, 0);
	vt_set_desc(&f->vq, 0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
	vt_publish(&f->vq, 0);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(f->c.nbufs, 2);
	fixture_free(f);
}

static void test_indirect_loops(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);
	uint64_t table = vt_alloc(&f->g, 48, 16);

	/* 0 -> 1 -> 2 -> 1 */
	vt_set_table_desc(&f->g, table, 0, b.gpa, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vt_set_table_desc(&f->g, table, 1, b.gpa, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	vt_set_table_desc(&f->g, table, 2, b.gpa, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	vt_set_desc(&f->vq, 0, table, 48, VIRTQ_DESC_F_INDIRECT, 0);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);

	/* next beyond the table (but inside RAM and inside the ring size). */
	f = fixture_new(RAM_SIZE, QSIZE, VT_INDIRECT);
	b = vt_buf_new(&f->g, 8, true);
	table = vt_alloc(&f->g, 64, 16);
	vt_set_table_desc(&f->g, table, 0, b.gpa, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	vt_set_table_desc(&f->g, table, 1, b.gpa, 8, VIRTQ_DESC_F_WRITE, 0);
	vt_set_table_desc(&f->g, table, 2, b.gpa, 8, VIRTQ_DESC_F_WRITE, 0);
	vt_set_desc(&f->vq, 0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
	vt_publish(&f->vq, 0);
	expect_broken(f);
	fixture_free(f);
}

static void test_avail_idx_jump(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);

	/* Exactly size ahead is a full ring: legal. */
	for (unsigned int i = 0; i < QSIZE; i++)
		vt_set_desc(&f->vq, (uint16_t)i, b.gpa, 8, VIRTQ_DESC_F_WRITE, 0);
	vt_set_avail_idx(&f->vq, QSIZE);
	for (unsigned int i = 0; i < QSIZE; i++)
		assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 0);

	/* size + 1 ahead. */
	vt_set_avail_idx(&f->vq, 2 * QSIZE + 1);
	expect_broken(f);
	assert_int_equal(f->vq.q.last_avail, QSIZE);
	fixture_free(f);

	/* Backwards (== 65535 ahead). */
	f = fixture_new(RAM_SIZE, QSIZE, 0);
	vt_queue_set_indexes(&f->vq, 100);
	vt_set_avail_idx(&f->vq, 99);
	expect_broken(f);
	fixture_free(f);
}

/* A broken queue works again after virtq_start(). */
static void test_restart_clears_broken(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);

	vt_publish(&f->vq, 0xffff);
	expect_broken(f);
	assert_int_equal(virtq_start(&f->vq.q), 0);
	assert_false(f->vq.q.broken);
	vt_queue_set_indexes(&f->vq, 0);
	vt_add_chain(&f->vq, &b, 1);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	fixture_free(f);
}

/* ---- virtq_start ---- */

static void test_start_bad_size(void **state)
{
	struct vt_guest g;
	struct vt_queue vq;
	const uint16_t bad[] = {0, 3, 6, 100, 32767, 32769, 49152, 65535};

	vt_guest_init(&g, 1024 * 1024);
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(vt_queue_init_at(&vq, &g, bad[i], 0, 600 * 1024, 700 * 1024, 0),
				 -EINVAL);
	/* The largest legal size, rings packed to the end of RAM. */
	assert_int_equal(vt_queue_init_at(&vq, &g, 32768, 0, 512 * 1024, 1024 * 1024 - 262150, 0),
			 -EINVAL); /* used not 4-aligned */
	assert_int_equal(vt_queue_init_at(&vq, &g, 32768, 0, 512 * 1024, 1024 * 1024 - 262152, 0),
			 0);
	assert_int_equal(vt_queue_init_at(&vq, &g, 1, 0, 16, 32, 0), 0);
	vt_guest_destroy(&g);
}

static void test_start_bad_addresses(void **state)
{
	struct vt_guest g;
	struct vt_queue vq;
	/* size 16: desc 256 bytes, avail 38, used 134 */
	const uint64_t ram = 4096;
	const struct {
		uint64_t desc, avail, used;
		int ret;
	} cases[] = {
		{0, 256, 512, 0},
		{8, 256, 512, -EINVAL},		/* desc not 16-aligned */
		{0, 257, 512, -EINVAL},		/* avail not 2-aligned */
		{0, 256, 514, -EINVAL},		/* used not 4-aligned */
		{ram - 256, 256, 512, 0},	/* desc flush with the end */
		{ram - 240, 256, 512, -EINVAL}, /* desc past the end */
		{0, ram - 38, 512, 0},
		{0, ram - 36, 512, -EINVAL},
		{0, 256, ram - 136, 0},	      /* 2 bytes to spare */
		{0, 256, ram - 132, -EINVAL}, /* 2 bytes past the end */
		{0, 256, ram, -EINVAL},
		{UINT64_MAX - 15, 256, 512, -EINVAL},
		{0, UINT64_MAX - 1, 512, -EINVAL},
		{0, 256, UINT64_MAX - 3, -EINVAL},
		{1ull << 40, 256, 512, -EINVAL},
	};

	vt_guest_init(&g, ram);
	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = vt_queue_init_at(&vq, &g, 16, cases[i].desc, cases[i].avail, cases[i].used,
					 0);

		if (r != cases[i].ret)
			fail_msg("case %u: got %d", i, r);
	}
	/* used ring flush with the end of RAM (6 + 8 * 16 = 134; 4-aligned start 3960). */
	vt_guest_destroy(&g);
	vt_guest_init(&g, 3960 + 134);
	assert_int_equal(vt_queue_init_at(&vq, &g, 16, 0, 256, 3960, VT_EVENT_IDX), 0);
	/* The device then touches the last bytes (avail_event) without going past. */
	virtq_set_notify(&vq.q, true);
	assert_int_equal(vt_avail_event(&vq), 0);
	vt_guest_destroy(&g);

	/* No memory at all. */
	memset(&vq, 0, sizeof(vq));
	vq.q.size = 16;
	assert_int_equal(virtq_start(&vq.q), -EINVAL);
}

/* ---- interrupts and notifications ---- */

static void push_n(struct fixture *f, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		virtq_push(&f->vq.q, 0, 0);
}

static void test_event_idx_interrupt(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_EVENT_IDX);

	/* The first interrupt is always sent. */
	push_n(f, 1);
	assert_true(virtq_need_interrupt(&f->vq.q));
	/* Nothing new: no interrupt. */
	assert_false(virtq_need_interrupt(&f->vq.q));

	/* The driver wants one when entry 2 is used (used idx becomes 3). */
	vt_set_used_event(&f->vq, 2);
	push_n(f, 1); /* used idx 2 */
	assert_false(virtq_need_interrupt(&f->vq.q));
	push_n(f, 1); /* used idx 3 */
	assert_true(virtq_need_interrupt(&f->vq.q));
	push_n(f, 1); /* used idx 4: event 2 is behind */
	assert_false(virtq_need_interrupt(&f->vq.q));

	/* A batch that steps over used_event. */
	vt_set_used_event(&f->vq, 6);
	push_n(f, 5); /* 4 -> 9 */
	assert_true(virtq_need_interrupt(&f->vq.q));
	/* A batch ending just before it. */
	vt_set_used_event(&f->vq, 12);
	push_n(f, 3); /* 9 -> 12 */
	assert_false(virtq_need_interrupt(&f->vq.q));
	push_n(f, 1); /* 12 -> 13 */
	assert_true(virtq_need_interrupt(&f->vq.q));
	/* The NO_INTERRUPT flag is ignored with event idx. */
	vt_set_avail_flags(&f->vq, VIRTQ_AVAIL_F_NO_INTERRUPT);
	vt_set_used_event(&f->vq, 13);
	push_n(f, 1);
	assert_true(virtq_need_interrupt(&f->vq.q));
	fixture_free(f);
}

static void test_event_idx_wrap(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, VT_EVENT_IDX);

	vt_queue_set_indexes(&f->vq, 65534);
	push_n(f, 1); /* 65535 */
	assert_true(virtq_need_interrupt(&f->vq.q));
	vt_set_used_event(&f->vq, 0);
	push_n(f, 1); /* 0 */
	assert_false(virtq_need_interrupt(&f->vq.q));
	push_n(f, 1); /* 1 */
	assert_true(virtq_need_interrupt(&f->vq.q));

	/* A batch crossing the wrap with used_event on 65535. */
	vt_queue_set_indexes(&f->vq, 65530);
	f->vq.q.signalled_valid = true;
	vt_set_used_event(&f->vq, 65535);
	push_n(f, 4); /* 65534 */
	assert_false(virtq_need_interrupt(&f->vq.q));
	push_n(f, 4); /* 2 */
	assert_true(virtq_need_interrupt(&f->vq.q));
	/* used_event far behind (wrapped distance): no interrupt. */
	vt_set_used_event(&f->vq, 40000);
	push_n(f, 10);
	assert_false(virtq_need_interrupt(&f->vq.q));
	fixture_free(f);
}

static void test_no_interrupt_flag(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);

	push_n(f, 1);
	assert_true(virtq_need_interrupt(&f->vq.q));
	assert_false(virtq_need_interrupt(&f->vq.q));
	vt_set_avail_flags(&f->vq, VIRTQ_AVAIL_F_NO_INTERRUPT);
	push_n(f, 2);
	assert_false(virtq_need_interrupt(&f->vq.q));
	vt_set_avail_flags(&f->vq, 0);
	push_n(f, 1);
	assert_true(virtq_need_interrupt(&f->vq.q));
	/* used_event is ignored without event idx. */
	vt_set_used_event(&f->vq, 1000);
	push_n(f, 1);
	assert_true(virtq_need_interrupt(&f->vq.q));
	fixture_free(f);
}

static void test_set_notify(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b = vt_buf_new(&f->g, 8, true);

	virtq_set_notify(&f->vq.q, false);
	assert_int_equal(vt_used_flags(&f->vq), VIRTQ_USED_F_NO_NOTIFY);
	virtq_set_notify(&f->vq.q, true);
	assert_int_equal(vt_used_flags(&f->vq), 0);
	/* avail_event is not touched without event idx. */
	vt_add_chain(&f->vq, &b, 1);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	virtq_set_notify(&f->vq.q, true);
	assert_int_equal(vt_avail_event(&f->vq), 0);
	fixture_free(f);

	f = fixture_new(RAM_SIZE, QSIZE, VT_EVENT_IDX);
	b = vt_buf_new(&f->g, 8, true);
	for (unsigned int i = 0; i < 3; i++)
		vt_add_chain(&f->vq, &b, 1);
	for (unsigned int i = 0; i < 3; i++)
		assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	virtq_set_notify(&f->vq.q, false);
	assert_int_equal(vt_used_flags(&f->vq), 0);
	virtq_set_notify(&f->vq.q, true);
	assert_int_equal(vt_avail_event(&f->vq), 3);
	assert_false(virtq_has_avail(&f->vq.q));
	vt_add_chain(&f->vq, &b, 1);
	assert_true(virtq_has_avail(&f->vq.q));

	/* Across the wrap. */
	vt_queue_set_indexes(&f->vq, 65535);
	vt_add_chain(&f->vq, &b, 1);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	virtq_set_notify(&f->vq.q, true);
	assert_int_equal(vt_avail_event(&f->vq), 0);
	fixture_free(f);
}

/* ---- chain copies ---- */

static void test_chain_read(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b[4] = {
		vt_buf_new(&f->g, 3, false),
		vt_buf_new(&f->g, 5, false),
		vt_buf_new(&f->g, 7, false),
		vt_buf_new(&f->g, 8, true),
	};
	uint8_t out[32];
	unsigned int k = 0;

	for (unsigned int i = 0; i < 3; i++)
		for (unsigned int j = 0; j < b[i].len; j++)
			((uint8_t *)vt_host(&f->g, b[i].gpa, b[i].len))[j] = (uint8_t)(k++);
	memset(vt_host(&f->g, b[3].gpa, 8), 0xee, 8);
	vt_add_chain(&f->vq, b, 4);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);

	memset(out, 0xff, sizeof(out));
	assert_int_equal(virtq_chain_read(&f->vq.q, &f->c, 0, out, sizeof(out)), 15);
	for (unsigned int i = 0; i < 15; i++)
		assert_int_equal(out[i], i);
	assert_int_equal(out[15], 0xff); /* the writable buffer is not read */

	memset(out, 0xff, sizeof(out));
	assert_int_equal(virtq_chain_read(&f->vq.q, &f->c, 2, out, 8), 8);
	for (unsigned int i = 0; i < 8; i++)
		assert_int_equal(out[i], i + 2);
	assert_int_equal(out[8], 0xff);

	assert_int_equal(virtq_chain_read(&f->vq.q, &f->c, 8, out, 7), 7);
	assert_int_equal(out[0], 8);
	assert_int_equal(virtq_chain_read(&f->vq.q, &f->c, 14, out, 10), 1);
	assert_int_equal(out[0], 14);
	assert_int_equal(virtq_chain_read(&f->vq.q, &f->c, 15, out, 10), 0);
	assert_int_equal(virtq_chain_read(&f->vq.q, &f->c, UINT64_MAX, out, 10), 0);
	assert_int_equal(virtq_chain_read(&f->vq.q, &f->c, 0, out, 0), 0);
	fixture_free(f);
}

static void test_chain_write(void **state)
{
	struct fixture *f = fixture_new(RAM_SIZE, QSIZE, 0);
	struct vt_buf b[4] = {
		vt_buf_new(&f->g, 6, false),
		vt_buf_new(&f->g, 4, true),
		vt_buf_new(&f->g, 4, true),
		vt_buf_new(&f->g, 8, true),
	};
	uint8_t in[32];
	uint8_t *w1, *w2, *w3, *r;

	for (unsigned int i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(0x40 + i);
	vt_add_chain(&f->vq, b, 4);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	r = vt_host(&f->g, b[0].gpa, 6);
	w1 = vt_host(&f->g, b[1].gpa, 4);
	w2 = vt_host(&f->g, b[2].gpa, 4);
	w3 = vt_host(&f->g, b[3].gpa, 8);

	/* 16 bytes at offset 2: only 14 fit. */
	assert_int_equal(virtq_chain_write(&f->vq.q, &f->c, 2, in, 16), 14);
	assert_int_equal(w1[0], 0);
	assert_int_equal(w1[1], 0);
	assert_int_equal(w1[2], 0x40);
	assert_int_equal(w1[3], 0x41);
	assert_int_equal(w2[0], 0x42);
	assert_int_equal(w2[3], 0x45);
	assert_int_equal(w3[0], 0x46);
	assert_int_equal(w3[7], 0x4d);
	for (unsigned int i = 0; i < 6; i++)
		assert_int_equal(r[i], 0); /* readable buffer untouched */

	/* A write inside one buffer. */
	assert_int_equal(virtq_chain_write(&f->vq.q, &f->c, 5, in + 20, 2), 2);
	assert_int_equal(w2[1], 0x54);
	assert_int_equal(w2[2], 0x55);
	assert_int_equal(virtq_chain_write(&f->vq.q, &f->c, 16, in, 4), 0);
	assert_int_equal(virtq_chain_write(&f->vq.q, &f->c, UINT64_MAX - 1, in, 4), 0);
	fixture_free(f);

	/* A chain without writable buffers takes nothing. */
	f = fixture_new(RAM_SIZE, QSIZE, 0);
	b[0] = vt_buf_new(&f->g, 6, false);
	vt_add_chain(&f->vq, b, 1);
	assert_int_equal(virtq_pop(&f->vq.q, &f->c), 1);
	assert_int_equal(virtq_chain_write(&f->vq.q, &f->c, 0, in, 4), 0);
	assert_int_equal(virtq_chain_read(&f->vq.q, &f->c, 0, in, 32), 6);
	fixture_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_direct_chain),
		cmocka_unit_test(test_indirect_chain),
		cmocka_unit_test(test_direct_then_indirect),
		cmocka_unit_test(test_chain_limit_direct),
		cmocka_unit_test(test_chain_limit_indirect),
		cmocka_unit_test(test_chain_limit_mixed),
		cmocka_unit_test(test_wraparound),
		cmocka_unit_test(test_many_chains),
		cmocka_unit_test(test_zero_length),
		cmocka_unit_test(test_buffer_at_ram_end),
		cmocka_unit_test(test_self_loop),
		cmocka_unit_test(test_two_cycle),
		cmocka_unit_test(test_chain_longer_than_ring),
		cmocka_unit_test(test_chain_whole_ring),
		cmocka_unit_test(test_next_out_of_range),
		cmocka_unit_test(test_next_out_of_range_max),
		cmocka_unit_test(test_head_out_of_range),
		cmocka_unit_test(test_buffer_outside_ram),
		cmocka_unit_test(test_total_length_overflow),
		cmocka_unit_test(test_readable_after_writable),
		cmocka_unit_test(test_readable_after_writable_mixed),
		cmocka_unit_test(test_indirect_without_feature),
		cmocka_unit_test(test_indirect_nested),
		cmocka_unit_test(test_indirect_self),
		cmocka_unit_test(test_indirect_with_next),
		cmocka_unit_test(test_indirect_bad_table),
		cmocka_unit_test(test_indirect_table_at_ram_end),
		cmocka_unit_test(test_indirect_loops),
		cmocka_unit_test(test_avail_idx_jump),
		cmocka_unit_test(test_restart_clears_broken),
		cmocka_unit_test(test_start_bad_size),
		cmocka_unit_test(test_start_bad_addresses),
		cmocka_unit_test(test_event_idx_interrupt),
		cmocka_unit_test(test_event_idx_wrap),
		cmocka_unit_test(test_no_interrupt_flag),
		cmocka_unit_test(test_set_notify),
		cmocka_unit_test(test_chain_read),
		cmocka_unit_test(test_chain_write),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
