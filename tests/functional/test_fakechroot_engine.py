"""The fakechroot engine running real programs in a tiny glibc rootfs (tests/fixtures/glibc_rootfs.py),
in each of the modes F1-F4, with Debian's libfakechroot and patchelf. Meant to pass as an unprivileged
user: CI runs it as `udtest`."""

import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from tests.fixtures import glibc_rootfs
from udocker.engines import elfpatch
from udocker.engines.fakechroot import FakechrootEngine
from udocker.errors import EngineError, EngineUnavailable
from udocker.paths import Layout
from udocker.runspec import Mount, RunSpec
from udocker.store.containers import Container

LIBFAKECHROOT = "/usr/lib/x86_64-linux-gnu/fakechroot/libfakechroot.so"
MODES = ("F1", "F2", "F3", "F4")

pytestmark = pytest.mark.skipif(not (os.path.exists(LIBFAKECHROOT) and shutil.which("patchelf")),
                                reason="fakechroot or patchelf is not installed")


@pytest.fixture
def box(tmp_path):
    directory = tmp_path / "containers" / "c1"
    directory.mkdir(parents=True)
    glibc_rootfs.build(str(directory))
    return Box(tmp_path, Container(str(directory), {"id": "c1"}))


class Box:
    def __init__(self, tmp_path, container):
        self.tmp = tmp_path
        self.container = container
        self.engine = FakechrootEngine(None, Layout(str(tmp_path / "udocker")))

    def spec(self, argv, *, mounts=(), cwd="/", env=None):
        environ = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "FOO": "bar baz"}
        environ.update(env or {})
        return RunSpec(rootfs=self.container.rootfs, argv=argv, env=environ, cwd=cwd, mounts=mounts,
                       container_dir=self.container.dir, container_id="c1")

    def run(self, mode, argv, **kwargs):
        self.engine.prepare(self.container, mode)
        spec = self.spec(argv, **kwargs)
        self.engine.before_run(spec, mode)
        launch = self.engine.command(spec, mode)
        return subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)

    def sh(self, mode, script, **kwargs):
        return self.run(mode, ["sh", "-c", script], **kwargs)


def listing(top):
    """Every entry under `top` with type, mode, owner, size, inode, content hash or link target."""
    out = []
    for directory, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            what = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as stream:
                    what = hashlib.sha256(stream.read()).hexdigest()
            out.append((os.path.relpath(path, top), st.st_mode, st.st_uid, st.st_size, st.st_ino, st.st_nlink,
                        st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else 0, what))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_dynamic_program_runs(box, mode):
    result = box.run(mode, ["ls", "--version"])
    assert result.returncode == 0, result.stderr
    assert "GNU coreutils" in result.stdout


@pytest.mark.parametrize("mode", MODES)
def test_exit_status_env_cwd_argv0(box, mode):
    result = box.sh(mode, 'echo "$0|$FOO|$(pwd)"; exit 7', cwd="/work")
    assert result.returncode == 7, result.stderr
    assert result.stdout == "sh|bar baz|/work\n"


@pytest.mark.parametrize("mode", MODES)
def test_children_run_in_the_container(box, mode):
    # a child exec'd by the shell (through libfakechroot's execve) uses the container's files too
    result = box.sh(mode, "cat /etc/hostname; env | grep -c . >/dev/null; readlink /bin; ls /root | wc -l",
                    env={"PATH": "/usr/bin"})
    assert result.stdout.splitlines()[:2] == ["container", "usr/bin"], result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_host_paths_are_not_visible(box, mode):
    secret = box.tmp / "secret.txt"
    secret.write_text("host only\n")
    result = box.sh(mode, f"ls /root /home; cat {secret}")
    assert result.returncode != 0
    assert "No such file" in result.stderr
    assert result.stdout == "/home:\n\n/root:\n"  # the container's, empty


@pytest.mark.parametrize("mode", MODES)
def test_files_persist_between_runs(box, mode):
    assert box.sh(mode, "echo kept > /tmp/state").returncode == 0
    assert (box.tmp / "containers/c1/rootfs/tmp/state").read_text() == "kept\n"
    assert box.sh(mode, "cat /tmp/state").stdout == "kept\n"


@pytest.mark.parametrize("mode", MODES)
def test_mount_read_write(box, mode):
    data = box.tmp / "data"
    data.mkdir()
    (data / "in.txt").write_text("from host\n")
    mounts = [Mount(str(data), "/mnt/data")]
    result = box.sh(mode, "cat /mnt/data/in.txt; echo from container > /mnt/data/out.txt; cd /mnt/data; ls",
                    mounts=mounts)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from host\nin.txt\nout.txt\n"
    assert (data / "out.txt").read_text() == "from container\n"
    # a later run without the mount does not see it, and the directory it covered is back
    result = box.sh(mode, "ls /mnt/data")
    assert result.returncode != 0
    assert not os.path.lexists(box.tmp / "containers/c1/rootfs/mnt/data")


@pytest.mark.parametrize("mode", MODES)
def test_mount_covers_an_existing_directory(box, mode):
    data = box.tmp / "data"
    data.mkdir()
    (data / "in.txt").write_text("x")
    before = listing(box.container.rootfs)
    result = box.sh(mode, "ls /work", mounts=[Mount(str(data), "/work")])
    assert result.stdout == "in.txt\n", result.stderr
    box.engine.unprepare(box.container, mode)
    assert listing(box.container.rootfs) == before


