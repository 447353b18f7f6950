# test=net: virtio-net on a tap the host-side driver set up.
#
# The driver reads the console line by line and answers on the console's
# input: every "NET WAIT what" line below blocks on one "HOST ..." line
# ("HOST abort" when the driver gave up: the guest fails at once).
#
# Kernel command line read here:
#   net_ip=A.B.C.D/N   the guest's address on eth0
#   net_host=A.B.C.D   the host's address on the tap
#   net_mac=MAC        (optional) the MAC eth0 must have
#   net_tx_port=P      the host listens there for the guest's upload
#   net_rx_port=P      the host listens there and sends the guest a download
#   net_bytes=N        size of the upload, a multiple of 65536
#
# Prints, in order:
#   NET iface=eth0 mac=MAC driver=virtio_net
#   NET ping host ok
#   NET WAIT host-ping          <- HOST ping ok|fail
#   NET tx bytes=N sha256=HEX   then the upload (nc to net_host:net_tx_port)
#   NET WAIT host-received      <- HOST received N HEX
#   NET WAIT host-send          <- HOST sending N HEX, then the download
#   NET rx bytes=N sha256=HEX
fail=0
bad() { echo "net: FAIL: $*"; fail=1; }
die() { echo "net: FAIL: $*"; exit 1; }

ipaddr="" host="" mac_want="" tx_port="" rx_port="" bytes=""
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	net_ip=*) ipaddr=${arg#net_ip=} ;;
	net_host=*) host=${arg#net_host=} ;;
	net_mac=*) mac_want=${arg#net_mac=} ;;
	net_tx_port=*) tx_port=${arg#net_tx_port=} ;;
	net_rx_port=*) rx_port=${arg#net_rx_port=} ;;
	net_bytes=*) bytes=${arg#net_bytes=} ;;
	esac
done
[ -n "$ipaddr" ] && [ -n "$host" ] && [ -n "$tx_port" ] && [ -n "$rx_port" ] && [ -n "$bytes" ] ||
	die "net_ip, net_host, net_tx_port, net_rx_port and net_bytes are needed"

# The host's answer to "NET WAIT $1": one console line starting with "HOST".
wait_host() {
	echo "NET WAIT $1"
	reply=""
	while [ -z "$reply" ]; do
		read -r -t 300 reply || die "no answer from the host to '$1'"
		case "$reply" in
		"HOST abort"*) die "the host gave up waiting for this guest" ;;
		HOST*) ;;
		*) reply="" ;;
		esac
	done
}

ifaces=$(ls /sys/class/net | grep -v '^lo$' | tr '\n' ' ')
echo "NET interfaces: $ifaces"
nic=eth0
[ -e /sys/class/net/$nic ] || die "no $nic"
mac=$(cat /sys/class/net/$nic/address)
driver=$(basename "$(readlink /sys/class/net/$nic/device/driver)")
echo "NET iface=$nic mac=$mac driver=$driver"
[ "$driver" = virtio_net ] || bad "$nic is driven by '$driver', not virtio_net"
if [ -n "$mac_want" ] && [ "$mac" != "$mac_want" ]; then
	bad "$nic has MAC $mac, expected $mac_want"
fi

ip link set lo up
ip addr add "$ipaddr" dev $nic || die "ip addr add $ipaddr dev $nic"
ip link set $nic up || die "ip link set $nic up"
ip addr show dev $nic | sed 's/^/NET /'

# The guest pings the host (the first ping also resolves its MAC by ARP).
if ping -c 3 -w 30 "$host" > /tmp/ping.out 2>&1; then
	echo "NET ping host ok: $(tail -n 1 /tmp/ping.out)"
else
	cat /tmp/ping.out
	die "ping $host failed"
fi

# The host pings the guest while the guest waits.
wait_host host-ping
[ "$reply" = "HOST ping ok" ] || bad "the host could not ping the guest: $reply"

# Upload: random data to the host, which reports what it received.
dd if=/dev/urandom of=/tmp/tx bs=65536 count=$((bytes / 65536)) 2>/dev/null
tx_sum=$(sha256sum < /tmp/tx | cut -d' ' -f1)
echo "NET tx bytes=$(wc -c < /tmp/tx) sha256=$tx_sum"
nc "$host" "$tx_port" < /tmp/tx || bad "nc $host $tx_port (upload) failed"
rm -f /tmp/tx
wait_host host-received
[ "$reply" = "HOST received $bytes $tx_sum" ] ||
	bad "upload: sent $bytes bytes $tx_sum, the host says: $reply"

# Download: the host announces size and checksum, then serves the data.
wait_host host-send
set -- $reply
rx_bytes=$3 rx_want=$4
nc "$host" "$rx_port" < /dev/null > /tmp/rx || bad "nc $host $rx_port (download) failed"
rx_got=$(wc -c < /tmp/rx)
rx_sum=$(sha256sum < /tmp/rx | cut -d' ' -f1)
echo "NET rx bytes=$rx_got sha256=$rx_sum"
[ "$rx_got" = "$rx_bytes" ] && [ "$rx_sum" = "$rx_want" ] ||
	bad "download: got $rx_got bytes $rx_sum, the host sent $rx_bytes $rx_want"
rm -f /tmp/rx
exit $fail
