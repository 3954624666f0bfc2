"""udocker 1.x containers as udocker 1.3.17 lays them out (store/v1containers.py), read by udocker 2's container store.
The end-to-end check with the real udocker 1.3 is tests/functional/test_v1_repository_containers.py."""

import json
import os

import pytest

from udocker.errors import UdockerError
from udocker.paths import Layout
from udocker.rootpath import resolve
from udocker.store import v1containers as v1
from udocker.store.containers import ContainerStore

CID = "6bf3c452-a83a-3c1c-bb30-81da3ce7969a"
IMAGE_CONFIG = {"architecture": "amd64", "os": "linux",
                "config": {"Cmd": ["/bin/bash"], "Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/srv"}}


def _v1_container(containers, cid=CID, mode=None, names=("p1",), **files):
    """containers/<cid>/ as udocker 1.3 writes it, with its names as containers/<name> -> <cid>."""
    directory = containers / cid
    (directory / "ROOT" / "etc").mkdir(parents=True)
    (directory / "container.json").write_text(json.dumps(IMAGE_CONFIG))
    (directory / "imagerepo.name").write_text("test/debian:12")
    if mode:
        (directory / "execmode").write_text(mode)
    for name, text in files.items():
        (directory / name.replace("_", ".")).write_text(text)
    for name in names:
        os.symlink(cid, containers / name)
    return directory


def test_read_v1_container_from_a_directory(tmp_path):
    directory = _v1_container(tmp_path, mode="F1", root_path=str(tmp_path / CID / "ROOT"))
    found = v1.read_v1_container(str(directory), ["p1"])
    assert (found.id, found.mode, found.mode_recorded, found.image) == (CID, "F1", True, "test/debian:12")
    assert found.config == IMAGE_CONFIG["config"] and found.platform == {"os": "linux", "architecture": "amd64"}
    assert found.root == str(directory / "ROOT") and found.names == ["p1"] and not found.protected
    assert not found.patched and v1.run_mode(found) == "F1" and found.bind_orig is None
    assert v1.v1_names(str(tmp_path)) == {"p1": CID}
    assert v1.is_v1_container(str(directory)) and not v1.is_v1_container(str(tmp_path))


def test_defaults_and_broken_records(tmp_path):
    directory = _v1_container(tmp_path, names=())
    (directory / "container.json").unlink()  # 1.3's import --tocontainer writes none
    found = v1.read_v1_container(str(directory))
    assert (found.mode, found.mode_recorded, found.config) == ("P1", False, {})
    (directory / "container.json").write_text("{not json")
    with pytest.raises(ValueError):
        v1.read_v1_container(str(directory))


def test_f2_to_f4_run_as_f1_and_refuse_changes(tmp_path):
    found = v1.read_v1_container(str(_v1_container(tmp_path, mode="F3", patch_path="x")))
    assert found.patched and v1.run_mode(found) == "F1"
    with pytest.raises(UdockerError, match="udocker 1 patched its programs for mode F3"):
        v1.check_runnable(found, "clone")
    with pytest.raises(UdockerError, match="cannot change it to P1"):
        v1.check_mode_change(found, "P1")
    v1.check_mode_change(v1.read_v1_container(str(_v1_container(tmp_path, cid=CID[:-1] + "0", names=()))), "P2")


def test_host_path_links_of_f_modes(tmp_path):
    """1.3's F modes turn an absolute link /x -> /y into /x -> <ROOT>/y (host path): it still names /y."""
    root = tmp_path / "ROOT"
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "ld.so").write_text("")
    os.symlink(str(root / "usr" / "lib" / "ld.so"), root / "ld")
    assert resolve(str(root), "/ld") == str(root / "usr" / "lib" / "ld.so")
    assert resolve(str(root), str(root) + "//usr/lib/ld.so") == str(root / "usr" / "lib" / "ld.so")
    assert v1.host_link_target(str(root), "/elsewhere") is None
    copy = tmp_path / "copy"
    copy.mkdir()
    os.symlink(str(root / "usr" / "lib" / "ld.so"), copy / "ld")
    os.symlink("/usr/lib/ld.so", copy / "plain")
    assert v1.restore_links(str(copy), str(root)) == 1
    assert os.readlink(copy / "ld") == "/usr/lib/ld.so" and os.readlink(copy / "plain") == "/usr/lib/ld.so"


def test_the_container_store_lists_finds_and_names_them(tmp_path):
    layout = Layout(str(tmp_path))
    for directory in ("containers", "locks", "tmp"):  # as Repository.open leaves a 1.x repository
        (tmp_path / directory).mkdir()
    containers = tmp_path / "containers"
    _v1_container(containers, mode="R1")
    store = ContainerStore(layout, 10)
    [found] = store.list()
    assert found.id == CID and found.rootfs == str(containers / CID / "ROOT") and found.legacy.mode == "R1"
    assert found.record["mode"] == "R1" and found.record["config"]["WorkingDir"] == "/srv"
    for text in ("p1", CID, CID[:6]):
        assert store.find(text).id == CID
    assert store.names() == {"p1": CID} and store.names_of(CID) == ["p1"]
    store.add_name(found, "other")
    assert os.readlink(containers / "other") == CID  # as 1.3 names it: 1.3 sees it too
    with pytest.raises(UdockerError, match="already in use"):
        store.add_name(found, "p1")
    store.remove_name("other")
    store.update(found, protected=True, prepared="R1")
    assert os.path.exists(containers / CID / "PROTECT") and store.load(CID).record["prepared"] == "R1"
    assert json.loads((containers / CID / "container.json").read_text()) == IMAGE_CONFIG  # 1.3's file unchanged
    with pytest.raises(UdockerError, match="protected"):
        store.remove(store.load(CID))
    store.update(found, protected=False, prepared=None, mode=None)  # setup --purge: 1.3's mode stays
    assert (containers / CID / "execmode").read_text() == "R1" and store.load(CID).record["prepared"] is None
    with pytest.raises(UdockerError, match="set up by udocker 1 in mode R1"):
        store.update(found, mode="P1")
    os.symlink(CID, containers / "_old name")  # 1.3 allowed names udocker 2 does not
    assert store.find("_old name").id == CID
    store.remove(store.load(CID))
    assert os.listdir(containers) == []


