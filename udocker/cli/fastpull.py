"""`udocker pull` without click (issue 13: a cached pull, one manifest check, should cost little more than the
interpreter's start, and click with what it loads was a quarter of it): cli/__init__.py sends `pull` here, and
the arguments are read here when they are the click command's options (OPTIONS, as `--opt=value` or `--opt
value`, before or after the image) and one image; anything else (--help, an unknown or empty option, a second
argument, `--`) is left to click, whose command (cli/pull.py) calls the same pull_image().
tests/unit/test_cli_commands.py checks OPTIONS against the click command."""

from udocker.cli.boundary import guarded

# option -> parameter of pull_image(), as cli/pull.py declares them
OPTIONS = {"--platform": "platform", "--registry": "registry", "--index": "index", "--httpproxy": "httpproxy"}


def parse(args):
    """pull_image()'s keyword arguments for `args` (what follows `pull`), or None when click must read them."""
    values, images = {}, []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-"):
            images.append(arg)
            continue
        name, sep, value = arg.partition("=")
        if name not in OPTIONS:
            return None
        if not sep:
            if index >= len(args):
                return None
            value = args[index]
            index += 1
        if not value or value.startswith("-"):
            return None
        values[OPTIONS[name]] = value
    if len(images) != 1:
        return None
    return {**values, "image": images[0]}


def fast(general, args):
    """`udocker pull`'s exit status when click is not needed to read `args`, else None (click's turn).
    `general`: the general options as cli.split_general() read them."""
    options = parse(args)
    if options is None:
        return None
    from udocker.cli.state import from_general

    state = from_general(general)
    return guarded(lambda: pull_image(state, **options) or 0, debug=state.debug)


def pull_image(state, *, image, platform=None, registry=None, index=None, httpproxy=None):
    """Download `image` from its registry into the repository; prints the digest (unless quiet) on stderr and
    the image's name on stdout."""
    import sys

    from udocker import pull as pulling
    from udocker.cli.progress import for_stderr
    from udocker.oci import platform as platforms
    from udocker.reference import parse as parse_reference
    from udocker.registry.client import RegistryClient

    state.override(registry=registry, index=index, platform=platform, http_proxy=httpproxy)
    ref = parse_reference(image)
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
        sys.stderr.write(f"Digest: {result.digest}\n")
        sys.stderr.flush()
    sys.stdout.write(f"{result.ref}\n")
    sys.stdout.flush()
