"""One broken record never breaks the rest of the store (issue 8, items 2, 5, 6, 7 and 10):
corrupt container.json and manifest blobs are listed as broken and removable, garbage collection fails
closed, rmi refuses images that containers use, unused unpacked trees are collected, and an unreadable
index.json or containers/ directory is reported as what it is."""

import json
import os
import stat

import pytest

from tests.fixtures.cli import ok


def one_error(result, *words):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: ") and len(lines) <= 2, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], result.stderr
    return lines[0]


def blob(udocker, digest):
    return os.path.join(udocker.repo, "store", "blobs", "sha256", digest.split(":", 1)[1])


def overwrite(path, data):
    os.chmod(path, 0o644)
    with open(path, "wb") as stream:
        stream.write(data)


@pytest.fixture
def images(udocker, registry):
    """busybox and layers pulled: {"busybox": (ref, Pushed), "layers": (ref, Pushed)}."""
    found = {}
    for short in ("busybox", "layers"):
        ref = registry.ref(f"test/{short}:latest")
        ok(udocker("-q", "pull", ref))
        found[short] = (ref, registry.images[f"test/{short}:latest"])
    return found


CORRUPTIONS = {"garbage": b"\x00\xffnot json{", "list": b"[1]", "missing": None, "no id": b'{"image": "x"}'}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_container_json_is_listed_as_broken_and_removable(udocker, images, kind):
    busybox = images["busybox"][0]
    broken = ok(udocker("create", "--name=broken", busybox)).strip()
    healthy = ok(udocker("create", "--name=healthy", busybox)).strip()
    record = os.path.join(udocker.repo, "containers", broken, "container.json")
    if CORRUPTIONS[kind] is None:
        os.unlink(record)
    else:
        overwrite(record, CORRUPTIONS[kind])
    rows = {row["id"]: row for row in json.loads(ok(udocker("ps", "--json")))}
    assert set(rows) == {broken, healthy}
    assert rows[healthy]["names"] == ["healthy"] and not rows[healthy].get("broken")
    assert rows[broken]["broken"] and rows[broken]["names"] == ["broken"]
    table = ok(udocker("ps", "-m", "-s", "-p"))
    assert healthy in table and "broken" in table.split(broken, 1)[1].splitlines()[0]
    assert udocker("run", "broken", "true").returncode == 125
    one_error(udocker("setup", "broken"), broken)
    one_error(udocker("inspect", "broken"), broken)
    ok(udocker("rm", "broken" if kind != "garbage" else broken[:8]))
    assert [row["id"] for row in json.loads(ok(udocker("ps", "--json")))] == [healthy]
    assert sorted(os.listdir(os.path.join(udocker.repo, "containers"))) == [".names", healthy]


@pytest.mark.parametrize("kind", ["garbage", "missing", "not a manifest"])
def test_corrupt_manifest_is_listed_as_broken_and_gc_fails_closed(udocker, images, kind):
    (busybox, _), (layers, pushed) = images["busybox"], images["layers"]
    path = blob(udocker, pushed.digest)
    if kind == "missing":
        os.unlink(path)
    else:
        overwrite(path, b"\x00garbage" if kind == "garbage" else b'{"schemaVersion": 2}')
    listed = {item["reference"]: item for item in json.loads(ok(udocker("images", "--json")))}
    assert set(listed) == {busybox, layers}
    assert listed[layers]["broken"] and not listed[busybox].get("broken")
    assert listed[busybox]["layers"]
    table = ok(udocker("images", "-l", "-p"))
    assert "broken" in table.split(layers, 1)[1].splitlines()[0] and busybox in table
    one_error(udocker("verify", layers), layers)
    ok(udocker("verify", busybox))
    # the next rmi of anything must not delete the broken image's config and layers
    result = udocker("rmi", busybox)
    one_error(result, layers)
    for digest in (pushed.config_digest,) + tuple(pushed.layers):
        assert os.path.exists(blob(udocker, digest)), digest
    # removing the broken record itself works, and then everything unused goes
    ok(udocker("rmi", layers))
    assert json.loads(ok(udocker("images", "--json"))) == []
    assert os.listdir(os.path.join(udocker.repo, "store", "blobs", "sha256")) == []


