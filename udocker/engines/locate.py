"""Where engine executables and libraries come from, in order: the path configured for the name in the
`engine_paths` config key, the repository's engines folder (what `udocker install` put there), then PATH (or,
for libraries, the system's library directories). No command downloads anything.

The second argument of find() and find_library() is the repository Layout or the effective Config (the
contract in base.py says `find(name, config)`): given a Config, the layout comes from its topdir and
engine_paths applies; given a Layout, pass config= for engine_paths to apply.
"""

from __future__ import annotations

import os

from udocker.errors import EngineUnavailable
from udocker.paths import Layout

_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/lib/x86_64-linux-gnu", "/lib64", "/lib")

CONFIGURED, ENGINES_FOLDER, PATH, SYSTEM = "configured", "engines folder", "PATH", "system"


class Found(tuple):
    """(path, origin): origin is CONFIGURED, ENGINES_FOLDER, PATH or SYSTEM. A plain tuple subclass, not a
    typing.NamedTuple: this module is on the `run` path and typing costs ~2 ms to import."""

    __slots__ = ()

    def __new__(cls, path: str, origin: str):
        return tuple.__new__(cls, (path, origin))

    @property
    def path(self) -> str:
        return self[0]

    @property
    def origin(self) -> str:
        return self[1]


def _split(where: object, config: object):
    if isinstance(where, Layout):
        return where, config
    return Layout(where["topdir"], where["tmpdir"]), where


def _configured(name: str, config: object) -> str | None:
    paths = config["engine_paths"] if config is not None else {}
    return os.path.expanduser(paths[name]) if name in (paths or {}) else None


def search_dirs(layout, environ):
    """Directories searched for engine executables, in order (after a configured path)."""
    return [os.path.join(layout.engines, "bin")] + [d for d in environ.get("PATH", os.defpath).split(":") if d]


def locate(name: str, layout, environ: dict[str, str] | None = None, *, config=None) -> Found:
    """Where executable `name` is and which rule found it; raises EngineUnavailable naming what was searched.
    A configured path that is not an executable file is an error, never skipped silently."""
    layout, config = _split(layout, config)
    environ = os.environ if environ is None else environ
    configured = _configured(name, config)
    if configured is not None:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return Found(configured, CONFIGURED)
        raise EngineUnavailable(f"{name} configured in engine_paths is not an executable file: {configured}",
                                hint="fix or remove engine_paths." + name + " in udocker.conf")
    for index, directory in enumerate(search_dirs(layout, environ)):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return Found(path, ENGINES_FOLDER if index == 0 else PATH)
    raise EngineUnavailable(f"{name} not found", hint="install it (e.g. apt-get install " + name
                            + ") or run 'udocker install --from=BUNDLE'")


def find(name, layout, environ=None, *, config=None):
    """The absolute path of executable `name`; raises EngineUnavailable naming what was searched."""
    return locate(name, layout, environ, config=config).path


def locate_library(relative: str, layout, *, config=None) -> Found:
    """Where a shared library such as 'fakechroot/libfakechroot.so' is: engine_paths[basename], the engines
    folder's lib/, then the system's library directories."""
    layout, config = _split(layout, config)
    key = os.path.basename(relative)
    configured = _configured(key, config)
    if configured is not None:
        if os.path.isfile(configured):
            return Found(configured, CONFIGURED)
        raise EngineUnavailable(f"{key} configured in engine_paths is not a file: {configured}",
                                hint="fix or remove engine_paths." + key + " in udocker.conf")
    for index, directory in enumerate([os.path.join(layout.engines, "lib")] + list(_LIB_DIRS)):
        path = os.path.join(directory, relative)
        if os.path.isfile(path):
            return Found(path, ENGINES_FOLDER if index == 0 else SYSTEM)
    raise EngineUnavailable(f"{key} not found",
                            hint="install fakechroot or run 'udocker install --from=BUNDLE'")


def find_library(relative, layout, *, config=None):
    """A shared library such as 'fakechroot/libfakechroot.so': configured, the engines folder, the system's."""
    return locate_library(relative, layout, config=config).path
