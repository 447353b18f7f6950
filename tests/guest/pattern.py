#!/usr/bin/env python3
"""The test guest's disk data pattern, for host-side tests.

The guest (uvirtio.c) writes and checks the same bytes. For a seed (an
unsigned 64-bit integer) the 512-byte sector at absolute sector number lba
holds 64 little-endian 64-bit words; word k (0..63) is

    mix64(key ^ lba) ^ mix64(~key ^ k)      with key = mix64(seed)

where mix64 is splitmix64's output function applied to z + 0x9e3779b97f4a7c15:

    z = (z + 0x9e3779b97f4a7c15) mod 2**64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) mod 2**64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) mod 2**64
    return z ^ (z >> 31)

So a sector is a fixed 512-byte row (the per-offset words) XORed with one
word repeated 64 times (the per-sector word). Python builds it with two
big-integer operations per sector (about 0.5 s per 64 MiB).

Functions: sector(seed, lba), make(seed, first, count) -> bytes,
write_image(path, seed, first, count), check(data_or_path, seed, first,
count, offset=None) -> None or the first bad sector.

Command line:
    pattern.py make IMAGE SEED FIRST COUNT [--size BYTES]
    pattern.py check IMAGE SEED FIRST COUNT      (exit 1 and print the first bad sector)
"""
import argparse
import os
import sys

SECTOR = 512
WORDS = SECTOR // 8
M64 = (1 << 64) - 1
# A 512-byte little-endian integer with a 1 in the low byte of each 8-byte word:
# w * REPEAT repeats the 64-bit word w in all 64 words (no carries).
REPEAT = sum(1 << (64 * k) for k in range(WORDS))


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class Pattern:
    """The pattern of one seed; sector(lba) gives 512 bytes."""

    def __init__(self, seed):
        seed &= M64
        self.key = mix64(seed)
        nkey = ~self.key & M64
        row = b"".join(mix64(nkey ^ k).to_bytes(8, "little") for k in range(WORDS))
        self.row = int.from_bytes(row, "little")

    def sector(self, lba):
        w = mix64(self.key ^ lba)
        return (self.row ^ (w * REPEAT)).to_bytes(SECTOR, "little")

    def make(self, first, count):
        key, row, rep = self.key, self.row, REPEAT
        out = bytearray(count * SECTOR)
        pos = 0
        for lba in range(first, first + count):
            z = ((key ^ lba) + 0x9E3779B97F4A7C15) & M64
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            z ^= z >> 31
            out[pos:pos + SECTOR] = (row ^ (z * rep)).to_bytes(SECTOR, "little")
            pos += SECTOR
        return bytes(out)


def sector(seed, lba):
    return Pattern(seed).sector(lba)


def make(seed, first, count):
    """The pattern bytes of sectors [first, first + count)."""
    return Pattern(seed).make(first, count)


CHUNK = 2048  # sectors per step (1 MiB)


def write_image(path, seed, first, count, size=None):
    """Write the pattern of sectors [first, first + count) into the file at byte
    first * 512 (creating it if needed); extend or truncate the file to size if given."""
    p = Pattern(seed)
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        f = open(path, "w+b")
    with f:
        if size is not None:
            f.truncate(size)
        f.seek(first * SECTOR)
        for s in range(first, first + count, CHUNK):
            f.write(p.make(s, min(CHUNK, first + count - s)))


def check(data, seed, first, count, offset=None):
    """Compare sectors [first, first + count) with the pattern. data is bytes
    holding the disk from sector 0 (or from byte offset, if given), or a file
    path. Returns None if all match, else the first bad sector number."""
    p = Pattern(seed)
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            f.seek(first * SECTOR)
            for s in range(first, first + count, CHUNK):
                n = min(CHUNK, first + count - s)
                got = f.read(n * SECTOR)
                bad = _first_bad(p, got, s, n)
                if bad is not None:
                    return bad
        return None
    base = (first * SECTOR) if offset is None else offset
    view = memoryview(data)
    for s in range(first, first + count, CHUNK):
        n = min(CHUNK, first + count - s)
        start = base + (s - first) * SECTOR
        bad = _first_bad(p, bytes(view[start:start + n * SECTOR]), s, n)
        if bad is not None:
            return bad
    return None


def _first_bad(p, got, lba, n):
    if got == p.make(lba, n):
        return None
    for i in range(n):
        if got[i * SECTOR:(i + 1) * SECTOR] != p.sector(lba + i):
            return lba + i
    return lba + n  # short read


def check_zero(path, first, count):
    """None if sectors [first, first + count) of the file read as zeros, else the first non-zero sector."""
    zero = bytes(CHUNK * SECTOR)
    with open(path, "rb") as f:
        f.seek(first * SECTOR)
        for s in range(first, first + count, CHUNK):
            n = min(CHUNK, first + count - s)
            got = f.read(n * SECTOR)
            if got != zero[:n * SECTOR]:
                for i in range(n):
                    if got[i * SECTOR:(i + 1) * SECTOR] != zero[:SECTOR]:
                        return s + i
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["make", "check"])
    ap.add_argument("image")
    ap.add_argument("seed", type=lambda s: int(s, 0))
    ap.add_argument("first", type=lambda s: int(s, 0))
    ap.add_argument("count", type=lambda s: int(s, 0))
    ap.add_argument("--size", type=lambda s: int(s, 0), help="file size in bytes (make)")
    a = ap.parse_args()
    if a.cmd == "make":
        write_image(a.image, a.seed, a.first, a.count, a.size)
        return 0
    bad = check(a.image, a.seed, a.first, a.count)
    if bad is None:
        print("ok")
        return 0
    print(f"bad at={bad}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
