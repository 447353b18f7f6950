"""Run QEMU (TCG) to completion and collect what the guest prints.

Shared by tests/guest/run_qemu.py and tests/integration/boot_image/run_image.py,
which import it by path (the directory above theirs).
"""
import os
import random
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

QEMU = "qemu-system-x86_64"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def skip_without_qemu():
    """Exit 77 (meson's skip) when qemu-system-x86_64 is not installed."""
    if not shutil.which(QEMU):
        print(f"{QEMU} not installed: skipping", flush=True)
        sys.exit(77)


def qemu_command(machine, mem_mib, smp, kernel, append, extra=()):
    """A QEMU command line: no default devices, the serial port on stdio, no reboot."""
    return [QEMU, "-M", machine, "-accel", "tcg", "-m", str(mem_mib), "-smp", str(smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-no-reboot", "-kernel", kernel, "-append", append, *extra]


def tagged(line, tags=("GUEST",)):
    """The part of @line from the first "TAG " on (firmware output may precede
    it), without a trailing CR; None when no tag is in it."""
    m = re.search("(" + "|".join(map(re.escape, tags)) + ") ", line)
    return line[m.start():].rstrip("\r") if m else None


def run_to_exit(cmd, timeout, tags=("GUEST",), feed=None, feed_after=b"GUEST hello\n"):
    """Run QEMU until it exits by itself, echoing its output; kill it and fail
    after @timeout seconds. @feed (bytes) goes to its stdin once @feed_after
    has been printed. Returns (exit status, the tagged lines)."""
    print("+", " ".join(cmd), flush=True)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if feed is not None else
                                subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        out = bytearray()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"QEMU still running after {timeout} s")
                if not sel.select(left):
                    continue
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    break
                out += data
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
                if feed is not None and feed_after in out:
                    proc.stdin.write(feed)
                    proc.stdin.flush()
                    feed = None
            status = proc.wait(max(deadline - time.monotonic(), 1))
        except (Failure, subprocess.TimeoutExpired) as e:
            proc.kill()
            proc.wait()
            raise Failure(str(e) if isinstance(e, Failure)
                          else f"QEMU did not exit within {timeout} s")
        finally:
            sel.close()
            if proc.stdin:
                proc.stdin.close()
            proc.stdout.close()
            err.seek(0)
            msg = err.read().decode(errors="replace").strip()
            if msg:
                print("qemu stderr:", msg, flush=True)
    lines = (tagged(line, tags) for line in out.decode(errors="replace").split("\n"))
    return status, [line for line in lines if line is not None]


def one(lines, pattern):
    """The match of the only line that matches @pattern entirely."""
    rx = re.compile(pattern)
    hits = [m for m in map(rx.fullmatch, lines) if m]
    check(len(hits) == 1, f"expected exactly one line matching {pattern!r}, got {len(hits)}")
    return hits[0]


def check_ending(lines, status, exit_mode, result="pass"):
    """The test guest's GUEST lines (tests/guest/README.md) say it ran to the end
    with @result, no check failed, and it left by @exit_mode, and QEMU exited 0."""
    check(status == 0, f"QEMU exit status {status}")
    fails = [line for line in lines if line.startswith("GUEST FAIL")]
    check(not fails, f"guest reported failures: {fails}")
    check(lines and lines[0] == "GUEST hello", "first guest line is not 'GUEST hello'")
    check(f"GUEST result {result}" in lines, f"no 'GUEST result {result}'")
    check(lines[-1] == f"GUEST exit {exit_mode}",
          f"last guest line is not 'GUEST exit {exit_mode}'")


def check_initrd(lines, data):
    """The guest's initrd line says it found len(@data) bytes with @data's CRC-32;
    returns the address it gives."""
    m = one(lines, r"GUEST initrd addr=0x([0-9a-f]+) size=(\d+) crc32=([0-9a-f]{8})")
    check(int(m.group(2)) == len(data), f"initrd size {m.group(2)}, expected {len(data)}")
    crc = f"{zlib.crc32(data):08x}"
    check(m.group(3) == crc, f"initrd crc32 {m.group(3)}, host zlib.crc32 says {crc}")
    return int(m.group(1), 16)


def make_initrd(directory, size, seed):
    """@size pseudo-random bytes from @seed in @directory/initrd.bin: (path, bytes)."""
    data = random.Random(seed).randbytes(size)
    path = os.path.join(directory, "initrd.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path, data


def run_main(main):
    """Run a test script's @main: a Failure prints FAIL and exits 1. (0 is a
    pass; a skip exits 77 itself.)"""
    try:
        main()
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
