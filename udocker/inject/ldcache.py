"""The container's loader cache with the injected driver in it, so that a program finds libcuda.so.1 without
LD_LIBRARY_PATH (a launcher that resets it, `env -i`, `ldconfig -p`, a dlopen after clearing it).

The NVIDIA toolkit writes /etc/ld.so.conf.d/ into the container and runs ldconfig there as root; P and R modes
cannot run the image's ldconfig on the image's own cache as this user, and the image's cache must not change
(the container may be shared by nodes with other drivers, and by runs without --nvidia). Instead the image's
/etc/ld.so.cache is read, the injected libraries (their container paths, /.udocker/nvidia/lib64/...) are
added, and the result is written once per content to the container's directory (engine/inject/) and bound
over /etc/ld.so.cache for this run only. Runs without --nvidia see the image's own cache.

Written in glibc's new format ("glibc-ld.so.cache1.1", glibc 2.32 and later read only this one and older ones
read it too): entries sorted as ldconfig sorts them (the loader searches them by bisection), by name in
_dl_cache_libcmp's order (digit runs compared as numbers), descending, then by flags, descending. The image's
entries come first among equal names, so a library of the image's own keeps precedence as it does with
LD_LIBRARY_PATH. Entries for glibc-hwcaps subdirectories (hwcap bit 62, described by the cache's extension
section, not copied) are left out: the loader then uses the plain entries of the same names.
"""

import functools
import hashlib
import os
import struct

from udocker.inject import libraries

_HWCAP_EXTENSION = 1 << 62
_ENDIAN = 2 if struct.pack("=I", 1) == struct.pack("<I", 1) else 3  # cache_file_new_flags_endian_*
_LIBC6 = 0x0003  # FLAG_ELF_LIBC6
_MACHINE_FLAGS = {"x86_64": 0x0300, "aarch64": 0x0A00, "ppc64le": 0x0500, "s390x": 0x0400, "riscv64": 0x1000}


def read_entries(data):
    """[(flags, name, path, osversion, hwcap)] of the new-format part of cache bytes `data`, [] when none."""
    start = 0
    if not data.startswith(libraries.NEW_MAGIC):
        if not data.startswith(libraries.OLD_MAGIC) or len(data) < 16:
            return []
        (nlibs,) = struct.unpack_from("=I", data, 12)
        start = (16 + nlibs * 12 + 7) & ~7
        if data[start:start + len(libraries.NEW_MAGIC)] != libraries.NEW_MAGIC:
            return []
    header, entry = struct.Struct("=20sIIB3xI12x"), struct.Struct("=iIIIQ")
    if len(data) < start + header.size:
        return []
    nlibs = header.unpack_from(data, start)[1]
    found = []
    for index in range(nlibs):
        at = start + header.size + index * entry.size
        if at + entry.size > len(data):
            break
        flags, key, value, osversion, hwcap = entry.unpack_from(data, at)
        found.append((flags, _string(data, start + key), _string(data, start + value), osversion, hwcap))
    return found


def _string(data, offset):
    end = data.find(b"\0", offset)
    return data[offset:end if end >= 0 else len(data)].decode("utf-8", "surrogateescape")


def libcmp(left, right):
    """glibc's _dl_cache_libcmp: < 0, 0, > 0; runs of digits compare as numbers, a digit sorts after others."""
    i = j = 0
    while i < len(left):
        a = left[i]
        b = right[j] if j < len(right) else ""
        if a.isdigit() and b.isdigit():
            i2, j2 = i, j
            while i2 < len(left) and left[i2].isdigit():
                i2 += 1
            while j2 < len(right) and right[j2].isdigit():
                j2 += 1
            if int(left[i:i2]) != int(right[j:j2]):
                return int(left[i:i2]) - int(right[j:j2])
            i, j = i2, j2
        elif a.isdigit():
            return 1
        elif b.isdigit():
            return -1
        elif a != b:
            return ord(a) - (ord(b) if b else 0)
        else:
            i, j = i + 1, j + 1
    return 0 - (ord(right[j]) if j < len(right) else 0)


def _order(one, other):
    by_name = libcmp(other[1], one[1])
    return by_name if by_name else other[0] - one[0]


def build(entries):
    """New-format cache bytes for [(flags, name, path, osversion, hwcap)], sorted as ldconfig sorts them."""
    ordered = sorted(entries, key=functools.cmp_to_key(_order))
    header_size, entry_size = 48, 24
    strings = bytearray()
    packed = []
    base = header_size + entry_size * len(ordered)
    for flags, name, path, osversion, hwcap in ordered:
        key = base + len(strings)
        strings += name.encode("utf-8", "surrogateescape") + b"\0"
        value = base + len(strings)
        strings += path.encode("utf-8", "surrogateescape") + b"\0"
        packed.append(struct.pack("=iIIIQ", flags, key, value, osversion, hwcap))
    head = struct.pack("=20sIIB3xI12x", libraries.NEW_MAGIC, len(ordered), len(strings), _ENDIAN, 0)
    return head + b"".join(packed) + bytes(strings)


def merged(image_cache, injected):
    """Cache bytes: the image's entries (bytes of its cache) then `injected` [(name, container path, bits)]."""
    own = [e for e in read_entries(image_cache) if not e[4] & _HWCAP_EXTENSION]
    flags64 = next((e[0] for e in own if e[1] == "libc.so.6" and e[0] & 0xFF00), None)
    if flags64 is None:
        flags64 = _LIBC6 | _MACHINE_FLAGS.get(os.uname().machine, 0x0300)
    added = [(flags64 if bits == 64 else _LIBC6, name, path, 0, 0) for name, path, bits in injected]
    return build(own + added)


def container_cache(rootfs, injected, directory):
    """Host path of the image's loader cache with `injected` [(name, container path, bits)] added, written
    into `directory` once per content. An image without a cache (built from copied files, or musl, whose
    loader reads none) gets one of the injected libraries alone: glibc's loader still searches its default
    directories after the cache. None when the image's cache is a link or in a format not understood here."""
    image_path = os.path.join(rootfs, "etc/ld.so.cache")
    if os.path.islink(image_path):  # not followed out of the container
        return None
    try:
        with open(image_path, "rb") as stream:
            image_cache = stream.read()
    except FileNotFoundError:
        image_cache = b""
    except OSError:
        return None
    if image_cache and not read_entries(image_cache):
        return None
    data = merged(image_cache, injected)
    path = os.path.join(directory, "ld.so.cache-" + hashlib.sha256(data).hexdigest()[:16])
    if _content(path) != data:  # a run's own ldconfig (P modes) may have renamed a new cache onto it
        from udocker import fs

        os.makedirs(directory, exist_ok=True)
        fs.atomic_write(path, data)
    return path


def _content(path):
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError:
        return None
