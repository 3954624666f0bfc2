"""The command line. main() reads the general options itself and sends `udocker run` to a lean parser
(cli/run.py) that imports neither click nor anything run does not need: `run` of an existing container
must add as little as possible to the engine's own start-up (tests/functional/test_run_imports.py lists what
it may import). Every other command goes through the click application in cli/app.py.

guarded() is the error boundary of every command, `run` and the click commands alike: a failure is one 'error: '
line and maybe a 'hint: ' line on stderr, a traceback only with -D."""

import os
import sys

from udocker.errors import UdockerError

GENERAL_FLAGS = {"-D": "debug", "--debug": "debug", "-q": "quiet", "--quiet": "quiet", "--insecure": "insecure",
                 "--allow-root": "allow_root"}
GENERAL_VALUES = ("--repo", "--config")


def split_general(args):
    """(general options as a dict, index of the command) for udocker's `[GENERAL] COMMAND [ARGS]`."""
    general = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in GENERAL_FLAGS:
            general[GENERAL_FLAGS[arg]] = True
            index += 1
            continue
        key, sep, value = arg.partition("=")
        if key in GENERAL_VALUES:
            if not sep:
                if index + 1 >= len(args):
                    return general, None
                value = args[index + 1]
                index += 1
            general[key.lstrip("-")] = value
            index += 1
            continue
        break
    return general, index


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    general, index = split_general(args)
    if index is not None and index < len(args) and args[index] == "run":
        from udocker.cli.run import main as run_main

        status = run_main(general, args[index + 1:])
        # No interpreter teardown (~10 ms): `run` used to exec the engine, which skipped it too; its
        # supervisor (engines/supervisor.py) now waits instead, and nothing is left to finalise.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass
        os._exit(status if isinstance(status, int) else 0)
    from udocker.cli.app import main as app_main

    app_main(args)


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
