"""Image names (index.json of the OCI image layout): reference -> manifest descriptor.

Each entry of index.json's `manifests` carries the full reference in the standard annotation
`org.opencontainers.image.ref.name`, so the store stays readable by skopeo and umoci.

`udocker images` lists through this module: it imports neither dataclasses, typing nor the blob store's
writing machinery (tests/functional/test_listing_imports.py lists what the listing may load).
"""

from __future__ import annotations

from udocker import fastjson, fs
from udocker.errors import InvalidReference, NotFound, StoreError, UdockerError
from udocker.oci.descriptor import Descriptor
from udocker.oci.manifest import Manifest, load_json, parse_index, parse_manifest
from udocker.paths import Layout
from udocker.record import Record

TYPE_CHECKING = False  # typing's constant, without typing (nor collections)
if TYPE_CHECKING:
    from collections.abc import Callable

REF_NAME = "org.opencontainers.image.ref.name"
PROTECTED = "io.udocker.protected"
INDEX_DIGEST = "io.udocker.index.digest"
_REREADS = 10  # of a malformed index.json, 50 ms apart (see ImageStore._read)
V1_TAG = "io.udocker.v1.tag"  # an image adopted from udocker 1.x: its tag directory under repos/ (store/adopt.py)


class Image(Record):
    """An image name and the descriptor of its manifest; immutable, equal when both are."""

    __slots__ = FIELDS = ("ref", "descriptor")

    @property
    def protected(self) -> bool:
        return self.descriptor.annotations.get(PROTECTED) == "true"


