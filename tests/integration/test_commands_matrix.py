"""Every image command against the real registry in each configuration: plain HTTP, TLS with a test CA
(ca_file from a --config file or from UDOCKER_CA_FILE), htpasswd Basic auth and token auth (both after
`udocker login`). Each test gets a fresh repository."""

import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Dict, List

import pytest

from tests.integration.conftest import REPOSITORY, TAG

CONFIGURATIONS = {
    "plain": "plain_registry",
    "tls-config-file": "tls_registry",
    "tls-environment": "tls_registry",
    "htpasswd": "htpasswd_registry",
    "token": "token_registry",
}


@dataclass
class Target:
    """One registry configuration: `run` calls udocker with the options and environment it needs."""

    served: object
    runner: object
    options: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return self.served.ref

    @property
    def host(self) -> str:
        return self.served.host

    def run(self, *args, **kwargs):
        env = dict(self.env, **kwargs.pop("env", {}))
        return self.runner(*self.options, *args, env=env, **kwargs)

    def ok(self, *args, **kwargs) -> str:
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
        return done.stdout


@pytest.fixture(params=list(CONFIGURATIONS))
def target(request, udocker, tmp_path) -> Target:
    served = request.getfixturevalue(CONFIGURATIONS[request.param])
    found = Target(served, udocker)
    if request.param == "tls-config-file":
        conf = tmp_path / "udocker.yaml"
        conf.write_text(f"ca_file: {served.ca}\n", encoding="utf-8")
        found.options = ["--config", str(conf)]
    elif request.param == "tls-environment":
        found.env = {"UDOCKER_CA_FILE": served.ca}
    elif request.param in ("htpasswd", "token"):
        done = found.run("login", "--username", "alice", "--password-stdin", "--registry", served.host,
                         input="wonderland\n")
        assert (done.returncode, done.stdout) == (0, f"login succeeded: {served.host}\n"), done.stderr
    return found


def _blobs(target: Target) -> List[str]:
    return sorted(os.listdir(os.path.join(target.runner.repo, "store", "blobs", "sha256")))


def test_pull_images_inspect(target):
    image = target.served.image
    assert target.ok("pull", target.ref) == target.ref + "\n"
    listed = target.ok("images").splitlines()
    assert listed[0].split() == ["REPOSITORY", "IMAGE", "ID", "CREATED", "SIZE"]
    assert [line.split()[:2] for line in listed[1:]] == [[target.ref, image["config_digest"][7:19]]]
    long_ = target.ok("images", "-l").splitlines()
    assert long_[1].startswith(target.ref)
    assert long_[2].split()[0] == image["layer_digest"]
    platform = target.ok("images", "-p").splitlines()
    assert platform[0].split()[-1] == "PLATFORM" and platform[1].split()[-1] == "linux/amd64"
    [item] = json.loads(target.ok("images", "--json"))
    assert item["reference"] == target.ref
    assert item["id"] == image["config_digest"]
    assert item["digest"] == image["digest"]
    assert item["layers"] == [image["layer_digest"]]
    assert item["platform"] == "linux/amd64"
    assert item["protected"] is False
    assert item["size"] == len(image["config"]) + len(image["layer"])
    config = json.loads(target.ok("inspect", target.ref))
    assert config["Id"] == image["config_digest"]
    assert config["RepoTags"] == [target.ref]
    assert config["config"]["Cmd"] == ["/bin/sh"]
    assert target.ok("inspect", "--json", target.ref) == target.ok("inspect", target.ref)
    assert target.ok("verify", target.ref) == f"verified: {target.ref} (1 layer)\n"
    assert len(_blobs(target)) == 3  # manifest, config, layer


def test_tag_protect_rmi_frees_blobs(target):
    target.ok("pull", target.ref)
    copy = f"{target.host}/tests/copy:2"
    assert target.ok("tag", target.ref, copy) == ""
    names = [item["reference"] for item in json.loads(target.ok("images", "--json"))]
    assert names == [copy, target.ref]
    target.ok("protect", target.ref)
    assert f"{target.ref} (protected)" in target.ok("images")
    refused = target.run("rmi", target.ref)
    assert refused.returncode == 1
    assert refused.stderr == f"error: image is protected: {target.ref}\nhint: run 'udocker unprotect' first\n"
    assert target.ref in target.ok("images")
    target.ok("unprotect", target.ref)
    assert target.ok("rmi", copy) == f"Untagged: {copy}\n"
    assert len(_blobs(target)) == 3  # still used by the original name
    assert target.ok("rmi", target.ref) == f"Untagged: {target.ref}\n"
    assert _blobs(target) == []
    assert target.ok("images", "--json") == "[]\n"


