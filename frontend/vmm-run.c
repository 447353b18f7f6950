#include "libvmm/libvmm.h"
int main(void) { return 0; }
