"""Container commands that need no engine: create, ps, names, clone, rm, protect, export, import."""

import json
import os
import stat
import tarfile

import pytest

from tests.fixtures.cli import ok


@pytest.fixture
def layers(udocker, registry):
    ref = registry.ref("test/layers:latest")
    ok(udocker("-q", "pull", ref))
    return ref


def _rootfs(udocker, name):
    return ok(udocker("inspect", "-p", name)).strip()


def test_create_twice_shares_files_without_sharing_changes(udocker, layers):
    first = ok(udocker("create", "--name=one", layers)).strip()
    second = ok(udocker("create", "--name", "two", layers)).strip()
    assert first != second and len(first) == 36
    a, b = _rootfs(udocker, "one"), _rootfs(udocker, "two")
    shared = os.path.join(a, "bin", "busybox")
    assert os.stat(shared).st_ino == os.stat(os.path.join(b, "bin", "busybox")).st_ino
    assert not os.stat(shared).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    if os.geteuid() != 0:  # root ignores permissions; CI runs this as an unprivileged user
        with pytest.raises(PermissionError):
            open(shared, "ab").close()  # noqa: SIM115
    # private directories are copies: a change in one container is not seen in the other
    with open(os.path.join(a, "etc", "passwd"), "a") as stream:
        stream.write("extra:x:5:5::/:/bin/sh\n")
    with open(os.path.join(b, "etc", "passwd")) as stream:
        assert "extra" not in stream.read()
    # replacing a shared file (as dpkg, pip, sed -i do) leaves the other container alone
    os.unlink(os.path.join(a, "bin", "busybox"))
    assert os.path.exists(os.path.join(b, "bin", "busybox"))


def test_layer_contents_are_applied(udocker, layers):
    from tests.support.build_test_images import LAYERS_EXPECTED, check_tree

    ok(udocker("create", "--name=c", layers))
    assert check_tree(_rootfs(udocker, "c"), LAYERS_EXPECTED, modes=False) == []


def test_ps_names_rename_rm(udocker, layers):
    cid = ok(udocker("create", "--name=c1", layers)).strip()
    ok(udocker("name", "c1", "alias"))
    rows = json.loads(ok(udocker("ps", "--json")))
    assert [(r["id"], r["names"], r["image"]) for r in rows] == [(cid, ["alias", "c1"], layers)]
    table = ok(udocker("ps", "-m", "-s", "-p"))
    assert table.splitlines()[0].split() == ["CONTAINER", "ID", "P", "M", "NAMES", "IMAGE", "STATUS", "PID", "MODE",
                                         "SIZE", "PLATFORM"]
    assert "alias,c1" in table and "linux/amd64" in table
    ok(udocker("rename", "alias", "other"))
    assert json.loads(ok(udocker("ps", "--json")))[0]["names"] == ["c1", "other"]
    ok(udocker("rmname", "other"))
    taken = udocker("create", "--name=c1", layers)
    assert taken.returncode == 1 and taken.stderr.splitlines()[0] == "error: container name already in use: c1"
    forced = ok(udocker("create", "--force", "--name=c1", layers)).strip()
    assert json.loads(ok(udocker("inspect", "c1")))["id"] == forced
    assert ok(udocker("rm", cid, "c1")).split() == [cid, forced]
    assert json.loads(ok(udocker("ps", "--json"))) == []
    assert os.listdir(os.path.join(udocker.repo, "containers")) == [".names"]


@pytest.mark.parametrize("bad", ["-bad", "a/b", "x" * 200])
def test_invalid_names(udocker, layers, bad):
    result = udocker("create", f"--name={bad}", layers)
    assert result.returncode == 1 and result.stderr.startswith("error: invalid container name")


def test_unknown_container_and_image(udocker):
    result = udocker("rm", "nothere")
    assert (result.returncode, result.stderr) == (1, "error: container not found: nothere\nhint: see 'udocker ps'\n")
    result = udocker("create", "nothere:1")
    assert result.returncode == 1 and result.stderr.startswith("error: image not found: nothere:1")


def test_protect_clone_export_import(udocker, layers, tmp_path):
    cid = ok(udocker("create", "--name=orig", layers)).strip()
    ok(udocker("protect", "orig"))
    refused = udocker("rm", "orig")
    assert refused.returncode == 1 and refused.stderr.startswith("error: container is protected")
    copy = ok(udocker("clone", "--name=copy", "orig")).strip()
    assert copy != cid
    assert os.path.isfile(os.path.join(_rootfs(udocker, "copy"), "data", "keep.txt"))
    flat = tmp_path / "flat.tar"
    ok(udocker("export", "-o", str(flat), "orig"))
    with tarfile.open(flat) as archive:
        names = archive.getnames()
    assert "./bin/busybox" in names and "./data/keep.txt" in names
    imported = ok(udocker("import", "--tocontainer", "--name=flat", str(flat))).strip()
    assert os.path.isfile(os.path.join(_rootfs(udocker, "flat"), "data", "keep.txt"))
    clone_tar = tmp_path / "clone.tar"
    ok(udocker("export", "--clone", "-o", str(clone_tar), "orig"))
    ok(udocker("import", "--clone", "--name=back", str(clone_tar)))
    record = json.loads(ok(udocker("inspect", "back")))
    assert record["image"] == layers and record["id"] not in (cid, copy, imported)
    assert os.path.isfile(os.path.join(_rootfs(udocker, "back"), "data", "keep.txt"))
    ok(udocker("unprotect", "orig"))
    ok(udocker("rm", "orig", "copy", "flat", "back"))


def test_concurrent_creates_of_one_image(udocker, layers):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: udocker("create", f"--name=c{i}", layers), range(8)))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    assert len(json.loads(ok(udocker("ps", "--json")))) == 8
    assert [n for n in os.listdir(os.path.join(udocker.repo, "tmp")) if n != ".lock"] == []


def test_setup_purge_takes_the_container_lock(udocker, layers):
    """`setup --purge` undoes a preparation under the container's prepare lock, as `run` prepares under it: while
    another process holds it, the purge waits (here: times out) and changes nothing."""
    from udocker import fs
    from udocker.paths import Layout

    container_id = ok(udocker("create", "--name=one", layers)).strip()
    ok(udocker("setup", "--nvidia", "one"))
    with fs.locked(Layout(udocker.repo).lock("prepare", container_id), timeout=10):
        held = udocker("setup", "--purge", "one", env={"UDOCKER_LOCK_TIMEOUT": "1"})
        assert held.returncode == 1
        assert held.stderr.startswith(f"error: timed out waiting for the lock on container {container_id}\n")
        assert json.loads(ok(udocker("inspect", "one")))["nvidia"] is True
    ok(udocker("setup", "--purge", "one"))
    assert json.loads(ok(udocker("inspect", "one"))).get("nvidia") is None
