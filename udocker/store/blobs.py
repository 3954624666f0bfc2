"""Content-addressed blobs: verified while streaming in, published atomically, re-verifiable."""

from __future__ import annotations

import io
import os

from udocker import fs
from udocker.errors import DigestMismatch, NotFound
from udocker.oci import digest as digests
from udocker.oci.descriptor import Descriptor
from udocker.paths import Layout

TYPE_CHECKING = False  # typing's constant, without typing (nor contextlib, collections: `images` reads blobs)
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

CHUNK = 1 << 20


class Restarted(Exception):
    """A Follower's blob was received again from its first byte: what it read may not be the stored blob."""


class Sink:
    """A blob being written: feed write(); `offset` is the byte count so far (for HTTP Range resume).

    `present` is True when the blob was already in the store: then write nothing. follow() reads the blob
    while it arrives. The file is written unbuffered, so what `offset` counts is in the file."""

    def __init__(self, descriptor: Descriptor, path: str | None, final: str | None = None):
        self.descriptor = descriptor
        self.present = path is None
        self.offset = 0
        import hashlib
        import threading

        self._hash = hashlib.sha256()
        try:
            self._stream = open(path, "wb", buffering=0) if path else None  # noqa: SIM115 - closed in _finish()
        except OSError as exc:
            raise fs.store_error("write blob", descriptor.digest, exc) from None
        self.path, self.final = path, final
        self.changed = threading.Condition()  # offset, generation or state changed
        self.generation = 0  # reset() counts
        self.state = "writing"  # then "stored" (verified, renamed to final) or "failed"

    def write(self, chunk: bytes) -> None:
        if self.offset + len(chunk) > self.descriptor.size:
            raise DigestMismatch(f"blob {self.descriptor.digest} is larger than its descriptor says "
                                 f"({self.descriptor.size} bytes)")
        try:
            view = memoryview(chunk)
            while view:
                view = view[self._stream.write(view):]
        except OSError as exc:
            raise fs.store_error("write blob", self.descriptor.digest, exc) from None
        self._hash.update(chunk)
        with self.changed:
            self.offset += len(chunk)
            self.changed.notify_all()

    def reset(self) -> None:
        """Forget what was written, to receive the blob again from its first byte."""
        with self.changed:
            try:
                self._stream.seek(0)
                self._stream.truncate()
            except OSError as exc:
                raise fs.store_error("write blob", self.descriptor.digest, exc) from None
            import hashlib

            self._hash = hashlib.sha256()
            self.offset = 0
            self.generation += 1
            self.changed.notify_all()

    def follow(self, cancelled: Callable[[], bool]) -> Follower:
        """A reader of the blob as it arrives (from the store once stored). Raises OSError when the blob
        failed (or Restarted, see Follower)."""
        with self.changed:
            if self.state == "failed":
                raise FileNotFoundError(f"blob {self.descriptor.digest} failed")
            fd = os.open(self.final if self.state == "stored" else self.path, os.O_RDONLY | os.O_CLOEXEC)
            return Follower(self, fd, cancelled)

    def _ended(self, state: str) -> None:
        with self.changed:
            self.state = state
            self.changed.notify_all()

    def _finish(self) -> None:
        try:
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
        except OSError as exc:
            raise fs.store_error("write blob", self.descriptor.digest, exc) from None
        actual = "sha256:" + self._hash.hexdigest()
        if self.offset != self.descriptor.size:
            raise DigestMismatch(f"blob {self.descriptor.digest} is {self.offset} bytes, expected "
                                 f"{self.descriptor.size}")
        if actual != self.descriptor.digest:
            raise DigestMismatch(f"digest mismatch for blob {self.descriptor.digest}: got {actual}")

    def _abort(self) -> None:
        try:  # a full disk fails the flush in close() too
            self._stream.close()
        except OSError:
            pass


class Follower(io.RawIOBase):
    """Reads a Sink's file up to the bytes written so far, waiting for more until the descriptor's size.
    Raises Restarted when the sink was reset (the bytes already read may differ from the stored blob),
    OSError when the blob failed or `cancelled()` became true. Readers know its bytes are the stored blob
    only once the sink's state is "stored": the sink verified exactly what this file holds."""

    def __init__(self, sink: Sink, fd: int, cancelled: Callable[[], bool]):
        super().__init__()
        self.sink, self.fd, self.cancelled = sink, fd, cancelled
        self.position, self.generation = 0, sink.generation

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        sink = self.sink
        with sink.changed:
            while True:
                if sink.generation != self.generation:
                    raise Restarted(sink.descriptor.digest)
                if self.position < sink.offset:
                    available = sink.offset - self.position
                    break
                if self.position >= sink.descriptor.size:
                    return 0
                if sink.state == "failed" or self.cancelled():
                    raise OSError(f"download of blob {sink.descriptor.digest} failed")
                sink.changed.wait(0.5)
        view = memoryview(buffer)[:available]
        count = os.preadv(self.fd, [view], self.position)
        self.position += count
        return count

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


