"""NVIDIA injection without a GPU: fake host trees (tests/fixtures/hosttree.py) stand for the node."""

import os
import shutil
import subprocess

import pytest

from tests.fixtures import hosttree
from tests.fixtures.hosttree import LIB32, LIB64, OLD_VERSION, UUIDS, VERSION
from udocker import inject
from udocker.engines.common import DEFAULT_PATH
from udocker.errors import ConfigError, ProgramNotFound, UdockerError
from udocker.inject import libraries, nvidia
from udocker.inject.plan import InjectionPlan
from udocker.runbuild import build_spec, check_program
from udocker.runbuild import inject as run_inject
from udocker.runspec import Mount, RunRequest, RunSpec

LIBDIR = "/.udocker/nvidia/lib64"


@pytest.fixture
def host(tmp_path):
    return hosttree.nvidia_host(tmp_path / "host")


def plan_for(root, request=None, image_env=None, **kwargs):
    return nvidia.plan(root, request=request or {}, image_env=image_env or {}, **kwargs)


def targets(plan):
    return {m.target: m.source for m in plan.binds}


def names(plan, directory=LIBDIR):
    return {os.path.basename(t) for t in targets(plan) if os.path.dirname(t) == directory}


# -- the linker cache ------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["new", "old", "compat"])
def test_cache_layouts(tmp_path, layout):
    entries = [("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", 64),
               ("libcuda.so.1", "/usr/lib/i386-linux-gnu/libcuda.so.1", 32), ("libm.so.6", "/lib/libm.so.6", 64)]
    path = hosttree.write(tmp_path, "ld.so.cache", hosttree.cache_bytes(entries, layout=layout))
    assert libraries.read_cache(path) == entries


def test_cache_garbage_and_missing(tmp_path):
    assert libraries.read_cache(hosttree.write(tmp_path, "junk", b"not a cache")) == []
    assert libraries.read_cache(str(tmp_path / "absent")) == []


LDCONFIG = shutil.which("ldconfig") or shutil.which("ldconfig", path="/usr/sbin:/sbin")


@pytest.mark.skipif(not (os.path.exists("/etc/ld.so.cache") and LDCONFIG), reason="no ldconfig")
def test_cache_of_this_machine_equals_ldconfig_p():
    out = subprocess.run([LDCONFIG, "-p"], capture_output=True, text=True, check=True).stdout.splitlines()
    expected = {(line.strip().split(" (")[0], line.split("=> ")[1]) for line in out if "=>" in line}
    assert {(n, p) for n, p, _ in libraries.read_cache("/etc/ld.so.cache")} == expected


def test_ld_so_conf_includes(tmp_path):
    hosttree.write(tmp_path, "/etc/ld.so.conf", "include ld.so.conf.d/*.conf\n/opt/first # comment\n")
    hosttree.write(tmp_path, "/etc/ld.so.conf.d/b.conf", "/opt/b\n")
    hosttree.write(tmp_path, "/etc/ld.so.conf.d/a.conf", "/opt/a\ninclude /etc/more/*.conf\n")
    hosttree.write(tmp_path, "/etc/more/x.conf", "/opt/x\n")
    assert libraries.conf_dirs(str(tmp_path)) == ["/opt/a", "/opt/x", "/opt/b", "/opt/first"]


