"""Clone archives and udocker 1.x container records (udocker/archive/clone.py, udocker/store/v1records.py)."""

import io
import json
import tarfile

import pytest

from udocker.archive import clone
from udocker.errors import UdockerError
from udocker.paths import Layout
from udocker.store import v1patches
from udocker.store import v1records as v1

IMAGE_CONFIG = {"architecture": "amd64", "os": "linux",
                "config": {"Env": ["PATH=/usr/bin:/bin", "A=1"], "Cmd": ["/bin/sh"], "Entrypoint": None}}


def _archive(path, entries):
    """entries: (name, kind, data or link target); kind: file, dir, sym, lnk, chr."""
    with tarfile.open(path, "w") as archive:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE}[kind]
            info.mode = 0o755 if kind == "dir" else 0o777
            info.linkname = data or ""
            archive.addfile(info)
    return str(path)


def _v13(path, *extra, mode=b"F1"):
    """An archive shaped as udocker 1.3's export --clone writes it (tar -C containerdir -c .)."""
    entries = [("./", "dir", None), ("./ROOT", "dir", None), ("./ROOT/bin", "dir", None),
               ("./ROOT/bin/sh", "file", b"#!sh"), ("./ROOT/usr", "dir", None),
               ("./ROOT/usr/lib", "sym", "../lib"), ("./ROOT/etc", "dir", None),
               ("./ROOT/etc/alt", "sym", "/usr/bin/x"), ("./ROOT/bin/sh2", "lnk", "./ROOT/bin/sh"),
               ("./container.json", "file", json.dumps(IMAGE_CONFIG).encode()),
               ("./imagerepo.name", "file", b"test/debian:12"), ("./.mountpoints", "dir", None)]
    if mode:
        entries.append(("./execmode", "file", mode))
    return _archive(path, entries + list(extra))


def test_a_v13_archive_gives_its_image_config_and_mode(tmp_path):
    found = clone.scan(_v13(tmp_path / "c.tar"))
    assert found.root == "ROOT"
    assert found.record["mode"] == "F1"
    assert found.record["image"] == "test/debian:12"
    assert found.record["config"]["Cmd"] == ["/bin/sh"]
    assert found.record["platform"] == {"os": "linux", "architecture": "amd64"}


def test_no_execmode_is_p1_and_placeholder_image_is_none():
    records = v1.read_v1_records({"imagerepo.name": b"CLONING:inprogress\n", "container.json": b"{}"})
    assert records.mode is None and records.image is None
    assert v1.to_record(records)["config"] == {}


def test_container_config_is_used_when_config_is_empty():
    records = v1.read_v1_records({"container.json": json.dumps({"config": None,
                                                               "container_config": {"Cmd": ["x"]}}).encode()})
    assert v1.to_record(records)["config"] == {"Cmd": ["x"]}


@pytest.mark.parametrize("files", [{"container.json": b"[1]"}, {"container.json": b"{not json"},
                                   {"execmode": b"S1"}, {"imagerepo.name": b"a\nb"}, {"execmode": b"\xff"}])
def test_corrupt_records_are_refused(files):
    with pytest.raises(v1.V1FormatError):
        v1.read_v1_records(files)


def test_written_records_round_trip_and_are_a_13_image_config():
    record = {"id": "x", "image": "test/debian:12", "manifest": "sha256:ab", "config": {"Cmd": ["a"]},
              "platform": {"os": "linux", "architecture": "amd64"}, "mode": "F3", "prepared": "F3",
              "protected": True, "created": "2026-01-01T00:00:00Z"}
    files = v1.write_v1_records(record)
    config = json.loads(files["container.json"])
    assert config["config"] == {"Cmd": ["a"]} and config["os"] == "linux"  # what 1.3 reads
    assert files["execmode"] == b"F1"  # 1.3 would need its own F3 patches: the same engine without them
    assert files["imagerepo.name"] == b"test/debian:12"
    back = v1.to_record(v1.read_v1_records(files))
    assert back["mode"] == "F3" and back["manifest"] == "sha256:ab"
    assert "id" not in back and "protected" not in back and "prepared" not in back


def test_p1_has_no_mode_lost_and_no_mode_writes_no_execmode():
    assert v1.write_v1_records({"mode": "P2"})["execmode"] == b"P2"
    assert "execmode" not in v1.write_v1_records({"mode": None})


def test_udocker2_first_clone_format_is_read(tmp_path):
    record = {"id": "old", "image": "x:1", "config": {"Cmd": ["c"]}, "mode": "P2", "prepared": "P2"}
    path = _archive(tmp_path / "old.tar", [("container.json", "file", json.dumps(record).encode()),
                                           ("rootfs", "dir", None), ("rootfs/bin", "dir", None)])
    found = clone.scan(path)
    assert found.root == "rootfs" and found.record["mode"] == "P2" and found.record["image"] == "x:1"
    assert "id" not in found.record and "prepared" not in found.record


