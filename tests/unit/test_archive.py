import bz2
import gzip
import io
import json
import lzma
import os
import tarfile

import pytest

from tests.fixtures.archives import (
    BASE,
    OTHER,
    TOP,
    Image,
    docker_archive,
    docker_members,
    layer,
    sha256,
    write_tar,
)
from udocker.archive import import_tarball, load, save
from udocker.archive.reader import clean_name
from udocker.archive.streams import Compression, sniff
from udocker.errors import DigestMismatch, UdockerError, UsageError
from udocker.oci import mediatypes
from udocker.oci.platform import Platform
from udocker.paths import Layout
from udocker.reference import parse
from udocker.store import Repository

AMD64 = Platform("linux", "amd64")


@pytest.fixture
def repo(tmp_path):
    return Repository.open(Layout(str(tmp_path / "repo")))


def refs(repo):
    return [image.ref for image in repo.images.list()]


def layers_of(repo, ref):
    image = repo.images.get(ref)
    return repo.images.manifest(image, repo.blobs).layers


@pytest.mark.parametrize("style", ["dirs", "symlinks", "blobs"])
def test_load_docker_archive_styles(repo, tmp_path, style):
    images = [Image(["busybox:1.0", "busybox:latest"], [BASE, TOP]), Image(["example.com/x/y:2"], [BASE, OTHER])]
    docker_archive(tmp_path / "a.tar", images, style=style)
    loaded = load(repo, str(tmp_path / "a.tar"), label="a.tar")
    assert [item.ref.familiar() for item in loaded] == ["busybox:1.0", "busybox:latest", "example.com/x/y:2"]
    assert loaded[0].image_id == images[0].image_id
    assert refs(repo) == ["docker.io/library/busybox:1.0", "docker.io/library/busybox:latest", "example.com/x/y:2"]
    stored = layers_of(repo, "example.com/x/y:2")
    # Uncompressed layers are stored as they are: the digest is the diff_id.
    assert [(d.media_type, d.digest) for d in stored] == [(mediatypes.OCI_LAYER, sha256(BASE)),
                                                         (mediatypes.OCI_LAYER, sha256(OTHER))]
    with open(repo.blobs.path(sha256(OTHER)), "rb") as stream:
        assert stream.read() == OTHER
    config = repo.images.config(repo.images.get("example.com/x/y:2"), repo.blobs)
    assert config["rootfs"]["diff_ids"] == [sha256(BASE), sha256(OTHER)]


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_load_compressed_archive_from_stream(repo, tmp_path, compress):
    docker_archive(tmp_path / "a.tar", [Image(["img:1"], [BASE])])
    data = compress((tmp_path / "a.tar").read_bytes())
    loaded = load(repo, io.BytesIO(data), label="stdin")
    assert [str(item.ref) for item in loaded] == ["docker.io/library/img:1"]


def test_load_gzip_layers_as_they_are(repo, tmp_path):
    """containerd's `docker save` writes the compressed blobs: kept compressed, diff_id still checked."""
    image = Image(["img:gz"], [BASE])
    compressed = gzip.compress(BASE)
    members = [(name, compressed if name == "blobs/sha256/" + sha256(BASE)[7:] else content)
               for name, content in docker_members([image], style="blobs")]
    write_tar(tmp_path / "a.tar", members)
    load(repo, str(tmp_path / "a.tar"), label="a.tar")
    [stored] = layers_of(repo, "docker.io/library/img:gz")
    assert (stored.media_type, stored.digest, stored.size) == (mediatypes.OCI_LAYER_GZIP, sha256(compressed),
                                                               len(compressed))


def test_load_names_from_repositories_when_repotags_missing(repo, tmp_path):
    members = docker_members([Image(["img:old"], [BASE])])
    members = [(n, json.dumps([dict(json.loads(c)[0], RepoTags=None)]).encode() if n == "manifest.json" else c)
               for n, c in members]
    write_tar(tmp_path / "a.tar", members)
    assert [str(x.ref) for x in load(repo, str(tmp_path / "a.tar"), label="a")] == ["docker.io/library/img:old"]


def test_load_without_any_name_asks_for_one(repo, tmp_path):
    docker_archive(tmp_path / "a.tar", [Image([], [BASE])])
    with pytest.raises(UsageError, match="has no name"):
        load(repo, str(tmp_path / "a.tar"), label="a")
    loaded = load(repo, str(tmp_path / "a.tar"), label="a", name="mine")
    assert [str(x.ref) for x in loaded] == ["docker.io/library/mine:latest"]


