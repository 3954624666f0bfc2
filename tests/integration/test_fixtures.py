"""The shared fixtures and image builders: the registry serves what they pushed, other tools accept it."""

import base64
import gzip
import hashlib
import io
import json
import os
import ssl
import subprocess
import tarfile
import urllib.error
import urllib.request

import pytest

from tests.conftest import require
from tests.support import build_test_images as builders

ACCEPT = ", ".join([builders.OCI_MANIFEST, builders.DOCKER_MANIFEST, builders.OCI_INDEX, builders.DOCKER_LIST])


def fetch(registry, path, *, accept=ACCEPT, auth=None, context=None):
    headers = {"Accept": accept}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(registry.url + path, headers=headers)
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        return answer.headers, answer.read()


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_registry_serves_every_image(registry):
    _, body = fetch(registry, "/v2/_catalog")
    assert set(json.loads(body)["repositories"]) >= {"test/busybox", "test/busybox-oci", "test/layers",
                                                    "test/multiarch", "test/multiarch-docker"}
    assert set(registry.digests) == {"test/busybox:latest", "test/busybox-oci:latest", "test/layers:latest",
                                     "test/multiarch:latest", "test/multiarch-docker:latest"}
    assert registry.ref("test/busybox:latest") == f"{registry.host}/test/busybox:latest"
    assert registry.url == f"http://{registry.host}"


@pytest.mark.parametrize("ref", ["test/busybox:latest", "test/busybox-oci:latest", "test/layers:latest"])
def test_manifests_and_blobs_match_their_digests(registry, ref):
    name, tag = ref.split(":")
    pushed = registry.images[ref]
    headers, manifest = fetch(registry, f"/v2/{name}/manifests/{tag}")
    assert digest_of(manifest) == pushed.digest == headers["Docker-Content-Digest"]
    assert headers["Content-Type"] == pushed.media_type
    manifest = json.loads(manifest)
    _, config = fetch(registry, f"/v2/{name}/blobs/{manifest['config']['digest']}")
    assert digest_of(config) == manifest["config"]["digest"] == pushed.config_digest
    config = json.loads(config)
    assert (config["os"], config["architecture"]) == ("linux", builders.host_platform()[0])
    assert config["created"] and len(config["history"]) >= len(manifest["layers"])
    diff_ids = []
    for layer in manifest["layers"]:
        _, blob = fetch(registry, f"/v2/{name}/blobs/{layer['digest']}")
        assert (digest_of(blob), len(blob)) == (layer["digest"], layer["size"])
        diff_ids.append(digest_of(gzip.decompress(blob)))
    assert config["rootfs"]["diff_ids"] == diff_ids
    assert [layer["digest"] for layer in manifest["layers"]] == list(pushed.layers)


def test_busybox_config_and_media_types(registry):
    docker = json.loads(fetch(registry, "/v2/test/busybox/manifests/latest")[1])
    oci = json.loads(fetch(registry, "/v2/test/busybox-oci/manifests/latest")[1])
    assert docker["layers"][0]["mediaType"] == builders.DOCKER_LAYER
    assert oci["layers"][0]["mediaType"] == builders.OCI_LAYER
    assert docker["layers"][0]["digest"] == oci["layers"][0]["digest"]
    config = json.loads(fetch(registry, f"/v2/test/busybox/blobs/{docker['config']['digest']}")[1])["config"]
    assert config["Cmd"] == ["sh"] and config["WorkingDir"] == "/" and "Entrypoint" not in config
    assert any(var.startswith("PATH=") for var in config["Env"])


def test_busybox_layer_contents():
    with tarfile.open(fileobj=io.BytesIO(builders.busybox_layer().data)) as archive:
        members = {member.name: member for member in archive.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777
    assert {member.mtime for member in members.values()} == {builders.MTIME}


def test_images_are_deterministic():
    first, second = builders.layers_image(), builders.layers_image()
    assert first.manifest_bytes(oci=False) == second.manifest_bytes(oci=False)
    assert first.config_bytes() == second.config_bytes()


@pytest.mark.parametrize("ref, oci", [("test/multiarch:latest", True), ("test/multiarch-docker:latest", False)])
def test_multiarch_index_lists_both_platforms(registry, ref, oci):
    name, tag = ref.split(":")
    headers, body = fetch(registry, f"/v2/{name}/manifests/{tag}")
    index = json.loads(body)
    assert headers["Content-Type"] == (builders.OCI_INDEX if oci else builders.DOCKER_LIST)
    platforms = ["/".join(filter(None, (p["os"], p["architecture"], p.get("variant"))))
                 for p in (entry["platform"] for entry in index["manifests"])]
    assert platforms == ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]
    children = registry.images[ref].children
    assert [entry["digest"] for entry in index["manifests"]] == [children[p].digest for p in platforms]
    if oci:
        annotations = index["manifests"][2]["annotations"]
        assert annotations["vnd.docker.reference.type"] == "attestation-manifest"
        assert annotations["vnd.docker.reference.digest"] == children["linux/amd64"].digest
    arm = json.loads(fetch(registry, f"/v2/{name}/manifests/{children['linux/arm64/v8'].digest}")[1])
    _, blob = fetch(registry, f"/v2/{name}/blobs/{arm['layers'][-1]['digest']}")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as archive:
        assert archive.extractfile("platform").read() == b"linux/arm64/v8\n"


