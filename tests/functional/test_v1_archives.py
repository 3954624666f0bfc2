"""Archives from and for udocker 1.3 (issue 12, item 2), with the real udocker 1.3.17: clone archives both ways,
1.3's `save` loaded by udocker 2, a flat rootfs tarball as a container, hostile clone archives refused whole."""

import io
import json
import os
import tarfile

import pytest


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _debian_version(output):
    return any(line.startswith("12.") for line in output.splitlines())


@pytest.fixture
def v13(udocker13, debian_image, tmp_path):
    """udocker 1.3 on a repository of its own, with test/debian:12 pulled."""
    runner = udocker13(str(tmp_path / "v13"))
    ok(runner("pull", f"--registry=http://{debian_image.registry.host}", debian_image.name))
    return runner


@pytest.mark.parametrize("mode", ["P1", "F1", "F2", "F3", "F4"])
def test_13_clone_archive_runs_in_udocker2(v13, udocker, tmp_path, mode):
    ok(v13("create", "--name=c13", "test/debian:12"))
    if mode != "P1":
        ok(v13("setup", f"--execmode={mode}", "c13"))
    archive = tmp_path / "c13.tar"
    ok(v13("export", "--clone", "-o", str(archive), "c13"))
    # F2-F4: 1.3 patched its loader in place, F3/F4 each program's interpreter with the host path of its ROOT, and
    # its own import --clone keeps them so: the copy runs only while the original is there ("container path
    # mismatch, use setup to convert"). udocker 2 undoes the patches: the original is not needed.
    ok(v13("rm", "c13"))
    cid = ok(udocker("import", "--clone", "--name=back", str(archive))).strip()
    if mode in ("F2", "F3", "F4"):
        from udocker.engines.elfpatch import read_elf

        rootfs = os.path.join(udocker.repo, "containers", cid, "rootfs")
        assert read_elf(os.path.join(rootfs, "usr", "bin", "cat")).interp == "/lib64/ld-linux-x86-64.so.2"
        with tarfile.open(archive) as opened:
            original = opened.extractfile("./ld.so.orig").read()
        with open(os.path.join(rootfs, "usr", "lib", "x86_64-linux-gnu", "ld-linux-x86-64.so.2"), "rb") as stream:
            assert stream.read() == original
    record = json.loads(ok(udocker("inspect", "back")))
    # no execmode file (1.3's default mode) is no mode here either: the default execution mode applies
    assert record["id"] == cid and record["mode"] == (None if mode == "P1" else mode)
    assert record["image"] == "test/debian:12"
    assert record["config"]["Cmd"] == ["/bin/bash"]
    ran = udocker("run", "back", "cat", "/etc/debian_version")
    assert ran.returncode == 0 and _debian_version(ran.stdout), ran.stdout + ran.stderr
    # no command: the image's Cmd (bash), in its WorkingDir, with its Env
    shell = udocker("run", "back", input="pwd; echo PATH=$PATH\n")
    assert shell.returncode == 0, shell.stderr
    lines = shell.stdout.splitlines()
    assert lines[0] == "/root" and lines[1].startswith("PATH=/usr/local/sbin:"), shell.stdout
    assert "ROOT" not in os.listdir(os.path.join(udocker.repo, "containers", cid, "rootfs"))


def test_udocker2_clone_archive_runs_in_13_and_back(v13, udocker, debian_image, tmp_path):
    ok(udocker("-q", "pull", debian_image.ref))
    ok(udocker("create", "--name=c2", debian_image.ref))
    ok(udocker("setup", "--execmode=F1", "c2"))
    ok(udocker("run", "c2", "sh", "-c", "echo made-by-2 > /root/mark"))
    archive = tmp_path / "c2.tar"
    ok(udocker("export", "--clone", "-o", str(archive), "c2"))
    with tarfile.open(archive) as opened:
        names = set(opened.getnames())
    assert {"ROOT/etc/debian_version", "container.json", "imagerepo.name", "execmode"} <= names
    ok(v13("import", "--clone", "--name=c2back", str(archive)))
    assert "F1" in ok(v13("setup", "c2back")) or "F1" in ok(v13("ps", "-m"))
    ran = v13("run", "--nobanner", "c2back", "cat", "/etc/debian_version", "/root/mark")
    assert ran.returncode == 0 and _debian_version(ran.stdout) and "made-by-2" in ran.stdout, ran.stdout + ran.stderr
    # and udocker 2 reads its own archive back with its record
    ok(udocker("import", "--clone", "--name=again", str(archive)))
    record = json.loads(ok(udocker("inspect", "again")))
    assert record["mode"] == "F1" and record["image"] == json.loads(ok(udocker("inspect", "c2")))["image"]
    assert "made-by-2" in ok(udocker("run", "again", "cat", "/root/mark"))


