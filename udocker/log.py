"""Logging to stderr: one logger for the package, verbosity set once by the CLI."""

import logging
import sys

LOGGER = logging.getLogger("udocker")


def setup(*, debug: bool = False, quiet: bool = False) -> None:
    """Send udocker's log records to stderr: DEBUG with --debug, only errors with --quiet."""
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def get(name: str) -> logging.Logger:
    return LOGGER.getChild(name)
