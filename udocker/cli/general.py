"""Commands about udocker itself: version, help, showconf, mkrepo."""

import click

from udocker import __version__
from udocker.cli import render
from udocker.cli.group import unknown


@click.command()
def version():
    """Print the version of udocker."""
    click.echo(f"udocker {__version__}")


@click.command("help")
@click.argument("command", required=False)
@click.pass_context
def help_(ctx, command):
    """Show the help of udocker or of one COMMAND."""
    root = ctx.parent.command
    target = root.get_command(ctx, command) if command else root
    if target is None:
        raise unknown(root, ctx.parent, command)
    with click.Context(target, info_name=command or "udocker", parent=ctx.parent if command else None) as sub:
        click.echo(target.get_help(sub))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def showconf(state, as_json):
    """Print every effective configuration value and where it came from."""
    config = state.config
    if as_json:
        render.as_json({k: {"value": v, "source": config.sources[k]} for k, v in config.values.items()})
        return
    render.table(["KEY", "VALUE", "SOURCE"],
                 [(k, render_value(v), config.sources[k]) for k, v in config.values.items()])


def render_value(value):
    import json

    return "null" if value is None else json.dumps(value) if not isinstance(value, str) else value


@click.command()
@click.argument("directory")
@click.pass_obj
def mkrepo(state, directory):
    """Create an empty repository in DIRECTORY (use it with --repo or UDOCKER_DIR)."""
    from udocker.paths import Layout

    if not directory:  # "" would be the current directory
        raise click.BadParameter("must not be empty", param_hint="DIRECTORY")
    from udocker.store import Repository

    Repository.open(Layout(directory), create=True, lock_timeout=state.config["lock_timeout"])
    click.echo(Layout(directory).topdir)


COMMANDS = [showconf, mkrepo, version, help_]