@pytest.mark.parametrize("mode", MODES)
def test_mount_read_only(box, mode):
    data = box.tmp / "ro"
    data.mkdir()
    (data / "in.txt").write_text("read me\n")
    mounts = [Mount(str(data), "/ro", readonly=True)]
    with pytest.raises(EngineError, match="read-only"):  # writable by this user: refused
        box.run(mode, ["cat", "/ro/in.txt"], mounts=mounts)
    os.chmod(data / "in.txt", 0o444)
    os.chmod(data, 0o555)
    try:
        if os.geteuid() == 0:  # root may write anywhere: always refused
            with pytest.raises(EngineError, match="read-only"):
                box.run(mode, ["cat", "/ro/in.txt"], mounts=mounts)
            return
        result = box.sh(mode, "cat /ro/in.txt; echo x > /ro/new; echo y >> /ro/in.txt", mounts=mounts)
        assert result.stdout == "read me\n"
        assert result.returncode != 0
        assert "Permission denied" in result.stderr
        assert sorted(os.listdir(data)) == ["in.txt"]
        assert (data / "in.txt").read_text() == "read me\n"
    finally:
        os.chmod(data, 0o755)


@pytest.mark.parametrize("mode", MODES)
def test_unprepare_restores_the_tree_exactly(box, mode):
    data = box.tmp / "data"
    data.mkdir()
    before = listing(box.container.rootfs)
    assert box.sh(mode, "true", mounts=[Mount(str(data), "/data")]).returncode == 0
    box.engine.unprepare(box.container, mode)
    assert listing(box.container.rootfs) == before
    assert not os.path.exists(box.container.engine_dir("fakechroot"))


def test_f3_patches_and_back_to_f1_restores(box):
    ls = os.path.join(box.container.rootfs, "usr/bin/ls")
    before = listing(box.container.rootfs)
    box.engine.prepare(box.container, "F3")
    copy = os.path.join(box.container.engine_dir("fakechroot"), "ld", "ld-linux-x86-64.so.2")
    info = elfpatch.read_elf(ls)
    assert info.interp == copy
    assert info.rpath.split(":")[0] == os.path.join(box.container.rootfs, "usr/lib/x86_64-linux-gnu")
    box.engine.prepare(box.container, "F1")  # switching mode puts the originals back
    assert elfpatch.read_elf(ls).interp == "/lib64/ld-linux-x86-64.so.2"
    box.engine.unprepare(box.container, "F1")
    assert listing(box.container.rootfs) == before


def test_prepare_never_writes_into_a_hard_linked_file(box):
    ls = os.path.join(box.container.rootfs, "usr/bin/ls")
    os.chmod(ls, 0o555)  # the store makes shared files read-only
    outside = box.tmp / "image-cache-ls"
    os.link(ls, outside)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    box.engine.prepare(box.container, "F3")
    assert hashlib.sha256(outside.read_bytes()).hexdigest() == digest
    assert elfpatch.read_elf(str(outside)).interp == "/lib64/ld-linux-x86-64.so.2"
    assert os.stat(outside).st_nlink == 2  # the other link is the saved original, not the rootfs file
    assert os.stat(ls).st_ino != os.stat(outside).st_ino
    assert stat.S_IMODE(os.stat(ls).st_mode) == 0o555
    box.engine.unprepare(box.container, "F3")
    assert os.stat(ls).st_ino == os.stat(outside).st_ino


def test_f4_patches_programs_added_after_prepare(box):
    box.engine.prepare(box.container, "F4")
    added = os.path.join(box.container.rootfs, "usr/local/bin/myid")
    os.makedirs(os.path.dirname(added))
    shutil.copy2(shutil.which("id"), added)  # copy2 keeps the old mtime: the change time still tells
    result = box.run("F4", ["sh", "-c", "myid -u"])
    assert result.stdout.strip() == str(os.getuid()), result.stderr
    assert elfpatch.read_elf(added).interp.startswith(box.container.engine_dir("fakechroot"))
    box.engine.unprepare(box.container, "F4")
    assert elfpatch.read_elf(added).interp == "/lib64/ld-linux-x86-64.so.2"


def test_f3_leaves_programs_added_later_alone(box):
    box.engine.prepare(box.container, "F3")
    added = os.path.join(box.container.rootfs, "usr/bin/myid")
    shutil.copy2(shutil.which("id"), added)
    box.engine.prepare(box.container, "F3")
    assert elfpatch.read_elf(added).interp == "/lib64/ld-linux-x86-64.so.2"
    result = box.run("F3", ["myid", "-u"])  # started through the loader all the same
    assert result.stdout.strip() == str(os.getuid()), result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_static_program_is_refused(box, mode):
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    shutil.copy2(busybox, os.path.join(box.container.rootfs, "usr/bin/busybox"))
    box.engine.prepare(box.container, mode)
    with pytest.raises(EngineError, match="static program /usr/bin/busybox"):
        box.engine.command(box.spec(["busybox", "true"]), mode)


def test_static_only_container_is_unavailable(tmp_path):
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    rootfs = tmp_path / "c" / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(busybox, rootfs / "bin/busybox")
    os.symlink("busybox", rootfs / "bin/sh")
    engine = FakechrootEngine(None, Layout(str(tmp_path / "udocker")))
    container = Container(str(tmp_path / "c"), {"id": "c"})
    for mode in MODES:
        with pytest.raises(EngineUnavailable, match="only static programs"):
            engine.probe(mode, container)
        with pytest.raises(EngineUnavailable, match="only static programs"):
            engine.prepare(container, mode)
