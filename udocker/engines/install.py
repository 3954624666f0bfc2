"""Install an engine bundle built by engines/build-bundle.sh (a .tar.gz, its directory, or the bundle inside the
udocker_engines wheel) into $UDOCKER_DIR/engines after verifying every file, and relocate it there.

Verification (verify_bundle):
  1. the bundle's manifest.yaml lists every file of the bundle, and only files under bin/ and lib/;
  2. each file's sha256 equals the bundle's manifest;
  3. each file that the shipped engines list (udocker/data/engines.yaml, a copy of the repository's
     engines/manifest.yaml) names for the bundle's architecture has the sha256 listed there;
  4. a file that the shipped list does not name, or names with another sum (a bundle a site built from
     other package versions), is refused unless trust_bundle_manifest is given; then it is accepted on the
     bundle's manifest alone and the result says so, file by file. The wheel is trusted as udocker itself is
     (pip installed both): its files are checked against its own manifest.
Relocation (_relocate): the bundle carries its C library and loader; each executable gets PT_INTERP = the
installed loader and DT_RPATH = the installed lib/, both absolute (see engines/build-bundle.sh for why).
installed.json records where the engines came from (origin bundle or wheel, the file or URL, its sha256)
and each patched file's new sha256.
A refused bundle leaves the engines folder untouched. Nothing here opens a network connection (fetch.py does).
"""

import errno
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from udocker import fs
from udocker.config import read_yaml
from udocker.errors import DigestMismatch, EngineError, EngineUnavailable, UdockerError
from udocker.oci.digest import sha256_file

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "engines.yaml")
MANIFEST = "manifest.yaml"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20

BUNDLE, WHEEL = "bundle", "wheel"  # installed.json origins
INSTALLED = "installed.json"


@dataclass(frozen=True)
class Manifest:
    path: str
    architecture: str
    machine: str
    loader: Optional[str]  # the bundled dynamic loader, e.g. lib/ld-linux-x86-64.so.2
    engines: Dict[str, Dict[str, Any]]
    files: Dict[str, str]  # bundle-relative path -> sha256


def read_manifest(path: str, what: str = "engine manifest") -> Manifest:
    """Parse and check a manifest written by build-bundle.sh; raises EngineError naming what is wrong."""
    data = read_yaml(path, what)
    if not isinstance(data, dict) or data.get("format") != 1:
        raise EngineError(f"{what} {path} is not a format 1 engine manifest")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise EngineError(f"{what} {path} lists no files")
    sums = {}
    for name, entry in files.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not _HEX.match(digest):
            raise EngineError(f"{what} {path} has no valid sha256 for {name}")
        sums[_checked_name(str(name), path)] = digest
    loader = data.get("loader")
    if loader is not None and (not isinstance(loader, str) or loader not in sums or not loader.startswith("lib/")):
        raise EngineError(f"{what} {path} names a loader that is not one of its lib/ files: {loader!r}")
    return Manifest(path, str(data.get("architecture", "")), str(data.get("machine", "")), loader,
                    dict(data.get("engines") or {}), sums)


def _checked_name(name: str, where: str) -> str:
    normal = os.path.normpath(name)
    if normal != name or name.startswith("/") or ".." in name.split("/") or name.split("/")[0] not in ("bin", "lib"):
        raise EngineError(f"unsafe or unexpected file name {name!r} in {where}",
                          hint="bundle files live under bin/ and lib/")
    return name


@dataclass
class Verified:
    manifest: Manifest
    checked_by: Dict[str, str] = field(default_factory=dict)  # file -> "shipped list" | "bundle manifest"
    differs_from_shipped: List[str] = field(default_factory=list)


