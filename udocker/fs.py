"""File-system primitives: atomic publication, fcntl locks and crash-safe scratch directories."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import time

from udocker.errors import LockTimeout, StoreError

_POLL = 0.05
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
WRITABLE_HINT = "use a directory you can write to (--repo DIR or UDOCKER_DIR)"


def store_error(action: str, what: str, exc: OSError) -> StoreError:
    """The StoreError for an OSError met while `action`-ing `what` in the repository: 'cannot write PATH:
    No space left on device', with a hint for the causes the user can fix (full disk, permissions)."""
    hint = ("free some space in the repository's file system" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else WRITABLE_HINT if exc.errno in _READ_ONLY else None)
    return StoreError(f"cannot {action} {what}: {exc.strerror or exc}", hint=hint)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, *, tmpdir: str, mode: int = 0o644) -> None:
    """Write `data` to a temp file in `tmpdir` (same filesystem as `path`), fsync, then os.replace.

    Readers see either the old or the new file, never a partial one; a crash leaves only a file in tmpdir.
    """
    with locked(os.path.join(tmpdir, ".lock"), timeout=60, shared=True):
        try:
            fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix=".write-")
        except OSError as exc:
            raise store_error("write", path, exc) from None
        fcntl.flock(fd, fcntl.LOCK_EX)  # marks it live for clean_tmp()
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise store_error("write", path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: str, *, timeout: float, shared: bool = False, what: str = ""):
    """Hold an flock on `path` (created if needed); raises LockTimeout after `timeout` seconds.

    flock locks belong to the open file description, so they are released when the process dies.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise store_error("create lock file", path, exc) from None
    try:
        operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, operation)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"timed out waiting for the lock on {what or path}",
                                      hint="another udocker process holds it") from None
                time.sleep(_POLL)
        yield
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def scratch_dir(tmp: str, prefix: str = "work-"):
    """A private directory under `tmp`, flock-held while in use and removed afterwards.

    Creation happens under a shared lock on tmp/.lock, so clean_tmp() (which takes it exclusively)
    never removes a directory between its creation and its lock.
    """
    with locked(os.path.join(tmp, ".lock"), timeout=60, shared=True):
        try:
            path = tempfile.mkdtemp(dir=tmp, prefix=prefix)
        except OSError as exc:
            raise store_error("create a directory in", tmp, exc) from None
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def clean_tmp(tmp: str) -> None:
    """Remove leftovers of dead processes from `tmp`: entries no live process holds a lock on."""
    try:
        ctx = locked(os.path.join(tmp, ".lock"), timeout=0)
        ctx.__enter__()
    except LockTimeout:
        return  # another process is creating or cleaning; leave it for next time
    try:
        for name in os.listdir(tmp):
            if name == ".lock":
                continue
            path = os.path.join(tmp, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                if os.path.isdir(path) and _try_lock(fd):
                    shutil.rmtree(path, ignore_errors=True)
                elif not os.path.isdir(path) and name.startswith(".write-") and _try_lock(fd):
                    os.unlink(path)
            finally:
                os.close(fd)
    finally:
        ctx.__exit__(None, None, None)


def ensure_dir(path: str) -> str:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise store_error("create directory", path, exc) from None
    return path
