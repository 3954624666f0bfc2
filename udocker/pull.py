"""Pull an image: manifest (platform chosen from an index) -> config and layers downloaded concurrently,
each streamed through its digest check into the blob store -> tag. See docs/architecture.md, 'Data flow'."""

from __future__ import annotations

import threading

from udocker import log
from udocker.errors import NotFound, UdockerError
from udocker.oci import mediatypes
from udocker.oci.descriptor import Descriptor
from udocker.oci.manifest import load_json, media_type_of, parse_index, parse_manifest, select
from udocker.oci.platform import Platform
from udocker.record import Record

TYPE_CHECKING = False  # typing (and dataclasses) are not loaded on a cached pull's path (record.py)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Callable

    from udocker.reference import Reference


class Progress:
    """What a pull reports (the methods an object passed as `progress` has); called from several threads."""

    def blob_started(self, descriptor: Descriptor, *, present: bool) -> None: ...

    def blob_advanced(self, descriptor: Descriptor, nbytes: int) -> None: ...

    def blob_finished(self, descriptor: Descriptor) -> None: ...


class _Silent:
    def blob_started(self, descriptor, *, present):
        pass

    def blob_advanced(self, descriptor, nbytes):
        pass

    def blob_finished(self, descriptor):
        pass


class PullResult(Record):
    """ref, digest, platform (a dict or None), downloaded (blobs fetched by this pull), present (blobs already
    in the store)."""

    __slots__ = FIELDS = ("ref", "digest", "platform", "downloaded", "present")


class _Cancelled(Exception):
    """Raised inside a download's progress callback once another download has failed."""


def pull(repo, client, ref: Reference, *, platform: Platform, concurrency: int,
         progress: Progress | None = None, unpack: bool = False) -> PullResult:
    """Download `ref` into `repo` and tag it as str(ref). Raises UdockerError subclasses; on any error
    no name is added or changed, and only verified blobs are left in the store.

    With `unpack` (a run or create that pulls), the image's unpacked tree is built while the layers
    download (store/overlap.py) and published, before the tag, once every blob is verified; `progress`
    then also hears of each layer's extraction (layer_started, layer_advanced, layer_finished)."""
    unpack_progress = progress if unpack else None
    progress = progress or _Silent()
    with repo.gc_guard():
        response = client.get_manifest(ref)
        data = load_json(response.data, str(ref))
        media_type = media_type_of(data, response.media_type)
        index_digest, chosen_platform = None, None
        if media_type in mediatypes.INDEXES:
            chosen = select(parse_index(data, str(ref)), platform, str(ref))
            repo.blobs.put(response.data, Descriptor(media_type, response.digest, len(response.data)))
            index_digest, chosen_platform = response.digest, chosen.platform
            response = client.get_manifest_by_digest(ref, chosen.digest)
            data = load_json(response.data, f"{ref} ({platform})")
            media_type = media_type_of(data, response.media_type)
        if media_type in mediatypes.SCHEMA1:
            raise UdockerError(f"unsupported manifest (docker schema 1): {ref}",
                               hint="push the image again with a current docker or skopeo")
        if media_type not in mediatypes.MANIFESTS:
            raise UdockerError(f"unsupported manifest media type {media_type!r}: {ref}")
        manifest = parse_manifest(data, str(ref))
        counts = _download(repo, client, ref, [manifest.config], concurrency=1, progress=progress)
        config = load_json(repo.blobs.read(manifest.config.digest), f"config of {ref}")
        if chosen_platform is None:
            chosen_platform = _check_platform(config, platform, ref)
        layer_counts = _layers(repo, client, ref, manifest, response.digest, concurrency=concurrency,
                               progress=progress, unpack=unpack, unpack_progress=unpack_progress)
        descriptor = Descriptor(media_type, response.digest, len(response.data), chosen_platform)
        repo.blobs.put(response.data, descriptor)
        repo.images.tag(str(ref), descriptor, index_digest=index_digest)
    return PullResult(str(ref), response.digest, chosen_platform, counts[0] + layer_counts[0],
                      counts[1] + layer_counts[1])


def _check_platform(config: dict, platform: Platform, ref: Reference) -> dict[str, str]:
    """A single-platform image must be for the requested platform: no silent fallback."""
    theirs = {k: config[k] for k in ("os", "architecture", "variant") if config.get(k)}
    if theirs and not platform.matches(theirs):
        found = "/".join(theirs.get(k, "?") for k in ("os", "architecture"))
        raise NotFound(f"image {ref} is for {found}, not {platform}",
                       hint=f"pull it with --platform={found} to run it under emulation")
    return theirs or platform.to_json()


def _layers(repo, client, ref, manifest, digest, *, concurrency, progress, unpack, unpack_progress) -> list[int]:
    """Download the layers; with `unpack`, unpack them meanwhile and publish the tree once all are verified."""
    if not unpack:
        return _download(repo, client, ref, manifest.layers, concurrency=concurrency, progress=progress)
    from udocker.store.overlap import Overlap

    overlap = Overlap(repo, digest, manifest, progress=unpack_progress,
                      on_notice=lambda notice: log.get("create").debug("%s", notice))
    overlap.start()
    try:
        counts = _download(repo, client, ref, manifest.layers, concurrency=concurrency, progress=progress,
                           offer=overlap.offer)
    except BaseException:
        overlap.abort()
        raise
    overlap.finish()
    return counts


def _download(repo, client, ref: Reference, descriptors: Sequence[Descriptor], *, concurrency: int,
              progress: Progress, offer: Callable | None = None) -> list[int]:
    """Fetch the blobs not yet stored, `concurrency` at a time; returns [downloaded, present]. `offer`
    hears of each blob as its download begins (with its Sink; None when it is in the store already).
    The first failure cancels the other transfers and is raised."""
    offer = offer or (lambda descriptor, sink: None)
    unique = list({d.digest: d for d in descriptors}.values())
    if all(repo.blobs.has(d.digest) for d in unique):  # an unchanged image pulled again: no threads
        for descriptor in unique:
            offer(descriptor, None)
            progress.blob_started(descriptor, present=True)
        return [0, len(unique)]
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait  # and logging, threads: ~5 ms
    cancel = threading.Event()
    counts = [0, 0]
    lock = threading.Lock()

    def fetch(descriptor: Descriptor) -> None:
        if repo.blobs.has(descriptor.digest):
            offer(descriptor, None)
            progress.blob_started(descriptor, present=True)
            with lock:
                counts[1] += 1
            return
        with repo.blobs.ingest(descriptor) as sink:
            offer(descriptor, None if sink.present else sink)
            progress.blob_started(descriptor, present=sink.present)
            if not sink.present:
                client.fetch_blob(ref, descriptor, sink, progress=_advance(descriptor, progress, cancel))
        progress.blob_finished(descriptor)
        with lock:
            counts[0 if not sink.present else 1] += 1

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="pull") as pool:
        futures = [pool.submit(fetch, d) for d in unique]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            cancel.set()
            for future in futures:
                future.cancel()
            wait(futures)
            errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
            raise next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])
    return counts


def _advance(descriptor: Descriptor, progress: Progress, cancel: threading.Event) -> Callable[[int], None]:
    def advance(nbytes: int) -> None:
        if cancel.is_set():
            raise _Cancelled()
        progress.blob_advanced(descriptor, nbytes)

    return advance

