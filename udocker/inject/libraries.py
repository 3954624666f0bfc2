"""Finding the host's shared libraries the way its dynamic loader would, under a root directory.

`ldconfig -p` cannot be pointed at another root, so the linker cache (/etc/ld.so.cache) is read here. Its
two layouts, as glibc's ldconfig writes them (elf/cache.c, sysdeps/generic/dl-cache.h):
  old  "ld.so-1.7.0", uint32 nlibs, then nlibs entries {int32 flags; uint32 key, value}; key and value are
       offsets of NUL-terminated strings counted from the end of the entries. A new-format cache may follow
       the entries (aligned to 8 bytes): glibc < 2.32 wrote both ("compat" format).
  new  "glibc-ld.so.cache" "1.1", uint32 nlibs, uint32 len_strings, uint8 flags, 3 pad, uint32
       extension_offset, uint32 unused[3], then nlibs entries {int32 flags; uint32 key, value, osversion;
       uint64 hwcap}; offsets count from the start of the new-format header.
Byte order is the host's (the cache is only ever read on the machine that wrote it).
Directories searched besides the cache: /etc/ld.so.conf and what it includes (distributions and driver
packages put split directories such as /usr/lib64/nvidia there), then the data file's usual directories.
"""

import glob
import json
import os
import re
import struct

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_ENTRY = struct.Struct("=iII")
_NEW_HEADER = struct.Struct("=20sIIB3xI12x")
_NEW_ENTRY = struct.Struct("=iIIIQ")
# ldconfig's FLAG_REQUIRED_MASK values meaning a 64-bit library (dl-cache.h): sparc64, ia64, x86-64,
# s390x, ppc64, mips64 n64, aarch64, mips64 n64 nan2008, riscv64 (soft, double), loongarch64 (lp64d, lp64s).
_LIB64_FLAGS = {0x0100, 0x0200, 0x0300, 0x0400, 0x0500, 0x0700, 0x0A00, 0x0E00, 0x0F00, 0x1000, 0x1100, 0x1200}
_DRIVER_VERSION = re.compile(r"\.so\.(\d{3,}\.\d+(?:\.\d+)?)$")


def read_cache(path):
    """[(name, path, bits)] from a linker cache file, bits 64 or 32 (by the entry's flags), in cache order.
    An unreadable or unrecognised file gives []."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return []
    if data.startswith(NEW_MAGIC):
        return _read_new(data, 0)
    if not data.startswith(OLD_MAGIC) or len(data) < 16:
        return []
    (nlibs,) = struct.unpack_from("=I", data, 12)
    end = 16 + nlibs * _OLD_ENTRY.size
    new_at = (end + 7) & ~7
    if data[new_at:new_at + len(NEW_MAGIC)] == NEW_MAGIC:
        return _read_new(data, new_at)
    entries = []
    for index in range(nlibs):
        flags, key, value = _OLD_ENTRY.unpack_from(data, 16 + index * _OLD_ENTRY.size)
        entries.append((_string(data, end + key), _string(data, end + value), _bits(flags)))
    return entries


def _read_new(data, start):
    if len(data) < start + _NEW_HEADER.size:
        return []
    _, nlibs, _, _, _ = _NEW_HEADER.unpack_from(data, start)
    entries = []
    for index in range(nlibs):
        at = start + _NEW_HEADER.size + index * _NEW_ENTRY.size
        if at + _NEW_ENTRY.size > len(data):
            break
        flags, key, value, _, _ = _NEW_ENTRY.unpack_from(data, at)
        entries.append((_string(data, start + key), _string(data, start + value), _bits(flags)))
    return entries


def _string(data, offset):
    end = data.find(b"\0", offset)
    return data[offset:end if end >= 0 else len(data)].decode("utf-8", "replace")


def _bits(flags):
    return 64 if flags & 0xFF00 in _LIB64_FLAGS else 32


def conf_dirs(root, conf="/etc/ld.so.conf", *, depth=0):
    """Directories named by ld.so.conf and the files it includes (glob patterns), in order, as container-free
    absolute paths (not prefixed with root)."""
    found = []
    try:
        with open(under(root, conf), encoding="utf-8", errors="replace") as stream:
            lines = [line.split("#", 1)[0].strip() for line in stream]
    except OSError:
        return found
    for line in lines:
        if line.startswith("include") and depth < 8:
            for pattern in line.split()[1:]:
                pattern = pattern if pattern.startswith("/") else os.path.join(os.path.dirname(conf), pattern)
                for path in sorted(glob.glob(under(root, pattern))):
                    found += conf_dirs(root, "/" + os.path.relpath(path, root), depth=depth + 1)
        elif line.startswith("/"):
            found.append(os.path.normpath(line.split("=")[0]))
    return found


def under(root, path):
    """Host path of absolute `path` for the host tree at `root` ("/" is the real host)."""
    return os.path.normpath(root + "/" + path) if root != "/" else path


def elf_bits(path):
    """64 or 32 for an ELF file, None for anything else (or unreadable)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(5)
    except OSError:
        return None
    if len(head) == 5 and head[:4] == b"\x7fELF" and head[4] in (1, 2):
        return 32 if head[4] == 1 else 64
    return None


