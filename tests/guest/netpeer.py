#!/usr/bin/env python3
"""Host side of the test guest's virtio-net operations.

Run it in the network namespace of the guest's tap, with the tap given an
address (the kernel answers the guest's ARP requests and pings then):

  netpeer.py ping ADDR COUNT [--size N]     ICMP echo to the guest (raw socket, root)
  netpeer.py udp-recv PORT COUNT            take guest.net.udp=<nic>:<us>:PORT:COUNT
  netpeer.py udp-echo ADDR PORT COUNT       drive guest.net.recv=<nic>:PORT:COUNT
  netpeer.py bulk-send ADDR PORT MIB SEED   drive guest.net.bulk_rx=<nic>:PORT:MIB
  netpeer.py bulk-recv PORT MIB SEED        take guest.net.bulk_tx=<nic>:<us>:PORT:MIB:SEED
  netpeer.py crc MIB SEED                   the CRC-32 of MIB MiB of the bulk data

Each prints one line "NETPEER <command> key=value ... result=ok|fail" at
the end and exits 0 when everything arrived intact, 1 otherwise (2:
usage); udp-recv and bulk-recv first print "NETPEER <command> listening
port=PORT" once the port is bound. --timeout S bounds the
whole run (default 60 s). Start the receiving commands (udp-recv,
bulk-recv) before the guest gets to its operation, or at least within its
30 s (the guest's udp does not retry: wait for the listening line); the
sending ones retry until the guest answers.

Formats (little-endian), shared with unet.c:
  guest.net.udp datagram k: 512 bytes, pattern.sector(PORT, k), sent from PORT to PORT.
  bulk data   "BDAT" u32 seq, then bytes [seq * 1024, seq * 1024 + 1024) of the stream
              pattern.make(SEED, 0, MIB * 2048) (the disk pattern, 2 sectors per chunk)
  bulk start  "BSTA" u32 total chunks      (sender, until the first ACK)
  bulk end    "BEND" u32 total chunks      (sender, until the final ACK)
  bulk ack    "BACK" u32 high u32 base u32 done u32 lost u32 crc32 u64 bytes u32 ooo u32 dup
              high: highest seq received + 1 (the sender keeps seq < high + 256);
              base: chunks taken in order (received or given up as lost);
              done: 1 in the final ACK, then bytes / crc32 / lost are the result.
  The receiver acknowledges every 32 chunks of progress, holds up to 512
  chunks out of order and counts a chunk lost when one 512 chunks later
  arrives (or at END, or after 30 s of silence); the CRC-32 covers the
  chunks received, in sequence order.
"""
import argparse
import os
import select
import socket
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pattern  # noqa: E402

CHUNK = 1024
WINDOW = 256
REORDER = 512
ACK_EVERY = 32
UDP_BYTES = 512
ACK = struct.Struct("<4sIIIIIQII")
CTRL = struct.Struct("<4sI")
DATA_HDR = struct.Struct("<4sI")


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self, cap=None):
        left = max(self.end - time.monotonic(), 0.0)
        return left if cap is None else min(left, cap)

    def over(self):
        return time.monotonic() >= self.end


def report(cmd, ok, **kv):
    print(f"NETPEER {cmd} " + " ".join(f"{k}={v}" for k, v in kv.items()) +
          f" result={'ok' if ok else 'fail'}", flush=True)
    return 0 if ok else 1


def udp_socket(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if opt is None:
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, 32 << 20)
            break
        except OSError:
            pass
    s.bind(("0.0.0.0", port))
    return s


def listening(cmd, port):
    """Receivers say when their port is bound (the guest may send from then on)."""
    print(f"NETPEER {cmd} listening port={port}", flush=True)


def recv(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        return None, None
    return sock.recvfrom(65536)


def stream(mib, seed):
    return pattern.make(seed, 0, mib * 2048)


# ---------------------------------------------------------------- ping

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def cmd_ping(a, dl):
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xffff
    received = 0
    for seq in range(1, a.count + 1):
        payload = bytes((seq + i) & 0xff for i in range(a.size))
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, checksum(hdr + payload), ident, seq) + payload
        sock.sendto(pkt, (a.addr, 0))
        until = Deadline(min(2.0, dl.left()))
        while not until.over():
            data, src = recv(sock, until.left())
            if data is None:
                break
            ihl = (data[0] & 15) * 4
            icmp = data[ihl:]
            if src[0] != a.addr or len(icmp) < 8:
                continue
            typ, code, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if typ == 0 and rid == ident and rseq == seq:
                if icmp[8:] == payload and checksum(icmp) == 0:
                    received += 1
                break
    return report("ping", received == a.count, addr=a.addr, sent=a.count, received=received)


