"""What each engine does with an injection plan (fake NVIDIA host tree): PRoot binds, runc/crun bind the
files and add the device nodes, Fakechroot links the files into the rootfs."""

import json
import os

import pytest

from udocker.config import Config
from udocker.engines import modes
from udocker.paths import Layout
from udocker.runspec import Mount, RunSpec
from udocker.store.containers import Container


def _spec(tmp_path):
    directory = tmp_path / "container"
    rootfs = directory / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    os.symlink("/bin/busybox", rootfs / "bin" / "sh")
    (rootfs / "bin" / "busybox").write_text("")
    (rootfs / "bin" / "busybox").chmod(0o755)
    library = tmp_path / "host" / "libcuda.so.550.54.15"
    library.parent.mkdir()
    library.write_text("driver")
    device = tmp_path / "host" / "nvidia0"
    device.write_text("")
    spec = RunSpec(rootfs=str(rootfs), argv=["/bin/sh"], env={"PATH": "/bin"}, container_dir=str(directory),
                   container_id="c1", mounts=[Mount(str(library), "/.udocker/nvidia/lib64/libcuda.so.1")],
                   devices=[str(device)])
    spec.env["LD_LIBRARY_PATH"] = "/.udocker/nvidia/lib64"
    return Container(str(directory), {"id": "c1", "config": {}}), spec, str(library), str(device)


@pytest.fixture
def config(tmp_path):
    return Config.load(cli={"topdir": str(tmp_path / "repo")}, environ={}, system_file="/nonexistent")


def test_proot_binds_the_plan(tmp_path, config):
    container, spec, library, device = _spec(tmp_path)
    engine = modes.get_engine("P1", config, Layout(config["topdir"]))
    argv = engine.command(spec, "P1").argv
    assert f"{library}:/.udocker/nvidia/lib64/libcuda.so.1" in argv
    assert f"{device}:{device}" in argv
    assert engine.command(spec, "P1").env["LD_LIBRARY_PATH"] == "/.udocker/nvidia/lib64"


@pytest.mark.parametrize("runtime", ["runc"])
def test_oci_runtime_binds_files_and_devices(tmp_path, config, runtime):
    container, spec, library, device = _spec(tmp_path)
    config.values["oci_runtime"] = runtime
    engine = modes.get_engine("R1", config, Layout(config["topdir"]))
    engine.command(spec, "R1")
    bundles = os.path.join(container.engine_dir(runtime), "bundles")
    [bundle] = os.listdir(bundles)
    with open(os.path.join(bundles, bundle, "config.json")) as stream:
        oci = json.load(stream)
    mounts = {m["destination"]: m["source"] for m in oci["mounts"]}
    assert mounts["/.udocker/nvidia/lib64/libcuda.so.1"] == library
    assert mounts[device] == device
    assert "LD_LIBRARY_PATH=/.udocker/nvidia/lib64" in oci["process"]["env"]


def test_fakechroot_links_the_plan(tmp_path, config):
    from udocker.engines.fakechroot import FakechrootEngine

    container, spec, library, _ = _spec(tmp_path)
    engine = FakechrootEngine(config, Layout(config["topdir"]))
    engine.before_run(spec, "F1")
    link = os.path.join(spec.rootfs, ".udocker/nvidia/lib64/libcuda.so.1")
    assert os.readlink(link) == library
