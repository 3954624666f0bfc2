"""Applying one layer's members to the rootfs: files, directories, links, fifos and whiteouts, following
layer.md's changeset rules (see udocker/unpack/__init__.py)."""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import BinaryIO

from udocker.errors import UnpackError
from udocker.unpack.dirs import Dirs, list_dir, normalise, rmtree
from udocker.unpack.report import Notice, NoticeCallback, Refused, UnpackReport, short, shown
from udocker.unpack.streams import BAD_ARCHIVE, Bounded, Forward, copy_data, copy_sparse, decompressed, set_mtime

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_SUID_SGID = stat.S_ISUID | stat.S_ISGID
_NOT_SHARED = ~(stat.S_IWGRP | stat.S_IWOTH)  # group and other write bits are never applied


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


class Rootfs:
    """The rootfs being built: its directory fds, the notices, the counters."""

    def __init__(self, path: str, on_notice: NoticeCallback | None, max_size: int = 0):
        try:
            os.makedirs(path, exist_ok=True)
            root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UnpackError(f"cannot open rootfs {path}: {exc.strerror}") from None
        self.dirs = Dirs(root)
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

    def apply(self, stream: BinaryIO, media_type: str, label: str, *, plain: bool = False) -> None:
        """Apply the layer read from `stream` (`plain`: its uncompressed tar stream, checked and bounded)."""
        self.label, self.touched = label, set()
        member = None
        tar = stream
        try:
            if not plain:
                tar = decompressed(stream, media_type, label)
            source = Bounded(tar, self.max_size, label) if self.max_size else tar
            with tarfile.TarFile(fileobj=Forward(source), mode="r", encoding="utf-8",
                                 errors="surrogateescape") as archive:
                for member in archive:
                    self.dirs.trim()
                    self._member(archive, member)
        except Refused as exc:
            name = member.name if member else ""
            raise UnpackError(f"{exc} in layer {short(label)}: {shown(name)}", layer=label, member=name,
                              hint="the image is corrupt or malicious") from None
        except BAD_ARCHIVE as exc:
            raise UnpackError(f"layer {short(label)} is not a valid tar archive: {exc}", layer=label) from None
        except OSError as exc:
            name = member.name if member else ""
            reason = (exc.strerror or str(exc)).lower()
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise UnpackError(f"{reason} in layer {short(label)}: {shown(name)}", layer=label, member=name,
                              hint="free some space in the repository's file system" if full else None) from None
        finally:
            if tar is not stream:
                tar.close()  # the decompressor only; the caller's stream stays open
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
        rel = normalise(member.name)
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
            rmtree(parent, name)

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
                copy_sparse(archive, member, fd)
            elif member.size:
                copy_data(archive, member, fd)
            if mode & self.umask:
                os.fchmod(fd, mode)
            set_mtime(member, fd)
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
            raise Refused("NUL byte in symlink target")
        pfd = self.dirs.get(parent)
        try:
            os.symlink(member.linkname, name, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, name, rel)
            os.symlink(member.linkname, name, dir_fd=pfd)
        set_mtime(member, name, pfd)

    def _hardlink(self, member: tarfile.TarInfo, parent: str, name: str, rel: str) -> bool:
        target = normalise(member.linkname)
        if not target:
            raise Refused("unsafe hard link target")
        if target in self.skipped:
            self._skip(member, rel, "skipped hard link to a skipped entry")
            return False
        tparent, _, tname = target.rpartition("/")
        missing = Refused(f"hard link target {member.linkname} missing")
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

    def _target_dir(self, rel: str, missing: Refused) -> int:
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
            raise Refused("unsafe whiteout")
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
            for name in list_dir(fd):
                child = f"{rel}/{name}" if rel else name
                if child not in self.touched:
                    self._remove(fd, name, child)
                elif stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    pending.append(child)
