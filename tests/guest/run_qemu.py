#!/usr/bin/env python3
"""Run the libvmm test guest under QEMU (TCG) and check what it prints.

usage: run_qemu.py --case NAME --bzimage guest.bzImage --elf guest.elf [--shim shim64.elf]
                   [--netblast BUILD/tests/guest/netblast]

Exit status: 0 pass, 1 fail, 77 skip (no qemu-system-x86_64).
"""
import argparse
import os
import re
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import pattern  # noqa: E402
from qemu_runner import (QEMU, Failure, check, check_ending, check_initrd,  # noqa: E402
                         make_initrd, one, qemu_command, run_main, run_to_exit,
                         skip_without_qemu, tagged)

TIMEOUT = 60
BASE = 0x100000
SMP = 4
MEM_MIB = 256


# ---------------------------------------------------------------- QEMU runs

def run_qemu(machine, kernel, append, initrd=None, extra=(), stdin_after_hello=None,
             smp=SMP):
    """Run QEMU until it exits by itself; return (status, list of GUEST lines)."""
    cmd = qemu_command(machine, MEM_MIB, smp, kernel, append, extra)
    if initrd:
        cmd += ["-initrd", initrd]
    return run_to_exit(cmd, TIMEOUT, feed=stdin_after_hello)


# ---------------------------------------------------------------- output checks

def find(lines, prefix):
    return [l for l in lines if l.startswith(prefix)]


def check_full(lines, status, entry, append, initrd_data, pci=True, hw_reduced=None,
               aps=True):
    check_ending(lines, status, "poweroff")
    m = one(lines, r"GUEST entry=(\w+) long_mode=(\d) cs=0x([0-9a-f]+) bp=0x([0-9a-f]+)")
    check(m.group(1) == entry, f"entry={m.group(1)}, expected {entry}")
    if entry == "64":
        check(m.group(2) == "1" and m.group(3) == "10", "64-bit entry without long mode/CS 0x10")

    n = int(one(lines, r"GUEST e820 entries=(\d+)").group(1))
    e820 = [l for l in lines if re.fullmatch(r"GUEST e820 0x[0-9a-f]+ 0x[0-9a-f]+ \d+", l)]
    check(n > 0 and len(e820) == n, f"e820 entries={n} but {len(e820)} entry lines")
    usable = sum(int(l.split()[3], 16) for l in e820 if l.split()[4] == "1")
    m = one(lines, r"GUEST ram_mib=(\d+) ram_kib=(\d+)")
    check(int(m.group(1)) == usable >> 20 and int(m.group(2)) == usable >> 10,
          "ram_mib/ram_kib do not match the e820 lines")
    check(250 <= int(m.group(1)) <= MEM_MIB, f"ram_mib={m.group(1)} for -m {MEM_MIB}")

    check(f"GUEST cmdline={append}" in lines, "command line not echoed exactly")

    check_initrd(lines, initrd_data)

    one(lines, r"GUEST cpuid vendor=.{12} hypervisor=\S+ apic_id=0")
    one(lines, r"GUEST acpi rsdp=0x[0-9a-f]+ rev=\d+ oem=.{6}")
    tables = [re.fullmatch(r"GUEST acpi table (\S{4}) addr=0x[0-9a-f]+ len=\d+ rev=\d+ "
                           r"checksum=(ok|bad)", l) for l in find(lines, "GUEST acpi table ")]
    check(all(tables), "malformed 'acpi table' line")
    sigs = [t.group(1) for t in tables]
    for sig in ("FACP", "APIC", "DSDT"):
        check(sig in sigs, f"no ACPI table {sig}")
    check(all(t.group(2) == "ok" for t in tables), "ACPI checksum bad")
    m = one(lines, r"GUEST acpi madt lapics=(\d+) ioapics=(\d+)")
    check(int(m.group(1)) == SMP and int(m.group(2)) >= 1, f"madt: {m.group(0)}")
    m = one(lines, r"GUEST acpi fadt hw_reduced=([01]) sleep_ctl=(\S+) pm1a_cnt=0x[0-9a-f]+ "
                   r"reset=(\S+)")
    if hw_reduced is not None:
        check(m.group(1) == str(int(hw_reduced)), f"fadt: {m.group(0)}")
    one(lines, r"GUEST acpi s5 slp_typ=\d+")

    ups = [l for l in lines if re.fullmatch(r"GUEST cpu \d+ apic_id=\d+ up", l)]
    if aps:
        check(len(ups) == SMP - 1, f"{len(ups)} APs up, expected {SMP - 1}")
        one(lines, rf"GUEST cpus expected={SMP} online={SMP}")
    else:
        check(not ups, "APs woken with guest.aps=0")
        one(lines, rf"GUEST cpus expected={SMP} online=1")

    pcis = find(lines, "GUEST pci ")
    check(all(re.fullmatch(r"GUEST pci 00:[0-9a-f]{2}\.[0-7] vendor=0x[0-9a-f]{4} "
                           r"device=0x[0-9a-f]{4} class=0x[0-9a-f]{6}", l) for l in pcis),
          "malformed pci line")
    if pci:
        check(any(l.startswith("GUEST pci 00:00.0 ") and l.endswith("class=0x060000")
                  for l in pcis), "no host bridge at 00:00.0")


# ---------------------------------------------------------------- image checks