# -- what the plan binds, per capability ------------------------------------------------------------------
def test_default_capabilities_compute_and_utility(host):
    plan = plan_for(host)
    assert names(plan) == {
        "libcuda.so", "libcuda.so.1", f"libcuda.so.{VERSION}",
        "libnvidia-ml.so.1", f"libnvidia-ml.so.{VERSION}",  # never the leftover libnvidia-ml.so.535...
        "libnvidia-ptxjitcompiler.so.1", f"libnvidia-ptxjitcompiler.so.{VERSION}",
        "libnvidia-opencl.so.1", f"libnvidia-opencl.so.{VERSION}",  # split directory from ld.so.conf.d
        "libnvidia-cfg.so.1", f"libnvidia-cfg.so.{VERSION}"}  # directory known only to the linker cache
    binds = targets(plan)
    assert binds[f"{LIBDIR}/libcuda.so.1"] == host + f"{LIB64}/libcuda.so.1"
    assert binds["/.udocker/nvidia/bin/nvidia-smi"] == host + "/usr/bin/nvidia-smi"
    assert "/.udocker/nvidia/bin/nvidia-cuda-mps-control" in binds
    assert binds["/etc/OpenCL/vendors/nvidia.icd"] == host + "/etc/OpenCL/vendors/nvidia.icd"
    assert all(os.path.exists(m.source) and m.source.startswith(host) for m in plan.binds)
    assert not any("vulkan" in t or "GLX" in t or "nvcuvid" in t or "lib32" in t for t in binds)
    # not nvidia-caps/nvidia-cap1 (mig/config, root's): only the caps of the MIG devices given (inject/gpus.py)
    assert plan.devices == [host + "/dev/" + d for d in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools",
                                                         "nvidia0", "nvidia1")]
    assert plan.env_append == {"LD_LIBRARY_PATH": [LIBDIR]}
    assert plan.env_prepend == {"PATH": ["/.udocker/nvidia/bin"]}  # the driver's nvidia-smi wins (issue 10)
    assert plan.env == {"NVIDIA_DRIVER_CAPABILITIES": "utility,compute"}
    assert plan.env_override == {"NVIDIA_VISIBLE_DEVICES": ",".join(UUIDS)}  # what the container was given
    assert plan.info["driver"] == VERSION and plan.files == []


@pytest.mark.parametrize("caps, present, absent", [
    ("graphics", {f"{LIBDIR}/libGLX_nvidia.so.0", "/usr/share/vulkan/icd.d/nvidia_icd.json",
                  "/usr/share/glvnd/egl_vendor.d/10_nvidia.json"}, {f"{LIBDIR}/libcuda.so.1"}),
    ("video", {f"{LIBDIR}/libnvcuvid.so.1"}, {f"{LIBDIR}/libnvidia-ml.so.1", "/.udocker/nvidia/bin/nvidia-smi"}),
    ("utility", {f"{LIBDIR}/libnvidia-ml.so.1", "/.udocker/nvidia/bin/nvidia-smi"}, {f"{LIBDIR}/libcuda.so.1"}),
    ("compute,compat32", {f"{LIBDIR}/libcuda.so.1", "/.udocker/nvidia/lib32/libcuda.so.1"}, set()),
    ("all", {f"{LIBDIR}/libcuda.so.1", f"{LIBDIR}/libGLX_nvidia.so.0", "/.udocker/nvidia/lib32/libcuda.so.1"},
     set()),
])
def test_capabilities(host, caps, present, absent):
    plan = plan_for(host, {"NVIDIA_DRIVER_CAPABILITIES": caps})
    assert present <= set(targets(plan)) and not absent & set(targets(plan))
    assert ("/dev/nvidia-modeset" in " ".join(plan.devices)) == ("graphics" in caps or caps == "all")


def test_compat32_binds_32_bit_files_only(host):
    plan = plan_for(host, {"NVIDIA_DRIVER_CAPABILITIES": "compute,compat32"})
    assert targets(plan)["/.udocker/nvidia/lib32/libcuda.so.1"] == host + f"{LIB32}/libcuda.so.1"
    assert libraries.elf_bits(targets(plan)[f"{LIBDIR}/libcuda.so.1"]) == 64
    assert plan.env_append["LD_LIBRARY_PATH"] == [LIBDIR, "/.udocker/nvidia/lib32"]


def test_image_capabilities_apply_unless_the_request_names_some(host):
    assert names(plan_for(host, {}, {"NVIDIA_DRIVER_CAPABILITIES": "video"})) == {
        "libnvcuvid.so.1", f"libnvcuvid.so.{VERSION}"}
    plan = plan_for(host, {"NVIDIA_DRIVER_CAPABILITIES": "utility"}, {"NVIDIA_DRIVER_CAPABILITIES": "video"})
    assert "libnvidia-ml.so.1" in names(plan) and "libnvcuvid.so.1" not in names(plan)


# -- which GPUs ------------------------------------------------------------------------------------------
def gpu_devices(plan):
    return sorted(os.path.basename(d) for d in plan.devices if os.path.basename(d)[6:].isdigit())


