"""Commands on local images: images, inspect, tag, rmi, verify, protect, unprotect."""

import click

from udocker.cli import listing, render
from udocker.errors import NotFound, UdockerError


@click.command()
@click.option("-l", "long_", is_flag=True, help="List the layers of each image too.")
@click.option("-p", "platform", is_flag=True, help="Show each image's platform.")
@click.option("--no-trunc", "no_trunc", is_flag=True, help="Show the full image ids (sha256:...).")
@click.option("-a", "--all", "all_", is_flag=True,
              help="Every image (the default: udocker keeps no intermediate images; as in udocker 1.3).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def images(state, long_, platform, no_trunc, all_, as_json):
    """List the images in the repository (a broken one is listed as such: remove it with rmi)."""
    listing.images(state, long_=long_, platform=platform, no_trunc=no_trunc, all_=all_, as_json=as_json)


def _containers(state):
    from udocker.store.containers import ContainerStore  # not for `images`

    return ContainerStore(state.layout, state.config["lock_timeout"])


def _container(state, text):
    """The container named or numbered `text`, or None."""

    try:
        return _containers(state).find(text)
    except NotFound:
        return None


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the default).")
@click.option("-p", "print_dir", is_flag=True, help="Print the root directory of CONTAINER.")
@click.argument("image", metavar="CONTAINER|IMAGE")
@click.pass_obj
def inspect(state, as_json, print_dir, image):
    """Print the metadata of CONTAINER or the configuration of IMAGE (JSON)."""
    repo = state.repository()
    container = _container(state, image)
    if print_dir:
        if container is None:

            raise NotFound(f"container not found: {image}", hint="see 'udocker ps'")
        click.echo(container.rootfs)
        return
    if container is not None:
        render.as_json(dict(container.record, names=_names(state, container), rootfs=container.rootfs))
        return
    found = repo.images.find(image)
    config = repo.images.config(found, repo.blobs)
    manifest = repo.images.manifest(found, repo.blobs)
    config = dict(config, Id=manifest.config.digest, RepoTags=[found.ref], Digest=found.descriptor.digest)
    render.as_json(config)


@click.command()
@click.argument("source")
@click.argument("target")
@click.pass_obj
def tag(state, source, target):
    """Give image SOURCE the additional name TARGET."""
    from udocker.reference import parse

    repo = state.repository()
    found = repo.images.find(source)
    repo.images.tag(str(parse(target)), found.descriptor,
                    index_digest=found.descriptor.annotations.get("io.udocker.index.digest"))


@click.command()
@click.option("-f", "--force", is_flag=True, help="Remove even if protected.")
@click.argument("image_refs", nargs=-1, required=True, metavar="IMAGE...")
@click.pass_obj
def rmi(state, force, image_refs):
    """Remove images and the blobs no other image uses. An image a container uses, or one being
    unpacked, is kept unless -f is given."""
    repo = state.repository()
    repo.remove_images(image_refs, force=force, on_removed=lambda ref: click.echo(f"Untagged: {ref}"))


@click.command()
@click.argument("image")
@click.pass_obj
def verify(state, image):
    """Re-hash every blob of IMAGE against its digest."""
    from udocker.store.images import broken

    repo = state.repository()
    found = repo.images.find(image)
    try:
        repo.blobs.verify(found.descriptor.digest)
        manifest = repo.images.manifest(found, repo.blobs)
        for descriptor in (manifest.config,) + manifest.layers:
            repo.blobs.verify(descriptor.digest)
    except UdockerError as exc:
        raise broken(found, exc) from None
    count = len(manifest.layers)
    click.echo(f"verified: {found.ref} ({count} layer{'' if count == 1 else 's'})")


def _names(state, container):

    return _containers(state).names_of(container.id)


def _protection(protect: bool):
    @click.command("protect" if protect else "unprotect")
    @click.argument("image", metavar="CONTAINER|IMAGE")
    @click.pass_obj
    def command(state, image):
        repo = state.repository()
        container = _container(state, image)
        if container is not None:

            _containers(state).update(container, protected=protect)
            return
        repo.images.set_protected(repo.images.find(image).ref, protect)

    command.help = ("Protect CONTAINER or IMAGE from removal." if protect
                    else "Allow CONTAINER or IMAGE to be removed again.")
    return command


protect = _protection(True)
unprotect = _protection(False)
COMMANDS = [images, inspect, tag, rmi, verify, protect, unprotect]
