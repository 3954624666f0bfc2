"""Exceptions raised by the library; only udocker.cli turns them into messages and exit codes."""

from __future__ import annotations


class UdockerError(Exception):
    """An error the user can act on: `message` is one lower-case line, `hint` an optional second."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(UdockerError):
    exit_code = 2


class ConfigError(UdockerError):
    """A configuration file or variable is invalid (unknown key, wrong type)."""


class ReferenceError_(UdockerError):  # noqa: N801 - avoid shadowing the builtin ReferenceError
    """An image reference does not follow the Docker grammar."""


InvalidReference = ReferenceError_


class RegistryError(UdockerError):
    """The registry answered with an error or could not be reached.

    `status` is the HTTP status (None when no answer came), `code` the OCI error code if given.
    """

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None,
                 code: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class AuthError(RegistryError):
    """Credentials are missing or were refused (401/403)."""


class NotFound(UdockerError):
    """An image, container or blob does not exist (locally or in the registry)."""


class DigestMismatch(UdockerError):
    """Downloaded or stored content does not match its descriptor's digest or size."""


class StoreError(UdockerError):
    """The local repository is missing, of an unknown format, or cannot be written."""


class LockTimeout(UdockerError):
    """A lock on a repository object could not be taken in time."""


class EngineUnavailable(UdockerError):
    """An execution mode cannot run on this host; the message says why (binary missing, no user
    namespaces, ptrace blocked...)."""


class EngineError(UdockerError):
    """An engine failed to prepare or start a container."""


class UnpackError(UdockerError):
    """A layer could not be applied to a rootfs: unsafe or invalid member, unreadable archive, I/O error.

    `layer` names the layer (its digest where known), `member` the tar member ("" for the whole layer).
    """

    def __init__(self, message: str, *, hint: str | None = None, layer: str = "", member: str = ""):
        super().__init__(message, hint=hint)
        self.layer = layer
        self.member = member


class ProgramNotFound(UdockerError):
    """The container's program does not exist (like docker run: exit 127)."""

    exit_code = 127


class ProgramNotExecutable(UdockerError):
    """The container's program exists but cannot be executed (like docker run: exit 126)."""

    exit_code = 126
