#!/usr/bin/env python3
"""Linux guest tests for libvmm: Debian's cloud kernel plus a busybox initramfs.

    linux_test.py [--vmm PATH] [--source-root DIR] [--work DIR] COMMAND

COMMAND is one of
    early-boot   boot the bare kernel with earlyprintk and check the e820 map,
                 the ACPI tables and the CPU count it prints
    boot         boot to the initramfs's `boot` test and check what it reports
    blk          a read-only ext4 root disk (-r) of known files and a writable
                 ext4 disk (--rwdisk) the guest writes; the host checks the
                 written file with debugfs, without mounting
    rng          /dev/hwrng backed by virtio-rng (and none with --no-rng)
    net          virtio-net on a tap opened by the driver (--tap-fd) in a
                 network namespace of its own: pings both ways, 16 MiB by TCP
                 each way (root only)
    net-hostip   the same with the tap created by vmm-run
                 (--host_ip/--netmask/--mac); the guest checks the MAC
    prepare      only fetch the kernel and build the initramfs
    shell        interactive: boot to the initramfs shell under vmm-run
    qemu-tcg     validation aid: the same guests under QEMU's emulator, with
                 QEMU's virtio devices and the same host-side checks
                 (`qemu-tcg boot|shell|blk|rng|net|net-hostip`)

Exit status follows meson: 0 pass, 1 fail, 77 skip (with the reason on stdout).
Every VM runs under a timeout; a VM that outlives it is killed and the test fails.

Environment:
    LIBVMM_LINUX_CACHE   where the kernel is unpacked (default WORK/debian-kernel)
    LIBVMM_HOST_KVM      force the host classification: none, pvm or hw
    LIBVMM_LINUX_TIMEOUT seconds allowed for one VM run (default 120)
    LIBVMM_QEMU_TIMEOUT  the same under qemu-tcg (default 600)
    LIBVMM_SECCOMP_POLICY_DIR  vmm-run's seccomp policies (default: the
                         source tree's policies/)
"""

import argparse
import ctypes
import fcntl
import hashlib
import os
import queue
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

SKIP = 77
MiB = 1 << 20

MSG_NO_KVM = "skipped: /dev/kvm is not present on this host"
MSG_PVM = ("skipped: this host's KVM is nested PVM, which emulates guest ring 0 "
           "and cannot boot Linux; run on hardware KVM")

# The guest memory map libvmm documents (lib/layout.h, lib/x86/bootparams.c).
EBDA = 0x9FC00
BIOS_AREA = 0xE0000       # RSDP and ACPI tables: 0xE0000-0xFFFFF
HIMEM = 0x100000
MMIO_HOLE = 0xC0000000
FOUR_GIB = 0x100000000

EARLY_PARAMS = "earlyprintk=serial,ttyS0,115200 ignore_loglevel"
ACPI_TABLES = ("RSDP", "XSDT", "FACP", "APIC", "DSDT", "MCFG")


class Fail(Exception):
    pass


def say(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------
# The host

def host_kvm():
    """'none' (no /dev/kvm), 'pvm' (nested PVM KVM) or 'hw' (hardware KVM)."""
    forced = os.environ.get("LIBVMM_HOST_KVM")
    if forced in ("none", "pvm", "hw"):
        return forced
    if not os.path.exists("/dev/kvm"):
        return "none"
    # A PVM host may have the kvm_pvm module without it backing /dev/kvm:
    # kvm_intel or kvm_amd loaded means hardware virtualisation is in use.
    pvm = os.path.isdir("/sys/module/kvm_pvm")
    hw = os.path.isdir("/sys/module/kvm_intel") or os.path.isdir("/sys/module/kvm_amd")
    return "pvm" if pvm and not hw else "hw"


def skip(msg):
    say(msg)
    sys.exit(SKIP)


def require_kvm(allow_pvm):
    kind = host_kvm()
    say(f"host KVM: {kind}")
    if kind == "none":
        skip(MSG_NO_KVM)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) and "LIBVMM_HOST_KVM" not in os.environ:
        skip("skipped: /dev/kvm exists but this user cannot open it read-write")
    if kind == "pvm" and not allow_pvm:
        skip(MSG_PVM)
    return kind


# --------------------------------------------------------------------------
# Kernel and initramfs

