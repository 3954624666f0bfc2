"""Content descriptors (OCI image-spec descriptor.md)."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from udocker.errors import UdockerError
from udocker.oci import digest as digests


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Optional[Dict[str, Any]] = None
    annotations: Dict[str, str] = field(default_factory=dict, compare=False)
    urls: tuple = ()

    @classmethod
    def from_json(cls, data: Any, what: str) -> "Descriptor":
        """Validate a descriptor object; raises UdockerError naming `what` when it is malformed."""
        if not isinstance(data, dict):
            raise UdockerError(f"malformed descriptor in {what}")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not digests.is_valid(digest) or not isinstance(size, int) or size < 0 or isinstance(size, bool):
            raise UdockerError(f"malformed descriptor in {what}: {digest!r}")
        return cls(str(media_type or ""), digest, size, data.get("platform"),
                   dict(data.get("annotations") or {}), tuple(data.get("urls") or ()))

    def to_json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
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