# ---------------------------------------------------------------- udp

def cmd_udp_recv(a, dl):
    sock = udp_socket(a.port)
    listening("udp-recv", a.port)
    got = good = 0
    while got < a.count and not dl.over():
        data, src = recv(sock, dl.left())
        if data is None:
            break
        if len(data) == UDP_BYTES and data == pattern.sector(a.port, got):
            good += 1
        got += 1
    return report("udp-recv", got == a.count and good == got, port=a.port, received=got,
                  good=good)


def cmd_udp_echo(a, dl):
    """Datagram k: (k * 211) % 1472 + 1 bytes, each waits for its echo (1 s, retried)."""
    sock = udp_socket(0)
    echoed = retries = 0
    for k in range(a.count):
        n = (k * 211) % 1472 + 1
        data = bytes((k * 7 + i * 13) & 0xff for i in range(n))
        for _ in range(10):
            if dl.over():
                break
            sock.sendto(data, (a.addr, a.port))
            until = Deadline(dl.left(1.0))
            got = None
            while not until.over():
                got, src = recv(sock, until.left())
                if got is None or got == data:
                    break
            if got == data:
                echoed += 1
                break
            retries += 1
    return report("udp-echo", echoed == a.count, addr=a.addr, port=a.port, sent=a.count,
                  echoed=echoed, retries=retries)


# ---------------------------------------------------------------- bulk

def cmd_bulk_send(a, dl):
    """Send MIB MiB to the guest's bulk_rx; optionally drop / swap chunks (loss tests)."""
    data = stream(a.mib, a.seed)
    total = a.mib * 1024
    sock = udp_socket(0)
    dest = (a.addr, a.port)
    final = None
    high = 0
    sent_crc = 0
    sent_bytes = 0
    lost = 0

    def take_acks(timeout):
        nonlocal high, final
        while True:
            msg, src = recv(sock, timeout)
            if msg is None:
                return
            timeout = 0
            if len(msg) >= ACK.size and msg[:4] == b"BACK":
                _, h, base, done, lst, crc, nbytes, ooo, dup = ACK.unpack_from(msg)
                high = max(high, h)
                if done:
                    final = (nbytes, crc, lst, ooo, dup)

    started = False
    while not started and not dl.over():
        sock.sendto(CTRL.pack(b"BSTA", total), dest)
        msg, _ = recv(sock, dl.left(0.2))
        started = msg is not None and msg[:4] == b"BACK"
    if not started:
        return report("bulk-send", False, error="no-answer")
    t0 = time.monotonic()
    order = list(range(total))
    if a.swap_every:
        for i in range(a.swap_every - 1, total - 1, a.swap_every):
            order[i], order[i + 1] = order[i + 1], order[i]
    for i, seq in enumerate(order):
        if dl.over():
            break
        while i >= high + WINDOW and not dl.over():
            before = high
            take_acks(dl.left(1.0))
            if high == before:  # no progress for a second: go on regardless
                high = i - WINDOW + 1
        if a.drop_every and seq % a.drop_every == a.drop_every - 1:
            lost += 1
        else:
            sock.sendto(DATA_HDR.pack(b"BDAT", seq) + data[seq * CHUNK:(seq + 1) * CHUNK], dest)
        if i % 64 == 0:
            take_acks(0)
    for seq in range(total):  # what the receiver should end up with, in sequence order
        if not (a.drop_every and seq % a.drop_every == a.drop_every - 1):
            sent_crc = zlib.crc32(data[seq * CHUNK:(seq + 1) * CHUNK], sent_crc)
            sent_bytes += CHUNK
    tries = 0
    while final is None and tries < 50 and not dl.over():
        if tries:
            sock.sendto(CTRL.pack(b"BEND", total), dest)
        take_acks(dl.left(0.2))
        tries += 1
    secs = time.monotonic() - t0
    if final is None:
        return report("bulk-send", False, bytes=sent_bytes, crc32=f"{sent_crc:08x}",
                      error="no-final-ack")
    ok = final[0] == sent_bytes and final[1] == sent_crc and final[2] == lost
    return report("bulk-send", ok, bytes=sent_bytes, crc32=f"{sent_crc:08x}", dropped=lost,
                  peer_bytes=final[0], peer_crc32=f"{final[1]:08x}", peer_lost=final[2],
                  peer_ooo=final[3], peer_dup=final[4], seconds=f"{secs:.2f}",
                  mib_s=f"{sent_bytes / (1 << 20) / max(secs, 1e-6):.1f}")


