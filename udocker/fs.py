"""File-system primitives: atomic publication, locks, crash-safe scratch directories (see lockfile.py) and
copies that keep holes.

`udocker run` writes its records with this module: its context managers are classes and it imports neither
contextlib nor collections (~4 ms of every run's start here, with what they load)."""

from __future__ import annotations

import errno
import os
import time

from udocker import lockfile
from udocker.errors import LockTimeout, StoreError

_POLL = 0.25  # longest pause between two looks at a held lock
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
_NOT_COPYABLE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM)
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


def read_replaced(path: str, *, attempts: int = 10, pause: float = 0.05) -> bytes:
    """The contents of a file that writers replace with atomic_write(). Raises FileNotFoundError only when it
    stays missing for attempts x pause seconds: on NFS (silly rename of a busy target) and FUSE file systems
    (libfuse hides an open target the same way) another node's os.replace is two renames, between which the
    name is briefly absent."""
    for _ in range(attempts - 1):
        try:
            with open(path, "rb") as stream:
                return stream.read()
        except FileNotFoundError:
            time.sleep(pause)
    with open(path, "rb") as stream:
        return stream.read()


def atomic_output(path: str, *, mode: int | None = 0o644, tmpdir: str | None = None, error=None,
                  durable: bool = True) -> _AtomicOutput:
    """A binary stream whose contents replace `path` in one step when the block ends without error: the one
    way udocker replaces a file. The stream is a new file with a unique name (named for clean_tmp()) in
    `tmpdir`, by default the directory of `path` (another directory must be on the same file system); it is
    fsynced (unless not `durable`: state that a crash makes moot, such as a run's record), given `mode` (None:
    the permissions the umask gives a new file, without a chmod), then renamed over `path` with os.replace.

    Readers see the old file or the new one, never a part of it. On error the temporary file is removed; a
    kill leaves only it. An OSError of these steps (not of the block) is raised as `error(exc)` when given."""
    directory = tmpdir or os.path.dirname(os.path.abspath(path))
    return _AtomicOutput(path, os.path.join(directory, scratch_name(".write-")), mode, error, durable)


class _AtomicOutput:
    def __init__(self, path, tmp, mode, error, durable):
        self.path, self.tmp, self.mode, self.error, self.durable = path, tmp, mode, error, durable
        self.stream = None

    def __enter__(self):
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o666 if self.mode is None else 0o600)
        except OSError as exc:
            raise self._failed(exc) from None
        self.stream = os.fdopen(fd, "wb")
        return self.stream

    def __exit__(self, kind, value, traceback):
        if kind is not None:  # the block failed: its exception goes on
            self._discard()
            return False
        try:
            self.stream.flush()
            if self.durable:
                os.fsync(self.stream.fileno())
            self.stream.close()
            if self.mode is not None:
                os.chmod(self.tmp, self.mode)
            os.replace(self.tmp, self.path)
        except BaseException as exc:
            self._discard()
            if isinstance(exc, OSError):
                raise self._failed(exc) from None
            raise
        return False

    def _failed(self, exc):
        return exc if self.error is None else self.error(exc)

    def _discard(self):
        try:
            self.stream.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def atomic_write(path: str, data: bytes, *, tmpdir: str | None = None, mode: int | None = 0o644,
                 durable: bool = True) -> None:
    """Replace `path` by a file holding `data` (atomic_output); OSError is raised as StoreError naming `path`."""
    def failed(exc: OSError) -> Exception:
        return store_error("write", path, exc)

    try:
        with atomic_output(path, mode=mode, tmpdir=tmpdir, error=failed, durable=durable) as stream:
            stream.write(data)
    except OSError as exc:  # of the write itself (a full disk)
        raise failed(exc) from None


def scratch_name(prefix: str) -> str:
    """A fresh name for a tmp/ entry that carries its owner, so that clean_tmp() knows when it is dead."""
    return f"{prefix}@{lockfile.me().token()}~{os.urandom(6).hex()}"


def scratch_file(tmp: str, prefix: str, *, what: str = "") -> tuple[int, str]:
    """A new private file under `tmp` (fd open for writing, path), named for clean_tmp() like scratch_dir()."""
    path = os.path.join(tmp, scratch_name(prefix))
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
    except OSError as exc:
        raise store_error("write", what or path, exc) from None


def locked(path: str, *, timeout: float, shared: bool = False, what: str = "") -> _Locked:
    """Hold the lock `path` (exclusive, or shared with other shared holders) in a with block; raises LockTimeout
    after `timeout` seconds. The lock file is created with O_EXCL and names its owner (udocker/lockfile.py):
    nothing is asked of the file system's flock, and a dead owner's lock is broken. Shared holders
    register under PATH.readers/ while holding the lock file for a moment; an exclusive holder keeps the
    lock file and waits for them to leave."""
    return _Locked(path, timeout, shared, what)


class _Locked:
    def __init__(self, path, timeout, shared, what):
        self.path, self.timeout, self.shared, self.what = path, timeout, shared, what
        self.held = self.reader = None

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        held = _acquire(self.path, deadline, self.what)
        try:
            if self.shared:
                self.reader = _add_reader(self.path)
            else:
                _wait_for_readers(self.path, deadline, self.what)
        except BaseException:
            lockfile.release(held)
            raise
        if self.reader is not None:
            lockfile.release(held)
        else:
            self.held = held

    def __exit__(self, kind, value, traceback):
        if self.reader is None:
            lockfile.release(self.held)
        else:
            lockfile.unhold(self.reader)
            try:
                os.unlink(self.reader)
            except OSError:
                pass
        return False


