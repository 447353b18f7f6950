#!/usr/bin/env python3
"""Boot libvmm's guest memory image under QEMU TCG and check it from inside.

usage: run_image.py --case CASE --dump-tool dump_image --shim boot-image-shim.elf
                    --bzimage guest.bzImage --elf guest.elf

dump_image runs libvmm's vm_prepare() and writes the guest RAM it filled in;
QEMU (q35, TCG) boots boot-image-shim.elf with PVH, the shim copies the dump
into place and enters the test guest exactly as libvmm's boot vCPU would
(see README.md). The test guest then checks libvmm's e820 map, boot_params,
command line, initrd, ACPI tables, page tables and GDT and prints GUEST lines.

Exit status: 0 pass, 1 fail, 77 skip (no qemu-system-x86_64; 'dump' never
skips).
"""
import argparse
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from qemu_runner import (Failure, check, check_ending, check_initrd, make_initrd,  # noqa: E402
                         one, qemu_command, run_main, run_to_exit, skip_without_qemu)

QEMU_TIMEOUT = 60  # seconds per QEMU run; QEMU is killed and the test fails after it
DUMP_ADDR = 0x2000000  # where the dump goes in QEMU's RAM unless a record is there
DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1"
MiB = 1 << 20
GiB = 1 << 30

# lib/layout.h
LAYOUT_GDT = 0x500
LAYOUT_ZERO_PAGE = 0x7000
LAYOUT_PML4 = 0x9000
LAYOUT_CMDLINE = 0x20000
LAYOUT_EBDA = 0x9FC00
LAYOUT_ACPI = 0xE0000
LAYOUT_HIMEM = 0x100000
LAYOUT_MMIO_HOLE = 0xC0000000
LAYOUT_ECAM = 0xE0000000
LAYOUT_ECAM_SIZE = 0x100000
ENTRY_64 = 0x100200  # the test guest's 64-bit entry (tests/guest/README.md)


# ---------------------------------------------------------------- the dump

class Dump:
    """A dump_image file: header fields and (gpa, bytes) records."""

    def __init__(self, path):
        data = open(path, "rb").read()
        check(len(data) >= 64 and data[:8] == b"LVMMIMG1", f"{path}: not a dump")
        (version, n, self.entry, self.vcpus, self.mem_mib, self.initrd_addr,
         self.initrd_size, size, crc, _) = struct.unpack_from("<IIQIIQQQII", data, 8)
        check(version == 1, f"dump version {version}")
        check(size == len(data), f"dump size field {size}, file has {len(data)} bytes")
        check(crc == zlib.crc32(data[64:]), "dump CRC-32 does not match")
        self.records = []
        off = 64
        for _ in range(n):
            gpa, length = struct.unpack_from("<QQ", data, off)
            self.records.append((gpa, data[off + 16:off + 16 + length]))
            off += 16 + (length + 7) // 8 * 8
        check(off == size, "records do not fill the dump")
        self.size = size
        prev_end = 0
        for gpa, body in self.records:
            check(gpa >= prev_end, "dump records overlap or are unsorted")
            prev_end = gpa + len(body)

    def read(self, gpa, length):
        """Guest RAM [gpa, gpa + length) as libvmm left it (not dumped = zero)."""
        out = bytearray(length)
        for rgpa, body in self.records:
            lo, hi = max(gpa, rgpa), min(gpa + length, rgpa + len(body))
            if lo < hi:
                out[lo - gpa:hi - gpa] = body[lo - rgpa:hi - rgpa]
        return bytes(out)

    def u32(self, gpa):
        return struct.unpack("<I", self.read(gpa, 4))[0]

    def e820(self):
        zp = self.read(LAYOUT_ZERO_PAGE, 4096)
        return [struct.unpack_from("<QQI", zp, 0x2d0 + 20 * i) for i in range(zp[0x1e8])]


def make_dump(args, tmp, kernel, mem_mib=256, cpus=1, cmdline=None, initrd=None):
    out = os.path.join(tmp, "image.dump")
    cmd = [args.dump_tool, "-k", kernel, "-m", str(mem_mib), "-c", str(cpus), "-o", out]
    if cmdline is not None:
        cmd += ["-p", cmdline]
    if initrd is not None:
        cmd += ["-i", initrd]
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    sys.stdout.write(res.stdout + res.stderr)
    check(res.returncode == 0, f"dump_image exit status {res.returncode}")
    dump = Dump(out)
    check(dump.mem_mib == mem_mib and dump.vcpus == cpus, "dump header mem/vcpus")
    return out, dump


