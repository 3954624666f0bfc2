"""Engine provisioning without internet: report which engines this host can use, and install a bundle built
by engines/build-bundle.sh (a .tar.gz or a directory) into $UDOCKER_DIR/engines after verifying every file.

Verification (verify_bundle):
  1. the bundle's manifest.yaml lists every file of the bundle, and only files under bin/ and lib/;
  2. each file's sha256 equals the bundle's manifest;
  3. each file that the shipped engines list (udocker/data/engines.yaml, a copy of the repository's
     engines/manifest.yaml) names for the bundle's architecture has the sha256 listed there;
  4. a file that the shipped list does not name, or names with another sum (a bundle a site built from
     other package versions), is refused unless trust_bundle_manifest is given; then it is accepted on the
     bundle's manifest alone and the result says so, file by file;
  5. the host's glibc is at least the bundle's glibc_min (the bundle does not carry glibc; see the recipe).
A refused bundle leaves the engines folder untouched. Nothing here opens a network connection.
"""

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from udocker import fs
from udocker.config import read_yaml
from udocker.engines import locate
from udocker.errors import DigestMismatch, EngineError, EngineUnavailable, UdockerError
from udocker.paths import Layout

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "engines.yaml")
MANIFEST = "manifest.yaml"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20

# engine name -> (kind, what locate looks for)
ENGINES: Dict[str, Tuple[str, str]] = {
    "proot": ("exe", "proot"),
    "runc": ("exe", "runc"),
    "crun": ("exe", "crun"),
    "patchelf": ("exe", "patchelf"),
    "fakechroot": ("lib", "fakechroot/libfakechroot.so"),
}
# mode -> engines it needs; "runc|crun" means either (udocker 1.3's legacy mode names)
MODES: Dict[str, Tuple[str, ...]] = {
    "P1": ("proot",), "P2": ("proot",),
    "F1": ("fakechroot",), "F2": ("fakechroot",), "F3": ("fakechroot", "patchelf"), "F4": ("fakechroot", "patchelf"),
    "R1": ("runc|crun",), "R2": ("runc|crun", "proot"), "R3": ("runc|crun", "proot"),
}


@dataclass(frozen=True)
class Manifest:
    path: str
    architecture: str
    machine: str
    glibc_min: Optional[str]
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
    return Manifest(path, str(data.get("architecture", "")), str(data.get("machine", "")),
                    None if data.get("glibc_min") is None else str(data["glibc_min"]),
                    dict(data.get("engines") or {}), sums)


