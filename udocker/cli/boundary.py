"""The error boundary of every command, `run` and the click commands alike: a failure is one 'error: ' line and
maybe a 'hint: ' line on stderr, a traceback only with -D."""

import os
import sys

from udocker.errors import UdockerError

PROGRAM_STATUSES = (126, 127)  # the program cannot be executed, or is not found: `run` keeps these statuses


def report(message, hint=None):
    sys.stderr.write(f"error: {message}\n" + (f"hint: {hint}\n" if hint else ""))


def guarded(call, *, debug, failure=None):
    """call()'s status, or the status of what it raised once told on stderr: for a UdockerError its exit_code,
    or `failure` when given (`run` answers 125 for its own failures so that the program's statuses stay the
    program's; 126 and 127 are kept); for another OSError (a system failure no layer turned into a
    UdockerError) `failure` or 1; 130 for ^C. A closed stdout (`udocker images | head -1`) is no message."""
    try:
        return call()
    except UdockerError as exc:
        _traceback(debug)
        report(exc.message, exc.hint)
        keep = failure is None or exc.exit_code in PROGRAM_STATUSES
        return exc.exit_code if keep else failure
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return failure or 1
    except OSError as exc:
        _traceback(debug)
        where = f": {exc.filename}" if exc.filename else ""
        report(f"{exc.strerror or exc}{where}", None if debug else "run with --debug for the traceback")
        return failure or 1
    except KeyboardInterrupt:
        return 130


def _traceback(debug):
    if debug:
        import traceback  # only with -D

        traceback.print_exc()
