"""Infiniband injection from a fake host tree: /dev/infiniband, sysfs, libibverbs.d and the verbs libraries."""

import os

import pytest

from tests.fixtures import hosttree
from tests.fixtures.hosttree import LIB64
from udocker import inject
from udocker.errors import UdockerError
from udocker.inject import infiniband
from udocker.runbuild import DEFAULT_PATH
from udocker.runspec import Mount, RunSpec

LIBDIR = "/.udocker/infiniband/lib64"


def targets(plan):
    return {m.target: m.source for m in plan.binds}


@pytest.mark.parametrize("provider_path", [True, False])
def test_plan(tmp_path, provider_path):
    root = hosttree.infiniband_host(tmp_path, provider_path=provider_path)
    plan = infiniband.plan(root, require_char_devices=False)
    assert sorted(os.path.basename(d) for d in plan.devices) == ["issm0", "rdma_cm", "umad0", "uverbs0"]
    binds = targets(plan)
    for name in ("libibverbs.so.1", "libibverbs.so.1.14.44.0", "librdmacm.so.1", "libmlx5.so.1",
                 "libnl-3.so.200", "libnl-route-3.so.200"):
        assert binds[f"{LIBDIR}/{name}"] == root + f"{LIB64}/{name}"
    assert not any("libc.so" in t for t in binds)
    # the providers' directory at its own path, so that the host's .driver files resolve in the container
    assert binds[f"{LIB64}/libibverbs"] == root + f"{LIB64}/libibverbs"
    for path in ("/etc/libibverbs.d", "/sys/class/infiniband", "/sys/class/infiniband_verbs"):
        assert binds[path] == root + path
    assert plan.env_append == {"LD_LIBRARY_PATH": [LIBDIR]}
    assert plan.files == []
    assert infiniband.providers(root) == [f"{LIB64}/libibverbs/libmlx5" if provider_path else "mlx5"]


def test_provider_in_a_general_library_directory(tmp_path):
    root = hosttree.infiniband_host(tmp_path, provider_path=False)
    os.rename(root + f"{LIB64}/libibverbs/libmlx5-rdmav34.so", root + f"{LIB64}/libmlx5-rdmav34.so")
    binds = targets(infiniband.plan(root, require_char_devices=False))
    assert binds[f"{LIBDIR}/libmlx5-rdmav34.so"] == root + f"{LIB64}/libmlx5-rdmav34.so"
    assert f"{LIB64}/libibverbs" not in binds


def test_ports(tmp_path):
    root = hosttree.infiniband_host(tmp_path)
    assert infiniband.ports(root) == [
        {"device": "mlx5_0", "port": 1, "state": "4: ACTIVE", "rate": "200 Gb/sec (4X HDR)",
         "link_layer": "InfiniBand"},
        {"device": "mlx5_0", "port": 2, "state": "1: DOWN", "rate": "40 Gb/sec (4X QDR)", "link_layer": "Ethernet"}]


def test_no_rdma(tmp_path):
    assert infiniband.plan(str(tmp_path)).empty()
    with pytest.raises(UdockerError, match="Infiniband"):
        infiniband.plan(str(tmp_path), required=True)
    assert inject.plans(nvidia="off", infiniband="auto", request={}, image_env={}, root=str(tmp_path)) == []


def test_real_devices_must_be_character_devices(tmp_path):
    assert infiniband.plan(hosttree.infiniband_host(tmp_path), require_char_devices=True).empty()


def test_auto_and_off(tmp_path):
    root = hosttree.infiniband_host(tmp_path)
    [plan] = inject.plans(nvidia="auto", infiniband="auto", request={}, image_env={}, root=root)
    assert plan.name == "infiniband"
    assert inject.plans(nvidia="auto", infiniband="off", request={}, image_env={}, root=root) == []


def test_sysfs_not_bound_twice_when_sys_is_bound_whole(tmp_path):
    root = hosttree.infiniband_host(tmp_path)
    plan = infiniband.plan(root, require_char_devices=False)
    # on the real host (root "/") sources equal targets: a /sys bind covers /sys/class/infiniband
    real = [Mount(m.source[len(root):], m.target) if m.target.startswith("/sys") else m for m in plan.binds]
    plan.binds = real
    spec = RunSpec(rootfs="/r", argv=["sh"], env={}, mounts=[Mount("/sys", "/sys")])
    plan.apply(spec, default_path=DEFAULT_PATH)
    assert not any(m.target.startswith("/sys/") for m in spec.mounts)
    assert spec.env["LD_LIBRARY_PATH"] == LIBDIR
    assert f"{LIBDIR}/libibverbs.so.1" in {m.target for m in spec.mounts}