def test_rmi_force_removes_a_protected_image(target):
    target.ok("pull", target.ref)
    target.ok("protect", target.ref)
    assert target.ok("rmi", "-f", target.ref) == f"Untagged: {target.ref}\n"
    assert _blobs(target) == []


def test_manifest_inspect_and_list_tags(target):
    assert json.loads(target.ok("manifest", "inspect", target.ref)) == json.loads(target.served.image["manifest"])
    assert target.ok("search", "--list-tags", f"{target.host}/{REPOSITORY}") == f"{TAG}\n"


def test_save_rmi_load_restores(target, tmp_path):
    target.ok("pull", target.ref)
    archive = str(tmp_path / "saved.tar")
    assert target.ok("save", "-o", archive, target.ref) == ""
    target.ok("rmi", target.ref)
    assert _blobs(target) == []
    loaded = target.ok("load", "-i", archive)
    assert loaded == f"Loaded image: {target.ref}\n"
    assert target.ok("verify", target.ref) == f"verified: {target.ref} (1 layer)\n"
    config = json.loads(target.ok("inspect", target.ref))
    assert config["Id"] == target.served.image["config_digest"]


def test_import_flat_tarball(udocker, tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("flat\n", encoding="utf-8")
    tarball = str(tmp_path / "flat.tar.gz")
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(str(rootfs), arcname=".")
    done = udocker("import", tarball, "flat/image:1")
    assert done.returncode == 0, done.stderr
    image_id = done.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    [item] = json.loads(udocker("images", "--json").stdout)
    assert (item["reference"], item["id"]) == ("docker.io/flat/image:1", image_id)
    assert udocker("verify", "flat/image:1").stdout == "verified: docker.io/flat/image:1 (1 layer)\n"


def test_tls_pull_without_the_ca(udocker, tls_registry):
    done = udocker("pull", tls_registry.ref)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"error: tls verification failed for registry {tls_registry.host}: "
                               "certificate verify failed")
    assert lines[1:] == ["hint: set ca_file to the registry's CA bundle, or use --insecure"]
    assert udocker("images", "--json").stdout == "[]\n"
    insecure = udocker("--insecure", "pull", tls_registry.ref)
    assert insecure.returncode == 0, insecure.stderr
    assert insecure.stdout == tls_registry.ref + "\n"
    assert udocker("verify", tls_registry.ref).returncode == 0


@pytest.mark.parametrize("which", ["htpasswd_registry", "token_registry"])
def test_auth_errors(request, udocker, which):
    served = request.getfixturevalue(which)
    done = udocker("pull", served.ref)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-2:] == [f"error: authentication required for manifest {served.ref}",
                                             f"hint: run 'udocker login --registry={served.host}'"]
    wrong = udocker("login", "-u", "alice", "-p", "wrong", f"--registry={served.host}")
    reason = ("username or password refused" if which == "htpasswd_registry"
              else f"the auth server for {served.host} refused the username or password")
    assert (wrong.returncode, wrong.stdout) == (1, "")
    assert wrong.stderr == (f"error: login failed for {served.host}: {reason}\n"
                            "hint: check the username and password\n")
    assert not os.path.exists(os.path.join(udocker.repo, "credentials.yaml"))


def test_rmi_frees_blobs_even_when_a_later_name_fails(udocker, plain_registry):
    assert udocker("pull", plain_registry.ref).returncode == 0
    done = udocker("rmi", plain_registry.ref, "nothere:1")
    assert done.returncode == 1
    assert done.stdout == f"Untagged: {plain_registry.ref}\n"
    assert done.stderr == "error: image not found: nothere:1\nhint: see 'udocker images' or pull it\n"
    assert os.listdir(os.path.join(udocker.repo, "store", "blobs", "sha256")) == []


def test_pull_from_an_unreachable_registry(udocker):
    from tests.support.local_registry import free_port

    host = f"127.0.0.1:{free_port()}"
    done = udocker("pull", f"{host}/tests/tiny:1.0", env={"UDOCKER_RETRIES": "0"})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"error: cannot reach registry {host}: connection refused\n"
    assert udocker("images", "--json").stdout == "[]\n"
