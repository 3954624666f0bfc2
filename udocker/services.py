"""The lifecycle of a container's runs: stop, kill, wait, readiness (a port that listens), its log.

A run is the `udocker run` process (foreground or `run -d`) that supervises the container's program
(engines/supervisor.py), recorded in the container's runs/ (store/runs.py). Several runs of one container may
overlap: the container is running while any of them is; stop and kill act on every run of this node; wait
waits for all of them and gives the status of the run that ended last.

stop: SIGTERM to each run, which its supervisor passes to the program (as `udocker run` does when it gets
SIGTERM) and which starts the run's own grace period (stop_timeout). After `timeout` seconds (default: the
run's stop_timeout) every process of the container (every process below the supervisor) is killed with
SIGKILL; the run then ends as usual (exit status 137, cleanup, --rm). A run that does not end 10 s after
that is killed itself: its supervisor then kills whatever is left. Runs of another node cannot be stopped
from here (UdockerError)."""

import os
import signal
import time

from udocker.errors import UdockerError, UsageError
from udocker.paths import Layout
from udocker.store import runs

FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")  # engines/supervisor.py passes these
_POLL = 0.1
_AFTER_KILL = 10.0  # seconds a run has to end after its processes were killed


def _local(container, what):
    found = runs.live(container.dir)
    remote = [run for run in found if run["state"] == "elsewhere"]
    if remote:
        raise UdockerError(f"cannot {what} container {container.id}: it runs on {remote[0].get('host')}",
                           hint=f"run 'udocker {what}' there")
    return found


def _until_ended(found, seconds):
    """Wait until the runs `found` ended (or `seconds` passed); those still running."""
    deadline = time.monotonic() + seconds
    while True:
        left = [run for run in found if runs.same_process(*_identity(run))]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(_POLL)


def _identity(run):
    return runs.identity(run)


def stop(container, timeout=None):
    """Stop every run of `container` on this node (see the module's docstring); the number of runs stopped."""
    found = _local(container, "stop")
    for run in found:
        _signal(run, signal.SIGTERM)
    grace = timeout if timeout is not None else max(run.get("stop_timeout") or 10 for run in found) if found else 0
    left = _until_ended(found, grace)
    for run in left:
        _kill_below(run)
    for run in _until_ended(left, _AFTER_KILL):
        _signal(run, signal.SIGKILL)  # its supervisor kills what is left when it loses its parent
        runs.forget(run)
    return len(found)


def kill(container, name="SIGKILL"):
    """Send signal `name` to every run of `container` on this node: SIGKILL kills every process of the
    container (the run then ends with 137); the signals the supervisor passes on go to the program."""
    name = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
    if name != "SIGKILL" and name not in FORWARDED:
        raise UsageError(f"cannot send {name} to a container", hint="use KILL, " + ", ".join(n[3:] for n in FORWARDED))
    found = _local(container, "kill")
    if not found:
        raise UdockerError(f"container {container.id} is not running")
    for run in found:
        if name == "SIGKILL":
            _kill_below(run)
        else:
            _signal(run, getattr(signal, name))
    return len(found)


def _signal(run, number):
    pid, start = _identity(run)
    if runs.same_process(pid, start):
        try:
            os.kill(pid, number)
        except OSError:
            pass


def _kill_below(run):
    """SIGKILL to every process below the run's supervisor (not the run itself, nor its logger), until none is
    left (bounded): the supervisor then sees its engine end and the run ends as usual."""
    import psutil

    pid, start = _identity(run)
    for _ in range(100):
        if not runs.same_process(pid, start):
            return
        try:
            supervisors = [child for child in psutil.Process(pid).children() if child.pid != run.get("logger")]
            below = [process for child in supervisors for process in child.children(recursive=True)]
        except psutil.Error:
            return
        if not below:
            return
        for process in below:
            try:
                process.kill()
            except psutil.Error:
                pass
        time.sleep(0.02)


def wait(container):
    """Wait until no run of `container` runs (on this node: another node's cannot be watched); the exit status
    of the run that ended last."""
    found = _local(container, "wait for")
    while _until_ended(found, 3600):
        pass
    summary = runs.summary(container.dir)
    if summary["status"] == "created":
        raise UdockerError(f"container {container.id} has not run")
    if summary["status"] == "running":  # a run began meanwhile
        return wait(container)
    return summary["exit"]


def wait_port(container, port, *, host="127.0.0.1", timeout=60.0):
    """Wait until a program serves host:port (_serves); UdockerError when `timeout` seconds pass first,
    or when the container is not running (or stops) before."""
    deadline = time.monotonic() + timeout
    while True:
        if _serves(host, port):
            return
        summary = runs.summary(container.dir)
        if summary["status"] != "running":
            status = f" (status {summary['exit']})" if summary.get("exit") is not None else ""
            raise UdockerError(f"container {container.id} exited{status} before {host}:{port} listened"
                               if summary["status"] == "exited" else f"container {container.id} is not running")
        if time.monotonic() >= deadline:
            raise UdockerError(f"timeout: nothing listens on {host}:{port} after {timeout:g} s")
        time.sleep(_POLL)


def _serves(host, port, settle=0.25):
    """Whether a program serves host:port: a connection is accepted and not closed at once. A published port
    of a private network is listened on by slirp4netns from the start, which accepts and then closes the
    connection while nothing listens behind it; a server waiting for a request sends nothing and keeps it."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=1) as connection:
            connection.settimeout(settle)
            try:
                return connection.recv(1, socket.MSG_PEEK) != b""
            except socket.timeout:
                return True
    except OSError:
        return False


def ensure_stopped(container, force):
    """`rm`: refuse a running container unless `force`, which stops it first."""
    if container.broken or runs.summary(container.dir)["status"] != "running":
        return
    if not force:
        raise UdockerError(f"container {container.id} is running", hint="stop it first, or use 'udocker rm -f'")
    stop(container)


# -- the log --------------------------------------------------------------------------------------------------
def log_tail(container, lines=None):
    """The container's log (its rotated part first), its last `lines` lines when given."""
    path = Layout.container_log(container.dir)
    return _last(_read(path + ".1") + _read(path), lines)


def follow(container, write, lines=None):
    """Write the log (its last `lines` lines), then what is appended to it, until the container is not running
    and nothing more comes (a rotation is followed to the new file)."""
    path = Layout.container_log(container.dir)
    stream, inode = _reopen(path)
    write(_last(_read(path + ".1") + (stream.read() if stream else b""), lines))
    while True:
        running = runs.summary(container.dir)["status"] == "running"
        data = stream.read() if stream else b""
        if data:
            write(data)
            continue
        if not running:
            break
        if _inode(path) != inode:
            if stream:
                stream.close()
            stream, inode = _reopen(path)
            continue
        time.sleep(0.2)
    if stream:
        stream.close()


def _last(data, lines):
    if lines is None:
        return data
    return b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""


def _read(path):
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        return b""


def _inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _reopen(path):
    try:
        stream = open(path, "rb")  # noqa: SIM115 - kept open while following
    except FileNotFoundError:
        return None, None
    return stream, os.fstat(stream.fileno()).st_ino
