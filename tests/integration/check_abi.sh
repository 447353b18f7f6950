#!/bin/sh
# The shared library's ABI surface: exported symbols, SONAME, the header in C++, pkg-config.
# Usage: check_abi.sh LIBVMM_SO HEADER_DIR BUILD_ROOT
set -u
so=$1 incdir=$2 build=$3
fail=0
expected="vm_add_balloon vm_add_disk vm_add_disk_fd vm_add_rng vm_add_tap vm_add_tap_fd vm_config_init vm_control_listen vm_control_path vm_control_send vm_create vm_create_qcow2 vm_destroy vm_event_fd vm_exit_reason_name vm_get_net_config vm_get_status vm_last_error vm_pause vm_resume vm_run vm_set_balloon vm_stop vm_version"
got=$(nm -D --defined-only "$so" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort | tr '\n' ' ' | sed 's/ $//')
if [ "$got" != "$expected" ]; then
	echo "FAIL: exported symbols are '$got', expected '$expected'"
	fail=1
fi
if ! nm -D --defined-only "$so" | grep -q ' vm_create@@LIBVMM_0.1$'; then
	echo "FAIL: vm_create is not versioned LIBVMM_0.1"
	fail=1
fi
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ "$soname" != "libvmm.so.0" ]; then
	echo "FAIL: SONAME is '$soname', expected libvmm.so.0"
	fail=1
fi
for lang in c c++; do
	if ! printf '#include <libvmm/libvmm.h>\nint main(void) { struct vm_config c; vm_config_init(&c); return 0; }\n' |
		${CC:-cc} -x "$lang" -std=$([ $lang = c ] && echo c99 || echo c++11) -Wall -Wextra -Werror -pedantic -fsyntax-only -I "$incdir" -; then
		echo "FAIL: the public header does not compile as $lang"
		fail=1
	fi
done
pc="$build/meson-private/libvmm.pc"
if ! grep -q '^Libs:.*-lvmm' "$pc"; then
	echo "FAIL: $pc lacks -lvmm"
	fail=1
fi
[ $fail = 0 ] && echo "ABI checks passed"
exit $fail
