"""load, save and import through the command line, checked against skopeo and umoci."""

import gzip
import json
import os
import shutil
import subprocess
import sys
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
    write_tar,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")
needs_umoci = pytest.mark.skipif(not shutil.which("umoci"), reason="umoci is not installed")


@pytest.fixture
def udocker(tmp_path):
    repo = str(tmp_path / "repo")

    def run(*args, stdin=None, input_bytes=None):
        env = dict(os.environ, PYTHONPATH=ROOT)
        return subprocess.run([sys.executable, "-m", "udocker", "--repo", repo, *args], env=env, cwd=tmp_path,
                              stdin=stdin, input=input_bytes, capture_output=True, timeout=120, check=False)

    return run


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def images(udocker):
    return [item["reference"] for item in json.loads(ok(udocker("images", "--json")))]


def test_save_load_round_trip_through_pipes(udocker, tmp_path):
    docker_archive(tmp_path / "a.tar", [Image(["busybox:1.0"], [BASE, TOP]), Image(["q.io/x/y:2"], [BASE, OTHER])],
                   style="symlinks")
    assert ok(udocker("load", "-i", "a.tar")) == "Loaded image: busybox:1.0\nLoaded image: q.io/x/y:2\n"
    saved = udocker("save", "busybox:1.0", "q.io/x/y:2").stdout
    assert saved == udocker("save", "-o", "-", "busybox:1.0", "q.io/x/y:2").stdout
    ok(udocker("rmi", "busybox:1.0", "q.io/x/y:2"))
    assert images(udocker) == []
    assert ok(udocker("load", input_bytes=gzip.compress(saved))) == \
        "Loaded image: busybox:1.0\nLoaded image: q.io/x/y:2\n"
    assert images(udocker) == ["docker.io/library/busybox:1.0", "q.io/x/y:2"]
    assert ok(udocker("verify", "q.io/x/y:2")) == "verified: q.io/x/y:2 (2 layers)\n"


@pytest.mark.parametrize("style", ["dirs", "blobs"])
def test_load_docker_archive_styles(udocker, tmp_path, style):
    docker_archive(tmp_path / "a.tar", [Image(["img:1"], [BASE, TOP])], style=style)
    with open(tmp_path / "a.tar", "rb") as stream:
        assert ok(udocker("load", stdin=stream)) == "Loaded image: img:1\n"
    assert ok(udocker("verify", "img:1")) == "verified: docker.io/library/img:1 (2 layers)\n"


