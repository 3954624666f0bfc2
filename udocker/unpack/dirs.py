"""The rootfs as directory fds: paths walked component by component without following symlinks, and trees
removed without following them (see udocker/unpack/__init__.py, 'Safety')."""

from __future__ import annotations

import os
import stat
from itertools import islice

from udocker.unpack.report import Refused

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DIR_FDS = 64


def normalise(name: str) -> str:
    """`name` relative to the rootfs, "" for the root itself; Refused for `..` or NUL."""
    if "\x00" in name:
        raise Refused("NUL byte in name")
    parts = [part for part in name.split("/") if part and part != "."]
    if ".." in parts:
        raise Refused("unsafe path")
    return "/".join(parts)


class Dirs:
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
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise Refused(f"path through symlink {rel}") from None
            if not stat.S_ISDIR(st.st_mode):
                raise Refused(f"parent {rel} is not a directory") from None
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


def list_dir(fd: int) -> list[str]:
    st = os.fstat(fd)
    if st.st_mode & 0o700 != 0o700:  # a directory not made by us: make it listable and writable
        os.fchmod(fd, st.st_mode & 0o7777 | 0o700)
    return os.listdir(fd)


def rmtree(parent: int, name: str) -> None:
    """Remove directory `name` of `parent` and everything under it, never following a symlink.

    Iterative, so a hostile deep tree cannot exhaust the Python stack.
    """
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    stack = [(parent, name, fd, list_dir(fd))]
    try:
        while stack:
            up, dname, dfd, names = stack[-1]
            if names:
                child = names.pop()
                try:
                    os.unlink(child, dir_fd=dfd)
                except IsADirectoryError:
                    cfd = os.open(child, DIR_FLAGS, dir_fd=dfd)
                    stack.append((dfd, child, cfd, []))  # pushed first: closed by `finally` if list_dir fails
                    stack[-1][3].extend(list_dir(cfd))
                continue
            stack.pop()
            os.close(dfd)
            os.rmdir(dname, dir_fd=up)
    finally:
        for _, _, dfd, _ in stack:
            os.close(dfd)
