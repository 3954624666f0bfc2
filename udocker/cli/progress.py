"""Pull and unpack progress on stderr: per-layer lines redrawn on a terminal (like docker pull: downloading,
then extracting, on one line while both happen), one line per layer started and finished in batch logs,
nothing with --quiet."""

from __future__ import annotations

import sys
import threading
import time

from udocker.cli.render import size

TYPE_CHECKING = False  # typing is not loaded by a pull (record.py)
if TYPE_CHECKING:
    from typing import TextIO


def _name(descriptor) -> str:
    return descriptor.short_id


class LineProgress:
    """For batch logs: a line when a blob starts and when it finishes (with size, time and rate)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lock = threading.Lock()
        self.started: dict[str, float] = {}
        self.extracting: dict[str, float] = {}

    def _say(self, text: str) -> None:
        with self.lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def blob_started(self, descriptor, *, present):
        if present:
            self._say(f"{_name(descriptor)}: already exists")
        else:
            self.started[descriptor.digest] = time.monotonic()
            self._say(f"{_name(descriptor)}: downloading {size(descriptor.size)}")

    def blob_advanced(self, descriptor, nbytes):
        pass

    def blob_finished(self, descriptor):
        start = self.started.pop(descriptor.digest, None)
        if start is None:
            return
        seconds = max(time.monotonic() - start, 1e-6)
        self._say(f"{_name(descriptor)}: done {size(descriptor.size)} in {seconds:.1f}s "
                  f"({size(int(descriptor.size / seconds))}/s)")

    def layer_started(self, descriptor):
        self.extracting[descriptor.digest] = time.monotonic()
        self._say(f"{_name(descriptor)}: extracting {size(descriptor.size)}")

    def layer_advanced(self, descriptor, nbytes):
        pass

    def layer_finished(self, descriptor):
        seconds = max(time.monotonic() - self.extracting.pop(descriptor.digest, time.monotonic()), 1e-6)
        self._say(f"{_name(descriptor)}: extracted {size(descriptor.size)} in {seconds:.1f}s "
                  f"({size(int(descriptor.size / seconds))}/s)")


class _Line:
    """One layer's line on a terminal: its download and its extraction, each [done bytes, start time]."""

    def __init__(self, descriptor, status: str):
        self.name, self.total, self.status = _name(descriptor), descriptor.size, status
        self.download: list[float] = []
        self.extract: list[float] = []

    def text(self, now: float) -> str:
        parts = []
        for word, counts in (("Downloading", self.download), ("Extracting", self.extract)):
            if counts:
                done, start = counts
                rate = done / max(now - start, 1e-6)
                parts.append(f"{word if not parts else word.lower()} {size(int(done))}/{size(self.total)} "
                             f"({size(int(rate))}/s)")
        return f"{self.name}: {', '.join(parts) or self.status}"


class TerminalProgress(LineProgress):
    """For a terminal: one line per layer, redrawn in place at most 10 times a second."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.lines: dict[str, _Line] = {}  # by digest, in the order first heard of
        self.drawn = 0
        self.last = 0.0

    def _line(self, descriptor, status: str) -> _Line:
        line = self.lines.get(descriptor.digest)
        if line is None:
            line = self.lines[descriptor.digest] = _Line(descriptor, status)
        return line

    def blob_started(self, descriptor, *, present):
        with self.lock:
            line = self._line(descriptor, "Already exists" if present else "Downloading")
            if not present:
                line.download = [0, time.monotonic()]
        self._draw(force=True)

    def blob_advanced(self, descriptor, nbytes):
        with self.lock:
            self.lines[descriptor.digest].download[0] += nbytes
        self._draw()

    def blob_finished(self, descriptor):
        with self.lock:
            line = self.lines[descriptor.digest]
            if line.download:
                line.download, line.status = [], "Pull complete"
        self._draw(force=True)

    def layer_started(self, descriptor):
        with self.lock:
            self._line(descriptor, "Extracting").extract = [0, time.monotonic()]
        self._draw(force=True)

    def layer_advanced(self, descriptor, nbytes):
        with self.lock:
            self.lines[descriptor.digest].extract[0] += nbytes
        self._draw()

    def layer_finished(self, descriptor):
        with self.lock:
            line = self.lines[descriptor.digest]
            line.extract, line.status = [], "Extracted"
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if not force and now - self.last < 0.1:
                return
            self.last = now
            lines = [line.text(now) for line in self.lines.values()]
            out = "\x1b[F" * self.drawn + "".join(f"\x1b[2K{line}\n" for line in lines)
            self.drawn = len(lines)
            self.stream.write(out)
            self.stream.flush()


def for_stderr(*, quiet: bool):
    if quiet:
        return None
    return TerminalProgress(sys.stderr) if sys.stderr.isatty() else LineProgress(sys.stderr)
