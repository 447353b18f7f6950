#!/usr/bin/env python3
"""Linux guest tests for libvmm: Debian's cloud kernel plus a busybox initramfs.

    linux_test.py [--vmm PATH] [--source-root DIR] [--work DIR] COMMAND

COMMAND is one of
    early-boot   boot the bare kernel with earlyprintk and check the e820 map,
                 the ACPI tables and the CPU count it prints
    boot         boot to the initramfs's `boot` test and check what it reports
    prepare      only fetch the kernel and build the initramfs
    shell        interactive: boot to the initramfs shell under vmm-run
    qemu-tcg     validation aid: boot kernel + initramfs under QEMU's emulator
                 (`qemu-tcg boot` or `qemu-tcg shell`)

Exit status follows meson: 0 pass, 1 fail, 77 skip (with the reason on stdout).
Every VM runs under a timeout; a VM that outlives it is killed and the test fails.

Environment:
    LIBVMM_LINUX_CACHE   where the kernel is unpacked (default WORK/debian-kernel)
    LIBVMM_HOST_KVM      force the host classification: none, pvm or hw
    LIBVMM_LINUX_TIMEOUT seconds allowed for one VM run (default 120)
"""

import argparse
import fcntl
import os
import re
import signal
import subprocess
import sys
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
    problems = []
    if run.timed_out:
        problems.append(f"vmm-run did not exit within {vm_timeout()} s (hang)")
    elif run.rc != 0:
        last = run.err.strip().splitlines()
        problems.append(f"vmm-run exited {run.rc}" + (f": {last[-1]}" if last else ""))
    text = "\n".join(run.lines)
    if "LINUX-TEST boot PASS" not in text:
        m = re.search(r"LINUX-TEST boot (\w+)", text)
        problems.append(f"the guest reported {m.group(0)!r}" if m else "no 'LINUX-TEST boot' line")
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


def cmd_qemu_tcg(args):
    """Validation aid (not a registered test): the same guest under QEMU's TCG."""
    img = Images(args)
    initrd = img.build_initramfs()
    test = args.guest_test
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-m", str(args.mem),
            "-smp", str(args.cpus), "-kernel", img.kernel, "-initrd", initrd,
            "-append", " ".join(["console=ttyS0 reboot=k panic=-1", f"test={test}"] + args.param),
            "-nographic", "-no-reboot"]
    if test == "shell":
        os.execvp(argv[0], argv)
    run = run_vm(argv, 600, os.path.join(img.work, f"qemu-tcg-{test}"))
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
    ap.add_argument("guest_test", nargs="?", default="boot", help="qemu-tcg only: boot or shell")
    args = ap.parse_args()
    try:
        return TESTS[args.command](args)
    except Fail as e:
        say(f"FAIL: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
