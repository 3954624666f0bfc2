"""R modes share the host's IPC namespace and /dev/shm by default (MPI and NCCL shared memory, PyTorch's
DataLoader between the ranks of a job); `run --ipc=private` gives a run its own. On the Debian test image,
as the unprivileged user."""

import os

import pytest

from tests.functional.test_run_matrix import Repo

SETUPS = [("R1", "runc"), ("R1", "crun"), ("R2", "auto")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, debian_image):
    base = tmp_path_factory.mktemp("ipc")
    (base / "home").mkdir()
    udocker = Repo(base / "repo", base / "home")
    pulled = udocker("-q", "pull", debian_image.ref)
    assert pulled.returncode == 0, pulled.stderr
    udocker.ref = debian_image.ref
    return udocker


class Runtime:
    """The repository with UDOCKER_OCI_RUNTIME set."""

    def __init__(self, repo, runtime):
        self.repo, self.env = repo, {"UDOCKER_OCI_RUNTIME": runtime}

    def __call__(self, *args):
        return self.repo(*args, env=self.env)


@pytest.fixture(scope="module", params=SETUPS, ids=lambda setup: "-".join(setup))
def container(request, repo):
    mode, runtime = request.param
    name = f"ipc-{mode}-{runtime}"
    udocker = Runtime(repo, runtime)
    created = udocker("create", f"--name={name}", repo.ref)
    assert created.returncode == 0, created.stderr
    setup = udocker("setup", f"--execmode={mode}", name)
    if setup.returncode != 0:
        if runtime != "crun" and mode in os.environ.get("UDOCKER_TEST_REQUIRE_MODES", "").split(","):
            pytest.fail(setup.stderr)
        pytest.skip(f"{mode} with {runtime} cannot run here: {setup.stderr.strip()}")
    return udocker, name


def test_host_ipc_and_shm_by_default(container, tmp_path):
    repo, name = container
    mark = f"udocker-ipc-test-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        result = repo("run", name, "sh", "-c", f"readlink /proc/self/ns/ipc; echo inside > /dev/shm/{mark}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [os.readlink("/proc/self/ns/ipc")]
        with open(f"/dev/shm/{mark}", encoding="utf-8") as stream:  # the host's /dev/shm
            assert stream.read() == "inside\n"
    finally:
        if os.path.exists(f"/dev/shm/{mark}"):
            os.unlink(f"/dev/shm/{mark}")


def test_private_ipc(container):
    repo, name = container
    mark = f"udocker-ipc-test-{os.getpid()}-{os.urandom(4).hex()}"
    result = repo("run", "--ipc=private", name, "sh", "-c",
                  f"readlink /proc/self/ns/ipc; echo inside > /dev/shm/{mark}; df -k /dev/shm | tail -1")
    assert result.returncode == 0, result.stderr
    namespace, usage = result.stdout.splitlines()
    assert namespace != os.readlink("/proc/self/ns/ipc")
    assert usage.split()[1] == "65536" and not os.path.exists(f"/dev/shm/{mark}")


def test_bad_ipc_value(repo):
    result = repo("run", "--ipc=shareable", "no-such-container", "true")
    assert result.returncode == 125 and "invalid --ipc: shareable" in result.stderr
