"""Tests of the NVIDIA injection on a fake GPU node (issue 10).

.ci/run runs this directory as the test user inside tests/support/fake-gpu-node.sh, which installs the fake
driver of tests/support/fake_nvidia.py at a real driver's paths in a private mount namespace and sets
UDOCKER_TEST_FAKE_GPU (debian or rhel: where the libraries are). Without that variable the tests are skipped,
also under CI: the main pytest run of .ci/run collects this directory too, outside the fake node. With it, the
node must really be there (device nodes, /proc files, the loader cache entry), or every test fails.
"""

import os
import shutil
import stat
import subprocess
import sys

import pytest

from tests.support import fake_nvidia

NODE_ENV = "UDOCKER_TEST_FAKE_GPU"
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_collection_modifyitems(config, items):
    """Off the fake node every test here is skipped; on a MIG node (layout debian-mig or rhel-mig, where GPU 1
    is split into MIG devices) only test_mig.py runs, elsewhere every module but test_mig.py."""
    node = os.environ.get(NODE_ENV)
    skip = pytest.mark.skip(reason=f"not on a fake GPU node: run as root `tests/support/fake-gpu-node.sh "
                                   f"runuser -u USER -- env {NODE_ENV}=debian ... pytest tests/gpu`")
    other = pytest.mark.skip(reason="for the other kind of fake GPU node (with or without --mig)")
    for item in items:
        path = str(item.fspath)
        if "tests/gpu/" not in path:
            continue
        if not node:
            item.add_marker(skip)
        elif node.endswith("-mig") != path.endswith("test_mig.py"):
            item.add_marker(other)


@pytest.fixture(scope="session")
def gpu_node():
    """The layout (debian, rhel, sandbox) of the fake node; fails unless its driver is really installed."""
    try:
        mode = os.stat("/dev/nvidiactl").st_mode
    except OSError:
        mode = 0
    assert stat.S_ISCHR(mode), "no /dev/nvidiactl character device: not inside tests/support/fake-gpu-node.sh"
    assert os.path.isfile("/proc/driver/nvidia/version"), "no /proc/driver/nvidia/version"
    listed = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    layout = os.environ[NODE_ENV]
    # Debian: /lib is /usr/lib
    libdir = {"debian": "/lib/x86_64-linux-gnu", "rhel": "/usr/lib64",
              "sandbox": "/usr/local/nvidia/lib64"}[layout.split("-")[0]]
    assert f"{libdir}/libcuda.so.1\n" in listed, f"{libdir}/libcuda.so.1 is not in the loader cache"
    mig = os.path.isdir("/proc/driver/nvidia/capabilities/gpu1/mig")
    assert mig == layout.endswith("-mig"), f"{NODE_ENV}={layout} but the node has {'' if mig else 'no '}MIG"
    return layout


class Repo:
    """A repository for one module's tests, driven through the command line as the user would."""

    def __init__(self, base):
        self.path = str(base / "repo")
        os.makedirs(base / "home", exist_ok=True)
        self.env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(base / "home"), "LANG": "C.UTF-8",
                    "PYTHONPATH": TOP, "PYTHONDONTWRITEBYTECODE": "1"}

    def command(self, *args):
        return [sys.executable, "-m", "udocker", "--repo", self.path, *args]

    def __call__(self, *args, timeout=180, env=None):
        return subprocess.run(self.command(*args), cwd=TOP, env=dict(self.env, **(env or {})), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def rootfs(self, name):
        names = os.path.join(self.path, "containers", ".names")
        return os.path.join(self.path, "containers", os.readlink(os.path.join(names, name)), "rootfs")


@pytest.fixture(scope="session")
def fake_driver(tmp_path_factory):
    """{name: path} of a build of the fake driver (cudacount is copied into images)."""
    return fake_nvidia.build(str(tmp_path_factory.mktemp("fake-nvidia")))


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory, gpu_node, fake_driver):
    """A repository holding the Debian 12 test image (UDOCKER_TEST_DEBIAN); repo.image is its name."""
    archive = os.environ.get("UDOCKER_TEST_DEBIAN")
    if not archive:
        pytest.fail("UDOCKER_TEST_DEBIAN is not set: the GPU tests need the Debian 12 image")
    repo = Repo(tmp_path_factory.mktemp("gpu"))
    loaded = repo("-q", "load", "-i", archive, "gpu/debian:12")
    assert loaded.returncode == 0, loaded.stderr
    repo.image = "gpu/debian:12"
    repo.driver = fake_driver
    return repo


def make_container(repo, name, mode):
    """Create `name` from the image in `mode` with cudacount in /usr/local/bin; skips when the mode cannot
    run here (unless UDOCKER_TEST_REQUIRE_MODES names it)."""
    created = repo("create", f"--name={name}", repo.image)
    assert created.returncode == 0, created.stderr
    setup = repo("setup", f"--execmode={mode}", name)
    if setup.returncode != 0:
        assert setup.stderr.startswith("error: ") and "Traceback" not in setup.stderr, setup.stderr
        assert mode not in os.environ.get("UDOCKER_TEST_REQUIRE_MODES", "").split(","), setup.stderr
        pytest.skip(f"mode {mode} cannot run here: {setup.stderr.splitlines()[0]}")
    target = os.path.join(repo.rootfs(name), "usr/local/bin/cudacount")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(repo.driver["cudacount"], target)
    os.chmod(target, 0o755)
    return name
