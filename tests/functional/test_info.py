"""`udocker info` against this machine, and `setup --nvidia`."""

import json
import os
import shutil
import subprocess

import pytest

from tests.fixtures.cli import ok


def _unshare_works():
    unshare = shutil.which("unshare")
    return unshare is not None and subprocess.run([unshare, "-U", "true"], capture_output=True).returncode == 0


def _read(path):
    try:
        with open(path) as stream:
            return stream.read().strip()
    except OSError:
        return None


def test_info_json(udocker):
    report = json.loads(ok(udocker("info", "--json")))
    uname = os.uname()
    assert report["architecture"]["machine"] == uname.machine
    assert report["architecture"]["platform"].startswith("linux/")
    assert report["kernel"] == {"system": uname.sysname, "release": uname.release, "version": uname.version}
    userns = report["user_namespaces"]
    assert userns["unshare_works"] == (_unshare_works() if shutil.which("unshare") else None)
    assert userns["available"] is _unshare_works()
    assert str(userns["max_user_namespaces"]) == _read("/proc/sys/user/max_user_namespaces")
    scope = _read("/proc/sys/kernel/yama/ptrace_scope")
    assert report["ptrace"]["yama_ptrace_scope"] == (int(scope) if scope else None)
    assert report["seccomp"]["available"] is True and report["seccomp"]["mode"] in (0, 1, 2)
    engines = {e["name"]: e for e in report["engines"]}  # this host's engines, from PATH / system libraries
    assert list(engines) == ["proot", "runc", "crun", "patchelf", "fakechroot", "slirp4netns"]
    if shutil.which("slirp4netns"):  # the private network's stack: where it is and its version, as the engines
        version = subprocess.run(["slirp4netns", "--version"], capture_output=True, text=True).stdout
        assert engines["slirp4netns"]["version"] and engines["slirp4netns"]["version"] in version.splitlines()[0]
        assert engines["slirp4netns"]["path"] == shutil.which("slirp4netns"), engines["slirp4netns"]
    for engine in engines.values():
        assert (engine["origin"], engine["path"]) in (("PATH", shutil.which(engine["name"], path=os.environ["PATH"]
                                                                         + ":/usr/sbin")), ("system", engine["path"]),
                                                     (None, None)), engine
    assert set(report["modes"]) == {"P1", "P2", "F1", "F2", "F3", "F4", "R1", "R2", "R3"}
    assert all(m["status"] in ("yes", "no", "unknown") for m in report["modes"].values())
    if not os.path.exists("/proc/driver/nvidia/version") and not os.path.exists("/dev/nvidiactl"):
        assert report["gpu"] == {"driver": None, "cuda": None, "devices": []}
    if not os.path.isdir("/sys/class/infiniband"):
        assert report["infiniband"] == {"devices": [], "ports": [], "device_nodes": []}


def test_info_text(udocker):
    lines = ok(udocker("info")).splitlines()
    uname = os.uname()
    assert lines[0].startswith(f"architecture: {uname.machine} (linux/")
    assert lines[1] == f"kernel: Linux {uname.release}"
    assert lines[2].startswith("user namespaces: " + ("yes" if _unshare_works() else "no"))
    assert lines[3].startswith("ptrace: ") and lines[4].startswith("seccomp: yes")
    assert lines[5] == "engines:" and [line.split(":")[0].strip() for line in lines[6:12]] == [
        "proot", "runc", "crun", "patchelf", "fakechroot", "slirp4netns"]
    assert lines[12] == "modes:" and [line.split(":")[0].strip() for line in lines[13:22]] == [
        "P1", "P2", "F1", "F2", "F3", "F4", "R1", "R2", "R3"]
    if not os.path.exists("/proc/driver/nvidia/version") and not os.path.exists("/dev/nvidiactl"):
        assert "gpus: none" in lines
    if not os.path.isdir("/sys/class/infiniband"):
        assert lines[-1] == "infiniband: none"


def test_run_help_lists_the_injection_options(udocker):
    out = ok(udocker("run", "--help"))
    for option in ("--nvidia", "--no-nvidia", "--ib", "--no-ib"):
        assert option in out


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this node has an NVIDIA driver")
def test_run_nvidia_without_a_driver_fails_clearly(udocker, tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "true").write_text("#!/bin/sh\n")  # found, so that the driver check decides
    (rootfs / "bin" / "true").chmod(0o755)
    result = udocker("run", "--nvidia", "--location", str(rootfs), "/bin/true")
    # the engines decide first whether they can run at all; with one, injection names the missing driver
    assert result.returncode == 125
    if "engines" not in result.stderr and "mode" not in result.stderr:
        assert "no NVIDIA driver" in result.stderr


def test_setup_nvidia_is_recorded(udocker, registry):
    ref = registry.ref("test/layers:latest")
    ok(udocker("-q", "pull", ref))
    ok(udocker("create", "--name=gpu", ref))
    ok(udocker("setup", "--nvidia", "gpu"))
    path = ok(udocker("inspect", "-p", "gpu")).strip()
    with open(os.path.join(os.path.dirname(path), "container.json")) as stream:
        assert json.load(stream)["nvidia"] is True
    ok(udocker("setup", "--no-nvidia", "gpu"))
    with open(os.path.join(os.path.dirname(path), "container.json")) as stream:
        assert json.load(stream)["nvidia"] is False
