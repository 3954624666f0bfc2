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
