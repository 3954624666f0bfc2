"""Platforms (os/architecture/variant) as the image index names them, and this host's platform.
A Record, without typing: a cached `pull` loads this module (record.py says why)."""

import os

from udocker.errors import UsageError
from udocker.record import Record

# uname -m -> (GOARCH, variant), the names image indexes use.
_MACHINES = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None), "i386": ("386", None), "i686": ("386", None),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
}


class Platform(Record):
    """os, architecture and variant (None when not given); immutable."""

    __slots__ = FIELDS = ("os", "architecture", "variant")
    DEFAULTS = (None,)

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    def matches(self, other: dict) -> bool:
        """True if an index entry's `platform` object describes this platform.

        A missing variant on either side matches (arm64 images rarely say v8); a different one does not.
        """
        if other.get("os") != self.os or other.get("architecture") != self.architecture:
            return False
        theirs = other.get("variant")
        return not (self.variant and theirs and theirs != self.variant)

    def to_json(self) -> dict:
        data = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            data["variant"] = self.variant
        return data


def parse(text: str) -> Platform:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform: {text}", hint="use os/arch[/variant], e.g. linux/arm64")
    return Platform(parts[0].lower(), parts[1].lower(), parts[2].lower() if len(parts) == 3 else None)


def host() -> Platform:
    machine = os.uname().machine
    architecture, variant = _MACHINES.get(machine, (machine, None))
    return Platform("linux", architecture, variant)
