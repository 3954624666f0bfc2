"""Run a program in a container: image config + command line + configuration -> RunSpec -> engine ->
exec. See docs/architecture.md, 'Data flow'. This module is on the hot path of `udocker run`: it imports only what
running an existing container needs (no requests, click, yaml unless a config file exists)."""

import os

from udocker.engines.base import resolve
from udocker.engines.common import DEFAULT_PATH
from udocker.errors import ProgramNotExecutable, ProgramNotFound, UdockerError, UsageError
from udocker.runopts import _cpuset, check_devices, check_ports, parse_volume, resolve_user  # noqa: F401 - API
from udocker.runspec import Mount, RunSpec

SYSTEM_MOUNTS = ("/dev", "/proc", "/sys", "/etc/resolv.conf", "/etc/host.conf", "/etc/hosts")
# Variables of the batch system and of MPI launchers that reach the program without --hostenv, so that
# `srun udocker run ...` and `mpirun udocker run ...` work unchanged: the task's rank, the job's ids, the
# PMI/PMIx rendezvous (server addresses, namespaces, ranks) and Open MPI's per-process settings. The image's
# ENV and -e still override them.
BATCH_ENV_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "PMI_", "PMIX_", "OMPI_", "PRTE_", "OPAL_", "ORTE_",
                      "HYDRA_", "MPI_LOCALNRANKS", "MPI_LOCALRANKID", "PBS_", "LSB_", "SGE_", "FLUX_")
RENDEZVOUS_VARS = ("PMIX_SERVER_TMPDIR",)


class Options:
    """`udocker run` options, as parsed by cli.run (names are the long option names)."""

    def __init__(self, **values):
        self.rm = values.get("rm", False)
        self.name = values.get("name")
        self.workdir = values.get("workdir")
        self.user = values.get("user")
        self.volumes = list(values.get("volume", ()))
        self.novol = list(values.get("novol", ()))
        self.env = list(values.get("env", ()))
        self.env_files = list(values.get("env_file", ()))
        self.hostauth = values.get("hostauth", False)
        self.containerauth = values.get("containerauth", False)
        self.nosysdirs = values.get("nosysdirs", False)
        self.nometa = values.get("nometa", False)
        self.hostenv = values.get("hostenv", False)
        self.bindhome = values.get("bindhome", False)
        self.entrypoint = values.get("entrypoint")
        self.cpuset = values.get("cpuset_cpus")
        self.hostname = values.get("hostname")
        self.devices = list(values.get("device", ()))
        self.publish = list(values.get("publish", ()))
        self.tty = values.get("tty", False)
        # True (--nvidia), False (--no-nvidia) or None (the container record, then the config key decide)
        self.nvidia = False if values.get("no_nvidia") else True if values.get("nvidia") else None
        self.infiniband = False if values.get("no_ib") else True if values.get("ib") else None
        self.hostmpi = False if values.get("no_hostmpi") else True if values.get("hostmpi") else None
        self.command = list(values.get("command", ()))


# -- the program ---------------------------------------------------------------------------------------
def program_argv(config, options):
    """Docker's rule: ENTRYPOINT + CMD; a command on the command line replaces CMD; --entrypoint
    replaces ENTRYPOINT and drops the image's CMD ("" clears the entrypoint)."""
    entrypoint = config.get("Entrypoint") or []
    cmd = config.get("Cmd") or []
    if options.entrypoint is not None:
        entrypoint = [options.entrypoint] if options.entrypoint else []
        cmd = []
    if options.command:
        cmd = options.command
    argv = list(entrypoint) + list(cmd)
    if not argv:
        raise UsageError("no command specified", hint="give a command after the container name")
    return argv


def check_program(rootfs, argv0, env):
    """Resolve argv[0] in the container like execvp (PATH lookup for a bare name); raises
    ProgramNotFound (127) or ProgramNotExecutable (126). Returns the container path."""
    if "/" in argv0:
        candidates = [argv0 if argv0.startswith("/") else os.path.join(env.get("PWD", "/"), argv0)]
    else:
        candidates = [os.path.join(d or ".", argv0) for d in env.get("PATH", DEFAULT_PATH).split(":")]
    for candidate in candidates:
        host = resolve(rootfs, candidate)
        if os.path.isfile(host):
            if not os.access(host, os.X_OK):
                raise ProgramNotExecutable(f"permission denied: {argv0} is not executable")
            return candidate
    if "/" in argv0:
        raise ProgramNotFound(f"no such file or directory: {argv0}")
    raise ProgramNotFound(f"executable file not found in $PATH: {argv0}")


