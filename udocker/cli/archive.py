"""Commands on image archives: load, save, import."""

from __future__ import annotations

import click

_STDIO = "-"


def _stdin(ctx: click.Context, what: str):
    stream = click.get_binary_stream("stdin")
    if stream.isatty():
        raise click.UsageError(f"no {what} given and stdin is a terminal", ctx=ctx)
    return stream


@click.command()
@click.option("-i", "--input", "input_file", metavar="FILE", help="Read the archive from FILE (default: stdin).")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="The image to take from a multi-platform OCI archive (default: this host's).")
@click.argument("args", nargs=-1, metavar="[-] [REPO[:TAG]]")
@click.pass_context
def load(ctx, input_file, platform, args):
    """Load images from an archive made by 'docker save' (docker-archive) or an OCI image layout
    tarball (e.g. 'skopeo copy ... oci-archive:FILE'), plain or compressed.

    Images are named as in the archive: the RepoTags of a docker-archive; in an OCI layout the
    io.containerd.image.name annotation, or org.opencontainers.image.ref.name when it is a full
    REPO:TAG. A ref.name that is a bare tag (as umoci writes) names no repository: give one, e.g.
    'udocker load -i image.tar myimage' loads it as myimage:TAG.

    With REPO[:TAG], the image of a one-image archive gets that name instead of the names inside;
    without :TAG it keeps the archive's tags (or latest).

    Nothing is named unless every member, digest and diff_id checks out. A '-' (udocker 1.3's 'load -')
    reads the archive from stdin, as '-i -' and no -i do.
    """
    from udocker.archive import load as load_archive
    from udocker.oci.platform import parse

    if args[:1] == (_STDIO,):
        if input_file not in (None, _STDIO):
            raise click.UsageError("give the archive once: '-' (stdin) or -i FILE", ctx=ctx)
        input_file, args = _STDIO, args[1:]
    if len(args) > 1:
        raise click.UsageError(f"unexpected extra argument: {args[1]}", ctx=ctx)
    name = args[0] if args else None

    source = input_file if input_file and input_file != _STDIO else _stdin(ctx, "archive")
    label = input_file if input_file and input_file != _STDIO else "stdin"
    repo = ctx.obj.repository()
    loaded = load_archive(repo, source, label=label, name=name, platform=parse(platform) if platform else None)
    for item in loaded:
        click.echo(f"Loaded image: {item.ref.familiar()}")


@click.command()
@click.option("-o", "--output", metavar="FILE", help="Write the archive to FILE ('-' or default: stdout).")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.pass_context
def save(ctx, output, images):
    """Save IMAGEs to a docker-archive, as 'docker save' does: 'docker load' and
    'skopeo ... docker-archive:FILE' read it. Layers are written uncompressed."""
    from udocker.archive import save as save_archive

    repo = ctx.obj.repository()
    if output and output != _STDIO:
        save_archive(repo, images, output)
        return
    stream = click.get_binary_stream("stdout")
    if stream.isatty():
        raise click.UsageError("refusing to write an archive to a terminal: use -o FILE or redirect stdout",
                               ctx=ctx)
    save_archive(repo, images, stream)


@click.command("import")
@click.option("--mv", "move", is_flag=True, help="Delete TARBALL after a successful import.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="The image's platform (default: this host's).")
@click.option("-m", "--message", help="The history comment of the image.")
@click.option("--tocontainer", is_flag=True, help="Import TARBALL as a new container instead of an image.")
@click.option("--clone", is_flag=True, help="Import a container written by 'udocker export --clone'.")
@click.option("--name", "container_name", help="Name the container (with --tocontainer or --clone).")
@click.argument("tarball", metavar="TARBALL|-")
@click.argument("name", metavar="[REPO[:TAG]]", required=False)
@click.pass_context
def import_(ctx, move, platform, message, tocontainer, clone, container_name, tarball, name):
    """Import a flat root filesystem TARBALL (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz; '-' for stdin)
    as an image of one layer named REPO[:TAG], like 'docker import'. Prints the image ID.

    With --tocontainer, TARBALL becomes a new container (prints its id); with --clone, TARBALL is a
    container exported with 'udocker export --clone'."""
    from udocker.archive import import_tarball
    from udocker.oci import platform as platforms
    from udocker.reference import parse

    if tocontainer or clone:
        _import_container(ctx, tarball, container_name, clone=clone, move=move)
        return
    if not name:
        raise click.UsageError("missing argument 'REPO[:TAG]'", ctx=ctx)
    ref = parse(name)
    target = platforms.parse(platform) if platform else platforms.host()
    source = tarball if tarball != _STDIO else _stdin(ctx, "tarball")
    repo = ctx.obj.repository()
    imported = import_tarball(repo, source, ref, label=tarball if tarball != _STDIO else "stdin",
                              platform=target, message=message, move=move)
    click.echo(imported.image_id)


def _import_container(ctx, tarball, name, *, clone, move):
    import os

    from udocker.create import import_tarball
    from udocker.store.containers import ContainerStore

    if tarball == _STDIO:
        raise click.UsageError("import --tocontainer and --clone read a file, not stdin", ctx=ctx)
    state = ctx.obj
    state.repository()
    containers = ContainerStore(state.layout, state.config["lock_timeout"])
    container = import_tarball(containers, tarball, name=name, clone_record=clone)
    if move:
        os.unlink(tarball)
    click.echo(container.id)


COMMANDS = [load, save, import_]
