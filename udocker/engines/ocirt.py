"""Rootless OCI runtimes (runc, crun): modes R1, R2, R3. The runtime-specific parts live in runc.py and crun.py.

R1  `RUNTIME [GLOBAL...] --root STATE run --bundle BUNDLE ID`, where BUNDLE/config.json (OCI runtime-spec
    1.0) asks for new user, mount and pid namespaces (uts only when a hostname is set; network only for a
    private network, netstack.py: by default the container shares the host's network). The host's IPC namespace
    and /dev/shm are shared too (MPI's and NCCL's shared memory, PyTorch's DataLoader, between the ranks of
    a job), unless `run --ipc=private` asks for an ipc namespace of its own with a 64 MB /dev/shm. A GPU run
    also gets what P modes see through the host's /dev and /proc (gpu_extras). The caller's uid and gid are
    mapped to spec.uid and spec.gid (one id each: an unprivileged process may map only itself without
    newuidmap). No cgroups: `linux.cgroupsPath` and `linux.resources` are left out, so rootless runc skips
    them on a cgroup v1/v2 hybrid host; crun is started with --cgroup-manager=disabled.
R2  R1 with the container process being PRoot: uid 0 is mapped to the caller and the program runs under
    `proot -0` (or `-i UID:GID`) with `-r /`, which emulates the several owners package managers need
    (a single-id user namespace refuses chown to any other id with EINVAL). The host's PRoot comes in
    through a read-only bind of a "kit" directory made by prepare() at /.udocker/kit (not /.udocker, which
    would hide the NVIDIA driver's binds there): the binary and, when it is dynamically linked (Debian's needs
    libtalloc and glibc), its ELF interpreter and libraries; it is then started as
    `/.udocker/kit/ld.so --library-path /.udocker/kit/lib /.udocker/kit/proot ...` so that it never depends on
    the container's own libc (busybox, musl, an older glibc). PROOT_TMP_DIR is a tmpfs at /.udocker/kit/tmp.
    The container's first process is the host's GNU `timeout -k 10 0` (same interpreter, carried in the kit):
    PRoot ignores SIGTERM, SIGINT and SIGHUP, and timeout passes what the runtime forwards to its process
    group; udocker's supervisor does not rely on it: its Launch has signal_depth 3 (runtime -> timeout ->
    PRoot -> program), so the program alone gets the signal, as in P modes. Process uid 0 has no capabilities
    in R2/R3.
R3  R2 with PROOT_NO_SECCOMP=1.

Every run gets its own runtime id (`<container id>-<pid>-<random>`), so that any number of runs of one
container may overlap. command() writes the bundle (the one file an OCI runtime cannot take on its command
line: `runc run` reads only BUNDLE/config.json) under <container>/engine/<runtime>/bundles/<crc32 of it>/,
shared by every run with the same configuration. `run` stays in the foreground: the runtime forwards
signals to the container's first process, exits with its status (udocker 1.3 lost it by detaching) and
deletes its container, so there is nothing to clean up. udocker's supervisor (supervisor.py) signals the
runtime and, when `udocker run` is killed or the grace period `stop_timeout` ends, kills the runtime and
the container's processes (all below it on the host): runc is not the container's init, and its first
process would outlive a runtime killed with SIGKILL.
"""

import os

from udocker import fastjson
from udocker.engines.base import Engine, Launch
from udocker.engines.common import DEFAULT_PATH, program_path, taskset_prefix, userns_disabled, userns_unavailable
from udocker.engines.idmap import id_mappings, mapping_problem
from udocker.errors import EngineError, EngineUnavailable
from udocker.modetable import engine_modes
from udocker.paths import Layout