def _acquire(path: str, deadline: float, what: str) -> lockfile.Held:
    watch = lockfile.Watch()
    delay = 0.005
    while True:
        try:
            held = lockfile.try_create(path)
            if held is not None:
                return held
            stale, owner, content = lockfile.judge(path, watch)
            if content is None or (stale and lockfile.break_stale(path, content)):
                continue  # released or broken meanwhile: try again at once
        except OSError as exc:
            raise store_error("create lock file", path, exc) from None
        if time.monotonic() >= deadline:
            raise LockTimeout(f"timed out waiting for the lock on {what or path}",
                              hint=f"{lockfile.describe(owner)} holds it")
        time.sleep(delay)
        delay = min(delay * 2, _POLL)


def _add_reader(path: str) -> str:
    readers = ensure_dir(path + ".readers")
    reader = os.path.join(readers, f"{lockfile.me().token()}~{os.urandom(6).hex()}")
    try:
        os.close(os.open(reader, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except OSError as exc:
        raise store_error("create lock file", reader, exc) from None
    lockfile.hold(reader)
    return reader


def _wait_for_readers(path: str, deadline: float, what: str) -> None:
    """Wait until no live shared holder of `path` is left; dead ones' registrations are removed."""
    readers = path + ".readers"
    watch = lockfile.Watch()
    delay = 0.005
    while True:
        try:
            names = os.listdir(readers)
        except FileNotFoundError:
            return
        waiting, live = False, None
        for name in names:
            entry = os.path.join(readers, name)
            owner = lockfile.Owner.parse(name.rpartition("~")[0])
            try:
                mtime = os.stat(entry).st_mtime_ns
            except FileNotFoundError:
                continue
            if lockfile.gone(owner, mtime / 1e9, lockfile.STALE_AGE, watch.unchanged_for((name, mtime))):
                try:
                    os.unlink(entry)
                except OSError:
                    pass
            else:
                waiting, live = True, owner
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise LockTimeout(f"timed out waiting for the lock on {what or path}",
                              hint=f"{lockfile.describe(live)} uses it")
        time.sleep(delay)
        delay = min(delay * 2, _POLL)


def scratch_dir(tmp: str, prefix: str = "work-") -> _ScratchDir:
    """A private directory under `tmp` for a with block (its path), removed afterwards. Its name carries its
    owner (host, boot, PID namespace, pid, start time), so clean_tmp() removes it only once that process is
    provably dead."""
    path = os.path.join(tmp, scratch_name(prefix))
    try:
        os.mkdir(path, 0o700)
    except OSError as exc:
        raise store_error("create a directory in", tmp, exc) from None
    return _ScratchDir(path)


class _ScratchDir:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self.path

    def __exit__(self, kind, value, traceback):
        _rmtree(self.path)
        return False


def clean_tmp(tmp: str) -> None:
    """Remove leftovers of dead processes from `tmp`: entries whose owner (named in the entry) is provably
    dead; entries of another host or PID namespace, or without an owner, only when untouched for
    lockfile.TMP_STALE_AGE. Never an entry of a live process, whatever the file system's locks do."""
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        if name.startswith(".lock"):
            continue
        path = os.path.join(tmp, name)
        owner = lockfile.Owner.parse(name.rpartition("@")[2].rpartition("~")[0]) if "@" in name else None
        try:
            stat = os.lstat(path)
        except OSError:
            continue
        if not lockfile.gone(owner, stat.st_mtime, lockfile.TMP_STALE_AGE):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            _rmtree(path)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def ensure_dir(path: str) -> str:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise store_error("create directory", path, exc) from None
    return path


def copy_file(src: str, dst: str, mode: int) -> None:
    """Copy the regular file `src` to the new file `dst` with `mode` and `src`'s times, keeping its holes
    (SEEK_DATA/SEEK_HOLE; copy_file_range where the file system has it). `dst` is removed on failure."""
    info = os.lstat(src)
    source = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        target = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            for start, end in _data_ranges(source, info.st_size):
                _copy_range(source, target, start, end)
            os.ftruncate(target, info.st_size)
            os.fchmod(target, mode)
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        except BaseException:
            try:
                os.unlink(dst)
            except OSError:
                pass
            raise
        finally:
            os.close(target)
    finally:
        os.close(source)


def _data_ranges(fd: int, size: int):
    """(start, end) of the data regions of the open file `fd`; the whole file where holes are unknown."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # only a hole remains
            yield position, size  # no SEEK_DATA here: copy everything
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        position = end


def _copy_range(source: int, target: int, start: int, end: int) -> None:
    position = start
    while position < end:
        count = min(end - position, 1 << 30)
        try:
            done = os.copy_file_range(source, target, count, position, position)
        except OSError as exc:
            if exc.errno not in _NOT_COPYABLE:
                raise
            done = 0
            data = os.pread(source, min(count, 1 << 20), position)
            while done < len(data):
                done += os.pwrite(target, data[done:], position + done)
        if done == 0:
            return  # the file got shorter while copying
        position += done


def _rmtree(path: str) -> None:
    import shutil  # not at the top: shutil loads bz2 and lzma (~2 ms), and `udocker run` writes records with fs

    shutil.rmtree(path, ignore_errors=True)
