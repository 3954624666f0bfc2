"""Pull progress on a terminal: stderr attached to a pseudo-terminal gets per-layer lines (bytes, rate) redrawn
in place with ANSI cursor movement, like docker pull; -q draws nothing. (Batch-log progress, when stderr is
not a terminal, is checked in test_pull.py.)"""

import errno
import os
import pty
import re
import select
import subprocess
import sys
import time

from tests.conftest import TOP

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _pull_on_a_terminal(udocker, *args, timeout: float = 120):
    """Run udocker with stderr on a pty; returns (exit status, stdout, everything written to the terminal)."""
    master, slave = pty.openpty()
    command = [sys.executable, "-m", "udocker", "--repo", udocker.repo, *args]
    env = dict(udocker.env, PYTHONPATH=TOP)
    deadline = time.monotonic() + timeout
    with subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                          cwd=udocker.cwd) as process:
        os.close(slave)
        drawn = b""
        try:
            while time.monotonic() < deadline:
                if not select.select([master], [], [], 0.1)[0]:
                    if process.poll() is not None:
                        break  # exited, and nothing is left to read
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError as exc:  # EIO: every writer of the slave side has closed it
                    if exc.errno != errno.EIO:
                        raise
                    break
                if not chunk:
                    break
                drawn += chunk
            stdout, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            os.close(master)
            if process.poll() is None:
                process.kill()
    return process.returncode, stdout.decode(), drawn.decode()


def test_terminal_progress_is_redrawn_per_layer(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    pushed = registry.images["test/layers:latest"]
    status, stdout, drawn = _pull_on_a_terminal(udocker, "pull", ref)
    assert (status, stdout) == (0, ref + "\n"), drawn
    assert "\x1b[2K" in drawn  # each line is cleared before it is drawn
    assert "\x1b[F" in drawn  # the cursor goes back up to redraw the lines in place
    text = ANSI.sub("", drawn).replace("\r\n", "\n")
    lines = text.splitlines()
    layers = [digest.split(":")[1][:12] for digest in pushed.layers]
    assert len(layers) >= 2
    for short in layers:
        mine = [line for line in lines if line.startswith(short + ": ")]
        downloading = [line for line in mine if "Downloading" in line]
        assert downloading, text
        assert re.fullmatch(short + r": Downloading \d+(\.\d+)?[kMG]?B/\d+(\.\d+)?[kMG]?B \(\d+(\.\d+)?[kMG]?B/s\)",
                            downloading[0]), downloading[0]
        assert mine[-1] == f"{short}: Pull complete"
    assert lines[-1].startswith("Digest: sha256:")


def test_terminal_progress_says_already_exists(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    assert udocker("pull", ref).returncode == 0
    status, _, drawn = _pull_on_a_terminal(udocker, "pull", ref)
    assert status == 0
    text = ANSI.sub("", drawn)
    assert "Already exists" in text and "Downloading" not in text


def test_quiet_draws_nothing_on_a_terminal(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    status, stdout, drawn = _pull_on_a_terminal(udocker, "-q", "pull", ref)
    assert (status, stdout, drawn) == (0, ref + "\n", "")
