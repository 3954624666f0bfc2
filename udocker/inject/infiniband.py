"""The host's Infiniband / RDMA stack made visible in a container.

plan() reads a host tree (`root`, "/" on a real node, a temporary directory in tests):
  devices    every character device in /dev/infiniband (uverbsN, rdma_cm, umadN, issmN)
  sysfs      /sys/class/infiniband* (bound at their own path; skipped when /sys is bound whole already)
  user space only for an image without its own libibverbs (found as the image's loader would):
  libraries  libibverbs, librdmacm, libibumad, the providers' own libraries and their dependencies
             (data/infiniband.json), bound into /.udocker/infiniband/lib64, appended to LD_LIBRARY_PATH
  providers  each "driver NAME" line of the host's libibverbs.d/*.driver names NAME-rdmav*.so: NAME is either
             a path prefix (/usr/lib64/libibverbs/libmlx5) or a bare name searched in the library directories
             and their libibverbs/ subdirectory; each is bound as the file it leads to (rdma-core's mlx5, mlx4,
             efa, mana are relative links ../libNAME.so.1.X) into /.udocker/infiniband/lib64, and
             RDMAV_DRIVERS names them there, so libibverbs loads them whatever its built-in provider directory
  config     /etc/rdma at its own path (/etc/libibverbs.d is not needed: RDMAV_DRIVERS names the providers)
The host's libibverbs comes with the host's providers: a provider must match the libibverbs that loads it
(its rdmav ABI). An image with its own rdma-core keeps it (the kernel's uverbs ABI is stable, and the
image's UCX or MPI needs the symbol versions of its own libibverbs): it gets the devices and sysfs only.
The image's LD_LIBRARY_PATH still wins.

ports() reads /sys/class/infiniband/<dev>/ports/<n>/{state,rate,link_layer} for `udocker info`.
"""

import os
import stat

from udocker.errors import UdockerError
from udocker.inject import libraries
from udocker.inject.plan import InjectionPlan


def data():
    """The parsed data/infiniband.json (read once)."""
    return libraries.policy("infiniband")


def present(root="/"):
    """Cheap test: does the node have RDMA devices?"""
    return any(os.path.isdir(libraries.under(root, p)) for p in data()["requested_by"])


def devices(root="/", *, require_char_devices=None):
    check_char = root == "/" if require_char_devices is None else require_char_devices
    top = libraries.under(root, data()["device_dir"])
    found = []
    for name in _listdir(top):
        try:
            mode = os.stat(os.path.join(top, name)).st_mode
        except OSError:
            continue
        if stat.S_ISCHR(mode) or (not check_char and stat.S_ISREG(mode)):
            found.append(os.path.join(top, name))
    return found


def ports(root="/"):
    """[{device, port, state, rate, link_layer}] from sysfs, e.g. state "4: ACTIVE", rate "200 Gb/sec (4X HDR)"."""
    top = libraries.under(root, "/sys/class/infiniband")
    found = []
    for device in _listdir(top):
        port_dir = os.path.join(top, device, "ports")
        for port in sorted(_listdir(port_dir), key=lambda p: int(p) if p.isdigit() else 0):
            values = {key: _read(os.path.join(port_dir, port, key)) for key in ("state", "rate", "link_layer")}
            found.append(dict(values, device=device, port=int(port) if port.isdigit() else port))
    return found


def providers(root="/"):
    """[NAME] from the host's libibverbs.d/*.driver lines "driver NAME" (a bare name or a path prefix)."""
    found = []
    top = libraries.under(root, data()["driver_config"])
    for name in _listdir(top):
        if not name.endswith(".driver"):
            continue
        for line in _read(os.path.join(top, name)).splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) == 2 and words[0] == "driver":
                found.append(words[1])
    return found


