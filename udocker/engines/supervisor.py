"""No process outlives `udocker run`; signals reach the program; a stop has a grace period (`stop_timeout`).

`udocker run` (U: the process that a user, scancel, `timeout` in a job script or a CI runner signals or kills)
does not exec the engine. It forks a supervisor S, a copy of itself, and waits for it:
- S starts the engine with posix_spawn and marks itself a child subreaper (PR_SET_CHILD_SUBREAPER), so every
  process the engine starts stays below S even when its parent dies or it daemonises: S finds all of them by
  walking the process tree below itself (psutil, from /proc/*/stat: /proc/PID/task/TID/children needs
  CONFIG_PROC_CHILDREN, which some kernels lack).
- U passes every signal it receives (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) to S through a pipe.
  End of file on that pipe means U is gone, also after kill -9 of U, which nothing can catch: S then kills
  every process below itself with SIGKILL (and the engine's process group, for a process orphaned before S
  became a subreaper) and exits.
- After SIGTERM, SIGINT or SIGHUP, S waits `stop_timeout` seconds (docker stop's 10 by default), then kills
  everything below itself. When the engine exits, S kills what the program left behind (docker: a container
  stops with its first process), removes Launch.leftover when the engine was killed before it could (runc's
  state directory of the run), and exits with the engine's status (128+N when it was killed by signal N).

The same in every mode. The alternatives, and why not:
- a PID namespace for the engine (unshare --pid --fork --kill-child): needs user namespaces, which the hosts
  that need P and F modes often lack; the program would see other pids than the host's /proc shows. R modes
  have one (runc's), but its first process survives kill -9 of the runtime: runc is not its init.
- PR_SET_PDEATHSIG on the engine alone: kills the engine, not what it started: PRoot's tracees detach and run
  on, a fakechroot program's children are reparented to init.
- a subreaper in U alone: U is the process that gets killed.

Where signals go: F modes run the program itself as the engine, and runc (R modes) forwards them to the
container's first process (in R2/R3 the kit's `timeout`, which passes them past PRoot to its process group):
S signals the engine. PRoot (P modes, Launch.signal_depth 1) ignores SIGTERM, SIGINT and SIGHUP: S signals
the program, PRoot's first tracee, as docker and runc signal a container's first process. Not every process:
a service that stops its workers itself (DEEPaaS: aiohttp with a multiprocessing pool) hangs in its shutdown
when its workers die under it at the same moment, until the stop timeout kills it.

Without a terminal the engine gets a process group of its own, so that a terminal's ^C reaches it once,
through S. With a terminal (Launch on a tty) it stays in the terminal's foreground group, which the terminal
signals directly: U and S then ignore SIGINT and SIGQUIT, and ^C at an interactive shell starts no stop timer.

Costs: one fork of U (copy on write) and a posix_spawn instead of an exec; no interpreter teardown in U
(cli/__init__.py ends `run` with os._exit, as the exec did). S loads _ctypes for the prctl only when the
engine still runs 0.1 s after its start (or when it must kill): the import costs 4-30 ms of CPU on a busy
node, more than a short run. A process orphaned and moved to a session of its own within that first 0.1 s
escapes the tree walk; one orphaned in the engine's process group is still killed with the group.
"""

import os
import time

try:
    import _signal as signal  # signal's functions and numbers, without its enums: enum costs ~4 ms of every run
except ImportError:  # pragma: no cover - CPython has it
    import signal

FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
TERMINAL = ("SIGINT", "SIGQUIT")  # sent by a terminal to its whole foreground group
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # start the stop timer
_DEFAULTS = ("SIGPIPE", "SIGXFSZ")  # Python ignores these; the program gets them at their defaults
_PR_SET_CHILD_SUBREAPER = 36
_RTLD_NOW = 2  # dlfcn.h
_POLL = 0.05  # seconds between tries to deliver a signal whose target has not started yet
_KILL_ROUNDS = 400  # bound on the rounds of kill-and-reap (each waits 5 ms for reparenting)
_SUBREAPER_AFTER = 0.1  # seconds: a shorter run never loads _ctypes (~4-30 ms of CPU on a busy node)


