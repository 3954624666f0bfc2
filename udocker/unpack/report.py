"""What unpacking tells its caller: the notices, the report, and the way a layer and a member are named in
messages (see udocker/unpack/__init__.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something skipped or changed while unpacking (a device node, a dropped setuid bit)."""

    layer: str
    member: str
    reason: str

    def __str__(self) -> str:
        return f"{self.reason} in layer {short(self.layer)}: {shown(self.member)}"


@dataclasses.dataclass(frozen=True)
class UnpackReport:
    """`layers` applied, `entries` created or changed (whiteouts included), the `notices` given."""

    layers: int = 0
    entries: int = 0
    notices: tuple[Notice, ...] = ()


NoticeCallback = Callable[[Notice], None]


class Refused(Exception):
    """A member that must not be applied; becomes an UnpackError naming the layer and member."""


def short(label: str) -> str:
    algorithm, _, hexdigest = label.partition(":")
    return f"{algorithm}:{hexdigest[:12]}…" if hexdigest and len(hexdigest) > 12 else label


def shown(name: str, limit: int = 200) -> str:
    """`name` safe to print: non-printable characters (NUL, undecodable bytes) escaped, long names cut."""
    if not name.isprintable():
        name = name.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        name = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in name)
    return name if len(name) <= limit else name[:limit] + "…"
