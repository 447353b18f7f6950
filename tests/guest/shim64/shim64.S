/*
 * Test-only PVH "VMM shim": enters guest.elf through its 64-bit boot entry
 * the way libvmm does, so QEMU can exercise that path. QEMU boots this shim
 * with PVH (-kernel shim64.elf) and loads guest.elf with -device loader.
 *
 * Like libvmm (lib/layout.h): GDT at 0x500 (CS 0x10 code64, DS 0x18),
 * identity page tables at 0x9000 (PML4), 0xa000 (PDPT), 0xb000 (PD: 1 GiB
 * of 2 MiB pages, the minimum a 64-bit-entry kernel may assume), stack
 * 0x8ff0, zero page 0x7000, command line 0x20000.
 */
#define GDT_ADDR  0x500
#define PML4_ADDR 0x9000
#define STACK     0x8ff0
#define ZERO_PAGE 0x7000
#define GUEST_64  0x100200

	.section .text, "ax"
	.code32
	.globl shim_pvh_entry
shim_pvh_entry:
	cli
	cld
	movl	%ebx, shim_start_info
	/* GDT: null, null, code64 (0x10), data (0x18) */
	movl	$GDT_ADDR, %edi
	xorl	%eax, %eax
	movl	$4, %ecx
	rep stosl
	movl	$0x0000ffff, (GDT_ADDR + 0x10)
	movl	$0x00af9a00, (GDT_ADDR + 0x14)
	movl	$0x0000ffff, (GDT_ADDR + 0x18)
	movl	$0x00cf9200, (GDT_ADDR + 0x1c)
	lgdt	shim_gdt_desc
	movl	$0x18, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	/* page tables: clear 3 pages, link, 512 x 2 MiB */
	movl	$PML4_ADDR, %edi
	xorl	%eax, %eax
	movl	$3 * 1024, %ecx
	rep stosl
	movl	$PML4_ADDR + 0x1000 + 3, (PML4_ADDR)
	movl	$PML4_ADDR + 0x2000 + 3, (PML4_ADDR + 0x1000)
	movl	$PML4_ADDR + 0x2000, %edi
	movl	$0x83, %eax
	movl	$512, %ecx
1:	movl	%eax, (%edi)
	addl	$0x200000, %eax
	addl	$8, %edi
	loop	1b
	movl	%cr4, %eax
	orl	$0x20, %eax
	movl	%eax, %cr4
	movl	$PML4_ADDR, %eax
	movl	%eax, %cr3
	movl	$0xc0000080, %ecx
	rdmsr
	orl	$0x100, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$0x80000001, %eax
	movl	%eax, %cr0
	ljmp	$0x10, $shim64

	.code64
shim64:
	movl	$0x18, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movq	$STACK, %rsp
	movl	shim_start_info(%rip), %edi
	call	shim_main
	movq	$ZERO_PAGE, %rsi
	movq	$GUEST_64, %rax
	jmp	*%rax

	.data
	.balign	8
shim_start_info:
	.long	0
	.word	0
shim_gdt_desc:
	.word	0x1f
	.long	GDT_ADDR

	.section .note.Xen, "a", @note
	.balign	4
	.long	4, 4, 18
	.asciz	"Xen"
	.long	shim_pvh_entry

	.section .note.GNU-stack, "", @progbits
