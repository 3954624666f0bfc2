"""`udocker run -d`: the run goes on in the background, in a session of its own, detached from the terminal.

start() forks. The parent (the `udocker run` the user started) waits until the child says that its run is
recorded (Detached.wait_ready), then returns to print the container id and exit 0. The child D makes a new
session, takes stdin from /dev/null and sends stdout and stderr into a pipe read by a logger process L, then
runs the container as a foreground `udocker run` does: under the supervisor (nothing of the container outlives
D; SIGTERM to D is a stop with its grace period). L appends what it reads to the container's log (Layout:
container.log), which it rotates to container.log.1 when it would pass LOG_MAX bytes: at most twice LOG_MAX
bytes are kept. L ends when every writer has closed the pipe (D, its supervisor and the container's processes:
the supervisor kills what is left), and ignores the stop signals, so that the last lines of a stop are kept.

Started inside a SLURM job step (an ancestor process is slurmstepd), D ends with the step: a watcher W,
D's child, checks the step's slurmstepd every JOB_POLL seconds and, once it is gone (the job ended, scancel),
sends SIGTERM to D, which stops the container as `udocker stop` does. SLURM's own tracking cannot do it where
it follows the process tree (proctrack/linuxproc): D's parent exits and D is reparented to init.

Several detached runs of one container write the same log (appends of whole lines, write_log): each logger
follows the file at the log's path (it reopens it when another logger rotated it, so that nothing goes on growing
in container.log.1) and rotates under the log's lock (Layout.container_log_lock) only a log that is still the one
it measured, so that two rotations never follow each other and drop the newer part. Each logger measures the
shared file itself (fstat), not only its own writes."""

import os
import signal
import sys

LOG_MAX = 10 * 1024 * 1024  # bytes in container.log before it is rotated to container.log.1
CHUNK = 65536  # bytes the logger reads at a time, and the longest line it holds back until its end
PARTIAL_WAIT = 0.5  # seconds a partial line (no newline yet) waits for its end before it is logged as it is
ROTATE_WAIT = 5  # seconds a logger waits for the log's lock to rotate it (else it writes on, unrotated)
JOB_POLL = 1.0  # seconds between two checks that the SLURM job step that started a detached run still runs


class Detached:
    """One side of start(): `parent` True in the process that returns to the user; in the child, `logger` is
    the logger's pid."""

    def __init__(self, parent, fd, pid):
        self.parent = parent
        self.fd = fd
        self.pid = pid  # the parent: the child D; the child: the logger L
        self.logger = None if parent else pid

    def wait_ready(self):
        """The parent: True once the child's run is recorded, False if the child ended before."""
        data = b""
        while True:
            chunk = os.read(self.fd, 16)
            if not chunk:
                break
            data += chunk
        os.close(self.fd)
        if not data:
            os.waitpid(self.pid, 0)
        return data == b"1"

    def ready(self):
        """The child: its run is recorded; the parent may go."""
        os.write(self.fd, b"1")
        os.close(self.fd)

    def finish(self):
        """The child, after its run: close its end of the log's pipe and wait for the logger to write it all."""
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(null, fd)
        os.close(null)
        try:
            os.waitpid(self.logger, 0)
        except ChildProcessError:
            pass