class BlobStore:
    def __init__(self, layout: Layout, lock_timeout: float):
        self.layout = layout
        self.lock_timeout = lock_timeout

    def path(self, digest: str) -> str:
        return self.layout.blob(digest)

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.layout.blob(digest))

    def size(self, digest: str) -> int:
        return os.path.getsize(self.layout.blob(digest))

    def read(self, digest: str) -> bytes:
        """The blob's bytes, checked against its digest (used for small JSON blobs)."""
        try:
            with open(self.layout.blob(digest), "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            raise NotFound(f"blob unknown: {digest}", hint="run 'udocker pull' again") from None
        except OSError as exc:
            raise fs.store_error("read blob", digest, exc) from None
        digests.check(data, digest, f"stored blob {digest}")
        return data

    def list(self) -> list[str]:
        try:
            names = os.listdir(self.layout.blobs)
        except OSError as exc:
            raise fs.store_error("list", self.layout.blobs, exc) from None
        return sorted("sha256:" + name for name in names if len(name) == 64)

    def ingest(self, descriptor: Descriptor) -> AbstractContextManager[Sink]:
        """Lock the digest and yield a Sink. On normal exit the content is verified (size and sha256),
        fsynced and renamed into place; on error (DigestMismatch included) nothing is published and the
        temp file is removed. Concurrent ingests of one digest wait for the first: then `present` is True."""
        from contextlib import contextmanager  # not at import: `udocker images` reads blobs without it

        return contextmanager(self._ingest)(descriptor)

    def _ingest(self, descriptor: Descriptor):
        target = self.layout.blob(descriptor.digest)
        with fs.locked(self.layout.lock("blob", descriptor.digest), timeout=self.lock_timeout,
                       what=f"blob {descriptor.short_id}"):
            if os.path.isfile(target):
                yield Sink(descriptor, None)
                return
            fd, tmp = fs.scratch_file(self.layout.tmp, ".write-blob-", what=f"blob {descriptor.digest}")
            sink = None
            try:
                sink = Sink(descriptor, tmp, target)
                yield sink
                sink._finish()
                try:
                    os.chmod(tmp, 0o444)
                    with sink.changed:  # a follower opens the file by one name or the other
                        os.replace(tmp, target)
                        sink.state = "stored"
                        sink.changed.notify_all()
                except OSError as exc:
                    raise fs.store_error("write blob", descriptor.digest, exc) from None
            except BaseException:
                if sink is not None:
                    sink._abort()
                    sink._ended("failed")
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            finally:
                os.close(fd)

    def put(self, data: bytes, descriptor: Descriptor) -> None:
        """Store small content already in memory (manifests, configs), verified against `descriptor`."""
        if self.has(descriptor.digest):
            return  # stored blobs were verified and never change: no lock taken (a pull of an unchanged image)
        with self.ingest(descriptor) as sink:
            if not sink.present:
                sink.write(data)

    def adopt(self, source: str, digest: str) -> None:
        """Publish the existing file `source` (a udocker 1.x layer) as blob `digest` by a hard link, so that
        both repositories share its space, or by a copy where it cannot be linked (another file system).
        The linked inode is hashed before it is published: DigestMismatch, and nothing published, when the
        file is not `digest`. The file's mode is left as it is (it is still udocker 1.x's file too).
        Idempotent, like ingest."""
        target = self.layout.blob(digest)
        with fs.locked(self.layout.lock("blob", digest), timeout=self.lock_timeout, what=f"blob {digest[7:19]}"):
            if os.path.isfile(target):
                return
            scratch = os.path.join(self.layout.tmp, fs.scratch_name(".adopt-blob-"))
            try:
                try:
                    os.link(source, scratch)
                except OSError:  # EXDEV, EPERM (protected_hardlinks), a file system without links
                    fs.copy_file(source, scratch, 0o444)
                if "sha256:" + digests.sha256_file(scratch) != digest:
                    raise DigestMismatch(f"{source} is corrupt or incomplete (its sha256 is not its name's)")
                os.replace(scratch, target)
            except OSError as exc:
                raise fs.store_error("adopt blob", source, exc) from None
            finally:
                try:
                    os.unlink(scratch)
                except OSError:
                    pass

    def verify(self, digest: str) -> None:
        """Re-hash a stored blob; raises DigestMismatch or NotFound."""
        try:
            actual = digests.sha256_file(self.layout.blob(digest))
        except FileNotFoundError:
            raise NotFound(f"blob missing from the store: {digest}", hint="pull the image again") from None
        except OSError as exc:
            raise fs.store_error("read blob", digest, exc) from None
        if "sha256:" + actual != digest:
            raise DigestMismatch(f"stored blob {digest} is corrupt", hint="remove the image and pull it again")

    def remove(self, digest: str) -> None:
        try:
            os.unlink(self.layout.blob(digest))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise fs.store_error("remove blob", digest, exc) from None
