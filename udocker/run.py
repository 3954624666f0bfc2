"""`udocker run` as a use case of the library: a RunRequest (runspec.py) is run in its container (found, created
or pulled, and prepared by provision.py), as a RunSpec (runbuild.py) turned into the engine's command and
started under a supervisor (launch.py). The caller (cli/run.py) builds the request and the configuration and
says where reports go; nothing here imports udocker.cli.

On the hot path of `udocker run`: running an existing container imports only what it needs (no requests,
click, yaml, tarfile or unpacker; tests/functional/test_run_imports.py holds the list)."""

from udocker.launch import execute
from udocker.paths import Layout
from udocker.provision import ContainerService
from udocker.runbuild import build_spec, check_program, inject


class Silent:
    """The reporter of run for a caller that wants no reports. A reporter has
    warn(line): a warning about the run (e.g. a container set up with --nvidia on a node without a GPU);
    launching(mode, launch): told the engine's command before it starts (-D shows it; launch.describe());
    progress(): called when the image store is first needed, returns where pull progress goes or None."""

    def warn(self, line):
        pass

    def launching(self, mode, launch):
        pass

    def progress(self):
        return None


def run(request, config, environ, *, reporter=None):
    """Run `request` (a RunRequest) under `config` (udocker.config.Config) with the host environment `environ`;
    returns the program's exit status (128+N when killed by signal N). Raises UdockerError for udocker's own
    failures, ProgramNotFound/ProgramNotExecutable when the program cannot be started."""
    reporter = reporter or Silent()
    service = ContainerService(config, Layout(config["topdir"], config["tmpdir"]), progress=reporter.progress)
    container = service.for_run(request.target, name=request.name, pull=request.pull, location=request.location)
    mode, engine = service.engine_for(container)
    spec = build_spec(container, request, environ, check=False)
    inject(spec, config, request, container, environ, warn=reporter.warn, mode=mode,  # before before_run: fakechroot
           loader_cache=engine.name != "fakechroot")
    check_program(spec.rootfs, spec.argv[0], spec.env, spec.mounts)  # 126/127; injected binds count
    engine.before_run(spec, mode)  # links the injected binds there
    launch = engine.command(spec, mode)
    reporter.launching(mode, launch)
    after = (lambda: service.remove(container)) if request.rm else None
    return execute(launch, cpuset=request.cpuset, after=after, stop_timeout=config["stop_timeout"],
                   tty=request.tty)
