"""`udocker run` as a use case of the library: a RunRequest (runspec.py) is run in its container (found, created
or pulled, and prepared by provision.py), as a RunSpec (runbuild.py) turned into the engine's command and
started under a supervisor (launch.py). The caller (cli/run.py) builds the request and the configuration and
says where reports go; nothing here imports udocker.cli.

On the hot path of `udocker run`: running an existing container imports only what it needs (no requests,
click, yaml, tarfile or unpacker; tests/functional/test_run_imports.py holds the list)."""

from udocker.errors import UdockerError, UsageError
from udocker.launch import execute
from udocker.paths import Layout
from udocker.provision import ContainerService, Located
from udocker.runbuild import build_spec, check_program, inject
from udocker.runopts import check_network, exposed_ports, parse_volume, publish_all
from udocker.runspec import Mount
from udocker.store import runs


class Silent:
    """The reporter of run for a caller that wants no reports. A reporter has
    warn(line): a warning about the run (e.g. a container set up with --nvidia on a node without a GPU);
    launching(mode, launch): told the engine's command before it starts (-D shows it; launch.describe());
    progress(): called when the image store is first needed, returns where pull progress goes or None;
    detached(container id): a detached run started; published(ports): -P published these (host port,
    container port, address, protocol) on free host ports."""

    def warn(self, line):
        pass

    def launching(self, mode, launch):
        pass

    def progress(self):
        return None

    def detached(self, container_id):
        pass

    def published(self, ports):
        pass


def run(request, config, environ, *, reporter=None):
    """Run `request` (a RunRequest) under `config` (udocker.config.Config) with the host environment `environ`;
    returns the program's exit status (128+N when killed by signal N). Raises UdockerError for udocker's own
    failures, ProgramNotFound/ProgramNotExecutable when the program cannot be started.

    Detached (request.detach): everything up to the engine's command happens here, with its errors; then the
    run goes on in a child process of its own (engines/detach.py) and this returns 0 once the run is recorded,
    after telling reporter.detached(container id). Every run of a container is recorded (store/runs.py), for
    `ps`, `stop` and `wait`."""
    reporter = reporter or Silent()
    if request.detach and request.location:
        raise UsageError("run -d needs a container or an image, not --location")
    service = ContainerService(config, Layout(config["topdir"], config["tmpdir"]), progress=reporter.progress)
    container = service.for_run(request.target, name=request.name, pull=request.pull, location=request.location)
    inherited = _volumes_from(service, request.volumes_from)
    mode, engine = service.engine_for(container)
    spec = build_spec(container, request, environ, check=False, inherited=inherited)
    if request.publish_all:
        _publish_all(spec, container, request, mode, reporter)
    check_network(spec, mode)
    _check_kernel(spec, mode, engine)
    inject(spec, config, request, container, environ, warn=reporter.warn, mode=mode,  # before before_run: fakechroot
           loader_cache=engine.name != "fakechroot")
    found = check_program(spec.rootfs, spec.argv[0], spec.env, spec.mounts)  # 126/127; injected binds count
    if "/" not in spec.argv[0]:
        spec.program = found  # the engine's command needs no second search of PATH
    engine.before_run(spec, mode)  # links the injected binds there
    launch = engine.command(spec, mode)
    reporter.launching(mode, launch)
    detached = None
    if request.detach:
        from udocker.engines import detach

        detached = detach.start(Layout.container_log(container.dir))
        if detached.parent:
            if not detached.wait_ready():
                raise UdockerError("the detached container did not start", hint=f"see 'udocker logs {container.id}'")
            reporter.detached(container.id)
            return 0
    recorded = {"volumes": [_volume_text(m) for m in inherited] + request.volumes, "ports": spec.ports}
    status = _supervised(container, mode, launch, request, config, detached, recorded)
    if detached:
        detached.finish()  # the log is complete before the container may go
    if request.rm:
        service.remove(container)
    return status


def _volumes_from(service, items):
    """--volumes-from CONTAINER[:ro|rw]: the Mounts of the volumes recorded for CONTAINER's latest run, in the
    mode they had there unless :ro or :rw says otherwise (Docker's rule)."""
    mounts = []
    for item in items:
        name, flag = (item[:-3], item[-2:]) if item.endswith((":ro", ":rw")) else (item, "")
        other = service.find(name)
        for text in runs.volumes(other.dir):
            mount = parse_volume(text)
            mounts.append(Mount(mount.source, mount.target, flag == "ro" if flag else mount.readonly))
    return mounts


def _volume_text(mount):
    return f"{mount.source}:{mount.target}" + (":ro" if mount.readonly else "")


def _publish_all(spec, container, request, mode, reporter):
    """-P: the image's EXPOSEd ports, on free host ports with an R mode's private network, else on their own."""
    config = {} if request.nometa else (container.record.get("config") or {})
    free = spec.network == "private" and mode.startswith("R")
    spec.ports, added = publish_all(spec.ports, exposed_ports(config), free)
    if free and added:
        reporter.published(added)


def _check_kernel(spec, mode, engine):
    """--kernel: PRoot's kernel release emulation, in P modes where this PRoot can do it."""
    if not spec.kernel:
        return
    if engine.name != "proot":
        from udocker.modetable import engine_modes

        raise UsageError(f"--kernel needs mode {' or '.join(engine_modes('proot'))} (PRoot's kernel release "
                         f"emulation): this container runs in mode {mode}")
    engine.check_kernel(mode)


def _supervised(container, mode, launch, request, config, detached, recorded=None):
    """Run `launch` under the supervisor, recorded as a run of `container` (a --location directory is not);
    the detached child tells its parent once the run is recorded (with `recorded`: its volumes and ports)."""
    started, status = None, 125
    try:
        if not isinstance(container, Located):
            try:
                started = runs.begin(container.dir, mode=mode, stop_timeout=config["stop_timeout"],
                                     detached=bool(detached), logger=detached and detached.logger,
                                     **(recorded or {}))
            except (OSError, UdockerError):
                if detached:  # a detached run must be found again (stop, wait)
                    raise
        if detached:
            detached.ready()
        status = execute(launch, cpuset=request.cpuset, stop_timeout=config["stop_timeout"], tty=request.tty)
    except UdockerError:
        runs.cancel(started)  # refused before the engine ran (an invalid --cpuset-cpus): no run to remember
        started = None
        raise
    finally:
        runs.end(started, status)
    return status