def plan(root="/", *, required=False, require_char_devices=None, image=None):
    """The InjectionPlan for this node (empty without RDMA devices); `required` (--ib) makes their absence an
    error. Device nodes may be regular files when require_char_devices is false (test trees). `image`: the
    container's root directory; when its loader finds a libibverbs there, the image keeps its own user space
    and only the kernel's side (devices, sysfs) is added."""
    nodes = devices(root, require_char_devices=require_char_devices)
    if not nodes:
        if required:
            raise UdockerError("no Infiniband / RDMA device on this node (/dev/infiniband is empty or missing)",
                               hint="run on a node with an RDMA adapter, or drop --ib")
        return InjectionPlan("infiniband")
    own = image is not None and image_has_verbs(image)
    result = InjectionPlan("infiniband", devices=nodes,
                           info={"ports": ports(root), "missing": [], "user_space": "image" if own else "host"})
    for path in data()["sysfs"] + ([] if own else data()["config_dirs"]):
        if os.path.exists(libraries.under(root, path)):
            result.bind(libraries.under(root, path), path)
    if not own:
        _user_space(root, result)
    return result


def image_has_verbs(image):
    """Whether the image's own loader finds a 64-bit libibverbs (its linker cache, ld.so.conf, usual dirs)."""
    return bool(libraries.Finder(image, data()["library_dirs"]).find("libibverbs.so", bits=64))


def _user_space(root, result):
    """The host's libibverbs, librdmacm, providers and their dependencies, all in one container directory."""
    finder = libraries.Finder(root, data()["library_dirs"])
    target_dir = data()["container_dirs"]["lib64"]
    for base in data()["libraries"] + data()["dependencies"]:
        found = finder.find(base, bits=64)
        if not found:
            result.info["missing"].append(base)
        for path, name in found:
            result.bind(path, f"{target_dir}/{name}")
    binds, prefixes = provider_binds(root)
    for source, target in binds:
        result.bind(source, target)
    if prefixes:  # loaded by libibverbs from these container paths (its own .driver files are not bound)
        result.env["RDMAV_DRIVERS"] = ":".join(prefixes)
    if result.binds:
        result.env_append["LD_LIBRARY_PATH"] = [target_dir]


def provider_binds(root="/"):
    """([(host file, container path)], [container path prefixes for RDMAV_DRIVERS]) of the providers the host's
    .driver files name, put beside the injected libibverbs under their own names (libNAME-rdmavABI.so).

    The source is the file a provider's link leads to, resolved on the host: rdma-core installs providers
    that are libraries too (mlx5, mlx4, efa, mana) as relative links ../libNAME.so.1.X, which would resolve
    in the image if the link itself (or its directory) were bound. Naming them in RDMAV_DRIVERS by container
    path works whatever the host's .driver files say (a bare name looked up in libibverbs's built-in provider
    directory, or a host path) and puts nothing into the image's own directories."""
    target_dir = data()["container_dirs"]["lib64"]
    binds, prefixes = [], []
    for directory, base, names in _providers(root):
        for name in names:
            source = libraries.resolved(root, libraries.under(root, f"{directory}/{name}"))
            if source and (source, f"{target_dir}/{name}") not in binds:
                binds.append((source, f"{target_dir}/{name}"))
        if f"{target_dir}/{base}" not in prefixes:
            prefixes.append(f"{target_dir}/{base}")
    return binds, prefixes


def _providers(root):
    """[(host directory, provider prefix "libNAME", [file names libNAME-rdmavABI.so])] for the providers the
    .driver files name, in their order."""
    found = []
    search = [d + "/" + s for d in data()["library_dirs"] for s in data()["provider_subdirs"]]
    for name in providers(root):
        if name.startswith("/"):
            candidates, base = [os.path.dirname(name)], os.path.basename(name)
        else:
            candidates, base = search + data()["library_dirs"], "lib" + name if not name.startswith("lib") else name
        for directory in candidates:
            listing = _listdir(libraries.under(root, directory))
            matching = [n for n in listing if n.startswith(base + "-rdmav") and n.endswith(".so")]
            if matching:
                found.append((directory, base, matching))
                break
    return found


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read().strip()
    except OSError:
        return ""
