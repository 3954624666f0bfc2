"""Byte streams of archives and layers: compression told by magic bytes, decompression, hashing while
reading, and layers streamed into the blob store with their diff_id checked."""

from __future__ import annotations

import bz2
import contextlib
import enum
import gzip
import hashlib
import lzma
import shutil
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from udocker.errors import DigestMismatch, UdockerError
from udocker.oci import mediatypes
from udocker.oci.descriptor import Descriptor

CHUNK = 1 << 20
Opener = Callable[[], contextlib.AbstractContextManager[IO[bytes]]]


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"


_MAGIC = ((b"\x1f\x8b", Compression.GZIP), (b"BZh", Compression.BZIP2),
          (b"\xfd7zXZ\x00", Compression.XZ), (b"\x28\xb5\x2f\xfd", Compression.ZSTD))
HEAD = 6  # bytes enough to tell every magic above
_CORRUPT = (OSError, EOFError, lzma.LZMAError, zlib.error)


def sniff(head: bytes) -> Compression:
    """The compression of a stream starting with `head` (docker does the same: by content, not name)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return Compression.NONE


def decompressed(stream: IO[bytes], kind: Compression, what: str) -> IO[bytes]:
    """A reader of the uncompressed content of `stream` (concatenated streams included)."""
    if kind is Compression.NONE:
        return stream
    if kind is Compression.GZIP:
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if kind is Compression.BZIP2:
        return bz2.BZ2File(stream)
    if kind is Compression.XZ:
        return lzma.LZMAFile(stream)
    # Python has no zstd decoder before 3.14, and a layer must be decompressed to check its diff_id.
    raise UdockerError(f"zstd-compressed {what} is not supported", hint="decompress it first with 'zstd -d'")


class HashingReader:
    """Reads from `stream`, hashing and counting what passes."""

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def copy(source, write: Callable[[bytes], None], what: str) -> None:
    """Copy a (possibly decompressing) reader to `write`; corrupt compressed data -> UdockerError."""
    try:
        for chunk in iter(lambda: source.read(CHUNK), b""):
            write(chunk)
    except _CORRUPT as exc:
        raise UdockerError(f"corrupt compressed data in {what}: {exc}") from None


@dataclass(frozen=True)
class Measured:
    """Digest and size of a stream as stored, and of its uncompressed content (the diff_id)."""

    kind: Compression
    digest: str
    size: int
    diff_id: str
    diff_size: int


def measure(stream: IO[bytes], kind: Compression, what: str) -> Measured:
    """Read `stream` (compressed as `kind`) once, hashing it and its decompressed content."""
    raw = HashingReader(stream)
    if kind is Compression.NONE:
        raw.drain()
        return Measured(kind, raw.digest, raw.size, raw.digest, raw.size)
    plain = HashingReader(decompressed(raw, kind, what))
    copy(plain, lambda chunk: None, what)
    raw.drain()  # trailing zero padding after the compressed stream still belongs to the blob
    return Measured(kind, raw.digest, raw.size, plain.digest, plain.size)


def kind_of(opener: Opener) -> Compression:
    with opener() as stream:
        return sniff(stream.read(HEAD))


def store_layer(blobs, opener: Opener, *, what: str, diff_id: str | None = None) -> tuple[Descriptor, str]:
    """Stream a layer into the blob store; returns its descriptor and diff_id.

    An uncompressed or gzip layer is stored as it is; bzip2 and xz (which OCI has no media type for) are
    stored uncompressed. When `diff_id` is given the uncompressed content must hash to it, else
    DigestMismatch and nothing is stored. `opener` is called once per pass over the content.
    """
    kind = kind_of(opener)
    if kind is Compression.NONE and diff_id:
        with opener() as stream:
            size = _stream_size(stream)
        descriptor = Descriptor(mediatypes.OCI_LAYER, diff_id, size)
    else:
        with opener() as stream:
            measured = measure(stream, kind, what)
        if diff_id and measured.diff_id != diff_id:
            raise DigestMismatch(f"layer {what} does not match its diff_id: expected {diff_id}, "
                                 f"got {measured.diff_id}")
        diff_id = measured.diff_id
        if kind in (Compression.NONE, Compression.GZIP):
            media_type = mediatypes.OCI_LAYER_GZIP if kind is Compression.GZIP else mediatypes.OCI_LAYER
            descriptor = Descriptor(media_type, measured.digest, measured.size)
        else:
            descriptor = Descriptor(mediatypes.OCI_LAYER, measured.diff_id, measured.diff_size)
    try:
        with blobs.ingest(descriptor) as sink:
            if not sink.present:
                with opener() as stream:
                    stored_plain = kind in (Compression.BZIP2, Compression.XZ)
                    source = decompressed(stream, kind, what) if stored_plain else stream
                    copy(source, sink.write, what)
    except DigestMismatch:
        raise DigestMismatch(f"layer {what} does not match its diff_id {diff_id}") from None
    return descriptor, diff_id


def _stream_size(stream: IO[bytes]) -> int:
    """The size of a seekable stream, without reading it."""
    return stream.seek(0, 2)


def check_tar(opener: Opener, kind: Compression, what: str) -> None:
    """Raise UdockerError unless the (uncompressed) content starts like a tar archive."""
    with opener() as stream, contextlib.closing(decompressed(stream, kind, what)) as plain:
        try:
            # Opening reads the first header (an empty archive has none). Calling next() after that fails on
            # Python 3.9 for an empty stream ('seeking backwards is not allowed').
            with tarfile.open(fileobj=plain, mode="r|"):
                pass
        except (tarfile.TarError, *_CORRUPT) as exc:
            raise UdockerError(f"not a tar archive: {what}: {exc}") from None


def spool(source: IO[bytes], target: IO[bytes], what: str) -> None:
    """Copy a stream to a file, decompressing it if its magic bytes say it is compressed."""
    head = source.read(HEAD)
    kind = sniff(head)
    if kind is Compression.NONE:
        target.write(head)
        shutil.copyfileobj(source, target, CHUNK)
        return
    copy(decompressed(_Prepended(head, source), kind, what), target.write, what)


class _Prepended:
    """A reader giving `head` and then the rest of `stream` (what sniffing consumed of a pipe)."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._stream.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._stream.read(size)
