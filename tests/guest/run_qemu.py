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
    if not shutil.which(QEMU):
        print(f"{QEMU} not installed: skipping", flush=True)
        sys.exit(77)

    append = "guest.exit=poweroff hello=world"
    with tempfile.TemporaryDirectory() as tmp:
        initrd, data = make_initrd(tmp)
        case = args.case
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