def _skopeo(*args):
    require("skopeo")
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.parametrize("ref", ["test/busybox:latest", "test/busybox-oci:latest", "test/layers:latest"])
def test_skopeo_accepts_the_images(registry, ref):
    info = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{registry.ref(ref)}"))
    assert info["Digest"] == registry.digests[ref]
    assert info["Architecture"] == builders.host_platform()[0]


def test_skopeo_selects_arm64_from_the_index(registry, tmp_path):
    raw = _skopeo("inspect", "--tls-verify=false", "--override-arch", "arm64", "--override-variant", "v8",
                  f"docker://{registry.ref('test/multiarch:latest')}")
    assert json.loads(raw)["Architecture"] == "arm64"


def test_umoci_unpacks_layers_to_the_expected_tree(registry, tmp_path):
    require("umoci")
    layout = tmp_path / "layout"
    _skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{registry.ref('test/layers:latest')}",
            f"oci:{layout}:layers")
    bundle = tmp_path / "bundle"
    rootless = ["--rootless"] if os.getuid() else []
    subprocess.run(["umoci", "unpack", *rootless, "--image", f"{layout}:layers", str(bundle)], check=True,
                   capture_output=True, timeout=120)
    assert builders.check_tree(str(bundle / "rootfs"), builders.LAYERS_EXPECTED) == []


def test_check_tree_reports_differences(tmp_path):
    (tmp_path / "a").write_text("x")
    os.symlink("b", tmp_path / "l")
    expected = {"/a": {"kind": "file", "content": "y"}, "/l": {"kind": "symlink", "target": "c"},
                "/gone": {"kind": "absent"}, "/missing": {"kind": "dir"}}
    (tmp_path / "gone").mkdir()
    assert builders.check_tree(str(tmp_path), expected) == [
        "/a: content 'x', should be 'y'", "/gone: exists, should be absent", "/l: points to b, should point to c",
        "/missing: missing"]


def test_big_image_layers(tmp_path):
    config, layers = builders.big_image(2, 3, workdir=str(tmp_path))
    assert len(layers) == 3
    plain_sizes = []
    for layer in layers:
        with open(layer.path, "rb") as stream:
            blob = stream.read()
        assert (digest_of(blob), len(blob)) == (layer.digest, layer.size)
        plain = gzip.decompress(blob)
        assert digest_of(plain) == layer.diff_id
        plain_sizes.append(len(plain))
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in layers]
    # random data does not compress: each random layer is about its share of 2 MiB
    assert all(layer.size > 1024 * 1024 * 0.99 for layer in layers[1:])


def test_push_big_image(registry):
    pushed = builders.push_big(registry.client(), "bench/big:small", 1, 3)
    headers, manifest = fetch(registry, "/v2/bench/big/manifests/small")
    assert digest_of(manifest) == pushed.digest and len(json.loads(manifest)["layers"]) == 3


def test_registry_with_users_and_tls(make_registry):
    secured = make_registry(users={"alice": "secret"}, tls=True, images=("busybox",))
    assert secured.url.startswith("https://")
    context = ssl.create_default_context(cafile=secured.cafile)
    with pytest.raises(urllib.error.HTTPError) as denied:
        fetch(secured, "/v2/", context=context)
    assert denied.value.code == 401
    headers, body = fetch(secured, "/v2/test/busybox/manifests/latest", auth=("alice", "secret"),
                          context=context)
    assert digest_of(body) == secured.digests["test/busybox:latest"]


def test_udocker_runner_uses_its_own_repository_and_environment(udocker, tmp_path):
    result = udocker("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("udocker ")
    shown = udocker("showconf", "--json", repo=False, env={"UDOCKER_DIR": str(tmp_path / "elsewhere")})
    assert shown.returncode == 0, shown.stderr
    topdir = json.loads(shown.stdout)["topdir"]
    assert topdir == {"value": str(tmp_path / "elsewhere"), "source": "environment"}
    shown = udocker("showconf", "--json")
    assert json.loads(shown.stdout)["topdir"] == {"value": udocker.repo, "source": "command line"}
    assert udocker("no-such-command").returncode == 2
