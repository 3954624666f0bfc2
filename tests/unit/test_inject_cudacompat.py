"""CUDA forward compatibility and NVIDIA_REQUIRE_*, without a GPU: fake host trees (tests/fixtures/hosttree.py)
stand for the node, a fake rootfs with a compat directory for the image, and a libcuda stub built with gcc for
cuDriverGetVersion."""

import os
import shutil
import subprocess

import pytest

from tests.fixtures import hosttree
from tests.fixtures.hosttree import LIB64, OLD_VERSION, VERSION
from udocker.errors import UdockerError
from udocker.inject import cudacompat
from udocker.runbuild import build_spec
from udocker.runbuild import inject as run_inject
from udocker.runspec import RunRequest

LIBDIR = "/.udocker/nvidia/lib64"
COMPAT = "/usr/local/cuda/compat"
NEWER = "560.35.03"  # a compat package newer than VERSION's branch
REQUIRE_12_2 = ("cuda>=12.2 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471 "
                "brand=nvidia,driver>=535,driver<536")


# -- the requirement language (pure) ---------------------------------------------------------------------
@pytest.mark.parametrize("left, op, right, expected", [
    ("12.2", ">=", "12.2", True), ("12.2.0", "=", "12.2", True), ("12.10", ">", "12.9", True),
    ("12.1", ">=", "12.2", False), ("535.104.05", "<", "536", True), ("535.104.05", ">=", "535", True),
    ("470.82.01", "<", "471", True), ("12.2", "!=", "12.2.0", False), ("11", "<=", "11.0.1", True),
])
def test_version_comparison(left, op, right, expected):
    assert cudacompat.compare_versions(left, op, right) is expected


@pytest.mark.parametrize("props, satisfied", [
    ({"cuda": "12.4", "driver": "550.54.15"}, True),  # the first group alone
    ({"cuda": "12.0", "driver": "525.60.13"}, False),  # no group holds
    ({"cuda": "11.4", "driver": "470.82.01"}, True),  # an older branch the image names (brand unknown here)
    ({"cuda": "11.4", "driver": "470.82.01", "brand": "geforce"}, False),  # ... but not for this brand
    ({"cuda": "11.4", "driver": "470.82.01", "brand": "Tesla"}, True),  # brands compare without case
    ({"cuda": "12.0", "driver": "535.54.03", "brand": "nvidia"}, True),
    ({"cuda": None, "driver": "525.60.13"}, True),  # an unknown property never refuses
])
def test_or_of_and_groups(props, satisfied):
    assert (cudacompat.unsatisfied([("NVIDIA_REQUIRE_CUDA", REQUIRE_12_2)], props) is None) is satisfied


def test_every_requirement_must_hold_and_the_failure_names_the_first_group():
    reqs = [("NVIDIA_REQUIRE_CUDA", "cuda>=11.0"), ("NVIDIA_REQUIRE_ARCH", "arch>=8.0 driver>=999")]
    assert cudacompat.unsatisfied(reqs, {"cuda": "12.2", "driver": "535.1", "arch": "9.0"}) is None
    assert cudacompat.unsatisfied(reqs, {"cuda": "12.2", "driver": "535.1", "arch": "7.5"}) == (
        "NVIDIA_REQUIRE_ARCH", "arch>=8.0")
    assert cudacompat.unsatisfied([("X", REQUIRE_12_2)], {"cuda": "12.0", "driver": "525.1"}) == ("X", "cuda>=12.2")


@pytest.mark.parametrize("text", ["cuda", "cuda>=", "cuda=>12.2", "driver>=abc", "cuda~12"])
def test_invalid_constraints_are_errors(text):
    with pytest.raises(UdockerError, match="invalid") as info:
        cudacompat.unsatisfied([("NVIDIA_REQUIRE_CUDA", text)], {"cuda": "12.2"})
    assert "NVIDIA_DISABLE_REQUIRE" in info.value.hint


