"""The pull command (cli/fastpull.py runs it without click when it can, with the same pull_image())."""

import click

from udocker.cli.fastpull import pull_image


@click.command()
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Pull for this platform (default: this host's).")
@click.option("--registry", metavar="URL", help="Pull docker.io images from this registry instead.")
@click.option("--index", metavar="URL", help="Docker Hub's index (search API) to use.")
@click.option("--httpproxy", metavar="URL", help="Proxy: http, https, socks4, socks4a, socks5 or socks5h://HOST:PORT.")
@click.argument("image")
@click.pass_obj
def pull(state, platform, registry, index, httpproxy, image):
    """Download IMAGE from its registry into the repository."""
    pull_image(state, image=image, platform=platform, registry=registry, index=index, httpproxy=httpproxy)


COMMANDS = [pull]
