"""The host's Infiniband / RDMA stack made visible in a container.

plan() reads a host tree (`root`, "/" on a real node, a temporary directory in tests):
  devices    every character device in /dev/infiniband (uverbsN, rdma_cm, umadN, issmN)
  sysfs      /sys/class/infiniband* (bound at their own path; skipped when /sys is bound whole already)
  config     /etc/libibverbs.d (its *.driver files name the verbs providers) and /etc/rdma, at their own path
  libraries  libibverbs, librdmacm, libibumad, the providers' own libraries and their dependencies
             (data/infiniband.json), bound into /.udocker/infiniband/lib64, appended to LD_LIBRARY_PATH
  providers  each "driver NAME" line of libibverbs.d/*.driver names NAME-rdmav*.so: NAME is either a path
             prefix (rdma-core >= 17 writes /usr/lib/<triplet>/libibverbs/libmlx5) or a bare name searched in
             the library directories and their libibverbs/ subdirectory; the directory holding the providers
             is bound at its own path, so that the host's .driver files resolve in the container too.
The host's libibverbs comes with the host's providers: a provider must match the libibverbs that loads it
(its rdmav ABI), and the host's match the host's kernel drivers. The image's LD_LIBRARY_PATH still wins.

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
    """[(NAME prefix, whether it is a path)] from libibverbs.d/*.driver lines "driver NAME"."""
    found = []
    for conf in data()["config_dirs"][:1]:
        top = libraries.under(root, conf)
        for name in _listdir(top):
            if not name.endswith(".driver"):
                continue
            for line in _read(os.path.join(top, name)).splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) == 2 and words[0] == "driver":
                    found.append(words[1])
    return found


def plan(root="/", *, required=False, require_char_devices=None):
    """The InjectionPlan for this node (empty without RDMA devices); `required` (--ib) makes their absence an
    error. Device nodes may be regular files when require_char_devices is false (test trees)."""
    nodes = devices(root, require_char_devices=require_char_devices)
    if not nodes:
        if required:
            raise UdockerError("no Infiniband / RDMA device on this node (/dev/infiniband is empty or missing)",
                               hint="run on a node with an RDMA adapter, or drop --ib")
        return InjectionPlan("infiniband")
    result = InjectionPlan("infiniband", devices=nodes, info={"ports": ports(root), "missing": []})
    for path in data()["sysfs"] + data()["config_dirs"]:
        if os.path.exists(libraries.under(root, path)):
            result.bind(libraries.under(root, path), path)
    finder = libraries.Finder(root, data()["library_dirs"])
    target_dir = data()["container_dirs"]["lib64"]
    for base in data()["libraries"] + data()["dependencies"]:
        found = finder.find(base, bits=64)
        if not found:
            result.info["missing"].append(base)
        for path, name in found:
            result.bind(path, f"{target_dir}/{name}")
    provider_dirs, provider_files = _providers(root)
    for directory in provider_dirs:
        result.bind(libraries.under(root, directory), directory)
    for path in provider_files:  # in a general library directory: found by dlopen through LD_LIBRARY_PATH
        result.bind(libraries.under(root, path), f"{target_dir}/{os.path.basename(path)}")
    if any(m.target.startswith(target_dir + "/") for m in result.binds):
        result.env_append["LD_LIBRARY_PATH"] = [target_dir]
    return result


def _providers(root):
    """(directories of providers only, provider files in general library directories), container paths, for
    the providers the .driver files name."""
    dirs, files = [], []
    search = [d + "/" + s for d in data()["library_dirs"] for s in data()["provider_subdirs"]]
    for name in providers(root):
        if name.startswith("/"):
            candidates, base = [os.path.dirname(name)], os.path.basename(name)
        else:
            candidates, base = search + data()["library_dirs"], "lib" + name if not name.startswith("lib") else name
        for directory in candidates:
            listing = _listdir(libraries.under(root, directory))
            matching = [n for n in listing if n.startswith(base + "-rdmav") and n.endswith(".so")]
            if not matching:
                continue
            if directory in data()["library_dirs"]:
                files += [f"{directory}/{n}" for n in matching if f"{directory}/{n}" not in files]
            elif directory not in dirs:
                dirs.append(directory)
            break
    return dirs, files


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
