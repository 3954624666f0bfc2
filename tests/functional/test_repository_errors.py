"""A repository that cannot be written (read-only directory, full file system) gives one `error:` line and
exit 1, never a traceback. Permission checks mean nothing to root: those tests run as an ordinary user
(CI runs the suite as one)."""

import os
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

needs_user = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")


def _error_lines(done):
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.splitlines()


def _flat_tarball(tmp_path, size=0):
    tarball = str(tmp_path / "flat.tar")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "hello").write_text("hello\n", encoding="utf-8")
    (rootfs / "big").write_bytes(os.urandom(size))
    with tarfile.open(tarball, "w") as tar:
        tar.add(str(rootfs), arcname=".")
    return tarball


@pytest.fixture
def read_only(tmp_path):
    """Directories made read-only by the test; made writable again so that tmp_path can be removed."""
    made = []

    def make(path):
        os.chmod(path, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        made.append(path)

    yield make
    for path in made:
        os.chmod(path, 0o755)


@needs_user
def test_repository_in_a_read_only_directory(udocker, tmp_path, read_only):
    parent = tmp_path / "locked"
    parent.mkdir()
    read_only(str(parent))
    repo = str(parent / "repo")
    done = udocker("images", repo=repo)
    assert done.returncode == 1
    assert _error_lines(done) == [f"error: cannot create directory {repo}: Permission denied",
                                  "hint: use a directory you can write to (--repo DIR or UDOCKER_DIR)"]


@needs_user
def test_read_only_repository(udocker, tmp_path, read_only):
    assert udocker("mkrepo", udocker.repo, repo=False).returncode == 0
    for directory, _, _ in os.walk(udocker.repo):
        read_only(directory)
    for args in (["images"], ["import", _flat_tarball(tmp_path), "flat:1"], ["rmi", "flat:1"]):
        done = udocker(*args)
        assert done.returncode == 1, args
        assert _error_lines(done) == [f"error: repository {udocker.repo} is not writable",
                                      "hint: use a directory you can write to (--repo DIR or UDOCKER_DIR)"]


@needs_user
def test_read_only_blob_directory_on_rmi(udocker, tmp_path, read_only):
    assert udocker("import", _flat_tarball(tmp_path), "flat:1").returncode == 0
    read_only(os.path.join(udocker.repo, "store", "blobs", "sha256"))
    done = udocker("rmi", "flat:1")
    assert done.returncode == 1
    lines = _error_lines(done)
    assert lines[-2].startswith("error: cannot remove blob sha256:")
    assert lines[-2].endswith(": Permission denied")
    assert lines[-1] == "hint: use a directory you can write to (--repo DIR or UDOCKER_DIR)"


def test_save_to_a_full_device(udocker, tmp_path):
    assert udocker("import", _flat_tarball(tmp_path), "flat:1").returncode == 0
    command = [sys.executable, "-m", "udocker", "--repo", udocker.repo, "save", "flat:1"]
    with open("/dev/full", "wb") as full:
        done = subprocess.run(command, env=udocker.env, stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=60, check=False)
    assert done.returncode == 1
    assert _error_lines(done) == ["error: cannot write the output: No space left on device"]


def _unshare_works():
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="no unprivileged user and mount namespaces here")
def test_import_into_a_full_file_system(udocker, tmp_path):
    """A 256 KiB tmpfs mounted in a user namespace stands in for a full disk: no root needed."""
    tarball = _flat_tarball(tmp_path, size=1 << 20)
    repo = str(tmp_path / "tiny")
    os.mkdir(repo)
    script = 'mount -t tmpfs -o size=256k tmpfs "$1" && shift && exec "$@"'
    command = ["unshare", "-rm", "sh", "-c", script, "sh", repo, sys.executable, "-m", "udocker", "--repo", repo]
    done = subprocess.run(command + ["import", tarball, "flat:1"], env=udocker.env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout
    lines = _error_lines(done)
    assert lines[0].startswith("error: cannot write ")
    assert lines[0].endswith(": No space left on device")
    assert lines[1:] == ["hint: free some space in the repository's file system"]