def test_13_save_loads_in_udocker2_by_file_and_stdin(v13, udocker, tmp_path):
    saved = tmp_path / "saved.tar"
    ok(v13("save", "-o", str(saved), "test/debian:12"))
    loaded = ok(udocker("load", "-i", str(saved)))
    assert "test/debian:12" in loaded
    ran = udocker("run", "--rm", "test/debian:12", "cat", "/etc/debian_version")
    assert ran.returncode == 0 and _debian_version(ran.stdout), ran.stdout + ran.stderr
    ok(udocker("rmi", "test/debian:12"))
    with open(saved, "rb") as stream:
        import subprocess
        import sys

        piped = subprocess.run([sys.executable, "-m", "udocker", "--repo", udocker.repo, "load"], stdin=stream,
                               env=udocker.env, capture_output=True, text=True, timeout=300, cwd=udocker.cwd)
    assert piped.returncode == 0 and "test/debian:12" in piped.stdout, piped.stderr


def test_flat_rootfs_tarball_becomes_a_container_that_runs(udocker, debian_image, tmp_path):
    ok(udocker("-q", "pull", debian_image.ref))
    ok(udocker("create", "--name=src", debian_image.ref))
    flat = tmp_path / "flat.tar"
    ok(udocker("export", "-o", str(flat), "src"))
    ok(udocker("import", "--tocontainer", "--name=flat", str(flat)))
    ran = udocker("run", "flat", "cat", "/etc/debian_version")
    assert ran.returncode == 0 and _debian_version(ran.stdout), ran.stdout + ran.stderr


def _hostile(path, extra, *, root=True):
    with tarfile.open(path, "w") as archive:
        def add(name, kind="file", data=b"", link=""):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("./container.json", tarfile.REGTYPE, b'{"config": {}}')
        if root:
            add("./ROOT", tarfile.DIRTYPE)
            add("./ROOT/etc", tarfile.DIRTYPE)
            add("./ROOT/etc/hostname", tarfile.REGTYPE, b"x\n")
        for member in extra:
            add(*member)
    return str(path)


@pytest.mark.parametrize("extra, root", [
    ([("/tmp/udocker-evil", tarfile.REGTYPE, b"x")], True),
    ([("./ROOT/../../evil", tarfile.REGTYPE, b"x")], True),
    ([("./ROOT/etc/esc", tarfile.SYMTYPE, b"", "../../../..")], True),
    ([("./ROOT/etc/hl", tarfile.LNKTYPE, b"", "container.json")], True),
    ([], False),
], ids=["absolute", "dotdot", "symlink-escape", "hardlink-out", "no-root"])
def test_hostile_clone_archives_are_refused_and_leave_nothing(udocker, tmp_path, extra, root):
    ok(udocker("ps"))  # the repository exists: what it holds before is compared with after
    before = {d: sorted(os.listdir(os.path.join(udocker.repo, d))) for d in ("containers", "tmp")}
    result = udocker("import", "--clone", "--name=bad", _hostile(tmp_path / "bad.tar", extra, root=root))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("error: not a container clone archive") and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    after = {d: sorted(os.listdir(os.path.join(udocker.repo, d))) for d in ("containers", "tmp")}
    assert after == before
    assert not os.path.lexists("/tmp/udocker-evil") and not (tmp_path / "evil").exists()
    assert json.loads(ok(udocker("ps", "--json"))) == []


def test_export_writes_f3_programs_as_they_were_before_the_patch(udocker, debian_image, tmp_path):
    from udocker.engines.elfpatch import read_elf

    ok(udocker("-q", "pull", debian_image.ref))
    ok(udocker("create", "--name=f3", debian_image.ref))
    ok(udocker("setup", "--execmode=F3", "f3"))
    ok(udocker("run", "f3", "true"))
    rootfs = os.path.join(udocker.repo, "containers", json.loads(ok(udocker("inspect", "f3")))["id"], "rootfs")
    assert read_elf(os.path.join(rootfs, "usr", "bin", "cat")).interp.startswith(udocker.repo)  # patched here
    for flag, member in (("--clone", "ROOT/usr/bin/cat"), (None, "./usr/bin/cat")):
        archive = tmp_path / "f3.tar"
        ok(udocker("export", *([flag] if flag else []), "-o", str(archive), "f3"))
        with tarfile.open(archive) as opened:
            data = opened.extractfile(member).read()
        (tmp_path / "cat").write_bytes(data)
        assert read_elf(str(tmp_path / "cat")).interp == "/lib64/ld-linux-x86-64.so.2"
