"""Apply image layers to a container rootfs, as an unprivileged user, following the OCI image-spec layer.md.

Each layer is read once, as a stream (tar, tar+gzip; tar+zstd where the standard library has
`compression.zstd`, Python 3.14+). The compression is taken from the content's magic bytes, so a
mislabelled layer still unpacks; the media type only has to be a layer type.

Changeset rules (layer.md "Applying Changesets"):
- `.wh.<name>` deletes `<name>` of the lower layers; entries of the same layer are never hidden by it,
  whatever the tar order. `.wh..wh..opq` empties its directory of lower-layer entries, keeping those
  of the same layer (before or after it in the tar). Other `.wh..wh.*` names (aufs metadata) are
  ignored. No whiteout file is ever written to the rootfs.
- A member replaces whatever is at its path (file, symlink or directory, like Docker), except that a
  directory over a directory merges and takes the new mode. Duplicate members: the later wins.
- Hard links are made inside the rootfs (`linkname` is rootfs-relative, a leading `/` is stripped);
  symlink targets are stored as they are and never followed while unpacking.

Permissions: ownership is never applied nor recorded (the user owns everything). setuid and setgid
bits are dropped (notice), and so are group and other write bits, silently: the repository is private,
and the container's user owns every entry, so an image's /tmp (1777) becomes 1755 and programs in the
container can still write there. Files keep their mode plus u+r; directories get their mode plus u+rwx at
once, so later layers can write into a 0555 directory and the user can always delete the container
(`shutil.rmtree` works); there is no deferred pass to restore modes. mtimes are set on files and
symlinks (Python compares .py mtimes with their .pyc), not on directories.

Safety: every path is walked component by component from a directory fd of the rootfs with
O_NOFOLLOW, and every change is made relative to a directory fd (openat, mkdirat, linkat, unlinkat),
so no member can reach outside the rootfs. What happens to each hostile member:
- `..` component in a name, link target or whiteout (`../x`, `a/../../.wh.x`): error.
- Absolute name (`/etc/x`): the leading `/` is stripped, as tar does; written inside the rootfs.
- A parent component that is a symlink (`a -> /` then `a/etc/passwd`, a symlink loop, a symlink that
  replaced a directory and is then written into), for members, hard-link targets and whiteouts: error.
  (Docker resolves such symlinks inside the rootfs; image builders never produce such members.)
- A parent component that is a file: error.
- Hard link to a missing target (e.g. `/etc/passwd` when the rootfs has none) or to a directory: error.
- NUL byte in a name or link target: error. A name component longer than the file system allows:
  error (from the system call). Paths have no length limit of their own.
- Character and block devices, and every entry under `/dev`: skipped with a notice; so is a hard link
  to a skipped member.
- FIFOs: created; skipped with a notice where the system refuses.
- Other member types (tar volume headers, ...): skipped with a notice. A member naming the rootfs
  itself (`./`) is ignored: the rootfs mode is the caller's.
- Names are decoded as UTF-8 with surrogateescape (undecodable bytes survive); messages escape them.
- Sparse members are written with holes, and all-zero 1 MiB blocks of large files are left as holes,
  so a huge sparse file or a gzip bomb of zeros takes only the disk its real data needs; an apparent
  size beyond what the file system supports fails with an error.
- A layer whose uncompressed tar stream exceeds `max_size` bytes (config key max_layer_size) fails with an
  error naming the layer, however its data would be stored.
Errors raise UnpackError naming the layer and the member, e.g.
`unsafe path in layer sha256:0123456789ab…: ../etc/passwd`. After an error the rootfs is incomplete
(everything in it is still inside it and removable by the user): the caller should delete it.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Sequence
from itertools import islice
from typing import BinaryIO

from udocker.errors import UnpackError

CHUNK = 1 << 20
_ZERO_CHUNK = bytes(CHUNK)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DIR_FDS = 64
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_SUID_SGID = stat.S_ISUID | stat.S_ISGID
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LAYER_SUFFIXES = (".tar", "+gzip", ".gzip", "+zstd")
_BAD_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
_NOT_SHARED = ~(stat.S_IWGRP | stat.S_IWOTH)  # group and other write bits are never applied


@dataclasses.dataclass(frozen=True)
class LayerSource:
    """A layer blob on disk: `path` to the blob file, its descriptor's `media_type`, and `name` for
    messages (the digest; the file name when empty)."""

    path: str
    media_type: str
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or os.path.basename(self.path)

    def open(self) -> BinaryIO:
        return open(self.path, "rb")


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something skipped or changed while unpacking (a device node, a dropped setuid bit)."""

    layer: str
    member: str
    reason: str

    def __str__(self) -> str:
        return f"{self.reason} in layer {_short(self.layer)}: {_shown(self.member)}"


