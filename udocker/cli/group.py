"""The command group classes of udocker's command line, and its error for a command it does not have."""

from typing import Dict, List, Optional

import click


class UnknownCommand(click.UsageError):
    """`name` is no command of the group; `close` is the most similar one, if any (click 8.1 suggests none,
    later releases word it differently: this keeps one message whatever click is installed)."""

    def __init__(self, name: str, close: Optional[str], ctx: Optional[click.Context]):
        super().__init__(f"no such command '{name}'", ctx=ctx)
        self.name = name
        self.close = close


def unknown(group: click.Group, ctx: click.Context, name: str) -> UnknownCommand:
    import difflib  # only for a mistyped command

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


class LazyGroup(Group):
    """A Group whose commands are named up front (`lazy`: command name -> the module that defines it in its
    COMMANDS list, in the order help lists them) and imported only when one is invoked or help shows them:
    `udocker images` loads neither the other commands' modules nor what they import."""

    def __init__(self, *args, lazy: Optional[Dict[str, str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> List[str]:
        return list(self.lazy) + [name for name in self.commands if name not in self.lazy]

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            # __import__, not importlib.import_module: -X importtime (tests/functional/test_fixed_costs.py) sees it
            for command in __import__(self.lazy[cmd_name], fromlist=["COMMANDS"]).COMMANDS:
                self.commands.setdefault(command.name, command)
        return self.commands.get(cmd_name)
