#!/usr/bin/env python3
"""Build guest.bzImage from the real-mode setup blob and guest.elf.

The protected-mode part is made from guest.elf's PT_LOAD segments (file bytes
at p_paddr - 0x100000, gaps zero), so it is byte for byte what the ELF loads
at 0x100000. The tool fills in setup_sects, syssize and init_size and checks
the invariants loaders rely on.

usage: mkbzimage.py SETUP_BIN GUEST_ELF OUTPUT
"""
import struct
import sys

BASE = 0x100000
PT_LOAD = 1


def die(msg):
    sys.exit(f"mkbzimage: {msg}")


def load_elf(path):
    data = open(path, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        die(f"{path}: not a little-endian ELF64 file")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    e_entry, e_phoff = struct.unpack_from("<QQ", data, 24)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    if e_machine != 62:
        die(f"{path}: not x86-64")
    segs = []
    for i in range(e_phnum):
        p_type, _flags, off, vaddr, paddr, filesz, memsz = struct.unpack_from(
            "<IIQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type != PT_LOAD:
            continue
        if paddr != vaddr:
            die(f"{path}: PT_LOAD with p_paddr 0x{paddr:x} != p_vaddr 0x{vaddr:x}")
        segs.append((paddr, data[off:off + filesz], memsz))
    if not segs or min(s[0] for s in segs) != BASE:
        die(f"{path}: image does not start at 0x{BASE:x}")
    file_end = max(p + len(b) for p, b, _ in segs)
    mem_end = max(p + m for p, _, m in segs)
    image = bytearray(file_end - BASE)
    for paddr, body, _ in segs:
        image[paddr - BASE:paddr - BASE + len(body)] = body
    return image, e_entry, mem_end


def main():
    if len(sys.argv) != 4:
        die("usage: mkbzimage.py SETUP_BIN GUEST_ELF OUTPUT")
    setup = bytearray(open(sys.argv[1], "rb").read())
    image, entry, mem_end = load_elf(sys.argv[2])

    if len(setup) % 512 or not 1024 <= len(setup) <= 64 * 512:
        die("setup must be 2 to 64 whole sectors")
    if setup[0x1fe:0x200] != b"\x55\xaa" or setup[0x202:0x206] != b"HdrS":
        die("setup has no boot protocol header")
    if entry != BASE + 0x200:
        die(f"ELF entry 0x{entry:x} is not the 64-bit entry at 0x{BASE + 0x200:x}")
    (code32_start,) = struct.unpack_from("<I", setup, 0x214)
    if code32_start != BASE:
        die("code32_start does not match the link address")

    image += bytes(-len(image) % 16)
    init_size = (mem_end - BASE + 0xfff) & ~0xfff
    setup[0x1f1] = len(setup) // 512 - 1
    struct.pack_into("<I", setup, 0x1f4, len(image) // 16)
    struct.pack_into("<I", setup, 0x260, init_size)

    with open(sys.argv[3], "wb") as f:
        f.write(setup)
        f.write(image)


if __name__ == "__main__":
    main()