def driver_version_of(name):
    """'550.54.15' for libcuda.so.550.54.15, None for names without a driver-style version."""
    match = _DRIVER_VERSION.search(name)
    return match.group(1) if match else None


class Finder:
    """Finds libraries by base name ("libcuda.so") in a host tree: the directories of matching linker cache
    entries first, then ld.so.conf's, then `usual` directories. Directory listings are read once."""

    def __init__(self, root, usual, *, cache=None):
        self.root = root
        self._cache = read_cache(under(root, "/etc/ld.so.cache")) if cache is None else cache
        self._dirs = _unique(conf_dirs(root) + list(usual))
        self._listings = {}

    def _listing(self, directory):
        if directory not in self._listings:
            try:
                self._listings[directory] = sorted(os.listdir(under(self.root, directory)))
            except OSError:
                self._listings[directory] = []
        return self._listings[directory]

    def find(self, base, *, bits, version=None, extra_dirs=()):
        """[(host path, name)] of `base` and its versioned names (base + ".*") of class `bits`, all from the
        first directory that has one; names carrying another driver version than `version`, and links to
        them or to nothing, are left out (a leftover of an older driver)."""
        cached = [os.path.dirname(p) for n, p, b in self._cache if b == bits and _matches(n, base)]
        for directory in _unique(cached + self._dirs + list(extra_dirs)):
            found = []
            for name in self._listing(directory):
                if not _matches(name, base):
                    continue
                path = under(self.root, os.path.join(directory, name))
                real = resolved(self.root, path)
                if real is None or not os.path.isfile(real) or _stale(name, real, version):
                    continue
                if (elf_bits(real) or _bits_by_dir(directory)) != bits:
                    continue
                found.append((path, name))
            if found:
                return found
        return []


def _matches(name, base):
    return name == base or name.startswith(base + ".")


def _stale(name, real, version):
    if version is None:
        return False
    return any(v not in (None, version) for v in (driver_version_of(name), driver_version_of(real)))


def _bits_by_dir(directory):
    """Class of a non-ELF file (test trees) by its directory's name."""
    return 32 if re.search(r"lib32|i[3-6]86", directory) else 64


def resolved(root, path):
    """The file host path `path` leads to (links followed, absolute ones inside the tree at `root`), or None."""
    return os.path.realpath(path) if root == "/" else _real_in(root, path)


def _real_in(root, path, depth=0):
    """realpath of `path` inside the tree at `root`: absolute link targets are taken from root."""
    if depth > 40:
        return None
    if not os.path.islink(path):
        return path if os.path.exists(path) else None
    target = os.readlink(path)
    nxt = under(root, target) if target.startswith("/") else os.path.join(os.path.dirname(path), target)
    return _real_in(root, os.path.normpath(nxt), depth + 1)


def _unique(items):
    seen = set()
    return [i for i in items if not (i in seen or seen.add(i))]


_POLICIES = {}


def policy(name):
    """The parsed udocker/data/<name>.json (what to inject, as data), read once per process."""
    if name not in _POLICIES:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", name + ".json")
        with open(path, encoding="utf-8") as stream:
            _POLICIES[name] = json.load(stream)
    return _POLICIES[name]
