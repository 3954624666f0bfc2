"""Pull progress on stderr: per-layer lines redrawn on a terminal (like docker pull), one line per
layer started and finished in batch logs, nothing with --quiet."""

import sys
import threading
import time
from typing import Dict, List, TextIO

from udocker.cli.render import size


def _name(descriptor) -> str:
    return descriptor.short_id


class LineProgress:
    """For batch logs: a line when a blob starts and when it finishes (with size, time and rate)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lock = threading.Lock()
        self.started: Dict[str, float] = {}

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


class TerminalProgress(LineProgress):
    """For a terminal: one line per blob, redrawn in place at most 10 times a second."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.order: List[str] = []
        self.state: Dict[str, list] = {}  # digest -> [done bytes, total, status]
        self.drawn = 0
        self.last = 0.0

    def blob_started(self, descriptor, *, present):
        with self.lock:
            self.order.append(descriptor.digest)
            self.state[descriptor.digest] = [0, descriptor.size, "Already exists" if present else "Downloading",
                                             time.monotonic(), _name(descriptor)]
        self._draw(force=True)

    def blob_advanced(self, descriptor, nbytes):
        with self.lock:
            self.state[descriptor.digest][0] += nbytes
        self._draw()

    def blob_finished(self, descriptor):
        with self.lock:
            entry = self.state[descriptor.digest]
            if entry[2] == "Downloading":
                entry[2] = "Pull complete"
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if not force and now - self.last < 0.1:
                return
            self.last = now
            lines = []
            for digest in self.order:
                done, total, status, start, name = self.state[digest]
                if status == "Downloading":
                    rate = done / max(now - start, 1e-6)
                    status += f" {size(done)}/{size(total)} ({size(int(rate))}/s)"
                lines.append(f"{name}: {status}")
            out = "\x1b[F" * self.drawn + "".join(f"\x1b[2K{line}\n" for line in lines)
            self.drawn = len(lines)
            self.stream.write(out)
            self.stream.flush()


def for_stderr(*, quiet: bool):
    if quiet:
        return None
    return TerminalProgress(sys.stderr) if sys.stderr.isatty() else LineProgress(sys.stderr)
