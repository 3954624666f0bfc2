"""OCI bundle generation (ocirt.py), runtime choice and the mode table: pure, no container runs."""

import json
import os

import pytest

from tests.fixtures.rootfs import make_container
from udocker.engines import idmap, modes, ocirt
from udocker.engines.common import DEFAULT_PATH, userns_unavailable
from udocker.engines.crun import CrunEngine, hybrid_controllers
from udocker.engines.runc import RuncEngine
from udocker.errors import EngineError, EngineUnavailable, UsageError
from udocker.paths import Layout
from udocker.runspec import Mount, RunSpec


@pytest.fixture
def container(tmp_path):
    return make_container(tmp_path / "c")


def spec(container, **options):
    return RunSpec(rootfs=container.rootfs, argv=options.pop("argv", ["sh", "-c", "exit 7"]),
                   env={"PATH": "/bin", "A": "b"}, container_dir=container.dir, container_id="c1", **options)


def test_run_command_and_shared_bundle(tmp_path, container):
    engine = RuncEngine(None, Layout(str(tmp_path / "repo")))
    engine.prepare(container, "R1")
    launch = engine.command(spec(container), "R1")
    run_id, bundle = launch.argv[-1], launch.argv[-2]
    assert launch.argv[1:4] == ["--root", os.path.join(container.engine_dir("runc"), "state"), "run"]
    assert run_id.startswith(f"c1-{os.getpid()}-")
    assert os.path.dirname(bundle) == os.path.join(container.engine_dir("runc"), "bundles")
    assert launch.env == {"PATH": DEFAULT_PATH}  # the container env is in config.json, not here
    config = json.load(open(os.path.join(bundle, "config.json"), encoding="utf-8"))
    assert config["process"]["args"] == ["/bin/sh", "-c", "exit 7"]
    assert config["process"]["env"] == ["PATH=/bin", "A=b"]
    assert config["root"] == {"path": container.rootfs, "readonly": False}
    assert "network" not in [n["type"] for n in config["linux"]["namespaces"]]
    assert "cgroupsPath" not in config["linux"] and "resources" not in config["linux"]
    assert launch.cleanup is None  # the foreground runtime deletes its container: udocker execs it
    again = engine.command(spec(container), "R1").argv
    assert again[-1] != run_id and again[-2] == bundle  # every run its own id, one bundle per configuration
    assert engine.command(spec(container, argv=["true"]), "R1").argv[-2] != bundle


@pytest.mark.parametrize("mode, uid, args_start, user", [
    ("R1", 0, ["/bin/sh"], 0),
    ("R1", 1000, ["/bin/sh"], 1000),
    ("R2", 0, [ocirt.KIT + "/proot", "-0", "-r", "/", "-w", "/"], 0),
    ("R3", 1000, [ocirt.KIT + "/proot", "-i", "1000:1000", "-r", "/", "-w", "/"], 0),
])
def test_config_per_mode(tmp_path, container, mode, uid, args_start, user):
    config = RuncEngine(None, Layout(str(tmp_path))).config_json(spec(container, uid=uid, gid=uid), mode,
                                                                 kit=str(tmp_path / "nokit"))
    assert config["process"]["args"][:len(args_start)] == args_start
    assert config["process"]["user"]["uid"] == user
    env = dict(e.split("=", 1) for e in config["process"]["env"])
    assert ("PROOT_NO_SECCOMP" in env) == (mode == "R3")
    assert (ocirt.KIT in [m["destination"] for m in config["mounts"]]) == (mode != "R1")


@pytest.mark.parametrize("mode", ["R2", "R3"])
def test_the_proot_kit_hides_no_injected_bind(tmp_path, container, mode):
    """The kit's bind came after the run's and covered /.udocker, where the NVIDIA driver is bound (issue 10:
    nvidia-smi and libcuda were not found in R2/R3): no mount may land on or above an earlier one."""
    mounts = [Mount("/usr/bin/nvidia-smi", "/.udocker/nvidia/bin/nvidia-smi", readonly=True)]
    config = RuncEngine(None, Layout(str(tmp_path))).config_json(spec(container, mounts=mounts), mode,
                                                                 kit=str(tmp_path / "kit"))
    targets = [m["destination"] for m in config["mounts"]]
    assert "/.udocker/nvidia/bin/nvidia-smi" in targets
    for n, later in enumerate(targets):
        assert not any(earlier.startswith(later.rstrip("/") + "/") for earlier in targets[:n]), (later, targets)


