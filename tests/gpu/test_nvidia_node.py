"""`udocker run --nvidia` on the fake GPU node (tests/support/fake-gpu-node.sh) as the unprivileged user, in
every mode (R2/R3 run PRoot inside the OCI runtime, F2-F4 a patched loader): the driver's programs as the
command (issue 10 item 1), the driver API's device count in an image (cudacount, a CUDA-like program that
dlopens libcuda.so.1), libcuda found without LD_LIBRARY_PATH (item 6; F2-F4: through it) and two concurrent
F1 runs, one without --nvidia (item 7)."""

import os
import subprocess
import time

import pytest

from tests.gpu.conftest import make_container
from tests.support import fake_nvidia

MODES = ["P1", "P2", "R1", "R2", "R3", "F1", "F2", "F3", "F4"]
GPU_LINES = [f"GPU {i}: {fake_nvidia.MODEL} (UUID: {fake_nvidia.uuid(i)})" for i in range(2)]


@pytest.fixture(scope="module", params=MODES)
def gpu_container(request, gpu_repo):
    return gpu_repo, make_container(gpu_repo, f"g-{request.param}", request.param), request.param


def _ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_nvidia_smi_is_the_command(gpu_container):
    repo, name, _ = gpu_container
    assert _ok(repo("run", "--nvidia", name, "nvidia-smi", "-L")).splitlines() == GPU_LINES


def test_the_drivers_nvidia_smi_wins_over_the_images(gpu_container):
    """An image's own nvidia-smi (a stub of a CUDA image, or one of another driver) must not run."""
    repo, name, _ = gpu_container
    stub = os.path.join(repo.rootfs(name), "usr/bin/nvidia-smi")
    with open(stub, "w") as stream:
        stream.write("#!/bin/sh\necho the nvidia-smi of the image\n")
    os.chmod(stub, 0o755)
    try:
        assert _ok(repo("run", "--nvidia", name, "nvidia-smi", "-L")).splitlines() == GPU_LINES
        assert _ok(repo("run", "--nvidia", name, "sh", "-c", "nvidia-smi -L")).splitlines() == GPU_LINES
    finally:
        os.unlink(stub)


def test_driver_api_counts_the_gpus(gpu_container):
    repo, name, _ = gpu_container
    assert _ok(repo("run", "--nvidia", name, "cudacount", "-v")).splitlines() == [
        "2", "driver 12040", fake_nvidia.uuid(0), fake_nvidia.uuid(1)]


def test_one_gpu_chosen(gpu_container):
    repo, name, mode = gpu_container
    shown = _ok(repo("run", "--nvidia", "-e", "CUDA_VISIBLE_DEVICES=1", name, "cudacount", "-v")).splitlines()
    assert shown == ["1", "driver 12040", fake_nvidia.uuid(1)]


def test_no_driver_without_nvidia(gpu_container):
    repo, name, mode = gpu_container
    if mode == "F1":
        pytest.skip("F1's loader falls back on the host's loader cache (engines/fakechroot.py)")
    result = repo("run", "--no-nvidia", name, "cudacount")
    assert result.returncode == 2 and "libcuda.so.1" in result.stderr, (result.stdout, result.stderr)


def test_libcuda_found_without_ld_library_path(gpu_container):
    """Item 6: a program started with LD_LIBRARY_PATH cleared still loads libcuda.so.1, and `ldconfig -p`
    in the container lists it, through the container's loader cache. Not in F2-F4 (docs/architecture.md,
    Injection): their patched loader reads no cache, and F2's finds no library at all without
    LD_LIBRARY_PATH; test_f_modes_find_the_driver_through_ld_library_path is what holds there."""
    repo, name, mode = gpu_container
    if mode in ("F2", "F3", "F4"):
        pytest.skip("F2-F4: the driver is found through LD_LIBRARY_PATH only (docs/architecture.md, Injection)")
    assert _ok(repo("run", "--nvidia", name, "env", "-u", "LD_LIBRARY_PATH", "cudacount")).strip() == "2"
    listed = _ok(repo("run", "--nvidia", name, "sh", "-c", "/sbin/ldconfig -p"))
    assert "libcuda.so.1 (libc6,x86-64)" in listed, listed
    assert "libc.so.6 (libc6,x86-64)" in listed, listed  # the image's own entries are kept


def test_image_cache_untouched_without_nvidia(gpu_container):
    repo, name, mode = gpu_container
    if mode in ("F3", "F4"):
        pytest.skip("F3/F4 replace ldconfig by true (FAKECHROOT_CMD_SUBST, engines/fakechroot.py)")
    listed = _ok(repo("run", "--no-nvidia", name, "sh", "-c", "/sbin/ldconfig -p"))
    assert "libc.so.6 (libc6,x86-64)" in listed, listed
    if not mode.startswith("F"):  # F1/F2's static ldconfig escapes to the host (engines/fakechroot.py)
        assert "libcuda" not in listed, listed


def test_f_modes_find_the_driver_through_ld_library_path(gpu_container):
    """F2-F4: what holds of item 6 there: the driver's directory (its host path: F modes give the loader host
    paths) is in LD_LIBRARY_PATH, and a program exec'd by another (sh -c) with it kept loads libcuda.so.1."""
    repo, name, mode = gpu_container
    if not mode.startswith("F"):
        pytest.skip("P and R modes: test_libcuda_found_without_ld_library_path")
    shown = _ok(repo("run", "--nvidia", name, "sh", "-c", 'echo "$LD_LIBRARY_PATH"; sh -c cudacount')).split()
    assert any(d.endswith("/rootfs/.udocker/nvidia/lib64") for d in shown[0].split(":")), shown
    assert shown[1] == "2", shown


def _wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_concurrent_f1_runs_keep_the_drivers_links(gpu_repo):
    """Item 7: in F1 the driver is linked into the shared container; a run without --nvidia that starts and
    ends while a GPU run is still going must leave that run's links alone, and the last run removes them."""
    name = make_container(gpu_repo, "g-F1-shared", "F1")
    rootfs = gpu_repo.rootfs(name)
    script = "touch /tmp/started; while [ ! -e /tmp/go ]; do sleep 0.1; done; nvidia-smi -L; cudacount"
    gpu_run = subprocess.Popen(gpu_repo.command("run", "--nvidia", name, "sh", "-c", script), env=gpu_repo.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    try:
        _wait_for(os.path.join(rootfs, "tmp/started"), gpu_run)
        _ok(gpu_repo("run", "--no-nvidia", name, "true"))
        assert os.path.lexists(os.path.join(rootfs, ".udocker/nvidia/bin/nvidia-smi"))
        open(os.path.join(rootfs, "tmp/go"), "w").close()
        out, err = gpu_run.communicate(timeout=120)
    finally:
        if gpu_run.poll() is None:
            gpu_run.kill()
            gpu_run.communicate()
    assert gpu_run.returncode == 0, (out, err)
    assert out.splitlines() == GPU_LINES + ["2"]
    _ok(gpu_repo("run", "--no-nvidia", name, "true"))  # the GPU run is over: its links go
    assert not os.path.lexists(os.path.join(rootfs, ".udocker/nvidia/bin/nvidia-smi"))
