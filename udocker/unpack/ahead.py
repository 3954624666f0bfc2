"""Layers decompressed ahead of their turn (issue 13 item 1): decompression is most of an unpack's time
(zlib inflates ~200 MB/s; parsing the tar and writing the files take a fifth of that), and a layer can only
be applied once the layers below it are, so one thread leaves a core idle. While apply_layers applies a
layer, one helper thread decompresses a later one into a spool, an unnamed file in the caller's scratch
directory (zlib and the file writes release the GIL); that layer is then applied from the spool as a plain
tar stream, following it while the helper still writes it.

The helper takes the first layer not yet taken that is at least two after the one being applied (the next
one the applier decompresses itself), or the last layer when it is the next one, and never more than WINDOW
layers ahead, so at most WINDOW spools exist: memory stays bounded (1 MiB pieces) and the disk a spool takes
is its layer's uncompressed size, all-zero MiB blocks left as holes (a bomb of zeros costs no disk), with the
layer's max_size bound checked as it is written. A spooled layer is applied exactly as if read directly:
whatever the helper met (a bad gzip stream, a read error, an unsupported media type, max_size, an aborted
download) is raised by the applier's read, at that point of that layer, so the error and what was applied
before it are the same. A spool that cannot be written (a full disk) is not an error: the applier decompresses
that layer itself from the byte where the spool ends, and the helper stops. close() stops the helper and waits
for it: no thread outlives apply_layers.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Sequence

from udocker.errors import UnpackError
from udocker.unpack.report import short
from udocker.unpack.streams import CHUNK, Bounded, Counted, decompressed

WINDOW = 3
_ZERO_CHUNK = bytes(CHUNK)


class _Stopped(Exception):
    """apply_layers ended (an error in a lower layer): the helper stops."""


class _SpoolFailed(Exception):
    """The spool could not be written (a full disk): the applier decompresses that layer itself."""


def worth_it(layers: Sequence) -> bool:
    """A helper pays only with a second core and a second layer."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores >= 2 and len(layers) >= 2


def open_layer(layer):
    """The layer's stream, or UnpackError naming it."""
    try:
        return layer.open()
    except OSError as exc:
        raise UnpackError(f"cannot read layer {short(layer.label)}: {exc.strerror}", layer=layer.label) from None


class Spool(io.RawIOBase):
    """A layer's uncompressed tar stream, written by the helper, read by the applier as it grows."""

    def __init__(self, ahead: Ahead, directory: str, layer):
        super().__init__()
        self.ahead, self.layer, self.file = ahead, layer, tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self.opened = self.fallback = None  # the layer, decompressed by the applier after a _SpoolFailed
        self.size = self.position = 0
        self.compressed = self.reported = 0  # compressed bytes the helper read; those told to `advanced`
        self.advanced = None  # the applier's progress callback
        self.ended = False
        self.failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def append(self, data: bytes) -> None:
        fd, end = self.file.fileno(), self.size + len(data)
        try:
            if len(data) == CHUNK and data == _ZERO_CHUNK:
                os.ftruncate(fd, end)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.pwrite(fd, view, end - len(view)):]
        except OSError as exc:
            raise _SpoolFailed(exc) from None
        with self.ahead.changed:
            self.size = end
            self.ahead.changed.notify_all()

    def end(self, failure: BaseException | None = None) -> None:
        with self.ahead.changed:
            self.ended, self.failure = True, failure
            self.ahead.changed.notify_all()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.fallback is not None:
            return self.fallback.readinto(buffer)  # type: ignore[no-any-return]
        changed = self.ahead.changed
        with changed:
            while self.position >= self.size and not self.ended:
                changed.wait()
            available, failure = self.size - self.position, self.failure
        if not available and isinstance(failure, _SpoolFailed):
            self._fall_back()
            return self.fallback.readinto(buffer)  # type: ignore[union-attr]
        if not available and failure is not None:
            raise failure
        self.report()
        if not available:
            return 0
        count = os.preadv(self.file.fileno(), [memoryview(buffer)[:available]], self.position)
        self.position += count
        return count

    def _fall_back(self) -> None:
        """Decompress the layer here, from the byte the spool ends at (its sources give the same bytes when
        opened again; an overlap's raises Restarted when its blob was received again meanwhile)."""
        layer = self.layer
        self.opened = open_layer(layer)
        self.fallback = plain = decompressed(self.opened, layer.media_type, layer.label)
        left = self.position
        while left:
            skipped = len(plain.read(min(left, CHUNK)))
            if not skipped:
                raise EOFError("layer ended before its spooled part")
            left -= skipped
        self.advanced = None  # the helper counted the compressed bytes already

    def report(self) -> None:
        compressed = self.compressed
        if self.advanced is not None and compressed > self.reported:
            self.advanced(compressed - self.reported)
            self.reported = compressed

    def close(self) -> None:
        if not self.closed:
            self.file.close()
            for stream in (self.fallback, self.opened):
                if stream is not None:
                    stream.close()
        super().close()


class Ahead:
    """The helper thread of one apply_layers: start(), take(index) before applying each layer in order (a
    Spool to read it from, or None: decompress it yourself), close() at the end."""

    def __init__(self, layers: Sequence, directory: str, max_size: int):
        self.layers, self.directory, self.max_size = layers, directory, max_size
        self.changed = threading.Condition()
        self.current = 0  # the layer being applied
        self.next = 0  # the first layer the helper may take
        self.spools: dict[int, Spool] = {}
        self.stopped = False
        self.thread = threading.Thread(target=self._work, name="unpack-ahead", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def take(self, index: int) -> Spool | None:
        with self.changed:
            self.current = index
            self.changed.notify_all()
            return self.spools.pop(index, None)

    def close(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()
            spools, self.spools = list(self.spools.values()), {}
        self.thread.join()
        for spool in spools:
            spool.close()

    def _claim(self) -> tuple[int, Spool] | None:
        """The next layer to decompress and its spool; None once stopped or when no layer is left."""
        last = len(self.layers) - 1
        with self.changed:
            while True:
                if self.stopped:
                    return None
                index = max(self.next, self.current + (1 if self.current + 1 == last else 2))
                if index > last:
                    return None
                if index <= self.current + WINDOW:
                    self.next = index + 1
                    self.spools[index] = spool = Spool(self, self.directory, self.layers[index])
                    return index, spool
                self.changed.wait()

    def _work(self) -> None:
        while True:
            try:
                claimed = self._claim()
            except OSError:
                return  # no spool file: the applier decompresses the layers itself
            if claimed is None:
                return
            index, spool = claimed
            try:
                self._fill(self.layers[index], spool)
            except _Stopped:
                spool.end(UnpackError("unpacking stopped"))
                return
            except _SpoolFailed as exc:
                spool.end(exc)
                return  # no more spools: the applier decompresses the layers left
            except BaseException as exc:  # noqa: BLE001 - raised by the applier's read, in its thread
                spool.end(exc)
            else:
                spool.end()

    def _fill(self, layer, spool: Spool) -> None:
        with open_layer(layer) as stream:
            counted = Counted(stream, lambda nbytes: setattr(spool, "compressed", spool.compressed + nbytes))
            plain = decompressed(counted, layer.media_type, layer.label)
            try:
                source = Bounded(plain, self.max_size, layer.label) if self.max_size else plain
                while True:
                    data = source.read(CHUNK)
                    if self.stopped:
                        raise _Stopped()
                    if not data:
                        break
                    spool.append(data)
                counted.flush_count()
            finally:
                if plain is not counted:
                    plain.close()
