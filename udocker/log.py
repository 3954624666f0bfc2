"""Logging to stderr: one logger for the package, verbosity set once by the CLI.

logging itself (~3 ms to import) is loaded by the first module that asks for a logger (the registry client),
never by the commands that log nothing (version, images, ps): setup() only notes the verbosity until then."""

import sys

_VERBOSITY = {}  # setup()'s arguments, applied when the logger is first made
_LOGGER = []  # the package logger, once made


def setup(*, debug: bool = False, quiet: bool = False) -> None:
    """Send udocker's log records to stderr: DEBUG with --debug, only errors with --quiet."""
    _VERBOSITY.update(debug=debug, quiet=quiet)
    if _LOGGER:
        _configure(_LOGGER[0])


def get(name: str):
    """The logging.Logger `udocker.NAME`."""
    return _package().getChild(name)


def _package():
    if not _LOGGER:
        import logging

        _LOGGER.append(logging.getLogger("udocker"))
        if _VERBOSITY:
            _configure(_LOGGER[0])
    return _LOGGER[0]


def _configure(logger) -> None:
    import logging

    level = logging.DEBUG if _VERBOSITY["debug"] else logging.ERROR if _VERBOSITY["quiet"] else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