def test_mounts(tmp_path, container):
    mounts = [Mount("/proc", "/proc"), Mount("/data", "/mnt"), Mount("/etc/hosts", "/etc/hosts", readonly=True)]
    config = RuncEngine(None, Layout(str(tmp_path))).config_json(spec(container, mounts=mounts, hostname="box"),
                                                                 "R1", kit="")
    binds = [m for m in config["mounts"] if m["type"] == "bind" and not m["destination"].startswith("/dev/")]
    assert binds == [ocirt.bind("/data", "/mnt"), {"destination": "/etc/hosts", "type": "bind",
                                                    "source": "/etc/hosts", "options": ["rbind", "ro"]}]
    assert [m["destination"] for m in config["mounts"]].count("/proc") == 1  # the runtime's own, not the host's
    assert config["hostname"] == "box" and {"type": "uts"} in config["linux"]["namespaces"]


@pytest.mark.parametrize("inside, proot, expected", [
    (0, False, [{"containerID": 0, "hostID": 1234, "size": 1}]),
    (1000, False, [{"containerID": 0, "hostID": 1234, "size": 1}, {"containerID": 1, "hostID": 200000,
                                                                    "size": 65536}]),
    (0, True, [{"containerID": 0, "hostID": 1234, "size": 1}, {"containerID": 1, "hostID": 200000,
                                                                "size": 65536}]),
])
def test_id_mappings(monkeypatch, inside, proot, expected):
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    assert idmap.id_mappings(inside, "uid", proot=proot, euid=1234, subordinate=(200000, 65536)) == expected


def test_crun_refuses_hybrid_cgroups_with_controllers(tmp_path, monkeypatch):
    controllers = tmp_path / "cgroup.controllers"
    controllers.write_text("hugetlb\n")
    assert hybrid_controllers(str(controllers)) == "hugetlb"
    assert hybrid_controllers(str(tmp_path / "missing")) == ""
    monkeypatch.setattr("udocker.engines.crun.hybrid_controllers", lambda: "hugetlb")
    assert "hybrid" in CrunEngine(None, Layout(str(tmp_path))).refusal()


def test_probe_of_a_failing_runtime(tmp_path):
    layout = Layout(str(tmp_path / "repo"))
    os.makedirs(os.path.join(layout.engines, "bin"))
    fake = os.path.join(layout.engines, "bin", "runc")
    with open(fake, "w", encoding="ascii") as stream:
        stream.write("#!/bin/sh\necho 'runc run failed: operation not permitted' >&2\nexit 1\n")
    os.chmod(fake, 0o755)
    if userns_unavailable():
        pytest.skip("no user namespaces here: the probe stops before running the runtime")
    with pytest.raises(EngineUnavailable, match="runc cannot run a rootless container: runc run failed"):
        RuncEngine(None, layout).probe("R1")


def test_probe_missing_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineUnavailable, match="runc not found"):
        RuncEngine(None, Layout(str(tmp_path / "repo"))).probe("R1")


def test_elf_interpreter():
    assert ocirt.elf_interpreter("/bin/sh").startswith("/")
    with pytest.raises(EngineUnavailable, match="not an ELF"):
        ocirt.elf_interpreter(__file__)


def test_wrong_mode(tmp_path, container):
    with pytest.raises(EngineError):
        RuncEngine(None, Layout(str(tmp_path))).command(spec(container), "P1")


@pytest.mark.parametrize("mode, cls", [("P1", "ProotEngine"), ("p2", "ProotEngine"), ("R1", "RuncEngine"),
                                       ("R3", "RuncEngine")])
def test_mode_table(tmp_path, mode, cls):
    assert type(modes.get_engine(mode, {"oci_runtime": "runc"}, Layout(str(tmp_path)))).__name__ == cls


def test_mode_table_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown execution mode: X9"):
        modes.get_engine("X9", {}, Layout(str(tmp_path)))
    with pytest.raises(UsageError, match="unknown oci_runtime"):
        modes.get_engine("R1", {"oci_runtime": "docker"}, Layout(str(tmp_path)))
    assert type(modes.get_engine("R1", {"oci_runtime": "crun"}, Layout(str(tmp_path)))).__name__ == "CrunEngine"


def test_auto_mode_order_and_reasons(tmp_path, monkeypatch):
    tried = []

    def probe(self, mode, container=None):
        tried.append(mode)
        if mode != "P2":
            raise EngineUnavailable(f"no {mode}")

    monkeypatch.setattr(ocirt.OciEngine, "probe", probe)
    monkeypatch.setattr("udocker.engines.proot.ProotEngine.probe", probe)
    assert modes.auto_mode({"oci_runtime": "runc"}, Layout(str(tmp_path))) == "P2"
    assert tried == ["R1", "P1", "P2"]
    monkeypatch.setattr(modes, "AUTO_ORDER", ("R1", "P1"))
    with pytest.raises(EngineUnavailable, match="R1: no R1; P1: no P1"):
        modes.auto_mode({"oci_runtime": "runc"}, Layout(str(tmp_path)))