@dataclasses.dataclass(frozen=True)
class UnpackReport:
    """`layers` applied, `entries` created or changed (whiteouts included), the `notices` given."""

    layers: int = 0
    entries: int = 0
    notices: tuple[Notice, ...] = ()


NoticeCallback = Callable[[Notice], None]


class _Refused(Exception):
    """A member that must not be applied; becomes an UnpackError naming the layer and member."""


def apply_layers(rootfs: str, layers: Sequence[LayerSource], *,
                 on_notice: NoticeCallback | None = None, max_size: int = 0) -> UnpackReport:
    """Apply `layers` in order (lowest first) to `rootfs`, created if missing.

    Raises UnpackError at the first unsafe or unreadable member, or when a layer's uncompressed tar stream
    exceeds `max_size` bytes (0: no limit); the layers before it stay applied. `on_notice` is called for
    each notice as it happens; the report lists them all.
    """
    target = _Rootfs(rootfs, on_notice, max_size)
    try:
        for layer in layers:
            try:
                stream = layer.open()
            except OSError as exc:
                raise UnpackError(f"cannot read layer {_short(layer.label)}: {exc.strerror}",
                                  layer=layer.label) from None
            with stream:
                target.apply(stream, layer.media_type, layer.label)
        return target.report()
    finally:
        target.close()


def apply_layer(rootfs: str, stream: BinaryIO, media_type: str, *, name: str = "layer",
                on_notice: NoticeCallback | None = None) -> UnpackReport:
    """Apply one layer read from the binary `stream` (left open) to `rootfs`; see apply_layers."""
    target = _Rootfs(rootfs, on_notice)
    try:
        target.apply(stream, media_type, name)
        return target.report()
    finally:
        target.close()


def _short(label: str) -> str:
    algorithm, _, hexdigest = label.partition(":")
    return f"{algorithm}:{hexdigest[:12]}…" if hexdigest and len(hexdigest) > 12 else label


def _shown(name: str, limit: int = 200) -> str:
    """`name` safe to print: non-printable characters (NUL, undecodable bytes) escaped, long names cut."""
    if not name.isprintable():
        name = name.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        name = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in name)
    return name if len(name) <= limit else name[:limit] + "…"


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: always chmod after creating


def _normalise(name: str) -> str:
    """`name` relative to the rootfs, "" for the root itself; _Refused for `..` or NUL."""
    if "\x00" in name:
        raise _Refused("NUL byte in name")
    parts = [part for part in name.split("/") if part and part != "."]
    if ".." in parts:
        raise _Refused("unsafe path")
    return "/".join(parts)


def _decompressed(stream: BinaryIO, media_type: str, label: str) -> BinaryIO:
    if not media_type.endswith(_LAYER_SUFFIXES):
        raise UnpackError(f"unsupported layer media type {media_type}: {_short(label)}", layer=label)
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # type: ignore[arg-type]
    magic = stream.peek(4)[:4]
    if magic.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if magic == _ZSTD_MAGIC:
        try:
            from compression import zstd  # Python 3.14+; no third-party zstd dependency
        except ImportError:
            raise UnpackError(f"layer {_short(label)} is compressed with zstd, which this Python cannot "
                              "decompress", hint="use Python 3.14 or newer, or an image with gzip layers",
                              layer=label) from None
        return zstd.ZstdFile(stream)  # type: ignore[no-any-return]
    return stream


