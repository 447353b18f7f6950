/*
 * Test-only PVH shim for the boot-image tests (see README.md). QEMU boots it
 * with -kernel (PVH: 32-bit protected mode, paging off, EBX = start_info).
 * It enters long mode on page tables of its own (inside this image), lets
 * shim_main() copy libvmm's guest memory dump into place, then takes on the
 * exact state libvmm's boot vCPU starts in (lib/x86/cpu.c set_long_mode()):
 *
 *   GDT base 0x500 limit 31 (libvmm's own, from the dump), IDT base 0x520
 *   limit 0, CR3 0x9000 (libvmm's own tables), CR4 = PAE, CR0 = PE|ET|NE|PG,
 *   EFER = LME|LMA (set by shim_main), DS/ES/FS/GS/SS = 0x18, RFLAGS = 2,
 *   every GPR 0 except RSI = 0x7000 and RSP = 0x8ff0,
 *
 * and far-jumps to CS 0x10 : entry.
 */
#define SHIM_CS32 0x08
#define SHIM_CS64 0x10
#define SHIM_DS	  0x18

#define VMM_GDT	      0x500
#define VMM_GDT_LIMIT 31
#define VMM_IDT	      0x520
#define VMM_CR3	      0x9000
#define VMM_CS	      0x10
#define VMM_DS	      0x18
#define VMM_ZERO_PAGE 0x7000
#define VMM_STACK     0x8ff0
#define CR0_VMM	      0x80000031 /* PG | NE | ET | PE */
#define CR4_PAE	      0x20
#define MSR_EFER      0xc0000080
#define EFER_LME      0x100

	.section .text.entry, "ax"
	.code32
	.globl	shim_pvh_entry
shim_pvh_entry:
	cli
	cld
	movl	%ebx, shim_start_info
	lgdt	shim_gdt_desc32
	ljmp	$SHIM_CS32, $1f
1:	movl	$SHIM_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %fs
	movl	%eax, %gs
	movl	%eax, %ss
	movl	$shim_stack_top, %esp
	/* Long mode on the shim's own identity map (0-4 GiB, 2 MiB pages). */
	movl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$shim_pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$0x80000001, %eax
	movl	%eax, %cr0
	ljmp	$SHIM_CS64, $shim_long

	.code64
shim_long:
	movl	$SHIM_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movq	$shim_stack_top, %rsp
	movl	shim_start_info(%rip), %edi
	call	shim_main		/* copies the dump; returns the entry (< 4 GiB) */

	/* From here on: libvmm's boot state, nothing else. */
	movl	%eax, shim_far(%rip)
	movw	$VMM_CS, shim_far + 4(%rip)
	fninit				/* x87 as KVM_SET_FPU leaves it: FCW 0x37f */
	lgdt	vmm_gdt_desc(%rip)
	lidt	vmm_idt_desc(%rip)
	movl	$VMM_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %fs
	movl	%eax, %gs
	movl	%eax, %ss
	/* libvmm's tables identity-map the first 4 GiB, the shim included. */
	movl	$VMM_CR3, %eax
	movq	%rax, %cr3
	movl	$CR4_PAE, %eax
	movq	%rax, %cr4
	movl	$CR0_VMM, %eax
	movq	%rax, %cr0
	pushq	$2
	popfq
	xorl	%eax, %eax
	xorl	%ebx, %ebx
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	xorl	%r8d, %r8d
	xorl	%r9d, %r9d
	xorl	%r10d, %r10d
	xorl	%r11d, %r11d
	xorl	%r12d, %r12d
	xorl	%r13d, %r13d
	xorl	%r14d, %r14d
	xorl	%r15d, %r15d
	movl	$VMM_ZERO_PAGE, %esi
	movl	$VMM_STACK, %esp
	/* Far jump through memory (m16:32): CS 0x10 from libvmm's GDT. */
	ljmpl	*shim_far(%rip)

	.data
	.balign	16
shim_gdt:
	.quad	0
	.quad	0x00cf9a000000ffff	/* 0x08 code32 */
	.quad	0x00af9a000000ffff	/* 0x10 code64 */
	.quad	0x00cf92000000ffff	/* 0x18 data */
shim_gdt_end:
	.balign	8
shim_gdt_desc32:
	.word	shim_gdt_end - shim_gdt - 1
	.long	shim_gdt
	.balign	8
	.word	0, 0, 0
vmm_gdt_desc:				/* 64-bit form: limit, 8-byte base */
	.word	VMM_GDT_LIMIT
	.quad	VMM_GDT
	.balign	8
	.word	0, 0, 0
vmm_idt_desc:
	.word	0
	.quad	VMM_IDT
	.balign	8
shim_far:
	.long	0			/* offset */
	.word	0			/* selector */
	.balign	4
shim_start_info:
	.long	0

	/* The shim's own page tables: PML4 -> PDPT -> 4 PDs of 2 MiB pages. */
	.balign	4096
shim_pml4:
	.quad	shim_pdpt + 3
	.fill	511, 8, 0
shim_pdpt:
	.quad	shim_pd + 0x0003, shim_pd + 0x1003, shim_pd + 0x2003, shim_pd + 0x3003
	.fill	508, 8, 0
shim_pd:
	.set	i, 0
	.rept	2048
	.quad	(i << 21) | 0x83
	.set	i, i + 1
	.endr

	.bss
	.balign	16
	.space	16384
shim_stack_top:

	.section .note.Xen, "a", @note
	.balign	4
	.long	4, 4, 18		/* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.long	shim_pvh_entry

	.section .note.GNU-stack, "", @progbits