@pytest.mark.parametrize("request_env, image_env, devices, visible, cuda", [
    ({}, {}, ["nvidia0", "nvidia1"], ",".join(UUIDS), None),
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, {}, ["nvidia0", "nvidia1"], ",".join(UUIDS), None),
    ({"NVIDIA_VISIBLE_DEVICES": "1"}, {}, ["nvidia1"], UUIDS[1], "1"),
    ({"NVIDIA_VISIBLE_DEVICES": "GPU-aaaa"}, {}, ["nvidia1"], UUIDS[1], "1"),
    ({"NVIDIA_VISIBLE_DEVICES": "none"}, {}, [], "none", ""),
    ({"CUDA_VISIBLE_DEVICES": "0"}, {}, ["nvidia0"], UUIDS[0], "0"),
    ({"CUDA_VISIBLE_DEVICES": "1,0"}, {}, ["nvidia0", "nvidia1"], f"{UUIDS[1]},{UUIDS[0]}", "1,0"),
    # Slurm's global ids win over a CUDA_VISIBLE_DEVICES that a device cgroup made relative
    ({"SLURM_JOB_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0"}, {}, ["nvidia1"], UUIDS[1], "1"),
    ({"SLURM_STEP_GPUS": "0", "SLURM_JOB_GPUS": "0,1"}, {}, ["nvidia0"], UUIDS[0], "0"),
    ({}, {"NVIDIA_VISIBLE_DEVICES": "0"}, ["nvidia0"], UUIDS[0], "0"),
    ({"CUDA_VISIBLE_DEVICES": "1"}, {"NVIDIA_VISIBLE_DEVICES": "all"}, ["nvidia1"], UUIDS[1], "1"),
])
def test_visible_devices(host, request_env, image_env, devices, visible, cuda):
    """CUDA_VISIBLE_DEVICES: the indexes the container's driver uses (/dev bound whole here: the host's; R
    modes renumber, tests/unit/test_inject_gpus.py)."""
    plan = plan_for(host, request_env, image_env)
    assert gpu_devices(plan) == devices
    assert plan.env_override["NVIDIA_VISIBLE_DEVICES"] == visible
    assert plan.env_override.get("CUDA_VISIBLE_DEVICES") == cuda
    assert f"{LIBDIR}/libcuda.so.1" in targets(plan)  # "none" still gives the driver


@pytest.mark.parametrize("request_env", [{"NVIDIA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "GPU-ffff"},
                                         {"NVIDIA_VISIBLE_DEVICES": "GPU-"}])
def test_unknown_gpu_is_an_error(host, request_env):
    with pytest.raises(UdockerError, match="GPU"):
        plan_for(host, request_env)


def test_gpus_without_proc_come_from_device_nodes(tmp_path):
    root = hosttree.nvidia_host(tmp_path, proc=False)
    hosttree.write(root, "/dev/nvidiactl")
    plan = plan_for(root, {"NVIDIA_VISIBLE_DEVICES": "1"})
    assert gpu_devices(plan) == ["nvidia1"] and plan.env_override["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert plan.info["driver"] == VERSION  # from libcuda.so.<version>
    assert plan.env_override["CUDA_VISIBLE_DEVICES"] == "1"  # no UUIDs known: indexes


# -- the node decides ------------------------------------------------------------------------------------
def test_each_node_gets_its_own_driver(tmp_path):
    old = plan_for(hosttree.nvidia_host(tmp_path / "old", version=OLD_VERSION, stale=False))
    new = plan_for(hosttree.nvidia_host(tmp_path / "new"))
    assert f"libcuda.so.{OLD_VERSION}" in names(old) and f"libcuda.so.{VERSION}" in names(new)
    assert not any(VERSION in t for t in targets(old)) and not any(OLD_VERSION in t for t in targets(new))
    assert all(m.source.startswith(str(tmp_path / "new")) for m in new.binds)


def test_no_driver(tmp_path):
    assert plan_for(str(tmp_path)).empty()
    with pytest.raises(UdockerError, match="no NVIDIA driver"):
        plan_for(str(tmp_path), required=True)


def test_driver_without_gpu(tmp_path):
    hosttree.write(tmp_path, "/proc/driver/nvidia/version", f"NVRM version: NVIDIA UNIX Open Kernel Module for "
                                                           f"x86_64  {VERSION}  Release Build\n")
    assert nvidia.driver_version(str(tmp_path)) == VERSION
    with pytest.raises(UdockerError, match="no NVIDIA GPU"):
        plan_for(str(tmp_path), required=True)


def test_real_devices_must_be_character_devices(host):
    assert plan_for(host, require_char_devices=True).devices == []


# -- auto, on, off ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("configured, flag, recorded, expected", [
    ("auto", None, None, "auto"), ("off", None, None, "off"), (True, None, None, "on"), (False, None, None, "off"),
    ("off", True, None, "on"), ("on", False, None, "off"), ("off", None, True, "on"), ("auto", False, True, "off"),
])
def test_setting(configured, flag, recorded, expected):
    assert inject.setting(configured, flag, recorded, key="nvidia") == expected


