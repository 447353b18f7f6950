/*
 * Real-mode part of guest.bzImage: the setup sectors with the Linux boot
 * protocol header (version 2.15) at 0x1f1 and a small real-mode stub.
 *
 * A BIOS boot loader (QEMU's linuxboot option ROM on pc/q35, ...) loads these
 * sectors at a segment X and far-jumps to X+0x20:0. The stub then does what
 * Linux's setup does, minus everything optional: it uses the loaded setup
 * itself as struct boot_params (the header is already at 0x1f1), fills the
 * e820 table (0x2d0) and count (0x1e8) through INT 15h AX=E820, enables A20,
 * switches to 32-bit protected mode with flat segments (CS 0x10, DS 0x18)
 * and jumps to code32_start with ESI = boot_params, i.e. the 32-bit boot
 * protocol entry at offset 0 of the protected-mode code.
 *
 * Loaders that use the 32- or 64-bit entry directly never run this code.
 * mkbzimage.py fills in setup_sects, syssize and init_size.
 */
#define SMAP 0x534d4150

	.code16
	.section .setup, "ax"
	.globl _start
_start:
	.org	0x1f1
hdr:
setup_sects:		.byte	0		/* mkbzimage.py */
root_flags:		.word	0
syssize:		.long	0		/* mkbzimage.py */
ram_size:		.word	0
vid_mode:		.word	0xffff
root_dev:		.word	0
boot_flag:		.word	0xaa55
	/* 0x200: real-mode entry */
jump:			.byte	0xeb, setup_jump - header
header:			.ascii	"HdrS"
version:		.word	0x020f
realmode_swtch:		.long	0
start_sys_seg:		.word	0x1000
kernel_version:		.word	version_string - 0x200
type_of_loader:		.byte	0
loadflags:		.byte	0x01		/* LOADED_HIGH */
setup_move_size:	.word	0
code32_start:		.long	0x100000
ramdisk_image:		.long	0
ramdisk_size:		.long	0
bootsect_kludge:	.long	0
heap_end_ptr:		.word	0
ext_loader_ver:		.byte	0
ext_loader_type:	.byte	0
cmd_line_ptr:		.long	0
initrd_addr_max:	.long	0x7fffffff
kernel_alignment:	.long	0x100000
relocatable_kernel:	.byte	0
min_alignment:		.byte	20
xloadflags:		.word	0x1		/* XLF_KERNEL_64: 64-bit entry at +0x200 */
cmdline_size:		.long	2047
hardware_subarch:	.long	0
hardware_subarch_data:	.quad	0
payload_offset:		.long	0
payload_length:		.long	0
setup_data:		.quad	0
pref_address:		.quad	0x100000
init_size:		.long	0		/* mkbzimage.py */
handover_offset:	.long	0
kernel_info_offset:	.long	0x1c0		/* kernel_info in entry.S */
	/* 0x26c: end of the header; the short jump above lands here */
setup_jump:
	jmp	real_start

	/* boot_params ends at 0x1000: the stub lives after it. */
	.org	0x1000
real_start:
	cli
	cld
	movw	%cs, %ax		/* entered at X+0x20:0 */
	subw	$0x20, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	$0x9000, %sp		/* within the 0x8000-0x10000 heap/stack area */
	pushw	%ds			/* CS = X from here on */
	pushw	$1f
	lretw
1:
	/* e820 map into boot_params */
	xorl	%ebx, %ebx
	xorw	%bp, %bp
	movw	$0x2d0, %di
2:	movl	$0xe820, %eax
	movl	$SMAP, %edx
	movl	$20, %ecx
	int	$0x15
	jc	3f
	cmpl	$SMAP, %eax
	jne	3f
	incw	%bp
	addw	$20, %di
	cmpw	$128, %bp
	jae	3f
	testl	%ebx, %ebx
	jnz	2b
3:	movw	%bp, %ax
	movb	%al, 0x1e8

	/* fast A20 (bit 0 of port 0x92 is reset: keep it clear) */
	inb	$0x92, %al
	orb	$0x02, %al
	andb	$0xfe, %al
	outb	%al, $0x92

	/* ESI = linear address of boot_params; relocate GDT base and target */
	cli
	xorl	%esi, %esi
	movw	%ds, %si
	shll	$4, %esi
	addl	%esi, gdt_desc + 2
	movl	code32_start, %eax
	movl	%eax, far_ptr
	lgdtl	gdt_desc
	movl	%cr0, %eax
	orb	$1, %al
	movl	%eax, %cr0
	movw	$0x18, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	%ax, %fs
	movw	%ax, %gs
	ljmpl	*%cs:far_ptr

	.balign	8
gdt:
	.quad	0
	.quad	0
	.quad	0x00cf9a000000ffff	/* 0x10: flat 32-bit code */
	.quad	0x00cf92000000ffff	/* 0x18: flat data */
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt			/* + linear base at run time */
far_ptr:
	.long	0
	.word	0x10
version_string:
	.asciz	"libvmm test guest"

	.org	0x1200			/* setup_sects = 8 */

	.section .note.GNU-stack, "", @progbits
