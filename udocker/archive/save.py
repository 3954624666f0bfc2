"""`save`: images of the store as a docker-archive, the format `docker load` and `skopeo
docker-archive:` read: manifest.json, `<config hex>.json`, `<diff_id hex>/layer.tar`, `repositories`.

Docker's loader wants every layer as an uncompressed tar whose sha256 is its diff_id, so compressed
layers are decompressed while written. A tar header states its member's size before the content, so a
compressed layer is read twice: once to learn its size and check its diff_id, once to write it. Every
member has mtime 0 and fixed owners, so saving the same images twice gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from udocker import fs
from udocker.archive import streams
from udocker.errors import DigestMismatch, UdockerError
from udocker.oci.descriptor import Descriptor
from udocker.reference import parse


@dataclass
class _Entry:
    """One image of the archive: a config (the image ID) with the tags of every name saved for it."""

    config: Descriptor
    config_data: bytes
    layers: Sequence[Descriptor]
    diff_ids: Sequence[str]
    tags: list[str] = field(default_factory=list)  # familiar names, as docker writes RepoTags


def save(repo, images: Sequence[str], output: str | IO[bytes]) -> None:
    """Write the named images (any form `find` accepts) to the file `output` (replaced atomically,
    absent after a failure) or to the writable binary stream `output`. Raises NotFound for an unknown
    image, DigestMismatch when a stored layer does not match its diff_id."""
    entries = _entries(repo, images)
    if isinstance(output, str):
        def failed(exc: OSError) -> Exception:
            return UdockerError(f"cannot write {output}: {exc.strerror or exc}")

        with fs.atomic_output(output, error=failed) as stream:
            _write(repo, entries, _Output(stream, output))
    else:
        _write(repo, entries, _Output(output, "the output"))
        _Output(output, "the output").flush()


def _entries(repo, images: Sequence[str]) -> list[_Entry]:
    by_config: dict[str, _Entry] = {}
    for text in images:
        image = repo.images.find(text)
        manifest = repo.images.manifest(image, repo.blobs)
        data = repo.blobs.read(manifest.config.digest)
        config = json.loads(data)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(manifest.layers):
            raise UdockerError(f"config of {image.ref} lists {len(diff_ids)} diff_ids for "
                               f"{len(manifest.layers)} layers")
        entry = by_config.setdefault(manifest.config.digest,
                                     _Entry(manifest.config, data, manifest.layers, diff_ids))
        ref = parse(image.ref)
        if ref.tag and not ref.digest and ref.familiar() not in entry.tags:
            entry.tags.append(ref.familiar())
    return list(by_config.values())


class _Output:
    """The archive's destination: write errors (full disk, closed pipe) become UdockerError, so that
    OSError inside tarfile can only come from reading a layer."""

    def __init__(self, stream: IO[bytes], label: str):
        self._stream = stream
        self._label = label

    def write(self, data: bytes) -> int:
        try:
            return self._stream.write(data)
        except OSError as exc:
            raise UdockerError(f"cannot write {self._label}: {exc.strerror or exc}") from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise UdockerError(f"cannot write {self._label}: {exc.strerror or exc}") from None


def _write(repo, entries: list[_Entry], stream: IO[bytes]) -> None:
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written = set()
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            names = []
            for layer, diff_id in zip(entry.layers, entry.diff_ids):
                directory = diff_id.split(":", 1)[1]
                if directory not in written:
                    _add_layer(repo, tar, layer, diff_id, directory)
                    written.add(directory)
                names.append(f"{directory}/layer.tar")
            config_name = entry.config.digest.split(":", 1)[1] + ".json"
            _add_bytes(tar, config_name, entry.config_data)
            manifest.append({"Config": config_name, "RepoTags": entry.tags or None, "Layers": names})
            for tag in entry.tags if names else []:
                name, _, tag_part = tag.rpartition(":")
                repositories.setdefault(name, {})[tag_part] = names[-1].split("/")[0]
        _add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
        _add_bytes(tar, "repositories", json.dumps(repositories, separators=(",", ":")).encode())


def _info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid = size, 0, 0, 0
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_layer(repo, tar: tarfile.TarFile, layer: Descriptor, diff_id: str, directory: str) -> None:
    """Add `<directory>/layer.tar`: the layer uncompressed, checked against its diff_id."""
    path = repo.blobs.path(layer.digest)
    what = f"layer {layer.digest}"

    def opener():
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise UdockerError(f"blob missing from the store: {layer.digest}", hint="pull the image again") from None

    kind = streams.kind_of(opener)
    if kind is streams.Compression.NONE:
        size = os.path.getsize(path)
    else:
        with opener() as stream:
            measured = streams.measure(stream, kind, what)
        if measured.diff_id != diff_id:
            raise DigestMismatch(f"{what} does not match its diff_id {diff_id}", hint="run 'udocker verify'")
        size = measured.diff_size
    tar.addfile(_info(directory, directory=True))
    with opener() as stream:
        plain = streams.HashingReader(streams.decompressed(stream, kind, what))
        try:
            tar.addfile(_info(f"{directory}/layer.tar", size), plain)
        except (OSError, EOFError) as exc:
            raise UdockerError(f"cannot read {what}: {exc}") from None
    if plain.digest != diff_id:
        raise DigestMismatch(f"{what} does not match its diff_id {diff_id}", hint="run 'udocker verify'")
