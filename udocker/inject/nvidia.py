"""The host's NVIDIA driver, found at run time on the node that runs the job, made visible in a container.

plan() reads a host tree (`root`, "/" on a real node; tests build one in a temporary directory):
  driver version  /proc/driver/nvidia/version, else the version in libcuda.so.<version>'s name
  GPUs            /proc/driver/nvidia/gpus/<bus id>/information (model, UUID, device minor), ordered by bus
                  id as NVML numbers them; NVML (pynvml) only on the real host when /proc says nothing
  libraries       per capability from data/nvidia.json, found like the loader would (inject/libraries.py),
                  64-bit only unless compat32 is asked for; names of another driver version are left out
  binaries        nvidia-smi and friends, from the usual bin directories, bound into /.udocker/nvidia/bin,
                  which goes first in PATH: the driver's programs must match the kernel module, so they win
                  over an image's own (a stub, or another driver's), as the references' binds into /usr/bin
                  do, without writing into the image's /usr/bin (a bind target that runc would create there)
  files, ipc      ICD / EGL vendor files, the persistenced socket, the MPS pipe directory
  devices         /dev/nvidiactl, /dev/nvidia-uvm*, /dev/nvidia-caps/*, and /dev/nvidia<minor> per GPU chosen

Where the driver goes in the container, and why it does not hide the container's own libraries: every
library is bound, under the names the host has for it (libcuda.so.1, libcuda.so.550.54.15...), into a
directory of its own, /.udocker/nvidia/lib64, that is appended to LD_LIBRARY_PATH after the image's own
entries. The NVIDIA toolkit instead copies the names into the container's /usr/lib and runs ldconfig as
root; P and F modes cannot. The directory holds nothing but driver libraries, which must come from the
host anyway (they must match the kernel module), so it can only ever supply those; and the image's own
LD_LIBRARY_PATH directories still come first. An image's CUDA forward-compatibility package (cuda-compat,
/usr/local/cuda/compat) is put first only when its driver branch is newer than the host's, and taken out
of LD_LIBRARY_PATH otherwise; NVIDIA_REQUIRE_* is checked there too (inject/cudacompat.py). The libraries are
also entered in a copy of the image's loader cache bound for the run (plan.loader_cache, inject/ldcache.py),
so that a program that clears LD_LIBRARY_PATH still finds libcuda.so.1.

Which GPUs and MIG devices, and how the container names them: inject/gpus.py.
Capabilities: NVIDIA_DRIVER_CAPABILITIES of the request, else the image's, else compute,utility ("all").
This is the only module importing pynvml; it does so lazily.
"""

import os
import re

from udocker.errors import UdockerError
from udocker.inject import gpus as selection
from udocker.inject import libraries
from udocker.inject.plan import InjectionPlan

_NONE = ("", "none", "void", "nodevfiles", "-1")


def data():
    """The parsed data/nvidia.json (read once)."""
    return libraries.policy("nvidia")


def driver_present(root="/"):
    """Cheap test (two stat calls) for a loaded NVIDIA kernel driver."""
    return any(os.path.exists(libraries.under(root, p)) for p in data()["driver_present"])


def requested(environ):
    """Whether the job was given GPUs: a Slurm GPU variable or a GPU list naming at least one device."""
    return any(environ.get(var, "").strip().lower() not in _NONE for var in data()["requested_by"])


def driver_version(root="/"):
    try:
        with open(libraries.under(root, "/proc/driver/nvidia/version"), encoding="utf-8", errors="replace") as stream:
            match = re.search(r"\s(\d{3,}\.\d+(?:\.\d+)?)\s", stream.readline() + " ")
            if match:
                return match.group(1)
    except OSError:
        pass
    return None


