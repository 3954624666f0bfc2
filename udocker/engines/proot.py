"""PRoot engine: modes P1 (seccomp-accelerated tracing) and P2 (PROOT_NO_SECCOMP=1).

Works with the distribution's PRoot 5.1 (Debian's /usr/bin/proot) as well as a static build in the engines
folder. Unlike udocker 1.3 it passes `-k` (kernel release emulation) only for `run --kernel=RELEASE`, and only
once a probe has shown that this PRoot can: under Debian's PRoot 5.1, `-k` breaks glibc 2.36's loader
("cannot stat shared object"), so there the run is refused with one line instead.

Command line (P1; P2 adds PROOT_NO_SECCOMP=1 to the environment):
    proot {-0 | -i UID:GID} -r ROOTFS -w CWD [-b HOST:GUEST ...] PROGRAM ARGS...
- `-0` emulates root when the spec asks for uid 0, `-i` shows another identity; real ownership never changes.
- Signals: PRoot sets SIGTERM, SIGINT and SIGHUP to "ignore" (PRoot's tracee/event.c), so the Launch has
  signal_depth 1: udocker's supervisor (supervisor.py) sends them to PRoot's first tracee, the program, and kills
  whatever is left after the grace period `stop_timeout`, also when `udocker run` is killed. (The engine used
  to run under GNU `timeout -k 10 0`, which signalled its process group, but died with `udocker run`.)
- Read-only mounts: PRoot has no read-only binds. A read-only mount of a file the caller neither owns nor
  may write (/etc/resolv.conf for a normal user) is safe: the kernel refuses writes. Any other read-only
  mount (a directory, a file the caller owns, everything when the caller is root) raises EngineError naming
  an R mode, instead of silently giving write access; `-0` would even chmod the caller's own read-only
  files and directories to let "root" write them.
- Environment: exactly the container's env plus PROOT_TMP_DIR (a private writable directory made by
  prepare()) and PROOT_NO_SECCOMP for P2; nothing from the host leaks. PRoot itself reads it too, so a
  container LD_PRELOAD would also apply to the host's proot binary (as with udocker 1.3).
- argv[0] without a slash is looked up in the container's PATH (common.program_path: inside ROOTFS,
  following the container's own symlinks, and into the -b binds); PRoot would otherwise search the guest
  with its own rules and fail with "proot error: 'ls' not found".
"""

import os

from udocker.engines.base import Engine, Launch
from udocker.engines.common import program_path, ptrace_blocked, taskset_prefix, userns_unavailable
from udocker.errors import EngineError, EngineUnavailable
from udocker.modetable import engine_modes
from udocker.paths import Layout

_PROBES = {}  # (binary, mode) -> None or EngineUnavailable: probes run once per process
_KERNEL_PROBES = {}  # (binary, mode) -> None or EngineUnavailable: whether -k works (run --kernel)


def check_readonly(mount, engine):
    """Accept a read-only mount only where the kernel will enforce it: a single non-directory the caller
    neither owns (PRoot's root emulation chmods what the caller owns to let "root" write) nor may write.
    A directory cannot be checked cheaply (anything below it may be writable)."""
    try:
        info = os.stat(mount.source)
    except OSError:
        info = None
    if info is not None and not os.path.isdir(mount.source) and info.st_uid != os.geteuid() \
            and not os.access(mount.source, os.W_OK):
        return
    raise EngineError(f"{engine} cannot make a bind mount read-only: {mount.source}:{mount.target}",
                      hint="use an R mode (udocker setup --execmode=R1) or mount it read-write")


