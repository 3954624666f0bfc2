"""Which GPUs and MIG devices a run gets (udocker/inject/gpus.py), on fake host trees (tests/fixtures/hosttree.py):
Slurm's per-task binding, the container's numbering per mode, MIG, PCI bus ids, void, and the smaller
driver pieces (nscq, tileiras, fabric manager, the libcuda.so / libGLX_indirect links, the MPS pipe)."""

import os

import pytest

from tests.fixtures import hosttree
from tests.fixtures.hosttree import LIB64, UUIDS, VERSION
from udocker.errors import UdockerError
from udocker.inject import nvidia
from udocker.runbuild import build_spec
from udocker.runbuild import inject as run_inject
from udocker.runspec import RunRequest

LIBDIR = "/.udocker/nvidia/lib64"
BASE_CAPS = []  # mig/config and mig/monitor (nvidia-cap1, 2) are root's: never given, as under the toolkit


def plan_for(root, request=None, image_env=None, **kwargs):
    return nvidia.plan(root, request=request or {}, image_env=image_env or {}, **kwargs)


def devices(plan, root):
    return sorted(d[len(root):] for d in plan.devices)


def gpu_nodes(plan):
    return sorted(os.path.basename(d) for d in plan.devices if os.path.basename(d)[6:].isdigit())


def cap_nodes(plan):
    return sorted(os.path.basename(d) for d in plan.devices if "/nvidia-caps/" in d)


def env(plan):
    """What the container is told, whatever it set itself (env_override wins over env)."""
    return dict(plan.env, **plan.env_override)


@pytest.fixture
def host4(tmp_path):
    return hosttree.nvidia_host(tmp_path / "host", gpus=4)