def test_rmi_refuses_an_image_a_container_uses(udocker, images):
    busybox = images["busybox"][0]
    cid = ok(udocker("create", "--name=user", busybox)).strip()
    one_error(udocker("rmi", busybox), cid)
    assert busybox in ok(udocker("images"))
    # another name of the same image can go: the image stays
    ok(udocker("tag", busybox, "other:1"))
    ok(udocker("rmi", "other:1"))
    one_error(udocker("rmi", busybox), cid)
    ok(udocker("rmi", "-f", busybox))
    assert busybox not in ok(udocker("images"))
    assert os.path.isfile(os.path.join(ok(udocker("inspect", "-p", "user")).strip(), "bin", "busybox"))


def _unpacked(udocker):
    top = os.path.join(udocker.repo, "unpacked")
    return sorted(os.listdir(top)) if os.path.isdir(top) else []


def test_rmi_collects_unpacked_trees_no_image_and_no_container_uses(udocker, images):
    (busybox, bpushed), (layers, lpushed) = images["busybox"], images["layers"]
    ok(udocker("create", "--name=b", busybox))
    ok(udocker("create", "--name=l", layers))
    hexes = {bpushed.digest[7:], lpushed.digest[7:]}
    assert set(_unpacked(udocker)) == hexes
    ok(udocker("rm", "l"))
    ok(udocker("rmi", layers))
    assert _unpacked(udocker) == [bpushed.digest[7:]]
    ok(udocker("rmi", "-f", busybox))  # container b still uses the tree
    assert _unpacked(udocker) == [bpushed.digest[7:]]
    ok(udocker("rm", "b"))  # the last user of a tree whose image is gone: rm collects it
    assert _unpacked(udocker) == []
    ok(udocker("-q", "pull", layers))
    ok(udocker("create", "--name=l2", layers))
    ok(udocker("rm", "l2"))  # its image is still there: the tree stays for the next create
    assert _unpacked(udocker) == [lpushed.digest[7:]]
    assert os.listdir(os.path.join(udocker.repo, "tmp")) in ([], [".lock"])


def test_gc_keeps_unpacked_trees_of_broken_containers_images(udocker, images):
    busybox = images["busybox"][0]
    cid = ok(udocker("create", "--name=b", busybox)).strip()
    overwrite(os.path.join(udocker.repo, "containers", cid, "container.json"), b"[1]")
    ok(udocker("rmi", images["layers"][0]))
    assert _unpacked(udocker) == [images["busybox"][1].digest[7:]]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_index_is_not_image_not_found(udocker, images):
    busybox = images["busybox"][0]
    index = os.path.join(udocker.repo, "store", "index.json")
    os.chmod(index, 0)
    try:
        for args in (("create", busybox), ("inspect", busybox), ("rmi", busybox), ("verify", busybox),
                     ("images",)):
            line = one_error(udocker(*args), "index.json")
            assert "not found" not in line
    finally:
        os.chmod(index, 0o644)


def test_malformed_index_is_not_image_not_found(udocker, images):
    busybox = images["busybox"][0]
    overwrite(os.path.join(udocker.repo, "store", "index.json"), b"{garbage")
    for args in (("create", busybox), ("inspect", busybox), ("images",)):
        line = one_error(udocker(*args), "index.json")
        assert "not found" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_containers_directory_is_named(udocker, images):
    containers = os.path.join(udocker.repo, "containers")
    ok(udocker("ps"))
    os.chmod(containers, stat.S_IRUSR | stat.S_IXUSR)
    try:
        for args in (("create", images["busybox"][0]), ("create", "--name=x", images["busybox"][0])):
            line = one_error(udocker(*args), containers)
            assert os.path.join(udocker.repo, "tmp") not in line
    finally:
        os.chmod(containers, 0o755)
    assert json.loads(ok(udocker("ps", "--json"))) == []
    assert os.listdir(os.path.join(udocker.repo, "tmp")) in ([], [".lock"])


def test_a_name_left_by_a_killed_create_is_reclaimed(udocker, images):
    """A create killed after reserving its name and before publishing the container leaves a name
    that points at nothing: it names no container and the next create may take it."""
    ok(udocker("ps"))
    names = os.path.join(udocker.repo, "containers", ".names")
    os.makedirs(names, exist_ok=True)
    os.symlink("0b0e2d3c-1111-4222-8333-444455556666", os.path.join(names, "stale"))
    assert json.loads(ok(udocker("ps", "--json"))) == []
    cid = ok(udocker("create", "--name=stale", images["busybox"][0])).strip()
    assert [row["names"] for row in json.loads(ok(udocker("ps", "--json")))] == [["stale"]]
    assert os.readlink(os.path.join(names, "stale")) == cid