def test_load_name_keeps_archive_tags_unless_given(repo, tmp_path):
    docker_archive(tmp_path / "a.tar", [Image(["img:1", "img:2"], [BASE])])
    assert [str(x.ref) for x in load(repo, str(tmp_path / "a.tar"), label="a", name="other")] == [
        "docker.io/library/other:1", "docker.io/library/other:2"]
    assert [str(x.ref) for x in load(repo, str(tmp_path / "a.tar"), label="a", name="q.io/o:9")] == ["q.io/o:9"]


def test_load_name_refused_for_several_images(repo, tmp_path):
    docker_archive(tmp_path / "a.tar", [Image(["a:1"], [BASE]), Image(["b:1"], [TOP])])
    with pytest.raises(UsageError, match="holds 2 images"):
        load(repo, str(tmp_path / "a.tar"), label="a", name="x")
    assert refs(repo) == []


def _oci_layout(path, image: Image, annotations, *, index_of_platforms=False):
    """An OCI image layout tarball of `image` (layers uncompressed), index.json entry annotated."""
    blobs = {sha256(data): data for data in image.layers + [image.config]}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                           "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": image.image_id,
                                      "size": len(image.config)},
                           "layers": [{"mediaType": mediatypes.OCI_LAYER, "digest": sha256(d), "size": len(d)}
                                      for d in image.layers]}).encode()
    blobs[sha256(manifest)] = manifest
    entry = {"mediaType": mediatypes.OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest)}
    if index_of_platforms:
        other = dict(entry, digest=sha256(b"absent"), platform={"os": "linux", "architecture": "s390x"})
        nested = json.dumps({"schemaVersion": 2, "manifests": [
            other, dict(entry, platform={"os": "linux", "architecture": "amd64"})]}).encode()
        blobs[sha256(nested)] = nested
        entry = {"mediaType": mediatypes.OCI_INDEX, "digest": sha256(nested), "size": len(nested)}
    if annotations:
        entry["annotations"] = annotations
    members = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
               ("index.json", json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode())]
    members += [("blobs/sha256/" + digest[7:], data) for digest, data in blobs.items()]
    write_tar(path, members)
    return sha256(manifest)


@pytest.mark.parametrize("annotations, name, expected", [
    ({"org.opencontainers.image.ref.name": "quay.io/a/b:3"}, None, ["quay.io/a/b:3"]),
    ({"org.opencontainers.image.ref.name": "3", "io.containerd.image.name": "docker.io/a/b:3"}, None,
     ["docker.io/a/b:3"]),
    ({"org.opencontainers.image.ref.name": "v1"}, "mine", ["docker.io/library/mine:v1"]),
    ({"org.opencontainers.image.ref.name": "v1"}, "mine:2", ["docker.io/library/mine:2"]),
    ({}, "mine", ["docker.io/library/mine:latest"]),
])
def test_load_oci_layout_names(repo, tmp_path, annotations, name, expected):
    digest = _oci_layout(tmp_path / "o.tar", Image([], [BASE]), annotations)
    loaded = load(repo, str(tmp_path / "o.tar"), label="o.tar", name=name)
    assert [str(x.ref) for x in loaded] == expected
    assert repo.images.get(expected[0]).descriptor.digest == digest


@pytest.mark.parametrize("annotations, message", [
    ({"org.opencontainers.image.ref.name": "v1"}, "named only by tag 'v1'"),
    ({}, "has no name"),
])
def test_load_oci_layout_without_repository(repo, tmp_path, annotations, message):
    _oci_layout(tmp_path / "o.tar", Image([], [BASE]), annotations)
    with pytest.raises(UsageError, match=message) as caught:
        load(repo, str(tmp_path / "o.tar"), label="o.tar")
    assert "udocker load -i FILE REPO" in caught.value.hint
    assert refs(repo) == []


def test_load_oci_index_picks_platform(repo, tmp_path):
    digest = _oci_layout(tmp_path / "o.tar", Image([], [BASE]), {"io.containerd.image.name": "a/b:1"},
                         index_of_platforms=True)
    load(repo, str(tmp_path / "o.tar"), label="o.tar", platform=AMD64)
    assert repo.images.get("docker.io/a/b:1").descriptor.digest == digest
    with pytest.raises(UdockerError, match="no image for platform linux/arm64"):
        load(repo, str(tmp_path / "o.tar"), label="o.tar", platform=Platform("linux", "arm64"))


def _replace(members, name, content):
    return [(n, content if n == name else c) for n, c in members]


