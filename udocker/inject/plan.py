"""InjectionPlan: what an injector (nvidia, infiniband) found on the host and wants the container to see.

An injector's plan() reads the host and returns a plan; run.py applies it to the RunSpec with apply(), and
each engine turns the RunSpec into its own mechanism (docs/architecture.md, 'Injection'):
  PRoot         -b SOURCE:TARGET for every bind and device
  runc / crun   an OCI bind mount per bind, a device entry (or a bind, rootless) per device
  Fakechroot    no bind mounts: a bind whose target differs from its source becomes a symbolic link
                rootfs/TARGET -> SOURCE and SOURCE joins FAKECHROOT_EXCLUDE_PATH (engines/fakechroot.py);
                the dynamic loader opens files with raw system calls, so a library found through
                LD_LIBRARY_PATH=<rootfs>/.udocker/nvidia/lib64 follows the link to the host's file.
Nothing is ever copied into the container (`files` stays empty for both injectors): a copy would outlive
the node it came from, and a job landing on a node with another driver would load a stale driver.
Pure data and no I/O beyond what apply() does to the RunSpec in memory.
"""

from udocker.runspec import Mount


class InjectionPlan:
    """name: the injector ("nvidia", "infiniband").
    binds: list of runspec.Mount (host source -> container target), in order. Not marked read-only: the
        host's permissions already protect the driver (root's files; nobody's in an R-mode user namespace),
        and fakechroot, which cannot enforce read-only, refuses a read-only mount its user could write
        (root, or a driver installed in the user's own directory).
    devices: host device paths (character devices) the container needs.
    env: variables set in the container unless the container already sets them (image ENV, -e).
    env_override: variables set in the container even where it sets them itself: the GPU selection, whose
        names must match the devices the container was given (inject/gpus.py).
    env_append: {variable: [container directories]} appended, in order, after the container's own value
        (LD_LIBRARY_PATH, PATH): the image's own search directories keep precedence.
    env_prepend: the same, put before the container's own value (the host MPI replaces the image's).
    files: list of (host path, container path) to copy; unused (see the module docstring), kept so that an
        engine that can neither bind nor link could still be served.
    info: what was found, for logs and `udocker info` (driver version, gpus, capabilities, missing names).
    loader_cache: [(library name, container path, bits)] for the container's loader cache (runbuild.inject
        binds a copy of the image's cache with these added: inject/ldcache.py).
    """

    __slots__ = ("name", "binds", "devices", "env", "env_override", "env_append", "env_prepend", "files", "info",
                 "loader_cache")

    def __init__(self, name, *, binds=(), devices=(), env=None, env_append=None, env_prepend=None, files=(),
                 info=None, env_override=None):
        self.name = name
        self.binds = list(binds)
        self.devices = list(devices)
        self.env = dict(env or {})
        self.env_override = dict(env_override or {})
        self.env_append = {key: list(value) for key, value in (env_append or {}).items()}
        self.env_prepend = {key: list(value) for key, value in (env_prepend or {}).items()}
        self.files = list(files)
        self.info = dict(info or {})
        self.loader_cache = []

    def __repr__(self):
        return (f"InjectionPlan({self.name!r}, binds={len(self.binds)}, devices={self.devices!r}, "
                f"env={self.env!r}, env_append={self.env_append!r})")

    def empty(self):
        return not (self.binds or self.devices or self.env or self.env_override or self.env_append
                    or self.env_prepend or self.files)

    def bind(self, source, target):
        """Add a bind unless `target` is already bound."""
        if all(m.target != target for m in self.binds):
            self.binds.append(Mount(source, target))

    def apply(self, spec, *, default_path=""):
        """Add this plan to `spec` (a runspec.RunSpec) in place.

        A bind whose target the spec already covers with a bind of the same host path (e.g. /sys for
        /sys/class/infiniband) is skipped, and so is a bind to a target the user mounted himself (-v wins).
        Devices are added once. env values never override the container's, env_override values do;
        env_append directories go after the container's own value (`default_path` stands in for an unset
        PATH)."""
        for mount in self.binds:
            if not _covered(spec.mounts, mount):
                spec.mounts.append(mount)
        for device in self.devices:
            if device not in spec.devices:
                spec.devices.append(device)
        for key, value in self.env.items():
            spec.env.setdefault(key, value)
        spec.env.update(self.env_override)
        for key, directories in self.env_append.items():
            parts = _parts(spec.env, key, default_path)
            spec.env[key] = ":".join(parts + [d for d in directories if d not in parts])
        for key, directories in self.env_prepend.items():
            parts = _parts(spec.env, key, default_path)
            spec.env[key] = ":".join(directories + [p for p in parts if p not in directories])


def _parts(env, key, default_path):
    return [p for p in env.get(key, default_path if key == "PATH" else "").split(":") if p]


def _covered(mounts, mount):
    for other in mounts:
        if other.target == mount.target:
            return True
        if other.source == other.target and mount.source == mount.target \
                and mount.target.startswith(other.target.rstrip("/") + "/"):
            return True
    return False
