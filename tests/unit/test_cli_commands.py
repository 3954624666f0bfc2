"""The command table of cli/app.py: each command is imported only when it runs or help shows it, so the table
must name every command of every module, in the order help lists them (udocker 1.3's), and nothing else."""

import os
import subprocess
import sys

import click
import pytest

from udocker.cli import app

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_table_names_each_modules_commands_in_order():
    by_module = {}
    for name, module in app.COMMANDS.items():
        by_module.setdefault(module, []).append(name)
    for module, names in by_module.items():
        defined = [command.name for command in __import__(module, fromlist=["COMMANDS"]).COMMANDS]
        assert defined == names, module


def test_every_command_module_is_in_the_table():
    folder = os.path.join(TOP, "udocker", "cli")
    modules = set()
    for entry in sorted(os.listdir(folder)):
        if entry.endswith(".py"):
            with open(os.path.join(folder, entry), encoding="utf-8") as stream:
                if "\nCOMMANDS = [" in stream.read():  # a list of click commands (app.py holds the table)
                    modules.add(f"udocker.cli.{entry[:-3]}")
    assert modules == set(app.COMMANDS.values())


def test_the_group_resolves_every_listed_command():
    with click.Context(app.cli, info_name="udocker") as ctx:
        names = app.cli.list_commands(ctx)
        assert names == list(app.COMMANDS)
        for name in names:
            assert app.cli.get_command(ctx, name).name == name
        assert app.cli.get_command(ctx, "xyzzy") is None


def test_one_command_loads_one_module():
    code = ("import sys, click; from udocker.cli import app\n"
            "ctx = click.Context(app.cli, info_name='udocker')\n"
            "app.cli.get_command(ctx, 'ps'); app.cli.list_commands(ctx)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('udocker.cli.'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=TOP,
                          env=dict(os.environ, PYTHONPATH=TOP), timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "udocker.cli.containers" in loaded
    assert not loaded & (set(app.COMMANDS.values()) - {"udocker.cli.containers"}), loaded


def test_the_fast_listing_knows_the_click_commands_flags():
    """cli/listing.py runs `images` and `ps` without click when every argument is a flag of FLAGS: the same flags,
    for the same parameters, as the click commands declare."""
    from udocker.cli import listing

    with click.Context(app.cli, info_name="udocker") as ctx:
        for name, flags in listing.FLAGS.items():
            declared = {opt: param.name for param in app.cli.get_command(ctx, name).params
                        if isinstance(param, click.Option) and param.is_flag for opt in param.opts}
            declared.pop("--help", None)
            assert flags == declared, name


def test_the_fast_pull_knows_the_click_commands_options():
    """cli/fastpull.py reads `pull`'s options without click: the same options, each taking a value, for the same
    parameters as the click command; IMAGE its one argument."""
    from udocker.cli import fastpull

    with click.Context(app.cli, info_name="udocker") as ctx:
        params = app.cli.get_command(ctx, "pull").params
    declared = {opt: param.name for param in params if isinstance(param, click.Option) and not param.is_flag
                for opt in param.opts}
    assert fastpull.OPTIONS == declared
    assert [p.name for p in params if isinstance(p, click.Argument)] == ["image"]
    assert not [p for p in params if isinstance(p, click.Option) and p.is_flag]  # --help is added by click


@pytest.mark.parametrize("args, expected", [
    (["busybox"], {"image": "busybox"}),
    (["--platform=linux/arm64", "busybox"], {"platform": "linux/arm64", "image": "busybox"}),
    (["--registry", "http://r:5000", "busybox", "--httpproxy", "socks5h://p:1080", "--index=https://i"],
     {"registry": "http://r:5000", "httpproxy": "socks5h://p:1080", "index": "https://i", "image": "busybox"}),
    (["--platform=a/b", "--platform=c/d", "x"], {"platform": "c/d", "image": "x"}),
])
def test_the_fast_pull_reads_its_options(args, expected):
    from udocker.cli import fastpull

    assert fastpull.parse(args) == expected


@pytest.mark.parametrize("args", [[], ["a", "b"], ["--help", "x"], ["-h"], ["--platform"], ["x", "--platform"],
                                  ["--platform=", "x"], ["--platform", "--registry=r", "x"], ["--", "x"],
                                  ["--plat=linux/amd64", "x"], ["-q", "x"], ["-"]])
def test_anything_else_is_clicks_to_read(args):
    from udocker.cli import fastpull

    assert fastpull.parse(args) is None