def _namespaces(config):
    return [n["type"] for n in config["linux"]["namespaces"]]


def test_ipc_shared_with_the_host_by_default(tmp_path, container):
    """NCCL, MPI's shared memory and PyTorch's DataLoader need the ranks' /dev/shm and SysV IPC to be one:
    R modes share the host's IPC namespace and bind its /dev/shm (a private one is a 64 MB tmpfs)."""
    for mode in ("R1", "R2"):
        config = RuncEngine(None, Layout(str(tmp_path))).config_json(spec(container), mode, kit="")
        assert "ipc" not in _namespaces(config)
        shm = [m for m in config["mounts"] if m["destination"] == "/dev/shm"]
        assert shm == [{"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                        "options": ["rbind", "nosuid", "nodev", "noexec"]}]
        assert not any(m["type"] == "mqueue" for m in config["mounts"])  # not mountable outside an ipc namespace
    assert os.path.isdir("/dev/mqueue") == any(m["destination"] == "/dev/mqueue" for m in config["mounts"])


def test_ipc_private(tmp_path, container):
    config = RuncEngine(None, Layout(str(tmp_path))).config_json(spec(container, ipc="private"), "R1", kit="")
    assert "ipc" in _namespaces(config)
    [shm] = [m for m in config["mounts"] if m["destination"] == "/dev/shm"]
    assert shm["type"] == "tmpfs"
    assert any(m["type"] == "mqueue" for m in config["mounts"])


def _gpu_host(tmp_path):
    from tests.fixtures import hosttree

    root = hosttree.nvidia_host(tmp_path / "host")
    hosttree.write(root, "/dev/gdrdrv")
    for channel in ("channel0", "channel1"):
        hosttree.write(root, f"/dev/nvidia-caps-imex-channels/{channel}")
    hosttree.write(root, f"/lib/firmware/nvidia/{hosttree.VERSION}/gsp_ga10x.bin", b"\0")
    hosttree.write(root, "/lib/firmware/nvidia/535.104.05/gsp_tu10x.bin", b"\0")  # another driver's
    return root


def test_gpu_extras(tmp_path):
    """What P modes see through the host's /dev and /proc, R modes get explicitly for a GPU run: GDRCopy's
    /dev/gdrdrv, the IMEX channels, the running driver's GSP firmware, and /proc/driver/nvidia/gpus with the
    GPUs not chosen masked."""
    root = _gpu_host(tmp_path)
    extra = ocirt.gpu_extras([root + "/dev/nvidiactl", root + "/dev/nvidia1"], root=root)
    assert extra.devices == [root + "/dev/gdrdrv", root + "/dev/nvidia-caps-imex-channels/channel0",
                             root + "/dev/nvidia-caps-imex-channels/channel1"]
    assert extra.binds == [(root + "/lib/firmware/nvidia/550.54.15", "/lib/firmware/nvidia/550.54.15")]
    assert extra.masked == ["/proc/driver/nvidia/gpus/0000:01:00.0"]  # minor 0: not chosen
    none = ocirt.gpu_extras([root + "/dev/fuse"], root=root)
    assert (none.devices, none.binds, none.masked) == ([], [], [])


def test_gpu_extras_mask_the_capabilities_of_what_was_not_given(tmp_path):
    """MIG: the run of one MIG device (its GPU's node and its two caps nodes) sees in
    /proc/driver/nvidia/capabilities that device's files only: not another GPU's, not another instance's."""
    from tests.fixtures import hosttree

    root = hosttree.mig_host(tmp_path / "mig", instances=((0, 1, 0), (0, 2, 0), (1, 1, 0)))
    gi, ci = hosttree.mig_minors(0, 2, 0)
    devices = [root + d for d in ("/dev/nvidiactl", "/dev/nvidia0", f"/dev/nvidia-caps/nvidia-cap{gi}",
                                  f"/dev/nvidia-caps/nvidia-cap{ci}")]
    top = "/proc/driver/nvidia/capabilities"
    assert ocirt.gpu_extras(devices, root=root).masked == [
        "/proc/driver/nvidia/gpus/0000:02:00.0", f"{top}/gpu0/mig/gi1", f"{top}/gpu1"]
    whole = ocirt.gpu_extras([root + "/dev/nvidiactl", root + "/dev/nvidia1"] + [
        f"{root}/dev/nvidia-caps/nvidia-cap{m}" for m in hosttree.mig_minors(1, 1, 0)], root=root)
    assert whole.masked == ["/proc/driver/nvidia/gpus/0000:01:00.0", f"{top}/gpu0"]


def test_gpu_extras_in_the_bundle(tmp_path, container, monkeypatch):
    root = _gpu_host(tmp_path)
    real = ocirt.gpu_extras
    monkeypatch.setattr(ocirt, "gpu_extras", lambda devices: real(devices, root=root))
    devices = [root + "/dev/nvidiactl", root + "/dev/nvidia0"]
    config = RuncEngine(None, Layout(str(tmp_path))).config_json(spec(container, devices=devices), "R1", kit="")
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert mounts[root + "/dev/gdrdrv"]["source"] == root + "/dev/gdrdrv"
    assert mounts["/lib/firmware/nvidia/550.54.15"] == ocirt.bind(root + "/lib/firmware/nvidia/550.54.15",
                                                                  "/lib/firmware/nvidia/550.54.15", readonly=True)
    assert "/proc/driver/nvidia/gpus/0000:02:00.0" in config["linux"]["maskedPaths"]


def test_a_range_without_newgidmap_is_one_error_line(tmp_path, monkeypatch):
    """Seen on a real GPU node (Ubuntu 24.04, 2026-11-30): useradd gave the user a range in /etc/subgid but
    newgidmap was not installed, and every R2/R3 run failed with runc's "writing file /proc/N/gid_map: Invalid
    argument". Without the helper on PATH the mapping of a range is refused before runc starts."""
    monkeypatch.setattr(idmap, "subordinate_range", lambda kind: (200000, 65536))
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match="needs newgidmap, which is not on PATH"):
        idmap.id_mappings(0, "gid", proot=True, euid=1234)
    helper = tmp_path / "newgidmap"
    helper.write_text("#!/bin/sh\n")
    helper.chmod(0o755)
    assert idmap.id_mappings(0, "gid", proot=True, euid=1234)[1] == {"containerID": 1, "hostID": 200000,
                                                                    "size": 65536}


def test_r2_probe_names_the_missing_mapping_helper(tmp_path, monkeypatch):
    """`info` and `setup --execmode=R2` say why R2/R3 cannot run where the range cannot be mapped."""
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    monkeypatch.setattr(idmap, "subordinate_range", lambda kind: (200000, 65536))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert idmap.mapping_problem() == ("a rootless container with more than one uid needs newuidmap, which is "
                                       "not on PATH")
    monkeypatch.setattr(ocirt, "userns_unavailable", lambda: None)
    monkeypatch.setattr(ocirt, "kit_sources", lambda layout: None)
    error = RuncEngine(None, Layout(str(tmp_path / "repo")))._probe("/bin/false", "R2")
    assert isinstance(error, EngineUnavailable) and error.message.startswith("runc cannot run R2: a rootless")


def test_the_open_files_limit_is_the_one_resource_reports():
    """ocirt._nofile reads /proc/self/limits instead of loading the resource module on every R-mode run."""
    import resource

    from udocker.engines.ocirt import _nofile

    assert _nofile() == resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
    try:
        assert _nofile() == (min(soft, 512), hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_probe_tries_the_runtime_before_the_forked_user_namespace_test(tmp_path, monkeypatch):
    """A runtime that runs proves user namespaces work: the unshare test (ctypes, a fork) runs only after
    a failure, and names the reason when it finds one."""
    asked = []
    monkeypatch.setattr(ocirt, "userns_disabled", lambda: None)
    monkeypatch.setattr(ocirt, "userns_unavailable", lambda: asked.append(1) or reason[0])
    layout = Layout(str(tmp_path / "repo"))
    reason = [None]
    assert RuncEngine(None, layout)._probe("/bin/true", "R1") is None and asked == []
    failed = RuncEngine(None, layout)._probe("/bin/false", "R1")
    assert asked == [1] and failed.message.startswith("false cannot run a rootless container")
    reason[0] = "cannot create a user namespace: Operation not permitted"
    refused = RuncEngine(None, layout)._probe("/bin/false", "R1")
    assert refused.message == "runc cannot run: cannot create a user namespace: Operation not permitted"
    monkeypatch.setattr(ocirt, "userns_disabled", lambda: "user namespaces are disabled (x is 0)")
    assert RuncEngine(None, layout)._probe("/bin/true", "R1").message.endswith("disabled (x is 0)")
