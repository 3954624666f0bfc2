"""Locks that need nothing of the file system beyond O_EXCL creation (and rename for publication).

A lock is a file created with O_CREAT|O_EXCL that names its owner: host, boot id, PID namespace, pid and
the process's start time. It exists exactly while held. A waiter breaks it only when its owner is provably
dead: on this machine (same boot id, same PID namespace) with its pid gone or reused by a process with
another start time; or, for an owner on another host (or in another PID namespace), when the file has not
been refreshed for STALE_AGE seconds (holders refresh their lock files every HEARTBEAT seconds). Where
flock works, a holder also keeps an flock on its lock file: on the same kernel and mount this proves an
owner in another PID namespace alive or dead, but the protocol never depends on flock reaching other nodes.

Scratch entries in tmp/ carry the same owner token in their names, so that cleaning tmp/ removes only
what is provably dead (another host's entries only after TMP_STALE_AGE).
"""

from __future__ import annotations

import os
import time

from udocker import fastjson

STALE_AGE = 900  # seconds without a refresh after which another host's lock is broken
HEARTBEAT = 60  # seconds between refreshes of the lock files a process holds
TMP_STALE_AGE = 3 * 86400  # seconds after which tmp/ entries of another host (or of unknown owner) go
EMPTY_GRACE = 5  # seconds a lock file may stay empty (its creator between create and write) before it is broken
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


class Owner(tuple):
    """A process anywhere: host name, boot id, PID namespace (inode), pid, start time (clock ticks since boot).
    A tuple with named fields, written out: a dataclass costs ~10 ms to import and collections.namedtuple
    ~2.5 ms, and every run, lock and scratch name needs this."""

    __slots__ = ()

    def __new__(cls, host: str, boot: str, pidns: int, pid: int, start: int):
        return tuple.__new__(cls, (host, boot, pidns, pid, start))

    host = property(lambda self: self[0])
    boot = property(lambda self: self[1])
    pidns = property(lambda self: self[2])
    pid = property(lambda self: self[3])
    start = property(lambda self: self[4])

    def __repr__(self) -> str:
        return f"Owner(host={self[0]!r}, boot={self[1]!r}, pidns={self[2]!r}, pid={self[3]!r}, start={self[4]!r})"

    def __getnewargs__(self):  # copy and pickle
        return tuple(self)

    def replace(self, **fields) -> Owner:
        """This owner with some fields changed."""
        return Owner(**dict(zip(("host", "boot", "pidns", "pid", "start"), self), **fields))

    def token(self) -> str:
        return f"{self.host}~{self.boot}~{self.pidns}~{self.pid}~{self.start}"

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        parts = token.split("~")
        if len(parts) != 5:
            return None
        try:
            return cls(parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4]))
        except ValueError:
            return None


_ME: dict[int, Owner] = {}


def me() -> Owner:
    """The calling process as an Owner (recomputed after a fork)."""
    pid = os.getpid()
    if pid not in _ME:
        host = "".join(c if c.isalnum() or c in "-." else "_" for c in os.uname().nodename) or "localhost"
        _ME.clear()
        _ME[pid] = Owner(host[:64], _boot_id(), _pidns(), pid, process_start(pid) or 0)
    return _ME[pid]