KIT = "/.udocker/kit"  # where R2/R3 see the PRoot kit
KILL_AFTER = "10"  # R2/R3's timeout in the container: seconds between a forwarded signal and SIGKILL
_PROBES = {}  # (runtime binary, mode, engines folder for R2/R3) -> None or EngineUnavailable
_SYSTEM_MOUNTS = ("/proc", "/sys", "/dev")  # provided by the runtime itself: host binds of them are dropped
_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
         "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
         "CAP_AUDIT_WRITE", "CAP_SYS_PTRACE"]  # Docker's default set, plus ptrace for PRoot in R2/R3
_MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
           "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_mounts(ipc="private"):
    """The kernel file systems every container gets (runtime-spec config-linux.md defaults for rootless
    containers: sysfs cannot be mounted without a network namespace, so the host's is bound read-only).
    ipc "host": the host's /dev/shm (and /dev/mqueue, where it has one) bound, as no mqueue file system can
    be mounted outside an ipc namespace of one's own; "private": a 64 MB tmpfs and a new mqueue."""
    shared = ipc == "host"
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
         "options": ["rbind", "nosuid", "nodev", "noexec"]} if shared else
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]
    if not shared:
        mounts.append({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                       "options": ["nosuid", "noexec", "nodev"]})
    elif os.path.isdir("/dev/mqueue"):
        mounts.append({"destination": "/dev/mqueue", "type": "bind", "source": "/dev/mqueue",
                       "options": ["rbind", "nosuid", "noexec", "nodev"]})
    mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                   "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    return mounts


class GpuExtras:
    """devices: host device paths; binds: [(host path, container path)], read-only; masked: container paths."""

    __slots__ = ("devices", "binds", "masked")

    def __init__(self):
        self.devices, self.binds, self.masked = [], [], []


def gpu_extras(devices, root="/"):
    """For a run given the NVIDIA driver (/dev/nvidiactl among `devices`), what P modes see through the host's
    /dev and /proc and an R mode's own /dev and /proc lack, where the host (the tree at `root`) has it:
    /dev/gdrdrv (GDRCopy), the IMEX channels /dev/nvidia-caps-imex-channels/* (the host's permissions decide
    who may use them, as in P modes), the running driver's GSP firmware /lib/firmware/nvidia/<version>, and
    maskedPaths hiding /proc/driver/nvidia/gpus/<bus id> of the GPUs not chosen (a runtime refuses other
    mounts inside /proc) and, in /proc/driver/nvidia/capabilities, their gpu<minor> directories and the MIG
    devices (gi<G>, gi<G>/ci<C>) whose nvidia-caps nodes the run was not given."""
    extra = GpuExtras()
    names = [os.path.basename(d) for d in devices]
    if "nvidiactl" not in names:
        return extra
    from udocker.inject import gpus, nvidia  # a GPU run: the injector has been loaded already

    top = root.rstrip("/")
    channels = top + "/dev/nvidia-caps-imex-channels"
    extra.devices = [p for p in [top + "/dev/gdrdrv"] + [os.path.join(channels, n) for n in _listdir(channels)]
                     if os.path.exists(p)]
    version = nvidia.driver_version(root)
    for firmware in ("/lib/firmware/nvidia", "/usr/lib/firmware/nvidia"):
        if version and os.path.isdir(f"{top}{firmware}/{version}"):
            extra.binds.append((f"{top}{firmware}/{version}", f"{firmware}/{version}"))
            break
    chosen = {int(n[6:]) for n in names if n.startswith("nvidia") and n[6:].isdigit()}
    found = nvidia.gpus_from_proc(root)
    extra.masked = [f"/proc/driver/nvidia/gpus/{gpu['bus_id']}" for gpu in found if gpu["minor"] not in chosen]
    caps = {int(n[10:]) for n in names if n[:10] == "nvidia-cap" and n[10:].isdigit()}
    extra.masked += gpus.masked_capabilities(root, found, chosen, caps)
    return extra



def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def bind(source, target, *, readonly=False):
    return {"destination": target, "type": "bind", "source": source,
            "options": ["rbind", "ro"] if readonly else ["rbind"]}


