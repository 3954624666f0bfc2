"""The Engine contract. Every engine (proot, fakechroot, runc, crun) implements it.

Life cycle, driven by run.py and `udocker setup`:
  probe(mode, container=None) -> None, or raises EngineUnavailable saying why the mode cannot run on this
                            host (or, given a container, run that container: fakechroot checks its glibc)
  prepare(container, mode)   changes the container so that `mode` can run it (idempotent; e.g. F3 patches
                             ELF interpreters, R modes write an OCI bundle); records what it changed under
                             container_dir/engine/<name>/ so that unprepare() can restore it exactly
  unprepare(container, mode) undoes prepare() (switching modes with `setup --execmode`)
  before_run(spec, mode)     the I/O one run needs beyond prepare() (fakechroot links mount targets); a no-op
                             for engines that need none; called just before command()
  command(spec, mode)    -> Launch: pure, no I/O beyond reading files; what to exec
run.py then changes to Launch.cwd when it is set and runs Launch.argv with Launch.env under a supervisor
(engines/supervisor.py: signals are passed to the process Launch.signal_depth says, nothing of the container
outlives `udocker run`), runs Launch.cleanup when set, and exits with the engine's status.

Engines never print; they raise udocker.errors.UdockerError subclasses (EngineUnavailable, EngineError).
Binaries are found by engines.locate.find(name, config) (configured path, $UDOCKER_DIR/engines/bin, PATH).
"""


class Launch:
    """What run.py executes. argv[0] is an absolute host path. env is the complete environment of the
    engine process (not only the container's). cleanup: argv to run after the child exits, or None.
    cwd: the host directory to change to before exec, or None to stay (engines such as fakechroot have no
    working-directory option of their own). signal_depth: where the signals `udocker run` gets go: 0 the
    engine process (it is the program, or passes them on), N the processes N levels below it: the program
    under PRoot, which ignores SIGTERM (1 in P modes, 3 in R2/R3: runtime -> timeout -> PRoot -> program).
    leftover: a directory the engine removes itself when it ends, which the supervisor removes when the
    engine was killed (runc's state directory of the run), or None. subreaper: the supervisor must be a child
    subreaper before the engine starts (a daemon the engine starts at once, the private network's stack, is
    then reparented to it, not to init)."""

    __slots__ = ("argv", "env", "cleanup", "cwd", "signal_depth", "leftover", "subreaper")

    def __init__(self, argv, env, cleanup=None, cwd=None, signal_depth=0, leftover=None, subreaper=False):
        self.argv = list(argv)
        self.env = dict(env)
        self.cleanup = cleanup
        self.cwd = cwd
        self.signal_depth = signal_depth
        self.leftover = leftover
        self.subreaper = subreaper

    def __repr__(self):
        return f"Launch({self.argv!r}, cleanup={self.cleanup!r})"


class Engine:
    """Base class. Subclasses set `name` and `modes` and implement the four methods."""

    name = ""
    modes = ()
    prepare_each_run = ()  # modes whose prepare() must run before every run (F4 patches new programs)

    def __init__(self, config, layout):
        self.config = config
        self.layout = layout

    def probe(self, mode, container=None):
        """Raise EngineUnavailable(reason) if `mode` cannot run here (binary missing, no user namespaces,
        ptrace or seccomp blocked...), or cannot run `container` when one is given and the engine depends on
        its contents. Cheap: may run the engine once on an empty command."""
        raise NotImplementedError

    def prepare(self, container, mode):
        """Make `container` (a store.containers.Container) runnable in `mode`. Idempotent."""

    def unprepare(self, container, mode):
        """Undo prepare() exactly, leaving the container as create() made it (plus the user's changes)."""

    def before_run(self, spec, mode):
        """Do what one run of `spec` needs on disk beyond prepare(), just before command(). Default: nothing."""

    def command(self, spec, mode):
        """Return the Launch that runs `spec` (runspec.RunSpec) in `mode`. Pure."""
        raise NotImplementedError