def gpus_from_proc(root="/"):
    """[{index, bus_id, name, uuid, minor}] from /proc/driver/nvidia/gpus, in NVML's (PCI bus) order."""
    top = libraries.under(root, "/proc/driver/nvidia/gpus")
    try:
        buses = sorted(os.listdir(top))
    except OSError:
        return []
    found = []
    for bus in buses:
        fields = {}
        try:
            with open(os.path.join(top, bus, "information"), encoding="utf-8", errors="replace") as stream:
                for line in stream:
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
        except OSError:
            continue
        minor = fields.get("device minor", "")
        found.append({"index": len(found), "bus_id": bus, "name": fields.get("model", ""),
                      "uuid": fields.get("gpu uuid", ""), "minor": int(minor) if minor.isdigit() else None})
    return found


def nvml_report():
    """{driver, cuda, gpus: [{index, bus_id, name, uuid, minor, memory_total}]} from NVML, or None when NVML
    cannot be loaded or initialised (no driver, no libnvidia-ml, or pynvml missing)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml raises NVMLError subclasses and OSError-like errors from ctypes
        return None
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        report = {"driver": _text(pynvml.nvmlSystemGetDriverVersion()),
                  "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}", "gpus": []}
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            report["gpus"].append({
                "index": index, "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                "bus_id": _text(pynvml.nvmlDeviceGetPciInfo(handle).busId).lower(),
                "minor": _optional(pynvml.nvmlDeviceGetMinorNumber, handle),
                "memory_total": pynvml.nvmlDeviceGetMemoryInfo(handle).total})
        return report
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(call, handle):
    try:
        return call(handle)
    except Exception:
        return None


def gpus(root="/"):
    """The node's GPUs: /proc first (cheap), NVML on the real host, else one per /dev/nvidia<N> node."""
    found = gpus_from_proc(root)
    if not found and root == "/":
        found = (nvml_report() or {}).get("gpus", [])
    if not found:
        minors = sorted(int(n[6:]) for n in _listdir(libraries.under(root, "/dev"))
                        if n.startswith("nvidia") and n[6:].isdigit())
        found = [{"index": i, "bus_id": "", "name": "", "uuid": "", "minor": m} for i, m in enumerate(minors)]
    return found


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def capabilities(request, image_env):
    """The wanted capabilities, in data-file order; "all" means every one; unknown names are ignored."""
    known = list(data()["capabilities"])
    value = request.get("NVIDIA_DRIVER_CAPABILITIES", image_env.get("NVIDIA_DRIVER_CAPABILITIES"))
    names = [n.strip().lower() for n in (value or "").split(",") if n.strip()]
    if not names:
        names = data()["default_capabilities"]
    if "all" in names:
        return known
    return [n for n in known if n in names]


def plan(root="/", *, request, image_env, required=False, require_char_devices=None, isolated=False):
    """The InjectionPlan for this node, or an empty plan when there is nothing to inject. With `required`
    (--nvidia) a missing driver or GPU raises UdockerError. Device nodes must be character devices unless
    `require_char_devices` is false (test trees cannot mknod); by default they must on the real host.
    `isolated`: the container sees only the device nodes given to it (R modes), not the host's /dev."""
    check_char = root == "/" if require_char_devices is None else require_char_devices
    if not driver_present(root):
        if required:
            raise UdockerError("no NVIDIA driver on this node (no /proc/driver/nvidia/version, no /dev/nvidiactl)",
                               hint="run on a GPU node, or drop --nvidia")
        return InjectionPlan("nvidia")
    all_gpus = gpus(root)
    if not all_gpus and required:
        raise UdockerError("no NVIDIA GPU on this node", hint="run on a GPU node, or drop --nvidia")
    chosen = selection.select(all_gpus, request, image_env, root)
    if chosen.void and not required:  # NVIDIA_VISIBLE_DEVICES=void: as if the container had no GPU support
        return InjectionPlan("nvidia")
    caps = capabilities(request, image_env)
    finder = libraries.Finder(root, data()["library_dirs"])
    version = driver_version(root) or _version_from_libraries(finder)
    result = InjectionPlan("nvidia", info={"driver": version, "capabilities": caps, "missing": [],
                                           "gpus": chosen.gpus(all_gpus, root)})
    _add_libraries(result, finder, caps, version)
    _add_links(result, caps)
    _add_binaries(result, root, caps)
    _add_files(result, root, caps)
    _add_mps(result, root, request, caps)
    _add_devices(result, root, caps, selection.device_paths(chosen, all_gpus, root, data()["caps_device_dir"]),
                 check_char)
    result.env_override, defaults = selection.container_env(chosen, all_gpus, root, isolated)
    result.env.update(defaults)
    result.env["NVIDIA_DRIVER_CAPABILITIES"] = ",".join(caps)
    return result


