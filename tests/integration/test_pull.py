"""udocker pull against the real registry (plain HTTP), through the command line."""

import json
import os

import pytest


def _blobs(repo):
    return sorted(os.listdir(os.path.join(repo, "store", "blobs", "sha256")))


def _errors(stderr):
    """The error line and its hint: everything before them is progress or retry notices."""
    lines = stderr.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(start) == 1, stderr
    return lines[start[0]:]


def _leftovers(repo):
    return [n for n in os.listdir(os.path.join(repo, "tmp")) if n != ".lock"]


def test_pull_images_inspect_verify_rmi(udocker, registry, tmp_path):
    ref = f"{registry.host}/test/busybox:latest"
    pulled = udocker("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == ref
    assert "Digest: sha256:" in pulled.stderr
    listed = udocker("images")
    assert ref in listed.stdout
    config = json.loads(udocker("inspect", ref).stdout)
    assert config["config"]["Cmd"] == ["sh"]
    assert config["RepoTags"] == [ref]
    verified = udocker("verify", ref)
    assert verified.returncode == 0 and "verified" in verified.stdout
    repo = str(tmp_path / "repo")
    assert len(_blobs(repo)) == 3  # manifest, config, one layer
    again = udocker("pull", ref)
    assert again.returncode == 0 and "already exists" in again.stderr
    removed = udocker("rmi", ref)
    assert removed.returncode == 0, removed.stderr
    assert _blobs(repo) == []
    assert _leftovers(repo) == []


@pytest.mark.parametrize("name", ["test/busybox-oci:latest", "test/layers:latest"])
def test_pull_oci_and_multilayer(udocker, registry, name):
    ref = f"{registry.host}/{name}"
    assert udocker("pull", ref).returncode == 0
    assert udocker("verify", ref).returncode == 0


def test_pull_by_digest_and_tag_at_digest(udocker, registry):
    first = udocker("pull", f"{registry.host}/test/busybox:latest")
    digest = first.stderr.split("Digest: ")[1].split()[0]
    by_digest = udocker("pull", f"{registry.host}/test/busybox@{digest}")
    assert by_digest.returncode == 0, by_digest.stderr
    assert f"{registry.host}/test/busybox@{digest}" in udocker("images").stdout
    both = udocker("pull", f"{registry.host}/test/busybox:latest@{digest}")
    assert both.returncode == 0, both.stderr
    wrong = udocker("pull", f"{registry.host}/test/busybox@sha256:" + "0" * 64)
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: ")


@pytest.mark.parametrize("name", ["test/multiarch:latest", "test/multiarch-docker:latest"])
def test_platform_selection_from_an_index(udocker, registry, name):
    ref = f"{registry.host}/{name}"
    host = udocker("pull", ref)
    assert host.returncode == 0, host.stderr
    assert json.loads(udocker("inspect", ref).stdout)["architecture"] == "amd64"
    arm = udocker("pull", "--platform=linux/arm64", ref)
    assert arm.returncode == 0, arm.stderr
    config = json.loads(udocker("inspect", ref).stdout)
    assert config["architecture"] == "arm64"
    missing = udocker("pull", "--platform", "linux/s390x", ref)
    assert missing.returncode == 1
    assert _errors(missing.stderr)[0] == f"error: no image for platform linux/s390x in {ref}"
    assert "linux/amd64" in missing.stderr and "linux/arm64" in missing.stderr


def test_single_platform_image_is_not_pulled_for_another_platform(udocker, registry):
    ref = f"{registry.host}/test/busybox:latest"
    wrong = udocker("pull", "--platform=linux/arm64", ref)
    assert wrong.returncode == 1
    assert _errors(wrong.stderr)[0] == f"error: image {ref} is for linux/amd64, not linux/arm64"
    assert ref not in udocker("images").stdout


def test_batch_progress_and_quiet(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    loud = udocker("pull", ref)
    lines = loud.stderr.splitlines()
    assert any(line.endswith("downloading " + line.split()[-1]) for line in lines if "downloading" in line)
    assert sum(": done " in line for line in lines) == sum(": downloading " in line for line in lines) >= 2
    assert "\x1b[" not in loud.stderr
    quiet = udocker("-q", "pull", ref)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.strip() == ref


@pytest.mark.parametrize(
    "ref, first_line",
    [("Busybox", "error: invalid reference format: Busybox"),
     ("img:", "error: invalid tag in reference: img:"),
     ("{host}/test/nothere:latest", "error: manifest unknown: {host}/test/nothere:latest"),
     ("{host}/test/busybox:nosuchtag", "error: manifest unknown: {host}/test/busybox:nosuchtag"),
     ("127.0.0.1:1/test/busybox", "error: cannot reach registry 127.0.0.1:1")],
)
def test_pull_errors_are_one_line(udocker, registry, ref, first_line):
    result = udocker("pull", ref.format(host=registry.host))
    assert result.returncode == 1
    assert _errors(result.stderr)[0].startswith(first_line.format(host=registry.host))
    assert "Traceback" not in result.stderr
    assert len(_errors(result.stderr)) <= 2


def test_registry_option_replaces_docker_hub(udocker, registry):
    result = udocker("pull", f"--registry=http://{registry.host}", "test/busybox")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "docker.io/test/busybox:latest"
    assert "test/busybox:latest" in udocker("images").stdout
