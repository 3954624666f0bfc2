"""The run matrix: every execution mode, the same checks, through `udocker run`,
on the Debian 12 image built with debootstrap (dynamic programs, a second layer with whiteouts, an
opaque directory, hard links and read-only files). CI runs this as an unprivileged user.

A mode that cannot run on this machine must fail `setup --execmode` with a clear one-line error; the
test records it and checks the message instead of the matrix (which modes run depends on the kernel: R
modes need unprivileged user namespaces, P modes ptrace; UDOCKER_TEST_REQUIRE_MODES lists those that must)."""

import os
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = ["P1", "P2", "F1", "F2", "F3", "F4", "R1", "R2", "R3"]
LAYERS_CHECK = (
    "test ! -e /etc/motd && test ! -e /usr/share/doc/bash && test ! -e /usr/bin/gunzip && "
    "test -f /usr/bin/uncompress && test ! -e /etc/skel/.profile && grep -q opaque /etc/skel/.bashrc && "
    "test $(stat -c %i /opt/udocker-test/hl/original) = $(stat -c %i /opt/udocker-test/other/cross-dir-link) && "
    "test \"$(cat /opt/udocker-test/rodir/inside.txt)\" = 'inside a read-only directory' && "
    "test \"$(cat /opt/udocker-test/readonly.txt)\" = read-only && udocker-check"
)


class Repo:
    """A repository shared by the tests of one mode, driven through the command line."""

    def __init__(self, path, home):
        self.path = str(path)
        self.env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8",
                    "PYTHONPATH": TOP, "PYTHONDONTWRITEBYTECODE": "1"}

    def __call__(self, *args, timeout=180, env=None):
        return subprocess.run([sys.executable, "-m", "udocker", "--repo", self.path, *args], cwd=TOP,
                              env=dict(self.env, **(env or {})), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, debian_image):
    base = tmp_path_factory.mktemp("matrix")
    (base / "home").mkdir()
    udocker = Repo(base / "repo", base / "home")
    # a first run pulls the image and unpacks it while it downloads (issue 13): every container of the matrix
    # links to the tree that path built
    pulled = udocker("-q", "run", "--rm", debian_image.ref, "true")
    assert pulled.returncode == 0, pulled.stderr
    udocker.ref = debian_image.ref
    return udocker


@pytest.fixture(scope="module", params=MODES)
def container(request, repo):
    """(udocker, container name, None) when the mode runs here, (udocker, name, error) when it cannot."""
    mode = request.param
    name = f"m-{mode}"
    created = repo("create", f"--name={name}", repo.ref)
    assert created.returncode == 0, created.stderr
    setup = repo("setup", f"--execmode={mode}", name)
    if setup.returncode != 0:
        return repo, name, setup.stderr
    return repo, name, None


def _runs(container):
    repo, name, error = container
    if error is not None:
        lines = error.splitlines()
        assert lines[0].startswith("error: ") and "Traceback" not in error, error
        if os.environ.get("UDOCKER_TEST_REQUIRE_MODES"):  # CI lists the modes its machine must run
            mode = name.split("-", 1)[1]
            assert mode not in os.environ["UDOCKER_TEST_REQUIRE_MODES"].split(","), error
        pytest.skip(f"mode cannot run here: {lines[0]}")
    return repo, name


def test_dynamic_program(container):
    repo, name = _runs(container)
    result = repo("run", name, "ls", "--version")
    assert result.returncode == 0, result.stderr
    assert "GNU coreutils" in result.stdout


def test_exit_status_passes_through(container):
    repo, name = _runs(container)
    assert repo("run", name, "sh", "-c", "exit 7").returncode == 7


def test_env_image_env_and_home(container):
    repo, name = _runs(container)
    result = repo("run", "-e", "FOO=bar", "--env=EMPTY=", name, "sh", "-c", 'echo "$FOO|$EMPTY|$PATH|$HOME"')
    assert result.returncode == 0, result.stderr
    foo, empty, path, home = result.stdout.strip().split("|")
    assert (foo, empty, home) == ("bar", "", "/root")
    assert path == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_workdir_option_and_image_workdir(container):
    repo, name = _runs(container)
    assert repo("run", name, "pwd").stdout.strip() == "/root"
    assert repo("run", "-w", "/tmp", name, "pwd").stdout.strip() == "/tmp"


def test_volumes_read_write_and_read_only(container, tmp_path):
    repo, name = _runs(container)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("hello\n")
    result = repo("run", "-v", f"{shared}:/data", name, "sh", "-c", "cat /data/from-host && echo out > /data/new")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n" and (shared / "new").read_text() == "out\n"
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    (readonly / "file").write_text("ro\n")
    if "F" in name:  # fakechroot cannot make a writable directory read-only: it refuses unless it is
        os.chmod(readonly / "file", 0o444)
        os.chmod(readonly, 0o555)
    result = repo("run", "-v", f"{readonly}:/ro:ro", name, "sh", "-c", "cat /ro/file; echo x > /ro/new")
    if os.geteuid() != 0 or "F" not in name:
        assert result.stdout == "ro\n", result.stderr
        assert result.returncode != 0
    assert not (readonly / "new").exists()


def test_files_persist_between_runs(container):
    repo, name = _runs(container)
    assert repo("run", name, "sh", "-c", "echo kept > /root/persist").returncode == 0
    assert repo("run", name, "cat", "/root/persist").stdout == "kept\n"


def test_layer_contents(container):
    repo, name = _runs(container)
    result = repo("run", name, "sh", "-c", LAYERS_CHECK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "debian-ok"


def test_host_paths_not_mounted_are_invisible(container, tmp_path):
    repo, name = _runs(container)
    secret = tmp_path / "host-only"
    secret.write_text("secret\n")
    result = repo("run", name, "sh", "-c", f"test -e {secret} && echo visible || echo invisible")
    assert result.stdout.strip() == "invisible", result.stderr


def test_program_not_found_and_not_executable(container):
    repo, name = _runs(container)
    missing = repo("run", name, "nosuchprogram")
    assert missing.returncode == 127
    assert missing.stderr == "error: executable file not found in $PATH: nosuchprogram\n"
    assert repo("run", name, "/etc/hostname").returncode == 126