class ImageStore:
    """`before_list`: run once, before the first list() (the adoption of udocker 1.x's images);
    `why_missing(text)`: an error to raise instead of "image not found" (a 1.x image that was refused)."""

    def __init__(self, layout: Layout, lock_timeout: float, *, before_list: Callable[[], None] | None = None,
                 why_missing: Callable[[str], UdockerError | None] | None = None):
        self.layout = layout
        self.lock_timeout = lock_timeout
        self._before_list = before_list
        self._why_missing = why_missing

    def prepare(self) -> None:
        """Run `before_list` now if it has not run (callers that are about to take repository locks)."""
        hook, self._before_list = self._before_list, None
        if hook is not None:
            hook()

    def _read(self) -> dict:
        """index.json. A read that is not JSON is read again a few times before it is called malformed: on a
        shared file system another node's replacement can reach this node's cache half-seen (two bindfs
        mounts of one directory did it in test_shared_fs; NFS's close-to-open consistency allows the same)."""
        for _ in range(_REREADS - 1):
            try:
                return self._read_once()
            except UdockerError as exc:
                if not exc.message.startswith("malformed JSON"):
                    raise
                import time

                time.sleep(0.05)
        return self._read_once()

    def _read_once(self) -> dict:
        try:
            return load_json(fs.read_replaced(self.layout.index_json), self.layout.index_json)
        except FileNotFoundError:
            raise StoreError(f"the store index is missing: {self.layout.index_json}") from None
        except OSError as exc:
            raise fs.store_error("read", self.layout.index_json, exc) from None

    def list(self) -> list[Image]:
        self.prepare()
        images = []
        for entry in parse_index(self._read(), self.layout.index_json):
            if entry.annotations.get(REF_NAME):
                images.append(Image(entry.annotations[REF_NAME], entry))
        return sorted(images, key=lambda image: image.ref)

    def get(self, ref: str) -> Image:
        for image in self.list():
            if image.ref == ref:
                return image
        raise NotFound(f"image not found: {ref}", hint="see 'udocker images'")

    def find(self, text: str) -> Image:
        """An image by reference (any form Docker accepts) or by a prefix of its image ID or digest."""
        from udocker.reference import parse

        try:
            return self.get(str(parse(text)))
        except (InvalidReference, NotFound):
            pass  # an unreadable index.json is an error of its own, not "image not found"
        candidate = text[len("sha256:"):] if text.startswith("sha256:") else text
        if len(candidate) >= 4 and all(c in "0123456789abcdef" for c in candidate):
            found = {}
            for image in self.list():
                for digest in (image.descriptor.digest, self.config_digest(image)):
                    if digest and digest.split(":", 1)[1].startswith(candidate):
                        found[image.ref] = image
            if len(found) == 1:
                return next(iter(found.values()))
            if len(found) > 1:
                raise UdockerError(f"image id {text} is ambiguous", hint="give more digits or a name")
        refusal = self._why_missing(text) if self._why_missing else None
        if refusal is not None:
            raise refusal
        raise NotFound(f"image not found: {text}", hint="see 'udocker images' or pull it")

    def _update(self, change: Callable[[list[dict]], list[dict] | None]) -> None:
        """Read-modify-write index.json under its lock, published atomically; not written when `change`
        returns None (nothing to change)."""
        with fs.locked(self.layout.lock("store", "index"), timeout=self.lock_timeout, what="the image index"):
            index = self._read()
            manifests = change(list(index.get("manifests") or []))
            if manifests is None:
                return
            index["manifests"] = manifests
            import json  # written with indent=1, which fastjson does not do

            fs.atomic_write(self.layout.index_json, json.dumps(index, indent=1).encode(),
                            tmpdir=self.layout.tmp)

    def tag(self, ref: str, descriptor: Descriptor, *, index_digest: str | None = None) -> None:
        """Point `ref` at `descriptor` (replacing what it named); keeps the protected mark of `ref`."""
        def change(entries):
            kept, protected = [], None
            for entry in entries:
                notes = entry.get("annotations") or {}
                if notes.get(REF_NAME) == ref:
                    protected = notes.get(PROTECTED)
                else:
                    kept.append(entry)
            notes = {k: v for k, v in descriptor.annotations.items() if k not in (PROTECTED, INDEX_DIGEST)}
            notes[REF_NAME] = ref
            if protected:
                notes[PROTECTED] = protected
            if index_digest:
                notes[INDEX_DIGEST] = index_digest
            entry = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size, descriptor.platform,
                               notes).to_json()
            if len(entries) - len(kept) == 1 and entry in entries:
                return None  # `ref` names this already (a pull of an unchanged image): index.json not rewritten
            return kept + [entry]

        self._update(change)

    def untag(self, ref: str) -> None:
        image = self.get(ref)
        if image.protected:
            raise UdockerError(f"image is protected: {ref}", hint="run 'udocker unprotect' first")
        self._update(lambda entries: [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) != ref])

    def set_protected(self, ref: str, protected: bool) -> None:
        self.get(ref)

        def change(entries):
            for entry in entries:
                notes = entry.setdefault("annotations", {})
                if notes.get(REF_NAME) == ref:
                    if protected:
                        notes[PROTECTED] = "true"
                    else:
                        notes.pop(PROTECTED, None)
            return entries

        self._update(change)

    def manifest(self, image: Image, blobs) -> Manifest:
        return parse_manifest(load_json(blobs.read(image.descriptor.digest), image.ref), image.ref)

    def config(self, image: Image, blobs) -> dict:
        return load_json(blobs.read(self.manifest(image, blobs).config.digest), f"config of {image.ref}")

    def config_digest(self, image: Image) -> str | None:
        try:
            with open(self.layout.blob(image.descriptor.digest), "rb") as stream:
                return fastjson.loads(stream.read())["config"]["digest"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def details(self, image: Image, blobs) -> tuple[Manifest, dict]:
        """The image's manifest and configuration; StoreError naming the image when either is broken."""
        try:
            manifest = self.manifest(image, blobs)
            return manifest, self.config(image, blobs)
        except UdockerError as exc:
            raise broken(image, exc) from None

    def referenced_blobs(self, blobs) -> set[str]:
        """Every digest an image needs: its manifest, config and layers, and the index it came from.
        Fails closed: an image whose manifest cannot be read raises StoreError naming it (its layers are
        unknown, so no blob may be called unused)."""
        keep: set[str] = set()
        for image in self.list():
            keep.add(image.descriptor.digest)
            if image.descriptor.annotations.get(INDEX_DIGEST):
                keep.add(image.descriptor.annotations[INDEX_DIGEST])
            try:
                manifest = self.manifest(image, blobs)
            except UdockerError as exc:
                error = broken(image, exc)
                raise StoreError(f"garbage collection stopped: {error.message}", hint=error.hint) from None
            keep.add(manifest.config.digest)
            keep.update(layer.digest for layer in manifest.layers)
        return keep


def broken(image: Image, exc: UdockerError) -> StoreError:
    """The StoreError for an image record that cannot be read: 'image REF is broken: WHY'."""
    return StoreError(f"image {image.ref} is broken: {exc.message}",
                      hint=f"remove it with 'udocker rmi {image.ref}' and pull it again")
