"""The click application: the root group, its general options, and click's own failures told as udocker's
(cli/__init__.py's guarded() is the error boundary of every command, `run` included)."""

import sys
from typing import List, Optional, Tuple

import click

from udocker import __version__, log
from udocker.cli.boundary import guarded, report
from udocker.cli.group import LazyGroup, UnknownCommand
from udocker.cli.state import State

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# The commands in udocker 1.3's order (help lists them so) and the module whose COMMANDS defines each: a command
# imports its module only when it runs or help shows it (tests/unit/test_cli_commands.py checks the table).
_MODULES = {"pull": ["pull"],
            "images": ["images", "inspect", "tag", "rmi", "verify", "protect", "unprotect"],
            "containers": ["run", "create", "ps", "rm", "name", "rmname", "rename", "clone", "export", "setup",
                           "migrate"],
            "services": ["logs", "stop", "kill", "wait"],
            "archive": ["load", "save", "import"],
            "registry": ["login", "logout", "search", "manifest"],
            "install": ["install"],
            "info": ["info"],
            "general": ["showconf", "mkrepo", "version", "help"]}
COMMANDS = {name: f"udocker.cli.{module}" for module, names in _MODULES.items() for name in names}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings=CONTEXT, invoke_without_command=True)
@click.option("-V", "--version", "show_version", is_flag=True, help="Print the version and exit.")
@click.option("-D", "--debug", is_flag=True, help="Log debug messages; show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option("--insecure", is_flag=True, default=None, help="Accept invalid TLS certificates of registries.")
@click.option("--repo", metavar="DIR", help="The repository directory (default ~/.udocker).")
@click.option("--config", "config_file", metavar="FILE", help="Read this configuration file too.")
@click.option("--allow-root", is_flag=True, help="Accepted for udocker 1.3 compatibility: root is allowed.")
@click.pass_context
def cli(ctx, show_version, debug, quiet, insecure, repo, config_file, allow_root):
    """udocker: pull container images and run them without root privileges."""
    log.setup(debug=debug, quiet=quiet)
    ctx.obj = State(config_file=config_file, overrides={"topdir": repo, "insecure": insecure},
                    debug=debug, quiet=quiet)
    if show_version:
        click.echo(f"udocker {__version__}")
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def _usage(exc: click.UsageError) -> Tuple[str, str]:
    """click's usage message as one udocker error line ('no such option '--jsn'') and a hint that names the
    command's help and click's suggestion, if any; the same text whatever click 8 release words it."""
    command = exc.ctx.command_path if exc.ctx else "udocker"
    if isinstance(exc, UnknownCommand):
        text, suggestion = exc.format_message(), f"'{exc.close}'" if exc.close else ""
    elif isinstance(exc, click.exceptions.NoSuchOption):
        text = f"no such option '{exc.option_name}'"
        close = sorted(exc.possibilities or [])
        suggestion = f"'{close[0]}'" if len(close) == 1 else ", ".join(f"'{name}'" for name in close)
    else:
        text, _, suggestion = exc.format_message().strip().partition(" Did you mean ")
        text = text.rstrip(".")
        text = text[:1].lower() + text[1:]
        suggestion = suggestion.rstrip("?")
    help_hint = f"see '{command} --help'"
    return text, (f"did you mean {suggestion}? {help_hint}" if suggestion else help_hint)


def _invoke(argv: Optional[List[str]]) -> int:
    """The command's status; click's own failures (usage, aborts) as udocker's one-line errors."""
    try:
        status = cli.main(args=argv, prog_name="udocker", standalone_mode=False)
    except click.UsageError as exc:
        report(*_usage(exc))
        return 2
    except click.ClickException as exc:
        report(exc.format_message())
        return exc.exit_code
    except click.Abort:
        report("aborted")
        return 1
    return status if isinstance(status, int) else 0


def main(argv: Optional[List[str]] = None) -> None:
    """Run the command line and exit: 0 ok, 1 udocker error, 2 usage, or the command's own status."""
    args = sys.argv[1:] if argv is None else argv
    sys.exit(guarded(lambda: _invoke(argv), debug="-D" in args or "--debug" in args))
