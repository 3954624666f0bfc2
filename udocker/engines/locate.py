"""Where engine executables and libraries come from, in order: the path configured for the name in the
`engine_paths` config key, the repository's engines folder (what `udocker install` put there), the
udocker_engines wheel (installed into the engines folder on first use, when that folder is empty), then PATH
(or, for libraries, the system's library directories). No command downloads anything.

The second argument of find() and find_library() is the repository Layout or the effective Config (the
contract in base.py says `find(name, config)`): given a Config, the layout comes from its topdir and
engine_paths applies; given a Layout, pass config= for engine_paths to apply.
"""

from __future__ import annotations

import os
import sys

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


_WHEEL: list = []  # the answer of wheel_bundle(), once looked up


def wheel_bundle() -> str | None:
    """The bundle directory of an installed udocker_engines wheel on sys.path (absolute entries only: the
    current directory never supplies engines), or None."""
    if not _WHEEL:
        _WHEEL.append(next((path for path in (os.path.join(entry, "udocker_engines", "bundle")
                                              for entry in sys.path if os.path.isabs(entry))
                            if os.path.isfile(os.path.join(path, "manifest.yaml"))), None))
    return _WHEEL[0]


def _install_wheel(layout, config) -> bool:
    """Install the wheel's engines into an empty engines folder; True when it did (or another process did
    while this one waited for the lock). Only ever into an empty folder: engines a user installed stay."""
    bundle = wheel_bundle()  # first: it looks at sys.path once per process, the manifest is in the repository
    if bundle is None or os.path.isfile(os.path.join(layout.engines, "manifest.yaml")):
        return False
    from udocker.engines import install

    timeout = config["lock_timeout"] if config is not None else 3600
    install.install_from(bundle, layout, lock_timeout=timeout, origin=install.Origin(install.WHEEL, bundle))
    return True


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
    path = os.path.join(layout.engines, "bin", name)
    if _executable(path) or (_install_wheel(layout, config) and _executable(path)):
        return Found(path, ENGINES_FOLDER)
    path = on_path(name, environ)
    if path:
        return Found(path, PATH)
    raise EngineUnavailable(f"{name} not found", hint="pip install udocker-engines next to udocker, or run "
                            "'udocker install --from=BUNDLE|URL'")


def on_path(name: str, environ=None) -> str | None:
    """The first executable file `name` in the directories of PATH (os.defpath when unset), or None."""
    environ = os.environ if environ is None else environ
    for directory in (d for d in environ.get("PATH", os.defpath).split(":") if d):
        path = os.path.join(directory, name)
        if _executable(path):
            return path
    return None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


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
    path = os.path.join(layout.engines, "lib", relative)
    if os.path.isfile(path) or (_install_wheel(layout, config) and os.path.isfile(path)):
        return Found(path, ENGINES_FOLDER)
    for directory in _LIB_DIRS:
        path = os.path.join(directory, relative)
        if os.path.isfile(path):
            return Found(path, SYSTEM)
    raise EngineUnavailable(f"{key} not found",
                            hint="pip install udocker-engines next to udocker, or run "
                            "'udocker install --from=BUNDLE|URL'")


def find_library(relative, layout, *, config=None):
    """A shared library such as 'fakechroot/libfakechroot.so': configured, the engines folder, the system's."""
    return locate_library(relative, layout, config=config).path
