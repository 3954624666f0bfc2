"""The fakechroot engine's glibc check: the versions read from a libc and from libfakechroot.so, the one-line
refusal of a container whose glibc is older, and auto mode, which must never choose F1/F2 for it."""

import os
import platform

import pytest

from tests.conftest import require
from tests.fixtures import old_glibc_rootfs
from udocker.engines import fakechroot, modes, ocirt
from udocker.engines.fakechroot import FakechrootEngine
from udocker.errors import EngineUnavailable
from udocker.paths import Layout
from udocker.store.containers import Container

HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LIBFAKECHROOT = "/usr/lib/x86_64-linux-gnu/fakechroot/libfakechroot.so"
REFUSAL = "the container's glibc 2.17 is older than libfakechroot.so needs (glibc 2.34 or newer)"

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64" or not os.path.exists(LIBFAKECHROOT),
                                reason="needs x86_64 Debian 12 with libfakechroot")


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    """A container (directory c/) whose libc defines GLIBC_2.2.5 ... GLIBC_2.17."""
    require("gcc")
    require(old_glibc_rootfs.BUSYBOX)
    top = tmp_path_factory.mktemp("old") / "c"
    top.mkdir()
    old_glibc_rootfs.build(str(top))
    return Container(str(top), {"id": "c"})


def test_glibc_version_of_libc_and_of_libfakechroot(old):
    assert fakechroot.glibc_version(HOST_LIBC) == "2.36"  # Debian 12
    assert fakechroot.glibc_version(os.path.join(old.rootfs, "usr/lib64/libc.so.6")) == "2.17"
    assert fakechroot.glibc_version(LIBFAKECHROOT) == "2.34"  # the newest GLIBC_2.x it needs


def test_glibc_version_orders_numerically(tmp_path):
    libc = tmp_path / "libc.so.6"
    libc.write_bytes(b"\0GLIBC_2.9\0GLIBC_2.3.4\0GLIBC_2.17\0GLIBC_PRIVATE\0GLIBC_2.2.5\0")
    assert fakechroot.glibc_version(str(libc)) == "2.17"
    libc.write_bytes(b"\0musl\0")
    assert fakechroot.glibc_version(str(libc)) is None


@pytest.mark.parametrize("mode", fakechroot.MODES)
def test_old_glibc_container_is_refused_in_one_line(old, tmp_path, mode):
    engine = FakechrootEngine(None, Layout(str(tmp_path / "udocker")))
    for attempt in (lambda: engine.probe(mode, old), lambda: engine.prepare(old, mode)):
        with pytest.raises(EngineUnavailable) as caught:
            attempt()
        assert caught.value.message == REFUSAL
        assert "\n" not in (caught.value.hint or "")


def _refuse_r_and_p(monkeypatch, tried):
    def probe(self, mode, container=None):
        tried.append(mode)
        raise EngineUnavailable(f"no {mode}")

    monkeypatch.setattr(ocirt.OciEngine, "probe", probe)
    monkeypatch.setattr("udocker.engines.proot.ProotEngine.probe", probe)


def test_auto_mode_never_chooses_fakechroot_for_an_old_glibc(old, tmp_path, monkeypatch):
    tried = []
    _refuse_r_and_p(monkeypatch, tried)
    layout = Layout(str(tmp_path / "udocker"))
    assert modes.auto_mode({"oci_runtime": "runc"}, layout) == "F1"  # the host alone allows F1
    with pytest.raises(EngineUnavailable) as caught:
        modes.auto_mode({"oci_runtime": "runc"}, layout, old)
    message = caught.value.message
    assert "\n" not in message and message.startswith("no execution mode can run this container: ")
    assert f"F1, F2: {REFUSAL}" in message and "R1: no R1; P1: no P1; P2: no P2" in message


def test_auto_mode_inspects_the_container_only_when_it_reaches_fakechroot(old, tmp_path, monkeypatch):
    inspected = []
    monkeypatch.setattr(FakechrootEngine, "_inspect", lambda self, container: inspected.append(container))
    monkeypatch.setattr("udocker.engines.proot.ProotEngine.probe", lambda self, mode, container=None: None)
    monkeypatch.setattr(ocirt.OciEngine, "probe", lambda self, mode, container=None: None)
    layout = Layout(str(tmp_path / "udocker"))
    assert modes.auto_mode({"oci_runtime": "runc"}, layout, old) == "R1"
    assert inspected == []
    tried = []
    _refuse_r_and_p(monkeypatch, tried)
    assert modes.auto_mode({"oci_runtime": "runc"}, layout, old) == "F1"
    assert inspected == [old] and tried == ["R1", "P1", "P2"]
