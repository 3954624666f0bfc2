"""A container whose glibc (2.17) is older than the host's libfakechroot.so needs (2.34 on Debian 12), through
the CLI: the F modes refuse it in one line, auto mode runs it in R1 or P1, and fails in one line, never
choosing F1, when neither R nor P modes can run. The image is tests/fixtures/old_glibc_rootfs.py, imported.
Meant to pass as an unprivileged user: CI runs it as `udtest`."""

import json
import os
import platform

import pytest

from tests.conftest import require
from tests.fixtures import old_glibc_rootfs
from tests.fixtures.cli import ok

LIBFAKECHROOT = "/usr/lib/x86_64-linux-gnu/fakechroot/libfakechroot.so"
IMAGE = "test/oldglibc:1"
REFUSAL = "error: the container's glibc 2.17 is older than libfakechroot.so needs (glibc 2.34 or newer)"

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64" or not os.path.exists(LIBFAKECHROOT),
                                reason="needs x86_64 Debian 12 with libfakechroot")


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    require("gcc")
    require(old_glibc_rootfs.BUSYBOX)
    return old_glibc_rootfs.tarball(str(tmp_path_factory.mktemp("oldglibc")))


@pytest.fixture
def image(udocker, tarball):
    ok(udocker("import", tarball, IMAGE))
    return IMAGE


def _record(udocker, name):
    return json.loads(ok(udocker("inspect", name)))


def _assert_refusal(result, code):
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert lines[0] == REFUSAL and len(lines) <= 2
    assert all(line.startswith("hint: ") for line in lines[1:])


@pytest.mark.parametrize("mode", ["F1", "F3"])
def test_setup_refuses_fakechroot(udocker, image, mode):
    if mode == "F3":
        require("patchelf")
    ok(udocker("create", "--name=old", image))
    _assert_refusal(udocker("setup", f"--execmode={mode}", "old"), 1)
    record = _record(udocker, "old")
    assert (record.get("mode"), record.get("prepared")) == (None, None)  # nothing recorded, nothing changed


def test_run_in_fakechroot_mode_is_refused(udocker, image):
    ok(udocker("create", "--name=old", image))
    result = udocker("run", "old", "sh", "-c", "echo ok", env={"UDOCKER_DEFAULT_EXECUTION_MODE": "F1"})
    _assert_refusal(result, 125)
    assert result.stdout == ""


def test_auto_mode_runs_it_in_r1_or_p1(udocker, image):
    result = udocker("run", "--name=old", image, "sh", "-c", "echo ok")
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
    assert _record(udocker, "old")["prepared"] in ("R1", "P1")


def test_auto_mode_without_r_and_p_modes_fails_clearly(udocker, image, tmp_path):
    # With an empty PATH (the per-test repository has no engines folder) neither proot nor runc nor crun
    # is found: only fakechroot, a library, remains, and it cannot run this container.
    empty = tmp_path / "empty-path"
    empty.mkdir()
    ok(udocker("create", "--name=old", image))
    result = udocker("run", "old", "sh", "-c", "echo ok", env={"PATH": str(empty)})
    lines = result.stderr.splitlines()
    assert result.returncode == 125, result.stderr
    assert lines[0].startswith("error: no execution mode can run this container: "), result.stderr
    assert REFUSAL[len("error: "):] in lines[0] and "proot not found" in lines[0]
    assert len(lines) <= 2 and result.stdout == ""
    assert _record(udocker, "old").get("prepared") is None