class OciEngine(Engine):
    """Shared by RuncEngine and CrunEngine: they set `name` (also the executable) and may add global options."""

    modes = engine_modes("oci")
    global_options = ()

    def binary(self):
        from udocker.engines.locate import find

        return find(self.name, self.layout)

    def refusal(self):
        """Why this runtime refuses this host although user namespaces work, or None (crun: hybrid cgroups)."""
        return None

    def probe(self, mode, container=None):
        if mode not in self.modes:
            raise EngineUnavailable(f"{self.name} cannot run mode {mode}")
        binary = self.binary()
        key = (binary, mode, None if mode == "R1" else self.layout.engines)  # R2/R3 probe the proot they carry
        if key not in _PROBES:
            _PROBES[key] = self._probe(binary, mode)
        if _PROBES[key] is not None:
            raise _PROBES[key]

    def _probe(self, binary, mode):
        """The runtime runs `true` (_try_runtime); the forked unshare test of userns_unavailable() (ctypes and
        a fork, ~10-60 ms of a first run) only when it fails, to name the reason where the sysctls do not."""
        reason = userns_disabled() or self.refusal()
        if reason:
            return self._unavailable(reason)
        if mode != "R1":
            try:
                kit_sources(self.layout)
            except EngineUnavailable as error:
                return error
            problem = mapping_problem()
            if problem:
                return EngineUnavailable(f"{self.name} cannot run {mode}: {problem}", hint="use R1")
        failure = _try_runtime(binary, self.global_options)
        if failure is not None:
            reason = userns_unavailable()
            return self._unavailable(reason) if reason else failure
        return None

    def _unavailable(self, reason):
        return EngineUnavailable(f"{self.name} cannot run: {reason}", hint="use P1 (proot) or F1 (fakechroot)")

    def prepare(self, container, mode):
        directory = container.engine_dir(self.name)
        for sub in ("state", "bundles"):
            os.makedirs(os.path.join(directory, sub), mode=0o700, exist_ok=True)
        if mode in ("R2", "R3"):
            make_kit(os.path.join(directory, "kit"), self.layout)
            os.makedirs(container.rootfs + KIT, exist_ok=True)

    def unprepare(self, container, mode):
        import shutil

        shutil.rmtree(container.engine_dir(self.name), ignore_errors=True)
        try:
            os.rmdir(container.rootfs + KIT)
        except OSError:
            pass

    def command(self, spec, mode):
        if mode not in self.modes:
            raise EngineError(f"{self.name} cannot run mode {mode}")
        directory = Layout.engine_dir(spec.container_dir, self.name)
        run_id = f"{spec.container_id or 'udocker'}-{os.getpid()}-{os.urandom(4).hex()}"
        config = self.config_json(spec, mode, kit=os.path.join(directory, "kit"))
        bundle = write_bundle(os.path.join(directory, "bundles"), config)
        state = os.path.join(directory, "state")
        argv = [self.binary(), *self.global_options, "--root", state, "run", "--bundle", bundle, run_id]
        # No cleanup: `run` in the foreground deletes its container when the program ends and forwards
        # signals to it, and the bundle is shared by every run with this configuration (a cleanup process
        # costs ~5 ms per run). A runtime killed with SIGKILL leaves its state directory behind: the
        # supervisor removes it.
        # R2/R3: signals go to the program below [timeout ->] PRoot, as in P modes (supervisor.py)
        depth = 0 if mode == "R1" else 2 + (KIT + "/timeout" in config["process"]["args"])
        return Launch(taskset_prefix(spec, self.layout) + argv, {"PATH": DEFAULT_PATH}, signal_depth=depth,
                      leftover=os.path.join(state, run_id), subreaper=spec.network == "private")

    def config_json(self, spec, mode, *, kit):
        """The OCI runtime-spec config.json for one run, as a dict."""
        proot = mode in ("R2", "R3")
        uid, gid = (0, 0) if proot else (spec.uid, spec.gid)
        process = {"terminal": bool(spec.tty), "user": {"uid": uid, "gid": gid}, "args": self._args(spec, mode),
                   "env": [f"{k}={v}" for k, v in self._env(spec, mode).items()], "cwd": spec.cwd or "/",
                   "capabilities": _capabilities(uid, proot=proot), "rlimits": _rlimits(), "noNewPrivileges": True}
        gpu = gpu_extras(spec.devices)
        mounts = default_mounts(spec.ipc)
        mounts += [bind(d, d) for d in spec.devices + [d for d in gpu.devices if d not in spec.devices]]
        mounts += [bind(m.source, m.target, readonly=m.readonly) for m in spec.mounts
                   if not (m.source == m.target and m.target.rstrip("/") in _SYSTEM_MOUNTS)]
        mounts += [bind(source, target, readonly=True) for source, target in gpu.binds
                   if all(m.target != target for m in spec.mounts)]
        if proot:
            mounts += [bind(kit, KIT, readonly=True),
                       {"destination": KIT + "/tmp", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "nodev", "mode=700"]}]
        namespaces = [{"type": t} for t in ("pid", "ipc", "mount", "user") if t != "ipc" or spec.ipc == "private"]
        namespaces += [{"type": "uts"}] * bool(spec.hostname) + [{"type": "network"}] * (spec.network == "private")
        linux = {"uidMappings": id_mappings(uid, "uid", proot=proot),
                 "gidMappings": id_mappings(gid, "gid", proot=proot),
                 "namespaces": namespaces, "maskedPaths": _MASKED + gpu.masked, "readonlyPaths": _READONLY}
        config = {"ociVersion": "1.0.2", "process": process, "root": {"path": spec.rootfs, "readonly": False},
                  "mounts": mounts, "linux": linux}
        if spec.hostname:
            config["hostname"] = spec.hostname
        if spec.network == "private":  # runc and crun alike: nothing of the private network is runtime-specific
            from udocker.engines import netstack

            config["hooks"] = netstack.oci_hooks(self.layout, spec.ports)
            netstack.private_resolv(mounts, Layout.engine_dir(spec.container_dir, self.name))
        return config

    def _args(self, spec, mode):
        try:
            program = program_path(spec)
        except EngineError:
            if mode != "R1":
                raise
            program = spec.argv[0]  # maybe inside a bind mount: let the runtime search
        args = [program] + spec.argv[1:]
        if mode == "R1":
            return args
        identity = ["-0"] if spec.uid == 0 else ["-i", f"{spec.uid}:{spec.gid}"]
        kit = os.path.join(Layout.engine_dir(spec.container_dir, self.name), "kit")
        loader = [KIT + "/ld.so", "--library-path", KIT + "/lib"] if os.path.exists(kit + "/ld.so") else []
        proot = loader + [KIT + "/proot", *identity, "-r", "/", "-w", spec.cwd or "/"]
        if os.path.exists(kit + "/timeout"):
            proot = loader + [KIT + "/timeout", "-k", KILL_AFTER, "0"] + proot
        return proot + args

    def _env(self, spec, mode):
        env = dict(spec.env)
        if mode in ("R2", "R3"):
            env["PROOT_TMP_DIR"] = KIT + "/tmp"
            if mode == "R3":
                env["PROOT_NO_SECCOMP"] = "1"
            else:
                env.pop("PROOT_NO_SECCOMP", None)
        return env


