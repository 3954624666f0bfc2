"""A layer's bytes: its decompression (by magic bytes), the max_layer_size bound, and the copy of member data
into files, holes kept (see udocker/unpack/__init__.py)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from typing import BinaryIO

from udocker.errors import UnpackError
from udocker.unpack.report import short

CHUNK = 1 << 20
_ZERO_CHUNK = bytes(CHUNK)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LAYER_SUFFIXES = (".tar", "+gzip", ".gzip", "+zstd")
_LARGEST_READ = 16 << 20  # bytes: a larger read is a member header no tar writer makes (a bomb of metadata)
BAD_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def decompressed(stream: BinaryIO, media_type: str, label: str) -> BinaryIO:
    if not media_type.endswith(_LAYER_SUFFIXES):
        raise UnpackError(f"unsupported layer media type {media_type}: {short(label)}", layer=label)
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # type: ignore[arg-type]
    magic = stream.peek(4)[:4]
    if magic.startswith(_GZIP_MAGIC):
        return io.BufferedReader(Gunzip(stream), CHUNK)  # type: ignore[return-value]
    if magic == _ZSTD_MAGIC:
        try:
            from compression import zstd  # Python 3.14+; no third-party zstd dependency
        except ImportError:
            raise UnpackError(f"layer {short(label)} is compressed with zstd, which this Python cannot "
                              "decompress", hint="use Python 3.14 or newer, or an image with gzip layers",
                              layer=label) from None
        return zstd.ZstdFile(stream)  # type: ignore[no-any-return]
    return stream


class Gunzip(io.RawIOBase):
    """gzip decompression a MiB of input at a time (GzipFile inflates ~10 KB per call for tarfile's small reads,
    a third of an unpack's time); each call's output bounded (a bomb of zeros costs no memory); concatenated
    members and zero padding after the last one, as gzip allows; zlib checks each member's CRC and size."""

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self.raw, self.inflate, self.pending, self.used = raw, zlib.decompressobj(31), b"", 0
        self.started = False  # input seen for the current member

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while self.used >= len(self.pending):
            self.pending, self.used = self._inflate(), 0
            if self.pending is None:
                self.pending = b""
                return 0
        count = min(len(buffer), len(self.pending) - self.used)
        buffer[:count] = memoryview(self.pending)[self.used:self.used + count]
        self.used += count
        return count

    def _inflate(self) -> bytes | None:
        """The next piece of output (maybe empty), or None at the end of the stream."""
        inflate = self.inflate
        if inflate.eof:  # the member's trailer was checked; what follows it is in unused_data (not the tail)
            rest = inflate.unused_data.lstrip(b"\0")
            self.inflate, self.started = zlib.decompressobj(31), False
            if rest:
                self.started = True
                return self.inflate.decompress(rest, CHUNK)
        elif inflate.unconsumed_tail:
            return inflate.decompress(inflate.unconsumed_tail, CHUNK)
        data = self.raw.read(CHUNK)
        if not data:
            if self.started and not self.inflate.eof:
                flushed = self.inflate.decompress(b"", CHUNK)  # output zlib still holds
                if flushed:
                    return flushed
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            return None
        if not self.started:
            data = data.lstrip(b"\0")  # padding after a member (never at the start of one)
            if not data:
                return b""
            self.started = True
        return self.inflate.decompress(data, CHUNK)


class Counted(io.RawIOBase):
    """A layer's compressed bytes as they are read, reported to `advanced(nbytes)` about every MiB."""

    def __init__(self, raw: BinaryIO, advanced):
        super().__init__()
        self.raw, self.advanced, self.pending = raw, advanced, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        count = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self.pending += count
            if self.pending >= CHUNK:
                self.flush_count()
        return count

    def flush_count(self) -> None:
        if self.pending:
            self.advanced(self.pending)
            self.pending = 0


class Bounded:
    """A reader of the uncompressed layer that fails once more than `limit` bytes came out of it."""

    def __init__(self, raw: BinaryIO, limit: int, label: str):
        self.raw, self.limit, self.label, self.count = raw, limit, label, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise UnpackError(f"layer {short(self.label)} expands beyond max_layer_size ({self.limit} bytes)",
                              layer=self.label, hint="raise max_layer_size (0: no limit) if you trust this image")
        return data


class Forward:
    """The layer's tar stream as tarfile.TarFile reads it: read(), tell() and seek() forward only. Used in
    place of tarfile's own stream mode ("r|"), whose buffer is read from the source 10 KiB at a time and
    sliced whole on every read: a hundred reads, joins and copies of each MiB of member data, most of an
    unpack's CPU (and a larger buffer would make every 512-byte header read copy all of it)."""

    def __init__(self, raw):
        self.raw = raw  # read(size) -> bytes, b"" at the end
        self.position = 0  # of the next byte read() returns
        self.buffer = b""
        self.start = 0  # of the unread part of buffer

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise tarfile.StreamError("a layer is read in pieces")
        if size > _LARGEST_READ:  # member data is read a MiB at a time: this is a header's (pax, GNU long name)
            raise tarfile.ReadError(f"a member header of {size} bytes")
        buffer, start = self.buffer, self.start
        if start + size <= len(buffer):
            self.start = start + size
            self.position += size
            return buffer[start:start + size]
        parts = [buffer[start:]] if start < len(buffer) else []
        wanted = size - len(buffer) + start
        self.buffer, self.start = b"", 0
        while wanted > 0:
            data = self.raw.read(CHUNK)  # never more at once: a size in a hostile header allocates nothing
            if not data:
                break
            if len(data) > wanted:  # keep the rest for the next reads (headers are 512 bytes)
                self.buffer, self.start = data, wanted
                data = data[:wanted]
            parts.append(data)
            wanted -= len(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        skip = (offset if whence == io.SEEK_SET else self.position + offset) - self.position
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or skip < 0:
            raise tarfile.StreamError("seeking backwards is not allowed")
        while skip > 0:
            skipped = len(self.read(min(skip, CHUNK)))
            if not skipped:
                break
            skip -= skipped
        return self.position


def _read(archive: tarfile.TarFile, size: int) -> bytes:
    data = archive.fileobj.read(size)  # type: ignore[union-attr]
    if len(data) != size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def copy_data(archive: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
    """Copy the member's data; all-zero 1 MiB blocks become holes (a gzip bomb of zeros costs no disk)."""
    source = archive.fileobj
    if source.tell() != member.offset_data:  # type: ignore[union-attr]
        source.seek(member.offset_data)  # type: ignore[union-attr]
    remaining = member.size
    if remaining <= CHUNK:
        _write_all(fd, _read(archive, remaining))
        return
    holes = False
    while remaining:
        data = _read(archive, min(remaining, CHUNK))
        remaining -= len(data)
        if len(data) == CHUNK and data == _ZERO_CHUNK:
            os.lseek(fd, CHUNK, os.SEEK_CUR)
            holes = True
        else:
            _write_all(fd, data)
    if holes:
        os.ftruncate(fd, member.size)


def copy_sparse(archive: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
    """Write only the data regions of a GNU/PAX sparse member; the rest stays holes."""
    source = archive.fileobj
    if source.tell() != member.offset_data:  # type: ignore[union-attr]
        source.seek(member.offset_data)  # type: ignore[union-attr]
    for offset, size in member.sparse or ():
        os.lseek(fd, offset, os.SEEK_SET)
        while size:
            data = _read(archive, min(size, CHUNK))
            _write_all(fd, data)
            size -= len(data)
    os.ftruncate(fd, member.size)


def set_mtime(member: tarfile.TarInfo, path: object, dir_fd: int | None = None) -> None:
    try:
        if dir_fd is None:
            os.utime(path, (member.mtime, member.mtime))  # type: ignore[arg-type]
        else:
            os.utime(path, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)  # type: ignore
    except (OSError, OverflowError, ValueError):
        pass  # an out-of-range mtime is not worth failing the layer for


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