# ---------------------------------------------------------------- expectations

def expected_e820(mem_mib):
    """libvmm's map as lib/x86/bootparams.c e820_build() and docs/memory-map.md give it."""
    mem = mem_mib * MiB
    low = min(mem, LAYOUT_MMIO_HOLE)
    high = mem - low
    e = [(0, LAYOUT_EBDA, 1), (LAYOUT_EBDA, 0xA0000 - LAYOUT_EBDA, 2),
         (LAYOUT_ACPI, LAYOUT_HIMEM - LAYOUT_ACPI, 2), (LAYOUT_HIMEM, low - LAYOUT_HIMEM, 1),
         (LAYOUT_ECAM, LAYOUT_ECAM_SIZE, 2)]
    if high:
        e.append((1 << 32, high, 1))
    return e


def qemu_low_ram(mem_mib):
    """Bytes of RAM QEMU's q35 puts below 4 GiB for -m mem_mib (hw/i386/pc_q35.c:
    2 GiB once -m reaches 0xb0000000, else up to 0xb0000000); the rest is at 4 GiB."""
    mem = mem_mib * MiB
    lowmem = 0x80000000 if mem >= 0xB0000000 else 0xB0000000
    return min(mem, lowmem)


def elf_load_range(path):
    data = open(path, "rb").read()
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    lo, hi, loads = None, 0, []
    for i in range(e_phnum):
        p_type, _f, off, _va, paddr, filesz, memsz, _a = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:
            lo = paddr if lo is None else min(lo, paddr)
            hi = max(hi, paddr + memsz)
            loads.append((paddr, data[off:off + filesz]))
    return lo, hi, loads


def choose_dump_addr(dump, shim, mem_mib):
    """A 2 MiB aligned place for the dump in QEMU's low RAM, clear of every
    record (where the shim copies to) and of the shim itself."""
    s_lo, s_hi, _ = elf_load_range(shim)
    busy = [(g, g + len(b)) for g, b in dump.records] + [(s_lo, s_hi)]
    limit = qemu_low_ram(mem_mib)
    addr = DUMP_ADDR
    while addr + dump.size <= limit:
        if all(addr + dump.size <= lo or hi <= addr for lo, hi in busy):
            return addr
        addr += 2 * MiB
    raise Failure(f"no room for a {dump.size} byte dump in {mem_mib} MiB")


# ---------------------------------------------------------------- QEMU

def run_qemu(shim, dump_path, dump, dump_addr):
    """Boot the shim with the dump; return (exit status, SHIM/GUEST lines)."""
    # Everything libvmm wrote and the guest reads must be RAM in QEMU too.
    low = qemu_low_ram(dump.mem_mib)
    for gpa, body in dump.records:
        check(gpa + len(body) <= low,
              f"record 0x{gpa:x}+0x{len(body):x} is beyond QEMU's low RAM (0x{low:x})")
    cmd = qemu_command("q35", dump.mem_mib, dump.vcpus, shim, f"dump=0x{dump_addr:x}",
                       ["-device", f"loader,file={dump_path},addr=0x{dump_addr:x},force-raw=on"])
    return run_to_exit(cmd, QEMU_TIMEOUT, tags=("GUEST", "SHIM"))


# ---------------------------------------------------------------- checks

