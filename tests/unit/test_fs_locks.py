"""The lock protocol of udocker/fs.py and udocker/lockfile.py: O_EXCL lock files naming their owner, broken
only when the owner is provably dead (or, on another host, unrefreshed for a long time); tmp/ entries
removed only when their owner is provably dead."""

import errno
import fcntl
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from udocker import fs, lockfile
from udocker.errors import LockTimeout

OTHER_HOST = lockfile.Owner("othernode", "0" * 32, 4026531836, 4242, 99)


def _dead_here():
    """An owner on this machine whose pid now belongs to a process with another start time (reused)."""
    mine = lockfile.me()
    return lockfile.Owner(mine.host, mine.boot, mine.pidns, mine.pid, mine.start + 1)


def _reaped_child():
    """An owner on this machine that ran and was reaped: its pid is gone."""
    child = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    start = lockfile.process_start(child.pid)
    child.communicate()
    mine = lockfile.me()
    return lockfile.Owner(mine.host, mine.boot, mine.pidns, child.pid, start)


def _write_lock(path, owner, **extra):
    with open(path, "w") as stream:
        json.dump(dict({"owner": owner.token(), "nonce": "00", "flock": False, "dev": 0}, **extra), stream)


def _age(path, seconds):
    past = time.time() - seconds
    os.utime(path, (past, past))


@pytest.mark.parametrize("owner", [_dead_here, _reaped_child])
def test_a_dead_owners_lock_is_broken(tmp_path, owner):
    path = str(tmp_path / "x.lock")
    _write_lock(path, owner())
    with fs.locked(path, timeout=5):
        assert lockfile.record_owner(lockfile.read(path))[0] == lockfile.me()
    assert not os.path.exists(path)


def test_another_hosts_lock_is_respected(tmp_path):
    path = str(tmp_path / "x.lock")
    _write_lock(path, OTHER_HOST)
    with pytest.raises(LockTimeout) as caught:
        with fs.locked(path, timeout=0.3, what="the thing"):
            pass
    assert "the thing" in str(caught.value) and "othernode" in caught.value.hint
    assert lockfile.record_owner(lockfile.read(path))[0] == OTHER_HOST


def test_another_hosts_lock_unrefreshed_for_long_is_broken(tmp_path):
    path = str(tmp_path / "x.lock")
    _write_lock(path, OTHER_HOST)
    _age(path, lockfile.STALE_AGE + 60)
    with fs.locked(path, timeout=5):
        assert lockfile.record_owner(lockfile.read(path))[0] == lockfile.me()


def test_a_live_local_lock_is_never_broken_by_age(tmp_path):
    path = str(tmp_path / "x.lock")
    _write_lock(path, lockfile.me())
    _age(path, lockfile.STALE_AGE * 10)
    with pytest.raises(LockTimeout):
        with fs.locked(path, timeout=0.3):
            pass


