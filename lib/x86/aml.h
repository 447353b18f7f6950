/* stub */
#ifndef LIBVMM_LIB_X86_AML_H
#define LIBVMM_LIB_X86_AML_H
#endif