def _bundle_files(root: str) -> List[str]:
    found = []
    for directory, dirs, names in os.walk(root):
        for name in sorted(dirs + names):
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path) or not (os.path.isdir(path) or os.path.isfile(path)):
                raise EngineError(f"bundle member {rel} is not a regular file or directory")
            if os.path.isfile(path) and rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def verify_bundle(root: str, *, shipped: Optional[Manifest], trust_bundle_manifest: bool = False) -> Verified:
    """Check the bundle unpacked at `root` (rules in the module docstring); raises DigestMismatch naming the
    first file whose sha256 differs, EngineError for anything else."""
    manifest_path = os.path.join(root, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise EngineError(f"no {MANIFEST} in the bundle", hint="build bundles with engines/build-bundle.sh")
    manifest = read_manifest(manifest_path, "bundle manifest")
    present = _bundle_files(root)
    unlisted = sorted(set(present) - set(manifest.files))
    if unlisted:
        raise EngineError(f"file not in the bundle's manifest: {unlisted[0]}")
    missing = sorted(set(manifest.files) - set(present))
    if missing:
        raise EngineError(f"file missing from the bundle: {missing[0]}")
    for name in sorted(manifest.files):
        actual = sha256_file(os.path.join(root, name))
        if actual != manifest.files[name]:
            raise DigestMismatch(f"checksum mismatch for {name}: sha256 {actual}, the bundle's manifest says "
                                 f"{manifest.files[name]}", hint="the bundle was changed after it was built")
    _check_machine(manifest)
    listed = shipped.files if shipped is not None and shipped.architecture == manifest.architecture else {}
    verified = Verified(manifest)
    for name in sorted(manifest.files):
        if listed.get(name) == manifest.files[name]:
            verified.checked_by[name] = "shipped list"
            continue
        if not trust_bundle_manifest:
            if name in listed:
                raise DigestMismatch(
                    f"checksum mismatch for {name}: sha256 {manifest.files[name]}, the shipped engines list says "
                    f"{listed[name]}", hint="if a trusted site built this bundle, use --trust-bundle-manifest")
            raise EngineError(f"{name} is not in the shipped engines list ({SHIPPED})",
                              hint="if a trusted site built this bundle, use --trust-bundle-manifest")
        verified.checked_by[name] = "bundle manifest"
        if name in listed:
            verified.differs_from_shipped.append(name)
    return verified


def _check_machine(manifest: Manifest) -> None:
    if manifest.machine and manifest.machine != platform.machine():
        raise EngineError(f"the bundle is for {manifest.machine}, this host is {platform.machine()}")


def load_shipped(path: Optional[str] = None) -> Optional[Manifest]:
    path = path or SHIPPED
    return read_manifest(path, "shipped engines list") if os.path.isfile(path) else None


def _unpack(source: str, dest: str) -> None:
    """Copy a bundle directory, or extract a bundle tarball, into `dest`. A tarball may hold the bundle at
    its top or inside one top-level directory. Only regular files and directories are accepted."""
    if os.path.isdir(source):
        top = source
        if not os.path.exists(os.path.join(source, MANIFEST)):
            top = _single_child(source)
        for name in _bundle_files(top) + [MANIFEST]:
            if os.path.exists(os.path.join(top, name)):
                os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
                shutil.copyfile(os.path.join(top, name), os.path.join(dest, name))
        return
    try:
        with tarfile.open(source, "r:*") as archive:
            members = archive.getmembers()
            names = [(m.name[2:] if m.name.startswith("./") else m.name).rstrip("/") for m in members]
            tops = {n.split("/")[0] for n in names if n}
            strip = len(tops) == 1 and not any(n == MANIFEST for n in names) and all(
                m.isdir() for m, n in zip(members, names) if n in tops)
            for member, name in zip(members, names):
                rel = name.split("/", 1)[1] if strip and "/" in name else ("" if strip else name)
                if not rel or rel == ".":
                    continue
                if rel != MANIFEST:
                    _checked_name(rel, source)
                target = os.path.join(dest, rel)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                elif member.isfile():
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with archive.extractfile(member) as stream, open(target, "wb") as out:
                        shutil.copyfileobj(stream, out, _CHUNK)
                else:
                    raise EngineError(f"bundle member {name} is not a regular file or directory")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise EngineError(f"cannot read bundle {source}: {getattr(exc, 'strerror', None) or exc}") from None


def _single_child(directory: str) -> str:
    children = [os.path.join(directory, n) for n in os.listdir(directory)]
    if len(children) == 1 and os.path.isfile(os.path.join(children[0], MANIFEST)):
        return children[0]
    raise EngineError(f"no {MANIFEST} in {directory}", hint="build bundles with engines/build-bundle.sh")


@dataclass
class Installed:
    directory: str
    verified: Optional[Verified]
    changed: bool


@dataclass(frozen=True)
class Origin:
    """Where a bundle comes from, as installed.json records it: kind BUNDLE (a file or URL) or WHEEL."""
    kind: str = BUNDLE
    where: Optional[str] = None
    sha256: Optional[str] = None  # the tarball's, when it was pinned (install --from URL)


def install_from(source: str, layout, *, force: bool = False, trust_bundle_manifest: bool = False,
                 lock_timeout: float = 3600, shipped_path: Optional[str] = None, origin: Optional[Origin] = None
                 ) -> Installed:
    """Verify the bundle at `source` (a directory or tarball), then replace $UDOCKER_DIR/engines with it.

    The new tree is built, verified and relocated in tmp/ (same filesystem) and exchanged with the old one in
    one renameat2(RENAME_EXCHANGE), so a reader, or a kill, finds the old engines or the new ones. Where the
    file system cannot exchange, the old tree is moved aside first and restored if the second rename fails:
    then, for the instant between the two renames, there are none. Never a partial set; on any error the
    engines folder is unchanged. An identical installation is left alone (changed=False)
    unless `force`; a different one is replaced only with `force`, or when both come from the wheel (an
    upgraded udocker-engines). Expects an opened repository (tmp/ and locks/ exist)."""
    if not os.path.exists(source):
        raise EngineError(f"no such bundle: {source}")
    origin = origin or Origin(BUNDLE, os.path.abspath(source))
    target = layout.engines
    with fs.locked(layout.lock("engines", "install"), timeout=lock_timeout, what="the engines folder"):
        current = _current_if_same(source, layout) if not force else None
        if current is not None:  # e.g. the tasks of a job array that all found the folder empty
            return Installed(target, Verified(current), changed=False)
        with fs.scratch_dir(layout.tmp, prefix="engines-") as scratch:
            staged = os.path.join(scratch, "new")
            os.makedirs(staged)
            _unpack(os.path.abspath(source), staged)
            verified = verify_bundle(staged, shipped=load_shipped(shipped_path or SHIPPED),
                                     trust_bundle_manifest=trust_bundle_manifest or origin.kind == WHEEL)
            if os.path.exists(target) and os.listdir(target) and not force:
                current = os.path.join(target, MANIFEST)
                same = os.path.isfile(current) and _same_file(current, os.path.join(staged, MANIFEST))
                if same and not moved_from(layout):
                    return Installed(target, verified, changed=False)
                if not same and not (origin.kind == WHEEL and installed_origin(layout) == WHEEL):
                    raise EngineError(f"engines are already installed in {target}",
                                      hint="use --force to replace them, or --purge to remove them")
            _set_modes(staged, verified.manifest)
            record = {"origin": origin.kind, "from": origin.where, "sha256": origin.sha256,
                      "patched": _relocate(staged, target, verified.manifest)}
            _write_json(os.path.join(staged, INSTALLED), record)
            _swap(staged, target, os.path.join(scratch, "old"))
            return Installed(target, verified, changed=True)


def moved_from(layout) -> Optional[str]:
    """The engines folder the installed executables were relocated for, when it is not this one (the
    repository was moved or is seen under another path): their loader path is then wrong. Else None."""
    for patched in installed_record(layout).get("patched", {}).values():
        where = os.path.dirname(os.path.dirname(str(patched.get("interpreter") or "")))
        if where and where != layout.engines:
            return where
    return None


def _current_if_same(source: str, layout) -> Optional[Manifest]:
    """The installed manifest when `source` is a bundle directory with the same manifest, else None."""
    mine, theirs = os.path.join(source, MANIFEST), os.path.join(layout.engines, MANIFEST)
    if not (os.path.isfile(mine) and os.path.isfile(theirs) and _same_file(mine, theirs)):
        return None
    if moved_from(layout):
        return None
    try:
        return read_manifest(theirs, "installed engine manifest")
    except UdockerError:
        return None


def _same_file(one: str, other: str) -> bool:
    with open(one, "rb") as a, open(other, "rb") as b:
        return a.read() == b.read()


def _set_modes(root: str, manifest: Manifest) -> None:
    for directory, dirs, _ in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(directory, name), 0o755)
    for name in list(manifest.files) + [MANIFEST]:  # the loader too: the kernel execs it (PT_INTERP)
        os.chmod(os.path.join(root, name), 0o755 if name.startswith("bin/") or name == manifest.loader else 0o644)
    os.chmod(root, 0o755)


