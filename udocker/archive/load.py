"""`load`: images from a docker-archive (`docker save`) or an OCI image layout tarball into the store.

Everything is checked before any name is registered: the archive's structure, every member it names,
every digest (configs, manifests, layers as stored) and every layer's diff_id. A failure leaves the
image names as they were; blobs stored before it are unreferenced and go at the next garbage collection.

Layers of a docker-archive are uncompressed tars whose sha256 is their diff_id: they are stored as they
are, as `application/vnd.oci.image.layer.v1.tar` blobs whose digest is the diff_id. This makes a load
one hashing pass (no compression, which is 20-50 times slower than hashing), `save` writes them back
without decompressing, unpacking needs no decompression, and the same layer loaded twice is stored once.
The cost is disk space. Compressed layers (containerd's `docker save`) are stored as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from udocker import fs
from udocker.archive import streams
from udocker.archive.reader import Archive
from udocker.errors import DigestMismatch, UdockerError, UsageError
from udocker.oci import digest as digests
from udocker.oci import mediatypes
from udocker.oci.descriptor import Descriptor
from udocker.oci.manifest import (
    load_json,
    media_type_of,
    parse_index,
    parse_manifest,
    select,
)
from udocker.oci.platform import Platform, host
from udocker.reference import Reference, parse

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
_BLOB_NAME = re.compile(r"^(?:blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json)$")


@dataclass(frozen=True)
class Loaded:
    """One name given to a loaded image, the manifest it names and the image ID (config digest)."""

    ref: Reference
    manifest: Descriptor
    image_id: str


@dataclass
class _Image:
    """An image found in the archive, checked but not yet stored. `names` are full references; `tags`
    are bare tags with no repository (an OCI ref.name such as umoci writes)."""

    names: list[Reference]
    tags: list[str]
    key: str  # config or manifest digest: identifies the image for messages and de-duplication
    docker: tuple[str, bytes, Sequence[str], Sequence[str]] | None = None  # config, bytes, layers, diff_ids
    manifest: tuple[Descriptor, bytes] | None = None  # OCI: the manifest's descriptor and bytes


def load(repo, source: str | IO[bytes], *, label: str, name: str | None = None,
         platform: Platform | None = None) -> list[Loaded]:
    """Load every image of the archive at path `source` (or read from the stream `source`), compressed
    or not; `label` names it in messages. `name` (REPO[:TAG]) names an archive of one image instead of
    the names inside. `platform` picks from a multi-platform OCI index (default: this host's).
    Raises UdockerError (DigestMismatch, UsageError) and registers nothing."""
    with _opened(repo, source, label) as archive, repo.gc_guard():
        images = _find_images(archive, platform)
        _apply_name(images, name, label)
        stored = [(image, _store(repo, archive, image)) for image in images]
        loaded = []
        for image, (manifest, image_id) in stored:
            for ref in image.names:
                repo.images.tag(str(ref), manifest)
                loaded.append(Loaded(ref, manifest, image_id))
        return loaded


@contextlib.contextmanager
def _opened(repo, source: str | IO[bytes], label: str) -> Iterator[Archive]:
    """An Archive on a seekable uncompressed tar: the file itself, or a copy in the repository's
    scratch space when it is compressed or a pipe (tar needs random access to follow manifest.json)."""
    if isinstance(source, str):
        try:
            with open(source, "rb") as stream:
                kind = streams.sniff(stream.read(streams.HEAD))
        except OSError as exc:
            raise UdockerError(f"cannot read {label}: {exc.strerror}") from None
        if kind is streams.Compression.NONE:
            with contextlib.closing(Archive(source, label)) as archive:
                yield archive
            return
    with fs.scratch_dir(fs.ensure_dir(repo.layout.scratch), prefix="load-") as scratch:
        path = os.path.join(scratch, "archive.tar")
        with open(path, "wb") as target:
            if isinstance(source, str):
                with open(source, "rb") as stream:
                    streams.spool(stream, target, label)
            else:
                streams.spool(source, target, label)
        with contextlib.closing(Archive(path, label)) as archive:
            yield archive


def _find_images(archive: Archive, platform: Platform | None) -> list[_Image]:
    if archive.has("manifest.json"):
        images = _docker_images(archive)
    elif archive.has("index.json"):
        images = _oci_images(archive, platform)
    elif archive.has("repositories"):
        raise UdockerError(f"docker-archive without manifest.json is not supported: {archive.name}",
                           hint="it was saved by docker older than 1.10; save it again with a newer one")
    else:
        raise UdockerError(f"not an image archive: {archive.name} has no manifest.json or index.json")
    if not images:
        raise UdockerError(f"no images in {archive.name}")
    return images


def _docker_images(archive: Archive) -> list[_Image]:
    """The entries of a docker-archive's manifest.json, each with its config checked."""
    try:
        entries = json.loads(archive.read_bytes("manifest.json"))
    except ValueError:
        raise UdockerError(f"malformed JSON in manifest.json in {archive.name}") from None
    if not isinstance(entries, list):
        raise UdockerError(f"malformed manifest.json in {archive.name}: not a list")
    repositories = _repositories(archive)
    images = []
    for number, entry in enumerate(entries, 1):
        what = f"entry {number} of manifest.json in {archive.name}"
        config, layers, tags = (entry.get(k) if isinstance(entry, dict) else None
                                for k in ("Config", "Layers", "RepoTags"))
        if not isinstance(config, str) or not isinstance(layers, list) \
                or not all(isinstance(layer, str) for layer in layers) \
                or not isinstance(tags or [], list) or not all(isinstance(tag, str) for tag in tags or []):
            raise UdockerError(f"malformed {what}")
        data = archive.read_bytes(config)
        digest = digests.of(data)
        named = _BLOB_NAME.match(config)
        if named and "sha256:" + (named.group(1) or named.group(2)) != digest:
            raise DigestMismatch(f"config {config} in {archive.name} does not match its name: got {digest}")
        diff_ids = ((load_json(data, f"config {config} in {archive.name}").get("rootfs") or {}).get("diff_ids"))
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers) \
                or not all(digests.is_valid(d) for d in diff_ids):
            raise UdockerError(f"config {config} in {archive.name} does not list one diff_id per layer")
        for layer in layers:
            archive.size(layer)  # raises if missing, not a file, or an unsafe link
        if not tags and layers:
            top = layers[-1].split("/")[0]
            tags = [f"{repo}:{tag}" for repo, by_tag in repositories.items() for tag, id_ in by_tag.items()
                    if id_ == top]
        images.append(_Image(names=[_name(tag, what) for tag in tags or []], tags=[], key=digest,
                             docker=(config, data, layers, diff_ids)))
    return images