# -- environment ---------------------------------------------------------------------------------------
def _env_pairs(items, environ, where):
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid environment variable in {where}: {item!r}")
        if sep:
            pairs.append((key, value))
        elif key in environ:  # `-e NAME` takes the host's value, as docker does
            pairs.append((key, environ[key]))
    return pairs


def _env_file(path, environ):
    try:
        with open(path, encoding="utf-8") as stream:
            lines = [line.strip() for line in stream]
    except OSError as exc:
        raise UsageError(f"cannot read env file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"env file {path} is not UTF-8 text", hint="give a file of KEY=VALUE lines") from None
    return _env_pairs([line for line in lines if line and not line.startswith("#")], environ, path)


def build_env(config, options, environ, home, hostname):
    env = {}
    if options.hostenv:
        env.update(environ)
    else:
        env.update((k, v) for k, v in environ.items() if k.startswith(BATCH_ENV_PREFIXES))
    for key, value in _env_pairs(config.get("Env") or [], {}, "the image"):
        env[key] = value
    for path in options.env_files:
        env.update(_env_file(path, environ))
    env.update(_env_pairs(options.env, environ, "-e"))
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", home)
    env.setdefault("HOSTNAME", hostname)
    if options.tty:
        env.setdefault("TERM", environ.get("TERM", "xterm"))
    return env


# -- mounts --------------------------------------------------------------------------------------------
def build_mounts(options, environ):
    mounts = []
    if not options.nosysdirs:
        mounts += [Mount(p, p) for p in SYSTEM_MOUNTS if os.path.exists(p)]
    if options.hostauth:
        mounts += [Mount(p, p, True) for p in ("/etc/passwd", "/etc/group") if os.path.exists(p)]
    if options.bindhome and environ.get("HOME"):
        mounts.append(Mount(environ["HOME"], environ["HOME"]))
    for var in RENDEZVOUS_VARS:
        # PMIx's server directory (its shared-memory data store; Open MPI's session directory under mpirun):
        # the ranks find it at the path the launcher gave them.
        path = environ.get(var, "").rstrip("/")
        if path.startswith("/") and os.path.isdir(path) and not options.nosysdirs:
            mounts.append(Mount(os.path.normpath(path), os.path.normpath(path)))
    for text in options.volumes:
        mounts.append(parse_volume(text))
    dropped = {os.path.normpath(p.split(":")[0]) for p in options.novol}
    return [m for m in mounts if m.source not in dropped and m.target not in dropped]


def build_spec(container, options, environ):
    """The RunSpec for `options` in `container` (image config from container.json unless --nometa)."""
    config = {} if options.nometa else (container.record.get("config") or {})
    rootfs = container.rootfs
    uid, gid, home = resolve_user(rootfs, options.user or config.get("User"))
    hostname = options.hostname or os.uname().nodename
    env = build_env(config, options, environ, home, hostname)
    cwd = options.workdir or config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):  # runc refuses it with its own log line, PRoot resolves it on the host
        raise UsageError(f"the working directory {cwd!r} is invalid: it needs to be an absolute path",
                         hint="use -w /PATH" if options.workdir else "use --workdir=/PATH")
    argv = program_argv(config, options)
    env["PWD"] = cwd
    check_program(rootfs, argv[0], env)
    return RunSpec(rootfs=rootfs, argv=argv, env=env, cwd=cwd, uid=uid, gid=gid,
                   mounts=build_mounts(options, environ), devices=check_devices(options.devices),
                   hostname=options.hostname, tty=options.tty, container_dir=container.dir,
                   container_id=container.id, cpuset=options.cpuset, ports=check_ports(options.publish))


