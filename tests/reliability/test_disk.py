"""Disk (issue 8, item 5): sparse files stay sparse in private copies, copies and unpacks that fail leave
nothing behind, max_layer_size stops a decompression bomb naming its layer, and a create whose unpacked size
is known checks free space first (one line naming the bytes needed and available).

The small file system is a 300 MB tmpfs mounted in a user and mount namespace (`unshare --user
--map-root-user --mount`), so udocker runs there as the namespace's root: fine for import, create and the
private copies of R modes (called as the library function R-mode preparation calls), not for R runs."""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

SMALL = "300m"
MIB = 1 << 20
DRIVER = r"""
import json, os, subprocess, sys
small, steps = sys.argv[1], json.loads(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % sys.argv[3], "tmpfs", small], check=True)
results = []
for kind, *args in steps:
    command = ([sys.executable, "-m", "udocker", "--repo", os.path.join(small, "repo"), *args] if kind == "udocker"
               else [sys.executable, "-c", args[0], small])
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    results.append({"rc": done.returncode, "out": done.stdout, "err": done.stderr})
print(json.dumps(results))
"""
# Run inside the namespace after the steps: what the repository holds, for the assertions.
LISTING = r"""
import json, os, sys
repo = os.path.join(sys.argv[1], "repo")
unpacked = os.path.join(repo, "unpacked")
print(json.dumps({
    "tmp": sorted(n for n in os.listdir(os.path.join(repo, "tmp")) if n != ".lock"),
    "unpacked": sorted(os.listdir(unpacked)) if os.path.isdir(unpacked) else [],
    "containers": sorted(n for n in os.listdir(os.path.join(repo, "containers")) if not n.startswith(".")),
    "copies": [os.path.join(p, n) for p, _, fs in os.walk(repo) for n in fs if ".udocker-" in n],
}))
"""
# R-mode preparation (udocker/provision.py ContainerService.prepare) breaks the container's hard links with this call.
MATERIALIZE = r"""
import glob, os, sys
from udocker.errors import UdockerError
from udocker.store.rootfs import materialize
rootfs, = glob.glob(os.path.join(sys.argv[1], "repo", "containers", "*", "rootfs"))
try:
    materialize(rootfs)
except UdockerError as exc:
    print("error: " + exc.message)
    sys.exit(1)
for name in ("bomb", "var/bomb"):
    path = os.path.join(rootfs, name)
    if os.path.exists(path):
        info = os.stat(path)
        print(name, info.st_size, info.st_blocks * 512, info.st_nlink)
"""