@needs_skopeo
def test_skopeo_reads_what_save_writes(udocker, tmp_path):
    docker_archive(tmp_path / "a.tar", [Image(["busybox:1.0"], [BASE, TOP])])
    ok(udocker("load", "-i", "a.tar"))
    ok(udocker("save", "-o", "saved.tar", "busybox:1.0"))
    for source in ("docker-archive:saved.tar", "docker-archive:saved.tar:busybox:1.0"):
        inspected = json.loads(subprocess.run(["skopeo", "inspect", source], cwd=tmp_path,
                                              capture_output=True, check=True).stdout)
        assert len(inspected["Layers"]) == 2
    assert inspected["Name"] == "docker.io/library/busybox"
    subprocess.run(["skopeo", "copy", "docker-archive:saved.tar", "oci:ocidir:copied"], cwd=tmp_path,
                   capture_output=True, check=True)
    index = json.loads((tmp_path / "ocidir" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "copied"


@needs_skopeo
def test_load_oci_archive_from_skopeo(udocker, tmp_path):
    docker_archive(tmp_path / "a.tar", [Image(["src:1"], [BASE, TOP])])
    subprocess.run(["skopeo", "copy", "docker-archive:a.tar", "oci-archive:o.tar:quay.io/org/img:3"],
                   cwd=tmp_path, capture_output=True, check=True)
    assert ok(udocker("load", "-i", "o.tar")) == "Loaded image: quay.io/org/img:3\n"
    ok(udocker("verify", "quay.io/org/img:3"))
    # skopeo copy converts layers to gzip; saving decompresses them into what docker load wants.
    ok(udocker("save", "-o", "back.tar", "quay.io/org/img:3"))
    with tarfile.open(tmp_path / "back.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert tar.extractfile(manifest[0]["Layers"][1]).read() == TOP


@needs_umoci
def test_load_umoci_layout_needs_a_repository(udocker, tmp_path):
    layout = tmp_path / "lay"
    for command in (["init", "--layout", str(layout)], ["new", "--image", f"{layout}:v1"]):
        subprocess.run(["umoci", *command], capture_output=True, check=True)
    with tarfile.open(tmp_path / "u.tar", "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(layout / name, arcname=name)
    result = udocker("load", "-i", "u.tar")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("error: image sha256:")
    assert "named only by tag 'v1'" in result.stderr.decode()
    assert "hint: name it: udocker load -i FILE REPO (keeps the tag v1)" in result.stderr.decode()
    assert ok(udocker("load", "-i", "u.tar", "myimage")) == "Loaded image: myimage:v1\n"


def test_import_flat_tarball(udocker, tmp_path):
    data = layer({"bin/sh": b"shell", "etc/hostname": b"box\n"})
    (tmp_path / "rootfs.tgz").write_bytes(gzip.compress(data))
    image_id = ok(udocker("import", "--mv", "--platform", "linux/arm64", "rootfs.tgz", "mine:1")).strip()
    assert image_id.startswith("sha256:")
    assert not (tmp_path / "rootfs.tgz").exists()
    assert images(udocker) == ["docker.io/library/mine:1"]
    config = json.loads(ok(udocker("inspect", "mine:1")))
    assert (config["Id"], config["architecture"], config["os"]) == (image_id, "arm64", "linux")
    assert ok(udocker("verify", "mine:1")) == "verified: docker.io/library/mine:1 (1 layer)\n"
    assert ok(udocker("import", "-", "mine:2", input_bytes=data)).startswith("sha256:")


def _corrupt(tmp_path, case):
    members = docker_members([Image(["img:1"], [BASE, TOP])])
    layer_name = next(n for n, _ in members if n.endswith("/layer.tar"))
    if case == "truncated":
        docker_archive(tmp_path / "full.tar", [Image(["img:1"], [BASE, TOP])])
        (tmp_path / "bad.tar").write_bytes((tmp_path / "full.tar").read_bytes()[:4000])
        return "error: archive is truncated: bad.tar"
    if case == "diff-id":
        members = [(n, layer({"x": b"y"}) if n == layer_name else c) for n, c in members]
        message = f"error: layer {layer_name} in bad.tar does not match its diff_id"
    elif case == "traversal":
        members = [("../../escape", b"x"), *members]
        message = "error: unsafe member name in bad.tar: '../../escape'"
    else:
        members = [(n, c) for n, c in members if n not in ("manifest.json", "repositories")]
        message = "error: not an image archive: bad.tar has no manifest.json or index.json"
    write_tar(tmp_path / "bad.tar", members)
    return message


@pytest.mark.parametrize("case", ["truncated", "diff-id", "traversal", "no-manifest"])
def test_corrupt_archives_change_nothing(udocker, tmp_path, case):
    docker_archive(tmp_path / "good.tar", [Image(["keep:1"], [OTHER])])
    ok(udocker("load", "-i", "good.tar"))
    message = _corrupt(tmp_path, case)
    result = udocker("load", "-i", "bad.tar")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().splitlines()[0].startswith(message), result.stderr.decode()
    assert images(udocker) == ["docker.io/library/keep:1"]


def test_save_refuses_terminal_and_unknown_images(udocker, tmp_path):
    result = udocker("save", "-o", "x.tar", "nothing:1")
    assert (result.returncode, result.stderr.decode().splitlines()[0]) == (1, "error: image not found: nothing:1")
    assert not (tmp_path / "x.tar").exists()
