"""What this node offers to containers, for `udocker info`: architecture and kernel, the kernel features the
engines need (user namespaces, ptrace, seccomp), whether each engine mode can run, GPUs and Infiniband.

Every value is read from /proc, /sys or a cheap probe; a value that cannot be read is None, never a guess.
"""

import os
import shutil
import subprocess

MODES = ("P1", "P2", "F1", "F2", "F3", "F4", "R1", "R2", "R3")
# Yama ptrace_scope (Documentation/admin-guide/LSM/Yama.rst): PRoot traces its own children, which scopes 0
# and 1 allow; 2 needs CAP_SYS_PTRACE, 3 forbids ptrace altogether.
_PTRACE_SCOPES = {0: "classic", 1: "restricted (descendants only)", 2: "admin-only", 3: "no attach"}


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read().strip()
    except OSError:
        return None


def _int(path):
    text = _read(path)
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def architecture():
    from udocker.oci import platform

    return {"machine": os.uname().machine, "platform": str(platform.host())}


def kernel():
    uname = os.uname()
    return {"system": uname.sysname, "release": uname.release, "version": uname.version}


def user_namespaces(*, try_unshare=True):
    """max_user_namespaces, Debian's unprivileged_userns_clone (None where the kernel lacks it), and whether
    `unshare -U true` works for this user (None when unshare is not installed)."""
    works = None
    unshare = shutil.which("unshare")
    if try_unshare and unshare:
        try:
            works = subprocess.run([unshare, "-U", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=10, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            works = False
    maximum = _int("/proc/sys/user/max_user_namespaces")
    clone = _int("/proc/sys/kernel/unprivileged_userns_clone")
    available = works if works is not None else bool(maximum) and clone != 0
    return {"available": available, "unshare_works": works, "max_user_namespaces": maximum,
            "unprivileged_userns_clone": clone}


def ptrace():
    scope = _int("/proc/sys/kernel/yama/ptrace_scope")
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
    from udocker.engines import modes as engine_modes
    from udocker.errors import UdockerError

    found = {}
    for mode in MODES:
        try:
            engine_modes.get_engine(mode, config, layout).probe(mode)
            found[mode] = {"status": "yes", "reason": ""}
        except UdockerError as exc:
            found[mode] = {"status": "no", "reason": exc.message}
        except Exception as exc:  # a probe's bug must not hide the rest of the report
            found[mode] = {"status": "unknown", "reason": f"{type(exc).__name__}: {exc}"}
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