def _version_from_libraries(finder):
    for base in ("libcuda.so", "libnvidia-ml.so"):
        for _, name in finder.find(base, bits=64):
            version = libraries.driver_version_of(name)
            if version:
                return version
    return None


def _add_libraries(result, finder, caps, version):
    dirs = data()["container_dirs"]
    classes = [(64, dirs["lib64"], ())]
    if "compat32" in caps:
        classes.append((32, dirs["lib32"], data()["library_dirs_32"]))
    for bits, target_dir, extra in classes:
        added = False
        for cap in caps:
            for base in data()["capabilities"][cap].get("libraries", ()):
                found = finder.find(base, bits=bits, version=version, extra_dirs=extra)
                if not found and bits == 64:
                    result.info["missing"].append(base)
                for path, name in found:
                    result.bind(path, f"{target_dir}/{name}")
                    result.loader_cache.append((name, f"{target_dir}/{name}", bits))
                    added = True
        if added:
            result.env_append.setdefault("LD_LIBRARY_PATH", []).append(target_dir)


def _add_binaries(result, root, caps):
    target_dir = data()["container_dirs"]["bin"]
    for cap in caps:
        for name in data()["capabilities"][cap].get("binaries", ()):
            path = _driver_program(root, name)
            if path:
                result.bind(path, f"{target_dir}/{name}")
                result.env_prepend["PATH"] = [target_dir]


def _driver_program(root, name):
    """The host's program `name` from binary_dirs: the first ELF executable, else the first executable.
    A script (a site's wrapper that execs the driver's program at a host path, as GPU sandboxes and some
    module systems install in /usr/bin) would run in the container without that path: the ELF one wins."""
    found = []
    for directory in data()["binary_dirs"]:
        path = libraries.under(root, f"{directory}/{name}")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            if libraries.elf_bits(path):
                return path
            found.append(path)
    return found[0] if found else None


def _add_files(result, root, caps):
    for cap in caps:
        for path in data()["capabilities"][cap].get("files", []) + data()["capabilities"][cap].get("ipc", []):
            host = libraries.under(root, path)
            if os.path.exists(host):
                result.bind(host, path)


def _add_links(result, caps):
    """Names the host may lack, given as the file another name of the driver's is (data: "links")."""
    target_dir = data()["container_dirs"]["lib64"]
    bound = {m.target: m.source for m in result.binds}
    for cap in caps:
        for name, other in data()["capabilities"][cap].get("links", {}).items():
            if f"{target_dir}/{other}" in bound:
                result.bind(bound[f"{target_dir}/{other}"], f"{target_dir}/{name}")


def _add_mps(result, root, request, caps):
    """The job's MPS pipe directory (CUDA_MPS_PIPE_DIRECTORY, where the MPS daemon was started with one)."""
    path = request.get("CUDA_MPS_PIPE_DIRECTORY", "")
    if "compute" in caps and path.startswith("/") and os.path.isdir(libraries.under(root, path)):
        result.bind(libraries.under(root, path), path)
        result.env["CUDA_MPS_PIPE_DIRECTORY"] = path


def _add_devices(result, root, caps, chosen_paths, check_char):
    wanted = list(data()["control_devices"])
    for cap in caps:
        wanted += data()["capabilities"][cap].get("devices", ())
    for device in wanted + chosen_paths:
        host = libraries.under(root, device)
        if host not in result.devices and _is_device(host, check_char):
            result.devices.append(host)


def _is_device(path, check_char):
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) if check_char else stat.S_ISCHR(mode) or stat.S_ISREG(mode)