def _repositories(archive: Archive) -> dict[str, dict[str, str]]:
    """The legacy `repositories` file (repository -> tag -> top layer id), used only for entries of
    manifest.json without RepoTags."""
    if not archive.has("repositories"):
        return {}
    value = load_json(archive.read_bytes("repositories"), f"repositories in {archive.name}")
    return {repo: tags for repo, tags in value.items() if isinstance(tags, dict)}


def _name(text: str, what: str) -> Reference:
    try:
        return parse(text)
    except UdockerError as exc:
        raise UdockerError(f"{exc.message} (in {what})") from None


def _oci_images(archive: Archive, platform: Platform | None) -> list[_Image]:
    """The manifests that index.json of an OCI image layout names, choosing a platform in nested indexes."""
    layout = archive.read_json("oci-layout") if archive.has("oci-layout") else {}
    if layout.get("imageLayoutVersion") != "1.0.0":
        raise UdockerError(f"not an OCI image layout: {archive.name} (oci-layout missing or unknown version)")
    by_digest: dict[str, _Image] = {}
    for entry in parse_index(archive.read_json("index.json"), f"index.json in {archive.name}"):
        descriptor, data = _pick_manifest(archive, entry, platform)
        image = by_digest.setdefault(descriptor.digest, _Image([], [], descriptor.digest,
                                                               manifest=(descriptor, data)))
        what = f"index.json in {archive.name}"
        full = entry.annotations.get(CONTAINERD_NAME)
        ref_name = entry.annotations.get(REF_NAME)
        if full:
            image.names.append(_name(full, what))
        elif ref_name and ("/" in ref_name or ":" in ref_name):
            image.names.append(_name(ref_name, what))
        if ref_name and "/" not in ref_name and ":" not in ref_name:
            image.tags.append(ref_name)
    return list(by_digest.values())


