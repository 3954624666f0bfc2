"""Logging to stderr: one logger for the package, verbosity set once by the CLI.

logging itself (~3 ms to import) is loaded by the first record to be shown, never by the commands that show
nothing (version, images, ps, a cached `pull -q`): setup() only notes the verbosity until then."""

import sys

_VERBOSITY = {}  # setup()'s arguments, applied when the logger is first made
_LOGGER = []  # the package logger, once made


def setup(*, debug: bool = False, quiet: bool = False) -> None:
    """Send udocker's log records to stderr: DEBUG with --debug, only errors with --quiet."""
    _VERBOSITY.update(debug=debug, quiet=quiet)
    if _LOGGER:
        _configure(_LOGGER[0])


def get(name: str):
    """The logger `udocker.NAME`: a stand-in that imports logging only for the first record that would be shown
    (every record when setup() was not called: tests, library use), so that a module may take its logger at
    import time and a command that logs nothing visible (a cached `pull -q`, debug lines without --debug) never
    pays for logging."""
    return _Lazy(name)


class _Lazy:
    """debug/info/warning/error/exception as logging.Logger's; anything else makes the real logger."""

    def __init__(self, name: str):
        self._name = name
        self._logger = None

    def real(self):
        """The logging.Logger `udocker.NAME`."""
        if self._logger is None:
            self._logger = _package().getChild(self._name)
        return self._logger

    def _shown(self, level: int) -> bool:
        if self._logger is not None or not _VERBOSITY:
            return True
        return level >= _level()

    def debug(self, *args, **kwargs) -> None:
        if self._shown(10):
            self.real().debug(*args, **kwargs)

    def info(self, *args, **kwargs) -> None:
        if self._shown(20):
            self.real().info(*args, **kwargs)

    def warning(self, *args, **kwargs) -> None:
        if self._shown(30):
            self.real().warning(*args, **kwargs)

    def error(self, *args, **kwargs) -> None:
        self.real().error(*args, **kwargs)

    def exception(self, *args, **kwargs) -> None:
        self.real().exception(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.real(), name)


def _package():
    if not _LOGGER:
        import logging

        _LOGGER.append(logging.getLogger("udocker"))
        if _VERBOSITY:
            _configure(_LOGGER[0])
    return _LOGGER[0]


def _level() -> int:
    """The package logger's level for setup()'s verbosity: logging's DEBUG (10) with --debug, ERROR (40) with
    --quiet, else INFO (20), as numbers (the stand-ins decide without importing logging)."""
    return 10 if _VERBOSITY["debug"] else 40 if _VERBOSITY["quiet"] else 20


def _configure(logger) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(_level())
    logger.propagate = False
