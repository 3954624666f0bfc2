"""Where engine executables and libraries come from: the repository's engines folder first (what
`udocker install` put there), then PATH. No command downloads anything."""

import os

from udocker.errors import EngineUnavailable

_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/lib/x86_64-linux-gnu", "/lib64", "/lib")


def search_dirs(layout, environ):
    """Directories searched for engine executables, in order."""
    return [os.path.join(layout.engines, "bin")] + [d for d in environ.get("PATH", os.defpath).split(":") if d]


def find(name, layout, environ=None):
    """The absolute path of executable `name`; raises EngineUnavailable naming what was searched."""
    environ = os.environ if environ is None else environ
    for directory in search_dirs(layout, environ):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise EngineUnavailable(f"{name} not found", hint="install it (e.g. apt-get install " + name
                            + ") or run 'udocker install --from=BUNDLE'")


def find_library(relative, layout):
    """A shared library such as 'fakechroot/libfakechroot.so': the engines folder, then the system's."""
    for directory in [os.path.join(layout.engines, "lib")] + list(_LIB_DIRS):
        path = os.path.join(directory, relative)
        if os.path.isfile(path):
            return path
    raise EngineUnavailable(f"{os.path.basename(relative)} not found",
                            hint="install fakechroot or run 'udocker install --from=BUNDLE'")