class Images:
    def __init__(self, args):
        self.src = os.path.abspath(args.source_root)
        self.work = os.path.abspath(args.work)
        self.kdir = os.environ.get("LIBVMM_LINUX_CACHE") or os.path.join(self.work, "debian-kernel")
        self.initrd = os.path.join(self.work, "initramfs.cpio.gz")
        os.makedirs(self.work, exist_ok=True)

    @property
    def kernel(self):
        return os.path.join(self.kdir, "vmlinuz")

    def fetch_kernel(self):
        script = os.path.join(self.src, "scripts", "fetch-debian-kernel.sh")
        t0 = time.monotonic()
        try:
            r = subprocess.run([script, self.kdir], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise Fail("fetch-debian-kernel.sh did not finish within 600 s")
        sys.stdout.write(r.stdout)
        if r.returncode != 0:
            raise Fail(f"fetch-debian-kernel.sh failed (exit {r.returncode})")
        with open(os.path.join(self.kdir, "version")) as f:
            self.release = f.read().strip()
        say(f"kernel: {self.kernel} ({self.release}, {time.monotonic() - t0:.1f} s)")
        return self.kernel

    def _inputs(self):
        yield os.path.join(self.src, "scripts", "make-initramfs.sh")
        yield os.path.join(self.kdir, "version")
        for dirpath, _, files in os.walk(os.path.join(self.src, "tests", "linux", "initramfs")):
            for f in files:
                yield os.path.join(dirpath, f)

    def build_initramfs(self):
        self.fetch_kernel()
        with open(os.path.join(self.work, ".initramfs.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                built = os.stat(self.initrd).st_mtime
                stale = any(os.stat(p).st_mtime > built for p in self._inputs())
            except FileNotFoundError:
                stale = True
            if stale:
                script = os.path.join(self.src, "scripts", "make-initramfs.sh")
                try:
                    r = subprocess.run([script, self.initrd, self.kdir], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, timeout=600)
                except subprocess.TimeoutExpired:
                    raise Fail("make-initramfs.sh did not finish within 600 s")
                sys.stdout.write(r.stdout)
                if r.returncode != 0:
                    raise Fail(f"make-initramfs.sh failed (exit {r.returncode})")
        say(f"initramfs: {self.initrd} ({os.path.getsize(self.initrd) // 1024} KiB)")
        return self.initrd


# --------------------------------------------------------------------------
# Running a VM

class Run:
    def __init__(self, argv, rc, out, err, seconds, timed_out):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err
        self.seconds, self.timed_out = seconds, timed_out
        self.lines = out.replace("\r", "").split("\n")


def run_vm(argv, timeout, log_path):
    """Run argv with the serial console captured; kill it after timeout seconds."""
    say("$ " + " ".join(_quote(a) for a in argv))
    t0 = time.monotonic()
    with open(log_path + ".out", "wb") as out, open(log_path + ".err", "wb") as err:
        # stdin is a pipe nobody writes to: an idle console, not an EOF.
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err,
                             start_new_session=True)
        timed_out = False
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        finally:
            p.stdin.close()
    seconds = time.monotonic() - t0
    with open(log_path + ".out", "rb") as f:
        o = f.read().decode("utf-8", "replace")
    with open(log_path + ".err", "rb") as f:
        e = f.read().decode("utf-8", "replace")
    rc = None if timed_out else p.returncode
    say(f"exit: {'timeout after %d s (killed)' % timeout if timed_out else rc}, "
        f"{seconds:.1f} s, console log {log_path}.out ({len(o)} bytes)")
    return Run(argv, rc, o, e, seconds, timed_out)


def _quote(a):
    return a if re.fullmatch(r"[\w@%+=:,./-]+", a) else "'" + a.replace("'", "'\\''") + "'"


def tail(run, n=25):
    say(f"--- last {n} console lines")
    for line in [l for l in run.lines if l.strip()][-n:]:
        say("  | " + line)
    if run.err.strip():
        say("--- stderr")
        for line in run.err.strip().split("\n")[-10:]:
            say("  | " + line)


def vm_timeout():
    return int(os.environ.get("LIBVMM_LINUX_TIMEOUT", "120"))


# --------------------------------------------------------------------------
# What the kernel printed

E820_RE = re.compile(r"BIOS-e820: \[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\] (.+?)\s*$")
ACPI_RE = re.compile(r"ACPI: (RSDP|XSDT|RSDT|FACP|APIC|DSDT|MCFG|FACS|HPET|SSDT|SRAT|\w{4}) "
                     r"0x([0-9A-Fa-f]+) ([0-9A-Fa-f]+)")


def expected_ram(mem_mib):
    """The usable e820 ranges (inclusive ends) libvmm gives a guest of mem_mib MiB."""
    size = mem_mib * MiB
    low = min(size, MMIO_HOLE)
    ram = [(0, EBDA - 1)]
    if low > HIMEM:
        ram.append((HIMEM, low - 1))
    if size > MMIO_HOLE:
        ram.append((FOUR_GIB, FOUR_GIB + size - MMIO_HOLE - 1))
    return ram


def check_e820(run, mem_mib):
    """The BIOS-e820 lines against libvmm's documented map. Returns a list of problems."""
    entries = []
    for line in run.lines:
        m = E820_RE.search(line)
        if m:
            e = (int(m.group(1), 16), int(m.group(2), 16), m.group(3))
            if e not in entries:  # the boot test prints dmesg's copy again
                entries.append(e)
    if not entries:
        return ["no BIOS-e820 lines on the console"]
    say("e820 map printed by the kernel:")
    for s, e, t in entries:
        say(f"  {s:#018x}-{e:#018x} {t}")
    problems = []
    want = [(s, e, "usable") for s, e in expected_ram(mem_mib)]
    want += [(EBDA, 0x9FFFF, "reserved"), (BIOS_AREA, HIMEM - 1, "reserved")]
    for w in want:
        if w not in entries:
            problems.append(f"e820: expected [{w[0]:#x}-{w[1]:#x}] {w[2]}, not printed")
    for s, e, t in entries:
        if (s, e, t) in want:
            continue
        # Anything else must be reserved MMIO (e.g. the PCI ECAM window)
        # above low RAM, away from every RAM range.
        if t != "reserved":
            problems.append(f"e820: unexpected {t} range [{s:#x}-{e:#x}]")
        elif s < HIMEM or any(s <= re_ and rs <= e for rs, re_ in expected_ram(mem_mib)):
            problems.append(f"e820: reserved range [{s:#x}-{e:#x}] overlaps RAM or low memory")
    return problems


def acpi_tables(run):
    found = {}
    for line in run.lines:
        m = ACPI_RE.search(line)
        if m and m.group(1) not in found:
            found[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16))
    return found


def check_acpi(run):
    found = acpi_tables(run)
    problems = []
    if found:
        say("ACPI tables printed by the kernel:")
        for sig, (addr, length) in found.items():
            say(f"  {sig} at {addr:#x}, {length} bytes")
    for sig in ACPI_TABLES:
        if sig not in found:
            problems.append(f"ACPI: no 'ACPI: {sig}' line")
    for sig, (addr, length) in found.items():
        # libvmm puts the RSDP and every table in 0xE0000-0xFFFFF.
        if not (BIOS_AREA <= addr and addr + length <= HIMEM):
            problems.append(f"ACPI: {sig} at {addr:#x}+{length} lies outside 0xe0000-0xfffff")
    return problems


def check_cpus(run, cpus, required):
    text = "\n".join(run.lines)
    problems = []
    m = re.search(r"smpboot: Allowing (\d+) CPUs", text)
    if m:
        say(f"CPUs: kernel allows {m.group(1)}")
        if int(m.group(1)) != cpus:
            problems.append(f"smpboot allows {m.group(1)} CPUs, expected {cpus}")
    elif required:
        problems.append("no 'smpboot: Allowing N CPUs' line")
    m = re.search(r"smp: Brought up \d+ nodes?, (\d+) CPUs?", text)
    if m:
        say(f"CPUs: kernel brought up {m.group(1)}")
        if int(m.group(1)) != cpus:
            problems.append(f"kernel brought up {m.group(1)} CPUs, expected {cpus}")
    return problems


def internal_error(run):
    """The VMM's one-line report of a KVM internal error, or None."""
    for line in run.err.split("\n"):
        if "internal error" in line and re.search(r"rip=0x[0-9a-fA-F]+", line):
            return line.strip()
    return None


def report(problems, what):
    if problems:
        say(f"FAIL: {what}")
        for p in problems:
            say("  - " + p)
        return 1
    say(f"PASS: {what}")
    return 0


# --------------------------------------------------------------------------
# Tests

def vmm_argv(args, kernel, cpus, mem, params, initrd=None):
    argv = [args.vmm, "run", "-c", str(cpus), "-m", str(mem)]
    for p in params:
        argv += ["-p", p]
    if initrd:
        argv += ["-i", initrd]
    return argv + [kernel]


def test_early_boot(args):
    kind = require_kvm(allow_pvm=True)
    img = Images(args)
    kernel = img.fetch_kernel()
    cpus, mem = 2, 512
    run = run_vm(vmm_argv(args, kernel, cpus, mem, [EARLY_PARAMS]), vm_timeout(),
                 os.path.join(img.work, "early-boot"))
    if run.timed_out:
        tail(run)
        return report([f"vmm-run did not exit within {vm_timeout()} s (hang)"], "linux-early-boot")
    ierr = internal_error(run)
    if run.rc == 0:
        # The kernel ran to the end (without an initramfs it panics and,
        # with panic=-1, reboots): everything it prints early must be right.
        problems = check_e820(run, mem) + check_acpi(run) + check_cpus(run, cpus, required=True)
        if problems:
            tail(run)
        return report(problems, f"linux-early-boot on {kind} KVM: e820, ACPI and CPUs as documented")
    if kind == "pvm" and ierr:
        # Expected on nested PVM: the guest's ring 0 hits an instruction PVM
        # cannot emulate. The VMM must say so clearly, after the kernel got
        # as far as its memory map.
        say(f"vmm-run stopped the guest as expected on PVM: {ierr}")
        problems = check_e820(run, mem)
        found = acpi_tables(run)
        if found:
            problems += [p for p in check_acpi(run) if "outside" in p]
        problems += check_cpus(run, cpus, required=False)
        if problems:
            tail(run)
        return report(problems, "linux-early-boot on PVM: clear internal error after the e820 map")
    tail(run)
    last = run.err.strip().splitlines()
    why = [f"vmm-run exited {run.rc}" + (f": {last[-1]}" if last else "")]
    if kind == "pvm":
        why.append("on PVM a failure must be reported as 'internal error ... rip=0x...' on stderr")
    elif ierr:
        why.append(f"KVM internal error on hardware KVM: {ierr}")
    return report(why, "linux-early-boot")


def test_boot(args):
    require_kvm(allow_pvm=False)
    img = Images(args)
    initrd = img.build_initramfs()
    cpus, mem = 2, 512
    run = run_vm(vmm_argv(args, img.kernel, cpus, mem, ["test=boot"], initrd), vm_timeout(),
                 os.path.join(img.work, "boot"))
    problems = check_exit(run, "boot", vm_timeout())
    text = "\n".join(run.lines)
    boot = dict(re.findall(r"^BOOT (\w+)=(.*)$", text, re.M))
    for k, v in boot.items():
        say(f"guest {k}: {v}")
    if "cpus" in boot and boot["cpus"] != str(cpus):
        problems.append(f"guest sees {boot['cpus']} CPUs, expected {cpus}")
    if "memtotal_kib" in boot:
        kib = int(boot["memtotal_kib"] or 0)
        # MemTotal is RAM less what the kernel keeps for itself: within 15%.
        if not (0.85 * mem * 1024 <= kib <= mem * 1024):
            problems.append(f"MemTotal {kib} KiB is not close to {mem} MiB")
    if "cmdline" in boot and "test=boot" not in boot["cmdline"]:
        problems.append("test=boot missing from the guest's /proc/cmdline")
    if "acpi_tables" in boot:
        have = boot["acpi_tables"].split()
        problems += [f"/sys/firmware/acpi/tables has no {t}" for t in ("FACP", "APIC", "DSDT", "MCFG")
                     if t not in have]
    if any(E820_RE.search(l) for l in run.lines):
        problems += check_e820(run, mem)
    if not run.timed_out:
        problems += check_cpus(run, cpus, required=False)
    if problems:
        tail(run)
    return report(problems, "linux-boot: Debian kernel to the initramfs on 2 CPUs, 512 MiB")


def cmd_prepare(args):
    img = Images(args)
    img.build_initramfs()
    return 0


def cmd_shell(args):
    require_kvm(allow_pvm=True)
    img = Images(args)
    initrd = img.build_initramfs()
    argv = vmm_argv(args, img.kernel, args.cpus, args.mem, ["test=shell"] + args.param, initrd)
    say("$ " + " ".join(_quote(a) for a in argv))
    os.execv(argv[0], argv)


# --------------------------------------------------------------------------
# Guests with devices, under vmm-run or (validation aid) under QEMU's TCG

class Guest:
    """One guest's command line and devices, as vmm-run or QEMU options."""

    def __init__(self, test, cpus=2, mem=512):
        self.test, self.cpus, self.mem = test, cpus, mem
        # loglevel=4 keeps the kernel's informational messages from cutting
        # into the lines the guest scripts print (warnings still show).
        self.params = [f"test={test}", "loglevel=4"]
        self.disks = []          # (path, "root" | "ro" | "rw")
        self.rng = True
        self.tap_fd = None       # an open tap, handed over as this fd number
        self.tap_create = None   # (host_ip, prefix_len, mac, ifname)
        self.mac = None          # the NIC's MAC, where the VMM lets us choose

    def vmm_argv(self, args, img):
        argv = [args.vmm, "run", "-c", str(self.cpus), "-m", str(self.mem)]
        for p in self.params:
            argv += ["-p", p]
        for path, kind in self.disks:
            argv += [{"root": "-r", "ro": "-d", "rw": "--rwdisk"}[kind], path]
        if not self.rng:
            argv.append("--no-rng")
        if self.tap_fd is not None:
            argv += ["--tap-fd", str(self.tap_fd)]
        if self.tap_create:
            host_ip, prefix, mac, _ = self.tap_create
            argv += ["--host_ip", host_ip, "--netmask", str(prefix), "--mac", mac]
        return argv + ["-i", img.initrd, img.kernel]

    def qemu_argv(self, img):
        # vmm-run starts the command line with these and adds root= for -r.
        params = ["console=ttyS0 reboot=k panic=-1"]
        if any(kind == "root" for _, kind in self.disks):
            params.append("root=/dev/vda ro")
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-m", str(self.mem),
                "-smp", str(self.cpus), "-nographic", "-no-reboot", "-nic", "none",
                "-kernel", img.kernel, "-initrd", img.initrd,
                "-append", " ".join(params + self.params)]
        # The root disk first, so that it is vda as under vmm-run.
        disks = sorted(self.disks, key=lambda d: d[1] != "root")
        for i, (path, kind) in enumerate(disks):
            ro = ",readonly=on" if kind in ("root", "ro") else ""
            argv += ["-drive", f"file={path},if=none,id=d{i},format=raw{ro}",
                     "-device", f"virtio-blk-pci,drive=d{i}"]
        if self.rng:
            argv += ["-device", "virtio-rng-pci"]
        mac = f",mac={self.mac}" if self.mac else ""
        if self.tap_fd is not None:
            argv += ["-netdev", f"tap,id=n0,fd={self.tap_fd},vhost=off",
                     "-device", f"virtio-net-pci,netdev=n0{mac}"]
        if self.tap_create:
            _, _, mac, ifname = self.tap_create
            argv += ["-netdev", f"tap,id=n0,ifname={ifname},script=no,downscript=no,vhost=off",
                     "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]
        return argv


class Mode:
    """vmm: the real test (needs KVM). qemu: the same guest under QEMU's TCG,
    which checks the kernel, the initramfs, the guest script and the host-side
    checks, not libvmm."""

    def __init__(self, args, name):
        self.args, self.name = args, name

    @property
    def qemu(self):
        return self.name == "qemu"

    def require_host(self):
        if self.qemu:
            if not shutil.which("qemu-system-x86_64"):
                raise Fail("qemu-system-x86_64 not found (Debian: apt-get install qemu-system-x86)")
            say("QEMU TCG: proves the kernel, the initramfs and the guest script, not libvmm")
        else:
            require_kvm(allow_pvm=False)

    def label(self, test):
        return f"qemu-tcg {test}" if self.qemu else f"linux-{test}"

    def log(self, img, name):
        return os.path.join(img.work, ("qemu-tcg-" if self.qemu else "") + name)

    def timeout(self):
        if self.qemu:
            return int(os.environ.get("LIBVMM_QEMU_TIMEOUT", "600"))
        return vm_timeout()

    def argv(self, guest, img):
        return guest.qemu_argv(img) if self.qemu else guest.vmm_argv(self.args, img)


def check_exit(run, test, timeout):
    """vmm-run (or QEMU) exited 0 and the guest script passed."""
    problems = []
    if run.timed_out:
        problems.append(f"the VM did not exit within {timeout} s (hang)")
    elif run.rc != 0:
        last = run.err.strip().splitlines()
        problems.append(f"the VMM exited {run.rc}" + (f": {last[-1]}" if last else ""))
    text = "\n".join(run.lines)
    if f"LINUX-TEST {test} PASS" not in text:
        m = re.search(rf"LINUX-TEST {re.escape(test)} (\w+)", text)
        problems.append(f"the guest reported {m.group(0)!r}" if m
                        else f"no 'LINUX-TEST {test}' line")
    problems += [l.strip() for l in run.lines if re.search(r"^\w+: FAIL: ", l.strip())]
    return problems


def guest_lines(run, prefix):
    return [l.strip()[len(prefix) + 1:] for l in run.lines if l.strip().startswith(prefix + " ")]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def host_tool(name, package):
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]:
        p = os.path.join(d, name)
        if d and os.access(p, os.X_OK):
            return p
    raise Fail(f"{name} not found on the host (Debian: apt-get install {package})")