def test_unknown_properties_are_ignored():
    assert cudacompat.unsatisfied([("NVIDIA_REQUIRE_X", "colour=blue")], {"cuda": "12.2"}) is None


@pytest.mark.parametrize("env, expected", [
    ({}, []),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.2", "PATH": "/bin"}, [("NVIDIA_REQUIRE_CUDA", "cuda>=12.2")]),
    ({"NVIDIA_REQUIRE_JETPACK": "csv-mounts=all"}, []),  # not a requirement (the toolkit skips it too)
    ({"CUDA_VERSION": "11.8.0"}, [("CUDA_VERSION", "cuda>=11.8")]),  # legacy image: no NVIDIA_REQUIRE_CUDA
    ({"CUDA_VERSION": "11.8.0", "NVIDIA_REQUIRE_CUDA": "cuda>=11.7"}, [("NVIDIA_REQUIRE_CUDA", "cuda>=11.7")]),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.2", "NVIDIA_DISABLE_REQUIRE": "1"}, []),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.2", "NVIDIA_DISABLE_REQUIRE": "true"}, []),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.2", "NVIDIA_DISABLE_REQUIRE": "false"}, [("NVIDIA_REQUIRE_CUDA",
                                                                               "cuda>=12.2")]),
])
def test_requirements_of_an_environment(env, expected):
    assert cudacompat.requirements(env) == expected


# -- which compat library wins (pure) --------------------------------------------------------------------
@pytest.mark.parametrize("compat, host, used", [
    (NEWER, VERSION, True),  # 560 > 550: forward compatibility
    (VERSION, OLD_VERSION, True),
    (OLD_VERSION, VERSION, False),  # the host is newer: the image's compat libcuda would fail (error 35 path)
    (VERSION, VERSION, False),
    ("550.90.07", VERSION, False),  # same branch: the kernel module would refuse a newer libcuda of its branch
    (NEWER, None, False),  # host driver unknown: the host's driver is what is injected
])
def test_compat_used_only_when_its_branch_is_newer(compat, host, used):
    assert cudacompat.use_compat(compat, host) is used


def test_compat_version_from_names():
    assert cudacompat.compat_version(["libcuda.so", "libcuda.so.1", f"libcuda.so.{NEWER}", "libnvidia-nvvm.so.4"],
                                     link=f"libcuda.so.{NEWER}") == NEWER
    assert cudacompat.compat_version([f"libcuda.so.{OLD_VERSION}", f"libcuda.so.{NEWER}"], link=None) == NEWER
    assert cudacompat.compat_version(["libcuda.so", "libcudart.so.12"], link=None) is None


@pytest.mark.parametrize("entries, chosen, expected", [
    (["/opt/app/lib", COMPAT, LIBDIR], None, ["/opt/app/lib", LIBDIR]),
    (["/opt/app/lib", LIBDIR], COMPAT, [COMPAT, "/opt/app/lib", LIBDIR]),
    (["/opt/app/lib", COMPAT, LIBDIR], COMPAT, [COMPAT, "/opt/app/lib", LIBDIR]),
])
def test_library_path(entries, chosen, expected):
    assert cudacompat.library_path(entries, [COMPAT], chosen) == expected


def test_cuda_version_text():
    assert cudacompat.cuda_text(12020) == "12.2" and cudacompat.cuda_text(11040) == "11.4"
    assert cudacompat.cuda_text(12100) == "12.10" and cudacompat.cuda_text(0) is None


# -- on a fake node and image ----------------------------------------------------------------------------
class _Container:
    def __init__(self, rootfs, record):
        self.rootfs, self.dir, self.record, self.id = rootfs, os.path.dirname(rootfs), record, "c1"


