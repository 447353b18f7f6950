#!/usr/bin/env python3
"""Integration tests for vmm-run.

Usage: run_vmm.py CASE VMM_RUN GUEST_BZIMAGE GUEST_ELF

Cases that only exercise argument and file checking run on any host: vmm-run
checks the kernel, initrd and command line before it opens /dev/kvm. Cases
that boot the test guest need /dev/kvm and exit 77 (skipped) without it.
Every VM runs under a timeout; a hang is a failure.

LIBVMM_TEST_SANDBOX=off runs every `vmm-run run` of a case with
--disable-sandbox (meson registers each KVM case in both modes).
"""

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import zlib

SKIP = 77
TIMEOUT = 120

vmm, bzimage, elf = sys.argv[2], sys.argv[3], sys.argv[4]
tmp = tempfile.mkdtemp(prefix="vmm-it-")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


NO_SANDBOX = os.environ.get("LIBVMM_TEST_SANDBOX") == "off"


def vmm_argv(args):
    """[vmm] + args, with --disable-sandbox after "run" when the case runs without the sandbox."""
    args = list(args)
    if NO_SANDBOX and args and args[0] == "run" and "--disable-sandbox" not in args:
        args.insert(1, "--disable-sandbox")
    return [vmm] + args


def run(args, stdin=b"", timeout=TIMEOUT, prefix=()):
    """Run vmm-run with args; returns (status, stdout, stderr) as text."""
    cmd = list(prefix) + vmm_argv(args)
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        print(out)
        failures.append("timed out: %s" % " ".join(cmd))
        return None, out, ""
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    return p.returncode, out, err


def expect_error(args, needle, prefix=(), what=None):
    """vmm-run must fail with status 1 and one stderr line containing needle."""
    what = what or " ".join(args)
    st, out, err = run(args, prefix=prefix)
    lines = err.strip("\n").split("\n") if err else []
    print("[%s] -> %s: %s" % (what, st, err.strip()))
    check(st == 1, "%s: exit status %s, expected 1" % (what, st))
    check(len(lines) == 1, "%s: expected one line on stderr, got %r" % (what, err))
    check(needle in err, "%s: stderr %r lacks %r" % (what, err, needle))
    check(out == "", "%s: unexpected stdout %r" % (what, out))


def write(name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def need_kvm():
    if not os.path.exists("/dev/kvm"):
        print("skipped: /dev/kvm is not present on this host")
        sys.exit(SKIP)


def guest_lines(out):
    return [l.rstrip("\r") for l in out.split("\n") if l.startswith("GUEST ")]


def field(lines, key):
    """Value of 'key=...' in the first GUEST line that has it."""
    for l in lines:
        m = re.search(r"\b%s=(\S*)" % re.escape(key), l)
        if m:
            return m.group(1)
    return None


def boot(kernel, args=(), stdin=b"", params=""):
    a = list(args)
    if params:
        a += ["-p", params]
    st, out, err = run(["run"] + a + [kernel], stdin=stdin)
    print(out)
    if err:
        print("stderr:", err)
    return st, guest_lines(out), err


def check_pass(lines, what):
    check("GUEST result pass" in lines, "%s: guest did not report 'GUEST result pass'" % what)
    for l in lines:
        check(not l.startswith("GUEST FAIL"), "%s: %s" % (what, l))


# ---- cases that run on any host ----


def case_cli():
    st, out, err = run([])
    check(st == 1 and "Usage: vmm-run" in err, "no arguments: usage on stderr, status 1")
    st, out, err = run(["--help"])
    check(st == 0 and "run [OPTIONS] KERNEL" in out, "--help: usage on stdout, status 0")
    st, out, err = run(["run", "--help"])
    for opt in ("--params", "--cpus", "--mem", "--initrd", "--help"):
        check(st == 0 and opt in out, "run --help mentions %s" % opt)
    expect_error(["frobnicate"], "unknown command 'frobnicate'")
    expect_error(["run", "--bogus", bzimage], "unknown option '--bogus'")
    expect_error(["run"], "no kernel given")
    expect_error(["run", "-m", "0", bzimage], "-m/--mem: 0 is too small")
    expect_error(["run", "-c", "0", bzimage], "-c/--cpus: 0 is too small")
    expect_error(["run", "-c", "100000", bzimage], "-c/--cpus: 100000 is too large")
    expect_error(["run", "-m", "99999999999999", bzimage], "-m/--mem: 99999999999999 is too large")
    expect_error(["run", "-m", "lots", bzimage], "'lots' is not a number")
    st, out, err = run(["version"])
    check(st == 0 and out.startswith("vmm-run "), "version prints the version")


def case_bad_files():
    with open(elf, "rb") as f:
        elf_data = f.read()
    with open(bzimage, "rb") as f:
        bz_data = f.read()
    missing = os.path.join(tmp, "no-such-kernel")
    expect_error(["run", missing], "No such file or directory", what="missing kernel")
    check(missing in run(["run", missing])[2], "missing kernel: message names the path")
    expect_error(["run", tmp], "is a directory", what="directory as kernel")
    expect_error(["run", write("empty", b"")], "is empty", what="empty kernel")
    expect_error(["run", write("text", b"#!/bin/sh\necho this is not a kernel\n" * 20)],
                 "not an ELF64 vmlinux or bzImage", what="text file as kernel")
    # The end of the last loadable byte: cutting there truncates a segment.
    phoff, = struct.unpack_from("<Q", elf_data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf_data, 0x36)
    seg_end = 0
    for i in range(phnum):
        ptype, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", elf_data, phoff + i * phentsize)
        if ptype == 1:
            seg_end = max(seg_end, off + filesz)
    for cut in (16, 64, 200, seg_end - 1):
        expect_error(["run", write("elf-%d" % cut, elf_data[:cut])], "kernel",
                     what="ELF truncated to %d bytes" % cut)
    bad = bytearray(bz_data)
    bad[0x202:0x206] = b"XXXX"
    expect_error(["run", write("bz-magic", bytes(bad))], "not an ELF64 vmlinux or bzImage",
                 what="bzImage with a broken HdrS magic")
    bad = bytearray(bz_data[:64 * 1024])
    bad[0x1f1] = 0xff  # setup_sects (255 + 1 sectors = 128 KiB) past the end of the file
    expect_error(["run", write("bz-setup", bytes(bad))], "setup", what="bzImage setup_sects past EOF")
    bad = bytearray(bz_data)
    bad[0x236] &= 0xfe  # clear XLF_KERNEL_64
    expect_error(["run", write("bz-no64", bytes(bad))], "64-bit", what="bzImage without a 64-bit entry")
    expect_error(["run", write("bz-trunc", bz_data[:0x300])], "kernel", what="bzImage truncated")
    big = write("big-initrd", b"\0" * (20 << 20))
    expect_error(["run", "-m", "16", "-i", big, bzimage], "initrd",
                 what="initrd larger than guest memory")
    expect_error(["run", "-i", os.path.join(tmp, "none"), bzimage], "No such file",
                 what="missing initrd")
    expect_error(["run", "-i", tmp, bzimage], "is a directory", what="directory as initrd")
    expect_error(["run", "-p", "x" * 3000, bzimage], "command line",
                 what="command line longer than the kernel accepts")
    expect_error(["run", "-m", "1000000", bzimage], "more than this host",
                 what="more memory than the host has")
    # Disks are checked before /dev/kvm is needed.
    expect_error(["run", "-d", missing, bzimage], "No such file or directory", what="missing disk")
    expect_error(["run", "--rwdisk", tmp, bzimage], "is a directory", what="directory as disk")
    expect_error(["run", "-r", write("r1", b"\0" * 4096), "-r", write("r2", b"\0" * 4096), bzimage],
                 "a root disk was already given", what="-r given twice")
    img = write("locked.img", b"\0" * (1 << 20))
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.fcntl(fd, fcntl.F_OFD_SETLK, __import__('struct').pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0)); "
                               "print('locked', flush=True); sys.stdin.read()", img],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        check(holder.stdout.readline().strip() == b"locked", "the lock holder took its lock")
        expect_error(["run", "--rwdisk", img, bzimage], "in use by another process",
                     what="image locked by another process (writable)")
        expect_error(["run", "-d", img, bzimage], "in use by another process",
                     what="image locked by another process (read-only)")
    finally:
        holder.stdin.close()
        holder.wait()
    before = open(img, "rb").read()
    st, out, err = run(["run", "-d", img, bzimage])
    check("in use" not in err, "the lock is gone with its holder: %r" % err)
    check(open(img, "rb").read() == before, "a read-only disk is not modified")


