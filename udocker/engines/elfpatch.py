"""ELF inspection and reversible patching for the fakechroot modes (F2: the loader; F3/F4: every program).

THE RULE: never modify a container file in place. Container files may be hard links shared with other
containers and with the image cache (the store shares unpacked files between containers and makes them
read-only), so writing into one would change every container. To patch a file: copy it to a temporary name
in the same directory, patch the copy, move the original (the inode, untouched) into the engine's store of
originals, then rename the copy over the name. Undoing is one rename back, which restores the exact inode
(content, mode, owner, times, link count) that create() left.

The store of originals mirrors the rootfs: <engine_dir>/orig/<path in rootfs>. It is itself the record of
what was patched, so a crash half-way leaves nothing that restore_tree() cannot undo; <engine_dir>/patched
lists the inode numbers of the patched copies, so restore_tree() leaves alone a file the user replaced later.

ELF facts used here (System V ABI, gABI "Program Header" and "Dynamic Section"; ld.so(8)):
  PT_INTERP names the program interpreter, read by the kernel at exec without any chroot translation;
  DT_RPATH is searched for every library the object and, for the executable, all its dependencies load,
  unless the object has DT_RUNPATH, which only applies to the object's own direct dependencies.
Module imports stay light: this module is imported on the `run` path of the F4 mode.
"""

import os
import struct

ELF_MAGIC = b"\x7fELF"
PT_DYNAMIC, PT_INTERP, PT_LOAD = 2, 3, 1
DT_NULL, DT_STRTAB, DT_RPATH, DT_RUNPATH = 0, 5, 15, 29
TMP_PREFIX = ".udocker-patch-"


class ElfInfo:
    """What the fakechroot engine needs from an ELF file. interp: the PT_INTERP string or None (static
    executable or shared library); dynamic: has PT_DYNAMIC; rpath/runpath: the strings or None."""

    __slots__ = ("interp", "dynamic", "rpath", "runpath", "elfclass", "machine")

    def __init__(self, *, interp=None, dynamic=False, rpath=None, runpath=None, elfclass=2, machine=0):
        self.interp = interp
        self.dynamic = dynamic
        self.rpath = rpath
        self.runpath = runpath
        self.elfclass = elfclass
        self.machine = machine

    def __repr__(self):
        return f"ElfInfo(interp={self.interp!r}, dynamic={self.dynamic}, rpath={self.rpath!r}, " \
               f"runpath={self.runpath!r})"