def _capabilities(uid, *, proot):
    """Docker's rule: the default set for root; only the bounding set for other users. Under PRoot (R2, R3)
    none either: without CAP_CHOWN, CAP_SETUID... the kernel answers EPERM, which `proot -0` turns into
    success, and every file stays owned by the caller."""
    if uid == 0 and not proot:
        return {key: list(_CAPS) for key in ("bounding", "effective", "permitted", "inheritable")}
    return {"bounding": list(_CAPS)}


def _rlimits():
    """The caller's open-files limit, stated explicitly: the Go runtime of runc raises its own soft limit to
    the hard one, and without this the container would inherit that."""
    soft, hard = _nofile()
    return [{"type": "RLIMIT_NOFILE", "soft": soft, "hard": hard}]


def _nofile():
    """getrlimit(RLIMIT_NOFILE) as the resource module answers it (-1: unlimited), read from /proc/self/limits
    where it can be: the resource module is a shared library to load on every R-mode run (~0.35 ms)."""
    try:
        with open("/proc/self/limits", "rb") as stream:
            for line in stream.read().decode("ascii", "replace").splitlines():
                if line.startswith("Max open files "):
                    soft, hard = line[len("Max open files "):].split()[:2]
                    return tuple(-1 if value == "unlimited" else int(value) for value in (soft, hard))
    except (OSError, ValueError):
        pass
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)