class _Dirs:
    """Directory fds of the rootfs by relative path, opened without following symlinks.

    A bounded cache: tar members come grouped by directory, so the parent is nearly always cached.
    """

    def __init__(self, root_fd: int):
        self.root = root_fd
        self.fds: dict = {}

    def get(self, rel: str, *, create: bool = True) -> int | None:
        """The fd of directory `rel` (made, with its parents, when `create`; else None if missing)."""
        if not rel:
            return self.root
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        base, pos = self.root, 0
        cut = rel.rfind("/")
        while cut > 0:
            fd = self.fds.get(rel[:cut])
            if fd is not None:
                base, pos = fd, cut + 1
                break
            cut = rel.rfind("/", 0, cut)
        current, owned = base, False
        try:
            while True:
                end = rel.find("/", pos)
                fd = self._open(current, rel[pos:] if end < 0 else rel[pos:end], rel if end < 0 else rel[:end],
                                create=create)
                if owned:
                    os.close(current)
                current, owned = fd, fd is not None
                if fd is None or end < 0:
                    break
                pos = end + 1
        except BaseException:
            if owned:
                os.close(current)
            raise
        if current is not None:
            self.fds[rel] = current
        return current

    @staticmethod
    def _open(parent: int, name: str, rel: str, *, create: bool) -> int | None:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise _Refused(f"path through symlink {rel}") from None
            if not stat.S_ISDIR(st.st_mode):
                raise _Refused(f"parent {rel} is not a directory") from None
            raise

    def forget(self, rel: str) -> None:
        """Close the fds of `rel` and below (it was removed)."""
        prefix = rel + "/"
        for key in [key for key in self.fds if key == rel or key.startswith(prefix)]:
            os.close(self.fds.pop(key))

    def trim(self) -> None:
        if len(self.fds) > _MAX_DIR_FDS:
            for key in list(islice(self.fds, len(self.fds) - _MAX_DIR_FDS // 2)):
                os.close(self.fds.pop(key))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        os.close(self.root)


def _list(fd: int) -> list[str]:
    st = os.fstat(fd)
    if st.st_mode & 0o700 != 0o700:  # a directory not made by us: make it listable and writable
        os.fchmod(fd, st.st_mode & 0o7777 | 0o700)
    return os.listdir(fd)


def _rmtree(parent: int, name: str) -> None:
    """Remove directory `name` of `parent` and everything under it, never following a symlink.

    Iterative, so a hostile deep tree cannot exhaust the Python stack.
    """
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    stack = [(parent, name, fd, _list(fd))]
    try:
        while stack:
            up, dname, dfd, names = stack[-1]
            if names:
                child = names.pop()
                try:
                    os.unlink(child, dir_fd=dfd)
                except IsADirectoryError:
                    cfd = os.open(child, _DIR_FLAGS, dir_fd=dfd)
                    stack.append((dfd, child, cfd, []))  # pushed first: closed by `finally` if _list fails
                    stack[-1][3].extend(_list(cfd))
                continue
            stack.pop()
            os.close(dfd)
            os.rmdir(dname, dir_fd=up)
    finally:
        for _, _, dfd, _ in stack:
            os.close(dfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Rootfs:
    """The rootfs being built: its directory fds, the notices, the counters."""

    def __init__(self, path: str, on_notice: NoticeCallback | None, max_size: int = 0):
        try:
            os.makedirs(path, exist_ok=True)
            root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UnpackError(f"cannot open rootfs {path}: {exc.strerror}") from None
        self.dirs = _Dirs(root)
        self.on_notice = on_notice
        self.max_size = max_size
        self.umask = _umask()
        self.notices: list[Notice] = []
        self.layers = 0
        self.entries = 0
        self.label = ""
        self.touched: set[str] = set()  # paths made by the current layer, with their parents
        self.skipped: set[str] = set()  # paths of members skipped with a notice

    def close(self) -> None:
        self.dirs.close()

    def report(self) -> UnpackReport:
        return UnpackReport(layers=self.layers, entries=self.entries, notices=tuple(self.notices))

    def apply(self, stream: BinaryIO, media_type: str, label: str) -> None:
        self.label, self.touched = label, set()
        member = None
        plain = stream
        try:
            plain = _decompressed(stream, media_type, label)
            source = _Bounded(plain, self.max_size, label) if self.max_size else plain
            with tarfile.open(fileobj=source, mode="r|", encoding="utf-8", errors="surrogateescape") as archive:
                for member in archive:
                    self.dirs.trim()
                    self._member(archive, member)
        except _Refused as exc:
            name = member.name if member else ""
            raise UnpackError(f"{exc} in layer {_short(label)}: {_shown(name)}", layer=label, member=name,
                              hint="the image is corrupt or malicious") from None
        except _BAD_ARCHIVE as exc:
            raise UnpackError(f"layer {_short(label)} is not a valid tar archive: {exc}", layer=label) from None
        except OSError as exc:
            name = member.name if member else ""
            reason = (exc.strerror or str(exc)).lower()
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise UnpackError(f"{reason} in layer {_short(label)}: {_shown(name)}", layer=label, member=name,
                              hint="free some space in the repository's file system" if full else None) from None
        finally:
            if plain is not stream:
                plain.close()  # the decompressor only; the caller's stream stays open
        self.touched = set()
        self.layers += 1

    def _notice(self, member: tarfile.TarInfo, reason: str) -> None:
        notice = Notice(self.label, member.name, reason)
        self.notices.append(notice)
        if self.on_notice is not None:
            self.on_notice(notice)

    def _skip(self, member: tarfile.TarInfo, rel: str, reason: str) -> None:
        self.skipped.add(rel)  # so that a hard link to it is skipped too, not an error
        self._notice(member, reason)

    def _touch(self, rel: str) -> None:
        touched = self.touched
        touched.add(rel)
        cut = rel.rfind("/")
        while cut > 0 and rel[:cut] not in touched:
            touched.add(rel[:cut])
            cut = rel.rfind("/", 0, cut)

    def _member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = _normalise(member.name)
        if not rel:
            return  # the rootfs itself: its mode is the caller's
        parent, _, name = rel.rpartition("/")
        if rel.startswith("dev/"):
            self._skip(member, rel, "skipped entry under /dev")
            return
        if name.startswith(_WHITEOUT):
            self._whiteout(parent, name)
            self.entries += 1
            return
        if member.mode & _SUID_SGID and (member.isreg() or member.isdir()):
            self._notice(member, "dropped setuid/setgid bits")
        if member.isreg():
            self._file(archive, member, parent, name, rel)
        elif member.isdir():
            self._dir(member, parent, name, rel)
        elif member.issym():
            self._symlink(member, parent, name, rel)
        elif member.islnk():
            if not self._hardlink(member, parent, name, rel):
                return
        elif member.isfifo():
            if not self._fifo(member, parent, name, rel):
                return
        else:
            self._skip(member, rel, "skipped device node" if member.isdev() else "skipped unsupported member type")
            return
        self._touch(rel)
        self.entries += 1

    def _remove(self, parent: int, name: str, rel: str) -> None:
        """Remove whatever is at `name` of `parent`; nothing if it does not exist."""
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        except (IsADirectoryError, PermissionError):
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise
            self.dirs.forget(rel)
            _rmtree(parent, name)

    def _file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, parent: str, name: str, rel: str) -> None:
        mode = member.mode & 0o777 & _NOT_SHARED | 0o400
        pfd = self.dirs.get(parent)
        try:
            fd = os.open(name, _FILE_FLAGS, mode, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, name, rel)
            fd = os.open(name, _FILE_FLAGS, mode, dir_fd=pfd)
        try:
            if member.sparse is not None:
                _copy_sparse(archive, member, fd)
            elif member.size:
                _copy(archive, member, fd)
            if mode & self.umask:
                os.fchmod(fd, mode)
            _set_mtime(member, fd)
        finally:
            os.close(fd)

    def _dir(self, member: tarfile.TarInfo, parent: str, name: str, rel: str) -> None:
        mode = member.mode & 0o1777 & _NOT_SHARED | 0o700
        pfd = self.dirs.get(parent)
        try:
            os.mkdir(name, mode, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if st.st_mode & 0o7777 != mode:
                    os.chmod(name, mode, dir_fd=pfd)
                return
            self._remove(pfd, name, rel)
            os.mkdir(name, mode, dir_fd=pfd)
        if mode & self.umask:
            os.chmod(name, mode, dir_fd=pfd)

    def _symlink(self, member: tarfile.TarInfo, parent: str, name: str, rel: str) -> None:
        if "\x00" in member.linkname:
            raise _Refused("NUL byte in symlink target")
        pfd = self.dirs.get(parent)
        try:
            os.symlink(member.linkname, name, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, name, rel)
            os.symlink(member.linkname, name, dir_fd=pfd)
        _set_mtime(member, name, pfd)

    def _hardlink(self, member: tarfile.TarInfo, parent: str, name: str, rel: str) -> bool:
        target = _normalise(member.linkname)
        if not target:
            raise _Refused("unsafe hard link target")
        if target in self.skipped:
            self._skip(member, rel, "skipped hard link to a skipped entry")
            return False
        tparent, _, tname = target.rpartition("/")
        missing = _Refused(f"hard link target {member.linkname} missing")
        pfd = self.dirs.get(parent)
        try:
            try:
                os.link(tname, name, src_dir_fd=self._target_dir(tparent, missing), dst_dir_fd=pfd,
                        follow_symlinks=False)
            except FileExistsError:
                if target == rel:
                    raise
                self._remove(pfd, name, rel)  # may close the target's dir fd (target under rel): get it again
                os.link(tname, name, src_dir_fd=self._target_dir(tparent, missing), dst_dir_fd=pfd,
                        follow_symlinks=False)
        except FileNotFoundError:
            raise missing from None
        return True

    def _target_dir(self, rel: str, missing: _Refused) -> int:
        fd = self.dirs.get(rel, create=False)
        if fd is None:
            raise missing
        return fd

    def _fifo(self, member: tarfile.TarInfo, parent: str, name: str, rel: str) -> bool:
        mode = member.mode & 0o777 & _NOT_SHARED | 0o600
        pfd = self.dirs.get(parent)
        try:
            try:
                os.mkfifo(name, mode, dir_fd=pfd)
            except FileExistsError:
                self._remove(pfd, name, rel)
                os.mkfifo(name, mode, dir_fd=pfd)
        except PermissionError:
            self._skip(member, rel, "skipped fifo (not permitted)")
            return False
        if mode & self.umask:
            os.chmod(name, mode, dir_fd=pfd)
        return True

    def _whiteout(self, parent: str, name: str) -> None:
        """Apply `.wh.<name>` or `.wh..wh..opq` in directory `parent` (layer.md "Whiteouts")."""
        if name == _OPAQUE:
            self._opaque(parent)
            return
        if name.startswith(_WHITEOUT + _WHITEOUT):
            return  # aufs metadata (.wh..wh.plnk, ...): not part of the image
        target = name[len(_WHITEOUT):]
        if target in ("", ".", ".."):
            raise _Refused("unsafe whiteout")
        rel = f"{parent}/{target}" if parent else target
        if rel in self.touched:
            return  # a whiteout hides only lower layers' entries
        pfd = self.dirs.get(parent, create=False)
        if pfd is not None:
            self._remove(pfd, target, rel)

    def _opaque(self, top: str) -> None:
        """Remove the lower layers' entries under directory `top`, keeping this layer's."""
        pending = [top]
        while pending:
            rel = pending.pop()
            fd = self.dirs.get(rel, create=False)
            if fd is None:
                continue
            for name in _list(fd):
                child = f"{rel}/{name}" if rel else name
                if child not in self.touched:
                    self._remove(fd, name, child)
                elif stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    pending.append(child)


class _Bounded:
    """A reader of the uncompressed layer that fails once more than `limit` bytes came out of it."""

    def __init__(self, raw: BinaryIO, limit: int, label: str):
        self.raw, self.limit, self.label, self.count = raw, limit, label, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise UnpackError(f"layer {_short(self.label)} expands beyond max_layer_size ({self.limit} bytes)",
                              layer=self.label, hint="raise max_layer_size (0: no limit) if you trust this image")
        return data


def _read(archive: tarfile.TarFile, size: int) -> bytes:
    data = archive.fileobj.read(size)  # type: ignore[union-attr]
    if len(data) != size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def _copy(archive: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
    """Copy the member's data; all-zero 1 MiB blocks become holes (a gzip bomb of zeros costs no disk)."""
    source = archive.fileobj
    if source.tell() != member.offset_data:  # type: ignore[union-attr]
        source.seek(member.offset_data)  # type: ignore[union-attr]
    remaining = member.size
    if remaining <= CHUNK:
        _write_all(fd, _read(archive, remaining))
        return
    holes = False
    while remaining:
        data = _read(archive, min(remaining, CHUNK))
        remaining -= len(data)
        if len(data) == CHUNK and data == _ZERO_CHUNK:
            os.lseek(fd, CHUNK, os.SEEK_CUR)
            holes = True
        else:
            _write_all(fd, data)
    if holes:
        os.ftruncate(fd, member.size)


def _copy_sparse(archive: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
    """Write only the data regions of a GNU/PAX sparse member; the rest stays holes."""
    source = archive.fileobj
    if source.tell() != member.offset_data:  # type: ignore[union-attr]
        source.seek(member.offset_data)  # type: ignore[union-attr]
    for offset, size in member.sparse or ():
        os.lseek(fd, offset, os.SEEK_SET)
        while size:
            data = _read(archive, min(size, CHUNK))
            _write_all(fd, data)
            size -= len(data)
    os.ftruncate(fd, member.size)


def _set_mtime(member: tarfile.TarInfo, path: object, dir_fd: int | None = None) -> None:
    try:
        if dir_fd is None:
            os.utime(path, (member.mtime, member.mtime))  # type: ignore[arg-type]
        else:
            os.utime(path, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)  # type: ignore
    except (OSError, OverflowError, ValueError):
        pass  # an out-of-range mtime is not worth failing the layer for
