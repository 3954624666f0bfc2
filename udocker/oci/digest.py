"""Content digests (OCI image-spec, descriptor.md "Digests"): only sha256 is produced and accepted."""

import hashlib
import re

from udocker.errors import DigestMismatch

_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_valid(digest: str) -> bool:
    return bool(_SHA256.match(digest or ""))


def of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    """The hexadecimal sha256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check(data: bytes, digest: str, what: str) -> None:
    """Raise DigestMismatch unless `data` hashes to `digest`."""
    actual = of(data)
    if actual != digest:
        raise DigestMismatch(f"digest mismatch for {what}: expected {digest}, got {actual}")
