"""udocker 1.3's F2-F4 patches undone (store/v1patches.py, engines/elfpatch.py's unprefix functions), with the
host's patchelf on copies of a host program, patched as 1.3's --set-root-prefix does ("ROOT" + "/" + path)."""

import os
import shutil
import subprocess

import pytest

from udocker.engines import elfpatch
from udocker.paths import Layout
from udocker.store import v1patches

PATCHELF = shutil.which("patchelf")
pytestmark = pytest.mark.skipif(PATCHELF is None and not os.environ.get("CI"), reason="no patchelf")


def test_strip_prefix_and_plan():
    prefixes = ("/h/c/ROOT",)
    assert elfpatch.strip_prefix("/h/c/ROOT//lib64/ld.so", prefixes) == "/lib64/ld.so"
    assert elfpatch.strip_prefix("/h/c/ROOTS/lib64/ld.so", prefixes) is None
    assert elfpatch.strip_prefix("/lib64/ld.so", prefixes) is None
    info = elfpatch.ElfInfo(interp="/h/c/ROOT//lib64/ld.so", dynamic=True, rpath="/h/c/ROOT/opt/lib:$ORIGIN/x")
    assert elfpatch.plan_unprefix(info, prefixes) == ["--set-interpreter", "/lib64/ld.so", "--force-rpath",
                                                      "--set-rpath", "/opt/lib:$ORIGIN/x"]
    info = elfpatch.ElfInfo(interp="/lib64/ld.so", dynamic=True, runpath="/opt/lib")
    assert elfpatch.plan_unprefix(info, prefixes) == []
    assert v1patches.prefixes_of("/h/c/ROOT", "/h/c") == ("/h/c/ROOT",)


def _patched_tree(tmp_path):
    """A tree whose bin/prog is a host program with 1.3's prefix on its interpreter and RPATH."""
    root = tmp_path / "containers" / "c" / "ROOT"
    (root / "bin").mkdir(parents=True)
    prog = root / "bin" / "prog"
    shutil.copy2("/bin/true", prog)
    interp = elfpatch.read_elf(str(prog)).interp
    subprocess.run([PATCHELF, "--set-interpreter", f"{root}/{interp}", "--force-rpath", "--set-rpath",
                    f"{root}/opt/lib", str(prog)], check=True)
    prog.chmod(0o555)
    return root, prog, interp


def test_copies_for_an_export_leave_the_tree_alone(tmp_path):
    root, prog, interp = _patched_tree(tmp_path)
    before = prog.read_bytes()
    patches = v1patches.V1Patches(prefixes=v1patches.prefixes_of(str(root), str(root.parent)))
    (tmp_path / "scratch").mkdir()
    copies = v1patches.unpatched_copies(str(root), patches, str(tmp_path / "scratch"), Layout(str(tmp_path / "r")))
    assert list(copies) == ["bin/prog"] and prog.read_bytes() == before
    info = elfpatch.read_elf(copies["bin/prog"])
    assert (info.interp, info.rpath) == (interp, "/opt/lib")
    assert os.stat(copies["bin/prog"]).st_mode & 0o777 == 0o555


def test_undo_in_place_replaces_files_and_restores_the_loader(tmp_path):
    root, prog, interp = _patched_tree(tmp_path)
    linked = tmp_path / "other-container-prog"
    os.link(prog, linked)  # never written in place: another link to the patched file keeps it
    (root / "lib64").mkdir()
    (root / "lib64" / "ld.so").write_bytes(b"patched by 1.3")
    patches = v1patches.V1Patches("/lib64/ld.so", b"original", v1patches.prefixes_of(None, None, str(root)))
    v1patches.undo_in_place(str(root), patches, Layout(str(tmp_path / "r")), "clone it")
    assert elfpatch.read_elf(str(prog)).interp == interp
    assert elfpatch.read_elf(str(linked)).interp.startswith(str(root))
    assert (root / "lib64" / "ld.so").read_bytes() == b"original"
    assert sorted(os.listdir(root.parent)) == ["ROOT"]  # the originals' store is gone
    done = subprocess.run([str(prog)], check=False)
    assert done.returncode == 0