def image(root, *, env=(), compat=None, compat_dir="/usr/local/cuda-12.6/compat"):
    """A CUDA-like rootfs: /bin/sh, and with `compat` a cuda-compat package of that driver version in
    compat_dir, reached through the /usr/local/cuda -> cuda-X.Y link as NVIDIA's images have it."""
    rootfs = str(root)
    hosttree.write(rootfs, "/bin/sh", "#!/bin/sh\n", 0o755)
    if compat:
        hosttree.library(rootfs, compat_dir, "libcuda.so", compat)
        hosttree.library(rootfs, compat_dir, "libnvidia-ptxjitcompiler.so", compat)
        hosttree.link(rootfs, "/usr/local/cuda", os.path.basename(os.path.dirname(compat_dir)))
    return _Container(rootfs, {"config": {"Cmd": ["sh"], "Env": list(env)}})


def run_spec(container, host, *, env=(), environ=None):
    request = RunRequest(nvidia=True, env=list(env))
    spec = build_spec(container, request, environ or {})
    settings = {"nvidia": "auto", "infiniband": "off", "host_mpi": "off"}
    run_inject(spec, settings, request, container, environ or {}, root=host)
    return spec


def ld_path(spec):
    return spec.env.get("LD_LIBRARY_PATH", "").split(":")


def test_older_host_driver_uses_the_images_compat(tmp_path):
    host = hosttree.nvidia_host(tmp_path / "host", version=OLD_VERSION, stale=False)
    spec = run_spec(image(tmp_path / "rootfs", compat=VERSION), host)
    assert ld_path(spec) == [COMPAT, LIBDIR]


def test_newer_host_driver_drops_the_images_compat(tmp_path):
    """The image's own LD_LIBRARY_PATH names its compat directory (as NGC images do): the host is newer,
    so it must not be searched at all, its libcuda and its ptxjitcompiler alike."""
    host = hosttree.nvidia_host(tmp_path / "host")
    container = image(tmp_path / "rootfs", compat=OLD_VERSION, env=[f"LD_LIBRARY_PATH={COMPAT}:/opt/app/lib"])
    assert ld_path(run_spec(container, host)) == ["/opt/app/lib", LIBDIR]


def test_compat_directory_named_only_by_ld_library_path(tmp_path):
    host = hosttree.nvidia_host(tmp_path / "host", version=OLD_VERSION, stale=False)
    container = image(tmp_path / "rootfs", compat=VERSION, compat_dir="/opt/compat/lib",
                      env=["LD_LIBRARY_PATH=/opt/app/lib:/opt/compat/lib"])
    assert ld_path(run_spec(container, host)) == ["/opt/compat/lib", "/opt/app/lib", LIBDIR]


def test_image_without_compat_is_left_alone(tmp_path):
    host = hosttree.nvidia_host(tmp_path / "host")
    spec = run_spec(image(tmp_path / "rootfs", env=["LD_LIBRARY_PATH=/opt/app/lib"]), host)
    assert ld_path(spec) == ["/opt/app/lib", LIBDIR]


def test_no_check_and_no_compat_without_the_driver(tmp_path):
    container = image(tmp_path / "rootfs", compat=NEWER, env=["NVIDIA_REQUIRE_CUDA=cuda>=99.0"])
    request = RunRequest(env=[])
    spec = build_spec(container, request, {})
    run_inject(spec, {"nvidia": "auto", "infiniband": "off", "host_mpi": "off"}, request, container, {},
               root=str(tmp_path / "no-gpu"))
    assert "LD_LIBRARY_PATH" not in spec.env


# -- cuDriverGetVersion of the host's libcuda (a gcc-built stub) ----------------------------------------
GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(not GCC, reason="no gcc")


def stub_libcuda(host, version, cuda):
    """Replace the host tree's libcuda.so.<version> by a real shared object exporting cuDriverGetVersion."""
    source = os.path.join(host, "stub.c")
    with open(source, "w", encoding="utf-8") as stream:
        stream.write("int cuDriverGetVersion(int *v) { if (!v) return 1; *v = " + str(cuda) + "; return 0; }\n")
    target = host + f"{LIB64}/libcuda.so.{version}"
    os.unlink(target)
    subprocess.run([GCC, "-shared", "-fPIC", "-o", target, source], check=True)
    return host + f"{LIB64}/libcuda.so.1"


