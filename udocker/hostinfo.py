"""What this node offers to containers, for `udocker info`: architecture and kernel, the kernel features the
engines need (user namespaces, ptrace, seccomp), whether each engine mode can run, GPUs and Infiniband.

Every value is read from /proc, /sys or a cheap probe; a value that cannot be read is None, never a guess.
"""

import os
import shutil
import subprocess

from udocker.engines import common

# Yama ptrace_scope (Documentation/admin-guide/LSM/Yama.rst): PRoot traces its own children, which scopes 0
# and 1 allow; 2 needs CAP_SYS_PTRACE, 3 forbids ptrace altogether.
_PTRACE_SCOPES = {0: "classic", 1: "restricted (descendants only)", 2: "admin-only", 3: "no attach"}


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read().strip()
    except OSError:
        return None


def architecture():
    from udocker.oci import platform

    return {"machine": os.uname().machine, "platform": str(platform.host())}


def kernel():
    uname = os.uname()
    return {"system": uname.sysname, "release": uname.release, "version": uname.version}


def user_namespaces():
    """Whether this user can create a user namespace (the probe the R modes use: engines/common.py), whether
    `unshare -U true` works (None when unshare is not installed), max_user_namespaces and Debian's
    unprivileged_userns_clone (None where the kernel lacks it)."""
    return {"available": common.userns_unavailable() is None, "unshare_works": _unshare_works(),
            "max_user_namespaces": common.read_int(common.MAX_USERNS),
            "unprivileged_userns_clone": common.read_int(common.USERNS_CLONE)}


def _unshare_works():
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    try:
        return subprocess.run([unshare, "-U", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ptrace():
    scope = common.read_int(common.PTRACE_SCOPE)
    return {"available": scope is None or scope <= 1, "yama_ptrace_scope": scope,
            "meaning": _PTRACE_SCOPES.get(scope, "no Yama: classic") if scope is not None else "no Yama: classic"}


def seccomp():
    """Kernel support (the Seccomp field exists in /proc/self/status) and this process's own mode: 0 none,
    1 strict, 2 filtered (a filter a container runtime or batch system put on us)."""
    fields = {}
    for line in (_read("/proc/self/status") or "").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    mode = int(fields["Seccomp"]) if fields.get("Seccomp", "").isdigit() else None
    filters = int(fields["Seccomp_filters"]) if fields.get("Seccomp_filters", "").isdigit() else None
    actions = _read("/proc/sys/kernel/seccomp/actions_avail")
    return {"available": mode is not None, "mode": mode, "filters": filters,
            "actions": actions.split() if actions else []}


def modes(config, layout):
    """{mode: {"status": "yes" | "no" | "unknown", "reason": text}} from each engine's probe()."""
    from udocker.engines import report
    from udocker.errors import UdockerError

    found = {}
    for mode, error in report.probe_modes(config, layout).items():
        if error is None:
            found[mode] = {"status": "yes", "reason": ""}
        elif isinstance(error, UdockerError):
            found[mode] = {"status": "no", "reason": error.message}
        else:  # a probe's bug must not hide the rest of the report
            found[mode] = {"status": "unknown", "reason": f"{type(error).__name__}: {error}"}
    return found


def gpus(root="/"):
    """{driver, cuda, devices: [{index, name, uuid, bus_id, memory_total}]}: NVML on the real host; the
    driver's /proc files when NVML cannot be used (no CUDA version then)."""
    from udocker.inject import nvidia

    if not nvidia.driver_present(root):
        return {"driver": None, "cuda": None, "devices": []}
    report = nvidia.nvml_report() if root == "/" else None
    if report is None:
        report = {"driver": nvidia.driver_version(root), "cuda": None, "devices": nvidia.gpus_from_proc(root)}
    else:
        report = {"driver": report["driver"], "cuda": report["cuda"], "devices": report["gpus"]}
    return report


def infiniband(root="/"):
    """{devices: [names], ports: [{device, port, state, rate, link_layer}]} from sysfs."""
    from udocker.inject import infiniband as ib

    ports = ib.ports(root)
    top = os.path.join(root, "sys/class/infiniband")
    names = sorted(os.listdir(top)) if os.path.isdir(top) else []
    return {"devices": names, "ports": ports, "device_nodes": [os.path.basename(p) for p in ib.devices(root)]}


def collect(config, layout, *, root="/"):
    """The whole report as a JSON-ready dict."""
    return {"architecture": architecture(), "kernel": kernel(), "user_namespaces": user_namespaces(),
            "ptrace": ptrace(), "seccomp": seccomp(), "engines": engines(config, layout),
            "modes": modes(config, layout), "gpu": gpus(root), "infiniband": infiniband(root)}


def engines(config, layout):
    """[{name, version, origin, path, problem}]: where each engine is found and where it came from."""
    from udocker.engines import report

    return report.engine_paths(report.find_engines(config, layout))
