"""MIG on a fake GPU node with MIG (tests/support/fake-gpu-node.sh --mig, layouts debian-mig and rhel-mig: GPU
1 split into two MIG devices, GPU instances 1 and 2; GPU 0 whole), in P1, R1, R2, F1 as the unprivileged user
(issue 10 item 5): each way of naming a MIG device - its UUID in NVIDIA_VISIBLE_DEVICES or
CUDA_VISIBLE_DEVICES, the toolkit's <gpu>:<mig> index, a Slurm gres index (Slurm counts each MIG device of a
MIG-enabled GPU in place of the GPU) - gives the program that MIG device and no other: the driver API sees one
device, the instance's UUID; CUDA_VISIBLE_DEVICES names it; in R1 only the parent GPU's node and the instance's
two nvidia-caps nodes exist (R2 as R1; P and F modes see the host's /dev). A MIG device that does not exist
is a one-line error."""

import pytest

from tests.gpu.conftest import make_container
from tests.support import fake_nvidia

MODES = ["P1", "R1", "R2", "F1"]
FIRST, SECOND = (1, 1, 0), (1, 2, 0)  # (GPU minor, GPU instance, compute instance)
PROBE = ("cudacount -v; echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES; "
         "echo caps: $(ls /dev/nvidia-caps 2>/dev/null); echo gpus: $(ls /dev | grep -E '^nvidia[0-9]+$')")


@pytest.fixture(scope="module", params=MODES)
def container(request, gpu_repo):
    return gpu_repo, make_container(gpu_repo, f"m-{request.param}", request.param), request.param


def _caps(instance):
    minor, gi, ci = instance
    return [f"nvidia-cap{fake_nvidia.cap_minor(minor, gi)}", f"nvidia-cap{fake_nvidia.cap_minor(minor, gi, ci)}"]


def _probe(repo, name, *args, env=None):
    result = repo("run", "--nvidia", *args, name, "sh", "-c", PROBE, env=env)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout.splitlines()


def _check(lines, mode, instance):
    """The program got MIG device `instance`: one device with its UUID, named by CUDA_VISIBLE_DEVICES; in R1
    only its parent's node and its two caps nodes."""
    uuid = fake_nvidia.mig_uuid(*instance)
    assert lines[:3] == ["1", f"driver {fake_nvidia.CUDA_VERSION}", uuid], lines
    assert lines[3] == f"CUDA_VISIBLE_DEVICES={uuid}", lines
    if mode.startswith("R"):
        assert lines[4:] == ["caps: " + " ".join(_caps(instance)), "gpus: nvidia1"], lines
    else:  # P and F modes see the host's /dev whole
        assert lines[4].split() == ["caps:"] + sorted(
            ["nvidia-cap1", "nvidia-cap2"] + _caps(FIRST) + _caps(SECOND)), lines
        assert lines[5] == "gpus: nvidia0 nvidia1", lines


def test_the_node_shows_its_mig_devices(container):
    repo, name, _ = container
    result = repo("run", "--nvidia", name, "nvidia-smi", "-L")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert [line.split("(UUID: ")[1].rstrip(")") for line in result.stdout.splitlines()] == [
        fake_nvidia.uuid(0), fake_nvidia.uuid(1), fake_nvidia.mig_uuid(*FIRST), fake_nvidia.mig_uuid(*SECOND)]


@pytest.mark.parametrize("variable", ["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"])
def test_a_mig_uuid_selects_that_device(container, variable):
    repo, name, mode = container
    _check(_probe(repo, name, "-e", f"{variable}={fake_nvidia.mig_uuid(*SECOND)}"), mode, SECOND)


@pytest.mark.parametrize("token, instance", [("1:0", FIRST), ("1:1", SECOND)])
def test_the_toolkits_index_form_selects_that_device(container, token, instance):
    repo, name, mode = container
    _check(_probe(repo, name, "-e", f"NVIDIA_VISIBLE_DEVICES={token}"), mode, instance)


def test_a_slurm_mig_gres_index_selects_that_device(container):
    """Slurm's gres list here (AutoDetect=nvml): 0 is GPU 0, 1 and 2 the MIG devices of GPU 1."""
    repo, name, mode = container
    task = {"SLURM_JOB_ID": "8", "SLURM_STEP_ID": "0", "SLURM_JOB_GPUS": "1,2", "SLURM_STEP_GPUS": "2"}
    _check(_probe(repo, name, env=task), mode, SECOND)


def test_a_whole_gpu_is_still_a_gpu(container):
    repo, name, mode = container
    lines = _probe(repo, name, "-e", "NVIDIA_VISIBLE_DEVICES=0")
    assert lines[:3] == ["1", f"driver {fake_nvidia.CUDA_VERSION}", fake_nvidia.uuid(0)], lines
    if mode.startswith("R"):
        assert lines[4:] == ["caps:", "gpus: nvidia0"], lines


@pytest.mark.parametrize("token", ["MIG-fa4e0001-0009-4000-8000-000000000000", "1:2", "0:0"])
def test_a_mig_device_that_does_not_exist_is_one_line(container, token):
    repo, name, _ = container
    result = repo("run", "--nvidia", "-e", f"NVIDIA_VISIBLE_DEVICES={token}", name, "cudacount")
    assert result.returncode != 0 and result.stdout == "", (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: NVIDIA_VISIBLE_DEVICES={token}: no such MIG device on this node", lines
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), lines