def run(launch, *, stop_timeout, tty):
    """Run `launch` (engines.base.Launch) under a supervisor; return its exit status (128+N for signal N)."""
    names = [n for n in FORWARDED if not (tty and n in TERMINAL)]
    commands, writer = os.pipe()
    for name in FORWARDED:  # in place before S exists: no signal between the two is lost
        number = getattr(signal, name)
        signal.signal(number, (lambda n, _f: _tell(writer, n)) if name in names else signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:  # S
        code = 125
        try:
            for name in FORWARDED:
                signal.signal(getattr(signal, name), signal.SIG_IGN)  # U passes them through the pipe
            os.close(writer)
            code = _supervise(launch, commands, stop_timeout, tty)
        finally:
            os._exit(code)
    os.close(commands)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    for name in FORWARDED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    os.close(writer)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _tell(writer, number):
    try:
        os.write(writer, bytes([number]))
    except OSError:  # S is gone: U is about to return
        pass


def _supervise(launch, commands, stop_timeout, tty):
    wake, waker = os.pipe()
    os.set_blocking(waker, False)
    signal.signal(signal.SIGCHLD, lambda _n, _f: None)
    signal.set_wakeup_fd(waker)
    defaults = {getattr(signal, n) for n in FORWARDED + _DEFAULTS}
    early = getattr(launch, "subreaper", False)
    if early:  # before the engine: what it daemonises at once stays below S
        _become_subreaper()
    try:
        pid = os.posix_spawn(launch.argv[0], launch.argv, launch.env, setsigdef=defaults,
                             **({} if tty else {"setpgroup": 0}))
    except OSError as error:
        os.write(2, f"error: cannot start {launch.argv[0]}: {error.strerror}\n".encode())
        return 125
    supervisor = _Supervisor(pid, getattr(launch, "signal_depth", 0), stop_timeout, group=not tty)
    supervisor.subreaper = early
    code = supervisor.loop(commands, wake)
    leftover = getattr(launch, "leftover", None)
    # the engine was killed before it could remove it; one that ended with 0 did (a stat spared: on NFS or
    # Lustre each is a round trip)
    if leftover and code != 0 and os.path.isdir(leftover):
        import shutil

        shutil.rmtree(leftover, ignore_errors=True)
    return code


class _Supervisor:
    def __init__(self, pid, depth, stop_timeout, *, group):
        self.pid = pid
        self.depth = depth
        self.stop_timeout = stop_timeout
        self.group = group
        self.status = None
        self.pending = []
        self.deadline = None
        self.subreaper = False
        self.started = time.monotonic()

    def loop(self, commands, wake):
        import select

        sources = [commands, wake]
        while True:
            self.reap()
            if self.status is not None:
                break
            self.deliver()
            timeout = self.due()
            if timeout == 0:
                continue
            ready, _, _ = select.select(sources, [], [], timeout)
            if wake in ready:
                os.read(wake, 512)
            if commands in ready:
                data = os.read(commands, 64)
                if not data:  # U is gone (killed): so is the container
                    sources.remove(commands)
                    self.kill_all()
                    continue
                self.pending.extend(data)
                if self.deadline is None and any(n in STOPPING for n in data):
                    self.deadline = time.monotonic() + self.stop_timeout
        self.kill_all()  # what the program left behind
        status = self.status
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

    def due(self):
        """Do what is due (become a subreaper, kill at the deadline); the seconds to
        the next timer, None when there is none, 0 after a kill."""
        now = time.monotonic()
        timers = [now + _POLL] if self.pending else []
        if not self.subreaper:
            if now >= self.started + _SUBREAPER_AFTER:
                self.become_subreaper()
            else:
                timers.append(self.started + _SUBREAPER_AFTER)
        if self.deadline is not None:
            if now >= self.deadline:
                self.deadline = None
                self.kill_all()
                return 0
            timers.append(self.deadline)
        return max(0.0, min(timers) - now) if timers else None

    def become_subreaper(self):
        if not self.subreaper:
            self.subreaper = True
            _become_subreaper()

    def reap(self):
        """Collect the children that ended; False when S has no child left (so nothing is below it)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.pid:
                self.status = status

    def deliver(self):
        """Send the pending signals; keep them while there is no target yet (PRoot's tracee not started)."""
        if not self.pending:
            return
        targets = [self.pid]
        for _ in range(self.depth):  # down to the program: PRoot's first tracee, the child of PRoot
            targets = [child for pid in targets for child in _children(pid)]
        if not targets:
            return
        for number in self.pending:
            for target in targets:
                _kill(target, number)
        self.pending = []

    def kill_all(self):
        """SIGKILL to every process below S, until none is left (bounded)."""
        if self.status is None:  # killing a running container: what it orphans meanwhile must stay below S
            self.become_subreaper()
            if self.group:  # the engine not reaped yet: its group id is still its own
                _killpg(self.pid)
        for _ in range(_KILL_ROUNDS):
            if not self.reap():  # no child: nothing below a subreaper (and no /proc walk on a plain exit)
                return
            below = _below()
            if not below:
                return
            for pid in below:
                _kill(pid, signal.SIGKILL)
            self.reap()
            time.sleep(0.005)


def _become_subreaper():
    """prctl(PR_SET_CHILD_SUBREAPER, 1) through _ctypes alone: `import ctypes` also loads struct, _struct and
    ctypes._endian and builds its whole type zoo (~6.5 ms of CPU against ~4 here, paid by every run that
    outlives _SUBREAPER_AFTER: all of them when 64 start at once on 2 cores, issue 13 item 4)."""
    try:
        import _ctypes

        class Int(_ctypes._SimpleCData):
            _type_ = "i"

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL
            _restype_ = Int

        class Library:  # what CFuncPtr((name, library)) reads: the dlopen handle of the process itself
            _handle = _ctypes.dlopen(None, _RTLD_NOW)

        Function(("prctl", Library()))(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # _ctypes is CPython's private module: another Python's gets ctypes' own way
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux >= 3.4: orphans are still found in the group
            pass


def _kill(pid, number):
    try:
        os.kill(pid, number)
    except OSError:  # gone, or no longer ours
        pass


def _killpg(group):
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass


def _children(pid):
    """The pids of the children of `pid` (psutil imported here, as in _below)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _below():
    """The pids of every process below this one (children, theirs, ...), from the parent pids in /proc/*/stat.
    psutil is imported here, not with the module: only a stop or a kill walks the tree (its import costs ~20 ms)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process().children(recursive=True)]
    except psutil.Error:
        return []