def case_no_kvm():
    """A missing or inaccessible /dev/kvm, simulated in a private mount namespace."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("skipped: needs root and unshare to hide /dev/kvm")
        sys.exit(SKIP)
    # No devices: this case is about /dev/kvm alone (and an empty /dev).
    script = 'mount -t tmpfs none /dev && exec "$@"'
    expect_error(["run", "--no-rng", "--no-balloon", bzimage], "KVM is not available",
                 prefix=["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"],
                 what="no /dev/kvm")
    script = ('mount -t tmpfs none /dev && mknod -m 0600 /dev/kvm c 10 232 && '
              'exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"')
    expect_error(["run", "--no-rng", "--no-balloon", bzimage], "cannot open /dev/kvm: Permission denied",
                 prefix=["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"],
                 what="/dev/kvm not accessible")


def case_control_cli():
    """Control subcommands and -s checks that need no running VM."""
    import socket
    missing = os.path.join(tmp, "nothing.sock")
    expect_error(["status", missing], missing, what="status of a socket that does not exist")
    expect_error(["stop"], "stop needs at least one control socket path")
    expect_error(["balloon"], "balloon needs a SIZE")
    expect_error(["balloon", "12x", missing], "'12x' is not a size")
    # A live socket (some other VMM) is refused before the VM starts.
    live = os.path.join(tmp, "live.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(live)
    srv.listen(1)
    try:
        expect_error(["run", "-s", live, bzimage], "in use by a running VMM", what="-s on a live socket")
    finally:
        srv.close()
    # Now the socket file is stale: vmm-run replaces it (and then fails only for want of KVM).
    st, out, err = run(["run", "-s", live, bzimage])
    check("in use" not in err, "a stale socket is replaced: %r" % err)
    check(not os.path.exists(live), "the socket is removed when vmm-run exits")
    expect_error(["run", "-s", write("plain-file", b"x"), bzimage], "plain-file",
                 what="-s on a regular file")


def tun_fd(flags):
    """Open /dev/net/tun as a tap (IFF_TAP) or tun (IFF_TUN) device; returns the fd."""
    import fcntl
    fd = os.open("/dev/net/tun", os.O_RDWR)
    ifr = struct.pack("16sH22x", b"", flags | 0x1000)  # IFF_NO_PI
    fcntl.ioctl(fd, 0x400454CA, ifr)  # TUNSETIFF
    return fd


def case_net_cli():
    """--tap-fd and --host_ip/--netmask/--mac checks; they need no KVM (root, in a private netns)."""
    expect_error(["run", "--tap-fd", "3", "--host_ip", "10.0.0.1", bzimage], "--tap-fd cannot be combined")
    expect_error(["run", "--host_ip", "10.0.0.1", "--netmask", "24", bzimage], "(missing --mac)")
    expect_error(["run", "--tap-fd", "57", bzimage], "not an open file descriptor", what="--tap-fd not open")
    if os.geteuid() != 0 or not shutil.which("unshare") or not os.path.exists("/dev/net/tun"):
        print("skipped: the tap cases need root, unshare and /dev/net/tun")
        sys.exit(SKIP)
    regular = os.open(write("not-a-tap", b"x"), os.O_RDONLY)
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for fd, needle, what in ((regular, "regular file", "--tap-fd on a regular file"),
                                 (sock.fileno(), "socket", "--tap-fd on a socket")):
            st, out, err = run_fds(["run", "--tap-fd", str(fd), bzimage], [fd])
            report_error(st, out, err, needle, what)
    finally:
        os.close(regular)
        sock.close()
    # Taps and tuns live in a network namespace of the test's own.
    script = r'''
import os, struct, fcntl, subprocess, sys
def tun(flags):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"", flags | 0x1000))
    return fd
vmm, kernel = sys.argv[1], sys.argv[2]
for flags, name in ((0x0001, "tun"), (0x0002, "tap")):
    fd = tun(flags)
    p = subprocess.run([vmm, "run", "--tap-fd", str(fd), kernel], pass_fds=[fd], capture_output=True, text=True)
    print(name, p.returncode, p.stderr.strip())
p = subprocess.run([vmm, "run", "--host_ip", "10.99.0.1", "--netmask", "255.255.255.0", "--mac", "52:54:00:00:00:01", kernel], capture_output=True, text=True)
print("create", p.returncode, p.stderr.strip())
p = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin", vmm, "run", "--host_ip", "10.99.0.1", "--netmask", "24", "--mac", "52:54:00:00:00:01", kernel], capture_output=True, text=True)
print("nocap", p.returncode, p.stderr.strip())
'''
    p = subprocess.run(["unshare", "-n", sys.executable, "-c", script, vmm, bzimage],
                       capture_output=True, text=True, timeout=TIMEOUT)
    print(p.stdout, p.stderr)
    res = {l.split(" ", 1)[0]: l.split(" ", 2)[1:] for l in p.stdout.splitlines() if l}
    check(res.get("tun", ["", ""])[0] == "1" and "tun (layer 3)" in res["tun"][1],
          "--tap-fd on a tun device is refused: %r" % res.get("tun"))
    kvm_msg = "KVM is not available"
    if not os.path.exists("/dev/kvm"):
        # The tap was accepted (or created); only the missing /dev/kvm stops the VM.
        check(res.get("tap", ["", ""])[0] == "1" and kvm_msg in res["tap"][1],
              "--tap-fd on a tap is accepted: %r" % res.get("tap"))
        check(res.get("create", ["", ""])[0] == "1" and kvm_msg in res["create"][1],
              "--host_ip/--netmask/--mac creates the tap: %r" % res.get("create"))
    check(res.get("nocap", ["", ""])[0] == "1" and "CAP_NET_ADMIN" in res["nocap"][1],
          "without CAP_NET_ADMIN the message says so: %r" % res.get("nocap"))


def run_fds(args, fds):
    p = subprocess.run(vmm_argv(args), capture_output=True, timeout=TIMEOUT, pass_fds=fds)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def report_error(st, out, err, needle, what):
    lines = err.strip("\n").split("\n") if err else []
    print("[%s] -> %s: %s" % (what, st, err.strip()))
    check(st == 1, "%s: exit status %s, expected 1" % (what, st))
    check(len(lines) == 1, "%s: expected one line on stderr, got %r" % (what, err))
    check(needle in err, "%s: stderr %r lacks %r" % (what, err, needle))


def case_sandbox_cli():
    """Policy problems are refused before the guest starts; no device process outlives vmm-run."""
    img = write("sbx.img", b"\0" * (1 << 20))
    expect_error(["run", "--rwdisk", img, "--seccomp-policy-dir", os.path.join(tmp, "nopolicies"), bzimage],
                 "cannot open policy", what="missing policy directory")
    bad = os.path.join(tmp, "badpolicies")
    src = os.environ.get("LIBVMM_SECCOMP_POLICY_DIR", "")
    shutil.copytree(src, bad)
    with open(os.path.join(bad, "virtio_rng.policy"), "a") as f:
        f.write("no_such_syscall_at_all\n")
    expect_error(["run", "--seccomp-policy-dir", bad, bzimage], "virtio_rng.policy line",
                 what="malformed policy")
    # Sandboxed devices are forked by vm_add_*(); when vmm-run ends (here: for want of KVM, or
    # after the guest), none of them may be left behind.
    p = subprocess.Popen([vmm, "run", "--rwdisk", img, bzimage], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.communicate(timeout=TIMEOUT)
    # The device processes are forks of vmm-run: same command line, which names the image.
    left = subprocess.run(["pgrep", "-f", img], capture_output=True, text=True).stdout.split()
    check(not left, "no device process left behind: %r" % left)
    st, out, err = run(["run", "--disable-sandbox", "--rwdisk", img, bzimage])
    check("policy" not in err, "--disable-sandbox needs no policies: %r" % err)


def qemu_img(*args):
    """Run qemu-img; returns the CompletedProcess (text)."""
    return subprocess.run(["qemu-img"] + list(args), capture_output=True, text=True)


def need_qemu_img():
    if not shutil.which("qemu-img"):
        print("skipped: qemu-img (Debian's qemu-utils) is not installed")
        sys.exit(SKIP)


def case_qcow2_cli():
    """vmm-run create_qcow2, checked by qemu-img; qcow2 disks are detected and accepted."""
    need_qemu_img()
    import json
    base = os.path.join(tmp, "base.qcow2")
    over = os.path.join(tmp, "over.qcow2")
    st, out, err = run(["create_qcow2", base, "3G", "--cluster-size", "256K"])
    check(st == 0, "create_qcow2: %s %r" % (st, err))
    info = json.loads(qemu_img("info", "--output=json", base).stdout)
    check(info.get("format") == "qcow2" and info.get("virtual-size") == 3 << 30 and info.get("cluster-size") == 256 << 10,
          "qemu-img info: %r" % info)
    st, out, err = run(["create_qcow2", over, "--backing", base])
    info = json.loads(qemu_img("info", "--output=json", over).stdout)
    check(st == 0 and info.get("backing-filename") == base and info.get("virtual-size") == 3 << 30,
          "overlay with a backing file: %r" % info)
    for img in (base, over):
        chk = qemu_img("check", img)
        check(chk.returncode == 0, "qemu-img check %s: %s" % (img, chk.stdout + chk.stderr))
    expect_error(["create_qcow2", base, "1G"], "already exists", what="create_qcow2 over an existing file")
    expect_error(["create_qcow2", os.path.join(tmp, "x.qcow2"), "1G", "--cluster-size", "3000"],
                 "not a power of two", what="bad cluster size")
    expect_error(["create_qcow2", os.path.join(tmp, "y.qcow2")], "usage", what="create_qcow2 without a size")
    # The disk layer accepts it (detected from the header); only KVM is missing here.
    st, out, err = run(["run", "--rwdisk", over, bzimage])
    check("qcow2" not in err and "disk" not in err, "a qcow2 overlay is accepted as a disk: %r" % err)
    bad = write("bad.qcow2", b"QFI\xfb" + b"\0\0\0\x03" + b"\xff" * 200)
    expect_error(["run", "-d", bad, bzimage], "bad.qcow2", what="corrupt qcow2 header")


# ---- cases that boot the test guest under KVM ----


def case_boot():
    need_kvm()
    for kernel, entry in ((bzimage, "64"), (elf, "64")):
        for mem in (64, 256, 4096):
            what = "%s -m %d" % (os.path.basename(kernel), mem)
            st, lines, err = boot(kernel, ["-m", str(mem)], params="guest.aps=0")
            check(st == 0, "%s: exit status %s (%s)" % (what, st, err.strip()))
            check(field(lines, "entry") == entry, "%s: entered through the 64-bit entry" % what)
            ram = int(field(lines, "ram_mib") or -1)
            # The EBDA/BIOS hole and, above 3 GiB, the MMIO hole are not RAM.
            check(mem - 2 <= ram <= mem, "%s: guest saw %d MiB of RAM" % (what, ram))
            check("GUEST exit poweroff" in lines, "%s: powered off" % what)
            check_pass(lines, what)


def case_smp():
    need_kvm()
    st, lines, err = boot(bzimage, ["-c", "4"])
    check(st == 0, "-c 4: exit status %s" % st)
    check(field(lines, "lapics") == "4", "-c 4: MADT lists 4 CPUs")
    m = [l for l in lines if l.startswith("GUEST cpus ")]
    check(m and "online=4" in m[0], "-c 4: all four CPUs came up: %r" % m)
    ids = sorted(int(field([l], "apic_id")) for l in lines if re.match(r"GUEST cpu \d+ ", l))
    check(ids == [1, 2, 3], "-c 4: APs report APIC ids 1..3, got %r" % ids)
    check_pass(lines, "-c 4")


def case_cmdline_initrd():
    need_kvm()
    data = os.urandom(700 * 1024 + 123)
    path = write("initrd", data)
    params = "guest.aps=0 hello=world path=/a/b,c quoted=\"x\""
    st, lines, err = boot(bzimage, ["-i", path], params=params)
    check(st == 0, "initrd: exit status %s" % st)
    cl = [l for l in lines if l.startswith("GUEST cmdline=")]
    check(cl and cl[0] == "GUEST cmdline=console=ttyS0 reboot=k panic=-1 " + params,
          "command line arrives intact: %r" % cl)
    check(field(lines, "size") == str(len(data)), "initrd size")
    check(field(lines, "crc32") == "%08x" % zlib.crc32(data), "initrd checksum")
    check_pass(lines, "initrd")


def case_exits():
    need_kvm()
    st, lines, err = boot(bzimage, params="guest.aps=0 guest.exit=reset")
    check(st == 0 and "GUEST exit reset" in lines, "i8042 reset ends vmm-run with 0 (%s)" % st)
    st, lines, err = boot(bzimage, params="guest.aps=0 guest.exit=triplefault")
    check(st == 1, "triple fault: exit status %s" % st)
    check("triple fault" in err and len(err.strip().split("\n")) == 1,
          "triple fault: one-line message %r" % err)


def case_console_input():
    need_kvm()
    msg = b"hello from the host 12345"
    st, lines, err = boot(bzimage, stdin=msg, params="guest.aps=0 guest.echo=%d" % len(msg))
    check(st == 0, "echo: exit status %s" % st)
    check("GUEST echo=" + msg.decode() in lines, "bytes on stdin reach the guest UART")


# ---- virtio-blk and virtio-rng through the test guest's drivers (KVM) ----

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "guest"))


def pattern():
    import pattern as p  # tests/guest/pattern.py: the guest's disk data pattern
    return p


def blk_line(lines, prefix):
    m = [l for l in lines if l.startswith(prefix)]
    return m[0] if m else ""


def case_blk_read():
    need_kvm()
    p = pattern()
    img = os.path.join(tmp, "read.img")
    p.write_image(img, 1234, 0, 4096)
    st, lines, err = boot(bzimage, ["-d", img], params="guest.aps=0 guest.blk.verify=0:0:4096:1234")
    check(st == 0, "blk read: exit status %s" % st)
    check(re.search(r"capacity=4096 ro=1", blk_line(lines, "GUEST blk 0 slot=")), "disk is read-only, 4096 sectors")
    check("GUEST blk verify disk=0 sectors=4096 ok" in lines, "known sectors read back")
    check_pass(lines, "blk read")


def case_blk_write():
    need_kvm()
    p = pattern()
    img = write("rw.img", b"")
    os.truncate(img, 64 << 20)
    sectors = (64 << 20) // 512
    st, lines, err = boot(bzimage, ["--rwdisk", img, "-m", "256"],
                          params="guest.aps=0 guest.blk.write=0:0:%d:77" % sectors)
    check(st == 0, "blk write: exit status %s" % st)
    check("GUEST blk write disk=0 sectors=%d status=ok" % sectors in lines, "64 MiB written")
    check("GUEST blk flush disk=0 status=ok" in lines, "flushed")
    bad = p.check(img, 77, 0, sectors)
    check(bad is None, "every byte on the host matches (first bad sector %s)" % bad)


def case_blk_readonly():
    need_kvm()
    p = pattern()
    img = os.path.join(tmp, "ro.img")
    p.write_image(img, 5, 0, 2048)
    before = open(img, "rb").read()
    st, lines, err = boot(bzimage, ["-d", img], params="guest.aps=0 guest.blk.rotest=0")
    check(st == 0, "rotest: exit status %s" % st)
    check("GUEST blk rotest disk=0 status=ioerr" in lines, "a write to a -d disk fails with IOERR")
    check(open(img, "rb").read() == before, "the read-only image is unchanged")


def case_blk_sigkill():
    """After the guest's flush completes, SIGKILL of vmm-run loses nothing."""
    need_kvm()
    p = pattern()
    img = write("kill.img", b"")
    sectors = 32768
    os.truncate(img, sectors * 512)
    proc = subprocess.Popen(vmm_argv(["run", "--rwdisk", img, "-p",
                             "guest.aps=0 guest.blk.write=0:0:%d:99 guest.exit=halt" % sectors,
                             bzimage]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    flushed = False
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line == "GUEST blk flush disk=0 status=ok":
                flushed = True
                break
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
    check(flushed, "the guest's flush completed")
    check(p.check(img, 99, 0, sectors) is None, "data flushed before SIGKILL is all there")


def case_blk_qcow2_sigkill():
    """SIGKILL of vmm-run at random moments while the guest writes to a qcow2 disk, ten times:
    qemu-img check never finds corruption (leaked clusters at most), and data whose flush the
    guest saw complete is there."""
    need_kvm()
    need_qemu_img()
    import random
    p = pattern()
    rng = random.Random(7)
    sectors = (32 << 20) // 512
    img = os.path.join(tmp, "qkill.qcow2")
    r = qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", img, str(64 << 20))
    check(r.returncode == 0, "qemu-img create: %s" % r.stderr)
    for i in range(10):
        first = rng.randrange(0, (64 << 20) // 512 - sectors)
        seed = 100 + i
        proc = subprocess.Popen(vmm_argv(["run", "--rwdisk", img, "-p",
                                 "guest.aps=0 guest.blk.write=0:%d:%d:%d guest.exit=halt" % (first, sectors, seed),
                                 bzimage]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        flushed = False
        # The kill lands at a random point of the guest's writes: the stimulus of this test.
        timer = threading.Timer(rng.uniform(0.05, 2.0), proc.kill)
        try:
            for raw in proc.stdout:
                if raw.startswith(b"GUEST blk 0 slot="):
                    timer.start()
                if raw.rstrip() == b"GUEST blk flush disk=0 status=ok":
                    flushed = True
                    proc.kill()
                    break
        finally:
            timer.cancel()
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        r = qemu_img("check", img)
        # 0: clean; 3: leaked clusters only. 2 means corruption.
        check(r.returncode in (0, 3), "kill %d: qemu-img check exit %d: %s" % (i, r.returncode, r.stdout + r.stderr))
        if flushed:
            out = os.path.join(tmp, "qkill.raw")
            r = qemu_img("convert", "-f", "qcow2", "-O", "raw", img, out)
            check(r.returncode == 0, "qemu-img convert: %s" % r.stderr)
            bad = p.check(out, seed, first, sectors)
            check(bad is None, "kill %d: data flushed before the kill is there (first bad %s)" % (i, bad))
            os.unlink(out)
        print("kill %d: %s, qemu-img check exit %d" % (i, "after the flush" if flushed else "during the writes",
                                                       r.returncode))


def device_pids(pid):
    """The direct children of process pid (its device processes)."""
    kids = []
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return kids


def case_sandbox_device_killed():
    """Killing a device process stops the VM: vmm-run exits 1 with one line naming the device and
    the signal, and leaves no process behind."""
    need_kvm()
    if NO_SANDBOX:
        print("skipped: no device processes with --disable-sandbox")
        sys.exit(SKIP)
    proc = boot_bg(["--no-balloon", "-p", "guest.aps=0 guest.checks=min guest.run=forever", bzimage])
    lines = []
    try:
        check(wait_line(proc, "GUEST tick 1", lines) is not None, "the guest ticks")
        kids = device_pids(proc.pid)
        check(len(kids) == 1, "one device process (virtio-rng): %r" % kids)
        # With a pid namespace the device runs under a waiter: both must go.
        family = kids + [g for k in kids for g in device_pids(k)]
        if kids:
            os.kill(kids[0], signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode(errors="replace")
        print("stderr:", err)
        check(proc.returncode == 1, "exit status 1, got %s" % proc.returncode)
        check(len(err.strip().split("\n")) == 1, "one line on stderr: %r" % err)
        check(re.search(r"device virtio-rng \(pid \d+\) died: killed by signal SIGKILL", err),
              "the message names the device and the signal: %r" % err)
        for k in family:
            check(not os.path.exists("/proc/%d" % k), "device process %d is gone" % k)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def case_blk_disks():
    need_kvm()
    a = write("a.img", b"\0" * (1 << 20))
    b = write("b.img", b"\0" * (3 << 20))
    root = write("root.img", b"\0" * (2 << 20))
    st, lines, err = boot(bzimage, ["-d", a, "--rwdisk", b, "-r", root],
                          params="guest.aps=0 guest.blk.id=0 guest.blk.id=1 guest.blk.id=2")
    check(st == 0, "disks: exit status %s" % st)
    check("capacity=4096 ro=1" in blk_line(lines, "GUEST blk 0 slot="), "-r disk is vda")
    check("capacity=2048 ro=1" in blk_line(lines, "GUEST blk 1 slot="), "-d disk is vdb")
    check("capacity=6144 ro=0" in blk_line(lines, "GUEST blk 2 slot="), "--rwdisk is vdc")
    for i, name in enumerate(("vda", "vdb", "vdc")):
        check("GUEST blk id disk=%d id=%s" % (i, name) in lines, "disk %d id is %s" % (i, name))
    cl = blk_line(lines, "GUEST cmdline=")
    check(" root=/dev/vda ro" in cl, "the command line names the root disk: %r" % cl)


def case_blk_qcow2_read():
    """The guest reads the pattern through a qcow2 image made by qemu-img from the raw one."""
    need_kvm()
    need_qemu_img()
    p = pattern()
    raw = os.path.join(tmp, "qread.raw")
    img = os.path.join(tmp, "qread.qcow2")
    p.write_image(raw, 1234, 0, 4096)
    r = qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, img)
    check(r.returncode == 0, "qemu-img convert -O qcow2: %s" % r.stderr)
    st, lines, err = boot(bzimage, ["-d", img], params="guest.aps=0 guest.blk.verify=0:0:4096:1234")
    check(st == 0, "blk qcow2 read: exit status %s (%s)" % (st, err.strip()))
    check(re.search(r"capacity=4096 ro=1", blk_line(lines, "GUEST blk 0 slot=")),
          "qcow2 disk is read-only, 4096 sectors")
    check("GUEST blk verify disk=0 sectors=4096 ok" in lines, "known sectors read back through qcow2")
    check_pass(lines, "blk qcow2 read")


def case_blk_qcow2_write():
    """64 MiB written to a qcow2 --rwdisk over a raw backing file; qemu-img checks and converts it."""
    need_kvm()
    need_qemu_img()
    p = pattern()
    total = (96 << 20) // 512
    # From sector 3: the first and last clusters are partly copied from the backing file.
    first, sectors = 3, (64 << 20) // 512
    base = os.path.join(tmp, "qbase.raw")
    img = os.path.join(tmp, "qover.qcow2")
    out = os.path.join(tmp, "qover.raw")
    p.write_image(base, 5, 0, total)
    r = qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", img)
    check(r.returncode == 0, "qemu-img create overlay: %s" % r.stderr)
    st, lines, err = boot(bzimage, ["--rwdisk", img, "-m", "256"],
                          params="guest.aps=0 guest.blk.write=0:%d:%d:77" % (first, sectors))
    check(st == 0, "blk qcow2 write: exit status %s (%s)" % (st, err.strip()))
    check(re.search(r"capacity=%d ro=0" % total, blk_line(lines, "GUEST blk 0 slot=")),
          "qcow2 overlay is writable, %d sectors" % total)
    check("GUEST blk write disk=0 sectors=%d status=ok" % sectors in lines, "64 MiB written")
    check("GUEST blk flush disk=0 status=ok" in lines, "flushed")
    r = qemu_img("check", img)
    check(r.returncode == 0, "qemu-img check is clean (exit %s): %s" % (r.returncode, r.stdout + r.stderr))
    r = qemu_img("convert", "-f", "qcow2", "-O", "raw", img, out)
    check(r.returncode == 0, "qemu-img convert -O raw: %s" % r.stderr)
    check(os.path.getsize(out) == total * 512, "converted size %d" % os.path.getsize(out))
    for what, seed, lo, n in [("before the write", 5, 0, first),
                              ("written by the guest", 77, first, sectors),
                              ("after the write", 5, first + sectors, total - first - sectors)]:
        bad = p.check(out, seed, lo, n)
        check(bad is None, "sectors %s match (first bad sector %s)" % (what, bad))
    bad = p.check(base, 5, 0, total)
    check(bad is None, "the backing file is unchanged (first bad sector %s)" % bad)


def case_blk_discard_zeroes():
    need_kvm()
    p = pattern()
    img = os.path.join(tmp, "dz.img")
    p.write_image(img, 3, 0, 4096)
    st, lines, err = boot(bzimage, ["--rwdisk", img],
                          params="guest.aps=0 guest.blk.discard=0:1024:512 guest.blk.zeroes=0:2048:100")
    check(st == 0, "discard/zeroes: exit status %s" % st)
    check(re.search(r"GUEST blk discard disk=0 sector=1024 count=512 status=ok", "\n".join(lines)), "discard ok")
    check(re.search(r"GUEST blk zeroes disk=0 sector=2048 count=100 status=ok readback=zero", "\n".join(lines)), "write zeroes ok")
    data = open(img, "rb").read()
    check(data[1024 * 512:1536 * 512] == bytes(512 * 512), "discarded range reads as zeros in the file")
    check(data[2048 * 512:2148 * 512] == bytes(100 * 512), "zeroed range is zeros in the file")
    check(p.check(data, 3, 0, 1024) is None and p.check(data, 3, 1536, 512) is None
          and p.check(data, 3, 2148, 4096 - 2148) is None, "everything else is untouched")


def case_rng_msix():
    need_kvm()
    p = pattern()
    img = os.path.join(tmp, "irq.img")
    p.write_image(img, 8, 0, 2048)
    st, lines, err = boot(bzimage, ["-d", img],
                          params="guest.aps=0 guest.virtio.irq=1 guest.rng=4096 guest.blk.verify=0:0:2048:8")
    check(st == 0, "rng/msix: exit status %s" % st)
    check("GUEST rng bytes=4096 zero=0 differ=1" in lines, "entropy arrives from virtio-rng")
    counts = [int(m.group(1)) for l in lines for m in [re.search(r"^GUEST msix dev=\d+ queue=0 vector=\d+ count=(\d+)", l)] if m]
    check(len(counts) == 2 and all(c > 0 for c in counts), "interrupts arrive on the programmed MSI-X vectors: %r" % counts)
    st, lines, err = boot(bzimage, ["--no-rng"], params="guest.aps=0")
    check(not any(" type=rng " in l for l in lines), "--no-rng leaves the rng out")


# ---- networking, balloon and lifecycle (KVM) ----

NETPEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "guest", "netpeer.py")


def in_netns():
    """Re-run this case inside a private network namespace, so taps and traffic vanish with it."""
    if os.environ.get("LIBVMM_TEST_NETNS") == "1":
        return
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        print("skipped: needs root, unshare and ip for a private network namespace")
        sys.exit(SKIP)
    env = dict(os.environ, LIBVMM_TEST_NETNS="1")
    p = subprocess.run(["unshare", "-n", sys.executable] + sys.argv, env=env)
    sys.exit(p.returncode)


def ip(*args):
    subprocess.run(["ip"] + list(args), check=True)


def make_tap(name, addr):
    """A tap with IFF_VNET_HDR and an address in this namespace; returns its fd."""
    import fcntl
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", name.encode(), 0x0002 | 0x1000 | 0x4000))
    ip("addr", "add", addr, "dev", name)
    ip("link", "set", name, "up")
    return fd


def boot_bg(args, fds=()):
    return subprocess.Popen(vmm_argv(["run"] + args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=list(fds))


def wait_line(proc, prefix, lines):
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        if line.startswith(prefix):
            return line
    return None


def case_net():
    need_kvm()
    in_netns()
    ip("link", "set", "lo", "up")
    fd = make_tap("vt0", "10.77.0.1/24")
    peer = subprocess.Popen([sys.executable, NETPEER, "udp-recv", "9000", "5"], stdout=subprocess.PIPE, text=True)
    check("listening" in peer.stdout.readline(), "netpeer listens")
    st, lines, err = run_fds(["run", "--tap-fd", str(fd), "-p",
                              "guest.aps=0 guest.net.ip=0:10.77.0.2 guest.net.ping=0:10.77.0.1:5 "
                              "guest.net.udp=0:10.77.0.1:9000:5", bzimage], [fd])
    print(lines)
    out = peer.communicate(timeout=TIMEOUT)[0]
    check(st == 0, "net: exit status %s" % st)
    check("GUEST net ping nic=0 peer=10.77.0.1 sent=5 received=5" in lines, "guest pings the host")
    check("result=ok" in out, "the host received the guest's UDP datagrams: %r" % out)
    # Bulk transfer, 256 MiB each way, checksums on both ends.
    peer = subprocess.Popen([sys.executable, NETPEER, "bulk-recv", "9001", "256", "11"], stdout=subprocess.PIPE, text=True)
    check("listening" in peer.stdout.readline(), "netpeer bulk-recv listens")
    proc = boot_bg(["--tap-fd", str(fd), "-p", "guest.aps=0 guest.checks=min guest.net.ip=0:10.77.0.2 "
                    "guest.net.bulk_tx=0:10.77.0.1:9001:256:11 guest.net.bulk_rx=0:9002:256", bzimage], [fd])
    glines = []
    wait_line(proc, "GUEST net bulk_tx", glines)
    sender = subprocess.run([sys.executable, NETPEER, "bulk-send", "10.77.0.2", "9002", "256", "12"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    rest = proc.communicate(timeout=TIMEOUT)[0].decode(errors="replace").splitlines()
    glines += rest
    out = peer.communicate(timeout=TIMEOUT)[0]
    check("result=ok" in out, "256 MiB guest -> host arrive intact: %r" % out)
    check("result=ok" in sender.stdout, "host -> guest sent: %r" % sender.stdout)
    crc = subprocess.run([sys.executable, NETPEER, "crc", "256", "12"], capture_output=True, text=True).stdout
    want = re.search(r"crc32=([0-9a-f]{8})", crc)
    got = [l for l in glines if l.startswith("GUEST net bulk_rx")]
    check(want and got and ("crc32=" + want.group(1)) in got[0] and " lost=0 " in got[0] + " ",
          "256 MiB host -> guest arrive intact: %r" % got)
    os.close(fd)


def case_net_two():
    """Two NICs from two --tap-fd, in that order; each reaches its own host side."""
    need_kvm()
    in_netns()
    ip("link", "set", "lo", "up")
    fd0 = make_tap("vt0", "10.77.0.1/24")
    fd1 = make_tap("vt1", "10.79.0.1/24")
    peer = subprocess.Popen([sys.executable, NETPEER, "udp-recv", "9000", "5"], stdout=subprocess.PIPE, text=True)
    check("listening" in peer.stdout.readline(), "netpeer listens")
    st, out, err = run_fds(["run", "--tap-fd", str(fd0), "--tap-fd", str(fd1), "-p",
                              "guest.aps=0 guest.net.ip=0:10.77.0.2 guest.net.ip=1:10.79.0.2 "
                              "guest.net.ping=0:10.77.0.1:3 guest.net.ping=1:10.79.0.1:3 "
                              "guest.net.udp=1:10.79.0.1:9000:5", bzimage], [fd0, fd1])
    print(out)
    lines = guest_lines(out)
    got = peer.communicate(timeout=TIMEOUT)[0]
    check(st == 0, "two NICs: exit status %s (%s)" % (st, err.strip()))
    for n, host in ((0, "10.77.0.1"), (1, "10.79.0.1")):
        check("GUEST net ping nic=%d peer=%s sent=3 received=3" % (n, host) in lines,
              "NIC %d pings its host side %s" % (n, host))
    check("result=ok" in got, "the host received NIC 1's UDP datagrams: %r" % got)
    nics = [re.match(r"GUEST net ([01]) slot=(\d+) mac=(\S+) status=1 ", l) for l in lines]
    nics = [m.groups() for m in nics if m]
    check(len(nics) == 2 and nics[0][2] != nics[1][2], "two NICs, link up, different MACs: %r" % nics)
    check(len(nics) == 2 and int(nics[0][1]) < int(nics[1][1]),
          "the first --tap-fd is NIC 0, in the lower PCI slot: %r" % nics)
    os.close(fd0)
    os.close(fd1)


def case_net_create():
    need_kvm()
    in_netns()
    st, lines, err = run_fds(["run", "--host_ip", "10.78.0.1", "--netmask", "24", "--mac", "52:54:00:00:00:42",
                              "-p", "guest.aps=0 guest.net.ip=0:10.78.0.2 guest.net.ping=0:10.78.0.1:3", bzimage], [])
    out_lines = [l for l in lines.splitlines() if l.startswith("GUEST")] if isinstance(lines, str) else lines
    check(st == 0, "created tap: exit status %s" % st)
    check(any("mac=52:54:00:00:00:42" in l for l in out_lines), "the guest has the MAC given")
    check("GUEST net ping nic=0 peer=10.78.0.1 sent=3 received=3" in out_lines, "ping through the created tap")


def status_of(sock):
    p = subprocess.run([vmm, "status", sock], capture_output=True, text=True, timeout=30)
    return dict(kv.split("=", 1) for kv in p.stdout.split()) if p.returncode == 0 else {}


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


def case_lifecycle():
    """-s, status, suspend/resume (ticks stop and go on), balloon (RSS falls), stop, SIGTERM."""
    need_kvm()
    sockdir = tempfile.mkdtemp(dir=tmp)
    proc = boot_bg(["-m", "512", "-s", sockdir, "-p",
                    "guest.aps=0 guest.checks=min guest.balloon=1 guest.run=forever", bzimage])
    lines = []
    try:
        check(wait_line(proc, "GUEST tick 3", lines) is not None, "the guest ticks")
        socks = [os.path.join(sockdir, f) for f in os.listdir(sockdir)]
        check(len(socks) == 1 and socks[0].endswith("vmm-%d.sock" % proc.pid), "socket vmm-<pid>.sock: %r" % socks)
        sock = socks[0]
        check(oct(os.stat(sock).st_mode & 0o777) == "0o600", "socket mode 0600")
        st = status_of(sock)
        check(st.get("state") == "running" and st.get("mem_mib") == "512", "status: %r" % st)
        subprocess.run([vmm, "suspend", sock], check=True, timeout=30)
        check(status_of(sock).get("state") == "paused", "status says paused")
        n_before = len(lines)
        # While paused, nothing more arrives; check over a bounded wait on the pipe.
        import select
        r, _, _ = select.select([proc.stdout], [], [], 1.0)
        check(not r, "no ticks while suspended")
        subprocess.run([vmm, "resume", sock], check=True, timeout=30)
        check(wait_line(proc, "GUEST tick", lines) is not None, "ticks go on after resume")
        check(status_of(sock).get("state") == "running", "status says running")
        wait_line(proc, "GUEST touch", lines)
        before = rss_kib(proc.pid)
        subprocess.run([vmm, "balloon", "384M", sock], check=True, timeout=30)
        check(wait_line(proc, "GUEST balloon target_pages=98304 actual_pages=98304", lines) is not None,
              "the guest inflates to the target")
        after = rss_kib(proc.pid)
        check(before - after > 384 * 1024 * 3 // 4, "RSS falls by most of 384 MiB: %d -> %d KiB" % (before, after))
        st = status_of(sock)
        check(st.get("balloon_target_mib") == "384" and st.get("balloon_actual_mib") == "384", "status: %r" % st)
        subprocess.run([vmm, "stop", sock], check=True, timeout=30)
        proc.wait(timeout=TIMEOUT)
        check(proc.returncode == 0, "stop: exit status 0, got %s" % proc.returncode)
        check(not os.path.exists(sock), "the socket is removed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # SIGTERM stops it the same orderly way.
    proc = boot_bg(["-p", "guest.aps=0 guest.checks=min guest.run=forever", bzimage])
    lines = []
    wait_line(proc, "GUEST tick 1", lines)
    proc.terminate()
    proc.wait(timeout=TIMEOUT)
    check(proc.returncode == 0, "SIGTERM: exit status 0, got %s" % proc.returncode)


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}

if __name__ == "__main__":
    try:
        CASES[sys.argv[1]]()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures))
        sys.exit(1)
    print("all checks passed")
