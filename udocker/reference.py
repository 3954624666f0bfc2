"""Image references in Docker's grammar (distribution/reference): [domain/]path[:tag][@digest].

Reference is a Record, not a dataclass, and typing is not imported: a cached `pull` parses one (record.py)."""

from __future__ import annotations

import re

from udocker.errors import InvalidReference
from udocker.record import Record

DOCKER_HUB = "docker.io"
_LEGACY_HUB = ("index.docker.io", "registry-1.docker.io")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:\[[0-9a-fA-F:.]+\]|(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_MAX = 255


class Reference(Record):
    """A fully qualified image reference (domain, path, tag, digest); `tag` is None only when a digest is
    given. Immutable."""

    __slots__ = FIELDS = ("domain", "path", "tag", "digest")
    DEFAULTS = ("latest", None)

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def familiar(self) -> str:
        """The short form Docker prints: docker.io/library/ is dropped."""
        name = self.name
        if self.domain == DOCKER_HUB:
            name = self.path[len("library/"):] if self.path.startswith("library/") else self.path
        return name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_tag(self, tag: str | None, digest: str | None = None) -> Reference:
        return Reference(self.domain, self.path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, rest
    return DOCKER_HUB, name


def _check_digest(digest: str, text: str) -> None:
    if not _DIGEST_RE.match(digest):
        raise InvalidReference(f"invalid digest in reference: {text}")
    if digest.startswith("sha256:") and not _SHA256_RE.match(digest):
        raise InvalidReference(f"invalid sha256 digest in reference: {text}", hint="use 64 lower-case hex digits")


def parse(text: str) -> Reference:
    """Parse `text` into a Reference, normalised as Docker does (busybox -> docker.io/library/busybox:latest).

    Raises InvalidReference naming `text` when it does not follow the grammar.
    """
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference format: {text!r}")
    rest, at, digest = text.partition("@")
    if at:
        _check_digest(digest, text)
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid tag in reference: {text}")
    domain, path = _split_domain(rest)
    if domain in _LEGACY_HUB:
        domain = DOCKER_HUB
    if not _DOMAIN_RE.match(domain):
        raise InvalidReference(f"invalid registry name in reference: {text}")
    port = domain.rpartition("]")[2].partition(":")[2]
    if port and not 0 < int(port[:6]) <= 65535:
        raise InvalidReference(f"invalid registry port in reference: {text}", hint="ports are 1 to 65535")
    if not _PATH_RE.match(path):
        hint = "repository names must be lower-case" if path.lower() != path else None
        raise InvalidReference(f"invalid reference format: {text}", hint=hint)
    if domain == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise InvalidReference(f"repository name too long: {text}")
    if tag is None and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest or None)


def is_loopback(domain: str) -> bool:
    """True for registries Docker reaches over plain HTTP by default: localhost, 127.0.0.0/8, ::1."""
    host = domain[1:].split("]")[0] if domain.startswith("[") else domain.split(":")[0]
    return host == "localhost" or host.startswith("127.") or host in ("::1", "0:0:0:0:0:0:0:1")
