"""Pure parts of the fakechroot engine and elfpatch: path resolution in a rootfs, command() for each mode,
the loader's byte patch, ELF header reading, glibc version checks."""

import os
import shutil
import subprocess

import pytest

from tests.fixtures import glibc_rootfs
from udocker.engines import elfpatch, fakechroot
from udocker.engines.fakechroot import FakechrootEngine
from udocker.errors import EngineError
from udocker.paths import Layout
from udocker.runspec import Mount, RunSpec
from udocker.store.containers import Container

HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
LIBFAKECHROOT = "/usr/lib/x86_64-linux-gnu/fakechroot/libfakechroot.so"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    top = tmp_path_factory.mktemp("c")
    root = glibc_rootfs.build(str(top))
    os.symlink("/etc/abs-target", os.path.join(root, "etc/abs"))
    os.symlink("../../..", os.path.join(root, "etc/up"))
    with open(os.path.join(root, "usr/bin/script"), "w") as stream:
        stream.write("#!/bin/sh -e\necho hi\n")
    os.chmod(os.path.join(root, "usr/bin/script"), 0o755)
    return root


@pytest.mark.parametrize("path,mounts,expected", [
    ("/bin/ls", (), "/usr/bin/ls"),
    ("/lib64/ld-linux-x86-64.so.2", (), "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    ("/etc/abs", (), "/etc/abs-target"),
    ("/etc/up/etc/passwd", (), "/etc/passwd"),  # '..' stops at the container's root
    ("/../../etc/passwd", (), "/etc/passwd"),
    ("/data/x", (Mount("/srv/host", "/data"),), "@/srv/host/x"),
    ("/database", (Mount("/srv/host", "/data"),), "/database"),
])
def test_resolve(rootfs, path, mounts, expected):
    want = expected[1:] if expected.startswith("@") else rootfs + expected
    assert fakechroot.resolve(rootfs, path, mounts) == want


def test_library_dirs_follow_ld_so_conf_and_merge_links(rootfs):
    assert fakechroot.library_dirs(rootfs) == [rootfs + d for d in ("/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib")]


def make_spec(rootfs, argv, **kwargs):
    return RunSpec(rootfs=rootfs, argv=argv, env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/opt/lib"},
                   container_dir=os.path.dirname(rootfs), **kwargs)


@pytest.mark.parametrize("mode,argv,start,env_has,env_lacks", [
    ("F1", ["ls", "-l"], ["{root}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "--argv0", "ls",
                          "{root}/usr/bin/ls", "-l"],
     {"FAKECHROOT_ELFLOADER": "{root}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
      "LD_LIBRARY_PATH": "{root}/opt/lib:{root}/usr/lib/x86_64-linux-gnu:{root}/lib64:{root}/usr/lib"},
     ["FAKECHROOT_CMD_SUBST", "FAKECHROOT_ELFLOADER_OPT_ARGV0"]),
    ("F1", ["script", "a"], ["{root}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "--argv0", "/bin/sh",
                             "{root}/usr/bin/dash", "-e", "/usr/bin/script", "a"], {}, []),
    ("F1", ["/bin/ls"], ["{root}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "--argv0", "/bin/ls",
                         "{root}/usr/bin/ls"], {}, []),
])
def test_command_before_prepare(rootfs, mode, argv, start, env_has, env_lacks):
    engine = FakechrootEngine(None, Layout("/nonexistent"))
    launch = engine.command(make_spec(rootfs, argv, cwd="/tmp"), mode)
    assert launch.argv == [a.format(root=rootfs) for a in start]
    assert launch.cwd == rootfs + "/tmp"
    assert launch.env["LD_PRELOAD"] == LIBFAKECHROOT
    assert launch.env["FAKECHROOT_BASE"] == rootfs
    assert launch.env["FAKECHROOT_EXCLUDE_PATH"] == "/dev:/proc:/sys"
    for key, value in env_has.items():
        assert launch.env[key] == value.format(root=rootfs)
    for key in env_lacks:
        assert key not in launch.env


@pytest.mark.parametrize("mode,elfloader,library_path,first", [
    ("F1", True, True, "rootfs/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    ("F2", True, True, "engine/fakechroot/ld/ld-linux-x86-64.so.2"),
    ("F3", False, False, "engine/fakechroot/ld/ld-linux-x86-64.so.2"),
    ("F4", False, False, "engine/fakechroot/ld/ld-linux-x86-64.so.2"),
])
def test_command_after_prepare(tmp_path, mode, elfloader, library_path, first):
    root = glibc_rootfs.build(str(tmp_path))
    engine = FakechrootEngine(None, Layout(str(tmp_path / "udocker")))
    engine.prepare(Container(str(tmp_path), {"id": "x"}), mode)
    spec = RunSpec(rootfs=root, argv=["id", "-u"], env={"PATH": "/bin"}, container_dir=str(tmp_path),
                   mounts=[Mount("/srv/a", "/a"), Mount("/srv/b", "/srv/b")])
    launch = engine.command(spec, mode)
    assert launch.argv == [str(tmp_path / first), "--argv0", "id", root + "/usr/bin/id", "-u"]
    assert ("FAKECHROOT_ELFLOADER" in launch.env) is elfloader
    assert ("LD_LIBRARY_PATH" in launch.env) is library_path
    assert launch.env["FAKECHROOT_EXCLUDE_PATH"] == "/dev:/proc:/sys:/srv/a:/srv/b"
    assert launch.env["PATH"] == "/bin"
    if mode in ("F3", "F4"):
        assert launch.env["FAKECHROOT_CMD_SUBST"].startswith(f"/sbin/ldconfig={root}/usr/bin/true:")


@pytest.mark.parametrize("argv,cwd,message", [
    (["nosuch"], "/", "executable file not found in the container: nosuch"),
    (["/etc/passwd"], "/", "executable file not found"),
    (["ls"], "/nonexistent", "working directory not found in the container: /nonexistent"),
    ([], "/", "no command"),
])
def test_command_errors(rootfs, argv, cwd, message):
    engine = FakechrootEngine(None, Layout("/nonexistent"))
    with pytest.raises(EngineError, match=message):
        engine.command(make_spec(rootfs, argv, cwd=cwd), "F1")


def test_command_writes_nothing(rootfs):
    before = sorted(os.walk(os.path.dirname(rootfs)))
    FakechrootEngine(None, Layout("/nonexistent")).command(make_spec(rootfs, ["ls"]), "F2")
    assert sorted(os.walk(os.path.dirname(rootfs))) == before


def test_readonly_mount_refused_when_writable(tmp_path):
    with pytest.raises(EngineError, match="read-only"):
        fakechroot.check_readonly_mounts([Mount(str(tmp_path), "/x", readonly=True)])
    fakechroot.check_readonly_mounts([Mount(str(tmp_path), "/x")])


def test_read_elf_of_host_programs():
    info = elfpatch.read_elf(shutil.which("ls"))
    assert info.interp == HOST_LOADER and info.dynamic
    loader = elfpatch.read_elf(os.path.realpath(HOST_LOADER))
    assert loader.interp is None and loader.dynamic
    assert elfpatch.read_elf("/etc/passwd") is None
    assert elfpatch.is_elf(shutil.which("ls")) and not elfpatch.is_elf("/etc/passwd")


@pytest.mark.parametrize("args,rpath,runpath", [
    (["--set-rpath", "/opt/a:$ORIGIN/../lib"], None, "/opt/a:$ORIGIN/../lib"),
    (["--force-rpath", "--set-rpath", "/opt/b"], "/opt/b", None),
])
def test_read_elf_rpath(tmp_path, args, rpath, runpath):
    if not shutil.which("patchelf"):
        pytest.skip("patchelf is not installed")
    copy = tmp_path / "ls"
    shutil.copy(shutil.which("ls"), copy)
    subprocess.run(["patchelf", *args, str(copy)], check=True)
    info = elfpatch.read_elf(str(copy))
    assert (info.rpath, info.runpath) == (rpath, runpath)


@pytest.mark.parametrize("interp,rpath,runpath,expected", [
    (HOST_LOADER, None, None, ["--set-interpreter", "/L", "--force-rpath", "--set-rpath", "/R/lib"]),
    (HOST_LOADER, None, "/opt/x:$ORIGIN", ["--set-interpreter", "/L", "--force-rpath", "--set-rpath",
                                            "/R/opt/x:$ORIGIN:/R/lib"]),
    ("/L", None, None, []),  # already patched
    ("/lib/ld-musl-x86_64.so.1", None, None, []),  # another loader
    (None, None, None, []),  # a library without its own path inherits the executable's
    (None, "/usr/lib/foo", None, ["--force-rpath", "--set-rpath", "/R/usr/lib/foo:/R/lib"]),
    (None, "/R/lib", None, []),
])
def test_plan_patch(interp, rpath, runpath, expected):
    info = elfpatch.ElfInfo(interp=interp, dynamic=True, rpath=rpath, runpath=runpath)
    assert elfpatch.plan_patch(info, rootfs="/R", interpreters={HOST_LOADER: "/L"}, libdirs=["/R/lib"]) == expected


def test_loader_patch_hides_host_paths(tmp_path):
    target = str(tmp_path / "ld.so")
    changes = elfpatch.patch_loader(os.path.realpath(HOST_LOADER), target)
    olds = {old for _, old, _ in changes}
    assert {b"/etc/ld.so.cache", b"/etc/ld.so.preload", b"/lib/", b"/usr/lib/"} <= olds
    with open(os.path.realpath(HOST_LOADER), "rb") as stream:
        original = stream.read()
    with open(target, "rb") as stream:
        patched = stream.read()
    assert len(patched) == len(original)
    assert b"/etc/ld.so.cache\0" not in patched and b"/###############\0" in patched
    assert b"\0/usr/lib/\0" not in patched
    # the copy still works as a loader
    result = subprocess.run([target, "--library-path", os.path.dirname(os.path.realpath(HOST_LOADER)),
                             shutil.which("true")], check=False)
    assert result.returncode == 0


def test_loader_patch_refuses_other_files(tmp_path):
    with pytest.raises(ValueError, match="glibc's dynamic loader"):
        elfpatch.patch_loader(shutil.which("ls"), str(tmp_path / "x"))


def test_missing_versions(tmp_path):
    old_libc = tmp_path / "libc.so.6"
    old_libc.write_bytes(b"\0GLIBC_2.2.5\0GLIBC_2.14\0GLIBC_2.17\0")
    assert fakechroot.missing_versions(LIBFAKECHROOT, str(old_libc))[-1] == "GLIBC_2.34"
    host_libc = "/lib/x86_64-linux-gnu/libc.so.6"
    assert fakechroot.missing_versions(LIBFAKECHROOT, host_libc) == []


def test_find_elf_files(tmp_path):
    (tmp_path / "bin").mkdir()
    shutil.copy(shutil.which("ls"), tmp_path / "bin/ls")
    (tmp_path / "bin/text").write_text("x" * 100)
    os.symlink("ls", tmp_path / "bin/link")
    (tmp_path / "proc").mkdir()
    shutil.copy(shutil.which("ls"), tmp_path / "proc/ls")
    assert elfpatch.find_elf_files(str(tmp_path), skip=("proc",)) == ["bin/ls"]
    assert elfpatch.find_elf_files(str(tmp_path), newer_than=os.stat(tmp_path / "bin/ls").st_ctime + 1) == []


def test_links_a_concurrent_run_uses_are_kept(tmp_path):
    """Issue 10 item 7: a run that does not ask for a link (no --nvidia) leaves it while the run that asked
    for it is alive; once that run is over, the next run removes it; unprepare removes everything."""
    rootfs = tmp_path / "c" / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    source = tmp_path / "driver"
    source.mkdir()
    state = str(tmp_path / "c" / "fakechroot")
    os.makedirs(state)
    engine = FakechrootEngine(None, None)
    link = rootfs / ".udocker" / "nvidia"
    engine._reconcile_links(state, str(rootfs), [Mount(str(source), "/.udocker/nvidia")])
    assert os.readlink(link) == str(source)
    links = fakechroot.read_json(os.path.join(state, "links.json"))
    links["/.udocker/nvidia"]["users"] = [fakechroot.run_id(os.getppid())]  # another live udocker run
    fakechroot.write_json(os.path.join(state, "links.json"), links)
    engine._reconcile_links(state, str(rootfs), [])
    assert os.readlink(link) == str(source)
    links["/.udocker/nvidia"]["users"] = [fakechroot.run_id(os.getppid()) + "0"]  # the pid's start differs: over
    fakechroot.write_json(os.path.join(state, "links.json"), links)
    engine._reconcile_links(state, str(rootfs), [])
    assert not os.path.lexists(link)
    engine._reconcile_links(state, str(rootfs), [Mount(str(source), "/.udocker/nvidia")])
    links = fakechroot.read_json(os.path.join(state, "links.json"))
    links["/.udocker/nvidia"]["users"] = ["other-node~boot~1~1~1"]  # cannot be checked from here: kept
    fakechroot.write_json(os.path.join(state, "links.json"), links)
    engine._reconcile_links(state, str(rootfs), [])
    assert os.path.islink(link)
    engine._reconcile_links(state, str(rootfs), [], keep_in_use=False)
    assert not os.path.lexists(link)


def test_run_alive():
    assert fakechroot.run_alive(fakechroot.run_id())
    assert not fakechroot.run_alive(fakechroot.run_id() + "1")
    assert fakechroot.run_alive("elsewhere~boot~1~1~2") and not fakechroot.run_alive("junk")
