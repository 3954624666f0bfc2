"""The host's MPI in the container (`run --hostmpi`), for images whose MPI is ABI-compatible with it: the
launcher, the PMI/PMIx server and the interconnect libraries then all come from the node's own installation.

Discovery is data (data/mpi.json): the libraries, found like the NVIDIA driver's (linker cache, ld.so.conf,
usual directories), are bound into one directory that goes FIRST on LD_LIBRARY_PATH, so that they replace
the image's; the MPI's own trees (components it dlopens, help files, configuration) are bound at their host
paths, where the libraries look for them. Nothing is copied."""

import os

from udocker.errors import UdockerError
from udocker.inject import libraries
from udocker.inject.plan import InjectionPlan


def data():
    """The parsed data/mpi.json (read once)."""
    return libraries.policy("mpi")


def plan(root="/", *, required=True):
    """The InjectionPlan binding the host MPI; without one on this node an error (when `required`) or an
    empty plan."""
    policy = data()
    finder = libraries.Finder(root, policy["library_dirs"])
    target = policy["container_dir"]
    result = InjectionPlan("mpi", info={"missing": []})
    for base in policy["libraries"]:
        found = finder.find(base, bits=64)
        if not found:
            result.info["missing"].append(base)
        for path, name in found:
            result.bind(path, f"{target}/{name}")
    if policy["required"] in result.info["missing"]:
        if required:
            raise UdockerError(f"no MPI library ({policy['required']}) found on this node",
                               hint="load the MPI module of the site first, or drop --hostmpi")
        return InjectionPlan("mpi")
    for tree in policy["trees"]:
        if os.path.isdir(libraries.under(root, tree)):
            result.bind(libraries.under(root, tree), tree)
    result.env_prepend["LD_LIBRARY_PATH"] = [target]
    return result
