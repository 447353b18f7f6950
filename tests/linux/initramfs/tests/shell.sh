# test=shell: an interactive shell on the serial console, for the demo.
# Leaving it (exit or Ctrl-D) powers the machine off.
echo "libvmm Linux guest: busybox shell on $(cat /sys/class/tty/console/active 2>/dev/null || echo console)."
echo "Type 'exit' or Ctrl-D to power off."
# cttyhack opens the tty behind /dev/console so that the shell gets a
# controlling terminal (job control, Ctrl-C); setsid makes it a session.
setsid cttyhack sh -l
exit 0