def test_setting_rejects_other_values():
    with pytest.raises(ConfigError, match="nvidia"):
        inject.setting("sometimes", None, None, key="nvidia")


@pytest.mark.parametrize("request_env, image_env, wanted", [
    ({}, {}, False),
    ({"CUDA_VISIBLE_DEVICES": "0"}, {}, True),
    ({"SLURM_GPUS_ON_NODE": "2"}, {}, True),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, {}, False),  # Slurm's value for a job without GPU files
    ({"CUDA_VISIBLE_DEVICES": ""}, {}, False),
    ({}, {"NVIDIA_VISIBLE_DEVICES": "all"}, True),  # CUDA images ask for it in their ENV
])
def test_auto_injects_when_the_job_has_gpus(host, request_env, image_env, wanted):
    found = inject.plans(nvidia="auto", infiniband="off", request=request_env, image_env=image_env, root=host)
    assert bool(found) == wanted
    assert inject.plans(nvidia="off", infiniband="off", request=request_env, image_env=image_env, root=host) == []


def test_auto_without_driver_does_nothing_and_on_fails(tmp_path):
    request = {"CUDA_VISIBLE_DEVICES": "0"}
    assert inject.plans(nvidia="auto", infiniband="auto", request=request, image_env={}, root=str(tmp_path)) == []
    with pytest.raises(UdockerError):
        inject.plans(nvidia="on", infiniband="off", request={}, image_env={}, root=str(tmp_path))


# -- into the RunSpec ------------------------------------------------------------------------------------
def test_apply_appends_after_the_images_paths():
    plan = InjectionPlan("x", binds=[Mount("/h/lib", "/c/lib", True), Mount("/sys/class/x", "/sys/class/x", True),
                                     Mount("/h/other", "/mine", True)],
                         devices=["/dev/x", "/dev/x"], env={"A": "plan", "B": "plan"},
                         env_append={"LD_LIBRARY_PATH": ["/c"], "PATH": ["/c/bin"]})
    spec = RunSpec(rootfs="/r", argv=["sh"], env={"A": "image", "LD_LIBRARY_PATH": "/usr/local/cuda/compat:/x"},
                   mounts=[Mount("/sys", "/sys"), Mount("/data", "/mine")], devices=["/dev/x"])
    plan.apply(spec, default_path=DEFAULT_PATH)
    assert spec.mounts == [Mount("/sys", "/sys"), Mount("/data", "/mine"), Mount("/h/lib", "/c/lib", True)]
    assert spec.devices == ["/dev/x"]
    assert spec.env == {"A": "image", "B": "plan", "LD_LIBRARY_PATH": "/usr/local/cuda/compat:/x:/c",
                        "PATH": DEFAULT_PATH + ":/c/bin"}


class _Container:
    def __init__(self, rootfs, record):
        self.rootfs, self.dir, self.record, self.id = rootfs, os.path.dirname(rootfs), record, "c1"


def _spec(tmp_path, host, *, options=None, environ=None, record=None, config=None):
    rootfs = tmp_path / "c" / "rootfs"
    hosttree.write(rootfs, "/bin/sh", "#!/bin/sh\n", 0o755)
    container = _Container(str(rootfs), dict({"config": {"Cmd": ["sh"], "Env": ["LD_LIBRARY_PATH=/opt/app/lib"]}},
                                             **(record or {})))
    opts = RunRequest(**(options or {}))
    spec = build_spec(container, opts, environ or {})
    settings = dict({"nvidia": "auto", "infiniband": "auto", "host_mpi": "off"}, **(config or {}))
    run_inject(spec, settings, opts, container, environ or {}, root=host)
    return spec


def test_run_spec_gets_the_driver(tmp_path, host):
    spec = _spec(tmp_path, host, environ={"CUDA_VISIBLE_DEVICES": "1"})
    mounts = {m.target: m for m in spec.mounts}
    assert mounts[f"{LIBDIR}/libcuda.so.1"] == Mount(host + f"{LIB64}/libcuda.so.1", f"{LIBDIR}/libcuda.so.1")
    assert host + "/dev/nvidia1" in spec.devices and host + "/dev/nvidia0" not in spec.devices
    assert spec.env["LD_LIBRARY_PATH"] == f"/opt/app/lib:{LIBDIR}"
    assert spec.env["PATH"].startswith("/.udocker/nvidia/bin:")
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "1"  # /dev is bound whole (P, F modes): the host's index


