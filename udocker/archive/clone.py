"""Container clone archives (`export --clone`, `import --clone`), in the one format udocker 1.3 and 2 both read.

udocker 1.3's `export --clone` tars its container directory: ROOT/ (the root file system) beside container.json,
imagerepo.name, execmode and engine state (store/v1records.py). udocker 2 writes the same layout, with its own record
kept inside container.json, so that 1.3's `import --clone` takes it and runs it. Read here: that layout (from
either version) and udocker 2's first clone format (rootfs/ beside container.json, a udocker 2 record).

Nothing of an archive is trusted: names that are absolute or hold '..', a ROOT that is not a directory, a
symbolic or hard link under ROOT that leads out of it, a control file that is not a regular file, or no ROOT
at all refuse the whole archive before anything is written.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from udocker.errors import UdockerError
from udocker.store import v1records as v1

_ROOTS = ("ROOT", "rootfs")  # udocker 1.3 and 2's shared layout; udocker 2's first clone format
_MAX_CONTROL = 16 << 20  # ld.so.orig is the largest control file read (a loader: a few hundred KiB)
_READ = frozenset(v1.CONTROL_FILES)


@dataclass
class CloneArchive:
    """What scan() found: `root` ("ROOT" or "rootfs"), the container `record` for udocker 2 (without id) and
    the 1.x `records` (F-mode state to undo: restore_links, restore_patches)."""

    root: str
    record: dict
    records: v1.V1Records


class _Refused(Exception):
    pass


def _parts(name: str) -> list[str]:
    if name.startswith("/"):
        raise _Refused(f"absolute member name {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Refused(f"member name with '..': {name!r}")
    return parts


def _check_link(member: tarfile.TarInfo, parts: list[str]) -> None:
    """A link under ROOT must stay in ROOT: a hard link names a member of ROOT, a relative symbolic link
    never climbs above it (an absolute one is the container's own path)."""
    if member.islnk():
        target = _parts(member.linkname)
        if not target or target[0] != parts[0] or len(target) < 2:
            raise _Refused(f"hard link out of {parts[0]}: {member.name!r} -> {member.linkname!r}")
    elif member.issym() and not member.linkname.startswith("/"):
        depth = len(parts) - 2  # directories between ROOT and the link
        for part in member.linkname.split("/"):
            depth += -1 if part == ".." else 0 if part in ("", ".") else 1
            if depth < 0:
                raise _Refused(f"symbolic link out of {parts[0]}: {member.name!r} -> {member.linkname!r}")


def _scan_members(archive: tarfile.TarFile) -> tuple[set, dict]:
    roots, files = set(), {}
    for member in archive:
        parts = _parts(member.name)
        if not parts:
            continue
        if parts[0] in _ROOTS:
            if len(parts) == 1 and not member.isdir():
                raise _Refused(f"{parts[0]} is not a directory")
            roots.add(parts[0])
            _check_link(member, parts)
        elif len(parts) == 1 and parts[0] in _READ:
            if not member.isreg():
                raise _Refused(f"{parts[0]} is not a regular file")
            if member.size > _MAX_CONTROL:
                raise _Refused(f"{parts[0]} is too large ({member.size} bytes)")
            files[parts[0]] = archive.extractfile(member).read()
    return roots, files


def scan(path: str) -> CloneArchive:
    """Read and check the clone archive `path` (plain or compressed); UdockerError, one line, if it is not one."""
    try:
        with tarfile.open(path, "r|*", encoding="utf-8", errors="surrogateescape") as archive:
            roots, files = _scan_members(archive)
        if not roots:
            raise _Refused("no ROOT/ directory")
        if len(roots) > 1:
            raise _Refused("both ROOT/ and rootfs/")
        records = v1.read_v1_records(files)
    except (_Refused, v1.V1FormatError) as exc:
        raise UdockerError(f"not a container clone archive: {path}: {exc}",
                           hint="make one with 'udocker export --clone'") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise UdockerError(f"cannot read clone archive {path}: {exc}") from None
    root = roots.pop()
    if root == "rootfs" and records.own is None:  # udocker 2's first format: container.json is its record
        records.own = records.image_config
    return CloneArchive(root, v1.to_record(records), records)


def restore_patches(rootfs: str, records: v1.V1Records, layout) -> None:
    """Undo udocker 1.3's F2-F4 patches (its loader rewritten in place, F3/F4's programs prefixed with the host
    path of its ROOT) in the imported `rootfs` (store/v1patches.py): udocker 2 sets the mode up again its own way."""
    from udocker.store import v1patches

    patches = v1patches.of_records(records)
    if patches.loader or patches.prefixes:
        v1patches.undo_in_place(rootfs, patches, layout, "import it")


# udocker 1.3's F modes point every absolute symbolic link of ROOT at the host path of the container it was made in
_V1_HOST_LINK = re.compile(r"^/.*/containers/[a-z0-9]+-[a-z0-9]+-[a-z0-9]+-[a-z0-9]+-[a-z0-9]+/ROOT(/.*)?$")


def restore_links(rootfs: str, records: v1.V1Records) -> int:
    """Undo udocker 1.3's conversion of absolute symbolic links (F modes: /x became /HOST/containers/ID/ROOT/x,
    a path that means nothing here): they get their container paths back. Returns how many were changed."""
    if records.own is not None:
        return 0
    from udocker.store.v1containers import rewrite_links

    return rewrite_links(rootfs, _archive_link_target)


def _archive_link_target(target: str):
    match = _V1_HOST_LINK.match(target)
    return (match.group(1) or "/") if match else None


def write(container, stream: BinaryIO, originals: dict | None = None, member_filter=None) -> None:
    """Write `container` as a clone archive to `stream` (need not be seekable): the control files, then its
    rootfs as ROOT/. `originals` ({relative path: host path}) replaces files of the rootfs (F3/F4's patched
    programs) by their originals; `member_filter` is tarfile's filter for each member of the rootfs."""
    import io

    originals = originals or {}
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for name, data in v1.write_v1_records(container.record).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
        add_tree(archive, container.rootfs, "ROOT", originals, member_filter)


def add_tree(archive: tarfile.TarFile, top: str, arcname: str, originals: dict, member_filter=None) -> None:
    """Add the tree `top` as `arcname`, in os.walk order, taking files named in `originals` from there
    (`member_filter`: tarfile's filter of each member, e.g. udocker 1.x's links restored by create.py)."""
    archive.add(top, arcname=arcname, recursive=False)
    for parent, dirs, files in os.walk(top):
        rel_parent = os.path.relpath(parent, top)
        for name in sorted(dirs) + sorted(files):
            rel = os.path.normpath(os.path.join(rel_parent, name))
            source = originals.get(rel, os.path.join(parent, name))
            archive.add(source, arcname=f"{arcname}/{rel}", recursive=False, filter=member_filter)
        dirs.sort()