def _boot_id() -> str:
    try:
        with open(_BOOT_ID, "rb") as stream:  # bytes: a text stream of "ascii" loads encodings.ascii (run's path)
            return stream.read().decode("ascii", "replace").strip().replace("-", "")
    except OSError:
        return ""


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def process_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process `pid`, None if /proc does not show it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            fields = stream.read().rpartition(b")")[2].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def provably_dead(owner: Owner, *, reused: bool = True) -> bool:
    """True only when `owner` ran on this kernel, in this PID namespace, and is gone. `reused=False`: a pid that
    another process now has counts as alive (one kill(pid, 0), no read of /proc/PID/stat: for sweeps that may
    leave a record for a later one, such as every run's end)."""
    mine = me()
    if not mine.boot or owner.boot != mine.boot or owner.pidns != mine.pidns:
        return False
    start = process_start(owner.pid) if reused else None
    if start is not None:
        return bool(owner.start) and start != owner.start
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: it exists (another user's process hidden by hidepid)
    return False


def describe(owner: Owner | None) -> str:
    return f"process {owner.pid} on {owner.host}" if owner else "another udocker process"


# --- held files and their refresh ------------------------------------------------------------------------

_HELD: dict[str, bool] = {}
_WAKE: list = []  # [threading.Condition], made on the first hold (threading is not on `udocker run`'s path)
_BEAT: list = []  # the refresh thread while one runs: only while something is held


def _wake():
    if not _WAKE:
        import threading

        _WAKE.append(threading.Condition())
    return _WAKE[0]


def hold(path: str) -> None:
    import threading

    with _wake():
        _HELD[path] = True
        if not _BEAT:
            _BEAT.append(threading.Thread(target=_heartbeat, name="udocker-lock-refresh", daemon=True))
            _BEAT[0].start()


def unhold(path: str) -> None:
    """Forget `path`; when nothing is held any more, the refresh thread ends before this returns (so that
    a later fork, e.g. of an engine, happens in a single-threaded process)."""
    import threading

    with _wake():
        _HELD.pop(path, None)
        beat = _BEAT[0] if _BEAT and not _HELD else None
        _wake().notify_all()
    if beat is not None and beat is not threading.current_thread():
        beat.join(timeout=5)


def _heartbeat() -> None:
    due = time.monotonic() + HEARTBEAT
    wake = _wake()
    with wake:
        while _HELD:
            wake.wait(max(0.0, due - time.monotonic()))
            if time.monotonic() >= due:
                due += HEARTBEAT
                for path in list(_HELD):
                    try:
                        os.utime(path)
                    except OSError:
                        pass
        _BEAT.clear()


def _after_fork_in_child() -> None:
    """A forked child holds none of its parent's locks and has no refresh thread."""
    _WAKE.clear()
    _HELD.clear()
    _BEAT.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- one lock file -----------------------------------------------------------------------------------------


class Held:
    """A lock file this process created: its path, its open fd, the owner record written in it."""

    __slots__ = ("path", "fd", "content")

    def __init__(self, path: str, fd: int, content: bytes):
        self.path, self.fd, self.content = path, fd, content


def try_create(path: str) -> Held | None:
    """Create the lock file `path` exclusively and write its owner record; None if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    flocked = try_flock(fd)
    content = fastjson.dumps({"owner": me().token(), "nonce": os.urandom(8).hex(), "flock": flocked,
                              "dev": os.fstat(fd).st_dev}).encode()
    try:
        os.write(fd, content)
    except OSError:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    hold(path)
    return Held(path, fd, content)


def release(held: Held) -> None:
    """Remove the lock file if it is still ours (it may have been broken as stale), then close it."""
    unhold(held.path)
    try:
        if read(held.path) == held.content:
            os.unlink(held.path)
    except OSError:
        pass
    finally:
        os.close(held.fd)


def try_flock(fd: int) -> bool:
    """An flock where the file system offers one: False (never an error) where it does not."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def read(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(4096)


def record_owner(content: bytes) -> tuple[Owner | None, dict]:
    try:
        record = fastjson.loads(content)
        return Owner.parse(record["owner"]), record
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, {}


class Watch:
    """What a waiter has seen of a lock file, to judge staleness by its own clock (no clock skew)."""

    def __init__(self):
        self.seen: dict[tuple, float] = {}

    def unchanged_for(self, key: tuple) -> float:
        now = time.monotonic()
        return now - self.seen.setdefault(key, now)


def judge(path: str, watch: Watch) -> tuple[bool, Owner | None, bytes | None]:
    """(stale, owner, content) of the lock file at `path`; content None if it is gone."""
    try:
        stat = os.stat(path)
        content = read(path)
    except FileNotFoundError:
        return False, None, None
    owner, record = record_owner(content)
    unchanged = watch.unchanged_for((stat.st_ino, stat.st_mtime_ns, content))
    if owner is None:  # empty (its creator between create and write, or died there) or not ours
        return unchanged >= EMPTY_GRACE or time.time() - stat.st_mtime > STALE_AGE, None, content
    if record.get("flock") and _flock_free(path, owner, record, stat):
        return True, owner, content
    return gone(owner, stat.st_mtime, STALE_AGE, unchanged), owner, content


def gone(owner: Owner | None, mtime: float, max_age: float, unchanged: float = 0.0) -> bool:
    """Whether what `owner` made (last modified at `mtime`) may be removed: the owner is provably dead, or
    it is of another machine or PID namespace (or unknown) and untouched for `max_age` seconds (by the
    file's mtime or by the observer's own clock: `unchanged`)."""
    if owner is not None:
        if provably_dead(owner):
            return True
        mine = me()
        if mine.boot and owner.boot == mine.boot and owner.pidns == mine.pidns:
            return False  # alive on this machine: never removed by age
    return time.time() - mtime > max_age or unchanged > max_age


def _flock_free(path: str, owner: Owner, record: dict, stat: os.stat_result) -> bool:
    """Same kernel and same mount as the owner, who held an flock: if we get it, the owner is gone."""
    if not me().boot or owner.boot != me().boot or record.get("dev") != stat.st_dev:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return try_flock(fd)
    finally:
        os.close(fd)


def break_stale(path: str, content_seen: bytes | None = None) -> bool:
    """Remove the stale lock file `path`, unless it changed since it was judged (someone broke it and
    took the lock meanwhile). Serialised by a breaker file so that two breakers cannot remove a fresh lock."""
    breaker = path + ".break"
    try:
        fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            if time.time() - os.stat(breaker).st_mtime > 60:
                os.unlink(breaker)  # a breaker that died in the middle (breaking takes microseconds)
        except OSError:
            pass
        return False
    try:
        if content_seen is None or read(path) == content_seen:
            os.unlink(path)
            return True
        return False
    except FileNotFoundError:
        return True
    finally:
        os.close(fd)
        try:
            os.unlink(breaker)
        except OSError:
            pass

