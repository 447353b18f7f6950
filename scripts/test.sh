#!/bin/sh
# Install dependencies, build libvmm twice (plain, and with ASan+UBSan) and run the whole test suite in both.
# Tests that need /dev/kvm (or hardware KVM, for Linux guests) report "skipped" with the reason elsewhere.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
for variant in plain asan; do
	dir=build-test-$variant
	if [ ! -d "$dir" ]; then
		if [ $variant = asan ]; then
			meson setup "$dir" -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
		else
			meson setup "$dir" >/dev/null
		fi
	fi
	echo "== $variant build"
	ninja -C "$dir"
	echo "== $variant tests"
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C "$dir" --print-errorlogs --num-processes 2
done