def check_images(bzimage, elf):
    data = open(elf, "rb").read()
    check(data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "guest.elf: not ELF64 LE")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    e_entry, e_phoff = struct.unpack_from("<QQ", data, 24)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    check(e_type == 2 and e_machine == 62, "guest.elf: not an x86-64 executable")
    check(e_entry == BASE + 0x200, f"guest.elf: e_entry 0x{e_entry:x}")
    loads, pvh_entry = [], None
    for i in range(e_phnum):
        p_type, _fl, off, vaddr, paddr, filesz, memsz, align = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:
            check(paddr == vaddr, "guest.elf: PT_LOAD p_paddr != p_vaddr")
            loads.append((paddr, data[off:off + filesz], memsz))
        elif p_type == 4:
            check(align == 4, "guest.elf: PT_NOTE alignment must be 4 (QEMU)")
            note = data[off:off + filesz]
            pos = 0
            while pos + 12 <= len(note):
                namesz, descsz, ntype = struct.unpack_from("<III", note, pos)
                name = note[pos + 12:pos + 12 + namesz]
                desc_at = pos + 12 + (namesz + 3) // 4 * 4
                if name == b"Xen\0" and ntype == 18:
                    (pvh_entry,) = struct.unpack_from("<I", note, desc_at)
                pos = desc_at + (descsz + 3) // 4 * 4
    check(loads and min(p for p, _, _ in loads) == BASE, "guest.elf: not loaded at 0x100000")
    check(pvh_entry is not None, "guest.elf: no XEN_ELFNOTE_PHYS32_ENTRY note")
    check(BASE <= pvh_entry < BASE + 0x200, f"guest.elf: PVH entry 0x{pvh_entry:x}")
    mem_end = max(p + m for p, _, m in loads)

    bz = open(bzimage, "rb").read()
    u8 = lambda o: bz[o]
    u16 = lambda o: struct.unpack_from("<H", bz, o)[0]
    u32 = lambda o: struct.unpack_from("<I", bz, o)[0]
    u64 = lambda o: struct.unpack_from("<Q", bz, o)[0]
    check(u16(0x1fe) == 0xaa55 and bz[0x202:0x206] == b"HdrS", "bzImage: no setup header")
    check(u16(0x206) == 0x020f, f"bzImage: protocol version 0x{u16(0x206):x}")
    setup_len = (u8(0x1f1) + 1) * 512
    payload = bz[setup_len:]
    check(u32(0x1f4) * 16 == len(payload), "bzImage: syssize does not match the file")
    check(u8(0x211) & 1, "bzImage: LOADED_HIGH not set")
    check(u32(0x214) == BASE and u64(0x258) == BASE, "bzImage: code32_start/pref_address")
    check(u8(0x234) == 0, "bzImage: must not be relocatable")
    check(u16(0x236) & 1, "bzImage: XLF_KERNEL_64 not set")
    check(u32(0x238) == 2047 and u32(0x22c) == 0x7fffffff, "bzImage: cmdline_size/initrd_addr_max")
    align = u32(0x230)
    check(align and align & (align - 1) == 0 and BASE % align == 0, "bzImage: kernel_alignment")
    check(u32(0x260) >= mem_end - BASE, "bzImage: init_size does not cover the image")
    check(payload[u32(0x268):u32(0x268) + 4] == b"LToP", "bzImage: no kernel_info")
    for paddr, body, _ in loads:
        check(payload[paddr - BASE:paddr - BASE + len(body)] == body,
              "bzImage: protected-mode part differs from guest.elf")
    print(f"images ok: setup {setup_len} bytes, payload {len(payload)} bytes, "
          f"init_size 0x{u32(0x260):x}, PVH entry 0x{pvh_entry:x}")


# ---------------------------------------------------------------- virtio

SECTOR = 512


def o_direct_ok(directory):
    """True if the directory's file system takes O_DIRECT (QEMU cache=none)."""
    path = os.path.join(directory, "odirect.probe")
    open(path, "wb").close()
    try:
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0)))
        return hasattr(os, "O_DIRECT")
    except OSError:
        return False
    finally:
        os.unlink(path)


def blk(path, name, addr=None, drive="", dev="", readonly=False):
    d = f"file={path},if=none,id={name},format=raw"
    if readonly:
        d += ",readonly=on"
    v = f"virtio-blk-pci,drive={name},disable-legacy=on"
    if addr is not None:
        v += f",addr=0x{addr:x}"
    return ["-drive", d + drive, "-device", v + dev]


RNG = ["-device", "virtio-rng-pci,disable-legacy=on"]


def pattern_image(path, seed, sectors, size=None):
    pattern.write_image(path, seed, 0, sectors, size=size)


def zero_image(path, size):
    with open(path, "wb") as f:
        f.truncate(size)


