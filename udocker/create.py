"""Create containers from images (sharing the image's unpacked files) or from flat tarballs."""

import datetime
import json
import os
import tarfile

from udocker import fs, log
from udocker.errors import UdockerError
from udocker.store import rootfs as rootfs_store
from udocker.store.containers import check_name
from udocker.unpack import apply_layer

LOG = log.get("create")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def create(repo, containers, image_text, *, name=None, force=False, share=True, mode=None, progress=None):
    """Create a container of the local image `image_text`; returns the Container.

    The image's layers are applied once into a shared read-only tree (store/rootfs.py); the container's
    rootfs links to it. Raises NotFound for an unknown image, UnpackError for a bad layer. `progress`
    (layer_started, layer_advanced, layer_finished with each layer's Descriptor) hears of the unpacking."""
    if name is not None:
        check_name(name)  # before the image is unpacked: a bad name fails at once
    if not os.access(repo.layout.containers, os.W_OK | os.X_OK):  # likewise: unpacking GBs to fail after it
        import errno

        raise fs.store_error("write", repo.layout.containers, OSError(errno.EACCES, os.strerror(errno.EACCES)))
    with repo.gc_guard():  # rmi waits for it, so nothing it reads is removed under it
        image = repo.images.find(image_text)
        manifest, config = repo.images.details(image, repo.blobs)
        unpacked = rootfs_store.ensure_unpacked(repo, manifest, image.descriptor.digest,
                                                on_notice=lambda notice: LOG.debug("%s", notice), progress=progress)
        rootfs_store.check_free_space(repo.layout.containers, rootfs_store.copy_size(unpacked, share=share),
                                      "the container's private files")
        record = {"image": image.ref, "manifest": image.descriptor.digest, "image_id": manifest.config.digest,
                  "config": config.get("config") or {}, "created": _now(), "mode": mode,
                  "platform": {k: config[k] for k in ("os", "architecture", "variant") if config.get(k)},
                  "shared": share}
        return containers.create(record, lambda rootfs: rootfs_store.link_tree(unpacked, rootfs, share=share),
                                 name=name, force=force)


def clone(containers, source, *, name=None):
    """A new container with a copy of `source`'s rootfs (shared image files stay shared) and record. A udocker
    1.x source is copied as udocker 2's: its F-mode links and R-mode files put back, 1.3's F2-F4 patches undone
    (store/v1patches.py) so that the clone sets its mode up again in udocker 2's own way."""
    legacy = source.legacy
    record = {k: v for k, v in source.record.items() if k not in ("id", "protected", "nvidia")}
    record["created"] = _now()
    record["cloned_from"] = source.id
    record["prepared"] = None  # engine state is per container: the clone prepares again
    rootfs_store.check_free_space(containers.layout.containers, rootfs_store.private_size(source.rootfs),
                                  "the clone's private files")

    def populate(rootfs):
        rootfs_store.link_tree(source.rootfs, rootfs, share=True, keep_shared_only=True)
        if legacy is not None:  # udocker 1.3's F modes made absolute links host paths into its ROOT
            from udocker.store import v1containers as v1
            from udocker.store import v1patches

            v1.restore_links(rootfs, legacy.root, legacy.root_path)
            v1.restore_bind_files(rootfs, legacy.bind_orig)
            if legacy.patched:
                v1patches.undo_in_place(rootfs, v1patches.of_container(legacy), containers.layout, "clone it")

    return containers.create(record, populate, name=name)


def export(container, stream, *, with_record=False, layout=None):
    """Write the container's rootfs as a flat tarball to `stream` (binary, not seekable is fine); with
    `with_record` (export --clone), as a clone archive that udocker 1.3 and 2 import (archive/clone.py).
    Programs that F3/F4 patched for this container are written as they were before the patch, those of a
    udocker 1.3 F2-F4 container too (unpatched copies made under `layout`'s tmp/, store/v1patches.py)."""
    legacy = container.legacy
    if legacy is None or not legacy.patched:
        _export(container, stream, with_record, _originals(container))
        return
    from udocker.store import v1patches

    with fs.scratch_dir(layout.tmp, prefix="export-") as scratch:
        originals = v1patches.unpatched_copies(legacy.root, v1patches.of_container(legacy), scratch, layout)
        _export(container, stream, with_record, originals)


def _export(container, stream, with_record, originals):
    from udocker.archive import clone as clone_archive

    links = _legacy_links(container)
    if with_record:
        clone_archive.write(container, stream, originals, member_filter=links)
        return
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        clone_archive.add_tree(archive, container.rootfs, ".", originals, member_filter=links)


def _legacy_links(container):
    """For a udocker 1.x container, a tarfile filter that turns the host-path links its F modes left back into
    the container paths they stand for (store/v1containers.py); None for others."""
    legacy = container.legacy
    if legacy is None:
        return None
    from udocker.store import v1containers as v1

    def restore(member):
        if member.issym():
            inner = v1.host_link_target(legacy.root, member.linkname, legacy.root_path)
            member.linkname = inner if inner is not None else member.linkname
        return member

    return restore


def _originals(container):
    """{relative path: the original file} for the files of the rootfs that F3/F4 replaced by patched copies
    (engine/fakechroot/patched.json names them with the patched copy's inode; orig/ keeps the originals)."""
    state = container.engine_dir("fakechroot")
    try:
        with open(os.path.join(state, "patched.json"), encoding="utf-8") as stream:
            patched = json.load(stream)
    except (OSError, ValueError):
        return {}
    originals = {}
    for rel, inode in (patched.items() if isinstance(patched, dict) else ()):
        original = os.path.join(state, "orig", rel)
        try:
            if os.lstat(os.path.join(container.rootfs, rel)).st_ino == inode and os.path.isfile(original):
                originals[os.path.normpath(rel)] = original
        except OSError:
            continue
    return originals


def import_tarball(containers, path, *, name=None, clone_record=False):
    """A new container from a flat rootfs tarball (import --tocontainer), or from a clone archive written by
    export --clone of udocker 1.3 or 2 (import --clone: its record and mode are kept). Members are applied
    with the same safety rules as image layers; a clone archive is checked whole before anything is written."""
    record = {"image": None, "manifest": None, "config": {}, "created": _now(), "mode": None, "shared": False,
              "imported_from": os.path.basename(path)}
    if not clone_record:
        def populate(rootfs):
            with open(path, "rb") as stream:
                apply_layer(rootfs, stream, "application/vnd.oci.image.layer.v1.tar", name=os.path.basename(path))

        return containers.create(record, populate, name=name)

    from udocker.archive import clone as clone_archive

    found = clone_archive.scan(path)
    record.update(found.record)
    record.update(created=_now(), shared=False, imported_from=os.path.basename(path))

    def populate_clone(rootfs):
        with fs.scratch_dir(containers.layout.tmp, prefix="import-") as scratch:
            with open(path, "rb") as stream:
                apply_layer(scratch, stream, "application/vnd.oci.image.layer.v1.tar", name=os.path.basename(path))
            inner = os.path.join(scratch, found.root)
            if os.path.islink(inner) or not os.path.isdir(inner):
                raise UdockerError(f"not a container clone archive: {path}: no {found.root}/ directory")
            os.rmdir(rootfs)
            os.rename(inner, rootfs)
            os.chmod(rootfs, 0o755)
        clone_archive.restore_links(rootfs, found.records)
        clone_archive.restore_patches(rootfs, found.records, containers.layout)

    return containers.create(record, populate_clone, name=name)
