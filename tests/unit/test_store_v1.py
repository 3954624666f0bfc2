"""udocker 1.x's images adopted into the OCI store (udocker/store/v1images.py, udocker/store/adopt.py), on 1.x
repositories laid out as udocker 1.3.17 writes them (its localrepo.py and docker.py): repos/<name>/<tag>/ with
TAG, v2, manifest (json.dump of the registry's) and relative symlinks sha256:<hex> -> ../../../../layers/...;
v1-format tags (1.3's load of a `docker save` archive) with ancestry, container.json, <id>.layer and <id>.json.
The functional tests make the same with the real udocker 1.3 (tests/functional/test_v1_repository_images.py)."""

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import tarfile

import pytest

from tests.fixtures.v1files import snapshot
from udocker.errors import NotFound, UdockerError
from udocker.paths import Layout
from udocker.store import Repository
from udocker.store import rootfs as rootfs_store


def _layer(files, *, gzipped=True):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if gzipped else raw, raw


def _sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tag_dir(top, name, tag, version):
    directory = os.path.join(top, "repos", *name.split("/"), tag)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "TAG"), "w") as stream:
        stream.write(f"{top}/repos/{name}:{tag}")
    open(os.path.join(directory, version), "w").close()
    return directory


def _link_layer(top, directory, filename, data):
    path = os.path.join(top, "layers", filename)
    if not os.path.exists(path):
        with open(path, "wb") as stream:
            stream.write(data)
    os.symlink(os.path.relpath(path, directory), os.path.join(directory, filename))


def make_v1_repo(top):
    for name in ("repos", "layers", "containers", "bin", "lib"):
        os.makedirs(os.path.join(top, name), exist_ok=True)
    return top


def pull_v2(top, name, tag, files, *, extra_layers=()):
    """What 1.3's pull leaves: the manifest re-serialised by json.dump, the blobs linked from the tag."""
    directory = _tag_dir(top, name, tag, "v2")
    layers = [_layer(f)[0] for f in [*extra_layers, files]]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"], "Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                           "digest": _sha(config)},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(data),
                            "digest": _sha(data)} for data in layers]}
    with open(os.path.join(directory, "manifest"), "w") as stream:
        json.dump(manifest, stream)
    for data in [*layers, config]:
        _link_layer(top, directory, _sha(data), data)
    return directory, manifest


def load_v1(top, name, tag, files):
    """What 1.3's load of a `docker save` archive leaves: a v1-format tag."""
    directory = _tag_dir(top, name, tag, "v1")
    data, raw = _layer(files, gzipped=False)
    layer_id = hashlib.sha256(b"id" + raw).hexdigest()
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]}}
    with open(os.path.join(directory, "container.json"), "w") as stream:
        json.dump(config, stream)
    _link_layer(top, directory, layer_id + ".json", json.dumps({"id": layer_id}).encode())
    _link_layer(top, directory, layer_id + ".layer", data)
    with open(os.path.join(directory, "ancestry"), "w") as stream:
        json.dump([layer_id], stream)
    return directory, _sha(raw)


def opened(top):
    return Repository.open(Layout(top), lock_timeout=30)


@pytest.fixture
def v1repo(tmp_path):
    top = make_v1_repo(str(tmp_path / "udocker"))
    pull_v2(top, "test/busybox", "latest", {"bin/hello": b"hello\n"})
    return top


def test_a_1x_repository_opens_and_its_images_are_adopted_untouched(v1repo):
    before = snapshot(v1repo)
    repo = opened(v1repo)
    assert os.path.exists(repo.layout.version_file)
    assert [image.ref for image in repo.images.list()] == ["docker.io/test/busybox:latest"]
    assert repo.v1_adopted == 1
    assert snapshot(v1repo) == before
    image = repo.images.get("docker.io/test/busybox:latest")
    manifest, config = repo.images.details(image, repo.blobs)
    assert config["config"]["Env"] == ["A=1"]
    for layer in manifest.layers:  # shared with 1.x's file, not copied
        assert os.path.samefile(repo.blobs.path(layer.digest), os.path.join(v1repo, "layers", layer.digest))
        repo.blobs.verify(layer.digest)
    tree = rootfs_store.ensure_unpacked(repo, manifest, image.descriptor.digest)
    with open(os.path.join(tree, "bin", "hello"), "rb") as stream:
        assert stream.read() == b"hello\n"


def test_nothing_is_adopted_again_until_1x_pulls_something(v1repo):
    opened(v1repo).images.list()
    stamp = os.stat(Layout(v1repo).v1_images).st_ino
    again = opened(v1repo)
    again.images.list()
    assert again.v1_adopted == 0
    assert os.stat(Layout(v1repo).v1_images).st_ino == stamp  # not even rewritten
    pull_v2(v1repo, "library/alpine", "3", {"etc/alpine-release": b"3\n"})
    later = opened(v1repo)
    assert [image.ref for image in later.images.list()] == ["docker.io/library/alpine:3",
                                                            "docker.io/test/busybox:latest"]
    assert later.v1_adopted == 1


def test_a_corrupt_1x_layer_is_refused_in_one_line_and_others_still_adopted(v1repo, caplog):
    _directory, manifest = pull_v2(v1repo, "test/broken", "1", {"a": b"a" * 100})
    layer = os.path.join(v1repo, "layers", manifest["layers"][0]["digest"])
    os.chmod(layer, 0o644)
    with open(layer, "r+b") as stream:
        stream.write(b"garbage")
    repo = opened(v1repo)
    assert [image.ref for image in repo.images.list()] == ["docker.io/test/busybox:latest"]
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warning: udocker 1")]
    assert len(warnings) == 1 and "test/broken:1" in warnings[0] and "corrupt" in warnings[0], warnings
    with pytest.raises(UdockerError, match=r"^udocker 1 image test/broken:1 cannot be used: .* corrupt") as info:
        repo.images.find("test/broken:1")
    assert not isinstance(info.value, NotFound) and "\n" not in info.value.message
    assert not os.path.exists(repo.blobs.path(manifest["layers"][0]["digest"]))
    caplog.clear()
    opened(v1repo).images.list()  # said once, not at every command
    assert not [r for r in caplog.records if r.getMessage().startswith("warning: udocker 1")]


