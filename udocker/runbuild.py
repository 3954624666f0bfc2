"""RunRequest -> RunSpec: the image config (container.json), the request and the host's environment make the
program's argv, environment, identity, working directory and mounts (Docker's rules); inject() adds the node's
NVIDIA, Infiniband and MPI stacks. No process is started here (launch.py does that)."""

import os

from udocker import inject as injectors
from udocker.engines.common import DEFAULT_PATH, lookup, program_file
from udocker.errors import ProgramNotExecutable, ProgramNotFound, UsageError
from udocker.modetable import engine_of
from udocker.rootpath import resolve_stat
from udocker.runopts import (
    check_devices,
    check_kernel,
    check_ports,
    dri,
    network_of,
    parse_volume,
    resolv_conf,
    resolve_user,
)
from udocker.runspec import Mount, RunSpec

SYSTEM_MOUNTS = ("/dev", "/proc", "/sys", "/etc/resolv.conf", "/etc/host.conf", "/etc/hosts")
# Variables of the batch system and of MPI launchers that reach the program without --hostenv, so that
# `srun udocker run ...` and `mpirun udocker run ...` work unchanged: the task's rank, the job's ids, the
# PMI/PMIx rendezvous (server addresses, namespaces, ranks) and Open MPI's per-process settings. The image's
# ENV and -e still override them.
BATCH_ENV_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "PMI_", "PMIX_", "OMPI_", "PRTE_", "OPAL_", "ORTE_",
                      "HYDRA_", "MPI_LOCALNRANKS", "MPI_LOCALRANKID", "PBS_", "LSB_", "SGE_", "FLUX_")
RENDEZVOUS_VARS = ("PMIX_SERVER_TMPDIR",)


# -- the program ---------------------------------------------------------------------------------------
def program_argv(config, request):
    """Docker's rule: ENTRYPOINT + CMD; a command on the command line replaces CMD; --entrypoint
    replaces ENTRYPOINT and drops the image's CMD ("" clears the entrypoint)."""
    entrypoint = config.get("Entrypoint") or []
    cmd = config.get("Cmd") or []
    if request.entrypoint is not None:
        entrypoint = [request.entrypoint] if request.entrypoint else []
        cmd = []
    if request.command:
        cmd = request.command
    argv = list(entrypoint) + list(cmd)
    if not argv:
        raise UsageError("no command specified", hint="give a command after the container name")
    return argv


def check_program(rootfs, argv0, env, mounts=()):
    """Resolve argv[0] in the container like execvp (common.lookup for a bare name); raises
    ProgramNotFound (127) or ProgramNotExecutable (126). Returns the container path."""
    if "/" not in argv0:
        found, denied = lookup(rootfs, argv0, env, mounts)
        if found:
            return found
        if denied:
            raise ProgramNotExecutable(f"permission denied: {argv0} is not executable")
        raise ProgramNotFound(f"executable file not found in $PATH: {argv0}")
    path = argv0 if argv0.startswith("/") else os.path.join(env.get("PWD", "/"), argv0)
    regular, executable = program_file(resolve_stat(rootfs, path, mounts)[1])
    if not regular:
        raise ProgramNotFound(f"no such file or directory: {argv0}")
    if not executable:
        raise ProgramNotExecutable(f"permission denied: {argv0} is not executable")
    return path


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


def build_env(config, request, environ, home, hostname):
    env = {}
    if request.hostenv:
        env.update(environ)
    else:
        env.update((k, v) for k, v in environ.items() if k.startswith(BATCH_ENV_PREFIXES))
    for key, value in _env_pairs(config.get("Env") or [], {}, "the image"):
        env[key] = value
    for path in request.env_files:
        env.update(_env_file(path, environ))
    env.update(_env_pairs(request.env, environ, "-e"))
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", home)
    env.setdefault("HOSTNAME", hostname)
    if request.tty:
        env.setdefault("TERM", environ.get("TERM", "xterm"))
    return env


def _isolated(spec, mode):
    return (mode is not None and engine_of(mode) == "oci") or all(m.target != "/dev" for m in spec.mounts)


# -- mounts --------------------------------------------------------------------------------------------
def build_mounts(request, environ, inherited=()):
    """The binds of the run: the system's, --hostauth's, --bindhome's, --dri's, the rendezvous directory, the
    `inherited` volumes (Mounts of --volumes-from) and -v's; less --novol's."""
    mounts = []
    if not request.nosysdirs:
        mounts += [Mount(p, p) for p in SYSTEM_MOUNTS if os.path.exists(p)]
    if request.hostauth:
        mounts += [Mount(p, p, True) for p in ("/etc/passwd", "/etc/group") if os.path.exists(p)]
    if request.bindhome and environ.get("HOME"):
        mounts.append(Mount(environ["HOME"], environ["HOME"]))
    for var in RENDEZVOUS_VARS:
        # PMIx's server directory (its shared-memory data store; Open MPI's session directory under mpirun):
        # the ranks find it at the path the launcher gave them.
        path = environ.get(var, "").rstrip("/")
        if path.startswith("/") and os.path.isdir(path) and not request.nosysdirs:
            mounts.append(Mount(os.path.normpath(path), os.path.normpath(path)))
    if request.dri:
        mounts += dri()[0]
    mounts += list(inherited)
    for text in request.volumes:
        mounts.append(parse_volume(text))
    dropped = {os.path.normpath(p.split(":")[0]) for p in request.novol}
    return [m for m in mounts if m.source not in dropped and m.target not in dropped]


