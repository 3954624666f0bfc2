"""inject/ldcache.py: a copy of the image's loader cache with the injected driver added (issue 10 item 6)."""

import functools
import os

import pytest

from tests.fixtures import hosttree
from udocker.inject import ldcache, libraries

LIB64 = "/.udocker/nvidia/lib64"


@pytest.mark.parametrize("left, right, sign", [
    ("libc.so.6", "libc.so.6", 0), ("libc.so.10", "libc.so.9", 1), ("libcuda.so.1", "libcuda.so", 1),
    ("libm.so.6", "libc.so.6", 1), ("liba2.so", "libab.so", 1), ("libx.so", "libx.so.1", -1)])
def test_libcmp_is_glibcs(left, right, sign):
    result = ldcache.libcmp(left, right)
    assert (result > 0) - (result < 0) == sign
    assert (ldcache.libcmp(right, left) > 0) - (ldcache.libcmp(right, left) < 0) == -sign


def test_the_order_is_ldconfigs():
    """This machine's own cache, written by its ldconfig, is already in the order build() writes."""
    try:
        with open("/etc/ld.so.cache", "rb") as stream:
            entries = [e for e in ldcache.read_entries(stream.read()) if not e[4] & (1 << 62)]
    except OSError:
        pytest.skip("no /etc/ld.so.cache here")
    if len(entries) < 10:
        pytest.skip("too small a loader cache here")
    assert sorted(entries, key=functools.cmp_to_key(ldcache._order)) == entries


@pytest.mark.parametrize("layout", ["new", "compat"])
def test_merged_keeps_the_images_entries_first(layout, tmp_path):
    image = hosttree.cache_bytes([("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", 64),
                                  ("libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", 64),
                                  ("libz.so.1", "/usr/lib/i386-linux-gnu/libz.so.1", 32)], layout=layout)
    data = ldcache.merged(image, [("libcuda.so.1", f"{LIB64}/libcuda.so.1", 64),
                                  ("libnvidia-ml.so.1", f"{LIB64}/libnvidia-ml.so.1", 64)])
    (tmp_path / "cache").write_bytes(data)
    assert libraries.read_cache(str(tmp_path / "cache")) == [
        ("libz.so.1", "/usr/lib/i386-linux-gnu/libz.so.1", 32),
        ("libnvidia-ml.so.1", f"{LIB64}/libnvidia-ml.so.1", 64),
        ("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", 64),  # the image's own first
        ("libcuda.so.1", f"{LIB64}/libcuda.so.1", 64),
        ("libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", 64)]
    assert {e[0] for e in ldcache.read_entries(data) if e[1].startswith("libcuda")} == {0x0303}


def test_container_cache(tmp_path):
    rootfs = tmp_path / "rootfs"
    injected = [("libcuda.so.1", f"{LIB64}/libcuda.so.1", 64)]
    alone = ldcache.container_cache(str(rootfs), injected, str(tmp_path / "alone"))  # the image has no cache
    assert [n for n, _, _ in libraries.read_cache(alone)] == ["libcuda.so.1"]
    hosttree.write(rootfs, "/etc/ld.so.cache", b"not a cache")
    assert ldcache.container_cache(str(rootfs), injected, str(tmp_path / "out")) is None  # left as it is
    hosttree.write(rootfs, "/etc/ld.so.cache", hosttree.cache_bytes([("libc.so.6", "/lib/libc.so.6", 64)]))
    path = ldcache.container_cache(str(rootfs), injected, str(tmp_path / "out"))
    assert path.startswith(str(tmp_path / "out" / "ld.so.cache-"))
    assert ldcache.container_cache(str(rootfs), injected, str(tmp_path / "out")) == path
    assert [n for n, _, _ in libraries.read_cache(path)] == ["libcuda.so.1", "libc.so.6"]
    os.unlink(rootfs / "etc/ld.so.cache")
    os.symlink("/etc/ld.so.cache", rootfs / "etc/ld.so.cache")  # not followed to the host's
    assert ldcache.container_cache(str(rootfs), injected, str(tmp_path / "out2")) is None
