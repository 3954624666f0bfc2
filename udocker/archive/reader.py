"""Random access to the members of an image archive (a tar file), by name, without extracting it.

Member names are checked before anything is read: an absolute name or a `..` component is refused, and
symbolic and hard links are resolved inside the archive only (newer `docker save` links layer files to
one another). Nothing is ever written to disk from here.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tarfile
from collections.abc import Iterator
from typing import IO, Any

from udocker.errors import UdockerError
from udocker.oci.manifest import load_json

MAX_JSON = 64 << 20  # manifest.json, index.json and configs are read into memory: refuse absurd sizes
_MAX_LINKS = 16


def clean_name(name: str, archive: str) -> str | None:
    """The member name without `./` prefixes and trailing slashes; None for the archive root itself.

    Raises UdockerError for names that would leave the archive (absolute, or with a `..` component).
    """
    if name.startswith("/") or ".." in name.split("/"):
        raise UdockerError(f"unsafe member name in {archive}: {name!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts) or None


class Archive:
    """An opened, seekable, uncompressed tar archive. `name` is how messages call it."""

    def __init__(self, path: str, name: str):
        self.name = name
        try:
            self._tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed in close()
        except (tarfile.TarError, EOFError) as exc:
            raise UdockerError(f"not a valid tar archive: {name}: {exc}") from None
        except OSError as exc:
            raise UdockerError(f"cannot read {name}: {exc.strerror or exc}") from None
        try:
            self.members = self._index(os.path.getsize(path))
        except BaseException:
            self._tar.close()
            raise

    def _index(self, size: int) -> dict[str, tarfile.TarInfo]:
        """Every member by its cleaned name; checks names and that no member runs past the end."""
        try:
            members = self._tar.getmembers()
        except (tarfile.TarError, EOFError) as exc:
            if str(exc) == "unexpected end of data":
                raise UdockerError(f"archive is truncated: {self.name}") from None
            raise UdockerError(f"not a valid tar archive: {self.name}: {exc}") from None
        index: dict[str, tarfile.TarInfo] = {}
        for member in members:
            if member.isfile() and member.offset_data + member.size > size:
                raise UdockerError(f"archive is truncated: {self.name} (in {member.name!r})")
            cleaned = clean_name(member.name, self.name)
            if cleaned:
                index[cleaned] = member  # a later member of the same name wins, as tar extracts it
        return index

    def close(self) -> None:
        self._tar.close()

    def has(self, name: str) -> bool:
        return self._resolve(name, required=False) is not None

    def _resolve(self, name: str, *, required: bool = True) -> tarfile.TarInfo | None:
        """The regular-file member that `name` is, or that its links lead to."""
        current = clean_name(name, self.name) or ""
        for _ in range(_MAX_LINKS):
            member = self.members.get(current)
            if member is None:
                if required:
                    raise UdockerError(f"member missing from {self.name}: {current}")
                return None
            if member.isfile():
                return member
            if member.issym():
                # A symlink target is relative to the link's directory; a hard link's to the archive root.
                target = posixpath.join(posixpath.dirname(current), member.linkname)
            elif member.islnk():
                target = member.linkname
            else:
                raise UdockerError(f"member of {self.name} is not a regular file: {current}")
            if member.linkname.startswith("/") or posixpath.normpath(target).startswith(".."):
                raise UdockerError(f"unsafe link in {self.name}: {current} -> {member.linkname}")
            current = clean_name(posixpath.normpath(target), self.name) or ""
        raise UdockerError(f"too many levels of links in {self.name}: {name}")

    def size(self, name: str) -> int:
        return self._resolve(name).size

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A binary stream of the member's content (after following links)."""
        stream = self._tar.extractfile(self._resolve(name))
        try:
            yield stream
        finally:
            stream.close()

    def read_json(self, name: str) -> dict[str, Any]:
        """A small JSON object member, parsed."""
        return load_json(self.read_bytes(name), f"{name} in {self.name}")

    def read_bytes(self, name: str) -> bytes:
        member = self._resolve(name)
        if member.size > MAX_JSON:
            raise UdockerError(f"member of {self.name} is too large: {name}")
        with self.open(name) as stream:
            return stream.read()