def _dns_mount(request, container_dir):
    """--dns, --dns-search: the container's own resolv.conf (named by its content: concurrent runs with other
    values keep theirs), bound over /etc/resolv.conf; the host's is only read."""
    import hashlib

    from udocker import fs
    from udocker.paths import Layout

    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as stream:
            host_text = stream.read()
    except OSError:
        host_text = ""
    text = resolv_conf(request.dns, request.dns_search, host_text)
    directory = Layout.engine_dir(container_dir, "dns")
    fs.ensure_dir(directory)
    path = os.path.join(directory, f"resolv-{hashlib.sha256(text.encode()).hexdigest()[:16]}.conf")
    if not os.path.isfile(path):
        fs.atomic_write(path, text.encode(), durable=False)
    return Mount(path, "/etc/resolv.conf")


def legacy_mounts(container):
    """A udocker 1.x container set up for an R mode has files of its ROOT (/etc/passwd, ...) replaced by links into
    /.bind_host_files, the originals kept beside ROOT (store/v1containers.py): bind them there, read-only."""
    legacy = getattr(container, "legacy", None)
    if legacy is None or not legacy.bind_orig:
        return []
    from udocker.store.v1containers import BIND_TARGET

    return [Mount(legacy.bind_orig, BIND_TARGET, True)]


def build_spec(container, request, environ, *, check=True, inherited=()):
    """The RunSpec for `request` in `container` (image config from container.json unless --nometa). With
    `check` false the program is not looked up: run() checks it after inject(), whose binds may provide it
    (the driver's nvidia-smi). `inherited`: the Mounts of --volumes-from."""
    config = {} if request.nometa else (container.record.get("config") or {})
    rootfs = container.rootfs
    uid, gid, home = resolve_user(rootfs, request.user or config.get("User"))
    hostname = request.hostname or os.uname().nodename
    env = build_env(config, request, environ, home, hostname)
    cwd = request.workdir or config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):  # runc refuses it with its own log line, PRoot resolves it on the host
        raise UsageError(f"the working directory {cwd!r} is invalid: it needs to be an absolute path",
                         hint="use -w /PATH" if request.workdir else "use --workdir=/PATH")
    argv = program_argv(config, request)
    env["PWD"] = cwd
    mounts = build_mounts(request, environ, inherited) + legacy_mounts(container)
    if request.dns or request.dns_search:
        dns = _dns_mount(request, container.dir)
        mounts = [m for m in mounts if m.target != "/etc/resolv.conf"] + [dns]
    if check:
        check_program(rootfs, argv[0], env, mounts)
    ports = check_ports(request.publish)
    return RunSpec(rootfs=rootfs, argv=argv, env=env, cwd=cwd, uid=uid, gid=gid,
                   mounts=mounts, devices=check_devices(request.devices) + (dri()[1] if request.dri else []),
                   hostname=request.hostname, tty=request.tty, container_dir=container.dir,
                   container_id=container.id, cpuset=request.cpuset, ports=ports,
                   ipc=request.ipc or "host", network=network_of(ports, request.network),
                   kernel=check_kernel(request.kernel) if request.kernel else None)


def inject(spec, config, request, container, environ, *, root="/", warn=lambda line: None, mode=None,
           loader_cache=True):
    """Add the node's NVIDIA driver and Infiniband stack to `spec` when wanted (udocker/inject): found now,
    on the node that runs the job, never remembered, so another node's driver is never used. `root`: the
    host tree to read (tests); `warn(line)`: where to say that a `setup --nvidia` container runs without;
    `mode`: the execution mode (R modes, like a run without /dev, show the container only its own devices);
    `loader_cache`: bind a loader cache listing the injected libraries over the image's /etc/ld.so.cache (not
    in fakechroot modes, whose loader reads the host's cache (F1) or none)."""
    asked = dict(environ)
    asked.update(_env_pairs(request.env, environ, "-e"))
    nvidia = injectors.setting(config["nvidia"], request.nvidia, container.record.get("nvidia"), key="nvidia")
    if request.nvidia is None and container.record.get("nvidia") and not injectors.node_has_gpus(root):
        # `setup --nvidia` is often run on a login node of a repository shared by GPU and CPU nodes: on a node
        # without a GPU the container runs without the driver, with a warning (run --nvidia is an error there)
        nvidia = "off"
        warn(f"container {container.id[:12]} is set up with --nvidia but this node has no NVIDIA GPU: running "
             "without the driver")
    infiniband = injectors.setting(config["infiniband"], request.infiniband, None, key="infiniband")
    hostmpi = injectors.setting(config["host_mpi"], request.hostmpi, None, key="host_mpi")
    cached = []
    for plan in injectors.plans(nvidia=nvidia, infiniband=infiniband, hostmpi=hostmpi, request=asked,
                                image_env=spec.env, root=root, isolated=_isolated(spec, mode),
                                rootfs=spec.rootfs):
        plan.apply(spec, default_path=DEFAULT_PATH)
        if plan.name == "nvidia":  # the image's cuda-compat libraries and NVIDIA_REQUIRE_* (GPU path only)
            from udocker.inject import cudacompat

            cudacompat.apply(spec, plan, asked)
        cached += plan.loader_cache
    if cached and loader_cache and spec.container_dir:
        _bind_loader_cache(spec, cached)


def _bind_loader_cache(spec, entries):
    from udocker.inject import ldcache
    from udocker.paths import Layout

    path = ldcache.container_cache(spec.rootfs, entries, Layout.engine_dir(spec.container_dir, "inject"))
    if path and all(m.target != "/etc/ld.so.cache" for m in spec.mounts):
        spec.mounts.append(Mount(path, "/etc/ld.so.cache"))

