"""What `udocker install` and `udocker info` say about engines: where each one is, where it came from, its
version, and whether each execution mode can run (probe_modes: the one loop that probes every mode). Reads
only; runs `ENGINE --version` (10 s limit) and the engines' probes."""

import re
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from udocker import modetable
from udocker.engines import locate
from udocker.errors import EngineUnavailable, UdockerError

# engine name -> (kind, what locate looks for)
ENGINES: Dict[str, Tuple[str, str]] = {
    "proot": ("exe", "proot"),
    "runc": ("exe", "runc"),
    "crun": ("exe", "crun"),
    "patchelf": ("exe", "patchelf"),
    "fakechroot": ("lib", "fakechroot/libfakechroot.so"),
    "slirp4netns": ("exe", "slirp4netns"),  # not a mode's engine: the private network's stack (netstack.py)
}


@dataclass(frozen=True)
class EngineRow:
    name: str
    path: Optional[str]
    origin: Optional[str]  # configured / bundle / wheel / PATH / system; None when not found
    version: Optional[str]
    problem: Optional[str]  # why it was not found (or a configured path is wrong)


@dataclass(frozen=True)
class ModeRow:
    mode: str
    engine: str
    status: str  # usable / unusable
    detail: str


def find_engines(config, layout, environ: Optional[Mapping[str, str]] = None) -> List[EngineRow]:
    """Where each engine is and its version: from the installed manifest for the engines folder (whose origin
    is the bundle or wheel it was installed from), else from `ENGINE --version`."""
    from udocker.engines import install

    found = {}
    for name, (kind, what) in ENGINES.items():
        try:  # first: locating may install the wheel's engines
            found[name] = (locate.locate(what, layout, environ, config=config) if kind == "exe"
                           else locate.locate_library(what, layout, config=config))
        except EngineUnavailable as exc:
            found[name] = exc
    versions, origin = install.installed_versions(layout), install.installed_origin(layout)
    moved = install.moved_from(layout)
    rows = []
    for name, where in found.items():
        if isinstance(where, EngineUnavailable):
            rows.append(EngineRow(name, None, None, None, where.message))
            continue
        in_folder = where.origin == locate.ENGINES_FOLDER
        if in_folder and moved:
            rows.append(EngineRow(name, where.path, origin, None, f"installed for {moved}: run 'udocker install'"
                                  " (the wheel, engines_url) or 'udocker install --force --from=BUNDLE'"))
            continue
        version = versions.get(name) if in_folder else None
        if version is None and ENGINES[name][0] == "exe":
            version = _version_of(where.path)
        rows.append(EngineRow(name, where.path, origin if in_folder else where.origin, version, None))
    return rows


def _version_of(path: str) -> Optional[str]:
    try:
        result = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=False,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(rb"(\d+\.\d+(?:\.\d+)?)", result.stdout + result.stderr)
    return match.group(1).decode() if match else None


def probe_modes(config, layout) -> Dict[str, Optional[Exception]]:
    """{mode: None, or what its engine's probe raised} for every mode of the table, in its order. The one probe
    loop of the reports (auto_mode, which stops at the first mode that passes, is the choice, not a report)."""
    from udocker.engines import modes

    found: Dict[str, Optional[Exception]] = {}
    for mode in modetable.NAMES:
        try:
            modes.get_engine(mode, config, layout).probe(mode)
        except Exception as exc:  # noqa: BLE001 - a probe bug must show up in the report, not hide a mode
            found[mode] = exc
            continue
        found[mode] = None
    return found


def check_modes(config, layout, engines: List[EngineRow]) -> List[ModeRow]:
    """Per mode, the engines it would use and whether its engine's probe passes on this host."""
    by_name = {row.name: row for row in engines}
    rows = []
    for mode, error in probe_modes(config, layout).items():
        names = []
        for need in modetable.needs(mode):
            choice = next((n for n in need.split("|") if by_name[n].path), None)
            names.append(choice or need.replace("|", "/"))
        rows.append(ModeRow(mode, "+".join(names), *_status(error)))
    return rows


def _status(error: Optional[Exception]) -> Tuple[str, str]:
    if error is None:
        return "usable", ""
    if isinstance(error, UdockerError):
        return "unusable", error.message
    return "unusable", f"probe failed: {type(error).__name__}: {error}"


def engine_paths(rows: List[EngineRow]) -> List[Dict[str, Optional[str]]]:
    """The rows as JSON-ready dictionaries (udocker info --json, udocker install --json)."""
    return [{"name": r.name, "version": r.version, "origin": r.origin, "path": r.path, "problem": r.problem}
            for r in rows]