class ProotEngine(Engine):
    name = "proot"
    modes = engine_modes("proot")

    def binary(self):
        from udocker.engines.locate import find

        return find("proot", self.layout)

    def probe(self, mode, container=None):
        binary = self.binary()
        key = (binary, mode)
        if key not in _PROBES:
            _PROBES[key] = _probe(binary, mode)
        if _PROBES[key] is not None:
            raise _PROBES[key]

    def check_kernel(self, mode):
        """Raise EngineUnavailable when this PRoot cannot emulate a kernel release (-k) here (probed once per
        process, with the host's /bin/true)."""
        key = (self.binary(), mode)
        if key not in _KERNEL_PROBES:
            _KERNEL_PROBES[key] = _probe(key[0], mode, ["-k", "6.0.0"])
        if _KERNEL_PROBES[key] is not None:
            detail = _KERNEL_PROBES[key].message.replace("proot cannot run: ", "")
            raise EngineUnavailable(f"--kernel: {key[0]} cannot emulate a kernel release here (under -k: {detail})")

    def prepare(self, container, mode):
        os.makedirs(os.path.join(container.engine_dir(self.name), "tmp"), mode=0o700, exist_ok=True)

    def unprepare(self, container, mode):
        import shutil

        shutil.rmtree(container.engine_dir(self.name), ignore_errors=True)

    def command(self, spec, mode):
        if mode not in self.modes:
            raise EngineError(f"proot cannot run mode {mode}")
        argv = [self.binary()]
        argv += ["-0"] if spec.uid == 0 else ["-i", f"{spec.uid}:{spec.gid}"]
        argv += ["-r", spec.rootfs, "-w", spec.cwd or "/"] + (["-k", spec.kernel] if spec.kernel else [])
        protect = []
        for mount in list(spec.mounts) + [_device(path) for path in spec.devices]:
            if mount.readonly:
                try:
                    check_readonly(mount, "proot")
                except EngineError:
                    if not self._readonly_namespace_works():
                        raise
                    protect.append(mount.source)
            argv += ["-b", f"{mount.source}:{mount.target}"]
        argv.append(program_path(spec))
        argv += spec.argv[1:]
        env = dict(spec.env)
        env["PROOT_TMP_DIR"] = os.path.join(Layout.engine_dir(spec.container_dir, self.name), "tmp")
        if mode == "P2":
            env["PROOT_NO_SECCOMP"] = "1"
        else:
            env.pop("PROOT_NO_SECCOMP", None)
        return Launch(taskset_prefix(spec, self.layout) + self._readonly_wrapper(protect) + argv, env,
                      signal_depth=1)

    def _readonly_namespace_works(self):
        return userns_unavailable() is None

    def _readonly_wrapper(self, sources):
        """PRoot has no read-only binds: where user namespaces work, start it in a private mount namespace
        in which each read-only source is bind-mounted read-only onto itself, so the kernel refuses writes
        (the container sees the same files; the user namespace maps the caller to root, whom PRoot's -0 or
        -i then presents as the spec's identity)."""
        if not sources:
            return []
        import shlex

        from udocker.engines.locate import find

        mount = find("mount", self.layout)
        script = " && ".join(f"{mount} --bind {shlex.quote(s)} {shlex.quote(s)} && "
                             f"{mount} -o remount,bind,ro {shlex.quote(s)}" for s in sources)
        return [find("unshare", self.layout), "--user", "--map-root-user", "--mount", "/bin/sh", "-c",
                script + ' && exec "$@"', "sh"]


def _device(path):
    from udocker.runspec import Mount

    return Mount(path, path)


def _probe(binary, mode, options=()):
    """None if `binary` (with `options`) can trace a program here, else the EngineUnavailable saying why."""
    import subprocess

    reason = ptrace_blocked()
    if reason:
        return EngineUnavailable(f"proot cannot run: {reason}", hint="use an R mode or F1")
    true = next((p for p in ("/bin/true", "/usr/bin/true") if os.path.isfile(p)), None)
    if true is None:
        return None
    env = {"PATH": "/usr/bin:/bin", "PROOT_NO_SECCOMP": "1"} if mode == "P2" else {"PATH": "/usr/bin:/bin"}
    env["PROOT_TMP_DIR"] = "/tmp"
    try:
        done = subprocess.run([binary, *options, "-r", "/", "-w", "/", true], env=env, capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return EngineUnavailable(f"proot cannot run: {binary}: {error}")
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = lines[0] if lines else f"exit status {done.returncode}"
        return EngineUnavailable(f"proot cannot run: {detail}",
                                 hint="ptrace may be blocked (seccomp or a security module)")
    return None