def is_elf(path):
    """True when `path` is a regular file starting with the ELF magic bytes (symbolic links not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, 4) == ELF_MAGIC
    finally:
        os.close(fd)


def read_elf(path):
    """The ElfInfo of `path`, or None when it is not a readable, well-formed ELF file."""
    try:
        with open(path, "rb") as stream:
            return _parse(stream)
    except (OSError, struct.error, ValueError, IndexError):
        return None


def _parse(stream):
    ident = stream.read(16)
    if len(ident) < 16 or ident[:4] != ELF_MAGIC or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return None
    end = "<" if ident[5] == 1 else ">"
    wide = ident[4] == 2
    head = struct.unpack(end + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"), stream.read(48 if wide else 36))
    machine, phoff, phentsize, phnum = head[1], head[4], head[8], head[9]
    phfmt = end + ("IIQQQQQQ" if wide else "IIIIIIII")
    segments = []
    stream.seek(phoff)
    table = stream.read(phentsize * phnum)
    for i in range(phnum):
        fields = struct.unpack_from(phfmt, table, i * phentsize)
        if wide:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz
            segments.append((fields[0], fields[2], fields[3], fields[5]))
        else:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz
            segments.append((fields[0], fields[1], fields[2], fields[4]))
    info = ElfInfo(elfclass=ident[4], machine=machine)
    for ptype, offset, _vaddr, size in segments:
        if ptype == PT_INTERP:
            stream.seek(offset)
            info.interp = stream.read(size).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif ptype == PT_DYNAMIC:
            info.dynamic = True
            _read_dynamic(stream, end, wide, offset, size, segments, info)
    return info


def _read_dynamic(stream, end, wide, offset, size, segments, info):
    fmt = end + ("qQ" if wide else "iI")
    step = struct.calcsize(fmt)
    stream.seek(offset)
    table = stream.read(size)
    strtab = rpath = runpath = None
    for pos in range(0, len(table) - step + 1, step):
        tag, value = struct.unpack_from(fmt, table, pos)
        if tag == DT_NULL:
            break
        if tag == DT_STRTAB:
            strtab = value
        elif tag == DT_RPATH:
            rpath = value
        elif tag == DT_RUNPATH:
            runpath = value
    if strtab is None or (rpath is None and runpath is None):
        return
    base = _file_offset(strtab, segments)
    if rpath is not None:
        info.rpath = _string_at(stream, base + rpath)
    if runpath is not None:
        info.runpath = _string_at(stream, base + runpath)


def _file_offset(vaddr, segments):
    for ptype, offset, seg_vaddr, size in segments:
        if ptype == PT_LOAD and seg_vaddr <= vaddr < seg_vaddr + size:
            return vaddr - seg_vaddr + offset
    raise ValueError("string table outside the loaded segments")


def _string_at(stream, offset):
    stream.seek(offset)
    data = b""
    while b"\0" not in data:
        chunk = stream.read(256)
        if not chunk:
            break
        data += chunk
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


# --- the loader (F2) -------------------------------------------------------------------------------------

# Host files that glibc's ld.so opens by absolute path, whatever the chroot: the cache of library locations
# and the list of libraries preloaded into every process. The default search directories are a
# NUL-separated list whose lengths are compiled in, so each is replaced by a string of the same length.
_LOADER_FILES = (b"/etc/ld.so.cache", b"/etc/ld.so.preload")


def _blank(path):
    """A same-length absolute path that does not exist on any sane host: '/lib/' -> '/###/'."""
    if path.endswith(b"/"):
        return b"/" + b"#" * (len(path) - 2) + b"/"
    return b"/" + b"#" * (len(path) - 1)


def loader_replacements(data):
    """The (offset, old, new) byte replacements that stop glibc's ld.so `data` from reading host paths."""
    import re

    found = []
    for name in _LOADER_FILES:
        for match in re.finditer(re.escape(name + b"\0"), data):
            found.append((match.start(), name, _blank(name)))
    # Default library directories: NUL-delimited strings such as /lib/x86_64-linux-gnu/ or /usr/lib64/.
    for match in re.finditer(rb"(?<=\0)/(?:usr/)?lib(?:32|64|x32)?/(?:[A-Za-z0-9_.+-]+/)?(?=\0)", data):
        found.append((match.start(), match.group(0), _blank(match.group(0))))
    return sorted(found)


def patch_loader(source, target):
    """Write to `target` a copy of the loader `source` that never opens the host's ld.so.cache,
    ld.so.preload or default library directories. Returns the replacements made as (offset, old, new).
    Raises ValueError when `source` contains no ld.so.cache path (not a glibc loader)."""
    with open(source, "rb") as stream:
        data = bytearray(stream.read())
    changes = loader_replacements(bytes(data))
    if not any(old == b"/etc/ld.so.cache" for _, old, _ in changes):
        raise ValueError(f"{source} does not look like glibc's dynamic loader")
    for offset, old, new in changes:
        assert len(old) == len(new) and data[offset:offset + len(old)] == old
        data[offset:offset + len(new)] = new
    from udocker import fs

    with fs.atomic_output(target, mode=0o755) as stream:
        stream.write(data)
    return changes


# --- programs and libraries (F3, F4) ---------------------------------------------------------------------


def find_elf_files(rootfs, *, newer_than=None, skip=()):
    """Paths relative to `rootfs` of the regular ELF files under it (symbolic links not followed; other
    file systems included). With newer_than, only files whose status changed after that time (st_ctime:
    a copy, an extraction or a rename into place all set it, an mtime kept by cp -p or tar does not hide it).
    `skip`: top-level names to leave out."""
    found = []
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(rootfs, rel) if rel else rootfs))
        except OSError:
            continue
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not (rel == "" and entry.name in skip):
                        stack.append(child)
                    continue
                if not entry.is_file(follow_symlinks=False) or entry.name.startswith(TMP_PREFIX):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_size < 64 or (newer_than is not None and st.st_ctime <= newer_than):
                continue
            if is_elf(entry.path):
                found.append(child)
    found.sort()
    return found


def map_rpath(rpath, rootfs):
    """The entries of an original DT_RPATH/DT_RUNPATH, absolute ones moved under `rootfs`."""
    entries = []
    for entry in (rpath or "").split(":"):
        if entry.startswith("/"):
            entries.append(rootfs + entry)
        elif entry:
            entries.append(entry)  # $ORIGIN-relative entries already point inside the container
    return entries