def _in_small_fs(udocker, tmp_path, steps, size=SMALL):
    """Run `steps` (("udocker", ARGS...) or ("python", CODE)) on a fresh tmpfs of `size`, then LISTING."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                                                        capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("unshare --user --map-root-user --mount does not work: CI's machine should allow it")
        pytest.skip("no unprivileged user and mount namespaces here")
    small = tmp_path / "small"
    small.mkdir()
    env = dict(udocker.env, PYTHONPATH=os.pathsep.join([udocker.env["PYTHONPATH"], str(tmp_path)]))
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", DRIVER,
                           str(small), json.dumps([*steps, ("python", LISTING)]), size],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    return results[:-1], json.loads(results[-1]["out"])


class _Pattern:
    """`size` bytes of a non-zero pattern starting with `byte` (no holes, compresses well), or of zeros when
    `byte` is None, as a file object for tarfile."""

    def __init__(self, size, byte):
        self.left = size
        self.block = bytes(MIB) if byte is None else (byte + b"dockr") * (MIB // 6) + byte * (MIB % 6)

    def read(self, size=-1):
        count = self.left if size < 0 else min(size, self.left)
        self.left -= count
        return (self.block * (count // MIB + 1))[:count]


def _layer(path, members):
    """A gzip tarball (level 1) of (name, size, fill) members: fill None for zeros, else a pattern byte."""
    with gzip.open(path, "wb", compresslevel=1) as stream, tarfile.open(fileobj=stream, mode="w|") as archive:
        for name, size, fill in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = size, 0o644
            archive.addfile(info, _Pattern(size, fill))
    return str(path)


def _one_line(result):
    lines = result["err"].splitlines()
    progress = [line for line in lines if re.fullmatch(r"[0-9a-f]{12}: extracting \S+", line)]
    lines = lines[len(progress):]  # create says which layer it extracts, then the error
    assert result["rc"] == 1 and lines and lines[0].startswith("error: ") and "Traceback" not in result["err"], result
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), result
    return lines[0]


def test_sparse_files_stay_sparse_in_private_copies(udocker, tmp_path):
    """9.4 MB layer with a 2 GiB hole on a 300 MB file system: create (copy under /var) and the R-mode
    private copy used to write the hole out, fail with ENOSPC and leave `bomb.udocker-copy` behind."""
    tree = tmp_path / "tree"
    (tree / "var").mkdir(parents=True)
    for name in ("bomb", "var/bomb"):
        with open(tree / name, "wb") as stream:
            stream.write(b"start")
            stream.truncate(2 << 30)
            stream.seek((2 << 30) - 3)
            stream.write(b"end")
    layer = tmp_path / "sparse.tar.gz"
    subprocess.run(["tar", "--sparse", "-czf", str(layer), "-C", str(tree), "."], check=True)
    assert layer.stat().st_size < 10 * MIB
    stale = ("python", "import glob, os, sys\n"  # what an interrupted copy of an older udocker left
                       "rootfs, = glob.glob(os.path.join(sys.argv[1], 'repo', 'containers', '*', 'rootfs'))\n"
                       "open(os.path.join(rootfs, 'bomb.udocker-copy'), 'w').close()\n")
    steps = [("udocker", "import", str(layer), "sparse"), ("udocker", "create", "--name=c", "sparse"), stale,
             ("python", MATERIALIZE)]
    (imported, created, _, materialized), listing = _in_small_fs(udocker, tmp_path, steps)
    assert imported["rc"] == 0, imported
    assert created["rc"] == 0, created
    assert materialized["rc"] == 0, materialized
    for line in materialized["out"].splitlines():
        name, size, used, links = line.split()
        assert int(size) == 2 << 30 and int(used) < MIB and links == "1", line
    assert listing["copies"] == [] and listing["tmp"] == []


def test_failed_private_copy_leaves_nothing(udocker, tmp_path):
    """A private copy that cannot fit: one line naming the bytes, no `*.udocker-copy` left, container intact;
    and a copy that fails part-way (ENOSPC) removes its partial file."""
    layer = _layer(tmp_path / "big.tar.gz", [("data/big", 120 * MIB, b"b")])
    fill = ("python", "import os, sys\n"
                      "s = os.statvfs(sys.argv[1])\n"
                      "with open(os.path.join(sys.argv[1], 'filler'), 'wb') as f:\n"
                      "    f.write(b'x' * (s.f_bavail * s.f_frsize - 40 * 2**20))\n")
    partial = ("python", "import glob, os, sys\n"
                         "from udocker.store.rootfs import copy_file\n"
                         "src, = glob.glob(os.path.join(sys.argv[1], 'repo', 'unpacked', '*', 'data', 'big'))\n"
                         "dst = os.path.join(sys.argv[1], 'partial.udocker-copy')\n"
                         "try:\n    copy_file(src, dst, 0o644)\nexcept OSError as exc:\n    print(exc.errno)\n"
                         "print(os.path.exists(dst))\n")
    steps = [("udocker", "import", layer, "big"), ("udocker", "create", "--name=c", "big"), fill,
             ("python", MATERIALIZE), partial]
    (imported, created, filled, materialized, partial_copy), listing = _in_small_fs(udocker, tmp_path, steps)
    assert imported["rc"] == created["rc"] == filled["rc"] == 0, (imported, created, filled)
    assert materialized["rc"] == 1, materialized
    assert "bytes needed" in materialized["out"] and str(120 * MIB) in materialized["out"], materialized
    assert partial_copy["out"].split() == ["28", "False"], partial_copy  # ENOSPC, nothing left
    assert listing["copies"] == [] and listing["tmp"] == [] and len(listing["containers"]) == 1


def test_max_layer_size_stops_a_bomb(udocker, tmp_path):
    """A 1 GiB member of zeros in a 1 MB layer: over max_layer_size, create fails naming the layer and
    leaves no unpacked tree, no container and nothing in tmp/; within the limit it unpacks as holes."""
    layer = _layer(tmp_path / "bomb.tar.gz", [("zeros", 1 << 30, None)])
    assert os.path.getsize(layer) < 8 * MIB
    assert udocker("import", layer, "bomb").returncode == 0
    refused = udocker("create", "--name=c", "bomb", env={"UDOCKER_MAX_LAYER_SIZE": str(256 * MIB)})
    line = _one_line({"rc": refused.returncode, "err": refused.stderr})
    assert "max_layer_size" in line and "layer sha256:" in line and str(256 * MIB) in line, line
    repo = udocker.repo
    assert not os.path.exists(os.path.join(repo, "unpacked")) or os.listdir(os.path.join(repo, "unpacked")) == []
    assert [n for n in os.listdir(os.path.join(repo, "tmp")) if n != ".lock"] == []
    assert [n for n in os.listdir(os.path.join(repo, "containers")) if not n.startswith(".")] == []
    shown = udocker("showconf", "--json")
    assert json.loads(shown.stdout)["max_layer_size"]["value"] == 64 << 30
    created = udocker("create", "--name=c", "bomb")
    assert created.returncode == 0, created.stderr
    unpacked, = os.listdir(os.path.join(repo, "unpacked"))
    assert os.stat(os.path.join(repo, "unpacked", unpacked, "zeros")).st_blocks * 512 < MIB  # holes


def test_free_space_checked_before_create(udocker, tmp_path):
    """The image is unpacked (120 MB under /etc, which each container copies): a create or clone that cannot
    fit its copies says so in one line naming the bytes, before writing anything."""
    layer = _layer(tmp_path / "etc.tar.gz", [("etc/big", 120 * MIB, b"e")])
    steps = [("udocker", "import", layer, "etc"), ("udocker", "create", "--name=one", "etc"),
             ("udocker", "create", "--name=two", "etc"), ("udocker", "clone", "--name=three", "one"),
             ("udocker", "ps")]
    (imported, first, second, third, listed), listing = _in_small_fs(udocker, tmp_path, steps)
    assert imported["rc"] == first["rc"] == 0, (imported, first)
    for refused in (second, third):
        line = _one_line(refused)
        assert "bytes needed" in line and str(120 * MIB) in line and "available" in line, line
    assert not {"two", "three"} & set(listed["out"].split())
    assert len(listing["containers"]) == 1 and listing["tmp"] == []


def test_unpack_that_fills_the_disk_leaves_nothing(udocker, tmp_path):
    """A layer expanding to 400 MB of data on a 300 MB file system: one line, no unpacked tree, tmp/ clean."""
    layer = _layer(tmp_path / "fill.tar.gz", [("data/a", 200 * MIB, b"a"), ("data/b", 200 * MIB, b"c")])
    steps = [("udocker", "import", layer, "fill"), ("udocker", "create", "--name=c", "fill")]
    (imported, created), listing = _in_small_fs(udocker, tmp_path, steps)
    assert imported["rc"] == 0, imported
    line = _one_line(created)
    assert "no space left" in line.lower(), line
    assert listing["unpacked"] == [] and listing["tmp"] == [] and listing["containers"] == []