def _checked_name(name: str, where: str) -> str:
    normal = os.path.normpath(name)
    if normal != name or name.startswith("/") or ".." in name.split("/") or name.split("/")[0] not in ("bin", "lib"):
        raise EngineError(f"unsafe or unexpected file name {name!r} in {where}",
                          hint="bundle files live under bin/ and lib/")
    return name


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def host_glibc() -> Optional[Tuple[int, ...]]:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    match = re.match(r"glibc (\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_glibc(manifest: Manifest) -> None:
    """Raise EngineError when the host's glibc is older than the bundle needs (or is not glibc)."""
    if not manifest.glibc_min:
        return
    need = tuple(int(part) for part in manifest.glibc_min.split(".")[:2])
    have = host_glibc()
    if have is None or have < need:
        host = "no glibc" if have is None else "glibc " + ".".join(map(str, have))
        raise EngineError(f"the bundle needs glibc {manifest.glibc_min} or newer; this host has {host}",
                          hint="build the bundle on an older distribution, or use --force to install anyway")


def load_shipped(path: str = SHIPPED) -> Optional[Manifest]:
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


def install_from(source: str, layout, *, force: bool = False, trust_bundle_manifest: bool = False,
                 lock_timeout: float = 3600, shipped_path: str = SHIPPED) -> Installed:
    """Verify the bundle at `source` (a directory or tarball), then replace $UDOCKER_DIR/engines with it.

    The new tree is built and verified in tmp/ (same filesystem) and moved into place with rename(2); the old
    tree is moved aside first and restored if the second rename fails, so a reader sees the old engines, the
    new ones, or (for the instant between the two renames) none, never a partial set. On any error the
    engines folder is unchanged. An identical installation is left alone (changed=False) unless `force`;
    a different one is replaced only with `force`. Expects an opened repository (tmp/ and locks/ exist)."""
    if not os.path.exists(source):
        raise EngineError(f"no such bundle: {source}")
    target = layout.engines
    with fs.locked(layout.lock("engines", "install"), timeout=lock_timeout, what="the engines folder"):
        with fs.scratch_dir(layout.tmp, prefix="engines-") as scratch:
            staged = os.path.join(scratch, "new")
            os.makedirs(staged)
            _unpack(os.path.abspath(source), staged)
            verified = verify_bundle(staged, shipped=load_shipped(shipped_path),
                                     trust_bundle_manifest=trust_bundle_manifest)
            if not force:
                check_glibc(verified.manifest)
            current = os.path.join(target, MANIFEST)
            if os.path.exists(target) and os.listdir(target) and not force:
                if os.path.isfile(current) and _same_file(current, os.path.join(staged, MANIFEST)):
                    return Installed(target, verified, changed=False)
                raise EngineError(f"engines are already installed in {target}",
                                  hint="use --force to replace them, or --purge to remove them")
            _set_modes(staged, verified.manifest)
            _pin_library_dir(staged, target, verified.manifest)
            _swap(staged, target, os.path.join(scratch, "old"))
            return Installed(target, verified, changed=True)


def _same_file(one: str, other: str) -> bool:
    with open(one, "rb") as a, open(other, "rb") as b:
        return a.read() == b.read()


def _set_modes(root: str, manifest: Manifest) -> None:
    for directory, dirs, _ in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(directory, name), 0o755)
    for name in list(manifest.files) + [MANIFEST]:
        os.chmod(os.path.join(root, name), 0o755 if name.startswith("bin/") else 0o644)
    os.chmod(root, 0o755)


# runc and crun re-execute themselves from a sealed memfd copy (the CVE-2019-5736 defence), where $ORIGIN no
# longer names the bundle's bin/: the copy would load the host's libseccomp, libyajl... or fail where the host
# has none. Installing adds the absolute lib/ of the engines folder after '$ORIGIN/../lib' in their RPATH,
# so moving the engines folder keeps the first exec working and the re-exec needs the installed copy.
SELF_CLONING = ("bin/runc", "bin/crun")
PATCHED = "patched.json"


def _pin_library_dir(staged: str, target: str, manifest: Manifest) -> None:
    """Patch the self-cloning engines of the staged tree (with its own patchelf, else the host's) and record
    their new sha256 in patched.json; files the bundle verified stay listed in manifest.yaml."""
    names = [n for n in SELF_CLONING if n in manifest.files]
    if not names or not any(n.startswith("lib/") for n in manifest.files):
        return
    patchelf = os.path.join(staged, "bin", "patchelf")
    if not os.path.isfile(patchelf):
        try:
            patchelf = locate.find("patchelf", Layout(os.path.dirname(target)))
        except EngineUnavailable:
            raise EngineUnavailable("patchelf is needed to install runc or crun from a bundle",
                                    hint="use a bundle that includes patchelf") from None
    rpath = "$ORIGIN/../lib:" + os.path.join(target, "lib")
    record = {}
    for name in names:
        result = subprocess.run([patchelf, "--force-rpath", "--set-rpath", rpath, os.path.join(staged, name)],
                                capture_output=True, text=True, timeout=60, check=False,
                                env={"PATH": "/usr/bin:/bin"})
        if result.returncode != 0:
            raise EngineError(f"cannot set the library path of {name}: {result.stderr.strip()}")
        record[name] = {"rpath": rpath, "sha256": sha256_file(os.path.join(staged, name)),
                        "bundle_sha256": manifest.files[name]}
    with open(os.path.join(staged, PATCHED), "w", encoding="utf-8") as stream:
        json.dump(record, stream, indent=2, sort_keys=True)
    os.chmod(os.path.join(staged, PATCHED), 0o644)


