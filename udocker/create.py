"""Create containers from images (sharing the image's unpacked files) or from flat tarballs."""

import datetime
import io
import json
import logging
import os
import tarfile

from udocker import fs
from udocker.errors import UdockerError
from udocker.store import rootfs as rootfs_store
from udocker.store.containers import check_name
from udocker.unpack import apply_layer

LOG = logging.getLogger("udocker.create")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def create(repo, containers, image_text, *, name=None, force=False, share=True, mode=None, progress=None):
    """Create a container of the local image `image_text`; returns the Container.

    The image's layers are applied once into a shared read-only tree (store/rootfs.py); the container's
    rootfs links to it. Raises NotFound for an unknown image, UnpackError for a bad layer. `progress`
    (layer_started, layer_advanced, layer_finished with each layer's Descriptor) hears of the unpacking."""
    if name is not None:
        check_name(name)  # before the image is unpacked: a bad name fails at once
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
    """A new container with a copy of `source`'s rootfs (shared image files stay shared) and record."""
    record = {k: v for k, v in source.record.items() if k not in ("id", "protected")}
    record["created"] = _now()
    record["cloned_from"] = source.id
    record["prepared"] = None  # engine state is per container: the clone prepares again
    rootfs_store.check_free_space(containers.layout.containers, rootfs_store.private_size(source.rootfs),
                                  "the clone's private files")
    return containers.create(record, lambda rootfs: rootfs_store.link_tree(source.rootfs, rootfs, share=True,
                                                                             keep_shared_only=True),
                             name=name)


def export(container, stream, *, with_record=False):
    """Write the container's rootfs as a flat tarball to `stream` (binary, not seekable is fine); with
    `with_record` (export --clone), as rootfs/... plus container.json, for import --clone."""
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        if with_record:
            data = json.dumps(container.record, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo("container.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        archive.add(container.rootfs, arcname="rootfs" if with_record else ".", recursive=True)


def import_tarball(containers, path, *, name=None, clone_record=False):
    """A new container from a flat rootfs tarball (import --tocontainer), or from a tarball written by
    export --clone (import --clone: its container.json is kept). Members are applied with the same
    safety rules as image layers."""
    record = {"image": None, "manifest": None, "config": {}, "created": _now(), "mode": None, "shared": False,
              "imported_from": os.path.basename(path)}
    if clone_record:
        try:
            with tarfile.open(path) as archive:
                member = archive.extractfile("container.json")
                old = json.loads(member.read()) if member else None
        except (OSError, KeyError, ValueError, tarfile.TarError):
            old = None
        if not isinstance(old, dict):
            raise UdockerError(f"not a container clone archive: {path}", hint="make one with 'udocker export --clone'")
        record.update({k: v for k, v in old.items() if k not in ("id", "protected", "prepared", "shared")})

    def populate(rootfs):
        if not clone_record:
            with open(path, "rb") as stream:
                apply_layer(rootfs, stream, "application/vnd.oci.image.layer.v1.tar", name=os.path.basename(path))
            return
        with fs.scratch_dir(containers.layout.tmp, prefix="import-") as scratch:
            with open(path, "rb") as stream:
                apply_layer(scratch, stream, "application/vnd.oci.image.layer.v1.tar", name=os.path.basename(path))
            inner = os.path.join(scratch, "rootfs")
            if not os.path.isdir(inner):
                raise UdockerError(f"not a container clone archive: {path}")
            os.rmdir(rootfs)
            os.rename(inner, rootfs)

    return containers.create(record, populate, name=name)