def cmd_bulk_recv(a, dl):
    """Receive the guest's bulk_tx (ACKs as the guest's receiver sends them)."""
    sock = udp_socket(a.port)
    listening("bulk-recv", a.port)
    expect_crc = zlib.crc32(stream(a.mib, a.seed))
    total = a.mib * 1024
    peer = None
    base = high = acked = lost = ooo = dup = nbytes = 0
    crc = 0
    held = {}
    done = False
    t0 = None
    quiet = 30.0

    def ack():
        nonlocal acked
        if peer:
            sock.sendto(ACK.pack(b"BACK", high, base, int(done), lost, crc, nbytes, ooo, dup),
                        peer)
        acked = high

    def advance(upto):
        nonlocal base, lost, crc, nbytes
        while base < upto:
            chunk = held.pop(base, None)
            if chunk is None:
                lost += 1
            else:
                crc = zlib.crc32(chunk, crc)
                nbytes += CHUNK
            base += 1

    while not dl.over():
        msg, src = recv(sock, dl.left(quiet))
        if msg is None:
            break
        if len(msg) < 8:
            continue
        magic, seq = DATA_HDR.unpack_from(msg)
        if peer is None:
            peer = src
            t0 = time.monotonic()
        if src != peer:
            continue
        if magic == b"BSTA":
            ack()
        elif magic == b"BDAT" and len(msg) == 8 + CHUNK:
            if seq >= total or seq < base or seq in held:
                dup += 1
            else:
                if seq < high:
                    ooo += 1
                high = max(high, seq + 1)
                if seq >= base + REORDER:
                    advance(seq - REORDER + 1)
                held[seq] = msg[8:]
                while base in held:
                    advance(base + 1)
            if base == total:
                done = True
            if done or high - acked >= ACK_EVERY:
                ack()
            if done:
                break
        elif magic == b"BEND":
            advance(total)
            done = True
            ack()
            break
    if not done:
        advance(total)
    else:  # answer repeated ENDs for a moment (our final ACK may be lost)
        linger = Deadline(0.3)
        while not linger.over():
            msg, src = recv(sock, linger.left())
            if msg is not None and msg[:4] == b"BEND" and src == peer:
                ack()
    secs = time.monotonic() - t0 if t0 else 0.0
    ok = done and nbytes == total * CHUNK and crc == expect_crc and lost == 0
    return report("bulk-recv", ok, bytes=nbytes, crc32=f"{crc:08x}",
                  expected_crc32=f"{expect_crc:08x}", lost=lost, ooo=ooo, dup=dup,
                  seconds=f"{secs:.2f}", mib_s=f"{nbytes / (1 << 20) / max(secs, 1e-6):.1f}")


def cmd_crc(a, dl):
    print(f"{zlib.crc32(stream(a.mib, a.seed)):08x}", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=float, default=60.0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ping")
    p.add_argument("addr")
    p.add_argument("count", type=int)
    p.add_argument("--size", type=int, default=56)
    p = sub.add_parser("udp-recv")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p = sub.add_parser("udp-echo")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p = sub.add_parser("bulk-send")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("mib", type=int)
    p.add_argument("seed", type=lambda s: int(s, 0))
    p.add_argument("--drop-every", type=int, default=0, help="skip every Nth chunk")
    p.add_argument("--swap-every", type=int, default=0, help="swap chunk N-1 and N every N")
    p = sub.add_parser("bulk-recv")
    p.add_argument("port", type=int)
    p.add_argument("mib", type=int)
    p.add_argument("seed", type=lambda s: int(s, 0))
    p = sub.add_parser("crc")
    p.add_argument("mib", type=int)
    p.add_argument("seed", type=lambda s: int(s, 0))
    a = ap.parse_args()
    dl = Deadline(a.timeout)
    fn = {"ping": cmd_ping, "udp-recv": cmd_udp_recv, "udp-echo": cmd_udp_echo,
          "bulk-send": cmd_bulk_send, "bulk-recv": cmd_bulk_recv, "crc": cmd_crc}[a.cmd]
    return fn(a, dl)


if __name__ == "__main__":
    sys.exit(main())
