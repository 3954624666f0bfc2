"""The Debian 12 test image (tests/support/build_debian_image.py): what the registry serves verifies, other tools accept
it, and umoci unpacks layer 2's whiteouts, opaque directory, hard links and permissions as expected."""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request

import pytest

from tests.conftest import require
from tests.support import build_debian_image as debian
from tests.support import build_test_images as builders

ACCEPT = ", ".join([builders.OCI_MANIFEST, builders.DOCKER_MANIFEST])


def fetch(image, path):
    request = urllib.request.Request(image.registry.url + path, headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.headers, answer.read()


def open_blob(image, digest):
    return urllib.request.urlopen(f"{image.registry.url}/v2/test/debian/blobs/{digest}", timeout=60)


class _Hashing:
    """A reader that hashes and counts what passes through."""

    def __init__(self, stream):
        self.stream, self.hash, self.size = stream, hashlib.sha256(), 0

    def read(self, size=-1):
        data = self.stream.read(size)
        self.hash.update(data)
        self.size += len(data)
        return data


def blob_digests(image, digest):
    """(digest, size, diff_id) of a gzip layer, streamed once from the registry."""
    plain = hashlib.sha256()
    with open_blob(image, digest) as answer:
        compressed = _Hashing(answer)
        unzipped = gzip.GzipFile(fileobj=compressed)
        for chunk in iter(lambda: unzipped.read(1 << 20), b""):
            plain.update(chunk)
        while compressed.read(1 << 16):  # anything after the gzip stream still counts
            pass
    return "sha256:" + compressed.hash.hexdigest(), compressed.size, "sha256:" + plain.hexdigest()


def members(image, digest):
    with open_blob(image, digest) as answer, tarfile.open(fileobj=answer, mode="r|gz") as archive:
        return {member.name.rstrip("/"): member for member in archive}


def test_manifest_config_and_layers_verify(debian_image):
    headers, data = fetch(debian_image, "/v2/test/debian/manifests/12")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest == debian_image.digest == headers["Docker-Content-Digest"] == debian_image.info["manifest_digest"]
    assert headers["Content-Type"] == builders.OCI_MANIFEST
    manifest = json.loads(data)
    _, config_data = fetch(debian_image, f"/v2/test/debian/blobs/{manifest['config']['digest']}")
    assert "sha256:" + hashlib.sha256(config_data).hexdigest() == manifest["config"]["digest"]
    assert len(config_data) == manifest["config"]["size"]
    config = json.loads(config_data)
    assert (config["os"], config["architecture"]) == ("linux", builders.host_platform()[0])
    assert config["config"]["Cmd"] == ["/bin/bash"] and config["config"]["WorkingDir"] == "/root"
    assert any(var.startswith("PATH=/usr/local/sbin:") for var in config["config"]["Env"])
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == debian_image.info["debian_version"]
    assert debian_image.info["debian_version"].startswith("12.")
    assert len(manifest["layers"]) == len(config["history"]) == 2
    diff_ids = []
    for layer, recorded in zip(manifest["layers"], debian_image.info["layers"]):
        assert layer["mediaType"] == builders.OCI_LAYER
        blob, size, diff_id = blob_digests(debian_image, layer["digest"])
        assert (blob, size) == (layer["digest"], layer["size"]) == (recorded["digest"], recorded["size"])
        diff_ids.append(diff_id)
    assert config["rootfs"]["diff_ids"] == diff_ids == [x["diff_id"] for x in debian_image.info["layers"]]


def test_layer1_is_a_clean_debootstrap_tree(debian_image):
    tree = members(debian_image, debian_image.pushed.layers[0])
    assert {"bin", "usr/bin/ls", "usr/bin/bash", "etc/debian_version", "dev", "proc", "sys", "tmp"} <= set(tree)
    assert tree["bin"].issym() and tree["bin"].linkname == "usr/bin"
    assert tree["usr/bin/uncompress"].islnk() and tree["usr/bin/uncompress"].linkname == "usr/bin/gunzip"
    assert {m.type for m in tree.values()} <= {tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE}
    emptied = ("dev/", "proc/", "sys/", "tmp/", "var/lib/apt/lists/", "usr/share/locale/", "usr/share/man/")
    assert [name for name in tree if name.startswith(emptied)] == []
    assert [name for name in tree if name.endswith(".deb") or name.startswith("var/cache/apt/pkgcache")] == []
    assert {(m.uname, m.gname) for m in tree.values()} == {("", "")}
    assert tree["etc/shadow"].uid == 0 and tree["etc/shadow"].mode == 0o640  # numeric owners and modes kept
    assert tree["tmp"].mode == 0o1777 and tree["root"].mode == 0o700


def test_layer2_holds_whiteouts_and_an_opaque_marker(debian_image):
    tree = members(debian_image, debian_image.pushed.layers[1])
    assert {"etc/.wh.motd", "usr/share/doc/.wh.bash", "usr/bin/.wh.gunzip", "etc/skel/.wh..wh..opq"} <= set(tree)
    assert tree["opt/udocker-test/hl/same-dir-link"].islnk()
    assert tree["opt/udocker-test/rodir"].mode == 0o555


def _skopeo(*args):
    require("skopeo")
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300, check=True).stdout