def sha(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_virtio(kernel, append, devices, smp=2):
    st, lines = run_qemu("q35", kernel, append, extra=devices, smp=smp)
    return st, lines


def blk_lines(lines):
    """{index: (slot, capacity, ro, flush, discard, write_zeroes)} from 'GUEST blk <i> slot=' lines."""
    out = {}
    for l in lines:
        m = re.fullmatch(r"GUEST blk (\d+) slot=(\d+) capacity=(\d+) ro=([01]) flush=([01]) "
                         r"discard=([01]) write_zeroes=([01])", l)
        if m:
            out[int(m.group(1))] = tuple(int(x) for x in m.groups()[1:])
    return out


def virtio_devs(lines):
    """[(slot, type, event_idx, indirect, mode)] from 'GUEST virtio dev=' lines."""
    out = []
    for l in lines:
        m = re.fullmatch(r"GUEST virtio dev=(\d+) id=\d+ type=(\w+) offered=0x[0-9a-f]+ "
                         r"features=0x([0-9a-f]+) queue_size=(\d+) event_idx=([01]) "
                         r"indirect=([01]) msix=(\d+) mode=(poll|irq)", l)
        if m:
            out.append((int(m.group(1)), m.group(2), int(m.group(5)), int(m.group(6)),
                        m.group(8)))
    return out


def msix_counts(lines):
    out = {}
    for l in lines:
        m = re.fullmatch(r"GUEST msix dev=(\d+) queue=0 vector=(\d+) count=(\d+)", l)
        if m:
            out[int(m.group(1))] = int(m.group(3))
    return out


def expect(lines, line):
    check(line in lines, f"no line {line!r}")


def check_devs(lines, n, event_idx, indirect, mode):
    devs = virtio_devs(lines)
    check(len(devs) == n, f"{len(devs)} 'virtio dev=' lines, expected {n}")
    for slot, typ, ev, ind, md in devs:
        check((ev, ind, md) == (event_idx, indirect, mode),
              f"virtio dev={slot}: event_idx={ev} indirect={ind} mode={md}, expected "
              f"{event_idx} {indirect} {mode}")
    return devs


def virtio_case(case, args, tmp):
    cache = ",cache=none" if o_direct_ok(tmp) else ""
    img = lambda n: os.path.join(tmp, n)

    if case == "virtio-blk-read":
        # two disks placed out of command-line order: index 0 must be the lower slot
        pattern_image(img("a.img"), 7, 32768)                  # 16 MiB, all pattern
        zero_image(img("b.img"), 24 << 20)                      # 24 MiB, zeros
        app = ("guest.blk.verify=0:0:32768:7 guest.blk.verify=1:0:4096:zero "
               "guest.blk.id=0 guest.blk.id=1 guest.rng=4096")
        devs = (blk(img("b.img"), "b", addr=5, dev=",serial=guest-disk-b") +
                blk(img("a.img"), "a", addr=3, drive=cache, dev=",serial=guest-disk-a") + RNG)
        st, lines = run_virtio(args.bzimage, app, devs)
        check_ending(lines, st, "poweroff")
        d = blk_lines(lines)
        check(d.get(0, (0, 0))[:2] == (3, 32768), f"disk 0: {d.get(0)}, expected slot 3, 32768")
        check(d.get(1, (0, 0))[:2] == (5, 49152), f"disk 1: {d.get(1)}, expected slot 5, 49152")
        check(d[0][2:] == (0, 1, 1, 1), f"disk 0 flags {d[0][2:]}")
        devs = check_devs(lines, 3, 1, 1, "poll")
        check([s for s, _, _, _, _ in devs] == sorted(s for s, _, _, _, _ in devs),
              "virtio devices not in slot order")
        pci = [int(l[13:15], 16) for l in find(lines, "GUEST pci 00:")
               if "vendor=0x1af4 device=0x1042" in l]
        check(pci == [3, 5], f"virtio-blk PCI slots {pci}")
        expect(lines, "GUEST blk verify disk=0 sectors=32768 ok")
        expect(lines, "GUEST blk verify disk=1 sectors=4096 ok")
        expect(lines, "GUEST blk id disk=0 id=guest-disk-a")
        expect(lines, "GUEST blk id disk=1 id=guest-disk-b")
        expect(lines, "GUEST rng bytes=4096 zero=0 differ=1")
        # polling with EVENT_IDX: QEMU notifies once unconditionally after reset
        # (spurious notifications are allowed), never again
        counts = msix_counts(lines)
        check(len(counts) == 3 and max(counts.values()) <= 1, f"polling mode, msix {counts}")

    elif case == "virtio-blk-write":
        # 64 MiB of pattern in 1 MiB requests, flush, power off; the host checks every byte
        path = img("w.img")
        zero_image(path, 72 << 20)
        pattern.write_image(path, 3, 131072, 16384)  # the tail must stay untouched
        app = "guest.blk.write=0:0:131072:1234"
        st, lines = run_virtio(args.bzimage, app, blk(path, "w", drive=cache))
        check_ending(lines, st, "poweroff")
        expect(lines, "GUEST blk write disk=0 sectors=131072 status=ok")
        expect(lines, "GUEST blk flush disk=0 status=ok")
        t = time.monotonic()
        bad = pattern.check(path, 1234, 0, 131072)
        check(bad is None, f"written data differs at sector {bad}")
        bad = pattern.check(path, 3, 131072, 16384)
        check(bad is None, f"data past the write changed at sector {bad}")
        print(f"host check of 72 MiB: {time.monotonic() - t:.1f} s")

    elif case == "virtio-blk-ro":
        path = img("ro.img")
        pattern_image(path, 21, 8192)
        before = sha(path)
        app = "guest.blk.rotest=0 guest.blk.verify=0:0:8192:21"
        st, lines = run_virtio(args.bzimage, app, blk(path, "r", readonly=True))
        check_ending(lines, st, "poweroff")
        check(blk_lines(lines).get(0, (0, 0, 0))[2] == 1, "read-only disk without ro=1")
        expect(lines, "GUEST blk rotest disk=0 status=ioerr")
        expect(lines, "GUEST blk verify disk=0 sectors=8192 ok")
        check(sha(path) == before, "read-only image changed")

    elif case == "virtio-blk-discard":
        # limits small enough that both operations take several requests
        path = img("d.img")
        pattern_image(path, 11, 32768)
        app = ("guest.blk.discard=0:1000:1000 guest.blk.zeroes=0:3000:777 "
               "guest.blk.verify=0:0:1000:11 guest.blk.verify=0:2000:1000:11 "
               "guest.blk.verify=0:3777:28991:11 guest.blk.verify=0:3000:777:zero")
        dev = ",max-discard-sectors=64,max-write-zeroes-sectors=100"
        st, lines = run_virtio(args.bzimage, app, blk(path, "d", drive=",discard=unmap" + cache,
                                                       dev=dev))
        check_ending(lines, st, "poweroff")
        expect(lines, "GUEST blk discard disk=0 sector=1000 count=1000 status=ok readback=zero")
        expect(lines, "GUEST blk zeroes disk=0 sector=3000 count=777 status=ok readback=zero")
        for first, n in ((0, 1000), (2000, 1000), (3777, 28991)):
            expect(lines, f"GUEST blk verify disk=0 sectors={n} ok")
            bad = pattern.check(path, 11, first, n)
            check(bad is None, f"sector {bad} changed outside the discarded/zeroed ranges")
        for first, n in ((1000, 1000), (3000, 777)):
            bad = pattern.check_zero(path, first, n)
            check(bad is None, f"sector {bad} not zero in the host file")

    elif case in ("virtio-irq", "virtio-min", "virtio-min-irq"):
        irq = case.endswith("irq")
        minf = case.startswith("virtio-min")
        a, b = img("a.img"), img("b.img")
        pattern_image(a, 5, 16384)
        zero_image(b, 16 << 20)
        app = ("guest.blk.verify=0:0:16384:5 guest.blk.write=1:0:16384:6 "
               "guest.blk.verify=1:0:16384:6 guest.blk.zeroes=1:8:8 guest.rng=1024")
        if irq:
            app = "guest.virtio.irq=1 " + app
        if minf:
            app = "guest.virtio.features=min " + app
        # virtio-min: a 16-entry queue, so requests wait for free descriptors
        devs = blk(a, "a") + blk(b, "b", drive=cache, dev=",queue-size=16" if minf else "") + RNG
        kernel = args.elf if case == "virtio-irq" else args.bzimage  # PVH entry too
        st, lines = run_virtio(kernel, app, devs)
        check_ending(lines, st, "poweroff")
        devs = check_devs(lines, 3, 0 if minf else 1, 0 if minf else 1, "irq" if irq else "poll")
        expect(lines, "GUEST blk verify disk=0 sectors=16384 ok")
        expect(lines, "GUEST blk write disk=1 sectors=16384 status=ok")
        expect(lines, "GUEST blk verify disk=1 sectors=16384 ok")
        expect(lines, "GUEST blk zeroes disk=1 sector=8 count=8 status=ok readback=zero")
        expect(lines, "GUEST rng bytes=1024 zero=0 differ=1")
        counts = msix_counts(lines)
        check(sorted(counts) == [s for s, _, _, _, _ in devs], f"msix lines {counts}")
        if irq:
            check(all(c > 0 for c in counts.values()), f"interrupt mode, msix counts {counts}")
            # ring 3 had to wait (ud2 -> sti; hlt in ring 0) at least once
            waits = int(one(lines, r"GUEST virtio irq_waits=(\d+)").group(1))
            check(waits > 0, "interrupt mode without a single wait for an interrupt")
        else:  # QEMU honours VRING_AVAIL_F_NO_INTERRUPT (features=min: no EVENT_IDX)
            check(not any(counts.values()), f"polling mode, msix counts {counts}")
        check(pattern.check(b, 6, 0, 8) is None and pattern.check_zero(b, 8, 8) is None and
              pattern.check(b, 6, 16, 16368) is None, "disk 1 content after write + zeroes")

    elif case == "virtio-reassign":
        # BARs cleared by the guest itself: it must place them in 0xc0000000-0xdfffffff
        path = img("a.img")
        pattern_image(path, 9, 4096)
        app = "guest.virtio.reassign=1 guest.virtio.irq=1 guest.blk.verify=0:0:4096:9 guest.rng=64"
        st, lines = run_virtio(args.bzimage, app, blk(path, "a") + RNG)
        check_ending(lines, st, "poweroff")
        bars = [l for l in lines if re.fullmatch(
            r"GUEST virtio dev=\d+ bar\d assigned=0x[cd][0-9a-f]{7} size=0x[0-9a-f]+", l)]
        check(len(bars) >= 2, f"BAR assignment lines: {bars}")
        expect(lines, "GUEST blk verify disk=0 sectors=4096 ok")
        check(all(c > 0 for c in msix_counts(lines).values()), "no interrupts after reassign")

    elif case == "virtio-bad":
        # the checker must catch a corrupted sector: exactly one failure
        path = img("a.img")
        pattern_image(path, 13, 8192)
        with open(path, "r+b") as f:
            f.seek(5000 * SECTOR + 100)
            f.write(b"\xff")
        st, lines = run_virtio(args.bzimage, "guest.blk.verify=0:0:8192:13", blk(path, "a"))
        check(st == 0, f"QEMU exit status {st}")
        expect(lines, "GUEST blk verify disk=0 sectors=8192 bad at=5000")
        expect(lines, "GUEST result fail failures=1")
        check(lines[-1] == "GUEST exit poweroff", "no poweroff")

    elif case == "virtio-bench":
        path = img("bench.img")
        zero_image(path, 16 << 20)
        st, lines = run_virtio(args.bzimage, "guest.blk.bench=0:8", blk(path, "a", drive=cache))
        check_ending(lines, st, "poweroff")
        for name in ("seq_write_1m", "seq_read_1m", "rand_read_4k"):
            m = one(lines, rf"GUEST bench {name} bytes=(\d+) tsc=(\d+) tsc_khz=(\d+)")
            check(int(m.group(1)) == 8 << 20 and int(m.group(2)) > 0, f"bench line {m.group(0)}")

    else:
        sys.exit(f"unknown case {case}")


# ---------------------------------------------------------------- interactive runs
#
# virtio-net, virtio-balloon and the counter mode: QEMU runs while the test
# talks to the guest (netpeer.py in the same network namespace, QMP) and
# reads its lines as they come. The net cases run in a private network
# namespace: run_qemu.py re-executes itself under `unshare --net` (root
# needed, else skip), so every tap, address and packet vanishes with it.

NETPEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netpeer.py")
NETNS_ENV = "GUEST_TEST_PRIVATE_NETNS"
NET_CASES = ("net-basic", "net-bulk", "net-mrg", "net-two", "net-loss", "net-rate", "forever")


def enter_netns():
    """Re-execute under unshare --net unless already there; exit 77 when that cannot work."""
    if os.environ.get(NETNS_ENV) == "1":
        return
    why = None
    if os.geteuid() != 0:
        why = "not root"
    elif not os.path.exists("/dev/net/tun"):
        why = "no /dev/net/tun"
    elif not shutil.which("unshare") or not shutil.which("ip"):
        why = "no unshare or ip"
    if why:
        print(f"{why}: skipping (a private network namespace with taps is needed)", flush=True)
        sys.exit(77)
    os.environ[NETNS_ENV] = "1"
    sys.stdout.flush()
    os.execvp("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__),
                          *sys.argv[1:]])


