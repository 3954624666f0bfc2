"""P1, P2, R1, R2, R3 running real programs in a busybox rootfs, as whoever runs the tests (CI: an
unprivileged user). A mode whose probe fails here is skipped with the probe's reason, except under CI."""

import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import require
from tests.fixtures.rootfs import layout, make_container, make_spec, run, start
from udocker.engines.modes import get_engine
from udocker.errors import EngineError, EngineUnavailable
from udocker.runspec import Mount

MODES = ["P1", "P2", "R1", "R2", "R3"]
pytestmark = pytest.mark.slow


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def setup(tmp_path, mode):
    """(engine, mode, container) with the container prepared for mode."""
    require("proot")
    if mode.startswith("R"):
        require("runc")
    engine = get_engine(mode, {"oci_runtime": "runc"}, layout(tmp_path))
    try:
        engine.probe(mode)
    except EngineUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"{mode} should work under CI: {error.message}")
        pytest.skip(f"{mode} cannot run here: {error.message}")
    container = make_container(tmp_path / "container")
    engine.prepare(container, mode)
    return engine, mode, container


def test_runs_a_program(setup):
    status, out, err = run(*setup, ["/bin/busybox", "echo", "hi"])
    assert (status, out) == (0, "hi\n"), err
    status, out, err = run(*setup, ["ls", "/"])
    assert status == 0, err
    assert {"bin", "etc", "tmp", "root"} <= set(out.split())


def test_exit_status_passes_through(setup):
    assert run(*setup, ["sh", "-c", "exit 7"])[0] == 7


def test_environment_and_working_directory(setup):
    status, out, err = run(*setup, ["sh", "-c", 'echo "$FOO"; pwd'], env={"FOO": "bar baz"}, cwd="/home/tester")
    assert (status, out) == (0, "bar baz\n/home/tester\n"), err


def test_host_environment_does_not_leak(setup, monkeypatch):
    monkeypatch.setenv("UDOCKER_TEST_SECRET", "leaked")
    status, out, _ = run(*setup, ["env"])
    assert status == 0 and "UDOCKER_TEST_SECRET" not in out


def test_bind_mount_read_write(setup, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from host\n")
    status, out, err = run(*setup, ["sh", "-c", "cat /mnt/in.txt; echo from container > /mnt/out.txt"],
                           mounts=[Mount(str(shared), "/mnt")])
    assert (status, out) == (0, "from host\n"), err
    assert (shared / "out.txt").read_text() == "from container\n"


def test_bind_mount_read_only(setup, tmp_path):
    engine, mode, container = setup
    shared = tmp_path / "ro"
    shared.mkdir()
    (shared / "in.txt").write_text("read me\n")
    mounts = [Mount(str(shared), "/mnt", readonly=True)]
    script = ["sh", "-c", "cat /mnt/in.txt; echo x > /mnt/new.txt"]
    if mode.startswith("P"):
        # PRoot has no read-only binds: a private mount namespace makes the source read-only where user
        # namespaces work; elsewhere the mount is refused rather than mounted writable
        from udocker.engines.common import userns_unavailable

        if userns_unavailable() is not None:
            with pytest.raises(EngineError, match="cannot make a bind mount read-only"):
                engine.command(make_spec(container, script, mounts=mounts), mode)
            return
    status, out, _ = run(*setup, script, mounts=mounts)
    assert status != 0 and out == "read me\n"
    assert not (shared / "new.txt").exists()


def test_read_only_file_of_another_owner(setup):
    """A root-owned host file mounted read-only: accepted by every mode, and writes fail."""
    if os.geteuid() == 0:
        pytest.skip("root may write any file: PRoot modes refuse every read-only mount")
    status, out, _ = run(*setup, ["sh", "-c", "cat /mnt/passwd >/dev/null && echo read; echo x >> /mnt/passwd"],
                         mounts=[Mount("/etc/passwd", "/mnt/passwd", readonly=True)])
    assert status != 0 and out == "read\n"


def test_files_persist_between_runs(setup):
    assert run(*setup, ["sh", "-c", "echo kept > /root/state.txt"])[0] == 0
    assert run(*setup, ["cat", "/root/state.txt"])[:2] == (0, "kept\n")


def test_unmounted_host_paths_are_invisible(setup, tmp_path):
    secret = tmp_path / "secret-on-host.txt"
    secret.write_text("secret\n")
    status, out, _ = run(*setup, ["sh", "-c", f"test -e {secret} && echo visible || echo hidden"])
    assert (status, out) == (0, "hidden\n")


@pytest.mark.parametrize("uid", [0, 1000])
def test_identity(setup, uid):
    status, out, err = run(*setup, ["sh", "-c", "id -u; id -g"], uid=uid, gid=uid)
    assert (status, out) == (0, f"{uid}\n{uid}\n"), err


def _alive(token):
    """Pids of processes whose command line holds token."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                if token.encode() in stream.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def _sleeping(token):
    """Whether `sleep TOKEN` runs (exec'd: the shell's own command line holds the token too)."""
    for pid in _alive(token):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                argv = stream.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"sleep" or argv[:2] == [b"sleep", token.encode()]:
            return True
    return False


def _children(pids):
    """Pids of the children of the processes `pids`, from /proc/*/stat (the 4th field is the parent's pid)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", "rb") as stream:
                data = stream.read()
        except OSError:
            continue
        if int(data[data.rindex(b")") + 2:].split()[1]) in pids:
            found.append(int(name))
    return found


def _signal(process, depth, number):
    """Send `number` where udocker's supervisor would (engines/supervisor.py): the processes Launch.signal_depth
    levels below the engine (the program under PRoot, which ignores SIGTERM), the engine itself at depth 0."""
    targets = [process.pid]
    for _ in range(depth):
        targets = _children(targets)
    assert targets, f"no process {depth} levels below the engine"
    for target in targets:
        os.kill(target, number)


def test_sigterm_reaches_the_program(setup):
    engine, mode, container = setup
    token = str(900000 + uuid.uuid4().int % 99999)
    # the trap's $! is expanded when it runs (escaped): the background sleep, which only the trap stops now that
    # the signal goes to the program alone, as docker does
    script = f'trap "echo got TERM; kill \\$!; exit 3" TERM; sleep {token} & echo ready; wait'
    launch = engine.command(make_spec(container, ["sh", "-c", script]), mode)
    process = start(launch)
    try:
        assert process.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 10  # let `sleep` start: PRoot can lose a signal that comes while a
        while not _sleeping(token) and time.monotonic() < deadline:  # tracee is exec'ing (the trap's kill)
            time.sleep(0.05)
        time.sleep(0.3)
        _signal(process, launch.signal_depth, signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        if launch.cleanup:
            subprocess.run(launch.cleanup, check=False)
    assert "got TERM" in out, err
    assert process.returncode in (3, 128 + 3, -signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _alive(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(token) == []


def test_concurrent_runs_of_one_container(setup):
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: run(*setup, ["sh", "-c", f"echo run {i}"]), range(16)))
    assert [(status, out) for status, out, _ in results] == [(0, f"run {i}\n") for i in range(16)]
    engine, mode, container = setup
    if mode.startswith("R"):  # the runtime deleted every container; one bundle per distinct configuration
        assert os.listdir(os.path.join(container.engine_dir(engine.name), "state")) == []
        assert len(os.listdir(os.path.join(container.engine_dir(engine.name), "bundles"))) == 16
