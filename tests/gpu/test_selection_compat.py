"""On the fake GPU node, in every mode as the unprivileged user: a Slurm task gets the GPU its
CUDA_VISIBLE_DEVICES names within the step's GPUs (issue 10 item 2: SLURM_STEP_GPUS used to win and give it
all of them); an image's cuda-compat libcuda is used only when its driver branch is newer than the host's,
and NVIDIA_REQUIRE_CUDA is checked against the host's CUDA version or the compat package's (item 4).
cudacount prints the driver API's device count, cuDriverGetVersion and the devices' UUIDs."""

import os
import shutil

import pytest

from tests.gpu.conftest import make_container
from tests.support import fake_nvidia

MODES = ["P1", "P2", "R1", "R2", "R3", "F1", "F2", "F3", "F4"]
HOST_CUDA = f"driver {fake_nvidia.CUDA_VERSION}"
COMPAT = "/usr/local/cuda/compat"


@pytest.fixture(scope="module", params=MODES)
def container(request, gpu_repo):
    return gpu_repo, make_container(gpu_repo, f"s-{request.param}", request.param), request.param


def _ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout.splitlines()


def test_a_slurm_task_gets_the_gpu_bound_to_it(container):
    """srun with the step's GPUs 0,1 and the task's CUDA_VISIBLE_DEVICES=1: the task sees one GPU, GPU 1."""
    repo, name, _ = container
    task = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_GPUS": "0,1", "SLURM_JOB_GPUS": "0,1",
            "SLURM_LOCALID": "1", "SLURM_PROCID": "1", "CUDA_VISIBLE_DEVICES": "1"}
    assert _ok(repo("run", "--nvidia", name, "cudacount", "-v", env=task)) == [
        "1", HOST_CUDA, fake_nvidia.uuid(1)]


@pytest.fixture
def compat(container, tmp_path):
    """install(version, cuda): a cuda-compat libcuda in the image's /usr/local/cuda/compat (removed after)."""
    repo, name, _ = container
    directory = os.path.join(repo.rootfs(name), COMPAT.lstrip("/"))

    def install(version, cuda):
        built = fake_nvidia.build(str(tmp_path / f"compat-{version}"), version=version, cuda=cuda)
        os.makedirs(directory, exist_ok=True)
        shutil.copy(built[f"libcuda.so.{version}"], directory)
        os.symlink(f"libcuda.so.{version}", os.path.join(directory, "libcuda.so.1"))

    yield install
    shutil.rmtree(directory, ignore_errors=True)


def test_compat_of_a_newer_branch_is_used(container, compat):
    repo, name, _ = container
    compat("560.35.03", 12060)
    assert _ok(repo("run", "--nvidia", name, "cudacount", "-v"))[:2] == ["2", "driver 12060"]


def test_compat_of_an_older_branch_is_not_used(container, compat):
    repo, name, _ = container
    compat("535.104.05", 12020)
    assert _ok(repo("run", "--nvidia", name, "cudacount", "-v"))[:2] == ["2", HOST_CUDA]


def test_a_too_new_image_is_refused_with_one_line(container):
    repo, name, _ = container
    refused = repo("run", "--nvidia", "-e", "NVIDIA_REQUIRE_CUDA=cuda>=12.6", name, "cudacount")
    assert refused.returncode == 125, (refused.stdout, refused.stderr)
    lines = refused.stderr.splitlines()
    assert lines[0].startswith("error: the image requires cuda>=12.6") and "12.4" in lines[0], lines
    assert all(line.startswith(("error: ", "hint: ")) for line in lines) and refused.stdout == ""
    allowed = ("-e", "NVIDIA_REQUIRE_CUDA=cuda>=12.6", "-e", "NVIDIA_DISABLE_REQUIRE=1")
    assert _ok(repo("run", "--nvidia", *allowed, name, "cudacount"))[0] == "2"
    assert _ok(repo("run", "--nvidia", "-e", "NVIDIA_REQUIRE_CUDA=cuda>=12.2", name, "cudacount"))[0] == "2"


def test_compat_new_enough_makes_a_too_new_image_run(container, compat):
    repo, name, _ = container
    compat("560.35.03", 12060)
    ran = repo("run", "--nvidia", "-e", "NVIDIA_REQUIRE_CUDA=cuda>=12.6", name, "cudacount", "-v")
    assert _ok(ran)[:2] == ["2", "driver 12060"]