def check_boot(lines, status, dump, cmdline_extra, initrd_data=None):
    """Everything the guest reports about libvmm's image, for every case."""
    check(not [l for l in lines if l.startswith("SHIM FAIL")],
          f"shim failed: {[l for l in lines if l.startswith('SHIM FAIL')]}")
    one(lines, r"SHIM copied \d+ bytes; entering 0x[0-9a-f]+ cs=0x10 rsi=0x7000 cr3=0x9000 "
               r"gdt=0x500")
    g = [l for l in lines if l.startswith("GUEST ")]
    # With guest.exit=reset nothing is expected to fail: poweroff (libvmm's
    # port 0x600, which QEMU lacks) is never tried.
    check_ending(g, status, "reset")

    one(g, rf"GUEST entry=64 long_mode=1 cs=0x10 bp=0x{LAYOUT_ZERO_PAGE:x}")

    want = expected_e820(dump.mem_mib)
    check(dump.e820() == want, f"boot_params e820 in the dump {dump.e820()} != {want}")
    one(g, rf"GUEST e820 entries={len(want)}")
    got = [l for l in g if re.fullmatch(r"GUEST e820 0x[0-9a-f]+ 0x[0-9a-f]+ \d+", l)]
    want_lines = [f"GUEST e820 0x{a:x} 0x{s:x} {t}" for a, s, t in want]
    check(got == want_lines, f"e820 lines {got} != libvmm's {want_lines}")
    usable = sum(s for _, s, t in want if t == 1)
    one(g, rf"GUEST ram_mib={usable >> 20} ram_kib={usable >> 10}")

    want_cmd = DEFAULT_CMDLINE + (" " + cmdline_extra if cmdline_extra else "")
    check(f"GUEST cmdline={want_cmd}" in g, f"command line is not exactly {want_cmd!r}")

    if initrd_data is None:
        one(g, r"GUEST initrd none")
    else:
        addr = check_initrd(g, initrd_data)
        check(addr == dump.initrd_addr,
              f"initrd at 0x{addr:x}, libvmm put it at 0x{dump.initrd_addr:x}")

    one(g, r"GUEST cpuid vendor=.{12} hypervisor=\S+ apic_id=0")
    one(g, rf"GUEST acpi rsdp=0x{LAYOUT_ACPI:x} rev=2 oem=LIBVMM")
    tables = [re.fullmatch(r"GUEST acpi table (\S{4}) addr=0x([0-9a-f]+) len=(\d+) rev=\d+ "
                           r"checksum=(ok|bad)", l) for l in g if l.startswith("GUEST acpi table ")]
    check(tables and all(tables), "malformed or missing 'acpi table' lines")
    sigs = [t.group(1) for t in tables]
    check(sigs[0] == "XSDT", f"first table {sigs[0]}, expected the XSDT")
    check(sorted(sigs) == sorted(["XSDT", "FACP", "APIC", "MCFG", "DSDT"]),
          f"ACPI tables {sigs}")
    for t in tables:
        check(t.group(4) == "ok", f"{t.group(1)} checksum bad")
        addr, length = int(t.group(2), 16), int(t.group(3))
        check(LAYOUT_ACPI <= addr and addr + length <= LAYOUT_HIMEM,
              f"{t.group(1)} outside 0xe0000-0xfffff")
    one(g, rf"GUEST acpi madt lapics={dump.vcpus} ioapics=1")
    one(g, r"GUEST acpi fadt hw_reduced=1 sleep_ctl=io:0x600 pm1a_cnt=0x0 reset=io:0x602=0x1")
    one(g, r"GUEST acpi s5 slp_typ=5")

    ups = [re.fullmatch(r"GUEST cpu (\d+) apic_id=(\d+) up", l) for l in g
           if l.startswith("GUEST cpu ")]
    check(all(ups), "malformed 'cpu' line")
    ids = sorted(int(m.group(2)) for m in ups)
    check(ids == list(range(1, dump.vcpus)), f"APs up with APIC ids {ids}")
    one(g, rf"GUEST cpus expected={dump.vcpus} online={dump.vcpus}")
    check(any(l.startswith("GUEST pci 00:00.0 ") for l in g), "no PCI host bridge line")
    return g


