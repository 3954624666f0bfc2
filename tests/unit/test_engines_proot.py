"""ProotEngine.command() and probe(), and the helpers shared with the OCI engines: pure, no engine runs."""

import os

import pytest

from tests.fixtures.rootfs import make_container
from udocker.engines.common import find_program
from udocker.engines.proot import ProotEngine
from udocker.errors import EngineError, EngineUnavailable
from udocker.paths import Layout
from udocker.rootpath import resolve
from udocker.runspec import Mount, RunSpec


@pytest.fixture
def container(tmp_path):
    return make_container(tmp_path / "c")


@pytest.fixture
def engine(tmp_path):
    """A ProotEngine whose proot is a stand-in script in the repository's engines/bin."""
    layout = Layout(str(tmp_path / "repo"))
    os.makedirs(os.path.join(layout.engines, "bin"))
    fake = os.path.join(layout.engines, "bin", "proot")
    with open(fake, "w", encoding="ascii") as stream:
        stream.write("#!/bin/sh\necho 'proot error: ptrace(TRACEME): Operation not permitted' >&2\nexit 1\n")
    os.chmod(fake, 0o755)
    return ProotEngine(None, layout)


def spec(container, argv, **options):
    return RunSpec(rootfs=container.rootfs, argv=argv, env=options.pop("env", {"PATH": "/bin", "A": "1"}),
                   container_dir=container.dir, container_id="c1", **options)


CASES = [
    # (mode, spec options, expected argv after the proot binary)
    ("P1", {}, ["-0", "-r", "{root}", "-w", "/", "/bin/sh", "-c", "true"]),
    ("P2", {"uid": 1000, "gid": 100, "cwd": "/tmp"}, ["-i", "1000:100", "-r", "{root}", "-w", "/tmp", "/bin/sh",
                                                     "-c", "true"]),
    ("P1", {"mounts": [Mount("/data", "/mnt"), Mount("/dev", "/dev")]},
     ["-0", "-r", "{root}", "-w", "/", "-b", "/data:/mnt", "-b", "/dev:/dev", "/bin/sh", "-c", "true"]),
    ("P1", {"devices": ["/dev/fuse"]}, ["-0", "-r", "{root}", "-w", "/", "-b", "/dev/fuse:/dev/fuse", "/bin/sh",
                                        "-c", "true"]),
]


@pytest.mark.parametrize("mode, options, expected", CASES)
def test_command_line(engine, container, mode, options, expected):
    launch = engine.command(spec(container, ["sh", "-c", "true"], **options), mode)
    proot = launch.argv.index(engine.binary())
    assert launch.argv[proot + 1:] == [a.replace("{root}", container.rootfs) for a in expected]
    assert launch.argv[:proot] in ([], ["/usr/bin/timeout", "-k", "10", "0"], ["/bin/timeout", "-k", "10", "0"])
    assert launch.cleanup is None
    assert "-k" not in launch.argv[proot:]  # never the kernel-release option the distribution's PRoot lacks


@pytest.mark.parametrize("mode, seccomp_off", [("P1", False), ("P2", True)])
def test_environment_is_the_container_env_plus_proot(engine, container, mode, seccomp_off, monkeypatch):
    monkeypatch.setenv("HOST_ONLY", "x")
    env = engine.command(spec(container, ["/bin/true"], env={"PATH": "/bin", "PROOT_NO_SECCOMP": "1"}), mode).env
    assert env.pop("PROOT_TMP_DIR") == os.path.join(container.dir, "engine", "proot", "tmp")
    assert env == ({"PATH": "/bin", "PROOT_NO_SECCOMP": "1"} if seccomp_off else {"PATH": "/bin"})


def test_terminal_runs_proot_directly(engine, container):
    assert engine.command(spec(container, ["/bin/true"], tty=True), "P1").argv[0] == engine.binary()


def test_cpuset_uses_taskset(engine, container):
    argv = engine.command(spec(container, ["/bin/true"], cpuset="0-1"), "P1").argv
    assert argv[0].endswith("/taskset") and argv[1:3] == ["-c", "0-1"]


def test_read_only_directory_in_a_private_mount_namespace(engine, container, tmp_path, monkeypatch):
    """Where user namespaces work, the source is bind-mounted read-only onto itself in a private mount
    namespace before PRoot starts; where they do not, the mount is refused rather than left writable."""
    ro = spec(container, ["/bin/true"], mounts=[Mount(str(tmp_path), "/mnt", readonly=True)])
    monkeypatch.setattr(engine, "_readonly_namespace_works", lambda: True)
    argv = engine.command(ro, "P1").argv
    unshare = argv.index(next(a for a in argv if a.endswith("/unshare")))
    assert argv[unshare + 1:unshare + 5] == ["--user", "--map-root-user", "--mount", "/bin/sh"]
    assert f"--bind {tmp_path} {tmp_path}" in argv[unshare + 6] and "remount,bind,ro" in argv[unshare + 6]
    assert argv[unshare + 8] == engine.binary()
    monkeypatch.setattr(engine, "_readonly_namespace_works", lambda: False)
    with pytest.raises(EngineError, match="read-only"):
        engine.command(ro, "P1")


def test_program_lookup(container):
    os.symlink("/bin", os.path.join(container.rootfs, "usr", "xbin"))  # absolute link: resolved in the rootfs
    assert find_program(container.rootfs, "ls", {"PATH": "/nowhere:/usr/xbin"}) == "/usr/xbin/ls"
    assert find_program(container.rootfs, "ls", {}) == "/bin/ls"
    assert find_program(container.rootfs, "./x", {}) == "./x"
    with pytest.raises(EngineError, match="not found in the container's PATH: nosuch"):
        find_program(container.rootfs, "nosuch", {"PATH": "/bin"})


def test_resolve_stays_inside_the_rootfs(container):
    os.symlink("../../../../..", os.path.join(container.rootfs, "up"))
    assert resolve(container.rootfs, "/up/etc/passwd") == os.path.join(container.rootfs, "etc", "passwd")


def test_probe_reports_why(engine):
    with pytest.raises(EngineUnavailable, match=r"proot cannot run: proot error: ptrace\(TRACEME\)"):
        engine.probe("P2")


def test_probe_missing_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineUnavailable, match="proot not found"):
        ProotEngine(None, Layout(str(tmp_path / "repo"))).probe("P1")


def test_prepare_and_unprepare(engine, container):
    engine.prepare(container, "P1")
    assert os.path.isdir(os.path.join(container.engine_dir("proot"), "tmp"))
    engine.unprepare(container, "P1")
    assert not os.path.exists(container.engine_dir("proot"))


def test_the_program_run_found_is_not_searched_again(engine, container, monkeypatch):
    """`run` checked the program (runbuild.check_program) and kept what it found in RunSpec.program: the
    engine's command uses it without a second walk of PATH (each step an lstat in the repository)."""
    found = spec(container, ["ls"])
    found.program = "/usr/xbin/ls"
    monkeypatch.setattr(os, "lstat", lambda path: pytest.fail(f"lstat({path})"))
    assert "/usr/xbin/ls" in engine.command(found, "P1").argv