def sh(*cmd):
    subprocess.run(cmd, check=True)


def die_with_parent():
    """preexec_fn: SIGKILL when the test dies (a killed test must not leave a guest running)."""
    import ctypes
    import signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def make_taps(n):
    """Taps gt0..gt<n-1> with host address 10.77.<i>.1/24, up (the guest gets 10.77.<i>.2)."""
    sh("ip", "link", "set", "lo", "up")
    for i in range(n):
        sh("ip", "tuntap", "add", "dev", f"gt{i}", "mode", "tap")
        sh("ip", "addr", "add", f"10.77.{i}.1/24", "dev", f"gt{i}")
        sh("ip", "link", "set", f"gt{i}", "up")


def nic(i, addr=None):
    """QEMU arguments for a virtio-net-pci on tap gt<i>, MAC 52:54:00:77:00:<i+1>."""
    dev = (f"virtio-net-pci,netdev=n{i},disable-legacy=on,mac={nic_mac(i)}" +
           (f",addr=0x{addr:x}" if addr is not None else ""))
    return ["-netdev", f"tap,id=n{i},ifname=gt{i},script=no,downscript=no,vhost=off",
            "-device", dev]


def nic_mac(i):
    return f"52:54:00:77:00:{i + 1:02x}"


class Vm:
    """QEMU running in the background; GUEST lines collected as they come."""

    def __init__(self, append, extra=(), kernel=None, qmp=None, smp=2, timeout=TIMEOUT):
        cmd = qemu_command("q35", MEM_MIB, smp, kernel, append, extra)
        if qmp:
            cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
        print("+", " ".join(cmd), flush=True)
        self.qmp_path = qmp
        self.qmp_sock = None
        self.qmp_buf = b""
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.err, preexec_fn=die_with_parent)
        self.lines = []
        self.times = []
        self.pos = 0
        self.eof = False
        self.cond = threading.Condition()
        self.end = time.monotonic() + timeout
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        rest = b""
        fd = self.proc.stdout.fileno()
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            *done, rest = (rest + data).split(b"\n")
            with self.cond:
                for raw in done:
                    line = tagged(raw.decode(errors="replace"))
                    if line is not None:
                        self.lines.append(line)
                        self.times.append(time.monotonic())
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait(self, regex, timeout=30.0):
        """The next line (from the last match on) that matches regex entirely."""
        rx = re.compile(regex)
        end = min(self.end, time.monotonic() + timeout)
        with self.cond:
            while True:
                for i in range(self.pos, len(self.lines)):
                    m = rx.fullmatch(self.lines[i])
                    if m:
                        self.pos = i + 1
                        return m
                if self.eof:
                    raise Failure(f"QEMU ended before a line matching {regex!r}")
                left = end - time.monotonic()
                if left <= 0:
                    raise Failure(f"no line matching {regex!r} in time")
                self.cond.wait(left)

    def snapshot(self):
        with self.cond:
            return list(self.lines), list(self.times)

    def qmp(self, command, **args):
        import json
        if self.qmp_sock is None:
            import socket
            self.qmp_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.qmp_sock.settimeout(30)
            self.qmp_sock.connect(self.qmp_path)
            self._qmp_msg()  # greeting
            self.qmp("qmp_capabilities")
        msg = {"execute": command}
        if args:
            msg["arguments"] = args
        self.qmp_sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._qmp_msg()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise Failure(f"QMP {command}: {r['error']}")

    def _qmp_msg(self):
        import json
        while b"\n" not in self.qmp_buf:
            data = self.qmp_sock.recv(65536)
            if not data:
                raise Failure("QMP connection closed")
            self.qmp_buf += data
        line, self.qmp_buf = self.qmp_buf.split(b"\n", 1)
        return json.loads(line)

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for l in f:
                if l.startswith("VmRSS:"):
                    return int(l.split()[1]) / 1024
        raise Failure("no VmRSS")

    def finish(self):
        """Wait for QEMU to exit by itself (within the run's limit): (status, lines)."""
        try:
            st = self.proc.wait(max(self.end - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            raise Failure("QEMU did not exit in time")
        self.reader.join(10)
        return st, self.snapshot()[0]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.qmp_sock:
            self.qmp_sock.close()
        self.reader.join(10)
        self.proc.stdout.close()
        self.err.seek(0)
        msg = self.err.read().decode(errors="replace").strip()
        self.err.close()
        if msg:
            print("qemu stderr:", msg, flush=True)


class Peer:
    """netpeer.py running in the background."""

    TAG = "NETPEER "
    HAS_RESULT = True  # its last line says result=ok|fail

    def __init__(self, *args, timeout=TIMEOUT):
        self._spawn([sys.executable, NETPEER, "--timeout", str(timeout), *map(str, args)], timeout)

    def _spawn(self, cmd, timeout):
        print("+", " ".join(cmd), flush=True)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=die_with_parent)
        self.timeout = timeout
        self.head = ""

    def ready(self):
        """Wait for the receiver's 'listening' line (its port is bound)."""
        fd = self.proc.stdout.fileno()  # raw reads: communicate() reads the fd later
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        end = time.monotonic() + self.timeout
        try:
            while time.monotonic() < end:
                if not sel.select(end - time.monotonic()):
                    continue
                data = os.read(fd, 65536).decode()
                if not data:
                    break
                self.head += data
                print(data, end="", flush=True)
                if any(l.startswith(self.TAG) and " listening " in l
                       for l in self.head.splitlines()):
                    return self
        finally:
            sel.close()
        raise Failure("netpeer never listened")

    def result(self):
        """{key: value} of its last NETPEER line; fails unless result=ok."""
        try:
            out, _ = self.proc.communicate(timeout=self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise Failure("netpeer did not finish")
        print(out, end="", flush=True)
        out = self.head + out
        self.head = ""
        lines = [l for l in out.splitlines() if l.startswith(self.TAG)]
        check(lines, f"{self.TAG.strip()} printed no result")
        kv = dict(f.split("=", 1) for f in lines[-1].split()[2:])
        check(kv.get("result", None if self.HAS_RESULT else "ok") == "ok" and
              self.proc.returncode == 0,
              f"{self.TAG.strip()} (exit status {self.proc.returncode}): {lines[-1]}")
        return kv

    def interrupt(self):
        """SIGINT: netblast stops and prints what it has."""
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class Blast(Peer):
    """bench/netblast running in the background: the rate modes' host end (no result= field)."""

    TAG = "netblast "
    HAS_RESULT = False

    def __init__(self, netblast, *args, timeout=TIMEOUT):
        self._spawn([netblast, *map(str, args)], timeout)


def guest_stats(lines, i):
    m = one(lines, rf"GUEST net stats nic={i} rx=(\d+) tx=(\d+) dropped=(\d+) bad_csum=(\d+) "
                   r"arp_replies=(\d+) icmp_replies=(\d+)")
    return dict(zip(("rx", "tx", "dropped", "bad_csum", "arp", "icmp"),
                    (int(x) for x in m.groups())))


def check_nic(lines, i, slot=None, mac=None, mrg=1, csum=0, rxbuf=1536):
    m = one(lines, rf"GUEST net {i} slot=(\d+) mac=([0-9a-f:]{{17}}) status=([01]) mrg=([01])")
    check(slot is None or int(m.group(1)) == slot, f"nic {i}: slot {m.group(1)}, expected {slot}")
    check(mac is None or m.group(2) == mac, f"nic {i}: mac {m.group(2)}, expected {mac}")
    check(m.group(3) == "1", f"nic {i}: link down")
    check(int(m.group(4)) == mrg, f"nic {i}: mrg={m.group(4)}, expected {mrg}")
    one(lines, rf"GUEST net {i} config csum={csum} guest_csum={csum} rxbuf={rxbuf} "
               r"rx_queue=256 tx_queue=256")


def with_vm_and_peers(fn):
    """Run fn(vms, peers); the QEMU and netpeer runs it appends to are killed afterwards."""
    vms, peers = [], []
    try:
        return fn(vms, peers)
    finally:
        for p in peers:
            p.close()
        for v in vms:
            v.close()


def net_case(case, args, tmp):
    kernel = args.bzimage
    g0, h0 = "10.77.0.2", "10.77.0.1"

    def basic(vms, peers):
        # both directions of ping and UDP on one NIC
        make_taps(1)
        app = (f"guest.net.ip=0:{g0} guest.net.ping=0:{h0}:4 guest.net.udp=0:{h0}:7001:50 "
               "guest.net.recv=0:7000:30")
        peers.append(Peer("udp-recv", 7001, 50).ready())   # bound before the guest sends
        vm = Vm(app, nic(0), kernel=kernel)
        vms.append(vm)
        vm.wait(rf"GUEST net 0 ip={g0}")
        ping = Peer("ping", g0, 5)
        peers.append(ping)
        check(ping.result()["received"] == "5", "host ping")
        echo = Peer("udp-echo", g0, 7000, 30)
        peers.append(echo)
        check(echo.result()["echoed"] == "30", "udp echo")
        check(peers[0].result()["good"] == "50", "guest datagrams")
        st, lines = vm.finish()
        check_ending(lines, st, "poweroff")
        check_nic(lines, 0, mac=nic_mac(0))
        expect(lines, f"GUEST net ping nic=0 peer={h0} sent=4 received=4")
        expect(lines, f"GUEST net udp nic=0 peer={h0} port=7001 sent=50")
        expect(lines, "GUEST net recv nic=0 port=7000 received=30")
        s = guest_stats(lines, 0)
        check(s["icmp"] >= 5 and s["bad_csum"] == 0, f"guest stats {s}")

    def bulk(vms, peers, mib=64):
        make_taps(1)
        app = (f"guest.net.ip=0:{g0} guest.net.bulk_rx=0:7100:{mib} "
               f"guest.net.bulk_tx=0:{h0}:7101:{mib}:99")
        # netpeer checks the data against pattern.make(seed, 0, mib * 2048) and its CRC-32
        recv = Peer("bulk-recv", 7101, mib, 99, timeout=2 * TIMEOUT).ready()
        peers.append(recv)
        vm = Vm(app, nic(0), kernel=kernel, timeout=2 * TIMEOUT)
        vms.append(vm)
        vm.wait(rf"GUEST net 0 ip={g0}")
        t = time.monotonic()
        send = Peer("bulk-send", g0, 7100, mib, 55, timeout=2 * TIMEOUT)
        peers.append(send)
        r = send.result()
        want_rx = r["crc32"]
        check(r["peer_crc32"] == want_rx and r["peer_lost"] == "0", f"bulk to the guest: {r}")
        want_tx = recv.result()["expected_crc32"]
        st, lines = vm.finish()
        print(f"bulk {mib} MiB each way: {time.monotonic() - t:.1f} s")
        check_ending(lines, st, "poweroff")
        check_nic(lines, 0)
        one(lines, rf"GUEST net bulk_rx nic=0 port=7100 bytes={mib << 20} crc32={want_rx} "
                   r"lost=0 ooo=0 dup=0 tsc=\d+")
        one(lines, rf"GUEST net bulk_tx nic=0 peer={h0} port=7101 bytes={mib << 20} "
                   rf"crc32={want_tx} acked=1 peer_bytes={mib << 20} peer_crc32={want_tx} "
                   r"peer_lost=0 tsc=\d+ stalls=\d+")

    def mrg(vms, peers):
        # 256-byte receive buffers: every full-size frame spans several (MRG_RXBUF);
        # checksum offload both ways
        make_taps(1)
        app = (f"guest.net.ip=0:{g0} guest.net.rxbuf=256 guest.net.csum=1 "
               f"guest.net.ping=0:{h0}:3 guest.net.recv=0:7000:40 guest.net.bulk_rx=0:7100:8 "
               f"guest.net.bulk_tx=0:{h0}:7101:8:99")
        recv = Peer("bulk-recv", 7101, 8, 99).ready()
        peers.append(recv)
        vm = Vm(app, nic(0), kernel=kernel)
        vms.append(vm)
        vm.wait(rf"GUEST net 0 ip={g0}")
        ping = Peer("ping", g0, 4, "--size", 1400)
        peers.append(ping)
        check(ping.result()["received"] == "4", "host ping, 1400 bytes")
        echo = Peer("udp-echo", g0, 7000, 40)   # up to 1472-byte datagrams
        peers.append(echo)
        echo.result()
        send = Peer("bulk-send", g0, 7100, 8, 55)
        peers.append(send)
        want_rx = send.result()["crc32"]
        want_tx = recv.result()["expected_crc32"]
        st, lines = vm.finish()
        check_ending(lines, st, "poweroff")
        check_nic(lines, 0, rxbuf=256, csum=1)
        expect(lines, f"GUEST net ping nic=0 peer={h0} sent=3 received=3")
        expect(lines, "GUEST net recv nic=0 port=7000 received=40")
        one(lines, rf"GUEST net bulk_rx nic=0 port=7100 bytes=8388608 crc32={want_rx} "
                   r"lost=0 ooo=0 dup=0 tsc=\d+")
        one(lines, rf"GUEST net bulk_tx nic=0 peer={h0} port=7101 bytes=8388608 crc32={want_tx} "
                   rf"acked=1 peer_bytes=8388608 peer_crc32={want_tx} peer_lost=0 tsc=\d+ "
                   r"stalls=\d+")
        check(guest_stats(lines, 0)["bad_csum"] == 0, "bad checksums")

    def two(vms, peers):
        # two NICs out of slot order, interrupt mode, MRG_RXBUF refused
        make_taps(2)
        g1, h1 = "10.77.1.2", "10.77.1.1"
        # nic 0 = lower slot = tap gt1
        app = (f"guest.virtio.irq=1 guest.net.mrg=0 guest.net.ip=0:{g1} guest.net.ip=1:{g0} "
               f"guest.net.ping=0:{h1}:3 guest.net.ping=1:{h0}:3 guest.net.recv=0:7000:20 "
               f"guest.net.bulk_rx=1:7100:16")
        vm = Vm(app, nic(0, addr=6) + nic(1, addr=4), kernel=kernel)
        vms.append(vm)
        vm.wait(rf"GUEST net 1 ip={g0}")
        for g in (g0, g1):
            p = Peer("ping", g, 3)
            peers.append(p)
            check(p.result()["received"] == "3", f"host ping {g}")
        echo = Peer("udp-echo", g1, 7000, 20)
        peers.append(echo)
        echo.result()
        send = Peer("bulk-send", g0, 7100, 16, 77)
        peers.append(send)
        want = send.result()["crc32"]
        st, lines = vm.finish()
        check_ending(lines, st, "poweroff")
        check_nic(lines, 0, slot=4, mac=nic_mac(1), mrg=0)
        check_nic(lines, 1, slot=6, mac=nic_mac(0), mrg=0)
        check_devs(lines, 2, 1, 1, "irq")
        expect(lines, f"GUEST net ping nic=0 peer={h1} sent=3 received=3")
        expect(lines, f"GUEST net ping nic=1 peer={h0} sent=3 received=3")
        expect(lines, "GUEST net recv nic=0 port=7000 received=20")
        one(lines, rf"GUEST net bulk_rx nic=1 port=7100 bytes={16 << 20} crc32={want} lost=0 "
                   r"ooo=0 dup=0 tsc=\d+")
        counts = msix_counts(lines)
        check(len(counts) == 2 and all(c > 0 for c in counts.values()), f"msix {counts}")
        check(int(one(lines, r"GUEST virtio irq_waits=(\d+)").group(1)) > 0, "no irq waits")
        for i in (0, 1):
            check(guest_stats(lines, i)["icmp"] >= 3, f"nic {i} answered no pings")

    def loss(vms, peers):
        # the receiver under loss and reordering: every 1000th chunk never sent,
        # every 333rd swapped with the next
        make_taps(1)
        vm = Vm(f"guest.net.ip=0:{g0} guest.net.bulk_rx=0:7100:8", nic(0), kernel=kernel)
        vms.append(vm)
        vm.wait(rf"GUEST net 0 ip={g0}")
        send = Peer("bulk-send", g0, 7100, 8, 5, "--drop-every", 1000, "--swap-every", 333)
        peers.append(send)
        r = send.result()
        st, lines = vm.finish()
        check_ending(lines, st, "poweroff")
        m = one(lines, r"GUEST net bulk_rx nic=0 port=7100 bytes=(\d+) crc32=([0-9a-f]{8}) "
                       r"lost=(\d+) ooo=(\d+) dup=(\d+) tsc=\d+")
        check(int(m.group(1)) == (8192 - 8) * 1024 and m.group(3) == "8",
              f"bytes / lost: {m.group(0)}")
        check(m.group(2) == r["crc32"], f"crc32 {m.group(2)}, sender {r['crc32']}")
        check(int(m.group(4)) >= 20 and m.group(5) == "0", f"ooo / dup: {m.group(0)}")

    def rate(vms, peers):
        # the rate modes against bench/netblast: guest.net.blast_tx to a host sink, then the
        # host sends to guest.net.sink; counts and line formats only, no rates
        netblast = args.netblast
        check(netblast and os.access(netblast, os.X_OK),
              f"bench/netblast not built ({netblast}): ninja -C BUILD")
        make_taps(1)
        secs, tx_bytes, rx_bytes = 2, 1472, 512
        sink = Blast(netblast, "sink", "gt0", 7201, 20, "--idle", 2).ready()
        peers.append(sink)
        vm = Vm(f"guest.net.ip=0:{g0} guest.net.blast_tx=0:{h0}:7201:{secs}:{tx_bytes} "
                f"guest.net.sink=0:7200:{secs}", nic(0), kernel=kernel)
        vms.append(vm)
        line = r" frames=(\d+) bytes=(\d+) tsc=(\d+) tsc_khz=(\d+)"
        tx = vm.wait(r"GUEST net blast_tx nic=0" + line)
        # the guest is in guest.net.sink now (or about to be): send until it has counted
        send = Blast(netblast, "send", g0, 7200, 50, rx_bytes)
        peers.append(send)
        rx = vm.wait(r"GUEST net sink nic=0" + line)
        send.interrupt()
        sent = send.result()
        got = sink.result()
        st, lines = vm.finish()
        check_ending(lines, st, "poweroff")
        tx_frames, rx_frames = int(tx.group(1)), int(rx.group(1))
        print(f"guest sent {tx_frames} frames, the host got {got['frames']}; "
              f"the host sent {sent['frames']}, the guest counted {rx_frames}")
        check(tx_frames > 0 and int(tx.group(2)) == tx_frames * tx_bytes and int(tx.group(3)) > 0,
              f"blast_tx: {tx.group(0)}")
        check(0 < int(got["frames"]) <= tx_frames and
              int(got["bytes"]) == int(got["frames"]) * tx_bytes,
              f"host sink: {got}, guest sent {tx_frames}")
        check(rx_frames > 0 and int(rx.group(2)) == rx_frames * rx_bytes and
              rx_frames <= int(sent["frames"]), f"sink: {rx.group(0)}, host sent {sent}")
        check(rx_frames == 1 or int(rx.group(3)) > 0, f"sink tsc: {rx.group(0)}")
        check(guest_stats(lines, 0)["bad_csum"] == 0, "bad checksums")

    def forever(vms, peers):
        # counter mode: ticks, pings answered, ticks pause while QEMU is stopped
        make_taps(1)
        qmp = os.path.join(tmp, "qmp.sock")
        vm = Vm(f"guest.run=forever guest.checks=min guest.net.ip=0:{g0}", nic(0),
                kernel=kernel, qmp=qmp)
        vms.append(vm)
        vm.wait("GUEST result pass")
        vm.wait("GUEST run forever")
        vm.wait(r"GUEST tick 3")
        p = Peer("ping", g0, 5)
        peers.append(p)
        check(p.result()["received"] == "5", "host ping in counter mode")
        vm.qmp("stop")
        t_stop = time.monotonic()
        check(not vm.qmp("query-status")["running"], "QEMU still running after stop")
        # watch for 2 s: lines written before the stop may still be read in the first
        # half second, a running guest would print a tick every ~100 ms
        deadline = t_stop + 2.0
        while time.monotonic() < deadline:
            with vm.cond:
                vm.cond.wait(deadline - time.monotonic())
        lines, times = vm.snapshot()
        late = [l for l, t in zip(lines, times) if t > t_stop + 0.5 and l.startswith("GUEST tick")]
        check(not late, f"ticks while stopped: {late}")
        last = max(int(l.split()[2]) for l in lines if l.startswith("GUEST tick"))
        vm.qmp("cont")
        vm.wait(rf"GUEST tick {last + 1}", timeout=10)
        vm.wait(rf"GUEST tick {last + 3}", timeout=10)
        vm.qmp("quit")
        st, lines = vm.finish()
        check(st == 0, f"QEMU exit status {st}")
        ticks = [int(l.split()[2]) for l in lines if l.startswith("GUEST tick")]
        check(ticks == list(range(1, len(ticks) + 1)), f"ticks not consecutive: {ticks}")
        check(not find(lines, "GUEST FAIL"), "guest failures")

    fn = {"net-basic": basic, "net-bulk": bulk, "net-mrg": mrg, "net-two": two,
          "net-loss": loss, "net-rate": rate, "forever": forever}[case]
    with_vm_and_peers(fn)


def balloon_case(args, tmp):
    """Counter mode with a balloon: QMP `balloon` moves the target, the guest follows, RSS drops."""
    qmp = os.path.join(tmp, "qmp.sock")

    def run(vms, peers):
        vm = Vm("guest.run=forever guest.checks=min guest.balloon=1",
                ["-device", "virtio-balloon-pci,disable-legacy=on"], kernel=args.bzimage, qmp=qmp)
        vms.append(vm)
        m = vm.wait(r"GUEST touch pages=(\d+) mib=(\d+)")
        pool = int(m.group(1))
        check(pool * 4096 >= 200 << 20, f"only {pool} pages touched")
        vm.wait(rf"GUEST balloon slot=\d+ pool_pages={pool} config_irq=[01]")
        vm.wait(r"GUEST balloon target_pages=0 actual_pages=0")
        vm.wait("GUEST result pass")
        vm.wait(r"GUEST tick 2")
        rss0 = vm.rss_mib()
        check(rss0 >= 220, f"QEMU RSS {rss0:.0f} MiB after the guest touched its RAM")
        t = time.monotonic()
        vm.qmp("balloon", value=128 << 20)
        vm.wait(r"GUEST balloon target_pages=32768 actual_pages=32768")
        print(f"inflate by 128 MiB: {time.monotonic() - t:.1f} s")
        actual = vm.qmp("query-balloon")["actual"]
        check(actual == 128 << 20, f"query-balloon actual={actual}")
        rss1 = vm.rss_mib()
        print(f"QEMU RSS {rss0:.0f} MiB -> {rss1:.0f} MiB")
        check(rss0 - rss1 >= 100, f"RSS dropped only {rss0 - rss1:.0f} MiB")
        m = vm.wait(r"GUEST tick (\d+)")
        vm.qmp("balloon", value=MEM_MIB << 20)
        vm.wait(r"GUEST balloon target_pages=0 actual_pages=0")
        rss2 = vm.rss_mib()
        print(f"deflated: QEMU RSS {rss2:.0f} MiB")
        check(rss2 - rss1 >= 100, "the guest did not use its pages again after deflating")
        check(vm.qmp("query-balloon")["actual"] == MEM_MIB << 20, "query-balloon after deflate")
        vm.wait(rf"GUEST tick {int(m.group(1)) + 2}")
        vm.qmp("quit")
        st, lines = vm.finish()
        check(st == 0, f"QEMU exit status {st}")
        check(not find(lines, "GUEST FAIL"), "guest failures")

    with_vm_and_peers(run)


def pattern_selftest():
    check(pattern.mix64(0) == 0xe220a8397b1dcdaf, "mix64(0) is not splitmix64's first output")
    s = pattern.sector(1, 2)
    key = pattern.mix64(1)
    for k in (0, 1, 63):
        w = int.from_bytes(s[8 * k:8 * k + 8], "little")
        check(w == pattern.mix64(key ^ 2) ^ pattern.mix64(~key & pattern.M64 ^ k),
              f"pattern word {k} of sector 2")
    t = time.monotonic()
    data = pattern.make(42, 0, 131072)
    dt = time.monotonic() - t
    check(len(data) == 64 << 20, "make: wrong length")
    check(data[512 * 1000:512 * 1001] == pattern.sector(42, 1000), "make/sector differ")
    check(pattern.check(data, 42, 0, 131072) is None, "check of made data")
    bad = bytearray(data[:1 << 20])
    bad[777 * 512 + 3] ^= 1
    check(pattern.check(bytes(bad), 42, 0, 2048) == 777, "check misses a flipped bit")
    check(pattern.check(data[512 * 10:512 * 20], 42, 10, 10, offset=0) is None, "offset check")
    print(f"pattern: 64 MiB in {dt:.1f} s")
    check(dt < 10, f"pattern.make of 64 MiB took {dt:.1f} s")


# ---------------------------------------------------------------- cases

def echo_expect(data):
    return "".join(chr(b) if 0x20 <= b < 0x7f else f"\\x{b:02x}" for b in data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--bzimage", required=True)
    ap.add_argument("--elf", required=True)
    ap.add_argument("--shim")
    ap.add_argument("--netblast", help="bench/netblast (the net-rate case)")
    args = ap.parse_args()

    if args.case == "images":
        check_images(args.bzimage, args.elf)
        return
    if args.case == "pattern":
        pattern_selftest()
        print("pattern: pass")
        return
    skip_without_qemu()
    if args.case in NET_CASES:
        enter_netns()

    append = "guest.exit=poweroff hello=world"
    with tempfile.TemporaryDirectory() as tmp:
        case = args.case
        if case.startswith("virtio-"):
            virtio_case(case, args, tmp)
            print(f"{case}: pass")
            return
        if case in NET_CASES:
            net_case(case, args, tmp)
            print(f"{case}: pass")
            return
        if case == "balloon":
            balloon_case(args, tmp)
            print(f"{case}: pass")
            return
        if case == "touch":
            # no virtio device at all: the ring-3 job still runs (PICs masked first)
            st, lines = run_qemu("q35", args.elf, "guest.touch=1", smp=2)
            check_ending(lines, st, "poweroff")
            m = one(lines, r"GUEST touch pages=(\d+) mib=(\d+)")
            check(int(m.group(1)) * 4096 >= 240 << 20, f"touched only {m.group(0)}")
            print(f"{case}: pass")
            return
        initrd, data = make_initrd(tmp, 300 * 1024, 20240601)
        if case == "q35-bzimage":
            st, lines = run_qemu("q35", args.bzimage, append, initrd)
            check_full(lines, st, "32", append, data)
        elif case == "q35-pvh":
            st, lines = run_qemu("q35", args.elf, append, initrd)
            check_full(lines, st, "pvh", append, data)
        elif case == "q35-entry64":
            check(args.shim, "--shim is required")
            st, lines = run_qemu("q35", args.shim, append, initrd,
                                 extra=["-device", f"loader,file={args.elf}"])
            check_full(lines, st, "64", append, data)
            one(lines, r"GUEST entry=64 long_mode=1 cs=0x10 bp=0x7000")
        elif case == "aps-off":
            app = "guest.aps=0 guest.exit=poweroff"
            st, lines = run_qemu("q35", args.bzimage, app, initrd)
            check_full(lines, st, "32", app, data, aps=False)
        elif case in ("reset", "triplefault"):
            st, lines = run_qemu("q35", args.bzimage, f"guest.exit={case}", smp=2)
            check_ending(lines, st, case)
        elif case == "echo":
            feed = b"Echo \x01\x7f\xff\\ ok!"
            st, lines = run_qemu("q35", args.elf, f"guest.echo={len(feed)}", smp=1,
                                 stdin_after_hello=feed)
            check_ending(lines, st, "poweroff")
            want = "GUEST echo=" + echo_expect(feed)
            check(want in lines, f"no line {want!r}")
        elif case in ("microvm-pvh", "microvm-bzimage"):
            machines = subprocess.run([QEMU, "-M", "help"], capture_output=True, text=True)
            if "microvm" not in machines.stdout:
                print("QEMU has no microvm machine: skipping", flush=True)
                sys.exit(77)
            kernel = args.elf if case == "microvm-pvh" else args.bzimage
            st, lines = run_qemu("microvm,acpi=on", kernel, append, initrd)
            check_full(lines, st, "pvh" if case == "microvm-pvh" else "32", append, data,
                       pci=False, hw_reduced=True)
        else:
            sys.exit(f"unknown case {case}")
    print(f"{args.case}: pass")


if __name__ == "__main__":
    run_main(main)
