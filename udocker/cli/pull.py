"""The pull command."""

import click


@click.command()
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Pull for this platform (default: this host's).")
@click.option("--registry", metavar="URL", help="Pull docker.io images from this registry instead.")
@click.option("--index", metavar="URL", help="Docker Hub's index (search API) to use.")
@click.option("--httpproxy", metavar="URL", help="Proxy: http, https, socks4, socks4a, socks5 or socks5h://HOST:PORT.")
@click.argument("image")
@click.pass_obj
def pull(state, platform, registry, index, httpproxy, image):
    """Download IMAGE from its registry into the repository."""
    from udocker import pull as pulling
    from udocker.cli.progress import for_stderr
    from udocker.oci import platform as platforms
    from udocker.reference import parse
    from udocker.registry.client import RegistryClient

    state.override(registry=registry, index=index, platform=platform, http_proxy=httpproxy)
    ref = parse(image)
    config = state.config
    wanted = platforms.parse(config["platform"]) if config["platform"] else platforms.host()
    repo = state.repository()
    client = RegistryClient(config, repo.layout)
    try:
        result = pulling.pull(repo, client, ref, platform=wanted, concurrency=config["pull_concurrency"],
                              progress=for_stderr(quiet=state.quiet))
    finally:
        client.close()
    if not state.quiet:
        click.echo(f"Digest: {result.digest}", err=True)
    click.echo(result.ref)


COMMANDS = [pull]
