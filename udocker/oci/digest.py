"""Content digests (OCI image-spec, descriptor.md "Digests"): only sha256 is produced and accepted.

Neither re nor hashlib at import: `udocker images` validates every descriptor's digest (is_valid) and checks
each manifest and config it reads (check), and hashlib's import (OpenSSL's libcrypto: ~5 ms here) is most of
what that costs for a few small JSON blobs; hashlib is imported where a blob is hashed."""

from udocker.errors import DigestMismatch

_HEX = frozenset("0123456789abcdef")
_SMALL = 1 << 20  # bytes: what of() hashes with the builtin sha256 (~0.5 GB/s, enough for a JSON document)


def is_valid(digest: str) -> bool:
    """True for `sha256:` and 64 lowercase hexadecimal digits."""
    return (isinstance(digest, str) and len(digest) == 71 and digest.startswith("sha256:")
            and _HEX.issuperset(digest[7:]))


def of(data: bytes) -> str:
    return "sha256:" + _sha256(data).hexdigest()


def _sha256(data: bytes):
    """A sha256 of `data`: for a small document (a manifest, a config) CPython's builtin implementation,
    which hashlib itself falls back to, without loading hashlib's OpenSSL; hashlib's for anything larger."""
    if len(data) < _SMALL:
        try:
            from _sha256 import sha256  # CPython <= 3.11
        except ImportError:
            try:
                from _sha2 import sha256  # CPython >= 3.12
            except ImportError:  # another implementation, or a build without the builtin hashes
                from hashlib import sha256
        return sha256(data)
    import hashlib

    return hashlib.sha256(data)


def sha256_file(path: str) -> str:
    """The hexadecimal sha256 of a file's contents, read in 1 MiB chunks."""
    import hashlib

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
