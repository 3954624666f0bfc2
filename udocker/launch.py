"""Starting the engine's command (a Launch, engines/base.py) for `udocker run`: CPU affinity, working directory,
the supervisor that waits for it, the engine's cleanup and the caller's own afterwards (--rm)."""

import os

from udocker.engines import supervisor
from udocker.runopts import _cpuset


def execute(launch, *, cpuset=None, after=None, stop_timeout=10, tty=False):
    """Run the engine under a supervisor (engines/supervisor.py: no process of the container outlives this
    one, signals reach the program, `stop_timeout` seconds after SIGTERM/SIGINT/SIGHUP everything left is
    killed), clean up, and return its exit status (128+N when killed by signal N)."""
    if cpuset:
        os.sched_setaffinity(0, _cpuset(cpuset))
    if launch.cwd:
        os.chdir(launch.cwd)
    status = supervisor.run(launch, stop_timeout=stop_timeout, tty=tty)
    if launch.cleanup:
        _run_quietly(launch.cleanup, launch.env)
    if after:
        after()
    return status


def describe(mode, launch):
    """The line -D shows: the engine's command line (its path shows which engine runs) and, in F modes, the
    library it preloads."""
    import shlex  # only with -D

    preload = launch.env.get("LD_PRELOAD")
    return f"mode {mode}: {shlex.join(launch.argv)}" + (f" (LD_PRELOAD={preload})" if preload else "")


def _run_quietly(argv, env):
    """Run a cleanup command to its end, output discarded (subprocess would cost ~3 ms to import)."""
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    pid = os.posix_spawn(argv[0], argv, env, file_actions=quiet)
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
