"""The command group class of udocker's command line, and its error for a command it does not have."""

import difflib
from typing import List, Optional

import click


class UnknownCommand(click.UsageError):
    """`name` is no command of the group; `close` is the most similar one, if any (click 8.1 suggests none,
    later releases word it differently: this keeps one message whatever click is installed)."""

    def __init__(self, name: str, close: Optional[str], ctx: Optional[click.Context]):
        super().__init__(f"no such command '{name}'", ctx=ctx)
        self.name = name
        self.close = close


def unknown(group: click.Group, ctx: click.Context, name: str) -> UnknownCommand:
    close = difflib.get_close_matches(name, group.list_commands(ctx), n=1)
    return UnknownCommand(name, close[0] if close else None, ctx)


class Group(click.Group):
    """Keeps commands in the order they were added, as udocker 1.3's help does."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return list(self.commands)

    def resolve_command(self, ctx: click.Context, args: List[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and not ctx.resilient_parsing and self.get_command(ctx, name) is None:
            raise unknown(self, ctx, name)
        return super().resolve_command(ctx, args)
