/*
 * Entry points, descriptor and page tables, exception stubs, the ring-3
 * switch and the AP trampoline of the test guest.
 *
 * The image is linked at 0x100000 and runs identity mapped. Its first bytes
 * are the Linux boot protocol entries:
 *   +0x000  32-bit entry (bzImage protected-mode code): ESI = boot_params
 *   +0x040  PVH entry (named by the Xen ELF note):        EBX = hvm_start_info
 *   +0x1c0  kernel_info (boot protocol 2.15)
 *   +0x200  64-bit entry: long mode, RSI = boot_params
 */
#include "guest.h"

#define EFER       0xc0000080
#define EFER_LME   0x100
#define CR0_PE_PG  0x80000001
#define CR4_PAE    0x20

	.section .head.text, "ax"
	.code32
	.globl startup_32
startup_32:
	movl	$ENTRY_32, %eax
	movl	%esi, %edx
	jmp	start32

	.org	0x40
	.globl pvh_start
pvh_start:
	movl	$ENTRY_PVH, %eax
	movl	%ebx, %edx
	jmp	start32

	/* Boot protocol 2.15 kernel_info: header, size, size_total, setup_type_max. */
	.org	0x1c0
kernel_info:
	.ascii	"LToP"
	.long	kernel_info_end - kernel_info
	.long	kernel_info_end - kernel_info
	.long	0
kernel_info_end:

	.org	0x200
	.code64
	.globl startup_64
startup_64:
	cli
	cld
	movq	%rsi, boot_ptr(%rip)
	movl	$ENTRY_64, boot_entry(%rip)
	movw	%cs, boot_cs(%rip)
	movl	$EFER, %ecx
	rdmsr
	shrl	$10, %eax		/* EFER.LMA */
	andl	$1, %eax
	movl	%eax, boot_lm(%rip)
	lgdt	gdt_desc(%rip)
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	leaq	bsp_stack_top(%rip), %rsp
	movl	$CR4_PAE, %eax		/* no SMEP/SMAP/PGE/OSXSAVE: known state */
	movq	%rax, %cr4
	leaq	pml4(%rip), %rax
	movq	%rax, %cr3
	pushq	$SEL_CODE64
	leaq	long_common(%rip), %rax
	pushq	%rax
	lretq

	.text
	/* 32-bit protected mode, paging off, flat segments; EAX = kind, EDX = pointer. */
	.code32
start32:
	cli
	cld
	movl	%eax, boot_entry
	movl	%edx, boot_ptr
	movl	$0, boot_ptr + 4
	movl	$0, boot_lm
	movw	%cs, boot_cs
	lgdt	gdt_desc
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	$bsp_stack_top, %esp
	movl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$CR0_PE_PG, %eax
	movl	%eax, %cr0
	ljmp	$SEL_CODE64, $long_common

	.code64
long_common:
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	xorl	%eax, %eax
	movl	%eax, %fs
	movl	%eax, %gs
	movq	$bsp_stack_top, %rsp
	xorl	%ebp, %ebp
	call	kmain
1:	cli
	hlt
	jmp	1b

/* ---- exceptions: vectors 0-31 all go to trap(struct trap_frame *) ---- */
.macro isr vec
isr_\vec:
	.if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
	.else
	pushq	$0			/* no error code: keep the frame uniform */
	.endif
	pushq	$\vec
	jmp	isr_common
.endm

	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	isr \v
	.endr

isr_common:
	pushq	%rax
	pushq	%rbx
	pushq	%rcx
	pushq	%rdx
	pushq	%rsi
	pushq	%rdi
	pushq	%rbp
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%r11
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	cld
	movq	%rsp, %rdi
	call	trap
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%r11
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rbp
	popq	%rdi
	popq	%rsi
	popq	%rdx
	popq	%rcx
	popq	%rbx
	popq	%rax
	addq	$16, %rsp
	iretq

/*
 * ---- interrupts: vectors 32-255, IRQ_STUB_SIZE bytes per stub ----
 * irq_handler(vec) counts and EOIs; only caller-saved registers need saving.
 * Interrupts are taken only while ring 0 waits with sti; hlt.
 */
	.balign	IRQ_STUB_SIZE
	.globl	irq_stubs
irq_stubs:
	.set	v, 32
	.rept	224
	.balign	IRQ_STUB_SIZE
	pushq	$v
	jmp	irq_common
	.set	v, v + 1
	.endr

irq_common:
	pushq	%rax
	pushq	%rcx
	pushq	%rdx
	pushq	%rsi
	pushq	%rdi
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%r11
	movq	72(%rsp), %rdi		/* vector */
	cld
	subq	$8, %rsp		/* 16-byte aligned call */
	call	irq_handler
	addq	$8, %rsp
	popq	%r11
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rdi
	popq	%rsi
	popq	%rdx
	popq	%rcx
	popq	%rax
	addq	$8, %rsp
	iretq

