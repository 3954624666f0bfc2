"""udocker 1.3.17, the reference for 1.x behaviour and formats, run against this host's engines.

.ci/run installs udocker==1.3.17 from PyPI into a venv of its own (the package is also called `udocker`) and
names its executable in UDOCKER_TEST_V13. Its tool tarball cannot be downloaded here, so `Udocker13` points it
at Debian's proot, patchelf, runc and libfakechroot with 1.3's documented UDOCKER_USE_*_EXECUTABLE settings,
through the two wrappers beside this file (1.3 passes proot `-k` and patchelf `-q`, which Debian's builds do
not take), and marks the tools as installed (lib/VERSION) so that it does not try to fetch them.

    v13 = Udocker13(str(tmp_path / "home" / ".udocker"))
    v13("pull", f"--registry=http://{registry.host}", "test/debian:12")   # -> CompletedProcess (text)

Debian's patchelf has no `--set-root-prefix`/`--restore-root-prefix` (udocker's own build does): the patchelf
wrapper emulates them with Debian's patchelf, so that 1.3's F2-F4 setup works here too.
"""

import os
import subprocess
from typing import Dict, Optional

ENV = "UDOCKER_TEST_V13"
HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS_RELEASE = "1.2.11"  # what udocker 1.3.17 requires of its tool tarball
FAKECHROOT_SO = "/usr/lib/x86_64-linux-gnu/fakechroot/libfakechroot.so"


def executable() -> Optional[str]:
    """udocker 1.3's command, or None when UDOCKER_TEST_V13 is unset."""
    return os.environ.get(ENV) or None


class Udocker13:
    """udocker 1.3 on the repository `topdir` (its UDOCKER_DIR). Calls return CompletedProcess (text)."""

    def __init__(self, topdir: str, command: Optional[str] = None):
        self.topdir = topdir
        self.command = command or executable()
        if not self.command:
            raise RuntimeError(f"{ENV} is not set: .ci/run installs udocker 1.3.17 and sets it")
        os.makedirs(os.path.join(topdir, "lib"), exist_ok=True)
        version = os.path.join(topdir, "lib", "VERSION")
        if not os.path.exists(version):
            with open(version, "w", encoding="utf-8") as stream:
                stream.write(TOOLS_RELEASE + "\n")

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("UDOCKER_", "PYTHON"))}  # PYTHONPATH would load udocker 2 instead
        env.update({
            "UDOCKER_DIR": self.topdir,
            "UDOCKER_USE_PROOT_EXECUTABLE": os.path.join(HERE, "proot"),
            "UDOCKER_USE_PATCHELF_EXECUTABLE": os.path.join(HERE, "patchelf"),
            "UDOCKER_USE_RUNC_EXECUTABLE": "/usr/sbin/runc",
            "UDOCKER_FAKECHROOT_SO": FAKECHROOT_SO,
        })
        env.update(extra or {})
        return env

    def __call__(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 600,
                 input: Optional[str] = None) -> subprocess.CompletedProcess:
        return subprocess.run([self.command, *args], env=self.env(env), capture_output=True, text=True,
                              timeout=timeout, input=input, cwd=self.topdir)
