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
