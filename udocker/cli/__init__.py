"""The command line. main() reads the general options itself and sends `udocker run` to a lean parser
(cli/run.py) that imports neither click nor anything run does not need: `run` of an existing container
must add as little as possible to the engine's own start-up (tests/functional/test_run_imports.py lists what
it may import); `version` (and -V) is answered here too, `images` and `ps` with only their flags
(cli/listing.py), and `pull` with only its options and an image (cli/fastpull.py). Every other command goes
through the click application in cli/app.py. All answer failures through cli/boundary.py."""

import os
import sys

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


def private_umask():
    """Group and others never get write permission on what udocker or the container's program creates (the
    repository stays private under a umask of 002): docker's rule, a container's processes run with umask
    022 unless the user's is stricter. Read and set at once while the process has a single thread."""
    os.umask(os.umask(0o022) | 0o022)


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    private_umask()
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
    if index is not None and args[index:] in (["version"], ["-V"], ["--version"]):
        from udocker import __version__  # without click (~15-30 ms): scripts ask for it to check udocker is there

        sys.stdout.write(f"udocker {__version__}\n")
        return
    if index is not None and index < len(args) and args[index] in ("images", "ps"):
        from udocker.cli.listing import fast  # without click, when click would only have read flags

        status = fast(general, args[index], args[index + 1:])
        if status is not None:
            sys.exit(status)
    if index is not None and index < len(args) and args[index] == "pull":
        from udocker.cli.fastpull import fast  # without click, when click would only have read its options

        status = fast(general, args[index + 1:])
        if status is not None:
            sys.exit(status)
    from udocker.cli.app import main as app_main

    app_main(args)