/*
 * u64 user_enter(u64 rip, u64 rsp): run ring-3 code at rip on stack rsp with
 * IF=0 and IOPL=0. Ring 3 comes back through an exception; trap() then calls
 * user_resume(ret), which returns ret from here.
 */
	.globl user_enter
user_enter:
	pushq	%rbx
	pushq	%rbp
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	movq	%rsp, user_saved_rsp(%rip)
	pushq	$SEL_USER_DATA
	pushq	%rsi
	pushq	$0x2			/* RFLAGS: IF=0, IOPL=0 */
	pushq	$SEL_USER_CODE
	pushq	%rdi
	iretq

	.globl user_resume
user_resume:
	movq	user_saved_rsp(%rip), %rsp
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movq	%rdi, %rax
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbp
	popq	%rbx
	ret

/*
 * AP trampoline, copied to TRAMPOLINE (0x8000) and started there by SIPI
 * vector 0x08: real mode -> 32-bit protected mode -> long mode on the
 * guest's GDT and page tables, then ap_start64.
 */
	.code16
	.globl tramp_start, tramp_end
tramp_start:
	cli
	cld
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	tramp_gdt_desc - tramp_start
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	ljmpl	$0x08, $(TRAMPOLINE + tramp32 - tramp_start)

	.code32
tramp32:
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$CR0_PE_PG, %eax
	movl	%eax, %cr0
	ljmp	$SEL_CODE64, $ap_start64

	.balign	4
tramp_gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt
tramp_end:

	/* Long mode on an AP: take a stack slot, then ap_main(slot). */
	.code64
ap_start64:
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	xorl	%eax, %eax
	movl	%eax, %fs
	movl	%eax, %gs
	movl	$1, %eax
	lock xaddl %eax, ap_next(%rip)
	cmpl	$MAX_CPUS, %eax
	jae	2f
	movl	%eax, %edi
	incl	%eax
	shll	$12, %eax		/* 4 KiB per AP */
	leaq	ap_stacks(%rip), %rsp
	addq	%rax, %rsp
	xorl	%ebp, %ebp
	call	ap_main
2:	cli
	hlt
	jmp	2b

/* ---- data ---- */
	.data
	.globl boot_ptr, boot_entry, boot_lm, boot_cs, user_saved_rsp, ap_next, gdt, isr_table
	.balign	8
boot_ptr:	.quad	0
user_saved_rsp:	.quad	0
boot_entry:	.long	0
boot_lm:	.long	0
ap_next:	.long	0
boot_cs:	.word	0

	/* null, code32 (AP trampoline), code64, data, user code64, user data, TSS (16 bytes) */
	.balign	16
gdt:
	.quad	0
	.quad	0x00cf9a000000ffff
	.quad	0x00af9a000000ffff
	.quad	0x00cf92000000ffff
	.quad	0x00affa000000ffff
	.quad	0x00cff2000000ffff
	.quad	0, 0			/* TSS, filled by cpu_init() */
gdt_end:
	.balign	8
	.word	0, 0, 0
gdt_desc:
	.word	gdt_end - gdt - 1
	.quad	gdt

	.balign	8
isr_table:
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad	isr_\v
	.endr

/*
 * Page tables: identity map of 0-4 GiB. The first 2 MiB use 4 KiB pages (so
 * ring-3 access can be granted per page), the rest 2 MiB pages, the top GiB
 * (MMIO: LAPIC, IOAPIC, ...) uncached. Upper levels allow user access; leaf
 * entries are supervisor-only until user_map() flips them.
 */
	.globl pml4, pdpt, pd, pt0
	.balign	4096
pml4:
	.quad	pdpt + 0x7
	.fill	511, 8, 0
pdpt:
	.quad	pd + 0x0000 + 0x7
	.quad	pd + 0x1000 + 0x7
	.quad	pd + 0x2000 + 0x7
	.quad	pd + 0x3000 + 0x7
	.fill	508, 8, 0
pd:
	.quad	pt0 + 0x7
	.set	i, 1
	.rept	2047
	.if	i >= 1536
	.quad	(i << 21) | 0x9b	/* P RW PWT PCD PS */
	.else
	.quad	(i << 21) | 0x83	/* P RW PS */
	.endif
	.set	i, i + 1
	.endr
pt0:
	.set	i, 0
	.rept	512
	.quad	(i << 12) | 0x3		/* P RW */
	.set	i, i + 1
	.endr

/* ---- stacks (not loaded, not zeroed) ---- */
	.section .stacks, "aw", @nobits
	.globl trap_stack_top
	.balign	4096
bsp_stack:
	.skip	16384
bsp_stack_top:
trap_stack:
	.skip	4096
trap_stack_top:
ap_stacks:
	.skip	MAX_CPUS * 4096

/* ---- PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); QEMU wants 4-byte alignment ---- */
	.section .note.Xen, "a", @note
	.balign	4
	.long	4			/* namesz */
	.long	4			/* descsz */
	.long	18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.long	pvh_start

	.section .note.GNU-stack, "", @progbits