HOLDER = """
import sys, time
from udocker import fs
with fs.locked(sys.argv[1], timeout=5):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lock_of_a_process_killed_with_sigkill_is_recovered(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockTimeout) as caught:
            with fs.locked(path, timeout=0.3):
                pass
        assert f"process {holder.pid}" in caught.value.hint
    finally:
        holder.kill()
        holder.wait()
    with fs.locked(path, timeout=5):
        pass


def test_an_empty_lock_file_is_broken_after_the_grace(tmp_path, monkeypatch):
    path = str(tmp_path / "x.lock")
    open(path, "w").close()  # a creator killed between create and write, or a lock file of udocker < 2
    monkeypatch.setattr(lockfile, "EMPTY_GRACE", 0.2)
    with fs.locked(path, timeout=5):
        pass


def test_locks_work_where_flock_fails(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    path = str(tmp_path / "x.lock")
    with fs.locked(path, timeout=1):
        assert json.loads(lockfile.read(path))["flock"] is False
        with pytest.raises(LockTimeout):
            with fs.locked(path, timeout=0.2):
                pass
    with fs.scratch_dir(str(tmp_path)) as scratch:
        fs.atomic_write(str(tmp_path / "f"), b"data", tmpdir=str(tmp_path))
        fs.clean_tmp(str(tmp_path))
        assert os.path.isdir(scratch)


def test_flock_proves_an_owner_in_another_pid_namespace_dead_on_the_same_mount(tmp_path):
    path = str(tmp_path / "x.lock")
    mine = lockfile.me()
    elsewhere = lockfile.Owner(mine.host, mine.boot, mine.pidns + 1, 1, 1)
    _write_lock(path, elsewhere, flock=True, dev=os.stat(tmp_path).st_dev)
    holder = os.open(path, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # the owner, alive, holds its flock: respected
    try:
        with pytest.raises(LockTimeout):
            with fs.locked(path, timeout=0.3):
                pass
    finally:
        os.close(holder)  # the owner is gone: its flock with it
    with fs.locked(path, timeout=5):
        pass


def test_shared_holders_coexist_and_exclude_an_exclusive_one(tmp_path):
    path = str(tmp_path / "gc.lock")
    with fs.locked(path, timeout=1, shared=True), fs.locked(path, timeout=1, shared=True):
        assert len(os.listdir(path + ".readers")) == 2
        with pytest.raises(LockTimeout):
            with fs.locked(path, timeout=0.3):
                pass
        assert not os.path.exists(path)  # the exclusive waiter gave the lock file back
    with fs.locked(path, timeout=1):
        with pytest.raises(LockTimeout):
            with fs.locked(path, timeout=0.3, shared=True):
                pass


def test_a_dead_shared_holder_is_forgotten(tmp_path):
    path = str(tmp_path / "gc.lock")
    os.mkdir(path + ".readers")
    open(os.path.join(path + ".readers", _dead_here().token() + "~ab"), "w").close()
    other = os.path.join(path + ".readers", OTHER_HOST.token() + "~cd")
    open(other, "w").close()
    with pytest.raises(LockTimeout):
        with fs.locked(path, timeout=0.3):
            pass
    assert os.listdir(path + ".readers") == [os.path.basename(other)]
    _age(other, lockfile.STALE_AGE + 60)
    with fs.locked(path, timeout=5):
        assert os.listdir(path + ".readers") == []


def test_clean_tmp_removes_only_what_is_provably_dead(tmp_path):
    tmp = str(tmp_path)
    names = {
        "dead": f"unpack-@{_dead_here().token()}~01",
        "reaped": f".write-blob-@{_reaped_child().token()}~02",
        "other host": f"create-@{OTHER_HOST.token()}~03",
        "other host, old": f"create-@{OTHER_HOST.token()}~04",
        "unnamed": "unpack-legacy",
        "unnamed, old": "unpack-legacy-old",
    }
    for name in names.values():
        if name.startswith(".write"):
            open(os.path.join(tmp, name), "w").close()
        else:
            os.makedirs(os.path.join(tmp, name, "rootfs"))
    for key in ("other host, old", "unnamed, old"):
        _age(os.path.join(tmp, names[key]), lockfile.TMP_STALE_AGE + 60)
    with fs.scratch_dir(tmp, prefix="unpack-") as live:
        fs.clean_tmp(tmp)
        assert sorted(os.listdir(tmp)) == sorted([os.path.basename(live), names["other host"], names["unnamed"]])


def test_a_held_lock_is_refreshed_and_the_refresh_thread_ends_with_it(tmp_path, monkeypatch):
    monkeypatch.setattr(lockfile, "HEARTBEAT", 0.05)
    path = str(tmp_path / "x.lock")
    with fs.locked(path, timeout=1):
        _age(path, 1000)
        for _ in range(200):  # bounded: the refresh is due every 0.05 s
            if time.time() - os.stat(path).st_mtime < 500:
                break
            time.sleep(0.05)
        assert time.time() - os.stat(path).st_mtime < 500
    assert "udocker-lock-refresh" not in [thread.name for thread in threading.enumerate()]


def test_read_replaced_waits_out_a_replacement_made_of_two_renames(tmp_path):
    """NFS's silly rename and libfuse's hiding of a busy target make another node's os.replace two renames:
    the name is absent between them (seen as 'the store index is missing' with two bindfs nodes)."""
    path = tmp_path / "index.json"
    path.write_bytes(b"old")
    os.rename(path, tmp_path / ".hidden")  # the first rename
    def second_rename():
        (tmp_path / "new").write_bytes(b"new")
        os.rename(tmp_path / "new", path)

    threading.Timer(0.15, second_rename).start()
    assert fs.read_replaced(str(path)) == b"new"
    with pytest.raises(FileNotFoundError):
        fs.read_replaced(str(tmp_path / "never"), attempts=3, pause=0.01)
