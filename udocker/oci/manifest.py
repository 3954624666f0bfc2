"""Image manifests, image indexes and image configs (OCI image-spec manifest.md, image-index.md, config.md).

Records (record.py), without dataclasses, typing or the platform module (oci/descriptor.py says why):
`udocker images` parses index.json and the manifests with this module."""

from __future__ import annotations

from udocker import fastjson
from udocker.errors import NotFound, UdockerError
from udocker.oci import mediatypes
from udocker.oci.descriptor import Descriptor
from udocker.record import Record


class Manifest(Record):
    """An image manifest: its media type, config descriptor and layer descriptors (a tuple); immutable."""

    __slots__ = FIELDS = ("media_type", "config", "layers")

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)


def load_json(data: bytes, what: str) -> dict:
    try:
        value = fastjson.loads(data)  # json itself (re, enum) is not loaded to read a manifest
    except (ValueError, UnicodeDecodeError):
        raise UdockerError(f"malformed JSON in {what}") from None
    if not isinstance(value, dict):
        raise UdockerError(f"malformed JSON in {what}: not an object")
    return value


def media_type_of(data: dict, header: str = "") -> str:
    """The manifest's own mediaType wins; else the Content-Type; else guess from the fields."""
    media_type = data.get("mediaType") or header.split(";")[0].strip()
    if media_type in mediatypes.MANIFESTS + mediatypes.INDEXES + mediatypes.SCHEMA1:
        return media_type
    if "manifests" in data:
        return mediatypes.OCI_INDEX
    if "layers" in data and "config" in data:
        return mediatypes.OCI_MANIFEST
    if data.get("schemaVersion") == 1:
        return mediatypes.DOCKER_SCHEMA1
    return media_type


def parse_manifest(data: dict, what: str) -> Manifest:
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise UdockerError(f"malformed manifest {what}: no layers")
    config = Descriptor.from_json(data.get("config"), what)
    return Manifest(data.get("mediaType") or mediatypes.OCI_MANIFEST, config,
                    tuple(Descriptor.from_json(layer, what) for layer in layers))


def parse_index(data: dict, what: str) -> list[Descriptor]:
    entries = data.get("manifests")
    if not isinstance(entries, list):
        raise UdockerError(f"malformed image index {what}")
    return [Descriptor.from_json(entry, what) for entry in entries]


def select(entries: list[Descriptor], platform, what: str) -> Descriptor:
    """The index entry for `platform` (an oci.platform.Platform); raises NotFound listing what the index
    offers (no fallback)."""
    from udocker.oci.platform import Platform

    for entry in entries:
        if entry.media_type in mediatypes.MANIFESTS + ("",) and platform.matches(entry.platform or {}):
            return entry
    offered = sorted({Platform(p.get("os", "?"), p.get("architecture", "?"), p.get("variant")).__str__()
                      for p in (e.platform or {} for e in entries) if p.get("os") != "unknown"})
    raise NotFound(f"no image for platform {platform} in {what}",
                   hint="available: " + ", ".join(offered) if offered else None)