@pytest.mark.parametrize("extra, why", [
    (("/etc/passwd", "file", b"x"), "absolute"),
    (("./ROOT/../../evil", "file", b"x"), "'..'"),
    (("./ROOT/bin/esc", "sym", "../../.."), "symbolic link out of ROOT"),
    (("./ROOT/esc", "sym", ".."), "symbolic link out of ROOT"),
    (("./ROOT/bin/hl", "lnk", "container.json"), "hard link out of ROOT"),
    (("./ROOT/bin/hl", "lnk", "ROOT"), "hard link out of ROOT"),
])
def test_hostile_members_are_refused(tmp_path, extra, why):
    with pytest.raises(UdockerError) as error:
        clone.scan(_v13(tmp_path / "bad.tar", extra))
    assert why in error.value.message and "\n" not in error.value.message


def test_deep_relative_symlinks_inside_root_are_fine(tmp_path):
    clone.scan(_v13(tmp_path / "ok.tar", ("./ROOT/usr/lib/x", "sym", "../../bin/sh")))


@pytest.mark.parametrize("entries, why", [
    ([("./container.json", "file", b"{}")], "no ROOT/"),
    ([("./ROOT", "sym", "/")], "ROOT is not a directory"),
    ([("./ROOT", "dir", None), ("./container.json", "sym", "/etc/passwd")], "container.json is not a regular"),
    ([("./ROOT", "dir", None), ("./rootfs", "dir", None)], "both"),
])
def test_archives_that_are_not_clones_are_refused(tmp_path, entries, why):
    with pytest.raises(UdockerError) as error:
        clone.scan(_archive(tmp_path / "bad.tar", entries))
    assert why in error.value.message


def test_garbage_is_one_error(tmp_path):
    path = tmp_path / "garbage.tar"
    path.write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(UdockerError):
        clone.scan(str(path))


def test_13_f3_archive_is_read_with_what_its_patches_were_made_for(tmp_path):
    found = clone.scan(_archive(tmp_path / "f3.tar", [
        ("./ROOT", "dir", None), ("./execmode", "file", b"F3"), ("./root.path", "file", b"/x/c/ROOT"),
        ("./patch.path", "file", b"/x/c"), ("./ld.so.path", "file", b"/lib64/ld.so")]))
    assert found.record["mode"] == "F3" and found.records.patch_path == "/x/c"
    assert v1patches.of_records(found.records).prefixes == ("/x/c/ROOT",)


def test_f2_loader_is_restored_from_ld_so_orig(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "lib64").mkdir(parents=True)
    (rootfs / "lib64" / "ld.so").write_bytes(b"patched")
    (rootfs / "lib64" / "ld.so").chmod(0o555)
    records = v1.read_v1_records({"execmode": b"F2", "ld.so.path": b"/lib64/ld.so", "ld.so.orig": b"original"})
    clone.restore_patches(str(rootfs), records, Layout(str(tmp_path / "repo")))
    assert (rootfs / "lib64" / "ld.so").read_bytes() == b"original"
    assert (rootfs / "lib64" / "ld.so").stat().st_mode & 0o777 == 0o555


def test_f2_loader_path_cannot_leave_the_rootfs(tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (rootfs / "lnk").symlink_to(str(outside))
    records = v1.read_v1_records({"execmode": b"F2", "ld.so.path": b"/../../outside", "ld.so.orig": b"x"})
    clone.restore_patches(str(rootfs), records, Layout(str(tmp_path / "repo")))
    records = v1.read_v1_records({"execmode": b"F2", "ld.so.path": b"/lnk", "ld.so.orig": b"x"})
    clone.restore_patches(str(rootfs), records, Layout(str(tmp_path / "repo")))
    assert outside.read_bytes() == b"keep"


def test_13_host_links_get_their_container_paths_back(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    old = "/home/u/.udocker/containers/0a1b2c3d-1111-2222-3333-444455556666/ROOT"
    (rootfs / "etc" / "alt").symlink_to(old + "/usr/bin/x")
    (rootfs / "top").symlink_to(old)
    (rootfs / "mine").symlink_to("/usr/bin/y")
    (rootfs / "rel").symlink_to("../containers/0a1b2c3d-1111-2222-3333-444455556666/ROOT/z")
    assert clone.restore_links(str(rootfs), v1.read_v1_records({})) == 2
    assert (rootfs / "etc" / "alt").readlink() == type(rootfs)("/usr/bin/x")
    assert str((rootfs / "top").readlink()) == "/"
    assert str((rootfs / "mine").readlink()) == "/usr/bin/y"
    assert str((rootfs / "rel").readlink()).startswith("../")
    own = v1.read_v1_records({"container.json": json.dumps({v1.RECORD_KEY: {}}).encode()})
    (rootfs / "own").symlink_to(old + "/a")
    assert clone.restore_links(str(rootfs), own) == 0