def inject(spec, config, options, container, environ, *, root="/", warn=lambda line: None):
    """Add the node's NVIDIA driver and Infiniband stack to `spec` when wanted (udocker/inject): found now,
    on the node that runs the job, never remembered, so another node's driver is never used. `root`: the
    host tree to read (tests); `warn(line)`: where to say that a `setup --nvidia` container runs without."""
    from udocker import inject as injectors

    request = dict(environ)
    request.update(_env_pairs(options.env, environ, "-e"))
    nvidia = injectors.setting(config["nvidia"], options.nvidia, container.record.get("nvidia"), key="nvidia")
    if options.nvidia is None and container.record.get("nvidia") and not injectors.node_has_gpus(root):
        # `setup --nvidia` is often run on a login node of a repository shared by GPU and CPU nodes: on a node
        # without a GPU the container runs without the driver, with a warning (run --nvidia is an error there)
        nvidia = "off"
        warn(f"container {container.id[:12]} is set up with --nvidia but this node has no NVIDIA GPU: running "
             "without the driver")
    infiniband = injectors.setting(config["infiniband"], options.infiniband, None, key="infiniband")
    hostmpi = injectors.setting(config["host_mpi"], options.hostmpi, None, key="host_mpi")
    for plan in injectors.plans(nvidia=nvidia, infiniband=infiniband, hostmpi=hostmpi, request=request,
                                image_env=spec.env,
                                root=root):
        plan.apply(spec, default_path=DEFAULT_PATH)


# -- execution -----------------------------------------------------------------------------------------
def execute(launch, *, cpuset=None, after=None, stop_timeout=10, tty=False):
    """Run the engine under a supervisor (engines/supervisor.py: no process of the container outlives this
    one, signals reach the program, `stop_timeout` seconds after SIGTERM/SIGINT/SIGHUP everything left is
    killed), clean up, and return its exit status (128+N when killed by signal N)."""
    from udocker.engines import supervisor

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


# -- the service behind `udocker run` ------------------------------------------------------------------
class _Located:
    """A root file system directory run with --location, as if it were a container."""

    def __init__(self, directory):
        self.rootfs = os.path.abspath(directory)
        self.dir = self.rootfs + ".udocker"
        self.record = {"id": "location-" + str(os.getpid()), "config": {}, "mode": None}
        self.id = self.record["id"]
        self.mode = None

    def engine_dir(self, name):
        return os.path.join(self.dir, "engine", name)


def run_from_cli(general, values, target, command, environ):
    """Find or create the container, prepare its engine and run `command`; returns the exit status."""
    from udocker.config import Config
    from udocker.paths import Layout
    from udocker.store.containers import ContainerStore

    config = Config.load(config_file=general.get("config"), environ=environ,
                         cli={"topdir": general.get("repo"), "insecure": general.get("insecure"),
                              "registry": values.get("registry"), "index": values.get("index"),
                              "platform": values.get("platform")})
    layout = Layout(config["topdir"], config["tmpdir"])
    containers = ContainerStore(layout, config["lock_timeout"])
    options = Options(**dict(values, command=command, tty=os.isatty(0)))  # -t ignored off a terminal (1.3)
    if values.get("location"):
        if not os.path.isdir(values["location"]):
            raise UdockerError(f"not a directory: {values['location']}")
        container = _Located(values["location"])
    else:
        container = _container(config, layout, containers, target, values)
    mode, engine = _engine(config, layout, containers, container)
    spec = build_spec(container, options, environ)
    inject(spec, config, options, container, environ,  # before before_run: fakechroot links the binds there
           warn=lambda line: general.get("quiet") or os.write(2, f"warning: {line}\n".encode()))
    engine.before_run(spec, mode)
    launch = engine.command(spec, mode)
    if general.get("debug"):
        _debug_launch(mode, launch)
    after = (lambda: containers.remove(container, force=True)) if options.rm and not values.get("location") else None
    return execute(launch, cpuset=options.cpuset, after=after, stop_timeout=config["stop_timeout"],
                   tty=options.tty)


def _debug_launch(mode, launch):
    """-D: the engine's command line (its path shows which engine runs) and, in F modes, the library."""
    import shlex
    import sys

    preload = launch.env.get("LD_PRELOAD")
    sys.stderr.write(f"debug: mode {mode}: {shlex.join(launch.argv)}"
                     + (f" (LD_PRELOAD={preload})" if preload else "") + "\n")