def plan_patch(info, *, rootfs, interpreters, libdirs):
    """The patchelf arguments that make one ELF file use the container (empty: leave it alone).

    Executables (PT_INTERP) get the patched interpreter from `interpreters` (container path -> host path)
    and a DT_RPATH of their own entries plus the container's library directories `libdirs` (host paths).
    Shared libraries get a new DT_RPATH only when they already carry one: the others inherit the
    executable's DT_RPATH for their dependencies (ld.so(8) search order), so patching them buys nothing.
    """
    if info is None or not info.dynamic:
        return []
    own = info.runpath if info.runpath is not None else info.rpath
    args = []
    if info.interp:
        new_interp = interpreters.get(info.interp)
        if new_interp is None or new_interp == info.interp:
            return []  # another architecture or libc, or already patched
        args += ["--set-interpreter", new_interp]
    elif own is None:
        return []
    elif all(entry.startswith(rootfs) or entry.startswith("$ORIGIN") for entry in own.split(":") if entry):
        return []  # already points into the container
    rpath = []
    for entry in map_rpath(own, rootfs) + list(libdirs):
        if entry not in rpath:
            rpath.append(entry)
    return args + ["--force-rpath", "--set-rpath", ":".join(rpath)]


def replace_with_patched(rootfs, rel, store, patch):
    """Follow THE RULE for one file: copy rootfs/rel, run `patch(copy_path)`, move the original to
    store/rel and the patched copy into its place. Returns the patched copy's inode number. On failure the
    original stays where it was and the copy is removed. The file's directory must be writable."""
    import shutil

    from udocker import fs

    path = os.path.join(rootfs, rel)
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{name}")
    mode = os.lstat(path).st_mode & 0o7755  # never writable by group or others
    if os.path.lexists(tmp):
        os.unlink(tmp)  # left by a killed run whose pid this one has again
    try:
        fs.copy_file(path, tmp, mode | 0o600)
        patch(tmp)
        shutil.copystat(path, tmp, follow_symlinks=False)
        os.chmod(tmp, mode)
        saved = os.path.join(store, rel)
        os.makedirs(os.path.dirname(saved), exist_ok=True)
        os.rename(path, saved)
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return os.lstat(path).st_ino


def patch_tree(rootfs, *, store, patchelf, interpreters, libdirs, newer_than=None, skip=()):
    """Patch every ELF file under `rootfs` that plan_patch() selects, in parallel, following THE RULE.
    Returns ({rel: inode of the patched copy}, [(rel, error message)]): a file patchelf cannot handle is
    left as it was and reported, the others are still patched."""
    tasks = _plan_tree(rootfs, lambda info: plan_patch(info, rootfs=rootfs, interpreters=interpreters,
                                                       libdirs=libdirs), newer_than=newer_than, skip=skip)
    return _replace_all(rootfs, tasks, patchelf, store)


def _plan_tree(rootfs, plan, **which):
    """[(rel, patchelf arguments)] of the ELF files under `rootfs` (find_elf_files(rootfs, **which)) for which
    `plan(read_elf(file))` gives arguments."""
    tasks = []
    for rel in find_elf_files(rootfs, **which):
        args = plan(read_elf(os.path.join(rootfs, rel)))
        if args:
            tasks.append((rel, args))
    return tasks


def _replace_all(rootfs, tasks, patchelf, store):
    """Carry out `tasks` in place, following THE RULE (replace_with_patched: the originals go to `store`).
    Returns ({rel: inode of the patched copy}, [(rel, error message)])."""
    return _run_tasks(rootfs, tasks, patchelf, lambda rel, patch: replace_with_patched(rootfs, rel, store, patch))


