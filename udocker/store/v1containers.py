"""udocker 1.x's containers in a repository: what udocker 2 needs to list, run, name and remove them beside
udocker 1.3 (docs/architecture.md, 'On-disk layout'). Their control files are parsed by store/v1records.py.

A udocker 1.x container is a directory containers/<uuid>/ (or an unpacked `export --clone` archive) holding:
  ROOT/             the root file system
  container.json    the image's configuration (config: Env, Cmd, Entrypoint, WorkingDir, ...; os, architecture)
  imagerepo.name    "repo:tag" of the image it was made from
  execmode          its execution mode (absent: P1, udocker 1.3's default)
  PROTECT           present when protected
  root.path, ld.so.path, ld.lib.dirs     F modes: 1.3 changed ROOT's absolute symbolic links into host paths
                    below root.path's directory (the ROOT it was set up in)
  ld.so.orig, patch.path, patch.time      F2-F4: 1.3 patched the loader in place, and (F3/F4) every ELF file's
                    interpreter and RPATH with the ROOT prefix: udocker 2 runs them as they are and undoes
                    them only on copies (export, clone) or by migrate (store/v1patches.py)
  .bind_orig_files/ R modes: files of ROOT (/etc/passwd, ...) moved aside and replaced by links into
                    /.bind_host_files, which 1.3 binds at run time
Its names are symbolic links containers/<name> -> <uuid> (relative, or an absolute path ending in the uuid).

udocker 2 reads these and writes none of them, except where the user asks (rm, name, rmname, protect), and
then as 1.3 would. What udocker 2 records for a 1.x container (its prepared mode, setup --nvidia) goes into a
file of its own, `udocker2.json`, beside 1.3's.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from udocker.paths import link_id

ROOT = "ROOT"
DEFAULT_MODE = "P1"
PATCHED_MODES = ("F2", "F3", "F4")  # modes whose loader (F2-F4) and programs (F3/F4) 1.3 patched
BIND_ORIG = ".bind_orig_files"
BIND_TARGET = "/.bind_host_files"


@dataclass
class V1Container:
    """What udocker 1.x recorded of one container (read by read_v1_container)."""

    id: str
    dir: str
    mode: str = DEFAULT_MODE
    mode_recorded: bool = False
    image: Optional[str] = None
    config: Dict = field(default_factory=dict)
    platform: Dict = field(default_factory=dict)
    names: List[str] = field(default_factory=list)
    protected: bool = False
    root_path: Optional[str] = None  # the ROOT 1.3's F modes converted links for (root.path)
    bind_orig: Optional[str] = None  # R modes: the directory of ROOT's files 1.3 moved aside
    loader: Optional[str] = None  # F2-F4: the container path of the loader 1.3 patched in place (ld.so.path)
    patch_path: Optional[str] = None  # F3/F4: the container directory 1.3 patched the programs for (patch.path)

    @property
    def root(self) -> str:
        return os.path.join(self.dir, ROOT)

    @property
    def patched(self) -> bool:
        """True when 1.3 patched ELF files or the loader of ROOT (F2-F4): udocker 2 runs it as it is (run_mode) and
        undoes the patches on copies (store/v1patches.py)."""
        return self.mode in PATCHED_MODES or os.path.exists(os.path.join(self.dir, "patch.path"))


def is_v1_container(directory: str) -> bool:
    """A directory laid out by udocker 1.x: ROOT/ and no udocker 2 rootfs/."""
    return os.path.isdir(os.path.join(directory, ROOT)) and not os.path.isdir(os.path.join(directory, "rootfs"))


def read_v1_container(directory: str, names: Optional[List[str]] = None) -> V1Container:
    """The 1.x container in `directory` (a containers/<uuid>/ or an unpacked 1.3 `export --clone` archive), its
    control files parsed by store/v1records.py. Raises ValueError (V1FormatError) for a corrupt one; a missing
    container.json (1.3's import --tocontainer) is an empty configuration. `names`: its names when known."""
    from udocker.store import v1records

    directory = os.path.abspath(directory)
    files = {}
    for name in v1records.CONTROL_FILES:
        if name == "ld.so.orig":
            continue  # the original loader's bytes: not needed to list or run it
        try:
            with open(os.path.join(directory, name), "rb") as stream:
                files[name] = stream.read()
        except (FileNotFoundError, NotADirectoryError):
            continue
    records = v1records.read_v1_records(files)
    shown = v1records.to_record(records)  # udocker 2's own record when a udocker 2 clone archive made it
    bind_orig = os.path.join(directory, BIND_ORIG)
    return V1Container(
        id=os.path.basename(directory), dir=directory, mode=records.mode or DEFAULT_MODE,
        mode_recorded=records.mode is not None, image=shown.get("image"), config=shown.get("config") or {},
        platform=shown.get("platform") or {}, names=sorted(names or []),
        protected=os.path.exists(os.path.join(directory, "PROTECT")), root_path=records.root_path,
        bind_orig=bind_orig if os.path.isdir(bind_orig) else None, loader=records.loader,
        patch_path=records.patch_path)


def v1_names(containers_dir: str) -> Dict[str, str]:
    """{name: container id} of udocker 1.x's names: symbolic links containers/<name> -> <uuid>."""
    found = {}
    try:
        entries = os.listdir(containers_dir)
    except FileNotFoundError:
        return {}
    for entry in entries:
        path = os.path.join(containers_dir, entry)
        if entry.startswith(".") or not os.path.islink(path):
            continue
        try:
            found[entry] = link_id(os.readlink(path))
        except OSError:
            continue
    return found


def add_v1_name(containers_dir: str, container_id: str, name: str) -> None:
    """Give a 1.x container another name as 1.3 does (a relative link containers/<name> -> <uuid>), so that 1.3
    sees it too. Raises FileExistsError when the name is taken."""
    os.symlink(container_id, os.path.join(containers_dir, name))


def remove_v1_name(containers_dir: str, name: str) -> bool:
    path = os.path.join(containers_dir, name)
    if name.startswith(".") or "/" in name or not os.path.islink(path):
        return False
    os.unlink(path)
    return True


def v1_record(container: V1Container, overlay: Optional[Dict] = None) -> Dict:
    """udocker 2's container record (store/containers.py's Container.record) for a 1.x container, with what udocker
    2 recorded of it itself (`overlay`: prepared, nvidia)."""
    record = {"id": container.id, "image": container.image, "manifest": None, "config": container.config,
              "platform": container.platform, "mode": container.mode, "protected": container.protected,
              "shared": False, "created": None}
    for key in ("prepared", "nvidia"):
        if overlay and key in overlay:
            record[key] = overlay[key]
    return record


def host_link_target(root: str, target: str, root_path: Optional[str] = None) -> Optional[str]:
    """The container path that the symbolic link `target` names when udocker 1.3's F modes made it a host path
    into the container's ROOT (`root`, or root.path's `root_path` when the repository moved), else None."""
    for prefix in {root.rstrip("/"), os.path.realpath(root), (root_path or "").rstrip("/")}:
        if prefix and (target == prefix or target.startswith(prefix + "/")):
            return target[len(prefix):] or "/"
    return None


def restore_links(tree: str, root: str, root_path: Optional[str] = None) -> int:
    """Turn the host-path links 1.3's F modes left in `tree` (a copy of ROOT: a clone, an export) back into the
    container paths they stood for; returns how many. `root` is the ROOT they point into."""
    return rewrite_links(tree, lambda target: host_link_target(root, target, root_path))


def rewrite_links(tree: str, inner_of) -> int:
    """Every symbolic link under `tree` whose target `inner_of(target)` maps to a container path (None: keep it)
    is made to point there; returns how many."""
    changed = 0
    for parent, dirs, files in os.walk(tree):
        for entry in dirs + files:
            path = os.path.join(parent, entry)
            if not os.path.islink(path):
                continue
            inner = inner_of(os.readlink(path))
            if inner is not None:
                os.unlink(path)
                os.symlink(inner, path)
                changed += 1
    return changed


def check_mode_change(container: V1Container, mode: Optional[str]) -> None:
    """Refuse (UdockerError) a change of a 1.x container's mode that would need undoing what udocker 1.3 did for
    its present mode: only P1 <-> P2 changes nothing in the container's files."""
    from udocker.errors import UdockerError

    if container.mode in ("P1", "P2") and mode in ("P1", "P2"):
        return
    raise UdockerError(f"container {container.id} was set up by udocker 1 in mode {container.mode}: udocker 2 "
                       f"cannot change it to {mode or 'the default mode'} without undoing udocker 1's changes",
                       hint=f"change its mode with udocker 1.3 (udocker setup --execmode={mode} {container.id}), "
                            "or make a udocker 2 copy with 'udocker clone'")


def run_mode(container: V1Container) -> str:
    """The mode udocker 2 runs a 1.x container in: its own, but F1 for F2-F4, whose loader (patched in place by
    1.3, reading LD_LIBRARY_REAL) and ELF files (interpreter and RPATH prefixed with the host path of ROOT) are
    then used as they are: udocker 2's F1 runs the container's loader as a program, which needs neither, and
    udocker 2 never patches them a second time."""
    return "F1" if container.patched else container.mode


def check_runnable(container: V1Container, what: str) -> None:
    """Refuse (UdockerError) to clone or set up a 1.x container whose ELF files or loader udocker 1.3 patched
    (F2-F4): their interpreters and library paths carry 1.3's ROOT prefix, which only 1.3 undoes."""
    from udocker.errors import UdockerError

    if container.patched:
        mode = container.mode if container.mode in PATCHED_MODES else "F2-F4"
        raise UdockerError(f"cannot {what} container {container.id}: udocker 1 patched its programs for mode "
                           f"{mode}, which udocker 2 does not undo (it runs the container as it is)",
                           hint=f"with udocker 1.3, run 'udocker setup --execmode=F1 {container.id}' (or P1) first")


def restore_bind_files(tree: str, bind_orig: Optional[str]) -> None:
    """Put the files 1.3's R modes moved aside (`bind_orig`) back into `tree` (a copy of ROOT), over the links
    that stood for them."""
    if not bind_orig:
        return
    import shutil

    for entry in os.listdir(bind_orig):
        target = os.path.join(tree, entry.replace("#", "/").lstrip("/"))
        if os.path.islink(target) and os.path.isfile(os.path.join(bind_orig, entry)):
            os.unlink(target)
            shutil.copy2(os.path.join(bind_orig, entry), target)
