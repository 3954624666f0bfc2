"""udocker.unpack: layers built with tarfile in tmp_path, applied to a real rootfs.

Run these as an unprivileged user too: root can write into 0555 directories, which hides permission bugs.
"""

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile

import pytest

from tests.fixtures.progress import Heard
from udocker.errors import UnpackError
from udocker.oci import mediatypes
from udocker.unpack import LayerSource, Notice, apply_layer, apply_layers

MTIME = 1_600_000_000


# --- layer builders -------------------------------------------------------------------------------------

def F(name, data=b"x", mode=0o644, **pax):  # one-letter builders keep the tables readable
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, MTIME
    info.pax_headers = pax
    return info, data


def D(name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, MTIME
    return info, None


def S(name, target):  # symlink
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, MTIME
    return info, None


def H(name, target):  # hard link
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def W(name):  # whiteout file: an empty regular file
    return F(name, b"")


def special(name, kind, mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.devmajor, info.devminor = kind, mode, 1, 3
    return info, None


def sparse(name, offset, data, size):
    """A PAX 0.1 sparse member: `data` at `offset` of a file of `size` bytes."""
    return F(name, data, **{"GNU.sparse.map": f"{offset},{len(data)}", "GNU.sparse.size": str(size)})


def build(path, entries, *, compress="gz"):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    blob = gzip.compress(raw.getvalue(), 1) if compress == "gz" else raw.getvalue()
    path.write_bytes(blob)
    media = mediatypes.OCI_LAYER_GZIP if compress == "gz" else mediatypes.OCI_LAYER
    return LayerSource(str(path), media, "sha256:" + hashlib.sha256(blob).hexdigest())


@pytest.fixture
def world(tmp_path):
    """tmp_path/rootfs plus an `outside` sentinel tree, a canary file and a snapshot function."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "canary").write_bytes(b"canary")
    (outside / "sub" / "deep").write_bytes(b"deep")
    (tmp_path / "canary").write_bytes(b"top canary")
    layers = tmp_path / "layers"
    layers.mkdir()
    rootfs = tmp_path / "rootfs"

    def snapshot():
        state = {}
        for top, dirs, files in os.walk(tmp_path):
            dirs[:] = [d for d in dirs if os.path.join(top, d) not in (str(rootfs), str(layers))]
            for name in dirs + files:
                path = os.path.join(top, name)
                st = os.lstat(path)
                content = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None  # noqa: SIM115
                state[path] = (st.st_mode, st.st_nlink, st.st_mtime_ns, content)
        state["/etc/passwd"] = open("/etc/passwd", "rb").read()  # noqa: SIM115
        return state

    def apply(*specs, **kwargs):
        sources = [build(layers / f"layer{i}.tar", spec) for i, spec in enumerate(specs)]
        notices = []
        report = apply_layers(str(rootfs), sources, on_notice=notices.append, **kwargs)
        assert list(report.notices) == notices
        return report

    return type("World", (), {"root": rootfs, "outside": outside, "snapshot": staticmethod(snapshot),
                              "apply": staticmethod(apply), "layers": layers})


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- changeset rules ------------------------------------------------------------------------------------

def test_files_dirs_symlinks_fifo_mtime(world):
    report = world.apply([D("etc"), F("etc/hostname", b"box\n", 0o640), S("etc/abs", "/etc/hostname"),
                          S("etc/rel", "../etc/hostname"), F("usr/bin/tool", b"#!", 0o755),
                          special("run/fifo", tarfile.FIFOTYPE, 0o600)])
    root = world.root
    assert (root / "etc/hostname").read_bytes() == b"box\n"
    assert mode(root / "etc/hostname") == 0o640
    assert os.readlink(root / "etc/abs") == "/etc/hostname"  # stored as-is, never resolved
    assert os.readlink(root / "etc/rel") == "../etc/hostname"
    assert mode(root / "usr/bin/tool") == 0o755 and mode(root / "usr") & 0o700 == 0o700
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert os.stat(root / "etc/hostname").st_mtime == MTIME
    assert os.lstat(root / "etc/abs").st_mtime == MTIME
    assert report.layers == 1 and report.entries == 6 and report.notices == ()


LOWER = [F("etc/a"), F("etc/b"), D("etc/sub", 0o555), F("etc/sub/x", mode=0o444), F("etc/keep"), F("opt/x")]
OPT = {"opt", "opt/x"}
WHITEOUT_CASES = {  # id: (upper layer, every path in the rootfs afterwards)
    "plain": ([W("etc/.wh.a"), W("etc/.wh.sub"), W("etc/.wh.missing")], {"etc", "etc/b", "etc/keep"} | OPT),
    "same-layer-not-hidden": ([F("etc/new"), W("etc/.wh.new"), W("etc/.wh.a")],
                              {"etc", "etc/b", "etc/sub", "etc/sub/x", "etc/keep", "etc/new"} | OPT),
    "opaque-first": ([D("etc"), W("etc/.wh..wh..opq"), F("etc/new"), F("etc/sub/y")],
                     {"etc", "etc/new", "etc/sub", "etc/sub/y"} | OPT),
    "opaque-last": ([D("etc"), F("etc/new"), F("etc/sub/y"), W("etc/.wh..wh..opq")],
                    {"etc", "etc/new", "etc/sub", "etc/sub/y"} | OPT),
    "top-level": ([W(".wh.etc"), F("other")], {"other"} | OPT),
    "top-level-opaque": ([F("./new"), W("./.wh..wh..opq")], {"new"}),
    "aufs-metadata-ignored": ([W(".wh..wh.plnk"), D(".wh..wh.orph")],
                              {"etc", "etc/a", "etc/b", "etc/sub", "etc/sub/x", "etc/keep"} | OPT),
}


@pytest.mark.parametrize("case", WHITEOUT_CASES, ids=list(WHITEOUT_CASES))
def test_whiteouts(world, case):
    upper, expected = WHITEOUT_CASES[case]
    world.apply(LOWER, upper)
    found = set()
    for top, dirs, files in os.walk(world.root):
        found.update(os.path.relpath(os.path.join(top, name), world.root) for name in dirs + files)
    assert found == expected


def test_hard_links_within_and_across_layers(world):
    world.apply([F("usr/bin/a", b"A"), H("usr/bin/b", "usr/bin/a"), F("etc/passwd", b"root:x:0:0")],
                [H("c", "/usr/bin/a"), H("pw", "/etc/passwd"), F("usr/bin/a", b"new")])
    root = world.root
    assert os.stat(root / "usr/bin/b").st_ino == os.stat(root / "c").st_ino
    assert (root / "c").read_bytes() == b"A"  # overwriting a unlinked it first: links keep old data
    assert (root / "usr/bin/a").read_bytes() == b"new"
    assert os.stat(root / "pw").st_ino == os.stat(root / "etc/passwd").st_ino != os.stat("/etc/passwd").st_ino


def test_read_only_file_and_dir_then_later_layer(world):
    world.apply([D("ro", 0o555), F("ro/f", b"data", 0o444), F("ro/g", b"keep", 0o444), D("locked", 0o000),
                 F("locked/x", b"x", 0o400)],
                [F("ro/new", b"n"), W("ro/.wh.f"), F("ro/g", b"replaced", 0o444)])
    root = world.root
    assert sorted(os.listdir(root / "ro")) == ["g", "new"]
    assert (root / "ro/g").read_bytes() == b"replaced" and mode(root / "ro/g") == 0o444
    assert mode(root / "ro") == 0o755  # 0555 plus u+rwx: documented, keeps the tree removable
    assert mode(root / "locked") == 0o700 and (root / "locked/x").read_bytes() == b"x"
    shutil.rmtree(world.root)  # the user can delete the container
    assert not world.root.exists()


def test_replacements_dir_file_symlink(world):
    world.apply([D("a"), F("a/x"), F("b", b"B"), S("c", "b"), S("d", "/"), D("e"), F("e/f")],
                [F("a", b"now a file"), D("b"), F("b/y"), F("c", b"real"), D("d"), F("d/z"), S("e", "a")])
    root = world.root
    assert (root / "a").read_bytes() == b"now a file"
    assert (root / "b").is_dir() and (root / "b/y").exists()
    assert not (root / "c").is_symlink() and (root / "c").read_bytes() == b"real"
    assert (root / "d").is_dir() and not (root / "d").is_symlink()
    assert os.readlink(root / "e") == "a"


def test_duplicates_later_wins(world):
    world.apply([F("a", b"1"), F("a", b"2", 0o600), D("d"), F("d", b"file"), F("f"), D("f", 0o700), D("f", 0o750)])
    root = world.root
    assert (root / "a").read_bytes() == b"2" and mode(root / "a") == 0o600
    assert (root / "d").read_bytes() == b"file"
    assert (root / "f").is_dir() and mode(root / "f") == 0o750


def test_long_paths_within_limits(world):
    deep = "/".join(["d" * 100] * 60)  # 6 KB: longer than PATH_MAX, fine through directory fds
    world.apply([F(deep + "/file", b"deep")])
    fd = os.open(world.root, os.O_RDONLY)
    for part in deep.split("/"):
        fd2 = os.open(part, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = fd2
    assert os.stat("file", dir_fd=fd).st_size == 4
    os.close(fd)


def test_many_directories_exceed_fd_cache(world):
    entries = [F(f"d{i}/s{j}/f", b"x") for i in range(40) for j in range(5)]
    entries += [F(f"d{i}/s0/g", b"y") for i in range(40)]
    world.apply(entries, [W(f"d{i}/.wh.s{i % 5}") for i in range(40)])
    assert len(list((world.root / "d7").iterdir())) == 4
    assert (world.root / "d39/s0/g").read_bytes() == b"y"


def test_compression_and_media_types(world, tmp_path):
    plain = build(world.layers / "plain.tar", [F("plain")], compress=None)
    gz = build(world.layers / "gz.tar", [F("gz")])
    mislabelled = LayerSource(gz.path, mediatypes.OCI_LAYER, gz.name)
    docker = LayerSource(gz.path, mediatypes.DOCKER_LAYER_GZIP, gz.name)
    apply_layers(str(world.root), [plain, mislabelled, docker])
    assert (world.root / "plain").exists() and (world.root / "gz").exists()
    with pytest.raises(UnpackError, match="unsupported layer media type"):
        apply_layers(str(world.root), [LayerSource(gz.path, "application/json", gz.name)])
    with open(plain.path, "rb") as stream:
        assert apply_layer(str(tmp_path / "other"), stream, plain.media_type).entries == 1


def test_zstd_layer(world):
    try:
        from compression import zstd
    except ImportError:
        zstd = None
    raw = world.layers / "z.tar"
    build(raw, [F("zfile", b"z")], compress=None)
    blob = zstd.compress(raw.read_bytes()) if zstd else b"\x28\xb5\x2f\xfd" + bytes(32)
    (world.layers / "z.zst").write_bytes(blob)
    source = LayerSource(str(world.layers / "z.zst"), mediatypes.OCI_LAYER_ZSTD, "sha256:" + "ab" * 32)
    if zstd:
        apply_layers(str(world.root), [source])
        assert (world.root / "zfile").read_bytes() == b"z"
    else:
        with pytest.raises(UnpackError, match="zstd") as info:
            apply_layers(str(world.root), [source])
        assert info.value.hint


def test_empty_layer(world):
    assert world.apply([]).entries == 0
    assert os.listdir(world.root) == []


def test_truncated_layer(world):
    source = build(world.layers / "t.tar", [F("big", os.urandom(100_000))])
    with open(source.path, "r+b") as stream:
        stream.truncate(20_000)
    with pytest.raises(UnpackError, match="not a valid tar archive"):
        apply_layers(str(world.root), [source])


def test_zero_runs_become_holes(world):
    world.apply([F("zeros", bytes(16 << 20) + b"end")])
    st = os.stat(world.root / "zeros")
    assert st.st_size == (16 << 20) + 3 and st.st_blocks * 512 < (1 << 20)
    with open(world.root / "zeros", "rb") as stream:
        stream.seek(16 << 20)
        assert stream.read() == b"end"


# --- hostile layers -------------------------------------------------------------------------------------

def _nul_symlink():
    info, _ = S("l", "x")
    info.pax_headers = {"linkpath": "/tmp\x00x"}
    return info, None


def _deep_symlink_file(world):
    return [[D("d"), F("d/f")], [S("d", str(world.outside)), F("d/canary", b"pwned")]]


HOSTILE = {
    # id: (layers, expected outcome: ("error", text) or ("notice", text) or ("ok", None), check)
    "dotdot-file": (lambda w: [[F("../outside/canary", b"pwned")]], ("error", "unsafe path"), None),
    "dotdot-dir": (lambda w: [[D("a/../../outside/new")]], ("error", "unsafe path"), None),
    "absolute-path": (lambda w: [[F(str(w.outside / "canary"), b"inside")]], ("ok", None),
                      lambda w: (w.root / str(w.outside / "canary")[1:]).read_bytes() == b"inside"),
    "symlink-to-root-then-file": (lambda w: [[S("root", "/"), F("root" + str(w.outside) + "/canary", b"pwned")]],
                                  ("error", "path through symlink root"), None),
    "symlink-to-dotdot-then-file": (lambda w: [[S("up", ".."), F("up/outside/canary", b"pwned")]],
                                    ("error", "path through symlink up"), None),
    "symlink-abs-dir-then-file-next-layer": (lambda w: [[S("o", str(w.outside))], [F("o/canary", b"pwned")]],
                                             ("error", "path through symlink"), None),
    "symlink-then-dir-through-it": (lambda w: [[S("o", str(w.outside)), D("o/newdir")]],
                                    ("error", "path through symlink"), None),
    "hardlink-to-etc-passwd": (lambda w: [[H("pw", "/etc/passwd")]], ("error", "hard link target"), None),
    "hardlink-to-directory": (lambda w: [[D("d"), H("h", "d")]], ("error", "operation not permitted"), None),
    "hardlink-dotdot": (lambda w: [[H("c", "../outside/canary")]], ("error", "unsafe path"), None),
    "hardlink-through-symlink": (lambda w: [[S("o", str(w.outside)), H("c", "o/canary")]],
                                 ("error", "path through symlink o"), None),
    "hardlink-to-symlink-is-the-symlink": (lambda w: [[S("o", str(w.outside / "canary")), H("c", "o")]], ("ok", None),
                                           lambda w: os.readlink(w.root / "c") == str(w.outside / "canary")),
    "whiteout-dotdot": (lambda w: [[W("../.wh.outside")]], ("error", "unsafe path"), None),
    "whiteout-nested-dotdot": (lambda w: [[D("a"), W("a/../../.wh.outside")]], ("error", "unsafe path"), None),
    "whiteout-through-symlink": (lambda w: [[S("o", str(w.outside))], [W("o/.wh.canary")]],
                                 ("error", "path through symlink o"), None),
    "whiteout-of-dotdot": (lambda w: [[W(".wh..."), F("x")]], ("error", "unsafe whiteout"), None),
    "opaque-through-symlink": (lambda w: [[S("o", str(w.outside))], [W("o/.wh..wh..opq")]],
                               ("error", "path through symlink o"), None),
    "device-nodes": (lambda w: [[special("dev/null", tarfile.CHRTYPE), special("sda", tarfile.BLKTYPE),
                                 special("tty", tarfile.CHRTYPE), D("dev"), F("dev/shm/x"), H("tty0", "tty"),
                                 H("null", "/dev/null")]],
                     ("notice", "skipped device node"),
                     lambda w: sorted(os.listdir(w.root)) == ["dev"] and os.listdir(w.root / "dev") == []),
    "setuid-setgid": (lambda w: [[F("bin/su", b"su", 0o4755), F("bin/wall", b"w", 0o2755), D("mail", 0o2775)]],
                      ("notice", "dropped setuid/setgid"),
                      lambda w: (mode(w.root / "bin/su"), mode(w.root / "bin/wall"), mode(w.root / "mail"))
                      == (0o755, 0o755, 0o755)),  # group write dropped too
    "huge-sparse-file": (lambda w: [[sparse("big", 1 << 20, b"hello", 1 << 40), F("after", b"ok")]],
                         ("ok", None),
                         lambda w: os.stat(w.root / "big").st_size == 1 << 40
                         and os.stat(w.root / "big").st_blocks * 512 < (1 << 20)
                         and (w.root / "after").read_bytes() == b"ok"),
    "duplicate-entries": (lambda w: [[F("dup", b"1"), S("dup", str(w.outside / "canary")), F("dup", b"2")]],
                          ("ok", None), lambda w: (w.root / "dup").read_bytes() == b"2"),
    "symlink-loop": (lambda w: [[S("a", "b"), S("b", "a"), F("a/x")]], ("error", "path through symlink a"), None),
    "symlink-self-loop-stored": (lambda w: [[S("self", "self")]], ("ok", None),
                                 lambda w: os.readlink(w.root / "self") == "self"),
    "symlink-replaces-dir-then-write": (_deep_symlink_file, ("error", "path through symlink d"), None),
    "file-through-symlink-to-file": (lambda w: [[S("c", str(w.outside / "canary")), F("c", b"pwned")]],
                                     ("ok", None), lambda w: (w.root / "c").read_bytes() == b"pwned"),
    "nul-in-name": (lambda w: [[F("p", b"x", path="evil\x00/../../outside/canary")]], ("error", "NUL byte"), None),
    "nul-in-symlink": (lambda w: [[_nul_symlink()]], ("error", "NUL byte in symlink target"), None),
    "too-long-name": (lambda w: [[F("n" * 300, b"x")]], ("error", "file name too long"), None),
    "parent-is-file": (lambda w: [[F("f"), F("f/x")]], ("error", "parent f is not a directory"), None),
}


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=sorted(HOSTILE))
def test_hostile_layer_changes_nothing_outside(world, case):
    make, (outcome, text), check = HOSTILE[case]
    before = world.snapshot()
    if outcome == "error":
        with pytest.raises(UnpackError) as info:
            world.apply(*make(world))
        error = info.value
        assert text in error.message
        assert error.layer.startswith("sha256:") and " in layer sha256:" in error.message
        assert error.member and error.member[:40].replace("\x00", "\\x00") in error.message
        assert error.message.isprintable()
    else:
        report = world.apply(*make(world))
        if outcome == "notice":
            assert any(text in notice.reason for notice in report.notices), report.notices
            assert all(isinstance(notice, Notice) and str(notice).startswith(notice.reason)
                       for notice in report.notices)
        else:
            assert report.notices == ()
    assert world.snapshot() == before
    if check is not None:
        assert check(world)
    if world.root.exists():
        shutil.rmtree(world.root)  # whatever a hostile layer left is removable by the user


def test_huge_declared_size_with_truncated_data(world):
    info, _ = F("big", b"")
    info.size = 1 << 40
    blob = gzip.compress(info.tobuf(tarfile.PAX_FORMAT) + b"x" * 4096)
    (world.layers / "huge").write_bytes(blob)
    before = world.snapshot()
    with pytest.raises(UnpackError, match="not a valid tar archive"):
        apply_layers(str(world.root), [LayerSource(str(world.layers / "huge"), mediatypes.OCI_LAYER_GZIP)])
    assert world.snapshot() == before
    assert os.stat(world.root / "big").st_blocks * 512 <= 1 << 20


def test_error_message_names_layer_and_member(world):
    with pytest.raises(UnpackError) as info:
        world.apply([F("../etc/passwd")])
    message = info.value.message
    assert message.startswith("unsafe path in layer sha256:") and message.endswith("…: ../etc/passwd")
    assert info.value.member == "../etc/passwd"


def test_progress_hears_each_layer_and_every_compressed_byte(world):
    sources = [build(world.layers / "a.tar", [F("a", os.urandom(3 << 20))]),
                build(world.layers / "b.tar", [F("b", b"small")], compress="none")]
    listener = Heard()
    heard = listener.events

    apply_layers(str(world.root), sources, progress=listener)
    for source in sources:
        mine = [event for event in heard if event[1] == source.name]
        assert mine[0] == ("started", source.name) and mine[-1] == ("finished", source.name)
        assert sum(event[2] for event in mine[1:-1]) == os.path.getsize(source.path)
    assert heard.index(("finished", sources[0].name)) < heard.index(("started", sources[1].name))
    assert (world.root / "a").stat().st_size == 3 << 20


class _Trickle:
    """A source that returns fewer bytes than asked, as a pipe or a decompressor may."""

    def __init__(self, data, most):
        self.data, self.most, self.at = data, most, 0

    def read(self, size):
        piece = self.data[self.at:self.at + min(size, self.most)]
        self.at += len(piece)
        return piece


@pytest.mark.parametrize("most", [1, 511, 512, 4096, 1 << 20, 3 << 20])
def test_forward_reads_every_byte_in_order_across_pieces(most):
    from udocker.unpack.streams import Forward

    data = os.urandom((2 << 20) + 12345)
    reader = Forward(_Trickle(data, most))
    got, sizes = [], [512, 1 << 20, 1, 0, 700_000, 512, 3 << 20]
    for size in sizes:
        assert reader.tell() == sum(len(piece) for piece in got)
        got.append(reader.read(size))
    assert b"".join(got) == data and reader.read(512) == b"" and reader.tell() == len(data)


def test_forward_seeks_forward_only():
    from udocker.unpack.streams import Forward

    data = bytes(range(256)) * 8192
    reader = Forward(_Trickle(data, 5000))
    reader.read(100)
    assert reader.seek(1_000_000) == 1_000_000 and reader.read(3) == data[1_000_000:1_000_003]
    with pytest.raises(tarfile.StreamError):
        reader.seek(10)
    assert reader.seek(len(data) + 10) == len(data) and reader.read(1) == b""


def test_members_straddling_read_pieces_unpack_exactly(world):
    """Member data and headers that cross the 1 MiB pieces of the stream reader land byte for byte."""
    files = [F(f"f{i}", os.urandom(size)) for i, size in enumerate([1, (1 << 20) - 300, 511, (1 << 20) + 7, 0,
                                                                   3 << 20, 513])]
    world.apply(files)
    for info, data in files:
        assert (world.root / info.name).read_bytes() == data


@pytest.mark.parametrize("claimed, sent", [(1 << 40, 4096), (20 << 20, (20 << 20) + 1024)])
def test_a_huge_member_header_is_refused_without_reading_it_into_memory(world, claimed, sent):
    """A pax header that claims a TiB (then ends), or carries 20 MiB of zeros (a gzip bomb of metadata):
    tarfile would read either into memory in one piece. One error, nothing written."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, claimed
    (world.layers / "bomb").write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(sent), 1))
    before = world.snapshot()
    with pytest.raises(UnpackError, match=f"not a valid tar archive: a member header of {claimed} bytes"):
        apply_layers(str(world.root), [LayerSource(str(world.layers / "bomb"), mediatypes.OCI_LAYER_GZIP)])
    assert world.snapshot() == before