def test_skopeo_inspects_the_registry_image_and_the_archive(debian_image):
    info = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{debian_image.ref}"))
    assert info["Digest"] == debian_image.digest
    assert (info["Os"], info["Architecture"]) == ("linux", builders.host_platform()[0])
    assert info["Layers"] == list(debian_image.pushed.layers)
    assert info["Labels"]["org.opencontainers.image.title"] == "udocker test debian"
    local = json.loads(_skopeo("inspect", f"oci-archive:{debian_image.archive}:{debian.TAG}"))
    assert local["Digest"] == debian_image.digest


@pytest.fixture(scope="module")
def unpacked(debian_image, tmp_path_factory):
    """The image copied from the registry by skopeo and unpacked by umoci (--rootless unless root): the rootfs."""
    require("umoci")
    work = tmp_path_factory.mktemp("debian-umoci")
    _skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{debian_image.ref}", f"oci:{work / 'layout'}:12")
    rootless = ["--rootless"] if os.getuid() else []
    subprocess.run(["umoci", "unpack", *rootless, "--image", f"{work / 'layout'}:12", str(work / "bundle")],
                   check=True, capture_output=True, timeout=300)
    return str(work / "bundle" / "rootfs")


def test_umoci_unpack_shows_layer2_effects(debian_image, unpacked):
    assert builders.check_tree(unpacked, debian_image.expected) == []
    assert builders.check_tree(unpacked, debian_image.base_expected) == []
    # The other name of the whited-out hard link is whole, not an empty file.
    with open(os.path.join(unpacked, "usr/bin/uncompress"), "rb") as stream:
        assert stream.read(10) == b"#!/bin/sh\n"