def _v1_repository(tmp_path):
    """A udocker 1.x repository as udocker 2 leaves it open: 1.x's repos/ and containers/, udocker 2's locks/, tmp/."""
    for directory in ("repos", "containers", "locks", "tmp"):
        (tmp_path / directory).mkdir()
    return ContainerStore(Layout(str(tmp_path)), 10), tmp_path / "containers"


def _v13_link(containers, name, directory):
    """The link udocker 1.3's set_container_name makes (container/localrepo.py): containers/<name> -> the path of
    the container's real directory relative to the real directory of the link."""
    link = os.path.realpath(os.path.join(containers, name))
    return os.path.relpath(os.path.realpath(directory), os.path.dirname(link))


def _record():
    return {"image": "test/debian:12", "manifest": None, "config": IMAGE_CONFIG["config"], "mode": None}


def test_names_in_a_v1_repository_are_written_as_udocker13_writes_them(tmp_path):
    store, containers = _v1_repository(tmp_path)
    made = store.create(_record(), lambda rootfs: open(os.path.join(rootfs, "hello"), "w").close(), name="x")
    assert not os.path.lexists(containers / ".names")  # 1.3's ps would take it for a container
    assert os.readlink(containers / "x") == _v13_link(containers, "x", made.dir) == made.id
    # what 1.3 needs to list, run and remove it: ROOT (a relative link to rootfs/), imagerepo.name
    assert os.readlink(os.path.join(made.dir, "ROOT")) == "rootfs"
    assert os.path.isfile(os.path.join(made.dir, "ROOT", "hello"))
    assert open(os.path.join(made.dir, "imagerepo.name")).read() == "test/debian:12"
    assert store.load(made.id).legacy is None and store.find("x").id == made.id
    store.add_name(made, "y")
    store.rename("y", "z")
    assert sorted(os.listdir(containers)) == sorted([made.id, "x", "z"]) and store.names_of(made.id) == ["x", "z"]
    for taken in ("x", "z"):  # one name, one container, whoever made it
        with pytest.raises(UdockerError, match="already in use"):
            store.create(_record(), lambda rootfs: None, name=taken)
    _v1_container(containers, names=("v13name",))  # 1.3's own name of a container it made
    with pytest.raises(UdockerError, match="already in use"):
        store.add_name(made, "v13name")
    store.remove(store.find("v13name"))
    os.symlink("4c2a0f58-8c7e-4b6e-9d3e-0f0f0f0f0f0f", containers / "stale")  # a create killed after taking it
    store.add_name(made, "stale")
    assert os.readlink(containers / "stale") == made.id
    store.remove_name("z")
    assert store.names_of(made.id) == ["stale", "x"]
    store.update(made, protected=True)  # 1.3's rm refuses it too
    assert os.path.exists(os.path.join(made.dir, "PROTECT")) and store.load(made.id).record["protected"]
    store.update(made, protected=False)
    assert not os.path.exists(os.path.join(made.dir, "PROTECT"))
    store.remove(store.find("x"))
    assert os.listdir(containers) == []


def test_names_an_earlier_udocker2_kept_in_dot_names_move_to_v1_links(tmp_path):
    store, containers = _v1_repository(tmp_path)
    _v1_container(containers, names=("p1",))
    other = "9d0e2c7a-1b7f-4a3e-8f6d-2a9b8c7d6e5f"
    (containers / ".names").mkdir()
    os.symlink(CID, containers / ".names" / "old")  # what an earlier udocker 2 wrote
    assert store.names() == {"p1": CID, "old": CID} and store.find("old").id == CID
    os.symlink(other, containers / ".names" / "p1")  # the same name as 1.3's, of another container: kept
    store.add_name(store.find(CID), "new")
    assert os.readlink(containers / "old") == CID and os.readlink(containers / "new") == CID
    assert os.listdir(containers / ".names") == ["p1"] and os.readlink(containers / "p1") == CID
    os.unlink(containers / ".names" / "p1")
    store.remove_name("new")
    assert not os.path.lexists(containers / ".names")
    assert store.names() == {"p1": CID, "old": CID}


def test_a_fresh_udocker2_repository_keeps_dot_names(tmp_path):
    for directory in ("containers", "locks", "tmp"):
        (tmp_path / directory).mkdir()
    store = ContainerStore(Layout(str(tmp_path)), 10)
    made = store.create(_record(), lambda rootfs: None, name="x")
    assert os.readlink(tmp_path / "containers" / ".names" / "x") == made.id
    assert sorted(os.listdir(made.dir)) == ["container.json", "rootfs"]
    assert sorted(os.listdir(tmp_path / "containers")) == sorted([".names", made.id])