def _swap(staged: str, target: str, aside: str) -> None:
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


@dataclass(frozen=True)
class EngineRow:
    name: str
    path: Optional[str]
    origin: Optional[str]  # locate.CONFIGURED / ENGINES_FOLDER / PATH / SYSTEM; None when not found
    version: Optional[str]
    problem: Optional[str]  # why it was not found (or a configured path is wrong)


@dataclass(frozen=True)
class ModeRow:
    mode: str
    engine: str
    status: str  # usable / unusable (probed) ; found / missing (not probed: no udocker.engines.modes)
    detail: str


def find_engines(config, layout, environ: Optional[Mapping[str, str]] = None) -> List[EngineRow]:
    """Where each engine is (configured path, engines folder, PATH or system libraries) and its version:
    from the installed manifest for the engines folder, else from `ENGINE --version` (run with a 10 s
    limit; nothing else is executed)."""
    installed = _installed_versions(layout)
    rows = []
    for name, (kind, what) in ENGINES.items():
        try:
            if kind == "exe":
                found = locate.locate(what, layout, environ, config=config)
            else:
                found = locate.locate_library(what, layout, config=config)
        except EngineUnavailable as exc:
            rows.append(EngineRow(name, None, None, None, exc.message))
            continue
        version = installed.get(name) if found.origin == locate.ENGINES_FOLDER else None
        if version is None and kind == "exe":
            version = _version_of(found.path)
        rows.append(EngineRow(name, found.path, found.origin, version, None))
    return rows


def _installed_versions(layout) -> Dict[str, str]:
    path = os.path.join(layout.engines, MANIFEST)
    try:
        manifest = read_manifest(path, "installed engine manifest") if os.path.isfile(path) else None
    except UdockerError:
        return {}
    if manifest is None:
        return {}
    return {name: str(info.get("version")) for name, info in manifest.engines.items()
            if isinstance(info, dict) and info.get("version") is not None}


def _version_of(path: str) -> Optional[str]:
    try:
        result = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=False,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(rb"(\d+\.\d+(?:\.\d+)?)", result.stdout + result.stderr)
    return match.group(1).decode() if match else None


def check_modes(config, layout, engines: List[EngineRow]) -> List[ModeRow]:
    """Per mode, whether it can run. When udocker.engines.modes is importable (it is written separately),
    each mode's engine is probed with get_engine(mode, config, layout).probe(mode); otherwise only the
    presence of the engines each mode needs is reported (status found / missing)."""
    try:
        from udocker.engines import modes as mode_table
        get_engine = mode_table.get_engine
    except (ImportError, AttributeError):
        get_engine = None
    by_name = {row.name: row for row in engines}
    rows = []
    for mode, needs in MODES.items():
        names, missing = [], []
        for need in needs:
            choice = next((n for n in need.split("|") if by_name[n].path), None)
            names.append(choice or need.replace("|", "/"))
            if choice is None:
                missing.append(need.replace("|", " or "))
        if get_engine is None:
            status, detail = ("missing", "needs " + ", ".join(missing)) if missing else ("found", "not probed")
        else:
            status, detail = _probe(get_engine, mode, config, layout)
        rows.append(ModeRow(mode, "+".join(names), status, detail))
    return rows


def _probe(get_engine, mode: str, config, layout) -> Tuple[str, str]:
    try:
        get_engine(mode, config, layout).probe(mode)
    except UdockerError as exc:
        return "unusable", exc.message
    except Exception as exc:  # noqa: BLE001 - a probe bug must show up in the report, not hide a mode
        return "unusable", f"probe failed: {type(exc).__name__}: {exc}"
    return "usable", ""