def _corrupt_cases():
    image = Image(["img:1"], [BASE, TOP])
    good = docker_members([image])
    layer_name = next(n for n, _ in good if n.endswith("/layer.tar"))
    config_name = next(n for n, _ in good if n.endswith(".json") and n != "manifest.json")
    wrong = layer({"other": b"x"})
    return {
        "traversal": (good + [("../evil", b"x")], UdockerError, "unsafe member name"),
        "absolute": (good + [("/etc/evil", b"x")], UdockerError, "unsafe member name"),
        "link-escape": (_replace(good, layer_name, ("symlink", "../../../etc/passwd")), UdockerError,
                        "unsafe link"),
        "no-manifest": ([m for m in good if m[0] not in ("manifest.json", "repositories")], UdockerError,
                        "not an image archive"),
        "missing-layer": ([m for m in good if m[0] != layer_name], UdockerError, "member missing"),
        "wrong-diff-id": (_replace(good, layer_name, wrong), DigestMismatch, "does not match its diff_id"),
        "config-name": (_replace(good, config_name, image.config + b" "), DigestMismatch, "does not match its name"),
        "bad-json": (_replace(good, "manifest.json", b"[{"), UdockerError, "malformed JSON"),
        "bad-entry": (_replace(good, "manifest.json", b'[{"Config": 1}]'), UdockerError, "malformed entry 1"),
        "legacy": ([m for m in good if m[0] != "manifest.json"], UdockerError, "docker older than 1.10"),
    }


@pytest.mark.parametrize("case", sorted(_corrupt_cases()))
def test_load_refuses_corrupt_archives(repo, tmp_path, case):
    members, error, message = _corrupt_cases()[case]
    docker_archive(tmp_path / "good.tar", [Image(["keep:1"], [OTHER])])
    load(repo, str(tmp_path / "good.tar"), label="good")
    write_tar(tmp_path / "bad.tar", members)
    with pytest.raises(error) as caught:
        load(repo, str(tmp_path / "bad.tar"), label="bad.tar")
    assert message in caught.value.message or message in (caught.value.hint or "")
    assert refs(repo) == ["docker.io/library/keep:1"]


def test_load_refuses_truncated_archive(repo, tmp_path):
    docker_archive(tmp_path / "a.tar", [Image(["img:1"], [BASE, TOP])])
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "t.tar").write_bytes(data[:3000])
    with pytest.raises(UdockerError, match="truncated|not a valid tar"):
        load(repo, str(tmp_path / "t.tar"), label="t.tar")
    with pytest.raises(UdockerError):
        load(repo, io.BytesIO(gzip.compress(data)[:-40]), label="stdin")
    with pytest.raises(UdockerError, match="not a valid tar"):
        load(repo, io.BytesIO(b"hello" * 100), label="stdin")
    assert refs(repo) == []


