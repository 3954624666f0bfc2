"""Infiniband injection from a fake host tree: /dev/infiniband, sysfs, libibverbs.d and the verbs libraries."""

import os

import pytest

from tests.fixtures import hosttree
from tests.fixtures.hosttree import LIB64
from udocker import inject
from udocker.engines.common import DEFAULT_PATH
from udocker.errors import UdockerError
from udocker.inject import infiniband, libraries
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
    # the provider beside the libraries, named to libibverbs by its container path (RDMAV_DRIVERS): nothing
    # is bound into the image's own library directories or /etc/libibverbs.d
    assert binds[f"{LIBDIR}/libmlx5-rdmav34.so"] == root + f"{LIB64}/libibverbs/libmlx5-rdmav34.so"
    assert plan.env == {"RDMAV_DRIVERS": f"{LIBDIR}/libmlx5"}
    assert not any(t.startswith(("/usr/", "/etc/libibverbs.d")) for t in binds)
    for path in ("/sys/class/infiniband", "/sys/class/infiniband_verbs"):
        assert binds[path] == root + path
    assert plan.env_append == {"LD_LIBRARY_PATH": [LIBDIR]}
    assert plan.files == []
    assert infiniband.providers(root) == [f"{LIB64}/libibverbs/libmlx5" if provider_path else "mlx5"]


def test_provider_in_a_general_library_directory(tmp_path):
    root = hosttree.infiniband_host(tmp_path, provider_path=False)
    os.rename(root + f"{LIB64}/libibverbs/libmlx5-rdmav34.so", root + f"{LIB64}/libmlx5-rdmav34.so")
    plan = infiniband.plan(root, require_char_devices=False)
    assert targets(plan)[f"{LIBDIR}/libmlx5-rdmav34.so"] == root + f"{LIB64}/libmlx5-rdmav34.so"
    assert plan.env["RDMAV_DRIVERS"] == f"{LIBDIR}/libmlx5"


def test_providers_that_are_relative_links_are_bound_as_their_files(tmp_path):
    """rdma-core installs libibverbs/libmlx5-rdmav34.so -> ../libmlx5.so.1.24.44.0: a bind of the directory
    (or of the link) leaves a link that resolves in the image, where there is no such file."""
    root = hosttree.infiniband_host(tmp_path, debian=True)
    plan = infiniband.plan(root, require_char_devices=False)
    binds = targets(plan)
    for name, version in hosttree.RDMA_LINKED.items():
        source = binds[f"{LIBDIR}/lib{name}-rdmav34.so"]
        assert source == root + f"{LIB64}/lib{name}.so.{version}" and not os.path.islink(source)
    for name in hosttree.RDMA_PLAIN:
        assert binds[f"{LIBDIR}/lib{name}-rdmav34.so"] == root + f"{LIB64}/libibverbs/lib{name}-rdmav34.so"
    names = sorted(list(hosttree.RDMA_LINKED) + list(hosttree.RDMA_PLAIN))
    assert plan.env["RDMAV_DRIVERS"].split(":") == [f"{LIBDIR}/lib{name}" for name in names]
    assert not any(t.startswith(("/usr/", "/etc/libibverbs.d")) for t in binds)


@pytest.mark.skipif(not os.path.isdir(f"{LIB64}/libibverbs"), reason="rdma-core's providers are not installed")
def test_the_installed_rdma_core_providers_are_bound_as_files():
    """The real layout of this machine's rdma-core (Debian: ibverbs-providers): every provider named by
    /etc/libibverbs.d is bound as the file its link leads to, mlx5 among them."""
    found = dict((target, source) for source, target in infiniband.provider_binds("/")[0])
    assert f"{LIBDIR}/libmlx5-rdmav34.so" in found
    for target, source in found.items():
        assert not os.path.islink(source) and libraries.elf_bits(source) == 64, (target, source)
        assert os.path.samefile(source, f"{LIB64}/libibverbs/{os.path.basename(target)}")


def test_an_image_with_its_own_rdma_core_keeps_it(tmp_path):
    """The image's libibverbs and providers match its UCX and MPI (symbol versions): only the kernel's side
    (devices, sysfs) comes from the host; the uverbs ABI is stable across rdma-core versions."""
    root = hosttree.infiniband_host(tmp_path / "host", debian=True)
    image = str(tmp_path / "image")
    hosttree.rdma_core(image, abi="25")
    hosttree.library(image, LIB64, "libibverbs.so", "1.8.28.0")
    [plan] = inject.plans(nvidia="off", infiniband="auto", request={}, image_env={}, root=root, rootfs=image)
    assert sorted(targets(plan)) == ["/sys/class/infiniband", "/sys/class/infiniband_verbs"]
    assert len(plan.devices) == 4 and not plan.env and not plan.env_append
    assert plan.info["user_space"] == "image"


def test_an_image_without_rdma_core_gets_the_hosts(tmp_path):
    root = hosttree.infiniband_host(tmp_path / "host", debian=True)
    image = str(tmp_path / "image")
    hosttree.write(image, f"{LIB64}/libc.so.6", hosttree.elf(64))
    [plan] = inject.plans(nvidia="off", infiniband="auto", request={}, image_env={}, root=root, rootfs=image)
    assert f"{LIBDIR}/libibverbs.so.1" in targets(plan) and plan.info["user_space"] == "host"


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


def test_rhel_layout(tmp_path):
    """RHEL 8's rdma-core: the same relative links, in /usr/lib64/libibverbs."""
    root = str(tmp_path)
    hosttree.write(root, "/dev/infiniband/uverbs0")
    hosttree.rdma_core(root, "/usr/lib64")
    hosttree.library(root, "/usr/lib64", "libibverbs.so", "1.14.48.0")
    plan = infiniband.plan(root, require_char_devices=False)
    binds = targets(plan)
    assert binds[f"{LIBDIR}/libmlx5-rdmav34.so"] == root + "/usr/lib64/libmlx5.so.1.24.44.0"
    assert binds[f"{LIBDIR}/libibverbs.so.1"] == root + "/usr/lib64/libibverbs.so.1"
    assert f"{LIBDIR}/libmlx5" in plan.env["RDMAV_DRIVERS"].split(":")
