"""CUDA forward compatibility (an image's cuda-compat libraries) and the image's NVIDIA_REQUIRE_* check.

Run by runbuild.inject() right after the NVIDIA plan is applied, so only on the GPU path; the decisions are
pure functions (the top half), the reading of the image and the host the bottom half.

Which libcuda the program loads. A CUDA forward-compatibility package (cuda-compat-X-Y: libcuda.so.<driver>,
libnvidia-ptxjitcompiler... of a newer driver branch) lets a program of a newer CUDA run on an older driver
on data-center GPUs. An image carries it in /usr/local/cuda/compat, and sometimes names that directory, or
another one holding a libcuda.so.<driver>, in its LD_LIBRARY_PATH. Its libcuda must be loaded only when its
driver branch (the major number of <driver>) is newer than the host's: on a newer host it would not match
the kernel module (the program fails with "system has unsupported display driver / cuda driver combination"),
and a newer libcuda of the host's own branch is refused by the kernel module too. This is the toolkit's rule
(libnvidia-container and the cuda-compat hook compare major numbers). So every such directory is taken out
of LD_LIBRARY_PATH, and the one whose libcuda qualifies (the first in the image's LD_LIBRARY_PATH order,
else /usr/local/cuda/compat) is put at its front, ahead of the host's /.udocker/nvidia/lib64. Whether the
GPU supports forward compatibility at all is not checked here (no NVML query); on one that does not, the
compat libcuda's cuInit fails with CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE.

The requirement check, as the NVIDIA container toolkit does it. Every NVIDIA_REQUIRE_* variable of the
container's environment (not NVIDIA_REQUIRE_JETPACK) must hold; a legacy image (CUDA_VERSION without
NVIDIA_REQUIRE_CUDA) requires cuda>=<its major.minor>. In a value, space-separated groups are ORed and the
comma-separated constraints of a group ANDed: "cuda>=12.2 brand=tesla,driver>=470,driver<471" is met by a
CUDA 12.2 driver, or by a Tesla on a 470 driver. Constraints are PROPERTY OP VALUE, OP one of = != < <= > >=;
properties: cuda (cuDriverGetVersion of the host's libcuda, or the CUDA version of the compat package used),
driver (the host's driver version), brand and arch (not known here: a constraint on them holds). A
property not in this list is ignored; a constraint that cannot be parsed is an error. NVIDIA_DISABLE_REQUIRE
set to a true value (1, t, true) in the container's environment or the host's skips the check. An unmet
requirement is one `error:` line naming the first group of the value, as nvidia-container-cli does;
`udocker run` then exits 125, before any engine starts.
"""

import os
import re

from udocker.errors import UdockerError

COMPAT_DIR = "/usr/local/cuda/compat"
_LIBCUDA = re.compile(r"^libcuda\.so\.(\d+\.\d+(?:\.\d+)*)$")
_OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
_VERSION_PROPERTIES = ("cuda", "driver", "arch")
_STRING_PROPERTIES = ("brand",)
_TRUE = ("1", "t", "true")
_HINT = ("run it on a node with a newer NVIDIA driver or use an image of an older CUDA, or skip the check "
         "with -e NVIDIA_DISABLE_REQUIRE=1 (the program may then fail)")


# -- pure decisions ------------------------------------------------------------------------------------
def version_tuple(text):
    """(12, 2) for "12.2"; None for anything but dot-separated numbers."""
    parts = str(text).split(".")
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def compare_versions(left, op, right):
    """Compare two dotted versions, missing trailing parts counting as 0 (12.2 = 12.2.0)."""
    a, b = version_tuple(left), version_tuple(right)
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _constraint(text, where):
    """(property, op, value) of "cuda>=12.2"; None for a property this check does not know."""
    match = re.match(r"^([A-Za-z_][A-Za-z0-9_-]*)([<>=!]+)(.*)$", text)
    if match:
        name, op, value = match.group(1).lower(), match.group(2), match.group(3)
        if name not in _VERSION_PROPERTIES + _STRING_PROPERTIES:
            return None
        if op in _OPERATORS and value and (name in _STRING_PROPERTIES and op in ("=", "!=")
                                           or name in _VERSION_PROPERTIES and version_tuple(value)):
            return name, op, value
    raise UdockerError(f"invalid constraint {text!r} in the image's {where}",
                       hint="skip the image's requirements with -e NVIDIA_DISABLE_REQUIRE=1")


