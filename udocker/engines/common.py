"""What more than one engine needs, written once: the container's default PATH and the program lookup in it,
CPU pinning, and the host probes for user namespaces and ptrace (`udocker info` reports the same facts
through hostinfo.py). On the `run` path: only os, base and errors are imported up front.
"""

import os
import stat

from udocker.errors import EngineError
from udocker.rootpath import resolve_stat

# PATH for a container whose image sets none (Docker's default), and for the host programs engines start
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USERNS_CLONE = "/proc/sys/kernel/unprivileged_userns_clone"  # Debian's switch; absent from other kernels
MAX_USERNS = "/proc/sys/user/max_user_namespaces"
PTRACE_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"  # Yama (Documentation/admin-guide/LSM/Yama.rst)
_USERNS = []  # [reason or None] once known


def lookup(rootfs, name, env, mounts=()):
    """execvp's search of the container's PATH for `name` (a bare name): (the container path of the first
    executable regular file, or None; whether a regular file of that name without execute permission was
    passed over). PATH is env's, DEFAULT_PATH when unset or empty; entries that are not absolute are skipped;
    the container's symbolic links are followed inside `rootfs` and into `mounts`."""
    denied, seen = False, {}  # /usr is lstat'ed once for /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin
    for directory in (env.get("PATH") or DEFAULT_PATH).split(":"):
        if not directory.startswith("/"):
            continue
        candidate = directory.rstrip("/") + "/" + name
        regular, executable = program_file(resolve_stat(rootfs, candidate, mounts, cache=seen)[1])
        if regular:
            if executable:
                return candidate, denied
            denied = True
    return None, denied


def program_file(info):
    """(a regular file, executable by this process) of a resolved program, from the lstat that resolving it
    made (rootpath.resolve_stat; None: missing): os.path.isfile and os.access would be two calls more, two
    round trips on a repository on NFS or Lustre. Executable as access(X_OK) answers from the mode bits (no
    ACLs): the owner, group or other bits as they apply to this process, any execute bit for root."""
    if info is None or not stat.S_ISREG(info.st_mode):
        return False, False
    uid = os.geteuid()
    if uid == 0:
        bits = 0o111
    elif info.st_uid == uid:
        bits = 0o100
    elif info.st_gid == os.getegid() or info.st_gid in os.getgroups():
        bits = 0o010
    else:
        bits = 0o001
    return True, bool(info.st_mode & bits)


def search_path(rootfs, name, env, mounts=()):
    """lookup()'s container path, or None."""
    return lookup(rootfs, name, env, mounts)[0]


def find_program(rootfs, name, env, mounts=()):
    """argv[0] as a container path: unchanged when it holds a slash, else search_path's answer (binds count).
    Raises EngineError (the run command maps it to 127)."""
    if "/" in name:
        return name
    found = search_path(rootfs, name, env, mounts)
    if found is None:
        raise EngineError(f"executable file not found in the container's PATH: {name}",
                          hint="give an absolute path or set PATH with -e")
    return found


def program_path(spec):
    """find_program's answer for the spec's argv[0], or the one `run` found already (RunSpec.program)."""
    return spec.program or find_program(spec.rootfs, spec.argv[0], spec.env, spec.mounts)


def taskset_prefix(spec, layout):
    """`taskset -c CPUSET` when the spec pins CPUs: the affinity is inherited by the engine's children."""
    if not spec.cpuset:
        return []
    from udocker.engines.locate import find

    return [find("taskset", layout), "-c", spec.cpuset]


def read_int(path):
    """The integer in a /proc or /sys file, or None when it cannot be read or holds something else."""
    try:
        with open(path, "rb") as stream:  # bytes: a text stream of "ascii" loads encodings.ascii (run's path)
            text = stream.read().decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def ptrace_blocked():
    """Why ptrace cannot work here, or None (Yama ptrace_scope 3 forbids it to everyone; scope 2, admin-only,
    shows up when PRoot's own probe fails)."""
    if read_int(PTRACE_SCOPE) == 3:
        return f"ptrace is disabled ({PTRACE_SCOPE} is 3)"
    return None


def userns_unavailable():
    """Why an unprivileged process cannot create a user namespace here, or None. Reads the sysctls that
    disable them, then tries unshare(CLONE_NEWUSER) in a forked child. Cached per process."""
    if not _USERNS:
        _USERNS.append(_userns_reason())
    return _USERNS[0]


def userns_disabled():
    """Why the sysctls forbid this process a user namespace, or None: what userns_unavailable() reads before
    it tries (two small files, no child process)."""
    if read_int(USERNS_CLONE) == 0 and os.geteuid() != 0:
        return f"unprivileged user namespaces are disabled ({USERNS_CLONE} is 0)"
    if read_int(MAX_USERNS) == 0:
        return f"user namespaces are disabled ({MAX_USERNS} is 0)"
    return None


def _userns_reason():
    disabled = userns_disabled()
    if disabled:
        return disabled
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:
        code = 0 if libc.unshare(0x10000000) == 0 else (ctypes.get_errno() or 1)  # CLONE_NEWUSER
        os._exit(min(code, 255))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    if code != 0:
        return f"cannot create a user namespace: {os.strerror(code)}"
    return None
