"""--hostmpi: the host MPI found in a fake host tree, bound first on LD_LIBRARY_PATH."""

import os

import pytest

from udocker.errors import UdockerError
from udocker.inject import hostmpi, plans
from udocker.runspec import RunSpec

LIBDIR = "/usr/lib/x86_64-linux-gnu"


def _file(root, path, text="x"):
    full = os.path.join(str(root), path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as stream:
        stream.write(text)
    return full


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "host"
    real = _file(root, f"{LIBDIR}/libmpi.so.40.30.4")
    os.symlink("libmpi.so.40.30.4", os.path.join(os.path.dirname(real), "libmpi.so.40"))
    _file(root, f"{LIBDIR}/libopen-pal.so.40")
    _file(root, f"{LIBDIR}/openmpi/lib/openmpi3/mca_btl_vader.so")
    _file(root, "/etc/openmpi/openmpi-mca-params.conf")
    _file(root, "/etc/ld.so.conf", "")
    return str(root)


def test_plan_binds_libraries_and_trees(host):
    plan = hostmpi.plan(host)
    targets = {m.target: m.source for m in plan.binds}
    assert targets["/.udocker/mpi/lib64/libmpi.so.40"] == os.path.join(host, LIBDIR.lstrip("/"), "libmpi.so.40")
    assert "/.udocker/mpi/lib64/libmpi.so.40.30.4" in targets and "/.udocker/mpi/lib64/libopen-pal.so.40" in targets
    assert targets[f"{LIBDIR}/openmpi"] == os.path.join(host, LIBDIR.lstrip("/"), "openmpi")
    assert targets["/etc/openmpi"] == os.path.join(host, "etc/openmpi")
    assert "libpmix.so" in plan.info["missing"]


def test_host_mpi_goes_first_on_the_loader_path(host):
    spec = RunSpec(rootfs="/r", argv=["/a"], env={"LD_LIBRARY_PATH": "/opt/image-mpi/lib"})
    [plan] = plans(nvidia="off", infiniband="off", hostmpi="on", request={}, image_env=spec.env, root=host)
    plan.apply(spec)
    assert spec.env["LD_LIBRARY_PATH"] == "/.udocker/mpi/lib64:/opt/image-mpi/lib"
    assert plans(nvidia="off", infiniband="off", hostmpi="auto", request={}, image_env={}, root=host) == []


def test_no_mpi_on_the_node_is_a_clear_error(tmp_path):
    _file(tmp_path, "/etc/ld.so.conf", "")
    with pytest.raises(UdockerError, match=r"no MPI library \(libmpi.so\) found on this node"):
        hostmpi.plan(str(tmp_path))
    assert hostmpi.plan(str(tmp_path), required=False).empty()


def _library(root, path):
    """PATH (libNAME.so.X.Y.Z) and its soname link libNAME.so.X."""
    real = _file(root, path)
    name = os.path.basename(path)
    os.symlink(name, os.path.join(os.path.dirname(real), ".".join(name.split(".")[:3])))


def test_rhel_trees(tmp_path):
    """RHEL 8: Open MPI under /usr/lib64/openmpi, UCX's transports in /usr/lib64/ucx, libfabric's providers in
    /usr/lib64/libfabric, PMIx's plugins in /usr/lib64/pmix, Open MPI's configuration in /etc/openmpi-x86_64:
    each found by its library at its compiled-in path, so each is bound there."""
    root = str(tmp_path / "rhel")
    _file(root, "/etc/ld.so.conf", "include ld.so.conf.d/*.conf\n")
    _library(root, "/usr/lib64/openmpi/lib/libmpi.so.40.30.1")
    _file(root, "/usr/lib64/openmpi/lib/openmpi/mca_btl_vader.so")
    for name in ("libucp.so.0.0.0", "libuct.so.0.0.0", "libucs.so.0.0.0", "libfabric.so.1.18.0",
                 "libpmix.so.2.2.35"):
        _library(root, f"/usr/lib64/{name}")
    _file(root, "/usr/lib64/ucx/libuct_ib.so.0.0.0")
    _file(root, "/usr/lib64/libfabric/libpsmx2-fi.so")
    _file(root, "/usr/lib64/pmix/mca_gds_hash.so")
    _file(root, "/etc/openmpi-x86_64/openmpi-mca-params.conf")
    _file(root, "/etc/ucx/ucx.conf")
    plan = hostmpi.plan(root)
    targets = {m.target: m.source for m in plan.binds}
    assert targets["/.udocker/mpi/lib64/libmpi.so.40"] == root + "/usr/lib64/openmpi/lib/libmpi.so.40"
    assert targets["/.udocker/mpi/lib64/libucp.so.0"] == root + "/usr/lib64/libucp.so.0"
    for tree in ("/usr/lib64/openmpi", "/usr/lib64/ucx", "/usr/lib64/libfabric", "/usr/lib64/pmix",
                 "/etc/openmpi-x86_64", "/etc/ucx"):
        assert targets[tree] == root + tree


def test_sles_trees(tmp_path):
    """SLES 15: Open MPI 4 under /usr/lib64/mpi/gcc/openmpi4 (lib64/, etc/, share/), UCX and libfabric as RHEL."""
    root = str(tmp_path / "sles")
    _file(root, "/etc/ld.so.conf", "")
    prefix = "/usr/lib64/mpi/gcc/openmpi4"
    _library(root, f"{prefix}/lib64/libmpi.so.40.30.2")
    _file(root, f"{prefix}/lib64/openmpi/mca_btl_vader.so")
    _file(root, f"{prefix}/etc/openmpi-mca-params.conf")
    _library(root, "/usr/lib64/libucp.so.0.0.0")
    _file(root, "/usr/lib64/ucx/libuct_ib.so.0.0.0")
    _file(root, "/usr/lib64/libfabric/libpsmx2-fi.so")
    targets = {m.target: m.source for m in hostmpi.plan(root).binds}
    assert targets["/.udocker/mpi/lib64/libmpi.so.40"] == root + f"{prefix}/lib64/libmpi.so.40"
    for tree in (prefix, "/usr/lib64/ucx", "/usr/lib64/libfabric"):
        assert targets[tree] == root + tree
