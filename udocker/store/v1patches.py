"""udocker 1.3's F2-F4 patches of a container's ROOT, undone (store/v1containers.py reads the files named here).

For F2-F4, 1.3 rewrote the container's loader in place (ld.so.path names it, ld.so.orig keeps its original
bytes); for F3/F4 its patchelf (--set-root-prefix) also put the host path of ROOT in front of every program's
interpreter and of each absolute RPATH entry (patch.path: the container directory they were made for; root.path:
its ROOT). Those paths mean nothing once the tree is elsewhere (a clone, an archive, another repository), so
udocker 2 undoes them on a copy of the tree: `export` writes the tree the image gave (what docker export would
write), `clone` and `import --clone` make a udocker 2 container that keeps the mode and sets it up in udocker 2's
own way at its first run (engines/fakechroot.py), `migrate` converts the container so. 1.3's own container is
never changed here except by migrate, the explicit step. The ELF work is engines/elfpatch.py's (patchelf).
"""

import os
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass
class V1Patches:
    """What 1.3 patched in a tree: `loader` (ld.so.path, a container path) and its original bytes
    (`loader_orig`, ld.so.orig), and the host paths of ROOT that prefix interpreters and RPATHs (`prefixes`)."""

    loader: Optional[str] = None
    loader_orig: Optional[bytes] = None
    prefixes: Tuple[str, ...] = ()


def prefixes_of(root_path: Optional[str], patch_path: Optional[str], *roots: str) -> Tuple[str, ...]:
    """The host paths of ROOT that 1.3's patches may carry: patch.path's ROOT (what 1.3's restore takes off),
    root.path, and `roots` (where the ROOT is now, and its real path), longest first."""
    found = set()
    for path in (os.path.join(patch_path, "ROOT") if patch_path else None, root_path, *roots):
        if path and path.startswith("/"):
            found.add(path.rstrip("/"))
            found.add(os.path.realpath(path))
    return tuple(sorted((p for p in found if p != "/"), key=lambda p: (-len(p), p)))


def _patchelf(layout):
    from udocker.engines import locate

    return locate.find("patchelf", layout)


def _loader_file(tree: str, patches: V1Patches) -> Optional[str]:
    """The host path of 1.3's patched loader in `tree`, or None when there is none to restore."""
    from udocker import rootpath

    if not patches.loader or not patches.loader_orig:
        return None
    target = rootpath.resolve(tree, patches.loader)
    return target if os.path.isfile(target) and not os.path.islink(target) else None


def _failed(errors, what: str):
    from udocker.errors import UdockerError

    rel, message = errors[0]
    return UdockerError(f"cannot undo udocker 1's patch of /{rel} to {what}: {message}"
                        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))


def undo_in_place(tree: str, patches: V1Patches, layout, what: str) -> None:
    """Undo 1.3's patches in `tree` (a new clone, an imported archive, a ROOT being migrated): the loader gets
    its original bytes, each prefixed program its paths (each file replaced by a new one, never written in
    place). Raises UdockerError (EngineUnavailable when patchelf is missing) naming `what` was being done."""
    from udocker import fs
    from udocker.engines import elfpatch

    loader = _loader_file(tree, patches)
    if loader is not None:
        with elfpatch.writable([os.path.dirname(loader)]):
            mode = os.lstat(loader).st_mode & 0o7777
            with fs.atomic_output(loader, mode=mode) as stream:
                stream.write(patches.loader_orig)
    tasks = elfpatch.unprefix_plan(tree, patches.prefixes)
    if not tasks:
        return
    store = os.path.join(os.path.dirname(tree.rstrip("/")), ".v1-unpatch-originals")
    try:
        errors = elfpatch.unprefix_tree(tree, tasks, patchelf=_patchelf(layout), store=store)
    finally:
        import shutil

        shutil.rmtree(store, ignore_errors=True)
    if errors:
        raise _failed(errors, what)


def unpatched_copies(root: str, patches: V1Patches, scratch: str, layout) -> dict:
    """{relative path: unpatched copy in `scratch`} for the files of `root` that 1.3 patched, `root` unchanged:
    an export writes these in their place. Raises UdockerError as undo_in_place()."""
    import shutil

    from udocker.engines import elfpatch

    copies = {}
    tasks = elfpatch.unprefix_plan(root, patches.prefixes)
    if tasks:
        copies, errors = elfpatch.unprefixed_copies(root, tasks, patchelf=_patchelf(layout),
                                                    scratch=os.path.join(scratch, "elf"))
        if errors:
            raise _failed(errors, "export it")
    loader = _loader_file(root, patches)
    if loader is not None:
        copy = os.path.join(scratch, "loader")
        with open(copy, "wb") as stream:
            stream.write(patches.loader_orig)
        shutil.copystat(loader, copy)
        copies[os.path.relpath(loader, root)] = copy
    return {os.path.normpath(rel): path for rel, path in copies.items()}


def of_container(container) -> V1Patches:
    """The patches of the 1.x container `container` (store/v1containers.py's V1Container), none unless patched."""
    if not container.patched:
        return V1Patches()
    try:
        with open(os.path.join(container.dir, "ld.so.orig"), "rb") as stream:
            original = stream.read()
    except OSError:
        original = None
    return V1Patches(container.loader, original,
                     prefixes_of(container.root_path, container.patch_path, container.root))


def of_records(records) -> V1Patches:
    """The patches recorded in a 1.3 clone archive's files (store/v1records.py's V1Records), none unless 1.3's
    own (udocker 2 writes its archives unpatched) in F2-F4."""
    if records.own is not None or (records.mode not in ("F2", "F3", "F4") and not records.patch_path):
        return V1Patches()
    return V1Patches(records.loader, records.loader_orig, prefixes_of(records.root_path, records.patch_path))