# -- item 2: Slurm's per-task GPUs ---------------------------------------------------------------------
@pytest.mark.parametrize("slurm, chosen", [
    # the step's GPUs and, per task, CUDA_VISIBLE_DEVICES narrowing them (srun --gpus-per-task, or a
    # wrapper exporting CUDA_VISIBLE_DEVICES=$SLURM_LOCALID): each task gets its own, not all the step's
    ({"SLURM_STEP_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "1"}, ["nvidia1"]),
    ({"SLURM_STEP_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "0"}, ["nvidia0"]),
    # a device cgroup makes Slurm's CUDA_VISIBLE_DEVICES relative to the step: 0 is the step's first GPU
    ({"SLURM_STEP_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0"}, ["nvidia2"]),
    ({"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "1"}, ["nvidia3"]),
    # Slurm >= 21.08 sets, per task, SLURM_STEP_GPUS to the task's own global ids
    ({"SLURM_STEP_GPUS": "3", "CUDA_VISIBLE_DEVICES": "1"}, ["nvidia3"]),
    ({"SLURM_STEP_GPUS": "1,3", "CUDA_VISIBLE_DEVICES": "0,1"}, ["nvidia1", "nvidia3"]),
    # global ids in CUDA_VISIBLE_DEVICES (no device cgroup)
    ({"SLURM_STEP_GPUS": "1,2,3", "CUDA_VISIBLE_DEVICES": "3"}, ["nvidia3"]),
    ({"SLURM_STEP_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "NoDevFiles"}, ["nvidia2", "nvidia3"]),
])
def test_each_slurm_task_gets_the_gpus_bound_to_it(host4, slurm, chosen):
    assert gpu_nodes(plan_for(host4, slurm)) == chosen


@pytest.mark.parametrize("constrained, chosen", [(True, ["nvidia2"]), (False, ["nvidia1"])])
def test_ambiguous_task_index_follows_slurms_cgroup_conf(host4, constrained, chosen):
    """Step GPUs 1,2 and a task's CUDA_VISIBLE_DEVICES=1: the step's second GPU where Slurm constrains
    devices (its indexes are then local), else global GPU 1 - as Slurm's own choice (cgroup.conf)."""
    hosttree.write(host4, "/etc/slurm/slurm.conf", "TaskPlugin=task/affinity,task/cgroup\n")
    setting = "yes" if constrained else "no"
    hosttree.write(host4, "/etc/slurm/cgroup.conf", f"ConstrainCores=yes\nConstrainDevices={setting}\n")
    assert gpu_nodes(plan_for(host4, {"SLURM_STEP_GPUS": "1,2", "CUDA_VISIBLE_DEVICES": "1"})) == chosen


@pytest.mark.parametrize("isolated, cuda", [(False, "1"), (True, "0")])
def test_the_container_numbers_gpus_as_its_driver_will(host, isolated, cuda):
    """P and F modes show the container every /dev/nvidia*: GPU 1 stays index 1; R modes only the chosen
    node, which the driver inside calls 0."""
    plan = plan_for(host, {"CUDA_VISIBLE_DEVICES": "1"}, isolated=isolated)
    assert gpu_nodes(plan) == ["nvidia1"]
    assert env(plan)["CUDA_VISIBLE_DEVICES"] == cuda
    assert env(plan)["NVIDIA_VISIBLE_DEVICES"] == UUIDS[1]
    assert plan.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # the driver's order is then the bus order used here


@pytest.mark.parametrize("request_env, isolated, cuda", [
    ({"CUDA_VISIBLE_DEVICES": "3,1"}, True, "1,0"),
    ({"CUDA_VISIBLE_DEVICES": "3,1"}, False, "3,1"),
    ({"SLURM_STEP_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "1"}, True, "0"),
    ({"SLURM_STEP_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "1"}, False, "3"),
])
def test_renumbering_keeps_the_requested_order(host4, request_env, isolated, cuda):
    assert env(plan_for(host4, request_env, isolated=isolated))["CUDA_VISIBLE_DEVICES"] == cuda


@pytest.fixture
def host(tmp_path):
    return hosttree.nvidia_host(tmp_path / "host")


def _spec(tmp_path, host, mode, options):
    rootfs = tmp_path / "c" / "rootfs"
    hosttree.write(rootfs, "/bin/sh", "#!/bin/sh\n", 0o755)

    class Container:
        dir, record, id = str(tmp_path / "c"), {"config": {"Cmd": ["sh"]}}, "c1"

    Container.rootfs = str(rootfs)
    opts = RunRequest(**options)
    spec = build_spec(Container, opts, {})
    run_inject(spec, {"nvidia": "auto", "infiniband": "off", "host_mpi": "off"}, opts, Container, {}, root=host,
               mode=mode)
    return spec


@pytest.mark.parametrize("mode, cuda", [("R1", "0"), ("P1", "1"), ("F1", "1")])
def test_dash_e_cuda_visible_devices_is_renumbered_in_r_modes(tmp_path, host, mode, cuda):
    """-e CUDA_VISIBLE_DEVICES=1 binds only /dev/nvidia1 in R1, where it is index 0: the value the
    container gets is the one its driver understands, not the one typed."""
    spec = _spec(tmp_path, host, mode, {"env": ["CUDA_VISIBLE_DEVICES=1"]})
    assert host + "/dev/nvidia1" in spec.devices and host + "/dev/nvidia0" not in spec.devices
    assert spec.env["CUDA_VISIBLE_DEVICES"] == cuda


# -- item 5: MIG ---------------------------------------------------------------------------------------
@pytest.fixture
def mig(tmp_path):
    return hosttree.mig_host(tmp_path / "mig")


def _caps(*instances):
    return sorted(f"nvidia-cap{m}" for i in instances for m in hosttree.mig_minors(*i))


def test_mig_index_form_selects_one_instance(mig):
    plan = plan_for(mig, {"NVIDIA_VISIBLE_DEVICES": "0:1"}, isolated=True)
    assert gpu_nodes(plan) == ["nvidia0"]
    assert cap_nodes(plan) == sorted(BASE_CAPS + _caps((0, 2, 0)))  # not the other instance's caps
    assert env(plan)["NVIDIA_VISIBLE_DEVICES"] == "0:1"
    assert env(plan)["CUDA_VISIBLE_DEVICES"] == f"MIG-{UUIDS[0]}/2/0"
    assert plan.info["gpus"][0]["uuid"] == UUIDS[0]


def test_mig_uuid_without_nvml_gives_the_mig_gpus_and_names_the_instance(mig):
    """/proc does not map MIG UUIDs to instances (NVML does, on a real node): the run gets the MIG-enabled
    GPUs with their instances and CUDA_VISIBLE_DEVICES names the instance, which the driver honours."""
    uuid = "MIG-1b2c3d4e-0000-5555-aaaa-000000000001"
    plan = plan_for(mig, {"NVIDIA_VISIBLE_DEVICES": uuid})
    assert gpu_nodes(plan) == ["nvidia0"]
    assert set(_caps((0, 1, 0), (0, 2, 0))) <= set(cap_nodes(plan))
    assert env(plan)["CUDA_VISIBLE_DEVICES"] == uuid and env(plan)["NVIDIA_VISIBLE_DEVICES"] == uuid


def test_mig_uuid_resolved_through_nvml(mig, monkeypatch):
    uuid = "MIG-1b2c3d4e-0000-5555-aaaa-000000000002"
    monkeypatch.setattr("udocker.inject.gpus.nvml_migs", lambda root: {uuid: (UUIDS[0], 2, 0)})
    plan = plan_for(mig, {"CUDA_VISIBLE_DEVICES": uuid}, isolated=True)
    assert gpu_nodes(plan) == ["nvidia0"] and cap_nodes(plan) == sorted(BASE_CAPS + _caps((0, 2, 0)))
    assert env(plan)["CUDA_VISIBLE_DEVICES"] == uuid


@pytest.mark.parametrize("slurm, gpus, caps", [
    # Slurm (AutoDetect=nvml) counts MIG instances as GPUs: gres 0, 1 are GPU 0's instances, 2 is GPU 1
    ({"SLURM_STEP_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0"}, ["nvidia0"], _caps((0, 2, 0))),
    ({"SLURM_STEP_GPUS": "2", "CUDA_VISIBLE_DEVICES": "0"}, ["nvidia1"], []),
    # and with UniqueId the task's CUDA_VISIBLE_DEVICES is the MIG UUID, which wins over the gres index
    ({"SLURM_STEP_GPUS": "1", "CUDA_VISIBLE_DEVICES": "MIG-1b2c3d4e-0000-5555-aaaa-000000000002"},
     ["nvidia0"], _caps((0, 2, 0))),
])
def test_slurm_mig_gres_index(mig, monkeypatch, slurm, gpus, caps):
    monkeypatch.setattr("udocker.inject.gpus.nvml_migs",
                        lambda root: {"MIG-1b2c3d4e-0000-5555-aaaa-000000000002": (UUIDS[0], 2, 0)})
    plan = plan_for(mig, slurm, isolated=True)
    assert gpu_nodes(plan) == gpus
    assert cap_nodes(plan) == sorted(BASE_CAPS + caps)


def test_whole_gpus_on_a_mig_node_keep_every_instance_of_theirs(mig):
    assert set(_caps((0, 1, 0), (0, 2, 0))) <= set(cap_nodes(plan_for(mig)))
    assert cap_nodes(plan_for(mig, {"NVIDIA_VISIBLE_DEVICES": "1"})) == BASE_CAPS


@pytest.mark.parametrize("token", ["0:2", "1:0", "MIG-ffff"])
def test_unknown_mig_device_is_an_error(host, mig, token):
    with pytest.raises(UdockerError, match="MIG"):
        plan_for(mig if token != "MIG-ffff" else host, {"NVIDIA_VISIBLE_DEVICES": token})


# -- item 10: the smaller ones ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0000:02:00.0", "00000000:02:00.0", "2:00.0", "0000:02:00.0".upper()])
def test_pci_bus_ids_name_gpus(host, value):
    plan = plan_for(host, {"NVIDIA_VISIBLE_DEVICES": value})
    assert gpu_nodes(plan) == ["nvidia1"] and env(plan)["NVIDIA_VISIBLE_DEVICES"] == UUIDS[1]


def test_void_injects_nothing_and_none_hides_every_gpu(host):
    """The toolkit's meanings: void - as if the container had no GPU support at all; none - the driver
    without GPUs, which in P/F modes (every /dev/nvidia* visible) needs an empty CUDA_VISIBLE_DEVICES."""
    assert plan_for(host, {"NVIDIA_VISIBLE_DEVICES": "void"}).empty()
    assert plan_for(host, {}, {"NVIDIA_VISIBLE_DEVICES": "void"}).empty()
    plan = plan_for(host, {"NVIDIA_VISIBLE_DEVICES": "none"})
    assert gpu_nodes(plan) == [] and env(plan)["CUDA_VISIBLE_DEVICES"] == ""
    assert f"{LIBDIR}/libcuda.so.1" in {m.target for m in plan.binds}


def test_void_with_dash_dash_nvidia_still_gives_the_driver(host):
    plan = plan_for(host, {"NVIDIA_VISIBLE_DEVICES": "void"}, required=True)
    assert gpu_nodes(plan) == [] and f"{LIBDIR}/libcuda.so.1" in {m.target for m in plan.binds}


def test_nscq_tileiras_and_the_fabric_manager(host):
    hosttree.library(host, LIB64, "libnvidia-nscq.so", VERSION, soname_suffix="2")
    hosttree.library(host, LIB64, "libnvidia-tileiras.so", VERSION)
    hosttree.write(host, "/usr/bin/nv-fabricmanager", "#!/bin/sh\n", 0o755)
    hosttree.write(host, "/var/run/nvidia-fabricmanager/fm_sm_ipc.socket")
    binds = {m.target: m.source for m in plan_for(host).binds}
    assert {f"{LIBDIR}/libnvidia-nscq.so.2", f"{LIBDIR}/libnvidia-tileiras.so.1"} <= set(binds)
    assert binds["/.udocker/nvidia/bin/nv-fabricmanager"] == host + "/usr/bin/nv-fabricmanager"
    assert "/var/run/nvidia-fabricmanager/fm_sm_ipc.socket" in binds


def test_libcuda_so_and_libglx_indirect_links(tmp_path):
    """Debian's driver packages have no libcuda.so (programs dlopen it by that name: Triton, Numba) and
    GLVND's indirect GLX needs libGLX_indirect.so.0: both are given, as the driver's own files."""
    host = hosttree.nvidia_host(tmp_path / "host")
    os.unlink(host + f"{LIB64}/libcuda.so")
    binds = {m.target: m.source for m in plan_for(host, {"NVIDIA_DRIVER_CAPABILITIES": "all"}).binds}
    assert binds[f"{LIBDIR}/libcuda.so"] == host + f"{LIB64}/libcuda.so.1"
    assert binds[f"{LIBDIR}/libGLX_indirect.so.0"] == host + f"{LIB64}/libGLX_nvidia.so.0"
    compute = {m.target for m in plan_for(host).binds}
    assert f"{LIBDIR}/libcuda.so" in compute and f"{LIBDIR}/libGLX_indirect.so.0" not in compute


def test_mps_pipe_directory_of_the_job(host):
    hosttree.write(host, "/scratch/job42/mps/control")
    plan = plan_for(host, {"CUDA_MPS_PIPE_DIRECTORY": "/scratch/job42/mps"})
    assert {m.target: m.source for m in plan.binds}["/scratch/job42/mps"] == host + "/scratch/job42/mps"
    assert plan.env["CUDA_MPS_PIPE_DIRECTORY"] == "/scratch/job42/mps"
    assert "CUDA_MPS_PIPE_DIRECTORY" not in plan_for(host, {"CUDA_MPS_PIPE_DIRECTORY": "/absent"}).env
