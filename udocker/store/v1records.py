"""udocker 1.x container records: the control files beside a 1.x container's ROOT/.

udocker 1.3 keeps a container as containers/<id>/ holding ROOT/ (the root file system) and small files:
container.json (the image's configuration JSON: architecture, os, config {Env, Cmd, Entrypoint, ...}),
imagerepo.name ("repo:tag"), execmode (the mode; absent means P1), and engine state (root.path: the container
directory's ROOT 1.3 set the mode up in; patch.path: the container directory an F3/F4 patch was made for;
ld.so.path and ld.so.orig: the loader and its original bytes, F2-F4).
Its `export --clone` archives that directory as it is. This module reads and writes those records as bytes,
from and to udocker 2's container record; it does no I/O (the archive code and the repository code do).
"""

import json
from dataclasses import dataclass, field
from typing import Mapping, Optional

MODES = ("P1", "P2", "F1", "F2", "F3", "F4", "R1", "R2", "R3")
# What udocker 1.3 runs without a setup of its own: F2-F4 need 1.3's patches of the tree, so a container in
# one of them is handed to 1.3 as F1 (same engine, no patch); its udocker 2 record keeps the real mode.
PORTABLE_MODES = ("P1", "P2", "F1", "R1", "R2", "R3")
CONTROL_FILES = ("container.json", "imagerepo.name", "execmode", "root.path", "ld.so.path", "ld.so.orig",
                 "patch.path")
RECORD_KEY = "io.udocker.record"  # udocker 2's own record, kept inside a 1.x container.json
_PLATFORM_KEYS = ("os", "architecture", "variant")
_PLACEHOLDERS = ("CLONING:inprogress",)  # what 1.3 writes in imagerepo.name before a clone's files arrive


@dataclass
class V1Records:
    """A 1.x container's records. `image`: imagerepo.name ("repo:tag") or None; `mode`: execmode (None when
    absent: 1.3 runs P1); `image_config`: container.json; `own`: udocker 2's record found in it, if any;
    `root_path`, `loader`, `loader_orig`, `patch_path`: F-mode state (root.path, ld.so.path, ld.so.orig,
    patch.path: the container directory F3/F4's patches were made for)."""

    image: Optional[str] = None
    mode: Optional[str] = None
    image_config: dict = field(default_factory=dict)
    own: Optional[dict] = None
    root_path: Optional[str] = None
    loader: Optional[str] = None
    loader_orig: Optional[bytes] = None
    patch_path: Optional[str] = None


class V1FormatError(ValueError):
    """A control file that cannot be what udocker 1.x writes."""


def _text(data: Optional[bytes], what: str) -> Optional[str]:
    if data is None:
        return None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise V1FormatError(f"{what} is not text") from None
    if "\n" in text or "\0" in text:
        raise V1FormatError(f"{what} is not one line")
    return text or None


def read_v1_records(files: Mapping[str, bytes]) -> V1Records:
    """The records in `files` ({control file name: its bytes}, absent files left out). Raises V1FormatError
    for a corrupt one."""
    config = {}
    if files.get("container.json") is not None:
        try:
            config = json.loads(files["container.json"])
        except (ValueError, UnicodeDecodeError):
            raise V1FormatError("container.json is not JSON") from None
        if not isinstance(config, dict):
            raise V1FormatError("container.json is not a JSON object")
    own = config.get(RECORD_KEY)
    if own is not None and not isinstance(own, dict):
        raise V1FormatError(f"container.json's {RECORD_KEY} is not a JSON object")
    mode = _text(files.get("execmode"), "execmode")
    if mode is not None:
        mode = mode.upper()
        if mode not in MODES:
            raise V1FormatError(f"execmode {mode!r} is not a udocker mode")
    image = _text(files.get("imagerepo.name"), "imagerepo.name")
    return V1Records(image=None if image in _PLACEHOLDERS else image, mode=mode, image_config=config, own=own,
                     root_path=_text(files.get("root.path"), "root.path"),
                     loader=_text(files.get("ld.so.path"), "ld.so.path"), loader_orig=files.get("ld.so.orig"),
                     patch_path=_text(files.get("patch.path"), "patch.path"))


def to_record(records: V1Records) -> dict:
    """udocker 2's container record (without id) for a 1.x container: its own record when udocker 2 wrote the
    archive, else the image, image config (1.3 reads "config", then "container_config"), platform and mode."""
    if records.own is not None:
        return {k: v for k, v in records.own.items() if k not in ("id", "protected", "prepared", "shared")}
    image_config = records.image_config
    config = image_config.get("config") or image_config.get("container_config") or {}
    return {"image": records.image, "manifest": None, "config": config if isinstance(config, dict) else {},
            "platform": {k: image_config[k] for k in _PLATFORM_KEYS if isinstance(image_config.get(k), str)},
            "mode": records.mode}


def write_v1_records(record: dict) -> dict:
    """{control file name: bytes} that make udocker 1.3 see the udocker 2 container `record`: container.json
    (an image configuration with the record inside, under RECORD_KEY), imagerepo.name and, for a mode 1.3
    runs without patching the tree, execmode."""
    platform = record.get("platform") or {}
    config = {k: platform[k] for k in _PLATFORM_KEYS if platform.get(k)}
    config["config"] = record.get("config") or {}
    if record.get("created"):
        config["created"] = record["created"]
    config[RECORD_KEY] = {k: v for k, v in record.items() if k not in ("id", "protected", "prepared")}
    files = {"container.json": json.dumps(config, indent=1, sort_keys=True).encode(),
             "imagerepo.name": (record.get("image") or "IMPORTED:latest").encode()}
    mode = record.get("mode")
    if mode in MODES:
        files["execmode"] = (mode if mode in PORTABLE_MODES else "F1").encode()
    return files
