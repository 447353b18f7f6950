/*
 * A small AML (ACPI Machine Language) emitter: appends encoded objects to a
 * growable byte buffer.
 *
 * Objects that carry a PkgLength (Scope, Device, Method, Package, Buffer,
 * resource templates) are opened with a *_begin() call and closed with
 * aml_end(), in nesting order; the PkgLength is inserted when the object is
 * closed, in the shortest encoding that fits. Errors are sticky: after the
 * first failure (out of memory, bad name, nesting too deep, too large) every
 * call does nothing and aml_finish() returns the error, so a caller checks
 * once at the end.
 *
 * Name strings are written the way ASL spells them: "\\_SB_.PCI0", "^FOO",
 * "_HID". A segment shorter than four characters is padded with '_'
 * ("_S5" is "_S5_").
 */
#ifndef LIBVMM_LIB_X86_AML_H
#define LIBVMM_LIB_X86_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Opcodes (ACPI 6.x, section 20.3). */
#define AML_ZERO_OP	      0x00
#define AML_ONE_OP	      0x01
#define AML_NAME_OP	      0x08
#define AML_BYTE_PREFIX	      0x0a
#define AML_WORD_PREFIX	      0x0b
#define AML_DWORD_PREFIX      0x0c
#define AML_STRING_PREFIX     0x0d
#define AML_QWORD_PREFIX      0x0e
#define AML_SCOPE_OP	      0x10
#define AML_BUFFER_OP	      0x11
#define AML_PACKAGE_OP	      0x12
#define AML_VAR_PACKAGE_OP    0x13
#define AML_METHOD_OP	      0x14
#define AML_DUAL_NAME_PREFIX  0x2e
#define AML_MULTI_NAME_PREFIX 0x2f
#define AML_EXT_OP_PREFIX     0x5b
#define AML_ROOT_CHAR	      0x5c
#define AML_PARENT_PREFIX     0x5e
#define AML_LOCAL0_OP	      0x60
#define AML_ARG0_OP	      0x68
#define AML_RETURN_OP	      0xa4
#define AML_ONES_OP	      0xff
#define AML_EXT_DEVICE_OP     0x82 /* after AML_EXT_OP_PREFIX */

/* Largest value a PkgLength can hold (4 bytes: 4 + 3 * 8 bits). */
#define AML_PKGLENGTH_MAX 0x0fffffffu

/* How deep *_begin() calls may nest. */
#define AML_MAX_DEPTH 32

/* Resource descriptor flags for the address space descriptors. */
#define AML_RES_CONSUMER   0x01 /* general flags bit 0: consumer (else producer) */
#define AML_RES_SUB_DECODE 0x02
#define AML_RES_MIN_FIXED  0x04
#define AML_RES_MAX_FIXED  0x08

#define AML_RES_TYPE_MEMORY 0
#define AML_RES_TYPE_IO	    1
#define AML_RES_TYPE_BUS    2

/* Memory type-specific flags. */
#define AML_MEM_RW		0x01
#define AML_MEM_NONCACHEABLE	0x00
#define AML_MEM_CACHEABLE	0x02
#define AML_MEM_WRITE_COMBINING 0x04
#define AML_MEM_PREFETCHABLE	0x06
/* I/O type-specific flags. */
#define AML_IO_ENTIRE_RANGE 0x03

struct aml {
	uint8_t *buf;
	size_t len;
	size_t cap;
	size_t open[AML_MAX_DEPTH]; /* offset where each open object's PkgLength goes */
	uint8_t kind[AML_MAX_DEPTH];
	unsigned int depth;
	int error; /* first failure, -errno, or 0 */
};

/* Start with an empty buffer. */
void aml_init(struct aml *a);

/* Release the buffer. Safe to call twice. */
void aml_free(struct aml *a);

/*
 * 0 when everything so far was emitted and every object was closed,
 * else -errno (-EINVAL for an unclosed object).
 */
int aml_finish(const struct aml *a);

/*
 * Encode @value (the whole PkgLength, counting its own bytes) into @out.
 * Returns the number of bytes (1-4), or 0 if @value does not fit the form
 * it needs: a 1-byte PkgLength holds 0-63, 2 bytes up to 4095, 3 bytes up
 * to 0xfffff, 4 bytes up to AML_PKGLENGTH_MAX.
 */