def start(log_path):
    """Fork into the parent and the detached child (see the module's docstring); a Detached for each."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    step = job_step()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid:
        os.close(writer)
        return Detached(True, reader, pid)
    os.close(reader)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    log_reader, log_writer = os.pipe()
    logger = os.fork()
    if logger == 0:
        code = 0
        try:
            os.close(log_writer)
            os.close(writer)
            os.dup2(null, 1)  # the user's output must not stay open here: the caller waits for its end
            os.dup2(null, 2)
            for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(number, signal.SIG_IGN)
            write_log(log_reader, log_path)
        except BaseException:  # noqa: BLE001 - the logger never returns into udocker's code
            code = 1
        finally:
            os._exit(code)
    os.close(log_reader)
    if step:
        _watch(step, null, (log_writer, writer))
    os.close(null)
    os.dup2(log_writer, 1)
    os.dup2(log_writer, 2)
    os.close(log_writer)
    return Detached(False, writer, logger)


def job_step():
    """(pid, start time) of the slurmstepd this process runs under, or None (not in a SLURM job step)."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    from udocker.lockfile import process_start

    pid = os.getppid()
    for _ in range(64):  # bounded: a process tree is never that deep between a step and its tasks
        if pid <= 1:
            return None
        try:
            with open(f"/proc/{pid}/stat", "rb") as stream:
                data = stream.read()
        except OSError:
            return None
        name, rest = data[data.index(b"(") + 1:data.rindex(b")")], data[data.rindex(b")") + 2:].split()
        if name == b"slurmstepd":
            return pid, process_start(pid)
        pid = int(rest[1])
    return None


def _watch(step, null, fds):
    """Fork W: SIGTERM to this process (D) once the job step `step` is gone; W ends when D does."""
    detached = os.getpid()
    if os.fork():
        return
    code = 0
    try:
        from udocker.lockfile import process_start

        for fd in fds:
            os.close(fd)
        for fd in (1, 2):  # the log's pipe must not stay open here: the logger waits for its end
            os.dup2(null, fd)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)
        import time

        while os.getppid() == detached:
            if process_start(step[0]) != step[1]:
                os.kill(detached, signal.SIGTERM)
                break
            time.sleep(JOB_POLL)
    except BaseException:  # noqa: BLE001 - the watcher never returns into udocker's code
        code = 1
    finally:
        os._exit(code)


def write_log(source, path, limit=LOG_MAX):
    """Append what `source` (a fd) gives to `path` until end of file, rotating it to PATH.1 before it passes
    `limit` bytes. Whole lines at a time, so that the lines of runs sharing the log never tear each other: a
    partial line waits for its end, at most PARTIAL_WAIT seconds (a prompt, a progress bar) or CHUNK bytes.
    A failing write (a full disk) drops the data: the program must never block on its output."""
    import select

    out, pending = _open(path), b""
    while True:
        if pending and not select.select([source], [], [], PARTIAL_WAIT)[0]:
            out, pending = _append(out, path, pending, limit), b""
            continue
        try:
            data = os.read(source, CHUNK)
        except InterruptedError:
            continue
        if not data:
            break
        data = pending + data
        cut = data.rfind(b"\n") + 1 or (len(data) if len(data) >= CHUNK else 0)
        if cut:
            out = _append(out, path, data[:cut], limit)
        pending = data[cut:]
    if pending:
        out = _append(out, path, pending, limit)
    os.close(out)


def _append(out, path, data, limit):
    out = _current(out, path, len(data), limit)
    try:
        os.write(out, data)
    except OSError:
        pass
    return out


def _current(out, path, incoming, limit):
    """The fd to append `incoming` bytes to: `out`, or `path` reopened when another logger has rotated it, or
    after rotating it when they would take it past `limit`. Never blocks for long: when the lock cannot be had,
    the bytes go to the log as it is."""
    try:
        mine, there = os.fstat(out), os.stat(path)
    except OSError:  # the container removed meanwhile: the output is dropped (written to a removed file)
        return out
    if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
        os.close(out)
        out = _open(path)
        mine = os.fstat(out)
    if not mine.st_size or mine.st_size + incoming <= limit:
        return out
    from udocker import fs
    from udocker.errors import UdockerError
    from udocker.paths import Layout

    try:
        with fs.locked(Layout.container_log_lock(os.path.dirname(path)), timeout=ROTATE_WAIT, what="the log"):
            there = os.stat(path)
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):  # nobody rotated it meanwhile
                os.replace(path, path + ".1")
    except (OSError, UdockerError):
        return out
    os.close(out)
    return _open(path)


def _open(path):
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError:  # the container removed meanwhile: the output is dropped, never blocked
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