def _container(config, layout, containers, target, values):
    """The container named `target`, or a new one of image `target` (pulled as --pull says)."""
    from udocker.errors import NotFound

    policy = values.get("pull") or "missing"
    name = values.get("name")
    if policy == "reuse" and name:
        try:
            if os.path.isdir(layout.containers):  # a new repository has none: find() would fail to list it
                return containers.find(name)
        except NotFound:
            pass
        return _reuse(config, layout, containers, target, name)
    if os.path.isdir(layout.containers):
        try:
            return containers.find(target)
        except NotFound:
            pass
    return _from_image(config, layout, containers, target, policy, name)


def _reuse(config, layout, containers, target, name):
    """Container `name`, made from image `target` by the first of several processes asking at once (the
    tasks of a job preparing one container per node): the others wait for it instead of failing with
    'container name already in use'."""
    from udocker import fs
    from udocker.errors import NotFound

    fs.ensure_dir(layout.locks)
    with fs.locked(layout.lock("name", name), timeout=config["lock_timeout"], what=f"container name {name}"):
        try:
            if os.path.isdir(layout.containers):
                return containers.find(name)
        except NotFound:
            pass
        return _from_image(config, layout, containers, target, "missing", name)


def _from_image(config, layout, containers, target, policy, name):
    from udocker.create import create
    from udocker.errors import NotFound
    from udocker.store import Repository

    repo = Repository.open(layout, lock_timeout=config["lock_timeout"], max_layer_size=config["max_layer_size"])
    try:
        local = repo.images.find(target) if policy != "always" else None
    except NotFound:
        local = None
        if policy == "never":
            raise NotFound(f"no container or image named {target}", hint="pull it or use --pull=missing") from None
    if local is None:
        _pull(config, repo, target)
    container = create(repo, containers, target, name=name, mode=None)
    return container


def _pull(config, repo, target):
    from udocker import pull as pulling
    from udocker.cli.progress import for_stderr
    from udocker.oci import platform as platforms
    from udocker.reference import parse
    from udocker.registry.client import RegistryClient

    wanted = platforms.parse(config["platform"]) if config["platform"] else platforms.host()
    client = RegistryClient(config, repo.layout)
    try:
        pulling.pull(repo, client, parse(target), platform=wanted, concurrency=config["pull_concurrency"],
                     progress=for_stderr(quiet=False))
    finally:
        client.close()


def _engine(config, layout, containers, container):
    """The mode to run in (the container's, else the configured default, else probed) and its engine,
    prepared for this container (once per mode switch, under the container's lock)."""
    from udocker.engines import modes

    prepared = container.record.get("prepared")
    mode = container.mode or config["default_execution_mode"]
    if not mode or mode == "auto":
        # the mode auto chose at the first run is kept: probing again costs a PRoot or runc start per run
        mode = prepared or modes.auto_mode(config, layout, container)
    engine = modes.get_engine(mode, config, layout)
    if isinstance(container, _Located):
        engine.probe(mode, container)
        engine.prepare(container, mode)
    elif prepared != mode:
        # once per mode switch (a prepared container has shown the mode works here), before the previous
        # mode is undone: a mode that cannot run this container (fakechroot: too old a glibc) changes nothing
        engine.probe(mode, container)
        prepare(config, layout, containers, container, mode, engine)
    elif mode in engine.prepare_each_run:
        prepare(config, layout, containers, container, mode, engine)
    return mode, engine


def prepare(config, layout, containers, container, mode, engine):
    """Switch `container` to `mode`: undo the previous mode's preparation, make shared files private
    when the engine may write them in place (R modes: root in a user namespace overrides permissions),
    then prepare. Serialised per container so that concurrent runs prepare once."""
    from udocker import fs
    from udocker.engines import modes
    from udocker.store import rootfs as rootfs_store

    with fs.locked(layout.lock("prepare", container.id), timeout=config["lock_timeout"],
                   what=f"container {container.id}"):
        record = containers.load(container.id).record
        previous = record.get("prepared")
        if previous == mode and mode not in engine.prepare_each_run:
            container.record = record
            return
        if previous and previous != mode:
            modes.get_engine(previous, config, layout).unprepare(container, previous)
        if mode.startswith("R") and record.get("shared"):
            rootfs_store.materialize(container.rootfs)
            containers.update(container, shared=False)
        engine.prepare(container, mode)
        containers.update(container, prepared=mode)
