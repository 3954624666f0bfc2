"""RunSpec: everything an engine needs to start one program in one container. Pure data, no I/O.

Built by run.py from the image config, the container record, the command line and the configuration;
consumed by engines (engines/base.py). Kept free of dataclasses/typing imports: it is on the `run` path,
where every millisecond of start-up counts (docs/architecture.md, 'Start-up of run').
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
    ports: list of (host_port, container_port) pairs; only engines with their own network honour them.
    """

    __slots__ = ("rootfs", "argv", "env", "cwd", "uid", "gid", "mounts", "devices", "hostname", "tty",
                 "container_dir", "container_id", "cpuset", "ports")

    def __init__(self, *, rootfs, argv, env, cwd="/", uid=0, gid=0, mounts=(), devices=(), hostname=None,
                 tty=False, container_dir="", container_id="", cpuset=None, ports=()):
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