def _run_tasks(rootfs, tasks, patchelf, apply):
    """Run `apply(rel, patch)` for each (rel, patchelf arguments) of `tasks` in parallel, `patch(path)` running
    patchelf with those arguments on `path`, the files' directories under `rootfs` made writable meanwhile (None:
    apply changes nothing there); returns ({rel: what apply returned}, [(rel, error message)])."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    def one(task):
        rel, args = task

        def run_patchelf(tmp):
            result = subprocess.run([patchelf, *args, tmp], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, check=False)
            if result.returncode:
                raise OSError(result.stdout.decode("utf-8", "replace").strip() or f"exit {result.returncode}")

        try:
            return rel, apply(rel, run_patchelf), None
        except OSError as exc:
            return rel, None, str(exc)

    done, errors = {}, []
    directories = sorted({os.path.dirname(os.path.join(rootfs, rel)) for rel, _ in tasks}) if rootfs else []
    with writable(directories):
        with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 2)) as pool:
            for rel, result, error in pool.map(one, tasks):
                if error is None:
                    done[rel] = result
                else:
                    errors.append((rel, error))
    return done, errors


# --- udocker 1.3's F3/F4 patches, undone ------------------------------------------------------------------
# 1.3's patchelf (--set-root-prefix) put the host path of the container's ROOT in front of each program's
# PT_INTERP and of each absolute DT_RPATH/DT_RUNPATH entry ("ROOT" + "/" + path): taking it off again gives
# the paths the image had, which is what an export, a clone or udocker 2's own modes need.


def strip_prefix(path, prefixes):
    """The container path that `path` stands for when it starts with one of `prefixes` (host paths of a
    container's root), else None."""
    for prefix in prefixes:
        prefix = prefix.rstrip("/")
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            return "/" + path[len(prefix):].lstrip("/")
    return None


def plan_unprefix(info, prefixes):
    """The patchelf arguments that give one ELF file back the PT_INTERP and DT_RPATH/DT_RUNPATH it had before
    udocker 1.3 prefixed them with one of `prefixes`; empty when neither carries one."""
    if info is None or not info.dynamic:
        return []
    args = []
    if info.interp:
        inner = strip_prefix(info.interp, prefixes)
        if inner is not None:
            args += ["--set-interpreter", inner]
    own = info.runpath if info.runpath is not None else info.rpath
    if own:
        entries = [strip_prefix(entry, prefixes) or entry for entry in own.split(":")]
        if ":".join(entries) != own:
            args += ([] if info.runpath is not None else ["--force-rpath"]) + ["--set-rpath", ":".join(entries)]
    return args


def unprefix_plan(rootfs, prefixes):
    """[(rel, patchelf arguments)] for the ELF files under `rootfs` that carry one of `prefixes`."""
    return _plan_tree(rootfs, lambda info: plan_unprefix(info, prefixes))


def unprefix_tree(rootfs, tasks, *, patchelf, store):
    """Carry out unprefix_plan()'s `tasks` in place, following THE RULE (the originals go to `store`, which the
    caller removes). Returns [(rel, error message)] of the files patchelf could not fix."""
    return _replace_all(rootfs, tasks, patchelf, store)[1]


def unprefixed_copies(rootfs, tasks, *, patchelf, scratch):
    """Carry out unprefix_plan()'s `tasks` on copies: `scratch`/<rel> gets each file with its prefix taken off;
    `rootfs` is not changed. Returns ({rel: the copy's path}, [(rel, error message)])."""
    import shutil

    from udocker import fs

    def copy(rel, patch):
        target = os.path.join(scratch, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        mode = os.lstat(os.path.join(rootfs, rel)).st_mode & 0o7777
        fs.copy_file(os.path.join(rootfs, rel), target, mode | 0o600)
        patch(target)
        shutil.copystat(os.path.join(rootfs, rel), target, follow_symlinks=False)
        return target

    return _run_tasks(None, tasks, patchelf, copy)


def restore_tree(rootfs, store, patched):
    """Move every original under `store` back into `rootfs`, then remove `store`. A file whose inode is no
    longer the patched copy recorded in `patched` ({rel: inode}) was replaced by the user: it is kept and
    the original dropped. Returns the relative paths restored."""
    import shutil

    moves = []
    for rel in _files_under(store):
        path = os.path.join(rootfs, rel)
        try:
            current = os.lstat(path).st_ino
        except FileNotFoundError:
            continue  # deleted by the user since: theirs wins
        expected = patched.get(rel)
        if expected is None or current == expected:
            moves.append(rel)
    with writable(sorted({os.path.dirname(os.path.join(rootfs, rel)) for rel in moves})):
        for rel in moves:
            os.replace(os.path.join(store, rel), os.path.join(rootfs, rel))
    shutil.rmtree(store, ignore_errors=True)
    return moves


def _files_under(top):
    out = []
    for directory, _dirs, files in os.walk(top):
        for name in files:
            out.append(os.path.relpath(os.path.join(directory, name), top))
    return sorted(out)


class writable:
    """Make directories writable by their owner while files are renamed in them, then put their modes
    back: unpacked image trees may hold read-only directories (the store makes shared trees read-only)."""

    def __init__(self, directories):
        self.directories = list(directories)
        self.changed = []

    def __enter__(self):
        for directory in self.directories:
            mode = os.stat(directory).st_mode & 0o7777
            if not mode & 0o200:
                os.chmod(directory, mode | 0o200)
                self.changed.append((directory, mode))
        return self

    def __exit__(self, *exc):
        for directory, mode in reversed(self.changed):
            os.chmod(directory, mode)
        return False
