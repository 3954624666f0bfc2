"""A private repository (issue 8, item 4): created 0700, nothing under it writable by group or others after
pull, create and runs in R1 and F3 (an image's /tmp 1777 included), and one warning for an existing
repository that other users can enter."""

import os
import stat

import pytest

OPEN = stat.S_IWGRP | stat.S_IWOTH


def _writable_by_others(top):
    """Paths under `top` (itself included) that group or others may write; symlinks have no mode of their own."""
    found = []
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(parent, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & OPEN:
                found.append(f"{path} {stat.filemode(mode)}")
    return found


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_mkrepo_and_first_use_create_0700(udocker, tmp_path):
    made = udocker("mkrepo", str(tmp_path / "made"), repo=False)
    assert made.returncode == 0, made.stderr
    assert _mode(tmp_path / "made") == 0o700
    nested = tmp_path / "a" / "b" / "repo"
    listed = udocker("images", repo=str(nested))
    assert listed.returncode == 0, listed.stderr
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700 and _mode(nested) == 0o700
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    made = udocker("mkrepo", str(empty), repo=False)
    assert made.returncode == 0 and made.stderr == "", made.stderr
    assert _mode(empty) == 0o700  # an empty directory becomes the repository: made private


def test_nothing_writable_by_others_after_pull_create_and_runs(udocker, debian_image):
    assert udocker("-q", "pull", debian_image.ref, timeout=300).returncode == 0
    for mode in ("R1", "F3"):
        created = udocker("create", f"--name={mode}", debian_image.ref)
        assert created.returncode == 0, created.stderr
        setup = udocker("setup", f"--execmode={mode}", mode, timeout=300)
        if setup.returncode != 0:
            assert setup.stderr.startswith("error: "), setup.stderr
            if mode in os.environ.get("UDOCKER_TEST_REQUIRE_MODES", "").split(","):
                pytest.fail(setup.stderr)
            continue
        ran = udocker("run", mode, "/bin/sh", "-c", "echo x > /tmp/made-by-container && ls -ld /tmp", timeout=300)
        assert ran.returncode == 0, ran.stderr
    assert _writable_by_others(udocker.repo) == []
    assert _mode(udocker.repo) == 0o700


def test_warns_once_when_the_repository_is_open(udocker):
    assert udocker("mkrepo", udocker.repo, repo=False).returncode == 0
    os.chmod(udocker.repo, 0o755)
    quiet = udocker("-q", "images")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr  # --quiet: not said, so not yet "once"
    first = udocker("images")
    assert first.returncode == 0
    warnings = [line for line in first.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and udocker.repo in warnings[0], first.stderr
    again = udocker("images")
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr
    os.chmod(udocker.repo, 0o777)  # opened further: said again
    assert "warning: " in udocker("images").stderr
    os.chmod(udocker.repo, 0o700)
    assert udocker("images").stderr == ""


@pytest.fixture
def umask_002():
    old = os.umask(0o002)  # a common umask on clusters with group project directories
    yield
    os.umask(old)


def test_umask_002_leaves_nothing_group_writable(udocker, debian_image, tmp_path,
                                                                           umask_002):
    """udocker's files and the program's ignore a permissive umask in every mode (docker's umask 022)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    assert udocker("-q", "pull", debian_image.ref, timeout=300).returncode == 0
    for mode in ("P1", "R1", "F3"):
        assert udocker("create", f"--name={mode}", debian_image.ref).returncode == 0
        setup = udocker("setup", f"--execmode={mode}", mode, timeout=300)
        if setup.returncode != 0:
            assert setup.stderr.startswith("error: "), setup.stderr
            continue
        ran = udocker("run", "-v", f"{shared}:/data", mode, "/bin/sh", "-c", f"touch /data/{mode}", timeout=300)
        assert ran.returncode == 0, ran.stderr
        assert _mode(shared / mode) == 0o644, mode  # as runc in R1: the program's umask is 022 too
    assert udocker("rm", "P1").returncode == 0
    assert _writable_by_others(udocker.repo) == []
