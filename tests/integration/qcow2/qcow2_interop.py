#!/usr/bin/env python3
"""qcow2 interoperability between libvmm's disk layer and QEMU's tools.

Usage: qcow2_interop.py CASE DISK_TOOL   (CASE: read, write, create, crash, bench)

Images are made and checked with qemu-img and qemu-io; disk_tool (disk_tool.c)
reads and writes them through disk_open()/disk_submit(). Every write is mirrored
into an expected raw image, which `qemu-img compare` and disk_tool's `verify`
check against. Exits 77 (skip) when qemu-img or qemu-io is missing.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
KIB = 1024
MIB = 1024 * 1024


def log(*a):
    print(*a, flush=True)


def run(*cmd, check=True, stdin=None):
    p = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit("FAIL: %s exited %d\n%s%s" % (" ".join(map(str, cmd)), p.returncode,
                                                        p.stdout, p.stderr))
    return p


class Env:
    def __init__(self, tool, tmp):
        self.tool = tool
        self.tmp = tmp
        self.n = 0

    def path(self, name):
        self.n += 1
        return os.path.join(self.tmp, "%d-%s" % (self.n, name))

    def disk(self, image, commands, *opts, check=True):
        return run(self.tool, *opts, image, stdin="\n".join(commands) + "\n", check=check)


def qemu_img(*args, check=True):
    return run("qemu-img", *args, check=check)


def qemu_io(image, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    run(*args, image)


def check_clean(image, allow_leaks=False):
    """qemu-img check: no corruption; no leaks unless allowed."""
    p = qemu_img("check", "--output=json", image, check=False)
    try:
        info = json.loads(p.stdout)
    except ValueError:
        raise SystemExit("FAIL: qemu-img check %s: %s%s" % (image, p.stdout, p.stderr))
    corrupt = info.get("corruptions", 0) + info.get("check-errors", 0)
    leaks = info.get("leaks", 0)
    if corrupt or p.returncode == 2 or (leaks and not allow_leaks) or \
            p.returncode not in (0, 3) or (p.returncode == 3 and not allow_leaks):
        raise SystemExit("FAIL: qemu-img check %s: rc %d %s" % (image, p.returncode, p.stdout))
    return leaks


def compare(image, raw):
    p = qemu_img("compare", "-f", "qcow2", "-F", "raw", image, raw, check=False)
    if p.returncode != 0:
        raise SystemExit("FAIL: qemu-img compare %s %s: %s%s" % (image, raw, p.stdout, p.stderr))


def to_raw(env, image, fmt="qcow2"):
    raw = env.path("expected.raw")
    qemu_img("convert", "-f", fmt, "-O", "raw", image, raw)
    return raw


def fill_random(env, image, size, seed, fmt="qcow2", count=24):
    """Scatter patterned writes over an image with qemu-io."""
    rng = random.Random(seed)
    cmds = []
    for _ in range(count):
        ln = rng.choice([512, 4 * KIB, 60 * KIB, 64 * KIB, 300 * KIB])
        off = rng.randrange(0, size - ln, 512)
        cmds.append("write -P %d %d %d" % (rng.randrange(1, 255), off, ln))
    qemu_io(image, *cmds, fmt=fmt)


def verify_all(env, image, raw, size, *opts):
    env.disk(image, ["verify 0 %d %s" % (size, raw)], *opts)


def verify_random(env, image, raw, size, seed, *opts):
    rng = random.Random(seed)
    cmds = []
    for _ in range(64):
        ln = rng.choice([512, 4096, 65536, 200000, 1 << 20])
        ln = min(ln, size)
        off = rng.randrange(0, size - ln + 1)
        cmds.append("verify %d %d %s" % (off, ln, raw))
    env.disk(image, cmds, *opts)


# ---- read: images written by QEMU read back through libvmm ----

def case_read(env):
    size = 48 * MIB
    configs = [
        ("4k-v3", ["-o", "cluster_size=4k"]),
        ("64k-v3", []),
        ("2M-v3", ["-o", "cluster_size=2M"]),
        ("64k-v2", ["-o", "compat=0.10"]),
        ("4k-v2", ["-o", "compat=0.10,cluster_size=4k"]),
        ("rc1", ["-o", "refcount_bits=1"]),
        ("rc64", ["-o", "refcount_bits=64,cluster_size=4k"]),
        ("rc8", ["-o", "refcount_bits=8"]),
    ]
    for name, opts in configs:
        img = env.path(name + ".qcow2")
        qemu_img("create", "-f", "qcow2", *opts, img, str(size))
        fill_random(env, img, size, hash(name) & 0xffff)
        qemu_io(img, "write -z 1M 1M", "discard 3M 256k")
        raw = to_raw(env, img)
        verify_all(env, img, raw, size)
        verify_random(env, img, raw, size, 7, "--threads")
        verify_random(env, img, raw, size, 8, "--cache", "1")
        log("ok read", name)

    # Backing chains: raw <- qcow2 v2 <- qcow2 v3 (4k) <- qcow2 v3, relative names.
    base = env.path("base.raw")
    with open(base, "wb") as f:
        f.write(os.urandom(size - 3 * MIB))  # smaller than the overlays
    d = os.path.dirname(base)
    mid = env.path("mid.qcow2")
    qemu_img("create", "-f", "qcow2", "-o", "compat=0.10", "-b", os.path.basename(base),
             "-F", "raw", mid, str(size))
    fill_random(env, mid, size, 11, count=10)
    mid2 = env.path("mid2.qcow2")
    qemu_img("create", "-f", "qcow2", "-o", "cluster_size=4k", "-b", os.path.basename(mid),
             "-F", "qcow2", mid2, str(size))
    fill_random(env, mid2, size, 12, count=10)
    qemu_io(mid2, "write -z 5M 128k")
    top = env.path("top.qcow2")
    qemu_img("create", "-f", "qcow2", "-b", os.path.basename(mid2), "-F", "qcow2", top,
             str(size))
    fill_random(env, top, size, 13, count=10)
    raw = to_raw(env, top)
    verify_all(env, top, raw, size)
    verify_random(env, top, raw, size, 14, "--cache", "1")
    log("ok read backing chain of depth 4 in", d)

    # Compressed clusters, zlib and zstd.
    for ctype in ["zlib", "zstd"]:
        for cs in ["4k", "64k", "2M"]:
            src = env.path("src.raw")
            with open(src, "wb") as f:
                rng = random.Random(cs)
                for i in range(size // MIB):
                    blk = bytes([rng.randrange(256)]) * (MIB // 2) + os.urandom(MIB // 4) + \
                        bytes(MIB // 4)
                    f.write(blk)
            img = env.path("c-%s-%s.qcow2" % (ctype, cs))
            qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", "-o",
                     "compression_type=%s,cluster_size=%s" % (ctype, cs), src, img)
            info = json.loads(qemu_img("info", "--output=json", img).stdout)
            assert info["format-specific"]["data"]["compression-type"] == ctype
            verify_all(env, img, src, size)
            verify_random(env, img, src, size, 15)
            log("ok read compressed", ctype, cs)


# ---- write: writes, discards and write-zeroes through libvmm ----

class Model:
    """The expected contents of an image, as a raw file."""

    def __init__(self, env, raw, size, cluster, version, backing_raw):
        self.env = env
        self.raw = raw
        self.size = size
        self.cluster = cluster
        self.version = version
        self.backing_raw = backing_raw  # expected contents of the backing chain, or None

    def ops(self, seed, count, zero_ops=True):
        rng = random.Random(seed)
        cmds = []
        with open(self.raw, "r+b") as f:
            for _ in range(count):
                kind = rng.randrange(10)
                ln = rng.choice([512, 4096, self.cluster, 3 * self.cluster + 512, 100 * KIB,
                                 2 * MIB])
                ln = min(ln, self.size)
                off = rng.randrange(0, self.size - ln + 1, 512)
                if kind < 6 or not zero_ops:
                    data = os.urandom(ln)
                    f.seek(off)
                    f.write(data)
                    cmds.append(("write", off, ln))
                elif kind < 8:
                    f.seek(off)
                    f.write(bytes(ln))
                    cmds.append(("zero", off, ln, "unmap" if kind == 7 else ""))
                else:
                    # Discard: whole clusters read as zeros (the backing file's data in
                    # a v2 image with one); partial clusters keep their data.
                    a = -(-off // self.cluster) * self.cluster
                    b = (off + ln) // self.cluster * self.cluster
                    if off + ln == self.size:
                        b = self.size
                    if b > a:
                        f.seek(a)
                        if self.version == 2 and self.backing_raw:
                            with open(self.backing_raw, "rb") as bf:
                                bf.seek(a)
                                chunk = bf.read(b - a)
                            chunk += bytes(b - a - len(chunk))
                            f.write(chunk)
                        else:
                            f.write(bytes(b - a))
                    cmds.append(("discard", off, ln))
        out = []
        for c in cmds:
            if c[0] == "write":
                out.append("write %d %d %s" % (c[1], c[2], self.raw))
            elif c[0] == "zero":
                out.append("zero %d %d %s" % (c[1], c[2], c[3]))
            else:
                out.append("discard %d %d" % (c[1], c[2]))
        return out


def write_case(env, name, opts, size, backing=None, snapshot=False, engine=()):
    img = env.path(name + ".qcow2")
    args = ["create", "-f", "qcow2"] + opts
    backing_raw = None
    if backing:
        args += ["-b", backing[0], "-F", backing[1]]
        backing_raw = to_raw(env, backing[0], backing[1])
    qemu_img(*args, img, str(size))
    fill_random(env, img, size, 21, count=8)
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    cluster = info["cluster-size"]
    version = 2 if info["format-specific"]["data"]["compat"] == "0.10" else 3
    raw = to_raw(env, img)
    if snapshot:
        qemu_img("snapshot", "-c", "snap1", img)
        snap_raw = env.path("snap.raw")
        shutil.copy(raw, snap_raw)
    model = Model(env, raw, size, cluster, version, backing_raw)
    for rnd in range(3):
        cmds = model.ops(rnd * 100 + len(name), 60)
        # Flush now and then, verify everything at the end.
        cmds.insert(len(cmds) // 2, "flush")
        cmds += ["flush", "verify 0 %d %s" % (size, raw)]
        env.disk(img, cmds, *engine)
        check_clean(img)
        compare(img, raw)
    if snapshot:
        qemu_img("snapshot", "-a", "snap1", img)
        compare(img, snap_raw)
        check_clean(img)
    log("ok write", name)


def case_write(env):
    size = 40 * MIB + 512 * 3  # a partial last cluster
    write_case(env, "64k-v3", [], size)
    write_case(env, "4k-v3-threads", ["-o", "cluster_size=4k"], size, engine=["--threads"])
    write_case(env, "2M-v3", ["-o", "cluster_size=2M"], size)
    write_case(env, "64k-v2", ["-o", "compat=0.10"], size)
    write_case(env, "rc1-4k", ["-o", "refcount_bits=1,cluster_size=4k"], size)
    write_case(env, "rc64-4k", ["-o", "refcount_bits=64,cluster_size=4k"], size)
    write_case(env, "rc2-4k", ["-o", "refcount_bits=2,cluster_size=4k"], size)
    write_case(env, "tiny-cache", ["-o", "cluster_size=4k"], size, engine=["--cache", "1"])
    write_case(env, "snapshot", [], size, snapshot=True)
    write_case(env, "snapshot-4k", ["-o", "cluster_size=4k"], size, snapshot=True)

    # Refcount table growth: 4k clusters and 64-bit refcounts cover 1 GiB per table cluster.
    img = env.path("grow.qcow2")
    qemu_img("create", "-f", "qcow2", "-o", "cluster_size=4k,refcount_bits=64", img, "3G")
    raw = env.path("grow.raw")
    with open(raw, "wb") as f:
        f.truncate(3 * 1024 * MIB)
    with open(raw, "r+b") as f:
        for i in range(0, 3 * 1024 * MIB, 96 * MIB):
            f.seek(i)
            f.write(os.urandom(9 * MIB))
    cmds = ["write %d %d %s" % (i, 9 * MIB, raw) for i in range(0, 3 * 1024 * MIB, 96 * MIB)]
    env.disk(img, cmds + ["flush"])
    check_clean(img)
    compare(img, raw)
    log("ok write refcount table growth")

    # Overlays of a raw, a v2 and a compressed image.
    base = env.path("base.raw")
    with open(base, "wb") as f:
        f.write(os.urandom(size - 5 * MIB))
    write_case(env, "over-raw-v3", [], size, backing=(base, "raw"))
    write_case(env, "over-raw-v2", ["-o", "compat=0.10"], size, backing=(base, "raw"))
    comp = env.path("comp.qcow2")
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", base, comp)
    write_case(env, "over-compressed-4k", ["-o", "cluster_size=4k"], size,
               backing=(comp, "qcow2"))

    # Writing into compressed clusters (copy-on-write out of them).
    img = env.path("incomp.qcow2")
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd", base,
             img)
    raw = to_raw(env, img)
    model = Model(env, raw, size - 5 * MIB, 65536, 3, None)
    cmds = model.ops(5, 80) + ["flush", "verify 0 %d %s" % (size - 5 * MIB, raw)]
    env.disk(img, cmds)
    check_clean(img)
    compare(img, raw)
    log("ok write into compressed clusters")


# ---- create: images made by qcow2_create ----

def case_create(env):
    for size, cbits, cs in [(64 * MIB, 0, 65536), (5 * 1024 * MIB + 512, 12, 4096),
                            (1000, 16, 65536), (1 << 40, 21, 2 * MIB)]:
        img = env.path("new.qcow2")
        run(env.tool, "create", img, size, cbits)
        check_clean(img)
        info = json.loads(qemu_img("info", "--output=json", img).stdout)
        want = (size + 511) // 512 * 512
        if info["virtual-size"] != want or info["cluster-size"] != cs or \
                info["format-specific"]["data"]["compat"] != "1.1" or \
                info["format-specific"]["data"]["refcount-bits"] != 16:
            raise SystemExit("FAIL: qemu-img info of created image: %s" % info)
        qemu_io(img, "write -P 0x5a 0 %d" % min(want, 128 * KIB))
        env.disk(img, ["zero 512 512", "wait", "info"])
        check_clean(img)
        log("ok create", size, cs)
    # Refuses to overwrite.
    p = run(env.tool, "create", img, MIB, check=False)
    if p.returncode == 0 or "exists" not in p.stderr:
        raise SystemExit("FAIL: create overwrote an existing file: %s" % p.stderr)
    # With backing files: relative names, size 0 meaning the backing file's size.
    base = env.path("base.raw")
    with open(base, "wb") as f:
        f.write(os.urandom(3 * MIB + 512))
    over = env.path("over.qcow2")
    run(env.tool, "create", over, 0, 0, os.path.basename(base))
    info = json.loads(qemu_img("info", "--output=json", over).stdout)
    if info["virtual-size"] != 3 * MIB + 512 or \
            info.get("backing-filename") != os.path.basename(base) or \
            info.get("backing-filename-format") != "raw":
        raise SystemExit("FAIL: qemu-img info of overlay: %s" % info)
    check_clean(over)
    verify_all(env, over, base, 3 * MIB + 512)
    over2 = env.path("over2.qcow2")
    run(env.tool, "create", over2, 8 * MIB, 12, os.path.basename(over))
    info = json.loads(qemu_img("info", "--output=json", over2).stdout)
    if info["virtual-size"] != 8 * MIB or info.get("backing-filename-format") != "qcow2":
        raise SystemExit("FAIL: qemu-img info of overlay 2: %s" % info)
    qemu_io(over2, "write -P 7 1M 100k")
    raw = to_raw(env, over2)
    verify_all(env, over2, raw, 8 * MIB)
    p = run(env.tool, "create", env.path("x.qcow2"), MIB, 0, "does-not-exist", check=False)
    if p.returncode == 0 or "does not exist" not in p.stderr:
        raise SystemExit("FAIL: create with a missing backing file: %s" % p.stderr)
    log("ok create with backing files")


# ---- crash: SIGKILL during writes never corrupts ----

def case_crash(env):
    size = 96 * MIB
    for cs in ["64k", "4k"]:
        img = env.path("crash-%s.qcow2" % cs)
        qemu_img("create", "-f", "qcow2", "-o", "cluster_size=%s" % cs, img, str(size))
        raw = env.path("flushed.raw")
        leaks = 0
        rng = random.Random(cs)
        for i in range(20):
            # Data written and flushed before the kill (above the stress range) survives it.
            with open(raw, "wb") as f:
                f.truncate(size)
                f.seek(80 * MIB + i * 512 * KIB)
                f.write(os.urandom(300 * KIB))
            p = subprocess.Popen([env.tool, "--qd", "16", img], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            p.stdin.write("write %d %d %s\nflush\nwait\ninfo\n" %
                          (80 * MIB + i * 512 * KIB, 300 * KIB, raw))
            p.stdin.flush()
            if not p.stdout.readline().startswith("size"):
                raise SystemExit("FAIL: disk_tool did not acknowledge the flush")
            p.stdin.write("stress %d 1000000 %d\n" % (i + 1, 80 * MIB))
            p.stdin.flush()
            time.sleep(rng.uniform(0.05, 1.5))
            p.send_signal(signal.SIGKILL)
            p.wait()
            leaks += check_clean(img, allow_leaks=True)
            # libvmm opens the image again, the flushed data is there, all of it reads.
            env.disk(img, ["verify %d %d %s" % (80 * MIB + i * 512 * KIB, 300 * KIB, raw),
                           "read 0 %d /dev/null" % size])
        qemu_img("check", "-r", "leaks", img, check=False)
        check_clean(img)
        log("ok crash", cs, "20 kills, leaked clusters reported in total:", leaks)


# ---- bench: random 4 KiB reads, qcow2 against raw ----

def case_bench(env):
    """Best of 7 alternating runs each; prints the figures and the ratios (a benchmark, run by
    `meson test --benchmark`: timed assertions do not belong in tests)."""
    size = 256 * MIB
    raw = env.path("bench.raw")
    with open(raw, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    img = env.path("bench.qcow2")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, img)
    over = env.path("bench-over.qcow2")
    qemu_img("create", "-f", "qcow2", "-b", raw, "-F", "raw", over)
    cmd = ["bench-read 200000 4096 1"]
    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    for engine in [[], ["--threads"]]:
        results = {"raw": [], "qcow2": [], "overlay": []}
        for i in range(7):
            order = [("raw", raw, "raw"), ("qcow2", img, "qcow2"), ("overlay", over, "qcow2")]
            for kind, path, fmt in (order if i % 2 else order[::-1]):
                out = env.disk(path, cmd, "--format", fmt, "--qd", "32", *engine).stdout
                results[kind].append(float(out.split()[-1]))
        r, q, o = max(results["raw"]), max(results["qcow2"]), max(results["overlay"])
        log("bench %s: random 4 KiB reads, raw %.0f iops, qcow2 %.0f iops (ratio %.3f), "
            "qcow2 over raw backing %.0f iops (ratio %.3f)%s" %
            (engine[0][2:] if engine else "default engine", r, q, q / r, o, o / r,
             " [busy machine: figures are noisy]" if busy else ""))


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    case, tool = sys.argv[1], os.path.abspath(sys.argv[2])
    if not shutil.which("qemu-img") or not shutil.which("qemu-io"):
        log("SKIP: qemu-img or qemu-io not installed")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="qcow2-interop-")
    try:
        {"read": case_read, "write": case_write, "create": case_create, "crash": case_crash,
         "bench": case_bench}[case](Env(tool, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
