"""Fixed costs of the commands (issue 13, item 3): `udocker version` (and -V, --version), which scripts run to
check that udocker is there, is answered before click is imported (~15-30 ms of start-up)."""

import os
import subprocess
import sys

import pytest

from udocker import __version__

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("args", [["version"], ["-V"], ["--version"], ["--repo", "/nonexistent/repo", "version"]])
def test_version_loads_no_click(args):
    done = subprocess.run([sys.executable, "-S", "-X", "importtime", "-m", "udocker", *args], capture_output=True,
                          text=True, cwd=TOP, env=dict(os.environ, PYTHONPATH=TOP), timeout=60)
    assert (done.returncode, done.stdout) == (0, f"udocker {__version__}\n"), done.stderr[-2000:]
    modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not modules & {"click", "logging", "udocker.cli.app", "udocker.config"}, sorted(modules)


def test_version_with_more_arguments_is_clicks(udocker):
    """Anything else (--help, an extra argument) goes through click as before."""
    assert "Print the version of udocker." in udocker("version", "--help").stdout
    extra = udocker("version", "extra")
    assert extra.returncode == 2 and "unexpected extra argument" in extra.stderr
