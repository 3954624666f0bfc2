"""Infiniband injection with the real rdma-core (Debian's libibverbs1, ibverbs-providers, ibverbs-utils) on
the host and a fake adapter: a sysfs naming one mlx5 device and /dev/infiniband/uverbs0, seen by udocker
and its engines in a private namespace (tests/support/rdma_namespace.sh). `ibv_devices`, the host's,
copied into the Debian test image, lists mlx5_0 only when the mlx5 provider was found and its dlopen
succeeded (the provider holds the table that matches the device); IBV_SHOW_WARNINGS=1 makes libibverbs say
why when it did not. In P1, R1 and F1, as the unprivileged user:
  - an image without rdma-core gets the host's libibverbs and providers (mlx5's is a relative link);
  - an image with its own rdma-core keeps it: nothing from the host's user space is loaded."""

import glob
import os
import shutil
import subprocess
import sys

import pytest

from tests.functional.test_run_matrix import Repo

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMESPACE = os.path.join(TOP, "tests", "support", "rdma_namespace.sh")
LIB64 = "/usr/lib/x86_64-linux-gnu"
MODES = ["P1", "R1", "F1"]
MODALIAS = "pci:v000015B3d00001017sv000015B3sd00000008bc02sc07i00\n"  # ConnectX-5: in mlx5's match table
WARNINGS = ("couldn't load driver", "no userspace device-specific driver")


def _rdma_core_installed():
    return os.path.isfile("/usr/bin/ibv_devices") and os.path.islink(f"{LIB64}/libibverbs/libmlx5-rdmav34.so")


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


def fake_sysfs(top):
    """class/infiniband_verbs/uverbs0 naming mlx5_0, and class/infiniband/mlx5_0 with what libibverbs reads."""
    verbs, device = os.path.join(top, "infiniband_verbs"), os.path.join(top, "infiniband", "mlx5_0")
    _write(f"{verbs}/abi_version", "6\n")
    for name, value in (("ibdev", "mlx5_0"), ("abi_version", "1"), ("dev", "1:3")):
        _write(f"{verbs}/uverbs0/{name}", value + "\n")
    _write(f"{device}/node_type", "1: CA\n")
    _write(f"{device}/node_guid", "0c42:a103:0016:0e0a\n")
    _write(f"{device}/device/modalias", MODALIAS)
    _write(f"{device}/ports/1/state", "4: ACTIVE\n")
    _write(f"{device}/ports/1/rate", "200 Gb/sec (4X HDR)\n")
    _write(f"{device}/ports/1/link_layer", "InfiniBand\n")
    return top


@pytest.fixture(scope="module")
def setting(tmp_path_factory, debian_image):
    if not _rdma_core_installed():
        if os.environ.get("CI"):
            pytest.fail("rdma-core is not installed: .ci/run installs libibverbs1 ibverbs-providers ibverbs-utils")
        pytest.skip("needs Debian's libibverbs1, ibverbs-providers and ibverbs-utils")
    base = tmp_path_factory.mktemp("infiniband")
    sysfs = fake_sysfs(str(base / "sysfs"))
    probe = subprocess.run(["sh", NAMESPACE, sysfs, "ibv_devices"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0 or "mlx5_0" not in probe.stdout:
        pytest.skip(f"no private user and mount namespace with a fake adapter here: {probe.stderr.strip()}")
    (base / "home").mkdir()
    repo = Repo(base / "repo", base / "home")
    pulled = repo("-q", "pull", debian_image.ref)
    assert pulled.returncode == 0, pulled.stderr
    return repo, debian_image.ref, sysfs


def _container(setting, name, mode, *, own_rdma_core):
    repo, ref, _ = setting
    created = repo("create", f"--name={name}", ref)
    assert created.returncode == 0, created.stderr
    setup = repo("setup", f"--execmode={mode}", name)
    if setup.returncode != 0:
        if mode in os.environ.get("UDOCKER_TEST_REQUIRE_MODES", "").split(","):
            pytest.fail(setup.stderr)
        pytest.skip(f"{mode} cannot run here: {setup.stderr.strip()}")
    rootfs = os.path.join(repo.path, "containers", created.stdout.strip().splitlines()[-1], "rootfs")
    assert os.path.isdir(rootfs), created.stdout
    shutil.copy2("/usr/bin/ibv_devices", os.path.join(rootfs, "usr", "local", "bin", "ibv_devices"))
    if own_rdma_core:  # the image's own rdma-core (a copy of the host's, links kept as they are)
        names = ["libibverbs.so", "libnl-3.so", "libnl-route-3.so", "libmlx5.so", "libmlx4.so", "libefa.so",
                 "libmana.so"]
        for path in [p for n in names for p in glob.glob(f"{LIB64}/{n}*")] + [f"{LIB64}/libibverbs",
                                                                              "/etc/libibverbs.d"]:
            _copy(path, rootfs + path)
    return name


def _copy(source, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(source):
        if not os.path.lexists(target):
            os.symlink(os.readlink(source), target)
    elif os.path.isdir(source):
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def _run(setting, name, *command):
    repo, _, sysfs = setting
    argv = ["sh", NAMESPACE, sysfs, sys.executable, "-m", "udocker", "--repo", repo.path,
            "run", "-e", "IBV_SHOW_WARNINGS=1", "-e", "LD_DEBUG=libs", name, *command]
    return subprocess.run(argv, cwd=TOP, env=repo.env, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("mode", MODES)
def test_host_providers_load_in_an_image_without_rdma_core(setting, mode):
    name = _container(setting, f"ib-host-{mode}", mode, own_rdma_core=False)
    result = _run(setting, name, "ibv_devices")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mlx5_0" in result.stdout, result.stderr[-3000:]
    assert not any(w in result.stderr for w in WARNINGS), result.stderr[-3000:]
    assert "/.udocker/infiniband/lib64/libmlx5-rdmav34.so" in result.stderr  # LD_DEBUG: the injected provider


@pytest.mark.parametrize("mode", MODES)
def test_an_image_with_its_own_rdma_core_keeps_it(setting, mode):
    name = _container(setting, f"ib-own-{mode}", mode, own_rdma_core=True)
    result = _run(setting, name, "ibv_devices")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mlx5_0" in result.stdout, result.stderr[-3000:]
    assert not any(w in result.stderr for w in WARNINGS), result.stderr[-3000:]
    assert "/.udocker/infiniband" not in result.stderr, result.stderr[-3000:]
    assert f"{LIB64}/libibverbs/libmlx5-rdmav34.so" in result.stderr  # the image's provider, by its link