# --------------------------------------------------------------------------
# linux-blk

BLK_RO_MIB, BLK_RW_MIB = 16, 32


def blk_tree(root):
    """Fill root with the read-only disk's files; return its manifest:
    `find . -type f | sort | xargs sha256sum` as the guest prints it."""
    rnd = random.Random(0x6C696276)  # a fixed seed: the same files every run
    files = {
        "hello.txt": b"hello from the libvmm linux-blk test\n",
        "empty": b"",
        "data/random.bin": rnd.randbytes(MiB + 123),
        "data/zeros.bin": bytes(64 << 10),
        "data/sub/numbers.txt": "".join(f"{i}\n" for i in range(20000)).encode(),
    }
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return "".join(f"{hashlib.sha256(files[rel]).hexdigest()}  ./{rel}\n"
                   for rel in sorted(files, key=lambda r: "./" + r))


def make_ext4(path, mib, label, src=None):
    mkfs = host_tool("mkfs.ext4", "e2fsprogs")
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.truncate(mib * MiB)
    argv = [mkfs, "-q", "-F", "-b", "4096", "-L", label]
    if src:
        argv += ["-d", src]
    r = subprocess.run(argv + [path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise Fail(f"mkfs.ext4 {path} failed: {r.stdout.strip()}")


def debugfs_dump(image, src, dst):
    """Copy file src out of the ext4 image without mounting it."""
    debugfs = host_tool("debugfs", "e2fsprogs")
    if os.path.exists(dst):
        os.unlink(dst)
    r = subprocess.run([debugfs, "-R", f"dump {src} {dst}", image], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not os.path.exists(dst):
        raise Fail(f"debugfs could not dump {src} from {image}: {r.stdout.strip()}")


def test_blk(args, mode):
    mode.require_host()
    host_tool("mkfs.ext4", "e2fsprogs")
    host_tool("debugfs", "e2fsprogs")
    img = Images(args)
    img.build_initramfs()
    d = os.path.join(img.work, ("qemu-tcg-" if mode.qemu else "") + "blk")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "tree"))
    manifest = blk_tree(os.path.join(d, "tree"))
    manifest_sum = hashlib.sha256(manifest.encode()).hexdigest()
    ro, rw = os.path.join(d, "ro.img"), os.path.join(d, "rw.img")
    make_ext4(ro, BLK_RO_MIB, "libvmm-ro", os.path.join(d, "tree"))
    make_ext4(rw, BLK_RW_MIB, "libvmm-rw")
    ro_sum = sha256_file(ro)
    say(f"disks: {ro} ({BLK_RO_MIB} MiB, {manifest.count(chr(10))} files, "
        f"manifest {manifest_sum}), {rw} ({BLK_RW_MIB} MiB, empty)")

    g = Guest("blk")
    g.params += ["blk_rw=vdb", f"blk_sum={manifest_sum}"]
    g.disks = [(ro, "root"), (rw, "rw")]
    run = run_vm(mode.argv(g, img), mode.timeout(), mode.log(img, "blk"))
    problems = check_exit(run, "blk", mode.timeout())
    blk = guest_lines(run, "BLK")
    for l in blk:
        say("  | BLK " + l)

    devs = {}
    for l in blk:
        m = re.match(r"dev=(\w+) ro=(\d) sectors=(\d+)", l)
        if m:
            devs[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    for dev, path, want_ro in (("vda", ro, 1), ("vdb", rw, 0)):
        if dev not in devs:
            problems.append(f"the guest printed no 'BLK dev={dev}' line")
            continue
        got_ro, sectors = devs[dev]
        if got_ro != want_ro:
            problems.append(f"/sys/block/{dev}/ro is {got_ro}, expected {want_ro}")
        if sectors * 512 != os.path.getsize(path):
            problems.append(f"{dev} has {sectors} sectors ({sectors * 512} bytes), "
                            f"the image has {os.path.getsize(path)} bytes")
    want_files = {l.split("  ", 1)[1]: l.split("  ", 1)[0] for l in manifest.splitlines()}
    got_files = {}
    for l in blk:
        m = re.match(r"file ([0-9a-f]{64}) (\S+)$", l)
        if m:
            got_files[m.group(2)] = m.group(1)
    if not got_files:
        problems.append("the guest listed no files of the read-only disk")
    for path, want in want_files.items():
        if got_files and got_files.get(path) != want:
            problems.append(f"{path}: the guest read sha256 {got_files.get(path)}, "
                            f"the host wrote {want}")
    for path in set(got_files) - set(want_files):
        problems.append(f"{path}: on the guest's read-only disk, not written by the host")
    if f"manifest={manifest_sum}" not in blk:
        problems.append("the guest's manifest checksum is not the host's")
    if sha256_file(ro) != ro_sum:
        problems.append(f"{ro} changed although the guest had it read-only")

    m = next((re.match(r"rw_file=/f bytes=(\d+) sha256=([0-9a-f]{64})$", l) for l in blk
              if l.startswith("rw_file=")), None)
    if not m:
        problems.append("no 'BLK rw_file=' line: the guest did not write the writable disk")
    else:
        out = os.path.join(d, "f.dumped")
        try:
            debugfs_dump(rw, "/f", out)
            size, got = os.path.getsize(out), sha256_file(out)
            say(f"host: debugfs dump /f from {rw}: {size} bytes, sha256 {got}")
            if (size, got) != (int(m.group(1)), m.group(2)):
                problems.append(f"/f in {rw} is {size} bytes {got}; "
                                f"the guest wrote {m.group(1)} bytes {m.group(2)}")
        except Fail as e:
            problems.append(str(e))
        fsck = subprocess.run([host_tool("e2fsck", "e2fsprogs"), "-fn", rw],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if fsck.returncode != 0:
            problems.append(f"e2fsck -fn {rw} exited {fsck.returncode}: "
                            + " / ".join(fsck.stdout.strip().splitlines()[-3:]))
        else:
            say(f"host: e2fsck -fn {rw}: clean")
    if problems:
        tail(run)
    return report(problems, f"{mode.label('blk')}: read-only ext4 root and a writable ext4 disk")


# --------------------------------------------------------------------------
# linux-rng

def test_rng(args, mode):
    mode.require_host()
    img = Images(args)
    img.build_initramfs()
    problems = []
    for present in (True, False):
        g = Guest("rng")
        g.rng = present
        g.params.append("rng=virtio" if present else "rng=none")
        run = run_vm(mode.argv(g, img), mode.timeout(),
                     mode.log(img, "rng" if present else "rng-none"))
        p = check_exit(run, "rng", mode.timeout())
        rng = guest_lines(run, "RNG")
        for l in rng:
            say("  | RNG " + l)
        cur = next((re.match(r"current=(\S+) available=.* devices=(\d+)$", l) for l in rng
                    if l.startswith("current=")), None)
        if not cur:
            p.append("no 'RNG current=' line")
        elif present:
            if not cur.group(1).startswith("virtio_rng") or cur.group(2) != "1":
                p.append(f"rng_current is {cur.group(1)} with {cur.group(2)} virtio-rng devices; "
                         "expected virtio_rng and 1")
            stats = next((dict(re.findall(r"(\w+)=(\w+)", l)) for l in rng
                          if l.startswith("bytes=")), {})
            if stats.get("bytes") != "65536" or stats.get("distinct_blocks") != "16":
                p.append(f"64 KiB from /dev/hwrng: {stats or 'no RNG bytes= line'}")
        elif cur.group(1).startswith("virtio_rng") or cur.group(2) != "0":
            p.append(f"without the device: rng_current {cur.group(1)}, {cur.group(2)} devices")
        if p:
            tail(run)
        problems += [("with" if present else "without") + " virtio-rng: " + x for x in p]
    return report(problems, f"{mode.label('rng')}: /dev/hwrng is virtio-rng and random; "
                  "absent with --no-rng")


# --------------------------------------------------------------------------
# linux-net

NET_HOST, NET_GUEST, NET_PREFIX = "10.0.2.1", "10.0.2.15", 24
NET_TX_PORT, NET_RX_PORT = 5001, 5002
NET_BYTES = 16 * MiB
NET_MAC = "52:54:00:4c:56:4d"       # --mac (net-hostip)
NET_QEMU_MAC = "52:54:00:4c:56:51"  # the NIC's MAC for qemu-tcg net (vmm-run picks its own)
TAP_NAME = "vmmtap0"

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
CLONE_NEWNET = 0x40000000


def setns_net(fd):
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def ip(*a):
    r = subprocess.run(["ip"] + list(a), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        raise Fail(f"ip {' '.join(a)}: {r.stdout.strip()}")
    return r.stdout


def require_netns():
    if os.geteuid() != 0:
        skip("skipped: the network test needs root (a network namespace and a tap device)")
    if not shutil.which("ip"):
        skip("skipped: the network test needs ip (iproute2) for `ip netns`")
    r = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        skip(f"skipped: `ip netns` does not work on this host: {r.stdout.strip()}")
    if not os.path.exists("/dev/net/tun"):
        skip("skipped: /dev/net/tun is missing (no tun/tap support)")


class NetNamespace:
    """A fresh network namespace that this process enters: the taps, the
    VMM, the host's sockets and pings all live in it, and nothing leaves it."""

    def __enter__(self):
        self.name = f"libvmm-test-{os.getpid()}"
        ip("netns", "add", self.name)
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            setns_net(fd)
        finally:
            os.close(fd)
        ip("link", "set", "lo", "up")
        say(f"network namespace {self.name}")
        return self

    def __exit__(self, *exc):
        setns_net(self.home)
        os.close(self.home)
        subprocess.run(["ip", "netns", "del", self.name])
        return False


def open_tap(name):
    """A tap with IFF_NO_PI and IFF_VNET_HDR, as vmm-run --tap-fd expects."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(),
                                               IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except OSError:
        os.close(fd)
        raise
    return fd


class Console:
    """A VM whose console the driver reads line by line and writes to."""

    def __init__(self, argv, timeout, log_path, pass_fds=()):
        say("$ " + " ".join(_quote(a) for a in argv))
        self.argv, self.timeout, self.log_path = argv, timeout, log_path
        self.t0 = time.monotonic()
        self.deadline = self.t0 + timeout
        self.lines = queue.Queue()
        self.chunks = []
        self.err = open(log_path + ".err", "wb")
        try:
            self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self.err, start_new_session=True, pass_fds=pass_fds)
        except OSError as e:
            self.err.close()
            raise Fail(f"cannot start {argv[0]}: {e}")
        self.timed_out = False
        self.killer = threading.Timer(timeout, self._kill)
        self.killer.start()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _kill(self):
        self.timed_out = True
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _read(self):
        partial = b""
        with open(self.log_path + ".out", "wb") as log:
            while True:
                b = os.read(self.p.stdout.fileno(), 65536)
                if not b:
                    break
                log.write(b)
                log.flush()
                self.chunks.append(b)
                partial += b
                *done, partial = partial.split(b"\n")
                if len(partial) > MiB:  # a guest that never ends its line
                    done.append(partial)
                    partial = b""
                for l in done:
                    self.lines.put(l.decode("utf-8", "replace").replace("\r", ""))
        if partial:
            self.lines.put(partial.decode("utf-8", "replace").replace("\r", ""))
        self.lines.put(None)

    def remaining(self):
        return max(0.0, self.deadline - time.monotonic())

    def expect(self, pattern):
        """The next console line matching pattern; Fail if the guest ends first."""
        rx = re.compile(pattern)
        while True:
            try:
                line = self.lines.get(timeout=self.remaining() + 5)
            except queue.Empty:
                line = None
            if line is None:
                self.lines.put(None)
                raise Fail(f"the console ended before a line matching {pattern!r}")
            m = rx.search(line)
            if m:
                return m
            # The guest's "net: FAIL:" lines may be followed by more of the
            # dialogue; its end is the LINUX-TEST line.
            if re.search(r"LINUX-TEST \S+ (PASS|FAIL)", line):
                self.lines.put(None)
                raise Fail(f"waiting for {pattern!r}, the guest said: {line.strip()}")

    def send(self, line):
        say(f"host -> guest: {line}")
        try:
            self.p.stdin.write(line.encode() + b"\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            raise Fail("the VM's console input is closed")

    def finish(self):
        try:
            self.p.wait(timeout=self.remaining() + 5)
        except subprocess.TimeoutExpired:
            self._kill()
            self.p.wait()
        self.killer.cancel()
        self.reader.join()
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        self.err.close()
        seconds = time.monotonic() - self.t0
        out = b"".join(self.chunks).decode("utf-8", "replace")
        with open(self.log_path + ".err", "rb") as f:
            err = f.read().decode("utf-8", "replace")
        rc = None if self.timed_out else self.p.returncode
        say(f"exit: {'timeout after %d s (killed)' % self.timeout if self.timed_out else rc}, "
            f"{seconds:.1f} s, console log {self.log_path}.out ({len(out)} bytes)")
        return Run(self.argv, rc, out, err, seconds, self.timed_out)


class Upload(threading.Thread):
    """Receive one connection's bytes; keep their count and sha256."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock, self.result, self.error = sock, None, None

    def run(self):
        try:
            c, _ = self.sock.accept()
            with c:
                h, n = hashlib.sha256(), 0
                while True:
                    b = c.recv(1 << 16)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
            self.result = (n, h.hexdigest())
        except OSError as e:
            self.error = str(e)


class Download(threading.Thread):
    """Send data to one connection, then close it."""

    def __init__(self, sock, data):
        super().__init__(daemon=True)
        self.sock, self.data, self.error, self.sent = sock, data, None, False

    def run(self):
        try:
            c, _ = self.sock.accept()
            with c:
                c.sendall(self.data)
                c.shutdown(socket.SHUT_WR)
            self.sent = True
        except OSError as e:
            self.error = str(e)


def listener(port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))  # inside the test's own namespace
    s.listen(1)
    s.settimeout(timeout)
    return s


def net_dialogue(con, data):
    """The host's half of net.sh. Returns a list of problems."""
    problems = []
    busybox = host_tool("busybox", "busybox-static")
    con.expect(r"NET WAIT host-ping")
    # The host side of the tap has its address (set by the driver, or by
    # vmm-run for --host_ip/--netmask).
    addrs = ip("-o", "-4", "addr", "show")
    m = re.search(rf"^\d+: (\S+)\s+inet {re.escape(NET_HOST)}/{NET_PREFIX} ", addrs, re.M)
    if m:
        say(f"host: {NET_HOST}/{NET_PREFIX} on {m.group(1)}")
    else:
        problems.append(f"no interface in the namespace has {NET_HOST}/{NET_PREFIX}: "
                        + " | ".join(addrs.strip().splitlines()))
    r = subprocess.run([busybox, "ping", "-c", "3", "-w", "30", NET_GUEST], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    summary = [l for l in r.stdout.splitlines() if "packets" in l]
    say(f"host: ping {NET_GUEST}: {summary[0] if summary else r.stdout.strip()}")
    if r.returncode != 0:
        problems.append(f"the host cannot ping the guest: {r.stdout.strip()}")
    con.send("HOST ping ok" if r.returncode == 0 else "HOST ping fail")

    m = con.expect(r"NET tx bytes=(\d+) sha256=([0-9a-f]{64})")
    tx = (int(m.group(1)), m.group(2))
    con.expect(r"NET WAIT host-received")
    con.upload.join(con.remaining())
    got = con.upload.result
    say(f"host: upload from the guest: {got[0] if got else '?'} bytes, sha256 "
        f"{got[1] if got else con.upload.error}")
    if got != tx:
        problems.append(f"upload: the guest sent {tx[0]} bytes {tx[1]}, the host received "
                        + (f"{got[0]} bytes {got[1]}" if got else f"nothing ({con.upload.error})"))
    con.send(f"HOST received {got[0]} {got[1]}" if got else "HOST received nothing")

    con.expect(r"NET WAIT host-send")
    want = (len(data), hashlib.sha256(data).hexdigest())
    con.send(f"HOST sending {want[0]} {want[1]}")
    m = con.expect(r"NET rx bytes=(\d+) sha256=([0-9a-f]{64})")
    rx = (int(m.group(1)), m.group(2))
    say(f"host: download to the guest: sent {want[0]} bytes {want[1]}; "
        f"the guest got {rx[0]} bytes {rx[1]}")
    if rx != want:
        problems.append(f"download: the host sent {want[0]} bytes {want[1]}, "
                        f"the guest received {rx[0]} bytes {rx[1]}")
    return problems


def test_net(args, mode, create_tap):
    """create_tap False: the driver opens the tap and hands its fd over
    (--tap-fd). True: the VMM creates it (--host_ip/--netmask/--mac)."""
    mode.require_host()
    require_netns()
    host_tool("busybox", "busybox-static")  # the host's ping
    name = "net-hostip" if create_tap else "net"
    img = Images(args)
    img.build_initramfs()  # before entering the namespace: it may download
    data = os.urandom(NET_BYTES)
    problems = []
    run = None
    with NetNamespace():
        g = Guest("net")
        g.params += [f"net_ip={NET_GUEST}/{NET_PREFIX}", f"net_host={NET_HOST}",
                     f"net_tx_port={NET_TX_PORT}", f"net_rx_port={NET_RX_PORT}",
                     f"net_bytes={NET_BYTES}"]
        tap_fd = None
        pass_fds = ()
        if create_tap:
            g.tap_create = (NET_HOST, NET_PREFIX, NET_MAC, TAP_NAME)
            g.params.append(f"net_mac={NET_MAC}")
            if mode.qemu:
                # QEMU attaches to an existing tap by name; vmm-run makes its own.
                ip("tuntap", "add", "dev", TAP_NAME, "mode", "tap", "vnet_hdr")
                ip("addr", "add", f"{NET_HOST}/{NET_PREFIX}", "dev", TAP_NAME)
                ip("link", "set", TAP_NAME, "up")
        else:
            tap_fd = open_tap(TAP_NAME)
            ip("addr", "add", f"{NET_HOST}/{NET_PREFIX}", "dev", TAP_NAME)
            ip("link", "set", TAP_NAME, "up")
            g.tap_fd = tap_fd
            pass_fds = (tap_fd,)
            if mode.qemu:
                g.mac = NET_QEMU_MAC
                g.params.append(f"net_mac={NET_QEMU_MAC}")
        timeout = mode.timeout()
        up, down = listener(NET_TX_PORT, timeout), listener(NET_RX_PORT, timeout)
        try:
            con = Console(mode.argv(g, img), timeout, mode.log(img, name), pass_fds)
            if tap_fd is not None:
                os.close(tap_fd)  # the VMM has its own copy
                tap_fd = None
            con.upload = Upload(up)
            con.upload.start()
            Download(down, data).start()
            try:
                problems += net_dialogue(con, data)
            except Fail as e:
                problems.append(str(e))
                try:
                    con.send("HOST abort")  # the guest stops waiting for us
                except Fail:
                    pass
            run = con.finish()
        finally:
            up.close()
            down.close()
            if tap_fd is not None:
                os.close(tap_fd)
    if run is None:
        return report(problems or ["the VM did not start"], mode.label(name))
    for l in guest_lines(run, "NET"):
        if not l.startswith("WAIT"):
            say("  | NET " + l)
    problems += check_exit(run, "net", timeout)
    if create_tap:
        m = next((re.search(r"mac=(\S+)", l) for l in guest_lines(run, "NET")
                  if l.startswith("iface=")), None)
        if not m or m.group(1) != NET_MAC:
            problems.append(f"the guest's eth0 has MAC {m.group(1) if m else '?'}, "
                            f"expected {NET_MAC} (--mac)")
    if problems:
        tail(run)
    how = ("tap created by the VMM (--host_ip/--netmask/--mac)" if create_tap
           else "tap handed over by fd (--tap-fd)")
    return report(problems, f"{mode.label(name)}: {how}; pings both ways, "
                  f"{NET_BYTES // MiB} MiB each way by TCP")


# --------------------------------------------------------------------------
# QEMU TCG (validation aid)

QEMU_TESTS = ("boot", "shell", "blk", "rng", "net", "net-hostip")


def cmd_qemu_tcg(args):
    """Validation aid (not a registered test): the same guests under QEMU's TCG."""
    test = args.guest_test
    mode = Mode(args, "qemu")
    if test == "blk":
        return test_blk(args, mode)
    if test == "rng":
        return test_rng(args, mode)
    if test in ("net", "net-hostip"):
        return test_net(args, mode, create_tap=test == "net-hostip")
    if test not in ("boot", "shell"):
        raise Fail(f"qemu-tcg: unknown guest test {test!r} (one of {', '.join(QEMU_TESTS)})")
    img = Images(args)
    img.build_initramfs()
    g = Guest(test, args.cpus, args.mem)
    g.params = [f"test={test}"] + args.param
    argv = g.qemu_argv(img)
    if test == "shell":
        os.execvp(argv[0], argv)
    run = run_vm(argv, mode.timeout(), mode.log(img, test))
    for l in run.lines:
        if l.startswith(("BOOT ", "LINUX-TEST", "init:")):
            say("  | " + l)
    ok = not run.timed_out and run.rc == 0 and f"LINUX-TEST {test} PASS" in run.out
    if not ok:
        tail(run)
    return 0 if ok else 1


TESTS = {
    "early-boot": test_early_boot,
    "boot": test_boot,
    "blk": lambda args: test_blk(args, Mode(args, "vmm")),
    "rng": lambda args: test_rng(args, Mode(args, "vmm")),
    "net": lambda args: test_net(args, Mode(args, "vmm"), create_tap=False),
    "net-hostip": lambda args: test_net(args, Mode(args, "vmm"), create_tap=True),
    "prepare": cmd_prepare,
    "shell": cmd_shell,
    "qemu-tcg": cmd_qemu_tcg,
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", default="vmm-run", help="the vmm-run binary")
    ap.add_argument("--source-root", default=os.path.join(here, "..", ".."))
    ap.add_argument("--work", default=os.path.join(os.getcwd(), "linux-work"),
                    help="where the kernel, the initramfs and the console logs go")
    ap.add_argument("-c", "--cpus", type=int, default=2, help="shell/qemu-tcg only")
    ap.add_argument("-m", "--mem", type=int, default=512, help="shell/qemu-tcg only")
    ap.add_argument("-p", "--param", action="append", default=[], help="shell/qemu-tcg only")
    ap.add_argument("command", choices=sorted(TESTS))
    ap.add_argument("guest_test", nargs="?", default="boot",
                    help="qemu-tcg only: " + ", ".join(QEMU_TESTS))
    args = ap.parse_args()
    # vmm-run reads its seccomp policies from the installed location unless
    # told otherwise: use the source tree's, which match the binary tested.
    policies = os.path.join(os.path.abspath(args.source_root), "policies")
    if os.path.isdir(policies):
        os.environ.setdefault("LIBVMM_SECCOMP_POLICY_DIR", policies)
    try:
        return TESTS[args.command](args)
    except Fail as e:
        say(f"FAIL: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