def _write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
    os.chmod(path, 0o644)


def _relocate(staged: str, target: str, manifest: Manifest) -> Dict[str, Dict[str, str]]:
    """Point every dynamic executable of the staged tree at the bundle's loader and lib/ as they will be
    installed in `target` (absolute paths); returns {file: {interpreter, rpath, sha256, bundle_sha256}}.
    A bundle without a loader (one built before glibc was bundled) gets only the absolute lib/ in RPATH."""
    from udocker.engines import elfpatch

    lib = os.path.join(target, "lib")
    interp = os.path.join(target, manifest.loader) if manifest.loader else None
    names = [n for n in sorted(manifest.files) if n.startswith("bin/")
             and getattr(elfpatch.read_elf(os.path.join(staged, n)), "interp", None)]
    if not names:
        return {}
    tool = _patchelf(staged, manifest)
    record = {}
    for name in names:
        args = (["--set-interpreter", interp] if interp else []) + ["--force-rpath", "--set-rpath",
                                                                    lib if interp else "$ORIGIN/../lib:" + lib]
        result = subprocess.run(tool + args + [os.path.join(staged, name)], capture_output=True, text=True,
                                timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})
        if result.returncode != 0:
            raise EngineError(f"cannot relocate {name}: {result.stderr.strip() or 'patchelf failed'}")
        record[name] = {"interpreter": interp, "rpath": args[-1], "bundle_sha256": manifest.files[name],
                        "sha256": sha256_file(os.path.join(staged, name))}
    return record


