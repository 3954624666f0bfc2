"""Layers decompressed ahead by a helper thread (udocker/unpack/ahead.py, issue 13 item 1): every hostile-layer
case of test_unpack.py gives the same outcome when its layers are read from spools (two empty layers first, so
that the helper takes the hostile ones), a failure the helper meets is raised at the same layer with the same
message, an error in a lower layer stops the helper, and no thread and no spool outlive apply_layers."""

import os
import threading

import pytest

import udocker.unpack
from tests.fixtures.progress import Heard
from tests.unit.test_unpack import HOSTILE, D, F, W, build, world  # noqa: F401 - world is a fixture
from udocker.errors import UnpackError
from udocker.oci import mediatypes
from udocker.unpack import LayerSource, apply_layers


@pytest.fixture(autouse=True)
def helper_always(monkeypatch):
    """The helper runs whatever the number of cores of the test machine; none is left at the end."""
    monkeypatch.setattr(udocker.unpack, "worth_it", lambda layers: True)
    yield
    assert [t for t in threading.enumerate() if t.name == "unpack-ahead"] == []


def _spooled(scene, *specs, **kwargs):
    spool = scene.layers / "spool"
    spool.mkdir(exist_ok=True)
    sources = [build(scene.layers / f"layer{i}.tar", spec) for i, spec in enumerate(specs)]
    notices = []
    try:
        return apply_layers(str(scene.root), sources, on_notice=notices.append, spool_dir=str(spool), **kwargs)
    finally:
        assert os.listdir(spool) == []  # spools are unnamed files


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=sorted(HOSTILE))
def test_hostile_layer_read_from_a_spool(world, case):  # noqa: F811
    make, (outcome, text), check = HOSTILE[case]
    before = world.snapshot()
    if outcome == "error":
        with pytest.raises(UnpackError) as info:
            _spooled(world, [], [], *make(world))
        assert text in info.value.message and " in layer sha256:" in info.value.message
    else:
        report = _spooled(world, [], [], *make(world))
        assert (outcome == "notice") == any(text in notice.reason for notice in report.notices)
    assert world.snapshot() == before
    if check is not None:
        assert check(world)


def _tree(top):
    found = {}
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(base, name)
            found[os.path.relpath(path, top)] = (os.readlink(path) if os.path.islink(path) else
                                                 open(path, "rb").read() if os.path.isfile(path) else "dir")  # noqa: SIM115
    return found


def test_spooled_layers_give_the_same_tree(world, tmp_path):  # noqa: F811
    specs = [[D("a"), F("a/x", b"1"), F("a/y", b"2"), F("keep", b"k")],
             [W("a/.wh.x"), F("a/z", os.urandom(3 << 20))],
             [D("a"), W("a/.wh..wh..opq"), F("a/w", b"w"), F("keep", b"k2")],
             [F("big", bytes(4 << 20) + b"end")]]
    _spooled(world, *specs)
    direct = tmp_path / "direct"
    apply_layers(str(direct), [build(world.layers / f"d{i}.tar", spec) for i, spec in enumerate(specs)])
    assert _tree(world.root) == _tree(direct) and sorted(_tree(direct)) == ["a", "a/w", "big", "keep"]


def test_a_bad_stream_in_a_spooled_layer_is_the_same_error(world):  # noqa: F811
    good = build(world.layers / "good.tar", [F("x", b"1")])
    whole = build(world.layers / "whole.tar", [F("x", os.urandom(1 << 20)), F("y", b"2")])
    bad = world.layers / "bad.gz"
    bad.write_bytes(open(whole.path, "rb").read()[:600_000])  # noqa: SIM115 - cut in the middle of x
    sources = [good, good, LayerSource(str(bad), mediatypes.OCI_LAYER_GZIP, "sha256:" + "b" * 64)]
    errors = []
    for spool in (None, str(world.layers)):
        with pytest.raises(UnpackError) as info:
            apply_layers(str(world.root), sources, spool_dir=spool)
        errors.append(info.value.message)
    assert errors[0] == errors[1] and "not a valid tar archive" in errors[0]


def test_max_size_of_a_spooled_layer(world):  # noqa: F811
    with pytest.raises(UnpackError, match="expands beyond max_layer_size"):
        _spooled(world, [F("x", b"1")], [], [F("big", os.urandom(1 << 20))], max_size=1 << 19)


def test_an_error_below_stops_the_helper(world):  # noqa: F811
    """The lowest layer is hostile while the helper decompresses a large later one: the error of the lowest
    layer is raised, the helper stops, and the later layers leave nothing in the rootfs."""
    with pytest.raises(UnpackError, match="unsafe path"):
        _spooled(world, [F("../escape", b"x")], [], [F("later", os.urandom(8 << 20))], [F("last", b"1")])
    assert not (world.root / "later").exists() and not (world.root / "last").exists()


def test_an_unreadable_spooled_layer_is_named(world):  # noqa: F811
    good = build(world.layers / "good.tar", [F("x", b"1")])
    missing = LayerSource(str(world.layers / "missing"), mediatypes.OCI_LAYER_GZIP, "sha256:" + "c" * 64)
    with pytest.raises(UnpackError, match="cannot read layer sha256:cccccccccccc"):
        apply_layers(str(world.root), [good, good, missing], spool_dir=str(world.layers))


def test_progress_of_spooled_layers(world):  # noqa: F811
    sources = [build(world.layers / f"{n}.tar", [F(n, os.urandom(2 << 20))]) for n in "abc"]
    listener = Heard()
    heard = listener.events

    apply_layers(str(world.root), sources, progress=listener, spool_dir=str(world.layers))
    assert [e for e in heard if e[0] != "advanced"] == [(what, s.name) for s in sources
                                                         for what in ("started", "finished")]
    for source in sources:
        assert sum(e[2] for e in heard if e[0] == "advanced" and e[1] == source.name) > 0


_FULL_SPOOL = """
import os, resource, signal, sys
import udocker.unpack
from udocker.unpack import apply_layers
from tests.unit.test_unpack import F, build
from pathlib import Path
udocker.unpack.worth_it = lambda layers: True
top = Path(sys.argv[1])
specs = [[F("a", b"1")], [F("b", b"2")], [F(f"d/f{i}", os.urandom(100_000)) for i in range(30)]]
sources = [build(top / f"layer{i}.tar", spec) for i, spec in enumerate(specs)]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
apply_layers(str(top / "rootfs"), sources, spool_dir=str(top))
print(sorted(os.listdir(top / "rootfs" / "d")) == sorted(f"f{i}" for i in range(30)))
"""


def test_a_spool_that_cannot_be_written_falls_back_to_decompressing(tmp_path):
    """The spool of the last layer (3 MB of tar) cannot grow past 1 MiB (RLIMIT_FSIZE, as a full disk would
    stop it): the applier decompresses that layer itself from where the spool ends, and the tree is whole."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FULL_SPOOL, str(tmp_path)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