def _holds(constraint, properties):
    name, op, value = constraint
    have = properties.get(name)
    if have is None:  # not known on this node: the toolkit lets it pass too
        return True
    if name in _STRING_PROPERTIES:
        return (str(have).lower() == value.lower()) == (op == "=")
    return version_tuple(have) is None or compare_versions(have, op, value)


def unsatisfied(requirements, properties):
    """(variable, first group of its value) for the first requirement not met, else None. `requirements`:
    [(variable, value)]; `properties`: {name: value or None}; a value may be a callable, called once
    when a constraint needs it (cuDriverGetVersion is only worth its cost when a cuda constraint is there).
    Raises UdockerError for a constraint that cannot be parsed."""
    known = properties if isinstance(properties, _Lazy) else _Lazy(properties)
    for variable, value in requirements:
        groups = [[c for c in (_constraint(t, variable) for t in g.split(",") if t) if c]
                  for g in value.split()]
        groups = [g for g in groups if g]
        if groups and not any(all(_holds(c, known) for c in g) for g in groups):
            return variable, value.split()[0]
    return None


class _Lazy(dict):
    """A property dict whose callable values are called at their first use."""

    def get(self, key, default=None):
        value = super().get(key, default)
        if callable(value):
            value = value()
            self[key] = value
        return value


def disabled(env):
    return env.get("NVIDIA_DISABLE_REQUIRE", "").strip().lower() in _TRUE


def requirements(env):
    """[(variable, value)] the container's environment `env` requires, in name order; [] when disabled."""
    if disabled(env):
        return []
    found = [(k, v) for k, v in sorted(env.items()) if k.startswith("NVIDIA_REQUIRE_")
             and k != "NVIDIA_REQUIRE_JETPACK" and v.strip()]
    legacy = version_tuple(env.get("CUDA_VERSION", "").strip())
    if legacy and len(legacy) >= 2 and not env.get("NVIDIA_REQUIRE_CUDA", "").strip():
        found.append(("CUDA_VERSION", f"cuda>={legacy[0]}.{legacy[1]}"))
    return found


def use_compat(compat_driver, host_driver):
    """Whether a compat libcuda of driver `compat_driver` is to be loaded on a host driver `host_driver`:
    only from a newer driver branch (major number), as the toolkit decides."""
    compat, host = version_tuple(compat_driver or "x"), version_tuple(host_driver or "x")
    return bool(compat and host and compat[0] > host[0])


def compat_version(names, link):
    """The driver version of the libcuda in a directory holding `names`: the one libcuda.so.1 names
    (`link`, its target's base name), else the highest libcuda.so.<version>; None when there is none."""
    if link and _LIBCUDA.match(link):
        return _LIBCUDA.match(link).group(1)
    versions = [m.group(1) for m in map(_LIBCUDA.match, names) if m]
    return max(versions, key=version_tuple) if versions else None


def library_path(entries, compat_dirs, chosen):
    """LD_LIBRARY_PATH's entries without the compat directories, `chosen` (or None) first."""
    rest = [e for e in entries if e not in compat_dirs and e != chosen]
    return ([chosen] if chosen else []) + rest


def cuda_text(version):
    """cuDriverGetVersion's number as text: 12020 -> "12.2"; None for 0 or less."""
    return f"{version // 1000}.{version % 1000 // 10}" if version and version > 0 else None