def _pick_manifest(archive: Archive, entry: Descriptor, platform: Platform | None):
    """The image manifest an index.json entry leads to (through nested indexes), with its bytes checked."""
    for _ in range(4):
        data = _blob(archive, entry)
        value = load_json(data, f"blob {entry.digest} in {archive.name}")
        media_type = media_type_of(value, entry.media_type)
        if media_type in mediatypes.MANIFESTS:
            manifest = parse_manifest(value, f"{entry.digest} in {archive.name}")
            for descriptor in (manifest.config,) + manifest.layers:
                if _blob_size(archive, descriptor) != descriptor.size:
                    raise DigestMismatch(f"blob {descriptor.digest} in {archive.name} is not "
                                         f"{descriptor.size} bytes as its manifest says")
            return Descriptor(media_type, entry.digest, entry.size), data
        if media_type not in mediatypes.INDEXES:
            raise UdockerError(f"unsupported manifest type in {archive.name}: {media_type or 'none'}")
        entries = parse_index(value, f"{entry.digest} in {archive.name}")
        entry = select(entries, platform or host(), archive.name)
    raise UdockerError(f"image indexes nested too deeply in {archive.name}")


def _blob_member(descriptor: Descriptor) -> str:
    algorithm, _, hexdigest = descriptor.digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _blob_size(archive: Archive, descriptor: Descriptor) -> int:
    return archive.size(_blob_member(descriptor))


def _blob(archive: Archive, descriptor: Descriptor) -> bytes:
    data = archive.read_bytes(_blob_member(descriptor))
    digests.check(data, descriptor.digest, f"blob {descriptor.digest} in {archive.name}")
    return data


def _apply_name(images: list[_Image], name: str | None, label: str) -> None:
    """Give every image its final names; raise before anything is stored when one would have none."""
    if name:
        if len(images) > 1:
            raise UsageError(f"{label} holds {len(images)} images: a name can be given to one only",
                             hint="load it without a name, then use 'udocker tag'")
        given = parse(name)
        image = images[0]
        if _has_tag(name):
            image.names = [given]
        else:
            tags = [ref.tag for ref in image.names if ref.tag] + image.tags
            image.names = [given.with_tag(tag) for tag in dict.fromkeys(tags or ["latest"])]
        return
    for image in images:
        if image.tags and not image.names:
            raise UsageError(f"image {image.key} in {label} is named only by tag {image.tags[0]!r}",
                             hint=f"name it: udocker load -i FILE REPO (keeps the tag {image.tags[0]})")
        if not image.names:
            raise UsageError(f"image {image.key} in {label} has no name",
                             hint="give one: udocker load -i FILE REPO[:TAG]")
        image.names = list(dict.fromkeys(image.names))


def _has_tag(text: str) -> bool:
    return ":" in text.split("@")[0].rsplit("/", 1)[-1]


def _store(repo, archive: Archive, image: _Image) -> tuple[Descriptor, str]:
    """Store the image's blobs; returns its manifest descriptor and image ID."""
    if image.manifest:
        descriptor, data = image.manifest
        manifest = parse_manifest(json.loads(data), descriptor.digest)
        for blob in (manifest.config,) + manifest.layers:
            _copy_blob(repo, archive, blob)
        repo.blobs.put(data, descriptor)
        return descriptor, manifest.config.digest
    _config, config_data, layers, diff_ids = image.docker
    descriptors = []
    for layer, diff_id in zip(layers, diff_ids):
        opener = _opener(archive, layer)
        descriptor, _ = streams.store_layer(repo.blobs, opener, what=f"{layer} in {archive.name}",
                                            diff_id=diff_id)
        descriptors.append(descriptor)
    config_descriptor = Descriptor(mediatypes.OCI_CONFIG, digests.of(config_data), len(config_data))
    repo.blobs.put(config_data, config_descriptor)
    manifest = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": config_descriptor.to_json(),
                "layers": [d.to_json() for d in descriptors]}
    data = json.dumps(manifest, separators=(",", ":")).encode()
    descriptor = Descriptor(mediatypes.OCI_MANIFEST, digests.of(data), len(data))
    repo.blobs.put(data, descriptor)
    return descriptor, config_descriptor.digest


def _opener(archive: Archive, member: str):
    return lambda: archive.open(member)


def _copy_blob(repo, archive: Archive, descriptor: Descriptor) -> None:
    """Stream one blob of an OCI layout into the store, verified against its descriptor."""
    with repo.blobs.ingest(descriptor) as sink:
        if not sink.present:
            with archive.open(_blob_member(descriptor)) as stream:
                streams.copy(stream, sink.write, f"blob {descriptor.digest} in {archive.name}")