def _patchelf(staged: str, manifest: Manifest) -> List[str]:
    """The command that patches the staged executables: a copy of the bundle's own patchelf started through
    the bundle's loader (the copy, because patchelf may rewrite the staged bin/patchelf), else the host's."""
    if "bin/patchelf" in manifest.files and manifest.loader:
        copy = os.path.join(os.path.dirname(staged), "patchelf-tool")
        shutil.copyfile(os.path.join(staged, "bin", "patchelf"), copy)
        os.chmod(copy, 0o700)
        return [os.path.join(staged, manifest.loader), "--library-path", os.path.join(staged, "lib"), copy]
    host = shutil.which("patchelf")
    if host is None:
        raise EngineUnavailable("patchelf is needed to install this bundle's executables",
                                hint="use a bundle that includes patchelf")
    return [host]


def installed_record(layout) -> Dict[str, Any]:
    """installed.json of the engines folder ({} when missing or unreadable)."""
    try:
        with open(os.path.join(layout.engines, INSTALLED), encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def installed_origin(layout) -> Optional[str]:
    """BUNDLE or WHEEL for engines installed by udocker; None for an empty folder or one filled by hand."""
    origin = installed_record(layout).get("origin")
    return origin if origin in (BUNDLE, WHEEL) else None


def installed_versions(layout) -> Dict[str, str]:
    path = os.path.join(layout.engines, MANIFEST)
    try:
        manifest = read_manifest(path, "installed engine manifest") if os.path.isfile(path) else None
    except UdockerError:
        return {}
    if manifest is None:
        return {}
    return {name: str(info.get("version")) for name, info in manifest.engines.items()
            if isinstance(info, dict) and info.get("version") is not None}


def _exchange(one: str, other: str) -> bool:
    """Swap two existing paths in one step (renameat2 RENAME_EXCHANGE); False where the C library, kernel or
    file system cannot."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(one), at_fdcwd, os.fsencode(other), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise EngineError(f"cannot install engines into {other}: {os.strerror(code)}")


def _swap(staged: str, target: str, aside: str) -> None:
    """Put `staged` in the place of `target`: in one step where the system can (the old tree then lies at
    `staged`), else with two renames."""
    if os.path.lexists(target) and _exchange(staged, target):
        fs.fsync_dir(os.path.dirname(target))
        return
    had_old = os.path.lexists(target)
    if had_old:
        os.rename(target, aside)
    try:
        os.rename(staged, target)
    except OSError as exc:
        if had_old:
            os.rename(aside, target)
        raise EngineError(f"cannot install engines into {target}: {exc.strerror}") from None
    fs.fsync_dir(os.path.dirname(target))


def purge(layout, *, lock_timeout: float = 3600) -> int:
    """Remove $UDOCKER_DIR/engines (installed bundles and anything put there by hand); returns how many
    files were removed. Engines on PATH or configured in engine_paths are not touched."""
    target = layout.engines
    if not os.path.lexists(target):
        return 0
    with fs.locked(layout.lock("engines", "install"), timeout=lock_timeout, what="the engines folder"):
        count = sum(len(names) for _, _, names in os.walk(target))
        with fs.scratch_dir(layout.tmp, prefix="engines-") as scratch:
            os.rename(target, os.path.join(scratch, "old"))  # atomic: then removed with the scratch dir
        return count
