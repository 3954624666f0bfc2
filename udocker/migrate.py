"""`udocker migrate`: convert udocker 1.x containers (store/v1containers.py) into udocker 2 containers for good, keeping
their ids, names, modes and protection. udocker 1.3 cannot use a converted container any more: this is the
explicit step; without it udocker 2 uses 1.x containers as they are.

Each conversion keeps a usable container at every step (a kill leaves it runnable by udocker 2):
  1. 1.3's F2-F4 patches are undone (store/v1patches.py: the loader's original bytes back, the programs'
     interpreters and RPATHs without the host path of ROOT; udocker 2 runs the container in F1 meanwhile, which
     needs neither), the host-path links its F modes left in ROOT become container paths again, and the files
     its R modes moved aside go back over their links;
  2. container.json (1.3's copy of the image config) is replaced by udocker 2's record (atomically): the
     directory is still read as a 1.x one, whose configuration is the record's;
  3. ROOT/ is renamed rootfs/: from here on it is a udocker 2 container;
  4. its names move from containers/<name> to containers/.names/<name> (not in a repository that udocker 1.x
     still uses: there names stay 1.x's links, store/v1names.py), and 1.3's other files are removed.
An F2-F4 container keeps its mode and is set up again by udocker 2's own fakechroot engine at its first run.
Containers that udocker 2 runs now are skipped. udocker 1.3 records none of its runs: stop its jobs first."""

import contextlib
import datetime
import json
import os
import shutil

from udocker import fs, services
from udocker.errors import UdockerError
from udocker.paths import Layout
from udocker.store import v1containers as v1

V1_FILES = ("execmode", "imagerepo.name", "PROTECT", "root.path", "ld.so.path", "ld.so.orig", "ld.lib.dirs",
            "patch.path", "patch.time", v1.BIND_ORIG, ".mountpoints", "config.json")


def migrate(containers, *, dry_run=False):
    """Convert every 1.x container of the store `containers`; returns one row per container:
    {"id", "names", "mode", "result"} with result "converted", "would convert" or "skipped: WHY"."""
    rows = []
    for container in containers.list():
        legacy = container.legacy
        if legacy is None:
            continue
        row = {"id": container.id, "names": list(legacy.names), "mode": legacy.mode}
        try:
            if legacy.patched:  # undoing 1.3's patches needs patchelf: a dry run tells when it is missing
                from udocker.engines import locate

                locate.find("patchelf", containers.layout)
            services.ensure_stopped(container, False)  # udocker 2's runs; 1.3 records none of its own
            if not dry_run:
                with fs.locked(containers.layout.lock("prepare", container.id), timeout=containers.lock_timeout,
                               what=f"container {container.id}"):
                    _convert(containers, containers.load(container.id))
            row["result"] = "would convert" if dry_run else "converted"
        except (UdockerError, OSError) as exc:
            row["result"] = "skipped: " + (exc.message if isinstance(exc, UdockerError) else str(exc))
        rows.append(row)
    return rows


def _convert(containers, container):
    legacy = container.legacy
    root = legacy.root
    if legacy.patched:
        from udocker.store import v1patches

        v1patches.undo_in_place(root, v1patches.of_container(legacy), containers.layout, "migrate it")
    v1.restore_links(root, root, legacy.root_path)
    v1.restore_bind_files(root, legacy.bind_orig)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(root, v1.BIND_TARGET.lstrip("/")))  # 1.3's mount point of them, if empty
    record = dict(container.record)
    record.update(mode=legacy.mode if legacy.mode_recorded else None, created=_now(), migrated_from="udocker 1")
    fs.atomic_write(Layout.container_record(container.dir), json.dumps(record, indent=1, sort_keys=True).encode(),
                    tmpdir=containers.layout.tmp)
    os.rename(root, Layout.container_rootfs(container.dir))
    for name in legacy.names if not containers.v1_repository else ():  # udocker 1.x's repository: its names stay
        containers.add_name(containers.load(container.id), name, force=True)  # 1.x's links (store/v1names.py)
        v1.remove_v1_name(containers.layout.containers, name)
    for entry in V1_FILES + (os.path.basename(Layout.legacy_overlay(container.dir)),):
        path = os.path.join(container.dir, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
