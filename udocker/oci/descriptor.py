"""Content descriptors (OCI image-spec descriptor.md).

A Record (record.py), not a dataclass (and no typing): `udocker images` reads index.json and each image's
manifest into descriptors, and dataclasses' import (inspect, ast, dis: ~10-20 ms) would be most of its time."""

from __future__ import annotations

from udocker.errors import UdockerError
from udocker.oci import digest as digests
from udocker.record import Record


class Descriptor(Record):
    """Immutable; equal (and hashed alike) when all but `annotations` are equal."""

    __slots__ = FIELDS = ("media_type", "digest", "size", "platform", "annotations", "urls")

    def __init__(self, media_type: str, digest: str, size: int, platform: dict | None = None,
                 annotations: dict | None = None, urls: tuple = ()):
        super().__init__(media_type, digest, size, platform, {} if annotations is None else annotations, urls)

    def _key(self) -> tuple:
        return (self.media_type, self.digest, self.size, self.platform, self.urls)

    @classmethod
    def from_json(cls, data: object, what: str) -> Descriptor:
        """Validate a descriptor object; raises UdockerError naming `what` when it is malformed."""
        if not isinstance(data, dict):
            raise UdockerError(f"malformed descriptor in {what}")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not digests.is_valid(digest) or not isinstance(size, int) or size < 0 or isinstance(size, bool):
            raise UdockerError(f"malformed descriptor in {what}: {digest!r}")
        return cls(str(media_type or ""), digest, size, data.get("platform"),
                   dict(data.get("annotations") or {}), tuple(data.get("urls") or ()))

    def to_json(self) -> dict:
        data: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            data["platform"] = self.platform
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        if self.urls:
            data["urls"] = list(self.urls)
        return data

    @property
    def short_id(self) -> str:
        return self.digest.split(":", 1)[1][:12]
