"""Helpers shared by the benchmark scripts (bench/boot, bench/blk, bench/net)."""
import os
import platform
import re
import statistics
import subprocess


def find_build(args):
    """The meson build directory: --build, $MESON_BUILD_ROOT, ./ or ../build."""
    if args.build:
        return os.path.abspath(args.build)
    env = os.environ.get("MESON_BUILD_ROOT")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.getcwd(), os.path.join(here, "..", "build")):
        if os.path.exists(os.path.join(cand, "build.ninja")):
            return os.path.abspath(cand)
    return os.path.abspath(os.path.join(here, "..", "build"))


def host_line():
    """One line about this host: CPU, CPU count, kernel, which KVM."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    kvm = "no /dev/kvm"
    if os.path.exists("/dev/kvm"):
        pvm = os.path.isdir("/sys/module/kvm_pvm")
        hw = os.path.isdir("/sys/module/kvm_intel") or os.path.isdir("/sys/module/kvm_amd")
        kvm = "nested PVM KVM" if pvm and not hw else "hardware KVM"
    return f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, {kvm}"


def tool_version(argv):
    """The first line a tool prints of its version, or "unknown"."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).split("\n")[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def med(xs):
    """Median of the values that are not None, or None."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    """a / b with two decimals, or "n/a"."""
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def render(head, body, markdown, left_cols):
    """A table: markdown, or aligned text; the first left_cols columns left-aligned."""
    if markdown:
        out = ["| " + " | ".join(head) + " |",
               "|" + "|".join("---" if i < left_cols else "---:" for i in range(len(head))) + "|"]
        out += ["| " + " | ".join(b) + " |" for b in body]
    else:
        w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
        out = ["  ".join(h.ljust(w[i]) for i, h in enumerate(head)).rstrip(),
               "  ".join("-" * w[i] for i in range(len(head)))]
        out += ["  ".join(c.rjust(w[i]) if i >= left_cols else c.ljust(w[i])
                          for i, c in enumerate(b)).rstrip() for b in body]
    return "\n".join(out)


def host_tsc_khz(de):
    """The host's TSC rate (disk_engine --tsc-khz), or None."""
    if not de or not os.path.exists(de):
        return None
    try:
        r = subprocess.run([de, "--tsc-khz"], capture_output=True, text=True, timeout=30)
        m = re.search(r"tsc_khz=(\d+)", r.stdout)
        return int(m.group(1)) if m and int(m.group(1)) > 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None