def test_unpacked_tree_runs_under_proot(unpacked):
    require("proot")
    result = subprocess.run(["proot", "-r", unpacked, "-w", "/", "/bin/bash", "-c",
                             "ls --version | head -n 1; udocker-check; cat /etc/debian_version"],
                            env={"PATH": builders.PATH_ENV.split("=", 1)[1], "LANG": "C"}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ls (GNU coreutils) ") and lines[1] == debian.CHECK_OUTPUT.strip()
    assert lines[2].startswith("12.")


# --- the builder's pure parts (no image needed) -------------------------------------------------------------------


@pytest.mark.parametrize("name, text, uri", [
    ("sources.list", "# comment\ndeb [arch=amd64] http://ftp.fr.debian.org/debian/ bookworm main\n",
     "http://ftp.fr.debian.org/debian"),
    ("debian.sources", "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
     "Components: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n",
     "http://deb.debian.org/debian"),
    ("other.list", "deb https://packages.example.com/apt cloud-sdk-bookworm main\n", debian.DEFAULT_MIRROR),
    ("security.list", "deb http://security.debian.org/debian-security bookworm-security main\n",
     debian.DEFAULT_MIRROR),
])
def test_apt_mirror_reads_the_sources(tmp_path, name, text, uri):
    (tmp_path / name).write_text(text)
    assert debian.apt_mirror([str(tmp_path / "missing.list"), str(tmp_path)]) == uri


def test_layer2_entries_make_what_is_expected(tmp_path):
    layer = builders.make_layer(debian.layer2_entries())
    with tarfile.open(fileobj=io.BytesIO(layer.data)) as archive:
        names = {member.name.rstrip("/") for member in archive}
    for path, want in debian.LAYER2_EXPECTED.items():
        name = path.lstrip("/")
        if want["kind"] == "absent":
            # a whiteout of the path or of one of its directories, or an opaque marker in its directory
            parts = name.split("/")
            hidden = {"/".join(parts[:i - 1] + [".wh." + parts[i - 1]]) for i in range(1, len(parts) + 1)}
            hidden.add("/".join(parts[:-1] + [".wh..wh..opq"]))
            assert name not in names and hidden & names, path
        elif path.startswith(("/opt/", "/usr/local/", "/etc/skel")):
            assert name in names, path


def test_up_to_date_needs_the_same_script_and_packages(tmp_path):
    archive = str(tmp_path / "debian12.tar")
    assert not debian.up_to_date(archive, [])
    with open(archive, "wb") as stream:
        stream.write(b"x" * 10)
    info = {"script": debian.script_digest(), "packages": [], "archive_size": 10}
    (tmp_path / "debian12.json").write_text(json.dumps(info))
    assert debian.up_to_date(archive, [])
    assert not debian.up_to_date(archive, ["openmpi-bin"])
    (tmp_path / "debian12.json").write_text(json.dumps({**info, "script": "sha256:0"}))
    assert not debian.up_to_date(archive, [])


def test_a_local_pip_project_is_part_of_the_cache_key(tmp_path, monkeypatch):
    project = tmp_path / "tests" / "support" / "model"
    (project / "pkg").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'model'\n")
    (project / "pkg" / "__init__.py").write_text("def predict(): return 1\n")
    monkeypatch.setattr(debian, "CHECKOUT", str(tmp_path))
    include = ["pip:deepaas==2.6.0", "pip:tests/support/model", "python3"]
    assert debian.local_project("tests/support/model") == str(project)
    assert debian.local_project("deepaas==2.6.0") is None
    first = debian.script_digest(include)
    assert first != debian.script_digest(["pip:deepaas==2.6.0", "python3"])
    (project / "pkg" / "__init__.py").write_text("def predict(): return 2\n")
    changed = debian.script_digest(include)
    assert changed != first
    (project / "build").mkdir()  # what a build leaves in the tree does not count
    (project / "build" / "leftover").write_text("x")
    (project / "model.egg-info").mkdir()
    assert debian.script_digest(include) == changed


def test_ci_builds_the_deepaas_image_with_our_model():
    """The service tests query our model's entry point: .ci/run must put it in the image."""
    with open(os.path.join(debian.CHECKOUT, ".ci", "run"), encoding="utf-8") as stream:
        assert "pip:tests/support/udocker_demo_model" in stream.read()
    assert debian.local_project("tests/support/udocker_demo_model")


def test_the_demo_model_answers_from_its_input():
    sys.path.insert(0, os.path.join(debian.CHECKOUT, "tests", "support", "udocker_demo_model"))
    try:
        import udocker_demo_model as model
    finally:
        sys.path.pop(0)
    answer = model.predict(text="héllo")
    assert answer == {"model": "udocker-demo", "reversed": "olléh", "length": 5,
                      "sha256": hashlib.sha256("héllo".encode()).hexdigest()}
    assert model.get_metadata()["name"] == "udocker-demo"
