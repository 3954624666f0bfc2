"""The data of `udocker run`, pure and without I/O: RunRequest (what was asked: the container or image, the
command, the options) and RunSpec (everything an engine needs to start one program in one container).

A RunRequest is built by the command line (cli/run.py) or any other caller; run.py turns it into a RunSpec
(runbuild.py) from the image config, the container record and the configuration; engines consume the RunSpec
(engines/base.py). Kept free of dataclasses/typing imports (~15 ms): it is on the `run` path, where every
millisecond of start-up is added to the engine's.
"""


class Mount:
    """A host path made visible at `target` inside the container (read-only when `readonly`)."""

    __slots__ = ("source", "target", "readonly")

    def __init__(self, source, target, readonly=False):
        self.source = source
        self.target = target
        self.readonly = readonly

    def __repr__(self):
        return f"Mount({self.source!r}, {self.target!r}, readonly={self.readonly})"

    def __eq__(self, other):
        return isinstance(other, Mount) and (self.source, self.target, self.readonly) == (
            other.source, other.target, other.readonly)


class RunSpec:
    """What to run and how.

    rootfs: absolute host path of the container's root filesystem.
    argv: the program and its arguments (entrypoint + cmd already combined), argv[0] a path in the container
          or a name looked up in the container's PATH.
    env: the program's complete environment (image env, -e, HOME, PATH...), as a dict.
    cwd: working directory inside the container.
    uid, gid: numeric identity the program should see (0 = root, emulated where the engine can).
    mounts: list of Mount, in order; later mounts may sit inside earlier ones.
    devices: host device paths to expose (R modes; bind mounts elsewhere).
    hostname: or None to keep the host's.
    tty: stdin is a terminal.
    container_dir: the container's directory (engines keep state under container_dir/engine/<name>/).
    container_id: the container's id (used to name runc/crun containers).
    cpuset: a cpuset string (e.g. "0-3") or None.
    ports: list of (host port, container port, host address or "", "tcp"|"udp"); a port published as another
           needs network "private".
    network: "host" (share the host's network) or "private" (R modes: a network namespace of its own, reached
             through a user-mode stack that forwards the published ports: engines/netstack.py).
    ipc: "host" (share the host's IPC namespace and /dev/shm) or "private" (engines with namespaces: R modes).
    kernel: the kernel release the program should see (PRoot's -k, P modes) or None.
    program: argv[0], a bare name, as `run` found it in the container's PATH (runbuild.check_program), or
             None: the engine searches (engines/common.program_path), one walk of PATH per run, not two.
    """

    __slots__ = ("rootfs", "argv", "env", "cwd", "uid", "gid", "mounts", "devices", "hostname", "tty",
                 "container_dir", "container_id", "cpuset", "ports", "ipc", "network", "kernel",
                 "program")

    def __init__(self, *, rootfs, argv, env, cwd="/", uid=0, gid=0, mounts=(), devices=(), hostname=None,
                 tty=False, container_dir="", container_id="", cpuset=None, ports=(), ipc="host",
                 network="host", kernel=None):
        self.rootfs = rootfs
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.uid = uid
        self.gid = gid
        self.mounts = list(mounts)
        self.devices = list(devices)
        self.hostname = hostname
        self.tty = tty
        self.container_dir = container_dir
        self.container_id = container_id
        self.cpuset = cpuset
        self.ports = list(ports)
        self.ipc = ipc
        self.network = network
        self.kernel = kernel
        self.program = None


class RunRequest:
    """What `udocker run` is asked to do (the long option names of `udocker run --help`, as Python values).

    target: a container (name, id, id prefix) or an image reference; None with `location`.
    command: replaces the image's CMD (empty: the image's). location: a root file system directory to run
    instead of a container. pull: "missing", "never", "always" or "reuse" (the container `name` if it exists).
    registry, index, platform: for pulling `target` (None: the configuration's).
    volumes, novol, env, env_files, devices, publish: lists of the option values, in order.
    nvidia, infiniband, hostmpi: True (--nvidia), False (--no-nvidia) or None (the container record, then the
    configuration decide). tty: stdin is a terminal. ipc: "host", "private" or None (host). network: "host",
    "private" or None (private when a port is published as another, else host). detach: run in the
    background (-d), output to the container's log. dns, dns_search: the container's resolv.conf (lists).
    volumes_from: containers (CONTAINER[:ro|rw]) whose volumes are bound too. publish_all (-P): publish the
    image's EXPOSEd ports. dri: expose the host's DRI devices and driver directories. kernel: PRoot's kernel
    release. Every other field is the option of the same name.
    """

    __slots__ = ("target", "command", "location", "pull", "rm", "name",
                 "workdir", "user", "volumes", "novol", "env", "env_files", "hostauth", "containerauth",
                 "nosysdirs", "nometa", "hostenv", "bindhome", "entrypoint", "cpuset", "hostname", "devices",
                 "publish", "tty", "nvidia", "infiniband", "hostmpi", "ipc", "detach",
                 "network", "dri", "kernel", "dns", "dns_search", "volumes_from", "publish_all")
    _LISTS = ("command", "volumes", "novol", "env", "env_files", "devices", "publish", "dns", "dns_search",
              "volumes_from")
    _FLAGS = ("rm", "hostauth", "containerauth", "nosysdirs", "nometa", "hostenv", "bindhome", "tty", "detach",
              "dri", "publish_all")

    def __init__(self, **fields):
        unknown = set(fields) - set(self.__slots__)
        if unknown:
            raise TypeError(f"RunRequest: unknown fields {sorted(unknown)}")
        for key in self.__slots__:
            value = fields.get(key)
            if key in self._LISTS:
                value = list(value or ())
            elif key in self._FLAGS:
                value = bool(value)
            setattr(self, key, value)
        self.pull = self.pull or "missing"

    def __repr__(self):
        return "RunRequest(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"