def refusal(failed, driver, cuda, compat):
    variable, group = failed
    cuda_part = f"CUDA {cuda or 'unknown'}" + (f" (cuda-compat {compat})" if compat else "")
    return UdockerError(f"the image requires {group} ({variable}); this node has NVIDIA driver "
                        f"{driver or 'unknown'}, {cuda_part}", hint=_HINT)


# -- reading the image and the host --------------------------------------------------------------------
def apply(spec, plan, request):
    """Choose the image's compat libraries and check its requirements for `spec` (a RunSpec the NVIDIA
    `plan` was just applied to; `request`: the host's environment with -e). Raises UdockerError for an
    unmet requirement."""
    driver = plan.info.get("driver")
    entries = [e for e in spec.env.get("LD_LIBRARY_PATH", "").split(":") if e]
    found = _compat_dirs(spec, entries)
    chosen = next(((d, v) for d, v in found if use_compat(v, driver)), None)
    plan.info["cuda_compat"] = chosen and chosen[1]
    if found:
        kept = library_path(entries, [d for d, _ in found], chosen and chosen[0])
        if kept:
            spec.env["LD_LIBRARY_PATH"] = ":".join(kept)
        else:
            spec.env.pop("LD_LIBRARY_PATH", None)
    wanted = [] if disabled(request) else requirements(spec.env)
    if not wanted:
        return
    if chosen:
        properties = _Lazy(driver=driver, cuda=lambda: _compat_cuda(spec, chosen[0]))
    else:
        properties = _Lazy(driver=driver, cuda=lambda: _host_cuda(plan))
    failed = unsatisfied(wanted, properties)
    if failed:
        raise refusal(failed, driver, properties.get("cuda"), chosen and chosen[1])


def _compat_dirs(spec, entries):
    """[(container directory, driver version)] of the image's directories holding a libcuda.so.<version>:
    those of LD_LIBRARY_PATH (not udocker's own), then /usr/local/cuda/compat."""
    from udocker.rootpath import resolve

    found = []
    for directory in [e for e in entries if not e.startswith("/.udocker/")] + [COMPAT_DIR]:
        if directory in (d for d, _ in found):
            continue
        host = resolve(spec.rootfs, directory, spec.mounts)
        try:
            names = os.listdir(host)
        except OSError:
            continue
        link = os.path.join(host, "libcuda.so.1")
        version = compat_version(names, os.path.basename(os.readlink(link)) if os.path.islink(link) else None)
        if version:
            found.append((directory, version))
    return found


def _compat_cuda(spec, directory):
    """The CUDA version of the compat package in `directory`: its cuda-X.Y directory (NVIDIA's packages
    install to /usr/local/cuda-X.Y/compat), else the image's CUDA_VERSION; None when neither says."""
    from udocker.rootpath import resolve

    host = resolve(spec.rootfs, directory, spec.mounts)
    inside = host[len(spec.rootfs.rstrip("/")):] if host.startswith(spec.rootfs.rstrip("/") + "/") else host
    match = re.search(r"/cuda-(\d+\.\d+)(?:/|$)", inside)
    if match:
        return match.group(1)
    legacy = version_tuple(spec.env.get("CUDA_VERSION", "").strip())
    return f"{legacy[0]}.{legacy[1]}" if legacy and len(legacy) >= 2 else None


def _host_cuda(plan):
    """cuDriverGetVersion of the host's libcuda the plan binds, or None."""
    for mount in plan.binds:
        if os.path.basename(mount.target) == "libcuda.so.1":
            version = host_cuda_version(mount.source)
            if version:
                return version
    return None


def host_cuda_version(path):
    """The CUDA version the libcuda at host path `path` supports (cuDriverGetVersion: no cuInit, no GPU
    needed), or None when it cannot be loaded or answers with an error. ctypes is imported here only."""
    import ctypes

    try:
        library = ctypes.CDLL(path)
        version = ctypes.c_int(0)
        if library.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return cuda_text(version.value)