def check_dump_contents(dump, kernel, is_bzimage, cmdline_extra, initrd_data):
    """Host-side: the dump holds what vm_prepare() should have written."""
    check(dump.entry == ENTRY_64, f"entry 0x{dump.entry:x}, expected 0x{ENTRY_64:x}")
    if is_bzimage:
        bz = open(kernel, "rb").read()
        payload = bz[(bz[0x1f1] + 1) * 512:]
        check(dump.read(0x100000, len(payload)) == payload,
              "bzImage payload not at 0x100000 in the dump")
    else:
        for paddr, body in elf_load_range(kernel)[2]:
            check(dump.read(paddr, len(body)) == body, f"ELF segment 0x{paddr:x} differs")
    if initrd_data is not None:
        check(dump.read(dump.initrd_addr, len(initrd_data)) == initrd_data,
              "initrd bytes differ")
        check(dump.u32(LAYOUT_ZERO_PAGE + 0x218) == dump.initrd_addr and
              dump.u32(LAYOUT_ZERO_PAGE + 0x21c) == len(initrd_data),
              "boot_params ramdisk fields")
    want_cmd = (DEFAULT_CMDLINE + (" " + cmdline_extra if cmdline_extra else "")).encode()
    check(dump.read(LAYOUT_CMDLINE, len(want_cmd) + 1) == want_cmd + b"\0", "command line")
    check(dump.u32(LAYOUT_ZERO_PAGE + 0x228) == LAYOUT_CMDLINE, "cmd_line_ptr")
    gdt = struct.unpack("<4Q", dump.read(LAYOUT_GDT, 32))
    check(gdt == (0, 0, 0x00af9b000000ffff, 0x00cf93000000ffff), f"GDT {gdt}")
    pml4 = struct.unpack("<Q", dump.read(LAYOUT_PML4, 8))[0]
    check(pml4 == 0xA003, f"PML4[0] 0x{pml4:x}")
    pd = struct.unpack("<2048Q", dump.read(0xB000, 4 * 4096))
    check(pd == tuple((i << 21) | 0x83 for i in range(2048)), "PD entries")
    check(dump.read(LAYOUT_ACPI, 8) == b"RSD PTR ", "no RSDP at 0xe0000")
    check(dump.e820() == expected_e820(dump.mem_mib), "boot_params e820")


# ---------------------------------------------------------------- cases

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--dump-tool", required=True)
    ap.add_argument("--shim", required=True)
    ap.add_argument("--bzimage", required=True)
    ap.add_argument("--elf", required=True)
    args = ap.parse_args()

    case = args.case
    if case != "dump":
        skip_without_qemu()

    with tempfile.TemporaryDirectory() as tmp:
        if case == "dump":
            extra = "guest.exit=reset dump=check"
            initrd, data = make_initrd(tmp, 300 * 1024, 1)
            for kernel, is_bz in ((args.bzimage, True), (args.elf, False)):
                _, dump = make_dump(args, tmp, kernel, cmdline=extra, initrd=initrd)
                check_dump_contents(dump, kernel, is_bz, extra, data)
            _, dump = make_dump(args, tmp, args.elf, mem_mib=4096, cmdline=extra, initrd=initrd)
            check_dump_contents(dump, args.elf, False, extra, data)
            print("dump: pass")
            return

        extra, initrd, data, kernel, mem, cpus = "guest.exit=reset", None, None, None, 256, 1
        if case == "bzimage":
            kernel = args.bzimage
        elif case == "elf":
            kernel = args.elf
        elif case == "smp":
            kernel, cpus = args.bzimage, 4
        elif case == "cmdline-initrd":
            kernel = args.bzimage
            token = "%08x" % random.Random().getrandbits(32)
            extra = f"guest.exit=reset libvmm.test={token} quoted=\"a b\" x=~!@#$%^&*()_+"
            seed = random.Random().getrandbits(32)
            print(f"initrd: 700 KiB from random seed {seed}", flush=True)
            initrd, data = make_initrd(tmp, 700 * 1024, seed)
        elif case == "mem4g":
            # libvmm: 3 GiB below the hole, 1 GiB at 4 GiB. QEMU's q35 with
            # -m 4096 has only 2 GiB of RAM below 4 GiB (it never has RAM at
            # 0xb0000000-0xffffffff: MMCONFIG and the PCI hole) and 2 GiB at
            # 4 GiB. The guest only reads the e820 map; the memory it touches
            # is its image (1-2 MiB), 0x8000, libvmm's tables below 1 MiB, and
            # the initrd. So this case has no initrd: for an ELF kernel libvmm
            # puts it at the top of RAM below the hole (just under 3 GiB),
            # which q35 cannot back. run_qemu() refuses any dump record that
            # is not RAM in QEMU.
            kernel, mem = args.elf, 4096
        else:
            sys.exit(f"unknown case {case}")
        dump_path, dump = make_dump(args, tmp, kernel, mem, cpus, extra, initrd)
        addr = choose_dump_addr(dump, args.shim, mem)
        status, lines = run_qemu(args.shim, dump_path, dump, addr)
        check_boot(lines, status, dump, extra, data)
    print(f"{case}: pass")


if __name__ == "__main__":
    run_main(main)
