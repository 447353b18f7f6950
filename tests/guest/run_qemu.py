#!/usr/bin/env python3
"""Run the libvmm test guest under QEMU (TCG) and check what it prints.

usage: run_qemu.py --case NAME --bzimage guest.bzImage --elf guest.elf [--shim shim64.elf]

Exit status: 0 pass, 1 fail, 77 skip (no qemu-system-x86_64).
"""
import argparse
import os
import random
import re
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pattern  # noqa: E402

QEMU = "qemu-system-x86_64"
TIMEOUT = 60
BASE = 0x100000
SMP = 4
MEM_MIB = 256


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------- QEMU runs

def run_qemu(machine, kernel, append, initrd=None, extra=(), stdin_after_hello=None,
             smp=SMP):
    """Run QEMU until it exits by itself; return (status, list of GUEST lines)."""
    cmd = [QEMU, "-M", machine, "-accel", "tcg", "-m", str(MEM_MIB), "-smp", str(smp),
           "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
           "-no-reboot", "-kernel", kernel, "-append", append, *extra]
    if initrd:
        cmd += ["-initrd", initrd]
    print("+", " ".join(cmd), flush=True)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        out = bytearray()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + TIMEOUT
        pending = stdin_after_hello
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"QEMU still running after {TIMEOUT} s")
                if not sel.select(left):
                    continue
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    break
                out += data
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
                if pending is not None and b"GUEST hello\n" in out:
                    proc.stdin.write(pending)
                    proc.stdin.flush()
                    pending = None
            status = proc.wait(max(deadline - time.monotonic(), 1))
        except (Failure, subprocess.TimeoutExpired) as e:
            proc.kill()
            proc.wait()
            raise Failure(str(e) if isinstance(e, Failure) else f"QEMU did not exit in {TIMEOUT} s")
        finally:
            sel.close()
            proc.stdin.close()
            proc.stdout.close()
            err.seek(0)
            msg = err.read().decode(errors="replace").strip()
            if msg:
                print("qemu stderr:", msg, flush=True)
    lines = []
    for line in out.decode(errors="replace").split("\n"):
        i = line.find("GUEST ")  # firmware output may precede the first line
        if i >= 0:
            lines.append(line[i:])
    return status, lines


def make_initrd(directory, size=300 * 1024, seed=20240601):
    data = random.Random(seed).randbytes(size)
    path = os.path.join(directory, "initrd.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path, data


# ---------------------------------------------------------------- output checks

def find(lines, prefix):
    return [l for l in lines if l.startswith(prefix)]


def one(lines, pattern):
    rx = re.compile(pattern)
    hits = [m for m in map(rx.fullmatch, lines) if m]
    check(len(hits) == 1, f"expected exactly one line matching {pattern!r}, got {len(hits)}")
    return hits[0]


def check_ending(lines, status, exit_mode, result="pass"):
    check(status == 0, f"QEMU exit status {status}")
    fails = find(lines, "GUEST FAIL")
    check(not fails, f"guest reported failures: {fails}")
    check(lines and lines[0] == "GUEST hello", "first line is not 'GUEST hello'")
    check(f"GUEST result {result}" in lines, f"no 'GUEST result {result}'")
    check(lines[-1] == f"GUEST exit {exit_mode}", f"last line is not 'GUEST exit {exit_mode}'")


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

    m = one(lines, r"GUEST initrd addr=0x([0-9a-f]+) size=(\d+) crc32=([0-9a-f]{8})")
    check(int(m.group(2)) == len(initrd_data), f"initrd size {m.group(2)}")
    want = f"{zlib.crc32(initrd_data):08x}"
    check(m.group(3) == want, f"initrd crc32 {m.group(3)}, host computes {want}")

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
    args = ap.parse_args()

    if args.case == "images":
        check_images(args.bzimage, args.elf)
        return
    if args.case == "pattern":
        pattern_selftest()
        print("pattern: pass")
        return
    if not shutil.which(QEMU):
        print(f"{QEMU} not installed: skipping", flush=True)
        sys.exit(77)

    append = "guest.exit=poweroff hello=world"
    with tempfile.TemporaryDirectory() as tmp:
        case = args.case
        if case.startswith("virtio-"):
            virtio_case(case, args, tmp)
            print(f"{case}: pass")
            return
        initrd, data = make_initrd(tmp)
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
    try:
        main()
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
