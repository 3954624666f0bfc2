"""Unpacking while the blobs arrive (store/overlap.py, issue 13 item 1): every hostile-layer case of
test_unpack.py gives the same outcome through the overlapped path (layers read from the sinks while they are
written, a few bytes at a time, by threads), the tree is published only after finish(), and a mismatch of the
last blob (abort) leaves no tree and no scratch directory."""

import os
import shutil
import threading
from types import SimpleNamespace

import pytest

from tests.unit.test_unpack import HOSTILE, build, world  # noqa: F401 - world is a fixture
from udocker.errors import DigestMismatch, UnpackError
from udocker.oci.descriptor import Descriptor
from udocker.paths import Layout
from udocker.store import Repository
from udocker.store.overlap import Overlap

MANIFEST = "sha256:" + "ab" * 32


def _feed(repo, overlap, descriptor, data, gate):
    """Ingest `data` as the blob `descriptor` in small writes, offering the sink first."""
    try:
        with repo.blobs.ingest(descriptor) as sink:
            overlap.offer(descriptor, sink)
            for start in range(0, len(data), 997):
                sink.write(data[start:start + 997])
                if start == 0:
                    gate.wait(5)  # the unpacker has the first bytes before the rest arrive
    except DigestMismatch as exc:
        return exc
    return None


def _overlapped(scene, specs, *, corrupt_last=False):
    """Unpack the layers `specs` while threads ingest them; returns (failure, tree or None, repo)."""
    repo = Repository.open(Layout(str(scene.layers / "repo")))
    sources = [build(scene.layers / f"layer{i}.tar", spec) for i, spec in enumerate(specs)]
    descriptors = [Descriptor(s.media_type, s.name, os.path.getsize(s.path)) for s in sources]
    overlap = Overlap(repo, MANIFEST, SimpleNamespace(layers=descriptors))
    overlap.start()
    gate, failures = threading.Event(), []
    threads = []
    for index, (source, descriptor) in enumerate(zip(sources, descriptors)):
        data = open(source.path, "rb").read()  # noqa: SIM115
        if corrupt_last and index == len(sources) - 1:
            data = data[:-8] + bytes(8)
        threads.append(threading.Thread(target=lambda d=descriptor, b=data: failures.append(
            _feed(repo, overlap, d, b, gate))))
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    if any(failures):
        overlap.abort()
    else:
        overlap.finish()
    tree = repo.layout.unpacked_tree(MANIFEST)
    return overlap.failure, tree if os.path.isdir(tree) else None, repo


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=sorted(HOSTILE))
def test_hostile_layer_through_the_overlap(world, case):  # noqa: F811
    make, (outcome, text), check = HOSTILE[case]
    before = world.snapshot()
    failure, tree, repo = _overlapped(world, make(world))
    if outcome == "error":
        assert isinstance(failure, UnpackError) and text in failure.message, failure
        assert tree is None
    else:
        assert failure is None and tree is not None
        if check is not None:
            shutil.rmtree(world.root, ignore_errors=True)
            os.rename(tree, world.root)  # the checks look at world.root, with the owner's write bit of files
            for top, _, files in os.walk(world.root):  # that publishing takes away
                for name in files:
                    path = os.path.join(top, name)
                    if not os.path.islink(path):
                        os.chmod(path, os.lstat(path).st_mode & 0o7777 | 0o200)
            assert check(world)
    assert world.snapshot() == before
    assert [n for n in os.listdir(repo.layout.tmp) if not n.startswith(".")] == []


def test_mismatch_of_the_last_blob_publishes_nothing(world):  # noqa: F811
    from tests.unit.test_unpack import D, F

    layers = [[D("a"), F("a/x", os.urandom(200_000))], [F("b", os.urandom(300_000))]]
    failure, tree, repo = _overlapped(world, layers, corrupt_last=True)
    assert tree is None
    assert not os.path.isdir(repo.layout.unpacked) or os.listdir(repo.layout.unpacked) == []
    assert [n for n in os.listdir(repo.layout.tmp) if not n.startswith(".")] == []
    assert len(repo.blobs.list()) == 1  # the first layer's blob, verified; nothing of the bad one


def test_a_good_image_is_published_only_at_finish(world):  # noqa: F811
    from tests.unit.test_unpack import F

    failure, tree, _ = _overlapped(world, [[F("x", b"1")], [F("y", os.urandom(100_000))]])
    assert failure is None and tree is not None
    assert sorted(os.listdir(tree)) == ["x", "y"] and not os.stat(os.path.join(tree, "y")).st_mode & 0o222


def test_mismatch_while_the_helper_follows_a_layer_leaves_nothing(world, monkeypatch):  # noqa: F811
    """Three layers, the helper thread (unpack/ahead.py) decompressing the last one from its sink while it
    arrives, and that blob is corrupt: no tree, no scratch directory, no thread left behind."""
    import udocker.unpack
    from tests.unit.test_unpack import F

    monkeypatch.setattr(udocker.unpack, "worth_it", lambda layers: True)
    layers = [[F("a", b"1")], [F("b", os.urandom(300_000))], [F("c", os.urandom(400_000))]]
    failure, tree, repo = _overlapped(world, layers, corrupt_last=True)
    assert tree is None
    assert not os.path.isdir(repo.layout.unpacked) or os.listdir(repo.layout.unpacked) == []
    assert [n for n in os.listdir(repo.layout.tmp) if not n.startswith(".")] == []
    assert len(repo.blobs.list()) == 2
    assert [t.name for t in threading.enumerate() if t.name.startswith("unpack")] == []
