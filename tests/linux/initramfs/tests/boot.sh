# test=boot: report what the guest kernel sees and check the basics.
# The host-side driver checks the BOOT lines against what it asked for
# (CPU count, memory size, command line).
fail=0
bad() { echo "boot: FAIL: $*"; fail=1; }

cpus=$(grep -c '^processor' /proc/cpuinfo)
echo "BOOT cpus=$cpus"
echo "BOOT online=$(cat /sys/devices/system/cpu/online)"
memtotal=$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo)
echo "BOOT memtotal_kib=$memtotal"
echo "BOOT cmdline=$(cat /proc/cmdline)"
tables=$(ls /sys/firmware/acpi/tables 2>/dev/null | tr '\n' ' ')
echo "BOOT acpi_tables=$tables"
echo "BOOT modules=$(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
echo "--- dmesg: e820 and ACPI"
dmesg | grep -E 'e820|ACPI'
echo "---"

[ "$cpus" -ge 1 ] 2>/dev/null || bad "no processor in /proc/cpuinfo"
[ "$memtotal" -gt 0 ] 2>/dev/null || bad "no MemTotal in /proc/meminfo"
for t in FACP APIC DSDT; do
	[ -e "/sys/firmware/acpi/tables/$t" ] || bad "ACPI table $t missing"
done
exit $fail
