"""Commands that talk to registries without pulling: login, logout, search, manifest inspect.

The registry package (and so requests) is imported inside the commands, never at module level.
"""

import json
import sys

import click

from udocker.cli import render
from udocker.cli.group import Group
from udocker.cli.state import State


def _host(registry, server):
    from udocker.registry.credentials import registry_host

    return registry_host(registry or server or "docker.io")


HTTPPROXY = click.option("--httpproxy", metavar="URL", expose_value=False, is_eager=True,
                         callback=lambda ctx, _, value: ctx.find_object(State).override(http_proxy=value),
                         help="Proxy: http, https, socks4, socks4a, socks5 or socks5h://HOST:PORT.")


def _client(state, registry=None):
    """The registry client; a --registry given as an http:// URL names a plain-HTTP registry."""
    from udocker.registry.client import RegistryClient
    from udocker.registry.credentials import registry_host

    plain = (registry_host(registry),) if registry and registry.lower().startswith("http://") else ()
    return RegistryClient(state.config, state.layout, plain_http=plain)


def _read_secret(username, password, password_stdin):
    if password_stdin:
        if password is not None:
            raise click.UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("no password on stdin (--password-stdin)")
    if (username is None or password is None) and not sys.stdin.isatty():
        raise click.UsageError("give --username and --password (or --password-stdin) when stdin is not a terminal")
    if username is None:
        username = click.prompt("Username", err=True)
    if password is None:
        password = click.prompt("Password", hide_input=True, err=True)
    if not username:
        raise click.UsageError("the username must not be empty")
    return username, password


@click.command()
@click.option("-u", "--username", help="The account name.")
@click.option("-p", "--password", help="The password or token (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--registry", metavar="URL|HOST", help="The registry (default docker.io).")
@click.argument("server", required=False)
@HTTPPROXY
@click.pass_obj
def login(state, username, password, password_stdin, registry, server):
    """Log in to a registry: check the credentials, then store them (0600)."""
    host = _host(registry, server)
    username, password = _read_secret(username, password, password_stdin)
    _client(state, registry or server).check_login(host, username=username, password=password)
    from udocker.registry.credentials import CredentialStore

    CredentialStore(state.layout).store(host, username, password)
    click.echo(f"login succeeded: {host}")


@click.command()
@click.option("--registry", metavar="URL|HOST", help="The registry (default docker.io).")
@click.option("-a", "--all", "all_", is_flag=True, help="Forget the credentials of every registry.")
@click.argument("server", required=False)
@click.pass_obj
def logout(state, registry, all_, server):
    """Log out: forget stored credentials (not those in ~/.docker)."""
    from udocker.registry.credentials import CredentialStore

    store = CredentialStore(state.layout)
    if all_:
        for host in store.remove_all():
            click.echo(f"removed credentials for {host}")
        return
    host = _host(registry, server)
    click.echo(f"removed credentials for {host}" if store.remove(host) else f"not logged in to {host}")


def _split_term(term, registry):
    """(registry host or None for Docker Hub, search text) from TERM and --registry."""
    from udocker.reference import DOCKER_HUB
    from udocker.registry.credentials import registry_host

    first, sep, rest = term.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, term = registry or first, rest
    host = registry_host(registry) if registry else DOCKER_HUB
    return (None if host == DOCKER_HUB else host), term


@click.command()
@click.option("--list-tags", is_flag=True, help="List the tags of the image TERM instead.")
@click.option("-a", "--all", "all_", is_flag=True, help="Show every page of results without pausing.")
@click.option("--registry", metavar="URL|HOST", help="Search this registry's catalog instead of Docker Hub.")
@click.option("--index", metavar="URL", help="Docker Hub's search API at this URL (config key index).")
@click.option("--no-trunc", "no_trunc", is_flag=True, help="Show the descriptions whole.")
@click.argument("term")
@HTTPPROXY
@click.pass_obj
def search(state, list_tags, all_, registry, index, no_trunc, term):
    """Search Docker Hub or a registry's catalog for TERM."""
    state.override(index=index)
    if list_tags:
        from udocker.reference import parse
        from udocker.registry.credentials import registry_host

        ref = parse(f"{registry_host(registry)}/{term}" if registry else term)
        for tag in _client(state, registry).tags(ref):
            click.echo(tag)
        return
    host, text = _split_term(term, registry)
    client = _client(state, registry)
    if host:
        names = [name for name in client.catalog(host) if text in name]
        render.table(["NAME"], [[f"{host}/{name}"] for name in names])
        return
    page = 1
    while True:
        results, more = client.search_hub(text, page=page)
        width = None if no_trunc else 60
        rows = [[r["name"], _line(r["description"], width), r["stars"], "[OK]" if r["official"] else ""]
                for r in results]
        render.table(["NAME", "DESCRIPTION", "STARS", "OFFICIAL"], rows)
        if not more or not (all_ or (sys.stdin.isatty() and click.confirm("more?", default=True, err=True))):
            return
        page += 1


def _line(text, width):
    """A description's first line, cut to `width` characters (None: whole)."""
    line = (text or "").strip().split("\n", 1)[0]
    return line if width is None else line[:width]


@click.group(cls=Group)
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="As inspect's --platform (udocker 1.3's order).")
@HTTPPROXY
@click.pass_context
def manifest(ctx, platform):
    """Look at manifests in a registry."""
    ctx.meta["manifest.platform"] = platform


@manifest.command("inspect")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the default).")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="For an image index (multi-platform image): print the manifest of this platform's image.")
@click.argument("image")
@HTTPPROXY
@click.pass_context
def manifest_inspect(ctx, as_json, platform, image):
    """Print the registry's manifest or image index for IMAGE (pretty JSON)."""
    from udocker.oci import mediatypes
    from udocker.oci.manifest import load_json, media_type_of, parse_index, select
    from udocker.oci.platform import parse as parse_platform
    from udocker.reference import parse

    platform = platform or ctx.meta.get("manifest.platform")
    wanted = parse_platform(platform) if platform else None
    ref = parse(image)
    client = _client(ctx.obj)
    answer = client.get_manifest(ref)
    data = load_json(answer.data, image)
    if wanted is not None and media_type_of(data, answer.media_type) in mediatypes.INDEXES:
        chosen = select(parse_index(data, image), wanted, image)
        data = load_json(client.get_manifest_by_digest(ref, chosen.digest).data, f"{image} ({platform})")
    click.echo(json.dumps(data, indent=2))


COMMANDS = [login, logout, search, manifest]