def test_schema1_and_unreadable_manifests_are_refused(v1repo):
    directory = _tag_dir(v1repo, "old/one", "1", "v2")
    with open(os.path.join(directory, "manifest"), "w") as stream:
        json.dump({"schemaVersion": 1, "fsLayers": [{"blobSum": "sha256:" + "0" * 64}], "history": []}, stream)
    directory = _tag_dir(v1repo, "old/two", "1", "v2")
    with open(os.path.join(directory, "manifest"), "w") as stream:
        stream.write("{not json")
    repo = opened(v1repo)
    assert [image.ref for image in repo.images.list()] == ["docker.io/test/busybox:latest"]
    with pytest.raises(UdockerError, match="schema 1 format, which udocker 2 does not read: pull it again"):
        repo.images.find("old/one:1")
    with pytest.raises(UdockerError, match="udocker 1 image old/two:1: cannot read its manifest"):
        repo.images.find("old/two:1")


def test_a_v1_format_image_is_made_an_oci_image(v1repo):
    before = snapshot(v1repo)
    _directory, diff_id = load_v1(v1repo, "loaded/image", "v1", {"etc/loaded": b"yes\n"})
    repo = opened(v1repo)
    image = repo.images.find("loaded/image:v1")
    manifest, config = repo.images.details(image, repo.blobs)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert config["config"] == {"Cmd": ["/bin/true"]} and config["os"] == "linux"
    assert [layer.digest for layer in manifest.layers] == [diff_id]  # an uncompressed layer
    tree = rootfs_store.ensure_unpacked(repo, manifest, image.descriptor.digest)
    assert os.path.isfile(os.path.join(tree, "etc", "loaded"))
    assert all(before[path] == value for path, value in snapshot(v1repo).items() if path in before)


def test_rmi_removes_the_1x_tag_and_only_the_layers_no_other_tag_uses(v1repo):
    shared = {"bin/shared": b"shared\n"}
    _d, kept = pull_v2(v1repo, "test/other", "1", {"x": b"x\n"}, extra_layers=[shared])
    directory, gone = pull_v2(v1repo, "test/gone", "1", {"y": b"y\n"}, extra_layers=[shared])
    repo = opened(v1repo)
    repo.images.tag("docker.io/test/alias:1", repo.images.get("docker.io/test/gone:1").descriptor)
    repo.remove_images(["test/alias:1"])  # another name: 1.x's tag stays
    assert os.path.isdir(directory)
    repo.remove_images(["test/gone:1"])
    assert not os.path.exists(directory) and not os.path.exists(os.path.dirname(directory))
    assert os.path.isdir(os.path.join(v1repo, "repos", "test", "other", "1"))
    layers = os.path.join(v1repo, "layers")
    assert not os.path.exists(os.path.join(layers, gone["layers"][1]["digest"]))
    assert os.path.exists(os.path.join(layers, gone["layers"][0]["digest"]))  # test/other:1 uses it too
    again = opened(v1repo)
    assert [image.ref for image in again.images.list()] == ["docker.io/test/busybox:latest", "docker.io/test/other:1"]
    with pytest.raises(NotFound):
        again.images.find("test/gone:1")
    for layer in kept["layers"]:
        again.blobs.verify(layer["digest"])


def test_an_image_1x_removed_is_forgotten_and_its_blobs_collected(v1repo):
    repo = opened(v1repo)
    digest = repo.images.get("docker.io/test/busybox:latest").descriptor.digest
    tag = os.path.join(v1repo, "repos", "test", "busybox", "latest")
    for name in os.listdir(tag):
        os.unlink(os.path.join(tag, name))
    os.rmdir(tag)
    again = opened(v1repo)
    assert again.images.list() == []
    again.collect_garbage()
    assert not again.blobs.has(digest)


def _open_and_list(top, queue):
    repo = opened(top)
    listed = [image.ref for image in repo.images.list()]
    queue.put((repo.v1_adopted, listed))


def test_concurrent_first_opens_adopt_once(tmp_path):
    top = make_v1_repo(str(tmp_path / "udocker"))
    for index in range(3):
        pull_v2(top, f"test/image{index}", "1", {f"file{index}": b"%d\n" % index})
    before = snapshot(top)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_open_and_list, args=(top, queue)) for _ in range(8)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    names = [f"docker.io/test/image{index}:1" for index in range(3)]
    assert all(listed == names for _count, listed in results), results
    assert sum(count for count, _listed in results) == 3, results
    assert snapshot(top) == before
    repo = opened(top)
    for image in repo.images.list():
        manifest, _config = repo.images.details(image, repo.blobs)
        for layer in manifest.layers:
            repo.blobs.verify(layer.digest)
    assert os.listdir(repo.layout.tmp) == []


def test_rmi_keeps_a_tag_that_udocker13_protected(v1repo, caplog):
    tag = os.path.join(v1repo, "repos", "test", "busybox", "latest")
    open(os.path.join(tag, "PROTECT"), "w").close()
    repo = opened(v1repo)
    repo.remove_images(["test/busybox"])
    assert os.path.isfile(os.path.join(tag, "TAG"))
    assert any("is protected (udocker 1.3's protect): kept" in r.getMessage() for r in caplog.records)
