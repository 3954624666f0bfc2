"""`import`: a flat root filesystem tarball (as `docker export` or `tar -C rootfs -c .` make it) as an
image of one layer, like `docker import`.

The tarball is stored as its layer without recompression when it is a plain or gzip tar; bzip2 and xz
(which OCI has no layer media type for) are stored uncompressed. The compression is told by magic bytes,
not by the file name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO

from udocker import fs
from udocker.archive import streams
from udocker.errors import UdockerError, UsageError
from udocker.oci import digest as digests
from udocker.oci import mediatypes
from udocker.oci.descriptor import Descriptor
from udocker.oci.platform import Platform
from udocker.reference import Reference


@dataclass(frozen=True)
class Imported:
    ref: Reference
    manifest: Descriptor
    image_id: str


def import_tarball(repo, source: str | IO[bytes], ref: Reference, *, label: str, platform: Platform,
                   message: str | None = None, move: bool = False) -> Imported:
    """Store the tarball at path `source` (or read from the stream `source`) as the one layer of a new
    image named `ref`, for `platform`. `message` becomes the history comment. With `move`, the file
    `source` is deleted after the image is tagged. Raises UdockerError (not a tar, corrupt compressed
    data, zstd) with nothing tagged."""
    if move and not isinstance(source, str):
        raise UsageError("--mv needs a file, not stdin")
    with _seekable(repo, source, label) as path, repo.gc_guard():
        opener = _opener(path, label)
        kind = streams.kind_of(opener)
        streams.check_tar(opener, kind, label)
        layer, diff_id = streams.store_layer(repo.blobs, opener, what=label)
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        config = dict(platform.to_json(), created=created, config={},
                      rootfs={"type": "layers", "diff_ids": [diff_id]},
                      history=[{"created": created, "comment": message or f"Imported from {label}"}])
        config_data = json.dumps(config, separators=(",", ":")).encode()
        config_descriptor = Descriptor(mediatypes.OCI_CONFIG, digests.of(config_data), len(config_data))
        repo.blobs.put(config_data, config_descriptor)
        manifest = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                    "config": config_descriptor.to_json(), "layers": [layer.to_json()]}
        data = json.dumps(manifest, separators=(",", ":")).encode()
        descriptor = Descriptor(mediatypes.OCI_MANIFEST, digests.of(data), len(data))
        repo.blobs.put(data, descriptor)
        repo.images.tag(str(ref), descriptor)
    if move:
        try:
            os.unlink(source)
        except OSError as exc:
            raise UdockerError(f"imported, but cannot remove {label}: {exc.strerror}") from None
    return Imported(ref, descriptor, config_descriptor.digest)


@contextlib.contextmanager
def _seekable(repo, source: str | IO[bytes], label: str):
    """A path to the tarball: the file itself, or stdin copied to the repository's scratch space (the
    layer is read more than once: to hash it before storing it under its digest)."""
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise UdockerError(f"no such file: {label}")
        yield source
        return
    with fs.scratch_dir(fs.ensure_dir(repo.layout.scratch), prefix="import-") as scratch:
        path = os.path.join(scratch, "layer")
        with open(path, "wb") as target:
            shutil.copyfileobj(source, target, streams.CHUNK)
        yield path


def _opener(path: str, label: str):
    def opener():
        try:
            return open(path, "rb")
        except OSError as exc:
            raise UdockerError(f"cannot read {label}: {exc.strerror}") from None

    return opener