def test_save_then_load_round_trip(repo, tmp_path):
    images = [Image(["busybox:1.0"], [BASE, TOP]), Image(["example.com/x/y:2"], [BASE, OTHER])]
    docker_archive(tmp_path / "a.tar", images, style="symlinks")
    load(repo, str(tmp_path / "a.tar"), label="a")
    save(repo, ["busybox:1.0", "example.com/x/y:2", "busybox:1.0"], str(tmp_path / "s.tar"))
    stream = io.BytesIO()
    save(repo, ["busybox:1.0", "example.com/x/y:2"], stream)
    assert stream.getvalue() == (tmp_path / "s.tar").read_bytes()  # deterministic, file or stream
    with tarfile.open(tmp_path / "s.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == ["busybox:1.0"]
        assert manifest[1]["Layers"][1] == sha256(OTHER)[7:] + "/layer.tar"
        assert tar.extractfile(manifest[1]["Layers"][1]).read() == OTHER
        assert json.load(tar.extractfile("repositories")) == {
            "busybox": {"1.0": sha256(TOP)[7:]}, "example.com/x/y": {"2": sha256(OTHER)[7:]}}
    other = Repository.open(Layout(str(tmp_path / "other")))
    loaded = load(other, str(tmp_path / "s.tar"), label="s.tar")
    assert [(str(x.ref), x.image_id) for x in loaded] == [("docker.io/library/busybox:1.0", images[0].image_id),
                                                           ("example.com/x/y:2", images[1].image_id)]


def test_save_unknown_image_writes_nothing(repo, tmp_path):
    with pytest.raises(UdockerError, match="image not found"):
        save(repo, ["nothing:1"], str(tmp_path / "s.tar"))
    assert os.listdir(tmp_path) == ["repo"]


def _flat(tmp_path):
    data = layer({"bin/sh": b"shell", "etc/hostname": b"box\n"})
    return data, sha256(data)


@pytest.mark.parametrize("suffix, compress, media_type", [
    (".tar", lambda d: d, mediatypes.OCI_LAYER),
    (".tgz", gzip.compress, mediatypes.OCI_LAYER_GZIP),
    (".tar.bz2", bz2.compress, mediatypes.OCI_LAYER),
    (".tar.xz", lzma.compress, mediatypes.OCI_LAYER),
    (".bin", gzip.compress, mediatypes.OCI_LAYER_GZIP),  # told by magic bytes, not by name
])
def test_import_flat_tarball(repo, tmp_path, suffix, compress, media_type):
    data, diff_id = _flat(tmp_path)
    path = tmp_path / ("rootfs" + suffix)
    path.write_bytes(compress(data))
    imported = import_tarball(repo, str(path), parse("mine:1"), label=str(path), platform=AMD64)
    image = repo.images.get("docker.io/library/mine:1")
    config = repo.images.config(image, repo.blobs)
    assert imported.image_id == repo.images.manifest(image, repo.blobs).config.digest
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["history"][0]["comment"] == f"Imported from {path}"
    [stored] = layers_of(repo, "docker.io/library/mine:1")
    assert stored.media_type == media_type
    assert path.exists()


def test_import_stream_with_platform_and_message(repo, tmp_path):
    data, _ = _flat(tmp_path)
    import_tarball(repo, io.BytesIO(gzip.compress(data)), parse("mine:arm"), label="stdin",
                   platform=Platform("linux", "arm64", "v8"), message="hello")
    config = repo.images.config(repo.images.get("docker.io/library/mine:arm"), repo.blobs)
    assert (config["architecture"], config["variant"], config["history"][0]["comment"]) == ("arm64", "v8", "hello")


def test_import_move_deletes_input(repo, tmp_path):
    data, _ = _flat(tmp_path)
    (tmp_path / "r.tar").write_bytes(data)
    import_tarball(repo, str(tmp_path / "r.tar"), parse("mine:1"), label="r.tar", platform=AMD64, move=True)
    assert not (tmp_path / "r.tar").exists()
    with pytest.raises(UsageError, match="--mv needs a file"):
        import_tarball(repo, io.BytesIO(data), parse("x:1"), label="stdin", platform=AMD64, move=True)


@pytest.mark.parametrize("content, message", [
    (b"not a tarball at all" * 50, "not a tar archive"),
    (gzip.compress(b"plain text" * 100), "not a tar archive"),
    (gzip.compress(b"x" * 10000)[:-30], "not a tar archive|corrupt compressed data"),
    (b"\x28\xb5\x2f\xfd" + b"\0" * 100, "zstd-compressed"),
])
def test_import_refuses_bad_input(repo, tmp_path, content, message):
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(UdockerError, match=message):
        import_tarball(repo, str(tmp_path / "bad"), parse("x:1"), label="bad", platform=AMD64, move=True)
    assert refs(repo) == []
    assert (tmp_path / "bad").exists()


def test_save_decompresses_gzip_layers(repo, tmp_path):
    data, diff_id = _flat(tmp_path)
    (tmp_path / "r.tgz").write_bytes(gzip.compress(data))
    import_tarball(repo, str(tmp_path / "r.tgz"), parse("mine:1"), label="r.tgz", platform=AMD64)
    save(repo, ["mine:1"], str(tmp_path / "s.tar"))
    with tarfile.open(tmp_path / "s.tar") as tar:
        assert tar.extractfile(diff_id[7:] + "/layer.tar").read() == data


@pytest.mark.parametrize("name, cleaned", [
    ("manifest.json", "manifest.json"), ("./manifest.json", "manifest.json"), ("a//b/./c", "a/b/c"),
    ("dir/", "dir"), (".", None), ("./", None),
])
def test_clean_name(name, cleaned):
    assert clean_name(name, "a.tar") == cleaned


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a/.."])
def test_clean_name_refuses_escapes(name):
    with pytest.raises(UdockerError, match="unsafe member name in a.tar"):
        clean_name(name, "a.tar")


@pytest.mark.parametrize("head, kind", [
    (b"\x1f\x8b\x08\0\0\0", Compression.GZIP), (b"BZh91A", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ), (b"\x28\xb5\x2f\xfd\0\0", Compression.ZSTD),
    (b"ustar\0", Compression.NONE), (b"", Compression.NONE),
])
def test_sniff(head, kind):
    assert sniff(head) is kind


@pytest.mark.parametrize("compress", [lambda data: data, gzip.compress])
def test_check_tar_accepts_an_empty_archive(tmp_path, compress):
    """Python 3.9's tarfile cannot step past the end of a stream it has already reached (StreamError
    'seeking backwards is not allowed'): an empty archive must still pass as a tar archive."""
    from udocker.archive.streams import check_tar, kind_of

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w"):
        pass
    path = tmp_path / "empty.tar"
    path.write_bytes(compress(buffer.getvalue()))

    def opener():
        return open(path, "rb")

    check_tar(opener, kind_of(opener), "empty.tar")
