/*
 * The ring-3 job: CRC-32 (zlib's: reflected, polynomial 0xedb88320) of the
 * initrd. Linked into the user-accessible pages [__user_start, __user_end)
 * and self-contained: it calls nothing and touches only its own data and
 * the initrd. It ends with ud2; the #UD handler resumes ring 0.
 */
#include "guest.h"

struct user_job ujob;
u8 user_stack[USER_STACK_SIZE] __attribute__((aligned(16)));
static u32 crc_table[256];

void user_crc32(void)
{
	volatile struct user_job *job = &ujob;
	const u8 *p = (const u8 *)job->addr;
	u64 n = job->size;
	u32 crc = 0xffffffff;
	u32 i, k;

	for (i = 0; i < 256; i++) {
		u32 c = i;

		for (k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320 ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	job->crc = ~crc;
	job->done = 1;
	__asm__ volatile("ud2" ::: "memory");
	for (;;)
		;
}