unsigned int aml_pkglength_encode(uint32_t value, uint8_t out[4]);

/*
 * Number of bytes of the PkgLength for an object whose contents after the
 * PkgLength are @content bytes long, or 0 when too large.
 */
unsigned int aml_pkglength_size(size_t content);

/* Raw bytes. */
void aml_byte(struct aml *a, uint8_t b);
void aml_bytes(struct aml *a, const void *p, size_t n);

/* A NameString (see the top of the file). */
void aml_name_string(struct aml *a, const char *path);

/* An integer in its shortest form: ZeroOp, OneOp or a Byte/Word/DWord/QWord constant. */
void aml_integer(struct aml *a, uint64_t v);

/* A String constant (ASCII without NUL bytes). */
void aml_string(struct aml *a, const char *s);

/* The 32-bit compressed EISA id of "PNP0A03" etc., or 0 if @id is malformed. */
uint32_t aml_eisaid_value(const char *id);

/* An EisaId("PNP0A03") as a DWord constant. */
void aml_eisaid(struct aml *a, const char *id);

/* Name(path, ...): emit the data object that follows with another call. */
void aml_name(struct aml *a, const char *path);

/* Shorthands for Name(path, integer) and Name(path, EisaId(id)). */
void aml_name_integer(struct aml *a, const char *path, uint64_t v);
void aml_name_eisaid(struct aml *a, const char *path, const char *id);

/* Scope(path) { ... aml_end() }. */
void aml_scope_begin(struct aml *a, const char *path);

/* Device(path) { ... aml_end() }. */
void aml_device_begin(struct aml *a, const char *path);

/* Method(path, nargs (0-7), serialized, sync level (0-15)) { ... aml_end() }. */
void aml_method_begin(struct aml *a, const char *path, unsigned int nargs, bool serialized,
		      unsigned int sync_level);

/* Return(...): emit the operand with another call. */
void aml_return(struct aml *a);

/* Package(n) { n data objects, aml_end() }, n <= 255. */
void aml_package_begin(struct aml *a, unsigned int nelems);

/* Buffer() { bytes, aml_end() }: the size is the number of bytes emitted. */
void aml_buffer_begin(struct aml *a);

/* Buffer() { @n bytes at @p } in one call. */
void aml_buffer(struct aml *a, const void *p, size_t n);

/*
 * ResourceTemplate() { descriptors, aml_end() }: a Buffer whose aml_end()
 * first appends the End Tag with the checksum of the descriptors.
 */
void aml_rt_begin(struct aml *a);

/* Close the innermost open object. */
void aml_end(struct aml *a);

/* Resource descriptors (ACPI 6.x, section 6.4), for use inside aml_rt_begin(). */

/* IO(Decode16 or Decode10, min, max, alignment, length). */
void aml_rt_io(struct aml *a, bool decode16, uint16_t min, uint16_t max, uint8_t align,
	       uint8_t len);

/* IRQNoFlags() { irq }: an edge-triggered, active-high, exclusive ISA IRQ (0-15). */
void aml_rt_irq_noflags(struct aml *a, unsigned int irq);

/* Memory32Fixed(ReadWrite or ReadOnly, base, length). */
void aml_rt_memory32_fixed(struct aml *a, bool rw, uint32_t base, uint32_t len);

/*
 * Word/DWord/QWord Address Space descriptors. @type is AML_RES_TYPE_*,
 * @gflags the general flags (AML_RES_*), @tflags the type-specific flags
 * (AML_MEM_* or AML_IO_*). The length field is max - min + 1.
 */
void aml_rt_word_space(struct aml *a, uint8_t type, uint8_t gflags, uint8_t tflags, uint16_t min,
		       uint16_t max);
void aml_rt_dword_space(struct aml *a, uint8_t type, uint8_t gflags, uint8_t tflags, uint32_t min,
			uint32_t max);
void aml_rt_qword_space(struct aml *a, uint8_t type, uint8_t gflags, uint8_t tflags, uint64_t min,
			uint64_t max);

#endif
