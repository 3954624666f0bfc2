"""udocker/fs.py's file primitives: atomic_output/atomic_write (the one way a file is replaced) and copy_file."""

import os

import pytest

from udocker import fs
from udocker.errors import StoreError


def test_atomic_output_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    with fs.atomic_output(str(target), mode=0o600) as stream:
        stream.write(b"new")
        assert target.read_bytes() == b"old"  # readers see the old file until the block ends
    assert target.read_bytes() == b"new"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_output_without_a_mode_gives_the_umasks_permissions_without_a_chmod(tmp_path):
    """mode=None (a run's record): the new file gets what the umask leaves of 0o666, as open() gives."""
    old = os.umask(0o027)
    try:
        fs.atomic_write(str(tmp_path / "record"), b"{}", mode=None, durable=False)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "record").st_mode & 0o777 == 0o640
    assert (tmp_path / "record").read_bytes() == b"{}"


def test_a_failed_open_is_converted_and_leaves_nothing(tmp_path):
    with pytest.raises(StoreError, match="converted"):
        with fs.atomic_output(str(tmp_path / "missing" / "out"), error=lambda exc: StoreError("converted")):
            raise AssertionError("the block must not run")
    assert os.listdir(tmp_path) == []


def test_an_error_in_the_block_keeps_the_old_file_and_is_not_converted(tmp_path):
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as raised:
        with fs.atomic_output(str(target), error=lambda exc: StoreError("converted")) as stream:
            stream.write(b"partial")
            raise OSError(5, "the caller's own error")
    assert raised.type is OSError
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_write_names_the_file_it_cannot_write(tmp_path):
    directory = tmp_path / "missing"
    with pytest.raises(StoreError, match=f"cannot write {directory}/file: No such file or directory"):
        fs.atomic_write(str(directory / "file"), b"data")


def test_atomic_write_uses_tmpdir_for_its_temporary(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    fs.atomic_write(str(tmp_path / "file"), b"data", tmpdir=str(scratch))
    assert (tmp_path / "file").read_bytes() == b"data"
    assert os.listdir(scratch) == []


def test_copy_file_keeps_holes_times_and_gives_the_mode(tmp_path):
    source = tmp_path / "sparse"
    with open(source, "wb") as stream:
        stream.seek(64 << 20)
        stream.write(b"end")
    os.utime(source, ns=(1_000_000_000, 2_000_000_000))
    fs.copy_file(str(source), str(tmp_path / "copy"), 0o640)
    copy = os.stat(tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()
    assert copy.st_blocks * 512 < 1 << 20
    assert copy.st_mode & 0o777 == 0o640
    assert copy.st_mtime_ns == 2_000_000_000


def test_copy_file_never_replaces_an_existing_file(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        fs.copy_file(str(tmp_path / "a"), str(tmp_path / "b"), 0o644)
    assert (tmp_path / "b").read_bytes() == b"b"