def test_injected_program_is_the_command(tmp_path, host):
    """Issue 10 item 1: the program is looked up after the injection, whose binds provide nvidia-smi."""
    rootfs = tmp_path / "c" / "rootfs"
    hosttree.write(rootfs, "/usr/bin/nvidia-smi", "#!/bin/sh\n", 0o755)  # the image's own: must not win
    container = _Container(str(rootfs), {"config": {"Cmd": ["nvidia-smi"]}})
    opts = RunRequest(nvidia=True)
    spec = build_spec(container, opts, {}, check=False)
    run_inject(spec, {"nvidia": "auto", "infiniband": "off", "host_mpi": "off"}, opts, container, {}, root=host)
    assert check_program(spec.rootfs, "nvidia-smi", spec.env, spec.mounts) == "/.udocker/nvidia/bin/nvidia-smi"
    with pytest.raises(ProgramNotFound):
        build_spec(container, RunRequest(command=["nvidia-cuda-mps-control"]), {})


@pytest.mark.parametrize("kwargs, injected", [
    ({}, False),
    ({"options": {"nvidia": True}}, True),
    ({"record": {"nvidia": True}}, True),  # setup --nvidia
    ({"config": {"nvidia": "on"}}, True),
    ({"environ": {"CUDA_VISIBLE_DEVICES": "0"}, "options": {"nvidia": False}}, False),
    ({"environ": {"CUDA_VISIBLE_DEVICES": "0"}, "config": {"nvidia": "off"}}, False),
    ({"options": {"env": ["NVIDIA_VISIBLE_DEVICES=0"]}}, True),  # -e counts as the request
])
def test_run_spec_switches(tmp_path, host, kwargs, injected):
    spec = _spec(tmp_path, host, **kwargs)
    assert any(m.target.startswith(LIBDIR) for m in spec.mounts) == injected


def test_fakechroot_links_the_driver_into_the_rootfs(tmp_path, host):
    """Fakechroot has no bind mounts: its before_run() makes each bind a link rootfs/TARGET -> host file,
    excluded from path translation, and the loader follows it through LD_LIBRARY_PATH (rootfs-prefixed)."""
    fakechroot = pytest.importorskip("udocker.engines.fakechroot")
    spec = _spec(tmp_path, host, options={"nvidia": True})
    fakechroot.FakechrootEngine({}, None).before_run(spec, "F1")
    link = os.path.join(spec.rootfs, LIBDIR.lstrip("/"), "libcuda.so.1")
    assert os.readlink(link) == host + f"{LIB64}/libcuda.so.1"
    assert libraries.elf_bits(link) == 64  # resolves on the host, to the node's own driver
    excluded = fakechroot.exclude_path(spec.mounts).split(":")
    assert host + f"{LIB64}/libcuda.so.1" in excluded
    assert spec.env["LD_LIBRARY_PATH"].split(":")[-1] == LIBDIR


def test_a_wrapper_script_loses_to_the_driver_program(host):
    """Seen on a real GPU node (2026-11-30): /usr/bin/nvidia-smi was a shell script that execs the driver's
    /usr/local/nvidia/bin/nvidia-smi, a host path the container does not have (exit 127 in every mode). The
    ELF program wins over a script found earlier; a script is bound only when no ELF program exists."""
    hosttree.write(host, "/usr/bin/nvidia-smi", "#!/bin/sh\nexec /usr/local/nvidia/bin/nvidia-smi \"$@\"\n", 0o755)
    hosttree.write(host, "/usr/local/nvidia/bin/nvidia-smi", b"\x7fELF\x02\x01\x01" + bytes(64), 0o755)
    assert targets(plan_for(host))["/.udocker/nvidia/bin/nvidia-smi"] == host + "/usr/local/nvidia/bin/nvidia-smi"
    os.remove(host + "/usr/local/nvidia/bin/nvidia-smi")
    assert targets(plan_for(host))["/.udocker/nvidia/bin/nvidia-smi"] == host + "/usr/bin/nvidia-smi"