def write_bundle(bundles, config):
    """The bundle directory bundles/<crc32>-<length>/ of this config.json, written once and atomically: runs
    with the same configuration (concurrent ones included) share it. A different configuration under the
    same name (a crc32 collision) gets a bundle of its own. Returns its path. (zlib, not hashlib: this is
    on the `run` path, and hashlib costs ~2.5 ms to import.)"""
    import zlib

    data = fastjson.dumps(config, sort_keys=True).encode()  # as json.dumps: its bytes name the bundle
    bundle = os.path.join(bundles, f"{zlib.crc32(data):08x}-{len(data)}")
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as stream:
            if stream.read() == data:
                return bundle
        bundle = f"{bundle}-{os.getpid()}-{os.urandom(4).hex()}"
        path = os.path.join(bundle, "config.json")
    except FileNotFoundError:
        pass
    os.makedirs(bundle, mode=0o700, exist_ok=True)
    from udocker import fs  # only for a new bundle: a run whose bundle exists never pays its imports (~13 ms)

    with fs.atomic_output(path, mode=0o600) as stream:
        stream.write(data)
    return bundle


def _try_runtime(binary, options):
    """Run `true` from the host's own (read-only) root in a minimal container: catches what the sysctls do
    not show (an AppArmor or SELinux policy, a seccomp filter around the runtime, an unusable state dir)."""
    import shutil
    import subprocess
    import tempfile

    true = next((p for p in ("/bin/true", "/usr/bin/true") if os.path.isfile(p)), None)
    if true is None:
        return None
    top = tempfile.mkdtemp(prefix="udocker-probe-")
    try:
        rootfs = os.path.join(top, "rootfs")
        os.mkdir(rootfs)
        mounts = default_mounts()[:2]  # /proc, and a tmpfs /dev for the device nodes
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "usr"):  # the host's programs, read-only
            if os.path.islink("/" + name):
                os.symlink(os.readlink("/" + name), os.path.join(rootfs, name))
            elif os.path.isdir("/" + name):
                mounts.append(bind("/" + name, "/" + name, readonly=True))
        config = {"ociVersion": "1.0.2",
                  "process": {"user": {"uid": 0, "gid": 0}, "args": [true], "cwd": "/", "env": ["PATH=/bin"]},
                  "root": {"path": rootfs, "readonly": False}, "mounts": mounts,
                  "linux": {"uidMappings": [{"containerID": 0, "hostID": os.geteuid(), "size": 1}],
                            "gidMappings": [{"containerID": 0, "hostID": os.getegid(), "size": 1}],
                            "namespaces": [{"type": t} for t in ("pid", "mount", "user")]}}
        bundle = write_bundle(os.path.join(top, "bundles"), config)
        argv = [binary, *options, "--root", os.path.join(top, "state"), "run", "--bundle", bundle,
                f"udocker-probe-{os.getpid()}"]
        done = subprocess.run(argv, env={"PATH": DEFAULT_PATH}, capture_output=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return EngineUnavailable(f"{os.path.basename(binary)} cannot run: {error}")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        return EngineUnavailable(f"{os.path.basename(binary)} cannot run a rootless container: {detail}")
    return None


def kit_sources(layout):
    """(proot binary, timeout binary or None, ELF interpreter or None, [(name, library path)]) of what R2/R3
    carry into the container. timeout (GNU coreutils) becomes the container's first process, because PRoot
    ignores SIGTERM, SIGINT and SIGHUP and the runtime forwards signals to the first process only."""
    from udocker.engines.locate import find

    binary = os.path.realpath(find("proot", layout))
    timeout = next((p for p in ("/usr/bin/timeout", "/bin/timeout") if os.path.isfile(p)), None)
    interpreter = elf_interpreter(binary)
    if interpreter is None:
        return binary, None, None, []  # a static PRoot: no interpreter to carry for timeout either
    libraries = dict(_libraries(interpreter, binary))
    if timeout and elf_interpreter(timeout) == interpreter:
        libraries.update(_libraries(interpreter, timeout))
    else:
        timeout = None
    return binary, timeout, interpreter, sorted(libraries.items())


def _libraries(interpreter, binary):
    import subprocess

    try:
        listing = subprocess.run([interpreter, "--list", binary], capture_output=True, text=True, timeout=30,
                                 env={"PATH": DEFAULT_PATH}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EngineUnavailable(f"cannot list the libraries of {binary}: {error}") from None
    if listing.returncode != 0:
        raise EngineUnavailable(f"cannot list the libraries of {binary}: {listing.stderr.strip()}")
    libraries = []
    for line in listing.stdout.splitlines():
        # "libtalloc.so.2 => /lib/x86_64-linux-gnu/libtalloc.so.2 (0x...)"; the vdso and the loader have no "=>"
        name, arrow, rest = line.strip().partition(" => ")
        if arrow and rest.startswith("/"):
            libraries.append((name, rest.split(" (")[0]))
        elif arrow:
            raise EngineUnavailable(f"{binary} needs {name}, which is missing: {rest}")
    return libraries


def make_kit(directory, layout):
    """Copy PRoot (and, for a dynamic one, timeout, their interpreter as ld.so and their libraries under lib/)
    into `directory`. Copies, not hard links: the sources are usually root-owned files on another file system."""
    import shutil

    binary, timeout, interpreter, libraries = kit_sources(layout)
    scratch = directory + ".new"
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(os.path.join(scratch, "lib"))
    os.makedirs(os.path.join(scratch, "tmp"))
    shutil.copy2(binary, os.path.join(scratch, "proot"))
    if interpreter:
        shutil.copy2(os.path.realpath(interpreter), os.path.join(scratch, "ld.so"))
        for name, path in libraries:
            shutil.copy2(os.path.realpath(path), os.path.join(scratch, "lib", name))
    if timeout:
        shutil.copy2(timeout, os.path.join(scratch, "timeout"))
    shutil.rmtree(directory, ignore_errors=True)
    os.rename(scratch, directory)


def elf_interpreter(path):
    """The PT_INTERP path of an ELF executable, or None for a static one. Little- or big-endian, 32 or 64 bit."""
    import struct

    with open(path, "rb") as stream:
        header = stream.read(64)
        if header[:4] != b"\x7fELF":
            raise EngineUnavailable(f"{path} is not an ELF executable")
        wide, order = header[4] == 2, "<" if header[5] == 1 else ">"
        if wide:
            phoff, = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
        else:
            phoff, = struct.unpack_from(order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
        for index in range(phnum):
            stream.seek(phoff + index * phentsize)
            entry = stream.read(phentsize)
            kind, = struct.unpack_from(order + "I", entry, 0)
            if kind != 3:  # PT_INTERP
                continue
            offset, size = struct.unpack_from(order + ("QxxxxxxxxxxxxxxxxQ" if wide else "IxxxxxxxxI"), entry,
                                              8 if wide else 4)
            stream.seek(offset)
            return stream.read(size).rstrip(b"\0").decode()
    return None