@needs_gcc
def test_host_cuda_version_from_cuDriverGetVersion(tmp_path):
    host = hosttree.nvidia_host(tmp_path / "host")
    assert cudacompat.host_cuda_version(stub_libcuda(host, VERSION, 12040)) == "12.4"
    assert cudacompat.host_cuda_version(host + f"{LIB64}/libnvidia-ml.so.1") is None  # not loadable
    assert cudacompat.host_cuda_version(str(tmp_path / "absent")) is None


@needs_gcc
def test_too_new_image_is_refused_with_one_line(tmp_path):
    host = hosttree.nvidia_host(tmp_path / "host")
    stub_libcuda(host, VERSION, 12040)
    container = image(tmp_path / "rootfs", env=[f"NVIDIA_REQUIRE_CUDA={REQUIRE_12_2.replace('12.2', '12.6')}"])
    with pytest.raises(UdockerError) as info:
        run_spec(container, host)
    error = info.value
    assert "\n" not in error.message and "cuda>=12.6" in error.message
    assert f"driver {VERSION}" in error.message and "CUDA 12.4" in error.message
    assert "NVIDIA_DISABLE_REQUIRE=1" in error.hint and "newer" in error.hint
    assert error.exit_code == 1  # `udocker run` answers 125 for its own failures, as docker run does


@needs_gcc
@pytest.mark.parametrize("env, environ", [([], {}), (["NVIDIA_DISABLE_REQUIRE=1"], {}),
                                          ([], {"NVIDIA_DISABLE_REQUIRE": "true"})])
def test_satisfied_or_disabled_requirement_runs(tmp_path, env, environ):
    host = hosttree.nvidia_host(tmp_path / "host")
    stub_libcuda(host, VERSION, 12040)
    require = "12.2" if not env and not environ else "12.6"
    container = image(tmp_path / "rootfs", env=[f"NVIDIA_REQUIRE_CUDA=cuda>={require}"])
    assert ld_path(run_spec(container, host, env=env, environ=environ)) == [LIBDIR]


@needs_gcc
def test_compat_new_enough_makes_the_image_acceptable(tmp_path):
    """Host 535 (CUDA 12.2), image of CUDA 12.6 carrying cuda-compat 550: compat is used, and the CUDA
    version the program will see is the compat package's, taken from its cuda-X.Y directory."""
    host = hosttree.nvidia_host(tmp_path / "host", version=OLD_VERSION, stale=False)
    stub_libcuda(host, OLD_VERSION, 12020)
    container = image(tmp_path / "rootfs", compat=VERSION, env=["NVIDIA_REQUIRE_CUDA=cuda>=12.6"])
    assert ld_path(run_spec(container, host)) == [COMPAT, LIBDIR]
    too_new = image(tmp_path / "rootfs2", compat=VERSION, env=["NVIDIA_REQUIRE_CUDA=cuda>=12.8"])
    with pytest.raises(UdockerError, match=r"cuda>=12\.8.*CUDA 12\.6 \(cuda-compat"):
        run_spec(too_new, host)


@needs_gcc
def test_compat_older_than_the_host_does_not_count(tmp_path):
    host = hosttree.nvidia_host(tmp_path / "host")
    stub_libcuda(host, VERSION, 12040)
    container = image(tmp_path / "rootfs", compat=OLD_VERSION, compat_dir="/usr/local/cuda-12.6/compat",
                      env=["NVIDIA_REQUIRE_CUDA=cuda>=12.6"])
    with pytest.raises(UdockerError, match="CUDA 12.4"):
        run_spec(container, host)
